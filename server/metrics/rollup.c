/* Metric rollups: the maintenance thread (backfill, catch-up after a crash
 * and live updates are one loop over the commit sequence; it also keeps the
 * in-memory cache of rollup_cache.c), definitions and versions, and the
 * query path that merges cells. See ana_rollup.h. */
#include "ana_rollup.h"
#include "ana_proto_walk.h"

#include "acc_internal.h"
#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "metric_internal.h"
#include "rollup_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEVELS ANA_ROLLUP_LEVELS
static const int64_t level_ms[LEVELS] = {15 * 60000LL, 3600000LL, 86400000LL};
#define DEFAULT_CHUNK 5000
#define GARBAGE_CHUNK 5000
#define IDLE_WAKE_MS 1000
/* The shortest time between two rounds while commits keep coming. */
#define ROUND_MS 50
/* How long the thread waits for the write lock before giving up (the
 * other connections' busy timeout). */
#define BUSY_MS 10000
/* Cells deleted per transaction for retention: the write lock is shared
 * with the commits of ingestion. */
#define DEFAULT_EXPIRY_CHUNK 2000
#define DEFAULT_SWEEP_MS 60000
#define DAY_MS 86400000LL

/* One metric's current definition and progress. */
struct rmetric {
  struct rmetric *next;
  char *metric_id, *account_id;
  int64_t version;
  uint64_t watermark, backfill_to;
  uint64_t persisted; /* the watermark as stored */
  uint8_t *def;       /* the packed definition: also its fingerprint */
  size_t def_len;
  Analytics__V1__Metric *metric; /* def unpacked */
  struct ana_formula *formula;
  struct ana_metric_query q;
  struct ana_mq *mq;
  bool busy; /* the thread is working on it; free it there when dead */
  bool dead;
};

/* Rows to delete: versions below `below` of a metric (INT64_MAX: all). */
struct garbage {
  struct garbage *next;
  char *metric_id;
  int64_t below;
};

struct ana_rollups {
  struct ana_local_db *db;
  const struct ana_event_store_ops *ops;
  void *store;
  int chunk;
  struct ana_rollup_cells *cells; /* the thread's connection; definitions under mu */
  pthread_mutex_t mu;             /* metrics, garbage; may be held across a short write */
  /* Wake-ups, on their own mutex: the commit hook must never wait for mu. */
  pthread_mutex_t wake_mu;
  pthread_cond_t cond;
  struct rmetric *metrics;
  struct rmetric **todo; /* the thread's, each round */
  struct work *works;    /* todo_cap of them */
  size_t todo_cap;
  struct garbage *garbage;
  bool stop, kick, started;
  /* The thread waits for work (not for the next round's time): only then
   * does a commit need to signal it, rather than wake it on every commit
   * to go back to sleep. */
  bool idle;
  pthread_t thread;
  /* Cells in memory (budget 0: none). Lock order: mu before cache.lock;
   * nothing takes mu while holding cache.lock. */
  struct rc_cache cache;
  bool cache_ready;
  atomic_uint_fast64_t memory_queries, database_queries;
  int64_t retention_ms, sweep_ms; /* 0: cells are kept */
  int expiry_chunk;
  int64_t next_sweep_ms; /* under mu */
  /* For /metrics, without locks: the last commit sequence number seen (the
   * commit hook and the thread raise it), the lowest watermark of the
   * complete metric versions (UINT64_MAX: none) and the cache's bytes, as
   * the thread last saw them. */
  atomic_uint_fast64_t committed, low_watermark, cache_bytes;
  struct ana_prom_counter events_processed, cells_written;
  bool prom_registered;
};

/* Raises *a to at least v. */
static void raise_to(atomic_uint_fast64_t *a, uint64_t v) {
  uint_fast64_t cur = atomic_load_explicit(a, memory_order_relaxed);
  while (cur < v && !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed,
                                                           memory_order_relaxed)) {
  }
}

/* /metrics: how far behind the commits the rollups are, and their work. */
static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_rollups *r = ctx;
  uint64_t committed = atomic_load_explicit(&r->committed, memory_order_relaxed);
  uint64_t low = atomic_load_explicit(&r->low_watermark, memory_order_relaxed);
  ana_prom_write_family(w, "ana_rollup_lag_events", "gauge",
                        "Last commit sequence number minus the lowest watermark of the complete "
                        "metric rollups (0: caught up).");
  ana_prom_write_u64(w, "ana_rollup_lag_events", NULL,
                     low != UINT64_MAX && committed > low ? committed - low : 0);
  ana_prom_write_family(w, "ana_rollup_events_processed_total", "counter",
                        "Committed events read by the rollup thread (once per chunk, whatever "
                        "the number of metrics).");
  ana_prom_write_u64(w, "ana_rollup_events_processed_total", NULL,
                     ana_prom_counter_get(&r->events_processed));
  ana_prom_write_family(w, "ana_rollup_cells_written_total", "counter",
                        "Rollup cells written to the database.");
  ana_prom_write_u64(w, "ana_rollup_cells_written_total", NULL,
                     ana_prom_counter_get(&r->cells_written));
  ana_prom_write_family(w, "ana_rollup_cache_bytes", "gauge",
                        "Memory held by rollup cells kept in memory (ROLLUP_CACHE_MB).");
  ana_prom_write_u64(w, "ana_rollup_cache_bytes", NULL,
                     atomic_load_explicit(&r->cache_bytes, memory_order_relaxed));
}

static void wake(struct ana_rollups *r) {
  pthread_mutex_lock(&r->wake_mu);
  r->kick = true;
  if (r->idle)
    pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->wake_mu);
}

static int64_t floor_to(int64_t t, int64_t size) {
  int64_t q = t / size;
  if (t % size && t < 0)
    q--;
  return q * size;
}

/* ------------------------------------------------------------------ */
/* definitions */

static void rmetric_free(struct rmetric *m) {
  if (!m)
    return;
  ana_mq_destroy(m->mq);
  ana_formula_free(m->formula);
  if (m->metric)
    analytics__v1__metric__free_unpacked(m->metric, NULL);
  ana_free(m->def);
  ana_free(m->metric_id);
  ana_free(m->account_id);
  ana_free(m);
}

