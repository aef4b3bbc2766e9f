/* Unit tests of event validation, enrichment, skew correction, ids and the
 * client address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_id.h"
#include "ana_client_ip.h"
#include "ana_ingest.h"
#include "ana_timestamp.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define NOW 1790000000000LL /* a fixed "now" in Unix ms */
#define DAY 86400000LL

static const struct ana_ingest_limits limits = {
    .event_max_bytes = 32768,
    .event_max_properties = 256,
    .event_max_depth = 8,
    .batch_max_events = 1000,
    .batch_max_bytes = 4194304,
    .retention_days = 90,
    .event_max_future_ms = DAY,
    .reject_future = false,
    .clock_skew_tolerance_ms = 2000,
};

static struct ana_arena arena;
static Analytics__V1__Event ev;
static Google__Protobuf__Timestamp ts, sent;
static struct ana_ingest_item item;

static int setup(void **state) {
  (void)state;
  ana_arena_fini(&arena); /* tests call setup again to start over */
  ana_arena_init(&arena, 0, 0);
  analytics__v1__event__init(&ev);
  google__protobuf__timestamp__init(&ts);
  google__protobuf__timestamp__init(&sent);
  ev.event_type = "message";
  ev.event_name = "message_sent";
  memset(&item, 0, sizeof item);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ana_arena_fini(&arena);
  return 0;
}

static void prepare_with(const struct ana_ingest_limits *lim, const char *path) {
  struct ana_ingest_request req = {"acct-1", "203.0.113.7", NOW, lim};
  assert_int_equal(ana_ingest_prepare(&req, &ev, path, &arena, &item), 0);
}

static void prepare(const char *path) {
  prepare_with(&limits, path);
}

static bool has_violation(const char *field, const char *fragment) {
  for (size_t i = 0; i < item.n_violations; i++)
    if (strcmp(item.violations[i].field, field) == 0 &&
        strstr(item.violations[i].description, fragment))
      return true;
  return false;
}

static void a_minimal_event_is_accepted_and_enriched(void **state) {
  (void)state;
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
  assert_true(ana_uuid_is_valid(item.event_id));
  assert_int_equal(ana_uuid7_unix_ms(item.event_id) > 0, 1);
  assert_int_equal(item.stored_ts_ms, NOW); /* no timestamp: the receive time */
  assert_int_equal(item.record.received_at_ms, NOW);
  assert_int_equal(item.record.expires_at_ms, NOW + 90 * DAY);
  assert_string_equal(item.record.account_id, "acct-1");
  assert_string_equal(item.record.properties_json, "{}");
  assert_string_equal(item.record.search_text, "message_sent message");
  /* The stored payload is the enriched event. */
  Analytics__V1__Event *stored =
      analytics__v1__event__unpack(NULL, item.record.payload_len, item.record.payload);
  assert_non_null(stored);
  assert_string_equal(stored->event_id, item.event_id);
  assert_string_equal(stored->account_id, "acct-1");
  assert_string_equal(stored->context->ip, "203.0.113.7");
  assert_int_equal(stored->received_at->seconds, NOW / 1000);
  analytics__v1__event__free_unpacked(stored, NULL);
}

static void a_client_event_id_is_kept(void **state) {
  (void)state;
  ev.event_id = "order-42:retry.1_A";
  prepare("");
  assert_string_equal(item.event_id, "order-42:retry.1_A");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
}

static void required_names_and_their_paths(void **state) {
  (void)state;
  ev.event_name = "";
  ev.event_type = NULL;
  prepare("events[3]");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__REJECTED);
  assert_true(has_violation("events[3].eventName", "is required"));
  assert_true(has_violation("events[3].eventType", "is required"));
}

