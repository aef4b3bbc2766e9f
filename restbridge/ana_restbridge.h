/* The REST + WebSocket bridge: one libwebsockets server that serves every
 * route of the generated route table (google.api.http annotations), with
 * grpc-gateway's mapping rules, canonical proto3 JSON and its error shape,
 * plus /health, /metrics and /openapi.json. Calls go to an upstream: the
 * bound handlers in-process (through the transport-neutral call layer), or
 * a remote analyticsd over gRPC. */
#ifndef ANA_RESTBRIDGE_H
#define ANA_RESTBRIDGE_H

#include "ana_error.h"
#include "ana_json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_restbridge;
struct ana_call;

/* Where the bridge sends its calls: the routes, the request assembly, the
 * JSON and the errors are the bridge's; the upstream only decides who
 * answers. NULL in the options is the in-process upstream (the handlers
 * bound with ana_rpc_bind, behind authentication and permission checks);
 * ana_restbridge_remote_create (ana_restbridge_remote.h) makes one that
 * forwards each call to an analyticsd over gRPC. */
struct ana_restbridge_upstream {
  const char *name; /* "in-process", "remote": for logs */
  /* Called on the bridge thread for every call, once its metadata, peer
   * and deadline are set and before the request message is built. Sets
   * call->handler (ana_call_transport.h), whose on_request then receives the
   * request, and may set the call's user pointer. Returns 0, or a negative
   * error with st filled (the call is answered with st). Must not block. */
  int (*admit)(void *ctx, struct ana_call *call, struct ana_error *st);
  void *ctx;
};

/* Settings; zero values pick the defaults noted. Strings are borrowed for
 * the duration of ana_restbridge_create (they are copied). */
struct ana_restbridge_options {
  const char *host;        /* bind address; NULL = every interface */
  int port;                /* 0 = pick a free port (see ana_restbridge_port) */
  size_t max_body_bytes;   /* larger request bodies get 413; 0 = 4 MiB */
  size_t max_header_bytes; /* all request headers together; 0 = 16 KiB (max 65535) */
  /* WebSocket: messages queued per connection before ana_call_send answers
   * ANA_ERR_FULL; 0 = 1024. */
  size_t stream_buffer_size;
  /* WebSocket: a connection whose queue stays full this long is closed with
   * 1008 "slow consumer"; 0 = 10000 ms. */
  int slow_consumer_ms;
  /* All request bodies being read or decoded together; past it a new body
   * gets 503 with Retry-After. 0 = 128 MiB. */
  size_t body_budget_bytes;
  /* All queued WebSocket frames together; past it the connection with the
   * most queued bytes is closed with 1008. 0 = 128 MiB. */
  size_t stream_budget_bytes;
  /* A request body arriving slower than this many bytes per second, averaged
   * over body_rate_window_ms, ends with 408 and close. 0 = 1024. */
  size_t body_min_rate;
  int body_rate_window_ms; /* 0 = 10000 */
  /* Threads decoding request bodies over 64 KiB off the bridge thread;
   * 0 = 2; negative = decode every body on the bridge thread. */
  int decode_threads;
  /* Origins allowed by CORS, comma-separated ("https://a.example,https://b");
   * "*" allows any; NULL = CORS off (no CORS headers; preflights get 403). */
  const char *cors_allowed_origins;
  bool ignore_unknown_query_params; /* false: 400 naming the parameter */
  bool ignore_unknown_fields;       /* false: 400 naming the JSON field */
  /* GET /health: called on the bridge thread (must not block). Sets *serving
   * (false answers 503) and may append members to the JSON object, each
   * preceded by a comma: `,"store":"ok"`. Returns 0 or a negative error
   * (answered as 503). NULL = always serving. */
  int (*health)(void *ctx, bool *serving, struct ana_json_buf *extra_json_fields);
  void *health_ctx;
  /* Directory of the live dashboard's files (WEB_ROOT), read on each
   * request; NULL = the copy built into the binary. Copied. */
  const char *web_root;
  /* Borrowed; must outlive the bridge. NULL = in-process. */
  const struct ana_restbridge_upstream *upstream;
  /* Protected mode (no credential source configured): called per request on
   * the bridge thread (cheap). While it answers true, only requests whose
   * Host is localhost, 127.0.0.1, [::1] (any port) or one of allowed_hosts
   * are served (421 otherwise: DNS rebinding); /health and /metrics are
   * exempt. NULL = never. */
  bool (*protected_mode)(void *ctx);
  void *protected_mode_ctx;
  /* The remote bridge, which cannot see its upstream's credential sources:
   * the Host rule above applies to every request that brings no credentials
   * of its own (Authorization, X-Api-Key, a `bearer` WebSocket subprotocol).
   * DNS rebinding is a page of another site calling under its own name; it
   * cannot send the user's credentials, so a caller with them is served
   * under any Host (the upstream judges them). */
  bool host_check_without_credentials;
  /* Extra Host names (comma-separated, no port) served in protected mode
   * (HTTP_ALLOWED_HOSTS). Copied. */
  const char *allowed_hosts;
  /* ?access_token=<token> stands for Authorization: Bearer <token>
   * (JWT_ALLOW_QUERY_TOKEN); false: the parameter is refused like any other
   * unknown one. Never logged either way. */
  bool allow_query_token;
  /* GET /health and GET /metrics need the admission of a request carrying
   * credentials (HEALTH_REQUIRE_AUTH, METRICS_REQUIRE_AUTH); false: open. */
  bool health_require_auth;
  bool metrics_require_auth;
  /* HTTPS and WSS (HTTP_TLS_*): PEM certificate chain and private key, both
   * or neither (plaintext); with tls_client_ca_file, clients must present
   * a certificate it signed (mTLS). ALPN offers http/1.1 only. The
   * variable names head the error messages (tls_*_var; NULL: the HTTP_TLS_
   * ones). Copied. */
  const char *tls_cert_file;
  const char *tls_key_file;
  const char *tls_client_ca_file;
};

