#!/usr/bin/python3
"""Peers: analyticsd against InfluxDB 1.6 and ClickHouse 18.16 on the same events.

Starts each system itself on loopback (a temporary directory, a config file
written here, free ports; never the system services), one at a time, and
feeds it the same synthetic marketing events (50 campaigns x 20 groups, four
event names, timestamps spread at random over the last 30 days, a client
eventId each), 1,000 per HTTP request:
  analyticsd  REST POST /api/events/batch (JSON)
  InfluxDB    POST /write (line protocol, precision ms)
  ClickHouse  POST INSERT ... FORMAT JSONEachRow into a MergeTree
then asks each the same question: the hourly count of message_sent per
(campaign, group) over the 30 days, empty buckets left out (analyticsd: a
metric count(message_sent) by campaignId and groupId, GetMetricData over REST
with interval 1h, topN 1000 and omitEmptyBuckets; InfluxDB: SELECT count(id)
... GROUP BY time(1h), campaign, group fill(none); ClickHouse: GROUP BY
campaign_id, group_id, toStartOfHour(timestamp)). Each answer's sum is
checked against the events generated.

Per round and system: ingest with one client into a fresh instance, then
bytes on disk per event once quiescent and the query's p50; ingest with 4
clients into another fresh instance. The baseline: raw SQLite inserts of the
same events into the events tables of store schema 4 (events with its five
indexes, dedupe_keys), batch 1,000, 4 threads, WAL and synchronous=FULL. The
systems take turns within a round (the order rotates from round to round)
and each figure is the median of the rounds. Replaces the section "Peers at
N events" of bench/RESULTS.md.

Usage: /usr/bin/python3 bench/peers/peers_bench.py [--binary build/server/analyticsd]
       [--events 1000000] [--rounds 3] [--queries 5] [--out bench/RESULTS.md]
       [--only ours,influxdb,clickhouse,sqlite] [--smoke] [--note TEXT]
--smoke: 10,000 events, one round, 1 query, no RESULTS.md (checks that every
peer starts, loads, answers the same sums and stops).
"""

import argparse
import ctypes
import datetime
import http.client
import json
import os
import pickle
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration", "python"))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.dont_write_bytecode = True

BATCH = 1000
CAMPAIGNS, GROUPS = 50, 20
# A campaign's funnel: every name's share of the events.
NAMES = (("message_sent", 0.40), ("message_delivered", 0.36), ("message_read", 0.18),
         ("message_clicked", 0.06))
QUERIED = "message_sent"
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
SPAN_DAYS = 30
START_TIMEOUT_S = 60
HTTP_TIMEOUT_S = 900
QUIESCE_TIMEOUT_S = 600
BACKFILL_TIMEOUT_S = 3600
SYSTEMS = ("ours", "influxdb", "clickhouse", "sqlite")


class BenchError(RuntimeError):
    """A system failed to start, to load or to answer."""


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# --- processes ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """In the child before exec: SIGKILL when the benchmark dies, however it dies."""
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def du(path):
    """Bytes allocated on disk under path (as du counts them)."""
    total = 0
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class Peer:
    """A server process of ours: started, waited for, stopped (SIGTERM, then SIGKILL)."""

    name = "peer"

    def __init__(self, root):
        self.dir = tempfile.mkdtemp(prefix=self.name + "-", dir=root)
        self.proc = None
        self.log_path = os.path.join(self.dir, "stdout.log")

    def spawn(self, argv):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)

    def wait_http(self, port, path, ok=(200, 204), logs=()):
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("%s exited with %s while starting; log:\n%s" % (
                    self.name, self.proc.returncode,
                    "\n".join(tail(p) for p in (self.log_path,) + tuple(logs))))
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                c.close()
                if r.status in ok:
                    return
                last = "GET %s: %d" % (path, r.status)
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise BenchError("%s not ready after %d s (%s); log:\n%s" % (
            self.name, START_TIMEOUT_S, last,
            "\n".join(tail(p) for p in (self.log_path,) + tuple(logs))))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log("%s still running 60 s after SIGTERM: killed" % self.name)
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and not self._log.closed:
            self._log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def http_call(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT_S):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body, headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Influx(Peer):
    name = "influxdb"

    def start(self):
        self.port, rpc = free_ports(2)
        self.data, self.wal = os.path.join(self.dir, "data"), os.path.join(self.dir, "wal")
        conf = os.path.join(self.dir, "influxdb.conf")
        with open(conf, "w") as f:
            f.write("""reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = "%s/meta"
[data]
  dir = "%s"
  wal-dir = "%s"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1s"
[retention]
  enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:%d"
  log-enabled = false
[continuous_queries]
  enabled = false
""" % (rpc, self.dir, self.data, self.wal, self.port))
        self.spawn(["influxd", "-config", conf])
        self.wait_http(self.port, "/ping")
        self.query("CREATE DATABASE bench", post=True)
        return self

    def query(self, q, post=False):
        qs = urllib.parse.urlencode({"q": q, "db": "bench", "epoch": "ms"})
        st, out = http_call(self.port, "POST" if post else "GET", "/query?" + qs)
        if st != 200:
            raise BenchError("influxdb: %s: %d %s" % (q[:80], st, out[:300]))
        return out

    def send(self, conn, body):
        conn.request("POST", "/write?db=bench&precision=ms", body)
        r = conn.getresponse()
        out = r.read()
        if r.status != 204:
            raise BenchError("influxdb /write: %d %s" % (r.status, out[:300]))
        return 0

    def quiesce(self):
        """Until the cache is snapshotted (cache-snapshot-write-cold-duration=1s)
        and the WAL directory holds < 1 MB; then until the files stop changing."""
        deadline = time.monotonic() + QUIESCE_TIMEOUT_S
        while du(self.wal) >= 1 << 20:
            if time.monotonic() > deadline:
                raise BenchError("influxdb: WAL still %d bytes after %d s" % (
                    du(self.wal), QUIESCE_TIMEOUT_S))
            time.sleep(1)
        settle(lambda: du(self.data) + du(self.wal), deadline)

    def disk(self):
        return {"total": du(self.data) + du(self.wal), "wal": du(self.wal)}

    def answer(self, t0_ms, t1_ms):
        q = ("SELECT count(id) FROM events WHERE event_name = '%s' AND time >= %dms AND "
             "time < %dms GROUP BY time(1h), campaign_id, group_id fill(none)"
             % (QUERIED, t0_ms, t1_ms))
        out = self.query(q)
        doc = json.loads(out)
        res = doc["results"][0]
        if "error" in res:
            raise BenchError("influxdb: %s" % res["error"])
        total = points = 0
        for s in res.get("series", []):
            for row in s["values"]:
                points += 1
                total += row[1] or 0
        return total, points, len(out)


