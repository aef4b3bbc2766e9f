"""Server-streaming RPCs over WebSocket, with python3-websockets.

Against a live analyticsd: the streaming routes upgrade, answer the
handler's error (an unknown metric: NOT_FOUND) as {"error":{...}} and close with 4000 + the gRPC
status (4005; a metric stream over METRIC_STREAMS_PER_PEER: 4008) and its message as the reason, accept a token in
the subprotocol list "bearer, <token>" (answering "bearer" only), and refuse unknown paths.

Against tests/integration/test_restbridge --serve (the bridge in-process
with test handlers): 100 messages in order then close 1000, an error after
some messages, the token from the subprotocol or the Authorization header
reaching the handler, a slow consumer closed with 1008, a client leaving
mid-stream, and server shutdown closing with 1001.
"""

import asyncio
import json
import os
import subprocess
import time
import unittest

import websockets

import authkit
import harness

TIMEOUT_S = 10


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S * 3))


async def collect(uri, **kw):
    """Reads frames until the close; returns (list of parsed frames, close code, ws)."""
    frames = []
    async with websockets.connect(uri, open_timeout=TIMEOUT_S, **kw) as ws:
        try:
            while True:
                msg = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                frames.append(json.loads(msg))
        except websockets.ConnectionClosed:
            pass
        return frames, ws.close_code, ws


class WebSocketServerTest(harness.ServerTestCase):

    def uri(self, path):
        return "ws://127.0.0.1:%d%s" % (self.rest_port, path)

    def test_stream_metric_of_an_unknown_metric_answers_not_found_then_4005(self):
        # Implemented (tested in test_metric_stream.py): an unknown id is an error frame.
        frames, code, ws = run(collect(self.uri("/ws/metrics/abc")))
        self.assertEqual(code, 4005)  # 4000 + NOT_FOUND
        self.assertEqual(ws.close_reason, frames[0]["error"]["message"])
        self.assertEqual(len(frames), 1, frames)
        err = frames[0]["error"]
        self.assertEqual(err["code"], 5)
        self.assertIn("not found", err["message"])
        self.assertEqual(err["details"], [])

    def test_stream_analytics_with_query(self):
        # Implemented: the query fills the filters and a snapshot comes first
        # (the stream itself is tested in test_realtime.py).
        async def first_frame():
            async with websockets.connect(
                    self.uri("/ws/analytics?eventType=page_view&properties.plan=pro"),
                    open_timeout=TIMEOUT_S) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        self.assertIn("aggregates", run(first_frame())["result"])

    def test_unknown_query_parameter_is_an_error_frame(self):
        frames, code, _ = run(collect(self.uri("/ws/metrics/abc?bogus=1")))
        self.assertEqual(code, 4003)  # 4000 + INVALID_ARGUMENT
        self.assertEqual(frames[0]["error"]["code"], 3)
        self.assertIn("bogus", frames[0]["error"]["message"])

    def test_bearer_subprotocol_is_accepted(self):
        frames, code, ws = run(collect(self.uri("/ws/metrics/abc"), subprotocols=["bearer", "x"]))
        self.assertEqual(ws.subprotocol, "bearer")
        self.assertEqual(code, 4005)

    def test_unknown_path_is_refused(self):
        async def go():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with websockets.connect(self.uri("/ws/nothing"), open_timeout=TIMEOUT_S):
                    pass
            return cm.exception.status_code
        self.assertEqual(run(go()), 404)
        self.assertServerAlive()


class WebSocketServerRemoteTest(WebSocketServerTest):
    """The same against analytics-restbridge (remote mode) in front of analyticsd."""

    BRIDGE = "remote"


