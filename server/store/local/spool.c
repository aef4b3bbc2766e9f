/* The spool: committed events in the local database (table events), in
 * commit-sequence order. The committer stages them in the transaction that
 * claims the events' deduplication keys, and the mover inserts them here
 * (staging.c: readers wait for it or read the staged rows); a remote event
 * store drains it
 * through the shipper contract (ana_store.h); the embedded event store reads
 * it in place. */
#include "byte_codec.h"
#include "local_db_sql.h"

#include "ana_alloc.h"

#include <string.h>

static const char sql_append[] =
    "INSERT INTO events (key, account_id, event_id, session_id, event_type,"
    " event_name, ms, received_delta, body)"
    " VALUES (?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
/* An account's number, for the rows (the claim of its deduplication keys
 * gives it one first, in the same transaction as its staging, when there
 * are keys). */
static const char sql_number_account[] =
    "INSERT OR IGNORE INTO dedupe_accounts (account_id) VALUES (?)";
static const char sql_account_get[] = "SELECT id FROM dedupe_accounts WHERE account_id = ?";
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

/* The two kinds of numbers: accounts (dedupe_accounts) and event types and
 * names (event_strings). */
enum { NUM_ACCOUNT, NUM_STRING };
static const char *const num_add_sql[2] = {sql_number_account, sql_string_add};
static const char *const num_get_sql[2] = {sql_account_get, sql_string_get};

static struct ana_spool_string *num_slot(struct ana_spool_statements *stmts, int kind,
                                         const char *name) {
  struct ana_spool_string *slots = kind == NUM_ACCOUNT ? stmts->accounts : stmts->strings;
  return &slots[string_hash(name) % ANA_SPOOL_STRINGS];
}

static void num_keep(struct ana_spool_string *slot, const char *name, int64_t id) {
  char *copy = ana_strdup(name);
  if (copy) { /* else not kept: looked up again next time */
    ana_free(slot->name);
    slot->name = copy;
    slot->id = id;
  }
}

/* The number of name (kind) already given: kept in stmts, else looked up
 * on w (outside a transaction: in its own read snapshot; numbers are never
 * deleted). 1: found; 0: none yet (ANA_SPOOL_UNKNOWN); < 0: an error. */
