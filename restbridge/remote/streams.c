/* Server streams of the remote upstream: every WebSocket's stream to
 * analyticsd runs on one completion queue, driven by one thread.
 *
 * Why not a thread per stream blocked in ana_client_stream_recv: with 100
 * subscribers at 1,000 events/s that is 100,000 thread wake-ups a second,
 * each handing one message from the thread that read the connection to the
 * stream's own, which costs more than everything else the bridge does. Here
 * the thread that polls the connection gets the messages and forwards them
 * itself.
 *
 * Why a cache of messages: the streams of one filter get the same events,
 * each as its own gRPC message that differs only in its sequence (field 1 of
 * AnalyticsUpdate, which protobuf-c packs first). A message is looked up by
 * its bytes past the sequence, so it is unpacked once and, through
 * ana_call_send_shared, encoded as JSON once for every stream that gets it;
 * each stream's sequence is put back per send.
 *
 * Backpressure as before: a stream whose WebSocket queue is full
 * (ANA_ERR_FULL) keeps its message and posts no further read, so gRPC flow
 * control holds the upstream back; it is tried again every RETRY_MS, and the
 * bridge closes a consumer that stays full (1008), which cancels the call.
 *
 * Threads: rr_streams_open (lws thread) creates the call and starts its
 * first batch; everything after that happens on the streams thread, which
 * alone touches a stream's state. rr_stream_cancel may come from any thread
 * (grpc_call_cancel is thread-safe); fwd's lock keeps the stream alive
 * meanwhile. */
#include "remote_internal.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include <string.h>

/* How often a stream whose WebSocket was full tries again. */
#define RETRY_MS 5
/* Messages remembered for the other streams (direct-mapped by hash): the
 * streams of one event are at most a few events apart. */
#define CACHE_SLOTS 256

enum op_kind { OP_START, OP_INITIAL_MD, OP_STATUS, OP_RECV, OP_KINDS };

/* A completion-queue tag: which op of which stream. */
struct op {
  struct rr_stream *s;
  enum op_kind kind;
};

/* One message received, kept while streams may still get it. */
struct rr_message {
  int refs; /* the cache's and each stream holding it (streams thread only) */
  const ProtobufCMessageDescriptor *desc;
  uint64_t hash;
  uint8_t *bytes; /* the message without its sequence */
  size_t len;
  ProtobufCMessage *msg;
  struct ana_call_shared *shared;
};

/* Channels replaced by a reload, kept for the streams still on them; past
 * this many the oldest is destroyed (reloads are an operator's SIGHUP). */
#define RETIRED_MAX 4

struct rr_streams {
  pthread_mutex_t channel_mu; /* guards channel and retired */
  grpc_channel *channel;
  grpc_channel *retired[RETIRED_MAX]; /* oldest first */
  grpc_completion_queue *cq;
  pthread_t thread;
  bool thread_started;
  struct rr_message *cache[CACHE_SLOTS]; /* streams thread only */
  struct rr_stream *blocked;             /* streams thread only: full WebSockets */
  int max_depth;                         /* PROTO_MAX_DEPTH */
};

struct rr_stream {
  struct rr_streams *ss;
  struct fwd *f;
  struct ana_call *call;
  grpc_call *gcall;
  struct op ops[OP_KINDS];
  int in_flight; /* batches started and not completed */

  /* what the start batch sends, freed when it completes */
  grpc_metadata *md;
  size_t n_md;
  grpc_byte_buffer *request;

  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
  bool status_in;
  grpc_byte_buffer *recv;
  bool reading;   /* a RECV_MESSAGE is in flight */
  bool recv_done; /* the last message was read */

  /* the message being handed over (kept while the WebSocket is full) */
  struct rr_message *held;
  uint64_t held_seq;
  struct rr_stream *blocked_next;
  bool blocked;
};

/* --- messages --- */

static void message_unref(struct rr_message *m) {
  if (!m || --m->refs > 0)
    return;
  ana_call_shared_destroy(m->shared);
  if (m->msg)
    protobuf_c_message_free_unpacked(m->msg, NULL);
  ana_free(m->bytes);
  ana_free(m);
}

/* Whether messages of d carry a per-call sequence: field 1 a singular
 * uint64 (as ana_call_shared_create requires). */
static bool has_sequence(const ProtobufCMessageDescriptor *d) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
  return f && f->type == PROTOBUF_C_TYPE_UINT64 && f->label != PROTOBUF_C_LABEL_REPEATED &&
         !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF);
}

