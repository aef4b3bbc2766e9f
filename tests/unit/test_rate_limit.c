/* Unit tests of rate limiting: the GCRA step with a fixed clock (burst, steady rate, exact
 * retry-after, costs above 1, recovery), the in-process store (keys apart, bounded size, idle
 * keys forgotten first), two threads contending on one key never passing more than the limit,
 * and the limit syntax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_rate_limit.h"
#include "ana_clock.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define SEC 1000000000LL
#define T0 (1000 * SEC)

static struct ana_rate_limit parse(const char *text) {
  struct ana_rate_limit lim;
  char why[128];
  assert_true(ana_rate_limit_parse(text, strlen(text), &lim, why, sizeof why));
  return lim;
}

static void burst_then_steady_rate(void **state) {
  (void)state;
  struct ana_rate_limit lim = parse("10/s burst 5"); /* one unit per 100 ms */
  struct ana_rate_decision d;
  int64_t tat = 0;
  for (int i = 0; i < 5; i++) {
    ana_rate_gcra(&tat, &lim, 1, T0, &d);
    assert_true(d.allowed);
    assert_int_equal(d.limit, 5);
    assert_int_equal(d.remaining, 4 - i);
    assert_int_equal(d.reset_after_ns, (i + 1) * SEC / 10);
  }
  ana_rate_gcra(&tat, &lim, 1, T0, &d);
  assert_false(d.allowed);
  assert_int_equal(d.remaining, 0);
  assert_int_equal(d.retry_after_ns, SEC / 10); /* exactly one emission interval */
  /* One nanosecond early is still refused, on time passes. */
  ana_rate_gcra(&tat, &lim, 1, T0 + SEC / 10 - 1, &d);
  assert_false(d.allowed);
  assert_int_equal(d.retry_after_ns, 1);
  ana_rate_gcra(&tat, &lim, 1, T0 + SEC / 10, &d);
  assert_true(d.allowed);
  assert_int_equal(d.remaining, 0);
  /* Steady: one every 100 ms passes forever, a second in the same slot does not. */
  for (int i = 2; i < 50; i++) {
    ana_rate_gcra(&tat, &lim, 1, T0 + i * SEC / 10, &d);
    assert_true(d.allowed);
    ana_rate_gcra(&tat, &lim, 1, T0 + i * SEC / 10, &d);
    assert_false(d.allowed);
  }
}

static void cost_above_one_and_recovery(void **state) {
  (void)state;
  struct ana_rate_limit lim = parse("2/s burst 10"); /* one unit per 500 ms */
  struct ana_rate_decision d;
  int64_t tat = 0;
  ana_rate_gcra(&tat, &lim, 7, T0, &d);
  assert_true(d.allowed);
  assert_int_equal(d.remaining, 3);
  ana_rate_gcra(&tat, &lim, 4, T0, &d); /* one short: 500 ms */
  assert_false(d.allowed);
  assert_int_equal(d.remaining, 3);
  assert_int_equal(d.retry_after_ns, SEC / 2);
  assert_int_equal(d.reset_after_ns, 7 * SEC / 2);
  ana_rate_gcra(&tat, &lim, 3, T0, &d); /* the refused charge took nothing */
  assert_true(d.allowed);
  assert_int_equal(d.remaining, 0);
  /* Whole again after burst * interval: the full burst passes. */
  ana_rate_gcra(&tat, &lim, 10, T0 + 5 * SEC, &d);
  assert_true(d.allowed);
  /* More than the burst can never pass. */
  tat = 0;
  ana_rate_gcra(&tat, &lim, 11, T0, &d);
  assert_false(d.allowed);
  assert_int_equal(d.retry_after_ns, -1);
  assert_int_equal(tat, 0);
}

static void store_keeps_keys_apart(void **state) {
  (void)state;
  struct ana_rate_limiter l;
  assert_int_equal(ana_rate_limiter_local_create(1000, 4, &l), 0);
  struct ana_rate_limit lim = parse("1/m burst 2");
  struct ana_rate_decision d;
  for (int i = 0; i < 2; i++) {
    assert_int_equal(ana_rate_limiter_charge(&l, "a:acme", &lim, 1, T0, &d), 0);
    assert_true(d.allowed);
  }
  assert_int_equal(ana_rate_limiter_charge(&l, "a:acme", &lim, 1, T0, &d), 0);
  assert_false(d.allowed);
  assert_int_equal(d.retry_after_ns, 60 * SEC);
  assert_int_equal(ana_rate_limiter_charge(&l, "a:other", &lim, 1, T0, &d), 0);
  assert_true(d.allowed);
  assert_int_equal(ana_rate_limiter_local_size(&l), 2);
  ana_rate_limiter_destroy(&l);
}

