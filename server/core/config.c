/* The configuration table, and everything made from it: loading, --help, .env.example, README. */
#include "ana_config.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

enum var_type {
  VAR_STRING,    /* free text, optionally checked by var.check */
  VAR_PATH,      /* a directory or file path */
  VAR_URL,       /* scheme://..., the scheme one of var.schemes */
  VAR_INT,       /* a decimal integer within [min, max] */
  VAR_PORT,      /* an integer 1-65535 */
  VAR_DURATION,  /* milliseconds within [min, max]; suffixes ms, s, m, h accepted */
  VAR_LOG_LEVEL, /* error, warn, info, debug */
  VAR_BOOL,      /* true/false, 1/0, yes/no */
};

enum var_status {
  VAR_SUPPORTED,
  VAR_NOT_YET_SUPPORTED, /* accepted and checked, then ignored with a warning */
};

/* One environment variable. */
struct var {
  const char *name;
  enum var_type type;
  const char *def;                  /* default as a user would write it; "" = unset */
  const char *help;                 /* one or more sentences, each ending with '.' */
  long long min, max;               /* VAR_INT, VAR_DURATION */
  const char *schemes;              /* VAR_URL: accepted schemes, separated by spaces */
  bool (*check)(const char *value); /* VAR_STRING: extra validation, or NULL */
  const char *expect;               /* VAR_STRING with check: what check accepts */
  enum var_status status;
  const char *feature; /* VAR_NOT_YET_SUPPORTED: "the MongoDB backend" */
  const char *instead; /* VAR_NOT_YET_SUPPORTED: what happens meanwhile */
  size_t offset, size; /* where in struct ana_config, and how big */
};

#define FIELD(member)                                                                              \
  .offset = offsetof(struct ana_config, member), .size = sizeof(((struct ana_config *)0)->member)

#define PATH_MAX_LEN 4095
#define ACCOUNT_ID_MAX 128
#define QUOTED_VALUE_MAX 64

static bool valid_bind_host(const char *s);
static bool valid_clickhouse_host(const char *s);
static bool valid_account_id(const char *s);
static bool valid_origins(const char *s);
static bool valid_grpc_target(const char *s);
static bool valid_timestamp_policy(const char *s);
static bool valid_proxy_list(const char *s);

