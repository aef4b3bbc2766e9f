"""Rate limits per account (GCRA) over REST and gRPC: 429 with the exact
Retry-After and the RateLimit-* headers on allowed and refused answers,
recovery after the interval, batches charged per event, IngestEvents
rejecting each event of a batch over the limit while the stream stays open,
google.rpc.RetryInfo on gRPC, per-key and per-account overrides, health and
metrics never limited, and bad limits refused naming the variable. Small
limits keep it quick."""

import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import grpc

import authkit
from authkit import rest_call
import harness
from test_config import run_once

TIMEOUT_S = 10


def token(account, roles=("admin",)):
    return authkit.hs256(authkit.claims(account=account, roles=roles))


def headers(account, roles=("admin",)):
    return authkit.bearer(token(account, roles))


def md(account, roles=("admin",)):
    return (("authorization", "Bearer " + token(account, roles)),)


def event_json(name="rl"):
    return {"eventName": name, "eventType": "user"}


class RateLimitTest(harness.ServerTestCase):
    SERVER_ENV = {
        "JWT_HS256_SECRET": authkit.SECRET,
        # Every account: 3 at once, then one every 20 s.
        "RATE_LIMIT_DEFAULT": "3/m burst 3",
        "RATE_LIMIT_ACCOUNTS": "fast=5/s burst 5, batch=10/m burst 10, stream=1/m burst 6, "
                               "unlimited=off",
        "RATE_LIMIT_ROLES": "viewer=1/h burst 1",
    }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb, grpc_mod = cls.ns.analytics["events"]
        cls.stub = grpc_mod.EventServiceStub(cls.channel)

    def track_rest(self, account, roles=("admin",)):
        return rest_call(self.rest_port, "POST", "/api/events", headers=headers(account, roles),
                         body=json.dumps(event_json()))

    def batch_rest(self, account, n):
        return rest_call(self.rest_port, "POST", "/api/events/batch", headers=headers(account),
                         body=json.dumps({"events": [event_json() for _ in range(n)]}))

    def test_429_with_exact_retry_after_and_headers(self):
        for i in range(3):
            code, text, h = self.track_rest("t429")
            self.assertEqual(code, "OK", text)
            self.assertEqual(h.get("ratelimit-limit"), "3")
            self.assertEqual(h.get("ratelimit-remaining"), str(2 - i))
            # Whole again after (i + 1) intervals of 20 s, rounded up.
            self.assertEqual(h.get("ratelimit-reset"), str(20 * (i + 1)))
            self.assertNotIn("retry-after", h)
        code, text, h = self.track_rest("t429")
        self.assertEqual(code, "RESOURCE_EXHAUSTED", text)
        # One interval (20 s) less the few ms spent: 20 once rounded up.
        self.assertEqual(h.get("retry-after"), "20")
        self.assertEqual(h.get("ratelimit-limit"), "3")
        self.assertEqual(h.get("ratelimit-remaining"), "0")
        self.assertEqual(h.get("ratelimit-reset"), "60")
        body = json.loads(text)
        self.assertEqual(body["code"], 8)
        self.assertIn("retry after 20 s", body["message"])
        info = [d for d in body["details"]
                if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
        self.assertEqual(len(info), 1)
        delay = float(info[0]["retryDelay"].rstrip("s"))
        self.assertTrue(19 < delay <= 20, delay)
        # Another account is not affected.
        self.assertEqual(self.track_rest("t429-other")[0], "OK")

    def test_recovery_after_the_interval(self):
        for _ in range(5):
            self.assertEqual(self.track_rest("fast")[0], "OK")
        code, _, h = self.track_rest("fast")
        self.assertEqual(code, "RESOURCE_EXHAUSTED")
        self.assertEqual(h.get("retry-after"), "1")  # 200 ms, rounded up
        time.sleep(0.25)
        code, _, h = self.track_rest("fast")
        self.assertEqual(code, "OK")
        self.assertEqual(h.get("ratelimit-remaining"), "0")

    def test_batches_are_charged_per_event(self):
        code, text, h = self.batch_rest("batch", 4)
        self.assertEqual(code, "OK", text)
        self.assertEqual(h.get("ratelimit-remaining"), "6")
        # 7 more do not fit (the refused batch still spends its base cost of 1).
        code, text, h = self.batch_rest("batch", 7)
        self.assertEqual(code, "RESOURCE_EXHAUSTED", text)
        self.assertEqual(h.get("retry-after"), "6")  # 1 unit at 6 s
        code, text, h = self.batch_rest("batch", 5)
        self.assertEqual(code, "OK", text)
        self.assertEqual(h.get("ratelimit-remaining"), "0")

    def test_grpc_resource_exhausted_carries_retry_info(self):
        req = self.pb.TrackEventRequest(event=self.pb.Event(event_name="g", event_type="user"))
        for _ in range(3):
            self.stub.TrackEvent(req, metadata=md("grpc"), timeout=TIMEOUT_S)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.TrackEvent(req, metadata=md("grpc"), timeout=TIMEOUT_S)
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("retry after 20 s", err.details())
        details = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
        self.assertIsNotNone(details)
        st = self.ns.status_pb2.Status()
        st.ParseFromString(details)
        self.assertEqual(st.code, 8)
        infos = []
        for d in st.details:
            ri = self.ns.error_details_pb2.RetryInfo()
            if d.Unpack(ri):
                infos.append(ri)
        self.assertEqual(len(infos), 1)
        delay = infos[0].retry_delay.seconds + infos[0].retry_delay.nanos / 1e9
        self.assertTrue(19 < delay <= 20, delay)

    def test_ingest_stream_rejects_each_event_over_the_limit_and_stays_open(self):
        R = self.pb.EventResult
        requests = queue.Queue()

        def gen():
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        def batch(bid, n):
            return self.pb.IngestRequest(batch_id=bid, events=[
                self.pb.Event(event_name="s", event_type="user") for _ in range(n)])

        call = self.stub.IngestEvents(gen(), metadata=md("stream"), timeout=TIMEOUT_S)
        it = iter(call)
        # Budget 6: opening the stream spends 1, then one per event.
        requests.put(batch("b1", 4))
        r = next(it)
        self.assertEqual((r.batch_id, r.accepted, r.rejected), ("b1", 4, 0))
        requests.put(batch("b2", 4))
        r = next(it)
        self.assertEqual((r.batch_id, r.accepted, r.rejected), ("b2", 0, 4))
        for res in r.results:
            self.assertEqual(res.status, R.REJECTED)
            self.assertEqual(res.violations[0].field, "rate_limit")
            self.assertRegex(res.violations[0].description, r"retry after \d+ s")
        requests.put(batch("b3", 1))
        r = next(it)
        self.assertEqual((r.batch_id, r.accepted, r.rejected), ("b3", 1, 0))
        requests.put(None)
        self.assertEqual(list(it), [])
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_per_role_and_per_account_overrides(self):
        # viewer: 1 an hour; an account set to off: never limited.
        code, _, h = rest_call(self.rest_port, "GET", "/api/metrics",
                               headers=headers("roles", ("viewer",)))
        self.assertEqual((code, h.get("ratelimit-limit")), ("OK", "1"))
        code, _, h = rest_call(self.rest_port, "GET", "/api/metrics",
                               headers=headers("roles", ("viewer",)))
        self.assertEqual(code, "RESOURCE_EXHAUSTED")
        self.assertEqual(h.get("retry-after"), "3600")
        for _ in range(10):
            code, _, h = self.track_rest("unlimited")
            self.assertEqual(code, "OK")
            self.assertNotIn("ratelimit-limit", h)

    def test_health_and_metrics_are_not_limited(self):
        for _ in range(10):
            code, _, h = rest_call(self.rest_port, "GET", "/health")
            self.assertEqual(code, "OK")
            self.assertNotIn("ratelimit-limit", h)
            self.assertEqual(rest_call(self.rest_port, "GET", "/metrics")[0], "OK")
            resp = self.health.Check(self.ns.health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
            self.assertEqual(resp.status, self.ns.health_pb2.HealthCheckResponse.SERVING)


class ShippedDefaultTest(harness.ServerTestCase):
    """RATE_LIMIT_DEFAULT unset (auto): 10000/s burst 20000 per account once a
    credential source is configured."""
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET}

    def test_the_shipped_default_limits_every_account(self):
        code, text, h = rest_call(self.rest_port, "POST", "/api/events",
                                  headers=headers("shipped"), body=json.dumps(event_json()))
        self.assertEqual(code, "OK", text)
        self.assertEqual(h.get("ratelimit-limit"), "20000")
        self.assertEqual(h.get("ratelimit-remaining"), "19999")
        # A batch of 1000 events costs 1000 of it.
        code, text, h = self.batch("shipped", 1000)
        self.assertEqual(code, "OK", text)
        self.assertEqual(h.get("ratelimit-limit"), "20000")
        self.assertLess(int(h.get("ratelimit-remaining")), 19500)  # less refill meanwhile

    def batch(self, account, n):
        return rest_call(self.rest_port, "POST", "/api/events/batch", headers=headers(account),
                         body=json.dumps({"events": [event_json() for _ in range(n)]}))


class ProtectedModeDefaultTest(harness.ServerTestCase):
    """RATE_LIMIT_DEFAULT unset (auto) in protected mode (loopback only): no limit."""

    def test_protected_mode_is_not_limited_by_default(self):
        code, text, h = rest_call(self.rest_port, "POST", "/api/events",
                                  body=json.dumps(event_json()))
        self.assertEqual(code, "OK", text)
        self.assertNotIn("ratelimit-limit", h)


class RemoteBridgeRateLimitTest(harness.ServerTestCase):
    """analytics-restbridge --upstream passes the server's refusal on: 429
    with Retry-After and RetryInfo (the RateLimit-* figures stay with the
    server's own REST port)."""

    BRIDGE = "remote"
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET, "RATE_LIMIT_DEFAULT": "3/m burst 3"}

    def test_429_with_retry_after_through_the_remote_bridge(self):
        for _ in range(3):
            code, text, _ = rest_call(self.rest_port, "POST", "/api/events",
                                      headers=headers("remote"), body=json.dumps(event_json()))
            self.assertEqual(code, "OK", text)
        code, text, h = rest_call(self.rest_port, "POST", "/api/events",
                                  headers=headers("remote"), body=json.dumps(event_json()))
        self.assertEqual(code, "RESOURCE_EXHAUSTED", text)
        self.assertEqual(h.get("retry-after"), "20")
        info = [d for d in json.loads(text)["details"]
                if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
        self.assertEqual(len(info), 1)


class PerKeyLimitTest(harness.ServerTestCase):
    """A key with a limit of its own draws on its own budget, not its
    account's; the account's other keys share the account's."""

    @classmethod
    def setUpClass(cls):
        # The keys exist before the server starts, so the id can be configured.
        cls.workdir = tempfile.mkdtemp(prefix="ana-rl-")
        data_dir = os.path.join(cls.workdir, "data")
        os.mkdir(data_dir)
        env = harness.base_env({"DATA_DIR": data_dir})
        keys = []
        for role in ("ingest", "ingest", "admin"):
            p = subprocess.run([harness.require_binary(), "keys", "create", "--account", "keyed",
                                "--role", role], env=env, capture_output=True, text=True,
                               timeout=TIMEOUT_S)
            assert p.returncode == 0, p.stderr
            keys.append(p.stdout.strip().splitlines()[-1].strip())
        cls.own, cls.shared, cls.admin = keys
        key_id, admin_id = (re.match(r"^ana_([0-9A-Za-z]{12})_", k).group(1)
                            for k in (cls.own, cls.admin))
        # The admin key (creating keys here) is not limited at all.
        cls.SERVER_ENV = {"DATA_DIR": data_dir, "RATE_LIMIT_DEFAULT": "3/m burst 3",
                          "RATE_LIMIT_KEYS": "%s=1/m burst 6, %s=off" % (key_id, admin_id)}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def track(self, key):
        return rest_call(self.rest_port, "POST", "/api/events", headers={"X-Api-Key": key},
                         body=json.dumps(event_json()))

    def test_a_key_override_has_its_own_budget(self):
        for i in range(6):
            code, text, h = self.track(self.own)
            self.assertEqual(code, "OK", text)
            self.assertEqual(h.get("ratelimit-limit"), "6")
        self.assertEqual(self.track(self.own)[0], "RESOURCE_EXHAUSTED")
        # The account's budget (the default, 3) is untouched by the key's.
        for i in range(3):
            code, _, h = self.track(self.shared)
            self.assertEqual((code, h.get("ratelimit-limit")), ("OK", "3"))
        code, _, h = self.track(self.shared)
        self.assertEqual((code, h.get("retry-after")), ("RESOURCE_EXHAUSTED", "20"))

    def create_key(self, **body):
        code, text, _ = rest_call(self.rest_port, "POST", "/api/keys",
                                  headers={"X-Api-Key": self.admin},
                                  body=json.dumps(dict({"name": "k", "role": "ingest"}, **body)))
        return code, json.loads(text)

    def test_a_key_created_with_its_own_rate_limit(self):
        code, body = self.create_key(rateLimit="2/m burst 2")
        self.assertEqual(code, "OK", body)
        self.assertEqual(body["key"]["rateLimit"], "2/m burst 2")
        key = body["apiKey"]
        for _ in range(2):
            code, _, h = self.track(key)
            self.assertEqual((code, h.get("ratelimit-limit")), ("OK", "2"))
        code, _, h = self.track(key)
        self.assertEqual((code, h.get("retry-after")), ("RESOURCE_EXHAUSTED", "30"))
        code, text, _ = rest_call(self.rest_port, "GET", "/api/keys/" + body["key"]["keyId"],
                                  headers={"X-Api-Key": self.admin})
        self.assertEqual(json.loads(text)["rateLimit"], "2/m burst 2")

    def test_a_bad_key_rate_limit_is_refused_naming_the_field(self):
        code, body = self.create_key(rateLimit="2/d")
        self.assertEqual(code, "INVALID_ARGUMENT")
        fields = [v["field"] for d in body["details"] for v in d.get("fieldViolations", [])]
        self.assertEqual(fields, ["rateLimit"])


class ClientRetryInfoTest(harness.ServerTestCase):
    """libanalytics' tracker waits as long as RetryInfo says, then delivers:
    one retry, where its own backoff (50, 100, 200 ms...) would take several."""

    # Loopback without credentials: the default account, one call per 500 ms.
    SERVER_ENV = {"RATE_LIMIT_DEFAULT": "2/s burst 1"}

    def test_tracker_waits_retry_info_then_delivers(self):
        example = os.path.join(os.path.dirname(os.path.abspath(harness.require_binary())),
                               "..", "client", "examples", "track_event")
        if not os.path.exists(example):
            self.skipTest("client examples not built")
        code, _, h = rest_call(self.rest_port, "POST", "/api/events",
                               body=json.dumps(event_json()))
        self.assertEqual((code, h.get("ratelimit-remaining")), ("OK", "0"))
        t0 = time.monotonic()
        p = subprocess.run([example, self.server.target], capture_output=True, text=True,
                           timeout=TIMEOUT_S)
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("accepted 1", p.stdout)
        self.assertIn("retries 1", p.stdout)
        self.assertGreater(took, 0.3)


class BadLimitsTest(unittest.TestCase):
    """A bad limit stops the server at start with the variable named."""

    def test_bad_limits_are_refused_naming_the_variable(self):
        for var, value in (("RATE_LIMIT_DEFAULT", "10/x"),
                           ("RATE_LIMIT_ACCOUNTS", "acme=10/s burst"),
                           ("RATE_LIMIT_ROLES", "boss=10/s")):
            rc, out, err, _ = run_once({var: value})
            self.assertNotEqual(rc, 0, (var, value))
            self.assertIn(var, out + err)


if __name__ == "__main__":
    unittest.main()
