/* The re-encryption job's state in the local database: the field list the
 * stored events are sealed under, how far the rewrite is, and the events
 * whose free text is to be indexed again; and the scrub that leaves no old
 * page in the database file or its WAL afterwards. */
#include "local_db_sql.h"
#include "sql_stmt.h"

#include "ana_alloc.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define WHAT "field re-encryption"

int ana_local_reencryption_get(struct ana_local_conn *c, struct ana_local_reencryption *out,
                               struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  memset(out, 0, sizeof *out);
  if (sqlite3_prepare_v2(conn,
                         "SELECT fields, upto_seq, next_seq, phase, rewritten, started_at,"
                         " (SELECT tainted FROM field_reencryption_dicts WHERE id = 1) FROM "
                         "field_reencryption WHERE id = 1",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *f = (const char *)sqlite3_column_text(st, 0);
    snprintf(out->fields, sizeof out->fields, "%s", f ? f : "");
    out->upto_seq = (uint64_t)sqlite3_column_int64(st, 1);
    out->next_seq = (uint64_t)sqlite3_column_int64(st, 2);
    out->phase = sqlite3_column_int(st, 3);
    out->rewritten = (uint64_t)sqlite3_column_int64(st, 4);
    out->started_at_ms = sqlite3_column_int64(st, 5);
    out->tainted_dicts = sqlite3_column_int(st, 6);
    rc = 1;
  } else {
    rc = rc == SQLITE_DONE ? 0 : ana_sql_fail(conn, WHAT, err);
  }
  sqlite3_finalize(st);
  return rc;
}

int ana_local_reencryption_put(struct ana_local_conn *c, const struct ana_local_reencryption *s,
                               struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL, *dicts = NULL;
  if (sqlite3_prepare_v2(conn,
                         "INSERT OR REPLACE INTO field_reencryption (id, fields, upto_seq,"
                         " next_seq, phase, rewritten, started_at) VALUES (1, ?, ?, ?, ?, ?, ?)",
                         -1, &st, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "INSERT OR REPLACE INTO field_reencryption_dicts (id, tainted)"
                         " VALUES (1, ?)",
                         -1, &dicts, NULL) != SQLITE_OK) {
    int rc = ana_sql_fail(conn, WHAT, err);
    sqlite3_finalize(st);
    return rc;
  }
  sqlite3_bind_text(st, 1, s->fields, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)s->upto_seq);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)s->next_seq);
  sqlite3_bind_int(st, 4, s->phase);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)s->rewritten);
  sqlite3_bind_int64(st, 6, s->started_at_ms);
  sqlite3_bind_int(dicts, 1, s->tainted_dicts);
  int rc = ana_local_conn_begin(c, err);
  if (rc == 0 && (sqlite3_step(st) != SQLITE_DONE || sqlite3_step(dicts) != SQLITE_DONE))
    rc = ana_sql_fail(conn, WHAT, err);
  sqlite3_finalize(st);
  sqlite3_finalize(dicts);
  if (rc == 0)
    return ana_local_conn_commit(c, err);
  ana_local_conn_rollback(c);
  return rc;
}

int ana_local_reencryption_note(struct ana_local_conn *c, const int64_t *refs, size_t n,
                                struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  if (n == 0)
    return 0;
  if (sqlite3_prepare_v2(conn, "INSERT OR IGNORE INTO field_reencryption_reindex VALUES (?)", -1,
                         &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  int rc = ana_local_conn_begin(c, err);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, refs[i]);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_sql_fail(conn, WHAT, err);
  }
  sqlite3_finalize(st);
  if (rc == 0)
    return ana_local_conn_commit(c, err);
  ana_local_conn_rollback(c);
  return rc;
}

int ana_local_reencryption_pending(struct ana_local_conn *c, int64_t **seqs, size_t *n,
                                   struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  *seqs = NULL;
  *n = 0;
  if (sqlite3_prepare_v2(conn, "SELECT key FROM field_reencryption_reindex ORDER BY key", -1, &st,
                         NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  size_t cap = 0;
  int rc = 0, step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (*n == cap) {
      size_t nc = cap ? cap * 2 : 64;
      int64_t *p = ana_realloc(*seqs, nc * sizeof *p);
      if (!p) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      *seqs = p;
      cap = nc;
    }
    (*seqs)[(*n)++] = sqlite3_column_int64(st, 0);
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = ana_sql_fail(conn, WHAT, err);
  sqlite3_finalize(st);
  if (rc < 0) {
    ana_free(*seqs);
    *seqs = NULL;
    *n = 0;
  }
  return rc;
}

int ana_local_reencryption_advance(struct ana_local_conn *c, uint64_t next_seq, uint64_t rewritten,
                                   struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  int rc = ana_local_conn_begin(c, err);
  if (rc < 0)
    return rc;
  if (sqlite3_exec(conn, "DELETE FROM field_reencryption_reindex", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "UPDATE field_reencryption SET next_seq = ?, rewritten = rewritten + ?"
                         " WHERE id = 1",
                         -1, &st, NULL) != SQLITE_OK)
    rc = ana_sql_fail(conn, WHAT, err);
  if (rc == 0) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)next_seq);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)rewritten);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_sql_fail(conn, WHAT, err);
  }
  sqlite3_finalize(st);
  if (rc == 0)
    return ana_local_conn_commit(c, err);
  ana_local_conn_rollback(c);
  return rc;
}

