/* Unit tests for the configuration table: parsing, bounds, messages and generated docs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ana_alloc.h"
#include "ana_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ANA_SOURCE_DIR
#error "ANA_SOURCE_DIR must name the source tree (set by tests/unit/CMakeLists.txt)"
#endif

#define README_BEGIN "<!-- config-table:begin -->"
#define README_END "<!-- config-table:end -->"

static const char *const all_names[] = {
    "PORT",
    "GRPC_PORT",
    "GRPC_HOST",
    "MONGODB_URI",
    "ELASTICSEARCH_NODE",
    "CLICKHOUSE_HOST",
    "CLICKHOUSE_DATABASE",
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_CA_FILE",
    "CLICKHOUSE_TIMEOUT",
    "CLICKHOUSE_BATCH_ROWS",
    "CLICKHOUSE_BATCH_INTERVAL",
    "CLICKHOUSE_GZIP",
    "CLICKHOUSE_GZIP_LEVEL",
    "CLICKHOUSE_SHIPPED_MERGE",
    "SPOOL_MAX_BYTES",
    "REDIS_URL",
    "RABBITMQ_URL",
    "DATA_DIR",
    "REPORTS_DIR",
    "EXPORTS_DIR",
    "RETENTION_DAYS",
    "BATCH_SIZE",
    "PROCESSING_INTERVAL",
    "STREAM_BUFFER_SIZE",
    "STREAM_SEND_QUEUE_MAX",
    "GRPC_MAX_MESSAGE_BYTES",
    "PROTO_MAX_DEPTH",
    "GRPC_MAX_CONCURRENT_STREAMS",
    "GRPC_MAX_METADATA_BYTES",
    "GRPC_STREAMS_PER_PEER",
    "GRPC_THREADS",
    "SHUTDOWN_GRACE_MS",
    "DEFAULT_ACCOUNT_ID",
    "JWT_HS256_SECRET",
    "JWT_HS256_SECRET_FILE",
    "JWT_JWKS_FILE",
    "JWT_JWKS_URL",
    "JWT_ALGORITHMS",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY",
    "JWT_ACCOUNT_CLAIM",
    "JWT_ROLES_CLAIM",
    "JWT_ACCOUNTS_CLAIM",
    "JWT_ALLOW_QUERY_TOKEN",
    "METRICS_REQUIRE_AUTH",
    "HEALTH_REQUIRE_AUTH",
    "AUDIT_RETENTION_DAYS",
    "AUDIT_SIGN_INTERVAL",
    "AUDIT_QUEUE_MAX",
    "ENCRYPTION_KEY_FILE",
    "ENCRYPTED_FIELDS",
    "ENCRYPTION_PREVIOUS_KEY_FILE",
    "REENCRYPT_BATCH_EVENTS",
    "REENCRYPT_PAUSE",
    "RATE_LIMIT_DEFAULT",
    "RATE_LIMIT_ROLES",
    "RATE_LIMIT_ACCOUNTS",
    "RATE_LIMIT_KEYS",
    "RATE_LIMIT_MAX_ENTRIES",
    "HTTP_HOST",
    "HTTP_ALLOWED_HOSTS",
    "LOG_LEVEL",
    "ACCESS_LOG_SAMPLE",
    "ACCESS_LOG_MAX_PER_S",
    "EVENT_MAX_BYTES",
    "EVENT_MAX_PROPERTIES",
    "EVENT_MAX_DEPTH",
    "BATCH_MAX_EVENTS",
    "BATCH_MAX_BYTES",
    "EVENT_MAX_FUTURE",
    "TIMESTAMP_POLICY",
    "CLOCK_SKEW_TOLERANCE",
    "TRUSTED_PROXIES",
    "INGEST_QUEUE_MAX",
    "INGEST_STREAM_MAX_IN_FLIGHT",
    "SEARCH_MAX_PAGE_SIZE",
    "EVENT_NAMES_MAX",
    "SEARCH_INDEX_WAIT",
    "RETENTION_SWEEP_INTERVAL",
    "STORE_STAGING_MAX_EVENTS",
    "STORE_STAGING_WAIT",
    "HTTP_MAX_BODY_BYTES",
    "HTTP_BODY_BUDGET_MB",
    "HTTP_BODY_MIN_RATE",
    "HTTP_BODY_RATE_WINDOW",
    "HTTP_DECODE_THREADS",
    "CORS_ALLOWED_ORIGINS",
    "WS_SLOW_CONSUMER_MS",
    "STREAM_QUEUE_BUDGET_MB",
    "WEB_ROOT",
    "RESTBRIDGE_UPSTREAM",
    "REALTIME_AGGREGATE_INTERVAL",
    "REALTIME_SLOW_CONSUMER_MS",
    "METRIC_STREAM_INTERVAL",
    "METRIC_STREAM_HISTORY",
    "METRIC_STREAMS_PER_PEER",
    "ROLLUP_CACHE_MB",
    "ALERT_MAX_INSTANCES",
    "ALERT_HISTORY_DAYS",
    "ALERT_QUEUE_MAX",
    "REPORT_WORKERS",
    "REPORT_QUEUE_MAX",
    "REPORT_RETENTION_DAYS",
    "REPORT_MAX_ATTEMPTS",
    "REPORT_ROLLUPS",
    "REPORT_AUTO_ROLLUPS",
    "WAL_CHECKPOINT_MB",
    "STORE_MIN_FREE_MB",
    "SMTP_URL",
    "SMTP_USER",
    "SMTP_PASSWORD",
    "SMTP_PASSWORD_FILE",
    "SMTP_FROM",
    "TELEGRAM_API_URL",
    "NOTIFY_ALLOW_PRIVATE_NETWORKS",
    "NOTIFY_THREADS",
    "NOTIFY_MAX_ATTEMPTS",
    "NOTIFY_BACKOFF_INITIAL",
    "NOTIFY_BACKOFF_MAX",
    "NOTIFY_TIMEOUT",
    "NOTIFY_POLL_INTERVAL",
    "GRPC_TLS_CERT_FILE",
    "GRPC_TLS_KEY_FILE",
    "GRPC_TLS_CLIENT_CA_FILE",
    "HTTP_TLS_CERT_FILE",
    "HTTP_TLS_KEY_FILE",
    "HTTP_TLS_CLIENT_CA_FILE",
    "RESTBRIDGE_UPSTREAM_TLS",
    "RESTBRIDGE_UPSTREAM_CA_FILE",
    "RESTBRIDGE_UPSTREAM_CERT_FILE",
    "RESTBRIDGE_UPSTREAM_KEY_FILE",
    "RESTBRIDGE_UPSTREAM_SERVER_NAME",
};
#define NAME_COUNT (sizeof all_names / sizeof all_names[0])

/* ---- helpers ---- */

