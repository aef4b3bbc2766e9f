/* Configuration rows: settings every program shares. Adding a variable = a row here and a member in
 * struct ana_process_settings. */
#include "ana_client_ip.h"
#include "ana_config_table.h"
#include "ana_log.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_process_settings, member)

static bool valid_share(const char *s) {
  double v;
  return ana_log_access_sample_parse(s, &v) == 0;
}

static const struct ana_config_row rows[] = {
    {.name = "SHUTDOWN_GRACE_MS",
     .type = ANA_CONFIG_DURATION,
     .def = "10000",
     .min = 0,
     .max = 600000,
     .help = "On SIGTERM, how long in-flight calls may take to finish.",
     ROW(shutdown_grace_ms)},
    {.name = "LOG_LEVEL",
     .type = ANA_CONFIG_LOG_LEVEL,
     .def = "info",
     .help = "Most verbose level logged.",
     ROW(log_level)},
    {.name = "ACCESS_LOG_SAMPLE",
     .type = ANA_CONFIG_STRING,
     .def = "0.01",
     .check = valid_share,
     .expect = "a number from 0 to 1",
     .help = "Share of successful requests (REST 2xx, WebSocket closed with 1000 or 1001, gRPC "
             "OK) written to the access log (one JSON line per request, component \"access\"); "
             "every other request is always written. 1 logs every request, 0 only failures; "
             "LOG_LEVEL=warn turns the access log off.",
     ROW(access_log_sample)},
    {.name = "ACCESS_LOG_MAX_PER_S",
     .type = ANA_CONFIG_INT,
     .def = "100",
     .min = 1,
     .max = 1000000,
     .help = "Most access-log lines written per second (a flood of failing requests is not "
             "sampled); the rest are counted in ana_log_suppressed_total and reported in one "
             "line per second.",
     ROW(access_log_max_per_s)},
    {.name = "PROTO_MAX_DEPTH",
     .type = ANA_CONFIG_INT,
     .def = "100",
     .min = 1,
     .max = 1000,
     .help = "Deepest nesting of messages in a gRPC request (protobuf C++'s limit); deeper "
             "requests, like string fields holding a NUL byte, get INVALID_ARGUMENT naming the "
             "field. analytics-restbridge applies it to analyticsd's replies (deeper: 500).",
     ROW(proto_max_depth)},
    {.name = "TRUSTED_PROXIES",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Comma-separated IP addresses or CIDR ranges of proxies whose X-Forwarded-For "
             "header is believed for context.ip, for the client address of per-client limits "
             "(GRPC_STREAMS_PER_PEER, METRIC_STREAMS_PER_PEER) and for the access log's peer "
             "(gRPC and REST alike; analytics-restbridge reads it too).",
     .check = ana_client_ip_list_valid,
     .expect = "IP addresses or CIDR ranges separated by commas",
     ROW(trusted_proxies)},
};

const struct ana_config_table ana_process_config_table = ANA_CONFIG_TABLE("process", rows);
