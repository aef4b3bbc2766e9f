/* The client: options, the bounded event queue and the delivery thread that
 * batches, sends (TrackEvents) and retries with backoff. */
#include "analytics_internal.h"
#include "ana_proto_walk.h"

#include "ana_client_stubs.h"
#include "ana_alloc.h"
#include "ana_id.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "ana_clock.h"
#include "ana_timestamp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- Queue --- */

int analytics_queue_init(struct analytics_queue *q, size_t cap) {
  memset(q, 0, sizeof *q);
  q->items = calloc(cap ? cap : 1, sizeof *q->items);
  if (!q->items)
    return ANALYTICS_ERR_NOMEM;
  q->cap = cap;
  return 0;
}

void analytics_queue_fini(struct analytics_queue *q) {
  struct analytics_item it;

  if (!q->items)
    return;
  while (analytics_queue_pop(q, &it, 1) == 1)
    free(it.data);
  free(q->items);
  q->items = NULL;
}

int analytics_queue_push(struct analytics_queue *q, const struct analytics_item *it) {
  if (q->len >= q->cap)
    return ANALYTICS_ERR_QUEUE_FULL;
  q->items[(q->head + q->len) % q->cap] = *it;
  q->len++;
  return 0;
}

size_t analytics_queue_pop(struct analytics_queue *q, struct analytics_item *out, size_t max) {
  size_t n = 0;

  while (n < max && q->len > 0) {
    out[n++] = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
  }
  return n;
}

/* --- Backoff --- */

int64_t analytics_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, uint64_t rnd) {
  int64_t cap = base_ms > 0 ? base_ms : 1, half;

  if (max_ms < cap)
    max_ms = cap;
  for (int i = 1; i < attempt && cap < max_ms; i++)
    cap = cap > max_ms / 2 ? max_ms : cap * 2;
  if (cap > max_ms)
    cap = max_ms;
  half = cap / 2;
  return half + (int64_t)(rnd % (uint64_t)(cap - half + 1));
}

/* xorshift64*: jitter only, no need for more. */
static uint64_t next_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 2685821657736338717ULL;
}

/* --- Options --- */

void analytics_options_init(analytics_options_t *o) {
  memset(o, 0, sizeof *o);
  o->target = "127.0.0.1:50051";
  o->timeout_ms = 10000;
  o->queue_capacity = 10000;
  o->batch_size = 100;
  o->flush_interval_ms = 1000;
  o->max_retries = 5;
  o->backoff_base_ms = 100;
  o->backoff_max_ms = 10000;
  o->close_timeout_ms = 5000;
  o->proto_max_depth = ANA_PROTO_DEFAULT_MAX_DEPTH;
}

/* A credential or account id must be a valid metadata value: 1 to 8192
 * printable ASCII characters (what gRPC would otherwise refuse at every
 * call). NULL is fine (not set). */
static int bad_credential(const char *v, const char *name, analytics_error_t *err) {
  size_t n = 0;
  if (!v)
    return 0;
  for (const unsigned char *p = (const unsigned char *)v; *p; p++, n++)
    if (*p < 0x20 || *p > 0x7e)
      return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                            "options: %s holds a character that is not printable ASCII", name);
  if (n == 0 || n > 8192)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "options: %s must be 1 to 8192 characters", name);
  return 0;
}

