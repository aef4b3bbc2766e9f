/* Deduplication keys as log-structured sorted runs: a commit writes the keys
 * it claimed as one new run (a few rows written in sequence, not one B-tree
 * page per key), a background thread merges small runs into larger ones in
 * short transactions, and a claim probes each run's in-memory Bloom filter
 * before it reads the one chunk of the run that could hold the key.
 *
 * A run is a row of dedupe_runs (id, level, state, keys, chunks, days,
 * fences, filter) and its chunks, rows of dedupe_chunks whose id is the
 * run's id times 2^24 plus the chunk's number. A run's keys are sorted by a
 * 64-bit hash (seeded per store, dedupe_meta) of the key, then by the key;
 * a chunk holds at most CHUNK_BYTES of them (one chunk a page): varint
 * (base day, zig-zag), then per key varint(account * 2 + is_text), the
 * text's length (text ids only), the id (16 bytes for a canonical UUID,
 * event_ids.c) and varint(expiry day - base day). fences holds each chunk's
 * first hash (8 bytes a chunk), filter a blocked Bloom filter of the keys'
 * hashes (64-byte blocks, k bits of one block per key), both as 64-bit
 * words in the host's byte order, days the number of keys per expiry day. The hash only filters: a
 * key is a duplicate only when the same (account, event id) is found in a chunk.
 *
 * state: 0 live, 1 being built by a merge (its chunks are written over
 * several transactions; the row turns live in the transaction that marks
 * the merge's inputs dropped), 2 dropped (its chunks are deleted a slice a
 * transaction, then the row). A crash keeps either the inputs or the
 * output live, never neither; a run being built at start is dropped.
 *
 * The tables are in the journal file (ana_local_db.h), with the staged
 * events: the commit's claims and its run's rows take the journal's write
 * lock only, and so do the merges.
 *
 * Merges (thread ana-dedupe, a connection of its own to the journal): FANOUT runs of one
 * level (level = log_FANOUT(keys / BASE_KEYS)) into one, dropping the keys
 * whose day is over (the day retention last gave: ana_local_dedupe_expire);
 * a run all of whose keys expired is dropped whole, one of which half the
 * keys expired is rewritten alone. One merge per level may be under way;
 * levels 0 and 1 go first (a claim probes every run, so small runs must not
 * pile up behind a large merge). Each transaction writes at most
 * STEP_CHUNKS chunks (and no more than the WAL room the mover gets), so
 * commits are never held for long, and the thread polls for the write lock
 * every 50-300 us (SQLite's growing sleeps missed every gap between the
 * committer's transactions: the runs piled up). */
#include "byte_codec.h"
#include "local_db_sql.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_prom.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAY_MS INT64_C(86400000)
#define CHUNK_SHIFT 24
#define CHUNK_BYTES 4040
/* Bytes of a filter per row of dedupe_filters (63 blocks: one a page). */
#define FILTER_PIECE 4032
#define FANOUT 8
#define MAX_LEVELS 24
#define BASE_KEYS 512
#define STEP_CHUNKS 256
#define MAX_BITS_PER_KEY 10
#define IDLE_MS 1000
#define RETRY_MS 200
/* Checkpoints the merge thread asks for once idle after writing, IDLE_MS
 * apart (as the mover does: its own hints may have ended before a merge's
 * last transaction, which would leave the WAL unreset while the store idles). */
#define IDLE_HINTS 5
#define STATE_LIVE 0
#define STATE_BUILDING 1
#define STATE_DROPPED 2

/* A key: its hash, account number, day, id (16 bytes or text). */
struct dkey {
  uint64_t h;
  int64_t account;
  int64_t day;
  const uint8_t *id;
  uint32_t len;
  uint8_t text;
};

struct day_count {
  int64_t day, n;
};

/* A live run in memory. */
struct run {
  int64_t id;
  int level;
  int64_t keys;
  uint32_t chunks;
  uint64_t *fences; /* chunks entries */
  uint64_t *filter; /* blocks * 8 words; NULL: every lookup reads the run */
  uint32_t blocks;
  int k;
  struct day_count *days;
  size_t n_days;
  bool merging;
};

/* A run whose chunks are being deleted. */
struct dropped {
  int64_t id, next; /* the next chunk id to delete from */
};

/* A key of the open transaction (pending): the id in the arena. */
struct pkey {
  uint64_t h;
  int64_t account, day;
  size_t off;
  uint32_t len;
  uint8_t text;
};

struct merge;

struct ana_dedupe_runs {
  struct ana_local_db *db;
  struct merge *merges; /* under way, per level, and a compaction (under step_mu) */
  int64_t today;        /* the UTC day retention last gave (INT64_MIN: none yet) */
  uint64_t seed;
  pthread_mutex_t mu; /* runs, dropped, next_id, filter_bytes, hold, stop */
  pthread_cond_t cond;
  struct run **runs; /* oldest first */
  size_t n_runs, cap_runs;
  struct dropped *dropped;
  size_t n_dropped, cap_dropped;
  int64_t next_id;
  size_t filter_bytes, filter_limit;
  int64_t live_keys;
  bool hold, stop, started, wake, metrics_registered;
  uint64_t merges_done, runs_dropped;
  _Atomic int64_t keys_expired; /* dropped by expiry since the last ask */
  pthread_t thread;
  sqlite3 *conn;           /* the merge thread's */
  pthread_mutex_t step_mu; /* one maintenance step at a time */
  /* The open transaction's keys (committer thread). */
  struct pkey *pk;
  size_t n_pk, cap_pk;
  uint8_t *arena;
  size_t arena_len, arena_cap;
  uint32_t *table; /* open addressing: index + 1, 0 empty */
  size_t table_cap;
  struct run *new_run; /* written by the flush, live once committed */
};

/* --- hashing and the filter --- */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  x *= UINT64_C(0xc4ceb9fe1a85ec53);
  x ^= x >> 33;
  return x;
}

static uint64_t key_hash(uint64_t seed, int64_t account, bool text, const uint8_t *id, size_t len) {
  uint64_t h = mix64(seed ^ ((uint64_t)account * 2 + text) ^ ((uint64_t)len << 48));
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, id + i, 8);
    h = mix64(h ^ w) * UINT64_C(0x9e3779b97f4a7c15);
  }
  if (i < len) {
    uint64_t w = 0;
    memcpy(&w, id + i, len - i);
    h = mix64(h ^ w) * UINT64_C(0x9e3779b97f4a7c15);
  }
  return mix64(h);
}

static uint32_t filter_block(uint64_t h, uint32_t blocks) {
  return (uint32_t)(((h >> 32) * (uint64_t)blocks) >> 32);
}

static void filter_add(uint64_t *f, uint32_t blocks, int k, uint64_t h) {
  uint64_t *b = f + (size_t)filter_block(h, blocks) * 8;
  uint64_t g = mix64(h);
  for (int i = 0; i < k; i++) {
    unsigned bit = (unsigned)(g >> (i * 9)) & 511;
    b[bit >> 6] |= UINT64_C(1) << (bit & 63);
  }
}

static bool filter_maybe(const struct run *r, uint64_t h) {
  if (!r->filter)
    return true;
  const uint64_t *b = r->filter + (size_t)filter_block(h, r->blocks) * 8;
  uint64_t g = mix64(h);
  for (int i = 0; i < r->k; i++) {
    unsigned bit = (unsigned)(g >> (i * 9)) & 511;
    if (!(b[bit >> 6] & (UINT64_C(1) << (bit & 63))))
      return false;
  }
  return true;
}

/* Sizes a filter for n keys within what the limit leaves (the filters of
 * runs about to be replaced counted as free); 0 blocks: none. Under mu. */
static void filter_size(struct ana_dedupe_runs *d, int64_t n, size_t freed, int64_t freed_keys,
                        uint32_t *blocks, int *k) {
  *blocks = 0;
  *k = 0;
  if (n <= 0 || d->filter_limit == 0)
    return;
  size_t used = d->filter_bytes > freed ? d->filter_bytes - freed : 0;
  size_t room = d->filter_limit > used ? d->filter_limit - used : 0;
  int64_t total = d->live_keys - freed_keys + n;
  int64_t bpk = MAX_BITS_PER_KEY;
  int64_t even = (int64_t)((double)d->filter_limit * 8 / (double)(total > 0 ? total : 1));
  if (even < bpk)
    bpk = even;
  int64_t fit = (int64_t)((double)room * 8 / (double)n);
  if (fit < bpk)
    bpk = fit;
  if (bpk < 2)
    return;
  uint64_t b = ((uint64_t)n * (uint64_t)bpk + 511) / 512;
  if (b == 0 || b > UINT32_MAX || b * 64 > room)
    return;
  *blocks = (uint32_t)b;
  *k = (int)(bpk * 69 / 100);
  if (*k < 1)
    *k = 1;
  if (*k > 7)
    *k = 7;
}

