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

#endif
