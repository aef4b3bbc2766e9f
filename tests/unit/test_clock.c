/* common/clock.c: the wall and monotonic clocks agree with the system's, the
 * monotonic one never goes back, and deadlines carry milliseconds into
 * seconds. */
#include "ana_clock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void wall_clock_is_the_epoch_in_ms_and_ns(void **state) {
  (void)state;
  /* C11's fine UTC clock, not time(), which may read a tick-old value. */
  struct timespec sys;
  timespec_get(&sys, TIME_UTC);
  int64_t before = (int64_t)sys.tv_sec;
  int64_t ms = ana_clock_wall_ms(), ns = ana_clock_wall_ns();
  timespec_get(&sys, TIME_UTC);
  int64_t after = (int64_t)sys.tv_sec;
  assert_in_range(ms / 1000, before, after);
  assert_in_range(ns / 1000000, ms, ms + 1000);
}

static void monotonic_clock_never_goes_back(void **state) {
  (void)state;
  int64_t last_ms = ana_clock_mono_ms(), last_ns = ana_clock_mono_ns();
  for (int i = 0; i < 100000; i++) {
    int64_t ms = ana_clock_mono_ms(), ns = ana_clock_mono_ns();
    assert_true(ms >= last_ms);
    assert_true(ns >= last_ns);
    last_ms = ms;
    last_ns = ns;
  }
  assert_in_range(last_ns / 1000000, last_ms, last_ms + 1000);
  /* The coarse clock is at most a few ticks behind: compared with fine
   * readings on both sides, so that the test thread being preempted between
   * two reads (a loaded machine) cannot look like a lagging clock. */
  int64_t fine_before = ana_clock_mono_ms();
  int64_t coarse = ana_clock_mono_coarse_ms();
  int64_t fine_after = ana_clock_mono_ms();
  assert_true(coarse <= fine_after + 1);
  assert_true(fine_before - coarse < 100);
}

static int64_t ns_of(struct timespec ts) {
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void deadlines_carry_into_seconds(void **state) {
  (void)state;
  for (int64_t ms = 0; ms < 3000; ms += 7) {
    int64_t before = ana_clock_mono_ns();
    struct timespec d = ana_clock_deadline(CLOCK_MONOTONIC, ms);
    int64_t after = ana_clock_mono_ns();
    assert_in_range(d.tv_nsec, 0, 999999999);
    assert_in_range(ns_of(d), before + ms * 1000000, after + ms * 1000000);
  }
  struct timespec past = ana_clock_deadline(CLOCK_MONOTONIC, -5000);
  assert_true(ns_of(past) <= ana_clock_mono_ns());
  int64_t wall_before = ana_clock_wall_ns();
  struct timespec real = ana_deadline_in_ms(1500);
  int64_t wall_after = ana_clock_wall_ns();
  assert_in_range(ns_of(real), wall_before + 1500 * 1000000LL, wall_after + 1500 * 1000000LL);
  assert_in_range(real.tv_nsec, 0, 999999999);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(wall_clock_is_the_epoch_in_ms_and_ns),
      cmocka_unit_test(monotonic_clock_never_goes_back),
      cmocka_unit_test(deadlines_carry_into_seconds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
