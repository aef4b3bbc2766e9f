/* MetricService: metric definitions in the catalog (create, list, get,
 * update, delete) and their data; and RealtimeService.StreamMetric, the
 * live metric stream (server/realtime/metric_streams.c), which needs the
 * same definitions. Every call touches the database, so it runs on the
 * worker pool, never on a transport thread. */
#include "ana_services.h"
#include "ana_proto_walk.h"

#include "ana_call.h"
#include "ana_id.h"
#include "ana_log.h"
#include "ana_metric_query.h"
#include "ana_metric_streams.h"
#include "ana_rollup.h"
#include "ana_text.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define KIND "metric"
#define DEFAULT_PAGE 50
#define MAX_PAGE 1000
#define NAME_MAX_CHARS 128
#define UNIT_MAX_CHARS 32
#define MAX_VARIABLES 32
#define DAY_MS 86400000LL

static struct ana_metric_service_options opts;
static struct ana_metric_streams *streams_engine; /* StreamMetric */
static struct ana_realtime *stream_hub;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static Google__Protobuf__Timestamp *timestamp_of(struct ana_arena *a, int64_t ms) {
  Google__Protobuf__Timestamp *t = ana_arena_alloc(a, sizeof *t);
  if (t) {
    google__protobuf__timestamp__init(t);
    t->seconds = ms / 1000;
    t->nanos = (int32_t)(ms % 1000) * 1000000;
  }
  return t;
}

static int64_t ms_of(const Google__Protobuf__Timestamp *t) {
  return t->seconds * 1000 + t->nanos / 1000000;
}

/* Fails the call with err, recording the field (the text before ':') as a
 * violation so REST and gRPC clients get it as BadRequest details. */
static void fail_with(struct ana_call *call, const struct ana_error *err) {
  if (err->code == ANA_STATUS_INVALID_ARGUMENT) {
    const char *colon = strstr(err->message, ": ");
    if (colon) {
      char field[256];
      snprintf(field, sizeof field, "%.*s", (int)(colon - err->message), err->message);
      ana_call_add_violation(call, field, colon + 2);
    }
  }
  ana_call_finish(call, NULL, err);
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

struct lookup_ctx {
  struct ana_call *call;
  const char *self_name; /* a metric does not resolve to itself */
  struct vars vars[8];
  int used;
};

static int lookup_metric(void *ctx, const char *name, const char **formula,
                         const char *const **var_names, const char *const **var_formulas,
                         size_t *n_vars) {
  struct lookup_ctx *c = ctx;
  if ((c->self_name && strcmp(name, c->self_name) == 0) || c->used == 8)
    return -1;
  struct loaded l = {ana_call_arena(c->call), NULL};
  struct ana_error err;
  if (opts.catalog_ops->get_by_name(opts.catalog, KIND, ana_call_principal(c->call)->account_id,
                                    name, keep_metric, &l, &err) < 0 ||
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

static struct ana_formula *parse_formula(struct ana_call *call, const Analytics__V1__Metric *m,
                                         struct lookup_ctx *lctx, struct vars *own,
                                         struct ana_error *err) {
  vars_of(m, own);
  struct ana_formula_env env = {own->names, own->formulas, own->n, lookup_metric, lctx};
  lctx->call = call;
  lctx->self_name = m->name;
  int pos = 0;
  return ana_formula_parse(m->formula, &env, err, &pos);
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
  if (ana_metric_check_filters_and_dimensions(m, err) < 0)
    return ANA_ERR_INVALID;
  struct lookup_ctx lctx = {0};
  struct vars own;
  struct ana_formula *f = parse_formula(call, m, &lctx, &own, err);
  if (!f)
    return ANA_ERR_INVALID;
  ana_formula_free(f);
  m->account_id = (char *)account;
  return 0;
}

static int save(struct ana_call *call, Analytics__V1__Metric *m, bool create,
                struct ana_error *err) {
  size_t n = protobuf_c_message_get_packed_size(&m->base);
  uint8_t *body = ana_arena_alloc(ana_call_arena(call), n ? n : 1);
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
      .created_at_ms = ms_of(m->created_at),
      .updated_at_ms = ms_of(m->updated_at),
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
static void refresh_rollups(struct ana_call *call) {
  if (!opts.rollups)
    return;
  const char *account = ana_call_principal(call)->account_id;
  const char *after = NULL;
  for (;;) {
    struct account_metrics page = {.arena = ana_call_arena(call)};
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
      struct ana_formula *f = parse_formula(call, m, &lctx, &own, &err);
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

/* ------------------------------------------------------------------ */
/* handlers (run on the worker pool) */

typedef void (*job_fn)(struct ana_call *call, const ProtobufCMessage *request);

struct job {
  struct ana_call *call;
  const ProtobufCMessage *request;
  job_fn fn;
};

static void run_job(void *arg) {
  struct job *j = arg;
  j->fn(j->call, j->request);
}

static void submit(struct ana_call *call, const ProtobufCMessage *request, job_fn fn) {
  struct job *j = ana_arena_alloc(ana_call_arena(call), sizeof *j);
  if (!j) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  *j = (struct job){call, request, fn};
  if (ana_workers_submit(opts.workers, run_job, j) < 0)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "the server is busy; retry later");
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
  int64_t now = now_ms();
  m->metric_id = id;
  m->created_at = timestamp_of(ana_call_arena(call), now);
  m->updated_at = m->created_at;
  if (save(call, m, true, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  refresh_rollups(call);
  ana_call_reply(call, &m->base);
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
  if (req->page_size < 0 || req->page_size > MAX_PAGE) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "pageSize: must be between 0 and %d",
                  MAX_PAGE);
    fail_with(call, &err);
    return;
  }
  size_t size = req->page_size ? (size_t)req->page_size : DEFAULT_PAGE;
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
  if (p.n > size) {
    p.n = size;
    resp.next_page_token = p.items[size - 1]->metric_id;
  }
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
  m->metric_id = old->metric_id;
  m->created_at = old->created_at;
  m->updated_at = timestamp_of(ana_call_arena(call), now_ms());
  if (save(call, m, false, &err) < 0) {
    fail_with(call, &err);
    return;
  }
  refresh_rollups(call);
  ana_call_reply(call, &m->base);
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
  refresh_rollups(call);
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
  q.to_ms = req->to ? ms_of(req->to) : now_ms();
  q.from_ms = req->from ? ms_of(req->from) : q.to_ms - DAY_MS;
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
  const char *keys[16], *values[16];
  for (size_t i = 0; i < req->n_dimension_filter && i < 16; i++) {
    keys[i] = req->dimension_filter[i]->key;
    values[i] = req->dimension_filter[i]->value;
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

#define ASYNC(name, fn)                                                                            \
  static void name(struct ana_call *call, const ProtobufCMessage *request) {                       \
    submit(call, request, fn);                                                                     \
  }

ASYNC(create_metric, do_create)
ASYNC(get_metric, do_get)
ASYNC(list_metrics, do_list)
ASYNC(update_metric, do_update)
ASYNC(delete_metric, do_delete)
ASYNC(get_metric_data, do_data)
ASYNC(stream_metric, do_stream)

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
