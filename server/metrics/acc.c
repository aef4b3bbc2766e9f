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

/* A value read from an event: text and, when it is a number, the number.
 * Each event is read by every metric of its account, so what costs is made
 * only when asked for: the text of a JSON number (value_text) and whether a
 * string reads as a number (value_is_number). */
struct value {
  bool present;
  bool number_known; /* is_number and number are set */
  bool is_number;
  double number;
  const char *text; /* NULL until value_text for a number; valid until the next read */
  char buf[64];
};

static const char *value_text(struct value *v) {
  if (!v->text) {
    snprintf(v->buf, sizeof v->buf, "%.15g", v->number);
    v->text = v->buf;
  }
  return v->text;
}

static bool value_is_number(struct value *v) {
  if (!v->number_known) {
    char *end;
    v->number = strtod(v->text, &end);
    v->is_number = v->text[0] && !*end;
    v->number_known = true;
  }
  return v->is_number;
}

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
  if (r->buf != r->small)
    ana_free(r->buf);
  r->buf = NULL;
  r->flat = 0;
}

/* ------------------------------------------------------------------ */
/* flat properties */

/* Most events' properties are a flat object of short ASCII strings and
 * numbers; jansson builds a tree of allocations for them, which was most
 * of the cost of rollup maintenance. flat_read reads such an object in one
 * pass over a copy of the text, cutting the strings in place. It accepts
 * only what jansson reads the same way and refuses the rest (escapes,
 * non-ASCII, nesting, numbers that might overflow, anything malformed):
 * those go to jansson, so both readings agree on every input. */
enum { MEMBER_NULL, MEMBER_STRING, MEMBER_NUMBER, MEMBER_TRUE, MEMBER_FALSE };

static char *skip_ws(char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
    p++;
  return p;
}

/* A string at p (after its opening quote): cut at its closing quote; the
 * character after it, or NULL when not plain ASCII without escapes. */
static char *flat_string(char *p) {
  for (;; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      *p = '\0';
      return p + 1;
    }
    if (c < 0x20 || c >= 0x80 || c == '\\')
      return NULL;
  }
}

/* A number at p (JSON's grammar, as jansson lexes it): its value in *out;
 * the character after it, or NULL. An integer is jansson's (a long long,
 * then a double: "-0" is 0); numbers that might overflow (more than 18
 * digits, an exponent of three digits) go to jansson, which refuses those
 * that do. */
static char *flat_number(char *p, double *out) {
  char *start = p;
  bool real = false;
  if (*p == '-')
    p++;
  char *digits = p;
  if (*p == '0') {
    p++;
    if (*p >= '0' && *p <= '9')
      return NULL;
  } else if (*p >= '1' && *p <= '9') {
    while (*p >= '0' && *p <= '9')
      p++;
  } else {
    return NULL;
  }
  if (p - digits > 18)
    return NULL;
  if (*p == '.') {
    real = true;
    p++;
    if (!(*p >= '0' && *p <= '9'))
      return NULL;
    while (*p >= '0' && *p <= '9')
      p++;
  }
  if (*p == 'e' || *p == 'E') {
    real = true;
    p++;
    if (*p == '+' || *p == '-')
      p++;
    char *exponent = p;
    while (*p >= '0' && *p <= '9')
      p++;
    if (p == exponent || p - exponent > 2)
      return NULL;
  }
  if (p - start > 40)
    return NULL;
  char token[48];
  memcpy(token, start, (size_t)(p - start));
  token[p - start] = '\0';
  *out = real ? strtod(token, NULL) : (double)strtoll(token, NULL, 10);
  return p;
}

/* Reads r's properties into its members; false when they are not a flat
 * object (jansson reads them). */
