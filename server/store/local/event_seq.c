/* Moved events by commit sequence without an index on seq: each UTC day's
 * range of the events table holds its events in seq order, and the table
 * event_days bounds the seqs of each day, so a range of seq is a seek into
 * the range of each day that may hold some (local_db_sql.h). */
#include "local_db_sql.h"
#include "sql_stmt.h"

#include "ana_alloc.h"

#include <stdio.h>
#include <stdlib.h>

int64_t ana_local_event_ref(int64_t timestamp_ms, uint64_t seq) {
  return ana_event_key(timestamp_ms, seq);
}

/* A window of seqs read at once (its keys sorted in memory): at most this many. */
#define WINDOW_MAX 50000

/* Seqs fit in the key's low bits. */
#define SEQ_MAX ((INT64_C(1) << ANA_EVENT_SEQ_BITS) - 1)

/* The first seq above after stored in events (schema s): 1 with *next set, 0
 * when none, or a negative error. One seek per day that may hold one. */
static int next_seq(sqlite3 *conn, const char *s, uint64_t after, uint64_t *next,
                    struct ana_error *err) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT min((SELECT key FROM %sevents WHERE key > d.day * %lld + ?1"
           " AND key <= d.day * %lld + d.max_seq ORDER BY key LIMIT 1) & %lld)"
           " FROM %sevent_days d WHERE d.max_seq > ?1",
           s, (long long)(SEQ_MAX + 1), (long long)(SEQ_MAX + 1), (long long)SEQ_MAX, s);
  sqlite3_stmt *st = ana_sql_prepare(conn, sql, "events by sequence", err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
  int rc = sqlite3_step(st);
  int found = 0;
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
    *next = (uint64_t)sqlite3_column_int64(st, 0);
    found = 1;
  } else if (rc != SQLITE_ROW) {
    found = ana_sql_fail(conn, "events by sequence", err);
  }
  sqlite3_finalize(st);
  return found;
}

static int by_seq(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a & SEQ_MAX, y = *(const int64_t *)b & SEQ_MAX;
  return x < y ? -1 : x > y;
}

int ana_local_events_by_seq(sqlite3 *conn, const char *schema, sqlite3_stmt *row, uint64_t after,
                            uint64_t upto, int max, ana_local_seq_row_fn fn, void *ctx,
                            struct ana_error *err) {
  if (upto > (uint64_t)SEQ_MAX)
    upto = (uint64_t)SEQ_MAX;
  /* A window's keys: a seek into each day that may hold some. */
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT e.key FROM %sevent_days d CROSS JOIN %sevents e ON e.key > d.day * %lld + ?1"
           " AND e.key <= d.day * %lld + ?2 WHERE d.max_seq > ?1 AND d.min_seq <= ?2",
           schema, schema, (long long)(SEQ_MAX + 1), (long long)(SEQ_MAX + 1));
  sqlite3_stmt *win = ana_sql_prepare(conn, sql, "events by sequence", err);
  if (!win)
    return ANA_ERR_IO;
  int64_t *keys = NULL;
  size_t cap = 0;
  int n = 0, rc = 0;
  uint64_t lo = after;
  while (n < max && lo < upto && rc == 0) {
    uint64_t span = (uint64_t)(max - n) < WINDOW_MAX ? (uint64_t)(max - n) : WINDOW_MAX;
    uint64_t hi = upto - lo > span ? lo + span : upto;
    if (cap < span) {
      int64_t *k = ana_realloc(keys, span * sizeof *k);
      if (!k) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      keys = k;
      cap = span;
    }
    sqlite3_reset(win);
    sqlite3_bind_int64(win, 1, (sqlite3_int64)lo);
    sqlite3_bind_int64(win, 2, (sqlite3_int64)hi);
    size_t got = 0;
    int step;
    while (got < cap && (step = sqlite3_step(win)) == SQLITE_ROW)
      keys[got++] = sqlite3_column_int64(win, 0);
    sqlite3_reset(win);
    if (got < cap && step != SQLITE_DONE) {
      rc = ana_sql_fail(conn, "events by sequence", err);
      break;
    }
    if (got == 0) {
      /* None in the window: on from the next stored seq after it. */
      uint64_t next = 0;
      int found = next_seq(conn, schema, hi, &next, err);
      if (found < 0)
        rc = found;
      if (found <= 0 || next > upto)
        break;
      lo = next - 1;
      continue;
    }
    /* The rows in seq order, each by its key (row's filters may pass it over). */
    qsort(keys, got, sizeof *keys, by_seq);
    for (size_t i = 0; i < got && rc == 0; i++) {
      sqlite3_reset(row);
      sqlite3_bind_int64(row, 1, keys[i]);
      step = sqlite3_step(row);
      if (step == SQLITE_ROW) {
        n++;
        int stop = fn(ctx, row);
        if (stop) {
          sqlite3_reset(row);
          sqlite3_finalize(win);
          ana_free(keys);
          return stop < 0 ? stop : n;
        }
      } else if (step != SQLITE_DONE) {
        rc = ana_sql_fail(conn, "events by sequence", err);
      }
    }
    sqlite3_reset(row);
    lo = hi;
  }
  sqlite3_finalize(win);
  ana_free(keys);
  return rc < 0 ? rc : n;
}

int ana_local_events_max_seq(sqlite3 *conn, const char *schema, uint64_t *out,
                             struct ana_error *err) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT coalesce(max((SELECT key FROM %sevents WHERE key >= d.day * %lld"
           " AND key <= d.day * %lld + %lld ORDER BY key DESC LIMIT 1) & %lld), 0)"
           " FROM %sevent_days d",
           schema, (long long)(SEQ_MAX + 1), (long long)(SEQ_MAX + 1), (long long)SEQ_MAX,
           (long long)SEQ_MAX, schema);
  sqlite3_stmt *st = ana_sql_prepare(conn, sql, "the highest sequence stored", err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  if (sqlite3_step(st) == SQLITE_ROW)
    *out = (uint64_t)sqlite3_column_int64(st, 0);
  else
    rc = ana_sql_fail(conn, "the highest sequence stored", err);
  sqlite3_finalize(st);
  return rc;
}

int ana_local_event_days_add(sqlite3 *w, const struct ana_event_record *records, size_t n,
                             struct ana_error *err) {
  sqlite3_stmt *st = ana_sql_prepare(w,
                                     "INSERT INTO event_days VALUES (?1, ?2, ?3) ON CONFLICT(day)"
                                     " DO UPDATE SET min_seq = min(min_seq, excluded.min_seq),"
                                     " max_seq = max(max_seq, excluded.max_seq)",
                                     "event days", err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  size_t i = 0;
  while (i < n && rc == 0) {
    if (records[i].duplicate) {
      i++;
      continue;
    }
    int64_t day = ana_event_day(records[i].timestamp_ms);
    uint64_t lo = records[i].seq, hi = records[i].seq;
    for (i++; i < n && (records[i].duplicate || ana_event_day(records[i].timestamp_ms) == day);
         i++) {
      if (records[i].duplicate)
        continue;
      lo = records[i].seq < lo ? records[i].seq : lo;
      hi = records[i].seq > hi ? records[i].seq : hi;
    }
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, day);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)lo);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)hi);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_sql_fail(w, "event days", err);
  }
  sqlite3_finalize(st);
  return rc;
}
