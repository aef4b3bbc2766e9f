/* analyticsd: reads the configuration, starts the transports and serves
 * until SIGTERM/SIGINT, then drains in-flight work within the grace period. */
#include "ana_auth.h"
#include "ana_builtin_services.h"
#include "ana_config.h"
#include "ana_grpc_server.h"
#include "ana_log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *out) {
  fprintf(out, "usage: analyticsd [--help | --version | --print-env-example | "
               "--print-config-markdown]\n\n"
               "Analytics service: event ingestion, metrics, reports and alerts over gRPC\n"
               "and REST. Configured from environment variables:\n\n");
  ana_config_write_help(out);
}

static void warn_unsupported(const char *name, const char *what, void *ctx) {
  (void)ctx;
  ANA_WARN("config", "%s is set but %s", name, what);
}

/* mkdir -p: creates path and its parents (mode 0750). */
static int make_dirs(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf)
    return -1;
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(buf, 0750) < 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  if (mkdir(buf, 0750) < 0 && errno != EEXIST)
    return -1;
  return access(buf, W_OK) == 0 ? 0 : -1;
}

static const char *env_lookup(const char *name, void *ctx) {
  (void)ctx;
  return getenv(name);
}

int main(int argc, char **argv) {
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

  struct ana_config cfg;
  struct ana_error err;
  ana_error_clear(&err);
  if (ana_config_load(&cfg, env_lookup, NULL, &err) < 0) {
    ANA_ERROR("config", "invalid configuration: %s", err.message);
    return 2;
  }
  ana_log_set_level(cfg.log_level);
  ana_config_each_unsupported(&cfg, warn_unsupported, NULL);

  int rc = 1;
  struct ana_grpc_server *grpc = NULL;
  if (make_dirs(cfg.data_dir) < 0) {
    ANA_ERROR("config", "DATA_DIR: cannot create or write %s: %s", cfg.data_dir, strerror(errno));
    goto out;
  }

  /* Signals are taken synchronously by this thread (sigwait), so every other
   * thread must start with them blocked. */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (ana_auth_init(cfg.default_account_id) < 0 || ana_reflection_bind() < 0)
    goto out;
  ana_health_bind();

  struct ana_grpc_server_options opts = {
      .host = cfg.grpc_host,
      .port = cfg.grpc_port,
      .threads = cfg.grpc_threads,
      .max_message_bytes = cfg.grpc_max_message_bytes,
      .send_queue_max = cfg.stream_send_queue_max,
  };
  grpc = ana_grpc_server_create(&opts, &err);
  if (!grpc) {
    ANA_ERROR("main", "cannot start the gRPC server: %s", err.message);
    goto out;
  }
  char port[16];
  snprintf(port, sizeof port, "%d", ana_grpc_server_port(grpc));
  ana_log_fields(ANA_LOG_INFO, "main", "analyticsd is serving", "grpc_port", port, "data_dir",
                 cfg.data_dir, "version", ANA_VERSION, NULL);
  ana_health_set_serving(true);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  ana_log_fields(ANA_LOG_INFO, "main", "shutting down", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM",
                 NULL);
  ana_health_set_serving(false);
  if (ana_grpc_server_shutdown(grpc, cfg.shutdown_grace_ms) < 0) {
    /* Some call never ended; tearing gRPC down now could crash, so leave. */
    ANA_ERROR("main", "stopped with calls still open");
    ana_config_fini(&cfg);
    _exit(1);
  }
  ana_grpc_server_destroy(grpc);
  grpc = NULL;
  ANA_INFO("main", "stopped");
  rc = 0;

out:
  ana_grpc_server_destroy(grpc);
  ana_reflection_fini();
  ana_auth_fini();
  ana_config_fini(&cfg);
  return rc;
}