static bool flat_read(struct ana_acc_row *r) {
  const char *text = r->ev->properties_json ? r->ev->properties_json : "{}";
  size_t len = strlen(text);
  r->buf = len < sizeof r->small ? r->small : ana_malloc(len + 1);
  if (!r->buf)
    return false;
  memcpy(r->buf, text, len + 1);
  r->n_members = 0;
  char *p = skip_ws(r->buf);
  if (*p++ != '{')
    return false;
  p = skip_ws(p);
  if (*p == '}') {
    p++;
  } else {
    for (;;) {
      if (*p++ != '"' || r->n_members == ANA_ACC_FLAT_MAX)
        return false;
      struct ana_acc_member *m = &r->members[r->n_members];
      m->key = p;
      if (!(p = flat_string(p)))
        return false;
      p = skip_ws(p);
      if (*p++ != ':')
        return false;
      p = skip_ws(p);
      if (*p == '"') {
        m->type = MEMBER_STRING;
        m->text = p + 1;
        p = flat_string(p + 1);
      } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
        m->type = MEMBER_NUMBER;
        p = flat_number(p, &m->number);
      } else if (strncmp(p, "true", 4) == 0) {
        m->type = MEMBER_TRUE;
        p += 4;
      } else if (strncmp(p, "false", 5) == 0) {
        m->type = MEMBER_FALSE;
        p += 5;
      } else if (strncmp(p, "null", 4) == 0) {
        m->type = MEMBER_NULL;
        p += 4;
      } else {
        return false; /* nested, or malformed */
      }
      if (!p)
        return false;
      r->n_members++;
      p = skip_ws(p);
      if (*p == '}') {
        p++;
        break;
      }
      if (*p++ != ',')
        return false;
      p = skip_ws(p);
    }
  }
  return *skip_ws(p) == '\0';
}

/* The member named key (the last one: jansson keeps the last of
 * duplicates), or NULL. */
static const struct ana_acc_member *flat_get(const struct ana_acc_row *r, const char *key) {
  for (size_t i = r->n_members; i-- > 0;)
    if (strcmp(r->members[i].key, key) == 0)
      return &r->members[i];
  return NULL;
}

/* The event fields a path may name instead of a property. */
enum { TOP_NONE, TOP_EVENT_TYPE, TOP_EVENT_NAME, TOP_SESSION_ID, TOP_EVENT_ID };

/* path: "campaignId", "properties.order.total", "eventName", "context.ip"... */
static void resolve_field(struct ana_acc_field *f, const char *path) {
  static const char *const tops[] = {"eventType", "eventName", "sessionId", "eventId"};
  f->top = TOP_NONE;
  for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++)
    if (strcmp(path, tops[i]) == 0)
      f->top = (uint8_t)(TOP_EVENT_TYPE + i);
  if (strncmp(path, "properties.", 11) == 0)
    path += 11;
  f->path = path;
  f->nested = strchr(path, '.') != NULL;
}

static void read_field(struct ana_acc_row *r, const struct ana_acc_field *f, struct value *v) {
  v->present = false;
  v->number_known = true;
  v->is_number = false;
  v->text = "";
  const struct ana_scanned_event *ev = r->ev;
  const char *top = NULL;
  switch (f->top) {
  case TOP_EVENT_TYPE: top = ev->event_type; break;
  case TOP_EVENT_NAME: top = ev->event_name; break;
  case TOP_SESSION_ID: top = ev->session_id; break;
  case TOP_EVENT_ID: top = ev->event_id; break;
  default: break;
  }
  if (top) {
    v->present = top[0] != '\0';
    v->text = top;
    return;
  }
  const char *path = f->path;
  if (!f->nested && r->flat == 0)
    r->flat = flat_read(r) ? 1 : -1;
  if (!f->nested && r->flat == 1) {
    const struct ana_acc_member *m = flat_get(r, path);
    if (!m || m->type == MEMBER_NULL)
      return;
    v->present = true;
    switch (m->type) {
    case MEMBER_NUMBER:
      v->is_number = true;
      v->number = m->number;
      v->text = NULL;
      break;
    case MEMBER_STRING:
      v->text = m->text;
      v->number_known = false;
      break;
    default: v->text = m->type == MEMBER_TRUE ? "true" : "false"; break;
    }
    return;
  }
  json_t *cur = row_props(r);
  if (!f->nested) {
    cur = json_is_object(cur) ? json_object_get(cur, path) : NULL;
  } else {
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
  }
  if (!cur || json_is_null(cur))
    return;
  v->present = true;
  if (json_is_number(cur)) {
    v->is_number = true;
    v->number = json_number_value(cur);
    v->text = NULL;
  } else if (json_is_string(cur)) {
    v->text = json_string_value(cur);
    v->number_known = false;
  } else if (json_is_boolean(cur)) {
    v->text = json_is_true(cur) ? "true" : "false";
  }
}

/* ------------------------------------------------------------------ */
/* filters */

