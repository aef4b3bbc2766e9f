/* The synchronous operations: requests built as JSON, decoded by the codec
 * into the contract's message, sent through the RPC layer, answered as JSON. */
#include "analytics_internal.h"

#include "ana_client_stubs.h"
#include "ana_json.h"
#include "ana_methods.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Encodes msg as JSON into *out (malloc'd). */
static int to_json(const ProtobufCMessage *msg, char **out, analytics_error_t *err) {
  struct ana_json_buf b;

  ana_json_buf_init(&b, 0);
  if (ana_json_encode(&b, msg, NULL) < 0 || !b.data) {
    ana_json_buf_fini(&b);
    return analytics_fail(err, ANALYTICS_ERR_INTERNAL, ANALYTICS_STATUS_INTERNAL,
                          "the answer cannot be written as JSON");
  }
  *out = b.data; /* payload starts at 0: no headroom reserved */
  return 0;
}

/* Calls unary method m with the request given as a JSON value (stolen).
 * On success *json_out (if asked) holds the answer and *resp_out (if asked)
 * the decoded answer (caller frees with protobuf_c_message_free_unpacked). */
static int call_value(analytics_client_t *c, const struct ana_method *m, json_t *req_json,
                      char **json_out, ProtobufCMessage **resp_out, analytics_error_t *err) {
  struct ana_arena arena;
  struct ana_call_options opts;
  struct analytics_token *tok;
  struct ana_error aerr;
  ProtobufCMessage *req = NULL, *resp = NULL;
  char path[256];
  int rc;

  if (json_out)
    *json_out = NULL;
  if (resp_out)
    *resp_out = NULL;
  ana_arena_init(&arena, 0, 0);
  if (!c) {
    rc = analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                        "client is required");
    goto out;
  }
  if (!req_json) {
    rc = analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
    goto out;
  }
  req = ana_arena_calloc(&arena, 1, m->input->sizeof_message);
  if (!req) {
    rc = analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
    goto out;
  }
  protobuf_c_message_init(m->input, req);
  if (ana_json_decode_value(req, req_json, &arena, NULL, &aerr, path, sizeof path) < 0) {
    rc = analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT, "%s",
                        aerr.message);
    goto out;
  }
  analytics_call_options(c, &opts, &tok);
  rc = ana_client_unary(c->channel, m, req, &resp, &opts, &aerr);
  analytics_token_release(tok);
  if (rc < 0) {
    rc = analytics_from_ana(rc, &aerr, err);
    goto out;
  }
  if (json_out) {
    rc = to_json(resp, json_out, err);
    if (rc < 0)
      goto out;
  }
  if (resp_out) {
    *resp_out = resp;
    resp = NULL;
  }
  analytics_clear(err);
  rc = 0;
out:
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  json_decref(req_json);
  ana_arena_fini(&arena);
  return rc;
}

static const struct ana_method *M(enum ana_method_id id) {
  return &ana_methods[id];
}

/* --- JSON building helpers (NULL-tolerant: a NULL value adds nothing) --- */

static void put_str(json_t *o, const char *k, const char *v) {
  if (o && v && v[0])
    json_object_set_new(o, k, json_string(v));
}

static void put_int(json_t *o, const char *k, long long v) {
  if (o && v)
    json_object_set_new(o, k, json_integer(v));
}

static void put_strs(json_t *o, const char *k, const char *const *v, size_t n) {
  json_t *a;

  if (!o || !v || !n)
    return;
  a = json_array();
  for (size_t i = 0; i < n; i++)
    if (v[i])
      json_array_append_new(a, json_string(v[i]));
  json_object_set_new(o, k, a);
}

static void put_time(json_t *o, const char *k, int64_t ms) {
  char buf[64];
  struct tm tm;
  time_t s;

  if (!o || ms <= 0)
    return;
  s = (time_t)(ms / 1000);
  gmtime_r(&s, &tm);
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
  json_object_set_new(o, k, json_string(buf));
}

