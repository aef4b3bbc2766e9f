/* Unit tests of the local database, the embedded event store, deduplication
 * and the group committer: commit sequence, duplicates, search filters and
 * paging, account scoping, retention, and a commit that fails for lack of
 * space (nothing stored, database intact, the next commit works), and the
 * WAL starting over under steady commits, the WAL file kept at its size
 * with nothing to replay after a clean close, and the event writer waiting
 * for another connection's write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_ingest.h"
#include "ana_local_db.h"
#include "ana_store.h"
#include "ana_alloc.h"
#include "ana_clock.h"
#include "local_db_sql.h"
#include "text_index.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define NOW 1790000000000LL
#define DAY 86400000LL
#define SCHEMA_VERSION 28

static char dir[64];
static struct ana_local_db *db;
static const struct ana_event_store_ops *ops;
static void *store;
static const struct ana_search_index_ops *sops;
static void *sindex;
static struct ana_store_roles roles; /* store and sindex */

/* Opens the event store and the search index on db; returns the store. */
static void *open_both(struct ana_error *err) {
  ops = ana_store_event_backend("sqlite");
  sops = ana_store_search_backend("sqlite");
  void *st = ops->open(db, err);
  sindex = st ? sops->open(db, err) : NULL;
  if (!sindex) {
    if (st)
      ops->close(st);
    return NULL;
  }
  roles = (struct ana_store_roles){ops, st, sops, sindex, 5000};
  return st;
}

static void close_both(void) {
  if (sindex)
    sops->close(sindex);
  sindex = NULL;
  if (store)
    ops->close(store);
}
static struct ana_committer *committer;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done_count;
static int last_rc;
static char last_message[512];

static void on_done(struct ana_commit_request *req, int rc, const struct ana_error *err) {
  (void)req;
  pthread_mutex_lock(&mu);
  done_count++;
  last_rc = rc;
  snprintf(last_message, sizeof last_message, "%s", rc < 0 && err ? err->message : "");
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&mu);
}

static void wait_done(int n) {
  pthread_mutex_lock(&mu);
  while (done_count < n)
    pthread_cond_wait(&cond, &mu);
  pthread_mutex_unlock(&mu);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/ana-store-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  struct ana_error err;
  db = ana_local_db_open(dir, &err);
  store = db ? open_both(&err) : NULL;
  struct ana_committer_options o = {.batch_size = 1000,
                                    .processing_interval_ms = 2,
                                    .queue_max = 100000,
                                    .retention_days = 90,
                                    .retention_sweep_interval_ms = 3600000};
  committer = store ? ana_committer_create(db, &roles, &o, &err) : NULL;
  done_count = 0;
  return committer ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  ana_committer_destroy(committer);
  close_both();
  ana_local_db_close(db);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static struct ana_event_record record(const char *account, const char *id, const char *name,
                                      int64_t ts, const char *props, const char *text) {
  static const uint8_t payload[] = {0x2a, 0x01, 'x'}; /* event_name = "x" */
  return (struct ana_event_record){
      .account_id = account,
      .event_id = id,
      .session_id = "s1",
      .event_type = "message",
      .event_name = name,
      .timestamp_ms = ts,
      .received_at_ms = NOW,
      .expires_at_ms = ts + 90 * DAY,
      .properties_json = props,
      .search_text = text,
      .payload = payload,
      .payload_len = sizeof payload,
  };
}

/* n records of acct-1 named "sent", ids "<prefix>-<i>" (written to ids),
 * each with search text `text`. */
static void fill_records(struct ana_event_record *r, char (*ids)[16], int n, const char *prefix,
                         const char *text) {
  for (int i = 0; i < n; i++) {
    snprintf(ids[i], sizeof ids[i], "%s-%d", prefix, i);
    r[i] = record("acct-1", ids[i], "sent", NOW, "{}", text);
  }
}

static int submit(struct ana_event_record *r, size_t n, struct ana_commit_request *req) {
  struct ana_error err;
  memset(req, 0, sizeof *req);
  req->records = r;
  req->n = n;
  req->done = on_done;
  return ana_committer_submit(committer, req, &err);
}

/* Commits n events (ids prefix-0, prefix-1, ..., all with this text) as one
 * request and waits for its answer; last_rc then says how it went. */
static void commit_records(int n, const char *prefix, const char *text) {
  struct ana_event_record *r = calloc((size_t)n, sizeof *r);
  char(*ids)[16] = calloc((size_t)n, sizeof *ids);
  assert_non_null(r);
  assert_non_null(ids);
  fill_records(r, ids, n, prefix, text);
  pthread_mutex_lock(&mu);
  int before = done_count;
  pthread_mutex_unlock(&mu);
  struct ana_commit_request req;
  assert_int_equal(submit(r, (size_t)n, &req), 0);
  wait_done(before + 1);
  free(ids);
  free(r);
}

/* Deletes the free-text index's files (the index is derived data). */
static void remove_text_index(void) {
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm %s/analytics-text.db*", dir);
  assert_int_equal(system(cmd), 0);
}

struct hits {
  int n;
  char ids[64][160];
  int64_t ts[64];
};

static int collect(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                   uint64_t seq) {
  (void)payload;
  (void)len;
  (void)seq;
  struct hits *h = ctx;
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", id);
  h->ts[h->n++] = ts;
  return h->n == 64;
}

static struct hits search(struct ana_event_query q) {
  struct hits h = {0};
  struct ana_error err;
  if (!q.limit)
    q.limit = 64;
  if (!q.from_ms && !q.to_ms) {
    q.from_ms = INT64_MIN;
    q.to_ms = INT64_MAX;
  }
  assert_int_equal(ana_store_search(&roles, &q, collect, &h, &err), 0);
  return h;
}

/* The free-text index file, read-only, to look into it directly. */
static sqlite3 *open_text_index(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/analytics-text.db", dir);
  sqlite3 *conn = NULL;
  sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY, NULL);
  return conn;
}

/* Entries for a word in the free-text index file itself (a search would
 * also drop entries whose event is gone, so it cannot tell). */
static int text_index_entries(const char *word) {
  sqlite3 *conn = open_text_index();
  sqlite3_stmt *st = NULL;
  int n = -1;
  if (sqlite3_prepare_v2(conn, "SELECT count(*) FROM events_fts WHERE events_fts MATCH ?", -1, &st,
                         NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, word, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
      n = sqlite3_column_int(st, 0);
  }
  sqlite3_finalize(st);
  sqlite3_close(conn);
  return n;
}

/* Events the free-text index counts: the first varint of FTS5's averages
 * record. Removing an entry twice would count it off twice, though every
 * search and FTS5's integrity check look the same afterwards. */
static int text_index_documents(void) {
  sqlite3 *conn = open_text_index();
  sqlite3_stmt *st = NULL;
  int n = -1;
  if (sqlite3_prepare_v2(conn, "SELECT block FROM events_fts_data WHERE id = 1", -1, &st, NULL) ==
          SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) > 0) {
    const unsigned char *b = sqlite3_column_blob(st, 0);
    if (b[0] < 0x80) /* a one-byte varint: fewer than 128 events, as here */
      n = b[0];
  }
  sqlite3_finalize(st);
  sqlite3_close(conn);
  return n;
}

/* The first column of the first row of sql on conn (which must give one). */
static int query_int(sqlite3 *conn, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(conn, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Turns the closed store in dir back into one of schema 26, before the
 * journal file (conn: its analytics.db): the journal's tables copied back
 * into analytics.db, the watermark and the journal file gone. For the tests
 * that build older layouts from a current store. */
static void fold_journal_in(sqlite3 *conn, const char *d) {
  char jpath[160], sql[512];
  snprintf(jpath, sizeof jpath, "%s/analytics-journal.db", d);
  struct stat st;
  if (stat(jpath, &st) != 0)
    return;
  snprintf(sql, sizeof sql, "ATTACH DATABASE '%s' AS journal", jpath);
  assert_int_equal(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_stmt *q = NULL;
  assert_int_equal(sqlite3_prepare_v2(conn,
                                      "SELECT name, sql FROM journal.sqlite_schema"
                                      " WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                                      -1, &q, NULL),
                   SQLITE_OK);
  while (sqlite3_step(q) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(q, 0);
    assert_int_equal(sqlite3_exec(conn, (const char *)sqlite3_column_text(q, 1), NULL, NULL, NULL),
                     SQLITE_OK);
    snprintf(sql, sizeof sql, "INSERT INTO main.%s SELECT * FROM journal.%s", name, name);
    assert_int_equal(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK);
  }
  sqlite3_finalize(q);
  snprintf(sql, sizeof sql,
           "DROP TABLE main.events_moved; DELETE FROM schema_migrations WHERE version >= %d;"
           "DETACH DATABASE journal",
           ana_local_db_migration_containing("main.events_moved ("));
  assert_int_equal(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK);
  snprintf(sql, sizeof sql, "rm -f %s/analytics-journal.db*", d);
  assert_int_equal(system(sql), 0);
}

static void fold_journal(sqlite3 *conn) {
  fold_journal_in(conn, dir);
}

/* The keys of the live runs as a temporary table dedupe_keys (account,
 * event_id as stored, expires: the day) on conn, as they are now. */
static void keys_table(sqlite3 *conn) {
  assert_int_equal(sqlite3_exec(conn,
                                "DROP TABLE IF EXISTS temp.dedupe_keys;"
                                "CREATE TEMP TABLE dedupe_keys (account INTEGER, event_id,"
                                "  expires INTEGER);"
                                "SELECT ana_dedupe_dump('temp.dedupe_keys');",
                                NULL, NULL, NULL),
                   SQLITE_OK);
}

static void close_store(void) {
  ana_committer_destroy(committer);
  committer = NULL;
  close_both();
  store = NULL;
  ana_local_db_close(db);
  db = NULL;
}

static void open_store(void) {
  struct ana_error err;
  db = ana_local_db_open(dir, &err);
  if (!db)
    fprintf(stderr, "open: %s\n", err.message);
  assert_non_null(db);
  store = open_both(&err);
  assert_non_null(store);
}

/* A remote event store as the shipper sees it: what it was handed, in order,
 * and the highest sequence it confirmed. */
struct fake_remote {
  uint64_t confirmed;
  uint64_t seqs[16];
  char ids[16][16];
  size_t n;
  bool fail_next;
};

static int fake_ship(void *p, const struct ana_spooled_event *ev, size_t n, struct ana_error *err) {
  struct fake_remote *f = p;
  if (f->fail_next) {
    f->fail_next = false;
    return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "remote store unreachable");
  }
  for (size_t i = 0; i < n && f->n < 16; i++) {
    assert_true(ev[i].seq == f->confirmed + 1); /* no gap, no repeat */
    assert_int_equal(ev[i].payload_len, 3);
    f->seqs[f->n] = ev[i].seq;
    snprintf(f->ids[f->n++], sizeof f->ids[0], "%s", ev[i].event_id);
    f->confirmed = ev[i].seq;
  }
  return 0;
}

static int fake_shipped_seq(void *p, uint64_t *out, struct ana_error *err) {
  (void)err;
  *out = ((struct fake_remote *)p)->confirmed;
  return 0;
}

/* The shipper contract: a store that is not the local database gets the
 * committed events in commit-sequence order, in batches after what it
 * confirmed; a batch it failed is handed again; the embedded store has
 * nothing to ship. */
static void a_remote_event_store_drains_the_spool_in_order(void **state) {
  (void)state;
  commit_records(5, "ship", "shipped words");
  struct ana_event_store_ops remote = *ops;
  remote.name = "remote";
  remote.ship = fake_ship;
  remote.shipped_seq = fake_shipped_seq;
  struct ana_error err;
  assert_int_equal(ana_store_check_event_store(&remote, &err), 0);
  struct fake_remote f = {0};
  assert_int_equal(ana_store_ship_batch(db, &remote, &f, 2, &err), 2);
  assert_int_equal(f.confirmed, 2);
  f.fail_next = true;
  assert_true(ana_store_ship_batch(db, &remote, &f, 2, &err) < 0);
  assert_int_equal(f.confirmed, 2);
  assert_int_equal(ana_store_ship_batch(db, &remote, &f, 2, &err), 2);
  assert_int_equal(ana_store_ship_batch(db, &remote, &f, 2, &err), 1);
  assert_int_equal(ana_store_ship_batch(db, &remote, &f, 2, &err), 0);
  assert_int_equal(f.n, 5);
  for (size_t i = 0; i < 5; i++) {
    char want[16];
    snprintf(want, sizeof want, "ship-%zu", i);
    assert_int_equal(f.seqs[i], i + 1);
    assert_string_equal(f.ids[i], want);
  }
  assert_int_equal(ana_store_ship_batch(db, ops, store, 100, &err), 0);
}

static void schema_is_migrated_once(void **state) {
  (void)state;
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  struct ana_error err;
  struct ana_local_db *again = ana_local_db_open(dir, &err);
  assert_non_null(again);
  assert_int_equal(ana_local_db_schema_version(again), SCHEMA_VERSION);
  ana_local_db_close(again);
}

static void commits_dedupe_and_sequence(void **state) {
  (void)state;
  struct ana_event_record a[3] = {
      record("acct-1", "e1", "sent", NOW - 3000, "{}", "sent message"),
      record("acct-1", "e2", "sent", NOW - 2000, "{}", "sent message"),
      record("acct-1", "e1", "sent", NOW - 1000, "{}", "sent message"), /* repeat in batch */
  };
  struct ana_event_record b[2] = {
      record("acct-1", "e2", "sent", NOW, "{}", "sent message"), /* repeat across requests */
      record("acct-2", "e1", "sent", NOW, "{}", "sent message"), /* other account: new */
  };
  struct ana_commit_request ra, rb;
  assert_int_equal(submit(a, 3, &ra), 0);
  assert_int_equal(submit(b, 2, &rb), 0);
  wait_done(2);
  assert_int_equal(last_rc, 0);
  assert_false(a[0].duplicate);
  assert_false(a[1].duplicate);
  assert_true(a[2].duplicate);
  assert_true(b[0].duplicate);
  assert_false(b[1].duplicate);
  assert_true(a[0].seq < a[1].seq && a[1].seq < b[1].seq);
  struct ana_committer_stats st;
  ana_committer_stats(committer, &st);
  assert_int_equal(st.events_stored, 3);
  assert_int_equal(st.events_duplicate, 2);
  assert_int_equal(st.last_seq, b[1].seq);
}

static void search_filters_paging_and_accounts(void **state) {
  (void)state;
  struct ana_event_record r[6] = {
      record("acct-1", "a", "sent", NOW - 5000, "{\"campaignId\":\"123\"}", "sent hello world"),
      record("acct-1", "b", "delivered", NOW - 4000, "{\"campaignId\":\"123\"}", "delivered"),
      record("acct-1", "c", "sent", NOW - 3000, "{\"campaignId\":\"456\",\"n\":150}",
             "sent 456 150"),
      record("acct-1", "d", "sent", NOW - 3000, "{}", "sent goodbye"),
      record("acct-1", "e", "sent", NOW - 1000, "{}", "sent"),
      record("acct-2", "f", "sent", NOW, "{\"campaignId\":\"123\"}", "sent hello"),
  };
  struct ana_commit_request req;
  assert_int_equal(submit(r, 6, &req), 0);
  wait_done(1);
  assert_int_equal(last_rc, 0);

  struct hits h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 5);
  /* Newest first; equal timestamps by eventId descending. */
  assert_string_equal(h.ids[0], "e");
  assert_string_equal(h.ids[1], "d");
  assert_string_equal(h.ids[2], "c");
  assert_string_equal(h.ids[4], "a");

  h = search((struct ana_event_query){.account_id = "acct-1", .event_name = "delivered"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "b");

  const char *keys[] = {"campaignId"}, *values[] = {"123"};
  h = search((struct ana_event_query){
      .account_id = "acct-1", .property_keys = keys, .property_values = values, .n_properties = 1});
  assert_int_equal(h.n, 2);
  const char *nkeys[] = {"n"}, *nvalues[] = {"150"};
  h = search((struct ana_event_query){.account_id = "acct-1",
                                      .property_keys = nkeys,
                                      .property_values = nvalues,
                                      .n_properties = 1});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "c");

  h = search((struct ana_event_query){.account_id = "acct-1", .text = "hello"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "a");
  h = search((struct ana_event_query){.account_id = "acct-1", .text = "\"hello\" OR *"});
  assert_int_equal(h.n, 0); /* FTS syntax in user text is taken literally */

  h = search(
      (struct ana_event_query){.account_id = "acct-1", .from_ms = NOW - 4000, .to_ms = NOW - 1000});
  assert_int_equal(h.n, 3); /* b, c, d: to is exclusive */

  /* Paging: after (NOW-3000, "d") comes "c" (same time, smaller id). */
  h = search((struct ana_event_query){.account_id = "acct-1",
                                      .after_cursor = true,
                                      .cursor_ts = NOW - 3000,
                                      .cursor_event_id = "d"});
  assert_int_equal(h.n, 3);
  assert_string_equal(h.ids[0], "c");

  h = search((struct ana_event_query){.account_id = "acct-3"});
  assert_int_equal(h.n, 0);
}

static void retention_deletes_events_keys_and_index(void **state) {
  (void)state;
  struct ana_event_record r[2] = {
      record("acct-1", "old", "sent", NOW - 100 * DAY, "{}", "ancient"),
      record("acct-1", "new", "sent", NOW, "{}", "recent"),
  };
  r[0].expires_at_ms = NOW - 10 * DAY;
  struct ana_commit_request req;
  assert_int_equal(submit(r, 2, &req), 0);
  wait_done(1);
  /* Found by free text (the search waits for the index), and so indexed:
   * retention takes only indexed events. */
  struct hits h = search((struct ana_event_query){.account_id = "acct-1", .text = "ancient"});
  assert_int_equal(h.n, 1);
  assert_int_equal(text_index_entries("ancient"), 1);
  /* The committer is idle; run one sweep step by hand on its connection
   * (the sweep runs on the commit thread in production). */
  ana_committer_destroy(committer);
  committer = NULL;
  struct ana_error err;
  /* The keys' merges (their own thread) drop the expired key once told the
   * day; done here at once. */
  assert_true(ana_local_dedupe_maintain(db, NOW, 0, &err) >= 0);
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_store_expire(&roles, NOW - 90 * DAY, 1000, &err), 1);
  assert_int_equal(ana_local_dedupe_expire(db, NOW, 1000, &err), 1);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "new");
  h = search((struct ana_event_query){.account_id = "acct-1", .text = "ancient"});
  assert_int_equal(h.n, 0);
  assert_int_equal(text_index_entries("ancient"), 0);
  assert_int_equal(text_index_entries("recent"), 1);
  /* Its key expired with it: the same id may be stored again. */
  struct ana_event_record again = record("acct-1", "old", "sent", NOW, "{}", "again");
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, &again, 1, &err), 0);
  assert_false(again.duplicate);
  ana_local_db_rollback(db);
  struct ana_committer_options o = {.batch_size = 1000,
                                    .queue_max = 1000,
                                    .retention_days = 90,
                                    .retention_sweep_interval_ms = 3600000};
  committer = ana_committer_create(db, &roles, &o, &err);
}

/* Retention removes an event's index entry durably before it deletes the
 * event; a crash between the two repeats the removal at the next sweep,
 * which must not remove the entry's words a second time. */
static void repeated_retention_step_removes_an_index_entry_once(void **state) {
  (void)state;
  struct ana_event_record r[2] = {
      record("acct-1", "old", "sent", NOW - 100 * DAY, "{}", "ancient"),
      record("acct-1", "new", "sent", NOW, "{}", "recent"),
  };
  struct ana_commit_request req;
  assert_int_equal(submit(r, 2, &req), 0);
  wait_done(1);
  struct hits h = search((struct ana_event_query){.account_id = "acct-1", .text = "recent"});
  assert_int_equal(h.n, 1); /* and so both are indexed */
  assert_int_equal(text_index_documents(), 2);
  ana_committer_destroy(committer); /* the sweep's connection is free now */
  committer = NULL;
  struct ana_error err;
  /* The "crash": the entry is removed, the events' transaction is not
   * committed. */
  assert_int_equal(ana_local_db_store_begin(db, &err), 0);
  assert_int_equal(ana_store_expire(&roles, NOW - 90 * DAY, 1000, &err), 1);
  ana_local_db_store_rollback(db);
  assert_int_equal(text_index_documents(), 1);
  assert_int_equal(ana_local_db_store_begin(db, &err), 0);
  assert_int_equal(ana_store_expire(&roles, NOW - 90 * DAY, 1000, &err), 1);
  assert_int_equal(ana_local_db_store_commit(db, &err), 0);
  assert_int_equal(text_index_documents(), 1);
  assert_int_equal(text_index_entries("ancient"), 0);
  assert_int_equal(text_index_entries("recent"), 1);
  h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "new");
}

/* The index is filled by its own thread, every 100 ms at most; a free-text
 * search waits for it to reach the last commit, so an event is found the
 * moment it is acknowledged. */
static void free_text_finds_each_event_as_soon_as_it_is_acknowledged(void **state) {
  (void)state;
  for (int i = 0; i < 20; i++) {
    char word[32], id[16];
    snprintf(word, sizeof word, "fresh%d", i);
    snprintf(id, sizeof id, "f%d", i);
    struct ana_event_record r = record("acct-1", id, "sent", NOW, "{}", word);
    struct ana_commit_request req;
    assert_int_equal(submit(&r, 1, &req), 0);
    wait_done(i + 1);
    assert_int_equal(last_rc, 0);
    struct hits h = search((struct ana_event_query){.account_id = "acct-1", .text = word});
    assert_int_equal(h.n, 1);
    assert_string_equal(h.ids[0], id);
  }
}

/* The index is derived from the events: lost, it is built again; ahead of
 * them (the events restored from an older copy), it is built again too,
 * without the entries of events that are not there. */
static void text_index_is_rebuilt_from_the_events(void **state) {
  (void)state;
  commit_records(3, "kept", "durable words");
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "durable"}).n,
                   3);
  close_store();

  remove_text_index();
  open_store();
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "durable"}).n,
                   3);
  close_both();
  store = NULL;

  char path[128];
  snprintf(path, sizeof path, "%s/analytics-text.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(sqlite3_exec(conn,
                                "INSERT INTO events_fts (rowid, search_text) VALUES (999, 'stale');"
                                "UPDATE progress SET indexed_seq = 999",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(conn);
  assert_int_equal(text_index_entries("stale"), 1);
  struct ana_error err;
  store = open_both(&err);
  assert_non_null(store);
  assert_int_equal(text_index_entries("stale"), 0);
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "durable"}).n,
                   3);
}

