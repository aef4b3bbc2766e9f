/* SearchEvents over the embedded store: the events of the local database,
 * newest first, with the free-text index (text_index.c) when the query has
 * free text. */
#include "ana_local_db.h"
#include "local_db_sql.h"
#include "sqlite_backends.h"

#include "ana_alloc.h"

#include <stdio.h>
#include <string.h>

static int prepare_error(sqlite3 *db, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(db));
  return ANA_ERR_INTERNAL;
}

/* Free text as an FTS5 query: every word must appear; each is quoted so
 * user input cannot use FTS5 syntax. */
static char *fts_query(const char *text) {
  size_t n = strlen(text);
  char *q = ana_malloc(n * 3 + 8);
  if (!q)
    return NULL;
  size_t len = 0;
  const char *p = text;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == '\n')
      p++;
    if (!*p)
      break;
    if (len)
      q[len++] = ' ';
    q[len++] = '"';
    while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
      if (*p == '"')
        q[len++] = '"';
      q[len++] = *p++;
    }
    q[len++] = '"';
  }
  q[len] = '\0';
  return q;
}

/* JSON path of a top-level property for json_extract: $."key" */
static char *property_path(const char *key) {
  size_t n = strlen(key);
  char *p = ana_malloc(n * 2 + 8);
  if (!p)
    return NULL;
  size_t len = 0;
  p[len++] = '$';
  p[len++] = '.';
  p[len++] = '"';
  for (const char *k = key; *k; k++) {
    if (*k == '"' || *k == '\\')
      p[len++] = '\\';
    p[len++] = *k;
  }
  p[len++] = '"';
  p[len] = '\0';
  return p;
}

#define MAX_PROPERTY_FILTERS 16

/* Lets a reader see the index at text_path, as `text` (once per reader). */
static int attach_text_index(sqlite3 *r, const char *text_path, struct ana_error *err) {
  if (sqlite3_db_filename(r, "text"))
    return 0;
  char *attach = sqlite3_mprintf("ATTACH DATABASE %Q AS text", text_path);
  int rc = attach && sqlite3_exec(r, attach, NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                               "event store: cannot open the search index: %s", sqlite3_errmsg(r));
  sqlite3_free(attach);
  return rc;
}

int ana_sqlite_query_events(struct ana_local_db *db, const char *text_path,
                            const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                            struct ana_error *err) {
  char sql[4096];
  size_t len = 0;
  char *fts = NULL, *paths[MAX_PROPERTY_FILTERS] = {0};
  int rc = 0;
  if (q->n_properties > MAX_PROPERTY_FILTERS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "properties: at most %d property filters", MAX_PROPERTY_FILTERS);

#define APPEND(...) len += (size_t)snprintf(sql + len, sizeof sql - len, __VA_ARGS__)
  if (q->text && q->text[0] && text_path) {
    fts = fts_query(q->text);
    if (!fts)
      goto nomem;
  }
  if (fts && fts[0])
    /* Free text: start from the words' matches (usually few) and sort them;
     * CROSS JOIN keeps SQLite from walking the whole time index instead,
     * probing each event against the match set. */
    APPEND("SELECT payload, ts, event_id, seq FROM"
           " (SELECT rowid AS hit FROM text.events_fts WHERE events_fts MATCH ?9)"
           " CROSS JOIN events ON events.seq = hit WHERE account_id = ?1"
           " AND ts >= ?2 AND ts < ?3");
  else
    APPEND("SELECT payload, ts, event_id, seq FROM events WHERE account_id = ?1"
           " AND ts >= ?2 AND ts < ?3");
  if (q->event_type && q->event_type[0])
    APPEND(" AND event_type = ?4");
  if (q->event_name && q->event_name[0])
    APPEND(" AND event_name = ?5");
  if (q->session_id && q->session_id[0])
    APPEND(" AND session_id = ?6");
  if (q->after_cursor)
    APPEND(" AND (ts < ?7 OR (ts = ?7 AND event_id < ?8))");
  for (size_t i = 0; i < q->n_properties; i++) {
    paths[i] = property_path(q->property_keys[i]);
    if (!paths[i])
      goto nomem;
    APPEND(" AND CAST(json_extract(properties, ?%zu) AS TEXT) = ?%zu", 20 + 2 * i, 21 + 2 * i);
  }
  APPEND(" ORDER BY ts DESC, event_id DESC LIMIT ?10");
#undef APPEND

  sqlite3 *r = ana_local_db_acquire_reader(db);
  sqlite3_stmt *st = NULL;
  if (fts && fts[0] && (rc = attach_text_index(r, text_path, err)) < 0)
    goto release;
  if (sqlite3_prepare_v2(r, sql, -1, &st, NULL) != SQLITE_OK) {
    rc = prepare_error(r, err);
    goto release;
  }
  sqlite3_bind_text(st, 1, q->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, q->from_ms);
  sqlite3_bind_int64(st, 3, q->to_ms);
  if (q->event_type && q->event_type[0])
    sqlite3_bind_text(st, 4, q->event_type, -1, SQLITE_STATIC);
  if (q->event_name && q->event_name[0])
    sqlite3_bind_text(st, 5, q->event_name, -1, SQLITE_STATIC);
  if (q->session_id && q->session_id[0])
    sqlite3_bind_text(st, 6, q->session_id, -1, SQLITE_STATIC);
  if (q->after_cursor) {
    sqlite3_bind_int64(st, 7, q->cursor_ts);
    sqlite3_bind_text(st, 8, q->cursor_event_id, -1, SQLITE_STATIC);
  }
  if (fts && fts[0])
    sqlite3_bind_text(st, 9, fts, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 10, q->limit);
  for (size_t i = 0; i < q->n_properties; i++) {
    sqlite3_bind_text(st, (int)(20 + 2 * i), paths[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, (int)(21 + 2 * i), q->property_values[i], -1, SQLITE_STATIC);
  }
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (hit(ctx, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
            sqlite3_column_int64(st, 1), (const char *)sqlite3_column_text(st, 2),
            (uint64_t)sqlite3_column_int64(st, 3)))
      break;
  }
  if (step != SQLITE_ROW && step != SQLITE_DONE) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: search failed: %s", sqlite3_errmsg(r));
    rc = ANA_ERR_IO;
  }
  sqlite3_finalize(st);
release:
  ana_local_db_release_reader(db, r);
  goto out;
nomem:
  rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
out:
  ana_free(fts);
  for (size_t i = 0; i < MAX_PROPERTY_FILTERS; i++)
    ana_free(paths[i]);
  return rc;
}