/* Parses JSON text into o[k]; fails with the field's name. */
static int put_json(json_t *o, const char *k, const char *text, analytics_error_t *err) {
  json_error_t jerr;
  json_t *v;

  if (!text)
    return 0;
  v = json_loads(text, JSON_DECODE_ANY, &jerr);
  if (!v)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT, "%s: %s",
                          k, jerr.text);
  json_object_set_new(o, k, v);
  return 0;
}

/* {"pageSize":..,"pageToken":..} plus one more string field. */
static json_t *page(const char *k, const char *v, int32_t page_size, const char *token) {
  json_t *o = json_object();
  put_str(o, k, v);
  put_int(o, "pageSize", page_size);
  put_str(o, "pageToken", token);
  return o;
}

static json_t *by_id(const char *k, const char *id) {
  json_t *o = json_object();
  put_str(o, k, id);
  return o;
}

static int need(const void *p, const char *what, analytics_error_t *err) {
  if (p)
    return 0;
  return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                        "%s is required", what);
}

/* --- Events --- */

int analytics_track_sync(analytics_client_t *c, const analytics_event_t *ev, char **json_out,
                         analytics_error_t *err) {
  Analytics__V1__TrackEventRequest req = ANALYTICS__V1__TRACK_EVENT_REQUEST__INIT;
  Analytics__V1__TrackEventResponse *resp = NULL;
  struct ana_arena arena;
  struct ana_call_options opts;
  struct analytics_token *tok;
  struct ana_error aerr;
  ProtobufCMessage *e = NULL;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(c, "client", err)) < 0 || (rc = need(ev, "event", err)) < 0)
    return rc;
  ana_arena_init(&arena, 0, 0);
  rc = analytics_event_build(ev, &arena, &e, err);
  if (rc < 0)
    goto out;
  req.event = (Analytics__V1__Event *)e;
  analytics_call_options(c, &opts, &tok);
  rc = ana_stub_event_service_track_event(c->channel, &req, &resp, &opts, &aerr);
  analytics_token_release(tok);
  if (rc < 0) {
    rc = analytics_from_ana(rc, &aerr, err);
    goto out;
  }
  if (json_out && (rc = to_json(&resp->base, json_out, err)) < 0)
    goto out;
  analytics_clear(err);
out:
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  ana_arena_fini(&arena);
  return rc;
}

int analytics_search_events(analytics_client_t *c, const analytics_search_t *s, char **json_out,
                            analytics_error_t *err) {
  json_t *o = json_object();

  if (s) {
    put_time(o, "from", s->from_ms);
    put_time(o, "to", s->to_ms);
    put_str(o, "eventType", s->event_type);
    put_str(o, "eventName", s->event_name);
    put_str(o, "sessionId", s->session_id);
    put_str(o, "query", s->query);
    put_int(o, "pageSize", s->page_size);
    put_str(o, "pageToken", s->page_token);
    if (s->property_count && s->property_keys && s->property_values) {
      json_t *p = json_object();
      for (size_t i = 0; i < s->property_count; i++)
        if (s->property_keys[i] && s->property_values[i])
          json_object_set_new(p, s->property_keys[i], json_string(s->property_values[i]));
      json_object_set_new(o, "properties", p);
    }
  }
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_SEARCH_EVENTS), o, json_out, NULL,
                    err);
}

/* --- Metrics --- */

