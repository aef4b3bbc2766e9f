/* Generic client runtime: channels, unary calls and streams over gRPC, driven
 * by the generated method table. The typed stubs (ana_client_stubs.h) call it.
 *
 * Conventions of every function here:
 * - Returns 0 (or 1 where documented) on success, or a negative enum ana_err:
 *   ANA_ERR_INVALID   the call ended with a non-OK status: err->code is the
 *                     gRPC status (enum ana_status mirrors the codes) and
 *                     err->message its details. Arguments or metadata rejected
 *                     locally, before anything was sent, also give this, with
 *                     INVALID_ARGUMENT.
 *   ANA_ERR_INTERNAL  the response could not be decoded (INTERNAL "malformed
 *                     response"), or gRPC refused an operation.
 *   ANA_ERR_CLOSED    a stream operation after the stream ended (see send).
 *   ANA_ERR_NOMEM     out of memory (RESOURCE_EXHAUSTED).
 *   Every negative return fills err; success clears it.
 * - err is optional (NULL: the caller only wants the return code); it is owned
 *   by the caller.
 * - Calls block the calling thread until they are done (or the deadline in the
 *   call options passes). Each call has its own completion queue, so any
 *   number of threads may share one channel.
 * - Messages given to the runtime are borrowed for the duration of the call.
 *   Messages it returns are unpacked with the default allocator; the caller
 *   frees them with protobuf_c_message_free_unpacked(msg, NULL). */
#ifndef ANA_CLIENT_RPC_H
#define ANA_CLIENT_RPC_H

#include "ana_error.h"
#include "ana_methods.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A connection (pool) to one server. Thread-safe. */
struct ana_client_channel;

/* One streaming call in progress. Not thread-safe except as documented:
 * one thread may send while another receives, and cancel may be called from
 * any thread until finish. */
struct ana_client_stream;

/* Per-call options; a NULL pointer means all defaults. Borrowed: the runtime
 * copies what it keeps. */
struct ana_call_options {
  /* Deadline relative to the start of the call; 0 = no deadline, negative is
   * rejected. When it passes the call ends with DEADLINE_EXCEEDED. */
  int64_t timeout_ms;
  /* Sent as the "authorization" metadata if not NULL ("Bearer <token>"). */
  const char *authorization;
  /* Extra metadata: key, value, key, value, ..., NULL. Keys are lower-case
   * ([a-z0-9-_.]) and must not start with "grpc-"; values are printable
   * ASCII unless the key ends in "-bin" (then any bytes up to the NUL). A
   * violation gives INVALID_ARGUMENT before anything is sent. */
  const char *const *metadata;
  /* If the server is unreachable, wait (up to the deadline) for it to become
   * reachable instead of failing at once with UNAVAILABLE. */
  bool wait_for_ready;
};

/* Called for each message of a server stream. msg is borrowed: it is freed
 * when the callback returns. A non-zero return cancels the stream. */
typedef int (*ana_client_message_fn)(const ProtobufCMessage *msg, void *ctx);

/* --- Channels --- */

/* Creates a channel to target ("127.0.0.1:50051", "dns:///host:port",
 * "unix:/path"), plaintext. Does not connect: the first call does, and fails
 * with UNAVAILABLE if the server cannot be reached. Returns NULL with err
 * filled on failure. The caller destroys it with ana_client_channel_destroy.
 * Each live channel holds a reference on the gRPC library, released by
 * destroy. */
struct ana_client_channel *ana_client_channel_create(const char *target, struct ana_error *err);

/* TLS of a channel; everything borrowed for the create call. */
struct ana_client_tls {
  bool enabled;            /* TLS on; also implied by any file below */
  const char *ca_file;     /* PEM roots the server must chain to; NULL = the system's */
  const char *cert_file;   /* PEM client certificate (mTLS), with key_file; NULL = none */
  const char *key_file;    /* PEM private key of cert_file */
  const char *server_name; /* checked against the server's certificate (and sent as SNI)
                              instead of the target's host; NULL = the target's host */
};

