"""Issue 14, point 8: no head-of-line blocking on the bridge thread.

Two clients posting 3.5 MB JSON bodies with 200,000 keys held every other
request (/health included) for as long as the bridge's one libwebsockets
thread parsed them. Bodies over 64 KiB are now decoded on the bridge's
HTTP_DECODE_THREADS pool: the bridge thread answers /health and /metrics
while they decode. Checked here by correctness, not by timing: both bodies
are processed, and /metrics is answered at a moment when a body is still
being decoded (ana_http_decode_pending > 0). The latency figures are
measured by bench/health_under_decode.py.
"""

import re
import socket
import threading
import time
import unittest

import adversary


def big_body(keys=200000):
    """A TrackEvents body of about 3.5 MB whose one event has `keys` properties."""
    props = ",".join('"k%06d":"%d"' % (i, i % 1000) for i in range(keys))
    return ('{"events":[{"eventType":"hol","eventName":"wide","properties":{%s}}]}'
            % props).encode()


def post(port, body, timeout=60):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"POST /api/events/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                  b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        return adversary.read_all(s, timeout, until_close=True)
    finally:
        s.close()


class KeepAliveProbe:
    """GETs on one keep-alive connection; returns (status, body)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def get(self, path):
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed during GET %s" % path)
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            m = re.search(rb"content-length: *(\d+)", data[:head_end].lower())
            n = int(m.group(1)) if m else 0
            if len(data) >= head_end + 4 + n:
                return int(data[9:12]), data[head_end + 4:head_end + 4 + n]

    def close(self):
        self.sock.close()


class HeadOfLineTest(adversary.AttackTestCase):
    SERVER_ENV = {"HTTP_DECODE_THREADS": "2"}

    def test_health_is_answered_while_large_bodies_decode(self):
        body = big_body()
        self.assertGreater(len(body), 3 * 1024 * 1024)
        results = [None, None]
        probe = KeepAliveProbe(self.rest_port)
        seen_pending = 0
        health_ok = 0
        with self.rss_watch():
            def poster(i):
                results[i] = post(self.rest_port, body)

            threads = [threading.Thread(target=poster, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                code, text = probe.get("/metrics")
                self.assertEqual(code, 200)
                m = re.search(rb"^ana_http_decode_pending (\d+)$", text, re.M)
                self.assertIsNotNone(m, "no ana_http_decode_pending in /metrics")
                if int(m.group(1)) > 0:
                    seen_pending += 1
                    code, _ = probe.get("/health")
                    self.assertEqual(code, 200)
                    health_ok += 1
                time.sleep(0.005)
            for t in threads:
                t.join()
        probe.close()
        for r in results:
            codes = adversary.status_codes(r or b"")
            self.assertEqual(len(codes), 1, (r or b"")[:300])
            # The one event has too many properties: processed and rejected
            # with the reason, not dropped or failed.
            self.assertIn(codes[0], (200, 400), r[:300])
            self.assertRegex(r, rb"propert", r[:300])
        self.assertGreater(seen_pending, 0,
                           "/metrics was never answered while a body was being decoded")
        self.assertGreater(health_ok, 0)
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
