#!/usr/bin/python3
"""Historical import: the same synthetic marketing events (50 campaigns x 20
groups, four event names) imported over gRPC TrackEvents (or REST with
--transport rest), 1,000 per request, once with
timestamps spread at random over the last 30 days and once in time order, on
fresh servers, alternating the two (random, ordered, random, ordered...) in
one run; then with 4 clients at random times, against a raw SQLite insert of
the same events into the schema-4 tables (batch 1,000, synchronous=FULL) in
the same run. After each load the server is left idle until its checkpoint
thread has copied the WAL, and the bytes per event are read from SQLite's
dbstat table: events, deduplication keys, their indexes, the free-text index,
and the WAL file's size at its peak.

Usage: /usr/bin/python3 bench/import_bench.py [--binary build/server/analyticsd]
       [--events 1000000] [--rounds 1] [--out bench/RESULTS.md]
"""

import argparse
import http.client
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
import stubs  # noqa: E402

HEADING = "## Historical import (`bench/import_bench.py`)"
NAMES = ("message_sent", "message_delivered", "message_read", "message_clicked")
BATCH = 1000
DAY = 86400 * 1000


def make_events(n, ordered, seed):
    """n events as dicts (ts in ms), in time order or at random times."""
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    span = 30 * DAY - 3600 * 1000
    out = []
    for i in range(n):
        ts = now - span + i * span // n if ordered else now - span + rnd.randrange(span)
        c = rnd.randrange(50)
        out.append({
            "eventId": "imp-%d-%d" % (seed, i),
            "eventType": "track",
            "eventName": NAMES[rnd.randrange(4)],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
                         + ".%03dZ" % (ts % 1000),
            "properties": {"campaignId": "campaign-%d" % c,
                           "groupId": "group-%d" % rnd.randrange(20),
                           "channel": ("email", "sms", "push", "web")[c % 4]},
            "_ts": ts,
        })
    return out


def bodies(events):
    out = []
    for b in range(0, len(events), BATCH):
        chunk = [{k: v for k, v in e.items() if k != "_ts"} for e in events[b:b + BATCH]]
        out.append(json.dumps({"events": chunk}).encode())
    return out


def grpc_bodies(events):
    """The same events as serialized TrackEventsRequest messages."""
    pb = stubs.load().analytics["events"][0]
    out = []
    for b in range(0, len(events), BATCH):
        req = pb.TrackEventsRequest()
        for e in events[b:b + BATCH]:
            ev = req.events.add(event_id=e["eventId"], event_type=e["eventType"],
                                event_name=e["eventName"])
            ev.timestamp.seconds, ev.timestamp.nanos = e["_ts"] // 1000, (e["_ts"] % 1000) * 10**6
            ev.properties.update(e["properties"])
        out.append(req.SerializeToString())
    return out


def post_all(port, reqs, clients, server=None):
    errors = []

    def grpc_client(k):
        ch = server.channel()
        call = ch.unary_unary("/analytics.v1.EventService/TrackEvents",
                              request_serializer=None, response_deserializer=None)
        try:
            for i in range(k, len(reqs), clients):
                call(reqs[i], timeout=300)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        ch.close()

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            for i in range(k, len(reqs), clients):
                conn.request("POST", "/api/events/batch", reqs[i],
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError("batch: %d %s" % (resp.status, body[:300]))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=grpc_client if server else client, args=(k,))
               for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    peak = [0]
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        peak[0] = max(peak[0], wal_size(port_dirs.get(port)))
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0, peak[0]


port_dirs = {}


def wal_size(data_dir):
    """The WAL files of the local database's two files (analytics.db and the
    journal, analytics-journal.db), together."""
    total = 0
    for name in ("analytics.db-wal", "analytics-journal.db-wal"):
        try:
            total += os.path.getsize(os.path.join(data_dir, name))
        except (OSError, TypeError):
            pass
    return total