static json_t *metric_json(const analytics_metric_t *m, analytics_error_t *err) {
  json_t *o = json_object();

  put_str(o, "name", m->name);
  put_str(o, "type", m->type);
  put_str(o, "formula", m->formula);
  put_str(o, "unit", m->unit);
  put_str(o, "aggregation", m->aggregation);
  put_str(o, "description", m->description);
  put_strs(o, "dimensions", m->dimensions, m->dimension_count);
  if (put_json(o, "filters", m->filters_json, err) < 0 ||
      put_json(o, "variables", m->variables_json, err) < 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}

int analytics_create_metric(analytics_client_t *c, const analytics_metric_t *metric,
                            char **json_out, analytics_error_t *err) {
  json_t *m, *o;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(metric, "metric", err)) < 0)
    return rc;
  if (!(m = metric_json(metric, err)))
    return ANALYTICS_ERR_INVALID;
  o = json_object();
  json_object_set_new(o, "metric", m);
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_CREATE_METRIC), o, json_out, NULL,
                    err);
}

int analytics_list_metrics(analytics_client_t *c, int32_t page_size, const char *page_token,
                           char **json_out, analytics_error_t *err) {
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_LIST_METRICS),
                    page(NULL, NULL, page_size, page_token), json_out, NULL, err);
}

int analytics_get_metric(analytics_client_t *c, const char *id, char **json_out,
                         analytics_error_t *err) {
  int rc;
  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "metric_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC), by_id("metricId", id),
                    json_out, NULL, err);
}

int analytics_update_metric(analytics_client_t *c, const char *id, const analytics_metric_t *metric,
                            char **json_out, analytics_error_t *err) {
  json_t *m, *o;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "metric_id", err)) < 0 || (rc = need(metric, "metric", err)) < 0)
    return rc;
  if (!(m = metric_json(metric, err)))
    return ANALYTICS_ERR_INVALID;
  o = by_id("metricId", id);
  json_object_set_new(o, "metric", m);
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_UPDATE_METRIC), o, json_out, NULL,
                    err);
}

int analytics_delete_metric(analytics_client_t *c, const char *id, analytics_error_t *err) {
  int rc;
  if ((rc = need(id, "metric_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_DELETE_METRIC),
                    by_id("metricId", id), NULL, NULL, err);
}

int analytics_get_metric_data(analytics_client_t *c, const analytics_metric_query_t *q,
                              char **json_out, analytics_error_t *err) {
  json_t *o;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(q, "query", err)) < 0 || (rc = need(q->metric_id, "metric_id", err)) < 0)
    return rc;
  o = by_id("metricId", q->metric_id);
  put_time(o, "from", q->from_ms);
  put_time(o, "to", q->to_ms);
  put_str(o, "interval", q->interval);
  put_str(o, "timeZone", q->time_zone);
  put_int(o, "topN", q->top_n);
  put_int(o, "pageSize", q->page_size);
  put_str(o, "pageToken", q->page_token);
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC_DATA), o, json_out, NULL,
                    err);
}

/* --- Reports --- */

int analytics_generate_report(analytics_client_t *c, const analytics_report_t *r, char **json_out,
                              analytics_error_t *err) {
  json_t *o, *rep;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(r, "report", err)) < 0)
    return rc;
  rep = json_object();
  put_str(rep, "name", r->name);
  put_str(rep, "template", r->template_name);
  put_str(rep, "format", r->format);
  put_str(rep, "schedule", r->schedule);
  put_strs(rep, "recipients", r->recipients, r->recipient_count);
  if ((rc = put_json(rep, "parameters", r->parameters_json, err)) < 0) {
    json_decref(rep);
    return rc;
  }
  o = json_object();
  json_object_set_new(o, "report", rep);
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_GENERATE_REPORT), o, json_out, NULL,
                    err);
}

int analytics_list_reports(analytics_client_t *c, int32_t page_size, const char *page_token,
                           char **json_out, analytics_error_t *err) {
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_LIST_REPORTS),
                    page(NULL, NULL, page_size, page_token), json_out, NULL, err);
}

int analytics_get_report(analytics_client_t *c, const char *id, char **json_out,
                         analytics_error_t *err) {
  int rc;
  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "report_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_GET_REPORT), by_id("reportId", id),
                    json_out, NULL, err);
}

/* --- Alerts --- */

