/* What transports see of a call: the neutral state shared by every
 * transport, and the operations a transport provides. The call runtime's
 * API for transports (the gRPC transport, the REST bridge); handlers use
 * only ana_call.h. */
#ifndef ANA_CALL_TRANSPORT_H
#define ANA_CALL_TRANSPORT_H

#include "ana_call.h"

#include <pthread.h>
#include <stdatomic.h>

/* Operations of the transport carrying a call. Each is called with no
 * runtime lock held and may be called from any thread. */
struct ana_call_transport {
  /* Queue one serialised message; 0, ANA_ERR_CLOSED or ANA_ERR_FULL. */
  int (*send)(struct ana_call *call, const ProtobufCMessage *message);
  size_t (*send_queue_length)(struct ana_call *call);
  /* Send the final status (and response, for unary/client-streaming).
   * Called exactly once; the transport releases the handler's reference. */
  void (*finish)(struct ana_call *call, const ProtobufCMessage *response,
                 const struct ana_error *status);
  /* Pause state changed; the transport posts a read if needed. */
  void (*reading_changed)(struct ana_call *call);
  /* Label of the transport in metrics: "grpc", "http", "websocket"
   * (NULL counts as "other"). */
  const char *name;
  /* Optional: queue a shared message (ana_call_send_shared), typically from
   * an encoding kept in it (ana_call_shared_encoding); same results as
   * send. Without it, send gets a copy of the message with the call's
   * sequence. */
  int (*send_shared)(struct ana_call *call, struct ana_call_shared *m, uint64_t sequence);
};

/* What a transport reads of a shared message. */
const ProtobufCMessage *ana_call_shared_message(const struct ana_call_shared *m);
bool ana_call_shared_per_call_sequence(const struct ana_call_shared *m);

/* Makes an encoding of a shared message. Returns it, or NULL with *rc set
 * (ANA_ERR_NOMEM, or the encoder's error). */
typedef void *(*ana_call_shared_encode_fn)(const struct ana_call_shared *m, int *rc);

/* The encoding of m kept for the transport t: made by encode on the first
 * call (under m's lock, so once however many threads send m), then kept until
 * m is destroyed, which frees it with release. Returns NULL with *rc set
 * when encode failed (it is tried again next time). The encoding may be used
 * until m is destroyed. */
void *ana_call_shared_encoding(struct ana_call_shared *m, const struct ana_call_transport *t,
                               ana_call_shared_encode_fn encode, void (*release)(void *), int *rc);

struct ana_violation {
  struct ana_violation *next;
  const char *field;
  const char *description;
};

struct ana_call {
  const struct ana_call_transport *transport;
  const struct ana_method *method;
  const struct ana_handler *handler; /* never NULL once dispatched */
  const ProtobufCMessage *request;   /* unary and server-streaming, once dispatched */
  struct ana_principal principal;
  struct ana_arena arena; /* request, metadata copies, handler memory */
  struct ana_metadata_entry *metadata;
  size_t n_metadata;
  const char *peer;
  int64_t deadline_mono_ms; /* CLOCK_MONOTONIC ms, INT64_MAX = none */
  void *user;
  struct ana_violation *violations; /* newest first */
  size_t n_violations;
  struct ana_arena *message_arena; /* current on_message's, until kept/freed */
  atomic_bool finished;
  atomic_bool cancelled;
  atomic_bool read_paused;
  int64_t start_mono_ns;    /* when the call was set up (metrics) */
  atomic_bool metrics_open; /* counted in the open-calls gauges until finish or fini */
};

/* The client address of a connection from peer ("ipv4:1.2.3.4:5678",
 * "ipv6:[::1]:5678"; borrowed, may be NULL) that sent forwarded_for (its
 * X-Forwarded-For; may be NULL), judged as ana_call_peer_ip judges a call's:
 * behind TRUSTED_PROXIES (ana_rpc_set_trusted_proxies) the nearest hop they
 * did not write, else the peer's address. Writes "" when unknown. For what a
 * transport records before (or without) a call, such as its access log. */
void ana_rpc_client_ip(const char *peer, const char *forwarded_for, char *out, size_t size);

/* Monotonic clock in milliseconds. */
int64_t ana_call_now_mono_ms(void);

/* Prepares the neutral part of a call (arena init, flags). */
void ana_call_init(struct ana_call *call, const struct ana_call_transport *transport,
                   const struct ana_method *method);
/* Frees the neutral part (arena, message arena). */
void ana_call_fini(struct ana_call *call);

/* Runs what every transport does before the handler: authentication, the
 * permission check and the handler lookup. Returns 0 (call->handler set) or
 * a negative error with status filled; the transport then finishes the
 * call with that status. */
int ana_call_admit(struct ana_call *call, struct ana_error *status);

/* Marks the call cancelled and tells the handler (on_cancel), once. */
void ana_call_mark_cancelled(struct ana_call *call);

/* Serialises the call's details as a google.rpc.Status, for
 * grpc-status-details-bin: a google.rpc.BadRequest of its violations, a
 * google.rpc.RetryInfo when the rate limit refused it. Returns a malloc'd
 * buffer (caller frees) and its size, or NULL when there are no details. */
uint8_t *ana_call_status_details(const struct ana_call *call, const struct ana_error *status,
                                 size_t *size);

#endif
