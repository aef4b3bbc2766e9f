/* Decoding large REST request bodies (JSON -> request message) off the lws
 * thread: the lws thread hands a body over, a pool thread decodes it into
 * the call's arena and starts the call itself (on_request), or, for
 * handlers with an on_cancel, wakes the lws thread (rb_call_wake, through
 * lws_cancel_service), which then starts it. The pool also frees large
 * calls for the lws thread. */
#include "decode_pool.h"

#include "budget.h"
#include "restbridge_internal.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "ana_workers.h"

#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Decoding is background work beside the lws thread's answers: at the
 * lowest niceness (a weight of 15 against the lws thread's 1024) the
 * scheduler lets the lws thread in first when they share a core (with two
 * cores and two decoders busy, /health would otherwise wait for a time
 * slice). */
#define DECODER_NICE 19

struct rb_decode_job {
  struct rb_decode_job *next;                /* the pool's queue (pool mu) */
  struct rb_decode_job *all_prev, *all_next; /* jobs not dispatched yet (pool mu) */
  struct rb_decode_pool *pool;
  struct rb_call *call;              /* a reference of its own */
  const struct ana_handler *handler; /* set aside until the dispatch */
  struct rb_match match;
  const struct rb_query_param *query; /* in the call's arena */
  size_t n_query;
  struct rb_build_options bo;
  char *body; /* owned until decoded */
  size_t body_len, reserved;

  /* results, published by `done` */
  atomic_bool done;
  bool started; /* on_request ran on the pool: the dispatch only lets go */
  int rc;
  struct ana_error st;
  ProtobufCMessage *req; /* in the call's arena */
};

struct rb_decode_pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct rb_decode_job *head, *tail; /* waiting to be decoded */
  struct rb_decode_job *all;         /* every job not dispatched */
  struct rb_call *reap;              /* calls to free (linked through wake_next) */
  bool stop;
  struct ana_prom_gauge pending;   /* handed over, not decoded yet */
  struct ana_prom_counter decoded; /* bodies decoded */
  struct ana_workers *helpers;     /* chunks of one large body (rb_decode_pool_parallel) */
  int n_threads;
  pthread_t threads[];
};

/* Whether the pool thread may start the call: a handler without on_cancel
 * (unary) never learns of a cancel, so starting it here with the call's
 * handler left unset keeps cancels from reaching it, as during the decode.
 * Handlers with on_cancel are started from the lws thread, in order. */
static bool start_here(const struct rb_decode_job *j) {
  return j->handler && !j->handler->on_cancel && j->call->base.method->kind == ANA_METHOD_UNARY;
}

static void decode(struct rb_decode_job *j) {
  struct rb_call *c = j->call;
  struct rb_budget *bud = c->bridge->budget;
  ana_error_clear(&j->st);
  if (atomic_load(&c->base.cancelled)) {
    j->rc = ANA_ERR_CLOSED; /* the client is gone: not worth decoding */
  } else {
    j->rc = rb_request_build(&c->base, c->route, &j->match, j->query, j->n_query, j->body,
                             j->body_len, &j->bo, &j->req, &j->st);
    if (j->rc == ANA_ERR_NOMEM)
      ana_error_set(&j->st, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  ana_free(j->body);
  j->body = NULL;
  rb_budget_body_release(bud, j->reserved);
  j->reserved = 0;
  if (j->rc == 0 && start_here(j) && !atomic_load(&c->base.cancelled)) {
    /* The handler's own work on the request (validation, sizing 200,000
     * keys) runs here too, not on the lws thread. Its finish may come
     * before `done`: the lws thread then answers and the dispatch after
     * only lets go of the job. */
    j->started = true;
    c->base.request = j->req;
    j->handler->on_request(&c->base, j->req);
  }
  ana_prom_gauge_add(&j->pool->pending, -1);
  ana_prom_counter_add(&j->pool->decoded, 1);
  /* Once `done` is set the lws thread may settle j (freeing it) and drop
   * the job's reference on a wake of its own (the handler's finish): a
   * reference of this thread's keeps c alive until its wake is made. */
  atomic_fetch_add(&c->refs, 1);
  atomic_store(&j->done, true);
  rb_call_wake(c);
  rb_call_unref(c);
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct rb_decode_pool *p = ctx;
  ana_prom_write_family(w, "ana_http_decode_pending", "gauge",
                        "REST request bodies over 64 KiB waiting for or being decoded on the "
                        "HTTP_DECODE_THREADS pool.");
  ana_prom_write_i64(w, "ana_http_decode_pending", NULL, ana_prom_gauge_get(&p->pending));
  ana_prom_write_family(w, "ana_http_decoded_total", "counter",
                        "REST request bodies decoded on the HTTP_DECODE_THREADS pool.");
  ana_prom_write_u64(w, "ana_http_decoded_total", NULL, ana_prom_counter_get(&p->decoded));
}

static void *worker(void *arg) {
  struct rb_decode_pool *p = arg;
  pthread_setname_np(pthread_self(), "ana-decode"); /* top -H, /proc/PID/task/TID/comm */
  /* Linux: the niceness of this thread only. Failing is harmless. */
  (void)setpriority(PRIO_PROCESS, (id_t)gettid(), DECODER_NICE);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stop && !p->head && !p->reap)
      pthread_cond_wait(&p->cv, &p->mu);
    if (p->stop)
      break;
    if (p->reap) {
      struct rb_call *c = p->reap;
      p->reap = c->wake_next;
      pthread_mutex_unlock(&p->mu);
      rb_call_free(c);
      pthread_mutex_lock(&p->mu);
      continue;
    }
    struct rb_decode_job *j = p->head;
    p->head = j->next;
    if (!p->head)
      p->tail = NULL;
    j->next = NULL;
    pthread_mutex_unlock(&p->mu);
    decode(j);
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* A chunk of a body's decoding on a helper, at the decoders' niceness. */
struct help {
  void (*fn)(void *ctx, size_t i);
  void *ctx;
};

static void help_chunk(void *arg, size_t i) {
  static _Thread_local bool niced;
  struct help *h = arg;
  if (!niced) {
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), DECODER_NICE);
    niced = true;
  }
  h->fn(h->ctx, i);
}

