#!/usr/bin/python3
"""The ClickHouse event store's benchmark, against a clickhouse-server started here on loopback.

1. Shipping throughput: N events are committed to a spool while ClickHouse is unreachable; then
   analyticsd starts on a copy of that DATA_DIR with ClickHouse configured, and the time from its
   start until ClickHouse confirmed the last event gives the shipping rate. Against it, in the
   same run and alternating (A B A B), clickhouse-client inserts the same rows in the same format
   (RowBinary, exported from the shipped table) into an empty copy of the table. With --base
   BUILD_DIR, a second analyticsd (e.g. main's) ships the same spool in the same rounds, the
   three taking turns in an order that rotates per round (the spool is then written by the base
   build: the newer one migrates it as it opens it).
2. The raw-path metric query (GetMetricData with x-metric-source: raw, the hourly count of
   message_sent per campaignId and groupId over the shipped events) three ways, alternating
   per round: analyticsd with ClickHouse configured (aggregated in ClickHouse), clickhouse-client
   running the same SQL statement analyticsd sends (pushed_sql), analyticsd on the embedded
   store (a copy of the same spool); over HTTP, the same statement and the bare aggregation.
3. Durable ingest with ClickHouse configured against the embedded store: bench/ab_throughput.py
   (the gRPC rates of build/bench/ingest_bench), A = embedded, B = CLICKHOUSE_HOST set, rounds
   interleaved.

The events are generated as they are sent (1,000 per request), never held all at once: 10^7
take about 3 GB of spool per copy (one per shipping round, removed after it) and of RowBinary.

Usage: /usr/bin/python3 bench/clickhouse_bench.py [--build build] [--base BUILD_DIR]
           [--events 1000000] [--rounds 2] [--seconds 5] [--skip-ingest] [--skip-query]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))

import grpc  # noqa: E402

import clickhouse  # noqa: E402
import harness  # noqa: E402
import stubs  # noqa: E402

COLUMNS = ("instance, seq, attempt, account_id, event_id, session_id, event_type, event_name, ts,"
           " received_at, day, prop_keys, prop_values, properties, payload")


def health(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())
    except OSError:
        return {}


def fill_spool(n, binary):
    """A DATA_DIR whose spool holds n committed events, none shipped (written by binary)."""
    ns = stubs.load()
    pb, grpc_mod = ns.analytics["events"]
    s = harness.Server(log_level="warn", env={"CLICKHOUSE_HOST": "http://127.0.0.1:9",
                                              "CLICKHOUSE_TIMEOUT": "200ms",
                                              "SPOOL_MAX_BYTES": str(64 << 30)})
    s.binary = binary
    s.start()
    stub = grpc_mod.EventServiceStub(s.channel())
    t0 = time.time()

    def batches():
        for b in range(0, n, 1000):
            evs = []
            for i in range(b, min(n, b + 1000)):
                e = pb.Event(event_id="e%09d" % i, event_name="message_sent",
                             event_type="track", session_id="s%d" % (i % 5000))
                e.properties.update({"campaignId": "c%d" % (i % 50), "groupId": "g%d" % (i % 7),
                                     "value": i % 100})
                evs.append(e)
            yield pb.IngestRequest(batch_id="b%d" % b, events=evs)

    accepted = 0
    for r in stub.IngestEvents(batches(), timeout=3600):
        accepted += r.accepted
    print("spool: %d events committed in %.1f s" % (accepted, time.time() - t0), flush=True)
    s.stop()
    data = tempfile.mkdtemp(prefix="ana-chb-spool-")
    shutil.copytree(s.data_dir, data, dirs_exist_ok=True)
    os.remove(os.path.join(data, "clickhouse.state"))
    s.cleanup()
    return data, accepted


def cpu_seconds(pid):
    """User + system CPU seconds a process used so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ship_once(ch, spool, n, db, binary, keep=False):
    """Seconds from analyticsd's start until ClickHouse holds all n events (and the server, still
    running, when keep)."""
    s = harness.Server(log_level="warn", env={"CLICKHOUSE_HOST": ch.url, "CLICKHOUSE_DATABASE": db})
    s.binary = binary
    shutil.rmtree(s.data_dir)
    shutil.copytree(spool, s.data_dir)
    t0 = time.time()
    s.start(wait_ready=False)
    while True:
        h = health(s.rest_port)
        if h.get("eventShipping") == "ok" and h.get("shippingLagEvents") == 0 and \
                h.get("lastCommitSequence", -1) >= 0:
            break
        time.sleep(0.02)
    took = time.time() - t0
    cpu = cpu_seconds(s.proc.pid)
    got = int(ch.query("SELECT count() FROM %s.events" % db))
    assert got == n, (got, n)
    if keep:
        return took, cpu, s
    s.stop()
    s.cleanup()
    return took, cpu


