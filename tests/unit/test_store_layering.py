"""The layering rules of DESIGN section 9 for storage, checked on the tree.

- No file under server/ outside server/store/ includes sqlite3.h or names a
  sqlite3 symbol: the subsystems reach storage through the role tables
  (server/store/ana_store.h) and the local database's typed API
  (server/store/local/ana_local_db.h).
- bench/ reaches the store the same way: no file there includes sqlite3.h
  or uses SQLite's C API (the sqlite3 command-line tool as a baseline is
  fine) but bench/search_format1.c, search_bench's rebuild of the free-text
  index's retired format 1 in a file of its own, which no store API makes.
- No file outside server/store/ includes a store-internal header (a backend's
  own headers, the local database's raw connections): not the server, not
  bench/, not the tests, except the store's own unit tests.

Usage: test_store_layering.py SOURCE_DIR. Exit status 1 lists every breach.
"""
import os
import re
import sys

# Headers only server/store/ may include.
INTERNAL = {"local_db_sql.h", "sqlite_backends.h", "text_index.h", "wal_write_vfs.h", "sql_stmt.h",
            "locked_conn.h"}
# bench/'s raw-SQLite files: the retired format-1 index and the deduplication keys of
# schema 24, which benchmarks compare against.
BENCH_SQLITE = {"bench/search_format1.c", "bench/dedupe_schema24.c"}
# The store's own unit tests exercise its internals.
STORE_TESTS = {"tests/unit/test_store.c", "tests/unit/test_wal_write_vfs.c"}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
SQLITE_C_API = re.compile(r'\bsqlite3(_\w+\s*\(|\s*\*|\.h\b)')


def sources(root, top):
    for d, _, files in os.walk(os.path.join(root, top)):
        for f in files:
            if f.endswith((".c", ".h")):
                path = os.path.join(d, f)
                yield os.path.relpath(path, root), path


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    breaches = []
    for top in ("server", "bench", "tests", "restbridge", "client", "common"):
        for rel, path in sources(root, top):
            if rel.startswith("server/store/"):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    name = m.group(1) if m else None
                    base = os.path.basename(name) if name else None
                    if rel.startswith("bench/") and rel not in BENCH_SQLITE and \
                            SQLITE_C_API.search(line):
                        breaches.append("%s:%d: uses SQLite outside server/store/: %s"
                                        % (rel, n, line.strip()))
                    elif rel.startswith("server/") and (
                            "sqlite3" in line and not line.lstrip().startswith(("//", "*", "/*"))):
                        breaches.append("%s:%d: names sqlite3 outside server/store/: %s"
                                        % (rel, n, line.strip()))
                    elif base in INTERNAL and rel not in STORE_TESTS:
                        breaches.append("%s:%d: includes the store-internal %s" % (rel, n, name))
                    elif name and name.startswith("sqlite/") and rel not in STORE_TESTS:
                        breaches.append("%s:%d: includes a backend's header %s" % (rel, n, name))
    for b in breaches:
        print(b)
    if breaches:
        print("%d layering breaches (DESIGN section 9)" % len(breaches))
        return 1
    print("storage layering holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
