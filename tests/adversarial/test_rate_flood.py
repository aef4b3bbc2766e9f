"""Issue 17, point 1: one account flooding the server is throttled.

Four clients of one account sent TrackEvent back to back for 1.5 s and every
call was served (6,000 back-to-back requests were never refused). Now the
account's budget (RATE_LIMIT_DEFAULT, GCRA) lets through at most its burst
plus its rate over the flood; the rest are RESOURCE_EXHAUSTED with a
RetryInfo, another account is served meanwhile, and the server survives.
"""

import os
import sys
import threading
import time

import grpc

from adversary import AttackTestCase, harness  # noqa: F401

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                                "python"))
import authkit  # noqa: E402

RATE, BURST = 100, 50
FLOOD_S = 1.5
CLIENTS = 4


def md(account):
    tok = authkit.hs256(authkit.claims(account=account, roles=("ingest",)))
    return (("authorization", "Bearer " + tok),)


class RateFloodTest(AttackTestCase):
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET,
                  "RATE_LIMIT_DEFAULT": "%d/s burst %d" % (RATE, BURST)}

    def test_one_account_flood_was_never_throttled(self):
        pb, events_grpc = self.ns.analytics["events"]
        stub = events_grpc.EventServiceStub(self.channel)
        req = pb.TrackEventRequest(event=pb.Event(event_name="flood", event_type="user"))
        flood_md = md("flooder")
        counts = {"ok": 0, "limited": 0, "other": 0}
        lock = threading.Lock()
        stop = time.monotonic() + FLOOD_S

        def flood():
            mine = {"ok": 0, "limited": 0, "other": 0}
            while time.monotonic() < stop:
                try:
                    stub.TrackEvent(req, metadata=flood_md, timeout=5)
                    mine["ok"] += 1
                except grpc.RpcError as e:
                    kind = ("limited" if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                            else "other")
                    mine[kind] += 1
            with lock:
                for k, v in mine.items():
                    counts[k] += v

        with self.rss_watch():
            t0 = time.monotonic()
            threads = [threading.Thread(target=flood) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            # Another account is served while the flood runs.
            time.sleep(0.3)
            victim = md("bystander")
            for _ in range(5):
                stub.TrackEvent(req, metadata=victim, timeout=5)
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
        self.assertEqual(counts["other"], 0, counts)
        self.assertGreater(counts["limited"], 0, counts)
        self.assertLessEqual(counts["ok"], BURST + RATE * elapsed + 1, (counts, elapsed))
        self.assert_survived()