int ana_local_reencryption_last_dict(struct ana_local_conn *c, int *out, struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  *out = 0;
  if (sqlite3_prepare_v2(conn, "SELECT coalesce(max(id), 0) FROM event_dicts", -1, &st, NULL) !=
      SQLITE_OK)
    return ana_sql_fail(conn, WHAT, err);
  int rc = 0;
  if (sqlite3_step(st) == SQLITE_ROW)
    *out = sqlite3_column_int(st, 0);
  else
    rc = ana_sql_fail(conn, WHAT, err);
  sqlite3_finalize(st);
  return rc;
}

void ana_local_db_retire_dicts(struct ana_local_db *db, int upto_id) {
  ana_event_codec_retire(ana_local_db_event_codec(db), upto_id);
}

/* ana_event_dict(body): the dictionary a body is compressed with (0: none, event_body.c). */
int ana_local_reencryption_undict(struct ana_local_conn *c, int upto_id, int64_t *after, int max,
                                  uint64_t *rewritten, struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *read = NULL, *update = NULL;
  *rewritten = 0;
  /* In the table's order (its rowid: no index on seq is needed). */
  if (sqlite3_exec(conn, "PRAGMA secure_delete = ON", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "SELECT count(*), max(key) FROM"
                         " (SELECT key FROM events WHERE key > ?1 ORDER BY key LIMIT ?2)",
                         -1, &read, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "UPDATE events SET body = ana_event_body_raw(body) WHERE key > ?1"
                         " AND key <= ?2 AND ana_event_dict(body) BETWEEN 1 AND ?3",
                         -1, &update, NULL) != SQLITE_OK) {
    int rc = ana_sql_fail(conn, WHAT ": dictionaries", err);
    sqlite3_finalize(read);
    return rc;
  }
  int rc = ana_local_conn_begin(c, err);
  int n = 0;
  sqlite3_int64 last = 0;
  if (rc == 0) {
    sqlite3_bind_int64(read, 1, *after);
    sqlite3_bind_int(read, 2, max);
    if (sqlite3_step(read) == SQLITE_ROW) {
      n = sqlite3_column_int(read, 0);
      last = sqlite3_column_int64(read, 1);
    } else {
      rc = ana_sql_fail(conn, WHAT ": dictionaries", err);
    }
  }
  if (rc == 0 && n > 0) {
    sqlite3_bind_int64(update, 1, *after);
    sqlite3_bind_int64(update, 2, last);
    sqlite3_bind_int(update, 3, upto_id);
    if (sqlite3_step(update) != SQLITE_DONE)
      rc = ana_sql_fail(conn, WHAT ": dictionaries", err);
    else
      *rewritten = (uint64_t)sqlite3_changes(conn);
  }
  sqlite3_finalize(read);
  sqlite3_finalize(update);
  if (rc == 0 && (rc = ana_local_conn_commit(c, err)) == 0) {
    if (n > 0)
      *after = last;
    return n;
  }
  if (rc < 0)
    ana_local_conn_rollback(c);
  return rc;
}

int ana_local_reencryption_drop_dicts(struct ana_local_conn *c, int upto_id,
                                      struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  if (sqlite3_exec(conn, "PRAGMA secure_delete = ON", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn, "DELETE FROM event_dicts WHERE id <= ?", -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT ": dictionaries", err);
  sqlite3_bind_int(st, 1, upto_id);
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ana_sql_fail(conn, WHAT ": dictionaries", err);
  sqlite3_finalize(st);
  return rc;
}

struct alert_entry {
  int64_t id;
  char *account, *group_json, *message;
  char *new_group_json, *new_message;
};

static char *dup_column(sqlite3_stmt *st, int col) {
  const char *t = (const char *)sqlite3_column_text(st, col);
  size_t n = t ? (size_t)sqlite3_column_bytes(st, col) : 0;
  char *d = ana_malloc(n + 1);
  if (d) {
    if (n)
      memcpy(d, t, n);
    d[n] = '\0';
  }
  return d;
}

static void free_entries(struct alert_entry *e, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ana_free(e[i].account);
    ana_free(e[i].group_json);
    ana_free(e[i].message);
    ana_free(e[i].new_group_json);
    ana_free(e[i].new_message);
  }
  ana_free(e);
}

