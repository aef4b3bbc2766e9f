"""Issue 17, point 3: field-level encryption under attack.

A sender who writes a forged sealed text ("ana:enc:...") into a property
that is not encrypted made every admin search over that event fail with
DATA_LOSS (the reader tried to open every string that looked sealed); only
the configured fields are opened now, and the forged text comes back as the
sender wrote it. The same text in an encrypted field is simply sealed like
any value. A ciphertext altered in the database is DATA_LOSS for an admin
(the GCM tag), never garbage, and stays masked for a viewer."""

import os
import sqlite3
import uuid

import grpc

import adversary
from authkit import claims, hs256

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
            # The body: a tag byte (0: not compressed, as few events are),
            # the free text, then the payload.
            seq, payload = db.execute("SELECT seq, body FROM events WHERE event_name = ?",
                                      (name,)).fetchone()
            self.assertEqual(payload[0], 0)
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
