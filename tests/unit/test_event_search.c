/* Unit tests of the embedded store's free-text search (event_search.c over
 * the index of text_index.c): pages over thousands of matches (bursts in
 * one second, equal timestamps, other accounts) equal to the order of the
 * search without free text, with a name, a range and cursors; a word of
 * several tokens matches them adjacent only; the reserved tokens are out of
 * reach of words; an index of the earlier format is built again; an event
 * rewritten (re-encryption) is found by its new words only, its entry made
 * again once however often the steps are repeated (a crash between them);
 * an index built from the events the mover hands over holds what one read
 * back from the events holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_local_db.h"
#include "ana_store.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOW 1790000000000LL
#define DAY 86400000LL
#define MAX_HITS 64

static char dir[64];
static struct ana_local_db *db;
static const struct ana_event_store_ops *eops;
static const struct ana_search_index_ops *sops;
static void *store, *sindex;
static long next_id;

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/ana_test_search.%d", (int)getpid());
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", dir, dir);
  if (system(cmd) != 0)
    return -1;
  struct ana_error err;
  db = ana_local_db_open(dir, &err);
  eops = ana_store_event_backend("sqlite");
  sops = ana_store_search_backend("sqlite");
  store = db ? eops->open(db, &err) : NULL;
  next_id = 0;
  return store ? 0 : -1;
}

static void close_index(void) {
  if (sindex)
    sops->close(sindex);
  sindex = NULL;
}

static int teardown(void **state) {
  (void)state;
  close_index();
  eops->close(store);
  ana_local_db_close(db);
  char cmd[96];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

struct ev {
  const char *account, *name, *text;
  int64_t ts;
  const char *id; /* NULL: a fresh one */
};