/* An index file of the first format (FTS5 with its own copy of each
 * event's text, and an entry the events no longer explain) is built again
 * in the contentless form: the copy is gone, the stale entry too, and the
 * events are found. */
static void text_index_of_the_first_format_is_rebuilt_contentless(void **state) {
  (void)state;
  commit_records(3, "old", "durable words");
  close_store();

  remove_text_index();
  char path[128];
  snprintf(path, sizeof path, "%s/analytics-text.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(sqlite3_exec(conn,
                                "CREATE VIRTUAL TABLE events_fts USING fts5(search_text);"
                                "CREATE TABLE progress (id INTEGER PRIMARY KEY CHECK (id = 1),"
                                "  indexed_seq INTEGER NOT NULL);"
                                "INSERT INTO progress VALUES (1, 3);"
                                "INSERT INTO events_fts (rowid, search_text) VALUES"
                                "  (1, 'durable words'), (2, 'durable words'), (3, 'stale');",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(conn);
  assert_int_equal(text_index_entries("stale"), 1);

  open_store();
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "durable"}).n,
                   3);
  assert_int_equal(text_index_entries("stale"), 0);
  assert_int_equal(text_index_entries("durable"), 3);
  assert_int_equal(sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(
      query_int(conn, "SELECT count(*) FROM sqlite_master WHERE name = 'events_fts_content'"), 0);
  sqlite3_close(conn);
}

/* An index that cannot catch up (here: another process holds its write
 * lock) makes a free-text search fail after its wait (SEARCH_INDEX_WAIT,
 * here 300 ms) with UNAVAILABLE, saying how far the index is, rather than
 * answer without the newest events or hang; searches without free text
 * still answer. */
static void free_text_search_says_when_the_index_lags(void **state) {
  (void)state;
  roles.search_wait_ms = 300;
  struct ana_event_record r = record("acct-1", "late", "sent", NOW, "{}", "laggard");
  char path[128];
  snprintf(path, sizeof path, "%s/analytics-text.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(sqlite3_exec(conn, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  struct ana_commit_request req;
  assert_int_equal(submit(&r, 1, &req), 0);
  wait_done(1);
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1"}).n, 1);
  struct ana_event_query q = {.account_id = "acct-1",
                              .text = "laggard",
                              .limit = 10,
                              .from_ms = INT64_MIN,
                              .to_ms = INT64_MAX};
  struct hits h = {0};
  struct ana_error err;
  ana_error_clear(&err);
  int64_t t0 = ana_clock_mono_ms();
  assert_true(ana_store_search(&roles, &q, collect, &h, &err) < 0);
  /* It waited for the index as long as configured, not less. */
  assert_true(ana_clock_mono_ms() - t0 >= 290);
  assert_int_equal(err.code, ANA_STATUS_UNAVAILABLE);
  assert_non_null(strstr(err.message, "search index is still catching up"));
  sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(conn);
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "laggard"}).n,
                   1);
}

/* A free-text search waits for the index to reach the last sequence
 * committed, kept in memory from the start: the highest one stored, not the
 * last one ever given. Retention took the newest event (an old timestamp
 * committed last) and the index was lost: built again, it reaches only the
 * highest event left, and a search must answer at once rather than wait
 * for an event that is gone (SEARCH_INDEX_WAIT, here 300 ms, then
 * UNAVAILABLE). */
static void rebuilt_index_is_searched_after_retention_took_the_newest_event(void **state) {
  (void)state;
  struct ana_event_record r[2] = {
      record("acct-1", "new", "sent", NOW, "{}", "recent"),
      record("acct-1", "old", "sent", NOW - 100 * DAY, "{}", "ancient"),
  };
  struct ana_commit_request req;
  assert_int_equal(submit(r, 2, &req), 0);
  wait_done(1);
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "ancient"}).n,
                   1);
  ana_committer_destroy(committer);
  committer = NULL;
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_store_expire(&roles, NOW - 90 * DAY, 1000, &err), 1);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  uint64_t last = 0;
  assert_int_equal(ana_local_spool_last_seq(db, &last, &err), 0);
  assert_int_equal(last, 2); /* the last committed, though deleted since */
  close_store();

  remove_text_index();
  open_store();
  assert_int_equal(ana_local_spool_last_seq(db, &last, &err), 0);
  assert_int_equal(last, 1);
  roles.search_wait_ms = 300;
  struct ana_event_query q = {.account_id = "acct-1",
                              .text = "recent",
                              .limit = 10,
                              .from_ms = INT64_MIN,
                              .to_ms = INT64_MAX};
  struct hits h = {0};
  ana_error_clear(&err);
  int64_t t0 = ana_clock_mono_ms();
  assert_int_equal(ana_store_search(&roles, &q, collect, &h, &err), 0);
  assert_true(ana_clock_mono_ms() - t0 < 250);
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "new");
}

/* Searches keep their statements prepared on each reader (a few dozen, the
 * least recently used ones finalized): more shapes of query than that, one
 * after the other on the same reader, each twice, all answer right. */
static void searches_of_more_shapes_than_kept_statements_answer_right(void **state) {
  (void)state;
  enum { KEYS = 16 };
  char props[KEYS * 16 + 4];
  size_t len = 0;
  props[len++] = '{';
  for (int k = 0; k < KEYS; k++)
    len += (size_t)snprintf(props + len, sizeof props - len, "%s\"p%d\":\"v\"", k ? "," : "", k);
  snprintf(props + len, sizeof props - len, "}");
  struct ana_event_record r[3] = {
      record("acct-1", "a", "sent", NOW - 3, props, "shape words"),
      record("acct-1", "b", "read", NOW - 2, props, "shape words"),
      record("acct-1", "c", "sent", NOW - 1, "{}", "shape"),
  };
  struct ana_commit_request req;
  assert_int_equal(submit(r, 3, &req), 0);
  wait_done(1);
  const char *keys[KEYS], *values[KEYS];
  char names[KEYS][8];
  for (int k = 0; k < KEYS; k++) {
    snprintf(names[k], sizeof names[k], "p%d", k);
    keys[k] = names[k];
    values[k] = "v";
  }
  for (int round = 0; round < 2; round++) {
    for (int n = 0; n <= KEYS; n++) {
      for (int shape = 0; shape < 4; shape++) {
        struct ana_event_query q = {.account_id = "acct-1",
                                    .property_keys = keys,
                                    .property_values = values,
                                    .n_properties = (size_t)n,
                                    .text = shape & 1 ? "shape" : NULL,
                                    .event_name = shape & 2 ? "sent" : NULL};
        struct hits h = search(q);
        int want = n ? 2 : 3;
        if (shape & 2)
          want--;
        assert_int_equal(h.n, want);
        assert_string_equal(h.ids[h.n - 1], "a");
      }
    }
  }
}

/* Out-of-order events for the next test: ids o000..., over 40 days, a few
 * sharing a timestamp (the cursor's tie-break is the id). */
#define OOO_N 300
static char ooo_ids[OOO_N][16];
static int64_t ooo_ts[OOO_N];

static int ooo_newest_first(const void *a, const void *b) {
  int i = *(const int *)a, j = *(const int *)b;
  if (ooo_ts[i] != ooo_ts[j])
    return ooo_ts[i] < ooo_ts[j] ? 1 : -1;
  return -strcmp(ooo_ids[i], ooo_ids[j]);
}

/* Pages (limit 37) through the account's events from..to, newest first, by
 * cursor; checks them against the expected order of those with keep(i). */
static void check_pages(int64_t from, int64_t to, const char *name, bool (*keep)(int i)) {
  int order[OOO_N], n = 0;
  for (int i = 0; i < OOO_N; i++)
    if (ooo_ts[i] >= from && ooo_ts[i] < to && (!name || (i % 3 == 0) == !strcmp(name, "read")) &&
        (!keep || keep(i)))
      order[n++] = i;
  qsort(order, (size_t)n, sizeof order[0], ooo_newest_first);
  struct ana_event_query q = {
      .account_id = "acct-1", .from_ms = from, .to_ms = to, .event_name = name, .limit = 37};
  char cursor_id[160];
  int seen = 0;
  for (;;) {
    struct hits h = search(q);
    for (int k = 0; k < h.n; k++, seen++) {
      assert_true(seen < n);
      assert_string_equal(h.ids[k], ooo_ids[order[seen]]);
      assert_int_equal(h.ts[k], ooo_ts[order[seen]]);
    }
    if (h.n < 37)
      break;
    snprintf(cursor_id, sizeof cursor_id, "%s", h.ids[h.n - 1]);
    q.after_cursor = true;
    q.cursor_ts = h.ts[h.n - 1];
    q.cursor_event_id = cursor_id;
  }
  assert_int_equal(seen, n);
}

static int64_t ooo_cutoff;
static bool ooo_kept(int i) {
  return ooo_ts[i] / DAY >= ooo_cutoff / DAY;
}

/* Events committed in random time order over 40 days, as an import of
 * history: every page newest first by cursor has the right events in the
 * right order (across days, with equal timestamps, with a name filter and a
 * time range); retention then deletes exactly the days before the cutoff's
 * and the pages stay right. */
static void retention_and_cursors_on_out_of_order_events(void **state) {
  (void)state;
  static struct ana_event_record r[OOO_N];
  unsigned seed = 21;
  for (int i = 0; i < OOO_N; i++) {
    snprintf(ooo_ids[i], sizeof ooo_ids[i], "o%03d", (i * 7919) % OOO_N);
    ooo_ts[i] = i % 10 == 9 ? ooo_ts[i - 1]
                            : NOW - (int64_t)(rand_r(&seed) % 40) * DAY -
                                  (int64_t)(rand_r(&seed) % (unsigned)DAY);
    r[i] = record("acct-1", ooo_ids[i], i % 3 == 0 ? "read" : "sent", ooo_ts[i], "{}", "ooo");
  }
  struct ana_commit_request req[OOO_N / 50];
  for (int b = 0; b < OOO_N / 50; b++)
    assert_int_equal(submit(&r[b * 50], 50, &req[b]), 0);
  wait_done(OOO_N / 50);
  check_pages(INT64_MIN, INT64_MAX, NULL, NULL);
  check_pages(NOW - 10 * DAY, NOW - 3 * DAY, NULL, NULL);
  check_pages(INT64_MIN, INT64_MAX, "read", NULL);
  /* Wait until the free-text index has them all (retention takes only
   * indexed events), then one retention step by hand. */
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "ooo"}).n, 64);
  ana_committer_destroy(committer);
  committer = NULL;
  ooo_cutoff = NOW - 20 * DAY - DAY / 2;
  int expired = 0;
  for (int i = 0; i < OOO_N; i++)
    expired += !ooo_kept(i);
  assert_true(expired > 50 && expired < OOO_N - 50);
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_store_expire(&roles, ooo_cutoff, 1000, &err), expired);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  check_pages(INT64_MIN, INT64_MAX, NULL, ooo_kept);
  check_pages(INT64_MIN, INT64_MAX, "read", ooo_kept);
  /* A new database gives the freed pages back to the file system. */
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "PRAGMA auto_vacuum"), 2);
  assert_true(query_int(w, "PRAGMA freelist_count") > 0);
  assert_true(ana_local_db_reclaim(db, 4096, &err) > 0);
  assert_int_equal(query_int(w, "PRAGMA freelist_count"), 0);
  struct ana_committer_options o = {.batch_size = 1000,
                                    .queue_max = 1000,
                                    .retention_days = 90,
                                    .retention_sweep_interval_ms = 3600000};
  committer = ana_committer_create(db, &roles, &o, &err);
}

static void check_time_runs(sqlite3 *w);

/* The time index's runs against a brute-force answer: events of two
 * accounts at random times over 4 days (some sharing a timestamp, some ids
 * UUIDs stored as 16 bytes, which sort after text ids), moved in many
 * small moves so that each hour gets many runs, merged inline and in the
 * mover's idle time; every search (filters, time ranges, pages by cursor)
 * and every scan gives exactly the events and order the brute force does,
 * before and after retention deleted the first days. */
#define TR_N 3000
struct tr_event {
  char id[40];
  int64_t ts;
  int acct, name, sess, prop;
  bool packed, alive;
};
static struct tr_event tr_ev[TR_N];
static const char *const tr_names[] = {"open", "sent", "read", "click"};
static const char *const tr_accts[] = {"acct-1", "acct-2"};
static const char *const tr_sessions[] = {"s1", "s2"};
static const char *const tr_props[] = {"{\"k\":\"v0\"}", "{\"k\":\"v1\"}", "{\"k\":\"v2\"}"};

/* (ts, event id) ascending as SQLite orders the stored ids. */
static int tr_asc(const void *a, const void *b) {
  const struct tr_event *x = &tr_ev[*(const int *)a], *y = &tr_ev[*(const int *)b];
  if (x->ts != y->ts)
    return x->ts < y->ts ? -1 : 1;
  if (x->packed != y->packed)
    return x->packed ? 1 : -1;
  return strcmp(x->id, y->id);
}

static int tr_desc(const void *a, const void *b) {
  return tr_asc(b, a);
}

struct tr_filter {
  int acct;
  int64_t from, to;
  int name, sess, prop; /* -1: any */
};

static int tr_want(const struct tr_filter *f, int *out, bool newest_first) {
  int n = 0;
  for (int i = 0; i < TR_N; i++) {
    const struct tr_event *e = &tr_ev[i];
    if (e->alive && e->acct == f->acct && e->ts >= f->from && e->ts < f->to &&
        (f->name < 0 || e->name == f->name) && (f->sess < 0 || e->sess == f->sess) &&
        (f->prop < 0 || e->prop == f->prop))
      out[n++] = i;
  }
  qsort(out, (size_t)n, sizeof *out, newest_first ? tr_desc : tr_asc);
  return n;
}

struct tr_hits {
  int n;
  char ids[TR_N][40];
  int64_t ts[TR_N];
};

static int tr_hit(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                  uint64_t seq) {
  (void)payload;
  (void)len;
  (void)seq;
  struct tr_hits *h = ctx;
  assert_true(h->n < TR_N);
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", id);
  h->ts[h->n++] = ts;
  return 0;
}

static int tr_scanned(void *ctx, const struct ana_scanned_event *ev) {
  struct tr_hits *h = ctx;
  assert_true(h->n < TR_N);
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", ev->event_id);
  h->ts[h->n++] = ev->timestamp_ms;
  return 0;
}

static void tr_check_search(const struct tr_filter *f, int limit) {
  static int want[TR_N];
  static struct tr_hits page;
  int n = tr_want(f, want, true);
  const char *key = "k", *value = f->prop >= 0 ? (f->prop == 0   ? "v0"
                                                  : f->prop == 1 ? "v1"
                                                                 : "v2")
                                               : NULL;
  struct ana_event_query q = {.account_id = tr_accts[f->acct],
                              .from_ms = f->from,
                              .to_ms = f->to,
                              .event_name = f->name >= 0 ? tr_names[f->name] : NULL,
                              .session_id = f->sess >= 0 ? tr_sessions[f->sess] : NULL,
                              .property_keys = &key,
                              .property_values = &value,
                              .n_properties = f->prop >= 0,
                              .limit = limit};
  char cursor_id[40];
  int seen = 0;
  struct ana_error err;
  for (;;) {
    page.n = 0;
    assert_int_equal(ana_store_search(&roles, &q, tr_hit, &page, &err), 0);
    for (int i = 0; i < page.n; i++, seen++) {
      assert_true(seen < n);
      assert_string_equal(page.ids[i], tr_ev[want[seen]].id);
      assert_int_equal(page.ts[i], tr_ev[want[seen]].ts);
    }
    if (page.n < limit)
      break;
    snprintf(cursor_id, sizeof cursor_id, "%s", page.ids[page.n - 1]);
    q.after_cursor = true;
    q.cursor_ts = page.ts[page.n - 1];
    q.cursor_event_id = cursor_id;
  }
  assert_int_equal(seen, n);
}

static void tr_check_scan(const struct tr_filter *filter) {
  static int want[TR_N];
  static struct tr_hits got;
  /* A scan filters by account, time and names only. */
  struct tr_filter only = *filter, *f = &only;
  only.sess = only.prop = -1;
  int n = tr_want(f, want, false);
  const char *names[1] = {f->name >= 0 ? tr_names[f->name] : NULL};
  struct ana_error err;
  got.n = 0;
  assert_int_equal(ops->scan(store, tr_accts[f->acct], f->from, f->to, names, f->name >= 0,
                             tr_scanned, &got, &err),
                   0);
  assert_int_equal(got.n, n);
  for (int i = 0; i < n; i++) {
    assert_string_equal(got.ids[i], tr_ev[want[i]].id);
    assert_int_equal(got.ts[i], tr_ev[want[i]].ts);
  }
}

static void tr_check_all(void) {
  int64_t start = NOW - 4 * DAY;
  for (int acct = 0; acct < 2; acct++) {
    struct tr_filter all = {acct, INT64_MIN, INT64_MAX, -1, -1, -1};
    tr_check_search(&all, 17);
    tr_check_search(&all, 500);
    tr_check_scan(&all);
    for (int k = 0; k < 6; k++) {
      /* Ranges that start and end inside hours and days. */
      int64_t from = start + k * (DAY / 2) + 1234567, to = from + DAY + k * 3599999;
      struct tr_filter f = {acct, from, to, k % 5 - 1, k % 3 - 1, k == 4 ? 1 : -1};
      tr_check_search(&f, 13);
      tr_check_scan(&f);
      f.name = -1;
      tr_check_scan(&f);
    }
  }
}

/* The events of the time index's tests, into r (none alive yet). */
static void tr_generate(struct ana_event_record *r) {
  unsigned seed = 7;
  for (int i = 0; i < TR_N; i++) {
    struct tr_event *e = &tr_ev[i];
    e->acct = i % 4 == 3;
    e->name = (int)(rand_r(&seed) % 4);
    e->sess = (int)(rand_r(&seed) % 2);
    e->prop = (int)(rand_r(&seed) % 3);
    e->packed = i % 5 == 0;
    if (e->packed)
      snprintf(e->id, sizeof e->id, "%08x-0000-4000-8000-%012x", (unsigned)rand_r(&seed), i);
    else
      snprintf(e->id, sizeof e->id, "t%05d", (i * 7919) % TR_N);
    /* acct-2's events are half in time order, as events tracked live (each
     * move's run of an hour disjoint in time from the others) */
    e->ts = i % 8 == 7 ? tr_ev[i - 1].ts
            : e->acct  ? NOW - 4 * DAY + (int64_t)i * 10000
                       : NOW - (int64_t)(rand_r(&seed) % 4) * DAY -
                            (int64_t)(rand_r(&seed) % (unsigned)DAY);
    e->alive = false; /* until committed */
    r[i] = record(tr_accts[e->acct], e->id, tr_names[e->name], e->ts, tr_props[e->prop], "tr");
    r[i].session_id = tr_sessions[e->sess];
  }
}

static void time_runs_answer_as_a_brute_force(void **state) {
  (void)state;
  static struct ana_event_record r[TR_N];
  tr_generate(r);
  /* One move per batch: each hour gets a run per batch. */
  struct ana_commit_request req;
  struct ana_error err;
  for (int b = 0; b < TR_N / 50; b++) {
    assert_int_equal(submit(&r[b * 50], 50, &req), 0);
    wait_done(b + 1);
    assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
    for (int i = b * 50; i < b * 50 + 50; i++)
      tr_ev[i].alive = true;
    if (b % 20 == 10)
      tr_check_all();
  }
  tr_check_all();
  sqlite3 *w = ana_local_db_writer(db);
  check_time_runs(w);
  /* Merged: an hour holds a few runs, not one per move (the last moves'
   * merges are the idle mover's, a moment later). */
  assert_true(query_int(w, "SELECT max(c) FROM (SELECT count(*) AS c FROM event_time_runs"
                           "  GROUP BY account_id, hour)") <= 8);
  int hours = query_int(w, "SELECT count(DISTINCT account_id * 1000000 + ts / 3600000)"
                           "  FROM events");
  for (int tries = 0;
       tries < 200 && query_int(w, "SELECT count(*) FROM event_time_runs") >= hours * 3; tries++)
    usleep(10000);
  assert_true(query_int(w, "SELECT count(*) FROM event_time_runs") < hours * 3);
  /* Retention of the days before the cutoff's (once the free-text index
   * has every event). */
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1", .text = "tr"}).n, 64);
  ana_committer_destroy(committer);
  committer = NULL;
  int64_t cutoff = NOW - 2 * DAY - DAY / 3;
  int expired = 0;
  for (int i = 0; i < TR_N; i++) {
    tr_ev[i].alive = tr_ev[i].ts / DAY >= cutoff / DAY;
    expired += !tr_ev[i].alive;
  }
  assert_true(expired > 200);
  /* In two steps: the first leaves a day partly deleted (its runs stay,
   * their deleted entries skipped). */
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_store_expire(&roles, cutoff, expired / 2 + 17, &err), expired / 2 + 17);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  for (int i = 0; i < TR_N; i++)
    tr_ev[i].alive = true;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(w, "SELECT 1 FROM events WHERE key = ?", -1, &st, NULL),
                   SQLITE_OK);
  for (int i = 0; i < TR_N; i++) {
    /* Which are gone: their keys (seq i + 1: one commit sequence, in order). */
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, ana_event_key(tr_ev[i].ts, (uint64_t)i + 1));
    tr_ev[i].alive = sqlite3_step(st) == SQLITE_ROW;
  }
  sqlite3_finalize(st);
  tr_check_all();
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_store_expire(&roles, cutoff, TR_N, &err), expired - (expired / 2 + 17));
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  for (int i = 0; i < TR_N; i++)
    tr_ev[i].alive = tr_ev[i].ts / DAY >= cutoff / DAY;
  tr_check_all();
  /* The emptied days' runs are gone with them. */
  char sql[160];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM event_time_runs WHERE hour < %lld",
           (long long)(cutoff / DAY * 24));
  assert_int_equal(query_int(w, sql), 0);
  check_time_runs(w);
  struct ana_committer_options o = {.batch_size = 1000,
                                    .queue_max = 1000,
                                    .retention_days = 90,
                                    .retention_sweep_interval_ms = 3600000};
  committer = ana_committer_create(db, &roles, &o, &err);
}

/* A store of the previous layout (the index events_by_time_name, no runs;
 * here with a table of runs left half built by a crash) is migrated on
 * start: one run per (account, hour) built from the rows, the index
 * dropped, searches and scans as before; new moves add runs to it. */