static void name_rules(void **state) {
  (void)state;
  char long_name[200];
  memset(long_name, 'x', 129);
  long_name[129] = '\0';
  ev.event_name = long_name;
  prepare("");
  assert_true(has_violation("eventName", "at most 128 characters"));
  setup(NULL);
  /* 128 characters of two bytes each are fine: characters, not bytes. */
  char utf8[300] = "";
  for (int i = 0; i < 128; i++)
    strcat(utf8, "\xc3\xa9");
  ev.event_name = utf8;
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
  setup(NULL);
  ev.event_name = "bad\nname";
  prepare("");
  assert_true(has_violation("eventName", "control characters"));
  setup(NULL);
  ev.event_type = "\xff\xfe";
  prepare("");
  assert_true(has_violation("eventType", "not valid UTF-8"));
}

static void event_id_rules(void **state) {
  (void)state;
  ev.event_id = "has space";
  prepare("events[0]");
  assert_true(has_violation("events[0].eventId", "A-Z a-z 0-9 _ . : -"));
  setup(NULL);
  char long_id[200];
  memset(long_id, 'a', 129);
  long_id[129] = '\0';
  ev.event_id = long_id;
  prepare("");
  assert_true(has_violation("eventId", "at most 128"));
}

static void another_account_is_rejected(void **state) {
  (void)state;
  ev.account_id = "acct-2";
  prepare("");
  assert_true(has_violation("accountId", "does not match the caller's account"));
  setup(NULL);
  ev.account_id = "acct-1";
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
}

/* properties: {"a":{"b":{...depth...}}} */
static Google__Protobuf__Struct *nested(int depth) {
  Google__Protobuf__Struct *s = ana_arena_calloc(&arena, 1, sizeof *s);
  google__protobuf__struct__init(s);
  if (depth <= 1)
    return s;
  Google__Protobuf__Struct__FieldsEntry *e = ana_arena_calloc(&arena, 1, sizeof *e);
  Google__Protobuf__Struct__FieldsEntry **es = ana_arena_calloc(&arena, 1, sizeof *es);
  Google__Protobuf__Value *v = ana_arena_calloc(&arena, 1, sizeof *v);
  google__protobuf__struct__fields_entry__init(e);
  google__protobuf__value__init(v);
  e->key = "k";
  v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
  v->struct_value = nested(depth - 1);
  e->value = v;
  es[0] = e;
  s->n_fields = 1;
  s->fields = es;
  return s;
}

static void property_depth_and_count(void **state) {
  (void)state;
  ev.properties = nested(8);
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
  setup(NULL);
  ev.properties = nested(9);
  prepare("events[1]");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__REJECTED);
  assert_true(has_violation("events[1].properties.k.k.k.k.k.k.k.k", "deeper than 8"));
  setup(NULL);
  struct ana_ingest_limits few = limits;
  few.event_max_properties = 3;
  ev.properties = nested(5); /* 4 keys in all */
  prepare_with(&few, "");
  assert_true(has_violation("properties", "more than 3 properties"));
}

static void properties_become_json_and_search_text(void **state) {
  (void)state;
  Google__Protobuf__Struct *s = ana_arena_calloc(&arena, 1, sizeof *s);
  google__protobuf__struct__init(s);
  Google__Protobuf__Struct__FieldsEntry e[2], *ep[2] = {&e[0], &e[1]};
  Google__Protobuf__Value v[2];
  for (int i = 0; i < 2; i++) {
    google__protobuf__struct__fields_entry__init(&e[i]);
    google__protobuf__value__init(&v[i]);
    e[i].value = &v[i];
  }
  e[0].key = "campaignId";
  v[0].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  v[0].string_value = "123";
  e[1].key = "charactersCount";
  v[1].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  v[1].number_value = 150;
  s->n_fields = 2;
  s->fields = ep;
  ev.properties = s;
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
  assert_non_null(strstr(item.record.properties_json, "\"campaignId\":\"123\""));
  assert_non_null(strstr(item.record.properties_json, "\"charactersCount\":150"));
  assert_string_equal(item.record.search_text, "message_sent message 123 150");
}

static void oversized_event_is_rejected(void **state) {
  (void)state;
  struct ana_ingest_limits small = limits;
  small.event_max_bytes = 200;
  static char big[400];
  memset(big, 's', sizeof big - 1);
  ev.session_id = big + 200;
  prepare_with(&small, "events[2]");
  assert_true(has_violation("events[2]", "more than the limit of 200"));
}

