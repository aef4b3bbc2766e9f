/* Memory budgets of the bridge: request bodies and queued WebSocket frames,
 * each bounded for the whole bridge (not per connection), the minimum rate
 * of a body, and giving freed memory back to the system. */
#include "budget.h"

#include "restbridge_internal.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "ana_clock.h"

#include <malloc.h>
#include <string.h>
#include <time.h>

/* Freed bytes after which the trimming thread gives memory back, and how
 * often at most (malloc_trim walks every arena). */
#define TRIM_AFTER_BYTES (4u << 20)
#define TRIM_EVERY_MS 1000

struct rb_budget {
  size_t body_limit, stream_limit; /* 0 = unlimited */
  size_t min_rate;                 /* bytes per second; 0 = none */
  int window_ms;

  atomic_size_t body_used, stream_used;
  struct ana_prom_counter body_refused, body_too_slow, stream_evicted, slow_closed;

  pthread_mutex_t mu;    /* guards the list of tracked calls */
  struct rb_call *calls; /* WebSocket calls that may be evicted */

  /* the trimming thread */
  pthread_mutex_t trim_mu;
  pthread_cond_t trim_cv;
  size_t freed; /* bytes freed since the last trim (trim_mu) */
  bool stop;    /* trim_mu */
  pthread_t trimmer;
  bool trimmer_started;
};

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct rb_budget *bud = ctx;
  ana_prom_write_family(w, "ana_http_body_budget_used_bytes", "gauge",
                        "Bytes reserved by REST request bodies being read or decoded "
                        "(HTTP_BODY_BUDGET_MB for all of them together).");
  ana_prom_write_u64(w, "ana_http_body_budget_used_bytes", NULL, atomic_load(&bud->body_used));
  ana_prom_write_family(w, "ana_http_body_budget_limit_bytes", "gauge",
                        "HTTP_BODY_BUDGET_MB in bytes.");
  ana_prom_write_u64(w, "ana_http_body_budget_limit_bytes", NULL, bud->body_limit);
  ana_prom_write_family(w, "ana_http_body_budget_refused_total", "counter",
                        "Request bodies refused with 503 because the body budget was in use.");
  ana_prom_write_u64(w, "ana_http_body_budget_refused_total", NULL,
                     ana_prom_counter_get(&bud->body_refused));
  ana_prom_write_family(w, "ana_http_body_too_slow_total", "counter",
                        "Request bodies ended with 408 for arriving slower than "
                        "HTTP_BODY_MIN_RATE.");
  ana_prom_write_u64(w, "ana_http_body_too_slow_total", NULL,
                     ana_prom_counter_get(&bud->body_too_slow));
  ana_prom_write_family(w, "ana_websocket_queue_budget_used_bytes", "gauge",
                        "Bytes of WebSocket frames and REST answer chunks queued for their "
                        "clients (STREAM_QUEUE_BUDGET_MB for all of them together).");
  ana_prom_write_u64(w, "ana_websocket_queue_budget_used_bytes", NULL,
                     atomic_load(&bud->stream_used));
  ana_prom_write_family(w, "ana_websocket_queue_budget_limit_bytes", "gauge",
                        "STREAM_QUEUE_BUDGET_MB in bytes.");
  ana_prom_write_u64(w, "ana_websocket_queue_budget_limit_bytes", NULL, bud->stream_limit);
  ana_prom_write_family(w, "ana_websocket_queue_budget_closed_total", "counter",
                        "WebSockets closed with 1008, and REST answers cut, because the queue "
                        "budget was passed (the one with the most queued bytes each time).");
  ana_prom_write_u64(w, "ana_websocket_queue_budget_closed_total", NULL,
                     ana_prom_counter_get(&bud->stream_evicted));
  ana_prom_write_family(w, "ana_websocket_slow_consumer_closed_total", "counter",
                        "WebSockets closed with 1008 because their queue stayed full for "
                        "WS_SLOW_CONSUMER_MS.");
  ana_prom_write_u64(w, "ana_websocket_slow_consumer_closed_total", NULL,
                     ana_prom_counter_get(&bud->slow_closed));
}

/* Gives free heap memory back to the system after large releases: bodies
 * and queues of 30 KB frames are freed into the arenas of the threads that
 * made them, where glibc keeps them otherwise. Rate-limited, and on its own
 * thread so that neither the lws thread nor a handler waits for it. */
