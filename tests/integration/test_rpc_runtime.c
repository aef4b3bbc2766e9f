/* The gRPC runtime end to end, in one process: test handlers for every call
 * kind bound to methods of the real contracts, served by the real gRPC
 * transport, called through the generated client stubs. Checks asynchronous
 * finish from other threads, streaming back-pressure, kept messages,
 * cancellation, deadlines, metadata, error status, unbound methods, and a
 * graceful shutdown with calls in flight. A file sent by the file stream
 * helper as FileChunks reaches libanalytics' streaming download whole, in
 * order, resumed from an offset, and a current ETag sends no data.
 *
 * With --serve, DownloadReport (that file) and grpc.health.v1 are served on
 * a free port (printed as "PORT <n> FILE <path>") until stdin closes: the
 * upstream of the remote bridge's download tests
 * (tests/integration/python/test_downloads.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_auth.h"
#include "ana_builtin_services.h"
#include "ana_call.h"
#include "ana_client_stubs.h"
#include "ana_file_stream.h"
#include "analytics/analytics.h"
#include "ana_grpc_server.h"
#include "ana_log.h"
#include "ana_clock.h"
#include "ana_test_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct ana_grpc_server *server;
static struct ana_client_channel *channel;
static atomic_int server_cancels;
static atomic_int drains;

/* --- unary: TrackEvent answers from another thread --- */

static void *track_event_later(void *arg) {
  struct ana_call *call = arg;
  const Analytics__V1__TrackEventRequest *req = ana_call_user(call);
  const char *id = req->event && req->event->event_id ? req->event->event_id : "";
  ana_test_sleep_ms(strcmp(id, "slow") == 0 ? 300 : 20);
  Analytics__V1__EventResult result = ANALYTICS__V1__EVENT_RESULT__INIT;
  Analytics__V1__TrackEventResponse resp = ANALYTICS__V1__TRACK_EVENT_RESPONSE__INIT;
  result.status = ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED;
  result.event_id = (char *)id;
  if (strcmp(id, "echo-metadata") == 0) {
    const char *v = ana_call_metadata(call, "x-request-id");
    result.event_id = (char *)(v ? v : "missing");
  } else if (strcmp(id, "deadline") == 0) {
    int64_t left = ana_call_remaining_ms(call);
    result.index = left > 0 && left <= 5000 ? 1 : 0;
  } else if (strcmp(id, "principal") == 0) {
    result.event_id = (char *)ana_call_principal(call)->account_id;
  }
  resp.result = &result;
  ana_call_reply(call, &resp.base);
  return NULL;
}

static void track_event(struct ana_call *call, const ProtobufCMessage *request) {
  ana_call_set_user(call, (void *)request);
  ana_test_detach(track_event_later, call);
}

static int track(const char *id, const char *const *md, int64_t timeout_ms, char *out,
                 int32_t *index, struct ana_error *err) {
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  Analytics__V1__TrackEventRequest req = ANALYTICS__V1__TRACK_EVENT_REQUEST__INIT;
  ev.event_id = (char *)id;
  req.event = &ev;
  Analytics__V1__TrackEventResponse *resp = NULL;
  struct ana_call_options opts = {.timeout_ms = timeout_ms, .metadata = md};
  int rc = ana_stub_event_service_track_event(channel, &req, &resp, &opts, err);
  if (rc == 0) {
    snprintf(out, 64, "%s", resp->result->event_id);
    if (index)
      *index = resp->result->index;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return rc;
}

static void unary_finishes_from_another_thread(void **state) {
  (void)state;
  char out[64];
  struct ana_error err;
  assert_int_equal(track("e-1", NULL, 5000, out, NULL, &err), 0);
  assert_string_equal(out, "e-1");
}

static void unary_sees_metadata_deadline_and_principal(void **state) {
  (void)state;
  char out[64];
  int32_t index = 0;
  struct ana_error err;
  const char *const md[] = {"x-request-id", "req-42", NULL};
  assert_int_equal(track("echo-metadata", md, 5000, out, NULL, &err), 0);
  assert_string_equal(out, "req-42");
  assert_int_equal(track("deadline", NULL, 5000, out, &index, &err), 0);
  assert_int_equal(index, 1);
  assert_int_equal(track("principal", NULL, 5000, out, NULL, &err), 0);
  assert_string_equal(out, "acct-test");
}

static void *track_many(void *arg) {
  intptr_t failures = 0;
  (void)arg;
  for (int i = 0; i < 25; i++) {
    char id[32], out[64];
    struct ana_error err;
    snprintf(id, sizeof id, "c-%d", i);
    if (track(id, NULL, 5000, out, NULL, &err) != 0 || strcmp(out, id) != 0)
      failures++;
  }
  return (void *)failures;
}

static void unary_concurrent_calls(void **state) {
  (void)state;
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&t[i], NULL, track_many, NULL);
  for (int i = 0; i < 4; i++) {
    void *failures;
    pthread_join(t[i], &failures);
    assert_int_equal((intptr_t)failures, 0);
  }
}

