/* Metric rollups: one round of the maintenance thread over the commit
 * sequence: each metric's next chunk of events read once per account and
 * watermark, merged into the stored cells, written in one transaction, and
 * applied to the cells in memory. */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_prom.h"

#include <stdlib.h>
#include <string.h>

static int cells_of(void *ctx, const char *group_key, struct ana_mq_cell **cells, size_t max) {
  struct chunk *c = ctx;
  int64_t bucket = ru_floor_to(c->ts, level_ms[0]);
  if (max < LEVELS)
    return ANA_ERR_INVALID;
  if (c->last_key && c->last_bucket == bucket && strcmp(c->last_key, group_key) == 0) {
    memcpy(cells, c->last, sizeof c->last);
    return LEVELS;
  }
  uint64_t kh = ru_key_hash(group_key);
  c->last_key = NULL;
  const char *stored = NULL;
  for (int l = 0; l < LEVELS; l++) {
    struct cell_entry *e = ru_chunk_cell(c, l, ru_floor_to(c->ts, level_ms[l]), group_key, kh);
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

static void work_fini(struct work *w) {
  ru_chunk_fini(&w->c);
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

/* The metrics of one scan, each event read once for all of them: works[0..n), or picked[0..n)
 * when not NULL. */
struct scan {
  struct work *works;
  struct work **picked;
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
    struct chunk *c = s->picked ? &s->picked[i]->c : &s->works[i].c;
    c->ts = ev->timestamp_ms;
    s->rc = ana_mq_feed_row((struct ana_mq *)c->mq, &row, cells_of, c);
  }
  ana_acc_row_fini(&row);
  return s->rc < 0;
}

/* The events other instances committed to a shared event store, which this instance's sequence
 * does not hold (works of their own, lo = hi): one scan per account and marks, for every metric
 * at those marks. A failed scan fails its works (others_failed). */
static void scan_others(struct ana_rollups *r, struct work *w, size_t n) {
  struct work **picked = NULL;
  bool any = false;
  for (size_t i = 0; i < n; i++)
    any |= w[i].others;
  if (!any)
    return;
  if (!(picked = ana_malloc(n * sizeof *picked))) {
    for (size_t i = 0; i < n; i++)
      w[i].others_failed = w[i].others;
    return;
  }
  for (size_t i = 0; i < n; i++)
    w[i].others_read = !w[i].others;
  for (size_t i = 0; i < n; i++) {
    if (w[i].others_read)
      continue;
    size_t k = 0;
    for (size_t j = i; j < n; j++)
      if (!w[j].others_read && strcmp(w[j].m->account_id, w[i].m->account_id) == 0 &&
          ru_same_marks(r, w[i].m, w[j].m)) {
        w[j].others_read = true;
        picked[k++] = &w[j];
      }
    struct ana_error err;
    ana_error_clear(&err);
    struct scan s = {.picked = picked, .n = k};
    int sc = ru_scan_others(r, picked, k, feed, &s, &err);
    if (sc == 0 && s.rc < 0)
      sc = ana_error_set(&err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    ana_prom_counter_add(&r->events_processed, s.events);
    ana_prom_counter_add(&r->other_events, s.events);
    for (size_t x = 0; x < k; x++)
      if ((picked[x]->others_failed = sc < 0))
        ANA_WARN("rollups", "metric %s: other instances' events: %s", picked[x]->m->metric_id,
                 err.message);
  }
  ana_free(picked);
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
    if (rc == 0 && w[i].others)
      rc = ru_write_marks(r, &w[i], err);
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
bool ru_advance(struct ana_rollups *r, struct work *w, size_t n, uint64_t head) {
  struct ana_error err;
  ana_error_clear(&err);
  bool more = false, reading = false, writing = false;
  qsort(w, n, sizeof *w, work_cmp);
  int rc = ana_rollup_cells_prepare(r->cells, &err);
  if (rc == 0)
    scan_others(r, w, n);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && w[j].lo == w[i].lo && strcmp(w[j].m->account_id, w[i].m->account_id) == 0)
      j++;
    struct scan s = {.works = &w[i], .n = j - i};
    int sc = rc;
    if (sc == 0 && w[i].lo < w[i].hi)
      sc = r->ops->scan_seq(r->store, w[i].m->account_id, w[i].lo, w[i].hi, feed, &s, &err);
    if (sc == 0 && s.rc < 0)
      sc = ana_error_set(&err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    ana_prom_counter_add(&r->events_processed, s.events);
    for (size_t k = i; k < j; k++) {
      w[k].state = sc < 0 || w[k].others_failed ? WORK_FAILED : WORK_QUIET;
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
      if (x->others)
        ru_apply_marks(r, x);
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
