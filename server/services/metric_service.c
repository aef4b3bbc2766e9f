/* MetricService: metric definitions in the catalog (create, list, get,
 * update, delete) and their data; and RealtimeService.StreamMetric, the
 * live metric stream (server/realtime/metric_streams.c), which needs the
 * same definitions. Every call touches the database, so it runs on the
 * worker pool, never on a transport thread. */
#include "ana_services.h"
#include "service_jobs.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_call.h"
#include "ana_crypto_fields.h"
#include "ana_id.h"
#include "ana_log.h"
#include "ana_metric_query.h"
#include "ana_metric_streams.h"
#include "ana_rollup.h"
#include "ana_text.h"
#include "ana_clock.h"
#include "ana_timestamp.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define KIND "metric"
#define DEFAULT_PAGE 50
#define MAX_PAGE 1000
#define NAME_MAX_CHARS 128
#define UNIT_MAX_CHARS 32
/* Variables per metric: the formula engine's limit, documented in the README. */
#define MAX_VARIABLES ANA_FORMULA_MAX_VARS
#define DAY_MS 86400000LL

static struct ana_metric_service_options opts;
static struct ana_metric_streams *streams_engine; /* StreamMetric */
static struct ana_realtime *stream_hub;
/* Serialises storing a metric's resolved names against a PUT. */
static pthread_mutex_t resolve_mu = PTHREAD_MUTEX_INITIALIZER;

/* Fails the call with err (ana_service_fail). */
static void fail_with(struct ana_call *call, const struct ana_error *err) {
  ana_service_fail(call, err);
}

/* ------------------------------------------------------------------ */
/* loading definitions */

struct loaded {
  struct ana_arena *arena;
  Analytics__V1__Metric *metric;
};

static int keep_metric(void *ctx, const struct ana_catalog_object *o) {
  struct loaded *l = ctx;
  l->metric = (void *)ana_proto_unpack(&analytics__v1__metric__descriptor, &l->arena->pb, o->body,
                                       o->body_len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  return 1;
}

static int load_metric(struct ana_call *call, const char *id, Analytics__V1__Metric **out,
                       struct ana_error *err) {
  struct loaded l = {ana_call_arena(call), NULL};
  int rc = opts.catalog_ops->get(opts.catalog, KIND, ana_call_principal(call)->account_id, id,
                                 keep_metric, &l, err);
  if (rc == 0 && !l.metric)
    return ana_error_set(err, ANA_STATUS_DATA_LOSS, "metric %s cannot be read", id);
  if (rc == ANA_ERR_NOT_FOUND)
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "metric %s not found", id);
  *out = l.metric;
  return rc;
}

/* The formula's view of a metric's variables. */
struct vars {
  const char *names[MAX_VARIABLES];
  const char *formulas[MAX_VARIABLES];
  size_t n;
};

static void vars_of(const Analytics__V1__Metric *m, struct vars *v) {
  v->n = m->n_variables < MAX_VARIABLES ? m->n_variables : MAX_VARIABLES;
  for (size_t i = 0; i < v->n; i++) {
    v->names[i] = m->variables[i]->key;
    v->formulas[i] = m->variables[i]->value;
  }
}

/* How bare names that are neither variables nor metrics become event
 * names (the rule: ana_formula_match_event_name). */
enum resolve_mode {
  RESOLVE_APPLY,  /* as the metric recorded them (resolvedNames) */
  RESOLVE_NEW,    /* against the names seen now (create, replace) */
  RESOLVE_WAITING /* the recorded ones, and its pendingNames against the names seen now */
};

#define MAX_RESOLVED ANA_FORMULA_MAX_TERMS
#define SUGGESTIONS 3

struct resolution {
  const char **seen; /* the account's event names (NEW, WAITING) */
  size_t n_seen;
  const char *names[MAX_RESOLVED]; /* each bare name decided, once */
  const char *to[MAX_RESOLVED];    /* its event name; NULL = as written */
  bool pending[MAX_RESOLVED];      /* nothing matching was seen yet */
  char *warning[MAX_RESOLVED];
  size_t n;
};

struct lookup_ctx {
  struct ana_arena *arena;
  const char *account;
  const char *self_name; /* a metric does not resolve to itself */
  struct vars vars[8];
  int used;
  enum resolve_mode mode;
  const Analytics__V1__Metric *metric; /* its resolvedNames and pendingNames */
  struct resolution *res;              /* NEW, WAITING */
};

static int lookup_metric(void *ctx, const char *name, const char **formula,
                         const char *const **var_names, const char *const **var_formulas,
                         size_t *n_vars) {
  struct lookup_ctx *c = ctx;
  if ((c->self_name && strcmp(name, c->self_name) == 0) || c->used == 8)
    return -1;
  struct loaded l = {c->arena, NULL};
  struct ana_error err;
  if (opts.catalog_ops->get_by_name(opts.catalog, KIND, c->account, name, keep_metric, &l, &err) <
          0 ||
      !l.metric)
    return -1;
  struct vars *v = &c->vars[c->used++];
  vars_of(l.metric, v);
  *formula = l.metric->formula;
  *var_names = v->names;
  *var_formulas = v->formulas;
  *n_vars = v->n;
  return 0;
}

static const char *recorded(const Analytics__V1__Metric *m, const char *name) {
  for (size_t i = 0; i < m->n_resolved_names; i++)
    if (strcmp(m->resolved_names[i]->key, name) == 0)
      return m->resolved_names[i]->value;
  return NULL;
}

static bool is_pending(const Analytics__V1__Metric *m, const char *name) {
  for (size_t i = 0; i < m->n_pending_names; i++)
    if (strcmp(m->pending_names[i], name) == 0)
      return true;
  return false;
}

static const char *resolve_event(void *ctx, const char *name) {
  struct lookup_ctx *c = ctx;
  if (c->mode == RESOLVE_APPLY)
    return recorded(c->metric, name);
  struct resolution *r = c->res;
  for (size_t i = 0; i < r->n; i++)
    if (strcmp(r->names[i], name) == 0)
      return r->to[i];
  if (r->n == MAX_RESOLVED)
    return NULL; /* the parse fails on its term limit anyway */
  size_t i = r->n;
  r->names[i] = ana_arena_strdup(c->arena, name);
  if (!r->names[i])
    return NULL;
  r->n++;
  r->to[i] = NULL;
  r->pending[i] = false;
  r->warning[i] = NULL;
  if (c->mode == RESOLVE_WAITING && !is_pending(c->metric, name))
    return r->to[i] = (char *)recorded(c->metric, name);
  const char *match = NULL, *suggest[SUGGESTIONS];
  size_t n_suggest = 0;
  enum ana_name_match how = ana_formula_match_event_name(name, r->seen, r->n_seen, &match, suggest,
                                                         SUGGESTIONS, &n_suggest);
  char list[512] = "";
  for (size_t k = 0; k < n_suggest; k++) {
    size_t used = strlen(list);
    snprintf(list + used, sizeof list - used, "%s\"%.100s\"", k ? ", " : "", suggest[k]);
  }
  char msg[1024]; /* room for three names and the whole list */
  switch (how) {
  case ANA_NAME_EXACT: return NULL;
  case ANA_NAME_SUFFIX: r->to[i] = match; return match;
  case ANA_NAME_AMBIGUOUS:
    snprintf(msg, sizeof msg,
             "formula: \"%.100s\" matches several event names (%s); it counts events named "
             "\"%.100s\": write the full name or a variable",
             name, list, name);
    break;
  case ANA_NAME_NONE:
    r->pending[i] = true;
    if (n_suggest)
      snprintf(msg, sizeof msg,
               "formula: no event named \"%.100s\" or \"*_%.100s\" seen yet (closest: %s); "
               "it counts events named \"%.100s\" until one appears",
               name, name, list, name);
    else
      snprintf(msg, sizeof msg,
               "formula: no event named \"%.100s\" or \"*_%.100s\" seen yet; it counts events "
               "named \"%.100s\" until one appears",
               name, name, name);
    break;
  }
  r->warning[i] = ana_arena_strdup(c->arena, msg);
  return NULL;
}

