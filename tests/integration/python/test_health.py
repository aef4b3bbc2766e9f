"""grpc.health.v1.Health: Check and Watch, including Watch across shutdown."""

import time
import unittest

import grpc

import harness
import stubs


class HealthCheckTest(harness.ServerTestCase):

    def check(self, service):
        return self.health.Check(self.ns.health_pb2.HealthCheckRequest(service=service),
                                 timeout=5)

    def test_check_server_is_serving(self):
        resp = self.check("")
        self.assertEqual(resp.status, self.ns.health_pb2.HealthCheckResponse.SERVING)

    def test_check_event_service_is_serving(self):
        resp = self.check("analytics.v1.EventService")
        self.assertEqual(resp.status, self.ns.health_pb2.HealthCheckResponse.SERVING)

    def test_check_every_analytics_service_is_known(self):
        for svc in stubs.analytics_services():
            with self.subTest(service=svc.full_name):
                try:
                    resp = self.check(svc.full_name)
                except grpc.RpcError as e:
                    self.fail("Check(%r) failed: %s %s" % (svc.full_name, e.code(), e.details()))
                self.assertEqual(resp.status, self.ns.health_pb2.HealthCheckResponse.SERVING)

    def test_check_unknown_service_is_not_found(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.check("nope")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND, cm.exception.details())

    def test_watch_server_sends_serving_first(self):
        call = self.health.Watch(self.ns.health_pb2.HealthCheckRequest(service=""), timeout=10)
        reader = harness.StreamReader(call)
        try:
            first = reader.next(timeout=5)
            self.assertIsNotNone(first, "no first message within 5 s (stream ended: %s %s)"
                                 % (reader.code, reader.details))
            self.assertEqual(first.status, self.ns.health_pb2.HealthCheckResponse.SERVING)
        finally:
            reader.cancel()
            reader.wait_end(5)

    def test_watch_unknown_service_sends_service_unknown_and_stays_open(self):
        call = self.health.Watch(self.ns.health_pb2.HealthCheckRequest(service="nope"),
                                 timeout=30)
        reader = harness.StreamReader(call)
        try:
            first = reader.next(timeout=5)
            self.assertIsNotNone(first, "no first message within 5 s (stream ended: %s %s)"
                                 % (reader.code, reader.details))
            self.assertEqual(first.status,
                             self.ns.health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            self.assertFalse(reader.wait_end(1.5),
                             "Watch(\"nope\") ended: %s %s" % (reader.code, reader.details))
            self.assertTrue(call.is_active())
        finally:
            reader.cancel()
        self.assertTrue(reader.wait_end(5), "stream did not end after cancel")
        self.assertEqual(reader.code, grpc.StatusCode.CANCELLED)
        self.assertServing()


class HealthWatchShutdownTest(unittest.TestCase):
    GRACE_MS = 3000
    SLACK_S = 1.0

    def test_watch_ends_unavailable_on_sigterm_and_process_exits_zero(self):
        ns = stubs.load()
        server = harness.start_server(self, grace_ms=self.GRACE_MS)
        stub = ns.health_pb2_grpc.HealthStub(server.channel())
        reader = harness.StreamReader(stub.Watch(ns.health_pb2.HealthCheckRequest(service=""),
                                                 timeout=60))
        first = reader.next(timeout=5)
        self.assertIsNotNone(first, "no first Watch message")
        self.assertEqual(first.status, ns.health_pb2.HealthCheckResponse.SERVING)

        server.terminate()
        limit = self.GRACE_MS / 1000.0 + self.SLACK_S
        self.assertTrue(reader.wait_end(limit + 2),
                        "Watch stream still open %.1f s after SIGTERM" % (limit + 2))
        rc = server.wait_exit(max(0.1, limit - (time.monotonic() - server.sigterm_at)))
        if rc is None:
            rc = server.stop(timeout=10)  # SIGKILL and fail if it still hangs
            self.fail("process exited %.1f s after SIGTERM (grace %d ms), code %s"
                      % (time.monotonic() - server.sigterm_at, self.GRACE_MS, rc))

        elapsed = server.exited_at - server.sigterm_at
        later = reader.received[1:]
        for m in later:
            self.assertEqual(m.status, ns.health_pb2.HealthCheckResponse.NOT_SERVING,
                             "after SIGTERM only NOT_SERVING may be sent, got %s" % m)
        self.assertEqual(reader.code, grpc.StatusCode.UNAVAILABLE,
                         "stream ended with %s %r" % (reader.code, reader.details))
        self.assertEqual(rc, 0, "exit code %s; stderr tail:\n%s"
                         % (rc, harness.tail(server.stderr())))
        self.assertLessEqual(elapsed, limit)


if __name__ == "__main__":
    unittest.main()
