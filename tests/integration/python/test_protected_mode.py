"""Protected mode: analyticsd with no credential source configured.

Loopback peers are served as the default account (every other test relies
on it); a peer on another address is refused UNAUTHENTICATED with how to
configure authentication, over gRPC and REST, whatever X-Forwarded-For
says. The other address is a veth pair between the root network namespace
and one this test makes (198.51.100.1 / .2, TEST-NET-2, or TEST-NET-3 when
that is taken), with both
ports bound to 0.0.0.0; without the right to make namespaces (not root) that
test is skipped. On loopback, the bridge serves only Hosts naming loopback
or listed in HTTP_ALLOWED_HOSTS (421 otherwise: DNS rebinding), refuses a
WebSocket upgrade from a foreign Origin (403), and /health says
"auth":"protected-mode".
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

import authkit
from authkit import grpc_call, rest_call, ws_call
import harness

# (host side, namespace side, prefix) of the veth pair: documentation ranges
# (RFC 5737), the first this machine does not already route.
CANDIDATES = (("198.51.100.1", "198.51.100.2", "198.51.100."),
              ("203.0.113.1", "203.0.113.2", "203.0.113."))
TRACK = "/analytics.v1.EventService/TrackEvent"

# Run inside the namespace: one gRPC call and one REST call to the server.
CLIENT = r"""
import http.client, json, sys, grpc
host, grpc_port, http_port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
out = {}
ch = grpc.insecure_channel("%s:%s" % (host, grpc_port))
try:
    ch.unary_unary("/analytics.v1.EventService/TrackEvent", request_serializer=None,
                   response_deserializer=None)(bytes.fromhex(payload), timeout=5,
                                               metadata=[("x-forwarded-for", "127.0.0.1")])
    out["grpc"] = ["OK", ""]
except grpc.RpcError as e:
    out["grpc"] = [e.code().name, e.details()]
c = http.client.HTTPConnection(host, http_port, timeout=5)
c.request("GET", "/api/events/names", headers={"Host": "localhost",
                                               "X-Forwarded-For": "127.0.0.1"})
