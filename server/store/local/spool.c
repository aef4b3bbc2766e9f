/* The spool: committed events in the local database (table events), in
 * commit-sequence order. The committer stages them in the transaction that
 * claims the events' deduplication keys, and the mover inserts them here
 * (staging.c: readers wait for it or read the staged rows); a remote event
 * store drains it
 * through the shipper contract (ana_store.h); the embedded event store reads
 * it in place. */
#include "local_db_sql.h"

#include "ana_alloc.h"

#include <string.h>

static const char sql_append[] =
    "INSERT INTO events (key, account_id, event_id, session_id, event_type,"
    " event_name, ms, received_delta, body)"
    " VALUES (?1, " ANA_ACCOUNT_NUMBER_SQL(3) ", ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
/* An account's number, for the rows (the claim of its deduplication keys
 * gives it one first, in the same transaction, when there are keys). */
static const char sql_number_account[] =
    "INSERT OR IGNORE INTO dedupe_accounts (account_id) VALUES (?)";
/* An event type's or name's number (event_strings). */
static const char sql_string_add[] = "INSERT OR IGNORE INTO event_strings (name) VALUES (?)";
static const char sql_string_get[] = "SELECT id FROM event_strings WHERE name = ?";

static int spool_error(sqlite3 *w, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: cannot store an event: %s",
                sqlite3_errmsg(w));
  return ANA_ERR_IO;
}