static bool value_equals(struct value *v, const json_t *want) {
  if (json_is_number(want))
    return value_is_number(v) && v->number == json_number_value(want);
  if (json_is_string(want))
    return strcmp(value_text(v), json_string_value(want)) == 0;
  if (json_is_boolean(want))
    return strcmp(value_text(v), json_is_true(want) ? "true" : "false") == 0;
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

/* The operators, resolved once per metric. */
enum filter_op {
  OP_NONE,
  OP_EXISTS,
  OP_EQ,
  OP_NEQ,
  OP_IN,
  OP_CONTAINS,
  OP_GT,
  OP_GTE,
  OP_LT,
  OP_LTE
};

static uint8_t resolve_op(const char *op) {
  static const char *const names[] = {"exists", "eq",  "neq", "in", "contains",
                                      "gt",     "gte", "lt",  "lte"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(op, names[i]) == 0)
      return (uint8_t)(OP_EXISTS + i);
  return OP_NONE; /* refused when the metric is defined; matches nothing */
}

static bool filter_matches(struct ana_acc_row *r, const struct ana_acc_field *f, uint8_t op,
                           json_t *want) {
  struct value v;
  read_field(r, f, &v);
  if (op == OP_EXISTS)
    return v.present;
  if (!v.present)
    return op == OP_NEQ;
  switch (op) {
  case OP_EQ: return value_equals(&v, want);
  case OP_NEQ: return !value_equals(&v, want);
  case OP_IN: {
    size_t i;
    json_t *item;
    json_array_foreach(want, i, item) {
      if (value_equals(&v, item))
        return true;
    }
    return false;
  }
  case OP_CONTAINS:
    return json_is_string(want) && strstr(value_text(&v), json_string_value(want)) != NULL;
  case OP_GT:
  case OP_GTE:
  case OP_LT:
  case OP_LTE: break;
  default: return false;
  }
  if (!value_is_number(&v) || !json_is_number(want))
    return false;
  double x = v.number, y = json_number_value(want);
  switch (op) {
  case OP_GT: return x > y;
  case OP_GTE: return x >= y;
  case OP_LT: return x < y;
  default: return x <= y;
  }
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
    if (sp->terms[t]->field_kind != ANA_FIELD_NONE && sp->terms[t]->field) {
      sp->term_fields[t] = sp->terms[t]->field;
      resolve_field(&sp->term_refs[t], sp->term_fields[t]);
    }
  }
  sp->n_dims = m->n_dimensions < MAX_DIMENSIONS ? m->n_dimensions : MAX_DIMENSIONS;
  for (size_t d = 0; d < sp->n_dims; d++) {
    sp->dims[d] = m->dimensions[d];
    resolve_field(&sp->dim_refs[d], sp->dims[d]);
  }
  size_t nf = m->n_filters ? m->n_filters : 1;
  sp->filter_values = ana_calloc(nf, sizeof *sp->filter_values);
  sp->filter_ops = ana_calloc(nf, sizeof *sp->filter_ops);
  sp->filter_refs = ana_calloc(nf, sizeof *sp->filter_refs);
  if (!sp->filter_values || !sp->filter_ops || !sp->filter_refs)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i < m->n_filters; i++) {
    sp->filter_values[i] = filter_value(m->filters[i]->value);
    sp->filter_ops[i] = resolve_op(m->filters[i]->op);
    resolve_field(&sp->filter_refs[i], m->filters[i]->field);
  }
  return 0;
}

void ana_acc_spec_fini(struct ana_acc_spec *sp) {
  for (size_t i = 0; sp->filter_values && i < sp->metric->n_filters; i++)
    json_decref(sp->filter_values[i]);
  ana_free(sp->filter_values);
  ana_free(sp->filter_ops);
  ana_free(sp->filter_refs);
  sp->filter_values = NULL;
  sp->filter_ops = NULL;
  sp->filter_refs = NULL;
}

bool ana_acc_row_passes(const struct ana_acc_spec *sp, struct ana_acc_row *r) {
  for (size_t i = 0; i < sp->metric->n_filters; i++)
    if (!filter_matches(r, &sp->filter_refs[i], sp->filter_ops[i], sp->filter_values[i]))
      return false;
  return true;
}

bool ana_acc_row_group(const struct ana_acc_spec *sp, struct ana_acc_row *r,
                       char key[ANA_ACC_KEY_MAX], char **values,
                       char (*valbuf)[ANA_ACC_VALUE_MAX]) {
  if (!ana_acc_row_passes(sp, r))
    return false;
  ana_acc_row_key(sp, r, key, values, valbuf);
  return true;
}

