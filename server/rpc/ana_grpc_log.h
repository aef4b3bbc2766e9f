/* gRPC core's own log lines (gpr_log) written as lines of our JSON log; the
 * hook lives in the gRPC transport (grpc_server.c), which alone of the server
 * sees gRPC core, and serves analytics-restbridge too. */
#ifndef ANA_GRPC_LOG_H
#define ANA_GRPC_LOG_H

/* Routes gRPC core's log (gpr_set_log_function) into ana_log: each line
 * becomes {"level","component":"grpc","msg","source":"file.cc:123"}, core's
 * ERROR as warn (mostly a peer's doing: a failed TLS handshake), INFO as
 * info, DEBUG as debug, so nothing of core reaches
 * stderr as raw text. GRPC_VERBOSITY (and GRPC_TRACE) still choose what
 * core produces; LOG_LEVEL what is written. Error and info lines share one
 * flood-control site (ANA_LOG_SITE_LINES_PER_S). Call before grpc_init;
 * calling it again is harmless. */
void ana_grpc_log_route(void);

#endif
