"""RealtimeService.StreamAnalytics through gRPC and the WebSocket bridge.

Live events arrive with the server-side filters applied, in sequence order;
aggregate snapshots arrive every REALTIME_AGGREGATE_INTERVAL with the rates
of the last second; a consumer that falls behind gets coalesced updates (a
snapshot counting the events it missed: dropped + delivered = published),
and one that stays behind is ended with RESOURCE_EXHAUSTED "subscriber too
slow: N updates dropped" (over WebSocket: the error frame and close 1008
with that reason). Subscribers of one filter get each event as the same
WebSocket frame apart from their own sequence (it is encoded once for all
of them), in-process and through analytics-restbridge. The
ingest-to-subscriber latency is measured and printed, not asserted.
"""

import asyncio
import json
import re
import socket
import statistics
import threading
import time
import unittest
import urllib.request
import uuid

import grpc
import websockets

import harness

TIMEOUT_S = 10
BIG = 400 * 1024  # a property this large fills transport buffers quickly


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


class RealtimeBase(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.events_pb, events_grpc = cls.ns.analytics["events"]
        cls.rt_pb, rt_grpc = cls.ns.analytics["realtime"]
        cls.events = events_grpc.EventServiceStub(cls.channel)
        cls.realtime = rt_grpc.RealtimeServiceStub(cls.channel)

    def event(self, name, event_type="rt", **props):
        ev = self.events_pb.Event(event_type=event_type, event_name=name)
        if props:
            ev.properties.update(props)
        return ev

    def track(self, name, event_type="rt", **props):
        r = self.events.TrackEvent(self.events_pb.TrackEventRequest(
            event=self.event(name, event_type, **props)), timeout=TIMEOUT_S).result
        self.assertIn(r.status, (self.events_pb.EventResult.ACCEPTED,
                                 self.events_pb.EventResult.CORRECTED))
        return r.event_id

    def subscribe(self, **kw):
        """Opens a stream and waits for its first snapshot (it is registered then)."""
        call = self.realtime.StreamAnalytics(self.rt_pb.StreamAnalyticsRequest(**kw),
                                             timeout=60)
        reader = harness.StreamReader(call)
        self.addCleanup(reader.cancel)
        first = reader.next(TIMEOUT_S)
        self.assertIsNotNone(first, "no snapshot within %d s (code %s %s)"
                             % (TIMEOUT_S, reader.code, reader.details))
        self.assertTrue(first.HasField("aggregates"), first)
        return reader

    def rest_post(self, path, body):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.server.rest_port, path),
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())


