"""Graceful shutdown on SIGTERM with open streams and unary calls in flight."""

import re
import threading
import time
import unittest

import grpc

import harness
import stubs

GRACE_MS = 2000
STREAMS = 20
CALLERS = 4
SHUTDOWN_MSG = re.compile(r"shut|stop|exit|terminat", re.I)
STREAM_END_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class UnaryLoad:
    """Threads calling Check back to back until stopped; records every outcome."""

    def __init__(self, server, threads):
        ns = stubs.load()
        self.req = ns.health_pb2.HealthCheckRequest(service="")
        self.stub = ns.health_pb2_grpc.HealthStub(server.channel())
        self.stop_flag = threading.Event()
        self.outcomes = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop_flag.is_set():
            start = time.monotonic()
            try:
                self.stub.Check(self.req, timeout=10)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
            with self.lock:
                self.outcomes.append((code, details, time.monotonic() - start))
            if code != grpc.StatusCode.OK:
                time.sleep(0.05)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(15)
        return [t for t in self.threads if t.is_alive()]


class ShutdownTest(unittest.TestCase):

    def setUp(self):
        self.ns = stubs.load()
        self.server = harness.start_server(self, grace_ms=GRACE_MS)

    def open_watches(self, n):
        stub = self.ns.health_pb2_grpc.HealthStub(self.server.channel())
        readers = []
        for i in range(n):
            svc = "" if i % 2 == 0 else "analytics.v1.EventService"
            readers.append(harness.StreamReader(
                stub.Watch(self.ns.health_pb2.HealthCheckRequest(service=svc), timeout=60)))
        for i, r in enumerate(readers):
            self.assertIsNotNone(r.next(timeout=10), "stream %d: no first message (%s %s)"
                                 % (i, r.code, r.details))
        return readers

    def test_sigterm_ends_streams_and_exits_zero(self):
        readers = self.open_watches(STREAMS)
        load = UnaryLoad(self.server, CALLERS)
        time.sleep(0.3)
        mark = self.server.log_mark()

        self.server.terminate()
        limit = GRACE_MS / 1000.0 + 5.0
        rc = self.server.wait_exit(limit)
        if rc is None:
            load.stop()
            self.server.stop(timeout=5)  # raises after SIGKILL
            self.fail("still running %.1f s after SIGTERM" % limit)
        elapsed = self.server.exited_at - self.server.sigterm_at
        stuck = load.stop()

        self.assertEqual(rc, 0, "exit code %s; stderr tail:\n%s"
                         % (rc, harness.tail(self.server.stderr())))
        self.assertLessEqual(elapsed, limit)
        self.assertEqual(stuck, [], "unary callers still blocked after the server exited")

        for i, r in enumerate(readers):
            self.assertTrue(r.wait_end(5), "stream %d still open after exit" % i)
            self.assertIn(r.code, STREAM_END_CODES, "stream %d ended with %s %r"
                          % (i, r.code, r.details))
            for m in r.received[1:]:
                self.assertEqual(m.status, self.ns.health_pb2.HealthCheckResponse.NOT_SERVING,
                                 "stream %d got %s after SIGTERM" % (i, m))

        codes = {c for c, _, _ in load.outcomes}
        self.assertIn(grpc.StatusCode.OK, codes, "no unary call succeeded before SIGTERM")
        bad = [(c, d) for c, d, _ in load.outcomes
               if c not in (grpc.StatusCode.OK,) + STREAM_END_CODES]
        self.assertEqual(bad, [], "unary calls during shutdown ended badly")

        lines = self.server.log_lines(mark)
        self.assertTrue(lines, "nothing logged after SIGTERM")
        last = lines[-10:]
        self.assertTrue(any(l.get("level") == "info" and SHUTDOWN_MSG.search(str(l.get("msg", "")))
                            for l in last),
                        "no info-level shutdown message among the last log lines:\n%s"
                        % "\n".join(self.server.raw_log_lines(mark)[-10:]))
        self.assertEqual(self.server.error_lines(mark), [])

    def test_new_connections_refused_after_sigterm(self):
        readers = self.open_watches(STREAMS)
        self.server.terminate()
        time.sleep(0.2)
        still_running = self.server.alive()
        ch = grpc.insecure_channel(self.server.target,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            stub = self.ns.health_pb2_grpc.HealthStub(ch)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.Check(self.ns.health_pb2.HealthCheckRequest(service=""), timeout=2)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                             "%s %r (server %s when the call started)"
                             % (cm.exception.code(), cm.exception.details(),
                                "running" if still_running else "gone"))
        finally:
            ch.close()
        rc = self.server.stop()
        self.assertEqual(rc, 0)
        for r in readers:
            r.wait_end(5)

    def test_sigterm_when_idle(self):
        t0 = time.monotonic()
        rc = self.server.stop(timeout=GRACE_MS / 1000.0 + 5.0)
        self.assertEqual(rc, 0, harness.tail(self.server.stderr()))
        self.assertLess(time.monotonic() - t0, GRACE_MS / 1000.0 + 5.0)

    def test_sigint_behaves_like_sigterm(self):
        import signal
        self.server.proc.send_signal(signal.SIGINT)
        rc = self.server.wait_exit(GRACE_MS / 1000.0 + 5.0)
        if rc is None:
            self.server.stop(timeout=5)
            self.fail("SIGINT did not stop the server")
        self.assertEqual(rc, 0, harness.tail(self.server.stderr()))


if __name__ == "__main__":
    unittest.main()
