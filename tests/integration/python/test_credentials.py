"""Credentials pass through every client: libanalytics (through ctypes, in a
child process), analyticsctl and analytics-restbridge --upstream send the
caller's token, API key and account as gRPC metadata to a grpcio server that records what
it receives; analyticsctl token mints an HS256 JWT that verifies; the CORS
preflight allows the credential headers.

The recording server answers the health check SERVING (so the remote bridge
gets ready) and every other call UNAUTHENTICATED, which also shows how each
client reports that status."""

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import unittest
from concurrent import futures

import grpc
import websockets

import harness

HEALTH = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
TIMEOUT_S = 10


class Recorder(grpc.GenericRpcHandler):
    """Any method: records (method, metadata) and answers UNAUTHENTICATED."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def _record(self, method, ctx):
        with self.lock:
            self.calls.append((method, list(ctx.invocation_metadata())))

    def service(self, details):
        method = details.method

        def unary(request, ctx):
            if method == HEALTH:
                return SERVING
            self._record(method, ctx)
            ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "recorded")

        def stream(request, ctx):
            self._record(method, ctx)
            ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "recorded")
            yield b""

        if "/Stream" in method:
            return grpc.unary_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(unary)

    def clear(self):
        with self.lock:
            self.calls.clear()

    def last(self, timeout=TIMEOUT_S):
        """The metadata of the last recorded call as a dict (keys lower-case)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.calls:
                    method, md = self.calls[-1]
                    return method, {k: v for k, v in md}
            time.sleep(0.02)
        raise AssertionError("the recording server saw no call")


def build_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(harness.binary_path())))


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class RecorderTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.recorder = Recorder()
        cls.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        cls.grpc_server.add_generic_rpc_handlers((cls.recorder,))
        port = cls.grpc_server.add_insecure_port("127.0.0.1:0")
        cls.grpc_server.start()
        cls.target = "127.0.0.1:%d" % port

    @classmethod
    def tearDownClass(cls):
        cls.grpc_server.stop(None)

    def setUp(self):
        self.recorder.clear()


class AnalyticsctlCredentialsTest(RecorderTestCase):
    """analyticsctl --token/--api-key/--account and $ANALYTICS_*."""

    def ctl(self, *args, env=None):
        e = harness.base_env({k: None for k in ("ANALYTICS_TOKEN", "ANALYTICS_API_KEY",
                                                 "ANALYTICS_ACCOUNT", "ANALYTICS_TARGET")})
        e.update(env or {})
        return subprocess.run([os.path.join(build_dir(), "client", "cli", "analyticsctl"),
                               "--target", self.target] + list(args),
                              env=e, capture_output=True, text=True, timeout=TIMEOUT_S)

    def test_token_and_account_flags_are_sent_as_metadata(self):
        r = self.ctl("--token", "tok-1", "--account", "acme", "metrics", "list")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        _, md = self.recorder.last()
        self.assertEqual(md.get("authorization"), "Bearer tok-1")
        self.assertEqual(md.get("x-account-id"), "acme")
        self.assertNotIn("x-api-key", md)

    def test_api_key_flag_is_sent_as_x_api_key(self):
        r = self.ctl("--api-key", "ana_k1_secret", "metrics", "list")
        self.assertEqual(r.returncode, 1, r.stderr)
        _, md = self.recorder.last()
        self.assertEqual(md.get("x-api-key"), "ana_k1_secret")
        self.assertNotIn("authorization", md)

    def test_environment_is_used_and_flags_win(self):
        env = {"ANALYTICS_TOKEN": "env-tok", "ANALYTICS_ACCOUNT": "env-acct"}
        self.ctl("metrics", "list", env=env)
        _, md = self.recorder.last()
        self.assertEqual(md.get("authorization"), "Bearer env-tok")
        self.assertEqual(md.get("x-account-id"), "env-acct")
        self.recorder.clear()
        self.ctl("--api-key", "ana_k2_s", "--account", "flag-acct", "metrics", "list", env=env)
        _, md = self.recorder.last()
        self.assertEqual(md.get("x-api-key"), "ana_k2_s")
        self.assertNotIn("authorization", md)  # the flag's credential replaces the env's
        self.assertEqual(md.get("x-account-id"), "flag-acct")
        r = self.ctl("metrics", "list", env={"ANALYTICS_API_KEY": "ana_k3_s"})
        _, md = self.recorder.last()
        self.assertEqual(md.get("x-api-key"), "ana_k3_s")

    def test_token_and_api_key_together_are_a_usage_error(self):
        r = self.ctl("--token", "t", "--api-key", "ana_k_s", "metrics", "list")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not both", r.stderr)


