/* The catalog of event names in the local database (tables event_names and
 * event_names_progress): what server/ingest/event_names.c stores and lists. */
#include "local_db_sql.h"
#include "sql_stmt.h"

#include "ana_alloc.h"

#include <string.h>

struct ana_local_names {
  sqlite3 *conn; /* its own writing connection */
  struct ana_local_db *db;
};

struct ana_local_names *ana_local_names_open(struct ana_local_db *db, uint64_t *watermark,
                                             uint64_t *last_seq, struct ana_error *err) {
  struct ana_local_names *ln = ana_calloc(1, sizeof *ln);
  if (!ln) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  ln->db = db;
  ln->conn = ana_local_db_connect(db, err);
  /* The last sequence counts the staged events once they are moved. */
  if (!ln->conn || ana_local_staging_wait(db, UINT64_MAX, err) < 0)
    goto fail;
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(ln->conn, "SELECT watermark FROM event_names_progress WHERE id = 1", -1,
                         &st, NULL) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    ana_sql_fail(ln->conn, "event names: open", err);
    sqlite3_finalize(st);
    goto fail;
  }
  *watermark = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (ana_local_events_max_seq(ln->conn, "", last_seq, err) < 0)
    goto fail;
  return ln;
fail:
  ana_local_names_close(ln);
  return NULL;
}

void ana_local_names_close(struct ana_local_names *ln) {
  if (!ln)
    return;
  if (ln->conn)
    sqlite3_close(ln->conn);
  ana_free(ln);
}

