/* analyticsd's module table: each module's start and stop, in the order the
 * service comes up (store, the commit path and its subscribers, services,
 * transports) and goes down in reverse (stop accepting, drain in-flight
 * calls, drain the committer, stop the post-commit subscribers, close the
 * store, which checkpoints its WAL). */
#include "ana_local_db.h"
#include "ana_server.h"

#include "ana_builtin_services.h"
#include "ana_clock.h"
#include "ana_heartbeat.h"
#include "ana_log.h"
#include "ana_services.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The post-commit pipeline's order: each commit reaches the subscribers in
 * this order, on the commit thread, before its requests are answered. Each
 * registers itself from its module's start below (the module order is the
 * order of their dependencies, not this one). */
static const char *const post_commit_order[] = {
    "event_names",    /* hands names to the catalog's map; its thread stores them */
    "rollups",        /* notes the last sequence and wakes the rollup thread */
    "realtime",       /* matches live subscribers' filters, queues for the pump */
    "metric_streams", /* folds events into open buckets; the ticker pushes */
    "alerts",         /* copies events of accounts with rules; the evaluator steps them */
};

/* Prefixes err's message with what failed; returns the error to return. */
static int fail(struct ana_error *err, const char *what) {
  char detail[sizeof err->message];
  memcpy(detail, err->message, sizeof detail);
  ana_error_set(err, err->code ? err->code : ANA_STATUS_INTERNAL, "%s: %s", what, detail);
  return ANA_ERR_INTERNAL;
}

/* ------------------------------------------------------------------ */
/* the process: principal defaults, built-in services, metrics          */

static int auth_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  (void)s;
  if (ana_auth_init(cfg->auth.default_account_id) < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot initialise authentication");
  /* The JWT source (JWT_*); API keys add theirs in api_keys_start. */
  if (ana_auth_configure(&cfg->auth, err) < 0)
    return fail(err, "invalid authentication settings");
  if (ana_auth_rate_configure(&cfg->auth, err) < 0)
    return fail(err, "invalid rate-limit settings");
  return 0;
}

static int auth_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)s, (void)deadline_ms;
  ana_auth_fini();
  return 0;
}

static int rpc_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  (void)s;
  if (ana_reflection_bind() < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot load the reflection descriptors");
  ana_rpc_set_trusted_proxies(cfg->process.trusted_proxies); /* per-client limits behind proxies */
  ana_log_register_metrics();
  ana_health_bind();
  return 0;
}

static int rpc_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)s, (void)deadline_ms;
  ana_reflection_fini();
  return 0;
}

/* ------------------------------------------------------------------ */
/* storage                                                              */

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

static int store_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  if (make_dirs(cfg->store.data_dir) < 0)
    return ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                         "DATA_DIR: cannot create or write %s: %s", cfg->store.data_dir,
                         strerror(errno));
  if (ana_store_select(&cfg->store, &s->backends, err) < 0)
    return fail(err, "cannot choose the storage backends");
  s->store_ops = s->backends.events;
  s->search_ops = s->backends.search;
  s->db = ana_local_db_open(cfg->store.data_dir, err);
  int64_t min_free = (int64_t)cfg->store.store_min_free_mb << 20;
  if (!s->db && (err->code == ANA_STATUS_RESOURCE_EXHAUSTED ||
                 (err->code == ANA_STATUS_UNAVAILABLE &&
                  !ana_local_db_dir_has_room(cfg->store.data_dir, min_free)))) {
    /* No room for a new database: wait for it (startup.c), serving health. */
    if (!ana_local_db_dir_has_room(cfg->store.data_dir, min_free))
      ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                    "the disk is full (less than STORE_MIN_FREE_MB = %d MiB free in DATA_DIR)",
                    cfg->store.store_min_free_mb);
    s->store_waiting = true;
    return 0;
  }
  if (s->db) { /* MiB of WAL in pages of 4 KiB */
    ana_local_db_set_checkpoint_pages(s->db, cfg->store.wal_checkpoint_mb * 256);
    ana_local_db_set_min_free_bytes(s->db, (int64_t)cfg->store.store_min_free_mb << 20);
    ana_local_staging_set_limits(s->db, cfg->store.store_staging_max_events,
                                 cfg->store.store_staging_wait_ms);
    ana_local_dedupe_set_limits(s->db, (size_t)cfg->store.dedupe_filter_mb << 20);
    ana_local_db_check_space(s->db);
  }
  s->store = s->db ? s->store_ops->open(s->db, err) : NULL;
  if (!s->store)
    return fail(err, "cannot open the event store");
  s->search_index = s->search_ops->open(s->db, err);
  if (!s->search_index)
    return fail(err, "cannot open the search index");
  s->roles = (struct ana_store_roles){
      .events = s->store_ops,
      .event_store = s->store,
      .search = s->search_ops,
      .search_index = s->search_index,
      .search_wait_ms = cfg->store.search_index_wait_ms,
  };
  s->schema_version = ana_local_db_schema_version(s->db);
  return 0;
}

