/* Report runs in the local database (table report_runs): the job state of
 * server/reports/runner.c, on a connection of its own, one call at a time. */
#include "local_db_sql.h"
#include "sql_stmt.h"

#include "ana_alloc.h"

#include <pthread.h>
#include <stdio.h>

struct ana_local_runs {
  sqlite3 *conn;
  pthread_mutex_t mu;
};

struct ana_local_runs *ana_local_runs_open(struct ana_local_db *db, struct ana_error *err) {
  struct ana_local_runs *h = ana_calloc(1, sizeof *h);
  if (!h) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&h->mu, NULL);
  if (!(h->conn = ana_local_db_connect(db, err))) {
    ana_local_runs_close(h);
    return NULL;
  }
  return h;
}

void ana_local_runs_close(struct ana_local_runs *h) {
  if (!h)
    return;
  if (h->conn)
    sqlite3_close_v2(h->conn);
  pthread_mutex_destroy(&h->mu);
  ana_free(h);
}

/* Runs one statement with text binds and integer binds after them; the
 * statement has no result rows. Under mu. */
static int exec_bind(sqlite3 *conn, const char *sql, const char *const *texts, size_t n_texts,
                     const int64_t *ints, size_t n_ints, struct ana_error *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, "report runs: prepare", err);
  int i = 1;
  for (size_t k = 0; k < n_texts; k++)
    sqlite3_bind_text(st, i++, texts[k], -1, SQLITE_TRANSIENT);
  for (size_t k = 0; k < n_ints; k++)
    sqlite3_bind_int64(st, i++, ints[k]);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return ana_sql_fail(conn, "report runs: write", err);
  return 0;
}

int ana_local_runs_insert(struct ana_local_runs *h, const char *run_id, const char *account_id,
                          const char *report_id, int64_t created_ms, struct ana_error *err) {
  const char *t[] = {run_id, account_id, report_id};
  int64_t ints[] = {created_ms};
  pthread_mutex_lock(&h->mu);
  int rc = exec_bind(h->conn,
                     "INSERT INTO report_runs (run_id, account_id, report_id, state, created_at) "
                     "VALUES (?1, ?2, ?3, 'pending', ?4)",
                     t, 3, ints, 1, err);
  pthread_mutex_unlock(&h->mu);
  return rc;
}

bool ana_local_runs_start(struct ana_local_runs *h, const char *run_id, int64_t now_ms,
                          char *account, size_t acc_size, char *report, size_t rep_size) {
  bool ok = false;
  pthread_mutex_lock(&h->mu);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->conn,
                         "UPDATE report_runs SET state = 'running', attempts = attempts + 1, "
                         "started_at = ?2 WHERE run_id = ?1 AND state = 'pending' "
                         "RETURNING account_id, report_id",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, run_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    if (sqlite3_step(st) == SQLITE_ROW) {
      snprintf(account, acc_size, "%s", (const char *)sqlite3_column_text(st, 0));
      snprintf(report, rep_size, "%s", (const char *)sqlite3_column_text(st, 1));
      ok = true;
    }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&h->mu);
  return ok;
}

int ana_local_runs_finish(struct ana_local_runs *h, const char *run_id, const char *state,
                          const char *error, const char *path, int64_t size, int64_t now_ms,
                          struct ana_error *err) {
  const char *t[] = {state, error, path, run_id};
  int64_t ints[] = {size, now_ms};
  pthread_mutex_lock(&h->mu);
  int rc = exec_bind(h->conn,
                     "UPDATE report_runs SET state = ?1, error = ?2, path = ?3, size_bytes = ?5, "
                     "finished_at = ?6 WHERE run_id = ?4",
                     t, 4, ints, 2, err);
  pthread_mutex_unlock(&h->mu);
  return rc;
}

void ana_local_runs_expire(struct ana_local_runs *h, int64_t cutoff_ms,
                           void (*fn)(void *ctx, const char *path), void *ctx) {
  pthread_mutex_lock(&h->mu);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->conn,
                         "UPDATE report_runs SET state = 'expired', path = '' "
                         "WHERE state = 'completed' AND finished_at < ?1 RETURNING path",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, cutoff_ms);
    while (sqlite3_step(st) == SQLITE_ROW) {
      const char *path = (const char *)sqlite3_column_text(st, 0);
      if (path && *path)
        fn(ctx, path);
    }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&h->mu);
}

