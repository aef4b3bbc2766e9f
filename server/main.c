/* analyticsd: reads the configuration, starts the modules (server/modules.c)
 * and serves until SIGTERM/SIGINT, then stops them in reverse, draining
 * in-flight work within the grace period. SIGHUP reloads the TLS files. */
#include "ana_builtin_services.h"
#include "ana_config.h"
#include "ana_grpc_log.h"
#include "ana_heartbeat.h"
#include "ana_log.h"
#include "ana_prom_process.h"
#include "ana_server.h"
#include "data_keys_cli.h"
#include "healthcheck.h"
#include "keys_cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How often the main thread re-evaluates health (and DATA_DIR's free space). */
#define HEALTH_PERIOD_MS 250

static void usage(FILE *out) {
  fprintf(out, "usage: analyticsd [--help | --version | --print-env-example | "
               "--print-config-markdown]\n"
               "       analyticsd keys create|list|revoke ...   (API keys; keys --help)\n"
               "       analyticsd data-keys rotate|list|rotate-master ...  (encryption keys; "
               "data-keys --help)\n"
               "       analyticsd healthcheck   (exit 0 if GET /health on PORT answers 200)\n\n"
               "Analytics service: event ingestion, metrics, reports and alerts over gRPC\n"
               "and REST. Configured from environment variables:\n\n");
  ana_config_write_help(out);
}

static void warn_unsupported(const char *name, const char *what, void *ctx) {
  (void)ctx;
  ANA_WARN("config", "%s is set but %s", name, what);
}

/* The options that print something and exit: returns the exit status, or
 * -1 to go on and serve. */
static int handle_args(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--version") == 0) {
      printf("analyticsd %s\n", ANA_VERSION);
      return 0;
    } else if (strcmp(argv[i], "--print-env-example") == 0) {
      ana_config_write_env_example(stdout);
      return 0;
    } else if (strcmp(argv[i], "--print-config-markdown") == 0) {
      ana_config_write_markdown(stdout);
      return 0;
    } else {
      fprintf(stderr, "analyticsd: unknown argument %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "keys") == 0)
    return ana_keys_cli_main(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "data-keys") == 0)
    return ana_data_keys_cli_main(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "healthcheck") == 0)
    return ana_healthcheck_main(argc - 1, argv + 1);
  int rc = handle_args(argc, argv);
  if (rc >= 0)
    return rc;

  struct ana_config cfg;
  if (ana_config_load_at_startup(&cfg) < 0)
    return 2;
  ana_config_each_unsupported(&cfg, warn_unsupported, NULL);
  ana_grpc_log_route(); /* before any gRPC core use: its lines are JSON too */

  /* Signals are taken synchronously by this thread (sigwait), so every other
   * thread must start with them blocked. */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP); /* not a stop: reloads the TLS files */
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
  signal(SIGPIPE, SIG_IGN);

  ana_prom_process_register("analyticsd", ANA_VERSION, ANA_REVISION);
  static struct ana_server server; /* read by the bridge thread until it stops */
  if (ana_server_start(&server, &cfg) < 0) {
    ana_config_fini(&cfg);
    return 1;
  }
  char port[16], http_port[16];
  snprintf(port, sizeof port, "%d", ana_grpc_server_port(server.grpc));
  snprintf(http_port, sizeof http_port, "%d", ana_restbridge_port(server.rest));
  ana_log_fields(ANA_LOG_INFO, "main", "analyticsd is serving", "grpc_port", port, "http_port",
                 http_port, "data_dir", cfg.store.data_dir, "version", ANA_VERSION, NULL);
  atomic_store(&server.serving, true);
  atomic_store(&server.ready, true);
  ana_server_update_health(&server);

  /* Waits for SIGTERM/SIGINT, re-evaluating health meanwhile. */
  int sig = 0;
  for (;;) {
    struct timespec period = {0, HEALTH_PERIOD_MS * 1000000L};
    sig = sigtimedwait(&stop_signals, NULL, &period);
    if (sig == SIGTERM || sig == SIGINT)
      break;
    if (sig == SIGHUP) {
      ANA_INFO("main", "SIGHUP: reloading the TLS certificates");
      ana_server_reload_tls(&server);
    }
    ana_server_update_health(&server);
    ana_log_flush_suppressed();
  }
  ana_log_fields(ANA_LOG_INFO, "main", "shutting down", "signal",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
  ana_health_set_serving(false);
  atomic_store(&server.serving, false);
  /* REST and gRPC share the one grace period, counted from the signal. */
  server.draining = true;
  if (ana_server_stop(&server, ana_heartbeat_now_ms() + cfg.process.shutdown_grace_ms) < 0) {
    ana_config_fini(&cfg);
    _exit(1); /* forced stop: the rest is left as it is */
  }
  ANA_INFO("main", "stopped");
  ana_config_fini(&cfg);
  return 0;
}