static int config_init(struct analytics_config *cfg, const analytics_options_t *in,
                       analytics_error_t *err) {
  analytics_options_t d;

  analytics_options_init(&d);
  cfg->o = in ? *in : d;
  analytics_options_t *o = &cfg->o;
  if (!o->target || !o->target[0])
    o->target = d.target;
  if (o->timeout_ms == 0)
    o->timeout_ms = d.timeout_ms;
  if (o->queue_capacity == 0)
    o->queue_capacity = d.queue_capacity;
  if (o->batch_size == 0)
    o->batch_size = d.batch_size;
  if (o->flush_interval_ms == 0)
    o->flush_interval_ms = d.flush_interval_ms;
  if (o->max_retries == 0)
    o->max_retries = d.max_retries;
  if (o->max_retries < 0)
    o->max_retries = 0;
  if (o->backoff_base_ms == 0)
    o->backoff_base_ms = d.backoff_base_ms;
  if (o->backoff_max_ms == 0)
    o->backoff_max_ms = d.backoff_max_ms;
  if (o->close_timeout_ms == 0)
    o->close_timeout_ms = d.close_timeout_ms;
  if (o->timeout_ms < 0 || o->flush_interval_ms < 0 || o->backoff_base_ms < 0 ||
      o->backoff_max_ms < o->backoff_base_ms || o->close_timeout_ms < 0)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "options: durations must be positive and backoff_max_ms >= "
                          "backoff_base_ms");
  if (o->proto_max_depth == 0)
    o->proto_max_depth = d.proto_max_depth;
  if (o->proto_max_depth < 1 || o->proto_max_depth > ANA_PROTO_MAX_DEPTH_CEILING)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "options: proto_max_depth %d is outside 1 to %d", o->proto_max_depth,
                          ANA_PROTO_MAX_DEPTH_CEILING);
  if (o->batch_size > 1000)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "options: batch_size %zu is over the server's limit of 1000",
                          o->batch_size);
  if (o->token && o->api_key)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "options: token and api_key are exclusive (one credential per client)");
  if (bad_credential(o->token, "token", err) < 0 ||
      bad_credential(o->api_key, "api_key", err) < 0 ||
      bad_credential(o->account_id, "account_id", err) < 0)
    return ANALYTICS_ERR_INVALID;
  cfg->target = strdup(o->target);
  o->target = cfg->target;
  cfg->api_key = o->api_key ? strdup(o->api_key) : NULL;
  cfg->account_id = o->account_id ? strdup(o->account_id) : NULL;
  if (!cfg->target || (o->api_key && !cfg->api_key) || (o->account_id && !cfg->account_id))
    return analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                          "out of memory");
  o->api_key = cfg->api_key;
  o->account_id = cfg->account_id;
  size_t n = 0;
  if (cfg->api_key) {
    cfg->metadata[n++] = "x-api-key";
    cfg->metadata[n++] = cfg->api_key;
  }
  if (cfg->account_id) {
    cfg->metadata[n++] = "x-account-id";
    cfg->metadata[n++] = cfg->account_id;
  }
  cfg->metadata[n] = NULL;
  o->token = NULL; /* not kept here: the client holds it as an analytics_token */
  return 0;
}

struct analytics_token *analytics_token_new(const char *token) {
  size_t n = strlen(token) + sizeof "Bearer ";
  struct analytics_token *tok = malloc(sizeof *tok + n);
  if (!tok)
    return NULL;
  atomic_init(&tok->refs, 1);
  snprintf(tok->authorization, n, "Bearer %s", token);
  return tok;
}

void analytics_token_release(struct analytics_token *tok) {
  if (tok && atomic_fetch_sub(&tok->refs, 1) == 1)
    free(tok);
}

void analytics_call_options(analytics_client_t *c, struct ana_call_options *out,
                            struct analytics_token **tok) {
  memset(out, 0, sizeof *out);
  out->timeout_ms = c->cfg.o.timeout_ms;
  out->metadata = c->cfg.metadata[0] ? c->cfg.metadata : NULL;
  pthread_mutex_lock(&c->token_mu);
  *tok = c->token;
  if (*tok)
    atomic_fetch_add(&(*tok)->refs, 1);
  pthread_mutex_unlock(&c->token_mu);
  if (*tok)
    out->authorization = (*tok)->authorization;
}

int analytics_client_set_token(analytics_client_t *c, const char *token, analytics_error_t *err) {
  struct analytics_token *tok = NULL, *old;

  if (!c)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "client is required");
  if (token && c->cfg.api_key)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "token: the client authenticates with an API key");
  if (bad_credential(token, "token", err) < 0)
    return ANALYTICS_ERR_INVALID;
  if (token && !(tok = analytics_token_new(token)))
    return analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                          "out of memory");
  pthread_mutex_lock(&c->token_mu);
  old = c->token;
  c->token = tok;
  pthread_mutex_unlock(&c->token_mu);
  analytics_token_release(old); /* freed here unless a call still sends it */
  analytics_clear(err);
  return 0;
}

/* --- Lifecycle --- */