static const struct var vars[] = {
    /* Listeners. */
    {.name = "PORT",
     .type = VAR_PORT,
     .def = "3004",
     .help = "Port of the REST and WebSocket API (the bridge).",
     FIELD(port)},
    {.name = "GRPC_PORT",
     .type = VAR_PORT,
     .def = "50051",
     .help = "Port of the gRPC API.",
     FIELD(grpc_port)},
    {.name = "GRPC_HOST",
     .type = VAR_STRING,
     .def = "0.0.0.0",
     .help = "Address the gRPC server binds to.",
     .check = valid_bind_host,
     .expect = "a host name or IP address (e.g. 0.0.0.0, ::, 127.0.0.1)",
     FIELD(grpc_host)},
    {.name = "HTTP_MAX_BODY_BYTES",
     .type = VAR_INT,
     .def = "4194304",
     .min = 1024,
     .max = 268435456,
     .help = "Largest REST request body accepted, in bytes (larger: 413).",
     FIELD(http_max_body_bytes)},
    {.name = "HTTP_BODY_BUDGET_MB",
     .type = VAR_INT,
     .def = "128",
     .min = 1,
     .max = 1048576,
     .help = "Memory, in MiB, for all REST request bodies being received or decoded together; "
             "past it a new body is refused with 503 and Retry-After.",
     FIELD(http_body_budget_mb)},
    {.name = "HTTP_BODY_MIN_RATE",
     .type = VAR_INT,
     .def = "1024",
     .min = 1,
     .max = 1073741824,
     .help = "Slowest a REST request body may arrive, in bytes per second averaged over "
             "HTTP_BODY_RATE_WINDOW; a slower one ends with 408 and the connection is closed.",
     FIELD(http_body_min_rate)},
    {.name = "HTTP_BODY_RATE_WINDOW",
     .type = VAR_DURATION,
     .def = "10000",
     .min = 100,
     .max = 600000,
     .help = "The window over which HTTP_BODY_MIN_RATE is averaged.",
     FIELD(http_body_rate_window_ms)},
    {.name = "HTTP_DECODE_THREADS",
     .type = VAR_INT,
     .def = "2",
     .min = 0,
     .max = 64,
     .help = "Threads decoding REST request bodies over 64 KiB (JSON into the request), so that "
             "large bodies do not hold up other requests; 0 decodes every body on the bridge's "
             "own thread.",
     FIELD(http_decode_threads)},
    {.name = "CORS_ALLOWED_ORIGINS",
     .type = VAR_STRING,
     .def = "",
     .help = "Browser origins allowed to call the REST API (CORS); unset means none.",
     .check = valid_origins,
     .expect = "a comma-separated list of origins (e.g. https://app.example.com), or *",
     FIELD(cors_allowed_origins)},
    {.name = "WS_SLOW_CONSUMER_MS",
     .type = VAR_DURATION,
     .def = "10000",
     .min = 100,
     .max = 600000,
     .help = "A WebSocket client whose STREAM_BUFFER_SIZE messages stay unread this long is "
             "disconnected (close code 1008).",
     FIELD(ws_slow_consumer_ms)},
    {.name = "STREAM_QUEUE_BUDGET_MB",
     .type = VAR_INT,
     .def = "128",
     .min = 1,
     .max = 1048576,
     .help = "Memory, in MiB, for the messages queued on all WebSocket connections together; "
             "past it the connection with the most queued is closed (close code 1008).",
     FIELD(stream_queue_budget_mb)},
    {.name = "WEB_ROOT",
     .type = VAR_PATH,
     .def = "",
     .help = "Directory holding the live dashboard's files (index.html, app.js, app.css), served "
             "at / and /dashboard; unset serves the copy built into the binary.",
     FIELD(web_root)},
    {.name = "RESTBRIDGE_UPSTREAM",
     .type = VAR_STRING,
     .def = "",
     .help = "analytics-restbridge only (the remote REST bridge): the gRPC address of the "
             "analyticsd it forwards to; its --upstream option wins. analyticsd ignores it.",
     .check = valid_grpc_target,
     .expect = "a gRPC target: host:port or dns:///host:port",
     FIELD(restbridge_upstream)},

    /* Remote backends. */
    {.name = "MONGODB_URI",
     .type = VAR_URL,
     .def = "",
     .help = "MongoDB connection string, for the catalog of metrics, reports and alerts.",
     .schemes = "mongodb mongodb+srv",
     .status = VAR_NOT_YET_SUPPORTED,
     .feature = "the MongoDB backend",
     .instead = "using the embedded store",
     FIELD(mongodb_uri)},
    {.name = "ELASTICSEARCH_NODE",
     .type = VAR_URL,
     .def = "",
     .help = "Elasticsearch URL, for event search.",
     .schemes = "http https",
     .status = VAR_NOT_YET_SUPPORTED,
     .feature = "the Elasticsearch backend",
     .instead = "using the embedded store",
     FIELD(elasticsearch_node)},
    {.name = "CLICKHOUSE_HOST",
     .type = VAR_STRING,
     .def = "",
     .help = "ClickHouse server, for events and analytics queries.",
     .check = valid_clickhouse_host,
     .expect = "a host, host:port or http(s):// URL (e.g. localhost:8123)",
     .status = VAR_NOT_YET_SUPPORTED,
     .feature = "the ClickHouse backend",
     .instead = "using the embedded store",
     FIELD(clickhouse_host)},
    {.name = "REDIS_URL",
     .type = VAR_URL,
     .def = "",
     .help = "Redis connection URL, for state shared between instances.",
     .schemes = "redis rediss",
     .status = VAR_NOT_YET_SUPPORTED,
     .feature = "the Redis integration",
     .instead = "running as a single instance",
     FIELD(redis_url)},
    {.name = "RABBITMQ_URL",
     .type = VAR_URL,
     .def = "",
     .help = "RabbitMQ connection URL, for events passed between instances.",
     .schemes = "amqp amqps",
     .status = VAR_NOT_YET_SUPPORTED,
     .feature = "the RabbitMQ integration",
     .instead = "running as a single instance",
     FIELD(rabbitmq_url)},

    /* Storage. */
    {.name = "DATA_DIR",
     .type = VAR_PATH,
     .def = "./data",
     .help = "Directory of the embedded store.",
     FIELD(data_dir)},
    {.name = "REPORTS_DIR",
     .type = VAR_PATH,
     .def = "./data/reports",
     .help = "Directory where generated reports are stored.",
     FIELD(reports_dir)},
    {.name = "EXPORTS_DIR",
     .type = VAR_PATH,
     .def = "./data/exports",
     .help = "Directory where data exports are written.",
     FIELD(exports_dir)},
    {.name = "RETENTION_DAYS",
     .type = VAR_INT,
     .def = "90",
     .min = 1,
     .max = 36500,
     .help = "Days events are kept before they are deleted.",
     FIELD(retention_days)},

    /* Processing. */
    {.name = "BATCH_SIZE",
     .type = VAR_INT,
     .def = "1000",
     .min = 1,
     .max = 100000,
     .help = "Most events written by one group commit.",
     FIELD(batch_size)},
    {.name = "PROCESSING_INTERVAL",
     .type = VAR_DURATION,
     .def = "0",
     .min = 0,
     .max = 60000,
     .help = "How long a group commit waits for more events while requests are sharing "
             "commits; 0 starts the next commit at once (requests arriving during a commit "
             "still share the next one).",
     FIELD(processing_interval_ms)},
    {.name = "STREAM_BUFFER_SIZE",
     .type = VAR_INT,
     .def = "1024",
     .min = 1,
     .max = 1000000,
     .help = "Updates held for each real-time subscriber, waiting in the server and queued by "
             "its transport together (the WebSocket queue of a connection is this size too); "
             "beyond it live events are dropped and counted in the next aggregate snapshot.",
     FIELD(stream_buffer_size)},
    {.name = "REALTIME_AGGREGATE_INTERVAL",
     .type = VAR_DURATION,
     .def = "1000",
     .min = 10,
     .max = 60000,
     .help = "How often each analytics stream subscriber gets an aggregate snapshot (events per "
             "second by eventType and eventName over the last second).",
     FIELD(realtime_aggregate_interval_ms)},
    {.name = "REALTIME_SLOW_CONSUMER_MS",
     .type = VAR_DURATION,
     .def = "10000",
     .min = 100,
     .max = 600000,
     .help = "An analytics stream subscriber that stays behind (its STREAM_BUFFER_SIZE updates "
             "full) this long is ended with RESOURCE_EXHAUSTED (a WebSocket closes with 1008 and "
             "the reason).",
     FIELD(realtime_slow_consumer_ms)},
    {.name = "METRIC_STREAM_INTERVAL",
     .type = VAR_DURATION,
     .def = "10",
     .min = 0,
     .max = 60000,
     .help = "A live metric stream (StreamMetric, /ws/metrics/{id}) sends at most one update per "
             "group this often, with the latest value; 0 sends one after each commit.",
     FIELD(metric_stream_interval_ms)},
    {.name = "METRIC_STREAM_HISTORY",
     .type = VAR_INT,
     .def = "60",
     .min = 1,
     .max = 10000,
     .help = "Closed buckets whose final values each live metric stream keeps in memory for "
             "clients that resume (afterSequence); older ones are recomputed from the events.",
     FIELD(metric_stream_history)},
    {.name = "METRIC_STREAMS_PER_PEER",
     .type = VAR_INT,
     .def = "32",
     .min = 1,
     .max = 100000,
     .help = "Live metric streams (StreamMetric, /ws/metrics/{id}) one client address may hold "
             "open at once; further ones get RESOURCE_EXHAUSTED (a WebSocket closes with 1008).",
     FIELD(metric_streams_per_peer)},
    {.name = "ROLLUP_CACHE_MB",
     .type = VAR_INT,
     .def = "256",
     .min = 0,
     .max = 1048576,
     .help = "Memory, in MiB, for metric rollup cells kept in memory: the rollup thread loads "
             "the cells queries read and updates them with every commit, so GetMetricData "
             "answers without reading them from the database; beyond it the least recently "
             "read are dropped and read from the database again. 0 keeps none.",
     FIELD(rollup_cache_mb)},
    {.name = "WAL_CHECKPOINT_MB",
     .type = VAR_INT,
     .def = "128",
     .min = 1,
     .max = 65536,
     .help = "MiB appended to the local database's WAL after which a checkpoint copies them "
             "into the database (in the background; event commits are held only while the "
             "last few pages are copied, so that the WAL starts over). Fewer checkpoints "
             "disturb commits less often; the WAL file grows to about this size.",
     FIELD(wal_checkpoint_mb)},
    {.name = "STORE_MIN_FREE_MB",
     .type = VAR_INT,
     .def = "16",
     .min = 0,
     .max = 1048576,
     .help = "Free space, in MiB, DATA_DIR's filesystem must keep: below it (checked every "
             "second) event writes answer UNAVAILABLE and readiness (gRPC health \"\", REST "
             "/health) is NOT_SERVING / 503 while reads go on. 0 disables the check.",
     FIELD(store_min_free_mb)},
    {.name = "STREAM_SEND_QUEUE_MAX",
     .type = VAR_INT,
     .def = "256",
     .min = 1,
     .max = 1000000,
     .help = "Most messages queued for sending on one outbound stream.",
     FIELD(stream_send_queue_max)},

    /* Ingestion. */
    {.name = "EVENT_MAX_BYTES",
     .type = VAR_INT,
     .def = "32768",
     .min = 256,
     .max = 4194304,
     .help = "Largest event accepted, in bytes of its serialized form.",
     FIELD(event_max_bytes)},
    {.name = "EVENT_MAX_PROPERTIES",
     .type = VAR_INT,
     .def = "256",
     .min = 1,
     .max = 100000,
     .help = "Most properties in one event, counting nested keys.",
     FIELD(event_max_properties)},
    {.name = "EVENT_MAX_DEPTH",
     .type = VAR_INT,
     .def = "8",
     .min = 1,
     .max = 64,
     .help = "Deepest nesting of objects and lists in event properties.",
     FIELD(event_max_depth)},
    {.name = "BATCH_MAX_EVENTS",
     .type = VAR_INT,
     .def = "1000",
     .min = 1,
     .max = 100000,
     .help = "Most events in one batch request or stream message.",
     FIELD(batch_max_events)},
    {.name = "BATCH_MAX_BYTES",
     .type = VAR_INT,
     .def = "4194304",
     .min = 1024,
     .max = 268435456,
     .help = "Largest batch request or stream message, in bytes.",
     FIELD(batch_max_bytes)},
    {.name = "EVENT_MAX_FUTURE",
     .type = VAR_DURATION,
     .def = "24h",
     .min = 0,
     .max = 31536000000LL,
     .help = "How far in the future (after skew correction) an event timestamp may be.",
     FIELD(event_max_future_ms)},
    {.name = "TIMESTAMP_POLICY",
     .type = VAR_STRING,
     .def = "correct",
     .help = "What happens to an event whose timestamp is too far in the future: correct "
             "stores it at the time it was received (answer CORRECTED), reject refuses it "
             "(REJECTED). Events older than RETENTION_DAYS are always rejected.",
     .check = valid_timestamp_policy,
     .expect = "correct or reject",
     FIELD(timestamp_policy)},
    {.name = "CLOCK_SKEW_TOLERANCE",
     .type = VAR_DURATION,
     .def = "2000",
     .min = 0,
     .max = 3600000,
     .help = "When an event carries sentAt and the client clock differs from the server's "
             "by more than this, its timestamp is shifted by the difference (answer CORRECTED).",
     FIELD(clock_skew_tolerance_ms)},
    {.name = "TRUSTED_PROXIES",
     .type = VAR_STRING,
     .def = "",
     .help = "Comma-separated IP addresses or CIDR ranges of proxies whose X-Forwarded-For "
             "header is believed for context.ip and for the client address of per-client limits "
             "(GRPC_STREAMS_PER_PEER, METRIC_STREAMS_PER_PEER).",
     .check = valid_proxy_list,
     .expect = "IP addresses or CIDR ranges separated by commas",
     FIELD(trusted_proxies)},
    {.name = "INGEST_QUEUE_MAX",
     .type = VAR_INT,
     .def = "100000",
     .min = 1,
     .max = 10000000,
     .help = "Most events waiting for a commit; beyond it requests get RESOURCE_EXHAUSTED.",
     FIELD(ingest_queue_max)},
    {.name = "INGEST_STREAM_MAX_IN_FLIGHT",
     .type = VAR_INT,
     .def = "16",
     .min = 1,
     .max = 10000,
     .help = "Batches of one ingest stream being committed at once; reading pauses beyond it.",
     FIELD(ingest_stream_max_in_flight)},
    {.name = "SEARCH_MAX_PAGE_SIZE",
     .type = VAR_INT,
     .def = "1000",
     .min = 1,
     .max = 100000,
     .help = "Largest page of events a search returns (the default page is 50).",
     FIELD(search_max_page_size)},
    {.name = "EVENT_NAMES_MAX",
     .type = VAR_INT,
     .def = "10000",
     .min = 1,
     .max = 1000000,
     .help = "Event names kept per account in its catalog (GET /api/events/names); events with "
             "further names are stored and counted but their names are not added.",
     FIELD(event_names_max)},
    {.name = "SEARCH_INDEX_WAIT",
     .type = VAR_DURATION,
     .def = "5s",
     .min = 0,
     .max = 60000,
     .help = "Longest wait of a free-text search for the search index to reach the last "
             "acknowledged event (it is normally at most 100 ms behind); past it the search "
             "answers UNAVAILABLE, saying how far the index is.",
     FIELD(search_index_wait_ms)},
    {.name = "RETENTION_SWEEP_INTERVAL",
     .type = VAR_DURATION,
     .def = "60s",
     .min = 100,
     .max = 86400000,
     .help = "How often expired events are deleted, in small chunks between commits.",
     FIELD(retention_sweep_interval_ms)},

    /* Server. */
    {.name = "GRPC_MAX_MESSAGE_BYTES",
     .type = VAR_INT,
     .def = "4194304",
     .min = 1024,
     .max = 268435456,
     .help = "Largest request message accepted, in bytes.",
     FIELD(grpc_max_message_bytes)},
    {.name = "PROTO_MAX_DEPTH",
     .type = VAR_INT,
     .def = "100",
     .min = 1,
     .max = 1000,
     .help = "Deepest nesting of messages in a gRPC request (protobuf C++'s limit); deeper "
             "requests, like string fields holding a NUL byte, get INVALID_ARGUMENT naming the "
             "field. analytics-restbridge applies it to analyticsd's replies (deeper: 500).",
     FIELD(proto_max_depth)},
    {.name = "GRPC_MAX_CONCURRENT_STREAMS",
     .type = VAR_INT,
     .def = "100",
     .min = 1,
     .max = 100000,
     .help = "Calls one gRPC connection may have open at once (HTTP/2 "
             "SETTINGS_MAX_CONCURRENT_STREAMS); further ones wait at the client.",
     FIELD(grpc_max_concurrent_streams)},
    {.name = "GRPC_MAX_METADATA_BYTES",
     .type = VAR_INT,
     .def = "16384",
     .min = 1024,
     .max = 1048576,
     .help = "Largest request metadata (headers) of a gRPC call, in bytes; a call with more is "
             "refused (RESOURCE_EXHAUSTED).",
     FIELD(grpc_max_metadata_bytes)},
    {.name = "GRPC_STREAMS_PER_PEER",
     .type = VAR_INT,
     .def = "64",
     .min = 1,
     .max = 100000,
     .help = "Server-streaming gRPC calls one client IP address may have open at once, over all "
             "its connections; further ones get RESOURCE_EXHAUSTED.",
     FIELD(grpc_streams_per_peer)},
    {.name = "GRPC_THREADS",
     .type = VAR_INT,
     .def = "0",
     .min = 0,
     .max = 256,
     .help = "Threads serving gRPC completion queues; 0 means one per CPU.",
     FIELD(grpc_threads)},
    {.name = "SHUTDOWN_GRACE_MS",
     .type = VAR_DURATION,
     .def = "10000",
     .min = 0,
     .max = 600000,
     .help = "On SIGTERM, how long in-flight calls may take to finish.",
     FIELD(shutdown_grace_ms)},
    {.name = "DEFAULT_ACCOUNT_ID",
     .type = VAR_STRING,
     .def = "default",
     .help = "Account that every request runs as until authentication is configured.",
     .check = valid_account_id,
     .expect = "an account id (1 to 128 characters from A-Z a-z 0-9 _ . : -)",
     FIELD(default_account_id)},
    {.name = "LOG_LEVEL",
     .type = VAR_LOG_LEVEL,
     .def = "info",
     .help = "Most verbose level logged.",
     FIELD(log_level)},
};

