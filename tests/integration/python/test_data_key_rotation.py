"""Field encryption's data keys through the API: KeyService.ListDataKeys and
RotateDataKey (REST GET /api/data-keys, POST /api/data-keys/rotate) and
`analyticsctl data-keys list|rotate`, against a live analyticsd.

An admin rotates while the server runs: values sealed from then on name the
new key (read back from the sealed texts on disk), values sealed before stay
readable; a viewer, an editor and an ingest key's role are refused
(PERMISSION_DENIED); each rotation is in the audit log.
"""

import base64
import json
import os
import re
import subprocess
import time
import unittest
import urllib.parse
import uuid

import authkit
import harness

ACCOUNT = "acme-dk"
TIMEOUT_S = 15
CTL = os.path.join(os.path.dirname(harness.binary_path()), "..", "client", "cli", "analyticsctl")
# A sealed text's first 8 base64 characters: version (1) and key id (4 bytes).
SEALED = re.compile(rb"ana:enc:([A-Za-z0-9+/]{8})")


def token(roles=("admin",), account=ACCOUNT):
    return authkit.hs256(authkit.claims(account=account, roles=list(roles), ttl=3600))


class DataKeyRotationTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ns = harness.stubs.load()
        cls.server = harness.Server(env={"JWT_HS256_SECRET": authkit.SECRET,
                                         "ENCRYPTED_FIELDS": "properties.email"})
        cls.server.start()
        cls.ev_pb, cls.ev_grpc = cls.ns.analytics["events"]

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def rest(self, verb, path, tok, body=None):
        code, text, _ = authkit.rest_call(self.server.http_port, verb, path,
                                          headers={"Authorization": "Bearer " + tok},
                                          body=json.dumps(body) if body is not None else None)
        return code, (json.loads(text) if text.strip().startswith("{") else text)

    def ctl(self, *args, tok=None):
        p = subprocess.run([CTL, "--target", self.server.target, "--token", tok or token(),
                            "-o", "json", "data-keys"] + list(args),
                           capture_output=True, text=True, timeout=TIMEOUT_S)
        return p.returncode, p.stdout, p.stderr

    def track(self, email):
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        ev = self.ev_pb.Event(event_name="dk_signup", event_type="signup")
        ev.properties.update({"email": email})
        resp = stub.TrackEvents(self.ev_pb.TrackEventsRequest(events=[ev]), timeout=TIMEOUT_S,
                                metadata=[("authorization", "Bearer " + token())])
        self.assertEqual(resp.accepted, 1, resp)

    def sealed_key_ids(self):
        """The key id of every sealed text in the files under DATA_DIR."""
        ids = set()
        for root, _, names in os.walk(self.server.data_dir):
            for fname in names:
                with open(os.path.join(root, fname), "rb") as f:
                    data = f.read()
                for m in SEALED.finditer(data):
                    raw = base64.b64decode(m.group(1))
                    if raw[0] == 1:
                        ids.add(int.from_bytes(raw[1:5], "big"))
        return ids

    def wait_for_key_id(self, key_id):
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if key_id in self.sealed_key_ids():
                return
            time.sleep(0.2)
        self.fail("no value sealed with key %d on disk (%s)" % (key_id, self.sealed_key_ids()))

    def test_admin_rotates_data_keys_over_rest_and_analyticsctl(self):
        first = "dk-first-%s@example.org" % uuid.uuid4().hex[:8]
        self.track(first)  # the account's first value: key 1
        code, body = self.rest("GET", "/api/data-keys", token())
        self.assertEqual(code, "OK", body)
        self.assertEqual([(k["keyId"], k.get("current", False)) for k in body["keys"]],
                         [(1, True)], body)
        self.assertEqual(body["keys"][0]["accountId"], ACCOUNT)
        self.assertIn("createdAt", body["keys"][0])
        self.wait_for_key_id(1)

        # analyticsctl rotates: key 2, current.
        rc, out, err = self.ctl("rotate")
        self.assertEqual(rc, 0, err)
        key = json.loads(out)
        self.assertEqual((key["keyId"], key["current"], key["accountId"]), (2, True, ACCOUNT), out)
        second = "dk-second-%s@example.org" % uuid.uuid4().hex[:8]
        self.track(second)
        self.wait_for_key_id(2)

        # REST rotates: key 3; the list shows all three, the last current.
        code, body = self.rest("POST", "/api/data-keys/rotate", token(), body={})
        self.assertEqual(code, "OK", body)
        self.assertEqual(body["keyId"], 3, body)
        rc, out, err = self.ctl("list")
        self.assertEqual(rc, 0, err)
        keys = json.loads(out)["keys"]
        self.assertEqual([(k["keyId"], k.get("current", False)) for k in keys],
                         [(1, False), (2, False), (3, True)], out)

        # Values sealed with key 1 and 2 stay readable.
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        hits = stub.SearchEvents(self.ev_pb.SearchEventsRequest(event_name="dk_signup"),
                                 timeout=TIMEOUT_S,
                                 metadata=[("authorization", "Bearer " + token())]).events
        self.assertEqual(sorted(dict(e.properties)["email"] for e in hits),
                         sorted([first, second]))

        # Each rotation is audited, with the caller.
        q = urllib.parse.urlencode({"method": "/analytics.v1.KeyService/RotateDataKey"})
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            code, body = self.rest("GET", "/api/audit?" + q, token())
            self.assertEqual(code, "OK", body)
            records = [r for r in body.get("records", []) if r.get("outcome") == "OK"]
            if len(records) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(len(records), 2, body)

    def test_only_admins_rotate_data_keys(self):
        for roles in (["viewer"], ["editor"], ["analyst"], ["ingest"]):
            code, body = self.rest("POST", "/api/data-keys/rotate", token(roles), body={})
            self.assertEqual(code, "PERMISSION_DENIED", (roles, body))
            code, body = self.rest("GET", "/api/data-keys", token(roles))
            self.assertEqual(code, "PERMISSION_DENIED", (roles, body))
        rc, _, err = self.ctl("rotate", tok=token(["editor"]))
        self.assertEqual(rc, 1, err)
        self.assertIn("keys:admin", err)
        code, body = self.rest("POST", "/api/data-keys/rotate", "not-a-token", body={})
        self.assertEqual(code, "UNAUTHENTICATED", body)


if __name__ == "__main__":
    unittest.main()
