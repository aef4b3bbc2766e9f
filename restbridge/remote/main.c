/* analytics-restbridge: the REST + WebSocket bridge as its own process,
 * forwarding every call to an analyticsd over gRPC (remote mode). Same
 * routes, JSON and errors as the bridge inside analyticsd; configured from
 * the same variables (PORT, HTTP_MAX_BODY_BYTES, HTTP_BODY_BUDGET_MB,
 * HTTP_BODY_MIN_RATE, HTTP_BODY_RATE_WINDOW, HTTP_DECODE_THREADS,
 * CORS_ALLOWED_ORIGINS, HTTP_ALLOWED_HOSTS, STREAM_BUFFER_SIZE,
 * WS_SLOW_CONSUMER_MS, STREAM_QUEUE_BUDGET_MB, HTTP_TLS_*, SHUTDOWN_GRACE_MS, LOG_LEVEL: the
 * bridge's own rows and the shared ones, nothing else) plus --upstream
 * host:port (or RESTBRIDGE_UPSTREAM) and TLS to it (RESTBRIDGE_UPSTREAM_*).
 * SIGHUP reloads the HTTP_TLS_* files and the upstream's TLS files
 * (RESTBRIDGE_UPSTREAM_CA/CERT/KEY). */
#include "ana_call.h"
#include "ana_config_table.h"
#include "ana_grpc_log.h"
#include "ana_log.h"
#include "ana_prom_process.h"
#include "ana_restbridge.h"
#include "ana_restbridge_config.h"
#include "ana_restbridge_remote.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The settings this program reads: the bridge's rows and the shared ones. */
struct remote_config {
  struct ana_bridge_settings bridge;
  struct ana_process_settings process;
};

#define N_TABLES 2

/* The bridge's tables, bound to cfg (NULL: for --help). */
static const struct ana_config_binding *bridge_tables(struct remote_config *cfg,
                                                      struct ana_config_binding *b) {
  static struct ana_config_binding docs[N_TABLES];
  if (!b)
    b = docs;
  b[0] = (struct ana_config_binding){&ana_bridge_config_table, cfg ? &cfg->bridge : NULL};
  b[1] = (struct ana_config_binding){&ana_process_config_table, cfg ? &cfg->process : NULL};
  return b;
}

static void log_bad(const char *message, void *ctx) {
  (void)ctx;
  ANA_ERROR("config", "invalid configuration: %s", message);
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: analytics-restbridge [--upstream HOST:PORT] [--workers N]\n"
          "                            [--upstream-tls] [--upstream-ca FILE]\n"
          "                            [--upstream-cert FILE --upstream-key FILE]\n"
          "                            [--help | --version]\n\n"
          "REST + WebSocket gateway for analyticsd: serves the REST routes, WebSocket\n"
          "streams, /health, /metrics and /openapi.json on PORT and forwards each call to\n"
          "the analyticsd at --upstream (default: $RESTBRIDGE_UPSTREAM) over gRPC.\n"
          "  --workers N           threads carrying unary calls to the upstream (default 16)\n"
          "  --upstream-tls        reach the upstream over TLS ($RESTBRIDGE_UPSTREAM_TLS)\n"
          "  --upstream-ca FILE    PEM CA the upstream's certificate chains to (implies TLS)\n"
          "  --upstream-cert FILE  PEM client certificate for mutual TLS, with --upstream-key\n"
          "  --upstream-key FILE   its PEM private key\n\n"
          "Configured from these environment variables (analyticsd's others do not apply):\n\n");
  ana_config_table_write_help(bridge_tables(NULL, NULL), N_TABLES, out);
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value (advancing *i), or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0)
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] == '\0' && *i + 1 < argc)
    return argv[++*i];
  return NULL;
}