/* --- server streaming: StreamAnalytics sends 100 messages under back-pressure --- */

static void *stream_updates(void *arg) {
  struct ana_call *call = arg;
  const Analytics__V1__StreamAnalyticsRequest *req = ana_call_user(call);
  bool forever = strcmp(req->event_name, "forever") == 0;
  for (uint64_t i = 1; i <= (forever ? 1 : 100); i++) {
    Analytics__V1__AnalyticsUpdate u = ANALYTICS__V1__ANALYTICS_UPDATE__INIT;
    u.sequence = i;
    int rc;
    while ((rc = ana_call_send(call, &u.base)) == ANA_ERR_FULL)
      ana_test_sleep_ms(1); /* the queue limit (8) holds us back */
    if (rc == ANA_ERR_CLOSED)
      break;
  }
  if (!forever)
    ana_call_reply(call, NULL);
  /* "forever" streams end through on_cancel or on_drain. */
  return NULL;
}

static void stream_analytics(struct ana_call *call, const ProtobufCMessage *request) {
  ana_call_set_user(call, (void *)request);
  ana_test_detach(stream_updates, call);
}

static void stream_cancelled(struct ana_call *call) {
  atomic_fetch_add(&server_cancels, 1);
  ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
}

struct seen {
  uint64_t next;
  int stop_after;
  bool in_order;
};

static int on_update(const Analytics__V1__AnalyticsUpdate *u, void *ctx) {
  struct seen *s = ctx;
  if (u->sequence != s->next)
    s->in_order = false;
  s->next++;
  return s->stop_after && (int)s->next > s->stop_after;
}

static void server_stream_in_order_with_backpressure(void **state) {
  (void)state;
  Analytics__V1__StreamAnalyticsRequest req = ANALYTICS__V1__STREAM_ANALYTICS_REQUEST__INIT;
  struct seen s = {1, 0, true};
  struct ana_error err;
  struct ana_call_options opts = {.timeout_ms = 10000};
  assert_int_equal(
      ana_stub_realtime_service_stream_analytics(channel, &req, on_update, &s, &opts, &err), 0);
  assert_int_equal(s.next, 101);
  assert_true(s.in_order);
}

static void wait_for(atomic_int *counter, int at_least) {
  for (int i = 0; i < 300 && atomic_load(counter) < at_least; i++)
    ana_test_sleep_ms(10);
}

static void client_cancel_reaches_the_handler(void **state) {
  (void)state;
  int before = atomic_load(&server_cancels);
  Analytics__V1__StreamAnalyticsRequest req = ANALYTICS__V1__STREAM_ANALYTICS_REQUEST__INIT;
  req.event_name = "forever";
  struct seen s = {1, 1, true};
  struct ana_error err;
  assert_int_equal(
      ana_stub_realtime_service_stream_analytics(channel, &req, on_update, &s, NULL, &err), 0);
  wait_for(&server_cancels, before + 1);
  assert_int_equal(atomic_load(&server_cancels), before + 1);
}

/* --- deadline: SearchEvents never answers by itself --- */

static void search_hangs(struct ana_call *call, const ProtobufCMessage *request) {
  (void)call;
  (void)request;
}

static void deadline_cancels_the_call(void **state) {
  (void)state;
  int before = atomic_load(&server_cancels);
  Analytics__V1__SearchEventsRequest req = ANALYTICS__V1__SEARCH_EVENTS_REQUEST__INIT;
  Analytics__V1__SearchEventsResponse *resp = NULL;
  struct ana_error err;
  struct ana_call_options opts = {.timeout_ms = 200};
  int64_t start = ana_clock_mono_ms();
  assert_true(ana_stub_event_service_search_events(channel, &req, &resp, &opts, &err) < 0);
  assert_int_equal(err.code, ANA_STATUS_DEADLINE_EXCEEDED);
  assert_true(ana_clock_mono_ms() - start < 3000);
  wait_for(&server_cancels, before + 1);
  assert_int_equal(atomic_load(&server_cancels), before + 1);
}

