"""MetricService end to end through gRPC: definitions (create, list, get,
update, delete) with their validation, and metric data over raw events,
including the spec's delivery-rate example per campaign and group."""

import time
import unittest
import uuid

import grpc
from google.protobuf import timestamp_pb2

import harness


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMilliseconds(int(seconds * 1000))
    return t


class MetricsBase(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mpb, mgrpc = cls.ns.analytics["metrics"]
        cls.epb, egrpc = cls.ns.analytics["events"]
        cls.metrics = mgrpc.MetricServiceStub(cls.channel)
        cls.events = egrpc.EventServiceStub(cls.channel)

    def create(self, **kw):
        variables = kw.pop("variables", None)
        filters = kw.pop("filters", None)
        m = self.mpb.Metric(**kw)
        if variables:
            m.variables.update(variables)
        for f in filters or ():
            mf = m.filters.add(field=f[0], op=f[1])
            if len(f) > 2:
                if isinstance(f[2], list):
                    mf.value.list_value.extend(f[2])
                elif isinstance(f[2], (int, float)):
                    mf.value.number_value = f[2]
                else:
                    mf.value.string_value = f[2]
        return self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=m), timeout=10)

    def track(self, events):
        resp = self.events.TrackEvents(self.epb.TrackEventsRequest(events=events), timeout=10)
        self.assertEqual(resp.rejected, 0, resp)

    def event(self, name, at, **props):
        e = self.epb.Event(event_type="message", event_name=name)
        e.timestamp.FromMilliseconds(int(at * 1000))
        e.properties.update(props)
        return e

    def data(self, metric_id, **kw):
        return self.metrics.GetMetricData(self.mpb.GetMetricDataRequest(
            metric_id=metric_id, **kw), timeout=10)


class DefinitionsTest(MetricsBase):

    def test_spec_example_is_created_with_defaults_and_ids(self):
        m = self.create(name="Message Delivery Rate %s" % uuid.uuid4().hex, type="gauge",
                        formula="(delivered / sent) * 100", unit="percentage",
                        aggregation="avg", dimensions=["campaignId", "groupId"])
        self.assertEqual(uuid.UUID(m.metric_id).version, 7)
        self.assertEqual(m.account_id, "default")
        self.assertEqual(list(m.dimensions), ["campaignId", "groupId"])
        got = self.metrics.GetMetric(self.mpb.GetMetricRequest(metric_id=m.metric_id), timeout=10)
        self.assertEqual(got, m)

    def test_names_are_unique_per_account(self):
        name = "dup-%s" % uuid.uuid4().hex
        self.create(name=name, formula="count(x)")
        with self.assertRaises(grpc.RpcError) as cm:
            self.create(name=name, formula="count(y)")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.ALREADY_EXISTS)

    def test_bad_definitions_are_refused_naming_the_field(self):
        cases = [
            (dict(formula="count(x)"), "name: is required"),
            (dict(name="a", formula="(sent / "), "formula:"),
            (dict(name="a", formula="count(x)", type="meter"), "type: unknown type"),
            (dict(name="a", formula="count(x)", aggregation="median"),
             "aggregation: unknown aggregation"),
            (dict(name="a", formula="count(x)", filters=[("campaignId", "like", "1")]),
             "filters[0].op: unknown operator"),
            (dict(name="a", formula="count(x)", filters=[("n", "in", "1")]),
             "filters[0].value:"),
            (dict(name="a", formula="count(x)", dimensions=["a", "a"]), "dimensions[1]:"),
            (dict(name="a", formula=""), "formula: is required"),
        ]
        for kw, message in cases:
            with self.subTest(kw=kw):
                with self.assertRaises(grpc.RpcError) as cm:
                    self.create(**kw)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(message, cm.exception.details())

    def test_formula_errors_point_at_the_character(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.create(name="bad-%s" % uuid.uuid4().hex, formula="(sent / delivered))")
        self.assertIn("character 19", cm.exception.details())

    def test_list_update_delete(self):
        tag = uuid.uuid4().hex
        ids = [self.create(name="l-%s-%d" % (tag, i), formula="count(x)").metric_id
               for i in range(5)]
        seen, token = [], ""
        while True:
            page = self.metrics.ListMetrics(self.mpb.ListMetricsRequest(
                page_size=2, page_token=token), timeout=10)
            seen += [m.metric_id for m in page.metrics]
            token = page.next_page_token
            if not token:
                break
        self.assertTrue(set(ids) <= set(seen))
        updated = self.metrics.UpdateMetric(self.mpb.UpdateMetricRequest(
            metric_id=ids[0], metric=self.mpb.Metric(name="l-%s-renamed" % tag,
                                                      formula="count(y)")), timeout=10)
        self.assertEqual((updated.metric_id, updated.formula), (ids[0], "count(y)"))
        self.metrics.DeleteMetric(self.mpb.DeleteMetricRequest(metric_id=ids[1]), timeout=10)
        for call in (lambda: self.metrics.GetMetric(
                         self.mpb.GetMetricRequest(metric_id=ids[1]), timeout=10),
                     lambda: self.metrics.DeleteMetric(
                         self.mpb.DeleteMetricRequest(metric_id=ids[1]), timeout=10)):
            with self.assertRaises(grpc.RpcError) as cm:
                call()
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)


