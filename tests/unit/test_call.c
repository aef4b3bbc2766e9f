/* Unit tests of the transport-neutral call layer (admission, answering
 * exactly once, violations as google.rpc.BadRequest) and of role
 * permissions, over a transport that records what it was asked to do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_auth.h"
#include "call_internal.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <stdlib.h>
#include <string.h>

struct recording {
  int sends, finishes, reading_changes;
  struct ana_error status;
  bool had_response;
};

static struct recording rec;

static int rec_send(struct ana_call *call, const ProtobufCMessage *m) {
  (void)call;
  (void)m;
  rec.sends++;
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

static const struct ana_call_transport recording_transport = {
    rec_send, rec_queue, rec_finish, rec_reading};

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
      cmocka_unit_test_setup_teardown(unbound_method_answers_unimplemented_with_its_feature,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(bound_handler_runs_and_finishes_once, setup, teardown),
      cmocka_unit_test_setup_teardown(cancel_is_reported_once_and_stops_sends, setup, teardown),
      cmocka_unit_test_setup_teardown(violations_travel_as_bad_request_details, setup, teardown),
      cmocka_unit_test_setup_teardown(metadata_deadline_and_reading, setup, teardown),
      cmocka_unit_test_setup_teardown(role_permissions, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
