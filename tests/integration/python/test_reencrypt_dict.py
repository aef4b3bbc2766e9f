"""Re-encryption, the event bodies' compression dictionary and alert history.

More than 1,024 events carrying e-mails are stored while no field is
encrypted: the store trains its zstd dictionary on them (table event_dicts),
and the dictionary holds the e-mails (read here with sqlite3). The server
restarts with ENCRYPTED_FIELDS=properties.email: the re-encryption job stores
every body compressed with that dictionary uncompressed (those of events
without an e-mail too) and deletes it; it is killed (SIGKILL) while it does
so and finishes at the next start. Then every event reads as before and no
byte of any file under DATA_DIR holds an e-mail's distinctive word.

An alert over a metric grouped by the e-mail fires while the e-mail is
stored in clear: its history entries hold the e-mail in their group and in
their message ("{{email}} ..."). After the job both hold the e-mail's blind
index, the rebuilt metric's group key.
"""

import json
import os
import sqlite3
import time
import unittest
import uuid

from authkit import claims, hs256, rest_json, wait_health
import harness

ACCOUNT = "acme-reenc-dict"
TIMEOUT_S = 15
SECRET = "analytics-test-secret-0123456789abcdef"
WORD = "zq" + uuid.uuid4().hex[:10]
EMAILS = ["%s.%d@example.org" % (WORD, i) for i in range(11)]
N = 1100  # more than the dictionary's 1,024 training samples


@unittest.skipIf(os.environ.get("ANA_TEST_EVENT_STORE", "sqlite") == "clickhouse",
                 "the job rewrites the local store only: ClickHouse keeps the rows it was shipped")
class ReencryptDictTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ns = harness.stubs.load()
        cls.admin = hs256(claims(ACCOUNT, ["admin"]))
        cls.viewer = hs256(claims(ACCOUNT, ["viewer"]))
        cls.ev_pb, cls.ev_grpc = cls.ns.analytics["events"]

    def setUp(self):
        self.server = harness.Server(env={"JWT_HS256_SECRET": SECRET})  # a store of its own

    def tearDown(self):
        self.server.cleanup()

    def md(self, token):
        return [("authorization", "Bearer " + token)]

    def track(self, events):
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        resp = stub.TrackEvents(self.ev_pb.TrackEventsRequest(events=events),
                                timeout=TIMEOUT_S, metadata=self.md(self.admin))
        self.assertEqual(resp.accepted, len(events), resp)

    def search(self, token, **kw):
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        return stub.SearchEvents(self.ev_pb.SearchEventsRequest(page_size=100, **kw),
                                 timeout=TIMEOUT_S, metadata=self.md(token)).events

    def db(self):
        return sqlite3.connect("file:%s?mode=ro" % os.path.join(self.server.data_dir,
                                                               "analytics.db"), uri=True)

    def restart(self, env):
        self.server.sigterm_at = None
        self.server.returncode = self.server.exited_at = None
        self.server.env.update({k: str(v) for k, v in env.items()})
        self.server.start()

    def rest(self, verb, path, body=None):
        return rest_json(self.server.rest_port, verb, path, self.admin, body)

    def health(self):
        return self.rest("GET", "/health")[1]

    def wait_health(self, pred, timeout=TIMEOUT_S):
        return wait_health(self.server.rest_port, pred, self.admin, timeout)

    def test_dictionary_trained_on_clear_values_is_deleted_and_its_bodies_rewritten(self):
        self.server.start()
        name = "signup_" + uuid.uuid4().hex[:8]
        for start in range(0, N, 100):
            events = []
            for i in range(start, start + 100):
                ev = self.ev_pb.Event(event_name=name, event_type="track")
                ev.properties.update({"email": EMAILS[i % len(EMAILS)], "plan": "pro"})
                events.append(ev)
            self.track(events)
        # The dictionary is stored by the first commit after its training:
        # events without an e-mail, compressed with it too.
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            self.track([self.ev_pb.Event(event_name=name + "_plain", event_type="track")])
            with self.db() as db:
                dicts = db.execute("SELECT id, dict FROM event_dicts").fetchall()
            if dicts:
                break
            self.assertLess(time.monotonic(), deadline, "no dictionary was trained")
            time.sleep(0.05)
        self.assertTrue(WORD.encode() in dicts[0][1], "the dictionary holds no e-mail")
        self.track([self.ev_pb.Event(event_name=name + "_plain", event_type="track")])
        # (A clean stop has every staged event moved into the events table.)
        self.assertEqual(self.server.stop(), 0)
        with self.db() as db:
            plain = db.execute("SELECT count(*) FROM events WHERE event_name ="
                               " (SELECT id FROM event_strings WHERE name = ?)",
                               (name + "_plain",)).fetchone()[0]
            self.assertGreater(db.execute(
                "SELECT count(*) FROM events WHERE substr(body, 1, 1) = x'81'").fetchone()[0], 0)

        # The field is configured; the job is killed while it rewrites bodies.
        env = {"ENCRYPTED_FIELDS": "properties.email", "REENCRYPT_BATCH_EVENTS": 100,
               "REENCRYPT_PAUSE": "100ms"}
        self.restart(env)
        h = self.wait_health(lambda h: h["fieldReencryption"] in ("finishing", "done"))
        if h["fieldReencryption"] == "finishing":
            time.sleep(0.15)
        self.server.kill()
        self.server.returncode = self.server.exited_at = None
        self.restart(dict(env, REENCRYPT_PAUSE="0"))
        self.wait_health(lambda h: h["fieldReencryption"] == "done")
        log = self.server.raw_log_lines()

        # Every event reads as before.
        hits = self.search(self.admin, properties={"email": EMAILS[0]})
        self.assertEqual([dict(e.properties)["email"] for e in hits], [EMAILS[0]] * 100)
        self.assertEqual(len(self.search(self.viewer, event_name=name + "_plain")), plain)
        # No byte of any file under DATA_DIR holds an e-mail's word.
        self.assertEqual(self.server.stop(), 0)
        files = 0
        for root, _, names in os.walk(self.server.data_dir):
            for fname in names:
                with open(os.path.join(root, fname), "rb") as f:
                    data = f.read()
                files += 1
                self.assertFalse(WORD.encode() in data, "%s holds the e-mails' word" % fname)
        self.assertGreaterEqual(files, 3)
        with self.db() as db:
            self.assertEqual(db.execute("SELECT count(*) FROM event_dicts WHERE id <= ?",
                                        (dicts[-1][0],)).fetchone()[0], 0)
            self.assertEqual(db.execute(
                "SELECT count(*) FROM events WHERE substr(body, 1, 1) BETWEEN x'81' AND ?",
                (bytes([0x80 | dicts[-1][0]]),)).fetchone()[0], 0)
        self.assertTrue(any("resuming at event" in line for line in log))
        self.assertTrue(any("those dictionaries deleted" in line for line in log))

    def test_alert_history_written_in_clear_holds_blind_indexes_after_the_job(self):
        self.server.start()
        name = "login_" + uuid.uuid4().hex[:8]
        status, metric = self.rest("POST", "/api/metrics", {
            "name": name, "type": "counter", "formula": "count(%s)" % name,
            "aggregation": "sum", "dimensions": ["email"]})
        self.assertEqual(status, 200, metric)
        status, alert = self.rest("POST", "/api/alerts", {
            "name": "logins " + name, "metric": name, "threshold": 1,
            "condition": {"type": "threshold", "op": ">=", "window": "60s", "for": "0s"},
            "message": "{{email}} logged in {{value}} times"})
        self.assertEqual(status, 200, alert)
        events = []
        for email in EMAILS[:2]:
            ev = self.ev_pb.Event(event_name=name, event_type="track")
            ev.properties.update({"email": email})
            events.append(ev)
        self.track(events)
        path = "/api/alerts/%s/history?state=firing" % alert["alertId"]
        deadline = time.monotonic() + TIMEOUT_S
        while len(self.rest("GET", path)[1].get("entries", [])) < 2:
            self.assertLess(time.monotonic(), deadline, "the alert never fired")
            time.sleep(0.05)
        with self.db() as db:
            rows = db.execute("SELECT group_json, message FROM alert_history").fetchall()
        self.assertTrue(any(WORD in g and WORD in m for g, m in rows), rows)
        self.assertEqual(self.server.stop(), 0)

        self.restart({"ENCRYPTED_FIELDS": "properties.email", "REENCRYPT_PAUSE": "0"})
        self.wait_health(lambda h: h["fieldReencryption"] == "done")
        entries = self.rest("GET", path)[1]["entries"]
        self.assertEqual(self.server.stop(), 0)
        with self.db() as db:
            rows = db.execute("SELECT group_json, message FROM alert_history").fetchall()
        for group, message in rows:
            self.assertNotIn(WORD, group + message)
        groups = sorted(json.loads(g)["email"] for g, _ in rows)
        self.assertEqual(len(groups), 2, rows)
        self.assertTrue(all(g.startswith("ana:bi:") for g in groups), groups)
        self.assertEqual(sorted(m.split()[0] for _, m in rows), groups)
        self.assertEqual(len(entries), 2)


if __name__ == "__main__":
    unittest.main()