/* --- keys and chunks --- */

static int key_cmp(const struct dkey *a, const struct dkey *b) {
  if (a->h != b->h)
    return a->h < b->h ? -1 : 1;
  if (a->account != b->account)
    return a->account < b->account ? -1 : 1;
  if (a->text != b->text)
    return a->text < b->text ? -1 : 1;
  if (a->len != b->len)
    return a->len < b->len ? -1 : 1;
  return memcmp(a->id, b->id, a->len);
}

static uint64_t zigzag(int64_t v) {
  return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v) {
  return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Reads the next key of a chunk at *i; false at its end or when malformed
 * (*bad set). hash: compute the key's hash too. */
static bool chunk_next(const uint8_t *c, size_t n, size_t *i, int64_t base, struct dkey *k,
                       bool *bad) {
  if (*i >= n)
    return false;
  uint64_t a = 0, len = ANA_EVENT_ID_PACKED, day = 0;
  if (!ana_varint_get(c, n, i, &a) || ((a & 1) && !ana_varint_get(c, n, i, &len)) || len > n - *i) {
    *bad = true;
    return false;
  }
  k->account = (int64_t)(a >> 1);
  k->text = (uint8_t)(a & 1);
  k->len = (uint32_t)len;
  k->id = c + *i;
  *i += (size_t)len;
  if (!ana_varint_get(c, n, i, &day)) {
    *bad = true;
    return false;
  }
  k->day = base + (int64_t)day;
  return true;
}

static bool chunk_begin(const uint8_t *c, size_t n, size_t *i, int64_t *base) {
  uint64_t b = 0;
  *i = 0;
  if (!ana_varint_get(c, n, i, &b))
    return false;
  *base = unzigzag(b);
  return true;
}

/* Appends a key to a chunk being written; the caller checks the size. */
static size_t chunk_put(uint8_t *p, int64_t base, const struct dkey *k) {
  size_t n = ana_varint_put(p, (uint64_t)k->account * 2 + k->text);
  if (k->text)
    n += ana_varint_put(p + n, k->len);
  memcpy(p + n, k->id, k->len);
  n += k->len;
  n += ana_varint_put(p + n, (uint64_t)(k->day - base));
  return n;
}

/* Whether chunk c holds k (1), not (0), or is malformed (negative): its
 * keys compared as they are read, the day skipped. */
static int chunk_find(const uint8_t *c, size_t n, const struct dkey *k) {
  size_t i = 0;
  uint64_t v = 0, want = (uint64_t)k->account * 2 + k->text;
  if (!ana_varint_get(c, n, &i, &v))
    return ANA_ERR_INTERNAL;
  while (i < n) {
    uint64_t len = ANA_EVENT_ID_PACKED;
    if (!ana_varint_get(c, n, &i, &v) || ((v & 1) && !ana_varint_get(c, n, &i, &len)) ||
        len > n - i)
      return ANA_ERR_INTERNAL;
    if (v == want && len == k->len && memcmp(c + i, k->id, k->len) == 0)
      return 1;
    i += (size_t)len;
    while (i < n && (c[i] & 0x80)) /* the day */
      i++;
    if (i++ >= n)
      return ANA_ERR_INTERNAL;
  }
  return 0;
}

/* --- runs in memory --- */

static void run_free(struct run *r) {
  if (!r)
    return;
  ana_free(r->fences);
  ana_free(r->filter);
  ana_free(r->days);
  ana_free(r);
}

static int level_of(int64_t keys) {
  int level = 0;
  for (int64_t size = BASE_KEYS * FANOUT; keys >= size && level < MAX_LEVELS - 1; size *= FANOUT)
    level++;
  return level;
}

static int64_t min_day(const struct run *r) {
  return r->n_days ? r->days[0].day : 0;
}

static int64_t max_day(const struct run *r) {
  return r->n_days ? r->days[r->n_days - 1].day : 0;
}

static int64_t expired_keys(const struct run *r, int64_t today) {
  int64_t n = 0;
  for (size_t i = 0; i < r->n_days && r->days[i].day < today; i++)
    n += r->days[i].n;
  return n;
}

/* Counts a key's day in a sorted histogram (days arrive in any order). */
static bool days_add(struct day_count **days, size_t *n, size_t *cap, int64_t day) {
  size_t lo = 0, hi = *n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if ((*days)[mid].day < day)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < *n && (*days)[lo].day == day) {
    (*days)[lo].n++;
    return true;
  }
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 16;
    struct day_count *p = ana_realloc(*days, c * sizeof *p);
    if (!p)
      return false;
    *days = p;
    *cap = c;
  }
  memmove(*days + lo + 1, *days + lo, (*n - lo) * sizeof **days);
  (*days)[lo] = (struct day_count){day, 1};
  (*n)++;
  return true;
}

static uint8_t *days_encode(const struct run *r, size_t *len) {
  uint8_t *b = ana_malloc(r->n_days * 20 + 1);
  size_t n = 0;
  int64_t prev = 0;
  if (!b)
    return NULL;
  for (size_t i = 0; i < r->n_days; i++) {
    n += ana_varint_put(b + n, i == 0 ? zigzag(r->days[i].day) : (uint64_t)(r->days[i].day - prev));
    n += ana_varint_put(b + n, (uint64_t)r->days[i].n);
    prev = r->days[i].day;
  }
  *len = n;
  return b;
}

static bool days_decode(struct run *r, const uint8_t *b, size_t len) {
  size_t i = 0, cap = 0;
  int64_t prev = 0;
  while (i < len) {
    uint64_t d = 0, n = 0;
    if (!ana_varint_get(b, len, &i, &d) || !ana_varint_get(b, len, &i, &n))
      return false;
    int64_t day = r->n_days == 0 ? unzigzag(d) : prev + (int64_t)d;
    if (r->n_days == cap) {
      cap = cap ? cap * 2 : 16;
      struct day_count *p = ana_realloc(r->days, cap * sizeof *p);
      if (!p)
        return false;
      r->days = p;
    }
    r->days[r->n_days++] = (struct day_count){day, (int64_t)n};
    prev = day;
  }
  return true;
}

static size_t run_filter_bytes(const struct run *r) {
  return r->filter ? (size_t)r->blocks * 64 : 0;
}

/* Adds a run to the live set (newest last). Under mu. */
static bool runs_add(struct ana_dedupe_runs *d, struct run *r) {
  if (d->n_runs == d->cap_runs) {
    size_t c = d->cap_runs ? d->cap_runs * 2 : 32;
    struct run **p = ana_realloc(d->runs, c * sizeof *p);
    if (!p)
      return false;
    d->runs = p;
    d->cap_runs = c;
  }
  d->runs[d->n_runs++] = r;
  d->filter_bytes += run_filter_bytes(r);
  d->live_keys += r->keys;
  return true;
}

static void runs_remove(struct ana_dedupe_runs *d, struct run *r) {
  for (size_t i = 0; i < d->n_runs; i++) {
    if (d->runs[i] == r) {
      memmove(d->runs + i, d->runs + i + 1, (d->n_runs - i - 1) * sizeof *d->runs);
      d->n_runs--;
      d->filter_bytes -= run_filter_bytes(r);
      d->live_keys -= r->keys;
      return;
    }
  }
}

static bool dropped_add(struct ana_dedupe_runs *d, int64_t id) {
  if (d->n_dropped == d->cap_dropped) {
    size_t c = d->cap_dropped ? d->cap_dropped * 2 : 16;
    struct dropped *p = ana_realloc(d->dropped, c * sizeof *p);
    if (!p)
      return false;
    d->dropped = p;
    d->cap_dropped = c;
  }
  d->dropped[d->n_dropped++] = (struct dropped){id, id << CHUNK_SHIFT};
  return true;
}

/* --- lookups --- */

/* Whether run r holds key k: reads the chunks its hash may be in. 1 yes,
 * 0 no, negative: an error. */
static int run_holds(sqlite3_stmt *get, const struct run *r, const struct dkey *k) {
  /* The first chunk whose fence is >= h, minus one: keys of hash h may end
   * the chunk before. */
  uint32_t lo = 0, hi = r->chunks;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (r->fences[mid] < k->h)
      lo = mid + 1;
    else
      hi = mid;
  }
  uint32_t j = lo > 0 ? lo - 1 : 0;
  for (; j < r->chunks && (j < lo || r->fences[j] <= k->h); j++) {
    sqlite3_reset(get);
    sqlite3_bind_int64(get, 1, (r->id << CHUNK_SHIFT) + j);
    int step = sqlite3_step(get);
    if (step != SQLITE_ROW)
      return step == SQLITE_DONE ? ANA_ERR_INTERNAL : ANA_ERR_IO;
    int found = chunk_find(sqlite3_column_blob(get, 0), (size_t)sqlite3_column_bytes(get, 0), k);
    if (found != 0) {
      sqlite3_reset(get);
      return found;
    }
  }
  sqlite3_reset(get);
  return 0;
}

