/* Unit tests for the canonical proto3 JSON codec (common/json), on the
 * contracts' own messages: both directions, the error paths with their exact
 * messages, and fields set from URL text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_alloc.h"
#include "ana_json.h"
#include "ana_methods.h"
#include "json_internal.h"

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ana_arena arena;
static struct ana_error err;
static char path[128];
static char out[1 << 16];
static int last_rc;

static int setup(void **state) {
  (void)state;
  ana_arena_init(&arena, 0, 0);
  ana_error_clear(&err);
  path[0] = '\0';
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ana_alloc_fail_after(0);
  ana_arena_fini(&arena);
  return 0;
}

/* m as JSON (a static copy), or NULL with last_rc set. */
static const char *enc(const void *m, const struct ana_json_options *o) {
  struct ana_json_buf b;
  ana_json_buf_init(&b, 0);
  last_rc = ana_json_encode(&b, m, o);
  if (last_rc) {
    ana_json_buf_fini(&b);
    return NULL;
  }
  assert_true(b.len < sizeof out);
  memcpy(out, b.data + b.reserve, b.len + 1);
  ana_json_buf_fini(&b);
  return out;
}

static void *dec(const ProtobufCMessageDescriptor *d, const char *json,
                 const struct ana_json_options *o) {
  return ana_json_decode(d, json, strlen(json), &arena, o, &err, path, sizeof path);
}

/* Decodes json and re-encodes it canonically. */
static const char *roundtrip(const ProtobufCMessageDescriptor *d, const char *json) {
  void *m = dec(d, json, NULL);
  if (!m)
    fail_msg("decoding %s failed: %s", json, err.message);
  const char *s = enc(m, NULL);
  assert_non_null(s);
  return s;
}

static void decode_fails(const ProtobufCMessageDescriptor *d, const char *json,
                         const struct ana_json_options *o, const char *message,
                         const char *json_path) {
  ana_error_clear(&err);
  assert_null(dec(d, json, o));
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
  assert_string_equal(err.message, message);
  assert_string_equal(path, json_path);
}

static void set_fails(void *m, const char *field, const char *value, const char *message) {
  ana_error_clear(&err);
  assert_int_equal(ana_json_set_field(m, field, value, &arena, &err), ANA_ERR_INVALID);
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
  assert_string_equal(err.message, message);
}

static void set_ok(void *m, const char *field, const char *value) {
  ana_error_clear(&err);
  int rc = ana_json_set_field(m, field, value, &arena, &err);
  if (rc)
    fail_msg("set %s=%s: %s", field, value, err.message);
}

static Google__Protobuf__Timestamp *timestamp(int64_t s, int32_t n) {
  Google__Protobuf__Timestamp *t = ana_arena_alloc(&arena, sizeof *t);
  google__protobuf__timestamp__init(t);
  t->seconds = s;
  t->nanos = n;
  return t;
}

/* ---- encoding ---- */

static void encode_event_canonical(void **state) {
  (void)state;
  Analytics__V1__Event *ev = dec(&analytics__v1__event__descriptor,
                                 "{\"properties\":{\"campaignId\":\"c1\",\"n\":3,\"ok\":true,"
                                 "\"none\":null,\"tags\":[\"a\",1.5],\"nested\":{\"x\":{}}}}",
                                 NULL);
  assert_non_null(ev);
  Analytics__V1__EventContext ctx = ANALYTICS__V1__EVENT_CONTEXT__INIT;
  ctx.user_agent = "curl/8";
  ctx.locale = "de-DE";
  ev->event_id = "e1";
  ev->account_id = "acc";
  ev->event_type = "track";
  ev->event_name = "message_delivered";
  ev->timestamp = timestamp(1704164645, 120000000);
  ev->context = &ctx;
  assert_string_equal(
      enc(ev, NULL),
      "{\"eventId\":\"e1\",\"accountId\":\"acc\",\"eventType\":\"track\","
      "\"eventName\":\"message_delivered\",\"timestamp\":\"2024-01-02T03:04:05.120Z\","
      "\"properties\":{\"campaignId\":\"c1\",\"n\":3,\"ok\":true,\"none\":null,"
      "\"tags\":[\"a\",1.5],\"nested\":{\"x\":{}}},"
      "\"context\":{\"userAgent\":\"curl/8\",\"locale\":\"de-DE\"}}");
}

static void encode_defaults_and_proto_names(void **state) {
  (void)state;
  Analytics__V1__EventResult r = ANALYTICS__V1__EVENT_RESULT__INIT;
  assert_string_equal(enc(&r, NULL), "{}");
  struct ana_json_options o = {.emit_defaults = true};
  assert_string_equal(enc(&r, &o),
                      "{\"index\":0,\"eventId\":\"\",\"status\":\"STATUS_UNSPECIFIED\","
                      "\"violations\":[],\"storedTimestamp\":null,\"skewMs\":\"0\"}");
  o.use_proto_names = true;
  assert_string_equal(enc(&r, &o),
                      "{\"index\":0,\"event_id\":\"\",\"status\":\"STATUS_UNSPECIFIED\","
                      "\"violations\":[],\"stored_timestamp\":null,\"skew_ms\":\"0\"}");
  /* Maps are {} and an unset Value is left out (null would mean NullValue). */
  Analytics__V1__MetricFilter f = ANALYTICS__V1__METRIC_FILTER__INIT;
  o.use_proto_names = false;
  assert_string_equal(enc(&f, &o), "{\"field\":\"\",\"op\":\"\"}");
  Analytics__V1__SearchEventsRequest s = ANALYTICS__V1__SEARCH_EVENTS_REQUEST__INIT;
  assert_string_equal(enc(&s, &o),
                      "{\"from\":null,\"to\":null,\"eventType\":\"\",\"eventName\":\"\","
                      "\"sessionId\":\"\",\"properties\":{},\"query\":\"\",\"pageSize\":0,"
                      "\"pageToken\":\"\"}");
}

static void encode_integers(void **state) {
  (void)state;
  Analytics__V1__ImportEventsResponse a = ANALYTICS__V1__IMPORT_EVENTS_RESPONSE__INIT;
  a.accepted = -300;
  assert_string_equal(enc(&a, NULL), "{\"accepted\":\"-300\"}");
  a.accepted = INT64_MIN;
  assert_string_equal(enc(&a, NULL), "{\"accepted\":\"-9223372036854775808\"}");
  Analytics__V1__AnalyticsUpdate u = ANALYTICS__V1__ANALYTICS_UPDATE__INIT;
  u.sequence = UINT64_MAX;
  assert_string_equal(enc(&u, NULL), "{\"sequence\":\"18446744073709551615\"}");
  u.sequence = 9007199254740993u; /* 2^53 + 1: not a double */
  assert_string_equal(enc(&u, NULL), "{\"sequence\":\"9007199254740993\"}");
  Analytics__V1__TrackEventsResponse t = ANALYTICS__V1__TRACK_EVENTS_RESPONSE__INIT;
  t.accepted = INT32_MAX;
  t.rejected = INT32_MIN;
  assert_string_equal(enc(&t, NULL), "{\"accepted\":2147483647,\"rejected\":-2147483648}");
  Google__Protobuf__UInt32Value w = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
  w.value = UINT32_MAX;
  assert_string_equal(enc(&w, NULL), "4294967295");
}

static void encode_floating_point(void **state) {
  (void)state;
  static const struct {
    double v;
    const char *json;
  } cases[] = {
      {0.1, "0.1"},
      {1.5, "1.5"},
      {-2.0, "-2"},
      {1e300, "1e+300"},
      {5e-324, "4.94065645841247e-324"},
      {1.0 / 3, "0.3333333333333333"},
      {0.1 + 0.2, "0.30000000000000004"},
      {123456789012345678.0, "1.2345678901234568e+17"},
      {NAN, "\"NaN\""},
      {INFINITY, "\"Infinity\""},
      {-INFINITY, "\"-Infinity\""},
  };
  Analytics__V1__Alert a = ANALYTICS__V1__ALERT__INIT;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char want[96];
    a.threshold = cases[i].v;
    snprintf(want, sizeof want, "{\"threshold\":%s}", cases[i].json);
    assert_string_equal(enc(&a, NULL), want);
    /* ... and every one reads back exactly. */
    Analytics__V1__Alert *back = dec(&analytics__v1__alert__descriptor, out, NULL);
    assert_non_null(back);
    if (isnan(cases[i].v))
      assert_true(isnan(back->threshold));
    else
      assert_memory_equal(&back->threshold, &cases[i].v, sizeof(double));
  }
  Google__Protobuf__FloatValue f = GOOGLE__PROTOBUF__FLOAT_VALUE__INIT;
  f.value = 0.1f;
  assert_string_equal(enc(&f, NULL), "0.1");
  f.value = 16777216.0f;
  assert_string_equal(enc(&f, NULL), "16777216");
  f.value = 3.40282347e38f; /* FLT_MAX: the shortest text exceeds it, so exact */
  assert_string_equal(enc(&f, NULL), "3.4028234663852886e+38");
  f.value = -INFINITY;
  assert_string_equal(enc(&f, NULL), "\"-Infinity\"");
}

static void encode_enums(void **state) {
  (void)state;
  Analytics__V1__EventResult r = ANALYTICS__V1__EVENT_RESULT__INIT;
  r.status = ANALYTICS__V1__EVENT_RESULT__STATUS__DUPLICATE;
  assert_string_equal(enc(&r, NULL), "{\"status\":\"DUPLICATE\"}");
  r.status = 77; /* open enum: unknown numbers stay numbers */
  assert_string_equal(enc(&r, NULL), "{\"status\":77}");
}

static void encode_bytes(void **state) {
  (void)state;
  Analytics__V1__ReportFile f = ANALYTICS__V1__REPORT_FILE__INIT;
  uint8_t data[] = {0xfb, 0xff, 0x00, 'a'};
  static const char *const want[] = {"{}", "{\"data\":\"+w==\"}", "{\"data\":\"+/8=\"}",
                                     "{\"data\":\"+/8A\"}", "{\"data\":\"+/8AYQ==\"}"};
  for (size_t n = 0; n <= sizeof data; n++) {
    f.data.data = data;
    f.data.len = n;
    assert_string_equal(enc(&f, NULL), want[n]);
  }
}

static void encode_timestamps(void **state) {
  (void)state;
  static const struct {
    int64_t s;
    int32_t n;
    const char *json;
  } cases[] = {
      {0, 0, "\"1970-01-01T00:00:00Z\""},
      {1704164645, 120000000, "\"2024-01-02T03:04:05.120Z\""},
      {1704164645, 120500000, "\"2024-01-02T03:04:05.120500Z\""},
      {1704164645, 1, "\"2024-01-02T03:04:05.000000001Z\""},
      {951782400, 0, "\"2000-02-29T00:00:00Z\""},
      {-1, 999999999, "\"1969-12-31T23:59:59.999999999Z\""},
      {-62135596800, 0, "\"0001-01-01T00:00:00Z\""},
      {253402300799, 999999999, "\"9999-12-31T23:59:59.999999999Z\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Google__Protobuf__Timestamp *t = timestamp(cases[i].s, cases[i].n);
    assert_string_equal(enc(t, NULL), cases[i].json);
    Google__Protobuf__Timestamp *back = dec(&google__protobuf__timestamp__descriptor, out, NULL);
    assert_non_null(back);
    assert_int_equal(back->seconds, cases[i].s);
    assert_int_equal(back->nanos, cases[i].n);
  }
  /* Out of range: an error, and the buffer is left as it was. */
  struct ana_json_buf b;
  ana_json_buf_init(&b, 4);
  Analytics__V1__MetricBucket mb = ANALYTICS__V1__METRIC_BUCKET__INIT;
  assert_int_equal(ana_json_encode(&b, &mb.base, NULL), 0);
  assert_int_equal(b.len, 2);
  mb.start = timestamp(253402300800, 0);
  assert_int_equal(ana_json_encode(&b, &mb.base, NULL), ANA_ERR_INVALID);
  mb.start = timestamp(0, -1);
  assert_int_equal(ana_json_encode(&b, &mb.base, NULL), ANA_ERR_INVALID);
  assert_int_equal(b.len, 2);
  assert_string_equal(b.data + b.reserve, "{}");
  ana_json_buf_fini(&b);
}

static void encode_durations(void **state) {
  (void)state;
  static const struct {
    int64_t s;
    int32_t n;
    const char *json;
  } cases[] = {
      {0, 0, "\"0s\""},
      {1, 500000000, "\"1.500s\""},
      {-1, -500000000, "\"-1.500s\""},
      {0, -1, "\"-0.000000001s\""},
      {1, 340012, "\"1.000340012s\""},
      {315576000000, 999999999, "\"315576000000.999999999s\""},
  };
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    d.seconds = cases[i].s;
    d.nanos = cases[i].n;
    assert_string_equal(enc(&d, NULL), cases[i].json);
  }
  d.seconds = 1;
  d.nanos = -1; /* signs differ */
  assert_null(enc(&d, NULL));
  assert_int_equal(last_rc, ANA_ERR_INVALID);
  d.seconds = 315576000001;
  d.nanos = 0;
  assert_null(enc(&d, NULL));
}