static void store_is_bounded_and_forgets_idle_keys_first(void **state) {
  (void)state;
  struct ana_rate_limiter l;
  assert_int_equal(ana_rate_limiter_local_create(64, 1, &l), 0);
  struct ana_rate_limit lim = parse("1/s burst 3");
  struct ana_rate_decision d;
  char key[32];
  /* "busy" drawn to empty first; then 2000 one-off keys, idle after 1 s. */
  for (int i = 0; i < 3; i++)
    ana_rate_limiter_charge(&l, "busy", &lim, 1, T0, &d);
  for (int i = 0; i < 2000; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(ana_rate_limiter_charge(&l, key, &lim, 1, T0 + 2 * SEC + i, &d), 0);
    assert_true(d.allowed);
    assert_true(ana_rate_limiter_local_size(&l) <= 64);
  }
  ana_rate_limiter_destroy(&l);
  /* Idle keys go before one still drawn: "busy" survives a sweep. */
  assert_int_equal(ana_rate_limiter_local_create(64, 1, &l), 0);
  lim = parse("1/h burst 3");
  for (int i = 0; i < 3; i++)
    ana_rate_limiter_charge(&l, "busy", &lim, 1, T0, &d);
  struct ana_rate_limit quick = parse("1000/s burst 1");
  for (int i = 0; i < 500; i++) {
    snprintf(key, sizeof key, "q%d", i);
    ana_rate_limiter_charge(&l, key, &quick, 1, T0 + i * SEC, &d);
  }
  assert_int_equal(ana_rate_limiter_charge(&l, "busy", &lim, 1, T0 + 500 * SEC, &d), 0);
  assert_false(d.allowed);
  ana_rate_limiter_destroy(&l);
}

struct contender {
  struct ana_rate_limiter *l;
  const struct ana_rate_limit *lim;
  int allowed;
};

static void *contend(void *arg) {
  struct contender *c = arg;
  struct ana_rate_decision d;
  for (int i = 0; i < 20000; i++) {
    int64_t now = ana_clock_mono_ns();
    if (ana_rate_limiter_charge(c->l, "a:shared", c->lim, 1, now, &d) == 0 && d.allowed)
      c->allowed++;
  }
  return NULL;
}

static void two_threads_on_one_account_never_exceed_the_limit(void **state) {
  (void)state;
  struct ana_rate_limiter l;
  assert_int_equal(ana_rate_limiter_local_create(1000, 0, &l), 0);
  /* 1000 at once, then one per hour: no refill while the test runs. */
  struct ana_rate_limit lim = parse("1/h burst 1000");
  struct contender a = {&l, &lim, 0}, b = {&l, &lim, 0};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, contend, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, contend, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(a.allowed + b.allowed, 1000);
  ana_rate_limiter_destroy(&l);
}

static bool each_seen(void *ctx, const char *name, size_t len, const struct ana_rate_limit *lim) {
  char *out = ctx;
  char text[ANA_RATE_LIMIT_MAX_TEXT];
  ana_rate_limit_format(lim, text, sizeof text);
  snprintf(out + strlen(out), 256 - strlen(out), "[%.*s=%s]", (int)len, name, text);
  return true;
}

static void syntax(void **state) {
  (void)state;
  struct ana_rate_limit lim = parse("1000/s burst 2000");
  assert_int_equal(lim.emission_ns, 1000000);
  assert_int_equal(lim.burst, 2000);
  lim = parse(" 600/m ");
  assert_int_equal(lim.emission_ns, SEC / 10);
  assert_int_equal(lim.burst, 600);
  lim = parse("off");
  assert_int_equal(lim.emission_ns, 0);
  char why[128];
  const char *bad[] = {"",
                       "0/s",
                       "10",
                       "10/d",
                       "10/s burst",
                       "10/s burst 0",
                       "10/s bust 3",
                       "-1/s",
                       "10/s burst 5 x",
                       "99999999999/s"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_false(ana_rate_limit_parse(bad[i], strlen(bad[i]), &lim, why, sizeof why));
  char seen[256] = "";
  assert_true(ana_rate_limit_parse_list("acme=10/s, beta = 5/m burst 7,,", each_seen, seen, why,
                                        sizeof why));
  assert_string_equal(seen, "[acme=10/s burst 10][beta=5/m burst 7]");
  assert_false(ana_rate_limit_parse_list("acme", NULL, NULL, why, sizeof why));
  assert_false(ana_rate_limit_parse_list("acme=10/x", NULL, NULL, why, sizeof why));
  assert_non_null(strstr(why, "acme"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(burst_then_steady_rate),
      cmocka_unit_test(cost_above_one_and_recovery),
      cmocka_unit_test(store_keeps_keys_apart),
      cmocka_unit_test(store_is_bounded_and_forgets_idle_keys_first),
      cmocka_unit_test(two_threads_on_one_account_never_exceed_the_limit),
      cmocka_unit_test(syntax),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