#define VAR_COUNT (sizeof vars / sizeof vars[0])

/* ---- value checks ---- */

/* RESTBRIDGE_UPSTREAM: printable, no spaces, ends with :port. */
static bool valid_grpc_target(const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || !colon[1])
    return false;
  for (const char *p = s; *p; p++)
    if (*p <= ' ' || *p > '~')
      return false;
  for (const char *p = colon + 1; *p; p++)
    if (*p < '0' || *p > '9')
      return false;
  return true;
}

/* CORS_ALLOWED_ORIGINS: "*" or origins (scheme://host[:port]), comma-separated. */
static bool valid_origins(const char *s) {
  bool any = false;
  for (const char *p = s; *p;) {
    while (*p == ' ' || *p == ',')
      p++;
    const char *start = p;
    while (*p && *p != ',' && *p != ' ')
      p++;
    size_t n = (size_t)(p - start);
    if (n == 0)
      continue;
    any = true;
    if (n == 1 && *start == '*')
      continue;
    size_t scheme = strncmp(start, "https://", 8) == 0  ? 8
                    : strncmp(start, "http://", 7) == 0 ? 7
                                                        : 0;
    if (!scheme || n == scheme || memchr(start + scheme, '/', n - scheme))
      return false;
  }
  return any;
}

