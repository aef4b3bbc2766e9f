/* Metric queries: per-group and per-bucket accumulators for every term of
 * the formula, fed by raw events (one scan of the range and of the previous
 * period) or by rollup cells (rollup_query.c), then the formula per bucket, the
 * summary, the total, the change, and top-N groups with the rest folded into
 * "other". The same accumulators, in sketch form, are the rollup cells; the
 * rollup cache keeps cells packed (only the scalars each term reads).
 * Reading an event (fields, filters, group key) and the per-term aggregates
 * are acc.c's (acc_internal.h), shared with the live metric stream. */
#include "ana_metric_query.h"

#include "acc_internal.h"
#include "ana_alloc.h"
#include "ana_sketch.h"
#include "ana_timestamp.h"
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

/* A row of flat bucket accumulators (ana_mq_adopt_flat) for one group. */
struct flat_ref {
  const double *row; /* n_buckets packed cells */
  struct flat_ref *next;
};

/* Flat accumulators handed over by the rollup path, owned by the query. */
struct flat {
  double *acc;
  struct flat_ref *refs;
  struct flat *next;
};

struct group {
  char *key;     /* dimension values joined by '\x1f' */
  char **values; /* one per dimension */
  size_t n_values;
  uint64_t hash; /* of the joined key */
  /* n_buckets * n_terms, allocated on first use: with top-N, the rollup
   * path fills buckets only for the groups shown (and "other"). */
  struct ana_acc_agg *buckets;
  struct ana_acc_agg *total;    /* n_terms */
  struct ana_acc_agg *previous; /* n_terms */
  double rank;
  bool has_rank;
  bool folded;           /* ranked below the top N: its buckets go to "other" */
  struct flat_ref *flat; /* rows of flat bucket accumulators, in s->flats */
};

/* How a term is packed (ana_mq_cell_pack): the scalars its function reads
 * (a sum packs as an average: its count tells an empty bucket),
 * or its sketch segment verbatim. */
enum pack_kind { PACK_COUNT, PACK_AVG, PACK_MIN, PACK_MAX, PACK_SKETCH };

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
  bool ranked;
  struct group *other; /* the groups below the top N, folded; NULL when none */
  struct flat *flats;  /* ana_mq_adopt_flat's */
  /* The formula on a bucket no event counted in: the same for every one. */
  bool empty_known, empty_ok;
  double empty_val;
  double *vals; /* series_of's scratch: n_buckets values, then oks, then kept */
  /* The packed cell layout: per term its kind and first double slot. */
  uint8_t pack_kind[ANA_ACC_MAX_TERMS];
  uint16_t pack_slot[ANA_ACC_MAX_TERMS];
  size_t n_slots;
  bool any_sketch;
  bool additive; /* every term packs into sums only (count, sum, avg) */
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
    ana_acc_agg_fini(&g->total[i]);
    ana_acc_agg_fini(&g->previous[i]);
  }
  ana_free(g->buckets);
  ana_free(g);
}

/* One allocation: the group, its total and previous aggregates, its values
 * and its key (a query may make thousands). */
static struct group *group_new(struct ana_mq *s, const char *key, char *const *values) {
  size_t n_terms = s->spec.n_terms, n_dims = s->spec.n_dims, key_len = strlen(key) + 1;
  size_t size = sizeof(struct group) + 2 * n_terms * sizeof(struct ana_acc_agg) +
                n_dims * sizeof(char *) + key_len;
  struct group *g = ana_calloc(1, size);
  if (!g)
    return NULL;
  g->total = (struct ana_acc_agg *)(g + 1);
  g->previous = g->total + n_terms;
  g->values = (char **)(g->previous + n_terms);
  g->key = (char *)(g->values + n_dims);
  memcpy(g->key, key, key_len);
  g->hash = ana_acc_hash_text(key);
  /* values point into key: the key is the values joined. */
  g->n_values = n_dims;
  char *p = g->key;
  for (size_t d = 0; d < n_dims; d++) {
    g->values[d] = p;
    p += strlen(values[d] ? values[d] : "");
    if (*p)
      *p++ = '\0';
  }
  return g;
}

/* g's buckets, allocated on first use; NULL with s->rc set when out of
 * memory. */