def client_once(ch, rows_file, src_db, db):
    """Seconds clickhouse-client takes to insert the same rows, same format, into a fresh table."""
    ch.query("CREATE DATABASE IF NOT EXISTS %s" % db)
    ddl = ch.query("SHOW CREATE TABLE %s.events FORMAT TabSeparatedRaw" % src_db).strip()
    ch.query(ddl.replace("%s.events" % src_db, "%s.events" % db, 1))
    t0 = time.time()
    with open(rows_file, "rb") as f:
        subprocess.run(["clickhouse-client", "--port", str(ch.tcp_port), "--query",
                        "INSERT INTO %s.events (%s) FORMAT RowBinary" % (db, COLUMNS)],
                       stdin=f, check=True)
    return time.time() - t0


def metric_query(server, metric_id, span):
    """Seconds of one GetMetricData over the raw path, and its answer's totals."""
    ns = stubs.load()
    mpb, mgrpc = ns.analytics["metrics"]
    stub = mgrpc.MetricServiceStub(server.channel())
    t0 = time.time()
    d = stub.GetMetricData(mpb.GetMetricDataRequest(metric_id=metric_id, interval="1h",
                                                    top_n=1000, **span),
                           timeout=3600, metadata=[("x-metric-source", "raw")])
    took = time.time() - t0
    return took, sorted((tuple(sorted(x.dimensions.items())), x.total.value) for x in d.series)


def wait_rollups(server, metric_id, span):
    """Until the metric's rollups answer (their backfill is over) and stop reading events."""
    ns = stubs.load()
    mpb, mgrpc = ns.analytics["metrics"]
    stub = mgrpc.MetricServiceStub(server.channel())
    while True:
        try:
            stub.GetMetricData(mpb.GetMetricDataRequest(metric_id=metric_id, interval="1h",
                                                        **span),
                               timeout=600, metadata=[("x-metric-source", "rollup")])
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            time.sleep(0.5)
    last = None
    while True:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % server.rest_port,
                                    timeout=10) as resp:
            now = [l for l in resp.read().decode().splitlines()
                   if l.startswith("ana_rollup_events_processed_total ")]
        if now == last:
            return
        last = now
        time.sleep(1)


def query_log(ch, like, after):
    """(duration ms, rows read, interface) of the finished queries starting with like since
    after (unix seconds), oldest first."""
    time.sleep(1.2)  # the log is written every 500 ms
    rows = ch.query("SELECT query_duration_ms, read_rows, interface FROM system.query_log"
                    " WHERE type = 2 AND event_time >= toDateTime(%d) AND query LIKE '%s%%'"
                    " ORDER BY event_time FORMAT TabSeparated" % (int(after), like))
    return [tuple(int(x) for x in line.split("\t")) for line in rows.splitlines()]


def create_metric(server):
    ns = stubs.load()
    mpb, mgrpc = ns.analytics["metrics"]
    m = mpb.Metric(name="bench", formula="count(message_sent)",
                   dimensions=["campaignId", "groupId"])
    return mgrpc.MetricServiceStub(server.channel()).CreateMetric(
        mpb.CreateMetricRequest(metric=m), timeout=60).metric_id


