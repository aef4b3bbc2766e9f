/* The REST + WebSocket bridge in-process: test handlers bound to methods of
 * the real contracts, served by the real bridge, driven over HTTP with
 * libcurl. Checks unary answers from other threads, request assembly (body
 * field, path variables, query parameters), metadata and peer, field
 * violations as google.rpc.BadRequest, deadlines (504), replies slower than
 * lws's pending timeout, client disconnects reaching the handler, concurrent
 * calls, keep-alive answers and disconnects racing WebSocket streams (the
 * wake-up list), a message shared by several WebSocket streams arriving in
 * each as its own encoding would (frames written together included), and a
 * graceful shutdown with a call in flight. File downloads (DownloadReport,
 * a stream of FileChunk sent by the file stream helper): headers, ETag and
 * 304, one Range (206, 416; several ranges get 200), errors before the
 * first byte, and a slow reader of 5 MB holding the sender back.
 *
 * With --serve the same handlers are served on a free port (printed as
 * "PORT <n>") until stdin closes, for the WebSocket tests in Python
 * (tests/integration/python/test_websocket.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_auth.h"
#include "ana_call.h"
#include "ana_file_stream.h"
#include "ana_json.h"
#include "ana_log.h"
#include "ana_restbridge.h"
#include "ana_clock.h"
#include "ana_test_util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct ana_restbridge *bridge;
static int port;
static atomic_int cancels;

/* --- TrackEvent: answers from another thread; the event id picks a behaviour --- */

static void *track_later(void *arg) {
  struct ana_call *call = arg;
  const Analytics__V1__TrackEventRequest *req = ana_call_user(call);
  const char *id = req->event && req->event->event_id ? req->event->event_id : "";
  char out[256];
  snprintf(out, sizeof out, "%s", id);
  if (strcmp(id, "slow") == 0) {
    ana_test_sleep_ms(6500); /* longer than lws's default pending timeout (5 s) */
  } else if (strcmp(id, "inflight") == 0) {
    ana_test_sleep_ms(800);
  } else {
    ana_test_sleep_ms(5);
  }
  if (strcmp(id, "violations") == 0) {
    ana_call_add_violation(call, "event.eventName", "is required");
    ana_call_add_violation(call, "event.timestamp", "is in the future");
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "event is invalid");
    return NULL;
  }
  if (strcmp(id, "unauthenticated") == 0) {
    ana_call_fail(call, ANA_STATUS_UNAUTHENTICATED, "credentials required");
    return NULL;
  }
  if (strncmp(id, "md:", 3) == 0) {
    const char *v = ana_call_metadata(call, id + 3);
    snprintf(out, sizeof out, "%s", v ? v : "missing");
  } else if (strcmp(id, "peer") == 0) {
    snprintf(out, sizeof out, "%s", ana_call_peer(call));
  } else if (strcmp(id, "deadline") == 0) {
    int64_t left = ana_call_remaining_ms(call);
    snprintf(out, sizeof out, "%s", left > 0 && left <= 5000 ? "ok" : "none");
  } else if (strcmp(id, "name") == 0) {
    snprintf(out, sizeof out, "%s", req->event->event_name ? req->event->event_name : "");
  }
  Analytics__V1__EventResult result = ANALYTICS__V1__EVENT_RESULT__INIT;
  Analytics__V1__TrackEventResponse resp = ANALYTICS__V1__TRACK_EVENT_RESPONSE__INIT;
  result.status = ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED;
  result.event_id = out;
  result.index = 7;
  resp.result = &result;
  ana_call_reply(call, &resp.base);
  return NULL;
}

static void track_event(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__TrackEventRequest *req = (const void *)request;
  ana_call_set_user(call, (void *)request);
  if (req->event && req->event->event_id && strcmp(req->event->event_id, "never") == 0)
    return; /* answered in on_cancel */
  ana_test_detach(track_later, call);
}

static void track_cancel(struct ana_call *call) {
  const Analytics__V1__TrackEventRequest *req = ana_call_user(call);
  atomic_fetch_add(&cancels, 1);
  if (req && req->event && req->event->event_id && strcmp(req->event->event_id, "never") == 0)
    ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
}

static const struct ana_handler h_track = {.on_request = track_event, .on_cancel = track_cancel};

/* --- metrics: path variables, query parameters, body field --- */

static void get_metric(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__GetMetricRequest *req = (const void *)request;
  Analytics__V1__Metric m = ANALYTICS__V1__METRIC__INIT;
  m.metric_id = req->metric_id;
  m.account_id = (char *)ana_call_principal(call)->account_id;
  ana_call_reply(call, &m.base);
}

static void list_metrics(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListMetricsRequest *req = (const void *)request;
  char token[160];
  snprintf(token, sizeof token, "%d:%s", req->page_size, req->page_token);
  Analytics__V1__ListMetricsResponse resp = ANALYTICS__V1__LIST_METRICS_RESPONSE__INIT;
  resp.next_page_token = token;
  ana_call_reply(call, &resp.base);
}

static void update_metric(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__UpdateMetricRequest *req = (const void *)request;
  Analytics__V1__Metric m = ANALYTICS__V1__METRIC__INIT;
  m.metric_id = req->metric_id;
  m.name = req->metric ? req->metric->name : "";
  m.n_dimensions = req->metric ? req->metric->n_dimensions : 0;
  m.dimensions = req->metric ? req->metric->dimensions : NULL;
  ana_call_reply(call, &m.base);
}

static const struct ana_handler h_get_metric = {.on_request = get_metric};
static const struct ana_handler h_list_metrics = {.on_request = list_metrics};
static const struct ana_handler h_update_metric = {.on_request = update_metric};

