/* Client runtime over the gRPC core C API; the only client file that sees grpc. */
#include "ana_client_rpc.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_file.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

struct ana_client_channel {
  grpc_channel *channel;
  atomic_int live_calls; /* calls and streams not finished yet */
  atomic_int max_depth;  /* nesting limit of the responses (PROTO_MAX_DEPTH) */
};

/* The caller's request metadata as gRPC wants it: refcounted copies, kept
 * until the SEND_INITIAL_METADATA op that carries them completes. */
struct call_metadata {
  grpc_metadata *items;
  size_t count;
};

/* Ops of a stream that can be in flight, one each; the address of
 * tags[kind] is the completion-queue tag of that op. */
enum stream_op { OP_SEND, OP_INITIAL_MD, OP_RECV, OP_STATUS, OP_KINDS };

struct ana_client_stream {
  struct ana_client_channel *ch;
  const struct ana_method *method;
  grpc_completion_queue *cq; /* pluck queue of this call only */
  grpc_call *call;
  struct call_metadata md;
  grpc_metadata_array initial_md;
  grpc_metadata_array trailing_md;
  char tags[OP_KINDS];
  bool pending[OP_KINDS]; /* each written only by the thread driving that op */
  bool send_closed;       /* sender side */
  bool recv_done;         /* receiver side: the end of the messages was seen */
  bool malformed;         /* receiver side: a response did not decode */
  /* The status op may be collected by the sender or the receiver, so it is
   * waited for under mu; its results are fixed once status_received is set. */
  pthread_mutex_t mu;
  bool status_received;
  grpc_status_code status;
  grpc_slice details;
};

/* --- Helpers --- */

static int nomem(struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return ANA_ERR_NOMEM;
}

static int malformed_response(struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_INTERNAL, "malformed response");
  return ANA_ERR_INTERNAL;
}

static int status_error(grpc_status_code code, grpc_slice details, struct ana_error *err) {
  enum ana_status c = ANA_STATUS_UNKNOWN;
  if (code > GRPC_STATUS_OK && code <= GRPC_STATUS_UNAUTHENTICATED)
    c = (enum ana_status)code; /* enum ana_status mirrors the gRPC codes */
  return ana_error_set(err, c, "%.*s", (int)GRPC_SLICE_LENGTH(details),
                       (const char *)GRPC_SLICE_START_PTR(details));
}

/* A copy of the grpc-status-details-bin trailer (a serialized
 * google.rpc.Status), or NULL when the trailers hold none. */
static uint8_t *copy_status_details(const grpc_metadata_array *trailing, size_t *len) {
  *len = 0;
  for (size_t i = 0; i < trailing->count; i++) {
    const grpc_metadata *md = &trailing->metadata[i];
    if (!grpc_slice_str_cmp(md->key, "grpc-status-details-bin")) {
      size_t n = GRPC_SLICE_LENGTH(md->value);
      uint8_t *out = ana_malloc(n ? n : 1);
      if (!out)
        return NULL;
      memcpy(out, GRPC_SLICE_START_PTR(md->value), n);
      *len = n;
      return out;
    }
  }
  return NULL;
}

static gpr_timespec deadline_of(const struct ana_call_options *opts) {
  if (!opts || opts->timeout_ms == 0)
    return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(opts->timeout_ms, GPR_TIMESPAN));
}

static uint32_t initial_md_flags(const struct ana_call_options *opts) {
  uint32_t flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
  if (opts && opts->wait_for_ready)
    flags |= GRPC_INITIAL_METADATA_WAIT_FOR_READY;
  return flags;
}

/* Waits for the op with this tag. The queue is never shut down while a call
 * is live and the wait has no deadline (the call's own deadline ends it), so
 * the only outcome is the completion. */
static bool wait_tag(grpc_completion_queue *cq, void *tag) {
  grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  assert(ev.type == GRPC_OP_COMPLETE);
  return ev.success != 0;
}

static void cq_destroy(grpc_completion_queue *cq) {
  if (!cq)
    return;
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}

/* A failed start_batch means a bug here or a gRPC refusal; either way the
 * call is unusable (core may have half-applied the batch), so cancel it. */
static int start_batch(grpc_call *call, const grpc_op *ops, size_t n, void *tag,
                       struct ana_error *err) {
  grpc_call_error e = grpc_call_start_batch(call, ops, n, tag, NULL);
  if (e == GRPC_CALL_OK)
    return 0;
  grpc_call_cancel(call, NULL);
  ana_error_set(err, ANA_STATUS_INTERNAL, "grpc_call_start_batch failed (%d)", (int)e);
  return ANA_ERR_INTERNAL;
}

static grpc_byte_buffer *encode(const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  grpc_slice s = grpc_slice_malloc(n);
  grpc_byte_buffer *bb;

  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

/* NULL if the buffer does not hold a message of type desc (or one nested
 * deeper than max_depth). */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                                int max_depth) {
  grpc_byte_buffer_reader reader;
  ProtobufCMessage *msg;
  grpc_slice s;

  if (!grpc_byte_buffer_reader_init(&reader, bb))
    return NULL;
  s = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  msg =
      ana_proto_unpack(desc, NULL, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), max_depth, NULL);
  grpc_slice_unref(s);
  return msg;
}

static int check_message(const ProtobufCMessage *msg, const struct ana_method *m,
                         struct ana_error *err) {
  if (!msg)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: no request message", m->path);
  if (msg->descriptor != m->input)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s takes %s, not %s", m->path,
                         m->input->name, msg->descriptor->name);
  return 0;
}

