"""The access log and request ids, against a live analyticsd (and analytics-restbridge).

One JSON line per REST request, WebSocket and gRPC call (component "access": requestId,
transport, method, route, status, bytesIn, bytesOut, durationMs, peer), every failure and
ACCESS_LOG_SAMPLE of the successes; the request id (X-Request-Id / x-request-id, made when
absent) is echoed, carried by the error body and by the log lines written for the call.
"""

import asyncio
import json
import time
import unittest
import uuid

import grpc
import websockets

import harness
from test_rest import RestClient

TIMEOUT_S = 10


def parse(raw_lines):
    out = []
    for l in raw_lines:
        try:
            obj = json.loads(l)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


class AccessLogTest(harness.ServerTestCase):

    SERVER_ENV = {"ACCESS_LOG_SAMPLE": "1"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    def bridge_lines(self):
        """The log of whichever serves REST."""
        if self.bridge is not None:
            return parse(self.bridge.stderr().splitlines())
        return parse(self.server.raw_log_lines())

    def wait_access(self, lines_fn, rid, transport, timeout=5):
        deadline = time.monotonic() + timeout
        while True:
            got = [l for l in lines_fn() if l.get("component") == "access"
                   and l.get("requestId") == rid and l.get("transport") == transport]
            if got or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def test_rest_request_gets_one_line(self):
        rid = "acc-" + uuid.uuid4().hex
        status, h, _ = self.rest.request("GET", "/api/metrics?pageSize=1",
                                         headers={"X-Request-Id": rid})
        self.assertEqual(status, 200)
        lines = self.wait_access(self.bridge_lines, rid, "http")
        self.assertEqual(len(lines), 1, lines)
        l = lines[0]
        self.assertEqual((l["method"], l["route"], l["status"]), ("GET", "/api/metrics", 200))
        self.assertEqual(l["level"], "info")
        self.assertEqual(l["peer"], "127.0.0.1")
        self.assertGreater(l["bytesOut"], 0)
        self.assertEqual(l["bytesIn"], 0)
        self.assertIsInstance(l["durationMs"], float)

    def test_error_body_and_header_carry_the_request_id(self):
        status, h, body = self.rest.request("GET", "/api/metrics/nope")
        self.assertEqual(status, 404)
        self.assertTrue(h.get("x-request-id"))
        self.assertEqual(body["requestId"], h["x-request-id"])
        lines = self.wait_access(self.bridge_lines, h["x-request-id"], "http")
        self.assertEqual([(l["status"], l["route"]) for l in lines],
                         [(404, "/api/metrics/{metric_id}")])
        status, h, body = self.rest.request("DELETE", "/nowhere", headers={"X-Request-Id": "r-9"})
        self.assertEqual((status, body["requestId"]), (404, "r-9"))

    def test_grpc_call_gets_one_line_and_the_id_back(self):
        rid = "acc-" + uuid.uuid4().hex
        with self.assertRaises(grpc.RpcError) as cm:
            self.channel.unary_unary("/analytics.v1.MetricService/GetMetric")(
                b"\x0a\x03abc", timeout=5, metadata=[("x-request-id", rid)])
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn(("x-request-id", rid), list(cm.exception.initial_metadata()))
        lines = self.wait_access(lambda: parse(self.server.raw_log_lines()), rid, "grpc")
        self.assertEqual(len(lines), 1, lines)
        l = lines[0]
        self.assertEqual((l["method"], l["status"], l["code"]),
                         ("/analytics.v1.MetricService/GetMetric", 5, "NOT_FOUND"))
        self.assertEqual(l["bytesIn"], 5)
        self.assertEqual(l["peer"], "127.0.0.1")

    def test_grpc_call_without_an_id_gets_one(self):
        _, call = self.channel.unary_unary("/grpc.health.v1.Health/Check").with_call(
            b"", timeout=5)
        rid = dict(call.initial_metadata()).get("x-request-id")
        self.assertRegex(rid or "", r"^[0-9a-f-]{36}$")
        lines = self.wait_access(lambda: parse(self.server.raw_log_lines()), rid, "grpc")
        self.assertEqual([(l["status"], l["code"]) for l in lines], [(0, "OK")])

    def test_websocket_gets_one_line_with_its_close_code(self):
        rid = "acc-" + uuid.uuid4().hex

        async def go():
            async with websockets.connect("ws://127.0.0.1:%d/ws/metrics/nope" % self.rest_port,
                                          open_timeout=TIMEOUT_S,
                                          extra_headers={"X-Request-Id": rid}) as ws:
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                except websockets.ConnectionClosed:
                    pass
                return ws.close_code
        self.assertEqual(asyncio.run(asyncio.wait_for(go(), 30)), 4005)
        lines = self.wait_access(self.bridge_lines, rid, "websocket")
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual((lines[0]["route"], lines[0]["status"]), ("/ws/metrics/{metric_id}", 4005))
        self.assertGreater(lines[0]["bytesOut"], 0)


class AccessLogRemoteTest(AccessLogTest):
    """The same through analytics-restbridge; the gRPC call it makes upstream is logged by
    analyticsd under the same request id."""

    BRIDGE = "remote"

    def test_upstream_call_has_the_same_request_id(self):
        rid = "acc-" + uuid.uuid4().hex
        status, _, _ = self.rest.request("GET", "/api/metrics/nope", headers={"X-Request-Id": rid})
        self.assertEqual(status, 404)
        lines = self.wait_access(lambda: parse(self.server.raw_log_lines()), rid, "grpc")
        self.assertEqual([l["code"] for l in lines], ["NOT_FOUND"])


class AccessLogPeerTest(harness.ServerTestCase):
    """The access log's peer is judged the same way for REST, WebSocket and gRPC: behind a
    proxy listed in TRUSTED_PROXIES, the X-Forwarded-For hop it did not write; from any other
    peer, the connection's own address (X-Forwarded-For ignored)."""

    CLIENT = "198.51.100.7"
    SERVER_ENV = {"ACCESS_LOG_SAMPLE": "1", "TRUSTED_PROXIES": "127.0.0.1/32, ::1"}
    EXPECTED = CLIENT

    def peers(self, forwarded):
        rid = "acc-" + uuid.uuid4().hex
        # A client that is not on loopback gets 401 here, which is logged all the same.
        RestClient(self.rest_port).request(
            "GET", "/api/metrics?pageSize=1",
            headers={"X-Request-Id": rid + "-r", "X-Forwarded-For": forwarded})
        try:
            self.channel.unary_unary("/analytics.v1.MetricService/ListMetrics")(
                b"", timeout=5, metadata=[("x-request-id", rid + "-g"),
                                          ("x-forwarded-for", forwarded)])
        except grpc.RpcError:
            pass

        async def ws():
            async with websockets.connect(
                    "ws://127.0.0.1:%d/ws/metrics/nope" % self.rest_port, open_timeout=TIMEOUT_S,
                    extra_headers={"X-Request-Id": rid + "-w",
                                   "X-Forwarded-For": forwarded}) as conn:
                try:
                    while True:
                        await asyncio.wait_for(conn.recv(), TIMEOUT_S)
                except websockets.ConnectionClosed:
                    pass
        asyncio.run(asyncio.wait_for(ws(), 30))
        bridge = (lambda: parse(self.bridge.stderr().splitlines())) if self.bridge else \
            (lambda: parse(self.server.raw_log_lines()))
        got = {}
        for suffix, transport, lines in (("-r", "http", bridge), ("-w", "websocket", bridge),
                                         ("-g", "grpc", lambda: parse(self.server.raw_log_lines()))):
            deadline = time.monotonic() + 5
            while True:
                own = [l for l in lines() if l.get("component") == "access"
                       and l.get("requestId") == rid + suffix and l.get("transport") == transport]
                if own or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(len(own), 1, (transport, own))
            got[transport] = own[0]["peer"]
        return got

    def test_rest_websocket_and_grpc_name_the_same_peer(self):
        self.assertEqual(self.peers("203.0.113.1, " + self.CLIENT),
                         {"http": self.EXPECTED, "websocket": self.EXPECTED,
                          "grpc": self.EXPECTED})


class AccessLogPeerRemoteTest(AccessLogPeerTest):
    BRIDGE = "remote"


class AccessLogUntrustedPeerTest(AccessLogPeerTest):
    SERVER_ENV = {"ACCESS_LOG_SAMPLE": "1"}
    EXPECTED = "127.0.0.1"


class AccessLogUntrustedPeerRemoteTest(AccessLogUntrustedPeerTest):
    BRIDGE = "remote"


class CallLogLinesTest(harness.ServerTestCase):
    """A line the handler writes carries the call's request id (its own server: an API key
    once created ends anonymous loopback access)."""

    def test_log_lines_of_a_call_carry_its_request_id(self):
        # CreateKey logs "API key ... created" while handling the call.
        rid = "acc-" + uuid.uuid4().hex
        status, _, body = RestClient(self.rest_port).request("POST", "/api/keys", body={"role": "reader"},
                                            headers={"X-Request-Id": rid})
        self.assertEqual(status, 200, body)
        deadline = time.monotonic() + 5
        while True:
            own = [l for l in parse(self.server.raw_log_lines())
                   if l.get("requestId") == rid and l.get("component") == "keys"]
            if own or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(len(own), 1, own)
        self.assertIn("API key", own[0]["msg"])


class CallLogLinesRemoteTest(CallLogLinesTest):
    BRIDGE = "remote"


class AccessLogSampleTest(harness.ServerTestCase):
    """Default ACCESS_LOG_SAMPLE (0.01): every failure, about 1% of the successes."""

    def test_failures_always_successes_sampled(self):
        mark = self.server.log_mark()
        rest = RestClient(self.rest_port)
        for _ in range(200):
            self.assertEqual(rest.request("GET", "/health")[0], 200)
        for _ in range(20):
            self.assertEqual(rest.request("GET", "/api/nothing")[0], 404)
        time.sleep(0.3)
        access = [l for l in self.server.log_lines(mark) if l.get("component") == "access"]
        ok = [l for l in access if l["status"] == 200]
        failed = [l for l in access if l["status"] == 404]
        self.assertEqual(len(failed), 20)
        self.assertLess(len(ok), 15, "200 successes at 1%%: %d lines" % len(ok))


if __name__ == "__main__":
    unittest.main()
