/* Rollup cells and definitions in the local database (tables
 * metric_rollups and metric_rollup_defs): what server/metrics/rollup.c keeps
 * there, on two connections of its own (the rollup thread's, and one for
 * definitions), and what queries read from a snapshot. */
#include "local_db_sql.h"

#include "ana_alloc.h"

#include <stdio.h>
#include <string.h>

struct ana_local_reader {
  sqlite3 *conn;
};

struct ana_rollup_cells {
  struct ana_local_db *db;
  struct ana_local_reader own; /* the thread's connection */
  sqlite3 *ctl;                /* definitions; the caller serializes */
  sqlite3_stmt *sel, *put, *mark, *expire, *other;
};

static int sql_fail(sqlite3 *db, const char *what, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "metric rollups: %s: %s", what, sqlite3_errmsg(db));
  return ANA_ERR_IO;
}

struct ana_rollup_cells *ana_rollup_cells_open(struct ana_local_db *db,
                                               int (*busy)(void *ctx, int count), void *busy_ctx,
                                               struct ana_error *err) {
  struct ana_rollup_cells *h = ana_calloc(1, sizeof *h);
  if (!h) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  h->db = db;
  if (!(h->own.conn = ana_local_db_connect(db, err)) || !(h->ctl = ana_local_db_connect(db, err)))
    goto fail;
  /* The thread's transactions need not reach the disk before they return:
   * cells and watermark are in the same transaction, so one lost with the
   * power leaves both as they were, and the events are replayed from the
   * older watermark (WAL keeps the order; the next synced commit of the
   * committer makes them durable). No sync keeps the write lock short.
   * (Checkpoints are the store's checkpoint thread's alone: connections of
   * ana_local_db_connect never run one; a PRAGMA wal_autocheckpoint here
   * would undo that.) */
  if (sqlite3_exec(h->own.conn, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
    sql_fail(h->own.conn, "cannot set its pragmas", err);
    goto fail;
  }
  if (busy)
    sqlite3_busy_handler(h->own.conn, busy, busy_ctx);
  return h;
fail:
  ana_rollup_cells_close(h);
  return NULL;
}

void ana_rollup_cells_close(struct ana_rollup_cells *h) {
  if (!h)
    return;
  sqlite3_finalize(h->sel);
  sqlite3_finalize(h->put);
  sqlite3_finalize(h->mark);
  sqlite3_finalize(h->expire);
  sqlite3_finalize(h->other);
  sqlite3_close(h->own.conn);
  sqlite3_close(h->ctl);
  ana_free(h);
}

/* --- definitions --- */

/* Runs sql (a DELETE of one metric's rows, its id as ?1) on the control connection. */
static int delete_of_metric(struct ana_rollup_cells *h, const char *sql, const char *metric_id,
                            struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(h->ctl, sql, -1, &st, NULL) != SQLITE_OK)
    return sql_fail(h->ctl, "cannot forget a definition", err);
  sqlite3_bind_text(st, 1, metric_id, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = sql_fail(h->ctl, "cannot forget a definition", err);
  sqlite3_finalize(st);
  return rc;
}

/* The metric's marks of other instances' events (a new version starts without). */
static int forget_others(struct ana_rollup_cells *h, const char *metric_id, struct ana_error *err) {
  return delete_of_metric(h, "DELETE FROM metric_rollup_others WHERE metric_id = ?1", metric_id,
                          err);
}

int ana_rollup_cells_put_def(struct ana_rollup_cells *h, const char *metric_id,
                             const char *account_id, int64_t version, const void *def, size_t len,
                             uint64_t backfill_to, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(
          h->ctl,
          "INSERT OR REPLACE INTO metric_rollup_defs (metric_id, account_id, "
          "version, definition, watermark, backfill_to) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
          -1, &st, NULL) != SQLITE_OK)
    return sql_fail(h->ctl, "cannot record a definition", err);
  sqlite3_bind_text(st, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, account_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, version);
  sqlite3_bind_blob(st, 4, def, (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)backfill_to);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = sql_fail(h->ctl, "cannot record a definition", err);
  sqlite3_finalize(st);
  if (rc == 0)
    rc = forget_others(h, metric_id, err);
  return rc;
}

