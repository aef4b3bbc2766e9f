"""Issue 21, point 1 (imports at full speed) and 2 (bytes per event): each
commit of random UUID eventIds wrote about a page of the deduplication keys
per event (every key landed on another leaf of one B-tree, so the count grew
with the table), and the keys took about 28 bytes each. Now a commit writes
its keys as one sorted run (a few pages, however many keys are stored) and
merges join the runs in the background; a retry is still a duplicate
whichever run holds its key.
"""

import http.client
import os
import random
import re
import sqlite3
import struct
import time
import unittest

from adversary import AttackTestCase
import test_dedupe_key_bytes

DAY_MS = 86400 * 1000
BATCH = 1000
BATCHES = 22
# Pages of the keys one commit of 1,000 new keys may write (its run: about
# five chunks, the run's row and the B-trees' parents; it wrote about 150 at
# this size before, one per leaf of the table).
MAX_PAGES_PER_COMMIT = 40
# Bytes per key of the keys' tables (chunks of 18-byte UUID keys, the runs'
# filters and fences).
MAX_BYTES_PER_KEY = 24


def uuid_of(rnd):
    h = "%032x" % rnd.getrandbits(128)
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def batch_body(ids, shift_ms=0, seed=0):
    return test_dedupe_key_bytes.events_body(random.Random(seed), ids, shift_ms)


def wal_frames(path):
    """(salts, page numbers of the WAL's frames of its current generation)."""
    try:
        with open(path + "-wal", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, []
    if len(data) < 32:
        return None, []
    page = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    pages, off = [], 32
    while off + 24 + page <= len(data) and data[off + 8:off + 16] == salts:
        pages.append(struct.unpack(">I", data[off:off + 4])[0])
        off += 24 + page
    return salts, pages


class DedupeRunsTest(AttackTestCase):
    # No checkpoint by size during the test: the WAL shows what each commit wrote.
    SERVER_ENV = {"WAL_CHECKPOINT_MB": "1024"}

    def post(self, body):
        return self.rest_json_ok("POST", "/api/events/batch", body)

    def db_path(self):
        # The keys are in the journal file, beside the staged events.
        return os.path.join(self.server.data_dir, "analytics-journal.db")

    def dedupe_pages(self):
        """{page number: table} of the keys' tables, and their bytes."""
        db = sqlite3.connect("file:%s?mode=ro" % self.db_path(), uri=True)
        try:
            rows = db.execute("SELECT pageno, name, pgsize FROM dbstat"
                              " WHERE name LIKE 'dedupe%' AND name != 'dedupe_accounts'").fetchall()
        finally:
            db.close()
        return {p: n for p, n, _ in rows}, sum(s for _, _, s in rows)

    def test_each_commit_wrote_a_page_of_keys_per_event(self):
        rnd = random.Random(2121)
        ids = [[uuid_of(rnd) for _ in range(BATCH)] for _ in range(BATCHES + 1)]
        with self.rss_watch():
            for b in range(BATCHES):
                out = self.post(batch_body(ids[b], seed=b))
                self.assertEqual(out.get("accepted"), BATCH, str(out)[:300])
            time.sleep(1.5)  # the merges (level 0: 22 runs, merged by 8) end
            salts0, before = wal_frames(self.db_path())
            out = self.post(batch_body(ids[BATCHES], seed=99))
            self.assertEqual(out.get("accepted"), BATCH, str(out)[:300])
            salts1, after = wal_frames(self.db_path())
            # Retries two days later, of the first batch (merged) and the last
            # (its own run): all duplicates.
            for b in (0, BATCHES):
                again = self.post(batch_body(ids[b], shift_ms=2 * DAY_MS, seed=b + 7))
                self.assertEqual(again.get("duplicates"), BATCH, str(again)[:300])
        # The merges keep up: few runs for each claim to probe (/metrics).
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=10)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
        runs = re.search(r"^ana_dedupe_runs (\d+)", metrics, re.M)
        self.assertIsNotNone(runs, "/metrics has no ana_dedupe_runs")
        self.assertLess(int(runs.group(1)), 16, "the keys are in %s runs" % runs.group(1))
        new = after[len(before):] if salts0 == salts1 else after
        pages, size = self.dedupe_pages()
        written = {p for p in new if p in pages}
        keys = BATCH * (BATCHES + 1)
        print("\n  keys: %d pages written by one commit of %d keys; %.1f bytes per key"
              % (len(written), BATCH, size / keys))
        self.assertLessEqual(len(written), MAX_PAGES_PER_COMMIT,
                             "one commit of %d keys wrote %d pages of them" % (BATCH, len(written)))
        self.assertLessEqual(size / keys, MAX_BYTES_PER_KEY,
                             "the keys take %.1f bytes each" % (size / keys))
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
