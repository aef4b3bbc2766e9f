/* Alert settings: the struct its configuration rows fill. */
#ifndef ANA_ALERTS_CONFIG_H
#define ANA_ALERTS_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_alerts_config_table (config_rows.c). */
struct ana_alerts_settings {
  int alert_max_instances; /* ALERT_MAX_INSTANCES: instances per rule before "(other)" */
  int alert_history_days;  /* ALERT_HISTORY_DAYS */
  int alert_queue_max;     /* ALERT_QUEUE_MAX */
};

extern const struct ana_config_table ana_alerts_config_table;

#endif