/* Builds a metric from its stored definition. */
static struct rmetric *rmetric_new(const char *metric_id, const char *account_id, int64_t version,
                                   const uint8_t *def, size_t def_len, struct ana_error *err) {
  struct rmetric *m = ana_calloc(1, sizeof *m);
  if (!m)
    goto nomem;
  m->metric_id = ana_strdup(metric_id);
  m->account_id = ana_strdup(account_id);
  m->def = ana_malloc(def_len ? def_len : 1);
  if (!m->metric_id || !m->account_id || !m->def)
    goto nomem;
  memcpy(m->def, def, def_len);
  m->def_len = def_len;
  m->version = version;
  m->metric = (void *)ana_proto_unpack(&analytics__v1__metric__descriptor, NULL, def, def_len,
                                       ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (!m->metric) {
    ana_error_set(err, ANA_STATUS_DATA_LOSS, "metric rollups: definition of %s unreadable",
                  metric_id);
    goto fail;
  }
  int pos = 0;
  /* The stored formula is canonical: every name resolved, so no env. */
  m->formula = ana_formula_parse(m->metric->formula, NULL, err, &pos);
  if (!m->formula)
    goto fail;
  m->q.metric = m->metric;
  m->q.formula = m->formula;
  m->q.account_id = m->account_id;
  m->mq = ana_mq_create(&m->q, true, err);
  if (!m->mq)
    goto fail;
  return m;
nomem:
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
  rmetric_free(m);
  return NULL;
}

/* The definition as stored: what the cells depend on (filters, dimensions,
 * type, the formula with every name resolved). Caller frees. */
static uint8_t *pack_definition(const Analytics__V1__Metric *m, const struct ana_formula *f,
                                size_t *len) {
  char *canonical = ana_formula_to_string(f);
  if (!canonical)
    return NULL;
  Analytics__V1__Metric d = ANALYTICS__V1__METRIC__INIT;
  d.metric_id = m->metric_id;
  d.formula = canonical;
  d.type = m->type;
  d.n_filters = m->n_filters;
  d.filters = m->filters;
  d.n_dimensions = m->n_dimensions;
  d.dimensions = m->dimensions;
  *len = protobuf_c_message_get_packed_size(&d.base);
  uint8_t *buf = ana_malloc(*len ? *len : 1);
  if (buf)
    protobuf_c_message_pack(&d.base, buf);
  free(canonical);
  return buf;
}

static struct rmetric **find_metric(struct ana_rollups *r, const char *metric_id) {
  struct rmetric **p = &r->metrics;
  while (*p && strcmp((*p)->metric_id, metric_id) != 0)
    p = &(*p)->next;
  return p;
}

/* Unlinks *p; frees it unless the thread holds it. Under mu. */
static void retire(struct rmetric **p) {
  struct rmetric *m = *p;
  *p = m->next;
  if (m->busy)
    m->dead = true;
  else
    rmetric_free(m);
}

static int add_garbage(struct ana_rollups *r, const char *metric_id, int64_t below) {
  struct garbage *g = ana_calloc(1, sizeof *g);
  if (!g || !(g->metric_id = ana_strdup(metric_id))) {
    ana_free(g);
    return ANA_ERR_NOMEM;
  }
  g->below = below;
  g->next = r->garbage;
  r->garbage = g;
  return 0;
}

int ana_rollup_define(struct ana_rollups *r, const char *account_id,
                      const Analytics__V1__Metric *metric, const struct ana_formula *f,
                      struct ana_error *err) {
  size_t len = 0;
  uint8_t *def = pack_definition(metric, f, &len);
  struct rmetric *m = NULL;
  int rc = 0;
  if (!def)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  pthread_mutex_lock(&r->mu);
  struct rmetric **old = find_metric(r, metric->metric_id);
  if (*old && (*old)->def_len == len && memcmp((*old)->def, def, len) == 0)
    goto out; /* the same definition: its cells stay */
  /* Versions only grow, also across deletions and restarts. */
  int64_t version = ana_clock_wall_ms();
  if (*old && version <= (*old)->version)
    version = (*old)->version + 1;
  uint64_t head = 0;
  if ((rc = r->ops->last_seq(r->store, &head, err)) < 0)
    goto out;
  m = rmetric_new(metric->metric_id, account_id, version, def, len, err);
  if (!m) {
    rc = ANA_ERR_INVALID;
    goto out;
  }
  m->backfill_to = head;
  rc =
      ana_rollup_cells_put_def(r->cells, m->metric_id, m->account_id, version, def, len, head, err);
  if (rc < 0)
    goto out;
  if (*old) {
    /* The old version's cells go once the new one is complete. */
    add_garbage(r, metric->metric_id, version);
    m->next = (*old)->next;
    struct rmetric *prev = *old;
    *old = m;
    if (prev->busy)
      prev->dead = true;
    else
      rmetric_free(prev);
  } else {
    m->next = r->metrics;
    r->metrics = m;
  }
  m = NULL;
  ANA_INFO("rollups", "metric %s: definition version %lld, backfill up to seq %llu",
           metric->metric_id, (long long)version, (unsigned long long)head);
out:
  pthread_mutex_unlock(&r->mu);
  if (rc == 0)
    wake(r);
  rmetric_free(m);
  ana_free(def);
  return rc;
}

int ana_rollup_forget(struct ana_rollups *r, const char *metric_id, struct ana_error *err) {
  int rc = 0;
  pthread_mutex_lock(&r->mu);
  rc = ana_rollup_cells_forget_def(r->cells, metric_id, err);
  if (rc < 0)
    goto out;
  struct rmetric **p = find_metric(r, metric_id);
  if (*p)
    retire(p);
  add_garbage(r, metric_id, INT64_MAX);
out:
  pthread_mutex_unlock(&r->mu);
  if (rc == 0)
    wake(r);
  return rc;
}

void ana_rollup_status(struct ana_rollups *r, const char *metric_id,
                       struct ana_rollup_status *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&r->mu);
  struct rmetric *m = *find_metric(r, metric_id);
  if (m) {
    out->known = true;
    out->version = m->version;
    out->watermark = m->watermark;
    out->backfill_to = m->backfill_to;
    out->complete = m->watermark >= m->backfill_to;
  }
  if (r->cache_ready) {
    pthread_rwlock_rdlock(&r->cache.lock);
    struct rc_set *set = m ? rc_cache_find(&r->cache, m->metric_id, m->version) : NULL;
    for (int l = 0; set && l < LEVELS; l++)
      if (set->levels[l].loaded)
        out->cached_levels |= 1u << l;
    out->cache_bytes = r->cache.bytes;
    pthread_rwlock_unlock(&r->cache.lock);
  }
  pthread_mutex_unlock(&r->mu);
  out->memory_queries = atomic_load(&r->memory_queries);
  out->database_queries = atomic_load(&r->database_queries);
}

/* ------------------------------------------------------------------ */
/* maintenance: one chunk of the commit sequence for the metrics */

struct cell_entry {
  int level;
  int64_t bucket;
  char *key;
  uint64_t hash;
  struct ana_mq_cell *cell;
  size_t enc_off, enc_len; /* maintenance: its merged encoding in work.enc */
};

/* Cells by (level, bucket, group key): a chunk's changes on the thread,
 * and a query's raw events per (bucket index, group key). */
struct chunk {
  const struct ana_mq *mq;
  struct cell_entry *slots;
  size_t cap, len;
  int64_t ts; /* of the event being fed */
  int rc;
  /* Maintenance: the cells of the last event fed, by its group key (an
   * entry's) and 15-minute cell, which fix its hour and day cells: events
   * in commit order mostly fall in the cells of the one before. */
  const char *last_key;
  int64_t last_bucket;
  struct ana_mq_cell *last[LEVELS];
};

static uint64_t key_hash(const char *key) {
  uint64_t h = 1469598103934665603ULL;
  for (; *key; key++)
    h = (h ^ (unsigned char)*key) * 1099511628211ULL;
  return h;
}

/* key_hash(key) mixed with the level and bucket (splitmix64's finaliser):
 * an event's group key is hashed once for its three cells. */
static uint64_t cell_hash(int level, int64_t bucket, uint64_t kh) {
  uint64_t h = kh ^ ((uint64_t)bucket * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)level;
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
  return h ^ (h >> 31);
}

/* The entry of a cell, made on first sight; NULL when out of memory. The
 * entry moves when the table grows, its key and cell do not. */
static struct cell_entry *chunk_cell(struct chunk *c, int level, int64_t bucket, const char *key,
                                     uint64_t kh) {
  if ((c->len + 1) * 2 > c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    struct cell_entry *slots = ana_calloc(cap, sizeof *slots);
    if (!slots)
      return NULL;
    for (size_t i = 0; i < c->cap; i++) {
      if (!c->slots[i].cell)
        continue;
      size_t j = c->slots[i].hash & (cap - 1);
      while (slots[j].cell)
        j = (j + 1) & (cap - 1);
      slots[j] = c->slots[i];
    }
    ana_free(c->slots);
    c->slots = slots;
    c->cap = cap;
  }
  uint64_t h = cell_hash(level, bucket, kh);
  size_t j = h & (c->cap - 1);
  for (; c->slots[j].cell; j = (j + 1) & (c->cap - 1)) {
    struct cell_entry *e = &c->slots[j];
    if (e->hash == h && e->level == level && e->bucket == bucket && strcmp(e->key, key) == 0)
      return e;
  }
  struct cell_entry *e = &c->slots[j];
  e->key = ana_strdup(key);
  e->cell = e->key ? ana_mq_cell_new(c->mq) : NULL;
  if (!e->cell) {
    ana_free(e->key);
    e->key = NULL;
    return NULL;
  }
  e->level = level;
  e->bucket = bucket;
  e->hash = h;
  c->len++;
  return e;
}