/* m (not NULL) is a method of this kind. */
static int check_kind(const struct ana_method *m, enum ana_method_kind kind,
                      struct ana_error *err) {
  if (m->kind != kind)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s is not a %s method", m->path,
                         kind == ANA_METHOD_UNARY              ? "unary"
                         : kind == ANA_METHOD_SERVER_STREAMING ? "server-streaming"
                                                               : "streaming");
  return 0;
}

static int check_method(struct ana_client_channel *ch, const struct ana_method *m,
                        enum ana_method_kind kind, struct ana_error *err) {
  if (!ch || !m)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "no channel or method");
  return check_kind(m, kind, err);
}

/* --- Metadata --- */

/* Core rejects a bad key or value only at start_batch, and then refuses any
 * later SEND_INITIAL_METADATA on the call, so everything is checked first.
 * "grpc-" keys are reserved for the protocol itself. */
static int metadata_check(const char *key, const char *value, struct ana_error *err) {
  grpc_slice k = grpc_slice_from_static_string(key);
  grpc_slice v = grpc_slice_from_static_string(value);

  if (!grpc_header_key_is_legal(k) || strncmp(key, "grpc-", 5) == 0)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "invalid metadata key \"%s\"", key);
  if (!grpc_is_binary_header(k) && !grpc_header_nonbin_value_is_legal(v))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "invalid value for metadata key \"%s\"",
                         key);
  return 0;
}

static void metadata_fini(struct call_metadata *md) {
  for (size_t i = 0; i < md->count; i++) {
    grpc_slice_unref(md->items[i].key);
    grpc_slice_unref(md->items[i].value);
  }
  ana_free(md->items);
  md->items = NULL;
  md->count = 0;
}

static void metadata_add(struct call_metadata *md, const char *key, const char *value) {
  grpc_metadata *item = &md->items[md->count++];
  item->key = grpc_slice_from_copied_string(key);
  item->value = grpc_slice_from_copied_string(value);
}

static int metadata_build(const struct ana_call_options *opts, struct call_metadata *md,
                          struct ana_error *err) {
  const char *const *kv = opts ? opts->metadata : NULL;
  size_t pairs = 0, n;
  int rc;

  md->items = NULL;
  md->count = 0;
  if (opts && opts->timeout_ms < 0)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "negative timeout");
  if (opts && opts->authorization) {
    rc = metadata_check("authorization", opts->authorization, err);
    if (rc < 0)
      return rc;
  }
  for (; kv && kv[2 * pairs]; pairs++) {
    if (!kv[2 * pairs + 1])
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "metadata key \"%s\" has no value",
                           kv[2 * pairs]);
    rc = metadata_check(kv[2 * pairs], kv[2 * pairs + 1], err);
    if (rc < 0)
      return rc;
  }
  n = pairs + (opts && opts->authorization ? 1 : 0);
  if (n == 0)
    return 0;
  md->items = ana_calloc(n, sizeof *md->items);
  if (!md->items)
    return nomem(err);
  if (opts->authorization)
    metadata_add(md, "authorization", opts->authorization);
  for (size_t i = 0; i < pairs; i++)
    metadata_add(md, kv[2 * i], kv[2 * i + 1]);
  return 0;
}

/* --- Channels --- */

/* Largest TLS file read; a certificate bundle is far smaller. */
#define MAX_PEM_BYTES (1 << 20)

static bool set(const char *s) {
  return s && s[0];
}

/* Reads a PEM file whole into *out (NUL-terminated; caller frees). */
static int read_pem(const char *what, const char *path, char **out, struct ana_error *err) {
  int rc = ana_file_read_whole(what, path, MAX_PEM_BYTES, out, NULL, err);
  if (rc == 0 && !strstr(*out, "-----BEGIN ")) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s holds no PEM data", what, path);
    ana_free(*out);
    *out = NULL;
    rc = ANA_ERR_INVALID;
  }
  return rc;
}

/* The channel credentials tls asks for (NULL with err filled). */
static grpc_channel_credentials *channel_credentials(const struct ana_client_tls *tls,
                                                     struct ana_error *err) {
  if (!tls || !(tls->enabled || set(tls->ca_file) || set(tls->cert_file) || set(tls->key_file)))
    return grpc_insecure_credentials_create();
  grpc_channel_credentials *creds = NULL;
  char *ca = NULL, *cert = NULL, *key = NULL;
  if (set(tls->cert_file) != set(tls->key_file)) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "TLS client certificate: the certificate and its key go together (the %s is "
                  "missing)",
                  set(tls->cert_file) ? "key" : "certificate");
    goto out;
  }
  if ((set(tls->ca_file) && read_pem("TLS CA file", tls->ca_file, &ca, err) < 0) ||
      (set(tls->cert_file) && read_pem("TLS certificate file", tls->cert_file, &cert, err) < 0) ||
      (set(tls->key_file) && read_pem("TLS key file", tls->key_file, &key, err) < 0))
    goto out;
  grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
  /* Core copies the PEM strings. */
  creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
  if (!creds)
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot set up TLS");
out:
  ana_free(ca);
  ana_free(cert);
  if (key)
    memset(key, 0, strlen(key));
  ana_free(key);
  return creds;
}

/* A core channel to target; with own_connection, on a connection not shared
 * with other channels to target. NULL with err filled on failure. */