/* Last of all: closing the local database checkpoints its WAL. */
static int store_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  if (s->search_index)
    s->search_ops->close(s->search_index);
  s->search_index = NULL;
  if (s->store)
    s->store_ops->close(s->store);
  s->store = NULL;
  ana_local_db_close(s->db);
  s->db = NULL;
  return 0;
}

static int catalog_start(struct ana_server *s, const struct ana_config *cfg,
                         struct ana_error *err) {
  (void)cfg;
  s->catalog_ops = s->backends.catalog;
  s->catalog = s->catalog_ops->open(s->db, err);
  if (!s->catalog)
    return fail(err, "cannot open the catalog");
  return 0;
}

static int catalog_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  if (s->catalog)
    s->catalog_ops->close(s->catalog);
  s->catalog = NULL;
  return 0;
}

static int api_keys_start(struct ana_server *s, const struct ana_config *cfg,
                          struct ana_error *err) {
  struct ana_api_keys_options kopts;
  ana_api_keys_options_init(&kopts);
  s->key_store_ops = kopts.ops = s->backends.api_keys;
  kopts.store = s->key_store = s->key_store_ops->open(s->db, err);
  if (!s->key_store || !(s->api_keys = ana_api_keys_create(&kopts, err)))
    return fail(err, "cannot open the API keys");
  if (ana_auth_add_api_keys(s->api_keys) < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "too many credential sources");
  if (ana_auth_protected_mode())
    ANA_WARN("auth",
             "protected mode: no authentication is configured, so only loopback clients "
             "are served (as account %s); set JWT_HS256_SECRET (or JWT_JWKS_FILE / "
             "JWT_JWKS_URL) or create an API key to serve other hosts",
             cfg->auth.default_account_id);
  else if (ana_api_keys_active(s->api_keys) > 0)
    ANA_INFO("auth", "API keys accepted (%lld not revoked)",
             (long long)ana_api_keys_active(s->api_keys));
  return 0;
}

/* After the workers: KeyService calls use the keys. */
static int api_keys_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_api_keys_destroy(s->api_keys);
  s->api_keys = NULL;
  if (s->key_store)
    s->key_store_ops->close(s->key_store);
  s->key_store = NULL;
  return 0;
}

/* A master key change at start goes to the audit log (DEFAULT_ACCOUNT_ID's,
 * as changes that belong to no account do), before the audit writer starts
 * (it continues the chain as stored). */
static void audit_master_change(struct ana_server *s, const char *account) {
  const struct ana_audit_store_ops *ops = s->backends.audit;
  struct ana_error err;
  ana_error_clear(&err);
  void *store = ops ? ops->open(s->db, &err) : NULL;
  struct ana_audit_record r = {
      .at_ms = ana_clock_wall_ms(),
      .kind = "call",
      .account_id = account,
      .subject = "analyticsd",
      .method = "ENCRYPTION_PREVIOUS_KEY_FILE",
      .target_id = "master-key",
      .peer = "local",
  };
  if (!store || ops->append(store, &r, 1, &err) < 0)
    ANA_ERROR("crypto", "the master key change is not in the audit log: %s", err.message);
  if (store)
    ops->close(store);
}

/* Envelope encryption: reads the master key (generating DATA_DIR/master.key
 * when ENCRYPTION_KEY_FILE is unset) and opens the data key store. */
