/* Deduplication by (accountId, eventId): the stage in front of every event
 * store. Keys are claimed in the same transaction as the events (or the
 * spool) they admit, so a crash can never keep one without the other. A key
 * lives as long as its event is retained, at least to the end of the UTC
 * day its event expires on.
 *
 * Here: the claims' front (accounts numbered in dedupe_accounts, in
 * analytics.db, before the commit claims an account's first key; the events
 * rows hold the same numbers), and the SQL functions of the migrations from the layouts
 * before. The keys themselves are sorted runs (dedupe_runs.c): a claim is
 * exact, nothing but the same key is ever taken for a duplicate, whatever
 * its event's timestamp, and a commit writes its keys as one run, not a page
 * per key. The lists (dedupe_expiry, schemas 17-23) and the table of one row
 * per key (schema 24) are read here only for the migrations from them. */
#include "byte_codec.h"
#include "local_db_sql.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define DAY_MS INT64_C(86400000)
/* A list row's id: its day times 2^32 plus its number within the day. */
#define LIST_DAY_SHIFT 32
/* Keys per list row at most (a retention step deletes whole rows). */
#define LIST_MAX_KEYS 1024
/* A list blob: one tag byte, then the entries (LIST_RAW) or a zstd frame
 * of them (LIST_ZSTD). Each entry: varint(account number, or 0 for the
 * previous entry's), varint(bytes its event id shares with the previous
 * entry's of the same account), varint(length of the rest), the rest. */
#define LIST_RAW 0
#define LIST_ZSTD 1
/* Lists written since ids are stored packed (event_ids.c): each entry's id
 * is one kind byte (KIND_TEXT, KIND_UUID) and the id as stored. */
#define LIST_RAW2 2
#define LIST_ZSTD2 3
#define KIND_TEXT 0
#define KIND_UUID 1
#define LIST_LEVEL 1
#define LIST_MAX_CONTENT (64u << 20)

/* The keys a transaction claimed that expire on one day, encoded; the
 * last entry's account and event id in full (for the front coding). */
struct day_list {
  int64_t day;
  uint8_t *buf;
  size_t len, cap;
  int n;
  int64_t prev_account;
  uint8_t *prev; /* the event id (kind byte and id as stored) */
  size_t prev_len, prev_cap;
  uint8_t *scratch;
  size_t scratch_cap;
};

struct ana_dedupe_pending {
  struct ana_dedupe_runs *runs; /* NULL until the database is open */
  /* The last account claimed for and its number, so that a commit of many
   * one-event requests of an account looks it up once; fresh: found while
   * the open transaction had numbered an account (maybe this one: then it
   * is forgotten unless the transaction commits). */
  char *account;
  int64_t number;
  bool fresh, txn_numbered;
  ZSTD_CCtx *cctx;
  uint8_t *out;
  size_t out_cap;
};

static const char sql_account[] = "SELECT id FROM dedupe_accounts WHERE account_id = ?";
static const char sql_new_account[] = "INSERT INTO dedupe_accounts (account_id) VALUES (?)";
static const char sql_list[] =
    "INSERT INTO dedupe_expiry (id, keys) VALUES ((SELECT COALESCE(MAX(id) + 1, ?1)"
    " FROM dedupe_expiry WHERE id >= ?1 AND id < ?1 + 4294967296), ?2)";

struct ana_dedupe_pending *ana_dedupe_pending_new(void) {
  return ana_calloc(1, sizeof(struct ana_dedupe_pending));
}

static void forget_account(struct ana_dedupe_pending *p) {
  ana_free(p->account);
  p->account = NULL;
  p->fresh = false;
}

void ana_dedupe_pending_free(struct ana_dedupe_pending *p) {
  if (!p)
    return;
  forget_account(p);
  ana_free(p->out);
  ZSTD_freeCCtx(p->cctx);
  ana_free(p);
}

struct ana_dedupe_runs *ana_dedupe_pending_runs(struct ana_dedupe_pending *p) {
  return p->runs;
}

void ana_dedupe_pending_set_runs(struct ana_dedupe_pending *p, struct ana_dedupe_runs *d) {
  p->runs = d;
}

void ana_dedupe_pending_discard(struct ana_dedupe_pending *p) {
  if (!p)
    return;
  ana_dedupe_runs_discard(p->runs);
  if (p->fresh)
    forget_account(p);
  p->txn_numbered = false;
}