static json_t *alert_json(const analytics_alert_t *a) {
  json_t *o = json_object();

  put_str(o, "name", a->name);
  put_str(o, "metric", a->metric);
  put_str(o, "condition", a->condition);
  if (a->threshold != 0)
    json_object_set_new(o, "threshold", json_real(a->threshold));
  put_str(o, "severity", a->severity);
  put_strs(o, "channels", a->channels, a->channel_count);
  put_int(o, "cooldown", a->cooldown);
  if (a->enabled)
    json_object_set_new(o, "enabled", json_true());
  return o;
}

int analytics_create_alert(analytics_client_t *c, const analytics_alert_t *alert, char **json_out,
                           analytics_error_t *err) {
  json_t *o;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(alert, "alert", err)) < 0)
    return rc;
  o = json_object();
  json_object_set_new(o, "alert", alert_json(alert));
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_CREATE_ALERT), o, json_out, NULL,
                    err);
}

int analytics_list_alerts(analytics_client_t *c, int32_t page_size, const char *page_token,
                          char **json_out, analytics_error_t *err) {
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_LIST_ALERTS),
                    page(NULL, NULL, page_size, page_token), json_out, NULL, err);
}

int analytics_get_alert(analytics_client_t *c, const char *id, char **json_out,
                        analytics_error_t *err) {
  int rc;
  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "alert_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_GET_ALERT), by_id("alertId", id),
                    json_out, NULL, err);
}

int analytics_update_alert(analytics_client_t *c, const char *id, const analytics_alert_t *alert,
                           char **json_out, analytics_error_t *err) {
  json_t *o;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "alert_id", err)) < 0 || (rc = need(alert, "alert", err)) < 0)
    return rc;
  o = by_id("alertId", id);
  json_object_set_new(o, "alert", alert_json(alert));
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_UPDATE_ALERT), o, json_out, NULL,
                    err);
}

int analytics_delete_alert(analytics_client_t *c, const char *id, analytics_error_t *err) {
  int rc;
  if ((rc = need(id, "alert_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_DELETE_ALERT), by_id("alertId", id),
                    NULL, NULL, err);
}

int analytics_list_alert_history(analytics_client_t *c, const char *id, int32_t page_size,
                                 const char *page_token, char **json_out, analytics_error_t *err) {
  int rc;
  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "alert_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_LIST_ALERT_HISTORY),
                    page("alertId", id, page_size, page_token), json_out, NULL, err);
}

/* --- Channels --- */

/* The channel as the contract's JSON, or NULL with err filled when settings
 * of two kinds are set or they disagree with the type. With no settings the
 * type's settings object goes empty (an update keeping stored secrets). */
static json_t *channel_json(const analytics_channel_t *ch, analytics_error_t *err) {
  static const char *const kinds[] = {"email", "slack", "webhook", "telegram"};
  const bool set[] = {ch->email_to && ch->email_to_count, ch->slack_webhook_url != NULL,
                      ch->webhook_url != NULL,
                      ch->telegram_bot_token != NULL || ch->telegram_chat_id != NULL};
  const char *kind = NULL;
  json_t *o, *settings;

  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    if (!set[i])
      continue;
    if (kind) {
      analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                     "channel: settings of one kind only (%s and %s given)", kind, kinds[i]);
      return NULL;
    }
    kind = kinds[i];
  }
  if (kind && ch->type && strcmp(ch->type, kind) != 0) {
    analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                   "type: \"%s\" given with %s settings", ch->type, kind);
    return NULL;
  }
  if (!kind)
    kind = ch->type;
  o = json_object();
  put_str(o, "name", ch->name);
  put_str(o, "type", ch->type);
  if (ch->is_default)
    json_object_set_new(o, "isDefault", json_true());
  if (!kind || !kind[0])
    return o;
  settings = json_object();
  if (!strcmp(kind, "email")) {
    put_strs(settings, "to", ch->email_to, ch->email_to_count);
  } else if (!strcmp(kind, "slack")) {
    put_str(settings, "webhookUrl", ch->slack_webhook_url);
  } else if (!strcmp(kind, "webhook")) {
    put_str(settings, "url", ch->webhook_url);
  } else if (!strcmp(kind, "telegram")) {
    put_str(settings, "botToken", ch->telegram_bot_token);
    put_str(settings, "chatId", ch->telegram_chat_id);
  } else {
    json_decref(settings);
    return o; /* an unknown type: the server names it */
  }
  json_object_set_new(o, kind, settings);
  return o;
}

