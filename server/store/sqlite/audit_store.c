/* The embedded audit store: table audit_log (append-only, by seq) and the
 * retention anchor audit_anchor, on a connection of its own. */
#include "ana_audit.h"
#include "ana_store.h"
#include "local_db_sql.h"
#include "locked_conn.h"
#include "sqlite_backends.h"

#include "ana_alloc.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define WHAT "audit log"

static void blob32(sqlite3_stmt *st, int col, uint8_t out[ANA_AUDIT_HASH_LEN]) {
  const void *b = sqlite3_column_blob(st, col);
  int n = sqlite3_column_bytes(st, col);
  memset(out, 0, ANA_AUDIT_HASH_LEN);
  if (b)
    memcpy(out, b, n < ANA_AUDIT_HASH_LEN ? (size_t)n : ANA_AUDIT_HASH_LEN);
}

/* Kept prepared (sqlite_locked_kept): every append reads the head. */
static const char sql_head[] = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
static const char sql_anchor[] = "SELECT seq, hash FROM audit_anchor WHERE id = 1";
static const char sql_insert[] =
    "INSERT INTO audit_log (seq, at, kind, account_id, subject, key_id, method, target_id, code, "
    "peer, request_id, prev_hash, hash) VALUES "
    "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/* One row (seq, hash) of st into out (st reset after); found = whether
 * there was one. */
static int read_row(struct sqlite_locked_conn *s, sqlite3_stmt *st, struct ana_audit_anchor *out,
                    bool *found, struct ana_error *err) {
  *found = false;
  int step = sqlite3_step(st);
  if (step == SQLITE_ROW) {
    out->seq = (uint64_t)sqlite3_column_int64(st, 0);
    blob32(st, 1, out->hash);
    *found = true;
  }
  int rc = step == SQLITE_ROW || step == SQLITE_DONE ? 0 : ana_sql_fail(s->conn, WHAT, err);
  sqlite3_reset(st);
  return rc;
}

/* One row (seq, hash) of a kept statement (sql_head, sql_anchor); s
 * locked. */
static int read_pair(struct sqlite_locked_conn *s, const char *sql, struct ana_audit_anchor *out,
                     bool *found, struct ana_error *err) {
  *found = false;
  sqlite3_stmt *st = sqlite_locked_kept(s, sql, WHAT, err);
  return st ? read_row(s, st, out, found, err) : ANA_ERR_IO;
}

static int audit_anchor(void *p, struct ana_audit_anchor *out, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  bool found;
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&s->mu);
  int rc = read_pair(s, sql_anchor, out, &found, err);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static int audit_head(void *p, struct ana_audit_anchor *out, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  bool found;
  pthread_mutex_lock(&s->mu);
  int rc = read_pair(s, sql_head, out, &found, err);
  pthread_mutex_unlock(&s->mu);
  if (rc == 0 && !found)
    rc = audit_anchor(p, out, err);
  return rc;
}

static int audit_append(void *p, struct ana_audit_record *r, size_t n, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  sqlite3_stmt *st = NULL;
  int rc = sqlite_locked_begin(s, WHAT, err);
  if (rc < 0)
    return rc;
  /* Chained inside the write transaction, from the head as stored: another
   * process appending (analyticsd keys) is serialised by SQLite's lock. */
  struct ana_audit_anchor head;
  bool found;
  if ((rc = read_pair(s, sql_head, &head, &found, err)) < 0 ||
      (!found && (rc = read_pair(s, sql_anchor, &head, &found, err)) < 0))
    goto out;
  if (!found)
    memset(&head, 0, sizeof head);
  for (size_t i = 0; i < n; i++) {
    r[i].seq = head.seq + 1;
    memcpy(r[i].prev_hash, head.hash, ANA_AUDIT_HASH_LEN);
    if (ana_audit_record_hash(&r[i], r[i].hash) < 0) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
    head.seq = r[i].seq;
    memcpy(head.hash, r[i].hash, ANA_AUDIT_HASH_LEN);
  }
  if (!(st = sqlite_locked_kept(s, sql_insert, WHAT, err))) {
    rc = ANA_ERR_IO;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)r[i].seq);
    sqlite3_bind_int64(st, 2, r[i].at_ms);
    const char *text[] = {r[i].kind,   r[i].account_id, r[i].subject,
                          r[i].key_id, r[i].method,     r[i].target_id};
    for (int k = 0; k < 6; k++)
      sqlite3_bind_text(st, 3 + k, text[k] ? text[k] : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 9, r[i].code);
    sqlite3_bind_text(st, 10, r[i].peer ? r[i].peer : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, r[i].request_id ? r[i].request_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 12, r[i].prev_hash, ANA_AUDIT_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 13, r[i].hash, ANA_AUDIT_HASH_LEN, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
      rc = ana_sql_fail(s->conn, WHAT, err);
      goto out;
    }
  }
out:
  if (st)
    sqlite3_reset(st); /* kept: reset, not finalized */
  return sqlite_locked_end(s, NULL, rc, WHAT, err);
}

