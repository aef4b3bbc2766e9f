"""Issue 14, point 3 (log part): a log flood is bounded per call site.

With the disk full (RLIMIT_FSIZE, as in test_disk_faults.py), every write
request fails and logs an error at the same call site ("commit failed"). A
client sending them as fast as it can used to get one line each, thousands a
second. Now the site writes at most 10 lines per second; the rest are counted
in a "suppressed" line per site and second and in ana_log_suppressed_total
on /metrics. The server keeps answering.

(A full disk makes readiness NOT_SERVING, so the survival check here is
liveness plus REST /metrics, not the readiness check of AttackTestCase.)
"""

import collections
import json
import re
import resource
import signal
import time
import unittest
import uuid

import grpc

from adversary import RssWatch, harness, raw_http, stubs

LIMIT = 512 * 1024
PER_SITE_PER_S = 10
FLOOD_S = 2.5


class LogFloodTest(unittest.TestCase):

    def test_failing_writes_flood_is_bounded_per_site_and_counted(self):
        ns = stubs.load()
        pb, events_grpc = ns.analytics["events"]

        def limit_files():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

        server = harness.start_server(self, preexec=limit_files, log_level="info")
        events = events_grpc.EventServiceStub(server.channel())

        def track(n, size):
            evs = [pb.Event(event_id=uuid.uuid4().hex, event_name="flood", event_type="t")
                   for _ in range(n)]
            for e in evs:
                e.properties.update({"pad": "p" * size})
            try:
                events.TrackEvents(pb.TrackEventsRequest(events=evs), timeout=10)
            except grpc.RpcError as e:
                return e
            return None

        for _ in range(100):
            if track(50, 2000) is not None:
                break
        else:
            self.fail("the file-size limit was never reached")

        mark = server.log_mark()
        sent = failed = 0
        with RssWatch(server.proc.pid):
            end = time.monotonic() + FLOOD_S
            while time.monotonic() < end:
                sent += 1
                failed += track(1, 10) is not None
        time.sleep(1.6)  # the last second's report is due
        lines = server.log_lines(since=mark)
        self.assertGreater(failed, 200, "too few failing writes to flood the log")

        commit_lines = [l for l in lines if l.get("msg", "").startswith("commit failed")]
        per_second = collections.Counter(l["ts"][:19] for l in commit_lines)
        # Windows are monotonic seconds, so one wall-clock second can hold the
        # end of one window and the start of the next.
        self.assertLessEqual(max(per_second.values()), 2 * PER_SITE_PER_S, per_second)
        self.assertLessEqual(len(commit_lines), PER_SITE_PER_S * (FLOOD_S + 2),
                             "%d 'commit failed' lines for %d failed writes"
                             % (len(commit_lines), failed))

        reports = [l for l in lines if "suppressed" in l and "committer.c" in l.get("site", "")]
        self.assertTrue(reports, "no 'suppressed' line for the committer's site; log tail:\n%s"
                        % "\n".join(json.dumps(l) for l in lines[-5:]))
        self.assertLessEqual(len(reports), FLOOD_S + 2, "more than one report per second")
        reported = sum(int(l["suppressed"]) for l in reports)
        self.assertEqual(reported + len(commit_lines), failed,
                         "written plus suppressed lines do not add up to the failed writes")

        metrics = raw_http(server.rest_port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
                           "Connection: close\r\n\r\n", until_close=True).decode("latin-1")
        m = re.search(r"^ana_log_suppressed_total (\d+)$", metrics, re.M)
        self.assertIsNotNone(m, "ana_log_suppressed_total missing from /metrics")
        self.assertGreaterEqual(int(m.group(1)), reported)

        # Survived: alive and live.
        self.assertTrue(server.alive())
        health = ns.health_pb2_grpc.HealthStub(server.channel())
        self.assertEqual(health.Check(ns.health_pb2.HealthCheckRequest(service="liveness"),
                                      timeout=5).status, ns.health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    unittest.main()
