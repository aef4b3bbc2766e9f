"""Issue 17, point 3: field-level encryption under attack.

A sender who writes a forged sealed text ("ana:enc:...") into a property
that is not encrypted made every admin search over that event fail with
DATA_LOSS (the reader tried to open every string that looked sealed); only
the configured fields are opened now, and the forged text comes back as the
sender wrote it. The same text in an encrypted field is simply sealed like
any value. A ciphertext altered in the database is DATA_LOSS for an admin
(the GCM tag), never garbage, and stays masked for a viewer.

An editor who rewrites an admin's alert (its channel now the editor's
webhook, its message naming the encrypted e-mail) must not receive the
e-mail in clear: the rule runs with the roles of who last changed it, so the
webhook gets *** (before, notifications carried the blind index text).

A report file rendered with an admin's pii:read lay in REPORTS_DIR with the
e-mails in clear; it is sealed at rest now, and a byte of it altered on disk
(or the file cut) is DATA_LOSS on download over gRPC and REST, never garbage
served as the report.

A sender's text that only looks sealed, stored in a property before the
property joined ENCRYPTED_FIELDS, made every admin search over its event
fail with DATA_LOSS; the re-encryption job seals it like any clear value, so
the admin reads it as sent and the viewer masked."""

import http.server
import json
import os
import sqlite3
import threading
import time
import uuid

import grpc

import adversary
from authkit import bearer, claims, hs256
from test_rest import RestClient

ACCOUNT = "acme-adv-pii"
FORGED = "ana:enc:AQAAAAGqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq="


