"""Issue 21, point 4: a wide GetMetricData (1,000 groups x 1,500 hourly
buckets, topN 1000) costs memory in proportion to the answer, not to groups
x buckets: with omitEmptyBuckets and one event per group the answer is
small, and the query holds the rollups' flat bucket sums (8 bytes a bucket)
instead of an accumulator structure and an answer point per bucket (about
200 bytes each: 300 MB here). Asked over gRPC and REST within
the class's small budgets.
"""

import random
import time
import urllib.parse
import uuid

import grpc

from adversary import AttackTestCase, raw_http, status_codes

GROUPS, HOURS = 1000, 1500


class WideQueryTest(AttackTestCase):
    SERVER_ENV = {"HTTP_BODY_BUDGET_MB": 8, "STREAM_QUEUE_BUDGET_MB": 8}

    def test_wide_query_does_not_hold_an_accumulator_per_bucket(self):
        mpb, mgrpc = self.ns.analytics["metrics"]
        epb, egrpc = self.ns.analytics["events"]
        metrics = mgrpc.MetricServiceStub(self.channel)
        tag = uuid.uuid4().hex[:8]
        end = int(time.time()) // 3600 * 3600
        start = end - HOURS * 3600
        rnd = random.Random(3)
        req = epb.TrackEventsRequest()
        for g in range(GROUPS):
            e = req.events.add(event_type="track", event_name="wide_sent",
                               event_id="%s-%d" % (tag, g))
            e.timestamp.FromSeconds(start + rnd.randrange(HOURS) * 3600)
            e.properties.update({"campaignId": "c%02d" % (g // 20), "groupId": "g%02d" % (g % 20)})
        events = egrpc.EventServiceStub(self.channel)
        for k in range(0, GROUPS, 500):
            events.TrackEvents(epb.TrackEventsRequest(events=req.events[k:k + 500]), timeout=30)
        mid = metrics.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
            name="wide " + tag, formula="count(wide_sent)", aggregation="sum",
            dimensions=["campaignId", "groupId"])), timeout=30).metric_id
        q = mpb.GetMetricDataRequest(metric_id=mid, interval="1h", top_n=1000,
                                     omit_empty_buckets=True)
        getattr(q, "from").FromSeconds(start)
        q.to.FromSeconds(end)
        deadline = time.time() + 60
        while True:  # the rollups complete (a small backfill)
            try:
                metrics.GetMetricData(q, timeout=60, metadata=[("x-metric-source", "rollup")])
                break
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
                self.assertLess(time.time(), deadline)
                time.sleep(0.1)
        path = "/api/metrics/%s/data?%s" % (mid, urllib.parse.urlencode({
            "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
            "interval": "1h", "topN": "1000", "omitEmptyBuckets": "true"}))
        with self.rss_watch():
            for _ in range(1):
                d = metrics.GetMetricData(q, timeout=60)
                self.assertEqual(len(d.series), GROUPS)
                self.assertEqual(sum(len(s.buckets) for s in d.series), GROUPS)
                out = raw_http(self.rest_port, "GET %s HTTP/1.1\r\nHost: localhost\r\n"
                               "Connection: close\r\n\r\n" % path, read_timeout=60,
                               until_close=True)
                self.assertEqual(status_codes(out), [200], out[:300])
        self.assert_survived()
