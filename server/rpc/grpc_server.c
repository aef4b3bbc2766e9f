/* gRPC transport on the core C API: completion-queue threads, pre-posted
 * requests per method, per-call state machines (one op of each type in
 * flight; a write queue behind SEND_MESSAGE) and the shutdown order that
 * keeps completion queues alive until the last call has been freed. */
#include "ana_grpc_server.h"

#include "ana_alloc.h"
#include "ana_grpc_log.h"
#include "ana_heartbeat.h"
#include "ana_id.h"
#include "ana_listen.h"
#include "ana_log.h"
#include "ana_proto_walk.h"
#include "ana_tls_files.h"
#include "ana_call_transport.h"
#include "ana_clock.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Requests kept posted per method and completion queue: how many calls of
 * one method can arrive at once before core has to queue them. */
#define SLOTS_PER_METHOD 4
#define GENERIC_SLOTS 2

/* A completion-queue thread waits at most this long before it beats. */
#define CQ_BEAT_MS 1000

enum tag_kind { TAG_REQUEST, TAG_RECV_CLOSE, TAG_RECV_MESSAGE, TAG_SEND, TAG_SHUTDOWN };

struct tag {
  enum tag_kind kind;
  void *owner;
};

struct ana_grpc_server;

/* One pre-posted request for a call (registered method or generic). */
struct request_slot {
  struct tag tag;
  struct ana_grpc_server *srv;
  grpc_completion_queue *cq;
  int method; /* enum ana_method_id, or -1 for unknown methods */
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
  grpc_call_details details;
};

/* A live gRPC call: the neutral call plus the core state machine. */
struct gcall {
  struct ana_call base; /* first: handlers see &base */
  struct ana_grpc_server *srv;
  grpc_call *call;
  pthread_mutex_t mu;
  int refs; /* handler (until finish) + one per batch in flight + dispatch */
  struct tag close_tag, recv_tag, send_tag;
  int cancelled_flag;
  grpc_byte_buffer *recv_buf;
  grpc_byte_buffer *sending;
  bool recv_in_flight, send_in_flight, md_sent, status_sent, finish_requested, closed, half_closed;
  grpc_byte_buffer **queue; /* ring of serialised outbound messages */
  size_t q_head, q_len, q_cap;
  grpc_status_code status_code;
  grpc_slice status_details;
  uint8_t *details_bin;
  size_t details_bin_len;
  grpc_metadata trailer;
  grpc_metadata_array request_md;
  int64_t started_mono_ms;
  /* The client's x-request-id (printable, shorter than the buffer), else one
   * made here; sent back in the initial metadata, carried by the call's log
   * lines and its access-log line. */
  char request_id[96];
  grpc_metadata request_id_md;
  _Atomic long long bytes_in; /* request messages */
  long long bytes_out;        /* answer messages queued (under mu) */
  int64_t started_ns;         /* CLOCK_MONOTONIC */
  const char *unknown_path;   /* an unknown method's path (arena), for the access log */
  struct gcall *prev, *next;  /* the server's live list */
  struct peer_streams *peer;  /* counted in it (server-streaming); srv->mu */
};

/* Open server-streaming calls of one client IP address. */
struct peer_streams {
  struct peer_streams *next;
  int open;
  char ip[64];
};

struct ana_grpc_server {
  grpc_server *server;
  grpc_completion_queue **cqs;
  pthread_t *threads;
  int n_threads;
  int n_started;
  int port;
  long max_message_bytes;
  int proto_max_depth;
  int send_queue_max;
  int streams_per_peer;
  void *registered[ANA_METHOD_COUNT];
  struct tag shutdown_tag;

  pthread_mutex_t mu; /* guards what follows; taken before any call's mu */
  pthread_cond_t cond;
  bool shutting_down;
  bool shutdown_notified;
  long live_calls;
  struct gcall *live;
  struct peer_streams *peers; /* IPs with server streams open */

  /* TLS (GRPC_TLS_*): the paths, read again on reload; the configuration
   * core takes at its next handshake (the fetcher swaps it out). */
  bool tls;
  char *tls_cert_file, *tls_key_file, *tls_ca_file;
  _Atomic(grpc_ssl_server_certificate_config *) tls_pending;
};

static const struct ana_call_transport grpc_transport;

/* ------------------------------------------------------------------ */
/* messages */

static grpc_byte_buffer *encode(const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  grpc_slice s = grpc_slice_malloc(n);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

/* The request in bb as a message of type desc, allocated in arena; walked
 * against desc first (depth, NUL bytes, wire format) so that protobuf-c's
 * recursive unpack never sees what could overflow the stack. NULL with v
 * filled when it is not a valid message. */
static ProtobufCMessage *decode(struct ana_grpc_server *srv, grpc_byte_buffer *bb,
                                const ProtobufCMessageDescriptor *desc, struct ana_arena *arena,
                                struct ana_proto_violation *v) {
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, bb)) {
    v->problem = ANA_PROTO_MALFORMED;
    v->field[0] = '\0';
    snprintf(v->description, sizeof v->description, "cannot be decompressed");
    return NULL;
  }
  grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  ProtobufCMessage *m = ana_proto_unpack(desc, &arena->pb, GRPC_SLICE_START_PTR(s),
                                         GRPC_SLICE_LENGTH(s), srv->proto_max_depth, v);
  grpc_slice_unref(s);
  return m;
}

/* Fails call for a request that decode() refused: INVALID_ARGUMENT naming the
 * field (also as a google.rpc.BadRequest violation) or the message type. */
static void fail_decode(struct ana_call *call, const struct ana_proto_violation *v) {
  if (!v->field[0]) {
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "malformed request: %s %s",
                  call->method->input->name, v->description);
    return;
  }
  ana_call_add_violation(call, v->field, v->description);
  ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "%s: %s%s", v->field, v->description,
                v->problem == ANA_PROTO_TOO_DEEP ? " (PROTO_MAX_DEPTH)" : "");
}

/* ------------------------------------------------------------------ */
/* call lifetime */