/* --- StreamMetric: the metric id picks a behaviour (see test_websocket.py) --- */

struct stream_job {
  struct ana_call *call;
  char id[128];
  atomic_bool cancelled;
};

/* What every "shared" stream sends: SHARED_FRAMES times the same update,
 * each stream with its own sequences (1, 2, ...), then one too big for a
 * 16-bit frame length. Built once (shared_init), like the hub's events. */
#define SHARED_FRAMES 40
#define SHARED_BIG 70000
static struct {
  Analytics__V1__MetricUpdate update, big;
  Analytics__V1__MetricUpdate__DimensionsEntry dim, big_dim;
  Analytics__V1__MetricUpdate__DimensionsEntry *dims[1], *big_dims[1];
  Google__Protobuf__Timestamp start;
  Google__Protobuf__DoubleValue value;
  char text[201], big_text[SHARED_BIG + 1];
  struct ana_call_shared *msg, *big_msg;
} shared;

static void shared_init(void) {
  analytics__v1__metric_update__init(&shared.update);
  analytics__v1__metric_update__dimensions_entry__init(&shared.dim);
  google__protobuf__timestamp__init(&shared.start);
  google__protobuf__double_value__init(&shared.value);
  memset(shared.text, 'd', sizeof shared.text - 1); /* over 125 bytes: a 16-bit length */
  shared.dim.key = "campaign";
  shared.dim.value = shared.text;
  shared.dims[0] = &shared.dim;
  shared.start.seconds = 1700000000;
  shared.value.value = 2.5;
  shared.update.metric_id = "shared";
  shared.update.bucket_start = &shared.start;
  shared.update.value = &shared.value;
  shared.update.n_dimensions = 1;
  shared.update.dimensions = shared.dims;
  shared.update.final = true;
  shared.big = shared.update;
  shared.big_dim = shared.dim;
  memset(shared.big_text, 'b', sizeof shared.big_text - 1);
  shared.big_dim.value = shared.big_text;
  shared.big_dims[0] = &shared.big_dim;
  shared.big.dimensions = shared.big_dims;
  shared.msg = ana_call_shared_create(&shared.update.base, true);
  shared.big_msg = ana_call_shared_create(&shared.big.base, true);
}

static int send_shared(struct stream_job *j, struct ana_call_shared *m, uint64_t seq) {
  for (;;) {
    int rc = ana_call_send_shared(j->call, m, seq);
    if (rc != ANA_ERR_FULL)
      return rc;
    if (atomic_load(&j->cancelled))
      return ANA_ERR_CLOSED;
    ana_test_sleep_ms(1);
  }
}

static int send_update(struct stream_job *j, uint64_t seq, const char *metric_id, bool big) {
  Analytics__V1__MetricUpdate u = ANALYTICS__V1__METRIC_UPDATE__INIT;
  Analytics__V1__MetricUpdate__DimensionsEntry e =
      ANALYTICS__V1__METRIC_UPDATE__DIMENSIONS_ENTRY__INIT;
  Analytics__V1__MetricUpdate__DimensionsEntry *ep = &e;
  static char pad[8193];
  u.sequence = seq;
  u.metric_id = (char *)metric_id;
  if (big) {
    memset(pad, 'x', sizeof pad - 1);
    e.key = "pad";
    e.value = pad;
    u.n_dimensions = 1;
    u.dimensions = &ep;
  }
  for (;;) {
    int rc = ana_call_send(j->call, &u.base);
    if (rc != ANA_ERR_FULL)
      return rc;
    if (atomic_load(&j->cancelled))
      return ANA_ERR_CLOSED;
    ana_test_sleep_ms(1); /* the queue holds its limit: wait for the client */
  }
}

static void *stream_run(void *arg) {
  struct stream_job *j = arg;
  struct ana_call *call = j->call;
  const char *id = j->id;
  if (strncmp(id, "count-", 6) == 0) {
    int n = atoi(id + 6);
    for (int i = 1; i <= n; i++)
      if (send_update(j, (uint64_t)i, id, false) < 0)
        break;
    ana_call_finish(call, NULL, NULL); /* after a cancel the status goes nowhere */
    return NULL; /* j lives in the call's arena: gone once the call is finished */
  } else if (strcmp(id, "shared") == 0) {
    uint64_t seq = 1;
    while (seq <= SHARED_FRAMES && send_shared(j, shared.msg, seq) == 0)
      seq++;
    if (seq > SHARED_FRAMES)
      send_shared(j, shared.big_msg, seq);
    ana_call_finish(call, NULL, NULL);
    return NULL;
  } else if (strcmp(id, "fail") == 0) {
    send_update(j, 1, id, false);
    send_update(j, 2, id, false);
    ana_call_add_violation(call, "metricId", "is broken");
    ana_call_fail(call, ANA_STATUS_INTERNAL, "boom");
    return NULL;
  } else if (strcmp(id, "auth") == 0) {
    const char *a = ana_call_metadata(call, "authorization");
    send_update(j, 1, a ? a : "missing", false);
    ana_call_finish(call, NULL, NULL);
    return NULL;
  } else if (strcmp(id, "flood") == 0) {
    for (uint64_t i = 1; !atomic_load(&j->cancelled); i++)
      if (send_update(j, i, id, true) < 0)
        break;
  } else if (strcmp(id, "firehose") == 0) {
    /* Small updates as fast as the client takes them: every one wakes the
     * lws thread (the dirty list), like the real-time hub's fan-out. */
    for (uint64_t i = 1; !atomic_load(&j->cancelled); i++)
      if (send_update(j, i, id, false) < 0)
        break;
  } else { /* "hold" and anything else: one update, then wait for the end */
    send_update(j, 1, id, false);
  }
  while (!atomic_load(&j->cancelled))
    ana_test_sleep_ms(5);
  return NULL;
}

