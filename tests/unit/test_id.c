/* Unit tests for UUIDv7 ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_id.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void format_version_and_variant(void **state) {
  (void)state;
  char id[ANA_UUID_STR_LEN + 1];
  assert_int_equal(ana_uuid7_generate_at(0x0123456789abULL, id), 0);
  assert_true(ana_uuid_is_valid(id));
  assert_memory_equal(id, "01234567-89ab-7", 15);
  assert_true(strchr("89ab", id[19]) != NULL);
  assert_int_equal(ana_uuid7_unix_ms(id), 0x0123456789abULL);
}

static void monotonic_within_a_millisecond_and_backwards_clock(void **state) {
  (void)state;
  char a[ANA_UUID_STR_LEN + 1], b[ANA_UUID_STR_LEN + 1];
  ana_uuid7_generate_at(5000000000000ULL, a);
  for (int i = 0; i < 10000; i++) {
    /* Same millisecond, then a clock that steps back: ids keep increasing. */
    ana_uuid7_generate_at(i < 5000 ? 5000000000000ULL : 4999999999000ULL, b);
    assert_true(strcmp(a, b) < 0);
    memcpy(a, b, sizeof a);
  }
}

static void validation(void **state) {
  (void)state;
  assert_true(ana_uuid_is_valid("0190a5f2-1c3b-7d4e-8f00-0123456789ab"));
  assert_false(ana_uuid_is_valid("0190a5f2-1c3b-7d4e-8f00-0123456789a"));
  assert_false(ana_uuid_is_valid("0190a5f2x1c3b-7d4e-8f00-0123456789ab"));
  assert_false(ana_uuid_is_valid("0190a5f2-1c3b-7d4e-8f00-0123456789ag"));
  assert_false(ana_uuid_is_valid(NULL));
  assert_int_equal(ana_uuid7_unix_ms("0190a5f2-1c3b-4d4e-8f00-0123456789ab"), 0);
}

#define THREADS 4
#define PER_THREAD 2000
static char ids[THREADS * PER_THREAD][ANA_UUID_STR_LEN + 1];

static void *generate_many(void *arg) {
  int t = (int)(intptr_t)arg;
  for (int i = 0; i < PER_THREAD; i++)
    ana_uuid7_generate(ids[t * PER_THREAD + i]);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  return strcmp(a, b);
}

static void unique_across_threads(void **state) {
  (void)state;
  pthread_t th[THREADS];
  for (int t = 0; t < THREADS; t++)
    pthread_create(&th[t], NULL, generate_many, (void *)(intptr_t)t);
  for (int t = 0; t < THREADS; t++)
    pthread_join(th[t], NULL);
  qsort(ids, THREADS * PER_THREAD, sizeof ids[0], cmp);
  for (int i = 1; i < THREADS * PER_THREAD; i++)
    assert_true(strcmp(ids[i - 1], ids[i]) < 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(format_version_and_variant),
      cmocka_unit_test(monotonic_within_a_millisecond_and_backwards_clock),
      cmocka_unit_test(validation),
      cmocka_unit_test(unique_across_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