static grpc_channel *grpc_channel_to(const char *target, const struct ana_client_tls *tls,
                                     bool own_connection, struct ana_error *err) {
  grpc_arg args[2];
  size_t n = 0;
  if (own_connection)
    args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                           .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                           .value.integer = 1};
  if (tls && set(tls->server_name))
    args[n++] = (grpc_arg){.type = GRPC_ARG_STRING,
                           .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                           .value.string = (char *)tls->server_name};
  grpc_channel_args channel_args = {.num_args = n, .args = args};
  grpc_channel_credentials *creds = channel_credentials(tls, err);
  if (!creds)
    return NULL;
  grpc_channel *channel = grpc_channel_create(target, creds, n ? &channel_args : NULL);
  grpc_channel_credentials_release(creds);
  if (!channel)
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create a channel to %s", target);
  return channel;
}

struct ana_client_channel *ana_client_channel_create(const char *target, struct ana_error *err) {
  return ana_client_channel_create_tls(target, NULL, err);
}

struct ana_client_channel *ana_client_channel_create_tls(const char *target,
                                                         const struct ana_client_tls *tls,
                                                         struct ana_error *err) {
  struct ana_client_channel *ch;

  ana_error_clear(err);
  if (!target || !*target) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "no target");
    return NULL;
  }
  ch = ana_calloc(1, sizeof *ch);
  if (!ch) {
    nomem(err);
    return NULL;
  }
  atomic_init(&ch->live_calls, 0);
  atomic_init(&ch->max_depth, ANA_PROTO_DEFAULT_MAX_DEPTH);
  /* Core counts grpc_init calls and cleans up at the matching last
   * grpc_shutdown, so one reference per channel keeps the library up exactly
   * while channels exist, also beside other users in the same process. */
  grpc_init();
  ch->channel = grpc_channel_to(target, tls, false, err);
  if (!ch->channel) {
    ana_client_channel_destroy(ch);
    return NULL;
  }
  return ch;
}

void ana_client_channel_set_max_depth(struct ana_client_channel *ch, int max_depth) {
  if (ch)
    atomic_store(&ch->max_depth, max_depth > 0 ? max_depth : ANA_PROTO_DEFAULT_MAX_DEPTH);
}

int ana_client_channel_max_depth(const struct ana_client_channel *ch) {
  return ch ? atomic_load(&((struct ana_client_channel *)ch)->max_depth)
            : ANA_PROTO_DEFAULT_MAX_DEPTH;
}

void ana_client_channel_destroy(struct ana_client_channel *ch) {
  if (!ch)
    return;
  assert(atomic_load(&ch->live_calls) == 0 && "calls still running on the channel");
  if (ch->channel)
    grpc_channel_destroy(ch->channel);
  ana_free(ch);
  grpc_shutdown();
}

/* Creates the call and its queue; on failure both are NULL. */
static int call_create(struct ana_client_channel *ch, const struct ana_method *m,
                       const struct ana_call_options *opts, grpc_completion_queue **cq,
                       grpc_call **call, struct ana_error *err) {
  *cq = grpc_completion_queue_create_for_pluck(NULL);
  *call = NULL;
  if (!*cq) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create a completion queue");
    return ANA_ERR_INTERNAL;
  }
  /* m->path lives in the static method table. */
  *call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, *cq,
                                   grpc_slice_from_static_string(m->path), NULL, deadline_of(opts),
                                   NULL);
  if (!*call) {
    cq_destroy(*cq);
    *cq = NULL;
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create a call to %s", m->path);
    return ANA_ERR_INTERNAL;
  }
  atomic_fetch_add(&ch->live_calls, 1);
  return 0;
}

/* Every op of the call must have completed. */
static void call_destroy(struct ana_client_channel *ch, grpc_call *call,
                         grpc_completion_queue *cq) {
  if (call) {
    grpc_call_unref(call);
    atomic_fetch_sub(&ch->live_calls, 1);
  }
  cq_destroy(cq);
}

/* --- Unary --- */

int ana_client_unary(struct ana_client_channel *ch, const struct ana_method *m,
                     const ProtobufCMessage *request, ProtobufCMessage **response,
                     const struct ana_call_options *opts, struct ana_error *err) {
  return ana_client_unary_details(ch, m, request, response, opts, NULL, NULL, err);
}

int ana_client_unary_details(struct ana_client_channel *ch, const struct ana_method *m,
                             const ProtobufCMessage *request, ProtobufCMessage **response,
                             const struct ana_call_options *opts, uint8_t **details,
                             size_t *details_len, struct ana_error *err) {
  grpc_completion_queue *cq = NULL;
  grpc_call *call = NULL;
  struct call_metadata md = {0};
  grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice status_details = grpc_empty_slice();
  grpc_op ops[6];
  char tag;
  int rc;

  ana_error_clear(err);
  grpc_metadata_array_init(&initial_md);
  grpc_metadata_array_init(&trailing_md);
  if (response)
    *response = NULL;
  if (details)
    *details = NULL;
  if (details_len)
    *details_len = 0;
  rc = check_method(ch, m, ANA_METHOD_UNARY, err);
  if (rc < 0)
    goto out;
  rc = check_message(request, m, err);
  if (rc < 0)
    goto out;
  if (!response) {
    rc = ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: no response pointer", m->path);
    goto out;
  }
  rc = metadata_build(opts, &md, err);
  if (rc < 0)
    goto out;
  rc = call_create(ch, m, opts, &cq, &call, err);
  if (rc < 0)
    goto out;

  /* One batch for the whole exchange; its outcome is in the status. */
  send_bb = encode(request);
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].flags = initial_md_flags(opts);
  ops[0].data.send_initial_metadata.count = md.count;
  ops[0].data.send_initial_metadata.metadata = md.items;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
  ops[5].data.recv_status_on_client.status = &status;
  ops[5].data.recv_status_on_client.status_details = &status_details;
  rc = start_batch(call, ops, 6, &tag, err);
  if (rc < 0)
    goto out;
  (void)wait_tag(cq, &tag);

  if (status != GRPC_STATUS_OK) {
    rc = status_error(status, status_details, err);
    if (details && details_len)
      *details = copy_status_details(&trailing_md, details_len);
    goto out;
  }
  if (!recv_bb || !(*response = decode(m->output, recv_bb, atomic_load(&ch->max_depth)))) {
    rc = malformed_response(err);
    goto out;
  }
  rc = 0;