class WebSocketCloseCodeTest(harness.ServerTestCase):
    """Close codes: 4000 + the gRPC status of an ended call (with its message as the
    reason), 1009 for a client message over HTTP_MAX_BODY_BYTES."""

    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET, "HTTP_MAX_BODY_BYTES": "4096"}

    def uri(self, path):
        return "ws://127.0.0.1:%d%s" % (self.rest_port, path)

    def test_unauthenticated_closes_with_4016(self):
        frames, code, ws = run(collect(self.uri("/ws/analytics"),
                                       extra_headers={"Authorization": "Bearer nope"}))
        self.assertEqual(code, 4016)  # 4000 + UNAUTHENTICATED
        self.assertEqual(ws.close_reason, frames[-1]["error"]["message"])
        self.assertEqual(frames[-1]["error"]["code"], 16)

    def test_oversized_client_message_closes_with_1009(self):
        token = authkit.hs256(authkit.claims())

        async def go():
            async with websockets.connect(self.uri("/ws/analytics"), open_timeout=TIMEOUT_S,
                                          extra_headers={"Authorization": "Bearer " + token}) \
                    as ws:
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)  # the first snapshot
                await ws.send("x" * 5000)
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                except websockets.ConnectionClosed:
                    pass
                return ws.close_code, ws.close_reason
        code, reason = run(go())
        self.assertEqual(code, 1009)
        self.assertIn("HTTP_MAX_BODY_BYTES", reason)


class WebSocketCloseCodeRemoteTest(WebSocketCloseCodeTest):
    BRIDGE = "remote"


class WebSocketResourceExhaustedTest(harness.ServerTestCase):
    """A metric stream over METRIC_STREAMS_PER_PEER ends RESOURCE_EXHAUSTED: close 4008 with
    the status message as the reason, while the stream within the limit stays open."""

    SERVER_ENV = {"METRIC_STREAMS_PER_PEER": "1"}

    def uri(self, path):
        return "ws://127.0.0.1:%d%s" % (self.rest_port, path)

    def test_stream_over_the_per_peer_cap_closes_with_4008(self):
        from test_rest import RestClient
        status, _, m = RestClient(self.rest_port).request(
            "POST", "/api/metrics", {"name": "ws cap %d" % os.getpid(), "formula": "count(x)"})
        self.assertEqual(status, 200, m)
        path = "/ws/metrics/" + m["metricId"]

        async def go():
            async with websockets.connect(self.uri(path), open_timeout=TIMEOUT_S) as held:
                await asyncio.wait_for(held.recv(), TIMEOUT_S)  # the first update: open
                frames, code, ws = await collect(self.uri(path))
                self.assertFalse(held.closed, "the stream within the limit was closed")
                return frames, code, ws
        frames, code, ws = run(go())
        self.assertEqual(code, 4008)  # 4000 + RESOURCE_EXHAUSTED
        self.assertEqual(frames[-1]["error"]["code"], 8)
        self.assertIn("METRIC_STREAMS_PER_PEER", frames[-1]["error"]["message"])
        self.assertEqual(ws.close_reason, frames[-1]["error"]["message"][:len(ws.close_reason)])
        self.assertTrue(ws.close_reason)


class WebSocketResourceExhaustedRemoteTest(WebSocketResourceExhaustedTest):
    BRIDGE = "remote"


def restbridge_test_binary():
    path = os.environ.get("ANA_TEST_RESTBRIDGE")
    if path:
        return path
    build = os.path.dirname(os.path.dirname(os.path.abspath(harness.binary_path())))
    return os.path.join(build, "tests", "integration", "test_restbridge")


