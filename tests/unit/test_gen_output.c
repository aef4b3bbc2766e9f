/* Unit tests of the generator's output: the method table, the route table,
 * the JSON names and the embedded descriptor set, as built from proto/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_json_names.h"
#include "ana_methods.h"
#include "ana_routes.h"
#include "google/protobuf/descriptor.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void method_table_has_paths_kinds_and_policy(void **state) {
  (void)state;
  const struct ana_method *m = &ana_methods[ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENT];
  assert_string_equal(m->path, "/analytics.v1.EventService/TrackEvent");
  assert_string_equal(m->service, "analytics.v1.EventService");
  assert_string_equal(m->name, "TrackEvent");
  assert_int_equal(m->kind, ANA_METHOD_UNARY);
  assert_ptr_equal(m->input, &analytics__v1__track_event_request__descriptor);
  assert_ptr_equal(m->output, &analytics__v1__track_event_response__descriptor);
  assert_string_equal(m->permission, "events:write");
  assert_string_equal(m->feature, "events");
  assert_false(m->audited);
  assert_int_equal(m->rate_cost, 1);

  m = &ana_methods[ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_CREATE_METRIC];
  assert_true(m->audited);
  assert_string_equal(m->permission, "metrics:write");
  assert_int_equal(ana_methods[ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_GENERATE_REPORT].rate_cost,
                   10);

  assert_int_equal(ana_methods[ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_INGEST_EVENTS].kind,
                   ANA_METHOD_BIDI_STREAMING);
  assert_int_equal(ana_methods[ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_IMPORT_EVENTS].kind,
                   ANA_METHOD_CLIENT_STREAMING);
  assert_int_equal(ana_methods[ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC].kind,
                   ANA_METHOD_SERVER_STREAMING);
  /* Health and reflection carry no policy. */
  assert_string_equal(ana_methods[ANA_METHOD_GRPC_HEALTH_V1_HEALTH_CHECK].permission, "");
}

static void every_analytics_method_names_a_feature_and_permission(void **state) {
  (void)state;
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++) {
    const struct ana_method *m = &ana_methods[i];
    assert_ptr_equal(ana_method_find(m->path), m);
    assert_int_equal(ana_method_id_of(m), i);
    if (strncmp(m->service, "analytics.v1.", 13) == 0) {
      assert_true(m->feature[0] != '\0');
      assert_true(m->permission[0] != '\0');
    }
  }
  assert_null(ana_method_find("/analytics.v1.EventService/Nope"));
}

static const struct ana_route *route(const char *verb, const char *pattern) {
  for (size_t i = 0; i < ana_route_count; i++)
    if (strcmp(ana_routes[i].verb, verb) == 0 && strcmp(ana_routes[i].pattern, pattern) == 0)
      return &ana_routes[i];
  return NULL;
}

static void routes_are_the_specs(void **state) {
  (void)state;
  static const struct {
    const char *verb, *pattern, *body;
    enum ana_method_id method;
  } want[] = {
      {"POST", "/api/events", "event", ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENT},
      {"POST", "/api/events/batch", "*", ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENTS},
      {"GET", "/api/events/search", "", ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_SEARCH_EVENTS},
      {"GET", "/api/metrics", "", ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_LIST_METRICS},
      {"POST", "/api/metrics", "metric", ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_CREATE_METRIC},
      {"GET", "/api/metrics/{metric_id}", "", ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC},
      {"GET", "/api/metrics/{metric_id}/data", "",
       ANA_METHOD_ANALYTICS_V1_METRIC_SERVICE_GET_METRIC_DATA},
      {"GET", "/api/reports", "", ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_LIST_REPORTS},
      {"POST", "/api/reports", "report", ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_GENERATE_REPORT},
      {"GET", "/api/reports/{report_id}", "", ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_GET_REPORT},
      {"GET", "/api/reports/{report_id}/download", "",
       ANA_METHOD_ANALYTICS_V1_REPORT_SERVICE_DOWNLOAD_REPORT},
      {"GET", "/api/alerts", "", ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_LIST_ALERTS},
      {"POST", "/api/alerts", "alert", ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_CREATE_ALERT},
      {"PUT", "/api/alerts/{alert_id}", "alert",
       ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_UPDATE_ALERT},
      {"DELETE", "/api/alerts/{alert_id}", "", ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_DELETE_ALERT},
      {"GET", "/api/alerts/{alert_id}/history", "",
       ANA_METHOD_ANALYTICS_V1_ALERT_SERVICE_LIST_ALERT_HISTORY},
      {"GET", "/ws/analytics", "", ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS},
      {"GET", "/ws/metrics/{metric_id}", "",
       ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_METRIC},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const struct ana_route *r = route(want[i].verb, want[i].pattern);
    if (!r)
      fail_msg("missing route %s %s", want[i].verb, want[i].pattern);
    assert_string_equal(r->body, want[i].body);
    assert_int_equal(r->method, want[i].method);
    bool stream = ana_methods[r->method].kind == ANA_METHOD_SERVER_STREAMING;
    bool file = ana_methods[r->method].output == &analytics__v1__file_chunk__descriptor;
    /* A stream of FileChunk is a download (raw HTTP), any other a WebSocket. */
    assert_int_equal(r->download, stream && file);
    assert_int_equal(r->websocket, stream && !file);
  }
  assert_true(route("GET", "/api/reports/{report_id}/download")->download);
}

