/* The reading of events for metrics, in one place: field access, filters,
 * group keys and per-term aggregates (acc_internal.h), used by metric
 * queries and rollups (query.c) and by the live accumulators below, so that
 * live values equal GetMetricData's. The live accumulators: per-group
 * aggregates of one metric over one bucket (the live metric stream's state). */
#include "ana_metric_acc.h"

#include "acc_internal.h"
#include "ana_alloc.h"
#include "ana_sketch.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMENSIONS ANA_ACC_MAX_DIMENSIONS
#define KEY_MAX ANA_ACC_KEY_MAX
#define VALUE_MAX ANA_ACC_VALUE_MAX

/* ------------------------------------------------------------------ */
/* field access */

/* A value read from an event: text and, when it is a number, the number. */
struct value {
  bool present;
  bool is_number;
  double number;
  const char *text; /* valid until the next read */
  char buf[64];
};

static json_t *row_props(struct ana_acc_row *r) {
  if (!r->parsed) {
    r->parsed = true;
    r->props = json_loads(r->ev->properties_json ? r->ev->properties_json : "{}", 0, NULL);
  }
  return r->props;
}

void ana_acc_row_fini(struct ana_acc_row *r) {
  json_decref(r->props);
  r->props = NULL;
  r->parsed = false;
}

/* path: "campaignId", "properties.order.total", "eventName", "context.ip"... */
static void read_field(struct ana_acc_row *r, const char *path, struct value *v) {
  memset(v, 0, sizeof *v);
  const struct ana_scanned_event *ev = r->ev;
  const char *top = NULL;
  if (strcmp(path, "eventType") == 0)
    top = ev->event_type;
  else if (strcmp(path, "eventName") == 0)
    top = ev->event_name;
  else if (strcmp(path, "sessionId") == 0)
    top = ev->session_id;
  else if (strcmp(path, "eventId") == 0)
    top = ev->event_id;
  if (top) {
    v->present = top[0] != '\0';
    v->text = top;
    return;
  }
  if (strncmp(path, "properties.", 11) == 0)
    path += 11;
  json_t *cur = row_props(r);
  char seg[256];
  while (cur && *path) {
    size_t n = strcspn(path, ".");
    if (n >= sizeof seg)
      return;
    memcpy(seg, path, n);
    seg[n] = '\0';
    cur = json_is_object(cur) ? json_object_get(cur, seg) : NULL;
    path += n + (path[n] == '.');
  }
  if (!cur || json_is_null(cur))
    return;
  v->present = true;
  if (json_is_number(cur)) {
    v->is_number = true;
    v->number = json_number_value(cur);
    snprintf(v->buf, sizeof v->buf, "%.15g", v->number);
    v->text = v->buf;
  } else if (json_is_string(cur)) {
    v->text = json_string_value(cur);
    char *end;
    v->number = strtod(v->text, &end);
    v->is_number = v->text[0] && !*end;
  } else if (json_is_boolean(cur)) {
    v->text = json_is_true(cur) ? "true" : "false";
  } else {
    v->text = "";
  }
}

/* ------------------------------------------------------------------ */
/* filters */

static bool value_equals(const struct value *v, const json_t *want) {
  if (json_is_number(want))
    return v->is_number && v->number == json_number_value(want);
  if (json_is_string(want))
    return strcmp(v->text, json_string_value(want)) == 0;
  if (json_is_boolean(want))
    return strcmp(v->text, json_is_true(want) ? "true" : "false") == 0;
  return false;
}

/* A metric filter's value, decoded from its google.protobuf.Value. */
static json_t *filter_value(const Google__Protobuf__Value *v) {
  if (!v)
    return json_null();
  switch (v->kind_case) {
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: return json_real(v->number_value);
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: return json_string(v->string_value);
  case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE: return json_boolean(v->bool_value);
  case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
    json_t *a = json_array();
    for (size_t i = 0; v->list_value && i < v->list_value->n_values; i++)
      json_array_append_new(a, filter_value(v->list_value->values[i]));
    return a;
  }
  default: return json_null();
  }
}

