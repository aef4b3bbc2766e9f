"""kill -9 under sustained concurrent ingest.

Writers send batches with client-chosen eventIds and record what the server
acknowledged (ACCEPTED or DUPLICATE). The server is killed with SIGKILL at
random moments and restarted on the same DATA_DIR; writers retry every batch
that got no answer. At the end every acknowledged eventId must be stored
exactly once, nothing may be stored twice, and the database must pass
PRAGMA integrity_check.

With --metric, the events are `sent` and `delivered` of a few campaigns and a
delivery-rate metric is defined before the first kill: after the last
restart its answer from the rollups (maintained across every kill, replayed
from their watermark) must equal the answer from the raw events.

With --out-of-order, each event carries a timestamp at random in the last 30
days (derived from its eventId, so a retry sends the same): an import of
history, whose events land all over the store's days. Every stored event must
then also sit in its own day's range of the table with its own sequence
number.

usage: crash_test.py --binary build/server/analyticsd --kills 30 [--metric] [--out-of-order]
"""

import hashlib

import argparse
import os
import random
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))

import grpc  # noqa: E402

import harness  # noqa: E402
import stubs  # noqa: E402

BATCH = 20


def server_env(data_dir=None):
    # A 1 MiB checkpoint threshold, so that kills also land in checkpoints
    # and in the catch-ups that hold commits back to restart the WAL.
    env = {"WAL_CHECKPOINT_MB": "1"}
    if data_dir:
        env["DATA_DIR"] = data_dir
    return env
METRIC = False
OUT_OF_ORDER = False
DAY_MS = 86400 * 1000
START_MS = int(time.time() * 1000)


def event_ts_ms(event_id):
    """A time in the last 30 days, the same for every send of event_id."""
    h = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big")
    return START_MS - 60 * 1000 - h % (30 * DAY_MS - 120 * 1000)


def make_event(pb, event_id):
    if OUT_OF_ORDER:
        e = pb.Event(event_id=event_id, event_name="crash", event_type="test")
        ts = event_ts_ms(event_id)
        e.timestamp.seconds, e.timestamp.nanos = ts // 1000, (ts % 1000) * 1000000
        return e
    if not METRIC:
        return pb.Event(event_id=event_id, event_name="crash", event_type="test")
    h = sum(event_id.encode())
    e = pb.Event(event_id=event_id, event_type="test",
                 event_name="delivered" if h % 3 == 0 else "sent")
    e.properties.update({"campaignId": "c%d" % (h % 5), "groupId": "g%d" % (h % 2)})
    return e


class Writer(threading.Thread):
    def __init__(self, n, pb, target_fn, stop):
        super().__init__(daemon=True)
        self.n, self.pb, self.target_fn, self.stop = n, pb, target_fn, stop
        self.acked = set()
        self.sent = set()
        self.pending = []  # batches without an answer, retried later
        self.seq = 0
        self.errors = []

    def next_batch(self):
        if self.pending:
            return self.pending.pop(0)
        ids = ["w%d-%d" % (self.n, self.seq + i) for i in range(BATCH)]
        self.seq += BATCH
        return ids

    def run(self):
        _, grpc_mod = self.pb
        pb = self.pb[0]
        channel, target = None, None
        while not self.stop.is_set():
            if self.target_fn() != target:
                if channel:
                    channel.close()
                target = self.target_fn()
                channel = grpc.insecure_channel(target)
                stub = grpc_mod.EventServiceStub(channel)
            ids = self.next_batch()
            self.sent.update(ids)
            req = pb.TrackEventsRequest(events=[make_event(pb, i) for i in ids])
            try:
                resp = stub.TrackEvents(req, timeout=5)
            except grpc.RpcError:
                self.pending.append(ids)  # unknown outcome: retry it
                time.sleep(0.05)
                continue
            for r in resp.results:
                if r.status in (pb.EventResult.ACCEPTED, pb.EventResult.DUPLICATE):
                    self.acked.add(r.event_id)
                else:
                    self.errors.append((r.event_id, r.status))
        if channel:
            channel.close()


def define_metric(ns, target):
    mpb, mgrpc = ns.analytics["metrics"]
    stub = mgrpc.MetricServiceStub(grpc.insecure_channel(target))
    m = mpb.Metric(name="delivery rate", formula="(count(delivered) / count(sent)) * 100",
                   type="gauge", unit="percentage", aggregation="avg",
                   dimensions=["campaignId", "groupId"])
    return stub.CreateMetric(mpb.CreateMetricRequest(metric=m), timeout=10).metric_id


