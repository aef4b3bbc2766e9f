"""Issue 15, point 2: a real token in the WebSocket subprotocol list.

Browsers cannot set Authorization on a WebSocket, so they send
`Sec-WebSocket-Protocol: bearer, <token>`. libwebsockets 4.1 drops an upgrade
whose list is longer than 127 bytes, which every RS256 token is: the bridge
has lws keep 127 bytes and reads the token from the bytes it framed, so the
upgrade selects `bearer` (never the token) and the token authenticates, in
process and through analytics-restbridge, however the request is cut into
reads. A list over 8192 bytes, or several headers lws would drop, get 400."""

import json
import os
import shutil
import socket
import tempfile
import time

from adversary import AttackTestCase, raw_http, status_codes
import authkit  # noqa: E402 (adversary puts the integration helpers on the path)
from authkit import claims, sign, ws_call

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_head(port, protocols_headers):
    head = ("GET /ws/analytics HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
            % (port, KEY))
    for value in protocols_headers:
        head += "Sec-WebSocket-Protocol: %s\r\n" % value
    return (head + "\r\n").encode()


def answer_head(data):
    return data.partition(b"\r\n\r\n")[0].decode("latin-1")


class LongBearerSubprotocolTest(AttackTestCase):

    @classmethod
    def setUpClass(cls):
        cls.rsa = authkit.rsa_key()
        cls.tmp = tempfile.mkdtemp(prefix="ana-wsb-")
        path = os.path.join(cls.tmp, "jwks.json")
        with open(path, "w") as f:
            json.dump({"keys": [authkit.jwk(cls.rsa, "rsa-1")]}, f)
        cls.SERVER_ENV = {"JWT_JWKS_FILE": path}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def token(self):
        # What an identity provider issues: RS256 with a few profile claims.
        payload = claims(account="acme", roles=("viewer",), email="user@example.com",
                         name="A User", iss="https://id.example.com/realms/acme",
                         sub="f3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d", scope="openid profile email")
        token = sign({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}, payload, key=self.rsa)
        self.assertGreater(len(token), 600)
        return token

    def test_rs256_token_in_subprotocol_list_was_dropped_by_lws(self):
        token = self.token()
        with self.rss_watch():
            code, frame, selected = ws_call(self.rest_port, "/ws/analytics",
                                            subprotocols=["bearer", token])
            self.assertEqual((code, selected), ("OK", "bearer"), frame)
            # A bad signature over the same path: refused, the token never echoed.
            bad = token[:-8] + "AAAAAAAA"
            code, frame, selected = ws_call(self.rest_port, "/ws/analytics",
                                            subprotocols=["bearer", bad])
            self.assertEqual((code, selected), ("UNAUTHENTICATED", "bearer"))
            self.assertNotIn(bad.split(".")[2], frame)
            # Over 8192 bytes: a clear 400 naming the other ways.
            data = raw_http(self.rest_port,
                            upgrade_head(self.rest_port, ["bearer, " + "a" * 9000]),
                            until_close=True)
            self.assertEqual(status_codes(data)[:1], [400], data[:300])
            self.assertIn(b"Authorization", data)
            # Two headers lws would add up past its 126 bytes: 400, not a dropped connection.
            data = raw_http(self.rest_port,
                            upgrade_head(self.rest_port, ["bearer", "b" * 120, "c" * 120]),
                            until_close=True)
            self.assertEqual(status_codes(data)[:1], [400], data[:300])
            self.assertIn(b"one Sec-WebSocket-Protocol header", data)
        self.assert_survived()

    def test_long_list_cut_into_small_reads_was_dropped(self):
        token = self.token()
        data = upgrade_head(self.rest_port, ["bearer, " + token])
        with self.rss_watch():
            with socket.create_connection(("127.0.0.1", self.rest_port), timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(0, len(data), 61):
                    s.sendall(data[i:i + 61])
                    time.sleep(0.002)
                got = b""
                while b"\r\n\r\n" not in got:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            head = answer_head(got)
            self.assertIn(" 101 ", head.split("\r\n")[0], head)
            self.assertIn("Sec-WebSocket-Protocol: bearer\r\n", head + "\r\n")
            self.assertNotIn(token[:40], head)
        self.assert_survived()

class LongBearerSubprotocolRemoteTest(LongBearerSubprotocolTest):
    """The same attacks on analytics-restbridge, which passes the token on."""
    BRIDGE = "remote"