void rb_decode_pool_parallel(void *pool, size_t n, void (*fn)(void *ctx, size_t i), void *ctx) {
  struct rb_decode_pool *p = pool;
  struct help h = {fn, ctx};
  /* the calling decoder and one helper fewer than the decoders (at least
   * one): as many threads as decoders */
  ana_workers_parallel(p->helpers, p->n_threads > 1 ? p->n_threads - 1 : 1, n, help_chunk, &h);
}

struct rb_decode_pool *rb_decode_pool_create(int threads) {
  if (threads < 1)
    threads = 1;
  struct rb_decode_pool *p = ana_calloc(1, sizeof *p + (size_t)threads * sizeof(pthread_t));
  if (!p)
    return NULL;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
      break;
    p->n_threads++;
  }
  p->helpers = ana_workers_create(threads, 4 * (size_t)threads);
  if (!p->n_threads || !p->helpers || ana_prom_register(collect, p) < 0) {
    rb_decode_pool_destroy(p);
    return NULL;
  }
  return p;
}

static void unlist(struct rb_decode_pool *p, struct rb_decode_job *j) {
  if (j->all_prev)
    j->all_prev->all_next = j->all_next;
  else
    p->all = j->all_next;
  if (j->all_next)
    j->all_next->all_prev = j->all_prev;
  j->all_prev = j->all_next = NULL;
}

/* Ends job j on the thread that may touch its call (the lws thread, or the
 * destroying one once that is gone): starts or finishes the call, then
 * frees j and drops its reference. */
static void settle(struct rb_decode_job *j, bool run) {
  struct rb_call *c = j->call;
  c->decode = NULL;
  if (!j->started) { /* otherwise started on the pool: its handler finishes it */
    c->base.handler = j->handler;
    if (!run || atomic_load(&c->base.cancelled)) {
      struct ana_error st;
      ana_error_set(&st, ANA_STATUS_CANCELLED, "the request was cancelled while being decoded");
      ana_call_finish(&c->base, NULL, &st);
    } else if (j->rc < 0) {
      ana_call_finish(&c->base, NULL, &j->st);
    } else {
      c->base.request = j->req;
      c->base.handler->on_request(&c->base, j->req);
    }
  }
  ana_free(j->body);
  rb_budget_body_release(c->bridge->budget, j->reserved);
  ana_free(j);
  rb_call_unref(c);
}

void rb_decode_pool_destroy(struct rb_decode_pool *p) {
  if (!p)
    return;
  ana_prom_unregister(collect, p);
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->n_threads; i++)
    pthread_join(p->threads[i], NULL);
  while (p->reap) {
    struct rb_call *c = p->reap;
    p->reap = c->wake_next;
    rb_call_free(c);
  }
  while (p->all) {
    struct rb_decode_job *j = p->all;
    unlist(p, j);
    settle(j, false);
  }
  ana_workers_destroy(p->helpers); /* no decode runs any more */
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  ana_free(p);
}

int rb_decode_pool_submit(struct rb_decode_pool *p, struct rb_call *c, struct rb_conn *conn,
                          const struct rb_match *m, const struct rb_query_param *query,
                          size_t n_query, const struct rb_build_options *bo) {
  struct rb_decode_job *j = ana_calloc(1, sizeof *j);
  if (!j)
    return ANA_ERR_NOMEM;
  j->pool = p;
  j->call = c;
  atomic_fetch_add(&c->refs, 1);
  j->handler = c->base.handler;
  c->base.handler = NULL;
  j->match = *m;
  j->query = query;
  j->n_query = n_query;
  j->bo = *bo;
  j->bo.parallel_pool = p; /* a large array's chunks on the helpers */
  j->body = conn->body;
  j->body_len = conn->body_len;
  j->reserved = conn->body_reserved;
  conn->body = NULL;
  conn->body_cap = 0;
  conn->body_reserved = 0;
  atomic_init(&j->done, false);
  c->decode = j;
  ana_prom_gauge_add(&p->pending, 1);
  pthread_mutex_lock(&p->mu);
  j->all_next = p->all;
  if (p->all)
    p->all->all_prev = j;
  p->all = j;
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

void rb_decode_pool_dispatch(struct rb_call *c) {
  struct rb_decode_job *j = c->decode;
  if (!j || !atomic_load(&j->done))
    return;
  struct rb_decode_pool *p = j->pool;
  pthread_mutex_lock(&p->mu);
  unlist(p, j);
  pthread_mutex_unlock(&p->mu);
  settle(j, true);
}

void rb_decode_pool_reap(struct rb_decode_pool *p, struct rb_call *c) {
  pthread_mutex_lock(&p->mu);
  c->wake_next = p->reap;
  p->reap = c;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}