def pushed_sql(from_ms, to_ms, instance, shipped):
    """The statement analyticsd sends for the benchmark's metric (server/store/clickhouse/reads.c,
    agg_sql): count(message_sent) per campaignId, groupId and UTC hour over [from, to) and the
    previous period of the same length, with the checks that no row is there twice and that
    every dimension value is a JSON string as ClickHouse holds it."""
    def dim(k):
        return "prop_values[indexOf(prop_keys, '%s')]" % k

    def doubt(k):
        return (" OR (has(prop_keys, '%s') AND NOT visitParamExtractRaw(properties, '%s') ="
                " concat('\"', %s, '\"'))" % (k, k, dim(k)))
    prev = from_ms - (to_ms - from_ms)
    return ("SELECT k, prev, b, countIf(d) + (count() - uniqExact(instance, seq)),"
            " toFloat64(countIf(c0)), toFloat64(0), toFloat64(0),"
            " toFloat64(0) FROM (SELECT instance, seq, concat('', substring(%s, 1, 127),"
            " '\\x1f', substring(%s, 1, 127)) AS k, ts < %d AS prev, if(prev, toUInt32(0),"
            " toUInt32(toStartOfHour(toDateTime(intDiv(ts, 1000)), 'UTC'))) AS b, (0%s%s) AS d,"
            " (1) AS fl, (1 AND event_name = 'message_sent') AS c0 FROM events WHERE"
            " account_id = 'default' AND ts >= %d AND ts < %d AND event_name IN"
            " ('message_sent') AND NOT (instance = '%s' AND seq > %d)) WHERE fl OR d"
            " GROUP BY k, prev, b FORMAT RowBinary"
            % (dim("campaignId"), dim("groupId"), from_ms, doubt("campaignId"), doubt("groupId"),
               prev, to_ms, instance, shipped))


