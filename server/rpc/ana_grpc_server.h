/* The gRPC transport: serves the generated method table on the gRPC core C
 * API, driving the transport-neutral handlers of ana_call.h. The only
 * server module that includes grpc headers. */
#ifndef ANA_GRPC_SERVER_H
#define ANA_GRPC_SERVER_H

#include "ana_error.h"

struct ana_grpc_server;

struct ana_grpc_server_options {
  const char *host;           /* bind address, e.g. "0.0.0.0" */
  int port;                   /* 0 picks a free port (see ana_grpc_server_port) */
  int threads;                /* completion-queue threads; 0 = number of CPUs */
  long max_message_bytes;     /* largest request message accepted */
  int proto_max_depth;        /* deepest message nesting accepted; 0 = 100 */
  int send_queue_max;         /* messages queued per outbound stream */
  int max_concurrent_streams; /* calls open at once per connection; 0 = 100 */
  int max_metadata_bytes;     /* request metadata per call; 0 = 16 KiB */
  int streams_per_peer;       /* open server-streaming calls per client IP; 0 = 64 */
  /* TLS (GRPC_TLS_*): PEM certificate chain and private key, both or
   * neither (plaintext); with client_ca, clients must present a certificate
   * it signed (mTLS). Borrowed; copied. */
  const char *tls_cert_file;
  const char *tls_key_file;
  const char *tls_client_ca_file;
};

/* Abusive HTTP/2 pings: a client pinging more often than this without data
 * in between earns a strike; after ANA_GRPC_MAX_PING_STRIKES the connection
 * is closed (GOAWAY ENHANCE_YOUR_CALM). */
#define ANA_GRPC_MIN_RECV_PING_INTERVAL_MS 10000
#define ANA_GRPC_MAX_PING_STRIKES 2

/* Binds, starts the threads and begins serving. Returns NULL with err filled
 * when the port cannot be bound or memory runs out. */
struct ana_grpc_server *ana_grpc_server_create(const struct ana_grpc_server_options *options,
                                               struct ana_error *err);

/* Reads the TLS files again (SIGHUP): connections from the next handshake
 * on get the new certificate (and client CA); open ones keep theirs.
 * Returns 0 (also without TLS), or ANA_ERR_INVALID with err naming the
 * variable and path when a file is unreadable or bad: the certificate in
 * use stays. Blocks on the file reads only; any thread. */
int ana_grpc_server_reload_tls(struct ana_grpc_server *server, struct ana_error *err);

/* The port actually bound. */
int ana_grpc_server_port(const struct ana_grpc_server *server);

/* Graceful shutdown; blocks. Stops accepting calls, asks long streams to
 * finish (on_drain), waits up to grace_ms for in-flight calls, cancels what
 * is left, then stops the threads. Returns 0, or ANA_ERR_TIMEOUT when some
 * handler never finished its call (the server is then left as it is). */
int ana_grpc_server_shutdown(struct ana_grpc_server *server, int grace_ms);

/* Frees a server that was shut down; NULL does nothing. */
void ana_grpc_server_destroy(struct ana_grpc_server *server);

#endif
