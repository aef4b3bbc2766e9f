"""Re-encryption of events stored before a field joined ENCRYPTED_FIELDS.

Events carrying an e-mail are ingested while no field is encrypted, and a
metric grouped by the e-mail is built from them (its rollups hold the
e-mails as group keys); free text finds them by the e-mail's words. The
server restarts with ENCRYPTED_FIELDS=properties.email and a small
REENCRYPT_BATCH_EVENTS: the background job starts by itself; it is killed
(SIGKILL) half-way, and the next start resumes it where it stopped (the
log says so, and no event is rewritten twice). Once /health says it is
done: an admin reads the e-mails in clear and a viewer masked, the blind
index filter finds each e-mail's events, free text no longer finds them by
the e-mail but still by their other words, the metric's group is the blind
index with the same count, a metric filtered on an e-mail (its value stored
in clear) has the blind index as its value and counts the same, and no byte of any file under DATA_DIR
(databases, WAL, free-text index) holds an e-mail or its distinctive word.
"""

import os
import time
import unittest
import urllib.parse
import uuid

from authkit import claims, hs256, rest_json, wait_health
import harness

ACCOUNT = "acme-reenc"
TIMEOUT_S = 15
SECRET = "analytics-test-secret-0123456789abcdef"
WORD = "zq" + uuid.uuid4().hex[:10]  # the e-mails' distinctive word
EMAILS = ["%s.%d@example.org" % (WORD, i) for i in range(3)]
LIVE_EMAIL = "%s.live@example.org" % WORD  # ingested while the job runs
OTHER_WORD = "plan" + uuid.uuid4().hex[:8]  # a property that stays clear
N = 60


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@unittest.skipIf(os.environ.get("ANA_TEST_EVENT_STORE", "sqlite") == "clickhouse",
                 "the job rewrites the local store only: ClickHouse keeps the rows it was shipped")
class ReencryptTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ns = harness.stubs.load()
        cls.server = harness.Server(env={"JWT_HS256_SECRET": SECRET})
        cls.admin = hs256(claims(ACCOUNT, ["admin"]))
        cls.viewer = hs256(claims(ACCOUNT, ["viewer"]))
        cls.ev_pb, cls.ev_grpc = cls.ns.analytics["events"]

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    # --- helpers -------------------------------------------------------------

    def restart(self, env, wait_ready=True):
        if self.server.alive():
            self.assertEqual(self.server.stop(), 0)
        self.server.sigterm_at = None
        self.server.returncode = self.server.exited_at = None
        self.server.env.update({k: str(v) for k, v in env.items()})
        self.server.start(wait_ready=wait_ready)

    def md(self, token):
        return [("authorization", "Bearer " + token)]

    def rest(self, verb, path, token=None, body=None):
        return rest_json(self.server.rest_port, verb, path, token, body)

    def health(self):
        status, body = self.rest("GET", "/health")
        return body

    def search(self, token, **kw):
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        return stub.SearchEvents(self.ev_pb.SearchEventsRequest(page_size=100, **kw),
                                 timeout=TIMEOUT_S, metadata=self.md(token)).events

    def metric_data(self, metric_id, base):
        q = urllib.parse.urlencode({"from": rfc3339(base), "to": rfc3339(base + 3600),
                                    "interval": "1h"})
        status, data = self.rest("GET", "/api/metrics/%s/data?%s" % (metric_id, q), self.admin)
        self.assertEqual(status, 200, data)
        return data

    def metric_series(self, metric_id, base):
        data = self.metric_data(metric_id, base)
        return {s["dimensions"]["email"]: s["total"] for s in data["series"]}

    def metric_total(self, metric_id, base):
        return sum(s["total"] for s in self.metric_data(metric_id, base)["series"])

    def wait_health(self, pred, timeout=TIMEOUT_S):
        return wait_health(self.server.rest_port, pred, timeout=timeout, every=0.02)

    # --- the test ------------------------------------------------------------

    def test_events_stored_in_clear_are_rewritten_sealed_resuming_after_a_kill(self):
        self.server.start()
        name = "signup_" + uuid.uuid4().hex[:8]
        base = (int(time.time()) // 3600 - 1) * 3600
        events = []
        for i in range(N):
            ev = self.ev_pb.Event(event_name=name, event_type="track")
            ev.properties.update({"email": EMAILS[i % 3], "plan": OTHER_WORD})
            ev.timestamp.FromMilliseconds((base + 10 + i) * 1000)
            events.append(ev)
        stub = self.ev_grpc.EventServiceStub(self.server.channel())
        resp = stub.TrackEvents(self.ev_pb.TrackEventsRequest(events=events),
                                timeout=TIMEOUT_S, metadata=self.md(self.admin))
        self.assertEqual(resp.accepted, N, resp)
        status, metric = self.rest("POST", "/api/metrics", self.admin, {
            "name": "by email " + uuid.uuid4().hex, "type": "counter",
            "formula": "count(%s)" % name, "aggregation": "sum", "dimensions": ["email"]})
        self.assertEqual(status, 200, metric)
        self.assertEqual(self.metric_series(metric["metricId"], base),
                         {EMAILS[0]: 20, EMAILS[1]: 20, EMAILS[2]: 20})
        # A metric filtered on one e-mail, its value stored in clear.
        status, filtered = self.rest("POST", "/api/metrics", self.admin, {
            "name": "one email " + uuid.uuid4().hex, "type": "counter",
            "formula": "count(%s)" % name, "aggregation": "sum",
            "filters": [{"field": "properties.email", "op": "eq", "value": EMAILS[0]}]})
        self.assertEqual(status, 200, filtered)
        self.assertEqual(filtered["filters"][0]["value"], EMAILS[0])
        self.assertEqual(self.metric_total(filtered["metricId"], base), 20)
        self.assertEqual(len(self.search(self.admin, query=WORD)), N)  # in clear so far
        self.assertEqual(self.health()["fieldReencryption"], "none")

        # The field is configured: the job starts by itself; killed half-way.
        env = {"ENCRYPTED_FIELDS": "properties.email", "REENCRYPT_BATCH_EVENTS": 4,
               "REENCRYPT_PAUSE": "200ms"}
        self.restart(env)
        h = self.wait_health(lambda h: h["fieldReencryption"] == "running"
                             and h["fieldReencryptionNextSequence"] > 20)
        self.assertEqual(h["fieldReencryptionLastSequence"], N)
        # Ingest goes on meanwhile, sealed at once (the job's batches are short).
        live = self.ev_pb.Event(event_name=name + "_live", event_type="track")
        live.properties.update({"email": LIVE_EMAIL, "plan": OTHER_WORD})
        t0 = time.monotonic()
        resp = self.ev_grpc.EventServiceStub(self.server.channel()).TrackEvents(
            self.ev_pb.TrackEventsRequest(events=[live]), timeout=TIMEOUT_S,
            metadata=self.md(self.admin))
        self.assertEqual(resp.accepted, 1, resp)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.server.kill()
        self.server.returncode = self.server.exited_at = None

        # (Each start writes stderr anew: the log lines are this process's.)
        self.restart(dict(env, REENCRYPT_PAUSE="0"))
        resumed = [line for line in self.server.raw_log_lines() if "resuming at event" in line]
        self.assertTrue(resumed, "no resume line in the log")
        at = int(resumed[0].split("resuming at event ")[1].split()[0])
        self.assertGreater(at, 20)
        h = self.wait_health(lambda h: h["fieldReencryption"] == "done", timeout=30)
        self.assertEqual(h["fieldReencryptionRewritten"], N)  # each event once
        self.assertTrue(any("re-encryption finished" in line
                            for line in self.server.raw_log_lines()))
        status, text = self.rest("GET", "/metrics")
        self.assertIn("ana_reencrypt_done 1", text)

        # Reads answer as before: clear for the admin, masked for the viewer.
        hits = self.search(self.admin, event_name=name)
        self.assertEqual(len(hits), N)
        self.assertEqual(sorted({dict(e.properties)["email"] for e in hits}), sorted(EMAILS))
        hits = self.search(self.viewer, event_name=name)
        self.assertEqual({dict(e.properties)["email"] for e in hits}, {"***"})
        self.assertEqual({dict(e.properties)["plan"] for e in hits}, {OTHER_WORD})
        # The filter on the e-mail goes through its blind index.
        for email in EMAILS:
            self.assertEqual(len(self.search(self.viewer, properties={"email": email})), 20)
        live = self.search(self.admin, properties={"email": LIVE_EMAIL})
        self.assertEqual([dict(e.properties)["email"] for e in live], [LIVE_EMAIL])
        # Free text: the e-mail's words are gone from the index, the rest is there.
        self.assertEqual(len(self.search(self.admin, query=WORD)), 0)
        self.assertEqual(len(self.search(self.admin, query=OTHER_WORD)), N + 1)
        # The metric grouped by the e-mail: its rollups were rebuilt on the blind index.
        series = self.metric_series(metric["metricId"], base)
        self.assertEqual(sorted(series.values()), [20, 20, 20], series)
        self.assertTrue(all(k.startswith("ana:bi:") for k in series), series)
        # The filtered metric's value is stored as a blind index now, and still counts.
        status, got = self.rest("GET", "/api/metrics/" + filtered["metricId"], self.admin)
        self.assertEqual(status, 200, got)
        self.assertTrue(got["filters"][0]["value"].startswith("ana:bi:"), got)
        self.assertEqual(self.metric_total(filtered["metricId"], base), 20)

        # No byte of any file under DATA_DIR holds an e-mail or its word.
        self.assertEqual(self.server.stop(), 0)
        files = 0
        for root, _, names in os.walk(self.server.data_dir):
            for fname in names:
                with open(os.path.join(root, fname), "rb") as f:
                    data = f.read()
                files += 1
                self.assertFalse(WORD.encode() in data, "%s holds the e-mails' word" % fname)
        self.assertGreaterEqual(files, 3)

        # A start with the same fields has nothing to do.
        self.restart({})
        self.assertEqual(self.health()["fieldReencryption"], "done")
        self.assertFalse(any("re-encrypting" in line for line in self.server.raw_log_lines()))
        self.server.stop()


if __name__ == "__main__":
    unittest.main()