/* Length of the leading field 1 varint of p (tag 0x08), with its value in
 * *seq; 0 when p does not start with one. */
static size_t leading_sequence(const uint8_t *p, size_t n, uint64_t *seq) {
  uint64_t v = 0;
  *seq = 0;
  if (n < 2 || p[0] != 0x08)
    return 0;
  for (size_t i = 1; i < n && i <= 10; i++) {
    v |= (uint64_t)(p[i] & 0x7f) << (7 * (i - 1));
    if (!(p[i] & 0x80)) {
      *seq = v;
      return i + 1;
    }
  }
  return 0;
}

/* A hash for the cache, eight bytes at a time (byte by byte it was a
 * visible part of the thread's time); equality is checked by memcmp. */
static uint64_t hash_bytes(const uint8_t *p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  uint64_t w = 0;
  memcpy(&w, p + i, n - i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 29);
}

/* The message p of type d without its sequence, from the cache or unpacked
 * and cached; with a reference for the caller. NULL when it does not unpack
 * (*malformed) or out of memory. */
static struct rr_message *message_get(struct rr_streams *ss, const ProtobufCMessageDescriptor *d,
                                      const uint8_t *p, size_t n, bool *malformed) {
  *malformed = false;
  /* Only live updates (with a per-call sequence) repeat across streams; a
   * download's chunks never do and are not kept (they would pin up to
   * CACHE_SLOTS x 64 KiB). */
  bool cacheable = has_sequence(d);
  uint64_t h = cacheable ? hash_bytes(p, n) ^ (uint64_t)(uintptr_t)d : 0;
  struct rr_message **slot = &ss->cache[h % CACHE_SLOTS];
  struct rr_message *m = cacheable ? *slot : NULL;
  if (m && m->hash == h && m->desc == d && m->len == n && memcmp(m->bytes, p, n) == 0) {
    m->refs++;
    return m;
  }
  m = ana_calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->refs = 1;
  m->desc = d;
  m->hash = h;
  m->len = n;
  m->bytes = ana_malloc(n ? n : 1);
  m->msg = ana_proto_unpack(d, NULL, p, n, ss->max_depth, NULL);
  if (!m->msg)
    *malformed = true;
  if (m->bytes && m->msg) {
    /* A sequence that comes again further on wins (protobuf's rule): the
     * message then goes as it is. */
    bool per_call = has_sequence(d);
    if (per_call) {
      size_t off = protobuf_c_message_descriptor_get_field(d, 1)->offset;
      per_call = *(const uint64_t *)((const char *)m->msg + off) == 0;
    }
    m->shared = ana_call_shared_create(m->msg, per_call);
  }
  if (!m->shared) {
    message_unref(m);
    return NULL;
  }
  memcpy(m->bytes, p, n);
  if (!cacheable)
    return m;
  m->refs++; /* the cache's */
  message_unref(*slot);
  *slot = m;
  return m;
}

/* --- streams --- */

static int start(struct rr_stream *s, grpc_op *ops, size_t n, enum op_kind kind) {
  grpc_call_error e = grpc_call_start_batch(s->gcall, ops, n, &s->ops[kind], NULL);
  if (e != GRPC_CALL_OK) {
    ANA_ERROR(RR_COMPONENT, "%s: grpc_call_start_batch failed (%d); cancelling the stream",
              s->call->method->path, (int)e);
    grpc_call_cancel(s->gcall, NULL);
    return ANA_ERR_INTERNAL;
  }
  s->in_flight++;
  return 0;
}

static void post_read(struct rr_stream *s) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &s->recv;
  if (start(s, &op, 1, OP_RECV) == 0)
    s->reading = true;
  else
    s->recv_done = true;
}

static void free_start_data(struct rr_stream *s) {
  for (size_t i = 0; i < s->n_md; i++) {
    grpc_slice_unref(s->md[i].key);
    grpc_slice_unref(s->md[i].value);
  }
  ana_free(s->md);
  s->md = NULL;
  s->n_md = 0;
  if (s->request)
    grpc_byte_buffer_destroy(s->request);
  s->request = NULL;
}

static void stream_free(struct rr_stream *s) {
  free_start_data(s);
  message_unref(s->held);
  if (s->recv)
    grpc_byte_buffer_destroy(s->recv);
  grpc_metadata_array_destroy(&s->initial_md);
  grpc_metadata_array_destroy(&s->trailing_md);
  grpc_slice_unref(s->details);
  if (s->gcall)
    grpc_call_unref(s->gcall);
  ana_free(s);
}

