"""Issue 17, point 4: TLS on the REST port (HTTP_TLS_*) under attack.

Pipelined requests in one TLS write used to reach lws together (OpenSSL
decrypts them at once), which sent the bridge thread into its endless
HTTP_BODY_COMPLETION loop: every HTTPS client was stuck; then only the first
was answered and the connection closed. Each is now answered, in order, on
the same connection. An unmasked
client frame over WSS reached lws, which accepts it (the framer only saw
ciphertext). SIGHUP, now a certificate reload, used to stop the server
(its default action).
"""

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from adversary import AttackTestCase, read_all, status_codes

BODY = json.dumps({"eventType": "adversarial", "eventName": "tls_pipelined"})
POST = ("POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))

GET_HEALTH = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"

_DIR = tempfile.mkdtemp(prefix="ana-adv-tls-")
CERT, KEY = os.path.join(_DIR, "server.pem"), os.path.join(_DIR, "server.key")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", KEY, "-out", CERT, "-days",
                "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
               check=True, capture_output=True, timeout=10)


class HttpsAttackTest(AttackTestCase):
    SERVER_ENV = {"HTTP_TLS_CERT_FILE": CERT, "HTTP_TLS_KEY_FILE": KEY}

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(_DIR, ignore_errors=True)

    def tls_socket(self, timeout=5.0):
        ctx = ssl.create_default_context(cafile=CERT)
        raw = socket.create_connection(("127.0.0.1", self.rest_port), timeout=timeout)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    def rest_health(self, timeout=5.0):
        """GET /health over HTTPS on a new connection: (status, body)."""
        with self.tls_socket(timeout) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = read_all(s, timeout, until_close=True)
        codes = status_codes(data)
        self.assertTrue(codes, "/health gave no HTTPS answer within %.0f s: %r"
                        % (timeout, data[:200]))
        return codes[0], data

    def test_pipelined_https_posts_are_all_answered_in_order(self):
        with self.rss_watch():
            with self.tls_socket() as s:
                s.sendall((POST * 3).encode())  # one TLS write, one decrypted read
                data = read_all(s, read_timeout=5, expect_responses=3)
                # The connection stays open: a fourth request is answered too.
                s.sendall(GET_HEALTH.encode())
                data += read_all(s, read_timeout=5, expect_responses=1)
        self.assertEqual(status_codes(data), [200, 200, 200, 200], data[:800])
        self.assertEqual(data.count(b'"eventId"'), 3, data[:800])
        self.assert_survived()

    def test_https_posts_sent_while_one_is_unanswered_are_answered_in_order(self):
        # Separate TLS records 1 ms apart: the later ones arrive (and are
        # decrypted) while the first is still being handled.
        with self.rss_watch():
            with self.tls_socket() as s:
                for _ in range(4):
                    s.sendall(POST.encode())
                    time.sleep(0.001)
                data = read_all(s, read_timeout=5, expect_responses=4)
        self.assertEqual(status_codes(data), [200, 200, 200, 200], data[:800])
        self.assert_survived()

    def test_pipelined_https_mixed_requests_answered_in_order(self):
        seq = [POST, GET_HEALTH, POST.replace("/api/events", "/api/nowhere"), POST, GET_HEALTH]
        with self.rss_watch():
            with self.tls_socket() as s:
                s.sendall("".join(seq).encode())
                data = read_all(s, read_timeout=5, expect_responses=5)
        self.assertEqual(status_codes(data), [200, 200, 404, 200, 200], data[:1500])
        self.assert_survived()

    def test_sighup_reloads_instead_of_stopping(self):
        mark = self.server.log_mark()
        with self.rss_watch():
            for _ in range(3):
                self.server.proc.send_signal(signal.SIGHUP)
                time.sleep(0.1)
        self.assert_survived()
        msgs = [l.get("msg") for l in self.server.log_lines(mark)]
        self.assertIn("HTTP TLS certificate reloaded", msgs)

    def test_unmasked_wss_frame_is_failed_with_1002(self):
        with self.rss_watch():
            with self.tls_socket() as s:
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall(("GET /ws/analytics HTTP/1.1\r\nHost: localhost\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           % key).encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(4096)
                    self.assertTrue(chunk, "no upgrade answer")
                    head += chunk
                self.assertIn(b" 101 ", head.split(b"\r\n")[0])
                s.sendall(b"\x81\x05hello")  # a text frame without a mask
                data = head.split(b"\r\n\r\n", 1)[1] + read_all(s, 5, until_close=True)
        # A close frame (opcode 8) carrying 1002, and nothing delivered.
        i = data.find(b"\x88")
        self.assertGreaterEqual(i, 0, data[:200])
        self.assertEqual(data[i + 2:i + 4], (1002).to_bytes(2, "big"), data[:200])
        self.assert_survived()