/* ctx is a NULL-terminated array of "NAME=value" strings. */
static const char *fake_getenv(const char *name, void *ctx) {
  const char *const *env = ctx;
  size_t n = strlen(name);
  for (; *env; env++) {
    if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
      return *env + n + 1;
  }
  return NULL;
}

static int load_env(struct ana_config *cfg, struct ana_error *err, const char **env) {
  return ana_config_load(cfg, fake_getenv, (void *)env, err);
}

#define LOAD(cfg, err, ...) load_env(cfg, err, (const char *[]){__VA_ARGS__, NULL})

static bool is_zeroed(const struct ana_config *cfg) {
  static const struct ana_config zero;
  return memcmp(cfg, &zero, sizeof zero) == 0;
}

/* Loads one assignment and checks that it is accepted. */
static void accepts(const char *assignment, struct ana_config *cfg) {
  struct ana_error err = {0};
  int rc = LOAD(cfg, &err, assignment);
  if (rc != 0)
    fail_msg("%s rejected: %s", assignment, err.message);
}

/* Loads one assignment and checks that it is rejected with a message that
 * starts with the variable's name and contains fragment. */
static void rejects(const char *assignment, const char *fragment) {
  struct ana_config cfg;
  struct ana_error err = {0};
  char prefix[64];
  size_t name_len = strcspn(assignment, "=");
  int rc = LOAD(&cfg, &err, assignment);

  if (rc != ANA_ERR_INVALID)
    fail_msg("%s: expected ANA_ERR_INVALID, got %d", assignment, rc);
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
  snprintf(prefix, sizeof prefix, "%.*s: \"", (int)name_len, assignment);
  if (strncmp(err.message, prefix, strlen(prefix)) != 0)
    fail_msg("%s: message does not name the variable: %s", assignment, err.message);
  if (fragment && !strstr(err.message, fragment))
    fail_msg("%s: message lacks \"%s\": %s", assignment, fragment, err.message);
  assert_true(is_zeroed(&cfg));
}

static char *capture(void (*write)(FILE *)) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  write(f);
  fclose(f);
  return buf;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long len;

  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  len = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)len + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
  buf[len] = '\0';
  fclose(f);
  return buf;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

/* Returns s[0..*len) without leading and trailing white space. */
static const char *trim(const char *s, size_t *len) {
  size_t n = *len;
  while (n > 0 && strchr(" \t\r\n", *s)) {
    s++;
    n--;
  }
  while (n > 0 && strchr(" \t\r\n", s[n - 1]))
    n--;
  *len = n;
  return s;
}

static bool update_requested(void) {
  const char *v = getenv("ANA_UPDATE_DOCS");
  return v && strcmp(v, "1") == 0;
}

/* ---- loading ---- */

static void test_defaults(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  assert_int_equal(load_env(&cfg, &err, (const char *[]){NULL}), 0);
  assert_int_equal(cfg.bridge.port, 3004);
  assert_int_equal(cfg.rpc.grpc_port, 50051);
  assert_string_equal(cfg.rpc.grpc_host, "0.0.0.0");
  assert_null(cfg.store.mongodb_uri);
  assert_null(cfg.store.elasticsearch_node);
  assert_null(cfg.store.clickhouse_host);
  assert_null(cfg.store.redis_url);
  assert_null(cfg.store.rabbitmq_url);
  assert_string_equal(cfg.store.data_dir, "./data");
  assert_null(cfg.store.reports_dir); /* the folder reports in DATA_DIR */
  assert_string_equal(cfg.store.exports_dir, "./data/exports");
  assert_int_equal(cfg.store.retention_days, 90);
  assert_int_equal(cfg.ingest.batch_size, 1000);
  assert_int_equal(cfg.ingest.processing_interval_ms, 0);
  assert_int_equal(cfg.bridge.stream_buffer_size, 1024);
  assert_int_equal(cfg.rpc.stream_send_queue_max, 256);
  assert_int_equal(cfg.process.log_level, ANA_LOG_INFO);
  assert_int_equal(cfg.process.shutdown_grace_ms, 10000);
  assert_string_equal(cfg.auth.default_account_id, "default");
  assert_int_equal(cfg.rpc.grpc_max_message_bytes, 4194304L);
  assert_int_equal(cfg.rpc.grpc_threads, 0);
  assert_int_equal(cfg.store.search_index_wait_ms, 5000);
  /* A metric stream's coalescing is the largest part of its latency at
   * default settings: it must leave room for the 50 ms real-time target
   * (bench/realtime_latency_bench.py measures the whole path). */
  assert_int_equal(cfg.metrics.metric_stream_interval_ms, 10);
  ana_config_fini(&cfg);
  assert_true(is_zeroed(&cfg));
}

