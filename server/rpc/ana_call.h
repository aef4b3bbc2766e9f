/* The transport-neutral handler interface: what a service method sees of a
 * call, whichever transport (gRPC, or the REST bridge in-process) carries it.
 *
 * A handler is a set of callbacks bound to one method of the generated table
 * (ana_rpc_bind). Callbacks run on a transport thread and must not block: a
 * handler that waits for something (a group commit, a query) returns and
 * finishes the call later, from any thread. Every call is finished exactly
 * once with ana_call_finish (or its shorthands); the call and its arena live
 * until then, and the handler must not touch the call afterwards. */
#ifndef ANA_CALL_H
#define ANA_CALL_H

#include "ana_arena.h"
#include "ana_auth.h" /* struct ana_principal, struct ana_metadata_entry */
#include "ana_error.h"
#include "ana_methods.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_call;

/* Callbacks of one method. Which ones are used depends on the method kind;
 * unused ones may be NULL. */
struct ana_handler {
  /* Unary and server-streaming: the call starts with its one request, which
   * lives in the call's arena until the call ends. */
  void (*on_request)(struct ana_call *call, const ProtobufCMessage *request);
  /* Client-streaming and bidi: the stream opened (optional). */
  void (*on_open)(struct ana_call *call);
  /* Client-streaming and bidi: one message. It lives in its own arena, freed
   * when this callback returns, unless the handler takes it with
   * ana_call_keep_message. The next message is read after this returns
   * (unless reading is paused). */
  void (*on_message)(struct ana_call *call, const ProtobufCMessage *message);
  /* Client-streaming and bidi: the client sent its last message. */
  void (*on_half_close)(struct ana_call *call);
  /* Optional, any kind: the call was cancelled (client cancel, deadline,
   * lost connection). Sends fail from now on; the handler still finishes the
   * call (the status goes nowhere). May run on another thread than the
   * handler's other callbacks. */
  void (*on_cancel)(struct ana_call *call);
  /* Optional, long streams: the server is shutting down; finish soon (e.g.
   * with UNAVAILABLE). Calls that do not finish within the grace period are
   * cancelled. */
  void (*on_drain)(struct ana_call *call);
};

/* --- Reading the call (thread-safe; results live as long as the call) --- */

const struct ana_method *ana_call_method(const struct ana_call *call);
const struct ana_principal *ana_call_principal(const struct ana_call *call);
/* Unary and server-streaming: the request, once handed to the handler
 * (NULL before, and for streaming requests). */
const ProtobufCMessage *ana_call_request(const struct ana_call *call);
/* Charges cost more units (a batch's events) to the caller's rate-limit
 * budget, all or nothing. Returns 0 when allowed (or not limited), or
 * ANA_ERR_FULL with err filled (RESOURCE_EXHAUSTED, "rate limit exceeded:
 * retry after N s"); finishing the call with err then answers 429 with
 * Retry-After over REST and a google.rpc.RetryInfo over gRPC. One thread at
 * a time per call (a handler's callbacks). */
int ana_call_rate_charge(struct ana_call *call, int64_t cost, struct ana_error *err);
/* Records that an upstream server's rate limit refused this call, asking
 * for a wait of retry_after_ns (its google.rpc.RetryInfo): the transport
 * then answers as for a local refusal (Retry-After, RetryInfo), without the
 * RateLimit-* figures it does not know. For proxies (the remote bridge). */
void ana_call_note_upstream_retry(struct ana_call *call, int64_t retry_after_ns);
/* Seconds until a refused charge of this call would pass (>= 1), 0 when the
 * last charge passed or there was none. */
int64_t ana_call_rate_retry_after_s(const struct ana_call *call);
/* First value of a request metadata key (lower-case), or NULL. */
const char *ana_call_metadata(const struct ana_call *call, const char *key);
size_t ana_call_metadata_count(const struct ana_call *call);
const struct ana_metadata_entry *ana_call_metadata_at(const struct ana_call *call, size_t i);
/* The peer's address as the transport saw it ("ipv4:127.0.0.1:40122"). */
const char *ana_call_peer(const struct ana_call *call);
/* The client's IP address alone ("127.0.0.1", "::1"; other peer forms
 * whole), copied into out (size bytes): the key of per-client limits. The
 * peer's, or, when the peer is one of the trusted proxies
 * (ana_rpc_set_trusted_proxies) and sent x-forwarded-for, the client
 * address it forwarded (as context.ip is found). */
void ana_call_peer_ip(const struct ana_call *call, char *out, size_t size);
/* Milliseconds left before the deadline (<= 0: passed), or INT64_MAX. */
int64_t ana_call_remaining_ms(const struct ana_call *call);
bool ana_call_is_cancelled(const struct ana_call *call);

/* The call's arena: memory for the handler that lives until the call ends.
 * Not thread-safe: a handler that uses it from several threads serialises. */
struct ana_arena *ana_call_arena(struct ana_call *call);