static sqlite3_stmt *prepared(sqlite3 *w, sqlite3_stmt **st, const char *sql) {
  if (!*st && sqlite3_prepare_v3(w, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
    return NULL;
  return *st;
}

static uint32_t string_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

/* The number of an event type or name in event_strings, added in the open
 * transaction when it has none; the numbers found are kept in stmts until
 * ana_spool_statements_forget (a rolled back transaction takes its new
 * numbers with it). */
static int string_number(sqlite3 *w, struct ana_spool_statements *stmts, const char *name,
                         int64_t *out, struct ana_error *err) {
  struct ana_spool_string *slot = &stmts->strings[string_hash(name) % ANA_SPOOL_STRINGS];
  if (slot->name && strcmp(slot->name, name) == 0) {
    *out = slot->id;
    return 0;
  }
  sqlite3_stmt *add = prepared(w, &stmts->string_add, sql_string_add);
  sqlite3_stmt *get = add ? prepared(w, &stmts->string_get, sql_string_get) : NULL;
  if (!get) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  sqlite3_bind_text(add, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(add);
  sqlite3_reset(add);
  if (rc != SQLITE_DONE)
    return spool_error(w, err);
  sqlite3_bind_text(get, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(get);
  if (rc == SQLITE_ROW)
    *out = sqlite3_column_int64(get, 0);
  sqlite3_reset(get);
  if (rc != SQLITE_ROW)
    return spool_error(w, err);
  char *copy = ana_strdup(name);
  if (copy) { /* else not kept: looked up again next time */
    ana_free(slot->name);
    slot->name = copy;
    slot->id = *out;
  }
  return 0;
}

/* Each event goes to its day's range of the table (see local_db_sql.h),
 * under the sequence number the commit gave it (the key's low bits). */
int ana_local_spool_insert(sqlite3 *w, struct ana_spool_statements *stmts,
                           struct ana_event_codec *codec, const struct ana_event_record *records,
                           size_t n, struct ana_error *err) {
  sqlite3_stmt *st = prepared(w, &stmts->append, sql_append);
  if (!st) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  const char *account = NULL; /* the last one numbered */
  for (size_t i = 0; i < n; i++) {
    const struct ana_event_record *r = &records[i];
    if (r->duplicate)
      continue;
    if (!account || strcmp(account, r->account_id) != 0) {
      sqlite3_stmt *num = prepared(w, &stmts->number, sql_number_account);
      if (!num) {
        ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(w));
        return ANA_ERR_INTERNAL;
      }
      sqlite3_bind_text(num, 1, r->account_id, -1, SQLITE_STATIC);
      int nrc = sqlite3_step(num);
      sqlite3_reset(num);
      if (nrc != SQLITE_DONE)
        return spool_error(w, err);
      account = r->account_id;
    }
    int64_t type = 0, name = 0;
    int src = string_number(w, stmts, r->event_type ? r->event_type : "", &type, err);
    if (src == 0)
      src = string_number(w, stmts, r->event_name ? r->event_name : "", &name, err);
    if (src < 0)
      return src;
    uint64_t seq = r->seq;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, ana_event_key(r->timestamp_ms, seq));
    sqlite3_bind_text(st, 3, r->account_id, -1, SQLITE_STATIC);
    ana_event_id_bind(st, 4, r->event_id, -1);
    sqlite3_bind_text(st, 5, r->session_id ? r->session_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, type);
    sqlite3_bind_int64(st, 7, name);
    /* ts is generated from the key's day and this */
    sqlite3_bind_int64(st, 8, r->timestamp_ms - ana_event_day(r->timestamp_ms) * ANA_EVENT_DAY_MS);
    sqlite3_bind_int64(st, 9, r->received_at_ms - r->timestamp_ms);
    const struct ana_event_body_parts parts = {
        .text = r->search_text,
        .properties = r->properties_json ? r->properties_json : "{}",
        .payload = r->payload,
        .payload_len = r->payload_len,
        .event_id = r->event_id,
        .ts_ms = r->timestamp_ms,
        .received_at_ms = r->received_at_ms,
    };
    const void *body = NULL;
    size_t body_len = 0;
    if (ana_event_codec_encode(codec, w, &parts, &body, &body_len) < 0) {
      sqlite3_reset(st);
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return ANA_ERR_NOMEM;
    }
    sqlite3_bind_blob(st, 10, body, (int)body_len, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
      sqlite3_reset(st);
      return spool_error(w, err);
    }
  }
  sqlite3_reset(st);
  return 0;
}

void ana_spool_statements_forget(struct ana_spool_statements *stmts) {
  for (int i = 0; i < ANA_SPOOL_STRINGS; i++) {
    ana_free(stmts->strings[i].name);
    stmts->strings[i].name = NULL;
  }
}

void ana_spool_statements_finalize(struct ana_spool_statements *stmts) {
  sqlite3_finalize(stmts->append);
  sqlite3_finalize(stmts->number);
  sqlite3_finalize(stmts->string_add);
  sqlite3_finalize(stmts->string_get);
  stmts->append = stmts->number = stmts->string_add = stmts->string_get = NULL;
  ana_spool_statements_forget(stmts);
}

static void free_batch(struct ana_spooled_event *ev, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ana_free((void *)ev[i].account_id);
    ana_free((void *)ev[i].event_id);
    ana_free((void *)ev[i].session_id);
    ana_free((void *)ev[i].event_type);
    ana_free((void *)ev[i].event_name);
    ana_free((void *)ev[i].properties_json);
    ana_free((void *)ev[i].search_text);
    ana_free((void *)ev[i].payload);
  }
  ana_free(ev);
}

/* A batch being copied out of the spool's rows for ana_local_spool_take. */
struct take_batch {
  struct ana_spooled_event *ev;
  size_t n;
};

/* A row's text copied to the heap ("" for a NULL column); NULL when out of
 * memory. */
static char *copy_str(const char *s) {
  if (!s)
    s = "";
  size_t len = strlen(s) + 1;
  char *d = ana_malloc(len);
  if (d)
    memcpy(d, s, len);
  return d;
}

static int copy_row(void *ctx, const struct ana_spooled_event *row, struct ana_error *err) {
  struct take_batch *t = ctx;
  struct ana_spooled_event *e = &t->ev[t->n++];
  *e = *row;
  e->account_id = copy_str(row->account_id);
  e->event_id = copy_str(row->event_id);
  e->session_id = copy_str(row->session_id);
  e->event_type = copy_str(row->event_type);
  e->event_name = copy_str(row->event_name);
  e->properties_json = copy_str(row->properties_json);
  e->search_text = copy_str(row->search_text);
  uint8_t *payload = ana_malloc(row->payload_len ? row->payload_len : 1);
  if (payload && row->payload_len)
    memcpy(payload, row->payload, row->payload_len);
  e->payload = payload;
  if (!e->account_id || !e->event_id || !e->session_id || !e->event_type || !e->event_name ||
      !e->properties_json || !e->search_text || !e->payload) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  return 0;
}

int ana_local_spool_take(struct ana_local_db *db, uint64_t after_seq, int max,
                         ana_spool_batch_fn fn, void *ctx, struct ana_error *err) {
  if (max <= 0)
    return 0;
  struct take_batch t = {ana_calloc((size_t)max, sizeof *t.ev), 0};
  if (!t.ev) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  int rc = ana_local_spool_each(db, after_seq, max, copy_row, &t, err);
  if (rc > 0)
    rc = fn(ctx, t.ev, t.n, err);
  free_batch(t.ev, t.n);
  return rc < 0 ? rc : (int)t.n;
}

/* text: whether to decode the search text ("" else: the body is decoded once, not twice). */
/* The staged part of a spool_each: each staged event as a spooled one. */
struct staged_rows {
  ana_spool_row_fn fn;
  void *ctx;
  bool text;
  int n, stop; /* called; fn's non-zero result */
};

static int staged_row(void *ctx, const struct ana_event_record *r, struct ana_error *err) {
  struct staged_rows *s = ctx;
  struct ana_spooled_event e = {
      .seq = r->seq,
      .account_id = r->account_id,
      .event_id = r->event_id,
      .session_id = r->session_id,
      .event_type = r->event_type,
      .event_name = r->event_name,
      .timestamp_ms = r->timestamp_ms,
      .received_at_ms = r->received_at_ms,
      .properties_json = r->properties_json,
      .search_text = s->text ? r->search_text : "",
      .payload = r->payload,
      .payload_len = r->payload_len,
  };
  if ((s->stop = s->fn(s->ctx, &e, err)) != 0)
    return 1;
  s->n++;
  return 0;
}

/* The spool's row of key ?1 (read in sequence order by event_seq.c: the
 * table has no index on seq), with the free text the SQL `text` gives; the
 * account, type and name as their numbers (names_of gives their text: a
 * subquery per row would cost more than the rest of the row's read). */
#define SPOOL_SELECT(text)                                                                         \
  "SELECT seq, account_id, event_id, session_id, event_type, event_name, ts, ts + received_delta," \
  " ana_event_props(body), " text ", " ANA_EVENT_PAYLOAD_SQL " FROM events WHERE key = ?1"

/* The texts of the numbers of accounts (dedupe_accounts) and of event types
 * and names (event_strings) met in one read snapshot, each looked up once.
 * Each column has slots of its own: a row's three texts stay valid until the
 * next row's are looked up. */
#define NAME_SLOTS 64
enum { NAME_ACCOUNT, NAME_TYPE, NAME_NAME, NAME_KINDS };
struct names_of {
  sqlite3 *r;
  sqlite3_stmt *get[2]; /* accounts; event strings (types and names) */
  struct name_slot {
    int64_t id;
    char *text; /* NULL: empty slot */
    bool found;
  } slots[NAME_KINDS][NAME_SLOTS];
};

static const char *const name_sql[2] = {"SELECT account_id FROM dedupe_accounts WHERE id = ?",
                                        "SELECT name FROM event_strings WHERE id = ?"};

/* The text of number id in column kind; NULL when there is none (as the
 * subquery's NULL), or *failed on an error. */
static const char *name_of(struct names_of *n, int kind, int64_t id, bool *failed) {
  struct name_slot *slot = &n->slots[kind][(uint64_t)id % NAME_SLOTS];
  if (slot->text && slot->id == id)
    return slot->found ? slot->text : NULL;
  int q = kind == NAME_ACCOUNT ? 0 : 1;
  if (!n->get[q] && sqlite3_prepare_v2(n->r, name_sql[q], -1, &n->get[q], NULL) != SQLITE_OK) {
    *failed = true;
    return NULL;
  }
  sqlite3_stmt *st = n->get[q];
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  const char *t = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
  char *copy = ana_strdup(t ? t : "");
  sqlite3_reset(st);
  if ((rc != SQLITE_ROW && rc != SQLITE_DONE) || !copy) {
    ana_free(copy);
    *failed = true;
    return NULL;
  }
  ana_free(slot->text);
  slot->id = id;
  slot->text = copy;
  slot->found = rc == SQLITE_ROW;
  return slot->found ? copy : NULL;
}

static void names_free(struct names_of *n) {
  sqlite3_finalize(n->get[0]);
  sqlite3_finalize(n->get[1]);
  for (int k = 0; k < NAME_KINDS; k++)
    for (int i = 0; i < NAME_SLOTS; i++)
      ana_free(n->slots[k][i].text);
}

/* One row of the events table to fn. */
struct spool_rows {
  ana_spool_row_fn fn;
  void *ctx;
  struct ana_error *err;
  struct names_of *names;
  int rc;        /* fn's non-zero result, or an error */
  uint64_t last; /* the last seq handed on */
};

static int spool_row(void *ctx, sqlite3_stmt *st) {
  struct spool_rows *sr = ctx;
  struct names_of *names = sr->names;
  char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
  bool failed = false;
  struct ana_spooled_event e = {
      .seq = (uint64_t)sqlite3_column_int64(st, 0),
      .account_id = name_of(names, NAME_ACCOUNT, sqlite3_column_int64(st, 1), &failed),
      .event_id = ana_event_id_column(st, 2, id_buf),
      .session_id = (const char *)sqlite3_column_text(st, 3),
      .event_type = name_of(names, NAME_TYPE, sqlite3_column_int64(st, 4), &failed),
      .event_name = name_of(names, NAME_NAME, sqlite3_column_int64(st, 5), &failed),
      .timestamp_ms = sqlite3_column_int64(st, 6),
      .received_at_ms = sqlite3_column_int64(st, 7),
      .properties_json = (const char *)sqlite3_column_text(st, 8),
      .search_text = (const char *)sqlite3_column_text(st, 9),
      .payload = sqlite3_column_blob(st, 10),
  };
  e.payload_len = (size_t)sqlite3_column_bytes(st, 10);
  if (failed) {
    ana_error_set(sr->err, ANA_STATUS_UNAVAILABLE, "spool: %s", sqlite3_errmsg(names->r));
    sr->rc = ANA_ERR_IO;
    return 1;
  }
  if ((sr->rc = sr->fn(sr->ctx, &e, sr->err)) != 0)
    return 1;
  sr->last = e.seq;
  return 0;
}

/* One read snapshot of the events table, then of the staged events that
 * follow it (staging.c): in it each committed event is in one of them. */
static int spool_each(struct ana_local_db *db, uint64_t after_seq, int max, ana_spool_row_fn fn,
                      void *ctx, bool text, struct ana_error *err) {
  sqlite3 *r = ana_local_db_acquire_reader(db);
  sqlite3_stmt *st = NULL;
  struct names_of names = {.r = r};
  int n = 0, rc = 0;
  uint64_t last = after_seq;
  if ((rc = ana_local_read_begin(r, err)) < 0)
    goto out;
  if (sqlite3_prepare_v2(r, text ? SPOOL_SELECT("ana_event_text(body)") : SPOOL_SELECT("''"), -1,
                         &st, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "spool: %s", sqlite3_errmsg(r));
    rc = ANA_ERR_INTERNAL;
    goto out;
  }
  struct spool_rows rows = {fn, ctx, err, &names, 0, after_seq};
  n = ana_local_events_by_seq(r, "", st, after_seq, UINT64_MAX, max, spool_row, &rows, err);
  if (rows.rc != 0) {
    rc = rows.rc;
    n = n > 0 ? n - 1 : 0; /* the row that stopped is not counted */
    goto out;
  }
  if (n < 0) {
    rc = n;
    goto out;
  }
  last = rows.last;
  if (n < max) {
    struct staged_rows sr = {fn, ctx, text, 0, 0};
    int got = ana_local_staged_each(r, last, UINT64_MAX, NULL, max - n, staged_row, &sr, err);
    n += sr.n;
    rc = sr.stop ? sr.stop : got < 0 ? got : 0;
  }
out:
  sqlite3_finalize(st);
  names_free(&names);
  if (!sqlite3_get_autocommit(r))
    sqlite3_exec(r, "COMMIT", NULL, NULL, NULL);
  ana_local_db_release_reader(db, r);
  return rc < 0 ? rc : n;
}

int ana_local_spool_each(struct ana_local_db *db, uint64_t after_seq, int max, ana_spool_row_fn fn,
                         void *ctx, struct ana_error *err) {
  return spool_each(db, after_seq, max, fn, ctx, true, err);
}

int ana_local_spool_each_untexted(struct ana_local_db *db, uint64_t after_seq, int max,
                                  ana_spool_row_fn fn, void *ctx, struct ana_error *err) {
  return spool_each(db, after_seq, max, fn, ctx, false, err);
}
