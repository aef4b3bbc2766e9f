/* Incremental per-group accumulators of one metric over one bucket (the live
 * metric stream's state). Field reading, filters and aggregates follow
 * query.c exactly, so that live values equal GetMetricData's.
 * TODO(metrics): query.c and the rollups could share these accumulators. */
#include "ana_metric_acc.h"

#include "ana_alloc.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMENSIONS 16
#define MAX_TERMS 64
#define KEY_MAX 1024
#define VALUE_MAX 128

/* ------------------------------------------------------------------ */
/* field access (as query.c reads fields) */

struct value {
  bool present;
  bool is_number;
  double number;
  const char *text;
  char buf[64];
};

struct row {
  const struct ana_scanned_event *ev;
  json_t *props;
  bool parsed;
};

static json_t *row_props(struct row *r) {
  if (!r->parsed) {
    r->parsed = true;
    r->props = json_loads(r->ev->properties_json ? r->ev->properties_json : "{}", 0, NULL);
  }
  return r->props;
}

static void read_field(struct row *r, const char *path, struct value *v) {
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
/* filters (as query.c applies them) */

static bool value_equals(const struct value *v, const json_t *want) {
  if (json_is_number(want))
    return v->is_number && v->number == json_number_value(want);
  if (json_is_string(want))
    return strcmp(v->text, json_string_value(want)) == 0;
  if (json_is_boolean(want))
    return strcmp(v->text, json_is_true(want) ? "true" : "false") == 0;
  return false;
}

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

static bool filter_matches(struct row *r, const Analytics__V1__MetricFilter *f, json_t *want) {
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
/* aggregates */

struct hashset {
  uint64_t *slots;
  size_t cap, len;
};

static uint64_t hash_text(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h ? h : 1;
}

static int hashset_add(struct hashset *h, uint64_t x) {
  if (h->len * 2 >= h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 16;
    uint64_t *slots = ana_calloc(cap, sizeof *slots);
    if (!slots)
      return ANA_ERR_NOMEM;
    for (size_t i = 0; i < h->cap; i++) {
      if (!h->slots[i])
        continue;
      size_t j = h->slots[i] & (cap - 1);
      while (slots[j])
        j = (j + 1) & (cap - 1);
      slots[j] = h->slots[i];
    }
    ana_free(h->slots);
    h->slots = slots;
    h->cap = cap;
  }
  size_t j = x & (h->cap - 1);
  while (h->slots[j]) {
    if (h->slots[j] == x)
      return 0;
    j = (j + 1) & (h->cap - 1);
  }
  h->slots[j] = x;
  h->len++;
  return 0;
}

struct agg {
  double count, sum, min, max;
  struct hashset distinct;
  double *values; /* percentile terms: every value (exact, as query.c) */
  size_t n_values, cap_values;
};

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double percentile(struct agg *a, double p) {
  if (a->n_values == 0)
    return NAN;
  qsort(a->values, a->n_values, sizeof *a->values, cmp_double);
  size_t rank = (size_t)ceil(p / 100.0 * (double)a->n_values);
  return a->values[rank ? rank - 1 : 0];
}

static double agg_value(struct agg *a, enum ana_agg_fn fn) {
  switch (fn) {
  case ANA_AGG_COUNT: return a->count;
  case ANA_AGG_SUM: return a->sum;
  case ANA_AGG_AVG: return a->count > 0 ? a->sum / a->count : NAN;
  case ANA_AGG_MIN: return a->count > 0 ? a->min : NAN;
  case ANA_AGG_MAX: return a->count > 0 ? a->max : NAN;
  case ANA_AGG_UNIQ: return (double)a->distinct.len;
  case ANA_AGG_P50: return percentile(a, 50);
  case ANA_AGG_P90: return percentile(a, 90);
  case ANA_AGG_P95: return percentile(a, 95);
  case ANA_AGG_P99: return percentile(a, 99);
  }
  return NAN;
}

/* ------------------------------------------------------------------ */
/* groups */

struct group {
  char *key;          /* dimension values joined by '\x1f' */
  char **values;      /* n_dims pointers into text */
  char *text;         /* the values, NUL-separated */
  struct agg *aggs;   /* n_terms */
};

struct ana_metric_acc {
  const Analytics__V1__Metric *metric;
  const struct ana_formula *formula;
  size_t n_terms;
  const struct ana_agg_term *terms[MAX_TERMS];
  size_t n_dims;
  const char *dims[MAX_DIMENSIONS];
  json_t **filter_values;
  struct group **groups;
  size_t n_groups, cap_groups, max_groups;
  size_t *index; /* open addressing over key hashes: group + 1, 0 = free */
  size_t index_cap;
  size_t other; /* index + 1 of the "(other)" group, 0 = none yet */
};

static void group_free(struct group *g, size_t n_terms) {
  if (!g)
    return;
  for (size_t t = 0; g->aggs && t < n_terms; t++) {
    ana_free(g->aggs[t].distinct.slots);
    ana_free(g->aggs[t].values);
  }
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
  for (size_t d = 0; d < acc->n_dims; d++)
    len += strlen(values[d]) + 1;
  g->key = ana_strdup(key);
  g->values = ana_calloc(acc->n_dims ? acc->n_dims : 1, sizeof *g->values);
  g->text = ana_malloc(len ? len : 1);
  g->aggs = ana_calloc(acc->n_terms ? acc->n_terms : 1, sizeof *g->aggs);
  if (!g->key || !g->values || !g->text || !g->aggs) {
    group_free(g, acc->n_terms);
    return NULL;
  }
  char *p = g->text;
  for (size_t d = 0; d < acc->n_dims; d++) {
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
      size_t j = hash_text(acc->groups[i]->key) & (cap - 1);
      while (ix[j])
        j = (j + 1) & (cap - 1);
      ix[j] = i + 1;
    }
    ana_free(acc->index);
    acc->index = ix;
    acc->index_cap = cap;
  }
  size_t j = hash_text(key) & (acc->index_cap - 1);
  while (acc->index[j])
    j = (j + 1) & (acc->index_cap - 1);
  acc->index[j] = gi + 1;
  return 0;
}

static int index_get(const struct ana_metric_acc *acc, const char *key) {
  if (!acc->index_cap)
    return -1;
  size_t j = hash_text(key) & (acc->index_cap - 1);
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
    for (size_t d = 0; d < acc->n_dims; d++)
      others[d] = ANA_METRIC_ACC_OTHER;
    struct group *g = group_new(acc, "", others);
    if (!g || append_group(acc, g) < 0) {
      group_free(g, acc->n_terms);
      return ANA_ERR_NOMEM;
    }
    acc->other = acc->n_groups;
    return (int)acc->n_groups - 1;
  }
  struct group *g = group_new(acc, key, values);
  if (!g || append_group(acc, g) < 0) {
    group_free(g, acc->n_terms);
    return ANA_ERR_NOMEM;
  }
  if (index_put(acc, key, acc->n_groups - 1) < 0) {
    acc->n_groups--;
    group_free(g, acc->n_terms);
    return ANA_ERR_NOMEM;
  }
  return (int)acc->n_groups - 1;
}

