/* The event builder, and its encoding as an analytics.v1.Event. */
#include "analytics_internal.h"

#include "ana_id.h"
#include "ana_json.h"
#include "analytics/v1/events.pb-c.h"
#include "ana_clock.h"
#include "ana_timestamp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

analytics_event_t *analytics_event_new(const char *event_type, const char *event_name) {
  analytics_event_t *ev = NULL;

  if (!event_type || !event_name)
    return NULL;
  ev = calloc(1, sizeof *ev);
  if (!ev)
    return NULL;
  ev->obj = json_object();
  if (!ev->obj || json_object_set_new(ev->obj, "eventType", json_string(event_type)) < 0 ||
      json_object_set_new(ev->obj, "eventName", json_string(event_name)) < 0) {
    analytics_event_destroy(ev);
    return NULL;
  }
  return ev;
}

analytics_event_t *analytics_event_new_from_json(const char *json, analytics_error_t *err) {
  Analytics__V1__Event e = ANALYTICS__V1__EVENT__INIT;
  analytics_event_t *ev = NULL;
  struct ana_arena arena;
  struct ana_error aerr;
  json_error_t jerr;
  json_t *obj = NULL;
  char path[256];

  ana_arena_init(&arena, 0, 0);
  if (!json) {
    analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                   "json is required");
    goto out;
  }
  obj = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
  if (!obj) {
    analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT, "%s (column %d)",
                   jerr.text, jerr.column);
    goto out;
  }
  if (!json_is_object(obj)) {
    analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                   "an event is a JSON object");
    goto out;
  }
  /* The codec checks names and types now, so a bad line is reported by the
   * caller instead of failing a whole batch later. */
  if (ana_json_decode_value(&e.base, obj, &arena, NULL, &aerr, path, sizeof path) < 0) {
    analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT, "%s",
                   aerr.message);
    goto out;
  }
  if (!e.event_type || !e.event_type[0] || !e.event_name || !e.event_name[0]) {
    analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT, "%s is required",
                   !e.event_type || !e.event_type[0] ? "eventType" : "eventName");
    goto out;
  }
  ev = calloc(1, sizeof *ev);
  if (!ev) {
    analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  ev->obj = obj;
  obj = NULL;
  analytics_clear(err);
out:
  json_decref(obj);
  ana_arena_fini(&arena);
  return ev;
}

void analytics_event_destroy(analytics_event_t *ev) {
  if (!ev)
    return;
  json_decref(ev->obj);
  free(ev);
}

/* The properties object of ev, created on first use. */
static json_t *props_of(analytics_event_t *ev) {
  json_t *p = json_object_get(ev->obj, "properties");

  if (p)
    return p;
  p = json_object();
  if (!p || json_object_set_new(ev->obj, "properties", p) < 0)
    return NULL;
  return p;
}

/* Sets properties[key] = v (stolen). */
static int set_prop(analytics_event_t *ev, const char *key, json_t *v) {
  json_t *p;

  if (!ev || !key) {
    json_decref(v);
    return ANALYTICS_ERR_INVALID;
  }
  if (!v)
    return ANALYTICS_ERR_NOMEM;
  p = props_of(ev);
  if (!p) {
    json_decref(v);
    return ANALYTICS_ERR_NOMEM;
  }
  return json_object_set_new(p, key, v) < 0 ? ANALYTICS_ERR_INVALID : 0;
}

int analytics_event_set_string(analytics_event_t *ev, const char *key, const char *value) {
  if (!value)
    return ANALYTICS_ERR_INVALID;
  /* json_string refuses invalid UTF-8: the server would reject it too. */
  json_t *v = json_string(value);
  return v ? set_prop(ev, key, v) : ANALYTICS_ERR_INVALID;
}

int analytics_event_set_number(analytics_event_t *ev, const char *key, double value) {
  if (!isfinite(value))
    return ANALYTICS_ERR_INVALID;
  return set_prop(ev, key, json_real(value));
}

int analytics_event_set_bool(analytics_event_t *ev, const char *key, bool value) {
  return set_prop(ev, key, json_boolean(value));
}

int analytics_event_set_properties_json(analytics_event_t *ev, const char *json,
                                        analytics_error_t *err) {
  json_error_t jerr;
  json_t *v = NULL, *p;
  int rc;

  if (!ev || !json)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "event and json are required");
  v = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
  if (!v)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "properties: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
  if (!json_is_object(v)) {
    json_decref(v);
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "properties: not a JSON object");
  }
  p = props_of(ev);
  rc = p && json_object_update(p, v) == 0 ? 0 : ANALYTICS_ERR_NOMEM;
  json_decref(v);
  if (rc < 0)
    return analytics_fail(err, rc, ANALYTICS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  analytics_clear(err);
  return 0;
}

