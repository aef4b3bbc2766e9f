"""Field-level encryption at rest (ENCRYPTED_FIELDS) against a live analyticsd.

Events carry an e-mail, a phone number and a user agent that are configured
encrypted. They are ingested over gRPC (a batch) and REST, searched (by
name, and by the encrypted e-mail, which only works through its blind
index), watched live over gRPC and WebSocket, and counted by a metric
filtered and grouped on the e-mail. A viewer (no pii:read) sees the values
masked ("***") on every transport, an admin sees them in clear. Then the
server restarts (the data keys come back from the store, and the new
process still opens what the old one sealed), and every byte of every file
under DATA_DIR (databases, WAL, free-text index) and the log is searched for
the plaintexts: none is there. `analyticsd data-keys rotate` makes key 2
current; values sealed with key 1 stay readable.
"""

import asyncio
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.parse
import uuid

import websockets

from authkit import bearer, claims, hs256, rest_json
import harness

ACCOUNT = "acme-pii"
TIMEOUT_S = 15
EMAIL = "ann.secret-%s@example.org" % uuid.uuid4().hex[:8]
PHONE = "+1-555-%s" % uuid.uuid4().hex[:6]
AGENT = "SecretAgent/%s" % uuid.uuid4().hex[:8]
OTHER_EMAIL = "bob.secret-%s@example.org" % uuid.uuid4().hex[:8]
PLAIN = [EMAIL, PHONE, AGENT, OTHER_EMAIL]


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class FieldEncryptionTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ns = harness.stubs.load()
        cls.server = harness.Server(env={
            "JWT_HS256_SECRET": "analytics-test-secret-0123456789abcdef",
            "ENCRYPTED_FIELDS": "context.userAgent,properties.email,properties.phone",
        })
        cls.server.start()
        cls.admin = hs256(claims(ACCOUNT, ["admin"]))
        cls.viewer = hs256(claims(ACCOUNT, ["viewer"]))
        cls.ev_pb, cls.ev_grpc = cls.ns.analytics["events"]
        cls.rt_pb, cls.rt_grpc = cls.ns.analytics["realtime"]

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    # --- helpers -------------------------------------------------------------

    def stop(self):
        self.assertEqual(self.server.stop(), 0)
        self.server.sigterm_at = None  # the harness sends SIGTERM once per Server
        self.server.returncode = self.server.exited_at = None

    def md(self, token):
        return [("authorization", "Bearer " + token)]

    def events_stub(self):
        return self.ev_grpc.EventServiceStub(self.server.channel())

    def rest(self, verb, path, token, body=None):
        return rest_json(self.server.rest_port, verb, path, token, body)

    def event(self, name, email, ts=None):
        ev = self.ev_pb.Event(event_name=name, event_type="signup")
        ev.properties.update({"email": email, "phone": PHONE, "plan": "pro"})
        ev.context.user_agent = AGENT
        if ts is not None:
            ev.timestamp.FromMilliseconds(int(ts * 1000))
        return ev

    def grpc_search(self, token, **kw):
        return self.events_stub().SearchEvents(self.ev_pb.SearchEventsRequest(**kw),
                                               timeout=TIMEOUT_S, metadata=self.md(token)).events

    def assert_clear(self, props, agent, email=EMAIL):
        self.assertEqual((props["email"], props["phone"], props["plan"], agent),
                         (email, PHONE, "pro", AGENT))

    def assert_masked(self, props, agent):
        self.assertEqual((props["email"], props["phone"], props["plan"], agent),
                         ("***", "***", "pro", "***"))

    def live_grpc(self, token, name):
        call = self.rt_grpc.RealtimeServiceStub(self.server.channel()).StreamAnalytics(
            self.rt_pb.StreamAnalyticsRequest(event_name=name, include_events=True),
            timeout=TIMEOUT_S, metadata=self.md(token))
        return harness.StreamReader(call)

    def first_live_event(self, reader):
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            m = reader.next(deadline - time.monotonic())
            if m is not None and m.WhichOneof("update") == "event":
                reader.cancel()
                return m.event
        self.fail("no live event over gRPC (%s %s)" % (reader.code, reader.details))

    async def live_ws(self, token, name, started, out):
        uri = "ws://127.0.0.1:%d/ws/analytics?includeEvents=true&eventName=%s" % (
            self.server.rest_port, name)
        async with websockets.connect(uri, extra_headers=bearer(token),
                                      open_timeout=TIMEOUT_S) as ws:
            json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))  # the first snapshot
            started.set()
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                if "event" in frame.get("result", {}):
                    out.append(frame["result"]["event"])
                    return

    # --- the test ------------------------------------------------------------

    def test_encrypted_fields_never_reach_the_disk_and_only_admins_see_them(self):
        name = "pii_" + uuid.uuid4().hex[:8]
        # Live subscribers first: gRPC and WebSocket, as viewer and as admin.
        readers = {who: self.live_grpc(tok, name)
                   for who, tok in (("viewer", self.viewer), ("admin", self.admin))}
        ws_frames = {"viewer": [], "admin": []}
        ws_started = {who: threading.Event() for who in ws_frames}
        ws_threads = [threading.Thread(target=lambda w=who, t=tok: asyncio.run(
            self.live_ws(t, name, ws_started[w], ws_frames[w])), daemon=True)
            for who, tok in (("viewer", self.viewer), ("admin", self.admin))]
        for t in ws_threads:
            t.start()
        for who in ws_started:
            self.assertTrue(ws_started[who].wait(TIMEOUT_S), who)
        for r in readers.values():  # their first snapshot says they are subscribed
            self.assertIsNotNone(r.next(TIMEOUT_S))

        # Ingest: a gRPC batch and a REST event.
        base = (int(time.time()) // 3600 - 1) * 3600
        resp = self.events_stub().TrackEvents(self.ev_pb.TrackEventsRequest(events=[
            self.event(name, EMAIL, base + 10), self.event(name, EMAIL, base + 20),
            self.event(name, OTHER_EMAIL, base + 30)]), timeout=TIMEOUT_S,
            metadata=self.md(self.admin))
        self.assertEqual(resp.accepted, 3, resp)
        status, body = self.rest("POST", "/api/events", self.admin, {
            "eventName": name, "eventType": "signup", "timestamp": rfc3339(base + 40),
            "properties": {"email": EMAIL, "phone": PHONE, "plan": "pro"},
            "context": {"userAgent": AGENT}})
        self.assertEqual(status, 200, body)

        # Live: masked for the viewer, clear for the admin, on both transports.
        ev = self.first_live_event(readers["viewer"])
        self.assert_masked(dict(ev.properties), ev.context.user_agent)
        ev = self.first_live_event(readers["admin"])
        self.assert_clear(dict(ev.properties), ev.context.user_agent)
        for t in ws_threads:
            t.join(TIMEOUT_S)
        self.assert_masked(ws_frames["viewer"][0]["properties"],
                           ws_frames["viewer"][0]["context"]["userAgent"])
        self.assert_clear(ws_frames["admin"][0]["properties"],
                          ws_frames["admin"][0]["context"]["userAgent"])

        self.check_search_and_metric(name, base)

        # A restart: the keys come back from the store.
        self.stop()
        self.server.start()
        metric_id = self.check_search_and_metric(name, base)

        # Rotation: key 2 is current; what key 1 sealed stays readable.
        env = dict(self.server.env)
        out = subprocess.run([self.server.binary, "data-keys", "rotate", "--account", ACCOUNT],
                             env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("key 2 is current", out.stdout)
        self.stop()
        self.server.start()
        resp = self.events_stub().TrackEvents(self.ev_pb.TrackEventsRequest(events=[
            self.event(name, EMAIL, base + 50)]), timeout=TIMEOUT_S, metadata=self.md(self.admin))
        self.assertEqual(resp.accepted, 1, resp)
        hits = self.grpc_search(self.admin, event_name=name, properties={"email": EMAIL})
        self.assertEqual(len(hits), 4)
        for ev in hits:
            self.assert_clear(dict(ev.properties), ev.context.user_agent)
        self.stop()

        # Every byte under DATA_DIR, and the log: no plaintext anywhere.
        files = 0
        for root, _, names in os.walk(self.server.data_dir):
            for fname in names:
                with open(os.path.join(root, fname), "rb") as f:
                    data = f.read()
                files += 1
                for p in PLAIN:
                    self.assertFalse(p.encode() in data, "%s holds %s in clear" % (fname, p))
        self.assertGreaterEqual(files, 3)
        log = self.server.stderr() + self.server.stdout()
        for p in PLAIN:
            self.assertNotIn(p, log)
        self.server.start()
        self.assertTrue(metric_id)

    def check_search_and_metric(self, name, base):
        # REST search: masked for the viewer, clear for the admin.
        q = urllib.parse.urlencode({"eventName": name, "pageSize": 50})
        status, body = self.rest("GET", "/api/events/search?" + q, self.viewer)
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body["events"]), 4)
        for ev in body["events"]:
            self.assert_masked(ev["properties"], ev["context"]["userAgent"])
        status, body = self.rest("GET", "/api/events/search?" + q, self.admin)
        self.assertEqual(status, 200, body)
        emails = sorted(ev["properties"]["email"] for ev in body["events"])
        self.assertEqual(emails, sorted([EMAIL] * 3 + [OTHER_EMAIL]))
        # gRPC search, filtered on the encrypted e-mail (its blind index).
        hits = self.grpc_search(self.viewer, event_name=name, properties={"email": EMAIL})
        self.assertEqual(len(hits), 3)
        for ev in hits:
            self.assert_masked(dict(ev.properties), ev.context.user_agent)
        hits = self.grpc_search(self.admin, event_name=name, properties={"email": OTHER_EMAIL})
        self.assertEqual(len(hits), 1)
        self.assert_clear(dict(hits[0].properties), hits[0].context.user_agent, OTHER_EMAIL)
        # Free text never finds an encrypted value.
        self.assertEqual(len(self.grpc_search(self.admin, query=EMAIL.split("@")[0])), 0)

        # A metric filtered and grouped on the e-mail.
        status, metric = self.rest("POST", "/api/metrics", self.admin, {
            "name": "signups " + uuid.uuid4().hex, "type": "counter",
            "formula": "count(%s)" % name, "aggregation": "sum", "dimensions": ["email"],
            "filters": [{"field": "properties.email", "op": "eq", "value": EMAIL}]})
        self.assertEqual(status, 200, metric)
        self.assertTrue(metric["filters"][0]["value"].startswith("ana:bi:"), metric)
        status, err = self.rest("POST", "/api/metrics", self.admin, {
            "name": "bad " + uuid.uuid4().hex, "type": "counter", "formula": "count(x)",
            "filters": [{"field": "email", "op": "contains", "value": "ann"}]})
        self.assertEqual(status, 400, err)
        self.assertIn("encrypted", err["message"])
        q = urllib.parse.urlencode({"from": rfc3339(base), "to": rfc3339(base + 3600),
                                    "interval": "1h"})
        status, data = self.rest("GET", "/api/metrics/%s/data?%s" % (metric["metricId"], q),
                                 self.admin)
        self.assertEqual(status, 200, data)
        self.assertEqual(len(data["series"]), 1, data)
        self.assertEqual(data["series"][0]["total"], 3, data)
        self.assertTrue(data["series"][0]["dimensions"]["email"].startswith("ana:bi:"), data)
        return metric["metricId"]


if __name__ == "__main__":
    unittest.main()