analytics_client_t *analytics_client_new(const analytics_options_t *opts, analytics_error_t *err) {
  analytics_client_t *c = NULL;
  struct ana_error aerr;
  pthread_condattr_t ca;
  char seed[ANALYTICS_EVENT_ID_SIZE];

  c = calloc(1, sizeof *c);
  if (!c) {
    analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->token_mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->work_cond, &ca);
  pthread_cond_init(&c->done_cond, &ca);
  pthread_condattr_destroy(&ca);
  if (config_init(&c->cfg, opts, err) < 0)
    goto fail;
  if (opts && opts->token && !(c->token = analytics_token_new(opts->token))) {
    analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if (analytics_queue_init(&c->queue, c->cfg.o.queue_capacity) < 0) {
    analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  c->rnd_state = (uint64_t)ana_clock_wall_ms() ^ (uint64_t)(uintptr_t)c;
  if (ana_uuid7_generate(seed) == 0)
    for (const char *p = seed; *p; p++)
      c->rnd_state = c->rnd_state * 31 + (uint64_t)*p;
  if (!c->rnd_state)
    c->rnd_state = 0x9e3779b97f4a7c15ULL;
  struct ana_client_tls tls = {.enabled = c->cfg.o.tls,
                               .ca_file = c->cfg.o.tls_ca_file,
                               .cert_file = c->cfg.o.tls_cert_file,
                               .key_file = c->cfg.o.tls_key_file,
                               .server_name = c->cfg.o.tls_server_name};
  c->channel = ana_client_channel_create_tls(c->cfg.target, &tls, &aerr);
  /* The files are read: the caller's strings are not kept. */
  c->cfg.o.tls_ca_file = c->cfg.o.tls_cert_file = c->cfg.o.tls_key_file = NULL;
  c->cfg.o.tls_server_name = NULL;
  if (!c->channel) {
    analytics_fail(err, ANALYTICS_ERR_INVALID, (int)aerr.code, "%s", aerr.message);
    goto fail;
  }
  ana_client_channel_set_max_depth(c->channel, c->cfg.o.proto_max_depth);
  if (pthread_create(&c->worker, NULL, analytics_worker_main, c) != 0) {
    analytics_fail(err, ANALYTICS_ERR_INTERNAL, ANALYTICS_STATUS_INTERNAL,
                   "cannot start the delivery thread");
    goto fail;
  }
  c->worker_started = true;
  analytics_clear(err);
  return c;
fail:
  analytics_client_destroy(c);
  return NULL;
}

void analytics_client_destroy(analytics_client_t *c) {
  if (!c)
    return;
  if (c->worker_started) {
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    c->close_deadline_ms = ana_clock_mono_ms() + c->cfg.o.close_timeout_ms;
    pthread_cond_broadcast(&c->work_cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->worker, NULL);
  }
  ana_client_channel_destroy(c->channel);
  analytics_queue_fini(&c->queue);
  pthread_cond_destroy(&c->work_cond);
  pthread_cond_destroy(&c->done_cond);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->token_mu);
  analytics_token_release(c->token);
  free(c->cfg.target);
  free(c->cfg.api_key);
  free(c->cfg.account_id);
  free(c);
}

/* --- Tracking --- */

int analytics_track(analytics_client_t *c, const analytics_event_t *ev, analytics_error_t *err) {
  struct ana_arena arena;
  ProtobufCMessage *msg = NULL;
  struct analytics_item it = {0};
  int rc;

  if (!c || !ev)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "client and event are required");
  ana_arena_init(&arena, 0, 0);
  rc = analytics_event_build(ev, &arena, &msg, err);
  if (rc < 0)
    goto out;
  it.len = protobuf_c_message_get_packed_size(msg);
  it.data = malloc(it.len ? it.len : 1);
  if (!it.data) {
    rc = analytics_fail(err, ANALYTICS_ERR_NOMEM, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                        "out of memory");
    goto out;
  }
  protobuf_c_message_pack(msg, it.data);
  it.enqueued_ms = ana_clock_mono_ms();

  pthread_mutex_lock(&c->mu);
  if (c->closing) {
    rc = ANALYTICS_ERR_CLOSED;
  } else {
    rc = analytics_queue_push(&c->queue, &it);
    if (rc == 0) {
      c->st.tracked++;
      /* Wake the worker when its timer must start or a batch is full. */
      if (c->queue.len == 1 || c->queue.len >= c->cfg.o.batch_size)
        pthread_cond_signal(&c->work_cond);
    } else {
      c->st.dropped++;
    }
  }
  pthread_mutex_unlock(&c->mu);
  if (rc == ANALYTICS_ERR_CLOSED)
    analytics_fail(err, rc, ANALYTICS_STATUS_CANCELLED, "the client is closing");
  else if (rc == ANALYTICS_ERR_QUEUE_FULL)
    analytics_fail(err, rc, ANALYTICS_STATUS_RESOURCE_EXHAUSTED,
                   "queue full (%zu events): event dropped", c->cfg.o.queue_capacity);
  if (rc == 0) {
    it.data = NULL; /* the queue owns it */
    analytics_clear(err);
  }
out:
  free(it.data);
  ana_arena_fini(&arena);
  return rc;
}