static struct ana_formula *parse_formula_as(struct ana_arena *arena, const char *account,
                                            const Analytics__V1__Metric *m, struct lookup_ctx *lctx,
                                            struct vars *own, enum resolve_mode mode,
                                            struct resolution *res, struct ana_error *err) {
  vars_of(m, own);
  struct ana_formula_env env = {own->names,    own->formulas, own->n,
                                lookup_metric, lctx,          resolve_event};
  lctx->arena = arena;
  lctx->account = account;
  lctx->self_name = m->name;
  lctx->mode = mode;
  lctx->metric = m;
  lctx->res = res;
  int pos = 0;
  return ana_formula_parse(m->formula, &env, err, &pos);
}

/* The formula of a stored metric, its bare names as it recorded them. */
static struct ana_formula *parse_formula(struct ana_call *call, const Analytics__V1__Metric *m,
                                         struct lookup_ctx *lctx, struct vars *own,
                                         struct ana_error *err) {
  return parse_formula_as(ana_call_arena(call), ana_call_principal(call)->account_id, m, lctx, own,
                          RESOLVE_APPLY, NULL, err);
}

struct seen_list {
  struct ana_arena *arena;
  const char **items;
  size_t n, cap;
  bool failed;
};

static int keep_seen(void *ctx, const struct ana_event_name_info *info) {
  struct seen_list *l = ctx;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 256;
    const char **items = ana_arena_alloc(l->arena, cap * sizeof *items);
    if (!items) {
      l->failed = true;
      return 1;
    }
    if (l->n)
      memcpy(items, l->items, l->n * sizeof *items);
    l->items = items;
    l->cap = cap;
  }
  l->items[l->n] = ana_arena_strdup(l->arena, info->name);
  if (!l->items[l->n]) {
    l->failed = true;
    return 1;
  }
  l->n++;
  return 0;
}

/* Fills res->seen with the account's event names. */
static int load_seen(struct ana_arena *arena, const char *account, struct resolution *res,
                     struct ana_error *err) {
  struct seen_list l = {arena, NULL, 0, 0, false};
  if (opts.event_names &&
      ana_event_names_each_seen(opts.event_names, account, keep_seen, &l, err) < 0)
    return ANA_ERR_IO;
  if (l.failed)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  res->seen = l.items;
  res->n_seen = l.n;
  return 0;
}

/* Records the outcome of a resolution on the metric: resolvedNames,
 * pendingNames, warnings (arena copies). WAITING keeps the warnings of the
 * names still unresolved as they were. */
static int record_resolution(struct ana_arena *a, Analytics__V1__Metric *m,
                             const struct resolution *r, enum resolve_mode mode) {
  Analytics__V1__Metric__ResolvedNamesEntry **map = ana_arena_calloc(a, r->n + 1, sizeof *map);
  char **pending = ana_arena_calloc(a, r->n + 1, sizeof *pending);
  char **warnings = ana_arena_calloc(a, r->n + m->n_warnings + 1, sizeof *warnings);
  if (!map || !pending || !warnings)
    return ANA_ERR_NOMEM;
  size_t n_map = 0, n_pending = 0, n_warnings = 0;
  for (size_t i = 0; i < r->n; i++) {
    if (r->to[i]) {
      Analytics__V1__Metric__ResolvedNamesEntry *e = ana_arena_alloc(a, sizeof *e);
      if (!e)
        return ANA_ERR_NOMEM;
      analytics__v1__metric__resolved_names_entry__init(e);
      e->key = (char *)r->names[i];
      e->value = (char *)r->to[i];
      map[n_map++] = e;
    }
    if (r->pending[i])
      pending[n_pending++] = (char *)r->names[i];
    if (mode == RESOLVE_WAITING && r->pending[i]) {
      /* still waiting: its earlier warning stays */
      char prefix[160];
      snprintf(prefix, sizeof prefix, "formula: no event named \"%.100s\"", r->names[i]);
      for (size_t k = 0; k < m->n_warnings; k++)
        if (strncmp(m->warnings[k], prefix, strlen(prefix)) == 0)
          warnings[n_warnings++] = m->warnings[k];
    } else if (r->warning[i]) {
      warnings[n_warnings++] = r->warning[i];
    } else if (mode == RESOLVE_WAITING && !is_pending(m, r->names[i])) {
      /* not looked at again: its earlier warning (an ambiguity) stays */
      char prefix[160];
      snprintf(prefix, sizeof prefix, "formula: \"%.100s\"", r->names[i]);
      for (size_t k = 0; k < m->n_warnings; k++)
        if (strncmp(m->warnings[k], prefix, strlen(prefix)) == 0)
          warnings[n_warnings++] = m->warnings[k];
    }
  }
  m->resolved_names = map;
  m->n_resolved_names = n_map;
  m->pending_names = pending;
  m->n_pending_names = n_pending;
  m->warnings = warnings;
  m->n_warnings = n_warnings;
  return 0;
}

/* ------------------------------------------------------------------ */
/* validation */

static int check_text(const char *field, const char *s, bool required, size_t max,
                      struct ana_error *err) {
  size_t chars = 0;
  if (!s || !s[0])
    return required ? ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: is required", field) : 0;
  if (!ana_utf8_valid(s, &chars) || !ana_text_printable(s))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: must be printable UTF-8 text",
                         field);
  if (chars > max)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: must be at most %zu characters",
                         field, max);
  return 0;
}

static bool one_of(const char *s, const char *const *list) {
  for (; *list; list++)
    if (strcmp(s, *list) == 0)
      return true;
  return false;
}

static const char *const types[] = {"counter", "gauge", "histogram", NULL};
static const char *const aggregations[] = {"avg", "sum", "min", "max", "last", "count", NULL};

/* Validates and normalises a definition (defaults for type and
 * aggregation). */
/* A filter value on an encrypted field, as its blind index (a Value in
 * arena); one given as a blind index already stays. NULL with err filled. */
static Google__Protobuf__Value *blind_value(const char *account, const char *name,
                                            Google__Protobuf__Value *v, struct ana_arena *a,
                                            const char *field, struct ana_error *err) {
  char num[64];
  const char *text = NULL;
  switch (v ? v->kind_case : GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
    if (!strncmp(v->string_value, ANA_CRYPTO_BLIND_PREFIX, sizeof ANA_CRYPTO_BLIND_PREFIX - 1))
      return v;
    text = v->string_value;
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
    snprintf(num, sizeof num, "%.15g", v->number_value);
    text = num;
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE: text = v->bool_value ? "true" : "false"; break;
  default:
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "%s: must be a string, number or boolean (the field is encrypted)", field);
    return NULL;
  }
  Google__Protobuf__Value *out = ana_arena_alloc(a, sizeof *out);
  char *blind = ana_crypto_blind_text(opts.crypto, account, name, text, a);
  if (!out || !blind) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "%s: no blind index for the encrypted field", field);
    return NULL;
  }
  google__protobuf__value__init(out);
  out->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  out->string_value = blind;
  return out;
}

/* Filters on encrypted fields (ENCRYPTED_FIELDS) compare blind indexes:
 * their values are replaced (so the stored definition holds no clear
 * value); only eq, neq, in and exists apply to them. */
