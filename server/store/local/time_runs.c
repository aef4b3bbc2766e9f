/* The events' time index as sorted runs in table event_time_runs
 * (local_db_sql.h): the mover writes one run per (account, hour) its move
 * touched, in the move's transaction, so that a move appends a few small
 * rows where a B-tree index took an insert at a random page per event; the
 * runs of an hour are merged size-tiered (ana_time_run_merge_count), in
 * transactions of their own while the mover has no backlog, in the move's
 * when an hour holds too many. Readers merge an hour's runs in memory,
 * segment of time by segment (ana_time_cursor_next). */
#include "local_db_sql.h"
#include "sql_stmt.h"
#include "time_runs.h"

#include "ana_alloc.h"

#include <stdlib.h>
#include <string.h>

/* Over this many runs not full, an hour is merged in the move's own
 * transaction. */
#define HARD_RUNS 8
/* Hours waiting for a merge, at most (the rest wait for their next move). */
#define PENDING_MAX 65536

static const char sql_list[] =
    "SELECT run, n FROM event_time_runs WHERE account_id = ?1 AND hour = ?2 ORDER BY run";
static const char sql_insert[] = "INSERT INTO event_time_runs (account_id, hour, run, n, lo, hi,"
                                 " entries) VALUES (?1, ?2, ?3, ?4, ?6, ?7, ?5)";
static const char sql_newest[] = "SELECT n, entries FROM event_time_runs"
                                 " WHERE account_id = ?1 AND hour = ?2 AND run >= ?3";
static const char sql_delete[] =
    "DELETE FROM event_time_runs WHERE account_id = ?1 AND hour = ?2 AND run >= ?3";

/* A move's event in the order of its runs. */
struct sort_item {
  const char *account;
  int64_t hour, ts;
  uint64_t seq;
  size_t i; /* its index in the move's records */
};

struct hour_ref {
  int64_t account, hour;
};

struct ana_time_runs_writer {
  struct sort_item *items;
  size_t n_items, items_cap;
  struct ana_time_entry *e, *tmp;
  size_t e_cap, tmp_cap;
  uint8_t *buf;
  size_t buf_cap;
  int64_t *sizes, *ids;
  size_t sizes_cap, ids_cap;
  struct hour_ref *pending;
  size_t n_pending, pending_cap;
  struct ana_sql_kept kept[4];
};

struct ana_time_runs_writer *ana_time_runs_writer_new(void) {
  return ana_calloc(1, sizeof(struct ana_time_runs_writer));
}

void ana_time_runs_writer_free(struct ana_time_runs_writer *tw) {
  if (!tw)
    return;
  ana_sql_kept_finalize(tw->kept, 4);
  ana_free(tw->items);
  ana_free(tw->e);
  ana_free(tw->tmp);
  ana_free(tw->buf);
  ana_free(tw->sizes);
  ana_free(tw->ids);
  ana_free(tw->pending);
  ana_free(tw);
}

void ana_time_runs_writer_finalize(struct ana_time_runs_writer *tw) {
  ana_sql_kept_finalize(tw->kept, 4);
  memset(tw->kept, 0, sizeof tw->kept);
}

static bool grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return true;
  size_t n = *cap ? *cap : 64;
  while (n < need)
    n *= 2;
  void *q = ana_realloc(*p, n * size);
  if (!q)
    return false;
  *p = q;
  *cap = n;
  return true;
}