static int cells_of(void *ctx, const char *group_key, struct ana_mq_cell **cells, size_t max) {
  struct chunk *c = ctx;
  int64_t bucket = floor_to(c->ts, level_ms[0]);
  if (max < LEVELS)
    return ANA_ERR_INVALID;
  if (c->last_key && c->last_bucket == bucket && strcmp(c->last_key, group_key) == 0) {
    memcpy(cells, c->last, sizeof c->last);
    return LEVELS;
  }
  uint64_t kh = key_hash(group_key);
  c->last_key = NULL;
  const char *stored = NULL;
  for (int l = 0; l < LEVELS; l++) {
    struct cell_entry *e = chunk_cell(c, l, floor_to(c->ts, level_ms[l]), group_key, kh);
    if (!e)
      return ANA_ERR_NOMEM;
    cells[l] = e->cell;
    stored = e->key;
  }
  c->last_key = stored;
  c->last_bucket = bucket;
  memcpy(c->last, cells, sizeof c->last);
  return LEVELS;
}

static void chunk_fini(struct chunk *c) {
  for (size_t i = 0; i < c->cap; i++) {
    ana_mq_cell_free(c->mq, c->slots[i].cell);
    ana_free(c->slots[i].key);
  }
  ana_free(c->slots);
}

/* What becomes of a metric's chunk in a round. */
enum work_state {
  WORK_FAILED, /* an error (logged): nothing moves, the chunk is read again */
  WORK_QUIET,  /* no cells to write: the watermark moves in memory only */
  WORK_WRITE,  /* cells and watermark go to the database */
  WORK_GONE,   /* redefined or deleted meanwhile: its cells belong to nobody */
};

/* One metric's share of a round: the events (lo, hi] of its account, its
 * cells of them, and those merged with the stored cells, encoded. */
struct work {
  struct rmetric *m;
  uint64_t lo, hi;
  struct chunk c;
  enum work_state state;
  struct rc_set *set; /* its cells in memory, or NULL */
  struct rc_changes changes;
  bool changes_lost;
  uint8_t *enc; /* the encodings of c's cells, at their enc_off */
  size_t enc_len, enc_cap;
};

static void work_fini(struct work *w) {
  chunk_fini(&w->c);
  rc_changes_fini(&w->changes);
  ana_free(w->enc);
}

/* By account, then watermark: the metrics that read the same events are
 * next to each other. */
static int work_cmp(const void *a, const void *b) {
  const struct work *x = a, *y = b;
  int c = strcmp(x->m->account_id, y->m->account_id);
  return c ? c : (x->lo > y->lo) - (x->lo < y->lo);
}

/* The metrics of one scan, each event read once for all of them. */
struct scan {
  struct work *works;
  size_t n;
  uint64_t events;
  int rc;
};

static int feed(void *ctx, const struct ana_scanned_event *ev) {
  struct scan *s = ctx;
  /* One row for every metric: the properties are parsed once. */
  struct ana_acc_row row;
  ana_acc_row_init(&row, ev);
  s->events++;
  for (size_t i = 0; i < s->n && s->rc == 0; i++) {
    struct chunk *c = &s->works[i].c;
    c->ts = ev->timestamp_ms;
    s->rc = ana_mq_feed_row((struct ana_mq *)c->mq, &row, cells_of, c);
  }
  ana_acc_row_fini(&row);
  return s->rc < 0;
}

struct merge_ctx {
  const struct ana_mq *mq;
  struct ana_mq_cell *cell;
};

static int merge_one(void *ctx, const void *state, size_t len) {
  struct merge_ctx *c = ctx;
  return ana_mq_cell_merge_encoded(c->mq, c->cell, state, len);
}

/* Merges w's cells into the stored ones and encodes them into w->enc; those
 * of levels in memory are also packed into w->changes. Reads only: the
 * thread is the only writer of cells, so they stay as read until the
 * write. */
static int merge_stored(struct ana_rollups *r, struct work *w, struct ana_error *err) {
  struct rmetric *m = w->m;
  for (size_t i = 0; i < w->c.cap; i++) {
    struct cell_entry *e = &w->c.slots[i];
    if (!e->cell)
      continue;
    struct merge_ctx mc = {m->mq, e->cell};
    int merged = ana_rollup_cells_merge(r->cells, m->metric_id, m->version, e->level, e->bucket,
                                        e->key, merge_one, &mc, err);
    if (merged == ANA_ERR_NOMEM || merged == ANA_ERR_INVALID)
      return merged == ANA_ERR_NOMEM
                 ? ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory")
                 : ana_error_set(err, ANA_STATUS_DATA_LOSS,
                                 "metric rollups: a stored cell is malformed");
    if (merged < 0)
      return merged;
    e->enc_off = w->enc_len;
    if (ana_mq_cell_encode(m->mq, e->cell, &w->enc, &w->enc_len, &w->enc_cap) < 0)
      return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    e->enc_len = w->enc_len - e->enc_off;
    if (w->set && w->set->levels[e->level].loaded && !w->changes_lost &&
        rc_changes_add(&w->changes, m->mq, e->level, e->bucket, e->key, w->enc + e->enc_off,
                       e->enc_len) < 0)
      w->changes_lost = true;
  }
  return 0;
}

/* Writes the cells and watermarks of the works to write, in one
 * transaction: each metric's cells and watermark change together. A metric
 * whose version is no longer the stored one (redefined or deleted since the
 * round began) is left out and marked gone. Returns 0 or a negative error
 * (nothing written). */
static int write_works(struct ana_rollups *r, struct work *w, size_t n, struct ana_error *err) {
  uint64_t cells = 0;
  int rc = 0;
  if ((rc = ana_rollup_cells_begin_write(r->cells, err)) < 0)
    return rc;
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (w[i].state != WORK_WRITE)
      continue;
    struct rmetric *m = w[i].m;
    int marked = ana_rollup_cells_mark(r->cells, m->metric_id, m->version, w[i].hi, err);
    if (marked < 0) {
      rc = marked;
      break;
    }
    if (marked == 0) {
      w[i].state = WORK_GONE;
      continue;
    }
    for (size_t k = 0; k < w[i].c.cap && rc == 0; k++) {
      const struct cell_entry *e = &w[i].c.slots[k];
      if (!e->cell)
        continue;
      rc = ana_rollup_cells_put(r->cells, m->metric_id, m->version, e->level, e->bucket, e->key,
                                w[i].enc + e->enc_off, e->enc_len, err);
      cells++;
    }
  }
  if (rc == 0)
    rc = ana_rollup_cells_commit(r->cells, err);
  if (rc < 0) {
    ana_rollup_cells_rollback(r->cells);
    return rc;
  }
  ana_prom_counter_add(&r->cells_written, cells);
  return 0;
}

/* One chunk for each metric of w (each from its own watermark, up to
 * head): one scan of the commit sequence per account and watermark, each
 * event read once for all the metrics that start there; then every
 * metric's changed cells and watermark in one transaction; then the same
 * cells and watermarks in the cache (one critical section per metric).
 * Returns true when a metric has more to do. */
