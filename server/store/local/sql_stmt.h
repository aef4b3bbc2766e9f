/* Statement helpers the store's SQLite tables share (local/ and sqlite/): one way to report
 * SQLite's errors and to prepare a statement. Internal to server/store. */
#ifndef ANA_SQL_STMT_H
#define ANA_SQL_STMT_H

#include "ana_error.h"

#include <sqlite3.h>

/* Fills err with UNAVAILABLE and "<what>: <SQLite's message on conn>" ("out of memory" when conn
 * is NULL). Returns ANA_ERR_IO. */
int ana_sql_fail(sqlite3 *conn, const char *what, struct ana_error *err);

/* sql prepared on conn (caller finalizes it); or NULL with err filled as ana_sql_fail does. */
sqlite3_stmt *ana_sql_prepare(sqlite3 *conn, const char *sql, const char *what,
                              struct ana_error *err);

/* Statements kept prepared on one connection, found by the address of their (static) SQL: for
 * statements run often, whose parsing would otherwise be paid on every run. */
struct ana_sql_kept {
  const char *sql;
  sqlite3_stmt *stmt;
};

/* The statement of sql from kept[0..n), prepared (persistent) on conn into the first free slot on
 * its first use; reset and its bindings cleared. Reset it after use, never finalize it. NULL
 * with err filled: INTERNAL when all n slots are taken (a programming error the tests catch),
 * else as ana_sql_fail does. */
sqlite3_stmt *ana_sql_kept(struct ana_sql_kept *kept, int n, sqlite3 *conn, const char *sql,
                           const char *what, struct ana_error *err);

/* Finalizes kept[0..n)'s statements. */
void ana_sql_kept_finalize(struct ana_sql_kept *kept, int n);

#endif
