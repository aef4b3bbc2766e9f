"""Issue 14, point 6 (gRPC part): what one client may hold over gRPC is bounded
by configuration: calls per connection (GRPC_MAX_CONCURRENT_STREAMS),
request metadata (GRPC_MAX_METADATA_BYTES) and open server-streaming calls
per client IP over all its connections (GRPC_STREAMS_PER_PEER).

Small limits keep the attacks cheap. Ping abuse (GRPC_ARG_HTTP2_MAX_PING_STRIKES,
MIN_RECV_PING_INTERVAL) is not attacked here: grpcio cannot send a ping
flood and there is no HTTP/2 library to hand-craft one; the arguments are
set in server/rpc/grpc_server.c.
"""

import time
import unittest

import grpc

from adversary import AttackTestCase, harness


class GrpcLimitsBase(AttackTestCase):

    def channel_(self):
        ch = grpc.insecure_channel(self.server.target,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        self.addCleanup(ch.close)
        return ch

    def open_watch(self, channel, timeout=30):
        """A Health/Watch("") (server-streaming, stays open) and its reader."""
        stub = self.ns.health_pb2_grpc.HealthStub(channel)
        reader = harness.StreamReader(stub.Watch(
            self.ns.health_pb2.HealthCheckRequest(service=""), timeout=timeout))
        self.addCleanup(reader.cancel)
        return reader


class ConcurrentStreamsTest(GrpcLimitsBase):
    SERVER_ENV = {"GRPC_MAX_CONCURRENT_STREAMS": 4, "GRPC_STREAMS_PER_PEER": 1000}

    def test_one_connection_cannot_open_more_calls_than_max_concurrent_streams(self):
        ch = self.channel_()
        with self.rss_watch():
            open_ = [self.open_watch(ch) for _ in range(4)]
            for r in open_:
                self.assertIsNotNone(r.next(timeout=5), "a stream within the limit got nothing")
            # The fifth waits at the client for a free stream: no first message.
            extra = [self.open_watch(ch, timeout=10) for _ in range(16)]
            time.sleep(1.0)
            served = sum(1 for r in extra if r.next(timeout=0.01) is not None)
            self.assertEqual(served, 0, "%d calls beyond GRPC_MAX_CONCURRENT_STREAMS=4 on one "
                             "connection were served" % served)
            # One ends: one waiting call gets its stream.
            open_[0].cancel()
            got = 0
            deadline = time.monotonic() + 5
            while got == 0 and time.monotonic() < deadline:
                got = sum(1 for r in extra if r.next(timeout=0.05) is not None)
            self.assertEqual(got, 1, "ending one call should admit exactly one waiting call")
            for r in open_ + extra:
                r.cancel()
        self.assert_survived()


class MetadataSizeTest(GrpcLimitsBase):
    SERVER_ENV = {"GRPC_MAX_METADATA_BYTES": 4096}

    def check_with(self, md):
        stub = self.ns.health_pb2_grpc.HealthStub(self.channel_())
        return stub.Check(self.ns.health_pb2.HealthCheckRequest(service=""), metadata=md,
                          timeout=5)

    def test_metadata_over_grpc_max_metadata_bytes_is_refused(self):
        with self.rss_watch():
            self.assertEqual(self.check_with([("x-small", "a" * 1024)]).status,
                             self.ns.health_pb2.HealthCheckResponse.SERVING)
            for size in (6 * 1024, 64 * 1024):
                with self.subTest(size=size):
                    with self.assertRaises(grpc.RpcError) as cm:
                        self.check_with([("x-big", "a" * size)])
                    self.assertIn(cm.exception.code(), (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                        grpc.StatusCode.INTERNAL),
                                  cm.exception.details())
            for _ in range(50):
                with self.assertRaises(grpc.RpcError):
                    self.check_with([("x-big-%d" % i, "b" * 1000) for i in range(8)])
        self.assert_survived()


class StreamsPerPeerTest(GrpcLimitsBase):
    SERVER_ENV = {"GRPC_STREAMS_PER_PEER": 3}

    def test_one_ip_cannot_hold_more_server_streams_than_streams_per_peer(self):
        with self.rss_watch():
            # Over separate connections: the limit is per IP, not per connection.
            held = [self.open_watch(self.channel_()) for _ in range(3)]
            for r in held:
                self.assertIsNotNone(r.next(timeout=5))
            over = self.open_watch(self.channel_())
            self.assertTrue(over.wait_end(5), "a fourth stream from the same IP stayed open")
            self.assertEqual(over.code, grpc.StatusCode.RESOURCE_EXHAUSTED, over.details)
            self.assertIn("GRPC_STREAMS_PER_PEER", over.details)
            # Unary calls are not counted.
            self.assertServing(fresh=True)
            # One ends: room for one more.
            held[0].cancel()
            self.assertTrue(held[0].wait_end(5))
            deadline = time.monotonic() + 5
            while True:
                again = self.open_watch(self.channel_())
                first = again.next(timeout=2)
                if first is not None or time.monotonic() > deadline:
                    break
            self.assertIsNotNone(first, "no room after a stream ended: %s %s"
                                 % (again.code, again.details))
            for r in held[1:] + [again]:
                r.cancel()
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
