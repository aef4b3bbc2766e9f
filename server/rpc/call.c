/* The transport-neutral half of a call: accessors for handlers, admission
 * (authentication, permission, handler lookup) and error details. */
#include "call_internal.h"

#include "ana_alloc.h"
#include "ana_auth.h"
#include "ana_client_ip.h"
#include "ana_log.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "ana_clock.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct ana_handler *handlers[ANA_METHOD_COUNT];
static const char *trusted_proxies;      /* set before the transports start */
static ana_call_finish_hook finish_hook; /* set before the transports start */
/* Methods held by ana_rpc_hold_unbound: while `holding`, their handlers are
 * neither read nor called (they are bound meanwhile from another thread), so
 * the release-store that ends the hold publishes the handlers and the
 * options the services stored before binding them. */
static bool held[ANA_METHOD_COUNT];
static atomic_bool holding;
static struct ana_error hold_status;

void ana_rpc_set_trusted_proxies(const char *list) {
  trusted_proxies = list && list[0] ? list : NULL;
}

void ana_rpc_bind(enum ana_method_id method, const struct ana_handler *handler) {
  if ((unsigned)method < ANA_METHOD_COUNT)
    handlers[method] = handler;
}

void ana_rpc_hold_unbound(enum ana_status code, const char *message) {
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++)
    held[i] = handlers[i] == NULL;
  ana_error_set(&hold_status, code, "%s", message);
  atomic_store_explicit(&holding, true, memory_order_release);
}

void ana_rpc_release_held(void) {
  atomic_store_explicit(&holding, false, memory_order_release);
}

void ana_rpc_set_finish_hook(ana_call_finish_hook hook) {
  finish_hook = hook;
}

const struct ana_handler *ana_rpc_handler(enum ana_method_id method) {
  return (unsigned)method < ANA_METHOD_COUNT ? handlers[method] : NULL;
}

int64_t ana_call_now_mono_ms(void) {
  return ana_clock_mono_ms();
}

void ana_call_init(struct ana_call *call, const struct ana_call_transport *transport,
                   const struct ana_method *method) {
  memset(call, 0, sizeof *call);
  call->transport = transport;
  call->method = method;
  call->peer = "";
  call->deadline_mono_ms = INT64_MAX;
  ana_arena_init(&call->arena, 8192, 0);
  atomic_init(&call->finished, false);
  atomic_init(&call->cancelled, false);
  atomic_init(&call->read_paused, false);
  atomic_init(&call->metrics_open, false);
  ana_rpc_metrics_started(call);
}

void ana_call_fini(struct ana_call *call) {
  ana_rpc_metrics_closed(call);
  ana_arena_destroy(call->message_arena);
  call->message_arena = NULL;
  ana_arena_fini(&call->arena);
}

/* Handler for methods nobody implemented: UNIMPLEMENTED naming the feature. */
static void unimplemented_request(struct ana_call *call, const ProtobufCMessage *request) {
  (void)request;
  const struct ana_method *m = call->method;
  if (m->feature[0])
    ana_call_fail(call, ANA_STATUS_UNIMPLEMENTED, "%s are not implemented yet", m->feature);
  else
    ana_call_fail(call, ANA_STATUS_UNIMPLEMENTED, "%s is not implemented yet", m->path);
}

static void unimplemented_open(struct ana_call *call) {
  unimplemented_request(call, NULL);
}

static const struct ana_handler unimplemented_handler = {
    .on_request = unimplemented_request,
    .on_open = unimplemented_open,
};

int ana_call_admit(struct ana_call *call, struct ana_error *status) {
  /* Loopback: the socket's peer, and the client a trusted proxy (such as
   * analytics-restbridge in TRUSTED_PROXIES) forwards for, so that a proxy
   * on this host does not lend its loopback address to remote clients. */
  char client[INET6_ADDRSTRLEN + 8];
  ana_call_peer_ip(call, client, sizeof client);
  struct ana_admission_input in = {
      .metadata = call->metadata,
      .n_metadata = call->n_metadata,
      .peer = call->peer,
      .peer_is_loopback =
          ana_auth_peer_is_loopback(call->peer) && ana_auth_peer_is_loopback(client),
      .method = call->method,
  };
  int rc = ana_admission_run(&in, &call->arena, &call->principal, status);
  if (rc < 0)
    return rc;
  enum ana_method_id id = ana_method_id_of(call->method);
  if (atomic_load_explicit(&holding, memory_order_acquire) && (unsigned)id < ANA_METHOD_COUNT &&
      held[id])
    return ana_error_set(status, hold_status.code, "%s", hold_status.message);
  const struct ana_handler *h = ana_rpc_handler(id);
  call->handler = h ? h : &unimplemented_handler;
  return 0;
}

