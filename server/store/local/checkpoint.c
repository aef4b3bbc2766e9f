/* An explicit checkpoint of the local database, for tools that fill it in bulk faster than the
 * checkpoint thread keeps up with. */
#include "local_db_sql.h"

int ana_local_db_checkpoint(struct ana_local_db *db, struct ana_error *err) {
  sqlite3 *conn = ana_local_db_connect(db, err);
  if (!conn)
    return ANA_ERR_IO;
  int rc = 0;
  if (sqlite3_exec(conn, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "checkpoint: %s", sqlite3_errmsg(conn));
    rc = ANA_ERR_IO;
  }
  sqlite3_close(conn);
  return rc;
}
