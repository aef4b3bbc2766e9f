"""The bridge's operational endpoints, in both upstream modes (analyticsd's
own PORT, and analytics-restbridge in front of it):

- GET /metrics is Prometheus text (checked line by line against the
  exposition format) and counts REST requests per route, RPCs per method,
  ingestion and commit latency; every metric dashboards/analyticsd.json
  queries exists in a real scrape;
- GET /openapi.json is an OpenAPI 3 document listing every path of the
  contracts' google.api.http annotations, with the error schema;
- GET /health reports the store (in-process) or the upstream (remote).
"""

import http.client
import json
import os
import re
import unittest

import harness
import stubs

TIMEOUT_S = 10
DASHBOARD = os.path.join(stubs.REPO, "dashboards", "analyticsd.json")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.eE+-]+|[+-]Inf|NaN)$')


def get(port, path, method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def parse_metrics(text):
    """{family: type} and the set of sample names; fails on a malformed line."""
    types, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            if not m:
                raise AssertionError("not a Prometheus sample line: %r" % line)
            samples.add(m.group(1))
    return types, samples


def dashboard_metrics():
    """Metric names of every query of the dashboard (histograms by family)."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    names = set()
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            names.update(re.findall(r"\b(ana_[a-z0-9_]+)\b", t["expr"]))
    return names


class OpsTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Traffic through REST, so per-route and per-RPC series exist.
        body = json.dumps({"eventType": "ops", "eventName": "scrape_test"}).encode()
        status, _, _ = get(cls.rest_port, "/api/events", "POST", body,
                           {"Content-Type": "application/json"})
        assert status == 200, status
        get(cls.rest_port, "/api/events/search?pageSize=1")
        # A free-text search waits for the search index to reach the event.
        status, _, _ = get(cls.rest_port, "/api/events/search?pageSize=1&query=scrape_test")
        assert status == 200, status

    def scrape(self):
        status, h, body = get(self.rest_port, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"), h["content-type"])
        return body.decode()

    def test_metrics_format_and_families(self):
        types, samples = parse_metrics(self.scrape())
        for name, kind in (("ana_http_requests_total", "counter"),
                           ("ana_http_request_duration_seconds", "histogram"),
                           ("ana_rpc_requests_total", "counter"),
                           ("ana_rpc_duration_seconds", "histogram"),
                           ("ana_rpc_streams_open", "gauge"),
                           ("ana_websocket_connections_open", "gauge")):
            self.assertEqual(types.get(name), kind, name)
        for name in ("ana_http_request_duration_seconds_bucket",
                     "ana_http_request_duration_seconds_sum",
                     "ana_http_request_duration_seconds_count"):
            self.assertIn(name, samples)
        if self.BRIDGE == "in-process":
            for name in ("ana_ingest_commits_total", "ana_ingest_events_stored_total",
                         "ana_ingest_queued_events", "ana_ingest_last_commit_sequence"):
                self.assertIn(name, samples)
            self.assertEqual(types.get("ana_ingest_commit_duration_seconds"), "histogram")
            self.assertEqual(types.get("ana_search_index_sequence"), "gauge")
        else:
            self.assertIn("ana_upstream_up", samples)

    def test_metrics_count_routes_and_rpcs(self):
        text = self.scrape()
        self.assertRegex(text, r'ana_http_requests_total\{method="POST",route="/api/events",'
                               r'status="200"\} [1-9]')
        self.assertRegex(text, r'ana_rpc_requests_total\{transport="http",method="/analytics.v1.'
                               r'EventService/TrackEvent",code="OK"\} [1-9]')
        if self.BRIDGE == "in-process":
            self.assertRegex(text, r"ana_ingest_events_stored_total [1-9]")
            self.assertRegex(text, r'ana_ingest_commit_duration_seconds_bucket\{le="\+Inf"\} [1-9]')
            self.assertRegex(text, r"ana_search_index_sequence [1-9]")

    def test_dashboard_queries_existing_metrics(self):
        with open(DASHBOARD) as f:
            json.load(f)
        _, samples = parse_metrics(self.scrape())
        if self.BRIDGE == "remote":
            # The ingest panels read analyticsd: scrape it too.
            _, more = parse_metrics(get(self.server.http_port, "/metrics")[2].decode())
            samples |= more
        wanted = dashboard_metrics()
        if self.BRIDGE == "in-process":
            # The remote bridge's own panel: checked by OpsRemoteTest.
            wanted = {n for n in wanted if not n.startswith("ana_upstream_")}
        missing = sorted(wanted - samples)
        self.assertEqual(missing, [], "metrics the dashboard queries but /metrics lacks")

    def test_openapi_lists_every_route(self):
        status, h, body = get(self.rest_port, "/openapi.json")
        self.assertEqual(status, 200)
        self.assertIn("application/json", h["content-type"])
        doc = json.loads(body)
        self.assertTrue(doc["openapi"].startswith("3."))
        paths = doc["paths"]
        ns = stubs.load()
        for m in stubs.analytics_methods():
            opts = m.descriptor.GetOptions()
            if not opts.HasExtension(ns.annotations_pb2.http):
                continue
            rule = opts.Extensions[ns.annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            template = re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", getattr(rule, verb))
            with self.subTest(route="%s %s" % (verb, template)):
                self.assertIn(template, paths)
                self.assertIn(verb, paths[template])
                op = paths[template][verb]
                self.assertIn("default", op["responses"])
                for var in re.findall(r"\{([^}]+)\}", template):
                    self.assertIn(var, [p["name"] for p in op["parameters"] if p["in"] == "path"])
        for path in ("/health", "/metrics", "/openapi.json"):
            self.assertIn(path, paths)
        err = doc["components"]["schemas"]["google.rpc.Status"]
        self.assertEqual(set(err["required"]), {"code", "message", "details"})
        # Every $ref resolves.
        refs = set(re.findall(r'"\$ref": ?"#/components/(schemas|responses)/([^"]+)"', body.decode()))
        for kind, name in refs:
            self.assertIn(name, doc["components"][kind])
        # JSON names, not proto names.
        search = paths["/api/events/search"]["get"]
        self.assertIn("pageSize", [p["name"] for p in search["parameters"]])

    def test_health(self):
        status, _, body = get(self.rest_port, "/health")
        self.assertEqual(status, 200)
        h = json.loads(body)
        self.assertEqual(h["status"], "ok")
        if self.BRIDGE == "in-process":
            self.assertEqual(h["store"], "ok")
            self.assertIsInstance(h["schemaVersion"], int)
            self.assertIn("ingestQueuedEvents", h)
        else:
            self.assertEqual(h["upstreamStatus"], "SERVING")

    def test_ops_endpoints_take_get_only(self):
        for path in ("/metrics", "/openapi.json", "/health"):
            status, h, _ = get(self.rest_port, path, "DELETE")
            self.assertEqual(status, 405, path)
            self.assertEqual(h.get("allow"), "GET, OPTIONS")


class OpsRemoteTest(OpsTest):
    BRIDGE = "remote"


class RemoteUpstreamDownTest(unittest.TestCase):
    """analytics-restbridge whose upstream stops: /health turns 503 and calls
    answer 503 UNAVAILABLE as JSON errors."""

    def test_upstream_down(self):
        server = harness.Server().start()
        self.addCleanup(server.cleanup)
        bridge = harness.RemoteBridge(server).start()
        self.addCleanup(bridge.stop)
        server.stop()
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, _, body = get(bridge.port, "/health")
            if status == 503:
                break
            time.sleep(0.2)
        self.assertEqual(status, 503, body)
        self.assertEqual(json.loads(body)["upstreamStatus"], "UNREACHABLE")
        status, _, body = get(bridge.port, "/api/events/search")
        self.assertEqual(status, 503, body)
        err = json.loads(body)
        self.assertEqual(err["code"], 14)
        self.assertEqual(bridge.stop(), 0)


if __name__ == "__main__":
    unittest.main()