void ana_call_mark_cancelled(struct ana_call *call) {
  bool was = atomic_exchange(&call->cancelled, true);
  if (!was && call->handler && call->handler->on_cancel && !atomic_load(&call->finished))
    call->handler->on_cancel(call);
}

/* --- accessors --- */

const struct ana_method *ana_call_method(const struct ana_call *call) {
  return call->method;
}

const struct ana_principal *ana_call_principal(const struct ana_call *call) {
  return &call->principal;
}

const ProtobufCMessage *ana_call_request(const struct ana_call *call) {
  return call->request;
}

int ana_call_rate_charge(struct ana_call *call, int64_t cost, struct ana_error *err) {
  return ana_auth_rate_charge(&call->principal, cost, err);
}

void ana_call_note_upstream_retry(struct ana_call *call, int64_t retry_after_ns) {
  struct ana_principal *p = &call->principal;
  p->rate_charged = true;
  p->rate = (struct ana_rate_decision){.allowed = false,
                                       .limit = -1, /* not known here */
                                       .retry_after_ns = retry_after_ns < 0 ? 0 : retry_after_ns};
}

int64_t ana_call_rate_retry_after_s(const struct ana_call *call) {
  const struct ana_principal *p = &call->principal;
  if (!p->rate_charged || p->rate.allowed || p->rate.retry_after_ns < 0)
    return 0;
  return ana_auth_rate_retry_after_s(&p->rate);
}

const char *ana_call_metadata(const struct ana_call *call, const char *key) {
  for (size_t i = 0; i < call->n_metadata; i++)
    if (strcmp(call->metadata[i].key, key) == 0)
      return call->metadata[i].value;
  return NULL;
}

size_t ana_call_metadata_count(const struct ana_call *call) {
  return call->n_metadata;
}

const struct ana_metadata_entry *ana_call_metadata_at(const struct ana_call *call, size_t i) {
  return i < call->n_metadata ? &call->metadata[i] : NULL;
}

const char *ana_call_peer(const struct ana_call *call) {
  return call->peer;
}

void ana_call_peer_ip(const struct ana_call *call, char *out, size_t size) {
  ana_rpc_client_ip(call->peer, trusted_proxies ? ana_call_metadata(call, "x-forwarded-for") : NULL,
                    out, size);
}

void ana_rpc_client_ip(const char *peer, const char *forwarded_for, char *out, size_t size) {
  if (!peer)
    peer = "";
  const char *p = peer;
  const char *xff = trusted_proxies ? forwarded_for : NULL;
  if (xff && size) {
    ana_client_ip(peer, xff, trusted_proxies, out, size);
    if (out[0])
      return;
  }
  if (strncmp(p, "ipv4:", 5) == 0 || strncmp(p, "ipv6:", 5) == 0)
    p += 5;
  size_t n = strlen(p);
  const char *colon = strrchr(p, ':');
  if (colon && p != peer && (p[0] != '[' || colon[-1] == ']'))
    n = (size_t)(colon - p);
  if (n >= 2 && p[0] == '[' && p[n - 1] == ']') {
    p++;
    n -= 2;
  }
  snprintf(out, size, "%.*s", (int)n, p);
}

int64_t ana_call_remaining_ms(const struct ana_call *call) {
  if (call->deadline_mono_ms == INT64_MAX)
    return INT64_MAX;
  return call->deadline_mono_ms - ana_call_now_mono_ms();
}

bool ana_call_is_cancelled(const struct ana_call *call) {
  return atomic_load(&call->cancelled);
}

struct ana_arena *ana_call_arena(struct ana_call *call) {
  return &call->arena;
}

void ana_call_set_user(struct ana_call *call, void *user) {
  call->user = user;
}

void *ana_call_user(const struct ana_call *call) {
  return call->user;
}

struct ana_arena *ana_call_keep_message(struct ana_call *call) {
  struct ana_arena *a = call->message_arena;
  call->message_arena = NULL;
  return a;
}

void ana_call_pause_reading(struct ana_call *call) {
  atomic_store(&call->read_paused, true);
}

void ana_call_resume_reading(struct ana_call *call) {
  if (atomic_exchange(&call->read_paused, false) && call->transport->reading_changed)
    call->transport->reading_changed(call);
}

/* --- answering --- */

int ana_call_send(struct ana_call *call, const ProtobufCMessage *message) {
  if (atomic_load(&call->finished) || atomic_load(&call->cancelled))
    return ANA_ERR_CLOSED;
  return call->transport->send(call, message);
}

size_t ana_call_send_queue_length(struct ana_call *call) {
  return call->transport->send_queue_length(call);
}

/* --- shared messages --- */

