#!/usr/bin/python3
"""The re-encryption job: how fast it rewrites events stored in clear, and
what it costs ingest while it runs.

Once: a server without ENCRYPTED_FIELDS stores --events events carrying an
e-mail, one a second (gRPC batches of 500), and its DATA_DIR is kept as a snapshot. Then
per round (--rounds): a copy of the snapshot, a server with
ENCRYPTED_FIELDS=properties.email (the job starts by itself, with the
default REENCRYPT_BATCH_EVENTS and REENCRYPT_PAUSE); while the job runs
(phase A), single-event TrackEvents calls back to back, each timed; once
/health says it is done, as many calls again (phase B). Prints the job's
events per second and the ingest latency p50/p99 of A and B and their
ratio, per round and as medians.

Usage:
  /usr/bin/python3 bench/reencrypt_bench.py --binary build/server/analyticsd
      [--events 20000] [--rounds 3]
"""

import argparse
import json
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))

import harness  # noqa: E402
import stubs  # noqa: E402


def health(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(args.binary)
    ns = stubs.load()
    pb, pb_grpc = ns.analytics["events"]

    start = int(time.time()) - args.events - 60

    def event(i, stored=True):
        ev = pb.Event(event_name="bench_signup", event_type="track")
        ev.properties.update({"email": "user%d@example.org" % (i % 5000), "plan": "pro"})
        if stored:  # one a second, as events tracked live are
            ev.timestamp.FromSeconds(start + i)
        return ev

    src = harness.Server(log_level="warn")
    src.start()
    stub = pb_grpc.EventServiceStub(src.channel())
    for lo in range(0, args.events, 500):
        stub.TrackEvents(pb.TrackEventsRequest(
            events=[event(i) for i in range(lo, min(lo + 500, args.events))]), timeout=60)
    src.stop()
    snapshot = tempfile.mkdtemp(prefix="ana-reenc-snap-")
    shutil.copytree(src.data_dir, os.path.join(snapshot, "data"))
    src.cleanup()

    rows = []
    for r in range(args.rounds):
        server = harness.Server(log_level="warn", env={"ENCRYPTED_FIELDS": "properties.email"})
        shutil.rmtree(server.data_dir)
        shutil.copytree(os.path.join(snapshot, "data"), server.data_dir)
        t0 = time.monotonic()
        server.start()
        stub = pb_grpc.EventServiceStub(server.channel())
        during, after = [], []
        done_at = None
        i = 0
        while done_at is None:
            t = time.monotonic()
            stub.TrackEvents(pb.TrackEventsRequest(events=[event(i, False)]), timeout=30)
            during.append(time.monotonic() - t)
            i += 1
            if i % 20 == 0 and health(server).get("fieldReencryption") == "done":
                done_at = time.monotonic()
        for _ in range(len(during)):
            t = time.monotonic()
            stub.TrackEvents(pb.TrackEventsRequest(events=[event(i, False)]), timeout=30)
            after.append(time.monotonic() - t)
            i += 1
        h = health(server)
        server.stop()
        server.cleanup()
        row = {
            "job_s": done_at - t0,
            "events_per_s": h["fieldReencryptionRewritten"] / (done_at - t0),
            "during_p50_ms": pct(during, 0.5) * 1000, "during_p99_ms": pct(during, 0.99) * 1000,
            "after_p50_ms": pct(after, 0.5) * 1000, "after_p99_ms": pct(after, 0.99) * 1000,
            "calls": len(during),
        }
        row["p50_ratio"] = row["during_p50_ms"] / row["after_p50_ms"]
        rows.append(row)
        print("round %d: %s" % (r + 1, json.dumps({k: round(v, 3) for k, v in row.items()})))
    shutil.rmtree(snapshot, ignore_errors=True)
    med = {k: round(statistics.median(x[k] for x in rows), 3) for k in rows[0]}
    print("median: %s" % json.dumps(med))
    print("load average: %s" % open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
