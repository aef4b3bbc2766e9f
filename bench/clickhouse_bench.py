#!/usr/bin/python3
"""The ClickHouse event store's benchmark, against a clickhouse-server started here on loopback.

1. Shipping throughput: N events are committed to a spool while ClickHouse is unreachable; then
   analyticsd starts on a copy of that DATA_DIR with ClickHouse configured, and the time from its
   start until ClickHouse confirmed the last event gives the shipping rate. Against it, in the
   same run and alternating (A B A B), clickhouse-client inserts the same rows in the same format
   (RowBinary, exported from the shipped table) into an empty copy of the table.
2. Durable ingest with ClickHouse configured against the embedded store: bench/ab_throughput.py
   (the gRPC rates of build/bench/ingest_bench), A = embedded, B = CLICKHOUSE_HOST set, rounds
   interleaved.

Usage: /usr/bin/python3 bench/clickhouse_bench.py [--build build] [--events 1000000]
           [--rounds 2] [--seconds 5] [--skip-ingest]
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

COLUMNS = ("instance, seq, account_id, event_id, session_id, event_type, event_name, ts,"
           " received_at, day, prop_keys, prop_values, payload")


def health(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())
    except OSError:
        return {}


def fill_spool(n):
    """A DATA_DIR whose spool holds n committed events, none shipped."""
    ns = stubs.load()
    pb, grpc_mod = ns.analytics["events"]
    s = harness.Server(log_level="warn", env={"CLICKHOUSE_HOST": "http://127.0.0.1:9",
                                              "CLICKHOUSE_TIMEOUT": "200ms"})
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


def ship_once(ch, spool, n, db):
    """Seconds from analyticsd's start until ClickHouse holds all n events."""
    s = harness.Server(log_level="warn", env={"CLICKHOUSE_HOST": ch.url, "CLICKHOUSE_DATABASE": db})
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
    s.stop()
    s.cleanup()
    got = int(ch.query("SELECT count() FROM %s.events" % db))
    assert got == n, (got, n)
    return took


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(os.path.join(args.build, "server", "analyticsd"))
    ch = clickhouse.ClickHouse().start()
    spool = None
    try:
        spool, n = fill_spool(args.events)
        ship_s, client_s = [], []
        rows_file = os.path.join(ch.dir, "rows.bin")
        for r in range(args.rounds):
            db = "ship%d" % r
            ship_s.append(ship_once(ch, spool, n, db))
            print("round %d: shipped %d events in %.2f s (%.0f ev/s)"
                  % (r, n, ship_s[-1], n / ship_s[-1]), flush=True)
            if r == 0:
                req = urllib.request.Request(ch.url + "/", data=(
                    "SELECT %s FROM ship0.events FORMAT RowBinary" % COLUMNS).encode())
                with urllib.request.urlopen(req, timeout=600) as resp, open(rows_file, "wb") as f:
                    shutil.copyfileobj(resp, f)
            client_s.append(client_once(ch, rows_file, "ship0", "client%d" % r))
            print("round %d: clickhouse-client inserted them in %.2f s (%.0f ev/s)"
                  % (r, client_s[-1], n / client_s[-1]), flush=True)
        ratios = [c / s for s, c in zip(ship_s, client_s)]
        print("shipping / clickhouse-client throughput per round: %s (target >= 0.5)"
              % ", ".join("%.2f" % x for x in ratios), flush=True)
    finally:
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
