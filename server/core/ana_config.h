/* Configuration from environment variables, all declared in one table (config.c). */
#ifndef ANA_CONFIG_H
#define ANA_CONFIG_H

#include "ana_error.h"
#include "ana_log.h"

#include <stdbool.h>
#include <stdio.h>

/* The service's settings. Strings are owned by the struct (ana_config_fini
 * frees them); a string setting with an empty default is NULL when unset.
 * Durations are in milliseconds. Adding a variable means one row in the
 * table in config.c plus one member here. */
struct ana_config {
  int port;                 /* PORT: REST/WebSocket bridge */
  int grpc_port;            /* GRPC_PORT */
  char *grpc_host;          /* GRPC_HOST: bind address; an IPv6 address may come without brackets */
  long http_max_body_bytes; /* HTTP_MAX_BODY_BYTES: REST request bodies */
  int http_body_budget_mb;  /* HTTP_BODY_BUDGET_MB: all bodies together */
  int http_body_min_rate;   /* HTTP_BODY_MIN_RATE: bytes per second */
  int http_body_rate_window_ms; /* HTTP_BODY_RATE_WINDOW */
  int http_decode_threads;      /* HTTP_DECODE_THREADS: 0 = on the bridge thread */
  char *cors_allowed_origins;   /* CORS_ALLOWED_ORIGINS: NULL = none */
  int ws_slow_consumer_ms;      /* WS_SLOW_CONSUMER_MS */
  int stream_queue_budget_mb;   /* STREAM_QUEUE_BUDGET_MB: all WebSocket queues together */
  char *web_root;               /* WEB_ROOT: dashboard files; NULL = built in */
  char *restbridge_upstream;    /* RESTBRIDGE_UPSTREAM: analytics-restbridge only; NULL = unset */

  /* Remote backends; NULL = not used (none is supported yet). */
  char *mongodb_uri;
  char *elasticsearch_node;
  char *clickhouse_host; /* host, host:port or http(s) URL */
  char *redis_url;
  char *rabbitmq_url;

  char *reports_dir;
  char *exports_dir;
  char *data_dir;

  int retention_days;
  int batch_size;             /* events per group commit */
  int processing_interval_ms; /* PROCESSING_INTERVAL: how long a group commit gathers events */
  int stream_buffer_size;     /* messages buffered per real-time subscriber */
  int realtime_aggregate_interval_ms; /* REALTIME_AGGREGATE_INTERVAL */
  int realtime_slow_consumer_ms;      /* REALTIME_SLOW_CONSUMER_MS */
  int metric_stream_interval_ms;      /* METRIC_STREAM_INTERVAL: 0 = every commit */
  int metric_stream_history;          /* METRIC_STREAM_HISTORY: closed buckets kept per stream */
  int metric_streams_per_peer;        /* METRIC_STREAMS_PER_PEER */
  int rollup_cache_mb;                /* ROLLUP_CACHE_MB: 0 = no rollup cells in memory */
  int wal_checkpoint_mb;              /* WAL_CHECKPOINT_MB */
  int store_min_free_mb;              /* STORE_MIN_FREE_MB: 0 = no check */

  enum ana_log_level log_level;
  int shutdown_grace_ms;
  char *default_account_id;

  long grpc_max_message_bytes;
  int grpc_max_concurrent_streams; /* per connection */
  int grpc_max_metadata_bytes;
  int grpc_streams_per_peer; /* open server-streaming calls per client IP */
  int proto_max_depth;       /* PROTO_MAX_DEPTH: nested messages in a gRPC request */
  int grpc_threads;          /* 0 = one per CPU */
  int stream_send_queue_max;
  /* Ingestion limits and policies. */
  int event_max_bytes;
  int event_max_properties;
  int event_max_depth;
  int batch_max_events;
  long batch_max_bytes;
  long event_max_future_ms;
  char *timestamp_policy; /* "correct" or "reject" */
  int clock_skew_tolerance_ms;
  char *trusted_proxies; /* NULL when unset */
  int ingest_queue_max;
  int ingest_stream_max_in_flight;
  int search_max_page_size;
  int event_names_max;      /* EVENT_NAMES_MAX: names in each account's catalog */
  int search_index_wait_ms; /* SEARCH_INDEX_WAIT */
  int retention_sweep_interval_ms;
};

/* Looks up one variable; returns NULL when unset. The returned string is
 * borrowed and must stay valid until ana_config_load returns. */
typedef const char *(*ana_getenv_fn)(const char *name, void *ctx);

/* Reads every variable through getenv_fn (NULL = the process environment,
 * ctx unused) and fills cfg. An empty value counts as unset: the default
 * applies. Returns 0; or ANA_ERR_INVALID with err->message naming the
 * variable, the value and what is expected, e.g.
 *   GRPC_PORT: "70000" is not a port (1-65535)
 * (passwords in URLs are masked); or ANA_ERR_NOMEM. On failure cfg is left
 * zeroed. Does not block. */
int ana_config_load(struct ana_config *cfg, ana_getenv_fn getenv_fn, void *ctx,
                    struct ana_error *err);

/* What a program does first: loads cfg from the process environment, logs
 * a bad value (naming the variable) at error level, and applies LOG_LEVEL.
 * Returns 0, or a negative error after logging it (exit with status 2). */
int ana_config_load_at_startup(struct ana_config *cfg);

/* Frees the strings and zeroes cfg; safe on a zeroed or already-finished struct. */
void ana_config_fini(struct ana_config *cfg);

/* Calls fn for each variable that is set although its feature is not yet
 * supported. name is the variable; what completes the sentence
 * "<name> is set but <what>", e.g. "the MongoDB backend is not yet
 * supported; using the embedded store". Both are borrowed for the call. */
void ana_config_each_unsupported(const struct ana_config *cfg,
                                 void (*fn)(const char *name, const char *what, void *ctx),
                                 void *ctx);

/* The --help section: each variable with its default and description. */
void ana_config_write_help(FILE *out);

/* The content of .env.example: comment lines, then NAME=default, per variable. */
void ana_config_write_env_example(FILE *out);

/* The README's table: | Variable | Default | Description |, one row per variable. */
void ana_config_write_markdown(FILE *out);

/* Parses a boolean as the configuration accepts it: true/false, 1/0, yes/no
 * (any case). Returns 0, or ANA_ERR_INVALID and leaves *out alone. */
int ana_config_parse_bool(const char *s, bool *out);

/* Parses a duration as the configuration accepts it: an integer number of
 * milliseconds, optionally with a suffix ms, s or m. Returns 0, or
 * ANA_ERR_INVALID (also on overflow) and leaves *out alone. */
int ana_config_parse_duration_ms(const char *s, long long *out);

#endif