class DataTest(MetricsBase):

    def series_by(self, data):
        return {tuple(sorted(s.dimensions.items())): s for s in data.series}

    def test_spec_delivery_rate_per_campaign_and_group(self):
        # Campaign A/group 1: 4 sent, 3 delivered; campaign B/group 2: 2 sent, 1 delivered.
        camp_a, camp_b = "A" + uuid.uuid4().hex[:6], "B" + uuid.uuid4().hex[:6]
        base = (int(time.time()) // 3600 - 3) * 3600
        evs = [self.event("sent", base + 60 * i, campaignId=camp_a, groupId="1")
               for i in range(4)]
        evs += [self.event("delivered", base + 60 * i, campaignId=camp_a, groupId="1")
                for i in range(3)]
        evs += [self.event("sent", base + 3600 + i, campaignId=camp_b, groupId="2")
                for i in range(2)]
        evs += [self.event("delivered", base + 3600, campaignId=camp_b, groupId="2")]
        self.track(evs)
        m = self.create(name="Message Delivery Rate %s" % uuid.uuid4().hex, type="gauge",
                        formula="(delivered / sent) * 100", unit="percentage",
                        aggregation="avg", dimensions=["campaignId", "groupId"],
                        filters=[("campaignId", "in", [camp_a, camp_b])])
        data = self.data(m.metric_id, **{"from": ts(base), "to": ts(base + 2 * 3600)},
                         interval="1h")
        self.assertEqual(data.interval, "1h")
        by = self.series_by(data)
        a = by[(("campaignId", camp_a), ("groupId", "1"))]
        b = by[(("campaignId", camp_b), ("groupId", "2"))]
        self.assertAlmostEqual(a.total.value, 75.0)
        self.assertAlmostEqual(b.total.value, 50.0)
        self.assertEqual(len(a.buckets), 2)
        self.assertAlmostEqual(a.buckets[0].value.value, 75.0)
        self.assertFalse(a.buckets[1].HasField("value"))  # 0 / 0: no value, not inf
        self.assertAlmostEqual(a.summary.value, 75.0)

    def test_variables_map_names_to_other_events(self):
        camp = "V" + uuid.uuid4().hex[:6]
        base = (int(time.time()) // 3600 - 2) * 3600
        evs = [self.event("message_sent", base + i, campaignId=camp) for i in range(5)]
        evs += [self.event("message_delivered", base + i, campaignId=camp) for i in range(4)]
        self.track(evs)
        m = self.create(name="Delivery via variables %s" % uuid.uuid4().hex,
                        formula="(delivered / sent) * 100",
                        variables={"sent": "count(message_sent)",
                                   "delivered": "count(message_delivered)"},
                        filters=[("campaignId", "eq", camp)])
        data = self.data(m.metric_id, **{"from": ts(base), "to": ts(base + 3600)}, interval="1h")
        self.assertAlmostEqual(data.series[0].total.value, 80.0)

    def test_summary_total_and_unequal_buckets(self):
        # Bucket 1: 1 of 1 delivered (100%); bucket 2: 1 of 3 (33.3%).
        # summary (avg of buckets) = 66.7; total (whole range) = 2 / 4 = 50.
        camp = "S" + uuid.uuid4().hex[:6]
        base = (int(time.time()) // 3600 - 3) * 3600
        evs = [self.event("sent", base, campaignId=camp),
               self.event("delivered", base, campaignId=camp)]
        evs += [self.event("sent", base + 3600 + i, campaignId=camp) for i in range(3)]
        evs += [self.event("delivered", base + 3600, campaignId=camp)]
        self.track(evs)
        m = self.create(name="Unequal %s" % uuid.uuid4().hex, formula="(delivered / sent) * 100",
                        aggregation="avg", filters=[("campaignId", "eq", camp)])
        s = self.data(m.metric_id, **{"from": ts(base), "to": ts(base + 7200)},
                      interval="1h").series[0]
        self.assertAlmostEqual(s.buckets[0].value.value, 100.0)
        self.assertAlmostEqual(s.buckets[1].value.value, 100.0 / 3)
        self.assertAlmostEqual(s.summary.value, (100.0 + 100.0 / 3) / 2)
        self.assertAlmostEqual(s.total.value, 50.0)

    def test_counter_rate_and_change(self):
        camp = "C" + uuid.uuid4().hex[:6]
        base = (int(time.time()) // 60 - 10) * 60
        # previous period: 2 events, this period: 6 events (3 per minute).
        evs = [self.event("click", base - 60 + i, campaignId=camp) for i in range(2)]
        evs += [self.event("click", base + i, campaignId=camp) for i in range(3)]
        evs += [self.event("click", base + 60 + i, campaignId=camp) for i in range(3)]
        self.track(evs)
        m = self.create(name="Clicks %s" % uuid.uuid4().hex, type="counter",
                        formula="count(click)", aggregation="sum",
                        filters=[("campaignId", "eq", camp)])
        s = self.data(m.metric_id, **{"from": ts(base), "to": ts(base + 120)},
                      interval="1m").series[0]
        self.assertEqual([b.value.value for b in s.buckets], [3, 3])
        self.assertAlmostEqual(s.buckets[0].rate.value, 3 / 60)
        self.assertEqual(s.summary.value, 6)
        self.assertEqual(s.total.value, 6)
        self.assertAlmostEqual(s.change.value, 200.0)

    def test_top_n_folds_the_rest_into_other(self):
        tag = uuid.uuid4().hex[:6]
        base = (int(time.time()) // 3600 - 2) * 3600
        evs = []
        for g in range(5):
            evs += [self.event("view", base + i, campaignId=tag, groupId="g%d" % g)
                    for i in range(g + 1)]
        self.track(evs)
        m = self.create(name="Views %s" % uuid.uuid4().hex, formula="count(view)",
                        dimensions=["groupId"], filters=[("campaignId", "eq", tag)])
        data = self.data(m.metric_id, **{"from": ts(base), "to": ts(base + 3600)},
                         interval="1h", top_n=2)
        groups = [(dict(s.dimensions)["groupId"], s.total.value) for s in data.series]
        self.assertEqual(groups, [("g4", 5), ("g3", 4), ("other", 6)])

    def test_time_zone_buckets_follow_local_time(self):
        base = (int(time.time()) // 3600 - 5) * 3600
        m = self.create(name="TZ %s" % uuid.uuid4().hex, formula="count(tz_probe)")
        data = self.data(m.metric_id, **{"from": ts(base), "to": ts(base + 7200)},
                         interval="1h", time_zone="Asia/Kolkata")
        starts = [b.start.seconds for b in data.series[0].buckets]
        self.assertEqual(starts[0] % 3600, 1800)  # local hours start at :30 UTC
        with self.assertRaises(grpc.RpcError) as cm:
            self.data(m.metric_id, time_zone="Mars/Olympus")
        self.assertIn("timeZone", cm.exception.details())

    def test_unknown_metric_is_not_found(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.data("nope")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main()