/* A pointer the handler keeps with the call (its per-call state). */
void ana_call_set_user(struct ana_call *call, void *user);
void *ana_call_user(const struct ana_call *call);

/* Inside on_message only: the handler takes ownership of the current
 * message's arena (free it with ana_arena_destroy, from any thread). */
struct ana_arena *ana_call_keep_message(struct ana_call *call);

/* Client-streaming and bidi: stop / restart reading further messages, to
 * bound the work a client can have in flight. Thread-safe. */
void ana_call_pause_reading(struct ana_call *call);
void ana_call_resume_reading(struct ana_call *call);

/* --- Answering --- */

/* A handler that ends a stream because its client does not keep up finishes
 * it with RESOURCE_EXHAUSTED and a message starting with this; the REST
 * bridge then closes the WebSocket with 1008 (policy) instead of 4008. */
#define ANA_SLOW_CONSUMER_MESSAGE "subscriber too slow"

/* Server-streaming and bidi: queues one message (serialised before return,
 * so it stays the caller's). Thread-safe. Returns 0, ANA_ERR_CLOSED when the
 * call is cancelled or finished, ANA_ERR_FULL when the outbound queue holds
 * its limit (the caller decides: drop, coalesce, or finish). */
int ana_call_send(struct ana_call *call, const ProtobufCMessage *message);

/* Number of messages queued and not yet written to the transport. */
size_t ana_call_send_queue_length(struct ana_call *call);

/* One message fanned out to many calls (a live stream's event going to
 * every subscriber): transports that can encode it once for all of them do,
 * instead of once per call (at 100 subscribers that is most of the fan-out's
 * cost). With per_call_sequence, the message differs per call in its field
 * 1, a uint64 (the live streams' per-subscriber `sequence`), which is left
 * 0 in the shared message and given at each send. */
struct ana_call_shared;

/* Wraps message (borrowed: it must outlive the shared message and not change
 * while it lives). With per_call_sequence, message's field 1 must be a
 * singular uint64 holding 0. Returns NULL when out of memory. */
struct ana_call_shared *ana_call_shared_create(const ProtobufCMessage *message,
                                               bool per_call_sequence);

/* Frees m and the encodings the transports kept in it. No send of m may be
 * running. NULL does nothing. */
void ana_call_shared_destroy(struct ana_call_shared *m);

/* Like ana_call_send of m's message with field 1 set to sequence (ignored
 * unless m was made with per_call_sequence). Thread-safe; m stays the
 * caller's. */
int ana_call_send_shared(struct ana_call *call, struct ana_call_shared *m, uint64_t sequence);

/* Records a field violation (JSON path such as "events[3].eventName" and
 * the reason); they travel with a non-OK status as google.rpc.BadRequest
 * details. Copies both strings. Not thread-safe with other arena users. */
void ana_call_add_violation(struct ana_call *call, const char *field, const char *description);

/* Finishes the call, exactly once, from any thread. With status NULL or OK,
 * unary and client-streaming methods send `response` (required) as their one
 * reply; streaming methods may pass a last message or NULL. With an error
 * status the response is ignored. The handler must not use `call` after. */
void ana_call_finish(struct ana_call *call, const ProtobufCMessage *response,
                     const struct ana_error *status);

/* Shorthands: finish with OK and a response; finish with an error. */
void ana_call_reply(struct ana_call *call, const ProtobufCMessage *response);
void ana_call_fail(struct ana_call *call, enum ana_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- Binding handlers --- */

/* Binds handler (borrowed; must outlive the server) to a method. Methods
 * without a handler answer UNIMPLEMENTED naming their feature. Call before
 * the transports start, or while the method is held (below). */
void ana_rpc_bind(enum ana_method_id method, const struct ana_handler *handler);

/* Holds every method that has no handler now (the data services, while the
 * store waits for room on a full disk): until ana_rpc_release_held, a call
 * of one of them is answered with code and message after admission, even
 * once its handler is bound. Call before the transports start; the message
 * is copied. */
void ana_rpc_hold_unbound(enum ana_status code, const char *message);

/* Ends the hold. Handlers bound before this call are seen by every call
 * admitted after it (any thread). */
void ana_rpc_release_held(void);

/* TRUSTED_PROXIES (comma-separated IPs or CIDR ranges; borrowed, must
 * outlive the transports; NULL = none): peers whose x-forwarded-for names
 * the client for per-client limits (ana_call_peer_ip). Call before the
 * transports start. */
void ana_rpc_set_trusted_proxies(const char *list);
const struct ana_handler *ana_rpc_handler(enum ana_method_id method);

/* Called by ana_call_finish with every call's outcome, before the transport
 * answers (the audit log records audited calls and authentication failures
 * here). Must not block; the call is readable during the hook. Set once
 * before the transports start; NULL removes it. */
typedef void (*ana_call_finish_hook)(const struct ana_call *call, const ProtobufCMessage *response,
                                     const struct ana_error *status);
void ana_rpc_set_finish_hook(ana_call_finish_hook hook);

#endif