int analytics_create_channel(analytics_client_t *c, const analytics_channel_t *channel,
                             char **json_out, analytics_error_t *err) {
  json_t *ch, *o;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(channel, "channel", err)) < 0)
    return rc;
  if (!(ch = channel_json(channel, err)))
    return ANALYTICS_ERR_INVALID;
  o = json_object();
  json_object_set_new(o, "channel", ch);
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_CREATE_CHANNEL), o, json_out, NULL,
                    err);
}

int analytics_list_channels(analytics_client_t *c, int32_t page_size, const char *page_token,
                            char **json_out, analytics_error_t *err) {
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_LIST_CHANNELS),
                    page(NULL, NULL, page_size, page_token), json_out, NULL, err);
}

int analytics_get_channel(analytics_client_t *c, const char *id, char **json_out,
                          analytics_error_t *err) {
  int rc;
  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "channel_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_GET_CHANNEL),
                    by_id("channelId", id), json_out, NULL, err);
}

int analytics_update_channel(analytics_client_t *c, const char *id,
                             const analytics_channel_t *channel, char **json_out,
                             analytics_error_t *err) {
  json_t *ch, *o;
  int rc;

  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "channel_id", err)) < 0 || (rc = need(channel, "channel", err)) < 0)
    return rc;
  if (!(ch = channel_json(channel, err)))
    return ANALYTICS_ERR_INVALID;
  o = by_id("channelId", id);
  json_object_set_new(o, "channel", ch);
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_UPDATE_CHANNEL), o, json_out, NULL,
                    err);
}

int analytics_delete_channel(analytics_client_t *c, const char *id, analytics_error_t *err) {
  int rc;
  if ((rc = need(id, "channel_id", err)) < 0)
    return rc;
  return call_value(c, M(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_DELETE_CHANNEL),
                    by_id("channelId", id), NULL, NULL, err);
}