static int crypto_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  s->master_key_len = ana_audit_master_key(cfg->auth.encryption_key_file, cfg->store.data_dir,
                                           s->master_key, sizeof s->master_key, err);
  if (s->master_key_len < 0)
    return fail(err, "cannot read the master key");
  s->data_key_store_ops = ana_store_data_key_backend("sqlite");
  s->data_key_store = s->data_key_store_ops->open(s->db, err);
  if (!s->data_key_store)
    return fail(err, "cannot open the data keys");
  if (cfg->crypto.previous_key_file && cfg->crypto.previous_key_file[0]) {
    uint8_t old[ANA_CRYPTO_MASTER_MAX];
    struct ana_crypto_rewrap_result res;
    int n = ana_audit_master_key(cfg->crypto.previous_key_file, cfg->store.data_dir, old,
                                 sizeof old, err);
    int rc =
        n < 0 ? n
              : ana_crypto_rewrap_master(old, (size_t)n, s->master_key, (size_t)s->master_key_len,
                                         s->data_key_store_ops, s->data_key_store, &res, err);
    OPENSSL_cleanse(old, sizeof old);
    if (rc < 0)
      return fail(err, "ENCRYPTION_PREVIOUS_KEY_FILE: cannot change the master key");
    if (res.rewrapped || res.root_written) {
      ANA_WARN("crypto",
               "master key changed: %zu data keys rewrapped by ENCRYPTION_KEY_FILE's key (%zu "
               "were already)%s; ENCRYPTION_PREVIOUS_KEY_FILE is no longer needed",
               res.rewrapped, res.already, res.root_written ? ", key root stored" : "");
      audit_master_change(s, cfg->auth.default_account_id);
    } else {
      ANA_WARN("crypto", "ENCRYPTION_PREVIOUS_KEY_FILE: every data key is wrapped by "
                         "ENCRYPTION_KEY_FILE's key already; remove the variable");
    }
  }
  struct ana_crypto_options o = {
      .master_key = s->master_key,
      .master_key_len = (size_t)s->master_key_len,
      .ops = s->data_key_store_ops,
      .store = s->data_key_store,
      .refresh_ms = 10000,
  };
  if (!(s->crypto = ana_crypto_create(&o, err)) || ana_crypto_check(s->crypto, err) < 0)
    return fail(err, "cannot start the encryption");
  if (ana_crypto_fields_parse(cfg->crypto.encrypted_fields, &s->encrypted, err) < 0)
    return fail(err, "cannot start the encryption");
  return 0;
}

/* After everything that seals or opens. */
static int crypto_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_crypto_fields_free(s->encrypted);
  s->encrypted = NULL;
  ana_crypto_destroy(s->crypto);
  s->crypto = NULL;
  if (s->data_key_store)
    s->data_key_store_ops->close(s->data_key_store);
  s->data_key_store = NULL;
  OPENSSL_cleanse(s->master_key, sizeof s->master_key);
  return 0;
}

/* The audit log's writer; its records come from the call hook the audit
 * service sets, and it stops after the transports (the last calls' records
 * are written, the head signed). */
static int audit_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  uint8_t *master = s->master_key; /* read by crypto_start */
  int n = s->master_key_len;
  s->audit_store_ops = s->backends.audit;
  s->audit_store = s->audit_store_ops->open(s->db, err);
  struct ana_audit_options o = {
      .ops = s->audit_store_ops,
      .store = s->audit_store,
      .queue_max = (size_t)cfg->auth.audit_queue_max,
      .retention_days = cfg->auth.audit_retention_days,
      .sign_interval_ms = cfg->auth.audit_sign_interval_ms,
      .master_key = master,
      .master_key_len = (size_t)n,
  };
  if (s->audit_store)
    s->audit = ana_audit_create(&o, err);
  OPENSSL_cleanse(s->master_key, sizeof s->master_key);
  if (!s->audit)
    return fail(err, "cannot open the audit log");
  return 0;
}

static int audit_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_rpc_set_finish_hook(NULL);
  ana_audit_destroy(s->audit);
  s->audit = NULL;
  if (s->audit_store)
    s->audit_store_ops->close(s->audit_store);
  s->audit_store = NULL;
  return 0;
}

/* Notification channels and the outbox's senders (their own threads). */
static int notify_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  struct ana_notify_options nopts = {
      .db = s->db,
      .catalog_ops = s->catalog_ops,
      .catalog = s->catalog,
      .smtp_url = cfg->notify.smtp_url,
      .smtp_user = cfg->notify.smtp_user,
      .smtp_password = cfg->notify.smtp_password,
      .smtp_password_file = cfg->notify.smtp_password_file,
      .smtp_from = cfg->notify.smtp_from,
      .telegram_api_url = cfg->notify.telegram_api_url,
      .allow_private_networks = cfg->notify.allow_private_networks,
      .threads = cfg->notify.notify_threads,
      .max_attempts = cfg->notify.notify_max_attempts,
      .backoff_initial_ms = cfg->notify.notify_backoff_initial_ms,
      .backoff_max_ms = cfg->notify.notify_backoff_max_ms,
      .timeout_ms = cfg->notify.notify_timeout_ms,
      .poll_ms = cfg->notify.notify_poll_ms,
      .crypto = s->crypto,
  };
  s->notify = ana_notify_create(&nopts, err);
  if (!s->notify || ana_notify_start(s->notify, err) < 0)
    return fail(err, "cannot start the notifications");
  return 0;
}

/* After the workers (channel tests) and before the catalog: an attempt
 * under way ends within NOTIFY_TIMEOUT; undelivered rows wait in the outbox. */
static int notify_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_notify_destroy(s->notify);
  s->notify = NULL;
  return 0;
}

/* ------------------------------------------------------------------ */
/* the post-commit pipeline and its subscribers                         */

