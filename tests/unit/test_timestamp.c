/* common/timestamp.c: milliseconds to google.protobuf.Timestamp and back,
 * before the epoch (floor: nanos stay in [0, 999999999]), at the second's
 * boundaries, and at the ends of int64. */
#include "ana_arena.h"
#include "ana_timestamp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct pair {
  int64_t ms;
  int64_t seconds;
  int32_t nanos;
};

static const struct pair pairs[] = {
    {0, 0, 0},
    {1, 0, 1000000},
    {999, 0, 999000000},
    {1000, 1, 0},
    {1001, 1, 1000000},
    {-1, -1, 999000000},
    {-999, -1, 1000000},
    {-1000, -1, 0},
    {-1001, -2, 999000000},
    {1717236000123, 1717236000, 123000000},
    {-62135596800000, -62135596800, 0}, /* 0001-01-01T00:00:00Z */
    {INT64_MAX, INT64_MAX / 1000, 807000000},
    {INT64_MAX - 1, INT64_MAX / 1000, 806000000},
    {INT64_MIN, INT64_MIN / 1000 - 1, 192000000},
    {INT64_MIN + 1, INT64_MIN / 1000 - 1, 193000000},
};

static void ms_to_timestamp_floors_before_the_epoch(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    Google__Protobuf__Timestamp t;
    ana_timestamp_set(&t, pairs[i].ms);
    assert_int_equal(t.seconds, pairs[i].seconds);
    assert_int_equal(t.nanos, pairs[i].nanos);
    assert_in_range(t.nanos, 0, 999999999);
    assert_ptr_equal(t.base.descriptor, &google__protobuf__timestamp__descriptor);
  }
}

static void timestamp_to_ms_round_trips(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    Google__Protobuf__Timestamp t;
    ana_timestamp_set(&t, pairs[i].ms);
    assert_int_equal(ana_timestamp_ms(&t), pairs[i].ms);
  }
}

static void sub_millisecond_nanos_floor(void **state) {
  (void)state;
  assert_int_equal(ana_timestamp_parts_ms(0, 999999), 0);
  assert_int_equal(ana_timestamp_parts_ms(0, 1000000), 1);
  assert_int_equal(ana_timestamp_parts_ms(-1, 999999999), -1);
  assert_int_equal(ana_timestamp_parts_ms(-1, 1), -1000);
  /* nanos outside [0, 1e9) (not a valid Timestamp) still floor */
  assert_int_equal(ana_timestamp_parts_ms(0, -1), -1);
  assert_int_equal(ana_timestamp_parts_ms(0, -1000000), -1);
  assert_int_equal(ana_timestamp_parts_ms(0, -1000001), -2);
}

static void out_of_range_seconds_saturate(void **state) {
  (void)state;
  assert_int_equal(ana_timestamp_parts_ms(INT64_MAX, 0), INT64_MAX);
  assert_int_equal(ana_timestamp_parts_ms(INT64_MIN, 0), INT64_MIN);
  assert_int_equal(ana_timestamp_parts_ms(INT64_MAX / 1000 + 1, 0), INT64_MAX);
  assert_int_equal(ana_timestamp_parts_ms(INT64_MIN / 1000 - 1, 0), INT64_MIN);
  assert_int_equal(ana_timestamp_ms(NULL), 0);
}

static void new_timestamp_lives_in_the_arena(void **state) {
  (void)state;
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  Google__Protobuf__Timestamp *t = ana_timestamp_new(&arena, -1500);
  assert_non_null(t);
  assert_int_equal(t->seconds, -2);
  assert_int_equal(t->nanos, 500000000);
  ana_arena_fini(&arena);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ms_to_timestamp_floors_before_the_epoch),
      cmocka_unit_test(timestamp_to_ms_round_trips),
      cmocka_unit_test(sub_millisecond_nanos_floor),
      cmocka_unit_test(out_of_range_seconds_saturate),
      cmocka_unit_test(new_timestamp_lives_in_the_arena),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
