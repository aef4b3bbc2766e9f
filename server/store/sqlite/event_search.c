/* SearchEvents over the embedded store: the events of the local database,
 * newest first, with the free-text index (text_index.c) when the query has
 * free text.
 *
 * Free text, newest first, at a cost that does not grow with the number of
 * matches: the index's entries are in commit order (rowid = commit
 * sequence), not in time order, so the matches of a word in 10% of ten
 * million events (a million) cannot be sorted by timestamp for each page.
 * Instead the search asks the index for the matches of one stretch of time
 * at a time, newest first: each entry holds the tokens of its day, hour,
 * minute and second (and of its event name). It counts the
 * matches of the whole query, up to PROBE_ROWS (reading that many rowids
 * costs little); under that it reads them all (joined with the events,
 * sorted, as the query without the index does); at or over it, it goes
 * down the days of the range, newest first, then the hours of a day that
 * has too many, its minutes, its seconds. A page thus reads a few
 * buckets of fewer than PROBE_ROWS matches each, wherever it starts (the
 * cursor's time), whatever the term's frequency. The results are those of
 * one query over all the matches: buckets are disjoint stretches of time
 * read newest first, each sorted by (timestamp, event id) descending. */
#include "ana_local_db.h"
#include "local_db_sql.h"
#include "sqlite_backends.h"
#include "text_index.h"

#include "ana_alloc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int prepare_error(sqlite3 *db, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(db));
  return ANA_ERR_INTERNAL;
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

/* Whether a property equal to v (as the filter compares: the value's text)
 * has v itself in the properties' JSON text: v is not a number's or a
 * boolean's text (those compare by their SQL rendering, "1" for true, "1.0"
 * for 1e0, "Inf"), and has only characters that JSON writes as they are (printable
 * ASCII but for '"', '\\' and '/'). Such a filter first looks for v in the
 * text, a cheap test that most rows fail, before it parses the JSON. */
static bool substring_of_json(const char *v) {
  if (!v || !*v || strchr("0123456789+-.", v[0]) || strcmp(v, "Inf") == 0)
    return false;
  for (const char *c = v; *c; c++)
    if (*c < 0x20 || *c > 0x7e || *c == '"' || *c == '\\' || *c == '/')
      return false;
  return true;
}

/* Runs sql (BEGIN, COMMIT) on reader r as a kept statement. */
static int run_kept(struct ana_local_db *db, sqlite3 *r, const char *sql) {
  sqlite3_stmt *st = ana_local_db_reader_statement(db, r, sql);
  if (!st)
    return SQLITE_ERROR;
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

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

/* A bucket's matches read at once (joined with the events and sorted) are
 * fewer than this; a bucket with more is read by its smaller buckets. */
#define PROBE_ROWS 400

enum rows_of { INDEX_MATCHES, ONE_EVENT, BY_KEY };

/* The SELECT of the events matching q (without its free text): of the
 * index's matches of ?9 (newest first), (ONE_EVENT, not ordered, no
 * payload: column 0 is its key) the event whose sequence number is ?9, or
 * (BY_KEY) the event whose key is ?9. With `words`, also the event's text (column 4). A match's
 * row is found by its sequence number in each UTC day ?12 to ?13 (its
 * bucket's) that may hold it (event_days: the table has no index on seq). */
static void rows_sql(const struct ana_event_query *q, enum rows_of of, bool words, char *sql,
                     size_t size) {
  size_t len = 0;
#define APPEND(...) len += (size_t)snprintf(sql + len, size - len, __VA_ARGS__)
  APPEND("SELECT %s, ts, event_id, seq%s FROM",
         of == ONE_EVENT ? "events.key" : ANA_EVENT_PAYLOAD_SQL,
         words ? ", ana_event_text(body)" : "");
  if (of == BY_KEY)
    /* The row of a time index entry (key ?9), when it passes the filters. */
    APPEND(" events WHERE key = ?9 AND");
  else if (of == ONE_EVENT)
    APPEND(" event_days d CROSS JOIN events ON events.key = d.day * 1099511627776 + ?9"
           " WHERE d.day BETWEEN ?12 AND ?13 AND d.min_seq <= ?9 AND d.max_seq >= ?9 AND");
  else
    /* Start from the matches and sort them; CROSS JOIN keeps SQLite from
     * walking the whole table instead, probing each event against the
     * match set. */
    APPEND(" (SELECT rowid AS hit FROM text.events_fts WHERE events_fts MATCH ?9)"
           " CROSS JOIN event_days d CROSS JOIN events ON events.key = d.day * 1099511627776 + hit"
           " WHERE d.day BETWEEN ?12 AND ?13 AND d.min_seq <= hit AND d.max_seq >= hit AND");
  APPEND(" account_id = " ANA_ACCOUNT_NUMBER_SQL(1) " AND ts >= ?2 AND ts < ?3");
  if (q->event_type && q->event_type[0])
    APPEND(" AND event_type = " ANA_EVENT_STRING_ID_SQL(4));
  if (q->event_name && q->event_name[0])
    APPEND(" AND event_name = " ANA_EVENT_STRING_ID_SQL(5));
  if (q->session_id && q->session_id[0])
    APPEND(" AND session_id = ?6");
  if (q->after_cursor)
    /* ts <= ?7 too: a bound the index seeks to. */
    APPEND(" AND ts <= ?7 AND (ts < ?7 OR (ts = ?7 AND event_id < ?8))");
  for (size_t i = 0; i < q->n_properties; i++) {
    if (substring_of_json(q->property_values[i]))
      APPEND(" AND ana_event_props_has(body, ?%zu)", 21 + 2 * i);
    APPEND(" AND CAST(json_extract(ana_event_props(body), ?%zu) AS TEXT) = ?%zu", 20 + 2 * i,
           21 + 2 * i);
  }
  if (of != ONE_EVENT && of != BY_KEY)
    APPEND(" ORDER BY ts DESC, event_id DESC LIMIT ?10");
#undef APPEND
}

static void bind_filters(sqlite3_stmt *st, const struct ana_event_query *q, char *const *paths) {
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
    ana_event_id_bind(st, 8, q->cursor_event_id, -1);
  }
  sqlite3_bind_int(st, 10, q->limit);
  for (size_t i = 0; i < q->n_properties; i++) {
    sqlite3_bind_text(st, (int)(20 + 2 * i), paths[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, (int)(21 + 2 * i), q->property_values[i], -1, SQLITE_STATIC);
  }
}

static int search_failed(sqlite3 *r, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: search failed: %s", sqlite3_errmsg(r));
  return ANA_ERR_IO;
}

/* Tokens as the index's tokenizer (FTS5's unicode61) cuts a text. */
struct tokens {
  char **v;
  size_t n, cap;
  bool failed;
};

static void tokens_free(struct tokens *t) {
  for (size_t i = 0; i < t->n; i++)
    ana_free(t->v[i]);
  ana_free(t->v);
  *t = (struct tokens){0};
}

static int add_token(void *ctx, int tflags, const char *tok, int n, int start, int end) {
  (void)tflags;
  (void)start;
  (void)end;
  struct tokens *t = ctx;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    char **v = ana_realloc(t->v, cap * sizeof *v);
    if (!v) {
      t->failed = true;
      return SQLITE_NOMEM;
    }
    t->v = v;
    t->cap = cap;
  }
  char *copy = ana_malloc((size_t)n + 1);
  if (!copy) {
    t->failed = true;
    return SQLITE_NOMEM;
  }
  memcpy(copy, tok, (size_t)n);
  copy[n] = '\0';
  t->v[t->n++] = copy;
  return SQLITE_OK;
}

