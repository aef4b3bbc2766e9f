"""Every analytics.v1 RPC not yet implemented answers UNIMPLEMENTED naming its feature.

Methods are enumerated from the generated descriptors, so a new RPC is
covered without touching this file. ANA_IMPLEMENTED_FEATURES (comma-separated
feature names, e.g. "events,metrics") lists features that are implemented;
their methods are skipped here. ANA_IMPLEMENTED_METHODS (comma-separated
method paths, e.g. "/analytics.v1.RealtimeService/StreamAnalytics") skips
single methods of a feature that is implemented only in part.
"""

import os
import unittest

import grpc

import harness
import stubs

TIMEOUT_S = 5


def implemented_features():
    raw = os.environ.get("ANA_IMPLEMENTED_FEATURES", "")
    return {f.strip() for f in raw.split(",") if f.strip()}


def implemented_methods():
    raw = os.environ.get("ANA_IMPLEMENTED_METHODS", "")
    return {m.strip() for m in raw.split(",") if m.strip()}


def call_raw(channel, method, payload=b""):
    """Calls a method with raw bytes; returns (code, details)."""
    ms = dict(request_serializer=None, response_deserializer=None)
    try:
        if not method.client_streaming and not method.server_streaming:
            channel.unary_unary(method.path, **ms)(payload, timeout=TIMEOUT_S)
        elif not method.client_streaming:
            for _ in channel.unary_stream(method.path, **ms)(payload, timeout=TIMEOUT_S):
                pass
        elif not method.server_streaming:
            # One empty message, then half-close.
            channel.stream_unary(method.path, **ms)(iter([payload]), timeout=TIMEOUT_S)
        else:
            for _ in channel.stream_stream(method.path, **ms)(iter([payload]),
                                                              timeout=TIMEOUT_S):
                pass
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


class UnimplementedTest(harness.ServerTestCase):

    def test_contracts_are_enumerated(self):
        methods = stubs.analytics_methods()
        services = {m.service for m in methods}
        self.assertGreaterEqual(len(services), 5, services)
        self.assertIn("/analytics.v1.EventService/TrackEvent", {m.path for m in methods})

    def test_every_method_has_a_feature(self):
        for m in stubs.analytics_methods():
            with self.subTest(method=m.path):
                self.assertTrue(m.feature, "%s has no (analytics.v1.policy).feature" % m.path)

    def test_every_method_answers_unimplemented_with_its_feature(self):
        done = implemented_features()
        done_methods = implemented_methods()
        for m in stubs.analytics_methods():
            with self.subTest(method=m.path, kind=m.kind):
                if m.feature in done:
                    self.skipTest("feature %r is implemented" % m.feature)
                if m.path in done_methods:
                    self.skipTest("method %s is implemented" % m.path)
                code, details = call_raw(self.channel, m)
                self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED,
                                 "%s (%s) answered %s %r" % (m.path, m.kind, code, details))
                expected = "%s are not implemented yet" % m.feature
                self.assertIn(expected, details or "",
                              "%s: message %r does not say %r" % (m.path, details, expected))
        self.assertServing()

    def test_unknown_method_of_known_service(self):
        self._assert_unknown("/analytics.v1.EventService/NoSuchMethod")

    def test_unknown_service(self):
        self._assert_unknown("/no.Such/Thing")

    def test_unknown_streaming_method(self):
        call = self.channel.stream_stream("/no.Such/Stream", request_serializer=None,
                                          response_deserializer=None)
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in call(iter([b""]), timeout=TIMEOUT_S):
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED,
                         cm.exception.details())
        self.assertServing()

    def _assert_unknown(self, path):
        call = self.channel.unary_unary(path, request_serializer=None,
                                        response_deserializer=None)
        with self.assertRaises(grpc.RpcError) as cm:
            call(b"", timeout=TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED,
                         cm.exception.details())
        self.assertServing()


if __name__ == "__main__":
    unittest.main()
