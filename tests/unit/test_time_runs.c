/* Unit tests for the time index's run codec (time_runs.h): round trips,
 * merges and the size-tiered rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "time_runs.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void round_trip(int64_t hour, struct ana_time_entry *e, size_t n) {
  qsort(e, n, sizeof *e, ana_time_entry_cmp);
  uint8_t *buf = malloc(ana_time_run_bound(n));
  struct ana_time_entry *back = calloc(n + 1, sizeof *back);
  assert_non_null(buf);
  assert_non_null(back);
  int64_t base = hour * ANA_TIME_RUN_HOUR_MS;
  size_t len = ana_time_run_encode(base, e, n, buf);
  assert_true(len <= ana_time_run_bound(n));
  assert_true(ana_time_run_decode(base, buf, len, n, back));
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(back[i].ts, e[i].ts);
    assert_int_equal(back[i].seq, e[i].seq);
    assert_int_equal(back[i].name, e[i].name);
  }
  /* A count or a length that does not match is refused. */
  if (n > 0) {
    assert_false(ana_time_run_decode(base, buf, len, n + 1, back));
    assert_false(ana_time_run_decode(base, buf, len - 1, n, back));
  }
  assert_false(ana_time_run_decode(base, buf, len, n ? n - 1 : 0, back) && n > 0);
  free(buf);
  free(back);
}

static void entries_round_trip(void **state) {
  (void)state;
  struct ana_time_entry e[2000];
  for (int trial = 0; trial < 50; trial++) {
    int64_t hour = (int64_t)(rnd() % 500000) - 1000;
    size_t n = (size_t)(rnd() % 2000);
    for (size_t i = 0; i < n; i++) {
      int64_t ts = hour * ANA_TIME_RUN_HOUR_MS + (int64_t)(rnd() % ANA_TIME_RUN_HOUR_MS);
      if (hour <= 0 && rnd() % 2) /* hour 0 and below span times before their base */
        ts = hour * ANA_TIME_RUN_HOUR_MS - (int64_t)(rnd() % ANA_TIME_RUN_HOUR_MS);
      e[i] = (struct ana_time_entry){
          .ts = ts, .name = (int64_t)(rnd() % 300), .seq = rnd() % ((uint64_t)1 << 40)};
      if (i > 0 && rnd() % 8 == 0)
        e[i].ts = e[i - 1].ts; /* ties */
    }
    round_trip(hour, e, n);
  }
  /* Extremes: the key's largest seq, large names. */
  e[0] = (struct ana_time_entry){.ts = 7, .name = INT64_C(1) << 40, .seq = (UINT64_C(1) << 40) - 1};
  e[1] = (struct ana_time_entry){.ts = 7, .name = 1, .seq = 1};
  round_trip(0, e, 2);
}

/* A run of an import's hour takes a few bytes per event. */
static void entries_are_small(void **state) {
  (void)state;
  enum { N = 4000 };
  static struct ana_time_entry e[N];
  for (size_t i = 0; i < N; i++)
    e[i] = (struct ana_time_entry){.ts = 3600000 * INT64_C(480000) + (int64_t)(rnd() % 3600000),
                                   .name = (int64_t)(rnd() % 20),
                                   .seq = 1000000 + rnd() % 3000000};
  qsort(e, N, sizeof *e, ana_time_entry_cmp);
  static uint8_t buf[N * 30 + 1];
  size_t len = ana_time_run_encode(3600000 * INT64_C(480000), e, N, buf);
  assert_true(len < (size_t)N * 8);
}

static void runs_merge_in_order(void **state) {
  (void)state;
  struct ana_time_entry a[300], b[200], out[500];
  for (size_t i = 0; i < 300; i++)
    a[i] = (struct ana_time_entry){.ts = (int64_t)(rnd() % 100), .seq = rnd() % 1000};
  for (size_t i = 0; i < 200; i++)
    b[i] = (struct ana_time_entry){.ts = (int64_t)(rnd() % 100), .seq = 1000 + rnd() % 1000};
  qsort(a, 300, sizeof *a, ana_time_entry_cmp);
  qsort(b, 200, sizeof *b, ana_time_entry_cmp);
  assert_int_equal(ana_time_run_merge(a, 300, b, 200, out), 500);
  for (size_t i = 1; i < 500; i++)
    assert_true(ana_time_entry_cmp(&out[i - 1], &out[i]) <= 0);
  assert_int_equal(ana_time_run_merge(a, 0, b, 200, out), 200);
  assert_memory_equal(out, b, sizeof b);
}

/* Runs of one move's size each: the hour keeps O(log n) runs and each
 * entry is rewritten O(log n) times. */
static void tiered_rule_bounds_runs_and_rewrites(void **state) {
  (void)state;
  int64_t sizes[64];
  size_t k = 0;
  int64_t total = 0, rewritten = 0;
  size_t most = 0;
  for (int move = 0; move < 4096; move++) {
    sizes[k++] = 20;
    total += 20;
    size_t m = ana_time_run_merge_count(sizes, k, 8);
    if (m >= 2) {
      int64_t sum = 0;
      for (size_t i = k - m; i < k; i++)
        sum += sizes[i];
      k -= m;
      sizes[k++] = sum;
      rewritten += sum;
    }
    most = k > most ? k : most;
    assert_true(k < 16);
  }
  assert_true(most <= 13); /* log2(4096) + 1 */
  assert_true(rewritten <= total * 13);
  /* Sizes that halve each time are left alone, unless there are too many. */
  int64_t halving[4] = {800, 300, 100, 40};
  assert_int_equal(ana_time_run_merge_count(halving, 4, 8), 0);
  assert_int_equal(ana_time_run_merge_count(halving, 4, 3), 2);
  assert_int_equal(ana_time_run_merge_count(halving, 1, 8), 0);
  /* Full runs stay as they are; the newest below them merge up to the
   * bound. */
  int64_t full[5] = {ANA_TIME_RUN_FULL, ANA_TIME_RUN_FULL + 5, ANA_TIME_RUN_FULL - 10, 8, 3};
  assert_int_equal(ana_time_run_merge_count(full, 5, 8), 0);
  assert_int_equal(ana_time_run_merge_count(full, 5, 2), 2);
  assert_int_equal(ana_time_run_merge_count(full, 3, 1), 0);
  int64_t near[3] = {ANA_TIME_RUN_FULL, ANA_TIME_RUN_FULL / 2 + 1, ANA_TIME_RUN_FULL / 2};
  assert_int_equal(ana_time_run_merge_count(near, 3, 8), 0);
  assert_int_equal(ana_time_run_merge_count(near, 3, 1), 2);
}

static void hours_of_days(void **state) {
  (void)state;
  int64_t days[] = {-3, -1, 0, 1, 2, 20000};
  for (size_t d = 0; d < sizeof days / sizeof *days; d++) {
    int64_t first, last;
    ana_time_run_day_hours(days[d], &first, &last);
    /* Every ms of the day is in one of its hours, and no other day's. */
    for (int64_t ts = days[d] * 86400000 - 86400000 * 2; ts < days[d] * 86400000 + 86400000 * 2;
         ts += 599999) {
      int64_t h = ana_time_run_hour(ts);
      bool in_day = ts / 86400000 == days[d];
      assert_int_equal(h >= first && h <= last, in_day);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(entries_round_trip),  cmocka_unit_test(entries_are_small),
      cmocka_unit_test(runs_merge_in_order), cmocka_unit_test(tiered_rule_bounds_runs_and_rewrites),
      cmocka_unit_test(hours_of_days),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
