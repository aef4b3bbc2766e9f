/* Configuration rows: storage settings: data directories, retention, the local database, shared
 * state. A backend's own rows are in its folder (clickhouse/, elasticsearch/, mongodb/), filling
 * the same struct. Adding a variable = a row here (or in the backend's folder) and a member in
 * struct ana_store_settings. */
#include "ana_store_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_store_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "REDIS_URL",
     .type = ANA_CONFIG_URL,
     .def = "",
     .help = "Redis connection URL, for state shared between instances.",
     .schemes = "redis rediss",
     .status = ANA_CONFIG_NOT_YET_SUPPORTED,
     .feature = "the Redis integration",
     .instead = "running as a single instance",
     ROW(redis_url)},
    {.name = "RABBITMQ_URL",
     .type = ANA_CONFIG_URL,
     .def = "",
     .help = "RabbitMQ connection URL, for events passed between instances.",
     .schemes = "amqp amqps",
     .status = ANA_CONFIG_NOT_YET_SUPPORTED,
     .feature = "the RabbitMQ integration",
     .instead = "running as a single instance",
     ROW(rabbitmq_url)},
    {.name = "DATA_DIR",
     .type = ANA_CONFIG_PATH,
     .def = "./data",
     .help = "Directory of the embedded store.",
     ROW(data_dir)},
    {.name = "REPORTS_DIR",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "Directory where generated reports are stored; unset: the folder reports in "
             "DATA_DIR.",
     ROW(reports_dir)},
    {.name = "EXPORTS_DIR",
     .type = ANA_CONFIG_PATH,
     .def = "./data/exports",
     .help = "Directory where data exports are written.",
     ROW(exports_dir)},
    {.name = "RETENTION_DAYS",
     .type = ANA_CONFIG_INT,
     .def = "90",
     .min = 1,
     .max = 36500,
     .help = "Days events are kept before they are deleted.",
     ROW(retention_days)},
    {.name = "WAL_CHECKPOINT_MB",
     .type = ANA_CONFIG_INT,
     .def = "128",
     .min = 1,
     .max = 65536,
     .help = "MiB appended to the local database's WAL after which a checkpoint copies them "
             "into the database (in the background; event commits are held only while the "
             "last few pages are copied, so that the WAL starts over). Fewer checkpoints "
             "disturb commits less often. The WAL file stays under twice this size (event "
             "commits wait while readers of old snapshots keep it from starting over) and is "
             "cut to this size when it starts over.",
     ROW(wal_checkpoint_mb)},
    {.name = "STORE_MIN_FREE_MB",
     .type = ANA_CONFIG_INT,
     .def = "16",
     .min = 0,
     .max = 1048576,
     .help = "Free space, in MiB, DATA_DIR's filesystem must keep: below it (checked every "
             "second) event writes answer UNAVAILABLE and readiness (gRPC health \"\", REST "
             "/health) is NOT_SERVING / 503 while reads go on. 0 disables the check.",
     ROW(store_min_free_mb)},
    {.name = "SEARCH_MAX_PAGE_SIZE",
     .type = ANA_CONFIG_INT,
     .def = "1000",
     .min = 1,
     .max = 100000,
     .help = "Largest page of events a search returns (the default page is 50).",
     ROW(search_max_page_size)},
    {.name = "SEARCH_INDEX_WAIT",
     .type = ANA_CONFIG_DURATION,
     .def = "5s",
     .min = 0,
     .max = 60000,
     .help = "Longest wait of a free-text search for the search index to reach the last "
             "acknowledged event (it is normally at most 100 ms behind); past it the search "
             "answers UNAVAILABLE, saying how far the index is.",
     ROW(search_index_wait_ms)},
    {.name = "STORE_STAGING_MAX_EVENTS",
     .type = ANA_CONFIG_INT,
     .def = "200000",
     .min = 1000,
     .max = 100000000,
     .help = "Events a commit may leave in the staging table before the mover has put them "
             "in the events table (the acknowledgement writes a commit's events as one "
             "compressed row; the mover inserts them in time order behind it). When the "
             "backlog is full a commit waits up to STORE_STAGING_WAIT for room, then answers "
             "UNAVAILABLE.",
     ROW(store_staging_max_events)},
    {.name = "STORE_STAGING_WAIT",
     .type = ANA_CONFIG_DURATION,
     .def = "10s",
     .min = 0,
     .max = 600000,
     .help = "Longest wait of a commit for room in a full staging backlog "
             "(STORE_STAGING_MAX_EVENTS) before it answers UNAVAILABLE.",
     ROW(store_staging_wait_ms)},
    {.name = "DEDUPE_FILTER_MB",
     .type = ANA_CONFIG_INT,
     .def = "64",
     .min = 0,
     .max = 65536,
     .help = "MiB of memory the deduplication keys' Bloom filters (one per sorted run, up to "
             "10 bits a key) take at most; past it new runs get fewer bits a key, and a run "
             "without a filter is read on every claim (slower, still exact). A merge builds "
             "its output's filter beside its inputs' until it ends. 64 MiB hold about 5x10^7 "
             "keys at 10 bits.",
     ROW(dedupe_filter_mb)},
    {.name = "RETENTION_SWEEP_INTERVAL",
     .type = ANA_CONFIG_DURATION,
     .def = "60s",
     .min = 100,
     .max = 86400000,
     .help = "How often expired events are deleted, in small chunks between commits.",
     ROW(retention_sweep_interval_ms)},
};

const struct ana_config_table ana_store_config_table = ANA_CONFIG_TABLE("store", rows);