int ana_rollup_cells_forget_def(struct ana_rollup_cells *h, const char *metric_id,
                                struct ana_error *err) {
  int rc =
      delete_of_metric(h, "DELETE FROM metric_rollup_defs WHERE metric_id = ?1", metric_id, err);
  return rc == 0 ? forget_others(h, metric_id, err) : rc;
}

int ana_rollup_cells_each_other_mark(struct ana_rollup_cells *h, ana_rollup_other_mark_fn fn,
                                     void *ctx, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h->ctl,
                         "SELECT o.metric_id, o.version, o.instance, o.seq FROM "
                         "metric_rollup_others o JOIN metric_rollup_defs d ON d.metric_id = "
                         "o.metric_id AND d.version = o.version",
                         -1, &st, NULL) != SQLITE_OK)
    return sql_fail(h->ctl, "cannot read the marks of other instances", err);
  int rc = 0;
  while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
    rc = fn(ctx, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
            (const char *)sqlite3_column_text(st, 2), (uint64_t)sqlite3_column_int64(st, 3));
  sqlite3_finalize(st);
  return rc;
}

int ana_rollup_cells_each_def(struct ana_rollup_cells *h, ana_rollup_def_fn fn, void *ctx,
                              struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h->ctl,
                         "SELECT metric_id, account_id, version, definition, watermark, "
                         "backfill_to FROM metric_rollup_defs",
                         -1, &st, NULL) != SQLITE_OK)
    return sql_fail(h->ctl, "cannot read the definitions", err);
  while (sqlite3_step(st) == SQLITE_ROW) {
    struct ana_rollup_def d = {
        .metric_id = (const char *)sqlite3_column_text(st, 0),
        .account_id = (const char *)sqlite3_column_text(st, 1),
        .version = sqlite3_column_int64(st, 2),
        .def = sqlite3_column_blob(st, 3),
        .len = (size_t)sqlite3_column_bytes(st, 3),
        .watermark = (uint64_t)sqlite3_column_int64(st, 4),
        .backfill_to = (uint64_t)sqlite3_column_int64(st, 5),
    };
    fn(ctx, &d);
  }
  sqlite3_finalize(st);
  return 0;
}