int ana_metric_service_blind_filters(const char *account, Analytics__V1__MetricFilter **filters,
                                     size_t n, struct ana_arena *a, struct ana_error *err) {
  for (size_t i = 0; opts.encrypted && i < n; i++) {
    Analytics__V1__MetricFilter *f = filters[i];
    const char *name = ana_crypto_fields_property(opts.encrypted, f->field);
    if (!name || strcmp(f->op, "exists") == 0)
      continue;
    char field[64];
    snprintf(field, sizeof field, "filters[%zu].value", i);
    if (strcmp(f->op, "eq") == 0 || strcmp(f->op, "neq") == 0) {
      if (!(f->value = blind_value(account, name, f->value, a, field, err)))
        return ANA_ERR_INVALID;
    } else if (strcmp(f->op, "in") == 0 && f->value &&
               f->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE &&
               f->value->list_value) {
      Google__Protobuf__ListValue *l = f->value->list_value;
      for (size_t j = 0; j < l->n_values; j++)
        if (!(l->values[j] = blind_value(account, name, l->values[j], a, field, err)))
          return ANA_ERR_INVALID;
    } else {
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "filters[%zu].op: \"%.16s\" does not apply to %s, an encrypted "
                           "field (ENCRYPTED_FIELDS): eq, neq, in or exists",
                           i, f->op, f->field);
    }
  }
  return 0;
}

static int blind_filters(const char *account, Analytics__V1__Metric *m, struct ana_arena *a,
                         struct ana_error *err) {
  return ana_metric_service_blind_filters(account, m->filters, m->n_filters, a, err);
}

static int check_metric(struct ana_call *call, Analytics__V1__Metric *m, struct ana_error *err) {
  const char *account = ana_call_principal(call)->account_id;
  if (m->account_id && m->account_id[0] && strcmp(m->account_id, account) != 0)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "accountId: does not match the caller's account");
  if (check_text("name", m->name, true, NAME_MAX_CHARS, err) < 0 ||
      check_text("unit", m->unit, false, UNIT_MAX_CHARS, err) < 0 ||
      check_text("description", m->description, false, 1024, err) < 0)
    return ANA_ERR_INVALID;
  if (!m->type || !m->type[0])
    m->type = "gauge";
  else if (!one_of(m->type, types))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "type: unknown type \"%.32s\" (counter, gauge or histogram)", m->type);
  if (!m->aggregation || !m->aggregation[0])
    m->aggregation = "avg";
  else if (!one_of(m->aggregation, aggregations))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "aggregation: unknown aggregation \"%.32s\" (avg, sum, min, max, last, "
                         "count)",
                         m->aggregation);
  if (!m->formula || !m->formula[0])
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "formula: is required");
  if (m->n_variables > MAX_VARIABLES)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "variables: at most %d variables",
                         MAX_VARIABLES);
  for (size_t i = 0; i < m->n_variables; i++) {
    const char *k = m->variables[i]->key;
    bool ident = k[0] && (isalpha((unsigned char)k[0]) || k[0] == '_');
    for (const char *p = k; ident && *p; p++)
      ident = isalnum((unsigned char)*p) || *p == '_';
    if (!ident)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "variables: \"%.64s\" is not a name (letters, digits, _)", k);
  }
  if (ana_metric_check_filters_and_dimensions(m, err) < 0 ||
      blind_filters(account, m, ana_call_arena(call), err) < 0)
    return ANA_ERR_INVALID;
  /* Bare names are resolved against the event names seen now; what the
   * client sent in the server-set fields is ignored. */
  struct ana_arena *a = ana_call_arena(call);
  struct resolution *res = ana_arena_calloc(a, 1, sizeof *res);
  if (!res)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (load_seen(a, account, res, err) < 0)
    return ANA_ERR_IO;
  m->n_resolved_names = 0;
  m->n_pending_names = 0;
  m->n_warnings = 0;
  struct lookup_ctx lctx = {0};
  struct vars own;
  struct ana_formula *f = parse_formula_as(a, account, m, &lctx, &own, RESOLVE_NEW, res, err);
  if (!f)
    return ANA_ERR_INVALID;
  ana_formula_free(f);
  if (record_resolution(a, m, res, RESOLVE_NEW) < 0)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  m->account_id = (char *)account;
  return 0;
}

static int save(struct ana_arena *arena, Analytics__V1__Metric *m, bool create,
                struct ana_error *err) {
  size_t n = protobuf_c_message_get_packed_size(&m->base);
  uint8_t *body = ana_arena_alloc(arena, n ? n : 1);
  if (!body)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  protobuf_c_message_pack(&m->base, body);
  struct ana_catalog_object o = {
      .kind = KIND,
      .account_id = m->account_id,
      .id = m->metric_id,
      .name = m->name,
      .body = body,
      .body_len = n,
      .created_at_ms = ana_timestamp_ms(m->created_at),
      .updated_at_ms = ana_timestamp_ms(m->updated_at),
  };
  int rc = opts.catalog_ops->put(opts.catalog, &o, create, err);
  if (rc == ANA_ERR_EXISTS)
    ana_error_set(err, ANA_STATUS_ALREADY_EXISTS, "name: a metric named \"%s\" exists already",
                  m->name);
  return rc;
}

/* ------------------------------------------------------------------ */
/* rollup definitions */

struct account_metrics {
  struct ana_arena *arena;
  Analytics__V1__Metric *items[256];
  size_t n;
  const char *last_id;
};

static int collect_all(void *ctx, const struct ana_catalog_object *o) {
  struct account_metrics *p = ctx;
  Analytics__V1__Metric *m =
      (void *)ana_proto_unpack(&analytics__v1__metric__descriptor, &p->arena->pb, o->body,
                               o->body_len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  p->last_id = ana_arena_strdup(p->arena, o->id);
  if (m && p->n < sizeof p->items / sizeof p->items[0])
    p->items[p->n++] = m;
  return 0;
}

/* Records the current definition of every metric of the caller's account
 * with the rollups: a formula names other metrics, so a change to one may
 * change the terms of others (those are re-backfilled; the rest is left as
 * it is). A metric whose formula no longer parses loses its rollups. */
static void refresh_rollups(struct ana_arena *arena, const char *account) {
  if (!opts.rollups)
    return;
  const char *after = NULL;
  for (;;) {
    struct account_metrics page = {.arena = arena};
    struct ana_error err;
    if (opts.catalog_ops->list(opts.catalog, KIND, account, after, 256, collect_all, &page, &err) <
        0) {
      ANA_WARN("metrics", "cannot list metrics for rollups: %s", err.message);
      return;
    }
    for (size_t i = 0; i < page.n; i++) {
      Analytics__V1__Metric *m = page.items[i];
      struct lookup_ctx lctx = {0};
      struct vars own;
      struct ana_formula *f =
          parse_formula_as(arena, account, m, &lctx, &own, RESOLVE_APPLY, NULL, &err);
      int rc = f ? ana_rollup_define(opts.rollups, account, m, f, &err)
                 : ana_rollup_forget(opts.rollups, m->metric_id, &err);
      if (rc < 0)
        ANA_WARN("metrics", "metric %s: rollups: %s", m->metric_id, err.message);
      ana_formula_free(f);
    }
    if (!page.last_id || page.n < 256)
      return;
    after = page.last_id;
  }
}

/* Whether a filter value is a blind index (a list: each of its values). */
static bool blind_value_text(const Google__Protobuf__Value *v) {
  if (!v)
    return true;
  if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE) {
    for (size_t i = 0; v->list_value && i < v->list_value->n_values; i++)
      if (!blind_value_text(v->list_value->values[i]))
        return false;
    return true;
  }
  return v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE && v->string_value &&
         strncmp(v->string_value, ANA_CRYPTO_BLIND_PREFIX, sizeof ANA_CRYPTO_BLIND_PREFIX - 1) == 0;
}