/* One free-text search in progress. Its statements are the reader's, kept
 * prepared (ana_local_db_reader_statement): reset, never finalized. */
struct text_search {
  struct ana_local_db *db;
  sqlite3 *r;
  const struct ana_event_query *q;
  ana_event_hit_fn hit;
  void *ctx;
  struct ana_error *err;
  fts5_tokenizer tokenizer;
  Fts5Tokenizer *tok;
  char *base;             /* the FTS5 query: the words' tokens, the name's */
  struct tokens *phrases; /* the query's words of several tokens */
  size_t n_phrases;
  sqlite3_stmt *probe, *rows, *one, *payload;
  int64_t seqs[PROBE_ROWS]; /* a bucket's matches, from probe */
  int64_t day_lo, day_hi;   /* the UTC days of the bucket's events (as the keys count them) */
  int emitted;
  bool done;
};

/* The index's tokenizer, from the reader's FTS5. */
static int open_tokenizer(struct text_search *s) {
  fts5_api *api = NULL;
  sqlite3_stmt *st = ana_local_db_reader_statement(s->db, s->r, "SELECT fts5(?1)");
  if (st) {
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  }
  void *user = NULL;
  if (!api || api->xFindTokenizer(api, "unicode61", &user, &s->tokenizer) != SQLITE_OK ||
      s->tokenizer.xCreate(user, NULL, 0, &s->tok) != SQLITE_OK) {
    s->tok = NULL;
    return ana_error_set(s->err, ANA_STATUS_INTERNAL, "event store: no FTS5 tokenizer");
  }
  return 0;
}

static int tokenize(struct text_search *s, const char *text, int flags, struct tokens *out) {
  char *folded = ana_text_index_fold(text);
  int rc = folded
               ? s->tokenizer.xTokenize(s->tok, out, flags, folded, (int)strlen(folded), add_token)
               : SQLITE_NOMEM;
  ana_free(folded);
  if (rc != SQLITE_OK || out->failed)
    return ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return 0;
}

/* Appends `"tok"` (quotes doubled) to the query being built in *q. */
static bool append_quoted(char **q, size_t *len, size_t *cap, const char *tok) {
  size_t need = *len + strlen(tok) * 2 + 4;
  if (need > *cap) {
    size_t c = need * 2;
    char *p = ana_realloc(*q, c);
    if (!p)
      return false;
    *q = p;
    *cap = c;
  }
  if (*len)
    (*q)[(*len)++] = ' ';
  (*q)[(*len)++] = '"';
  for (const char *t = tok; *t; t++) {
    if (*t == '"')
      (*q)[(*len)++] = '"';
    (*q)[(*len)++] = *t;
  }
  (*q)[(*len)++] = '"';
  (*q)[*len] = '\0';
  return true;
}

/* The FTS5 query of the free text: every token of every word (a word of
 * several tokens, a phrase before, is checked by phrases_match) and the
 * name's token. Returns 1 when a word has tokens, 0 when none has (nothing
 * matches), < 0 on error. */
