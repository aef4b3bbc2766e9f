"""The spec's "Track Event" and "Create Custom Metric" examples verbatim over
REST, with the spec's event names: each account's catalog of the event names
it has sent (GET /api/events/names), and bare formula names resolved to the
one seen name ending in _<name> (resolvedNames, pendingNames, warnings)."""

import json
import time
import unittest
import urllib.parse
import uuid

import harness
from test_rest import RestClient

# The spec's examples, as written (JavaScript objects as JSON).
SPEC_EVENT = {
    "eventType": "message",
    "eventName": "message_sent",
    "properties": {"campaignId": "123", "groupId": "456", "messageType": "text",
                   "charactersCount": 150},
}
SPEC_METRIC = {
    "name": "Message Delivery Rate",
    "type": "gauge",
    "formula": "(delivered / sent) * 100",
    "unit": "percentage",
    "aggregation": "avg",
    "dimensions": ["campaignId", "groupId"],
}
JSON = {"Content-Type": "application/json"}


class NamesBase(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    def post(self, path, body):
        status, _, resp = self.rest.request("POST", path, body, headers=JSON)
        self.assertEqual(status, 200, resp)
        return resp

    def get(self, path):
        status, _, resp = self.rest.request("GET", path)
        self.assertEqual(status, 200, resp)
        return resp

    def track(self, name, n, **props):
        for _ in range(n):
            ev = json.loads(json.dumps(SPEC_EVENT))
            ev["eventName"] = name
            ev["properties"].update(props)
            self.post("/api/events", ev)

    def names(self, prefix="", **kw):
        q = dict(kw)
        if prefix:
            q["prefix"] = prefix
        return self.get("/api/events/names?" + urllib.parse.urlencode(q))

    def wait_names(self, prefix, want, timeout=1.5):
        """Polls until the listed counts are `want` ({name: count}); returns the
        seconds it took."""
        start = time.monotonic()
        while True:
            got = {n["name"]: int(n["count"]) for n in self.names(prefix).get("names", [])}
            if got == want:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                self.fail("names %r after %.1f s, want %r" % (got, timeout, want))
            time.sleep(0.05)

    def metric(self, metric_id):
        return self.get("/api/metrics/%s" % metric_id)

    def totals(self, metric_id):
        data = self.get("/api/metrics/%s/data?interval=1h" % metric_id)
        return {(s.get("dimensions", {}).get("campaignId"),
                 s.get("dimensions", {}).get("groupId")):
                s.get("total") for s in data.get("series", [])}


class SpecExampleTest(NamesBase):

    def test_spec_examples_verbatim_give_the_delivery_rate(self):
        n_sent, n_delivered = 4, 3
        for _ in range(n_sent):
            self.post("/api/events", SPEC_EVENT)
        delivered = json.loads(json.dumps(SPEC_EVENT))
        delivered["eventName"] = "message_delivered"
        for _ in range(n_delivered):
            self.post("/api/events", delivered)
        # Created right after the events: names not stored yet still count.
        m = self.post("/api/metrics", SPEC_METRIC)
        self.assertEqual(m.get("resolvedNames"),
                         {"delivered": "message_delivered", "sent": "message_sent"}, m)
        self.assertNotIn("warnings", m)
        self.assertEqual(self.metric(m["metricId"]).get("resolvedNames"), m["resolvedNames"])
        totals = self.totals(m["metricId"])
        self.assertEqual(totals, {("123", "456"): n_delivered / n_sent * 100})
        took = self.wait_names("message_", {"message_sent": n_sent,
                                            "message_delivered": n_delivered})
        self.assertLess(took, 1.5)


class EventNamesTest(NamesBase):

    def test_names_are_listed_with_counts_within_a_second(self):
        p = "n%s_" % uuid.uuid4().hex[:6]
        before = time.time()
        self.track(p + "b", 3)
        self.track(p + "a", 1)
        took = self.wait_names(p, {p + "a": 1, p + "b": 3})
        self.assertLess(took, 1.2)
        listed = self.names(p)["names"]
        self.assertEqual([n["name"] for n in listed], [p + "a", p + "b"])
        for n in listed:
            for field in ("firstSeen", "lastSeen"):
                seen = time.mktime(time.strptime(n[field][:19], "%Y-%m-%dT%H:%M:%S"))
                seen -= time.timezone
                self.assertGreaterEqual(seen, int(before) - 1, n)
                self.assertLessEqual(seen, time.time() + 1, n)
        first = self.names(p, pageSize=1)
        self.assertEqual([n["name"] for n in first["names"]], [p + "a"])
        rest = self.names(p, pageSize=1, pageToken=first["nextPageToken"])
        self.assertEqual([n["name"] for n in rest["names"]], [p + "b"])
        self.assertNotIn("nextPageToken", rest)

    def test_unknown_name_is_left_as_written_with_a_warning(self):
        p = "k" + uuid.uuid4().hex[:6]
        self.track("email_%s_sent" % p, 1)
        self.track("email_%s_opened" % p, 1)
        m = self.post("/api/metrics", {"name": "typo %s" % p,
                                       "formula": "(%s_opend / %s_sent) * 100" % (p, p)})
        self.assertEqual(m.get("resolvedNames"), {"%s_sent" % p: "email_%s_sent" % p}, m)
        self.assertEqual(m.get("pendingNames"), ["%s_opend" % p], m)
        self.assertEqual(len(m.get("warnings", [])), 1, m)
        self.assertIn('"%s_opend"' % p, m["warnings"][0])
        self.assertIn('"email_%s_opened"' % p, m["warnings"][0])

    def test_several_matches_are_left_as_written_with_a_warning(self):
        p = "k" + uuid.uuid4().hex[:6]
        self.track("push_%s_open" % p, 1)
        self.track("mail_%s_open" % p, 1)
        m = self.post("/api/metrics", {"name": "ambiguous %s" % p, "formula": "%s_open" % p})
        self.assertNotIn("resolvedNames", m)
        self.assertNotIn("pendingNames", m)
        self.assertEqual(len(m.get("warnings", [])), 1, m)
        for name in ("mail_%s_open" % p, "push_%s_open" % p):
            self.assertIn('"%s"' % name, m["warnings"][0])

    def test_exact_name_wins_over_a_suffix(self):
        p = "k" + uuid.uuid4().hex[:6]
        self.track("%s_click" % p, 2)
        self.track("ad_%s_click" % p, 1)
        m = self.post("/api/metrics", {"name": "exact %s" % p, "formula": "%s_click" % p})
        self.assertNotIn("resolvedNames", m)
        self.assertNotIn("warnings", m)
        self.assertEqual(self.totals(m["metricId"]), {(None, None): 2})

    def test_metric_created_before_its_events_resolves_when_they_appear(self):
        p = "k" + uuid.uuid4().hex[:6]
        m = self.post("/api/metrics", {"name": "early %s" % p,
                                       "formula": "(%s_opened / %s_shown) * 100" % (p, p)})
        self.assertEqual(sorted(m.get("pendingNames", [])), ["%s_opened" % p, "%s_shown" % p])
        self.assertEqual(len(m.get("warnings", [])), 2, m)
        self.track("banner_%s_shown" % p, 2)
        self.track("banner_%s_opened" % p, 1)
        want = {"%s_opened" % p: "banner_%s_opened" % p, "%s_shown" % p: "banner_%s_shown" % p}
        deadline = time.monotonic() + 3
        while True:
            got = self.metric(m["metricId"])
            if got.get("resolvedNames") == want or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(got.get("resolvedNames"), want, got)
        self.assertNotIn("pendingNames", got)
        self.assertNotIn("warnings", got)
        self.assertEqual(self.totals(m["metricId"]), {(None, None): 50.0})
        # Once resolved it changes only on PUT: a second match now is ignored.
        self.track("popup_%s_shown" % p, 1)
        self.wait_names("popup_%s" % p, {"popup_%s_shown" % p: 1})
        time.sleep(0.6)
        self.assertEqual(self.metric(m["metricId"]).get("resolvedNames"), want)
        status, _, put = self.rest.request(
            "PUT", "/api/metrics/%s" % m["metricId"],
            {"name": "early %s" % p, "formula": "(%s_opened / %s_shown) * 100" % (p, p)},
            headers=JSON)
        self.assertEqual(status, 200, put)
        self.assertEqual(put.get("resolvedNames"), {"%s_opened" % p: "banner_%s_opened" % p})
        self.assertEqual(len(put.get("warnings", [])), 1, put)

    def test_names_survive_a_crash_right_after_the_acknowledgement(self):
        p = "crash%s_" % uuid.uuid4().hex[:6]
        self.track(p + "x", 2)
        self.server.kill()  # before the catalog's next write, most likely
        self.server.start()
        self.__class__.rest = RestClient(self.server.http_port)
        took = self.wait_names(p, {p + "x": 2})
        self.assertLess(took, 1.2)
        self.track(p + "x", 1)
        self.wait_names(p, {p + "x": 3})


class NamesLimitTest(NamesBase):

    SERVER_ENV = {"EVENT_NAMES_MAX": 3}

    def test_names_past_the_limit_are_counted_but_not_added(self):
        for name in ("a1", "a2", "a3", "a4", "a5"):
            self.track(name, 1)
        self.wait_names("a", {"a1": 1, "a2": 1, "a3": 1})
        self.track("a1", 1)
        self.track("a6", 1)
        self.wait_names("a", {"a1": 2, "a2": 1, "a3": 1})
        time.sleep(0.6)
        warnings = [line for line in self.server.stderr().splitlines()
                    if "EVENT_NAMES_MAX" in line]
        self.assertEqual(len(warnings), 1, warnings)
        status, _, text = self.rest.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b"ana_event_names_refused_total 3", text)


if __name__ == "__main__":
    unittest.main()
