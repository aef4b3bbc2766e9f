/* Deduplication by (accountId, eventId): the stage in front of every event
 * store. Keys live in the local database and are claimed in the same
 * transaction as the events (or the spool) they admit, so a crash can never
 * keep one without the other. A key lives as long as its event is retained,
 * to the end of the UTC day its event expires on.
 *
 * Layout: the table dedupe_keys holds the keys themselves, (account, event
 * id) as the primary key of a WITHOUT ROWID table and nothing else, the
 * account as a number (dedupe_accounts maps account ids to numbers, in the
 * transaction that claims an account's first key; the events rows hold the
 * same numbers), the event id as event_ids.c stores it (a canonical UUID in
 * 16 bytes), and the UTC day the key expires on (expires). A claim is one
 * seek and exact: nothing but the same key is ever taken for a duplicate,
 * whatever its event's timestamp; keys that clients number or date (UUIDv7,
 * counters) append at the end of the table, as before. Expiry needs no
 * second B-tree over every key (an index by day took as many bytes as the
 * keys, and lists of the keys by day, the layout before this one, as many:
 * random ids do not compress): retention sweeps the table in key order, a
 * slice of DEDUPE_SWEEP_ROWS keys a step from where the last step ended,
 * and deletes the keys of the days that are over; a pass that reached the
 * end starts again once the day changed. A pass over 10^7 keys takes 200
 * steps (one per RETENTION_SWEEP_INTERVAL, or at once after a step that
 * deleted its maximum), each reading about 1.5 MB of pages; an expired key
 * is thus deleted within a pass, and until then still answered DUPLICATE,
 * as it was until the sweep reached its list. A 128-bit hash in place of
 * the key (no false duplicate either, in practice: two of 10^12 keys
 * collide with probability about 10^24 / 2^129, 1.5e-15) would make every
 * claim land at a random place of the table, a page written per key per
 * commit once the table outgrows the cache, and is no smaller for event ids
 * of 16 characters or fewer. The lists (dedupe_expiry) are read and written
 * here only for the migrations from and to them. */
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

/* Keys a sweep step reads at most. */
#define DEDUPE_SWEEP_ROWS 50000

struct ana_dedupe_pending {
  /* The sweep (committer thread): the last key a step read (none: the
   * next step starts at the table's beginning), the day its pass began,
   * whether that pass reached the end. */
  bool sweep_at_key, pass_done;
  int64_t pass_day, sweep_account;
  uint8_t *sweep_id;
  size_t sweep_id_len, sweep_id_cap;
  bool sweep_id_blob;
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

static const char sql_claim[] = "INSERT INTO dedupe_keys (account, event_id, expires)"
                                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING";
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
  ana_free(p->sweep_id);
  ana_free(p->out);
  ZSTD_freeCCtx(p->cctx);
  ana_free(p);
}

void ana_dedupe_pending_discard(struct ana_dedupe_pending *p) {
  if (!p)
    return;
  if (p->fresh)
    forget_account(p);
  p->txn_numbered = false;
}

void ana_dedupe_pending_committed(struct ana_dedupe_pending *p) {
  if (p)
    p->fresh = p->txn_numbered = false;
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

/* The number of an account in dedupe_accounts, added when it has none
 * (in the open transaction). */
static int account_number(struct ana_local_db *db, const char *account, int64_t *out,
                          struct ana_error *err) {
  struct ana_dedupe_pending *p = ana_local_db_dedupe_pending(db);
  if (p->account && strcmp(p->account, account) == 0) {
    *out = p->number;
    return 0;
  }
  sqlite3 *w = ana_local_db_writer(db);
  sqlite3_stmt *get = ana_local_db_writer_statement(db, sql_account);
  sqlite3_stmt *add = get ? ana_local_db_writer_statement(db, sql_new_account) : NULL;
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
    p->txn_numbered = true;
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
  sqlite3 *w = ana_local_db_writer(db);
  sqlite3_stmt *st = ana_local_db_writer_statement(db, sql_claim);
  if (!st) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: %s", sqlite3_errmsg(w));
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
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, number);
    ana_event_id_bind(st, 2, records[i].event_id, -1);
    sqlite3_bind_int64(st, 3, expiry_day(records[i].expires_at_ms));
    if (sqlite3_step(st) != SQLITE_DONE) {
      ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s", sqlite3_errmsg(w));
      rc = ANA_ERR_IO;
      break;
    }
    records[i].duplicate = sqlite3_changes(w) == 0;
  }
  sqlite3_reset(st);
  return rc;
}

int ana_local_dedupe_flush(struct ana_local_db *db, struct ana_error *err) {
  (void)db;
  (void)err;
  return 0; /* the keys hold their expiry day: nothing else to write */
}

/* Remembers the key st's row holds (columns 0, 1) as where the sweep is. */
static bool sweep_remember(struct ana_dedupe_pending *p, sqlite3_stmt *st) {
  size_t n = (size_t)sqlite3_column_bytes(st, 1);
  const void *id = sqlite3_column_blob(st, 1);
  if (!ana_bytes_grow(&p->sweep_id, &p->sweep_id_cap, n + 1))
    return false;
  if (n)
    memcpy(p->sweep_id, id, n);
  p->sweep_id_len = n;
  p->sweep_id_blob = sqlite3_column_type(st, 1) == SQLITE_BLOB;
  p->sweep_account = sqlite3_column_int64(st, 0);
  p->sweep_at_key = true;
  return true;
}

