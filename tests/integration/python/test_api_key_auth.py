"""API keys as credentials: X-Api-Key (gRPC metadata x-api-key) or
Authorization: Bearer ana_... on gRPC, REST and WebSocket, against a server
whose only credential source is its API keys. The key's role is enforced,
its account scopes every object, revocation takes effect at once through the
server and within the documented bound offline, any bad key is
UNAUTHENTICATED "invalid API key" with nothing more, and the first key ends
protected mode (the last revoked brings it back)."""

import json
import re
import subprocess
import time


import authkit
from authkit import grpc_call, rest_call, ws_call
import harness

TIMEOUT_S = 10
A, B = "keys-tenant-a", "keys-tenant-b"
KEY_RE = re.compile(r"^ana_([0-9A-Za-z]{12})_[0-9A-Za-z]{43}$")
# Keys created or revoked by another process are seen within this (the
# count is re-read every second, a cached key is trusted for a second).
OFFLINE_BOUND_S = 1.0
SLACK_S = 1.0

TRACK = "/analytics.v1.EventService/TrackEvent"
LIST_METRICS = "/analytics.v1.MetricService/ListMetrics"
CREATE_METRIC = "/analytics.v1.MetricService/CreateMetric"


def offline(server, *args):
    """Runs `analyticsd keys ARGS` on the server's DATA_DIR; returns stdout."""
    env = harness.base_env({"DATA_DIR": server.data_dir})
    p = subprocess.run([server.binary, "keys"] + list(args), env=env, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
    if p.returncode != 0:
        raise AssertionError("analyticsd keys %s: %s" % (" ".join(args), p.stderr))
    return p.stdout.strip()


def health_auth(port):
    code, text, _ = rest_call(port, "GET", "/health")
    return json.loads(text).get("auth")


def wait_for(pred, limit_s):
    """Polls pred until true; returns the seconds it took, or None."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if pred():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


class KeyBootstrapTest(harness.ServerTestCase):
    """Protected mode ends with the first key and comes back with the last
    one revoked, through the API and offline."""

    SERVER_ENV = {"DEFAULT_ACCOUNT_ID": A}

    def track(self, md=()):
        ev = self.epb.Event(event_name="boot", event_type="user")
        return grpc_call(self.channel, TRACK,
                         self.epb.TrackEventRequest(event=ev).SerializeToString(), md)[0]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.epb, _ = cls.ns.analytics["events"]

    def test_first_key_ends_protected_mode(self):
        port = self.rest_port
        self.assertEqual(health_auth(port), "protected-mode")
        self.assertEqual(self.track(), "OK")
        # The bootstrap: an admin key for the default account, created from
        # loopback while protected mode still serves it as admin.
        code, text, _ = rest_call(port, "POST", "/api/keys", body=json.dumps(
            {"name": "boot", "role": "admin"}))
        self.assertEqual(code, "OK", text)
        key = json.loads(text)["apiKey"]
        key_id = KEY_RE.match(key).group(1)
        # At once: every peer, loopback included, must now authenticate.
        self.assertEqual(health_auth(port), "required")
        self.assertEqual(self.track(), "UNAUTHENTICATED")
        code, text, hdrs = rest_call(port, "GET", "/api/keys")
        self.assertEqual(code, "UNAUTHENTICATED", text)
        self.assertIn("www-authenticate", hdrs)
        code, _, _ = ws_call(port, "/ws/analytics")
        self.assertEqual(code, "UNAUTHENTICATED")
        # The key works, and is the key's principal.
        self.assertEqual(self.track([("x-api-key", key)]), "OK")
        code, text, _ = rest_call(port, "POST", "/api/keys", {"X-Api-Key": key},
                                  json.dumps({"name": "second", "role": "ingest"}))
        self.assertEqual(code, "OK", text)
        second = json.loads(text)["key"]
        self.assertEqual(second["createdBy"], "key:" + key_id)
        self.assertEqual(second["accountId"], A)
        # Revoking every key brings protected mode back.
        for kid in (second["keyId"], key_id):
            code, text, _ = rest_call(port, "DELETE", "/api/keys/" + kid, {"X-Api-Key": key})
            self.assertEqual(code, "OK", text)
        self.assertEqual(health_auth(port), "protected-mode")
        self.assertEqual(self.track(), "OK")

        # Offline, while the server runs: seen within the bound.
        key = offline(self.server, "create", "--account", A, "--role", "admin")
        took = wait_for(lambda: health_auth(port) == "required", OFFLINE_BOUND_S + SLACK_S)
        self.assertIsNotNone(took, "a key created offline did not end protected mode")
        self.assertEqual(self.track(), "UNAUTHENTICATED")
        self.assertEqual(self.track([("authorization", "Bearer " + key)]), "OK")
        offline(self.server, "revoke", KEY_RE.match(key).group(1))
        took = wait_for(lambda: health_auth(port) == "protected-mode", OFFLINE_BOUND_S + SLACK_S)
        self.assertIsNotNone(took, "revoking the last key offline did not restore protected mode")
        self.assertEqual(self.track(), "OK")


class KeyAuthTest(harness.ServerTestCase):

    SERVER_ENV = {"DEFAULT_ACCOUNT_ID": A}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.epb, _ = cls.ns.analytics["events"]
        cls.mpb, _ = cls.ns.analytics["metrics"]
        cls.kpb, _ = cls.ns.analytics["keys"]
        cls.keys = {}
        for account, role in ((A, "admin"), (A, "ingest"), (A, "viewer"), (B, "admin")):
            cls.keys[(account, role)] = offline(cls.server, "create", "--account", account,
                                                "--role", role)
        port = cls.rest_port
        if wait_for(lambda: health_auth(port) == "required", OFFLINE_BOUND_S + SLACK_S) is None:
            raise AssertionError("keys created offline were not seen")
        admin = cls.keys[(A, "admin")]
        code, text, _ = rest_call(port, "POST", "/api/metrics", {"X-Api-Key": admin},
                                  json.dumps({"name": "a-metric", "formula": "count(x)"}))
        if code != "OK":
            raise AssertionError("CreateMetric with A's admin key: %s %s" % (code, text))
        cls.metric_id = json.loads(text)["metricId"]

    def track_payload(self):
        ev = self.epb.Event(event_name="keyed", event_type="user")
        return self.epb.TrackEventRequest(event=ev).SerializeToString()

    def grpc(self, path, md, payload=b""):
        return grpc_call(self.channel, path, payload, md)

    def test_a_key_authenticates_over_grpc_rest_and_websocket(self):
        ingest = self.keys[(A, "ingest")]
        for md in ([("x-api-key", ingest)], [("authorization", "Bearer " + ingest)]):
            with self.subTest(grpc=md[0][0]):
                code, out = self.grpc(TRACK, md, self.track_payload())
                self.assertEqual(code, "OK", out)
        body = json.dumps({"eventName": "keyed", "eventType": "user"})
        for h in ({"X-Api-Key": ingest}, {"Authorization": "Bearer " + ingest}):
            with self.subTest(rest=list(h)[0]):
                code, text, _ = rest_call(self.rest_port, "POST", "/api/events", h, body)
                self.assertEqual(code, "OK", text)
        admin = self.keys[(A, "admin")]
        code, frame, _ = ws_call(self.rest_port, "/ws/metrics/" + self.metric_id,
                                 headers={"X-Api-Key": admin})
        self.assertEqual(code, "OK", frame)
        code, frame, _ = ws_call(self.rest_port, "/ws/metrics/" + self.metric_id,
                                 headers={"X-Api-Key": admin[:-1] + "x"})
        self.assertEqual(code, "UNAUTHENTICATED", frame)

    def test_the_keys_role_is_enforced(self):
        ingest, viewer = self.keys[(A, "ingest")], self.keys[(A, "viewer")]
        code, _ = self.grpc(LIST_METRICS, [("x-api-key", ingest)])
        self.assertEqual(code, "PERMISSION_DENIED")
        code, text, _ = rest_call(self.rest_port, "GET", "/api/metrics/" + self.metric_id,
                                  {"X-Api-Key": ingest})
        self.assertEqual(code, "PERMISSION_DENIED", text)
        code, _ = self.grpc(LIST_METRICS, [("x-api-key", viewer)])
        self.assertEqual(code, "OK")
        create = self.mpb.CreateMetricRequest(metric=self.mpb.Metric(name="v", formula="count(x)"))
        code, _ = self.grpc(CREATE_METRIC, [("x-api-key", viewer)], create.SerializeToString())
        self.assertEqual(code, "PERMISSION_DENIED")
        code, _ = self.grpc(TRACK, [("x-api-key", viewer)], self.track_payload())
        self.assertEqual(code, "PERMISSION_DENIED")
        code, text, _ = rest_call(self.rest_port, "POST", "/api/keys", {"X-Api-Key": viewer},
                                  json.dumps({"role": "admin"}))
        self.assertEqual(code, "PERMISSION_DENIED", text)

    def test_another_accounts_key_sees_nothing_of_a(self):
        b = self.keys[(B, "admin")]
        get = self.mpb.GetMetricRequest(metric_id=self.metric_id).SerializeToString()
        code, details = self.grpc("/analytics.v1.MetricService/GetMetric", [("x-api-key", b)],
                                  get)
        self.assertEqual(code, "NOT_FOUND", details)
        code, text, _ = rest_call(self.rest_port, "GET", "/api/metrics/" + self.metric_id,
                                  {"X-Api-Key": b})
        self.assertEqual(code, "NOT_FOUND", text)
        code, text, _ = rest_call(self.rest_port, "GET", "/api/metrics", {"X-Api-Key": b})
        self.assertEqual(code, "OK", text)
        self.assertNotIn(self.metric_id, text)
        # Naming A's account does not lend B's key to it.
        code, _ = self.grpc(LIST_METRICS, [("x-api-key", b), ("x-account-id", A)])
        self.assertEqual(code, "PERMISSION_DENIED")

    def test_a_revoked_key_stops_at_once(self):
        admin = self.keys[(A, "admin")]
        code, text, _ = rest_call(self.rest_port, "POST", "/api/keys", {"X-Api-Key": admin},
                                  json.dumps({"role": "ingest"}))
        self.assertEqual(code, "OK", text)
        created = json.loads(text)
        key, key_id = created["apiKey"], created["key"]["keyId"]
        md = [("x-api-key", key)]
        self.assertEqual(self.grpc(TRACK, md, self.track_payload())[0], "OK")
        code, text, _ = rest_call(self.rest_port, "DELETE", "/api/keys/" + key_id,
                                  {"X-Api-Key": admin})
        self.assertEqual(code, "OK", text)
        took = wait_for(lambda: self.grpc(TRACK, md, self.track_payload())[0] ==
                        "UNAUTHENTICATED", 1.0)
        self.assertIsNotNone(took, "a key revoked through the server still works after 1 s")
        self.assertLess(took, 0.2)

    def test_a_key_revoked_offline_stops_within_the_bound(self):
        key = offline(self.server, "create", "--account", A, "--role", "ingest")
        md = [("x-api-key", key)]
        self.assertIsNotNone(wait_for(lambda: self.grpc(TRACK, md, self.track_payload())[0] ==
                                      "OK", OFFLINE_BOUND_S + SLACK_S))
        offline(self.server, "revoke", KEY_RE.match(key).group(1))
        took = wait_for(lambda: self.grpc(TRACK, md, self.track_payload())[0] ==
                        "UNAUTHENTICATED", OFFLINE_BOUND_S + SLACK_S)
        self.assertIsNotNone(took, "a key revoked offline still works")

    def test_bad_keys_of_every_shape_are_unauthenticated_without_detail(self):
        good = self.keys[(A, "admin")]
        key_id = KEY_RE.match(good).group(1)
        shapes = {
            "empty": "",
            "prefix only": "ana_",
            "short": "ana_abc_def",
            "one char short": good[:-1],
            "one char long": good + "A",
            "no separator": good.replace("_", "", 2),
            "bad chars": good[:20] + "-" + good[21:],
            "unknown id": "ana_" + "Z" * 12 + good[16:],
            "wrong secret": "ana_%s_%s" % (key_id, "A" * 43),
            "other prefix": "sk_" + good[4:],
            "huge": "ana_" + "A" * 6000,
            "spaces": "ana_ " + good[5:],
        }
        for name, key in shapes.items():
            for how, md in (("x-api-key", [("x-api-key", key)]),
                            ("bearer", [("authorization", "Bearer " + key)])):
                if how == "bearer" and not key.startswith("ana_"):
                    continue  # not a key: the bearer token goes to the JWT source
                with self.subTest(shape=name, via=how, transport="grpc"):
                    code, details = self.grpc(LIST_METRICS, md)
                    self.assertEqual((code, details), ("UNAUTHENTICATED", "invalid API key"))
                with self.subTest(shape=name, via=how, transport="rest"):
                    h = {("X-Api-Key" if how == "x-api-key" else "Authorization"): md[0][1]}
                    code, text, _ = rest_call(self.rest_port, "GET", "/api/metrics", h)
                    self.assertEqual(code, "UNAUTHENTICATED", text)
                    self.assertEqual(json.loads(text)["message"], "invalid API key")
                    self.assertNotIn(key_id, text) if name == "wrong secret" else None

    def test_a_jwt_and_a_key_together_are_refused(self):
        key = self.keys[(A, "admin")]
        token = authkit.hs256(authkit.claims(account=A))
        for md in ([("authorization", "Bearer " + token), ("x-api-key", key)],
                   [("authorization", "Bearer " + key), ("x-api-key", key)]):
            code, details = self.grpc(LIST_METRICS, md)
            self.assertEqual(code, "INVALID_ARGUMENT", details)
            self.assertNotIn(key, details)
        code, text, _ = rest_call(self.rest_port, "GET", "/api/metrics",
                                  {"X-Api-Key": key, "Authorization": "Bearer " + token})
        self.assertEqual(code, "INVALID_ARGUMENT", text)


if __name__ == "__main__":
    import unittest
    unittest.main()
