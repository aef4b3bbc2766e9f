"""Background work runs with the roles its creator had, captured at
creation: with ENCRYPTED_FIELDS=properties.email, a metric grouped by the
e-mail aggregates its blind indexes; a report created by an analyst (no
pii:read) renders those groups masked (***), an admin's in clear; an alert
created by an editor notifies its webhook with the e-mail masked, an admin's
in clear (its outbox row sealed at rest). Neither shows the blind index
text. The admin's report file is not served to a viewer."""

import csv
import io
import json
import os
import time
import unittest
import uuid

import authkit
import harness
from test_alerts import NOTIFY_ENV
from test_channels import Receiver
from test_reports import day, get
from test_rest import RestClient

ACCOUNT = "bg-roles"
TIMEOUT_S = 15
E1 = "bg-ann-%s@example.org" % uuid.uuid4().hex[:6]
E2 = "bg-bob-%s@example.org" % uuid.uuid4().hex[:6]


class RoleRest(RestClient):
    """REST with a bearer token of ACCOUNT holding one role."""

    def __init__(self, port, role):
        super().__init__(port)
        self.token = authkit.hs256(authkit.claims(account=ACCOUNT, roles=[role], ttl=3600))

    def request(self, verb, path, body=None, headers=None, raw_body=None):
        h = dict(headers or {})
        h.update(authkit.bearer(self.token))
        return super().request(verb, path, body, headers=h, raw_body=raw_body)


class BackgroundRolesTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver()
        cls.SERVER_ENV = dict(NOTIFY_ENV, ENCRYPTED_FIELDS="properties.email")
        try:
            super().setUpClass()
        except BaseException:
            cls.receiver.stop()
            raise
        cls.admin = RoleRest(cls.rest_port, "admin")
        cls.analyst = RoleRest(cls.rest_port, "analyst")
        cls.editor = RoleRest(cls.rest_port, "editor")
        cls.metric = "bg_signups_" + uuid.uuid4().hex[:6]
        status, _, m = cls.admin.request("POST", "/api/metrics", {
            "name": cls.metric, "type": "counter", "formula": "count(bg_signup)",
            "aggregation": "sum", "dimensions": ["email"]})
        assert status == 200, m

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.receiver.stop()

    def req(self, rest, verb, path, body=None):
        status, _, resp = rest.request(verb, path, body)
        self.assertEqual(status, 200, resp)
        return resp

    def track(self, *emails):
        evs = [{"eventType": "track", "eventName": "bg_signup", "properties": {"email": e}}
               for e in emails]
        self.assertEqual(self.req(self.admin, "POST", "/api/events/batch",
                                  {"events": evs})["accepted"], len(emails))

    def report_csv(self, rest):
        r = self.req(rest, "POST", "/api/reports", {
            "template": "metric_summary", "format": "csv",
            "parameters": {"metrics": [self.metric], "dimensions": ["email"],
                           "dateRange": {"start": day(-1), "end": day(1)}, "interval": "1d"}})
        deadline = time.time() + TIMEOUT_S
        while True:
            done = self.req(rest, "GET", "/api/reports/" + r["reportId"])
            if done["status"] in ("completed", "failed") or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(done["status"], "completed", done)
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"],
                              headers=authkit.bearer(rest.token))
        self.assertEqual(status, 200, body)
        return done, body.decode("utf-8-sig")

    def test_report_renders_with_its_creators_roles(self):
        self.track(E1, E1, E2)
        masked, text = self.report_csv(self.analyst)
        self.assertIn("***", text)
        self.assertNotIn(E1, text)
        self.assertNotIn("ana:bi:", text)
        done, text = self.report_csv(self.admin)
        rows = list(csv.reader(io.StringIO(text)))
        self.assertIn([E1, self.metric, "2"], [r[:3] for r in rows], text)
        self.assertIn(E2, text)
        self.assertNotIn("***", text)
        self.assertNotIn("ana:bi:", text)
        # The admin's file has the e-mails in clear: a viewer may not download
        # it (403), the analyst's masked one yes.
        viewer = authkit.bearer(RoleRest(self.rest_port, "viewer").token)
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % done["reportId"],
                              headers=viewer)
        self.assertEqual(status, 403, body)
        self.assertIn(b"pii:read", body)
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % masked["reportId"],
                              headers=viewer)
        self.assertEqual(status, 200, body)
        # The roles are the report's, shown with who created it.
        self.assertEqual((masked["createdBy"], masked["creatorRoles"]), ("user-1", ["analyst"]))
        self.assertEqual(done["creatorRoles"], ["admin"])

    def test_alert_notifies_with_its_creators_roles(self):
        paths, alerts = {}, []
        for name, rest in (("editor", self.editor), ("admin", self.admin)):
            path = "/bg-" + name
            ch = self.req(rest, "POST", "/api/channels", {
                "name": "hook " + uuid.uuid4().hex[:8],
                "webhook": {"url": self.receiver.url(path)}})
            a = self.req(rest, "POST", "/api/alerts", {
                "name": "bg " + uuid.uuid4().hex[:8], "metric": self.metric, "threshold": 1,
                "condition": {"op": ">=", "window": "1m"}, "severity": "critical",
                "channels": [ch["channelId"]], "cooldown": 300,
                "message": "{{email}} signed up ({{value}})"})
            alerts.append((a.get("creatorRoles"), [name]))
            paths[name] = path
        email = "bg-cat-%s@example.org" % uuid.uuid4().hex[:6]
        self.track(email)
        for name, path in paths.items():
            _, _, body = self.receiver.wait_for(
                lambda r, p=path: r[0] == p and b"firing" in r[2])
            doc = json.loads(body)
            shown = doc["values"]["email"]
            if name == "admin":
                self.assertEqual(shown, email, doc)
                self.assertIn(email + " signed up", doc["text"], doc)
            else:
                self.assertEqual(shown, "***", doc)
                self.assertIn("*** signed up", doc["text"], doc)
                self.assertNotIn(email.encode(), body)
            self.assertNotIn(b"ana:bi:", body)
        for got, want in alerts:
            self.assertEqual(got, want)
        # The admin's notification carried the e-mail in clear: its outbox
        # row holds it sealed, so no file under DATA_DIR has it.
        for root, _, names in os.walk(self.server.data_dir):
            for fname in names:
                with open(os.path.join(root, fname), "rb") as f:
                    self.assertNotIn(email.encode(), f.read(), fname)


if __name__ == "__main__":
    unittest.main()
