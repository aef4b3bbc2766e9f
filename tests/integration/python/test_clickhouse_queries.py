"""Reads pushed down to ClickHouse answer as the embedded store does: the same events sent to an
analyticsd on the embedded store and to one on ClickHouse (a real clickhouse-server started here
on loopback); search (filters, property equality, pages) and metric data (aggregations,
dimensions, filters, buckets in IANA time zones) compared, while part of the events is only in
the spool (inserts failing through a fault proxy: read-your-writes) and after all are shipped."""

import math
import random
import time
import unittest

import grpc
from google.protobuf import json_format, timestamp_pb2

import clickhouse
import harness
import stubs

HOUR = 3600


def same(a, b, path="data"):
    """a equals b, numbers up to the rounding of a sum taken in another order."""
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)):
            return "%s: %r != %r" % (path, a, b)
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if sorted(a) != sorted(b):
            return "%s: fields %s != %s" % (path, sorted(a), sorted(b))
        for k in a:
            d = same(a[k], b[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return "%s: %d != %d items" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            d = same(x, y, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    return None if a == b else "%s: %r != %r" % (path, a, b)


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMilliseconds(int(seconds * 1000))
    return t


@unittest.skipUnless(clickhouse.available(), "clickhouse-server is not installed")
class PushedDownReadsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ns = stubs.load()
        cls.epb, egrpc = cls.ns.analytics["events"]
        cls.mpb, mgrpc = cls.ns.analytics["metrics"]
        cls.ch = clickhouse.ClickHouse().start()
        cls.proxy = clickhouse.FaultProxy(cls.ch)
        cls.embedded = harness.Server(log_level="info", env={"CLICKHOUSE_HOST": None})
        cls.pushed = harness.Server(log_level="info", env={
            "CLICKHOUSE_HOST": cls.proxy.url, "CLICKHOUSE_DATABASE": "cmp",
            "CLICKHOUSE_BATCH_INTERVAL": "50ms", "CLICKHOUSE_TIMEOUT": "5s"})
        cls.servers = [cls.embedded, cls.pushed]
        for s in cls.servers:
            s.start()
        cls.stubs = [(egrpc.EventServiceStub(s.channel()), mgrpc.MetricServiceStub(s.channel()))
                     for s in cls.servers]
        # Events over the last three days, in random order (an import of the past).
        rnd = random.Random(7)
        now = int(time.time())
        cls.base = (now // HOUR - 72) * HOUR
        cls.events = []
        for i in range(600):
            e = cls.epb.Event(event_id="e%04d" % i, event_name=rnd.choice(["sent", "open", "buy"]),
                              event_type=rnd.choice(["message", "order"]),
                              session_id="s%d" % rnd.randint(0, 4))
            at = cls.base + rnd.randint(0, 71 * HOUR) + rnd.random()
            if i % 50 == 0:
                at = cls.base + 5 * HOUR  # several at the same millisecond: ties by eventId
            e.timestamp.FromMilliseconds(int(at * 1000))
            props = {"campaign": "c%d" % rnd.randint(0, 3), "amount": rnd.randint(1, 500),
                     "price": round(rnd.uniform(0, 100), 2), "vip": rnd.random() < 0.3,
                     "user": "u%d" % rnd.randint(0, 40)}
            if rnd.random() < 0.2:
                del props["amount"]
            if i % 7 == 0:
                props["qty"] = str(i % 9)  # a number in a string: counted as a number
            e.properties.update(props)
            cls.events.append(e)

    @classmethod
    def tearDownClass(cls):
        for s in cls.servers:
            s.stop()
            s.cleanup()
        cls.proxy.close()
        cls.ch.cleanup()

    def track(self, events):
        for ev, _ in self.stubs:
            for i in range(0, len(events), 100):
                r = ev.TrackEvents(self.epb.TrackEventsRequest(events=events[i:i + 100]),
                                   timeout=10)
                self.assertEqual(r.rejected, 0, r)

    def health(self):
        import json
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.pushed.rest_port,
                                        timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def aggregations(self):
        """How many raw-path metric queries the ClickHouse analyticsd aggregated in SQL."""
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.pushed.rest_port,
                                    timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith('ana_clickhouse_metric_aggregations_total{path="sql"}'):
                    return int(line.split()[-1])
        self.fail("no ana_clickhouse_metric_aggregations_total")

    def wait_shipped(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            h = self.health()
            if h.get("eventShipping") == "ok" and h.get("shippingLagEvents") == 0:
                return
            time.sleep(0.1)
        self.fail("not shipped: %s" % self.health())

    def search_all(self, ev, **kw):
        out, token = [], ""
        for _ in range(200):
            page = ev.SearchEvents(self.epb.SearchEventsRequest(page_token=token, **kw), timeout=10)
            for e in page.events:
                e.ClearField("received_at")  # each server's own clock
                out.append(e.SerializeToString(deterministic=True))
            token = page.next_page_token
            if not token:
                return out
        self.fail("too many pages")

    SEARCHES = [
        dict(page_size=1000),
        dict(page_size=37),
        dict(event_name="buy", page_size=13),
        dict(event_type="order", session_id="s2", page_size=1000),
        dict(properties={"campaign": "c1"}, page_size=9),
        dict(properties={"amount": "42"}, page_size=100),
        dict(properties={"vip": "1", "campaign": "c2"}, page_size=100),
        dict(properties={"missing": ""}, page_size=100),
        dict(properties={"price": "12.5"}, page_size=100),
    ]

    def compare_searches(self):
        ranged = {"from": ts(self.base + 10 * HOUR), "to": ts(self.base + 30 * HOUR)}
        for kw in self.SEARCHES + [dict(page_size=11, **ranged)]:
            with self.subTest(search=kw):
                a = self.search_all(self.stubs[0][0], **kw)
                b = self.search_all(self.stubs[1][0], **kw)
                self.assertEqual(len(a), len(b))
                self.assertEqual(a, b)
        self.assertGreater(len(self.search_all(self.stubs[1][0], page_size=1000)), 0)

    # pushed: the raw path aggregates in ClickHouse (SQL); else from its rows (booleans, numbers
    # in strings, reals in uniq, filters).
    METRICS = [
        dict(formula="count(sent)", pushed=True),
        dict(formula="count(sent) + count(open)", dimensions=["campaign"], pushed=True),
        dict(formula="sum(buy.amount)", aggregation="sum", dimensions=["campaign", "vip"]),
        dict(formula="avg(buy.price)", aggregation="avg", pushed=True),
        dict(formula="min(open.price) + max(open.amount)", aggregation="max", pushed=True),
        dict(formula="sum(buy.amount) - min(sent.price) + count(open.amount)", aggregation="avg",
             dimensions=["eventType", "campaign", "user"], pushed=True),
        dict(formula="sum(sent.qty) + count(sent)"),
        dict(formula="count(sent)", dimensions=["qty"], pushed=True),  # strings as they are
        dict(formula="count(sent)", dimensions=["amount"]),  # numbers printed %.15g
        # uniq: the distinct texts per group and bucket; percentiles: the numbers, ranked over
        # the merged buckets (totals, previous period, "other") as over rows
        dict(formula="uniq(sent.user)", dimensions=["campaign"], pushed=True),
        dict(formula="uniq(*.sessionId) + uniq(open.sessionId)", dimensions=["user"], pushed=True),
        dict(formula="uniq(buy.amount) + uniq(sent.qty)", pushed=True),  # integers, strings
        dict(formula="uniq(sent.price)"),  # reals printed %.15g: from rows
        dict(formula="uniq(buy.vip)", dimensions=["campaign"]),  # booleans: from rows
        dict(formula="p50(buy.amount)", pushed=True),  # ties
        dict(formula="p90(buy.amount) + count(sent)", dimensions=["user"], pushed=True),  # empty
        dict(formula="p95(sent.price) - p99(sent.amount)", dimensions=["campaign"], pushed=True),
        dict(formula="p95(sent.price) - p99(sent.amount)", dimensions=["vip"]),
        dict(formula="p50(sent.qty)"),  # numbers in strings: from rows
        dict(formula="(count(open) / count(sent)) * 100", filters=[("campaign", "in",
                                                                    ["c0", "c2"])], pushed=True),
        dict(formula="sum(buy.amount) + count(*)", dimensions=["campaign"], pushed=True,
             filters=[("eventType", "eq", "order"), ("user", "neq", "u3"),
                      ("price", "gte", 20.5), ("campaign", "contains", "c"),
                      ("amount", "exists", None)]),
        dict(formula="count(buy)", filters=[("vip", "eq", True)]),  # booleans: from rows
        dict(formula="count(sent)", filters=[("qty", "gt", 3)]),  # numbers in strings: rows
    ]

    def create_metrics(self):
        self.metric_ids = []
        for i, kw in enumerate(self.METRICS):
            kw = dict(kw)
            filters = kw.pop("filters", ())
            kw.pop("pushed", None)
            ids = []
            for _, mt in self.stubs:
                m = self.mpb.Metric(name="cmp-%d" % i, **kw)
                for f in filters:
                    mf = m.filters.add(field=f[0], op=f[1])
                    if isinstance(f[2], list):
                        mf.value.list_value.extend(f[2])
                    elif isinstance(f[2], bool):
                        mf.value.bool_value = f[2]
                    elif isinstance(f[2], (int, float)):
                        mf.value.number_value = f[2]
                    elif isinstance(f[2], str):
                        mf.value.string_value = f[2]
                ids.append(mt.CreateMetric(self.mpb.CreateMetricRequest(metric=m),
                                           timeout=10).metric_id)
            self.metric_ids.append(ids)

    def compare_metrics(self):
        asks = [dict(interval="1h"), dict(interval="1d", time_zone="Asia/Kathmandu"),
                dict(interval="1h", time_zone="America/New_York", top_n=2),
                dict(interval="5m", omit_empty_buckets=True)]
        span = {"from": ts(self.base), "to": ts(self.base + 72 * HOUR)}
        for ids, kw in zip(self.metric_ids, self.METRICS):
            for ask in asks:
                with self.subTest(metric=kw["formula"], ask=ask):
                    for source in ("raw", "auto"):  # the raw path; rollups once complete
                        answers = []
                        before = self.aggregations()
                        for (_, mt), mid in zip(self.stubs, ids):
                            d = mt.GetMetricData(self.mpb.GetMetricDataRequest(
                                metric_id=mid, **span, **ask), timeout=20,
                                metadata=[("x-metric-source", source)])
                            d.metric_id = ""
                            answers.append(json_format.MessageToDict(d))
                        if source == "raw":
                            self.assertEqual(self.aggregations() - before,
                                             1 if kw.get("pushed") else 0)
                        self.assertIsNone(same(answers[0], answers[1]))
                        self.assertTrue(answers[0].get("series"))

    def test_search_and_metrics_equal_the_embedded_store_before_and_after_shipping(self):
        self.create_metrics()
        self.track(self.events[:400])
        self.wait_shipped()
        # The rest only reaches the spool: ClickHouse refuses the inserts for now.
        self.proxy.mode = "error"
        self.track(self.events[400:])
        time.sleep(0.3)
        self.assertGreater(self.health().get("shippingLagEvents", 0), 0)
        self.compare_searches()
        self.compare_metrics()
        # All shipped: every read from ClickHouse.
        self.proxy.mode = "pass"
        self.wait_shipped()
        self.compare_searches()
        self.compare_metrics()
        rows = self.ch.rows("SELECT count() FROM cmp.events")
        self.assertEqual(rows, [[str(len(self.events))]])
        # A second copy of a row in ClickHouse (an insert that landed twice, before the sweep
        # deletes it): the aggregation sees it and the query is answered from rows, once.
        self.ch.query("INSERT INTO cmp.events SELECT * FROM cmp.events WHERE event_name = 'sent'"
                      " LIMIT 1")
        ids = self.metric_ids[0]  # count(sent): aggregated in SQL until now
        before = self.aggregations()
        answers = []
        for (_, mt), mid in zip(self.stubs, ids):
            d = mt.GetMetricData(self.mpb.GetMetricDataRequest(
                metric_id=mid, interval="1h", **{"from": ts(self.base),
                                                 "to": ts(self.base + 72 * HOUR)}),
                timeout=20, metadata=[("x-metric-source", "raw")])
            d.metric_id = ""
            answers.append(json_format.MessageToDict(d))
        self.assertEqual(self.aggregations(), before)
        self.assertIsNone(same(answers[0], answers[1]))

    def test_each_instance_reads_what_every_instance_shipped(self):
        # Two analyticsd on one ClickHouse database (each with its own spool): a search and a
        # metric on either see both instances' events.
        # (The shipped table's rows are merged soon: marks fall inside merged rows.)
        env = {"CLICKHOUSE_HOST": self.ch.url, "CLICKHOUSE_DATABASE": "shared",
               "CLICKHOUSE_BATCH_INTERVAL": "50ms", "CLICKHOUSE_SHIPPED_MERGE": "1s"}
        pair = [harness.Server(log_level="info", env=env) for _ in range(2)]
        try:
            for s in pair:
                s.start()
            _, egrpc = self.ns.analytics["events"]
            _, mgrpc = self.ns.analytics["metrics"]
            at = self.base + 3 * HOUR
            for n, s in enumerate(pair):
                evs = []
                for i in range(5 + n):
                    e = self.epb.Event(event_id="i%d-%d" % (n, i), event_name="shared",
                                       event_type="t")
                    e.timestamp.FromMilliseconds((at + i) * 1000)
                    evs.append(e)
                egrpc.EventServiceStub(s.channel()).TrackEvents(
                    self.epb.TrackEventsRequest(events=evs), timeout=10)
            deadline = time.time() + 30
            while time.time() < deadline and self.ch.rows(
                    "SELECT count() FROM shared.events") != [["11"]]:
                time.sleep(0.1)
            # A row as a schema-1 build shipped it (no properties column yet: the arrays).
            old = self.epb.Event(event_id="old-1", event_name="shared", event_type="t")
            old.timestamp.FromMilliseconds(at * 1000 + 500)
            old.properties.update({"k": "v"})
            self.ch.query(
                "INSERT INTO shared.events (instance, seq, account_id, event_id, session_id,"
                " event_type, event_name, ts, received_at, day, prop_keys, prop_values, payload)"
                " SELECT 'old', 1, 'default', 'old-1', '', 't', 'shared', %d, %d,"
                " toDate(%d), ['k'], ['v'], unhex('%s')"
                % (at * 1000 + 500, at * 1000 + 500, at, old.SerializeToString().hex()))
            # ... and its row of the shipped table, as the schema migration writes it for the
            # instances that shipped before the table was there.
            self.ch.query("INSERT INTO shared.shipped (instance, seq, min_ts) VALUES ('old', 1, %d)"
                          % (at * 1000 + 500))
            metrics = []
            for s in pair:
                found = egrpc.EventServiceStub(s.channel()).SearchEvents(
                    self.epb.SearchEventsRequest(event_name="shared", page_size=100), timeout=10)
                self.assertEqual(sorted(e.event_id for e in found.events),
                                 sorted(["i0-%d" % i for i in range(5)] +
                                        ["i1-%d" % i for i in range(6)] + ["old-1"]))
                found = egrpc.EventServiceStub(s.channel()).SearchEvents(
                    self.epb.SearchEventsRequest(properties={"k": "v"}), timeout=10)
                self.assertEqual([e.event_id for e in found.events], ["old-1"])
                mt = mgrpc.MetricServiceStub(s.channel())
                m = mt.CreateMetric(self.mpb.CreateMetricRequest(metric=self.mpb.Metric(
                    name="shared", formula="count(shared)", dimensions=["k"])), timeout=10)
                metrics.append(m.metric_id)
                # The raw path (rollups follow each instance's own commit sequence).
                d = mt.GetMetricData(self.mpb.GetMetricDataRequest(
                    metric_id=m.metric_id, interval="1h", **{"from": ts(at - 60),
                                                             "to": ts(at + 3600)}), timeout=10,
                    metadata=[("x-metric-source", "raw")])
                self.assertEqual(sorted((dict(x.dimensions).get("k"), x.total.value)
                                        for x in d.series), [("", 11), ("v", 1)])
                # The rollups: their backfill reads the other instances' events from
                # ClickHouse besides this instance's own commit sequence.
                raw = json_format.MessageToDict(d)
                ask = self.mpb.GetMetricDataRequest(
                    metric_id=m.metric_id, interval="1h", **{"from": ts(at - 60),
                                                             "to": ts(at + 3600)})
                deadline = time.time() + 30
                while True:
                    try:
                        r = mt.GetMetricData(ask, timeout=10,
                                             metadata=[("x-metric-source", "rollup")])
                        break
                    except grpc.RpcError as e:
                        if (e.code() != grpc.StatusCode.FAILED_PRECONDITION
                                or time.time() > deadline):
                            raise
                        time.sleep(0.1)
                self.assertIsNone(same(json_format.MessageToDict(r), raw))
            # Both go on ingesting after the backfills: each rollup follows the events the
            # other instance ships afterwards (not only its own), and answers as the raw path;
            # a second metric per instance (defined now: its marks catch up, then both read
            # the other's new events in one scan).
            for n, s in enumerate(pair):
                mt = mgrpc.MetricServiceStub(s.channel())
                metrics.append(mt.CreateMetric(self.mpb.CreateMetricRequest(
                    metric=self.mpb.Metric(name="shared-by-type", formula="count(shared)",
                                           dimensions=["eventType"])), timeout=10).metric_id)
            sent = [12]  # the events so far: 11 tracked, the old row

            def track_more(tag, senders):
                for rnd in range(3):
                    for n, s in senders:
                        evs = []
                        for i in range(4 + n + rnd):
                            e = self.epb.Event(event_id="%s%d-%d-%d" % (tag, rnd, n, i),
                                               event_name="shared", event_type="t")
                            e.timestamp.FromMilliseconds((at + 600 * rnd + i) * 1000)
                            e.properties.update({"k": "w%d" % (i % 2)})
                            evs.append(e)
                        egrpc.EventServiceStub(s.channel()).TrackEvents(
                            self.epb.TrackEventsRequest(events=evs), timeout=10)
                        sent[0] += len(evs)
                    time.sleep(0.2)
                deadline = time.time() + 30
                while time.time() < deadline and self.ch.rows(
                        "SELECT count() FROM shared.events") != [[str(sent[0])]]:
                    time.sleep(0.1)

            def rollups_equal_raw(servers, ids):
                for s, metric_id in zip(servers, ids):
                    mt = mgrpc.MetricServiceStub(s.channel())
                    ask = self.mpb.GetMetricDataRequest(
                        metric_id=metric_id, interval="1h", **{"from": ts(at - 60),
                                                                 "to": ts(at + 3600)})
                    raw = json_format.MessageToDict(mt.GetMetricData(
                        ask, timeout=10, metadata=[("x-metric-source", "raw")]))
                    self.assertEqual(sum(x["total"] for x in raw["series"]), sent[0])
                    deadline = time.time() + 10
                    while True:
                        try:
                            r = json_format.MessageToDict(mt.GetMetricData(
                                ask, timeout=10, metadata=[("x-metric-source", "rollup")]))
                            diff = same(r, raw)
                        except grpc.RpcError as e:  # not complete yet after a restart
                            diff = str(e)
                        if diff is None or time.time() > deadline:
                            break
                        time.sleep(0.2)
                    self.assertIsNone(diff, "the rollup of %s misses the other's later events"
                                      % s.data_dir)

            track_more("r", list(enumerate(pair)))
            rollups_equal_raw(pair + pair, metrics)
            # The marks are kept with the cells: after a restart nothing is counted twice, and
            # what the other shipped meanwhile is read.
            pair[0].stop()
            track_more("x", [(1, pair[1])])
            # ... merged meanwhile into fewer rows of the shipped table: pair[0]'s marks are
            # now within or below rows that stand for several batches.
            other = self.ch.rows("SELECT any(instance) FROM shared.events WHERE event_id LIKE"
                                 " 'x%'")[0][0]
            deadline = time.time() + 10
            while time.time() < deadline and self.ch.rows(
                    "SELECT max(merged) FROM shared.shipped WHERE instance = '%s'"
                    % other) == [["0"]]:
                time.sleep(0.1)
            pair[0].sigterm_at = None  # (a new process: stop sends it SIGTERM again)
            pair[0].start()
            rollups_equal_raw([pair[0], pair[0]], metrics[0::2])
            self.assertNotEqual(self.ch.rows("SELECT max(merged) FROM shared.shipped WHERE"
                                             " instance = '%s'" % other), [["0"]])
        finally:
            for s in pair:
                s.stop()
                s.cleanup()


if __name__ == "__main__":
    unittest.main()
