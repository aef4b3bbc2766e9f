/* The alert evaluator's state in the local database (tables alert_accounts,
 * alert_instances, alert_history): on a connection of the evaluator's
 * (struct ana_local_conn), whose transactions the notification outbox
 * joins, with its statements prepared once; the history's pages read a
 * pooled reader. */
#include "local_db_sql.h"
#include "sql_stmt.h"

#include "ana_alloc.h"

#include <stdio.h>

enum {
  ST_ACCOUNT,
  ST_INSTANCE,
  ST_APPEND,
  ST_NOTE,
  ST_EXPIRE,
  ST_EXPIRE_TRIES,
  ST_EXPIRE_DONE,
  ST_N
};

static const char *const sqls[ST_N] = {
    [ST_ACCOUNT] = "INSERT OR IGNORE INTO alert_accounts VALUES (?1)",
    [ST_INSTANCE] = "INSERT OR REPLACE INTO alert_instances (alert_id, group_key, state, since,"
                    " last_notified, notified, value, has_value) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
    [ST_APPEND] = "INSERT INTO alert_history (alert_id, account_id, at, kind, state,"
                  " previous_state, value, has_value, threshold, severity, group_json, message,"
                  " channels, failed) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
    [ST_NOTE] = "UPDATE alert_history SET channels = ?1, failed = ?2 WHERE entry_id = ?3",
    [ST_EXPIRE] = "DELETE FROM alert_history WHERE at < ?1",
    /* the delivery attempts of alerts' notifications, part of their
     * history; a notification still pending keeps its attempts and row */
    [ST_EXPIRE_TRIES] = "DELETE FROM notify_attempts WHERE at < ?1 AND outbox_id IN (SELECT id"
                        " FROM notify_outbox WHERE source LIKE 'alert:%' AND state <> 'pending'"
                        " AND updated_at < ?1)",
    [ST_EXPIRE_DONE] = "DELETE FROM notify_outbox WHERE source LIKE 'alert:%' AND state <>"
                       " 'pending' AND updated_at < ?1 AND NOT EXISTS (SELECT 1 FROM"
                       " notify_attempts a WHERE a.outbox_id = notify_outbox.id)",
};

struct ana_local_alerts {
  struct ana_local_conn *c; /* borrowed */
  sqlite3 *conn;            /* c's */
  sqlite3_stmt *st[ST_N];   /* prepared on first use */
};

/* The statement k, reset with its bindings cleared; NULL with err. */
static sqlite3_stmt *stmt(struct ana_local_alerts *h, int k, struct ana_error *err) {
  if (!h->st[k] && sqlite3_prepare_v3(h->conn, sqls[k], -1, SQLITE_PREPARE_PERSISTENT, &h->st[k],
                                      NULL) != SQLITE_OK) {
    ana_sql_fail(h->conn, "alert state: prepare", err);
    return NULL;
  }
  sqlite3_reset(h->st[k]);
  sqlite3_clear_bindings(h->st[k]);
  return h->st[k];
}

/* Steps a statement without rows and resets it (releasing its locks). */
static int run_done(struct ana_local_alerts *h, sqlite3_stmt *st, struct ana_error *err) {
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ana_sql_fail(h->conn, "alert state: write", err);
  sqlite3_reset(st);
  return rc;
}

struct ana_local_alerts *ana_local_alerts_open(struct ana_local_conn *c, struct ana_error *err) {
  struct ana_local_alerts *h = ana_calloc(1, sizeof *h);
  if (!h) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  h->c = c;
  h->conn = ana_local_conn_sqlite(c);
  return h;
}

void ana_local_alerts_close(struct ana_local_alerts *h) {
  if (!h)
    return;
  for (int k = 0; k < ST_N; k++)
    sqlite3_finalize(h->st[k]);
  ana_free(h);
}

int ana_local_alerts_add_account(struct ana_local_alerts *h, const char *account_id,
                                 struct ana_error *err) {
  sqlite3_stmt *st = stmt(h, ST_ACCOUNT, err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
  return run_done(h, st, err);
}

int ana_local_alerts_accounts(struct ana_local_alerts *h, ana_local_alert_account_fn fn, void *ctx,
                              struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h->conn, "SELECT account_id FROM alert_accounts", -1, &st, NULL) !=
      SQLITE_OK)
    return ana_sql_fail(h->conn, "alert state: read", err);
  int n = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *a = (const char *)sqlite3_column_text(st, 0);
    n++;
    if (fn(ctx, a ? a : ""))
      break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    n = ana_sql_fail(h->conn, "alert state: read", err);
  sqlite3_finalize(st);
  return n;
}

