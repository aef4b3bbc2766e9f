/* Deduplication by (accountId, eventId): the stage in front of every event
 * store. Keys live in the local database and are claimed in the same
 * transaction as the events (or the spool) they admit, so a crash can never
 * keep one without the other. A key lives as long as its event is retained. */
#include "local_db_sql.h"

static const char sql_claim[] = "INSERT INTO dedupe_keys (account_id, event_id, expires_at)"
                                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING";

int ana_local_dedupe_claim(struct ana_local_db *db, struct ana_event_record *records, size_t n,
                           struct ana_error *err) {
  sqlite3 *w = ana_local_db_writer(db);
  sqlite3_stmt *st = ana_local_db_writer_statement(db, sql_claim);
  if (!st) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, records[i].account_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, records[i].event_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, records[i].expires_at_ms);
    if (sqlite3_step(st) != SQLITE_DONE) {
      ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s", sqlite3_errmsg(w));
      rc = ANA_ERR_IO;
      break;
    }
    records[i].duplicate = sqlite3_changes(w) == 0;
  }
  sqlite3_reset(st);
  return rc;
}

int ana_local_dedupe_expire(struct ana_local_db *db, int64_t now_ms, int max_rows,
                            struct ana_error *err) {
  sqlite3 *w = ana_local_db_writer(db);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(w,
                         "DELETE FROM dedupe_keys WHERE (account_id, event_id) IN"
                         " (SELECT account_id, event_id FROM dedupe_keys"
                         "  WHERE expires_at / 86400000 <= ?1 / 86400000 AND expires_at < ?1"
                         "  LIMIT ?2)",
                         -1, &st, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  sqlite3_bind_int64(st, 1, now_ms);
  sqlite3_bind_int(st, 2, max_rows);
  int rc = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(w) : ANA_ERR_IO;
  if (rc < 0)
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s", sqlite3_errmsg(w));
  sqlite3_finalize(st);
  return rc;
}
