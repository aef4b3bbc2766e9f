/* Fixed thread pool with a bounded FIFO of jobs. */
#include "ana_workers.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

/* Longest request id a job carries (longer ones are cut). */
#define JOB_REQUEST_ID_MAX 96

struct job {
  void (*fn)(void *);
  void *arg;
  char request_id[JOB_REQUEST_ID_MAX]; /* the submitter's, for the job's log lines */
};

struct ana_workers {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  struct job *ring;
  size_t cap, head, len;
  bool stopping;
  pthread_t *threads;
  int n_threads;
};

static void *worker(void *arg) {
  pthread_setname_np(pthread_self(), "ana-worker"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_workers *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (w->len == 0 && !w->stopping)
      pthread_cond_wait(&w->cond, &w->mu);
    if (w->len == 0)
      break;
    struct job j = w->ring[w->head];
    w->head = (w->head + 1) % w->cap;
    w->len--;
    pthread_mutex_unlock(&w->mu);
    ana_log_set_request_id(j.request_id);
    j.fn(j.arg);
    ana_log_set_request_id(NULL);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

struct ana_workers *ana_workers_create(int threads, size_t queue_max) {
  struct ana_workers *w = ana_calloc(1, sizeof *w);
  if (!w)
    return NULL;
  w->cap = queue_max ? queue_max : 1;
  w->ring = ana_calloc(w->cap, sizeof *w->ring);
  w->threads = ana_calloc((size_t)(threads > 0 ? threads : 1), sizeof *w->threads);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cond, NULL);
  if (!w->ring || !w->threads) {
    ana_workers_destroy(w);
    return NULL;
  }
  for (int i = 0; i < (threads > 0 ? threads : 1); i++) {
    if (pthread_create(&w->threads[i], NULL, worker, w) != 0) {
      ana_workers_destroy(w);
      return NULL;
    }
    w->n_threads++;
  }
  return w;
}

int ana_workers_submit(struct ana_workers *w, void (*fn)(void *), void *arg) {
  pthread_mutex_lock(&w->mu);
  int rc = 0;
  if (w->stopping)
    rc = ANA_ERR_CLOSED;
  else if (w->len == w->cap)
    rc = ANA_ERR_FULL;
  else {
    struct job *j = &w->ring[(w->head + w->len) % w->cap];
    j->fn = fn;
    j->arg = arg;
    const char *rid = ana_log_request_id();
    snprintf(j->request_id, sizeof j->request_id, "%s", rid ? rid : "");
    w->len++;
    pthread_cond_signal(&w->cond);
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

void ana_workers_destroy(struct ana_workers *w) {
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->mu);
  for (int i = 0; i < w->n_threads; i++)
    pthread_join(w->threads[i], NULL);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cond);
  ana_free(w->ring);
  ana_free(w->threads);
  ana_free(w);
}

/* A parallel loop's state, shared by the caller and its helper jobs; freed
 * by whichever lets go of it last (a helper may start after the loop has
 * ended). */
struct parallel {
  void (*fn)(void *ctx, size_t i);
  void *ctx;
  size_t n;
  atomic_size_t next; /* the next index to claim */
  size_t done;        /* indexes run (mu) */
  int refs;           /* the caller's and each queued helper's (mu) */
  pthread_mutex_t mu;
  pthread_cond_t cond;
};

static void parallel_release(struct parallel *p) {
  pthread_mutex_lock(&p->mu);
  bool last = --p->refs == 0;
  pthread_mutex_unlock(&p->mu);
  if (last) {
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    ana_free(p);
  }
}

/* Runs indexes until none is left unclaimed. */
static void parallel_run(struct parallel *p) {
  size_t i, ran = 0;
  while ((i = atomic_fetch_add(&p->next, 1)) < p->n) {
    p->fn(p->ctx, i);
    ran++;
  }
  if (!ran)
    return;
  pthread_mutex_lock(&p->mu);
  p->done += ran;
  if (p->done == p->n)
    pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
}

static void parallel_helper(void *arg) {
  struct parallel *p = arg;
  parallel_run(p);
  parallel_release(p);
}

int ana_workers_parallel(struct ana_workers *w, int helpers, size_t n,
                         void (*fn)(void *ctx, size_t i), void *ctx) {
  struct parallel *p = n > 1 && w && helpers > 0 ? ana_calloc(1, sizeof *p) : NULL;
  if (!p) {
    for (size_t i = 0; i < n; i++)
      fn(ctx, i);
    return 0;
  }
  p->fn = fn;
  p->ctx = ctx;
  p->n = n;
  atomic_init(&p->next, 0);
  p->refs = 1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cond, NULL);
  if ((size_t)helpers > n - 1)
    helpers = (int)(n - 1);
  for (int h = 0; h < helpers; h++) {
    pthread_mutex_lock(&p->mu);
    p->refs++;
    pthread_mutex_unlock(&p->mu);
    if (ana_workers_submit(w, parallel_helper, p) < 0) {
      pthread_mutex_lock(&p->mu);
      p->refs--;
      pthread_mutex_unlock(&p->mu);
      break; /* a full pool: the caller runs the rest */
    }
  }
  parallel_run(p);
  pthread_mutex_lock(&p->mu);
  while (p->done < p->n)
    pthread_cond_wait(&p->cond, &p->mu);
  pthread_mutex_unlock(&p->mu);
  parallel_release(p);
  return 0;
}
