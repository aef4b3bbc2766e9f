/* What the files of the remote upstream share: upstream.c (the handler the
 * bridge drives, unary calls on a worker pool, health and metrics) and
 * streams.c (server streams, all on one thread through the client runtime's
 * stream multiplexer). */
#ifndef ANA_RESTBRIDGE_REMOTE_INTERNAL_H
#define ANA_RESTBRIDGE_REMOTE_INTERNAL_H

#include "ana_client_rpc.h"
#include "ana_prom.h"
#include "ana_restbridge_remote.h"
#include "ana_workers.h"
#include "ana_call_transport.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RR_COMPONENT "restbridge.remote"
#define RR_MAX_FORWARDED_METADATA 24

struct rr_streams;
struct rr_stream;

/* The channel of unary calls and health checks, and the calls using it:
 * SIGHUP puts a new one in place (a new client certificate); the old one is
 * destroyed when its last call ends. */
struct rr_channel {
  struct ana_client_channel *ch;
  int refs; /* the remote's own, plus one per call using it (chan_mu) */
};

struct ana_restbridge_remote {
  struct ana_restbridge_upstream up;
  char *target;
  pthread_mutex_t chan_mu; /* guards chan and every rr_channel's refs */
  struct rr_channel *chan;
  /* The TLS settings, kept for reloads (strings owned). */
  struct ana_client_tls tls;
  char *tls_ca_file, *tls_cert_file, *tls_key_file, *tls_server_name;
  struct ana_workers *workers;
  struct rr_streams *streams;         /* server streams */
  struct ana_prom_gauge active;       /* forwarded calls not finished yet */
  struct ana_prom_gauge streams_open; /* of which server streams */
  struct ana_prom_counter forwarded, failed;
  atomic_int upstream_status; /* grpc.health.v1 status; -1 = no answer */
  int health_interval_ms;
  int max_depth; /* PROTO_MAX_DEPTH: nesting limit of the upstream's replies */

  pthread_mutex_t mu; /* guards stop, for the prober's wait */
  pthread_cond_t cv;
  bool stop;
  pthread_t prober;
  bool prober_started;
  bool registered; /* metrics collector */
};

/* Per forwarded call, in the call's arena: it lives as long as the call,
 * which the bridge keeps alive while it may call on_cancel. */
struct fwd {
  struct ana_restbridge_remote *r;
  struct ana_call *call;
  const ProtobufCMessage *request;
  atomic_flag lock;         /* guards stream and cancelled (short sections) */
  struct rr_stream *stream; /* while the upstream stream exists (streams.c) */
  bool cancelled;
};

void rr_fwd_lock(struct fwd *f);
void rr_fwd_unlock(struct fwd *f);

/* Fills opts from the call: deadline, authorization, the other metadata
 * (kv has room for RR_MAX_FORWARDED_METADATA pairs and the NULL). Returns 0,
 * or ANA_ERR_TIMEOUT when the deadline has already passed. */
int rr_call_options(struct ana_call *call, struct ana_call_options *opts, const char **kv);

/* Finishes the call with the upstream's (or the runtime's) error. Takes
 * details (may be NULL; a serialized google.rpc.Status). The call is gone
 * afterwards. */
void rr_finish_error(struct ana_restbridge_remote *r, struct ana_call *call,
                     const struct ana_error *e, uint8_t *details, size_t details_len);

/* A forwarded call ended (metrics). */
void rr_call_done(struct ana_restbridge_remote *r, bool stream);

/* --- server streams (streams.c) --- */

/* Starts the thread that carries every server stream, on its own channel to
 * target; messages nested deeper than max_depth are refused as malformed.
 * NULL with err filled on failure. */
struct rr_streams *rr_streams_create(const char *target, const struct ana_client_tls *tls,
                                     int max_depth, struct ana_error *err);

/* Opens the upstream stream of f's call (f->request is its request) and
 * forwards what comes back with ana_call_send, then finishes the call with
 * the upstream's status and calls rr_call_done. Never blocks (the bridge
 * calls it on its service thread). Returns 0, or a negative error with err
 * filled when nothing was started (the caller finishes the call). */
int rr_streams_open(struct rr_streams *ss, struct fwd *f, struct ana_error *err);

/* Puts a new channel to target with tls in place for the streams opened
 * from now on (the files are read here); streams already open keep theirs.
 * Returns 0, or a negative error with err filled (the old channel stays). */
int rr_streams_reload(struct rr_streams *ss, const char *target, const struct ana_client_tls *tls,
                      struct ana_error *err);

/* Cancels f's upstream stream, if it has one (call with f locked). Does not
 * block. */
void rr_stream_cancel(struct rr_stream *s);

/* Stops the thread and frees everything. Every stream must have ended
 * (rr_call_done ran for each). NULL does nothing. */
void rr_streams_destroy(struct rr_streams *ss);

#endif