static void store_of_the_time_index_is_migrated_on_start(void **state) {
  (void)state;
  static struct ana_event_record r[TR_N];
  tr_generate(r);
  struct ana_commit_request req;
  struct ana_error err;
  for (int b = 0; b < TR_N / 100; b++) {
    assert_int_equal(submit(&r[b * 50], 50, &req), 0);
    wait_done(b + 1);
    for (int i = b * 50; i < b * 50 + 50; i++)
      tr_ev[i].alive = true;
  }
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  close_store();
  char path[128], sql[512];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  snprintf(sql, sizeof sql,
           "DELETE FROM event_time_runs WHERE hour %% 2 = 0;"
           "CREATE INDEX events_by_time_name ON events(account_id, ts, event_name);"
           "DELETE FROM schema_migrations WHERE version >= %d",
           ana_local_db_migration_containing("ana_time_runs_from_events"));
  assert_int_equal(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(conn);
  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  sqlite3 *w = ana_local_db_writer(db);
  check_time_runs(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_time_runs WHERE run != 1"), 0);
  tr_check_all();
  /* Moves after the migration add runs beside the migrated ones. */
  struct ana_committer_options o = {.batch_size = 1000,
                                    .queue_max = 100000,
                                    .retention_days = 90,
                                    .retention_sweep_interval_ms = 3600000};
  committer = ana_committer_create(db, &roles, &o, &err);
  assert_non_null(committer);
  pthread_mutex_lock(&mu);
  int before = done_count;
  pthread_mutex_unlock(&mu);
  for (int b = TR_N / 100; b < TR_N / 50; b++) {
    assert_int_equal(submit(&r[b * 50], 50, &req), 0);
    wait_done(before + b - TR_N / 100 + 1);
    for (int i = b * 50; i < b * 50 + 50; i++)
      tr_ev[i].alive = true;
  }
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  check_time_runs(w);
  tr_check_all();
}

/* Readers by commit sequence over events moved at random times over 40
 * days, with no index on seq: each day's range of the table is read by a
 * seek (event_days), rows in seq order, paged, an account's alone, before
 * and after retention emptied some days. */
#define BYSEQ_N 600
static char byseq_ids[BYSEQ_N][16];

struct seq_list {
  int n;
  uint64_t seq[BYSEQ_N];
};

static int spooled_seq(void *ctx, const struct ana_spooled_event *ev, struct ana_error *err) {
  (void)err;
  struct seq_list *l = ctx;
  assert_true(l->n < BYSEQ_N);
  l->seq[l->n++] = ev->seq;
  return 0;
}

static int scanned_seq(void *ctx, const struct ana_scanned_event *ev) {
  struct seq_list *l = ctx;
  assert_true(l->n < BYSEQ_N);
  assert_string_equal(ev->event_id, byseq_ids[(ev->seq - 1) % BYSEQ_N]);
  l->seq[l->n++] = ev->seq;
  return 0;
}

/* The seqs of sql (one column), in its order. */
static void sql_seqs(sqlite3 *c, const char *sql, struct seq_list *out) {
  sqlite3_stmt *st = NULL;
  out->n = 0;
  assert_int_equal(sqlite3_prepare_v2(c, sql, -1, &st, NULL), SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW)
    out->seq[out->n++] = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
}

static void assert_same_seqs(const struct seq_list *got, const struct seq_list *want) {
  assert_int_equal(got->n, want->n);
  for (int i = 0; i < want->n; i++)
    assert_int_equal(got->seq[i], want->seq[i]);
}

static void check_event_days(sqlite3 *w);

/* Every reader by seq gives what the table holds, in seq order. */
static void check_reads_by_seq(sqlite3 *w) {
  struct ana_error err;
  struct seq_list want, got;
  sql_seqs(w, "SELECT seq FROM events ORDER BY seq", &want);
  /* The spool, 7 at a time (a page ends wherever). */
  got.n = 0;
  uint64_t after = 0;
  int n;
  while ((n = ana_local_spool_each(db, after, 7, spooled_seq, &got, &err)) > 0)
    after = got.seq[got.n - 1];
  assert_int_equal(n, 0);
  assert_same_seqs(&got, &want);
  /* One account's, whole and from the middle. */
  sql_seqs(w,
           "SELECT seq FROM events WHERE account_id = (SELECT id FROM dedupe_accounts"
           "  WHERE account_id = 'acct-2') ORDER BY seq",
           &want);
  got.n = 0;
  assert_int_equal(
      roles.events->scan_seq(roles.event_store, "acct-2", 0, UINT64_MAX, scanned_seq, &got, &err),
      0);
  assert_same_seqs(&got, &want);
  sql_seqs(w,
           "SELECT seq FROM events WHERE account_id = (SELECT id FROM dedupe_accounts"
           "  WHERE account_id = 'acct-2') AND seq > 150 AND seq <= 420 ORDER BY seq",
           &want);
  got.n = 0;
  assert_int_equal(
      roles.events->scan_seq(roles.event_store, "acct-2", 150, 420, scanned_seq, &got, &err), 0);
  assert_same_seqs(&got, &want);
  check_event_days(w);
}

/* event_days bounds each day's seqs exactly (as the mover, the retention
 * and the migration keep it), one row per day that holds events; no index
 * of events holds seq. */
static void check_event_days(sqlite3 *w) {
  assert_int_equal(query_int(w, "SELECT count(*) FROM pragma_index_list('events') l,"
                                "  pragma_index_info(l.name) i WHERE i.name = 'seq'"),
                   0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_days"),
                   query_int(w, "SELECT count(DISTINCT key >> 40) FROM events"));
  assert_int_equal(
      query_int(w, "SELECT count(*) FROM event_days d WHERE"
                   "  min_seq > (SELECT min(seq) FROM events WHERE key >> 40 = d.day)"
                   "  OR max_seq != (SELECT max(seq) FROM events WHERE key >> 40 = d.day)"),
      0);
}

/* The time index's runs hold as many entries per (account, hour) as the
 * events table holds events (none deleted by retention meanwhile), and no
 * index of events is left on ts. */
static void check_time_runs(sqlite3 *w) {
  assert_int_equal(
      query_int(w, "SELECT count(*) FROM (SELECT account_id, ts / 3600000 AS h, count(*) AS c"
                   "  FROM events GROUP BY 1, 2) e LEFT JOIN (SELECT account_id, hour,"
                   "  sum(n) AS s FROM event_time_runs GROUP BY 1, 2) r"
                   "  ON r.account_id = e.account_id AND r.hour = e.h WHERE r.s IS NOT e.c"),
      0);
  assert_int_equal(query_int(w, "SELECT coalesce(sum(n), 0) FROM event_time_runs"),
                   query_int(w, "SELECT count(*) FROM events"));
  assert_int_equal(query_int(w, "SELECT count(*) FROM pragma_index_list('events')"), 0);
}

/* A free-text search of the last 5 days finds each of their events. */
static void check_recent_text_matches(sqlite3 *w) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM events WHERE ts >= %lld AND account_id = (SELECT id FROM"
           "  dedupe_accounts WHERE account_id = 'acct-1')",
           (long long)(NOW - 5 * DAY));
  int64_t want = query_int(w, sql);
  assert_true(want > 5 && want < 64);
  assert_int_equal(search((struct ana_event_query){.account_id = "acct-1",
                                                   .text = "byseq",
                                                   .from_ms = NOW - 5 * DAY,
                                                   .to_ms = INT64_MAX})
                       .n,
                   want);
}

static void events_are_read_by_seq_without_an_index_on_it(void **state) {
  (void)state;
  static struct ana_event_record r[BYSEQ_N];
  unsigned seed = 2121;
  for (int i = 0; i < BYSEQ_N; i++) {
    snprintf(byseq_ids[i], sizeof byseq_ids[i], "q%03d", i);
    int64_t ts =
        NOW - (int64_t)(rand_r(&seed) % 40) * DAY - (int64_t)(rand_r(&seed) % (unsigned)DAY);
    r[i] = record(i % 3 ? "acct-2" : "acct-1", byseq_ids[i], "sent", ts, "{}", "byseq");
  }
  struct ana_commit_request req[BYSEQ_N / 60];
  for (int b = 0; b < BYSEQ_N / 60; b++)
    assert_int_equal(submit(&r[b * 60], 60, &req[b]), 0);
  wait_done(BYSEQ_N / 60);
  struct ana_error err;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), BYSEQ_N);
  check_reads_by_seq(w);
  /* The free text finds them (its entries name the rows' keys). */
  check_recent_text_matches(w);
  /* Retention empties the oldest days: their rows of event_days go too. */
  ana_committer_destroy(committer);
  committer = NULL;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  int expired = ana_store_expire(&roles, NOW - 20 * DAY, 1000, &err);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  assert_true(expired > 100 && expired < BYSEQ_N - 100);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), BYSEQ_N - expired);
  check_reads_by_seq(w);
  check_recent_text_matches(w);
  struct ana_committer_options o = {.batch_size = 1000,
                                    .queue_max = 1000,
                                    .retention_days = 90,
                                    .retention_sweep_interval_ms = 3600000};
  committer = ana_committer_create(db, &roles, &o, &err);
}

/* Events of two accounts and five names at random times over 40 days,
 * a few sharing a timestamp, for the next test. */
#define BYNAME_N 600
static const char *const byname_names[] = {"open", "sent", "read", "click", "bounce"};
static char byname_ids[BYNAME_N][16];

struct all_hits {
  int n;
  char ids[BYNAME_N][16];
  char names[BYNAME_N][8];
  int64_t ts[BYNAME_N];
  uint64_t seq[BYNAME_N];
};

static int collect_all(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                       uint64_t seq) {
  (void)payload;
  (void)len;
  struct all_hits *h = ctx;
  assert_true(h->n < BYNAME_N);
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", id);
  h->ts[h->n] = ts;
  h->seq[h->n++] = seq;
  return 0;
}

static int scan_all(void *ctx, const struct ana_scanned_event *ev) {
  struct all_hits *h = ctx;
  assert_true(h->n < BYNAME_N);
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", ev->event_id);
  snprintf(h->names[h->n], sizeof h->names[0], "%s", ev->event_name);
  h->ts[h->n] = ev->timestamp_ms;
  h->seq[h->n++] = ev->seq;
  return 0;
}

static int by_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static bool name_in(const char *name, const char *const *names, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(name, names[i]) == 0)
      return true;
  return false;
}

/* The scan of names (checked on the time index's entries) finds the same events as the scan of
 * every name filtered here, once each. */
static void check_scan_by_names(int64_t from, int64_t to, const char *const *names, size_t n) {
  static struct all_hits all, some;
  struct ana_error err;
  all.n = some.n = 0;
  assert_int_equal(ops->scan(store, "acct-1", from, to, NULL, 0, scan_all, &all, &err), 0);
  assert_int_equal(ops->scan(store, "acct-1", from, to, names, n, scan_all, &some, &err), 0);
  uint64_t want[BYNAME_N];
  int k = 0;
  for (int i = 0; i < all.n; i++)
    if (name_in(all.names[i], names, n))
      want[k++] = all.seq[i];
  for (int i = 0; i < some.n; i++) {
    assert_true(name_in(some.names[i], names, n));
    assert_true(some.ts[i] >= from && some.ts[i] < to);
  }
  assert_int_equal(some.n, k);
  qsort(want, (size_t)k, sizeof want[0], by_u64);
  qsort(some.seq, (size_t)some.n, sizeof some.seq[0], by_u64);
  for (int i = 0; i < k; i++)
    assert_int_equal(some.seq[i], want[i]);
}

/* A search with a name, page by page (limit 23) by cursor, gives the
 * search without a name filtered here, in the same order. */
static void check_search_by_name(int64_t from, int64_t to, const char *name) {
  static struct all_hits all, page;
  struct ana_error err;
  all.n = 0;
  struct ana_event_query q = {.account_id = "acct-1", .from_ms = from, .to_ms = to, .limit = -1};
  assert_int_equal(ana_store_search(&roles, &q, collect_all, &all, &err), 0);
  int want[BYNAME_N], k = 0;
  for (int i = 0; i < all.n; i++) {
    int e = atoi(all.ids[i] + 1);
    if (strcmp(byname_names[e % 5], name) == 0)
      want[k++] = i;
  }
  q.event_name = name;
  q.limit = 23;
  char cursor_id[16];
  int seen = 0;
  for (;;) {
    page.n = 0;
    assert_int_equal(ana_store_search(&roles, &q, collect_all, &page, &err), 0);
    for (int i = 0; i < page.n; i++, seen++) {
      assert_true(seen < k);
      assert_string_equal(page.ids[i], all.ids[want[seen]]);
      assert_int_equal(page.ts[i], all.ts[want[seen]]);
    }
    if (page.n < 23)
      break;
    snprintf(cursor_id, sizeof cursor_id, "%s", page.ids[page.n - 1]);
    q.after_cursor = true;
    q.cursor_ts = page.ts[page.n - 1];
    q.cursor_event_id = cursor_id;
  }
  assert_int_equal(seen, k);
}

/* Searches and scans by event name check the name on the time index's
 * entries; each gives what the unfiltered one gives, filtered by name. */
static void searches_and_scans_by_name_match_unfiltered_ones(void **state) {
  (void)state;
  static struct ana_event_record r[BYNAME_N];
  unsigned seed = 7;
  int64_t ts = 0;
  for (int i = 0; i < BYNAME_N; i++) {
    snprintf(byname_ids[i], sizeof byname_ids[i], "e%d", i);
    if (i % 7 != 6)
      ts = NOW - (int64_t)(rand_r(&seed) % 40) * DAY - (int64_t)(rand_r(&seed) % (unsigned)DAY);
    r[i] = record(i % 11 == 10 ? "acct-2" : "acct-1", byname_ids[i], byname_names[i % 5], ts, "{}",
                  "byname");
  }
  struct ana_commit_request req[BYNAME_N / 50];
  for (int b = 0; b < BYNAME_N / 50; b++)
    assert_int_equal(submit(&r[b * 50], 50, &req[b]), 0);
  wait_done(BYNAME_N / 50);
  const int64_t ranges[][2] = {{INT64_MIN, INT64_MAX},
                               {NOW - 10 * DAY, NOW - 3 * DAY},
                               {NOW - 5 * DAY - DAY / 3, NOW - 5 * DAY + DAY / 5}};
  const char *const one[] = {"read"}, *const two[] = {"click", "open", "click"},
                    *const none[] = {"nothing"}, *const many[] = {"a", "b", "c", "d", "e",   "f",
                                                                  "g", "h", "i", "j", "k",   "l",
                                                                  "m", "n", "o", "p", "sent"};
  for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
    check_scan_by_names(ranges[i][0], ranges[i][1], one, 1);
    check_scan_by_names(ranges[i][0], ranges[i][1], two, 3);
    check_scan_by_names(ranges[i][0], ranges[i][1], none, 1);
    check_scan_by_names(ranges[i][0], ranges[i][1], many, 17);
    for (int n = 0; n < 5; n++)
      check_search_by_name(ranges[i][0], ranges[i][1], byname_names[n]);
  }
}
/* SQL that turns this build's deduplication keys (runs) back into the
 * table of schema 24 (one row per key, its day), on a connection with
 * ana_dedupe_register. */
#define DEDUPE_KEYS_OF_SCHEMA_24                                                                   \
  "CREATE TABLE dedupe_keys (account INTEGER NOT NULL, event_id BLOB NOT NULL,"                    \
  "  expires INTEGER NOT NULL, PRIMARY KEY (account, event_id)) WITHOUT ROWID;"                    \
  "SELECT ana_dedupe_dump('main.dedupe_keys');"                                                    \
  "DROP TABLE dedupe_meta; DROP TABLE dedupe_runs; DROP TABLE dedupe_chunks;"                      \
  "DROP TABLE dedupe_filters;"

/* SQL that turns this build's deduplication keys back into those of
 * schemas 1 to 12 (an expiry time per key, an index on it), every key
 * expiring in 2100. */
#define DEDUPE_KEYS_OF_SCHEMA_12                                                                   \
  DEDUPE_KEYS_OF_SCHEMA_24                                                                         \
  "CREATE TABLE old_keys (account_id TEXT NOT NULL, event_id TEXT NOT NULL,"                       \
  "  expires_at INTEGER NOT NULL, PRIMARY KEY (account_id, event_id)) WITHOUT ROWID;"              \
  "INSERT INTO old_keys SELECT a.account_id, ana_event_id(k.event_id), 4102444800000"              \
  "  FROM dedupe_keys k"                                                                           \
  "  JOIN dedupe_accounts a ON a.id = k.account;"                                                  \
  "DROP TABLE dedupe_keys; DROP TABLE IF EXISTS dedupe_expiry; DROP TABLE dedupe_accounts;"        \
  "ALTER TABLE old_keys RENAME TO dedupe_keys;"                                                    \
  "CREATE INDEX dedupe_keys_expiry ON dedupe_keys(expires_at);"

/* SQL that turns this build's events table back into the one of schemas 1
 * to 12 (rowid = seq, AUTOINCREMENT, an index per field, the free text and
 * the payload in their own columns), with what it holds, and forgets the
 * migrations from 13 on (run on a connection with ana_event_body_register). */
#define EVENTS_OF_SCHEMA_12                                                                        \
  "CREATE TABLE old_events (seq INTEGER PRIMARY KEY AUTOINCREMENT,"                                \
  "  account_id TEXT NOT NULL, event_id TEXT NOT NULL, session_id TEXT NOT NULL DEFAULT '',"       \
  "  event_type TEXT NOT NULL, event_name TEXT NOT NULL, ts INTEGER NOT NULL,"                     \
  "  received_at INTEGER NOT NULL, properties TEXT NOT NULL DEFAULT '{}',"                         \
  "  search_text TEXT NOT NULL DEFAULT '', payload BLOB NOT NULL);"                                \
  "INSERT INTO old_events SELECT seq, (SELECT a.account_id FROM dedupe_accounts a"                 \
  "  WHERE a.id = events.account_id), ana_event_id(event_id), session_id,"                         \
  "  (SELECT name FROM event_strings WHERE id = event_type),"                                      \
  "  (SELECT name FROM event_strings WHERE id = event_name),"                                      \
  "  ts, ts + received_delta, ana_event_props(body), ana_event_text(body),"                        \
  "  ana_event_payload(body, event_id, ts, ts + received_delta) FROM events ORDER BY seq;"         \
  "DROP TABLE events; DROP TABLE event_seq; DROP TABLE event_dicts; DROP TABLE event_strings;"     \
  "ALTER TABLE old_events RENAME TO events;"                                                       \
  "CREATE INDEX events_by_time ON events(account_id, ts, event_id);"                               \
  "CREATE INDEX events_by_name ON events(account_id, event_name, ts, event_id);"                   \
  "CREATE INDEX events_by_type ON events(account_id, event_type, ts, event_id);"                   \
  "CREATE INDEX events_by_session ON events(account_id, session_id, ts, event_id);"                \
  "CREATE INDEX events_expiry ON events(ts);" DEDUPE_KEYS_OF_SCHEMA_12                             \
  "DELETE FROM schema_migrations WHERE version >= 13;"

/* A store of schema 12 (events in seq order, an index per field) holding
 * events at random times, some of them deleted at the top of the sequence
 * (so that only sqlite_sequence knows the last number handed out): opened,
 * it is migrated, every event keeps its sequence number and is found by
 * time, by sequence and by search, and new events continue the sequence. */
static void old_format_store_is_migrated_on_start(void **state) {
  (void)state;
  struct ana_event_record r[6];
  char ids[6][16];
  for (int i = 0; i < 6; i++) {
    snprintf(ids[i], sizeof ids[i], "m%d", i);
    /* out of order: days 5, 0, 3, 1, 4, 2 ago */
    r[i] = record("acct-1", ids[i], i % 2 ? "sent" : "read", NOW - ((i * 5) % 6) * DAY - i, "{}",
                  "migrated words");
  }
  struct ana_commit_request req;
  assert_int_equal(submit(r, 6, &req), 0);
  wait_done(1);
  close_store();
  char path[128];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  fold_journal(conn);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(ana_event_body_register(conn), 0);
  assert_int_equal(sqlite3_exec(conn, EVENTS_OF_SCHEMA_12, NULL, NULL, NULL), SQLITE_OK);
  /* The newest event deleted: its number must not be handed out again. */
  assert_int_equal(sqlite3_exec(conn, "DELETE FROM events WHERE seq = 6", NULL, NULL, NULL),
                   SQLITE_OK);
  assert_int_equal(query_int(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'events'"), 6);
  sqlite3_close(conn);

  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 5);
  check_event_days(w);
  /* The text and payload are in the body now, the same bytes. */
  assert_int_equal(query_int(w, "SELECT count(*) FROM pragma_table_info('events')"
                                "  WHERE name IN ('search_text', 'payload')"),
                   0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ana_event_text(body) !="
                                "  'migrated words' OR ana_event_payload(body) != x'2a0178'"),
                   0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE key >> 40 != ts / 86400000"
                                "  OR key % 1099511627776 != seq"),
                   0);
  assert_int_equal(
      query_int(w, "SELECT count(*) FROM sqlite_schema WHERE name IN ('events_by_time',"
                   " 'events_by_name', 'events_by_type', 'events_by_session', 'events_expiry',"
                   " 'dedupe_keys_expiry', 'events_by_slot')"),
      0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM sqlite_schema WHERE name ="
                                "  'events_by_time_name'"),
                   0);
  check_time_runs(w);
  /* Newest first across the days, page by page. */
  struct hits h = search((struct ana_event_query){.account_id = "acct-1", .limit = 2});
  assert_int_equal(h.n, 2);
  assert_string_equal(h.ids[0], "m0");
  assert_string_equal(h.ids[1], "m4");
  h = search((struct ana_event_query){.account_id = "acct-1", .text = "migrated"});
  assert_int_equal(h.n, 5);
  /* The next event continues after the deleted number. */
  struct ana_event_record next = record("acct-1", "m6", "sent", NOW - 7 * DAY, "{}", "later");
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, &next, 1, &err), 0);
  assert_int_equal(ana_local_spool_append(db, &next, 1, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  assert_int_equal(next.seq, 7);
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0); /* moved into events */
  assert_int_equal(query_int(w, "SELECT seq FROM events WHERE event_id = 'm6'"), 7);
  uint64_t last = 0;
  assert_int_equal(ana_local_spool_last_seq(db, &last, &err), 0);
  assert_int_equal(last, 7);
}