const char ana_dedupe_chunk_sql[] = "SELECT keys FROM dedupe_chunks WHERE id = ?";

/* --- the open transaction's keys --- */

static uint8_t *pk_id(struct ana_dedupe_runs *d, const struct pkey *p) {
  return d->arena + p->off;
}

static bool table_rebuild(struct ana_dedupe_runs *d, size_t cap) {
  uint32_t *t = ana_calloc(cap, sizeof *t);
  if (!t)
    return false;
  for (size_t i = 0; i < d->n_pk; i++) {
    size_t s = (size_t)d->pk[i].h & (cap - 1);
    while (t[s])
      s = (s + 1) & (cap - 1);
    t[s] = (uint32_t)i + 1;
  }
  ana_free(d->table);
  d->table = t;
  d->table_cap = cap;
  return true;
}

/* Whether the open transaction claimed k already. */
static bool pending_has(struct ana_dedupe_runs *d, const struct dkey *k) {
  if (!d->table_cap)
    return false;
  for (size_t s = (size_t)k->h & (d->table_cap - 1); d->table[s];
       s = (s + 1) & (d->table_cap - 1)) {
    const struct pkey *p = &d->pk[d->table[s] - 1];
    if (p->h == k->h && p->account == k->account && p->text == k->text && p->len == k->len &&
        memcmp(pk_id(d, p), k->id, k->len) == 0)
      return true;
  }
  return false;
}

static bool pending_add(struct ana_dedupe_runs *d, const struct dkey *k) {
  if (d->n_pk == d->cap_pk) {
    size_t c = d->cap_pk ? d->cap_pk * 2 : 1024;
    struct pkey *p = ana_realloc(d->pk, c * sizeof *p);
    if (!p)
      return false;
    d->pk = p;
    d->cap_pk = c;
  }
  if ((d->n_pk + 1) * 2 > d->table_cap && !table_rebuild(d, d->table_cap ? d->table_cap * 2 : 2048))
    return false;
  if (!ana_bytes_grow(&d->arena, &d->arena_cap, d->arena_len + k->len + 1))
    return false;
  memcpy(d->arena + d->arena_len, k->id, k->len);
  d->pk[d->n_pk] = (struct pkey){k->h, k->account, k->day, d->arena_len, k->len, k->text};
  d->arena_len += k->len;
  size_t s = (size_t)k->h & (d->table_cap - 1);
  while (d->table[s])
    s = (s + 1) & (d->table_cap - 1);
  d->table[s] = (uint32_t)d->n_pk + 1;
  d->n_pk++;
  return true;
}

void ana_dedupe_runs_discard(struct ana_dedupe_runs *d) {
  if (!d)
    return;
  if (d->table_cap && d->n_pk)
    memset(d->table, 0, d->table_cap * sizeof *d->table);
  d->n_pk = 0;
  d->arena_len = 0;
  run_free(d->new_run);
  d->new_run = NULL;
}

int ana_dedupe_runs_claim(struct ana_dedupe_runs *d, sqlite3 *w, sqlite3_stmt *get, int64_t account,
                          const char *event_id, int64_t day, struct ana_error *err) {
  uint8_t packed[ANA_EVENT_ID_PACKED];
  size_t tlen = strlen(event_id);
  struct dkey k = {.account = account, .day = day};
  if (ana_event_id_pack(event_id, tlen, packed)) {
    k.id = packed;
    k.len = ANA_EVENT_ID_PACKED;
  } else {
    k.id = (const uint8_t *)event_id;
    k.len = (uint32_t)tlen;
    k.text = 1;
  }
  k.h = key_hash(d->seed, account, k.text, k.id, k.len);
  if (pending_has(d, &k))
    return 1;
  int rc = 0;
  pthread_mutex_lock(&d->mu);
  for (size_t i = d->n_runs; i-- > 0 && rc == 0;) {
    const struct run *r = d->runs[i];
    if (filter_maybe(r, k.h))
      rc = run_holds(get, r, &k);
  }
  pthread_mutex_unlock(&d->mu);
  if (rc < 0) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s",
                  rc == ANA_ERR_IO ? sqlite3_errmsg(w) : "a key chunk is missing or malformed");
    return rc;
  }
  if (rc == 1)
    return 1;
  if (!pending_add(d, &k)) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  return 0;
}

/* --- writing a run --- */

/* A run being written: its chunks go out as they fill. */
struct run_writer {
  struct run *r;
  int64_t base;
  uint8_t *buf;
  size_t len, cap;
  size_t days_cap;
  uint32_t fences_cap;
  bool open_chunk;
  sqlite3_stmt *put;
};

static bool writer_init(struct ana_dedupe_runs *d, struct run_writer *wr, int64_t id,
                        int64_t keys_max, int64_t base, size_t freed, int64_t freed_keys) {
  memset(wr, 0, sizeof *wr);
  if (!(wr->r = ana_calloc(1, sizeof *wr->r)))
    return false;
  wr->r->id = id;
  wr->base = base;
  pthread_mutex_lock(&d->mu);
  filter_size(d, keys_max, freed, freed_keys, &wr->r->blocks, &wr->r->k);
  pthread_mutex_unlock(&d->mu);
  if (wr->r->blocks && !(wr->r->filter = ana_calloc((size_t)wr->r->blocks * 8, 8)))
    wr->r->blocks = 0, wr->r->k = 0;
  return ana_bytes_grow(&wr->buf, &wr->cap, CHUNK_BYTES + 64);
}

static void writer_free(struct run_writer *wr) {
  run_free(wr->r);
  ana_free(wr->buf);
  wr->r = NULL;
  wr->buf = NULL;
}

/* Writes the chunk being filled (if any); SQLITE_OK or an error. */
static int writer_flush_chunk(struct run_writer *wr) {
  if (!wr->open_chunk)
    return SQLITE_OK;
  sqlite3_reset(wr->put);
  sqlite3_bind_int64(wr->put, 1, (wr->r->id << CHUNK_SHIFT) + wr->r->chunks);
  sqlite3_bind_blob(wr->put, 2, wr->buf, (int)wr->len, SQLITE_STATIC);
  int rc = sqlite3_step(wr->put);
  sqlite3_reset(wr->put);
  if (rc != SQLITE_DONE)
    return rc;
  wr->r->chunks++;
  wr->open_chunk = false;
  return SQLITE_OK;
}

/* Adds a key (in order); *wrote set when a chunk was written. */
static int writer_add(struct run_writer *wr, const struct dkey *k, bool *wrote) {
  *wrote = false;
  size_t need = 30 + k->len;
  if (wr->open_chunk && wr->len + need > CHUNK_BYTES) {
    int rc = writer_flush_chunk(wr);
    if (rc != SQLITE_OK)
      return rc;
    *wrote = true;
  }
  if (!ana_bytes_grow(&wr->buf, &wr->cap, need + 16))
    return SQLITE_NOMEM;
  if (!wr->open_chunk) {
    if (wr->r->chunks >= (1u << CHUNK_SHIFT) - 1)
      return SQLITE_FULL;
    if (wr->r->chunks >= wr->fences_cap) {
      uint32_t c = wr->fences_cap ? wr->fences_cap * 2 : 16;
      uint64_t *f = ana_realloc(wr->r->fences, (size_t)c * sizeof *f);
      if (!f)
        return SQLITE_NOMEM;
      wr->r->fences = f;
      wr->fences_cap = c;
    }
    wr->r->fences[wr->r->chunks] = k->h;
    wr->len = ana_varint_put(wr->buf, zigzag(wr->base));
    wr->open_chunk = true;
  }
  wr->len += chunk_put(wr->buf + wr->len, wr->base, k);
  if (!days_add(&wr->r->days, &wr->r->n_days, &wr->days_cap, k->day))
    return SQLITE_NOMEM;
  if (wr->r->filter)
    filter_add(wr->r->filter, wr->r->blocks, wr->r->k, k->h);
  wr->r->keys++;
  return SQLITE_OK;
}