static void encode_wrappers(void **state) {
  (void)state;
  Analytics__V1__MetricBucket mb = ANALYTICS__V1__METRIC_BUCKET__INIT;
  Google__Protobuf__DoubleValue zero = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
  mb.value = &zero; /* present, holding 0: written */
  assert_string_equal(enc(&mb, NULL), "{\"value\":0}");
  struct ana_json_options o = {.emit_defaults = true};
  assert_string_equal(enc(&mb, &o),
                      "{\"start\":null,\"value\":0,\"rate\":null,\"percentiles\":{}}");
  Google__Protobuf__BoolValue b = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
  assert_string_equal(enc(&b, NULL), "false");
  Google__Protobuf__StringValue s = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
  s.value = "x";
  assert_string_equal(enc(&s, NULL), "\"x\"");
  Google__Protobuf__Int64Value i = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
  i.value = -1;
  assert_string_equal(enc(&i, NULL), "\"-1\"");
  Google__Protobuf__BytesValue y = GOOGLE__PROTOBUF__BYTES_VALUE__INIT;
  y.value.data = (uint8_t *)"ab";
  y.value.len = 2;
  assert_string_equal(enc(&y, NULL), "\"YWI=\"");
}

static void encode_maps(void **state) {
  (void)state;
  assert_string_equal(roundtrip(&analytics__v1__metric_bucket__descriptor,
                                "{\"percentiles\":{\"p50\":1.5,\"p99\":\"NaN\"}}"),
                      "{\"percentiles\":{\"p50\":1.5,\"p99\":\"NaN\"}}");
  /* A binary map may repeat a key; the last entry wins, and JSON gets it once. */
  Analytics__V1__SearchEventsRequest__PropertiesEntry e[20];
  Analytics__V1__SearchEventsRequest__PropertiesEntry *ep[20];
  Analytics__V1__SearchEventsRequest s = ANALYTICS__V1__SEARCH_EVENTS_REQUEST__INIT;
  static const char *const keys[] = {"a", "b", "a"};
  static const char *const values[] = {"1", "2", "3"};
  for (size_t i = 0; i < 3; i++) {
    analytics__v1__search_events_request__properties_entry__init(&e[i]);
    e[i].key = (char *)keys[i];
    e[i].value = (char *)values[i];
    ep[i] = &e[i];
  }
  s.n_properties = 3;
  s.properties = ep;
  assert_string_equal(enc(&s, NULL), "{\"properties\":{\"b\":\"2\",\"a\":\"3\"}}");
  /* The same for maps big enough to be sorted. */
  char names[20][4];
  for (size_t i = 0; i < 20; i++) {
    analytics__v1__search_events_request__properties_entry__init(&e[i]);
    snprintf(names[i], sizeof names[i], "k%zu", i % 10);
    e[i].key = names[i];
    e[i].value = i < 10 ? "old" : "new";
    ep[i] = &e[i];
  }
  s.n_properties = 20;
  const char *json = enc(&s, NULL);
  assert_non_null(json);
  assert_null(strstr(json, "old"));
  assert_non_null(strstr(json, "\"k0\":\"new\""));
  assert_non_null(strstr(json, "\"k9\":\"new\""));
}

static void encode_strings_escaped(void **state) {
  (void)state;
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  ev.event_name = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f \xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e";
  assert_string_equal(enc(&ev, NULL),
                      "{\"eventName\":\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f "
                      "\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\"}");
  /* protobuf-c does not check UTF-8: invalid bytes become U+FFFD. */
  ev.event_name = "a\xff"
                  "b\xc3(\xed\xa0\x80";
  assert_string_equal(enc(&ev, NULL), "{\"eventName\":\"a\xef\xbf\xbd"
                                      "b\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}");
}

static void encode_oneof(void **state) {
  (void)state;
  Analytics__V1__AnalyticsUpdate u = ANALYTICS__V1__ANALYTICS_UPDATE__INIT;
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  Analytics__V1__AggregateSnapshot agg = ANALYTICS__V1__AGGREGATE_SNAPSHOT__INIT;
  struct ana_json_options o = {.emit_defaults = true};
  assert_string_equal(enc(&u, &o), "{\"sequence\":\"0\"}"); /* unset oneof: never written */
  u.update_case = ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT;
  u.event = &ev;
  assert_string_equal(enc(&u, NULL), "{\"event\":{}}");
  u.update_case = ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_AGGREGATES;
  u.aggregates = &agg;
  agg.at = timestamp(60, 0);
  assert_string_equal(enc(&u, NULL), "{\"aggregates\":{\"at\":\"1970-01-01T00:01:00Z\"}}");
}

static void encode_value_kinds(void **state) {
  (void)state;
  Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
  assert_string_equal(enc(&v, NULL), "null"); /* no kind set */
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
  assert_string_equal(enc(&v, NULL), "null");
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  v.number_value = 2.5;
  assert_string_equal(enc(&v, NULL), "2.5");
  v.number_value = -0.0; /* "-0" would read back as the integer 0 */
  assert_string_equal(enc(&v, NULL), "-0.0");
  Google__Protobuf__Value *back = dec(&google__protobuf__value__descriptor, out, NULL);
  assert_non_null(back);
  assert_true(back->number_value == 0 && signbit(back->number_value));
  v.number_value = NAN; /* no JSON number: written as python-protobuf does */
  assert_string_equal(enc(&v, NULL), "\"NaN\"");
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
  v.list_value = NULL;
  assert_string_equal(enc(&v, NULL), "[]");
  assert_string_equal(roundtrip(&analytics__v1__alert__descriptor,
                                "{\"condition\":{\"all\":[{\"gt\":[\"$value\",10]},null,true]}}"),
                      "{\"condition\":{\"all\":[{\"gt\":[\"$value\",10]},null,true]}}");
  assert_string_equal(roundtrip(&analytics__v1__alert__descriptor, "{\"condition\":null}"),
                      "{\"condition\":null}");
}

static void pack_any(Google__Protobuf__Any *any, const char *url, const ProtobufCMessage *m) {
  google__protobuf__any__init(any);
  any->type_url = (char *)url;
  any->value.len = protobuf_c_message_get_packed_size(m);
  any->value.data = ana_arena_alloc(&arena, any->value.len + 1);
  protobuf_c_message_pack(m, any->value.data);
}

static void encode_any(void **state) {
  (void)state;
  Google__Protobuf__Any any;
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  ev.event_id = "x";
  pack_any(&any, "type.googleapis.com/analytics.v1.Event", &ev.base);
  assert_string_equal(enc(&any, NULL),
                      "{\"@type\":\"type.googleapis.com/analytics.v1.Event\",\"eventId\":\"x\"}");
  pack_any(&any, "type.googleapis.com/google.protobuf.Timestamp", &timestamp(1, 0)->base);
  assert_string_equal(enc(&any, NULL),
                      "{\"@type\":\"type.googleapis.com/google.protobuf.Timestamp\","
                      "\"value\":\"1970-01-01T00:00:01Z\"}");
  Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
  pack_any(&any, "type.googleapis.com/google.protobuf.Empty", &empty.base);
  assert_string_equal(enc(&any, NULL), "{\"@type\":\"type.googleapis.com/google.protobuf.Empty\"}");
  google__protobuf__any__init(&any);
  assert_string_equal(enc(&any, NULL), "{}");

  /* The REST error body: google.rpc.Status with BadRequest details. */
  Google__Rpc__BadRequest__FieldViolation fv = GOOGLE__RPC__BAD_REQUEST__FIELD_VIOLATION__INIT;
  Google__Rpc__BadRequest__FieldViolation *fvs[] = {&fv};
  Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
  fv.field = "events[3].timestamp";
  fv.description = "not an RFC 3339 timestamp";
  br.n_field_violations = 1;
  br.field_violations = fvs;
  pack_any(&any, "type.googleapis.com/google.rpc.BadRequest", &br.base);
  Google__Protobuf__Any *details[] = {&any};
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = 3;
  st.message = "invalid";
  st.n_details = 1;
  st.details = details;
  struct ana_json_options o = {.emit_defaults = true};
  assert_string_equal(enc(&st, &o),
                      "{\"code\":3,\"message\":\"invalid\",\"details\":[{\"@type\":"
                      "\"type.googleapis.com/google.rpc.BadRequest\",\"fieldViolations\":[{"
                      "\"field\":\"events[3].timestamp\",\"description\":\"not an RFC 3339 "
                      "timestamp\"}]}]}");

  any.type_url = "type.googleapis.com/no.such.Type";
  assert_null(enc(&any, NULL));
  assert_int_equal(last_rc, ANA_ERR_INVALID);
  any.type_url = "type.googleapis.com/analytics.v1.Event";
  any.value.data = (uint8_t *)"\xff";
  any.value.len = 1;
  assert_null(enc(&any, NULL));
  assert_int_equal(last_rc, ANA_ERR_INVALID);
}

static void encode_field_mask(void **state) {
  (void)state;
  Google__Protobuf__FieldMask fm = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
  char *paths[] = {"event_id", "context.user_agent", "a1_b"};
  fm.n_paths = 3;
  fm.paths = paths;
  assert_string_equal(enc(&fm, NULL), "\"eventId,context.userAgent,a1B\"");
  Google__Protobuf__FieldMask *back = dec(&google__protobuf__field_mask__descriptor, out, NULL);
  assert_non_null(back);
  assert_int_equal(back->n_paths, 3);
  assert_string_equal(back->paths[1], "context.user_agent");
  char *bad[] = {"Upper"};
  fm.n_paths = 1;
  fm.paths = bad;
  assert_null(enc(&fm, NULL));
  assert_int_equal(last_rc, ANA_ERR_INVALID);
  bad[0] = "trailing_";
  assert_null(enc(&fm, NULL));
  bad[0] = "a__b";
  assert_null(enc(&fm, NULL));
  decode_fails(&google__protobuf__field_mask__descriptor, "\"a,b_c\"", NULL,
               "invalid FieldMask path \"b_c\" (paths are lowerCamelCase)", "");
}

static void encode_buffer_headroom_and_append(void **state) {
  (void)state;
  struct ana_json_buf b;
  ana_json_buf_init(&b, 16);
  assert_null(b.data);
  Analytics__V1__GetMetricRequest g = ANALYTICS__V1__GET_METRIC_REQUEST__INIT;
  g.metric_id = "m1";
  assert_int_equal(ana_json_encode(&b, &g.base, NULL), 0);
  assert_int_equal(b.reserve, 16);
  assert_int_equal(b.len, strlen("{\"metricId\":\"m1\"}"));
  assert_true(b.cap >= b.reserve + b.len + 1);
  assert_int_equal(ana_json_encode(&b, &g.base, NULL), 0);
  assert_string_equal(b.data + 16, "{\"metricId\":\"m1\"}{\"metricId\":\"m1\"}");
  /* A payload much bigger than the first allocation. */
  Analytics__V1__ReportFile f = ANALYTICS__V1__REPORT_FILE__INIT;
  f.data.len = 100000;
  f.data.data = ana_arena_calloc(&arena, 1, f.data.len);
  b.len = 0;
  assert_int_equal(ana_json_encode(&b, &f.base, NULL), 0);
  assert_int_equal(b.len, strlen("{\"data\":\"\"}") + 133336);
  ana_json_buf_fini(&b);
  assert_null(b.data);
  ana_json_buf_fini(&b);
  ana_json_buf_fini(NULL);
}

static void encode_out_of_memory_keeps_buffer(void **state) {
  (void)state;
  struct ana_json_buf b;
  ana_json_buf_init(&b, 0);
  Analytics__V1__GetMetricRequest g = ANALYTICS__V1__GET_METRIC_REQUEST__INIT;
  g.metric_id = "m1";
  assert_int_equal(ana_json_encode(&b, &g.base, NULL), 0);
  size_t len = b.len;
  Analytics__V1__ReportFile f = ANALYTICS__V1__REPORT_FILE__INIT;
  f.data.len = 10000;
  f.data.data = ana_arena_calloc(&arena, 1, f.data.len);
  ana_alloc_fail_after(1);
  assert_int_equal(ana_json_encode(&b, &f.base, NULL), ANA_ERR_NOMEM);
  ana_alloc_fail_after(0);
  assert_int_equal(b.len, len);
  assert_string_equal(b.data + b.reserve, "{\"metricId\":\"m1\"}");
  ana_json_buf_fini(&b);
}

