#!/usr/bin/python3
"""CPU of the free-text index's FTS5 writes alone, for variants of its entries.

Entries shaped as text_index.c writes them for the peers' events (words of
"message_sent message c12 g7", a name token, the reserved time tokens),
timestamps at random over 30 days, inserted into a contentless detail=none
FTS5 table of this Python's SQLite (Debian 12: the system library the server
uses) in transactions of BATCH rows. Prints the CPU per event of the inserts
and of the commits (where FTS5 writes a segment and merges), the file's bytes
per event and, with Q=1, the CPU of 3,000 bucket probes (a random day, hour
or minute token AND a word in 2% of the events, LIMIT 400).

Environment: N (events, 300000), BATCH (1000), LEVELS (letters of the time
tokens written: d h m s; x adds the shared token of no second; "dhms" is
format 2, "dhmx" format 3 for sparse minutes), TOK (unicode61 | ascii),
AUTOMERGE, CRISIS, HS (FTS5 hashsize), PGSZ, Q.

Usage: N=1000000 BATCH=5000 HS=16000000 LEVELS=dhmx /usr/bin/python3 bench/text_index_fts5_bench.py
"""
import os
import random
import resource
import sqlite3
import sys
import tempfile

N = int(os.environ.get("N", "300000"))
BATCH = int(os.environ.get("BATCH", "1000"))
LEVELS = os.environ.get("LEVELS", "dhms")
TOK = os.environ.get("TOK", "unicode61")
R = "\ue000"
NAMES = ("message_sent", "message_delivered", "message_read", "message_clicked")
NOW = 1765000000000


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    rnd = random.Random(1)
    rows = []
    for seq in range(1, N + 1):
        ts = rnd.randrange(NOW - 30 * 86400000, NOW)
        name = rnd.choice(NAMES)
        words = "%s message c%d g%d" % (name, rnd.randrange(50), rnd.randrange(20))
        toks = [R + "n%016x" % (hash(name) & (2**64 - 1))]
        for letter, ms in zip("dhms", (86400000, 3600000, 60000, 1000)):
            if letter in LEVELS:
                toks.append(R + letter + str(ts // ms))
        if "x" in LEVELS:
            toks.append(R + "x")
        rows.append((seq, words + " " + " ".join(toks)))
    tmp = tempfile.mkdtemp(prefix="fts5_bench.")
    path = os.path.join(tmp, "t.db")
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE VIRTUAL TABLE f USING fts5(t, content='', detail=none, columnsize=0,"
              " tokenize='%s')" % TOK)
    for env, key in (("AUTOMERGE", "automerge"), ("CRISIS", "crisismerge"), ("HS", "hashsize"),
                     ("PGSZ", "pgsz")):
        if os.environ.get(env):
            c.execute("INSERT INTO f(f, rank) VALUES('%s', %d)" % (key, int(os.environ[env])))
    t_ins = t_com = 0.0
    for i in range(0, N, BATCH):
        a = cpu()
        c.execute("BEGIN")
        c.executemany("INSERT INTO f(rowid, t) VALUES (?, ?)", rows[i:i + BATCH])
        b = cpu()
        c.execute("COMMIT")
        t_ins += b - a
        t_com += cpu() - b
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    print("%s batch %d levels %s automerge %s hashsize %s: insert %.2f us/ev, commit %.2f us/ev,"
          " total %.2f; %.1f B/ev" % (TOK, BATCH, LEVELS, os.environ.get("AUTOMERGE", "-"),
                                      os.environ.get("HS", "-"), t_ins * 1e6 / N,
                                      t_com * 1e6 / N, (t_ins + t_com) * 1e6 / N, size / N))
    if os.environ.get("Q"):
        qr = random.Random(5)
        qs = []
        for _ in range(3000):
            ts = qr.randrange(NOW - 30 * 86400000, NOW)
            letter, ms = qr.choice((("d", 86400000), ("h", 3600000), ("m", 60000)))
            qs.append('"%s%s%d" "c%d"' % (R, letter, ts // ms, qr.randrange(50)))
        a = cpu()
        for q in qs:
            c.execute("SELECT rowid FROM f WHERE f MATCH ? LIMIT 400", (q,)).fetchall()
        print("  probes: %.1f us each" % ((cpu() - a) * 1e6 / len(qs)))
    c.close()
    for s in ("", "-wal", "-shm"):
        if os.path.exists(path + s):
            os.unlink(path + s)
    os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