static int audit_retain(void *p, int64_t before_ms, int64_t *deleted, struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  sqlite3_stmt *st = NULL;
  *deleted = 0;
  int rc = sqlite_locked_begin(s, WHAT, err);
  if (rc < 0)
    return rc;
  /* The records are deleted as a prefix of the chain: up to the last one
   * older than the cut (times only grow along the chain, up to clock steps). */
  struct ana_audit_anchor last;
  bool found;
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT seq, hash FROM audit_log WHERE at < %lld ORDER BY seq DESC LIMIT 1",
           (long long)before_ms);
  sqlite3_stmt *q = ana_sql_prepare(s->conn, sql, WHAT, err);
  rc = q ? read_row(s, q, &last, &found, err) : ANA_ERR_IO;
  sqlite3_finalize(q);
  if (rc < 0)
    goto out;
  if (found) {
    if (!(st = ana_sql_prepare(s->conn, "UPDATE audit_anchor SET seq = ?1, hash = ?2 WHERE id = 1",
                               WHAT, err))) {
      rc = ANA_ERR_IO;
      goto out;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)last.seq);
    sqlite3_bind_blob(st, 2, last.hash, ANA_AUDIT_HASH_LEN, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
      rc = ana_sql_fail(s->conn, WHAT, err);
      goto out;
    }
    snprintf(sql, sizeof sql, "DELETE FROM audit_log WHERE seq <= %llu",
             (unsigned long long)last.seq);
    if (sqlite3_exec(s->conn, sql, NULL, NULL, NULL) != SQLITE_OK) {
      rc = ana_sql_fail(s->conn, WHAT, err);
      goto out;
    }
    *deleted = sqlite3_changes(s->conn);
  }
out:
  return sqlite_locked_end(s, st, rc, WHAT, err);
}

static int audit_list(void *p, const struct ana_audit_query *q, ana_audit_record_fn fn, void *ctx,
                      struct ana_error *err) {
  struct sqlite_locked_conn *s = p;
  const char *cols = "SELECT seq, at, kind, account_id, subject, key_id, method, target_id, code, "
                     "peer, request_id, prev_hash, hash FROM audit_log ";
  char sql[640];
  if (q->chain)
    snprintf(sql, sizeof sql, "%s WHERE seq > ?1 ORDER BY seq LIMIT ?2", cols);
  else
    snprintf(sql, sizeof sql,
             "%s WHERE account_id = ?3 AND (?1 = 0 OR seq < ?1) AND (?4 = 0 OR at >= ?4) AND "
             "(?5 = 0 OR at < ?5) AND (?6 = '' OR subject = ?6) AND (?7 = '' OR method = ?7) AND "
             "(?8 < 0 OR code = ?8) ORDER BY seq DESC LIMIT ?2",
             cols);
  sqlite3_stmt *st = sqlite_locked_prepare(s, sql, WHAT, err);
  if (!st)
    return ANA_ERR_IO;
  sqlite3_bind_int64(st, 1, (sqlite3_int64)(q->chain ? q->after_seq : q->before_seq));
  sqlite3_bind_int(st, 2, q->limit);
  if (!q->chain) {
    sqlite3_bind_text(st, 3, q->account_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, q->from_ms);
    sqlite3_bind_int64(st, 5, q->to_ms);
    sqlite3_bind_text(st, 6, q->subject ? q->subject : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, q->method ? q->method : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 8, q->code);
  }
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_audit_record r;
    memset(&r, 0, sizeof r);
    r.seq = (uint64_t)sqlite3_column_int64(st, 0);
    blob32(st, 11, r.prev_hash);
    blob32(st, 12, r.hash);
    const char *account = (const char *)sqlite3_column_text(st, 3);
    if (q->chain && (!account || strcmp(account, q->account_id) != 0)) {
      r.redacted = true;
    } else {
      r.at_ms = sqlite3_column_int64(st, 1);
      r.kind = (const char *)sqlite3_column_text(st, 2);
      r.account_id = account;
      r.subject = (const char *)sqlite3_column_text(st, 4);
      r.key_id = (const char *)sqlite3_column_text(st, 5);
      r.method = (const char *)sqlite3_column_text(st, 6);
      r.target_id = (const char *)sqlite3_column_text(st, 7);
      r.code = sqlite3_column_int(st, 8);
      r.peer = (const char *)sqlite3_column_text(st, 9);
      r.request_id = (const char *)sqlite3_column_text(st, 10);
    }
    if (fn(ctx, &r) != 0)
      break;
  }
  return sqlite_locked_rows_end(s, st, step, WHAT, err);
}

const struct ana_audit_store_ops ana_sqlite_audit_store = {
    .version = ANA_AUDIT_STORE_VERSION,
    .name = "sqlite",
    .open = sqlite_locked_conn_open,
    .head = audit_head,
    .anchor = audit_anchor,
    .append = audit_append,
    .retain = audit_retain,
    .list = audit_list,
    .close = sqlite_locked_conn_close,
};