static void stream_metric(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__StreamMetricRequest *req = (const void *)request;
  struct stream_job *j = ana_arena_calloc(ana_call_arena(call), 1, sizeof *j);
  j->call = call;
  snprintf(j->id, sizeof j->id, "%s", req->metric_id);
  atomic_init(&j->cancelled, false);
  ana_call_set_user(call, j);
  ana_test_detach(stream_run, j);
}

static void *stream_cancelled_later(void *arg) {
  ana_test_sleep_ms(20); /* let the sender notice, then end the call */
  ana_call_fail(arg, ANA_STATUS_CANCELLED, "cancelled");
  return NULL;
}

static void stream_cancel(struct ana_call *call) {
  struct stream_job *j = ana_call_user(call);
  atomic_fetch_add(&cancels, 1);
  atomic_store(&j->cancelled, true);
  const char *id = j->id;
  if (strncmp(id, "count-", 6) == 0 || strcmp(id, "fail") == 0 || strcmp(id, "auth") == 0 ||
      strcmp(id, "shared") == 0)
    return; /* these finish on their own */
  ana_test_detach(stream_cancelled_later, call);
}

static const struct ana_handler h_stream_metric = {.on_request = stream_metric,
                                                   .on_cancel = stream_cancel};

/* --- DownloadReport: files sent by the file stream helper --- */

#define BIG_SIZE (5 * 1024 * 1024)
#define SMALL_SIZE 1000

static char small_path[64] = "", big_path[64] = "";

static unsigned char file_byte(size_t i) {
  return (unsigned char)(i * 7 + i / 251);
}

static void make_file(char *path, size_t size) {
  strcpy(path, "/tmp/ana-dl-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  static unsigned char buf[65536];
  for (size_t off = 0; off < size; off += sizeof buf) {
    size_t n = size - off < sizeof buf ? size - off : sizeof buf;
    for (size_t i = 0; i < n; i++)
      buf[i] = file_byte(off + i);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
  }
  close(fd);
}

static void download(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__DownloadReportRequest *req = (const void *)request;
  const char *id = req->report_id;
  if (strcmp(id, "running") == 0) {
    ana_call_fail(call, ANA_STATUS_FAILED_PRECONDITION, "report run r1 is running, not completed");
    return;
  }
  if (strcmp(id, "small") != 0 && strcmp(id, "unicode") != 0 && strcmp(id, "big") != 0) {
    ana_call_fail(call, ANA_STATUS_NOT_FOUND, "report %s not found", id);
    return;
  }
  struct ana_file_stream_options o = {
      .path = strcmp(id, "big") == 0 ? big_path : small_path,
      .content_type = strcmp(id, "big") == 0 ? "application/pdf" : "text/csv",
      .filename = strcmp(id, "unicode") == 0 ? "Отчёт 2026-12.csv" : "report.csv",
      .etag = strcmp(id, "big") == 0 ? NULL : "\"v1\"",
      .offset = req->offset,
      .length = req->length,
      .if_none_match = req->if_none_match,
  };
  if (ana_file_stream_start(call, &o) < 0)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "too many downloads");
}

static const struct ana_handler h_download = {.on_request = download};

static void bind_handlers(void) {
  ana_auth_init("acct-test");
  shared_init();
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENT, &h_track);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC, &h_get_metric);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_LIST_METRICS, &h_list_metrics);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_UPDATE_METRIC, &h_update_metric);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC, &h_stream_metric);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_DOWNLOAD_REPORT, &h_download);
  if (!small_path[0]) {
    make_file(small_path, SMALL_SIZE);
    make_file(big_path, BIG_SIZE);
  }
}

static int health(void *ctx, bool *serving, struct ana_json_buf *extra) {
  (void)ctx;
  *serving = true;
  return ana_restbridge_health_add(extra, "store", "test");
}

static struct ana_restbridge *start_bridge(void) {
  struct ana_restbridge_options o = {
      .host = "127.0.0.1",
      .port = 0,
      .max_body_bytes = 64 * 1024,
      .stream_buffer_size = 16,
      .slow_consumer_ms = 1000,
      .cors_allowed_origins = "https://app.example",
      .health = health,
  };
  struct ana_error err;
  struct ana_restbridge *b = ana_restbridge_create(&o, &err);
  if (!b)
    fprintf(stderr, "bridge: %s\n", err.message);
  return b;
}

/* --- HTTP client --- */

struct resp {
  long status;
  char body[65536];
  size_t len;
  char headers[8192];
  size_t hlen;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  struct resp *r = ud;
  size_t k = size * n;
  size_t room = sizeof r->body - 1 - r->len;
  memcpy(r->body + r->len, p, k < room ? k : room);
  r->len += k < room ? k : room;
  r->body[r->len] = '\0';
  return k;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  struct resp *r = ud;
  size_t k = size * n;
  size_t room = sizeof r->headers - 1 - r->hlen;
  memcpy(r->headers + r->hlen, p, k < room ? k : room);
  r->hlen += k < room ? k : room;
  r->headers[r->hlen] = '\0';
  return k;
}

/* One request; headers is a NULL-terminated list of "Name: value". Returns
 * the curl result (0 = a response arrived). */
