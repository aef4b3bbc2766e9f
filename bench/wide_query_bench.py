#!/usr/bin/python3
"""The wide metric query against ClickHouse: on --events events (50 campaigns
x 20 groups, four event names, timestamps spread over the last 30 days), the
hourly count of one event name per (campaign, group) over those 30 days
(1,000 groups x 720 hourly buckets), asked as GetMetricData with topN 1000
and omitEmptyBuckets over REST and gRPC (from the metric's rollups) and as
`SELECT ... GROUP BY campaign, group, toStartOfHour(ts)` of ClickHouse 18.16
(started here on loopback with a temporary configuration, fed the same
events as JSONEachRow into a MergeTree), in the same run, in alternating
rounds (REST, gRPC, ClickHouse, REST, ...). Each time is from sending the
request until the last byte of the answer arrived (the bodies are not
parsed on the clock). Also checks, once, that the three answers hold the same
cells, that the rollup answer equals the raw path's, and times the raw path.
Starts its own analyticsd on a fresh data directory and replaces its section
of bench/RESULTS.md (a run with --events other than 10^6 prints only).

Usage: /usr/bin/python3 bench/wide_query_bench.py [--binary build/server/analyticsd]
       [--events 1000000] [--rounds 11] [--no-clickhouse] [--out bench/RESULTS.md]
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import grpc  # noqa: E402

import harness  # noqa: E402
import stubs  # noqa: E402
from metric_stream_bench import replace_section  # noqa: E402

HEADING = "## Wide metric query against ClickHouse (`bench/wide_query_bench.py`)"
NAMES = ("message_sent", "message_delivered", "message_read", "message_clicked")
CAMPAIGNS, GROUPS, DAYS, BATCH = 50, 20, 30, 1000
HOUR = 3600

CH_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/log/server.log</log>
    <errorlog>{d}/log/err.log</errorlog><console>0</console></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <timezone>UTC</timezone>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
  <mlock_executable>false</mlock_executable>
</yandex>
"""
CH_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"""


def make_events(n, now):
    """n events over the DAYS days before now (seconds), in time order (an
    import of a month of history; the order does not change the question)."""
    rnd = random.Random(21)
    span = DAYS * 86400
    stamps = sorted(now - span + rnd.random() * span for _ in range(n))
    return [(t, NAMES[rnd.randrange(4)], "c%02d" % rnd.randrange(CAMPAIGNS),
             "g%02d" % rnd.randrange(GROUPS)) for t in stamps]


def load_analyticsd(server, ns, events):
    """TrackEvents in batches of BATCH, 2 clients: returns events/s."""
    epb = ns.analytics["events"][0]
    batches = []
    for k in range(0, len(events), BATCH):
        req = epb.TrackEventsRequest()
        for t, name, c, g in events[k:k + BATCH]:
            e = req.events.add(event_type="track", event_name=name)
            e.timestamp.seconds = int(t)
            e.timestamp.nanos = int((t - int(t)) * 1e9) // 1000000 * 1000000
            e.properties.update({"campaignId": c, "groupId": g})
        batches.append(req.SerializeToString())
    errors = []

    def client(k):
        ch = server.channel()
        call = ch.unary_unary("/analytics.v1.EventService/TrackEvents")
        try:
            for i in range(k, len(batches), 2):
                call(batches[i], timeout=120)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return len(events) / (time.perf_counter() - t0)


class ClickHouse:
    """clickhouse-server on loopback with a temporary configuration."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ana-ch-")
        self.http = harness.free_port()
        tcp = harness.free_port()
        for sub in ("log", "data", "tmp", "user_files", "format_schemas"):
            os.mkdir(os.path.join(self.dir, sub))
        with open(os.path.join(self.dir, "config.xml"), "w") as f:
            f.write(CH_CONFIG.format(d=self.dir, http=self.http, tcp=tcp))
        with open(os.path.join(self.dir, "users.xml"), "w") as f:
            f.write(CH_USERS)
        self.proc = subprocess.Popen(
            ["clickhouse-server", "--config-file=" + os.path.join(self.dir, "config.xml")],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                if self.query("SELECT 1").strip() == b"1":
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("clickhouse-server did not start (see %s/log)" % self.dir)
            time.sleep(0.2)

    def query(self, sql, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=300)
        try:
            if body is None:
                conn.request("POST", "/", sql.encode())
            else:
                conn.request("POST", "/?query=" + urllib.parse.quote(sql), body)
            resp = conn.getresponse()
            out = resp.read()
            if resp.status != 200:
                raise RuntimeError("clickhouse: %d %s" % (resp.status, out[:300]))
            return out
        finally:
            conn.close()

    def load(self, events):
        self.query("CREATE TABLE ev (t DateTime, name String, campaign String, grp String) "
                   "ENGINE = MergeTree() ORDER BY (name, t)")
        t0 = time.perf_counter()
        for k in range(0, len(events), BATCH):
            body = "\n".join(json.dumps({"t": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)), "name": n, "campaign": c, "grp": g})
                             for t, n, c, g in events[k:k + BATCH]).encode()
            self.query("INSERT INTO ev FORMAT JSONEachRow", body)
        rate = len(events) / (time.perf_counter() - t0)
        self.query("OPTIMIZE TABLE ev FINAL")
        return rate

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