struct body_check {
  int n, bad;
};

/* The free text of event d-<i>, as a campaign event's. */
static void body_text(char *buf, size_t size, int i) {
  snprintf(buf, size, "d-%d message_sent message campaign-%d group-%d email", i, i % 50, i % 20);
}

static int check_body(void *ctx, const struct ana_spooled_event *e, struct ana_error *err) {
  (void)err;
  struct body_check *c = ctx;
  char want[64];
  body_text(want, sizeof want, atoi(e->event_id + 2));
  c->bad += e->payload_len != 3 || memcmp(e->payload, "\x2a\x01x", 3) != 0 ||
            strcmp(e->search_text, want) != 0;
  c->n++;
  return 0;
}

/* Waits up to ms for n answers; false when they did not all come. */
static bool wait_done_for(int n, int ms) {
  struct timespec until = ana_clock_deadline(CLOCK_REALTIME, ms);
  pthread_mutex_lock(&mu);
  int rc = 0;
  while (done_count < n && rc == 0)
    rc = pthread_cond_timedwait(&cond, &mu, &until);
  bool all = done_count >= n;
  pthread_mutex_unlock(&mu);
  return all;
}

/* Events d-0 .. d-<n - 1> and the strings their records point to. */
struct bodies {
  struct ana_event_record *r;
  char (*ids)[16];
  char (*texts)[64];
};

static struct bodies bodies_alloc(int n) {
  struct bodies b = {calloc((size_t)n, sizeof *b.r), calloc((size_t)n, sizeof *b.ids),
                     calloc((size_t)n, sizeof *b.texts)};
  assert_non_null(b.r);
  assert_non_null(b.ids);
  assert_non_null(b.texts);
  return b;
}

static void bodies_free(struct bodies *b) {
  free(b->r);
  free(b->ids);
  free(b->texts);
}

/* Commits events d-<from> .. d-<to - 1> as one request; false when it was
 * not answered within 10 s. */
static bool commit_bodies(struct bodies *b, int from, int to) {
  for (int i = from; i < to; i++) {
    snprintf(b->ids[i], sizeof b->ids[i], "d-%d", i);
    body_text(b->texts[i], sizeof b->texts[i], i);
    b->r[i] = record("acct-1", b->ids[i], i % 3 ? "sent" : "read", NOW - (i % 7) * DAY, "{}",
                     b->texts[i]);
  }
  pthread_mutex_lock(&mu);
  int before = done_count;
  pthread_mutex_unlock(&mu);
  struct ana_commit_request req;
  assert_int_equal(submit(b->r + from, (size_t)(to - from), &req), 0);
  if (!wait_done_for(before + 1, 10000))
    return false;
  /* The bodies are encoded when the mover moves them into events. */
  struct ana_error err;
  return ana_local_staging_wait(db, UINT64_MAX, &err) == 0;
}

/* Bodies compressed before the frames went without zstd's magic number
 * (with it) read back as those written since (without it), side by side. */
static void body_frames_with_and_without_the_zstd_magic_read_back(void **state) {
  (void)state;
  enum { N = 1600 };
  struct bodies b = bodies_alloc(N);
  struct ana_event_codec *codec = ana_local_db_event_codec(db);
  sqlite3 *w = ana_local_db_writer(db);
  assert_true(commit_bodies(&b, 0, 1500));
  assert_int_equal(ana_event_codec_training_state(codec, 20000), ANA_CODEC_TRAINED);
  assert_true(commit_bodies(&b, 1500, N));
  int packed = query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) = 1");
  assert_true(packed > 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE substr(body, 2, 4) ="
                                "  x'28b52ffd'"),
                   0);
  /* Half of them framed as before (the magic, no dictionary id). */
  sqlite3_stmt *st = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(w, "SELECT dict FROM event_dicts WHERE id = 1", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  ZSTD_CDict *cd =
      ZSTD_createCDict(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), 1);
  sqlite3_finalize(st);
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  assert_non_null(cd);
  assert_non_null(cc);
  ZSTD_CCtx_setParameter(cc, ZSTD_c_dictIDFlag, 0);
  ZSTD_CCtx_refCDict(cc, cd);
  assert_int_equal(sqlite3_prepare_v2(w,
                                      "SELECT key, ana_event_body_raw(body) FROM events"
                                      " WHERE ana_event_dict(body) = 1 AND key % 2 = 0",
                                      -1, &st, NULL),
                   SQLITE_OK);
  int64_t *keys = calloc(N, sizeof *keys);
  uint8_t(*bodies)[512] = calloc(N, sizeof *bodies);
  size_t *lens = calloc(N, sizeof *lens);
  int n = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const uint8_t *raw = sqlite3_column_blob(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    keys[n] = sqlite3_column_int64(st, 0);
    bodies[n][0] = 0x81; /* dictionary 1, content v2 */
    lens[n] = 1 + ZSTD_compress2(cc, bodies[n] + 1, sizeof bodies[0] - 1, raw + 1, len - 1);
    assert_false(ZSTD_isError(lens[n] - 1));
    n++;
  }
  sqlite3_finalize(st);
  assert_true(n > 0 && n < packed);
  assert_int_equal(
      sqlite3_prepare_v2(w, "UPDATE events SET body = ?2 WHERE key = ?1", -1, &st, NULL),
      SQLITE_OK);
  for (int i = 0; i < n; i++) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, keys[i]);
    sqlite3_bind_blob(st, 2, bodies[i], (int)lens[i], SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  }
  sqlite3_finalize(st);
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT count(*) = %d FROM events WHERE substr(body, 2, 4) = x'28b52ffd'", n);
  assert_int_equal(query_int(w, sql), 1);
  /* Every body reads back: text, properties, payload. */
  struct body_check c = {0};
  struct ana_error err;
  assert_int_equal(ana_local_spool_each(db, 0, N, check_body, &c, &err), N);
  assert_int_equal(c.bad, 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ana_event_props(body) != '{}'"),
                   0);
  ZSTD_freeCCtx(cc);
  ZSTD_freeCDict(cd);
  free(keys);
  free(bodies);
  free(lens);
  bodies_free(&b);
}

/* A dictionary retired (the re-encryption job's, for one trained while a
 * field was stored in clear) compresses no body from the next commit on:
 * bodies are stored raw until a new dictionary is trained on the events
 * committed since. Then the job's pass stores the bodies compressed with the
 * retired one raw, and it is deleted: every body reads back as written. */
static void retired_dictionary_is_replaced_and_its_bodies_stored_raw(void **state) {
  (void)state;
  enum { N = 4000 };
  struct bodies b = bodies_alloc(N);
  struct ana_event_codec *codec = ana_local_db_event_codec(db);
  sqlite3 *w = ana_local_db_writer(db);
  assert_true(commit_bodies(&b, 0, 1500));
  assert_int_equal(ana_event_codec_training_state(codec, 20000), ANA_CODEC_TRAINED);
  assert_true(commit_bodies(&b, 1500, 1600));
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_dicts"), 1);
  assert_true(query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) = 1") > 0);

  ana_local_db_retire_dicts(db, 1);
  assert_true(commit_bodies(&b, 1600, 2700)); /* raw, and sampled */
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) = 1"
                                "  AND CAST(substr(event_id, 3) AS INTEGER) >= 1600"),
                   0);
  assert_int_equal(ana_event_codec_training_state(codec, 20000), ANA_CODEC_TRAINED);
  assert_true(commit_bodies(&b, 2700, N));
  assert_int_equal(ana_event_codec_training_state(codec, 0), ANA_CODEC_IN_USE);
  assert_int_equal(query_int(w, "SELECT max(id) FROM event_dicts"), 2);
  assert_true(query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) = 2") > 0);

  struct ana_error err;
  struct ana_local_conn *conn = ana_local_conn_open(db, &err);
  assert_non_null(conn);
  int64_t after = INT64_MIN;
  uint64_t n = 0, total = 0;
  int rc;
  while ((rc = ana_local_reencryption_undict(conn, 1, &after, 700, &n, &err)) > 0)
    total += n;
  assert_int_equal(rc, 0);
  assert_true(total > 0);
  assert_int_equal(ana_local_reencryption_drop_dicts(conn, 1, &err), 0);
  ana_local_conn_close(conn);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) = 1"), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_dicts WHERE id = 1"), 0);
  struct body_check c = {0};
  assert_int_equal(ana_local_spool_each(db, 0, N, check_body, &c, &err), N);
  assert_int_equal(c.bad, 0);
  bodies_free(&b);
}

/* Once the store has seen enough events it trains a zstd dictionary on
 * them, on a thread of its own: the commit that took the last sample and
 * the next ones do not wait for it (here the training is held back until
 * they are answered) and store their bodies raw; the first commit after it
 * ended stores the dictionary (event_dicts) and compresses with it. Every
 * body, before and after, reads back as written, after a restart too, which
 * goes on with the same dictionary. */
static void dictionary_training_does_not_hold_commits(void **state) {
  (void)state;
  enum { N = 7000 };
  struct bodies b = bodies_alloc(N + 1);
  struct ana_event_codec *codec = ana_local_db_event_codec(db);
  ana_event_codec_hold_training(codec, true);
  assert_true(commit_bodies(&b, 0, 5000)); /* takes the samples */
  assert_int_equal(ana_event_codec_training_state(codec, 0), ANA_CODEC_TRAINING);
  assert_true(commit_bodies(&b, 5000, 6000)); /* while it trains */
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_dicts"), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) != 0"), 0);
  ana_event_codec_hold_training(codec, false);
  assert_int_equal(ana_event_codec_training_state(codec, 20000), ANA_CODEC_TRAINED);
  assert_true(commit_bodies(&b, 6000, N));
  assert_int_equal(ana_event_codec_training_state(codec, 0), ANA_CODEC_IN_USE);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_dicts"), 1);
  int packed = query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) = 1");
  assert_true(packed >= 900 && packed <= 1000);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ana_event_dict(body) = 1"
                                "  AND CAST(substr(event_id, 3) AS INTEGER) < 6000"),
                   0);
  struct ana_error err;
  struct body_check c = {0};
  assert_int_equal(ana_local_spool_each(db, 0, N, check_body, &c, &err), N);
  assert_int_equal(c.bad, 0);
  struct hits h = search((struct ana_event_query){.account_id = "acct-1", .text = "d-6999"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "d-6999");
  h = search((struct ana_event_query){.account_id = "acct-1", .text = "d-4999"});
  assert_int_equal(h.n, 1);

  close_store();
  open_store();
  w = ana_local_db_writer(db);
  char text[64];
  body_text(text, sizeof text, N);
  struct ana_event_record next = record("acct-1", "d-7000", "sent", NOW, "{}", text);
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, &next, 1, &err), 0);
  assert_int_equal(ana_local_spool_append(db, &next, 1, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0); /* moved into events */
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_dicts"), 1);
  assert_int_equal(
      query_int(w, "SELECT ana_event_dict(body) = 1 FROM events WHERE event_id = 'd-7000'"), 1);
  c = (struct body_check){0};
  assert_int_equal(ana_local_spool_each(db, 0, N + 1, check_body, &c, &err), N + 1);
  assert_int_equal(c.bad, 0);
  bodies_free(&b);
}

/* Claims keys in a transaction of their own (as the committer does); the
 * records' duplicate flags say what was found. */
static void claim(struct ana_event_record *r, size_t n) {
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, r, n, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
}

/* A key claimed stays claimed across a restart, per account; a repeat in
 * the same batch is a duplicate too, and so is one whose timestamp (and so
 * expiry day) differs from the first one's. */
static void dedupe_keys_are_recognised_after_a_restart(void **state) {
  (void)state;
  struct ana_event_record a[3] = {
      record("acct-1", "k-1", "sent", NOW - 5 * DAY, "{}", ""),
      record("acct-1", "k-2", "sent", NOW, "{}", ""),
      record("acct-1", "k-1", "sent", NOW, "{}", ""),
  };
  claim(a, 3);
  assert_false(a[0].duplicate);
  assert_false(a[1].duplicate);
  assert_true(a[2].duplicate);
  close_store();
  open_store();
  struct ana_event_record b[4] = {
      record("acct-1", "k-1", "sent", NOW - 2 * DAY, "{}", ""), /* another day */
      record("acct-1", "k-2", "sent", NOW, "{}", ""),
      record("acct-2", "k-1", "sent", NOW, "{}", ""), /* another account */
      record("acct-1", "k-", "sent", NOW, "{}", ""),  /* a prefix of a key */
  };
  claim(b, 4);
  assert_true(b[0].duplicate);
  assert_true(b[1].duplicate);
  assert_false(b[2].duplicate);
  assert_false(b[3].duplicate);
  /* The keys with their expiry day, in a run per commit: no table of a
   * row per key, no lists. */
  sqlite3 *w = ana_local_db_writer(db);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), 4);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_accounts"), 2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM main.sqlite_schema"
                                " WHERE name IN ('dedupe_expiry', 'dedupe_keys')"),
                   0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs WHERE state = 0"), 2);
  /* An account numbered by a transaction that rolled back is numbered
   * again by the next one. */
  struct ana_event_record c = record("acct-9", "z", "sent", NOW, "{}", "");
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, &c, 1, &err), 0);
  ana_local_db_rollback(db);
  claim(&c, 1);
  assert_false(c.duplicate);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys k JOIN dedupe_accounts a"
                                "  ON a.id = k.account WHERE a.account_id = 'acct-9'"),
                   1);
}

/* Keys expire by whole UTC days: those of the days before today's go (a run
 * half of whose keys expired is written again without them), today's and
 * later stay; retention is told at most max_rows a call; an expired key may
 * be claimed again; a rolled-back claim leaves nothing behind. */
static void dedupe_keys_expire_by_day(void **state) {
  (void)state;
  enum { N = 2500 };
  int64_t today = NOW / DAY * DAY;
  struct ana_event_record *r = calloc(N, sizeof *r);
  char(*ids)[16] = calloc(N, sizeof *ids);
  assert_non_null(r);
  assert_non_null(ids);
  for (int i = 0; i < N; i++) {
    snprintf(ids[i], sizeof ids[i], "x-%d", i);
    r[i] = record(i % 2 ? "acct-1" : "acct-2", ids[i], "sent", NOW, "{}", "");
    /* Expiring 3 days ago, yesterday's last ms, today's first ms, in 5 days. */
    int64_t at[] = {today - 3 * DAY + 5, today - 1, today, NOW + 5 * DAY};
    r[i].expires_at_ms = at[i % 4];
  }
  claim(r, N);
  struct ana_error err;
  /* A claim rolled back: nothing of it stays. */
  struct ana_event_record gone = record("acct-1", "rolled-back", "sent", NOW, "{}", "");
  gone.expires_at_ms = today - 2 * DAY;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, &gone, 1, &err), 0);
  ana_local_db_rollback(db);
  sqlite3 *w = ana_local_db_writer(db);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), N);
  char sql[160];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM dedupe_keys WHERE expires < %lld",
           (long long)(today / DAY));
  assert_int_equal(query_int(w, sql), N / 2);

  /* Half the keys expired: the run is written again without them; the
   * count is handed out at most max_rows a call. */
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_expire(db, NOW, 600, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  assert_true(ana_local_dedupe_maintain(db, NOW, 0, &err) >= 0);
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_expire(db, NOW, 600, &err), 600);
  assert_int_equal(ana_local_dedupe_expire(db, NOW, 1000, &err), 650);
  assert_int_equal(ana_local_dedupe_expire(db, NOW, 1000, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), N / 2);
  assert_int_equal(query_int(w, sql), 0);

  /* Expired keys are free again; today's and later ones are not. */
  struct ana_event_record again[4];
  for (int i = 0; i < 4; i++)
    again[i] = r[i];
  claim(again, 4);
  assert_false(again[0].duplicate);
  assert_false(again[1].duplicate);
  assert_true(again[2].duplicate);
  assert_true(again[3].duplicate);
  /* Tomorrow, today's go too (half the run), and the run of the two
   * claimed again, expired whole. */
  assert_true(ana_local_dedupe_maintain(db, today + DAY, 0, &err) >= 0);
  assert_int_equal(ana_local_dedupe_expire(db, today + DAY, 100000, &err), 625 + 2);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), 625);
  free(r);
  free(ids);
}

/* Expiry across accounts and across text ids and UUIDs (stored as 16
 * bytes): every expired key is deleted once and no live one, and the count
 * handed out in small steps adds up. */
static void dedupe_sweep_goes_on_across_accounts_and_id_kinds(void **state) {
  (void)state;
  enum { N = 300 };
  int64_t today = NOW / DAY * DAY;
  struct ana_event_record *r = calloc(N, sizeof *r);
  char(*ids)[40] = calloc(N, sizeof *ids);
  assert_non_null(r);
  assert_non_null(ids);
  for (int i = 0; i < N; i++) {
    if (i % 3 == 0)
      snprintf(ids[i], sizeof ids[i], "%08x-0000-4000-8000-%012x", (unsigned)i * 2654435761u,
               (unsigned)i);
    else
      snprintf(ids[i], sizeof ids[i], "t-%d", i);
    r[i] = record(i % 2 ? "acct-1" : "acct-2", ids[i], "sent", NOW, "{}", "");
    r[i].expires_at_ms = i % 5 == 0 ? NOW + DAY : today - 1 - (i % 4) * DAY;
  }
  claim(r, N);
  sqlite3 *w = ana_local_db_writer(db);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys WHERE typeof(event_id) = 'blob'"),
                   N / 3);
  struct ana_error err;
  int total = 0, got;
  assert_true(ana_local_dedupe_maintain(db, NOW, 0, &err) >= 0);
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  while ((got = ana_local_dedupe_expire(db, NOW, 7, &err)) > 0) {
    assert_true(got <= 7);
    total += got;
  }
  assert_int_equal(got, 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  assert_int_equal(total, N - N / 5);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), N / 5);
  /* The live ones are still duplicates, the expired ones free again. */
  claim(r, N);
  for (int i = 0; i < N; i++)
    assert_true(r[i].duplicate == (i % 5 == 0));
  free(r);
  free(ids);
}

struct old_key {
  const char *account, *id;
  int64_t expires_at;
};

/* A store whose keys are in the layout before this one (their expiry
 * time in each row, an index by day): opened, the keys are migrated, each
 * still recognised, and they expire by their day as before. */
static void old_dedupe_keys_are_migrated_on_start(void **state) {
  (void)state;
  close_store();
  char cmd[320];
  snprintf(cmd, sizeof cmd, "rm -f %s/analytics.db* %s/analytics-journal.db*", dir, dir);
  assert_int_equal(system(cmd), 0);
  int v = ana_local_db_migration_containing("CREATE TABLE dedupe_expiry");
  assert_true(v > 1);
  char path[128];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  struct ana_error err;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  fold_journal(conn);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(ana_event_body_register(conn), 0);
  assert_int_equal(ana_local_db_migrate_upto(conn, v - 1, &err), 0);
  assert_int_equal(query_int(conn, "SELECT count(*) FROM pragma_table_info('dedupe_keys')"
                                   " WHERE name = 'expires_at'"),
                   1);
  int64_t today = NOW / DAY * DAY;
  sqlite3_stmt *st = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(conn, "INSERT INTO dedupe_keys VALUES (?, ?, ?)", -1, &st, NULL),
      SQLITE_OK);
  /* 2,100 keys of acct-1 expiring in a week (three lists), with ids that
   * share prefixes; some of acct-2 that expired; odd ids. */
  static const struct old_key odd[] = {
      {"acct-2", "b", 0},  {"acct-2", "", 0},
      {"acct-2", "bb", 0}, {"acct-3", "\xc3\xa9t\xc3\xa9", 1},
      {"acct-3", "x", 1},
  };
  for (int i = 0; i < 2100 + 5; i++) {
    char id[32];
    const char *account = "acct-1";
    int64_t at = NOW + 7 * DAY;
    if (i < 2100) {
      snprintf(id, sizeof id, "imp-%d", i);
    } else {
      account = odd[i - 2100].account;
      snprintf(id, sizeof id, "%s", odd[i - 2100].id);
      at = odd[i - 2100].expires_at ? NOW + 2 * DAY : today - 2 * DAY + 7;
    }
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, account, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, at);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  }
  sqlite3_finalize(st);
  sqlite3_close(conn);

  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  sqlite3 *w = ana_local_db_writer(db);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), 2105);
  assert_int_equal(query_int(w, "SELECT count(*) FROM pragma_table_info('dedupe_keys')"
                                " WHERE name = 'expires_at'"),
                   0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM sqlite_schema WHERE name LIKE"
                                " 'dedupe_keys_by_day'"),
                   0);
  /* Each key has the day of its list (the lists are gone). */
  assert_int_equal(query_int(w, "SELECT count(*) FROM sqlite_schema WHERE name = 'dedupe_expiry'"),
                   0);
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM dedupe_keys WHERE expires = %lld OR expires = %lld"
           " OR expires = %lld",
           (long long)((NOW + 7 * DAY) / DAY), (long long)((NOW + 2 * DAY) / DAY),
           (long long)(today / DAY - 2));
  assert_int_equal(query_int(w, sql), 2105);
  struct ana_event_record r[2105];
  char ids[2105][32];
  for (int i = 0; i < 2105; i++) {
    if (i < 2100) {
      snprintf(ids[i], sizeof ids[i], "imp-%d", i);
      r[i] = record("acct-1", ids[i], "sent", NOW, "{}", "");
    } else {
      snprintf(ids[i], sizeof ids[i], "%s", odd[i - 2100].id);
      r[i] = record(odd[i - 2100].account, ids[i], "sent", NOW, "{}", "");
    }
  }
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, r, 2105, &err), 0);
  ana_local_db_rollback(db);
  for (int i = 0; i < 2105; i++)
    assert_true(r[i].duplicate);
  /* The migrated keys sit in one run: its 3 expired keys stay until it is
   * written again (fewer than half of its keys expired: a key lives at
   * least to the end of its day); the day each got is theirs. */
  assert_true(ana_local_dedupe_maintain(db, NOW, 0, &err) >= 0);
  assert_int_equal(ana_local_dedupe_expire(db, NOW, 1000, &err), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs"), 1);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys k JOIN dedupe_accounts a"
                                "  ON a.id = k.account WHERE a.account_id = 'acct-2'"
                                "  AND k.expires < 20717"),
                   3);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_accounts"), 3);
  /* In a week, all of them: the run goes whole. */
  assert_true(ana_local_dedupe_maintain(db, NOW + 9 * DAY, 0, &err) >= 0);
  assert_int_equal(ana_local_dedupe_expire(db, NOW + 9 * DAY, 100000, &err), 2105);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs"), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_chunks"), 0);
}