static int build_query(struct text_search *s) {
  size_t len = 0, cap = 0;
  int words = 0;
  const char *p = s->q->text;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == '\n')
      p++;
    if (!*p)
      break;
    const char *w = p;
    while (*p && *p != ' ' && *p != '\t' && *p != '\n')
      p++;
    char *word = ana_malloc((size_t)(p - w) + 1);
    if (!word)
      goto nomem;
    memcpy(word, w, (size_t)(p - w));
    word[p - w] = '\0';
    struct tokens t = {0};
    int rc = tokenize(s, word, FTS5_TOKENIZE_QUERY, &t);
    ana_free(word);
    if (rc < 0) {
      tokens_free(&t);
      return rc;
    }
    for (size_t i = 0; i < t.n; i++)
      if (!append_quoted(&s->base, &len, &cap, t.v[i])) {
        tokens_free(&t);
        goto nomem;
      }
    words += t.n > 0;
    if (t.n > 1) {
      struct tokens *ph = ana_realloc(s->phrases, (s->n_phrases + 1) * sizeof *ph);
      if (!ph) {
        tokens_free(&t);
        goto nomem;
      }
      s->phrases = ph;
      s->phrases[s->n_phrases++] = t;
    } else {
      tokens_free(&t);
    }
  }
  if (!words)
    return 0;
  char tok[ANA_TEXT_TOKEN_MAX];
  if (s->q->event_name && s->q->event_name[0]) {
    ana_text_index_name_token(s->q->event_name, tok);
    if (!append_quoted(&s->base, &len, &cap, tok))
      goto nomem;
  }
  return 1;
nomem:
  return ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

/* Whether an event's text holds each of the query's words of several
 * tokens as consecutive tokens (what FTS5 checked when it kept positions). */
static int phrases_match(struct text_search *s, const char *text) {
  struct tokens doc = {0};
  if (tokenize(s, text ? text : "", FTS5_TOKENIZE_DOCUMENT, &doc) < 0) {
    tokens_free(&doc);
    return ANA_ERR_NOMEM;
  }
  bool all = true;
  for (size_t k = 0; k < s->n_phrases && all; k++) {
    const struct tokens *ph = &s->phrases[k];
    bool found = false;
    for (size_t i = 0; i + ph->n <= doc.n && !found; i++) {
      size_t j = 0;
      while (j < ph->n && strcmp(doc.v[i + j], ph->v[j]) == 0)
        j++;
      found = j == ph->n;
    }
    all = found;
  }
  tokens_free(&doc);
  return all;
}

/* The matches of `match` (at most PROBE_ROWS, in s->seqs): how many. */
static int probe(struct text_search *s, const char *match) {
  sqlite3_reset(s->probe);
  sqlite3_bind_text(s->probe, 1, match, -1, SQLITE_STATIC);
  sqlite3_bind_int(s->probe, 2, PROBE_ROWS);
  int n = 0, step;
  while (n < PROBE_ROWS && (step = sqlite3_step(s->probe)) == SQLITE_ROW)
    s->seqs[n++] = sqlite3_column_int64(s->probe, 0);
  if (n < PROBE_ROWS && step != SQLITE_DONE)
    n = search_failed(s->r, s->err);
  sqlite3_reset(s->probe);
  return n;
}

/* One of a bucket's events that passed the filters. */
struct candidate {
  int64_t ts, key;
  char *event_id;
  bool packed; /* stored as 16 bytes (event_ids.c) */
};

/* Newest first: timestamp, then event id as SQLite orders the stored ids
 * (text before blobs; each as their bytes), descending. */
static int newest_first(const void *a, const void *b) {
  const struct candidate *x = a, *y = b;
  if (x->ts != y->ts)
    return x->ts > y->ts ? -1 : 1;
  if (x->packed != y->packed)
    return x->packed ? -1 : 1;
  return -strcmp(x->event_id, y->event_id);
}

/* Hands on the events of the n matches in s->seqs that pass the filters,
 * newest first, until the page is full: the filters (and the words of
 * several tokens) on each event, looked up by its key, then the payloads of
 * those handed on. */
