"""The audit log: audited calls (create and delete a metric, create and revoke
an API key, search events) and an authentication failure are recorded with
subject, account, method, target id, outcome, peer, request id and time;
GET /api/audit shows an admin only their account's records and refuses a
viewer; `analyticsctl audit verify` finds a row edited, deleted or appended
by hand with sqlite3 while the server was stopped, and, against the signed
head from the log, the newest records removed."""

import json
import os
import subprocess
import time
import unittest
import urllib.parse

import authkit
import harness

ACCOUNT = "acme-audit"
OTHER = "other-audit"
TIMEOUT_S = 10
CTL = os.path.join(os.path.dirname(harness.binary_path()), "..", "client", "cli", "analyticsctl")


def bearer(account=ACCOUNT, roles=("admin",), sub="user-1"):
    return "Bearer " + authkit.hs256(authkit.claims(account=account, roles=roles, ttl=3600,
                                                    sub=sub))


class AuditTest(unittest.TestCase):

    def boot(self):
        """A server of its own (the tamper tests stop and restart it)."""
        work = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                            "ana-audit-key-%d-%d" % (os.getpid(), time.monotonic_ns()))
        with open(work, "w") as f:
            f.write("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n")
        self.addCleanup(os.unlink, work)
        self.key_file = work
        s = harness.Server(env={"DEFAULT_ACCOUNT_ID": ACCOUNT,
                                "JWT_HS256_SECRET": authkit.SECRET,
                                "AUDIT_SIGN_INTERVAL": "200ms",
                                "ENCRYPTION_KEY_FILE": work})
        self.addCleanup(s.cleanup)
        return s.start()

    def rest(self, s, verb, path, auth=None, body=None, rid=None):
        h = {"Authorization": auth or bearer()}
        if rid:
            h["X-Request-Id"] = rid
        code, text, _ = authkit.rest_call(s.http_port, verb, path, headers=h,
                                          body=json.dumps(body) if body is not None else None)
        return code, (json.loads(text) if text.strip().startswith("{") else text)

    def records(self, s, auth=None, **query):
        q = urllib.parse.urlencode(query)
        code, body = self.rest(s, "GET", "/api/audit" + ("?" + q if q else ""), auth=auth)
        self.assertEqual(code, "OK", body)
        return body.get("records", [])

    def ctl(self, s, *args):
        p = subprocess.run([CTL, "--target", s.target, "--token", bearer()[7:], "audit"]
                           + list(args), capture_output=True, text=True, timeout=TIMEOUT_S)
        return p.returncode, p.stdout + p.stderr

    def some_calls(self, s, n=3):
        for i in range(n):
            code, _ = self.rest(s, "POST", "/api/metrics",
                                body={"name": "m%d" % time.monotonic_ns(), "formula": "count(x)"})
            self.assertEqual(code, "OK")

    def head_line(self, s, at_least):
        """The last audit_head line of s's log whose seq >= at_least."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            heads = [l for l in s.log_lines() if l.get("msg") == "audit_head"
                     and int(l["seq"]) >= at_least]
            if heads:
                return heads[-1]
            time.sleep(0.05)
        self.fail("no audit_head line reached record %d" % at_least)

    def tamper(self, s, sql):
        self.assertEqual(s.stop(), 0)
        subprocess.run(["sqlite3", os.path.join(s.data_dir, "analytics.db"), sql], check=True,
                       timeout=TIMEOUT_S)
        s.start()

    # ------------------------------------------------------------------

    def test_audited_calls_and_authentication_failure_are_recorded(self):
        s = self.boot()
        code, m = self.rest(s, "POST", "/api/metrics", rid="rid-create",
                            body={"name": "audited", "formula": "count(x)"})
        self.assertEqual(code, "OK", m)
        self.assertEqual(self.rest(s, "DELETE", "/api/metrics/" + m["metricId"],
                                   rid="rid-delete")[0], "OK")
        code, k = self.rest(s, "POST", "/api/keys", body={"name": "k", "role": "viewer"})
        self.assertEqual(code, "OK", k)
        key_id = k["key"]["keyId"]
        self.assertEqual(self.rest(s, "DELETE", "/api/keys/" + key_id)[0], "OK")
        self.assertEqual(self.rest(s, "GET", "/api/events/search?pageSize=1")[0], "OK")
        bad = authkit.hs256(authkit.claims(account=ACCOUNT), secret=b"x" * 40)
        self.assertEqual(self.rest(s, "GET", "/api/metrics", auth="Bearer " + bad,
                                   rid="rid-bad")[0], "UNAUTHENTICATED")

        recs = self.records(s)
        by = {}
        for r in recs:
            by.setdefault(r["method"].rsplit("/", 1)[1], r)
        create, delete = by["CreateMetric"], by["DeleteMetric"]
        self.assertEqual(create["targetId"], m["metricId"])
        self.assertEqual(create["requestId"], "rid-create")
        self.assertEqual(delete["targetId"], m["metricId"])
        self.assertEqual(delete["requestId"], "rid-delete")
        for r in (create, delete, by["CreateKey"], by["RevokeKey"], by["SearchEvents"]):
            self.assertEqual(r["kind"], "call")
            self.assertEqual(r["subject"], "user-1")
            self.assertEqual(r["accountId"], ACCOUNT)
            self.assertEqual(r["outcome"], "OK")
            self.assertTrue(r["peer"])
            self.assertTrue(r["time"])
        self.assertEqual(by["CreateKey"]["targetId"], key_id)
        self.assertEqual(by["RevokeKey"]["targetId"], key_id)
        fail = by["ListMetrics"]
        self.assertEqual(fail["kind"], "auth_failure")
        self.assertEqual(fail["outcome"], "UNAUTHENTICATED")
        self.assertNotIn("subject", fail)  # proto3 JSON leaves the empty string out
        self.assertEqual(fail["requestId"], "rid-bad")
        # newest first; filters
        seqs = [int(r["sequence"]) for r in recs]
        self.assertEqual(seqs, sorted(seqs, reverse=True))
        only = self.records(s, outcome="UNAUTHENTICATED")
        self.assertEqual({r["method"] for r in only}, {fail["method"]})
        page = self.records(s, pageSize=2)
        self.assertEqual(len(page), 2)
        rc, out = self.ctl(s, "verify")
        self.assertEqual(rc, 0, out)

    def test_offline_key_changes_join_the_running_servers_chain(self):
        s = self.boot()
        self.some_calls(s, 2)
        env = harness.base_env({"DATA_DIR": s.data_dir})
        p = subprocess.run([s.binary, "keys", "create", "--account", ACCOUNT, "--role", "viewer"],
                           env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        self.assertEqual(p.returncode, 0, p.stderr)
        key_id = p.stdout.strip().split("_")[1]
        p = subprocess.run([s.binary, "keys", "revoke", key_id], env=env, capture_output=True,
                           text=True, timeout=TIMEOUT_S)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.some_calls(s, 1)
        recs = self.records(s, subject="cli")
        self.assertEqual([(r["method"], r["targetId"]) for r in recs],
                         [("analyticsd keys revoke", key_id), ("analyticsd keys create", key_id)])
        rc, out = self.ctl(s, "verify")
        self.assertEqual(rc, 0, out)

    def test_foreign_accounts_records_are_not_visible(self):
        s = self.boot()
        other = bearer(account=OTHER, sub="user-other")
        self.assertEqual(self.rest(s, "POST", "/api/metrics", auth=other,
                                   body={"name": "theirs", "formula": "count(x)"})[0], "OK")
        self.some_calls(s, 1)
        mine = self.records(s)
        self.assertTrue(mine)
        self.assertEqual({r["accountId"] for r in mine}, {ACCOUNT})
        theirs = self.records(s, auth=other)
        self.assertEqual({r["accountId"] for r in theirs}, {OTHER})
        chain = self.records(s, chain="true")
        foreign = [r for r in chain if r.get("redacted")]
        self.assertTrue(foreign)
        self.assertTrue(all(not r.get("subject") and not r.get("method") for r in foreign))

    def test_viewer_gets_permission_denied(self):
        s = self.boot()
        code, _ = self.rest(s, "GET", "/api/audit", auth=bearer(roles=["viewer"]))
        self.assertEqual(code, "PERMISSION_DENIED")

    def test_verify_reports_an_edited_row(self):
        s = self.boot()
        self.some_calls(s)
        self.tamper(s, "UPDATE audit_log SET target_id = 'forged' WHERE seq = 2")
        rc, out = self.ctl(s, "verify")
        self.assertEqual(rc, 1, out)
        self.assertIn("BROKEN at record 2", out)
        self.assertIn("edited", out)

    def test_verify_reports_a_deleted_row(self):
        s = self.boot()
        self.some_calls(s)
        self.tamper(s, "DELETE FROM audit_log WHERE seq = 2")
        rc, out = self.ctl(s, "verify")
        self.assertEqual(rc, 1, out)
        self.assertIn("BROKEN at record 2", out)
        self.assertIn("missing", out)

    def test_verify_reports_an_appended_row(self):
        s = self.boot()
        self.some_calls(s)
        self.tamper(s, "INSERT INTO audit_log SELECT seq + 1, at, kind, account_id, subject, "
                       "key_id, method, 'forged', code, peer, request_id, prev_hash, hash "
                       "FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)")
        rc, out = self.ctl(s, "verify")
        self.assertEqual(rc, 1, out)
        self.assertIn("BROKEN at record 4", out)

    def test_removing_the_newest_records_is_detected_by_the_signed_head(self):
        s = self.boot()
        self.some_calls(s, 4)
        head = self.head_line(s, 4)
        self.tamper(s, "DELETE FROM audit_log WHERE seq >= 3")
        line = json.dumps(head)
        rc, out = self.ctl(s, "verify")
        # The chain alone still links (the server goes on from record 2)...
        self.assertEqual(rc, 0, out)
        # ...the signed head does not.
        rc, out = self.ctl(s, "verify", "--head-line", line, "--key-file", self.key_file)
        self.assertEqual(rc, 1, out)
        self.assertIn("signed head", out)
        # A head line with a forged MAC is refused.
        forged = dict(head, mac="00" * 32)
        rc, out = self.ctl(s, "verify", "--head-line", json.dumps(forged),
                           "--key-file", self.key_file)
        self.assertEqual(rc, 1, out)
        self.assertIn("MAC does not verify", out)


if __name__ == "__main__":
    unittest.main()