class BridgeProcess:
    """test_restbridge --serve: the bridge with test handlers."""

    def __init__(self):
        self.proc = subprocess.Popen([restbridge_test_binary(), "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise harness.ServerError("test_restbridge --serve said %r; stderr: %s"
                                      % (line, self.proc.stderr.read().decode()[-2000:]))
        self.port = int(line.split()[1])

    def stop(self, timeout=15):
        """Closes stdin (the server shuts down) and returns the exit code."""
        if self.proc.stdin:
            self.proc.stdin.close()
            self.proc.stdin = None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise harness.ServerError("test_restbridge did not stop")

    def alive(self):
        return self.proc.poll() is None


@unittest.skipUnless(os.access(restbridge_test_binary(), os.X_OK),
                     "test_restbridge not built")
class WebSocketBridgeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.bridge = BridgeProcess()

    @classmethod
    def tearDownClass(cls):
        rc = cls.bridge.stop()
        if rc != 0:
            raise harness.ServerError("test_restbridge exited with %s: %s"
                                      % (rc, cls.bridge.proc.stderr.read().decode()[-2000:]))

    def uri(self, path):
        return "ws://127.0.0.1:%d%s" % (self.bridge.port, path)

    def test_hundred_messages_in_order_then_1000(self):
        frames, code, ws = run(collect(self.uri("/ws/metrics/count-100")))
        self.assertEqual(code, 1000)
        self.assertEqual(len(frames), 100)
        self.assertEqual([int(f["result"]["sequence"]) for f in frames], list(range(1, 101)))
        self.assertEqual(frames[0]["result"]["metricId"], "count-100")
        self.assertIsNone(ws.subprotocol)

    def test_error_after_messages_then_4013(self):
        frames, code, ws = run(collect(self.uri("/ws/metrics/fail")))
        self.assertEqual(code, 4013)  # 4000 + INTERNAL
        self.assertEqual(ws.close_reason, "boom")
        self.assertEqual([f.get("result", {}).get("sequence") for f in frames[:2]], ["1", "2"])
        err = frames[2]["error"]
        self.assertEqual(err["code"], 13)
        self.assertEqual(err["message"], "boom")
        self.assertEqual(err["details"], [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "metricId", "description": "is broken"}]}])

    def test_token_from_subprotocol(self):
        frames, code, ws = run(collect(self.uri("/ws/metrics/auth"),
                                       subprotocols=["bearer", "tok-1"]))
        self.assertEqual(ws.subprotocol, "bearer")
        self.assertEqual(frames[0]["result"]["metricId"], "Bearer tok-1")
        self.assertEqual(code, 1000)

    def test_token_from_header(self):
        frames, code, _ = run(collect(self.uri("/ws/metrics/auth"),
                                      extra_headers={"Authorization": "Bearer h-2"}))
        self.assertEqual(frames[0]["result"]["metricId"], "Bearer h-2")

    def test_canonical_subprotocol(self):
        frames, code, ws = run(collect(self.uri("/ws/metrics/count-3"),
                                       subprotocols=["restbridge.v1"]))
        self.assertEqual(ws.subprotocol, "restbridge.v1")
        self.assertEqual(len(frames), 3)

    def test_slow_consumer_is_closed_with_1008(self):
        async def go():
            async with websockets.connect(self.uri("/ws/metrics/flood"), max_queue=1,
                                          read_limit=2 ** 16, open_timeout=TIMEOUT_S) as ws:
                await asyncio.sleep(4)  # the bridge gives up after 1 s of a full queue
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                except websockets.ConnectionClosed:
                    pass
                return ws.close_code, ws.close_reason
        code, reason = run(go())
        self.assertEqual(code, 1008)
        self.assertEqual(reason, "slow consumer")

    def test_client_leaving_mid_stream(self):
        async def go():
            async with websockets.connect(self.uri("/ws/metrics/hold"),
                                          open_timeout=TIMEOUT_S) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                return first
        first = run(go())
        self.assertEqual(first["result"]["sequence"], "1")
        time.sleep(0.2)
        self.assertTrue(self.bridge.alive())
        frames, code, _ = run(collect(self.uri("/ws/metrics/count-2")))
        self.assertEqual((len(frames), code), (2, 1000))

    def test_unknown_ws_path(self):
        async def go():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with websockets.connect(self.uri("/ws/nope"), open_timeout=TIMEOUT_S):
                    pass
            return cm.exception.status_code
        self.assertEqual(run(go()), 404)


@unittest.skipUnless(os.access(restbridge_test_binary(), os.X_OK),
                     "test_restbridge not built")
class WebSocketShutdownTest(unittest.TestCase):

    def test_shutdown_closes_with_1001(self):
        bridge = BridgeProcess()
        try:
            async def go():
                async with websockets.connect("ws://127.0.0.1:%d/ws/metrics/hold" % bridge.port,
                                              open_timeout=TIMEOUT_S) as ws:
                    await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                    bridge.proc.stdin.close()
                    bridge.proc.stdin = None
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                    except websockets.ConnectionClosed:
                        pass
                    return ws.close_code
            self.assertEqual(run(go()), 1001)
            self.assertEqual(bridge.stop(), 0)
        finally:
            if bridge.alive():
                bridge.proc.kill()


if __name__ == "__main__":
    unittest.main()