static int emit_matches(struct text_search *s, int n) {
  struct candidate *c = ana_calloc((size_t)n, sizeof *c);
  size_t k = 0;
  int rc = c ? 0 : ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; i < n && rc == 0; i++) {
    sqlite3_reset(s->one);
    sqlite3_bind_int64(s->one, 9, s->seqs[i]);
    sqlite3_bind_int64(s->one, 12, s->day_lo);
    sqlite3_bind_int64(s->one, 13, s->day_hi);
    int step = sqlite3_step(s->one);
    if (step == SQLITE_ROW) {
      int m = s->n_phrases ? phrases_match(s, (const char *)sqlite3_column_text(s->one, 4)) : 1;
      if (m < 0) {
        rc = m;
      } else if (m) {
        char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
        c[k] = (struct candidate){.ts = sqlite3_column_int64(s->one, 1),
                                  .key = sqlite3_column_int64(s->one, 0),
                                  .event_id = ana_strdup(ana_event_id_column(s->one, 2, id_buf)),
                                  .packed = sqlite3_column_type(s->one, 2) == SQLITE_BLOB};
        if (!c[k++].event_id)
          rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      }
    } else if (step != SQLITE_DONE) {
      rc = search_failed(s->r, s->err);
    }
  }
  sqlite3_reset(s->one);
  if (rc == 0)
    qsort(c, k, sizeof *c, newest_first);
  for (size_t i = 0; i < k && rc == 0 && !s->done; i++) {
    sqlite3_reset(s->payload);
    sqlite3_bind_int64(s->payload, 1, c[i].key);
    if (sqlite3_step(s->payload) != SQLITE_ROW) {
      rc = search_failed(s->r, s->err);
      break;
    }
    s->emitted++;
    if (s->hit(s->ctx, sqlite3_column_blob(s->payload, 0),
               (size_t)sqlite3_column_bytes(s->payload, 0), c[i].ts, c[i].event_id,
               (uint64_t)c[i].key & ((UINT64_C(1) << ANA_EVENT_SEQ_BITS) - 1)) ||
        (s->q->limit > 0 && s->emitted >= s->q->limit))
      s->done = true;
  }
  if (s->payload)
    sqlite3_reset(s->payload);
  for (size_t i = 0; i < k; i++)
    ana_free(c[i].event_id);
  ana_free(c);
  return rc;
}

/* Hands on the events matching `match` and the filters, newest first,
 * until the page is full. */
static int emit_rows(struct text_search *s, const char *match) {
  const struct ana_event_query *q = s->q;
  sqlite3_stmt *st = s->rows;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 9, match, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 12, s->day_lo);
  sqlite3_bind_int64(st, 13, s->day_hi);
  /* With words to check, rows may be passed over: no LIMIT then. */
  sqlite3_bind_int(st, 10, s->n_phrases || q->limit <= 0 ? -1 : q->limit - s->emitted);
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (s->n_phrases) {
      int m = phrases_match(s, (const char *)sqlite3_column_text(st, 4));
      if (m < 0) {
        sqlite3_reset(st);
        return m;
      }
      if (!m)
        continue;
    }
    s->emitted++;
    char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
    if (s->hit(s->ctx, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
               sqlite3_column_int64(st, 1), ana_event_id_column(st, 2, id_buf),
               (uint64_t)sqlite3_column_int64(st, 3)) ||
        (q->limit > 0 && s->emitted >= q->limit)) {
      s->done = true;
      break;
    }
  }
  int rc = step == SQLITE_ROW || step == SQLITE_DONE ? 0 : search_failed(s->r, s->err);
  sqlite3_reset(st);
  return rc;
}

/* The matches within [lo, hi), bucket `bucket` of `level` (0: the whole
 * index), newest first: all at once when they are few, else bucket by
 * bucket of the next level. */
static int walk(struct text_search *s, int level, int64_t bucket, int64_t lo, int64_t hi) {
  char tok[ANA_TEXT_TOKEN_MAX];
  size_t base_len = strlen(s->base);
  char *match = ana_malloc(base_len + sizeof tok + 4);
  if (!match)
    return ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (level > 0) {
    /* The bucket first: FTS5 then steps through the words' doclists from
     * one of its events to the next (several times faster). */
    ana_text_index_bucket_token(level, bucket, tok);
    size_t n = (size_t)snprintf(match, sizeof tok + 4, "\"%s\" ", tok);
    memcpy(match + n, s->base, base_len + 1);
  } else {
    memcpy(match, s->base, base_len + 1);
  }
  int rc = probe(s, match);
  /* The days (of the keys) of [lo, hi): its matches' rows are there. */
  s->day_lo = ana_event_day(lo);
  s->day_hi = ana_event_day(hi - 1);
  if (rc > 0 && rc < PROBE_ROWS) {
    rc = emit_matches(s, rc);
  } else if (rc > 0 && level == ANA_TEXT_INDEX_LEVELS) {
    rc = emit_rows(s, match); /* one second with more: all of them, sorted */
  } else if (rc > 0) {
    rc = 0;
    int child = level + 1;
    int64_t unit = ana_text_index_bucket_ms(child);
    int64_t last = ana_text_index_bucket(child, lo);
    for (int64_t c = ana_text_index_bucket(child, hi - 1); c >= last && !s->done && rc == 0; c--)
      rc = walk(s, child, c, c * unit > lo ? c * unit : lo,
                (c + 1) * unit < hi ? (c + 1) * unit : hi);
  }
  ana_free(match);
  return rc;
}

/* Two timestamps between which every indexed event lies; false when none
 * is indexed. */
static int indexed_span(struct text_search *s, int64_t *min_ts, int64_t *max_ts) {
  sqlite3_stmt *st =
      ana_local_db_reader_statement(s->db, s->r, "SELECT min_ts, max_ts FROM text.progress");
  int rc = st ? SQLITE_OK : SQLITE_ERROR;
  int found = 0;
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
      sqlite3_column_type(st, 0) != SQLITE_NULL && sqlite3_column_type(st, 1) != SQLITE_NULL) {
    *min_ts = sqlite3_column_int64(st, 0);
    *max_ts = sqlite3_column_int64(st, 1);
    found = 1;
  }
  if (st)
    sqlite3_reset(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return search_failed(s->r, s->err);
  return found;
}

/* Far from INT64's ends: a bucket's bounds never overflow. */
#define TS_BOUND (INT64_C(1) << 60)