out:
  if (recv_bb)
    grpc_byte_buffer_destroy(recv_bb);
  if (send_bb)
    grpc_byte_buffer_destroy(send_bb);
  grpc_slice_unref(status_details);
  grpc_metadata_array_destroy(&initial_md);
  grpc_metadata_array_destroy(&trailing_md);
  call_destroy(ch, call, cq);
  metadata_fini(&md);
  return rc;
}

/* --- Streams --- */

static void *stream_tag(struct ana_client_stream *s, enum stream_op op) {
  return &s->tags[op];
}

static int stream_start(struct ana_client_stream *s, const grpc_op *ops, size_t n,
                        enum stream_op op, struct ana_error *err) {
  int rc = start_batch(s->call, ops, n, stream_tag(s, op), err);
  if (rc == 0)
    s->pending[op] = true;
  return rc;
}

static bool stream_wait(struct ana_client_stream *s, enum stream_op op) {
  bool ok = wait_tag(s->cq, stream_tag(s, op));
  s->pending[op] = false;
  return ok;
}

/* Waits for the final status unless it is in. Messages not read yet hold the
 * status back, so the caller has read (or is reading) them all. */
static void stream_collect_status(struct ana_client_stream *s) {
  pthread_mutex_lock(&s->mu);
  if (!s->status_received) {
    stream_wait(s, OP_STATUS);
    s->status_received = true;
  }
  pthread_mutex_unlock(&s->mu);
}

