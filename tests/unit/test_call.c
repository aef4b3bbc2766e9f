/* Unit tests of the transport-neutral call layer (admission, answering
 * exactly once, violations as google.rpc.BadRequest, shared messages) and
 * of role permissions, over a transport that records what it was asked to
 * do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_auth.h"
#include "analytics/v1/realtime.pb-c.h"
#include "ana_call_transport.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <stdlib.h>
#include <string.h>

struct recording {
  int sends, finishes, reading_changes;
  struct ana_error status;
  bool had_response;
  const ProtobufCMessage *last;        /* valid during the send only */
  Analytics__V1__AnalyticsUpdate copy; /* what the last AnalyticsUpdate send held */
};

static struct recording rec;

static int rec_send(struct ana_call *call, const ProtobufCMessage *m) {
  (void)call;
  rec.sends++;
  rec.last = m;
  if (m->descriptor == &analytics__v1__analytics_update__descriptor)
    rec.copy = *(const Analytics__V1__AnalyticsUpdate *)m;
  return 0;
}

static size_t rec_queue(struct ana_call *call) {
  (void)call;
  return 0;
}

static void rec_finish(struct ana_call *call, const ProtobufCMessage *response,
                       const struct ana_error *status) {
  (void)call;
  rec.finishes++;
  rec.had_response = response != NULL;
  if (status)
    rec.status = *status;
  else
    ana_error_clear(&rec.status);
}

static void rec_reading(struct ana_call *call) {
  (void)call;
  rec.reading_changes++;
}

static const struct ana_call_transport recording_transport = {rec_send, rec_queue, rec_finish,
                                                              rec_reading};

static int setup(void **state) {
  (void)state;
  memset(&rec, 0, sizeof rec);
  return ana_auth_init("acct-1");
}

static int teardown(void **state) {
  (void)state;
  ana_auth_fini();
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++)
    ana_rpc_bind((enum ana_method_id)i, NULL);
  return 0;
}

static void unbound_method_answers_unimplemented_with_its_feature(void **state) {
  (void)state;
  struct ana_call call;
  ana_call_init(&call, &recording_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_CREATE_METRIC]);
  struct ana_error st;
  call.peer = "ipv4:127.0.0.1:1"; /* protected mode serves loopback peers */
  assert_int_equal(ana_call_admit(&call, &st), 0);
  assert_string_equal(ana_call_principal(&call)->account_id, "acct-1");
  call.handler->on_request(&call, NULL);
  assert_int_equal(rec.finishes, 1);
  assert_int_equal(rec.status.code, ANA_STATUS_UNIMPLEMENTED);
  assert_string_equal(rec.status.message, "metrics are not implemented yet");
  ana_call_fini(&call);

  /* Streams too, from on_open. */
  ana_call_init(&call, &recording_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_INGEST_EVENTS]);
  call.peer = "ipv4:127.0.0.1:1"; /* protected mode serves loopback peers */
  assert_int_equal(ana_call_admit(&call, &st), 0);
  call.handler->on_open(&call);
  assert_string_equal(rec.status.message, "events are not implemented yet");
  ana_call_fini(&call);
}

static void on_request_reply(struct ana_call *call, const ProtobufCMessage *request) {
  ana_call_reply(call, request);
}

static void bound_handler_runs_and_finishes_once(void **state) {
  (void)state;
  static const struct ana_handler h = {.on_request = on_request_reply};
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_GET_ALERT, &h);
  struct ana_call call;
  ana_call_init(&call, &recording_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_GET_ALERT]);
  struct ana_error st;
  call.peer = "ipv4:127.0.0.1:1"; /* protected mode serves loopback peers */
  assert_int_equal(ana_call_admit(&call, &st), 0);
  assert_ptr_equal(call.handler, &h);
  Analytics__V1__GetAlertRequest req = ANALYTICS__V1__GET_ALERT_REQUEST__INIT;
  call.handler->on_request(&call, &req.base);
  assert_int_equal(rec.finishes, 1);
  assert_true(rec.had_response);
  /* A second finish is a handler bug: ignored, not passed to the transport. */
  ana_call_fail(&call, ANA_STATUS_INTERNAL, "again");
  assert_int_equal(rec.finishes, 1);
  assert_int_equal(ana_call_send(&call, &req.base), ANA_ERR_CLOSED);
  assert_int_equal(rec.sends, 0);
  ana_call_fini(&call);
}

static int cancels;
static void count_cancel(struct ana_call *call) {
  (void)call;
  cancels++;
}