class ClickHouse(Peer):
    name = "clickhouse"

    def start(self):
        self.port, tcp, inter = free_ports(3)
        d = self.dir
        with open(os.path.join(d, "config.xml"), "w") as f:
            f.write("""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>%(d)s/server.log</log>
    <errorlog>%(d)s/server.err.log</errorlog><size>100M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>%(http)d</http_port>
  <tcp_port>%(tcp)d</tcp_port>
  <interserver_http_port>%(inter)d</interserver_http_port>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>1073741824</mark_cache_size>
  <path>%(d)s/data/</path>
  <tmp_path>%(d)s/tmp/</tmp_path>
  <user_files_path>%(d)s/user_files/</user_files_path>
  <format_schema_path>%(d)s/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
""" % {"d": d, "http": self.port, "tcp": tcp, "inter": inter})
        with open(os.path.join(d, "users.xml"), "w") as f:
            f.write("""<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>8000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
""")
        self.spawn(["clickhouse-server", "--config-file=" + os.path.join(d, "config.xml")])
        self.wait_http(self.port, "/ping", ok=(200,), logs=(os.path.join(d, "server.err.log"),))
        self.query("CREATE DATABASE bench")
        self.query("CREATE TABLE bench.events (event_id String, event_type String, "
                   "event_name String, timestamp DateTime, ms UInt16, campaign_id String, "
                   "group_id String) ENGINE = MergeTree() PARTITION BY toYYYYMM(timestamp) "
                   "ORDER BY (event_name, campaign_id, group_id, timestamp)")
        return self

    def query(self, q, body=None):
        st, out = http_call(self.port, "POST", "/?" + urllib.parse.urlencode({"query": q}), body)
        if st != 200:
            raise BenchError("clickhouse: %s: %d %s" % (q[:80], st, out[:300]))
        return out

    INSERT = "/?" + urllib.parse.urlencode({"query": "INSERT INTO bench.events FORMAT JSONEachRow"})

    def send(self, conn, body):
        conn.request("POST", self.INSERT, body)
        r = conn.getresponse()
        out = r.read()
        if r.status != 200:
            raise BenchError("clickhouse INSERT: %d %s" % (r.status, out[:300]))
        return 0

    def parts(self):
        out = self.query("SELECT partition, name FROM system.parts WHERE database = 'bench' "
                         "AND table = 'events' AND active FORMAT TSV").decode()
        return [line.split("\t") for line in out.splitlines() if line]

    def quiesce(self):
        """OPTIMIZE ... FINAL each partition until it is one part (an OPTIMIZE
        that meets a background merge of the same parts does nothing)."""
        deadline = time.monotonic() + QUIESCE_TIMEOUT_S
        while True:
            parts = self.parts()
            left = sorted({p for p, _ in parts if sum(1 for q, _ in parts if q == p) > 1})
            if not left:
                return
            if time.monotonic() > deadline:
                log("clickhouse: partitions %s still in several parts after %d s; measured "
                    "anyway" % (", ".join(left), QUIESCE_TIMEOUT_S))
                return
            for p in left:
                self.query("OPTIMIZE TABLE bench.events PARTITION %s FINAL" % p)
            time.sleep(0.5)

    def disk(self):
        """The table's active parts (merged-away parts wait 8 minutes to be deleted)."""
        table = os.path.join(self.dir, "data", "data", "bench", "events")
        return {"total": sum(du(os.path.join(table, name)) for _, name in self.parts()),
                "parts": len(self.parts())}

    def answer(self, t0_ms, t1_ms):
        q = ("SELECT campaign_id, group_id, toStartOfHour(timestamp) AS hour, count() AS n "
             "FROM bench.events WHERE event_name = '%s' AND timestamp >= toDateTime(%d) AND "
             "timestamp < toDateTime(%d) GROUP BY campaign_id, group_id, hour FORMAT JSONCompact"
             % (QUERIED, t0_ms // 1000, t1_ms // 1000))
        out = self.query(q)
        doc = json.loads(out)
        return sum(int(r[3]) for r in doc["data"]), len(doc["data"]), len(out)


class Ours(Peer):
    """analyticsd through tests/integration/python/harness.py."""

    name = "analyticsd"

    def __init__(self, root, binary):
        import harness  # noqa: E402 (needs the stubs' sys.path)
        self.dir = None
        tempfile.tempdir = root
        os.environ["ANALYTICSD"] = binary
        self.server = harness.Server(log_level="warn", env={"RETENTION_DAYS": 365},
                                     preexec=_die_with_parent)
        self.proc = None
        self.omit_empty = None

    def start(self):
        self.server.start()
        self.port = self.server.http_port
        self.proc = self.server.proc
        return self

    def stop(self):
        self.server.stop(timeout=120)

    def cleanup(self):
        try:
            self.server.stop(timeout=120)
        finally:
            self.server.cleanup()

    def send(self, conn, body):
        """Retries (same eventIds: deduplicated) on 429 and 503."""
        for attempt in range(20):
            conn.request("POST", "/api/events/batch", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            out = r.read()
            if r.status == 200:
                accepted = out.count(b'"ACCEPTED"') + out.count(b'"DUPLICATE"')
                if accepted != BATCH:
                    raise BenchError("analyticsd: not every event accepted: %s" % out[:400])
                return attempt
            if r.status in (429, 503):
                time.sleep(min(0.05 * 2 ** attempt, 2))
                continue
            raise BenchError("analyticsd POST /api/events/batch: %d %s" % (r.status, out[:300]))
        raise BenchError("analyticsd: a batch refused 20 times in a row")

    def metrics(self):
        st, out = http_call(self.port, "GET", "/metrics")
        if st != 200:
            raise BenchError("analyticsd /metrics: %d" % st)
        vals = {}
        for line in out.decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    vals[k] = float(v)
                except ValueError:
                    pass
        return vals

    @staticmethod
    def _sum(vals, name):
        return sum(v for k, v in vals.items() if k == name or k.startswith(name + "{"))

    def mark(self):
        """Called when a load ends: the checkpoints counted so far."""
        self.checkpoints_at_end = self._sum(self.metrics(), "ana_store_checkpoints_total")

    def quiesce(self):
        """Until the free-text index has every event, a checkpoint ran after the
        load (the idle one, 5 s after the last append) and the files stopped
        changing."""
        deadline = time.monotonic() + QUIESCE_TIMEOUT_S
        while True:
            m = self.metrics()
            if self._sum(m, "ana_search_index_sequence") >= self._sum(
                    m, "ana_ingest_last_commit_sequence"):
                break
            if time.monotonic() > deadline:
                raise BenchError("analyticsd: free-text index still behind after %d s"
                                 % QUIESCE_TIMEOUT_S)
            time.sleep(0.5)
        wait_until = time.monotonic() + 120
        while self._sum(self.metrics(), "ana_store_checkpoints_total") <= self.checkpoints_at_end:
            if time.monotonic() > wait_until:
                log("analyticsd: no checkpoint within 120 s of the load's end; measured anyway")
                break
            time.sleep(0.5)
        settle(lambda: du(self.server.data_dir), deadline)

    def disk(self):
        return store_breakdown(self.server.data_dir)

    def create_metric(self):
        body = json.dumps({"name": "sent per group", "formula": "count(%s)" % QUERIED,
                           "aggregation": "sum", "dimensions": ["campaignId", "groupId"]})
        st, out = http_call(self.port, "POST", "/api/metrics", body,
                            {"Content-Type": "application/json"})
        if st != 200:
            raise BenchError("analyticsd POST /api/metrics: %d %s" % (st, out[:300]))
        doc = json.loads(out)
        self.metric_id = (doc.get("metric") or doc)["metricId"]

    def wait_rollups(self, t0_ms, t1_ms):
        """Until GetMetricData can answer from the rollups (backfill complete)."""
        import grpc
        import stubs
        mpb, mgrpc = stubs.load().analytics["metrics"]
        stub = mgrpc.MetricServiceStub(self.server.channel())
        req = mpb.GetMetricDataRequest(metric_id=self.metric_id, interval="1d", top_n=1)
        req.__getattribute__("from").FromMilliseconds(t0_ms)
        req.to.FromMilliseconds(t1_ms)
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        t = time.monotonic()
        while True:
            try:
                stub.GetMetricData(req, metadata=(("x-metric-source", "rollup"),), timeout=600)
                return time.monotonic() - t
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise BenchError("analyticsd GetMetricData: %s %s" % (e.code(), e.details()))
            if time.monotonic() > deadline:
                raise BenchError("analyticsd: rollups not complete after %d s"
                                 % BACKFILL_TIMEOUT_S)
            time.sleep(0.5)

    def _path(self, t0_ms, t1_ms, omit):
        q = {"from": iso_ms(t0_ms), "to": iso_ms(t1_ms), "interval": "1h", "topN": 1000}
        if omit:
            q["omitEmptyBuckets"] = "true"
        return "/api/metrics/%s/data?%s" % (self.metric_id, urllib.parse.urlencode(q))

    def answer(self, t0_ms, t1_ms):
        if self.omit_empty is None:
            # omitEmptyBuckets (issue 21, point 4) may be missing from this build.
            st, out = http_call(self.port, "GET", self._path(t0_ms, t1_ms, True))
            self.omit_empty = st == 200
            if not self.omit_empty:
                log("analyticsd: omitEmptyBuckets refused (%d %s): asking without it"
                    % (st, out[:160]))
        st, out = http_call(self.port, "GET", self._path(t0_ms, t1_ms, self.omit_empty))
        if st != 200:
            raise BenchError("analyticsd GET metric data: %d %s" % (st, out[:300]))
        doc = json.loads(out)
        total = points = 0
        for s in doc.get("series", []):
            for b in s.get("buckets", []):
                v = b.get("value")
                if v:
                    points += 1
                    total += v
        return total, points, len(out)

    def answer_grpc(self, t0_ms, t1_ms):
        import stubs
        mpb, mgrpc = stubs.load().analytics["metrics"]
        if not hasattr(self, "_stub"):
            self._stub = mgrpc.MetricServiceStub(self.server.channel(
                options=[("grpc.max_receive_message_length", -1)]))
        stub = self._stub
        req = mpb.GetMetricDataRequest(metric_id=self.metric_id, interval="1h", top_n=1000)
        req.__getattribute__("from").FromMilliseconds(t0_ms)
        req.to.FromMilliseconds(t1_ms)
        data = stub.GetMetricData(req, timeout=HTTP_TIMEOUT_S)
        return sum(b.value.value for s in data.series for b in s.buckets if b.HasField("value"))


def settle(size_fn, deadline, every=3.0):
    """Waits until size_fn() gives the same figure twice, `every` seconds apart."""
    last = size_fn()
    while time.monotonic() < deadline:
        time.sleep(every)
        now = size_fn()
        if now == last:
            return now
        last = now
    return last


# --- the store's bytes, by role ----------------------------------------------

def classify(db_file, name, tbl_name, kind):
    low = (name + " " + tbl_name).lower()
    if "text" in os.path.basename(db_file) or "fts" in low:
        return "free-text index"
    if "dedupe" in low:
        return "dedupe keys"
    if kind == "index" or name.startswith("sqlite_autoindex"):
        return "indexes" if tbl_name.startswith("event") else "other"
    if tbl_name == "event_time_runs":  # the events' time index, as sorted runs
        return "indexes"
    if tbl_name.startswith("event") and tbl_name not in ("event_names", "event_names_progress"):
        return "events"
    return "other"


def store_breakdown(data_dir):
    """Bytes on disk of a data directory, by role: SQLite's dbstat gives each
    table's and index's pages, in every SQLite file of it (analyticsd's
    analytics.db, its journal analytics-journal.db with the deduplication
    keys, its free-text index analytics-text.db); WAL files and free pages are
    counted apart."""
    out = {"total": du(data_dir), "events": 0, "dedupe keys": 0, "indexes": 0,
           "free-text index": 0, "WAL files": 0, "other": 0}
    for root, _, files in os.walk(data_dir):
        for f in files:
            path = os.path.join(root, f)
            size = du(path)
            if f.endswith("-wal") or f.endswith("-shm"):
                out["WAL files"] += size
                continue
            try:
                with open(path, "rb") as fh:
                    is_db = fh.read(16) == b"SQLite format 3\x00"
            except OSError:
                is_db = False
            if not is_db:
                out["other"] += size
                continue
            conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
            try:
                kinds = {r[0]: (r[1], r[2]) for r in conn.execute(
                    "SELECT name, tbl_name, type FROM sqlite_master")}
                counted = 0
                for name, pages in conn.execute(
                        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                    tbl, kind = kinds.get(name, (name, "table"))
                    out[classify(path, name, tbl, kind)] += pages
                    counted += pages
                rest = max(size - counted, 0)  # free pages
                out["free-text index" if "text" in f else "other"] += rest
            finally:
                conn.close()
    return out


# --- the events ---------------------------------------------------------------

def iso_ms(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


class Events:
    """The same events for every system, written once per run to files of
    request bodies (or, for the SQLite baseline, pickled rows per batch)."""

    def __init__(self, root, n, seed=21):
        self.n = n
        now_ms = int(time.time() * 1000)
        self.t1 = (now_ms // HOUR_MS + 1) * HOUR_MS     # the query: [t0, t1), 720 hours
        self.t0 = self.t1 - SPAN_DAYS * DAY_MS
        self.dir = root
        self.files = {s: os.path.join(root, "events-%s.bin" % s) for s in SYSTEMS}
        self.offsets = {s: [] for s in SYSTEMS}
        self.expected = 0
        self._write(seed, now_ms)

    def _write(self, seed, now_ms):
        import random
        import stubs
        epb = stubs.load().analytics["events"][0]
        rnd = random.Random(seed)
        lo, hi = self.t0, now_ms - 1000
        cum, acc = [], 0.0
        for name, share in NAMES:
            acc += share
            cum.append((acc, name))
        outs = {s: open(self.files[s], "wb") for s in SYSTEMS}
        day_prefix = {}
        t = time.monotonic()
        for b in range((self.n + BATCH - 1) // BATCH):
            ours, influx, ch, rows = [], [], [], []
            for _ in range(min(BATCH, self.n - b * BATCH)):
                ts = rnd.randrange(lo, hi)
                k = rnd.random()
                name = next(nm for c, nm in cum if k < c or c == cum[-1][0])
                if name == QUERIED:
                    self.expected += 1
                camp = "c%d" % rnd.randrange(CAMPAIGNS)
                grp = "g%d" % rnd.randrange(GROUPS)
                h = "%032x" % rnd.getrandbits(128)
                eid = "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
                day = ts // DAY_MS
                dp = day_prefix.get(day)
                if dp is None:
                    dp = day_prefix[day] = datetime.datetime.fromtimestamp(
                        day * 86400, datetime.timezone.utc).strftime("%Y-%m-%d")
                sod = ts % DAY_MS // 1000
                hms = "%02d:%02d:%02d" % (sod // 3600, sod // 60 % 60, sod % 60)
                ours.append('{"eventId":"%s","eventType":"message","eventName":"%s",'
                            '"timestamp":"%sT%s.%03dZ","properties":{"campaignId":"%s",'
                            '"groupId":"%s"}}' % (eid, name, dp, hms, ts % 1000, camp, grp))
                influx.append("events,campaign_id=%s,event_name=%s,event_type=message,group_id=%s "
                              "id=\"%s\" %d"
                              % (camp, name, grp, eid, ts))
                ch.append('{"event_id":"%s","event_type":"message","event_name":"%s",'
                          '"timestamp":"%s %s","ms":%d,"campaign_id":"%s","group_id":"%s"}'
                          % (eid, name, dp, hms, ts % 1000, camp, grp))
                props = '{"campaignId":"%s","groupId":"%s"}' % (camp, grp)
                ev = epb.Event(event_id=eid, account_id="default", event_type="message",
                               event_name=name)
                ev.timestamp.FromMilliseconds(ts)
                ev.received_at.FromMilliseconds(now_ms)
                ev.properties.update({"campaignId": camp, "groupId": grp})
                rows.append((eid, name, ts, now_ms, props, "%s message %s %s" % (name, camp, grp),
                             ev.SerializeToString()))
            bodies = {"ours": ('{"events":[' + ",".join(ours) + "]}").encode(),
                      "influxdb": ("\n".join(influx) + "\n").encode(),
                      "clickhouse": ("\n".join(ch) + "\n").encode(),
                      "sqlite": pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)}
            for s, body in bodies.items():
                self.offsets[s].append((outs[s].tell(), len(body)))
                outs[s].write(body)
            if b and b % 1000 == 0:
                log("generated %d events" % (b * BATCH))
        for f in outs.values():
            f.close()
        log("generated %d events (%d %s) in %.0f s" % (self.n, self.expected, QUERIED,
                                                       time.monotonic() - t))

    def cleanup(self):
        for f in self.files.values():
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


def load(events, system, clients, new_conn, send, seconds=None):
    """Sends every batch (batch i by client i % clients), or those sent within
    `seconds`; returns events/s (of the events sent), retries and how many
    events were sent."""
    fd = os.open(events.files[system], os.O_RDONLY)
    offsets = events.offsets[system]
    errors, retries, sent = [], [0] * clients, [0] * clients
    deadline = time.perf_counter() + seconds if seconds else None

    def client(k):
        conn = new_conn()
        try:
            for i in range(k, len(offsets), clients):
                if errors or (deadline and time.perf_counter() >= deadline):
                    return
                off, n = offsets[i]
                retries[k] += send(conn, os.pread(fd, n, off))
                sent[k] += min(BATCH, events.n - i * BATCH)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.perf_counter() - t
    os.close(fd)
    if errors:
        raise errors[0]
    return sum(sent) / took, sum(retries), sum(sent)


# --- the SQLite baseline ------------------------------------------------------

# The events tables of store schema 4 (server/store/local/local_db.c, migrations 1-4).
SCHEMA_4 = """
CREATE TABLE events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL, event_id TEXT NOT NULL,
  session_id TEXT NOT NULL DEFAULT '', event_type TEXT NOT NULL, event_name TEXT NOT NULL,
  ts INTEGER NOT NULL, received_at INTEGER NOT NULL, properties TEXT NOT NULL DEFAULT '{}',
  search_text TEXT NOT NULL DEFAULT '', payload BLOB NOT NULL);
CREATE INDEX events_by_time ON events(account_id, ts, event_id);
CREATE INDEX events_by_name ON events(account_id, event_name, ts, event_id);
CREATE INDEX events_by_type ON events(account_id, event_type, ts, event_id);
CREATE INDEX events_by_session ON events(account_id, session_id, ts, event_id);
CREATE INDEX events_expiry ON events(ts);
CREATE TABLE dedupe_keys (account_id TEXT NOT NULL, event_id TEXT NOT NULL,
  expires_at INTEGER NOT NULL, PRIMARY KEY (account_id, event_id)) WITHOUT ROWID;
CREATE INDEX dedupe_keys_expiry ON dedupe_keys(expires_at);
"""


def sqlite_baseline(root, events, threads=4, seconds=None):
    """4 threads, each its own connection, one transaction per batch of 1,000
    (the dedupe keys, then the events), taking turns at the write lock, for
    every event or `seconds` at most; returns events/s (of the events it took:
    its rate falls as its indexes grow, so a cut-short run's rate is above
    what the whole load would have averaged), the bytes on disk and how many
    events it took."""
    d = tempfile.mkdtemp(prefix="sqlite-", dir=root)
    path = os.path.join(d, "raw.db")
    try:
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.executescript(SCHEMA_4)
        c.close()
        retention = 365 * DAY_MS
        # One writer at a time, as the threads take turns (SQLite's busy
        # handler would sleep 1, 2, 5, 10... ms in between instead).
        writer = threading.Lock()

        def new_conn():
            conn = sqlite3.connect(path, isolation_level=None, timeout=600,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA cache_size=-65536")
            return conn

        def send(conn, body):
            rows = pickle.loads(body)
            with writer:
                commit(conn, rows)
            return 0

        def commit(conn, rows):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO dedupe_keys VALUES ('default', ?, ?)",
                             [(r[0], r[2] + retention) for r in rows])
            conn.executemany(
                "INSERT INTO events (account_id, event_id, session_id, event_type, event_name, "
                "ts, received_at, properties, search_text, payload) VALUES "
                "('default', ?, '', 'message', ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")

        rate, _, took_in = load(events, "sqlite", threads, new_conn, send, seconds)
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        return rate, du(d), took_in
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- the run -----------------------------------------------------------------

class KeepAlive:
    def __init__(self, port):
        self.port = port

    def __call__(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)


def start_system(system, root, binary):
    if system == "ours":
        return Ours(root, binary).start()
    if system == "influxdb":
        return Influx(root).start()
    return ClickHouse(root).start()


def run_system(system, root, binary, events, queries, res):
    """One round of one peer: load with one client, quiescent bytes, the query;
    then a fresh instance loaded by 4 clients."""
    p = start_system(system, root, binary)
    try:
        rate, retries, _ = load(events, system, 1, KeepAlive(p.port), p.send)
        if hasattr(p, "mark"):
            p.mark()
        res["ingest1"].append(rate)
        log("%s: one client %.0f ev/s%s" % (system, rate,
                                              ", %d retries" % retries if retries else ""))
        t = time.monotonic()
        p.quiesce()
        disk = p.disk()
        res["disk"].append(disk)
        log("%s: quiescent after %.1f s: %.1f bytes/event (%s)" % (
            system, time.monotonic() - t, disk["total"] / events.n,
            ", ".join("%s %d" % kv for kv in disk.items())))
        if system == "ours":
            p.create_metric()
            took = p.wait_rollups(events.t0, events.t1)
            res.setdefault("backfill", []).append(took)
            log("ours: rollups complete %.1f s after the metric was created" % took)
        total, points, size = p.answer(events.t0, events.t1)  # the first: warm-up, and checked
        if abs(total - events.expected) > (events.expected // 1000 if system == "influxdb" else 0):
            raise BenchError("%s answered %s %s events in total, not %d" % (
                system, total, QUERIED, events.expected))
        res.setdefault("answer", []).append((points, size))
        times = []
        for _ in range(queries):
            t = time.perf_counter()
            p.answer(events.t0, events.t1)
            times.append(time.perf_counter() - t)
        res["query"].append(statistics.median(times))
        log("%s: query p50 %.0f ms (%s; %d points, %d bytes)" % (
            system, 1e3 * statistics.median(times), ", ".join("%.0f" % (1e3 * x) for x in times),
            points, size))
        if system == "ours":
            gt = []
            for _ in range(queries):
                t = time.perf_counter()
                if abs(p.answer_grpc(events.t0, events.t1) - events.expected) > 0:
                    raise BenchError("analyticsd gRPC answer differs")
                gt.append(time.perf_counter() - t)
            res.setdefault("query_grpc", []).append(statistics.median(gt))
            res["omit_empty"] = p.omit_empty
    finally:
        p.cleanup()
    p = start_system(system, root, binary)
    try:
        rate, retries, _ = load(events, system, 4, KeepAlive(p.port), p.send)
        res["ingest4"].append(rate)
        log("%s: 4 clients %.0f ev/s" % (system, rate))
    finally:
        p.cleanup()


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_rate(xs):
    if not xs:
        return "-"
    return "{:,.0f} ev/s".format(med(xs)) + (
        " ({})".format(" / ".join("{:,.0f}".format(x) for x in xs)) if len(xs) > 1 else "")


def fmt_ms(xs):
    if not xs:
        return "-"
    return "{:,.0f} ms".format(1e3 * med(xs)) + (
        " ({})".format(" / ".join("{:,.0f}".format(1e3 * x) for x in xs)) if len(xs) > 1 else "")


def disk_median(disks, key):
    vals = [d.get(key, 0) for d in disks]
    return med(vals) if vals else None


def report(a, events, results, started, load_avgs, rounds):
    n = events.n
    exp = "10^%d" % (len(str(n)) - 1) if str(n).strip("0") == "1" else "{:,}".format(n)
    heading = "## Peers at %s events (`bench/peers/peers_bench.py`)" % exp
    r = {s: results.get(s, {}) for s in SYSTEMS}
    cols = ("ours", "influxdb", "clickhouse")

    def row(label, fn):
        return "| %s | %s |" % (label, " | ".join(fn(r[s]) if r[s] else "-" for s in cols))

    def bpe(res, key="total"):
        v = disk_median(res.get("disk", []), key)
        return "-" if v is None else "{:,.0f}".format(v / n)

    raw = r["sqlite"].get("ingest4", [])
    lines = [heading, ""]
    lines.append(
        "Run %s UTC, %s events, %d round%s%s. Machine: %d CPUs, %s %s; %s. Load average at "
        "the start of each round: %s. Command: `make bench` (`/usr/bin/python3 "
        "bench/peers/peers_bench.py --events %d --rounds %d --queries %d`)." % (
            started, "{:,}".format(n), rounds, ("s" if rounds > 1 else "") + (
                " of the %d asked (the run was cut short)" % a.rounds if rounds < a.rounds
                else ""),
            " (each figure the median, every round in brackets)" if rounds > 1 else "",
            os.cpu_count(), platform.system(), platform.release(),
            a.note or "client and servers share the machine",
            ", ".join("%.1f" % x for x in load_avgs), n, a.rounds, a.queries))
    lines.append("")
    lines.append("Each system runs alone, started by the benchmark on loopback with a fresh data "
                 "directory, and gets the same events: 50 campaigns x 20 groups, four event names "
                 "(message_sent 40%%, delivered 36%%, read 18%%, clicked 6%%), timestamps at "
                 "random over the last 30 days, a UUID eventId each; 1,000 per HTTP request "
                 "(analyticsd: REST `POST /api/events/batch`; InfluxDB: line protocol, tags "
                 "campaign_id, event_name, event_type, group_id, field id; ClickHouse: JSONEachRow into a "
                 "MergeTree partitioned by month, ordered by (event_name, campaign_id, group_id, "
                 "timestamp)). The query: the hourly count of message_sent per (campaign, group) "
                 "over the 30 days, empty buckets left out (%d events, every answer's sum "
                 "checked); analyticsd: a metric `count(message_sent)` by campaignId, groupId, "
                 "`GET /api/metrics/{id}/data?interval=1h&topN=1000%s once its rollups were "
                 "complete; InfluxDB `SELECT count(id) ... GROUP BY time(1h), campaign_id, "
                 "group_id fill(none)`; ClickHouse `GROUP BY campaign_id, group_id, "
                 "toStartOfHour(timestamp)`. p50 of %d queries after one more." % (
                     events.expected,
                     "&omitEmptyBuckets=true`" if r["ours"].get("omit_empty")
                     else "` (this build refused omitEmptyBuckets: every bucket in the answer)",
                     a.queries))
    lines.append("")
    lines.append("| %s events | analyticsd | InfluxDB 1.6.7 | ClickHouse 18.16 |"
                 % "{:,}".format(n))
    lines.append("|---|---|---|---|")
    lines.append(row("ingest, one client, 1,000 per request", lambda x: fmt_rate(x["ingest1"])))
    lines.append(row("ingest, 4 clients, 1,000 per request", lambda x: fmt_rate(x["ingest4"])))
    lines.append(row("bytes on disk per event, quiescent (analyticsd: after its idle checkpoint; "
                     "InfluxDB: cache snapshotted, WAL < 1 MB; ClickHouse: after OPTIMIZE ... "
                     "FINAL, active parts)", bpe))
    lines.append(row("hourly count of message_sent per (campaign, group) over 30 days, p50",
                     lambda x: fmt_ms(x["query"])))
    lines.append(row("points in the answer / bytes of the answer", lambda x: "%d / %s" % (
        x["answer"][0][0], "{:,}".format(x["answer"][0][1])) if x.get("answer") else "-"))
    lines.append("")
    o = r["ours"]
    if o.get("disk"):
        parts = ("events", "dedupe keys", "indexes", "free-text index", "WAL files", "other")
        lines.append("analyticsd's bytes per event by part (SQLite's dbstat; free pages under "
                     "other): " + ", ".join("%s %s" % (k, bpe(o, k)) for k in parts) + ".")
    if o.get("query_grpc"):
        lines.append("analyticsd's query over gRPC (GetMetricData, every bucket): %s p50."
                     % fmt_ms(o["query_grpc"]))
    if o.get("backfill"):
        lines.append("Its rollups were complete %s after the metric was created." % ", ".join(
            "%.1f s" % x for x in o["backfill"]))
    lines.append("")
    if o:
        lines.append("| Targets of issue 21 | Result | Baseline | Ratio | Target |")
        lines.append("|---|---|---|---|---|")

        def ratio(x, y):
            return "%.2f" % (x / y) if x is not None and y else "-"

        oi1, ii1 = med(o.get("ingest1", [])), med(r["influxdb"].get("ingest1", []))
        lines.append("| analyticsd ingest, one client | %s | InfluxDB: %s | %s | >= 1 |" % (
            fmt_rate(o.get("ingest1", [])), fmt_rate(r["influxdb"].get("ingest1", [])),
            ratio(oi1, ii1)))
        lines.append("| analyticsd ingest, 4 clients | %s | raw SQLite insert, schema 4 tables, "
                     "batch 1,000, 4 threads: %s | %s | >= 0.50 |" % (
                         fmt_rate(o.get("ingest4", [])), fmt_rate(raw),
                         ratio(med(o.get("ingest4", [])), med(raw))))
        if o.get("disk") and r["influxdb"].get("disk"):
            core = med([d["events"] + d["dedupe keys"] + d["indexes"] for d in o["disk"]])
            infl = disk_median(r["influxdb"]["disk"], "total")
            lines.append("| analyticsd bytes per event, events + dedupe keys + indexes | %.0f | "
                         "InfluxDB: %.0f | %s | <= 2 |" % (core / n, infl / n, ratio(core, infl)))
            lines.append("| analyticsd free-text index, bytes per event | %s | | | <= 40 |"
                         % bpe(o, "free-text index"))
        if o.get("query") and r["clickhouse"].get("query"):
            lines.append("| analyticsd query p50 | %s | ClickHouse: %s | %s | <= 1 |" % (
                fmt_ms(o["query"]), fmt_ms(r["clickhouse"]["query"]),
                ratio(med(o["query"]), med(r["clickhouse"]["query"]))))
        sq = r["sqlite"].get("disk_bytes")
        if sq:
            lines.append("")
            lines.append("The raw SQLite baseline's file: %.0f bytes per event (after a "
                         "truncating checkpoint)." % med(sq))
        taken = r["sqlite"].get("events_taken", [])
        if taken and min(taken) < n:
            lines.append("The raw SQLite baseline was cut short after %d s (`--sqlite-seconds`): "
                         "it took %s of the %s events; its rate is over those, above what the "
                         "whole load would average (its rate falls as its indexes grow)." % (
                             a.sqlite_seconds, " / ".join("{:,}".format(x) for x in taken),
                             "{:,}".format(n)))
    lines.append("")
    return heading, "\n".join(lines)


def main():
    from metric_stream_bench import replace_section  # noqa: E402
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=os.path.join(REPO, "build", "server", "analyticsd"))
    p.add_argument("--events", type=int, default=1000000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--only", default=",".join(SYSTEMS))
    p.add_argument("--out", default=os.path.join(REPO, "bench", "RESULTS.md"))
    p.add_argument("--note", default="", help="said of the machine in RESULTS.md")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--tmp", default=None, help="where the temporary directory goes")
    p.add_argument("--sqlite-seconds", type=float, default=900,
                   help="the raw SQLite baseline loads for this long at most (0: every event); "
                        "at 10^7 events it would take hours")
    a = p.parse_args()
    if a.smoke:
        a.events, a.rounds, a.queries, a.out = 10000, 1, 1, None
    if a.events < BATCH or a.events % BATCH:
        p.error("--events: a multiple of %d" % BATCH)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    for s in only:
        if s not in SYSTEMS:
            p.error("--only: %s is not one of %s" % (s, ", ".join(SYSTEMS)))
    a.binary = os.path.abspath(a.binary)
    if "ours" in only and not os.access(a.binary, os.X_OK):
        p.error("--binary: %s is not an executable (build it first)" % a.binary)
    for s, exe in (("influxdb", "influxd"), ("clickhouse", "clickhouse-server")):
        if s in only and not shutil.which(exe):
            sys.exit("peers_bench: %s not found (scripts/install-deps.sh bench installs it)" % exe)

    # SIGTERM / SIGHUP end the run as Ctrl-C does: through every finally below.
    def stop(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    root = tempfile.mkdtemp(prefix="peers-bench-", dir=a.tmp)
    events = None
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    results = {s: {"ingest1": [], "ingest4": [], "disk": [], "query": []} for s in only}
    load_avgs = []
    try:
        log("generating %d events in %s" % (a.events, root))
        events = Events(root, a.events)
        for rnd in range(a.rounds):
            order = only[rnd % len(only):] + only[:rnd % len(only)]
            load_avgs.append(os.getloadavg()[0])
            log("round %d of %d: %s" % (rnd + 1, a.rounds, ", ".join(order)))
            for s in order:
                if s == "sqlite":
                    rate, size, took_in = sqlite_baseline(root, events,
                                                          seconds=a.sqlite_seconds or None)
                    results[s]["ingest4"].append(rate)
                    results[s].setdefault("disk_bytes", []).append(size / took_in)
                    results[s].setdefault("events_taken", []).append(took_in)
                    log("sqlite: 4 threads %.0f ev/s over %d events, %.0f bytes/event"
                        % (rate, took_in, size / took_in))
                else:
                    run_system(s, root, a.binary, events, a.queries, results[s])
            # Written after every round: a run cut short keeps the rounds it finished.
            heading, section = report(a, events, results, started, load_avgs, rnd + 1)
            if a.out:
                replace_section(a.out, heading, section)
                log("wrote %s (%d round%s)" % (a.out, rnd + 1, "s" if rnd else ""))
    finally:
        if events:
            events.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    print(section)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit("peers_bench: %s" % e)
    except KeyboardInterrupt as e:
        sys.exit("peers_bench: interrupted (%s); every process stopped, temporary files removed"
                 % (e or "Ctrl-C"))
