"""What every adversarial test shares: a live analyticsd (the integration
harness's Server), raw sockets, and the checks made after each attack.

An attack test (a subclass of AttackTestCase):
  - measures the server's idle resident memory (`baseline_rss`) before it;
  - runs the attack inside `with self.rss_watch():`, which samples the
    server's RSS every 50 ms and fails if it ever exceeds
    baseline + the stream and body budgets + 64 MiB;
  - then calls `self.assert_survived()`: REST /health answers and gRPC
    health answers SERVING on a fresh connection, and the memory is back
    within 64 MiB of the baseline within 10 s (`assert_rss_settles`).

The budgets come from the class's SERVER_ENV (HTTP_BODY_BUDGET_MB and
STREAM_QUEUE_BUDGET_MB, 128 MiB each by default), so a test that lowers them
gets a tighter bound.
"""

import http.client
import json
import os
import random
import socket
import sys
import threading
import time
import uuid

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "python"))

import harness  # noqa: E402
import stubs  # noqa: E402

MIB = 1024 * 1024
RSS_SLACK = 64 * MIB
SETTLE_S = 10.0
DEFAULT_BUDGET_MB = 128


def rss_bytes(pid):
    """Resident memory of a process, from /proc (VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def raw_http(port, data, read_timeout=5.0, until_close=False, expect_responses=None):
    """Sends raw bytes to the REST port and returns everything read back.

    Reads until the peer closes (until_close), or until expect_responses
    HTTP status lines have arrived with their bodies complete enough to see
    the next one, or until read_timeout passes with nothing new.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        if isinstance(data, str):
            data = data.encode()
        s.sendall(data)
        return read_all(s, read_timeout, until_close, expect_responses)
    finally:
        s.close()


def read_all(sock, read_timeout=5.0, until_close=False, expect_responses=None):
    """Reads from sock until it closes, expect_responses status lines came, or
    read_timeout passes with nothing new. Returns the bytes read."""
    out = b""
    sock.settimeout(read_timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
        if (not until_close and expect_responses is not None
                and out.count(b"HTTP/1.1 ") >= expect_responses and _bodies_complete(out)):
            break
    return out


def _bodies_complete(data):
    """True when the last response in data has its whole Content-Length body."""
    last = data.rfind(b"HTTP/1.1 ")
    head_end = data.find(b"\r\n\r\n", last)
    if head_end < 0:
        return False
    head = data[last:head_end].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return len(data) - (head_end + 4) >= int(line.split(":", 1)[1])
    return True


def status_codes(data):
    """The status codes of every response in raw HTTP bytes, in order."""
    codes = []
    for part in data.split(b"HTTP/1.1 ")[1:]:
        try:
            codes.append(int(part[:3]))
        except ValueError:
            pass
    return codes


class RssWatch:
    """Samples a process's RSS on a thread; records the peak."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


class AttackTestCase(harness.ServerTestCase):
    """One server per class; each test is an attack followed by the checks."""

    def setUp(self):
        self.baseline_rss = rss_bytes(self.server.proc.pid)
        self.watch = None

    def budgets_bytes(self):
        env = self.SERVER_ENV or {}
        body = int(env.get("HTTP_BODY_BUDGET_MB", DEFAULT_BUDGET_MB))
        stream = int(env.get("STREAM_QUEUE_BUDGET_MB", DEFAULT_BUDGET_MB))
        return (body + stream) * MIB

    def rss_watch(self):
        """Context manager around an attack: fails if the RSS peak went over
        baseline + both budgets + 64 MiB (checked when it ends)."""
        test = self

        class _Checked(RssWatch):
            def __exit__(self, *exc):
                super().__exit__(*exc)
                limit = test.baseline_rss + test.budgets_bytes() + RSS_SLACK
                test.assertLessEqual(
                    self.peak, limit,
                    "RSS peaked at %.0f MiB during the attack: over the baseline %.0f MiB "
                    "+ budgets %.0f MiB + 64 MiB" % (self.peak / MIB, test.baseline_rss / MIB,
                                                     test.budgets_bytes() / MIB))
                return False

        self.watch = _Checked(self.server.proc.pid)
        return self.watch

    def wide_metric(self, name, groups, hours, seed):
        """A metric counting `name` by (campaignId, groupId) over `groups`
        groups, one event each at a random hour of the last `hours` hours,
        with its rollups complete. Returns (metric stub, the GetMetricData
        request with topN 1000 and omitEmptyBuckets, start, end) in seconds."""
        mpb, mgrpc = self.ns.analytics["metrics"]
        epb, egrpc = self.ns.analytics["events"]
        metrics = mgrpc.MetricServiceStub(self.channel)
        tag = uuid.uuid4().hex[:8]
        end = int(time.time()) // 3600 * 3600
        start = end - hours * 3600
        rnd = random.Random(seed)
        req = epb.TrackEventsRequest()
        for g in range(groups):
            e = req.events.add(event_type="track", event_name=name, event_id="%s-%d" % (tag, g))
            e.timestamp.FromSeconds(start + rnd.randrange(hours) * 3600)
            e.properties.update({"campaignId": "c%02d" % (g // 20), "groupId": "g%02d" % (g % 20)})
        events = egrpc.EventServiceStub(self.channel)
        for k in range(0, groups, 500):
            events.TrackEvents(epb.TrackEventsRequest(events=req.events[k:k + 500]), timeout=30)
        mid = metrics.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
            name="%s %s" % (name, tag), formula="count(%s)" % name, aggregation="sum",
            dimensions=["campaignId", "groupId"])), timeout=30).metric_id
        q = mpb.GetMetricDataRequest(metric_id=mid, interval="1h", top_n=1000,
                                     omit_empty_buckets=True)
        getattr(q, "from").FromSeconds(start)
        q.to.FromSeconds(end)
        deadline = time.time() + 60
        while True:  # the rollups complete (a small backfill)
            try:
                metrics.GetMetricData(q, timeout=60, metadata=[("x-metric-source", "rollup")])
                return metrics, q, start, end
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
                self.assertLess(time.time(), deadline)
                time.sleep(0.1)

    def rest_json_ok(self, method, path, body=None, timeout=30):
        """A REST call on a new connection that must answer 200: its JSON."""
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=timeout)
        try:
            conn.request(method, path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.assertEqual(resp.status, 200, data[:300])
        return json.loads(data)

    def rest_health(self, timeout=5.0):
        """GET /health on a new connection: (status, body)."""
        data = raw_http(self.rest_port, "GET /health HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n", read_timeout=timeout, until_close=True)
        codes = status_codes(data)
        self.assertTrue(codes, "/health gave no HTTP answer within %.0f s: %r"
                        % (timeout, data[:200]))
        return codes[0], data

    def assert_rss_settles(self, seconds=SETTLE_S):
        """RSS comes back within 64 MiB of the idle baseline within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            now = rss_bytes(self.server.proc.pid)
            if now <= self.baseline_rss + RSS_SLACK:
                return
            if time.monotonic() > deadline:
                self.fail("RSS %.0f MiB %.0f s after the attack: more than 64 MiB over the "
                          "idle baseline %.0f MiB" % (now / MIB, seconds, self.baseline_rss / MIB))
            time.sleep(0.2)

    def assert_survived(self, rest_status=200):
        """The server still answers REST /health (with rest_status) and gRPC
        health SERVING on a fresh connection, and its memory settles."""
        self.assertServerAlive()
        code, data = self.rest_health()
        self.assertEqual(code, rest_status, "/health: %r" % data[:300])
        self.assertServing(fresh=True)
        self.assert_rss_settles()
