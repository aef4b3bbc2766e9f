/* Statement helpers the store's SQLite tables share: errors, preparing, statements kept. */
#include "sql_stmt.h"

#include <stddef.h>

int ana_sql_fail(sqlite3 *conn, const char *what, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "%s: %s", what,
                conn ? sqlite3_errmsg(conn) : "out of memory");
  return ANA_ERR_IO;
}

sqlite3_stmt *ana_sql_prepare(sqlite3 *conn, const char *sql, const char *what,
                              struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK) {
    sqlite3_finalize(st);
    ana_sql_fail(conn, what, err);
    return NULL;
  }
  return st;
}

sqlite3_stmt *ana_sql_kept(struct ana_sql_kept *kept, int n, sqlite3 *conn, const char *sql,
                           const char *what, struct ana_error *err) {
  int i = 0;
  for (; i < n && kept[i].sql; i++) {
    if (kept[i].sql == sql) {
      sqlite3_reset(kept[i].stmt);
      sqlite3_clear_bindings(kept[i].stmt);
      return kept[i].stmt;
    }
  }
  if (i == n) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "%s: no slot left for a kept statement", what);
    return NULL;
  }
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v3(conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK || !st) {
    sqlite3_finalize(st);
    ana_sql_fail(conn, what, err);
    return NULL;
  }
  kept[i].sql = sql;
  kept[i].stmt = st;
  return st;
}

void ana_sql_kept_finalize(struct ana_sql_kept *kept, int n) {
  for (int i = 0; i < n; i++)
    sqlite3_finalize(kept[i].stmt);
}