def sizes(path, groups):
    """Bytes per table group from dbstat: {group: bytes}."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    out = {}
    try:
        for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            g = groups(name)
            out[g] = out.get(g, 0) + size
    finally:
        db.close()
    return out


def event_group(name):
    if name in ("events", "event_dicts"):
        return "events"
    if name.startswith("dedupe_") or name.startswith("sqlite_autoindex_dedupe"):
        return "dedupe keys"
    if name.startswith("events_") or name.startswith("sqlite_autoindex_events"):
        return "indexes"
    return "other"


def wait_idle(server, budget_s=60):
    """Waits for the checkpoint thread to copy the WAL (no WAL pages left to
    copy: the metric ana_store_wal_pages after the idle checkpoint)."""
    deadline = time.time() + budget_s
    last = [None]
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
        except OSError:
            text = ""
        seq = [ln for ln in text.splitlines() if ln.startswith("ana_search_index_sequence ")]
        if seq and seq == last[0]:
            break
        last[0] = seq
        time.sleep(1)
    time.sleep(6)  # CHECKPOINT_EVERY_MS: the idle checkpoint


def run_server(binary, events, clients, transport="rest"):
    server = harness.Server(log_level="warn")
    server.start()
    port_dirs[server.http_port] = server.data_dir
    try:
        if transport == "grpc":
            secs, peak = post_all(server.http_port, grpc_bodies(events), clients, server)
        else:
            secs, peak = post_all(server.http_port, bodies(events), clients)
        wait_idle(server)
        s = sizes(os.path.join(server.data_dir, "analytics.db"), event_group)
        # The journal: the deduplication keys (and the staged events, none
        # once idle).
        journal = os.path.join(server.data_dir, "analytics-journal.db")
        if os.path.exists(journal):
            for g, size in sizes(journal, event_group).items():
                s[g] = s.get(g, 0) + size
        text = os.path.join(server.data_dir, "analytics-text.db")
        s["free-text index"] = (sum(sizes(text, lambda n: "t").values())
                                if os.path.exists(text) else 0)
        s["wal peak"] = peak
        s["wal idle"] = wal_size(server.data_dir)
    finally:
        server.stop()
        server.cleanup()
    return len(events) / secs, s


SCHEMA4 = (
    "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL,"
    " event_id TEXT NOT NULL, session_id TEXT NOT NULL DEFAULT '', event_type TEXT NOT NULL,"
    " event_name TEXT NOT NULL, ts INTEGER NOT NULL, received_at INTEGER NOT NULL,"
    " properties TEXT NOT NULL DEFAULT '{}', search_text TEXT NOT NULL DEFAULT '',"
    " payload BLOB NOT NULL);"
    "CREATE INDEX events_by_time ON events(account_id, ts, event_id);"
    "CREATE INDEX events_by_name ON events(account_id, event_name, ts, event_id);"
    "CREATE INDEX events_by_type ON events(account_id, event_type, ts, event_id);"
    "CREATE INDEX events_by_session ON events(account_id, session_id, ts, event_id);"
    "CREATE INDEX events_expiry ON events(ts);"
    "CREATE TABLE dedupe_keys (account_id TEXT NOT NULL, event_id TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL, PRIMARY KEY (account_id, event_id)) WITHOUT ROWID;"
    "CREATE INDEX dedupe_keys_expiry ON dedupe_keys(expires_at);")


def raw_sqlite(events):
    """The same events into schema-4 tables, 1,000 per transaction, in WAL
    mode with synchronous=FULL: events/s."""
    d = tempfile.mkdtemp(prefix="ana-raw-")
    db = sqlite3.connect(os.path.join(d, "raw.db"), isolation_level=None)
    db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "PRAGMA cache_size=-65536;" + SCHEMA4)
    rows = []
    for e in events:
        props = json.dumps(e["properties"], separators=(",", ":"))
        rows.append(("acct", e["eventId"], "", "track", e["eventName"], e["_ts"],
                     int(time.time() * 1000), props,
                     " ".join([e["eventName"], "track"] + list(e["properties"].values())),
                     (e["eventId"] + e["eventName"] + props).encode() * 2,
                     e["_ts"] + 90 * DAY))
    t0 = time.perf_counter()
    for b in range(0, len(rows), BATCH):
        chunk = rows[b:b + BATCH]
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO dedupe_keys VALUES (?,?,?) ON CONFLICT DO NOTHING",
                       [(r[0], r[1], r[10]) for r in chunk])
        db.executemany("INSERT INTO events (account_id, event_id, session_id, event_type,"
                       " event_name, ts, received_at, properties, search_text, payload)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?)", [r[:10] for r in chunk])
        db.execute("COMMIT")
    secs = time.perf_counter() - t0
    db.close()
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)
    return len(events) / secs


def fmt_sizes(s, n):
    keys = ("events", "dedupe keys", "indexes", "free-text index")
    parts = ["%s %.0f" % (k, s.get(k, 0) / n) for k in keys]
    core = sum(s.get(k, 0) for k in keys[:3]) / n
    return "%s; events+keys+indexes %.0f B/event; WAL peak %.1f MB, idle %.1f MB" % (
        ", ".join(parts), core, s["wal peak"] / 1e6, s["wal idle"] / 1e6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=None)
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--transport", choices=("grpc", "rest"), default="grpc",
                    help="how the one-client rounds send (4 clients always use gRPC)")
    ap.add_argument("--one-client", action="store_true",
                    help="only the alternating one-client rounds (no 4 clients, no raw SQLite)")
    args = ap.parse_args()
    if args.binary:
        os.environ["ANALYTICSD"] = os.path.abspath(args.binary)
    n = args.events
    lines = []
    rnd_events = make_events(n, False, 1)
    ord_events = make_events(n, True, 2)
    for r in range(args.rounds):
        rate_r, s_r = run_server(args.binary, rnd_events, 1, args.transport)
        lines.append("random times, 1 client: %.0f ev/s; %s" % (rate_r, fmt_sizes(s_r, n)))
        print(lines[-1], flush=True)
        rate_o, s_o = run_server(args.binary, ord_events, 1, args.transport)
        lines.append("time order,   1 client: %.0f ev/s; %s" % (rate_o, fmt_sizes(s_o, n)))
        print(lines[-1], flush=True)
        lines.append("random/ordered rate: %.2f" % (rate_r / rate_o))
        print(lines[-1], flush=True)
    if args.one_client:
        return
    # 4 clients over gRPC (the same batches of 1,000), then the raw insert.
    rate_4, s_4 = run_server(args.binary, rnd_events, 4, "grpc")
    raw = raw_sqlite(rnd_events)
    lines.append("random times, 4 gRPC clients: %.0f ev/s; raw SQLite schema 4, batch 1,000:"
                 " %.0f ev/s (%.0f%%); %s" % (rate_4, raw, 100 * rate_4 / raw, fmt_sizes(s_4, n)))
    print(lines[-1], flush=True)
    if args.out:
        sys.path.insert(0, HERE)
        from metric_stream_bench import replace_section  # noqa: E402
        replace_section(args.out, HEADING,
                        "%s\n\n%d events, 1,000 per request, one client over %s.\n\n```\n%s\n```\n"
                        % (HEADING, n, {"grpc": "gRPC", "rest": "REST"}[args.transport], "\n".join(lines)))


if __name__ == "__main__":
    main()
