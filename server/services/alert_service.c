/* AlertService: alert rules in the catalog (create, list, get, replace,
 * delete), their history, and RealtimeService.StreamAlerts. The evaluator
 * (server/alerts) hears every change. Calls touch the database, so they run
 * on the worker pool. */
#include "ana_services.h"
#include "service_jobs.h"

#include "ana_alerts.h"
#include "ana_call.h"
#include "ana_id.h"
#include "ana_notify.h"
#include "ana_proto_walk.h"
#include "analytics/v1/realtime.pb-c.h"
#include "ana_clock.h"
#include "ana_timestamp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KIND "alert"
#define DEFAULT_PAGE 50
#define MAX_PAGE 1000
#define MAX_STREAM_IDS 100

static struct ana_alert_service_options opts;

struct loaded {
  struct ana_arena *arena;
  Analytics__V1__Alert *alert;
};

static int keep_alert(void *ctx, const struct ana_catalog_object *o) {
  struct loaded *l = ctx;
  l->alert = (void *)ana_proto_unpack(&analytics__v1__alert__descriptor, &l->arena->pb, o->body,
                                      o->body_len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (l->alert) {
    l->alert->created_at = ana_timestamp_new(l->arena, o->created_at_ms);
    l->alert->updated_at = ana_timestamp_new(l->arena, o->updated_at_ms);
  }
  return 1;
}

static int load_alert(struct ana_call *call, const char *id, Analytics__V1__Alert **out,
                      struct ana_error *err) {
  struct loaded l = {ana_call_arena(call), NULL};
  int rc = opts.catalog_ops->get(opts.catalog, KIND, ana_call_principal(call)->account_id, id,
                                 keep_alert, &l, err);
  if (rc == ANA_ERR_NOT_FOUND)
    return ana_error_set(err, ANA_STATUS_NOT_FOUND, "alert %.64s not found", id);
  if (rc == 0 && !l.alert)
    return ana_error_set(err, ANA_STATUS_DATA_LOSS, "alert %.64s cannot be read", id);
  *out = l.alert;
  return rc;
}

/* The output-only fields of a rule as answered. */
static void decorate(struct ana_call *call, Analytics__V1__Alert *a) {
  struct ana_arena *ar = ana_call_arena(call);
  if (!a->enabled) {
    a->enabled = ana_arena_alloc(ar, sizeof *a->enabled);
    if (a->enabled) {
      google__protobuf__bool_value__init(a->enabled);
      a->enabled->value = 1;
    }
  }
  if (!a->cooldown) {
    a->cooldown = ana_arena_alloc(ar, sizeof *a->cooldown);
    if (a->cooldown) {
      google__protobuf__int32_value__init(a->cooldown);
      a->cooldown->value = ANA_ALERT_DEFAULT_COOLDOWN_S;
    }
  }
  if (!a->severity || !*a->severity)
    a->severity = "warning";
  if (!a->no_data || !*a->no_data)
    a->no_data = "ok";
  /* channel types the account has no default channel of (yet: a channel
   * created later resolves at the next firing) */
  a->unresolved_channels = ana_arena_calloc(ar, a->n_channels + 1, sizeof *a->unresolved_channels);
  a->n_unresolved_channels = 0;
  for (size_t i = 0; a->unresolved_channels && i < a->n_channels; i++) {
    char id[40];
    struct ana_error err;
    if (!ana_notify_is_channel_type(a->channels[i]))
      continue;
    if (opts.notify &&
        ana_notify_resolve_channel_type(opts.notify, ana_call_principal(call)->account_id,
                                        a->channels[i], id, &err) == 0)
      continue;
    a->unresolved_channels[a->n_unresolved_channels++] = a->channels[i];
  }
  int counts[4];
  ana_alerts_counts(opts.alerts, a->alert_id, counts);
  a->instance_states = ana_arena_calloc(ar, 4, sizeof *a->instance_states);
  a->n_instance_states = 0;
  for (int s = 0; a->instance_states && s < 4; s++) {
    if (!counts[s])
      continue;
    Analytics__V1__Alert__InstanceStatesEntry *e = ana_arena_alloc(ar, sizeof *e);
    if (!e)
      break;
    analytics__v1__alert__instance_states_entry__init(e);
    e->key = (char *)ana_alert_state_name((enum ana_alert_state)s);
    e->value = counts[s];
    a->instance_states[a->n_instance_states++] = e;
  }
}

/* Checks a and its metric; stores it (create or replace) and loads it into
 * the evaluator. */
static int store_rule(struct ana_call *call, Analytics__V1__Alert *a, bool create, int64_t created,
                      struct ana_error *err) {
  struct ana_alert_params p;
  if (ana_alert_rule_check(a, &p, err) < 0)
    return ANA_ERR_INVALID;
  const char *account = ana_call_principal(call)->account_id;
  struct ana_arena *scratch = ana_arena_create(8192, 0);
  if (!scratch)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  Analytics__V1__Metric *m;
  struct ana_formula *f = NULL;
  int rc = ana_metric_service_resolve(account, a->metric, scratch, &m, &f, err);
  ana_formula_free(f);
  ana_arena_destroy(scratch);
  if (rc < 0)
    return rc;
  /* a channel id must be one of the account's channels */
  for (size_t i = 0; i < a->n_channels; i++)
    if (!ana_notify_is_channel_type(a->channels[i]) &&
        (!opts.notify || !ana_notify_channel_exists(opts.notify, account, a->channels[i])))
      return ana_error_set(err, ANA_STATUS_NOT_FOUND, "channels[%zu]: channel %.64s not found", i,
                           a->channels[i]);
  a->account_id = (char *)account;
  /* Notifications run with the roles of who created (or last changed) the
   * rule, as they are now. */
  const struct ana_principal *who = ana_call_principal(call);
  a->created_by = (char *)(who->subject ? who->subject : "");
  a->creator_roles = (char **)who->roles;
  a->n_creator_roles = who->n_roles;
  /* output-only fields are not stored */
  a->n_unresolved_channels = 0;
  a->n_instance_states = 0;
  a->created_at = a->updated_at = NULL;
  size_t len = protobuf_c_message_get_packed_size(&a->base);
  uint8_t *body = ana_arena_alloc(ana_call_arena(call), len ? len : 1);
  if (!body)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  protobuf_c_message_pack(&a->base, body);
  int64_t now = ana_clock_wall_ms();
  struct ana_catalog_object o = {
      KIND, account, a->alert_id, a->name, body, len, create ? now : created, now};
  if ((rc = opts.catalog_ops->put(opts.catalog, &o, create, err)) < 0) {
    if (err->code == ANA_STATUS_ALREADY_EXISTS)
      ana_error_set(err, ANA_STATUS_ALREADY_EXISTS, "name: an alert named \"%.128s\" exists",
                    a->name);
    return rc;
  }
  if ((rc = ana_alerts_put(opts.alerts, a, err)) < 0)
    return rc;
  a->created_at = ana_timestamp_new(ana_call_arena(call), o.created_at_ms);
  a->updated_at = ana_timestamp_new(ana_call_arena(call), o.updated_at_ms);
  decorate(call, a);
  return 0;
}

static void do_create(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__CreateAlertRequest *req = (const void *)request;
  struct ana_error err;
  if (!req->alert) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "alert: is required");
    ana_service_fail(call, &err);
    return;
  }
  char *id = ana_arena_alloc(ana_call_arena(call), ANA_UUID_STR_LEN + 1);
  if (!id || ana_uuid7_generate(id) < 0) {
    ana_call_fail(call, ANA_STATUS_INTERNAL, "cannot make an id");
    return;
  }
  req->alert->alert_id = id;
  if (store_rule(call, req->alert, true, 0, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  ana_call_reply(call, &req->alert->base);
}

static void do_get(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__GetAlertRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Alert *a;
  if (load_alert(call, req->alert_id, &a, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  decorate(call, a);
  ana_call_reply(call, &a->base);
}

struct page {
  struct ana_arena *arena;
  Analytics__V1__Alert **items;
  size_t n, cap;
};

static int collect(void *ctx, const struct ana_catalog_object *o) {
  struct page *p = ctx;
  struct loaded l = {p->arena, NULL};
  keep_alert(&l, o);
  if (l.alert && p->n < p->cap)
    p->items[p->n++] = l.alert;
  return 0;
}

static void do_list(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListAlertsRequest *req = (const void *)request;
  struct ana_error err;
  size_t size = ana_service_page_size(call, req->page_size, DEFAULT_PAGE, MAX_PAGE);
  if (!size)
    return;
  struct ana_arena *a = ana_call_arena(call);
  struct page p = {a, ana_arena_calloc(a, size + 1, sizeof *p.items), 0, size + 1};
  if (!p.items) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (opts.catalog_ops->list(opts.catalog, KIND, ana_call_principal(call)->account_id,
                             req->page_token, (int)size + 1, collect, &p, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__ListAlertsResponse resp = ANALYTICS__V1__LIST_ALERTS_RESPONSE__INIT;
  if (ana_service_page_more(&p.n, size))
    resp.next_page_token = p.items[size - 1]->alert_id;
  for (size_t i = 0; i < p.n; i++)
    decorate(call, p.items[i]);
  resp.n_alerts = p.n;
  resp.alerts = p.items;
  ana_call_reply(call, &resp.base);
}

static void do_update(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__UpdateAlertRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Alert *old;
  if (!req->alert) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "alert: is required");
    ana_service_fail(call, &err);
    return;
  }
  if (load_alert(call, req->alert_id, &old, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__Alert *a = req->alert;
  if (a->alert_id && a->alert_id[0] && strcmp(a->alert_id, req->alert_id) != 0) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "alertId: does not match the path");
    ana_service_fail(call, &err);
    return;
  }
  a->alert_id = req->alert_id;
  if (store_rule(call, a, false, ana_timestamp_ms(old->created_at), &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  ana_call_reply(call, &a->base);
}

static void do_delete(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__DeleteAlertRequest *req = (const void *)request;
  struct ana_error err;
  const char *account = ana_call_principal(call)->account_id;
  if (opts.catalog_ops->remove(opts.catalog, KIND, account, req->alert_id, &err) < 0) {
    if (err.code == ANA_STATUS_NOT_FOUND)
      ana_error_set(&err, ANA_STATUS_NOT_FOUND, "alert %.64s not found", req->alert_id);
    ana_service_fail(call, &err);
    return;
  }
  ana_alerts_remove(opts.alerts, account, req->alert_id);
  Analytics__V1__DeleteAlertResponse resp = ANALYTICS__V1__DELETE_ALERT_RESPONSE__INIT;
  ana_call_reply(call, &resp.base);
}

static void do_history(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListAlertHistoryRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Alert *a;
  if (load_alert(call, req->alert_id, &a, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  size_t limit = ana_service_page_size(call, req->page_size, DEFAULT_PAGE, MAX_PAGE);
  if (!limit)
    return;
  static const char *const kinds[] = {"notification", "delivery", "delivered", "retry", "failed"};
  bool known = !req->state || !*req->state || ana_alert_state_parse(req->state) >= 0;
  for (size_t i = 0; !known && i < sizeof kinds / sizeof *kinds; i++)
    known = strcmp(req->state, kinds[i]) == 0;
  if (!known) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT,
                  "state: must be ok, pending, firing, resolved, notification, delivery,"
                  " delivered, retry or failed");
    ana_service_fail(call, &err);
    return;
  }
  int64_t from = req->from ? ana_timestamp_ms(req->from) : INT64_MIN;
  int64_t to = req->to ? ana_timestamp_ms(req->to) : INT64_MAX;
  Analytics__V1__ListAlertHistoryResponse resp = ANALYTICS__V1__LIST_ALERT_HISTORY_RESPONSE__INIT;
  char *next = NULL;
  int n = ana_alerts_history(opts.alerts, ana_call_principal(call)->account_id, req->alert_id,
                             req->page_token, from, to, req->state, (int)limit,
                             ana_call_arena(call), &resp.entries, &next, &err);
  if (n < 0) {
    ana_service_fail(call, &err);
    return;
  }
  resp.n_entries = (size_t)n;
  if (next)
    resp.next_page_token = next;
  ana_call_reply(call, &resp.base);
}

/* ------------------------------------------------------------------ */

ANA_SERVICE_ASYNC(create_alert, do_create, opts.workers)
ANA_SERVICE_ASYNC(get_alert, do_get, opts.workers)
ANA_SERVICE_ASYNC(list_alerts, do_list, opts.workers)
ANA_SERVICE_ASYNC(update_alert, do_update, opts.workers)
ANA_SERVICE_ASYNC(delete_alert, do_delete, opts.workers)
ANA_SERVICE_ASYNC(alert_history, do_history, opts.workers)

static void stream_alerts(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__StreamAlertsRequest *req = (const void *)request;
  if (req->n_alert_ids > MAX_STREAM_IDS) {
    ana_call_add_violation(call, "alertIds", "at most 100");
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "alertIds: at most %d", MAX_STREAM_IDS);
    return;
  }
  if (ana_alerts_subscribe(opts.alerts, call, ana_call_principal(call)->account_id, req->alert_ids,
                           req->n_alert_ids) < 0)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

static void stream_cancel(struct ana_call *call) {
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_CANCELLED, "cancelled");
  ana_realtime_unsubscribe(opts.hub, call, &st);
}

static void stream_drain(struct ana_call *call) {
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
  ana_realtime_unsubscribe(opts.hub, call, &st);
}

static const struct ana_handler create_h = {.on_request = create_alert};
static const struct ana_handler get_h = {.on_request = get_alert};
static const struct ana_handler list_h = {.on_request = list_alerts};
static const struct ana_handler update_h = {.on_request = update_alert};
static const struct ana_handler delete_h = {.on_request = delete_alert};
static const struct ana_handler history_h = {.on_request = alert_history};
static const struct ana_handler stream_h = {
    .on_request = stream_alerts, .on_cancel = stream_cancel, .on_drain = stream_drain};

int ana_alert_service_bind(const struct ana_alert_service_options *o) {
  opts = *o;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_CREATE_ALERT, &create_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_GET_ALERT, &get_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_LIST_ALERTS, &list_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_UPDATE_ALERT, &update_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_DELETE_ALERT, &delete_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_LIST_ALERT_HISTORY, &history_h);
  if (o->hub)
    ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ALERTS, &stream_h);
  return 0;
}
