/* The embedded event store: events in the local database's spool (table
 * events), read in place. Its free-text search is the search index's
 * (search_index.c, over text_index.c); both use the query of event_search.c. */
#include "ana_local_db.h"
#include "local_db_sql.h"
#include "sqlite_backends.h"

#include "ana_alloc.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sqlite_event_store {
  struct ana_local_db *db;
  /* The rewrite's connection (secure_delete on), opened on first use. */
  pthread_mutex_t rewrite_mu;
  sqlite3 *rewriter;
  sqlite3_stmt *update;
};

static int prepare_error(sqlite3 *db, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(db));
  return ANA_ERR_INTERNAL;
}

static void store_close(void *p) {
  struct sqlite_event_store *s = p;
  if (!s)
    return;
  sqlite3_finalize(s->update);
  sqlite3_close(s->rewriter);
  pthread_mutex_destroy(&s->rewrite_mu);
  ana_free(s);
}

static void *store_open(struct ana_local_db *db, struct ana_error *err) {
  struct sqlite_event_store *s = ana_calloc(1, sizeof *s);
  if (!s) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  s->db = db;
  pthread_mutex_init(&s->rewrite_mu, NULL);
  return s;
}

/* The shipper contract, trivially: the committer's spool is this store. */
static int store_ship(void *p, const struct ana_spooled_event *events, size_t n,
                      struct ana_error *err) {
  (void)p;
  (void)events;
  (void)n;
  (void)err;
  return 0;
}

static int store_last_seq(void *p, uint64_t *out, struct ana_error *err) {
  struct sqlite_event_store *s = p;
  return ana_local_spool_last_seq(s->db, out, err);
}

static int store_search(void *p, const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                        struct ana_error *err) {
  struct sqlite_event_store *s = p;
  for (const char *t = q->text; t && *t; t++)
    if (*t != ' ' && *t != '\t' && *t != '\n')
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "event store: free text is the search index's");
  return ana_sqlite_query_events(s->db, NULL, q, hit, ctx, err);
}

/* A row of the scans' SELECT (ts, event_id, event_type, event_name,
 * session_id, properties, seq); its strings live until the next step (a
 * UUID's text in id_buf). */
static struct ana_scanned_event scanned_row(sqlite3_stmt *st,
                                            char id_buf[ANA_EVENT_ID_UUID_LEN + 1]) {
  return (struct ana_scanned_event){
      .timestamp_ms = sqlite3_column_int64(st, 0),
      .event_id = ana_event_id_column(st, 1, id_buf),
      .event_type = (const char *)sqlite3_column_text(st, 2),
      .event_name = (const char *)sqlite3_column_text(st, 3),
      .session_id = (const char *)sqlite3_column_text(st, 4),
      .properties_json = (const char *)sqlite3_column_text(st, 5),
      .seq = (uint64_t)sqlite3_column_int64(st, 6),
  };
}

/* The scans' columns and SELECT (see scanned_row). */
#define SCAN_COLUMNS                                                                               \
  "ts, event_id, " ANA_EVENT_STRING_SQL("event_type") ", " ANA_EVENT_STRING_SQL(                   \
      "event_name") ", session_id, ana_event_props(body), seq"
#define SCAN_SELECT "SELECT " SCAN_COLUMNS " FROM events"

static bool name_wanted(const char *name, const char *const *names, size_t n_names) {
  if (!n_names)
    return true;
  for (size_t i = 0; i < n_names; i++)
    if (name && strcmp(name, names[i]) == 0)
      return true;
  return false;
}

/* A long scan reads in several snapshots, each ended after about this many
 * rows: a read snapshot keeps the checkpoint from copying what was
 * committed after it, and so the WAL from starting over (the event writer
 * then waits, see ana_local_db_set_checkpoint_pages). */
#define SCAN_SNAPSHOT_ROWS 50000

static int scan_error(sqlite3 *r, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: scan failed: %s", sqlite3_errmsg(r));
  return ANA_ERR_IO;
}

