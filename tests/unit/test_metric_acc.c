/* Unit tests of the live metric accumulators (server/metrics/acc.c):
 * filters, terms' events only, groups by dimensions with the "(other)" cap,
 * evaluation (ratios, empty values), as GetMetricData computes them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_metric_acc.h"

#include <string.h>

static struct ana_formula *parse(const char *text) {
  struct ana_error err;
  struct ana_formula *f = ana_formula_parse(text, NULL, &err, NULL);
  assert_non_null(f);
  return f;
}

static int add(struct ana_metric_acc *acc, const char *name, const char *props) {
  struct ana_scanned_event ev = {.timestamp_ms = 1000,
                                 .event_id = "e",
                                 .event_type = "t",
                                 .event_name = name,
                                 .session_id = "s1",
                                 .properties_json = props};
  return ana_metric_acc_add(acc, &ev);
}

static void ratio_per_group_with_a_filter(void **state) {
  (void)state;
  Analytics__V1__Metric m = ANALYTICS__V1__METRIC__INIT;
  char *dims[] = {"campaignId"};
  m.dimensions = dims;
  m.n_dimensions = 1;
  Analytics__V1__MetricFilter f = ANALYTICS__V1__METRIC_FILTER__INIT;
  Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  v.string_value = "pro";
  f.field = "plan";
  f.op = "eq";
  f.value = &v;
  Analytics__V1__MetricFilter *filters[] = {&f};
  m.filters = filters;
  m.n_filters = 1;
  struct ana_formula *fo = parse("(count(delivered) / count(sent)) * 100");
  struct ana_error err;
  struct ana_metric_acc *acc = ana_metric_acc_create(&m, fo, 10, &err);
  assert_non_null(acc);
  assert_int_equal(ana_metric_acc_group_count(acc), 0);
  assert_true(ana_metric_acc_wants(acc, "sent"));
  assert_false(ana_metric_acc_wants(acc, "opened"));

  int a = add(acc, "sent", "{\"campaignId\":\"a\",\"plan\":\"pro\"}");
  assert_int_equal(a, 0);
  assert_int_equal(add(acc, "sent", "{\"campaignId\":\"a\",\"plan\":\"pro\"}"), 0);
  assert_int_equal(add(acc, "delivered", "{\"campaignId\":\"a\",\"plan\":\"pro\"}"), 0);
  assert_int_equal(add(acc, "sent", "{\"campaignId\":\"a\",\"plan\":\"free\"}"), ANA_ERR_NOT_FOUND);
  assert_int_equal(add(acc, "opened", "{\"campaignId\":\"a\",\"plan\":\"pro\"}"),
                   ANA_ERR_NOT_FOUND);
  int b = add(acc, "sent", "{\"campaignId\":123,\"plan\":\"pro\"}");
  assert_int_equal(b, 1);
  assert_string_equal(ana_metric_acc_group_values(acc, 1)[0], "123");

  double out;
  assert_true(ana_metric_acc_value(acc, 0, &out));
  assert_true(out == 50.0);
  assert_true(ana_metric_acc_value(acc, 1, &out)); /* 0 / 1 */
  assert_true(out == 0.0);
  ana_metric_acc_destroy(acc);
  ana_formula_free(fo);
}

static void no_dimensions_has_one_group_from_the_start(void **state) {
  (void)state;
  Analytics__V1__Metric m = ANALYTICS__V1__METRIC__INIT;
  struct ana_formula *fo = parse("count(a) / count(b)");
  struct ana_error err;
  struct ana_metric_acc *acc = ana_metric_acc_create(&m, fo, 10, &err);
  assert_int_equal(ana_metric_acc_group_count(acc), 1);
  double out;
  assert_false(ana_metric_acc_value(acc, 0, &out)); /* 0 / 0: empty */
  assert_int_equal(add(acc, "b", "{}"), 0);
  assert_int_equal(add(acc, "a", NULL), 0);
  assert_true(ana_metric_acc_value(acc, 0, &out));
  assert_true(out == 1.0);
  ana_metric_acc_destroy(acc);
  ana_formula_free(fo);
}

static void aggregates_and_the_group_cap(void **state) {
  (void)state;
  Analytics__V1__Metric m = ANALYTICS__V1__METRIC__INIT;
  char *dims[] = {"k"};
  m.dimensions = dims;
  m.n_dimensions = 1;
  struct ana_formula *fo = parse("sum(x.v) + max(x.v) + uniq(x.u) + p50(x.v)");
  struct ana_error err;
  struct ana_metric_acc *acc = ana_metric_acc_create(&m, fo, 2, &err);
  assert_int_equal(add(acc, "x", "{\"k\":\"a\",\"v\":1,\"u\":\"p\"}"), 0);
  assert_int_equal(add(acc, "x", "{\"k\":\"a\",\"v\":\"3\",\"u\":\"p\"}"), 0);
  assert_int_equal(add(acc, "x", "{\"k\":\"a\",\"v\":\"n/a\",\"u\":\"q\"}"), 0);
  double out;
  assert_true(ana_metric_acc_value(acc, 0, &out));
  assert_true(out == 4 + 3 + 2 + 1); /* sum, max, uniq, p50 (nearest rank) */
  assert_int_equal(add(acc, "x", "{\"k\":\"b\",\"v\":1}"), 1);
  int other = add(acc, "x", "{\"k\":\"c\",\"v\":1}");
  assert_int_equal(other, 2);
  assert_int_equal(add(acc, "x", "{\"k\":\"d\",\"v\":1}"), other);
  assert_string_equal(ana_metric_acc_group_values(acc, 2)[0], ANA_METRIC_ACC_OTHER);
  assert_int_equal(add(acc, "x", "{\"k\":\"b\",\"v\":1}"), 1); /* known groups still count */
  ana_metric_acc_destroy(acc);
  ana_formula_free(fo);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ratio_per_group_with_a_filter),
      cmocka_unit_test(no_dimensions_has_one_group_from_the_start),
      cmocka_unit_test(aggregates_and_the_group_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
