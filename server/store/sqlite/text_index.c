/* The free-text index of the embedded event store.
 *
 * Why its own file and thread: indexing an event's text in FTS5 inside the
 * group commit was about a third of a small commit's CPU and 4 of its ~16
 * WAL pages, on every acknowledgement's path. Here a thread indexes the
 * committed events in batches (one transaction per INDEX_BATCH events, far
 * cheaper per event than one per commit), in a database of its own, so it
 * never holds the event writer's lock.
 *
 * Consistency: the index records, in the same transaction as its entries,
 * the commit sequence number up to which it has indexed (`indexed_seq`), so
 * a crash can lose only whole batches, which the thread indexes again from
 * the events. A free-text search first waits until the index has reached
 * the last committed event, so it finds every acknowledged event. Retention
 * removes an event's entry (durably) before the event itself, and only for
 * events already indexed, so the thread can never index a deleted event
 * afterwards. An index ahead of its events (a database restored from an
 * older copy) is rebuilt from scratch.
 *
 * Format 2: an entry per event, its rowid the event's commit sequence,
 * `detail=none` (which events hold a word, not where: a query's word of
 * several tokens is checked against the event's text by the search) and
 * no column sizes. Each entry also holds the reserved tokens of
 * text_index.h (event name, day, hour, minute, second), which is
 * what lets a search walk the matches newest first a stretch of time at a
 * time (event_search.c). An index of an earlier format is built again. The
 * events table has no index on seq: the thread reads the events after its
 * watermark through event_days (event_seq.c), retention and re-encryption
 * name the events by their keys, and a search finds a match's row from its
 * bucket's day (event_search.c).
 *
 * The events are read through the events database attached to the index's
 * connection as `ev`; searches attach the index to their readers as
 * `text`. */
#include "text_index.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "../local/wal_write_vfs.h"
#include "local_db_sql.h"

#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Events per indexing transaction: bounds its memory and how long a
 * retention step, on the commit thread, can wait for it (a few ms). */
#define INDEX_BATCH 1000
/* How often the thread looks for new events when no search waits. */
#define INDEX_INTERVAL_MS 100
#define BUSY_TIMEOUT_MS 10000
/* Events handed over by the mover and held for indexing, at most. */
#define FED_MAX 65536

/* An event the mover handed over: its text and name in one allocation. */
struct fed_event {
  int64_t seq, ts;
  char *words; /* owned; the name follows the words' NUL */
  const char *name;
};

struct ana_text_index {
  sqlite3 *conn;           /* the index, with the events attached as `ev` */
  pthread_mutex_t conn_mu; /* one user of conn at a time */
  sqlite3_stmt *select_new, *insert, *set_progress, *select_one, *exists, *remove;
  char *doc; /* an entry's text, built by entry_text */
  size_t doc_cap;

  /* The events the mover handed over (ana_text_index_follow) and not yet
   * indexed, in sequence order without a gap: a batch that starts at the
   * first of them is indexed from here rather than read back from the
   * events (a row's seek and its body's decompression per event). */
  pthread_mutex_t fed_mu;
  struct fed_event *fed;
  size_t fed_head, fed_n, fed_cap;
  struct fed_event taken[INDEX_BATCH]; /* the batch's (index thread) */

  pthread_mutex_t mu;
  pthread_cond_t wake;       /* a search waits, or stop */
  pthread_cond_t progressed; /* indexed_seq moved */
  uint64_t indexed_seq;
  uint64_t wanted_seq; /* the highest seq a search waits for */
  bool stop;
  pthread_t thread;
  bool started;
  bool metrics_registered;
};

/* Contentless (content=''): the index keeps the words and which events hold
 * them, not a copy of each event's text (the events table has it), which
 * makes it much smaller (figures in bench/RESULTS.md). A search
 * needs only the matching sequence numbers; removing an entry takes the
 * event's original text, read from the events before they are deleted.
 * progress also keeps the oldest and newest timestamps indexed, which bound
 * a search's walk through time. */
static const char schema[] =
    "CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(search_text, content='',"
    "  detail=none, columnsize=0);"
    "CREATE TABLE IF NOT EXISTS progress ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  indexed_seq INTEGER NOT NULL,"
    "  min_ts INTEGER,"
    "  max_ts INTEGER);"
    "INSERT OR IGNORE INTO progress VALUES (1, 0, NULL, NULL);";

/* U+E000 in UTF-8: the first character of every reserved token. */
#define RESERVED "\xEE\x80\x80"

static const int64_t bucket_ms[ANA_TEXT_INDEX_LEVELS + 1] = {0, 86400000, 3600000, 60000, 1000};
static const char bucket_letter[ANA_TEXT_INDEX_LEVELS + 1] = {0, 'd', 'h', 'm', 's'};