static bool advance(struct ana_rollups *r, struct work *w, size_t n, uint64_t head) {
  struct ana_error err;
  ana_error_clear(&err);
  bool more = false, reading = false, writing = false;
  qsort(w, n, sizeof *w, work_cmp);
  int rc = ana_rollup_cells_prepare(r->cells, &err);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && w[j].lo == w[i].lo && strcmp(w[j].m->account_id, w[i].m->account_id) == 0)
      j++;
    struct scan s = {.works = &w[i], .n = j - i};
    int sc = rc < 0
                 ? rc
                 : r->ops->scan_seq(r->store, w[i].m->account_id, w[i].lo, w[i].hi, feed, &s, &err);
    if (sc == 0 && s.rc < 0)
      sc = ana_error_set(&err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    ana_prom_counter_add(&r->events_processed, s.events);
    for (size_t k = i; k < j; k++) {
      w[k].state = sc < 0 ? WORK_FAILED : WORK_QUIET;
      if (sc < 0)
        ANA_WARN("rollups", "metric %s: %s", w[k].m->metric_id, err.message);
    }
    i = j;
  }
  for (size_t i = 0; i < n; i++) {
    struct rmetric *m = w[i].m;
    w[i].set = r->cache_ready ? rc_cache_find(&r->cache, m->metric_id, m->version) : NULL;
    /* Nothing of this metric (other names, filtered out): the stored
     * watermark may lag (a restart replays an empty range), but not for
     * long and not at the head, where queries read it. */
    if (w[i].state != WORK_QUIET ||
        (w[i].c.len == 0 && w[i].hi < head && w[i].hi - m->persisted < 50u * (uint64_t)r->chunk))
      continue;
    /* One read transaction for every metric's stored cells. */
    if (!reading)
      reading = ana_rollup_cells_begin_read(r->cells);
    if (merge_stored(r, &w[i], &err) < 0) {
      ANA_WARN("rollups", "metric %s: %s", m->metric_id, err.message);
      w[i].state = WORK_FAILED;
      continue;
    }
    w[i].state = WORK_WRITE;
    writing = true;
  }
  if (reading)
    ana_rollup_cells_end_read(r->cells);
  if (writing && write_works(r, w, n, &err) < 0) {
    ANA_WARN("rollups", "cannot write the rollups of %zu metrics: %s", n, err.message);
    for (size_t i = 0; i < n; i++)
      if (w[i].state == WORK_WRITE)
        w[i].state = WORK_FAILED;
  }
  for (size_t i = 0; i < n; i++) {
    struct work *x = &w[i];
    struct rmetric *m = x->m;
    if (x->state == WORK_QUIET || x->state == WORK_WRITE) {
      if (x->state == WORK_WRITE)
        m->persisted = x->hi;
      if (x->set)
        rc_cache_advance(&r->cache, x->set, x->changes_lost ? NULL : &x->changes, x->hi);
      pthread_mutex_lock(&r->mu);
      m->watermark = x->hi;
      more |= x->hi < head;
      if (x->hi >= m->backfill_to && x->lo < m->backfill_to) {
        ANA_INFO("rollups", "metric %s: version %lld complete", m->metric_id,
                 (long long)m->version);
        /* The backfill may have read events retention had not deleted
         * yet: their cells go now. */
        r->next_sweep_ms = 0;
      }
      pthread_mutex_unlock(&r->mu);
    }
    work_fini(x);
  }
  return more;
}

/* Deletes one chunk of garbage whose time has come; true when some is left. */
static bool collect_garbage(struct ana_rollups *r) {
  pthread_mutex_lock(&r->mu);
  struct garbage **p = &r->garbage, *g = NULL;
  for (; *p; p = &(*p)->next) {
    struct rmetric *m = *find_metric(r, (*p)->metric_id);
    /* An old version waits until the new one is complete. */
    if ((*p)->below == INT64_MAX || !m || m->watermark >= m->backfill_to) {
      g = *p;
      break;
    }
  }
  bool left = r->garbage != NULL;
  if (g)
    *p = g->next;
  pthread_mutex_unlock(&r->mu);
  if (!g)
    return false;
  int changes = ana_rollup_cells_drop_versions(r->cells, g->metric_id, g->below, GARBAGE_CHUNK);
  pthread_mutex_lock(&r->mu);
  if (changes > 0) {
    g->next = r->garbage; /* more may be left: come back */
    r->garbage = g;
    g = NULL;
  }
  pthread_mutex_unlock(&r->mu);
  if (g) {
    ana_free(g->metric_id);
    ana_free(g);
  }
  return left;
}

/* ------------------------------------------------------------------ */
/* retention */

/* Deletes cells whose whole span ends at or before now - retention (only
 * events retention deletes are in them), one chunk per call, and drops
 * them from memory. The metrics are held busy. Returns true when more is
 * left (come back soon). */
static bool expire_cells(struct ana_rollups *r, struct rmetric **todo, size_t n) {
  if (!r->retention_ms)
    return false;
  int64_t now = ana_clock_wall_ms();
  pthread_mutex_lock(&r->mu);
  bool due = now >= r->next_sweep_ms;
  pthread_mutex_unlock(&r->mu);
  if (!due)
    return false;
  int64_t cutoff = now - r->retention_ms;
  for (size_t i = 0; i < n; i++) {
    struct rmetric *m = todo[i];
    for (int l = 0; l < LEVELS; l++) {
      /* the last cell start whose span ends by the cut-off */
      int64_t last = floor_to(cutoff - level_ms[l], level_ms[l]);
      struct ana_error err;
      int deleted = ana_rollup_cells_expire(r->cells, m->metric_id, m->version, l, last,
                                            r->expiry_chunk, &err);
      if (deleted < 0) {
        ANA_WARN("rollups", "metric %s: %s", m->metric_id, err.message);
        goto done;
      }
      struct rc_set *set =
          r->cache_ready ? rc_cache_find(&r->cache, m->metric_id, m->version) : NULL;
      if (set)
        rc_cache_expire(&r->cache, set, l, last);
      if (deleted == r->expiry_chunk)
        return true;
    }
  }
done:
  pthread_mutex_lock(&r->mu);
  r->next_sweep_ms = now + r->sweep_ms;
  pthread_mutex_unlock(&r->mu);
  return false;
}

/* ------------------------------------------------------------------ */
/* the cache, on the thread */

/* Reads every cell of level l into set (m's version, at the thread's
 * watermark: the thread is the only writer of these cells) within limit
 * bytes. Returns 0, 1 when over the limit (the level stays empty), or a
 * negative error (logged). */
static int load_level(struct ana_rollups *r, struct rmetric *m, struct rc_set *set, int l,
                      size_t limit) {
  struct ana_error err;
  int rc = rc_set_read(set, ana_rollup_cells_reader(r->cells), m->mq, l, INT64_MIN, INT64_MAX,
                       limit, &err);
  if (rc != 0)
    rc_level_clear(&set->levels[l]);
  if (rc < 0)
    ANA_WARN("rollups", "metric %s: cannot load its cells into memory: %s", m->metric_id,
             err.message);
  if (rc == 0) {
    set->levels[l].loaded = true;
    atomic_store(&set->levels[l].used, ana_clock_wall_ms());
  }
  return rc;
}

/* A metric version that becomes complete (or is found complete at
 * start-up) gets its set with the levels that fit in what is left of the
 * budget, coarsest first, before queries see it: the first query finds
 * them in memory. Later, the levels queries missed (evicted, or not
 * fitting then) are loaded, evicting the least recently read ones. m is
 * held busy. */
static void tend_cache(struct ana_rollups *r, struct rmetric *m) {
  if (m->watermark < m->backfill_to)
    return;
  struct rc_set *set = rc_cache_find(&r->cache, m->metric_id, m->version);
  if (!set) {
    if (!(set = rc_set_new(m->metric_id, m->version)))
      return;
    set->watermark = m->watermark;
    for (int l = LEVELS - 1; l >= 0; l--) {
      /* Each level read apart: one that does not fit leaves nothing, and
       * the finer ones, larger, are not tried. */
      size_t held = r->cache.bytes + rc_set_bytes(set);
      struct rc_set *tmp = held < r->cache.budget ? rc_set_new(m->metric_id, m->version) : NULL;
      if (!tmp || load_level(r, m, tmp, l, r->cache.budget - held) != 0) {
        rc_set_free(tmp);
        break;
      }
      rc_set_take(set, l, tmp);
    }
    rc_cache_publish(&r->cache, set);
    return;
  }
  for (int l = 0; l < LEVELS; l++) {
    struct rc_level *lv = &set->levels[l];
    if (!atomic_exchange(&lv->wanted, false) || lv->loaded || lv->refused)
      continue;
    struct rc_set *tmp = rc_set_new(m->metric_id, m->version);
    int rc = tmp ? load_level(r, m, tmp, l, r->cache.budget) : ANA_ERR_NOMEM;
    if (rc == 0) {
      rc_cache_install(&r->cache, set, l, tmp);
      continue;
    }
    rc_set_free(tmp);
    if (rc == 1) {
      pthread_rwlock_wrlock(&r->cache.lock);
      lv->refused = true;
      pthread_rwlock_unlock(&r->cache.lock);
      if (!r->cache.warned)
        ANA_WARN("rollups",
                 "metric %s: its %lld-minute cells exceed ROLLUP_CACHE_MB; they are "
                 "read from the database",
                 m->metric_id, (long long)(level_ms[l] / 60000));
      r->cache.warned = true;
    }
  }
}