static struct ana_acc_agg *group_buckets(struct ana_mq *s, struct group *g) {
  if (!g->buckets) {
    size_t cells = s->n_buckets * s->spec.n_terms;
    g->buckets = ana_calloc(cells ? cells : 1, sizeof *g->buckets);
    if (!g->buckets)
      s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  return g->buckets;
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

/* Adds the event of r to its group, its filters already passed. */
static int add_row(struct ana_mq *s, struct ana_acc_row *r) {
  const struct ana_metric_query *q = s->q;
  const struct ana_scanned_event *ev = r->ev;
  char key[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  char valbuf[MAX_DIMENSIONS][ANA_ACC_VALUE_MAX];
  ana_acc_row_key(&s->spec, r, key, values, valbuf);
  if (!dimension_kept(s, values))
    return s->rc;
  struct group *g = find_group(s, key, values);
  if (!g)
    return s->rc;
  bool previous = ev->timestamp_ms < q->from_ms;
  size_t b = previous ? s->n_buckets
                      : ana_bucket_index(s->starts, s->n_buckets, q->to_ms, ev->timestamp_ms);
  struct ana_acc_agg *bucket = NULL;
  if (!previous && b < s->n_buckets) {
    struct ana_acc_agg *bs = group_buckets(s, g);
    if (!bs)
      return s->rc;
    bucket = &bs[b * s->spec.n_terms];
  }
  struct ana_acc_agg *targets[2] = {previous ? g->previous : g->total, bucket};
  if (ana_acc_row_add(&s->spec, r, s->sketches, targets, 2) < 0)
    s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return s->rc;
}

int ana_mq_add_event(struct ana_mq *s, const struct ana_scanned_event *ev) {
  if (!wanted(s, ev->event_name))
    return s->rc;
  struct ana_acc_row r;
  ana_acc_row_init(&r, ev);
  if (ana_acc_row_passes(&s->spec, &r))
    add_row(s, &r);
  ana_acc_row_fini(&r);
  return s->rc;
}

int ana_mq_feed_row(struct ana_mq *s, struct ana_acc_row *r, ana_mq_cells_fn cells_fn, void *ctx) {
  char key[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  char valbuf[MAX_DIMENSIONS][ANA_ACC_VALUE_MAX];
  if (!wanted(s, r->ev->event_name) || !ana_acc_row_group(&s->spec, r, key, values, valbuf))
    return 0;
  struct ana_mq_cell *cells[8];
  int rc = cells_fn(ctx, key, cells, 8);
  if (rc <= 0)
    return rc;
  struct ana_acc_agg *targets[8];
  for (int i = 0; i < rc; i++)
    targets[i] = cells[i]->accs;
  rc = ana_acc_row_add(&s->spec, r, s->sketches, targets, (size_t)rc);
  return rc < 0 ? rc : 0;
}

int ana_mq_feed_cells(struct ana_mq *s, const struct ana_scanned_event *ev,
                      ana_mq_cells_fn cells_fn, void *ctx) {
  struct ana_acc_row r;
  ana_acc_row_init(&r, ev);
  int rc = ana_mq_feed_row(s, &r, cells_fn, ctx);
  ana_acc_row_fini(&r);
  return rc;
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

/* Merges one term's encoding (flags, scalars, sketches) at in into a;
 * returns the bytes read or a negative error. */
static long term_merge_encoded(struct ana_acc_agg *a, const uint8_t *in, size_t len) {
  size_t p = 0;
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
      return k == ANA_ERR_NOMEM ? ANA_ERR_NOMEM : ANA_ERR_INVALID;
    p += (size_t)k;
  }
  return (long)p;
}

static int accs_merge_encoded(struct ana_acc_agg *accs, size_t n, const uint8_t *in, size_t len) {
  size_t p = 0;
  for (size_t t = 0; t < n; t++) {
    long k = term_merge_encoded(&accs[t], in + p, len - p);
    if (k < 0)
      return (int)k;
    p += (size_t)k;
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

/* ------------------------------------------------------------------ */
/* packed cells: what the rollup cache keeps in memory */

/* The layout follows from the terms' functions: a count needs the count, a
 * sum the sum, avg both, min and max the count (is there one?) and the
 * extreme; uniq and percentiles only their sketch, whose segment of the
 * encoding is kept as it is. A cell of count terms packs into 8 bytes a
 * term instead of 33. */
static void pack_layout(struct ana_mq *s) {
  size_t slot = 0;
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    enum pack_kind k;
    size_t n;
    switch (s->spec.terms[t]->fn) {
    case ANA_AGG_COUNT: k = PACK_COUNT, n = 1; break;
    /* A sum keeps its count too: a bucket with events whose values add up
     * to 0 is not empty (omit_empty_buckets), on either path. */
    case ANA_AGG_SUM: k = PACK_AVG, n = 2; break;
    case ANA_AGG_AVG: k = PACK_AVG, n = 2; break;
    case ANA_AGG_MIN: k = PACK_MIN, n = 2; break;
    case ANA_AGG_MAX: k = PACK_MAX, n = 2; break;
    default: k = PACK_SKETCH, n = 0; break;
    }
    s->pack_kind[t] = (uint8_t)k;
    s->pack_slot[t] = (uint16_t)slot;
    s->any_sketch |= k == PACK_SKETCH;
    slot += n;
  }
  s->n_slots = slot;
  s->additive = !s->any_sketch;
  for (size_t t = 0; t < s->spec.n_terms; t++)
    s->additive &= s->pack_kind[t] == PACK_COUNT || s->pack_kind[t] == PACK_AVG;
}

bool ana_mq_packed_fixed(const struct ana_mq *s, size_t *size, bool *additive) {
  *size = s->n_slots * sizeof(double);
  *additive = s->additive;
  return !s->any_sketch && s->n_slots > 0;
}

void ana_mq_packed_merge(const struct ana_mq *s, double *into, const uint8_t *from) {
  double v[2];
  if (s->additive) {
    for (size_t i = 0; i < s->n_slots; i++) {
      memcpy(v, from + i * sizeof(double), sizeof(double));
      into[i] += v[0];
    }
    return;
  }
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    size_t k = s->pack_slot[t];
    switch ((enum pack_kind)s->pack_kind[t]) {
    case PACK_COUNT:
      memcpy(v, from + k * sizeof(double), sizeof(double));
      into[k] += v[0];
      break;
    case PACK_AVG:
      memcpy(v, from + k * sizeof(double), 2 * sizeof(double));
      into[k] += v[0];
      into[k + 1] += v[1];
      break;
    case PACK_MIN:
    case PACK_MAX:
      memcpy(v, from + k * sizeof(double), 2 * sizeof(double));
      if (v[0] > 0) {
        bool min = s->pack_kind[t] == PACK_MIN;
        if (into[k] == 0 || (min ? v[1] < into[k + 1] : v[1] > into[k + 1]))
          into[k + 1] = v[1];
        into[k] += v[0];
      }
      break;
    case PACK_SKETCH: break;
    }
  }
}

int ana_mq_cell_pack(const struct ana_mq *s, const uint8_t *in, size_t len, uint8_t **buf,
                     size_t *blen, size_t *cap) {
  size_t fixed = s->n_slots * sizeof(double);
  /* The sketch segments follow the slots; at most the whole encoding. */
  if (*blen + fixed + len > *cap) {
    size_t ncap = *cap ? *cap * 2 : 256;
    while (ncap < *blen + fixed + len)
      ncap *= 2;
    uint8_t *b = ana_realloc(*buf, ncap);
    if (!b)
      return ANA_ERR_NOMEM;
    *buf = b;
    *cap = ncap;
  }
  uint8_t *out = *buf + *blen;
  size_t o = fixed, p = 0;
  memset(out, 0, fixed);
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    size_t start = p;
    if (p >= len)
      return ANA_ERR_INVALID;
    uint8_t flags = in[p++];
    double d[4] = {0, 0, 0, 0};
    if (flags & 1) {
      if (p + sizeof d > len)
        return ANA_ERR_INVALID;
      memcpy(d, in + p, sizeof d);
      p += sizeof d;
    }
    long k;
    if ((flags & 2) && (k = ana_hll_encoded_len(in + p, len - p)) < 0)
      return ANA_ERR_INVALID;
    if (flags & 2)
      p += (size_t)k;
    if ((flags & 4) && (k = ana_dds_encoded_len(in + p, len - p)) < 0)
      return ANA_ERR_INVALID;
    if (flags & 4)
      p += (size_t)k;
    double v[2] = {0, 0};
    size_t n = 0;
    switch ((enum pack_kind)s->pack_kind[t]) {
    case PACK_COUNT: v[0] = d[0], n = 1; break;
    case PACK_AVG: v[0] = d[0], v[1] = d[1], n = 2; break;
    case PACK_MIN: v[0] = d[0], v[1] = d[2], n = 2; break;
    case PACK_MAX: v[0] = d[0], v[1] = d[3], n = 2; break;
    case PACK_SKETCH:
      memcpy(out + o, in + start, p - start);
      o += p - start;
      break;
    }
    if (n)
      memcpy(out + s->pack_slot[t] * sizeof(double), v, n * sizeof(double));
  }
  if (p != len)
    return ANA_ERR_INVALID;
  *blen += o;
  return 0;
}

static int merge_packed(const struct ana_mq *s, struct ana_acc_agg *accs, const uint8_t *p,
                        size_t len) {
  size_t fixed = s->n_slots * sizeof(double);
  if (len < fixed)
    return ANA_ERR_INVALID;
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    struct ana_acc_agg *a = &accs[t];
    double v[2];
    const uint8_t *q = p + s->pack_slot[t] * sizeof(double);
    switch ((enum pack_kind)s->pack_kind[t]) {
    case PACK_COUNT:
      memcpy(v, q, sizeof(double));
      a->count += v[0];
      break;
    case PACK_AVG:
      memcpy(v, q, 2 * sizeof(double));
      a->count += v[0];
      a->sum += v[1];
      break;
    case PACK_MIN:
      memcpy(v, q, 2 * sizeof(double));
      if (v[0] > 0) {
        if (a->count == 0 || v[1] < a->min)
          a->min = v[1];
        a->count += v[0];
      }
      break;
    case PACK_MAX:
      memcpy(v, q, 2 * sizeof(double));
      if (v[0] > 0) {
        if (a->count == 0 || v[1] > a->max)
          a->max = v[1];
        a->count += v[0];
      }
      break;
    case PACK_SKETCH: break;
    }
  }
  if (!s->any_sketch)
    return len == fixed ? 0 : ANA_ERR_INVALID;
  size_t o = fixed;
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    if (s->pack_kind[t] != PACK_SKETCH)
      continue;
    long k = term_merge_encoded(&accs[t], p + o, len - o);
    if (k < 0)
      return (int)k;
    o += (size_t)k;
  }
  return o == len ? 0 : ANA_ERR_INVALID;
}

/* ------------------------------------------------------------------ */
/* the rollup path: totals, ranking, then buckets */

int ana_mq_group(struct ana_mq *s, const char *group_key, struct ana_mq_group **out) {
  char valbuf[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  *out = NULL;
  if (s->rc < 0)
    return s->rc;
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
  *out = (struct ana_mq_group *)g;
  return s->rc;
}

int ana_mq_nomem(struct ana_mq *s) {
  return s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

bool ana_mq_group_folded(const struct ana_mq_group *g) {
  return ((const struct group *)g)->folded;
}

/* Where a cell of group g and bucket b (ANA_MQ_PREVIOUS: the previous
 * period) counts in this part; NULL when nowhere (or out of memory, with
 * s->rc set). */
static struct ana_acc_agg *part_target(struct ana_mq *s, struct group *g, size_t b,
                                       enum ana_mq_part part) {
  if (part == ANA_MQ_TOTALS)
    return b == ANA_MQ_PREVIOUS ? g->previous : g->total;
  if (b >= s->n_buckets)
    return NULL;
  if (g->folded)
    g = s->other;
  struct ana_acc_agg *bs = group_buckets(s, g);
  return bs ? &bs[b * s->spec.n_terms] : NULL;
}

static int merge_failed(struct ana_mq *s, int rc) {
  if (rc == ANA_ERR_NOMEM)
    s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else if (rc < 0)
    s->rc = ana_error_set(s->err, ANA_STATUS_DATA_LOSS, "metric rollups: a cell is malformed");
  return s->rc;
}

int ana_mq_add_packed(struct ana_mq *s, struct ana_mq_group *g, size_t bucket,
                      enum ana_mq_part part, const uint8_t *packed, size_t len) {
  struct ana_acc_agg *t = part_target(s, (struct group *)g, bucket, part);
  if (!t)
    return s->rc;
  int rc = merge_packed(s, t, packed, len);
  return rc < 0 ? merge_failed(s, rc) : 0;
}

int ana_mq_add_cell(struct ana_mq *s, struct ana_mq_group *g, size_t bucket, enum ana_mq_part part,
                    const struct ana_mq_cell *c) {
  struct ana_acc_agg *t = part_target(s, (struct group *)g, bucket, part);
  for (size_t i = 0; t && i < s->spec.n_terms; i++) {
    int rc = ana_acc_agg_merge(&t[i], &c->accs[i]);
    if (rc < 0)
      return merge_failed(s, rc);
  }
  return s->rc;
}

int ana_mq_adopt_flat(struct ana_mq *s, struct ana_mq_group *const *groups, size_t n, double *acc) {
  struct flat *f = ana_calloc(1, sizeof *f);
  struct flat_ref *refs = ana_calloc(n ? n : 1, sizeof *refs);
  if (!f || !refs) {
    ana_free(f);
    ana_free(refs);
    ana_free(acc);
    return ana_mq_nomem(s);
  }
  *f = (struct flat){acc, refs, s->flats};
  s->flats = f;
  for (size_t i = 0; i < n; i++) {
    struct group *g = (struct group *)groups[i];
    if (g->folded) /* a folded group stands for "other" */
      g = s->other;
    refs[i] = (struct flat_ref){acc + i * s->n_buckets * s->n_slots, g->flat};
    g->flat = &refs[i];
  }
  return s->rc;
}

/* ------------------------------------------------------------------ */
/* answers */

/* No event counted in any term of these aggregates. */
static bool accs_empty(const struct ana_mq *s, const struct ana_acc_agg *accs) {
  for (size_t t = 0; t < s->spec.n_terms; t++)
    if (accs[t].count > 0 || acc_has_values(&accs[t]))
      return false;
  return true;
}

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

/* The aggregates of bucket b of g: its own (the raw path, cells one by
 * one) or, when it has none, its rows of flat accumulators merged into
 * scratch (n_terms, no sketch: nothing to free). */
static struct ana_acc_agg *bucket_accs(struct ana_mq *s, struct group *g, size_t b,
                                       struct ana_acc_agg *scratch) {
  size_t nt = s->spec.n_terms;
  if (g->buckets)
    return &g->buckets[b * nt];
  memset(scratch, 0, nt * sizeof *scratch);
  for (struct flat_ref *r = g->flat; r; r = r->next)
    if (merge_packed(s, scratch, (const uint8_t *)(r->row + b * s->n_slots),
                     s->n_slots * sizeof(double)) < 0)
      break; /* cannot happen: the layout is the query's own */
  return scratch;
}

/* One series. Its buckets, their values and the bucket start times (shared
 * by every series: stamps) are arrays, not one arena allocation a point;
 * with omit_empty_buckets only the buckets kept are allocated. */
static Analytics__V1__MetricSeries *series_of(struct ana_mq *s, struct group *g,
                                              struct ana_arena *a, bool other,
                                              Google__Protobuf__Timestamp *stamps) {
  const struct ana_metric_query *q = s->q;
  size_t nb = s->n_buckets, nt = s->spec.n_terms;
  Analytics__V1__MetricSeries *ser = ana_arena_alloc(a, sizeof *ser);
  if (!ser)
    return NULL;
  /* Flat rows beside cells of its own (a tail of raw events): into its own. */
  if (g->buckets && g->flat) {
    for (struct flat_ref *r = g->flat; r; r = r->next)
      for (size_t b = 0; b < nb; b++)
        if (merge_packed(s, &g->buckets[b * nt], (const uint8_t *)(r->row + b * s->n_slots),
                         s->n_slots * sizeof(double)) < 0)
          return NULL;
    g->flat = NULL;
  }
  analytics__v1__metric_series__init(ser);
  ser->n_dimensions = s->spec.n_dims;
  ser->dimensions =
      ana_arena_calloc(a, s->spec.n_dims ? s->spec.n_dims : 1, sizeof *ser->dimensions);
  Analytics__V1__MetricSeries__DimensionsEntry *dims =
      ana_arena_calloc(a, s->spec.n_dims ? s->spec.n_dims : 1, sizeof *dims);
  if (!ser->dimensions || !dims)
    return NULL;
  for (size_t d = 0; d < s->spec.n_dims; d++) {
    Analytics__V1__MetricSeries__DimensionsEntry *e = &dims[d];
    analytics__v1__metric_series__dimensions_entry__init(e);
    e->key = (char *)s->spec.dims[d];
    e->value = other ? "other" : ana_arena_strdup(a, g->values[d]);
    ser->dimensions[d] = e;
  }
  bool counter = strcmp(q->metric->type, "counter") == 0;
  bool histogram = strcmp(q->metric->type, "histogram") == 0;
  /* Histograms report percentiles of their first field term. */
  size_t hist_term = nt;
  for (size_t t = 0; histogram && t < nt; t++)
    if (s->spec.term_fields[t] && s->spec.terms[t]->fn != ANA_AGG_UNIQ) {
      hist_term = t;
      break;
    }
  /* Per bucket scratch, the same for every series (not part of the answer). */
  size_t n1 = nb ? nb : 1;
  if (!s->vals && !(s->vals = ana_malloc(n1 * (sizeof(double) + 2 * sizeof(bool)))))
    return NULL;
  double *vals = s->vals;
  bool *oks = (bool *)(vals + n1), *kept = oks + n1;
  /* First the values (the summary reads every bucket), then the points. */
  struct ana_acc_agg scratch[ANA_ACC_MAX_TERMS];
  size_t n_kept = 0;
  for (size_t b = 0; b < nb; b++) {
    /* Flat rows all zero: an empty bucket, without building its aggregates. */
    bool zero = !g->buckets;
    for (struct flat_ref *r = g->flat; zero && r; r = r->next)
      for (size_t k = 0; zero && k < s->n_slots; k++)
        zero = r->row[b * s->n_slots + k] == 0;
    if (zero && s->empty_known) {
      oks[b] = s->empty_ok;
      vals[b] = s->empty_val;
      kept[b] = !q->omit_empty_buckets;
      n_kept += kept[b];
      continue;
    }
    struct ana_acc_agg *accs = bucket_accs(s, g, b, scratch);
    bool empty = accs_empty(s, accs);
    if (empty && !s->empty_known) {
      s->empty_ok = eval(s, accs, &s->empty_val);
      s->empty_known = true;
    }
    if (empty) {
      oks[b] = s->empty_ok;
      vals[b] = s->empty_val;
    } else {
      oks[b] = eval(s, accs, &vals[b]);
    }
    kept[b] = !q->omit_empty_buckets || !empty;
    n_kept += kept[b];
  }
  size_t k1 = n_kept ? n_kept : 1;
  Analytics__V1__MetricBucket *mbs = ana_arena_alloc(a, k1 * sizeof *mbs);
  /* value, and rate for counters */
  Google__Protobuf__DoubleValue *boxes = ana_arena_alloc(a, k1 * (counter ? 2 : 1) * sizeof *boxes);
  ser->buckets = ana_arena_alloc(a, k1 * sizeof *ser->buckets);
  if (!mbs || !boxes || !ser->buckets)
    return NULL;
  size_t nbox = 0, k = 0;
  for (size_t b = 0; b < nb; b++) {
    if (!kept[b])
      continue;
    Analytics__V1__MetricBucket *mb = &mbs[k];
    analytics__v1__metric_bucket__init(mb);
    mb->start = &stamps[b];
    if (oks[b]) {
      google__protobuf__double_value__init(&boxes[nbox]);
      boxes[nbox].value = vals[b];
      mb->value = &boxes[nbox++];
    }
    if (counter) {
      int64_t end = b + 1 < nb ? s->starts[b + 1] : q->to_ms;
      double secs = (double)(end - s->starts[b]) / 1000.0;
      if (oks[b] && secs > 0) {
        google__protobuf__double_value__init(&boxes[nbox]);
        boxes[nbox].value = vals[b] / secs;
        mb->rate = &boxes[nbox++];
      }
    }
    /* Percentiles need values or a sketch: cells of its own, never flat rows. */
    struct ana_acc_agg *accs = g->buckets ? &g->buckets[b * nt] : NULL;
    if (accs && hist_term < nt && acc_has_values(&accs[hist_term])) {
      static const char *const names[] = {"p50", "p90", "p95", "p99"};
      static const double ps[] = {50, 90, 95, 99};
      Analytics__V1__MetricBucket__PercentilesEntry *es = ana_arena_calloc(a, 4, sizeof *es);
      mb->percentiles = ana_arena_calloc(a, 4, sizeof *mb->percentiles);
      if (!es || !mb->percentiles)
        return NULL;
      mb->n_percentiles = 4;
      for (int i = 0; i < 4; i++) {
        analytics__v1__metric_bucket__percentiles_entry__init(&es[i]);
        es[i].key = (char *)names[i];
        es[i].value = ana_acc_agg_percentile(&accs[hist_term], ps[i]);
        mb->percentiles[i] = &es[i];
      }
    }
    ser->buckets[k++] = mb;
  }
  ser->n_buckets = k;
  double summary, total, prev;
  bool has_summary = summarise(q->metric->aggregation, vals, oks, nb, &summary);
  bool has_total = eval(s, g->total, &total);
  bool has_prev = eval(s, g->previous, &prev);
  ser->summary = boxed(a, has_summary, summary);
  ser->total = boxed(a, has_total, total);
  ser->change = boxed(a, has_total && has_prev && prev != 0, (total - prev) / fabs(prev) * 100.0);
  return ser;
}

/* The number of groups shown before the rest is folded into "other". */
static size_t top_count(const struct ana_mq *s) {
  const struct ana_metric_query *q = s->q;
  return s->spec.n_dims ? (size_t)(q->top_n > 0 ? q->top_n : ANA_METRIC_DEFAULT_TOP_N)
                        : s->n_groups;
}

int ana_mq_rank(struct ana_mq *s) {
  if (s->ranked || s->rc < 0)
    return s->rc;
  s->ranked = true;
  /* Rank groups by their total, keep top N, fold the rest into "other". */
  for (size_t i = 0; i < s->n_groups; i++)
    s->groups[i]->has_rank = eval(s, s->groups[i]->total, &s->groups[i]->rank);
  if (s->n_groups) /* qsort must not see a NULL array, even empty */
    qsort(s->groups, s->n_groups, sizeof *s->groups, rank_cmp);
  size_t top = top_count(s);
  if (s->n_groups <= top)
    return 0;
  int rc = 0;
  struct group *other = group_new(s, "", (char *[MAX_DIMENSIONS]){0});
  if (!other)
    goto nomem;
  s->other = other;
  for (size_t i = top; i < s->n_groups && rc == 0; i++) {
    struct group *g = s->groups[i];
    g->folded = true;
    /* Buckets filled before the ranking (the raw path) move to "other". */
    if (g->buckets) {
      if (!group_buckets(s, other))
        return s->rc;
      for (size_t k = 0; k < s->n_buckets * s->spec.n_terms && rc == 0; k++)
        rc = ana_acc_agg_merge(&other->buckets[k], &g->buckets[k]);
    }
    for (size_t t = 0; t < s->spec.n_terms && rc == 0; t++) {
      rc = ana_acc_agg_merge(&other->total[t], &g->total[t]);
      if (rc == 0)
        rc = ana_acc_agg_merge(&other->previous[t], &g->previous[t]);
    }
  }
  if (rc == 0)
    return 0;
nomem:
  return s->rc = ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

int ana_mq_answer(struct ana_mq *s, struct ana_arena *arena, Analytics__V1__MetricData *out,
                  struct ana_error *err) {
  const struct ana_metric_query *q = s->q;
  int rc = ana_mq_rank(s);
  if (rc < 0) {
    if (err)
      *err = *s->err;
    return rc;
  }
  size_t top = top_count(s);
  size_t shown = s->n_groups < top ? s->n_groups : top;
  if (shown == 0 && s->spec.n_dims == 0) {
    /* No events at all: still one series of empty buckets. */
    struct group *empty = find_group(s, "", (char *[MAX_DIMENSIONS]){0});
    shown = empty ? 1 : 0;
  }
  Google__Protobuf__Timestamp *stamps =
      ana_arena_calloc(arena, s->n_buckets ? s->n_buckets : 1, sizeof *stamps);
  for (size_t b = 0; stamps && b < s->n_buckets; b++) {
    int64_t ms = s->starts[b];
    ana_timestamp_set(&stamps[b], ms);
  }
  out->n_series = shown + (s->other ? 1 : 0);
  out->series = ana_arena_calloc(arena, out->n_series ? out->n_series : 1, sizeof *out->series);
  if (!stamps || !out->series)
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; rc == 0 && i < shown; i++)
    if (!(out->series[i] = series_of(s, s->groups[i], arena, false, stamps)))
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (s->other && rc == 0)
    if (!(out->series[shown] = series_of(s, s->other, arena, true, stamps)))
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  out->from = ana_timestamp_new(arena, q->from_ms);
  out->to = ana_timestamp_new(arena, q->to_ms);
  out->interval = (char *)ana_interval_name(q->interval);
  out->time_zone = (char *)(q->time_zone && q->time_zone[0] ? q->time_zone : "UTC");
  return rc;
}

/* ------------------------------------------------------------------ */
/* preparation */

void ana_mq_destroy(struct ana_mq *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n_groups; i++)
    group_free(s->groups[i], s->n_buckets, s->spec.n_terms);
  group_free(s->other, s->n_buckets, s->spec.n_terms);
  for (struct flat *f = s->flats, *next; f; f = next) {
    next = f->next;
    ana_free(f->acc);
    ana_free(f->refs);
    ana_free(f);
  }
  ana_free(s->vals);
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
  pack_layout(s);
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

/* The store's aggregates of one group and bucket, as a cell in the totals and the bucket. */
static int on_aggregates(void *ctx, const char *key, int64_t bucket_ms, const double *aggs,
                         const struct ana_event_agg_values *values) {
  struct ana_mq *s = ctx;
  struct ana_mq_group *g;
  if (ana_mq_group(s, key, &g) < 0 || !g)
    return s->rc < 0;
  struct ana_mq_cell *c = ana_mq_cell_new(s);
  if (!c)
    return ana_mq_nomem(s);
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    ana_acc_agg_merge_scalars(&c->accs[t], aggs[4 * t], aggs[4 * t + 1], aggs[4 * t + 2],
                              aggs[4 * t + 3]);
    /* percentiles and uniq: the values themselves, merged across buckets and groups as rows'
     * are (the totals, the previous period, "other") */
    if (ana_acc_agg_add_numbers(&c->accs[t], values[t].numbers, values[t].n_numbers) < 0 ||
        ana_acc_agg_add_texts(&c->accs[t], values[t].texts, values[t].n_texts) < 0) {
      ana_mq_cell_free(s, c);
      return ana_mq_nomem(s);
    }
  }
  size_t b = bucket_ms == INT64_MIN
                 ? ANA_MQ_PREVIOUS
                 : ana_bucket_index(s->starts, s->n_buckets, s->q->to_ms, bucket_ms);
  ana_mq_add_cell(s, g, b, ANA_MQ_TOTALS, c);
  if (b != ANA_MQ_PREVIOUS)
    ana_mq_add_cell(s, g, b, ANA_MQ_BUCKETS, c);
  ana_mq_cell_free(s, c);
  return s->rc < 0;
}

/* The raw path run by the store (ops->aggregate) when the metric reads only what it can
 * aggregate exactly: counts, numeric scalars and percentiles of top-level properties, uniq and
 * counts of top-level properties or event fields, dimensions of event fields or top-level
 * properties, filters comparing strings or numbers. 1 done, 0 not done, or a negative error. */
static int raw_aggregated(const struct ana_event_store_ops *ops, void *store, struct ana_mq *s,
                          struct ana_error *err) {
  static const char *const tops[] = {NULL, "eventType", "eventName", "sessionId", "eventId"};
  const struct ana_metric_query *q = s->q;
  struct ana_event_agg_term terms[ANA_ACC_MAX_TERMS];
  const char *dims[MAX_DIMENSIONS];
  struct ana_event_agg_filter filters[8];
  const char *texts[64];
  size_t n_texts = 0;
  if (!ops->aggregate || q->metric->n_filters > 8 || q->from_ms >= q->to_ms)
    return 0;
  /* Filters comparing strings with strings or numbers with a number. */
  for (size_t i = 0; i < q->metric->n_filters; i++) {
    const struct ana_acc_field *f = &s->spec.filter_refs[i];
    json_t *want = s->spec.filter_values[i];
    const char *op = q->metric->filters[i]->op;
    if (f->nested || (!f->top && !f->path[0]) || f->top >= sizeof tops / sizeof tops[0])
      return 0;
    for (size_t k = 1; !f->top && k < sizeof tops / sizeof tops[0]; k++)
      if (strcmp(f->path, tops[k]) == 0)
        return 0; /* a property named like an event field */
    filters[i] =
        (struct ana_event_agg_filter){f->top ? tops[f->top] : f->path, op, texts + n_texts, 0, 0};
    if (strcmp(op, "in") == 0) {
      size_t j;
      json_t *item;
      json_array_foreach(want, j, item) {
        if (!json_is_string(item) || n_texts == sizeof texts / sizeof texts[0])
          return 0;
        texts[n_texts++] = json_string_value(item);
        filters[i].n_values++;
      }
    } else if (strcmp(op, "eq") == 0 || strcmp(op, "neq") == 0 || strcmp(op, "contains") == 0) {
      if (!json_is_string(want) || n_texts == sizeof texts / sizeof texts[0])
        return 0;
      texts[n_texts++] = json_string_value(want);
      filters[i].n_values = 1;
    } else if (op[0] == 'g' || op[0] == 'l') {
      if (!json_is_number(want) || f->top)
        return 0;
      filters[i].number = json_number_value(want);
    } else if (strcmp(op, "exists") != 0) {
      return 0;
    }
  }
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    const struct ana_agg_term *term = s->spec.terms[t];
    const struct ana_acc_field *f = s->spec.term_fields[t] ? &s->spec.term_refs[t] : NULL;
    bool percentile = term->fn >= ANA_AGG_P50 && term->fn <= ANA_AGG_P99;
    bool numeric = (term->fn >= ANA_AGG_SUM && term->fn <= ANA_AGG_MAX) || percentile;
    if ((numeric && (!f || f->top)) || (f && (f->nested || f->top >= sizeof tops / sizeof tops[0])))
      return 0;
    for (size_t k = 1; f && !f->top && k < sizeof tops / sizeof tops[0]; k++)
      if (strcmp(f->path, tops[k]) == 0)
        return 0; /* a property named like an event field */
    terms[t] =
        (struct ana_event_agg_term){term->event_name, f ? (f->top ? tops[f->top] : f->path) : NULL,
                                    numeric, percentile, term->fn == ANA_AGG_UNIQ};
  }
  for (size_t d = 0; d < s->spec.n_dims; d++) {
    const struct ana_acc_field *f = &s->spec.dim_refs[d];
    if (f->nested || f->top >= sizeof tops / sizeof tops[0])
      return 0;
    dims[d] = f->top ? tops[f->top] : f->path;
    for (size_t i = 1; !f->top && i < sizeof tops / sizeof tops[0]; i++)
      if (strcmp(f->path, tops[i]) == 0)
        return 0; /* a property named like an event field */
  }
  struct ana_event_agg_query aq = {
      .account_id = q->account_id,
      .from_ms = ana_metric_query_previous_from(q),
      .split_ms = q->from_ms,
      .to_ms = q->to_ms,
      .names = s->any ? NULL : s->names,
      .n_names = s->any ? 0 : s->n_names,
      .interval = ana_interval_name(q->interval),
      .time_zone = q->time_zone,
      .terms = terms,
      .n_terms = s->spec.n_terms,
      .dimensions = dims,
      .n_dimensions = s->spec.n_dims,
      .filters = filters,
      .n_filters = q->metric->n_filters,
  };
  return ops->aggregate(store, &aq, on_aggregates, on_event, s, err);
}

int ana_metric_query_raw(const struct ana_event_store_ops *ops, void *store,
                         const struct ana_metric_query *q, struct ana_arena *arena,
                         Analytics__V1__MetricData *out, struct ana_error *err) {
  struct ana_mq *s = ana_mq_create(q, false, err);
  if (!s)
    return ANA_ERR_INVALID;
  int rc = raw_aggregated(ops, store, s, err);
  if (rc == 0)
    rc = ops->scan(store, q->account_id, ana_metric_query_previous_from(q), q->to_ms,
                   s->any ? NULL : s->names, s->any ? 0 : s->n_names, on_event, s, err);
  else if (rc == 1)
    rc = 0;
  if (rc == 0)
    rc = ana_mq_answer(s, arena, out, err);
  ana_mq_destroy(s);
  return rc;
}

/* One scan feeding every query of a batch. Each event is read once for
 * all of them: the queries that read its name are looked up once, its
 * properties parsed once, and the filters shared by several queries (the
 * same array) checked once. */
struct batch {
  struct ana_mq **states;
  size_t n;
  const char *const *names; /* the union of the queries' names */
  size_t n_names;
  /* By name: the queries reading it (wants[k * n .. ], n_wants[k]); the
   * last row (k = n_names) lists the queries reading any name. */
  size_t *wants, *n_wants;
  size_t *leader; /* per query: the first query with the same filters */
  int8_t *pass;   /* per query, per event: 1, 0, or -1 not yet known */
};

static int on_batch_event(void *ctx, const struct ana_scanned_event *ev) {
  struct batch *b = ctx;
  size_t k = 0;
  while (k < b->n_names && strcmp(b->names[k], ev->event_name) != 0)
    k++;
  /* Names not read by a query that names them: only those reading any. */
  const size_t *list[2] = {&b->wants[k * b->n], &b->wants[b->n_names * b->n]};
  size_t n_list[2] = {k < b->n_names ? b->n_wants[k] : 0, b->n_wants[b->n_names]};
  if (!n_list[0] && !n_list[1])
    return 0;
  struct ana_acc_row r;
  ana_acc_row_init(&r, ev);
  memset(b->pass, -1, b->n);
  int rc = 0;
  for (size_t l = 0; l < 2 && rc == 0; l++)
    for (size_t j = 0; j < n_list[l] && rc == 0; j++) {
      struct ana_mq *s = b->states[list[l][j]];
      size_t lead = b->leader[list[l][j]];
      if (b->pass[lead] < 0)
        b->pass[lead] = ana_acc_row_passes(&b->states[lead]->spec, &r);
      if (b->pass[lead] && add_row(s, &r) < 0)
        rc = 1;
    }
  ana_acc_row_fini(&r);
  return rc;
}

int ana_metric_query_adhoc_batch(const struct ana_event_store_ops *ops, void *store,
                                 const struct ana_metric_adhoc *a, size_t n,
                                 const struct ana_metric_query *q, struct ana_arena *arena,
                                 Analytics__V1__MetricData *outs, struct ana_error *err) {
  int rc = 0;
  Analytics__V1__Metric *metrics = ana_calloc(n ? n : 1, sizeof *metrics);
  struct ana_formula **formulas = ana_calloc(n ? n : 1, sizeof *formulas);
  struct ana_metric_query *queries = ana_calloc(n ? n : 1, sizeof *queries);
  struct ana_mq **states = ana_calloc(n ? n : 1, sizeof *states);
  const char **names = ana_calloc(n * ANA_FORMULA_MAX_TERMS + 1, sizeof *names);
  size_t n_names = 0, *wants = NULL, *n_wants = NULL, *leader = NULL;
  int8_t *pass = NULL;
  bool any = false;
  if (!metrics || !formulas || !queries || !states || !names) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    Analytics__V1__Metric *m = &metrics[i];
    analytics__v1__metric__init(m);
    m->name = "ad hoc";
    m->type = "gauge";
    m->formula = (char *)a[i].formula;
    m->aggregation = (char *)(a[i].aggregation ? a[i].aggregation : "sum");
    m->filters = (Analytics__V1__MetricFilter **)a[i].filters;
    m->n_filters = a[i].n_filters;
    m->dimensions = (char **)a[i].dimensions;
    m->n_dimensions = a[i].n_dimensions;
    if (ana_metric_check_filters_and_dimensions(m, err) < 0 ||
        !(formulas[i] = ana_formula_parse(a[i].formula, NULL, err, NULL))) {
      rc = ANA_ERR_INVALID;
      goto out;
    }
    queries[i] = *q;
    queries[i].metric = m;
    queries[i].formula = formulas[i];
    if (!(states[i] = ana_mq_create(&queries[i], false, err))) {
      rc = ANA_ERR_INVALID;
      goto out;
    }
    size_t k;
    bool all;
    const char *const *own = ana_mq_names(states[i], &k, &all);
    any |= all;
    for (size_t j = 0; j < k; j++) {
      bool seen = false;
      for (size_t x = 0; x < n_names && !seen; x++)
        seen = strcmp(names[x], own[j]) == 0;
      if (!seen)
        names[n_names++] = own[j];
    }
  }
  wants = ana_calloc((n_names + 1) * n + 1, sizeof *wants);
  n_wants = ana_calloc(n_names + 1, sizeof *n_wants);
  leader = ana_calloc(n + 1, sizeof *leader);
  pass = ana_calloc(n + 1, 1);
  if (!wants || !n_wants || !leader || !pass) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    size_t k;
    bool all;
    const char *const *own = ana_mq_names(states[i], &k, &all);
    if (all)
      wants[n_names * n + n_wants[n_names]++] = i;
    for (size_t x = 0; x < n_names && !all; x++)
      for (size_t j = 0; j < k; j++)
        if (strcmp(names[x], own[j]) == 0) {
          wants[x * n + n_wants[x]++] = i;
          break;
        }
    leader[i] = i;
    for (size_t j = 0; j < i; j++)
      if (a[j].filters == a[i].filters && a[j].n_filters == a[i].n_filters) {
        leader[i] = j;
        break;
      }
  }
  struct batch b = {states, n, names, n_names, wants, n_wants, leader, pass};
  rc = ops->scan(store, q->account_id, ana_metric_query_previous_from(q), q->to_ms,
                 any ? NULL : names, any ? 0 : n_names, on_batch_event, &b, err);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    analytics__v1__metric_data__init(&outs[i]);
    rc = ana_mq_answer(states[i], arena, &outs[i], err);
  }