FIRST_BYTE = []  # seconds until the status line and headers, of each timed_http call


def timed_http(port, path, body=None, headers=None):
    """Seconds until the last byte of the answer; the body. Appends the
    seconds until its headers to FIRST_BYTE."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        t0 = time.perf_counter()
        conn.request("POST" if body is not None else "GET", path, body, headers or {})
        resp = conn.getresponse()
        FIRST_BYTE.append(time.perf_counter() - t0)
        out = resp.read()
        took = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError("%s: %d %s" % (path, resp.status, out[:300]))
        return took, out
    finally:
        conn.close()


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=os.path.join(HERE, "..", "build", "server", "analyticsd"))
    p.add_argument("--events", type=int, default=1000000)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--no-clickhouse", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    a = p.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(a.binary)
    ns = stubs.load()
    mpb, mgrpc = ns.analytics["metrics"]
    now = int(time.time()) // HOUR * HOUR  # the range ends on an hour
    events = make_events(a.events, now)
    frm, to = now - DAYS * 86400, now
    server = harness.Server(log_level="warn")
    server.start()
    ch = None
    try:
        rate = load_analyticsd(server, ns, events)
        print("analyticsd: loaded %d events at %.0f ev/s" % (len(events), rate), flush=True)
        stub = mgrpc.MetricServiceStub(server.channel())
        m = stub.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
            name="sent per group", formula="count(message_sent)", type="gauge",
            aggregation="sum", dimensions=["campaignId", "groupId"])), timeout=30)
        req = mpb.GetMetricDataRequest(metric_id=m.metric_id, interval="1h", top_n=1000,
                                       omit_empty_buckets=True)
        getattr(req, "from").seconds = frm
        req.to.seconds = to
        raw_req = req.SerializeToString()
        grpc_call = server.channel(options=[("grpc.max_receive_message_length", 1 << 30)]).unary_unary(
            "/analytics.v1.MetricService/GetMetricData")
        t0 = time.perf_counter()
        while True:  # until the backfill completed
            try:
                grpc_call(raw_req, timeout=300, metadata=[("x-metric-source", "rollup")])
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                time.sleep(0.2)
        print("rollups complete after %.1f s" % (time.perf_counter() - t0), flush=True)
        rest_path = ("/api/metrics/%s/data?from=%s&to=%s&interval=1h&topN=1000"
                     "&omitEmptyBuckets=true" % (m.metric_id, rfc3339(frm), rfc3339(to)))
        sql = ("SELECT campaign, grp, toStartOfHour(t) AS h, count() AS c FROM ev "
               "WHERE name = 'message_sent' AND t >= toDateTime(%d) AND t < toDateTime(%d) "
               "GROUP BY campaign, grp, h FORMAT JSONEachRow" % (frm, to))
        if not a.no_clickhouse:
            ch = ClickHouse()
            ch_rate = ch.load(events)
            print("clickhouse: loaded at %.0f ev/s" % ch_rate, flush=True)

        # The same cells from every path, once.
        _, rest_body = timed_http(server.http_port, rest_path)
        grpc_body = grpc_call(raw_req, timeout=300)
        t0 = time.perf_counter()
        raw_body = grpc_call(raw_req, timeout=300, metadata=[("x-metric-source", "raw")])
        raw_secs = time.perf_counter() - t0
        assert raw_body == grpc_body, "rollup answer differs from the raw path's"
        cells = {}
        d = mpb.MetricData.FromString(grpc_body)
        for s in d.series:
            for b in s.buckets:
                assert b.HasField("value")
                cells[(s.dimensions["campaignId"], s.dimensions["groupId"],
                       b.start.seconds)] = int(b.value.value)
        rest_cells = {}
        for s in json.loads(rest_body)["series"]:
            for b in s.get("buckets", []):
                ts = datetime.datetime.strptime(b["start"], "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                rest_cells[(s["dimensions"]["campaignId"], s["dimensions"]["groupId"],
                            int(ts))] = int(b["value"])
        assert rest_cells == cells, "REST and gRPC answers differ"
        n_series = len(d.series)
        expect = {}
        for t, n, c, g in events:
            if n == "message_sent" and frm <= t < to:
                k = (c, g, int(t) // HOUR * HOUR)
                expect[k] = expect.get(k, 0) + 1
        assert cells == expect, "answer differs from the events sent"
        if ch:
            _, ch_body = timed_http(ch.http, "/?query=" + urllib.parse.quote(sql))
            ch_cells = {}
            for line in ch_body.splitlines():
                r = json.loads(line)
                ts = datetime.datetime.strptime(r["h"], "%Y-%m-%d %H:%M:%S").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                ch_cells[(r["campaign"], r["grp"], int(ts))] = int(r["c"])
            assert ch_cells == cells, "ClickHouse's answer differs"
        print("answers agree: %d series, %d non-empty buckets; raw path %.2f s"
              % (n_series, len(cells), raw_secs), flush=True)

        # Every bucket (omitEmptyBuckets false, the default): 720,000 points.
        full_req = mpb.GetMetricDataRequest.FromString(raw_req)
        full_req.omit_empty_buckets = False
        full_raw = full_req.SerializeToString()
        full_path = rest_path.replace("&omitEmptyBuckets=true", "")
        times = {"rest": [], "grpc": [], "ch": [], "rest_full": [], "grpc_full": []}
        first = {"rest": [], "rest_full": []}
        sizes = {"rest": len(rest_body), "grpc": len(grpc_body)}
        for _ in range(a.rounds):
            took, body = timed_http(server.http_port, rest_path)
            times["rest"].append(took)
            first["rest"].append(FIRST_BYTE[-1])
            t0 = time.perf_counter()
            grpc_call(raw_req, timeout=300)
            times["grpc"].append(time.perf_counter() - t0)
            took, body = timed_http(server.http_port, full_path)
            times["rest_full"].append(took)
            first["rest_full"].append(FIRST_BYTE[-1])
            sizes["rest_full"] = len(body)
            t0 = time.perf_counter()
            sizes["grpc_full"] = len(grpc_call(full_raw, timeout=300))
            times["grpc_full"].append(time.perf_counter() - t0)
            if ch:
                took, body = timed_http(ch.http, "/?query=" + urllib.parse.quote(sql))
                times["ch"].append(took)
                sizes["ch"] = len(body)
        load_avg = os.getloadavg()[0]
    finally:
        server.stop()
        server.cleanup()
        if ch:
            ch.stop()

    p50 = {k: statistics.median(v) for k, v in times.items() if v}
    for k, v in sorted(p50.items()):
        print("%s p50 %.1f ms (min %.1f, max %.1f)" % (k, v * 1000, min(times[k]) * 1000,
                                                       max(times[k]) * 1000))
    rows = []
    for k, label in (("rest", "analyticsd REST `GET /api/metrics/{id}/data`"),
                     ("grpc", "analyticsd gRPC `GetMetricData`"),
                     ("rest_full", "analyticsd REST, every bucket (no `omitEmptyBuckets`: "
                      "720,000 points)"),
                     ("grpc_full", "analyticsd gRPC, every bucket (720,000 points)")):
        ratio = ""
        met = ""
        if "ch" in p50:
            ratio = "%.2fx" % (p50[k] / p50["ch"])
            met = "yes" if p50[k] <= p50["ch"] else "NO"
            if k.endswith("_full"):  # not the question ClickHouse answers
                met = "(another question)"
        rows.append("| %s, from the rollups | %.0f ms (%.0f / %.0f) | %d | %s | %s |"
                    % (label, p50[k] * 1000, min(times[k]) * 1000, max(times[k]) * 1000,
                       sizes[k], ratio, met))
    # REST against gRPC: each round's REST time over the gRPC time of the
    # same round (the machine's load changes between rounds, less within one).
    paired = {k: statistics.median(r / g for r, g in zip(times[k], times[g_k]))
              for k, g_k in (("rest", "grpc"), ("rest_full", "grpc_full"))}
    first_p50 = {k: statistics.median(v) for k, v in first.items()}
    for k in paired:
        print("%s / gRPC per round, median %.2fx; REST headers after %.1f ms (p50)"
              % (k, paired[k], first_p50[k] * 1000))
    if "ch" in p50:
        rows.append("| ClickHouse 18.16 HTTP, `FORMAT JSONEachRow` | %.0f ms (%.0f / %.0f) | %d "
                    "| 1x | |" % (p50["ch"] * 1000, min(times["ch"]) * 1000,
                                  max(times["ch"]) * 1000, sizes["ch"]))
    section = (HEADING + "\n\n"
               "Machine: %d CPUs, Linux %s, shared with other work (1-minute load average %.1f "
               "at the end). Command: `/usr/bin/python3 bench/wide_query_bench.py --events %d`. "
               "%d events (%d campaigns x %d groups, four names, timestamps over 30 days) sent "
               "to a fresh analyticsd over gRPC (%.0f events/s) and to ClickHouse as JSONEachRow "
               "(MergeTree, `OPTIMIZE ... FINAL` after the load). The question: the hourly count "
               "of `message_sent` per (campaign, group) over the 30 days, 720 buckets; "
               "analyticsd with `topN=1000&omitEmptyBuckets=true` from the metric's rollups "
               "(%d series, %d non-empty buckets, the same cells as ClickHouse's answer and as "
               "the raw path's, which took %.2f s). Each time from the request to the last byte "
               "of the answer, %d alternating rounds; median (min / max).\n\n"
               "| Query | p50 (min / max) | Bytes | vs ClickHouse | p50 <= ClickHouse's |\n"
               "|---|---|---|---|---|\n%s\n\n"
               "REST against gRPC, the median over the rounds of the REST time over the gRPC "
               "time of the same round: %.2fx with `omitEmptyBuckets`, %.2fx for every bucket. "
               "The REST answer's status and headers arrive after %.0f ms and %.0f ms (p50): "
               "the JSON goes out in chunks while it is encoded.\n"
               % (os.cpu_count(), platform.release(), load_avg, a.events, a.events, CAMPAIGNS,
                  GROUPS, rate, n_series, len(cells), raw_secs, a.rounds, "\n".join(rows),
                  paired["rest"], paired["rest_full"], first_p50["rest"] * 1000,
                  first_p50["rest_full"] * 1000))
    print(section)
    if a.events == 1000000:
        replace_section(a.out, HEADING, section)


if __name__ == "__main__":
    main()