int ana_rollup_cells_next_version(struct ana_rollup_cells *h, const char *after_metric,
                                  int64_t after_version, char *metric_out, size_t cap,
                                  int64_t *version_out, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  /* Distinct (metric, version) pairs by skipping through the key. */
  if (sqlite3_prepare_v2(h->ctl,
                         "SELECT metric_id, version FROM metric_rollups WHERE (metric_id, version)"
                         " > (?1, ?2) ORDER BY metric_id, version LIMIT 1",
                         -1, &st, NULL) != SQLITE_OK)
    return sql_fail(h->ctl, "cannot read the rollups", err);
  sqlite3_bind_text(st, 1, after_metric, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 2, after_version);
  int found = sqlite3_step(st) == SQLITE_ROW;
  if (found) {
    snprintf(metric_out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    *version_out = sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
  return found;
}

/* --- the rollup thread's rounds --- */

static int prepare(struct ana_rollup_cells *h, struct ana_error *err) {
  if (h->sel)
    return 0;
  sqlite3 *conn = h->own.conn;
  if (sqlite3_prepare_v2(conn,
                         "SELECT state FROM metric_rollups WHERE metric_id = ?1 AND version = ?2"
                         " AND level = ?3 AND bucket = ?4 AND group_key = ?5",
                         -1, &h->sel, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "INSERT OR REPLACE INTO metric_rollups (metric_id, version, level, "
                         "bucket, group_key, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                         -1, &h->put, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "UPDATE metric_rollup_defs SET watermark = ?3 WHERE metric_id = ?1 AND "
                         "version = ?2",
                         -1, &h->mark, NULL) != SQLITE_OK) {
    int rc = sql_fail(conn, "prepare", err);
    sqlite3_finalize(h->sel);
    sqlite3_finalize(h->put);
    sqlite3_finalize(h->mark);
    h->sel = h->put = h->mark = NULL;
    return rc;
  }
  return 0;
}

int ana_rollup_cells_prepare(struct ana_rollup_cells *h, struct ana_error *err) {
  return prepare(h, err);
}

bool ana_rollup_cells_begin_read(struct ana_rollup_cells *h) {
  return sqlite3_exec(h->own.conn, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
}

void ana_rollup_cells_end_read(struct ana_rollup_cells *h) {
  sqlite3_exec(h->own.conn, "COMMIT", NULL, NULL, NULL);
}

int ana_rollup_cells_merge(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                           int level, int64_t bucket, const char *group_key, ana_rollup_blob_fn fn,
                           void *ctx, struct ana_error *err) {
  sqlite3_stmt *sel = h->sel;
  sqlite3_bind_text(sel, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(sel, 2, version);
  sqlite3_bind_int(sel, 3, level);
  sqlite3_bind_int64(sel, 4, bucket);
  sqlite3_bind_text(sel, 5, group_key, -1, SQLITE_STATIC);
  int step = sqlite3_step(sel);
  int rc = step == SQLITE_ROW
               ? fn(ctx, sqlite3_column_blob(sel, 0), (size_t)sqlite3_column_bytes(sel, 0))
               : 0;
  if (step != SQLITE_ROW && step != SQLITE_DONE)
    rc = sql_fail(h->own.conn, "read a cell", err);
  sqlite3_reset(sel);
  return rc;
}

int ana_rollup_cells_begin_write(struct ana_rollup_cells *h, struct ana_error *err) {
  if (sqlite3_exec(h->own.conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return sql_fail(h->own.conn, "begin", err);
  return 0;
}

int ana_rollup_cells_mark(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                          uint64_t watermark, struct ana_error *err) {
  sqlite3_bind_text(h->mark, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(h->mark, 2, version);
  sqlite3_bind_int64(h->mark, 3, (sqlite3_int64)watermark);
  int step = sqlite3_step(h->mark);
  sqlite3_reset(h->mark);
  if (step != SQLITE_DONE)
    return sql_fail(h->own.conn, "move the watermark", err);
  return sqlite3_changes(h->own.conn) > 0;
}

int ana_rollup_cells_mark_other(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                                const char *instance, uint64_t seq, struct ana_error *err) {
  if (!h->other && sqlite3_prepare_v2(h->own.conn,
                                      "INSERT OR REPLACE INTO metric_rollup_others (metric_id, "
                                      "version, instance, seq) VALUES (?1, ?2, ?3, ?4)",
                                      -1, &h->other, NULL) != SQLITE_OK)
    return sql_fail(h->own.conn, "move the mark of another instance", err);
  sqlite3_stmt *st = h->other;
  sqlite3_bind_text(st, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, version);
  sqlite3_bind_text(st, 3, instance, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)seq);
  int rc = sqlite3_step(st) != SQLITE_DONE
               ? sql_fail(h->own.conn, "move the mark of another instance", err)
               : 0;
  sqlite3_reset(st);
  return rc;
}

int ana_rollup_cells_put(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                         int level, int64_t bucket, const char *group_key, const void *state,
                         size_t len, struct ana_error *err) {
  sqlite3_stmt *put = h->put;
  sqlite3_bind_text(put, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(put, 2, version);
  sqlite3_bind_int(put, 3, level);
  sqlite3_bind_int64(put, 4, bucket);
  sqlite3_bind_text(put, 5, group_key, -1, SQLITE_STATIC);
  sqlite3_bind_blob(put, 6, state, (int)len, SQLITE_STATIC);
  int rc = sqlite3_step(put) != SQLITE_DONE ? sql_fail(h->own.conn, "write a cell", err) : 0;
  sqlite3_reset(put);
  return rc;
}

int ana_rollup_cells_commit(struct ana_rollup_cells *h, struct ana_error *err) {
  if (sqlite3_exec(h->own.conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    return sql_fail(h->own.conn, "commit", err);
  return 0;
}

void ana_rollup_cells_rollback(struct ana_rollup_cells *h) {
  if (!sqlite3_get_autocommit(h->own.conn))
    sqlite3_exec(h->own.conn, "ROLLBACK", NULL, NULL, NULL);
}

int ana_rollup_cells_drop_versions(struct ana_rollup_cells *h, const char *metric_id, int64_t below,
                                   int limit) {
  sqlite3_stmt *st = NULL;
  int changes = 0;
  if (sqlite3_prepare_v2(h->own.conn,
                         "DELETE FROM metric_rollups WHERE metric_id = ?1 AND version < ?2 AND "
                         "(version, level, bucket, group_key) IN (SELECT version, level, bucket, "
                         "group_key FROM metric_rollups WHERE metric_id = ?1 AND version < ?2 "
                         "LIMIT ?3)",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, metric_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, below);
    sqlite3_bind_int(st, 3, limit);
    if (sqlite3_step(st) == SQLITE_DONE)
      changes = sqlite3_changes(h->own.conn);
  }
  sqlite3_finalize(st);
  return changes;
}

int ana_rollup_cells_expire(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                            int level, int64_t last_bucket, int limit, struct ana_error *err) {
  if (!h->expire &&
      sqlite3_prepare_v2(h->own.conn,
                         "DELETE FROM metric_rollups WHERE metric_id = ?1 AND version = ?2 AND "
                         "level = ?3 AND bucket <= ?4 AND (bucket, group_key) IN (SELECT bucket, "
                         "group_key FROM metric_rollups WHERE metric_id = ?1 AND version = ?2 "
                         "AND level = ?3 AND bucket <= ?4 LIMIT ?5)",
                         -1, &h->expire, NULL) != SQLITE_OK)
    return sql_fail(h->own.conn, "cannot expire cells", err);
  sqlite3_stmt *st = h->expire;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, version);
  sqlite3_bind_int(st, 3, level);
  sqlite3_bind_int64(st, 4, last_bucket);
  sqlite3_bind_int(st, 5, limit);
  int rc = sqlite3_step(st) != SQLITE_DONE ? sql_fail(h->own.conn, "cannot expire cells", err)
                                           : sqlite3_changes(h->own.conn);
  sqlite3_reset(st);
  return rc;
}

/* --- reading cells --- */

struct ana_local_reader *ana_rollup_cells_reader(struct ana_rollup_cells *h) {
  return &h->own;
}

struct ana_local_reader *ana_local_snapshot_begin(struct ana_local_db *db, struct ana_error *err) {
  struct ana_local_reader *rd = ana_malloc(sizeof *rd);
  if (!rd) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  rd->conn = ana_local_db_acquire_reader(db);
  if (sqlite3_exec(rd->conn, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
    sql_fail(rd->conn, "begin", err);
    ana_local_db_release_reader(db, rd->conn);
    ana_free(rd);
    return NULL;
  }
  return rd;
}

void ana_local_snapshot_end(struct ana_local_db *db, struct ana_local_reader *rd) {
  if (!rd)
    return;
  sqlite3_exec(rd->conn, "COMMIT", NULL, NULL, NULL);
  ana_local_db_release_reader(db, rd->conn);
  ana_free(rd);
}

int ana_rollup_cells_version(struct ana_local_reader *rd, const char *metric_id, int64_t version,
                             uint64_t *watermark, uint64_t *backfill_to, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(rd->conn,
                         "SELECT watermark, backfill_to FROM metric_rollup_defs WHERE metric_id = "
                         "?1 AND version = ?2",
                         -1, &st, NULL) != SQLITE_OK)
    return sql_fail(rd->conn, "read the watermark", err);
  sqlite3_bind_text(st, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, version);
  int found = sqlite3_step(st) == SQLITE_ROW;
  if (found) {
    *watermark = (uint64_t)sqlite3_column_int64(st, 0);
    *backfill_to = (uint64_t)sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
  return found;
}

int ana_rollup_cells_scan(struct ana_local_reader *rd, const char *metric_id, int64_t version,
                          int level, int64_t lo, int64_t hi, ana_rollup_cell_fn fn, void *ctx,
                          struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(rd->conn,
                         "SELECT bucket, group_key, state FROM metric_rollups WHERE metric_id = ?1"
                         " AND version = ?2 AND level = ?3 AND bucket >= ?4 AND bucket < ?5",
                         -1, &st, NULL) != SQLITE_OK)
    return sql_fail(rd->conn, "read the rollups", err);
  sqlite3_bind_text(st, 1, metric_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, version);
  sqlite3_bind_int(st, 3, level);
  sqlite3_bind_int64(st, 4, lo);
  sqlite3_bind_int64(st, 5, hi);
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    rc = fn(ctx, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
            sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
    if (rc != 0)
      break;
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = sql_fail(rd->conn, "read the rollups", err);
  sqlite3_finalize(st);
  return rc;
}
