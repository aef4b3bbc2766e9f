"""Changing the master key (ENCRYPTION_KEY_FILE) without losing data, against
a live analyticsd: offline with `analyticsd data-keys rotate-master
--new-key-file NEW`, and at start with ENCRYPTION_PREVIOUS_KEY_FILE. Either
way every data key is rewrapped by the new key in one transaction: after a
restart with only the new key (the old file deleted) an admin reads the
encrypted fields in clear, a filter on the encrypted e-mail (its blind index)
still matches the events stored before, and new events seal and open. A
server started with a new key and no previous one refuses to start, naming
the cause. The change is in the audit log.
"""

import os
import sqlite3
import subprocess
import unittest
import uuid

import grpc

import authkit
import harness

ACCOUNT = "acme-mk"
TIMEOUT_S = 15


def token(roles=("admin",)):
    return authkit.hs256(authkit.claims(account=ACCOUNT, roles=list(roles), ttl=3600))


class MasterKeyRotationTest(unittest.TestCase):

    def setUp(self):
        self.ns = harness.stubs.load()
        self.ev_pb, self.ev_grpc = self.ns.analytics["events"]
        self.server = harness.Server(env={"JWT_HS256_SECRET": authkit.SECRET,
                                          "ENCRYPTED_FIELDS": "properties.email"})
        self.old_key = self.write_key("old.key")
        self.new_key = self.write_key("new.key")
        self.server.env["ENCRYPTION_KEY_FILE"] = self.old_key

    def tearDown(self):
        try:
            self.server.stop()
        finally:
            self.server.cleanup()

    def write_key(self, name):
        path = os.path.join(self.server.workdir, name)
        with open(path, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(path, 0o600)
        return path

    def restart(self, env):
        self.assertEqual(self.server.stop(), 0, harness.tail(self.server.stderr()))
        self.server.sigterm_at = None  # the harness sends SIGTERM once per Server
        self.server.returncode = self.server.exited_at = None
        self.server.env.update(env)
        for k in [k for k, v in env.items() if v is None]:
            self.server.env.pop(k)

    def track(self, *emails):
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        events = []
        for email in emails:
            ev = self.ev_pb.Event(event_name="mk_signup", event_type="signup")
            ev.properties.update({"email": email, "plan": "pro"})
            events.append(ev)
        resp = stub.TrackEvents(self.ev_pb.TrackEventsRequest(events=events), timeout=TIMEOUT_S,
                                metadata=[("authorization", "Bearer " + token())])
        self.assertEqual(resp.accepted, len(emails), resp)

    def search(self, roles=("admin",), **kw):
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        return stub.SearchEvents(self.ev_pb.SearchEventsRequest(event_name="mk_signup", **kw),
                                 timeout=TIMEOUT_S,
                                 metadata=[("authorization", "Bearer " + token(roles))]).events

    def store_data(self):
        """Events sealed under two data keys of the old master key."""
        self.server.start()
        first = ["mk-a-%s@example.org" % uuid.uuid4().hex[:8] for _ in range(2)]
        self.track(*first)
        code, body, _ = authkit.rest_call(self.server.http_port, "POST", "/api/data-keys/rotate",
                                          headers={"Authorization": "Bearer " + token()},
                                          body="{}")
        self.assertEqual(code, "OK", body)
        second = "mk-b-%s@example.org" % uuid.uuid4().hex[:8]
        self.track(second)
        hits = self.search(properties={"email": second})
        self.assertEqual([dict(e.properties)["email"] for e in hits], [second])
        return first + [second]

    def audited(self, method):
        """The master key change's audit record (the default account's)."""
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.server.data_dir,
                                                               "analytics.db"), uri=True)
        try:
            return db.execute("SELECT subject, target_id FROM audit_log WHERE method = ?",
                              (method,)).fetchall()
        finally:
            db.close()

    def check_readable(self, emails):
        """Only the new key file exists; an admin reads every value in clear,
        a viewer masked, filters on the blind index match, new values seal."""
        os.unlink(self.old_key)
        self.server.env["ENCRYPTION_KEY_FILE"] = self.new_key
        self.server.env.pop("ENCRYPTION_PREVIOUS_KEY_FILE", None)
        self.server.start()
        self.assertEqual(sorted(dict(e.properties)["email"] for e in self.search()),
                         sorted(emails))
        self.assertEqual([dict(e.properties)["email"] for e in self.search(("viewer",))],
                         ["***"] * len(emails))
        for email in emails:
            hits = self.search(properties={"email": email})
            self.assertEqual([dict(e.properties)["email"] for e in hits], [email])
        later = "mk-c-%s@example.org" % uuid.uuid4().hex[:8]
        self.track(later)
        self.assertEqual(sorted(dict(e.properties)["email"] for e in self.search()),
                         sorted(emails + [later]))
        # No value is left in clear on disk.
        for root, _, names in os.walk(self.server.data_dir):
            for fname in names:
                with open(os.path.join(root, fname), "rb") as f:
                    data = f.read()
                for email in emails + [later]:
                    self.assertNotIn(email.encode(), data, fname)

    def test_rotate_master_offline_then_only_the_new_key(self):
        emails = self.store_data()
        self.restart({})
        cli = subprocess.run([self.server.binary, "data-keys", "rotate-master", "--new-key-file",
                              self.new_key], env=self.server.env, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertIn("2 data keys rewrapped", cli.stdout)
        self.assertIn("key root stored", cli.stdout)
        # Again, with the new key as the current one: nothing left to do.
        env = dict(self.server.env, ENCRYPTION_KEY_FILE=self.new_key)
        again = subprocess.run([self.server.binary, "data-keys", "rotate-master",
                                "--new-key-file", self.new_key], env=env, capture_output=True,
                               text=True, timeout=TIMEOUT_S)
        self.assertEqual(again.returncode, 1, again.stdout)
        self.assertIn("holds the current master key", again.stderr)
        self.check_readable(emails)
        self.assertEqual(self.audited("analyticsd data-keys rotate-master"),
                         [("cli", "master-key")])

    def test_previous_key_at_start_then_only_the_new_key(self):
        emails = self.store_data()
        # The new key alone: the server refuses to start, naming the cause.
        self.restart({"ENCRYPTION_KEY_FILE": self.new_key})
        with self.assertRaises(harness.ServerError) as cm:
            self.server.start()
        self.assertIn("ENCRYPTION_PREVIOUS_KEY_FILE", str(cm.exception))
        self.server.sigterm_at = None
        self.server.returncode = self.server.exited_at = None
        self.server.env["ENCRYPTION_PREVIOUS_KEY_FILE"] = self.old_key
        self.server.start()
        self.assertIn("2 data keys rewrapped", self.server.stderr())
        self.assertEqual(sorted(dict(e.properties)["email"] for e in self.search()),
                         sorted(emails))
        self.restart({})
        self.check_readable(emails)
        self.assertEqual(self.audited("ENCRYPTION_PREVIOUS_KEY_FILE"),
                         [("analyticsd", "master-key")])


if __name__ == "__main__":
    unittest.main()
