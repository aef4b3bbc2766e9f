"""Issue 14, point 6 (gRPC part): what one client may hold over gRPC is bounded
by configuration: calls per connection (GRPC_MAX_CONCURRENT_STREAMS),
request metadata (GRPC_MAX_METADATA_BYTES) and open server-streaming calls
per client IP over all its connections (GRPC_STREAMS_PER_PEER). Behind
analytics-restbridge, when it is one of TRUSTED_PROXIES, the client IP is
the one it forwards (x-forwarded-for), not the bridge's.

Small limits keep the attacks cheap. Ping abuse (GRPC_ARG_HTTP2_MAX_PING_STRIKES,
MIN_RECV_PING_INTERVAL, set in server/rpc/grpc_server.c): a raw HTTP/2
connection (hand-built frames: grpcio cannot send a ping flood) sending
PINGs back to back gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and is
closed.
"""

import base64
import os
import socket
import struct
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


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_PING, H2_GOAWAY = 4, 6, 7
H2_ENHANCE_YOUR_CALM = 0xB


def h2_frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def h2_frames(sock, timeout):
    """Yields (type, flags, payload) of the frames read until the peer closes
    or timeout passes with nothing new."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            yield buf[3], buf[4], buf[9:9 + n]
            buf = buf[9 + n:]
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return
        if not chunk:
            return
        buf += chunk


class PingFloodTest(GrpcLimitsBase):

    def test_ping_flood_gets_goaway_too_many_pings(self):
        host, port = self.server.target.rsplit(":", 1)
        with self.rss_watch():
            s = socket.create_connection((host, int(port)), timeout=5)
            self.addCleanup(s.close)
            s.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0))
            s.sendall(b"".join(h2_frame(H2_PING, 0, 0, struct.pack(">Q", i))
                               for i in range(20)))
            acks, goaway = 0, None
            frames = h2_frames(s, 5)
            for ftype, flags, payload in frames:
                if ftype == H2_SETTINGS and not flags & 1:
                    s.sendall(h2_frame(H2_SETTINGS, 1, 0))
                elif ftype == H2_PING and flags & 1:
                    acks += 1
                elif ftype == H2_GOAWAY:
                    goaway = payload
                    break
            self.assertIsNotNone(goaway, "20 pings back to back got %d acks and no GOAWAY"
                                 % acks)
            code = struct.unpack(">I", goaway[4:8])[0]
            self.assertEqual(code, H2_ENHANCE_YOUR_CALM, goaway)
            self.assertIn(b"too_many_pings", goaway[8:])
            # What follows the GOAWAY is gRPC core's own: it may still answer
            # pings while it drains the connection, so nothing is asserted there.
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


def ws_from(source_ip, port, path):
    """A raw WebSocket client socket bound to source_ip (a loopback address
    of its own: another client to the bridge), handshake done."""
    s = socket.socket()
    s.settimeout(10)
    s.bind((source_ip, 0))
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: restbridge.v1\r\n\r\n"
               % (path, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError("WebSocket handshake: connection closed: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise AssertionError("WebSocket handshake refused: %r" % head[:200])
    return s, rest


def closed_within(sock, rest, seconds):
    """The text of the frames until a close frame arrives, or None if the
    stream is still open after seconds."""
    buf, text = rest, b""
    end = time.monotonic() + seconds
    while True:
        while len(buf) >= 2:
            op, n, hdr = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                n, hdr = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, hdr = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < hdr + n:
                break
            payload, buf = buf[hdr:hdr + n], buf[hdr + n:]
            text += payload
            if op == 0x8:
                return text
        left = end - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None
        if not chunk:
            return text
        buf += chunk


class StreamsPerClientBehindBridgeTest(AttackTestCase):
    """Every client of analytics-restbridge counted as the bridge's one
    address: two clients together could hold only GRPC_STREAMS_PER_PEER
    streams. With the bridge in TRUSTED_PROXIES each counts on its own."""
    SERVER_ENV = {"GRPC_STREAMS_PER_PEER": 2, "TRUSTED_PROXIES": "127.0.0.1/32"}

    def test_clients_behind_the_remote_bridge_shared_one_streams_per_peer(self):
        bridge = harness.RemoteBridge(self.server).start()
        self.addCleanup(bridge.stop)
        socks = []
        with self.rss_watch():
            for _ in range(2):
                s, rest = ws_from("127.0.0.2", bridge.port, "/ws/analytics")
                socks.append(s)
                self.assertIsNone(closed_within(s, rest, 0.5), "a stream within the cap closed")
            s, rest = ws_from("127.0.0.2", bridge.port, "/ws/analytics")
            socks.append(s)
            end = closed_within(s, rest, 5)
            self.assertIsNotNone(end, "a third stream of 127.0.0.2 stayed open")
            self.assertIn(b"GRPC_STREAMS_PER_PEER: 127.0.0.2", end)
            # Another client of the same bridge has its own two.
            for _ in range(2):
                s, rest = ws_from("127.0.0.3", bridge.port, "/ws/analytics")
                socks.append(s)
                end = closed_within(s, rest, 1.0)
                self.assertIsNone(end, "127.0.0.3 was refused: %r" % end)
            for s in socks:
                s.close()
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
