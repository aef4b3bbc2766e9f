"""Alerts over REST: the spec's "Create Alert" example as written, events
crossing the threshold fire the alert within the commit's wake (state in
the history), the window recovers and the alert resolves, bad rules are
refused naming the field, and a firing alert survives kill -9 without
being notified again."""

import time
import unittest
import uuid

import harness
from test_rest import RestClient

SPEC_ALERT = {
    "name": "High Error Rate",
    "metric": "error_rate",
    "condition": "greater_than",
    "threshold": 5,
    "severity": "critical",
    "channels": ["email", "slack"],
}


def wait_for(fn, timeout=5.0):
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(0.02)


class AlertsRestTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    def req(self, verb, path, body=None, want=200):
        status, _, resp = self.rest.request(verb, path, body)
        self.assertEqual(status, want, resp)
        return resp

    def metric(self, name, formula):
        return self.req("POST", "/api/metrics", {"name": name, "type": "counter",
                                                  "formula": formula, "aggregation": "sum"})

    def track(self, name, n, **props):
        evs = [{"eventType": "app", "eventName": name, "properties": props} for _ in range(n)]
        resp = self.req("POST", "/api/events/batch", {"events": evs})
        self.assertEqual(resp["accepted"], n)

    def history(self, alert_id, state=""):
        path = "/api/alerts/%s/history" % alert_id
        if state:
            path += "?state=" + state
        return self.req("GET", path).get("entries", [])

    def test_spec_example_creates_a_working_enabled_alert(self):
        self.metric("error_rate", "count(api_error)")
        alert = self.req("POST", "/api/alerts", SPEC_ALERT)
        self.assertTrue(alert["alertId"])
        self.assertIs(alert["enabled"], True)
        self.assertEqual(alert["cooldown"], 300)
        self.assertEqual(alert["condition"], "greater_than")
        self.assertEqual(alert["severity"], "critical")
        self.assertEqual(sorted(alert["unresolvedChannels"]), ["email", "slack"])
        got = self.req("GET", "/api/alerts/" + alert["alertId"])
        self.assertEqual(got["name"], "High Error Rate")
        ids = [a["alertId"] for a in self.req("GET", "/api/alerts?pageSize=1000")["alerts"]]
        self.assertIn(alert["alertId"], ids)
        # Six errors in the window: above 5, it fires.
        t0 = time.time()
        self.track("api_error", 6)
        firing = wait_for(lambda: self.history(alert["alertId"], "firing"))
        self.assertTrue(firing, "the alert did not fire")
        latency = time.time() - t0
        self.assertLess(latency, 2.0)
        e = firing[0]
        self.assertEqual(e["previousState"], "ok")
        self.assertEqual(e["value"], 6)
        self.assertEqual(e["threshold"], 5)
        self.assertEqual(sorted(e["failedChannels"]), ["email: no channel", "slack: no channel"])
        got = self.req("GET", "/api/alerts/" + alert["alertId"])
        self.assertEqual(got["instanceStates"], {"firing": 1})

    def test_window_recovers_and_resolves(self):
        name = "m_" + uuid.uuid4().hex[:8]
        self.metric(name, "count(boom_%s)" % name)
        alert = self.req("POST", "/api/alerts", {
            "name": "boom " + name, "metric": name, "threshold": 2,
            "condition": {"type": "threshold", "op": ">=", "window": "2s", "for": "0s"},
            "message": "{{value}} over {{threshold}} ({{severity}})"})
        self.track("boom_" + name, 2)
        firing = wait_for(lambda: self.history(alert["alertId"], "firing"))
        self.assertTrue(firing)
        self.assertEqual(firing[0]["message"], "2 over 2 (warning)")
        # The window slides past the events: resolved.
        resolved = wait_for(lambda: self.history(alert["alertId"], "resolved"), timeout=6)
        self.assertTrue(resolved, self.history(alert["alertId"]))
        self.assertEqual(resolved[0]["previousState"], "firing")
        self.assertEqual(resolved[0].get("value", 0), 0)

    def test_bad_rules_name_the_field(self):
        self.metric("bad_rule_metric", "count(x)")
        cases = [
            ({"condition": "bigger"}, "condition"),
            ({"severity": "fatal"}, "severity"),
            ({"condition": {"op": "gt", "window": "5 minutes"}}, "condition.window"),
            ({"condition": {"op": "gt", "frob": 1}}, "condition.frob"),
            ({"noData": "maybe"}, "noData"),
            ({"cooldown": -1}, "cooldown"),
            ({"name": ""}, "name"),
        ]
        for change, field in cases:
            body = dict(SPEC_ALERT, metric="bad_rule_metric", name="bad " + uuid.uuid4().hex)
            body.update(change)
            with self.subTest(field=field):
                status, _, resp = self.rest.request("POST", "/api/alerts", body)
                self.assertEqual(status, 400, resp)
                self.assertIn(field + ":", resp["message"])
        body = dict(SPEC_ALERT, metric="no_such_metric_" + uuid.uuid4().hex, name="x")
        status, _, resp = self.rest.request("POST", "/api/alerts", body)
        self.assertEqual(status, 404, resp)
        self.assertIn("metric", resp["message"])

    def test_unknown_ids_not_found_and_delete(self):
        missing = str(uuid.uuid4())
        for verb, path in (("GET", "/api/alerts/" + missing),
                           ("DELETE", "/api/alerts/" + missing),
                           ("GET", "/api/alerts/%s/history" % missing)):
            status, _, resp = self.rest.request(verb, path)
            self.assertEqual(status, 404, (verb, path, resp))
        status, _, resp = self.rest.request("PUT", "/api/alerts/" + missing, SPEC_ALERT)
        self.assertEqual(status, 404, resp)
        self.metric("del_metric", "count(del_ev)")
        a = self.req("POST", "/api/alerts", dict(SPEC_ALERT, metric="del_metric", name="del"))
        b = self.req("PUT", "/api/alerts/" + a["alertId"],
                     dict(SPEC_ALERT, metric="del_metric", name="del2", threshold=9))
        self.assertEqual(b["threshold"], 9)
        self.req("DELETE", "/api/alerts/" + a["alertId"])
        self.req("GET", "/api/alerts/" + a["alertId"], want=404)