/* Like ana_client_channel_create; tls NULL or off = plaintext. The files
 * are read here (blocks on them): an unreadable file, one that holds no
 * PEM, or a certificate without its key fails with INVALID_ARGUMENT naming
 * the path. A server whose certificate does not verify fails the first call
 * with UNAVAILABLE. */
struct ana_client_channel *ana_client_channel_create_tls(const char *target,
                                                         const struct ana_client_tls *tls,
                                                         struct ana_error *err);

/* Nesting limit for the messages received on ch (PROTO_MAX_DEPTH; the wire
 * walk of common/ana_proto_walk.h runs before each unpack): a response
 * nested deeper is refused as malformed (INTERNAL). <= 0 = the default
 * ANA_PROTO_DEFAULT_MAX_DEPTH (100); clamped to
 * ANA_PROTO_MAX_DEPTH_CEILING. Applies to calls started afterwards; any
 * thread. */
void ana_client_channel_set_max_depth(struct ana_client_channel *ch, int max_depth);
int ana_client_channel_max_depth(const struct ana_client_channel *ch);

/* Destroys a channel. Every call and stream on it must have returned or been
 * finished first. NULL does nothing. */
void ana_client_channel_destroy(struct ana_client_channel *ch);

/* --- Unary --- */

/* Sends request and waits for the response of unary method m. On success
 * (0), *response is the decoded response (caller frees); on failure it is
 * NULL. request must be a message of type m->input. Blocks. */
int ana_client_unary(struct ana_client_channel *ch, const struct ana_method *m,
                     const ProtobufCMessage *request, ProtobufCMessage **response,
                     const struct ana_call_options *opts, struct ana_error *err);

/* Like ana_client_unary; when the call ends with a non-OK status that
 * carries details (the grpc-status-details-bin trailer: a serialized
 * google.rpc.Status, e.g. with google.rpc.BadRequest field violations),
 * *details is a copy of them (caller frees with ana_free) and *details_len
 * their size; otherwise NULL and 0. details and details_len may both be
 * NULL. Blocks. */
int ana_client_unary_details(struct ana_client_channel *ch, const struct ana_method *m,
                             const ProtobufCMessage *request, ProtobufCMessage **response,
                             const struct ana_call_options *opts, uint8_t **details,
                             size_t *details_len, struct ana_error *err);

/* --- Server streaming --- */

/* Sends request to server-streaming method m and calls on_message for each
 * message received, on the calling thread, until the stream ends. Blocks.
 * Returns 0 if the stream ended with OK or on_message stopped it (returned
 * non-zero; the call is then cancelled and the status ignored), otherwise a
 * negative error as above. */
int ana_client_server_stream(struct ana_client_channel *ch, const struct ana_method *m,
                             const ProtobufCMessage *request, ana_client_message_fn on_message,
                             void *ctx, const struct ana_call_options *opts, struct ana_error *err);

/* Opens server-streaming method m with its one request, for a caller that
 * must be able to cancel the stream from another thread while it waits for
 * messages (ana_client_stream_cancel), e.g. a gateway. Read it with
 * ana_client_stream_recv, end it with ana_client_stream_finish. Blocks
 * until the request is on its way; NULL with err filled on failure. */
struct ana_client_stream *ana_client_server_stream_open(struct ana_client_channel *ch,
                                                        const struct ana_method *m,
                                                        const ProtobufCMessage *request,
                                                        const struct ana_call_options *opts,
                                                        struct ana_error *err);

/* --- Client streaming and bidirectional streaming --- */

/* Opens a stream on client-streaming or bidi method m. Blocks until the
 * request headers are on their way: a server that cannot be reached fails
 * here (UNAVAILABLE, unless wait_for_ready). Returns NULL with err filled on
 * failure. The stream must end with ana_client_stream_finish, which frees it.
 * The channel must outlive the stream. */
