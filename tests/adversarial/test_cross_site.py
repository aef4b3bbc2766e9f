"""Issue 14, point 4: cross-site requests.

A web page on any origin may send a "simple" request (text/plain or a form)
without a CORS preflight, and may open a WebSocket (browsers apply no CORS
to it). Routes with a body take application/json only (415 otherwise), and
a WebSocket upgrade naming a foreign Origin gets 403."""

import json
import uuid

from adversary import AttackTestCase, raw_http, status_codes
from test_websocket_protocol import ws_connect

EVIL = "https://evil.example"


def post(port, path, body, content_type=None, origin=EVIL):
    """One POST over a raw socket: (status, parsed JSON body)."""
    if isinstance(body, str):
        body = body.encode()
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % (path, port)
    if origin:
        head += "Origin: %s\r\n" % origin
    if content_type is not None:
        head += "Content-Type: %s\r\n" % content_type
    head += "Content-Length: %d\r\n\r\n" % len(body)
    data = raw_http(port, head.encode() + body, read_timeout=5, until_close=True)
    codes = status_codes(data)
    payload = data.partition(b"\r\n\r\n")[2]
    return (codes[0] if codes else None), (json.loads(payload) if payload else None)


class CrossSiteTest(AttackTestCase):

    def search(self, name):
        data = raw_http(self.rest_port, "GET /api/events/search?eventName=%s HTTP/1.1\r\n"
                        "Host: localhost\r\nConnection: close\r\n\r\n" % name, until_close=True)
        self.assertEqual(status_codes(data)[:1], [200], data[:300])
        return json.loads(data.partition(b"\r\n\r\n")[2]).get("events", [])

    def metric_names(self):
        data = raw_http(self.rest_port, "GET /api/metrics HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n", until_close=True)
        return [m.get("name") for m in json.loads(data.partition(b"\r\n\r\n")[2])
                .get("metrics", [])]

    def test_text_plain_and_form_posts_from_a_foreign_origin_are_refused(self):
        name = "csrf-%s" % uuid.uuid4().hex[:12]
        event = json.dumps({"eventName": name, "eventType": "track"})
        metric = json.dumps({"name": name, "type": "gauge", "formula": "sent",
                             "aggregation": "sum"})
        with self.rss_watch():
            for ctype in ("text/plain", "text/plain;charset=UTF-8",
                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
                status, err = post(self.rest_port, "/api/events", event, ctype)
                self.assertEqual(status, 415, (ctype, err))
                self.assertIn("Content-Type", err["message"])
                self.assertEqual(err["code"], 3)
                status, err = post(self.rest_port, "/api/metrics", metric, ctype)
                self.assertEqual(status, 415, (ctype, err))
        self.assertEqual(self.search(name), [], "a cross-site POST was stored")
        self.assertNotIn(name, self.metric_names(), "a cross-site POST created a metric")
        self.assert_survived()

    def test_missing_content_type_is_415(self):
        name = "noct-%s" % uuid.uuid4().hex[:12]
        status, err = post(self.rest_port, "/api/events",
                           json.dumps({"eventName": name, "eventType": "track"}), None, None)
        self.assertEqual(status, 415, err)
        self.assertIn("Content-Type", err["message"])
        self.assertEqual(self.search(name), [])
        self.assert_survived()

    def test_json_with_parameters_and_any_case_is_accepted(self):
        name = "json-%s" % uuid.uuid4().hex[:12]
        for ctype in ("application/json; charset=utf-8", "Application/JSON"):
            status, body = post(self.rest_port, "/api/events",
                                json.dumps({"eventName": name, "eventType": "track"}), ctype, None)
            self.assertEqual(status, 200, (ctype, body))
        self.assertTrue(self.search(name))
        self.assert_survived()

    def upgrade_status(self, origin):
        sock, status, _ = ws_connect(self.rest_port, "/ws/analytics", origin=origin)
        sock.close()
        return status

    def test_websocket_upgrade_from_a_foreign_origin_is_403(self):
        with self.rss_watch():
            for origin in (EVIL, "null", "http://127.0.0.1:1", "http://127.0.0.1.evil.example"):
                self.assertEqual(self.upgrade_status(origin), 403, origin)
        self.assert_survived()

    def test_websocket_upgrade_same_origin_or_no_origin_is_101(self):
        self.assertEqual(self.upgrade_status("http://127.0.0.1:%d" % self.rest_port), 101)
        self.assertEqual(self.upgrade_status(None), 101)
        self.assert_survived()


class CrossSiteAllowedOriginTest(AttackTestCase):
    SERVER_ENV = {"CORS_ALLOWED_ORIGINS": "https://dash.example"}

    def test_websocket_upgrade_from_an_allowed_origin_is_101(self):
        sock, status, _ = ws_connect(self.rest_port, "/ws/analytics",
                                     origin="https://dash.example")
        sock.close()
        self.assertEqual(status, 101)
        sock, status, _ = ws_connect(self.rest_port, "/ws/analytics", origin=EVIL)
        sock.close()
        self.assertEqual(status, 403)
        self.assert_survived()