/* ------------------------------------------------------------------ */

struct ana_metric_acc *ana_metric_acc_create(const Analytics__V1__Metric *m,
                                             const struct ana_formula *f, size_t max_groups,
                                             struct ana_error *err) {
  size_t n_terms = ana_formula_term_count(f);
  if (n_terms > MAX_TERMS) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "formula: too many terms");
    return NULL;
  }
  struct ana_metric_acc *acc = ana_calloc(1, sizeof *acc);
  if (!acc)
    goto nomem;
  acc->metric = m;
  acc->formula = f;
  acc->n_terms = n_terms;
  for (size_t t = 0; t < n_terms; t++)
    acc->terms[t] = ana_formula_term(f, t);
  acc->n_dims = m->n_dimensions < MAX_DIMENSIONS ? m->n_dimensions : MAX_DIMENSIONS;
  for (size_t d = 0; d < acc->n_dims; d++)
    acc->dims[d] = m->dimensions[d];
  acc->max_groups = max_groups ? max_groups : 1;
  acc->filter_values = ana_calloc(m->n_filters ? m->n_filters : 1, sizeof *acc->filter_values);
  if (!acc->filter_values)
    goto nomem;
  for (size_t i = 0; i < m->n_filters; i++)
    acc->filter_values[i] = filter_value(m->filters[i]->value);
  if (acc->n_dims == 0 && find_group(acc, "", NULL) < 0)
    goto nomem; /* the one group exists from the start, as in GetMetricData */
  return acc;
nomem:
  ana_metric_acc_destroy(acc);
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

