/* analyticsd: reads the configuration, starts the transports and serves
 * until SIGTERM/SIGINT, then drains in-flight work within the grace period. */
#include "ana_auth.h"
#include "ana_builtin_services.h"
#include "ana_config.h"
#include "ana_grpc_server.h"
#include "ana_heartbeat.h"
#include "ana_log.h"
#include "ana_metric_streams.h"
#include "ana_realtime.h"
#include "ana_restbridge.h"
#include "ana_rollup.h"
#include "ana_services.h"
#include "ana_store.h"
#include "ana_workers.h"
#include "keys_cli.h"

#include <errno.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Readiness fails while the REST bridge's loop has not turned for this long;
 * liveness while it or any registered thread has made no progress for
 * LIVENESS_STALL_MS. */
#define READINESS_BRIDGE_STALL_MS 5000
#define LIVENESS_STALL_MS 30000
/* How often the main thread re-evaluates both (and DATA_DIR's free space). */
#define HEALTH_PERIOD_MS 250

static void usage(FILE *out) {
  fprintf(out, "usage: analyticsd [--help | --version | --print-env-example | "
               "--print-config-markdown]\n"
               "       analyticsd keys create|list|revoke ...   (API keys; keys --help)\n\n"
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

/* What GET /health reports beside the serving status. */
struct health_state {
  struct ana_local_db *db;
  struct ana_committer *committer;
  int schema_version; /* read once at start: the writer connection is the committer's */
  atomic_bool serving;
  atomic_bool ready; /* readiness as last evaluated by the main thread */
};

/* The bridge's health callback (its thread; nothing here blocks): readiness,
 * 503 while not serving (starting, stopping), while the store cannot write
 * (the last write failed, or DATA_DIR is short of space) or while the
 * bridge itself was stalled (then it could not answer anyway). */
static int rest_health(void *ctx, bool *serving, struct ana_json_buf *extra) {
  struct health_state *h = ctx;
  bool degraded = h->db && ana_local_db_degraded(h->db);
  struct ana_committer_stats st = {0};
  if (h->committer)
    ana_committer_stats(h->committer, &st);
  *serving = atomic_load(&h->serving) && atomic_load(&h->ready) && !degraded;
  if (ana_restbridge_health_add(extra, "store", degraded ? "degraded" : "ok") < 0 ||
      ana_restbridge_health_add(extra, "auth", ana_auth_mode_name()) < 0 ||
      ana_restbridge_health_add_int(extra, "schemaVersion", h->schema_version) < 0 ||
      ana_restbridge_health_add_int(extra, "ingestQueuedEvents", (long long)st.queued_events) < 0 ||
      ana_restbridge_health_add_int(extra, "lastCommitSequence", (long long)st.last_seq) < 0)
    return ANA_ERR_NOMEM;
  return 0;
}

/* Evaluates readiness and liveness, publishes both to gRPC health (Watch
 * streams hear the changes) and logs each change once. */
static void update_health(struct health_state *h, struct ana_restbridge *rest) {
  static bool was_ready = true, was_live = true;
  ana_local_db_check_space(h->db);
  int64_t now = ana_heartbeat_now_ms();
  int64_t bridge_age = 0;
  if (rest) {
    int64_t last = ana_restbridge_last_loop_ms(rest);
    bridge_age = last > 0 ? now - last : 0;
  }
  char stalled[32];
  int64_t thread_age = ana_heartbeat_oldest_ms(stalled, sizeof stalled);
  bool store_ok = !ana_local_db_degraded(h->db);
  bool bridge_ok = bridge_age < READINESS_BRIDGE_STALL_MS;
  bool ready = atomic_load(&h->serving) && store_ok && bridge_ok;
  bool live = bridge_age < LIVENESS_STALL_MS && thread_age < LIVENESS_STALL_MS;
  atomic_store(&h->ready, ready);
  ana_health_set_serving(ready);
  ana_health_set_live(live);
  if (ready != was_ready && atomic_load(&h->serving)) {
    if (ready)
      ANA_INFO("main", "ready again");
    else
      ANA_WARN("main", "not ready: %s",
               !store_ok ? "the store cannot write (disk full or I/O errors)"
                         : "the REST bridge has not turned its loop for 5 s");
  }
  if (live != was_live) {
    if (live)
      ANA_INFO("main", "live again");
    else
      ANA_ERROR("main", "not live: thread %s has made no progress for %lld ms",
                bridge_age >= LIVENESS_STALL_MS ? "restbridge" : stalled,
                (long long)(bridge_age > thread_age ? bridge_age : thread_age));
  }
  was_ready = ready;
  was_live = live;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "keys") == 0)
    return ana_keys_cli_main(argc - 1, argv + 1);
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
  if (ana_config_load_at_startup(&cfg) < 0)
    return 2;
  ana_config_each_unsupported(&cfg, warn_unsupported, NULL);

  int rc = 1;
  struct ana_grpc_server *grpc = NULL;
  struct ana_restbridge *rest = NULL;
  struct ana_local_db *db = NULL;
  const struct ana_event_store_ops *store_ops = ana_store_event_backend("sqlite");
  void *store = NULL;
  const struct ana_catalog_ops *catalog_ops = ana_store_catalog_backend("sqlite");
  void *catalog = NULL;
  struct ana_committer *committer = NULL;
  struct ana_workers *workers = NULL;
  static struct health_state health; /* read by the bridge thread until it stops */
  struct ana_realtime *realtime = NULL;
  struct ana_metric_streams *metric_streams = NULL;
  struct ana_rollups *rollups = NULL;
  struct ana_event_names *names = NULL;
  const struct ana_api_key_store_ops *key_store_ops = ana_store_api_key_backend("sqlite");
  void *key_store = NULL;
  struct ana_api_keys *api_keys = NULL;
  if (make_dirs(cfg.store.data_dir) < 0) {
    ANA_ERROR("config", "DATA_DIR: cannot create or write %s: %s", cfg.store.data_dir,
              strerror(errno));
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

  if (ana_auth_init(cfg.auth.default_account_id) < 0 || ana_reflection_bind() < 0)
    goto out;
  if (ana_auth_configure(&cfg.auth, &err) < 0) {
    ANA_ERROR("config", "invalid configuration: %s", err.message);
    rc = 2;
    goto out;
  }
  if (ana_auth_protected_mode())
    ANA_WARN("auth",
             "protected mode: no authentication is configured, so only loopback clients "
             "are served (as account %s); set JWT_HS256_SECRET (or JWT_JWKS_FILE / "
             "JWT_JWKS_URL) to serve other hosts",
             cfg.auth.default_account_id);
  ana_rpc_set_trusted_proxies(cfg.ingest.trusted_proxies); /* per-client limits behind proxies */
  ana_log_register_metrics();
  ana_health_bind();

  /* The store and the ingest path come up before any transport. */
  db = ana_local_db_open(cfg.store.data_dir, &err);
  if (db) { /* MiB of WAL in pages of 4 KiB */
    ana_local_db_set_checkpoint_pages(db, cfg.store.wal_checkpoint_mb * 256);
    ana_local_db_set_search_index_wait_ms(db, cfg.store.search_index_wait_ms);
    ana_local_db_set_min_free_bytes(db, (int64_t)cfg.store.store_min_free_mb << 20);
    ana_local_db_check_space(db);
  }
  store = db ? store_ops->open(db, &err) : NULL;
  if (!store) {
    ANA_ERROR("main", "cannot open the event store: %s", err.message);
    goto out;
  }
  struct ana_committer_options copts = {
      .batch_size = cfg.ingest.batch_size,
      .processing_interval_ms = cfg.ingest.processing_interval_ms,
      .queue_max = cfg.ingest.ingest_queue_max,
      .retention_days = cfg.store.retention_days,
      .retention_sweep_interval_ms = cfg.store.retention_sweep_interval_ms,
  };
  committer = ana_committer_create(db, store_ops, store, &copts, &err);
  workers = ana_workers_create(4, 1024);
  if (!committer || !workers) {
    ANA_ERROR("main", "cannot start the ingest path: %s", err.message);
    goto out;
  }
  /* The catalog of event names: its own hook, stored by its own thread. */
  names = ana_event_names_create(db, &(struct ana_event_names_options){cfg.ingest.event_names_max},
                                 &err);
  if (!names || ana_committer_subscribe(committer, ana_event_names_on_commit, names) < 0) {
    ANA_ERROR("main", "cannot open the event names: %s", names ? "too many hooks" : err.message);
    goto out;
  }
  struct ana_event_service_options eopts = {
      .committer = committer,
      .store_ops = store_ops,
      .store = store,
      .workers = workers,
      .limits =
          {
              .event_max_bytes = cfg.ingest.event_max_bytes,
              .event_max_properties = cfg.ingest.event_max_properties,
              .event_max_depth = cfg.ingest.event_max_depth,
              .batch_max_events = cfg.ingest.batch_max_events,
              .batch_max_bytes = cfg.ingest.batch_max_bytes,
              .retention_days = cfg.store.retention_days,
              .event_max_future_ms = cfg.ingest.event_max_future_ms,
              .reject_future = strcmp(cfg.ingest.timestamp_policy, "reject") == 0,
              .clock_skew_tolerance_ms = cfg.ingest.clock_skew_tolerance_ms,
          },
      .trusted_proxies = cfg.ingest.trusted_proxies,
      .search_max_page_size = cfg.store.search_max_page_size,
      .stream_max_in_flight = cfg.ingest.ingest_stream_max_in_flight,
      .event_names = names,
  };
  ana_event_service_bind(&eopts);

  catalog = catalog_ops->open(db, &err);
  if (!catalog) {
    ANA_ERROR("main", "cannot open the catalog: %s", err.message);
    goto out;
  }
  struct ana_api_keys_options kopts;
  ana_api_keys_options_init(&kopts);
  kopts.ops = key_store_ops;
  kopts.store = key_store = key_store_ops->open(db, &err);
  if (!key_store || !(api_keys = ana_api_keys_create(&kopts, &err))) {
    ANA_ERROR("main", "cannot open the API keys: %s", err.message);
    goto out;
  }
  ana_key_service_bind(&(struct ana_key_service_options){api_keys, workers});
  /* Metric rollups follow the commit sequence on their own thread; the
   * hook only wakes it. */
  struct ana_rollup_options roopts = {
      .cache_bytes = cfg.metrics.rollup_cache_mb ? (int64_t)cfg.metrics.rollup_cache_mb << 20 : -1,
      .retention_days = cfg.store.retention_days,
      .sweep_interval_ms = cfg.store.retention_sweep_interval_ms,
  };
  rollups = ana_rollup_create(db, store_ops, store, &roopts, &err);
  if (!rollups || ana_committer_subscribe(committer, ana_rollup_on_commit, rollups) < 0) {
    ANA_ERROR("main", "cannot start the metric rollups: %s",
              rollups ? "too many commit hooks" : err.message);
    goto out;
  }
  struct ana_metric_service_options mopts = {
      .catalog_ops = catalog_ops,
      .catalog = catalog,
      .store_ops = store_ops,
      .store = store,
      .workers = workers,
      .rollups = rollups,
      .event_names = names,
  };
  ana_metric_service_bind(&mopts);
  if (ana_event_names_start(names, ana_metric_service_names_added, NULL, &err) < 0)
    goto out;

  /* Live streams hear every commit through the hook. */
  struct ana_realtime_options rtopts = {
      .buffer_size = (size_t)cfg.bridge.stream_buffer_size,
      .aggregate_interval_ms = cfg.realtime.realtime_aggregate_interval_ms,
      .slow_consumer_ms = cfg.realtime.realtime_slow_consumer_ms,
  };
  realtime = ana_realtime_create(&rtopts, &err);
  if (!realtime || ana_committer_subscribe(committer, ana_realtime_on_commit, realtime) < 0) {
    ANA_ERROR("main", "cannot start the real-time hub: %s",
              realtime ? "too many commit hooks" : err.message);
    goto out;
  }
  ana_realtime_service_bind(realtime);
  /* Live metric streams: their own hook, pushing through the hub. */
  struct ana_metric_streams_options msopts = {
      .hub = realtime,
      .store_ops = store_ops,
      .store = store,
      .interval_ms = cfg.metrics.metric_stream_interval_ms,
      .history_buckets = cfg.metrics.metric_stream_history,
      .streams_per_peer = cfg.metrics.metric_streams_per_peer,
  };
  metric_streams = ana_metric_streams_create(&msopts, &err);
  if (!metric_streams ||
      ana_committer_subscribe(committer, ana_metric_streams_on_commit, metric_streams) < 0) {
    ANA_ERROR("main", "cannot start the live metric streams: %s",
              metric_streams ? "too many commit hooks" : err.message);
    goto out;
  }
  ana_metric_service_bind_streams(metric_streams, realtime);

  struct ana_grpc_server_options opts = {
      .host = cfg.rpc.grpc_host,
      .port = cfg.rpc.grpc_port,
      .threads = cfg.rpc.grpc_threads,
      .max_message_bytes = cfg.rpc.grpc_max_message_bytes,
      .proto_max_depth = cfg.process.proto_max_depth,
      .send_queue_max = cfg.rpc.stream_send_queue_max,
      .max_concurrent_streams = cfg.rpc.grpc_max_concurrent_streams,
      .max_metadata_bytes = cfg.rpc.grpc_max_metadata_bytes,
      .streams_per_peer = cfg.rpc.grpc_streams_per_peer,
  };
  grpc = ana_grpc_server_create(&opts, &err);
  if (!grpc) {
    ANA_ERROR("main", "cannot start the gRPC server: %s", err.message);
    goto out;
  }
  /* The REST + WebSocket bridge drives the same handlers in-process. */
  health.db = db;
  health.committer = committer;
  health.schema_version = ana_local_db_schema_version(db);
  struct ana_restbridge_options ropts = {
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
      .web_root = cfg.bridge.web_root,
      .health = rest_health,
      .health_ctx = &health,
      .protected_mode = ana_auth_protected_mode,
      .allowed_hosts = cfg.bridge.http_allowed_hosts,
      .allow_query_token = cfg.auth.jwt_allow_query_token,
      .health_require_auth = cfg.auth.health_require_auth,
      .metrics_require_auth = cfg.auth.metrics_require_auth,
  };
  rest = ana_restbridge_create(&ropts, &err);
  if (!rest) {
    ANA_ERROR("main", "cannot start the REST bridge: %s", err.message);
    goto out;
  }
  char port[16], http_port[16];
  snprintf(port, sizeof port, "%d", ana_grpc_server_port(grpc));
  snprintf(http_port, sizeof http_port, "%d", ana_restbridge_port(rest));
  ana_log_fields(ANA_LOG_INFO, "main", "analyticsd is serving", "grpc_port", port, "http_port",
                 http_port, "data_dir", cfg.store.data_dir, "version", ANA_VERSION, NULL);
  atomic_store(&health.serving, true);
  atomic_store(&health.ready, true);
  update_health(&health, rest);

  /* Waits for SIGTERM/SIGINT, re-evaluating health meanwhile. */
  int sig = 0;
  for (;;) {
    struct timespec period = {0, HEALTH_PERIOD_MS * 1000000L};
    sig = sigtimedwait(&stop_signals, NULL, &period);
    if (sig == SIGTERM || sig == SIGINT)
      break;
    update_health(&health, rest);
    ana_log_flush_suppressed();
  }
  ana_log_fields(ANA_LOG_INFO, "main", "shutting down", "signal",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
  ana_health_set_serving(false);
  atomic_store(&health.serving, false);
  /* REST first: its in-flight calls finish while gRPC still serves. Both
   * within the one grace period, counted from the signal. */
  int64_t stop_start = ana_heartbeat_now_ms();
  ana_restbridge_shutdown(rest, cfg.process.shutdown_grace_ms);
  bool rest_stuck = !ana_restbridge_stopped(rest);
  if (!rest_stuck)
    ana_restbridge_destroy(rest);
  rest = NULL;
  int64_t left = cfg.process.shutdown_grace_ms - (ana_heartbeat_now_ms() - stop_start);
  if (ana_grpc_server_shutdown(grpc, left > 0 ? (int)left : 0) < 0 || rest_stuck) {
    /* Some call never ended, or the HTTP thread is stuck in a callback;
     * tearing down now could crash, so leave (forced stop: exit 1). */
    ANA_ERROR("main", "stopped with %s", rest_stuck ? "the HTTP thread stuck" : "calls still open");
    ana_config_fini(&cfg);
    _exit(1);
  }
  ana_grpc_server_destroy(grpc);
  grpc = NULL;
  ANA_INFO("main", "stopped");
  rc = 0;

out:
  ana_restbridge_destroy(rest);
  ana_grpc_server_destroy(grpc);
  /* After the transports: in-flight calls were waiting for these. */
  ana_committer_destroy(committer);
  ana_event_names_destroy(names); /* after the committer's hook; uses the rollups */
  /* After the committer: its last commits still reach the hook. */
  ana_metric_streams_destroy(metric_streams); /* pushes through the hub: first */
  ana_realtime_destroy(realtime);
  ana_workers_destroy(workers);
  /* After the workers (queries) and the committer (its hook). */
  ana_rollup_destroy(rollups);
  ana_api_keys_destroy(api_keys); /* after the workers: KeyService calls */
  if (key_store)
    key_store_ops->close(key_store);
  if (catalog)
    catalog_ops->close(catalog);
  if (store)
    store_ops->close(store);
  ana_local_db_close(db);
  ana_reflection_fini();
  ana_auth_fini();
  ana_config_fini(&cfg);
  return rc;
}