static void test_empty_counts_as_unset(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  assert_int_equal(
      LOAD(&cfg, &err, "PORT=", "MONGODB_URI=", "DATA_DIR=", "LOG_LEVEL=", "PROCESSING_INTERVAL="),
      0);
  assert_int_equal(cfg.bridge.port, 3004);
  assert_null(cfg.store.mongodb_uri);
  assert_string_equal(cfg.store.data_dir, "./data");
  assert_int_equal(cfg.process.log_level, ANA_LOG_INFO);
  assert_int_equal(cfg.ingest.processing_interval_ms, 0);
  ana_config_fini(&cfg);
}

static void test_process_environment(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  setenv("GRPC_PORT", "6000", 1);
  assert_int_equal(ana_config_load(&cfg, NULL, NULL, &err), 0);
  unsetenv("GRPC_PORT");
  assert_int_equal(cfg.rpc.grpc_port, 6000);
  ana_config_fini(&cfg);
}

static void test_ports(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  accepts("PORT=1", &cfg);
  assert_int_equal(cfg.bridge.port, 1);
  ana_config_fini(&cfg);
  accepts("GRPC_PORT=65535", &cfg);
  assert_int_equal(cfg.rpc.grpc_port, 65535);
  ana_config_fini(&cfg);

  assert_int_equal(LOAD(&cfg, &err, "GRPC_PORT=70000"), ANA_ERR_INVALID);
  assert_string_equal(err.message, "GRPC_PORT: \"70000\" is not a port (1-65535)");
  rejects("PORT=0", "is not a port (1-65535)");
  rejects("PORT=65536", NULL);
  rejects("PORT=-1", NULL);
  rejects("PORT=12abc", "\"12abc\"");
  rejects("PORT=abc", NULL);
  rejects("PORT= 80", NULL);
  rejects("PORT=80 ", NULL);
  rejects("PORT=+80", NULL);
  rejects("PORT=0x50", NULL);
  rejects("PORT=99999999999999999999999", NULL);
}

static void test_integers_and_bounds(void **state) {
  struct ana_config cfg;
  (void)state;

  accepts("RETENTION_DAYS=1", &cfg);
  assert_int_equal(cfg.store.retention_days, 1);
  ana_config_fini(&cfg);
  accepts("RETENTION_DAYS=36500", &cfg);
  assert_int_equal(cfg.store.retention_days, 36500);
  ana_config_fini(&cfg);
  rejects("RETENTION_DAYS=0", "is not an integer from 1 to 36500");
  rejects("RETENTION_DAYS=36501", NULL);

  accepts("BATCH_SIZE=100000", &cfg);
  assert_int_equal(cfg.ingest.batch_size, 100000);
  ana_config_fini(&cfg);
  rejects("BATCH_SIZE=0", "\"0\" is not an integer from 1 to 100000");
  rejects("BATCH_SIZE=100001", NULL);
  rejects("BATCH_SIZE=1e3", NULL);
  rejects("BATCH_SIZE=10.5", NULL);

  accepts("STREAM_BUFFER_SIZE=1000000", &cfg);
  assert_int_equal(cfg.bridge.stream_buffer_size, 1000000);
  ana_config_fini(&cfg);
  rejects("STREAM_BUFFER_SIZE=1000001", NULL);
  rejects("STREAM_BUFFER_SIZE=0", NULL);

  accepts("STREAM_SEND_QUEUE_MAX=1", &cfg);
  assert_int_equal(cfg.rpc.stream_send_queue_max, 1);
  ana_config_fini(&cfg);
  rejects("STREAM_SEND_QUEUE_MAX=0", NULL);

  accepts("GRPC_MAX_MESSAGE_BYTES=268435456", &cfg);
  assert_int_equal(cfg.rpc.grpc_max_message_bytes, 268435456L);
  ana_config_fini(&cfg);
  accepts("GRPC_MAX_MESSAGE_BYTES=1024", &cfg);
  assert_int_equal(cfg.rpc.grpc_max_message_bytes, 1024L);
  ana_config_fini(&cfg);
  rejects("GRPC_MAX_MESSAGE_BYTES=1023", "from 1024 to 268435456");
  rejects("GRPC_MAX_MESSAGE_BYTES=268435457", NULL);

  accepts("GRPC_THREADS=256", &cfg);
  assert_int_equal(cfg.rpc.grpc_threads, 256);
  ana_config_fini(&cfg);
  rejects("GRPC_THREADS=257", NULL);
  rejects("GRPC_THREADS=-1", NULL);

  accepts("SEARCH_INDEX_WAIT=0", &cfg); /* a lagging index answers at once */
  assert_int_equal(cfg.store.search_index_wait_ms, 0);
  ana_config_fini(&cfg);
  accepts("SEARCH_INDEX_WAIT=250ms", &cfg);
  assert_int_equal(cfg.store.search_index_wait_ms, 250);
  ana_config_fini(&cfg);
  rejects("SEARCH_INDEX_WAIT=61s", "from 0 to 60000");
}

