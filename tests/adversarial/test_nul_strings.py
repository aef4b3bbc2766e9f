"""Issue 14, point 5: NUL bytes in gRPC string fields were silently truncated
by protobuf-c ("purchase\\0xx" stored as "purchase"; property keys a\\0b and
a\\0c collapsing into "a"). Every string field is now checked on the wire:
INVALID_ARGUMENT naming the field, nothing stored."""

import time
import uuid

import grpc

import adversary
from protowire import event, field, status_details, string_value, struct_of, unary_raw

TRACK = "/analytics.v1.EventService/TrackEvent"


class NulStrings(adversary.AttackTestCase):

    def reject(self, body, path, description="contains a NUL byte"):
        with self.rss_watch():
            with self.assertRaises(grpc.RpcError) as cm:
                unary_raw(self.channel, TRACK, body)
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT, err.details())
        self.assertTrue(err.details().startswith(path + ": " + description), err.details())
        self.assertIn(path.encode(), status_details(err))

    def assert_stored(self, session, names):
        """SearchEvents for the session finds exactly `names` (a control event
        tracked after the attack proves the search sees new events)."""
        unary_raw(self.channel, TRACK, field(1, event(name="control", session=session)))
        req = field(5, session) + field(8, 100, wire=0)
        deadline = time.monotonic() + 5
        while True:
            raw = unary_raw(self.channel, "/analytics.v1.EventService/SearchEvents", req)
            found = sorted(self.event_names(raw))
            if "control" in found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(found, sorted(names + ["control"]))

    def event_names(self, raw):
        from google.protobuf.internal.decoder import _DecodeVarint
        names, i = [], 0
        while i < len(raw):
            tag, i = _DecodeVarint(raw, i)
            n, i = _DecodeVarint(raw, i)
            if tag == (1 << 3 | 2):  # SearchEventsResponse.events
                ev, j = raw[i:i + n], 0
                while j < len(ev):
                    t, j = _DecodeVarint(ev, j)
                    if t & 7 == 2:
                        m, j = _DecodeVarint(ev, j)
                        if t >> 3 == 5:
                            names.append(ev[j:j + m].decode())
                        j += m
                    elif t & 7 == 0:
                        _, j = _DecodeVarint(ev, j)
                    else:
                        j += 8 if t & 7 == 1 else 4
            i += n
        return names

    def test_nul_in_event_name_was_stored_truncated(self):
        session = "nul-" + uuid.uuid4().hex
        self.reject(field(1, event(name="purchase\0xx", session=session)), "event.eventName")
        self.assert_survived()
        self.assert_stored(session, [])

    def test_nul_in_property_keys_collapsed_them(self):
        session = "nul-" + uuid.uuid4().hex
        props = struct_of(("a\0b", string_value("1")), ("a\0c", string_value("2")))
        self.reject(field(1, event(session=session, properties=props)), "event.properties.fields",
                    'has a key that contains a NUL byte ("a\\u0000b")')
        self.assert_survived()
        self.assert_stored(session, [])

    def test_nul_in_property_value_was_stored_truncated(self):
        session = "nul-" + uuid.uuid4().hex
        props = struct_of(("k", string_value("v\0w")))
        self.reject(field(1, event(session=session, properties=props)),
                    'event.properties.fields["k"].stringValue')
        self.assert_survived()
        self.assert_stored(session, [])

    def test_nul_in_session_id_was_stored_truncated(self):
        session = "nul-" + uuid.uuid4().hex
        self.reject(field(1, event(name="purchase", session=session + "\0x")), "event.sessionId")
        self.assert_survived()
        self.assert_stored(session, [])

    def test_nul_in_a_batch_names_the_event(self):
        session = "nul-" + uuid.uuid4().hex
        body = (field(1, event(name="ok", session=session)) +
                field(1, event(name="bad\0", session=session)))
        with self.rss_watch():
            with self.assertRaises(grpc.RpcError) as cm:
                unary_raw(self.channel, "/analytics.v1.EventService/TrackEvents", body)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(cm.exception.details().startswith("events[1].eventName: "),
                        cm.exception.details())
        self.assert_survived()
        self.assert_stored(session, [])