/* Drops the sets of versions that are no longer current. */
static void prune_cache(struct ana_rollups *r) {
  for (;;) {
    struct rc_set *stale = NULL;
    pthread_mutex_lock(&r->mu);
    for (struct rc_set *s = r->cache.sets; s && !stale; s = s->next) {
      struct rmetric *m = *find_metric(r, s->metric_id);
      if (!m || m->version != s->version)
        stale = s;
    }
    pthread_mutex_unlock(&r->mu);
    if (!stale)
      return;
    rc_cache_remove(&r->cache, stale);
  }
}

/* Whether a query's request for cells is waiting, or a complete metric has
 * no set yet. Under mu. */
static bool cache_pending(struct ana_rollups *r) {
  if (!r->cache_ready)
    return false;
  bool pending = false;
  pthread_rwlock_rdlock(&r->cache.lock);
  for (struct rmetric *m = r->metrics; m && !pending; m = m->next) {
    if (m->watermark < m->backfill_to)
      continue;
    struct rc_set *set = rc_cache_find(&r->cache, m->metric_id, m->version);
    pending = !set;
    for (int l = 0; set && l < LEVELS; l++)
      pending |=
          atomic_load(&set->levels[l].wanted) && !set->levels[l].loaded && !set->levels[l].refused;
  }
  pthread_rwlock_unlock(&r->cache.lock);
  return pending;
}

/* Publishes the progress /metrics reports. On the thread (the only writer
 * of watermarks and of the cache), or before it starts. */
static void publish_progress(struct ana_rollups *r) {
  uint64_t low = UINT64_MAX;
  pthread_mutex_lock(&r->mu);
  for (struct rmetric *m = r->metrics; m; m = m->next)
    if (m->watermark >= m->backfill_to && m->watermark < low)
      low = m->watermark;
  pthread_mutex_unlock(&r->mu);
  atomic_store_explicit(&r->low_watermark, low, memory_order_relaxed);
  atomic_store_explicit(&r->cache_bytes, r->cache.bytes, memory_order_relaxed);
}

/* The thread's busy handler. Under load the committer holds the write lock
 * nearly all the time and SQLite's default handler sleeps 1, 2, 5 ... 100
 * ms between tries: the thread would find it free only by chance, and lag.
 * The commit hook signals each commit, that is a moment the lock was just
 * released: the next try follows it at once (or a millisecond later). */
static int busy_wait(void *ctx, int count) {
  struct ana_rollups *r = ctx;
  if (count >= BUSY_MS)
    return 0;
  pthread_mutex_lock(&r->wake_mu);
  struct timespec ts = ana_deadline_in_ms(1);
  pthread_cond_timedwait(&r->cond, &r->wake_mu, &ts);
  pthread_mutex_unlock(&r->wake_mu);
  return 1;
}

static void *rollup_thread(void *arg) {
  struct ana_rollups *r = arg;
  bool more = true;
  int64_t last_round = 0;
  for (;;) {
    pthread_mutex_lock(&r->wake_mu);
    if (!more && !r->kick && !r->stop) {
      struct timespec ts = ana_deadline_in_ms(IDLE_WAKE_MS);
      r->idle = true;
      pthread_cond_timedwait(&r->cond, &r->wake_mu, &ts);
      r->idle = false;
    }
    /* Following a stream of commits, a round at most every ROUND_MS: each
     * round's write is one the commits wait for, so it had better carry
     * many events. A commit after a quiet spell is taken at once. */
    int64_t wait = last_round + ROUND_MS - ana_clock_mono_ms();
    if (!more && !r->stop && wait > 0) {
      struct timespec ts = ana_deadline_in_ms(wait > ROUND_MS ? ROUND_MS : wait);
      while (!r->stop && pthread_cond_timedwait(&r->cond, &r->wake_mu, &ts) == 0) {
      }
    }
    last_round = ana_clock_mono_ms();
    r->kick = false;
    bool stop = r->stop;
    pthread_mutex_unlock(&r->wake_mu);
    if (stop)
      break;
    struct ana_error err;
    ana_error_clear(&err);
    uint64_t head = 0;
    more = false;
    if (r->ops->last_seq(r->store, &head, &err) < 0) {
      ANA_WARN("rollups", "cannot read the commit sequence: %s", err.message);
      continue;
    }
    raise_to(&r->committed, head);
    /* Every metric, held: those behind get one chunk each per round (the
     * metrics of an account at the same watermark share its reading), so a
     * backfill never holds up the live updates of the others; the complete
     * ones get their cells loaded into memory when queries asked. */
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    for (struct rmetric *m = r->metrics; m; m = m->next)
      n++;
    if (n > r->todo_cap) {
      /* kept across rounds: an idle round allocates nothing */
      struct rmetric **t = ana_realloc(r->todo, n * sizeof *t);
      if (t)
        r->todo = t;
      struct work *w = t ? ana_realloc(r->works, n * sizeof *w) : NULL;
      if (w) {
        r->works = w;
        r->todo_cap = n;
      }
    }
    struct rmetric **todo = r->todo;
    n = 0;
    for (struct rmetric *m = r->metrics; m && n < r->todo_cap; m = m->next) {
      m->busy = true;
      todo[n++] = m;
    }
    size_t n_works = 0;
    for (size_t i = 0; i < n; i++) {
      struct rmetric *m = todo[i];
      if (m->dead || m->watermark >= head)
        continue;
      uint64_t lo = m->watermark; /* written by this thread only */
      uint64_t hi = head - lo > (uint64_t)r->chunk ? lo + (uint64_t)r->chunk : head;
      r->works[n_works++] = (struct work){.m = m, .lo = lo, .hi = hi, .c = {.mq = m->mq}};
    }
    pthread_mutex_unlock(&r->mu);
    if (n_works && advance(r, r->works, n_works, head))
      more = true;
    for (size_t i = 0; i < n; i++) {
      pthread_mutex_lock(&r->mu);
      bool dead = todo[i]->dead;
      pthread_mutex_unlock(&r->mu);
      if (!dead && r->cache_ready)
        tend_cache(r, todo[i]);
    }
    if (expire_cells(r, todo, n))
      more = true;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++) {
      todo[i]->busy = false;
      if (todo[i]->dead)
        rmetric_free(todo[i]);
    }
    pthread_mutex_unlock(&r->mu);
    if (r->cache_ready)
      prune_cache(r);
    if (collect_garbage(r))
      more = true;
    publish_progress(r);
  }
  return NULL;
}

void ana_rollup_on_commit(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_rollups *r = ctx;
  uint64_t last = 0;
  for (size_t i = 0; i < n; i++)
    if (!records[i].duplicate && records[i].seq > last)
      last = records[i].seq;
  raise_to(&r->committed, last);
  wake(r);
}

bool ana_rollup_wait_idle(struct ana_rollups *r, int timeout_ms) {
  int64_t deadline = ana_clock_wall_ms() + timeout_ms;
  for (;;) {
    struct ana_error err;
    uint64_t head = 0;
    if (r->ops->last_seq(r->store, &head, &err) < 0)
      return false;
    bool behind = false;
    pthread_mutex_lock(&r->mu);
    for (struct rmetric *m = r->metrics; m; m = m->next)
      behind |= m->watermark < head;
    behind |= r->garbage != NULL;
    behind |= r->retention_ms && ana_clock_wall_ms() >= r->next_sweep_ms;
    behind |= cache_pending(r);
    pthread_mutex_unlock(&r->mu);
    if (!behind)
      return true;
    if (ana_clock_wall_ms() > deadline)
      return false;
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
  }
}

/* ------------------------------------------------------------------ */
/* life cycle */

static void load_def(void *ctx, const struct ana_rollup_def *d) {
  struct ana_rollups *r = ctx;
  struct ana_error merr;
  struct rmetric *m = rmetric_new(d->metric_id, d->account_id, d->version, d->def, d->len, &merr);
  if (!m) {
    ANA_WARN("rollups", "metric %s: %s; answered from raw events", d->metric_id, merr.message);
    return;
  }
  m->watermark = m->persisted = d->watermark;
  m->backfill_to = d->backfill_to;
  m->next = r->metrics;
  r->metrics = m;
}

/* Loads the definitions, and queues as garbage every stored version that
 * is not a current one (a deletion cut short by a crash). */
