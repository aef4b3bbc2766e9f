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
 * The streams ride the client runtime's stream multiplexer
 * (ana_client_mux_*): it carries the gRPC side, this file the forwarding.
 *
 * Threads: rr_streams_open (lws thread) creates the stream and starts it;
 * everything after that happens on the streams thread, which alone touches
 * a stream's state. rr_stream_cancel may come from any thread
 * (ana_client_mux_cancel is thread-safe); fwd's lock keeps the stream alive
 * meanwhile. */
#include "remote_internal.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <string.h>

/* How often a stream whose WebSocket was full tries again. */
#define RETRY_MS 5
/* Messages remembered for the other streams (direct-mapped by hash): the
 * streams of one event are at most a few events apart. */
#define CACHE_SLOTS 256

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

struct rr_streams {
  struct ana_client_mux *mux;
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
  struct ana_client_mux_stream *up; /* the upstream stream */

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

static void stream_free(struct rr_stream *s) {
  message_unref(s->held);
  ana_client_mux_stream_free(s->up);
  ana_free(s);
}

/* The upstream stream ended (its END): finishes the call with its status. */
static void on_end(struct rr_stream *s, struct ana_client_mux_event *ev) {
  struct fwd *f = s->f;
  struct ana_restbridge_remote *r = f->r;
  struct ana_call *call = s->call;
  rr_fwd_lock(f);
  f->stream = NULL;
  rr_fwd_unlock(f);
  if (ev->status.code == ANA_STATUS_OK)
    ana_call_finish(call, NULL, NULL);
  else
    rr_finish_error(r, call, &ev->status, ev->details, ev->details_len);
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
    ana_client_mux_cancel(s->up); /* the client is gone: the reads end */
  return true;
}

/* One message in; forwards it and reads on. */
static void on_message(struct rr_stream *s, const uint8_t *p, size_t n) {
  const ProtobufCMessageDescriptor *d = s->call->method->output;
  size_t skip = has_sequence(d) ? leading_sequence(p, n, &s->held_seq) : 0;
  bool malformed = false;
  s->held = message_get(s->ss, d, p + skip, n - skip, &malformed);
  if (malformed) {
    /* The rest of the stream cannot be trusted; the status becomes ours. */
    ana_client_mux_fail(s->up, ANA_STATUS_INTERNAL, "malformed response");
    return;
  }
  if (!s->held) {
    ANA_WARN(RR_COMPONENT, "%s: out of memory; a stream message was dropped",
             s->call->method->path);
    ana_client_mux_read(s->up);
    return;
  }
  if (deliver(s))
    ana_client_mux_read(s->up);
  else
    block(s);
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
    ana_client_mux_read(s->up);
  }
}

static void *streams_main(void *arg) {
  struct rr_streams *ss = arg;
  int64_t retry_at = INT64_MAX;
  for (;;) {
    int64_t wait = -1;
    if (ss->blocked) {
      wait = retry_at - ana_clock_mono_ms();
      if (wait < 0)
        wait = 0;
    }
    struct ana_client_mux_event ev;
    enum ana_client_mux_event_kind kind = ana_client_mux_next(ss->mux, wait, &ev);
    if (kind == ANA_CLIENT_MUX_SHUTDOWN)
      break;
    bool was_blocked = ss->blocked != NULL;
    if (kind == ANA_CLIENT_MUX_MESSAGE)
      on_message(ev.user, ev.bytes, ev.len);
    else if (kind == ANA_CLIENT_MUX_END)
      on_end(ev.user, &ev);
    if (!was_blocked && ss->blocked)
      retry_at = ana_clock_mono_ms() + RETRY_MS;
    if (ss->blocked && ana_clock_mono_ms() >= retry_at) {
      retry_blocked(ss);
      retry_at = ana_clock_mono_ms() + RETRY_MS;
    }
  }
  return NULL;
}

/* --- opening --- */

int rr_streams_open(struct rr_streams *ss, struct fwd *f, struct ana_error *err) {
  struct ana_call *call = f->call;
  struct ana_call_options opts;
  const char *kv[2 * RR_MAX_FORWARDED_METADATA + 1];

  if (rr_call_options(call, &opts, kv) < 0)
    return ana_error_set(err, ANA_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
  struct rr_stream *s = ana_calloc(1, sizeof *s);
  if (!s)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  s->ss = ss;
  s->f = f;
  s->call = call;
  s->up = ana_client_mux_stream_create(ss->mux, call->method, f->request, &opts, s, err);
  if (!s->up) {
    stream_free(s);
    return ANA_ERR_INTERNAL;
  }

  rr_fwd_lock(f);
  f->stream = s;
  bool cancelled = f->cancelled;
  rr_fwd_unlock(f);
  if (cancelled) /* before anything started: the stream then ends at once */
    ana_client_mux_cancel(s->up);

  /* Only the start happens here: the rest of the stream's life is the
   * streams thread's, which may take its first event at once. */
  if (ana_client_mux_start(s->up, err) < 0) {
    rr_fwd_lock(f);
    f->stream = NULL;
    rr_fwd_unlock(f);
    ana_error_set(err, ANA_STATUS_INTERNAL, "%s: cannot start the upstream stream",
                  call->method->path);
    stream_free(s);
    return ANA_ERR_INTERNAL;
  }
  return 0; /* s is the streams thread's from here on */
}

void rr_stream_cancel(struct rr_stream *s) {
  if (s)
    ana_client_mux_cancel(s->up); /* thread-safe; does not block */
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
  /* Its own connection (the multiplexer's), so that the unary calls'
   * answers are not queued behind the streams' traffic. */
  ss->mux = ana_client_mux_create(target, tls, err);
  if (!ss->mux)
    goto fail;
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
  if (ss->mux) {
    ana_client_mux_shutdown(ss->mux);
    if (ss->thread_started)
      pthread_join(ss->thread, NULL);
    ana_client_mux_destroy(ss->mux);
  }
  for (size_t i = 0; i < CACHE_SLOTS; i++)
    message_unref(ss->cache[i]);
  ana_free(ss);
}

int rr_streams_reload(struct rr_streams *ss, const char *target, const struct ana_client_tls *tls,
                      struct ana_error *err) {
  return ana_client_mux_reload(ss->mux, target, tls, err);
}