int64_t ana_text_index_bucket_ms(int level) {
  return level >= 1 && level <= ANA_TEXT_INDEX_LEVELS ? bucket_ms[level] : 0;
}

int64_t ana_text_index_bucket(int level, int64_t ts_ms) {
  int64_t unit = ana_text_index_bucket_ms(level);
  int64_t b = ts_ms / unit;
  return b * unit > ts_ms ? b - 1 : b;
}

/* FNV-1a, 64 bits: a name's token only narrows the search (the events'
 * own column decides), so a collision costs time, never a wrong answer. */
static uint64_t fnv1a(const char *s) {
  uint64_t h = 14695981039346656037ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

/* The tokens are written by hand, not by snprintf: an entry has five of
 * them, and formatting them took as long as the entry's FTS5 insert. */

/* RESERVED "n" and the name's hash in 16 lower-case hex digits; returns the
 * length (out has room for ANA_TEXT_TOKEN_MAX bytes, NUL included). */
static size_t put_name_token(char *out, const char *event_name) {
  static const char hex[] = "0123456789abcdef";
  uint64_t h = fnv1a(event_name);
  memcpy(out, RESERVED "n", 4);
  for (int i = 0; i < 16; i++)
    out[4 + i] = hex[(h >> (60 - 4 * i)) & 0xf];
  out[20] = '\0';
  return 20;
}

/* RESERVED, the level's letter and the bucket as an unsigned decimal (a '-'
 * would end the token); returns the length. */
static size_t put_bucket_token(char *out, int level, int64_t bucket) {
  char digits[20];
  size_t n = 0;
  uint64_t v = (uint64_t)bucket;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  memcpy(out, RESERVED, 3);
  out[3] = bucket_letter[level];
  for (size_t i = 0; i < n; i++)
    out[4 + i] = digits[n - 1 - i];
  out[4 + n] = '\0';
  return 4 + n;
}

void ana_text_index_name_token(const char *event_name, char out[ANA_TEXT_TOKEN_MAX]) {
  put_name_token(out, event_name);
}

void ana_text_index_bucket_token(int level, int64_t bucket, char out[ANA_TEXT_TOKEN_MAX]) {
  put_bucket_token(out, level, bucket);
}

/* Writes text folded (U+E000 -> U+E001) at out, which has room for it;
 * returns the bytes written. */
static size_t fold_into(char *out, const char *text) {
  size_t n = 0;
  for (const char *p = text; *p; p++) {
    out[n++] = *p;
    if (p[0] == '\xEE' && p[1] == '\x80' && p[2] == '\x80') {
      out[n++] = *++p;
      out[n++] = '\x81';
      p++;
    }
  }
  out[n] = '\0';
  return n;
}

char *ana_text_index_fold(const char *text) {
  char *out = ana_malloc(strlen(text) + 1);
  if (out)
    fold_into(out, text);
  return out;
}

/* An event's entry: its words, folded, then its reserved tokens; in
 * ti->doc. Returns false when out of memory. */
static bool entry_text(struct ana_text_index *ti, const char *words, const char *event_name,
                       int64_t ts) {
  size_t need = strlen(words) + (ANA_TEXT_INDEX_LEVELS + 1) * (ANA_TEXT_TOKEN_MAX + 1) + 1;
  if (need > ti->doc_cap) {
    char *d = ana_realloc(ti->doc, need);
    if (!d)
      return false;
    ti->doc = d;
    ti->doc_cap = need;
  }
  size_t n = fold_into(ti->doc, words);
  ti->doc[n++] = ' ';
  n += put_name_token(ti->doc + n, event_name);
  for (int level = 1; level <= ANA_TEXT_INDEX_LEVELS; level++) {
    ti->doc[n++] = ' ';
    n += put_bucket_token(ti->doc + n, level, ana_text_index_bucket(level, ts));
  }
  return true;
}

static int fail(sqlite3 *conn, const char *what, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "search index: %s: %s", what,
                conn ? sqlite3_errmsg(conn) : "out of memory");
  return ANA_ERR_IO;
}