static void gcall_free(struct gcall *g) {
  struct ana_grpc_server *srv = g->srv;
  pthread_mutex_lock(&srv->mu);
  if (g->prev)
    g->prev->next = g->next;
  else
    srv->live = g->next;
  if (g->next)
    g->next->prev = g->prev;
  if (g->peer && --g->peer->open == 0) {
    for (struct peer_streams **p = &srv->peers; *p; p = &(*p)->next) {
      if (*p == g->peer) {
        *p = g->peer->next;
        ana_free(g->peer);
        break;
      }
    }
  }
  srv->live_calls--;
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->mu);

  for (size_t i = 0; i < g->q_len; i++)
    grpc_byte_buffer_destroy(g->queue[(g->q_head + i) % g->q_cap]);
  ana_free(g->queue);
  if (g->sending)
    grpc_byte_buffer_destroy(g->sending);
  if (g->recv_buf)
    grpc_byte_buffer_destroy(g->recv_buf);
  grpc_slice_unref(g->status_details);
  ana_free(g->details_bin);
  grpc_metadata_array_destroy(&g->request_md);
  if (g->call)
    grpc_call_unref(g->call);
  ana_call_fini(&g->base);
  pthread_mutex_destroy(&g->mu);
  ana_free(g);
}

static void gcall_release(struct gcall *g) {
  pthread_mutex_lock(&g->mu);
  int left = --g->refs;
  pthread_mutex_unlock(&g->mu);
  if (left == 0)
    gcall_free(g);
}

static void gcall_retain(struct gcall *g) {
  pthread_mutex_lock(&g->mu);
  g->refs++;
  pthread_mutex_unlock(&g->mu);
}

static void drop_queue_locked(struct gcall *g) {
  while (g->q_len) {
    grpc_byte_buffer_destroy(g->queue[g->q_head]);
    g->q_head = (g->q_head + 1) % g->q_cap;
    g->q_len--;
  }
}

/* Starts the next send batch if none is in flight (the note's write pump). */
static void pump_locked(struct gcall *g) {
  if (g->send_in_flight || g->status_sent)
    return;
  if (g->closed) {
    /* The client is gone: nothing more can be delivered. */
    drop_queue_locked(g);
    if (g->finish_requested)
      g->status_sent = true;
    return;
  }
  grpc_op ops[3];
  size_t n = 0;
  grpc_byte_buffer *msg = NULL;
  bool with_status = false;
  if (g->q_len) {
    msg = g->queue[g->q_head];
    g->q_head = (g->q_head + 1) % g->q_cap;
    g->q_len--;
  }
  if (g->finish_requested && g->q_len == 0)
    with_status = true;
  if (!msg && !with_status)
    return;
  memset(ops, 0, sizeof ops);
  if (!g->md_sent) {
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (g->request_id[0]) {
      g->request_id_md.key = grpc_slice_from_static_string("x-request-id");
      g->request_id_md.value = grpc_slice_from_static_string(g->request_id);
      ops[n].data.send_initial_metadata.count = 1;
      ops[n].data.send_initial_metadata.metadata = &g->request_id_md;
    }
    n++;
    g->md_sent = true;
  }
  if (msg) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = msg;
    n++;
  }
  if (with_status) {
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = g->status_code;
    ops[n].data.send_status_from_server.status_details = &g->status_details;
    if (g->details_bin) {
      ops[n].data.send_status_from_server.trailing_metadata_count = 1;
      ops[n].data.send_status_from_server.trailing_metadata = &g->trailer;
    }
    n++;
    g->status_sent = true;
  }
  grpc_call_error err = grpc_call_start_batch(g->call, ops, n, &g->send_tag, NULL);
  if (err != GRPC_CALL_OK) {
    /* A failed batch leaves the call unusable: cancel it. */
    ANA_ERROR("rpc", "%s: start_batch failed (%d); cancelling the call", g->base.method->path,
              (int)err);
    if (msg)
      grpc_byte_buffer_destroy(msg);
    g->closed = true;
    g->status_sent = true;
    drop_queue_locked(g);
    grpc_call_cancel(g->call, NULL);
    return;
  }
  g->sending = msg;
  g->send_in_flight = true;
  g->refs++;
}

static int queue_push_locked(struct gcall *g, grpc_byte_buffer *bb, bool over_limit_ok) {
  size_t limit = (size_t)g->srv->send_queue_max;
  if (!over_limit_ok && g->q_len >= limit)
    return ANA_ERR_FULL;
  g->bytes_out += (long long)grpc_byte_buffer_length(bb);
  if (g->q_len == g->q_cap) {
    size_t cap = g->q_cap ? g->q_cap * 2 : 4;
    grpc_byte_buffer **q = ana_malloc(cap * sizeof *q);
    if (!q)
      return ANA_ERR_NOMEM;
    for (size_t i = 0; i < g->q_len; i++)
      q[i] = g->queue[(g->q_head + i) % g->q_cap];
    ana_free(g->queue);
    g->queue = q;
    g->q_cap = cap;
    g->q_head = 0;
  }
  g->queue[(g->q_head + g->q_len) % g->q_cap] = bb;
  g->q_len++;
  return 0;
}

/* ------------------------------------------------------------------ */
/* transport operations (called by ana_call_*) */

/* Queues bb (taken) and starts sending it if nothing is in flight. */
static int send_bb(struct gcall *g, grpc_byte_buffer *bb) {
  pthread_mutex_lock(&g->mu);
  int rc;
  if (g->closed || g->finish_requested)
    rc = ANA_ERR_CLOSED;
  else
    rc = queue_push_locked(g, bb, false);
  if (rc == 0)
    pump_locked(g);
  pthread_mutex_unlock(&g->mu);
  if (rc < 0)
    grpc_byte_buffer_destroy(bb);
  return rc;
}

static int t_send(struct ana_call *call, const ProtobufCMessage *message) {
  return send_bb((struct gcall *)call, encode(message));
}

/* A shared message is packed once; each call's byte buffer refers to that
 * slice, after the call's own sequence (field 1, a varint, which protobuf-c
 * would have packed first), so fanning out costs no packing per call. */
