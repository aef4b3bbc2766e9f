/* Metric queries: per-group and per-bucket accumulators for every term of
 * the formula, fed by raw events (one scan of the range and of the previous
 * period) or by rollup cells (rollup.c), then the formula per bucket, the
 * summary, the total, the change, and top-N groups with the rest folded into
 * "other". The same accumulators, in sketch form, are the rollup cells.
 * Reading an event (fields, filters, group key) and the per-term aggregates
 * are acc.c's (acc_internal.h), shared with the live metric stream. */
#include "ana_metric_query.h"

#include "acc_internal.h"
#include "ana_alloc.h"
#include "ana_sketch.h"
#include "metric_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMENSIONS ANA_ACC_MAX_DIMENSIONS
#define KEY_MAX ANA_MQ_KEY_MAX
/* Rollup cells are keyed by the group keys acc.c writes. */
_Static_assert(ANA_MQ_KEY_MAX == ANA_ACC_KEY_MAX, "group keys differ in size");

/* ------------------------------------------------------------------ */
/* cells: one ana_acc_agg per term */

struct ana_mq_cell {
  struct ana_acc_agg accs[1]; /* n_terms */
};

static bool acc_has_values(const struct ana_acc_agg *a) {
  return a->n_values > 0 || (a->dd && a->dd->count > 0);
}

/* ------------------------------------------------------------------ */
/* groups */

struct group {
  char *key;                    /* dimension values joined by '\x1f' */
  char **values;                /* one per dimension */
  size_t n_values;
  uint64_t hash;                /* of the joined key */
  struct ana_acc_agg *buckets;  /* n_buckets * n_terms */
  struct ana_acc_agg *total;    /* n_terms */
  struct ana_acc_agg *previous; /* n_terms */
  double rank;
  bool has_rank;
};

struct ana_mq {
  const struct ana_metric_query *q;
  bool sketches;
  struct ana_acc_spec spec; /* terms, their fields, dimensions, filters */
  const char *names[ANA_ACC_MAX_TERMS];
  size_t n_names;
  bool any;
  int64_t *starts;
  size_t n_buckets;
  struct group **groups;
  size_t n_groups, cap_groups;
  struct group **index; /* open addressing by hash; index_cap a power of two */
  size_t index_cap;
  int rc;
  struct ana_error *err;
  struct ana_error own_err;
};

static void group_free(struct group *g, size_t n_buckets, size_t n_terms) {
  if (!g)
    return;
  for (size_t i = 0; g->buckets && i < n_buckets * n_terms; i++)
    ana_acc_agg_fini(&g->buckets[i]);
  for (size_t i = 0; i < n_terms; i++) {
    if (g->total)
      ana_acc_agg_fini(&g->total[i]);
    if (g->previous)
      ana_acc_agg_fini(&g->previous[i]);
  }
  ana_free(g->buckets);
  ana_free(g->total);
  ana_free(g->previous);
  ana_free(g->key);
  ana_free(g->values);
  ana_free(g);
}

static struct group *group_new(struct ana_mq *s, const char *key, char *const *values) {
  struct group *g = ana_calloc(1, sizeof *g);
  if (!g)
    return NULL;
  g->key = ana_strdup(key);
  g->hash = ana_acc_hash_text(key);
  g->values = ana_calloc(s->spec.n_dims ? s->spec.n_dims : 1, sizeof *g->values);
  size_t cells = s->n_buckets * s->spec.n_terms;
  g->buckets = ana_calloc(cells ? cells : 1, sizeof *g->buckets);
  g->total = ana_calloc(s->spec.n_terms ? s->spec.n_terms : 1, sizeof *g->total);
  g->previous = ana_calloc(s->spec.n_terms ? s->spec.n_terms : 1, sizeof *g->previous);
  if (!g->key || !g->values || !g->buckets || !g->total || !g->previous) {
    group_free(g, 0, 0);
    return NULL;
  }
  /* values point into key: the key is the values joined. */
  g->n_values = s->spec.n_dims;
  char *p = g->key;
  for (size_t d = 0; d < s->spec.n_dims; d++) {
    g->values[d] = p;
    p += strlen(values[d] ? values[d] : "");
    if (*p)
      *p++ = '\0';
  }
  return g;
}