static int post_commit_start(struct ana_server *s, const struct ana_config *cfg,
                             struct ana_error *err) {
  (void)cfg;
  s->post_commit = ana_post_commit_create(
      post_commit_order, sizeof post_commit_order / sizeof post_commit_order[0], err);
  return s->post_commit ? 0 : ANA_ERR_INVALID;
}

/* After the committer and every subscriber. */
static int post_commit_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_post_commit_destroy(s->post_commit);
  s->post_commit = NULL;
  return 0;
}

/* Metric rollups follow the commit sequence on their own thread; the hook
 * only wakes it. */
static int rollups_start(struct ana_server *s, const struct ana_config *cfg,
                         struct ana_error *err) {
  struct ana_rollup_options roopts = {
      .cache_bytes =
          cfg->metrics.rollup_cache_mb ? (int64_t)cfg->metrics.rollup_cache_mb << 20 : -1,
      .retention_days = cfg->store.retention_days,
      .sweep_interval_ms = cfg->store.retention_sweep_interval_ms,
  };
  s->rollups = ana_rollup_create(s->db, s->store_ops, s->store, &roopts, err);
  if (!s->rollups)
    return fail(err, "cannot start the metric rollups");
  return ana_post_commit_register(s->post_commit, "rollups", ana_rollup_on_commit, s->rollups, err);
}

/* After the workers (queries), the committer (its hook) and the event
 * names (their callback resolves metrics). */
static int rollups_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_rollup_destroy(s->rollups);
  s->rollups = NULL;
  return 0;
}

static int workers_start(struct ana_server *s, const struct ana_config *cfg,
                         struct ana_error *err) {
  (void)cfg;
  s->workers = ana_workers_create(4, 1024);
  if (!s->workers)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the worker pool");
  return 0;
}

/* After the transports: every call is finished, so no job is left. */
static int workers_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_workers_destroy(s->workers);
  s->workers = NULL;
  return 0;
}

/* Live streams hear every commit through the hook. */
static int realtime_start(struct ana_server *s, const struct ana_config *cfg,
                          struct ana_error *err) {
  struct ana_realtime_options rtopts = {
      .buffer_size = (size_t)cfg->bridge.stream_buffer_size,
      .aggregate_interval_ms = cfg->realtime.realtime_aggregate_interval_ms,
      .slow_consumer_ms = cfg->realtime.realtime_slow_consumer_ms,
      .crypto = s->crypto,
      .encrypted = s->encrypted,
  };
  s->realtime = ana_realtime_create(&rtopts, err);
  if (!s->realtime)
    return fail(err, "cannot start the real-time hub");
  return ana_post_commit_register(s->post_commit, "realtime", ana_realtime_on_commit, s->realtime,
                                  err);
}

static int realtime_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_realtime_destroy(s->realtime);
  s->realtime = NULL;
  return 0;
}

/* Live metric streams: their own hook, pushing through the hub. */
static int metric_streams_start(struct ana_server *s, const struct ana_config *cfg,
                                struct ana_error *err) {
  struct ana_metric_streams_options msopts = {
      .hub = s->realtime,
      .store_ops = s->store_ops,
      .store = s->store,
      .interval_ms = cfg->metrics.metric_stream_interval_ms,
      .history_buckets = cfg->metrics.metric_stream_history,
      .streams_per_peer = cfg->metrics.metric_streams_per_peer,
  };
  s->metric_streams = ana_metric_streams_create(&msopts, err);
  if (!s->metric_streams)
    return fail(err, "cannot start the live metric streams");
  return ana_post_commit_register(s->post_commit, "metric_streams", ana_metric_streams_on_commit,
                                  s->metric_streams, err);
}

/* Before the hub: it pushes through it. */
static int metric_streams_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_metric_streams_destroy(s->metric_streams);
  s->metric_streams = NULL;
  return 0;
}

/* The catalog of event names: its own hook, stored by its own thread
 * (started with the services: its callback is the metric service's). */
static int event_names_start(struct ana_server *s, const struct ana_config *cfg,
                             struct ana_error *err) {
  s->names = ana_event_names_create(
      s->db, &(struct ana_event_names_options){cfg->ingest.event_names_max}, err);
  if (!s->names)
    return fail(err, "cannot open the event names");
  return ana_post_commit_register(s->post_commit, "event_names", ana_event_names_on_commit,
                                  s->names, err);
}

/* After the committer's hook; before the rollups its callback uses. */
static int event_names_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_event_names_destroy(s->names);
  s->names = NULL;
  return 0;
}

/* The alert evaluator: its own hook and thread (rules load with the
 * services: they resolve metrics through the metric service). */
