/* libanalytics (the public API only) against a running analyticsd: queued
 * tracking with flush, duplicates, rejections, an unreachable server, search,
 * and every other operation. Usage: test_client_lib HOST:PORT.
 * ANA_IMPLEMENTED_FEATURES (comma-separated, e.g. "events,metrics") lists the
 * features whose RPCs no longer answer UNIMPLEMENTED. */
#include "ana_test_util.h"
#include <analytics/analytics.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Evaluates call once; it must succeed. */
#define CHECK_OK(call, err)                                                                        \
  do {                                                                                             \
    int rc_ = (call);                                                                              \
    CHECK(rc_ == 0);                                                                               \
    if (rc_ != 0)                                                                                  \
      fprintf(stderr, "  rc %d (%s): %s \"%s\"\n", rc_, analytics_strerror(rc_),                   \
              analytics_status_name((err).code), (err).message);                                   \
  } while (0)

static const char *target;

struct failures {
  int undelivered, rejected;
  char field[256], message[512];
};

static void on_failure(const analytics_delivery_failure_t *f, void *ctx) {
  struct failures *fl = ctx;
  if (f->kind == ANALYTICS_FAILURE_REJECTED) {
    fl->rejected++;
    if (f->violation_count)
      snprintf(fl->field, sizeof fl->field, "%s", f->violations[0].field);
  } else {
    fl->undelivered++;
  }
  snprintf(fl->message, sizeof fl->message, "%s", f->message);
}

static analytics_client_t *client_on(const char *t, struct failures *fl) {
  analytics_options_t o;
  analytics_error_t err;
  analytics_client_t *c;

  analytics_options_init(&o);
  o.target = t;
  o.token = "test-token";
  o.flush_interval_ms = 50;
  o.on_delivery_failure = on_failure;
  o.delivery_ctx = fl;
  c = analytics_client_new(&o, &err);
  if (!c)
    fprintf(stderr, "client: %s\n", err.message);
  return c;
}

/* Counts the events of a search, following every page. */
static long count_search(analytics_client_t *c, analytics_search_t s) {
  analytics_error_t err;
  char token[1024] = "";
  long n = 0;

  for (int pages = 0; pages < 1000; pages++) {
    char *json = NULL;
    s.page_token = token;
    int rc = analytics_search_events(c, &s, &json, &err);
    CHECK_OK(rc, err);
    if (rc < 0)
      return -1;
    json_t *v = json_loads(json, 0, NULL);
    analytics_free(json);
    CHECK(v != NULL);
    if (!v)
      return -1;
    n += (long)json_array_size(json_object_get(v, "events"));
    const char *next = json_string_value(json_object_get(v, "nextPageToken"));
    snprintf(token, sizeof token, "%s", next ? next : "");
    json_decref(v);
    if (!token[0])
      break;
  }
  return n;
}

/* (1) 1,000 events through the queue, flushed: all accepted and searchable. */
static void test_track_thousand(void) {
  struct failures fl = {0};
  analytics_client_t *c = client_on(target, &fl);
  analytics_error_t err;
  analytics_stats_t st;
  char run[64];
  double t0, slowest = 0;

  if (!c)
    return;
  snprintf(run, sizeof run, "run-%ld-%d", (long)time(NULL), (int)getpid());
  for (int i = 0; i < 1000; i++) {
    analytics_event_t *ev = analytics_event_new("message", "message_sent");
    analytics_event_set_string(ev, "runId", run);
    analytics_event_set_number(ev, "seq", i);
    t0 = ana_test_now_s();
    int rc = analytics_track(c, ev, &err);
    if (ana_test_now_s() - t0 > slowest)
      slowest = ana_test_now_s() - t0;
    CHECK_OK(rc, err);
    analytics_event_destroy(ev);
  }
  CHECK(slowest < 2.0); /* track never waits for the network (bound is generous: no timing test) */
  int rc = analytics_flush(c, 30000, &err);
  CHECK_OK(rc, err);
  analytics_stats(c, &st);
  CHECK(st.tracked == 1000);
  CHECK(st.accepted == 1000);
  CHECK(st.sent == 1000);
  CHECK(st.rejected == 0 && st.failed == 0 && st.dropped == 0);
  CHECK(st.queued == 0);
  CHECK(st.batches >= 10); /* batch_size 100 */
  if (st.accepted != 1000)
    fprintf(stderr, "  accepted %llu, duplicates %llu, failed %llu (%s)\n",
            (unsigned long long)st.accepted, (unsigned long long)st.duplicates,
            (unsigned long long)st.failed, fl.message);

  const char *keys[] = {"runId"}, *values[] = {run};
  analytics_search_t s = {
      .property_keys = keys, .property_values = values, .property_count = 1, .page_size = 100};
  long found = count_search(c, s);
  CHECK(found == 1000);
  if (found != 1000)
    fprintf(stderr, "  search found %ld of 1000\n", found);
  analytics_client_destroy(c);
}

