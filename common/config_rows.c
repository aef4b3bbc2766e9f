/* Configuration rows: settings every program shares. Adding a variable = a row here and a member in
 * struct ana_process_settings. */
#include "ana_config_table.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_process_settings, member)

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
    {.name = "PROTO_MAX_DEPTH",
     .type = ANA_CONFIG_INT,
     .def = "100",
     .min = 1,
     .max = 1000,
     .help = "Deepest nesting of messages in a gRPC request (protobuf C++'s limit); deeper "
             "requests, like string fields holding a NUL byte, get INVALID_ARGUMENT naming the "
             "field. analytics-restbridge applies it to analyticsd's replies (deeper: 500).",
     ROW(proto_max_depth)},
};

const struct ana_config_table ana_process_config_table = ANA_CONFIG_TABLE("process", rows);
