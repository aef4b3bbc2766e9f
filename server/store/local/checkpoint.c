/* An explicit checkpoint of the local database's two files (analytics.db and the journal), for
 * tools that fill it in bulk faster than the checkpoint threads keep up with. */
#include "local_db_sql.h"

int ana_local_db_checkpoint(struct ana_local_db *db, struct ana_error *err) {
  for (int f = 0; f < 2; f++) {
    sqlite3 *conn = f == 0 ? ana_local_db_connect(db, err) : ana_local_db_connect_journal(db, err);
    if (!conn)
      return ANA_ERR_IO;
    int rc = 0;
    if (sqlite3_exec(conn, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) != SQLITE_OK) {
      ana_error_set(err, ANA_STATUS_UNAVAILABLE, "checkpoint: %s", sqlite3_errmsg(conn));
      rc = ANA_ERR_IO;
    }
    sqlite3_close(conn);
    if (rc < 0)
      return rc;
  }
  return 0;
}
