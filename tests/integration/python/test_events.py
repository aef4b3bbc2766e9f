"""EventService end to end through Python grpcio: track, batch, ingest and
import streams, per-item results, duplicates (also across a restart),
validation errors with their JSON paths, enrichment, and search."""

import threading
import time
import unittest
import uuid

import grpc

import harness
import stubs

NOW_S = lambda: int(time.time())


def bad_request_fields(err, ns):
    """The field paths of the google.rpc.BadRequest details of an RpcError."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            st = ns.status_pb2.Status()
            st.ParseFromString(value)
            fields = []
            for d in st.details:
                br = ns.error_details_pb2.BadRequest()
                if d.Unpack(br):
                    fields += [(v.field, v.description) for v in br.field_violations]
            return fields
    return []


class EventsBase(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb, grpc_mod = cls.ns.analytics["events"]
        cls.stub = grpc_mod.EventServiceStub(cls.channel)
        cls.R = cls.pb.EventResult

    def event(self, name="message_sent", etype="message", **kw):
        ev = self.pb.Event(event_name=name, event_type=etype)
        props = kw.pop("properties", None)
        if props:
            ev.properties.update(props)
        ts = kw.pop("ts", None)
        if ts is not None:
            ev.timestamp.FromMilliseconds(int(ts * 1000))
        sent = kw.pop("sent", None)
        if sent is not None:
            ev.sent_at.FromMilliseconds(int(sent * 1000))
        for k, v in kw.items():
            if hasattr(v, "CopyFrom"):
                getattr(ev, k).CopyFrom(v)
            else:
                setattr(ev, k, v)
        return ev

    def search(self, **kw):
        return self.stub.SearchEvents(self.pb.SearchEventsRequest(**kw), timeout=10)


class TrackTest(EventsBase):

    def test_track_event_is_accepted_enriched_and_searchable(self):
        ev = self.event("spec_example", properties={
            "campaignId": "123", "groupId": "456", "messageType": "text",
            "charactersCount": 150})
        r = self.stub.TrackEvent(self.pb.TrackEventRequest(event=ev), timeout=10).result
        self.assertEqual(r.status, self.R.ACCEPTED)
        self.assertEqual(uuid.UUID(r.event_id).version, 7)
        self.assertAlmostEqual(r.stored_timestamp.seconds, NOW_S(), delta=5)
        found = self.search(event_name="spec_example").events
        self.assertEqual(len(found), 1)
        got = found[0]
        self.assertEqual(got.event_id, r.event_id)
        self.assertEqual(got.account_id, "default")
        self.assertEqual(got.properties["campaignId"], "123")
        self.assertEqual(got.properties["charactersCount"], 150)
        self.assertEqual(got.context.ip, "127.0.0.1")
        self.assertAlmostEqual(got.received_at.seconds, NOW_S(), delta=5)

    def test_client_event_id_is_kept_and_repeats_are_duplicates(self):
        eid = "order-" + uuid.uuid4().hex
        first = self.stub.TrackEvent(
            self.pb.TrackEventRequest(event=self.event(event_id=eid)), timeout=10).result
        again = self.stub.TrackEvent(
            self.pb.TrackEventRequest(event=self.event(event_id=eid)), timeout=10).result
        self.assertEqual((first.status, first.event_id), (self.R.ACCEPTED, eid))
        self.assertEqual((again.status, again.event_id), (self.R.DUPLICATE, eid))
        self.assertEqual(len(self.search(query=eid).events) + len(
            [e for e in self.search(page_size=1000).events if e.event_id == eid]), 1)

    def test_invalid_single_event_is_invalid_argument_with_field_paths(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.TrackEvent(self.pb.TrackEventRequest(
                event=self.pb.Event(event_type="message", event_id="bad id")), timeout=10)
        e = cm.exception
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("eventName", e.details())
        fields = dict(bad_request_fields(e, self.ns))
        self.assertEqual(fields.get("eventName"), "is required")
        self.assertIn("eventId", fields)

    def test_missing_event_is_invalid_argument(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.TrackEvent(self.pb.TrackEventRequest(), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_batch_answers_per_item_and_stores_the_valid_ones(self):
        dup = "dup-" + uuid.uuid4().hex
        self.stub.TrackEvent(self.pb.TrackEventRequest(event=self.event(event_id=dup)),
                             timeout=10)
        tag = uuid.uuid4().hex
        events = [
            self.event("batch_ok", properties={"tag": tag}),
            self.event("", properties={"tag": tag}),  # no name
            self.event(event_id=dup),
            self.event("batch_future", ts=time.time() + 3 * 86400, properties={"tag": tag}),
            self.event("batch_other_account", account_id="someone-else"),
            self.event("batch_old", ts=time.time() - 400 * 86400),
        ]
        resp = self.stub.TrackEvents(self.pb.TrackEventsRequest(events=events), timeout=10)
        st = [r.status for r in resp.results]
        self.assertEqual(st, [self.R.ACCEPTED, self.R.REJECTED, self.R.DUPLICATE,
                              self.R.CORRECTED, self.R.REJECTED, self.R.REJECTED])
        self.assertEqual([r.index for r in resp.results], list(range(6)))
        self.assertEqual(resp.results[1].violations[0].field, "events[1].eventName")
        self.assertEqual(resp.results[4].violations[0].field, "events[4].accountId")
        self.assertEqual(resp.results[5].violations[0].field, "events[5].timestamp")
        corr = resp.results[3]
        self.assertAlmostEqual(corr.stored_timestamp.seconds, NOW_S(), delta=5)
        self.assertLess(corr.skew_ms, -2 * 86400 * 1000)
        self.assertEqual((resp.accepted, resp.duplicates, resp.rejected, resp.corrected),
                         (1, 1, 3, 1))
        stored = self.search(properties={"tag": tag}).events
        self.assertEqual(sorted(e.event_name for e in stored), ["batch_future", "batch_ok"])

    def test_batch_over_the_event_limit_is_refused_whole(self):
        events = [self.event("x") for _ in range(1001)]
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.TrackEvents(self.pb.TrackEventsRequest(events=events), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("events: the batch has 1001 events", cm.exception.details())

    def test_oversized_event_is_rejected_as_an_item(self):
        big = {"blob": "x" * 40000}
        resp = self.stub.TrackEvents(self.pb.TrackEventsRequest(
            events=[self.event("small"), self.event("big", properties=big)]), timeout=10)
        self.assertEqual([r.status for r in resp.results], [self.R.ACCEPTED, self.R.REJECTED])
        self.assertIn("more than the limit of 32768", resp.results[1].violations[0].description)

    def test_clock_skew_is_corrected_with_sent_at(self):
        now = time.time()
        ev = self.event("skewed", ts=now - 3600 - 10, sent=now - 3600)
        r = self.stub.TrackEvent(self.pb.TrackEventRequest(event=ev), timeout=10).result
        self.assertEqual(r.status, self.R.CORRECTED)
        self.assertAlmostEqual(r.skew_ms, 3600 * 1000, delta=3000)
        self.assertAlmostEqual(r.stored_timestamp.seconds, now - 10, delta=3)


class StreamsTest(EventsBase):

    def test_ingest_stream_answers_every_batch_with_many_in_flight(self):
        tag = uuid.uuid4().hex
        batches = [self.pb.IngestRequest(
            batch_id="b%03d" % i,
            events=[self.event("streamed", event_id="%s-%d-%d" % (tag, i, j),
                               properties={"tag": tag}) for j in range(20)])
            for i in range(30)]
        answers = list(self.stub.IngestEvents(iter(batches), timeout=30))
        self.assertEqual(sorted(a.batch_id for a in answers), [b.batch_id for b in batches])
        self.assertTrue(all(a.accepted == 20 for a in answers))
        # The same batches again: every event is a duplicate.
        again = list(self.stub.IngestEvents(iter(batches[:5]), timeout=30))
        self.assertTrue(all(a.duplicates == 20 for a in again))
        total, token = 0, ""
        while True:
            page = self.search(properties={"tag": tag}, page_size=250, page_token=token)
            total += len(page.events)
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(total, 600)

    def test_ingest_stream_rejects_an_oversized_batch_and_goes_on(self):
        batches = [self.pb.IngestRequest(batch_id="big", events=[self.event()] * 1001),
                   self.pb.IngestRequest(batch_id="ok", events=[self.event()])]
        answers = {a.batch_id: a for a in self.stub.IngestEvents(iter(batches), timeout=30)}
        self.assertEqual(answers["big"].rejected, 1001)
        self.assertEqual(answers["big"].results[0].violations[0].field, "events")
        self.assertEqual(answers["ok"].accepted, 1)

    def test_import_events_answers_one_summary(self):
        batches = [self.pb.IngestRequest(events=[self.event("imported"), self.pb.Event()])
                   for _ in range(10)]
        resp = self.stub.ImportEvents(iter(batches), timeout=30)
        self.assertEqual((resp.accepted, resp.rejected), (10, 10))
        self.assertEqual(len(resp.results), 10)
        self.assertTrue(all(r.status == self.R.REJECTED for r in resp.results))

    def test_concurrent_unary_calls_share_commits(self):
        tag = uuid.uuid4().hex
        errors = []

        def worker(n):
            try:
                for i in range(25):
                    r = self.stub.TrackEvent(self.pb.TrackEventRequest(
                        event=self.event("concurrent", properties={"tag": tag})), timeout=10)
                    if r.result.status != self.R.ACCEPTED:
                        errors.append(r.result)
            except grpc.RpcError as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(self.search(properties={"tag": tag}, page_size=1000).events), 200)


class SearchTest(EventsBase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tag = uuid.uuid4().hex
        base = time.time() - 3600
        events = []
        for i in range(25):
            events.append(cls.pb.Event(
                event_name="search_%s" % ("even" if i % 2 == 0 else "odd"),
                event_type="click" if i < 5 else "view",
                session_id="sess-%d" % (i % 3),
                event_id="s-%s-%02d" % (cls.tag, i)))
            events[-1].timestamp.FromMilliseconds(int((base + i) * 1000))
            events[-1].properties.update({"tag": cls.tag, "i": i,
                                          "note": "needle" if i == 7 else "hay"})
        resp = cls.stub.TrackEvents(cls.pb.TrackEventsRequest(events=events), timeout=10)
        assert resp.accepted == 25, resp
        cls.base = base

    def test_pages_cover_everything_newest_first_without_overlap(self):
        seen, token, pages = [], "", 0
        while True:
            page = self.search(properties={"tag": self.tag}, page_size=10, page_token=token)
            seen += [e.event_id for e in page.events]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(pages, 3)
        self.assertEqual(seen, ["s-%s-%02d" % (self.tag, i) for i in reversed(range(25))])

    def test_filters(self):
        q = dict(properties={"tag": self.tag}, page_size=100)
        self.assertEqual(len(self.search(event_name="search_even", **q).events), 13)
        self.assertEqual(len(self.search(event_type="click", **q).events), 5)
        self.assertEqual(len(self.search(session_id="sess-1", **q).events), 8)
        self.assertEqual(len(self.search(properties={"tag": self.tag, "i": "3"}).events), 1)
        hits = self.search(query="needle", **q).events
        self.assertEqual([e.event_id for e in hits], ["s-%s-07" % self.tag])
        self.assertEqual(len(self.search(query="search_odd", **q).events), 12)
        ranged = self.search(properties={"tag": self.tag},
                             **{"from": self.ts(self.base + 10), "to": self.ts(self.base + 20)})
        self.assertEqual(len(ranged.events), 10)

    def ts(self, seconds):
        t = self.pb.google_dot_protobuf_dot_timestamp__pb2.Timestamp() if hasattr(
            self.pb, "google_dot_protobuf_dot_timestamp__pb2") else None
        from google.protobuf import timestamp_pb2
        t = timestamp_pb2.Timestamp()
        t.FromMilliseconds(int(seconds * 1000))
        return t

    def test_bad_page_token_and_page_size(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.search(page_token="not-a-token!")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("pageToken", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            self.search(page_size=100000)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)


class ForwardedForTest(EventsBase):
    SERVER_ENV = {"TRUSTED_PROXIES": "127.0.0.1"}

    def test_forwarded_for_is_believed_from_a_trusted_proxy(self):
        # A loopback client: protected mode serves no other, even forwarded.
        tag = uuid.uuid4().hex
        self.stub.TrackEvent(self.pb.TrackEventRequest(
            event=self.event("fwd", properties={"tag": tag})), timeout=10,
            metadata=[("x-forwarded-for", "127.0.0.9")])
        self.assertEqual(self.search(properties={"tag": tag}).events[0].context.ip,
                         "127.0.0.9")


class UntrustedForwardedForTest(EventsBase):

    def test_forwarded_for_is_ignored_from_others(self):
        tag = uuid.uuid4().hex
        self.stub.TrackEvent(self.pb.TrackEventRequest(
            event=self.event("fwd", properties={"tag": tag}, context=self.pb.EventContext(
                ip="6.6.6.6", user_agent="ua/1", locale="de-DE"))), timeout=10,
            metadata=[("x-forwarded-for", "198.51.100.9")])
        got = self.search(properties={"tag": tag}).events[0]
        self.assertEqual(got.context.ip, "127.0.0.1")
        self.assertEqual((got.context.user_agent, got.context.locale), ("ua/1", "de-DE"))


class RestartTest(unittest.TestCase):

    def test_duplicates_are_detected_across_a_restart(self):
        ns = stubs.load()
        pb, grpc_mod = ns.analytics["events"]
        first = harness.start_server(self)
        eid = "restart-" + uuid.uuid4().hex
        ev = pb.Event(event_name="r", event_type="t", event_id=eid)
        stub = grpc_mod.EventServiceStub(first.channel())
        self.assertEqual(stub.TrackEvent(pb.TrackEventRequest(event=ev), timeout=10)
                         .result.status, pb.EventResult.ACCEPTED)
        self.assertEqual(first.stop(), 0)
        second = harness.start_server(self, env={"DATA_DIR": first.data_dir})
        stub = grpc_mod.EventServiceStub(second.channel())
        self.assertEqual(stub.TrackEvent(pb.TrackEventRequest(event=ev), timeout=10)
                         .result.status, pb.EventResult.DUPLICATE)


if __name__ == "__main__":
    unittest.main()