/* Claims ids[0..n) of account (now, in a transaction rolled back); returns
 * how many were duplicates. */
static int dup_count(const char *account, char (*ids)[40], int n) {
  struct ana_event_record *r = calloc((size_t)n, sizeof *r);
  assert_non_null(r);
  for (int i = 0; i < n; i++)
    r[i] = record(account, ids[i], "sent", NOW, "{}", "");
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, r, (size_t)n, &err), 0);
  ana_local_db_rollback(db);
  int dups = 0;
  for (int i = 0; i < n; i++)
    dups += r[i].duplicate;
  free(r);
  return dups;
}

/* Commits ids[0..n) of account, their keys expiring at expires (0: their
 * time's default), one transaction (one run) each `per`. */
static void commit_keys(const char *account, char (*ids)[40], int n, int per, int64_t expires) {
  struct ana_event_record *r = calloc((size_t)n, sizeof *r);
  assert_non_null(r);
  for (int i = 0; i < n; i++) {
    r[i] = record(account, ids[i], "sent", NOW, "{}", "");
    if (expires)
      r[i].expires_at_ms = expires + (i / per % 4) * DAY;
  }
  for (int i = 0; i < n; i += per) {
    claim(r + i, (size_t)(n - i < per ? n - i : per));
    for (int k = i; k < i + per && k < n; k++)
      assert_false(r[k].duplicate);
  }
  free(r);
}

/* A key is a duplicate whichever run holds it: in each commit's run, while
 * a merge writes their output over several transactions (the inputs stay
 * live until its last one), after a restart in the middle of it (the
 * unfinished output is dropped, the merge done again) and after it. */
static void dedupe_keys_are_found_in_every_run_during_and_after_a_merge(void **state) {
  (void)state;
  enum { RUNS = 9, PER = 2000, N = RUNS * PER };
  char(*ids)[40] = calloc(N + 100, sizeof *ids);
  assert_non_null(ids);
  for (int i = 0; i < N + 100; i++)
    snprintf(ids[i], sizeof ids[i], i % 3 ? "r%d-%d" : "%08x-0000-4000-8000-00000000%04x", i / PER,
             i % 10000);
  for (int i = 0; i < N + 100; i += 3) /* UUIDs, each its own */
    snprintf(ids[i], sizeof ids[i], "%08x-0000-4000-8000-%012x", (unsigned)i * 2654435761u,
             (unsigned)i);
  ana_local_dedupe_hold(db, true);
  ana_local_db_set_checkpoint_pages(db, 24); /* merge steps of a few chunks */
  commit_keys("acct-1", ids, N, PER, 0);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs WHERE state = 0"), RUNS);
  assert_int_equal(dup_count("acct-1", ids, N), N);
  assert_int_equal(dup_count("acct-1", ids + N, 100), 0);
  assert_int_equal(dup_count("acct-2", ids, 100), 0);
  /* A merge under way: its output is being written. */
  struct ana_error err;
  assert_int_equal(ana_local_dedupe_maintain(db, NOW, 2, &err), 2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs WHERE state = 1"), 1);
  assert_int_equal(dup_count("acct-1", ids, N), N);
  assert_int_equal(dup_count("acct-1", ids + N, 100), 0);
  /* Closed in the middle (as a crash would leave it). */
  close_store();
  open_store();
  ana_local_dedupe_hold(db, true);
  ana_local_db_set_checkpoint_pages(db, 24);
  w = ana_local_db_writer(db);
  assert_int_equal(dup_count("acct-1", ids, N), N);
  assert_true(ana_local_dedupe_maintain(db, NOW, 0, &err) >= 0);
  /* One run of the eight first, the ninth beside it; nothing else left. */
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs WHERE state = 0"), 2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs WHERE state != 0"), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_chunks"),
                   query_int(w, "SELECT sum(chunks) FROM dedupe_runs"));
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_filters"),
                   query_int(w, "SELECT sum((filter_bytes + 4031) / 4032) FROM dedupe_runs"));
  assert_int_equal(query_int(w, "SELECT max(keys) FROM dedupe_runs"), 8 * PER);
  assert_int_equal(dup_count("acct-1", ids, N), N);
  assert_int_equal(dup_count("acct-1", ids + N, 100), 0);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(DISTINCT event_id) FROM dedupe_keys"), N);
  close_store();
  open_store();
  assert_int_equal(dup_count("acct-1", ids, N), N);
  free(ids);
}

/* Merged runs expire by day too: a run of which half the keys expired is
 * written again without them, one all of whose keys expired goes whole. */
static void dedupe_merged_runs_expire_by_day(void **state) {
  (void)state;
  enum { RUNS = 8, PER = 500, N = RUNS * PER };
  char(*ids)[40] = calloc(N, sizeof *ids);
  assert_non_null(ids);
  for (int i = 0; i < N; i++)
    snprintf(ids[i], sizeof ids[i], "e-%d", i);
  ana_local_dedupe_hold(db, true);
  /* Run k expires on day (k % 4) after NOW's. */
  commit_keys("acct-1", ids, N, PER, NOW);
  struct ana_error err;
  sqlite3 *w = ana_local_db_writer(db);
  assert_true(ana_local_dedupe_maintain(db, NOW, 0, &err) > 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs"), 1);
  assert_int_equal(ana_local_dedupe_expire(db, NOW, 100000, &err), 0);
  /* Two days on, half the keys expired. */
  assert_true(ana_local_dedupe_maintain(db, NOW + 2 * DAY, 0, &err) > 0);
  assert_int_equal(ana_local_dedupe_expire(db, NOW + 2 * DAY, 100000, &err), N / 2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs"), 1);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"), N / 2);
  int dups = 0;
  for (int k = 0; k < RUNS; k++) {
    int d = dup_count("acct-1", ids + k * PER, PER);
    assert_int_equal(d, k % 4 >= 2 ? PER : 0);
    dups += d;
  }
  assert_int_equal(dups, N / 2);
  /* Four days on, all of them: the run goes whole, its chunks too. */
  assert_true(ana_local_dedupe_maintain(db, NOW + 4 * DAY, 0, &err) > 0);
  assert_int_equal(ana_local_dedupe_expire(db, NOW + 4 * DAY, 100000, &err), N / 2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_runs"), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_chunks"), 0);
  assert_int_equal(dup_count("acct-1", ids, N), 0);
  free(ids);
}

/* The runs' filters never take more than the configured memory; a run
 * left without one is read on every claim, and claims stay exact. */
static void dedupe_filters_stay_within_their_memory_bound(void **state) {
  (void)state;
  enum { RUNS = 3, PER = 2000, N = RUNS * PER };
  char(*ids)[40] = calloc(N + 100, sizeof *ids);
  assert_non_null(ids);
  for (int i = 0; i < N + 100; i++)
    snprintf(ids[i], sizeof ids[i], "%08x-0000-4000-8000-%012x", (unsigned)i * 2654435761u,
             (unsigned)i);
  ana_local_dedupe_hold(db, true);
  ana_local_dedupe_set_limits(db, 2048);
  commit_keys("acct-1", ids, N, PER, 0);
  struct ana_dedupe_runs_stats st;
  ana_local_dedupe_stats(db, &st);
  assert_int_equal(st.runs, RUNS);
  assert_int_equal(st.keys, N);
  assert_true(st.filter_bytes > 0 && st.filter_bytes <= 2048);
  assert_int_equal(st.unfiltered, RUNS - 1);
  assert_int_equal(dup_count("acct-1", ids, N), N);
  assert_int_equal(dup_count("acct-1", ids + N, 100), 0);
  /* With room, new runs get filters again, within the bound. */
  ana_local_dedupe_set_limits(db, 64 << 10);
  commit_keys("acct-1", ids + N, 100, 100, 0);
  ana_local_dedupe_stats(db, &st);
  assert_int_equal(st.unfiltered, RUNS - 1);
  assert_true(st.filter_bytes > 2048 && st.filter_bytes <= 64 << 10);
  assert_int_equal(dup_count("acct-1", ids, N + 100), N + 100);
  /* A smaller bound later (as at start, the filters loaded first): the
   * largest filters go at once. */
  ana_local_dedupe_set_limits(db, 1024);
  ana_local_dedupe_stats(db, &st);
  assert_true(st.filter_bytes <= 1024);
  assert_int_equal(dup_count("acct-1", ids, N + 100), N + 100);
  assert_int_equal(dup_count("acct-2", ids, 100), 0);
  free(ids);
}

/* A database of schema 3 kept its free-text index inside: the upgrade
 * drops it there, and the index file is built from the stored events. */
static void upgrade_moves_the_text_index_out_of_the_events_database(void **state) {
  (void)state;
  commit_records(2, "older", "upgraded words");
  close_store();
  char path[128];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  fold_journal(conn);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(ana_event_body_register(conn), 0);
  assert_int_equal(
      sqlite3_exec(
          conn,
          "DROP TABLE event_names; DROP TABLE event_names_progress; DROP TABLE api_keys;"
          "DROP TABLE notify_outbox; DROP TABLE notify_attempts; DROP TABLE report_runs;"
          "DROP TABLE audit_log; DROP TABLE audit_anchor; DROP TABLE data_keys;" EVENTS_OF_SCHEMA_12
          "CREATE VIRTUAL TABLE events_fts USING fts5(search_text, content='events',"
          "  content_rowid='seq');"
          "INSERT INTO events_fts(events_fts) VALUES ('rebuild');"
          "DELETE FROM schema_migrations WHERE version >= 4;",
          NULL, NULL, NULL),
      SQLITE_OK);
  sqlite3_close(conn);
  remove_text_index();

  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  assert_int_equal(query_int(ana_local_db_writer(db),
                             "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'events_fts%'"),
                   0);
  struct hits h = search((struct ana_event_query){.account_id = "acct-1", .text = "upgraded"});
  assert_int_equal(h.n, 2);
}

/* --- event ids and properties as the rows store them --- */

/* A payload as the ingest packs one (protobuf-c, fields in number order):
 * event_id (1), event_name (5), timestamp (6), a Struct-ish field 7 and
 * received_at (10); ts_nanos_extra makes the timestamp differ from the
 * row's ms (that field then stays in the payload). Returns its length. */
static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static size_t put_timestamp(uint8_t *p, unsigned field, int64_t ms, int nanos_extra) {
  uint8_t m[24];
  size_t k = 0;
  m[k++] = 0x08;
  k += put_varint(m + k, (uint64_t)(ms / 1000));
  if (ms % 1000 || nanos_extra) {
    m[k++] = 0x10;
    k += put_varint(m + k, (uint64_t)(ms % 1000 * 1000000 + nanos_extra));
  }
  size_t n = put_varint(p, field << 3 | 2);
  n += put_varint(p + n, k);
  memcpy(p + n, m, k);
  return n + k;
}

static size_t event_payload(uint8_t *p, const char *id, int64_t ts, int nanos_extra, int i) {
  size_t n = 0, len = strlen(id);
  if (len) {
    p[n++] = 0x0a;
    n += put_varint(p + n, len);
    memcpy(p + n, id, len);
    n += len;
  }
  p[n++] = 0x2a;
  p[n++] = 4;
  memcpy(p + n, "sent", 4);
  n += 4;
  n += put_timestamp(p + n, 6, ts, nanos_extra);
  char other[16];
  int olen = snprintf(other, sizeof other, "v%d", i);
  p[n++] = 0x3a;
  p[n++] = (uint8_t)olen;
  memcpy(p + n, other, (size_t)olen);
  n += (size_t)olen;
  n += put_timestamp(p + n, 10, NOW, 0);
  return n;
}

#define SHAPES 10
static const char *const shape_ids[SHAPES] = {
    "0f8fad5b-d9cb-469f-a165-70867728950e", /* canonical lower case: 16 bytes */
    "0F8FAD5B-D9CB-469F-A165-70867728950E", /* upper case: text */
    "0f8fad5b-d9cb-469f-a165-70867728950E", /* one upper-case digit: text */
    "0f8fad5bd9cb469fa16570867728950e",     /* no dashes: text */
    "0f8fad5b-d9cb-469f-a165-70867728950",  /* 35 characters */
    "0f8fad5b-d9cb-469f-a165-70867728950g", /* not hex */
    "0f8fad5b-d9cb-469f-a16570867728950e-", /* a dash moved */
    "",
    "order-42",
    NULL, /* 128 characters, below */
};

struct shape_rows {
  const char *ids[SHAPES];
  uint8_t payloads[SHAPES][512];
  size_t lens[SHAPES];
  char props[SHAPES][64];
  int seen[SHAPES], bad;
};

static int shape_index(struct shape_rows *s, const char *id) {
  for (int i = 0; i < SHAPES; i++)
    if (strcmp(s->ids[i], id) == 0)
      return i;
  return -1;
}

static int check_shape_row(void *ctx, const struct ana_spooled_event *e, struct ana_error *err) {
  (void)err;
  struct shape_rows *s = ctx;
  int i = shape_index(s, e->event_id);
  if (i < 0 || e->payload_len != s->lens[i] || memcmp(e->payload, s->payloads[i], s->lens[i]) ||
      strcmp(e->properties_json, s->props[i]) || strcmp(e->account_id, "acct-1") ||
      e->received_at_ms != NOW || e->timestamp_ms != NOW - DAY + (i == 4 ? 7 : 0)) {
    s->bad++;
    return 0;
  }
  s->seen[i]++;
  return 0;
}

static int check_shape_scan(void *ctx, const struct ana_scanned_event *ev) {
  struct shape_rows *s = ctx;
  int i = shape_index(s, ev->event_id);
  if (i < 0 || strcmp(ev->properties_json, s->props[i]) != 0)
    s->bad++;
  else
    s->seen[i]++;
  return 0;
}

/* Every shape of event id reads back as it was sent (only a canonical
 * lower-case UUID is stored as 16 bytes), with its properties and its
 * payload byte for byte (the fields the columns hold are put back, one
 * whose timestamp the columns cannot give stays); pages by cursor over
 * events of one timestamp with mixed id shapes neither skip nor repeat;
 * the same ids again are duplicates. */
static void event_ids_and_properties_round_trip_in_every_shape(void **state) {
  (void)state;
  static struct shape_rows s;
  memset(&s, 0, sizeof s);
  char long_id[129];
  memset(long_id, 'k', 128);
  long_id[128] = '\0';
  struct ana_event_record r[SHAPES];
  for (int i = 0; i < SHAPES; i++) {
    s.ids[i] = shape_ids[i] ? shape_ids[i] : long_id;
    int64_t ts = NOW - DAY + (i == 4 ? 7 : 0);
    s.lens[i] = event_payload(s.payloads[i], s.ids[i], ts, i == 2 ? 5 : 0, i);
    snprintf(s.props[i], sizeof s.props[i], "{\"k\":\"v%d\",\"n\":%d}", i, i);
    r[i] = record("acct-1", s.ids[i], "sent", ts, s.props[i], "shape words");
    r[i].payload = s.payloads[i];
    r[i].payload_len = s.lens[i];
  }
  struct ana_commit_request req;
  assert_int_equal(submit(r, SHAPES, &req), 0);
  wait_done(1);
  assert_int_equal(last_rc, 0);
  struct ana_error werr;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &werr), 0); /* moved into events */
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE typeof(event_id) = 'blob'"
                                " AND length(event_id) = 16"),
                   1);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys WHERE typeof(event_id) = 'blob'"
                                " AND length(event_id) = 16"),
                   1);
  assert_int_equal(query_int(w, "SELECT count(DISTINCT account_id) FROM events"
                                " WHERE typeof(account_id) = 'integer'"),
                   1);

  struct ana_error err;
  assert_int_equal(ana_local_spool_each(db, 0, 100, check_shape_row, &s, &err), SHAPES);
  assert_int_equal(s.bad, 0);
  for (int i = 0; i < SHAPES; i++)
    assert_int_equal(s.seen[i], 1);
  memset(s.seen, 0, sizeof s.seen);
  assert_int_equal(
      ops->scan(store, "acct-1", INT64_MIN, INT64_MAX, NULL, 0, check_shape_scan, &s, &err), 0);
  assert_int_equal(ops->scan_seq(store, "acct-1", 0, 100, check_shape_scan, &s, &err), 0);
  assert_int_equal(s.bad, 0);
  for (int i = 0; i < SHAPES; i++)
    assert_int_equal(s.seen[i], 2);

  /* Pages of 3 by cursor. */
  memset(s.seen, 0, sizeof s.seen);
  struct ana_event_query q = {.account_id = "acct-1", .limit = 3};
  char cursor[160] = "";
  for (int page = 0; page < 6; page++) {
    if (page > 0) {
      q.after_cursor = true;
      q.cursor_event_id = cursor;
    }
    struct hits h = search(q);
    for (int k = 0; k < h.n; k++) {
      int i = shape_index(&s, h.ids[k]);
      assert_true(i >= 0);
      s.seen[i]++;
      q.cursor_ts = h.ts[k];
      snprintf(cursor, sizeof cursor, "%s", s.ids[i]);
    }
    if (h.n < 3)
      break;
  }
  for (int i = 0; i < SHAPES; i++)
    assert_int_equal(s.seen[i], 1);

  /* By a property, compared in the body's properties. */
  const char *keys[] = {"k"}, *vals[] = {"v3"};
  struct hits h = search((struct ana_event_query){
      .account_id = "acct-1", .property_keys = keys, .property_values = vals, .n_properties = 1});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], shape_ids[3]);
  /* A number compares by its text (no substring test first); a value found
   * in the text but not as the property's matches nothing. */
  const char *nkeys[] = {"n"}, *nvals[] = {"4"}, *kvals[] = {"v"}, *ovals[] = {"n"};
  h = search((struct ana_event_query){
      .account_id = "acct-1", .property_keys = nkeys, .property_values = nvals, .n_properties = 1});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], s.ids[4]);
  h = search((struct ana_event_query){
      .account_id = "acct-1", .property_keys = keys, .property_values = kvals, .n_properties = 1});
  assert_int_equal(h.n, 0);
  h = search((struct ana_event_query){
      .account_id = "acct-1", .property_keys = keys, .property_values = ovals, .n_properties = 1});
  assert_int_equal(h.n, 0);

  /* The same ids again (and the UUID in upper case is another id). */
  assert_int_equal(submit(r, SHAPES, &req), 0);
  wait_done(2);
  for (int i = 0; i < SHAPES; i++)
    assert_true(r[i].duplicate);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), SHAPES);
}

static int check_migrated_row(void *ctx, const struct ana_spooled_event *e, struct ana_error *err) {
  (void)err;
  struct shape_rows *s = ctx;
  int i = (int)e->seq - 1;
  if (i < 0 || i > 2 || strcmp(e->event_id, s->ids[i]) || e->payload_len != s->lens[i] ||
      memcmp(e->payload, s->payloads[i], s->lens[i]) || strcmp(e->properties_json, s->props[i]) ||
      strcmp(e->account_id, "acct-1") || strcmp(e->search_text, "shape words") ||
      e->received_at_ms != NOW || e->timestamp_ms != NOW - (3 - i) * DAY)
    s->bad++;
  return 0;
}

/* The events rows and dedupe keys of the format before (account id text,
 * event id text, properties in a column, bodies of content v1, raw or
 * compressed with a dictionary) are converted on start: every event reads
 * back the same, a UUID id is 16 bytes, and its key still claims it. */
static void store_of_the_previous_row_format_is_migrated_on_start(void **state) {
  (void)state;
  close_store();
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -f %s/analytics.db* %s/analytics-journal.db* %s/analytics-text.db*",
           dir, dir, dir);
  assert_int_equal(system(cmd), 0);
  int v = ana_local_db_migration_containing("CREATE TABLE events_v2");
  assert_true(v > 1);
  char path[128];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  struct ana_error err;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  fold_journal(conn);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(ana_event_body_register(conn), 0);
  assert_int_equal(ana_dedupe_register(conn), 0);
  if (ana_local_db_migrate_upto(conn, v - 1, &err) < 0)
    fail_msg("%s", err.message);

  static struct shape_rows s;
  memset(&s, 0, sizeof s);
  static const char *const ids[3] = {"0f8fad5b-d9cb-469f-a165-70867728950e", "Plain-Old-1",
                                     "7c9e6679-7425-40de-944b-e07fc1f90ae7"};
  for (int i = 0; i < 3; i++) {
    s.ids[i] = ids[i];
    s.lens[i] = event_payload(s.payloads[i], ids[i], NOW - (3 - i) * DAY, 0, i);
    snprintf(s.props[i], sizeof s.props[i], "{\"k\":\"v%d\"}", i);
  }
  /* A raw-content dictionary for the third body: its own words. */
  uint8_t dict[512];
  size_t dn = 0;
  while (dn + 11 + s.lens[2] + 16 < sizeof dict) {
    memcpy(dict + dn, "shape words", 11);
    dn += 11;
    memcpy(dict + dn, s.props[2], strlen(s.props[2]));
    dn += strlen(s.props[2]);
    memcpy(dict + dn, s.payloads[2], s.lens[2]);
    dn += s.lens[2];
  }
  memset(dict + dn, 'x', sizeof dict - dn);
  ZSTD_CDict *cd = ZSTD_createCDict(dict, sizeof dict, 1);
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  assert_non_null(cd);
  assert_non_null(cctx);
  sqlite3_stmt *st = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(conn, "INSERT INTO event_dicts (id, dict) VALUES (1, ?)", -1, &st, NULL),
      SQLITE_OK);
  sqlite3_bind_blob(st, 1, dict, sizeof dict, SQLITE_STATIC);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  assert_int_equal(sqlite3_exec(conn,
                                "INSERT INTO dedupe_accounts (id, account_id) VALUES (4, 'acct-1');"
                                "UPDATE event_seq SET last = 3",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  assert_int_equal(
      sqlite3_prepare_v2(conn,
                         "INSERT INTO events (key, seq, account_id, event_id, session_id,"
                         " event_type, event_name, ts, received_at, properties, body)"
                         " VALUES (?1, ?2, 'acct-1', ?3, 's1', 'message', 'sent', ?4, ?5, ?6,"
                         " CASE WHEN ?7 IS NULL THEN ana_event_body('shape words', ?8) ELSE ?7"
                         " END)",
                         -1, &st, NULL),
      SQLITE_OK);
  sqlite3_stmt *key = NULL;
  assert_int_equal(sqlite3_prepare_v2(conn,
                                      "INSERT INTO dedupe_keys (account, event_id) VALUES (4, ?)",
                                      -1, &key, NULL),
                   SQLITE_OK);
  for (int i = 0; i < 3; i++) {
    int64_t ts = NOW - (3 - i) * DAY;
    uint8_t body[1024];
    size_t blen = 0;
    if (i == 2) {
      uint8_t content[600];
      size_t n = 0;
      content[n++] = 11;
      memcpy(content + n, "shape words", 11);
      n += 11;
      memcpy(content + n, s.payloads[i], s.lens[i]);
      n += s.lens[i];
      body[0] = 1;
      size_t z = ZSTD_compress_usingCDict(cctx, body + 1, sizeof body - 1, content, n, cd);
      assert_false(ZSTD_isError(z));
      blen = z + 1;
    }
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, ana_event_key(ts, (uint64_t)i + 1));
    sqlite3_bind_int64(st, 2, i + 1);
    sqlite3_bind_text(st, 3, ids[i], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, ts);
    sqlite3_bind_int64(st, 5, NOW);
    sqlite3_bind_text(st, 6, s.props[i], -1, SQLITE_STATIC);
    if (blen)
      sqlite3_bind_blob(st, 7, body, (int)blen, SQLITE_TRANSIENT);
    else
      sqlite3_bind_null(st, 7);
    sqlite3_bind_blob(st, 8, s.payloads[i], (int)s.lens[i], SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_reset(key);
    sqlite3_bind_text(key, 1, ids[i], -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(key), SQLITE_DONE);
  }
  sqlite3_finalize(st);
  sqlite3_finalize(key);
  ZSTD_freeCDict(cd);
  ZSTD_freeCCtx(cctx);
  sqlite3_close(conn);

  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM pragma_table_info('events')"
                                "  WHERE name IN ('properties', 'received_at')"),
                   0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE typeof(event_id) = 'blob'"), 2);
  keys_table(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM dedupe_keys"
                                " WHERE typeof(event_id) = 'blob'"),
                   2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE account_id = 4"), 3);
  assert_int_equal(query_int(w, "SELECT ana_event_dict(body) FROM events WHERE seq = 3"), 1);
  /* The payloads' event ids and timestamps are left out now. */
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"
                                " WHERE instr(ana_event_body_raw(body), 'Plain-Old-1') > 0"),
                   0);
  struct hits h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 3);
  for (int i = 0; i < 3; i++)
    assert_string_equal(h.ids[2 - i], ids[i]);
  memset(s.seen, 0, sizeof s.seen);
  assert_int_equal(ana_local_spool_each(db, 0, 10, check_migrated_row, &s, &err), 3);
  assert_int_equal(s.bad, 0);
  /* Keys still claim their events, a UUID's too. */
  struct ana_event_record again[3];
  for (int i = 0; i < 3; i++)
    again[i] = record("acct-1", ids[i], "sent", NOW, "{}", "x");
  claim(again, 3);
  for (int i = 0; i < 3; i++)
    assert_true(again[i].duplicate);
}