/* --- client streaming: ImportEvents counts, answers at half-close --- */

static void import_open(struct ana_call *call) {
  ana_call_set_user(call, ana_arena_calloc(ana_call_arena(call), 1, sizeof(long)));
}

static void import_message(struct ana_call *call, const ProtobufCMessage *message) {
  const Analytics__V1__IngestRequest *req = (const void *)message;
  *(long *)ana_call_user(call) += (long)req->n_events;
}

static void import_done(struct ana_call *call) {
  Analytics__V1__ImportEventsResponse resp = ANALYTICS__V1__IMPORT_EVENTS_RESPONSE__INIT;
  resp.accepted = *(long *)ana_call_user(call);
  ana_call_reply(call, &resp.base);
}

static void client_stream_one_answer(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_client_stream *s = ana_stub_event_service_import_events_open(channel, NULL, &err);
  assert_non_null(s);
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  Analytics__V1__Event *evs[5] = {&ev, &ev, &ev, &ev, &ev};
  Analytics__V1__IngestRequest req = ANALYTICS__V1__INGEST_REQUEST__INIT;
  req.n_events = 5;
  req.events = evs;
  for (int i = 0; i < 10; i++)
    assert_int_equal(ana_stub_event_service_import_events_send(s, &req, &err), 0);
  assert_int_equal(ana_client_stream_close_send(s, &err), 0);
  Analytics__V1__ImportEventsResponse *resp = NULL;
  assert_int_equal(ana_stub_event_service_import_events_recv(s, &resp, &err), 1);
  assert_int_equal(resp->accepted, 50);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  assert_int_equal(ana_client_stream_finish(s, &err), 0);
}

/* --- bidi: IngestEvents keeps each message and answers from a thread --- */

struct ingest_state {
  pthread_mutex_t mu;
  int pending;
  bool half_closed;
};

struct ingest_job {
  struct ana_call *call;
  struct ana_arena *arena;
  const Analytics__V1__IngestRequest *req;
};

static void ingest_maybe_finish(struct ana_call *call, struct ingest_state *st, int delta,
                                bool half_close) {
  pthread_mutex_lock(&st->mu);
  st->pending += delta;
  if (half_close)
    st->half_closed = true;
  bool done = st->half_closed && st->pending == 0;
  pthread_mutex_unlock(&st->mu);
  if (done) {
    pthread_mutex_destroy(&st->mu);
    free(st);
    ana_call_reply(call, NULL);
  }
}

static void *ingest_later(void *arg) {
  struct ingest_job *job = arg;
  ana_test_sleep_ms(rand() % 5);
  Analytics__V1__IngestResponse resp = ANALYTICS__V1__INGEST_RESPONSE__INIT;
  resp.batch_id = job->req->batch_id;
  resp.accepted = (int32_t)job->req->n_events;
  int rc;
  while ((rc = ana_call_send(job->call, &resp.base)) == ANA_ERR_FULL)
    ana_test_sleep_ms(1);
  ana_arena_destroy(job->arena);
  ingest_maybe_finish(job->call, ana_call_user(job->call), -1, false);
  free(job);
  return NULL;
}

static void ingest_open(struct ana_call *call) {
  struct ingest_state *st = calloc(1, sizeof *st);
  pthread_mutex_init(&st->mu, NULL);
  ana_call_set_user(call, st);
}

static void ingest_message(struct ana_call *call, const ProtobufCMessage *message) {
  struct ingest_job *job = malloc(sizeof *job);
  job->call = call;
  job->req = (const void *)message;
  job->arena = ana_call_keep_message(call);
  ingest_maybe_finish(call, ana_call_user(call), +1, false);
  ana_test_detach(ingest_later, job);
}

static void ingest_half_close(struct ana_call *call) {
  ingest_maybe_finish(call, ana_call_user(call), 0, true);
}

