/* The generated C client stubs against a running analyticsd.
 * Usage: test_client_stubs HOST:PORT (the server's gRPC address). */
#include "ana_client_stubs.h"
#include "ana_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int checks, failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    checks++;                                                                                      \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, #cond);       \
    }                                                                                              \
  } while (0)

/* rc and err are those of a call that should have failed with this status. */
#define CHECK_STATUS(rc, err, status)                                                              \
  do {                                                                                             \
    CHECK((rc) < 0);                                                                               \
    CHECK((err).code == (status));                                                                 \
    if ((err).code != (status))                                                                    \
      fprintf(stderr, "  expected %s, got rc %d, %s \"%s\"\n", ana_status_name(status), (rc),      \
              ana_status_name((err).code), (err).message);                                         \
  } while (0)

#define CHECK_OK(rc, err)                                                                          \
  do {                                                                                             \
    CHECK((rc) == 0);                                                                              \
    if ((rc) != 0)                                                                                 \
      fprintf(stderr, "  rc %d (%s): %s \"%s\"\n", (rc), ana_strerror(rc),                         \
              ana_status_name((err).code), (err).message);                                         \
  } while (0)

static int health_check(struct ana_client_channel *ch, const char *service,
                        const struct ana_call_options *opts, int *serving_status,
                        struct ana_error *err) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = (void *)1; /* must be reset by the stub */
  int rc;

  req.service = (char *)service;
  rc = ana_stub_grpc__health__v1__health_check(ch, &req, &resp, opts, err);
  CHECK(rc == 0 ? resp != NULL : resp == NULL);
  *serving_status = resp ? (int)resp->status : -1;
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

/* (1) Health Check: the whole server is SERVING; an unknown service is NOT_FOUND. */
static void test_health_check(struct ana_client_channel *ch) {
  struct ana_error err;
  int status, rc;

  rc = health_check(ch, "", NULL, &status, &err);
  CHECK_OK(rc, err);
  CHECK(status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  CHECK(err.code == ANA_STATUS_OK && err.message[0] == '\0');

  rc = health_check(ch, "no.such.Service", NULL, &status, &err);
  CHECK_STATUS(rc, err, ANA_STATUS_NOT_FOUND);
}

/* (2) Services whose feature is not built yet answer UNIMPLEMENTED and say so. */
static void test_unimplemented(struct ana_client_channel *ch) {
  struct ana_error err;
  int rc;

  {
    Analytics__V1__Metric metric = ANALYTICS__V1__METRIC__INIT;
    Analytics__V1__CreateMetricRequest req = ANALYTICS__V1__CREATE_METRIC_REQUEST__INIT;
    Analytics__V1__Metric *resp = NULL;
    /* Metrics are implemented: a definition without a formula is refused
     * with the field named. */
    metric.name = "delivery_rate";
    metric.type = "gauge";
    req.metric = &metric;
    rc = ana_stub_metric_service_create_metric(ch, &req, &resp, NULL, &err);
    CHECK_STATUS(rc, err, ANA_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "formula: is required") != NULL);
    CHECK(resp == NULL);
  }
  {
    Analytics__V1__ListReportsRequest req = ANALYTICS__V1__LIST_REPORTS_REQUEST__INIT;
    Analytics__V1__ListReportsResponse *resp = NULL;
    req.status = "no-such-state";
    rc = ana_stub_report_service_list_reports(ch, &req, &resp, NULL, &err);
    CHECK_STATUS(rc, err, ANA_STATUS_INVALID_ARGUMENT); /* reports are implemented */
    CHECK(strstr(err.message, "status:") != NULL);
    CHECK(resp == NULL);
  }
  {
    Analytics__V1__ListAlertsRequest req = ANALYTICS__V1__LIST_ALERTS_REQUEST__INIT;
    Analytics__V1__ListAlertsResponse *resp = NULL;
    rc = ana_stub_alert_service_list_alerts(ch, &req, &resp, NULL, &err);
    CHECK(rc == 0); /* alerts are implemented: an empty first page */
    CHECK(resp != NULL && resp->n_alerts == 0);
    if (resp)
      protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
}

struct watch_ctx {
  int messages;
  int first_status;
  int stop_after; /* 0 = never stop */
};

static int on_health(const Grpc__Health__V1__HealthCheckResponse *msg, void *arg) {
  struct watch_ctx *w = arg;
  if (w->messages++ == 0)
    w->first_status = (int)msg->status;
  return w->stop_after && w->messages >= w->stop_after;
}

/* (3) Health Watch sends SERVING first; stopping from the callback ends it with 0. */
static void test_watch_stop(struct ana_client_channel *ch) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  struct watch_ctx w = {.first_status = -1, .stop_after = 1};
  struct ana_error err;
  int rc;

  req.service = "";
  rc = ana_stub_grpc__health__v1__health_watch(ch, &req, on_health, &w, NULL, &err);
  CHECK_OK(rc, err);
  CHECK(w.messages == 1);
  CHECK(w.first_status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}

/* (4) Watch never ends by itself: a 200 ms deadline ends it with DEADLINE_EXCEEDED. */
static void test_watch_deadline(struct ana_client_channel *ch) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  struct ana_call_options opts = {.timeout_ms = 200};
  struct watch_ctx w = {.first_status = -1};
  struct ana_error err;
  double start = ana_test_now_s(), elapsed;
  int rc;

  req.service = "";
  rc = ana_stub_grpc__health__v1__health_watch(ch, &req, on_health, &w, &opts, &err);
  elapsed = ana_test_now_s() - start;
  CHECK_STATUS(rc, err, ANA_STATUS_DEADLINE_EXCEEDED);
  CHECK(w.messages >= 1);
  CHECK(elapsed >= 0.15 && elapsed < 5.0);
}

