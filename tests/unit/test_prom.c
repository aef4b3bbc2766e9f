/* Unit tests for the Prometheus metrics module: the exact text of the
 * exposition format (HELP/TYPE, label escaping, histogram series), the
 * histogram buckets, and the collector registry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_prom.h"

#include <pthread.h>
#include <string.h>

static void family_header_and_help_escaping(void **state) {
  (void)state;
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_write_family(&w, "ana_x_total", "counter", "Things \\ done\nsecond line");
  assert_false(w.failed);
  assert_string_equal(w.data, "# HELP ana_x_total Things \\\\ done\\nsecond line\n"
                              "# TYPE ana_x_total counter\n");
  ana_prom_writer_fini(&w);
}

static void samples_and_label_escaping(void **state) {
  (void)state;
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_write_u64(&w, "a", NULL, 18446744073709551615ULL);
  ana_prom_write_i64(&w, "b", (const char *const[]){NULL}, -3);
  ana_prom_write_u64(&w, "c", (const char *const[]){"route", "GET /x/{id}", "code", "200", NULL},
                     7);
  ana_prom_write_u64(&w, "d", (const char *const[]){"v", "q\"b\\s\nn", NULL}, 1);
  ana_prom_write_double(&w, "e", NULL, 0.1);
  ana_prom_write_double(&w, "f", NULL, 1.0 / 0.0);
  assert_string_equal(w.data, "a 18446744073709551615\n"
                              "b -3\n"
                              "c{route=\"GET /x/{id}\",code=\"200\"} 7\n"
                              "d{v=\"q\\\"b\\\\s\\nn\"} 1\n"
                              "e 0.1\n"
                              "f +Inf\n");
  ana_prom_writer_fini(&w);
}

static void histogram_series(void **state) {
  (void)state;
  static const double bounds[] = {0.005, 0.1, 1};
  struct ana_prom_histogram h;
  ana_prom_histogram_init(&h, bounds, 3);
  ana_prom_histogram_observe(&h, 0.00390625);
  ana_prom_histogram_observe(&h, 0.005); /* le is inclusive */
  ana_prom_histogram_observe(&h, 0.5);
  ana_prom_histogram_observe(&h, 2);
  assert_int_equal(ana_prom_histogram_count(&h), 4);
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_write_histogram(&w, "lat_seconds", (const char *const[]){"m", "x", NULL}, &h);
  ana_prom_write_histogram(&w, "bare", NULL, &h);
  assert_string_equal(w.data, "lat_seconds_bucket{m=\"x\",le=\"0.005\"} 2\n"
                              "lat_seconds_bucket{m=\"x\",le=\"0.1\"} 2\n"
                              "lat_seconds_bucket{m=\"x\",le=\"1\"} 3\n"
                              "lat_seconds_bucket{m=\"x\",le=\"+Inf\"} 4\n"
                              "lat_seconds_sum{m=\"x\"} 2.50890625\n"
                              "lat_seconds_count{m=\"x\"} 4\n"
                              "bare_bucket{le=\"0.005\"} 2\n"
                              "bare_bucket{le=\"0.1\"} 2\n"
                              "bare_bucket{le=\"1\"} 3\n"
                              "bare_bucket{le=\"+Inf\"} 4\n"
                              "bare_sum 2.50890625\n"
                              "bare_count 4\n");
  ana_prom_writer_fini(&w);
}

static struct ana_prom_histogram shared;
static struct ana_prom_counter shared_counter;

static void *observer(void *arg) {
  (void)arg;
  for (int i = 0; i < 100000; i++) {
    ana_prom_histogram_observe(&shared, 0.25);
    ana_prom_counter_add(&shared_counter, 1);
  }
  return NULL;
}

static void concurrent_updates_are_not_lost(void **state) {
  (void)state;
  ana_prom_histogram_init(&shared, ana_prom_latency_buckets, ana_prom_latency_buckets_n);
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&t[i], NULL, observer, NULL);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(ana_prom_histogram_count(&shared), 400000);
  assert_int_equal(ana_prom_counter_get(&shared_counter), 400000);
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_write_histogram(&w, "h", NULL, &shared);
  assert_non_null(strstr(w.data, "h_sum 100000\n"));
  ana_prom_writer_fini(&w);
}

static void collect_a(struct ana_prom_writer *w, void *ctx) {
  ana_prom_write_family(w, "a", "gauge", "A.");
  ana_prom_write_i64(w, "a", NULL, *(int *)ctx);
}

static void collect_b(struct ana_prom_writer *w, void *ctx) {
  (void)ctx;
  ana_prom_write_family(w, "b", "gauge", "B.");
  ana_prom_write_i64(w, "b", NULL, 2);
}

static void registry_renders_in_order_and_unregisters(void **state) {
  (void)state;
  int one = 1;
  assert_int_equal(ana_prom_register(collect_a, &one), 0);
  assert_int_equal(ana_prom_register(collect_b, NULL), 0);
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_render(&w);
  assert_string_equal(w.data,
                      "# HELP a A.\n# TYPE a gauge\na 1\n# HELP b B.\n# TYPE b gauge\nb 2\n");
  ana_prom_writer_fini(&w);
  ana_prom_unregister(collect_a, &one);
  ana_prom_writer_init(&w);
  ana_prom_render(&w);
  assert_string_equal(w.data, "# HELP b B.\n# TYPE b gauge\nb 2\n");
  ana_prom_writer_fini(&w);
  ana_prom_unregister(collect_b, NULL);
  ana_prom_writer_init(&w);
  ana_prom_render(&w);
  assert_null(w.data);
  ana_prom_writer_fini(&w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(family_header_and_help_escaping),
      cmocka_unit_test(samples_and_label_escaping),
      cmocka_unit_test(histogram_series),
      cmocka_unit_test(concurrent_updates_are_not_lost),
      cmocka_unit_test(registry_renders_in_order_and_unregisters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