/* Commits the events in one transaction, as the committer does. */
static void insert(const struct ev *evs, size_t n) {
  static const uint8_t payload[] = {0x2a, 0x01, 'x'};
  struct ana_event_record *r = calloc(n, sizeof *r);
  char(*ids)[24] = calloc(n, sizeof *ids);
  assert_non_null(r);
  assert_non_null(ids);
  for (size_t i = 0; i < n; i++) {
    if (evs[i].id)
      snprintf(ids[i], sizeof ids[i], "%s", evs[i].id);
    else
      snprintf(ids[i], sizeof ids[i], "e%06ld", next_id++);
    r[i] = (struct ana_event_record){.account_id = evs[i].account,
                                     .event_id = ids[i],
                                     .session_id = "s",
                                     .event_type = "message",
                                     .event_name = evs[i].name,
                                     .timestamp_ms = evs[i].ts,
                                     .received_at_ms = NOW,
                                     .expires_at_ms = evs[i].ts + 90 * DAY,
                                     .properties_json = "{}",
                                     .search_text = evs[i].text,
                                     .payload = payload,
                                     .payload_len = sizeof payload};
  }
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(db, r, n, &err), 0);
  assert_int_equal(ana_local_spool_append(db, r, n, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  free(r);
  free(ids);
}

/* Opens the index (if closed) and waits until it holds every event. */
static void index_all(void) {
  struct ana_error err;
  if (!sindex)
    sindex = sops->open(db, &err);
  assert_non_null(sindex);
  uint64_t last = 0;
  assert_int_equal(ana_local_spool_last_seq(db, &last, &err), 0);
  assert_int_equal(sops->wait(sindex, last, 60000, &err), 0);
}

struct hits {
  int n;
  char ids[MAX_HITS][24];
  int64_t ts[MAX_HITS];
};

static int collect(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                   uint64_t seq) {
  (void)payload;
  (void)len;
  (void)seq;
  struct hits *h = ctx;
  snprintf(h->ids[h->n], sizeof h->ids[0], "%s", id);
  h->ts[h->n++] = ts;
  return h->n == MAX_HITS;
}

static struct hits run(struct ana_event_query q) {
  struct hits h = {0};
  struct ana_error err;
  if (!q.limit)
    q.limit = MAX_HITS;
  if (!q.from_ms && !q.to_ms) {
    q.from_ms = INT64_MIN;
    q.to_ms = INT64_MAX;
  }
  if (q.text)
    assert_int_equal(sops->search(sindex, &q, collect, &h, &err), 0);
  else
    assert_int_equal(eops->search(store, &q, collect, &h, &err), 0);
  return h;
}

/* Every page of q with its free text equals the page of q without it (all
 * the account's events hold the word), following the cursors to the end;
 * returns how many events the pages held. */
static int pages_equal_without_text(struct ana_event_query q, int page) {
  struct ana_event_query plain = q;
  plain.text = NULL;
  q.limit = plain.limit = page;
  char cursor[24];
  int total = 0;
  for (;;) {
    struct hits a = run(q), b = run(plain);
    assert_int_equal(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
      assert_string_equal(a.ids[i], b.ids[i]);
      assert_int_equal(a.ts[i], b.ts[i]);
    }
    total += a.n;
    if (a.n < page)
      return total;
    q.after_cursor = plain.after_cursor = true;
    q.cursor_ts = plain.cursor_ts = a.ts[a.n - 1];
    snprintf(cursor, sizeof cursor, "%s", a.ids[a.n - 1]);
    q.cursor_event_id = plain.cursor_event_id = cursor;
  }
}

/* Thousands of matches of one word: spread over three days, a burst of
 * 1,200 in one second (past what the search reads of a bucket at once, so
 * it goes down to seconds), 300 at one millisecond, and another account's
 * events with the same word. The pages, followed by cursor, are those of
 * the search without free text: same events, same order. */
static void pages_over_many_matches_are_in_the_unindexed_order(void **state) {
  (void)state;
  enum { SPREAD = 1500, BURST = 1200, SAME_MS = 300 };
  struct ev *evs = calloc(SPREAD + BURST + SAME_MS + 200, sizeof *evs);
  assert_non_null(evs);
  static const char *const names[] = {"sent", "read"};
  size_t n = 0;
  srand(7);
  for (int i = 0; i < SPREAD; i++)
    evs[n++] = (struct ev){"acct-1", names[i % 2], "common spread", NOW - rand() % (3 * DAY)};
  for (int i = 0; i < BURST; i++)
    evs[n++] = (struct ev){"acct-1", names[i % 2], "common burst", NOW - DAY + rand() % 1000};
  for (int i = 0; i < SAME_MS; i++)
    evs[n++] = (struct ev){"acct-1", names[i % 2], "common tie", NOW - 2 * DAY};
  for (int i = 0; i < 200; i++)
    evs[n++] = (struct ev){"acct-2", "sent", "common other", NOW - rand() % (3 * DAY)};
  /* Committed in an order unrelated to time, in batches. */
  for (size_t i = 0; i < n; i += 500)
    insert(evs + i, n - i < 500 ? n - i : 500);
  free(evs);
  index_all();

  struct ana_event_query q = {.account_id = "acct-1", .text = "common"};
  assert_int_equal(pages_equal_without_text(q, 50), SPREAD + BURST + SAME_MS);
  assert_int_equal(pages_equal_without_text(q, 64), SPREAD + BURST + SAME_MS);
  q.event_name = "read";
  assert_int_equal(pages_equal_without_text(q, 50), (SPREAD + BURST + SAME_MS) / 2);
  q.event_name = NULL;
  q.from_ms = NOW - DAY - 1;
  q.to_ms = NOW - DAY + 500;
  int in_range = pages_equal_without_text(q, 50);
  assert_true(in_range > BURST / 3 && in_range < BURST);
  q.from_ms = NOW - 3 * DAY;
  q.to_ms = NOW - 2 * DAY + 1;
  q.event_name = "sent";
  assert_true(pages_equal_without_text(q, 50) >= SAME_MS / 2);
  q = (struct ana_event_query){.account_id = "acct-2", .text = "common"};
  assert_int_equal(pages_equal_without_text(q, 50), 200);
  q.text = "common burst";
  assert_int_equal(run(q).n, 0);
}

/* The index keeps which events hold a word, not where: a query's word of
 * several tokens ("message_sent") still matches only where they are
 * adjacent and in order, as a phrase did. */
static void a_word_of_several_tokens_matches_them_adjacent(void **state) {
  (void)state;
  struct ev evs[] = {
      {"acct-1", "message_sent", "message_sent", NOW - 3, "adjacent"},
      {"acct-1", "message_read", "message_read sent", NOW - 2, "apart"},
      {"acct-1", "sent_message", "sent_message", NOW - 1, "reversed"},
  };
  insert(evs, 3);
  index_all();
  struct hits h = run((struct ana_event_query){.account_id = "acct-1", .text = "message_sent"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "adjacent");
  h = run((struct ana_event_query){.account_id = "acct-1", .text = "sent message"});
  assert_int_equal(h.n, 3);
  h = run((struct ana_event_query){.account_id = "acct-1", .text = "SENT-message read"});
  assert_int_equal(h.n, 0);
  h = run((struct ana_event_query){.account_id = "acct-1", .text = "sent-message"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "reversed");
  h = run((struct ana_event_query){.account_id = "acct-1", .text = "!!! ..."});
  assert_int_equal(h.n, 0); /* no word at all: nothing, as before */
}

/* The re-encryption steps: remove the entry, rewrite the row (event
 * store), index it again; each repeated, as after a crash. */
static void rewritten_event_is_found_by_its_new_words_only(void **state) {
  (void)state;
  struct ev evs[] = {
      {"acct-1", "signup", "signup secretword plan", NOW - 2, "target"},
      {"acct-1", "signup", "signup secretword other", NOW - 1, "bystander"},
  };
  insert(evs, 2);
  index_all();
  struct hits h = run((struct ana_event_query){.account_id = "acct-1", .text = "secretword"});
  assert_int_equal(h.n, 2);
  /* The first event committed, named by its reference (its row's key). */
  int64_t seq = ana_local_event_ref(NOW - 2, 1);
  struct ana_error err;
  static const uint8_t payload[] = {0x2a, 0x01, 'y'};
  struct ana_event_record r = {.account_id = "acct-1",
                               .seq = 1,
                               .timestamp_ms = NOW - 2,
                               .properties_json = "{\"email\":\"ana:bi:x\"}",
                               .search_text = "signup plan",
                               .payload = payload,
                               .payload_len = sizeof payload};
  for (int round = 0; round < 2; round++) {
    assert_int_equal(sops->remove(sindex, &seq, 1, &err), 0);
    assert_int_equal(eops->rewrite(store, &r, 1, &err), 1);
    assert_int_equal(sops->reindex(sindex, &seq, 1, &err), 0);
    assert_int_equal(sops->reindex(sindex, &seq, 1, &err), 0); /* once only */
  }
  /* Another account's event of that sequence is not this one: untouched. */
  r.account_id = "acct-2";
  assert_int_equal(eops->rewrite(store, &r, 1, &err), 0);
  assert_int_equal(sops->compact(sindex, &err), 0);
  h = run((struct ana_event_query){.account_id = "acct-1", .text = "secretword"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "bystander");
  h = run((struct ana_event_query){.account_id = "acct-1", .text = "plan"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "target");
  /* Its entry holds its new words exactly once: removing it leaves none. */
  assert_int_equal(sops->remove(sindex, &seq, 1, &err), 0);
  h = run((struct ana_event_query){.account_id = "acct-1", .text = "signup"});
  assert_int_equal(h.n, 1);
}

/* The index's own tokens (account, name, time) begin with U+E000; a query
 * cannot name them, and an event's U+E000 is still found by its word. */
static void reserved_tokens_are_out_of_reach_of_words(void **state) {
  (void)state;
  struct ev evs[] = {{"acct-1", "sent", "plain", NOW, "plain"},
                     {"acct-1", "sent",
                      "x \xEE\x80\x80"
                      "d20000 y",
                      NOW - 1, "private"}};
  insert(evs, 2);
  index_all();
  char query[64];
  /* The day token of NOW's events. */
  snprintf(query, sizeof query,
           "\xEE\x80\x80"
           "d%lld",
           (long long)(NOW / DAY));
  assert_int_equal(run((struct ana_event_query){.account_id = "acct-1", .text = query}).n, 0);
  struct hits h = run((struct ana_event_query){.account_id = "acct-1",
                                               .text = "\xEE\x80\x80"
                                                       "d20000"});
  assert_int_equal(h.n, 1);
  assert_string_equal(h.ids[0], "private");
}

/* An index file of format 1 (contentless, with positions, no reserved
 * tokens, user_version 0) holding an entry the events do not explain is
 * built again in the current format from the events. */
static void text_index_of_format_1_is_rebuilt(void **state) {
  (void)state;
  struct ev evs[] = {{"acct-1", "sent", "durable words", NOW - 5, NULL},
                     {"acct-1", "sent", "durable", NOW - 4, NULL}};
  insert(evs, 2);
  char path[128];
  snprintf(path, sizeof path, "%s/analytics-text.db", dir);
  sqlite3 *c = NULL;
  assert_int_equal(sqlite3_open(path, &c), SQLITE_OK);
  assert_int_equal(sqlite3_exec(c,
                                "CREATE VIRTUAL TABLE events_fts USING fts5(search_text,"
                                " content='');"
                                "CREATE TABLE progress (id INTEGER PRIMARY KEY CHECK (id = 1),"
                                "  indexed_seq INTEGER NOT NULL);"
                                "INSERT INTO progress VALUES (1, 2);"
                                "INSERT INTO events_fts (rowid, search_text) VALUES"
                                "  (1, 'durable words'), (2, 'stale');",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(c);
  index_all();
  assert_int_equal(run((struct ana_event_query){.account_id = "acct-1", .text = "durable"}).n, 2);
  assert_int_equal(run((struct ana_event_query){.account_id = "acct-1", .text = "stale"}).n, 0);
  close_index();
  assert_int_equal(sqlite3_open(path, &c), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(c, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 2);
  sqlite3_finalize(st);
  sqlite3_close(c);
}

/* Every (term, entries) of the index file, one line each (malloc'd). */
static char *index_vocabulary(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/analytics-text.db", dir);
  sqlite3 *c = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open(path, &c), SQLITE_OK);
  assert_int_equal(
      sqlite3_exec(c, "CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, events_fts, row)", NULL,
                   NULL, NULL),
      SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(c, "SELECT term, doc FROM v ORDER BY term", -1, &st, NULL),
                   SQLITE_OK);
  size_t cap = 1 << 16, len = 0;
  char *out = malloc(cap);
  assert_non_null(out);
  out[0] = '\0';
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *term = (const char *)sqlite3_column_text(st, 0);
    if (len + strlen(term) + 32 > cap) {
      cap *= 2;
      out = realloc(out, cap);
      assert_non_null(out);
    }
    len += (size_t)snprintf(out + len, cap - len, "%s %d\n", term, sqlite3_column_int(st, 1));
  }
  sqlite3_finalize(st);
  sqlite3_close(c);
  return out;
}

/* The index built while the events are moved (handed over by the mover)
 * equals the one built again from the events table alone. */
static void index_of_handed_over_events_equals_one_read_back(void **state) {
  (void)state;
  struct ana_error err;
  sindex = sops->open(db, &err); /* open before the commits: the moves hand them over */
  assert_non_null(sindex);
  static const char *const texts[] = {"alpha beta", "",
                                      "gamma \xEE\x80\x80"
                                      "d1 delta",
                                      "caf\xC3\xA9 Alpha", "beta beta"};
  static const char *const names[] = {"sent", "clicked", "read"};
  struct ev evs[300];
  for (int i = 0; i < 300; i++)
    evs[i] = (struct ev){i % 7 ? "acct-1" : "acct-2", names[i % 3], texts[i % 5],
                         NOW - (int64_t)i * 3600001 * 7, NULL};
  for (int i = 0; i < 300; i += 60)
    insert(evs + i, 60);
  index_all();
  char *fed = index_vocabulary();
  assert_non_null(strstr(fed, "alpha "));
  close_index();
  char cmd[sizeof dir * 3 + 96];
  snprintf(cmd, sizeof cmd,
           "rm -f %s/analytics-text.db %s/analytics-text.db-wal %s/analytics-text.db-shm", dir, dir,
           dir);
  assert_int_equal(system(cmd), 0);
  index_all(); /* built again: read back from the events */
  char *read_back = index_vocabulary();
  assert_string_equal(fed, read_back);
  free(fed);
  free(read_back);
  /* alpha: texts[0] and [3] (case folded), events 0, 3, 5, 8, ... of acct-2 (every 7th) */
  int want = 0;
  for (int i = 0; i < 300; i += 7)
    want += i % 5 == 0 || i % 5 == 3;
  assert_int_equal(run((struct ana_event_query){.account_id = "acct-2", .text = "alpha"}).n,
                   want < MAX_HITS ? want : MAX_HITS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(pages_over_many_matches_are_in_the_unindexed_order, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_word_of_several_tokens_matches_them_adjacent, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(reserved_tokens_are_out_of_reach_of_words, setup, teardown),
      cmocka_unit_test_setup_teardown(text_index_of_format_1_is_rebuilt, setup, teardown),
      cmocka_unit_test_setup_teardown(rewritten_event_is_found_by_its_new_words_only, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(index_of_handed_over_events_equals_one_read_back, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