static int text_search(struct text_search *s, char *const *paths) {
  const struct ana_event_query *q = s->q;
  if (q->limit == 0)
    return 0; /* LIMIT 0, as the query without free text */
  int rc = open_tokenizer(s);
  if (rc < 0 || (rc = build_query(s)) <= 0)
    return rc;
  char sql[4096], one[4096];
  rows_sql(q, INDEX_MATCHES, s->n_phrases > 0, sql, sizeof sql);
  rows_sql(q, ONE_EVENT, s->n_phrases > 0, one, sizeof one);
  if (!(s->rows = ana_local_db_reader_statement(s->db, s->r, sql)) ||
      !(s->one = ana_local_db_reader_statement(s->db, s->r, one)) ||
      !(s->payload = ana_local_db_reader_statement(
            s->db, s->r, "SELECT " ANA_EVENT_PAYLOAD_SQL " FROM events WHERE key = ?")) ||
      !(s->probe = ana_local_db_reader_statement(
            s->db, s->r, "SELECT rowid FROM text.events_fts WHERE events_fts MATCH ?1 LIMIT ?2")))
    return prepare_error(s->r, s->err);
  bind_filters(s->rows, q, paths);
  bind_filters(s->one, q, paths);
  int64_t lo = q->from_ms, hi = q->to_ms, min_ts = 0, max_ts = 0;
  if (q->after_cursor && q->cursor_ts < hi)
    hi = q->cursor_ts + 1; /* the cursor's own timestamp still has events after it */
  if ((rc = indexed_span(s, &min_ts, &max_ts)) <= 0)
    return rc;
  lo = lo > min_ts ? lo : min_ts;
  hi = hi < max_ts + 1 ? hi : max_ts + 1;
  lo = lo > -TS_BOUND ? lo : -TS_BOUND;
  hi = hi < TS_BOUND ? hi : TS_BOUND;
  if (lo >= hi)
    return 0;
  return walk(s, 0, 0, lo, hi);
}

/* --- the plain search's staged events (not yet moved by the mover) --- */

/* A staged event that passed the filters: its id and payload copied (the
 * decoded batch is gone after the call). */
struct staged_hit {
  struct candidate key; /* ts, event id, packed; key.key holds the seq */
  uint8_t *payload;
  size_t payload_len;
};

/* The staged events of a page: at most `keep` of the newest (the query's
 * limit; every one when it has none), in the search's order once sorted. */
struct staged_page {
  const struct ana_event_query *q;
  sqlite3_stmt *props; /* the property filters on a properties JSON (?1) */
  struct ana_staged_range *range;
  struct staged_hit *v;
  size_t n, cap, keep;
  bool full;          /* v[keep - 1] is the oldest that can be kept */
  bool cursor_packed; /* the cursor's id as stored (event_ids.c) */
  struct ana_error *err;
};

static int hit_newest_first(const void *a, const void *b) {
  return newest_first(&((const struct staged_hit *)a)->key, &((const struct staged_hit *)b)->key);
}

static void staged_hits_free(struct staged_hit *v, size_t from, size_t to) {
  for (size_t i = from; i < to; i++)
    ana_free(v[i].payload); /* the id shares the allocation */
}

/* Sorted, the newest `keep` kept; then no event older than the last needs
 * to be looked at (nor any batch whose events all are). */
static void staged_trim(struct staged_page *p) {
  if (p->n > 1)
    qsort(p->v, p->n, sizeof *p->v, hit_newest_first);
  if (p->n >= p->keep && p->keep > 0) {
    staged_hits_free(p->v, p->keep, p->n);
    p->n = p->keep;
    p->full = true;
    if (p->range)
      p->range->from_ms = p->v[p->n - 1].key.ts;
  }
}

/* Whether the event's properties pass the property filters, as the SQL
 * of rows_sql compares them (SQLite's json_extract and CAST on the same
 * JSON text): 1, 0, or a negative error. */
static int staged_props_match(struct staged_page *p, const char *json) {
  /* The SQL's cheap test first (ana_event_props_has): a value that JSON
   * writes as it is must be in the text. */
  for (size_t i = 0; i < p->q->n_properties; i++)
    if (substring_of_json(p->q->property_values[i]) &&
        !strstr(json ? json : "", p->q->property_values[i]))
      return 0;
  sqlite3_stmt *st = p->props;
  sqlite3_bind_text(st, 1, json ? json : "{}", -1, SQLITE_STATIC);
  int step = sqlite3_step(st);
  int rc = step == SQLITE_ROW ? sqlite3_column_int(st, 0) != 0 : -1;
  sqlite3_reset(st);
  if (rc < 0)
    rc = search_failed(sqlite3_db_handle(st), p->err);
  return rc;
}

