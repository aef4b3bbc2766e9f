/* The remote upstream of the bridge: each call admitted by the bridge is
 * forwarded to analyticsd over gRPC. Unary calls use the generic client
 * runtime, whose calls block, so they run on a worker pool, never on the
 * lws thread; server streams all run on one thread, through the runtime's
 * stream multiplexer (streams.c). Metadata passed on:
 * authorization, x-request-id, x-forwarded-for/-host and the other headers the bridge captured; the
 * deadline is what is left of the call's (Grpc-Timeout). The upstream's
 * status code and message come back verbatim, and google.rpc.BadRequest
 * details (grpc-status-details-bin) become the call's field violations, so
 * the bridge renders the same error JSON as in-process. Authentication and
 * permissions are the upstream's business: nothing is checked here. */
#include "remote_internal.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "analytics/v1/metrics.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "ana_clock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define COMPONENT RR_COMPONENT
#define DEFAULT_WORKERS 16
#define DEFAULT_QUEUE_MAX 1024
#define DEFAULT_HEALTH_INTERVAL_MS 2000
#define BAD_REQUEST_TYPE "type.googleapis.com/google.rpc.BadRequest"
#define RETRY_INFO_TYPE "type.googleapis.com/google.rpc.RetryInfo"

void rr_fwd_lock(struct fwd *f) {
  while (atomic_flag_test_and_set_explicit(&f->lock, memory_order_acquire)) {
  }
}

