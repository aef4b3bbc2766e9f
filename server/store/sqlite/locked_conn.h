/* A connection of its own to the local database with the mutex that
 * serialises its use: what a small role store (API keys, the audit log)
 * keeps as its handle. Internal to server/store/sqlite. */
#ifndef ANA_SQLITE_LOCKED_CONN_H
#define ANA_SQLITE_LOCKED_CONN_H

#include "ana_error.h"
#include "local_db_sql.h"

#include <pthread.h>
#include <sqlite3.h>

struct sqlite_locked_conn {
  sqlite3 *conn; /* guarded by mu */
  pthread_mutex_t mu;
};

/* Opens a connection (ana_local_db_connect) with its mutex. Returns the
 * handle (caller closes it with sqlite_locked_conn_close), or NULL with err
 * filled. The signatures fit a role store's open and close operations. */
void *sqlite_locked_conn_open(struct ana_local_db *db, struct ana_error *err);

/* Closes the connection and frees the handle; NULL is fine. */
void sqlite_locked_conn_close(void *handle);

#endif
