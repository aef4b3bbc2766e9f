"""Deadlines and client-side cancellation of long-lived calls (Health Watch)."""

import time
import unittest

import grpc

import harness

SETTLE_S = 0.5  # time for the server to log what happened to a call


class DeadlineCancelTest(harness.ServerTestCase):

    def watch(self, service="", timeout=None):
        return self.health.Watch(self.ns.health_pb2.HealthCheckRequest(service=service),
                                 timeout=timeout)

    def test_watch_deadline_exceeded(self):
        mark = self.server.log_mark()
        start = time.monotonic()
        reader = harness.StreamReader(self.watch(timeout=0.3))
        self.assertTrue(reader.wait_end(3.0), "Watch with a 0.3 s deadline still open after 3 s")
        elapsed = time.monotonic() - start
        self.assertEqual(reader.code, grpc.StatusCode.DEADLINE_EXCEEDED,
                         "%s %r" % (reader.code, reader.details))
        self.assertLess(elapsed, 3.0)
        self.assertServing()
        time.sleep(SETTLE_S)
        self.assertNoErrorLogs(mark)

    def test_cancel_watch_then_check(self):
        mark = self.server.log_mark()
        reader = harness.StreamReader(self.watch(timeout=30))
        first = reader.next(timeout=5)
        self.assertIsNotNone(first, "no first Watch message (%s %s)"
                             % (reader.code, reader.details))
        reader.cancel()
        self.assertTrue(reader.wait_end(5), "stream not ended after cancel")
        self.assertEqual(reader.code, grpc.StatusCode.CANCELLED)
        self.assertServing()
        time.sleep(SETTLE_S)
        self.assertServing()
        self.assertNoErrorLogs(mark)

    def test_cancel_before_first_message(self):
        mark = self.server.log_mark()
        call = self.watch(service="nope", timeout=30)
        call.cancel()
        self.assertServing()
        time.sleep(SETTLE_S)
        self.assertServing()
        self.assertNoErrorLogs(mark)

    def test_fifty_concurrent_watches_cancelled(self):
        mark = self.server.log_mark()
        readers = [harness.StreamReader(self.watch(service="" if i % 2 else "nope", timeout=60))
                   for i in range(50)]
        try:
            for i, r in enumerate(readers):
                first = r.next(timeout=10)
                self.assertIsNotNone(first, "stream %d: no first message (%s %s)"
                                     % (i, r.code, r.details))
            self.assertServing()
        finally:
            for r in readers:
                r.cancel()
        for i, r in enumerate(readers):
            self.assertTrue(r.wait_end(5), "stream %d not ended after cancel" % i)
            self.assertEqual(r.code, grpc.StatusCode.CANCELLED, "stream %d" % i)
        self.assertServing()
        time.sleep(SETTLE_S)
        self.assertServing()
        self.assertNoErrorLogs(mark)

    def test_fifty_watches_on_separate_connections_cancelled(self):
        mark = self.server.log_mark()
        # A local subchannel pool per channel: one TCP connection each.
        channels = [grpc.insecure_channel(self.server.target,
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(50)]
        self.addCleanup(lambda: [ch.close() for ch in channels])
        stubs_ = [self.ns.health_pb2_grpc.HealthStub(ch) for ch in channels]
        readers = [harness.StreamReader(s.Watch(self.ns.health_pb2.HealthCheckRequest(),
                                                timeout=60)) for s in stubs_]
        try:
            for i, r in enumerate(readers):
                self.assertIsNotNone(r.next(timeout=10), "stream %d: no first message (%s %s)"
                                     % (i, r.code, r.details))
        finally:
            for r in readers:
                r.cancel()
        for i, r in enumerate(readers):
            self.assertTrue(r.wait_end(5), "stream %d not ended after cancel" % i)
        for ch in channels:
            ch.close()
        self.assertServing()
        time.sleep(SETTLE_S)
        self.assertServing()
        self.assertNoErrorLogs(mark)


if __name__ == "__main__":
    unittest.main()
