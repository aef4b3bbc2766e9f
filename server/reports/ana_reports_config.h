/* Report settings: the struct its configuration rows fill. */
#ifndef ANA_REPORTS_CONFIG_H
#define ANA_REPORTS_CONFIG_H

#include "ana_config_table.h"

#include <stdbool.h>

/* Filled by ana_reports_config_table (config_rows.c). */
struct ana_reports_settings {
  int report_workers;        /* REPORT_WORKERS: generation threads */
  int report_queue_max;      /* REPORT_QUEUE_MAX: runs waiting before RESOURCE_EXHAUSTED */
  int report_retention_days; /* REPORT_RETENTION_DAYS: days a generated file is kept */
  int report_max_attempts;   /* REPORT_MAX_ATTEMPTS: generations of one run before it fails */
  bool report_rollups;       /* REPORT_ROLLUPS: counts from the rollups of matching metrics */
  bool report_auto_rollups;  /* REPORT_AUTO_ROLLUPS: counts no metric holds kept as rollups */
};

extern const struct ana_config_table ana_reports_config_table;

#endif