int analytics_test_channel(analytics_client_t *c, const char *id, bool *delivered, char **json_out,
                           analytics_error_t *err) {
  ProtobufCMessage *resp = NULL;
  int rc;

  if (delivered)
    *delivered = false;
  if (json_out)
    *json_out = NULL;
  if ((rc = need(id, "channel_id", err)) < 0)
    return rc;
  rc = call_value(c, M(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_TEST_CHANNEL),
                  by_id("channelId", id), json_out, &resp, err);
  if (rc == 0 && delivered) {
    const Analytics__V1__TestChannelResponse *t = (const Analytics__V1__TestChannelResponse *)resp;
    *delivered = t->outcome && strcmp(t->outcome, "delivered") == 0;
  }
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

/* --- Streams --- */

struct stream_ctx {
  analytics_stream_fn fn;
  void *ctx;
  int rc; /* a local failure while encoding */
  /* instead of fn: the decoded message itself (downloads) */
  int (*raw)(const ProtobufCMessage *msg, void *ctx);
};

static int on_stream_message(const ProtobufCMessage *msg, void *arg) {
  struct stream_ctx *s = arg;
  char *json = NULL;
  int stop;

  if (s->raw)
    return s->raw(msg, s->ctx);

  if (to_json(msg, &json, NULL) < 0) {
    s->rc = ANALYTICS_ERR_INTERNAL;
    return 1;
  }
  stop = s->fn(json, s->ctx);
  free(json);
  return stop;
}

/* Opens m, lists the stream on the client for analytics_client_cancel_streams,
 * hands each message to s, and ends it. Returns 0 (ended with OK, stopped by
 * the callback, or cancelled) or a negative ana_err with aerr filled. */
static int run_stream(analytics_client_t *c, const struct ana_method *m,
                      const ProtobufCMessage *req, struct stream_ctx *s,
                      const struct ana_call_options *opts, struct ana_error *aerr) {
  struct analytics_open_stream node = {0}, **pp;
  ProtobufCMessage *msg = NULL;
  bool stopped = false;
  int rc, frc;

  node.s = ana_client_server_stream_open(c->channel, m, req, opts, aerr);
  if (!node.s)
    return aerr->code == ANA_STATUS_RESOURCE_EXHAUSTED ? ANA_ERR_NOMEM : ANA_ERR_INVALID;
  pthread_mutex_lock(&c->mu);
  node.next = c->streams;
  c->streams = &node;
  pthread_mutex_unlock(&c->mu);
  for (;;) {
    rc = ana_client_stream_recv(node.s, &msg, aerr);
    if (rc <= 0)
      break;
    stopped = on_stream_message(msg, s) != 0;
    protobuf_c_message_free_unpacked(msg, NULL);
    if (stopped) {
      ana_client_stream_cancel(node.s);
      break;
    }
  }
  pthread_mutex_lock(&c->mu);
  for (pp = &c->streams; *pp; pp = &(*pp)->next)
    if (*pp == &node) {
      *pp = node.next;
      break;
    }
  stopped = stopped || node.cancelled;
  pthread_mutex_unlock(&c->mu);
  /* recv already reported how the stream ended, or it was stopped. */
  frc = ana_client_stream_finish(node.s, rc < 0 || stopped ? NULL : aerr);
  if (stopped)
    return 0;
  return rc < 0 ? rc : frc;
}

int analytics_client_cancel_streams(analytics_client_t *c) {
  int n = 0;

  if (!c)
    return ANALYTICS_ERR_INVALID;
  pthread_mutex_lock(&c->mu);
  for (struct analytics_open_stream *o = c->streams; o; o = o->next)
    if (!o->cancelled) {
      o->cancelled = true;
      ana_client_stream_cancel(o->s);
      n++;
    }
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* Runs server-streaming method m with the request as JSON (stolen). */
static int stream_value(analytics_client_t *c, const struct ana_method *m, json_t *req_json,
                        analytics_stream_fn fn, void *ctx, analytics_error_t *err) {
  struct ana_arena arena;
  struct ana_call_options opts;
  struct analytics_token *tok;
  struct ana_error aerr;
  struct stream_ctx s = {fn, ctx, 0};
  ProtobufCMessage *req;
  int rc;

  ana_arena_init(&arena, 0, 0);
  if (!c || !fn) {
    rc = analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                        "client and callback are required");
    goto out;
  }
  req = ana_arena_calloc(&arena, 1, m->input->sizeof_message);
  if (!req || !req_json) {
    rc = analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
    goto out;
  }
  protobuf_c_message_init(m->input, req);
  if (ana_json_decode_value(req, req_json, &arena, NULL, &aerr, NULL, 0) < 0) {
    rc = analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT, "%s",
                        aerr.message);
    goto out;
  }
  analytics_call_options(c, &opts, &tok);
  opts.timeout_ms = 0; /* a stream lasts as long as the caller wants */
  rc = run_stream(c, m, req, &s, &opts, &aerr);
  analytics_token_release(tok);
  if (s.rc < 0)
    rc = analytics_fail(err, s.rc, ANALYTICS_STATUS_INTERNAL,
                        "a stream message cannot be "
                        "written as JSON");
  else
    rc = analytics_from_ana(rc, &aerr, err);
out:
  json_decref(req_json);
  ana_arena_fini(&arena);
  return rc;
}

/* --- Downloads --- */