/* The outcome of a stream whose status is in. */
static int stream_result(struct ana_client_stream *s, struct ana_error *err) {
  int rc = 0;

  if (s->malformed)
    return malformed_response(err);
  pthread_mutex_lock(&s->mu);
  assert(s->status_received);
  if (s->status != GRPC_STATUS_OK)
    rc = status_error(s->status, s->details, err);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* A send op failed: the call is over. Its status is reported if it is
 * already in; waiting for it here could wait for unread messages. */
static int stream_closed(struct ana_client_stream *s, struct ana_error *err) {
  pthread_mutex_lock(&s->mu);
  if (!s->status_received) {
    grpc_event ev = grpc_completion_queue_pluck(s->cq, stream_tag(s, OP_STATUS),
                                                gpr_inf_past(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
      s->pending[OP_STATUS] = false;
      s->status_received = true;
    }
  }
  if (s->status_received && s->status != GRPC_STATUS_OK)
    status_error(s->status, s->details, err);
  else
    ana_error_set(err, ANA_STATUS_UNKNOWN,
                  "the stream has ended; ana_client_stream_finish returns its status");
  pthread_mutex_unlock(&s->mu);
  return ANA_ERR_CLOSED;
}

/* Frees a stream, cancelling it first if ops other than the initial
 * metadata (which completes with the status) are still in flight. */
static void stream_free(struct ana_client_stream *s) {
  if (!s)
    return;
  if (s->call) {
    if (s->pending[OP_SEND] || s->pending[OP_RECV] || s->pending[OP_STATUS])
      grpc_call_cancel(s->call, NULL);
    for (int op = 0; op < OP_KINDS; op++)
      if (s->pending[op])
        stream_wait(s, op);
  }
  call_destroy(s->ch, s->call, s->cq);
  metadata_fini(&s->md);
  grpc_metadata_array_destroy(&s->initial_md);
  grpc_metadata_array_destroy(&s->trailing_md);
  grpc_slice_unref(s->details);
  pthread_mutex_destroy(&s->mu);
  ana_free(s);
}

/* Opens a stream of the given kind. With a request (server streaming), the
 * request and the half-close go out with the headers. */
static int stream_open(struct ana_client_channel *ch, const struct ana_method *m,
                       enum ana_method_kind kind, const ProtobufCMessage *request,
                       const struct ana_call_options *opts, struct ana_client_stream **out,
                       struct ana_error *err) {
  struct ana_client_stream *s = NULL;
  grpc_byte_buffer *send_bb = NULL;
  grpc_op ops[3];
  size_t n = 0;
  int rc;

  *out = NULL;
  rc = check_method(ch, m, kind, err);
  if (rc < 0)
    goto out;
  if (kind == ANA_METHOD_SERVER_STREAMING) {
    rc = check_message(request, m, err);
    if (rc < 0)
      goto out;
  }
  s = ana_calloc(1, sizeof *s);
  if (!s) {
    rc = nomem(err);
    goto out;
  }
  s->ch = ch;
  s->method = m;
  pthread_mutex_init(&s->mu, NULL);
  grpc_metadata_array_init(&s->initial_md);
  grpc_metadata_array_init(&s->trailing_md);
  s->status = GRPC_STATUS_UNKNOWN;
  s->details = grpc_empty_slice();
  rc = metadata_build(opts, &s->md, err);
  if (rc < 0)
    goto out;
  rc = call_create(ch, m, opts, &s->cq, &s->call, err);
  if (rc < 0)
    goto out;

  memset(ops, 0, sizeof ops);
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].flags = initial_md_flags(opts);
  ops[n].data.send_initial_metadata.count = s->md.count;
  ops[n++].data.send_initial_metadata.metadata = s->md.items;
  if (request) {
    send_bb = encode(request);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = send_bb;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  }
  rc = stream_start(s, ops, n, OP_SEND, err);
  if (rc < 0)
    goto out;

  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
  rc = stream_start(s, ops, 1, OP_INITIAL_MD, err);
  if (rc < 0)
    goto out;

  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  ops[0].data.recv_status_on_client.status = &s->status;
  ops[0].data.recv_status_on_client.status_details = &s->details;
  rc = stream_start(s, ops, 1, OP_STATUS, err);
  if (rc < 0)
    goto out;

  if (!stream_wait(s, OP_SEND)) {
    /* Unreachable server, deadline, or refused: the call is over and its
     * status says why. */
    s->send_closed = true;
    rc = ana_client_stream_finish(s, err);
    s = NULL;
    if (rc == 0)
      rc = ana_error_set(err, ANA_STATUS_UNKNOWN, "%s: the stream ended as it opened", m->path);
    goto out;
  }
  s->send_closed = request != NULL;
  metadata_fini(&s->md); /* core holds its own references now */
  *out = s;
  s = NULL;
  rc = 0;

out:
  if (send_bb)
    grpc_byte_buffer_destroy(send_bb);
  stream_free(s);
  return rc;
}

struct ana_client_stream *ana_client_stream_open(struct ana_client_channel *ch,
                                                 const struct ana_method *m,
                                                 const struct ana_call_options *opts,
                                                 struct ana_error *err) {
  struct ana_client_stream *s = NULL;

  ana_error_clear(err);
  if (m && m->kind == ANA_METHOD_CLIENT_STREAMING)
    stream_open(ch, m, ANA_METHOD_CLIENT_STREAMING, NULL, opts, &s, err);
  else
    stream_open(ch, m, ANA_METHOD_BIDI_STREAMING, NULL, opts, &s, err);
  return s;
}

int ana_client_stream_send(struct ana_client_stream *s, const ProtobufCMessage *msg,
                           struct ana_error *err) {
  grpc_byte_buffer *bb;
  grpc_op op;
  bool ok;
  int rc;

  ana_error_clear(err);
  if (!s)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "no stream");
  rc = check_message(msg, s->method, err);
  if (rc < 0)
    return rc;
  if (s->send_closed) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION, "%s: send after close_send",
                  s->method->path);
    return ANA_ERR_CLOSED;
  }
  bb = encode(msg);
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = bb;
  rc = stream_start(s, &op, 1, OP_SEND, err);
  if (rc == 0) {
    ok = stream_wait(s, OP_SEND);
    if (!ok)
      rc = stream_closed(s, err);
  }
  grpc_byte_buffer_destroy(bb);
  return rc;
}

int ana_client_stream_close_send(struct ana_client_stream *s, struct ana_error *err) {
  grpc_op op;
  int rc;

  ana_error_clear(err);
  if (!s)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "no stream");
  if (s->send_closed)
    return 0;
  s->send_closed = true;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  rc = stream_start(s, &op, 1, OP_SEND, err);
  if (rc < 0)
    return rc;
  return stream_wait(s, OP_SEND) ? 0 : stream_closed(s, err);
}

/* Receives the next raw message; NULL at the end of the stream (or when the
 * op cannot be started). */
static grpc_byte_buffer *stream_recv_raw(struct ana_client_stream *s, struct ana_error *err,
                                         int *rc) {
  grpc_byte_buffer *bb = NULL;
  grpc_op op;

  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &bb;
  *rc = stream_start(s, &op, 1, OP_RECV, err);
  if (*rc < 0)
    return NULL;
  if (!stream_wait(s, OP_RECV) && bb) {
    grpc_byte_buffer_destroy(bb);
    bb = NULL;
  }
  return bb;
}

int ana_client_stream_recv(struct ana_client_stream *s, ProtobufCMessage **out,
                           struct ana_error *err) {
  grpc_byte_buffer *bb;
  int rc;

  ana_error_clear(err);
  if (out)
    *out = NULL;
  if (!s || !out)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "no stream or output pointer");
  if (s->malformed)
    return malformed_response(err);
  if (s->recv_done)
    return stream_result(s, err);
  bb = stream_recv_raw(s, err, &rc);
  if (rc < 0)
    return rc;
  if (!bb) {
    s->recv_done = true;
    stream_collect_status(s);
    return stream_result(s, err);
  }
  *out = decode(s->method->output, bb, atomic_load(&s->ch->max_depth));
  grpc_byte_buffer_destroy(bb);
  if (!*out) {
    /* The rest of the stream cannot be trusted; the status becomes ours. */
    s->malformed = true;
    grpc_call_cancel_with_status(s->call, GRPC_STATUS_INTERNAL, "malformed response", NULL);
    return malformed_response(err);
  }
  return 1;
}