/* Sets or (value NULL) removes a top-level string field of the event. */
static int set_top(analytics_event_t *ev, const char *name, const char *value) {
  if (!ev)
    return ANALYTICS_ERR_INVALID;
  if (!value) {
    json_object_del(ev->obj, name);
    return 0;
  }
  json_t *v = json_string(value);
  if (!v)
    return ANALYTICS_ERR_INVALID;
  return json_object_set_new(ev->obj, name, v) < 0 ? ANALYTICS_ERR_NOMEM : 0;
}

int analytics_event_set_session(analytics_event_t *ev, const char *session_id) {
  return set_top(ev, "sessionId", session_id);
}

int analytics_event_set_id(analytics_event_t *ev, const char *event_id) {
  if (event_id) {
    size_t n = strlen(event_id);
    if (n == 0 || n > 128 ||
        strspn(event_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789_.:-") != n)
      return ANALYTICS_ERR_INVALID;
  }
  return set_top(ev, "eventId", event_id);
}

int analytics_event_set_timestamp_ms(analytics_event_t *ev, int64_t unix_ms) {
  if (!ev || unix_ms < 0)
    return ANALYTICS_ERR_INVALID;
  ev->ts_ms = unix_ms;
  ev->has_ts = true;
  return 0;
}

int analytics_event_set_context(analytics_event_t *ev, const char *user_agent, const char *locale) {
  json_t *ctx;

  if (!ev)
    return ANALYTICS_ERR_INVALID;
  ctx = json_object_get(ev->obj, "context");
  if (!ctx) {
    ctx = json_object();
    if (!ctx || json_object_set_new(ev->obj, "context", ctx) < 0)
      return ANALYTICS_ERR_NOMEM;
  }
  if (user_agent && json_object_set_new(ctx, "userAgent", json_string(user_agent)) < 0)
    return ANALYTICS_ERR_INVALID;
  if (locale && json_object_set_new(ctx, "locale", json_string(locale)) < 0)
    return ANALYTICS_ERR_INVALID;
  return 0;
}

int analytics_generate_event_id(char out[ANALYTICS_EVENT_ID_SIZE]) {
  return ana_uuid7_generate(out) < 0 ? ANALYTICS_ERR_INTERNAL : 0;
}

int analytics_event_build(const analytics_event_t *ev, struct ana_arena *arena,
                          ProtobufCMessage **out, analytics_error_t *err) {
  Analytics__V1__Event *e;
  Google__Protobuf__Timestamp *ts;
  struct ana_error aerr;
  int64_t ms;

  *out = NULL;
  e = ana_arena_alloc(arena, sizeof *e);
  ts = ana_arena_alloc(arena, sizeof *ts);
  if (!e || !ts)
    return analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                          "out of memory");
  analytics__v1__event__init(e);
  if (ana_json_decode_value(&e->base, ev->obj, arena, NULL, &aerr, NULL, 0) < 0)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "event: %s", aerr.message);
  if (!e->event_id || !e->event_id[0]) {
    char *id = ana_arena_alloc(arena, ANALYTICS_EVENT_ID_SIZE);
    if (!id)
      return analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                            "out of memory");
    if (ana_uuid7_generate(id) < 0)
      return analytics_fail(err, ANALYTICS_ERR_INTERNAL, ANALYTICS_STATUS_INTERNAL,
                            "no randomness for an event id");
    e->event_id = id;
  }
  /* A timestamp given in the event's JSON (analytics_event_new_from_json)
   * is kept unless analytics_event_set_timestamp_ms replaced it. */
  if (e->timestamp && !ev->has_ts) {
    *out = &e->base;
    return 0;
  }
  ms = ev->has_ts ? ev->ts_ms : ana_clock_wall_ms();
  ana_timestamp_set(ts, ms);
  e->timestamp = ts;
  *out = &e->base;
  return 0;
}

int analytics_parse_timestamp(const char *text, int64_t *unix_ms, analytics_error_t *err) {
  int64_t seconds;
  int32_t nanos;
  int rc;

  if (!text || !unix_ms)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "text and unix_ms are required");
  /* The parser of the server's JSON decoder (common/json), so a time read
   * here is one the server reads the same way. */
  rc = ana_json_parse_timestamp(text, strlen(text), &seconds, &nanos);
  if (rc < 0)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          rc == -2 ? "\"%.64s\": out of range (years 0001 to 9999)"
                                   : "\"%.64s\": not an RFC 3339 timestamp "
                                     "(e.g. 2024-05-01T10:00:00Z)",
                          text);
  *unix_ms = ana_timestamp_parts_ms(seconds, nanos);
  analytics_clear(err);
  return 0;
}