def check_metric(ns, target, metric_id):
    """The rollups' answer (once they caught up) equals the raw events'."""
    mpb, mgrpc = ns.analytics["metrics"]
    stub = mgrpc.MetricServiceStub(grpc.insecure_channel(target))
    now = int(time.time())
    req = mpb.GetMetricDataRequest(metric_id=metric_id, interval="1h", top_n=3)
    req.__getattribute__("from").FromSeconds(now - 6 * 3600 + 7)
    req.to.FromSeconds(now + 3600)
    deadline = time.time() + 60
    while True:
        try:
            rolled = stub.GetMetricData(req, timeout=20, metadata=[("x-metric-source", "rollup")])
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION or time.time() > deadline:
                print("FAIL: metric from rollups: %s" % e)
                return False
            time.sleep(0.2)
    raw = stub.GetMetricData(req, timeout=20, metadata=[("x-metric-source", "raw")])
    if rolled != raw:
        print("FAIL: metric from rollups differs from raw events:\nrollups %s\nraw %s" % (
            rolled, raw))
        return False
    print("crash test: metric from rollups equals raw events (%d series)" % len(raw.series))
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=None)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--metric", action="store_true",
                    help="also check metric rollups against raw events after the kills")
    ap.add_argument("--out-of-order", action="store_true",
                    help="timestamps at random in the last 30 days (a historical import)")
    args = ap.parse_args()
    global METRIC, OUT_OF_ORDER
    METRIC = args.metric
    OUT_OF_ORDER = args.out_of_order
    if args.binary:
        os.environ["ANALYTICSD"] = os.path.abspath(args.binary)
    seed = args.seed if args.seed is not None else int(time.time())
    rnd = random.Random(seed)
    ns = stubs.load()
    events = ns.analytics["events"]

    server = harness.Server(log_level="info", env=server_env())
    data_dir = server.data_dir
    server.start()
    metric_id = define_metric(ns, server.target) if METRIC else None
    current = {"target": server.target}
    stop = threading.Event()
    writers = [Writer(i, events, lambda: current["target"], stop) for i in range(args.writers)]
    for w in writers:
        w.start()
    servers = [server]
    try:
        for k in range(args.kills):
            time.sleep(rnd.uniform(0.05, 0.6))
            server.kill()
            server = harness.Server(log_level="info", env=server_env(data_dir))
            servers.append(server)
            server.start()
            current["target"] = server.target
        time.sleep(1.0)
        stop.set()
        for w in writers:
            w.join(timeout=30)
        # Retry what never got an answer, on a calm server.
        for w in writers:
            w.stop = threading.Event()
            while w.pending:
                ids = w.pending.pop(0)
                pb = events[0]
                stub = events[1].EventServiceStub(grpc.insecure_channel(server.target))
                resp = stub.TrackEvents(pb.TrackEventsRequest(events=[
                    make_event(pb, i) for i in ids]), timeout=10)
                for r in resp.results:
                    w.acked.add(r.event_id)
        # Every acknowledged key is still claimed, whatever merge of the
        # keys' runs the kills cut short: each retry is a DUPLICATE.
        stub = events[1].EventServiceStub(grpc.insecure_channel(server.target))
        all_acked = sorted(set().union(*(w.acked for w in writers)))
        not_dup = 0
        for i in range(0, len(all_acked), 500):
            resp = stub.TrackEvents(events[0].TrackEventsRequest(events=[
                make_event(events[0], e) for e in all_acked[i:i + 500]]), timeout=30)
            not_dup += sum(1 for r in resp.results
                           if r.status != events[0].EventResult.DUPLICATE)
        metric_ok = check_metric(ns, server.target, metric_id) if METRIC else True
        rc = server.stop()
        if rc != 0:
            print("final server exited with %s" % rc)
            return 1
    finally:
        for s in servers:
            if s.alive():
                s.kill()

    db = sqlite3.connect(os.path.join(data_dir, "analytics.db"))
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    # The acknowledged commit's file (staged events, keys, last sequence):
    # a kill between a move's commit in analytics.db and the deletion of its
    # staged rows from the journal must neither lose nor double an event.
    db.execute("ATTACH DATABASE ? AS journal", (os.path.join(data_dir, "analytics-journal.db"),))
    journal_integrity = db.execute("PRAGMA journal.integrity_check").fetchone()[0]
    if journal_integrity != "ok":
        integrity = "journal: %s" % journal_integrity
    moved = db.execute("SELECT upto FROM main.events_moved").fetchone()[0]
    # A clean stop moves every staged event and deletes its row.
    staged_left = db.execute("SELECT COUNT(*) FROM journal.events_staged").fetchone()[0]
    counts = dict(db.execute("SELECT event_id, COUNT(*) FROM events GROUP BY event_id"))
    keys = db.execute("SELECT COALESCE(SUM(keys), 0) FROM journal.dedupe_runs"
                      " WHERE state = 0").fetchone()[0]
    seqs = set(r[0] for r in db.execute("SELECT seq FROM events"))
    n_rows = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    # The layout: each event in its day's range (rowid = day * 2^40 + seq),
    # and no sequence number handed out again.
    misplaced = db.execute("SELECT COUNT(*) FROM events WHERE key >> 40 != ts / 86400000"
                           " OR key % 1099511627776 != seq").fetchone()[0]
    last_seq = db.execute("SELECT last FROM journal.event_seq").fetchone()[0]
    wrong_ts = 0
    if OUT_OF_ORDER:
        wrong_ts = sum(1 for i, ts in db.execute("SELECT event_id, ts FROM events")
                       if ts != event_ts_ms(i))
    db.close()
    # The free-text index, written by its own thread and killed with the
    # rest, holds exactly the events up to the sequence number it recorded
    # in the same transactions: no entry lost, none twice, none without an
    # event.
    text = sqlite3.connect(os.path.join(data_dir, "analytics-text.db"))
    text_integrity = text.execute("PRAGMA integrity_check").fetchone()[0]
    try:
        text.execute("INSERT INTO events_fts(events_fts) VALUES ('integrity-check')")
    except sqlite3.DatabaseError as e:
        text_integrity = "fts5: %s" % e
    indexed = text.execute("SELECT indexed_seq FROM progress").fetchone()[0]
    # A contentless detail=none table cannot be scanned: every entry holds
    # exactly one reserved day token (U+E000 'd' <day>), which a prefix
    # query finds.
    entries = [r[0] for r in text.execute(
        "SELECT rowid FROM events_fts WHERE events_fts MATCH ?", ('"\ue000d" *',))]
    text.close()
    index_ok = (text_integrity == "ok" and len(entries) == len(set(entries))
                and set(entries) == set(q for q in seqs if q <= indexed))
    acked = set().union(*(w.acked for w in writers))
    sent = set().union(*(w.sent for w in writers))
    lost = sorted(i for i in acked if counts.get(i, 0) != 1)
    twice = sorted(i for i, c in counts.items() if c > 1)
    unknown = sorted(i for i in counts if i not in sent)
    item_errors = sum(len(w.errors) for w in writers)
    print("crash test%s: seed %d, %d kills, %d events acknowledged, %d stored, %d keys, "
          "integrity %s; search index: %d entries up to seq %d, integrity %s" % (
              " (out of order)" if OUT_OF_ORDER else "", seed, args.kills, len(acked), len(counts), keys, integrity, len(entries), indexed,
              text_integrity))
    for s in servers:
        s.cleanup()
    ok = True
    if integrity != "ok":
        print("FAIL: integrity_check says %s" % integrity)
        ok = False
    if lost:
        print("FAIL: %d acknowledged events not stored exactly once, e.g. %s" % (
            len(lost), lost[:5]))
        ok = False
    if twice:
        print("FAIL: %d events stored more than once, e.g. %s" % (len(twice), twice[:5]))
        ok = False
    if len(seqs) != n_rows or (seqs and max(seqs) > last_seq):
        print("FAIL: %d rows but %d sequence numbers (last handed out %d, highest %d)" % (
            n_rows, len(seqs), last_seq, max(seqs)))
        ok = False
    if staged_left or moved != last_seq:
        print("FAIL: after a clean stop, %d staged rows are left in the journal and the events "
              "are moved up to %d of %d" % (staged_left, moved, last_seq))
        ok = False
    if misplaced:
        print("FAIL: %d events outside their day's range of the table" % misplaced)
        ok = False
    if wrong_ts:
        print("FAIL: %d events stored with another timestamp than sent" % wrong_ts)
        ok = False
    if unknown:
        print("FAIL: %d stored events were never sent" % len(unknown))
        ok = False
    if not_dup:
        print("FAIL: %d acknowledged events were not DUPLICATE when sent again" % not_dup)
        ok = False
    if item_errors:
        print("FAIL: %d events got a result other than ACCEPTED/DUPLICATE" % item_errors)
        ok = False
    if not index_ok:
        print("FAIL: the search index does not hold exactly the events up to its sequence number")
        ok = False
    if not metric_ok:
        ok = False
    if len(acked) < args.kills * BATCH:
        print("FAIL: too little was acknowledged (%d) for the test to mean anything" % len(acked))
        ok = False
    print("crash test: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