int ana_client_stream_finish(struct ana_client_stream *s, struct ana_error *err) {
  grpc_byte_buffer *bb;
  int rc;

  ana_error_clear(err);
  if (!s)
    return 0;
  if (!s->send_closed)
    (void)ana_client_stream_close_send(s, NULL);
  while (!s->recv_done) {
    bb = stream_recv_raw(s, NULL, &rc);
    if (rc < 0)
      break; /* cancelled by start_batch(), so the status comes anyway */
    if (!bb)
      s->recv_done = true;
    else
      grpc_byte_buffer_destroy(bb);
  }
  stream_collect_status(s);
  rc = stream_result(s, err);
  stream_free(s);
  return rc;
}

void ana_client_stream_cancel(struct ana_client_stream *s) {
  if (s)
    grpc_call_cancel(s->call, NULL);
}

/* --- Server streaming --- */

struct ana_client_stream *ana_client_server_stream_open(struct ana_client_channel *ch,
                                                        const struct ana_method *m,
                                                        const ProtobufCMessage *request,
                                                        const struct ana_call_options *opts,
                                                        struct ana_error *err) {
  struct ana_client_stream *s = NULL;

  ana_error_clear(err);
  stream_open(ch, m, ANA_METHOD_SERVER_STREAMING, request, opts, &s, err);
  return s;
}

int ana_client_stream_status_details(struct ana_client_stream *s, uint8_t **details,
                                     size_t *details_len) {
  *details = NULL;
  *details_len = 0;
  if (!s)
    return ANA_ERR_NOT_FOUND;
  pthread_mutex_lock(&s->mu);
  bool in = s->status_received;
  pthread_mutex_unlock(&s->mu);
  if (!in)
    return ANA_ERR_NOT_FOUND;
  /* Fixed once the status is in: only the status op writes the trailers. */
  *details = copy_status_details(&s->trailing_md, details_len);
  return *details ? 0 : ANA_ERR_NOT_FOUND;
}

int ana_client_server_stream(struct ana_client_channel *ch, const struct ana_method *m,
                             const ProtobufCMessage *request, ana_client_message_fn on_message,
                             void *ctx, const struct ana_call_options *opts,
                             struct ana_error *err) {
  struct ana_client_stream *s = NULL;
  ProtobufCMessage *msg = NULL;
  bool stopped = false;
  int rc, frc;

  ana_error_clear(err);
  if (!on_message)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "no message callback");
  rc = stream_open(ch, m, ANA_METHOD_SERVER_STREAMING, request, opts, &s, err);
  if (rc < 0)
    return rc;
  for (;;) {
    rc = ana_client_stream_recv(s, &msg, err);
    if (rc <= 0)
      break;
    stopped = on_message(msg, ctx) != 0;
    protobuf_c_message_free_unpacked(msg, NULL);
    if (stopped) {
      ana_client_stream_cancel(s);
      break;
    }
  }
  /* recv already reported how the stream ended, or the caller stopped it. */
  frc = ana_client_stream_finish(s, rc < 0 || stopped ? NULL : err);
  if (stopped)
    return 0;
  return rc < 0 ? rc : frc;
}

/* --- Stream multiplexer --- */

/* Ops of a multiplexed stream that can be in flight, one each; the address
 * of tags[op] is the completion-queue tag of that op. */
enum mux_op { MUX_START, MUX_INITIAL_MD, MUX_STATUS, MUX_RECV, MUX_OPS };

struct mux_tag {
  struct ana_client_mux_stream *s;
  enum mux_op op;
};

/* Channels replaced by ana_client_mux_reload, kept while streams may still
 * be on them; past this many the oldest is destroyed (its calls hold their
 * own references to what they need, and reloads are an operator's SIGHUP). */
#define MUX_RETIRED_MAX 4

struct ana_client_mux {
  pthread_mutex_t channel_mu; /* guards channel and retired */
  grpc_channel *channel;
  grpc_channel *retired[MUX_RETIRED_MAX]; /* oldest first */
  grpc_completion_queue *cq;
  atomic_bool shut;
  /* driver thread only */
  grpc_slice current;                  /* the last MESSAGE's bytes */
  struct ana_client_mux_stream *ended; /* streams whose END is due (read, fail) */
};

struct ana_client_mux_stream {
  struct ana_client_mux *mux;
  const struct ana_method *method;
  void *user;
  grpc_call *call;
  struct mux_tag tags[MUX_OPS];
  /* what the start batch sends, freed when it completes */
  struct call_metadata md;
  grpc_byte_buffer *request;
  uint32_t md_flags; /* of SEND_INITIAL_METADATA */
  /* driver thread only, once started */
  int in_flight; /* batches started and not completed */
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
  grpc_byte_buffer *recv;
  bool status_in; /* the status op completed */
  bool recv_done; /* no more messages will be read */
  bool delivered; /* a MESSAGE was handed out, not answered by read or fail yet */
  bool end_due;   /* on the mux's ended list */
  bool end_sent;  /* its END was handed out */
  struct ana_client_mux_stream *ended_next;
};