static void *pack_shared(const struct ana_call_shared *m, int *rc) {
  const ProtobufCMessage *msg = ana_call_shared_message(m);
  grpc_slice *s = ana_malloc(sizeof *s);
  if (!s) {
    *rc = ANA_ERR_NOMEM;
    return NULL;
  }
  *s = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(*s));
  return s;
}

static void release_packed(void *p) {
  grpc_slice *s = p;
  grpc_slice_unref(*s);
  ana_free(s);
}

static int t_send_shared(struct ana_call *call, struct ana_call_shared *m, uint64_t sequence) {
  int rc;
  grpc_slice *body = ana_call_shared_encoding(m, &grpc_transport, pack_shared, release_packed, &rc);
  if (!body)
    return rc;
  grpc_slice parts[2];
  size_t n = 0;
  if (sequence && ana_call_shared_per_call_sequence(m)) {
    uint8_t head[11];
    size_t k = 0;
    head[k++] = 0x08; /* field 1, varint */
    for (; sequence >= 0x80; sequence >>= 7)
      head[k++] = (uint8_t)(sequence | 0x80);
    head[k++] = (uint8_t)sequence;
    parts[n++] = grpc_slice_from_copied_buffer((const char *)head, k);
  }
  parts[n++] = *body;
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(parts, n); /* takes its own references */
  if (n == 2)
    grpc_slice_unref(parts[0]);
  return send_bb((struct gcall *)call, bb);
}

static size_t t_send_queue_length(struct ana_call *call) {
  struct gcall *g = (struct gcall *)call;
  pthread_mutex_lock(&g->mu);
  size_t n = g->q_len + (g->send_in_flight ? 1 : 0);
  pthread_mutex_unlock(&g->mu);
  return n;
}

static void t_finish(struct ana_call *call, const ProtobufCMessage *response,
                     const struct ana_error *status) {
  struct gcall *g = (struct gcall *)call;
  bool ok = !status || status->code == ANA_STATUS_OK;
  enum ana_method_kind kind = call->method ? call->method->kind : ANA_METHOD_UNARY;
  grpc_byte_buffer *bb = NULL;
  struct ana_error internal;
  if (ok && response) {
    bb = encode(response);
  } else if (ok && (kind == ANA_METHOD_UNARY || kind == ANA_METHOD_CLIENT_STREAMING)) {
    ana_error_set(&internal, ANA_STATUS_INTERNAL, "the handler finished without a response");
    ANA_ERROR("rpc", "%s: %s", call->method->path, internal.message);
    status = &internal;
    ok = false;
  }
  uint8_t *details = NULL;
  size_t details_len = 0;
  if (!ok)
    details = ana_call_status_details(call, status, &details_len);

  pthread_mutex_lock(&g->mu);
  g->finish_requested = true;
  g->status_code = ok ? GRPC_STATUS_OK : (grpc_status_code)status->code;
  g->status_details = grpc_slice_from_copied_string(ok ? "" : status->message);
  if (details) {
    g->details_bin = details;
    g->details_bin_len = details_len;
    g->trailer.key = grpc_slice_from_static_string("grpc-status-details-bin");
    g->trailer.value = grpc_slice_from_static_buffer(details, details_len);
  }
  if (bb && queue_push_locked(g, bb, true) < 0) {
    grpc_byte_buffer_destroy(bb);
    g->status_code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    grpc_slice_unref(g->status_details);
    g->status_details = grpc_slice_from_static_string("out of memory");
  }
  pump_locked(g);
  pthread_mutex_unlock(&g->mu);

  if (ana_log_access_sampled(ok)) {
    char ip[64];
    ana_call_peer_ip(call, ip, sizeof ip);
    pthread_mutex_lock(&g->mu);
    long long out = g->bytes_out;
    pthread_mutex_unlock(&g->mu);
    enum ana_status code = ok ? ANA_STATUS_OK : status->code;
    struct ana_access_entry e = {
        .transport = "grpc",
        .request_id = g->request_id[0] ? g->request_id : NULL,
        .method = call->method      ? call->method->path
                  : g->unknown_path ? g->unknown_path
                                    : "?",
        .status = (int)code,
        .code = ana_status_name(code),
        .bytes_in = atomic_load(&g->bytes_in),
        .bytes_out = out,
        .duration_ms = (double)(ana_clock_mono_ns() - g->started_ns) / 1e6,
        .peer = ip,
        .success = ok,
    };
    ana_log_access(&e);
  }
  gcall_release(g); /* the handler's reference */
}

static void post_read(struct gcall *g);

static void t_reading_changed(struct ana_call *call) {
  post_read((struct gcall *)call);
}

static const struct ana_call_transport grpc_transport = {
    .send = t_send,
    .send_queue_length = t_send_queue_length,
    .finish = t_finish,
    .reading_changed = t_reading_changed,
    .name = "grpc",
    .send_shared = t_send_shared,
};

/* ------------------------------------------------------------------ */
/* receiving */

static void post_read(struct gcall *g) {
  pthread_mutex_lock(&g->mu);
  if (!g->recv_in_flight && !g->half_closed && !g->closed && !g->finish_requested &&
      !atomic_load(&g->base.read_paused)) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &g->recv_buf;
    if (grpc_call_start_batch(g->call, &op, 1, &g->recv_tag, NULL) == GRPC_CALL_OK) {
      g->recv_in_flight = true;
      g->refs++;
    } else {
      ANA_ERROR("rpc", "%s: cannot post a read; cancelling the call", g->base.method->path);
      g->closed = true;
      grpc_call_cancel(g->call, NULL);
    }
  }
  pthread_mutex_unlock(&g->mu);
}