static void bidi_answers_every_batch(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_client_stream *s = ana_stub_event_service_ingest_events_open(channel, NULL, &err);
  assert_non_null(s);
  for (int i = 0; i < 20; i++) {
    char id[16];
    snprintf(id, sizeof id, "b%02d", i);
    Analytics__V1__IngestRequest req = ANALYTICS__V1__INGEST_REQUEST__INIT;
    req.batch_id = id;
    assert_int_equal(ana_stub_event_service_ingest_events_send(s, &req, &err), 0);
  }
  assert_int_equal(ana_client_stream_close_send(s, &err), 0);
  bool seen[20] = {false};
  int n = 0;
  Analytics__V1__IngestResponse *resp;
  while (ana_stub_event_service_ingest_events_recv(s, &resp, &err) == 1) {
    int i = atoi(resp->batch_id + 1);
    assert_true(i >= 0 && i < 20 && !seen[i]);
    seen[i] = true;
    n++;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  assert_int_equal(n, 20);
  assert_int_equal(ana_client_stream_finish(s, &err), 0);
}

/* --- errors --- */

static void get_metric_invalid(struct ana_call *call, const ProtobufCMessage *request) {
  (void)request;
  ana_call_add_violation(call, "metricId", "must not be empty");
  ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "metricId: must not be empty");
}

static void error_status_reaches_the_client(void **state) {
  (void)state;
  Analytics__V1__GetMetricRequest req = ANALYTICS__V1__GET_METRIC_REQUEST__INIT;
  Analytics__V1__Metric *resp = NULL;
  struct ana_error err;
  assert_true(ana_stub_metric_service_get_metric(channel, &req, &resp, NULL, &err) < 0);
  assert_null(resp);
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
  assert_string_equal(err.message, "metricId: must not be empty");
}

static void unbound_method_is_unimplemented(void **state) {
  (void)state;
  Analytics__V1__CreateAlertRequest req = ANALYTICS__V1__CREATE_ALERT_REQUEST__INIT;
  Analytics__V1__Alert *resp = NULL;
  struct ana_error err;
  assert_true(ana_stub_alert_service_create_alert(channel, &req, &resp, NULL, &err) < 0);
  assert_int_equal(err.code, ANA_STATUS_UNIMPLEMENTED);
  assert_string_equal(err.message, "alerts are not implemented yet");
}

static void list_alerts_empty(struct ana_call *call, const ProtobufCMessage *request) {
  (void)request;
  Analytics__V1__ListAlertsResponse resp = ANALYTICS__V1__LIST_ALERTS_RESPONSE__INIT;
  ana_call_reply(call, &resp.base);
}

static void finish_without_response_is_internal(void **state) {
  (void)state;
  /* ListAlerts' handler is bound below to reply with an empty response,
   * ListReports' to reply with none: a unary call must get INTERNAL. */
  Analytics__V1__ListReportsRequest req = ANALYTICS__V1__LIST_REPORTS_REQUEST__INIT;
  Analytics__V1__ListReportsResponse *resp = NULL;
  struct ana_error err;
  assert_true(ana_stub_report_service_list_reports(channel, &req, &resp, NULL, &err) < 0);
  assert_int_equal(err.code, ANA_STATUS_INTERNAL);
  Analytics__V1__ListAlertsRequest areq = ANALYTICS__V1__LIST_ALERTS_REQUEST__INIT;
  Analytics__V1__ListAlertsResponse *aresp = NULL;
  assert_int_equal(ana_stub_alert_service_list_alerts(channel, &areq, &aresp, NULL, &err), 0);
  protobuf_c_message_free_unpacked(&aresp->base, NULL);
}

static void list_reports_no_response(struct ana_call *call, const ProtobufCMessage *request) {
  (void)request;
  ana_call_reply(call, NULL);
}

/* --- graceful shutdown --- */

static void stream_metric(struct ana_call *call, const ProtobufCMessage *request) {
  (void)request;
  Analytics__V1__MetricUpdate u = ANALYTICS__V1__METRIC_UPDATE__INIT;
  u.sequence = 1;
  ana_call_send(call, &u.base);
}