static bool is_hostname(const char *s, size_t n) {
  if (n == 0 || n > 253 || s[0] == '-' || s[0] == '.')
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && c != '-' && c != '.' && c != '_')
      return false;
  }
  return true;
}

static bool is_ipv6(const char *s, size_t n) {
  size_t colons = 0;
  if (n < 2 || n > 45)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == ':')
      colons++;
    else if (!isxdigit(c) && c != '.')
      return false;
  }
  return colons >= 2;
}

static bool is_port_text(const char *s, size_t n) {
  long v = 0;
  if (n == 0 || n > 5)
    return false;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i]))
      return false;
    v = v * 10 + (s[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

/* host, host:port, [v6], [v6]:port or a bare IPv6 address. */
static bool is_host_port(const char *s, size_t n) {
  const char *colon;
  size_t colons = 0;

  if (n > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', n);
    size_t inside, rest;
    if (!close)
      return false;
    inside = (size_t)(close - s) - 1;
    rest = n - inside - 2;
    if (!is_ipv6(s + 1, inside))
      return false;
    return rest == 0 || (close[1] == ':' && is_port_text(close + 2, rest - 1));
  }
  for (size_t i = 0; i < n; i++)
    colons += s[i] == ':';
  if (colons == 0)
    return is_hostname(s, n);
  if (colons > 1)
    return is_ipv6(s, n);
  colon = memchr(s, ':', n);
  return is_hostname(s, (size_t)(colon - s)) &&
         is_port_text(colon + 1, n - (size_t)(colon - s) - 1);
}

static const char *last_char(const char *s, size_t n, char c) {
  while (n > 0) {
    if (s[--n] == c)
      return s + n;
  }
  return NULL;
}

static bool has_control_or_space(const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= ' ' || c == 0x7f)
      return true;
  }
  return false;
}