static void on_recv_message(struct gcall *g, bool ok) {
  pthread_mutex_lock(&g->mu);
  g->recv_in_flight = false;
  grpc_byte_buffer *bb = g->recv_buf;
  g->recv_buf = NULL;
  if (ok && !bb)
    g->half_closed = true;
  bool finished = g->finish_requested || g->closed;
  pthread_mutex_unlock(&g->mu);

  struct ana_call *call = &g->base;
  if (!ok || finished) {
    if (bb)
      grpc_byte_buffer_destroy(bb);
  } else if (!bb) {
    if (call->handler->on_half_close)
      call->handler->on_half_close(call);
  } else {
    atomic_fetch_add(&g->bytes_in, (long long)grpc_byte_buffer_length(bb));
    ana_log_set_request_id(g->request_id);
    call->message_arena = ana_arena_create(8192, 0);
    struct ana_proto_violation v;
    ProtobufCMessage *m = call->message_arena
                              ? decode(g->srv, bb, call->method->input, call->message_arena, &v)
                              : NULL;
    grpc_byte_buffer_destroy(bb);
    if (!call->message_arena)
      ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    else if (!m)
      fail_decode(call, &v);
    else if (call->handler->on_message)
      call->handler->on_message(call, m);
    ana_arena_destroy(call->message_arena);
    call->message_arena = NULL;
    ana_log_set_request_id(NULL);
    post_read(g);
  }
  gcall_release(g); /* the read's reference */
}

static void on_recv_close(struct gcall *g) {
  pthread_mutex_lock(&g->mu);
  bool cancelled = g->cancelled_flag != 0;
  if (cancelled) {
    g->closed = true;
    drop_queue_locked(g);
  }
  pthread_mutex_unlock(&g->mu);
  if (cancelled)
    ana_call_mark_cancelled(&g->base);
  gcall_release(g);
}

static void on_send_done(struct gcall *g, bool ok) {
  pthread_mutex_lock(&g->mu);
  g->send_in_flight = false;
  if (g->sending) {
    grpc_byte_buffer_destroy(g->sending);
    g->sending = NULL;
  }
  if (!ok)
    g->closed = true;
  pump_locked(g);
  pthread_mutex_unlock(&g->mu);
  gcall_release(g);
}

/* ------------------------------------------------------------------ */
/* accepting calls */

static void post_request(struct request_slot *slot);

static struct gcall *gcall_create(struct ana_grpc_server *srv, const struct ana_method *method,
                                  grpc_call *call) {
  struct gcall *g = ana_calloc(1, sizeof *g);
  if (!g)
    return NULL;
  ana_call_init(&g->base, &grpc_transport, method);
  g->srv = srv;
  g->call = call;
  pthread_mutex_init(&g->mu, NULL);
  g->refs = 2; /* the handler's and the dispatcher's */
  g->close_tag = (struct tag){TAG_RECV_CLOSE, g};
  g->recv_tag = (struct tag){TAG_RECV_MESSAGE, g};
  g->send_tag = (struct tag){TAG_SEND, g};
  g->status_details = grpc_empty_slice();
  g->started_mono_ms = ana_call_now_mono_ms();
  g->started_ns = ana_clock_mono_ns();
  grpc_metadata_array_init(&g->request_md);

  pthread_mutex_lock(&srv->mu);
  g->next = srv->live;
  if (srv->live)
    srv->live->prev = g;
  srv->live = g;
  srv->live_calls++;
  pthread_mutex_unlock(&srv->mu);

  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &g->cancelled_flag;
  if (grpc_call_start_batch(call, &op, 1, &g->close_tag, NULL) == GRPC_CALL_OK)
    g->refs++;
  else
    g->closed = true;
  return g;
}

/* The client's x-request-id when it is printable and fits, else a new one
 * (UUIDv7), added to the call's metadata so handlers see it too. */
static void take_request_id(struct gcall *g) {
  struct ana_call *call = &g->base;
  const char *id = ana_call_metadata(call, "x-request-id");
  bool ok = id && id[0] && strlen(id) < sizeof g->request_id;
  for (const char *p = id; ok && *p; p++)
    ok = isgraph((unsigned char)*p) != 0;
  if (ok) {
    memcpy(g->request_id, id, strlen(id) + 1);
    return;
  }
  if (ana_uuid7_generate(g->request_id) < 0) {
    g->request_id[0] = '\0';
    return;
  }
  if (!id) {
    struct ana_metadata_entry *e = &call->metadata[call->n_metadata];
    e->key = "x-request-id";
    e->value = g->request_id;
    e->value_len = strlen(g->request_id);
    call->n_metadata++;
  }
}

/* Copies metadata, peer and deadline into the call's arena. */
static int capture_request(struct gcall *g, grpc_metadata_array *md, gpr_timespec deadline) {
  struct ana_call *call = &g->base;
  /* One more entry: the x-request-id made here when the client sent none. */
  call->metadata = ana_arena_calloc(&call->arena, md->count + 1, sizeof *call->metadata);
  if (!call->metadata)
    return ANA_ERR_NOMEM;
  for (size_t i = 0; i < md->count; i++) {
    grpc_slice k = md->metadata[i].key, v = md->metadata[i].value;
    struct ana_metadata_entry *e = &call->metadata[call->n_metadata];
    e->key = ana_arena_strndup(&call->arena, (const char *)GRPC_SLICE_START_PTR(k),
                               GRPC_SLICE_LENGTH(k));
    e->value = ana_arena_strndup(&call->arena, (const char *)GRPC_SLICE_START_PTR(v),
                                 GRPC_SLICE_LENGTH(v));
    e->value_len = GRPC_SLICE_LENGTH(v);
    if (!e->key || !e->value)
      return ANA_ERR_NOMEM;
    call->n_metadata++;
  }
  take_request_id(g);
  char *peer = grpc_call_get_peer(g->call);
  if (peer) {
    call->peer = ana_arena_strdup(&call->arena, peer);
    gpr_free(peer);
    if (!call->peer)
      return ANA_ERR_NOMEM;
  }
  if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) != 0) {
    gpr_timespec now = gpr_now(deadline.clock_type);
    gpr_timespec left = gpr_time_sub(deadline, now);
    call->deadline_mono_ms = ana_call_now_mono_ms() + gpr_time_to_millis(left);
  }
  return 0;
}

/* Counts a server-streaming call against its peer's GRPC_STREAMS_PER_PEER.
 * Returns 0, or ANA_ERR_FULL with status filled when the peer is at the
 * limit (ANA_ERR_NOMEM when out of memory). */