struct ana_client_mux *ana_client_mux_create(const char *target, const struct ana_client_tls *tls,
                                             struct ana_error *err) {
  struct ana_client_mux *mux = ana_calloc(1, sizeof *mux);
  if (!mux) {
    nomem(err);
    return NULL;
  }
  grpc_init(); /* released by destroy */
  pthread_mutex_init(&mux->channel_mu, NULL);
  mux->current = grpc_empty_slice();
  mux->channel = grpc_channel_to(target, tls, true, err);
  if (!mux->channel)
    goto fail;
  mux->cq = grpc_completion_queue_create_for_next(NULL);
  if (!mux->cq) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create a completion queue");
    goto fail;
  }
  return mux;
fail:
  ana_client_mux_destroy(mux);
  return NULL;
}

static void mux_free_start_data(struct ana_client_mux_stream *s) {
  metadata_fini(&s->md);
  if (s->request)
    grpc_byte_buffer_destroy(s->request);
  s->request = NULL;
}

void ana_client_mux_stream_free(struct ana_client_mux_stream *s) {
  if (!s)
    return;
  mux_free_start_data(s);
  if (s->recv)
    grpc_byte_buffer_destroy(s->recv);
  grpc_metadata_array_destroy(&s->initial_md);
  grpc_metadata_array_destroy(&s->trailing_md);
  grpc_slice_unref(s->details);
  if (s->call)
    grpc_call_unref(s->call);
  ana_free(s);
}

struct ana_client_mux_stream *ana_client_mux_stream_create(struct ana_client_mux *mux,
                                                           const struct ana_method *m,
                                                           const ProtobufCMessage *request,
                                                           const struct ana_call_options *opts,
                                                           void *user, struct ana_error *err) {
  if (!mux || !m) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "no multiplexer or method");
    return NULL;
  }
  if (check_kind(m, ANA_METHOD_SERVER_STREAMING, err) < 0 || check_message(request, m, err) < 0)
    return NULL;
  struct ana_client_mux_stream *s = ana_calloc(1, sizeof *s);
  if (!s) {
    nomem(err);
    return NULL;
  }
  s->mux = mux;
  s->method = m;
  s->user = user;
  s->details = grpc_empty_slice();
  grpc_metadata_array_init(&s->initial_md);
  grpc_metadata_array_init(&s->trailing_md);
  for (int i = 0; i < MUX_OPS; i++)
    s->tags[i] = (struct mux_tag){s, (enum mux_op)i};
  if (metadata_build(opts, &s->md, err) < 0)
    goto fail;
  /* The method path lives in the static method table. */
  pthread_mutex_lock(&mux->channel_mu);
  s->call = grpc_channel_create_call(mux->channel, NULL, GRPC_PROPAGATE_DEFAULTS, mux->cq,
                                     grpc_slice_from_static_string(m->path), NULL,
                                     deadline_of(opts), NULL);
  pthread_mutex_unlock(&mux->channel_mu);
  if (!s->call) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create a call to %s", m->path);
    goto fail;
  }
  s->request = encode(request);
  if (!s->request) {
    nomem(err);
    goto fail;
  }
  s->md_flags = initial_md_flags(opts); /* fail fast unless the options ask to wait */
  return s;
fail:
  ana_client_mux_stream_free(s);
  return NULL;
}

int ana_client_mux_start(struct ana_client_mux_stream *s, struct ana_error *err) {
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].flags = s->md_flags;
  ops[0].data.send_initial_metadata.count = s->md.count;
  ops[0].data.send_initial_metadata.metadata = s->md.items;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = s->request;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  s->in_flight = 1;
  /* From here on the stream is the driver thread's, which may take this
   * batch's completion at once. */
  return start_batch(s->call, ops, 3, &s->tags[MUX_START], err);
}

/* Starts one op of s (driver thread). Returns 0 or ANA_ERR_INTERNAL (the
 * call is cancelled then). */
static int mux_op_start(struct ana_client_mux_stream *s, grpc_op *op, enum mux_op kind) {
  struct ana_error err;
  if (start_batch(s->call, op, 1, &s->tags[kind], &err) < 0)
    return ANA_ERR_INTERNAL;
  s->in_flight++;
  return 0;
}

static bool mux_end_ready(const struct ana_client_mux_stream *s) {
  return s->status_in && s->recv_done && !s->delivered && !s->in_flight && !s->end_sent;
}

/* Queues s's END for the next ana_client_mux_next when it is due. */
static void mux_maybe_end(struct ana_client_mux_stream *s) {
  if (!mux_end_ready(s) || s->end_due)
    return;
  s->end_due = true;
  s->ended_next = s->mux->ended;
  s->mux->ended = s;
}

void ana_client_mux_read(struct ana_client_mux_stream *s) {
  grpc_op op;
  s->delivered = false;
  if (!s->recv_done) {
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;
    if (mux_op_start(s, &op, MUX_RECV) < 0)
      s->recv_done = true;
  }
  mux_maybe_end(s);
}

void ana_client_mux_fail(struct ana_client_mux_stream *s, enum ana_status code,
                         const char *message) {
  /* The rest of the stream cannot be used; the status becomes the caller's. */
  grpc_call_cancel_with_status(s->call, (grpc_status_code)code, message, NULL);
  s->delivered = false;
  s->recv_done = true;
  mux_maybe_end(s);
}

void ana_client_mux_cancel(struct ana_client_mux_stream *s) {
  if (s)
    grpc_call_cancel(s->call, NULL); /* thread-safe; does not block */
}

