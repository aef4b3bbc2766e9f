/* The REST/WebSocket bridge's settings (analyticsd and analytics-restbridge): the struct its
 * configuration rows fill. */
#ifndef ANA_RESTBRIDGE_CONFIG_H
#define ANA_RESTBRIDGE_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_bridge_config_table (config_rows.c); strings owned by the struct. */
struct ana_bridge_settings {
  int port;                      /* PORT: REST/WebSocket bridge */
  char *http_host;               /* HTTP_HOST: bind address of PORT */
  char *http_allowed_hosts;      /* HTTP_ALLOWED_HOSTS: Host names served in protected mode */
  long http_max_body_bytes;      /* HTTP_MAX_BODY_BYTES: REST request bodies */
  int http_body_budget_mb;       /* HTTP_BODY_BUDGET_MB: all bodies together */
  int http_body_min_rate;        /* HTTP_BODY_MIN_RATE: bytes per second */
  int http_body_rate_window_ms;  /* HTTP_BODY_RATE_WINDOW */
  int http_decode_threads;       /* HTTP_DECODE_THREADS: 0 = on the bridge thread */
  char *cors_allowed_origins;    /* CORS_ALLOWED_ORIGINS: NULL = none */
  int ws_slow_consumer_ms;       /* WS_SLOW_CONSUMER_MS */
  int stream_queue_budget_mb;    /* STREAM_QUEUE_BUDGET_MB: all WebSocket queues together */
  char *web_root;                /* WEB_ROOT: dashboard files; NULL = built in */
  char *restbridge_upstream;     /* RESTBRIDGE_UPSTREAM: analytics-restbridge only; NULL = unset */
  int stream_buffer_size;        /* messages buffered per real-time subscriber */
  char *http_tls_cert_file;      /* HTTP_TLS_CERT_FILE: NULL = plaintext */
  char *http_tls_key_file;       /* HTTP_TLS_KEY_FILE */
  char *http_tls_client_ca_file; /* HTTP_TLS_CLIENT_CA_FILE: NULL = no client certificates */
  /* analytics-restbridge only: TLS to RESTBRIDGE_UPSTREAM */
  bool upstream_tls;          /* RESTBRIDGE_UPSTREAM_TLS */
  char *upstream_ca_file;     /* RESTBRIDGE_UPSTREAM_CA_FILE: NULL = the system's roots */
  char *upstream_cert_file;   /* RESTBRIDGE_UPSTREAM_CERT_FILE: client certificate (mTLS) */
  char *upstream_key_file;    /* RESTBRIDGE_UPSTREAM_KEY_FILE */
  char *upstream_server_name; /* RESTBRIDGE_UPSTREAM_SERVER_NAME: NULL = the target's host */
};

extern const struct ana_config_table ana_bridge_config_table;

#endif