struct ana_client_stream *ana_client_stream_open(struct ana_client_channel *ch,
                                                 const struct ana_method *m,
                                                 const struct ana_call_options *opts,
                                                 struct ana_error *err);

/* Sends one message (of type m->input). Blocks until gRPC has taken it, which
 * waits for flow control if the server does not read. Not after close_send.
 * Returns 0, or ANA_ERR_CLOSED if the stream has ended (cancelled, deadline,
 * or the server finished it): err then holds the status if it has already
 * arrived, UNKNOWN otherwise; finish returns the status. One sender at a
 * time. */
int ana_client_stream_send(struct ana_client_stream *s, const ProtobufCMessage *msg,
                           struct ana_error *err);

/* Half-closes the stream: tells the server no more messages follow. Calling
 * it again does nothing. Returns 0 or ANA_ERR_CLOSED as send does. Must not
 * run concurrently with send. */
int ana_client_stream_close_send(struct ana_client_stream *s, struct ana_error *err);

/* Receives one message. Blocks until a message arrives or the stream ends.
 * Returns 1 with *out set (caller frees with
 * protobuf_c_message_free_unpacked(*out, NULL)); 0 at the end of the stream
 * with status OK; a negative error (the status) otherwise. After the end,
 * further calls return the same result. *out is NULL unless 1 is returned.
 * For client-streaming methods, the single response is read here (after
 * close_send) before finish. One receiver at a time. */
int ana_client_stream_recv(struct ana_client_stream *s, ProtobufCMessage **out,
                           struct ana_error *err);

/* Ends the stream and frees it: half-closes if needed, receives and discards
 * the messages not read yet, and waits for the final status. Blocks until the
 * server ends the stream (or the deadline): cancel first to abandon a stream
 * the server would keep open. Returns 0 if the status is OK, otherwise a
 * negative error (a cancelled stream gives CANCELLED). No other thread may be
 * using s; s is invalid afterwards. NULL returns 0. */
int ana_client_stream_finish(struct ana_client_stream *s, struct ana_error *err);

/* After ana_client_stream_recv returned 0 or a negative status (and before
 * finish): a copy of the status details (grpc-status-details-bin) in
 * *details (caller frees with ana_free) and their size. Returns 0, or
 * ANA_ERR_NOT_FOUND (*details NULL) when there are none or the status is
 * not in yet. Same thread as recv. */
int ana_client_stream_status_details(struct ana_client_stream *s, uint8_t **details,
                                     size_t *details_len);

/* Cancels the stream: blocked and later send/recv calls return promptly with
 * CANCELLED. Thread-safe; may be called any number of times until finish,
 * which must still be called. Does not block. NULL does nothing. */
void ana_client_stream_cancel(struct ana_client_stream *s);

/* --- Many server streams on one thread ---
 *
 * A stream multiplexer carries any number of server streams on one
 * completion queue, driven by one thread of the caller's that waits in
 * ana_client_mux_next and gets each stream's messages and end there: for a
 * gateway that forwards many streams (analytics-restbridge) and wants no
 * thread per stream. Messages come as bytes (the caller unpacks them, and
 * may share one unpacked message between streams). Each stream has at most
 * one message read ahead: after a MESSAGE event the caller asks for the next
 * with ana_client_mux_read when it is ready for it, so a consumer that does
 * not ask holds the server back through gRPC flow control. Unless noted,
 * functions on a stream are called on the thread that calls
 * ana_client_mux_next. */

struct ana_client_mux;
struct ana_client_mux_stream;

enum ana_client_mux_event_kind {
  ANA_CLIENT_MUX_TIMEOUT,  /* nothing happened before the timeout */
  ANA_CLIENT_MUX_MESSAGE,  /* a message of stream: bytes, len */
  ANA_CLIENT_MUX_END,      /* stream ended: status, details */
  ANA_CLIENT_MUX_SHUTDOWN, /* ana_client_mux_shutdown was called; nothing more comes */
};