/* A tie at one timestamp: read again in event id order. */
struct scan_tie {
  int64_t key;
  char *event_id;
  bool packed; /* stored as 16 bytes (event_ids.c) */
};

/* Ascending as SQLite orders the stored ids: text before blobs, each as
 * their bytes (a UUID's text in the order of its 16 bytes). */
static int id_order(bool packed_a, const char *id_a, bool packed_b, const char *id_b) {
  if (packed_a != packed_b)
    return packed_a ? 1 : -1;
  return strcmp(id_a, id_b);
}

static int tie_order(const void *a, const void *b) {
  const struct scan_tie *x = a, *y = b;
  return id_order(x->packed, x->event_id, y->packed, y->event_id);
}

static int64_t *wanted_names(sqlite3 *r, const char *const *names, size_t n_names, size_t *n_ids,
                             struct ana_error *err) {
  int64_t *ids = ana_malloc(sizeof *ids * (n_names + 1));
  sqlite3_stmt *st = NULL;
  *n_ids = 0;
  if (!ids) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  if (sqlite3_prepare_v2(r, "SELECT " ANA_EVENT_STRING_ID_SQL(1), -1, &st, NULL) != SQLITE_OK) {
    prepare_error(r, err);
    ana_free(ids);
    return NULL;
  }
  for (size_t i = 0; i < n_names; i++) {
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, names[i], -1, SQLITE_STATIC);
    /* A row of NULL (the macro's subquery) for a name never stored. */
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
      ids[(*n_ids)++] = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  return ids;
}

static bool id_wanted(int64_t name, const int64_t *ids, size_t n_ids) {
  for (size_t i = 0; i < n_ids; i++)
    if (ids[i] == name)
      return true;
  return false;
}

/* One scan over the time index's runs (local_db_sql.h). */
struct time_scan {
  sqlite3 *r;
  sqlite3_stmt *row; /* SCAN_SELECT of key ?1 */
  ana_event_scan_fn fn;
  void *ctx;
  struct scan_tie *ties;
  size_t ties_cap;
  long rows;
  bool stop;
};

/* The events of one timestamp, entries e[0..n) (names already checked):
 * read by key, handed on in event id order. */