def drain(reader, seconds):
    """Messages arriving within `seconds`."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        m = reader.next(max(0.01, end - time.monotonic()))
        if m is not None:
            out.append(m)
    return out


class RealtimeGrpcTest(RealtimeBase):
    SERVER_ENV = {"REALTIME_AGGREGATE_INTERVAL": "200"}

    def test_live_events_with_filters(self):
        name = unique("flt")
        reader = self.subscribe(event_type="rt", event_name=name, properties={"plan": "pro"},
                                include_events=True)
        wanted = [self.track(name, plan="pro", n=i) for i in range(3)]
        self.track(name, plan="free")                 # property differs
        self.track(name, event_type="other", plan="pro")  # type differs
        self.track(unique("else"), plan="pro")        # name differs
        wanted.append(self.track(name, plan="pro", n=9))
        msgs = drain(reader, 1.0)
        events = [m.event for m in msgs if m.HasField("event")]
        self.assertEqual([e.event_id for e in events], wanted)
        for e in events:
            self.assertEqual(e.event_name, name)
            self.assertEqual(e.properties["plan"], "pro")
            self.assertEqual(e.account_id, "default")
        seqs = [m.sequence for m in msgs]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "gaps: %s" % seqs)
        self.assertEqual(seqs[0], 2)  # 1 was the first snapshot

    def test_number_property_filter_compares_as_text(self):
        name = unique("num")
        reader = self.subscribe(event_name=name, properties={"campaignId": "123"},
                                include_events=True)
        ok = self.track(name, campaignId=123)
        self.track(name, campaignId=124)
        events = [m.event for m in drain(reader, 0.8) if m.HasField("event")]
        self.assertEqual([e.event_id for e in events], [ok])

    def test_aggregates_arrive_with_rates(self):
        name = unique("agg")
        reader = self.subscribe(event_name=name)  # aggregates only
        for _ in range(5):
            self.track(name)
        msgs = drain(reader, 0.8)
        self.assertFalse([m for m in msgs if m.HasField("event")], "events were not asked for")
        snaps = [m.aggregates for m in msgs if m.HasField("aggregates")]
        self.assertGreaterEqual(len(snaps), 2, "one snapshot per 200 ms expected")
        rates = [r.per_second for s in snaps for r in s.rates
                 if r.event_name == name and r.event_type == "rt"]
        self.assertTrue(rates, "no rate for %s in %s" % (name, snaps))
        self.assertGreater(max(rates), 0)
        self.assertLessEqual(max(rates), 5.01)
        for s in snaps:
            self.assertTrue(s.at.seconds > 0)
            self.assertEqual(s.dropped_events, 0)

    def test_latency_ingest_to_subscriber(self):
        name = unique("lat")
        reader = self.subscribe(event_name=name, include_events=True)
        lat = []
        for i in range(50):
            t0 = time.monotonic()
            self.track(name, i=i)
            while True:
                m = reader.next(TIMEOUT_S)
                self.assertIsNotNone(m, "event %d never arrived" % i)
                if m.HasField("event"):
                    lat.append((time.monotonic() - t0) * 1000)
                    break
        lat.sort()
        print("\n    ingest-to-subscriber latency over gRPC (TrackEvent call to the stream, "
              "50 events): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms"
              % (statistics.median(lat), lat[int(len(lat) * 0.9)], lat[int(len(lat) * 0.99)],
                 lat[-1]))

    def test_cancel_unregisters(self):
        reader = self.subscribe(include_events=True)
        reader.cancel()
        self.assertTrue(reader.wait_end(TIMEOUT_S))
        self.assertEqual(reader.code, grpc.StatusCode.CANCELLED)
        self.track(unique("after-cancel"))
        self.assertServing()


class RealtimeSlowConsumerTest(RealtimeBase):
    SERVER_ENV = {
        "STREAM_BUFFER_SIZE": "8",
        "STREAM_SEND_QUEUE_MAX": "4",
        "REALTIME_AGGREGATE_INTERVAL": "100",
        "REALTIME_SLOW_CONSUMER_MS": "2000",
        "WS_SLOW_CONSUMER_MS": "60000",
        "EVENT_MAX_BYTES": "1048576",
        "BATCH_MAX_BYTES": "16777216",
        "HTTP_MAX_BODY_BYTES": "16777216",
        "GRPC_MAX_MESSAGE_BYTES": "16777216",
    }

    def publish(self, name, n, per_batch=10):
        blob = "x" * BIG
        for start in range(0, n, per_batch):
            events = [self.event(name, i=start + i, blob=blob)
                      for i in range(min(per_batch, n - start))]
            resp = self.events.TrackEvents(self.events_pb.TrackEventsRequest(events=events),
                                           timeout=30)
            self.assertEqual(len(resp.results), len(events))

    def test_behind_for_a_moment_gets_coalesced_updates(self):
        name = unique("burst")
        call = self.realtime.StreamAnalytics(
            self.rt_pb.StreamAnalyticsRequest(event_name=name, include_events=True), timeout=60)
        self.addCleanup(call.cancel)
        it = iter(call)
        self.assertTrue(next(it).HasField("aggregates"))
        published = 40
        self.publish(name, published)  # nobody reads meanwhile
        # Now read fast: events that fitted, a snapshot counting the rest.
        events, dropped, deadline = 0, 0, time.monotonic() + TIMEOUT_S
        seqs = []
        while events + dropped < published and time.monotonic() < deadline:
            m = next(it)
            seqs.append(m.sequence)
            if m.HasField("event"):
                events += 1
            else:
                dropped += m.aggregates.dropped_events
        self.assertEqual(events + dropped, published,
                         "delivered %d + reported dropped %d" % (events, dropped))
        self.assertGreater(dropped, 0, "the burst should not fit in 8 updates")
        self.assertLessEqual(events, 8 + 16, "more delivered than the buffers hold")
        self.assertEqual(seqs, sorted(seqs))
        # Caught up: live again, not ended.
        eid = self.track(name)
        while True:
            m = next(it)
            if m.HasField("event"):
                self.assertEqual(m.event.event_id, eid)
                break

    def test_stuck_consumer_is_ended_with_resource_exhausted(self):
        name = unique("stuck")
        call = self.realtime.StreamAnalytics(
            self.rt_pb.StreamAnalyticsRequest(event_name=name, include_events=True), timeout=60)
        self.addCleanup(call.cancel)
        it = iter(call)
        self.assertTrue(next(it).HasField("aggregates"))
        self.publish(name, 40)
        time.sleep(3.0)  # behind for longer than REALTIME_SLOW_CONSUMER_MS
        got = []
        with self.assertRaises(grpc.RpcError) as cm:
            for m in it:
                got.append(m)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertRegex(cm.exception.details(), r"^subscriber too slow: \d+ updates dropped$")
        n = int(re.search(r"\d+", cm.exception.details()).group())
        self.assertGreater(n, 0)
        self.assertLess(len([m for m in got if m.HasField("event")]), 40)
        self.assertServing()

    # --- the same over WebSocket ---

    def ws_uri(self, query):
        return "ws://127.0.0.1:%d/ws/analytics?%s" % (self.server.rest_port, query)

    def test_websocket_stuck_consumer_is_closed_with_the_reason(self):
        name = unique("wsstuck")

        async def go():
            # A small receive buffer and queue: the client stops reading soon.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.connect(("127.0.0.1", self.server.rest_port))
            async with websockets.connect(self.ws_uri("includeEvents=true&eventName=" + name),
                                          sock=sock, max_queue=1, max_size=None,
                                          open_timeout=TIMEOUT_S) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                self.assertIn("aggregates", first["result"])
                await asyncio.get_running_loop().run_in_executor(None, self.publish, name, 40)
                await asyncio.sleep(3.0)
                frames = []
                try:
                    while True:
                        frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S)))
                except websockets.ConnectionClosed:
                    pass
                return frames, ws.close_code, ws.close_reason

        frames, code, reason = asyncio.run(asyncio.wait_for(go(), 60))
        self.assertEqual(code, 1008)
        self.assertRegex(reason, r"^subscriber too slow: \d+ updates dropped$")
        if frames and "error" in frames[-1]:
            self.assertEqual(frames[-1]["error"]["code"], 8)  # RESOURCE_EXHAUSTED
        self.assertServing()


class RealtimeWebSocketTest(RealtimeBase):
    SERVER_ENV = {"REALTIME_AGGREGATE_INTERVAL": "200"}

    def ws_uri(self, query):
        return "ws://127.0.0.1:%d/ws/analytics?%s" % (self.server.rest_port, query)

    def test_live_events_filters_and_aggregates_over_websocket(self):
        name = unique("ws")

        async def go():
            async with websockets.connect(
                    self.ws_uri("includeEvents=true&eventType=rt&eventName=%s&properties.plan=pro"
                                % name), open_timeout=TIMEOUT_S) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                self.assertIn("aggregates", first["result"])
                loop = asyncio.get_running_loop()
                t0 = time.monotonic()
                r = await loop.run_in_executor(None, self.rest_post, "/api/events", {
                    "eventType": "rt", "eventName": name, "properties": {"plan": "pro"}})
                await loop.run_in_executor(None, self.rest_post, "/api/events", {
                    "eventType": "rt", "eventName": name, "properties": {"plan": "free"}})
                frames, latency = [], None
                end = time.monotonic() + 0.8
                while time.monotonic() < end:
                    try:
                        f = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                    except asyncio.TimeoutError:
                        continue
                    if "event" in f["result"] and latency is None:
                        latency = (time.monotonic() - t0) * 1000
                    frames.append(f["result"])
                return r, frames, latency

        r, frames, latency = asyncio.run(asyncio.wait_for(go(), 30))
        events = [f["event"] for f in frames if "event" in f]
        self.assertEqual([e["eventId"] for e in events], [r["result"]["eventId"]])
        self.assertEqual(events[0]["properties"], {"plan": "pro"})
        snaps = [f["aggregates"] for f in frames if "aggregates" in f]
        self.assertTrue(any(rate["eventName"] == name and rate["perSecond"] > 0
                            for s in snaps for rate in s.get("rates", [])), snaps)
        seqs = [int(f["sequence"]) for f in frames]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))
        print("\n    ingest-to-subscriber latency over REST + WebSocket (one event): %.2f ms"
              % latency)

    def test_unknown_query_parameter_is_refused(self):
        async def go():
            async with websockets.connect(self.ws_uri("bogus=1"), open_timeout=TIMEOUT_S) as ws:
                frames = []
                try:
                    while True:
                        frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S)))
                except websockets.ConnectionClosed:
                    pass
                return frames, ws.close_code, ws.close_reason

        frames, code, reason = asyncio.run(asyncio.wait_for(go(), 30))
        self.assertEqual(code, 4003)
        self.assertEqual(frames[-1]["error"]["code"], 3)
        self.assertIn("bogus", reason)

    def test_dashboard_is_served(self):
        for path in ("/", "/dashboard", "/dashboard/app.js", "/dashboard/app.css"):
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.server.rest_port, path),
                                        timeout=TIMEOUT_S) as resp:
                self.assertEqual(resp.status, 200)
                body = resp.read().decode()
                self.assertTrue(body)
                ctype = resp.headers["content-type"]
                self.assertIn({"/": "text/html", "/dashboard": "text/html",
                               "/dashboard/app.js": "text/javascript",
                               "/dashboard/app.css": "text/css"}[path], ctype)
        self.assertIn("/ws/analytics", urllib.request.urlopen(
            "http://127.0.0.1:%d/dashboard/app.js" % self.server.rest_port).read().decode())


class SharedFramesTest(RealtimeBase):
    SERVER_ENV = {"REALTIME_AGGREGATE_INTERVAL": "200"}
    SUBSCRIBERS = 3
    EVENTS = 5

    FRAME = re.compile(r'^\{"result":\{"sequence":"(\d+)",(.*)\}$', re.S)

    def test_subscribers_get_the_same_event_frames(self):
        name = unique("fan")
        uri = "ws://127.0.0.1:%d/ws/analytics?includeEvents=true&eventName=%s" % (
            self.rest_port, name)

        async def read(ws, until):
            texts = []
            while time.monotonic() < until:
                try:
                    texts.append(await asyncio.wait_for(ws.recv(), 0.2))
                except asyncio.TimeoutError:
                    continue
            return texts

        async def go():
            conns = [await websockets.connect(uri, open_timeout=TIMEOUT_S)
                     for _ in range(self.SUBSCRIBERS)]
            try:
                for ws in conns:  # registered once the first snapshot is in
                    first = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                    self.assertIn("aggregates", first["result"])
                ids = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: [self.track(name) for _ in range(self.EVENTS)])
                until = time.monotonic() + 1.5
                texts = await asyncio.gather(*(read(ws, until) for ws in conns))
            finally:
                for ws in conns:
                    await ws.close()
            return ids, texts

        ids, texts = asyncio.run(asyncio.wait_for(go(), 60))
        bodies = []
        for sub in texts:
            seqs, events = [], []
            for text in sub:
                m = self.FRAME.match(text)
                self.assertIsNotNone(m, text[:200])
                seqs.append(int(m.group(1)))
                self.assertEqual(int(json.loads(text)["result"]["sequence"]), seqs[-1])
                if m.group(2).startswith('"event":'):
                    events.append(m.group(2))
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))
            self.assertEqual([json.loads("{%s" % e)["event"]["eventId"] for e in events], ids)
            bodies.append(events)
        # Byte for byte the same event text for every subscriber.
        for other in bodies[1:]:
            self.assertEqual(other, bodies[0])


class SharedFramesRemoteTest(SharedFramesTest):
    """The same through analytics-restbridge: its streams share one decoding
    and encoding of each event too."""

    BRIDGE = "remote"


if __name__ == "__main__":
    unittest.main()