/* Whether s starts with "<scheme>://" for one of the space-separated schemes. */
static bool has_scheme(const char *s, const char *schemes) {
  const char *p = schemes;
  while (*p) {
    size_t len = strcspn(p, " ");
    if (strncasecmp(s, p, len) == 0 && strncmp(s + len, "://", 3) == 0)
      return true;
    p += len;
    p += strspn(p, " ");
  }
  return false;
}

static bool valid_url(const char *s, const char *schemes) {
  const char *sep = strstr(s, "://");
  return has_scheme(s, schemes) && sep[3] != '\0' && !has_control_or_space(s);
}

static bool valid_bind_host(const char *s) {
  size_t n = strlen(s);
  if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
    return is_ipv6(s + 1, n - 2);
  return is_hostname(s, n) || is_ipv6(s, n);
}

static bool valid_clickhouse_host(const char *s) {
  const char *authority, *at;
  size_t n;

  if (has_control_or_space(s))
    return false;
  if (!strstr(s, "://"))
    return is_host_port(s, strlen(s));
  if (!has_scheme(s, "http https"))
    return false;
  authority = strstr(s, "://") + 3;
  n = strcspn(authority, "/?#");
  at = last_char(authority, n, '@');
  if (at) {
    n -= (size_t)(at + 1 - authority);
    authority = at + 1;
  }
  return is_host_port(authority, n);
}

