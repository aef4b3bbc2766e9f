/* Unit tests for the worker pool's parallel loop (ana_workers_parallel). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <string.h>

struct counts {
  atomic_int runs[1000];
  pthread_t caller;
  atomic_int off_caller; /* calls made on another thread */
};

static void count(void *ctx, size_t i) {
  struct counts *c = ctx;
  atomic_fetch_add(&c->runs[i], 1);
  if (!pthread_equal(pthread_self(), c->caller))
    atomic_fetch_add(&c->off_caller, 1);
}

static void every_index_runs_once(void **state) {
  (void)state;
  struct ana_workers *w = ana_workers_create(3, 16);
  assert_non_null(w);
  static struct counts c;
  for (int round = 0; round < 50; round++) {
    memset(&c, 0, sizeof c);
    c.caller = pthread_self();
    assert_int_equal(ana_workers_parallel(w, 3, 1000, count, &c), 0);
    for (size_t i = 0; i < 1000; i++)
      assert_int_equal(atomic_load(&c.runs[i]), 1);
  }
  ana_workers_destroy(w);
}

/* A pool busy with a job that waits for the loop to end: the caller runs
 * every index itself instead of waiting for the queue. */
struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool open;
};

static void wait_gate(void *arg) {
  struct gate *g = arg;
  pthread_mutex_lock(&g->mu);
  while (!g->open)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

static void busy_pool_leaves_the_work_to_the_caller(void **state) {
  (void)state;
  struct ana_workers *w = ana_workers_create(1, 16);
  assert_non_null(w);
  struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  assert_int_equal(ana_workers_submit(w, wait_gate, &g), 0);
  static struct counts c;
  memset(&c, 0, sizeof c);
  c.caller = pthread_self();
  assert_int_equal(ana_workers_parallel(w, 2, 100, count, &c), 0);
  for (size_t i = 0; i < 100; i++)
    assert_int_equal(atomic_load(&c.runs[i]), 1);
  assert_int_equal(atomic_load(&c.off_caller), 0);
  /* The helpers queued meanwhile start late and find nothing left. */
  pthread_mutex_lock(&g.mu);
  g.open = true;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  ana_workers_destroy(w);
  for (size_t i = 0; i < 100; i++)
    assert_int_equal(atomic_load(&c.runs[i]), 1);
}

static void no_pool_runs_on_the_caller(void **state) {
  (void)state;
  static struct counts c;
  memset(&c, 0, sizeof c);
  c.caller = pthread_self();
  assert_int_equal(ana_workers_parallel(NULL, 4, 10, count, &c), 0);
  assert_int_equal(ana_workers_parallel(NULL, 4, 0, count, &c), 0);
  for (size_t i = 0; i < 10; i++)
    assert_int_equal(atomic_load(&c.runs[i]), 1);
  assert_int_equal(atomic_load(&c.off_caller), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_index_runs_once),
      cmocka_unit_test(busy_pool_leaves_the_work_to_the_caller),
      cmocka_unit_test(no_pool_runs_on_the_caller),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
