/* The re-encryption job's state in the local database: the field list the
 * stored events are sealed under, how far the rewrite is, and the events
 * whose free text is to be indexed again; and the scrub that leaves no old
 * page in the database file or its WAL afterwards. */
#include "local_db_sql.h"
#include "sql_stmt.h"

#include "ana_alloc.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define WHAT "field re-encryption"

int ana_local_reencryption_get(struct ana_local_conn *c, struct ana_local_reencryption *out,
                               struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  memset(out, 0, sizeof *out);
  if (sqlite3_prepare_v2(conn,
                         "SELECT fields, upto_seq, next_seq, phase, rewritten, started_at"
                         " FROM field_reencryption WHERE id = 1",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *f = (const char *)sqlite3_column_text(st, 0);
    snprintf(out->fields, sizeof out->fields, "%s", f ? f : "");
    out->upto_seq = (uint64_t)sqlite3_column_int64(st, 1);
    out->next_seq = (uint64_t)sqlite3_column_int64(st, 2);
    out->phase = sqlite3_column_int(st, 3);
    out->rewritten = (uint64_t)sqlite3_column_int64(st, 4);
    out->started_at_ms = sqlite3_column_int64(st, 5);
    rc = 1;
  } else {
    rc = rc == SQLITE_DONE ? 0 : ana_sql_fail(conn, WHAT, err);
  }
  sqlite3_finalize(st);
  return rc;
}

int ana_local_reencryption_put(struct ana_local_conn *c, const struct ana_local_reencryption *s,
                               struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(conn,
                         "INSERT OR REPLACE INTO field_reencryption (id, fields, upto_seq,"
                         " next_seq, phase, rewritten, started_at) VALUES (1, ?, ?, ?, ?, ?, ?)",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  sqlite3_bind_text(st, 1, s->fields, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)s->upto_seq);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)s->next_seq);
  sqlite3_bind_int(st, 4, s->phase);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)s->rewritten);
  sqlite3_bind_int64(st, 6, s->started_at_ms);
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ana_sql_fail(conn, WHAT, err);
  sqlite3_finalize(st);
  return rc;
}

int ana_local_reencryption_note(struct ana_local_conn *c, const int64_t *seqs, size_t n,
                                struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  if (n == 0)
    return 0;
  if (sqlite3_prepare_v2(conn, "INSERT OR IGNORE INTO field_reencryption_reindex VALUES (?)", -1,
                         &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  int rc = ana_local_conn_begin(c, err);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, seqs[i]);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_sql_fail(conn, WHAT, err);
  }
  sqlite3_finalize(st);
  if (rc == 0)
    return ana_local_conn_commit(c, err);
  ana_local_conn_rollback(c);
  return rc;
}

int ana_local_reencryption_pending(struct ana_local_conn *c, int64_t **seqs, size_t *n,
                                   struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  *seqs = NULL;
  *n = 0;
  if (sqlite3_prepare_v2(conn, "SELECT seq FROM field_reencryption_reindex ORDER BY seq", -1, &st,
                         NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  size_t cap = 0;
  int rc = 0, step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (*n == cap) {
      size_t nc = cap ? cap * 2 : 64;
      int64_t *p = ana_realloc(*seqs, nc * sizeof *p);
      if (!p) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      *seqs = p;
      cap = nc;
    }
    (*seqs)[(*n)++] = sqlite3_column_int64(st, 0);
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = ana_sql_fail(conn, WHAT, err);
  sqlite3_finalize(st);
  if (rc < 0) {
    ana_free(*seqs);
    *seqs = NULL;
    *n = 0;
  }
  return rc;
}

int ana_local_reencryption_advance(struct ana_local_conn *c, uint64_t next_seq, uint64_t rewritten,
                                   struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  int rc = ana_local_conn_begin(c, err);
  if (rc < 0)
    return rc;
  if (sqlite3_exec(conn, "DELETE FROM field_reencryption_reindex", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "UPDATE field_reencryption SET next_seq = ?, rewritten = rewritten + ?"
                         " WHERE id = 1",
                         -1, &st, NULL) != SQLITE_OK)
    rc = ana_sql_fail(conn, WHAT, err);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)next_seq);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)rewritten);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_sql_fail(conn, WHAT, err);
  }
  sqlite3_finalize(st);
  if (rc == 0)
    return ana_local_conn_commit(c, err);
  ana_local_conn_rollback(c);
  return rc;
}

/* Gives every free page back to the file system (a database made before
 * schema 13 has none to give: auto_vacuum is off there), then copies the
 * WAL into the database and truncates it (a TRUNCATE checkpoint, retried
 * while readers hold old snapshots). */
int ana_local_db_scrub(struct ana_local_conn *c, int timeout_ms, struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  if (sqlite3_exec(conn, "PRAGMA incremental_vacuum", NULL, NULL, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT ": freeing pages", err);
  for (int waited = 0;; waited += 100) {
    int busy = 1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(conn, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      busy = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (!busy)
      return 0;
    if (waited >= timeout_ms)
      return ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                           WHAT ": the WAL could not be emptied in %d ms (readers in the way)",
                           timeout_ms);
    struct timespec pause = {0, 100000000};
    nanosleep(&pause, NULL);
  }
}