static int scan_tied(struct time_scan *t, int64_t ts, const struct ana_time_entry *e, size_t n,
                     struct ana_error *err) {
  char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
  int rc = 0;
  size_t k = 0;
  for (size_t i = 0; i < n && rc == 0 && !t->stop; i++) {
    sqlite3_reset(t->row);
    sqlite3_bind_int64(t->row, 1, ana_event_key(ts, e[i].seq));
    int step = sqlite3_step(t->row);
    if (step == SQLITE_DONE)
      continue; /* deleted by retention */
    if (step != SQLITE_ROW) {
      rc = scan_error(t->r, err);
      break;
    }
    t->rows++;
    if (n == 1) {
      struct ana_scanned_event ev = scanned_row(t->row, id_buf);
      t->stop = t->fn(t->ctx, &ev) != 0;
      break;
    }
    if (k == t->ties_cap) {
      size_t cap = t->ties_cap ? 2 * t->ties_cap : 16;
      struct scan_tie *p = ana_realloc(t->ties, cap * sizeof *p);
      if (!p) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      t->ties = p;
      t->ties_cap = cap;
    }
    t->ties[k] = (struct scan_tie){.key = ana_event_key(ts, e[i].seq),
                                   .event_id = ana_strdup(ana_event_id_column(t->row, 1, id_buf)),
                                   .packed = sqlite3_column_type(t->row, 1) == SQLITE_BLOB};
    if (!t->ties[k++].event_id)
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  sqlite3_reset(t->row);
  if (rc == 0 && k > 1)
    qsort(t->ties, k, sizeof *t->ties, tie_order);
  for (size_t i = 0; i < k && rc == 0 && !t->stop; i++) {
    sqlite3_reset(t->row);
    sqlite3_bind_int64(t->row, 1, t->ties[i].key);
    if (sqlite3_step(t->row) != SQLITE_ROW) {
      rc = scan_error(t->r, err);
      break;
    }
    struct ana_scanned_event ev = scanned_row(t->row, id_buf);
    t->stop = t->fn(t->ctx, &ev) != 0;
  }
  sqlite3_reset(t->row);
  for (size_t i = 0; i < k; i++)
    ana_free(t->ties[i].event_id);
  return rc;
}

/* The staged events of a time-range scan (not yet moved by the mover):
 * copied (the decoded batch is gone after the call), then sorted in the
 * scan's order. Each event's strings are at buf + off: its id, type, name,
 * session id and properties, each NUL-terminated. */
struct staged_item {
  int64_t ts;
  uint64_t seq;
  size_t off;
  const char *id; /* buf + off, once every event is in */
  bool packed;    /* the id as stored (event_ids.c): after the ids kept as text */
};
struct staged_scan {
  const char *const *names;
  size_t n_names;
  struct staged_item *v;
  size_t n, cap;
  char *buf;
  size_t len, buf_cap;
  struct ana_error *err;
};

static bool append_str(struct staged_scan *ss, const char *str) {
  size_t l = str ? strlen(str) : 0;
  if (ss->len + l + 1 > ss->buf_cap) {
    size_t cap = ss->buf_cap ? ss->buf_cap * 2 : 65536;
    while (cap < ss->len + l + 1)
      cap *= 2;
    char *b = ana_realloc(ss->buf, cap);
    if (!b)
      return false;
    ss->buf = b;
    ss->buf_cap = cap;
  }
  if (l)
    memcpy(ss->buf + ss->len, str, l);
  ss->buf[ss->len + l] = '\0';
  ss->len += l + 1;
  return true;
}

static int staged_scan_add(void *ctx, const struct ana_event_record *e, struct ana_error *err) {
  (void)err;
  struct staged_scan *ss = ctx;
  if (!name_wanted(e->event_name, ss->names, ss->n_names))
    return 0;
  if (ss->n == ss->cap) {
    size_t cap = ss->cap ? ss->cap * 2 : 256;
    struct staged_item *v = ana_realloc(ss->v, cap * sizeof *v);
    if (!v)
      return ana_error_set(ss->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    ss->v = v;
    ss->cap = cap;
  }
  uint8_t packed[ANA_EVENT_ID_PACKED];
  struct staged_item it = {.ts = e->timestamp_ms,
                           .seq = e->seq,
                           .off = ss->len,
                           .packed = ana_event_id_pack(e->event_id, strlen(e->event_id), packed)};
  if (!append_str(ss, e->event_id) || !append_str(ss, e->event_type) ||
      !append_str(ss, e->event_name) || !append_str(ss, e->session_id) ||
      !append_str(ss, e->properties_json))
    return ana_error_set(ss->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  ss->v[ss->n++] = it;
  return 0;
}

/* The scan's order: time, then the event id as SQLite orders the stored
 * ids (text before blobs; each as its bytes). */
static int scan_order(int64_t ts_a, bool packed_a, const char *id_a, int64_t ts_b, bool packed_b,
                      const char *id_b) {
  if (ts_a != ts_b)
    return ts_a < ts_b ? -1 : 1;
  return id_order(packed_a, id_a, packed_b, id_b);
}

static int by_scan_order(const void *a, const void *b) {
  const struct staged_item *x = a, *y = b;
  return scan_order(x->ts, x->packed, x->id, y->ts, y->packed, y->id);
}

/* Hands on staged event i (see struct staged_scan). */
static int staged_scan_emit(const struct staged_scan *ss, size_t i, ana_event_scan_fn fn,
                            void *ctx) {
  const struct staged_item *it = &ss->v[i];
  const char *id = it->id;
  const char *type = id + strlen(id) + 1;
  const char *name = type + strlen(type) + 1;
  const char *session = name + strlen(name) + 1;
  const char *props = session + strlen(session) + 1;
  struct ana_scanned_event ev = {.timestamp_ms = it->ts,
                                 .event_id = id,
                                 .event_type = type,
                                 .event_name = name,
                                 .session_id = session,
                                 .properties_json = props,
                                 .seq = it->seq};
  return fn(ctx, &ev);
}

/* A time-range scan's table rows merged with its staged events (sorted in
 * the scan's order): each staged event is handed on before the first row
 * it comes before. A row of a later snapshot that the mover moved after the
 * first one (its seq after that snapshot's watermark, up to its last staged
 * event) was handed on from its staged copy already. */
struct merged_scan {
  ana_event_scan_fn fn;
  void *ctx;
  const struct staged_scan *staged;
  size_t next; /* the first staged event not handed on */
  uint64_t moved_lo, moved_hi;
};

static int merged_scan_row(void *ctx, const struct ana_scanned_event *ev) {
  struct merged_scan *m = ctx;
  if (ev->seq > m->moved_lo && ev->seq <= m->moved_hi)
    return 0;
  uint8_t packed_id[ANA_EVENT_ID_PACKED];
  bool packed = ana_event_id_pack(ev->event_id, strlen(ev->event_id), packed_id);
  const struct staged_scan *ss = m->staged;
  for (; m->next < ss->n && scan_order(ss->v[m->next].ts, ss->v[m->next].packed, ss->v[m->next].id,
                                       ev->timestamp_ms, packed, ev->event_id) < 0;
       m->next++)
    if (staged_scan_emit(ss, m->next, m->fn, m->ctx) != 0) {
      m->next++;
      return 1;
    }
  return m->fn(m->ctx, ev);
}

static int store_scan(void *p, const char *account_id, int64_t from_ms, int64_t to_ms,
                      const char *const *names, size_t n_names, ana_event_scan_fn fn, void *ctx,
                      struct ana_error *err) {
  struct sqlite_event_store *s = p;
  /* The account's hours of the range from the first, each hour's runs
   * merged (local_db_sql.h), the time and the names checked on the entries,
   * so that only the wanted events' rows are read; ties at one timestamp in
   * event id order, as ORDER BY ts, event_id. After SCAN_SNAPSHOT_ROWS rows
   * the scan ends its snapshot at the end of an hour and goes on from the
   * next (an hour is read whole in one snapshot). The events not yet moved
   * are read in the first snapshot, beside the table (each committed event
   * is in one of the two: staging.c), and merged into the table's rows in
   * time order (struct merged_scan). */
  if (from_ms >= to_ms)
    return 0;
  int rc = 0;
  struct staged_scan staged = {.names = names, .n_names = n_names, .err = err};
  struct merged_scan ms = {.fn = fn, .ctx = ctx, .staged = &staged};
  sqlite3 *r = ana_local_db_acquire_reader(s->db);
  struct time_scan t = {.r = r, .fn = merged_scan_row, .ctx = &ms};
  sqlite3_stmt *runs = NULL, *get = NULL, *acct = NULL;
  struct ana_time_cursor cur = {0};
  int64_t *ids = NULL, account = 0;
  size_t n_ids = 0;
  if (sqlite3_prepare_v2(r, SCAN_SELECT " WHERE key = ?1", -1, &t.row, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(r, ANA_TIME_RUNS_SQL("ASC"), -1, &runs, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(r, ANA_TIME_RUN_ENTRIES_SQL, -1, &get, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(r, "SELECT " ANA_ACCOUNT_NUMBER_SQL(1), -1, &acct, NULL) != SQLITE_OK) {
    rc = prepare_error(r, err);
    goto out;
  }
  if ((rc = ana_local_read_begin(r, err)) < 0)
    goto out;
  struct ana_staged_range range = {.account_id = account_id, .from_ms = from_ms, .to_ms = to_ms};
  int got = ana_local_staged_range(s->db, r, &range, staged_scan_add, &staged, err);
  if (got < 0) {
    rc = got;
    goto out;
  }
  for (size_t i = 0; i < staged.n; i++)
    staged.v[i].id = staged.buf + staged.v[i].off;
  if (staged.n > 1)
    qsort(staged.v, staged.n, sizeof *staged.v, by_scan_order);
  ms.moved_lo = range.watermark;
  ms.moved_hi = range.staged_upto;
  if (n_names > 0 && !(ids = wanted_names(r, names, n_names, &n_ids, err))) {
    rc = ANA_ERR_IO;
    goto out;
  }
  /* No number for the account, or for any of the names: nothing of it in
   * the table yet (its staged events may still be). */
  sqlite3_bind_text(acct, 1, account_id, -1, SQLITE_STATIC);
  int step = sqlite3_step(acct);
  if (step != SQLITE_ROW && step != SQLITE_DONE) {
    rc = scan_error(r, err);
    goto out;
  }
  bool walk = step == SQLITE_ROW && sqlite3_column_type(acct, 0) != SQLITE_NULL &&
              (n_names == 0 || n_ids > 0);
  if (walk)
    account = sqlite3_column_int64(acct, 0);
  sqlite3_reset(acct);
  int64_t hour = ana_time_run_hour(from_ms), last = ana_time_run_hour(to_ms - 1);
  bool first = true; /* the first snapshot is open already */
  while (walk && rc == 0 && !t.stop && hour <= last) {
    /* One snapshot, from hour on. */
    if (!first && sqlite3_exec(r, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
      rc = scan_error(r, err);
      break;
    }
    first = false;
    sqlite3_reset(runs);
    sqlite3_bind_int64(runs, 1, account);
    sqlite3_bind_int64(runs, 2, hour);
    sqlite3_bind_int64(runs, 3, last);
    ana_time_cursor_start(&cur, runs, get, account, from_ms, to_ms, false);
    t.rows = 0;
    got = 0;
    bool snapshot_end = false;
    while (rc == 0 && !t.stop && !snapshot_end && (got = ana_time_cursor_next(&cur, err)) > 0) {
      for (size_t i = 0; i < cur.n && rc == 0 && !t.stop;) {
        size_t j = i;
        int64_t ts = cur.e[i].ts;
        while (j < cur.n && cur.e[j].ts == ts)
          j++;
        if (ts >= from_ms && ts < to_ms) {
          /* The wanted names' entries of this timestamp, in place. */
          size_t k = i;
          for (size_t e = i; e < j; e++)
            if (n_names == 0 || id_wanted(cur.e[e].name, ids, n_ids))
              cur.e[k++] = cur.e[e];
          if (k > i)
            rc = scan_tied(&t, ts, cur.e + i, k - i, err);
        }
        i = j;
      }
      if (cur.hour_end) { /* a new snapshot may start at the next hour */
        hour = cur.hour + 1;
        snapshot_end = t.rows >= SCAN_SNAPSHOT_ROWS;
      }
    }
    if (rc == 0 && !t.stop && !snapshot_end) {
      if (got < 0)
        rc = got;
      else
        hour = last + 1; /* every hour read */
    }
    sqlite3_reset(runs);
    if (!sqlite3_get_autocommit(r))
      sqlite3_exec(r, "COMMIT", NULL, NULL, NULL);
  }
  /* The staged events after the table's last row. */
  for (; rc == 0 && !t.stop && ms.next < staged.n; ms.next++)
    t.stop = staged_scan_emit(&staged, ms.next, fn, ctx) != 0;
out:
  if (!sqlite3_get_autocommit(r))
    sqlite3_exec(r, "COMMIT", NULL, NULL, NULL);
  ana_time_cursor_free(&cur);
  ana_free(t.ties);
  ana_free(ids);
  sqlite3_finalize(acct);
  sqlite3_finalize(runs);
  sqlite3_finalize(get);
  sqlite3_finalize(t.row);
  ana_local_db_release_reader(s->db, r);
  ana_free(staged.v);
  ana_free(staged.buf);
  return rc;
}

/* The staged part of a scan by sequence. */
struct scan_staged {
  ana_event_scan_fn fn;
  void *ctx;
  bool stop;
};

static int scanned_staged(void *ctx, const struct ana_event_record *r, struct ana_error *err) {
  (void)err;
  struct scan_staged *ss = ctx;
  struct ana_scanned_event ev = {
      .timestamp_ms = r->timestamp_ms,
      .event_id = r->event_id,
      .event_type = r->event_type,
      .event_name = r->event_name,
      .session_id = r->session_id,
      .properties_json = r->properties_json,
      .seq = r->seq,
  };
  if (ss->fn(ss->ctx, &ev)) {
    ss->stop = true;
    return 1;
  }
  return 0;
}

/* One chunk of a scan by sequence: each row handed on, and the last seq. */
struct scan_rows {
  ana_event_scan_fn fn;
  void *ctx;
  uint64_t seen;
  bool stopped; /* fn said stop */
  char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
};

static int scanned_seq_row(void *ctx, sqlite3_stmt *st) {
  struct scan_rows *sr = ctx;
  struct ana_scanned_event ev = scanned_row(st, sr->id_buf);
  sr->seen = ev.seq;
  sr->stopped = sr->fn(sr->ctx, &ev) != 0;
  return sr->stopped;
}

static int store_scan_seq(void *p, const char *account_id, uint64_t after_seq, uint64_t upto_seq,
                          ana_event_scan_fn fn, void *ctx, struct ana_error *err) {
  struct sqlite_event_store *s = p;
  /* A range of seq: a seek into each day's range of the table that may
   * hold some (event_days), the keys sorted by seq, each row read by its
   * key; each row is read once, in commit order, SCAN_SNAPSHOT_ROWS
   * sequence numbers per snapshot, up to the last one stored when it began. */
  const char *sql = "SELECT " SCAN_COLUMNS
                    " FROM events WHERE key = ?1 AND account_id = " ANA_ACCOUNT_NUMBER_SQL(3);
  uint64_t last = 0;
  int rc = ana_local_spool_last_seq(s->db, &last, err);
  if (rc < 0)
    return rc;
  if (upto_seq > last)
    upto_seq = last;
  sqlite3 *r = ana_local_db_acquire_reader(s->db);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(r, sql, -1, &st, NULL) != SQLITE_OK) {
    rc = prepare_error(r, err);
    goto out;
  }
  sqlite3_bind_text(st, 3, account_id, -1, SQLITE_STATIC);
  bool stop = false;
  for (uint64_t lo = after_seq; lo < upto_seq && !stop && rc == 0;) {
    uint64_t hi = upto_seq - lo > SCAN_SNAPSHOT_ROWS ? lo + SCAN_SNAPSHOT_ROWS : upto_seq;
    /* One snapshot of events and of the staged events after them: in it,
     * each committed event is in one of the two (staging.c); and one read
     * transaction for the chunk's lookups by key, not one each. */
    struct ana_local_staging_stats staged;
    ana_local_staging_stats(s->db, &staged);
    bool all_moved = hi <= staged.moved_upto;
    if ((rc = ana_local_read_begin(r, err)) < 0)
      break;
    struct scan_rows sr = {.fn = fn, .ctx = ctx, .seen = lo};
    int got = ana_local_events_by_seq(r, "", st, lo, hi, INT_MAX, scanned_seq_row, &sr, err);
    if (got < 0)
      rc = got;
    stop = sr.stopped;
    if (rc == 0 && !stop && !all_moved) {
      struct scan_staged ss = {fn, ctx, false};
      int n = ana_local_staged_each(r, sr.seen, hi, account_id, INT_MAX, scanned_staged, &ss, err);
      stop = ss.stop;
      rc = n < 0 ? n : 0;
    }
    if (!sqlite3_get_autocommit(r))
      sqlite3_exec(r, "COMMIT", NULL, NULL, NULL);
    lo = hi;
  }
out:
  sqlite3_finalize(st);
  ana_local_db_release_reader(s->db, r);
  return rc;
}

/* Deletes the days before first_kept that hold no event from event_days. */
static int drop_days(sqlite3 *w, int64_t first_kept, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(w,
                         "DELETE FROM event_days WHERE day * 1099511627776 < ?1 AND NOT EXISTS"
                         " (SELECT 1 FROM events WHERE key >= event_days.day * 1099511627776"
                         " AND key < (event_days.day + 1) * 1099511627776)",
                         -1, &st, NULL) != SQLITE_OK)
    return prepare_error(w, err);
  sqlite3_bind_int64(st, 1, first_kept);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: retention failed: %s",
                       sqlite3_errmsg(w));
  sqlite3_finalize(st);
  return rc;
}

/* Deletes up to max_rows events of the UTC days that ended by cutoff_ms
 * (up to upto_seq), after before_delete saw their keys: the first rows of
 * the table (its rowid starts with the day), so that retention removes whole
 * days and rewrites no page of the days it keeps; then the days it emptied
 * from event_days. An event is thus deleted within a day after it passed
 * cutoff_ms. If this transaction then fails, the events stay a little
 * longer (they are past retention already). */
static int store_expire(void *p, int64_t cutoff_ms, uint64_t upto_seq, int max_rows,
                        int (*before_delete)(void *ctx, const int64_t *refs, size_t n,
                                             struct ana_error *err),
                        void *ctx, struct ana_error *err) {
  struct sqlite_event_store *s = p;
  sqlite3 *w = ana_local_db_writer(s->db);
  sqlite3_stmt *st = NULL;
  size_t cap = (size_t)(max_rows > 0 ? max_rows : 1);
  int64_t *keys = ana_malloc(sizeof *keys * cap);
  size_t n = 0;
  /* The first key of the day of cutoff_ms: the first day that is kept. */
  int64_t first_kept = ana_event_key(cutoff_ms, 0);
  int rc = keys ? 0 : ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (rc == 0 && sqlite3_prepare_v2(w,
                                    "SELECT key FROM events WHERE key < ?1 AND seq <= ?2"
                                    " ORDER BY key LIMIT ?3",
                                    -1, &st, NULL) != SQLITE_OK)
    rc = prepare_error(w, err);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, first_kept);
    sqlite3_bind_int64(st, 2, upto_seq > INT64_MAX ? INT64_MAX : (sqlite3_int64)upto_seq);
    sqlite3_bind_int(st, 3, max_rows);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW && n < cap)
      keys[n++] = sqlite3_column_int64(st, 0);
    if (step != SQLITE_DONE && step != SQLITE_ROW)
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: retention failed: %s",
                         sqlite3_errmsg(w));
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc == 0 && n > 0 && before_delete)
    rc = before_delete(ctx, keys, n, err);
  if (rc == 0 && n > 0 &&
      sqlite3_prepare_v2(w, "DELETE FROM events WHERE key = ?", -1, &st, NULL) != SQLITE_OK)
    rc = prepare_error(w, err);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, keys[i]);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: retention failed: %s",
                         sqlite3_errmsg(w));
  }
  sqlite3_finalize(st);
  st = NULL;
  /* The days emptied: their time index's runs go too (the entries of a day
   * only partly deleted so far are skipped by the readers until then). */
  if (rc == 0 && n > 0 &&
      sqlite3_prepare_v2(w,
                         "SELECT day FROM event_days WHERE day * 1099511627776 < ?1 AND NOT EXISTS"
                         " (SELECT 1 FROM events WHERE key >= event_days.day * 1099511627776"
                         " AND key < (event_days.day + 1) * 1099511627776)",
                         -1, &st, NULL) != SQLITE_OK)
    rc = prepare_error(w, err);
  int64_t emptied[64];
  size_t n_emptied = 0;
  while (rc == 0 && n > 0) {
    sqlite3_bind_int64(st, 1, first_kept);
    int step = SQLITE_DONE;
    while (n_emptied < 64 && (step = sqlite3_step(st)) == SQLITE_ROW)
      emptied[n_emptied++] = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: retention failed: %s",
                         sqlite3_errmsg(w));
    for (size_t i = 0; rc == 0 && i < n_emptied; i++)
      rc = ana_time_runs_drop_day(w, emptied[i], err);
    if (rc < 0 || n_emptied < 64)
      break;
    /* More than 64 days emptied at once: those dropped go from event_days
     * first (below), the rest the same way. */
    rc = drop_days(w, first_kept, err);
    n_emptied = 0;
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc == 0 && n > 0)
    rc = drop_days(w, first_kept, err);
  ana_free(keys);
  return rc < 0 ? rc : (int)n;
}

