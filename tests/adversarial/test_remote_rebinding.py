"""Issue 15, point 1: DNS rebinding through the remote bridge.

A page of another site whose name is made to resolve to the machine running
analytics-restbridge reaches it with its own name in Host. The remote bridge
cannot see whether its upstream serves callers without credentials, so a
request that brings none gets 421 under such a Host, as from the in-process
bridge in protected mode (REST and WebSocket upgrades; localhost, 127.0.0.1,
[::1] and HTTP_ALLOWED_HOSTS are served, /health stays open). A caller with
credentials (which such a page cannot send) is served under any Host."""

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
        self.assert_survived()


class RemoteBridgeAuthRequiredTest(AttackTestCase):
    BRIDGE = "remote"
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET}

    def test_remote_bridge_serves_a_caller_with_credentials_under_any_host(self):
        token = authkit.hs256(authkit.claims(account="acme", roles=("viewer",)))
        with self.rss_watch():
            status, body = get(self.rest_port, "/api/events/names", EVIL,
                               "Authorization: Bearer %s\r\n" % token)
            self.assertEqual(status, 200, body[:200])
            self.assertEqual(authkit.ws_upgrade_status(self.rest_port, "/ws/analytics",
                                                       host=EVIL, token=token), 101)
            status, body = get(self.rest_port, "/api/events/names", EVIL)
            self.assertEqual(status, 421, body[:200])
            status, body = get(self.rest_port, "/api/events/names", "localhost")
            self.assertEqual(status, 401, body[:200])
        self.assert_survived()