static int nomem(struct ana_error *err) {
  return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

static int by_run_order(const void *a, const void *b) {
  const struct sort_item *x = a, *y = b;
  int c = x->account == y->account ? 0 : strcmp(x->account, y->account);
  if (c)
    return c;
  if (x->hour != y->hour)
    return x->hour < y->hour ? -1 : 1;
  if (x->ts != y->ts)
    return x->ts < y->ts ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int ana_time_runs_prepare(struct ana_time_runs_writer *tw, const struct ana_event_record *recs,
                          size_t n, struct ana_error *err) {
  if (!grow((void **)&tw->items, &tw->items_cap, n + 1, sizeof *tw->items))
    return nomem(err);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (recs[i].duplicate)
      continue;
    tw->items[k++] = (struct sort_item){.account = recs[i].account_id,
                                        .hour = ana_time_run_hour(recs[i].timestamp_ms),
                                        .ts = recs[i].timestamp_ms,
                                        .seq = recs[i].seq,
                                        .i = i};
  }
  tw->n_items = k;
  if (k > 1)
    qsort(tw->items, k, sizeof *tw->items, by_run_order);
  return 0;
}

static sqlite3_stmt *kept(struct ana_time_runs_writer *tw, sqlite3 *w, const char *sql,
                          struct ana_error *err) {
  return ana_sql_kept(tw->kept, 4, w, sql, "time index", err);
}

/* The runs of (account, hour), oldest first: their sizes into tw->sizes,
 * their numbers into tw->ids, their count into *k. */
static int list_runs(struct ana_time_runs_writer *tw, sqlite3 *w, int64_t account, int64_t hour,
                     size_t *k_out, struct ana_error *err) {
  sqlite3_stmt *st = kept(tw, w, sql_list, err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_int64(st, 1, account);
  sqlite3_bind_int64(st, 2, hour);
  size_t k = 0;
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (!grow((void **)&tw->sizes, &tw->sizes_cap, k + 2, sizeof *tw->sizes) ||
        !grow((void **)&tw->ids, &tw->ids_cap, k + 2, sizeof *tw->ids)) {
      sqlite3_reset(st);
      return nomem(err);
    }
    tw->ids[k] = sqlite3_column_int64(st, 0);
    tw->sizes[k++] = sqlite3_column_int64(st, 1);
  }
  sqlite3_reset(st);
  if (step != SQLITE_DONE)
    return ana_sql_fail(w, "time index", err);
  *k_out = k;
  return 0;
}

static int insert_run(struct ana_time_runs_writer *tw, sqlite3 *w, int64_t account, int64_t hour,
                      int64_t run, const struct ana_time_entry *e, size_t n,
                      struct ana_error *err) {
  if (!grow((void **)&tw->buf, &tw->buf_cap, ana_time_run_bound(n), 1))
    return nomem(err);
  size_t len = ana_time_run_encode(hour * ANA_TIME_RUN_HOUR_MS, e, n, tw->buf);
  sqlite3_stmt *st = kept(tw, w, sql_insert, err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_int64(st, 1, account);
  sqlite3_bind_int64(st, 2, hour);
  sqlite3_bind_int64(st, 3, run);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)n);
  sqlite3_bind_blob(st, 5, tw->buf, (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, n ? e[0].ts : 0);
  sqlite3_bind_int64(st, 7, n ? e[n - 1].ts : 0);
  int step = sqlite3_step(st);
  sqlite3_reset(st);
  return step == SQLITE_DONE ? 0 : ana_sql_fail(w, "time index", err);
}

/* Merges the newest runs of (account, hour) that the size-tiered rule
 * picks, in w's open transaction: one run in their place, under the
 * newest one's number. Returns the entries rewritten (0: none). */
static long merge_hour(struct ana_time_runs_writer *tw, sqlite3 *w, int64_t account, int64_t hour,
                       struct ana_error *err) {
  size_t k = 0;
  int rc = list_runs(tw, w, account, hour, &k, err);
  if (rc < 0)
    return rc;
  size_t m = ana_time_run_merge_count(tw->sizes, k, HARD_RUNS);
  if (m < 2)
    return 0;
  /* Run numbers only grow: the newest m runs are those from the m-th
   * newest one's number on. */
  int64_t from = tw->ids[k - m], last = tw->ids[k - 1];
  sqlite3_stmt *st;
  size_t total = 0;
  for (size_t i = k - m; i < k; i++)
    total += (size_t)tw->sizes[i];
  if (!grow((void **)&tw->e, &tw->e_cap, total + 1, sizeof *tw->e))
    return nomem(err);
  if (!(st = kept(tw, w, sql_newest, err)))
    return ANA_ERR_IO;
  sqlite3_bind_int64(st, 1, account);
  sqlite3_bind_int64(st, 2, hour);
  sqlite3_bind_int64(st, 3, from);
  size_t n = 0;
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    size_t c = (size_t)sqlite3_column_int64(st, 0);
    const uint8_t *p = sqlite3_column_blob(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    if (n + c > total || !ana_time_run_decode(hour * ANA_TIME_RUN_HOUR_MS, p, len, c, tw->e + n)) {
      sqlite3_reset(st);
      return ana_error_set(err, ANA_STATUS_INTERNAL,
                           "time index: a run of hour %lld cannot be decoded", (long long)hour);
    }
    n += c;
  }
  sqlite3_reset(st);
  if (step != SQLITE_DONE)
    return ana_sql_fail(w, "time index", err);
  if (n > 1)
    qsort(tw->e, n, sizeof *tw->e, ana_time_entry_cmp);
  if (!(st = kept(tw, w, sql_delete, err)))
    return ANA_ERR_IO;
  sqlite3_bind_int64(st, 1, account);
  sqlite3_bind_int64(st, 2, hour);
  sqlite3_bind_int64(st, 3, from);
  step = sqlite3_step(st);
  sqlite3_reset(st);
  if (step != SQLITE_DONE)
    return ana_sql_fail(w, "time index", err);
  rc = insert_run(tw, w, account, hour, last, tw->e, n, err);
  return rc < 0 ? rc : (long)n;
}

static void add_pending(struct ana_time_runs_writer *tw, int64_t account, int64_t hour) {
  if (tw->n_pending >= PENDING_MAX ||
      !grow((void **)&tw->pending, &tw->pending_cap, tw->n_pending + 1, sizeof *tw->pending))
    return; /* merged at the hour's next move, or inline over HARD_RUNS */
  tw->pending[tw->n_pending++] = (struct hour_ref){account, hour};
}

int ana_time_runs_write(struct ana_time_runs_writer *tw, sqlite3 *w,
                        const struct ana_event_record *recs, const struct ana_spool_rows *rows,
                        struct ana_error *err) {
  (void)recs;
  size_t i = 0;
  while (i < tw->n_items) {
    size_t j = i;
    int64_t account = rows->nums[3 * tw->items[i].i], hour = tw->items[i].hour;
    while (j < tw->n_items && tw->items[j].hour == hour &&
           rows->nums[3 * tw->items[j].i] == account)
      j++;
    if (!grow((void **)&tw->tmp, &tw->tmp_cap, j - i + 1, sizeof *tw->tmp))
      return nomem(err);
    for (size_t k = i; k < j; k++)
      tw->tmp[k - i] = (struct ana_time_entry){.ts = tw->items[k].ts,
                                               .name = rows->nums[3 * tw->items[k].i + 2],
                                               .seq = tw->items[k].seq};
    size_t k = 0;
    int rc = list_runs(tw, w, account, hour, &k, err);
    if (rc == 0)
      rc = insert_run(tw, w, account, hour, k ? tw->ids[k - 1] + 1 : 1, tw->tmp, j - i, err);
    if (rc < 0)
      return rc;
    if (!grow((void **)&tw->sizes, &tw->sizes_cap, k + 2, sizeof *tw->sizes))
      return nomem(err);
    tw->sizes[k++] = (int64_t)(j - i);
    size_t open = 0; /* runs not full */
    while (open < k && tw->sizes[k - 1 - open] < ANA_TIME_RUN_FULL)
      open++;
    if (open > HARD_RUNS) {
      long merged = merge_hour(tw, w, account, hour, err);
      if (merged < 0)
        return (int)merged;
    } else if (ana_time_run_merge_count(tw->sizes, k, HARD_RUNS) > 0) {
      add_pending(tw, account, hour);
    }
    i = j;
  }
  return 0;
}

bool ana_time_runs_pending(const struct ana_time_runs_writer *tw) {
  return tw->n_pending > 0;
}

void ana_time_runs_forget_pending(struct ana_time_runs_writer *tw) {
  tw->n_pending = 0;
}

int ana_time_runs_merge_some(struct ana_time_runs_writer *tw, sqlite3 *w, long max_entries,
                             struct ana_error *err) {
  long done = 0;
  while (tw->n_pending > 0 && done < max_entries) {
    struct hour_ref h = tw->pending[tw->n_pending - 1];
    long m = merge_hour(tw, w, h.account, h.hour, err);
    if (m < 0)
      return (int)m;
    if (m == 0)
      tw->n_pending--; /* merged as far as the rule goes */
    done += m;
  }
  return 0;
}

/* --- readers --- */

static void drop_runs(struct ana_time_cursor *c) {
  for (size_t i = 0; i < c->n_runs; i++)
    ana_free(c->runs[i].e);
  c->n_runs = 0;
}

void ana_time_cursor_start(struct ana_time_cursor *c, sqlite3_stmt *st, sqlite3_stmt *get,
                           int64_t account, int64_t lo, int64_t hi, bool desc) {
  c->st = st;
  c->get = get;
  c->account = account;
  c->lo = lo;
  c->hi = hi;
  c->desc = desc;
  drop_runs(c);
  c->step = sqlite3_step(st);
}

/* The hour's runs that may hold entries of [lo, hi), from the rows of st
 * (their entries not read yet). */
static int read_hour(struct ana_time_cursor *c, struct ana_error *err) {
  c->hour = sqlite3_column_int64(c->st, 0);
  while (c->step == SQLITE_ROW && sqlite3_column_int64(c->st, 0) == c->hour) {
    int64_t n = sqlite3_column_int64(c->st, 2), lo = sqlite3_column_int64(c->st, 3),
            hi = sqlite3_column_int64(c->st, 4);
    if (n > 0 && hi >= c->lo && lo < c->hi) {
      if (!grow((void **)&c->runs, &c->runs_cap, c->n_runs + 1, sizeof *c->runs))
        return nomem(err);
      c->runs[c->n_runs++] = (struct ana_time_run_ref){
          .run = sqlite3_column_int64(c->st, 1), .n = n, .lo = lo, .hi = hi, .to = (size_t)n};
    }
    c->step = sqlite3_step(c->st);
  }
  if (c->step != SQLITE_ROW && c->step != SQLITE_DONE)
    return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: time index: %s",
                         sqlite3_errmsg(sqlite3_db_handle(c->st)));
  return 0;
}

