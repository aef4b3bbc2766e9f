/* libanalytics without a server: the event builder, the bounded queue (a full
 * queue answers at once), the retry backoff, the counters. */
#include "analytics_internal.h"
#include "ana_clock.h"

#include "analytics/v1/events.pb-c.h"
#include "ana_id.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

/* --- Event builder --- */

static void test_event_builder(void **state) {
  (void)state;
  analytics_event_t *ev = analytics_event_new("message", "message_sent");
  struct ana_arena arena;
  ProtobufCMessage *msg = NULL;
  analytics_error_t err;

  assert_non_null(ev);
  assert_null(analytics_event_new(NULL, "x"));
  assert_int_equal(analytics_event_set_string(ev, "campaignId", "123"), 0);
  assert_int_equal(analytics_event_set_string(ev, "groupId", "456"), 0);
  assert_int_equal(analytics_event_set_number(ev, "charactersCount", 150), 0);
  assert_int_equal(analytics_event_set_bool(ev, "urgent", true), 0);
  assert_int_equal(analytics_event_set_string(ev, "groupId", "789"), 0); /* replaces */
  assert_int_equal(analytics_event_set_number(ev, "bad", NAN), ANALYTICS_ERR_INVALID);
  assert_int_equal(analytics_event_set_number(ev, "bad", INFINITY), ANALYTICS_ERR_INVALID);
  assert_int_equal(analytics_event_set_string(ev, NULL, "x"), ANALYTICS_ERR_INVALID);
  assert_int_equal(analytics_event_set_string(ev, "k", "\xff\xfe"), ANALYTICS_ERR_INVALID);
  assert_int_equal(analytics_event_set_id(ev, "has space"), ANALYTICS_ERR_INVALID);
  assert_int_equal(analytics_event_set_session(ev, "s-1"), 0);
  assert_int_equal(analytics_event_set_context(ev, "test/1.0", "de-DE"), 0);
  assert_int_equal(analytics_event_set_timestamp_ms(ev, -1), ANALYTICS_ERR_INVALID);
  assert_int_equal(analytics_event_set_timestamp_ms(ev, 1700000000123), 0);
  assert_int_equal(analytics_event_set_properties_json(ev, "[1]", &err), ANALYTICS_ERR_INVALID);
  assert_int_equal(err.code, ANALYTICS_STATUS_INVALID_ARGUMENT);
  assert_int_equal(analytics_event_set_properties_json(ev, "{\"nested\":{\"a\":[1,2]}}", &err), 0);

  ana_arena_init(&arena, 0, 0);
  assert_int_equal(analytics_event_build(ev, &arena, &msg, &err), 0);
  const Analytics__V1__Event *e = (const Analytics__V1__Event *)msg;
  assert_string_equal(e->event_type, "message");
  assert_string_equal(e->event_name, "message_sent");
  assert_string_equal(e->session_id, "s-1");
  assert_string_equal(e->context->user_agent, "test/1.0");
  assert_true(ana_uuid_is_valid(e->event_id)); /* assigned at build (track) time */
  assert_int_equal(e->timestamp->seconds, 1700000000);
  assert_int_equal(e->timestamp->nanos, 123000000);
  assert_int_equal(e->properties->n_fields, 5);
  for (size_t i = 0; i < e->properties->n_fields; i++) {
    const Google__Protobuf__Struct__FieldsEntry *f = e->properties->fields[i];
    if (!strcmp(f->key, "groupId"))
      assert_string_equal(f->value->string_value, "789");
    if (!strcmp(f->key, "charactersCount"))
      assert_true(f->value->number_value == 150);
    if (!strcmp(f->key, "urgent"))
      assert_true(f->value->bool_value);
  }
  ana_arena_fini(&arena);

  /* An id set by the caller is kept. */
  assert_int_equal(analytics_event_set_id(ev, "order-42:retry.1"), 0);
  ana_arena_init(&arena, 0, 0);
  assert_int_equal(analytics_event_build(ev, &arena, &msg, &err), 0);
  assert_string_equal(((Analytics__V1__Event *)msg)->event_id, "order-42:retry.1");
  ana_arena_fini(&arena);
  analytics_event_destroy(ev);
  analytics_event_destroy(NULL);
}

/* --- Queue --- */

static void test_queue_ring(void **state) {
  (void)state;
  struct analytics_queue q;
  struct analytics_item it = {0}, out[4];

  assert_int_equal(analytics_queue_init(&q, 3), 0);
  for (int round = 0; round < 5; round++) { /* wraps around several times */
    for (int i = 0; i < 3; i++) {
      it.len = (size_t)(round * 10 + i);
      assert_int_equal(analytics_queue_push(&q, &it), 0);
    }
    assert_int_equal(analytics_queue_push(&q, &it), ANALYTICS_ERR_QUEUE_FULL);
    assert_int_equal(analytics_queue_pop(&q, out, 2), 2);
    assert_int_equal(out[0].len, round * 10);
    assert_int_equal(out[1].len, round * 10 + 1);
    assert_int_equal(analytics_queue_pop(&q, out, 4), 1);
    assert_int_equal(out[0].len, round * 10 + 2);
    assert_int_equal(analytics_queue_pop(&q, out, 4), 0);
  }
  analytics_queue_fini(&q);
}

struct failures {
  int undelivered, rejected;
};

static void on_failure(const analytics_delivery_failure_t *f, void *ctx) {
  struct failures *fl = ctx;
  if (f->kind == ANALYTICS_FAILURE_UNDELIVERED)
    fl->undelivered++;
  else
    fl->rejected++;
}

/* A full queue answers at once and counts the drop; destroy gives up on what
 * it could not deliver within its close timeout and reports each event. */