struct ana_client_mux_event {
  enum ana_client_mux_event_kind kind;
  struct ana_client_mux_stream *stream; /* MESSAGE, END */
  void *user;                           /* the stream's user pointer */
  /* MESSAGE: the serialized message (borrowed until the next call of
   * ana_client_mux_next). */
  const uint8_t *bytes;
  size_t len;
  /* END: the stream's status (code ANA_STATUS_OK for a clean end; UNKNOWN
   * for a code outside gRPC's), and a copy of its grpc-status-details-bin
   * when it carried one (caller frees with ana_free; NULL otherwise). */
  struct ana_error status;
  uint8_t *details;
  size_t details_len;
};

/* A multiplexer with its own connection to target (not shared with
 * channels to the same target, so their calls do not queue behind the
 * streams' traffic); tls as for ana_client_channel_create_tls (NULL:
 * plaintext). NULL with err filled on failure. */
struct ana_client_mux *ana_client_mux_create(const char *target, const struct ana_client_tls *tls,
                                             struct ana_error *err);

/* Puts a new connection to target with tls in place (its files are read
 * here: a new client certificate) for the streams created from now on;
 * streams already created keep theirs. Any thread. Returns 0, or a negative
 * error with err filled (the connection in use stays). */
int ana_client_mux_reload(struct ana_client_mux *mux, const char *target,
                          const struct ana_client_tls *tls, struct ana_error *err);

/* Prepares server-streaming method m with its request (borrowed; encoded
 * here) and options (the deadline runs from here); user is handed back with
 * each of its events. Nothing is sent until ana_client_mux_start. Any
 * thread. NULL with err filled on failure. */
struct ana_client_mux_stream *ana_client_mux_stream_create(struct ana_client_mux *mux,
                                                           const struct ana_method *m,
                                                           const ProtobufCMessage *request,
                                                           const struct ana_call_options *opts,
                                                           void *user, struct ana_error *err);

/* Sends the stream's request; its events then come from
 * ana_client_mux_next, ending with one END (an unreachable server gives END
 * with UNAVAILABLE at once). Any thread, once; does not block. Returns 0, or
 * a negative error with err filled when nothing was started (no event will
 * come: free the stream). */
int ana_client_mux_start(struct ana_client_mux_stream *s, struct ana_error *err);

/* Waits up to timeout_ms (negative: for ever) for the next event of any
 * stream and fills ev. Returns ev->kind. One thread at a time. */
enum ana_client_mux_event_kind ana_client_mux_next(struct ana_client_mux *mux, int64_t timeout_ms,
                                                   struct ana_client_mux_event *ev);

/* After a MESSAGE event of s: reads its next message (or its end). */
void ana_client_mux_read(struct ana_client_mux_stream *s);

/* After a MESSAGE event of s, instead of reading on: ends the stream with
 * code and message (such as INTERNAL "malformed response" for a message the
 * caller cannot use); its END carries that status. */
void ana_client_mux_fail(struct ana_client_mux_stream *s, enum ana_status code,
                         const char *message);

/* Cancels the stream: it ends (END, CANCELLED) once its operations are
 * done; a read still gets the end. Any thread, until the stream is freed;
 * does not block. NULL does nothing. */
void ana_client_mux_cancel(struct ana_client_mux_stream *s);

/* Frees a stream after its END event, or one that was never started (or
 * failed to start). NULL does nothing. */
void ana_client_mux_stream_free(struct ana_client_mux_stream *s);

/* Makes ana_client_mux_next return SHUTDOWN once every started stream has
 * ended and been freed. Any thread; does not block. */
void ana_client_mux_shutdown(struct ana_client_mux *mux);

/* Shuts down (if not yet), waits for the queue to drain (no thread may be
 * in ana_client_mux_next any more) and frees the multiplexer. NULL does
 * nothing. */
void ana_client_mux_destroy(struct ana_client_mux *mux);

#endif