static int num_find(sqlite3 *w, struct ana_spool_statements *stmts, int kind, const char *name,
                    int64_t *out, struct ana_error *err) {
  struct ana_spool_string *slot = num_slot(stmts, kind, name);
  if (slot->name && strcmp(slot->name, name) == 0) {
    *out = slot->id;
    return 1;
  }
  sqlite3_stmt *get = prepared(w, &stmts->get[kind], num_get_sql[kind]);
  if (!get) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  sqlite3_bind_text(get, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(get);
  if (rc == SQLITE_ROW)
    *out = sqlite3_column_int64(get, 0);
  sqlite3_reset(get);
  if (rc == SQLITE_DONE) {
    *out = ANA_SPOOL_UNKNOWN;
    return 0;
  }
  if (rc != SQLITE_ROW)
    return spool_error(w, err);
  num_keep(slot, name, *out);
  return 1;
}

/* The number of name (kind), added in the open transaction when it has none;
 * the numbers found are kept in stmts until ana_spool_statements_forget (a
 * rolled back transaction takes its new numbers with it). */
static int num_get(sqlite3 *w, struct ana_spool_statements *stmts, int kind, const char *name,
                   int64_t *out, struct ana_error *err) {
  int rc = num_find(w, stmts, kind, name, out, err);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  sqlite3_stmt *add = prepared(w, &stmts->add[kind], num_add_sql[kind]);
  if (!add) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  sqlite3_bind_text(add, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(add);
  sqlite3_reset(add);
  if (rc != SQLITE_DONE)
    return spool_error(w, err);
  rc = num_find(w, stmts, kind, name, out, err);
  if (rc == 0)
    return spool_error(w, err);
  return rc < 0 ? rc : 0;
}

static const char *type_of(const struct ana_event_record *r) {
  return r->event_type ? r->event_type : "";
}

static const char *name_of_event(const struct ana_event_record *r) {
  return r->event_name ? r->event_name : "";
}

void ana_spool_rows_free(struct ana_spool_rows *rows) {
  ana_free(rows->nums);
  ana_free(rows->body_off);
  ana_free(rows->ids);
  ana_free(rows->bodies);
  memset(rows, 0, sizeof *rows);
}

/* The bodies of records[0..n) into rows (their dictionaries' highest id in
 * rows->dict). */
static int encode_bodies(sqlite3 *w, struct ana_event_codec *codec,
                         const struct ana_event_record *records, size_t n,
                         struct ana_spool_rows *rows, struct ana_error *err) {
  rows->bodies_len = 0;
  rows->dict = 0;
  for (size_t i = 0; i < n; i++) {
    const struct ana_event_record *r = &records[i];
    rows->body_off[i] = rows->bodies_len;
    if (r->duplicate)
      continue;
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
    if (ana_event_codec_encode(codec, w, &parts, &body, &body_len) < 0 ||
        !ana_bytes_grow(&rows->bodies, &rows->bodies_cap, rows->bodies_len + body_len)) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return ANA_ERR_NOMEM;
    }
    int dict = body_len ? ana_event_body_dict(body) : 0;
    if (dict > rows->dict)
      rows->dict = dict;
    memcpy(rows->bodies + rows->bodies_len, body, body_len);
    rows->bodies_len += body_len;
  }
  rows->body_off[n] = rows->bodies_len;
  return 0;
}

int ana_local_spool_prepare(sqlite3 *w, struct ana_spool_statements *stmts,
                            struct ana_event_codec *codec, const struct ana_event_record *records,
                            size_t n, struct ana_spool_rows *rows, struct ana_error *err) {
  /* Kept from move to move (grown when needed): fresh pages cost more than
   * their contents. */
  if (n + 1 > rows->cap) {
    ana_free(rows->nums);
    ana_free(rows->body_off);
    ana_free(rows->ids);
    rows->cap = n + 1;
    rows->nums = ana_malloc(sizeof *rows->nums * 3 * rows->cap);
    rows->body_off = ana_malloc(sizeof *rows->body_off * rows->cap);
    rows->ids = ana_malloc(ANA_SPOOL_ID_BYTES * rows->cap);
  }
  rows->n = n;
  if (!rows->nums || !rows->body_off || !rows->ids) {
    rows->cap = 0;
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  const char *account = NULL, *type = NULL, *name = NULL; /* the last ones numbered */
  int64_t account_n = ANA_SPOOL_UNKNOWN, type_n = ANA_SPOOL_UNKNOWN, name_n = ANA_SPOOL_UNKNOWN;
  for (size_t i = 0; i < n; i++) {
    const struct ana_event_record *r = &records[i];
    int64_t *num = &rows->nums[3 * i];
    if (r->duplicate)
      continue;
    int rc = 0;
    if (!account || strcmp(account, r->account_id) != 0) {
      account = r->account_id;
      rc = num_find(w, stmts, NUM_ACCOUNT, account, &account_n, err);
    }
    if (rc >= 0 && (!type || strcmp(type, type_of(r)) != 0)) {
      type = type_of(r);
      rc = num_find(w, stmts, NUM_STRING, type, &type_n, err);
    }
    if (rc >= 0 && (!name || strcmp(name, name_of_event(r)) != 0)) {
      name = name_of_event(r);
      rc = num_find(w, stmts, NUM_STRING, name, &name_n, err);
    }
    if (rc < 0)
      return rc;
    num[0] = account_n;
    num[1] = type_n;
    num[2] = name_n;
    /* A UUID's stored form (as ana_event_id_bind), here rather than under
     * the write lock; first byte 0: not one (bound as text). */
    uint8_t *id = rows->ids + ANA_SPOOL_ID_BYTES * i;
    id[0] = ana_event_id_pack(r->event_id, strlen(r->event_id), id + 1);
  }
  return encode_bodies(w, codec, records, n, rows, err);
}

int ana_local_spool_reencode(sqlite3 *w, struct ana_event_codec *codec,
                             const struct ana_event_record *records, struct ana_spool_rows *rows,
                             struct ana_error *err) {
  return encode_bodies(w, codec, records, rows->n, rows, err);
}

/* Each event goes to its day's range of the table (see local_db_sql.h),
 * under the sequence number the commit gave it (the key's low bits). */
int ana_local_spool_insert(sqlite3 *w, struct ana_spool_statements *stmts,
                           const struct ana_event_record *records, struct ana_spool_rows *rows,
                           struct ana_error *err) {
  sqlite3_stmt *st = prepared(w, &stmts->append, sql_append);
  if (!st) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  for (size_t i = 0; i < rows->n; i++) {
    const struct ana_event_record *r = &records[i];
    if (r->duplicate)
      continue;
    /* Numbers not given before the transaction: given now. */
    int64_t num[3] = {rows->nums[3 * i], rows->nums[3 * i + 1], rows->nums[3 * i + 2]};
    int src = 0;
    if (num[0] == ANA_SPOOL_UNKNOWN)
      src = num_get(w, stmts, NUM_ACCOUNT, r->account_id, &num[0], err);
    if (src == 0 && num[1] == ANA_SPOOL_UNKNOWN)
      src = num_get(w, stmts, NUM_STRING, type_of(r), &num[1], err);
    if (src == 0 && num[2] == ANA_SPOOL_UNKNOWN)
      src = num_get(w, stmts, NUM_STRING, name_of_event(r), &num[2], err);
    if (src < 0)
      return src;
    /* Kept for the time index's runs, written in the same transaction. */
    memcpy(&rows->nums[3 * i], num, sizeof num);
    uint64_t seq = r->seq;
    sqlite3_bind_int64(st, 1, ana_event_key(r->timestamp_ms, seq));
    sqlite3_bind_int64(st, 3, num[0]);
    const uint8_t *id = rows->ids + ANA_SPOOL_ID_BYTES * i;
    if (id[0])
      sqlite3_bind_blob(st, 4, id + 1, ANA_EVENT_ID_PACKED, SQLITE_STATIC);
    else
      sqlite3_bind_text(st, 4, r->event_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->session_id ? r->session_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, num[1]);
    sqlite3_bind_int64(st, 7, num[2]);
    /* ts is generated from the key's day and this */
    sqlite3_bind_int64(st, 8, r->timestamp_ms - ana_event_day(r->timestamp_ms) * ANA_EVENT_DAY_MS);
    sqlite3_bind_int64(st, 9, r->received_at_ms - r->timestamp_ms);
    sqlite3_bind_blob(st, 10, rows->bodies + rows->body_off[i],
                      (int)(rows->body_off[i + 1] - rows->body_off[i]), SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
      return spool_error(w, err);
  }
  return 0;
}

void ana_spool_statements_forget(struct ana_spool_statements *stmts) {
  for (int i = 0; i < ANA_SPOOL_STRINGS; i++) {
    ana_free(stmts->strings[i].name);
    stmts->strings[i].name = NULL;
    ana_free(stmts->accounts[i].name);
    stmts->accounts[i].name = NULL;
  }
}

void ana_spool_statements_finalize(struct ana_spool_statements *stmts) {
  sqlite3_finalize(stmts->append);
  stmts->append = NULL;
  for (int k = 0; k < 2; k++) {
    sqlite3_finalize(stmts->add[k]);
    sqlite3_finalize(stmts->get[k]);
    stmts->add[k] = stmts->get[k] = NULL;
  }
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
