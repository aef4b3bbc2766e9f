"""Issue 15, point 1: DNS rebinding through the remote bridge.

A page of another site whose name is made to resolve to the machine running
analytics-restbridge reaches it with its own name in Host. While the
upstream analyticsd serves callers without credentials (protected mode), the
remote bridge answers such a Host 421 like the in-process bridge (REST and
WebSocket upgrades; localhost, 127.0.0.1, [::1] and HTTP_ALLOWED_HOSTS are
served, /health stays open). Once the upstream requires authentication, any
Host is served to an authenticated caller."""

import json

from adversary import AttackTestCase, raw_http, status_codes
import authkit  # noqa: E402 (adversary puts the integration helpers on the path)

EVIL = "rebind.evil.example"


def get(port, path, host, headers=""):
    data = raw_http(port, "GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n"
                    % (path, host, headers), until_close=True)
    codes = status_codes(data)
    return (codes[0] if codes else None), data.partition(b"\r\n\r\n")[2]


class RemoteBridgeRebindingTest(AttackTestCase):
    BRIDGE = "remote"
    SERVER_ENV = {"HTTP_ALLOWED_HOSTS": "analytics.internal"}

    def test_remote_bridge_served_a_rebound_host_as_the_default_account(self):
        with self.rss_watch():
            for host in (EVIL, EVIL + ":%d" % self.rest_port, "127.0.0.1.evil.example",
                         "10.1.2.3"):
                status, body = get(self.rest_port, "/api/events/names", host)
                self.assertEqual(status, 421, (host, body[:200]))
                self.assertIn("HTTP_ALLOWED_HOSTS", json.loads(body)["message"])
            self.assertEqual(authkit.ws_upgrade_status(self.rest_port, "/ws/analytics",
                                                       host=EVIL), 421)
            for host in ("localhost", "127.0.0.1:%d" % self.rest_port, "[::1]",
                         "analytics.internal:8080"):
                self.assertEqual(get(self.rest_port, "/api/events/names", host)[0], 200, host)
            status, body = get(self.rest_port, "/health", EVIL)
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["auth"], "protected-mode")
        self.assert_survived()


class RemoteBridgeAuthRequiredTest(AttackTestCase):
    BRIDGE = "remote"
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET}

    def test_remote_bridge_with_authentication_upstream_serves_any_host(self):
        token = authkit.hs256(authkit.claims(account="acme", roles=("viewer",)))
        with self.rss_watch():
            status, body = get(self.rest_port, "/api/events/names", EVIL,
                               "Authorization: Bearer %s\r\n" % token)
            self.assertEqual(status, 200, body[:200])
            status, body = get(self.rest_port, "/api/events/names", EVIL)
            self.assertEqual(status, 401, body[:200])
            status, body = get(self.rest_port, "/health", "localhost")
            self.assertEqual(json.loads(body)["auth"], "required")
        self.assert_survived()