static void mux_on_start(struct ana_client_mux_stream *s, bool ok) {
  grpc_op op;
  mux_free_start_data(s);
  /* The status comes whatever happened (an unreachable server gives
   * UNAVAILABLE at once). */
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  op.data.recv_status_on_client.status = &s->status;
  op.data.recv_status_on_client.status_details = &s->details;
  if (mux_op_start(s, &op, MUX_STATUS) < 0) {
    s->status = GRPC_STATUS_INTERNAL;
    s->details = grpc_slice_from_static_string("the client cannot read the stream's status");
    s->status_in = true;
  }
  if (!ok) {
    s->recv_done = true;
    return;
  }
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_INITIAL_METADATA;
  op.data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
  if (mux_op_start(s, &op, MUX_INITIAL_MD) < 0) {
    s->recv_done = true;
    return;
  }
  ana_client_mux_read(s);
}

/* A message in (true, with ev filled) or the end of them. */
static bool mux_on_recv(struct ana_client_mux_stream *s, bool ok, struct ana_client_mux_event *ev) {
  grpc_byte_buffer *bb = s->recv;
  s->recv = NULL;
  if (!ok || !bb) {
    if (bb)
      grpc_byte_buffer_destroy(bb);
    s->recv_done = true;
    return false;
  }
  grpc_byte_buffer_reader reader;
  grpc_slice slice = grpc_empty_slice();
  if (grpc_byte_buffer_reader_init(&reader, bb)) {
    slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
  }
  grpc_byte_buffer_destroy(bb);
  s->mux->current = slice;
  s->delivered = true;
  ev->kind = ANA_CLIENT_MUX_MESSAGE;
  /* From the kept slice: a small one holds its bytes inline. */
  ev->bytes = GRPC_SLICE_START_PTR(s->mux->current);
  ev->len = GRPC_SLICE_LENGTH(s->mux->current);
  return true;
}

static void mux_fill_end(struct ana_client_mux_stream *s, struct ana_client_mux_event *ev) {
  s->end_sent = true;
  ev->kind = ANA_CLIENT_MUX_END;
  ev->stream = s;
  ev->user = s->user;
  if (s->status == GRPC_STATUS_OK) {
    ana_error_clear(&ev->status);
    return;
  }
  status_error(s->status, s->details, &ev->status);
  ev->details = copy_status_details(&s->trailing_md, &ev->details_len);
}

enum ana_client_mux_event_kind ana_client_mux_next(struct ana_client_mux *mux, int64_t timeout_ms,
                                                   struct ana_client_mux_event *ev) {
  memset(ev, 0, sizeof *ev);
  grpc_slice_unref(mux->current);
  mux->current = grpc_empty_slice();
  gpr_timespec deadline = timeout_ms < 0
                              ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                              : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                             gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
  for (;;) {
    if (mux->ended) {
      struct ana_client_mux_stream *s = mux->ended;
      mux->ended = s->ended_next;
      mux_fill_end(s, ev);
      return ev->kind;
    }
    grpc_event e = grpc_completion_queue_next(mux->cq, deadline, NULL);
    if (e.type == GRPC_QUEUE_SHUTDOWN)
      return ev->kind = ANA_CLIENT_MUX_SHUTDOWN;
    if (e.type != GRPC_OP_COMPLETE)
      return ev->kind = ANA_CLIENT_MUX_TIMEOUT;
    struct mux_tag *t = e.tag;
    struct ana_client_mux_stream *s = t->s;
    bool ok = e.success != 0;
    s->in_flight--;
    switch (t->op) {
    case MUX_START: mux_on_start(s, ok); break;
    case MUX_INITIAL_MD: break;
    case MUX_STATUS: s->status_in = true; break;
    case MUX_RECV:
      if (mux_on_recv(s, ok, ev)) {
        ev->stream = s;
        ev->user = s->user;
        return ev->kind;
      }
      break;
    default: break;
    }
    mux_maybe_end(s);
  }
}

void ana_client_mux_shutdown(struct ana_client_mux *mux) {
  if (mux && mux->cq && !atomic_exchange(&mux->shut, true))
    grpc_completion_queue_shutdown(mux->cq);
}

void ana_client_mux_destroy(struct ana_client_mux *mux) {
  if (!mux)
    return;
  if (mux->cq) {
    ana_client_mux_shutdown(mux);
    while (grpc_completion_queue_next(mux->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(mux->cq);
  }
  grpc_slice_unref(mux->current);
  if (mux->channel)
    grpc_channel_destroy(mux->channel);
  for (size_t i = 0; i < MUX_RETIRED_MAX; i++)
    if (mux->retired[i])
      grpc_channel_destroy(mux->retired[i]);
  pthread_mutex_destroy(&mux->channel_mu);
  ana_free(mux);
  grpc_shutdown();
}

int ana_client_mux_reload(struct ana_client_mux *mux, const char *target,
                          const struct ana_client_tls *tls, struct ana_error *err) {
  grpc_channel *fresh = grpc_channel_to(target, tls, true, err);
  if (!fresh)
    return ANA_ERR_INVALID;
  pthread_mutex_lock(&mux->channel_mu);
  grpc_channel *oldest = mux->retired[0];
  memmove(mux->retired, mux->retired + 1, (MUX_RETIRED_MAX - 1) * sizeof *mux->retired);
  mux->retired[MUX_RETIRED_MAX - 1] = mux->channel;
  mux->channel = fresh;
  pthread_mutex_unlock(&mux->channel_mu);
  if (oldest)
    grpc_channel_destroy(oldest);
  return 0;
}
