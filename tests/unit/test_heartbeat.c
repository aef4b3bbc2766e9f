/* Unit tests for thread heartbeats and the REST bridge's loop heartbeat (liveness, readiness). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ana_heartbeat.h"
#include "ana_restbridge.h"
#include "ana_test_util.h"

#include <string.h>
#include <time.h>

static void test_a_thread_that_stops_beating_is_the_oldest(void **state) {
  (void)state;
  struct ana_heartbeat *a = ana_heartbeat_register("beats");
  struct ana_heartbeat *b = ana_heartbeat_register("stuck");
  assert_non_null(a);
  assert_non_null(b);
  char name[32];
  assert_true(ana_heartbeat_oldest_ms(name, sizeof name) < 50);
  for (int i = 0; i < 12; i++) {
    ana_test_sleep_ms(10);
    ana_heartbeat_beat(a);
  }
  int64_t age = ana_heartbeat_oldest_ms(name, sizeof name);
  assert_true(age >= 100);
  assert_string_equal(name, "stuck");
  /* It beats again: nothing is old any more. */
  ana_heartbeat_beat(b);
  assert_true(ana_heartbeat_oldest_ms(NULL, 0) < 50);
  /* A thread that ended no longer counts. */
  ana_test_sleep_ms(60);
  ana_heartbeat_beat(a);
  ana_heartbeat_unregister(b);
  assert_true(ana_heartbeat_oldest_ms(name, sizeof name) < 50);
  assert_string_equal(name, "beats");
  ana_heartbeat_unregister(a);
  assert_int_equal(ana_heartbeat_oldest_ms(NULL, 0), 0);
}

static void test_a_full_table_returns_null_and_null_is_harmless(void **state) {
  (void)state;
  struct ana_heartbeat *all[ANA_HEARTBEAT_MAX];
  for (size_t i = 0; i < ANA_HEARTBEAT_MAX; i++)
    assert_non_null(all[i] = ana_heartbeat_register("t"));
  assert_null(ana_heartbeat_register("one too many"));
  ana_heartbeat_beat(NULL);
  ana_heartbeat_unregister(NULL);
  for (size_t i = 0; i < ANA_HEARTBEAT_MAX; i++)
    ana_heartbeat_unregister(all[i]);
}

static int health(void *ctx, bool *serving, struct ana_json_buf *extra) {
  (void)ctx;
  (void)extra;
  *serving = true;
  return 0;
}

/* The bridge's service loop turns at least once a second with no traffic at
 * all, so an old timestamp means a stuck thread, not an idle one. */
static void test_an_idle_bridge_loop_keeps_beating(void **state) {
  (void)state;
  struct ana_restbridge_options o = {.host = "127.0.0.1", .port = 0, .health = health};
  struct ana_error err;
  struct ana_restbridge *b = ana_restbridge_create(&o, &err);
  assert_non_null(b);
  ana_test_sleep_ms(100);
  assert_true(ana_restbridge_last_loop_ms(b) > 0);
  for (int i = 0; i < 5; i++) {
    ana_test_sleep_ms(600);
    int64_t age = ana_heartbeat_now_ms() - ana_restbridge_last_loop_ms(b);
    assert_true(age >= 0 && age < 1500);
  }
  ana_restbridge_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_thread_that_stops_beating_is_the_oldest),
      cmocka_unit_test(test_a_full_table_returns_null_and_null_is_harmless),
      cmocka_unit_test(test_an_idle_bridge_loop_keeps_beating),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