def query_bench(ch, spool, pushed, rounds):
    """Rounds of A (embedded), B (pushed down), C (clickhouse-client, same SQL), alternating."""
    from google.protobuf import timestamp_pb2
    embedded = harness.Server(log_level="warn", env={"CLICKHOUSE_HOST": None})
    shutil.rmtree(embedded.data_dir)
    shutil.copytree(spool, embedded.data_dir)
    embedded.start()
    lo, hi = (int(x) for x in ch.query("SELECT min(ts), max(ts) FROM ship0.events").split())
    frm, to = (lo // 3600000) * 3600, (hi // 3600000 + 1) * 3600
    span = {"from": timestamp_pb2.Timestamp(seconds=frm), "to": timestamp_pb2.Timestamp(seconds=to)}
    inst, shipped = ch.query("SELECT any(instance), max(seq) FROM ship0.events").split()
    sql = pushed_sql(frm * 1000, to * 1000, inst, int(shipped))
    ids = {"A": create_metric(embedded), "B": create_metric(pushed)}
    # Each server backfills the new metric's rollups (the pushed one from ClickHouse): a scan
    # of every event, not to be timed with the queries.
    for phase, server in (("A", embedded), ("B", pushed)):
        t0 = time.time()
        wait_rollups(server, ids[phase], span)
        print("%s: the rollups' backfill ended after %.1f s" % (phase, time.time() - t0),
              flush=True)
    # ClickHouse merges the parts of the shipped batches in the background for a while: the
    # queries are timed once it is done (else they race the merges for the cores).
    t0 = time.time()
    quiet = 0
    while quiet < 3 and time.time() - t0 < 600:
        quiet = quiet + 1 if ch.query("SELECT count() FROM system.merges").strip() == "0" else 0
        time.sleep(1)
    print("ClickHouse's merges ended after %.1f s; %s parts in ship0.events" % (
        time.time() - t0, ch.query("SELECT count() FROM system.parts WHERE database = 'ship0'"
                                   " AND table = 'events' AND active").strip()), flush=True)
    # The statement analyticsd sends, as ClickHouse logged it (an untimed query first, which
    # also warms the caches the same way for every phase): clickhouse-client and HTTP run that.
    metric_query(pushed, ids["B"], span)
    time.sleep(1.2)
    logged = ch.query("SELECT query FROM system.query_log WHERE type = 2 AND interface = 2 AND"
                      " query LIKE 'SELECT k, prev, b,%' ORDER BY event_time DESC LIMIT 1"
                      " FORMAT JSONEachRow")
    sent = json.loads(logged)["query"].strip() if logged.strip() else None
    print("the statement analyticsd sends is %s pushed_sql's" % (
        "the same as" if sent == sql else "not %s" % ("logged" if sent is None else
                                                      "byte for byte")), flush=True)
    if sent and sent != sql:
        print("  pushed_sql: %s\n  analyticsd: %s" % (sql, sent), flush=True)
        sql = sent
    # E: the bare aggregation (no deduplication of (instance, seq), no check of the values)
    plain = ("SELECT prop_values[indexOf(prop_keys, 'campaignId')] AS c,"
             " prop_values[indexOf(prop_keys, 'groupId')] AS g,"
             " toStartOfHour(toDateTime(intDiv(ts, 1000)), 'UTC') AS b, count()"
             " FROM events WHERE account_id = 'default' AND event_name = 'message_sent'"
             " AND ts >= %d AND ts < %d GROUP BY c, g, b FORMAT RowBinary"
             % (frm * 1000, to * 1000))
    times = {"A": [], "B": [], "C": [], "D": [], "E": []}
    in_ch = {"B": [], "C": [], "D": []}  # ClickHouse's query_duration_ms of the statement
    answers = {}
    try:
        for r in range(rounds):
            for phase in "BEDCA" if r % 2 else "ACDEB":
                if phase in "DE":  # over HTTP (no client process to start)
                    t0 = time.time()
                    req = urllib.request.Request(ch.url + "/?database=ship0",
                                                 data=(sql if phase == "D" else plain).encode())
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        resp.read()
                    times[phase].append(time.time() - t0)
                elif phase == "C":
                    t0 = time.time()
                    subprocess.run(["clickhouse-client", "--port", str(ch.tcp_port),
                                    "--database", "ship0", "--query", sql], check=True,
                                   stdout=subprocess.DEVNULL)
                    times["C"].append(time.time() - t0)
                else:
                    t0 = time.time()
                    took, answers[phase] = metric_query(embedded if phase == "A" else pushed,
                                                        ids[phase], span)
                    times[phase].append(took)
                took = times[phase][-1]
                if phase in "BCD":  # ClickHouse's own time for the statement
                    logged = query_log(ch, "SELECT k, prev, b,", t0 - 1)
                    ms, rows, iface = logged[-1] if logged else (0, 0, 0)
                    in_ch[phase].append(ms / 1000)
                    print("round %d %s: %.3f s (%s; ClickHouse: %d ms, %d rows read, of which"
                          " the rest is %.3f s)" % (r, phase, took, {1: "tcp", 2: "http"}.get(
                              iface, "?"), ms, rows, took - ms / 1000), flush=True)
                else:
                    print("round %d %s: %.3f s" % (r, phase, took), flush=True)
        assert answers["A"] == answers["B"], "the two answers differ"
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % pushed.rest_port,
                                    timeout=10) as resp:
            text = resp.read().decode()
        assert 'ana_clickhouse_metric_aggregations_total{path="sql"} %d' % (rounds + 1) in text, \
            "the pushed phase did not aggregate in ClickHouse"
        print("raw-path metric query, %d groups: pushed down %s s, clickhouse-client (same"
              " aggregation in SQL) %s s, embedded %s s" % (
                  len(answers["A"]), ", ".join("%.3f" % x for x in times["B"]),
                  ", ".join("%.3f" % x for x in times["C"]),
                  ", ".join("%.3f" % x for x in times["A"])), flush=True)
        print("the same SQL over HTTP: %s s; the bare aggregation (no deduplication, no value"
              " check) over HTTP: %s s" % (", ".join("%.3f" % x for x in times["D"]),
                                           ", ".join("%.3f" % x for x in times["E"])), flush=True)
        print("per round: pushed / clickhouse-client %s (target <= 1.2); pushed / same SQL over"
              " HTTP %s; pushed / embedded %s"
              % (", ".join("%.2f" % (b / c) for b, c in zip(times["B"], times["C"])),
                 ", ".join("%.2f" % (b / d) for b, d in zip(times["B"], times["D"])),
                 ", ".join("%.2f" % (b / a) for b, a in zip(times["B"], times["A"]))), flush=True)
        print("ClickHouse's own time for the statement (system.query_log): pushed %s s,"
              " clickhouse-client %s s; the rest of the pushed query (analyticsd, HTTP, decode)"
              " %s s" % (", ".join("%.3f" % x for x in in_ch["B"]),
                         ", ".join("%.3f" % x for x in in_ch["C"]),
                         ", ".join("%.3f" % (t - c) for t, c in zip(times["B"], in_ch["B"]))),
              flush=True)
    finally:
        embedded.stop()
        embedded.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--base", help="a second build dir whose analyticsd ships in the same rounds")
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-query", action="store_true")
    args = ap.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(os.path.join(args.build, "server", "analyticsd"))
    ours = os.environ["ANALYTICSD"]
    base = os.path.abspath(os.path.join(args.base, "server", "analyticsd")) if args.base else None
    print("load average at the start: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    ch = clickhouse.ClickHouse(query_log=True).start()
    spool = None
    pushed = None
    try:
        spool, n = fill_spool(args.events, base or ours)
        times = {"ours": [], "base": [], "client": []}
        cpus = {"ours": [], "base": []}
        rows_file = os.path.join(ch.dir, "rows.bin")
        phases = ["ours", "base", "client"] if base else ["ours", "client"]
        for r in range(args.rounds):
            # round 0 ships first (the rows the client inserts come from it); then the order
            # rotates: A B C, B C A, C A B, ...
            order = phases[r % len(phases):] + phases[:r % len(phases)]
            for phase in order:
                if phase == "client":
                    times["client"].append(client_once(ch, rows_file, "ship0", "client%d" % r))
                    print("round %d: clickhouse-client inserted them in %.2f s (%.0f ev/s)"
                          % (r, times["client"][-1], n / times["client"][-1]), flush=True)
                    ch.query("DROP DATABASE client%d" % r)
                    continue
                db = "ship%d" % r if phase == "ours" else "base%d" % r
                if r == 0 and phase == "ours":
                    took, cpu, server = ship_once(ch, spool, n, db, ours, keep=True)
                    if args.skip_query:
                        server.stop()
                        server.cleanup()
                    else:
                        pushed = server
                    req = urllib.request.Request(ch.url + "/", data=(
                        "SELECT %s FROM ship0.events FORMAT RowBinary" % COLUMNS).encode())
                    with urllib.request.urlopen(req, timeout=3600) as resp, \
                            open(rows_file, "wb") as f:
                        shutil.copyfileobj(resp, f)
                else:
                    took, cpu = ship_once(ch, spool, n, db, ours if phase == "ours" else base)
                    ch.query("DROP DATABASE %s" % db)
                times[phase].append(took)
                cpus[phase].append(cpu)
                print("round %d: %s shipped %d events in %.2f s (%.0f ev/s), %.2f CPU s"
                      % (r, phase, n, took, n / took, cpu), flush=True)
            print("load average: %.2f %.2f %.2f" % os.getloadavg(), flush=True)

        def ratios(a, b):
            v = [y / x for x, y in zip(times[a], times[b])]
            return "%s, median %.2f" % (", ".join("%.2f" % x for x in v), sorted(v)[len(v) // 2])
        print("shipping / clickhouse-client throughput per round: %s (target >= 0.5)"
              % ratios("ours", "client"), flush=True)
        if base:
            print("base shipping / clickhouse-client per round: %s" % ratios("base", "client"),
                  flush=True)
            print("shipping throughput, this build / base per round: %s" % ratios("ours", "base"),
                  flush=True)
            v = [a / b for a, b in zip(cpus["ours"], cpus["base"])]
            print("analyticsd CPU seconds from start to the last event confirmed, this build /"
                  " base per round: %s, median %.2f" % (", ".join("%.2f" % x for x in v),
                                                        sorted(v)[len(v) // 2]), flush=True)
        if pushed:
            query_bench(ch, spool, pushed, args.rounds)
    finally:
        if pushed:
            pushed.stop()
            pushed.cleanup()
        if spool:
            shutil.rmtree(spool, ignore_errors=True)
    if not args.skip_ingest:
        print("durable ingest, B = ClickHouse configured, A = embedded (B/A, target >= 0.8):",
              flush=True)
        subprocess.run([sys.executable, os.path.join(HERE, "ab_throughput.py"), "--a", args.build,
                        "--b", args.build, "--only", "grpc", "--rounds", str(args.rounds),
                        "--seconds", str(args.seconds), "--b-env", "CLICKHOUSE_HOST=" + ch.url])
    ch.cleanup()


if __name__ == "__main__":
    main()