int ana_local_alerts_put_instance(struct ana_local_alerts *h,
                                  const struct ana_local_alert_instance *in,
                                  struct ana_error *err) {
  sqlite3_stmt *st = stmt(h, ST_INSTANCE, err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_text(st, 1, in->alert_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, in->group_key, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, in->state);
  sqlite3_bind_int64(st, 4, in->since_ms);
  sqlite3_bind_int64(st, 5, in->last_notified_ms);
  sqlite3_bind_int(st, 6, in->notified);
  sqlite3_bind_double(st, 7, in->value);
  sqlite3_bind_int(st, 8, in->has_value);
  return run_done(h, st, err);
}

int ana_local_alerts_instances(struct ana_local_alerts *h, const char *alert_id,
                               ana_local_alert_instance_fn fn, void *ctx, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h->conn,
                         "SELECT group_key, state, since, last_notified, notified, value,"
                         " has_value FROM alert_instances WHERE alert_id = ?1",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(h->conn, "alert state: read", err);
  sqlite3_bind_text(st, 1, alert_id, -1, SQLITE_STATIC);
  int n = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *key = (const char *)sqlite3_column_text(st, 0);
    struct ana_local_alert_instance in = {
        .alert_id = alert_id,
        .group_key = key ? key : "",
        .state = sqlite3_column_int(st, 1),
        .since_ms = sqlite3_column_int64(st, 2),
        .last_notified_ms = sqlite3_column_int64(st, 3),
        .notified = sqlite3_column_int(st, 4) != 0,
        .value = sqlite3_column_double(st, 5),
        .has_value = sqlite3_column_int(st, 6) != 0,
    };
    n++;
    if (fn(ctx, &in))
      break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    n = ana_sql_fail(h->conn, "alert state: read", err);
  sqlite3_finalize(st);
  return n;
}

int ana_local_alerts_append(struct ana_local_alerts *h, const struct ana_local_alert_entry *e,
                            int64_t *entry_id, struct ana_error *err) {
  sqlite3_stmt *st = stmt(h, ST_APPEND, err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_text(st, 1, e->alert_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, e->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, e->at_ms);
  sqlite3_bind_text(st, 4, e->kind, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, e->state, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 6, e->previous_state, -1, SQLITE_STATIC);
  sqlite3_bind_double(st, 7, e->value);
  sqlite3_bind_int(st, 8, e->has_value);
  sqlite3_bind_double(st, 9, e->threshold);
  sqlite3_bind_text(st, 10, e->severity, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 11, e->group_json ? e->group_json : "{}", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 12, e->message ? e->message : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 13, e->channels ? e->channels : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 14, e->failed ? e->failed : "", -1, SQLITE_STATIC);
  int rc = run_done(h, st, err);
  if (rc == 0 && entry_id)
    *entry_id = sqlite3_last_insert_rowid(h->conn);
  return rc;
}

int ana_local_alerts_note(struct ana_local_alerts *h, int64_t entry_id, const char *channels,
                          const char *failed, struct ana_error *err) {
  sqlite3_stmt *st = stmt(h, ST_NOTE, err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_text(st, 1, channels, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, failed, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, entry_id);
  return run_done(h, st, err);
}

int ana_local_alerts_forget(struct ana_local_alerts *h, const char *alert_id,
                            struct ana_error *err) {
  static const char *const sql[] = {"DELETE FROM alert_instances WHERE alert_id = ?1",
                                    "DELETE FROM alert_history WHERE alert_id = ?1"};
  int rc = 0;
  for (size_t i = 0; i < 2 && rc == 0; i++) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h->conn, sql[i], -1, &st, NULL) != SQLITE_OK)
      return ana_sql_fail(h->conn, "alert state: delete", err);
    sqlite3_bind_text(st, 1, alert_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_sql_fail(h->conn, "alert state: delete", err);
    sqlite3_finalize(st);
  }
  return rc;
}

int ana_local_alerts_expire(struct ana_local_alerts *h, int64_t cutoff_ms, struct ana_error *err) {
  int n = 0;
  for (int k = ST_EXPIRE; k <= ST_EXPIRE_DONE; k++) {
    sqlite3_stmt *st = stmt(h, k, err);
    if (!st)
      return ANA_ERR_IO;
    sqlite3_bind_int64(st, 1, cutoff_ms);
    int rc = run_done(h, st, err);
    if (rc < 0)
      return rc;
    if (k != ST_EXPIRE_DONE)
      n += sqlite3_changes(h->conn);
  }
  return n;
}

/* The history and the delivery log as one list, newest first: (at, k, id)
 * orders it (k 0 a state change, id its entry; k 1 an attempt, id outbox
 * row * 1000 + attempt). */
#define HISTORY_COLS                                                                               \
  "at, k, id, kind, state, previous_state, value, has_value, threshold, severity, group_json,"     \
  " message, channels, failed, channel_id, ikey, attempt, status, error, duration_ms"
#define HISTORY_STATES                                                                             \
  "SELECT at, 0 AS k, entry_id AS id, kind, state, previous_state, value, has_value, threshold,"   \
  " severity, group_json, message, channels, failed, '' AS channel_id, '' AS ikey, 0 AS attempt,"  \
  " 0 AS status, '' AS error, 0 AS duration_ms FROM alert_history"                                 \
  " WHERE alert_id = ?1 AND account_id = ?2"
#define HISTORY_DELIVERIES                                                                         \
  " UNION ALL SELECT a.at, 1, a.outbox_id * 1000 + a.attempt, 'delivery', a.outcome, o.state, 0,"  \
  " 0, 0, '', '{}', '', CASE a.outcome WHEN 'delivered' THEN o.channel_id ELSE '' END,"            \
  " CASE a.outcome WHEN 'delivered' THEN '' ELSE o.channel_id || ': ' || a.error END,"             \
  " o.channel_id, o.idempotency_key, a.attempt, a.status, a.error, a.duration_ms"                  \
  " FROM notify_outbox o JOIN notify_attempts a ON a.outbox_id = o.id"                             \
  " WHERE o.account_id = ?2 AND o.source = ?8"
#define HISTORY_WHERE                                                                              \
  " WHERE (at, k, id) < (?3, ?9, ?10) AND at >= ?4 AND at < ?5"                                    \
  " AND (?6 = '' OR state = ?6 OR kind = ?6) ORDER BY at DESC, k DESC, id DESC LIMIT ?7"

static const char *col(sqlite3_stmt *st, int i) {
  const char *s = (const char *)sqlite3_column_text(st, i);
  return s ? s : "";
}

int ana_local_alerts_history(struct ana_local_db *db, const struct ana_local_alert_page *q,
                             ana_local_alert_entry_fn fn, void *ctx, struct ana_error *err) {
  sqlite3 *conn = ana_local_db_acquire_reader(db);
  sqlite3_stmt *st = NULL;
  const char *sql = q->deliveries_source
                        ? "SELECT " HISTORY_COLS " FROM (" HISTORY_STATES HISTORY_DELIVERIES
                          ")" HISTORY_WHERE
                        : "SELECT " HISTORY_COLS " FROM (" HISTORY_STATES ")" HISTORY_WHERE;
  if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "alert history: %s", sqlite3_errmsg(conn));
    ana_local_db_release_reader(db, conn);
    return ANA_ERR_IO;
  }
  sqlite3_bind_text(st, 1, q->alert_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, q->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, q->before_at_ms);
  sqlite3_bind_int64(st, 4, q->from_ms);
  sqlite3_bind_int64(st, 5, q->to_ms);
  sqlite3_bind_text(st, 6, q->state ? q->state : "", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 7, q->limit);
  if (q->deliveries_source)
    sqlite3_bind_text(st, 8, q->deliveries_source, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 9, q->before_k);
  sqlite3_bind_int64(st, 10, q->before_id);
  int n = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_local_alert_entry e = {
        .alert_id = q->alert_id,
        .account_id = q->account_id,
        .at_ms = sqlite3_column_int64(st, 0),
        .k = sqlite3_column_int(st, 1),
        .id = sqlite3_column_int64(st, 2),
        .kind = col(st, 3),
        .state = col(st, 4),
        .previous_state = col(st, 5),
        .value = sqlite3_column_double(st, 6),
        .has_value = sqlite3_column_int(st, 7) != 0,
        .threshold = sqlite3_column_double(st, 8),
        .severity = col(st, 9),
        .group_json = col(st, 10),
        .message = col(st, 11),
        .channels = col(st, 12),
        .failed = col(st, 13),
        .channel_id = col(st, 14),
        .idempotency_key = col(st, 15),
        .attempt = sqlite3_column_int(st, 16),
        .status = sqlite3_column_int(st, 17),
        .error = col(st, 18),
        .duration_ms = sqlite3_column_int64(st, 19),
    };
    n++;
    if (fn(ctx, &e))
      break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "alert history: %s", sqlite3_errmsg(conn));
    n = ANA_ERR_IO;
  }
  sqlite3_finalize(st);
  ana_local_db_release_reader(db, conn);
  return n;
}