static bool filter_matches(struct ana_acc_row *r, const Analytics__V1__MetricFilter *f,
                           json_t *want) {
  struct value v;
  read_field(r, f->field, &v);
  const char *op = f->op;
  if (strcmp(op, "exists") == 0)
    return v.present;
  if (!v.present)
    return strcmp(op, "neq") == 0;
  if (strcmp(op, "eq") == 0)
    return value_equals(&v, want);
  if (strcmp(op, "neq") == 0)
    return !value_equals(&v, want);
  if (strcmp(op, "in") == 0) {
    size_t i;
    json_t *item;
    json_array_foreach(want, i, item) {
      if (value_equals(&v, item))
        return true;
    }
    return false;
  }
  if (strcmp(op, "contains") == 0)
    return json_is_string(want) && strstr(v.text, json_string_value(want)) != NULL;
  if (!v.is_number || !json_is_number(want))
    return false;
  double x = v.number, y = json_number_value(want);
  if (strcmp(op, "gt") == 0)
    return x > y;
  if (strcmp(op, "gte") == 0)
    return x >= y;
  if (strcmp(op, "lt") == 0)
    return x < y;
  if (strcmp(op, "lte") == 0)
    return x <= y;
  return false;
}


/* ------------------------------------------------------------------ */
/* the prepared metric */

int ana_acc_spec_init(struct ana_acc_spec *sp, const Analytics__V1__Metric *m,
                      const struct ana_formula *f, struct ana_error *err) {
  memset(sp, 0, sizeof *sp);
  sp->metric = m;
  size_t n_terms = ana_formula_term_count(f);
  if (n_terms > ANA_ACC_MAX_TERMS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "formula: too many terms");
  sp->n_terms = n_terms;
  for (size_t t = 0; t < n_terms; t++) {
    sp->terms[t] = ana_formula_term(f, t);
    if (sp->terms[t]->field_kind != ANA_FIELD_NONE && sp->terms[t]->field)
      sp->term_fields[t] = sp->terms[t]->field;
  }
  sp->n_dims = m->n_dimensions < MAX_DIMENSIONS ? m->n_dimensions : MAX_DIMENSIONS;
  for (size_t d = 0; d < sp->n_dims; d++)
    sp->dims[d] = m->dimensions[d];
  sp->filter_values = ana_calloc(m->n_filters ? m->n_filters : 1, sizeof *sp->filter_values);
  if (!sp->filter_values)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i < m->n_filters; i++)
    sp->filter_values[i] = filter_value(m->filters[i]->value);
  return 0;
}

void ana_acc_spec_fini(struct ana_acc_spec *sp) {
  for (size_t i = 0; sp->filter_values && i < sp->metric->n_filters; i++)
    json_decref(sp->filter_values[i]);
  ana_free(sp->filter_values);
  sp->filter_values = NULL;
}

bool ana_acc_row_group(const struct ana_acc_spec *sp, struct ana_acc_row *r,
                       char key[ANA_ACC_KEY_MAX], char **values,
                       char (*valbuf)[ANA_ACC_VALUE_MAX]) {
  for (size_t i = 0; i < sp->metric->n_filters; i++)
    if (!filter_matches(r, sp->metric->filters[i], sp->filter_values[i]))
      return false;
  size_t off = 0;
  for (size_t d = 0; d < sp->n_dims; d++) {
    struct value v;
    read_field(r, sp->dims[d], &v);
    snprintf(valbuf[d], VALUE_MAX, "%s", v.present ? v.text : "");
    values[d] = valbuf[d];
    off += (size_t)snprintf(key + off, KEY_MAX - off, "%s%s", d ? "\x1f" : "", valbuf[d]);
    if (off >= KEY_MAX)
      off = KEY_MAX - 1;
  }
  key[off] = '\0';
  return true;
}

