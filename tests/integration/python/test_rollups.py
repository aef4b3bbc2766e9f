"""Metric rollups end to end through gRPC: a metric created over 100,000
existing events answers correctly at once (from raw events) and after its
background backfill (from the rollups), while ingestion goes on; a changed
definition is backfilled again; the request metadata x-metric-source picks
the path ("raw", or "rollup": FAILED_PRECONDITION until complete)."""

import threading
import time
import uuid

import grpc

import harness

N_EVENTS = 100_000


class RollupsTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mpb, mgrpc = cls.ns.analytics["metrics"]
        cls.epb, egrpc = cls.ns.analytics["events"]
        cls.metrics = mgrpc.MetricServiceStub(cls.channel)
        cls.events = egrpc.EventServiceStub(cls.channel)

    def batch(self, n, start_ms, span_ms, tag):
        out = []
        for i in range(n):
            e = self.epb.Event(event_type="message",
                               event_name="delivered" if i % 3 == 0 else "sent",
                               event_id="%s-%d" % (tag, i))
            e.timestamp.FromMilliseconds(start_ms + (i * 7919) % span_ms)
            e.properties.update({"campaignId": "c%d" % (i % 7), "groupId": "g%d" % (i % 3),
                                 "chars": i % 200})
            out.append(e)
        return out

    def track(self, events):
        for k in range(0, len(events), 1000):
            resp = self.events.TrackEvents(
                self.epb.TrackEventsRequest(events=events[k:k + 1000]), timeout=30)
            self.assertEqual(resp.rejected, 0)

    def request(self, now_ms):
        kw = {"interval": "1h", "time_zone": "Asia/Kolkata", "top_n": 5}
        req = self.mpb.GetMetricDataRequest(**kw)
        getattr(req, "from").FromMilliseconds(now_ms - 2 * 86400_000 + 12_345)
        req.to.FromMilliseconds(now_ms + 3600_000)
        return req

    def get(self, metric_id, now_ms, source):
        req = self.request(now_ms)
        req.metric_id = metric_id
        md = [("x-metric-source", source)] if source else None
        return self.metrics.GetMetricData(req, timeout=60, metadata=md)

    def wait_rollups(self, metric_id, now_ms, timeout=120):
        deadline = time.time() + timeout
        while True:
            try:
                return self.get(metric_id, now_ms, "rollup")
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
                self.assertLess(time.time(), deadline, "the backfill did not complete")
                time.sleep(0.2)

    def test_backfill_over_existing_events_while_ingesting(self):
        now_ms = int(time.time() * 1000)
        tag = uuid.uuid4().hex[:8]
        self.track(self.batch(N_EVENTS, now_ms - 2 * 86400_000, 2 * 86400_000, tag))
        m = self.mpb.Metric(name="rate-" + tag, formula="(count(delivered) / count(sent)) * 100",
                            type="gauge", unit="percentage", aggregation="avg",
                            dimensions=["campaignId", "groupId"])
        metric_id = self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=m),
                                              timeout=10).metric_id
        # Correct at once: the default path answers from raw events until the
        # backfill completes.
        first = self.get(metric_id, now_ms, None)
        self.assertEqual(first, self.get(metric_id, now_ms, "raw"))
        self.assertEqual(len(first.series), 6)  # top 5 + other
        # Ingestion goes on during the backfill.
        stop = threading.Event()
        latencies, errors = [], []

        def ingest():
            k = 0
            while not stop.is_set():
                t0 = time.time()
                try:
                    self.track(self.batch(200, now_ms - 3600_000, 3600_000, "%s-live%d" % (tag, k)))
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                latencies.append(time.time() - t0)
                k += 1

        th = threading.Thread(target=ingest)
        th.start()
        try:
            rolled = self.wait_rollups(metric_id, now_ms)
        finally:
            stop.set()
            th.join()
        self.assertFalse(errors)
        self.assertTrue(latencies)
        self.assertLess(max(latencies), 5.0, "ingestion stalled during the backfill")
        # From the rollups (plus events past their watermark): the raw answer.
        rolled = self.wait_rollups(metric_id, now_ms)
        self.assertEqual(rolled, self.get(metric_id, now_ms, "raw"))
        self.assertEqual(self.get(metric_id, now_ms, None), rolled)

        # A changed definition: a new version, raw until its backfill is done.
        m.metric_id = metric_id
        m.filters.add(field="chars", op="gte").value.number_value = 50
        self.metrics.UpdateMetric(self.mpb.UpdateMetricRequest(metric_id=metric_id, metric=m),
                                  timeout=10)
        again = self.get(metric_id, now_ms, None)
        self.assertEqual(again, self.get(metric_id, now_ms, "raw"))
        self.assertNotEqual(again, rolled)
        self.assertEqual(self.wait_rollups(metric_id, now_ms), self.get(metric_id, now_ms, "raw"))

        # Deleted: its rollups go too.
        self.metrics.DeleteMetric(self.mpb.DeleteMetricRequest(metric_id=metric_id), timeout=10)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.get(metric_id, now_ms, "rollup")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