static bool group_is(const struct ana_mq *s, const struct group *g, const char *key) {
  size_t off = 0;
  for (size_t d = 0; d < s->spec.n_dims; d++) {
    size_t n = strlen(g->values[d]);
    if (strncmp(key + off, g->values[d], n) != 0 ||
        (key[off + n] != '\x1f' && key[off + n] != '\0'))
      return false;
    off += n + 1;
  }
  return true;
}

static int index_put(struct ana_mq *s, struct group *g) {
  if ((s->n_groups + 1) * 2 > s->index_cap) {
    size_t cap = s->index_cap ? s->index_cap * 2 : 64;
    struct group **index = ana_calloc(cap, sizeof *index);
    if (!index)
      return ANA_ERR_NOMEM;
    for (size_t i = 0; i < s->n_groups; i++) {
      size_t j = s->groups[i]->hash & (cap - 1);
      while (index[j])
        j = (j + 1) & (cap - 1);
      index[j] = s->groups[i];
    }
    ana_free(s->index);
    s->index = index;
    s->index_cap = cap;
  }
  size_t j = g->hash & (s->index_cap - 1);
  while (s->index[j])
    j = (j + 1) & (s->index_cap - 1);
  s->index[j] = g;
  return 0;
}

/* The group of the key (the values joined by '\x1f'), created on first
 * sight; NULL with s->rc set when there are too many or out of memory. */
static struct group *find_group(struct ana_mq *s, const char *key, char *const *values) {
  uint64_t h = ana_acc_hash_text(key);
  if (s->index_cap) {
    for (size_t j = h & (s->index_cap - 1); s->index[j]; j = (j + 1) & (s->index_cap - 1))
      if (s->index[j]->hash == h && group_is(s, s->index[j], key))
        return s->index[j];
  }
  if (s->n_groups == ANA_METRIC_MAX_GROUPS) {
    s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED,
                          "dimensions: more than %d groups; add a dimensionFilter or fewer "
                          "dimensions",
                          ANA_METRIC_MAX_GROUPS);
    return NULL;
  }
  if (s->n_groups == s->cap_groups) {
    size_t cap = s->cap_groups ? s->cap_groups * 2 : 16;
    struct group **gs = ana_realloc(s->groups, cap * sizeof *gs);
    if (!gs)
      goto nomem;
    s->groups = gs;
    s->cap_groups = cap;
  }
  struct group *g = group_new(s, key, values);
  if (!g || index_put(s, g) < 0) {
    group_free(g, s->n_buckets, s->spec.n_terms);
    goto nomem;
  }
  s->groups[s->n_groups++] = g;
  return g;
nomem:
  s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

/* ------------------------------------------------------------------ */
/* events */

/* Whether ev is read at all: its name is one the formula reads. */
static bool wanted(const struct ana_mq *s, const char *name) {
  if (s->any)
    return true;
  for (size_t i = 0; i < s->n_names; i++)
    if (strcmp(s->names[i], name) == 0)
      return true;
  return false;
}

/* Whether the query's dimensionFilter keeps the group. */
static bool dimension_kept(const struct ana_mq *s, char *const *values) {
  const struct ana_metric_query *q = s->q;
  for (size_t i = 0; i < q->n_dimension_filters; i++)
    for (size_t d = 0; d < s->spec.n_dims; d++)
      if (strcmp(s->spec.dims[d], q->dimension_keys[i]) == 0 &&
          strcmp(values[d], q->dimension_values[i]) != 0)
        return false;
  return true;
}