static bool valid_timestamp_policy(const char *s) {
  return strcmp(s, "correct") == 0 || strcmp(s, "reject") == 0;
}

/* One IPv4/IPv6 address, optionally with a /prefix. */
static bool valid_proxy(const char *s, size_t n) {
  char buf[64];
  if (n == 0 || n >= sizeof buf)
    return false;
  memcpy(buf, s, n);
  buf[n] = '\0';
  char *slash = strchr(buf, '/');
  long prefix = -1;
  if (slash) {
    char *end;
    *slash = '\0';
    errno = 0;
    prefix = strtol(slash + 1, &end, 10);
    if (slash[1] == '\0' || *end || errno)
      return false;
  }
  unsigned char addr[16];
  if (inet_pton(AF_INET, buf, addr) == 1)
    return prefix <= 32;
  if (inet_pton(AF_INET6, buf, addr) == 1)
    return prefix <= 128;
  return false;
}

static bool valid_proxy_list(const char *s) {
  while (*s) {
    while (*s == ' ')
      s++;
    size_t n = strcspn(s, ",");
    size_t len = n;
    while (len > 0 && s[len - 1] == ' ')
      len--;
    if (!valid_proxy(s, len))
      return false;
    s += n;
    if (*s == ',')
      s++;
  }
  return true;
}

static bool valid_account_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ACCOUNT_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && !strchr("_.:-", c))
      return false;
  }
  return true;
}

static bool valid_path(const char *s) {
  if (strlen(s) > PATH_MAX_LEN)
    return false;
  for (; *s; s++) {
    if ((unsigned char)*s < ' ' || *s == 0x7f)
      return false;
  }
  return true;
}

/* ---- parsing ---- */

/* A whole decimal integer: an optional '-', digits and nothing else. */
static int parse_integer(const char *s, long long *out) {
  const char *digits = s[0] == '-' ? s + 1 : s;
  char *end;
  long long v;

  if (!isdigit((unsigned char)digits[0]))
    return ANA_ERR_INVALID;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno == ERANGE || *end != '\0')
    return ANA_ERR_INVALID;
  *out = v;
  return 0;
}

int ana_config_parse_duration_ms(const char *s, long long *out) {
  long long v = 0, unit;
  size_t i = 0;

  if (!s || !isdigit((unsigned char)s[0]))
    return ANA_ERR_INVALID;
  for (; isdigit((unsigned char)s[i]); i++) {
    int d = s[i] - '0';
    if (v > (LLONG_MAX - d) / 10)
      return ANA_ERR_INVALID;
    v = v * 10 + d;
  }
  if (s[i] == '\0' || strcmp(s + i, "ms") == 0)
    unit = 1;
  else if (strcmp(s + i, "s") == 0)
    unit = 1000;
  else if (strcmp(s + i, "m") == 0)
    unit = 60000;
  else if (strcmp(s + i, "h") == 0)
    unit = 3600000;
  else
    return ANA_ERR_INVALID;
  if (v > LLONG_MAX / unit)
    return ANA_ERR_INVALID;
  *out = v * unit;
  return 0;
}

int ana_config_parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"true", "1", "yes"};
  static const char *const no[] = {"false", "0", "no"};

  if (!s)
    return ANA_ERR_INVALID;
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return ANA_ERR_INVALID;
}

/* ---- descriptions, shared by error messages and documentation ---- */

static void bounds(const struct var *v, long long *min, long long *max) {
  if (v->type == VAR_PORT) {
    *min = 1;
    *max = 65535;
  } else {
    *min = v->min;
    *max = v->max;
  }
}

/* What the variable accepts, as a noun phrase: "a port (1-65535)". */
static void describe_expected(const struct var *v, char *buf, size_t size) {
  long long min, max;

  bounds(v, &min, &max);
  switch (v->type) {
  case VAR_STRING: snprintf(buf, size, "%s", v->expect ? v->expect : "a string"); break;
  case VAR_PATH: snprintf(buf, size, "a directory path"); break;
  case VAR_URL: {
    size_t len = (size_t)snprintf(buf, size, "a URL starting with");
    const char *p = v->schemes;
    while (*p && len < size) {
      size_t n = strcspn(p, " ");
      const char *next = p + n + strspn(p + n, " ");
      const char *sep = p == v->schemes ? "" : *next ? "," : " or";
      len += (size_t)snprintf(buf + len, size - len, "%s %.*s://", sep, (int)n, p);
      p = next;
    }
    break;
  }
  case VAR_INT: snprintf(buf, size, "an integer from %lld to %lld", min, max); break;
  case VAR_PORT: snprintf(buf, size, "a port (%lld-%lld)", min, max); break;
  case VAR_DURATION:
    snprintf(buf, size,
             "a duration from %lld to %lld ms (plain milliseconds, or with a suffix ms, s, m or h)",
             min, max);
    break;
  case VAR_LOG_LEVEL: snprintf(buf, size, "a log level (error, warn, info or debug)"); break;
  case VAR_BOOL: snprintf(buf, size, "a boolean (true/false, 1/0, yes/no)"); break;
  }
}