static int http(const char *method, const char *path, const char *body, const char *const *headers,
                long timeout_ms, struct resp *r) {
  char url[512];
  memset(r, 0, sizeof *r);
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  CURL *c = curl_easy_init();
  struct curl_slist *hl = NULL;
  for (const char *const *h = headers; h && *h; h++)
    hl = curl_slist_append(hl, *h);
  if (body)
    hl = curl_slist_append(hl, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  int rc = (int)curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
  curl_slist_free_all(hl);
  curl_easy_cleanup(c);
  return rc;
}

static void assert_contains(const char *hay, const char *needle) {
  if (!strstr(hay, needle)) {
    fprintf(stderr, "expected %s in: %s\n", needle, hay);
    fail();
  }
}

static void track(const char *id, const char *const *headers, long timeout_ms, struct resp *r) {
  char body[512];
  snprintf(body, sizeof body, "{\"eventId\":\"%s\",\"eventName\":\"page_view\"}", id);
  assert_int_equal(http("POST", "/api/events", body, headers, timeout_ms, r), 0);
}

/* --- tests --- */

static void unary_answer_from_another_thread(void **state) {
  (void)state;
  struct resp r;
  track("e-1", NULL, 5000, &r);
  assert_int_equal(r.status, 200);
  assert_contains(r.body, "\"eventId\":\"e-1\"");
  assert_contains(r.body, "\"status\":\"ACCEPTED\"");
  assert_contains(r.body, "\"index\":7");
  assert_contains(r.headers, "application/json");
  track("name", NULL, 5000, &r);
  assert_contains(r.body, "\"eventId\":\"page_view\"");
}

static void violations_become_bad_request_details(void **state) {
  (void)state;
  struct resp r;
  track("violations", NULL, 5000, &r);
  assert_int_equal(r.status, 400);
  assert_contains(r.body, "\"code\":3");
  assert_contains(r.body, "\"message\":\"event is invalid\"");
  assert_contains(r.body, "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
                          "\"fieldViolations\":[{\"field\":\"event.eventName\","
                          "\"description\":\"is required\"},{\"field\":\"event.timestamp\"");
  track("unauthenticated", NULL, 5000, &r);
  assert_int_equal(r.status, 401);
  /* The challenge is the bridge's own, never the status message. */
  assert_contains(r.headers, "www-authenticate: Bearer realm=\"analyticsd\"");
}

static void headers_become_metadata(void **state) {
  (void)state;
  struct resp r;
  const char *h1[] = {"X-Request-Id: req-7", NULL};
  track("md:x-request-id", h1, 5000, &r);
  assert_contains(r.body, "\"eventId\":\"req-7\"");
  assert_contains(r.headers, "x-request-id: req-7");
  const char *h2[] = {"Authorization: Bearer abc", NULL};
  track("md:authorization", h2, 5000, &r);
  assert_contains(r.body, "\"eventId\":\"Bearer abc\"");
  const char *h3[] = {"Grpc-Metadata-X-Client-Id: cli-1", NULL};
  track("md:x-client-id", h3, 5000, &r);
  assert_contains(r.body, "\"eventId\":\"cli-1\"");
  const char *h4[] = {"X-Forwarded-For: 10.1.2.3", NULL};
  track("md:x-forwarded-for", h4, 5000, &r);
  assert_contains(r.body, "\"eventId\":\"10.1.2.3, 127.0.0.1\"");
  track("peer", NULL, 5000, &r);
  assert_contains(r.body, "\"eventId\":\"ipv4:127.0.0.1:");
  const char *h5[] = {"Grpc-Timeout: 3S", NULL};
  track("deadline", h5, 5000, &r);
  assert_contains(r.body, "\"eventId\":\"ok\"");
  /* No X-Request-Id: one is made and echoed. */
  track("e-2", NULL, 5000, &r);
  assert_contains(r.headers, "x-request-id: ");
}

static void path_query_and_body_fill_the_request(void **state) {
  (void)state;
  struct resp r;
  assert_int_equal(http("GET", "/api/metrics/m%2041", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 200);
  assert_contains(r.body, "\"metricId\":\"m 41\"");
  assert_contains(r.body, "\"accountId\":\"acct-test\"");
  assert_int_equal(http("GET", "/api/metrics?pageSize=5&page_token=a%26b", NULL, NULL, 5000, &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_contains(r.body, "\"nextPageToken\":\"5:a&b\"");
  assert_int_equal(http("PUT", "/api/metrics/m-9", "{\"name\":\"n1\",\"dimensions\":[\"a\",\"b\"]}",
                        NULL, 5000, &r),
                   0);
  assert_int_equal(r.status, 200);
  assert_contains(r.body, "\"metricId\":\"m-9\"");
  assert_contains(r.body, "\"name\":\"n1\"");
  assert_contains(r.body, "\"dimensions\":[\"a\",\"b\"]");
}

static void bad_input_is_a_json_error(void **state) {
  (void)state;
  struct resp r;
  assert_int_equal(http("POST", "/api/events", "{\"eventId\":5}", NULL, 5000, &r), 0);
  assert_int_equal(r.status, 400);
  assert_contains(r.body, "\"code\":3");
  assert_contains(r.body, "google.rpc.BadRequest");
  assert_contains(r.body, "eventId");
  assert_int_equal(http("POST", "/api/events", "{\"eventId\":", NULL, 5000, &r), 0);
  assert_int_equal(r.status, 400);
  assert_int_equal(http("GET", "/api/metrics?bogus=1", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 400);
  assert_contains(r.body, "bogus");
  assert_int_equal(http("GET", "/api/metrics?pageSize=x", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 400);
  assert_contains(r.body, "pageSize");
  assert_int_equal(http("GET", "/api/nothing", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 404);
  assert_contains(r.body, "\"code\":5");
  assert_int_equal(http("PATCH", "/api/metrics/x", "{}", NULL, 5000, &r), 0);
  assert_int_equal(r.status, 405);
  assert_contains(r.headers, "allow: DELETE, GET, PUT");
  static char big[70 * 1024];
  memset(big, ' ', sizeof big - 1);
  assert_int_equal(http("POST", "/api/events", big, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 413);
  /* The connection still works after a body was discarded. */
  track("after-413", NULL, 5000, &r);
  assert_int_equal(r.status, 200);
}

static void health_cors_and_preflight(void **state) {
  (void)state;
  struct resp r;
  assert_int_equal(http("GET", "/health", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "{\"status\":\"ok\",\"store\":\"test\"}");
  const char *pre[] = {"Origin: https://app.example", "Access-Control-Request-Method: POST",
                       "Access-Control-Request-Headers: authorization, content-type", NULL};
  assert_int_equal(http("OPTIONS", "/api/events", NULL, pre, 5000, &r), 0);
  assert_int_equal(r.status, 204);
  assert_contains(r.headers, "access-control-allow-origin: https://app.example");
  assert_contains(r.headers, "access-control-allow-methods: POST, OPTIONS");
  assert_contains(r.headers, "access-control-allow-headers: authorization, content-type");
  const char *evil[] = {"Origin: https://evil.example", NULL};
  assert_int_equal(http("OPTIONS", "/api/events", NULL, evil, 5000, &r), 0);
  assert_int_equal(r.status, 403);
  const char *ok[] = {"Origin: https://app.example", NULL};
  track("cors", ok, 5000, &r);
  assert_contains(r.headers, "access-control-allow-origin: https://app.example");
}

static void deadline_answers_504_and_cancels(void **state) {
  (void)state;
  struct resp r;
  int before = atomic_load(&cancels);
  const char *h[] = {"Grpc-Timeout: 300m", NULL};
  int64_t t0 = ana_clock_mono_ms();
  track("never", h, 5000, &r);
  assert_int_equal(r.status, 504);
  assert_contains(r.body, "\"code\":4");
  assert_true(ana_clock_mono_ms() - t0 < 2000);
  for (int i = 0; i < 100 && atomic_load(&cancels) == before; i++)
    ana_test_sleep_ms(10);
  assert_true(atomic_load(&cancels) > before);
}

static void disconnect_cancels_the_call(void **state) {
  (void)state;
  struct resp r;
  int before = atomic_load(&cancels);
  char body[] = "{\"eventId\":\"never\"}";
  assert_int_not_equal(http("POST", "/api/events", body, NULL, 300, &r), 0); /* client timeout */
  for (int i = 0; i < 200 && atomic_load(&cancels) == before; i++)
    ana_test_sleep_ms(10);
  assert_true(atomic_load(&cancels) > before);
}

static void slow_reply_outlives_lws_timeouts(void **state) {
  (void)state;
  struct resp r;
  track("slow", NULL, 15000, &r);
  assert_int_equal(r.status, 200);
  assert_contains(r.body, "\"eventId\":\"slow\"");
}

static void *track_many(void *arg) {
  intptr_t failures = 0;
  (void)arg;
  for (int i = 0; i < 25; i++) {
    char id[32], want[64];
    struct resp *r = malloc(sizeof *r);
    snprintf(id, sizeof id, "c-%d", i);
    snprintf(want, sizeof want, "\"eventId\":\"%s\"", id);
    char body[128];
    snprintf(body, sizeof body, "{\"eventId\":\"%s\"}", id);
    if (http("POST", "/api/events", body, NULL, 5000, r) != 0 || r->status != 200 ||
        !strstr(r->body, want))
      failures++;
    free(r);
  }
  return (void *)failures;
}

static void concurrent_calls(void **state) {
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

/* --- keep-alive answers racing WebSocket streams --- */

#define RACE_STREAMS 24
#define RACE_CLIENTS 4
#define RACE_REQUESTS 150
#define RACE_HANGUPS 60

/* A raw WebSocket client: the upgrade, then whatever arrives is read and
 * dropped (server frames are unmasked; nothing needs parsing). */
static int ws_open(const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    goto fail;
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: restbridge.v1\r\n\r\n",
                   path, port);
  if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
    goto fail;
  char head[4096];
  size_t got = 0;
  while (got < sizeof head - 1) { /* byte by byte: frames may follow the headers */
    if (recv(fd, head + got, 1, 0) != 1)
      goto fail;
    got++;
    head[got] = '\0';
    if (got >= 4 && memcmp(head + got - 4, "\r\n\r\n", 4) == 0)
      break;
  }
  if (strncmp(head, "HTTP/1.1 101", 12) != 0)
    goto fail;
  return fd;
fail:
  if (fd >= 0)
    close(fd);
  return -1;
}

struct ws_drain {
  int fds[RACE_STREAMS];
  atomic_bool stop;
  size_t bytes;
};

static void *ws_drain_run(void *arg) {
  struct ws_drain *d = arg;
  struct pollfd p[RACE_STREAMS];
  char buf[16384];
  for (int i = 0; i < RACE_STREAMS; i++)
    p[i] = (struct pollfd){.fd = d->fds[i], .events = POLLIN};
  while (!atomic_load(&d->stop)) {
    if (poll(p, RACE_STREAMS, 50) <= 0)
      continue;
    for (int i = 0; i < RACE_STREAMS; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t n = recv(p[i].fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0)
        d->bytes += (size_t)n;
      else if (n == 0)
        p[i].fd = -1; /* closed by the server: stop watching it */
    }
  }
  return NULL;
}

/* Requests with deadlines, one keep-alive connection per client: each
 * answer is handed over on a handler thread (the dirty list) while the
 * streams keep waking the lws thread. */
static void *race_keepalive(void *arg) {
  intptr_t failures = 0, k = (intptr_t)arg;
  struct resp *r = malloc(sizeof *r);
  CURL *c = curl_easy_init();
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events", port);
  struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
  hl = curl_slist_append(hl, "Grpc-Timeout: 20S");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L); /* a lost answer, not a slow one */
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  for (int i = 0; i < RACE_REQUESTS; i++) {
    char body[128], want[64];
    snprintf(body, sizeof body, "{\"eventId\":\"k%d-%d\"}", (int)k, i);
    snprintf(want, sizeof want, "\"eventId\":\"k%d-%d\"", (int)k, i);
    memset(r, 0, sizeof *r);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(c) != CURLE_OK ||
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200 ||
        !strstr(r->body, want)) {
      fprintf(stderr, "keep-alive request %d of client %d: status %ld, body %s\n", i, (int)k,
              status, r->body);
      failures++;
    }
  }
  curl_slist_free_all(hl);
  curl_easy_cleanup(c);
  free(r);
  return (void *)failures;
}

/* Clients that send a request and hang up at once: the answer arrives for
 * a connection that is going or gone. */
static void *race_hangups(void *arg) {
  (void)arg;
  for (int i = 0; i < RACE_HANGUPS; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
      continue;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
      char req[256];
      const char body[] = "{\"eventId\":\"gone\"}";
      int n = snprintf(req, sizeof req,
                       "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Grpc-Timeout: %dm\r\nContent-Length: %zu\r\n\r\n%s",
                       1 + i % 8, sizeof body - 1, body);
      send(fd, req, (size_t)n, MSG_NOSIGNAL);
      if (i % 2)
        ana_test_sleep_ms(i % 7); /* sometimes while the handler answers */
    }
    close(fd);
  }
  return NULL;
}

/* Regression: with streams waking the lws thread continuously, a call put
 * back on the dirty list while the list it was on was being drained
 * rewrote its link, so the drain jumped into the new list: it dropped
 * references it did not own (heap-use-after-free in rb_conn_detach under
 * ASan) and lost the rest of its own list (answers never written). */
static void keepalive_answers_race_websocket_streams(void **state) {
  (void)state;
  static struct ws_drain d;
  memset(&d, 0, sizeof d);
  atomic_init(&d.stop, false);
  for (int i = 0; i < RACE_STREAMS; i++) {
    d.fds[i] = ws_open("/ws/metrics/firehose");
    assert_true(d.fds[i] >= 0);
  }
  pthread_t drain, clients[RACE_CLIENTS], hangups;
  pthread_create(&drain, NULL, ws_drain_run, &d);
  pthread_create(&hangups, NULL, race_hangups, NULL);
  for (intptr_t i = 0; i < RACE_CLIENTS; i++)
    pthread_create(&clients[i], NULL, race_keepalive, (void *)i);
  intptr_t failures = 0;
  for (int i = 0; i < RACE_CLIENTS; i++) {
    void *f;
    pthread_join(clients[i], &f);
    failures += (intptr_t)f;
  }
  pthread_join(hangups, NULL);
  atomic_store(&d.stop, true);
  pthread_join(drain, NULL);
  for (int i = 0; i < RACE_STREAMS; i++)
    close(d.fds[i]);
  assert_int_equal(failures, 0);
  assert_true(d.bytes > 0);
  /* The bridge still answers afterwards. */
  struct resp r;
  track("after-race", NULL, 10000, &r);
  assert_int_equal(r.status, 200);
}

/* Reads one WebSocket until the server closes it; fills texts (malloc'd,
 * NUL-terminated) with its text frames. Returns how many, or -1. */
static int ws_read_all(int fd, char **texts, int max) {
  size_t cap = 1 << 20, len = 0, off = 0;
  unsigned char *buf = malloc(cap);
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int n = 0;
  bool closed = false;
  while (!closed) {
    /* Every whole frame buffered so far. */
    for (;;) {
      if (len - off < 2)
        break;
      unsigned char *h = buf + off;
      size_t hl = 2, pl = h[1] & 0x7f;
      if (pl == 126) {
        hl = 4;
        if (len - off < hl)
          break;
        pl = (size_t)h[2] << 8 | h[3];
      } else if (pl == 127) {
        hl = 10;
        if (len - off < hl)
          break;
        pl = 0;
        for (int i = 0; i < 8; i++)
          pl = pl << 8 | h[2 + i];
      }
      if (len - off < hl + pl)
        break;
      if ((h[0] & 0x0f) == 0x8) {
        closed = true;
        break;
      }
      if ((h[0] & 0x0f) == 0x1 && n < max) {
        texts[n] = malloc(pl + 1);
        memcpy(texts[n], h + hl, pl);
        texts[n][pl] = '\0';
        n++;
      }
      off += hl + pl;
    }
    if (closed)
      break;
    if (len == cap) {
      memmove(buf, buf + off, len - off);
      len -= off;
      off = 0;
    }
    ssize_t r = recv(fd, buf + len, cap - len, 0);
    if (r <= 0) {
      n = -1;
      break;
    }
    len += (size_t)r;
  }
  free(buf);
  return n;
}

/* {"result":<update with this sequence>}, as the bridge writes one message
 * of its own. */
static char *own_frame(const Analytics__V1__MetricUpdate *u, uint64_t seq) {
  Analytics__V1__MetricUpdate copy = *u;
  copy.sequence = seq;
  struct ana_json_buf b;
  ana_json_buf_init(&b, 0);
  assert_int_equal(ana_json_encode(&b, &copy.base, NULL), 0);
  char *out = malloc(b.len + 12);
  snprintf(out, b.len + 12, "{\"result\":%s}", b.data + b.reserve);
  ana_json_buf_fini(&b);
  return out;
}

#define SHARED_STREAMS 3

/* Several streams send one shared message, each with its own sequences:
 * every frame is the text the message's own encoding would give, whether it
 * was spliced from the shared encoding, and whether it left alone or in one
 * write with others (lengths of 7, 16 and 64 bits included). */
static void shared_message_frames_match_their_own_encoding(void **state) {
  (void)state;
  int fds[SHARED_STREAMS];
  for (int i = 0; i < SHARED_STREAMS; i++) {
    fds[i] = ws_open("/ws/metrics/shared");
    assert_true(fds[i] >= 0);
  }
  for (int i = 0; i < SHARED_STREAMS; i++) {
    char *texts[SHARED_FRAMES + 2];
    int n = ws_read_all(fds[i], texts, SHARED_FRAMES + 2);
    close(fds[i]);
    assert_int_equal(n, SHARED_FRAMES + 1);
    for (int k = 0; k < n; k++) {
      char *want = own_frame(k < SHARED_FRAMES ? &shared.update : &shared.big, (uint64_t)k + 1);
      assert_string_equal(texts[k], want);
      free(want);
      free(texts[k]);
    }
  }
}

/* --- downloads --- */

static bool body_is_file_range(const struct resp *r, size_t start, size_t n) {
  if (r->len != n)
    return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)r->body[i] != file_byte(start + i))
      return false;
  return true;
}

static void download_sends_the_file_with_its_headers(void **state) {
  (void)state;
  struct resp r;
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(body_is_file_range(&r, 0, SMALL_SIZE));
  assert_contains(r.headers, "content-type: text/csv");
  assert_contains(r.headers, "content-length: 1000");
  assert_contains(r.headers, "etag: \"v1\"");
  assert_contains(r.headers, "accept-ranges: bytes");
  assert_contains(r.headers, "content-disposition: attachment; filename=\"report.csv\"");
  /* RFC 6266: an ASCII fallback and the UTF-8 name. */
  assert_int_equal(http("GET", "/api/reports/unicode/download", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 200);
  assert_contains(r.headers, "filename=\"_____ 2026-12.csv\"; "
                             "filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82%202026-12.csv");
}

static void download_if_none_match_answers_304(void **state) {
  (void)state;
  struct resp r;
  const char *same[] = {"If-None-Match: \"v1\"", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, same, 5000, &r), 0);
  assert_int_equal(r.status, 304);
  assert_int_equal(r.len, 0);
  assert_contains(r.headers, "etag: \"v1\"");
  const char *list[] = {"If-None-Match: \"x\", W/\"v1\"", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, list, 5000, &r), 0);
  assert_int_equal(r.status, 304);
  const char *other[] = {"If-None-Match: \"v0\"", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, other, 5000, &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(body_is_file_range(&r, 0, SMALL_SIZE));
}

static void download_one_range_answers_206(void **state) {
  (void)state;
  struct resp r;
  const char *mid[] = {"Range: bytes=10-19", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, mid, 5000, &r), 0);
  assert_int_equal(r.status, 206);
  assert_contains(r.headers, "content-range: bytes 10-19/1000");
  assert_contains(r.headers, "content-length: 10");
  assert_true(body_is_file_range(&r, 10, 10));
  const char *from[] = {"Range: bytes=990-", NULL}; /* what curl -C - sends */
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, from, 5000, &r), 0);
  assert_int_equal(r.status, 206);
  assert_contains(r.headers, "content-range: bytes 990-999/1000");
  assert_true(body_is_file_range(&r, 990, 10));
  const char *last[] = {"Range: bytes=-5", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, last, 5000, &r), 0);
  assert_int_equal(r.status, 206);
  assert_contains(r.headers, "content-range: bytes 995-999/1000");
  assert_true(body_is_file_range(&r, 995, 5));
  const char *past_end[] = {"Range: bytes=900-5000", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, past_end, 5000, &r), 0);
  assert_int_equal(r.status, 206);
  assert_contains(r.headers, "content-range: bytes 900-999/1000");
  assert_true(body_is_file_range(&r, 900, 100));
}

