/* Configuration rows: report generation. Adding a variable = a row here and a member in struct
 * ana_reports_settings. */
#include "ana_reports_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_reports_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "REPORT_WORKERS",
     .type = ANA_CONFIG_INT,
     .def = "2",
     .min = 1,
     .max = 64,
     .help = "Threads generating report files (at a lower priority than ingestion and queries).",
     ROW(report_workers)},
    {.name = "REPORT_QUEUE_MAX",
     .type = ANA_CONFIG_INT,
     .def = "100",
     .min = 1,
     .max = 100000,
     .help = "Report runs waiting for a generation thread; one more is refused with "
             "RESOURCE_EXHAUSTED.",
     ROW(report_queue_max)},
    {.name = "REPORT_RETENTION_DAYS",
     .type = ANA_CONFIG_INT,
     .def = "30",
     .min = 1,
     .max = 36500,
     .help = "Days a generated report file is kept in REPORTS_DIR; its run then reads `expired`.",
     ROW(report_retention_days)},
    {.name = "REPORT_MAX_ATTEMPTS",
     .type = ANA_CONFIG_INT,
     .def = "3",
     .min = 1,
     .max = 100,
     .help = "Generations of one run interrupted by a stop (kill, crash) before it fails.",
     ROW(report_max_attempts)},
    {.name = "REPORT_ROLLUPS",
     .type = ANA_CONFIG_BOOL,
     .def = "true",
     .help = "Reports read rollups instead of scanning the events: a campaign report's counts "
             "from stored metrics that count the same event name (no filters, the campaign and "
             "table dimensions among theirs), metric_summary its metrics' own; false always "
             "scans the events.",
     ROW(report_rollups)},
    {.name = "REPORT_AUTO_ROLLUPS",
     .type = ANA_CONFIG_BOOL,
     .def = "true",
     .help = "A campaign report whose counts no stored metric holds keeps them as rollups of its "
             "own (count of each event name by the report's dimensions, backfilled in the "
             "background), so that the next report reads them instead of scanning the events. "
             "Needs REPORT_ROLLUPS.",
     ROW(report_auto_rollups)},
};

const struct ana_config_table ana_reports_config_table = ANA_CONFIG_TABLE("reports", rows);
