"""kill -9 of analyticsd while it ships to ClickHouse, many times (make test-clickhouse-long).

A real clickhouse-server is started on loopback. Two writers send batches (some events dated
days back) and an importer streams out-of-order imports (ImportEvents, batches of days in
random order); analyticsd is killed with SIGKILL at random moments and restarted on the same
DATA_DIR, and ClickHouse itself is killed and restarted every tenth cycle. At the end every
acknowledged event must be in ClickHouse exactly once.

usage: clickhouse_crash_test.py --binary build/server/analyticsd [--kills 30] [--seed N]
"""

import argparse
import os
import random
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))

import grpc  # noqa: E402

import clickhouse  # noqa: E402
import harness  # noqa: E402
import stubs  # noqa: E402
import test_clickhouse  # noqa: E402

DAY_MS = 86400000


class Importer(threading.Thread):
    """Streams imports of old events, days in random order; an import without its summary is
    sent again whole (its eventIds make the repeat harmless)."""

    def __init__(self, pb, grpc_mod, target_fn, rnd):
        super().__init__(daemon=True)
        self.pb, self.grpc_mod, self.target_fn, self.rnd = pb, grpc_mod, target_fn, rnd
        self.stop = threading.Event()
        self.acked, self.pending, self.k = set(), None, 0

    def make(self):
        now = int(time.time() * 1000)
        days = list(range(1, 30))
        self.rnd.shuffle(days)
        batches = []
        for d in days[:6]:
            evs = []
            for i in range(40):
                e = self.pb.Event(event_id="imp-%d-%d-%d-%s" % (self.k, d, i, uuid.uuid4().hex[:4]),
                                  event_name="imported", event_type="import")
                e.timestamp.FromMilliseconds(now - d * DAY_MS - self.rnd.randint(0, DAY_MS // 2))
                e.properties.update({"day": d})
                evs.append(e)
            batches.append(self.pb.IngestRequest(batch_id="b%d-%d" % (self.k, d), events=evs))
        self.k += 1
        return batches

    def send(self, target, batches):
        stub = self.grpc_mod.EventServiceStub(grpc.insecure_channel(target))
        resp = stub.ImportEvents(iter(batches), timeout=20)
        bad = {r.event_id for r in resp.results if r.status == self.pb.EventResult.REJECTED}
        for b in batches:
            self.acked |= {e.event_id for e in b.events} - bad

    def run(self):
        while not self.stop.is_set():
            batches = self.pending or self.make()
            try:
                self.send(self.target_fn(), batches)
                self.pending = None
            except grpc.RpcError:
                self.pending = batches
                time.sleep(0.05)

    def finish(self, target):
        self.stop.set()
        self.join(timeout=30)
        if self.pending:
            self.send(target, self.pending)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=None)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if args.binary:
        os.environ["ANALYTICSD"] = os.path.abspath(args.binary)
    seed = args.seed if args.seed is not None else int(time.time())
    rnd = random.Random(seed)
    print("clickhouse crash test: %d kills, seed %d" % (args.kills, seed))
    ns = stubs.load()
    pb, grpc_mod = ns.analytics["events"]
    ch = clickhouse.ClickHouse().start()
    db = "crash_" + uuid.uuid4().hex[:8]
    env = {"CLICKHOUSE_HOST": ch.url, "CLICKHOUSE_DATABASE": db,
           "CLICKHOUSE_BATCH_INTERVAL": "50ms", "CLICKHOUSE_TIMEOUT": "2s"}
    server = harness.Server(log_level="info", env=env)
    env["DATA_DIR"] = server.data_dir
    servers = [server]
    server.start()
    current = {"t": server.target}
    writers = [test_clickhouse.Writer(i, pb, grpc_mod, lambda: current["t"], rnd)
               for i in range(2)]
    importer = Importer(pb, grpc_mod, lambda: current["t"], rnd)
    try:
        for w in writers + [importer]:
            w.start()
        for k in range(args.kills):
            time.sleep(rnd.uniform(0.1, 0.8))
            server.kill()
            if k % 10 == 9:  # ClickHouse dies too, mid-insert or not
                ch.kill()
                ch.start()
            server = harness.Server(log_level="info", env=env)
            servers.append(server)
            server.start()
            current["t"] = server.target
        time.sleep(1.0)
        acked = set()
        for w in writers:
            w.finish(server.target)
            acked |= w.acked
        importer.finish(server.target)
        acked |= importer.acked
        # The suite's checks, on this ClickHouse and database.
        t = test_clickhouse.ClickHouseStoreTest("test_rows_carry_sequence_instance_ms_timestamps"
                                                "_and_property_arrays")
        t.ch, t.db = ch, db
        t.wait_shipped(server, timeout=120)
        counts = t.assert_exactly_once(acked)
        print("clickhouse crash test: %d acknowledged events (%d imported), each in ClickHouse "
              "exactly once (%d rows)" % (len(acked), len(importer.acked), sum(counts.values())))
        rc = server.stop()
        return 0 if rc == 0 else 1
    except AssertionError as e:
        print("FAIL: %s" % str(e)[:2000])
        return 1
    finally:
        for s in servers:
            if s.alive():
                s.kill()
            s.cleanup()
        ch.cleanup()


if __name__ == "__main__":
    sys.exit(main())
