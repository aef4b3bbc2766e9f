"""Issue 21, point 4: a wide GetMetricData answer over REST is JSON-encoded
in chunks that go out as they are written, counted in STREAM_QUEUE_BUDGET_MB
while they wait for the client. Clients that ask for a large answer (1,000
groups x 150 hourly buckets, every bucket: about 6.5 MB of JSON) and then do
not read it pinned the whole answer, encoded in one buffer, for as long as
they kept the connection open; past the budget they are now cut and their
memory goes back, while a client that reads gets its answer whole. The
same through analytics-restbridge --upstream, whose memory is watched then.
"""

import http.client
import json
import re
import socket
import time
import urllib.parse

from adversary import AttackTestCase, raw_http, rss_bytes

GROUPS, HOURS, SLOW_CLIENTS = 1000, 150, 4


class WideAnswerStreamTest(AttackTestCase):
    SERVER_ENV = {"HTTP_BODY_BUDGET_MB": 4, "STREAM_QUEUE_BUDGET_MB": 4}

    def _metric(self):
        _, q, start, end = self.wide_metric("stream_sent", GROUPS, HOURS, seed=4)
        return "/api/metrics/%s/data?%s" % (q.metric_id, urllib.parse.urlencode({
            "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
            "interval": "1h", "topN": "1000"}))

    def budget_closed(self):
        """Connections the queue budget closed so far (/metrics)."""
        data = raw_http(self.rest_port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n", until_close=True)
        m = re.search(rb"^ana_websocket_queue_budget_closed_total (\d+)", data, re.M)
        return int(m.group(1)) if m else 0

    def test_slow_readers_of_a_wide_answer_pin_it_whole(self):
        path = self._metric()
        request = ("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode()
        slow = []
        try:
            with self.rss_watch():
                for _ in range(SLOW_CLIENTS):
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    s.connect(("127.0.0.1", self.rest_port))
                    s.sendall(request)
                    slow.append(s)
                    # The next one once the budget cut this one (or 4 s) and
                    # its memory went back (freed memory is trimmed at most
                    # once a second): one answer built at a time, whatever
                    # the machine's load.
                    deadline = time.monotonic() + 4
                    while self.budget_closed() < len(slow) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    time.sleep(1.1)
                # Each was cut (the budget took its queue): reading it to the
                # end finds the connection closed before the answer's end.
                for s in slow:
                    got, tail = 0, b""
                    s.settimeout(5)
                    try:
                        while True:
                            b = s.recv(1 << 20)
                            if not b:
                                break
                            got += len(b)
                            tail = (tail + b)[-16:]
                    except socket.timeout:
                        self.fail("a slow reader's answer was kept for it (%d bytes read, "
                                  "more coming)" % got)
                    except ConnectionResetError:
                        pass
                    self.assertFalse(tail.endswith(b"0\r\n\r\n"), "a slow reader got it whole")
        finally:
            for s in slow:
                s.close()
        # A client that reads gets a streamed answer whole (omitEmptyBuckets:
        # about 100 KB, more than one chunk).
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=30)
        conn.request("GET", path + "&omitEmptyBuckets=true")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        self.assertEqual(resp.status, 200, body[:300])
        data = json.loads(body)
        self.assertEqual(len(data["series"]), GROUPS)
        self.assertEqual(sum(len(s.get("buckets", [])) for s in data["series"]), GROUPS)
        self.assert_survived()


class WideAnswerStreamRemoteTest(WideAnswerStreamTest):
    """The same attack on analytics-restbridge --upstream (the answer is
    encoded on its forwarding worker): the bridge's memory is watched."""

    BRIDGE = "remote"

    def setUp(self):
        super().setUp()
        self.baseline_rss = rss_bytes(self.bridge.proc.pid)

    def rss_watch(self):
        # The bridge decodes each gRPC answer whole (about 30 MB here, in
        # malloc arenas of its forwarding workers, which glibc trims later):
        # one such answer more is allowed; the answers it used to pin, JSON
        # and decoded message for each slow reader, are not.
        self.baseline_rss += 32 * 1024 * 1024
        watch = super().rss_watch()
        watch.pid = self.bridge.proc.pid
        return watch

    def assert_rss_settles(self, seconds=10.0):
        self.baseline_rss -= 32 * 1024 * 1024
        deadline = time.monotonic() + seconds
        while rss_bytes(self.bridge.proc.pid) > self.baseline_rss + 64 * 1024 * 1024:
            self.assertLess(time.monotonic(), deadline, "the bridge's memory did not settle")
            time.sleep(0.2)