void ana_acc_row_key(const struct ana_acc_spec *sp, struct ana_acc_row *r,
                     char key[ANA_ACC_KEY_MAX], char **values, char (*valbuf)[ANA_ACC_VALUE_MAX]) {
  /* The values, each cut to VALUE_MAX - 1 bytes, joined by '\x1f' and the
   * whole cut to KEY_MAX - 1 bytes. */
  size_t off = 0;
  for (size_t d = 0; d < sp->n_dims; d++) {
    struct value v;
    read_field(r, &sp->dim_refs[d], &v);
    const char *text = v.present ? value_text(&v) : "";
    size_t len = strnlen(text, VALUE_MAX - 1);
    memcpy(valbuf[d], text, len);
    valbuf[d][len] = '\0';
    values[d] = valbuf[d];
    if (d && off < KEY_MAX - 1)
      key[off++] = '\x1f';
    size_t room = KEY_MAX - 1 - off;
    memcpy(key + off, valbuf[d], len < room ? len : room);
    off += len < room ? len : room;
  }
  key[off] = '\0';
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

int ana_acc_agg_add_numbers(struct ana_acc_agg *a, const double *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (add_value(a, v[i]) < 0)
      return ANA_ERR_NOMEM;
  return 0;
}

int ana_acc_agg_add_texts(struct ana_acc_agg *a, const char *texts, size_t n) {
  for (size_t i = 0; i < n; i++, texts += strlen(texts) + 1)
    if (distinct_add(a, ana_acc_hash_text(texts)) < 0)
      return ANA_ERR_NOMEM;
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
    struct value v = {.number_known = true, .text = ""};
    if (sp->term_fields[t]) {
      read_field(r, &sp->term_refs[t], &v);
      if (!v.present)
        continue;
    }
    bool numeric = term->fn != ANA_AGG_COUNT && term->fn != ANA_AGG_UNIQ;
    if (numeric && !value_is_number(&v))
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
          ana_hll_add_hash(a->hll, ana_hll_hash_text(value_text(&v)));
        } else if (distinct_add(a, ana_acc_hash_text(value_text(&v))) < 0) {
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
    if (!acc->spec.terms[t]->event_name || strcmp(acc->spec.terms[t]->event_name, event_name) == 0)
      return true;
  return false;
}

int ana_metric_acc_add(struct ana_metric_acc *acc, const struct ana_scanned_event *ev) {
  if (!ana_metric_acc_wants(acc, ev->event_name))
    return ANA_ERR_NOT_FOUND;
  struct ana_acc_row r;
  ana_acc_row_init(&r, ev);
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

const char *ana_metric_acc_group_key(const struct ana_metric_acc *acc, size_t g) {
  return g < acc->n_groups ? acc->groups[g]->key : NULL;
}

bool ana_metric_acc_group_is_other(const struct ana_metric_acc *acc, size_t g) {
  return acc->other == g + 1;
}

int ana_metric_acc_find(const struct ana_metric_acc *acc, const char *key) {
  if (acc->spec.n_dims == 0)
    return acc->n_groups ? 0 : -1;
  return index_get(acc, key);
}

static int merge_group(struct ana_acc_agg *into, const struct group *g, size_t n_terms) {
  for (size_t t = 0; t < n_terms; t++)
    if (ana_acc_agg_merge(&into[t], &g->aggs[t]) < 0)
      return ANA_ERR_NOMEM;
  return 0;
}

int ana_metric_acc_value_merged(struct ana_metric_acc *const *accs, size_t n, const char *key,
                                ana_metric_acc_pick_fn pick, void *ctx, double *out) {
  if (n == 0)
    return 0;
  size_t n_terms = accs[0]->spec.n_terms;
  struct ana_acc_agg merged[ANA_ACC_MAX_TERMS];
  memset(merged, 0, sizeof merged);
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    struct ana_metric_acc *acc = accs[i];
    if (!acc)
      continue;
    if (key) {
      int g = ana_metric_acc_find(acc, key);
      if (g >= 0)
        rc = merge_group(merged, acc->groups[g], n_terms);
      continue;
    }
    for (size_t g = 0; g < acc->n_groups && rc == 0; g++)
      if (pick(ctx, acc, g))
        rc = merge_group(merged, acc->groups[g], n_terms);
  }
  if (rc == 0) {
    double values[ANA_ACC_MAX_TERMS];
    for (size_t t = 0; t < n_terms; t++)
      values[t] = ana_acc_agg_value(&merged[t], accs[0]->spec.terms[t]->fn);
    rc = ana_formula_eval(accs[0]->formula, values, out) ? 1 : 0;
  }
  for (size_t t = 0; t < n_terms; t++)
    ana_acc_agg_fini(&merged[t]);
  return rc;
}