static void test_durations(void **state) {
  struct ana_config cfg;
  long long ms = -1;
  (void)state;

  accepts("PROCESSING_INTERVAL=250", &cfg);
  assert_int_equal(cfg.ingest.processing_interval_ms, 250);
  ana_config_fini(&cfg);
  accepts("PROCESSING_INTERVAL=0", &cfg);
  assert_int_equal(cfg.ingest.processing_interval_ms, 0);
  ana_config_fini(&cfg);
  accepts("PROCESSING_INTERVAL=250ms", &cfg);
  assert_int_equal(cfg.ingest.processing_interval_ms, 250);
  ana_config_fini(&cfg);
  accepts("PROCESSING_INTERVAL=2s", &cfg);
  assert_int_equal(cfg.ingest.processing_interval_ms, 2000);
  ana_config_fini(&cfg);
  accepts("PROCESSING_INTERVAL=1m", &cfg);
  assert_int_equal(cfg.ingest.processing_interval_ms, 60000);
  ana_config_fini(&cfg);
  rejects("PROCESSING_INTERVAL=61s", "is not a duration from 0 to 60000 ms");
  rejects("PROCESSING_INTERVAL=5h", NULL);
  rejects("PROCESSING_INTERVAL=1.5s", NULL);
  rejects("PROCESSING_INTERVAL=-5", NULL);
  rejects("PROCESSING_INTERVAL=ms", NULL);
  rejects("PROCESSING_INTERVAL=5 ms", NULL);
  rejects("PROCESSING_INTERVAL=99999999999999999999m", NULL);

  accepts("SHUTDOWN_GRACE_MS=10m", &cfg);
  assert_int_equal(cfg.process.shutdown_grace_ms, 600000);
  ana_config_fini(&cfg);
  rejects("SHUTDOWN_GRACE_MS=11m", "from 0 to 600000 ms");

  assert_int_equal(ana_config_parse_duration_ms("15s", &ms), 0);
  assert_int_equal(ms, 15000);
  assert_int_equal(ana_config_parse_duration_ms("9223372036854775807", &ms), 0);
  assert_int_equal(ms, 9223372036854775807LL);
  ms = -1;
  assert_int_equal(ana_config_parse_duration_ms("9223372036854775808", &ms), ANA_ERR_INVALID);
  assert_int_equal(ana_config_parse_duration_ms("153722867280912931m", &ms), ANA_ERR_INVALID);
  assert_int_equal(ana_config_parse_duration_ms("", &ms), ANA_ERR_INVALID);
  assert_int_equal(ana_config_parse_duration_ms("5S", &ms), ANA_ERR_INVALID);
  assert_int_equal(ana_config_parse_duration_ms(NULL, &ms), ANA_ERR_INVALID);
  assert_int_equal(ms, -1);
}

static void test_bools(void **state) {
  static const char *const yes[] = {"true", "TRUE", "True", "1", "yes", "YES"};
  static const char *const no[] = {"false", "FALSE", "0", "no", "No"};
  static const char *const bad[] = {"", "2", "y", "n", "on", "off", "truee", " true"};
  bool b;
  (void)state;

  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    b = false;
    assert_int_equal(ana_config_parse_bool(yes[i], &b), 0);
    assert_true(b);
  }
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    b = true;
    assert_int_equal(ana_config_parse_bool(no[i], &b), 0);
    assert_false(b);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    b = true;
    assert_int_equal(ana_config_parse_bool(bad[i], &b), ANA_ERR_INVALID);
    assert_true(b);
  }
  assert_int_equal(ana_config_parse_bool(NULL, &b), ANA_ERR_INVALID);
}

static void test_log_level(void **state) {
  struct ana_config cfg;
  (void)state;

  accepts("LOG_LEVEL=debug", &cfg);
  assert_int_equal(cfg.process.log_level, ANA_LOG_DEBUG);
  ana_config_fini(&cfg);
  accepts("LOG_LEVEL=WARN", &cfg);
  assert_int_equal(cfg.process.log_level, ANA_LOG_WARN);
  ana_config_fini(&cfg);
  accepts("LOG_LEVEL=error", &cfg);
  assert_int_equal(cfg.process.log_level, ANA_LOG_ERROR);
  ana_config_fini(&cfg);
  rejects("LOG_LEVEL=verbose",
          "LOG_LEVEL: \"verbose\" is not a log level (error, warn, info or debug)");
  rejects("LOG_LEVEL=warning", NULL);
}

static void test_paths(void **state) {
  struct ana_config cfg;
  char long_path[5000];
  (void)state;

  accepts("DATA_DIR=/var/lib/analyticsd", &cfg);
  assert_string_equal(cfg.store.data_dir, "/var/lib/analyticsd");
  ana_config_fini(&cfg);
  accepts("REPORTS_DIR=reports with spaces", &cfg);
  assert_string_equal(cfg.store.reports_dir, "reports with spaces");
  ana_config_fini(&cfg);
  rejects("EXPORTS_DIR=a\nb", "\"a\\x0ab\" is not a directory path");

  memcpy(long_path, "DATA_DIR=", 9);
  memset(long_path + 9, 'd', sizeof long_path - 10);
  long_path[sizeof long_path - 1] = '\0';
  rejects(long_path, "...\" is not a directory path");
}