void ana_dedupe_pending_committed(struct ana_dedupe_pending *p) {
  if (!p)
    return;
  p->fresh = p->txn_numbered = false;
  ana_dedupe_runs_committed(p->runs);
}

static bool list_add(struct day_list *l, int64_t account, const char *id_text) {
  size_t tlen = strlen(id_text);
  uint8_t stored[1 + ANA_EVENT_ID_PACKED];
  const uint8_t *event_id = stored;
  size_t elen = 1 + ANA_EVENT_ID_PACKED;
  stored[0] = KIND_UUID;
  if (!ana_event_id_pack(id_text, tlen, stored + 1)) {
    /* The kind byte, then the text: written in place below. */
    event_id = NULL;
    elen = 1 + tlen;
  }
  if (!ana_bytes_grow(&l->buf, &l->cap, l->len + 40 + elen) ||
      !ana_bytes_grow(&l->prev, &l->prev_cap, elen + 1) ||
      !ana_bytes_grow(&l->scratch, &l->scratch_cap, elen + 1))
    return false;
  if (!event_id) {
    l->scratch[0] = KIND_TEXT;
    memcpy(l->scratch + 1, id_text, tlen);
    event_id = l->scratch;
  }
  size_t shared = 0;
  if (l->n > 0 && account == l->prev_account) {
    while (shared < elen && shared < l->prev_len && l->prev[shared] == event_id[shared])
      shared++;
    l->buf[l->len++] = 0;
  } else {
    l->len += ana_varint_put(l->buf + l->len, (uint64_t)account);
    l->prev_account = account;
  }
  l->len += ana_varint_put(l->buf + l->len, shared);
  l->len += ana_varint_put(l->buf + l->len, elen - shared);
  memcpy(l->buf + l->len, event_id + shared, elen - shared);
  l->len += elen - shared;
  memcpy(l->prev, event_id, elen);
  l->prev_len = elen;
  l->n++;
  return true;
}

/* The list's blob (tag and content) in p->out: compressed when that makes
 * it smaller. NULL when out of memory. */
static const uint8_t *list_blob(struct ana_dedupe_pending *p, struct day_list *l, size_t *len) {
  *len = l->len;
  size_t content = l->len - 1;
  size_t bound = ZSTD_compressBound(content);
  if (content < 64 || !ana_bytes_grow(&p->out, &p->out_cap, 1 + bound))
    return l->buf;
  if (!p->cctx && !(p->cctx = ZSTD_createCCtx()))
    return l->buf;
  size_t z = ZSTD_compressCCtx(p->cctx, p->out + 1, bound, l->buf + 1, content, LIST_LEVEL);
  if (ZSTD_isError(z) || z + 1 >= l->len)
    return l->buf;
  p->out[0] = l->buf[0] == LIST_RAW2 ? LIST_ZSTD2 : LIST_ZSTD;
  *len = z + 1;
  return p->out;
}

/* Calls fn for each key of a list blob; false when the blob is malformed
 * or out of memory, or fn returned false. *scratch (caller frees) holds a
 * decompressed content. */