static void download_unsatisfiable_range_answers_416(void **state) {
  (void)state;
  struct resp r;
  const char *h[] = {"Range: bytes=1000-", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, h, 5000, &r), 0);
  assert_int_equal(r.status, 416);
  assert_contains(r.headers, "content-range: bytes */1000");
  assert_contains(r.body, "\"code\":11");
}

static void download_several_ranges_send_the_whole_file(void **state) {
  (void)state;
  struct resp r;
  const char *h[] = {"Range: bytes=0-1,5-6", NULL};
  assert_int_equal(http("GET", "/api/reports/small/download", NULL, h, 5000, &r), 0);
  assert_int_equal(r.status, 200);
  assert_true(body_is_file_range(&r, 0, SMALL_SIZE));
  assert_true(strstr(r.headers, "content-range") == NULL);
}

static void download_errors_before_the_first_byte_are_json(void **state) {
  (void)state;
  struct resp r;
  assert_int_equal(http("GET", "/api/reports/running/download", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 409);
  assert_contains(r.body, "\"code\":9");
  assert_contains(r.body, "is running");
  assert_contains(r.headers, "content-type: application/json");
  assert_int_equal(http("GET", "/api/reports/nope/download", NULL, NULL, 5000, &r), 0);
  assert_int_equal(r.status, 404);
  assert_contains(r.body, "\"code\":5");
}

/* The bridge's queued stream bytes (its /metrics gauge). */
static long long queued_bytes(void) {
  struct resp r;
  if (http("GET", "/metrics", NULL, NULL, 5000, &r) != 0)
    return -1;
  const char *p = strstr(r.body, "\nana_websocket_queue_budget_used_bytes ");
  return p ? atoll(p + strlen("\nana_websocket_queue_budget_used_bytes ")) : -1;
}

static void download_slow_reader_holds_the_sender_back(void **state) {
  (void)state;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int small = 16 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  static const char req[] = "GET /api/reports/big/download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
  static char buf[65536];
  ssize_t n = recv(fd, buf, 4096, 0);
  assert_true(n > 0);
  buf[n] = '\0';
  char *eoh = strstr(buf, "\r\n\r\n");
  assert_non_null(eoh);
  assert_non_null(strstr(buf, "content-length: 5242880"));
  size_t body = (size_t)n - (size_t)(eoh + 4 - buf);
  /* The reader stops: the sender must wait, its queue within the limit. */
  long long most = 0;
  for (int i = 0; i < 8; i++) {
    ana_test_sleep_ms(50);
    long long q = queued_bytes();
    assert_true(q >= 0);
    if (q > most)
      most = q;
  }
  fprintf(stderr, "slow reader: at most %lld bytes queued, %d stream(s) still sending\n", most,
          ana_file_stream_active());
  assert_true(most <= 256 * 1024 + 64 * 1024);
  assert_int_equal(ana_file_stream_active(), 1); /* still waiting for room */
  /* Then reads everything: every byte arrives, in order. */
  size_t pos = 0;
  bool same = true;
  for (size_t i = (size_t)(eoh + 4 - buf); i < (size_t)n; i++, pos++)
    same = same && (unsigned char)buf[i] == file_byte(pos);
  while (body < BIG_SIZE) {
    n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n; i++, pos++)
      same = same && (unsigned char)buf[i] == file_byte(pos);
    body += (size_t)n;
  }
  close(fd);
  assert_int_equal(body, BIG_SIZE);
  assert_true(same);
  for (int i = 0; i < 100 && (ana_file_stream_active() || queued_bytes() != 0); i++)
    ana_test_sleep_ms(10);
  assert_int_equal(ana_file_stream_active(), 0);
  assert_int_equal(queued_bytes(), 0);
}