/* Absolute monotonic deadline as a timespec for pthread_cond_timedwait. */
static struct timespec abs_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  return ts;
}

int analytics_flush(analytics_client_t *c, int64_t timeout_ms, analytics_error_t *err) {
  uint64_t target, failed_before;
  int64_t deadline = timeout_ms > 0 ? ana_clock_mono_ms() + timeout_ms : 0;
  int rc = 0;

  if (!c)
    return analytics_fail(err, ANALYTICS_ERR_INVALID, ANALYTICS_STATUS_INVALID_ARGUMENT,
                          "client is required");
  pthread_mutex_lock(&c->mu);
  target = c->st.tracked;
  failed_before = c->st.failed;
  if (target > c->flush_target)
    c->flush_target = target;
  pthread_cond_signal(&c->work_cond);
  while (c->resolved < target) {
    if (deadline) {
      struct timespec ts = abs_ms(deadline);
      if (pthread_cond_timedwait(&c->done_cond, &c->mu, &ts) == ETIMEDOUT && c->resolved < target) {
        rc = ANALYTICS_ERR_TIMEOUT;
        break;
      }
    } else {
      pthread_cond_wait(&c->done_cond, &c->mu);
    }
  }
  uint64_t failed = c->st.failed - failed_before, left = target - c->resolved;
  pthread_mutex_unlock(&c->mu);
  if (rc == ANALYTICS_ERR_TIMEOUT)
    return analytics_fail(err, rc, ANALYTICS_STATUS_DEADLINE_EXCEEDED,
                          "flush: %llu events not delivered yet after %lld ms",
                          (unsigned long long)left, (long long)timeout_ms);
  if (failed)
    return analytics_fail(err, ANALYTICS_ERR_UNAVAILABLE, ANALYTICS_STATUS_UNAVAILABLE,
                          "flush: %llu events could not be delivered", (unsigned long long)failed);
  analytics_clear(err);
  return 0;
}

int analytics_stats(analytics_client_t *c, analytics_stats_t *out) {
  if (!c || !out)
    return ANALYTICS_ERR_INVALID;
  pthread_mutex_lock(&c->mu);
  *out = c->st;
  out->queued = c->queue.len + c->inflight;
  pthread_mutex_unlock(&c->mu);
  return 0;
}

/* --- Delivery thread --- */

/* One batch on its way: the events decoded from the queue into arena. */
struct batch {
  struct analytics_item items[1000];
  Analytics__V1__Event *events[1000];
  size_t n;
  struct ana_arena arena;
};

static void report(analytics_client_t *c, const Analytics__V1__Event *e,
                   analytics_failure_kind_t kind, int status, const char *message,
                   const analytics_violation_t *v, size_t nv) {
  analytics_delivery_failure_t f = {
      .kind = kind,
      .event_id = e ? e->event_id : "",
      .event_type = e ? e->event_type : "",
      .event_name = e ? e->event_name : "",
      .status = status,
      .message = message,
      .violations = v,
      .violation_count = nv,
  };
  if (c->cfg.o.on_delivery_failure)
    c->cfg.o.on_delivery_failure(&f, c->cfg.o.delivery_ctx);
}

/* Gives up on every event of b (callback outside the lock). */
static void fail_batch(analytics_client_t *c, struct batch *b, int status, const char *message) {
  for (size_t i = 0; i < b->n; i++)
    report(c, b->events[i], ANALYTICS_FAILURE_UNDELIVERED, status, message, NULL, 0);
  pthread_mutex_lock(&c->mu);
  c->st.failed += b->n;
  pthread_mutex_unlock(&c->mu);
}