static bool each_key(const uint8_t *b, size_t n, uint8_t **scratch, size_t *scratch_cap,
                     bool (*fn)(void *ctx, int64_t account, const char *event_id, size_t elen),
                     void *ctx) {
  if (n < 1)
    return false;
  const uint8_t *c = b + 1;
  size_t len = n - 1;
  bool kinds = b[0] == LIST_RAW2 || b[0] == LIST_ZSTD2;
  if (b[0] == LIST_ZSTD || b[0] == LIST_ZSTD2) {
    unsigned long long size = ZSTD_getFrameContentSize(c, len);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ||
        size > LIST_MAX_CONTENT || !ana_bytes_grow(scratch, scratch_cap, (size_t)size + 1))
      return false;
    size_t z = ZSTD_decompress(*scratch, *scratch_cap, c, len);
    if (ZSTD_isError(z) || z != size)
      return false;
    c = *scratch;
    len = z;
  } else if (b[0] != LIST_RAW && b[0] != LIST_RAW2) {
    return false;
  }
  char uuid[ANA_EVENT_ID_UUID_LEN + 1];
  /* An id is rebuilt from its shared prefix (of the previous id) and its
   * rest. */
  uint8_t *id = NULL;
  size_t id_cap = 0, id_len = 0, i = 0;
  int64_t account = 0;
  bool ok = true;
  while (ok && i < len) {
    uint64_t a = 0, shared = 0, rest = 0;
    ok = ana_varint_get(c, len, &i, &a) && (a > 0 || account > 0) && a <= INT64_MAX;
    if (ok && a > 0) {
      account = (int64_t)a;
      id_len = 0;
    }
    ok = ok && ana_varint_get(c, len, &i, &shared) && ana_varint_get(c, len, &i, &rest) &&
         shared <= id_len && rest <= len - i &&
         ana_bytes_grow(&id, &id_cap, (size_t)(shared + rest) + 1);
    if (!ok)
      break;
    memcpy(id + shared, c + i, (size_t)rest);
    i += (size_t)rest;
    id_len = (size_t)(shared + rest);
    if (!kinds) {
      ok = fn(ctx, account, (const char *)id, id_len);
    } else if (id_len == 1 + ANA_EVENT_ID_PACKED && id[0] == KIND_UUID) {
      ana_event_id_unpack(id + 1, uuid);
      ok = fn(ctx, account, uuid, ANA_EVENT_ID_UUID_LEN);
    } else {
      ok = id_len >= 1 && id[0] == KIND_TEXT && fn(ctx, account, (const char *)id + 1, id_len - 1);
    }
  }
  ana_free(id);
  return ok;
}

/* The UTC day of a time (rounded down). */
static int64_t expiry_day(int64_t ms) {
  return ms >= 0 ? ms / DAY_MS : -((-ms + DAY_MS - 1) / DAY_MS);
}

/* The number of an account in dedupe_accounts (analytics.db), added when it
 * has none: in a short transaction of its own on analytics.db's writer, not
 * in the commit's (the journal's), which takes no lock of analytics.db; a
 * number given to an account whose commit then fails is harmless (unused).
 * The last account's number is kept, so lookups are rare. */
static int account_number(struct ana_local_db *db, const char *account, int64_t *out,
                          struct ana_error *err) {
  struct ana_dedupe_pending *p = ana_local_db_dedupe_pending(db);
  if (p->account && strcmp(p->account, account) == 0) {
    *out = p->number;
    return 0;
  }
  sqlite3 *w = ana_local_db_writer(db);
  sqlite3_stmt *get = ana_local_db_store_statement(db, sql_account);
  sqlite3_stmt *add = get ? ana_local_db_store_statement(db, sql_new_account) : NULL;
  if (!get || !add) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  int rc = 0;
  sqlite3_bind_text(get, 1, account, -1, SQLITE_STATIC);
  int step = sqlite3_step(get);
  if (step == SQLITE_ROW) {
    *out = sqlite3_column_int64(get, 0);
  } else {
    sqlite3_bind_text(add, 1, account, -1, SQLITE_STATIC);
    if (step == SQLITE_DONE && sqlite3_step(add) == SQLITE_DONE)
      *out = sqlite3_last_insert_rowid(w);
    else
      rc = ANA_ERR_IO;
  }
  if (rc < 0)
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s", sqlite3_errmsg(w));
  sqlite3_reset(get);
  sqlite3_reset(add);
  if (rc == 0) {
    forget_account(p);
    if ((p->account = ana_malloc(strlen(account) + 1)) != NULL) {
      strcpy(p->account, account);
      p->number = *out;
      p->fresh = p->txn_numbered;
    }
  }
  return rc;
}

int ana_local_dedupe_claim(struct ana_local_db *db, struct ana_event_record *records, size_t n,
                           struct ana_error *err) {
  sqlite3 *w = ana_local_db_journal(db);
  struct ana_dedupe_runs *runs = ana_local_db_dedupe_pending(db)->runs;
  sqlite3_stmt *get = ana_local_db_writer_statement(db, ana_dedupe_chunk_sql);
  if (!get || !runs) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: %s",
                  runs ? sqlite3_errmsg(w) : "the keys are not open");
    return ANA_ERR_INTERNAL;
  }
  int rc = 0;
  const char *account = NULL; /* the last record's, and its number */
  int64_t number = 0;
  for (size_t i = 0; i < n; i++) {
    if (!records[i].account_id || !records[i].event_id) {
      ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: an event without %s",
                    records[i].account_id ? "an eventId" : "an account");
      rc = ANA_ERR_INVALID;
      break;
    }
    if (!account || strcmp(account, records[i].account_id) != 0) {
      if ((rc = account_number(db, records[i].account_id, &number, err)) < 0)
        break;
      account = records[i].account_id;
    }
    int got = ana_dedupe_runs_claim(runs, w, get, number, records[i].event_id,
                                    expiry_day(records[i].expires_at_ms), err);
    if (got < 0) {
      rc = got;
      break;
    }
    records[i].duplicate = got == 1;
  }
  return rc;
}

