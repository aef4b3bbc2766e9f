/* Configuration rows of the ClickHouse event store (its code comes in this folder): until it is
 * built in, CLICKHOUSE_HOST is validated and ignored with a warning (the registry keeps SQLite). */
#include "ana_store_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_store_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "CLICKHOUSE_HOST",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "ClickHouse server, for events and analytics queries.",
     .check = ana_config_valid_host_or_url,
     .expect = "a host, host:port or http(s):// URL (e.g. localhost:8123)",
     .status = ANA_CONFIG_NOT_YET_SUPPORTED,
     .feature = "the ClickHouse backend",
     .instead = "using the embedded store",
     ROW(clickhouse_host)},
};

const struct ana_config_table ana_store_clickhouse_config_table =
    ANA_CONFIG_TABLE("store/clickhouse", rows);
