"""Issue 14, point 6 (the bridge side): memory is bounded by configuration,
not by clients.

- WebSocket subscribers that stop reading pinned their whole queue each
  (STREAM_BUFFER_SIZE frames of up to 32 KB: tens of MB apiece) and were
  closed only a minute after the bridge decided to; now all queues together
  stay within STREAM_QUEUE_BUDGET_MB, the subscriber with the most queued is
  closed with 1008 at once, and the memory goes back.
- POSTs that send most of a body and then trickle pinned their buffers for
  as long as they trickled; now all bodies together stay within
  HTTP_BODY_BUDGET_MB (503 with Retry-After past it) and a body slower than
  HTTP_BODY_MIN_RATE ends with 408.
"""

import base64
import json
import os
import re
import socket
import struct
import threading
import time
import unittest

import adversary

MIB = adversary.MIB


def ws_connect(port, path, rcvbuf=32768):
    """A raw WebSocket client socket, handshake done (any bytes read past
    the handshake are returned with it)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: restbridge.v1\r\n\r\n"
               % (path, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError("WebSocket handshake: connection closed: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise AssertionError("WebSocket handshake refused: %r" % head[:200])
    return s, rest


class FrameScanner:
    """Follows the server's frames in a byte stream; notes the close code."""

    def __init__(self):
        self.buf = b""
        self.frames = 0
        self.close_code = None

    def feed(self, data):
        self.buf += data
        while True:
            b = self.buf
            if len(b) < 2:
                return
            op, n, hl = b[0] & 0x0F, b[1] & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    return
                n, hl = struct.unpack(">H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return
                n, hl = struct.unpack(">Q", b[2:10])[0], 10
            if len(b) < hl + n:
                return
            payload = b[hl:hl + n]
            self.buf = b[hl + n:]
            if op == 0x8 and len(payload) >= 2:
                self.close_code = struct.unpack(">H", payload[:2])[0]
            elif op in (0x1, 0x2):
                self.frames += 1


class SlowSubscriber(threading.Thread):
    """Subscribes over WebSocket, reads the first frame, then reads only a
    trickle (`rate` bytes per second) until the connection ends."""

    def __init__(self, port, path, rate):
        super().__init__(daemon=True)
        self.sock, rest = ws_connect(port, path)
        self.scan = FrameScanner()
        self.scan.feed(rest)
        self.rate = rate
        self.closed_at = None
        self.stop = threading.Event()

    def run(self):
        step = 0.05
        self.sock.settimeout(0.5)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(max(1, int(self.rate * step)))
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed_at = time.monotonic()
                return
            self.scan.feed(data)
            time.sleep(step)

    def drain(self, seconds):
        """Reads everything left (the close frame is behind the frames the
        socket already held), up to `seconds`."""
        self.stop.set()
        self.join()
        self.sock.settimeout(0.5)
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.closed_at is None:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed_at = time.monotonic()
                break
            self.scan.feed(data)
        self.sock.close()


def metrics(port):
    data = adversary.raw_http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                              until_close=True)
    out = {}
    for line in data.decode("latin-1").splitlines():
        m = re.match(r"^(ana_(?:http_body|websocket)_\w+) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def post_json(port, path, body, timeout=30):
    raw = json.dumps(body).encode()
    data = adversary.raw_http(port, b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                              b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                              % (path.encode(), len(raw)) + raw,
                              read_timeout=timeout, until_close=True)
    return adversary.status_codes(data)


class StreamQueueBudgetTest(adversary.AttackTestCase):
    SERVER_ENV = {
        "STREAM_QUEUE_BUDGET_MB": "4",
        "HTTP_BODY_BUDGET_MB": "4",
        # Only the budget may act here: the per-connection slow-consumer
        # closes (bridge and real-time hub) come far later.
        "WS_SLOW_CONSUMER_MS": "120000",
        "REALTIME_SLOW_CONSUMER_MS": "120000",
    }

    def test_slow_subscribers_are_bounded_by_the_queue_budget_and_closed_at_once(self):
        name = "budget%d" % os.getpid()
        subs = [SlowSubscriber(self.rest_port, "/ws/analytics?includeEvents=true&eventName=" + name,
                               rate=256 * 1024 if i < 2 else 0) for i in range(40)]
        for s in subs:
            s.start()
        big = "x" * (30 * 1024)
        batch = {"events": [{"eventType": "attack", "eventName": name,
                             "properties": {"blob": big}} for _ in range(40)]}
        with self.rss_watch():
            # 200 events of 30 KB to each of 40 subscribers: 240 MB queued if
            # nothing bounded it (the ingest itself keeps ~20 MB).
            for i in range(5):
                self.assertEqual(post_json(self.rest_port, "/api/events/batch", batch)[:1], [200])
            time.sleep(1.0)
        m = metrics(self.rest_port)
        self.assertLessEqual(m.get("ana_websocket_queue_budget_used_bytes", -1),
                             4 * MIB + 64 * 1024, m)
        self.assertEqual(m["ana_websocket_queue_budget_limit_bytes"], 4 * MIB)
        self.assertGreaterEqual(m["ana_websocket_queue_budget_closed_total"], 1)
        # Those closed are gone within seconds of the decision (even the ones
        # that read nothing, into whose full socket no close frame fits: after
        # 5 s of grace), not when keepalive gives up a minute later.
        deadline = time.monotonic() + 8.0
        while True:
            m = metrics(self.rest_port)
            closed = m["ana_websocket_queue_budget_closed_total"]
            if m["ana_websocket_connections_open"] <= len(subs) - closed:
                break
            self.assertLess(time.monotonic(), deadline,
                            "%d WebSockets still open 8 s after %d were closed for the "
                            "budget: %r" % (m["ana_websocket_connections_open"], closed, m))
            time.sleep(0.2)
        for s in subs:
            s.drain(5.0)
        codes = [s.scan.close_code for s in subs]
        self.assertIn(1008, codes, "close codes seen: %r" % codes)
        self.assert_survived()


class BodyBudgetTest(adversary.AttackTestCase):
    SERVER_ENV = {
        "HTTP_BODY_BUDGET_MB": "8",
        "STREAM_QUEUE_BUDGET_MB": "8",
        "HTTP_BODY_MIN_RATE": "4096",
        "HTTP_BODY_RATE_WINDOW": "1000",
    }

    def test_trickled_bodies_are_bounded_by_the_body_budget_and_end_with_408(self):
        size = 4 * MIB - 1024
        socks, answers = [], []
        with self.rss_watch():
            # Each announces 4 MiB and sends most of it: two fit the budget.
            for _ in range(2):
                s = socket.create_connection(("127.0.0.1", self.rest_port), timeout=10)
                s.sendall(b"POST /api/events/batch HTTP/1.1\r\nHost: localhost\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
                s.sendall(b" " * (size - 4096))
                socks.append(s)
            time.sleep(0.3)
            # The third is refused at once: 503 with Retry-After.
            data = adversary.raw_http(
                self.rest_port, b"POST /api/events/batch HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size,
                read_timeout=5, until_close=True)
            self.assertEqual(adversary.status_codes(data)[:1], [503], data[:300])
            self.assertRegex(data.decode("latin-1").lower(), r"\r\nretry-after: \d+\r\n")
            m = metrics(self.rest_port)
            self.assertEqual(m["ana_http_body_budget_limit_bytes"], 8 * MIB)
            self.assertGreaterEqual(m["ana_http_body_budget_refused_total"], 1)
            # The two trickle a byte every 0.5 s: below the minimum rate.
            t0 = time.monotonic()
            for s in socks:
                s.settimeout(0.1)
            got = [b"" for _ in socks]
            done = [False for _ in socks]
            while not all(done) and time.monotonic() - t0 < 8:
                for i, s in enumerate(socks):
                    if done[i]:
                        continue
                    try:
                        s.sendall(b" ")
                        chunk = s.recv(65536)
                        if not chunk:
                            done[i] = True
                        got[i] += chunk
                    except socket.timeout:
                        pass
                    except OSError:
                        done[i] = True
                time.sleep(0.4)
            for i, s in enumerate(socks):
                answers.append(adversary.status_codes(got[i]))
                s.close()
        self.assertEqual(answers, [[408], [408]], [g[:200] for g in got])
        m = metrics(self.rest_port)
        self.assertGreaterEqual(m["ana_http_body_too_slow_total"], 2)
        self.assertEqual(m["ana_http_body_budget_used_bytes"], 0)
        # The budget is free again: a whole body goes through.
        self.assertEqual(post_json(self.rest_port, "/api/events/batch",
                                   {"events": [{"eventType": "a", "eventName": "b"}]}), [200])
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
