"""Wide metric answers over gRPC and REST: many groups x hourly buckets with
topN, from the rollups and from the raw events (equal), and the request flag
omitEmptyBuckets: only the buckets some event counted in, the summary, total
and change unchanged; a sum whose values add up to 0 is not empty."""

import json
import time
import urllib.parse
import uuid

import grpc

import harness
from test_rest import RestClient

CAMPAIGNS, GROUPS, HOURS = 12, 10, 72  # 120 groups x 72 buckets


def rfc3339(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class WideMetricsTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mpb, mgrpc = cls.ns.analytics["metrics"]
        cls.epb, egrpc = cls.ns.analytics["events"]
        cls.metrics = mgrpc.MetricServiceStub(cls.channel)
        cls.events = egrpc.EventServiceStub(cls.channel)
        cls.rest = RestClient(cls.rest_port)
        cls.tag = uuid.uuid4().hex[:8]
        cls.end = (int(time.time()) // 3600 - 1) * 3600
        cls.start = cls.end - HOURS * 3600
        # Every third hour of each group has no event; the others 1 to 3
        # sends, and a `delta` of +1 then -1 (adding up to 0) in some.
        events, k = [], 0
        for c in range(CAMPAIGNS):
            for g in range(GROUPS):
                for h in range(HOURS):
                    if (h + c + g) % 3 == 0:
                        continue
                    for i in range(1 + (h * 7 + c + g) % 3):
                        e = cls.epb.Event(event_type="message", event_name="sent",
                                          event_id="%s-%d" % (cls.tag, k))
                        k += 1
                        e.timestamp.FromSeconds(cls.start + h * 3600 + 60 * i + c)
                        delta = (1 if i == 0 else -1) if (h + g) % 5 == 0 else 2
                        e.properties.update({"campaignId": "c%02d" % c, "groupId": "g%02d" % g,
                                             "delta": delta, "tag": cls.tag})
                        events.append(e)
        for i in range(0, len(events), 1000):
            r = cls.events.TrackEvents(cls.epb.TrackEventsRequest(events=events[i:i + 1000]),
                                       timeout=60)
            assert r.rejected == 0, r
        cls.n_events = len(events)

        def create(formula, aggregation):
            m = cls.mpb.Metric(name="%s %s" % (formula, cls.tag), formula=formula, type="gauge",
                               aggregation=aggregation, dimensions=["campaignId", "groupId"])
            m.filters.add(field="tag", op="eq").value.string_value = cls.tag
            return cls.metrics.CreateMetric(cls.mpb.CreateMetricRequest(metric=m),
                                            timeout=30).metric_id

        cls.count_id = create("count(sent)", "sum")
        cls.sum_id = create("sum(sent.delta)", "avg")

    def request(self, metric_id, omit, top_n=1000):
        req = self.mpb.GetMetricDataRequest(metric_id=metric_id, interval="1h", top_n=top_n,
                                            omit_empty_buckets=omit)
        getattr(req, "from").FromSeconds(self.start)
        req.to.FromSeconds(self.end)
        return req

    def get(self, metric_id, omit, source=None, top_n=1000):
        md = [("x-metric-source", source)] if source else None
        return self.metrics.GetMetricData(self.request(metric_id, omit, top_n), timeout=60,
                                          metadata=md)

    def rollup(self, metric_id, omit, top_n=1000):
        deadline = time.time() + 60
        while True:
            try:
                return self.get(metric_id, omit, "rollup", top_n)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
                self.assertLess(time.time(), deadline, "the backfill did not complete")
                time.sleep(0.1)

    def assert_omitted(self, full, omitted):
        """omitted is full without the buckets no event counted in."""
        self.assertEqual(len(full.series), len(omitted.series))
        for fs, os_ in zip(full.series, omitted.series):
            self.assertEqual(dict(fs.dimensions), dict(os_.dimensions))
            self.assertEqual(len(fs.buckets), HOURS)
            c, g = int(fs.dimensions["campaignId"][1:]), int(fs.dimensions["groupId"][1:])
            want = [b for h, b in enumerate(fs.buckets) if (h + c + g) % 3 != 0]
            self.assertEqual(list(os_.buckets), want)
            for f in ("summary", "total", "change"):
                self.assertEqual(getattr(fs, f), getattr(os_, f), f)

    def test_wide_answer_from_rollups_equals_raw_events(self):
        for metric_id in (self.count_id, self.sum_id):
            for omit in (False, True):
                for top_n in (1000, 7):
                    rolled = self.rollup(metric_id, omit, top_n)
                    self.assertEqual(rolled, self.get(metric_id, omit, "raw", top_n),
                                     (metric_id, omit, top_n))
                    self.assertEqual(len(rolled.series),
                                     CAMPAIGNS * GROUPS if top_n == 1000 else top_n + 1)
        full = self.rollup(self.count_id, False)
        self.assertEqual(sum(s.total.value for s in full.series), self.n_events)

    def test_omit_empty_buckets_over_grpc(self):
        for metric_id in (self.count_id, self.sum_id):
            for source in ("raw", "rollup"):
                full = self.rollup(metric_id, False) if source == "rollup" else \
                    self.get(metric_id, False, "raw")
                omitted = self.rollup(metric_id, True) if source == "rollup" else \
                    self.get(metric_id, True, "raw")
                self.assert_omitted(full, omitted)
        # A bucket whose deltas add up to 0 has events: it stays, with value 0.
        sums = self.rollup(self.sum_id, True)
        zeros = [b for s in sums.series for b in s.buckets if b.value.value == 0]
        self.assertTrue(zeros)
        self.assertTrue(all(b.HasField("value") for b in zeros))

    def test_omit_empty_buckets_over_rest(self):
        self.rollup(self.count_id, True)  # the rollups are complete

        def rest(omit):
            q = {"from": rfc3339(self.start), "to": rfc3339(self.end), "interval": "1h",
                 "topN": "1000"}
            if omit is not None:
                q["omitEmptyBuckets"] = omit
            status, _, data = self.rest.request(
                "GET", "/api/metrics/%s/data?%s" % (self.count_id, urllib.parse.urlencode(q)))
            self.assertEqual(status, 200, data)
            return data

        default, full, omitted = rest(None), rest("false"), rest("true")
        self.assertEqual(default, full)
        grpc_omitted = self.get(self.count_id, True)
        self.assertEqual(len(omitted["series"]), len(grpc_omitted.series))
        n = 0
        for js, ps in zip(omitted["series"], grpc_omitted.series):
            self.assertEqual(js["dimensions"], dict(ps.dimensions))
            self.assertEqual([(b["start"], b["value"]) for b in js["buckets"]],
                             [(rfc3339(b.start.seconds), b.value.value) for b in ps.buckets])
            n += len(js["buckets"])
        self.assertEqual(n, sum(len(s["buckets"]) for s in full["series"]) * 2 // 3)
        status, _, err = self.rest.request(
            "GET", "/api/metrics/%s/data?omitEmptyBuckets=maybe" % self.count_id)
        self.assertEqual(status, 400, err)
        self.assertIn("omitEmptyBuckets", json.dumps(err))
