"""Issue 17, point 2: the audit log under a flood of audited calls.

Eight clients send SearchEvents (audited) back to back at a server whose
audit queue holds 4 records (AUDIT_QUEUE_MAX). The audit log is written off
the request path, so no call waits for it or fails because of it; records
the queue cannot take are dropped and counted in ana_audit_dropped_total,
with an error logged at most 10 times a second. Every call is accounted for:
the SearchEvents records stored plus the records dropped is the number of
calls made. Before, no call left any trace (GET /api/audit did not exist).
"""

import json
import threading
import time
import unittest

import grpc

from adversary import AttackTestCase, raw_http, stubs

CLIENTS = 8
CALLS = 40
METHOD = "/analytics.v1.EventService/SearchEvents"


def dechunk(body):
    """The body of a `Transfer-Encoding: chunked` answer (long JSON answers
    are streamed in chunks)."""
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


def http_get(port, path):
    data = raw_http(port, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    % path, until_close=True)
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return head.split(b" ", 2)[1].decode(), body.decode("utf-8", "replace")


class AuditFloodTest(AttackTestCase):

    SERVER_ENV = {"AUDIT_QUEUE_MAX": "4"}

    def test_audited_call_flood_fails_no_call_and_every_call_is_recorded_or_counted(self):
        pb, events_grpc = stubs.load().analytics["events"]
        failures = []
        mark = self.server.log_mark()

        def client():
            channel = grpc.insecure_channel(self.server.target)
            stub = events_grpc.EventServiceStub(channel)
            for _ in range(CALLS):
                try:
                    stub.SearchEvents(pb.SearchEventsRequest(page_size=1), timeout=10)
                except grpc.RpcError as e:
                    failures.append("%s %s" % (e.code(), e.details()))
            channel.close()

        start = time.monotonic()
        with self.rss_watch():
            threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elapsed = time.monotonic() - start
        self.assertEqual(failures, [], "calls failed during the flood")

        code, body = http_get(self.rest_port, "/api/audit?pageSize=1000&method=" + METHOD)
        self.assertEqual(code, "200", body[:300])
        stored = len(json.loads(body).get("records", []))
        code, metrics = http_get(self.rest_port, "/metrics")
        dropped = [int(float(l.split()[-1])) for l in metrics.splitlines()
                   if l.startswith("ana_audit_dropped_total")]
        self.assertEqual(len(dropped), 1, "ana_audit_dropped_total is not on /metrics")
        self.assertEqual(stored + dropped[0], CLIENTS * CALLS,
                         "%d records stored and %d dropped for %d calls"
                         % (stored, dropped[0], CLIENTS * CALLS))
        lines = [l for l in self.server.log_lines(mark)
                 if "audit record dropped" in l.get("msg", "")]
        self.assertLessEqual(len(lines), 10 * (int(elapsed) + 2),
                             "drop errors are not rate-limited")
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