/* A run's entries, read and decoded when a segment first needs them. */
static int decode_run(struct ana_time_cursor *c, struct ana_time_run_ref *r,
                      struct ana_error *err) {
  sqlite3_reset(c->get);
  sqlite3_bind_int64(c->get, 1, c->account);
  sqlite3_bind_int64(c->get, 2, c->hour);
  sqlite3_bind_int64(c->get, 3, r->run);
  int rc = 0;
  if (sqlite3_step(c->get) != SQLITE_ROW) {
    rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: time index: %s",
                       sqlite3_errmsg(sqlite3_db_handle(c->get)));
  } else if (!(r->e = ana_malloc(sizeof *r->e * (size_t)r->n))) {
    rc = nomem(err);
  } else if (!ana_time_run_decode(c->hour * ANA_TIME_RUN_HOUR_MS, sqlite3_column_blob(c->get, 0),
                                  (size_t)sqlite3_column_bytes(c->get, 0), (size_t)r->n, r->e)) {
    rc = ana_error_set(err, ANA_STATUS_INTERNAL,
                       "event store: a time index run of hour %lld cannot be decoded",
                       (long long)c->hour);
  }
  sqlite3_reset(c->get);
  return rc;
}

static int64_t run_min(const struct ana_time_run_ref *r) {
  return r->e ? r->e[r->from].ts : r->lo;
}