static bool lists_service(const Grpc__Reflection__V1__ServerReflectionResponse *resp,
                          const char *name) {
  const Grpc__Reflection__V1__ListServiceResponse *list = resp->list_services_response;
  if (resp->message_response_case !=
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE)
    return false;
  for (size_t i = 0; i < list->n_service; i++)
    if (strcmp(list->service[i]->name, name) == 0)
      return true;
  return false;
}

/* (5) Reflection v1 (bidi): list_services names our services. */
static void test_reflection(struct ana_client_channel *ch) {
  Grpc__Reflection__V1__ServerReflectionRequest req =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  Grpc__Reflection__V1__ServerReflectionResponse *resp = NULL;
  struct ana_client_stream *s;
  struct ana_error err;
  int rc;

  req.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
  req.list_services = "";
  s = ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_open(ch, NULL, &err);
  CHECK(s != NULL);
  if (!s) {
    fprintf(stderr, "  open: %s \"%s\"\n", ana_status_name(err.code), err.message);
    return;
  }
  for (int round = 0; round < 2; round++) { /* the stream serves several requests */
    rc =
        ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_send(s, &req, &err);
    CHECK_OK(rc, err);
    rc = ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_recv(s, &resp,
                                                                                      &err);
    CHECK(rc == 1 && resp != NULL);
    if (resp) {
      CHECK(lists_service(resp, "analytics.v1.EventService"));
      protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
  }
  rc = ana_client_stream_close_send(s, &err);
  CHECK_OK(rc, err);
  rc = ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_send(s, &req, &err);
  CHECK(rc == ANA_ERR_CLOSED); /* nothing goes out after the half-close */
  rc = ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_recv(s, &resp, &err);
  CHECK_OK(rc, err); /* end of stream, status OK */
  CHECK(resp == NULL);
  rc = ana_client_stream_finish(s, &err);
  CHECK_OK(rc, err);
}

/* The older reflection package is served by the same handler. */
static void test_reflection_v1alpha(struct ana_client_channel *ch) {
  Grpc__Reflection__V1alpha__ServerReflectionRequest req =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
  Grpc__Reflection__V1alpha__ServerReflectionResponse *resp = NULL;
  struct ana_client_stream *s;
  struct ana_error err;
  int rc;

  req.message_request_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
  req.list_services = "";
  s = ana_stub_grpc__reflection__v1alpha__server_reflection_server_reflection_info_open(ch, NULL,
                                                                                        &err);
  CHECK(s != NULL);
  if (!s)
    return;
  rc = ana_stub_grpc__reflection__v1alpha__server_reflection_server_reflection_info_send(s, &req,
                                                                                         &err);
  CHECK_OK(rc, err);
  rc = ana_stub_grpc__reflection__v1alpha__server_reflection_server_reflection_info_recv(s, &resp,
                                                                                         &err);
  CHECK(rc == 1 && resp != NULL && resp->list_services_response != NULL);
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  /* finish half-closes on its own */
  rc = ana_client_stream_finish(s, &err);
  CHECK_OK(rc, err);
}

struct canceller {
  struct ana_client_stream *stream;
};

static void *cancel_later(void *arg) {
  struct canceller *c = arg;
  usleep(100 * 1000);
  ana_client_stream_cancel(c->stream);
  return NULL;
}

/* A stream blocked in recv is released by a cancel from another thread. */
static void test_cancel_from_thread(struct ana_client_channel *ch) {
  Grpc__Reflection__V1__ServerReflectionResponse *resp = NULL;
  struct canceller c;
  struct ana_error err;
  pthread_t thread;
  double start;
  int rc;

  c.stream =
      ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_open(ch, NULL, &err);
  CHECK(c.stream != NULL);
  if (!c.stream)
    return;
  start = ana_test_now_s();
  CHECK(pthread_create(&thread, NULL, cancel_later, &c) == 0);
  /* Nothing was asked, so nothing comes until the cancel. */
  rc = ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_recv(c.stream, &resp,
                                                                                    &err);
  CHECK_STATUS(rc, err, ANA_STATUS_CANCELLED);
  CHECK(resp == NULL);
  CHECK(ana_test_now_s() - start < 5.0);
  pthread_join(thread, NULL);
  rc = ana_client_stream_finish(c.stream, &err);
  CHECK_STATUS(rc, err, ANA_STATUS_CANCELLED);
}

/* (6) Bad metadata is refused locally, and the channel stays usable. */
static void test_bad_metadata(struct ana_client_channel *ch) {
  static const char *const upper_key[] = {"X-Request-Id", "abc", NULL};
  static const char *const bad_value[] = {"x-request-id", "a\nb", NULL};
  static const char *const reserved[] = {"grpc-timeout", "1S", NULL};
  static const char *const good[] = {"x-request-id", "abc", "x-trace-bin", "\x01\x02", NULL};
  struct ana_call_options opts = {.timeout_ms = 5000};
  struct ana_error err;
  int status, rc;

  opts.metadata = upper_key;
  rc = health_check(ch, "", &opts, &status, &err);
  CHECK_STATUS(rc, err, ANA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(err.message, "X-Request-Id") != NULL);

  opts.metadata = bad_value;
  rc = health_check(ch, "", &opts, &status, &err);
  CHECK_STATUS(rc, err, ANA_STATUS_INVALID_ARGUMENT);

  opts.metadata = reserved;
  rc = health_check(ch, "", &opts, &status, &err);
  CHECK_STATUS(rc, err, ANA_STATUS_INVALID_ARGUMENT);

  opts.metadata = NULL;
  opts.authorization = "Bearer\r\nx-evil: 1";
  rc = health_check(ch, "", &opts, &status, &err);
  CHECK_STATUS(rc, err, ANA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(err.message, "x-evil") == NULL); /* the value is never echoed */

  {
    struct ana_client_stream *s;
    opts.authorization = NULL;
    opts.metadata = upper_key;
    s = ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_open(ch, &opts,
                                                                                     &err);
    CHECK(s == NULL);
    CHECK(err.code == ANA_STATUS_INVALID_ARGUMENT);
  }

  opts.metadata = good;
  opts.authorization = "Bearer test-token";
  rc = health_check(ch, "", &opts, &status, &err);
  CHECK_OK(rc, err);
  CHECK(status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}

/* (7) Nothing listening: UNAVAILABLE, fast, for calls and streams alike. */
static void test_unavailable(void) {
  struct ana_client_channel *dead;
  struct ana_client_stream *s;
  struct ana_error err;
  char target[64];
  double start;
  int status, rc, port = ana_test_unused_port();

  CHECK(port > 0);
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  dead = ana_client_channel_create(target, &err);
  CHECK(dead != NULL);
  if (!dead)
    return;
  start = ana_test_now_s();
  rc = health_check(dead, "", NULL, &status, &err);
  CHECK_STATUS(rc, err, ANA_STATUS_UNAVAILABLE);
  s = ana_stub_grpc__reflection__v1__server_reflection_server_reflection_info_open(dead, NULL,
                                                                                   &err);
  CHECK(s == NULL);
  CHECK(err.code == ANA_STATUS_UNAVAILABLE);
  ana_client_stream_finish(s, NULL); /* NULL-safe, in case the open succeeded */
  CHECK(ana_test_now_s() - start < 5.0);
  ana_client_channel_destroy(dead);
}

/* Events through the stubs: track, duplicate, batch with a rejected item,
 * the ingest stream, and search. */
static void test_events(struct ana_client_channel *ch) {
  struct ana_error err;
  char id[64];
  snprintf(id, sizeof id, "stub-%ld-%d", (long)time(NULL), (int)getpid());
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  ev.event_type = "message";
  ev.event_name = "stub_event";
  ev.event_id = id;
  Analytics__V1__TrackEventRequest req = ANALYTICS__V1__TRACK_EVENT_REQUEST__INIT;
  req.event = &ev;
  for (int round = 0; round < 2; round++) {
    Analytics__V1__TrackEventResponse *resp = NULL;
    CHECK(ana_stub_event_service_track_event(ch, &req, &resp, NULL, &err) == 0);
    if (resp) {
      CHECK(strcmp(resp->result->event_id, id) == 0);
      CHECK(resp->result->status == (round == 0 ? ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED
                                                : ANALYTICS__V1__EVENT_RESULT__STATUS__DUPLICATE));
      protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
  }

  Analytics__V1__Event bad = ANALYTICS__V1__EVENT__INIT;
  bad.event_type = "message";
  Analytics__V1__Event good = ANALYTICS__V1__EVENT__INIT;
  good.event_type = "message";
  good.event_name = "stub_batch";
  Analytics__V1__Event *evs[2] = {&good, &bad};
  Analytics__V1__TrackEventsRequest breq = ANALYTICS__V1__TRACK_EVENTS_REQUEST__INIT;
  breq.n_events = 2;
  breq.events = evs;
  Analytics__V1__TrackEventsResponse *bresp = NULL;
  CHECK(ana_stub_event_service_track_events(ch, &breq, &bresp, NULL, &err) == 0);
  if (bresp) {
    CHECK(bresp->n_results == 2 && bresp->accepted == 1 && bresp->rejected == 1);
    CHECK(bresp->n_results == 2 && bresp->results[1]->n_violations >= 1 &&
          strcmp(bresp->results[1]->violations[0]->field, "events[1].eventName") == 0);
    protobuf_c_message_free_unpacked(&bresp->base, NULL);
  }

  struct ana_client_stream *s = ana_stub_event_service_ingest_events_open(ch, NULL, &err);
  CHECK(s != NULL);
  if (s) {
    for (int i = 0; i < 5; i++) {
      Analytics__V1__IngestRequest ir = ANALYTICS__V1__INGEST_REQUEST__INIT;
      Analytics__V1__Event *one[1] = {&good};
      ir.batch_id = "stub-batch";
      ir.n_events = 1;
      ir.events = one;
      CHECK(ana_stub_event_service_ingest_events_send(s, &ir, &err) == 0);
    }
    CHECK(ana_client_stream_close_send(s, &err) == 0);
    int answers = 0;
    Analytics__V1__IngestResponse *ir;
    while (ana_stub_event_service_ingest_events_recv(s, &ir, &err) == 1) {
      answers += ir->accepted;
      protobuf_c_message_free_unpacked(&ir->base, NULL);
    }
    CHECK(answers == 5);
    CHECK(ana_client_stream_finish(s, &err) == 0);
  }

  Analytics__V1__SearchEventsRequest sreq = ANALYTICS__V1__SEARCH_EVENTS_REQUEST__INIT;
  sreq.event_name = "stub_event";
  Analytics__V1__SearchEventsResponse *sresp = NULL;
  CHECK(ana_stub_event_service_search_events(ch, &sreq, &sresp, NULL, &err) == 0);
  if (sresp) {
    int found = 0;
    for (size_t i = 0; i < sresp->n_events; i++)
      found += strcmp(sresp->events[i]->event_id, id) == 0;
    CHECK(found == 1);
    protobuf_c_message_free_unpacked(&sresp->base, NULL);
  }
}

int main(int argc, char **argv) {
  struct ana_client_channel *ch;
  struct ana_error err;

  if (argc != 2) {
    fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
    return 2;
  }
  ch = ana_client_channel_create(argv[1], &err);
  if (!ch) {
    fprintf(stderr, "channel: %s\n", err.message);
    return 1;
  }
  test_health_check(ch);
  test_unimplemented(ch);
  test_events(ch);
  test_watch_stop(ch);
  test_watch_deadline(ch);
  test_reflection(ch);
  test_reflection_v1alpha(ch);
  test_cancel_from_thread(ch);
  test_bad_metadata(ch);
  test_unavailable(); /* while ch still holds the library */
  ana_client_channel_destroy(ch);

  printf("test_client_stubs: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