/* A Value nested n lists deep: [[[...]]] with a number inside. */
static Google__Protobuf__Value *nested_value(int n) {
  Google__Protobuf__Value *v = ana_arena_alloc(&arena, sizeof *v);
  google__protobuf__value__init(v);
  v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  v->number_value = 1;
  for (int i = 0; i < n; i++) {
    Google__Protobuf__ListValue *l = ana_arena_alloc(&arena, sizeof *l);
    google__protobuf__list_value__init(l);
    l->n_values = 1;
    l->values = ana_arena_alloc(&arena, sizeof *l->values);
    l->values[0] = v;
    v = ana_arena_alloc(&arena, sizeof *v);
    google__protobuf__value__init(v);
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    v->list_value = l;
  }
  return v;
}

static void encode_depth_limit(void **state) {
  (void)state;
  assert_non_null(enc(nested_value(64), NULL));
  assert_null(enc(nested_value(65), NULL));
  assert_int_equal(last_rc, ANA_ERR_INVALID);
  struct ana_json_options o = {.max_depth = 100};
  assert_non_null(enc(nested_value(100), &o));
  /* What the encoder writes at the limit, the decoder reads back. */
  assert_non_null(dec(&google__protobuf__value__descriptor, enc(nested_value(64), NULL), NULL));
}

/* ---- decoding ---- */