static void cancel_is_reported_once_and_stops_sends(void **state) {
  (void)state;
  static const struct ana_handler h = {.on_request = on_request_reply, .on_cancel = count_cancel};
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC, &h);
  struct ana_call call;
  ana_call_init(&call, &recording_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC]);
  struct ana_error st;
  call.peer = "ipv4:127.0.0.1:1"; /* protected mode serves loopback peers */
  assert_int_equal(ana_call_admit(&call, &st), 0);
  Analytics__V1__MetricUpdate u = ANALYTICS__V1__METRIC_UPDATE__INIT;
  assert_int_equal(ana_call_send(&call, &u.base), 0);
  cancels = 0;
  ana_call_mark_cancelled(&call);
  ana_call_mark_cancelled(&call);
  assert_int_equal(cancels, 1);
  assert_true(ana_call_is_cancelled(&call));
  assert_int_equal(ana_call_send(&call, &u.base), ANA_ERR_CLOSED);
  assert_int_equal(rec.sends, 1);
  ana_call_fini(&call);
}

static void violations_travel_as_bad_request_details(void **state) {
  (void)state;
  struct ana_call call;
  ana_call_init(&call, &recording_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENTS]);
  size_t size = 0;
  assert_null(ana_call_status_details(&call, NULL, &size));
  ana_call_add_violation(&call, "events[0].eventName", "is required");
  ana_call_add_violation(&call, "events[3].eventId", "is longer than 128 characters");
  struct ana_error st = {ANA_STATUS_INVALID_ARGUMENT, "2 events are invalid"};
  uint8_t *bytes = ana_call_status_details(&call, &st, &size);
  assert_non_null(bytes);
  Google__Rpc__Status *status = google__rpc__status__unpack(NULL, size, bytes);
  assert_non_null(status);
  assert_int_equal(status->code, ANA_STATUS_INVALID_ARGUMENT);
  assert_string_equal(status->message, "2 events are invalid");
  assert_int_equal(status->n_details, 1);
  assert_string_equal(status->details[0]->type_url, "type.googleapis.com/google.rpc.BadRequest");
  Google__Rpc__BadRequest *bad = google__rpc__bad_request__unpack(
      NULL, status->details[0]->value.len, status->details[0]->value.data);
  assert_non_null(bad);
  assert_int_equal(bad->n_field_violations, 2);
  assert_string_equal(bad->field_violations[0]->field, "events[0].eventName");
  assert_string_equal(bad->field_violations[1]->field, "events[3].eventId");
  assert_string_equal(bad->field_violations[1]->description, "is longer than 128 characters");
  google__rpc__bad_request__free_unpacked(bad, NULL);
  google__rpc__status__free_unpacked(status, NULL);
  free(bytes);
  ana_call_fini(&call);
}

static void metadata_deadline_and_reading(void **state) {
  (void)state;
  struct ana_call call;
  ana_call_init(&call, &recording_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_INGEST_EVENTS]);
  struct ana_metadata_entry md[] = {{"authorization", "Bearer x", 8}, {"x-request-id", "r1", 2}};
  call.metadata = md;
  call.n_metadata = 2;
  assert_string_equal(ana_call_metadata(&call, "x-request-id"), "r1");
  assert_null(ana_call_metadata(&call, "nope"));
  assert_int_equal(ana_call_metadata_count(&call), 2);
  assert_null(ana_call_metadata_at(&call, 2));
  assert_int_equal(ana_call_remaining_ms(&call), INT64_MAX);
  call.deadline_mono_ms = ana_call_now_mono_ms() + 1000;
  assert_true(ana_call_remaining_ms(&call) > 900 && ana_call_remaining_ms(&call) <= 1000);
  ana_call_resume_reading(&call); /* not paused: nothing to do */
  assert_int_equal(rec.reading_changes, 0);
  ana_call_pause_reading(&call);
  ana_call_resume_reading(&call);
  assert_int_equal(rec.reading_changes, 1);
  call.message_arena = ana_arena_create(0, 0);
  struct ana_arena *kept = ana_call_keep_message(&call);
  assert_non_null(kept);
  assert_null(call.message_arena);
  ana_arena_destroy(kept);
  call.metadata = NULL;
  ana_call_fini(&call);
}

/* --- shared messages --- */

static void shared_message_goes_as_a_copy_with_the_calls_sequence(void **state) {
  (void)state;
  struct ana_call a, b;
  const struct ana_method *m =
      &ana_methods[ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS];
  ana_call_init(&a, &recording_transport, m);
  ana_call_init(&b, &recording_transport, m);
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  Analytics__V1__AnalyticsUpdate up = ANALYTICS__V1__ANALYTICS_UPDATE__INIT;
  up.update_case = ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT;
  up.event = &ev;
  struct ana_call_shared *sh = ana_call_shared_create(&up.base, true);
  assert_non_null(sh);

  /* A transport without send_shared gets the message with each call's
   * sequence; what it points to is shared, the message itself unchanged. */
  assert_int_equal(ana_call_send_shared(&a, sh, 5), 0);
  assert_int_equal(rec.copy.sequence, 5);
  assert_ptr_equal(rec.copy.event, &ev);
  assert_ptr_not_equal(rec.last, &up.base);
  assert_int_equal(ana_call_send_shared(&b, sh, 70000), 0);
  assert_int_equal(rec.copy.sequence, 70000);
  assert_int_equal(up.sequence, 0);

  /* Without a per-call sequence the message goes as it is. */
  Analytics__V1__AnalyticsUpdate own = up;
  own.sequence = 9;
  struct ana_call_shared *plain = ana_call_shared_create(&own.base, false);
  assert_int_equal(ana_call_send_shared(&a, plain, 5), 0);
  assert_ptr_equal(rec.last, &own.base);

  /* A finished call takes nothing more. */
  ana_call_reply(&b, NULL);
  int sends = rec.sends;
  assert_int_equal(ana_call_send_shared(&b, sh, 6), ANA_ERR_CLOSED);
  assert_int_equal(rec.sends, sends);
  ana_call_shared_destroy(plain);
  ana_call_shared_destroy(sh);
  ana_call_shared_destroy(NULL);
  ana_call_fini(&a);
  ana_call_fini(&b);
}