static int alerts_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  struct ana_alerts_options aopts = {
      .db = s->db,
      .store_ops = s->store_ops,
      .store = s->store,
      .catalog_ops = s->catalog_ops,
      .catalog = s->catalog,
      .hub = s->realtime,
      .notify = s->notify,
      .resolve = ana_metric_service_resolve,
      .reveal = ana_metric_service_reveal,
      .max_instances = cfg->alerts.alert_max_instances,
      .history_days = cfg->alerts.alert_history_days,
      .queue_max = cfg->alerts.alert_queue_max,
  };
  s->alerts = ana_alerts_create(&aopts, err);
  if (!s->alerts)
    return fail(err, "cannot start the alert evaluator");
  return ana_post_commit_register(s->post_commit, "alerts", ana_alerts_on_commit, s->alerts, err);
}

/* After the committer (its hook); before the hub it pushes through. */
static int alerts_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_alerts_destroy(s->alerts);
  s->alerts = NULL;
  return 0;
}

/* The group committer: from here on the pipeline's list is sealed. */
static int ingest_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  ana_post_commit_start(s->post_commit);
  struct ana_committer_options copts = {
      .batch_size = cfg->ingest.batch_size,
      .processing_interval_ms = cfg->ingest.processing_interval_ms,
      .queue_max = cfg->ingest.ingest_queue_max,
      .retention_days = cfg->store.retention_days,
      .retention_sweep_interval_ms = cfg->store.retention_sweep_interval_ms,
      .post_commit = s->post_commit,
  };
  s->committer = ana_committer_create(s->db, &s->roles, &copts, err);
  if (!s->committer)
    return fail(err, "cannot start the ingest path");
  return 0;
}

/* After the transports (in-flight calls were waiting for it): commits
 * what is queued, whose last commits still reach the subscribers, which
 * stop after it. */
static int ingest_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_committer_destroy(s->committer);
  s->committer = NULL;
  return 0;
}

/* Re-encryption of events stored before ENCRYPTED_FIELDS covered a field:
 * the rollups that group or filter by one are rebuilt through these. */
static bool rollup_reads(void *ctx, const char *field) {
  return ana_crypto_fields_reads(ctx, field);
}

/* Metrics whose filters compare a field with its clear value get blind
 * indexes instead (a new rollup version each); then the others that group
 * or filter by a field are rebuilt from the rewritten events. */
static int reencrypt_rebuild(void *ctx, const struct ana_crypto_fields *f, struct ana_error *err) {
  int64_t since = ana_clock_wall_ms();
  int blinded = ana_metric_service_blind_stored(err);
  if (blinded < 0)
    return blinded;
  int rebuilt = ana_rollup_rebuild(ctx, rollup_reads, (void *)f, since, err);
  return rebuilt < 0 ? rebuilt : blinded + rebuilt;
}

/* Waits (polling, at most timeout_ms) until the rebuilt versions are
 * complete and the old cells deleted; commits meanwhile do not matter. */
static bool reencrypt_settled(void *ctx, int timeout_ms) {
  for (int waited = 0; !ana_rollup_backfilled(ctx); waited += 20) {
    if (waited >= timeout_ms)
      return false;
    struct timespec pause = {0, 20000000};
    nanosleep(&pause, NULL);
  }
  return true;
}

static int reencrypt_start(struct ana_server *s, const struct ana_config *cfg,
                           struct ana_error *err) {
  struct ana_reencrypt_options o = {
      .db = s->db,
      .events = s->store_ops,
      .event_store = s->store,
      .search = s->search_ops,
      .search_index = s->search_index,
      .crypto = s->crypto,
      .fields = s->encrypted,
      .batch_events = cfg->crypto.reencrypt_batch_events,
      .pause_ms = cfg->crypto.reencrypt_pause_ms,
      .rebuild_rollups = reencrypt_rebuild,
      .rollups_settled = reencrypt_settled,
      .rollups_ctx = s->rollups,
  };
  s->reencrypt = ana_reencrypt_start(&o, err);
  return s->reencrypt ? 0 : fail(err, "cannot start the re-encryption of stored events");
}

/* Before the committer, the rollups and the store it works through. */
static int reencrypt_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)deadline_ms;
  ana_reencrypt_stop(s->reencrypt);
  s->reencrypt = NULL;
  return 0;
}

/* ------------------------------------------------------------------ */
/* the services                                                         */

