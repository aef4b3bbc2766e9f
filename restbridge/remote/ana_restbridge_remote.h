/* The bridge's remote upstream: forwards every call of the REST + WebSocket
 * bridge to an analyticsd over gRPC (the generic client runtime), so that
 * analytics-restbridge serves the same routes, JSON and errors as the
 * in-process bridge while scaling separately from the service. */
#ifndef ANA_RESTBRIDGE_REMOTE_H
#define ANA_RESTBRIDGE_REMOTE_H

#include "ana_error.h"
#include "ana_restbridge.h"

#include <stdbool.h>
#include <stddef.h>

struct ana_restbridge_remote;

/* Settings; zero values pick the defaults noted. Strings are copied. */
struct ana_restbridge_remote_options {
  const char *target; /* gRPC target of analyticsd: "host:port", "dns:///host:port" */
  int workers;        /* threads carrying unary calls (they block on gRPC); 0 = 16 */
  size_t queue_max;   /* unary calls waiting for a worker before UNAVAILABLE; 0 = 1024 */
  /* How often the upstream's grpc.health.v1 Check is probed for /health;
   * 0 = 2000 ms. */
  int health_interval_ms;
  /* Deepest nesting of messages accepted in the upstream's replies and
   * stream messages (PROTO_MAX_DEPTH), checked before they are decoded;
   * 0 = 100. */
  int proto_max_depth;
  /* TLS to the upstream (RESTBRIDGE_UPSTREAM_*): on with tls or any file;
   * CA NULL = the system's roots; a client certificate and key for mTLS;
   * server_name replaces the target's host in the certificate check. The
   * files are read by create. */
  bool tls;
  const char *tls_ca_file;
  const char *tls_cert_file;
  const char *tls_key_file;
  const char *tls_server_name;
};

/* Creates the channel (it connects on first use), the worker pool and the
 * health prober. NULL with err filled on failure. */
struct ana_restbridge_remote *
ana_restbridge_remote_create(const struct ana_restbridge_remote_options *o, struct ana_error *err);

/* The upstream to put in ana_restbridge_options.upstream; lives as long as r. */
const struct ana_restbridge_upstream *
ana_restbridge_remote_upstream(struct ana_restbridge_remote *r);

/* For the bridge's health callback (any thread, never blocks): serving is
 * whether the last probe of the upstream answered SERVING; adds
 * ,"upstream":"<target>","upstreamStatus":"SERVING|..." to /health. */
int ana_restbridge_remote_health(void *r, bool *serving, struct ana_json_buf *extra);

/* Reads the upstream TLS files (CA, client certificate and key) again into
 * new channels: calls and streams started from now on use them, those in
 * progress finish on the old ones. A file that no longer loads leaves the
 * channels in use as they were and fails with err naming it. Nothing to do
 * (0) for a plaintext upstream. For SIGHUP. */
int ana_restbridge_remote_reload_tls(struct ana_restbridge_remote *r, struct ana_error *err);

/* Stops the health prober, waits up to grace_ms for forwarded calls to end
 * (the bridge cancels its calls when it shuts down, which cancels their
 * streams), then frees everything. Call after ana_restbridge_shutdown.
 * Returns 0, or ANA_ERR_TIMEOUT when calls were still running (the channel
 * is then left allocated rather than destroyed under them). NULL is fine. */
int ana_restbridge_remote_destroy(struct ana_restbridge_remote *r, int grace_ms);

#endif