/* Finishes the call once everything is in: the status, the last message
 * read and handed over, every batch completed. */
static void maybe_end(struct rr_stream *s) {
  if (!s->status_in || !s->recv_done || s->held || s->in_flight)
    return;
  struct fwd *f = s->f;
  struct ana_restbridge_remote *r = f->r;
  struct ana_call *call = s->call;
  rr_fwd_lock(f);
  f->stream = NULL;
  rr_fwd_unlock(f);
  if (s->status == GRPC_STATUS_OK) {
    ana_call_finish(call, NULL, NULL);
  } else {
    struct ana_error err;
    enum ana_status code = ANA_STATUS_UNKNOWN;
    if (s->status > GRPC_STATUS_OK && s->status <= GRPC_STATUS_UNAUTHENTICATED)
      code = (enum ana_status)s->status; /* enum ana_status mirrors the gRPC codes */
    ana_error_set(&err, code, "%.*s", (int)GRPC_SLICE_LENGTH(s->details),
                  (const char *)GRPC_SLICE_START_PTR(s->details));
    uint8_t *details = NULL;
    size_t details_len = 0;
    for (size_t i = 0; i < s->trailing_md.count; i++) {
      const grpc_metadata *md = &s->trailing_md.metadata[i];
      if (grpc_slice_str_cmp(md->key, "grpc-status-details-bin") == 0) {
        details_len = GRPC_SLICE_LENGTH(md->value);
        details = ana_malloc(details_len ? details_len : 1);
        if (details)
          memcpy(details, GRPC_SLICE_START_PTR(md->value), details_len);
        else
          details_len = 0;
        break;
      }
    }
    rr_finish_error(r, call, &err, details, details_len);
  }
  rr_call_done(r, true);
  stream_free(s);
}

static void block(struct rr_stream *s) {
  if (s->blocked)
    return;
  s->blocked = true;
  s->blocked_next = s->ss->blocked;
  s->ss->blocked = s;
}

/* Hands the held message to the call. Returns false when the WebSocket is
 * full (the message stays held). */
static bool deliver(struct rr_stream *s) {
  int rc = ana_call_send_shared(s->call, s->held->shared, s->held_seq);
  if (rc == ANA_ERR_FULL)
    return false;
  message_unref(s->held);
  s->held = NULL;
  if (rc < 0)
    grpc_call_cancel(s->gcall, NULL); /* the client is gone: the reads end */
  return true;
}

/* One message in (or the end of them); forwards it and reads on. */
static void on_read(struct rr_stream *s, bool ok) {
  s->reading = false;
  grpc_byte_buffer *bb = s->recv;
  s->recv = NULL;
  if (!ok || !bb) {
    if (bb)
      grpc_byte_buffer_destroy(bb);
    s->recv_done = true;
    return;
  }
  grpc_byte_buffer_reader reader;
  grpc_slice slice = grpc_empty_slice();
  if (grpc_byte_buffer_reader_init(&reader, bb)) {
    slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
  }
  grpc_byte_buffer_destroy(bb);
  const ProtobufCMessageDescriptor *d = s->call->method->output;
  const uint8_t *p = GRPC_SLICE_START_PTR(slice);
  size_t n = GRPC_SLICE_LENGTH(slice);
  size_t skip = has_sequence(d) ? leading_sequence(p, n, &s->held_seq) : 0;
  bool malformed = false;
  s->held = message_get(s->ss, d, p + skip, n - skip, &malformed);
  grpc_slice_unref(slice);
  if (malformed) {
    /* The rest of the stream cannot be trusted; the status becomes ours. */
    grpc_call_cancel_with_status(s->gcall, GRPC_STATUS_INTERNAL, "malformed response", NULL);
    s->recv_done = true;
    return;
  }
  if (!s->held) {
    ANA_WARN(RR_COMPONENT, "%s: out of memory; a stream message was dropped",
             s->call->method->path);
    post_read(s);
    return;
  }
  if (deliver(s))
    post_read(s);
  else
    block(s);
}

static void on_start(struct rr_stream *s, bool ok) {
  grpc_op op;
  free_start_data(s);
  /* The status comes whatever happened (an unreachable upstream gives
   * UNAVAILABLE at once). */
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  op.data.recv_status_on_client.status = &s->status;
  op.data.recv_status_on_client.status_details = &s->details;
  if (start(s, &op, 1, OP_STATUS) < 0) {
    s->status = GRPC_STATUS_INTERNAL;
    s->details = grpc_slice_from_static_string("the bridge cannot read the stream's status");
    s->status_in = true;
  }
  if (!ok) {
    s->recv_done = true;
    return;
  }
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_INITIAL_METADATA;
  op.data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
  if (start(s, &op, 1, OP_INITIAL_MD) < 0) {
    s->recv_done = true;
    return;
  }
  post_read(s);
}