class AlertsRestartTest(harness.ServerTestCase):
    """kill -9 while firing, restart: still firing, not notified again."""

    def test_kill_while_firing(self):
        rest = RestClient(self.rest_port)
        status, _, m = rest.request("POST", "/api/metrics", {
            "name": "crash_rate", "type": "counter", "formula": "count(crash)"})
        self.assertEqual(status, 200, m)
        status, _, a = rest.request("POST", "/api/alerts", dict(
            SPEC_ALERT, metric="crash_rate", name="crashes",
            condition={"op": "gt", "window": "10m"}))
        self.assertEqual(status, 200, a)
        status, _, r = rest.request("POST", "/api/events/batch", {"events": [
            {"eventType": "app", "eventName": "crash"} for _ in range(7)]})
        self.assertEqual(status, 200, r)

        def hist():
            return rest.request("GET", "/api/alerts/%s/history" % a["alertId"])[2].get(
                "entries", [])
        self.assertTrue(wait_for(lambda: [e for e in hist() if e["state"] == "firing"]))
        before = hist()
        self.server.kill()
        self.server.start()
        rest = RestClient(self.server.http_port)
        time.sleep(0.5)
        after = rest.request("GET", "/api/alerts/%s/history" % a["alertId"])[2].get(
            "entries", [])
        self.assertEqual(after, before)
        got = rest.request("GET", "/api/alerts/" + a["alertId"])[2]
        self.assertEqual(got["instanceStates"], {"firing": 1})


if __name__ == "__main__":
    unittest.main()
