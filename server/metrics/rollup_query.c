/* Metric rollups: the query path: a query's time line planned into cells
 * of the coarsest levels that fit and raw events for the rest, cells read
 * from memory or the database, and merged into the answer. */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <stdlib.h>
#include <string.h>

/* The most dimensions a regrouped query's metric may have (the metric's). */
#define ANA_ROLLUP_MAX_DIMS ANA_ACC_MAX_DIMENSIONS

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
  int64_t lo = ru_floor_to(a + level_ms[0] - 1, level_ms[0]);
  int64_t hi = ru_floor_to(b, level_ms[0]);
  if (lo >= hi)
    return plan_push(p, -1, a, b);
  int rc = plan_push(p, -1, a, lo);
  for (int64_t t = lo; t < hi && rc == 0;) {
    int l = LEVELS - 1;
    while (l > 0 && (ru_floor_to(t, level_ms[l]) != t || t + level_ms[l] > hi))
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
  struct cell_entry *e = ru_chunk_cell(&rc->c, 0, b, group_key, ru_key_hash(group_key));
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

/* How the groups of a stored metric's cells map to a query's: for each of
 * the query's dimensions, its place among the metric's (the query groups
 * by some of them); NULL: the same dimensions. */
struct key_proj {
  const int8_t *place;
  size_t n;
};

/* The query's group key of the set's key k: its values of the query's
 * dimensions, joined by '\x1f' (in buf). */
static const char *query_key(const struct key_proj *p, const char *k, char *buf) {
  if (!p->place)
    return k;
  const char *vals[ANA_ROLLUP_MAX_DIMS];
  size_t lens[ANA_ROLLUP_MAX_DIMS], n = 0;
  for (const char *c = k; n < ANA_ROLLUP_MAX_DIMS; n++) {
    size_t len = strcspn(c, "\x1f");
    vals[n] = c;
    lens[n] = len;
    if (!c[len]) {
      n++;
      break;
    }
    c += len + 1;
  }
  size_t o = 0;
  for (size_t d = 0; d < p->n; d++) {
    size_t i = (size_t)p->place[d];
    size_t len = i < n ? lens[i] : 0;
    if (o + len + 2 > ANA_MQ_KEY_MAX)
      break;
    if (d)
      buf[o++] = '\x1f';
    if (len)
      memcpy(buf + o, vals[i], len);
    o += len;
  }
  buf[o] = '\0';
  return buf;
}

/* Receives one cell of a walk: its bucket (ANA_MQ_PREVIOUS: the previous
 * period), its group (an index into the set's keys) and its packed bytes.
 * Non-zero stops the walk and is returned. */
typedef int (*cell_fn)(void *ctx, size_t bucket, uint32_t group, const uint8_t *packed,
                       uint32_t len);

/* Calls fn for each cell of set in the plan's spans that one part of the
 * query reads (the buckets part: the cells of [from, to) only). Always
 * inlined: each caller passes a constant fn, which then inlines into the
 * loop (a call per cell made the flat walk, most of a query's time, take
 * about 1.3x as long). */
static inline __attribute__((always_inline)) int
walk_cells(const struct rc_set *set, const struct plan *plan, const struct ana_metric_query *q,
           const int64_t *starts, size_t nb, enum ana_mq_part part, cell_fn fn, void *ctx) {
  for (size_t i = 0; i < plan->n; i++) {
    const struct span *sp = &plan->spans[i];
    if (sp->level < 0 || (part == ANA_MQ_BUCKETS && sp->hi <= q->from_ms))
      continue;
    const struct rc_level *lv = &set->levels[sp->level];
    for (size_t k = rc_level_seek(lv, sp->lo); k < lv->n && lv->buckets[k].start < sp->hi; k++) {
      const struct rc_bucket *bk = &lv->buckets[k];
      /* A merged span may cover several buckets; a cell lies in one. */
      size_t b = cell_bucket(q, starts, nb, bk->start);
      if (part == ANA_MQ_BUCKETS && b >= nb)
        continue;
      for (size_t o = 0; o < bk->len;) {
        struct rc_record h;
        memcpy(&h, bk->cells + o, sizeof h);
        const uint8_t *packed = bk->cells + o + sizeof h;
        o += rc_record_size(h.len);
        int rc = fn(ctx, b, h.group, packed, h.len);
        if (rc)
          return rc;
      }
    }
  }
  return 0;
}

/* add_set's walk: each cell added to its group, one by one. */
struct set_walk {
  struct ana_mq *mq;
  const struct rc_set *set;
  const struct key_proj *proj;
  struct ana_mq_group **gmap;
  enum ana_mq_part part;
};

static int add_set_cell(void *ctx, size_t b, uint32_t group, const uint8_t *packed, uint32_t len) {
  struct set_walk *w = ctx;
  struct ana_mq_group *g = w->gmap[group];
  int rc;
  if (!g) {
    char buf[ANA_MQ_KEY_MAX];
    if ((rc = ana_mq_group(w->mq, query_key(w->proj, w->set->keys.keys[group], buf), &g)) < 0)
      return rc;
    w->gmap[group] = g = g ? g : FILTERED;
  }
  if (g != FILTERED && (rc = ana_mq_add_packed(w->mq, g, b, w->part, packed, len)) < 0)
    return rc;
  return 0;
}

/* Adds the cells of set in the plan's spans to one part of the query.
 * gmap (one slot per key of set, zeroed at first) maps the set's groups to
 * the query's. Returns 0 or a negative error (in mq). */
static int add_set(struct ana_mq *mq, const struct rc_set *set, const struct key_proj *proj,
                   struct ana_mq_group **gmap, const struct plan *plan,
                   const struct ana_metric_query *q, const int64_t *starts, size_t nb,
                   enum ana_mq_part part) {
  struct set_walk w = {mq, set, proj, gmap, part};
  return walk_cells(set, plan, q, starts, nb, part, add_set_cell, &w);
}

/* The most bytes of flat bucket accumulators (shown groups x buckets) a
 * query uses; beyond (a top N in the thousands) cells go one by one. */
#define FLAT_MAX_BYTES (64u << 20)

/* add_set_flat's walk: each cell merged into its flat accumulator. */
struct flat_walk {
  struct ana_mq *mq;
  double *acc;
  uint8_t *seen;
  const int32_t *target; /* the buckets part: each group's row, < 0 none */
  size_t nb, n_slots;
  enum ana_mq_part part;
  bool additive;
};

static int add_flat_cell(void *ctx, size_t b, uint32_t group, const uint8_t *packed, uint32_t len) {
  struct flat_walk *w = ctx;
  (void)len; /* every cell has n_slots doubles (ana_mq_packed_fixed) */
  size_t a;
  if (w->part == ANA_MQ_TOTALS) {
    a = 2 * (size_t)group + (b == ANA_MQ_PREVIOUS);
  } else {
    if (w->target[group] < 0)
      return 0;
    a = (size_t)w->target[group] * w->nb + b;
  }
  double *into = &w->acc[a * w->n_slots];
  if (w->additive) {
    for (size_t j = 0; j < w->n_slots; j++) {
      double v;
      memcpy(&v, packed + j * sizeof v, sizeof v);
      into[j] += v;
    }
  } else {
    ana_mq_packed_merge(w->mq, into, packed);
  }
  w->seen[a] = 1;
  return 0;
}

/* add_set for cells of one size (ana_mq_packed_fixed): merged first into
 * flat accumulators, one per (group index of the set, total or previous)
 * and one per (group shown or "other", bucket): the totals added to the
 * query once each, the bucket rows handed over whole (ana_mq_adopt_flat). Most of a query's time is
 * here: no group lookup and no accumulator structure per cell. Returns 1 when the accumulators
 * would be too large (nothing added: use add_set), else as add_set. */
static int add_set_flat(struct ana_mq *mq, const struct rc_set *set, const struct key_proj *proj,
                        struct ana_mq_group **gmap, const struct plan *plan,
                        const struct ana_metric_query *q, const int64_t *starts, size_t nb,
                        enum ana_mq_part part, size_t size, bool additive) {
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
  struct flat_walk w = {mq, acc, seen, target, nb, n_slots, part, additive};
  walk_cells(set, plan, q, starts, nb, part, add_flat_cell, &w);
  if (part == ANA_MQ_BUCKETS) {
    /* The answer reads the rows in place: no accumulator per bucket. */
    rc = ana_mq_adopt_flat(mq, rep, n_targets, acc);
    acc = NULL;
    goto out;
  }
  for (size_t a = 0; a < n_acc && rc == 0; a++) {
    if (!seen[a])
      continue;
    const uint8_t *packed = (const uint8_t *)&acc[a * n_slots];
    struct ana_mq_group **g = &gmap[a / 2];
    if (!*g) {
      char buf[ANA_MQ_KEY_MAX];
      if ((rc = ana_mq_group(mq, query_key(proj, set->keys.keys[a / 2], buf), g)) < 0)
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

static const char *dim_name(const char *path) {
  return strncmp(path, "properties.", 11) == 0 ? path + 11 : path;
}

/* Whether want's dimensions are some of stored's (place[d]: where). */
static bool projects(const Analytics__V1__Metric *stored, const Analytics__V1__Metric *want,
                     int8_t *place) {
  /* A key of more dimensions may be cut short (ANA_ACC_KEY_MAX): a value
   * it lost would be missing from the query's groups. */
  if (stored->n_dimensions > ANA_ROLLUP_MAX_DIMS || want->n_dimensions >= stored->n_dimensions ||
      stored->n_dimensions * ANA_ACC_VALUE_MAX > ANA_ACC_KEY_MAX)
    return false;
  for (size_t d = 0; d < want->n_dimensions; d++) {
    size_t i = 0;
    while (i < stored->n_dimensions &&
           strcmp(dim_name(stored->dimensions[i]), dim_name(want->dimensions[d])) != 0)
      i++;
    if (i == stored->n_dimensions)
      return false;
    place[d] = (int8_t)i;
  }
  return true;
}

int ana_rollup_query(struct ana_rollups *r, const struct ana_metric_query *q,
                     struct ana_arena *arena, Analytics__V1__MetricData *out,
                     struct ana_error *err) {
  size_t def_len = 0;
  uint8_t *def = ru_pack_definition(q->metric, q->formula, &def_len);
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
  int8_t place[ANA_ROLLUP_MAX_DIMS];
  struct key_proj proj = {NULL, q->metric->n_dimensions};
  pthread_mutex_lock(&r->mu);
  struct rmetric *m = *ru_find_metric(r, q->metric->metric_id);
  bool same = m && m->def_len == def_len && memcmp(m->def, def, def_len) == 0;
  /* Grouped by some of the metric's dimensions: its cells, regrouped. */
  if (m && !same && projects(m->metric, q->metric, place)) {
    Analytics__V1__Metric alt = *q->metric;
    alt.dimensions = m->metric->dimensions;
    alt.n_dimensions = m->metric->n_dimensions;
    size_t alt_len = 0;
    uint8_t *alt_def = ru_pack_definition(&alt, q->formula, &alt_len);
    same = alt_def && m->def_len == alt_len && memcmp(m->def, alt_def, alt_len) == 0;
    ana_free(alt_def);
    proj.place = same ? place : NULL;
  }
  bool usable = same && m->watermark >= m->backfill_to;
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
  rc = plan_range(&plan, ana_metric_query_previous_from(q), q->from_ms);
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
  if (plan_range(&tplan, ana_metric_query_previous_from(q), q->from_ms) < 0 ||
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
      ru_wake(r);
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
        flat ? add_set_flat(mq, set, &proj, gmap, plans[k], q, starts, nb, parts[k], size, additive)
             : 1;
    if (added == 1)
      added = add_set(mq, set, &proj, gmap, plans[k], q, starts, nb, parts[k]);
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
    ru_chunk_fini(&raw.c);
  ana_free(plan.spans);
  ana_free(tplan.spans);
  ana_mq_destroy(mq);
  ana_formula_free(f);
  ana_free(def);
  return rc;
}