/* Transports one process sends a message through (gRPC and WebSocket in
 * analyticsd), with room to spare. */
#define SHARED_ENCODINGS 4

struct ana_call_shared {
  const ProtobufCMessage *message; /* borrowed */
  bool per_call_sequence;
  pthread_mutex_t mu; /* guards enc */
  struct {
    const struct ana_call_transport *t; /* NULL: free */
    void *data;
    void (*release)(void *);
  } enc[SHARED_ENCODINGS];
};

/* Field 1 of d when it can carry a per-call sequence (a singular uint64). */
static const ProtobufCFieldDescriptor *sequence_field(const ProtobufCMessageDescriptor *d) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
  if (!f || f->type != PROTOBUF_C_TYPE_UINT64 || f->label == PROTOBUF_C_LABEL_REPEATED ||
      (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
    return NULL;
  return f;
}

struct ana_call_shared *ana_call_shared_create(const ProtobufCMessage *message,
                                               bool per_call_sequence) {
  if (per_call_sequence) {
    const ProtobufCFieldDescriptor *f = sequence_field(message->descriptor);
    assert(f && "a per-call sequence needs field 1 to be a singular uint64");
    assert(*(const uint64_t *)((const char *)message + f->offset) == 0);
    (void)f;
  }
  struct ana_call_shared *m = ana_calloc(1, sizeof *m);
  if (!m)
    return NULL;
  if (pthread_mutex_init(&m->mu, NULL) != 0) {
    ana_free(m);
    return NULL;
  }
  m->message = message;
  m->per_call_sequence = per_call_sequence;
  return m;
}

void ana_call_shared_destroy(struct ana_call_shared *m) {
  if (!m)
    return;
  for (size_t i = 0; i < SHARED_ENCODINGS && m->enc[i].t; i++)
    m->enc[i].release(m->enc[i].data);
  pthread_mutex_destroy(&m->mu);
  ana_free(m);
}

const ProtobufCMessage *ana_call_shared_message(const struct ana_call_shared *m) {
  return m->message;
}

bool ana_call_shared_per_call_sequence(const struct ana_call_shared *m) {
  return m->per_call_sequence;
}

void *ana_call_shared_encoding(struct ana_call_shared *m, const struct ana_call_transport *t,
                               ana_call_shared_encode_fn encode, void (*release)(void *), int *rc) {
  void *data = NULL;
  *rc = 0;
  pthread_mutex_lock(&m->mu);
  size_t i = 0;
  while (i < SHARED_ENCODINGS && m->enc[i].t && m->enc[i].t != t)
    i++;
  if (i == SHARED_ENCODINGS) {
    *rc = ANA_ERR_NOMEM; /* more transports than slots: a programming error */
  } else if (m->enc[i].t) {
    data = m->enc[i].data;
  } else if ((data = encode(m, rc)) != NULL) {
    m->enc[i].t = t;
    m->enc[i].data = data;
    m->enc[i].release = release;
  }
  pthread_mutex_unlock(&m->mu);
  return data;
}

int ana_call_send_shared(struct ana_call *call, struct ana_call_shared *m, uint64_t sequence) {
  if (atomic_load(&call->finished) || atomic_load(&call->cancelled))
    return ANA_ERR_CLOSED;
  if (call->transport->send_shared)
    return call->transport->send_shared(call, m, sequence);
  if (!m->per_call_sequence)
    return call->transport->send(call, m->message);
  /* A shallow copy with this call's sequence; what it points to stays
   * shared. Live-stream envelopes are small enough for the stack. */
  const ProtobufCMessageDescriptor *d = m->message->descriptor;
  const ProtobufCFieldDescriptor *f = sequence_field(d);
  alignas(max_align_t) unsigned char small[256];
  void *copy = d->sizeof_message <= sizeof small ? small : ana_malloc(d->sizeof_message);
  if (!copy)
    return ANA_ERR_NOMEM;
  memcpy(copy, m->message, d->sizeof_message);
  memcpy((char *)copy + f->offset, &sequence, sizeof sequence);
  int rc = call->transport->send(call, copy);
  if (copy != small)
    ana_free(copy);
  return rc;
}

void ana_call_add_violation(struct ana_call *call, const char *field, const char *description) {
  struct ana_violation *v = ana_arena_alloc(&call->arena, sizeof *v);
  if (!v)
    return;
  v->field = ana_arena_strdup(&call->arena, field);
  v->description = ana_arena_strdup(&call->arena, description);
  if (!v->field || !v->description)
    return;
  v->next = call->violations;
  call->violations = v;
  call->n_violations++;
}

void ana_call_finish(struct ana_call *call, const ProtobufCMessage *response,
                     const struct ana_error *status) {
  if (atomic_exchange(&call->finished, true)) {
    /* A handler bug; answering twice would corrupt the transport's state. */
    ANA_ERROR("rpc", "%s finished twice; second finish ignored", call->method->path);
    return;
  }
  ana_rpc_metrics_finished(call, status);
  if (finish_hook)
    finish_hook(call, response, status);
  call->transport->finish(call, response, status);
}

void ana_call_reply(struct ana_call *call, const ProtobufCMessage *response) {
  ana_call_finish(call, response, NULL);
}

void ana_call_fail(struct ana_call *call, enum ana_status code, const char *fmt, ...) {
  struct ana_error err;
  va_list ap;
  err.code = code;
  va_start(ap, fmt);
  vsnprintf(err.message, sizeof err.message, fmt, ap);
  va_end(ap);
  ana_call_finish(call, NULL, &err);
}

/* The google.rpc.RetryInfo of a call the rate limit refused, packed in
 * *any (value malloc'd, caller frees). Returns false when there is none. */
static bool retry_info_of(const struct ana_call *call, Google__Protobuf__Any *any) {
  const struct ana_principal *p = &call->principal;
  if (!p->rate_charged || p->rate.allowed || p->rate.retry_after_ns < 0)
    return false;
  Google__Protobuf__Duration delay = GOOGLE__PROTOBUF__DURATION__INIT;
  delay.seconds = p->rate.retry_after_ns / 1000000000LL;
  delay.nanos = (int32_t)(p->rate.retry_after_ns % 1000000000LL);
  Google__Rpc__RetryInfo info = GOOGLE__RPC__RETRY_INFO__INIT;
  info.retry_delay = &delay;
  size_t size = google__rpc__retry_info__get_packed_size(&info);
  uint8_t *bytes = ana_malloc(size ? size : 1);
  if (!bytes)
    return false;
  google__rpc__retry_info__pack(&info, bytes);
  any->type_url = "type.googleapis.com/google.rpc.RetryInfo";
  any->value.data = bytes;
  any->value.len = size;
  return true;
}

/* The call's violations as a google.rpc.BadRequest packed in *any (value
 * malloc'd, caller frees). Returns false when there are none (or no
 * memory). */
static bool bad_request_of(const struct ana_call *call, Google__Protobuf__Any *any) {
  size_t n = call->n_violations;
  if (n == 0)
    return false;
  bool ok = false;
  Google__Rpc__BadRequest__FieldViolation *fv = ana_calloc(n, sizeof *fv);
  Google__Rpc__BadRequest__FieldViolation **fvp = ana_calloc(n, sizeof *fvp);
  if (!fv || !fvp)
    goto out;
  /* The list is newest first; report in the order they were found. */
  size_t i = n;
  for (const struct ana_violation *v = call->violations; v; v = v->next) {
    i--;
    google__rpc__bad_request__field_violation__init(&fv[i]);
    fv[i].field = (char *)v->field;
    fv[i].description = (char *)v->description;
    fvp[i] = &fv[i];
  }
  Google__Rpc__BadRequest bad = GOOGLE__RPC__BAD_REQUEST__INIT;
  bad.n_field_violations = n;
  bad.field_violations = fvp;
  size_t bad_size = google__rpc__bad_request__get_packed_size(&bad);
  uint8_t *bad_bytes = ana_malloc(bad_size ? bad_size : 1);
  if (!bad_bytes)
    goto out;
  google__rpc__bad_request__pack(&bad, bad_bytes);
  any->type_url = "type.googleapis.com/google.rpc.BadRequest";
  any->value.data = bad_bytes;
  any->value.len = bad_size;
  ok = true;
out:
  ana_free(fvp);
  ana_free(fv);
  return ok;
}

uint8_t *ana_call_status_details(const struct ana_call *call, const struct ana_error *status,
                                 size_t *size) {
  Google__Protobuf__Any anys[2] = {GOOGLE__PROTOBUF__ANY__INIT, GOOGLE__PROTOBUF__ANY__INIT};
  Google__Protobuf__Any *anyp[2];
  size_t n = 0;
  uint8_t *out = NULL;
  if (bad_request_of(call, &anys[n]))
    anyp[n] = &anys[n], n++;
  if (retry_info_of(call, &anys[n]))
    anyp[n] = &anys[n], n++;
  if (n == 0)
    return NULL;
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = status ? (int32_t)status->code : 0;
  st.message = status ? (char *)status->message : "";
  st.n_details = n;
  st.details = anyp;
  *size = google__rpc__status__get_packed_size(&st);
  out = ana_malloc(*size ? *size : 1);
  if (out)
    google__rpc__status__pack(&st, out);
  for (size_t i = 0; i < n; i++)
    ana_free(anys[i].value.data);
  return out;
}