/* A database of schema 10 whose alert tables the evaluator created itself
 * (earlier builds did): migration 11 keeps them and what they hold. */
static void upgrade_keeps_alert_tables_an_earlier_build_created(void **state) {
  (void)state;
  close_store();
  char path[128];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  fold_journal(conn);
  assert_int_equal(ana_dedupe_register(conn), 0);
  assert_int_equal(ana_event_body_register(conn), 0);
  assert_int_equal(
      sqlite3_exec(conn,
                   "DROP TABLE alert_accounts; DROP TABLE alert_instances;"
                   "DROP TABLE alert_history; DROP TABLE data_keys;" EVENTS_OF_SCHEMA_12
                   "DELETE FROM schema_migrations WHERE version >= 11;"
                   "CREATE TABLE alert_accounts (account_id TEXT PRIMARY KEY) WITHOUT ROWID;"
                   "CREATE TABLE alert_instances (alert_id TEXT NOT NULL,"
                   "  group_key TEXT NOT NULL, state INTEGER NOT NULL, since INTEGER NOT NULL,"
                   "  last_notified INTEGER NOT NULL, notified INTEGER NOT NULL,"
                   "  value REAL NOT NULL, has_value INTEGER NOT NULL,"
                   "  PRIMARY KEY (alert_id, group_key)) WITHOUT ROWID;"
                   "INSERT INTO alert_accounts VALUES ('acct-1');"
                   "INSERT INTO alert_instances VALUES ('a1', '', 2, 5, 5, 1, 7.5, 1);",
                   NULL, NULL, NULL),
      SQLITE_OK);
  sqlite3_close(conn);

  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM alert_accounts"), 1);
  assert_int_equal(query_int(w, "SELECT state FROM alert_instances WHERE alert_id = 'a1'"), 2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM alert_history"), 0);
  assert_int_equal(
      query_int(w, "SELECT count(*) FROM sqlite_schema WHERE name = 'alert_history_by_time'"), 1);
}

static void full_database_gives_no_ack_and_stays_intact(void **state) {
  (void)state;
  sqlite3 *w = ana_local_db_journal(db); /* the file the commit writes */
  /* Cap the file at its current size: the next commit cannot grow it. */
  sqlite3_stmt *st;
  sqlite3_prepare_v2(w, "PRAGMA page_count", -1, &st, NULL);
  sqlite3_step(st);
  int pages = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count=%d", pages);
  assert_int_equal(sqlite3_exec(w, sql, NULL, NULL, NULL), SQLITE_OK);

  /* Incompressible (a commit stages its events compressed together). */
  static char big_props[200][3000];
  uint32_t x = 12345;
  for (size_t k = 0; k < 200; k++)
    for (size_t i = 0; i < sizeof big_props[k] - 1; i++) {
      x = x * 1103515245u + 12345u;
      big_props[k][i] = (char)(' ' + (x >> 16) % 94);
    }
  struct ana_event_record r[200];
  char ids[200][16];
  fill_records(r, ids, 200, "full", big_props[0]);
  for (size_t k = 0; k < 200; k++)
    r[k].properties_json = big_props[k];
  struct ana_commit_request req;
  assert_int_equal(submit(r, 200, &req), 0);
  wait_done(1);
  assert_true(last_rc < 0);
  struct hits h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 0); /* nothing of the failed commit */

  assert_int_equal(sqlite3_exec(w, "PRAGMA max_page_count=1073741823", NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_prepare_v2(w, "PRAGMA integrity_check", -1, &st, NULL);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  /* The retry is stored: the failed commit left no dedupe keys behind. */
  assert_int_equal(submit(r, 200, &req), 0);
  wait_done(2);
  assert_int_equal(last_rc, 0);
  assert_false(r[0].duplicate);
  h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 64);
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Frames in the WAL that a connection opened now would see (recovery's
 * count), read through a connection that keeps the WAL file on close. */
static int wal_frames_to_replay(const char *db_path) {
  sqlite3 *c = NULL;
  int log = -1, copied = -1, persist = 1;
  assert_int_equal(sqlite3_open_v2(db_path, &c, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_file_control(c, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
  query_int(c, "SELECT count(*) FROM events"); /* a read runs recovery */
  assert_int_equal(sqlite3_wal_checkpoint_v2(c, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied),
                   SQLITE_OK);
  sqlite3_close(c);
  return log;
}

/* A clean close keeps the WAL file at its size (so the next run's commits
 * overwrite it rather than grow it) with nothing in it to replay, and every
 * event is there after the reopen. */
static void wal_is_kept_at_its_size_with_nothing_to_replay(void **state) {
  (void)state;
  static char text[2000];
  memset(text, 'w', sizeof text - 1);
  commit_records(100, "kept", text);
  assert_int_equal(last_rc, 0);
  struct ana_error err;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  char wal[128], db_path[128];
  snprintf(wal, sizeof wal, "%s/analytics.db-wal", dir);
  snprintf(db_path, sizeof db_path, "%s/analytics.db", dir);
  long size = file_size(wal);
  assert_true(size > 100 * 2000);

  close_store();
  assert_true(file_size(wal) >= size);
  assert_in_range(wal_frames_to_replay(db_path), 0, 2);

  open_store();
  struct hits h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 64); /* a full page: the events are all there */
  assert_true(file_size(wal) >= size);
}

/* Under commits that never pause, the checkpoint thread still gets the
 * WAL started over (a short catch-up holds the next commit back), so the WAL
 * stays near its checkpoint size instead of growing with every commit. */
/* The writer connection is the committer's: a test that writes on it
 * directly stops the committer first (its retention sweeps use it). */
static void take_writer(void) {
  ana_committer_destroy(committer);
  committer = NULL;
}

static void wal_starts_over_under_steady_commits(void **state) {
  (void)state;
  struct ana_error err;
  take_writer();
  sqlite3 *w = ana_local_db_writer(db);
  ana_local_db_set_checkpoint_pages(db, 4000);
  assert_int_equal(sqlite3_exec(w, "CREATE TABLE wal_probe(b BLOB)", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_stmt *ins = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(w, "INSERT INTO wal_probe VALUES (zeroblob(40000))", -1, &ins, NULL),
      SQLITE_OK);
  /* About 11 WAL pages a commit: 33,000 pages in all, eight times the
   * 4,000 that start a checkpoint. */
  for (int i = 0; i < 3000; i++) {
    if (ana_local_db_begin(db, &err) < 0)
      fail_msg("commit %d: %s", i, err.message);
    assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
    sqlite3_reset(ins);
    if (ana_local_db_commit(db, &err) < 0)
      fail_msg("commit %d: %s", i, err.message);
  }
  sqlite3_finalize(ins);
  char wal[128];
  snprintf(wal, sizeof wal, "%s-wal", ana_local_db_path(db));
  struct stat st;
  assert_int_equal(stat(wal, &st), 0);
  /* The file keeps its largest size: at most three checkpoints' worth. */
  assert_true(st.st_size <= 3 * 4000 * (4096 + 24));
}

/* ana_local_db_checkpoint copies the WAL into the database and starts it
 * over: the file is empty afterwards, the rows still there. */
static void explicit_checkpoint_empties_the_wal(void **state) {
  (void)state;
  struct ana_error err;
  take_writer();
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(sqlite3_exec(w,
                                "CREATE TABLE ckpt_probe(b BLOB);"
                                "INSERT INTO ckpt_probe VALUES (zeroblob(200000))",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  char wal[128];
  snprintf(wal, sizeof wal, "%s-wal", ana_local_db_path(db));
  struct stat st;
  assert_int_equal(stat(wal, &st), 0);
  assert_true(st.st_size > 200000);
  if (ana_local_db_checkpoint(db, &err) < 0)
    fail_msg("checkpoint: %s", err.message);
  assert_int_equal(stat(wal, &st), 0);
  assert_int_equal(st.st_size, 0);
  sqlite3_stmt *q = NULL;
  assert_int_equal(sqlite3_prepare_v2(w, "SELECT length(b) FROM ckpt_probe", -1, &q, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(q), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(q, 0), 200000);
  sqlite3_finalize(q);
}

static void *commit_after_30ms(void *conn) {
  usleep(30000);
  sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
  return NULL;
}

/* The event writer waits for another connection's write transaction (its
 * own busy handler retries in short steps) and then commits. */
static void writer_waits_for_another_writer(void **state) {
  (void)state;
  struct ana_error err;
  take_writer();
  sqlite3 *other = ana_local_db_connect_journal(db, &err); /* the commit's file */
  assert_non_null(other);
  assert_int_equal(
      sqlite3_exec(other, "BEGIN IMMEDIATE; CREATE TABLE busy_probe(x)", NULL, NULL, NULL),
      SQLITE_OK);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, commit_after_30ms, other), 0);
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(
      sqlite3_exec(ana_local_db_journal(db), "INSERT INTO busy_probe VALUES (1)", NULL, NULL, NULL),
      SQLITE_OK);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  pthread_join(t, NULL);
  sqlite3_close(other);
}

static int count_objects(void *ctx, const struct ana_catalog_object *o) {
  (void)o;
  (*(int *)ctx)++;
  return 0;
}

static int copy_name(void *ctx, const struct ana_catalog_object *o) {
  snprintf(ctx, 64, "%s", o->name ? o->name : "");
  return 1;
}

static void catalog_objects_by_account_kind_and_name(void **state) {
  (void)state;
  struct ana_error err;
  const struct ana_catalog_ops *cops = ana_store_catalog_backend("sqlite");
  void *cat = cops->open(db, &err);
  assert_non_null(cat);
  const uint8_t body[] = {1, 2, 3};
  struct ana_catalog_object o = {"metric", "acct-1", "m1", "rate", body, 3, NOW, NOW};
  assert_int_equal(cops->put(cat, &o, true, &err), 0);
  assert_int_equal(cops->put(cat, &o, true, &err), ANA_ERR_EXISTS); /* same id */
  struct ana_catalog_object same_name = {"metric", "acct-1", "m2", "rate", body, 3, NOW, NOW};
  assert_int_equal(cops->put(cat, &same_name, true, &err), ANA_ERR_EXISTS);
  assert_int_equal(err.code, ANA_STATUS_ALREADY_EXISTS);
  /* The same name in another account or kind is fine. */
  struct ana_catalog_object other = {"metric", "acct-2", "m2", "rate", body, 3, NOW, NOW};
  struct ana_catalog_object alert = {"alert", "acct-1", "a1", "rate", body, 3, NOW, NOW};
  assert_int_equal(cops->put(cat, &other, true, &err), 0);
  assert_int_equal(cops->put(cat, &alert, true, &err), 0);
  char name[64];
  assert_int_equal(cops->get(cat, "metric", "acct-1", "m1", copy_name, name, &err), 0);
  assert_string_equal(name, "rate");
  assert_int_equal(cops->get(cat, "metric", "acct-2", "m1", copy_name, name, &err),
                   ANA_ERR_NOT_FOUND); /* never across accounts */
  assert_int_equal(cops->get_by_name(cat, "metric", "acct-1", "rate", copy_name, name, &err), 0);
  o.name = "renamed";
  assert_int_equal(cops->put(cat, &o, false, &err), 0);
  struct ana_catalog_object missing = {"metric", "acct-1", "nope", "x", body, 3, NOW, NOW};
  assert_int_equal(cops->put(cat, &missing, false, &err), ANA_ERR_NOT_FOUND);
  int n = 0;
  assert_int_equal(cops->list(cat, "metric", "acct-1", NULL, 10, count_objects, &n, &err), 0);
  assert_int_equal(n, 1);
  assert_int_equal(cops->remove(cat, "metric", "acct-1", "m1", &err), 0);
  assert_int_equal(cops->remove(cat, "metric", "acct-1", "m1", &err), ANA_ERR_NOT_FOUND);
  cops->close(cat);
}

static int count_scanned(void *ctx, const struct ana_scanned_event *ev) {
  (void)ev;
  (*(int *)ctx)++;
  return 0;
}

/* Spooled events come in sequence order, each once, with their text. */
static int check_seq_order(void *ctx, const struct ana_spooled_event *ev, struct ana_error *err) {
  (void)err;
  struct body_check *c = ctx;
  if (ev->seq != (uint64_t)c->n + 1235 || strcmp(ev->search_text, "staged words") != 0)
    c->bad++;
  c->n++;
  return 0;
}

static void *release_mover_later(void *arg) {
  (void)arg;
  usleep(200 * 1000);
  ana_local_staging_hold(db, false);
  return NULL;
}

/* A commit stages its events as one row; while the mover has not moved
 * them into events (held here), every read waits for it and finds them:
 * a search, a free-text search, a scan by sequence and the spool's last
 * sequence, right after the acknowledgements. */
static void staged_events_are_read_right_after_their_commit(void **state) {
  (void)state;
  ana_local_staging_hold(db, true);
  char prefix[16];
  for (int k = 0; k < 5; k++) {
    snprintf(prefix, sizeof prefix, "st%d", k);
    commit_records(1000, prefix, "staged words");
    assert_int_equal(last_rc, 0);
  }
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events_staged"), 5);
  struct ana_local_staging_stats st;
  ana_local_staging_stats(db, &st);
  assert_int_equal(st.staged_events, 5000);
  assert_int_equal(st.staged_upto, 5000);
  assert_int_equal(st.moved_upto, 0);
  /* Readers by sequence read the staged rows in place (nothing moved). */
  struct ana_error err;
  int n = 0;
  assert_int_equal(ops->scan_seq(store, "acct-1", 0, UINT64_MAX, count_scanned, &n, &err), 0);
  assert_int_equal(n, 5000);
  n = 0;
  assert_int_equal(ops->scan_seq(store, "acct-2", 0, UINT64_MAX, count_scanned, &n, &err), 0);
  assert_int_equal(n, 0);
  struct body_check c = {0};
  assert_int_equal(ana_local_spool_each(db, 1234, 10000, check_seq_order, &c, &err), 5000 - 1234);
  assert_int_equal(c.bad, 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 0);

  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, release_mover_later, NULL), 0);
  struct hits h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 64);
  pthread_join(t, NULL);
  h = search((struct ana_event_query){.account_id = "acct-1", .text = "staged"});
  assert_int_equal(h.n, 64);
  n = 0;
  assert_int_equal(ops->scan_seq(store, "acct-1", 0, UINT64_MAX, count_scanned, &n, &err), 0);
  assert_int_equal(n, 5000);
  uint64_t last = 0;
  assert_int_equal(ana_local_spool_last_seq(db, &last, &err), 0);
  assert_int_equal(last, 5000);
  /* Moved once, deleted from staging in the same transaction. */
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 5000);
  assert_int_equal(query_int(w, "SELECT count(DISTINCT seq) FROM events"), 5000);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events_staged"), 0);
}

/* Events for the reads that merge staged events with the table's rows:
 * ids of both stored forms (canonical UUIDs packed, other ids as text) at
 * a few timestamps (ties across the two), names, sessions, properties
 * whose filters compare by SQLite's text of the JSON value (1, 1.0, true). */
#define MIXED_EVENTS 40
static void commit_mixed(int from) {
  static char ids[MIXED_EVENTS][40];
  static const char *const props[] = {"{\"plan\":\"pro\",\"n\":1}", "{\"plan\":\"pro\",\"n\":1.0}",
                                      "{\"plan\":\"free\",\"flag\":true}",
                                      "{\"plan\":\"pro\",\"flag\":true,\"n\":\"1\"}"};
  struct ana_event_record r[MIXED_EVENTS];
  for (int k = 0; k < MIXED_EVENTS; k++) {
    int i = from + k;
    if (i % 3 == 0)
      snprintf(ids[k], sizeof ids[k], "00000000-0000-4000-8000-%012d", 97 - i);
    else
      snprintf(ids[k], sizeof ids[k], i % 3 == 1 ? "ev-%02d" : "EV-%02d", i);
    r[k] = record("acct-1", ids[k], i % 2 ? "sent" : "opened", NOW - 1000 * (i % 7), props[i % 4],
                  "mixed");
    r[k].session_id = i % 5 ? "s1" : "s2";
  }
  pthread_mutex_lock(&mu);
  int before = done_count;
  pthread_mutex_unlock(&mu);
  struct ana_commit_request req;
  assert_int_equal(submit(r, MIXED_EVENTS, &req), 0);
  wait_done(before + 1);
  assert_int_equal(last_rc, 0);
}

/* A read's answer as text: "ts id seq," per event, in its order. */
struct answer {
  char text[16384];
  size_t len;
  int n;
  int64_t last_ts;
  char last_id[64];
};

static void answer_add(struct answer *a, int64_t ts, const char *id, uint64_t seq) {
  a->len += (size_t)snprintf(a->text + a->len, sizeof a->text - a->len, "%lld %s %llu,",
                             (long long)ts, id, (unsigned long long)seq);
  assert_true(a->len < sizeof a->text);
  a->n++;
  a->last_ts = ts;
  snprintf(a->last_id, sizeof a->last_id, "%s", id);
}

static int answer_hit(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                      uint64_t seq) {
  /* The payload is the event's own (record()'s). */
  assert_int_equal(len, 3);
  assert_int_equal(payload[0], 0x2a);
  answer_add(ctx, ts, id, seq);
  return 0;
}

static int answer_scanned(void *ctx, const struct ana_scanned_event *ev) {
  assert_non_null(ev->properties_json);
  assert_non_null(ev->event_name);
  answer_add(ctx, ev->timestamp_ms, ev->event_id, ev->seq);
  return 0;
}

/* Every page of q (page_size events each), each after the previous one's
 * last event (the cursor). */
static struct answer search_pages(struct ana_event_query q, int page_size) {
  struct answer a = {0};
  struct ana_error err;
  q.limit = page_size;
  for (;;) {
    int before = a.n;
    assert_int_equal(ana_store_search(&roles, &q, answer_hit, &a, &err), 0);
    assert_true(a.n - before <= page_size);
    if (a.n - before < page_size)
      return a;
    q.after_cursor = true;
    q.cursor_ts = a.last_ts;
    q.cursor_event_id = a.last_id;
  }
}

static const struct ana_event_query mixed_queries[] = {
    {.account_id = "acct-1", .from_ms = INT64_MIN, .to_ms = INT64_MAX, .limit = 7},
    {.account_id = "acct-1",
     .from_ms = INT64_MIN,
     .to_ms = INT64_MAX,
     .limit = 3,
     .event_name = "sent"},
    {.account_id = "acct-1", .from_ms = NOW - 3000, .to_ms = NOW - 1000, .limit = 2},
    {.account_id = "acct-1",
     .from_ms = INT64_MIN,
     .to_ms = INT64_MAX,
     .limit = 5,
     .session_id = "s2",
     .event_type = "message"},
    {.account_id = "acct-1", .from_ms = INT64_MIN, .to_ms = INT64_MAX, .limit = 1000},
    {.account_id = "acct-2", .from_ms = INT64_MIN, .to_ms = INT64_MAX, .limit = 10},
};
static const char *const plan_key[] = {"plan"}, *const plan_pro[] = {"pro"};
static const char *const n_key[] = {"n"}, *const n_one[] = {"1"};
static const char *const flag_keys[] = {"flag", "plan"}, *const flag_on[] = {"1", "pro"};

/* The answers of the plain searches (each page by page) and of the
 * time-range scans, one after the other in a. */
static void mixed_answers(struct answer *a) {
  size_t k = 0;
  for (size_t i = 0; i < sizeof mixed_queries / sizeof *mixed_queries; i++)
    a[k++] = search_pages(mixed_queries[i], mixed_queries[i].limit);
  struct ana_event_query q = mixed_queries[0];
  q.property_keys = plan_key;
  q.property_values = plan_pro;
  q.n_properties = 1;
  a[k++] = search_pages(q, 4);
  q.property_keys = n_key;
  q.property_values = n_one;
  a[k++] = search_pages(q, 3);
  q.property_keys = flag_keys;
  q.property_values = flag_on;
  q.n_properties = 2;
  a[k++] = search_pages(q, 2);
  /* Scans: every name; one (in SQL); more names than SCAN_NAMES_IN_SQL
   * (checked on the rows); a range. */
  const char *names[20] = {"sent"};
  for (int i = 1; i < 20; i++)
    names[i] = i == 19 ? "opened" : "other";
  struct ana_error err;
  struct answer *s = &a[k++];
  memset(s, 0, sizeof *s);
  assert_int_equal(ops->scan(store, "acct-1", NOW - DAY, NOW + 1, NULL, 0, answer_scanned, s, &err),
                   0);
  s = &a[k++];
  memset(s, 0, sizeof *s);
  assert_int_equal(
      ops->scan(store, "acct-1", NOW - DAY, NOW + 1, names, 1, answer_scanned, s, &err), 0);
  s = &a[k++];
  memset(s, 0, sizeof *s);
  assert_int_equal(
      ops->scan(store, "acct-1", NOW - 4000, NOW - 1000, names, 20, answer_scanned, s, &err), 0);
}
#define MIXED_ANSWERS 12

/* The plain search and the time-range scan read the events the mover has
 * not moved yet in place (held here: a read that waited for it would fail
 * after a minute), merged with the table's rows in their order (ties by
 * the stored ids' order, across the two and across the pages' cursors),
 * with every filter; the same answers as once everything is moved. */
static void plain_search_and_scan_merge_staged_events(void **state) {
  (void)state;
  commit_mixed(0);
  struct ana_error err;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  ana_local_staging_hold(db, true);
  commit_mixed(MIXED_EVENTS);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), MIXED_EVENTS);
  static struct answer before[MIXED_ANSWERS], after[MIXED_ANSWERS];
  mixed_answers(before);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), MIXED_EVENTS);
  assert_int_equal(before[0].n, 2 * MIXED_EVENTS);
  assert_int_equal(before[1].n, MIXED_EVENTS);
  assert_int_equal(before[4].n, 2 * MIXED_EVENTS);
  assert_int_equal(before[5].n, 0);
  assert_int_equal(before[6].n, 60); /* plan pro: 3 of 4 */
  assert_int_equal(before[7].n, 40); /* n "1": the integer 1 and the string, not 1.0 */
  assert_int_equal(before[9].n, 2 * MIXED_EVENTS);
  ana_local_staging_hold(db, false);
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 2 * MIXED_EVENTS);
  mixed_answers(after);
  for (int i = 0; i < MIXED_ANSWERS; i++) {
    if (strcmp(before[i].text, after[i].text) != 0)
      fprintf(stderr, "answer %d:\n staged: %s\n moved:  %s\n", i, before[i].text, after[i].text);
    assert_string_equal(before[i].text, after[i].text);
  }
}