/* Writes (state, metadata) of the run's row: INSERT OR REPLACE. */
static int write_run_row(sqlite3 *conn, const struct run *r, int state) {
  sqlite3_stmt *st = NULL;
  size_t days_len = 0;
  uint8_t *days = days_encode(r, &days_len);
  if (!days)
    return SQLITE_NOMEM;
  int rc = sqlite3_prepare_v2(conn,
                              "INSERT OR REPLACE INTO dedupe_runs (id, level, state, keys, chunks,"
                              " k, days, fences, filter_bytes) VALUES (?,?,?,?,?,?,?,?,?)",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int(st, 2, r->level);
    sqlite3_bind_int(st, 3, state);
    sqlite3_bind_int64(st, 4, r->keys);
    sqlite3_bind_int64(st, 5, r->chunks);
    sqlite3_bind_int(st, 6, r->k);
    sqlite3_bind_blob(st, 7, days, (int)days_len, SQLITE_STATIC);
    if (state == STATE_LIVE) {
      sqlite3_bind_blob(st, 8, r->fences ? (const void *)r->fences : "", (int)(r->chunks * 8),
                        SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 9, (sqlite3_int64)run_filter_bytes(r));
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  ana_free(days);
  return rc;
}

static uint32_t filter_pieces(const struct run *r) {
  return (uint32_t)((run_filter_bytes(r) + FILTER_PIECE - 1) / FILTER_PIECE);
}

/* Writes pieces [*next, *next + max) of r's filter (rows of dedupe_filters,
 * one a page), advancing *next. */
static int write_filter_pieces(sqlite3 *conn, const struct run *r, uint32_t *next, uint32_t max) {
  uint32_t pieces = filter_pieces(r);
  if (*next >= pieces)
    return SQLITE_OK;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(conn, "INSERT INTO dedupe_filters (id, bits) VALUES (?, ?)", -1, &st,
                              NULL);
  size_t total = run_filter_bytes(r);
  for (uint32_t n = 0; rc == SQLITE_OK && *next < pieces && n < max; n++, (*next)++) {
    size_t at = (size_t)*next * FILTER_PIECE;
    size_t len = total - at < FILTER_PIECE ? total - at : FILTER_PIECE;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, (r->id << CHUNK_SHIFT) + *next);
    sqlite3_bind_blob(st, 2, (const uint8_t *)r->filter + at, (int)len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Ends a run written whole in one transaction (a commit's keys, a slice of a
 * migrated table): its last chunk, its filter and its row, live at once.
 * rc: the writing's result so far; returns SQLITE_OK or an error. */
static int writer_finish_live(sqlite3 *conn, struct run_writer *wr, int rc) {
  if (rc == SQLITE_OK)
    rc = writer_flush_chunk(wr);
  sqlite3_finalize(wr->put);
  wr->put = NULL;
  uint32_t piece = 0;
  if (rc == SQLITE_OK)
    rc = write_filter_pieces(conn, wr->r, &piece, UINT32_MAX);
  if (rc == SQLITE_OK) {
    wr->r->level = level_of(wr->r->keys);
    rc = write_run_row(conn, wr->r, STATE_LIVE);
  }
  return rc;
}

static int64_t take_id(struct ana_dedupe_runs *d) {
  pthread_mutex_lock(&d->mu);
  int64_t id = d->next_id++;
  pthread_mutex_unlock(&d->mu);
  return id;
}

static int pkey_cmp(const void *a, const void *b, void *arg) {
  struct ana_dedupe_runs *d = arg;
  const struct pkey *x = a, *y = b;
  struct dkey kx = {x->h, x->account, x->day, pk_id(d, x), x->len, x->text};
  struct dkey ky = {y->h, y->account, y->day, pk_id(d, y), y->len, y->text};
  return key_cmp(&kx, &ky);
}

int ana_dedupe_runs_flush(struct ana_dedupe_runs *d, sqlite3 *w, struct ana_error *err) {
  if (!d || d->n_pk == 0)
    return 0;
  /* Room for the run in the live set, so that it cannot fail to be added
   * once committed. */
  pthread_mutex_lock(&d->mu);
  bool room = d->n_runs + 2 <= d->cap_runs;
  if (!room) {
    size_t c = d->cap_runs ? d->cap_runs * 2 : 32;
    struct run **p = ana_realloc(d->runs, c * sizeof *p);
    if (p) {
      d->runs = p;
      d->cap_runs = c;
      room = true;
    }
  }
  pthread_mutex_unlock(&d->mu);
  if (!room) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  qsort_r(d->pk, d->n_pk, sizeof *d->pk, pkey_cmp, d);
  int64_t base = d->pk[0].day;
  for (size_t i = 1; i < d->n_pk; i++)
    if (d->pk[i].day < base)
      base = d->pk[i].day;
  struct run_writer wr;
  int rc = SQLITE_NOMEM;
  if (writer_init(d, &wr, take_id(d), (int64_t)d->n_pk, base, 0, 0)) {
    rc = sqlite3_prepare_v2(w, "INSERT INTO dedupe_chunks (id, keys) VALUES (?, ?)", -1, &wr.put,
                            NULL);
    bool wrote;
    for (size_t i = 0; rc == SQLITE_OK && i < d->n_pk; i++) {
      const struct pkey *p = &d->pk[i];
      struct dkey k = {p->h, p->account, p->day, pk_id(d, p), p->len, p->text};
      rc = writer_add(&wr, &k, &wrote);
    }
    rc = writer_finish_live(w, &wr, rc);
  }
  if (rc != SQLITE_OK) {
    writer_free(&wr);
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: %s",
                  rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(w));
    return ANA_ERR_IO;
  }
  ana_free(wr.buf);
  run_free(d->new_run);
  d->new_run = wr.r;
  return 0;
}

void ana_dedupe_runs_committed(struct ana_dedupe_runs *d) {
  if (!d)
    return;
  struct run *r = d->new_run;
  d->new_run = NULL;
  ana_dedupe_runs_discard(d);
  if (!r)
    return;
  pthread_mutex_lock(&d->mu);
  runs_add(d, r); /* cannot fail: the flush made room */
  d->wake = true;
  pthread_cond_signal(&d->cond);
  pthread_mutex_unlock(&d->mu);
}

/* --- merges --- */

/* An input of a merge: its chunks read one at a time. */
struct cursor {
  struct run *r;
  uint32_t chunk;
  uint8_t *buf;
  size_t len, cap, i;
  int64_t base;
  struct dkey cur;
  bool has;
};

/* Moves c to its next key; false on a read error. */
static bool cursor_next(struct cursor *c, sqlite3_stmt *get, bool *bad) {
  for (;;) {
    if (c->buf && c->i < c->len && chunk_next(c->buf, c->len, &c->i, c->base, &c->cur, bad)) {
      c->cur.h = 0; /* computed by the caller */
      c->has = true;
      return true;
    }
    if (*bad)
      return false;
    if (c->chunk >= c->r->chunks) {
      c->has = false;
      return true;
    }
    sqlite3_reset(get);
    sqlite3_bind_int64(get, 1, (c->r->id << CHUNK_SHIFT) + c->chunk);
    if (sqlite3_step(get) != SQLITE_ROW) {
      sqlite3_reset(get);
      *bad = true;
      return false;
    }
    size_t n = (size_t)sqlite3_column_bytes(get, 0);
    if (!ana_bytes_grow(&c->buf, &c->cap, n + 1)) {
      sqlite3_reset(get);
      return false;
    }
    memcpy(c->buf, sqlite3_column_blob(get, 0), n);
    sqlite3_reset(get);
    c->len = n;
    c->chunk++;
    if (!chunk_begin(c->buf, c->len, &c->i, &c->base)) {
      *bad = true;
      return false;
    }
  }
}

/* A merge in progress (the merge thread's). */
struct merge {
  struct run *in[FANOUT];
  struct cursor cur[FANOUT];
  int n_in;
  struct run_writer wr;
  int64_t today;
  bool started, keys_done;
  uint32_t piece; /* the next piece of the output's filter to write */
  int64_t expired;
};

static void merge_end(struct merge *m) {
  for (int i = 0; i < m->n_in; i++) {
    ana_free(m->cur[i].buf);
    m->in[i]->merging = false;
  }
  writer_free(&m->wr);
  memset(m, 0, sizeof *m);
}

static void merge_fail(struct ana_dedupe_runs *d, struct merge *m) {
  /* Its chunks written so far are dropped (next steps). */
  if (m->started) {
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < m->n_in; i++)
      m->in[i]->merging = false;
    dropped_add(d, m->wr.r->id);
    pthread_mutex_unlock(&d->mu);
  }
  pthread_mutex_lock(&d->mu);
  merge_end(m);
  pthread_mutex_unlock(&d->mu);
}

/* A run to drop whole (all its keys' days are over), or NULL. Under mu. */
static struct run *pick_drop(struct ana_dedupe_runs *d, int64_t today) {
  for (size_t i = 0; i < d->n_runs; i++) {
    struct run *r = d->runs[i];
    if (!r->merging && r->n_days && max_day(r) < today)
      return r;
  }
  return NULL;
}

/* Puts in in[0] the input of a compaction (a run half of whose keys
 * expired); false: none. Under mu. */
static int pick_compaction(struct ana_dedupe_runs *d, int64_t today, struct run **in) {
  for (size_t i = 0; i < d->n_runs; i++) {
    struct run *r = d->runs[i];
    if (!r->merging && r->keys > 0 && expired_keys(r, today) * 2 >= r->keys) {
      in[0] = r;
      return 1;
    }
  }
  return 0;
}

/* Puts FANOUT runs of level (the oldest) in in; returns FANOUT, or 0 when
 * there are fewer. Under mu. */
static int pick_merge(struct ana_dedupe_runs *d, int level, struct run **in) {
  int n = 0;
  for (size_t i = 0; i < d->n_runs && n < FANOUT; i++)
    if (!d->runs[i]->merging && d->runs[i]->level == level)
      in[n++] = d->runs[i];
  return n == FANOUT ? n : 0;
}

/* The input holding the smallest key, or -1 when all are done. */
static int merge_min(struct merge *m) {
  int best = -1;
  for (int i = 0; i < m->n_in; i++) {
    if (!m->cur[i].has)
      continue;
    if (best < 0 || key_cmp(&m->cur[i].cur, &m->cur[best].cur) < 0)
      best = i;
  }
  return best;
}

static int begin_step(struct ana_dedupe_runs *d, int room) {
  ana_local_db_journal_gate_enter(d->db, room);
  if (sqlite3_exec(d->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    ana_local_db_journal_gate_leave(d->db);
    return ANA_ERR_IO;
  }
  return 0;
}

static int end_step(struct ana_dedupe_runs *d, bool commit) {
  int rc = 0;
  if (commit && sqlite3_exec(d->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    rc = ANA_ERR_IO;
  if (!sqlite3_get_autocommit(d->conn))
    sqlite3_exec(d->conn, "ROLLBACK", NULL, NULL, NULL);
  ana_local_db_journal_gate_leave(d->db);
  return rc;
}

static int set_state(sqlite3 *conn, int64_t id, int state) {
  char sql[96];
  snprintf(sql, sizeof sql, "UPDATE dedupe_runs SET state = %d WHERE id = %lld", state,
           (long long)id);
  return sqlite3_exec(conn, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : ANA_ERR_IO;
}

/* One transaction of a merge: up to `chunks` chunks; at the end the output
 * turns live and the inputs dropped. 1: more to do, 0: done, <0 error. */
static int merge_step(struct ana_dedupe_runs *d, struct merge *m, int chunks, int room) {
  sqlite3_stmt *get = NULL;
  int rc = begin_step(d, room);
  if (rc < 0)
    return rc;
  bool bad = false;
  int status = SQLITE_OK;
  if (sqlite3_prepare_v2(d->conn, ana_dedupe_chunk_sql, -1, &get, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(d->conn, "INSERT INTO dedupe_chunks (id, keys) VALUES (?, ?)", -1,
                         &m->wr.put, NULL) != SQLITE_OK) {
    rc = ANA_ERR_IO;
    goto out;
  }
  if (!m->started) {
    m->started = true;
    for (int i = 0; i < m->n_in; i++) {
      m->cur[i].r = m->in[i];
      if (!cursor_next(&m->cur[i], get, &bad)) {
        rc = ANA_ERR_IO;
        goto out;
      }
      if (m->cur[i].has)
        m->cur[i].cur.h = key_hash(d->seed, m->cur[i].cur.account, m->cur[i].cur.text,
                                   m->cur[i].cur.id, m->cur[i].cur.len);
    }
    if (write_run_row(d->conn, m->wr.r, STATE_BUILDING) != SQLITE_OK) {
      rc = ANA_ERR_IO;
      goto out;
    }
  }
  int written = 0;
  int best;
  while (written < chunks && (best = merge_min(m)) >= 0) {
    struct cursor *c = &m->cur[best];
    if (c->cur.day >= m->today) {
      bool wrote = false;
      if ((status = writer_add(&m->wr, &c->cur, &wrote)) != SQLITE_OK) {
        rc = ANA_ERR_IO;
        goto out;
      }
      written += wrote;
    } else {
      m->expired++;
    }
    /* cur points into c->buf: written (copied) above before it moves. */
    if (!cursor_next(c, get, &bad)) {
      rc = ANA_ERR_IO;
      goto out;
    }
    if (c->has)
      c->cur.h = key_hash(d->seed, c->cur.account, c->cur.text, c->cur.id, c->cur.len);
  }
  if (!m->keys_done) {
    if (merge_min(m) >= 0) {
      rc = 1;
      goto out;
    }
    if ((status = writer_flush_chunk(&m->wr)) != SQLITE_OK) {
      rc = ANA_ERR_IO;
      goto out;
    }
    written++;
    m->keys_done = true;
  }
  /* The output's filter, a slice a step, once all its keys are in. */
  if (write_filter_pieces(d->conn, m->wr.r, &m->piece,
                          written < chunks ? (uint32_t)(chunks - written) : 1) != SQLITE_OK) {
    rc = ANA_ERR_IO;
    goto out;
  }
  if (m->piece < filter_pieces(m->wr.r)) {
    rc = 1;
    goto out;
  }
  m->wr.r->level = level_of(m->wr.r->keys);
  if (m->wr.r->level < m->in[0]->level && m->n_in > 1)
    m->wr.r->level = m->in[0]->level;
  if (write_run_row(d->conn, m->wr.r, STATE_LIVE) != SQLITE_OK) {
    rc = ANA_ERR_IO;
    goto out;
  }
  for (int i = 0; i < m->n_in && rc == 0; i++)
    rc = set_state(d->conn, m->in[i]->id, STATE_DROPPED);
out:
  sqlite3_finalize(get);
  sqlite3_finalize(m->wr.put);
  m->wr.put = NULL;
  if (bad && rc >= 0)
    rc = ANA_ERR_INTERNAL;
  if (rc < 0) {
    ANA_WARN("store", "deduplication: a merge failed (%s); retrying",
             bad ? "a malformed chunk" : sqlite3_errmsg(d->conn));
    end_step(d, false);
    return rc;
  }
  if (end_step(d, true) < 0)
    return ANA_ERR_IO;
  if (rc == 1)
    return 1;
  /* Live: the output replaces its inputs. */
  pthread_mutex_lock(&d->mu);
  for (int i = 0; i < m->n_in; i++) {
    runs_remove(d, m->in[i]);
    dropped_add(d, m->in[i]->id);
  }
  /* The output goes where its newest input was, keeping newer runs newer. */
  struct run *out_run = m->wr.r;
  m->wr.r = NULL;
  bool added = out_run->keys == 0 || runs_add(d, out_run);
  if (out_run->keys == 0) {
    dropped_add(d, out_run->id); /* nothing left: its row goes too */
    run_free(out_run);
  }
  for (int i = 0; i < m->n_in; i++) {
    run_free(m->in[i]);
    m->in[i] = NULL;
    ana_free(m->cur[i].buf);
    m->cur[i].buf = NULL;
  }
  atomic_fetch_add(&d->keys_expired, m->expired);
  d->merges_done++;
  m->n_in = 0;
  pthread_mutex_unlock(&d->mu);
  if (!added)
    ANA_ERROR("store", "deduplication: out of memory for a merged run; restart to see its keys");
  writer_free(&m->wr);
  memset(m, 0, sizeof *m);
  return 0;
}

/* Deletes a slice of a dropped run's chunks, or its row once none are
 * left. Returns 1 (more to do) or an error. */
static int drop_step(struct ana_dedupe_runs *d, struct dropped *x, int chunks, int room) {
  int rc = begin_step(d, room);
  if (rc < 0)
    return rc;
  char sql[160];
  int64_t end = (x->id + 1) << CHUNK_SHIFT;
  int64_t to = x->next + chunks < end ? x->next + chunks : end;
  int64_t next = end;
  static const char *const tables[] = {"dedupe_chunks", "dedupe_filters"};
  for (int t = 0; t < 2; t++) {
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE id >= %lld AND id < %lld", tables[t],
             (long long)x->next, (long long)to);
    if (sqlite3_exec(d->conn, sql, NULL, NULL, NULL) != SQLITE_OK) {
      end_step(d, false);
      return ANA_ERR_IO;
    }
    /* The next chunk or piece left (none: the row goes). */
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE id >= ? AND id < ? LIMIT 1", tables[t]);
    if (sqlite3_prepare_v2(d->conn, sql, -1, &st, NULL) == SQLITE_OK) {
      sqlite3_bind_int64(st, 1, to);
      sqlite3_bind_int64(st, 2, end);
      if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) < next)
        next = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  if (next >= end) {
    snprintf(sql, sizeof sql, "DELETE FROM dedupe_runs WHERE id = %lld", (long long)x->id);
    if (sqlite3_exec(d->conn, sql, NULL, NULL, NULL) != SQLITE_OK) {
      end_step(d, false);
      return ANA_ERR_IO;
    }
  }
  if (end_step(d, true) < 0)
    return ANA_ERR_IO;
  x->next = next;
  return next >= end ? 0 : 1;
}

/* One maintenance transaction due at today: deleting dropped runs' chunks
 * first, then dropping an expired run, then a merge. 1: it did something,
 * 0: nothing due, <0 error. */
/* Starts merge m (its inputs chosen) and takes its first step. Called
 * with mu held; returns without. */
static int merge_start(struct ana_dedupe_runs *d, struct merge *m, int64_t today, int chunks,
                       int room) {
  int64_t keys = 0, base = INT64_MAX;
  size_t freed = 0;
  for (int i = 0; i < m->n_in; i++) {
    m->in[i]->merging = true;
    keys += m->in[i]->keys;
    freed += run_filter_bytes(m->in[i]);
    int64_t lo = min_day(m->in[i]);
    base = lo < base ? lo : base;
  }
  pthread_mutex_unlock(&d->mu);
  if (base < today)
    base = today;
  m->today = today;
  /* Its output's filter sized for all its inputs' keys. */
  if (!writer_init(d, &m->wr, take_id(d), keys, base, freed, keys)) {
    merge_fail(d, m);
    return ANA_ERR_NOMEM;
  }
  int rc = merge_step(d, m, chunks, room);
  if (rc < 0)
    merge_fail(d, m);
  return rc < 0 ? rc : 1;
}

/* One step of the merge of slot: under way, or started now with the n
 * runs of in. Called with mu held; returns without. */
static int merge_slot_step(struct ana_dedupe_runs *d, int slot, struct run **in, int n,
                           int64_t today, int chunks, int room) {
  struct merge *m = &d->merges[slot];
  if (!m->wr.r) {
    memcpy(m->in, in, (size_t)n * sizeof *in);
    m->n_in = n;
    return merge_start(d, m, today, chunks, room);
  }
  pthread_mutex_unlock(&d->mu);
  int rc = merge_step(d, m, chunks, room);
  if (rc < 0)
    merge_fail(d, m);
  return rc < 0 ? rc : 1;
}

/* One maintenance transaction due at today, the most urgent first: a step
 * of the merges of the smallest runs (levels 0 and 1: a claim probes every
 * run, so they must not pile up behind a large merge), dropping a run that
 * expired whole, deleting dropped runs' chunks, a step of a larger merge
 * (the lowest level first), then rewriting a run half of whose keys
 * expired. 1: it did something, 0: nothing due, <0 error. */
static int maintain_step(struct ana_dedupe_runs *d, int64_t today) {
  /* The WAL room the mover's moves get (the journal's WAL has the same
   * bound); a chunk is a page, plus the B-tree's and the run row's. */
  int room = ana_local_db_move_room(d->db);
  int chunks = room / 3 < STEP_CHUNKS ? room / 3 : STEP_CHUNKS;
  if (chunks < 1)
    chunks = 1;
  pthread_mutex_lock(&d->mu);
  /* The lowest level with a merge under way or due. */
  struct run *in[FANOUT];
  int level = -1, n = 0;
  for (int l = 0; l < MAX_LEVELS && level < 0; l++)
    if (d->merges[l].wr.r || (n = pick_merge(d, l, in)) > 0)
      level = l;
  if (level >= 0 && level <= 1)
    return merge_slot_step(d, level, in, n, today, chunks, room);
  struct run *drop = pick_drop(d, today);
  if (drop) {
    drop->merging = true;
    pthread_mutex_unlock(&d->mu);
    int rc = begin_step(d, 1);
    if (rc == 0) {
      rc = set_state(d->conn, drop->id, STATE_DROPPED);
      rc = end_step(d, rc == 0) < 0 ? ANA_ERR_IO : rc;
    }
    pthread_mutex_lock(&d->mu);
    drop->merging = false;
    if (rc == 0) {
      atomic_fetch_add(&d->keys_expired, drop->keys);
      d->runs_dropped++;
      runs_remove(d, drop);
      dropped_add(d, drop->id);
      run_free(drop);
    }
    pthread_mutex_unlock(&d->mu);
    return rc < 0 ? rc : 1;
  }
  if (d->n_dropped > 0) {
    struct dropped x = d->dropped[0];
    pthread_mutex_unlock(&d->mu);
    int rc = drop_step(d, &x, chunks, room);
    if (rc < 0)
      return rc;
    pthread_mutex_lock(&d->mu);
    if (rc == 0) {
      memmove(d->dropped, d->dropped + 1, (d->n_dropped - 1) * sizeof *d->dropped);
      d->n_dropped--;
    } else {
      d->dropped[0] = x;
    }
    pthread_mutex_unlock(&d->mu);
    return 1;
  }
  if (level >= 0)
    return merge_slot_step(d, level, in, n, today, chunks, room);
  if (d->merges[MAX_LEVELS].wr.r || (n = pick_compaction(d, today, in)) > 0)
    return merge_slot_step(d, MAX_LEVELS, in, n, today, chunks, room);
  pthread_mutex_unlock(&d->mu);
  return 0;
}

static int64_t today_of(int64_t ms) {
  return ms >= 0 ? ms / DAY_MS : -((-ms + DAY_MS - 1) / DAY_MS);
}

static void *merge_thread(void *arg) {
  struct ana_dedupe_runs *d = arg;
  pthread_setname_np(pthread_self(), "ana-dedupe"); /* top -H, /proc/PID/task/TID/comm */
  int idle_hints = 0;
  pthread_mutex_lock(&d->mu);
  while (!d->stop) {
    if (d->hold) {
      pthread_cond_wait(&d->cond, &d->mu);
      continue;
    }
    d->wake = false;
    int64_t today = d->today;
    pthread_mutex_unlock(&d->mu);
    pthread_mutex_lock(&d->step_mu);
    int rc = maintain_step(d, today);
    pthread_mutex_unlock(&d->step_mu);
    pthread_mutex_lock(&d->mu);
    if (rc > 0) {
      idle_hints = IDLE_HINTS;
      continue;
    }
    if (!d->stop && !d->wake) {
      struct timespec ts = ana_deadline_in_ms(rc < 0 ? RETRY_MS : IDLE_MS);
      if (pthread_cond_timedwait(&d->cond, &d->mu, &ts) != 0 && rc == 0 && idle_hints > 0) {
        idle_hints--;
        pthread_mutex_unlock(&d->mu);
        ana_local_db_checkpoint_soon(d->db);
        pthread_mutex_lock(&d->mu);
      }
    }
  }
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

static void set_today(struct ana_dedupe_runs *d, int64_t now_ms) {
  int64_t today = today_of(now_ms);
  pthread_mutex_lock(&d->mu);
  if (today > d->today) {
    d->today = today;
    d->wake = true;
    pthread_cond_signal(&d->cond);
  }
  pthread_mutex_unlock(&d->mu);
}

int ana_dedupe_runs_maintain(struct ana_dedupe_runs *d, int64_t now_ms, int max_steps,
                             struct ana_error *err) {
  set_today(d, now_ms);
  int rc, steps = 0;
  pthread_mutex_lock(&d->step_mu);
  pthread_mutex_lock(&d->mu);
  int64_t today = d->today;
  pthread_mutex_unlock(&d->mu);
  while ((max_steps <= 0 || steps < max_steps) && (rc = maintain_step(d, today)) > 0)
    steps++;
  pthread_mutex_unlock(&d->step_mu);
  if (rc < 0) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "deduplication: maintenance failed: %s",
                  sqlite3_errmsg(d->conn));
    return rc;
  }
  return steps;
}

void ana_dedupe_runs_hold(struct ana_dedupe_runs *d, bool hold) {
  pthread_mutex_lock(&d->mu);
  d->hold = hold;
  pthread_cond_signal(&d->cond);
  pthread_mutex_unlock(&d->mu);
  if (hold) { /* a step under way ends first */
    pthread_mutex_lock(&d->step_mu);
    pthread_mutex_unlock(&d->step_mu);
  }
}

int64_t ana_dedupe_runs_take_expired(struct ana_dedupe_runs *d, int64_t now_ms, int64_t max) {
  if (!d)
    return 0;
  set_today(d, now_ms);
  int64_t v = atomic_load(&d->keys_expired);
  while (!atomic_compare_exchange_weak(&d->keys_expired, &v, v > max ? v - max : 0)) {
  }
  return v > max ? max : v;
}

void ana_dedupe_runs_set_filter_limit(struct ana_dedupe_runs *d, size_t bytes) {
  pthread_mutex_lock(&d->mu);
  d->filter_limit = bytes;
  /* Filters loaded under a larger limit: the largest go (those runs are
   * read on every claim until a merge gives them a smaller one). */
  while (d->filter_bytes > d->filter_limit) {
    struct run *big = NULL;
    for (size_t i = 0; i < d->n_runs; i++)
      if (d->runs[i]->filter && (!big || d->runs[i]->blocks > big->blocks))
        big = d->runs[i];
    if (!big)
      break;
    d->filter_bytes -= run_filter_bytes(big);
    ana_free(big->filter);
    big->filter = NULL;
    big->blocks = 0;
    big->k = 0;
  }
  pthread_mutex_unlock(&d->mu);
}

void ana_dedupe_runs_stats(struct ana_dedupe_runs *d, struct ana_dedupe_runs_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&d->mu);
  out->runs = (int64_t)d->n_runs;
  out->keys = d->live_keys;
  out->filter_bytes = (int64_t)d->filter_bytes;
  out->dropped = (int64_t)d->n_dropped;
  for (size_t i = 0; i < d->n_runs; i++)
    if (!d->runs[i]->filter)
      out->unfiltered++;
  pthread_mutex_unlock(&d->mu);
}

/* The merge connection's busy handler: the committer's transactions follow
 * each other closely, so the lock is polled often (a sleep that grows as
 * SQLite's does would let it miss every gap between commits), for 30 s. */
static int merge_busy(void *arg, int tries) {
  (void)arg;
  if (tries >= 100000)
    return 0;
  usleep(tries < 20 ? 50 : 300);
  return 1;
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_dedupe_runs *d = ctx;
  struct ana_dedupe_runs_stats st;
  ana_dedupe_runs_stats(d, &st);
  pthread_mutex_lock(&d->mu);
  uint64_t merges = d->merges_done, dropped = d->runs_dropped;
  pthread_mutex_unlock(&d->mu);
  static const struct {
    const char *name, *type, *help;
  } families[] = {
      {"ana_dedupe_runs", "gauge", "Sorted runs of deduplication keys (a claim probes each)."},
      {"ana_dedupe_keys", "gauge", "Deduplication keys in the live runs."},
      {"ana_dedupe_filter_bytes", "gauge",
       "Memory of the runs' Bloom filters (at most DEDUPE_FILTER_MB)."},
      {"ana_dedupe_unfiltered_runs", "gauge",
       "Runs without a filter (DEDUPE_FILTER_MB was full): read on every claim."},
      {"ana_dedupe_merges_total", "counter", "Merges of deduplication runs that ended."},
      {"ana_dedupe_expired_runs_total", "counter", "Runs dropped whole because every key expired."},
  };
  const uint64_t values[] = {(uint64_t)st.runs,
                             (uint64_t)st.keys,
                             (uint64_t)st.filter_bytes,
                             (uint64_t)st.unfiltered,
                             merges,
                             dropped};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    ana_prom_write_family(w, families[i].name, families[i].type, families[i].help);
    ana_prom_write_u64(w, families[i].name, NULL, values[i]);
  }
}

/* --- open and close --- */

/* Reads run r's filter (bytes long) from its pieces into r->filter. */
static bool read_filter(sqlite3 *w, struct run *r, size_t bytes) {
  sqlite3_stmt *st = NULL;
  size_t at = 0;
  bool ok = sqlite3_prepare_v2(w,
                               "SELECT bits FROM dedupe_filters WHERE id >= ? AND id < ?"
                               " ORDER BY id",
                               -1, &st, NULL) == SQLITE_OK;
  if (ok) {
    sqlite3_bind_int64(st, 1, r->id << CHUNK_SHIFT);
    sqlite3_bind_int64(st, 2, (r->id + 1) << CHUNK_SHIFT);
  }
  while (ok && sqlite3_step(st) == SQLITE_ROW) {
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    ok = n <= bytes - at;
    if (ok && n) {
      memcpy((uint8_t *)r->filter + at, sqlite3_column_blob(st, 0), n);
      at += n;
    }
  }
  sqlite3_finalize(st);
  return ok && at == bytes;
}

/* Loads the live runs' metadata and filters; dropped and unfinished runs
 * are listed for deletion. */
static int load_runs(struct ana_dedupe_runs *d, sqlite3 *w, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(w, "SELECT seed FROM dedupe_meta WHERE id = 1", -1, &st, NULL) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    sqlite3_finalize(st);
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: no seed: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  d->seed = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (sqlite3_prepare_v2(w,
                         "SELECT id, level, state, keys, chunks, k, days, fences, filter_bytes"
                         " FROM dedupe_runs ORDER BY id",
                         -1, &st, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  d->next_id = 1;
  int step;
  while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0);
    if (id >= d->next_id)
      d->next_id = id + 1;
    if (sqlite3_column_int(st, 2) != STATE_LIVE) {
      if (!dropped_add(d, id))
        rc = ANA_ERR_NOMEM;
      continue;
    }
    struct run *r = ana_calloc(1, sizeof *r);
    if (!r) {
      rc = ANA_ERR_NOMEM;
      break;
    }
    r->id = id;
    r->level = sqlite3_column_int(st, 1);
    r->keys = sqlite3_column_int64(st, 3);
    r->chunks = (uint32_t)sqlite3_column_int64(st, 4);
    r->k = sqlite3_column_int(st, 5);
    size_t fl = (size_t)sqlite3_column_bytes(st, 7);
    size_t bl = (size_t)sqlite3_column_int64(st, 8);
    if (!days_decode(r, sqlite3_column_blob(st, 6), (size_t)sqlite3_column_bytes(st, 6)) ||
        fl != (size_t)r->chunks * 8 || (r->chunks && !(r->fences = ana_malloc(fl)))) {
      run_free(r);
      ana_error_set(err, ANA_STATUS_INTERNAL, "deduplication: run %lld is malformed",
                    (long long)id);
      rc = ANA_ERR_INTERNAL;
      break;
    }
    if (fl)
      memcpy(r->fences, sqlite3_column_blob(st, 7), fl);
    /* A filter beyond the limit stays on disk: the run is read on every
     * claim until a merge gives it a smaller one. */
    if (bl >= 64 && bl % 64 == 0 && r->k >= 1 && r->k <= 7 &&
        d->filter_bytes + bl <= d->filter_limit && (r->filter = ana_malloc(bl)) &&
        read_filter(w, r, bl)) {
      r->blocks = (uint32_t)(bl / 64);
    } else {
      ana_free(r->filter);
      r->filter = NULL;
      r->k = 0;
    }
    if (!runs_add(d, r)) {
      run_free(r);
      rc = ANA_ERR_NOMEM;
    }
  }
  sqlite3_finalize(st);
  if (rc == ANA_ERR_NOMEM)
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return rc;
}

struct ana_dedupe_runs *ana_dedupe_runs_open(struct ana_local_db *db, sqlite3 *w,
                                             size_t filter_limit, struct ana_error *err) {
  struct ana_dedupe_runs *d = ana_calloc(1, sizeof *d);
  if (!d) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  d->db = db;
  d->filter_limit = filter_limit;
  d->today = INT64_MIN;
  if (!(d->merges = ana_calloc(MAX_LEVELS + 1, sizeof *d->merges))) {
    ana_free(d);
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&d->mu, NULL);
  pthread_mutex_init(&d->step_mu, NULL);
  pthread_cond_init(&d->cond, NULL);
  if (load_runs(d, w, err) < 0)
    goto fail;
  if (!(d->conn = ana_local_db_connect_journal(db, err)))
    goto fail;
  ana_local_db_keep_wal_limit(db, d->conn, true);
  /* A merge lost in a crash is done again (its inputs stay live until its
   * last transaction): its commits need not be synced. */
  sqlite3_exec(d->conn, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
  sqlite3_busy_handler(d->conn, merge_busy, NULL);
  if (pthread_create(&d->thread, NULL, merge_thread, d) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the deduplication merges");
    goto fail;
  }
  d->started = true;
  d->metrics_registered = ana_prom_register(collect, d) == 0;
  return d;
fail:
  ana_dedupe_runs_close(d);
  return NULL;
}

void ana_dedupe_runs_close(struct ana_dedupe_runs *d) {
  if (!d)
    return;
  if (d->metrics_registered)
    ana_prom_unregister(collect, d);
  if (d->started) {
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
  }
  /* A merge cut short: its output is dropped at the next start (state 1),
   * its inputs stay live. */
  for (int i = 0; d->merges && i <= MAX_LEVELS; i++)
    merge_end(&d->merges[i]);
  ana_free(d->merges);
  if (d->conn)
    ana_local_db_keep_wal_limit(d->db, d->conn, false);
  sqlite3_close(d->conn);
  ana_dedupe_runs_discard(d);
  for (size_t i = 0; i < d->n_runs; i++)
    run_free(d->runs[i]);
  ana_free(d->runs);
  ana_free(d->dropped);
  ana_free(d->pk);
  ana_free(d->arena);
  ana_free(d->table);
  pthread_mutex_destroy(&d->mu);
  pthread_mutex_destroy(&d->step_mu);
  pthread_cond_destroy(&d->cond);
  ana_free(d);
}

/* --- the migration from one row per key (schema 24's dedupe_keys) --- */

/* Keys per run the migration writes (its memory: one such run). */
#define MIGRATION_RUN_KEYS 65536

struct mig {
  struct ana_dedupe_runs d; /* seed, ids and the limit (none) only */
  uint8_t *ids;
  size_t ids_len, ids_cap;
  struct pkey *pk;
  size_t n;
};

static int mig_cmp(const void *a, const void *b, void *arg) {
  struct mig *g = arg;
  const struct pkey *x = a, *y = b;
  struct dkey kx = {x->h, x->account, x->day, g->ids + x->off, x->len, x->text};
  struct dkey ky = {y->h, y->account, y->day, g->ids + y->off, y->len, y->text};
  return key_cmp(&kx, &ky);
}

static int mig_write(sqlite3 *conn, struct mig *g) {
  if (g->n == 0)
    return SQLITE_OK;
  qsort_r(g->pk, g->n, sizeof *g->pk, mig_cmp, g);
  int64_t base = g->pk[0].day;
  for (size_t i = 1; i < g->n; i++)
    base = g->pk[i].day < base ? g->pk[i].day : base;
  struct run_writer wr;
  int rc = SQLITE_NOMEM;
  g->d.live_keys = 0;
  g->d.filter_bytes = 0;
  if (writer_init(&g->d, &wr, g->d.next_id++, (int64_t)g->n, base, 0, 0)) {
    rc = sqlite3_prepare_v2(conn, "INSERT INTO dedupe_chunks (id, keys) VALUES (?, ?)", -1, &wr.put,
                            NULL);
    bool wrote;
    for (size_t i = 0; rc == SQLITE_OK && i < g->n; i++) {
      const struct pkey *p = &g->pk[i];
      struct dkey k = {p->h, p->account, p->day, g->ids + p->off, p->len, p->text};
      rc = writer_add(&wr, &k, &wrote);
    }
    rc = writer_finish_live(conn, &wr, rc);
  }
  writer_free(&wr);
  g->n = 0;
  g->ids_len = 0;
  return rc;
}

/* ana_dedupe_runs_from_keys(): writes the keys of dedupe_keys (account,
 * event_id, expires), read in their key order, as runs of at most
 * MIGRATION_RUN_KEYS keys each (sorted in memory one run at a time; the
 * merges join them later). Returns how many keys. */
static void fn_runs_from_keys(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3 *conn = sqlite3_context_db_handle(ctx);
  sqlite3_stmt *st = NULL;
  struct mig g;
  memset(&g, 0, sizeof g);
  g.d.filter_limit = SIZE_MAX;
  g.d.next_id = 1;
  int64_t keys = 0;
  int rc = SQLITE_OK;
  pthread_mutex_init(&g.d.mu, NULL);
  if (sqlite3_prepare_v2(conn, "SELECT seed FROM dedupe_meta WHERE id = 1", -1, &st, NULL) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    sqlite3_result_error(ctx, "deduplication: no seed", -1);
    goto out;
  }
  g.d.seed = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  st = NULL;
  if (!(g.pk = ana_malloc(MIGRATION_RUN_KEYS * sizeof *g.pk)) ||
      sqlite3_prepare_v2(conn,
                         "SELECT account, event_id, expires FROM dedupe_keys"
                         " ORDER BY account, event_id",
                         -1, &st, NULL) != SQLITE_OK) {
    sqlite3_result_error(ctx, g.pk ? sqlite3_errmsg(conn) : "out of memory", -1);
    goto out;
  }
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    bool text = sqlite3_column_type(st, 1) != SQLITE_BLOB;
    const uint8_t *id = text ? sqlite3_column_text(st, 1) : sqlite3_column_blob(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    if (!text && len != ANA_EVENT_ID_PACKED)
      continue; /* no such key is ever written */
    if (!ana_bytes_grow(&g.ids, &g.ids_cap, g.ids_len + len + 1)) {
      rc = SQLITE_NOMEM;
      break;
    }
    if (len)
      memcpy(g.ids + g.ids_len, id, len);
    int64_t account = sqlite3_column_int64(st, 0);
    g.pk[g.n++] = (struct pkey){key_hash(g.d.seed, account, text, g.ids + g.ids_len, len),
                                account,
                                sqlite3_column_int64(st, 2),
                                g.ids_len,
                                (uint32_t)len,
                                text};
    g.ids_len += len;
    keys++;
    if (g.n == MIGRATION_RUN_KEYS && (rc = mig_write(conn, &g)) != SQLITE_OK)
      break;
  }
  if (rc == SQLITE_OK && step != SQLITE_DONE && step != SQLITE_ROW)
    rc = step;
  if (rc == SQLITE_OK)
    rc = mig_write(conn, &g);
  if (rc != SQLITE_OK)
    sqlite3_result_error(ctx, rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(conn), -1);
  else
    sqlite3_result_int64(ctx, keys);
out:
  sqlite3_finalize(st);
  ana_free(g.pk);
  ana_free(g.ids);
  pthread_mutex_destroy(&g.d.mu);
}

/* ana_dedupe_dump(table): inserts every key of the live runs into table
 * (account, event_id as stored, expires: the day), for tests, diagnostics
 * and going back to a layout before. Returns how many. */
static void fn_dump(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  sqlite3 *conn = sqlite3_context_db_handle(ctx);
  const char *table = (const char *)sqlite3_value_text(argv[0]);
  char *sql = table ? sqlite3_mprintf("INSERT INTO %s VALUES (?, ?, ?)", table) : NULL;
  sqlite3_stmt *chunks = NULL, *ins = NULL;
  int64_t n = 0;
  if (!sql || sqlite3_prepare_v2(conn, sql, -1, &ins, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(conn,
                         "SELECT c.keys FROM dedupe_runs r JOIN dedupe_chunks c"
                         " ON c.id >= r.id * 16777216 AND c.id < (r.id + 1) * 16777216"
                         " WHERE r.state = 0 ORDER BY c.id",
                         -1, &chunks, NULL) != SQLITE_OK) {
    sqlite3_result_error(ctx, sql ? sqlite3_errmsg(conn) : "ana_dedupe_dump: no table", -1);
    goto out;
  }
  int step;
  while ((step = sqlite3_step(chunks)) == SQLITE_ROW) {
    const uint8_t *c = sqlite3_column_blob(chunks, 0);
    size_t len = (size_t)sqlite3_column_bytes(chunks, 0), i = 0;
    int64_t base = 0;
    bool bad = false;
    struct dkey k;
    if (!chunk_begin(c, len, &i, &base)) {
      sqlite3_result_error(ctx, "ana_dedupe_dump: a malformed chunk", -1);
      goto out;
    }
    while (chunk_next(c, len, &i, base, &k, &bad)) {
      sqlite3_reset(ins);
      sqlite3_bind_int64(ins, 1, k.account);
      if (k.text)
        sqlite3_bind_text(ins, 2, (const char *)k.id, (int)k.len, SQLITE_TRANSIENT);
      else
        sqlite3_bind_blob(ins, 2, k.id, (int)k.len, SQLITE_TRANSIENT);
      sqlite3_bind_int64(ins, 3, k.day);
      if (sqlite3_step(ins) != SQLITE_DONE) {
        sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
        goto out;
      }
      n++;
    }
    if (bad) {
      sqlite3_result_error(ctx, "ana_dedupe_dump: a malformed chunk", -1);
      goto out;
    }
  }
  if (step != SQLITE_DONE) {
    sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
    goto out;
  }
  sqlite3_result_int64(ctx, n);
out:
  sqlite3_free(sql);
  sqlite3_finalize(chunks);
  sqlite3_finalize(ins);
}

int ana_dedupe_runs_register(sqlite3 *conn) {
  return sqlite3_create_function_v2(conn, "ana_dedupe_runs_from_keys", 0, SQLITE_UTF8, NULL,
                                    fn_runs_from_keys, NULL, NULL, NULL) == SQLITE_OK &&
                 sqlite3_create_function_v2(conn, "ana_dedupe_dump", 1, SQLITE_UTF8, NULL, fn_dump,
                                            NULL, NULL, NULL) == SQLITE_OK
             ? 0
             : ANA_ERR_INTERNAL;
}