static int admit_peer_stream(struct gcall *g, struct ana_error *status) {
  struct ana_grpc_server *srv = g->srv;
  char ip[64];
  ana_call_peer_ip(&g->base, ip, sizeof ip);
  int rc = 0;
  pthread_mutex_lock(&srv->mu);
  struct peer_streams *ps = srv->peers;
  while (ps && strcmp(ps->ip, ip) != 0)
    ps = ps->next;
  if (ps && ps->open >= srv->streams_per_peer) {
    ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED,
                  "GRPC_STREAMS_PER_PEER: %s already has %d server-streaming calls open", ip,
                  ps->open);
    rc = ANA_ERR_FULL;
  } else if (!ps && !(ps = ana_calloc(1, sizeof *ps))) {
    ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    rc = ANA_ERR_NOMEM;
  } else {
    if (ps->open == 0) {
      snprintf(ps->ip, sizeof ps->ip, "%s", ip);
      ps->next = srv->peers;
      srv->peers = ps;
    }
    ps->open++;
    g->peer = ps;
  }
  pthread_mutex_unlock(&srv->mu);
  return rc;
}

static void dispatch(struct ana_grpc_server *srv, struct request_slot *slot) {
  const struct ana_method *method = &ana_methods[slot->method];
  grpc_call *call = slot->call;
  grpc_metadata_array md = slot->md;
  grpc_byte_buffer *payload = slot->payload;
  gpr_timespec deadline = slot->deadline;
  /* Re-arm first, so the next call of this method does not wait for us. */
  post_request(slot);

  struct gcall *g = gcall_create(srv, method, call);
  if (!g) {
    grpc_call_cancel_with_status(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    grpc_call_unref(call);
    grpc_metadata_array_destroy(&md);
    if (payload)
      grpc_byte_buffer_destroy(payload);
    return;
  }
  g->request_md = md; /* the call owns the metadata slices' array now */
  struct ana_call *c = &g->base;
  struct ana_error status;
  ana_error_clear(&status);

  if (payload)
    atomic_store(&g->bytes_in, (long long)grpc_byte_buffer_length(payload));
  /* Read when each line is written: capture_request fills it. */
  ana_log_set_request_id(g->request_id);
  if (capture_request(g, &g->request_md, deadline) < 0) {
    ana_call_fail(c, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else if (ana_call_admit(c, &status) < 0) {
    ana_call_finish(c, NULL, &status);
  } else if (method->kind == ANA_METHOD_SERVER_STREAMING && admit_peer_stream(g, &status) < 0) {
    ana_call_finish(c, NULL, &status);
  } else if (method->kind == ANA_METHOD_UNARY || method->kind == ANA_METHOD_SERVER_STREAMING) {
    struct ana_proto_violation v;
    ProtobufCMessage *req = payload ? decode(srv, payload, method->input, &c->arena, &v) : NULL;
    if (!payload)
      ana_call_fail(c, ANA_STATUS_INVALID_ARGUMENT, "the request message is missing");
    else if (!req)
      fail_decode(c, &v);
    else {
      c->request = req;
      c->handler->on_request(c, req);
    }
  } else {
    if (c->handler->on_open)
      c->handler->on_open(c);
    post_read(g);
  }
  ana_log_set_request_id(NULL);
  if (payload)
    grpc_byte_buffer_destroy(payload);
  gcall_release(g); /* the dispatcher's reference */
}

/* Unknown method: UNIMPLEMENTED, which also lets reflection clients fall back
 * from v1 to v1alpha. */
static void reject_unknown(struct ana_grpc_server *srv, struct request_slot *slot) {
  grpc_call *call = slot->call;
  char *path = grpc_slice_to_c_string(slot->details.method);
  grpc_metadata_array md = slot->md;
  grpc_call_details_destroy(&slot->details);
  post_request(slot);

  struct gcall *g = gcall_create(srv, NULL, call);
  if (!g) {
    grpc_call_cancel_with_status(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
    grpc_call_unref(call);
  } else {
    g->request_md = md;
    md.metadata = NULL;
    struct ana_error status;
    ana_error_set(&status, ANA_STATUS_UNIMPLEMENTED, "unknown method %s", path);
    g->unknown_path = ana_arena_strdup(&g->base.arena, path);
    /* Its request id and peer, for the access log. */
    capture_request(g, &g->request_md, gpr_inf_future(GPR_CLOCK_REALTIME));
    ANA_DEBUG("rpc", "unknown method %s", path);
    ana_call_finish(&g->base, NULL, &status);
    gcall_release(g);
  }
  if (md.metadata)
    grpc_metadata_array_destroy(&md);
  gpr_free(path);
}

static void post_request(struct request_slot *slot) {
  struct ana_grpc_server *srv = slot->srv;
  pthread_mutex_lock(&srv->mu);
  bool stop = srv->shutting_down;
  pthread_mutex_unlock(&srv->mu);
  if (stop) {
    ana_free(slot);
    return;
  }
  slot->call = NULL;
  slot->payload = NULL;
  grpc_metadata_array_init(&slot->md);
  grpc_call_error err;
  if (slot->method >= 0) {
    const struct ana_method *m = &ana_methods[slot->method];
    bool has_payload = m->kind == ANA_METHOD_UNARY || m->kind == ANA_METHOD_SERVER_STREAMING;
    err = grpc_server_request_registered_call(
        srv->server, srv->registered[slot->method], &slot->call, &slot->deadline, &slot->md,
        has_payload ? &slot->payload : NULL, slot->cq, slot->cq, &slot->tag);
  } else {
    grpc_call_details_init(&slot->details);
    err = grpc_server_request_call(srv->server, &slot->call, &slot->details, &slot->md, slot->cq,
                                   slot->cq, &slot->tag);
  }
  if (err != GRPC_CALL_OK) {
    ANA_ERROR("rpc", "cannot post a request (%d)", (int)err);
    grpc_metadata_array_destroy(&slot->md);
    if (slot->method < 0)
      grpc_call_details_destroy(&slot->details);
    ana_free(slot);
  }
}

static void on_request(struct request_slot *slot, bool ok) {
  if (!ok) {
    /* Server shutting down: the request will never be filled. */
    grpc_metadata_array_destroy(&slot->md);
    if (slot->method < 0)
      grpc_call_details_destroy(&slot->details);
    ana_free(slot);
    return;
  }
  if (slot->method >= 0)
    dispatch(slot->srv, slot);
  else
    reject_unknown(slot->srv, slot);
}

/* ------------------------------------------------------------------ */
/* threads and lifecycle */

struct thread_arg {
  struct ana_grpc_server *srv;
  grpc_completion_queue *cq;
};

static void *cq_thread(void *arg) {
  pthread_setname_np(pthread_self(), "ana-grpc"); /* top -H, /proc/PID/task/TID/comm */
  struct thread_arg ta = *(struct thread_arg *)arg;
  ana_free(arg);
  /* Idle, the thread still wakes every second to beat (liveness). */
  struct ana_heartbeat *hb = ana_heartbeat_register("grpc-cq");
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        ta.cq,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(CQ_BEAT_MS, GPR_TIMESPAN)),
        NULL);
    ana_heartbeat_beat(hb);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type != GRPC_OP_COMPLETE)
      continue;
    struct tag *t = ev.tag;
    switch (t->kind) {
    case TAG_REQUEST: on_request(t->owner, ev.success); break;
    case TAG_RECV_CLOSE: on_recv_close(t->owner); break;
    case TAG_RECV_MESSAGE: on_recv_message(t->owner, ev.success); break;
    case TAG_SEND: on_send_done(t->owner, ev.success); break;
    case TAG_SHUTDOWN:
      pthread_mutex_lock(&ta.srv->mu);
      ta.srv->shutdown_notified = true;
      pthread_cond_broadcast(&ta.srv->cond);
      pthread_mutex_unlock(&ta.srv->mu);
      break;
    }
  }
  ana_heartbeat_unregister(hb);
  return NULL;
}

