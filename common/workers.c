/* Fixed thread pool with a bounded FIFO of jobs. */
#include "ana_workers.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>

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