static void stream_metric_drain(struct ana_call *call) {
  atomic_fetch_add(&drains, 1);
  ana_call_fail(call, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
}

static void *slow_track(void *arg) {
  struct ana_error *err = arg;
  char out[64];
  intptr_t rc = track("slow", NULL, 10000, out, NULL, err);
  return (void *)rc;
}

static int on_metric_update(const Analytics__V1__MetricUpdate *u, void *ctx) {
  (void)u;
  atomic_fetch_add((atomic_int *)ctx, 1);
  return 0;
}

static void *watch_metric(void *arg) {
  struct ana_error *err = arg;
  static atomic_int updates;
  Analytics__V1__StreamMetricRequest req = ANALYTICS__V1__STREAM_METRIC_REQUEST__INIT;
  intptr_t rc =
      ana_stub_realtime_service_stream_metric(channel, &req, on_metric_update, &updates, NULL, err);
  return (void *)rc;
}

static void shutdown_drains_calls_in_flight(void **state) {
  (void)state;
  struct ana_error unary_err, stream_err;
  pthread_t unary, stream;
  pthread_create(&stream, NULL, watch_metric, &stream_err);
  ana_test_sleep_ms(100);
  pthread_create(&unary, NULL, slow_track, &unary_err);
  ana_test_sleep_ms(100); /* the slow call is in the handler now */
  assert_int_equal(ana_grpc_server_shutdown(server, 5000), 0);
  void *rc;
  pthread_join(unary, &rc);
  assert_int_equal((intptr_t)rc, 0); /* answered, not cut off */
  pthread_join(stream, &rc);
  assert_true((intptr_t)rc < 0);
  assert_int_equal(stream_err.code, ANA_STATUS_UNAVAILABLE);
  assert_int_equal(atomic_load(&drains), 1);
  ana_grpc_server_destroy(server);
  server = NULL;
}

/* --- set-up --- */

static const struct ana_handler h_track = {.on_request = track_event};
static const struct ana_handler h_stream = {
    .on_request = stream_analytics, .on_cancel = stream_cancelled, .on_drain = stream_cancelled};
static const struct ana_handler h_search = {.on_request = search_hangs,
                                            .on_cancel = stream_cancelled};
static const struct ana_handler h_import = {
    .on_open = import_open, .on_message = import_message, .on_half_close = import_done};
static const struct ana_handler h_ingest = {
    .on_open = ingest_open, .on_message = ingest_message, .on_half_close = ingest_half_close};
static const struct ana_handler h_get_metric = {.on_request = get_metric_invalid};
static const struct ana_handler h_list_alerts = {.on_request = list_alerts_empty};
static const struct ana_handler h_list_reports = {.on_request = list_reports_no_response};
static const struct ana_handler h_stream_metric = {.on_request = stream_metric,
                                                   .on_drain = stream_metric_drain};

/* --- DownloadReport: the file stream helper over gRPC, read by libanalytics --- */

#define DL_SIZE (3 * 1024 * 1024 + 17)
static char dl_path[64];

static unsigned char dl_byte(int64_t i) {
  return (unsigned char)(i * 13 + i / 509);
}

static void download_report(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__DownloadReportRequest *req = (const void *)request;
  struct ana_file_stream_options o = {.path = dl_path,
                                      .content_type = "application/pdf",
                                      .filename = "campaign.pdf",
                                      .etag = "\"e1\"",
                                      .offset = req->offset,
                                      .length = req->length,
                                      .if_none_match = req->if_none_match};
  if (ana_file_stream_start(call, &o) < 0)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "busy");
}

static const struct ana_handler h_download = {.on_request = download_report};

struct dl_seen {
  int64_t next, pieces, bytes;
  bool in_order;
  char etag[16];
};

static int dl_piece(const analytics_file_chunk_t *ch, void *ctx) {
  struct dl_seen *s = ctx;
  if (s->pieces++ == 0) {
    snprintf(s->etag, sizeof s->etag, "%s", ch->etag);
    s->next = ch->offset;
    s->in_order = ch->total_size == DL_SIZE && strcmp(ch->filename, "campaign.pdf") == 0;
  }
  for (size_t i = 0; i < ch->size; i++)
    s->in_order = s->in_order && ch->data[i] == dl_byte(s->next + (int64_t)i);
  s->in_order = s->in_order && ch->offset == s->next;
  s->next += (int64_t)ch->size;
  s->bytes += (int64_t)ch->size;
  return 0;
}

static int dl_make_file(void) {
  strcpy(dl_path, "/tmp/ana-rpc-dl-XXXXXX");
  int fd = mkstemp(dl_path);
  FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
  if (!f)
    return -1;
  for (int64_t i = 0; i < DL_SIZE; i++)
    fputc(dl_byte(i), f);
  return fclose(f);
}