/* Whether one of m's filters compares an encrypted field with a value that
 * is not a blind index: stored before the field joined ENCRYPTED_FIELDS. */
static bool has_clear_filter(const Analytics__V1__Metric *m) {
  for (size_t i = 0; i < m->n_filters; i++) {
    const Analytics__V1__MetricFilter *f = m->filters[i];
    if (ana_crypto_fields_property(opts.encrypted, f->field) && strcmp(f->op, "exists") != 0 &&
        !blind_value_text(f->value))
      return true;
  }
  return false;
}

int ana_metric_service_blind_stored(struct ana_error *err) {
  if (!opts.encrypted || !opts.rollups)
    return 0;
  char **accounts = NULL;
  size_t n = ana_rollup_accounts(opts.rollups, &accounts);
  int changed = 0;
  for (size_t a = 0; a < n; a++) {
    struct ana_arena *arena = ana_arena_create(64 * 1024, 0);
    if (!arena) {
      changed = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    int here = 0;
    const char *after = NULL;
    pthread_mutex_lock(&resolve_mu);
    for (;;) {
      struct account_metrics page = {.arena = arena};
      struct ana_error lerr;
      if (opts.catalog_ops->list(opts.catalog, KIND, accounts[a], after, 256, collect_all, &page,
                                 &lerr) < 0) {
        ANA_WARN("metrics", "cannot list metrics to blind their filters: %s", lerr.message);
        break;
      }
      for (size_t i = 0; i < page.n; i++) {
        Analytics__V1__Metric *m = page.items[i];
        if (!has_clear_filter(m))
          continue;
        if (ana_metric_service_blind_filters(accounts[a], m->filters, m->n_filters, arena, &lerr) <
                0 ||
            save(arena, m, false, &lerr) < 0) {
          ANA_WARN("metrics", "metric %s: its filter on an encrypted field keeps its value: %s",
                   m->metric_id, lerr.message);
          continue;
        }
        ANA_INFO("metrics", "metric %s: filter values on encrypted fields stored as blind indexes",
                 m->metric_id);
        here++;
      }
      if (!page.last_id || page.n < 256)
        break;
      after = page.last_id;
    }
    if (here)
      refresh_rollups(arena, accounts[a]);
    pthread_mutex_unlock(&resolve_mu);
    changed += here;
    ana_arena_destroy(arena);
  }
  for (size_t a = 0; a < n; a++)
    ana_free(accounts[a]);
  ana_free(accounts);
  return changed;
}

/* Whether a new event name matches a name waiting in pendingNames. */
static bool matches_waiting(const Analytics__V1__Metric *m, const char *const *names, size_t n) {
  if (!names)
    return m->n_pending_names > 0;
  for (size_t i = 0; i < m->n_pending_names; i++) {
    const char *p = m->pending_names[i];
    size_t lp = strlen(p);
    for (size_t k = 0; k < n; k++) {
      size_t ln = strlen(names[k]);
      if (strcmp(names[k], p) == 0 ||
          (ln > lp + 1 && names[k][ln - lp - 1] == '_' && strcmp(names[k] + ln - lp, p) == 0))
        return true;
    }
  }
  return false;
}

/* Resolves, once, the pending names of the account's metrics that a new
 * event name (names, or any seen name when names is NULL) matches: the
 * metric is stored with its new resolvedNames, and the rollups record a new
 * definition version with its backfill. Under resolve_mu, so that a PUT
 * (which resolves everything again) is never overwritten. */
static void resolve_waiting(struct ana_arena *arena, const char *account, const char *const *names,
                            size_t n) {
  bool changed = false;
  const char *after = NULL;
  struct resolution *res = ana_arena_calloc(arena, 1, sizeof *res);
  struct ana_error err;
  if (!res || load_seen(arena, account, res, &err) < 0)
    return;
  pthread_mutex_lock(&resolve_mu);
  for (;;) {
    struct account_metrics page = {.arena = arena};
    if (opts.catalog_ops->list(opts.catalog, KIND, account, after, 256, collect_all, &page, &err) <
        0) {
      ANA_WARN("metrics", "cannot list metrics to resolve names: %s", err.message);
      break;
    }
    for (size_t i = 0; i < page.n; i++) {
      Analytics__V1__Metric *m = page.items[i];
      if (!matches_waiting(m, names, n))
        continue;
      struct lookup_ctx lctx = {0};
      struct vars own;
      const char **seen = res->seen;
      size_t n_seen = res->n_seen;
      memset(res, 0, sizeof *res);
      res->seen = seen;
      res->n_seen = n_seen;
      struct ana_formula *f =
          parse_formula_as(arena, account, m, &lctx, &own, RESOLVE_WAITING, res, &err);
      if (!f)
        continue;
      ana_formula_free(f);
      size_t before = m->n_pending_names;
      if (record_resolution(arena, m, res, RESOLVE_WAITING) < 0 || m->n_pending_names == before)
        continue;
      if (save(arena, m, false, &err) < 0) {
        ANA_WARN("metrics", "metric %s: cannot store its resolved names: %s", m->metric_id,
                 err.message);
        continue;
      }
      ANA_INFO("metrics", "metric %s: %zu bare names resolved on their first event", m->metric_id,
               before - m->n_pending_names);
      changed = true;
    }
    if (!page.last_id || page.n < 256)
      break;
    after = page.last_id;
  }
  pthread_mutex_unlock(&resolve_mu);
  if (changed)
    refresh_rollups(arena, account);
}

void ana_metric_service_names_added(void *ctx, const char *account_id, const char *const *names,
                                    size_t n) {
  (void)ctx;
  if (!opts.catalog_ops)
    return;
  struct ana_arena *arena = ana_arena_create(64 * 1024, 0);
  if (!arena)
    return;
  resolve_waiting(arena, account_id, names, n);
  ana_arena_destroy(arena);
}

/* ------------------------------------------------------------------ */
/* handlers (run on the worker pool) */

/* After a metric is saved: rollups refreshed, names that appeared between
 * the resolution and the save resolved, the metric answered. */
static void answer_saved(struct ana_call *call, Analytics__V1__Metric *m) {
  refresh_rollups(ana_call_arena(call), ana_call_principal(call)->account_id);
  if (m->n_pending_names)
    resolve_waiting(ana_call_arena(call), ana_call_principal(call)->account_id, NULL, 0);
  ana_call_reply(call, &m->base);
}

static void do_create(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__CreateMetricRequest *req = (const void *)request;
  struct ana_error err;
  if (!req->metric) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "metric: is required");
    fail_with(call, &err);
    return;
  }
  Analytics__V1__Metric *m = req->metric;
  if (check_metric(call, m, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  char *id = ana_arena_alloc(ana_call_arena(call), ANA_UUID_STR_LEN + 1);
  if (!id || ana_uuid7_generate(id) < 0) {
    ana_call_fail(call, ANA_STATUS_INTERNAL, "cannot make an id");
    return;
  }
  int64_t now = ana_clock_wall_ms();
  m->metric_id = id;
  m->created_at = ana_timestamp_new(ana_call_arena(call), now);
  m->updated_at = m->created_at;
  if (save(ana_call_arena(call), m, true, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  answer_saved(call, m);
}

static void do_get(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__GetMetricRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Metric *m;
  if (load_metric(call, req->metric_id, &m, &err) < 0)
    fail_with(call, &err);
  else
    ana_call_reply(call, &m->base);
}

struct page {
  struct ana_arena *arena;
  Analytics__V1__Metric **items;
  size_t n, cap;
  const char *last_id;
};

static int collect(void *ctx, const struct ana_catalog_object *o) {
  struct page *p = ctx;
  if (p->n == p->cap)
    return 1;
  Analytics__V1__Metric *m =
      (void *)ana_proto_unpack(&analytics__v1__metric__descriptor, &p->arena->pb, o->body,
                               o->body_len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (m) {
    p->items[p->n++] = m;
    p->last_id = ana_arena_strdup(p->arena, o->id);
  }
  return 0;
}

static void do_list(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListMetricsRequest *req = (const void *)request;
  struct ana_error err;
  size_t size = ana_service_page_size(call, req->page_size, DEFAULT_PAGE, MAX_PAGE);
  if (!size)
    return;
  struct ana_arena *a = ana_call_arena(call);
  struct page p = {a, ana_arena_calloc(a, size + 1, sizeof *p.items), 0, size + 1, NULL};
  if (!p.items) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (opts.catalog_ops->list(opts.catalog, KIND, ana_call_principal(call)->account_id,
                             req->page_token, (int)size + 1, collect, &p, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  Analytics__V1__ListMetricsResponse resp = ANALYTICS__V1__LIST_METRICS_RESPONSE__INIT;
  if (ana_service_page_more(&p.n, size))
    resp.next_page_token = p.items[size - 1]->metric_id;
  resp.n_metrics = p.n;
  resp.metrics = p.items;
  ana_call_reply(call, &resp.base);
}

static void do_update(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__UpdateMetricRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Metric *old;
  if (!req->metric) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "metric: is required");
    fail_with(call, &err);
    return;
  }
  if (load_metric(call, req->metric_id, &old, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  Analytics__V1__Metric *m = req->metric;
  if (m->metric_id && m->metric_id[0] && strcmp(m->metric_id, req->metric_id) != 0) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT,
                  "metricId: does not match the metric in the path");
    fail_with(call, &err);
    return;
  }
  if (check_metric(call, m, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  int rc;
  m->metric_id = old->metric_id;
  m->created_at = old->created_at;
  m->updated_at = ana_timestamp_new(ana_call_arena(call), ana_clock_wall_ms());
  pthread_mutex_lock(&resolve_mu);
  rc = save(ana_call_arena(call), m, false, &err);
  pthread_mutex_unlock(&resolve_mu);
  if (rc < 0) {
    fail_with(call, &err);
    return;
  }
  answer_saved(call, m);
}

static void do_delete(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__DeleteMetricRequest *req = (const void *)request;
  struct ana_error err;
  if (opts.catalog_ops->remove(opts.catalog, KIND, ana_call_principal(call)->account_id,
                               req->metric_id, &err) < 0) {
    if (err.code == ANA_STATUS_NOT_FOUND)
      ana_error_set(&err, ANA_STATUS_NOT_FOUND, "metric %s not found", req->metric_id);
    fail_with(call, &err);
    return;
  }
  if (opts.rollups && ana_rollup_forget(opts.rollups, req->metric_id, &err) < 0)
    ANA_WARN("metrics", "metric %s: rollups: %s", req->metric_id, err.message);
  refresh_rollups(ana_call_arena(call), ana_call_principal(call)->account_id);
  Analytics__V1__DeleteMetricResponse resp = ANALYTICS__V1__DELETE_METRIC_RESPONSE__INIT;
  ana_call_reply(call, &resp.base);
}

static void do_data(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__GetMetricDataRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Metric *m;
  if (load_metric(call, req->metric_id, &m, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  struct ana_metric_query q = {.metric = m, .account_id = ana_call_principal(call)->account_id};
  q.to_ms = req->to ? ana_timestamp_ms(req->to) : ana_clock_wall_ms();
  q.from_ms = req->from ? ana_timestamp_ms(req->from) : q.to_ms - DAY_MS;
  if (q.from_ms >= q.to_ms) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "to: must be after from");
    fail_with(call, &err);
    return;
  }
  if (req->top_n < 0 || req->top_n > 1000) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "topN: must be between 0 and 1000");
    fail_with(call, &err);
    return;
  }
  if (ana_interval_parse(req->interval, q.from_ms, q.to_ms, &q.interval, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  q.time_zone = req->time_zone;
  q.top_n = req->top_n;
  q.omit_empty_buckets = req->omit_empty_buckets;
  const char *keys[16], *values[16];
  for (size_t i = 0; i < req->n_dimension_filter && i < 16; i++) {
    keys[i] = req->dimension_filter[i]->key;
    values[i] = req->dimension_filter[i]->value;
    /* An encrypted dimension's values are its blind indexes. */
    const char *name = ana_crypto_fields_property(opts.encrypted, keys[i]);
    if (name && strncmp(values[i], ANA_CRYPTO_BLIND_PREFIX, sizeof ANA_CRYPTO_BLIND_PREFIX - 1) &&
        !(values[i] = ana_crypto_blind_text(opts.crypto, ana_call_principal(call)->account_id, name,
                                            values[i], ana_call_arena(call)))) {
      ana_error_set(&err, ANA_STATUS_UNAVAILABLE, "dimensionFilter: no blind index for %s", name);
      fail_with(call, &err);
      return;
    }
  }
  q.dimension_keys = keys;
  q.dimension_values = values;
  q.n_dimension_filters = req->n_dimension_filter < 16 ? req->n_dimension_filter : 16;
  struct lookup_ctx lctx = {0};
  struct vars own;
  struct ana_formula *f = parse_formula(call, m, &lctx, &own, &err);
  if (!f) {
    /* A metric it uses changed since: the definition no longer holds. */
    err.code = ANA_STATUS_FAILED_PRECONDITION;
    fail_with(call, &err);
    return;
  }
  q.formula = f;
  Analytics__V1__MetricData data = ANALYTICS__V1__METRIC_DATA__INIT;
  data.metric_id = m->metric_id;
  /* Rollups answer once complete, raw events until then. The request
   * metadata "x-metric-source" forces one ("raw", or "rollup": fails with
   * FAILED_PRECONDITION when they cannot answer), for tests and audits. */
  const char *source = ana_call_metadata(call, "x-metric-source");
  bool raw_only = source && strcmp(source, "raw") == 0;
  bool rollup_only = source && strcmp(source, "rollup") == 0;
  int rc = 0;
  if (opts.rollups && !raw_only) {
    rc = ana_rollup_query(opts.rollups, &q, ana_call_arena(call), &data, &err);
    if (rc == 0) {
      /* Unknown to the rollups, or defined otherwise (a definition written
       * just before a crash): record it now; its backfill starts. */
      struct ana_error derr;
      if (ana_rollup_define(opts.rollups, q.account_id, m, f, &derr) < 0)
        ANA_WARN("metrics", "metric %s: rollups: %s", m->metric_id, derr.message);
    }
  }
  if (rc == 0 && rollup_only)
    rc = ana_error_set(&err, ANA_STATUS_FAILED_PRECONDITION,
                       "x-metric-source: the rollups of this metric are not complete yet");
  else if (rc == 0)
    rc = ana_metric_query_raw(opts.store_ops, opts.store, &q, ana_call_arena(call), &data, &err);
  ana_formula_free(f);
  if (rc < 0)
    fail_with(call, &err);
  else
    ana_call_reply(call, &data.base);
}

/* StreamMetric: the definition and its formula, then a subscriber of the
 * metric's stream (which finishes the call from then on). */
static void do_stream(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__StreamMetricRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Metric *m;
  if (!streams_engine) {
    ana_call_fail(call, ANA_STATUS_UNIMPLEMENTED, "real-time streams are not implemented yet");
    return;
  }
  if (load_metric(call, req->metric_id, &m, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  struct ana_metric_stream_request sr = {
      .account_id = ana_call_principal(call)->account_id,
      .metric = m,
      .interval = ANA_INTERVAL_1M,
      .time_zone = req->time_zone,
      .after_sequence = req->after_sequence,
  };
  if (req->interval && req->interval[0] &&
      (strcmp(req->interval, "auto") == 0 ||
       ana_interval_parse(req->interval, 0, 1, &sr.interval, &err) < 0)) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT,
                  "interval: must be 1m, 5m, 1h or 1d (default 1m)");
    fail_with(call, &err);
    return;
  }
  struct lookup_ctx lctx = {0};
  struct vars own;
  sr.formula = parse_formula(call, m, &lctx, &own, &err);
  if (!sr.formula) {
    err.code = ANA_STATUS_FAILED_PRECONDITION;
    fail_with(call, &err);
    return;
  }
  if (ana_metric_streams_subscribe(streams_engine, call, &sr, &err) < 0)
    fail_with(call, &err);
}

static void stream_cancel(struct ana_call *call) {
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_CANCELLED, "cancelled");
  ana_realtime_unsubscribe(stream_hub, call, &st);
}

static void stream_drain(struct ana_call *call) {
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
  ana_realtime_unsubscribe(stream_hub, call, &st);
}

ANA_SERVICE_ASYNC(create_metric, do_create, opts.workers)
ANA_SERVICE_ASYNC(get_metric, do_get, opts.workers)
ANA_SERVICE_ASYNC(list_metrics, do_list, opts.workers)
ANA_SERVICE_ASYNC(update_metric, do_update, opts.workers)
ANA_SERVICE_ASYNC(delete_metric, do_delete, opts.workers)
ANA_SERVICE_ASYNC(get_metric_data, do_data, opts.workers)
ANA_SERVICE_ASYNC(stream_metric, do_stream, opts.workers)

static const struct ana_handler create_h = {.on_request = create_metric};
static const struct ana_handler get_h = {.on_request = get_metric};
static const struct ana_handler list_h = {.on_request = list_metrics};
static const struct ana_handler update_h = {.on_request = update_metric};
static const struct ana_handler delete_h = {.on_request = delete_metric};
static const struct ana_handler data_h = {.on_request = get_metric_data};
static const struct ana_handler stream_h = {
    .on_request = stream_metric, .on_cancel = stream_cancel, .on_drain = stream_drain};

int ana_metric_service_bind(const struct ana_metric_service_options *o) {
  opts = *o;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_CREATE_METRIC, &create_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC, &get_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_LIST_METRICS, &list_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_UPDATE_METRIC, &update_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_DELETE_METRIC, &delete_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC_DATA, &data_h);
  return 0;
}

int ana_metric_service_bind_streams(struct ana_metric_streams *streams, struct ana_realtime *hub) {
  streams_engine = streams;
  stream_hub = hub;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC, &stream_h);
  return 0;
}

int ana_metric_service_resolve(const char *account, const char *id_or_name, struct ana_arena *arena,
                               Analytics__V1__Metric **metric, struct ana_formula **formula,
                               struct ana_error *err) {
  struct loaded l = {arena, NULL};
  int rc = opts.catalog_ops->get(opts.catalog, KIND, account, id_or_name, keep_metric, &l, err);
  if (rc == ANA_ERR_NOT_FOUND)
    rc = opts.catalog_ops->get_by_name(opts.catalog, KIND, account, id_or_name, keep_metric, &l,
                                       err);
  if (rc == ANA_ERR_NOT_FOUND)
    return ana_error_set(err, ANA_STATUS_NOT_FOUND,
                         "metric: no metric with id or name \"%.128s\" in this account",
                         id_or_name);
  if (rc < 0)
    return rc;
  if (!l.metric)
    return ana_error_set(err, ANA_STATUS_DATA_LOSS, "metric: %.128s cannot be read", id_or_name);
  struct lookup_ctx *lctx = ana_arena_calloc(arena, 1, sizeof *lctx);
  struct vars *own = ana_arena_calloc(arena, 1, sizeof *own);
  if (!lctx || !own)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  *formula = parse_formula_as(arena, account, l.metric, lctx, own, RESOLVE_APPLY, NULL, err);
  if (!*formula) {
    err->code = ANA_STATUS_FAILED_PRECONDITION;
    return ANA_ERR_INVALID;
  }
  *metric = l.metric;
  return 0;
}

/* ------------------------------------------------------------------ */
/* ad-hoc counts from the rollups of stored metrics (reports) */

/* A stored metric without filters whose formula is count(<event name>). */
struct counter_metric {
  Analytics__V1__Metric *m;
  struct ana_formula *f;
  const char *event_name;
};

#define ADHOC_LIST_PAGE 200

struct counters {
  struct ana_arena *arena;
  const char *account;
  struct counter_metric *items;
  size_t n, cap, listed;
  const char *last_id;
  /* The page's metrics without filters, parsed once the listing has
   * returned: resolving a formula reads the catalog, which must not be
   * entered again from inside its own listing (its lock is held there). */
  Analytics__V1__Metric *page[ADHOC_LIST_PAGE];
  size_t n_page;
};

/* Whether f is count(name) alone (its value the count itself). */
static bool counts_one_name(const struct ana_formula *f, const char **name) {
  if (ana_formula_term_count(f) != 1)
    return false;
  const struct ana_agg_term *t = ana_formula_term(f, 0);
  if (t->fn != ANA_AGG_COUNT || !t->event_name || t->field)
    return false;
  static const double xs[] = {0, 1, 7, 1e6};
  for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
    double v;
    if (!ana_formula_eval(f, &xs[i], &v) || v != xs[i])
      return false;
  }
  *name = t->event_name;
  return true;
}

static int keep_candidate(void *ctx, const struct ana_catalog_object *o) {
  struct counters *c = ctx;
  c->listed++;
  c->last_id = ana_arena_strdup(c->arena, o->id);
  Analytics__V1__Metric *m =
      (void *)ana_proto_unpack(&analytics__v1__metric__descriptor, &c->arena->pb, o->body,
                               o->body_len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (m && !m->n_filters && c->last_id && c->n_page < ADHOC_LIST_PAGE)
    c->page[c->n_page++] = m;
  return 0;
}

/* Keeps the page's metrics that are count(<name>) alone. */
static void keep_counters(struct counters *c) {
  for (size_t i = 0; i < c->n_page && c->n < c->cap; i++) {
    Analytics__V1__Metric *m = c->page[i];
    struct lookup_ctx *lctx = ana_arena_calloc(c->arena, 1, sizeof *lctx);
    struct vars *own = ana_arena_calloc(c->arena, 1, sizeof *own);
    struct ana_error err;
    struct ana_formula *f = lctx && own ? parse_formula_as(c->arena, c->account, m, lctx, own,
                                                           RESOLVE_APPLY, NULL, &err)
                                        : NULL;
    const char *name;
    if (!f || !counts_one_name(f, &name)) {
      ana_formula_free(f);
      continue;
    }
    c->items[c->n++] = (struct counter_metric){m, f, name};
  }
  c->n_page = 0;
}

/* A property path without its "properties." prefix. */
static const char *property_name(const char *path) {
  return strncmp(path, "properties.", 11) == 0 ? path + 11 : path;
}

static bool has_dimension(const Analytics__V1__Metric *m, const char *name) {
  for (size_t d = 0; d < m->n_dimensions; d++)
    if (strcmp(property_name(m->dimensions[d]), name) == 0)
      return true;
  return false;
}

/* The two answers of a counter metric for a filter: the range, and the
 * previous period of the same length. */
struct counter_answer {
  size_t metric;
  const char *filter; /* the filter's values, as a key */
  Analytics__V1__MetricData current, previous;
};

#define ADHOC_MAX_COUNTERS 256
#define ADHOC_MAX_ANSWERS 64

int ana_metric_service_query(const struct ana_metric_query *q, struct ana_arena *arena,
                             Analytics__V1__MetricData *out, struct ana_error *err) {
  int rc = opts.rollups ? ana_rollup_query(opts.rollups, q, arena, out, err) : 0;
  if (rc == 0)
    rc = ana_metric_query_raw(opts.store_ops, opts.store, q, arena, out, err);
  else if (rc > 0)
    ANA_DEBUG("metrics", "metric %s: answered from its rollups", q->metric->metric_id);
  return rc < 0 ? rc : 0;
}

/* The dimensions the queries a name (their filter fields and dimensions,
 * without "properties."), in the order first named; false when more than
 * max. */
static bool adhoc_dimensions(const struct ana_metric_adhoc *a, size_t n, const char **dims,
                             size_t max, size_t *n_dims) {
  *n_dims = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < a[i].n_filters + a[i].n_dimensions; k++) {
      const char *d = property_name(k < a[i].n_filters ? a[i].filters[k]->field
                                                       : a[i].dimensions[k - a[i].n_filters]);
      bool seen = false;
      for (size_t j = 0; j < *n_dims && !seen; j++)
        seen = strcmp(dims[j], d) == 0;
      if (seen)
        continue;
      if (*n_dims == max)
        return false;
      dims[(*n_dims)++] = d;
    }
  return true;
}

/* Adds to c a counter of the account's own for each name the queries a
 * count that no counter of c holds by every dimension they name; define:
 * and defines its rollups (the same definition again does nothing). */
static void keep_report_counts(struct counters *c, const struct ana_metric_adhoc *a, size_t n,
                               bool define) {
  const char *dims[16];
  size_t n_dims, n_stored = c->n;
  if (!adhoc_dimensions(a, n, dims, 16, &n_dims))
    return;
  /* Only filters rollups can answer (adhoc_counts): "eq" with a text value
   * on a property. */
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < a[i].n_filters; k++) {
      const Analytics__V1__MetricFilter *fl = a[i].filters[k];
      const char *field = property_name(fl->field);
      if (strcmp(fl->op, "eq") != 0 || !fl->value ||
          fl->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE ||
          strcmp(field, "eventType") == 0 || strcmp(field, "eventName") == 0 ||
          strcmp(field, "sessionId") == 0 || strcmp(field, "eventId") == 0 ||
          strncmp(field, "context.", 8) == 0)
        return;
    }
  for (size_t i = 0; i < n; i++) {
    struct ana_error err;
    struct ana_formula *f = ana_formula_parse(a[i].formula, NULL, &err, NULL);
    for (size_t t = 0; f && t < ana_formula_term_count(f) && c->n < c->cap; t++) {
      const struct ana_agg_term *term = ana_formula_term(f, t);
      if (term->fn != ANA_AGG_COUNT || !term->event_name || term->field)
        continue;
      bool held = false;
      for (size_t j = 0; j < c->n && !held; j++) {
        held = strcmp(c->items[j].event_name, term->event_name) == 0;
        for (size_t d = 0; held && j < n_stored && d < n_dims; d++)
          held = has_dimension(c->items[j].m, dims[d]);
      }
      if (held)
        continue;
      Analytics__V1__Metric *m = ana_arena_alloc(c->arena, sizeof *m);
      char *id = ana_arena_alloc(c->arena, 600), *formula = ana_arena_alloc(c->arena, 300);
      if (!m || !id || !formula)
        break;
      analytics__v1__metric__init(m);
      /* One id per account, name and dimensions: the same report finds
       * the same rollups. */
      int o = snprintf(id, 600, "report-counts:%s:%s", c->account, term->event_name);
      for (size_t d = 0; d < n_dims && o > 0 && o < 600; d++)
        o += snprintf(id + o, 600 - (size_t)o, ":%s", dims[d]);
      if (o <= 0 || o >= 600 || snprintf(formula, 300, "count(%s)", term->event_name) >= 300)
        continue;
      m->metric_id = id;
      m->account_id = (char *)c->account;
      m->name = id;
      m->type = "counter";
      m->aggregation = "sum";
      m->formula = formula;
      m->dimensions = (char **)ana_arena_calloc(c->arena, n_dims, sizeof *m->dimensions);
      if (!m->dimensions)
        break;
      memcpy(m->dimensions, dims, n_dims * sizeof *dims);
      m->n_dimensions = n_dims;
      struct ana_formula *own = ana_formula_parse(formula, NULL, &err, NULL);
      const char *name;
      if (!own || !counts_one_name(own, &name)) {
        ana_formula_free(own);
        continue;
      }
      if (define && ana_rollup_define(opts.rollups, c->account, m, own, &err) < 0) {
        ANA_WARN("metrics", "report counts of %s: rollups: %s", name, err.message);
        ana_formula_free(own);
        continue;
      }
      c->items[c->n++] = (struct counter_metric){m, own, name};
    }
    ana_formula_free(f);
  }
}

static int adhoc_counts(const char *account, const struct ana_metric_adhoc *a, size_t n,
                        const struct ana_metric_query *q, struct ana_arena *arena,
                        Analytics__V1__MetricData *outs, bool keep, struct ana_error *err);

/* The account's counter metrics into c, a page at a time. */
static int list_counters(struct counters *c, struct ana_error *err) {
  for (;;) {
    size_t before = c->listed;
    if (opts.catalog_ops->list(opts.catalog, KIND, c->account, c->last_id, ADHOC_LIST_PAGE,
                               keep_candidate, c, err) < 0)
      return ANA_ERR_INVALID;
    keep_counters(c);
    if (c->listed - before < ADHOC_LIST_PAGE || c->n == c->cap)
      return 0;
  }
}

int ana_metric_service_keep_counts(const char *account, const struct ana_metric_adhoc *a, size_t n,
                                   struct ana_arena *arena, struct ana_error *err) {
  if (!opts.rollups)
    return 0;
  struct counters c = {.arena = arena, .account = account, .cap = ADHOC_MAX_COUNTERS};
  if (!(c.items = ana_arena_calloc(arena, c.cap, sizeof *c.items)))
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  int rc = list_counters(&c, err);
  if (rc == 0)
    keep_report_counts(&c, a, n, true);
  for (size_t j = 0; j < c.n; j++)
    ana_formula_free(c.items[j].f);
  return rc;
}

int ana_metric_service_adhoc_counts(const char *account, const struct ana_metric_adhoc *a, size_t n,
                                    const struct ana_metric_query *q, struct ana_arena *arena,
                                    Analytics__V1__MetricData *outs, struct ana_error *err) {
  return adhoc_counts(account, a, n, q, arena, outs, false, err);
}

int ana_metric_service_adhoc_counts_kept(const char *account, const struct ana_metric_adhoc *a,
                                         size_t n, const struct ana_metric_query *q,
                                         struct ana_arena *arena, Analytics__V1__MetricData *outs,
                                         struct ana_error *err) {
  return adhoc_counts(account, a, n, q, arena, outs, true, err);
}

static int adhoc_counts(const char *account, const struct ana_metric_adhoc *a, size_t n,
                        const struct ana_metric_query *q, struct ana_arena *arena,
                        Analytics__V1__MetricData *outs, bool keep, struct ana_error *err) {
  if (!opts.rollups)
    return 0;
  struct counters c = {.arena = arena, .account = account, .cap = ADHOC_MAX_COUNTERS};
  struct counter_answer *answers = ana_arena_calloc(arena, ADHOC_MAX_ANSWERS, sizeof *answers);
  size_t n_answers = 0;
  int rc = 0;
  if (!(c.items = ana_arena_calloc(arena, c.cap, sizeof *c.items)) || !answers)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (list_counters(&c, err) < 0) {
    rc = ANA_ERR_INVALID;
    goto out;
  }
  if (keep)
    keep_report_counts(&c, a, n, false);
  for (size_t i = 0; i < n && rc == 0; i++) {
    /* The filters: "eq" on a plain property with a text value, each then a
     * dimension filter of the counter metrics. */
    const char *keys[16], *values[16];
    char sig[1024];
    size_t o = 0;
    if (a[i].n_filters > 16)
      goto out;
    for (size_t k = 0; k < a[i].n_filters; k++) {
      const Analytics__V1__MetricFilter *fl = a[i].filters[k];
      const char *field = property_name(fl->field);
      if (strcmp(fl->op, "eq") != 0 || !fl->value ||
          fl->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE ||
          strcmp(field, "eventType") == 0 || strcmp(field, "eventName") == 0 ||
          strcmp(field, "sessionId") == 0 || strcmp(field, "eventId") == 0 ||
          strncmp(field, "context.", 8) == 0)
        goto out;
      /* An encrypted property's value is its blind index here (as the scan
       * compares it, ana_metric_service_blind_filters), and so are the
       * values a counter groups it by. */
      if (ana_crypto_fields_property(opts.encrypted, field) &&
          strncmp(fl->value->string_value, ANA_CRYPTO_BLIND_PREFIX,
                  sizeof ANA_CRYPTO_BLIND_PREFIX - 1) != 0)
        goto out;
      keys[k] = field;
      values[k] = fl->value->string_value;
      int w = snprintf(sig + o, sizeof sig - o, "%s=%s\x1f", field, values[k]);
      if (w < 0 || (size_t)w >= sizeof sig - o)
        goto out;
      o += (size_t)w;
    }
    struct ana_formula *f = ana_formula_parse(a[i].formula, NULL, err, NULL);
    if (!f) {
      rc = ANA_ERR_INVALID;
      goto out;
    }
    struct ana_metric_adhoc_source src[ANA_FORMULA_MAX_TERMS];
    size_t n_src = 0, n_terms = ana_formula_term_count(f);
    for (size_t t = 0; t < n_terms && rc == 0; t++) {
      const struct ana_agg_term *term = ana_formula_term(f, t);
      if (term->fn != ANA_AGG_COUNT || !term->event_name || term->field)
        break;
      /* A counter of that name with every dimension the query needs. */
      size_t m = c.n;
      for (size_t j = 0; j < c.n && m == c.n; j++) {
        bool ok = strcmp(c.items[j].event_name, term->event_name) == 0;
        for (size_t k = 0; ok && k < a[i].n_filters; k++)
          ok = has_dimension(c.items[j].m, keys[k]);
        for (size_t d = 0; ok && d < a[i].n_dimensions; d++)
          ok = has_dimension(c.items[j].m, property_name(a[i].dimensions[d]));
        if (ok)
          m = j;
      }
      if (m == c.n)
        break;
      struct counter_answer *ans = NULL;
      for (size_t k = 0; k < n_answers && !ans; k++)
        if (answers[k].metric == m && strcmp(answers[k].filter, sig) == 0)
          ans = &answers[k];
      if (!ans && n_answers == ADHOC_MAX_ANSWERS)
        break;
      if (!ans) {
        ans = &answers[n_answers];
        analytics__v1__metric_data__init(&ans->current);
        analytics__v1__metric_data__init(&ans->previous);
        struct ana_metric_query mq = *q;
        mq.metric = c.items[m].m;
        mq.formula = c.items[m].f;
        mq.top_n = 1000;
        mq.dimension_keys = keys;
        mq.dimension_values = values;
        mq.n_dimension_filters = a[i].n_filters;
        mq.omit_empty_buckets = false;
        rc = ana_rollup_query(opts.rollups, &mq, arena, &ans->current, err);
        if (rc > 0) {
          mq.from_ms = ana_metric_query_previous_from(q);
          mq.to_ms = q->from_ms;
          mq.previous_from_ms = 0;
          rc = ana_rollup_query(opts.rollups, &mq, arena, &ans->previous, err);
        }
        if (rc < 0)
          ANA_WARN("metrics", "report counts from metric %s: %s", mq.metric->metric_id,
                   err->message);
        if (rc <= 0) {
          rc = 0; /* not complete, or failed: the events answer */
          break;
        }
        rc = 0;
        ans->metric = m;
        ans->filter = ana_arena_strdup(arena, sig);
        n_answers++;
      }
      src[n_src++] = (struct ana_metric_adhoc_source){t, &ans->current, &ans->previous};
    }
    ana_formula_free(f);
    if (rc < 0 || n_src < n_terms)
      goto out;
    analytics__v1__metric_data__init(&outs[i]);
    rc = ana_metric_query_adhoc_from(&a[i], q, src, n_src, arena, &outs[i], err);
    if (rc <= 0)
      goto out;
    rc = 0;
  }
  rc = 1;
out:
  for (size_t j = 0; j < c.n; j++)
    ana_formula_free(c.items[j].f);
  return rc;
}

/* ------------------------------------------------------------------ */
/* encrypted dimension values in background work                        */

struct reveal_hit {
  struct ana_arena *a;
  const char *account, *key;
  const char *out;
};

static int reveal_hit(void *ctx, const uint8_t *payload, size_t len, int64_t ts,
                      const char *event_id, uint64_t seq) {
  (void)ts;
  (void)event_id;
  (void)seq;
  struct reveal_hit *h = ctx;
  struct ana_error err;
  Analytics__V1__Event *ev =
      (void *)ana_proto_unpack(&analytics__v1__event__descriptor, &h->a->pb, payload, len,
                               ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (!ev ||
      ana_crypto_event_reveal(opts.crypto, opts.encrypted, h->account, ev, true, h->a, &err) < 0 ||
      !ev->properties)
    return 1;
  for (size_t i = 0; i < ev->properties->n_fields; i++) {
    const Google__Protobuf__Value *v = ev->properties->fields[i]->value;
    if (strcmp(ev->properties->fields[i]->key, h->key) != 0 || !v)
      continue;
    if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
      h->out = ana_arena_strdup(h->a, v->string_value);
    } else if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE) {
      char num[32];
      snprintf(num, sizeof num, "%.17g", v->number_value);
      h->out = ana_arena_strdup(h->a, num);
    } else if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE) {
      h->out = v->bool_value ? "true" : "false";
    }
  }
  return 1;
}

