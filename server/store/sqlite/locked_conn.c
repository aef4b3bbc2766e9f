/* A connection of its own to the local database, with its mutex. */
#include "locked_conn.h"

#include "ana_alloc.h"

void sqlite_locked_conn_close(void *handle) {
  struct sqlite_locked_conn *s = handle;
  if (!s)
    return;
  sqlite3_close(s->conn);
  pthread_mutex_destroy(&s->mu);
  ana_free(s);
}

void *sqlite_locked_conn_open(struct ana_local_db *db, struct ana_error *err) {
  struct sqlite_locked_conn *s = ana_calloc(1, sizeof *s);
  if (!s) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&s->mu, NULL);
  s->conn = ana_local_db_connect(db, err);
  if (!s->conn) {
    sqlite_locked_conn_close(s);
    return NULL;
  }
  return s;
}