static int64_t run_max(const struct ana_time_run_ref *r) {
  return r->e ? r->e[r->to - 1].ts : r->hi;
}

/* The next segment: the entries of every run of the hour at or past T in
 * the walk's direction, T being the nearest far end of a run (the largest
 * first time going down, the smallest last time going up), so that the run
 * of T is used up and a run is read only once a segment reaches its time:
 * an import's runs, spread over their hour, make one segment; the runs of
 * events tracked live, disjoint in time, one each (a page reads the newest
 * runs only). */
int ana_time_cursor_next(struct ana_time_cursor *c, struct ana_error *err) {
  for (;;) {
    bool active = false;
    for (size_t i = 0; i < c->n_runs && !active; i++)
      active = c->runs[i].from < c->runs[i].to;
    if (!active) {
      drop_runs(c);
      if (c->step == SQLITE_DONE)
        return 0;
      if (c->step != SQLITE_ROW)
        return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: time index: %s",
                             sqlite3_errmsg(sqlite3_db_handle(c->st)));
      int rc = read_hour(c, err);
      if (rc < 0)
        return rc;
      continue;
    }
    int64_t t = c->desc ? INT64_MIN : INT64_MAX;
    for (size_t i = 0; i < c->n_runs; i++) {
      struct ana_time_run_ref *r = &c->runs[i];
      if (r->from < r->to)
        t = c->desc ? (run_min(r) > t ? run_min(r) : t) : (run_max(r) < t ? run_max(r) : t);
    }
    c->n = 0;
    bool left = false;
    for (size_t i = 0; i < c->n_runs; i++) {
      struct ana_time_run_ref *r = &c->runs[i];
      if (r->from >= r->to || (c->desc ? run_max(r) < t : run_min(r) > t)) {
        left = left || r->from < r->to;
        continue;
      }
      int rc = r->e ? 0 : decode_run(c, r, err);
      if (rc < 0)
        return rc;
      size_t j = c->desc ? r->to : r->from;
      if (c->desc)
        while (j > r->from && r->e[j - 1].ts >= t)
          j--;
      else
        while (j < r->to && r->e[j].ts <= t)
          j++;
      size_t k = c->desc ? r->to - j : j - r->from;
      if (!grow((void **)&c->e, &c->cap, c->n + k + 1, sizeof *c->e))
        return nomem(err);
      memcpy(c->e + c->n, r->e + (c->desc ? j : r->from), k * sizeof *c->e);
      c->n += k;
      if (c->desc)
        r->to = j;
      else
        r->from = j;
      if (r->from >= r->to) {
        ana_free(r->e); /* used up */
        r->e = NULL;
      } else {
        left = true;
      }
    }
    if (c->n > 1)
      qsort(c->e, c->n, sizeof *c->e, ana_time_entry_cmp);
    c->hour_end = !left;
    return 1;
  }
}

