/* Configuration rows of the ClickHouse event store: its server, credentials, TLS trust, batches,
 * timeouts and the bound of the local spool of events not yet shipped. */
#include "ana_store_config.h"

#include <ctype.h>

/* A ClickHouse identifier written into SQL unquoted: [A-Za-z_][A-Za-z0-9_]*, at most 64. */
static bool valid_identifier(const char *s) {
  size_t n = 0;
  if (!s[0] || isdigit((unsigned char)s[0]))
    return false;
  for (; s[n]; n++)
    if (!isalnum((unsigned char)s[n]) && s[n] != '_')
      return false;
  return n <= 64;
}

#define ROW(member) ANA_CONFIG_FIELD(struct ana_store_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "CLICKHOUSE_HOST",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "ClickHouse server (HTTP interface) that receives the events: a host[:port] "
             "(http, port 8123 by default) or an http(s):// URL. Unset: the embedded store.",
     .check = ana_config_valid_host_or_url,
     .expect = "a host, host:port or http(s):// URL (e.g. localhost:8123)",
     ROW(clickhouse_host)},
    {.name = "CLICKHOUSE_DATABASE",
     .type = ANA_CONFIG_STRING,
     .def = "analytics",
     .help = "ClickHouse database of the events table (created when missing).",
     .check = valid_identifier,
     .expect = "letters, digits and underscores, not starting with a digit",
     ROW(clickhouse_database)},
    {.name = "CLICKHOUSE_USER",
     .type = ANA_CONFIG_STRING,
     .def = "default",
     .help = "ClickHouse user (HTTP basic authentication).",
     ROW(clickhouse_user)},
    {.name = "CLICKHOUSE_PASSWORD",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "ClickHouse user's password.",
     ROW(clickhouse_password)},
    {.name = "CLICKHOUSE_CA_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "PEM file of the certificate authorities trusted for an https:// CLICKHOUSE_HOST; "
             "unset: the system's. The server's name is always verified.",
     ROW(clickhouse_ca_file)},
    {.name = "CLICKHOUSE_TIMEOUT",
     .type = ANA_CONFIG_DURATION,
     .def = "30s",
     .min = 100,
     .max = 600000,
     .help = "Longest wait for ClickHouse to confirm one insert or answer one query; past it "
             "the batch is uncertain and is checked before it is sent again.",
     ROW(clickhouse_timeout_ms)},
    {.name = "CLICKHOUSE_BATCH_ROWS",
     .type = ANA_CONFIG_INT,
     .def = "100000",
     .min = 1,
     .max = 1000000,
     .help = "Most events shipped to ClickHouse in one batch; a batch leaves as soon as this "
             "many are waiting, else every CLICKHOUSE_BATCH_INTERVAL.",
     ROW(clickhouse_batch_rows)},
    {.name = "CLICKHOUSE_BATCH_INTERVAL",
     .type = ANA_CONFIG_DURATION,
     .def = "1s",
     .min = 10,
     .max = 60000,
     .help = "Longest time a committed event waits in the spool before it is shipped.",
     ROW(clickhouse_batch_interval_ms)},
    {.name = "CLICKHOUSE_GZIP",
     .type = ANA_CONFIG_BOOL,
     .def = "true",
     .help = "Inserts are sent gzip-compressed (at CLICKHOUSE_GZIP_LEVEL); false sends them as "
             "they are, which costs analyticsd and ClickHouse less CPU and the network more "
             "bytes (for a ClickHouse on the same host or a fast link).",
     ROW(clickhouse_gzip)},
    {.name = "CLICKHOUSE_GZIP_LEVEL",
     .type = ANA_CONFIG_INT,
     .def = "1",
     .min = 1,
     .max = 12,
     .help = "Compression level of the gzip-compressed inserts (libdeflate's 1-12): higher "
             "sends fewer bytes for more of analyticsd's CPU per event (level 6 takes about "
             "four times level 1's).",
     ROW(clickhouse_gzip_level)},
    {.name = "CLICKHOUSE_SHIPPED_MERGE",
     .type = ANA_CONFIG_DURATION,
     .def = "1m",
     .min = 50,
     .max = 3600000,
     .help = "The ClickHouse table shipped (a row per confirmed batch per instance, which "
             "other instances' rollups read) keeps a row per batch for this long; then one per "
             "this period, past 60 periods one per 60, past 1,440 one per 1,440, past "
             "RETENTION_DAYS one in all (checked every period).",
     ROW(clickhouse_shipped_merge_ms)},
    {.name = "SPOOL_MAX_BYTES",
     .type = ANA_CONFIG_INT,
     .def = "4294967296",
     .min = 1024,
     .max = 1099511627776LL,
     .help = "Bound of the events committed but not yet shipped to ClickHouse (their payload "
             "and properties, in bytes): past it event writes answer UNAVAILABLE until "
             "ClickHouse catches up; nothing is dropped.",
     ROW(spool_max_bytes)},
};

const struct ana_config_table ana_store_clickhouse_config_table =
    ANA_CONFIG_TABLE("store/clickhouse", rows);
