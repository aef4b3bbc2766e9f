"""Issue 14, point 3: request framing (RFC 9112 6.3).

Transfer-Encoding with Content-Length, two Content-Length values, a bad
Content-Length and a coding other than chunked each get 400/501 and the
connection closed, never a hang; a burst of them leaves no descriptor and
no CLOSE-WAIT socket behind.
"""

import os
import socket
import time

from adversary import AttackTestCase, raw_http, status_codes

HEAD = "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
CLTE = HEAD + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


def close_wait_count(port):
    """Sockets in CLOSE-WAIT on the server's REST port (from /proc/net/tcp)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local_port = int(parts[1].rsplit(":", 1)[1], 16)
                    if local_port == port and parts[3] == "08":
                        n += 1
        except FileNotFoundError:
            pass
    return n


class FramingTest(AttackTestCase):

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.server.proc.pid))

    def assert_refused(self, request, status):
        data = raw_http(self.rest_port, request, read_timeout=3, until_close=True)
        self.assertEqual(status_codes(data)[:1], [status], data[:400])
        self.assertIn(b"connection: close", data.lower())

    def test_chunked_with_content_length_is_400_and_closed(self):
        with self.rss_watch():
            self.assert_refused(CLTE, 400)
        self.assert_survived()

    def test_two_content_lengths_are_400(self):
        self.assert_refused(HEAD + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400)
        self.assert_survived()

    def test_bad_content_length_is_400(self):
        for cl in ("-1", "1x", "+2", "1 2"):
            self.assert_refused(HEAD + "Content-Length: %s\r\n\r\n{}" % cl, 400)
        self.assert_survived()

    def test_transfer_coding_other_than_chunked_is_501(self):
        self.assert_refused(HEAD + "Transfer-Encoding: gzip\r\n\r\nxx", 501)
        self.assert_survived()

    def test_burst_of_chunked_with_content_length_leaves_no_fd(self):
        base = self.fd_count()
        with self.rss_watch():
            for _ in range(2000):
                s = socket.create_connection(("127.0.0.1", self.rest_port), timeout=5)
                s.sendall(CLTE.encode())
                s.close()  # the attacker does not wait for the answer
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.fd_count() <= base + 5 and close_wait_count(self.rest_port) == 0:
                break
            time.sleep(0.2)
        self.assertLessEqual(self.fd_count(), base + 5, "descriptors leaked")
        self.assertEqual(close_wait_count(self.rest_port), 0, "sockets left in CLOSE-WAIT")
        self.assert_survived()
