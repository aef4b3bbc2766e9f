"""Alerts over REST: the spec's "Create Alert" example as written, events
crossing the threshold fire the alert within the commit's wake (state in
the history), the window recovers and the alert resolves, bad rules are
refused naming the field, and a firing alert survives kill -9 without
being notified again.

Notifications through real receivers on loopback (an aiosmtpd SMTP server,
an HTTP server verifying the webhook signature): an email and a webhook POST
when the threshold is crossed, the cooldown holds, a resolve notifies once,
a receiver that is down gets retries then a failed delivery entry in the
history, kill -9 with notifications pending delivers every idempotency key
after the restart and does not notify the firing again; StreamAlerts over
gRPC and /ws/alerts push the change; another account's alert is NOT_FOUND;
history filters and paging."""

import asyncio
import email
import json
import threading
import time
import unittest
import uuid

import grpc
import websockets
from aiosmtpd.controller import Controller

import authkit
import harness
from test_channels import Mailbox, Receiver, verify_signature
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

    def states(self, alert_id):
        return self.req("GET", "/api/alerts/" + alert_id).get("instanceStates", {})

    def test_rules_over_one_metric_step_by_their_own_thresholds(self):
        """Rules over one metric with operators of every kind: each event
        steps exactly the rules its value concerns (thresholds reached, and
        the instances pending or firing), whatever the others do."""
        name = "t_" + uuid.uuid4().hex[:8]
        self.req("POST", "/api/metrics", {"name": name, "type": "counter",
                                          "formula": "count(%s)" % name, "dimensions": ["g"],
                                          "aggregation": "sum"})
        rules = {}
        for label, op, threshold in [("gt2", ">", 2), ("ge4", ">=", 4), ("lt2", "<", 2),
                                     ("le1", "<=", 1), ("eq3", "==", 3), ("ne1", "!=", 1),
                                     ("gt100", ">", 100), ("lt0", "<", 0)]:
            rules[label] = self.req("POST", "/api/alerts", {
                "name": "%s %s" % (label, name), "metric": name, "threshold": threshold,
                "condition": {"type": "threshold", "op": op, "window": "1m"},
                "cooldown": 0})["alertId"]
        expected = [  # per count of events in group "a"
            {"lt2", "le1"},
            {"ne1"},
            {"gt2", "eq3", "ne1"},
            {"gt2", "ge4", "ne1"},
        ]
        for count, firing in enumerate(expected, 1):
            self.track(name, 1, g="a")
            want = {label: ({"firing": 1} if label in firing else None) for label in rules}

            def now():
                return {label: ({"firing": 1} if self.states(aid).get("firing") else None)
                        for label, aid in rules.items()}
            got = wait_for(lambda: now() == want and now())
            self.assertEqual(now(), want, "after %d events" % count)
        # another group steps its own instances only
        self.track(name, 1, g="b")
        self.assertTrue(wait_for(lambda: self.states(rules["lt2"]).get("firing") == 1 and
                                 self.states(rules["lt2"]).get("resolved") == 1))
        self.assertEqual(self.states(rules["ge4"]).get("firing"), 1)
        resolved = self.history(rules["ne1"], "resolved")
        self.assertEqual(resolved, [])

    def test_firing_resolves_when_the_window_slides_below_the_line(self):
        """Events leave the window (a pane closes), the value drops below
        the threshold but the group still has data: resolved with that value."""
        name = "s_" + uuid.uuid4().hex[:8]
        self.metric(name, "count(%s)" % name)
        alert = self.req("POST", "/api/alerts", {
            "name": "slide " + name, "metric": name, "threshold": 2, "cooldown": 0,
            "condition": {"type": "threshold", "op": ">=", "window": "2s"}})
        self.track(name, 2)
        self.assertTrue(wait_for(lambda: self.history(alert["alertId"], "firing")))
        time.sleep(1.0)
        self.track(name, 1)
        resolved = wait_for(lambda: self.history(alert["alertId"], "resolved"), timeout=5)
        self.assertTrue(resolved, self.history(alert["alertId"]))
        self.assertEqual(resolved[-1].get("value"), 1, resolved)

    def test_recovery_threshold_holds_a_firing_alert(self):
        """Hysteresis: with recoveryThreshold 1 a firing `>= 2` alert stays
        firing at 1 and resolves only below it (here: no data)."""
        name = "h_" + uuid.uuid4().hex[:8]
        self.metric(name, "count(%s)" % name)
        alert = self.req("POST", "/api/alerts", {
            "name": "hyst " + name, "metric": name, "threshold": 2, "cooldown": 0,
            "condition": {"type": "threshold", "op": ">=", "window": "2s",
                          "recoveryThreshold": 1}})
        t0 = time.time()
        self.track(name, 2)
        self.assertTrue(wait_for(lambda: self.history(alert["alertId"], "firing")))
        time.sleep(max(0, t0 + 1.0 - time.time()))
        self.track(name, 1)
        # the first two leave the window: 1 is not below the recovery line
        time.sleep(max(0, t0 + 2.5 - time.time()))
        self.assertEqual(self.history(alert["alertId"], "resolved"), [])
        self.assertEqual(self.states(alert["alertId"]), {"firing": 1})
        resolved = wait_for(lambda: self.history(alert["alertId"], "resolved"), timeout=5)
        self.assertTrue(resolved, self.history(alert["alertId"]))

    def test_no_data_alerting_fires_when_a_group_leaves_the_window(self):
        name = "n_" + uuid.uuid4().hex[:8]
        self.req("POST", "/api/metrics", {"name": name, "type": "counter",
                                          "formula": "count(%s)" % name, "dimensions": ["g"],
                                          "aggregation": "sum"})
        alert = self.req("POST", "/api/alerts", {
            "name": "nodata " + name, "metric": name, "threshold": 100, "cooldown": 0,
            "noData": "alerting", "message": "{{g}} silent",
            "condition": {"type": "threshold", "op": ">", "window": "1s"}})
        self.track(name, 1, g="quiet")
        self.assertTrue(wait_for(lambda: self.states(alert["alertId"]) == {"ok": 1}))
        firing = wait_for(lambda: self.history(alert["alertId"], "firing"), timeout=5)
        self.assertTrue(firing, self.history(alert["alertId"]))
        self.assertFalse(firing[0].get("hasValue", False))
        self.assertEqual(firing[0]["message"], "quiet silent")
        self.assertEqual(firing[0]["group"], {"g": "quiet"})

    def test_for_pends_then_fires_by_the_timer_and_reminds(self):
        name = "p_" + uuid.uuid4().hex[:8]
        self.metric(name, "count(%s)" % name)
        alert = self.req("POST", "/api/alerts", {
            "name": "pend " + name, "metric": name, "threshold": 1, "cooldown": 0,
            "renotifyInterval": 1,
            "condition": {"type": "threshold", "op": ">=", "window": "1m", "for": "1s"}})
        t0 = time.time()
        self.track(name, 1)
        self.assertTrue(wait_for(lambda: self.history(alert["alertId"], "pending")))
        # no further event: the timer ends the `for` period
        firing = wait_for(lambda: self.history(alert["alertId"], "firing"), timeout=5)
        self.assertTrue(firing, self.history(alert["alertId"]))
        self.assertGreaterEqual(time.time() - t0, 0.9)
        self.assertEqual(firing[0]["previousState"], "pending")
        # and reminds while firing, once a second
        reminders = wait_for(lambda: self.history(alert["alertId"], "notification"), timeout=5)
        self.assertTrue(reminders, self.history(alert["alertId"]))
        self.assertEqual(reminders[0]["state"], "firing")

    def get_total(self, metric_id, frm, to):
        """GetMetricData's total per group over [frm, to) ms."""
        iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + \
            ".%03dZ" % (ms % 1000)
        data = self.req("GET", "/api/metrics/%s/data?from=%s&to=%s&interval=1m" % (
            metric_id, iso(frm), iso(to)))
        return {s["dimensions"]["g"]: s.get("total") for s in data.get("series", [])}

    def test_window_equals_get_metric_data_over_pane_aligned_ranges(self):
        """The panes (seeded from the store at creation, then fed live) give
        the value GetMetricData gives over [pane start - 9 panes, pane end)."""
        name = "w_" + uuid.uuid4().hex[:8]
        ev = "pay_" + name
        m = self.req("POST", "/api/metrics", {
            "name": name, "formula": "(sum(%s.amount) + max(%s.amount)) / count(%s)"
            % (ev, ev, ev), "dimensions": ["g"]})
        now = int(time.time() * 1000)
        rnd = __import__("random").Random(5)

        def events(n):
            return [{"eventType": "app", "eventName": ev,
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) +
                     ".%03dZ" % (t % 1000),
                     "properties": {"g": "g%d" % (i % 3), "amount": rnd.randrange(1, 1000)}}
                    for i, t in enumerate(now - rnd.randrange(0, 500000) for _ in range(n))]
        seed = events(90)
        resp = self.req("POST", "/api/events/batch", {"events": seed})
        self.assertEqual(resp["accepted"], 90)
        # Seeded: created after the events, it fires at once with the window's value.
        seeded = self.req("POST", "/api/alerts", {
            "name": "seeded " + name, "metric": name, "threshold": -1,
            "condition": {"op": ">=", "window": "10m"}})
        firing = wait_for(lambda: self.history(seeded["alertId"], "firing"))
        self.assertEqual(len(firing), 3)
        at = max(int(__import__("datetime").datetime.fromisoformat(
            e["at"].replace("Z", "+00:00")).timestamp() * 1000) for e in firing)
        pane_end = at - at % 60000 + 60000
        want = self.get_total(m["metricId"], pane_end - 600000, pane_end)
        got = {e["group"]["g"]: e["value"] for e in firing}
        self.assertEqual(set(got), {"g0", "g1", "g2"})
        for g in got:
            self.assertAlmostEqual(got[g], want[g], places=9, msg=g)
        # Live: an alert that fires exactly when every event of three batches
        # (spread over the panes) is in its window.
        live_m = self.req("POST", "/api/metrics", {"name": name + "_sum",
                                                   "formula": "sum(%s.amount)" % ev})
        batches = [events(40) for _ in range(3)]
        total = sum(e["properties"]["amount"] for b in [seed] + batches for e in b)
        live = self.req("POST", "/api/alerts", {
            "name": "live " + name, "metric": name + "_sum", "threshold": total,
            "condition": {"op": ">=", "window": "10m"}})
        for b in batches:
            self.assertEqual(self.req("POST", "/api/events/batch", {"events": b})["accepted"], 40)
        firing = wait_for(lambda: self.history(live["alertId"], "firing"))
        self.assertTrue(firing)
        at = int(__import__("datetime").datetime.fromisoformat(
            firing[0]["at"].replace("Z", "+00:00")).timestamp() * 1000)
        pane_end = at - at % 60000 + 60000
        data = self.req("GET", "/api/metrics/%s/data?from=%s&to=%s&interval=1m" % (
            live_m["metricId"],
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((pane_end - 600000) // 1000)),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pane_end // 1000))))
        self.assertEqual(firing[0]["value"], total)
        self.assertEqual(firing[0]["value"], data["series"][0]["total"])

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


ACCOUNT_A = "alerts-a"
ACCOUNT_B = "alerts-b"
NOTIFY_ENV = {
    "JWT_HS256_SECRET": authkit.SECRET,
    "NOTIFY_ALLOW_PRIVATE_NETWORKS": "true",
    "SMTP_FROM": "alerts@analytics.example",
    "NOTIFY_MAX_ATTEMPTS": "3",
    "NOTIFY_BACKOFF_INITIAL": "50ms",
    "NOTIFY_BACKOFF_MAX": "100ms",
    "NOTIFY_TIMEOUT": "2s",
    "NOTIFY_POLL_INTERVAL": "50ms",
    "ALERT_MAX_INSTANCES": "3",
}


class TokenRest(RestClient):
    """REST with a bearer token of one account."""

    def __init__(self, port, account):
        super().__init__(port)
        self.token = authkit.hs256(authkit.claims(account=account))

    def request(self, verb, path, body=None, headers=None, raw_body=None):
        h = dict(headers or {})
        h.update(authkit.bearer(self.token))
        return super().request(verb, path, body, headers=h, raw_body=raw_body)


class NotifyBase(harness.ServerTestCase):

    def req(self, verb, path, body=None, want=200, rest=None):
        status, _, resp = (rest or self.rest).request(verb, path, body)
        self.assertEqual(status, want, resp)
        return resp

    def metric(self, name=None):
        name = name or "m_" + uuid.uuid4().hex[:10]
        self.req("POST", "/api/metrics", {"name": name, "type": "counter",
                                          "formula": "count(ev_%s)" % name,
                                          "aggregation": "sum"})
        return name

    def track(self, metric, n):
        evs = [{"eventType": "app", "eventName": "ev_" + metric} for _ in range(n)]
        self.assertEqual(self.req("POST", "/api/events/batch", {"events": evs})["accepted"], n)

    def alert(self, metric, channels, window="2s", cooldown=300, **kw):
        body = {"name": "a " + uuid.uuid4().hex[:8], "metric": metric, "threshold": 2,
                "condition": {"op": ">=", "window": window}, "severity": "critical",
                "channels": channels, "cooldown": cooldown,
                "message": "{{value}} >= {{threshold}}"}
        body.update(kw)
        return self.req("POST", "/api/alerts", body)

    def history(self, alert_id, query=""):
        return self.req("GET", "/api/alerts/%s/history%s" % (alert_id, query)).get("entries", [])

    def hook(self, path):
        ch = self.req("POST", "/api/channels", {"name": "hook " + uuid.uuid4().hex[:8],
                                                "webhook": {"url": self.receiver.url(path)}})
        return ch["channelId"], ch["webhook"]["signingSecret"]

    def posts(self, path):
        with self.receiver.cond:
            return [r for r in self.receiver.requests if r[0] == path]


class AlertNotifyTest(NotifyBase):

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver()
        cls.mailbox = Mailbox()
        cls.smtp = Controller(cls.mailbox, hostname="127.0.0.1", port=harness.free_port())
        cls.smtp.start()
        cls.SERVER_ENV = dict(NOTIFY_ENV, SMTP_URL="smtp://127.0.0.1:%d" % cls.smtp.port)
        try:
            super().setUpClass()
        except BaseException:
            cls.smtp.stop()
            cls.receiver.stop()
            raise
        cls.rest = TokenRest(cls.rest_port, ACCOUNT_A)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.smtp.stop()
            cls.receiver.stop()

    def test_crossing_sends_an_email_and_a_signed_webhook(self):
        mail = self.req("POST", "/api/channels", {"name": "oncall",
                                                  "email": {"to": ["oncall@example.com"]},
                                                  "isDefault": True})
        hook_id, secret = self.hook("/cross")
        m = self.metric()
        a = self.alert(m, ["email", hook_id, "telegram"], window="1m")
        self.assertEqual(a["unresolvedChannels"], ["telegram"])
        self.track(m, 2)
        path, headers, body = self.receiver.wait_for(lambda r: r[0] == "/cross")
        self.assertTrue(verify_signature(secret, headers["x-analytics-signature"], body))
        doc = json.loads(body)
        self.assertEqual(doc["source"], "alert:" + a["alertId"])
        key = headers["idempotency-key"]
        firing = self.history(a["alertId"], "?state=firing")
        self.assertEqual(len(firing), 1)
        self.assertEqual(key, "%s.%s.%s" % (a["alertId"], firing[0]["entryId"], hook_id))
        self.assertEqual(sorted(firing[0]["notifiedChannels"]),
                         sorted([mail["channelId"], hook_id]))
        self.assertEqual(firing[0]["failedChannels"], ["telegram: no channel"])
        env = self.mailbox.wait()
        msg = email.message_from_bytes(env.content)
        self.assertEqual(env.rcpt_tos, ["oncall@example.com"])
        self.assertEqual(msg["Message-ID"], "<%s.%s.%s@analytics.example>"
                         % (a["alertId"], firing[0]["entryId"], mail["channelId"]))
        self.assertIn("2 >= 2", msg.get_payload(decode=True).decode())
        # The delivery log joins the history, newest first.
        deadline = time.time() + 5
        while time.time() < deadline:
            delivered = self.history(a["alertId"], "?state=delivered")
            if len(delivered) == 2:
                break
            time.sleep(0.05)
        self.assertEqual(sorted(d["channelId"] for d in delivered),
                         sorted([mail["channelId"], hook_id]))
        self.assertTrue(all(d["kind"] == "delivery" and d["attempt"] == 1 for d in delivered))
        everything = self.history(a["alertId"])
        stamps = [e["at"] for e in everything]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        # A telegram channel created later resolves (at the next firing).
        self.req("POST", "/api/channels", {"name": "tg", "telegram": {"botToken": "1:x",
                                                                      "chatId": "1"}})
        self.assertEqual(self.req("GET", "/api/alerts/" + a["alertId"]).get(
            "unresolvedChannels", []), [])

    def test_cooldown_holds_and_resolve_notifies_once(self):
        hook_id, _ = self.hook("/cool")
        m = self.metric()
        a = self.alert(m, [hook_id], window="1s", cooldown=60)
        self.track(m, 2)
        self.receiver.wait_for(lambda r: r[0] == "/cool")
        resolved = wait_for(lambda: self.history(a["alertId"], "?state=resolved"), timeout=5)
        self.assertTrue(resolved)
        self.receiver.wait_for(lambda r: r[0] == "/cool" and b'"resolved"' in r[2])
        # A second crossing within the cooldown: firing, not notified; its
        # resolve (of an unnotified firing) is not notified either.
        self.track(m, 2)
        fired = wait_for(lambda: len(self.history(a["alertId"], "?state=firing")) == 2)
        self.assertTrue(fired)
        self.assertEqual(self.history(a["alertId"], "?state=firing")[0]["failedChannels"],
                         ["cooldown: not notified"])
        self.assertTrue(wait_for(lambda: len(self.history(a["alertId"], "?state=resolved")) == 2,
                                 timeout=5))
        time.sleep(0.3)
        got = self.posts("/cool")
        self.assertEqual(len(got), 2, [json.loads(b)["title"] for _, _, b in got])
        self.assertEqual(len({h["idempotency-key"] for _, h, _ in got}), 2)

    def test_down_channel_retries_then_failed_in_history(self):
        ch = self.req("POST", "/api/channels", {
            "name": "down", "webhook": {"url": "http://127.0.0.1:%d/x" % harness.free_port()}})
        m = self.metric()
        a = self.alert(m, [ch["channelId"]], window="1m")
        self.track(m, 2)
        failed = wait_for(lambda: self.history(a["alertId"], "?state=failed"), timeout=10)
        self.assertTrue(failed, self.history(a["alertId"]))
        retries = self.history(a["alertId"], "?state=retry")
        self.assertEqual([r["attempt"] for r in retries], [2, 1])
        self.assertEqual(failed[0]["attempt"], 3)
        self.assertIn("127.0.0.1", failed[0]["error"])
        self.assertEqual(len({e["idempotencyKey"] for e in failed + retries}), 1)

    def test_stream_alerts_over_grpc_and_websocket(self):
        m = self.metric()
        a = self.alert(m, [], window="1m")
        rpb, rgrpc = self.ns.analytics["realtime"]
        stub = rgrpc.RealtimeServiceStub(self.channel)
        md = [("authorization", "Bearer " + self.rest.token)]
        call = stub.StreamAlerts(rpb.StreamAlertsRequest(alert_ids=[a["alertId"]]),
                                 metadata=md, timeout=10)
        got = {}

        def read_grpc():
            try:
                for u in call:
                    got["grpc"] = u
                    return
            except grpc.RpcError as e:
                got["grpc_error"] = e

        async def read_ws():
            uri = "ws://127.0.0.1:%d/ws/alerts?alertIds=%s" % (self.rest_port, a["alertId"])
            async with websockets.connect(uri, extra_headers=authkit.bearer(self.rest.token),
                                          open_timeout=5) as ws:
                await asyncio.sleep(0.3)
                await asyncio.get_running_loop().run_in_executor(None, self.track, m, 2)
                return json.loads(await asyncio.wait_for(ws.recv(), 5))

        t = threading.Thread(target=read_grpc, daemon=True)
        t.start()
        time.sleep(0.3)
        frame = asyncio.run(read_ws())
        t.join(5)
        call.cancel()
        self.assertIn("grpc", got, got)
        self.assertEqual(got["grpc"].entry.state, "firing")
        self.assertEqual(got["grpc"].entry.alert_id, a["alertId"])
        self.assertEqual(frame["result"]["entry"]["state"], "firing", frame)
        self.assertEqual(frame["result"]["entry"]["alertId"], a["alertId"])

    def test_another_accounts_alert_is_not_found(self):
        m = self.metric()
        a = self.alert(m, [])
        other = TokenRest(self.rest_port, ACCOUNT_B)
        for verb, path, body in (("GET", "/api/alerts/" + a["alertId"], None),
                                 ("GET", "/api/alerts/%s/history" % a["alertId"], None),
                                 ("PUT", "/api/alerts/" + a["alertId"],
                                  dict(SPEC_ALERT, metric=m)),
                                 ("DELETE", "/api/alerts/" + a["alertId"], None)):
            status, _, resp = other.request(verb, path, body)
            self.assertEqual(status, 404, (verb, path, resp))
        listed = other.request("GET", "/api/alerts")[2].get("alerts", [])
        self.assertNotIn(a["alertId"], [x["alertId"] for x in listed])
        # a channel id of account A named by a rule of B: NOT_FOUND naming it
        hook_id, _ = self.hook("/foreign")
        self.req("POST", "/api/metrics", {"name": m, "formula": "count(x)"}, rest=other)
        status, _, resp = other.request("POST", "/api/alerts", dict(
            SPEC_ALERT, metric=m, channels=[hook_id]))
        self.assertEqual(status, 404, resp)
        self.assertIn("channels[0]", resp["message"])
        self.req("GET", "/api/alerts/" + a["alertId"])

    def test_groups_past_the_instance_limit_share_one_other_instance(self):
        name = "d_" + uuid.uuid4().hex[:8]
        self.req("POST", "/api/metrics", {"name": name, "formula": "count(ev_%s)" % name,
                                          "dimensions": ["g"]})
        rules = [self.alert(name, [], window="1m", threshold=t) for t in (1, 2)]
        evs = [{"eventType": "app", "eventName": "ev_" + name, "properties": {"g": "g%d" % i}}
               for i in range(6)]
        self.req("POST", "/api/events/batch", {"events": evs})
        a = rules[0]
        self.assertTrue(wait_for(lambda: len(self.history(a["alertId"], "?state=firing")) == 4))
        firing = self.history(a["alertId"], "?state=firing")
        plain = sorted(e["value"] for e in firing if e["group"]["g"] in
                       {"g%d" % i for i in range(6)})
        self.assertEqual(plain, [1, 1, 1])
        other = [e for e in firing if e["group"]["g"] not in {"g%d" % i for i in range(6)}]
        self.assertEqual([e["value"] for e in other], [3])
        self.assertEqual(self.req("GET", "/api/alerts/" + a["alertId"])["instanceStates"],
                         {"firing": 4})
        # the second rule over the same window: only the (other) instance reaches 2
        b = rules[1]
        self.assertTrue(wait_for(lambda: self.history(b["alertId"], "?state=firing")))
        time.sleep(0.2)
        firing = self.history(b["alertId"], "?state=firing")
        self.assertEqual([e["value"] for e in firing], [3])

    def test_history_filters_and_paging(self):
        m = self.metric()
        a = self.alert(m, [], window="1s", cooldown=0)
        for round_ in range(2):
            self.track(m, 2)
            self.assertTrue(wait_for(
                lambda: len(self.history(a["alertId"], "?state=resolved")) == round_ + 1))
        entries = self.history(a["alertId"])
        self.assertEqual([e["state"] for e in entries],
                         ["resolved", "firing", "resolved", "firing"])
        paged, token = [], ""
        while True:
            resp = self.req("GET", "/api/alerts/%s/history?pageSize=1%s" % (
                a["alertId"], "&pageToken=" + token if token else ""))
            paged += resp.get("entries", [])
            token = resp.get("nextPageToken", "")
            if not token:
                break
        self.assertEqual(paged, entries)
        second_fire = entries[1]["at"]
        since = self.history(a["alertId"], "?from=" + second_fire)
        self.assertEqual([e["state"] for e in since], ["resolved", "firing"])
        until = self.history(a["alertId"], "?to=" + second_fire)
        self.assertEqual([e["state"] for e in until], ["resolved", "firing"])
        self.assertEqual(until, entries[2:])
        status, _, resp = self.rest.request(
            "GET", "/api/alerts/%s/history?pageToken=nope" % a["alertId"])
        self.assertEqual(status, 400, resp)
        status, _, resp = self.rest.request(
            "GET", "/api/alerts/%s/history?state=exploded" % a["alertId"])
        self.assertEqual(status, 400, resp)


class AlertNotifyCrashTest(NotifyBase):
    """kill -9 with notifications pending (the receiver down): after the
    restart every idempotency key arrives, and the firing is not notified
    again."""

    SERVER_ENV = dict(NOTIFY_ENV, NOTIFY_MAX_ATTEMPTS="50", NOTIFY_BACKOFF_INITIAL="300ms",
                      NOTIFY_BACKOFF_MAX="300ms")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = TokenRest(cls.rest_port, ACCOUNT_A)

    def test_pending_notifications_survive_kill_9(self):
        port = harness.free_port()
        hooks = []
        for path in ("/k1", "/k2"):
            ch = self.req("POST", "/api/channels", {
                "name": "crash " + path,
                "webhook": {"url": "http://127.0.0.1:%d%s" % (port, path)}})
            hooks.append(ch["channelId"])
        m = self.metric()
        a = self.alert(m, hooks, window="10m")
        self.track(m, 2)
        firing = wait_for(lambda: self.history(a["alertId"], "?state=firing"))
        self.assertTrue(firing)
        keys = {"%s.%s.%s" % (a["alertId"], firing[0]["entryId"], h) for h in hooks}
        self.assertTrue(wait_for(lambda: self.history(a["alertId"], "?state=retry")))
        self.server.kill()
        receiver = Receiver(port)
        self.addCleanup(receiver.stop)
        self.server.start()
        self.rest = TokenRest(self.server.http_port, ACCOUNT_A)
        for k in keys:
            receiver.wait_for(lambda r, k=k: r[1].get("idempotency-key") == k)
        time.sleep(0.5)
        with receiver.cond:
            seen = {r[1]["idempotency-key"] for r in receiver.requests}
        self.assertEqual(seen, keys)
        self.assertEqual(len(self.history(a["alertId"], "?state=firing")), 1)
        got = self.req("GET", "/api/alerts/" + a["alertId"])
        self.assertEqual(got["instanceStates"], {"firing": 1})


if __name__ == "__main__":
    unittest.main()