/* Reads one page of entries after *after; returns how many. */
static int read_entries(sqlite3 *conn, int64_t after, int max, struct alert_entry **out,
                        struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  *out = NULL;
  if (sqlite3_prepare_v2(conn,
                         "SELECT entry_id, account_id, group_json, message FROM alert_history"
                         " WHERE entry_id > ? ORDER BY entry_id LIMIT ?",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT ": alert history", err);
  struct alert_entry *e = ana_calloc((size_t)max, sizeof *e);
  int n = 0, rc = 0, step;
  if (!e) {
    sqlite3_finalize(st);
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  sqlite3_bind_int64(st, 1, after);
  sqlite3_bind_int(st, 2, max);
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct alert_entry *x = &e[n++];
    x->id = sqlite3_column_int64(st, 0);
    x->account = dup_column(st, 1);
    x->group_json = dup_column(st, 2);
    x->message = dup_column(st, 3);
    if (!x->account || !x->group_json || !x->message) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = ana_sql_fail(conn, WHAT ": alert history", err);
  sqlite3_finalize(st);
  if (rc < 0) {
    free_entries(e, (size_t)n);
    return rc;
  }
  *out = e;
  return n;
}

static int write_entries(struct ana_local_conn *c, struct alert_entry *e, int n,
                         struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  sqlite3_stmt *st = NULL;
  if (sqlite3_exec(conn, "PRAGMA secure_delete = ON", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "UPDATE alert_history SET group_json = coalesce(?2, group_json),"
                         " message = coalesce(?3, message) WHERE entry_id = ?1",
                         -1, &st, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT ": alert history", err);
  int rc = ana_local_conn_begin(c, err), changed = 0;
  for (int i = 0; rc == 0 && i < n; i++) {
    if (!e[i].new_group_json && !e[i].new_message)
      continue;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, e[i].id);
    if (e[i].new_group_json)
      sqlite3_bind_text(st, 2, e[i].new_group_json, -1, SQLITE_STATIC);
    else
      sqlite3_bind_null(st, 2);
    if (e[i].new_message)
      sqlite3_bind_text(st, 3, e[i].new_message, -1, SQLITE_STATIC);
    else
      sqlite3_bind_null(st, 3);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ana_sql_fail(conn, WHAT ": alert history", err);
    else
      changed++;
  }
  sqlite3_finalize(st);
  if (rc == 0 && (rc = ana_local_conn_commit(c, err)) == 0)
    return changed;
  ana_local_conn_rollback(c);
  return rc;
}

int ana_local_reencryption_alert_history(struct ana_local_conn *c, int max,
                                         ana_local_alert_blind_fn fn, void *ctx,
                                         struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  int64_t after = 0;
  int total = 0;
  if (max <= 0)
    max = 500;
  for (;;) {
    struct alert_entry *e = NULL;
    int n = read_entries(conn, after, max, &e, err);
    if (n <= 0) {
      free_entries(e, 0);
      return n < 0 ? n : total;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++)
      rc = fn(ctx, e[i].account, e[i].group_json, e[i].message, &e[i].new_group_json,
              &e[i].new_message, err);
    if (rc == 0)
      rc = write_entries(c, e, n, err);
    after = e[n - 1].id;
    free_entries(e, (size_t)n);
    if (rc < 0)
      return rc;
    total += rc;
    if (n < max)
      return total;
  }
}

/* Gives every free page back to the file system (a database made before
 * schema 13 has none to give: auto_vacuum is off there), then copies the
 * WAL into the database and truncates it (a TRUNCATE checkpoint, retried
 * while readers hold old snapshots). */
int ana_local_db_scrub(struct ana_local_conn *c, int timeout_ms, struct ana_error *err) {
  sqlite3 *conn = ana_local_conn_sqlite(c);
  if (sqlite3_exec(conn, "PRAGMA incremental_vacuum", NULL, NULL, NULL) != SQLITE_OK)
    return ana_sql_fail(conn, WHAT ": freeing pages", err);
  for (int waited = 0;; waited += 100) {
    int busy = 1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(conn, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      busy = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (!busy)
      return 0;
    if (waited >= timeout_ms)
      return ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                           WHAT ": the WAL could not be emptied in %d ms (readers in the way)",
                           timeout_ms);
    struct timespec pause = {0, 100000000};
    nanosleep(&pause, NULL);
  }
}