/* Index of the first segment where a is a literal and b a variable, or the
 * reverse; the table must put the literal first. */
static void literal_segments_come_before_variables(void **state) {
  (void)state;
  for (size_t i = 0; i < ana_route_count; i++) {
    for (size_t j = i + 1; j < ana_route_count; j++) {
      const char *a = ana_routes[i].pattern, *b = ana_routes[j].pattern;
      /* Walk the common prefix of segments. */
      while (*a && *b) {
        const char *ea = strchr(a + 1, '/'), *eb = strchr(b + 1, '/');
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        bool va = a[1] == '{', vb = b[1] == '{';
        if (va != vb) {
          /* Later route has a literal where the earlier has a variable. */
          if (va && !vb)
            fail_msg("%s is listed before %s", ana_routes[i].pattern, ana_routes[j].pattern);
          break;
        }
        if (!va && (la != lb || memcmp(a, b, la) != 0))
          break;
        a += la;
        b += lb;
      }
    }
  }
}

static void json_names_follow_descriptor_order(void **state) {
  (void)state;
  const struct ana_json_message *j = ana_json_message_find(&analytics__v1__event__descriptor);
  assert_non_null(j);
  assert_int_equal(j->n_fields, analytics__v1__event__descriptor.n_fields);
  const char *expect[] = {"eventId",   "accountId",  "sessionId", "eventType", "eventName",
                          "timestamp", "properties", "context",   "sentAt",    "receivedAt"};
  for (size_t i = 0; i < j->n_fields; i++) {
    assert_string_equal(j->json_names[i], expect[i]);
    assert_int_equal(analytics__v1__event__descriptor.fields[i].id, (int)i + 1);
  }
  const struct ana_json_message *ctx =
      ana_json_message_find(&analytics__v1__event_context__descriptor);
  assert_string_equal(ctx->json_names[1], "userAgent");
  /* Map entries are flagged; every message of every contract is covered. */
  const struct ana_json_message *fe =
      ana_json_message_find(&google__protobuf__struct__fields_entry__descriptor);
  assert_non_null(fe);
  assert_true(fe->map_entry);
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++) {
    assert_non_null(ana_json_message_find(ana_methods[i].input));
    assert_non_null(ana_json_message_find(ana_methods[i].output));
  }
  for (size_t i = 1; i < ana_json_message_count; i++)
    assert_true(strcmp(ana_json_messages[i - 1].descriptor->name,
                       ana_json_messages[i].descriptor->name) < 0);
}

static void descriptor_set_holds_every_contract_with_options(void **state) {
  (void)state;
  Google__Protobuf__FileDescriptorSet *set = google__protobuf__file_descriptor_set__unpack(
      NULL, ana_descriptor_set_size, ana_descriptor_set);
  assert_non_null(set);
  bool events = false, health = false, descriptor = false;
  for (size_t i = 0; i < set->n_file; i++) {
    const Google__Protobuf__FileDescriptorProto *f = set->file[i];
    events |= strcmp(f->name, "analytics/v1/events.proto") == 0;
    health |= strcmp(f->name, "grpc/health/v1/health.proto") == 0;
    descriptor |= strcmp(f->name, "google/protobuf/descriptor.proto") == 0;
    /* The contracts keep their comments for reflection clients; the rest
     * is stripped. */
    if (strncmp(f->name, "analytics/", 10) == 0)
      assert_non_null(f->source_code_info);
    else
      assert_null(f->source_code_info);
    if (strcmp(f->name, "analytics/v1/events.proto") == 0) {
      /* The custom options survive as unknown fields of MethodOptions. */
      const Google__Protobuf__MethodDescriptorProto *track = f->service[0]->method[0];
      assert_string_equal(track->name, "TrackEvent");
      assert_non_null(track->options);
      assert_true(track->options->base.n_unknown_fields >= 2);
    }
  }
  assert_true(events && health && descriptor);
  google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
}

