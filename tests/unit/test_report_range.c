/* Unit tests of a report's date range: calendar days in an IANA zone, both
 * inclusive, across DST changes (the day the clock goes back lasts 25 hours,
 * the day it goes forward 23), and the day buckets a report's daily chart
 * and tables are counted in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_buckets.h"
#include "ana_report_templates.h"

#include <stdlib.h>
#include <string.h>

#define HOUR 3600000LL
#define DAY 86400000LL
/* Days since 1970-01-01. */

/* The day number of y-m-d (proleptic Gregorian), as the templates read dates. */
static int64_t day_of(int y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

/* The local days of [from, to) in tz, and each one's length. */
static size_t day_buckets(int64_t from, int64_t to, const char *tz, int64_t *len, size_t max) {
  int64_t *starts = NULL;
  size_t n = 0;
  struct ana_error err;
  assert_int_equal(ana_buckets_make(from, to, ANA_INTERVAL_1D, tz, 64, &starts, &n, &err), 0);
  assert_true(n <= max);
  for (size_t i = 0; i < n; i++)
    len[i] = (i + 1 < n ? starts[i + 1] : to) - starts[i];
  assert_int_equal(starts[0], from); /* the range starts on a bucket boundary */
  free(starts);
  return n;
}

/* "Last 7 days" ending on the last Sunday of October in Berlin: the clocks go
 * back from 03:00 CEST to 02:00 CET, so that Sunday lasts 25 hours and the
 * range 7 days and one hour. */
static void berlin_autumn_week_has_a_25_hour_day(void **state) {
  (void)state;
  struct ana_error err;
  int64_t from, to, len[16];
  int64_t first = day_of(2024, 10, 21), last = day_of(2024, 10, 27);
  assert_int_equal(ana_report_date_range(first, last, "Europe/Berlin", &from, &to, &err), 0);
  assert_int_equal(from, first * DAY - 2 * HOUR);    /* 2024-10-20T22:00Z: Monday 00:00 CEST */
  assert_int_equal(to, (last + 1) * DAY - 1 * HOUR); /* 2024-10-27T23:00Z: Monday 00:00 CET */
  assert_int_equal(to - from, 7 * DAY + HOUR);
  size_t n = day_buckets(from, to, "Europe/Berlin", len, 16);
  assert_int_equal(n, 7); /* one point per calendar day of the range, as the chart has */
  for (size_t i = 0; i < 6; i++)
    assert_int_equal(len[i], 24 * HOUR);
  assert_int_equal(len[6], 25 * HOUR);
}

/* The last Sunday of March: 02:00 CET becomes 03:00 CEST, a 23-hour day. */
static void berlin_spring_day_has_23_hours(void **state) {
  (void)state;
  struct ana_error err;
  int64_t from, to, len[16];
  int64_t first = day_of(2024, 3, 25), last = day_of(2024, 3, 31);
  assert_int_equal(ana_report_date_range(first, last, "Europe/Berlin", &from, &to, &err), 0);
  assert_int_equal(from, first * DAY - 1 * HOUR);
  assert_int_equal(to, (last + 1) * DAY - 2 * HOUR);
  assert_int_equal(to - from, 7 * DAY - HOUR);
  size_t n = day_buckets(from, to, "Europe/Berlin", len, 16);
  assert_int_equal(n, 7);
  assert_int_equal(len[6], 23 * HOUR);
  /* One day alone: the DST Sunday is its own 23-hour range. */
  assert_int_equal(ana_report_date_range(last, last, "Europe/Berlin", &from, &to, &err), 0);
  assert_int_equal(to - from, 23 * HOUR);
}

/* Elsewhere: the southern hemisphere's change in April (Sydney, 03:00 AEDT
 * back to 02:00 AEST), a zone whose change is at midnight (America/Havana
 * skips 00:00-01:00 in March: the day starts at 01:00), and UTC. */
static void other_zones_and_utc(void **state) {
  (void)state;
  struct ana_error err;
  int64_t from, to, len[16];
  int64_t d = day_of(2024, 4, 7);
  assert_int_equal(ana_report_date_range(d, d, "Australia/Sydney", &from, &to, &err), 0);
  assert_int_equal(from, d * DAY - 11 * HOUR);
  assert_int_equal(to - from, 25 * HOUR);
  d = day_of(2024, 3, 10);
  assert_int_equal(ana_report_date_range(d, d, "America/Havana", &from, &to, &err), 0);
  assert_int_equal(from, d * DAY + 5 * HOUR); /* 01:00 CDT, the day's first instant */
  assert_int_equal(to - from, 23 * HOUR);
  assert_int_equal(day_buckets(from, to, "America/Havana", len, 16), 1);
  d = day_of(2024, 10, 27);
  assert_int_equal(ana_report_date_range(d, d + 6, "UTC", &from, &to, &err), 0);
  assert_int_equal(from, d * DAY);
  assert_int_equal(to - from, 7 * DAY);
  assert_int_equal(ana_report_date_range(d, d, "Mars/Olympus", &from, &to, &err), ANA_ERR_INVALID);
  assert_non_null(strstr(err.message, "parameters.timeZone"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(berlin_autumn_week_has_a_25_hour_day),
      cmocka_unit_test(berlin_spring_day_has_23_hours),
      cmocka_unit_test(other_zones_and_utc),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