static int load(struct ana_rollups *r, struct ana_error *err) {
  int rc = ana_rollup_cells_each_def(r->cells, load_def, r, err);
  if (rc < 0)
    return rc;
  char last[256] = "";
  int64_t last_version = INT64_MAX;
  for (;;) {
    int found = ana_rollup_cells_next_version(r->cells, last, last_version, last, sizeof last,
                                              &last_version, err);
    if (found < 0)
      return found;
    if (found == 0)
      break;
    struct rmetric *m = *find_metric(r, last);
    if (!m || m->version != last_version)
      rc = add_garbage(r, last, m && last_version < m->version ? m->version : INT64_MAX);
    if (!m || last_version >= m->version)
      last_version = INT64_MAX; /* no later version of this metric matters */
  }
  return rc;
}

struct ana_rollups *ana_rollup_create(struct ana_local_db *db,
                                      const struct ana_event_store_ops *ops, void *store,
                                      const struct ana_rollup_options *o, struct ana_error *err) {
  struct ana_rollups *r = ana_calloc(1, sizeof *r);
  if (!r) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  r->db = db;
  r->ops = ops;
  r->store = store;
  r->chunk = o && o->chunk_events > 0 ? o->chunk_events : DEFAULT_CHUNK;
  int64_t budget = o && o->cache_bytes ? o->cache_bytes : ANA_ROLLUP_CACHE_DEFAULT_MB << 20;
  if (rc_cache_init(&r->cache, budget > 0 ? (size_t)budget : 0) < 0) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    ana_free(r);
    return NULL;
  }
  r->cache_ready = r->cache.budget > 0;
  if (o && o->retention_days > 0) {
    r->retention_ms = o->retention_days * DAY_MS;
    r->sweep_ms = o->sweep_interval_ms > 0 ? o->sweep_interval_ms : DEFAULT_SWEEP_MS;
    r->expiry_chunk = o->expiry_chunk > 0 ? o->expiry_chunk : DEFAULT_EXPIRY_CHUNK;
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->wake_mu, NULL);
  pthread_cond_init(&r->cond, NULL);
  if (!ops->scan_seq || !ops->last_seq) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                  "metric rollups: the event store %s cannot scan by commit sequence", ops->name);
    goto fail;
  }
  /* (the thread's commits are not synced: see rollup_cells.c) */
  if (!(r->cells = ana_rollup_cells_open(db, busy_wait, r, err)))
    goto fail;
  if (load(r, err) < 0)
    goto fail;
  uint64_t head = 0;
  if (ops->last_seq(store, &head, err) < 0)
    goto fail;
  atomic_init(&r->committed, head);
  publish_progress(r);
  if (pthread_create(&r->thread, NULL, rollup_thread, r) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the rollup thread");
    goto fail;
  }
  r->started = true;
  r->prom_registered = ana_prom_register(collect, r) == 0;
  return r;
fail:
  ana_rollup_destroy(r);
  return NULL;
}

void ana_rollup_destroy(struct ana_rollups *r) {
  if (!r)
    return;
  if (r->prom_registered)
    ana_prom_unregister(collect, r);
  if (r->started) {
    pthread_mutex_lock(&r->wake_mu);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->wake_mu);
    pthread_join(r->thread, NULL);
  }
  while (r->metrics)
    retire(&r->metrics);
  while (r->garbage) {
    struct garbage *g = r->garbage;
    r->garbage = g->next;
    ana_free(g->metric_id);
    ana_free(g);
  }
  rc_cache_fini(&r->cache);
  ana_free(r->todo);
  ana_free(r->works);
  ana_rollup_cells_close(r->cells);
  pthread_mutex_destroy(&r->mu);
  pthread_mutex_destroy(&r->wake_mu);
  pthread_cond_destroy(&r->cond);
  ana_free(r);
}

/* ------------------------------------------------------------------ */
/* queries */

/* A piece of the query's time line: read from cells of a level, or from
 * raw events (level -1). */
struct span {
  int64_t lo, hi;
  int level;
};

struct plan {
  struct span *spans;
  size_t n, cap;
};

static int plan_push(struct plan *p, int level, int64_t lo, int64_t hi) {
  if (lo >= hi)
    return 0;
  if (p->n && p->spans[p->n - 1].level == level && p->spans[p->n - 1].hi == lo) {
    p->spans[p->n - 1].hi = hi;
    return 0;
  }
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 64;
    struct span *s = ana_realloc(p->spans, cap * sizeof *s);
    if (!s)
      return ANA_ERR_NOMEM;
    p->spans = s;
    p->cap = cap;
  }
  p->spans[p->n++] = (struct span){lo, hi, level};
  return 0;
}

/* [a, b) is inside one query bucket (or the previous period): the coarsest
 * cells that fit, raw events for the unaligned ends. */
static int plan_range(struct plan *p, int64_t a, int64_t b) {
  int64_t lo = floor_to(a + level_ms[0] - 1, level_ms[0]);
  int64_t hi = floor_to(b, level_ms[0]);
  if (lo >= hi)
    return plan_push(p, -1, a, b);
  int rc = plan_push(p, -1, a, lo);
  for (int64_t t = lo; t < hi && rc == 0;) {
    int l = LEVELS - 1;
    while (l > 0 && (floor_to(t, level_ms[l]) != t || t + level_ms[l] > hi))
      l--;
    rc = plan_push(p, l, t, t + level_ms[l]);
    t += level_ms[l];
  }
  return rc ? rc : plan_push(p, -1, hi, b);
}

/* The levels a plan reads cells of, a bit each. */
static unsigned plan_levels(const struct plan *p) {
  unsigned levels = 0;
  for (size_t i = 0; i < p->n; i++)
    if (p->spans[i].level >= 0)
      levels |= 1u << p->spans[i].level;
  return levels;
}

/* Whether two plans read raw events for the same pieces. */
static bool same_raw_spans(const struct plan *a, const struct plan *b) {
  size_t i = 0, j = 0;
  for (;;) {
    while (i < a->n && a->spans[i].level >= 0)
      i++;
    while (j < b->n && b->spans[j].level >= 0)
      j++;
    if (i == a->n || j == b->n)
      return i == a->n && j == b->n;
    if (a->spans[i].lo != b->spans[j].lo || a->spans[i].hi != b->spans[j].hi)
      return false;
    i++;
    j++;
  }
}

/* Raw events gathered by (bucket index, group key) into cells, so that they
 * can be added in both parts of the query like stored cells. Bucket -1 is
 * the previous period. */
struct raw_cells {
  struct chunk c;
  const struct plan *plan;
  const int64_t *starts;
  size_t n_buckets;
  int64_t from, to;
};

static int raw_cells_of(void *ctx, const char *group_key, struct ana_mq_cell **cells, size_t max) {
  struct raw_cells *rc = ctx;
  int64_t ts = rc->c.ts;
  int64_t b = -1;
  if (ts >= rc->from) {
    size_t i = ana_bucket_index(rc->starts, rc->n_buckets, rc->to, ts);
    if (i >= rc->n_buckets)
      return 0;
    b = (int64_t)i;
  }
  if (max < 1)
    return 0;
  struct cell_entry *e = chunk_cell(&rc->c, 0, b, group_key, key_hash(group_key));
  return e ? (cells[0] = e->cell, 1) : ANA_ERR_NOMEM;
}

static int add_raw(void *ctx, const struct ana_scanned_event *ev) {
  struct raw_cells *rc = ctx;
  rc->c.ts = ev->timestamp_ms;
  rc->c.rc = ana_mq_feed_cells((struct ana_mq *)rc->c.mq, ev, raw_cells_of, rc);
  return rc->c.rc < 0;
}

/* An event committed after the watermark counts where cells answer (raw
 * spans were scanned whole). */
static int add_tail(void *ctx, const struct ana_scanned_event *ev) {
  struct raw_cells *rc = ctx;
  const struct plan *p = rc->plan;
  size_t lo = 0, hi = p->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (p->spans[mid].hi <= ev->timestamp_ms)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < p->n && p->spans[lo].lo <= ev->timestamp_ms && p->spans[lo].level >= 0)
    return add_raw(ctx, ev);
  return 0;
}

/* A group the query's dimensionFilter leaves out, in the group map. */
static const char filtered_mark;
#define FILTERED ((struct ana_mq_group *)(void *)&filtered_mark)