static void on_event(struct op *o, bool ok) {
  struct rr_stream *s = o->s;
  s->in_flight--;
  switch (o->kind) {
  case OP_START: on_start(s, ok); break;
  case OP_INITIAL_MD: break;
  case OP_STATUS: s->status_in = true; break;
  case OP_RECV: on_read(s, ok); break;
  default: break;
  }
  maybe_end(s);
}

/* Tries the streams whose WebSocket was full again. */
static void retry_blocked(struct rr_streams *ss) {
  struct rr_stream *list = ss->blocked;
  ss->blocked = NULL;
  while (list) {
    struct rr_stream *s = list;
    list = s->blocked_next;
    s->blocked = false;
    s->blocked_next = NULL;
    if (!deliver(s)) {
      block(s);
      continue;
    }
    post_read(s);
    maybe_end(s);
  }
}

static void *streams_main(void *arg) {
  struct rr_streams *ss = arg;
  gpr_timespec retry_at = gpr_inf_future(GPR_CLOCK_MONOTONIC);
  for (;;) {
    gpr_timespec wait = ss->blocked ? retry_at : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_event ev = grpc_completion_queue_next(ss->cq, wait, NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE) {
      bool was_blocked = ss->blocked != NULL;
      on_event(ev.tag, ev.success != 0);
      if (!was_blocked && ss->blocked)
        retry_at = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                gpr_time_from_millis(RETRY_MS, GPR_TIMESPAN));
    }
    if (ss->blocked && gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), retry_at) >= 0) {
      retry_blocked(ss);
      retry_at =
          gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(RETRY_MS, GPR_TIMESPAN));
    }
  }
  return NULL;
}

/* --- opening --- */

/* The call's metadata as gRPC wants it, checked the way the client runtime
 * checks it (core would refuse a bad key only at start_batch). */
static int build_metadata(struct rr_stream *s, const struct ana_call_options *opts,
                          struct ana_error *err) {
  size_t pairs = 0;
  while (opts->metadata && opts->metadata[2 * pairs])
    pairs++;
  s->md = ana_calloc(pairs + 1, sizeof *s->md);
  if (!s->md)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i <= pairs; i++) {
    const char *key = i < pairs ? opts->metadata[2 * i] : "authorization";
    const char *value = i < pairs ? opts->metadata[2 * i + 1] : opts->authorization;
    if (!value)
      continue;
    grpc_slice k = grpc_slice_from_static_string(key);
    grpc_slice v = grpc_slice_from_static_string(value);
    if (!grpc_header_key_is_legal(k) || strncmp(key, "grpc-", 5) == 0)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "invalid metadata key \"%s\"", key);
    if (!grpc_is_binary_header(k) && !grpc_header_nonbin_value_is_legal(v))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "invalid value for metadata key \"%s\"", key);
    s->md[s->n_md].key = grpc_slice_from_copied_string(key);
    s->md[s->n_md].value = grpc_slice_from_copied_string(value);
    s->n_md++;
  }
  return 0;
}