/* For the health callback: appends `,"name":"value"` (JSON-escaped) to
 * the /health object. Returns 0 or ANA_ERR_NOMEM. */
int ana_restbridge_health_add(struct ana_json_buf *b, const char *name, const char *value);
/* The same with a number: `,"name":123`. */
int ana_restbridge_health_add_int(struct ana_json_buf *b, const char *name, long long value);

/* Starts the bridge: binds, then serves on its own thread. Returns NULL
 * with err filled when the port cannot be bound or memory runs out. Bind
 * handlers (ana_rpc_bind) before. */
struct ana_restbridge *ana_restbridge_create(const struct ana_restbridge_options *o,
                                             struct ana_error *err);

/* Reads the TLS files again (SIGHUP) and hands them to the service thread,
 * which loads them into the listening context: connections from the next
 * handshake on get the new certificate (and client CA); open ones keep
 * theirs. Returns 0 (also without TLS), or ANA_ERR_INVALID with err naming
 * the variable and path when a file is unreadable or bad: the certificate
 * in use stays. Blocks on the file reads only; any thread but the bridge's. */
int ana_restbridge_reload_tls(struct ana_restbridge *b, struct ana_error *err);

/* The port actually bound (useful with port 0). */
int ana_restbridge_port(const struct ana_restbridge *b);

/* When the service thread last finished a loop turn (CLOCK_MONOTONIC ms, as
 * ana_call_now_mono_ms; 0 before it started). It turns at least once a
 * second even when idle, so a value more than a few seconds old means the
 * thread is stuck. Thread-safe (one atomic load). */
int64_t ana_restbridge_last_loop_ms(const struct ana_restbridge *b);

/* How long shutdown waits for the service thread past grace_ms before it
 * gives up on a thread stuck in a callback. */
#define ANA_RESTBRIDGE_STOP_MARGIN_MS 1000

/* Stops serving: new requests get 503, WebSockets are closed with 1001
 * (their calls cancelled), in-flight REST calls may finish for up to
 * grace_ms, then the rest are cancelled and answered 503, and the service
 * thread stops. Blocks at most grace_ms + ANA_RESTBRIDGE_STOP_MARGIN_MS,
 * whatever the service thread is doing. Returns 0, or ANA_ERR_TIMEOUT when
 * some call was still unanswered at the end (its handler still holds it;
 * the bridge memory stays until it finishes) or the service thread did not
 * stop (ana_restbridge_stopped says which; an error is logged). */
int ana_restbridge_shutdown(struct ana_restbridge *b, int grace_ms);

/* False while the service thread runs: before shutdown, or after one that
 * gave up on a stuck thread (nothing of the bridge may then be freed; the
 * process should exit). */
bool ana_restbridge_stopped(const struct ana_restbridge *b);

/* Shuts down (if not done, with no grace) and frees the bridge. Calls still
 * held by handlers keep what they need until they finish. A service thread
 * still stuck after its margin leaves the bridge allocated (not freed
 * under it). NULL is fine. */
void ana_restbridge_destroy(struct ana_restbridge *b);

#endif
