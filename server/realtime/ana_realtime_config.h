/* The real-time hub's settings: the struct its configuration rows fill. */
#ifndef ANA_REALTIME_CONFIG_H
#define ANA_REALTIME_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_realtime_config_table (config_rows.c); strings owned by the struct. */
struct ana_realtime_settings {
  int realtime_aggregate_interval_ms; /* REALTIME_AGGREGATE_INTERVAL */
  int realtime_slow_consumer_ms;      /* REALTIME_SLOW_CONSUMER_MS */
};

extern const struct ana_config_table ana_realtime_config_table;

#endif