static void download_streams_to_libanalytics(void **state) {
  (void)state;
  assert_int_equal(dl_make_file(), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", ana_grpc_server_port(server));
  analytics_options_t opts = {.target = target};
  analytics_error_t err;
  analytics_client_t *c = analytics_client_new(&opts, &err);
  assert_non_null(c);

  struct dl_seen whole = {0};
  assert_int_equal(analytics_download_report(c, "r1", NULL, dl_piece, &whole, &err), 0);
  assert_int_equal(whole.bytes, DL_SIZE);
  assert_true(whole.in_order);
  assert_true(whole.pieces >= DL_SIZE / ANA_FILE_STREAM_CHUNK); /* streamed, not one message */
  assert_string_equal(whole.etag, "\"e1\"");

  analytics_download_options_t resume = {.offset = 1000000};
  struct dl_seen rest = {0};
  assert_int_equal(analytics_download_report(c, "r1", &resume, dl_piece, &rest, &err), 0);
  assert_int_equal(rest.bytes, DL_SIZE - 1000000);
  assert_true(rest.in_order);

  analytics_download_options_t same = {.if_none_match = "\"e1\""};
  struct dl_seen none = {0};
  assert_int_equal(analytics_download_report(c, "r1", &same, dl_piece, &none, &err), 0);
  assert_int_equal(none.pieces, 1);
  assert_int_equal(none.bytes, 0);

  analytics_download_options_t past = {.offset = DL_SIZE};
  struct dl_seen nothing = {0};
  assert_true(analytics_download_report(c, "r1", &past, dl_piece, &nothing, &err) < 0);
  assert_int_equal(err.code, ANALYTICS_STATUS_OUT_OF_RANGE);

  analytics_client_destroy(c);
  unlink(dl_path);
}

static int setup(void **state) {
  (void)state;
  ana_log_set_level(ANA_LOG_WARN);
  ana_auth_init("acct-test");
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENT, &h_track);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS, &h_stream);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_SEARCH_EVENTS, &h_search);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_IMPORT_EVENTS, &h_import);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_INGEST_EVENTS, &h_ingest);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC, &h_get_metric);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_LIST_ALERTS, &h_list_alerts);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_LIST_REPORTS, &h_list_reports);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC, &h_stream_metric);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_DOWNLOAD_REPORT, &h_download);
  struct ana_grpc_server_options o = {.host = "127.0.0.1",
                                      .port = 0,
                                      .threads = 2,
                                      .max_message_bytes = 1 << 20,
                                      .send_queue_max = 8};
  struct ana_error err;
  server = ana_grpc_server_create(&o, &err);
  if (!server)
    return -1;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", ana_grpc_server_port(server));
  channel = ana_client_channel_create(target, &err);
  return channel ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  ana_client_channel_destroy(channel);
  if (server) {
    ana_grpc_server_shutdown(server, 1000);
    ana_grpc_server_destroy(server);
  }
  ana_auth_fini();
  return 0;
}

static int serve(void) {
  ana_log_set_level(ANA_LOG_WARN);
  ana_auth_init("acct-test");
  ana_health_bind();
  ana_health_set_serving(true);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_DOWNLOAD_REPORT, &h_download);
  if (dl_make_file() < 0)
    return 1;
  struct ana_grpc_server_options o = {.host = "127.0.0.1",
                                      .port = 0,
                                      .threads = 2,
                                      .max_message_bytes = 1 << 20,
                                      .send_queue_max = 8};
  struct ana_error err;
  server = ana_grpc_server_create(&o, &err);
  if (!server)
    return 1;
  printf("PORT %d FILE %s\n", ana_grpc_server_port(server), dl_path);
  fflush(stdout);
  char buf[64];
  while (fgets(buf, sizeof buf, stdin))
    ;
  ana_grpc_server_shutdown(server, 1000);
  ana_grpc_server_destroy(server);
  unlink(dl_path);
  ana_auth_fini();
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--serve") == 0)
    return serve();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(unary_finishes_from_another_thread),
      cmocka_unit_test(unary_sees_metadata_deadline_and_principal),
      cmocka_unit_test(unary_concurrent_calls),
      cmocka_unit_test(server_stream_in_order_with_backpressure),
      cmocka_unit_test(client_cancel_reaches_the_handler),
      cmocka_unit_test(deadline_cancels_the_call),
      cmocka_unit_test(client_stream_one_answer),
      cmocka_unit_test(bidi_answers_every_batch),
      cmocka_unit_test(error_status_reaches_the_client),
      cmocka_unit_test(unbound_method_is_unimplemented),
      cmocka_unit_test(finish_without_response_is_internal),
      cmocka_unit_test(download_streams_to_libanalytics),
      /* Last: it stops the server. */
      cmocka_unit_test(shutdown_drains_calls_in_flight),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
