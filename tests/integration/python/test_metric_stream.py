"""RealtimeService.StreamMetric through gRPC and the WebSocket bridge.

Updates arrive as events are tracked, with values equal to GetMetricData's
for the same bucket; sequence numbers grow strictly; a client resuming with
its last sequence gets what it missed without a gap (from the stream's
history, from raw events for older buckets, and across a server restart);
a consumer that falls behind gets coalesced updates, and one that stays
behind is ended with a reason that says where to resume; unknown metrics
(and metrics of other accounts) are NOT_FOUND. The ingest-to-update latency
with METRIC_STREAM_INTERVAL=0 is measured and printed.
"""

import asyncio
import json
import socket
import statistics
import time
import unittest
import urllib.request
import uuid

import grpc
import websockets
from google.protobuf import timestamp_pb2

import harness

TIMEOUT_S = 10
SEQ_BITS = 27


def minute_of(seq):
    return (seq >> SEQ_BITS) * 60


def avoid_minute_boundary(margin=4.0):
    """Waits until at least `margin` seconds are left in the current UTC minute."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.3)


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMilliseconds(int(seconds * 1000))
    return t


class MetricStreamBase(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.connect(cls.channel)

    @classmethod
    def connect(cls, channel):
        cls.mpb, mgrpc = cls.ns.analytics["metrics"]
        cls.epb, egrpc = cls.ns.analytics["events"]
        cls.rpb, rgrpc = cls.ns.analytics["realtime"]
        cls.metrics = mgrpc.MetricServiceStub(channel)
        cls.events = egrpc.EventServiceStub(channel)
        cls.realtime = rgrpc.RealtimeServiceStub(channel)

    def create(self, formula, dimensions=(), **kw):
        m = self.mpb.Metric(name="ms-%s" % uuid.uuid4().hex, formula=formula,
                            dimensions=list(dimensions), **kw)
        return self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=m), timeout=10)

    def track(self, name, at=None, **props):
        ev = self.epb.Event(event_type="ms", event_name=name)
        if at is not None:
            ev.timestamp.FromMilliseconds(int(at * 1000))
        ev.properties.update(props)
        r = self.events.TrackEvent(self.epb.TrackEventRequest(event=ev), timeout=TIMEOUT_S)
        return r.result.event_id

    def track_many(self, events):
        resp = self.events.TrackEvents(self.epb.TrackEventsRequest(events=events), timeout=30)
        self.assertEqual(resp.rejected, 0, resp)

    def event(self, name, **props):
        ev = self.epb.Event(event_type="ms", event_name=name)
        ev.properties.update(props)
        return ev

    def stream(self, metric_id, **kw):
        call = self.realtime.StreamMetric(self.rpb.StreamMetricRequest(metric_id=metric_id, **kw),
                                          timeout=120)
        reader = harness.StreamReader(call)
        self.addCleanup(reader.cancel)
        return reader

    def data(self, metric_id, start, end):
        return self.metrics.GetMetricData(self.mpb.GetMetricDataRequest(
            metric_id=metric_id, interval="1m", **{"from": ts(start)}, to=ts(end)), timeout=10)

    def wait_values(self, reader, want, timeout=TIMEOUT_S, got=None):
        """Reads until the latest value per group (dimension tuple) equals want
        ({group: value}); returns every message read."""
        got = [] if got is None else got
        latest = {}
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in got:
                latest[group_of(m)] = value_of(m)
            if all(latest.get(k) == v for k, v in want.items()):
                return got
            m = reader.next(max(0.01, end - time.monotonic()))
            if m is not None:
                got.append(m)
        self.fail("values %s never reached %s (code %s %s)" % (latest, want, reader.code,
                                                               reader.details))

    def assertIncreasing(self, msgs):
        seqs = [m.sequence for m in msgs]
        self.assertEqual(seqs, sorted(set(seqs)), "sequences not strictly increasing: %s" % seqs)


def group_of(m):
    return tuple(sorted(m.dimensions.items()))


def value_of(m):
    return m.value.value if m.HasField("value") else None


def drain(reader, seconds):
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        m = reader.next(max(0.01, end - time.monotonic()))
        if m is not None:
            out.append(m)
    return out


class MetricStreamGrpcTest(MetricStreamBase):
    SERVER_ENV = {"METRIC_STREAM_INTERVAL": "50"}

    def test_updates_arrive_and_match_metric_data(self):
        avoid_minute_boundary(6)
        m = self.create("(delivered / sent) * 100", ["campaignId"])
        reader = self.stream(m.metric_id)
        for c, sent, delivered in (("c1", 4, 2), ("c2", 2, 2)):
            for _ in range(sent):
                self.track("sent", campaignId=c)
            for _ in range(delivered):
                self.track("delivered", campaignId=c)
        msgs = self.wait_values(reader, {(("campaignId", "c1"),): 50.0,
                                         (("campaignId", "c2"),): 100.0})
        self.assertIncreasing(msgs)
        last = msgs[-1]
        self.assertEqual(last.metric_id, m.metric_id)
        self.assertFalse(last.final)
        start = last.bucket_start.ToMilliseconds() / 1000
        end = last.bucket_end.ToMilliseconds() / 1000
        self.assertEqual(end - start, 60)
        self.assertEqual(start % 60, 0)
        data = self.data(m.metric_id, start, end)
        for s in data.series:
            bucket = s.buckets[0]
            group = tuple(sorted((d, v) for d, v in s.dimensions.items()))
            live = [value_of(x) for x in msgs if group_of(x) == group]
            self.assertEqual(live[-1], bucket.value.value, "group %s" % (group,))

    def test_filters_and_only_the_terms_events_count(self):
        avoid_minute_boundary(5)
        metric = self.mpb.Metric(name="f-%s" % uuid.uuid4().hex, formula="sum(order.total)")
        f = metric.filters.add(field="plan", op="eq")
        f.value.string_value = "pro"
        m = self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=metric), timeout=10)
        reader = self.stream(m.metric_id)
        first = reader.next(TIMEOUT_S)  # no dimensions: the one group's value at once
        self.assertIsNotNone(first)
        self.assertEqual(value_of(first), 0.0)
        self.track("order", plan="pro", total=10)
        self.track("order", plan="free", total=100)   # filtered out
        self.track("other", plan="pro", total=1000)   # no term reads it
        self.track("order", plan="pro", total=5)
        self.wait_values(reader, {(): 15.0})

    def test_unknown_metric_is_not_found(self):
        reader = self.stream("no-such-metric")
        self.assertTrue(reader.wait_end(TIMEOUT_S))
        self.assertEqual(reader.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("not found", reader.details)

    def test_bad_interval_and_time_zone_are_refused(self):
        m = self.create("count(x)")
        for kw, field in ((dict(interval="7m"), "interval"), (dict(interval="auto"), "interval"),
                          (dict(time_zone="Mars/Olympus"), "timeZone")):
            reader = self.stream(m.metric_id, **kw)
            self.assertTrue(reader.wait_end(TIMEOUT_S))
            self.assertEqual(reader.code, grpc.StatusCode.INVALID_ARGUMENT, kw)
            self.assertIn(field, reader.details)

    def test_resume_after_reconnect_without_a_gap(self):
        avoid_minute_boundary(8)
        m = self.create("count(hit)", ["k"])
        reader = self.stream(m.metric_id)
        for k in ("a", "b"):
            self.track("hit", k=k)
        msgs = self.wait_values(reader, {(("k", "a"),): 1.0, (("k", "b"),): 1.0})
        last = msgs[-1].sequence
        reader.cancel()
        # Meanwhile: a changes, c appears; b does not change.
        self.track("hit", k="a")
        self.track("hit", k="c")
        time.sleep(0.3)
        again = self.stream(m.metric_id, after_sequence=last)
        got = self.wait_values(again, {(("k", "a"),): 2.0, (("k", "c"),): 1.0})
        self.assertTrue(all(x.sequence > last for x in got), [x.sequence for x in got])
        self.assertIncreasing(got)
        self.assertNotIn((("k", "b"),), [group_of(x) for x in got],
                         "b did not change: it was not missed")

    def test_resume_recomputes_buckets_older_than_the_history(self):
        avoid_minute_boundary(8)
        m = self.create("count(old) + 0 * count(x)", ["k"])
        now = time.time()
        minute = int(now // 60) * 60
        # Events 5, 4 and 3 minutes ago (closed buckets, never live).
        past = [self.event("old", k="p") for _ in range(3)]
        for i, e in enumerate(past):
            e.timestamp.FromMilliseconds(int((minute - 300 + 60 * i + 5) * 1000))
        extra = self.event("old", k="p")
        extra.timestamp.FromMilliseconds(int((minute - 240 + 7) * 1000))
        self.track_many(past + [extra])
        # A client whose last update was 6 minutes ago.
        after = ((minute - 360) // 60 << SEQ_BITS) + 1
        reader = self.stream(m.metric_id, after_sequence=after)
        msgs = drain(reader, 1.0)
        finals = [x for x in msgs if x.final]
        self.assertIncreasing(msgs)
        starts = sorted({x.bucket_start.seconds for x in finals})
        self.assertEqual(starts, [minute - 360 + 60 * i for i in range(6)],
                         "one final per missed bucket, none skipped")
        data = self.data(m.metric_id, minute - 360, minute)
        want = {b.start.seconds: b.value.value for b in data.series[0].buckets}
        for x in finals:
            self.assertEqual(value_of(x), want[x.bucket_start.seconds])
        self.assertEqual([value_of(x) for x in finals], [0, 1, 2, 1, 0, 0])

    def test_resume_too_far_back_is_out_of_range(self):
        m = self.create("count(x)")
        after = (int(time.time() // 60 - 3 * 1440) << SEQ_BITS) + 1
        reader = self.stream(m.metric_id, after_sequence=after)
        self.assertTrue(reader.wait_end(TIMEOUT_S))
        self.assertEqual(reader.code, grpc.StatusCode.OUT_OF_RANGE)
        self.assertIn("afterSequence", reader.details)

    def test_bucket_rollover_sends_the_final_value_and_history_replays_it(self):
        # Waits for the next minute boundary (up to a minute).
        avoid_minute_boundary(10)
        m = self.create("count(roll)")
        reader = self.stream(m.metric_id)
        self.assertIsNotNone(reader.next(TIMEOUT_S))
        self.track("roll")
        self.track("roll")
        msgs = self.wait_values(reader, {(): 2.0})
        before_final = msgs[-1].sequence
        bucket = msgs[-1].bucket_start.seconds
        final = None
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline and final is None:
            x = reader.next(1.0)
            if x is None:
                continue
            msgs.append(x)
            if x.final:
                final = x
        self.assertIsNotNone(final, "no final value after the bucket's end")
        self.assertEqual(final.bucket_start.seconds, bucket)
        self.assertEqual(value_of(final), 2.0)
        nxt = reader.next(TIMEOUT_S)  # the new bucket starts at 0
        self.assertIsNotNone(nxt)
        self.assertEqual(nxt.bucket_start.seconds, bucket + 60)
        self.assertEqual(value_of(nxt), 0.0)
        msgs.append(nxt)
        self.assertIncreasing(msgs)
        # A client that saw everything but the final gets it from the history.
        again = self.stream(m.metric_id, after_sequence=before_final)
        first = again.next(TIMEOUT_S)
        self.assertEqual((first.sequence, first.final, value_of(first)),
                         (final.sequence, True, 2.0))


class MetricStreamLatencyTest(MetricStreamBase):
    SERVER_ENV = {"METRIC_STREAM_INTERVAL": "0"}

    def test_latency_ingest_to_update(self):
        m = self.create("count(lat)")
        reader = self.stream(m.metric_id)
        self.assertIsNotNone(reader.next(TIMEOUT_S))
        lat = []
        last_seq = 0
        for i in range(200):
            t0 = time.monotonic()
            self.track("lat", i=i)
            while True:
                x = reader.next(TIMEOUT_S)
                self.assertIsNotNone(x, "update %d never arrived" % i)
                self.assertGreater(x.sequence, last_seq)
                last_seq = x.sequence
                if not x.final and value_of(x):
                    lat.append((time.monotonic() - t0) * 1000)
                    break
        lat.sort()
        print("\n    ingest-to-metric-update latency over gRPC (TrackEvent call to the update, "
              "METRIC_STREAM_INTERVAL=0, 200 events): p50 %.2f ms, p99 %.2f ms, max %.2f ms"
              % (statistics.median(lat), lat[int(len(lat) * 0.99)], lat[-1]))


class MetricStreamRestartTest(MetricStreamBase):
    """Resume across a server restart, and accounts."""

    def test_resume_across_a_restart_and_other_accounts(self):
        avoid_minute_boundary(15)
        m = self.create("count(rs)", ["k"])
        reader = self.stream(m.metric_id)
        self.track("rs", k="x")
        msgs = self.wait_values(reader, {(("k", "x"),): 1.0})
        last = msgs[-1].sequence
        reader.cancel()
        data_dir = self.server.data_dir
        self.assertEqual(self.server.stop(), 0)

        for account, env in (("default", {}), ("other", {"DEFAULT_ACCOUNT_ID": "other"})):
            with self.subTest(account=account):
                s = harness.start_server(self, env=dict(env, DATA_DIR=data_dir))
                ch = s.channel()
                self.connect(ch)
                if account == "other":
                    r = self.stream(m.metric_id)
                    self.assertTrue(r.wait_end(TIMEOUT_S))
                    self.assertEqual(r.code, grpc.StatusCode.NOT_FOUND)
                    continue
                self.track("rs", k="x")  # while nobody listens
                again = self.stream(m.metric_id, after_sequence=last)
                got = self.wait_values(again, {(("k", "x"),): 2.0})
                self.assertTrue(all(x.sequence > last for x in got),
                                "%d then %s" % (last, [x.sequence for x in got]))
                self.track("rs", k="y")
                got = self.wait_values(again, {(("k", "y"),): 1.0}, got=got)
                self.assertIncreasing(got)
                s.stop()

    @classmethod
    def tearDownClass(cls):
        # The class's own server was stopped by the test.
        try:
            if cls.server.alive():
                cls.server.stop()
        finally:
            cls.server.cleanup()


class MetricStreamSlowConsumerTest(MetricStreamBase):
    SERVER_ENV = {
        "METRIC_STREAM_INTERVAL": "0",
        "STREAM_BUFFER_SIZE": "8",
        "STREAM_SEND_QUEUE_MAX": "4",
        "REALTIME_SLOW_CONSUMER_MS": "1500",
        "WS_SLOW_CONSUMER_MS": "60000",
    }
    DIMS = ["d%d" % i for i in range(16)]
    PAD = "v" * 110  # big updates fill the transport's windows quickly

    def group_event(self, g, name="slow"):
        return self.event(name, **{d: "%s-%03d-%s" % (d, g, self.PAD) for d in self.DIMS})

    def small_channel(self):
        ch = grpc.insecure_channel(self.server.target, options=[
            ("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)])
        self.addCleanup(ch.close)
        return self.ns.analytics["realtime"][1].RealtimeServiceStub(ch)

    def test_behind_for_a_moment_gets_coalesced_updates(self):
        avoid_minute_boundary(8)
        m = self.create("count(burst)", self.DIMS)
        call = self.small_channel().StreamMetric(
            self.rpb.StreamMetricRequest(metric_id=m.metric_id), timeout=60)
        self.addCleanup(call.cancel)
        it = iter(call)
        time.sleep(0.5)  # subscribed (no dimensions values yet: nothing sent)
        for i in range(60):  # 60 commits, 2 groups: nobody reads meanwhile
            self.track_many([self.group_event(0, "burst"), self.group_event(1, "burst")])
        got, latest = [], {}
        want = {"d0-000-" + self.PAD: 60.0, "d0-001-" + self.PAD: 60.0}
        deadline = time.monotonic() + TIMEOUT_S
        while latest != want and time.monotonic() < deadline:
            x = next(it)
            got.append(x)
            latest[x.dimensions["d0"]] = value_of(x)
        self.assertEqual(latest, want)
        self.assertIncreasing(got)
        print("\n    slow metric consumer: 120 updates made, %d delivered (coalesced)" % len(got))
        self.assertLess(len(got), 120)

    def test_stuck_consumer_is_ended_with_a_resume_point_and_resumes_without_a_gap(self):
        avoid_minute_boundary(15)
        m = self.create("count(slow)", self.DIMS)
        call = self.small_channel().StreamMetric(
            self.rpb.StreamMetricRequest(metric_id=m.metric_id), timeout=60)
        self.addCleanup(call.cancel)
        it = iter(call)
        time.sleep(0.5)
        groups = 150
        for start in range(0, groups, 10):
            self.track_many([self.group_event(g) for g in range(start, start + 10)])
        time.sleep(2.5)  # stuck longer than REALTIME_SLOW_CONSUMER_MS
        got = []
        with self.assertRaises(grpc.RpcError) as cm:
            for x in it:
                got.append(x)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        details = cm.exception.details()
        self.assertRegex(details, r"^subscriber too slow: \d+ updates coalesced; resume with "
                                  r"afterSequence=\d+$")
        after = int(details.rsplit("=", 1)[1])
        self.assertLess(len(got), groups)
        if got:
            self.assertEqual(after, got[-1].sequence)
        # Resuming there gives every group it did not get: what does not fit
        # the buffer (8) ends the stream again with the next resume point.
        seen = {x.dimensions["d0"] for x in got}
        resumes = 0
        while len(seen) < groups and resumes < 100:
            resumes += 1
            reader = self.stream(m.metric_id, after_sequence=after)
            while True:
                x = reader.next(0.05)
                if x is None:
                    if reader.ended.is_set() and reader.messages.empty():
                        break
                    continue
                self.assertGreater(x.sequence, after)
                after = x.sequence
                seen.add(x.dimensions["d0"])
                if len(seen) == groups:
                    break
            if len(seen) < groups:
                self.assertTrue(reader.wait_end(TIMEOUT_S))
                self.assertEqual(reader.code, grpc.StatusCode.RESOURCE_EXHAUSTED, reader.details)
                self.assertEqual(int(reader.details.rsplit("=", 1)[1]), after)
        self.assertEqual(len(seen), groups, "groups missing after %d resumes" % resumes)
        print("\n    stuck metric consumer: ended after %d of %d groups; %d resumes got the rest"
              % (len(got), groups, resumes))
        self.assertServing()

    def test_websocket_stuck_consumer_is_closed_with_the_reason(self):
        avoid_minute_boundary(15)
        m = self.create("count(wsslow)", self.DIMS)

        async def go():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", self.rest_port))
            uri = "ws://127.0.0.1:%d/ws/metrics/%s" % (self.rest_port, m.metric_id)
            async with websockets.connect(uri, sock=sock, max_queue=1, max_size=None,
                                          open_timeout=TIMEOUT_S) as ws:
                await asyncio.sleep(0.5)
                loop = asyncio.get_running_loop()
                for start in range(0, 150, 10):
                    await loop.run_in_executor(None, self.track_many,
                                               [self.group_event(g, "wsslow")
                                                for g in range(start, start + 10)])
                await asyncio.sleep(3.0)
                frames = []
                try:
                    while True:
                        frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S)))
                except websockets.ConnectionClosed:
                    pass
                return frames, ws.close_code, ws.close_reason

        frames, code, reason = asyncio.run(asyncio.wait_for(go(), 60))
        self.assertEqual(code, 1008, reason)
        self.assertRegex(reason, r"^subscriber too slow: \d+ updates coalesced; resume with "
                                 r"afterSequence=\d+$")
        self.assertServing()


class MetricStreamWebSocketTest(MetricStreamBase):
    SERVER_ENV = {"METRIC_STREAM_INTERVAL": "50"}

    def uri(self, path):
        return "ws://127.0.0.1:%d%s" % (self.rest_port, path)

    def rest_post(self, path, body):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.rest_port, path),
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())

    def test_updates_and_resume_over_websocket(self):
        avoid_minute_boundary(8)
        m = self.rest_post("/api/metrics", {"name": "ws-%s" % uuid.uuid4().hex,
                                            "formula": "count(click)",
                                            "dimensions": ["page"]})
        mid = m["metricId"]

        async def read_until(ws, want):
            frames, latest = [], {}
            while any(latest.get(k) != v for k, v in want.items()):
                f = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                self.assertIn("result", f, f)
                frames.append(f["result"])
                latest[f["result"]["dimensions"]["page"]] = f["result"].get("value")
            return frames

        async def go():
            loop = asyncio.get_running_loop()
            post = lambda page: loop.run_in_executor(None, self.rest_post, "/api/events", {
                "eventType": "ui", "eventName": "click", "properties": {"page": page}})
            async with websockets.connect(self.uri("/ws/metrics/%s?interval=1m&timeZone=UTC"
                                                   % mid), open_timeout=TIMEOUT_S) as ws:
                await post("home")
                await post("home")
                first = await read_until(ws, {"home": 2})
            last = int(first[-1]["sequence"])
            await post("home")
            await post("about")
            async with websockets.connect(self.uri("/ws/metrics/%s?afterSequence=%d"
                                                   % (mid, last)), open_timeout=TIMEOUT_S) as ws:
                second = await read_until(ws, {"home": 3, "about": 1})
            return first, second, last

        first, second, last = asyncio.run(asyncio.wait_for(go(), 30))
        seqs = [int(f["sequence"]) for f in first + second]
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertTrue(all(int(f["sequence"]) > last for f in second))
        self.assertEqual(first[-1]["metricId"], mid)
        self.assertIn("bucketStart", first[-1])

    def test_unknown_metric_closes_with_not_found(self):
        async def go():
            frames = []
            async with websockets.connect(self.uri("/ws/metrics/nope"),
                                          open_timeout=TIMEOUT_S) as ws:
                try:
                    while True:
                        frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S)))
                except websockets.ConnectionClosed:
                    pass
                return frames, ws.close_code

        frames, code = asyncio.run(asyncio.wait_for(go(), 30))
        self.assertEqual(code, 4005)
        self.assertEqual(frames[-1]["error"]["code"], 5)


if __name__ == "__main__":
    unittest.main()