out:
  ana_free(wants);
  ana_free(n_wants);
  ana_free(leader);
  ana_free(pass);
  for (size_t i = 0; states && i < n; i++)
    ana_mq_destroy(states[i]);
  for (size_t i = 0; formulas && i < n; i++)
    ana_formula_free(formulas[i]);
  ana_free(names);
  ana_free(states);
  ana_free(queries);
  ana_free(formulas);
  ana_free(metrics);
  return rc;
}

/* ------------------------------------------------------------------ */

/* The group key of series ser for the dimensions of s: its values of
 * them joined by '\x1f'. False when ser lacks one. */
static bool series_key(const struct ana_mq *s, const Analytics__V1__MetricSeries *ser, char *key,
                       size_t cap) {
  size_t o = 0;
  key[0] = '\0';
  for (size_t d = 0; d < s->spec.n_dims; d++) {
    const char *v = NULL;
    for (size_t k = 0; k < ser->n_dimensions && !v; k++)
      if (strcmp(ser->dimensions[k]->key, s->spec.dims[d]) == 0)
        v = ser->dimensions[k]->value;
    if (!v)
      return false;
    int n = snprintf(key + o, cap - o, "%s%s", d ? "\x1f" : "", v);
    if (n < 0 || (size_t)n >= cap - o)
      return false;
    o += (size_t)n;
  }
  return true;
}