int rr_streams_open(struct rr_streams *ss, struct fwd *f, struct ana_error *err) {
  struct ana_call *call = f->call;
  struct ana_call_options opts;
  const char *kv[2 * RR_MAX_FORWARDED_METADATA + 1];
  int rc;

  if (rr_call_options(call, &opts, kv) < 0)
    return ana_error_set(err, ANA_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
  struct rr_stream *s = ana_calloc(1, sizeof *s);
  if (!s)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  s->ss = ss;
  s->f = f;
  s->call = call;
  s->details = grpc_empty_slice();
  grpc_metadata_array_init(&s->initial_md);
  grpc_metadata_array_init(&s->trailing_md);
  for (int i = 0; i < OP_KINDS; i++)
    s->ops[i] = (struct op){s, (enum op_kind)i};
  rc = build_metadata(s, &opts, err);
  if (rc < 0)
    goto fail;

  gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
  if (opts.timeout_ms > 0)
    deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                            gpr_time_from_millis(opts.timeout_ms, GPR_TIMESPAN));
  /* The method path lives in the static method table. */
  pthread_mutex_lock(&ss->channel_mu);
  s->gcall = grpc_channel_create_call(ss->channel, NULL, GRPC_PROPAGATE_DEFAULTS, ss->cq,
                                      grpc_slice_from_static_string(call->method->path), NULL,
                                      deadline, NULL);
  pthread_mutex_unlock(&ss->channel_mu);
  if (!s->gcall) {
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create a call to %s", call->method->path);
    goto fail;
  }
  size_t n = protobuf_c_message_get_packed_size(f->request);
  grpc_slice body = grpc_slice_malloc(n);
  protobuf_c_message_pack(f->request, GRPC_SLICE_START_PTR(body));
  s->request = grpc_raw_byte_buffer_create(&body, 1);
  grpc_slice_unref(body);

  rr_fwd_lock(f);
  f->stream = s;
  bool cancelled = f->cancelled;
  rr_fwd_unlock(f);
  if (cancelled) /* before anything started: the batch then fails at once */
    grpc_call_cancel(s->gcall, NULL);

  /* Only this batch is started here: the rest of the stream's life is the
   * streams thread's, which may take this batch's completion at once. */
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET; /* fail fast */
  ops[0].data.send_initial_metadata.count = s->n_md;
  ops[0].data.send_initial_metadata.metadata = s->md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = s->request;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  s->in_flight = 1;
  if (grpc_call_start_batch(s->gcall, ops, 3, &s->ops[OP_START], NULL) != GRPC_CALL_OK) {
    rr_fwd_lock(f);
    f->stream = NULL;
    rr_fwd_unlock(f);
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "%s: cannot start the upstream stream",
                       call->method->path);
    goto fail;
  }
  return 0; /* s is the streams thread's from here on */

fail:
  stream_free(s);
  return rc;
}

void rr_stream_cancel(struct rr_stream *s) {
  if (s)
    grpc_call_cancel(s->gcall, NULL); /* thread-safe; does not block */
}

/* --- lifecycle --- */

struct rr_streams *rr_streams_create(const char *target, const struct ana_client_tls *tls,
                                     int max_depth, struct ana_error *err) {
  struct rr_streams *ss = ana_calloc(1, sizeof *ss);
  if (!ss) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  ss->max_depth = max_depth;
  pthread_mutex_init(&ss->channel_mu, NULL);
  grpc_init(); /* released by destroy */
  /* Its own connection, so that the unary calls' answers are not queued
   * behind the streams' traffic (channels with the same target and
   * arguments would share one). */
  ss->channel = ana_client_grpc_channel_create(target, tls, true, err);
  if (!ss->channel)
    goto fail;
  ss->cq = grpc_completion_queue_create_for_next(NULL);
  if (!ss->channel || !ss->cq) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create the streams' channel to %s", target);
    goto fail;
  }
  if (pthread_create(&ss->thread, NULL, streams_main, ss) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the streams thread");
    goto fail;
  }
  ss->thread_started = true;
  return ss;
fail:
  rr_streams_destroy(ss);
  return NULL;
}

void rr_streams_destroy(struct rr_streams *ss) {
  if (!ss)
    return;
  if (ss->cq) {
    grpc_completion_queue_shutdown(ss->cq);
    if (ss->thread_started)
      pthread_join(ss->thread, NULL);
    else
      while (grpc_completion_queue_next(ss->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
             GRPC_QUEUE_SHUTDOWN) {
      }
    grpc_completion_queue_destroy(ss->cq);
  }
  for (size_t i = 0; i < CACHE_SLOTS; i++)
    message_unref(ss->cache[i]);
  if (ss->channel)
    grpc_channel_destroy(ss->channel);
  for (size_t i = 0; i < RETIRED_MAX; i++)
    if (ss->retired[i])
      grpc_channel_destroy(ss->retired[i]);
  pthread_mutex_destroy(&ss->channel_mu);
  ana_free(ss);
  grpc_shutdown();
}

int rr_streams_reload(struct rr_streams *ss, const char *target, const struct ana_client_tls *tls,
                      struct ana_error *err) {
  grpc_channel *fresh = ana_client_grpc_channel_create(target, tls, true, err);
  if (!fresh)
    return ANA_ERR_INVALID;
  grpc_channel *oldest = NULL;
  pthread_mutex_lock(&ss->channel_mu);
  oldest = ss->retired[0];
  memmove(ss->retired, ss->retired + 1, (RETIRED_MAX - 1) * sizeof *ss->retired);
  ss->retired[RETIRED_MAX - 1] = ss->channel;
  ss->channel = fresh;
  pthread_mutex_unlock(&ss->channel_mu);
  if (oldest)
    grpc_channel_destroy(oldest);
  return 0;
}
