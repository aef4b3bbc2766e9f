/* Unit tests for the post-commit pipeline: declared order, names,
 * per-subscriber counters on /metrics, and the registrations it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_post_commit.h"
#include "ana_prom.h"
#include "ana_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Each hook appends its tag to the trace. */
static char trace[64];

struct probe {
  char tag;
  size_t last_n;
  long sleep_ns;
};

static void hook(void *ctx, const struct ana_event_record *records, size_t n) {
  struct probe *p = ctx;
  (void)records;
  size_t len = strlen(trace);
  if (len + 1 < sizeof trace) {
    trace[len] = p->tag;
    trace[len + 1] = '\0';
  }
  p->last_n = n;
  if (p->sleep_ns) {
    struct timespec ts = {0, p->sleep_ns};
    nanosleep(&ts, NULL);
  }
}

static const char *const names[] = {"event_names", "rollups", "realtime", "metric_streams"};

static char *render(void) {
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_render(&w);
  return w.data; /* caller frees */
}

static void runs_in_declared_order_not_registration_order(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_post_commit *pc = ana_post_commit_create(names, 4, &err);
  assert_non_null(pc);
  struct probe a = {'a', 0, 0}, b = {'b', 0, 0}, c = {'c', 0, 0}, d = {'d', 0, 0};
  assert_int_equal(ana_post_commit_register(pc, "metric_streams", hook, &d, &err), 0);
  assert_int_equal(ana_post_commit_register(pc, "rollups", hook, &b, &err), 0);
  assert_int_equal(ana_post_commit_register(pc, "event_names", hook, &a, &err), 0);
  assert_int_equal(ana_post_commit_register(pc, "realtime", hook, &c, &err), 0);
  struct ana_event_record recs[3];
  memset(recs, 0, sizeof recs);
  trace[0] = '\0';
  ana_post_commit_run(pc, recs, 3); /* before start: nothing runs */
  assert_string_equal(trace, "");
  ana_post_commit_start(pc);
  ana_post_commit_run(pc, recs, 3);
  ana_post_commit_run(pc, recs, 1);
  assert_string_equal(trace, "abcdabcd");
  assert_int_equal(a.last_n, 1);
  struct ana_post_commit_stats st;
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal(ana_post_commit_stats(pc, i, &st), 0);
    assert_string_equal(st.name, names[i]);
    assert_int_equal(st.registered, 1);
  }
  assert_int_equal(ana_post_commit_stats(pc, 4, &st), ANA_ERR_NOT_FOUND);
  ana_post_commit_destroy(pc);
}

static void counts_records_calls_and_time_per_subscriber(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_post_commit *pc = ana_post_commit_create(names, 4, &err);
  assert_non_null(pc);
  struct probe fast = {'f', 0, 0}, slow = {'s', 0, 2000000}; /* 2 ms per call */
  assert_int_equal(ana_post_commit_register(pc, "rollups", hook, &fast, &err), 0);
  assert_int_equal(ana_post_commit_register(pc, "realtime", hook, &slow, &err), 0);
  ana_post_commit_start(pc);
  struct ana_event_record recs[5];
  memset(recs, 0, sizeof recs);
  ana_post_commit_run(pc, recs, 5);
  ana_post_commit_run(pc, recs, 2);
  struct ana_post_commit_stats st;
  assert_int_equal(ana_post_commit_stats(pc, 0, &st), 0); /* event_names: declared, absent */
  assert_int_equal(st.registered, 0);
  assert_int_equal(st.calls, 0);
  assert_int_equal(ana_post_commit_stats(pc, 1, &st), 0);
  assert_int_equal(st.calls, 2);
  assert_int_equal(st.records, 7);
  assert_true(st.nanoseconds < 2000000); /* the slow one's sleep is not counted here */
  assert_int_equal(ana_post_commit_stats(pc, 2, &st), 0);
  assert_int_equal(st.records, 7);
  assert_true(st.nanoseconds >= 4000000);

  char *text = render();
  assert_non_null(text);
  assert_non_null(strstr(text, "# TYPE ana_post_commit_records_total counter\n"));
  assert_non_null(strstr(text, "ana_post_commit_records_total{subscriber=\"realtime\"} 7\n"));
  assert_non_null(strstr(text, "ana_post_commit_records_total{subscriber=\"event_names\"} 0\n"));
  assert_non_null(strstr(text, "ana_post_commit_calls_total{subscriber=\"rollups\"} 2\n"));
  const char *sec = strstr(text, "ana_post_commit_seconds_total{subscriber=\"realtime\"} ");
  assert_non_null(sec);
  double seconds = 0;
  assert_int_equal(sscanf(sec + strlen("ana_post_commit_seconds_total{subscriber=\"realtime\"} "),
                          "%lf", &seconds),
                   1);
  assert_true(seconds >= 0.004 && seconds < 1.0);
  free(text);
  ana_post_commit_destroy(pc);
  text = render(); /* gone from /metrics with the pipeline */
  assert_true(!text || !strstr(text, "ana_post_commit_"));
  free(text);
}

static void registering_after_start_is_refused(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_post_commit *pc = ana_post_commit_create(names, 4, &err);
  assert_non_null(pc);
  struct probe a = {'a', 0, 0}, late = {'l', 0, 0};
  assert_int_equal(ana_post_commit_register(pc, "rollups", hook, &a, &err), 0);
  ana_post_commit_start(pc);
  assert_int_equal(ana_post_commit_register(pc, "realtime", hook, &late, &err), ANA_ERR_CLOSED);
  assert_int_equal(err.code, ANA_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(err.message, "realtime"));
  struct ana_event_record rec;
  memset(&rec, 0, sizeof rec);
  trace[0] = '\0';
  ana_post_commit_run(pc, &rec, 1);
  assert_string_equal(trace, "a"); /* the late one never runs */
  ana_post_commit_destroy(pc);
}

static void unknown_and_repeated_names_are_refused(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_post_commit *pc = ana_post_commit_create(names, 4, &err);
  assert_non_null(pc);
  struct probe a = {'a', 0, 0};
  assert_int_equal(ana_post_commit_register(pc, "shipper", hook, &a, &err), ANA_ERR_NOT_FOUND);
  assert_non_null(strstr(err.message, "shipper"));
  assert_int_equal(ana_post_commit_register(pc, "rollups", hook, &a, &err), 0);
  assert_int_equal(ana_post_commit_register(pc, "rollups", hook, &a, &err), ANA_ERR_EXISTS);
  assert_non_null(strstr(err.message, "rollups"));
  ana_post_commit_destroy(pc);

  static const char *const twice[] = {"a", "b", "a"};
  assert_null(ana_post_commit_create(twice, 3, &err));
  assert_non_null(strstr(err.message, "a is declared twice"));
  static const char *const unnamed[] = {"a", ""};
  assert_null(ana_post_commit_create(unnamed, 2, &err));
  const char *many[ANA_POST_COMMIT_MAX + 1];
  for (size_t i = 0; i <= ANA_POST_COMMIT_MAX; i++)
    many[i] = "x";
  assert_null(ana_post_commit_create(many, ANA_POST_COMMIT_MAX + 1, &err));
  ana_post_commit_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(runs_in_declared_order_not_registration_order),
      cmocka_unit_test(counts_records_calls_and_time_per_subscriber),
      cmocka_unit_test(registering_after_start_is_refused),
      cmocka_unit_test(unknown_and_repeated_names_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