static int post_initial_requests(struct ana_grpc_server *srv, grpc_completion_queue *cq) {
  for (int m = -1; m < (int)ANA_METHOD_COUNT; m++) {
    int slots = m < 0 ? GENERIC_SLOTS : SLOTS_PER_METHOD;
    for (int i = 0; i < slots; i++) {
      struct request_slot *slot = ana_calloc(1, sizeof *slot);
      if (!slot)
        return ANA_ERR_NOMEM;
      slot->tag = (struct tag){TAG_REQUEST, slot};
      slot->srv = srv;
      slot->cq = cq;
      slot->method = m;
      post_request(slot);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* TLS                                                                  */

static const char *const tls_vars[3] = {"GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE",
                                        "GRPC_TLS_CLIENT_CA_FILE"};

/* Reads and checks the TLS files into a configuration for core (NULL with
 * err filled on failure). Blocks on the file reads. */
static grpc_ssl_server_certificate_config *tls_config_load(const struct ana_grpc_server *srv,
                                                           char *serial, size_t serial_size,
                                                           struct ana_error *err) {
  struct ana_tls_paths paths = {tls_vars[0],        tls_vars[1],       tls_vars[2],
                                srv->tls_cert_file, srv->tls_key_file, srv->tls_ca_file};
  struct ana_tls_files files;
  if (ana_tls_files_load(&paths, &files, err) < 0)
    return NULL;
  grpc_ssl_pem_key_cert_pair pair = {.private_key = files.key, .cert_chain = files.cert};
  /* Core copies the strings. Core 1.51 asserts that a fetched
   * configuration has roots even when no client certificate is asked for;
   * the server's own chain stands in then (never used). */
  grpc_ssl_server_certificate_config *c =
      grpc_ssl_server_certificate_config_create(files.ca ? files.ca : files.cert, &pair, 1);
  snprintf(serial, serial_size, "%s", files.serial);
  ana_tls_files_fini(&files);
  if (!c)
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return c;
}

/* Core asks on every new connection's handshake: the configuration a
 * reload left, if any (core takes it over), else UNCHANGED. One atomic
 * exchange: never blocks a handshake. */
static grpc_ssl_certificate_config_reload_status
tls_fetch(void *user_data, grpc_ssl_server_certificate_config **config) {
  struct ana_grpc_server *srv = user_data;
  grpc_ssl_server_certificate_config *c = atomic_exchange(&srv->tls_pending, NULL);
  if (!c)
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  *config = c;
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

/* Leaves c for the next handshake, replacing one not taken yet. */
static void tls_offer(struct ana_grpc_server *srv, grpc_ssl_server_certificate_config *c) {
  grpc_ssl_server_certificate_config *old = atomic_exchange(&srv->tls_pending, c);
  if (old)
    grpc_ssl_server_certificate_config_destroy(old);
}

/* The listening credentials: TLS through the fetcher above (the first
 * configuration is offered before the port is added, which fetches it),
 * or plaintext. */
static grpc_server_credentials *server_credentials(struct ana_grpc_server *srv,
                                                   struct ana_error *err) {
  if (!srv->tls)
    return grpc_insecure_server_credentials_create();
  char serial[64];
  grpc_ssl_server_certificate_config *c = tls_config_load(srv, serial, sizeof serial, err);
  if (!c)
    return NULL;
  tls_offer(srv, c);
  grpc_ssl_server_credentials_options *opts =
      grpc_ssl_server_credentials_create_options_using_config_fetcher(
          srv->tls_ca_file ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
          tls_fetch, srv);
  grpc_server_credentials *creds =
      opts ? grpc_ssl_server_credentials_create_with_options(opts) : NULL;
  if (!creds)
    ana_error_set(err, ANA_STATUS_INTERNAL, "GRPC_TLS_CERT_FILE: cannot set up TLS");
  else
    ana_log_fields(ANA_LOG_INFO, "rpc", "gRPC serves TLS", "certificate_serial", serial,
                   "client_certificates", srv->tls_ca_file ? "required" : "not requested", NULL);
  return creds;
}

int ana_grpc_server_reload_tls(struct ana_grpc_server *srv, struct ana_error *err) {
  if (!srv->tls)
    return 0;
  char serial[64];
  grpc_ssl_server_certificate_config *c = tls_config_load(srv, serial, sizeof serial, err);
  if (!c)
    return ANA_ERR_INVALID;
  tls_offer(srv, c);
  ana_log_fields(ANA_LOG_INFO, "rpc", "gRPC TLS certificate reloaded", "certificate_serial", serial,
                 NULL);
  return 0;
}

/* After the server is destroyed (no handshake can fetch any more). */
static void tls_free(struct ana_grpc_server *srv) {
  grpc_ssl_server_certificate_config *c = atomic_exchange(&srv->tls_pending, NULL);
  if (c)
    grpc_ssl_server_certificate_config_destroy(c);
  ana_free(srv->tls_cert_file);
  ana_free(srv->tls_key_file);
  ana_free(srv->tls_ca_file);
}

/* Frees the server (its core server and queues destroyed already) and
 * balances ana_grpc_server_create's grpc_init. */
static void server_free(struct ana_grpc_server *srv) {
  ana_free(srv->cqs);
  ana_free(srv->threads);
  tls_free(srv);
  pthread_mutex_destroy(&srv->mu);
  pthread_cond_destroy(&srv->cond);
  ana_free(srv);
  grpc_shutdown();
}

static char *dup_set(const char *s) {
  return s && s[0] ? ana_strdup(s) : NULL;
}

struct ana_grpc_server *ana_grpc_server_create(const struct ana_grpc_server_options *o,
                                               struct ana_error *err) {
  struct ana_grpc_server *srv = ana_calloc(1, sizeof *srv);
  if (!srv) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&srv->mu, NULL);
  pthread_cond_init(&srv->cond, NULL);
  srv->max_message_bytes = o->max_message_bytes;
  srv->proto_max_depth = o->proto_max_depth > 0 ? o->proto_max_depth : ANA_PROTO_DEFAULT_MAX_DEPTH;
  srv->send_queue_max = o->send_queue_max > 0 ? o->send_queue_max : 256;
  srv->streams_per_peer = o->streams_per_peer > 0 ? o->streams_per_peer : 64;
  srv->shutdown_tag = (struct tag){TAG_SHUTDOWN, srv};
  srv->n_threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (srv->n_threads < 1)
    srv->n_threads = 1;
  atomic_init(&srv->tls_pending, NULL);
  srv->tls_cert_file = dup_set(o->tls_cert_file);
  srv->tls_key_file = dup_set(o->tls_key_file);
  srv->tls_ca_file = dup_set(o->tls_client_ca_file);
  srv->tls = srv->tls_cert_file || srv->tls_key_file || srv->tls_ca_file;

  ana_grpc_log_route(); /* analyticsd's main did already; tests and tools too */
  grpc_init();
  grpc_arg args[] = {
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       .value.integer = (int)o->max_message_bytes},
      /* Keepalive pings are welcome, floods are not: see ana_grpc_server.h. */
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
       .value.integer = ANA_GRPC_MIN_RECV_PING_INTERVAL_MS},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_HTTP2_MAX_PING_STRIKES,
       .value.integer = ANA_GRPC_MAX_PING_STRIKES},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
       .value.integer = 1},
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_CONCURRENT_STREAMS,
       .value.integer = o->max_concurrent_streams > 0 ? o->max_concurrent_streams : 100},
      /* The only metadata limit of core 1.51 (hard: a call over it is
       * refused); later cores split it into soft and absolute limits. */
      {.type = GRPC_ARG_INTEGER,
       .key = GRPC_ARG_MAX_METADATA_SIZE,
       .value.integer = o->max_metadata_bytes > 0 ? o->max_metadata_bytes : 16384},
      {.type = GRPC_ARG_INTEGER,
       .key = "grpc.absolute_max_metadata_size",
       .value.integer = o->max_metadata_bytes > 0 ? o->max_metadata_bytes : 16384},
  };
  grpc_channel_args channel_args = {.num_args = sizeof args / sizeof args[0], .args = args};
  srv->server = grpc_server_create(&channel_args, NULL);
  srv->cqs = ana_calloc((size_t)srv->n_threads, sizeof *srv->cqs);
  srv->threads = ana_calloc((size_t)srv->n_threads, sizeof *srv->threads);
  if (!srv->server || !srv->cqs || !srv->threads)
    goto nomem;
  for (int i = 0; i < srv->n_threads; i++) {
    srv->cqs[i] = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cqs[i], NULL);
  }
  for (size_t m = 0; m < ANA_METHOD_COUNT; m++) {
    bool has_payload = ana_methods[m].kind == ANA_METHOD_UNARY ||
                       ana_methods[m].kind == ANA_METHOD_SERVER_STREAMING;
    srv->registered[m] = grpc_server_register_method(
        srv->server, ana_methods[m].path, NULL,
        has_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
  }

  char addr[300];
  snprintf(addr, sizeof addr, "%s:%d", o->host && o->host[0] ? o->host : "0.0.0.0", o->port);
  grpc_server_credentials *creds = server_credentials(srv, err);
  if (!creds)
    goto fail;
  srv->port = grpc_server_add_http2_port(srv->server, addr, creds);
  grpc_server_credentials_release(creds);
  if (srv->port == 0) {
    char why[128];
    ana_listen_error(o->host && o->host[0] ? o->host : NULL, o->port, why, sizeof why);
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "GRPC_PORT %d: cannot listen on %s: %s", o->port,
                  addr, why);
    goto fail;
  }
  grpc_server_start(srv->server);
  for (int i = 0; i < srv->n_threads; i++) {
    if (post_initial_requests(srv, srv->cqs[i]) < 0)
      goto nomem;
    struct thread_arg *ta = ana_malloc(sizeof *ta);
    if (!ta)
      goto nomem;
    ta->srv = srv;
    ta->cq = srv->cqs[i];
    if (pthread_create(&srv->threads[i], NULL, cq_thread, ta) != 0) {
      ana_free(ta);
      ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start a server thread");
      goto fail_started;
    }
    srv->n_started++;
  }
  return srv;