int ana_local_names_store(struct ana_local_names *ln, struct ana_local_name_count *items, size_t n,
                          int max_names, uint64_t watermark, ana_local_names_full_fn full,
                          void *ctx, struct ana_error *err) {
  static const char update_sql[] =
      "UPDATE event_names SET count = count + ?3, first_seen = MIN(first_seen, ?4),"
      " last_seen = MAX(last_seen, ?5) WHERE account_id = ?1 AND name = ?2";
  static const char insert_sql[] =
      "INSERT INTO event_names (account_id, name, first_seen, last_seen, count)"
      " VALUES (?1, ?2, ?4, ?5, ?3)";
  static const char count_sql[] = "SELECT COUNT(*) FROM event_names WHERE account_id = ?1";
  static const char mark_sql[] = "UPDATE event_names_progress SET watermark = ?1 WHERE id = 1";
  sqlite3 *conn = ln->conn;
  sqlite3_stmt *upd = NULL, *ins = NULL, *cnt = NULL, *mark = NULL;
  int rc = 0;
  for (size_t i = 0; i < n; i++)
    items[i].added = false;
  if (sqlite3_exec(conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, "event names: begin", err);
  if (sqlite3_prepare_v2(conn, update_sql, -1, &upd, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn, insert_sql, -1, &ins, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn, count_sql, -1, &cnt, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn, mark_sql, -1, &mark, NULL) != SQLITE_OK) {
    rc = ana_sql_fail(conn, "event names: prepare", err);
    goto out;
  }
  const char *account = NULL;
  int64_t have = -1; /* names of the account, counted when first needed */
  for (size_t i = 0; i < n && rc == 0; i++) {
    struct ana_local_name_count *e = &items[i];
    if (!account || strcmp(account, e->account) != 0) {
      account = e->account;
      have = -1;
    }
    sqlite3_reset(upd);
    sqlite3_bind_text(upd, 1, e->account, -1, SQLITE_STATIC);
    sqlite3_bind_text(upd, 2, e->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(upd, 3, e->count);
    sqlite3_bind_int64(upd, 4, e->first_ms);
    sqlite3_bind_int64(upd, 5, e->last_ms);
    if (sqlite3_step(upd) != SQLITE_DONE) {
      rc = ana_sql_fail(conn, "event names: update", err);
      break;
    }
    if (sqlite3_changes(conn) > 0)
      continue;
    if (have < 0) {
      sqlite3_reset(cnt);
      sqlite3_bind_text(cnt, 1, e->account, -1, SQLITE_STATIC);
      if (sqlite3_step(cnt) != SQLITE_ROW) {
        rc = ana_sql_fail(conn, "event names: count", err);
        break;
      }
      have = sqlite3_column_int64(cnt, 0);
    }
    if (have >= max_names) {
      if (full)
        full(ctx, e->account, e->name);
      continue;
    }
    sqlite3_reset(ins);
    sqlite3_bind_text(ins, 1, e->account, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, e->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 3, e->count);
    sqlite3_bind_int64(ins, 4, e->first_ms);
    sqlite3_bind_int64(ins, 5, e->last_ms);
    if (sqlite3_step(ins) != SQLITE_DONE) {
      rc = ana_sql_fail(conn, "event names: insert", err);
      break;
    }
    have++;
    e->added = true;
  }
  if (rc == 0) {
    sqlite3_bind_int64(mark, 1, (sqlite3_int64)watermark);
    if (sqlite3_step(mark) != SQLITE_DONE)
      rc = ana_sql_fail(conn, "event names: watermark", err);
  }
  if (rc == 0 && sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    rc = ana_sql_fail(conn, "event names: commit", err);
out:
  if (rc < 0) {
    sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
    for (size_t i = 0; i < n; i++)
      items[i].added = false;
  }
  sqlite3_finalize(upd);
  sqlite3_finalize(ins);
  sqlite3_finalize(cnt);
  sqlite3_finalize(mark);
  return rc;
}

int ana_local_names_rebuild(struct ana_local_names *ln, uint64_t after_seq, uint64_t upto_seq,
                            ana_local_name_count_fn fn, void *ctx, struct ana_error *err) {
  /* The events up to upto_seq are in events (staging.c). */
  int wait = ana_local_staging_wait(ln->db, upto_seq, err);
  if (wait < 0)
    return wait;
  sqlite3_stmt *st = NULL;
  static const char sql[] = "SELECT " ANA_ACCOUNT_ID_SQL ", " ANA_EVENT_STRING_SQL(
      "events.event_name") ", COUNT(*), MIN(ts + received_delta), MAX(ts + received_delta)"
                           " FROM" ANA_EVENTS_SEQ_WINDOW(
                               "") " GROUP BY events.account_id, event_name";
  if (sqlite3_prepare_v2(ln->conn, sql, -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(ln->conn, "event names: rebuild", err);
  sqlite3_bind_int64(st, 1, (sqlite3_int64)after_seq);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)upto_seq);
  int rc, rows = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_local_name_count c = {
        .account = (const char *)sqlite3_column_text(st, 0),
        .name = (const char *)sqlite3_column_text(st, 1),
        .count = sqlite3_column_int64(st, 2),
        .first_ms = sqlite3_column_int64(st, 3),
        .last_ms = sqlite3_column_int64(st, 4),
    };
    if (c.account && c.name)
      fn(ctx, &c);
    rows++;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return ana_sql_fail(ln->conn, "event names: rebuild", err);
  return rows;
}

int ana_local_names_list(struct ana_local_db *db, const char *account_id, const char *prefix,
                         const char *after, int limit, ana_local_name_count_fn fn, void *ctx,
                         struct ana_error *err) {
  sqlite3 *conn = ana_local_db_acquire_reader(db);
  sqlite3_stmt *st = NULL;
  int result = 0;
  /* Names are compared as bytes: those starting with prefix are a range
   * that starts at prefix. */
  if (sqlite3_prepare_v2(conn,
                         "SELECT name, first_seen, last_seen, count FROM event_names"
                         " WHERE account_id = ?1 AND name > ?2 AND name >= ?3"
                         " ORDER BY name LIMIT ?4",
                         -1, &st, NULL) != SQLITE_OK) {
    result = ana_sql_fail(conn, "event names: list", err);
    goto out;
  }
  sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, after ? after : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, prefix ? prefix : "", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, limit);
  size_t plen = prefix ? strlen(prefix) : 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_local_name_count c = {
        .account = account_id,
        .name = (const char *)sqlite3_column_text(st, 0),
        .first_ms = sqlite3_column_int64(st, 1),
        .last_ms = sqlite3_column_int64(st, 2),
        .count = sqlite3_column_int64(st, 3),
    };
    if (!c.name || (plen && strncmp(c.name, prefix, plen) != 0))
      break;
    if (fn(ctx, &c) != 0)
      break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    result = ana_sql_fail(conn, "event names: list", err);
out:
  sqlite3_finalize(st);
  ana_local_db_release_reader(db, conn);
  return result;
}