/* Runs the generator on a contract and returns protoc's exit status;
 * stderr goes to err_path. */
static int generate(const char *proto_text, const char *err_path) {
  char dir[] = "/tmp/ana-gen-XXXXXX";
  if (!mkdtemp(dir))
    return -1;
  char path[512], cmd[4096];
  snprintf(path, sizeof path, "%s/t.proto", dir);
  FILE *f = fopen(path, "w");
  fputs(proto_text, f);
  fclose(f);
  snprintf(cmd, sizeof cmd,
           "ASAN_OPTIONS=detect_leaks=0 protoc -I%s -I%s/proto "
           "-I/usr/share/gocode/src/github.com/gogo/googleapis "
           "-I/usr/include --plugin=protoc-gen-ana=%s --ana_out=%s t.proto 2>%s",
           dir, ANA_SOURCE_DIR, ANA_GENERATOR, dir, err_path);
  int rc = system(cmd);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    return -1;
  return rc;
}

#define PROTO_HEAD                                                                                 \
  "syntax = \"proto3\";\npackage t;\nimport \"google/api/annotations.proto\";\n"                   \
  "message Req { string id = 1; repeated string tags = 2; }\nmessage Resp {}\n"

static bool file_contains(const char *path, const char *needle) {
  char buf[4096] = {0};
  FILE *f = fopen(path, "r");
  if (!f)
    return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strstr(buf, needle) != NULL;
}

static void ambiguous_routes_fail_the_build(void **state) {
  (void)state;
  const char *err = "/tmp/ana-gen-ambiguous.err";
  int rc = generate(PROTO_HEAD "service S {\n"
                               "  rpc A(Req) returns (Resp) { option (google.api.http) = { get: "
                               "\"/x/{id}\" }; }\n"
                               "  rpc B(Req) returns (Resp) { option (google.api.http) = { get: "
                               "\"/x/{id}\" }; }\n}\n",
                    err);
  assert_int_not_equal(rc, 0);
  assert_true(file_contains(err, "ambiguous routes"));
}

static void bad_route_variables_fail_the_build(void **state) {
  (void)state;
  const char *err = "/tmp/ana-gen-badvar.err";
  assert_int_not_equal(generate(PROTO_HEAD "service S { rpc A(Req) returns (Resp) { option "
                                           "(google.api.http) = { get: \"/x/{nope}\" }; } }\n",
                                err),
                       0);
  assert_true(file_contains(err, "{nope} is not a field"));
  assert_int_not_equal(generate(PROTO_HEAD "service S { rpc A(Req) returns (Resp) { option "
                                           "(google.api.http) = { get: \"/x/{tags}\" }; } }\n",
                                err),
                       0);
  assert_true(file_contains(err, "non-repeated scalar"));
  assert_int_not_equal(generate(PROTO_HEAD "service S { rpc A(Req) returns (Resp) { option "
                                           "(google.api.http) = { get: \"/x\" body: \"*\" }; } }\n",
                                err),
                       0);
  assert_true(file_contains(err, "GET routes take no body"));
}

static void distinct_routes_generate(void **state) {
  (void)state;
  const char *err = "/tmp/ana-gen-ok.err";
  assert_int_equal(generate(PROTO_HEAD "service S {\n"
                                       "  rpc A(Req) returns (Resp) { option (google.api.http) = "
                                       "{ get: \"/x/{id}\" }; }\n"
                                       "  rpc B(Req) returns (Resp) { option (google.api.http) = "
                                       "{ get: \"/x/search\" }; }\n}\n",
                            err),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(method_table_has_paths_kinds_and_policy),
      cmocka_unit_test(every_analytics_method_names_a_feature_and_permission),
      cmocka_unit_test(routes_are_the_specs),
      cmocka_unit_test(literal_segments_come_before_variables),
      cmocka_unit_test(json_names_follow_descriptor_order),
      cmocka_unit_test(descriptor_set_holds_every_contract_with_options),
      cmocka_unit_test(ambiguous_routes_fail_the_build),
      cmocka_unit_test(bad_route_variables_fail_the_build),
      cmocka_unit_test(distinct_routes_generate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
