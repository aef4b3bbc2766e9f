/* Unit tests of metric time buckets: intervals, local-time alignment with
 * half- and quarter-hour offsets, and DST changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_buckets.h"

#include <stdlib.h>

#define MIN 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL
/* 2024-01-01T00:00:00Z */
#define JAN1 1704067200000LL

static void intervals_parse_and_auto(void **state) {
  (void)state;
  enum ana_interval iv;
  struct ana_error err;
  assert_int_equal(ana_interval_parse("1h", 0, DAY, &iv, &err), 0);
  assert_int_equal(iv, ANA_INTERVAL_1H);
  assert_int_equal(ana_interval_parse("auto", 0, 2 * HOUR, &iv, &err), 0);
  assert_int_equal(iv, ANA_INTERVAL_1M);
  assert_int_equal(ana_interval_parse("", 0, DAY, &iv, &err), 0);
  assert_int_equal(iv, ANA_INTERVAL_5M);
  assert_int_equal(ana_interval_parse(NULL, 0, 30 * DAY, &iv, &err), 0);
  assert_int_equal(iv, ANA_INTERVAL_1D);
  assert_int_equal(ana_interval_parse("2h", 0, DAY, &iv, &err), ANA_ERR_INVALID);
  assert_string_equal(err.message, "interval: \"2h\" is not one of 1m, 5m, 1h, 1d, auto");
}

static void utc_hours(void **state) {
  (void)state;
  int64_t *s;
  size_t n;
  struct ana_error err;
  assert_int_equal(ana_buckets_make(JAN1 + 30 * MIN, JAN1 + 3 * HOUR, ANA_INTERVAL_1H, "UTC", 1000,
                                    &s, &n, &err),
                   0);
  assert_int_equal(n, 3);
  assert_int_equal(s[0], JAN1);
  assert_int_equal(s[2], JAN1 + 2 * HOUR);
  assert_int_equal(ana_bucket_index(s, n, JAN1 + 3 * HOUR, JAN1 + 90 * MIN), 1);
  assert_int_equal(ana_bucket_index(s, n, JAN1 + 3 * HOUR, JAN1 + 3 * HOUR), n);
  assert_int_equal(ana_bucket_index(s, n, JAN1 + 3 * HOUR, JAN1 - 1), n);
  free(s);
}

static void half_and_quarter_hour_zones(void **state) {
  (void)state;
  int64_t *s;
  size_t n;
  struct ana_error err;
  /* India is UTC+5:30: local hours start at :30 UTC. */
  assert_int_equal(
      ana_buckets_make(JAN1, JAN1 + 2 * HOUR, ANA_INTERVAL_1H, "Asia/Kolkata", 100, &s, &n, &err),
      0);
  assert_int_equal(s[0], JAN1 - 30 * MIN);
  assert_int_equal(s[1], JAN1 + 30 * MIN);
  free(s);
  /* Nepal is UTC+5:45. */
  assert_int_equal(
      ana_buckets_make(JAN1, JAN1 + 2 * HOUR, ANA_INTERVAL_1H, "Asia/Kathmandu", 100, &s, &n, &err),
      0);
  assert_int_equal(s[0], JAN1 - 45 * MIN);
  assert_int_equal(s[1], JAN1 + 15 * MIN);
  free(s);
  /* A local day in India starts at 18:30 UTC the day before. */
  assert_int_equal(
      ana_buckets_make(JAN1, JAN1 + DAY, ANA_INTERVAL_1D, "Asia/Kolkata", 100, &s, &n, &err), 0);
  assert_int_equal(s[0], JAN1 - 5 * HOUR - 30 * MIN);
  assert_int_equal(s[1], s[0] + DAY);
  free(s);
}

static void dst_days_are_23_and_25_hours(void **state) {
  (void)state;
  int64_t *s;
  size_t n;
  struct ana_error err;
  /* Berlin: 2024-03-31 has 23 hours, 2024-10-27 has 25. */
  int64_t mar30 = 1711753200000LL; /* 2024-03-30T00:00+01:00 */
  assert_int_equal(
      ana_buckets_make(mar30, mar30 + 3 * DAY, ANA_INTERVAL_1D, "Europe/Berlin", 100, &s, &n, &err),
      0);
  assert_int_equal(s[0], mar30);
  assert_int_equal(s[1] - s[0], 24 * HOUR);
  assert_int_equal(s[2] - s[1], 23 * HOUR);
  free(s);
  int64_t oct26 = 1729893600000LL; /* 2024-10-26T00:00+02:00 */
  assert_int_equal(
      ana_buckets_make(oct26, oct26 + 3 * DAY, ANA_INTERVAL_1D, "Europe/Berlin", 100, &s, &n, &err),
      0);
  assert_int_equal(s[2] - s[1], 25 * HOUR);
  free(s);
  /* Hour buckets across the change stay one real hour each, none lost. */
  int64_t oct27_midnight = oct26 + 24 * HOUR;
  assert_int_equal(ana_buckets_make(oct27_midnight, oct27_midnight + 25 * HOUR, ANA_INTERVAL_1H,
                                    "Europe/Berlin", 100, &s, &n, &err),
                   0);
  assert_int_equal(n, 25);
  for (size_t i = 1; i < n; i++)
    assert_int_equal(s[i] - s[i - 1], HOUR);
  free(s);
}

static void errors_name_the_field(void **state) {
  (void)state;
  int64_t *s;
  size_t n;
  struct ana_error err;
  assert_int_equal(
      ana_buckets_make(JAN1, JAN1 + HOUR, ANA_INTERVAL_1M, "Mars/Olympus", 100, &s, &n, &err),
      ANA_ERR_INVALID);
  assert_memory_equal(err.message, "timeZone: unknown time zone \"Mars/Olympus\"", 42);
  assert_int_equal(
      ana_buckets_make(JAN1, JAN1 + 30 * DAY, ANA_INTERVAL_1M, "UTC", 1000, &s, &n, &err),
      ANA_ERR_INVALID);
  assert_memory_equal(err.message, "interval: 1m over this range", 28);
  assert_int_equal(ana_buckets_make(JAN1, JAN1, ANA_INTERVAL_1M, "UTC", 1000, &s, &n, &err),
                   ANA_ERR_INVALID);
  assert_string_equal(err.message, "to: must be after from");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(intervals_parse_and_auto),    cmocka_unit_test(utc_hours),
      cmocka_unit_test(half_and_quarter_hour_zones), cmocka_unit_test(dst_days_are_23_and_25_hours),
      cmocka_unit_test(errors_name_the_field),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
