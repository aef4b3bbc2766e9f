/* The embedded key store: table api_keys keyed by key id (the verifier's
 * lookup), with an index by account for listing. It writes on its own
 * connection, like the catalog. */
#include "ana_api_keys.h"
#include "ana_store.h"
#include "local_db_sql.h"
#include "locked_conn.h"
#include "sqlite_backends.h"

#include "ana_alloc.h"

#include <sqlite3.h>
#include <string.h>

#define WHAT "API keys"

#define COLUMNS                                                                                    \
  "key_id, account_id, role, name, created_by, secret_sha256, created_at, last_used_at, "          \
  "revoked_at, rate_limit"

static int keys_insert(void *p, const struct ana_api_key_record *r, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  sqlite3_stmt *st = sqlite_locked_prepare(s,
                                           "INSERT INTO api_keys (" COLUMNS ") VALUES (?1, ?2,"
                                           " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                                           WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  sqlite3_bind_text(st, 1, r->key_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, r->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, r->role, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, r->name ? r->name : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, r->created_by ? r->created_by : "", -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 6, r->hash, (int)sizeof r->hash, SQLITE_STATIC);
  sqlite3_bind_int64(st, 7, r->created_at_ms);
  sqlite3_bind_int64(st, 8, r->last_used_at_ms);
  sqlite3_bind_int64(st, 9, r->revoked_at_ms);
  sqlite3_bind_text(st, 10, r->rate_limit ? r->rate_limit : "", -1, SQLITE_STATIC);
  int step = sqlite3_step(st);
  if ((sqlite3_extended_errcode(s->conn) & 0xff) == SQLITE_CONSTRAINT) {
    ana_error_set(err, ANA_STATUS_ALREADY_EXISTS, "API key %s exists already", r->key_id);
    rc = ANA_ERR_EXISTS;
  } else if (step != SQLITE_DONE) {
    rc = ana_sql_fail(s->conn, WHAT, err);
  }
  sqlite_locked_finish(s, st);
  return rc;
}

static int select_keys(struct sqlite_locked_conn *s, const char *sql, const char *const *args,
                       int n_args, int limit, ana_api_key_record_fn fn, void *ctx,
                       struct ana_error *err, int *count) {
  *count = 0;
  sqlite3_stmt *st = sqlite_locked_select(s, sql, args, n_args, limit, WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_api_key_record r = {
        .account_id = (const char *)sqlite3_column_text(st, 1),
        .role = (const char *)sqlite3_column_text(st, 2),
        .name = (const char *)sqlite3_column_text(st, 3),
        .created_by = (const char *)sqlite3_column_text(st, 4),
        .created_at_ms = sqlite3_column_int64(st, 6),
        .last_used_at_ms = sqlite3_column_int64(st, 7),
        .revoked_at_ms = sqlite3_column_int64(st, 8),
        .rate_limit = (const char *)sqlite3_column_text(st, 9),
    };
    const char *id = (const char *)sqlite3_column_text(st, 0);
    if (!id || strlen(id) != ANA_API_KEY_ID_CHARS ||
        sqlite3_column_bytes(st, 5) != ANA_API_KEY_HASH_BYTES)
      continue; /* not a row this code wrote */
    memcpy(r.key_id, id, sizeof r.key_id);
    memcpy(r.hash, sqlite3_column_blob(st, 5), sizeof r.hash);
    (*count)++;
    if (fn(ctx, &r))
      break;
  }
  return sqlite_locked_rows_end(s, st, step, WHAT, err);
}

static int keys_get(void *p, const char *key_id, ana_api_key_record_fn fn, void *ctx,
                    struct ana_error *err) {
  const char *args[] = {key_id};
  int n;
  int rc = select_keys(p, "SELECT " COLUMNS " FROM api_keys WHERE key_id = ?1", args, 1, 0, fn, ctx,
                       err, &n);
  if (rc == 0 && n == 0) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "API key %s not found", key_id);
    return ANA_ERR_NOT_FOUND;
  }
  return rc;
}

static int keys_list(void *p, const char *account_id, const char *after, int limit,
                     ana_api_key_record_fn fn, void *ctx, struct ana_error *err) {
  const char *args[] = {account_id, after ? after : ""};
  int n;
  return select_keys(p,
                     "SELECT " COLUMNS " FROM api_keys WHERE account_id = ?1 AND key_id > ?2"
                     " ORDER BY key_id LIMIT ?3",
                     args, 2, limit, fn, ctx, err, &n);
}

/* Runs a one-statement write with (text, text-or-NULL, int64) bindings;
 * *changes gets the rows changed. */
static int write_one(struct sqlite_locked_conn *s, const char *sql, const char *a, const char *b,
                     int64_t v, int *changes, struct ana_error *err) {
  sqlite3_stmt *st = sqlite_locked_prepare(s, sql, WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
  if (b)
    sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 2);
  sqlite3_bind_int64(st, 3, v);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = ana_sql_fail(s->conn, WHAT, err);
  else
    *changes = sqlite3_changes(s->conn);
  sqlite_locked_finish(s, st);
  return rc;
}

static int keys_revoke(void *p, const char *account_id, const char *key_id, int64_t at_ms,
                       struct ana_error *err) {
  int changes = 0;
  /* Matches a revoked key too (revoked_at kept), so that NOT_FOUND means
   * absent. */
  int rc = write_one(p,
                     "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at = 0 THEN ?3"
                     " ELSE revoked_at END WHERE key_id = ?1 AND (?2 IS NULL OR account_id = ?2)",
                     key_id, account_id, at_ms, &changes, err);
  if (rc == 0 && changes == 0) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "API key %s not found", key_id);
    return ANA_ERR_NOT_FOUND;
  }
  return rc;
}

static int keys_touch(void *p, const char *key_id, int64_t at_ms, struct ana_error *err) {
  int changes = 0;
  return write_one(p,
                   "UPDATE api_keys SET last_used_at = ?3 WHERE key_id = ?1 AND"
                   " last_used_at < ?3",
                   key_id, NULL, at_ms, &changes, err);
}

static int keys_count_active(void *p, int64_t *out, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  sqlite3_stmt *st =
      sqlite_locked_prepare(s, "SELECT COUNT(*) FROM api_keys WHERE revoked_at = 0", WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  if (sqlite3_step(st) != SQLITE_ROW)
    rc = ana_sql_fail(s->conn, WHAT, err);
  else
    *out = sqlite3_column_int64(st, 0);
  sqlite_locked_finish(s, st);
  return rc;
}

const struct ana_api_key_store_ops ana_sqlite_api_key_store = {
    .version = ANA_API_KEY_STORE_VERSION,
    .name = "sqlite",
    .open = sqlite_locked_conn_open,
    .insert = keys_insert,
    .get = keys_get,
    .list = keys_list,
    .revoke = keys_revoke,
    .touch = keys_touch,
    .count_active = keys_count_active,
    .close = sqlite_locked_conn_close,
};
