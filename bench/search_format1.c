/* The free-text index's format 1 and its query, for search_bench's comparison (see
 * search_format1.h): raw SQLite on a file of the benchmark's own. */
#include "search_format1.h"

#include "bench_common.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sqlite3 *old_conn;

static void die(const char *what, sqlite3 *c) {
  fprintf(stderr, "search_bench: %s: %s\n", what, sqlite3_errmsg(c));
  exit(1);
}

double search_format1_build(const char *dir, long n_events, search_format1_text_fn text_of) {
  char path[512];
  snprintf(path, sizeof path, "%s/old-text.db", dir);
  sqlite3 *c = NULL;
  if (sqlite3_open(path, &c) != SQLITE_OK)
    die("old index", c);
  double start = bench_now_s();
  if (sqlite3_exec(c,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "CREATE VIRTUAL TABLE events_fts USING fts5(search_text, content='')",
                   NULL, NULL, NULL) != SQLITE_OK)
    die("old index", c);
  /* Its rowids name the events' rows (the events table has no index on
   * seq any more): the key of commit sequence i + 1 (fill commits event
   * number i as i + 1), read from the events. */
  int64_t *keys = calloc((size_t)n_events + 1, sizeof *keys);
  sqlite3 *ev = NULL;
  sqlite3_stmt *st = NULL;
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  if (!keys || sqlite3_open_v2(path, &ev, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(ev, "SELECT key FROM events", -1, &st, NULL) != SQLITE_OK)
    die("old index: events", ev);
  while (sqlite3_step(st) == SQLITE_ROW) {
    int64_t key = sqlite3_column_int64(st, 0);
    int64_t seq = key & ((INT64_C(1) << 40) - 1);
    if (seq >= 1 && seq <= n_events)
      keys[seq - 1] = key;
  }
  sqlite3_finalize(st);
  sqlite3_close(ev);
  sqlite3_stmt *ins = NULL;
  if (sqlite3_prepare_v2(c, "INSERT INTO events_fts (rowid, search_text) VALUES (?1, ?2)", -1, &ins,
                         NULL) != SQLITE_OK)
    die("old index", c);
  /* In batches of 1,000 in sequence order, as its thread indexed them. */
  for (long from = 0; from < n_events; from += 1000) {
    if (sqlite3_exec(c, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
      die("old index", c);
    for (long i = from; i < from + 1000 && i < n_events; i++) {
      char text[160];
      text_of(i, text, sizeof text);
      sqlite3_bind_int64(ins, 1, keys[i]);
      sqlite3_bind_text(ins, 2, text, -1, SQLITE_TRANSIENT);
      if (sqlite3_step(ins) != SQLITE_DONE)
        die("old index", c);
      sqlite3_reset(ins);
    }
    if (sqlite3_exec(c, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
      die("old index", c);
  }
  sqlite3_finalize(ins);
  free(keys);
  double rate = (double)n_events / (bench_now_s() - start);
  sqlite3_close(c);
  return rate;
}

void search_format1_open(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  if (sqlite3_open_v2(path, &old_conn, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
    die("open", old_conn);
  char *attach = sqlite3_mprintf("ATTACH %Q AS text",
                                 (snprintf(path, sizeof path, "%s/old-text.db", dir), path));
  if (sqlite3_exec(old_conn, attach, NULL, NULL, NULL) != SQLITE_OK)
    die("attach", old_conn);
  sqlite3_free(attach);
}

void search_format1_close(void) {
  sqlite3_close(old_conn);
  old_conn = NULL;
}

void search_format1_search(const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx) {
  char match[64];
  const char *w = q->text;
  size_t len = 0;
  match[0] = '\0';
  while (*w) { /* words quoted, as it did */
    const char *e = strchr(w, ' ');
    size_t n = e ? (size_t)(e - w) : strlen(w);
    len +=
        (size_t)snprintf(match + len, sizeof match - len, "%s\"%.*s\"", len ? " " : "", (int)n, w);
    w += n + (e ? 1 : 0);
  }
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT body, ts, event_id, seq FROM"
           " (SELECT rowid AS hit FROM text.events_fts WHERE events_fts MATCH ?9)"
           " CROSS JOIN events ON events.key = hit"
           " WHERE account_id = (SELECT id FROM dedupe_accounts WHERE account_id = ?1)"
           " AND ts >= ?2 AND ts < ?3%s%s ORDER BY ts DESC, event_id DESC LIMIT ?10",
           q->event_name ? " AND event_name = (SELECT id FROM event_strings WHERE name = ?5)" : "",
           q->after_cursor ? " AND (ts < ?7 OR (ts = ?7 AND event_id < ?8))" : "");
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(old_conn, sql, -1, &st, NULL) != SQLITE_OK)
    die("old search", old_conn);
  sqlite3_bind_text(st, 1, q->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, q->from_ms);
  sqlite3_bind_int64(st, 3, q->to_ms);
  if (q->event_name)
    sqlite3_bind_text(st, 5, q->event_name, -1, SQLITE_STATIC);
  if (q->after_cursor) {
    sqlite3_bind_int64(st, 7, q->cursor_ts);
    sqlite3_bind_text(st, 8, q->cursor_event_id, -1, SQLITE_STATIC);
  }
  sqlite3_bind_text(st, 9, match, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 10, q->limit);
  while (sqlite3_step(st) == SQLITE_ROW)
    if (hit(ctx, NULL, 0, sqlite3_column_int64(st, 1), (const char *)sqlite3_column_text(st, 2), 0))
      break;
  sqlite3_finalize(st);
}