/* The bucket of a cell starting at start (in the plan's spans). */
static size_t cell_bucket(const struct ana_metric_query *q, const int64_t *starts, size_t nb,
                          int64_t start) {
  return start < q->from_ms ? ANA_MQ_PREVIOUS : ana_bucket_index(starts, nb, q->to_ms, start);
}

/* Adds the cells of set in the plan's spans to one part of the query.
 * gmap (one slot per key of set, zeroed at first) maps the set's groups to
 * the query's. Returns 0 or a negative error (in mq). */
static int add_set(struct ana_mq *mq, const struct rc_set *set, struct ana_mq_group **gmap,
                   const struct plan *plan, const struct ana_metric_query *q, const int64_t *starts,
                   size_t nb, enum ana_mq_part part) {
  for (size_t i = 0; i < plan->n; i++) {
    const struct span *sp = &plan->spans[i];
    if (sp->level < 0 || (part == ANA_MQ_BUCKETS && sp->hi <= q->from_ms))
      continue;
    const struct rc_level *lv = &set->levels[sp->level];
    for (size_t k = rc_level_seek(lv, sp->lo); k < lv->n && lv->buckets[k].start < sp->hi; k++) {
      const struct rc_bucket *bk = &lv->buckets[k];
      /* A merged span may cover several buckets; a cell lies in one. */
      size_t b = cell_bucket(q, starts, nb, bk->start);
      for (size_t o = 0; o < bk->len;) {
        struct rc_record h;
        memcpy(&h, bk->cells + o, sizeof h);
        const uint8_t *packed = bk->cells + o + sizeof h;
        o += rc_record_size(h.len);
        struct ana_mq_group *g = gmap[h.group];
        int rc;
        if (!g) {
          if ((rc = ana_mq_group(mq, set->keys.keys[h.group], &g)) < 0)
            return rc;
          gmap[h.group] = g = g ? g : FILTERED;
        }
        if (g != FILTERED && (rc = ana_mq_add_packed(mq, g, b, part, packed, h.len)) < 0)
          return rc;
      }
    }
  }
  return 0;
}

/* The most bytes of flat bucket accumulators (shown groups x buckets) a
 * query uses; beyond (a top N in the thousands) cells go one by one. */
#define FLAT_MAX_BYTES (64u << 20)

/* add_set for cells of one size (ana_mq_packed_fixed): merged first into
 * flat accumulators, one per (group index of the set, total or previous)
 * and one per (group shown or "other", bucket), then each added to the
 * query once. Most of a query's time is here: no group lookup and no
 * accumulator structure per cell. Returns 1 when the accumulators would be
 * too large (nothing added: use add_set), else as add_set. */
static int add_set_flat(struct ana_mq *mq, const struct rc_set *set, struct ana_mq_group **gmap,
                        const struct plan *plan, const struct ana_metric_query *q,
                        const int64_t *starts, size_t nb, enum ana_mq_part part, size_t size,
                        bool additive) {
  size_t n_slots = size / sizeof(double), n_keys = set->keys.n;
  double *acc = NULL;
  uint8_t *seen = NULL;
  int32_t *target = NULL;
  struct ana_mq_group **rep = NULL;
  size_t n_acc = 0, n_targets = 0;
  int rc = 0;
  if (part == ANA_MQ_TOTALS) {
    n_acc = 2 * n_keys; /* [group][total, previous] */
  } else {
    /* Shown groups get their own accumulators, folded ones share one. */
    target = ana_malloc((n_keys ? n_keys : 1) * sizeof *target);
    rep = ana_calloc(n_keys + 1, sizeof *rep);
    if (!target || !rep)
      goto nomem;
    struct ana_mq_group *other = NULL;
    for (size_t i = 0; i < n_keys; i++) {
      struct ana_mq_group *g = gmap[i];
      target[i] = -1;
      if (!g || g == FILTERED)
        continue;
      if (ana_mq_group_folded(g)) {
        other = g;
        target[i] = -2;
      } else {
        rep[n_targets] = g;
        target[i] = (int32_t)n_targets++;
      }
    }
    for (size_t i = 0; other && i < n_keys; i++)
      if (target[i] == -2)
        target[i] = (int32_t)n_targets;
    if (other)
      rep[n_targets++] = other;
    if (n_targets * nb * size > FLAT_MAX_BYTES) {
      rc = 1;
      goto out;
    }
    n_acc = n_targets * nb;
  }
  acc = ana_calloc((n_acc ? n_acc : 1) * n_slots, sizeof *acc);
  seen = ana_calloc(n_acc ? n_acc : 1, 1);
  if (!acc || !seen)
    goto nomem;
  for (size_t i = 0; i < plan->n; i++) {
    const struct span *sp = &plan->spans[i];
    if (sp->level < 0 || (part == ANA_MQ_BUCKETS && sp->hi <= q->from_ms))
      continue;
    const struct rc_level *lv = &set->levels[sp->level];
    for (size_t k = rc_level_seek(lv, sp->lo); k < lv->n && lv->buckets[k].start < sp->hi; k++) {
      const struct rc_bucket *bk = &lv->buckets[k];
      size_t b = cell_bucket(q, starts, nb, bk->start);
      if (part == ANA_MQ_BUCKETS && b >= nb)
        continue;
      for (size_t o = 0; o < bk->len;) {
        struct rc_record h;
        memcpy(&h, bk->cells + o, sizeof h);
        const uint8_t *packed = bk->cells + o + sizeof h;
        o += rc_record_size(h.len);
        size_t a;
        if (part == ANA_MQ_TOTALS) {
          a = 2 * (size_t)h.group + (b == ANA_MQ_PREVIOUS);
        } else {
          if (target[h.group] < 0)
            continue;
          a = (size_t)target[h.group] * nb + b;
        }
        double *into = &acc[a * n_slots];
        if (additive) {
          for (size_t j = 0; j < n_slots; j++) {
            double v;
            memcpy(&v, packed + j * sizeof v, sizeof v);
            into[j] += v;
          }
        } else {
          ana_mq_packed_merge(mq, into, packed);
        }
        seen[a] = 1;
      }
    }
  }
  for (size_t a = 0; a < n_acc && rc == 0; a++) {
    if (!seen[a])
      continue;
    const uint8_t *packed = (const uint8_t *)&acc[a * n_slots];
    if (part == ANA_MQ_BUCKETS) {
      rc = ana_mq_add_packed(mq, rep[a / nb], a % nb, part, packed, size);
      continue;
    }
    struct ana_mq_group **g = &gmap[a / 2];
    if (!*g) {
      if ((rc = ana_mq_group(mq, set->keys.keys[a / 2], g)) < 0)
        break;
      if (!*g)
        *g = FILTERED;
    }
    if (*g != FILTERED)
      rc = ana_mq_add_packed(mq, *g, a % 2 ? ANA_MQ_PREVIOUS : 0, part, packed, size);
  }
  goto out;
nomem:
  rc = ana_mq_nomem(mq);
out:
  ana_free(acc);
  ana_free(seen);
  ana_free(target);
  ana_free(rep);
  return rc;
}