/* The rewrite's connection and statement, under rewrite_mu. secure_delete:
 * SQLite zeroes what the old row occupied, so the old values stay in no free
 * space of the file. The body is stored uncompressed (ana_event_body): the
 * dictionary encoder is the committer's own. */
static int rewriter(struct sqlite_event_store *s, struct ana_error *err) {
  if (s->update)
    return 0;
  if (!s->rewriter && !(s->rewriter = ana_local_db_connect(s->db, err)))
    return ANA_ERR_IO;
  if (sqlite3_exec(s->rewriter, "PRAGMA secure_delete = ON", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(s->rewriter,
                         "UPDATE events SET body = ana_event_body(?4, ?3, ?5, event_id, ts,"
                         " ts + received_delta)"
                         " WHERE key = ?1 AND account_id = " ANA_ACCOUNT_NUMBER_SQL(2),
                         -1, &s->update, NULL) != SQLITE_OK)
    return prepare_error(s->rewriter, err);
  return 0;
}

static int store_rewrite(void *p, const struct ana_event_record *records, size_t n,
                         struct ana_error *err) {
  struct sqlite_event_store *s = p;
  int done = 0;
  uint64_t upto = 0;
  for (size_t i = 0; i < n; i++)
    upto = records[i].seq > upto ? records[i].seq : upto;
  /* The rows to rewrite are in events (staging.c). */
  int rc = ana_local_staging_wait(s->db, upto, err);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&s->rewrite_mu);
  rc = rewriter(s, err);
  if (rc == 0 && sqlite3_exec(s->rewriter, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: rewrite: %s",
                       sqlite3_errmsg(s->rewriter));
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const struct ana_event_record *r = &records[i];
    sqlite3_stmt *st = s->update;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, ana_event_key(r->timestamp_ms, r->seq));
    sqlite3_bind_text(st, 2, r->account_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->properties_json ? r->properties_json : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->search_text ? r->search_text : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, r->payload_len ? (const void *)r->payload : "", (int)r->payload_len,
                      SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: rewrite: %s",
                         sqlite3_errmsg(s->rewriter));
    else
      done += sqlite3_changes(s->rewriter);
    sqlite3_reset(st);
  }
  if (rc == 0 && sqlite3_exec(s->rewriter, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: rewrite: %s",
                       sqlite3_errmsg(s->rewriter));
  if (rc < 0 && s->rewriter && !sqlite3_get_autocommit(s->rewriter))
    sqlite3_exec(s->rewriter, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&s->rewrite_mu);
  return rc < 0 ? ANA_ERR_IO : done;
}

const struct ana_event_store_ops ana_sqlite_event_store = {
    .version = ANA_EVENT_STORE_VERSION,
    .name = "sqlite",
    .open = store_open,
    .ship = store_ship,
    .shipped_seq = store_last_seq,
    .search = store_search,
    .scan = store_scan,
    .scan_seq = store_scan_seq,
    .last_seq = store_last_seq,
    .expire = store_expire,
    .close = store_close,
    .rewrite = store_rewrite,
};