static bool retryable(int status) {
  return status == ANA_STATUS_UNAVAILABLE || status == ANA_STATUS_RESOURCE_EXHAUSTED ||
         status == ANA_STATUS_DEADLINE_EXCEEDED;
}

/* The violation field of events the server rejects for its rate limit
 * (its description: "rate limit exceeded: retry after N s"). */
#define RATE_LIMIT_FIELD "rate_limit"

/* The delay of a google.rpc.RetryInfo among the details (a serialized
 * google.rpc.Status) in ms, rounded up; -1 when there is none. Decoded
 * through the wire walk (max_depth, no NUL in strings) as every reply is. */
static int64_t retry_info_ms(const uint8_t *details, size_t len, int max_depth) {
  int64_t ms = -1;
  if (!details)
    return -1;
  Google__Rpc__Status *st = (Google__Rpc__Status *)ana_proto_unpack(
      &google__rpc__status__descriptor, NULL, details, len, max_depth, NULL);
  for (size_t i = 0; st && i < st->n_details && ms < 0; i++) {
    const Google__Protobuf__Any *any = st->details[i];
    if (!any->type_url || strcmp(any->type_url, "type.googleapis.com/google.rpc.RetryInfo") != 0)
      continue;
    Google__Rpc__RetryInfo *ri = (Google__Rpc__RetryInfo *)ana_proto_unpack(
        &google__rpc__retry_info__descriptor, NULL, any->value.data, any->value.len, max_depth,
        NULL);
    if (ri && ri->retry_delay && ri->retry_delay->seconds >= 0 && ri->retry_delay->nanos >= 0)
      ms = ri->retry_delay->seconds * 1000 + (ri->retry_delay->nanos + 999999) / 1000000;
    if (ri)
      google__rpc__retry_info__free_unpacked(ri, NULL);
  }
  if (st)
    google__rpc__status__free_unpacked(st, NULL);
  return ms;
}

/* The delay of a per-event rate-limit rejection in ms; -1 when the result
 * is not one. */
static int64_t rate_limited_ms(const Analytics__V1__EventResult *res) {
  if (res->n_violations == 0 || !res->violations[0]->field ||
      strcmp(res->violations[0]->field, RATE_LIMIT_FIELD) != 0)
    return -1;
  const char *d = res->violations[0]->description;
  const char *p = d ? strstr(d, "retry after ") : NULL;
  long s = p ? strtol(p + 12, NULL, 10) : 1;
  return (s > 0 ? s : 1) * 1000;
}

/* Accounts the server's per-event results of a delivered batch. Events the
 * rate limit rejected are not failures: they are moved to the front of
 * b->events to be sent again after *wait_ms; returns how many. */
static size_t account(analytics_client_t *c, struct batch *b,
                      const Analytics__V1__TrackEventsResponse *r, int64_t *wait_ms) {
  uint64_t acc = 0, dup = 0, rej = 0, lost = 0;
  bool *seen = ana_arena_calloc(&b->arena, b->n ? b->n : 1, sizeof *seen);
  Analytics__V1__Event **again = ana_arena_calloc(&b->arena, b->n ? b->n : 1, sizeof *again);
  size_t n_again = 0;
  *wait_ms = 0;

  for (size_t i = 0; i < r->n_results; i++) {
    const Analytics__V1__EventResult *res = r->results[i];
    if (res->index < 0 || (size_t)res->index >= b->n || (seen && seen[res->index]))
      continue;
    if (seen)
      seen[res->index] = true;
    switch (res->status) {
    case ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED:
    case ANALYTICS__V1__EVENT_RESULT__STATUS__CORRECTED: acc++; break;
    case ANALYTICS__V1__EVENT_RESULT__STATUS__DUPLICATE: dup++; break;
    default: {
      int64_t wait = rate_limited_ms(res);
      if (wait >= 0 && again) {
        again[n_again++] = b->events[res->index];
        if (wait > *wait_ms)
          *wait_ms = wait;
        break;
      }
      analytics_violation_t v[16];
      size_t nv = res->n_violations < 16 ? res->n_violations : 16;
      for (size_t k = 0; k < nv; k++)
        v[k] = (analytics_violation_t){res->violations[k]->field, res->violations[k]->description};
      char msg[512];
      if (nv)
        snprintf(msg, sizeof msg, "%s: %s", v[0].field, v[0].description);
      else
        snprintf(msg, sizeof msg, "rejected by the server");
      rej++;
      report(c, b->events[res->index], ANALYTICS_FAILURE_REJECTED,
             ANALYTICS_STATUS_INVALID_ARGUMENT, msg, v, nv);
      break;
    }
    }
  }
  for (size_t i = 0; seen && i < b->n; i++)
    if (!seen[i]) {
      lost++;
      report(c, b->events[i], ANALYTICS_FAILURE_UNDELIVERED, ANALYTICS_STATUS_INTERNAL,
             "the server's answer has no result for this event", NULL, 0);
    }
  pthread_mutex_lock(&c->mu);
  c->st.accepted += acc;
  c->st.duplicates += dup;
  c->st.rejected += rej;
  c->st.sent += acc + dup + rej;
  c->st.failed += lost;
  c->st.batches++;
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < n_again; i++)
    b->events[i] = again[i];
  return n_again;
}

