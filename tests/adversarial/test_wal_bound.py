"""Issue 21, point 3: the WAL stays within 2 x WAL_CHECKPOINT_MB under an
import at random times, even while a reader holds an old snapshot.

A read transaction that stays open keeps the checkpoint from copying what was
committed after it began, so the WAL could not start over and grew with every
commit (3.2 GB beside a 166 MB database in the issue's import). Now the event
writer waits at BEGIN while the WAL holds 1.5 x WAL_CHECKPOINT_MB that are not
all copied; once the reader is gone the checkpoint copies them, the next
commit starts the WAL over, and SQLite trims the file to WAL_CHECKPOINT_MB
(journal_size_limit). /metrics shows the file's size (ana_store_wal_bytes).

Each file of the local database has its own WAL and its own bound: analytics.db
(the events, written by the mover) and analytics-journal.db (the acknowledged
commits: staged events, deduplication keys); the reader holds a snapshot of
both, and both stay within the bound.
"""

import json
import os
import random
import re
import sqlite3
import threading
import time
import unittest

from adversary import AttackTestCase, raw_http

MIB = 1024 * 1024
# Large enough for the biggest group commit of these batches (the bound
# allows one commit past 2 x WAL_CHECKPOINT_MB less room for a commit).
CHECKPOINT_MB = 2
HOLD_S = 2.5
DAY_MS = 86400 * 1000


def batch_body(rnd, n, prefix):
    now = int(time.time() * 1000)
    events = []
    for i in range(n):
        ts = now - 60000 - rnd.randrange(30 * DAY_MS)
        events.append({
            "eventId": "%s-%d" % (prefix, i),
            "eventType": "track",
            "eventName": "sent",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
                         + ".%03dZ" % (ts % 1000),
            "properties": {"campaignId": "campaign-%d" % rnd.randrange(50),
                           "note": "x" * 100},
        })
    return json.dumps({"events": events})


def post(port, body):
    req = ("POST /api/events/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
           "\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    return raw_http(port, req, read_timeout=30, until_close=True)


class WalBoundTest(AttackTestCase):
    SERVER_ENV = {"WAL_CHECKPOINT_MB": str(CHECKPOINT_MB)}

    FILES = ("analytics.db", "analytics-journal.db")

    def wal_path(self, name="analytics.db"):
        return os.path.join(self.server.data_dir, name + "-wal")

    def wal_size(self, name="analytics.db"):
        try:
            return os.path.getsize(self.wal_path(name))
        except OSError:
            return 0

    def wait_merges_done(self, timeout_s=60):
        """Until the count of merges of deduplication keys stays put for 2 s."""
        deadline = time.time() + timeout_s
        last, since = None, time.time()
        while time.time() - since < 2.0:
            self.assertLess(time.time(), deadline, "the merges never ended")
            now = (self.metric("ana_dedupe_merges_total"), self.metric("ana_dedupe_runs"))
            if now != last:
                last, since = now, time.time()
            time.sleep(0.2)

    def metric(self, name):
        data = raw_http(self.rest_port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n", until_close=True).decode("utf-8", "replace")
        m = re.search(r"^%s (\d+)" % re.escape(name), data, re.M)
        self.assertIsNotNone(m, "/metrics has no %s" % name)
        return int(m.group(1))

    def test_long_read_snapshot_during_random_time_import_keeps_wal_bounded(self):
        rnd = random.Random(21)
        stop = threading.Event()
        posted = []
        failures = []

        def importer():
            k = 0
            while not stop.is_set():
                out = post(self.rest_port, batch_body(rnd, 200, "w%d" % k))
                if b" 200 " not in out.split(b"\r\n", 1)[0]:
                    failures.append(out[:200])
                    return
                posted.append(k)
                k += 1

        peak = {f: 0 for f in self.FILES}

        def sample(seconds):
            end = time.time() + seconds
            while time.time() < end:
                for f in self.FILES:
                    peak[f] = max(peak[f], self.wal_size(f))
                time.sleep(0.01)

        with self.rss_watch():
            # A reader that keeps its snapshot, as a long scan did.
            reader = sqlite3.connect(os.path.join(self.server.data_dir, "analytics.db"),
                                     isolation_level=None)
            reader.execute("ATTACH DATABASE ? AS journal",
                           (os.path.join(self.server.data_dir, "analytics-journal.db"),))
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM events").fetchone()
            reader.execute("SELECT COUNT(*) FROM journal.events_staged").fetchone()
            t = threading.Thread(target=importer)
            t.start()
            sample(HOLD_S)
            held = len(posted)
            reader.execute("COMMIT")
            reader.close()
            sample(2.0)
            stop.set()
            t.join(60)
        self.assertFalse(failures, "a batch was refused: %r" % failures[:1])
        self.assertGreater(len(posted), held, "the import did not go on once the reader left")
        for f in self.FILES:
            self.assertLessEqual(
                peak[f], 2 * CHECKPOINT_MB * MIB,
                "the WAL of %s reached %.1f MiB with WAL_CHECKPOINT_MB=%d (%d batches while the "
                "reader held its snapshot)" % (f, peak[f] / MIB, CHECKPOINT_MB, held))
        # The journal's WAL was exercised (the commits wrote there).
        self.assertGreater(peak["analytics-journal.db"], 0)
        # Idle: once the deduplication keys' merges of the import's runs are
        # done, the checkpoint copies everything (asked for 1 s after the
        # mover's and the merges' last writes); the next commit starts the WAL
        # over and cuts the file to WAL_CHECKPOINT_MB.
        self.wait_merges_done()
        time.sleep(4)
        post(self.rest_port, batch_body(rnd, 1, "after"))
        time.sleep(1)  # the mover's move of it, which starts analytics.db's WAL over
        for f in self.FILES:
            self.assertLessEqual(self.wal_size(f), CHECKPOINT_MB * MIB,
                                 "the WAL of %s was not trimmed after a complete checkpoint" % f)
            self.assertEqual(self.metric('ana_store_wal_bytes{file="%s"}' % f), self.wal_size(f))
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