static void *trimmer(void *arg) {
  struct rb_budget *bud = arg;
  int64_t last = 0;
  pthread_mutex_lock(&bud->trim_mu);
  while (!bud->stop) {
    if (bud->freed < TRIM_AFTER_BYTES) {
      pthread_cond_wait(&bud->trim_cv, &bud->trim_mu);
      continue;
    }
    int64_t wait = last + TRIM_EVERY_MS - ana_clock_mono_ms();
    if (wait > 0) {
      struct timespec ts = ana_deadline_in_ms(wait);
      pthread_cond_timedwait(&bud->trim_cv, &bud->trim_mu, &ts);
      continue;
    }
    bud->freed = 0;
    pthread_mutex_unlock(&bud->trim_mu);
    malloc_trim(0);
    last = ana_clock_mono_ms();
    pthread_mutex_lock(&bud->trim_mu);
  }
  pthread_mutex_unlock(&bud->trim_mu);
  return NULL;
}

struct rb_budget *rb_budget_create(size_t body_limit, size_t stream_limit, size_t min_rate,
                                   int rate_window_ms) {
  struct rb_budget *bud = ana_calloc(1, sizeof *bud);
  if (!bud)
    return NULL;
  bud->body_limit = body_limit;
  bud->stream_limit = stream_limit;
  bud->min_rate = min_rate;
  bud->window_ms = rate_window_ms > 0 ? rate_window_ms : 10000;
  atomic_init(&bud->body_used, 0);
  atomic_init(&bud->stream_used, 0);
  pthread_mutex_init(&bud->mu, NULL);
  pthread_mutex_init(&bud->trim_mu, NULL);
  pthread_cond_init(&bud->trim_cv, NULL);
  bud->trimmer_started = pthread_create(&bud->trimmer, NULL, trimmer, bud) == 0;
  if (ana_prom_register(collect, bud) < 0) {
    rb_budget_destroy(bud);
    return NULL;
  }
  return bud;
}

void rb_budget_destroy(struct rb_budget *bud) {
  if (!bud)
    return;
  ana_prom_unregister(collect, bud);
  if (bud->trimmer_started) {
    pthread_mutex_lock(&bud->trim_mu);
    bud->stop = true;
    pthread_cond_signal(&bud->trim_cv);
    pthread_mutex_unlock(&bud->trim_mu);
    pthread_join(bud->trimmer, NULL);
  }
  pthread_cond_destroy(&bud->trim_cv);
  pthread_mutex_destroy(&bud->trim_mu);
  pthread_mutex_destroy(&bud->mu);
  ana_free(bud);
}

void rb_budget_released(struct rb_budget *bud, size_t n) {
  if (!bud || !bud->trimmer_started)
    return;
  pthread_mutex_lock(&bud->trim_mu);
  bool was_below = bud->freed < TRIM_AFTER_BYTES;
  bud->freed += n;
  if (was_below && bud->freed >= TRIM_AFTER_BYTES)
    pthread_cond_signal(&bud->trim_cv);
  pthread_mutex_unlock(&bud->trim_mu);
}

/* --- request bodies --- */

bool rb_budget_body_reserve(struct rb_budget *bud, size_t n) {
  if (!bud)
    return true;
  size_t used = atomic_fetch_add(&bud->body_used, n) + n;
  if (!bud->body_limit || used <= bud->body_limit)
    return true;
  atomic_fetch_sub(&bud->body_used, n);
  ana_prom_counter_add(&bud->body_refused, 1);
  return false;
}

void rb_budget_body_release(struct rb_budget *bud, size_t n) {
  if (!bud || !n)
    return;
  atomic_fetch_sub(&bud->body_used, n);
  if (n >= 64 * 1024)
    rb_budget_released(bud, n);
}

void rb_budget_body_free(struct rb_conn *conn) {
  ana_free(conn->body);
  conn->body = NULL;
  conn->body_cap = 0;
  rb_budget_body_release(conn->bridge->budget, conn->body_reserved);
  conn->body_reserved = 0;
}

void rb_budget_body_watch(struct lws *wsi, struct rb_conn *conn) {
  struct rb_budget *bud = conn->bridge->budget;
  conn->rate_mark = 0;
  conn->rate_timer = bud && bud->min_rate;
  if (conn->rate_timer)
    lws_set_timer_usecs(wsi, (lws_usec_t)bud->window_ms * 1000);
}