static void test_urls(void **state) {
  struct ana_config cfg;
  (void)state;

  accepts("MONGODB_URI=mongodb://localhost:27017/analytics", &cfg);
  assert_string_equal(cfg.store.mongodb_uri, "mongodb://localhost:27017/analytics");
  ana_config_fini(&cfg);
  accepts("MONGODB_URI=mongodb+srv://cluster0.example.net/?retryWrites=true", &cfg);
  ana_config_fini(&cfg);
  accepts("ELASTICSEARCH_NODE=http://localhost:9200", &cfg);
  assert_string_equal(cfg.store.elasticsearch_node, "http://localhost:9200");
  ana_config_fini(&cfg);
  accepts("ELASTICSEARCH_NODE=HTTPS://es.example.com", &cfg);
  ana_config_fini(&cfg);
  accepts("REDIS_URL=redis://localhost:6379/0", &cfg);
  assert_string_equal(cfg.store.redis_url, "redis://localhost:6379/0");
  ana_config_fini(&cfg);
  accepts("REDIS_URL=rediss://:token@cache.example.com:6380", &cfg);
  ana_config_fini(&cfg);
  accepts("RABBITMQ_URL=amqp://guest:guest@localhost:5672/", &cfg);
  assert_string_equal(cfg.store.rabbitmq_url, "amqp://guest:guest@localhost:5672/");
  ana_config_fini(&cfg);

  rejects("MONGODB_URI=localhost:27017",
          "MONGODB_URI: \"localhost:27017\" is not a URL starting with mongodb:// or "
          "mongodb+srv://");
  rejects("MONGODB_URI=http://localhost:27017", NULL);
  rejects("MONGODB_URI=mongodb://", NULL);
  rejects("ELASTICSEARCH_NODE=localhost:9200", "http:// or https://");
  rejects("REDIS_URL=http://localhost:6379", "redis:// or rediss://");
  rejects("RABBITMQ_URL=amqp://host name", "amqp:// or amqps://");
  rejects("RABBITMQ_URL=amqp:/host", NULL);
}

static void test_url_password_is_masked(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  assert_int_equal(LOAD(&cfg, &err, "RABBITMQ_URL=ftp://admin:s3cret@mq.example.com/vhost"),
                   ANA_ERR_INVALID);
  assert_null(strstr(err.message, "s3cret"));
  assert_non_null(strstr(err.message, "\"ftp://admin:***@mq.example.com/vhost\""));

  assert_int_equal(LOAD(&cfg, &err, "CLICKHOUSE_HOST=tcp://u:pw@@x:9000"), ANA_ERR_INVALID);
  assert_null(strstr(err.message, "pw"));
}

/* Each good value of the string variable name is accepted and read back
 * from the char * member at offset of struct ana_config; each bad one is
 * rejected with a message containing fragment. */
static void check_values(const char *name, size_t offset, const char *const *good, size_t n_good,
                         const char *const *bad, size_t n_bad, const char *fragment) {
  struct ana_config cfg;
  char assignment[128];
  for (size_t i = 0; i < n_good; i++) {
    snprintf(assignment, sizeof assignment, "%s=%s", name, good[i]);
    accepts(assignment, &cfg);
    assert_string_equal(*(char **)((char *)&cfg + offset), good[i]);
    ana_config_fini(&cfg);
  }
  for (size_t i = 0; i < n_bad; i++) {
    snprintf(assignment, sizeof assignment, "%s=%s", name, bad[i]);
    rejects(assignment, fragment);
  }
}

static void test_clickhouse_host(void **state) {
  static const char *const good[] = {
      "localhost",
      "localhost:8123",
      "127.0.0.1:8123",
      "ch-1.internal",
      "[::1]:8123",
      "[::1]",
      "::1",
      "http://localhost:8123",
      "https://user:pw@ch.example.com:8443/",
      "HTTP://ch",
  };
  static const char *const bad[] = {
      "localhost:0",
      "localhost:99999",
      "host:abc",
      "tcp://localhost:9000",
      "http://",
      "a b",
      ":8123",
      "[::1]:",
      "[::1",
      "-host",
      "http://host:port",
      "host/path",
  };
  (void)state;
  check_values("CLICKHOUSE_HOST", offsetof(struct ana_config, store.clickhouse_host), good,
               sizeof good / sizeof good[0], bad, sizeof bad / sizeof bad[0],
               "is not a host, host:port or http(s):// URL");
}

static void test_grpc_host(void **state) {
  static const char *const good[] = {"0.0.0.0",   "::",      "[::]",         "localhost",
                                     "127.0.0.1", "fe80::1", "grpc.internal"};
  static const char *const bad[] = {"a b", "host:50051", "-bad", "[::", "http://x"};
  (void)state;
  check_values("GRPC_HOST", offsetof(struct ana_config, rpc.grpc_host), good,
               sizeof good / sizeof good[0], bad, sizeof bad / sizeof bad[0],
               "is not a host name or IP address");
}

static void test_account_id(void **state) {
  struct ana_config cfg;
  char assignment[256];
  (void)state;

  accepts("DEFAULT_ACCOUNT_ID=acct_1.eu:team-7", &cfg);
  assert_string_equal(cfg.auth.default_account_id, "acct_1.eu:team-7");
  ana_config_fini(&cfg);

  strcpy(assignment, "DEFAULT_ACCOUNT_ID=");
  memset(assignment + strlen(assignment), 'a', 128);
  assignment[19 + 128] = '\0';
  accepts(assignment, &cfg);
  assert_int_equal(strlen(cfg.auth.default_account_id), 128);
  ana_config_fini(&cfg);
  strcat(assignment, "a");
  rejects(assignment, "is not an account id (1 to 128 characters");

  rejects("DEFAULT_ACCOUNT_ID=a b", NULL);
  rejects("DEFAULT_ACCOUNT_ID=a/b", NULL);
  rejects("DEFAULT_ACCOUNT_ID=caf\xc3\xa9", NULL);
}