/* Sends batch b until it is answered, retries run out, or the close deadline
 * passes. Called without the lock. */
static void deliver(analytics_client_t *c, struct batch *b) {
  Analytics__V1__TrackEventsRequest req = ANALYTICS__V1__TRACK_EVENTS_REQUEST__INIT;
  Analytics__V1__TrackEventsResponse *resp = NULL;
  struct ana_call_options opts;
  struct analytics_token *tok;
  struct ana_error aerr = {0};
  size_t n = 0;

  /* Undecodable items cannot happen (we packed them); skip them defensively. */
  for (size_t i = 0; i < b->n; i++) {
    Analytics__V1__Event *e = (Analytics__V1__Event *)ana_proto_unpack(
        &analytics__v1__event__descriptor, &b->arena.pb, b->items[i].data, b->items[i].len,
        ANA_PROTO_DEFAULT_MAX_DEPTH, NULL);
    if (e)
      b->events[n++] = e;
  }
  if (n < b->n) {
    pthread_mutex_lock(&c->mu);
    c->st.failed += b->n - n;
    pthread_mutex_unlock(&c->mu);
  }
  b->n = n;
  req.n_events = n;
  req.events = b->events;
  if (n == 0)
    return;

  /* attempt counts failures; waits the server asked for (RetryInfo, events
   * rejected by its rate limit) do not use up retries: the server says when
   * the batch will pass, and only the close deadline ends them. */
  for (int attempt = 0;;) {
    int64_t sent_ms = ana_clock_wall_ms(), deadline = 0;
    Google__Protobuf__Timestamp *sent_at = ana_arena_alloc(&b->arena, sizeof *sent_at);
    if (sent_at) {
      ana_timestamp_set(sent_at, sent_ms);
      for (size_t i = 0; i < n; i++)
        b->events[i]->sent_at = sent_at;
    }
    analytics_call_options(c, &opts, &tok);
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
      deadline = c->close_deadline_ms;
      int64_t left = deadline - ana_clock_mono_ms();
      if (left < 1)
        left = 1;
      if (left < opts.timeout_ms)
        opts.timeout_ms = left;
    }
    pthread_mutex_unlock(&c->mu);

    uint8_t *details = NULL;
    size_t details_len = 0;
    ProtobufCMessage *out = NULL;
    int rc = ana_client_unary_details(
        c->channel, &ana_methods[ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENTS], &req.base,
        &out, &opts, &details, &details_len, &aerr);
    analytics_token_release(tok);
    resp = (Analytics__V1__TrackEventsResponse *)out;
    int64_t server_wait_ms = -1;
    if (rc < 0 && aerr.code == ANA_STATUS_RESOURCE_EXHAUSTED)
      server_wait_ms = retry_info_ms(details, details_len, c->cfg.o.proto_max_depth);
    ana_free(details);
    if (rc == 0) {
      size_t k = account(c, b, resp, &server_wait_ms);
      protobuf_c_message_free_unpacked(&resp->base, NULL);
      if (k == 0)
        return;
      b->n = n = k; /* the events the rate limit rejected, sent again */
      req.n_events = k;
      snprintf(aerr.message, sizeof aerr.message, "rate limit exceeded");
      aerr.code = ANA_STATUS_RESOURCE_EXHAUSTED;
    } else if (!retryable((int)aerr.code) ||
               (server_wait_ms < 0 && attempt >= c->cfg.o.max_retries)) {
      fail_batch(c, b, (int)aerr.code, aerr.message);
      return;
    }
    if (server_wait_ms < 0)
      attempt++;
    /* Wait before the next attempt (as long as the server asked, else a
     * backoff); destroy shortens the wait to its deadline. */
    int64_t wake = ana_clock_mono_ms() +
                   (server_wait_ms >= 0
                        ? server_wait_ms
                        : analytics_backoff_ms(attempt, c->cfg.o.backoff_base_ms,
                                               c->cfg.o.backoff_max_ms, next_rand(&c->rnd_state)));
    pthread_mutex_lock(&c->mu);
    c->st.retries++;
    for (;;) {
      int64_t until = wake;
      if (c->closing && c->close_deadline_ms < until)
        until = c->close_deadline_ms;
      if (ana_clock_mono_ms() >= until)
        break;
      struct timespec ts = abs_ms(until);
      pthread_cond_timedwait(&c->work_cond, &c->mu, &ts);
    }
    bool expired = c->closing && ana_clock_mono_ms() >= c->close_deadline_ms;
    pthread_mutex_unlock(&c->mu);
    if (expired) {
      char msg[600];
      snprintf(msg, sizeof msg, "client closed before delivery (last error: %s)", aerr.message);
      fail_batch(c, b, (int)aerr.code, msg);
      return;
    }
  }
}

