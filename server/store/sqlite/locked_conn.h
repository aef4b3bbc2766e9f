/* A connection of its own to the local database with the mutex that
 * serialises its use: what a small role store (the catalog, API keys, data
 * keys, the audit log) keeps as its handle, and the statement and
 * transaction boilerplate around it. Internal to server/store/sqlite. */
#ifndef ANA_SQLITE_LOCKED_CONN_H
#define ANA_SQLITE_LOCKED_CONN_H

#include "ana_error.h"
#include "local_db_sql.h"
#include "sql_stmt.h"

#include <pthread.h>
#include <sqlite3.h>

#define SQLITE_LOCKED_KEPT 8

struct sqlite_locked_conn {
  sqlite3 *conn; /* guarded by mu */
  pthread_mutex_t mu;
  struct ana_sql_kept kept[SQLITE_LOCKED_KEPT]; /* sqlite_locked_kept's; guarded by mu */
};

/* Opens a connection (ana_local_db_connect) with its mutex. Returns the
 * handle (caller closes it with sqlite_locked_conn_close), or NULL with err
 * filled. The signatures fit a role store's open and close operations. */
void *sqlite_locked_conn_open(struct ana_local_db *db, struct ana_error *err);

/* Closes the connection and frees the handle; NULL is fine. */
void sqlite_locked_conn_close(void *handle);

/* Locks s and prepares sql on its connection. Returns the statement with
 * the lock held (end with sqlite_locked_finish), or NULL with the lock
 * released and err filled ("<what>: <SQLite's message>", UNAVAILABLE). */
sqlite3_stmt *sqlite_locked_prepare(struct sqlite_locked_conn *s, const char *sql, const char *what,
                                    struct ana_error *err);

/* A statement of sql kept prepared on s's connection until it closes,
 * found by the address of sql (static storage), reset and its bindings
 * cleared: for statements run often. Call with s locked; reset it after
 * use, never finalize it. NULL with err filled when it cannot be prepared
 * or all SQLITE_LOCKED_KEPT slots are taken. */
sqlite3_stmt *sqlite_locked_kept(struct sqlite_locked_conn *s, const char *sql, const char *what,
                                 struct ana_error *err);

/* sqlite_locked_prepare, then args[0..n_args) bound as text to ?1.. (the
 * strings must outlive the statement) and, when limit > 0, limit to
 * ?n_args+1. */
sqlite3_stmt *sqlite_locked_select(struct sqlite_locked_conn *s, const char *sql,
                                   const char *const *args, int n_args, int limit, const char *what,
                                   struct ana_error *err);

/* Finalizes st (NULL is fine) and unlocks s. */
void sqlite_locked_finish(struct sqlite_locked_conn *s, sqlite3_stmt *st);

/* Ends a loop over st's rows whose last sqlite3_step returned step:
 * sqlite_locked_finish, and returns 0 when step is SQLITE_ROW (the loop
 * stopped early) or SQLITE_DONE, else ANA_ERR_IO with err filled. */
int sqlite_locked_rows_end(struct sqlite_locked_conn *s, sqlite3_stmt *st, int step,
                           const char *what, struct ana_error *err);

/* Locks s and begins a write transaction (BEGIN IMMEDIATE). Returns 0 with
 * the lock held (end with sqlite_locked_end), or ANA_ERR_IO with the lock
 * released and err filled. */
int sqlite_locked_begin(struct sqlite_locked_conn *s, const char *what, struct ana_error *err);

/* Ends the transaction of sqlite_locked_begin: commits it when rc is 0
 * (a failed COMMIT fills err and makes rc ANA_ERR_IO), rolls it back
 * otherwise; then finalizes st (NULL is fine) and unlocks s. Returns rc. */
int sqlite_locked_end(struct sqlite_locked_conn *s, sqlite3_stmt *st, int rc, const char *what,
                      struct ana_error *err);

#endif