class FieldEncryption(adversary.AttackTestCase):

    SERVER_ENV = {
        "JWT_HS256_SECRET": "analytics-test-secret-0123456789abcdef",
        "ENCRYPTED_FIELDS": "properties.email",
    }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb, grpc_mod = cls.ns.analytics["events"]
        cls.stub = grpc_mod.EventServiceStub(cls.channel)
        cls.admin = [("authorization", "Bearer " + hs256(claims(ACCOUNT, ["admin"])))]
        cls.viewer = [("authorization", "Bearer " + hs256(claims(ACCOUNT, ["viewer"])))]

    def track(self, name, props):
        ev = self.pb.Event(event_name=name, event_type="adv")
        ev.properties.update(props)
        r = self.stub.TrackEvent(self.pb.TrackEventRequest(event=ev), timeout=10,
                                 metadata=self.admin).result
        self.assertEqual(r.status, self.pb.EventResult.ACCEPTED)

    def search(self, name, md):
        return self.stub.SearchEvents(self.pb.SearchEventsRequest(event_name=name), timeout=10,
                                      metadata=md).events

    def test_forged_sealed_text_in_a_plain_property_broke_admin_searches(self):
        name = "forged_" + uuid.uuid4().hex[:8]
        with self.rss_watch():
            self.track(name, {"note": FORGED, "email": "a@example.org"})
            self.track(name, {"email": FORGED})
            hits = self.search(name, self.admin)
        self.assertEqual(len(hits), 2)
        got = sorted((dict(h.properties).get("note", ""), dict(h.properties)["email"])
                     for h in hits)
        self.assertEqual(got, sorted([(FORGED, "a@example.org"), ("", FORGED)]))
        masked = sorted((dict(h.properties).get("note", ""), dict(h.properties)["email"])
                        for h in self.search(name, self.viewer))
        self.assertEqual(masked, sorted([(FORGED, "***"), ("", "***")]))
        self.assert_survived()

    def test_altered_ciphertext_is_data_loss_never_garbage(self):
        name = "altered_" + uuid.uuid4().hex[:8]
        self.track(name, {"email": "victim@example.org"})
        self.assertEqual(dict(self.search(name, self.admin)[0].properties)["email"],
                         "victim@example.org")
        db = sqlite3.connect(os.path.join(self.server.data_dir, "analytics.db"), timeout=10)
        try:
            # The body: a tag byte (0x80: not compressed, as few events are),
            # the free text, the properties, then the payload.
            # The search read it staged maybe: the row is in events once
            # the mover moved it.
            deadline = time.time() + 30
            row = None
            while row is None and time.time() < deadline:
                row = db.execute("SELECT seq, body FROM events WHERE event_name ="
                                 " (SELECT id FROM event_strings WHERE name = ?)",
                                 (name,)).fetchone()
                if row is None:
                    time.sleep(0.05)
            self.assertIsNotNone(row, "the event was never moved into events")
            seq, payload = row
            self.assertEqual(payload[0], 0x80)
            at = payload.index(b"ana:enc:") + len(b"ana:enc:") + 30
            changed = payload[:at] + (b"B" if payload[at:at + 1] != b"B" else b"C") + \
                payload[at + 1:]
            db.execute("UPDATE events SET body = ? WHERE seq = ?", (changed, seq))
            db.commit()
        finally:
            db.close()
        with self.rss_watch():
            with self.assertRaises(grpc.RpcError) as cm:
                self.search(name, self.admin)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS)
        self.assertIn("properties.email", cm.exception.details())
        self.assertIn("does not authenticate", cm.exception.details())
        self.assertEqual(dict(self.search(name, self.viewer)[0].properties)["email"], "***")
        self.assert_survived()

    def test_report_file_altered_on_disk_was_served_as_the_report(self):
        import glob
        from test_reports import day, get
        rest = RestClient(self.rest_port)
        token = hs256(claims(ACCOUNT, ["admin"]))
        h = bearer(token)
        metric = "adv_sealed_" + uuid.uuid4().hex[:8]
        status, _, m = rest.request("POST", "/api/metrics", {
            "name": metric, "type": "counter", "formula": "count(adv_sealed)",
            "aggregation": "sum", "dimensions": ["email"]}, headers=h)
        self.assertEqual(status, 200, m)
        self.track("adv_sealed", {"email": "report-victim@example.org"})
        status, _, r = rest.request("POST", "/api/reports", {
            "template": "metric_summary", "format": "csv",
            "parameters": {"metrics": [metric], "dimensions": ["email"],
                           "dateRange": {"start": day(-1), "end": day(1)}, "interval": "1d"}},
            headers=h)
        self.assertEqual(status, 200, r)
        deadline = time.time() + 15
        while time.time() < deadline:
            _, _, got = rest.request("GET", "/api/reports/" + r["reportId"], headers=h)
            if got["status"] in ("completed", "failed"):
                break
            time.sleep(0.05)
        self.assertEqual(got["status"], "completed", got)
        path = max(glob.glob(os.path.join(self.server.workdir, "reports", "*", "*.csv")),
                   key=os.path.getmtime)
        with open(path, "rb") as f:
            sealed = f.read()
        self.assertFalse(b"report-victim" in sealed)
        pb, pb_grpc = self.ns.analytics["reports"]
        stub = pb_grpc.ReportServiceStub(self.channel)
        for damaged in (sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:], sealed[:-1]):
            with open(path, "wb") as f:
                f.write(damaged)
            with self.rss_watch():
                with self.assertRaises(grpc.RpcError) as cm:
                    list(stub.DownloadReport(pb.DownloadReportRequest(report_id=r["reportId"]),
                                             timeout=10, metadata=self.admin))
                status, _, body = get(self.rest_port,
                                      "/api/reports/%s/download" % r["reportId"], headers=h)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS)
            self.assertNotEqual(status, 200, body)
            self.assertNotIn(b"report-victim", body)
        with open(path, "wb") as f:
            f.write(sealed)
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"],
                              headers=h)
        self.assertEqual(status, 200, body)
        self.assertIn(b"report-victim@example.org", body)
        self.assert_survived()


