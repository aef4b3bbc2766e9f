"""Issue 21, point 1: an import at random times is acknowledged once its
events are staged (one compressed row per commit); the mover puts them in the
events table afterwards. Every read right after an acknowledgement must still
find them: a search by event name and a metric on the raw path, while the
mover is behind (/metrics: ana_store_staged_events), and the backlog stays
within STORE_STAGING_MAX_EVENTS.
"""

import http.client
import json
import os
import random
import re
import sqlite3
import threading
import time
import unittest

from adversary import AttackTestCase, raw_http

DAY_MS = 86400 * 1000
BATCHES = 12
PER_BATCH = 1000
MAX_STAGED = 3000


def batch_body(rnd, k, now):
    events = []
    for i in range(PER_BATCH):
        ts = now - 60000 - rnd.randrange(30 * DAY_MS)
        # The batch's last event has a name of its own: the search looks for it.
        name = "probe-%d" % k if i == PER_BATCH - 1 else "sent"
        events.append({
            "eventId": "st%d-%d" % (k, i),
            "eventType": "track",
            "eventName": name,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
                         + ".%03dZ" % (ts % 1000),
            "properties": {"campaignId": "campaign-%d" % rnd.randrange(50),
                           "note": "%x" % rnd.getrandbits(200)},
        })
    return json.dumps({"events": events})


class StagingTest(AttackTestCase):
    SERVER_ENV = {"STORE_STAGING_MAX_EVENTS": str(MAX_STAGED)}

    def staged_events(self):
        data = raw_http(self.rest_port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n", until_close=True).decode("utf-8", "replace")
        m = re.search(r"^ana_store_staged_events (\d+)", data, re.M)
        self.assertIsNotNone(m, "/metrics has no ana_store_staged_events")
        return int(m.group(1))

    def test_random_time_import_reads_its_writes_while_staged(self):
        mpb, mgrpc = self.ns.analytics["metrics"]
        epb, egrpc = self.ns.analytics["events"]
        metrics = mgrpc.MetricServiceStub(self.channel)
        events = egrpc.EventServiceStub(self.channel)
        mid = metrics.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
            name="staged sent", formula="count(sent)", aggregation="sum")), timeout=30).metric_id
        now = int(time.time() * 1000)
        q = mpb.GetMetricDataRequest(metric_id=mid, interval="1d")
        getattr(q, "from").FromMilliseconds(now - 31 * DAY_MS)
        q.to.FromMilliseconds(now + DAY_MS)
        rnd = random.Random(20)
        bodies = [batch_body(rnd, k, now) for k in range(BATCHES)]
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], self.staged_events())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        with self.rss_watch():
            sampler.start()
            conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=60)
            try:
                for k, body in enumerate(bodies):
                    conn.request("POST", "/api/events/batch", body,
                                 {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    self.assertEqual(resp.status, 200, resp.read()[:300])
                    resp.read()
                    # Right after the acknowledgement: the batch's own event...
                    found = events.SearchEvents(epb.SearchEventsRequest(
                        event_name="probe-%d" % k, page_size=5), timeout=60).events
                    self.assertEqual([e.event_id for e in found], ["st%d-%d" % (k, PER_BATCH - 1)],
                                     "batch %d: the search missed its acknowledged event" % k)
                    # ...and every "sent" event so far, on the raw path.
                    data = metrics.GetMetricData(q, timeout=60,
                                                 metadata=[("x-metric-source", "raw")])
                    total = sum(s.total.value for s in data.series)
                    self.assertEqual(total, (k + 1) * (PER_BATCH - 1),
                                     "batch %d: the raw metric missed acknowledged events" % k)
            finally:
                conn.close()
                stop.set()
                sampler.join(30)
        self.assertGreater(peak[0], 0, "no event was ever seen staged (ana_store_staged_events)")
        self.assertLessEqual(peak[0], MAX_STAGED,
                             "the staged backlog exceeded STORE_STAGING_MAX_EVENTS")
        deadline = time.time() + 30
        while self.staged_events() and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.staged_events(), 0, "the mover left events staged when idle")
        self.assert_survived()

    def test_plain_search_and_raw_metric_answer_while_the_mover_is_held(self):
        """The mover held (another connection holds analytics.db's write
        lock; the acknowledgement writes only the journal): a search without
        free text and a metric on the raw path answer at once, with the
        events acknowledged and not moved (they used to wait for the mover,
        up to a minute, then UNAVAILABLE)."""
        mpb, mgrpc = self.ns.analytics["metrics"]
        epb, egrpc = self.ns.analytics["events"]
        metrics = mgrpc.MetricServiceStub(self.channel)
        events = egrpc.EventServiceStub(self.channel)
        mid = metrics.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
            name="held", formula="count(held)", aggregation="sum")), timeout=30).metric_id
        now = int(time.time() * 1000)
        q = mpb.GetMetricDataRequest(metric_id=mid, interval="1d")
        getattr(q, "from").FromMilliseconds(now - 31 * DAY_MS)
        q.to.FromMilliseconds(now + DAY_MS)
        def post(events):
            conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=60)
            conn.request("POST", "/api/events/batch", json.dumps({"events": events}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200, resp.read()[:300])
            resp.read()
            conn.close()

        # The account's number is given in analytics.db at its first event.
        post([{"eventId": "held-first", "eventType": "track", "eventName": "first",
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now // 1000))}])
        deadline = time.time() + 30
        while self.staged_events() and time.time() < deadline:
            time.sleep(0.05)
        lock = sqlite3.connect(os.path.join(self.server.data_dir, "analytics.db"),
                               isolation_level=None, timeout=30)
        try:
            lock.execute("BEGIN IMMEDIATE")
            post([{"eventId": "held-%d" % i, "eventType": "track", "eventName": "held",
                   "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S",
                                              time.gmtime((now - i * 3600 * 1000) // 1000)) + "Z",
                   "properties": {"k": "v%d" % (i % 3)}} for i in range(300)])
            self.assertGreaterEqual(self.staged_events(), 300, "the mover was not held")
            t0 = time.monotonic()
            found = events.SearchEvents(epb.SearchEventsRequest(
                event_name="held", properties={"k": "v1"}, page_size=50), timeout=60).events
            searched = time.monotonic() - t0
            self.assertEqual([e.event_id for e in found],
                             ["held-%d" % i for i in range(300) if i % 3 == 1][:50])
            t0 = time.monotonic()
            data = metrics.GetMetricData(q, timeout=60, metadata=[("x-metric-source", "raw")])
            scanned = time.monotonic() - t0
            self.assertEqual(sum(s.total.value for s in data.series), 300)
            self.assertGreaterEqual(self.staged_events(), 300, "the mover was not held")
            self.assertLess(searched, 5, "the search waited for the mover")
            self.assertLess(scanned, 5, "the raw metric waited for the mover")
        finally:
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
        deadline = time.time() + 30
        while self.staged_events() and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.staged_events(), 0, "the mover left events staged when released")
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