int ana_local_dedupe_flush(struct ana_local_db *db, struct ana_error *err) {
  return ana_dedupe_runs_flush(ana_local_db_dedupe_pending(db)->runs, ana_local_db_journal(db),
                               err);
}

int ana_local_dedupe_expire(struct ana_local_db *db, int64_t now_ms, int max_rows,
                            struct ana_error *err) {
  (void)err;
  return (int)ana_dedupe_runs_take_expired(ana_local_db_dedupe_pending(db)->runs, now_ms,
                                           max_rows > 0 ? max_rows : 1);
}

void ana_local_dedupe_set_limits(struct ana_local_db *db, size_t filter_bytes) {
  struct ana_dedupe_runs *d = ana_local_db_dedupe_pending(db)->runs;
  if (d)
    ana_dedupe_runs_set_filter_limit(d, filter_bytes);
}

void ana_local_dedupe_hold(struct ana_local_db *db, bool hold) {
  struct ana_dedupe_runs *d = ana_local_db_dedupe_pending(db)->runs;
  if (d)
    ana_dedupe_runs_hold(d, hold);
}

int ana_local_dedupe_maintain(struct ana_local_db *db, int64_t now_ms, int max_steps,
                              struct ana_error *err) {
  struct ana_dedupe_runs *d = ana_local_db_dedupe_pending(db)->runs;
  return d ? ana_dedupe_runs_maintain(d, now_ms, max_steps, err) : 0;
}

void ana_local_dedupe_stats(struct ana_local_db *db, struct ana_dedupe_runs_stats *out) {
  struct ana_dedupe_runs *d = ana_local_db_dedupe_pending(db)->runs;
  if (d)
    ana_dedupe_runs_stats(d, out);
  else
    memset(out, 0, sizeof *out);
}

/* --- ana_dedupe_build_lists(): for the migration to this layout --- */

/* Appends a list to dedupe_expiry; false on an error (set on ctx). */
static bool insert_list(sqlite3_context *ctx, sqlite3_stmt *ins, struct ana_dedupe_pending *p,
                        struct day_list *l) {
  size_t len = 0;
  const uint8_t *blob = list_blob(p, l, &len);
  sqlite3_reset(ins);
  sqlite3_bind_int64(ins, 1, l->day * (INT64_C(1) << LIST_DAY_SHIFT));
  sqlite3_bind_blob(ins, 2, blob, (int)len, SQLITE_STATIC);
  if (sqlite3_step(ins) != SQLITE_DONE) {
    sqlite3_result_error(ctx, sqlite3_errmsg(sqlite3_db_handle(ins)), -1);
    return false;
  }
  l->len = 1; /* the tag only */
  l->n = 0;
  return true;
}

/* Lists the keys of the previous layout's dedupe_keys (account_id,
 * event_id, expires_at) in dedupe_expiry, by their accounts' numbers in
 * dedupe_accounts: a scan of its index by day (no sort, nothing held in
 * memory but one list), at most 1,000 keys a list. Returns how many. */
