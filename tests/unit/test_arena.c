/* Unit tests for the region allocator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_alloc.h"
#include "ana_arena.h"

#include <stdalign.h>
#include <string.h>

static void allocations_are_aligned_and_distinct(void **state) {
  (void)state;
  struct ana_arena a;
  ana_arena_init(&a, 64, 0);
  char *prev = NULL;
  for (int i = 1; i < 200; i++) {
    char *p = ana_arena_alloc(&a, (size_t)i);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
    memset(p, 0xab, (size_t)i); /* ASan catches overlap with chunk headers */
    assert_ptr_not_equal(p, prev);
    prev = p;
  }
  ana_arena_fini(&a);
}

static void large_allocation_keeps_current_chunk(void **state) {
  (void)state;
  struct ana_arena a;
  ana_arena_init(&a, 256, 0);
  char *small1 = ana_arena_alloc(&a, 16);
  char *big = ana_arena_alloc(&a, 10000);
  char *small2 = ana_arena_alloc(&a, 16);
  assert_non_null(small1);
  assert_non_null(big);
  /* The small allocation continues in the same chunk as the first. */
  assert_true(small2 > small1 && small2 < small1 + 256);
  ana_arena_fini(&a);
}

static void limit_is_enforced(void **state) {
  (void)state;
  struct ana_arena a;
  ana_arena_init(&a, 0, 1024);
  assert_non_null(ana_arena_alloc(&a, 512));
  assert_null(ana_arena_alloc(&a, 1024));
  assert_null(ana_arena_alloc(&a, SIZE_MAX));
  assert_non_null(ana_arena_alloc(&a, 256));
  ana_arena_reset(&a);
  assert_int_equal(a.used, 0);
  assert_non_null(ana_arena_alloc(&a, 1000));
  ana_arena_fini(&a);
}

static void calloc_and_strdup(void **state) {
  (void)state;
  struct ana_arena a;
  ana_arena_init(&a, 0, 0);
  int *z = ana_arena_calloc(&a, 10, sizeof(int));
  for (int i = 0; i < 10; i++)
    assert_int_equal(z[i], 0);
  assert_null(ana_arena_calloc(&a, SIZE_MAX / 2, 4));
  assert_string_equal(ana_arena_strdup(&a, "hello"), "hello");
  assert_string_equal(ana_arena_strndup(&a, "hello", 3), "hel");
  ana_arena_fini(&a);
}

static void out_of_memory_returns_null(void **state) {
  (void)state;
  struct ana_arena a;
  ana_arena_init(&a, 0, 0);
  ana_alloc_fail_after(1);
  assert_null(ana_arena_alloc(&a, 8));
  assert_non_null(ana_arena_alloc(&a, 8));
  ana_arena_fini(&a);
}

static void works_as_protobuf_allocator(void **state) {
  (void)state;
  struct ana_arena a;
  ana_arena_init(&a, 0, 0);
  void *p = a.pb.alloc(a.pb.allocator_data, 100);
  assert_non_null(p);
  a.pb.free(a.pb.allocator_data, p); /* no-op; freed with the arena */
  assert_true(a.used >= 100);
  ana_arena_fini(&a);
}

static void adopted_chunks_live_with_the_adopter(void **state) {
  (void)state;
  struct ana_arena a, b;
  ana_arena_init(&a, 64, 0);
  ana_arena_init(&b, 64, 0);
  char *keep = ana_arena_strdup(&a, "first");
  for (int i = 0; i < 50; i++)
    assert_non_null(ana_arena_alloc(&b, 40));
  char *moved = ana_arena_strdup(&b, "moved");
  size_t used = a.used + b.used;
  ana_arena_adopt(&a, &b);
  assert_int_equal(a.used, used);
  assert_int_equal(b.used, 0);
  assert_null(b.head);
  /* a's current chunk stays first: its free space is used next */
  char *next = ana_arena_alloc(&a, 8);
  assert_ptr_equal(next, keep + 16);
  ana_arena_adopt(&a, &b); /* an empty arena: nothing moves */
  assert_string_equal(moved, "moved");
  assert_non_null(ana_arena_strdup(&b, "reusable"));
  ana_arena_fini(&b);
  ana_arena_fini(&a); /* frees the adopted chunks (ASan: no leak) */
  struct ana_arena empty;
  ana_arena_init(&empty, 64, 0);
  ana_arena_init(&b, 64, 0);
  assert_non_null(ana_arena_strdup(&b, "x"));
  ana_arena_adopt(&empty, &b);
  assert_non_null(empty.head);
  ana_arena_fini(&empty);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(allocations_are_aligned_and_distinct),
      cmocka_unit_test(large_allocation_keeps_current_chunk),
      cmocka_unit_test(limit_is_enforced),
      cmocka_unit_test(calloc_and_strdup),
      cmocka_unit_test(adopted_chunks_live_with_the_adopter),
      cmocka_unit_test(out_of_memory_returns_null),
      cmocka_unit_test(works_as_protobuf_allocator),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
