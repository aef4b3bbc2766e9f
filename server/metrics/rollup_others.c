/* Metric rollups: the events other instances commit to a shared event store
 * (ClickHouse), which this instance's commit sequence does not hold. Per
 * metric version and other instance, a mark: the sequence up to which that
 * instance's events are in the cells. Each round moves the marks behind to
 * the bounds the store reports (every event of the instance up to its bound
 * is in the store), reading (mark, bound], and writes the cells and marks in
 * one transaction: each event counted once, whichever instance committed it. */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <string.h>

/* How often the thread asks the event store for the bounds. */
#define BOUNDS_EVERY_MS 500
/* After the store could not say, or was not reachable: not before this long, even for a new
 * metric. */
#define BOUNDS_RETRY_MS 2000

uint64_t ru_mark_of(const struct rmetric *m, const char *instance) {
  for (size_t i = 0; i < m->n_marks; i++)
    if (strcmp(m->marks[i].instance, instance) == 0)
      return m->marks[i].seq;
  return 0;
}

int ru_set_mark(struct rmetric *m, const char *instance, uint64_t seq) {
  for (size_t i = 0; i < m->n_marks; i++)
    if (strcmp(m->marks[i].instance, instance) == 0) {
      m->marks[i].seq = seq;
      return 0;
    }
  char *id = ana_strdup(instance);
  struct rmark *v = id ? ana_realloc(m->marks, (m->n_marks + 1) * sizeof *v) : NULL;
  if (!v) {
    ana_free(id);
    return ANA_ERR_NOMEM;
  }
  m->marks = v;
  m->marks[m->n_marks++] = (struct rmark){id, seq};
  return 0;
}

void ru_marks_free(struct rmetric *m) {
  for (size_t i = 0; i < m->n_marks; i++)
    ana_free(m->marks[i].instance);
  ana_free(m->marks);
  m->marks = NULL;
  m->n_marks = 0;
}

static int load_mark(void *ctx, const char *metric_id, int64_t version, const char *instance,
                     uint64_t seq) {
  struct ana_rollups *r = ctx;
  struct rmetric *m = *ru_find_metric(r, metric_id);
  if (!m || m->version != version)
    return 0;
  return ru_set_mark(m, instance, seq);
}

int ru_load_marks(struct ana_rollups *r, struct ana_error *err) {
  int rc = ana_rollup_cells_each_other_mark(r->cells, load_mark, r, err);
  if (rc == ANA_ERR_NOMEM)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return rc;
}

struct bounds_read {
  struct rmark *v;
  size_t n, cap;
};

static int add_bound(void *ctx, const char *instance, uint64_t seq) {
  struct bounds_read *b = ctx;
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4;
    struct rmark *v = ana_realloc(b->v, cap * sizeof *v);
    if (!v)
      return ANA_ERR_NOMEM;
    b->v = v;
    b->cap = cap;
  }
  if (!(b->v[b->n].instance = ana_strdup(instance)))
    return ANA_ERR_NOMEM;
  b->v[b->n++].seq = seq;
  return 0;
}

static void bounds_free(struct rmark *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    ana_free(v[i].instance);
  ana_free(v);
}

int ru_refresh_bounds(struct ana_rollups *r, bool now) {
  if (!r->ops->other_bounds || !r->ops->scan_other)
    return -1;
  int64_t t = ana_clock_mono_ms();
  if (t < r->bounds_retry_ms)
    return -1;
  if (!now && t < r->next_bounds_ms)
    return (int)r->n_bounds;
  r->next_bounds_ms = t + BOUNDS_EVERY_MS;
  /* A store that cannot be reached (shipping fails) would hold the round up to its timeout,
   * and this instance's own events with it: not now. */
  struct ana_event_store_status st = {0};
  if (r->ops->status)
    r->ops->status(r->store, &st);
  if (st.degraded) {
    r->bounds_retry_ms = t + BOUNDS_RETRY_MS;
    return -1;
  }
  struct bounds_read b = {0};
  struct ana_error err;
  ana_error_clear(&err);
  int rc = r->ops->other_bounds(r->store, add_bound, &b, &err);
  if (rc < 0) {
    bounds_free(b.v, b.n);
    ANA_DEBUG("rollups", "other instances' events: %s",
              rc == ANA_ERR_NOMEM ? "out of memory" : err.message);
    r->bounds_retry_ms = t + BOUNDS_RETRY_MS;
    return -1; /* nothing moves this round: the marks stay where they are */
  }
  bounds_free(r->bounds, r->n_bounds);
  r->bounds = b.v;
  r->n_bounds = b.n;
  r->cap_bounds = b.cap;
  return (int)r->n_bounds;
}

bool ru_others_behind(const struct ana_rollups *r, const struct rmetric *m) {
  for (size_t i = 0; i < r->n_bounds; i++)
    if (ru_mark_of(m, r->bounds[i].instance) < r->bounds[i].seq)
      return true;
  return false;
}

bool ru_same_marks(const struct ana_rollups *r, const struct rmetric *a, const struct rmetric *b) {
  for (size_t i = 0; i < r->n_bounds; i++) {
    uint64_t x = ru_mark_of(a, r->bounds[i].instance), y = ru_mark_of(b, r->bounds[i].instance);
    if (x != y && (x < r->bounds[i].seq || y < r->bounds[i].seq))
      return false;
  }
  return true;
}

int ru_scan_others(struct ana_rollups *r, struct work **w, size_t n, ana_event_scan_fn feed,
                   void *ctx, struct ana_error *err) {
  for (size_t i = 0; i < r->n_bounds; i++) {
    uint64_t from = ru_mark_of(w[0]->m, r->bounds[i].instance);
    if (from >= r->bounds[i].seq)
      continue;
    /* their entries now, so that moving them later cannot fail */
    for (size_t k = 0; k < n; k++)
      if (ru_set_mark(w[k]->m, r->bounds[i].instance, from) < 0)
        return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    int rc = r->ops->scan_other(r->store, w[0]->m->account_id, r->bounds[i].instance, from,
                                r->bounds[i].seq, feed, ctx, err);
    if (rc < 0)
      return rc;
  }
  return 0;
}

int ru_write_marks(struct ana_rollups *r, const struct work *w, struct ana_error *err) {
  for (size_t i = 0; i < r->n_bounds; i++) {
    if (ru_mark_of(w->m, r->bounds[i].instance) >= r->bounds[i].seq)
      continue;
    int rc = ana_rollup_cells_mark_other(r->cells, w->m->metric_id, w->m->version,
                                         r->bounds[i].instance, r->bounds[i].seq, err);
    if (rc < 0)
      return rc;
  }
  return 0;
}

void ru_apply_marks(struct ana_rollups *r, struct work *w) {
  for (size_t i = 0; i < r->n_bounds; i++)
    for (size_t k = 0; k < w->m->n_marks; k++) /* made by ru_scan_others */
      if (strcmp(w->m->marks[k].instance, r->bounds[i].instance) == 0 &&
          w->m->marks[k].seq < r->bounds[i].seq)
        w->m->marks[k].seq = r->bounds[i].seq;
  w->m->others_once = true;
}
