/* Statement helpers the store's SQLite tables share: errors and preparing. */
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