/* An item accepted by test_comma_lists: "a" or "bb". */
static bool list_item_ok(const char *item, size_t len) {
  return (len == 1 && item[0] == 'a') || (len == 2 && strncmp(item, "bb", 2) == 0);
}

static void test_comma_lists(void **state) {
  static const char *const good[] = {"a", "a,bb", " a , bb ", "a bb", ",,a,,", "bb,a,a"};
  static const char *const bad[] = {"", " ", ",", ", ,", "c", "a,c", "abb", "a,b b", "aa"};
  struct ana_config cfg;
  (void)state;

  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    if (!ana_config_valid_list(good[i], list_item_ok))
      fail_msg("\"%s\" rejected", good[i]);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (ana_config_valid_list(bad[i], list_item_ok))
      fail_msg("\"%s\" accepted", bad[i]);

  /* The items one at a time. */
  const char *cursor = " ,a, bb ,", *item;
  size_t len;
  assert_non_null(item = ana_config_list_next(&cursor, &len));
  assert_int_equal(len, 1);
  assert_memory_equal(item, "a", 1);
  assert_non_null(item = ana_config_list_next(&cursor, &len));
  assert_int_equal(len, 2);
  assert_memory_equal(item, "bb", 2);
  assert_null(ana_config_list_next(&cursor, &len));
  assert_null(ana_config_list_next(&cursor, &len));

  /* The rows that use it. */
  accepts("JWT_ALGORITHMS=HS256, ES256", &cfg);
  assert_string_equal(cfg.auth.jwt_algorithms, "HS256, ES256");
  ana_config_fini(&cfg);
  rejects("JWT_ALGORITHMS=HS256,none", "a comma-separated list of HS256, RS256, ES256");
  rejects("JWT_ALGORITHMS=,", NULL);
  accepts("CORS_ALLOWED_ORIGINS=https://app.example.com, http://localhost:3000", &cfg);
  ana_config_fini(&cfg);
  accepts("CORS_ALLOWED_ORIGINS=*", &cfg);
  ana_config_fini(&cfg);
  rejects("CORS_ALLOWED_ORIGINS=https://a.example.com/path", "a comma-separated list of origins");
  rejects("CORS_ALLOWED_ORIGINS=https://", NULL);
  rejects("CORS_ALLOWED_ORIGINS=ftp://x", NULL);
}

static void test_first_error_wins_and_cfg_stays_zeroed(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  memset(&cfg, 0xab, sizeof cfg);
  assert_int_equal(LOAD(&cfg, &err, "PORT=1", "MONGODB_URI=mongodb://m", "BATCH_SIZE=x"),
                   ANA_ERR_INVALID);
  assert_true(is_zeroed(&cfg));
  assert_non_null(strstr(err.message, "BATCH_SIZE"));
  ana_config_fini(&cfg);
  ana_config_fini(&cfg);
  ana_config_fini(NULL);
}

static void test_value_in_message_is_cut_and_escaped(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  char assignment[2100];
  (void)state;

  strcpy(assignment, "BATCH_SIZE=");
  memset(assignment + 11, '9', 2000);
  assignment[2011] = '\0';
  assert_int_equal(load_env(&cfg, &err, (const char *[]){assignment, NULL}), ANA_ERR_INVALID);
  assert_true(strlen(err.message) < 200);
  assert_non_null(strstr(err.message, "...\" is not an integer"));

  rejects("BATCH_SIZE=1\"2\\3", "\"1\\\"2\\\\3\"");
}

static void test_allocation_failures(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  int rc = -1;
  long n;
  (void)state;

  for (n = 1; n < 100; n++) {
    ana_alloc_fail_after(n);
    rc = LOAD(&cfg, &err, "MONGODB_URI=mongodb://m", "REDIS_URL=redis://r");
    ana_alloc_fail_after(0);
    if (rc == 0)
      break;
    assert_int_equal(rc, ANA_ERR_NOMEM);
    assert_true(is_zeroed(&cfg));
  }
  assert_int_equal(rc, 0);
  assert_true(n > 1);
  assert_string_equal(cfg.store.redis_url, "redis://r");
  ana_config_fini(&cfg);
}

/* ---- not-yet-supported backends ---- */

struct reported {
  char names[8][64];
  char whats[8][256];
  int count;
};

static void record_unsupported(const char *name, const char *what, void *ctx) {
  struct reported *r = ctx;
  assert_true(r->count < 8);
  snprintf(r->names[r->count], sizeof r->names[0], "%s", name);
  snprintf(r->whats[r->count], sizeof r->whats[0], "%s", what);
  r->count++;
}

