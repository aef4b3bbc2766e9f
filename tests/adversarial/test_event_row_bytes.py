"""Issue 21, point 2 (bytes per event): an events row of a marketing import
(UUID eventIds, properties {campaignId, groupId}) took 236 bytes: the
properties in a column and again in the compressed payload, the eventId as
36 characters in the row and again in the payload, the account id as text.
Now the properties are only in the compressed body, the payload leaves out
what the row's columns hold, a canonical UUID is 16 bytes and the account a
number; the events read back the same (search by property, ids, payloads).
With the index and the keys (240 bytes per event at 10^6): the event type and
name are numbers of one strings table, seq is the key's low bits (in no
index: each day's range of the table is in seq order), the time index holds
no eventId, and the deduplication keys hold their expiry day instead of
being listed a second time by day.
"""

import json
import os
import random
import sqlite3
import time
import unittest
import urllib.parse

from adversary import AttackTestCase

DAY_MS = 86400 * 1000
EVENTS = 20000
BATCH = 1000
NAMES = ("message_sent", "message_delivered", "message_read", "message_clicked")
# Bytes per event of the events table (its own B-tree, no index) at most.
MAX_EVENT_BYTES = 150


def uuid4(rnd):
    h = "%032x" % rnd.getrandbits(128)
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def batch(rnd, n):
    now = int(time.time() * 1000)
    events = []
    for _ in range(n):
        ts = now - 3600 * 1000 - rnd.randrange(29 * DAY_MS)
        events.append({
            "eventId": uuid4(rnd),
            "eventType": "message",
            "eventName": rnd.choice(NAMES),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
                         + ".%03dZ" % (ts % 1000),
            "properties": {"campaignId": "c%d" % rnd.randrange(50),
                           "groupId": "g%d" % rnd.randrange(20)},
        })
    return events


class StoreBytesCase(AttackTestCase):
    """A random-time REST import, its search pages and the store's dbstat."""

    def import_batches(self, seed):
        rnd = random.Random(seed)
        sent = []
        for _ in range(0, EVENTS, BATCH):
            events = batch(rnd, BATCH)
            sent.extend(events)
            out = self.rest_json_ok("POST", "/api/events/batch",
                                    json.dumps({"events": events}))
            self.assertEqual(out.get("accepted"), BATCH, str(out)[:300])
        return sent

    def search_all(self, query):
        """Every event of GET /api/events/search?query, page by page."""
        got, token = [], ""
        while True:
            q = dict(query)
            if token:
                q["pageToken"] = token
            page = self.rest_json_ok("GET", "/api/events/search?" + urllib.parse.urlencode(q))
            got.extend(page.get("events", []))
            token = page.get("nextPageToken", "")
            if not token:
                return got

    def query_db(self, sql, args=()):
        """sql on analytics.db, its journal attached as `journal`."""
        path = os.path.join(self.server.data_dir, "analytics.db")
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        db.execute("ATTACH DATABASE ? AS journal", (
            "file:%s?mode=ro" % os.path.join(self.server.data_dir, "analytics-journal.db"),))
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


class EventRowBytesTest(StoreBytesCase):
    def test_events_rows_kept_properties_and_uuid_ids_twice(self):
        with self.rss_watch():
            sent = self.import_batches(21)
            # Events read back as sent: by two properties, with their ids.
            want = sorted(e["eventId"] for e in sent
                          if e["properties"] == {"campaignId": "c7", "groupId": "g3"})
            got = self.search_all({"properties[campaignId]": "c7",
                                   "properties[groupId]": "g3", "pageSize": 7})
            for e in got:
                self.assertEqual(e["properties"], {"campaignId": "c7", "groupId": "g3"})
        self.assertEqual(sorted(e["eventId"] for e in got), want)
        events_bytes = self.query_db("SELECT SUM(pgsize) FROM dbstat WHERE name = ?",
                                     ("events",))[0][0]
        per_event = events_bytes / EVENTS
        self.assertLessEqual(per_event, MAX_EVENT_BYTES,
                             "an events row takes %.1f bytes" % per_event)
        self.assert_survived()


# Bytes per event of the events table, its indexes and the deduplication
# keys together at most (an import of these events took 240: the type and
# name as text in every row and index entry, seq in a column besides the
# key, the eventId in every time index entry, and every key a second time
# in its day's expiry list; then 170 with seq in an index of its own,
# events_by_seq, 17.6: the days' ranges of the table hold it in order).
MAX_STORE_BYTES = 160


class EventStoreBytesTest(StoreBytesCase):
    """On a server of its own: the events rows, their indexes and the keys."""

    def test_names_seq_and_ids_were_stored_in_every_row_entry_and_key_list(self):
        with self.rss_watch():
            sent = self.import_batches(23)
            # Newest first by name, page by page: every event of the name once.
            want = [e for e in sent if e["eventName"] == "message_clicked"]
            got = self.search_all({"eventName": "message_clicked", "pageSize": 500})
            for e in got:
                self.assertEqual(e["eventName"], "message_clicked")
                self.assertEqual(e["eventType"], "message")
        self.assertEqual(sorted(e["eventId"] for e in got), sorted(e["eventId"] for e in want))
        times = [e["timestamp"] for e in got]
        self.assertEqual(times, sorted(times, reverse=True))
        # Both files: the deduplication keys are in the journal.
        tables = ("('events', 'event_strings', 'event_days', 'dedupe_keys', 'dedupe_expiry',"
                  " 'dedupe_accounts', 'dedupe_runs', 'dedupe_chunks', 'dedupe_meta',"
                  " 'dedupe_filters')")
        parts = dict(self.query_db(
            "SELECT d.name, SUM(d.pgsize) FROM dbstat('main') d JOIN main.sqlite_schema s"
            " ON s.name = d.name WHERE s.tbl_name IN %s GROUP BY d.name"
            " UNION ALL SELECT d.name, SUM(d.pgsize) FROM dbstat('journal') d"
            " JOIN journal.sqlite_schema s ON s.name = d.name WHERE s.tbl_name IN %s"
            " GROUP BY d.name" % (tables, tables)))
        self.assertIn("dedupe_chunks", parts)
        per_event = sum(parts.values()) / EVENTS
        self.assertLessEqual(per_event, MAX_STORE_BYTES,
                             "events, indexes and keys take %.1f bytes per event (%s)" % (
                                 per_event, ", ".join("%s %.1f" % (k, v / EVENTS)
                                                      for k, v in sorted(parts.items()))))
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