bool rb_budget_body_too_slow(struct lws *wsi, struct rb_conn *conn) {
  struct rb_budget *bud = conn->bridge->budget;
  if (!bud || !bud->min_rate)
    return false;
  conn->rate_timer = false;
  size_t got = conn->body_len - conn->rate_mark;
  if ((double)got < (double)bud->min_rate * bud->window_ms / 1000.0) {
    ana_prom_counter_add(&bud->body_too_slow, 1);
    return true;
  }
  conn->rate_mark = conn->body_len;
  conn->rate_timer = true;
  lws_set_timer_usecs(wsi, (lws_usec_t)bud->window_ms * 1000);
  return false;
}

/* --- queued stream frames --- */

void rb_budget_stream_track(struct rb_budget *bud, struct rb_call *c) {
  if (!bud || c->bud_listed)
    return;
  pthread_mutex_lock(&bud->mu);
  c->bud_prev = NULL;
  c->bud_next = bud->calls;
  if (bud->calls)
    bud->calls->bud_prev = c;
  bud->calls = c;
  c->bud_listed = true;
  pthread_mutex_unlock(&bud->mu);
}

void rb_budget_stream_untrack(struct rb_budget *bud, struct rb_call *c) {
  if (!bud || !c->bud_listed)
    return;
  pthread_mutex_lock(&bud->mu);
  if (c->bud_prev)
    c->bud_prev->bud_next = c->bud_next;
  else
    bud->calls = c->bud_next;
  if (c->bud_next)
    c->bud_next->bud_prev = c->bud_prev;
  c->bud_prev = c->bud_next = NULL;
  c->bud_listed = false;
  pthread_mutex_unlock(&bud->mu);
}

void rb_budget_stream_pop(struct rb_budget *bud, struct rb_call *c, size_t n) {
  if (!n)
    return;
  atomic_fetch_sub(&c->q_bytes, n);
  if (bud)
    atomic_fetch_sub(&bud->stream_used, n);
}

void rb_budget_stream_drop(struct rb_budget *bud, struct rb_call *c) {
  pthread_mutex_lock(&c->mu);
  struct rb_msg *list = c->q_head, *last = c->ws_last;
  c->q_head = c->q_tail = NULL;
  c->q_len = 0;
  c->ws_last = NULL;
  size_t n = atomic_load(&c->q_bytes);
  rb_budget_stream_pop(bud, c, n);
  pthread_mutex_unlock(&c->mu);
  rb_msg_free(list);
  rb_msg_free(last);
  if (n)
    rb_budget_released(bud, n);
}

/* The tracked call with the most queued bytes not yet evicted, with a
 * reference of its own; NULL when there is none. Tracked calls hold their
 * connection's reference (untracked before it goes), so taking one here is
 * safe. */
static struct rb_call *pick_victim(struct rb_budget *bud) {
  struct rb_call *best = NULL;
  size_t most = 0;
  pthread_mutex_lock(&bud->mu);
  for (struct rb_call *c = bud->calls; c; c = c->bud_next) {
    size_t q = atomic_load(&c->q_bytes);
    if (q > most && !atomic_load(&c->evicted)) {
      best = c;
      most = q;
    }
  }
  if (best) {
    atomic_store(&best->evicted, true);
    atomic_fetch_add(&best->refs, 1);
  }
  pthread_mutex_unlock(&bud->mu);
  return best;
}

void rb_budget_stream_push(struct rb_budget *bud, struct rb_call *c, size_t n) {
  atomic_fetch_add(&c->q_bytes, n);
  if (bud)
    atomic_fetch_add(&bud->stream_used, n);
}

void rb_budget_stream_enforce(struct rb_budget *bud) {
  if (!bud)
    return;
  size_t used = atomic_load(&bud->stream_used);
  while (bud->stream_limit && used > bud->stream_limit) {
    struct rb_call *victim = pick_victim(bud);
    if (!victim)
      break;
    size_t q = atomic_load(&victim->q_bytes);
    ANA_WARN(RB_COMPONENT,
             "queued stream frames and answers hold %zu bytes, over STREAM_QUEUE_BUDGET_MB: "
             "closing the %s call with the most (%zu bytes)",
             used, victim->base.method->path, q);
    ana_prom_counter_add(&bud->stream_evicted, 1);
    rb_budget_stream_drop(bud, victim);
    /* The lws thread closes it and cancels its call (rb_ws_on_wake): not
     * here, where a handler may be holding its own locks to send. */
    rb_call_wake(victim);
    rb_call_unref(victim);
    used = atomic_load(&bud->stream_used);
  }
}

void rb_budget_count_slow_close(struct rb_budget *bud) {
  if (bud)
    ana_prom_counter_add(&bud->slow_closed, 1);
}