struct download_ctx {
  analytics_file_chunk_fn fn;
  void *ctx;
  int64_t offset; /* where the next piece belongs */
  bool first;
  analytics_file_chunk_t head; /* the first piece's headers (strings owned) */
};

static int on_file_chunk(const ProtobufCMessage *msg, void *arg) {
  struct download_ctx *d = arg;
  const Analytics__V1__FileChunk *ch = (const Analytics__V1__FileChunk *)msg;
  analytics_file_chunk_t out;
  if (d->first) {
    d->first = false;
    d->head.content_type = strdup(ch->content_type ? ch->content_type : "");
    d->head.filename = strdup(ch->filename ? ch->filename : "");
    d->head.etag = strdup(ch->etag ? ch->etag : "");
    d->head.total_size = ch->total_size;
    if (!d->head.content_type || !d->head.filename || !d->head.etag)
      return -1;
  }
  out = d->head;
  out.offset = d->offset;
  out.data = ch->data.data;
  out.size = ch->data.len;
  d->offset += (int64_t)ch->data.len;
  return d->fn(&out, d->ctx);
}

int analytics_download_report(analytics_client_t *c, const char *id,
                              const analytics_download_options_t *o,
                              analytics_file_chunk_fn on_chunk, void *ctx, analytics_error_t *err) {
  Analytics__V1__DownloadReportRequest req = ANALYTICS__V1__DOWNLOAD_REPORT_REQUEST__INIT;
  struct download_ctx d = {.fn = on_chunk, .ctx = ctx, .first = true};
  struct stream_ctx s = {.ctx = &d, .raw = on_file_chunk};
  struct ana_call_options opts;
  struct analytics_token *tok;
  struct ana_error aerr;
  int rc;

  if ((rc = need(c, "client", err)) < 0 || (rc = need(id, "report_id", err)) < 0 ||
      (rc = need(on_chunk ? id : NULL, "on_chunk", err)) < 0)
    return rc;
  if (o && o->length < 0)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "length must not be negative");
  req.report_id = (char *)id;
  if (o) {
    req.run_id = (char *)(o->run_id ? o->run_id : "");
    req.offset = o->offset;
    req.length = o->length;
    req.if_none_match = (char *)(o->if_none_match ? o->if_none_match : "");
  }
  if (o && o->offset > 0)
    d.offset = o->offset;
  analytics_call_options(c, &opts, &tok);
  opts.timeout_ms = 0; /* as long as the file takes */
  rc = run_stream(c, &ana_methods[ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_DOWNLOAD_REPORT],
                  &req.base, &s, &opts, &aerr);
  analytics_token_release(tok);
  if (!d.first && (!d.head.content_type || !d.head.filename || !d.head.etag))
    rc = analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
  else
    rc = analytics_from_ana(rc, &aerr, err);
  free((char *)d.head.content_type);
  free((char *)d.head.filename);
  free((char *)d.head.etag);
  return rc;
}

struct to_file_ctx {
  FILE *out;
  analytics_download_info_t *info;
  bool failed;
};

static int write_chunk(const analytics_file_chunk_t *ch, void *arg) {
  struct to_file_ctx *t = arg;
  if (t->info && t->info->total_size < 0) {
    snprintf(t->info->content_type, sizeof t->info->content_type, "%s", ch->content_type);
    snprintf(t->info->filename, sizeof t->info->filename, "%s", ch->filename);
    snprintf(t->info->etag, sizeof t->info->etag, "%s", ch->etag);
    t->info->total_size = ch->total_size;
  }
  if (ch->size && fwrite(ch->data, 1, ch->size, t->out) != ch->size) {
    t->failed = true;
    return 1;
  }
  if (t->info)
    t->info->written += (int64_t)ch->size;
  return 0;
}