nomem:
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail_started:
  if (srv->port) {
    ana_grpc_server_shutdown(srv, 0);
    ana_grpc_server_destroy(srv);
    return NULL;
  }
fail:
  if (srv->server)
    grpc_server_destroy(srv->server);
  for (int i = 0; srv->cqs && i < srv->n_threads; i++) {
    if (srv->cqs[i]) {
      grpc_completion_queue_shutdown(srv->cqs[i]);
      while (
          grpc_completion_queue_next(srv->cqs[i], gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
          GRPC_QUEUE_SHUTDOWN) {
      }
      grpc_completion_queue_destroy(srv->cqs[i]);
    }
  }
  server_free(srv);
  return NULL;
}

int ana_grpc_server_port(const struct ana_grpc_server *srv) {
  return srv->port;
}

/* Asks every live call whose handler can drain to finish. */
static void drain_live_calls(struct ana_grpc_server *srv) {
  pthread_mutex_lock(&srv->mu);
  size_t n = 0;
  for (struct gcall *g = srv->live; g; g = g->next)
    n++;
  struct gcall **list = ana_calloc(n ? n : 1, sizeof *list);
  size_t k = 0;
  for (struct gcall *g = srv->live; list && g; g = g->next) {
    if (g->base.handler && g->base.handler->on_drain && !atomic_load(&g->base.finished)) {
      gcall_retain(g);
      list[k++] = g;
    }
  }
  pthread_mutex_unlock(&srv->mu);
  for (size_t i = 0; i < k; i++) {
    if (!atomic_load(&list[i]->base.finished))
      list[i]->base.handler->on_drain(&list[i]->base);
    gcall_release(list[i]);
  }
  ana_free(list);
}