/* A transport that encodes shared messages: counts encodings and releases. */
static int encodings, releases, failures_left;
static uint64_t shared_sequence;

static void *count_encode(const struct ana_call_shared *m, int *rc) {
  (void)m;
  if (failures_left > 0) {
    failures_left--;
    *rc = ANA_ERR_NOMEM;
    return NULL;
  }
  encodings++;
  return malloc(16);
}

static void count_release(void *p) {
  releases++;
  free(p);
}

static const struct ana_call_transport encoding_transport;

static int enc_send_shared(struct ana_call *call, struct ana_call_shared *m, uint64_t sequence) {
  (void)call;
  int rc;
  void *e = ana_call_shared_encoding(m, &encoding_transport, count_encode, count_release, &rc);
  if (!e)
    return rc;
  shared_sequence = sequence;
  return 0;
}

static const struct ana_call_transport encoding_transport = {
    .send = rec_send,
    .send_queue_length = rec_queue,
    .finish = rec_finish,
    .reading_changed = rec_reading,
    .send_shared = enc_send_shared,
};

static void shared_message_is_encoded_once_per_transport(void **state) {
  (void)state;
  encodings = releases = failures_left = 0;
  const struct ana_method *m =
      &ana_methods[ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS];
  struct ana_call calls[3];
  for (int i = 0; i < 3; i++)
    ana_call_init(&calls[i], &encoding_transport, m);
  Analytics__V1__AnalyticsUpdate up = ANALYTICS__V1__ANALYTICS_UPDATE__INIT;
  struct ana_call_shared *sh = ana_call_shared_create(&up.base, true);

  /* A failed encoding is reported and tried again on the next send. */
  failures_left = 1;
  assert_int_equal(ana_call_send_shared(&calls[0], sh, 1), ANA_ERR_NOMEM);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(ana_call_send_shared(&calls[i], sh, (uint64_t)i + 10), 0);
    assert_int_equal(shared_sequence, (uint64_t)i + 10);
  }
  assert_int_equal(encodings, 1);
  assert_int_equal(rec.sends, 0); /* never fell back to send */
  /* Another transport keeps an encoding of its own (here: the fallback,
   * which keeps none). */
  struct ana_call other;
  ana_call_init(&other, &recording_transport, m);
  assert_int_equal(ana_call_send_shared(&other, sh, 4), 0);
  assert_int_equal(rec.sends, 1);
  assert_int_equal(encodings, 1);
  ana_call_shared_destroy(sh);
  assert_int_equal(releases, 1);
  ana_call_fini(&other);
  for (int i = 0; i < 3; i++)
    ana_call_fini(&calls[i]);
}

static void role_permissions(void **state) {
  (void)state;
  const char *const reader[] = {"reader"};
  const char *const ingest[] = {"ingest"};
  const char *const admin[] = {"admin"};
  struct ana_principal p = {"u", "a", reader, 1};
  assert_true(ana_auth_permits(&p, "metrics:read"));
  assert_false(ana_auth_permits(&p, "metrics:write"));
  assert_false(ana_auth_permits(&p, "events:write"));
  assert_true(ana_auth_permits(&p, ""));
  p.roles = ingest;
  assert_true(ana_auth_permits(&p, "events:write"));
  assert_false(ana_auth_permits(&p, "events:read"));
  p.roles = admin;
  assert_true(ana_auth_permits(&p, "alerts:write"));
  p.n_roles = 0;
  assert_false(ana_auth_permits(&p, "alerts:read"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(unbound_method_answers_unimplemented_with_its_feature, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(bound_handler_runs_and_finishes_once, setup, teardown),
      cmocka_unit_test_setup_teardown(cancel_is_reported_once_and_stops_sends, setup, teardown),
      cmocka_unit_test_setup_teardown(violations_travel_as_bad_request_details, setup, teardown),
      cmocka_unit_test_setup_teardown(metadata_deadline_and_reading, setup, teardown),
      cmocka_unit_test_setup_teardown(role_permissions, setup, teardown),
      cmocka_unit_test_setup_teardown(shared_message_goes_as_a_copy_with_the_calls_sequence, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(shared_message_is_encoded_once_per_transport, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
