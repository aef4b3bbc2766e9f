/* Unit tests of the rollup sketches: HyperLogLog within its documented
 * error (1.6% standard error; checked at 3 standard errors), DDSketch within
 * its relative accuracy (1%) at every percentile, merges equal to the sketch
 * of the union, encodings that round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_error.h"
#include "ana_sketch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static double rnd01(void) {
  return (double)(rnd() >> 11) / 9007199254740992.0;
}

static void hll_within_bound(void **state) {
  (void)state;
  static const long sizes[] = {1, 10, 100, 1000, 5000, 20000, 100000, 1000000};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    struct ana_hll *h = calloc(1, sizeof *h);
    char buf[64];
    long run = (long)(rnd() % 1000000);
    for (long i = 0; i < sizes[k]; i++) {
      snprintf(buf, sizeof buf, "user-%ld-%ld", run, i);
      ana_hll_add_hash(h, ana_hll_hash_text(buf));
      /* repeats do not count */
      ana_hll_add_hash(h, ana_hll_hash_text(buf));
    }
    double est = ana_hll_estimate(h);
    double rel = fabs(est - (double)sizes[k]) / (double)sizes[k];
    if (sizes[k] <= 100)
      assert_true(fabs(est - (double)sizes[k]) <= 1.0); /* linear counting: exact-ish */
    else if (rel > 3 * ANA_HLL_STD_ERROR)
      fail_msg("HLL n=%ld estimate %.0f error %.3f%%", sizes[k], est, rel * 100);
    free(h);
  }
}

static void hll_merge_is_union_and_encodes(void **state) {
  (void)state;
  struct ana_hll *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *u = calloc(1, sizeof *u);
  char buf[64];
  for (int i = 0; i < 30000; i++) {
    snprintf(buf, sizeof buf, "s%d", i);
    uint64_t h = ana_hll_hash_text(buf);
    ana_hll_add_hash(i % 3 ? a : b, h);
    if (i % 7 == 0)
      ana_hll_add_hash(b, h); /* overlap */
    ana_hll_add_hash(u, h);
  }
  ana_hll_merge(a, b);
  assert_memory_equal(a->reg, u->reg, ANA_HLL_REGISTERS);
  /* dense and sparse encodings round-trip */
  uint8_t *enc = malloc(ANA_HLL_MAX_ENCODED);
  struct ana_hll *d = calloc(1, sizeof *d);
  size_t n = ana_hll_encode(u, enc);
  assert_int_equal(ana_hll_decode_merge(d, enc, n), (long)n);
  assert_memory_equal(d->reg, u->reg, ANA_HLL_REGISTERS);
  struct ana_hll *small = calloc(1, sizeof *small), *d2 = calloc(1, sizeof *d2);
  ana_hll_add_hash(small, ana_hll_hash_text("x"));
  n = ana_hll_encode(small, enc);
  assert_true(n < 10);
  assert_int_equal(ana_hll_decode_merge(d2, enc, n), (long)n);
  assert_memory_equal(d2->reg, small->reg, ANA_HLL_REGISTERS);
  assert_int_equal(ana_hll_decode_merge(d2, enc, 2), -1);
  free(a), free(b), free(u), free(d), free(small), free(d2), free(enc);
}

static int cmp(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

static double exact(const double *sorted, size_t n, double p) {
  size_t rank = (size_t)ceil(p / 100.0 * (double)n);
  return sorted[rank ? rank - 1 : 0];
}

static void dds_within_bound(void **state) {
  (void)state;
  for (int round = 0; round < 6; round++) {
    size_t n = round < 3 ? 1000 : 50000;
    double *v = malloc(n * sizeof *v);
    struct ana_ddsketch s = {0};
    for (size_t i = 0; i < n; i++) {
      double x;
      switch (round % 3) {
      case 0: x = exp(rnd01() * 20 - 5); break;        /* log-uniform */
      case 1: x = (double)(rnd() % 1000) - 300; break; /* ints, zeros, negatives */
      default: x = -log(rnd01() + 1e-12) * 100; break; /* exponential */
      }
      v[i] = x;
      assert_int_equal(ana_dds_add(&s, x), 0);
    }
    qsort(v, n, sizeof *v, cmp);
    for (int p = 1; p <= 100; p++) {
      double want = exact(v, n, p), got = ana_dds_percentile(&s, p);
      if (fabs(got - want) > ANA_DDS_ALPHA * fabs(want) * (1 + 1e-9))
        fail_msg("round %d p%d: %g vs exact %g", round, p, got, want);
    }
    ana_dds_fini(&s);
    free(v);
  }
  struct ana_ddsketch empty = {0};
  assert_true(isnan(ana_dds_percentile(&empty, 50)));
}

static void dds_merge_is_union_and_encodes(void **state) {
  (void)state;
  struct ana_ddsketch a = {0}, b = {0}, u = {0}, d = {0};
  for (int i = 0; i < 20000; i++) {
    double x = (rnd01() - 0.2) * 1e4;
    if (i % 50 == 0)
      x = 0;
    ana_dds_add(i % 2 ? &a : &b, x);
    ana_dds_add(&u, x);
  }
  assert_int_equal(ana_dds_merge(&a, &b), 0);
  uint8_t *e1 = NULL, *e2 = NULL;
  size_t l1 = 0, c1 = 0, l2 = 0, c2 = 0;
  assert_int_equal(ana_dds_encode(&a, &e1, &l1, &c1), 0);
  assert_int_equal(ana_dds_encode(&u, &e2, &l2, &c2), 0);
  assert_int_equal(l1, l2);
  assert_memory_equal(e1, e2, l1);
  assert_int_equal(ana_dds_decode_merge(&d, e1, l1), (long)l1);
  for (int p = 1; p <= 100; p++)
    assert_true(ana_dds_percentile(&d, p) == ana_dds_percentile(&u, p));
  assert_int_equal(d.count, u.count);
  assert_int_equal(ana_dds_decode_merge(&d, e1, l1 / 2), ANA_ERR_INVALID);
  free(e1), free(e2);
  ana_dds_fini(&a), ana_dds_fini(&b), ana_dds_fini(&u), ana_dds_fini(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hll_within_bound),
      cmocka_unit_test(hll_merge_is_union_and_encodes),
      cmocka_unit_test(dds_within_bound),
      cmocka_unit_test(dds_merge_is_union_and_encodes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
