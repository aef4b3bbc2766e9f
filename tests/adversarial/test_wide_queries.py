"""Issue 21, point 4: a wide GetMetricData (1,000 groups x 1,500 hourly
buckets, topN 1000) costs memory in proportion to the answer, not to groups
x buckets: with omitEmptyBuckets and one event per group the answer is
small, and the query holds the rollups' flat bucket sums (8 bytes a bucket)
instead of an accumulator structure and an answer point per bucket (about
200 bytes each: 300 MB here). Asked over gRPC and REST within
the class's small budgets.
"""

import time
import urllib.parse

from adversary import AttackTestCase, raw_http, status_codes

GROUPS, HOURS = 1000, 1500


class WideQueryTest(AttackTestCase):
    SERVER_ENV = {"HTTP_BODY_BUDGET_MB": 8, "STREAM_QUEUE_BUDGET_MB": 8}

    def test_wide_query_does_not_hold_an_accumulator_per_bucket(self):
        metrics, q, start, end = self.wide_metric("wide_sent", GROUPS, HOURS, seed=3)
        path = "/api/metrics/%s/data?%s" % (q.metric_id, urllib.parse.urlencode({
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