static void test_queue_full_never_blocks(void **state) {
  (void)state;
  analytics_options_t o;
  struct failures fl = {0};
  analytics_error_t err;
  analytics_stats_t st;
  analytics_event_t *ev = analytics_event_new("t", "n");

  analytics_options_init(&o);
  o.target = "127.0.0.1:1"; /* nothing listens; never reached before destroy */
  o.queue_capacity = 3;
  o.flush_interval_ms = 60000;
  o.backoff_base_ms = 10;
  o.backoff_max_ms = 20;
  o.close_timeout_ms = 200;
  o.on_delivery_failure = on_failure;
  o.delivery_ctx = &fl;
  analytics_client_t *c = analytics_client_new(&o, &err);
  assert_non_null(c);
  for (int i = 0; i < 3; i++)
    assert_int_equal(analytics_track(c, ev, &err), 0);
  int64_t t0 = ana_clock_mono_ms();
  for (int i = 0; i < 100; i++)
    assert_int_equal(analytics_track(c, ev, &err), ANALYTICS_ERR_QUEUE_FULL);
  assert_true(ana_clock_mono_ms() - t0 < 100);
  assert_int_equal(err.code, ANALYTICS_STATUS_RESOURCE_EXHAUSTED);
  assert_int_equal(analytics_stats(c, &st), 0);
  assert_int_equal(st.tracked, 3);
  assert_int_equal(st.queued, 3);
  assert_int_equal(st.dropped, 100);
  assert_int_equal(st.sent, 0);
  assert_int_equal(analytics_stats(NULL, &st), ANALYTICS_ERR_INVALID);
  assert_int_equal(analytics_track(c, NULL, &err), ANALYTICS_ERR_INVALID);

  t0 = ana_clock_mono_ms();
  analytics_client_destroy(c);
  assert_true(ana_clock_mono_ms() - t0 < 3000);
  assert_int_equal(fl.undelivered, 3);
  assert_int_equal(fl.rejected, 0);
  analytics_event_destroy(ev);
}

static void test_options(void **state) {
  (void)state;
  analytics_options_t o;
  analytics_error_t err;

  analytics_options_init(&o);
  o.batch_size = 5000;
  assert_null(analytics_client_new(&o, &err));
  assert_int_equal(err.code, ANALYTICS_STATUS_INVALID_ARGUMENT);
  analytics_options_init(&o);
  o.backoff_base_ms = 500;
  o.backoff_max_ms = 100;
  assert_null(analytics_client_new(&o, &err));
  /* NULL options: all defaults. */
  analytics_client_t *c = analytics_client_new(NULL, &err);
  assert_non_null(c);
  analytics_client_destroy(c);
  analytics_client_destroy(NULL);
}

/* --- Backoff --- */

static void test_backoff_bounded_and_jittered(void **state) {
  (void)state;
  for (int attempt = 1; attempt <= 70; attempt++) {
    int64_t cap = 100;
    for (int i = 1; i < attempt && cap < 10000; i++)
      cap = cap * 2 > 10000 ? 10000 : cap * 2;
    int64_t lo = INT64_MAX, hi = 0;
    for (uint64_t r = 0; r < 2000; r++) {
      int64_t d = analytics_backoff_ms(attempt, 100, 10000, r * 0x9e3779b97f4a7c15ULL);
      assert_true(d >= cap / 2);
      assert_true(d <= cap);
      lo = d < lo ? d : lo;
      hi = d > hi ? d : hi;
    }
    assert_true(hi > lo); /* jittered, not a fixed delay */
  }
  /* Doubles until the cap. */
  assert_int_equal(analytics_backoff_ms(1, 100, 10000, 0), 50);
  assert_int_equal(analytics_backoff_ms(2, 100, 10000, 0), 100);
  assert_int_equal(analytics_backoff_ms(3, 100, 10000, 0), 200);
  assert_int_equal(analytics_backoff_ms(30, 100, 10000, 0), 5000);
  assert_int_equal(analytics_backoff_ms(3, 100, 10000, 100), 300); /* rnd % 201 == 100 */
}

/* --- Errors --- */

static void test_strerror(void **state) {
  (void)state;
  assert_string_equal(analytics_strerror(ANALYTICS_ERR_QUEUE_FULL), "queue full");
  assert_string_equal(analytics_strerror(12345), "unknown error");
  assert_string_equal(analytics_status_name(ANALYTICS_STATUS_UNIMPLEMENTED), "UNIMPLEMENTED");
  assert_string_equal(analytics_status_name(99), "UNKNOWN");

  struct ana_error aerr = {.code = ANA_STATUS_UNIMPLEMENTED};
  analytics_error_t err;
  strcpy(aerr.message, "metrics are not implemented yet");
  assert_int_equal(analytics_from_ana(ANA_ERR_INVALID, &aerr, &err), ANALYTICS_ERR_UNIMPLEMENTED);
  assert_int_equal(err.code, 12);
  assert_string_equal(err.message, "metrics are not implemented yet");
  aerr.code = ANA_STATUS_UNAVAILABLE;
  assert_int_equal(analytics_from_ana(ANA_ERR_INVALID, &aerr, &err), ANALYTICS_ERR_UNAVAILABLE);
  aerr.code = ANA_STATUS_NOT_FOUND;
  assert_int_equal(analytics_from_ana(ANA_ERR_INVALID, &aerr, &err), ANALYTICS_ERR_SERVER);
  assert_int_equal(analytics_from_ana(0, &aerr, &err), 0);
  assert_int_equal(err.code, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_event_builder),
      cmocka_unit_test(test_queue_ring),
      cmocka_unit_test(test_queue_full_never_blocks),
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_backoff_bounded_and_jittered),
      cmocka_unit_test(test_strerror),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