int analytics_download_report_to_file(analytics_client_t *c, const char *id,
                                      const analytics_download_options_t *o, FILE *out,
                                      analytics_download_info_t *info, analytics_error_t *err) {
  struct to_file_ctx t = {out, info, false};
  int rc;
  if ((rc = need(out, "out", err)) < 0)
    return rc;
  if (info) {
    memset(info, 0, sizeof *info);
    info->total_size = -1;
  }
  rc = analytics_download_report(c, id, o, write_chunk, &t, err);
  if (rc == 0 && (t.failed || fflush(out) != 0))
    return analytics_fail(err, ANALYTICS_ERR_INTERNAL, ANALYTICS_STATUS_INTERNAL,
                          "cannot write the file: %s", strerror(errno));
  return rc;
}

int analytics_stream_metric(analytics_client_t *c, const char *metric_id,
                            analytics_stream_fn on_update, void *ctx, analytics_error_t *err) {
  int rc;
  if ((rc = need(metric_id, "metric_id", err)) < 0)
    return rc;
  return stream_value(c, M(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC),
                      by_id("metricId", metric_id), on_update, ctx, err);
}

int analytics_stream_alerts(analytics_client_t *c, const char *const *alert_ids, size_t n,
                            analytics_stream_fn on_update, void *ctx, analytics_error_t *err) {
  json_t *o = json_object();
  put_strs(o, "alertIds", alert_ids, n);
  return stream_value(c, M(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ALERTS), o, on_update,
                      ctx, err);
}

int analytics_stream_analytics(analytics_client_t *c, const analytics_stream_filter_t *f,
                               analytics_stream_fn on_update, void *ctx, analytics_error_t *err) {
  json_t *o = json_object();
  if (f) {
    put_str(o, "eventType", f->event_type);
    put_str(o, "eventName", f->event_name);
    if (f->include_events)
      json_object_set_new(o, "includeEvents", json_true());
  }
  return stream_value(c, M(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS), o, on_update,
                      ctx, err);
}

int analytics_stream_call(analytics_client_t *c, const char *method, const char *request_json,
                          analytics_stream_fn on_message, void *ctx, analytics_error_t *err) {
  const struct ana_method *m = method ? ana_method_find(method) : NULL;
  json_error_t jerr;
  json_t *req;

  if (!m)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "unknown method %s", method ? method : "(null)");
  if (m->kind != ANA_METHOD_SERVER_STREAMING)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "%s is not a server-streaming method", method);
  req = request_json ? json_loads(request_json, 0, &jerr) : json_object();
  if (!req)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "request: %s", jerr.text);
  return stream_value(c, m, req, on_message, ctx, err);
}

/* --- Other --- */

int analytics_health(analytics_client_t *c, const char *service, bool *serving,
                     analytics_error_t *err) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  struct ana_call_options opts;
  struct analytics_token *tok;
  struct ana_error aerr;
  int rc;

  if (serving)
    *serving = false;
  if ((rc = need(c, "client", err)) < 0)
    return rc;
  req.service = (char *)(service ? service : "");
  analytics_call_options(c, &opts, &tok);
  rc = ana_stub_grpc__health__v1__health_check(c->channel, &req, &resp, &opts, &aerr);
  analytics_token_release(tok);
  if (rc < 0)
    return analytics_from_ana(rc, &aerr, err);
  if (serving)
    *serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  analytics_clear(err);
  return 0;
}

int analytics_call(analytics_client_t *c, const char *method, const char *request_json,
                   char **json_out, analytics_error_t *err) {
  const struct ana_method *m;
  json_error_t jerr;
  json_t *req;

  if (json_out)
    *json_out = NULL;
  m = method ? ana_method_find(method) : NULL;
  if (!m)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "unknown method %s", method ? method : "(null)");
  if (m->kind != ANA_METHOD_UNARY)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "%s is a streaming method", method);
  req = request_json ? json_loads(request_json, 0, &jerr) : json_object();
  if (!req)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "request: %s", jerr.text);
  return call_value(c, m, req, json_out, NULL, err);
}
