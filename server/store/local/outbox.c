/* The notification outbox and its delivery log in the local database
 * (tables notify_outbox, notify_attempts), on a connection of the caller's
 * (struct ana_local_conn): server/notify/ keeps them, and a caller with
 * state of its own (the alert evaluator) adds to the outbox in the same
 * transaction as that state. */
#include "local_db_sql.h"
#include "sql_stmt.h"

#include "ana_alloc.h"

#include <stdio.h>

struct ana_local_conn {
  sqlite3 *conn;
};

#define WHAT "notifications"

struct ana_local_conn *ana_local_conn_open(struct ana_local_db *db, struct ana_error *err) {
  struct ana_local_conn *c = ana_calloc(1, sizeof *c);
  if (!c) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  if (!(c->conn = ana_local_db_connect(db, err))) {
    ana_free(c);
    return NULL;
  }
  return c;
}

void ana_local_conn_close(struct ana_local_conn *c) {
  if (!c)
    return;
  sqlite3_close(c->conn);
  ana_free(c);
}

int ana_local_conn_begin(struct ana_local_conn *c, struct ana_error *err) {
  if (sqlite3_exec(c->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return ana_sql_fail(c->conn, WHAT, err);
  return 0;
}

int ana_local_conn_commit(struct ana_local_conn *c, struct ana_error *err) {
  if (sqlite3_exec(c->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    return ana_sql_fail(c->conn, WHAT, err);
  return 0;
}

void ana_local_conn_rollback(struct ana_local_conn *c) {
  sqlite3_exec(c->conn, "ROLLBACK", NULL, NULL, NULL);
}

const char *ana_local_conn_errmsg(struct ana_local_conn *c) {
  return sqlite3_errmsg(c->conn);
}

sqlite3 *ana_local_conn_sqlite(struct ana_local_conn *c) {
  return c->conn;
}

int ana_local_outbox_insert(struct ana_local_conn *c, const char *key, const char *account_id,
                            const char *channel_id, const char *source, const char *payload,
                            int64_t now_ms, struct ana_error *err) {
  sqlite3 *db = c->conn;
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(db,
                         "INSERT OR IGNORE INTO notify_outbox (idempotency_key, account_id,"
                         " channel_id, source, payload, state, attempts, next_attempt_at,"
                         " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6,"
                         " ?6, ?6)",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(db, WHAT, err);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, channel_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, source, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, payload, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, now_ms);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = ana_sql_fail(db, WHAT, err);
  sqlite3_finalize(st);
  return rc;
}

static const char *text(sqlite3_stmt *st, int i) {
  const char *t = (const char *)sqlite3_column_text(st, i);
  return t ? t : "";
}

void ana_local_outbox_pending(struct ana_local_conn *c, int limit, ana_local_outbox_fn fn,
                              void *ctx) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(c->conn,
                         "SELECT id, idempotency_key, account_id, channel_id, source, payload,"
                         " attempts, created_at, next_attempt_at FROM notify_outbox"
                         " WHERE state = 'pending' ORDER BY next_attempt_at, id LIMIT ?1",
                         -1, &st, NULL) != SQLITE_OK)
    return;
  sqlite3_bind_int(st, 1, limit);
  while (sqlite3_step(st) == SQLITE_ROW) {
    struct ana_local_outbox_row row = {
        .id = sqlite3_column_int64(st, 0),
        .key = text(st, 1),
        .account_id = text(st, 2),
        .channel_id = text(st, 3),
        .source = text(st, 4),
        .payload = text(st, 5),
        .attempts = sqlite3_column_int(st, 6),
        .created_ms = sqlite3_column_int64(st, 7),
        .next_attempt_ms = sqlite3_column_int64(st, 8),
    };
    if (fn(ctx, &row))
      break;
  }
  sqlite3_finalize(st);
}

int ana_local_outbox_record(struct ana_local_conn *c, int64_t id, int attempt, int64_t at_ms,
                            const char *outcome, int status, const char *error, int64_t duration_ms,
                            const char *state, int64_t next_due_ms, struct ana_error *err) {
  sqlite3 *db = c->conn;
  sqlite3_stmt *a = NULL, *u = NULL;
  bool ok = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
  ok = ok && sqlite3_prepare_v2(db,
                                "INSERT OR REPLACE INTO notify_attempts (outbox_id, attempt, at,"
                                " outcome, status, error, duration_ms) VALUES (?1, ?2, ?3, ?4,"
                                " ?5, ?6, ?7)",
                                -1, &a, NULL) == SQLITE_OK;
  ok = ok && sqlite3_prepare_v2(db,
                                "UPDATE notify_outbox SET state = ?2, attempts = ?3,"
                                " next_attempt_at = ?4, updated_at = ?5 WHERE id = ?1",
                                -1, &u, NULL) == SQLITE_OK;
  if (ok) {
    sqlite3_bind_int64(a, 1, id);
    sqlite3_bind_int(a, 2, attempt);
    sqlite3_bind_int64(a, 3, at_ms);
    sqlite3_bind_text(a, 4, outcome, -1, SQLITE_STATIC);
    sqlite3_bind_int(a, 5, status);
    sqlite3_bind_text(a, 6, error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(a, 7, duration_ms);
    sqlite3_bind_int64(u, 1, id);
    sqlite3_bind_text(u, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_int(u, 3, attempt);
    sqlite3_bind_int64(u, 4, next_due_ms);
    sqlite3_bind_int64(u, 5, at_ms + duration_ms);
    ok = sqlite3_step(a) == SQLITE_DONE && sqlite3_step(u) == SQLITE_DONE;
  }
  ok = ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
  int rc = 0;
  if (!ok) {
    rc = ana_sql_fail(db, WHAT, err);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  }
  sqlite3_finalize(a);
  sqlite3_finalize(u);
  return rc;
}

int ana_local_outbox_attempts(struct ana_local_conn *c, const char *account_id, const char *source,
                              const char *channel_id, int64_t before_ms, int limit,
                              ana_local_attempt_fn fn, void *ctx, struct ana_error *err) {
  sqlite3 *db = c->conn;
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT a.outbox_id, o.idempotency_key, o.channel_id, o.source, o.state,"
                         " a.attempt, a.at, a.outcome, a.status, a.error, a.duration_ms"
                         " FROM notify_outbox o JOIN notify_attempts a ON a.outbox_id = o.id"
                         " WHERE o.account_id = ?1 AND (?2 IS NULL OR o.source = ?2)"
                         " AND (?3 IS NULL OR o.channel_id = ?3) AND (?4 = 0 OR a.at < ?4)"
                         " ORDER BY a.at DESC, a.outbox_id DESC, a.attempt DESC LIMIT ?5",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(db, WHAT, err);
  sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
  if (source)
    sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
  if (channel_id)
    sqlite3_bind_text(st, 3, channel_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, before_ms);
  sqlite3_bind_int(st, 5, limit);
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_local_attempt a = {
        .outbox_id = sqlite3_column_int64(st, 0),
        .idempotency_key = (const char *)sqlite3_column_text(st, 1),
        .channel_id = (const char *)sqlite3_column_text(st, 2),
        .source = (const char *)sqlite3_column_text(st, 3),
        .state = (const char *)sqlite3_column_text(st, 4),
        .attempt = sqlite3_column_int(st, 5),
        .at_ms = sqlite3_column_int64(st, 6),
        .outcome = (const char *)sqlite3_column_text(st, 7),
        .status = sqlite3_column_int(st, 8),
        .error = (const char *)sqlite3_column_text(st, 9),
        .duration_ms = sqlite3_column_int64(st, 10),
    };
    if (fn(ctx, &a))
      break;
  }
  if (step != SQLITE_ROW && step != SQLITE_DONE)
    rc = ana_sql_fail(db, WHAT, err);
  sqlite3_finalize(st);
  return rc;
}

int ana_local_outbox_state(struct ana_local_conn *c, const char *account_id, const char *key,
                           char *state, size_t state_size, int *attempts, struct ana_error *err) {
  sqlite3 *db = c->conn;
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT state, attempts FROM notify_outbox WHERE idempotency_key = ?1"
                         " AND account_id = ?2",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(db, WHAT, err);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, account_id, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW) {
    snprintf(state, state_size, "%s", (const char *)sqlite3_column_text(st, 0));
    *attempts = sqlite3_column_int(st, 1);
    rc = 1;
  }
  sqlite3_finalize(st);
  return rc;
}

bool ana_local_outbox_first_attempt(struct ana_local_conn *c, const char *key,
                                    ana_local_attempt_fn fn, void *ctx) {
  sqlite3_stmt *st = NULL;
  bool seen = false;
  if (sqlite3_prepare_v2(c->conn,
                         "SELECT a.outcome, a.status, a.error, a.duration_ms FROM"
                         " notify_attempts a JOIN notify_outbox o ON o.id = a.outbox_id"
                         " WHERE o.idempotency_key = ?1 AND a.attempt = 1",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
      struct ana_local_attempt a = {
          .attempt = 1,
          .outcome = (const char *)sqlite3_column_text(st, 0),
          .status = sqlite3_column_int(st, 1),
          .error = (const char *)sqlite3_column_text(st, 2),
          .duration_ms = sqlite3_column_int64(st, 3),
      };
      fn(ctx, &a);
      seen = true;
    }
  }
  sqlite3_finalize(st);
  return seen;
}