/* Adds count to term t of group key's part (bucket b, or ANA_MQ_PREVIOUS). */
static int add_count(struct ana_mq *s, const char *key, size_t t, size_t b, enum ana_mq_part part,
                     double count) {
  struct ana_mq_group *g;
  double packed[ANA_ACC_MAX_TERMS] = {0};
  int rc = ana_mq_group(s, key, &g);
  if (rc < 0 || !g || count == 0)
    return rc;
  packed[s->pack_slot[t]] = count;
  return ana_mq_add_packed(s, g, b, part, (const uint8_t *)packed, s->n_slots * sizeof(double));
}

/* 1 when every series of d holds no "other" and nb buckets. */
static bool source_usable(const Analytics__V1__MetricData *d, size_t nb, bool buckets) {
  /* An answer asked with topN 1000 folds groups only past 1000 series. */
  if (!d || d->n_series > 1000)
    return false;
  for (size_t i = 0; buckets && i < d->n_series; i++)
    if (d->series[i]->n_buckets != nb)
      return false;
  return true;
}

int ana_metric_query_adhoc_from(const struct ana_metric_adhoc *a, const struct ana_metric_query *q,
                                const struct ana_metric_adhoc_source *src, size_t n_src,
                                struct ana_arena *arena, Analytics__V1__MetricData *out,
                                struct ana_error *err) {
  Analytics__V1__Metric m = ANALYTICS__V1__METRIC__INIT;
  m.name = "ad hoc";
  m.type = "gauge";
  m.formula = (char *)a->formula;
  m.aggregation = (char *)(a->aggregation ? a->aggregation : "sum");
  m.filters = (Analytics__V1__MetricFilter **)a->filters;
  m.n_filters = a->n_filters;
  m.dimensions = (char **)a->dimensions;
  m.n_dimensions = a->n_dimensions;
  struct ana_metric_query query = *q;
  struct ana_mq *s = NULL;
  int rc = 0;
  if (ana_metric_check_filters_and_dimensions(&m, err) < 0 ||
      !(query.formula = ana_formula_parse(a->formula, NULL, err, NULL)))
    return ANA_ERR_INVALID;
  query.metric = &m;
  if (!(s = ana_mq_create(&query, false, err))) {
    rc = ANA_ERR_INVALID;
    goto out;
  }
  /* Every term a count with a source, every source complete. */
  for (size_t t = 0; t < s->spec.n_terms; t++) {
    bool found = false;
    for (size_t i = 0; i < n_src && !found; i++)
      found = src[i].term == t;
    if (s->pack_kind[t] != PACK_COUNT || !found)
      goto out;
  }
  for (size_t i = 0; i < n_src; i++)
    if (src[i].term >= s->spec.n_terms || !source_usable(src[i].current, s->n_buckets, true) ||
        !source_usable(src[i].previous, 0, false))
      goto out;
  char key[KEY_MAX];
  /* Totals first (the groups are those of the current answers: events of
   * the range or of the previous period), then the ranking, then buckets. */
  for (size_t i = 0; i < n_src && rc == 0; i++)
    for (size_t k = 0; k < src[i].current->n_series && rc == 0; k++) {
      const Analytics__V1__MetricSeries *ser = src[i].current->series[k];
      if (!series_key(s, ser, key, sizeof key))
        goto out;
      rc = add_count(s, key, src[i].term, 0, ANA_MQ_TOTALS, ser->total ? ser->total->value : 0);
    }
  for (size_t i = 0; i < n_src && rc == 0; i++)
    for (size_t k = 0; k < src[i].previous->n_series && rc == 0; k++) {
      const Analytics__V1__MetricSeries *ser = src[i].previous->series[k];
      if (!series_key(s, ser, key, sizeof key))
        goto out;
      /* Only into groups of the range's answers: a group of the period
       * before the previous one has no events here. */
      uint64_t h = ana_acc_hash_text(key);
      bool known = false;
      for (size_t j = h & (s->index_cap - 1); s->index_cap && s->index[j] && !known;
           j = (j + 1) & (s->index_cap - 1))
        known = s->index[j]->hash == h && group_is(s, s->index[j], key);
      if (known && ser->total)
        rc = add_count(s, key, src[i].term, ANA_MQ_PREVIOUS, ANA_MQ_TOTALS, ser->total->value);
    }
  if (rc == 0)
    rc = ana_mq_rank(s);
  for (size_t i = 0; i < n_src && rc == 0; i++)
    for (size_t k = 0; k < src[i].current->n_series && rc == 0; k++) {
      const Analytics__V1__MetricSeries *ser = src[i].current->series[k];
      if (!series_key(s, ser, key, sizeof key))
        goto out;
      for (size_t b = 0; b < s->n_buckets && rc == 0; b++) {
        const Analytics__V1__MetricBucket *bk = ser->buckets[b];
        if (bk->start && ana_timestamp_ms(bk->start) != s->starts[b])
          goto out;
        if (bk->value)
          rc = add_count(s, key, src[i].term, b, ANA_MQ_BUCKETS, bk->value->value);
      }
    }
  if (rc == 0)
    rc = ana_mq_answer(s, arena, out, err) < 0 ? ANA_ERR_INVALID : 1;
  else
    *err = *s->err;
out:
  ana_mq_destroy(s);
  ana_formula_free((struct ana_formula *)query.formula);
  return rc;
}

static const char *const filter_ops[] = {"eq", "neq", "in",       "gt",    "gte",
                                         "lt", "lte", "contains", "exists"};

static bool valid_path(const char *p) {
  if (!p || !p[0] || strlen(p) > 256 || p[0] == '.' || p[strlen(p) - 1] == '.')
    return false;
  for (; *p; p++)
    if ((unsigned char)*p < 0x20 || (p[0] == '.' && p[1] == '.'))
      return false;
  return true;
}

int ana_metric_check_filters_and_dimensions(const Analytics__V1__Metric *m, struct ana_error *err) {
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
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "filters[%zu].value: is required", i);
    if (strcmp(f->op, "in") == 0 && f->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE)
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