/* ------------------------------------------------------------------ */
/* aggregates */

uint64_t ana_acc_hash_text(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h ? h : 1;
}

static int distinct_add(struct ana_acc_agg *a, uint64_t x) {
  if (a->distinct.len * 2 >= a->distinct.cap) {
    size_t cap = a->distinct.cap ? a->distinct.cap * 2 : 16;
    uint64_t *slots = ana_calloc(cap, sizeof *slots);
    if (!slots)
      return ANA_ERR_NOMEM;
    for (size_t i = 0; i < a->distinct.cap; i++) {
      if (!a->distinct.slots[i])
        continue;
      size_t j = a->distinct.slots[i] & (cap - 1);
      while (slots[j])
        j = (j + 1) & (cap - 1);
      slots[j] = a->distinct.slots[i];
    }
    ana_free(a->distinct.slots);
    a->distinct.slots = slots;
    a->distinct.cap = cap;
  }
  size_t j = x & (a->distinct.cap - 1);
  while (a->distinct.slots[j]) {
    if (a->distinct.slots[j] == x)
      return 0;
    j = (j + 1) & (a->distinct.cap - 1);
  }
  a->distinct.slots[j] = x;
  a->distinct.len++;
  return 0;
}

static int add_value(struct ana_acc_agg *a, double x) {
  if (a->n_values == a->cap_values) {
    size_t cap = a->cap_values ? a->cap_values * 2 : 16;
    double *v = ana_realloc(a->values, cap * sizeof *v);
    if (!v)
      return ANA_ERR_NOMEM;
    a->values = v;
    a->cap_values = cap;
  }
  a->values[a->n_values++] = x;
  return 0;
}

void ana_acc_agg_fini(struct ana_acc_agg *a) {
  /* Most aggregates hold only scalars; a query frees thousands. */
  if (!a->distinct.slots && !a->values && !a->hll && !a->dd)
    return;
  ana_free(a->distinct.slots);
  ana_free(a->values);
  ana_free(a->hll);
  if (a->dd)
    ana_dds_fini(a->dd);
  ana_free(a->dd);
}

struct ana_hll *ana_acc_agg_hll(struct ana_acc_agg *a) {
  if (!a->hll)
    a->hll = ana_calloc(1, sizeof *a->hll);
  return a->hll;
}

struct ana_ddsketch *ana_acc_agg_dd(struct ana_acc_agg *a) {
  if (!a->dd)
    a->dd = ana_calloc(1, sizeof *a->dd);
  return a->dd;
}

void ana_acc_agg_merge_scalars(struct ana_acc_agg *into, double count, double sum, double min,
                               double max) {
  if (count > 0) {
    if (into->count == 0 || min < into->min)
      into->min = min;
    if (into->count == 0 || max > into->max)
      into->max = max;
  }
  into->count += count;
  into->sum += sum;
}