r = c.getresponse()
out["rest"] = [r.status, r.read().decode()]
c = http.client.HTTPConnection(host, http_port, timeout=5)
c.request("GET", "/health", headers={"Host": "localhost"})
r = c.getresponse()
out["health"] = [r.status, r.read().decode()]
print(json.dumps(out))
"""


class ProtectedModeTest(harness.ServerTestCase):
    SERVER_ENV = {"GRPC_HOST": "0.0.0.0", "HTTP_HOST": "0.0.0.0",
                  "HTTP_ALLOWED_HOSTS": "analytics.internal"}

    def names(self, host):
        return rest_call(self.rest_port, "GET", "/api/events/names", host=host)

    def test_start_up_says_protected_mode_and_how_to_configure(self):
        lines = [l for l in self.server.log_lines() if l.get("component") == "auth"]
        self.assertTrue(any("protected mode" in l.get("msg", "") and l.get("level") == "warn"
                            and "JWT_HS256_SECRET" in l.get("msg", "") for l in lines), lines)

    def test_health_reports_protected_mode(self):
        code, body, _ = rest_call(self.rest_port, "GET", "/health")
        self.assertEqual(code, "OK")
        self.assertEqual(json.loads(body)["auth"], "protected-mode")

    def test_loopback_peer_is_served_as_the_default_account(self):
        code, _, _ = self.names("127.0.0.1:%d" % self.rest_port)
        self.assertEqual(code, "OK")

    def test_loopback_host_names_and_allowed_hosts_are_served(self):
        for host in ("localhost", "localhost:1", "127.0.0.1", "[::1]:3004",
                     "analytics.internal", "ANALYTICS.internal:8080"):
            with self.subTest(host=host):
                self.assertEqual(self.names(host)[0], "OK")

    def test_foreign_host_is_misdirected(self):
        for host in ("evil.example", "evil.example:%d" % self.rest_port, "127.0.0.1.evil.example",
                     "localhost.evil.example", "10.1.2.3"):
            with self.subTest(host=host):
                code, body, _ = self.names(host)
                self.assertEqual(code, "MISDIRECTED", body)
                self.assertIn("HTTP_ALLOWED_HOSTS", json.loads(body)["message"])
        # The dashboard's files too; /health stays open to probes.
        self.assertEqual(rest_call(self.rest_port, "GET", "/", host="evil.example")[0],
                         "MISDIRECTED")
        self.assertEqual(rest_call(self.rest_port, "GET", "/health", host="evil.example")[0],
                         "OK")

    def test_websocket_upgrade_with_foreign_host_or_origin_is_refused(self):
        self.assertEqual(authkit.ws_upgrade_status(self.rest_port, "/ws/analytics",
                                                   host="evil.example"), 421)
        self.assertEqual(authkit.ws_upgrade_status(self.rest_port, "/ws/analytics",
                                                   host="localhost",
                                                   origin="http://evil.example"), 403)
        self.assertEqual(authkit.ws_upgrade_status(self.rest_port, "/ws/analytics",
                                                   host="localhost"), 101)
        code, _, _ = ws_call(self.rest_port, "/ws/analytics",
                             headers={"Origin": "http://127.0.0.1:%d" % self.rest_port})
        self.assertEqual(code, "OK")

    def test_a_non_loopback_peer_is_refused_with_how_to_configure(self):
        ip = shutil.which("ip")
        if os.geteuid() != 0 or not ip:
            self.skipTest("making a network namespace needs root and iproute2")

        def run(*args, check=True):
            return subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, check=check, timeout=20)
        routes = run(ip, "-o", "addr").stdout + run(ip, "route").stdout
        free = [c for c in CANDIDATES if c[2] not in routes]
        if not free:
            self.skipTest("both documentation ranges are already routed here")
        host_addr, ns_addr, _ = free[0]
        tag = "%d" % (os.getpid() % 100000)
        ns, host_if, ns_if = "ana-pm-" + tag, "anah" + tag, "anan" + tag

        try:
            run(ip, "netns", "add", ns)
        except subprocess.CalledProcessError as e:
            self.skipTest("ip netns add is not permitted here: %s" % e.stderr.strip())
        self.addCleanup(run, ip, "netns", "del", ns, check=False)
        run(ip, "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        self.addCleanup(run, ip, "link", "del", host_if, check=False)
        run(ip, "link", "set", ns_if, "netns", ns)
        run(ip, "addr", "add", host_addr + "/30", "dev", host_if)
        run(ip, "link", "set", host_if, "up")
        run(ip, "netns", "exec", ns, ip, "addr", "add", ns_addr + "/30", "dev", ns_if)
        run(ip, "netns", "exec", ns, ip, "link", "set", ns_if, "up")
        run(ip, "netns", "exec", ns, ip, "link", "set", "lo", "up")
        pb = self.ns.analytics["events"][0]
        payload = pb.TrackEventRequest(event=pb.Event(event_name="signup", event_type="user"))\
            .SerializeToString().hex()
        res = run(ip, "netns", "exec", ns, sys.executable, "-c", CLIENT, host_addr,
                  str(self.server.grpc_port), str(self.rest_port), payload)
        out = json.loads(res.stdout)
        code, details = out["grpc"]
        self.assertEqual(code, "UNAUTHENTICATED", details)
        self.assertIn("JWT_HS256_SECRET", details)
        status, body = out["rest"]
        self.assertEqual(status, 401, body)
        self.assertIn("JWT_HS256_SECRET", json.loads(body)["message"])
        status, body = out["health"]
        self.assertEqual(status, 200, body)  # probes stay open
        # Loopback is still served meanwhile.
        self.assertEqual(self.names("localhost")[0], "OK")


class ForwardedClientTest(harness.ServerTestCase):
    """A proxy on this host (analytics-restbridge) listed in TRUSTED_PROXIES
    does not lend its loopback address to the clients it forwards for; an
    untrusted one's X-Forwarded-For changes nothing."""
    SERVER_ENV = {"TRUSTED_PROXIES": "127.0.0.1/32"}

    def track(self, forwarded_for):
        pb = self.ns.analytics["events"][0]
        payload = pb.TrackEventRequest(event=pb.Event(event_name="signup", event_type="user"))\
            .SerializeToString()
        return grpc_call(self.channel, TRACK, payload, [("x-forwarded-for", forwarded_for)])

    def test_a_remote_client_forwarded_by_a_trusted_proxy_is_refused(self):
        code, details = self.track("198.51.100.9")
        self.assertEqual(code, "UNAUTHENTICATED")
        self.assertIn("JWT_HS256_SECRET", details)
        self.assertEqual(self.track("127.0.0.9")[0], "OK")

    def test_through_the_remote_bridge(self):
        bridge = harness.RemoteBridge(self.server).start()
        self.addCleanup(bridge.stop)
        code, body, _ = rest_call(bridge.port, "GET", "/api/events/names",
                                  {"X-Forwarded-For": "198.51.100.9"})
        self.assertEqual(code, "UNAUTHENTICATED", body)
        self.assertEqual(rest_call(bridge.port, "GET", "/api/events/names")[0], "OK")


class UntrustedForwardedForTest(harness.ServerTestCase):

    def test_forwarded_for_from_an_untrusted_loopback_peer_changes_nothing(self):
        pb = self.ns.analytics["events"][0]
        payload = pb.TrackEventRequest(event=pb.Event(event_name="signup", event_type="user"))\
            .SerializeToString()
        code, _ = grpc_call(self.channel, TRACK, payload, [("x-forwarded-for", "198.51.100.9")])
        self.assertEqual(code, "OK")


class HttpHostTest(unittest.TestCase):
    """HTTP_HOST binds the REST port like GRPC_HOST binds gRPC."""

    def test_http_host_binds_the_rest_port(self):
        s = harness.start_server(self, env={"HTTP_HOST": "127.0.0.1"})
        out = subprocess.run(["ss", "-Hltn", "sport = :%d" % s.http_port],
                             stdout=subprocess.PIPE, universal_newlines=True).stdout
        self.assertIn("127.0.0.1:%d" % s.http_port, out)
        self.assertNotIn("0.0.0.0:%d" % s.http_port, out)
        self.assertNotIn("*:%d" % s.http_port, out)
        s.stop()