void *analytics_worker_main(void *arg) {
  analytics_client_t *c = arg;
  struct batch *b = calloc(1, sizeof *b);

  pthread_mutex_lock(&c->mu);
  for (;;) {
    int64_t now = ana_clock_mono_ms();
    if (c->queue.len == 0) {
      if (c->closing)
        break;
      pthread_cond_wait(&c->work_cond, &c->mu);
      continue;
    }
    bool expired = c->closing && now >= c->close_deadline_ms;
    if (!b || expired) {
      /* Out of time (or memory): whatever is queued is given up. */
      struct analytics_item it;
      while (analytics_queue_pop(&c->queue, &it, 1) == 1) {
        Analytics__V1__Event *e = (Analytics__V1__Event *)ana_proto_unpack(
            &analytics__v1__event__descriptor, NULL, it.data, it.len, ANA_PROTO_DEFAULT_MAX_DEPTH,
            NULL);
        c->st.failed++;
        c->resolved++;
        pthread_mutex_unlock(&c->mu);
        report(c, e, ANALYTICS_FAILURE_UNDELIVERED, ANALYTICS_STATUS_DEADLINE_EXCEEDED,
               b ? "client closed before delivery" : "out of memory", NULL, 0);
        if (e)
          protobuf_c_message_free_unpacked(&e->base, NULL);
        free(it.data);
        pthread_mutex_lock(&c->mu);
      }
      pthread_cond_broadcast(&c->done_cond);
      if (!b)
        break;
      continue;
    }
    int64_t due = c->queue.items[c->queue.head].enqueued_ms + c->cfg.o.flush_interval_ms;
    bool send_now = c->closing || c->queue.len >= c->cfg.o.batch_size ||
                    c->flush_target > c->resolved + c->inflight || now >= due;
    if (!send_now) {
      struct timespec ts = abs_ms(due);
      pthread_cond_timedwait(&c->work_cond, &c->mu, &ts);
      continue;
    }
    b->n = analytics_queue_pop(&c->queue, b->items, c->cfg.o.batch_size);
    c->inflight += b->n;
    pthread_mutex_unlock(&c->mu);

    ana_arena_init(&b->arena, 64 * 1024, 0);
    size_t taken = b->n;
    deliver(c, b);
    ana_arena_fini(&b->arena);
    for (size_t i = 0; i < taken; i++)
      free(b->items[i].data);

    pthread_mutex_lock(&c->mu);
    c->inflight -= taken;
    c->resolved += taken;
    pthread_cond_broadcast(&c->done_cond);
  }
  pthread_cond_broadcast(&c->done_cond);
  pthread_mutex_unlock(&c->mu);
  free(b);
  return NULL;
}