static void fn_build_lists(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3 *conn = sqlite3_context_db_handle(ctx);
  sqlite3_stmt *scan = NULL, *ins = NULL;
  struct ana_dedupe_pending p = {0};
  struct day_list l = {0};
  int64_t listed = 0;
  if (sqlite3_prepare_v2(
          conn,
          "SELECT k.expires_at / 86400000 AS day, a.id, k.event_id FROM dedupe_keys k"
          " JOIN dedupe_accounts a USING (account_id) ORDER BY day",
          -1, &scan, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn, sql_list, -1, &ins, NULL) != SQLITE_OK) {
    sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
    goto out;
  }
  if (!ana_bytes_grow(&l.buf, &l.cap, 256)) {
    sqlite3_result_error_nomem(ctx);
    goto out;
  }
  l.buf[l.len++] = LIST_RAW2;
  int step;
  while ((step = sqlite3_step(scan)) == SQLITE_ROW) {
    int64_t day = sqlite3_column_int64(scan, 0);
    if (l.n > 0 && (day != l.day || l.n >= 1000) && !insert_list(ctx, ins, &p, &l))
      goto out;
    l.day = day;
    const char *id = (const char *)sqlite3_column_text(scan, 2);
    if (!list_add(&l, sqlite3_column_int64(scan, 1), id ? id : "")) {
      sqlite3_result_error_nomem(ctx);
      goto out;
    }
    listed++;
  }
  if (step != SQLITE_DONE) {
    sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
    goto out;
  }
  if (l.n > 0 && !insert_list(ctx, ins, &p, &l))
    goto out;
  sqlite3_result_int64(ctx, listed);
out:
  sqlite3_finalize(scan);
  sqlite3_finalize(ins);
  ana_free(l.buf);
  ana_free(l.prev);
  ana_free(l.scratch);
  ana_free(p.out);
  ZSTD_freeCCtx(p.cctx);
}

/* --- ana_dedupe_days_from_lists(): for the migration from the lists --- */

struct days_ctx {
  sqlite3_stmt *set;
  int64_t day;
  bool failed;
};

static bool set_key_day(void *arg, int64_t account, const char *event_id, size_t elen) {
  struct days_ctx *x = arg;
  sqlite3_reset(x->set);
  sqlite3_bind_int64(x->set, 1, x->day);
  sqlite3_bind_int64(x->set, 2, account);
  ana_event_id_bind(x->set, 3, event_id, (int)elen);
  if (sqlite3_step(x->set) != SQLITE_DONE) {
    x->failed = true;
    return false;
  }
  return true;
}

/* Gives each key of dedupe_keys_by_day (account, event_id, expires) the day
 * of the dedupe_expiry list that holds it, list by list in their order (a
 * key in no readable list keeps the day it has). Returns how many lists. */
static void fn_days_from_lists(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3 *conn = sqlite3_context_db_handle(ctx);
  sqlite3_stmt *lists = NULL;
  struct days_ctx x = {0};
  uint8_t *scratch = NULL;
  size_t scratch_cap = 0;
  int64_t n = 0;
  if (sqlite3_prepare_v2(conn, "SELECT id, keys FROM dedupe_expiry ORDER BY id", -1, &lists,
                         NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "UPDATE dedupe_keys_by_day SET expires = ?1"
                         " WHERE account = ?2 AND event_id = ?3",
                         -1, &x.set, NULL) != SQLITE_OK) {
    sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
    goto out;
  }
  int step;
  while ((step = sqlite3_step(lists)) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(lists, 0);
    /* id = day * 2^32 + n, rounded down for a day before 1970 too */
    x.day = id >= 0 ? id >> LIST_DAY_SHIFT
                    : -((-id + (INT64_C(1) << LIST_DAY_SHIFT) - 1) >> LIST_DAY_SHIFT);
    const uint8_t *b = sqlite3_column_blob(lists, 1);
    size_t len = (size_t)sqlite3_column_bytes(lists, 1);
    if (!each_key(b, len, &scratch, &scratch_cap, set_key_day, &x) && x.failed) {
      sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
      goto out;
    }
    n++;
  }
  if (step != SQLITE_DONE) {
    sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
    goto out;
  }
  sqlite3_result_int64(ctx, n);
out:
  sqlite3_finalize(lists);
  sqlite3_finalize(x.set);
  ana_free(scratch);
}

int ana_dedupe_register(sqlite3 *conn) {
  return ana_dedupe_runs_register(conn) == 0 &&
                 sqlite3_create_function_v2(conn, "ana_dedupe_build_lists", 0, SQLITE_UTF8, NULL,
                                            fn_build_lists, NULL, NULL, NULL) == SQLITE_OK &&
                 sqlite3_create_function_v2(conn, "ana_dedupe_days_from_lists", 0, SQLITE_UTF8,
                                            NULL, fn_days_from_lists, NULL, NULL, NULL) == SQLITE_OK
             ? 0
             : ANA_ERR_INTERNAL;
}