/* n events of acct-1 named "sent", ids "<prefix>-<i>", at ts0 + i * step,
 * committed 1,000 per request. */
static void commit_spread(int n, const char *prefix, int64_t ts0, int64_t step) {
  struct ana_event_record *r = calloc(1000, sizeof *r);
  char(*ids)[24] = calloc(1000, sizeof *ids);
  assert_non_null(r);
  assert_non_null(ids);
  for (int done = 0; done < n; done += 1000) {
    int k = n - done < 1000 ? n - done : 1000;
    for (int i = 0; i < k; i++) {
      snprintf(ids[i], sizeof ids[i], "%s-%d", prefix, done + i);
      r[i] = record("acct-1", ids[i], "sent", ts0 + (done + i) * step, "{}", "spread");
    }
    pthread_mutex_lock(&mu);
    int before = done_count;
    pthread_mutex_unlock(&mu);
    struct ana_commit_request req;
    assert_int_equal(submit(r, (size_t)k, &req), 0);
    wait_done(before + 1);
    assert_int_equal(last_rc, 0);
  }
  free(ids);
  free(r);
}

/* A scan's stream: how many, in time order, and a hash of its order. */
struct scan_digest {
  long n;
  int64_t last_ts;
  uint64_t hash;
  bool out_of_order;
};

static int digest_scanned(void *ctx, const struct ana_scanned_event *ev) {
  struct scan_digest *d = ctx;
  if (d->n && ev->timestamp_ms < d->last_ts)
    d->out_of_order = true;
  d->last_ts = ev->timestamp_ms;
  d->hash = (d->hash ^ (uint64_t)ev->timestamp_ms) * 1099511628211ULL;
  for (const char *c = ev->event_id; *c; c++)
    d->hash = (d->hash ^ (uint8_t)*c) * 1099511628211ULL;
  d->n++;
  return 0;
}

/* A scan long enough to read in two snapshots (it starts the second at the
 * next 6-hour slot after 50,000 rows) hands on each staged event once, in
 * time order, before and after the slot's edge: as once they are moved. */
static void long_scan_merges_staged_events_across_its_snapshots(void **state) {
  (void)state;
  const int64_t slot = 21600000, t0 = NOW / slot * slot;
  commit_spread(51000, "a", t0, 10);
  commit_spread(100, "b", t0 + slot + 5, 10);
  struct ana_error err;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  ana_local_staging_hold(db, true);
  commit_spread(1000, "c", t0 + 3, 500);       /* among the first slot's rows */
  commit_spread(1000, "d", t0 + slot, 10);     /* around the second's */
  commit_spread(1000, "e", t0 + 2 * slot, 10); /* after the range */
  struct scan_digest before = {0}, after = {0};
  assert_int_equal(
      ops->scan(store, "acct-1", t0, t0 + 2 * slot, NULL, 0, digest_scanned, &before, &err), 0);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 51100);
  assert_int_equal(before.n, 51000 + 100 + 1000 + 1000);
  assert_false(before.out_of_order);
  ana_local_staging_hold(db, false);
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  assert_int_equal(
      ops->scan(store, "acct-1", t0, t0 + 2 * slot, NULL, 0, digest_scanned, &after, &err), 0);
  assert_int_equal(after.n, before.n);
  assert_true(after.hash == before.hash);
}

/* Commits 30 requests of 1,000 events at times spread over a day. */
static void *commit_during_reads(void *arg) {
  (void)arg;
  for (int b = 0; b < 30; b++) {
    char prefix[16];
    snprintf(prefix, sizeof prefix, "mv%d", b);
    commit_spread(1000, prefix, NOW - DAY + b * 997, 86353);
  }
  return NULL;
}

/* Which sequence numbers a read handed on, and whether one came twice. */
struct seen_seqs {
  uint8_t seen[30001];
  long n;
  bool twice;
  int64_t last_ts;
  bool out_of_order;
};

static int seen_scanned(void *ctx, const struct ana_scanned_event *ev) {
  struct seen_seqs *s = ctx;
  assert_true(ev->seq >= 1 && ev->seq <= 30000);
  s->twice |= s->seen[ev->seq]++ > 0;
  s->out_of_order |= s->n > 0 && ev->timestamp_ms < s->last_ts;
  s->last_ts = ev->timestamp_ms;
  s->n++;
  return 0;
}

static int seen_hit(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                    uint64_t seq) {
  (void)payload;
  (void)len;
  (void)id;
  struct seen_seqs *s = ctx;
  assert_true(seq >= 1 && seq <= 30000);
  s->twice |= s->seen[seq]++ > 0;
  s->out_of_order |= s->n > 0 && ts > s->last_ts;
  s->last_ts = ts;
  s->n++;
  return 0;
}

/* Reads while the mover moves what is committed meanwhile (the batches it
 * was handed in memory read by the readers as the mover takes and gives
 * them back): each read hands on every event committed before it began,
 * each once, in order. */
static void plain_reads_during_moves_see_each_event_once(void **state) {
  (void)state;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, commit_during_reads, NULL), 0);
  static struct seen_seqs s;
  struct ana_error err;
  uint64_t last = 0;
  for (int k = 0; last < 30000; k++) {
    assert_int_equal(ana_local_spool_last_seq(db, &last, &err), 0);
    memset(&s, 0, sizeof s);
    if (k % 2) {
      assert_int_equal(
          ops->scan(store, "acct-1", NOW - 2 * DAY, NOW + DAY, NULL, 0, seen_scanned, &s, &err), 0);
    } else {
      struct ana_event_query q = {
          .account_id = "acct-1", .from_ms = INT64_MIN, .to_ms = INT64_MAX, .limit = -1};
      assert_int_equal(ana_store_search(&roles, &q, seen_hit, &s, &err), 0);
    }
    assert_false(s.twice);
    assert_false(s.out_of_order);
    for (uint64_t q = 1; q <= last; q++)
      assert_true(s.seen[q]);
  }
  pthread_join(t, NULL);
}

/* Committed batches go to the mover in memory (not read back from
 * events_staged); one not handed off (the handoff full) is read back from
 * events_staged in its turn, between the batches handed off around it:
 * each event moved once, in sequence order, none lost, nothing left staged. */
static void staged_batches_are_handed_off_in_memory(void **state) {
  (void)state;
  ana_local_staging_hold(db, true);
  const size_t bounds[6] = {ANA_STAGING_HANDOFF_BYTES, 0, 0,
                            ANA_STAGING_HANDOFF_BYTES, 0, ANA_STAGING_HANDOFF_BYTES};
  char prefix[16];
  for (int k = 0; k < 6; k++) {
    ana_local_staging_set_handoff_bytes(db, bounds[k]);
    snprintf(prefix, sizeof prefix, "ho%d", k);
    commit_records(1000, prefix, "staged words");
    assert_int_equal(last_rc, 0);
  }
  ana_local_staging_set_handoff_bytes(db, ANA_STAGING_HANDOFF_BYTES);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events_staged"), 6);
  ana_local_staging_hold(db, false);
  struct ana_error err;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  struct ana_local_staging_stats st;
  ana_local_staging_stats(db, &st);
  assert_int_equal(st.handed_off, 3000);
  assert_int_equal(st.read_back, 3000);
  assert_int_equal(st.moved_upto, 6000);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 6000);
  assert_int_equal(query_int(w, "SELECT count(DISTINCT seq) FROM events"), 6000);
  assert_int_equal(query_int(w, "SELECT count(DISTINCT event_id) FROM events"), 6000);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events_staged"), 0);
  struct body_check c = {0};
  assert_int_equal(ana_local_spool_each(db, 1234, 10000, check_seq_order, &c, &err), 6000 - 1234);
  assert_int_equal(c.bad, 0);
}

/* The staged backlog is bounded (STORE_STAGING_MAX_EVENTS): a commit that
 * does not fit waits up to STORE_STAGING_WAIT, then answers UNAVAILABLE,
 * naming the variable, and stores nothing; once the mover made room the
 * retry is stored. */
static void staging_backlog_is_bounded(void **state) {
  (void)state;
  ana_local_staging_set_limits(db, 1000, 200);
  ana_local_staging_hold(db, true);
  commit_records(1000, "b0", "bounded");
  assert_int_equal(last_rc, 0);
  int64_t t0 = ana_clock_mono_ms();
  commit_records(10, "b1", "bounded");
  assert_int_equal(last_rc, ANA_ERR_FULL);
  assert_true(ana_clock_mono_ms() - t0 >= 190);
  assert_non_null(strstr(last_message, "STORE_STAGING_MAX_EVENTS"));
  ana_local_staging_set_limits(db, 1000, 10000);
  ana_local_staging_hold(db, false);
  commit_records(10, "b1", "bounded");
  assert_int_equal(last_rc, 0);
  int n = 0;
  struct ana_error err;
  assert_int_equal(
      ops->scan(store, "acct-1", INT64_MIN, INT64_MAX, NULL, 0, count_scanned, &n, &err), 0);
  assert_int_equal(n, 1010);
}

/* A copy of the files taken while events were staged and not moved (what a
 * kill -9 leaves): the next start moves them, each once. */
static void staged_events_left_by_a_crash_are_moved_at_start(void **state) {
  (void)state;
  ana_local_staging_hold(db, true);
  commit_records(1000, "c0", "crashed");
  commit_records(500, "c1", "crashed");
  assert_int_equal(last_rc, 0);
  char copy[128], cmd[512];
  snprintf(copy, sizeof copy, "%s/copy", dir);
  snprintf(cmd, sizeof cmd, "mkdir %s && cp %s/analytics.db %s/analytics.db-wal %s/", copy, dir,
           dir, copy);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "cp %s/analytics-journal.db %s/analytics-journal.db-wal %s/", dir, dir,
           copy);
  assert_int_equal(system(cmd), 0);
  ana_local_staging_hold(db, false);
  struct ana_error err;
  struct ana_local_db *again = ana_local_db_open(copy, &err);
  assert_non_null(again);
  uint64_t last = 0;
  assert_int_equal(ana_local_spool_last_seq(again, &last, &err), 0);
  assert_int_equal(last, 1500);
  assert_int_equal(ana_local_staging_wait(again, UINT64_MAX, &err), 0);
  sqlite3 *w = ana_local_db_writer(again);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 1500);
  assert_int_equal(query_int(w, "SELECT count(DISTINCT event_id) FROM events"), 1500);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events_staged"), 0);
  ana_local_db_close(again);
}

static int count_spooled(void *ctx, const struct ana_spooled_event *ev, struct ana_error *err) {
  (void)ctx;
  (void)ev;
  (void)err;
  return 0;
}

/* The acknowledged commit takes no lock of analytics.db (it writes the
 * journal only): a writer holding analytics.db's write lock (as the mover
 * does for a whole move) does not hold it back. An account already numbered
 * is looked up without a lock. */
static void commit_is_not_held_by_a_writer_of_analytics_db(void **state) {
  (void)state;
  commit_records(10, "first", "numbered"); /* acct-1 gets its number */
  assert_int_equal(last_rc, 0);
  struct ana_error err;
  sqlite3 *other = ana_local_db_connect(db, &err);
  assert_non_null(other);
  assert_int_equal(
      sqlite3_exec(other, "BEGIN IMMEDIATE; CREATE TABLE lock_probe(x)", NULL, NULL, NULL),
      SQLITE_OK);
  int64_t t0 = ana_clock_mono_ms();
  commit_records(1000, "free", "unheld");
  assert_int_equal(last_rc, 0);
  commit_records(1000, "free2", "unheld");
  assert_int_equal(last_rc, 0);
  assert_true(ana_clock_mono_ms() - t0 < 2000);
  assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  assert_int_equal(query_int(ana_local_db_writer(db), "SELECT count(*) FROM events"), 2010);
}

/* Files as a kill -9 leaves them between the mover's two commits: the move
 * committed in analytics.db (its events and its watermark), the deletion of
 * its staged rows from the journal not. The next start moves nothing twice:
 * the rows at or below the watermark are deleted, not moved again. */
static void staged_rows_of_a_committed_move_are_not_moved_again(void **state) {
  (void)state;
  ana_local_staging_hold(db, true);
  commit_records(1000, "m0", "moved");
  commit_records(500, "m1", "moved");
  assert_int_equal(last_rc, 0);
  char copy[128], cmd[512];
  snprintf(copy, sizeof copy, "%s/copy", dir);
  /* The journal while the rows are staged... */
  snprintf(cmd, sizeof cmd,
           "mkdir %s && cp %s/analytics-journal.db %s/analytics-journal.db-wal %s/", copy, dir, dir,
           copy);
  assert_int_equal(system(cmd), 0);
  ana_local_staging_hold(db, false);
  struct ana_error err;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  /* ...analytics.db once they are moved. */
  snprintf(cmd, sizeof cmd, "cp %s/analytics.db %s/analytics.db-wal %s/", dir, dir, copy);
  assert_int_equal(system(cmd), 0);
  struct ana_local_db *again = ana_local_db_open(copy, &err);
  assert_non_null(again);
  assert_int_equal(ana_local_staging_wait(again, UINT64_MAX, &err), 0);
  sqlite3 *w = ana_local_db_writer(again);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 1500);
  assert_int_equal(query_int(w, "SELECT count(DISTINCT event_id) FROM events"), 1500);
  assert_int_equal(query_int(w, "SELECT count(*) FROM journal.events_staged"), 0);
  assert_int_equal(query_int(w, "SELECT upto FROM events_moved"), 1500);
  /* The spool reads each event once (events and staged rows together). */
  assert_int_equal(ana_local_spool_each(again, 0, 5000, count_spooled, NULL, &err), 1500);
  ana_local_db_close(again);
}

/* Claims records like commit_records(n, prefix) on db in a transaction it
 * rolls back; returns how many were duplicates. */
static int duplicates_of(struct ana_local_db *d, int n, const char *prefix) {
  struct ana_event_record *r = calloc((size_t)n, sizeof *r);
  char(*ids)[16] = calloc((size_t)n, sizeof *ids);
  assert_non_null(r);
  assert_non_null(ids);
  fill_records(r, ids, n, prefix, "again");
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(d, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(d, r, (size_t)n, &err), 0);
  ana_local_db_rollback(d);
  int dups = 0;
  for (int i = 0; i < n; i++)
    dups += r[i].duplicate;
  free(ids);
  free(r);
  return dups;
}

/* A store of schema 26 (the commit's tables in analytics.db, no journal
 * file) with staged events opens: the tables move into the journal, the
 * staged events are moved into events, the keys still find duplicates; and
 * so does one a kill -9 left after the copy into the journal committed and
 * before the drop from analytics.db (the tables in both files). */
static void store_before_the_journal_is_migrated_on_start(void **state) {
  (void)state;
  ana_local_staging_hold(db, true);
  commit_records(800, "j0", "journal");
  commit_records(200, "j1", "journal");
  assert_int_equal(last_rc, 0);
  for (int half = 0; half < 2; half++) {
    char copy[128], path[160], cmd[1024];
    snprintf(copy, sizeof copy, "%s/copy%d", dir, half);
    snprintf(cmd, sizeof cmd,
             "mkdir %s && cp %s/analytics.db %s/analytics.db-wal %s/analytics-journal.db"
             " %s/analytics-journal.db-wal %s/",
             copy, dir, dir, dir, dir, copy);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/analytics.db", copy);
    sqlite3 *conn = NULL;
    assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
    fold_journal_in(conn, copy);
    assert_int_equal(query_int(conn, "SELECT sum(n) FROM events_staged"), 1000);
    if (half) { /* the copy into the journal committed, the drop not */
      snprintf(path, sizeof path, "%s/analytics-journal.db", copy);
      snprintf(cmd, sizeof cmd, "ATTACH DATABASE '%s' AS journal", path);
      assert_int_equal(sqlite3_exec(conn, cmd, NULL, NULL, NULL), SQLITE_OK);
      static const char *const tables[] = {"events_staged", "event_seq",     "dedupe_meta",
                                           "dedupe_runs",   "dedupe_chunks", "dedupe_filters"};
      for (int t = 0; t < 6; t++) {
        snprintf(cmd, sizeof cmd,
                 "CREATE TABLE journal.%s AS SELECT * FROM main.%s WHERE 0;"
                 "INSERT INTO journal.%s SELECT * FROM main.%s",
                 tables[t], tables[t], tables[t], tables[t]);
        assert_int_equal(sqlite3_exec(conn, cmd, NULL, NULL, NULL), SQLITE_OK);
      }
    }
    sqlite3_close(conn);
    struct ana_error err;
    struct ana_local_db *again = ana_local_db_open(copy, &err);
    assert_non_null(again);
    assert_int_equal(ana_local_db_schema_version(again), SCHEMA_VERSION);
    assert_int_equal(ana_local_staging_wait(again, UINT64_MAX, &err), 0);
    sqlite3 *w = ana_local_db_writer(again);
    assert_int_equal(query_int(w, "SELECT count(*) FROM main.sqlite_schema WHERE name IN"
                                  " ('events_staged', 'event_seq', 'dedupe_runs', 'dedupe_chunks',"
                                  " 'dedupe_filters', 'dedupe_meta')"),
                     0);
    assert_int_equal(query_int(w, "SELECT count(*) FROM events"), 1000);
    assert_int_equal(query_int(w, "SELECT count(DISTINCT event_id) FROM events"), 1000);
    assert_int_equal(query_int(w, "SELECT count(*) FROM journal.events_staged"), 0);
    assert_int_equal(query_int(w, "SELECT last FROM journal.event_seq"), 1000);
    assert_int_equal(duplicates_of(again, 800, "j0"), 800);
    assert_int_equal(duplicates_of(again, 200, "j1"), 200);
    assert_int_equal(duplicates_of(again, 10, "new"), 0);
    ana_local_db_close(again);
  }
  ana_local_staging_hold(db, false);
}

/* SQL that turns this build's events table back into the one before the
 * event type and name were numbered (text columns, seq stored, the event
 * id in events_by_time_name), with what it holds. */
#define EVENTS_BEFORE_STRINGS                                                                      \
  "CREATE TABLE old_events (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL,"                        \
  "  account_id INTEGER NOT NULL, event_id BLOB NOT NULL, session_id TEXT NOT NULL DEFAULT '',"    \
  "  event_type TEXT NOT NULL, event_name TEXT NOT NULL, ts INTEGER NOT NULL,"                     \
  "  received_delta INTEGER NOT NULL, body BLOB NOT NULL);"                                        \
  "INSERT INTO old_events SELECT key, seq, account_id, event_id, session_id,"                      \
  "  (SELECT name FROM event_strings WHERE id = event_type),"                                      \
  "  (SELECT name FROM event_strings WHERE id = event_name),"                                      \
  "  ts, received_delta, body FROM events ORDER BY key;"                                           \
  "DROP TABLE events; DROP TABLE event_strings;"                                                   \
  "ALTER TABLE old_events RENAME TO events;"                                                       \
  "CREATE UNIQUE INDEX events_by_seq ON events(seq);"                                              \
  "CREATE INDEX events_by_time_name ON events(account_id, ts, event_id, event_name);"

/* SQL that turns this build's deduplication keys back into those before
 * each key held its expiry day (the keys, and lists by day: empty here, so
 * that every key never expires once migrated again). */
#define DEDUPE_KEYS_BEFORE_DAYS                                                                    \
  DEDUPE_KEYS_OF_SCHEMA_24                                                                         \
  "CREATE TABLE dedupe_expiry (id INTEGER PRIMARY KEY, keys BLOB NOT NULL);"                       \
  "CREATE TABLE old_keys (account INTEGER NOT NULL, event_id BLOB NOT NULL,"                       \
  "  PRIMARY KEY (account, event_id)) WITHOUT ROWID;"                                              \
  "INSERT INTO old_keys SELECT account, event_id FROM dedupe_keys;"                                \
  "DROP TABLE dedupe_keys; ALTER TABLE old_keys RENAME TO dedupe_keys;"