int main(int argc, char **argv) {
  const char *upstream = NULL, *up_ca = NULL, *up_cert = NULL, *up_key = NULL, *v;
  bool up_tls = false;
  int workers = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--version") == 0) {
      printf("analytics-restbridge %s\n", ANA_VERSION);
      return 0;
    } else if (strcmp(argv[i], "--upstream-tls") == 0) {
      up_tls = true;
    } else if ((v = opt_value(argc, argv, &i, "--upstream-ca"))) {
      up_ca = v;
    } else if ((v = opt_value(argc, argv, &i, "--upstream-cert"))) {
      up_cert = v;
    } else if ((v = opt_value(argc, argv, &i, "--upstream-key"))) {
      up_key = v;
    } else if ((v = opt_value(argc, argv, &i, "--upstream"))) {
      upstream = v;
    } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
      workers = atoi(argv[++i]);
      if (workers < 1 || workers > 1024) {
        fprintf(stderr, "analytics-restbridge: --workers takes 1 to 1024\n");
        return 2;
      }
    } else {
      fprintf(stderr, "analytics-restbridge: unknown argument %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }

  struct remote_config cfg;
  struct ana_config_binding tables[N_TABLES];
  struct ana_error err;
  ana_error_clear(&err);
  memset(&cfg, 0, sizeof cfg);
  bridge_tables(&cfg, tables);
  if (ana_config_table_load(tables, N_TABLES, NULL, NULL, log_bad, NULL, &err) < 0) {
    if (err.code == ANA_STATUS_RESOURCE_EXHAUSTED)
      ANA_ERROR("config", "invalid configuration: %s", err.message);
    return 2;
  }
  ana_log_set_level(cfg.process.log_level);
  double share;
  if (ana_log_access_sample_parse(cfg.process.access_log_sample, &share) == 0)
    ana_log_access_set_sample(share);
  ana_log_access_set_max_per_second((unsigned)cfg.process.access_log_max_per_s);
  ana_grpc_log_route(); /* before any gRPC core use: its lines are JSON too */
  /* The access log's peer behind proxies, judged as analyticsd judges it. */
  ana_rpc_set_trusted_proxies(cfg.process.trusted_proxies);
  if (!upstream || !upstream[0])
    upstream = cfg.bridge.restbridge_upstream;
  if (!upstream || !upstream[0]) {
    ANA_ERROR("config", "no upstream: pass --upstream HOST:PORT or set RESTBRIDGE_UPSTREAM");
    ana_config_table_fini(tables, N_TABLES);
    return 2;
  }

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP); /* not a stop: reloads the TLS files */
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
  signal(SIGPIPE, SIG_IGN);

  int rc = 1;
  struct ana_restbridge *rest = NULL;
  struct ana_restbridge_remote_options ropts = {
      .target = upstream,
      .workers = workers,
      .proto_max_depth = cfg.process.proto_max_depth,
      .tls = up_tls || cfg.bridge.upstream_tls,
      .tls_ca_file = up_ca ? up_ca : cfg.bridge.upstream_ca_file,
      .tls_cert_file = up_cert ? up_cert : cfg.bridge.upstream_cert_file,
      .tls_key_file = up_key ? up_key : cfg.bridge.upstream_key_file,
      .tls_server_name = cfg.bridge.upstream_server_name,
  };
  struct ana_restbridge_remote *remote = ana_restbridge_remote_create(&ropts, &err);
  if (!remote) {
    ANA_ERROR("main", "cannot set up the upstream %s: %s", upstream, err.message);
    goto out;
  }
  struct ana_restbridge_options bopts = {
      .host = cfg.bridge.http_host,
      .port = cfg.bridge.port,
      .max_body_bytes = (size_t)cfg.bridge.http_max_body_bytes,
      .stream_buffer_size = (size_t)cfg.bridge.stream_buffer_size,
      .slow_consumer_ms = cfg.bridge.ws_slow_consumer_ms,
      .body_budget_bytes = (size_t)cfg.bridge.http_body_budget_mb << 20,
      .stream_budget_bytes = (size_t)cfg.bridge.stream_queue_budget_mb << 20,
      .body_min_rate = (size_t)cfg.bridge.http_body_min_rate,
      .body_rate_window_ms = cfg.bridge.http_body_rate_window_ms,
      .decode_threads = cfg.bridge.http_decode_threads ? cfg.bridge.http_decode_threads : -1,
      .cors_allowed_origins = cfg.bridge.cors_allowed_origins,
      .health = ana_restbridge_remote_health,
      .health_ctx = remote,
      .upstream = ana_restbridge_remote_upstream(remote),
      .tls_cert_file = cfg.bridge.http_tls_cert_file,
      .tls_key_file = cfg.bridge.http_tls_key_file,
      .tls_client_ca_file = cfg.bridge.http_tls_client_ca_file,
      .host_check_without_credentials = true,
      .allowed_hosts = cfg.bridge.http_allowed_hosts,
  };
  ana_prom_process_register("analytics_restbridge", ANA_VERSION, ANA_REVISION);
  rest = ana_restbridge_create(&bopts, &err);
  if (!rest) {
    ANA_ERROR("main", "cannot start the REST bridge: %s", err.message);
    goto out;
  }
  char port[16];
  snprintf(port, sizeof port, "%d", ana_restbridge_port(rest));
  ana_log_fields(ANA_LOG_INFO, "main", "analytics-restbridge is serving", "http_port", port,
                 "upstream", upstream, "version", ANA_VERSION, NULL);

  int sig = 0;
  while (sigwait(&stop_signals, &sig) == 0 && sig == SIGHUP) {
    ANA_INFO("main", "SIGHUP: reloading the TLS certificates");
    if (ana_restbridge_reload_tls(rest, &err) < 0)
      ANA_ERROR("restbridge", "TLS reload refused, the certificate in use stays: %s", err.message);
    if (ana_restbridge_remote_reload_tls(remote, &err) < 0)
      ANA_ERROR("restbridge",
                "upstream TLS reload refused, the client certificate in use stays: %s",
                err.message);
  }
  ana_log_fields(ANA_LOG_INFO, "main", "shutting down", "signal",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
  ana_restbridge_shutdown(rest, cfg.process.shutdown_grace_ms);
  ana_restbridge_destroy(rest);
  rest = NULL;
  if (ana_restbridge_remote_destroy(remote, cfg.process.shutdown_grace_ms) < 0) {
    ANA_ERROR("main", "stopped with forwarded calls still open");
    ana_config_table_fini(tables, N_TABLES);
    _exit(1);
  }
  remote = NULL;
  ANA_INFO("main", "stopped");
  rc = 0;

out:
  ana_restbridge_destroy(rest);
  ana_restbridge_remote_destroy(remote, 0);
  ana_config_table_fini(tables, N_TABLES);
  return rc;
}