static int exec(sqlite3 *conn, const char *sql, struct ana_error *err) {
  return sqlite3_exec(conn, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : fail(conn, sql, err);
}

static int64_t query_int(sqlite3 *conn, const char *sql) {
  sqlite3_stmt *st = NULL;
  int64_t v = -1;
  if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

char *ana_text_index_path(const char *events_db_path) {
  /* analytics.db -> analytics-text.db */
  size_t n = strlen(events_db_path);
  const char *dot = n > 3 && strcmp(events_db_path + n - 3, ".db") == 0 ? events_db_path + n - 3
                                                                        : events_db_path + n;
  size_t stem = (size_t)(dot - events_db_path);
  char *p = ana_malloc(stem + sizeof "-text.db");
  if (p) {
    memcpy(p, events_db_path, stem);
    strcpy(p + stem, "-text.db");
  }
  return p;
}

/* --- the events the mover hands over --- */

/* Frees the held events from index i on. Called with fed_mu held. */
static void fed_drop(struct ana_text_index *ti, size_t i) {
  for (; i < ti->fed_n; i++)
    ana_free(ti->fed[i].words);
  ti->fed_head = ti->fed_n = 0;
}

static int by_seq(const void *a, const void *b) {
  int64_t x = ((const struct fed_event *)a)->seq, y = ((const struct fed_event *)b)->seq;
  return x < y ? -1 : x > y;
}

void ana_text_index_follow(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_text_index *ti = ctx;
  if (n == 0 || n > FED_MAX)
    return;
  struct fed_event *batch = ana_malloc(n * sizeof *batch);
  size_t k = 0;
  for (; batch && k < n; k++) {
    const struct ana_event_record *r = &records[k];
    const char *words = r->search_text ? r->search_text : "";
    const char *name = r->event_name ? r->event_name : "";
    size_t wl = strlen(words), nl = strlen(name);
    char *copy = ana_malloc(wl + nl + 2);
    if (!copy)
      break;
    memcpy(copy, words, wl + 1);
    memcpy(copy + wl + 1, name, nl + 1);
    batch[k] = (struct fed_event){(int64_t)r->seq, r->timestamp_ms, copy, copy + wl + 1};
  }
  pthread_mutex_lock(&ti->fed_mu);
  if (k == n) {
    qsort(batch, n, sizeof *batch, by_seq);
    /* What is held must run on into this batch without a gap, and stays
     * bounded; else it is dropped (the thread reads those events back). */
    if (ti->fed_n > ti->fed_head && ti->fed[ti->fed_n - 1].seq + 1 != batch[0].seq)
      fed_drop(ti, ti->fed_head);
    if (ti->fed_n - ti->fed_head + n > FED_MAX)
      fed_drop(ti, ti->fed_head);
    if (ti->fed_head > 0) {
      memmove(ti->fed, ti->fed + ti->fed_head, (ti->fed_n - ti->fed_head) * sizeof *ti->fed);
      ti->fed_n -= ti->fed_head;
      ti->fed_head = 0;
    }
    if (ti->fed_n + n > ti->fed_cap) {
      size_t cap = ti->fed_n + n < 2 * ti->fed_cap ? 2 * ti->fed_cap : ti->fed_n + n;
      struct fed_event *f = ana_realloc(ti->fed, cap * sizeof *f);
      if (f) {
        ti->fed = f;
        ti->fed_cap = cap;
      }
    }
    if (ti->fed_n + n <= ti->fed_cap) {
      memcpy(ti->fed + ti->fed_n, batch, n * sizeof *batch);
      ti->fed_n += n;
      k = 0; /* now held */
    } else {
      fed_drop(ti, ti->fed_head);
    }
  }
  pthread_mutex_unlock(&ti->fed_mu);
  for (size_t i = 0; batch && i < k; i++)
    ana_free(batch[i].words);
  ana_free(batch);
}

/* The held events that follow event `from` without a gap, up to
 * INDEX_BATCH, moved into ti->taken (those up to `from` are dropped);
 * how many. */
static size_t fed_take(struct ana_text_index *ti, int64_t from) {
  size_t n = 0;
  pthread_mutex_lock(&ti->fed_mu);
  while (ti->fed_head < ti->fed_n && ti->fed[ti->fed_head].seq <= from)
    ana_free(ti->fed[ti->fed_head++].words);
  while (n < INDEX_BATCH && ti->fed_head < ti->fed_n &&
         ti->fed[ti->fed_head].seq == from + 1 + (int64_t)n)
    ti->taken[n++] = ti->fed[ti->fed_head++];
  if (ti->fed_head == ti->fed_n)
    ti->fed_head = ti->fed_n = 0;
  pthread_mutex_unlock(&ti->fed_mu);
  return n;
}

/* Forgets every held event (their texts may be rewritten: the thread
 * reads them from the events). */
static void fed_forget(struct ana_text_index *ti) {
  pthread_mutex_lock(&ti->fed_mu);
  fed_drop(ti, ti->fed_head);
  pthread_mutex_unlock(&ti->fed_mu);
}

/* The entry of event seq (words, name, ts) into the open transaction;
 * no words: nothing to index. */
static int index_one(struct ana_text_index *ti, int64_t seq, const char *words, const char *name,
                     int64_t ts, int64_t *min_ts, int64_t *max_ts) {
  if (!words[0])
    return SQLITE_ROW; /* passed */
  *min_ts = ts < *min_ts ? ts : *min_ts;
  *max_ts = ts > *max_ts ? ts : *max_ts;
  if (!entry_text(ti, words, name, ts))
    return SQLITE_NOMEM;
  sqlite3_reset(ti->insert);
  sqlite3_bind_int64(ti->insert, 1, seq);
  sqlite3_bind_text(ti->insert, 2, ti->doc, -1, SQLITE_STATIC);
  return sqlite3_step(ti->insert) == SQLITE_DONE ? SQLITE_ROW : SQLITE_ERROR;
}

/* A batch's events read from the events (select_new's rows). */
struct batch_rows {
  struct ana_text_index *ti;
  int64_t last, min_ts, max_ts;
  int n, rc;
};

static int index_row(void *ctx, sqlite3_stmt *st) {
  struct batch_rows *b = ctx;
  b->last = sqlite3_column_int64(st, 0);
  b->n++;
  const char *words = (const char *)sqlite3_column_text(st, 1);
  b->rc = index_one(b->ti, b->last, words ? words : "", (const char *)sqlite3_column_text(st, 2),
                    sqlite3_column_int64(st, 3), &b->min_ts, &b->max_ts);
  return b->rc != SQLITE_ROW;
}

/* One transaction: indexes up to INDEX_BATCH events committed after
 * indexed_seq, those the mover handed over when they follow it, else read
 * from the events. Returns how many, or < 0. Called with conn_mu held. */
static int index_batch(struct ana_text_index *ti, uint64_t *indexed, struct ana_error *err) {
  if (exec(ti->conn, "BEGIN", err) < 0)
    return ANA_ERR_IO;
  int64_t from = query_int(ti->conn, "SELECT indexed_seq FROM progress");
  int n = 0;
  int64_t last = from, min_ts = INT64_MAX, max_ts = INT64_MIN;
  int rc = SQLITE_DONE;
  size_t taken = from >= 0 ? fed_take(ti, from) : 0;
  for (size_t i = 0; i < taken; i++) {
    const struct fed_event *e = &ti->taken[i];
    if (rc == SQLITE_DONE) {
      last = e->seq;
      n++;
      if (index_one(ti, e->seq, e->words, e->name, e->ts, &min_ts, &max_ts) != SQLITE_ROW)
        rc = SQLITE_ERROR;
    }
    ana_free(e->words);
  }
  if (!taken && from >= 0) {
    struct batch_rows b = {ti, from, min_ts, max_ts, 0, SQLITE_ROW};
    struct ana_error rerr;
    int got = ana_local_events_by_seq(ti->conn, "ev.", ti->select_new, (uint64_t)from, UINT64_MAX,
                                      INDEX_BATCH, index_row, &b, &rerr);
    rc = got < 0 || b.rc != SQLITE_ROW ? SQLITE_ERROR : SQLITE_DONE;
    last = b.last;
    n = b.n;
    min_ts = b.min_ts;
    max_ts = b.max_ts;
  }
  if (rc != SQLITE_DONE || from < 0)
    goto failed;
  if (n > 0) {
    sqlite3_reset(ti->set_progress);
    sqlite3_bind_int64(ti->set_progress, 1, last);
    if (min_ts <= max_ts) {
      sqlite3_bind_int64(ti->set_progress, 2, min_ts);
      sqlite3_bind_int64(ti->set_progress, 3, max_ts);
    } else {
      sqlite3_bind_null(ti->set_progress, 2);
      sqlite3_bind_null(ti->set_progress, 3);
    }
    if (sqlite3_step(ti->set_progress) != SQLITE_DONE)
      goto failed;
  }
  if (exec(ti->conn, "COMMIT", err) < 0)
    goto rollback;
  *indexed = (uint64_t)last;
  return n;
failed:
  fail(ti->conn, "cannot index events", err);
rollback:
  sqlite3_exec(ti->conn, "ROLLBACK", NULL, NULL, NULL);
  return ANA_ERR_IO;
}

static void publish(struct ana_text_index *ti, uint64_t indexed) {
  pthread_mutex_lock(&ti->mu);
  ti->indexed_seq = indexed;
  pthread_cond_broadcast(&ti->progressed);
  pthread_mutex_unlock(&ti->mu);
}

static bool stopping(struct ana_text_index *ti) {
  pthread_mutex_lock(&ti->mu);
  bool stop = ti->stop;
  pthread_mutex_unlock(&ti->mu);
  return stop;
}

/* Batch after batch until no event is left, or the index is closing (a
 * first build over millions of events must not hold a shutdown up). */
int ana_text_index_catch_up(struct ana_text_index *ti, struct ana_error *err) {
  int n;
  do {
    uint64_t indexed = 0;
    pthread_mutex_lock(&ti->conn_mu);
    n = index_batch(ti, &indexed, err);
    pthread_mutex_unlock(&ti->conn_mu);
    if (n < 0)
      return n;
    publish(ti, indexed);
  } while (n == INDEX_BATCH && !stopping(ti));
  return 0;
}

static void *index_thread(void *arg) {
  struct ana_text_index *ti = arg;
  pthread_setname_np(pthread_self(), "ana-textindex"); /* top -H, /proc/PID/task/TID/comm */
  /* Its batches are background work: as SCHED_BATCH it keeps its share of
   * the CPU but does not preempt the request threads when it wakes, and the
   * ack p99 is lower than with the index inside the commit (figures in
   * bench/RESULTS.md). */
  struct sched_param normal = {0};
  if (pthread_setschedparam(pthread_self(), SCHED_BATCH, &normal) != 0)
    ANA_DEBUG("store", "search index thread: SCHED_BATCH refused; left as it is");
  int64_t pause_ms = INDEX_INTERVAL_MS;
  pthread_mutex_lock(&ti->mu);
  while (!ti->stop) {
    if (ti->wanted_seq <= ti->indexed_seq) {
      struct timespec ts = ana_deadline_in_ms(pause_ms);
      pthread_cond_timedwait(&ti->wake, &ti->mu, &ts);
      if (ti->stop)
        break;
    }
    pthread_mutex_unlock(&ti->mu);
    struct ana_error err;
    ana_error_clear(&err);
    if (ana_text_index_catch_up(ti, &err) < 0) {
      ANA_WARN("store", "%s; retrying", err.message);
      pause_ms = pause_ms < 5000 ? pause_ms * 2 : pause_ms;
    } else {
      pause_ms = INDEX_INTERVAL_MS;
    }
    pthread_mutex_lock(&ti->mu);
    if (pause_ms > INDEX_INTERVAL_MS && ti->wanted_seq > ti->indexed_seq) {
      /* Failing: do not spin on a waiting search. */
      struct timespec ts = ana_deadline_in_ms(pause_ms);
      pthread_cond_timedwait(&ti->wake, &ti->mu, &ts);
    }
  }
  pthread_mutex_unlock(&ti->mu);
  return NULL;
}

int ana_text_index_wait(struct ana_text_index *ti, uint64_t seq, int timeout_ms,
                        struct ana_error *err) {
  struct timespec deadline = ana_deadline_in_ms(timeout_ms);
  pthread_mutex_lock(&ti->mu);
  if (ti->indexed_seq < seq) {
    if (ti->wanted_seq < seq)
      ti->wanted_seq = seq;
    pthread_cond_signal(&ti->wake);
  }
  int rc = 0;
  while (ti->indexed_seq < seq && rc == 0)
    rc = pthread_cond_timedwait(&ti->progressed, &ti->mu, &deadline);
  uint64_t indexed = ti->indexed_seq;
  pthread_mutex_unlock(&ti->mu);
  if (indexed >= seq)
    return 0;
  return ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                       "free-text search: the search index is still catching up (indexed up to "
                       "event %llu of %llu); retry later",
                       (unsigned long long)indexed, (unsigned long long)seq);
}

/* Compared with ana_ingest_last_commit_sequence, it shows how far the
 * index lags behind the commits. */
static void collect(struct ana_prom_writer *w, void *ctx) {
  ana_prom_write_family(w, "ana_search_index_sequence", "gauge",
                        "Commit sequence number up to which the free-text index holds the events.");
  ana_prom_write_u64(w, "ana_search_index_sequence", NULL, ana_text_index_indexed_seq(ctx));
}

uint64_t ana_text_index_indexed_seq(struct ana_text_index *ti) {
  pthread_mutex_lock(&ti->mu);
  uint64_t v = ti->indexed_seq;
  pthread_mutex_unlock(&ti->mu);
  return v;
}

/* Runs `stmt` (remove or insert, bound to the event's sequence and entry
 * text) for the event of key if its entry is there (`if_present`) or is not, which
 * the token of its second tells: every entry holds it. Events gone or
 * without words are left alone. Called with conn_mu held, inside a
 * transaction; `what` names the change in an error. */
static int change_entry(struct ana_text_index *ti, int64_t key, bool if_present, sqlite3_stmt *stmt,
                        const char *what, struct ana_error *err) {
  sqlite3_reset(ti->select_one);
  sqlite3_bind_int64(ti->select_one, 1, key);
  int rc = sqlite3_step(ti->select_one);
  if (rc == SQLITE_DONE || (rc == SQLITE_ROW && sqlite3_column_bytes(ti->select_one, 0) == 0)) {
    sqlite3_reset(ti->select_one);
    return 0; /* gone, or no words: never indexed */
  }
  if (rc != SQLITE_ROW)
    goto failed;
  int64_t ts = sqlite3_column_int64(ti->select_one, 2);
  char tok[ANA_TEXT_TOKEN_MAX], match[ANA_TEXT_TOKEN_MAX + 2];
  ana_text_index_bucket_token(ANA_TEXT_INDEX_LEVELS,
                              ana_text_index_bucket(ANA_TEXT_INDEX_LEVELS, ts), tok);
  snprintf(match, sizeof match, "\"%s\"", tok);
  int64_t seq = key & ((INT64_C(1) << ANA_EVENT_SEQ_BITS) - 1);
  sqlite3_reset(ti->exists);
  sqlite3_bind_int64(ti->exists, 1, seq);
  sqlite3_bind_text(ti->exists, 2, match, -1, SQLITE_STATIC);
  rc = sqlite3_step(ti->exists);
  sqlite3_reset(ti->exists);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    goto failed;
  if ((rc == SQLITE_ROW) != if_present) {
    sqlite3_reset(ti->select_one);
    return 0;
  }
  if (!entry_text(ti, (const char *)sqlite3_column_text(ti->select_one, 0),
                  (const char *)sqlite3_column_text(ti->select_one, 1), ts)) {
    sqlite3_reset(ti->select_one);
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  sqlite3_reset(stmt);
  sqlite3_bind_int64(stmt, 1, seq);
  sqlite3_bind_text(stmt, 2, ti->doc, -1, SQLITE_STATIC);
  rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  sqlite3_reset(ti->select_one);
  if (rc == SQLITE_DONE)
    return 0;
failed:
  sqlite3_reset(ti->select_one);
  return fail(ti->conn, what, err);
}

/* Removes the entry of the event of key, if it has one: removing one twice
 * (a retention step repeated after a crash) would remove its words twice. */
static int remove_one(struct ana_text_index *ti, int64_t key, struct ana_error *err) {
  return change_entry(ti, key, true, ti->remove, "cannot remove an event", err);
}

int ana_text_index_remove(struct ana_text_index *ti, const int64_t *keys, size_t n,
                          struct ana_error *err) {
  if (n == 0)
    return 0;
  fed_forget(ti);
  pthread_mutex_lock(&ti->conn_mu);
  /* FULL for this one: an entry whose event is gone must not come back
   * after a crash (nothing would remove it again). */
  int rc = exec(ti->conn, "PRAGMA synchronous=FULL; BEGIN", err);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = remove_one(ti, keys[i], err);
  if (rc == 0)
    rc = exec(ti->conn, "COMMIT", err);
  if (rc < 0 && !sqlite3_get_autocommit(ti->conn))
    sqlite3_exec(ti->conn, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_exec(ti->conn, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  pthread_mutex_unlock(&ti->conn_mu);
  return rc;
}

/* Indexes the event of key again from its stored text, unless it has an
 * entry, is past indexed_seq (the thread indexes it) or is gone. Called
 * with conn_mu held, inside a transaction. */
static int reindex_one(struct ana_text_index *ti, int64_t key, uint64_t indexed,
                       struct ana_error *err) {
  uint64_t seq = (uint64_t)key & ((UINT64_C(1) << ANA_EVENT_SEQ_BITS) - 1);
  if (seq > indexed)
    return 0;
  return change_entry(ti, key, false, ti->insert, "cannot index an event again", err);
}

int ana_text_index_reindex(struct ana_text_index *ti, const int64_t *keys, size_t n,
                           struct ana_error *err) {
  if (n == 0)
    return 0;
  fed_forget(ti); /* their texts were rewritten */
  uint64_t indexed = ana_text_index_indexed_seq(ti);
  pthread_mutex_lock(&ti->conn_mu);
  int rc = exec(ti->conn, "PRAGMA synchronous=FULL; BEGIN", err);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = reindex_one(ti, keys[i], indexed, err);
  if (rc == 0)
    rc = exec(ti->conn, "COMMIT", err);
  if (rc < 0 && !sqlite3_get_autocommit(ti->conn))
    sqlite3_exec(ti->conn, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_exec(ti->conn, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  pthread_mutex_unlock(&ti->conn_mu);
  return rc;
}

/* FTS5 keeps a removed entry's words (and its delete marker, which lists
 * them again) in its segments until they are merged: 'optimize' merges them
 * all into one, secure_delete zeroes the pages that frees, and a TRUNCATE
 * checkpoint empties the index's WAL, which held them too. */
int ana_text_index_compact(struct ana_text_index *ti, struct ana_error *err) {
  pthread_mutex_lock(&ti->conn_mu);
  int rc = exec(ti->conn,
                "PRAGMA main.secure_delete = ON;"
                " INSERT INTO events_fts(events_fts) VALUES ('optimize')",
                err);
  sqlite3_exec(ti->conn, "PRAGMA main.secure_delete = OFF", NULL, NULL, NULL);
  for (int i = 0; rc == 0 && i < 50; i++) {
    int busy = 1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ti->conn, "PRAGMA main.wal_checkpoint(TRUNCATE)", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      busy = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (!busy)
      break;
    if (i == 49)
      rc = fail(ti->conn, "cannot empty the index's WAL (readers in the way)", err);
    struct timespec pause = {0, 100000000};
    nanosleep(&pause, NULL);
  }
  pthread_mutex_unlock(&ti->conn_mu);
  return rc;
}

/* Opens the connection, creates the schema and prepares the statements. */
static int open_conn(struct ana_text_index *ti, const char *events_db_path, struct ana_error *err) {
  char *path = ana_text_index_path(events_db_path);
  if (!path)
    return fail(NULL, "cannot open", err);
  int rc = sqlite3_open_v2(path, &ti->conn,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           ana_wal_write_vfs());
  ana_free(path);
  if (rc != SQLITE_OK)
    return fail(ti->conn, "cannot open", err);
  sqlite3_busy_timeout(ti->conn, BUSY_TIMEOUT_MS);
  sqlite3_extended_result_codes(ti->conn, 1);
  if (ana_event_body_register(ti->conn) < 0)
    return fail(ti->conn, "cannot open", err);
  /* NORMAL: a batch lost in a crash is indexed again from the events. */
  if (exec(ti->conn, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", err) < 0)
    return ANA_ERR_IO;
  char *attach = sqlite3_mprintf("ATTACH DATABASE %Q AS ev", events_db_path);
  rc = attach ? exec(ti->conn, attach, err) : fail(NULL, "cannot attach the events", err);
  sqlite3_free(attach);
  if (rc < 0)
    return rc;
  /* Like every connection to it, this one leaves the events' WAL file in
   * place when it closes (see local_db.c). */
  int persist_wal = 1;
  sqlite3_file_control(ti->conn, "ev", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
  sqlite3_file_control(ti->conn, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
  /* An index of the first format kept its own copy of the text: it is
   * derived data, so it is built again in the contentless form. */
  if (query_int(ti->conn, "SELECT count(*) FROM sqlite_master WHERE name = 'events_fts_content'") >
      0) {
    ANA_WARN("store", "search index in the earlier format (with its own copy of the text): "
                      "rebuilding it");
    if (exec(ti->conn, "BEGIN; DROP TABLE events_fts; DROP TABLE IF EXISTS progress; COMMIT", err) <
            0 ||
        exec(ti->conn, "VACUUM", err) < 0)
      return ANA_ERR_IO;
  }
  /* An index of the second format (with the words' positions and no
   * reserved tokens): built again in this one. */
  if (query_int(ti->conn, "SELECT count(*) FROM sqlite_master WHERE name = 'events_fts'") > 0 &&
      query_int(ti->conn, "PRAGMA user_version") != ANA_TEXT_INDEX_FORMAT) {
    ANA_WARN("store", "search index in an earlier format (%lld): rebuilding it in format %d",
             (long long)query_int(ti->conn, "PRAGMA user_version"), ANA_TEXT_INDEX_FORMAT);
    if (exec(ti->conn, "BEGIN; DROP TABLE events_fts; DROP TABLE IF EXISTS progress; COMMIT", err) <
            0 ||
        exec(ti->conn, "VACUUM", err) < 0)
      return ANA_ERR_IO;
  }
  /* Created only when missing: an index already in this format is opened
   * without a write, so the server still starts (read-only) on a full disk. */
  if (query_int(ti->conn, "SELECT count(*) FROM sqlite_master WHERE name IN ('events_fts',"
                          " 'progress')") != 2 ||
      query_int(ti->conn, "PRAGMA user_version") != ANA_TEXT_INDEX_FORMAT) {
    char *version = sqlite3_mprintf("%s PRAGMA user_version = %d;", schema, ANA_TEXT_INDEX_FORMAT);
    int src = version ? exec(ti->conn, version, err) : fail(NULL, "cannot create", err);
    sqlite3_free(version);
    if (src < 0)
      return ANA_ERR_IO;
  }
  /* Indexed past the last event moved into the events table (the mover's
   * watermark, events_moved: the index follows the moves): the events
   * database was replaced by an older copy. Build the index again. (Not
   * MAX(seq): retention may have deleted every event.) */
  int64_t indexed = query_int(ti->conn, "SELECT indexed_seq FROM progress");
  int64_t last =
      query_int(ti->conn, "SELECT COALESCE((SELECT upto FROM ev.events_moved WHERE id = 1), 0)");
  if (indexed < 0 || last < 0)
    return fail(ti->conn, "cannot read the progress", err);
  if (indexed > last) {
    ANA_WARN("store", "search index is ahead of the events (%lld > %lld): rebuilding it",
             (long long)indexed, (long long)last);
    if (exec(ti->conn,
             "BEGIN; INSERT INTO events_fts(events_fts) VALUES ('delete-all');"
             " UPDATE progress SET indexed_seq = 0, min_ts = NULL, max_ts = NULL; COMMIT",
             err) < 0)
      return ANA_ERR_IO;
    indexed = 0;
  }
  ti->indexed_seq = (uint64_t)indexed;
  if (sqlite3_prepare_v3(
          ti->conn,
          "SELECT seq, ana_event_text(body),"
          " (SELECT s.name FROM ev.event_strings s WHERE s.id = event_name), ts FROM ev.events"
          " WHERE key = ?1",
          -1, SQLITE_PREPARE_PERSISTENT, &ti->select_new, NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(ti->conn, "INSERT INTO events_fts (rowid, search_text) VALUES (?, ?)", -1,
                         SQLITE_PREPARE_PERSISTENT, &ti->insert, NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(ti->conn,
                         "UPDATE progress SET indexed_seq = ?1,"
                         " min_ts = min(coalesce(min_ts, ?2), coalesce(?2, min_ts)),"
                         " max_ts = max(coalesce(max_ts, ?3), coalesce(?3, max_ts))",
                         -1, SQLITE_PREPARE_PERSISTENT, &ti->set_progress, NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(
          ti->conn,
          "SELECT ana_event_text(body),"
          " (SELECT s.name FROM ev.event_strings s WHERE s.id = event_name), ts FROM ev.events"
          " WHERE key = ?",
          -1, SQLITE_PREPARE_PERSISTENT, &ti->select_one, NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(ti->conn,
                         "SELECT 1 FROM events_fts WHERE rowid = ?1 AND events_fts MATCH ?2", -1,
                         SQLITE_PREPARE_PERSISTENT, &ti->exists, NULL) != SQLITE_OK ||
      sqlite3_prepare_v3(ti->conn,
                         "INSERT INTO events_fts (events_fts, rowid, search_text)"
                         " VALUES ('delete', ?, ?)",
                         -1, SQLITE_PREPARE_PERSISTENT, &ti->remove, NULL) != SQLITE_OK)
    return fail(ti->conn, "cannot prepare", err);
  return 0;
}

struct ana_text_index *ana_text_index_open(const char *events_db_path, struct ana_error *err) {
  struct ana_text_index *ti = ana_calloc(1, sizeof *ti);
  if (!ti) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&ti->conn_mu, NULL);
  pthread_mutex_init(&ti->fed_mu, NULL);
  pthread_mutex_init(&ti->mu, NULL);
  pthread_cond_init(&ti->wake, NULL);
  pthread_cond_init(&ti->progressed, NULL);
  if (open_conn(ti, events_db_path, err) < 0)
    goto fail;
  if (pthread_create(&ti->thread, NULL, index_thread, ti) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the search index thread");
    goto fail;
  }
  ti->started = true;
  ti->metrics_registered = ana_prom_register(collect, ti) == 0;
  return ti;
fail:
  ana_text_index_close(ti);
  return NULL;
}

void ana_text_index_close(struct ana_text_index *ti) {
  if (!ti)
    return;
  if (ti->metrics_registered)
    ana_prom_unregister(collect, ti);
  if (ti->started) {
    pthread_mutex_lock(&ti->mu);
    ti->stop = true;
    pthread_cond_signal(&ti->wake);
    pthread_mutex_unlock(&ti->mu);
    pthread_join(ti->thread, NULL);
  }
  sqlite3_finalize(ti->select_new);
  sqlite3_finalize(ti->insert);
  sqlite3_finalize(ti->set_progress);
  sqlite3_finalize(ti->select_one);
  sqlite3_finalize(ti->exists);
  sqlite3_finalize(ti->remove);
  ana_free(ti->doc);
  fed_drop(ti, ti->fed_head);
  ana_free(ti->fed);
  sqlite3_close(ti->conn);
  pthread_mutex_destroy(&ti->conn_mu);
  pthread_mutex_destroy(&ti->fed_mu);
  pthread_mutex_destroy(&ti->mu);
  pthread_cond_destroy(&ti->wake);
  pthread_cond_destroy(&ti->progressed);
  ana_free(ti);
}
