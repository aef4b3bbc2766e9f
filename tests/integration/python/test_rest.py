"""The REST bridge of a live analyticsd, driven with plain HTTP (http.client),
in both upstream modes: in-process (analyticsd's own PORT, RestTest) and
remote (analytics-restbridge --upstream in front of it, RestRemoteTest).

Every route of the contracts' google.api.http annotations (read from the
descriptors here, independently of the generated route table) answers
through REST with the HTTP status that grpc-gateway maps the gRPC answer
to, and bad input of every kind gets a JSON error without hanging or
crashing the server.
"""

import http.client
import json
import re
import socket
import time
import unittest
import uuid

import grpc

import harness
import stubs

TIMEOUT_S = 10
MAX_BODY = 2048

# grpc-gateway's runtime.HTTPStatusFromCode
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_routes():
    """(method, verb, template, body) for every annotated unary RPC."""
    ns = stubs.load()
    out = []
    for m in stubs.analytics_methods():
        opts = m.descriptor.GetOptions()
        if not opts.HasExtension(ns.annotations_pb2.http) or m.server_streaming:
            continue
        rule = opts.Extensions[ns.annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        if verb in (None, "custom"):
            continue
        out.append((m, verb.upper(), getattr(rule, verb), rule.body))
    return out


def fill_path(template, value="x1"):
    """The template with each {var} replaced; returns (path, [var field names])."""
    fields = re.findall(r"\{([^}=]+)(?:=[^}]*)?\}", template)
    return re.sub(r"\{[^}]*\}", value, template), fields


class RestClient:
    def __init__(self, port):
        self.port = port

    def request(self, verb, path, body=None, headers=None, raw_body=None):
        """Returns (status, headers dict lower-case, parsed JSON or raw text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
        try:
            hdrs = dict(headers or {})
            data = raw_body
            if body is not None:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(verb, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read()
            h = {k.lower(): v for k, v in resp.getheaders()}
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = text
            return resp.status, h, parsed
        finally:
            conn.close()


class RestTest(harness.ServerTestCase):

    SERVER_ENV = {"HTTP_MAX_BODY_BYTES": MAX_BODY,
                  "CORS_ALLOWED_ORIGINS": "https://app.example"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    def assertJsonError(self, status, body, http_status, code=None):
        self.assertEqual(status, http_status, body)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(set(body), {"code", "message", "details", "requestId"}, body)
        if code is not None:
            self.assertEqual(body["code"], code, body)
        self.assertIsInstance(body["details"], list)

    def test_routes_are_enumerated(self):
        routes = http_routes()
        self.assertGreaterEqual(len(routes), 19)
        self.assertIn(("POST", "/api/events"), {(v, t) for _, v, t, _ in routes})

    def test_every_route_answers_like_grpc(self):
        for m, verb, template, body in http_routes():
            with self.subTest(route="%s %s" % (verb, template)):
                path, fields = fill_path(template)
                pb2_req = m.descriptor.input_type
                req_cls = self._message_class(pb2_req)
                req = req_cls()
                for f in fields:
                    setattr(req, f, "x1")
                rest_body = None
                if body == "*":
                    rest_body = {}
                elif body:
                    rest_body = {}
                    getattr(req, body).SetInParent()
                call = self.channel.unary_unary(
                    m.path, request_serializer=lambda r: r.SerializeToString(),
                    response_deserializer=lambda b: b)
                try:
                    call(req, timeout=TIMEOUT_S)
                    code, details = grpc.StatusCode.OK, ""
                except grpc.RpcError as e:
                    code, details = e.code(), e.details()
                status, _, resp = self.rest.request(verb, path, body=rest_body)
                self.assertEqual(status, HTTP_STATUS[code], "%s: gRPC %s %r, REST %s %r"
                                 % (m.path, code, details, status, resp))
                if code != grpc.StatusCode.OK:
                    self.assertJsonError(status, resp, HTTP_STATUS[code], code.value[0])
                    self.assertEqual(resp["message"], details)
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    self.assertEqual(resp, {"code": 12, "message": details, "details": []})

    def _message_class(self, desc):
        from google.protobuf import message_factory
        return message_factory.MessageFactory(desc.file.pool).GetPrototype(desc)

    def test_unimplemented_route_body(self):
        # A GET route of a feature not built yet (ANA_IMPLEMENTED_FEATURES, as in
        # test_unimplemented.py); none left means there is nothing to check.
        from test_unimplemented import implemented_features, implemented_methods
        done, done_methods = implemented_features(), implemented_methods()
        todo = [(m, template) for m, verb, template, _ in http_routes()
                if verb == "GET" and m.feature not in done and m.path not in done_methods]
        if not todo:
            self.skipTest("every feature with a REST route is implemented")
        m, template = todo[0]
        status, h, body = self.rest.request("GET", fill_path(template)[0])
        self.assertEqual(status, 501, body)
        self.assertEqual(body, {"code": 12, "message": "%s are not implemented yet" % m.feature,
                                "details": [], "requestId": h["x-request-id"]})

    def test_health(self):
        status, h, body = self.rest.request("GET", "/health")
        self.assertEqual(status, 200)
        self.assertEqual(body["status"], "ok")
        self.assertIn("application/json", h["content-type"])

    def test_request_id_is_echoed(self):
        status, h, _ = self.rest.request("GET", "/api/metrics", headers={"X-Request-Id": "rid-42"})
        self.assertEqual(h.get("x-request-id"), "rid-42")
        status, h, _ = self.rest.request("GET", "/api/metrics")
        self.assertTrue(h.get("x-request-id"), "a request id is made when none is sent")

    def test_user_agent_and_language_fill_the_context(self):
        # An event without userAgent / locale gets the request's User-Agent and the first tag
        # of its Accept-Language; one that has them keeps its own.
        name = "ua_" + uuid.uuid4().hex[:12]
        hdrs = {"User-Agent": "shop-app/2.1 (iPhone)", "Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
        for ctx in (None, {"userAgent": "own/1", "locale": "fr"}):
            ev = {"eventType": "t", "eventName": name}
            if ctx:
                ev["context"] = ctx
            status, _, body = self.rest.request("POST", "/api/events", body=ev, headers=hdrs)
            self.assertEqual(status, 200, body)
        deadline = time.monotonic() + 10
        while True:
            status, _, body = self.rest.request("GET", "/api/events/search?eventName=" + name)
            got = sorted((e.get("context", {}).get("userAgent"), e.get("context", {}).get("locale"))
                         for e in (body or {}).get("events", []))
            if len(got) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(got, [("own/1", "fr"), ("shop-app/2.1 (iPhone)", "de-DE")])

    def test_cors_preflight(self):
        status, h, _ = self.rest.request("OPTIONS", "/api/metrics", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        self.assertEqual(status, 204)
        self.assertEqual(h.get("access-control-allow-origin"), "https://app.example")
        self.assertIn("POST", h.get("access-control-allow-methods", ""))
        status, h, body = self.rest.request("OPTIONS", "/api/metrics", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        self.assertJsonError(status, body, 403, 7)
        self.assertNotIn("access-control-allow-origin", h)
        status, h, _ = self.rest.request("GET", "/api/metrics",
                                         headers={"Origin": "https://app.example"})
        self.assertEqual(h.get("access-control-allow-origin"), "https://app.example")

    # -- bad input ---------------------------------------------------------

    def test_malformed_json(self):
        status, _, body = self.rest.request("POST", "/api/events/batch", raw_body=b"{\"events\":",
                                            headers={"Content-Type": "application/json"})
        self.assertJsonError(status, body, 400, 3)

    def test_wrong_type_names_the_field(self):
        status, _, body = self.rest.request("POST", "/api/events/batch",
                                            body={"events": [{"eventName": 5}]})
        self.assertJsonError(status, body, 400, 3)
        self.assertIn("events[0].eventName", json.dumps(body))
        self.assertEqual(body["details"][0]["@type"],
                         "type.googleapis.com/google.rpc.BadRequest")

    def test_unknown_field(self):
        status, _, body = self.rest.request("POST", "/api/events/batch", body={"bogus": 1})
        self.assertJsonError(status, body, 400, 3)
        self.assertIn("bogus", body["message"])

    def test_unknown_query_parameter(self):
        status, _, body = self.rest.request("GET", "/api/metrics?pageSize=2&bogus=1")
        self.assertJsonError(status, body, 400, 3)
        self.assertIn("bogus", body["message"])

    def test_bad_query_value(self):
        status, _, body = self.rest.request("GET", "/api/metrics?pageSize=many")
        self.assertJsonError(status, body, 400, 3)

    def test_body_over_limit(self):
        status, _, body = self.rest.request("POST", "/api/events/batch",
                                            raw_body=b" " * (MAX_BODY + 1),
                                            headers={"Content-Type": "application/json"})
        self.assertJsonError(status, body, 413)

    def test_chunked_body(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=TIMEOUT_S)
        try:
            conn.request("POST", "/api/events/batch", body=iter([b"{\"events\":", b"[]}"]),
                         headers={"Content-Type": "application/json",
                                  "Transfer-Encoding": "chunked"}, encode_chunked=True)
            resp = conn.getresponse()
            body = json.loads(resp.read())
        finally:
            conn.close()
        self.assertJsonError(resp.status, body, 411)

    def test_body_on_get_and_delete(self):
        for verb, path in (("GET", "/api/metrics"), ("DELETE", "/api/metrics/x1")):
            with self.subTest(verb=verb):
                status, _, body = self.rest.request(verb, path, raw_body=b"{}")
                self.assertJsonError(status, body, 400, 3)

    def test_unknown_route(self):
        status, _, body = self.rest.request("GET", "/api/nope")
        self.assertJsonError(status, body, 404, 5)

    def test_wrong_method(self):
        # RFC 9110 15.5.6: a known path with another method is 405 with Allow.
        status, h, body = self.rest.request("PATCH", "/api/metrics", body={})
        self.assertJsonError(status, body, 405, 12)
        self.assertEqual(h.get("allow"), "GET, POST")

    def test_headers_over_limit(self):
        try:
            status, _, _ = self.rest.request("GET", "/api/metrics",
                                             headers={"X-Big": "a" * 70000})
            self.assertIn(status, (400, 431))
        except (ConnectionError, http.client.HTTPException, socket.timeout):
            pass  # lws drops the connection: acceptable, as long as the server lives
        self.assertServerAlive()
        status, _, _ = self.rest.request("GET", "/health")
        self.assertEqual(status, 200)

    def test_invalid_utf8(self):
        status, _, body = self.rest.request("POST", "/api/events/batch",
                                            raw_body=b"{\"events\":[{\"eventName\":\"\xff\xfe\"}]}",
                                            headers={"Content-Type": "application/json"})
        self.assertJsonError(status, body, 400, 3)

    def test_websocket_route_without_upgrade(self):
        status, _, body = self.rest.request("GET", "/ws/analytics")
        self.assertJsonError(status, body, 400, 3)

    def test_server_survives_garbage(self):
        for raw in (b"GARBAGE\r\n\r\n", b"GET /api/metrics HTTP/1.1\r\nHost: x\r\n" + b"\xff" * 10,
                    b"POST /api/events HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", self.rest_port), timeout=3) as s:
                s.sendall(raw)
                try:
                    s.recv(4096)
                except OSError:
                    pass
        self.assertServerAlive()
        status, _, _ = self.rest.request("GET", "/health")
        self.assertEqual(status, 200)


class RestRemoteTest(RestTest):
    """Every test above again, against analytics-restbridge (remote mode)
    forwarding to the same kind of analyticsd: same statuses and bodies."""

    BRIDGE = "remote"


class RestLargeBatchTest(harness.ServerTestCase):
    """Batches over 64 KiB, decoded on the bridge's decode pool with their
    events split in chunks: the same answers as one decode of the whole."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    assertJsonError = RestTest.assertJsonError

    def large_batch(self, n, odd=None, extra=""):
        """A batch body of n events (over the 64 KiB decoded on the pool in
        chunks); event `odd` gets the members `extra` too."""
        evs = []
        for i in range(n):
            e = '{"eventId":"big-%d","eventType":"message","eventName":"sent","properties":' \
                '{"campaignId":"c%d","groupId":"g%d","n":%d,"tags":["a","b"]}%s}' % (
                    i, i % 50, i % 20, i, "," + extra if i == odd else "")
            evs.append(e)
        return ('{"events":[%s]}' % ",".join(evs)).encode()

    def test_large_batch_errors_name_the_event(self):
        # Large bodies are decoded in chunks: an error still names its event
        # and reads as when the whole body is decoded at once.
        cases = [('"sessionId":5', "events[677].sessionId: expected a string, got a number"),
                 ('"eventName":"again"', "events[677].eventName: duplicate key"),
                 ('"bogus":1', "events[677].bogus: unknown field"),
                 ('"timestamp":"noon"', "events[677].timestamp: ")]
        for extra, message in cases:
            with self.subTest(extra=extra):
                body = self.large_batch(800, 677, extra)
                self.assertGreater(len(body), 64 << 10)
                status, _, resp = self.rest.request(
                    "POST", "/api/events/batch", raw_body=body,
                    headers={"Content-Type": "application/json"})
                self.assertJsonError(status, resp, 400, 3)
                self.assertTrue(resp["message"].startswith(message), resp["message"])
        body = self.large_batch(800)[:-3] + b",]}"
        status, _, resp = self.rest.request("POST", "/api/events/batch", raw_body=body,
                                            headers={"Content-Type": "application/json"})
        self.assertJsonError(status, resp, 400, 3)
        self.assertIn("line 1, column", resp["message"])

    def test_large_batch_is_stored_in_order(self):
        body = self.large_batch(800)
        status, _, resp = self.rest.request("POST", "/api/events/batch", raw_body=body,
                                            headers={"Content-Type": "application/json"})
        self.assertEqual(status, 200, resp)
        self.assertEqual([r["eventId"] for r in resp["results"]],
                         ["big-%d" % i for i in range(800)])
        self.assertEqual([r.get("index", 0) for r in resp["results"]], list(range(800)))
        self.assertTrue(all(r["status"] in ("ACCEPTED", "DUPLICATE") for r in resp["results"]))


class RestLargeBatchRemoteTest(RestLargeBatchTest):
    """The same through analytics-restbridge (remote mode), which decodes
    large bodies the same way before forwarding them."""

    BRIDGE = "remote"


if __name__ == "__main__":
    unittest.main()
