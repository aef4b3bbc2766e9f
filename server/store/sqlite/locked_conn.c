/* A connection of its own to the local database, with its mutex. */
#include "locked_conn.h"

#include "ana_alloc.h"

void sqlite_locked_conn_close(void *handle) {
  struct sqlite_locked_conn *s = handle;
  if (!s)
    return;
  ana_sql_kept_finalize(s->kept, SQLITE_LOCKED_KEPT);
  sqlite3_close(s->conn);
  pthread_mutex_destroy(&s->mu);
  ana_free(s);
}

void *sqlite_locked_conn_open(struct ana_local_db *db, struct ana_error *err) {
  struct sqlite_locked_conn *s = ana_calloc(1, sizeof *s);
  if (!s) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&s->mu, NULL);
  s->conn = ana_local_db_connect(db, err);
  if (!s->conn) {
    sqlite_locked_conn_close(s);
    return NULL;
  }
  return s;
}

sqlite3_stmt *sqlite_locked_prepare(struct sqlite_locked_conn *s, const char *sql, const char *what,
                                    struct ana_error *err) {
  pthread_mutex_lock(&s->mu);
  sqlite3_stmt *st = ana_sql_prepare(s->conn, sql, what, err);
  if (!st)
    pthread_mutex_unlock(&s->mu);
  return st;
}

sqlite3_stmt *sqlite_locked_kept(struct sqlite_locked_conn *s, const char *sql, const char *what,
                                 struct ana_error *err) {
  return ana_sql_kept(s->kept, SQLITE_LOCKED_KEPT, s->conn, sql, what, err);
}

/* Steps a kept transaction statement once. */
static int run_kept(struct sqlite_locked_conn *s, const char *sql, const char *what,
                    struct ana_error *err) {
  sqlite3_stmt *st = sqlite_locked_kept(s, sql, what, err);
  if (!st)
    return ANA_ERR_IO;
  int step = sqlite3_step(st);
  sqlite3_reset(st);
  return step == SQLITE_DONE ? 0 : ana_sql_fail(s->conn, what, err);
}

static const char sql_begin[] = "BEGIN IMMEDIATE";
static const char sql_commit[] = "COMMIT";

sqlite3_stmt *sqlite_locked_select(struct sqlite_locked_conn *s, const char *sql,
                                   const char *const *args, int n_args, int limit, const char *what,
                                   struct ana_error *err) {
  sqlite3_stmt *st = sqlite_locked_prepare(s, sql, what, err);
  if (!st)
    return NULL;
  for (int i = 0; i < n_args; i++)
    sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_STATIC);
  if (limit > 0)
    sqlite3_bind_int(st, n_args + 1, limit);
  return st;
}

void sqlite_locked_finish(struct sqlite_locked_conn *s, sqlite3_stmt *st) {
  sqlite3_finalize(st);
  pthread_mutex_unlock(&s->mu);
}

int sqlite_locked_rows_end(struct sqlite_locked_conn *s, sqlite3_stmt *st, int step,
                           const char *what, struct ana_error *err) {
  int rc = 0;
  if (step != SQLITE_ROW && step != SQLITE_DONE)
    rc = ana_sql_fail(s->conn, what, err);
  sqlite_locked_finish(s, st);
  return rc;
}

int sqlite_locked_begin(struct sqlite_locked_conn *s, const char *what, struct ana_error *err) {
  pthread_mutex_lock(&s->mu);
  int rc = run_kept(s, sql_begin, what, err);
  if (rc < 0)
    pthread_mutex_unlock(&s->mu);
  return rc;
}

int sqlite_locked_end(struct sqlite_locked_conn *s, sqlite3_stmt *st, int rc, const char *what,
                      struct ana_error *err) {
  if (st)
    sqlite3_reset(st); /* a statement left stepping keeps COMMIT from ending the transaction */
  if (rc == 0)
    rc = run_kept(s, sql_commit, what, err);
  if (rc < 0 && !sqlite3_get_autocommit(s->conn))
    sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
  sqlite_locked_finish(s, st);
  return rc;
}
