/* RealtimeService.StreamAnalytics: each call becomes a subscriber of the
 * real-time hub (server/realtime), which sends its updates and finishes it.
 * StreamMetric is bound by the metric service (metric_service.c), over
 * the same hub. */
#include "ana_services.h"

#include "ana_auth.h"
#include "ana_call.h"
#include "ana_crypto_fields.h"
#include "ana_log.h"
#include "analytics/v1/realtime.pb-c.h"

#include <stdio.h>
#include <string.h>

#define MAX_PROPERTY_FILTERS 16

static struct ana_realtime *hub;
static const struct ana_crypto_fields *encrypted;

static void stream_analytics(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__StreamAnalyticsRequest *req = (const void *)request;
  struct ana_arena *a = ana_call_arena(call);
  if (req->n_properties > MAX_PROPERTY_FILTERS) {
    ana_call_add_violation(call, "properties", "at most 16 property filters");
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "properties: at most %d property filters",
                  MAX_PROPERTY_FILTERS);
    return;
  }
  struct ana_realtime_filter f = {
      .account_id = ana_call_principal(call)->account_id,
      .event_type = req->event_type,
      .event_name = req->event_name,
      .include_events = req->include_events,
      .clear_pii = ana_auth_permits(ana_call_principal(call), "pii:read"),
  };
  if (req->n_properties) {
    const char **keys = ana_arena_calloc(a, req->n_properties, sizeof *keys);
    const char **values = ana_arena_calloc(a, req->n_properties, sizeof *values);
    if (!keys || !values)
      goto nomem;
    for (size_t i = 0; i < req->n_properties; i++) {
      if (ana_crypto_fields_property(encrypted, req->properties[i]->key)) {
        char field[64];
        snprintf(field, sizeof field, "properties[%zu].key", i);
        ana_call_add_violation(call, field, "is an encrypted field (ENCRYPTED_FIELDS)");
        ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT,
                      "%s: \"%.64s\" is an encrypted field (ENCRYPTED_FIELDS): live streams "
                      "cannot filter on it",
                      field, req->properties[i]->key);
        return;
      }
      keys[i] = req->properties[i]->key;
      values[i] = req->properties[i]->value;
    }
    f.property_keys = keys;
    f.property_values = values;
    f.n_properties = req->n_properties;
  }
  if (ana_realtime_subscribe(hub, call, &f) < 0)
    goto nomem;
  return;
nomem:
  ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

static void stream_cancel(struct ana_call *call) {
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_CANCELLED, "cancelled");
  ana_realtime_unsubscribe(hub, call, &st);
}

static void stream_drain(struct ana_call *call) {
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
  ana_realtime_unsubscribe(hub, call, &st);
}

static const struct ana_handler stream_analytics_handler = {
    .on_request = stream_analytics,
    .on_cancel = stream_cancel,
    .on_drain = stream_drain,
};

int ana_realtime_service_bind(struct ana_realtime *rt, const struct ana_crypto_fields *fields) {
  hub = rt;
  encrypted = fields;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS,
               &stream_analytics_handler);
  return 0;
}