/* Adds the gathered raw events to one part of the query. */
static int add_raw_cells(struct ana_mq *mq, const struct raw_cells *raw, enum ana_mq_part part) {
  for (size_t i = 0; i < raw->c.cap; i++) {
    const struct cell_entry *e = &raw->c.slots[i];
    if (!e->cell || (part == ANA_MQ_BUCKETS && e->bucket < 0))
      continue;
    struct ana_mq_group *g;
    int rc = ana_mq_group(mq, e->key, &g);
    if (rc == 0 && g)
      rc = ana_mq_add_cell(mq, g, e->bucket < 0 ? ANA_MQ_PREVIOUS : (size_t)e->bucket, part,
                           e->cell);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Reads the cells of the plan's spans and their watermark from one snapshot
 * of the database into *out (caller frees). Returns 1, 0 when the version
 * is gone or incomplete (redefined or deleted since), or a negative error. */
static int read_cells(struct ana_rollups *r, const char *metric_id, int64_t version,
                      const struct plan *plan, const struct ana_mq *mq, struct rc_set **out,
                      uint64_t *watermark, struct ana_error *err) {
  struct ana_local_reader *reader = ana_local_snapshot_begin(r->db, err);
  struct rc_set *set = NULL;
  uint64_t mark = 0, backfill_to = 0;
  int rc = 0;
  if (!reader)
    return ANA_ERR_IO;
  rc = ana_rollup_cells_version(reader, metric_id, version, &mark, &backfill_to, err);
  if (rc <= 0 || (int64_t)mark < (int64_t)backfill_to) {
    rc = rc < 0 ? rc : 0;
    goto done; /* redefined or deleted since */
  }
  rc = 0;
  *watermark = mark;
  if (!(set = rc_set_new(metric_id, version))) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < plan->n && rc == 0; i++)
    if (plan->spans[i].level >= 0)
      rc = rc_set_read(set, reader, mq, plan->spans[i].level, plan->spans[i].lo, plan->spans[i].hi,
                       SIZE_MAX, err);
  if (rc == 0)
    rc = 1;
done:
  ana_local_snapshot_end(r->db, reader);
  if (rc == 1)
    *out = set;
  else
    rc_set_free(set);
  return rc;
}

int ana_rollup_query(struct ana_rollups *r, const struct ana_metric_query *q,
                     struct ana_arena *arena, Analytics__V1__MetricData *out,
                     struct ana_error *err) {
  size_t def_len = 0;
  uint8_t *def = pack_definition(q->metric, q->formula, &def_len);
  struct ana_formula *f = NULL;
  struct ana_mq *mq = NULL;
  struct plan plan = {0}, tplan = {0};
  struct raw_cells raw = {0};
  struct rc_set *own = NULL;
  const struct rc_set *set = NULL;
  struct ana_mq_group **gmap = NULL;
  bool locked = false;
  int rc = 0;
  if (!def)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  pthread_mutex_lock(&r->mu);
  struct rmetric *m = *find_metric(r, q->metric->metric_id);
  bool usable = m && m->def_len == def_len && memcmp(m->def, def, def_len) == 0 &&
                m->watermark >= m->backfill_to;
  int64_t version = usable ? m->version : 0;
  /* The cells' terms are those of the canonical formula, in its order. */
  const char *canonical = usable ? m->metric->formula : NULL;
  int pos;
  if (usable && !(f = ana_formula_parse(canonical, NULL, err, &pos)))
    rc = ANA_ERR_INVALID;
  pthread_mutex_unlock(&r->mu);
  if (!usable || rc < 0)
    goto out;
  struct ana_metric_query cq = *q;
  cq.formula = f;
  if (!(mq = ana_mq_create(&cq, true, err))) {
    rc = ANA_ERR_INVALID;
    goto out;
  }
  /* The plan: the previous period, then each bucket clipped to [from, to). */
  size_t nb = 0;
  const int64_t *starts = ana_mq_bucket_starts(mq, &nb);
  rc = plan_range(&plan, q->from_ms - (q->to_ms - q->from_ms), q->from_ms);
  for (size_t b = 0; b < nb && rc == 0; b++) {
    int64_t a = starts[b] > q->from_ms ? starts[b] : q->from_ms;
    int64_t e = b + 1 < nb && starts[b + 1] < q->to_ms ? starts[b + 1] : q->to_ms;
    rc = plan_range(&plan, a, e);
  }
  if (rc < 0) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  /* Totals need no buckets: over [from, to) as a whole the coarsest cells
   * fit (day cells for a month), far fewer than the buckets' cells. That
   * plan is usable when its raw pieces are the bucket plan's, so that the
   * same raw and tail events complete both. */
  if (plan_range(&tplan, q->from_ms - (q->to_ms - q->from_ms), q->from_ms) < 0 ||
      plan_range(&tplan, q->from_ms, q->to_ms) < 0) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  bool coarse_totals = same_raw_spans(&plan, &tplan);
  unsigned levels = plan_levels(&plan), tlevels = plan_levels(&tplan);
  raw = (struct raw_cells){.c = {.mq = mq},
                           .plan = &plan,
                           .starts = starts,
                           .n_buckets = nb,
                           .from = q->from_ms,
                           .to = q->to_ms};
  /* Raw events where no cell fits: they do not depend on the watermark. */
  size_t n_names;
  bool any;
  const char *const *names = ana_mq_names(mq, &n_names, &any);
  for (size_t i = 0; i < plan.n && rc == 0; i++)
    if (plan.spans[i].level < 0)
      rc = r->ops->scan(r->store, q->account_id, plan.spans[i].lo, plan.spans[i].hi,
                        any ? NULL : names, any ? 0 : n_names, add_raw, &raw, err);
  if (rc == 0 && raw.c.rc < 0)
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (rc < 0)
    goto out;
  /* Cells and their watermark: from memory, consistent under the read lock
   * (held until the cells are added), or from one database snapshot. */
  uint64_t watermark = 0;
  if (r->cache_ready) {
    bool ask = false;
    pthread_rwlock_rdlock(&r->cache.lock);
    struct rc_set *shared = rc_cache_find(&r->cache, q->metric->metric_id, version);
    unsigned loaded = 0;
    for (int l = 0; shared && l < LEVELS; l++) {
      struct rc_level *lv = &shared->levels[l];
      if (lv->loaded)
        loaded |= 1u << l;
      else if (((levels | tlevels) & (1u << l)) && !lv->refused &&
               !atomic_exchange(&lv->wanted, true))
        ask = true;
    }
    if (shared && (levels & loaded) == levels) {
      coarse_totals &= (tlevels & loaded) == tlevels;
      int64_t now = ana_clock_wall_ms();
      for (int l = 0; l < LEVELS; l++)
        if ((levels | (coarse_totals ? tlevels : 0)) & (1u << l))
          atomic_store_explicit(&shared->levels[l].used, now, memory_order_relaxed);
      set = shared;
      watermark = shared->watermark;
      locked = true;
    } else {
      pthread_rwlock_unlock(&r->cache.lock);
    }
    if (ask)
      wake(r);
  }
  if (!set) {
    coarse_totals = false; /* only the bucket plan's cells are read */
    rc = read_cells(r, q->metric->metric_id, version, &plan, mq, &own, &watermark, err);
    if (rc <= 0)
      goto out;
    rc = 0;
    set = own;
    atomic_fetch_add(&r->database_queries, 1);
  } else {
    atomic_fetch_add(&r->memory_queries, 1);
  }
  /* The events committed after the watermark. */
  rc = r->ops->scan_seq(r->store, q->account_id, watermark, UINT64_MAX, add_tail, &raw, err);
  if (rc == 0 && raw.c.rc < 0)
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (rc < 0)
    goto out;
  /* Totals of every group, the ranking, then buckets of the groups shown. */
  if (!(gmap = ana_calloc(set->keys.n ? set->keys.n : 1, sizeof *gmap))) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  size_t size;
  bool additive;
  bool flat = ana_mq_packed_fixed(mq, &size, &additive);
  enum ana_mq_part parts[2] = {ANA_MQ_TOTALS, ANA_MQ_BUCKETS};
  const struct plan *plans[2] = {coarse_totals ? &tplan : &plan, &plan};
  for (int k = 0; k < 2 && rc == 0; k++) {
    int added =
        flat ? add_set_flat(mq, set, gmap, plans[k], q, starts, nb, parts[k], size, additive) : 1;
    if (added == 1)
      added = add_set(mq, set, gmap, plans[k], q, starts, nb, parts[k]);
    if (added < 0 || add_raw_cells(mq, &raw, parts[k]) < 0 ||
        (parts[k] == ANA_MQ_TOTALS && ana_mq_rank(mq) < 0))
      break; /* the error is in mq */
  }
  if (locked)
    pthread_rwlock_unlock(&r->cache.lock);
  locked = false;
  rc = ana_mq_answer(mq, arena, out, err);
  if (rc == 0)
    rc = 1;
out:
  if (locked)
    pthread_rwlock_unlock(&r->cache.lock);
  ana_free(gmap);
  rc_set_free(own);
  if (raw.c.mq)
    chunk_fini(&raw.c);
  ana_free(plan.spans);
  ana_free(tplan.spans);
  ana_mq_destroy(mq);
  ana_formula_free(f);
  ana_free(def);
  return rc;
}