static void skew_is_corrected_with_segments_formula(void **state) {
  (void)state;
  /* The client clock is 1 h behind: it says it sent at NOW-1h. */
  ana_timestamp_set(&ts, NOW - 3600000 - 5000);
  ana_timestamp_set(&sent, NOW - 3600000);
  ev.timestamp = &ts;
  ev.sent_at = &sent;
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__CORRECTED);
  assert_int_equal(item.stored_ts_ms, NOW - 5000);
  assert_int_equal(item.skew_ms, 3600000);
  setup(NULL);
  /* Within the tolerance: kept as sent. */
  ana_timestamp_set(&ts, NOW - 5000);
  ana_timestamp_set(&sent, NOW - 1000);
  ev.timestamp = &ts;
  ev.sent_at = &sent;
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
  assert_int_equal(item.stored_ts_ms, NOW - 5000);
  assert_int_equal(item.skew_ms, 0);
}

static void timestamps_outside_the_window(void **state) {
  (void)state;
  ana_timestamp_set(&ts, NOW - 91 * DAY);
  ev.timestamp = &ts;
  prepare("");
  assert_true(has_violation("timestamp", "older than the retention period of 90 days"));
  setup(NULL);
  ana_timestamp_set(&ts, NOW + 2 * DAY);
  ev.timestamp = &ts;
  prepare("");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__CORRECTED);
  assert_int_equal(item.stored_ts_ms, NOW);
  assert_int_equal(item.skew_ms, -2 * DAY);
  setup(NULL);
  struct ana_ingest_limits strict = limits;
  strict.reject_future = true;
  ana_timestamp_set(&ts, NOW + 2 * DAY);
  ev.timestamp = &ts;
  prepare_with(&strict, "");
  assert_true(has_violation("timestamp", "in the future"));
  setup(NULL);
  ts.nanos = -5;
  ev.timestamp = &ts;
  prepare("");
  assert_true(has_violation("timestamp", "not a valid time"));
}

static void client_ip_from_peer_and_trusted_proxies(void **state) {
  (void)state;
  char ip[64];
  ana_client_ip("ipv4:198.51.100.4:5000", NULL, NULL, ip, sizeof ip);
  assert_string_equal(ip, "198.51.100.4");
  ana_client_ip("ipv6:[::1]:5000", NULL, NULL, ip, sizeof ip);
  assert_string_equal(ip, "::1");
  /* X-Forwarded-For is ignored unless the peer is a trusted proxy. */
  ana_client_ip("ipv4:198.51.100.4:5000", "1.2.3.4", "10.0.0.0/8", ip, sizeof ip);
  assert_string_equal(ip, "198.51.100.4");
  ana_client_ip("ipv4:10.1.2.3:5000", "1.2.3.4", "10.0.0.0/8", ip, sizeof ip);
  assert_string_equal(ip, "1.2.3.4");
  /* Walks back through trusted hops to the first untrusted address. */
  ana_client_ip("ipv4:10.1.2.3:5000", "6.6.6.6, 1.2.3.4, 10.9.9.9", "10.0.0.0/8", ip, sizeof ip);
  assert_string_equal(ip, "1.2.3.4");
  ana_client_ip("ipv4:10.1.2.3:5000", "garbage", "10.0.0.0/8", ip, sizeof ip);
  assert_string_equal(ip, "10.1.2.3");
  ana_client_ip("unix:/tmp/x", NULL, NULL, ip, sizeof ip);
  assert_string_equal(ip, "");
}

/* The payload of an event prepared from its known size (the batch's sizing)
 * is the enriched event, sized exactly, whatever the fields it replaces
 * (an id and account given or not, a context, times). */
