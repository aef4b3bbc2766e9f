/* The embedded data key store: table data_keys, one row per (account, key
 * id) holding the data key wrapped by the master key (server/crypto/). It
 * writes on its own connection, like the API key store. */
#include "ana_crypto.h"
#include "ana_store.h"
#include "locked_conn.h"
#include "sqlite_backends.h"

#include "ana_alloc.h"
#include "ana_clock.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

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

static int data_keys_get_root(void *p, uint8_t *out, size_t cap, size_t *len,
                              struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  sqlite3_stmt *st = NULL;
  int rc = 0;
  *len = 0;
  pthread_mutex_lock(&s->mu);
  if (sqlite3_prepare_v2(s->conn, "SELECT wrapped FROM key_root WHERE id = 1", -1, &st, NULL) !=
      SQLITE_OK) {
    rc = ana_sql_fail(s->conn, WHAT, err);
    goto out;
  }
  int step = sqlite3_step(st);
  if (step == SQLITE_ROW) {
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    if (n > cap) {
      rc = ana_error_set(err, ANA_STATUS_DATA_LOSS, "the key root is damaged (%zu bytes)", n);
      goto out;
    }
    if (n)
      memcpy(out, sqlite3_column_blob(st, 0), n);
    *len = n;
    rc = 1;
  } else if (step != SQLITE_DONE) {
    rc = ana_sql_fail(s->conn, WHAT, err);
  }
out:
  sqlite3_finalize(st);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* One stored key read for a rewrap (owned copies). */
struct stored_key {
  char *account_id;
  uint32_t key_id;
  uint8_t *wrapped;
  size_t wrapped_len;
  int64_t created_at_ms;
};

/* Reads every data key into *keys (caller frees with free_stored). Call
 * inside the transaction. */
static int read_all(sqlite3 *conn, struct stored_key **keys, size_t *n, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  size_t cap = 0;
  int rc = 0;
  *keys = NULL;
  *n = 0;
  if (sqlite3_prepare_v2(conn,
                         "SELECT account_id, key_id, wrapped, created_at FROM data_keys"
                         " ORDER BY account_id, key_id",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (*n == cap) {
      size_t c = cap ? cap * 2 : 64;
      struct stored_key *k = ana_realloc(*keys, c * sizeof *k);
      if (!k) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
      }
      *keys = k;
      cap = c;
    }
    struct stored_key *k = &(*keys)[*n];
    size_t len = (size_t)sqlite3_column_bytes(st, 2);
    k->account_id = ana_strdup((const char *)sqlite3_column_text(st, 0));
    k->key_id = (uint32_t)sqlite3_column_int64(st, 1);
    k->wrapped = ana_malloc(len ? len : 1);
    k->wrapped_len = len;
    k->created_at_ms = sqlite3_column_int64(st, 3);
    (*n)++;
    if (!k->account_id || !k->wrapped) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
    if (len)
      memcpy(k->wrapped, sqlite3_column_blob(st, 2), len);
  }
  if (step != SQLITE_DONE)
    rc = ana_sql_fail(conn, WHAT, err);
out:
  sqlite3_finalize(st);
  return rc;
}

static void free_stored(struct stored_key *keys, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ana_free(keys[i].account_id);
    ana_free(keys[i].wrapped);
  }
  ana_free(keys);
}

#define REWRAP_MAX 4096

static int data_keys_rewrap(void *p, ana_data_key_rewrap_fn fn, void *ctx, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  struct stored_key *keys = NULL;
  size_t n = 0, len = 0, root_len = 0;
  uint8_t out[REWRAP_MAX], root[REWRAP_MAX];
  sqlite3_stmt *up = NULL;
  int rc = 0;
  bool begun = false;
  pthread_mutex_lock(&s->mu);
  if (sqlite3_exec(s->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    rc = ana_sql_fail(s->conn, WHAT, err);
    goto out;
  }
  begun = true;
  if ((rc = read_all(s->conn, &keys, &n, err)) < 0)
    goto out;
  if (sqlite3_prepare_v2(s->conn,
                         "UPDATE data_keys SET wrapped = ?3 WHERE account_id = ?1 AND key_id = ?2",
                         -1, &up, NULL) != SQLITE_OK) {
    rc = ana_sql_fail(s->conn, WHAT, err);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    struct ana_data_key_record r = {keys[i].account_id, keys[i].key_id, keys[i].wrapped,
                                    keys[i].wrapped_len, keys[i].created_at_ms};
    if ((rc = fn(ctx, &r, out, sizeof out, &len, err)) < 0)
      goto out;
    sqlite3_reset(up);
    sqlite3_bind_text(up, 1, r.account_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(up, 2, r.key_id);
    sqlite3_bind_blob(up, 3, out, (int)len, SQLITE_STATIC);
    if (sqlite3_step(up) != SQLITE_DONE) {
      rc = ana_sql_fail(s->conn, WHAT, err);
      goto out;
    }
  }
  /* The key root: read, handed to fn, written back (or removed). */
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->conn, "SELECT wrapped FROM key_root WHERE id = 1", -1, &st, NULL) !=
      SQLITE_OK) {
    rc = ana_sql_fail(s->conn, WHAT, err);
    goto out;
  }
  int step = sqlite3_step(st);
  if (step == SQLITE_ROW && (size_t)sqlite3_column_bytes(st, 0) <= sizeof root) {
    root_len = (size_t)sqlite3_column_bytes(st, 0);
    if (root_len)
      memcpy(root, sqlite3_column_blob(st, 0), root_len);
  } else if (step != SQLITE_DONE) {
    rc = step == SQLITE_ROW ? ana_error_set(err, ANA_STATUS_DATA_LOSS, "the key root is damaged")
                            : ana_sql_fail(s->conn, WHAT, err);
  }
  sqlite3_finalize(st);
  if (rc < 0)
    goto out;
  struct ana_data_key_record r = {"", 0, root, root_len, ana_clock_wall_ms()};
  if ((rc = fn(ctx, &r, out, sizeof out, &len, err)) < 0)
    goto out;
  sqlite3_finalize(up);
  up = NULL;
  if (sqlite3_prepare_v2(s->conn,
                         len ? "INSERT OR REPLACE INTO key_root (id, wrapped, created_at)"
                               " VALUES (1, ?1, ?2)"
                             : "DELETE FROM key_root",
                         -1, &up, NULL) != SQLITE_OK) {
    rc = ana_sql_fail(s->conn, WHAT, err);
    goto out;
  }
  if (len) {
    sqlite3_bind_blob(up, 1, out, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(up, 2, ana_clock_wall_ms());
  }
  if (sqlite3_step(up) != SQLITE_DONE) {
    rc = ana_sql_fail(s->conn, WHAT, err);
    goto out;
  }
  if (sqlite3_exec(s->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    rc = ana_sql_fail(s->conn, WHAT, err);
    goto out;
  }
  begun = false;
out:
  sqlite3_finalize(up);
  if (begun)
    sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&s->mu);
  free_stored(keys, n);
  OPENSSL_cleanse(out, sizeof out);
  OPENSSL_cleanse(root, sizeof root);
  return rc;
}

const struct ana_data_key_store_ops ana_sqlite_data_key_store = {
    .name = "sqlite",
    .open = sqlite_locked_conn_open,
    .close = sqlite_locked_conn_close,
    .insert = data_keys_insert,
    .list = data_keys_list,
    .accounts = data_keys_accounts,
    .get_root = data_keys_get_root,
    .rewrap = data_keys_rewrap,
};
