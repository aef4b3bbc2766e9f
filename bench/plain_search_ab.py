#!/usr/bin/python3
"""Latency of searches without free text on a filled store, two builds A/B.

The peers' synthetic events (import_cpu_ab.py's: four event names,
timestamps at random over the last 30 days) imported into a fresh server of
build A and one of build B, both kept running; once nothing is staged, the
same searches (GET /api/events/search without query: the newest page, an
eventName, a day's range, a day and a name, a property filter, five pages by
pageToken) are timed on A and B alternately, round after round (which side
goes first alternates too). Prints the median latency of each search per
side and B/A, each side's results compared (the same event ids in the same
order), and the bytes of the time index (dbstat: events_by_time_name or
event_time_runs) per event.

Usage: /usr/bin/python3 bench/plain_search_ab.py --a OLD/analyticsd --b NEW/analyticsd
       [--events 1000000] [--rounds 15]
"""

import argparse
import datetime
import http.client
import json
import os
import sqlite3
import statistics
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
import import_cpu_ab  # noqa: E402

DAY_MS = 86400 * 1000


def rfc3339(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ms % 1000)


def fill(binary, reqs):
    os.environ["ANALYTICSD"] = os.path.abspath(binary)
    server = harness.Server(log_level="warn", env={"RETENTION_DAYS": 365})
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=600)
    for body in reqs:
        for _ in range(200):
            conn.request("POST", "/api/events/batch", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            out = r.read()
            if r.status == 200:
                break
            if r.status not in (429, 503):
                raise RuntimeError("batch: %d %s" % (r.status, out[:300]))
            time.sleep(0.05)
    conn.close()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if import_cpu_ab.metric(server.http_port, "ana_store_staged_events") == 0:
            break
        time.sleep(0.2)
    time.sleep(3)  # the mover's idle merges, the checkpoint
    return server


def get(port, params):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    conn.request("GET", "/api/events/search?" + urllib.parse.urlencode(params))
    r = conn.getresponse()
    body = r.read()
    ms = (time.perf_counter() - t) * 1000
    conn.close()
    if r.status != 200:
        raise RuntimeError("search %s: %d %s" % (params, r.status, body[:300]))
    return ms, json.loads(body)


def run(port, params, pages):
    """Total ms of `pages` pages from params, and the ids seen."""
    total, ids, token = 0.0, [], ""
    for _ in range(pages):
        q = dict(params)
        if token:
            q["pageToken"] = token
        ms, page = get(port, q)
        total += ms
        ids += [e.get("eventId") for e in page.get("events", [])]
        token = page.get("nextPageToken", "")
        if not token:
            break
    return total, ids


def index_bytes(data_dir):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, "analytics.db"), uri=True)
    try:
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat WHERE name IN"
                          " ('events_by_time_name', 'event_time_runs') GROUP BY name").fetchall()
        n = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()
    return {name: size / max(n, 1) for name, size in rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    reqs = import_cpu_ab.bodies(args.events)
    now = int(time.time() * 1000)
    day = now - 10 * DAY_MS
    searches = [
        ("newest page of 50", {"pageSize": 50}, 1),
        ("eventName message_clicked (6%)", {"pageSize": 50, "eventName": "message_clicked"}, 1),
        ("one day's range", {"pageSize": 50, "from": rfc3339(day), "to": rfc3339(day + DAY_MS)},
         1),
        ("one day, eventName message_read", {"pageSize": 50, "from": rfc3339(day),
                                             "to": rfc3339(day + DAY_MS),
                                             "eventName": "message_read"}, 1),
        ("property campaignId (2%)", {"pageSize": 50, "properties[campaignId]": "c7"}, 1),
        ("5 pages of 100 by pageToken", {"pageSize": 100}, 5),
    ]
    servers = {}
    try:
        for side, binary in (("A", args.a), ("B", args.b)):
            t = time.perf_counter()
            servers[side] = fill(binary, reqs)
            print("%s filled with %d events in %.0f s; time index bytes per event: %s" % (
                side, args.events, time.perf_counter() - t,
                index_bytes(servers[side].data_dir)), flush=True)
        lat = {(s, side): [] for s, _, _ in searches for side in "AB"}
        for r in range(args.rounds):
            order = "AB" if r % 2 == 0 else "BA"
            for name, params, pages in searches:
                ids = {}
                for side in order:
                    ms, ids[side] = run(servers[side].http_port, params, pages)
                    lat[(name, side)].append(ms)
                if ids["A"] != ids["B"]:
                    print("DIFFERENT RESULTS for %s" % name, flush=True)
        print("search (median of %d, ms): A, B, B/A" % args.rounds)
        for name, _, _ in searches:
            a, b = statistics.median(lat[(name, "A")]), statistics.median(lat[(name, "B")])
            print("  %-34s %8.2f %8.2f  %.2f" % (name, a, b, b / a if a else 0), flush=True)
    finally:
        for s in servers.values():
            s.stop(timeout=120)
            s.cleanup()


if __name__ == "__main__":
    main()
