/* The embedded catalog: user-defined objects in one table, keyed by
 * (account, kind, id), names unique per account and kind. It writes on its
 * own connection, so catalog changes never wait behind the event committer
 * for longer than one commit. */
#include "locked_conn.h"
#include "sqlite_backends.h"

#include <sqlite3.h>
#include <string.h>

#define WHAT "catalog"

static int cat_put(void *p, const struct ana_catalog_object *o, bool create,
                   struct ana_error *err) {
  struct sqlite_locked_conn *c = p;
  const char *sql =
      create ? "INSERT INTO catalog_objects (account_id, kind, id, name, body, created_at,"
               " updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
             : "UPDATE catalog_objects SET name = ?4, body = ?5, updated_at = ?7"
               " WHERE account_id = ?1 AND kind = ?2 AND id = ?3";
  sqlite3_stmt *st = sqlite_locked_prepare(c, sql, WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  sqlite3_bind_text(st, 1, o->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, o->kind, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, o->id, -1, SQLITE_STATIC);
  if (o->name)
    sqlite3_bind_text(st, 4, o->name, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 4);
  sqlite3_bind_blob(st, 5, o->body, (int)o->body_len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, o->created_at_ms);
  sqlite3_bind_int64(st, 7, o->updated_at_ms);
  int step = sqlite3_step(st);
  if (step == SQLITE_CONSTRAINT ||
      (sqlite3_extended_errcode(c->conn) & 0xff) == SQLITE_CONSTRAINT) {
    rc = ana_error_set(err, ANA_STATUS_ALREADY_EXISTS, "name: a %s named \"%s\" exists already",
                       o->kind, o->name ? o->name : "");
    rc = ANA_ERR_EXISTS;
  } else if (step != SQLITE_DONE) {
    rc = ana_sql_fail(c->conn, WHAT, err);
  } else if (!create && sqlite3_changes(c->conn) == 0) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "%s %s not found", o->kind, o->id);
    rc = ANA_ERR_NOT_FOUND;
  }
  sqlite_locked_finish(c, st);
  return rc;
}

static int select_objects(struct sqlite_locked_conn *c, const char *sql, const char *const *args,
                          int n_args, int limit, ana_catalog_object_fn fn, void *ctx,
                          struct ana_error *err, int *count) {
  *count = 0;
  sqlite3_stmt *st = sqlite_locked_select(c, sql, args, n_args, limit, WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_catalog_object o = {
        .account_id = (const char *)sqlite3_column_text(st, 0),
        .kind = (const char *)sqlite3_column_text(st, 1),
        .id = (const char *)sqlite3_column_text(st, 2),
        .name = (const char *)sqlite3_column_text(st, 3),
        .body = sqlite3_column_blob(st, 4),
        .body_len = (size_t)sqlite3_column_bytes(st, 4),
        .created_at_ms = sqlite3_column_int64(st, 5),
        .updated_at_ms = sqlite3_column_int64(st, 6),
    };
    (*count)++;
    if (fn(ctx, &o))
      break;
  }
  return sqlite_locked_rows_end(c, st, step, WHAT, err);
}

#define COLUMNS "account_id, kind, id, name, body, created_at, updated_at"

static int cat_get(void *p, const char *kind, const char *account_id, const char *id,
                   ana_catalog_object_fn fn, void *ctx, struct ana_error *err) {
  const char *args[] = {account_id, kind, id};
  int n;
  int rc = select_objects(p,
                          "SELECT " COLUMNS " FROM catalog_objects"
                          " WHERE account_id = ?1 AND kind = ?2 AND id = ?3",
                          args, 3, 0, fn, ctx, err, &n);
  if (rc == 0 && n == 0) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "%s %s not found", kind, id);
    return ANA_ERR_NOT_FOUND;
  }
  return rc;
}

static int cat_get_by_name(void *p, const char *kind, const char *account_id, const char *name,
                           ana_catalog_object_fn fn, void *ctx, struct ana_error *err) {
  const char *args[] = {account_id, kind, name};
  int n;
  int rc = select_objects(p,
                          "SELECT " COLUMNS " FROM catalog_objects"
                          " WHERE account_id = ?1 AND kind = ?2 AND name = ?3",
                          args, 3, 0, fn, ctx, err, &n);
  if (rc == 0 && n == 0) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "no %s named \"%s\"", kind, name);
    return ANA_ERR_NOT_FOUND;
  }
  return rc;
}

static int cat_list(void *p, const char *kind, const char *account_id, const char *after, int limit,
                    ana_catalog_object_fn fn, void *ctx, struct ana_error *err) {
  const char *args[] = {account_id, kind, after ? after : ""};
  int n;
  return select_objects(p,
                        "SELECT " COLUMNS " FROM catalog_objects"
                        " WHERE account_id = ?1 AND kind = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                        args, 3, limit, fn, ctx, err, &n);
}

static int cat_remove(void *p, const char *kind, const char *account_id, const char *id,
                      struct ana_error *err) {
  struct sqlite_locked_conn *c = p;
  sqlite3_stmt *st = sqlite_locked_prepare(
      c, "DELETE FROM catalog_objects WHERE account_id = ? AND kind = ? AND id = ?", WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  int rc = 0;
  sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = ana_sql_fail(c->conn, WHAT, err);
  else if (sqlite3_changes(c->conn) == 0) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "%s %s not found", kind, id);
    rc = ANA_ERR_NOT_FOUND;
  }
  sqlite_locked_finish(c, st);
  return rc;
}

const struct ana_catalog_ops ana_sqlite_catalog = {
    .version = ANA_CATALOG_VERSION,
    .name = "sqlite",
    .open = sqlite_locked_conn_open,
    .put = cat_put,
    .get = cat_get,
    .get_by_name = cat_get_by_name,
    .list = cat_list,
    .remove = cat_remove,
    .close = sqlite_locked_conn_close,
};
