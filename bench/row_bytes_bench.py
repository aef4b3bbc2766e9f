#!/usr/bin/env python3
"""Bytes per event of the embedded store by part, and the ingest and search
rates and a metric's rollup backfill, of two builds in the same run (A B, B A, ...), fed the same events as
bench/peers/peers_bench.py (50 campaigns x 20 groups, four event names, UUID
eventIds, timestamps at random over 30 days, 1,000 per REST request, one
client). Each round starts each build on a fresh data directory, loads it,
waits until it is quiescent (after its idle checkpoint), measures its files
(SQLite's dbstat, every file: analytics.db, the journal analytics-journal.db with
the deduplication keys, the free-text index), the bytes of each column of the events rows, the p50
of a search with a property filter and of one without, and how long the
rollups of a metric by (campaignId, groupId) take to build (a scan of every
event's properties).

  /usr/bin/python3 bench/row_bytes_bench.py --a build-base --b build --events 200000
"""

import argparse
import os
import statistics
import sqlite3
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "peers"))
import peers_bench as pb  # noqa: E402

PARTS = ("events", "dedupe keys", "indexes", "free-text index", "WAL files", "other")


def record_bytes(v):
    """Bytes of a value in a SQLite record (without its serial type)."""
    if v is None:
        return 0
    if isinstance(v, int):
        if v in (0, 1):
            return 0
        for n in (1, 2, 3, 4, 6):
            if -(1 << (8 * n - 1)) <= v < (1 << (8 * n - 1)):
                return n
        return 8
    if isinstance(v, float):
        return 8
    if isinstance(v, str):
        return len(v.encode())
    return len(v)


def column_bytes(data_dir):
    """Mean bytes per events row of each column (the rowid apart), and the
    cell overhead and free space of the table's leaf pages per row."""
    path = os.path.join(data_dir, "analytics.db")
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        # Stored columns only (a generated one takes no bytes in the row).
        cols = [r[1] for r in db.execute("PRAGMA table_xinfo(events)") if r[6] == 0]
        n = db.execute("SELECT COUNT(*) FROM events").fetchone()[0] or 1
        db.create_function("vbytes", 1, record_bytes, deterministic=True)
        sel = ", ".join("SUM(vbytes(%s))" % c for c in cols if c != "key")
        sums = db.execute("SELECT %s FROM events" % sel).fetchone()
        out = {c: s / n for c, s in zip([c for c in cols if c != "key"], sums)}
        payload, unused, cells = db.execute(
            "SELECT SUM(payload), SUM(unused), SUM(ncell) FROM dbstat"
            " WHERE name = 'events' AND pagetype = 'leaf'").fetchone()
        out["(record headers, rowid, cell overhead)"] = 0
        total = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'events'").fetchone()[0]
        known = sum(out.values())
        out["(free space in leaves)"] = unused / n
        out["(record headers, rowid, cell overhead)"] = total / n - known - unused / n
        return out, payload / max(cells, 1)
    finally:
        db.close()


def search_p50(port, path, times=7):
    pb.http_call(port, "GET", path)
    took = []
    for _ in range(times):
        t = time.perf_counter()
        st, out = pb.http_call(port, "GET", path)
        took.append(time.perf_counter() - t)
        if st != 200:
            raise pb.BenchError("search %s: %d %s" % (path, st, out[:200]))
    return statistics.median(took)


def one(label, binary, root, events):
    p = pb.Ours(root, binary).start()
    try:
        rate, _, _ = pb.load(events, "ours", 1, pb.KeepAlive(p.port), p.send)
        p.mark()
        p.quiesce()
        disk = p.disk()
        cols, _ = column_bytes(p.server.data_dir)
        q = {"from": pb.iso_ms(events.t0), "to": pb.iso_ms(events.t1), "pageSize": 50}
        plain = "/api/events/search?" + urllib.parse.urlencode(q)
        q["properties[campaignId]"] = "c7"
        q["properties[groupId]"] = "g3"
        prop = "/api/events/search?" + urllib.parse.urlencode(q)
        s_plain = search_p50(p.port, plain)
        s_prop = search_p50(p.port, prop)
        # A metric by (campaignId, groupId): its rollups are built by a scan
        # of every event, reading each one's properties.
        p.create_metric()
        backfill = p.wait_rollups(events.t0, events.t1)
    finally:
        p.cleanup()
    pb.log("%s: %.0f ev/s, %.0f bytes/event (%s); search %.1f / %.1f ms; rollups %.1f s" % (
        label, rate, disk["total"] / events.n,
        ", ".join("%s %.0f" % (k, disk[k] / events.n) for k in PARTS), 1e3 * s_plain,
        1e3 * s_prop, backfill))
    return {"rate": rate, "disk": disk, "cols": cols, "search": s_plain, "search_prop": s_prop,
            "backfill": backfill}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="build directory of the baseline")
    ap.add_argument("--b", required=True, help="build directory of the change")
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="rowbytes-")
    events = pb.Events(root, args.events)
    res = {"A": [], "B": []}
    loads = []
    try:
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for label in order:
                loads.append(os.getloadavg()[0])
                build = args.a if label == "A" else args.b
                res[label].append(one(label, os.path.join(build, "server", "analyticsd"), root,
                                      events))
    finally:
        events.cleanup()
    n = args.events
    print("\n%d events, %d rounds (A B / B A), load average at each start: %s" % (
        n, args.rounds, ", ".join("%.1f" % x for x in loads)))
    print("| bytes per event (median) | A | B |")
    print("|---|---|---|")
    for k in PARTS + ("total",):
        a = statistics.median(x["disk"][k] for x in res["A"]) / n
        b = statistics.median(x["disk"][k] for x in res["B"]) / n
        print("| %s | %.1f | %.1f |" % (k, a, b))
    for label in ("A", "B"):
        cols = res[label][0]["cols"]
        print("%s events row: %s" % (label, ", ".join("%s %.1f" % kv for kv in cols.items())))
    for k, name in (("rate", "ingest ev/s"), ("search", "search p50 ms"),
                    ("search_prop", "search by 2 properties p50 ms"),
                    ("backfill", "rollups of a metric by 2 properties complete after, s")):
        f = ((lambda v: "%.0f" % v) if k == "rate" else (lambda v: "%.1f" % v)
             if k == "backfill" else (lambda v: "%.1f" % (1e3 * v)))
        a = [x[k] for x in res["A"]]
        b = [x[k] for x in res["B"]]
        print("%s: A %s (%s), B %s (%s), B/A %.2f" % (
            name, f(statistics.median(a)), " / ".join(f(v) for v in a), f(statistics.median(b)),
            " / ".join(f(v) for v in b), statistics.median(b) / statistics.median(a)))


if __name__ == "__main__":
    main()
