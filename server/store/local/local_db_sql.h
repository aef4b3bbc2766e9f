/* The local database's raw SQLite connections, for the store's backends and
 * its typed local API: nothing outside server/store/ includes this. */
#ifndef ANA_LOCAL_DB_SQL_H
#define ANA_LOCAL_DB_SQL_H

#include "ana_local_db.h"

#include <sqlite3.h>

/* A new read-write connection with the same settings, for a role that
 * writes on its own (the catalog, rollups); it never checkpoints (the local
 * database's checkpoint thread does, for every connection). Close it with
 * sqlite3_close before the local database. */
sqlite3 *ana_local_db_connect(struct ana_local_db *db, struct ana_error *err);

/* The writer connection (for the committer's stages). */
sqlite3 *ana_local_db_writer(struct ana_local_db *db);

/* A statement on the writer connection, prepared on first use and kept
 * until close, found by the address of sql (a string with static storage:
 * the same text at two addresses is two entries). Reset, bindings cleared.
 * For statements run inside every commit; only on the committer's thread.
 * NULL when it cannot be prepared (sqlite3_errmsg of the writer says why). */
sqlite3_stmt *ana_local_db_writer_statement(struct ana_local_db *db, const char *sql);

/* A pooled reader (for searches; return it with
 * ana_local_db_release_reader). Blocks while all readers are busy. */
sqlite3 *ana_local_db_acquire_reader(struct ana_local_db *db);
void ana_local_db_release_reader(struct ana_local_db *db, sqlite3 *reader);

/* The SQLite connection of a module's connection (for the store's typed
 * tables that share its transactions). */
sqlite3 *ana_local_conn_sqlite(struct ana_local_conn *c);

#endif