/* (2) Re-sending events with the same ids: DUPLICATE, counted as delivered. */
static void test_duplicates(void) {
  struct failures fl = {0};
  char ids[10][ANALYTICS_EVENT_ID_SIZE];
  analytics_error_t err;
  analytics_stats_t st;

  for (int i = 0; i < 10; i++)
    CHECK(analytics_generate_event_id(ids[i]) == 0);
  for (int round = 0; round < 2; round++) {
    analytics_client_t *c = client_on(target, &fl);
    if (!c)
      return;
    for (int i = 0; i < 10; i++) {
      analytics_event_t *ev = analytics_event_new("test", "duplicate_check");
      CHECK(analytics_event_set_id(ev, ids[i]) == 0);
      CHECK_OK(analytics_track(c, ev, &err), err);
      analytics_event_destroy(ev);
    }
    CHECK_OK(analytics_flush(c, 10000, &err), err);
    analytics_stats(c, &st);
    CHECK(st.accepted == (round == 0 ? 10u : 0u));
    CHECK(st.duplicates == (round == 0 ? 0u : 10u));
    if (st.accepted + st.duplicates != 10)
      fprintf(stderr, "  round %d: accepted %llu, duplicates %llu, failed %llu (%s)\n", round,
              (unsigned long long)st.accepted, (unsigned long long)st.duplicates,
              (unsigned long long)st.failed, fl.message);
    analytics_client_destroy(c);
  }
}