static void test_unsupported_reporting(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  struct reported r = {0};
  (void)state;

  assert_int_equal(LOAD(&cfg, &err, "PORT=8080"), 0);
  ana_config_each_unsupported(&cfg, record_unsupported, &r);
  assert_int_equal(r.count, 0);
  ana_config_fini(&cfg);

  assert_int_equal(LOAD(&cfg, &err, "MONGODB_URI=mongodb://db:27017", "REDIS_URL=redis://r",
                        "CLICKHOUSE_HOST=ch:8123", "ELASTICSEARCH_NODE=http://es:9200",
                        "RABBITMQ_URL=amqp://mq"),
                   0);
  ana_config_each_unsupported(&cfg, record_unsupported, &r);
  /* CLICKHOUSE_HOST is supported: the ClickHouse event store. */
  assert_int_equal(r.count, 4);
  assert_string_equal(r.names[0], "MONGODB_URI");
  assert_string_equal(r.whats[0],
                      "the MongoDB backend is not yet supported; using the embedded store");
  assert_string_equal(r.names[1], "ELASTICSEARCH_NODE");
  assert_string_equal(r.names[2], "REDIS_URL");
  assert_non_null(strstr(r.whats[2], "not yet supported"));
  assert_string_equal(r.names[3], "RABBITMQ_URL");
  ana_config_fini(&cfg);
}

static void test_unsupported_still_validated(void **state) {
  (void)state;
  rejects("MONGODB_URI=not a uri", NULL);
  rejects("CLICKHOUSE_HOST=ch:0", NULL);
}

/* Every bad variable is named, not just the first, and the struct stays zeroed. */
static void test_every_bad_variable_is_reported(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  assert_int_equal(LOAD(&cfg, &err, "PORT=0", "GRPC_PORT=70000", "DATA_DIR=/tmp/x",
                        "TIMESTAMP_POLICY=sometimes", "LOG_LEVEL=loud"),
                   ANA_ERR_INVALID);
  assert_true(is_zeroed(&cfg));
  assert_non_null(strstr(err.message, "PORT: \"0\""));
  assert_non_null(strstr(err.message, "; GRPC_PORT: \"70000\""));
  assert_non_null(strstr(err.message, "; TIMESTAMP_POLICY: "));
  assert_non_null(strstr(err.message, "; LOG_LEVEL: "));
}

static size_t count_occurrences(const char *text, const char *key) {
  size_t n = 0, key_len = strlen(key);
  for (size_t i = 0; text[i]; i++)
    n += strncmp(text + i, key, key_len) == 0;
  return n;
}

/* No two modules declare the same variable. */
static void test_names_are_unique(void **state) {
  char *md = capture(ana_config_write_markdown);
  char key[64];
  (void)state;

  for (size_t i = 0; i < NAME_COUNT; i++) {
    snprintf(key, sizeof key, "\n| `%s` | ", all_names[i]);
    size_t n = count_occurrences(md, key);
    if (n != 1)
      fail_msg("%s is declared %zu times", all_names[i], n);
  }
  free(md);
}

static void test_ingestion_values(void **state) {
  struct ana_config cfg;
  struct ana_error err = {0};
  (void)state;

  assert_int_equal(LOAD(&cfg, &err, "EVENT_MAX_FUTURE=2h", "TIMESTAMP_POLICY=reject",
                        "TRUSTED_PROXIES=10.0.0.0/8, 192.168.1.1,::1,fd00::/8"),
                   0);
  assert_int_equal(cfg.ingest.event_max_future_ms, 7200000L);
  assert_string_equal(cfg.ingest.timestamp_policy, "reject");
  assert_string_equal(cfg.process.trusted_proxies, "10.0.0.0/8, 192.168.1.1,::1,fd00::/8");
  ana_config_fini(&cfg);
  assert_int_equal(LOAD(&cfg, &err, "TIMESTAMP_POLICY=sometimes"), ANA_ERR_INVALID);
  assert_non_null(strstr(err.message, "TIMESTAMP_POLICY"));
  assert_int_equal(LOAD(&cfg, &err, "TRUSTED_PROXIES=10.0.0.0/33"), ANA_ERR_INVALID);
  assert_non_null(strstr(err.message, "TRUSTED_PROXIES"));
  assert_int_equal(LOAD(&cfg, &err, "TRUSTED_PROXIES=proxy.local"), ANA_ERR_INVALID);
  assert_int_equal(LOAD(&cfg, &err, "TRUSTED_PROXIES=10.0.0.0/-1"), ANA_ERR_INVALID);
  assert_int_equal(LOAD(&cfg, &err, "TRUSTED_PROXIES=10.0.0.1,,10.0.0.2"), ANA_ERR_INVALID);
  assert_int_equal(LOAD(&cfg, &err, "EVENT_MAX_BYTES=100"), ANA_ERR_INVALID);
  assert_non_null(strstr(err.message, "EVENT_MAX_BYTES"));
}

/* ---- generated documentation ---- */

static void test_help_lists_every_variable(void **state) {
  char *help = capture(ana_config_write_help);
  char key[64];
  (void)state;

  for (size_t i = 0; i < NAME_COUNT; i++) {
    snprintf(key, sizeof key, "\n  %s (", all_names[i]);
    if (!strstr(help, key))
      fail_msg("--help lacks %s", all_names[i]);
  }
  assert_non_null(strstr(help, "  PORT (default 3004)\n"));
  assert_non_null(strstr(help, "  MONGODB_URI (unset by default)\n"));
  assert_non_null(strstr(help, "Not yet supported"));
  for (char *line = help; *line;) {
    size_t len = strcspn(line, "\n");
    if (len > 79)
      fail_msg("--help line longer than 79 columns: %.*s", (int)len, line);
    line += len + (line[len] == '\n');
  }
  free(help);
}