static void a_known_size_and_id_make_the_same_payload(void **state) {
  (void)state;
  struct ana_ingest_request req = {
      .account_id = "acct-1", .client_ip = "203.0.113.7", .now_ms = NOW, .limits = &limits};
  Analytics__V1__EventContext ctx = ANALYTICS__V1__EVENT_CONTEXT__INIT;
  ctx.locale = "de-DE";
  ctx.ip = "198.51.100.1"; /* replaced by the connection's */
  Google__Protobuf__Timestamp recv = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  recv.seconds = 5;
  for (int v = 0; v < 8; v++) {
    setup(state);
    ts.seconds = NOW / 1000 - 60;
    ev.timestamp = v & 1 ? &ts : NULL;
    ev.context = v & 2 ? &ctx : NULL;
    ev.account_id = v & 4 ? "acct-1" : NULL;
    ev.received_at = v & 4 ? &recv : NULL; /* output only: replaced */
    ev.session_id = "s-1";
    struct ana_ingest_event in = {&ev, protobuf_c_message_get_packed_size(&ev.base), "given-id"};
    assert_int_equal(ana_ingest_prepare_known(&req, &in, "events[7]", &arena, &item), 0);
    assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED);
    assert_string_equal(item.event_id, "given-id");
    Analytics__V1__Event *stored =
        analytics__v1__event__unpack(NULL, item.record.payload_len, item.record.payload);
    assert_non_null(stored);
    assert_int_equal(protobuf_c_message_get_packed_size(&stored->base), item.record.payload_len);
    assert_string_equal(stored->event_id, "given-id");
    assert_string_equal(stored->account_id, "acct-1");
    assert_string_equal(stored->context->ip, "203.0.113.7");
    assert_string_equal(stored->context->locale, v & 2 ? "de-DE" : "");
    assert_int_equal(stored->received_at->seconds, NOW / 1000);
    analytics__v1__event__free_unpacked(stored, NULL);
  }
  /* A client id is kept over the one offered. */
  setup(state);
  ev.event_id = "mine";
  struct ana_ingest_event in = {&ev, protobuf_c_message_get_packed_size(&ev.base), "given-id"};
  assert_int_equal(ana_ingest_prepare_known(&req, &in, "", &arena, &item), 0);
  assert_string_equal(item.event_id, "mine");
}

/* A long key path is cut to the path buffer as before, never past it. */
static void a_long_property_path_is_cut(void **state) {
  (void)state;
  static char key[700];
  memset(key, 'k', sizeof key - 1);
  Google__Protobuf__Value bad = GOOGLE__PROTOBUF__VALUE__INIT;
  bad.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  bad.number_value = INFINITY;
  Google__Protobuf__Struct__FieldsEntry e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
  e.key = key;
  e.value = &bad;
  Google__Protobuf__Struct__FieldsEntry *ep = &e;
  Google__Protobuf__Struct props = GOOGLE__PROTOBUF__STRUCT__INIT;
  props.n_fields = 1;
  props.fields = &ep;
  ev.properties = &props;
  prepare("events[3]");
  assert_int_equal(item.status, ANALYTICS__V1__EVENT_RESULT__STATUS__REJECTED);
  assert_int_equal(strlen(item.violations[0].field), 511); /* the violation's own cut */
  assert_memory_equal(item.violations[0].field, "events[3].properties.kkk", 24);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_minimal_event_is_accepted_and_enriched, setup, teardown),
      cmocka_unit_test_setup_teardown(a_client_event_id_is_kept, setup, teardown),
      cmocka_unit_test_setup_teardown(required_names_and_their_paths, setup, teardown),
      cmocka_unit_test_setup_teardown(name_rules, setup, teardown),
      cmocka_unit_test_setup_teardown(event_id_rules, setup, teardown),
      cmocka_unit_test_setup_teardown(another_account_is_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(property_depth_and_count, setup, teardown),
      cmocka_unit_test_setup_teardown(properties_become_json_and_search_text, setup, teardown),
      cmocka_unit_test_setup_teardown(oversized_event_is_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(skew_is_corrected_with_segments_formula, setup, teardown),
      cmocka_unit_test_setup_teardown(timestamps_outside_the_window, setup, teardown),
      cmocka_unit_test_setup_teardown(client_ip_from_peer_and_trusted_proxies, setup, teardown),
      cmocka_unit_test_setup_teardown(a_known_size_and_id_make_the_same_payload, setup, teardown),
      cmocka_unit_test_setup_teardown(a_long_property_path_is_cut, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