/* (3) An invalid event is rejected: reported with its field, counted. */
static void test_rejected(void) {
  struct failures fl = {0};
  analytics_client_t *c = client_on(target, &fl);
  analytics_error_t err;
  analytics_stats_t st;
  char long_name[200];

  if (!c)
    return;
  memset(long_name, 'x', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  analytics_event_t *bad = analytics_event_new("test", long_name);
  analytics_event_t *good = analytics_event_new("test", "fine");
  CHECK_OK(analytics_track(c, bad, &err), err);
  CHECK_OK(analytics_track(c, good, &err), err);
  CHECK_OK(analytics_flush(c, 10000, &err), err); /* rejected counts as resolved */
  analytics_stats(c, &st);
  CHECK(st.rejected == 1);
  CHECK(st.accepted == 1);
  if (st.rejected != 1 || st.accepted != 1)
    fprintf(stderr, "  accepted %llu, rejected %llu, failed %llu (%s)\n",
            (unsigned long long)st.accepted, (unsigned long long)st.rejected,
            (unsigned long long)st.failed, fl.message);
  CHECK(fl.rejected == 1);
  CHECK(strstr(fl.field, "eventName") != NULL);
  if (!strstr(fl.field, "eventName"))
    fprintf(stderr, "  violation field \"%s\", message \"%s\"\n", fl.field, fl.message);

  /* The synchronous form fails as a whole with the server's status. */
  char *json = NULL;
  int rc = analytics_track_sync(c, bad, &json, &err);
  CHECK(rc == ANALYTICS_ERR_SERVER);
  CHECK(err.code == ANALYTICS_STATUS_INVALID_ARGUMENT);
  CHECK(json == NULL);
  rc = analytics_track_sync(c, good, &json, &err);
  CHECK_OK(rc, err);
  CHECK(json && strstr(json, "\"ACCEPTED\""));
  analytics_free(json);
  analytics_event_destroy(bad);
  analytics_event_destroy(good);
  analytics_client_destroy(c);
}

/* (4) A server that is down: track returns at once, the batch is retried with
 * backoff, and destroy gives up after its close timeout, reporting each event. */
static void test_server_down(void) {
  struct failures fl = {0};
  analytics_options_t o;
  analytics_error_t err;
  analytics_stats_t st;
  char dead[64];
  double t0;

  snprintf(dead, sizeof dead, "127.0.0.1:%d", ana_test_unused_port());
  analytics_options_init(&o);
  o.target = dead;
  o.flush_interval_ms = 10;
  o.max_retries = 1000;
  o.backoff_base_ms = 10;
  o.backoff_max_ms = 50;
  o.close_timeout_ms = 300;
  o.on_delivery_failure = on_failure;
  o.delivery_ctx = &fl;
  analytics_client_t *c = analytics_client_new(&o, &err);
  CHECK(c != NULL);
  if (!c)
    return;
  analytics_event_t *ev = analytics_event_new("test", "offline");
  t0 = ana_test_now_s();
  for (int i = 0; i < 5; i++)
    CHECK_OK(analytics_track(c, ev, &err), err);
  CHECK(ana_test_now_s() - t0 < 2.0); /* returns at once, not after a connect timeout */
  analytics_event_destroy(ev);

  int rc = analytics_flush(c, 500, &err);
  CHECK(rc == ANALYTICS_ERR_TIMEOUT);
  CHECK(err.code == ANALYTICS_STATUS_DEADLINE_EXCEEDED);
  analytics_stats(c, &st);
  CHECK(st.retries >= 2);
  CHECK(st.queued == 5);
  if (st.queued != 5)
    fprintf(stderr, "  queued %llu, failed %llu, retries %llu (%s)\n",
            (unsigned long long)st.queued, (unsigned long long)st.failed,
            (unsigned long long)st.retries, fl.message);
  CHECK(st.sent == 0);

  t0 = ana_test_now_s();
  analytics_client_destroy(c);
  CHECK(ana_test_now_s() - t0 < 20.0);
  CHECK(fl.undelivered == 5);

  /* Synchronous calls fail at once with UNAVAILABLE. */
  o.max_retries = -1;
  c = analytics_client_new(&o, &err);
  bool serving = true;
  rc = analytics_health(c, NULL, &serving, &err);
  CHECK(rc == ANALYTICS_ERR_UNAVAILABLE);
  CHECK(err.code == ANALYTICS_STATUS_UNAVAILABLE);
  CHECK(!serving);
  analytics_client_destroy(c);
}

/* True when ANA_IMPLEMENTED_FEATURES names feature. */
static bool implemented(const char *feature) {
  const char *list = getenv("ANA_IMPLEMENTED_FEATURES");
  char buf[512], *save = NULL;

  if (!list)
    return false;
  snprintf(buf, sizeof buf, "%s", list);
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
    if (!strcmp(t, feature))
      return true;
  return false;
}

/* An operation of a feature not built yet: a negative code, UNIMPLEMENTED,
 * and the server's message naming the feature. */
static void check_unimplemented(const char *what, const char *feature, int rc, char *json,
                                const analytics_error_t *err) {
  if (implemented(feature)) {
    CHECK(rc != ANALYTICS_ERR_UNIMPLEMENTED);
    if (rc == ANALYTICS_ERR_UNIMPLEMENTED)
      fprintf(stderr, "  %s: %s\n", what, err->message);
  } else {
    char expect[128];
    snprintf(expect, sizeof expect, "%s are not implemented yet", feature);
    CHECK(rc == ANALYTICS_ERR_UNIMPLEMENTED);
    CHECK(err->code == ANALYTICS_STATUS_UNIMPLEMENTED);
    CHECK(strstr(err->message, expect) != NULL);
    CHECK(json == NULL);
    if (rc != ANALYTICS_ERR_UNIMPLEMENTED || !strstr(err->message, expect))
      fprintf(stderr, "  %s: rc %d, %s \"%s\"\n", what, rc, analytics_status_name(err->code),
              err->message);
  }
  analytics_free(json);
}

static int stop_at_once(const char *json, void *ctx) {
  (void)json;
  (void)ctx;
  return 1;
}

/* (5) Every other operation of the contracts. */
static void test_other_operations(void) {
  struct failures fl = {0};
  analytics_client_t *c = client_on(target, &fl);
  analytics_error_t err;
  char *json = NULL;
  int rc;
  const char *dims[] = {"campaignId"}, *channels[] = {"email"};
  analytics_metric_t m = {.name = "m",
                          .type = "gauge",
                          .formula = "a",
                          .dimensions = dims,
                          .dimension_count = 1,
                          .filters_json = "[{\"field\":\"eventName\","
                                          "\"op\":\"eq\",\"value\":\"x\"}]"};
  analytics_report_t r = {
      .template_name = "t", .format = "csv", .parameters_json = "{\"a\":{\"b\":1}}"};
  analytics_alert_t a = {.name = "a",
                         .metric = "m",
                         .condition = "greater_than",
                         .threshold = 1,
                         .channels = channels,
                         .channel_count = 1};
  analytics_metric_query_t q = {.metric_id = "none", .interval = "1h", .from_ms = 1700000000000};

  if (!c)
    return;
#define UNIMPL(feature, call, out)                                                                 \
  do {                                                                                             \
    json = NULL;                                                                                   \
    rc = call;                                                                                     \
    check_unimplemented(#call, feature, rc, out, &err);                                            \
  } while (0)
  UNIMPL("metrics", analytics_create_metric(c, &m, &json, &err), json);
  UNIMPL("metrics", analytics_list_metrics(c, 10, NULL, &json, &err), json);
  UNIMPL("metrics", analytics_get_metric(c, "none", &json, &err), json);
  UNIMPL("metrics", analytics_update_metric(c, "none", &m, &json, &err), json);
  UNIMPL("metrics", analytics_delete_metric(c, "none", &err), NULL);
  UNIMPL("metrics", analytics_get_metric_data(c, &q, &json, &err), json);
  UNIMPL("reports", analytics_generate_report(c, &r, &json, &err), json);
  UNIMPL("reports", analytics_list_reports(c, 0, NULL, &json, &err), json);
  UNIMPL("reports", analytics_get_report(c, "none", &json, &err), json);
  UNIMPL("reports", analytics_download_report_to_file(c, "none", NULL, stdout, NULL, &err), NULL);
  UNIMPL("alerts", analytics_create_alert(c, &a, &json, &err), json);
  UNIMPL("alerts", analytics_list_alerts(c, 0, NULL, &json, &err), json);
  UNIMPL("alerts", analytics_get_alert(c, "none", &json, &err), json);
  UNIMPL("alerts", analytics_update_alert(c, "none", &a, &json, &err), json);
  UNIMPL("alerts", analytics_delete_alert(c, "none", &err), NULL);
  UNIMPL("alerts", analytics_list_alert_history(c, "none", 5, NULL, &json, &err), json);
  /* Streams: UNIMPLEMENTED naming the feature, or (once a stream is served)
   * a first message, after which the callback ends it. A stream that is
   * served but silent would block: run.sh bounds the test with a timeout.
   * StreamMetric is served: the metric "none" answers NOT_FOUND. */
  rc = analytics_stream_metric(c, "none", stop_at_once, NULL, &err);
  CHECK(rc != 0 && err.code == ANALYTICS_STATUS_NOT_FOUND);
  analytics_stream_filter_t f = {.event_type = "message", .include_events = true};
  rc = analytics_stream_analytics(c, &f, stop_at_once, NULL, &err);
  if (rc != 0)
    check_unimplemented("analytics_stream_analytics", "real-time streams", rc, NULL, &err);
#undef UNIMPL

  /* Local argument checks never reach the server. */
  rc = analytics_get_metric(c, NULL, &json, &err);
  CHECK(rc == ANALYTICS_ERR_INVALID && err.code == ANALYTICS_STATUS_INVALID_ARGUMENT);
  m.filters_json = "[not json";
  rc = analytics_create_metric(c, &m, &json, &err);
  CHECK(rc == ANALYTICS_ERR_INVALID && strstr(err.message, "filters") != NULL);

  /* Health, and the generic call by method path. */
  bool serving = false;
  rc = analytics_health(c, "", &serving, &err);
  CHECK_OK(rc, err);
  CHECK(serving);
  rc = analytics_call(c, "/analytics.v1.EventService/SearchEvents", "{\"pageSize\": 1}", &json,
                      &err);
  CHECK_OK(rc, err);
  CHECK(json && strstr(json, "\"events\""));
  analytics_free(json);
  rc = analytics_call(c, "/analytics.v1.Nope/Nope", NULL, &json, &err);
  CHECK(rc == ANALYTICS_ERR_INVALID && json == NULL);
  rc = analytics_call(c, "/analytics.v1.EventService/SearchEvents", "{\"nope\": 1}", &json, &err);
  CHECK(rc == ANALYTICS_ERR_INVALID && strstr(err.message, "nope") != NULL);
  analytics_client_destroy(c);
}

/* (6) proto_max_depth: a reply nested deeper than the client's limit is an
 * error (INTERNAL), not decoded; the default (100) takes it. A search
 * result with a property is nested 4 deep (response, event, properties,
 * entry, value). */
static void test_reply_depth(void) {
  analytics_options_t o;
  analytics_error_t err;
  char *json = NULL;

  analytics_options_init(&o);
  CHECK(o.proto_max_depth == 100);
  o.target = target;
  o.token = "test-token";
  o.proto_max_depth = 1001;
  CHECK(analytics_client_new(&o, &err) == NULL);
  CHECK(err.code == ANALYTICS_STATUS_INVALID_ARGUMENT && strstr(err.message, "proto_max_depth"));

  analytics_options_init(&o);
  o.target = target;
  o.token = "test-token";
  analytics_client_t *deflt = analytics_client_new(&o, &err);
  o.proto_max_depth = 3;
  analytics_client_t *shallow = analytics_client_new(&o, &err);
  CHECK(deflt && shallow);
  if (!deflt || !shallow)
    goto out;
  analytics_event_t *ev = analytics_event_new("test", "reply_depth");
  CHECK(analytics_event_set_string(ev, "k", "v") == 0);
  CHECK_OK(analytics_track_sync(deflt, ev, &json, &err), err);
  analytics_free(json);
  json = NULL;
  analytics_event_destroy(ev);

  analytics_search_t s = {.event_name = "reply_depth", .page_size = 1};
  CHECK_OK(analytics_search_events(deflt, &s, &json, &err), err);
  CHECK(json && strstr(json, "\"k\""));
  analytics_free(json);
  json = NULL;
  int rc = analytics_search_events(shallow, &s, &json, &err);
  CHECK(rc == ANALYTICS_ERR_INTERNAL && json == NULL);
  if (rc != ANALYTICS_ERR_INTERNAL)
    fprintf(stderr, "  rc %d (%s): %s\n", rc, analytics_strerror(rc), err.message);
out:
  analytics_client_destroy(deflt);
  analytics_client_destroy(shallow);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_client_lib HOST:PORT\n");
    return 2;
  }
  target = argv[1];
  test_track_thousand();
  test_duplicates();
  test_rejected();
  test_server_down();
  test_other_operations();
  test_reply_depth();
  printf("test_client_lib: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