/* Events as a scan or the spool hands them: id, type, name, time, seq. */
#define NAMED_MAX 200
struct named_events {
  int n;
  char ids[NAMED_MAX][24];
  char types[NAMED_MAX][24];
  char names[NAMED_MAX][24];
  int64_t ts[NAMED_MAX];
  uint64_t seq[NAMED_MAX];
};

static int named_scanned(void *ctx, const struct ana_scanned_event *ev) {
  struct named_events *h = ctx;
  assert_true(h->n < NAMED_MAX);
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", ev->event_id);
  snprintf(h->types[h->n], sizeof h->types[0], "%s", ev->event_type);
  snprintf(h->names[h->n], sizeof h->names[0], "%s", ev->event_name);
  h->ts[h->n] = ev->timestamp_ms;
  h->seq[h->n++] = ev->seq;
  return 0;
}

static int named_spooled(void *ctx, const struct ana_spooled_event *ev, struct ana_error *err) {
  (void)err;
  struct named_events *h = ctx;
  assert_true(h->n < NAMED_MAX);
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", ev->event_id);
  snprintf(h->types[h->n], sizeof h->types[0], "%s", ev->event_type);
  snprintf(h->names[h->n], sizeof h->names[0], "%s", ev->event_name);
  h->ts[h->n] = ev->timestamp_ms;
  h->seq[h->n++] = ev->seq;
  return 0;
}

/* The searches, scans and reads by sequence of the events committed by
 * numbered_names_commit: names and types as sent, ties at one timestamp in
 * event id order (newest first: descending), pages by cursor. */
#define NUMBERED_N 12
static const char *const numbered_names[] = {"sent", "read", "message", ""};

static void numbered_names_commit(int from, int to) {
  struct ana_event_record r[NUMBERED_N];
  char ids[NUMBERED_N][16];
  for (int i = from; i < to; i++) {
    /* ids out of order within each timestamp; three events per timestamp */
    snprintf(ids[i - from], sizeof ids[0], "n%02d", (i * 7) % NUMBERED_N);
    r[i - from] = record(i % 4 == 3 ? "acct-2" : "acct-1", ids[i - from], numbered_names[i % 3],
                         NOW - DAY + (i / 3) * 1000, "{}", "numbered");
    r[i - from].event_type = numbered_names[(i + 1) % 4]; /* "" too, and a name as a type */
  }
  struct ana_commit_request req;
  pthread_mutex_lock(&mu);
  int before = done_count;
  pthread_mutex_unlock(&mu);
  assert_int_equal(submit(r, (size_t)(to - from), &req), 0);
  wait_done(before + 1);
  assert_int_equal(last_rc, 0);
}

static void numbered_names_check(int n) {
  struct ana_error err;
  /* acct-1's events, newest first, 2 a page, by cursor. */
  struct ana_event_query q = {.account_id = "acct-1", .limit = 2};
  char want[NUMBERED_N][16];
  int64_t want_ts[NUMBERED_N];
  int k = 0;
  for (int t = (n - 1) / 3; t >= 0; t--) {
    char tie[3][16];
    int m = 0;
    for (int i = t * 3; i < t * 3 + 3 && i < n; i++)
      if (i % 4 != 3)
        snprintf(tie[m++], sizeof tie[0], "n%02d", (i * 7) % NUMBERED_N);
    qsort(tie, (size_t)m, sizeof tie[0], (int (*)(const void *, const void *))strcmp);
    for (int j = m - 1; j >= 0; j--) {
      snprintf(want[k], sizeof want[0], "%s", tie[j]);
      want_ts[k++] = NOW - DAY + t * 1000;
    }
  }
  char cursor[sizeof((struct hits *)0)->ids[0]];
  int seen = 0;
  for (;;) {
    struct hits h = search(q);
    for (int i = 0; i < h.n; i++, seen++) {
      assert_true(seen < k);
      assert_string_equal(h.ids[i], want[seen]);
      assert_int_equal(h.ts[i], want_ts[seen]);
    }
    if (h.n < 2)
      break;
    snprintf(cursor, sizeof cursor, "%s", h.ids[h.n - 1]);
    q.after_cursor = true;
    q.cursor_ts = h.ts[h.n - 1];
    q.cursor_event_id = cursor;
  }
  assert_int_equal(seen, k);
  /* By name and by type, exactly. */
  struct hits h = search((struct ana_event_query){.account_id = "acct-1", .event_name = "read"});
  int reads = 0;
  for (int i = 0; i < n; i++)
    reads += i % 4 != 3 && i % 3 == 1;
  assert_int_equal(h.n, reads);
  h = search((struct ana_event_query){.account_id = "acct-1", .event_type = "sent"});
  int sent_types = 0;
  for (int i = 0; i < n; i++)
    sent_types += i % 4 != 3 && (i + 1) % 4 == 0;
  assert_int_equal(h.n, sent_types);
  h = search((struct ana_event_query){.account_id = "acct-1", .event_name = "never-sent"});
  assert_int_equal(h.n, 0);
  /* The scan of one name, in time order (ties by event id), with its type. */
  static struct named_events sc;
  sc.n = 0;
  const char *names[] = {"sent"};
  assert_int_equal(
      ops->scan(store, "acct-1", INT64_MIN, INT64_MAX, names, 1, named_scanned, &sc, &err), 0);
  for (int i = 0; i < sc.n; i++) {
    assert_string_equal(sc.names[i], "sent");
    if (i > 0)
      assert_true(sc.ts[i] > sc.ts[i - 1] ||
                  (sc.ts[i] == sc.ts[i - 1] && strcmp(sc.ids[i], sc.ids[i - 1]) > 0));
  }
  /* Every event by sequence, its type and name as sent. */
  static struct named_events sp;
  sp.n = 0;
  assert_int_equal(ana_local_spool_each(db, 0, 1000, named_spooled, &sp, &err), n);
  for (int i = 0; i < sp.n; i++) {
    assert_int_equal(sp.seq[i], (uint64_t)i + 1);
    assert_string_equal(sp.names[i], numbered_names[i % 3]);
    assert_string_equal(sp.types[i], numbered_names[(i + 1) % 4]);
  }
  sc.n = 0;
  assert_int_equal(ops->scan_seq(store, "acct-2", 0, UINT64_MAX, named_scanned, &sc, &err), 0);
  for (int i = 0; i < sc.n; i++) {
    int e = (int)sc.seq[i] - 1;
    assert_int_equal(e % 4, 3);
    assert_string_equal(sc.names[i], numbered_names[e % 3]);
    assert_string_equal(sc.types[i], numbered_names[(e + 1) % 4]);
  }
  assert_int_equal(sc.n, n / 4);
}

/* A store whose events rows held their type and name as text, seq in a
 * column and the event id in events_by_time_name: opened, it is migrated
 * (each string once in event_strings, seq given by the key), and every
 * search, scan and read by sequence gives what it gave; new events get
 * numbers for new names and the same numbers for known ones. */
static void store_of_text_names_is_migrated_on_start(void **state) {
  (void)state;
  numbered_names_commit(0, 9);
  close_store();
  char path[128], sql[2048];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  fold_journal(conn);
  assert_int_equal(ana_dedupe_register(conn), 0);
  snprintf(sql, sizeof sql,
           EVENTS_BEFORE_STRINGS DEDUPE_KEYS_BEFORE_DAYS
           "DELETE FROM schema_migrations WHERE version >= %d",
           ana_local_db_migration_containing("CREATE TABLE event_strings"));
  assert_int_equal(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(query_int(conn, "SELECT count(*) FROM events WHERE typeof(event_name) = 'text'"),
                   9);
  sqlite3_close(conn);

  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_strings"), 4);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE typeof(event_name) != 'integer'"
                                "  OR typeof(event_type) != 'integer'"),
                   0);
  /* seq is the key's low bits, in no index: event_days bounds each day's. */
  assert_int_equal(
      query_int(w, "SELECT hidden FROM pragma_table_xinfo('events') WHERE name = 'seq'"), 2);
  check_event_days(w);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE seq != key % 1099511627776"), 0);
  /* ts too, from the key's day and the time within it. */
  assert_int_equal(
      query_int(w, "SELECT hidden FROM pragma_table_xinfo('events') WHERE name = 'ts'"), 2);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ms < 0 OR ms >= 86400000"
                                "  OR ts / 86400000 != key >> 40"),
                   0);
  check_time_runs(w);
  numbered_names_check(9);
  /* New events: a known name keeps its number. */
  close_store();
  open_store();
  struct ana_committer_options o = {.batch_size = 1000,
                                    .processing_interval_ms = 2,
                                    .queue_max = 100000,
                                    .retention_days = 90,
                                    .retention_sweep_interval_ms = 3600000};
  struct ana_error err;
  committer = ana_committer_create(db, &roles, &o, &err);
  assert_non_null(committer);
  numbered_names_commit(9, NUMBERED_N);
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_strings"), 4);
  numbered_names_check(NUMBERED_N);
}

/* ts is generated from the key's day and the time within it: at a day's
 * first and last millisecond, at 0 and before 1970 each event keeps its
 * time, by sequence and newest first. */
static void event_times_at_day_edges_and_before_1970_read_back(void **state) {
  (void)state;
  enum { N = 7 };
  int64_t day0 = NOW / DAY * DAY;
  const int64_t ts[N] = {day0, day0 - 1, 0, -1, -DAY, -DAY - 1, -3 * DAY + 5};
  struct ana_event_record r[N];
  char ids[N][16];
  for (int i = 0; i < N; i++) {
    snprintf(ids[i], sizeof ids[i], "e-%d", i);
    r[i] = record("acct-1", ids[i], "sent", ts[i], "{}", "");
    r[i].expires_at_ms = NOW + DAY;
  }
  struct ana_commit_request req;
  assert_int_equal(submit(r, N, &req), 0);
  wait_done(1);
  assert_int_equal(last_rc, 0);
  struct ana_error err;
  static struct named_events sp;
  sp.n = 0;
  assert_int_equal(ana_local_spool_each(db, 0, 100, named_spooled, &sp, &err), N);
  for (int i = 0; i < N; i++) {
    assert_string_equal(sp.ids[i], ids[i]);
    assert_int_equal(sp.ts[i], ts[i]);
  }
  /* Newest first: the order of ts above. */
  struct hits h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, N);
  for (int i = 0; i < N; i++) {
    assert_string_equal(h.ids[i], ids[i]);
    assert_int_equal(h.ts[i], ts[i]);
  }
  h = search((struct ana_event_query){.account_id = "acct-1", .from_ms = -DAY, .to_ms = 0});
  assert_int_equal(h.n, 2);
  assert_string_equal(h.ids[0], "e-3");
  assert_string_equal(h.ids[1], "e-4");
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM events WHERE ms <= -86400000"
                                "  OR ms >= 86400000"),
                   0);
}

/* More distinct event names than the mover keeps numbers of (they share
 * its slots), in one move: each event keeps its own name. */
static void many_event_names_are_numbered_each_once(void **state) {
  (void)state;
  enum { N = 150 };
  struct ana_event_record r[N];
  char ids[N][16], names[N][24];
  for (int i = 0; i < N; i++) {
    snprintf(ids[i], sizeof ids[i], "m-%d", i);
    snprintf(names[i], sizeof names[i], "name-%d", i % 130);
    r[i] = record("acct-1", ids[i], names[i], NOW - i, "{}", "");
  }
  struct ana_commit_request req;
  assert_int_equal(submit(r, N, &req), 0);
  wait_done(1);
  assert_int_equal(last_rc, 0);
  struct ana_error err;
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(query_int(w, "SELECT count(*) FROM event_strings"), 131); /* and "message" */
  static struct named_events sp;
  sp.n = 0;
  assert_int_equal(ana_local_spool_each(db, 0, 1000, named_spooled, &sp, &err), N);
  for (int i = 0; i < N; i++) {
    assert_string_equal(sp.ids[i], ids[i]);
    assert_string_equal(sp.names[i], names[i]);
    assert_string_equal(sp.types[i], "message");
  }
  struct hits h = search((struct ana_event_query){.account_id = "acct-1", .event_name = "name-7"});
  assert_int_equal(h.n, 2);
  assert_string_equal(h.ids[0], "m-7");
  assert_string_equal(h.ids[1], "m-137");
}

/* A store of the schema before staging (no events_staged) gets the table on
 * start; its events stay, and new commits are staged and read back. */
static void store_before_staging_is_migrated_on_start(void **state) {
  (void)state;
  commit_records(10, "old", "before");
  assert_int_equal(last_rc, 0);
  close_store();
  char path[128];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  fold_journal(conn);
  assert_int_equal(ana_dedupe_register(conn), 0);
  /* Before staging, the events rows had their names as text (a later
   * migration numbers them): every migration from staging on runs again. */
  char sql[2048];
  snprintf(sql, sizeof sql,
           EVENTS_BEFORE_STRINGS DEDUPE_KEYS_BEFORE_DAYS
           "DROP TABLE events_staged;"
           " DELETE FROM schema_migrations WHERE version >= %d",
           ana_local_db_migration_containing("CREATE TABLE IF NOT EXISTS events_staged"));
  assert_int_equal(sqlite3_exec(conn, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(conn);
  open_store();
  assert_int_equal(ana_local_db_schema_version(db), SCHEMA_VERSION);
  sqlite3 *w = ana_local_db_writer(db);
  assert_int_equal(
      query_int(w, "SELECT count(*) FROM journal.sqlite_schema WHERE name = 'events_staged'"), 1);
  struct ana_event_record next = record("acct-1", "new-1", "sent", NOW - 3 * DAY, "{}", "after");
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, &next, 1, &err), 0);
  assert_int_equal(ana_local_spool_append(db, &next, 1, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  assert_int_equal(next.seq, 11);
  struct hits h = search((struct ana_event_query){.account_id = "acct-1"});
  assert_int_equal(h.n, 11);
}

/* The free-text index's reserved tokens as format 2 first wrote them with
 * snprintf (existing indexes hold them; searches spell them again): the
 * tokens written by hand now are the same bytes. */
static void text_index_tokens_are_spelled_as_format_2(void **state) {
  (void)state;
  static const char *const names[] = {"", "message_sent", "\xC3\xA9v\xC3\xA9nement", "a b"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = names[i]; *p; p++)
      h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    char want[ANA_TEXT_TOKEN_MAX], got[ANA_TEXT_TOKEN_MAX];
    snprintf(want, sizeof want, "\xEE\x80\x80n%016llx", (unsigned long long)h);
    ana_text_index_name_token(names[i], got);
    assert_string_equal(got, want);
  }
  static const int64_t buckets[] = {0,          1,  9,      10,        20000,
                                    1790000000, -1, -20000, INT64_MAX, INT64_MIN};
  static const char letters[] = {0, 'd', 'h', 'm', 's'};
  for (int level = 1; level <= ANA_TEXT_INDEX_LEVELS; level++) {
    for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++) {
      char want[ANA_TEXT_TOKEN_MAX], got[ANA_TEXT_TOKEN_MAX];
      snprintf(want, sizeof want, "\xEE\x80\x80%c%llu", letters[level],
               (unsigned long long)buckets[i]);
      ana_text_index_bucket_token(level, buckets[i], got);
      assert_string_equal(got, want);
    }
  }
}

/* Rows of the index file at path matching the FTS5 query q. */
static int fts_matches(const char *path, const char *q) {
  sqlite3 *c = NULL;
  sqlite3_stmt *st = NULL;
  int n = 0;
  assert_int_equal(sqlite3_open(path, &c), SQLITE_OK);
  assert_int_equal(
      sqlite3_prepare_v2(c, "SELECT rowid FROM events_fts WHERE events_fts MATCH ?", -1, &st, NULL),
      SQLITE_OK);
  sqlite3_bind_text(st, 1, q, -1, SQLITE_STATIC);
  while (sqlite3_step(st) == SQLITE_ROW)
    n++;
  sqlite3_finalize(st);
  sqlite3_close(c);
  return n;
}

/* The free-text index takes the events the mover hands over without
 * reading them back (here: events the table does not even hold), only when
 * they follow what it indexed without a gap; the rest it reads from the
 * events. */
static void text_index_indexes_handed_over_events_that_follow_it(void **state) {
  (void)state;
  char tdir[64];
  snprintf(tdir, sizeof tdir, "/tmp/ana-fed-XXXXXX");
  assert_non_null(mkdtemp(tdir));
  struct ana_error err;
  struct ana_local_db *ldb = ana_local_db_open(tdir, &err);
  assert_non_null(ldb);
  struct ana_text_index *ti = ana_text_index_open(ana_local_db_path(ldb), &err);
  assert_non_null(ti);
  struct ana_event_record r[3];
  char ids[3][8];
  for (int i = 0; i < 3; i++) {
    snprintf(ids[i], sizeof ids[i], "f%d", i);
    r[i] = record("acct", ids[i], "sent", NOW - i, "{}", i == 1 ? "" : "handed over");
    r[i].seq = (uint64_t)(3 - i); /* in another order than the sequence */
  }
  ana_text_index_follow(ti, r, 3);
  assert_int_equal(ana_text_index_wait(ti, 3, 10000, &err), 0);
  char *path = ana_text_index_path(ana_local_db_path(ldb));
  assert_int_equal(fts_matches(path, "handed"), 2);
  assert_int_equal(fts_matches(path, "handed AND over"), 2);
  /* 5 and 6 after a gap: not taken; nothing past 3 in the events either. */
  r[0].seq = 5;
  r[1].seq = 6;
  r[0].search_text = r[1].search_text = "gapped";
  ana_text_index_follow(ti, r, 2);
  assert_int_not_equal(ana_text_index_wait(ti, 6, 300, &err), 0);
  assert_int_equal(ana_text_index_indexed_seq(ti), 3);
  assert_int_equal(fts_matches(path, "gapped"), 0);
  ana_free(path);
  ana_text_index_close(ti);
  ana_local_db_close(ldb);
  char cmd[96];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(schema_is_migrated_once, setup, teardown),
      cmocka_unit_test_setup_teardown(a_remote_event_store_drains_the_spool_in_order, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(commits_dedupe_and_sequence, setup, teardown),
      cmocka_unit_test_setup_teardown(dedupe_keys_are_recognised_after_a_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(dedupe_keys_expire_by_day, setup, teardown),
      cmocka_unit_test_setup_teardown(old_dedupe_keys_are_migrated_on_start, setup, teardown),
      cmocka_unit_test_setup_teardown(dedupe_keys_are_found_in_every_run_during_and_after_a_merge,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(dedupe_merged_runs_expire_by_day, setup, teardown),
      cmocka_unit_test_setup_teardown(dedupe_filters_stay_within_their_memory_bound, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(search_filters_paging_and_accounts, setup, teardown),
      cmocka_unit_test_setup_teardown(retention_deletes_events_keys_and_index, setup, teardown),
      cmocka_unit_test_setup_teardown(repeated_retention_step_removes_an_index_entry_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(free_text_finds_each_event_as_soon_as_it_is_acknowledged,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(text_index_is_rebuilt_from_the_events, setup, teardown),
      cmocka_unit_test_setup_teardown(text_index_of_the_first_format_is_rebuilt_contentless, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(free_text_search_says_when_the_index_lags, setup, teardown),
      cmocka_unit_test_setup_teardown(
          rebuilt_index_is_searched_after_retention_took_the_newest_event, setup, teardown),
      cmocka_unit_test_setup_teardown(searches_of_more_shapes_than_kept_statements_answer_right,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(old_format_store_is_migrated_on_start, setup, teardown),
      cmocka_unit_test_setup_teardown(searches_and_scans_by_name_match_unfiltered_ones, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(dictionary_training_does_not_hold_commits, setup, teardown),
      cmocka_unit_test_setup_teardown(retired_dictionary_is_replaced_and_its_bodies_stored_raw,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(time_runs_answer_as_a_brute_force, setup, teardown),
      cmocka_unit_test_setup_teardown(store_of_the_time_index_is_migrated_on_start, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(retention_and_cursors_on_out_of_order_events, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(events_are_read_by_seq_without_an_index_on_it, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(upgrade_moves_the_text_index_out_of_the_events_database,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(upgrade_keeps_alert_tables_an_earlier_build_created, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(event_ids_and_properties_round_trip_in_every_shape, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(store_of_the_previous_row_format_is_migrated_on_start, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(full_database_gives_no_ack_and_stays_intact, setup, teardown),
      cmocka_unit_test_setup_teardown(catalog_objects_by_account_kind_and_name, setup, teardown),
      cmocka_unit_test_setup_teardown(wal_starts_over_under_steady_commits, setup, teardown),
      cmocka_unit_test_setup_teardown(wal_is_kept_at_its_size_with_nothing_to_replay, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(writer_waits_for_another_writer, setup, teardown),
      cmocka_unit_test_setup_teardown(explicit_checkpoint_empties_the_wal, setup, teardown),
      cmocka_unit_test_setup_teardown(staged_events_are_read_right_after_their_commit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(plain_search_and_scan_merge_staged_events, setup, teardown),
      cmocka_unit_test_setup_teardown(plain_reads_during_moves_see_each_event_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(long_scan_merges_staged_events_across_its_snapshots, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(staged_batches_are_handed_off_in_memory, setup, teardown),
      cmocka_unit_test_setup_teardown(staging_backlog_is_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(staged_events_left_by_a_crash_are_moved_at_start, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(staged_rows_of_a_committed_move_are_not_moved_again, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(commit_is_not_held_by_a_writer_of_analytics_db, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(store_before_the_journal_is_migrated_on_start, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(store_before_staging_is_migrated_on_start, setup, teardown),
      cmocka_unit_test_setup_teardown(store_of_text_names_is_migrated_on_start, setup, teardown),
      cmocka_unit_test_setup_teardown(many_event_names_are_numbered_each_once, setup, teardown),
      cmocka_unit_test_setup_teardown(event_times_at_day_edges_and_before_1970_read_back, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(body_frames_with_and_without_the_zstd_magic_read_back, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(dedupe_sweep_goes_on_across_accounts_and_id_kinds, setup,
                                      teardown),
      cmocka_unit_test(text_index_tokens_are_spelled_as_format_2),
      cmocka_unit_test(text_index_indexes_handed_over_events_that_follow_it),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
