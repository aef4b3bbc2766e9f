/* Configuration rows: the REST/WebSocket bridge's settings (analyticsd and analytics-restbridge).
 * Adding a variable = a row here and a member in struct ana_bridge_settings. */
#include "ana_restbridge_config.h"

#include <string.h>

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

/* HTTP_ALLOWED_HOSTS: comma-separated host names, printable, no port. */
static bool valid_host_list(const char *s) {
  for (const char *p = s; *p; p++)
    if (*p < ' ' || *p > '~' || *p == '/' || *p == '@')
      return false;
  return true;
}

/* RESTBRIDGE_UPSTREAM_SERVER_NAME: a host name, printable, no spaces. */
static bool valid_server_name(const char *s) {
  for (const char *p = s; *p; p++)
    if (*p <= ' ' || *p > '~' || *p == '/' || *p == ':')
      return false;
  return true;
}

#define ROW(member) ANA_CONFIG_FIELD(struct ana_bridge_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "PORT",
     .type = ANA_CONFIG_PORT,
     .def = "3004",
     .help = "Port of the REST and WebSocket API (the bridge).",
     ROW(port)},
    {.name = "HTTP_HOST",
     .type = ANA_CONFIG_STRING,
     .def = "0.0.0.0",
     .help = "Address the REST and WebSocket port binds to (as GRPC_HOST for gRPC).",
     .check = ana_config_valid_bind_host,
     .expect = "a host name or IP address (e.g. 0.0.0.0, ::, 127.0.0.1)",
     ROW(http_host)},
    {.name = "HTTP_ALLOWED_HOSTS",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Host names (comma-separated, without port) served besides localhost, 127.0.0.1 "
             "and [::1] while authentication is not configured (other Hosts get 421); in "
             "analytics-restbridge, for every request that brings no credentials.",
     .check = valid_host_list,
     .expect = "comma-separated host names",
     ROW(http_allowed_hosts)},
    {.name = "HTTP_MAX_BODY_BYTES",
     .type = ANA_CONFIG_INT,
     .def = "4194304",
     .min = 1024,
     .max = 268435456,
     .help = "Largest REST request body accepted, in bytes (larger: 413).",
     ROW(http_max_body_bytes)},
    {.name = "HTTP_BODY_BUDGET_MB",
     .type = ANA_CONFIG_INT,
     .def = "128",
     .min = 1,
     .max = 1048576,
     .help = "Memory, in MiB, for all REST request bodies being received or decoded together; "
             "past it a new body is refused with 503 and Retry-After.",
     ROW(http_body_budget_mb)},
    {.name = "HTTP_BODY_MIN_RATE",
     .type = ANA_CONFIG_INT,
     .def = "1024",
     .min = 1,
     .max = 1073741824,
     .help = "Slowest a REST request body may arrive, in bytes per second averaged over "
             "HTTP_BODY_RATE_WINDOW; a slower one ends with 408 and the connection is closed.",
     ROW(http_body_min_rate)},
    {.name = "HTTP_BODY_RATE_WINDOW",
     .type = ANA_CONFIG_DURATION,
     .def = "10000",
     .min = 100,
     .max = 600000,
     .help = "The window over which HTTP_BODY_MIN_RATE is averaged.",
     ROW(http_body_rate_window_ms)},
    {.name = "HTTP_DECODE_THREADS",
     .type = ANA_CONFIG_INT,
     .def = "2",
     .min = 0,
     .max = 64,
     .help = "Threads decoding REST request bodies over 64 KiB (JSON into the request), so that "
             "large bodies do not hold up other requests; 0 decodes every body on the bridge's "
             "own thread.",
     ROW(http_decode_threads)},
    {.name = "CORS_ALLOWED_ORIGINS",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Browser origins allowed to call the REST API (CORS); unset means none.",
     .check = valid_origins,
     .expect = "a comma-separated list of origins (e.g. https://app.example.com), or *",
     ROW(cors_allowed_origins)},
    {.name = "WS_SLOW_CONSUMER_MS",
     .type = ANA_CONFIG_DURATION,
     .def = "10000",
     .min = 100,
     .max = 600000,
     .help = "A WebSocket client whose STREAM_BUFFER_SIZE messages stay unread this long is "
             "disconnected (close code 1008).",
     ROW(ws_slow_consumer_ms)},
    {.name = "STREAM_QUEUE_BUDGET_MB",
     .type = ANA_CONFIG_INT,
     .def = "128",
     .min = 1,
     .max = 1048576,
     .help = "Memory, in MiB, for the messages queued on all WebSocket connections and the "
             "JSON chunks of REST answers waiting for their clients, together; past it the "
             "connection with the most queued is closed (WebSocket close code 1008; a REST "
             "answer is cut).",
     ROW(stream_queue_budget_mb)},
    {.name = "WEB_ROOT",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "Directory holding the live dashboard's files (index.html, app.js, app.css), served "
             "at / and /dashboard; unset serves the copy built into the binary.",
     ROW(web_root)},
    {.name = "RESTBRIDGE_UPSTREAM",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "analytics-restbridge only (the remote REST bridge): the gRPC address of the "
             "analyticsd it forwards to; its --upstream option wins. analyticsd ignores it.",
     .check = valid_grpc_target,
     .expect = "a gRPC target: host:port or dns:///host:port",
     ROW(restbridge_upstream)},
    {.name = "STREAM_BUFFER_SIZE",
     .type = ANA_CONFIG_INT,
     .def = "1024",
     .min = 1,
     .max = 1000000,
     .help = "Updates held for each real-time subscriber, waiting in the server and queued by "
             "its transport together (the WebSocket queue of a connection is this size too); "
             "beyond it live events are dropped and counted in the next aggregate snapshot.",
     ROW(stream_buffer_size)},
    {.name = "HTTP_TLS_CERT_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "PEM certificate chain the REST and WebSocket port serves HTTPS and WSS with (with "
             "HTTP_TLS_KEY_FILE; both or neither; ALPN offers http/1.1 only); unset serves "
             "plaintext. Read again on SIGHUP.",
     ROW(http_tls_cert_file)},
    {.name = "HTTP_TLS_KEY_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "PEM private key of HTTP_TLS_CERT_FILE (unencrypted). Read again on SIGHUP.",
     ROW(http_tls_key_file)},
    {.name = "HTTP_TLS_CLIENT_CA_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "PEM CA certificates: when set, HTTPS and WSS clients must present a certificate "
             "they signed (mutual TLS); needs HTTP_TLS_CERT_FILE. Read again on SIGHUP.",
     ROW(http_tls_client_ca_file)},
    {.name = "RESTBRIDGE_UPSTREAM_TLS",
     .type = ANA_CONFIG_BOOL,
     .def = "false",
     .help = "analytics-restbridge only: reach RESTBRIDGE_UPSTREAM over TLS, trusting the "
             "system's CA certificates unless RESTBRIDGE_UPSTREAM_CA_FILE is set (setting any "
             "RESTBRIDGE_UPSTREAM_*_FILE turns TLS on too).",
     ROW(upstream_tls)},
    {.name = "RESTBRIDGE_UPSTREAM_CA_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "analytics-restbridge only: PEM CA certificates the upstream's certificate must "
             "chain to; its --upstream-ca option wins. Read again on SIGHUP.",
     ROW(upstream_ca_file)},
    {.name = "RESTBRIDGE_UPSTREAM_CERT_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help =
         "analytics-restbridge only: PEM client certificate presented to the upstream "
         "(mutual TLS, with RESTBRIDGE_UPSTREAM_KEY_FILE); its --upstream-cert option wins. Read "
         "again on SIGHUP.",
     ROW(upstream_cert_file)},
    {.name = "RESTBRIDGE_UPSTREAM_KEY_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "analytics-restbridge only: PEM private key of RESTBRIDGE_UPSTREAM_CERT_FILE; its "
             "--upstream-key option wins. Read again on SIGHUP.",
     ROW(upstream_key_file)},
    {.name = "RESTBRIDGE_UPSTREAM_SERVER_NAME",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "analytics-restbridge only: the name the upstream's certificate is checked against "
             "(and sent as SNI) instead of the host of RESTBRIDGE_UPSTREAM.",
     .check = valid_server_name,
     .expect = "a host name",
     ROW(upstream_server_name)},
};

const struct ana_config_table ana_bridge_config_table = ANA_CONFIG_TABLE("restbridge", rows);