/* The full description used by --help, .env.example and the README. */
static void describe(const struct var *v, char *buf, size_t size) {
  char expected[256];
  size_t len;

  describe_expected(v, expected, sizeof expected);
  len = (size_t)snprintf(buf, size, "%s Accepts %s.", v->help, expected);
  if (v->status == VAR_NOT_YET_SUPPORTED && len < size)
    snprintf(buf + len, size - len,
             " Not yet supported: if set, the value is validated, then ignored with a warning"
             " (%s).",
             v->instead);
}

/* Copies value into buf for an error message: quoted characters and control
 * characters escaped, cut after QUOTED_VALUE_MAX bytes, and the password of a
 * URL (scheme://user:password@host) replaced by ***, since messages are logged. */
static void quote_value(const char *value, char *buf, size_t size) {
  size_t mask_from = 0, mask_to = 0, len = 0, i;
  const char *sep = strstr(value, "://");

  if (sep) {
    const char *auth = sep + 3;
    size_t n = strcspn(auth, "/?#");
    const char *at = last_char(auth, n, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon) {
      mask_from = (size_t)(colon + 1 - value);
      mask_to = (size_t)(at - value);
    }
  }
  for (i = 0; value[i] && len + 8 < size; i++) {
    unsigned char c = (unsigned char)value[i];
    if (i >= QUOTED_VALUE_MAX) {
      len += (size_t)snprintf(buf + len, size - len, "...");
      break;
    }
    if (i == mask_from && mask_to > mask_from) {
      len += (size_t)snprintf(buf + len, size - len, "***");
      i = mask_to - 1;
    } else if (c == '"' || c == '\\') {
      len += (size_t)snprintf(buf + len, size - len, "\\%c", c);
    } else if (c < ' ' || c == 0x7f) {
      len += (size_t)snprintf(buf + len, size - len, "\\x%02x", c);
    } else {
      buf[len++] = (char)c;
    }
  }
  buf[len] = '\0';
}

static int bad_value(const struct var *v, const char *value, struct ana_error *err) {
  char quoted[QUOTED_VALUE_MAX * 4 + 8], expected[256];

  quote_value(value, quoted, sizeof quoted);
  describe_expected(v, expected, sizeof expected);
  ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: \"%s\" is not %s", v->name, quoted,
                expected);
  return ANA_ERR_INVALID;
}

/* ---- loading ---- */

static void *field_of(struct ana_config *cfg, const struct var *v) {
  return (char *)cfg + v->offset;
}

static bool is_string_type(enum var_type type) {
  return type == VAR_STRING || type == VAR_PATH || type == VAR_URL;
}

static void store_number(struct ana_config *cfg, const struct var *v, long long n) {
  void *field = field_of(cfg, v);
  if (v->size == sizeof(int)) {
    assert(n >= INT_MIN && n <= INT_MAX);
    *(int *)field = (int)n;
  } else {
    assert(v->size == sizeof(long) && n >= LONG_MIN && n <= LONG_MAX);
    *(long *)field = (long)n;
  }
}

static int set_var(struct ana_config *cfg, const struct var *v, const char *value,
                   struct ana_error *err) {
  void *field = field_of(cfg, v);
  long long n = 0, min, max;
  bool ok = false;

  if (value[0] == '\0') {
    /* Unset with no default: only strings may be, and they stay NULL. */
    assert(is_string_type(v->type));
    *(char **)field = NULL;
    return 0;
  }
  bounds(v, &min, &max);
  switch (v->type) {
  case VAR_STRING: ok = !v->check || v->check(value); break;
  case VAR_PATH: ok = valid_path(value); break;
  case VAR_URL: ok = valid_url(value, v->schemes); break;
  case VAR_INT:
  case VAR_PORT: ok = parse_integer(value, &n) == 0 && n >= min && n <= max; break;
  case VAR_DURATION:
    ok = ana_config_parse_duration_ms(value, &n) == 0 && n >= min && n <= max;
    break;
  case VAR_LOG_LEVEL: {
    enum ana_log_level level;
    assert(v->size == sizeof level);
    ok = ana_log_level_parse(value, &level) == 0;
    if (ok)
      *(enum ana_log_level *)field = level;
    break;
  }
  case VAR_BOOL: {
    bool b;
    assert(v->size == sizeof b);
    ok = ana_config_parse_bool(value, &b) == 0;
    if (ok)
      *(bool *)field = b;
    break;
  }
  }
  if (!ok)
    return bad_value(v, value, err);

  if (is_string_type(v->type)) {
    char *copy = ana_strdup(value);
    assert(v->size == sizeof(char *));
    if (!copy) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", v->name);
      return ANA_ERR_NOMEM;
    }
    *(char **)field = copy;
  } else if (v->type == VAR_INT || v->type == VAR_PORT || v->type == VAR_DURATION) {
    store_number(cfg, v, n);
  }
  return 0;
}