const char *ana_metric_service_reveal(const char *account, const char *const *roles, size_t n_roles,
                                      const char *dimension, const char *value, int64_t from_ms,
                                      int64_t to_ms, struct ana_arena *a) {
  const char *name =
      opts.encrypted && value ? ana_crypto_fields_property(opts.encrypted, dimension) : NULL;
  if (!name || strncmp(value, ANA_CRYPTO_BLIND_PREFIX, sizeof ANA_CRYPTO_BLIND_PREFIX - 1) != 0)
    return value;
  struct ana_principal p = {.account_id = account, .roles = roles, .n_roles = n_roles};
  if (!ana_auth_permits(&p, "pii:read"))
    return ANA_CRYPTO_MASK;
  /* A blind index is one way: the value is that of an event that has it. */
  const char *key = name + strlen("properties.");
  if (strncmp(name, "properties.", 11) != 0 || strchr(key, '.'))
    return value;
  struct reveal_hit h = {a, account, key, NULL};
  struct ana_event_query q = {
      .account_id = account,
      .from_ms = from_ms,
      .to_ms = to_ms,
      .property_keys = &key,
      .property_values = &value,
      .n_properties = 1,
      .limit = 1,
  };
  struct ana_error err;
  if (opts.store_ops->search(opts.store, &q, reveal_hit, &h, &err) < 0 || !h.out)
    return value;
  return h.out;
}