void rr_fwd_unlock(struct fwd *f) {
  atomic_flag_clear_explicit(&f->lock, memory_order_release);
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* --- metadata and deadline --- */

static bool printable(const char *v) {
  for (const unsigned char *p = (const unsigned char *)v; *p; p++)
    if (*p < 0x20 || *p > 0x7e)
      return false;
  return true;
}

int rr_call_options(struct ana_call *call, struct ana_call_options *opts, const char **kv) {
  memset(opts, 0, sizeof *opts);
  int64_t left = ana_call_remaining_ms(call);
  if (left != INT64_MAX) {
    if (left <= 0)
      return ANA_ERR_TIMEOUT;
    opts->timeout_ms = left;
  }
  size_t n = 0;
  for (size_t i = 0; i < ana_call_metadata_count(call); i++) {
    const struct ana_metadata_entry *e = ana_call_metadata_at(call, i);
    if (strcmp(e->key, "authorization") == 0) {
      if (printable(e->value))
        opts->authorization = e->value;
      continue;
    }
    /* Header values the gRPC runtime would refuse are left out rather than
     * failing the whole call. */
    if (n == RR_MAX_FORWARDED_METADATA || strncmp(e->key, "grpc-", 5) == 0 || !printable(e->value))
      continue;
    kv[2 * n] = e->key;
    kv[2 * n + 1] = e->value;
    n++;
  }
  kv[2 * n] = NULL;
  opts->metadata = kv;
  return 0;
}

/* --- answers --- */

/* The google.rpc.BadRequest field violations of a serialized
 * google.rpc.Status become the call's violations, and a google.rpc.RetryInfo
 * (the upstream's rate limit) the call's retry delay. Other detail types are
 * dropped: the bridge renders only these. */
static void add_details(struct ana_call *call, const uint8_t *details, size_t len, int max_depth) {
  Google__Rpc__Status *st = (void *)ana_proto_unpack(&google__rpc__status__descriptor, NULL,
                                                     details, len, max_depth, NULL);
  if (!st) {
    ANA_DEBUG(COMPONENT, "%s: undecodable grpc-status-details-bin", call->method->path);
    return;
  }
  for (size_t i = 0; i < st->n_details; i++) {
    const Google__Protobuf__Any *any = st->details[i];
    if (any->type_url && strcmp(any->type_url, RETRY_INFO_TYPE) == 0) {
      Google__Rpc__RetryInfo *ri =
          (void *)ana_proto_unpack(&google__rpc__retry_info__descriptor, NULL, any->value.data,
                                   any->value.len, max_depth, NULL);
      /* At most a day, so that a wild delay cannot overflow. */
      if (ri && ri->retry_delay && ri->retry_delay->seconds >= 0)
        ana_call_note_upstream_retry(call, ri->retry_delay->seconds > 86400
                                               ? 86400 * 1000000000LL
                                               : ri->retry_delay->seconds * 1000000000LL +
                                                     ri->retry_delay->nanos);
      if (ri)
        google__rpc__retry_info__free_unpacked(ri, NULL);
      continue;
    }
    if (!any->type_url || strcmp(any->type_url, BAD_REQUEST_TYPE) != 0) {
      ANA_DEBUG(COMPONENT, "%s: status detail %s not passed on", call->method->path,
                any->type_url ? any->type_url : "(none)");
      continue;
    }
    Google__Rpc__BadRequest *bad =
        (void *)ana_proto_unpack(&google__rpc__bad_request__descriptor, NULL, any->value.data,
                                 any->value.len, max_depth, NULL);
    for (size_t j = 0; bad && j < bad->n_field_violations; j++) {
      const Google__Rpc__BadRequest__FieldViolation *fv = bad->field_violations[j];
      ana_call_add_violation(call, fv->field ? fv->field : "",
                             fv->description ? fv->description : "");
    }
    if (bad)
      google__rpc__bad_request__free_unpacked(bad, NULL);
  }
  google__rpc__status__free_unpacked(st, NULL);
}

void rr_finish_error(struct ana_restbridge_remote *r, struct ana_call *call,
                     const struct ana_error *e, uint8_t *details, size_t details_len) {
  struct ana_error st = *e;
  if (st.code == ANA_STATUS_OK) /* a runtime failure without a status */
    st.code = ANA_STATUS_INTERNAL;
  if (details)
    add_details(call, details, details_len, r->max_depth);
  ana_free(details);
  ana_prom_counter_add(&r->failed, 1);
  ana_call_finish(call, NULL, &st);
}

void rr_call_done(struct ana_restbridge_remote *r, bool stream) {
  if (stream)
    ana_prom_gauge_add(&r->streams_open, -1);
  ana_prom_gauge_add(&r->active, -1);
}

/* --- unary (worker thread) --- */

/* The current unary channel, held until chan_put. */
static struct rr_channel *chan_get(struct ana_restbridge_remote *r) {
  pthread_mutex_lock(&r->chan_mu);
  struct rr_channel *c = r->chan;
  c->refs++;
  pthread_mutex_unlock(&r->chan_mu);
  return c;
}

static void chan_put(struct ana_restbridge_remote *r, struct rr_channel *c) {
  pthread_mutex_lock(&r->chan_mu);
  bool last = --c->refs == 0;
  pthread_mutex_unlock(&r->chan_mu);
  if (last) {
    ana_client_channel_destroy(c->ch);
    ana_free(c);
  }
}

/* A unary channel with r's TLS settings (the files read now). */
static struct rr_channel *chan_create(struct ana_restbridge_remote *r, struct ana_error *err) {
  struct rr_channel *c = ana_calloc(1, sizeof *c);
  if (!c) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  c->refs = 1;
  if (!(c->ch = ana_client_channel_create_tls(r->target, &r->tls, err))) {
    ana_free(c);
    return NULL;
  }
  ana_client_channel_set_max_depth(c->ch, r->max_depth);
  return c;
}

static void run_unary(void *arg) {
  struct fwd *f = arg;
  struct ana_restbridge_remote *r = f->r;
  struct ana_call *call = f->call;
  struct ana_call_options opts;
  const char *kv[2 * RR_MAX_FORWARDED_METADATA + 1];
  struct ana_error err;
  ProtobufCMessage *resp = NULL;
  uint8_t *details = NULL;
  size_t details_len = 0;

  if (ana_call_is_cancelled(call)) {
    ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
    goto out;
  }
  if (rr_call_options(call, &opts, kv) < 0) {
    ana_call_fail(call, ANA_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
    goto out;
  }
  struct rr_channel *c = chan_get(r);
  int rc = ana_client_unary_details(c->ch, call->method, f->request, &resp, &opts, &details,
                                    &details_len, &err);
  chan_put(r, c);
  if (rc < 0) {
    rr_finish_error(r, call, &err, details, details_len);
    goto out;
  }
  ana_call_finish(call, resp, NULL); /* encodes the JSON answer here */
  protobuf_c_message_free_unpacked(resp, NULL);
out:
  rr_call_done(r, false);
}

/* --- the handler the bridge drives --- */

static void fwd_on_request(struct ana_call *call, const ProtobufCMessage *request) {
  struct fwd *f = ana_call_user(call);
  struct ana_restbridge_remote *r = f->r;
  f->request = request;
  ana_prom_gauge_add(&r->active, 1);
  ana_prom_counter_add(&r->forwarded, 1);
  if (call->method->kind == ANA_METHOD_SERVER_STREAMING) {
    struct ana_error err;
    ana_prom_gauge_add(&r->streams_open, 1);
    if (rr_streams_open(r->streams, f, &err) < 0) {
      rr_call_done(r, true);
      rr_finish_error(r, call, &err, NULL, 0);
    }
    return;
  }
  if (ana_workers_submit(r->workers, run_unary, f) < 0) {
    rr_call_done(r, false);
    ana_call_fail(call, ANA_STATUS_UNAVAILABLE, "the bridge is overloaded; retry later");
  }
}

static void fwd_on_cancel(struct ana_call *call) {
  struct fwd *f = ana_call_user(call);
  rr_fwd_lock(f);
  f->cancelled = true;
  rr_stream_cancel(f->stream); /* does not block */
  rr_fwd_unlock(f);
}

static const struct ana_handler forward_handler = {
    .on_request = fwd_on_request,
    .on_cancel = fwd_on_cancel,
};

static int remote_admit(void *ctx, struct ana_call *call, struct ana_error *st) {
  struct fwd *f = ana_arena_calloc(&call->arena, 1, sizeof *f);
  if (!f)
    return ana_error_set(st, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  f->r = ctx;
  f->call = call;
  atomic_flag_clear(&f->lock);
  call->user = f;
  call->handler = &forward_handler;
  return 0;
}

/* --- health and metrics --- */

static int probe(struct ana_restbridge_remote *r) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  struct ana_call_options opts = {.timeout_ms = 1000};
  req.service = "";
  struct rr_channel *c = chan_get(r);
  int rc = ana_client_unary(c->ch, &ana_methods[ANA_METHOD_GRPC_HEALTH_V1_HEALTH_CHECK], &req.base,
                            &resp, &opts, NULL);
  chan_put(r, c);
  if (rc < 0)
    return -1;
  int status = (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
  protobuf_c_message_free_unpacked(resp, NULL);
  return status;
}

static void *prober(void *arg) {
  struct ana_restbridge_remote *r = arg;
  int last = -2;
  pthread_mutex_lock(&r->mu);
  while (!r->stop) {
    pthread_mutex_unlock(&r->mu);
    int status = probe(r);
    atomic_store(&r->upstream_status, status);
    if (status != last)
      ANA_INFO(COMPONENT, "upstream %s: %s", r->target,
               status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   ? "serving"
                   : "not serving");
    last = status;
    struct timespec until = ana_deadline_in_ms(r->health_interval_ms);
    pthread_mutex_lock(&r->mu);
    while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) != ETIMEDOUT) {
    }
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

int ana_restbridge_remote_health(void *ctx, bool *serving, struct ana_json_buf *extra) {
  struct ana_restbridge_remote *r = ctx;
  int status = atomic_load(&r->upstream_status);
  const char *name;
  switch (status) {
  case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING: name = "SERVING"; break;
  case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
    name = "NOT_SERVING";
    break;
  case -1: name = "UNREACHABLE"; break;
  default: name = "UNKNOWN"; break;
  }
  *serving = status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  if (ana_restbridge_health_add(extra, "mode", "remote") < 0 ||
      ana_restbridge_health_add(extra, "upstream", r->target) < 0 ||
      ana_restbridge_health_add(extra, "upstreamStatus", name) < 0)
    return ANA_ERR_NOMEM;
  return 0;
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_restbridge_remote *r = ctx;
  ana_prom_write_family(w, "ana_upstream_up", "gauge",
                        "1 when the upstream analyticsd answered its last health check SERVING.");
  ana_prom_write_i64(w, "ana_upstream_up", NULL,
                     atomic_load(&r->upstream_status) ==
                         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  ana_prom_write_family(w, "ana_upstream_calls_active", "gauge",
                        "Calls forwarded to the upstream and not finished yet.");
  ana_prom_write_i64(w, "ana_upstream_calls_active", NULL, ana_prom_gauge_get(&r->active));
  ana_prom_write_family(w, "ana_upstream_streams_open", "gauge",
                        "Server streams open to the upstream (one per WebSocket).");
  ana_prom_write_i64(w, "ana_upstream_streams_open", NULL, ana_prom_gauge_get(&r->streams_open));
  ana_prom_write_family(w, "ana_upstream_calls_total", "counter",
                        "Calls forwarded to the upstream.");
  ana_prom_write_u64(w, "ana_upstream_calls_total", NULL, ana_prom_counter_get(&r->forwarded));
  ana_prom_write_family(w, "ana_upstream_errors_total", "counter",
                        "Forwarded calls that ended with a non-OK status.");
  ana_prom_write_u64(w, "ana_upstream_errors_total", NULL, ana_prom_counter_get(&r->failed));
}

/* --- lifecycle --- */

struct ana_restbridge_remote *
ana_restbridge_remote_create(const struct ana_restbridge_remote_options *o, struct ana_error *err) {
  struct ana_restbridge_remote *r = ana_calloc(1, sizeof *r);
  if (!r) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  pthread_mutex_init(&r->chan_mu, NULL);
  atomic_init(&r->upstream_status, -1);
  r->health_interval_ms =
      o->health_interval_ms > 0 ? o->health_interval_ms : DEFAULT_HEALTH_INTERVAL_MS;
  r->up.name = "remote";
  r->up.admit = remote_admit;
  r->up.ctx = r;
  r->target = ana_strdup(o->target ? o->target : "");
  if (!r->target)
    goto nomem;
  r->max_depth = o->proto_max_depth > 0 ? o->proto_max_depth : ANA_PROTO_DEFAULT_MAX_DEPTH;
  if ((o->tls_ca_file && !(r->tls_ca_file = ana_strdup(o->tls_ca_file))) ||
      (o->tls_cert_file && !(r->tls_cert_file = ana_strdup(o->tls_cert_file))) ||
      (o->tls_key_file && !(r->tls_key_file = ana_strdup(o->tls_key_file))) ||
      (o->tls_server_name && !(r->tls_server_name = ana_strdup(o->tls_server_name))))
    goto nomem;
  r->tls = (struct ana_client_tls){.enabled = o->tls,
                                   .ca_file = r->tls_ca_file,
                                   .cert_file = r->tls_cert_file,
                                   .key_file = r->tls_key_file,
                                   .server_name = r->tls_server_name};
  struct ana_client_tls tls = r->tls;
  if (!(r->chan = chan_create(r, err)))
    goto fail;
  r->workers = ana_workers_create(o->workers > 0 ? o->workers : DEFAULT_WORKERS,
                                  o->queue_max ? o->queue_max : DEFAULT_QUEUE_MAX);
  if (!r->workers)
    goto nomem;
  r->streams = rr_streams_create(o->target, &tls, r->max_depth, err);
  if (!r->streams)
    goto fail;
  if (pthread_create(&r->prober, NULL, prober, r) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the upstream health prober");
    goto fail;
  }
  r->prober_started = true;
  r->registered = ana_prom_register(collect, r) == 0;
  return r;
nomem:
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
  ana_restbridge_remote_destroy(r, 0);
  return NULL;
}

const struct ana_restbridge_upstream *
ana_restbridge_remote_upstream(struct ana_restbridge_remote *r) {
  return &r->up;
}

int ana_restbridge_remote_destroy(struct ana_restbridge_remote *r, int grace_ms) {
  if (!r)
    return 0;
  if (r->registered)
    ana_prom_unregister(collect, r);
  if (r->prober_started) {
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->prober, NULL);
  }
  /* Runs what is queued (those calls were cancelled: they end fast). */
  ana_workers_destroy(r->workers);
  for (int waited = 0; ana_prom_gauge_get(&r->active) > 0 && waited < grace_ms; waited += 10)
    sleep_ms(10);
  if (ana_prom_gauge_get(&r->active) > 0) {
    ANA_WARN(COMPONENT, "%lld forwarded call(s) still running; leaving the channel open",
             (long long)ana_prom_gauge_get(&r->active));
    return ANA_ERR_TIMEOUT;
  }
  rr_streams_destroy(r->streams);
  if (r->chan)
    chan_put(r, r->chan);
  ana_free(r->target);
  ana_free(r->tls_ca_file);
  ana_free(r->tls_cert_file);
  ana_free(r->tls_key_file);
  ana_free(r->tls_server_name);
  pthread_mutex_destroy(&r->chan_mu);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  ana_free(r);
  return 0;
}

int ana_restbridge_remote_reload_tls(struct ana_restbridge_remote *r, struct ana_error *err) {
  if (!r->tls.enabled && !r->tls.ca_file && !r->tls.cert_file && !r->tls.key_file)
    return 0; /* plaintext upstream: nothing to read again */
  struct rr_channel *fresh = chan_create(r, err);
  if (!fresh)
    return ANA_ERR_INVALID;
  if (rr_streams_reload(r->streams, r->target, &r->tls, err) < 0) {
    chan_put(r, fresh);
    return ANA_ERR_INVALID;
  }
  pthread_mutex_lock(&r->chan_mu);
  struct rr_channel *old = r->chan;
  r->chan = fresh;
  pthread_mutex_unlock(&r->chan_mu);
  chan_put(r, old);
  ANA_INFO(COMPONENT, "upstream TLS files read again: calls from now on use them");
  return 0;
}