void ana_time_cursor_free(struct ana_time_cursor *c) {
  drop_runs(c);
  ana_free(c->runs);
  ana_free(c->e);
  memset(c, 0, sizeof *c);
}

/* --- the migration --- */

static int flush_hour(sqlite3 *db, sqlite3_stmt *ins, int64_t account, int64_t hour,
                      struct ana_time_entry *e, size_t n, uint8_t **buf, size_t *cap) {
  if (n > 1)
    qsort(e, n, sizeof *e, ana_time_entry_cmp);
  if (!grow((void **)buf, cap, ana_time_run_bound(n), 1))
    return SQLITE_NOMEM;
  size_t len = ana_time_run_encode(hour * ANA_TIME_RUN_HOUR_MS, e, n, *buf);
  sqlite3_bind_int64(ins, 1, account);
  sqlite3_bind_int64(ins, 2, hour);
  sqlite3_bind_int64(ins, 3, 1);
  sqlite3_bind_int64(ins, 4, (sqlite3_int64)n);
  sqlite3_bind_blob(ins, 5, *buf, (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 6, e[0].ts);
  sqlite3_bind_int64(ins, 7, e[n - 1].ts);
  int rc = sqlite3_step(ins);
  sqlite3_reset(ins);
  (void)db;
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ana_time_runs_from_events(): one run per (account, hour) of the events
 * table, read in (account, ts) order (the old index's, where it is still
 * there); returns how many runs. */
static void fn_from_events(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  sqlite3_stmt *sel = NULL, *ins = NULL;
  struct ana_time_entry *e = NULL;
  size_t n = 0, cap = 0, buf_cap = 0;
  uint8_t *buf = NULL;
  long long runs = 0;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT account_id, ts, event_name, seq FROM events"
                              " ORDER BY account_id, ts",
                              -1, &sel, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db, sql_insert, -1, &ins, NULL);
  int64_t account = 0, hour = 0;
  while (rc == SQLITE_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
    int64_t a = sqlite3_column_int64(sel, 0), ts = sqlite3_column_int64(sel, 1);
    int64_t h = ana_time_run_hour(ts);
    rc = SQLITE_OK;
    if (n > 0 && (a != account || h != hour)) {
      rc = flush_hour(db, ins, account, hour, e, n, &buf, &buf_cap);
      runs++;
      n = 0;
    }
    account = a;
    hour = h;
    if (rc == SQLITE_OK && !grow((void **)&e, &cap, n + 1, sizeof *e))
      rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK)
      e[n++] = (struct ana_time_entry){.ts = ts,
                                       .name = sqlite3_column_int64(sel, 2),
                                       .seq = (uint64_t)sqlite3_column_int64(sel, 3)};
  }
  if (rc == SQLITE_DONE && n > 0) {
    rc = flush_hour(db, ins, account, hour, e, n, &buf, &buf_cap);
    runs++;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  }
  if (rc == SQLITE_OK)
    sqlite3_result_int64(ctx, runs);
  else if (rc == SQLITE_NOMEM)
    sqlite3_result_error_nomem(ctx);
  else
    sqlite3_result_error(ctx, sqlite3_errmsg(db), -1);
  sqlite3_finalize(sel);
  sqlite3_finalize(ins);
  ana_free(e);
  ana_free(buf);
}

int ana_time_runs_register(sqlite3 *conn) {
  return sqlite3_create_function_v2(conn, "ana_time_runs_from_events", 0, SQLITE_UTF8, NULL,
                                    fn_from_events, NULL, NULL, NULL) == SQLITE_OK
             ? 0
             : ANA_ERR_INTERNAL;
}

int ana_time_runs_drop_day(sqlite3 *w, int64_t day, struct ana_error *err) {
  int64_t first, last;
  ana_time_run_day_hours(day, &first, &last);
  sqlite3_stmt *st = ana_sql_prepare(w,
                                     "DELETE FROM event_time_runs WHERE account_id IN"
                                     " (SELECT id FROM dedupe_accounts) AND hour BETWEEN ?1 AND ?2",
                                     "time index", err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_int64(st, 1, first);
  sqlite3_bind_int64(st, 2, last);
  int step = sqlite3_step(st);
  sqlite3_finalize(st);
  return step == SQLITE_DONE ? 0 : ana_sql_fail(w, "time index", err);
}