int ana_local_dedupe_expire(struct ana_local_db *db, int64_t now_ms, int max_rows,
                            struct ana_error *err) {
  sqlite3 *w = ana_local_db_writer(db);
  struct ana_dedupe_pending *p = ana_local_db_dedupe_pending(db);
  sqlite3_stmt *scan = NULL, *del = NULL;
  int64_t today = expiry_day(now_ms);
  if (p->pass_done && p->pass_day == today)
    return 0; /* this day's pass is over: nothing expires before tomorrow */
  if (p->pass_done) {
    p->pass_done = false;
    p->pass_day = today;
    p->sweep_at_key = false;
  }
  /* The next slice of keys in the table's order, the expired ones to
   * delete collected first (the scan does not read what it deletes). */
  if (sqlite3_prepare_v2(w,
                         p->sweep_at_key ? "SELECT account, event_id, expires FROM dedupe_keys"
                                           " WHERE (account, event_id) > (?1, ?2)"
                                           " ORDER BY account, event_id LIMIT ?3"
                                         : "SELECT account, event_id, expires FROM dedupe_keys"
                                           " ORDER BY account, event_id LIMIT ?3",
                         -1, &scan, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(w, "DELETE FROM dedupe_keys WHERE account = ?1 AND event_id = ?2", -1,
                         &del, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: %s", sqlite3_errmsg(w));
    sqlite3_finalize(scan);
    sqlite3_finalize(del);
    return ANA_ERR_INTERNAL;
  }
  if (p->sweep_at_key) {
    sqlite3_bind_int64(scan, 1, p->sweep_account);
    if (p->sweep_id_blob)
      sqlite3_bind_blob(scan, 2, p->sweep_id, (int)p->sweep_id_len, SQLITE_TRANSIENT);
    else
      sqlite3_bind_text(scan, 2, (const char *)p->sweep_id, (int)p->sweep_id_len, SQLITE_TRANSIENT);
  }
  sqlite3_bind_int(scan, 3, DEDUPE_SWEEP_ROWS);
  /* The expired keys: accounts and id kinds, ids one after another. */
  struct gone_key {
    int64_t account;
    size_t at, len;
    bool blob;
  } *gone = NULL;
  uint8_t *ids = NULL;
  size_t n_gone = 0, cap = 0, ids_len = 0, ids_cap = 0;
  size_t max = (size_t)(max_rows > 0 ? max_rows : 1);
  int step = SQLITE_DONE, rc = 0;
  while (n_gone < max && (step = sqlite3_step(scan)) == SQLITE_ROW) {
    if (!sweep_remember(p, scan)) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    if (sqlite3_column_int64(scan, 2) >= today)
      continue; /* live */
    if (n_gone == cap) {
      size_t c = cap ? cap * 2 : 64;
      struct gone_key *g = ana_realloc(gone, c * sizeof *g);
      if (!g) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      gone = g;
      cap = c;
    }
    if (!ana_bytes_grow(&ids, &ids_cap, ids_len + p->sweep_id_len + 1)) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    memcpy(ids + ids_len, p->sweep_id, p->sweep_id_len);
    gone[n_gone++] =
        (struct gone_key){p->sweep_account, ids_len, p->sweep_id_len, p->sweep_id_blob};
    ids_len += p->sweep_id_len;
  }
  if (rc == 0 && n_gone < max) {
    if (step == SQLITE_DONE)
      p->pass_done = true; /* the end of the table: the next pass from its start */
    else if (step != SQLITE_ROW)
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s", sqlite3_errmsg(w));
  }
  sqlite3_finalize(scan);
  int deleted = 0;
  for (size_t i = 0; rc == 0 && i < n_gone; i++) {
    sqlite3_reset(del);
    sqlite3_bind_int64(del, 1, gone[i].account);
    if (gone[i].blob)
      sqlite3_bind_blob(del, 2, ids + gone[i].at, (int)gone[i].len, SQLITE_STATIC);
    else
      sqlite3_bind_text(del, 2, (const char *)ids + gone[i].at, (int)gone[i].len, SQLITE_STATIC);
    if (sqlite3_step(del) != SQLITE_DONE)
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s", sqlite3_errmsg(w));
    else
      deleted += sqlite3_changes(w);
  }
  ana_free(ids);
  sqlite3_finalize(del);
  ana_free(gone);
  if (rc < 0) {
    p->sweep_at_key = false; /* the transaction is rolled back: from the start again */
    return rc;
  }
  return deleted;
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
  return sqlite3_create_function_v2(conn, "ana_dedupe_build_lists", 0, SQLITE_UTF8, NULL,
                                    fn_build_lists, NULL, NULL, NULL) == SQLITE_OK &&
                 sqlite3_create_function_v2(conn, "ana_dedupe_days_from_lists", 0, SQLITE_UTF8,
                                            NULL, fn_days_from_lists, NULL, NULL, NULL) == SQLITE_OK
             ? 0
             : ANA_ERR_INTERNAL;
}