class Hook:
    """A webhook receiver on loopback: the bodies POSTed, by path."""

    def __init__(self):
        self.posts = []
        self.cond = threading.Condition()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.cond:
                    hook.posts.append((self.path, body))
                    hook.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.httpd.server_address[1], path)

    def wait(self, path, timeout=10):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                got = [b for p, b in self.posts if p == path]
                if got or time.time() > deadline:
                    return got
                self.cond.wait(0.1)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class AlertCreatorRoles(adversary.AttackTestCase):

    SERVER_ENV = {
        "JWT_HS256_SECRET": "analytics-test-secret-0123456789abcdef",
        "ENCRYPTED_FIELDS": "properties.email",
        "NOTIFY_ALLOW_PRIVATE_NETWORKS": "true",
        "NOTIFY_POLL_INTERVAL": "50ms",
        "NOTIFY_BACKOFF_INITIAL": "50ms",
    }

    @classmethod
    def setUpClass(cls):
        cls.hook = Hook()
        try:
            super().setUpClass()
        except BaseException:
            cls.hook.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.hook.stop()

    def call(self, role, verb, path, body=None):
        tok = hs256(claims(ACCOUNT + "-alerts", [role], ttl=600))
        status, _, resp = RestClient(self.server.rest_port).request(verb, path, body,
                                                                    headers=bearer(tok))
        self.assertEqual(status, 200, resp)
        return resp

    def test_editor_rewrote_an_admins_alert_to_read_encrypted_emails(self):
        metric = "adv_signups_" + uuid.uuid4().hex[:6]
        self.call("admin", "POST", "/api/metrics", {
            "name": metric, "type": "counter", "formula": "count(adv_signup)",
            "aggregation": "sum", "dimensions": ["email"]})
        own = self.call("admin", "POST", "/api/channels", {
            "name": "admin hook", "webhook": {"url": self.hook.url("/admin")}})
        alert = self.call("admin", "POST", "/api/alerts", {
            "name": "signups", "metric": metric, "threshold": 1,
            "condition": {"op": ">=", "window": "1m"}, "channels": [own["channelId"]],
            "message": "signed up: {{email}}"})
        # The editor points the admin's alert at a webhook of its own.
        mine = self.call("editor", "POST", "/api/channels", {
            "name": "editor hook", "webhook": {"url": self.hook.url("/editor")}})
        changed = dict(alert, channels=[mine["channelId"]], message="got {{email}}")
        for k in ("alertId", "accountId", "createdAt", "updatedAt", "unresolvedChannels",
                  "instanceStates", "createdBy", "creatorRoles"):
            changed.pop(k, None)
        with self.rss_watch():
            self.call("editor", "PUT", "/api/alerts/" + alert["alertId"], changed)
            victim = "victim-%s@example.org" % uuid.uuid4().hex[:6]
            self.call("admin", "POST", "/api/events/batch", {"events": [
                {"eventType": "adv", "eventName": "adv_signup",
                 "properties": {"email": victim}}]})
            bodies = self.hook.wait("/editor")
        self.assertTrue(bodies, "the editor's webhook was never called")
        for body in bodies:
            self.assertNotIn(victim.encode(), body)
            self.assertEqual(json.loads(body)["values"]["email"], "***", body)
        self.assertEqual(self.call("admin", "GET", "/api/alerts/" + alert["alertId"])[
            "creatorRoles"], ["editor"])
        self.assert_survived()


class ForgedBeforeEncryption(adversary.AttackTestCase):

    SERVER_ENV = {"JWT_HS256_SECRET": "analytics-test-secret-0123456789abcdef"}

    def test_forged_sealed_text_stored_before_the_field_was_encrypted_broke_admin_searches(self):
        pb, grpc_mod = self.ns.analytics["events"]
        admin = [("authorization", "Bearer " + hs256(claims(ACCOUNT, ["admin"])))]
        viewer = [("authorization", "Bearer " + hs256(claims(ACCOUNT, ["viewer"])))]
        name = "forged_before_" + uuid.uuid4().hex[:8]
        ev = pb.Event(event_name=name, event_type="adv")
        ev.properties.update({"email": FORGED, "plan": "pro"})
        stub = grpc_mod.EventServiceStub(self.server.channel())
        self.assertEqual(stub.TrackEvent(pb.TrackEventRequest(event=ev), timeout=10,
                                         metadata=admin).result.status,
                         pb.EventResult.ACCEPTED)
        # The field is encrypted from now on: the job rewrites what was stored.
        self.assertEqual(self.server.stop(), 0)
        self.server.sigterm_at = None
        self.server.returncode = self.server.exited_at = None
        self.server.env.update({"ENCRYPTED_FIELDS": "properties.email", "REENCRYPT_PAUSE": "0"})
        self.server.start()
        deadline = time.time() + 15
        while b'"fieldReencryption":"done"' not in self.rest_health()[1].replace(b" ", b""):
            self.assertLess(time.time(), deadline, "the job never finished")
            time.sleep(0.05)
        self.baseline_rss = adversary.rss_bytes(self.server.proc.pid)
        stub = grpc_mod.EventServiceStub(self.server.channel())
        with self.rss_watch():
            hits = stub.SearchEvents(pb.SearchEventsRequest(event_name=name), timeout=10,
                                     metadata=admin).events
        self.assertEqual([dict(e.properties)["email"] for e in hits], [FORGED])
        hits = stub.SearchEvents(pb.SearchEventsRequest(event_name=name), timeout=10,
                                 metadata=viewer).events
        self.assertEqual([dict(e.properties)["email"] for e in hits], ["***"])
        self.assert_survived()

