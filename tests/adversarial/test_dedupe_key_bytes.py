"""Issue 21, point 2 (bytes per event): the deduplication keys of an import
at random times took 66 bytes per event, half of it an index of every key by
its expiry day. Now the keys table holds only (account number, eventId) and
the keys are listed by expiry day, one compressed row per commit and day
(dedupe_expiry); a retry is still recognised whatever its timestamp.
"""

import json
import os
import random
import sqlite3
import time
import unittest

from adversary import AttackTestCase

DAY_MS = 86400 * 1000
EVENTS = 20000
BATCH = 1000
# Bytes per event of the keys, their lists and account numbers at most (the
# keys' rows of these 12-character ids are about 20).
MAX_BYTES = 32
# The same with random UUID eventIds (v4, as most clients send): 36
# characters of text took 72 bytes per event; as their 16 bytes, in the keys
# and in the expiry lists, about 50.
MAX_UUID_BYTES = 56


def uuid_of(i):
    h = "%032x" % random.Random(i).getrandbits(128)
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def events_body(rnd, ids, shift_ms=0):
    """A batch of one event per id, at random times over the last 29 days."""
    now = int(time.time() * 1000)
    events = []
    for eid in ids:
        ts = now - 3600 * 1000 - rnd.randrange(29 * DAY_MS) + shift_ms
        events.append({
            "eventId": eid,
            "eventType": "track",
            "eventName": "message_sent",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
                         + ".%03dZ" % (ts % 1000),
            "properties": {"campaignId": "campaign-%d" % rnd.randrange(50)},
        })
    return json.dumps({"events": events})


def batch_body(rnd, first, n, shift_ms=0, uuids=False):
    return events_body(rnd, [uuid_of(i) if uuids else "imp-7-%d" % i
                             for i in range(first, first + n)], shift_ms)


class DedupeKeyBytesTest(AttackTestCase):
    def post(self, body):
        return self.rest_json_ok("POST", "/api/events/batch", body)

    def dedupe_bytes(self):
        path = os.path.join(self.server.data_dir, "analytics.db")
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            return db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'dedupe%'"
                              " OR name LIKE 'sqlite_autoindex_dedupe%'").fetchone()[0]
        finally:
            db.close()

    def test_dedupe_keys_took_66_bytes_per_event_with_their_expiry_index(self):
        rnd = random.Random(21)
        with self.rss_watch():
            for first in range(0, EVENTS, BATCH):
                out = self.post(batch_body(rnd, first, BATCH))
                self.assertEqual(out.get("accepted"), BATCH, str(out)[:300])
            # The same ids again, two days later: each one a duplicate.
            again = self.post(batch_body(rnd, 0, BATCH, shift_ms=2 * DAY_MS))
        self.assertEqual(again.get("duplicates"), BATCH, str(again)[:300])
        per_event = self.dedupe_bytes() / EVENTS
        self.assertLessEqual(per_event, MAX_BYTES,
                             "deduplication keys take %.1f bytes per event" % per_event)
        self.assert_survived()


class UuidDedupeKeyBytesTest(DedupeKeyBytesTest):
    """The same on a server of its own, with UUID eventIds."""

    test_dedupe_keys_took_66_bytes_per_event_with_their_expiry_index = None

    def test_uuid_event_ids_took_72_bytes_per_event_as_text_keys(self):
        rnd = random.Random(22)
        with self.rss_watch():
            for first in range(0, EVENTS, BATCH):
                out = self.post(batch_body(rnd, first, BATCH, uuids=True))
                self.assertEqual(out.get("accepted"), BATCH, str(out)[:300])
            again = self.post(batch_body(rnd, 0, BATCH, shift_ms=2 * DAY_MS, uuids=True))
            # The same UUIDs in upper case are other ids.
            upper = json.loads(batch_body(rnd, 0, 10, uuids=True))
            for e in upper["events"]:
                e["eventId"] = e["eventId"].upper()
            other = self.post(json.dumps(upper))
        self.assertEqual(again.get("duplicates"), BATCH, str(again)[:300])
        self.assertEqual(other.get("accepted"), 10, str(other)[:300])
        per_event = self.dedupe_bytes() / EVENTS
        self.assertLessEqual(per_event, MAX_UUID_BYTES,
                             "deduplication keys take %.1f bytes per event" % per_event)
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
