/* The embedded data key store: table data_keys, one row per (account, key
 * id) holding the data key wrapped by the master key (server/crypto/). It
 * writes on its own connection, like the API key store. */
#include "ana_crypto.h"
#include "ana_store.h"
#include "locked_conn.h"
#include "sqlite_backends.h"

#include <sqlite3.h>

#define WHAT "data keys"

static int data_keys_insert(void *p, const struct ana_data_key_record *r, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  sqlite3_stmt *st = sqlite_locked_prepare(s,
                                           "INSERT INTO data_keys (account_id, key_id, wrapped,"
                                           " created_at) VALUES (?1, ?2, ?3, ?4)",
                                           WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  sqlite3_bind_text(st, 1, r->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, r->key_id);
  sqlite3_bind_blob(st, 3, r->wrapped, (int)r->wrapped_len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, r->created_at_ms);
  int step = sqlite3_step(st);
  if ((sqlite3_extended_errcode(s->conn) & 0xff) == SQLITE_CONSTRAINT) {
    ana_error_set(err, ANA_STATUS_ALREADY_EXISTS, "data key %u of account %s exists already",
                  r->key_id, r->account_id);
    rc = ANA_ERR_EXISTS;
  } else if (step != SQLITE_DONE) {
    rc = ana_sql_fail(s->conn, WHAT, err);
  }
  sqlite_locked_finish(s, st);
  return rc;
}

static int select_rows(struct sqlite_locked_conn *s, const char *sql, const char *account_id,
                       ana_data_key_fn fn, void *ctx, struct ana_error *err) {
  const char *const args[] = {account_id};
  sqlite3_stmt *st = sqlite_locked_select(s, sql, args, account_id ? 1 : 0, 0, WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_data_key_record r = {
        .account_id = (const char *)sqlite3_column_text(st, 0),
        .key_id = (uint32_t)sqlite3_column_int64(st, 1),
        .wrapped = sqlite3_column_blob(st, 2),
        .wrapped_len = (size_t)sqlite3_column_bytes(st, 2),
        .created_at_ms = sqlite3_column_int64(st, 3),
    };
    if (fn(ctx, &r))
      break;
  }
  return sqlite_locked_rows_end(s, st, step, WHAT, err);
}

static int data_keys_list(void *p, const char *account_id, ana_data_key_fn fn, void *ctx,
                          struct ana_error *err) {
  return select_rows(p,
                     "SELECT account_id, key_id, wrapped, created_at FROM data_keys"
                     " WHERE account_id = ?1 ORDER BY key_id",
                     account_id, fn, ctx, err);
}

static int data_keys_accounts(void *p, ana_data_key_fn fn, void *ctx, struct ana_error *err) {
  return select_rows(p,
                     "SELECT account_id, MAX(key_id), NULL, 0 FROM data_keys"
                     " GROUP BY account_id ORDER BY account_id",
                     NULL, fn, ctx, err);
}

const struct ana_data_key_store_ops ana_sqlite_data_key_store = {
    .name = "sqlite",
    .open = sqlite_locked_conn_open,
    .close = sqlite_locked_conn_close,
    .insert = data_keys_insert,
    .list = data_keys_list,
    .accounts = data_keys_accounts,
};