int ana_config_load_at_startup(struct ana_config *cfg) {
  struct ana_error err;
  ana_error_clear(&err);
  int rc = ana_config_load(cfg, NULL, NULL, &err);
  if (rc < 0) {
    ANA_ERROR("config", "invalid configuration: %s", err.message);
    return rc;
  }
  ana_log_set_level(cfg->log_level);
  return 0;
}

int ana_config_load(struct ana_config *cfg, ana_getenv_fn getenv_fn, void *ctx,
                    struct ana_error *err) {
  struct ana_config tmp;
  int rc = 0;

  memset(cfg, 0, sizeof *cfg);
  memset(&tmp, 0, sizeof tmp);
  for (size_t i = 0; i < VAR_COUNT; i++) {
    const struct var *v = &vars[i];
    const char *value = getenv_fn ? getenv_fn(v->name, ctx) : getenv(v->name);
    if (!value || value[0] == '\0')
      value = v->def;
    rc = set_var(&tmp, v, value, err);
    if (rc < 0)
      goto out;
  }
  *cfg = tmp;
  memset(&tmp, 0, sizeof tmp);
out:
  ana_config_fini(&tmp);
  return rc;
}

void ana_config_fini(struct ana_config *cfg) {
  if (!cfg)
    return;
  for (size_t i = 0; i < VAR_COUNT; i++) {
    if (is_string_type(vars[i].type)) {
      char **field = field_of(cfg, &vars[i]);
      ana_free(*field);
      *field = NULL;
    }
  }
  memset(cfg, 0, sizeof *cfg);
}

void ana_config_each_unsupported(const struct ana_config *cfg,
                                 void (*fn)(const char *name, const char *what, void *ctx),
                                 void *ctx) {
  for (size_t i = 0; i < VAR_COUNT; i++) {
    const struct var *v = &vars[i];
    char what[256];
    if (v->status != VAR_NOT_YET_SUPPORTED)
      continue;
    assert(is_string_type(v->type) && v->feature && v->instead);
    if (*(char *const *)((const char *)cfg + v->offset) == NULL)
      continue;
    snprintf(what, sizeof what, "%s is not yet supported; %s", v->feature, v->instead);
    fn(v->name, what, ctx);
  }
}

/* ---- documentation ---- */

/* Writes text word-wrapped to width columns, each line starting with prefix. */
static void write_wrapped(FILE *out, const char *prefix, const char *text, size_t width) {
  size_t col = 0;

  while (*text) {
    size_t word = strcspn(text, " ");
    if (col > 0 && col + 1 + word > width) {
      fputc('\n', out);
      col = 0;
    }
    if (col == 0) {
      fputs(prefix, out);
      col = strlen(prefix);
    } else {
      fputc(' ', out);
      col++;
    }
    fwrite(text, 1, word, out);
    col += word;
    text += word;
    text += strspn(text, " ");
  }
  if (col > 0)
    fputc('\n', out);
}

void ana_config_write_help(FILE *out) {
  char text[1024];

  fputs("Environment variables (an empty value counts as unset, so the default applies):\n", out);
  for (size_t i = 0; i < VAR_COUNT; i++) {
    const struct var *v = &vars[i];
    if (v->def[0])
      fprintf(out, "  %s (default %s)\n", v->name, v->def);
    else
      fprintf(out, "  %s (unset by default)\n", v->name);
    describe(v, text, sizeof text);
    write_wrapped(out, "      ", text, 79);
  }
}

void ana_config_write_env_example(FILE *out) {
  char text[1024];

  fputs("# analyticsd configuration: copy this file to .env and change what you need.\n"
        "# Every variable is optional; an empty value counts as unset, so the default\n"
        "# applies. Generated from the table in server/core/config.c; the unit tests\n"
        "# check that the two agree.\n",
        out);
  for (size_t i = 0; i < VAR_COUNT; i++) {
    const struct var *v = &vars[i];
    describe(v, text, sizeof text);
    fputc('\n', out);
    write_wrapped(out, "# ", text, 79);
    fprintf(out, "%s=%s\n", v->name, v->def);
  }
}

/* Writes text for a table cell, escaping what Markdown would interpret. */
static void write_markdown_text(FILE *out, const char *text) {
  for (; *text; text++) {
    if (strchr("\\|*_`<[]", *text))
      fputc('\\', out);
    fputc(*text, out);
  }
}

void ana_config_write_markdown(FILE *out) {
  char text[1024];

  fputs("| Variable | Default | Description |\n|---|---|---|\n", out);
  for (size_t i = 0; i < VAR_COUNT; i++) {
    const struct var *v = &vars[i];
    fprintf(out, "| `%s` | ", v->name);
    if (v->def[0])
      fprintf(out, "`%s`", v->def);
    else
      fputs("unset", out);
    fputs(" | ", out);
    describe(v, text, sizeof text);
    write_markdown_text(out, text);
    fputs(" |\n", out);
  }
}