static int services_start(struct ana_server *s, const struct ana_config *cfg,
                          struct ana_error *err) {
  struct ana_event_service_options eopts = {
      .committer = s->committer,
      .roles = &s->roles,
      .workers = s->workers,
      .limits =
          {
              .event_max_bytes = cfg->ingest.event_max_bytes,
              .event_max_properties = cfg->ingest.event_max_properties,
              .event_max_depth = cfg->ingest.event_max_depth,
              .batch_max_events = cfg->ingest.batch_max_events,
              .batch_max_bytes = cfg->ingest.batch_max_bytes,
              .retention_days = cfg->store.retention_days,
              .event_max_future_ms = cfg->ingest.event_max_future_ms,
              .reject_future = strcmp(cfg->ingest.timestamp_policy, "reject") == 0,
              .clock_skew_tolerance_ms = cfg->ingest.clock_skew_tolerance_ms,
          },
      .trusted_proxies = cfg->process.trusted_proxies,
      .search_max_page_size = cfg->store.search_max_page_size,
      .stream_max_in_flight = cfg->ingest.ingest_stream_max_in_flight,
      .event_names = s->names,
      .encrypted = s->encrypted,
      .crypto = s->crypto,
  };
  ana_event_service_bind(&eopts);
  ana_key_service_bind(&(struct ana_key_service_options){s->api_keys, s->workers, s->crypto});
  ana_audit_service_bind(
      &(struct ana_audit_service_options){s->audit, s->workers, cfg->auth.default_account_id});
  ana_channel_service_bind(&(struct ana_channel_service_options){s->notify, s->workers});
  struct ana_metric_service_options mopts = {
      .catalog_ops = s->catalog_ops,
      .catalog = s->catalog,
      .store_ops = s->store_ops,
      .store = s->store,
      .workers = s->workers,
      .rollups = s->rollups,
      .event_names = s->names,
      .encrypted = s->encrypted,
      .crypto = s->crypto,
  };
  ana_metric_service_bind(&mopts);
  if (ana_event_names_start(s->names, ana_metric_service_names_added, NULL, err) < 0)
    return fail(err, "cannot start the event names");
  ana_realtime_service_bind(s->realtime, s->encrypted);
  ana_alert_service_bind(&(struct ana_alert_service_options){s->catalog_ops, s->catalog, s->workers,
                                                             s->alerts, s->realtime, s->notify});
  ana_alerts_load_all(s->alerts);
  ana_metric_service_bind_streams(s->metric_streams, s->realtime);
  return 0;
}

/* Reports: the runner's threads (resuming interrupted runs) and the
 * service; stopped after the transports, so no call uses them. */
static int reports_start(struct ana_server *s, const struct ana_config *cfg,
                         struct ana_error *err) {
  /* REPORTS_DIR unset: beside the store, wherever DATA_DIR points. */
  char default_dir[4096];
  const char *reports_dir = cfg->store.reports_dir;
  if (!reports_dir) {
    snprintf(default_dir, sizeof default_dir, "%s/reports", cfg->store.data_dir);
    reports_dir = default_dir;
  }
  struct ana_report_service_options ro = {
      .catalog_ops = s->catalog_ops,
      .catalog = s->catalog,
      .store_ops = s->store_ops,
      .store = s->store,
      .db = s->db,
      .workers = s->workers,
      .reports_dir = reports_dir,
      .encrypted = s->encrypted != NULL,
      .crypto = s->crypto,
      .report_workers = cfg->reports.report_workers,
      .queue_max = cfg->reports.report_queue_max,
      .retention_days = cfg->reports.report_retention_days,
      .max_attempts = cfg->reports.report_max_attempts,
      .rollups = cfg->reports.report_rollups,
      .auto_rollups = cfg->reports.report_auto_rollups,
  };
  if (ana_report_service_start(&ro, err) < 0)
    return fail(err, "cannot start the report runner");
  return 0;
}

static int reports_stop(struct ana_server *s, int64_t deadline_ms) {
  (void)s, (void)deadline_ms;
  ana_report_service_stop();
  return 0;
}

/* ------------------------------------------------------------------ */
/* the transports                                                       */

static int grpc_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  struct ana_grpc_server_options opts = {
      .host = cfg->rpc.grpc_host,
      .port = cfg->rpc.grpc_port,
      .threads = cfg->rpc.grpc_threads,
      .max_message_bytes = cfg->rpc.grpc_max_message_bytes,
      .proto_max_depth = cfg->process.proto_max_depth,
      .send_queue_max = cfg->rpc.stream_send_queue_max,
      .max_concurrent_streams = cfg->rpc.grpc_max_concurrent_streams,
      .max_metadata_bytes = cfg->rpc.grpc_max_metadata_bytes,
      .streams_per_peer = cfg->rpc.grpc_streams_per_peer,
      .tls_cert_file = cfg->rpc.grpc_tls_cert_file,
      .tls_key_file = cfg->rpc.grpc_tls_key_file,
      .tls_client_ca_file = cfg->rpc.grpc_tls_client_ca_file,
  };
  s->grpc = ana_grpc_server_create(&opts, err);
  if (!s->grpc)
    return fail(err, "cannot start the gRPC server");
  return 0;
}