int ana_mq_add_event(struct ana_mq *s, const struct ana_scanned_event *ev) {
  const struct ana_metric_query *q = s->q;
  struct ana_acc_row r = ANA_ACC_ROW(ev);
  char key[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  char valbuf[MAX_DIMENSIONS][ANA_ACC_VALUE_MAX];
  if (!wanted(s, ev->event_name) || !ana_acc_row_group(&s->spec, &r, key, values, valbuf) ||
      !dimension_kept(s, values))
    goto out;
  struct group *g = find_group(s, key, values);
  if (!g)
    goto out;
  bool previous = ev->timestamp_ms < q->from_ms;
  size_t b = previous ? s->n_buckets
                      : ana_bucket_index(s->starts, s->n_buckets, q->to_ms, ev->timestamp_ms);
  struct ana_acc_agg *bucket =
      !previous && b < s->n_buckets ? &g->buckets[b * s->spec.n_terms] : NULL;
  struct ana_acc_agg *targets[2] = {previous ? g->previous : g->total, bucket};
  if (ana_acc_row_add(&s->spec, &r, s->sketches, targets, 2) < 0)
    s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
out:
  ana_acc_row_fini(&r);
  return s->rc;
}

int ana_mq_feed_cells(struct ana_mq *s, const struct ana_scanned_event *ev,
                      ana_mq_cells_fn cells_fn, void *ctx) {
  struct ana_acc_row r = ANA_ACC_ROW(ev);
  char key[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  char valbuf[MAX_DIMENSIONS][ANA_ACC_VALUE_MAX];
  int rc = 0;
  if (!wanted(s, ev->event_name) || !ana_acc_row_group(&s->spec, &r, key, values, valbuf))
    goto out;
  struct ana_mq_cell *cells[8];
  rc = cells_fn(ctx, key, cells, 8);
  if (rc < 0)
    goto out;
  struct ana_acc_agg *targets[8];
  for (int i = 0; i < rc; i++)
    targets[i] = cells[i]->accs;
  rc = ana_acc_row_add(&s->spec, &r, s->sketches, targets, (size_t)rc);
out:
  ana_acc_row_fini(&r);
  return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------ */
/* cells */

struct ana_mq_cell *ana_mq_cell_new(const struct ana_mq *s) {
  return ana_calloc(1, sizeof(struct ana_acc_agg) * (s->spec.n_terms ? s->spec.n_terms : 1));
}

void ana_mq_cell_free(const struct ana_mq *s, struct ana_mq_cell *c) {
  if (!c)
    return;
  for (size_t t = 0; t < s->spec.n_terms; t++)
    ana_acc_agg_fini(&c->accs[t]);
  ana_free(c);
}

/* Per term: a flags byte (1 = has scalars, 2 = HyperLogLog, 4 = DDSketch),
 * then count, sum, min, max as 8-byte doubles, then the sketches. */
static int accs_encode(const struct ana_acc_agg *accs, size_t n, uint8_t **buf, size_t *len,
                       size_t *cap) {
  for (size_t t = 0; t < n; t++) {
    const struct ana_acc_agg *a = &accs[t];
    uint8_t flags = (a->count > 0 ? 1 : 0) | (a->hll ? 2 : 0) | (a->dd ? 4 : 0);
    size_t need = 1 + 32 + (a->hll ? ANA_HLL_MAX_ENCODED : 0);
    if (*len + need > *cap) {
      size_t ncap = *cap ? *cap * 2 : 256;
      while (ncap < *len + need)
        ncap *= 2;
      uint8_t *b = ana_realloc(*buf, ncap);
      if (!b)
        return ANA_ERR_NOMEM;
      *buf = b;
      *cap = ncap;
    }
    (*buf)[(*len)++] = flags;
    if (flags & 1) {
      double d[4] = {a->count, a->sum, a->min, a->max};
      memcpy(*buf + *len, d, sizeof d);
      *len += sizeof d;
    }
    if (a->hll)
      *len += ana_hll_encode(a->hll, *buf + *len);
    if (a->dd && ana_dds_encode(a->dd, buf, len, cap) < 0)
      return ANA_ERR_NOMEM;
  }
  return 0;
}

static int accs_merge_encoded(struct ana_acc_agg *accs, size_t n, const uint8_t *in, size_t len) {
  size_t p = 0;
  for (size_t t = 0; t < n; t++) {
    struct ana_acc_agg *a = &accs[t];
    if (p >= len)
      return ANA_ERR_INVALID;
    uint8_t flags = in[p++];
    if (flags & 1) {
      double d[4];
      if (p + sizeof d > len)
        return ANA_ERR_INVALID;
      memcpy(d, in + p, sizeof d);
      p += sizeof d;
      ana_acc_agg_merge_scalars(a, d[0], d[1], d[2], d[3]);
    }
    long k;
    if (flags & 2) {
      if (!ana_acc_agg_hll(a))
        return ANA_ERR_NOMEM;
      if ((k = ana_hll_decode_merge(a->hll, in + p, len - p)) < 0)
        return ANA_ERR_INVALID;
      p += (size_t)k;
    }
    if (flags & 4) {
      if (!ana_acc_agg_dd(a))
        return ANA_ERR_NOMEM;
      if ((k = ana_dds_decode_merge(a->dd, in + p, len - p)) < 0)
        return ANA_ERR_INVALID;
      p += (size_t)k;
    }
  }
  return p == len ? 0 : ANA_ERR_INVALID;
}

int ana_mq_cell_encode(const struct ana_mq *s, const struct ana_mq_cell *c, uint8_t **buf,
                       size_t *len, size_t *cap) {
  return accs_encode(c->accs, s->spec.n_terms, buf, len, cap);
}

int ana_mq_cell_merge_encoded(const struct ana_mq *s, struct ana_mq_cell *c, const uint8_t *blob,
                              size_t len) {
  return accs_merge_encoded(c->accs, s->spec.n_terms, blob, len);
}

int ana_mq_add_cell(struct ana_mq *s, int64_t start_ms, const char *group_key,
                    const uint8_t *blob, size_t len) {
  const struct ana_metric_query *q = s->q;
  char valbuf[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  snprintf(valbuf, sizeof valbuf, "%s", group_key);
  char *p = valbuf;
  for (size_t d = 0; d < s->spec.n_dims; d++) {
    values[d] = p;
    p += strcspn(p, "\x1f");
    if (*p)
      *p++ = '\0';
  }
  if (!dimension_kept(s, values))
    return 0;
  struct group *g = find_group(s, group_key, values);
  if (!g)
    return s->rc;
  int rc;
  if (start_ms < q->from_ms) {
    rc = accs_merge_encoded(g->previous, s->spec.n_terms, blob, len);
  } else {
    size_t b = ana_bucket_index(s->starts, s->n_buckets, q->to_ms, start_ms);
    rc = accs_merge_encoded(g->total, s->spec.n_terms, blob, len);
    if (rc == 0 && b < s->n_buckets)
      rc = accs_merge_encoded(&g->buckets[b * s->spec.n_terms], s->spec.n_terms, blob, len);
  }
  if (rc == ANA_ERR_NOMEM)
    s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else if (rc < 0)
    s->rc = ana_error_set(s->err, ANA_STATUS_DATA_LOSS, "metric rollups: a cell is malformed");
  return s->rc;
}

/* ------------------------------------------------------------------ */
/* answers */

static bool eval(const struct ana_mq *s, struct ana_acc_agg *accs, double *out) {
  double values[ANA_ACC_MAX_TERMS];
  for (size_t t = 0; t < s->spec.n_terms; t++)
    values[t] = ana_acc_agg_value(&accs[t], s->spec.terms[t]->fn);
  return ana_formula_eval(s->q->formula, values, out);
}

static Google__Protobuf__DoubleValue *boxed(struct ana_arena *a, bool ok, double v) {
  if (!ok)
    return NULL;
  Google__Protobuf__DoubleValue *d = ana_arena_alloc(a, sizeof *d);
  if (d) {
    google__protobuf__double_value__init(d);
    d->value = v;
  }
  return d;
}

static Google__Protobuf__Timestamp *timestamp_of(struct ana_arena *a, int64_t ms) {
  Google__Protobuf__Timestamp *t = ana_arena_alloc(a, sizeof *t);
  if (t) {
    google__protobuf__timestamp__init(t);
    t->seconds = ms / 1000;
    t->nanos = (int32_t)(ms % 1000) * 1000000;
    if (t->nanos < 0) {
      t->nanos += 1000000000;
      t->seconds--;
    }
  }
  return t;
}

static int rank_cmp(const void *pa, const void *pb) {
  const struct group *a = *(struct group *const *)pa, *b = *(struct group *const *)pb;
  if (a->has_rank != b->has_rank)
    return a->has_rank ? -1 : 1;
  if (a->has_rank && a->rank != b->rank)
    return a->rank > b->rank ? -1 : 1;
  /* Ties by the dimension values, all of them: an order that does not
   * depend on the order groups were seen in. */
  for (size_t d = 0; d < a->n_values; d++) {
    int c = strcmp(a->values[d], b->values[d]);
    if (c)
      return c;
  }
  return 0;
}

/* The summary: the metric's aggregation over the non-empty bucket values. */
static bool summarise(const char *aggregation, const double *v, const bool *ok, size_t n,
                      double *out) {
  double sum = 0, min = 0, max = 0, last = 0;
  size_t count = 0;
  for (size_t i = 0; i < n; i++) {
    if (!ok[i])
      continue;
    if (!count || v[i] < min)
      min = v[i];
    if (!count || v[i] > max)
      max = v[i];
    sum += v[i];
    last = v[i];
    count++;
  }
  if (strcmp(aggregation, "count") == 0) {
    *out = (double)count;
    return true;
  }
  if (count == 0)
    return false;
  if (strcmp(aggregation, "sum") == 0)
    *out = sum;
  else if (strcmp(aggregation, "min") == 0)
    *out = min;
  else if (strcmp(aggregation, "max") == 0)
    *out = max;
  else if (strcmp(aggregation, "last") == 0)
    *out = last;
  else
    *out = sum / (double)count; /* avg, the default */
  return true;
}

static Analytics__V1__MetricSeries *series_of(struct ana_mq *s, struct group *g,
                                              struct ana_arena *a, bool other) {
  const struct ana_metric_query *q = s->q;
  Analytics__V1__MetricSeries *ser = ana_arena_alloc(a, sizeof *ser);
  if (!ser)
    return NULL;
  analytics__v1__metric_series__init(ser);
  ser->n_dimensions = s->spec.n_dims;
  ser->dimensions =
      ana_arena_calloc(a, s->spec.n_dims ? s->spec.n_dims : 1, sizeof *ser->dimensions);
  for (size_t d = 0; ser->dimensions && d < s->spec.n_dims; d++) {
    Analytics__V1__MetricSeries__DimensionsEntry *e = ana_arena_alloc(a, sizeof *e);
    if (!e)
      return NULL;
    analytics__v1__metric_series__dimensions_entry__init(e);
    e->key = (char *)s->spec.dims[d];
    e->value = other ? "other" : ana_arena_strdup(a, g->values[d]);
    ser->dimensions[d] = e;
  }
  bool counter = strcmp(q->metric->type, "counter") == 0;
  bool histogram = strcmp(q->metric->type, "histogram") == 0;
  /* Histograms report percentiles of their first field term. */
  size_t hist_term = s->spec.n_terms;
  for (size_t t = 0; histogram && t < s->spec.n_terms; t++)
    if (s->spec.term_fields[t] && s->spec.terms[t]->fn != ANA_AGG_UNIQ) {
      hist_term = t;
      break;
    }
  double *vals = ana_arena_calloc(a, s->n_buckets ? s->n_buckets : 1, sizeof *vals);
  bool *oks = ana_arena_calloc(a, s->n_buckets ? s->n_buckets : 1, sizeof *oks);
  ser->n_buckets = s->n_buckets;
  ser->buckets = ana_arena_calloc(a, s->n_buckets ? s->n_buckets : 1, sizeof *ser->buckets);
  if (!vals || !oks || !ser->buckets)
    return NULL;
  for (size_t b = 0; b < s->n_buckets; b++) {
    Analytics__V1__MetricBucket *mb = ana_arena_alloc(a, sizeof *mb);
    if (!mb)
      return NULL;
    analytics__v1__metric_bucket__init(mb);
    struct ana_acc_agg *accs = &g->buckets[b * s->spec.n_terms];
    oks[b] = eval(s, accs, &vals[b]);
    mb->start = timestamp_of(a, s->starts[b]);
    mb->value = boxed(a, oks[b], vals[b]);
    if (counter) {
      int64_t end = b + 1 < s->n_buckets ? s->starts[b + 1] : q->to_ms;
      double secs = (double)(end - s->starts[b]) / 1000.0;
      mb->rate = boxed(a, oks[b] && secs > 0, vals[b] / secs);
    }
    if (hist_term < s->spec.n_terms && acc_has_values(&accs[hist_term])) {
      static const char *const names[] = {"p50", "p90", "p95", "p99"};
      static const double ps[] = {50, 90, 95, 99};
      mb->n_percentiles = 4;
      mb->percentiles = ana_arena_calloc(a, 4, sizeof *mb->percentiles);
      for (int i = 0; mb->percentiles && i < 4; i++) {
        Analytics__V1__MetricBucket__PercentilesEntry *e = ana_arena_alloc(a, sizeof *e);
        if (!e)
          return NULL;
        analytics__v1__metric_bucket__percentiles_entry__init(e);
        e->key = (char *)names[i];
        e->value = ana_acc_agg_percentile(&accs[hist_term], ps[i]);
        mb->percentiles[i] = e;
      }
    }
    ser->buckets[b] = mb;
  }
  double summary, total, prev;
  bool has_summary = summarise(q->metric->aggregation, vals, oks, s->n_buckets, &summary);
  bool has_total = eval(s, g->total, &total);
  bool has_prev = eval(s, g->previous, &prev);
  ser->summary = boxed(a, has_summary, summary);
  ser->total = boxed(a, has_total, total);
  ser->change = boxed(a, has_total && has_prev && prev != 0, (total - prev) / fabs(prev) * 100.0);
  return ser;
}

int ana_mq_answer(struct ana_mq *s, struct ana_arena *arena, Analytics__V1__MetricData *out,
                  struct ana_error *err) {
  const struct ana_metric_query *q = s->q;
  int rc = s->rc;
  if (rc < 0) {
    if (err)
      *err = *s->err;
    return rc;
  }
  /* Rank groups by their total, keep top N, fold the rest into "other". */
  for (size_t i = 0; i < s->n_groups; i++)
    s->groups[i]->has_rank = eval(s, s->groups[i]->total, &s->groups[i]->rank);
  if (s->n_groups) /* qsort must not see a NULL array, even empty */
    qsort(s->groups, s->n_groups, sizeof *s->groups, rank_cmp);
  size_t top = s->spec.n_dims ? (size_t)(q->top_n > 0 ? q->top_n : ANA_METRIC_DEFAULT_TOP_N)
                         : s->n_groups;
  struct group *other = NULL;
  if (s->n_groups > top) {
    other = group_new(s, "", (char *[MAX_DIMENSIONS]){0});
    for (size_t i = top; other && i < s->n_groups && rc == 0; i++) {
      struct group *g = s->groups[i];
      for (size_t k = 0; k < s->n_buckets * s->spec.n_terms && rc == 0; k++)
        rc = ana_acc_agg_merge(&other->buckets[k], &g->buckets[k]);
      for (size_t t = 0; t < s->spec.n_terms && rc == 0; t++) {
        rc = ana_acc_agg_merge(&other->total[t], &g->total[t]);
        if (rc == 0)
          rc = ana_acc_agg_merge(&other->previous[t], &g->previous[t]);
      }
    }
    if (!other || rc < 0) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
  }
  size_t shown = s->n_groups < top ? s->n_groups : top;
  if (shown == 0 && s->spec.n_dims == 0) {
    /* No events at all: still one series of empty buckets. */
    struct group *empty = find_group(s, "", (char *[MAX_DIMENSIONS]){0});
    shown = empty ? 1 : 0;
  }
  out->n_series = shown + (other ? 1 : 0);
  out->series = ana_arena_calloc(arena, out->n_series ? out->n_series : 1, sizeof *out->series);
  for (size_t i = 0; out->series && i < shown; i++)
    if (!(out->series[i] = series_of(s, s->groups[i], arena, false)))
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (other && out->series && rc == 0)
    if (!(out->series[shown] = series_of(s, other, arena, true)))
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  out->from = timestamp_of(arena, q->from_ms);
  out->to = timestamp_of(arena, q->to_ms);
  out->interval = (char *)ana_interval_name(q->interval);
  out->time_zone = (char *)(q->time_zone && q->time_zone[0] ? q->time_zone : "UTC");
out:
  group_free(other, s->n_buckets, s->spec.n_terms);
  return rc;
}

/* ------------------------------------------------------------------ */
/* preparation */

void ana_mq_destroy(struct ana_mq *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n_groups; i++)
    group_free(s->groups[i], s->n_buckets, s->spec.n_terms);
  ana_free(s->groups);
  ana_free(s->index);
  ana_acc_spec_fini(&s->spec);
  free(s->starts);
  ana_free(s);
}

struct ana_mq *ana_mq_create(const struct ana_metric_query *q, bool sketches,
                             struct ana_error *err) {
  struct ana_mq *s = ana_calloc(1, sizeof *s);
  if (!s) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  s->q = q;
  s->sketches = sketches;
  s->err = &s->own_err;
  ana_error_clear(s->err);
  if (ana_acc_spec_init(&s->spec, q->metric, q->formula, err) < 0)
    goto fail;
  /* Which events to read: only the named ones, unless a term wants any. */
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    const struct ana_agg_term *term = s->spec.terms[t];
    if (!term->event_name) {
      s->any = true;
      continue;
    }
    bool seen = false;
    for (size_t i = 0; i < s->n_names && !seen; i++)
      seen = strcmp(s->names[i], term->event_name) == 0;
    if (!seen)
      s->names[s->n_names++] = term->event_name;
  }
  if (q->from_ms < q->to_ms &&
      ana_buckets_make(q->from_ms, q->to_ms, q->interval, q->time_zone, ANA_METRIC_MAX_BUCKETS,
                       &s->starts, &s->n_buckets, err) < 0)
    goto fail;
  return s;
fail:
  ana_mq_destroy(s);
  return NULL;
}

const int64_t *ana_mq_bucket_starts(const struct ana_mq *s, size_t *n) {
  *n = s->n_buckets;
  return s->starts;
}

const char *const *ana_mq_names(const struct ana_mq *s, size_t *n, bool *any) {
  *n = s->n_names;
  *any = s->any;
  return s->names;
}

static int on_event(void *ctx, const struct ana_scanned_event *ev) {
  return ana_mq_add_event(ctx, ev) < 0;
}

int ana_metric_query_raw(const struct ana_event_store_ops *ops, void *store,
                         const struct ana_metric_query *q, struct ana_arena *arena,
                         Analytics__V1__MetricData *out, struct ana_error *err) {
  struct ana_mq *s = ana_mq_create(q, false, err);
  if (!s)
    return ANA_ERR_INVALID;
  int64_t span = q->to_ms - q->from_ms;
  int rc = ops->scan(store, q->account_id, q->from_ms - span, q->to_ms,
                     s->any ? NULL : s->names, s->any ? 0 : s->n_names, on_event, s, err);
  if (rc == 0)
    rc = ana_mq_answer(s, arena, out, err);
  ana_mq_destroy(s);
  return rc;
}

/* ------------------------------------------------------------------ */

static const char *const filter_ops[] = {"eq", "neq", "in", "gt", "gte", "lt", "lte",
                                         "contains", "exists"};

static bool valid_path(const char *p) {
  if (!p || !p[0] || strlen(p) > 256 || p[0] == '.' || p[strlen(p) - 1] == '.')
    return false;
  for (; *p; p++)
    if ((unsigned char)*p < 0x20 || (p[0] == '.' && p[1] == '.'))
      return false;
  return true;
}

int ana_metric_check_filters_and_dimensions(const Analytics__V1__Metric *m,
                                            struct ana_error *err) {
  for (size_t i = 0; i < m->n_filters; i++) {
    const Analytics__V1__MetricFilter *f = m->filters[i];
    if (!valid_path(f->field))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "filters[%zu].field: must be an event field or property path", i);
    bool known = false;
    for (size_t k = 0; k < sizeof filter_ops / sizeof filter_ops[0]; k++)
      known |= strcmp(f->op, filter_ops[k]) == 0;
    if (!known)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "filters[%zu].op: unknown operator \"%.32s\" (eq, neq, in, gt, gte, "
                           "lt, lte, contains, exists)",
                           i, f->op);
    bool needs_value = strcmp(f->op, "exists") != 0;
    if (needs_value && !f->value)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "filters[%zu].value: is required",
                           i);
    if (strcmp(f->op, "in") == 0 &&
        f->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "filters[%zu].value: \"in\" needs a list", i);
    if ((strcmp(f->op, "gt") == 0 || strcmp(f->op, "gte") == 0 || strcmp(f->op, "lt") == 0 ||
         strcmp(f->op, "lte") == 0) &&
        f->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "filters[%zu].value: \"%s\" needs a number", i, f->op);
  }
  if (m->n_dimensions > MAX_DIMENSIONS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "dimensions: at most %d dimensions",
                         MAX_DIMENSIONS);
  for (size_t i = 0; i < m->n_dimensions; i++) {
    if (!valid_path(m->dimensions[i]))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "dimensions[%zu]: \"%.64s\" is not an event field or property path", i,
                           m->dimensions[i]);
    for (size_t j = 0; j < i; j++)
      if (strcmp(m->dimensions[i], m->dimensions[j]) == 0)
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "dimensions[%zu]: \"%.64s\" is listed twice", i, m->dimensions[i]);
  }
  return 0;
}
