"""The ClickHouse event store against a real clickhouse-server (started here on loopback):
every acknowledged event reaches ClickHouse exactly once across kill -9 of analyticsd during
shipping, ClickHouse killed under load and restarted, ClickHouse answering errors, holding
answers past CLICKHOUSE_TIMEOUT and failing in the middle of an insert; and the spool bound
(UNAVAILABLE when full, recovery after)."""

import json
import random
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid

import grpc

import clickhouse
import harness
import stubs

BATCH = 20
DAY_MS = 86400000


def make_events(pb, ids, rnd=None, name="ch"):
    now_ms = int(time.time() * 1000)
    out = []
    for i in ids:
        e = pb.Event(event_id=i, event_name=name, event_type="test")
        if rnd is not None and rnd.random() < 0.3:  # an out-of-order import, days back
            e.timestamp.FromMilliseconds(now_ms - rnd.randint(1, 20) * DAY_MS - rnd.randint(0, 999))
        e.properties.update({"campaign": "c%d" % (hash(i) % 5), "n": len(i)})
        out.append(e)
    return out


class Writer(threading.Thread):
    """Sends batches with client-chosen eventIds and records the acknowledged ones; batches
    without an answer are retried."""

    def __init__(self, n, pb, grpc_mod, target_fn, rnd=None):
        super().__init__(daemon=True)
        self.n, self.pb, self.grpc_mod, self.target_fn = n, pb, grpc_mod, target_fn
        self.rnd = rnd
        self.stop = threading.Event()
        self.acked, self.pending, self.seq = set(), [], 0
        self.unavailable = 0

    def run(self):
        channel, target = None, None
        while not self.stop.is_set():
            if self.target_fn() != target:
                if channel:
                    channel.close()
                target = self.target_fn()
                channel = grpc.insecure_channel(target)
                stub = self.grpc_mod.EventServiceStub(channel)
            if self.pending:
                ids = self.pending.pop(0)
            else:
                ids = ["w%d-%d-%s" % (self.n, self.seq + i, uuid.uuid4().hex[:6])
                       for i in range(BATCH)]
                self.seq += BATCH
            try:
                resp = stub.TrackEvents(self.pb.TrackEventsRequest(
                    events=make_events(self.pb, ids, self.rnd)), timeout=5)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    self.unavailable += 1
                self.pending.append(ids)
                time.sleep(0.05)
                continue
            for r in resp.results:
                if r.status in (self.pb.EventResult.ACCEPTED, self.pb.EventResult.DUPLICATE):
                    self.acked.add(r.event_id)
        if channel:
            channel.close()

    def finish(self, target):
        """Stops, then sends what never got an answer to a calm server."""
        self.stop.set()
        self.join(timeout=30)
        stub = self.grpc_mod.EventServiceStub(grpc.insecure_channel(target))
        while self.pending:
            ids = self.pending.pop(0)
            resp = stub.TrackEvents(self.pb.TrackEventsRequest(
                events=make_events(self.pb, ids, self.rnd)), timeout=10)
            for r in resp.results:
                self.acked.add(r.event_id)


