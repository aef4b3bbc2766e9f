/* Ingestion settings: limits, timestamp policy, group commits: the struct its configuration rows
 * fill. */
#ifndef ANA_INGEST_CONFIG_H
#define ANA_INGEST_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_ingest_config_table (config_rows.c); strings owned by the struct. */
struct ana_ingest_settings {
  int batch_size;             /* events per group commit */
  int processing_interval_ms; /* PROCESSING_INTERVAL: how long a group commit gathers events */
  int event_max_bytes;
  int event_max_properties;
  int event_max_depth;
  int batch_max_events;
  long batch_max_bytes;
  long event_max_future_ms;
  char *timestamp_policy; /* "correct" or "reject" */
  int clock_skew_tolerance_ms;
  int ingest_queue_max;
  int ingest_stream_max_in_flight;
  int event_names_max; /* EVENT_NAMES_MAX: names in each account's catalog */
};

extern const struct ana_config_table ana_ingest_config_table;

#endif
