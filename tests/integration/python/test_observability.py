"""What Prometheus and its tools read from GET /metrics, in both bridge modes:

- `promtool check metrics` accepts the whole scrape (names, types, HELP);
- the process families every Prometheus client exports (process_cpu_seconds_total,
  process_resident_memory_bytes, process_open_fds, process_max_fds,
  process_start_time_seconds) hold this process's values, and
  analyticsd_build_info{version,revision} is 1 with `analyticsd --version`'s version;
- the go-grpc-prometheus families (grpc_server_started_total,
  grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code},
  grpc_server_handling_seconds) count gRPC calls, and only gRPC calls;
- the scrape is gzip-compressed when Accept-Encoding asks for it (as Prometheus does);
- every metric the Grafana dashboard queries exists in a scrape;
- `analyticsd healthcheck` (the Dockerfile's HEALTHCHECK) exits 0 only while /health answers 200.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import time
import unittest

import grpc

import harness
import stubs
from test_ops import get, parse_metrics

DASHBOARD = os.path.join(stubs.REPO, "dashboards", "analyticsd.json")


def sample(text, name, **labels):
    """The value of the one sample of name with exactly these labels, or None."""
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    line = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape("{%s}" % want) if want else ""),
                     text, re.M)
    return float(line.group(1)) if line else None


class ObservabilityTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        epb, egrpc = cls.ns.analytics["events"]
        mpb, mgrpc = cls.ns.analytics["metrics"]
        events = egrpc.EventServiceStub(cls.channel)
        for _ in range(3):
            events.TrackEvent(epb.TrackEventRequest(
                event=epb.Event(event_name="scrape_test", event_type="ops")), timeout=10)
        try:
            mgrpc.MetricServiceStub(cls.channel).GetMetric(
                mpb.GetMetricRequest(metric_id="met_doesnotexist"), timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
        # One REST call: it must not count as a gRPC call.
        status, _, _ = get(cls.rest_port, "/api/metrics?pageSize=1")
        assert status == 200, status

    def scrape(self, port=None):
        status, h, body = get(port or self.rest_port, "/metrics")
        self.assertEqual(status, 200)
        return body.decode()

    @unittest.skipUnless(shutil.which("promtool"), "promtool not installed (Debian: prometheus)")
    def test_promtool_accepts_the_scrape(self):
        text = self.scrape()
        r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, "promtool check metrics:\n%s%s"
                         % (r.stdout.decode(), r.stderr.decode()))

    def test_gzip_when_the_scraper_asks(self):
        status, h, body = get(self.rest_port, "/metrics",
                              headers={"Accept-Encoding": "gzip, deflate"})
        self.assertEqual(status, 200)
        self.assertEqual(h.get("content-encoding"), "gzip")
        self.assertIn("Accept-Encoding", h.get("vary", ""))
        self.assertEqual(int(h["content-length"]), len(body))
        text = gzip.decompress(body).decode()
        self.assertIn("# TYPE process_cpu_seconds_total counter", text)
        self.assertLess(len(body), len(text) / 3)
        for refused in ("gzip;q=0", "identity", "br"):
            status, h, body = get(self.rest_port, "/metrics", headers={"Accept-Encoding": refused})
            self.assertEqual(status, 200)
            self.assertNotIn("content-encoding", h, refused)
            self.assertIn("# TYPE", body.decode())

    def test_process_families(self):
        text = self.scrape()
        types, _ = parse_metrics(text)
        for name, kind in (("process_cpu_seconds_total", "counter"),
                           ("process_resident_memory_bytes", "gauge"),
                           ("process_virtual_memory_bytes", "gauge"),
                           ("process_open_fds", "gauge"),
                           ("process_max_fds", "gauge"),
                           ("process_start_time_seconds", "gauge")):
            self.assertEqual(types.get(name), kind, name)
        pid = (self.bridge or self.server).proc.pid
        with open("/proc/%d/statm" % pid) as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        got = sample(text, "process_resident_memory_bytes")
        self.assertGreater(got, rss / 2)
        self.assertLess(got, rss * 2)
        fds = len(os.listdir("/proc/%d/fd" % pid))
        self.assertLess(abs(sample(text, "process_open_fds") - fds), 16)
        start = sample(text, "process_start_time_seconds")
        self.assertLess(abs(start - self.started_at()), 120)
        self.assertGreater(sample(text, "process_cpu_seconds_total"), 0)

    def started_at(self):
        """The process's start from ps, as seconds since the epoch."""
        pid = (self.bridge or self.server).proc.pid
        out = subprocess.run(["ps", "-o", "etimes=", "-p", str(pid)], capture_output=True,
                             text=True, check=True).stdout
        return time.time() - int(out.strip())

    def test_build_info(self):
        binary = harness.restbridge_path() if self.bridge else harness.binary_path()
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
        program = "analytics_restbridge" if self.bridge else "analyticsd"
        text = self.scrape()
        m = re.search(r'^%s_build_info\{version="([^"]*)",revision="([^"]*)"\} 1$' % program,
                      text, re.M)
        self.assertIsNotNone(m, "%s_build_info missing" % program)
        self.assertEqual(m.group(1), version)
        self.assertRegex(m.group(2), r"^([0-9a-f]{7,40}|unknown)$")

    def test_grpc_server_families(self):
        # The gRPC families count what analyticsd serves over gRPC (the remote
        # bridge forwards over gRPC, so its REST call counts there too).
        text = self.scrape(self.server.http_port)
        types, _ = parse_metrics(text)
        self.assertEqual(types.get("grpc_server_started_total"), "counter")
        self.assertEqual(types.get("grpc_server_handled_total"), "counter")
        self.assertEqual(types.get("grpc_server_handling_seconds"), "histogram")
        track = dict(grpc_type="unary", grpc_service="analytics.v1.EventService",
                     grpc_method="TrackEvent")
        self.assertEqual(sample(text, "grpc_server_started_total", **track), 3)
        self.assertEqual(sample(text, "grpc_server_handled_total", **track, grpc_code="OK"), 3)
        self.assertEqual(sample(text, "grpc_server_handling_seconds_count", **track), 3)
        self.assertEqual(sample(text, "grpc_server_handling_seconds_bucket", **track, le="+Inf"), 3)
        get_metric = dict(grpc_type="unary", grpc_service="analytics.v1.MetricService",
                          grpc_method="GetMetric")
        self.assertEqual(sample(text, "grpc_server_handled_total", **get_metric,
                                grpc_code="NotFound"), 1)
        # A method never called has its started series at 0, and no handled one.
        stream = dict(grpc_type="server_stream", grpc_service="analytics.v1.RealtimeService",
                      grpc_method="StreamAnalytics")
        self.assertEqual(sample(text, "grpc_server_started_total", **stream), 0)
        lst = dict(grpc_type="unary", grpc_service="analytics.v1.MetricService",
                   grpc_method="ListMetrics")
        want = 1 if self.bridge else None  # in-process REST is not a gRPC call
        self.assertEqual(sample(text, "grpc_server_handled_total", **lst, grpc_code="OK"), want)

    def test_dashboard_queries_existing_metrics(self):
        with open(DASHBOARD) as f:
            dash = json.load(f)
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        names = set()
        for e in exprs:
            names.update(re.findall(r"\b((?:grpc_server|process)_[a-z0-9_]+|analyticsd_build_info)\b",
                                    e))
        for family in ("grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
                       "process_resident_memory_bytes", "process_cpu_seconds_total"):
            self.assertIn(family, names, "the dashboard has no panel on %s" % family)
        _, samples = parse_metrics(self.scrape(self.server.http_port))
        self.assertEqual(sorted(names - samples), [])


class ObservabilityRemoteTest(ObservabilityTest):
    BRIDGE = "remote"


class HealthcheckTest(harness.ServerTestCase):
    """`analyticsd healthcheck`, the Dockerfile's HEALTHCHECK: exit 0 while GET
    /health answers 200, 1 when nothing answers."""

    def healthcheck(self, port):
        env = dict(os.environ, PORT=str(port), HTTP_HOST="0.0.0.0")
        return subprocess.run([harness.binary_path(), "healthcheck"], env=env,
                              capture_output=True, text=True, timeout=15)

    def test_healthy_server_exits_0(self):
        r = self.healthcheck(self.server.http_port)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("answered 200", r.stdout)

    def test_nothing_listening_exits_1(self):
        r = self.healthcheck(harness.free_port())
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("/health", r.stderr)

    def test_bad_port_exits_2(self):
        r = self.healthcheck("http")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("PORT", r.stderr)


if __name__ == "__main__":
    unittest.main()