@unittest.skipUnless(clickhouse.available(), "clickhouse-server is not installed")
class ClickHouseStoreTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ch = clickhouse.ClickHouse().start()
        cls.ns = stubs.load()
        cls.pb, cls.grpc_mod = cls.ns.analytics["events"]

    @classmethod
    def tearDownClass(cls):
        cls.ch.cleanup()

    def setUp(self):
        self.db = "t_" + uuid.uuid4().hex[:10]
        self.servers = []
        self.proxy = None

    def tearDown(self):
        for s in self.servers:
            if s.alive():
                s.kill()
            s.cleanup()
        if self.proxy:
            self.proxy.close()
        if not self.ch.proc:
            self.ch.start()

    def server(self, url=None, data_dir=None, **env):
        e = {
            "CLICKHOUSE_HOST": url or self.ch.url,
            "CLICKHOUSE_DATABASE": self.db,
            "CLICKHOUSE_USER": "ana",
            "CLICKHOUSE_PASSWORD": clickhouse.ClickHouse.PASSWORD,
            "CLICKHOUSE_BATCH_INTERVAL": "50ms",
            "CLICKHOUSE_TIMEOUT": "2s",
        }
        if data_dir:
            e["DATA_DIR"] = data_dir
        e.update({k: str(v) for k, v in env.items()})
        s = harness.Server(log_level="info", env=e)
        self.servers.append(s)
        s.start()
        return s

    def health(self, server):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % server.rest_port,
                                        timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metric(self, server, name):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % server.rest_port,
                                    timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def wait_shipped(self, server, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, h = self.health(server)
            if h.get("eventShipping") == "ok" and h.get("shippingLagEvents") == 0:
                return h
            time.sleep(0.1)
        self.fail("ClickHouse did not catch up: %s\n%s" % (h, harness.tail(server.stderr())))

    def assert_exactly_once(self, acked):
        rows = self.ch.rows("SELECT event_id, count() FROM %s.events GROUP BY event_id" % self.db)
        counts = {r[0]: int(r[1]) for r in rows}
        twice = [i for i, n in counts.items() if n > 1]
        missing = [i for i in acked if i not in counts]
        if twice:
            rows = self.ch.rows("SELECT event_id, groupArray(seq), groupArray(instance) FROM"
                                " %s.events GROUP BY event_id HAVING count() > 1 LIMIT 5" % self.db)
            for s in getattr(self, "servers", []):
                print(harness.tail("\n".join(l for l in s.stderr().splitlines()
                                              if "clickhouse" in l), 12))
            self.fail("events in ClickHouse more than once: %s" % rows)
        self.assertEqual(missing, [], "acknowledged events missing from ClickHouse")
        self.assertGreater(len(acked), 0)
        return counts

    def track(self, server, ids, name="ch"):
        stub = self.grpc_mod.EventServiceStub(server.channel())
        resp = stub.TrackEvents(self.pb.TrackEventsRequest(
            events=make_events(self.pb, ids, name=name)), timeout=10)
        return {r.event_id for r in resp.results
                if r.status in (self.pb.EventResult.ACCEPTED, self.pb.EventResult.DUPLICATE)}

    def test_reads_during_the_set_up_wait_for_the_schema(self):
        # ClickHouse slow to take the set-up (database, migrations): reads made meanwhile wait
        # for it instead of asking a database or columns that are not there yet.
        self.proxy = clickhouse.FaultProxy(self.ch)
        self.proxy.hold_s = 1.5
        self.proxy.mode = "slow_setup"
        s = self.server(url=self.proxy.url, CLICKHOUSE_TIMEOUT="5s")
        acked = self.track(s, ["setup-%d" % i for i in range(3)])
        stub = self.grpc_mod.EventServiceStub(s.channel())
        found = stub.SearchEvents(self.pb.SearchEventsRequest(page_size=10), timeout=10)
        self.assertEqual(sorted(e.event_id for e in found.events), sorted(acked))
        self.wait_shipped(s)
        self.assert_exactly_once(acked)

    def test_rows_carry_sequence_instance_ms_timestamps_and_property_arrays(self):
        s = self.server()
        acked = self.track(s, ["a1", "a2", "a3"])
        self.wait_shipped(s)
        self.assert_exactly_once(acked)
        rows = self.ch.rows(
            "SELECT seq, instance, ts, prop_values[indexOf(prop_keys, 'campaign')],"
            " prop_values[indexOf(prop_keys, 'n')], toString(day) = toString(toDate(intDiv(ts,"
            " 1000))) FROM %s.events ORDER BY seq" % self.db)
        self.assertEqual([r[0] for r in rows], ["1", "2", "3"])
        self.assertEqual(len({r[1] for r in rows}), 1)
        self.assertTrue(all(abs(int(r[2]) - time.time() * 1000) < 60000 for r in rows))
        self.assertTrue(all(r[3].startswith("c") and r[4] == "2" and r[5] == "1" for r in rows))
        self.assertEqual(self.ch.rows("SELECT max(version) FROM %s.schema_migrations" % self.db),
                         [["5"]])
        # The shipped table: every sequence up to 3 is in, from the lowest timestamp on.
        deadline = time.time() + 10
        while time.time() < deadline and self.ch.rows(
                "SELECT max(seq) FROM %s.shipped" % self.db) != [["3"]]:
            time.sleep(0.05)
        self.assertEqual(self.ch.rows("SELECT instance, max(seq), min(min_ts) <= min(%s) FROM"
                                      " %s.shipped GROUP BY instance"
                                      % ("(SELECT min(ts) FROM %s.events)" % self.db, self.db)),
                         [[rows[0][1], "3", "1"]])
        props = self.ch.rows("SELECT properties FROM %s.events ORDER BY seq" % self.db)
        self.assertTrue(all(json.loads(r[0])["n"] == 2 for r in props), props)

    def test_inserts_sent_without_gzip_when_configured(self):
        # CLICKHOUSE_GZIP=false: the same rows, sent as they are (no Content-Encoding).
        self.proxy = clickhouse.FaultProxy(self.ch)
        s = self.server(url=self.proxy.url, CLICKHOUSE_GZIP="false")
        acked = self.track(s, ["plain-%d" % i for i in range(300)])
        self.wait_shipped(s)
        self.assert_exactly_once(acked)
        self.assertEqual(self.ch.rows("SELECT count(), countIf(prop_values[indexOf(prop_keys,"
                                      " 'n')] = toString(length(event_id))) FROM %s.events"
                                      % self.db), [["300", "300"]])
        self.assertEqual(set(self.proxy.encodings), {""})
        # ... and gzip by default
        self.db += "_gz"
        s = self.server(url=self.proxy.url)
        self.proxy.encodings = []
        acked = self.track(s, ["gz-%d" % i for i in range(10)])
        self.wait_shipped(s)
        self.assert_exactly_once(acked)
        self.assertEqual(set(self.proxy.encodings), {"gzip"})

    def test_gzip_levels_round_trip_every_property_shape(self):
        # Each level's inserts (a gzip member per 256 KiB of rows: batches of 600 events of
        # about 1 KB here) give the same rows as inserts sent without compression.
        def props(i):
            return {"s": "plain", "esc": 'q"b\\s\n\t', "uni": "h\u00e9llo \u2713 \U0001d11e",
                    "i": 42, "neg": -7, "r": 3.25, "big": 1e20, "t": True, "f": False,
                    "nul": None, "obj": {"a": {"b": [1, 2]}}, "arr": [1, "x", None],
                    "long": "x" * 600 + str(i)}
        ids = ["shape-%d" % i for i in range(600)]
        got, sent = {}, {}
        self.proxy = clickhouse.FaultProxy(self.ch)
        base_db = self.db
        for level in ("plain", "1", "12"):
            self.db = "%s_%s" % (base_db, level)
            env = {"CLICKHOUSE_GZIP": "false"} if level == "plain" else \
                {"CLICKHOUSE_GZIP_LEVEL": level}
            s = self.server(url=self.proxy.url, CLICKHOUSE_BATCH_INTERVAL="1s", **env)
            self.proxy.encodings = []
            self.proxy.insert_bytes = 0
            stub = self.grpc_mod.EventServiceStub(s.channel())
            for b in range(0, len(ids), 100):
                evs = []
                for i in range(b, b + 100):
                    e = self.pb.Event(event_id=ids[i], event_name="shape", event_type="test")
                    e.properties.update(props(i))
                    evs.append(e)
                stub.TrackEvents(self.pb.TrackEventsRequest(events=evs), timeout=10)
            self.wait_shipped(s)
            self.assert_exactly_once(set(ids))
            self.assertEqual(set(self.proxy.encodings), {"" if level == "plain" else "gzip"})
            sent[level] = self.proxy.insert_bytes
            got[level] = {}  # event id: its property arrays as a map, its properties' JSON
            for line in self.ch.query("SELECT event_id, prop_keys, prop_values, properties FROM"
                                      " %s.events FORMAT JSONEachRow" % self.db).splitlines():
                r = json.loads(line)
                self.assertEqual(len(r["prop_keys"]), len(set(r["prop_keys"])))
                got[level][r["event_id"]] = (dict(zip(r["prop_keys"], r["prop_values"])),
                                             json.loads(r["properties"]))
        self.assertEqual(len(got["plain"]), 600)
        self.assertEqual(got["1"], got["plain"])
        self.assertEqual(got["12"], got["plain"])
        # The level is the one configured: 12 compresses more than 1.
        self.assertLess(sent["12"], sent["1"])
        self.assertLess(sent["1"], sent["plain"] / 3)
        arrays, as_json = got["12"]["shape-7"]
        self.assertEqual(as_json, json.loads(json.dumps(props(7))))
        self.assertEqual(arrays, {
            "s": "plain", "esc": 'q"b\\s\n\t', "uni": "h\u00e9llo \u2713 \U0001d11e", "i": "42",
            "neg": "-7", "r": "3.25", "big": "1.0e+20", "t": "1", "f": "0",
            "obj": '{"a":{"b":[1,2]}}', "arr": '[1,"x",null]', "long": "x" * 600 + "7"})

    def test_a_backlog_found_at_start_ships_and_its_bound_becomes_exact(self):
        # The events not yet shipped at start count against SPOOL_MAX_BYTES from a sample's
        # estimate; once shipped, the bound counts exactly what is left (nothing).
        self.proxy = clickhouse.FaultProxy(self.ch)
        self.proxy.mode = "down"
        s = self.server(url=self.proxy.url, CLICKHOUSE_TIMEOUT="500ms")
        stub = self.grpc_mod.EventServiceStub(s.channel())
        acked = set()
        for b in range(0, 5000, 250):
            ids = ["backlog-%d" % i for i in range(b, b + 250)]
            stub.TrackEvents(self.pb.TrackEventsRequest(events=make_events(self.pb, ids)),
                             timeout=10)
            acked |= set(ids)
        exact = self.metric(s, "ana_spool_pending_bytes")
        self.assertGreater(exact, 0)
        data_dir = s.data_dir
        s.stop()
        s = self.server(url=self.proxy.url, data_dir=data_dir, CLICKHOUSE_TIMEOUT="500ms")
        estimate = self.metric(s, "ana_spool_pending_bytes")
        self.assertLess(abs(estimate - exact) / exact, 0.2, (estimate, exact))
        self.proxy.mode = "pass"
        self.wait_shipped(s)
        self.assert_exactly_once(acked)
        self.assertEqual(self.metric(s, "ana_spool_pending_bytes"), 0)
        self.assertEqual(self.health(s)[1].get("spoolPendingBytes"), 0)
        more = self.track(s, ["after-%d" % i for i in range(10)])
        self.wait_shipped(s)
        self.assertEqual(self.metric(s, "ana_spool_pending_bytes"), 0)
        self.assert_exactly_once(acked | more)

    def test_shipped_table_stays_bounded_as_batches_go_on(self):
        # A row per confirmed batch: older ones are merged (one per CLICKHOUSE_SHIPPED_MERGE),
        # keeping the highest sequence and a lowest timestamp at or below every event's.
        s = self.server(CLICKHOUSE_BATCH_INTERVAL="20ms", CLICKHOUSE_SHIPPED_MERGE="500ms")
        acked = set()
        began = time.time()
        for i in range(40):
            acked |= self.track(s, ["b-%d" % i])
            time.sleep(0.03)
        self.wait_shipped(s)
        took = time.time() - began
        self.assert_exactly_once(acked)
        batches = self.metric(s, "ana_clickhouse_batches_total")
        # about a row per 500 ms of batches (60 of them before coarser ones), and a few young
        bound = min(int(took / 0.5) + 4, batches // 2)
        deadline = time.time() + 10
        while time.time() < deadline:
            rows = self.ch.rows("SELECT count(), max(seq), min(min_ts) <= (SELECT min(ts) FROM"
                                " %s.events), max(merged) FROM %s.shipped" % (self.db, self.db))
            if int(rows[0][0]) <= bound:
                break
            time.sleep(0.1)
        self.assertLessEqual(int(rows[0][0]), bound, (rows, batches, took))
        self.assertEqual(rows[0][1:3], ["40", "1"])
        self.assertGreater(int(rows[0][3]), 0)

    def test_retention_drops_day_partitions_past_retention_days(self):
        s = self.server(RETENTION_DAYS=2)
        acked = self.track(s, ["today-%d" % i for i in range(5)])
        self.wait_shipped(s)
        s.stop()
        self.ch.query("INSERT INTO %s.events (day, event_id, ts) VALUES ('2020-01-01', 'old', 0),"
                      " (today() - 1, 'yesterday', 0)" % self.db)
        s = self.server(data_dir=s.data_dir, RETENTION_DAYS=2)
        deadline = time.time() + 20
        while time.time() < deadline and self.ch.rows(
                "SELECT count() FROM %s.events WHERE event_id = 'old'" % self.db) != [["0"]]:
            time.sleep(0.1)
        ids = {r[0] for r in self.ch.rows("SELECT event_id FROM %s.events" % self.db)}
        self.assertNotIn("old", ids)
        self.assertIn("yesterday", ids)
        self.assertTrue(acked <= ids)

    def test_kill9_during_shipping_loses_and_repeats_nothing(self):
        rnd = random.Random(22)
        s = self.server()
        data_dir = s.data_dir
        current = {"t": s.target}
        writers = [Writer(i, self.pb, self.grpc_mod, lambda: current["t"], rnd) for i in range(2)]
        for w in writers:
            w.start()
        for _ in range(5):
            time.sleep(rnd.uniform(0.3, 0.9))
            s.kill()
            s = self.server(data_dir=data_dir)
            current["t"] = s.target
        time.sleep(0.5)
        acked = set()
        for w in writers:
            w.finish(s.target)
            acked |= w.acked
        self.wait_shipped(s)
        counts = self.assert_exactly_once(acked)
        self.assertEqual(len(counts), len(acked))

    def test_clickhouse_killed_under_load_then_restarted(self):
        s = self.server()
        writers = [Writer(i, self.pb, self.grpc_mod, lambda: s.target) for i in range(2)]
        for w in writers:
            w.start()
        time.sleep(0.5)
        self.ch.kill()
        deadline = time.time() + 15
        while time.time() < deadline:
            code, h = self.health(s)
            if h.get("eventShipping") == "degraded" and h.get("shippingLagEvents", 0) > 0:
                break
            time.sleep(0.1)
        self.assertEqual(h.get("eventShipping"), "degraded", h)
        self.assertEqual(code, 200, "readiness stays SERVING while the spool accepts")
        self.assertGreater(self.metric(s, "ana_clickhouse_lag_events"), 0)
        time.sleep(1.0)
        self.ch.start()
        acked = set()
        for w in writers:
            w.finish(s.target)
            acked |= w.acked
        self.wait_shipped(s)
        self.assert_exactly_once(acked)

    def test_errors_held_answers_and_mid_insert_failures_ship_exactly_once(self):
        self.proxy = clickhouse.FaultProxy(self.ch)
        s = self.server(url=self.proxy.url, CLICKHOUSE_TIMEOUT="1s")
        acked = self.track(s, ["warm-%d" % i for i in range(10)])
        self.wait_shipped(s)
        # ClickHouse answers errors: nothing shipped, degraded, then recovered.
        self.proxy.mode = "error"
        acked |= self.track(s, ["err-%d" % i for i in range(50)])
        time.sleep(0.5)
        _, h = self.health(s)
        self.assertEqual(h["eventShipping"], "degraded", h)
        self.assertIn("injected failure", h.get("eventShippingError", ""))
        self.proxy.mode = "pass"
        self.wait_shipped(s)
        self.assert_exactly_once(acked)
        # The insert succeeds but its answer comes after CLICKHOUSE_TIMEOUT: the rows are there,
        # and are not sent again.
        self.proxy.mode, self.proxy.hold_s = "hold", 1.6
        before = self.proxy.inserts
        acked |= self.track(s, ["hold-%d" % i for i in range(50)])
        deadline = time.time() + 10
        while self.proxy.inserts == before and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.2)
        self.proxy.mode = "pass"
        self.wait_shipped(s)
        self.assert_exactly_once(acked)
        self.assertGreaterEqual(self.metric(s, "ana_clickhouse_rows_found_total"), 50)
        # An insert failing mid-way (a view refusing one row, after the table took the block).
        self.ch.query("CREATE TABLE %s.poison (name String) ENGINE = Memory" % self.db)
        self.ch.query("CREATE MATERIALIZED VIEW %s.guard ENGINE = Null AS SELECT"
                      " throwIf(event_name IN (SELECT name FROM %s.poison)) AS x FROM %s.events"
                      % (self.db, self.db, self.db))
        self.ch.query("INSERT INTO %s.poison VALUES ('poison')" % self.db)
        failures = self.metric(s, "ana_clickhouse_failures_total")
        acked |= self.track(s, ["pre-%d" % i for i in range(20)])
        acked |= self.track(s, ["bad"], name="poison")
        acked |= self.track(s, ["post-%d" % i for i in range(20)])
        self.wait_shipped(s)
        self.assertGreater(self.metric(s, "ana_clickhouse_failures_total"), failures)
        self.assert_exactly_once(acked)

    def test_an_insert_landing_after_its_range_was_checked_leaves_one_copy(self):
        # The insert reaches ClickHouse only after analyticsd gave up on it (CLICKHOUSE_TIMEOUT),
        # found nothing running and nothing held, and sent the rows again.
        self.proxy = clickhouse.FaultProxy(self.ch)
        self.proxy.mode, self.proxy.hold_s = "late", 2.0
        s = self.server(url=self.proxy.url, CLICKHOUSE_TIMEOUT="1s")
        acked = self.track(s, ["late-%d" % i for i in range(40)])
        self.assertTrue(self.proxy.late_done.wait(15))
        self.wait_shipped(s)
        deadline = time.time() + 15
        while time.time() < deadline:
            rows = self.ch.rows("SELECT count(), uniqExact(event_id) FROM %s.events" % self.db)
            if rows == [["40", "40"]]:
                break
            time.sleep(0.2)
        self.assert_exactly_once(acked)
        self.assertEqual(self.metric(s, "ana_clickhouse_second_copies_deleted_total"), 40)
        # Reads never saw the second copies.
        stub = self.grpc_mod.EventServiceStub(s.channel())
        found = stub.SearchEvents(self.pb.SearchEventsRequest(page_size=100), timeout=10)
        self.assertEqual(sorted(e.event_id for e in found.events), sorted(acked))

    def test_full_spool_answers_unavailable_and_recovers(self):
        self.proxy = clickhouse.FaultProxy(self.ch)
        self.proxy.mode = "down"
        s = self.server(url=self.proxy.url, SPOOL_MAX_BYTES=20000, CLICKHOUSE_TIMEOUT="1s")
        stub = self.grpc_mod.EventServiceStub(s.channel())
        acked, refused = set(), None
        for k in range(200):
            ids = ["full-%d-%d" % (k, i) for i in range(10)]
            try:
                resp = stub.TrackEvents(self.pb.TrackEventsRequest(
                    events=make_events(self.pb, ids)), timeout=10)
                acked |= {r.event_id for r in resp.results}
            except grpc.RpcError as e:
                refused = e
                break
        self.assertIsNotNone(refused, "the spool bound never refused a write")
        self.assertEqual(refused.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("SPOOL_MAX_BYTES", refused.details())
        code, h = self.health(s)
        self.assertEqual((code, h["eventShipping"]), (503, "full"), h)
        self.assertGreaterEqual(self.metric(s, "ana_spool_refused_commits_total"), 1)
        self.proxy.mode = "pass"
        self.wait_shipped(s)
        deadline = time.time() + 10
        while self.health(s)[0] != 200 and time.time() < deadline:
            time.sleep(0.1)
        acked |= self.track(s, ["after-%d" % i for i in range(10)])
        self.wait_shipped(s)
        self.assert_exactly_once(acked)


if __name__ == "__main__":
    unittest.main()