/* After REST (its in-flight calls finish while gRPC still serves), within
 * what is left of the grace period. */
static int grpc_stop(struct ana_server *s, int64_t deadline_ms) {
  if (!s->grpc)
    return 0;
  /* Also when a later module failed to start: core aborts when a server
   * that listens is destroyed without a shutdown. */
  {
    int64_t left = s->draining ? deadline_ms - ana_heartbeat_now_ms() : 1000;
    if (ana_grpc_server_shutdown(s->grpc, left > 0 ? (int)left : 0) < 0) {
      /* Some call never ended: tearing down now could crash. */
      if (!s->forced)
        s->forced = "calls still open";
      return ANA_ERR_TIMEOUT;
    }
  }
  ana_grpc_server_destroy(s->grpc);
  s->grpc = NULL;
  return 0;
}

void ana_server_reload_tls(struct ana_server *s) {
  struct ana_error err;
  ana_error_clear(&err);
  if (s->grpc && ana_grpc_server_reload_tls(s->grpc, &err) < 0)
    ANA_ERROR("rpc", "TLS reload refused, the certificate in use stays: %s", err.message);
  ana_error_clear(&err);
  if (s->rest && ana_restbridge_reload_tls(s->rest, &err) < 0)
    ANA_ERROR("restbridge", "TLS reload refused, the certificate in use stays: %s", err.message);
}

/* The bridge's health callback (its thread; nothing here blocks): readiness,
 * 503 while not serving (starting, stopping), while the store cannot write
 * (the last write failed, DATA_DIR is short of space, or the store waits
 * for room to create its database) or while the bridge itself was stalled
 * (then it could not answer anyway). */
static int rest_health(void *ctx, bool *serving, struct ana_json_buf *extra) {
  struct ana_server *s = ctx;
  bool open = atomic_load(&s->store_open); /* before it, db and committer are main's */
  bool degraded = open && ana_local_db_degraded(s->db);
  struct ana_committer_stats st = {0};
  if (open && s->committer)
    ana_committer_stats(s->committer, &st);
  struct ana_event_store_status ship = {0};
  if (open && s->store_ops->status)
    s->store_ops->status(s->store, &ship);
  *serving = atomic_load(&s->serving) && atomic_load(&s->ready) && open && !degraded && !ship.full;
  if (!open && ana_restbridge_health_add(extra, "storeError", s->store_wait_reason) < 0)
    return ANA_ERR_NOMEM;
  if (ana_restbridge_health_add(extra, "store",
                                !open      ? "waiting"
                                : degraded ? "degraded"
                                           : "ok") < 0 ||
      ana_restbridge_health_add(extra, "auth", ana_auth_mode_name()) < 0 ||
      ana_restbridge_health_add_int(extra, "schemaVersion", open ? s->schema_version : 0) < 0 ||
      ana_restbridge_health_add_int(extra, "ingestQueuedEvents", (long long)st.queued_events) < 0 ||
      ana_restbridge_health_add_int(extra, "lastCommitSequence", (long long)st.last_seq) < 0)
    return ANA_ERR_NOMEM;
  /* Events stored before ENCRYPTED_FIELDS covered a field: the job's state. */
  struct ana_reencrypt_status re = {0};
  if (open && s->reencrypt) {
    ana_reencrypt_status(s->reencrypt, &re);
    if (ana_restbridge_health_add(extra, "fieldReencryption", re.state) < 0 ||
        ana_restbridge_health_add_int(extra, "fieldReencryptionNextSequence",
                                      (long long)re.next_seq) < 0 ||
        ana_restbridge_health_add_int(extra, "fieldReencryptionLastSequence",
                                      (long long)re.upto_seq) < 0 ||
        ana_restbridge_health_add_int(extra, "fieldReencryptionRewritten",
                                      (long long)re.rewritten) < 0)
      return ANA_ERR_NOMEM;
  }
  /* An event store that ships from the spool: how far behind it is. */
  if (open && s->store_ops->status &&
      (ana_restbridge_health_add(extra, "eventShipping",
                                 ship.full       ? "full"
                                 : ship.degraded ? "degraded"
                                                 : "ok") < 0 ||
       (ship.reason[0] &&
        ana_restbridge_health_add(extra, "eventShippingError", ship.reason) < 0) ||
       ana_restbridge_health_add_int(extra, "shippingLagEvents", (long long)ship.lag_events) < 0 ||
       ana_restbridge_health_add_int(extra, "shippingLagSeconds", (long long)ship.lag_seconds) <
           0 ||
       ana_restbridge_health_add_int(extra, "spoolPendingBytes", (long long)ship.pending_bytes) <
           0))
    return ANA_ERR_NOMEM;
  return 0;
}

