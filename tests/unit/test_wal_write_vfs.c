/* Unit tests of the VFS that gathers each commit's WAL frames: every commit,
 * of any size and under any synchronous setting, is in the file (so other
 * connections and a crash image see it) as soon as it returns, including one
 * whose frame headers SQLite rewrote, and a commit of many pages costs the
 * process two write calls, not two a page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "wal_write_vfs.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROW_BYTES 3000 /* about one page a row */

static char dir[64], path[128];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/ana-walvfs-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(path, sizeof path, "%s/t.db", dir);
  return ana_wal_write_vfs() ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static sqlite3 *open_db(const char *p, const char *vfs, const char *sync) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                   SQLITE_OK);
  char sql[128];
  snprintf(sql, sizeof sql, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;", sync);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  return db;
}

static void exec(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
    fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* Inserts n rows of ROW_BYTES in one transaction. */
static void insert_rows(sqlite3 *db, int n) {
  char sql[160];
  snprintf(sql, sizeof sql,
           "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d)"
           " INSERT INTO t(v) SELECT randomblob(%d) FROM c",
           n, ROW_BYTES);
  exec(db, sql);
}

static sqlite3_int64 count_rows(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  sqlite3_int64 n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

/* Opens a copy of the database and its WAL taken now, as a crash would
 * leave them, and checks it holds `rows` rows and is intact. */
static void check_crash_image(const char *name, sqlite3_int64 rows) {
  char cmd[640], copy[160];
  snprintf(copy, sizeof copy, "%s/crash-%s.db", dir, name);
  snprintf(cmd, sizeof cmd, "cp %s %s && cp %s-wal %s-wal", path, copy, path, copy);
  assert_int_equal(system(cmd), 0);
  sqlite3 *c = open_db(copy, NULL, "FULL");
  assert_int_equal(count_rows(c), rows);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  sqlite3_close(c);
}

/* Commits of 1 to 90 pages (across the size at which frames are written in
 * pieces) are each seen whole by another connection, and by a copy of the
 * files taken with the writer still open, i.e. what a crash would leave. */
static void check_commits_are_in_the_file(const char *sync) {
  sqlite3 *w = open_db(path, ana_wal_write_vfs(), sync);
  sqlite3 *r = open_db(path, ana_wal_write_vfs(), sync);
  exec(w, "PRAGMA wal_autocheckpoint=0; CREATE TABLE t(v BLOB)");
  sqlite3_int64 total = 0;
  for (int n = 1; n <= 90; n++) {
    insert_rows(w, n);
    total += n;
    assert_int_equal(count_rows(r), total);
  }
  check_crash_image(sync, total);
  sqlite3_close(r);
  sqlite3_close(w);
  unlink(path);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -f %s-wal %s-shm", path, path);
  assert_int_equal(system(cmd), 0);
}

static void commits_are_in_the_file_when_synced(void **state) {
  (void)state;
  check_commits_are_in_the_file("FULL");
}

static void commits_are_in_the_file_without_sync(void **state) {
  (void)state;
  check_commits_are_in_the_file("NORMAL");
  check_commits_are_in_the_file("OFF");
}

/* A transaction larger than the page cache spills frames to the WAL, then
 * overwrites them in place, and at commit SQLite rewrites the headers of its
 * frames (their checksums chain). The last rewritten header must reach the
 * file too, even with no sync to follow: else recovery, finding a bad
 * checksum, would drop the transaction. */
static void rewritten_frame_headers_are_in_the_file(void **state) {
  (void)state;
  sqlite3 *w = open_db(path, ana_wal_write_vfs(), "NORMAL");
  exec(w, "PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=5; CREATE TABLE t(v BLOB)");
  exec(w, "BEGIN");
  insert_rows(w, 60);
  exec(w, "UPDATE t SET v = randomblob(3000)");
  exec(w, "COMMIT");
  check_crash_image("rewrite", 60);
  sqlite3_close(w);
}

/* Write calls made by this thread so far (Linux task I/O accounting). */
static long write_calls(void) {
  FILE *f = fopen("/proc/thread-self/io", "r");
  char line[128];
  long n = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "syscw: %ld", &n) == 1)
      break;
  if (f)
    fclose(f);
  return n;
}

static void a_commit_of_many_pages_is_two_writes(void **state) {
  (void)state;
  sqlite3 *w = open_db(path, ana_wal_write_vfs(), "FULL");
  exec(w, "CREATE TABLE t(v BLOB)");
  insert_rows(w, 1); /* the WAL's header is written */
  long before = write_calls();
  if (before < 0)
    skip();
  insert_rows(w, 20); /* 20 rows of about a page: over 20 frames */
  long calls = write_calls() - before;
  /* The first frame's header, then the rest; unbuffered, SQLite makes two
   * calls a frame (40 or more here). */
  assert_int_equal(calls, 2);
  sqlite3_close(w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(commits_are_in_the_file_when_synced, setup, teardown),
      cmocka_unit_test_setup_teardown(commits_are_in_the_file_without_sync, setup, teardown),
      cmocka_unit_test_setup_teardown(rewritten_frame_headers_are_in_the_file, setup, teardown),
      cmocka_unit_test_setup_teardown(a_commit_of_many_pages_is_two_writes, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