static int staged_hit(void *ctx, const struct ana_event_record *e, struct ana_error *err) {
  (void)err;
  struct staged_page *p = ctx;
  const struct ana_event_query *q = p->q;
  if ((q->event_type && q->event_type[0] && strcmp(e->event_type, q->event_type) != 0) ||
      (q->event_name && q->event_name[0] && strcmp(e->event_name, q->event_name) != 0) ||
      (q->session_id && q->session_id[0] && strcmp(e->session_id, q->session_id) != 0))
    return 0;
  if (p->full && e->timestamp_ms < p->v[p->keep - 1].key.ts)
    return 0; /* older than the page's last (the cheap test first) */
  uint8_t packed_id[ANA_EVENT_ID_PACKED];
  struct candidate c = {.ts = e->timestamp_ms,
                        .key = (int64_t)e->seq,
                        .event_id = (char *)e->event_id,
                        .packed = ana_event_id_pack(e->event_id, strlen(e->event_id), packed_id)};
  if (q->after_cursor) {
    struct candidate cur = {
        .ts = q->cursor_ts, .event_id = (char *)q->cursor_event_id, .packed = p->cursor_packed};
    if (newest_first(&c, &cur) <= 0)
      return 0; /* not after the cursor */
  }
  if (p->full && newest_first(&c, &p->v[p->keep - 1].key) >= 0)
    return 0; /* older than the page's last */
  if (q->n_properties) {
    int m = staged_props_match(p, e->properties_json);
    if (m <= 0)
      return m;
  }
  if (p->n == p->cap) {
    /* Twice the page: sorted and trimmed when full (amortized). */
    size_t cap = p->cap ? p->cap * 2 : 64;
    if (p->keep > 0 && cap > 2 * p->keep)
      cap = 2 * p->keep;
    if (cap <= p->n) {
      staged_trim(p);
      return staged_hit(ctx, e, err);
    }
    struct staged_hit *v = ana_realloc(p->v, cap * sizeof *v);
    if (!v)
      return ana_error_set(p->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    p->v = v;
    p->cap = cap;
  }
  size_t id_len = strlen(e->event_id);
  uint8_t *buf = ana_malloc(e->payload_len + id_len + 1);
  if (!buf)
    return ana_error_set(p->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (e->payload_len)
    memcpy(buf, e->payload, e->payload_len);
  memcpy(buf + e->payload_len, e->event_id, id_len + 1);
  c.event_id = (char *)buf + e->payload_len;
  p->v[p->n++] = (struct staged_hit){.key = c, .payload = buf, .payload_len = e->payload_len};
  return 0;
}

/* The statement of the property filters on ?1 (a properties JSON). */
static sqlite3_stmt *props_statement(struct ana_local_db *db, sqlite3 *r,
                                     const struct ana_event_query *q, char *const *paths) {
  char sql[2048];
  size_t len = (size_t)snprintf(sql, sizeof sql, "SELECT 1");
  for (size_t i = 0; i < q->n_properties; i++)
    len += (size_t)snprintf(sql + len, sizeof sql - len,
                            " AND CAST(json_extract(?1, ?%zu) AS TEXT) = ?%zu", 20 + 2 * i,
                            21 + 2 * i);
  sqlite3_stmt *st = ana_local_db_reader_statement(db, r, sql);
  for (size_t i = 0; st && i < q->n_properties; i++) {
    sqlite3_bind_text(st, (int)(20 + 2 * i), paths[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, (int)(21 + 2 * i), q->property_values[i], -1, SQLITE_STATIC);
  }
  return st;
}

/* The staged events that pass q's filters, newest first, at most its
 * limit, in r's read transaction (begun by ana_local_read_begin). */
static int staged_collect(struct ana_local_db *db, sqlite3 *r, const struct ana_event_query *q,
                          char *const *paths, struct staged_page *p, struct ana_error *err) {
  struct ana_staged_range range = {
      .account_id = q->account_id, .from_ms = q->from_ms, .to_ms = q->to_ms};
  uint8_t packed[ANA_EVENT_ID_PACKED];
  *p = (struct staged_page){.q = q, .range = &range, .err = err};
  p->keep = q->limit > 0 ? (size_t)q->limit : 0;
  if (q->after_cursor) {
    p->cursor_packed = ana_event_id_pack(q->cursor_event_id, strlen(q->cursor_event_id), packed);
    if (q->cursor_ts < INT64_MAX && q->cursor_ts + 1 < range.to_ms)
      range.to_ms = q->cursor_ts + 1; /* nothing after the cursor's timestamp */
  }
  if (q->limit == 0)
    return 0; /* LIMIT 0: nothing to merge */
  if (q->n_properties && !(p->props = props_statement(db, r, q, paths)))
    return prepare_error(r, err);
  int rc = ana_local_staged_range(db, r, &range, staged_hit, p, err);
  if (p->props)
    sqlite3_reset(p->props);
  p->range = NULL;
  if (rc < 0)
    return rc;
  staged_trim(p);
  return 0;
}

/* The table's hits of the plain search (time_search, newest first) merged
 * with the staged events of p (newest first too), at most q->limit: each
 * staged event is handed on before the first hit it is newer than. */
struct merged_hits {
  const struct ana_event_query *q;
  struct staged_page *p;
  size_t next; /* p->v[next..) not handed on yet */
  int emitted;
  bool stop;
  ana_event_hit_fn hit;
  void *ctx;
};

static bool merged_emit(struct merged_hits *m, const uint8_t *payload, size_t len, int64_t ts,
                        const char *id, uint64_t seq) {
  m->stop =
      m->hit(m->ctx, payload, len, ts, id, seq) || (m->q->limit > 0 && ++m->emitted >= m->q->limit);
  return m->stop;
}

/* Every staged event newer than `row` (all of them when row is NULL). */
static bool merged_staged(struct merged_hits *m, const struct candidate *row) {
  while (!m->stop && m->next < m->p->n && (!row || newest_first(&m->p->v[m->next].key, row) < 0)) {
    const struct staged_hit *h = &m->p->v[m->next++];
    merged_emit(m, h->payload, h->payload_len, h->key.ts, h->key.event_id, (uint64_t)h->key.key);
  }
  return m->stop;
}

static int merged_hit(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                      uint64_t seq) {
  struct merged_hits *m = ctx;
  uint8_t packed[ANA_EVENT_ID_PACKED];
  struct candidate row = {
      .ts = ts, .event_id = (char *)id, .packed = ana_event_id_pack(id, strlen(id), packed)};
  if (merged_staged(m, &row))
    return 1;
  return merged_emit(m, payload, len, ts, id, seq);
}

/* A number of the local database (?1 bound to text): 1 with *out set, 0
 * when there is none, or a negative error. */
static int number_of(struct ana_local_db *db, sqlite3 *r, const char *sql, const char *text,
                     int64_t *out, struct ana_error *err) {
  sqlite3_stmt *st = ana_local_db_reader_statement(db, r, sql);
  if (!st)
    return prepare_error(r, err);
  sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
  int step = sqlite3_step(st);
  /* The macros' SQL is a subquery: a row of NULL when there is none. */
  int found = step == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL;
  if (found)
    *out = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return step == SQLITE_ROW || step == SQLITE_DONE ? found : search_failed(r, err);
}

/* The search without free text, newest first, over the time index's runs
 * (local_db_sql.h): the account's hours from the range's end, each hour's
 * entries merged, their time and name checked on the entries, then each
 * candidate's row by its key with the other filters (and the cursor); ties
 * at one timestamp in event id order, descending, as the query's ORDER BY
 * ts DESC, event_id DESC. In the caller's read transaction. */
static int time_search(struct ana_local_db *db, sqlite3 *r, const struct ana_event_query *q,
                       char *const *paths, ana_event_hit_fn hit, void *ctx, struct ana_error *err) {
  if (q->limit == 0)
    return 0;
  int64_t account = 0, name = 0, lo = q->from_ms, hi = q->to_ms;
  if (q->after_cursor && q->cursor_ts < hi)
    hi = q->cursor_ts + 1; /* the cursor's own timestamp still has events after it */
  if (lo >= hi)
    return 0;
  int rc = number_of(db, r, "SELECT " ANA_ACCOUNT_NUMBER_SQL(1), q->account_id ? q->account_id : "",
                     &account, err);
  if (rc > 0 && q->event_name && q->event_name[0])
    rc = number_of(db, r, "SELECT " ANA_EVENT_STRING_ID_SQL(1), q->event_name, &name, err);
  if (rc <= 0)
    return rc;
  char sql[4096];
  rows_sql(q, BY_KEY, false, sql, sizeof sql);
  sqlite3_stmt *row = ana_local_db_reader_statement(db, r, sql);
  sqlite3_stmt *payload = row ? ana_local_db_reader_statement(db, r,
                                                              "SELECT " ANA_EVENT_PAYLOAD_SQL
                                                              " FROM events WHERE key = ?")
                              : NULL;
  sqlite3_stmt *runs =
      payload ? ana_local_db_reader_statement(db, r, ANA_TIME_RUNS_SQL("DESC")) : NULL;
  sqlite3_stmt *get = runs ? ana_local_db_reader_statement(db, r, ANA_TIME_RUN_ENTRIES_SQL) : NULL;
  if (!get)
    return prepare_error(r, err);
  bind_filters(row, q, paths);
  sqlite3_bind_int64(runs, 1, account);
  sqlite3_bind_int64(runs, 2, ana_time_run_hour(lo));
  sqlite3_bind_int64(runs, 3, ana_time_run_hour(hi - 1));
  struct ana_time_cursor cur = {0};
  ana_time_cursor_start(&cur, runs, get, account, lo, hi, true);
  struct candidate *ties = NULL;
  size_t ties_cap = 0;
  int emitted = 0;
  bool done = false;
  while (!done && (rc = ana_time_cursor_next(&cur, err)) > 0) {
    rc = 0;
    size_t i = cur.n;
    while (i > 0 && !done && rc == 0) {
      /* The entries of one timestamp: e[j..i). */
      size_t j = i - 1;
      int64_t ts = cur.e[j].ts;
      while (j > 0 && cur.e[j - 1].ts == ts)
        j--;
      size_t end = i;
      i = j;
      if (ts < lo || ts >= hi)
        continue;
      size_t k = 0;
      for (size_t e = j; e < end && rc == 0 && !done; e++) {
        if (name && cur.e[e].name != name)
          continue;
        sqlite3_reset(row);
        sqlite3_bind_int64(row, 9, ana_event_key(ts, cur.e[e].seq));
        int step = sqlite3_step(row);
        if (step == SQLITE_DONE)
          continue; /* deleted, or filtered out */
        if (step != SQLITE_ROW) {
          rc = search_failed(r, err);
          break;
        }
        char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
        const char *id = ana_event_id_column(row, 2, id_buf);
        if (end - j == 1) {
          /* The only event of its timestamp: handed on from this row. */
          emitted++;
          done = hit(ctx, sqlite3_column_blob(row, 0), (size_t)sqlite3_column_bytes(row, 0), ts, id,
                     cur.e[e].seq) ||
                 (q->limit > 0 && emitted >= q->limit);
          continue;
        }
        if (k == ties_cap) {
          size_t cap = ties_cap ? 2 * ties_cap : 16;
          struct candidate *t = ana_realloc(ties, cap * sizeof *t);
          if (!t) {
            rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            break;
          }
          ties = t;
          ties_cap = cap;
        }
        ties[k] = (struct candidate){.ts = ts,
                                     .key = ana_event_key(ts, cur.e[e].seq),
                                     .event_id = ana_strdup(id),
                                     .packed = sqlite3_column_type(row, 2) == SQLITE_BLOB};
        if (!ties[k++].event_id)
          rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      }
      sqlite3_reset(row);
      if (rc == 0 && k > 1)
        qsort(ties, k, sizeof *ties, newest_first);
      for (size_t t = 0; t < k && rc == 0 && !done; t++) {
        sqlite3_reset(payload);
        sqlite3_bind_int64(payload, 1, ties[t].key);
        if (sqlite3_step(payload) != SQLITE_ROW) {
          rc = search_failed(r, err);
          break;
        }
        emitted++;
        done = hit(ctx, sqlite3_column_blob(payload, 0), (size_t)sqlite3_column_bytes(payload, 0),
                   ts, ties[t].event_id,
                   (uint64_t)ties[t].key & ((UINT64_C(1) << ANA_EVENT_SEQ_BITS) - 1)) ||
               (q->limit > 0 && emitted >= q->limit);
      }
      sqlite3_reset(payload);
      for (size_t t = 0; t < k; t++)
        ana_free(ties[t].event_id);
    }
    if (rc < 0)
      break;
  }
  sqlite3_reset(runs);
  sqlite3_reset(get);
  sqlite3_reset(row);
  ana_time_cursor_free(&cur);
  ana_free(ties);
  return rc < 0 ? rc : 0;
}

int ana_sqlite_query_events(struct ana_local_db *db, const char *text_path,
                            const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                            struct ana_error *err) {
  char *paths[MAX_PROPERTY_FILTERS] = {0};
  int rc = 0;
  if (q->n_properties > MAX_PROPERTY_FILTERS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "properties: at most %d property filters", MAX_PROPERTY_FILTERS);
  for (size_t i = 0; i < q->n_properties; i++)
    if (!(paths[i] = property_path(q->property_keys[i]))) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
  bool text = false;
  for (const char *t = q->text; text_path && t && *t && !text; t++)
    text = *t != ' ' && *t != '\t' && *t != '\n';
  /* The free-text index follows the moved events: every event committed
   * so far is in events first (staging.c). The plain search reads the
   * staged events instead (staged_collect). */
  if (text && (rc = ana_local_staging_wait(db, UINT64_MAX, err)) < 0)
    goto out;

  sqlite3 *r = ana_local_db_acquire_reader(db);
  if (text) {
    struct text_search s = {.db = db, .r = r, .q = q, .hit = hit, .ctx = ctx, .err = err};
    /* One snapshot of the events and the index for every bucket. */
    rc = attach_text_index(r, text_path, err);
    if (rc == 0 && run_kept(db, r, "BEGIN") != SQLITE_OK)
      rc = search_failed(r, err);
    if (rc == 0) {
      rc = text_search(&s, paths);
      sqlite3_stmt *used[] = {s.rows, s.one, s.payload, s.probe};
      for (size_t i = 0; i < sizeof used / sizeof *used; i++)
        if (used[i])
          sqlite3_reset(used[i]);
      if (run_kept(db, r, "COMMIT") != SQLITE_OK && !sqlite3_get_autocommit(r))
        sqlite3_exec(r, "ROLLBACK", NULL, NULL, NULL); /* a read: ends it all the same */
    }
    if (s.tok)
      s.tokenizer.xDelete(s.tok);
    ana_free(s.base);
    for (size_t i = 0; i < s.n_phrases; i++)
      tokens_free(&s.phrases[i]);
    ana_free(s.phrases);
    goto release;
  }
  /* One snapshot of the staged events and the table (ana_local_read_begin):
   * each committed event is in one of the two. */
  struct staged_page staged = {0};
  if ((rc = ana_local_read_begin(r, err)) < 0)
    goto release;
  rc = staged_collect(db, r, q, paths, &staged, err);
  if (rc == 0) {
    struct merged_hits m = {.q = q, .p = &staged, .hit = hit, .ctx = ctx};
    rc = time_search(db, r, q, paths, merged_hit, &m, err);
    if (rc == 0)
      merged_staged(&m, NULL);
  }
  if (sqlite3_exec(r, "COMMIT", NULL, NULL, NULL) != SQLITE_OK && !sqlite3_get_autocommit(r))
    sqlite3_exec(r, "ROLLBACK", NULL, NULL, NULL); /* a read: ends it all the same */
  staged_hits_free(staged.v, 0, staged.n);
  ana_free(staged.v);
release:
  ana_local_db_release_reader(db, r);
out:
  for (size_t i = 0; i < MAX_PROPERTY_FILTERS; i++)
    ana_free(paths[i]);
  return rc;
}