/* The bridge's protected-mode callback: this server's own credential sources. */
static bool rest_protected_mode(void *ctx) {
  (void)ctx;
  return ana_auth_protected_mode();
}

/* The REST + WebSocket bridge drives the same handlers in-process. */
static int rest_start(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err) {
  struct ana_restbridge_options ropts = {
      .host = cfg->bridge.http_host,
      .port = cfg->bridge.port,
      .max_body_bytes = (size_t)cfg->bridge.http_max_body_bytes,
      .stream_buffer_size = (size_t)cfg->bridge.stream_buffer_size,
      .slow_consumer_ms = cfg->bridge.ws_slow_consumer_ms,
      .body_budget_bytes = (size_t)cfg->bridge.http_body_budget_mb << 20,
      .stream_budget_bytes = (size_t)cfg->bridge.stream_queue_budget_mb << 20,
      .body_min_rate = (size_t)cfg->bridge.http_body_min_rate,
      .body_rate_window_ms = cfg->bridge.http_body_rate_window_ms,
      .decode_threads = cfg->bridge.http_decode_threads ? cfg->bridge.http_decode_threads : -1,
      .cors_allowed_origins = cfg->bridge.cors_allowed_origins,
      .web_root = cfg->bridge.web_root,
      .health = rest_health,
      .health_ctx = s,
      .protected_mode = rest_protected_mode,
      .allowed_hosts = cfg->bridge.http_allowed_hosts,
      .allow_query_token = cfg->auth.jwt_allow_query_token,
      .health_require_auth = cfg->auth.health_require_auth,
      .metrics_require_auth = cfg->auth.metrics_require_auth,
      .tls_cert_file = cfg->bridge.http_tls_cert_file,
      .tls_key_file = cfg->bridge.http_tls_key_file,
      .tls_client_ca_file = cfg->bridge.http_tls_client_ca_file,
  };
  s->rest = ana_restbridge_create(&ropts, err);
  if (!s->rest)
    return fail(err, "cannot start the REST bridge");
  return 0;
}

/* First: its in-flight calls finish while gRPC still serves, within the
 * one grace period counted from the signal. A bridge thread stuck in a
 * callback is left running (destroying it could crash). */
static int rest_stop(struct ana_server *s, int64_t deadline_ms) {
  if (!s->rest)
    return 0;
  if (s->draining) {
    int64_t left = deadline_ms - ana_heartbeat_now_ms();
    ana_restbridge_shutdown(s->rest, left > 0 ? (int)left : 0);
    if (!ana_restbridge_stopped(s->rest)) {
      s->rest = NULL;
      if (!s->forced)
        s->forced = "the HTTP thread stuck";
      return ANA_ERR_TIMEOUT;
    }
  }
  ana_restbridge_destroy(s->rest);
  s->rest = NULL;
  return 0;
}

/* ------------------------------------------------------------------ */

const struct ana_module ana_server_modules[] = {
    {.name = "auth", .start = auth_start, .stop = auth_stop},
    {.name = "rpc", .start = rpc_start, .stop = rpc_stop},
    {.name = "store", .start = store_start, .stop = store_stop},
    {.name = "catalog", .start = catalog_start, .stop = catalog_stop},
    {.name = "api_keys", .start = api_keys_start, .stop = api_keys_stop},
    {.name = "crypto", .start = crypto_start, .stop = crypto_stop},
    {.name = "audit", .start = audit_start, .stop = audit_stop},
    {.name = "notify", .start = notify_start, .stop = notify_stop},
    {.name = "post_commit", .start = post_commit_start, .stop = post_commit_stop},
    {.name = "rollups", .start = rollups_start, .stop = rollups_stop},
    {.name = "workers", .start = workers_start, .stop = workers_stop},
    {.name = "realtime", .start = realtime_start, .stop = realtime_stop},
    {.name = "metric_streams", .start = metric_streams_start, .stop = metric_streams_stop},
    {.name = "event_names", .start = event_names_start, .stop = event_names_stop},
    {.name = "alerts", .start = alerts_start, .stop = alerts_stop},
    {.name = "ingest", .start = ingest_start, .stop = ingest_stop},
    {.name = "reencrypt", .start = reencrypt_start, .stop = reencrypt_stop},
    {.name = "services", .start = services_start},
    {.name = "reports", .start = reports_start, .stop = reports_stop},
    {.name = "grpc", .start = grpc_start, .stop = grpc_stop, .drains = true},
    {.name = "rest", .start = rest_start, .stop = rest_stop, .drains = true},
};
const size_t ana_server_n_modules = sizeof ana_server_modules / sizeof ana_server_modules[0];