class AnalyticsctlTokenTest(unittest.TestCase):
    """analyticsctl token mints an HS256 JWT that verifies with the secret."""

    def ctl(self, *args):
        return subprocess.run([os.path.join(build_dir(), "client", "cli", "analyticsctl")]
                              + list(args), capture_output=True, text=True, timeout=TIMEOUT_S)

    def verify(self, token, secret):
        h, p, s = token.split(".")
        mac = hmac.new(secret, (h + "." + p).encode(), hashlib.sha256).digest()
        self.assertTrue(hmac.compare_digest(mac, b64url_decode(s)), "bad signature")
        self.assertNotIn("=", token)
        return json.loads(b64url_decode(h)), json.loads(b64url_decode(p))

    def test_token_has_the_claims_and_verifies(self):
        before = int(time.time())
        r = self.ctl("token", "--secret", "dev-secret", "--account", "acme", "--role", "admin",
                     "--role", "viewer", "--sub", "alice", "--ttl", "15m", "--iss", "me",
                     "--aud", "analytics")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count("\n"), 1)  # the token only
        header, claims = self.verify(r.stdout.strip(), b"dev-secret")
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT"})
        self.assertEqual(claims["sub"], "alice")
        self.assertEqual(claims["account_id"], "acme")
        self.assertEqual(claims["roles"], ["admin", "viewer"])
        self.assertEqual(claims["iss"], "me")
        self.assertEqual(claims["aud"], "analytics")
        self.assertGreaterEqual(claims["iat"], before)
        self.assertEqual(claims["exp"] - claims["iat"], 900)

    def test_secret_file_and_default_ttl(self):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "ana-test-secret-%d" % os.getpid())
        with open(path, "wb") as f:
            f.write(b"file-secret\n")
        try:
            r = self.ctl("token", "--secret-file", path, "--account", "a", "--role", "ingest")
        finally:
            os.unlink(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        _, claims = self.verify(r.stdout.strip(), b"file-secret")
        self.assertEqual(claims["exp"] - claims["iat"], 3600)
        self.assertNotIn("iss", claims)
        self.assertEqual(claims["sub"], "analyticsctl")

    def test_missing_or_bad_arguments_are_usage_errors(self):
        for args in (["--account", "a", "--role", "admin"],
                     ["--secret", "s", "--role", "admin"],
                     ["--secret", "s", "--account", "a"],
                     ["--secret", "s", "--account", "a", "--role", "admin", "--ttl", "1y"]):
            r = self.ctl("token", *args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertEqual(r.stdout, "")


ERR_INVALID = -1
ERR_UNAUTHENTICATED = -10


def sanitizer_build(path):
    """Whether a shared library needs a sanitizer runtime (libasan, libubsan)."""
    with open(path, "rb") as f:
        data = f.read()
    return b"libasan.so" in data or b"libubsan.so" in data


class LibanalyticsCredentialsTest(RecorderTestCase):
    """The C library: options, token refresh, the UNAUTHENTICATED code.

    libanalytics is driven in a child process (libanalytics_calls.py): it
    links Debian's gRPC core, which must not share a process with grpcio's."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.path = os.path.join(build_dir(), "client", "libanalytics.so")
        if sanitizer_build(cls.path):
            # A sanitizer's runtime must be the process's first library: it
            # cannot be loaded into Python. The plain build runs these tests.
            cls.tearDownClass()
            raise unittest.SkipTest("libanalytics is a sanitizer build")

    def run_scenario(self, name):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "libanalytics_calls.py")
        r = subprocess.run([sys.executable, script, self.path, self.target, name],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def recorded(self, n):
        """The metadata of the first n recorded calls, as dicts."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            with self.recorder.lock:
                if len(self.recorder.calls) >= n:
                    return [{k: v for k, v in md} for _, md in self.recorder.calls[:n]]
            time.sleep(0.02)
        self.fail("the recording server saw fewer than %d calls" % n)

    def test_token_account_and_refresh(self):
        steps = self.run_scenario("token_refresh")
        self.assertTrue(steps["created"], steps)
        self.assertEqual(steps["first"], {"rc": ERR_UNAUTHENTICATED, "code": 16,
                                          "message": "recorded"})
        self.assertEqual(steps["set_second"], 0)
        self.assertEqual(steps["set_none"], 0)
        self.assertEqual(steps["set_bad"], ERR_INVALID)
        first, second, none = self.recorded(3)
        self.assertEqual(first.get("authorization"), "Bearer first")
        self.assertEqual(first.get("x-account-id"), "acct-7")
        self.assertEqual(second.get("authorization"), "Bearer second")
        self.assertNotIn("authorization", none)

    def test_api_key_is_sent_and_exclusive_with_a_token(self):
        steps = self.run_scenario("api_key")
        self.assertTrue(steps["created"], steps)
        (md,) = self.recorded(1)
        self.assertEqual(md.get("x-api-key"), "ana_abc_def")
        self.assertNotIn("authorization", md)
        self.assertEqual(steps["set_token"], ERR_INVALID)
        self.assertFalse(steps["both_created"])
        self.assertIn("exclusive", steps["both_message"])


class RemoteBridgePassThroughTest(RecorderTestCase):
    """analytics-restbridge --upstream forwards the caller's credentials."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bridge = harness.RemoteBridge(_Upstream(cls.target),
                                         env={"CORS_ALLOWED_ORIGINS": "http://app.example"})
        cls.bridge.start()

    @classmethod
    def tearDownClass(cls):
        cls.bridge.stop()
        super().tearDownClass()

    def request(self, method, path, headers):
        conn = http.client.HTTPConnection("127.0.0.1", self.bridge.port, timeout=TIMEOUT_S)
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp, body

    def test_rest_headers_become_metadata(self):
        resp, body = self.request("GET", "/api/metrics", {
            "Authorization": "Bearer rest-tok", "X-Account-Id": "acme",
            "X-Request-Id": "req-42"})
        self.assertEqual(resp.status, 401, body)
        method, md = self.recorder.last()
        self.assertEqual(method, "/analytics.v1.MetricService/ListMetrics")
        self.assertEqual(md.get("authorization"), "Bearer rest-tok")
        self.assertEqual(md.get("x-account-id"), "acme")
        self.assertEqual(md.get("x-request-id"), "req-42")

    def test_x_api_key_header_becomes_metadata(self):
        resp, _ = self.request("GET", "/api/metrics", {"X-Api-Key": "ana_id1_s3cr3t"})
        self.assertEqual(resp.status, 401)
        _, md = self.recorder.last()
        self.assertEqual(md.get("x-api-key"), "ana_id1_s3cr3t")
        self.assertNotIn("authorization", md)

    def test_websocket_bearer_subprotocol_token_is_forwarded_not_echoed(self):
        token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3cyJ9.c2lnbmF0dXJl"

        async def go():
            async with websockets.connect(
                    "ws://127.0.0.1:%d/ws/metrics/m1" % self.bridge.port,
                    subprotocols=["bearer", token], open_timeout=TIMEOUT_S,
                    extra_headers={"X-Account-Id": "ws-acct"}) as ws:
                frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                return ws.subprotocol, ws.response_headers, frame

        sub, headers, frame = asyncio.run(go())
        self.assertEqual(sub, "bearer")
        self.assertNotIn(token, str(headers))
        self.assertEqual(frame["error"]["code"], 16)
        _, md = self.recorder.last()
        self.assertEqual(md.get("authorization"), "Bearer " + token)
        self.assertEqual(md.get("x-account-id"), "ws-acct")

    def test_websocket_subprotocol_list_over_the_lws_limit_is_forwarded_whole(self):
        # lws 4.1 takes 126 bytes of the list; the token is read whole anyway.
        token = "x" * 200 + "." + "y" * 600

        async def go():
            async with websockets.connect(
                    "ws://127.0.0.1:%d/ws/metrics/m1" % self.bridge.port,
                    subprotocols=["bearer", token], open_timeout=TIMEOUT_S) as ws:
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                return ws.subprotocol

        self.assertEqual(asyncio.run(go()), "bearer")
        _, md = self.recorder.last()
        self.assertEqual(md.get("authorization"), "Bearer " + token)

        async def too_long():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with websockets.connect(
                        "ws://127.0.0.1:%d/ws/metrics/m1" % self.bridge.port,
                        subprotocols=["bearer", "x" * 9000], open_timeout=TIMEOUT_S,
                        max_size=None):
                    pass
            return cm.exception.status_code
        self.assertEqual(asyncio.run(too_long()), 400)

    def test_preflight_allows_the_credential_headers(self):
        resp, _ = self.request("OPTIONS", "/api/metrics", {
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "GET"})
        self.assertEqual(resp.status, 204)
        allowed = {h.strip().lower()
                   for h in (resp.getheader("Access-Control-Allow-Headers") or "").split(",")}
        for h in ("authorization", "x-account-id", "x-request-id", "x-api-key"):
            self.assertIn(h, allowed)


class _Upstream:
    """What harness.RemoteBridge needs of a Server: the recorder's address."""

    grace_ms = 1000

    def __init__(self, target):
        self.target = target
        self.workdir = os.environ.get("TMPDIR", "/tmp")


if __name__ == "__main__":
    unittest.main()
