"""Malformed, oversized and odd requests get a status and never bring the server down."""

import unittest

import grpc

import harness
import stubs

MAX_MESSAGE_BYTES = 65536
TIMEOUT_S = 5


class BadInputTest(harness.ServerTestCase):
    SERVER_ENV = {"GRPC_MAX_MESSAGE_BYTES": MAX_MESSAGE_BYTES}

    def raw_unary(self, path, payload, metadata=None, channel=None):
        """Returns (code, details) of a unary call with raw bytes."""
        call = (channel or self.channel).unary_unary(path, request_serializer=None,
                                                     response_deserializer=None)
        try:
            call(payload, timeout=TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as e:
            return e.code(), e.details()
        return grpc.StatusCode.OK, ""

    def own_channel(self):
        """A channel with its own connection, which the server may close."""
        ch = grpc.insecure_channel(self.server.target,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        self.addCleanup(ch.close)
        return ch

    def test_malformed_protobuf_is_invalid_argument(self):
        for payload in (b"\xff\xff\xff", b"\x0a\x05ab", b"\x0b"):
            with self.subTest(payload=payload):
                code, details = self.raw_unary("/grpc.health.v1.Health/Check", payload)
                self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT,
                                 "%s %r" % (code, details))
                self.assertServing()

    def test_malformed_reflection_request(self):
        call = self.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=None, response_deserializer=None)
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in call(iter([b"\xff\xff\xff"]), timeout=TIMEOUT_S):
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                         cm.exception.details())
        self.assertServing()

    def test_message_over_limit_is_resource_exhausted(self):
        req = self.ns.health_pb2.HealthCheckRequest(service="x" * 100 * 1024)
        with self.assertRaises(grpc.RpcError) as cm:
            self.health.Check(req, timeout=TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED,
                         cm.exception.details())
        self.assertServing()

    def test_message_just_under_limit_is_accepted(self):
        req = self.ns.health_pb2.HealthCheckRequest(service="x" * (MAX_MESSAGE_BYTES - 1024))
        with self.assertRaises(grpc.RpcError) as cm:
            self.health.Check(req, timeout=TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND,
                         cm.exception.details())

    def test_huge_metadata_value_does_not_crash(self):
        for size in (20 * 1024, 200 * 1024):
            with self.subTest(size=size):
                # Over the HTTP/2 header limit the connection may be closed;
                # the process must survive and serve new connections.
                code, details = self.raw_unary(
                    "/grpc.health.v1.Health/Check", b"",
                    metadata=[("x-big", "v" * size)], channel=self.own_channel())
                self.assertIsInstance(code, grpc.StatusCode)
                self.assertServing(fresh=True)

    def test_many_metadata_entries_do_not_crash(self):
        md = [("x-h%d" % i, "v" * 64) for i in range(500)]
        self.raw_unary("/grpc.health.v1.Health/Check", b"", metadata=md,
                       channel=self.own_channel())
        self.assertServing(fresh=True)

    def test_empty_request_to_every_unary_method(self):
        for m in stubs.analytics_methods():
            if m.client_streaming or m.server_streaming:
                continue
            with self.subTest(method=m.path):
                code, details = self.raw_unary(m.path, b"")
                self.assertIsInstance(code, grpc.StatusCode)
                self.assertNotIn(code, (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                        grpc.StatusCode.DEADLINE_EXCEEDED),
                                 "%s answered %s %r" % (m.path, code, details))
                self.assertServing()

    def test_garbage_to_every_unary_method(self):
        for m in stubs.analytics_methods():
            if m.client_streaming or m.server_streaming:
                continue
            with self.subTest(method=m.path):
                code, details = self.raw_unary(m.path, b"\xff\xff\xff")
                self.assertIn(code, (grpc.StatusCode.INVALID_ARGUMENT,
                                     grpc.StatusCode.UNIMPLEMENTED,
                                     grpc.StatusCode.UNAUTHENTICATED,
                                     grpc.StatusCode.PERMISSION_DENIED),
                              "%s answered %s %r" % (m.path, code, details))
                self.assertServing()


if __name__ == "__main__":
    unittest.main()