int ana_local_runs_recover(struct ana_local_runs *h, int max_attempts, const char *error,
                           int64_t now_ms, int (*fn)(void *ctx, const char *run_id), void *ctx,
                           struct ana_error *err) {
  const char *t[] = {error};
  int64_t ints[] = {(int64_t)max_attempts, now_ms};
  pthread_mutex_lock(&h->mu);
  int n = 0;
  if (exec_bind(h->conn,
                "UPDATE report_runs SET state = 'failed', error = ?1, finished_at = ?3 "
                "WHERE state = 'running' AND attempts >= ?2",
                t, 1, ints, 2, err) < 0 ||
      exec_bind(h->conn, "UPDATE report_runs SET state = 'pending' WHERE state = 'running'", NULL,
                0, NULL, 0, err) < 0) {
    n = ANA_ERR_INTERNAL;
    goto out;
  }
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->conn,
                         "SELECT run_id FROM report_runs WHERE state = 'pending' "
                         "ORDER BY created_at, run_id",
                         -1, &st, NULL) != SQLITE_OK) {
    n = ana_sql_fail(h->conn, "report runs: read", err);
    goto out;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    if (fn(ctx, (const char *)sqlite3_column_text(st, 0)) < 0)
      break;
    n++;
  }
  sqlite3_finalize(st);
out:
  pthread_mutex_unlock(&h->mu);
  return n;
}

static const char *text(sqlite3_stmt *st, int i) {
  const char *s = (const char *)sqlite3_column_text(st, i);
  return s ? s : "";
}

static void row(sqlite3_stmt *st, struct ana_local_run *run) {
  *run = (struct ana_local_run){
      .run_id = text(st, 0),
      .report_id = text(st, 1),
      .account_id = text(st, 2),
      .state = text(st, 3),
      .attempts = sqlite3_column_int(st, 4),
      .error = text(st, 5),
      .path = text(st, 6),
      .size_bytes = sqlite3_column_int64(st, 7),
      .created_at_ms = sqlite3_column_int64(st, 8),
      .started_at_ms = sqlite3_column_int64(st, 9),
      .finished_at_ms = sqlite3_column_int64(st, 10),
  };
}

#define COLUMNS                                                                                    \
  "run_id, report_id, account_id, state, attempts, error, path, size_bytes, created_at, "          \
  "started_at, finished_at"

int ana_local_runs_list(struct ana_local_runs *h, const char *account_id, const char *report_id,
                        int limit, ana_local_run_fn fn, void *ctx, struct ana_error *err) {
  pthread_mutex_lock(&h->mu);
  sqlite3_stmt *st;
  int n = 0;
  if (sqlite3_prepare_v2(h->conn,
                         "SELECT " COLUMNS " FROM report_runs WHERE account_id = ?1 AND "
                         "report_id = ?2 ORDER BY created_at DESC, run_id DESC LIMIT ?3",
                         -1, &st, NULL) != SQLITE_OK) {
    n = ana_sql_fail(h->conn, "report runs: read", err);
    goto out;
  }
  sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, report_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, limit);
  while (n < limit && sqlite3_step(st) == SQLITE_ROW) {
    struct ana_local_run run;
    row(st, &run);
    fn(ctx, &run);
    n++;
  }
  sqlite3_finalize(st);
out:
  pthread_mutex_unlock(&h->mu);
  return n;
}

int ana_local_runs_get(struct ana_local_runs *h, const char *account_id, const char *report_id,
                       const char *run_id, ana_local_run_fn fn, void *ctx, struct ana_error *err) {
  pthread_mutex_lock(&h->mu);
  sqlite3_stmt *st;
  int rc;
  if (sqlite3_prepare_v2(h->conn,
                         "SELECT " COLUMNS " FROM report_runs WHERE account_id = ?1 AND "
                         "report_id = ?2 AND run_id = ?3",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = ana_sql_fail(h->conn, "report runs: read", err);
    goto out;
  }
  sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, report_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, run_id, -1, SQLITE_STATIC);
  rc = 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    struct ana_local_run run;
    row(st, &run);
    fn(ctx, &run);
    rc = 1;
  }
  sqlite3_finalize(st);
out:
  pthread_mutex_unlock(&h->mu);
  return rc;
}