static void decode_event(void **state) {
  (void)state;
  Analytics__V1__TrackEventsRequest *r =
      dec(&analytics__v1__track_events_request__descriptor,
          "{\"events\":[{\"eventId\":\"e1\",\"accountId\":\"acc\",\"sessionId\":\"s1\","
          "\"eventType\":\"track\",\"eventName\":\"message_delivered\","
          "\"timestamp\":\"2024-01-02T03:04:05.120+01:00\","
          "\"properties\":{\"campaignId\":\"c1\",\"count\":3,\"big\":9007199254740993,"
          "\"ok\":false,\"none\":null,\"list\":[1,\"a\"],\"obj\":{\"k\":\"v\"}},"
          "\"context\":{\"ip\":\"10.0.0.1\",\"userAgent\":\"ua\",\"locale\":\"en\"}},{}]}",
          NULL);
  assert_non_null(r);
  assert_string_equal(path, "");
  assert_int_equal(r->n_events, 2);
  Analytics__V1__Event *e = r->events[0];
  assert_string_equal(e->event_id, "e1");
  assert_string_equal(e->session_id, "s1");
  assert_string_equal(e->event_name, "message_delivered");
  assert_int_equal(e->timestamp->seconds, 1704164645 - 3600);
  assert_int_equal(e->timestamp->nanos, 120000000);
  assert_string_equal(e->context->user_agent, "ua");
  Google__Protobuf__Struct *p = e->properties;
  assert_int_equal(p->n_fields, 7);
  assert_string_equal(p->fields[0]->key, "campaignId");
  assert_int_equal(p->fields[0]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
  assert_int_equal(p->fields[1]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
  assert_true(p->fields[1]->value->number_value == 3.0);
  assert_true(p->fields[2]->value->number_value == 9007199254740992.0); /* a double */
  assert_int_equal(p->fields[4]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
  assert_int_equal(p->fields[5]->value->list_value->n_values, 2);
  assert_string_equal(p->fields[6]->value->struct_value->fields[0]->value->string_value, "v");
  assert_non_null(r->events[1]);
  assert_string_equal(r->events[1]->event_id, "");
  assert_null(r->events[1]->timestamp);
}

static void decode_accepts_both_names(void **state) {
  (void)state;
  Analytics__V1__Event *e =
      dec(&analytics__v1__event__descriptor,
          "{\"event_id\":\"a\",\"sessionId\":\"b\",\"sent_at\":\"1970-01-01T00:00:00Z\","
          "\"context\":{\"user_agent\":\"u\"}}",
          NULL);
  assert_non_null(e);
  assert_string_equal(e->event_id, "a");
  assert_string_equal(e->session_id, "b");
  assert_non_null(e->sent_at);
  assert_string_equal(e->context->user_agent, "u");
  decode_fails(&analytics__v1__event__descriptor, "{\"eventId\":\"a\",\"event_id\":\"b\"}", NULL,
               "event_id: field given twice (also as \"eventId\")", "event_id");
}

static void decode_integers(void **state) {
  (void)state;
  static const struct {
    const char *json;
    uint64_t want;
  } ok[] = {
      {"9007199254740993", 9007199254740993u},
      {"\"9007199254740993\"", 9007199254740993u},
      {"\"18446744073709551615\"", UINT64_MAX},
      {"9223372036854775807", INT64_MAX},
      {"\"1e2\"", 100},
      {"1e2", 100},
      {"1.0", 1},
      {"\"1.50e1\"", 15},
      {"\"0.0001e4\"", 1},
      {"\"-0\"", 0},
      {"\"00012\"", 12},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char json[96];
    snprintf(json, sizeof json, "{\"sequence\":%s}", ok[i].json);
    Analytics__V1__AnalyticsUpdate *u =
        dec(&analytics__v1__analytics_update__descriptor, json, NULL);
    if (!u)
      fail_msg("%s: %s", json, err.message);
    assert_true(u->sequence == ok[i].want);
  }
  const ProtobufCMessageDescriptor *au = &analytics__v1__analytics_update__descriptor;
  decode_fails(au, "{\"sequence\":1.5}", NULL, "sequence: not an integer", "sequence");
  decode_fails(au, "{\"sequence\":\"1.5\"}", NULL, "sequence: not an integer", "sequence");
  decode_fails(au, "{\"sequence\":\" 1\"}", NULL, "sequence: not an integer", "sequence");
  decode_fails(au, "{\"sequence\":\"0x10\"}", NULL, "sequence: not an integer", "sequence");
  decode_fails(au, "{\"sequence\":\"\"}", NULL, "sequence: not an integer", "sequence");
  decode_fails(au, "{\"sequence\":\"-1\"}", NULL, "sequence: out of range for uint64", "sequence");
  decode_fails(au, "{\"sequence\":-1}", NULL, "sequence: out of range for uint64", "sequence");
  decode_fails(au, "{\"sequence\":\"18446744073709551616\"}", NULL,
               "sequence: out of range for uint64", "sequence");
  decode_fails(au, "{\"sequence\":\"1e20\"}", NULL, "sequence: out of range for uint64",
               "sequence");
  decode_fails(au, "{\"sequence\":true}", NULL, "sequence: expected an integer, got true",
               "sequence");
  /* jansson cannot hold an unquoted integer above INT64_MAX. */
  decode_fails(au, "{\"sequence\":18446744073709551615}", NULL,
               "sequence: integer out of range (write 64-bit values as strings) (line 1, "
               "column 32)",
               "sequence");

  const ProtobufCMessageDescriptor *al = &analytics__v1__import_events_response__descriptor;
  Analytics__V1__ImportEventsResponse *a = dec(al, "{\"accepted\":\"-9223372036854775808\"}", NULL);
  assert_non_null(a);
  assert_true(a->accepted == INT64_MIN);
  a = dec(al, "{\"accepted\":-9223372036854775808}", NULL);
  assert_non_null(a);
  assert_true(a->accepted == INT64_MIN);
  decode_fails(al, "{\"accepted\":\"9223372036854775808\"}", NULL,
               "accepted: out of range for int64", "accepted");

  const ProtobufCMessageDescriptor *ls = &analytics__v1__list_metrics_request__descriptor;
  Analytics__V1__ListMetricsRequest *l = dec(ls, "{\"pageSize\":\"25\"}", NULL);
  assert_non_null(l);
  assert_int_equal(l->page_size, 25);
  l = dec(ls, "{\"page_size\":-2147483648}", NULL);
  assert_non_null(l);
  assert_int_equal(l->page_size, INT32_MIN);
  decode_fails(ls, "{\"pageSize\":2147483648}", NULL, "pageSize: out of range for int32",
               "pageSize");
  decode_fails(ls, "{\"pageSize\":\"abc\"}", NULL, "pageSize: not an integer", "pageSize");
  decode_fails(ls, "{\"pageSize\":[]}", NULL, "pageSize: expected an integer, got an array",
               "pageSize");
  Google__Protobuf__UInt32Value *w =
      dec(&google__protobuf__uint32_value__descriptor, "4294967295", NULL);
  assert_non_null(w);
  assert_true(w->value == UINT32_MAX);
  decode_fails(&google__protobuf__uint32_value__descriptor, "4294967296", NULL,
               "out of range for uint32", "");
}

static void decode_floating_point(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *al = &analytics__v1__alert__descriptor;
  Analytics__V1__Alert *a = dec(al, "{\"threshold\":\"NaN\"}", NULL);
  assert_non_null(a);
  assert_true(isnan(a->threshold));
  a = dec(al, "{\"threshold\":\"-Infinity\"}", NULL);
  assert_true(isinf(a->threshold) && a->threshold < 0);
  a = dec(al, "{\"threshold\":\"1.25e2\"}", NULL);
  assert_true(a->threshold == 125);
  a = dec(al, "{\"threshold\":7}", NULL);
  assert_true(a->threshold == 7);
  a = dec(al, "{\"threshold\":-0.0}", NULL);
  assert_true(a->threshold == 0);
  decode_fails(al, "{\"threshold\":\"nan\"}", NULL, "threshold: not a number", "threshold");
  decode_fails(al, "{\"threshold\":\"inf\"}", NULL, "threshold: not a number", "threshold");
  decode_fails(al, "{\"threshold\":\"0x1p3\"}", NULL, "threshold: not a number", "threshold");
  decode_fails(al, "{\"threshold\":\"1e999\"}", NULL, "threshold: out of range for double",
               "threshold");
  decode_fails(al, "{\"threshold\":1e999}", NULL,
               "threshold: number out of range (line 1, column 18)", "threshold");
  decode_fails(al, "{\"threshold\":false}", NULL, "threshold: expected a number, got false",
               "threshold");
  const ProtobufCMessageDescriptor *fv = &google__protobuf__float_value__descriptor;
  Google__Protobuf__FloatValue *f = dec(fv, "3.4028235e38", NULL); /* rounds to FLT_MAX */
  assert_non_null(f);
  assert_true(f->value == 3.40282347e38f);
  decode_fails(fv, "3.4028236e38", NULL, "out of range for float", "");
  decode_fails(fv, "\"-1e39\"", NULL, "out of range for float", "");
}

static void decode_bools(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *al = &analytics__v1__alert__descriptor;
  Analytics__V1__Alert *a = dec(al, "{\"enabled\":true}", NULL);
  assert_true(a->enabled);
  decode_fails(al, "{\"enabled\":\"true\"}", NULL, "enabled: expected true or false, got a string",
               "enabled");
  decode_fails(al, "{\"enabled\":1}", NULL, "enabled: expected true or false, got a number",
               "enabled");
}

static void decode_enums(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *er = &analytics__v1__event_result__descriptor;
  Analytics__V1__EventResult *r = dec(er, "{\"status\":\"CORRECTED\"}", NULL);
  assert_int_equal(r->status, ANALYTICS__V1__EVENT_RESULT__STATUS__CORRECTED);
  r = dec(er, "{\"status\":2}", NULL);
  assert_int_equal(r->status, ANALYTICS__V1__EVENT_RESULT__STATUS__DUPLICATE);
  r = dec(er, "{\"status\":77}", NULL); /* open enum */
  assert_int_equal(r->status, 77);
  decode_fails(er, "{\"status\":\"NOPE\"}", NULL,
               "status: unknown value \"NOPE\" for enum analytics.v1.EventResult.Status", "status");
  decode_fails(er, "{\"status\":\"accepted\"}", NULL,
               "status: unknown value \"accepted\" for enum analytics.v1.EventResult.Status",
               "status");
  decode_fails(er, "{\"status\":2147483648}", NULL, "status: out of range for an enum (int32)",
               "status");
  decode_fails(er, "{\"status\":{}}", NULL,
               "status: expected an enum name or number, got an object", "status");
  struct ana_json_options o = {.ignore_unknown = true};
  r = dec(er, "{\"status\":\"NOPE\",\"index\":4}", &o);
  assert_non_null(r);
  assert_int_equal(r->status, 0);
  assert_int_equal(r->index, 4);
}

static void decode_bytes(void **state) {
  (void)state;
  static const char *const forms[] = {"\"+/8A\"", "\"-_8A\"", "\"+/8=\"", "\"+/8\"", "\"-_8\""};
  static const size_t lens[] = {3, 3, 2, 2, 2};
  const ProtobufCMessageDescriptor *rf = &analytics__v1__report_file__descriptor;
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    char json[64];
    snprintf(json, sizeof json, "{\"data\":%s}", forms[i]);
    Analytics__V1__ReportFile *f = dec(rf, json, NULL);
    assert_non_null(f);
    assert_int_equal(f->data.len, lens[i]);
    assert_memory_equal(f->data.data, "\xfb\xff\x00", lens[i]);
  }
  Analytics__V1__ReportFile *f = dec(rf, "{\"data\":\"\"}", NULL);
  assert_int_equal(f->data.len, 0);
  decode_fails(rf, "{\"data\":\"a\"}", NULL, "data: not valid base64", "data");
  decode_fails(rf, "{\"data\":\"ab c\"}", NULL, "data: not valid base64", "data");
  decode_fails(rf, "{\"data\":\"a===\"}", NULL, "data: not valid base64", "data");
  decode_fails(rf, "{\"data\":\"ab=\"}", NULL, "data: not valid base64", "data");
  decode_fails(rf, "{\"data\":1}", NULL, "data: expected a base64 string, got a number", "data");
}

static void decode_null(void **state) {
  (void)state;
  Analytics__V1__Event *e =
      dec(&analytics__v1__event__descriptor,
          "{\"eventId\":null,\"timestamp\":null,\"properties\":null,\"context\":null}", NULL);
  assert_non_null(e);
  assert_string_equal(e->event_id, "");
  assert_null(e->timestamp);
  assert_null(e->properties);
  /* null clears what an earlier step set (decode_value merges). */
  json_t *v = json_loads("{\"eventId\":null,\"context\":null}", 0, NULL);
  e->event_id = "x";
  assert_int_equal(ana_json_decode_value(&e->base, v, &arena, NULL, &err, NULL, 0), 0);
  json_decref(v);
  assert_string_equal(e->event_id, "");
  /* In a Value, null is a value. */
  Analytics__V1__Alert *a = dec(&analytics__v1__alert__descriptor, "{\"condition\":null}", NULL);
  assert_non_null(a->condition);
  assert_int_equal(a->condition->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
  /* Never inside a repeated field or a map. */
  decode_fails(&analytics__v1__track_events_request__descriptor, "{\"events\":[{},null]}", NULL,
               "events[1]: null is not allowed in a repeated field", "events[1]");
  decode_fails(&analytics__v1__metric__descriptor, "{\"dimensions\":[\"a\",null]}", NULL,
               "dimensions[1]: null is not allowed in a repeated field", "dimensions[1]");
  decode_fails(&analytics__v1__metric__descriptor, "{\"variables\":{\"a\":null}}", NULL,
               "variables.a: null is not allowed as a map value", "variables.a");
  /* Lists of Values take null. */
  Google__Protobuf__ListValue *l = dec(&google__protobuf__list_value__descriptor, "[null,1]", NULL);
  assert_int_equal(l->n_values, 2);
  assert_int_equal(l->values[0]->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
}

static void decode_oneof(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *au = &analytics__v1__analytics_update__descriptor;
  Analytics__V1__AnalyticsUpdate *u = dec(au, "{\"event\":{\"eventId\":\"x\"}}", NULL);
  assert_int_equal(u->update_case, ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT);
  assert_string_equal(u->event->event_id, "x");
  decode_fails(au, "{\"event\":{},\"aggregates\":{}}", NULL,
               "aggregates: only one field of a oneof may be set (\"event\" is set too)",
               "aggregates");
  /* A null member does not count. */
  u = dec(au, "{\"event\":null,\"aggregates\":{}}", NULL);
  assert_non_null(u);
  assert_int_equal(u->update_case, ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_AGGREGATES);
  /* Merging into a message whose oneof is set: the last one set wins. */
  json_t *v = json_loads("{\"event\":{\"eventName\":\"n\"}}", 0, NULL);
  assert_int_equal(ana_json_decode_value(&u->base, v, &arena, NULL, &err, NULL, 0), 0);
  json_decref(v);
  assert_int_equal(u->update_case, ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT);
  assert_string_equal(u->event->event_name, "n");
}

static void decode_timestamps(void **state) {
  (void)state;
  static const struct {
    const char *text;
    int64_t s;
    int32_t n;
  } ok[] = {
      {"1970-01-01T00:00:00Z", 0, 0},
      {"2024-02-29T23:59:59.5+05:30", 1709251199 - 19800, 500000000},
      {"2024-01-01T00:00:00.123456789-00:01", 1704067260, 123456789},
      {"0001-01-01T00:00:00Z", -62135596800, 0},
      {"9999-12-31T23:59:59.999999999Z", 253402300799, 999999999},
      {"0001-01-01T00:30:00+00:30", -62135596800, 0},
      {"1969-12-31T23:59:59.1Z", -1, 100000000},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char json[96];
    snprintf(json, sizeof json, "\"%s\"", ok[i].text);
    Google__Protobuf__Timestamp *t = dec(&google__protobuf__timestamp__descriptor, json, NULL);
    if (!t)
      fail_msg("%s: %s", json, err.message);
    assert_int_equal(t->seconds, ok[i].s);
    assert_int_equal(t->nanos, ok[i].n);
  }
  static const char *const bad[] = {
      "2024-01-01T00:00:00",       "2024-01-01 00:00:00Z",
      "2024-01-01t00:00:00Z",      "2024-01-01T00:00:00z",
      "2024-13-01T00:00:00Z",      "2023-02-29T00:00:00Z",
      "2024-01-01T24:00:00Z",      "2024-01-01T00:00:60Z",
      "2024-01-01T00:00:00.Z",     "2024-01-01T00:00:00.1234567891Z",
      "2024-01-01T00:00:00+0100",  "24-01-01T00:00:00Z",
      "2024-01-01T00:00:00+24:00", "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char json[96];
    snprintf(json, sizeof json, "{\"events\":[{},{},{},{\"timestamp\":\"%s\"}]}", bad[i]);
    decode_fails(&analytics__v1__track_events_request__descriptor, json, NULL,
                 "events[3].timestamp: not an RFC 3339 timestamp", "events[3].timestamp");
  }
  decode_fails(&analytics__v1__event__descriptor, "{\"timestamp\":1704067200}", NULL,
               "timestamp: not an RFC 3339 timestamp", "timestamp");
  decode_fails(&analytics__v1__event__descriptor, "{\"timestamp\":\"0000-12-31T23:59:59Z\"}", NULL,
               "timestamp: timestamp out of range (years 0001 to 9999)", "timestamp");
  decode_fails(&analytics__v1__event__descriptor, "{\"timestamp\":\"9999-12-31T23:59:59-00:01\"}",
               NULL, "timestamp: timestamp out of range (years 0001 to 9999)", "timestamp");
}

static void decode_durations(void **state) {
  (void)state;
  static const struct {
    const char *text;
    int64_t s;
    int32_t n;
  } ok[] = {
      {"1.5s", 1, 500000000},
      {"-1.5s", -1, -500000000},
      {"-0.5s", 0, -500000000},
      {"1.000340012s", 1, 340012},
      {"0s", 0, 0},
      {"315576000000s", 315576000000, 0},
      {"-315576000000.999999999s", -315576000000, -999999999},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char json[64];
    snprintf(json, sizeof json, "\"%s\"", ok[i].text);
    Google__Protobuf__Duration *d = dec(&google__protobuf__duration__descriptor, json, NULL);
    if (!d)
      fail_msg("%s: %s", json, err.message);
    assert_int_equal(d->seconds, ok[i].s);
    assert_int_equal(d->nanos, ok[i].n);
  }
  const ProtobufCMessageDescriptor *dd = &google__protobuf__duration__descriptor;
  decode_fails(dd, "\"1\"", NULL, "not a duration (like \"1.5s\")", "");
  decode_fails(dd, "\"1h\"", NULL, "not a duration (like \"1.5s\")", "");
  decode_fails(dd, "\"1.0000000001s\"", NULL, "not a duration (like \"1.5s\")", "");
  decode_fails(dd, "1.5", NULL, "not a duration (like \"1.5s\")", "");
  decode_fails(dd, "\"315576000001s\"", NULL,
               "duration out of range (at most 315576000000s either way)", "");
  decode_fails(&google__rpc__retry_info__descriptor, "{\"retryDelay\":\"x\"}", NULL,
               "retryDelay: not a duration (like \"1.5s\")", "retryDelay");
}

static void decode_wrappers(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *mb = &analytics__v1__metric_bucket__descriptor;
  Analytics__V1__MetricBucket *b =
      dec(mb, "{\"value\":1.5,\"rate\":null,\"percentiles\":{\"p50\":\"2\"}}", NULL);
  assert_non_null(b->value);
  assert_true(b->value->value == 1.5);
  assert_null(b->rate);
  assert_int_equal(b->n_percentiles, 1);
  assert_true(b->percentiles[0]->value == 2);
  b = dec(mb, "{\"value\":0}", NULL);
  assert_non_null(b->value); /* present, holding 0 */
  decode_fails(mb, "{\"value\":{\"value\":1}}", NULL, "value: expected a number, got an object",
               "value");
  decode_fails(mb, "{\"percentiles\":{\"p50\":\"x\"}}", NULL, "percentiles.p50: not a number",
               "percentiles.p50");
  Google__Protobuf__BytesValue *y =
      dec(&google__protobuf__bytes_value__descriptor, "\"YWI\"", NULL);
  assert_int_equal(y->value.len, 2);
  Google__Protobuf__StringValue *s = dec(&google__protobuf__string_value__descriptor, "\"\"", NULL);
  assert_string_equal(s->value, "");
}

static void decode_struct_and_values(void **state) {
  (void)state;
  assert_string_equal(
      roundtrip(&google__protobuf__struct__descriptor,
                "{\"a\":1e2,\"b\":-0.5,\"c\":\"\",\"d\":[],\"e\":{},\"f\":[[null]]}"),
      "{\"a\":100,\"b\":-0.5,\"c\":\"\",\"d\":[],\"e\":{},\"f\":[[null]]}");
  assert_string_equal(roundtrip(&google__protobuf__value__descriptor, "\"x\""), "\"x\"");
  assert_string_equal(roundtrip(&google__protobuf__value__descriptor, "false"), "false");
  assert_string_equal(roundtrip(&google__protobuf__list_value__descriptor, "[1,{}]"), "[1,{}]");
  decode_fails(&google__protobuf__struct__descriptor, "[]", NULL,
               "expected an object, got an array", "");
  decode_fails(&google__protobuf__list_value__descriptor, "{}", NULL,
               "expected an array, got an object", "");
  decode_fails(&analytics__v1__event__descriptor, "{\"properties\":{\"a\":{\"b\":\"\\u0000\"}}}",
               NULL, "properties.a.b: contains NUL (\\u0000), which is not supported",
               "properties.a.b");
  decode_fails(&analytics__v1__event__descriptor, "{\"properties\":{\"a\\u0000\":1}}", NULL,
               "properties.a\\u0000: NUL (\\u0000) in an object key is not supported (line 1, "
               "column 24)",
               "properties.a\\u0000");
}

static void decode_maps(void **state) {
  (void)state;
  Analytics__V1__SearchEventsRequest *s =
      dec(&analytics__v1__search_events_request__descriptor,
          "{\"properties\":{\"campaignId\":\"123\",\"\":\"empty key\"},\"from\":"
          "\"2024-01-01T00:00:00Z\",\"pageSize\":10}",
          NULL);
  assert_non_null(s);
  assert_int_equal(s->n_properties, 2);
  assert_string_equal(s->properties[0]->key, "campaignId");
  assert_string_equal(s->properties[0]->value, "123");
  assert_string_equal(s->properties[1]->key, "");
  assert_int_equal(s->from->seconds, 1704067200);
  decode_fails(&analytics__v1__search_events_request__descriptor, "{\"properties\":{\"a\":1}}",
               NULL, "properties.a: expected a string, got a number", "properties.a");
  decode_fails(&analytics__v1__search_events_request__descriptor, "{\"properties\":[]}", NULL,
               "properties: expected an object, got an array", "properties");
}

static void decode_any(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *ad = &google__protobuf__any__descriptor;
  Google__Protobuf__Any *any =
      dec(ad, "{\"eventName\":\"n\",\"@type\":\"type.googleapis.com/analytics.v1.Event\"}", NULL);
  assert_non_null(any);
  assert_string_equal(any->type_url, "type.googleapis.com/analytics.v1.Event");
  Analytics__V1__Event *e =
      analytics__v1__event__unpack(&arena.pb, any->value.len, any->value.data);
  assert_string_equal(e->event_name, "n");
  assert_string_equal(enc(any, NULL),
                      "{\"@type\":\"type.googleapis.com/analytics.v1.Event\",\"eventName\":\"n\"}");
  any = dec(ad, "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"2s\"}",
            NULL);
  assert_string_equal(
      enc(any, NULL),
      "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"2s\"}");
  any = dec(ad, "{}", NULL);
  assert_non_null(any);
  assert_string_equal(any->type_url, "");
  decode_fails(ad, "{\"eventName\":\"n\"}", NULL, "@type is missing", "");
  decode_fails(ad, "{\"@type\":\"type.googleapis.com/no.such.Type\"}", NULL,
               "@type: unknown type \"type.googleapis.com/no.such.Type\"", "@type");
  decode_fails(ad, "{\"@type\":5}", NULL, "@type: expected a type URL string, got a number",
               "@type");
  decode_fails(ad, "{\"@type\":\"type.googleapis.com/google.protobuf.Timestamp\"}", NULL,
               "\"value\" is missing for google.protobuf.Timestamp", "");
  decode_fails(ad, "{\"@type\":\"type.googleapis.com/google.protobuf.Timestamp\",\"value\":\"x\"}",
               NULL, "value: not an RFC 3339 timestamp", "value");
  decode_fails(ad, "{\"@type\":\"type.googleapis.com/analytics.v1.Event\",\"x\":1}", NULL,
               "x: unknown field", "x");
  /* proto2 required fields (descriptor.proto is in the registry). */
  decode_fails(ad,
               "{\"@type\":\"type.googleapis.com/google.protobuf.UninterpretedOption\","
               "\"name\":[{\"isExtension\":true}]}",
               NULL, "name[0]: missing required field \"name_part\"", "name[0]");
  decode_fails(&google__rpc__status__descriptor,
               "{\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
               "\"fieldViolations\":[{\"field\":1}]}]}",
               NULL, "details[0].fieldViolations[0].field: expected a string, got a number",
               "details[0].fieldViolations[0].field");
}

static void decode_unknown_fields(void **state) {
  (void)state;
  decode_fails(&analytics__v1__event__descriptor, "{\"foo\":1}", NULL, "foo: unknown field", "foo");
  decode_fails(&analytics__v1__track_events_request__descriptor,
               "{\"events\":[{\"context\":{\"ip\":\"x\",\"city\":\"y\"}}]}", NULL,
               "events[0].context.city: unknown field", "events[0].context.city");
  decode_fails(&analytics__v1__event__descriptor, "{\"EventId\":\"x\"}", NULL,
               "EventId: unknown field", "EventId");
  struct ana_json_options o = {.ignore_unknown = true};
  Analytics__V1__Event *e =
      dec(&analytics__v1__event__descriptor, "{\"foo\":{\"bar\":[1]},\"eventId\":\"x\"}", &o);
  assert_non_null(e);
  assert_string_equal(e->event_id, "x");
  /* Unknown fields are skipped, known ones still checked. */
  decode_fails(&analytics__v1__event__descriptor, "{\"foo\":1,\"eventId\":2}", &o,
               "eventId: expected a string, got a number", "eventId");
}

static void decode_text_errors(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *tr = &analytics__v1__track_events_request__descriptor;
  /* Invalid UTF-8 in the text: jansson's parser stops, and the path still
   * names where. */
  decode_fails(tr, "{\"events\":[{\"eventId\":\"x\"},{\"context\":{\"ip\":\"\xc3(\"}}]}", NULL,
               "events[1].context.ip: invalid UTF-8 in JSON text (line 1, column 45)",
               "events[1].context.ip");
  decode_fails(&analytics__v1__event__descriptor, "{\"eventName\":\"\xff\"}", NULL,
               "eventName: invalid UTF-8 in JSON text (line 1, column 14)", "eventName");
  decode_fails(&analytics__v1__event__descriptor, "{\"eventName\":\"\\ud800\"}", NULL,
               "eventName: invalid JSON: invalid Unicode '\\uD800' near '\"\\ud800\"' (line 1, "
               "column 21)",
               "eventName");
  decode_fails(&analytics__v1__event__descriptor, "{\"eventName\":\"a\\u0000b\"}", NULL,
               "eventName: contains NUL (\\u0000), which is not supported", "eventName");
  decode_fails(&analytics__v1__event__descriptor, "{\"eventId\":\"a\",\"eventId\":\"b\"}", NULL,
               "eventId: duplicate key (line 1, column 24)", "eventId");
  decode_fails(tr, "{\"events\":[{\"eventId\":}]}", NULL,
               "events[0].eventId: invalid JSON: unexpected token near '}' (line 1, column 23)",
               "events[0].eventId");
  decode_fails(tr, "{\"events\":[{},", NULL,
               "events[1]: JSON text ends too early (line 1, column 14)", "events[1]");
  decode_fails(tr, "", NULL, "JSON text ends too early (line 1, column 0)", "");
  decode_fails(tr, "{} x", NULL, "invalid JSON: end of file expected near 'x' (line 1, column 4)",
               "");
  decode_fails(tr, "[]", NULL, "expected an object, got an array", "");
  decode_fails(tr, "null", NULL, "expected an object, got null", "");
  decode_fails(tr, "{\"events\":{}}", NULL, "events: expected an array, got an object", "events");
  decode_fails(tr, "{\"events\":[1]}", NULL, "events[0]: expected an object, got a number",
               "events[0]");
  /* decode_value checks strings jansson was told not to check. */
  Analytics__V1__Event *e = ana_arena_alloc(&arena, sizeof *e);
  analytics__v1__event__init(e);
  json_t *v = json_object();
  json_object_set_new(v, "eventName", json_stringn_nocheck("a\xff", 2));
  assert_int_equal(ana_json_decode_value(&e->base, v, &arena, NULL, &err, path, sizeof path),
                   ANA_ERR_INVALID);
  json_decref(v);
  assert_string_equal(err.message, "eventName: not valid UTF-8");
  assert_string_equal(path, "eventName");
  /* The path is truncated to the caller's buffer. */
  char small[8];
  assert_null(ana_json_decode(tr, "{\"events\":[{\"foo\":1}]}", 22, &arena, NULL, &err, small,
                              sizeof small));
  assert_string_equal(small, "events[");
  assert_string_equal(err.message, "events[0].foo: unknown field");
}

/* prefix, n nested {"a": ..., inner, the closing braces, suffix. */
static char *nested_json(int n, const char *prefix, const char *inner, const char *suffix) {
  size_t len = strlen(prefix) + (size_t)n * 6 + strlen(inner) + strlen(suffix) + 1;
  char *s = malloc(len), *p = s;
  p += sprintf(p, "%s", prefix);
  for (int i = 0; i < n; i++)
    p += sprintf(p, "{\"a\":");
  p += sprintf(p, "%s", inner);
  for (int i = 0; i < n; i++)
    *p++ = '}';
  sprintf(p, "%s", suffix);
  return s;
}

static void decode_depth_limit(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *ev = &analytics__v1__event__descriptor;
  char *ok = nested_json(63, "{\"properties\":", "1", "}"); /* 64 levels with the Event */
  assert_non_null(dec(ev, ok, NULL));
  free(ok);
  char *deep = nested_json(64, "{\"properties\":", "1", "}");
  assert_null(dec(ev, deep, NULL));
  assert_true(strstr(err.message, ": nesting deeper than 64 levels") != NULL);
  assert_int_equal(strncmp(path, "properties.a.a.a", 16), 0);
  struct ana_json_options o = {.max_depth = 100};
  assert_non_null(dec(ev, deep, &o));
  free(deep);
  /* Empty containers at the limit are fine (nothing to recurse into). */
  char *empty = nested_json(63, "{\"properties\":", "{}", "}");
  assert_non_null(dec(ev, empty, NULL));
  free(empty);
  /* Far deeper than jansson's own limit: a clean error, no crash. */
  char *huge = nested_json(5000, "", "1", "");
  assert_null(dec(&google__protobuf__value__descriptor, huge, NULL));
  assert_true(strstr(err.message, "JSON nested too deeply") != NULL);
  free(huge);
}

static void decode_value_for_body_field(void **state) {
  (void)state;
  /* The bridge decodes {"<body field>": <body>} into the request. */
  Analytics__V1__TrackEventRequest *r = ana_arena_alloc(&arena, sizeof *r);
  analytics__v1__track_event_request__init(r);
  json_t *body = json_loads("{\"eventName\":\"x\",\"timestamp\":\"bad\"}", 0, NULL);
  json_t *wrap = json_object();
  json_object_set(wrap, "event", body);
  assert_int_equal(ana_json_decode_value(&r->base, wrap, &arena, NULL, &err, path, sizeof path),
                   ANA_ERR_INVALID);
  assert_string_equal(err.message, "event.timestamp: not an RFC 3339 timestamp");
  assert_string_equal(path, "event.timestamp");
  /* Or the body straight into the sub-message: paths relative to the body. */
  Analytics__V1__Event *e = ana_arena_alloc(&arena, sizeof *e);
  analytics__v1__event__init(e);
  assert_int_equal(ana_json_decode_value(&e->base, body, &arena, NULL, &err, path, sizeof path),
                   ANA_ERR_INVALID);
  assert_string_equal(path, "timestamp");
  json_object_set_new(body, "timestamp", json_string("2024-01-01T00:00:00Z"));
  assert_int_equal(ana_json_decode_value(&e->base, body, &arena, NULL, &err, path, sizeof path), 0);
  assert_string_equal(path, "");
  assert_string_equal(e->event_name, "x");
  json_decref(body);
  json_decref(wrap);
}

static void decode_out_of_memory(void **state) {
  (void)state;
  struct ana_arena small;
  ana_arena_init(&small, 256, 512);
  static const char json[] =
      "{\"events\":[{\"eventName\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"},"
      "{},{},{},{},{},{},{},{},{},{},{},{},{}]}";
  assert_null(ana_json_decode(&analytics__v1__track_events_request__descriptor, json, strlen(json),
                              &small, NULL, &err, path, sizeof path));
  assert_int_equal(err.code, ANA_STATUS_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(err.message, "out of memory while decoding JSON"));
  ana_arena_fini(&small);
}

/* Every prefix and every single-byte change of a valid document decodes or
 * fails cleanly (ASan watches). */
static void decode_never_crashes(void **state) {
  (void)state;
  static const char doc[] =
      "{\"events\":[{\"eventId\":\"e1\",\"timestamp\":\"2024-01-02T03:04:05Z\",\"properties\":"
      "{\"a\":[1,{\"b\":null}],\"c\":\"\\u00e9\"},\"context\":{\"ip\":\"1\"}}]}";
  static const char subst[] = "\"{}[],:\\0x-e.\xff ";
  char buf[sizeof doc];
  int accepted = 0;
  for (size_t n = 0; n < sizeof doc - 1; n++) {
    if (dec(&analytics__v1__track_events_request__descriptor, doc, NULL))
      accepted++;
    assert_null(ana_json_decode(&analytics__v1__track_events_request__descriptor, doc, n, &arena,
                                NULL, &err, path, sizeof path));
    for (size_t k = 0; k < sizeof subst - 1; k++) {
      memcpy(buf, doc, sizeof doc);
      buf[n] = subst[k];
      if (ana_json_decode(&analytics__v1__track_events_request__descriptor, buf, sizeof doc - 1,
                          &arena, NULL, &err, path, sizeof path))
        accepted++;
    }
    ana_arena_reset(&arena);
  }
  assert_true(accepted > (int)(sizeof doc - 1));
}

/* ---- fields from URL text ---- */

static void set_field_query_parameters(void **state) {
  (void)state;
  Analytics__V1__SearchEventsRequest *s = ana_arena_alloc(&arena, sizeof *s);
  analytics__v1__search_events_request__init(s);
  set_ok(s, "page_size", "25");
  set_ok(s, "pageToken", "tok");
  set_ok(s, "from", "2024-01-01T00:00:00+01:00");
  set_ok(s, "to", "2024-01-02T00:00:00Z");
  set_ok(s, "eventType", "track");
  set_ok(s, "properties.campaignId", "123");
  set_ok(s, "properties[a.b]", "x");
  set_ok(s, "properties.campaignId", "456"); /* same key: replaced */
  assert_int_equal(s->page_size, 25);
  assert_string_equal(s->page_token, "tok");
  assert_int_equal(s->from->seconds, 1704063600);
  assert_int_equal(s->to->seconds, 1704153600);
  assert_int_equal(s->n_properties, 2);
  assert_string_equal(s->properties[0]->key, "campaignId");
  assert_string_equal(s->properties[0]->value, "456");
  assert_string_equal(s->properties[1]->key, "a.b");
  assert_string_equal(
      enc(s, NULL), "{\"from\":\"2023-12-31T23:00:00Z\",\"to\":\"2024-01-02T00:00:00Z\","
                    "\"eventType\":\"track\",\"properties\":{\"campaignId\":\"456\",\"a.b\":\"x\"},"
                    "\"pageSize\":25,\"pageToken\":\"tok\"}");
  set_fails(s, "page_size", "ten", "page_size: not an integer");
  set_fails(s, "page_size", "99999999999", "page_size: out of range for int32");
  set_fails(s, "from", "yesterday", "from: not an RFC 3339 timestamp");
  set_fails(s, "foo", "1", "foo: unknown field");
  set_fails(s, "from.foo", "1", "from.foo: unknown field");
  set_fails(s, "properties", "x",
            "properties: a map needs a key (properties[key] or properties.key)");
  set_fails(s, "properties[a", "x", "properties[a: invalid map key (use m[key] or m.key)");
  set_fails(s, "pageSize.x", "1", "pageSize.x: \"pageSize\" is not a message");
  set_fails(s, "query[x]", "1", "query[x]: \"query\" is not a message");
  set_fails(s, "", "1", "invalid field path");
  set_fails(s, "from.", "1", "from.: invalid field path");
}

static void set_field_repeated_and_enums(void **state) {
  (void)state;
  Analytics__V1__Metric *m = ana_arena_alloc(&arena, sizeof *m);
  analytics__v1__metric__init(m);
  set_ok(m, "dimensions", "campaignId");
  set_ok(m, "dimensions", "groupId");
  set_ok(m, "variables[delivered]", "count(message_delivered)");
  assert_int_equal(m->n_dimensions, 2);
  assert_string_equal(m->dimensions[1], "groupId");
  set_fails(m, "filters", "x", "filters: repeated message fields cannot be set from text");
  set_fails(m, "filters.op", "eq", "filters.op: repeated message fields cannot be set from text");

  Analytics__V1__EventResult *r = ana_arena_alloc(&arena, sizeof *r);
  analytics__v1__event_result__init(r);
  set_ok(r, "status", "ACCEPTED");
  assert_int_equal(r->status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
  set_ok(r, "status", "3");
  assert_int_equal(r->status, ANALYTICS__V1__EVENT_RESULT__STATUS__REJECTED);
  set_ok(r, "skew_ms", "-9223372036854775808");
  assert_true(r->skew_ms == INT64_MIN);
  set_fails(r, "status", "NOPE",
            "status: unknown value \"NOPE\" for enum analytics.v1.EventResult.Status");
  set_fails(r, "stored_timestamp.seconds", "x", "stored_timestamp.seconds: not an integer");

  Analytics__V1__StreamMetricRequest *sm = ana_arena_alloc(&arena, sizeof *sm);
  analytics__v1__stream_metric_request__init(sm);
  set_ok(sm, "after_sequence", "18446744073709551615");
  assert_true(sm->after_sequence == UINT64_MAX);
  set_ok(sm, "afterSequence", "9007199254740993");
  assert_true(sm->after_sequence == 9007199254740993u);
  set_fails(sm, "after_sequence", "-1", "after_sequence: out of range for uint64");
}

static void set_field_scalars_and_wkts(void **state) {
  (void)state;
  Analytics__V1__Alert *a = ana_arena_alloc(&arena, sizeof *a);
  analytics__v1__alert__init(a);
  Analytics__V1__StreamAnalyticsRequest *sa = ana_arena_alloc(&arena, sizeof *sa);
  analytics__v1__stream_analytics_request__init(sa);
  set_ok(sa, "include_events", "true");
  assert_true(sa->include_events);
  set_ok(sa, "includeEvents", "0");
  assert_false(sa->include_events);
  set_fails(sa, "include_events", "yes", "include_events: expected true or false");
  /* A google.protobuf.BoolValue takes the same text. */
  set_ok(a, "enabled", "false");
  assert_non_null(a->enabled);
  assert_false(a->enabled->value);
  set_ok(a, "threshold", "Infinity");
  assert_true(isinf(a->threshold));
  set_ok(a, "threshold", "2.5");
  assert_true(a->threshold == 2.5);
  set_fails(a, "threshold", "2,5", "threshold: not a number");
  set_ok(a, "cooldown", "300");
  set_ok(a, "channels", "email");
  set_ok(a, "channels", "slack");
  set_ok(a, "condition", "{\"gt\":10}"); /* Value: JSON text ... */
  assert_int_equal(a->condition->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
  set_ok(a, "condition", "above"); /* ... or, if not JSON, a string */
  assert_int_equal(a->condition->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
  set_ok(a, "created_at", "2024-01-01T00:00:00.5Z");
  assert_string_equal(
      enc(a, NULL),
      "{\"condition\":\"above\",\"threshold\":2.5,\"channels\":[\"email\",\"slack\"],"
      "\"cooldown\":300,\"enabled\":false,\"createdAt\":\"2024-01-01T00:00:00.500Z\"}");
  set_fails(a, "condition", "{\"a\":\"\\u0000\"}",
            "condition.a: contains NUL (\\u0000), which is not supported");
  set_fails(a, "name", "a\xff", "name: not valid UTF-8");

  /* Struct: "properties.<key>" is a Value from text. */
  Analytics__V1__Event *e = ana_arena_alloc(&arena, sizeof *e);
  analytics__v1__event__init(e);
  set_ok(e, "properties.campaignId", "123");
  set_ok(e, "properties[name]", "spring sale");
  set_ok(e, "context.user_agent", "curl");
  assert_string_equal(enc(e, NULL), "{\"properties\":{\"campaignId\":123,\"name\":\"spring sale\"},"
                                    "\"context\":{\"userAgent\":\"curl\"}}");

  /* Wrappers as the bare scalar. */
  Analytics__V1__MetricBucket *b = ana_arena_alloc(&arena, sizeof *b);
  analytics__v1__metric_bucket__init(b);
  set_ok(b, "value", "1.5");
  set_ok(b, "percentiles[p99]", "NaN");
  assert_string_equal(enc(b, NULL), "{\"value\":1.5,\"percentiles\":{\"p99\":\"NaN\"}}");
  set_fails(b, "rate", "fast", "rate: not a number");

  /* Bytes: standard or URL-safe base64. */
  Analytics__V1__ReportFile *f = ana_arena_alloc(&arena, sizeof *f);
  analytics__v1__report_file__init(f);
  set_ok(f, "data", "-_8");
  assert_int_equal(f->data.len, 2);
  set_fails(f, "data", "%%", "data: not valid base64");

  /* Durations, also in Go's notation. */
  Google__Rpc__RetryInfo *ri = ana_arena_alloc(&arena, sizeof *ri);
  google__rpc__retry_info__init(ri);
  static const struct {
    const char *text;
    int64_t s;
    int32_t n;
  } durations[] = {
      {"1.5s", 1, 500000000},
      {"1h30m", 5400, 0},
      {"250ms", 0, 250000000},
      {"-1.5h", -5400, 0},
      {"1us", 0, 1000},
      {"2\xc2\xb5s", 0, 2000},
      {"0", 0, 0},
      {"1m0.5s", 60, 500000000},
      {"+3ns", 0, 3},
  };
  for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
    set_ok(ri, "retry_delay", durations[i].text);
    assert_int_equal(ri->retry_delay->seconds, durations[i].s);
    assert_int_equal(ri->retry_delay->nanos, durations[i].n);
  }
  set_fails(ri, "retryDelay", "1x", "retryDelay: not a duration (like \"1.5s\" or \"1h30m\")");
  set_fails(ri, "retryDelay", "1", "retryDelay: not a duration (like \"1.5s\" or \"1h30m\")");
  set_fails(ri, "retryDelay", "100000000h",
            "retryDelay: duration out of range (at most 315576000000s either way)");

  /* Plain messages need a field named. */
  Analytics__V1__UpdateMetricRequest *u = ana_arena_alloc(&arena, sizeof *u);
  analytics__v1__update_metric_request__init(u);
  set_fails(u, "metric", "x", "metric: a message cannot be set from text; set one of its fields");
  set_ok(u, "metric.name", "ctr");
  set_ok(u, "metric_id", "m1");
  assert_string_equal(enc(u, NULL), "{\"metricId\":\"m1\",\"metric\":{\"name\":\"ctr\"}}");
}

static void set_field_oneof_last_wins(void **state) {
  (void)state;
  Analytics__V1__AnalyticsUpdate *u = ana_arena_alloc(&arena, sizeof *u);
  analytics__v1__analytics_update__init(u);
  set_ok(u, "event.eventName", "a");
  set_ok(u, "event.event_id", "b");
  assert_int_equal(u->update_case, ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT);
  assert_string_equal(enc(u, NULL), "{\"event\":{\"eventId\":\"b\",\"eventName\":\"a\"}}");
  set_ok(u, "aggregates.at", "1970-01-01T00:00:00Z");
  assert_int_equal(u->update_case, ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_AGGREGATES);
  assert_string_equal(enc(u, NULL), "{\"aggregates\":{\"at\":\"1970-01-01T00:00:00Z\"}}");
}

/* ---- internals ---- */

static void integer_text(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int rc;
    bool neg;
    uint64_t mag;
  } cases[] = {
      {"0", 0, false, 0},
      {"-0", 0, false, 0},
      {"18446744073709551615", 0, false, UINT64_MAX},
      {"18446744073709551616", -2, false, 0},
      {"1844674407370955161.5e1", 0, false, 18446744073709551615u},
      {"1.8446744073709551615e19", 0, false, 18446744073709551615u},
      {"-9223372036854775808", 0, true, 9223372036854775808u},
      {"1e19", 0, false, 10000000000000000000u},
      {"1e20", -2, false, 0},
      {"0e999999999999", 0, false, 0},
      {"100e-2", 0, false, 1},
      {"1e-1", -1, false, 0},
      {"0.10e1", 0, false, 1},
      {"12.", -1, false, 0},
      {".5", -1, false, 0},
      {"1e", -1, false, 0},
      {"+1", -1, false, 0},
      {"1 ", -1, false, 0},
      {"", -1, false, 0},
      {"-", -1, false, 0},
      {"0000000000000000000000000000001", 0, false, 1},
      {"1000000000000000000000000000000e-30", 0, false, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    bool neg;
    uint64_t mag;
    int rc = ana_json_parse_integer(cases[i].s, strlen(cases[i].s), &neg, &mag);
    if (rc != cases[i].rc)
      fail_msg("%s: rc %d, want %d", cases[i].s, rc, cases[i].rc);
    if (rc == 0) {
      assert_true(mag == cases[i].mag);
      if (mag)
        assert_int_equal(neg, cases[i].neg);
    }
  }
}

static void base64_and_utf8(void **state) {
  (void)state;
  unsigned char in[64], outb[64];
  char text[128];
  for (size_t n = 0; n < sizeof in; n++) {
    for (size_t i = 0; i < n; i++)
      in[i] = (unsigned char)(i * 37 + n);
    size_t len = ana_json_base64_encode(in, n, text);
    assert_int_equal(len, (n + 2) / 3 * 4);
    assert_int_equal(ana_json_base64_decode(text, len, outb), (long)n);
    assert_memory_equal(in, outb, n);
    while (len && text[len - 1] == '=') /* unpadded, URL-safe */
      len--;
    for (size_t i = 0; i < len; i++)
      text[i] = text[i] == '+' ? '-' : text[i] == '/' ? '_' : text[i];
    assert_int_equal(ana_json_base64_decode(text, len, outb), (long)n);
    assert_memory_equal(in, outb, n);
  }
  assert_true(ana_json_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e", 10));
  assert_false(ana_json_utf8_valid("\xc0\xaf", 2));         /* overlong */
  assert_false(ana_json_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
  assert_false(ana_json_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
  assert_false(ana_json_utf8_valid("\xe2\x82", 2));         /* truncated */
  assert_false(ana_json_utf8_valid("\x80", 1));
}

static void timestamps_round_trip_everywhere(void **state) {
  (void)state;
  char text[ANA_JSON_TIME_TEXT_MAX];
  /* Every day boundary (and a second either side) in the range, sampled. */
  for (int64_t s = -62135596800; s <= 253402300799; s += 86400 * 37 + 1) {
    for (int64_t d = -1; d <= 1; d++) {
      int64_t t = s + d;
      if (t < -62135596800 || t > 253402300799)
        continue;
      int n = ana_json_format_timestamp(t, 0, text);
      assert_true(n > 0);
      int64_t back;
      int32_t nanos;
      assert_int_equal(ana_json_parse_timestamp(text, (size_t)n, &back, &nanos), 0);
      assert_int_equal(back, t);
    }
  }
}

/* --- streaming encoding --- */

struct sink {
  char *text;
  size_t len, cap, calls, min_taken;
  bool take_buffer; /* keep b->data and give b a new buffer, as the bridge does */
  int fail_at;      /* return an error at this call (1-based; 0 = never) */
};

static int sink_flush(void *ctx, struct ana_json_buf *b) {
  struct sink *k = ctx;
  k->calls++;
  if (k->fail_at && (int)k->calls == k->fail_at)
    return ANA_ERR_CLOSED;
  if (k->len + b->len > k->cap) {
    k->cap = (k->len + b->len) * 2;
    k->text = realloc(k->text, k->cap);
    assert_non_null(k->text);
  }
  memcpy(k->text + k->len, b->data + b->reserve, b->len);
  k->len += b->len;
  if (!k->min_taken || b->len < k->min_taken)
    k->min_taken = b->len;
  if (k->take_buffer) {
    free(b->data);
    b->cap = b->reserve + 64;
    b->data = malloc(b->cap);
    assert_non_null(b->data);
  }
  b->len = 0;
  return 0;
}

/* A wide MetricData (series x hourly buckets over several days) comes out
 * of the streaming encoder, chunk by chunk, exactly as the whole encoder
 * writes it; an error from the sink stops it. */
static void encode_stream_equals_whole(void **state) {
  (void)state;
  enum { SERIES = 20, BUCKETS = 100 };
  Analytics__V1__MetricData d = ANALYTICS__V1__METRIC_DATA__INIT;
  d.metric_id = "m1";
  Analytics__V1__MetricSeries series[SERIES], *sp[SERIES];
  Analytics__V1__MetricBucket buckets[SERIES][BUCKETS], *bp[SERIES][BUCKETS];
  Google__Protobuf__Timestamp ts[SERIES][BUCKETS];
  Google__Protobuf__DoubleValue vals[SERIES][BUCKETS];
  Analytics__V1__MetricSeries__DimensionsEntry dim[SERIES], *dp[SERIES];
  char names[SERIES][16];
  for (int i = 0; i < SERIES; i++) {
    analytics__v1__metric_series__init(&series[i]);
    analytics__v1__metric_series__dimensions_entry__init(&dim[i]);
    snprintf(names[i], sizeof names[i], "g\"%02d", i);
    dim[i].key = "groupId";
    dim[i].value = names[i];
    dp[i] = &dim[i];
    series[i].n_dimensions = 1;
    series[i].dimensions = &dp[i];
    for (int j = 0; j < BUCKETS; j++) {
      analytics__v1__metric_bucket__init(&buckets[i][j]);
      google__protobuf__timestamp__init(&ts[i][j]);
      google__protobuf__double_value__init(&vals[i][j]);
      ts[i][j].seconds = 1796601600 + (int64_t)j * 3600 + 1800 * (i % 2);
      vals[i][j].value = j % 3 ? j * 0.5 : j;
      buckets[i][j].start = &ts[i][j];
      buckets[i][j].value = j % 7 ? &vals[i][j] : NULL;
      bp[i][j] = &buckets[i][j];
    }
    series[i].n_buckets = BUCKETS;
    series[i].buckets = bp[i];
    sp[i] = &series[i];
  }
  d.n_series = SERIES;
  d.series = sp;

  struct ana_json_buf whole;
  ana_json_buf_init(&whole, 0);
  assert_int_equal(ana_json_encode(&whole, &d.base, NULL), 0);
  assert_non_null(strstr(whole.data, "\"start\":\"2026-12-07T00:00:00Z\""));
  assert_non_null(strstr(whole.data, "\"start\":\"2026-12-11T03:30:00Z\""));

  for (int take = 0; take < 2; take++) {
    struct sink k = {.take_buffer = take};
    struct ana_json_buf b;
    ana_json_buf_init(&b, 32);
    bool flushed = false;
    assert_int_equal(ana_json_encode_stream(&b, &d.base, NULL, 1000, sink_flush, &k, &flushed), 0);
    assert_true(flushed);
    assert_true(k.calls > 10);
    assert_true(k.min_taken >= 1000);
    sink_flush(&k, &b); /* the rest */
    assert_int_equal(k.len, whole.len);
    assert_memory_equal(k.text, whole.data, whole.len);
    ana_json_buf_fini(&b);
    free(k.text);
  }

  struct sink stop = {.fail_at = 3};
  struct ana_json_buf b;
  ana_json_buf_init(&b, 0);
  bool flushed = false;
  assert_int_equal(ana_json_encode_stream(&b, &d.base, NULL, 1000, sink_flush, &stop, &flushed),
                   ANA_ERR_CLOSED);
  assert_true(flushed);
  assert_int_equal(stop.calls, 3);
  ana_json_buf_fini(&b);
  free(stop.text);
  ana_json_buf_fini(&whole);

  /* The day text cached per thread follows the day of each value. */
  char t[ANA_JSON_TIME_TEXT_MAX];
  assert_int_equal(ana_json_format_timestamp(86399, 0, t), 20);
  assert_string_equal(t, "1970-01-01T23:59:59Z");
  ana_json_format_timestamp(86400, 0, t);
  assert_string_equal(t, "1970-01-02T00:00:00Z");
  ana_json_format_timestamp(86399, 5000000, t);
  assert_string_equal(t, "1970-01-01T23:59:59.005Z");
}

/* ---- a large array decoded in chunks (ana_json_options.parallel) ---- */

static size_t runner_calls;

/* Runs the chunks last first, as other threads may finish them. */
static void reverse_runner(void *runner, size_t n, void (*fn)(void *ctx, size_t i), void *ctx) {
  (void)runner;
  runner_calls++;
  for (size_t i = n; i-- > 0;)
    fn(ctx, i);
}

/* {"events":[...]} of n events (over 64 KiB for n >= 500); event `odd`
 * (n: none) ends with the members `extra` instead of its last property. */
static char *batch_doc(size_t n, size_t odd, const char *extra) {
  size_t cap = n * 300 + 256, len = 0;
  char *doc = malloc(cap);
  assert_non_null(doc);
  len += (size_t)snprintf(doc + len, cap - len, " { \"batchId\" : \"b-1\", \"events\" : [");
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(
        doc + len, cap - len,
        "%s{\"eventId\":\"e-%zu\",\"eventType\":\"message\",\"eventName\":\"sent\","
        "\"timestamp\":\"2026-12-01T10:00:%02zu.%03zuZ\",\"properties\":{\"campaignId\":\"c%zu\","
        "\"n\":%zu,\"list\":[1,\"two\",{\"three\":null}]%s%s}}",
        i ? (i % 7 ? "," : " ,\n ") : "", i, i % 60, i % 1000, i % 50, i, i == odd ? "}," : "",
        i == odd ? extra : ",\"last\":true");
  len += (size_t)snprintf(doc + len, cap - len, "] }\n");
  return doc;
}

/* The packed bytes of m (malloc'd) and their count. */
static uint8_t *packed(const ProtobufCMessage *m, size_t *n) {
  *n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(*n ? *n : 1);
  assert_non_null(b);
  protobuf_c_message_pack(m, b);
  return b;
}

static void decode_large_array_in_chunks(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *d = &analytics__v1__ingest_request__descriptor;
  struct ana_json_options par = {.parallel = reverse_runner};
  char *doc = batch_doc(700, SIZE_MAX, NULL);
  assert_true(strlen(doc) > (64u << 10));
  runner_calls = 0;
  ProtobufCMessage *whole = dec(d, doc, NULL);
  assert_non_null(whole);
  assert_int_equal(runner_calls, 0);
  ProtobufCMessage *split = dec(d, doc, &par);
  assert_non_null(split);
  assert_int_equal(runner_calls, 1); /* decoded in chunks */
  assert_string_equal(path, "");
  size_t nw, ns;
  uint8_t *bw = packed(whole, &nw), *bs = packed(split, &ns);
  assert_int_equal(nw, ns);
  assert_memory_equal(bw, bs, nw);
  free(bw);
  free(bs);
  Analytics__V1__IngestRequest *r = (void *)split;
  assert_int_equal(r->n_events, 700);
  assert_string_equal(r->batch_id, "b-1");
  assert_string_equal(r->events[699]->event_id, "e-699");
  free(doc);
}

/* Every error of a document split in chunks is the one of decoding it
 * whole: the same message, naming the same event. */
static void decode_in_chunks_errors_as_whole(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *d = &analytics__v1__ingest_request__descriptor;
  static const char *const extras[] = {
      "\"eventName\":5",            /* a wrong type */
      "\"bogus\":1",                /* an unknown field */
      "\"eventId\":\"x\"",          /* a field given twice */
      "\"timestamp\":\"noon\"",     /* a bad timestamp */
      "\"eventName\":tru",          /* invalid JSON */
      "\"eventName\":\"a\\ud800\"", /* a lone surrogate */
      "\"event_id\":\"again\"",     /* a field named twice by its two names */
  };
  for (size_t c = 0; c < sizeof extras / sizeof *extras; c++) {
    for (int ignore = 0; ignore < 2; ignore++) {
      char *doc = batch_doc(600, 437, extras[c]);
      struct ana_json_options one = {.ignore_unknown = ignore};
      struct ana_json_options par = {.ignore_unknown = ignore, .parallel = reverse_runner};
      ProtobufCMessage *a = dec(d, doc, &one);
      char whole_msg[sizeof err.message], whole_path[sizeof path];
      snprintf(whole_msg, sizeof whole_msg, "%s", a ? "" : err.message);
      snprintf(whole_path, sizeof whole_path, "%s", path);
      ProtobufCMessage *b = dec(d, doc, &par);
      assert_int_equal(a == NULL, b == NULL);
      if (!a) {
        assert_string_equal(err.message, whole_msg);
        assert_string_equal(path, whole_path);
        assert_non_null(strstr(whole_msg, "events[437]"));
      }
      free(doc);
    }
  }
  /* Broken around the array: a trailing comma, the array named twice, a
   * null element, text after the document, a cut document. */
  char *doc = batch_doc(600, SIZE_MAX, NULL);
  size_t len = strlen(doc);
  char *bad[5];
  size_t cut = (size_t)(strrchr(doc, ']') - doc);
  assert_true(asprintf(&bad[0], "%.*s,%s", (int)cut, doc, doc + cut) > 0);
  assert_true(asprintf(&bad[1], "%.*s,\"events\":[]}", (int)(strrchr(doc, '}') - doc), doc) > 0);
  assert_true(asprintf(&bad[2], "%.*s,null%s", (int)cut, doc, doc + cut) > 0);
  assert_true(asprintf(&bad[3], "%s{}", doc) > 0);
  assert_true(asprintf(&bad[4], "%.*s", (int)(len - 40), doc) > 0);
  for (size_t c = 0; c < 5; c++) {
    struct ana_json_options par = {.parallel = reverse_runner};
    assert_null(dec(d, bad[c], NULL));
    char whole_msg[sizeof err.message];
    snprintf(whole_msg, sizeof whole_msg, "%s", err.message);
    assert_null(dec(d, bad[c], &par));
    assert_string_equal(err.message, whole_msg);
    free(bad[c]);
  }
  free(doc);
}

/* An array of many tiny elements costs about as much memory split in
 * chunks as decoded whole. */
static void decode_tiny_elements_in_chunks(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *d = &analytics__v1__ingest_request__descriptor;
  size_t n = 30000, len = 0;
  char *doc = malloc(n * 3 + 32);
  assert_non_null(doc);
  len += (size_t)sprintf(doc, "{\"events\":[");
  for (size_t i = 0; i < n; i++)
    len += (size_t)sprintf(doc + len, "%s{}", i ? "," : "");
  sprintf(doc + len, "]}");
  struct ana_json_options par = {.parallel = reverse_runner};
  runner_calls = 0;
  assert_non_null(dec(d, doc, NULL));
  size_t whole = ana_arena_capacity(&arena);
  ana_arena_reset(&arena);
  Analytics__V1__IngestRequest *r = dec(d, doc, &par);
  assert_non_null(r);
  assert_int_equal(runner_calls, 1);
  assert_int_equal(r->n_events, n);
  assert_true(ana_arena_capacity(&arena) < 3 * whole);
  free(doc);
}

/* Elements read straight from the text (the simple ones) decode as jansson
 * and the walk decode them: the same message, or, for every element the
 * direct read declines, the same error naming the same element. */
static void decode_direct_elements_as_jansson(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *d = &analytics__v1__track_events_request__descriptor;
  static const char *const variants[] = {
      "{\"eventId\":\"e-1\",\"eventType\":\"message\",\"eventName\":\"sent\",\"timestamp\":"
      "\"2026-12-01T10:00:01.123Z\",\"properties\":{\"campaignId\":\"c1\",\"groupId\":\"g2\"}}",
      "{ \"eventId\" : \"e-1\" ,\n\t\"eventName\":\"sent\" , \"properties\" : { } }\r\n",
      "{}",
      "{\"properties\":{\"a\":1,\"b\":-0,\"c\":1.5,\"d\":1e3,\"e\":-2.5E-3,\"f\":"
      "123456789012345678,"
      "\"h\":0.1,\"k\":0,\"l\":-7}}",
      "{\"properties\":{\"g\":1234567890123456789}}",
      "{\"properties\":{\"g\":99999999999999999999}}",
      "{\"properties\":{\"i\":1e400}}",
      "{\"properties\":{\"j\":1e-400}}",
      "{\"properties\":{\"t\":true,\"f\":false,\"n\":null}}",
      "{\"properties\":{\"a\":01}}",
      "{\"properties\":{\"a\":-}}",
      "{\"properties\":{\"a\":1.}}",
      "{\"properties\":{\"a\":.5}}",
      "{\"properties\":{\"a\":1e}}",
      "{\"properties\":{\"a\":tru}}",
      "{\"properties\":{\"a\":\"1\",\"a\":\"2\"}}",
      "{\"properties\":{\"o\":{\"p\":\"q\"},\"l\":[1,\"two\"]}}",
      "{\"properties\":{\"\":\"\"},\"eventId\":\"\"}",
      "{\"properties\":\"x\"}",
      "{\"properties\":[1]}",
      "{\"properties\":null}",
      "{\"eventName\":\"a\\\"b\"}",
      "{\"eventName\":\"caf\\u00e9\"}",
      "{\"eventName\":\"caf\xC3\xA9\"}",
      "{\"eventName\":\"\xC3\"}",
      "{\"eventName\":\"tab\there\"}",
      "{\"eventName\":\"del\x7f\"}",
      "{\"eventName\":\"a\",\"event_name\":\"b\"}",
      "{\"eventName\":\"a\",\"eventName\":\"a\"}",
      "{\"eventName\":null}",
      "{\"eventName\":5}",
      "{\"eventName\":true}",
      "{\"bogus\":\"x\",\"eventName\":\"n\"}",
      "{\"event_id\":\"x\",\"event_type\":\"t\",\"session_id\":\"s\",\"account_id\":\"a\","
      "\"sent_at\":\"2026-12-01T10:00:00Z\",\"received_at\":\"2026-12-01T10:00:00.5+01:00\"}",
      "{\"timestamp\":\"noon\"}",
      "{\"timestamp\":5}",
      "{\"timestamp\":\"0000-01-01T00:00:00Z\"}",
      "{\"context\":{\"userAgent\":\"ua\",\"locale\":\"fr\",\"ip\":\"1.2.3.4\"}}",
      "{\"context\":{\"user_agent\":\"ua\",\"bogus\":\"x\"}}",
      "{\"context\":\"x\"}",
      "{\"context\":{}}",
      "{\"eventName\":\"x\" \"eventType\":\"y\"}",
      "{\"eventName\":\"x\",}",
      "{\"eventName\" \"x\"}",
      /* escapes, non-ASCII text, and where yajl and jansson part ways */
      "{\"eventName\":\"a\\nb\\t\\\\ \\/ \\\" \\b\\f\\r \\u00e9\\u20ac \\u0041\"}",
      "{\"event\\u004eame\":\"x\",\"properties\":{\"k\\u00e9\":\"v\\u00e9\"}}",
      "{\"eventName\":\"\\ud83d\\ude00\"}",
      "{\"eventName\":\"\\ud83d\\u0041\"}",
      "{\"eventName\":\"\\ud83dx\"}",
      "{\"eventName\":\"\\ude00\"}",
      "{\"properties\":{\"s\":\"\\ud800\\udc00\"}}",
      "{\"properties\":{\"s\":\"\\udbff\"}}",
      "{\"eventName\":\"\xF0\x9F\x98\x80 raw\"}",
      "{\"eventName\":\"\xF0\x9F\x98\x80\\n\"}",
      "{\"eventName\":\"why?\\n\"}",
      "{\"eventName\":\"why?\"}",
      "{\"eventName\":\"\xC0\x80\"}",
      "{\"eventName\":\"\xE0\x80\xAF\"}",
      "{\"eventName\":\"\xED\xA0\x80\"}",
      "{\"eventName\":\"\xF4\x90\x80\x80\"}",
      "{\"eventName\":\"\xF8\x88\x80\x80\x80\"}",
      "{\"eventName\":\"\x80\"}",
      "{\"eventName\":\"\xE2\x82\"}",
      "{\"eventName\":\"a\\u0000b\"}",
      "{\"properties\":{\"a\\u0000\":\"x\"}}",
      "{\"properties\":{\"s\":\"a\\u0000b\"}}",
      "{\"properties\":{\"k\\u00e9\":\"1\",\"k\xC3\xA9\":\"2\"}}",
      "{\"properties\":{\"\\u0061\":1,\"a\":2}}",
      "{\"properties\":{\"\xC3\xA9\":\"\xE2\x82\xAC\",\"\xE2\x82\xAC\":\"\xC3\xA9\"}}",
      "{\"properties\":{\"\xC0\x80\":1}}",
      "{\"properties\":{\"\xED\xBF\xBF\":1}}",
      "{\"timestamp\":\"2026-12-01T10:00:00\\u005a\"}",
      "{\"timestamp\":\"2026-12-01T10:00:00\xC3\xA9Z\"}",
      "{\"eventName\":\"x\"\f}",
      "{\"eventName\":\v\"x\"}",
      "{\"eventName\":\"a\\x\"}",
      "{\"eventName\":\"\\u12\"}",
      "{\"eventName\":\"\\u12g4\"}",
      "{\"eventName\":\"raw\x01ctl\"}",
      "{\"eventName\":\"del\x7f\\u007f\"}",
      "{\"properties\":{\"a\":1,\"b\":[]}}",
      "{\"properties\":{\"a\":-0.0,\"b\":1E+2,\"c\":2.5e-310,\"d\":-1e-2}}",
      "{\"properties\":{\"a\":1,\"b\":2,}}",
      "{\"properties\":{\"a\" 1}}",
      "{\"properties\":{\"a\":1 \"b\":2}}",
      "{\"properties\":{\"a\":+1}}",
      "{\"properties\":{\"a\":1}",
      "{\"eventName\":\"x\"}}",
      "{\"eventName\":\"x\"}]",
      "{\"context\":{\"ip\":\"\\u0031.2.3.4\",\"locale\":\"fr\\u002dFR\"}}",
      "{\"context\":{\"ip\":\"1\",\"ip\":\"2\"}}",
      "{\"context\":null}",
      "{\"timestamp\":null,\"eventName\":\"n\"}",
      "[1]",
      "\"x\"",
      "null",
      "7",
      "",
      " ",
  };
  char big[4096];
  size_t n = 0;
  n += (size_t)snprintf(big, sizeof big, "{\"properties\":{");
  for (int i = 0; i < 70; i++)
    n += (size_t)snprintf(big + n, sizeof big - n, "%s\"k%d\":\"v\"", i ? "," : "", i);
  snprintf(big + n, sizeof big - n, "}}");
  for (size_t v = 0; v <= sizeof variants / sizeof *variants; v++) {
    const char *var = v < sizeof variants / sizeof *variants ? variants[v] : big;
    size_t cap = 200 * (strlen(var) + strlen(variants[0]) + 4) + 64, len = 0;
    char *doc = malloc(cap);
    assert_non_null(doc);
    len += (size_t)snprintf(doc, cap, "{\"events\":[");
    for (int i = 0; i < 200; i++)
      len += (size_t)snprintf(doc + len, cap - len, "%s%s", i ? "," : "",
                              i % 3 == 1 ? var : variants[0]);
    snprintf(doc + len, cap - len, "]}");
    for (int ignore = 0; ignore < 2; ignore++) {
      struct ana_json_options one = {.ignore_unknown = ignore};
      struct ana_json_options direct = {
          .ignore_unknown = ignore, .parallel = reverse_runner, .parallel_min_bytes = 1};
      struct ana_json_options tree = direct;
      tree.no_direct = true;
      ProtobufCMessage *a = dec(d, doc, &one);
      char msg[sizeof err.message], at[sizeof path];
      snprintf(msg, sizeof msg, "%s", a ? "" : err.message);
      snprintf(at, sizeof at, "%s", path);
      const struct ana_json_options *opts[] = {&direct, &tree};
      for (int o = 0; o < 2; o++) {
        ProtobufCMessage *b = dec(d, doc, opts[o]);
        if ((a == NULL) != (b == NULL))
          fail_msg("variant %zu (%s), ignore %d, %s: whole %s, split %s", v, var, ignore,
                   o ? "tree" : "direct", a ? "decodes" : msg, b ? "decodes" : err.message);
        if (!a) {
          assert_string_equal(err.message, msg);
          assert_string_equal(path, at);
          continue;
        }
        size_t na, nb;
        uint8_t *pa = packed(a, &na), *pb = packed(b, &nb);
        if (na != nb || memcmp(pa, pb, na) != 0)
          fail_msg("variant %zu (%s), ignore %d, %s: another message", v, var, ignore,
                   o ? "tree" : "direct");
        free(pa);
        free(pb);
      }
    }
    free(doc);
  }
}

/* Which elements are read straight from the text (the rest declined, to
 * jansson): escapes and non-ASCII text are, surrogate escapes (which yajl
 * reads otherwise) and \f or \v between tokens (white space to yajl only)
 * are not; one reader goes on after a decline. */
static void decode_direct_takes_escapes(void **state) {
  (void)state;
  static const struct {
    const char *text;
    bool taken;
  } cases[] = {
      {"{\"eventName\":\"a\\nb\\t\\\\\\/\\\"\\u00e9\\u20ac\",\"eventType\":\"t\"}", true},
      {"{\"event\\u004eame\":\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\",\"eventType\":\"t\"}", true},
      {"{\"properties\":{\"k\\u00e9\":\"v\",\"k\xC3\xA9x\":\"w\"}}", true},
      {"{\"properties\":{\"k\\u00e9\":\"v\",\"k\xC3\xA9\":\"w\"}}", false},
      {"{\"eventName\":\"\\ud83d\\ude00\"}", false},
      {"{\"eventName\":\"\\ud83dx\"}", false},
      {"{\"eventName\":\"\\ude00\"}", false},
      {"{\"eventName\":\"why?\\n\"}", false},
      {"{\"eventName\":\"why?\",\"eventType\":\"t\"}", true},
      {"{\"eventName\":\"\xED\xA0\x80\"}", false},
      {"{\"eventName\":\"x\",\f\"eventType\":\"t\"}", false},
      {"{\"eventName\":\"x\",\"eventType\":\"t\"}", true},
      {"{\"eventName\":\"x\"\v,\"eventType\":\"t\"}", false},
      {"{\"properties\":{\"a\":1}}", true},
      {"{\"properties\":{\"a\":1}}x", false},
      {"{\"properties\":{\"a\":[1]}}", false},
      {"", false},
      {"{", false},
      {"{}", true},
  };
  const ProtobufCMessageDescriptor *d = &analytics__v1__event__descriptor;
  struct ana_json_direct *p = ana_json_direct_new();
  assert_non_null(p);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    ProtobufCMessage *m =
        ana_json_direct_element(p, d, cases[i].text, strlen(cases[i].text), &arena);
    if ((m != NULL) != cases[i].taken)
      fail_msg("%s: %s", cases[i].text, m ? "taken" : "declined");
  }
  ana_json_direct_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
      T(encode_event_canonical),
      T(encode_stream_equals_whole),
      T(encode_defaults_and_proto_names),
      T(encode_integers),
      T(encode_floating_point),
      T(encode_enums),
      T(encode_bytes),
      T(encode_timestamps),
      T(encode_durations),
      T(encode_wrappers),
      T(encode_maps),
      T(encode_strings_escaped),
      T(encode_oneof),
      T(encode_value_kinds),
      T(encode_any),
      T(encode_field_mask),
      T(encode_buffer_headroom_and_append),
      T(encode_out_of_memory_keeps_buffer),
      T(encode_depth_limit),
      T(decode_event),
      T(decode_accepts_both_names),
      T(decode_integers),
      T(decode_floating_point),
      T(decode_bools),
      T(decode_enums),
      T(decode_bytes),
      T(decode_null),
      T(decode_oneof),
      T(decode_timestamps),
      T(decode_durations),
      T(decode_wrappers),
      T(decode_struct_and_values),
      T(decode_maps),
      T(decode_any),
      T(decode_unknown_fields),
      T(decode_text_errors),
      T(decode_depth_limit),
      T(decode_value_for_body_field),
      T(decode_out_of_memory),
      T(decode_never_crashes),
      T(set_field_query_parameters),
      T(set_field_repeated_and_enums),
      T(set_field_scalars_and_wkts),
      T(set_field_oneof_last_wins),
      T(integer_text),
      T(base64_and_utf8),
      T(timestamps_round_trip_everywhere),
      T(decode_large_array_in_chunks),
      T(decode_in_chunks_errors_as_whole),
      T(decode_tiny_elements_in_chunks),
      T(decode_direct_elements_as_jansson),
      T(decode_direct_takes_escapes),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