static void test_markdown_has_one_row_per_variable(void **state) {
  char *md = capture(ana_config_write_markdown);
  char key[64];
  size_t rows = 0;
  (void)state;

  assert_memory_equal(md, "| Variable | Default | Description |\n|---|---|---|\n", 49);
  for (const char *p = md; (p = strchr(p, '\n')) != NULL; p++)
    rows++;
  assert_int_equal(rows, NAME_COUNT + 2);
  for (size_t i = 0; i < NAME_COUNT; i++) {
    snprintf(key, sizeof key, "\n| `%s` | ", all_names[i]);
    if (!strstr(md, key))
      fail_msg("markdown table lacks %s", all_names[i]);
  }
  assert_non_null(strstr(md, "| `PORT` | `3004` | "));
  assert_non_null(strstr(md, "| `REDIS_URL` | unset | "));
  assert_non_null(strstr(md, "A-Z a-z 0-9 \\_ . : -"));
  free(md);
}

/* Every assignment in .env.example loads, and gives the defaults. */
static void test_env_example_round_trips(void **state) {
  char *text = capture(ana_config_write_env_example);
  const char *env[NAME_COUNT + 2];
  size_t n = 0;
  struct ana_config cfg, defaults;
  struct ana_error err = {0};
  (void)state;

  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#')
      continue;
    assert_non_null(strchr(line, '='));
    assert_true(n < NAME_COUNT + 1);
    env[n++] = line;
  }
  env[n] = NULL;
  assert_int_equal(n, NAME_COUNT);
  assert_int_equal(load_env(&cfg, &err, env), 0);
  assert_int_equal(load_env(&defaults, &err, (const char *[]){NULL}), 0);
  assert_int_equal(cfg.bridge.port, defaults.bridge.port);
  assert_string_equal(cfg.store.data_dir, defaults.store.data_dir);
  assert_null(cfg.store.mongodb_uri);
  assert_int_equal(cfg.rpc.grpc_max_message_bytes, defaults.rpc.grpc_max_message_bytes);
  ana_config_fini(&cfg);
  ana_config_fini(&defaults);
  free(text);
}

static void test_env_example_file_is_current(void **state) {
  const char *path = ANA_SOURCE_DIR "/.env.example";
  char *want = capture(ana_config_write_env_example);
  char *have;
  (void)state;

  if (update_requested())
    write_file(path, want);
  have = read_file(path);
  if (!have)
    fail_msg("%s is missing; run this test with ANA_UPDATE_DOCS=1 to write it", path);
  if (strcmp(have, want) != 0)
    fail_msg("%s differs from the configuration table; run this test with "
             "ANA_UPDATE_DOCS=1 to rewrite it",
             path);
  free(have);
  free(want);
}

static void test_readme_table_is_current(void **state) {
  const char *path = ANA_SOURCE_DIR "/README.md";
  char *readme = read_file(path), *want, *begin, *end;
  const char *inside, *expected;
  size_t inside_len, want_len;
  (void)state;

  if (!readme)
    skip();
  begin = strstr(readme, README_BEGIN);
  end = begin ? strstr(begin, README_END) : NULL;
  if (!begin || !end) {
    free(readme);
    skip();
  }
  begin += strlen(README_BEGIN);
  want = capture(ana_config_write_markdown);

  if (update_requested()) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(readme, 1, (size_t)(begin - readme), f);
    fprintf(f, "\n%s", want);
    fputs(end, f);
    assert_int_equal(fclose(f), 0);
    free(readme);
    readme = read_file(path);
    begin = strstr(readme, README_BEGIN) + strlen(README_BEGIN);
    end = strstr(begin, README_END);
  }

  inside_len = (size_t)(end - begin);
  inside = trim(begin, &inside_len);
  want_len = strlen(want);
  expected = trim(want, &want_len);
  if (inside_len != want_len || memcmp(inside, expected, want_len) != 0)
    fail_msg("the table between %s and %s in %s differs from the configuration table; run "
             "this test with ANA_UPDATE_DOCS=1 to rewrite it",
             README_BEGIN, README_END, path);
  free(want);
  free(readme);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ingestion_values),
      cmocka_unit_test(test_every_bad_variable_is_reported),
      cmocka_unit_test(test_names_are_unique),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_empty_counts_as_unset),
      cmocka_unit_test(test_process_environment),
      cmocka_unit_test(test_ports),
      cmocka_unit_test(test_integers_and_bounds),
      cmocka_unit_test(test_durations),
      cmocka_unit_test(test_bools),
      cmocka_unit_test(test_log_level),
      cmocka_unit_test(test_paths),
      cmocka_unit_test(test_urls),
      cmocka_unit_test(test_url_password_is_masked),
      cmocka_unit_test(test_clickhouse_host),
      cmocka_unit_test(test_grpc_host),
      cmocka_unit_test(test_account_id),
      cmocka_unit_test(test_comma_lists),
      cmocka_unit_test(test_first_error_wins_and_cfg_stays_zeroed),
      cmocka_unit_test(test_value_in_message_is_cut_and_escaped),
      cmocka_unit_test(test_allocation_failures),
      cmocka_unit_test(test_unsupported_reporting),
      cmocka_unit_test(test_unsupported_still_validated),
      cmocka_unit_test(test_help_lists_every_variable),
      cmocka_unit_test(test_markdown_has_one_row_per_variable),
      cmocka_unit_test(test_env_example_round_trips),
      cmocka_unit_test(test_env_example_file_is_current),
      cmocka_unit_test(test_readme_table_is_current),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
