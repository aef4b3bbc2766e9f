/* Configuration rows: metric settings: live metric streams and the rollup cache. Adding a variable
 * = a row here and a member in struct ana_metrics_settings. */
#include "ana_metrics_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_metrics_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "METRIC_STREAM_INTERVAL",
     .type = ANA_CONFIG_DURATION,
     .def = "10",
     .min = 0,
     .max = 60000,
     .help = "A live metric stream (StreamMetric, /ws/metrics/{id}) sends at most one update per "
             "group this often, with the latest value; 0 sends one after each commit.",
     ROW(metric_stream_interval_ms)},
    {.name = "METRIC_STREAM_HISTORY",
     .type = ANA_CONFIG_INT,
     .def = "60",
     .min = 1,
     .max = 10000,
     .help = "Closed buckets whose final values each live metric stream keeps in memory for "
             "clients that resume (afterSequence); older ones are recomputed from the events.",
     ROW(metric_stream_history)},
    {.name = "METRIC_STREAMS_PER_PEER",
     .type = ANA_CONFIG_INT,
     .def = "32",
     .min = 1,
     .max = 100000,
     .help = "Live metric streams (StreamMetric, /ws/metrics/{id}) one caller may hold open at "
             "once: per principal (JWT subject or API key), per client address without "
             "credentials; further ones get RESOURCE_EXHAUSTED (a WebSocket closes with 4008).",
     ROW(metric_streams_per_peer)},
    {.name = "ROLLUP_CACHE_MB",
     .type = ANA_CONFIG_INT,
     .def = "256",
     .min = 0,
     .max = 1048576,
     .help = "Memory, in MiB, for metric rollup cells kept in memory: the rollup thread loads "
             "the cells queries read and updates them with every commit, so GetMetricData "
             "answers without reading them from the database; beyond it the least recently "
             "read are dropped and read from the database again. 0 keeps none.",
     ROW(rollup_cache_mb)},
};

const struct ana_config_table ana_metrics_config_table = ANA_CONFIG_TABLE("metrics", rows);
