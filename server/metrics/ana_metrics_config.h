/* Metric settings: live metric streams and the rollup cache: the struct its configuration rows
 * fill. */
#ifndef ANA_METRICS_CONFIG_H
#define ANA_METRICS_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_metrics_config_table (config_rows.c); strings owned by the struct. */
struct ana_metrics_settings {
  int metric_stream_interval_ms; /* METRIC_STREAM_INTERVAL: 0 = every commit */
  int metric_stream_history;     /* METRIC_STREAM_HISTORY: closed buckets kept per stream */
  int metric_streams_per_peer;   /* METRIC_STREAMS_PER_PEER */
  int rollup_cache_mb;           /* ROLLUP_CACHE_MB: 0 = no rollup cells in memory */
};

extern const struct ana_config_table ana_metrics_config_table;

#endif