static void *track_inflight(void *arg) {
  struct resp *r = arg;
  track("inflight", NULL, 5000, r);
  return NULL;
}

static void shutdown_drains_calls_in_flight(void **state) {
  (void)state;
  static struct resp r;
  pthread_t t;
  pthread_create(&t, NULL, track_inflight, &r);
  ana_test_sleep_ms(200);
  assert_int_equal(ana_restbridge_shutdown(bridge, 3000), 0);
  pthread_join(t, NULL);
  assert_int_equal(r.status, 200);
  assert_contains(r.body, "\"eventId\":\"inflight\"");
  ana_restbridge_destroy(bridge);
  bridge = NULL;
}

static int setup(void **state) {
  (void)state;
  ana_log_set_level(ANA_LOG_WARN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  bind_handlers();
  bridge = start_bridge();
  if (!bridge)
    return -1;
  port = ana_restbridge_port(bridge);
  return port > 0 ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  if (small_path[0]) {
    unlink(small_path);
    unlink(big_path);
  }
  ana_restbridge_destroy(bridge);
  ana_auth_fini();
  curl_global_cleanup();
  return 0;
}

static int serve(void) {
  ana_log_set_level(ANA_LOG_WARN);
  bind_handlers();
  bridge = start_bridge();
  if (!bridge)
    return 1;
  printf("PORT %d\n", ana_restbridge_port(bridge));
  fflush(stdout);
  char buf[64];
  while (fgets(buf, sizeof buf, stdin))
    ;
  int rc = ana_restbridge_shutdown(bridge, 2000);
  ana_restbridge_destroy(bridge);
  ana_auth_fini();
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--serve") == 0)
    return serve();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(unary_answer_from_another_thread),
      cmocka_unit_test(violations_become_bad_request_details),
      cmocka_unit_test(headers_become_metadata),
      cmocka_unit_test(path_query_and_body_fill_the_request),
      cmocka_unit_test(bad_input_is_a_json_error),
      cmocka_unit_test(health_cors_and_preflight),
      cmocka_unit_test(deadline_answers_504_and_cancels),
      cmocka_unit_test(disconnect_cancels_the_call),
      cmocka_unit_test(slow_reply_outlives_lws_timeouts),
      cmocka_unit_test(concurrent_calls),
      cmocka_unit_test(keepalive_answers_race_websocket_streams),
      cmocka_unit_test(shared_message_frames_match_their_own_encoding),
      cmocka_unit_test(download_sends_the_file_with_its_headers),
      cmocka_unit_test(download_if_none_match_answers_304),
      cmocka_unit_test(download_one_range_answers_206),
      cmocka_unit_test(download_unsatisfiable_range_answers_416),
      cmocka_unit_test(download_several_ranges_send_the_whole_file),
      cmocka_unit_test(download_errors_before_the_first_byte_are_json),
      cmocka_unit_test(download_slow_reader_holds_the_sender_back),
      /* Last: it stops the bridge. */
      cmocka_unit_test(shutdown_drains_calls_in_flight),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