int ana_acc_agg_merge(struct ana_acc_agg *into, const struct ana_acc_agg *from) {
  ana_acc_agg_merge_scalars(into, from->count, from->sum, from->min, from->max);
  for (size_t i = 0; i < from->distinct.cap; i++)
    if (from->distinct.slots[i] && distinct_add(into, from->distinct.slots[i]) < 0)
      return ANA_ERR_NOMEM;
  for (size_t i = 0; i < from->n_values; i++)
    if (add_value(into, from->values[i]) < 0)
      return ANA_ERR_NOMEM;
  if (from->hll) {
    if (!ana_acc_agg_hll(into))
      return ANA_ERR_NOMEM;
    ana_hll_merge(into->hll, from->hll);
  }
  if (from->dd && (!ana_acc_agg_dd(into) || ana_dds_merge(into->dd, from->dd) < 0))
    return ANA_ERR_NOMEM;
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Exact over the values, or from the sketch. */
double ana_acc_agg_percentile(struct ana_acc_agg *a, double p) {
  if (a->dd)
    return ana_dds_percentile(a->dd, p);
  if (a->n_values == 0)
    return NAN;
  qsort(a->values, a->n_values, sizeof *a->values, cmp_double);
  size_t rank = (size_t)ceil(p / 100.0 * (double)a->n_values);
  return a->values[rank ? rank - 1 : 0];
}

double ana_acc_agg_value(struct ana_acc_agg *a, enum ana_agg_fn fn) {
  switch (fn) {
  case ANA_AGG_COUNT: return a->count;
  case ANA_AGG_SUM: return a->sum;
  case ANA_AGG_AVG: return a->count > 0 ? a->sum / a->count : NAN;
  case ANA_AGG_MIN: return a->count > 0 ? a->min : NAN;
  case ANA_AGG_MAX: return a->count > 0 ? a->max : NAN;
  case ANA_AGG_UNIQ: return a->hll ? ana_hll_estimate(a->hll) : (double)a->distinct.len;
  case ANA_AGG_P50: return ana_acc_agg_percentile(a, 50);
  case ANA_AGG_P90: return ana_acc_agg_percentile(a, 90);
  case ANA_AGG_P95: return ana_acc_agg_percentile(a, 95);
  case ANA_AGG_P99: return ana_acc_agg_percentile(a, 99);
  }
  return NAN;
}

int ana_acc_row_add(const struct ana_acc_spec *sp, struct ana_acc_row *r, bool sketches,
                    struct ana_acc_agg *const *targets, size_t n_targets) {
  const struct ana_scanned_event *ev = r->ev;
  for (size_t t = 0; t < sp->n_terms; t++) {
    const struct ana_agg_term *term = sp->terms[t];
    if (term->event_name && strcmp(term->event_name, ev->event_name) != 0)
      continue;
    struct value v = {0};
    if (sp->term_fields[t]) {
      read_field(r, sp->term_fields[t], &v);
      if (!v.present)
        continue;
    }
    bool numeric = term->fn != ANA_AGG_COUNT && term->fn != ANA_AGG_UNIQ;
    if (numeric && !v.is_number)
      continue;
    for (size_t k = 0; k < n_targets; k++) {
      if (!targets[k])
        continue;
      struct ana_acc_agg *a = &targets[k][t];
      if (numeric) {
        if (a->count == 0 || v.number < a->min)
          a->min = v.number;
        if (a->count == 0 || v.number > a->max)
          a->max = v.number;
        a->sum += v.number;
        if (term->fn >= ANA_AGG_P50) {
          if (sketches ? !ana_acc_agg_dd(a) || ana_dds_add(a->dd, v.number) < 0
                       : add_value(a, v.number) < 0)
            return ANA_ERR_NOMEM;
        }
      } else if (term->fn == ANA_AGG_UNIQ) {
        if (sketches) {
          if (!ana_acc_agg_hll(a))
            return ANA_ERR_NOMEM;
          ana_hll_add_hash(a->hll, ana_hll_hash_text(v.text));
        } else if (distinct_add(a, ana_acc_hash_text(v.text)) < 0) {
          return ANA_ERR_NOMEM;
        }
      }
      a->count++;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* live accumulators: groups */

struct group {
  char *key;                /* dimension values joined by '\x1f' */
  char **values;            /* n_dims pointers into text */
  char *text;               /* the values, NUL-separated */
  struct ana_acc_agg *aggs; /* n_terms, exact form */
};

struct ana_metric_acc {
  struct ana_acc_spec spec;
  const struct ana_formula *formula;
  struct group **groups;
  size_t n_groups, cap_groups, max_groups;
  size_t *index; /* open addressing over key hashes: group + 1, 0 = free */
  size_t index_cap;
  size_t other; /* index + 1 of the "(other)" group, 0 = none yet */
};

static void group_free(struct group *g, size_t n_terms) {
  if (!g)
    return;
  for (size_t t = 0; g->aggs && t < n_terms; t++)
    ana_acc_agg_fini(&g->aggs[t]);
  ana_free(g->aggs);
  ana_free(g->key);
  ana_free(g->values);
  ana_free(g->text);
  ana_free(g);
}

static struct group *group_new(struct ana_metric_acc *acc, const char *key, char *const *values) {
  struct group *g = ana_calloc(1, sizeof *g);
  if (!g)
    return NULL;
  size_t len = 0;
  for (size_t d = 0; d < acc->spec.n_dims; d++)
    len += strlen(values[d]) + 1;
  g->key = ana_strdup(key);
  g->values = ana_calloc(acc->spec.n_dims ? acc->spec.n_dims : 1, sizeof *g->values);
  g->text = ana_malloc(len ? len : 1);
  g->aggs = ana_calloc(acc->spec.n_terms ? acc->spec.n_terms : 1, sizeof *g->aggs);
  if (!g->key || !g->values || !g->text || !g->aggs) {
    group_free(g, acc->spec.n_terms);
    return NULL;
  }
  char *p = g->text;
  for (size_t d = 0; d < acc->spec.n_dims; d++) {
    size_t n = strlen(values[d]);
    memcpy(p, values[d], n + 1);
    g->values[d] = p;
    p += n + 1;
  }
  return g;
}

static int index_put(struct ana_metric_acc *acc, const char *key, size_t gi) {
  if ((acc->n_groups + 1) * 2 > acc->index_cap) {
    size_t cap = acc->index_cap ? acc->index_cap * 2 : 32;
    size_t *ix = ana_calloc(cap, sizeof *ix);
    if (!ix)
      return ANA_ERR_NOMEM;
    for (size_t i = 0; i < acc->n_groups; i++) {
      if (acc->other == i + 1)
        continue;
      size_t j = ana_acc_hash_text(acc->groups[i]->key) & (cap - 1);
      while (ix[j])
        j = (j + 1) & (cap - 1);
      ix[j] = i + 1;
    }
    ana_free(acc->index);
    acc->index = ix;
    acc->index_cap = cap;
  }
  size_t j = ana_acc_hash_text(key) & (acc->index_cap - 1);
  while (acc->index[j])
    j = (j + 1) & (acc->index_cap - 1);
  acc->index[j] = gi + 1;
  return 0;
}

static int index_get(const struct ana_metric_acc *acc, const char *key) {
  if (!acc->index_cap)
    return -1;
  size_t j = ana_acc_hash_text(key) & (acc->index_cap - 1);
  while (acc->index[j]) {
    size_t gi = acc->index[j] - 1;
    if (acc->other != gi + 1 && strcmp(acc->groups[gi]->key, key) == 0)
      return (int)gi;
    j = (j + 1) & (acc->index_cap - 1);
  }
  return -1;
}

static int append_group(struct ana_metric_acc *acc, struct group *g) {
  if (acc->n_groups == acc->cap_groups) {
    size_t cap = acc->cap_groups ? acc->cap_groups * 2 : 16;
    struct group **gs = ana_realloc(acc->groups, cap * sizeof *gs);
    if (!gs)
      return ANA_ERR_NOMEM;
    acc->groups = gs;
    acc->cap_groups = cap;
  }
  acc->groups[acc->n_groups++] = g;
  return 0;
}

/* The group of key (values), made when new; the "(other)" group when full.
 * Returns its index or ANA_ERR_NOMEM. */
static int find_group(struct ana_metric_acc *acc, const char *key, char *const *values) {
  int gi = index_get(acc, key);
  if (gi >= 0)
    return gi;
  bool full = acc->n_groups - (acc->other ? 1 : 0) >= acc->max_groups;
  if (full) {
    if (acc->other)
      return (int)acc->other - 1;
    char *others[MAX_DIMENSIONS];
    for (size_t d = 0; d < acc->spec.n_dims; d++)
      others[d] = ANA_METRIC_ACC_OTHER;
    struct group *g = group_new(acc, "", others);
    if (!g || append_group(acc, g) < 0) {
      group_free(g, acc->spec.n_terms);
      return ANA_ERR_NOMEM;
    }
    acc->other = acc->n_groups;
    return (int)acc->n_groups - 1;
  }
  struct group *g = group_new(acc, key, values);
  if (!g || append_group(acc, g) < 0) {
    group_free(g, acc->spec.n_terms);
    return ANA_ERR_NOMEM;
  }
  if (index_put(acc, key, acc->n_groups - 1) < 0) {
    acc->n_groups--;
    group_free(g, acc->spec.n_terms);
    return ANA_ERR_NOMEM;
  }
  return (int)acc->n_groups - 1;
}

/* ------------------------------------------------------------------ */

struct ana_metric_acc *ana_metric_acc_create(const Analytics__V1__Metric *m,
                                             const struct ana_formula *f, size_t max_groups,
                                             struct ana_error *err) {
  struct ana_metric_acc *acc = ana_calloc(1, sizeof *acc);
  if (!acc) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  acc->formula = f;
  acc->max_groups = max_groups ? max_groups : 1;
  if (ana_acc_spec_init(&acc->spec, m, f, err) < 0)
    goto fail;
  /* the one group exists from the start, as in GetMetricData */
  if (acc->spec.n_dims == 0 && find_group(acc, "", NULL) < 0) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  return acc;
fail:
  ana_metric_acc_destroy(acc);
  return NULL;
}

void ana_metric_acc_destroy(struct ana_metric_acc *acc) {
  if (!acc)
    return;
  for (size_t i = 0; i < acc->n_groups; i++)
    group_free(acc->groups[i], acc->spec.n_terms);
  ana_free(acc->groups);
  ana_free(acc->index);
  ana_acc_spec_fini(&acc->spec);
  ana_free(acc);
}

bool ana_metric_acc_wants(const struct ana_metric_acc *acc, const char *event_name) {
  for (size_t t = 0; t < acc->spec.n_terms; t++)
    if (!acc->spec.terms[t]->event_name ||
        strcmp(acc->spec.terms[t]->event_name, event_name) == 0)
      return true;
  return false;
}

int ana_metric_acc_add(struct ana_metric_acc *acc, const struct ana_scanned_event *ev) {
  if (!ana_metric_acc_wants(acc, ev->event_name))
    return ANA_ERR_NOT_FOUND;
  struct ana_acc_row r = ANA_ACC_ROW(ev);
  char key[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  char valbuf[MAX_DIMENSIONS][VALUE_MAX];
  int rc = ANA_ERR_NOT_FOUND;
  if (!ana_acc_row_group(&acc->spec, &r, key, values, valbuf))
    goto out;
  rc = find_group(acc, key, values);
  if (rc < 0)
    goto out;
  struct ana_acc_agg *targets[1] = {acc->groups[rc]->aggs};
  int added = ana_acc_row_add(&acc->spec, &r, false, targets, 1);
  if (added < 0)
    rc = added;
out:
  ana_acc_row_fini(&r);
  return rc;
}

size_t ana_metric_acc_group_count(const struct ana_metric_acc *acc) {
  return acc->n_groups;
}

const char *const *ana_metric_acc_group_values(const struct ana_metric_acc *acc, size_t g) {
  return g < acc->n_groups ? (const char *const *)acc->groups[g]->values : NULL;
}

size_t ana_metric_acc_dimension_count(const struct ana_metric_acc *acc) {
  return acc->spec.n_dims;
}

bool ana_metric_acc_value(struct ana_metric_acc *acc, size_t g, double *out) {
  if (g >= acc->n_groups)
    return false;
  double values[ANA_ACC_MAX_TERMS];
  for (size_t t = 0; t < acc->spec.n_terms; t++)
    values[t] = ana_acc_agg_value(&acc->groups[g]->aggs[t], acc->spec.terms[t]->fn);
  return ana_formula_eval(acc->formula, values, out);
}