void ana_metric_acc_destroy(struct ana_metric_acc *acc) {
  if (!acc)
    return;
  for (size_t i = 0; i < acc->n_groups; i++)
    group_free(acc->groups[i], acc->n_terms);
  ana_free(acc->groups);
  ana_free(acc->index);
  for (size_t i = 0; acc->filter_values && i < acc->metric->n_filters; i++)
    json_decref(acc->filter_values[i]);
  ana_free(acc->filter_values);
  ana_free(acc);
}

bool ana_metric_acc_wants(const struct ana_metric_acc *acc, const char *event_name) {
  for (size_t t = 0; t < acc->n_terms; t++)
    if (!acc->terms[t]->event_name || strcmp(acc->terms[t]->event_name, event_name) == 0)
      return true;
  return false;
}

int ana_metric_acc_add(struct ana_metric_acc *acc, const struct ana_scanned_event *ev) {
  if (!ana_metric_acc_wants(acc, ev->event_name))
    return ANA_ERR_NOT_FOUND;
  struct row r = {ev, NULL, false};
  int rc = ANA_ERR_NOT_FOUND;
  for (size_t i = 0; i < acc->metric->n_filters; i++)
    if (!filter_matches(&r, acc->metric->filters[i], acc->filter_values[i]))
      goto out;
  char key[KEY_MAX];
  char *values[MAX_DIMENSIONS];
  char valbuf[MAX_DIMENSIONS][VALUE_MAX];
  size_t off = 0;
  for (size_t d = 0; d < acc->n_dims; d++) {
    struct value v;
    read_field(&r, acc->dims[d], &v);
    snprintf(valbuf[d], sizeof valbuf[d], "%s", v.present ? v.text : "");
    values[d] = valbuf[d];
    off += (size_t)snprintf(key + off, sizeof key - off, "%s%s", d ? "\x1f" : "", valbuf[d]);
    if (off >= sizeof key)
      off = sizeof key - 1;
  }
  key[off] = '\0';
  int gi = find_group(acc, key, values);
  if (gi < 0) {
    rc = gi;
    goto out;
  }
  struct group *g = acc->groups[gi];
  for (size_t t = 0; t < acc->n_terms; t++) {
    const struct ana_agg_term *term = acc->terms[t];
    if (term->event_name && strcmp(term->event_name, ev->event_name) != 0)
      continue;
    struct value v = {0};
    if (term->field_kind != ANA_FIELD_NONE && term->field) {
      read_field(&r, term->field, &v);
      if (!v.present)
        continue;
    }
    bool numeric = term->fn != ANA_AGG_COUNT && term->fn != ANA_AGG_UNIQ;
    if (numeric && !v.is_number)
      continue;
    struct agg *a = &g->aggs[t];
    if (numeric) {
      if (a->count == 0 || v.number < a->min)
        a->min = v.number;
      if (a->count == 0 || v.number > a->max)
        a->max = v.number;
      a->sum += v.number;
      if (term->fn >= ANA_AGG_P50) {
        if (a->n_values == a->cap_values) {
          size_t cap = a->cap_values ? a->cap_values * 2 : 16;
          double *nv = ana_realloc(a->values, cap * sizeof *nv);
          if (!nv) {
            rc = ANA_ERR_NOMEM;
            goto out;
          }
          a->values = nv;
          a->cap_values = cap;
        }
        a->values[a->n_values++] = v.number;
      }
    } else if (term->fn == ANA_AGG_UNIQ) {
      if (hashset_add(&a->distinct, hash_text(v.text)) < 0) {
        rc = ANA_ERR_NOMEM;
        goto out;
      }
    }
    a->count++;
  }
  rc = gi;
out:
  json_decref(r.props);
  return rc;
}

size_t ana_metric_acc_group_count(const struct ana_metric_acc *acc) {
  return acc->n_groups;
}

const char *const *ana_metric_acc_group_values(const struct ana_metric_acc *acc, size_t g) {
  return g < acc->n_groups ? (const char *const *)acc->groups[g]->values : NULL;
}

size_t ana_metric_acc_dimension_count(const struct ana_metric_acc *acc) {
  return acc->n_dims;
}

bool ana_metric_acc_value(struct ana_metric_acc *acc, size_t g, double *out) {
  if (g >= acc->n_groups)
    return false;
  double values[MAX_TERMS];
  for (size_t t = 0; t < acc->n_terms; t++)
    values[t] = agg_value(&acc->groups[g]->aggs[t], acc->terms[t]->fn);
  return ana_formula_eval(acc->formula, values, out);
}