/* Waits until every call is freed and core has confirmed the shutdown, or
 * until deadline_ms (monotonic). Returns true when done. */
static bool wait_quiet(struct ana_grpc_server *srv, int64_t deadline_ms) {
  pthread_mutex_lock(&srv->mu);
  while (!(srv->live_calls == 0 && srv->shutdown_notified)) {
    int64_t left = deadline_ms - ana_call_now_mono_ms();
    if (left <= 0)
      break;
    struct timespec ts = ana_deadline_in_ms(left < 100 ? left : 100);
    pthread_cond_timedwait(&srv->cond, &srv->mu, &ts);
  }
  bool done = srv->live_calls == 0 && srv->shutdown_notified;
  pthread_mutex_unlock(&srv->mu);
  return done;
}

int ana_grpc_server_shutdown(struct ana_grpc_server *srv, int grace_ms) {
  pthread_mutex_lock(&srv->mu);
  srv->shutting_down = true;
  pthread_mutex_unlock(&srv->mu);
  /* Stop listening; calls in flight go on. */
  grpc_server_shutdown_and_notify(srv->server, srv->cqs[0], &srv->shutdown_tag);
  drain_live_calls(srv);
  if (!wait_quiet(srv, ana_call_now_mono_ms() + grace_ms)) {
    ANA_WARN("rpc", "grace period of %d ms over with %ld calls in flight; cancelling them",
             grace_ms, srv->live_calls);
    grpc_server_cancel_all_calls(srv->server);
    /* Cancelled calls end as soon as their handlers finish them. */
    if (!wait_quiet(srv, ana_call_now_mono_ms() + 5000)) {
      ANA_ERROR("rpc", "%ld calls were never finished by their handlers", srv->live_calls);
      return ANA_ERR_TIMEOUT;
    }
  }
  /* Only now is it safe to shut the queues down: no call can start a batch. */
  for (int i = 0; i < srv->n_threads; i++)
    grpc_completion_queue_shutdown(srv->cqs[i]);
  for (int i = 0; i < srv->n_started; i++)
    pthread_join(srv->threads[i], NULL);
  srv->n_started = 0;
  return 0;
}

void ana_grpc_server_destroy(struct ana_grpc_server *srv) {
  if (!srv)
    return;
  /* Core asserts that a server with listeners was shut down (a later
   * module failed to start: nothing was served yet). */
  if (!srv->shutting_down && ana_grpc_server_shutdown(srv, 1000) < 0)
    return; /* a handler still holds a call: left as it is */
  grpc_server_destroy(srv->server);
  for (int i = 0; i < srv->n_threads; i++)
    grpc_completion_queue_destroy(srv->cqs[i]);
  server_free(srv);
}

/* --- gRPC core's own log lines (ana_grpc_log.h) --- */

/* Core's error and info lines count against one site: a peer that makes
 * core complain on every connection cannot flood the log. Debug lines are
 * asked for explicitly (GRPC_VERBOSITY=debug, GRPC_TRACE) and all go out. */
static struct ana_log_site grpc_site = {.file = "grpc", .line = 0};

static void grpc_log(gpr_log_func_args *args) {
  /* Core's errors are mostly a peer's doing (a failed TLS handshake, a bad
   * HTTP/2 preface): warn. What fails on our side gets an error line of its
   * own (a port that cannot be bound: "start-up failed"). */
  enum ana_log_level level = args->severity == GPR_LOG_SEVERITY_ERROR  ? ANA_LOG_WARN
                             : args->severity == GPR_LOG_SEVERITY_INFO ? ANA_LOG_INFO
                                                                       : ANA_LOG_DEBUG;
  if (!ana_log_enabled(level))
    return;
  if (level != ANA_LOG_DEBUG && !ana_log_site_admit(&grpc_site, "grpc"))
    return;
  const char *file = args->file ? args->file : "?";
  char source[256];
  snprintf(source, sizeof source, "%s:%d", file, args->line);
  const char *msg = args->message ? args->message : "";
  /* Some core messages end with a newline of their own. */
  size_t n = strlen(msg);
  if (n > 0 && msg[n - 1] == '\n') {
    char trimmed[ANA_LOG_MSG_MAX + 1];
    snprintf(trimmed, sizeof trimmed, "%.*s", (int)(n - 1), msg);
    ana_log_fields(level, "grpc", trimmed, "source", source, NULL);
    return;
  }
  ana_log_fields(level, "grpc", msg, "source", source, NULL);
}

void ana_grpc_log_route(void) {
  gpr_set_log_function(grpc_log);
}
