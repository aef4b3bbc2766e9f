/* Configuration rows: alert settings. Adding a variable = a row here and a member in struct
 * ana_alerts_settings. */
#include "ana_alerts_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_alerts_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "ALERT_MAX_INSTANCES",
     .type = ANA_CONFIG_INT,
     .def = "1000",
     .min = 1,
     .max = 100000,
     .help = "Instances (groups of dimension values) one alert rule keeps apart; the events of "
             "further groups are evaluated together as one \"(other)\" instance.",
     ROW(alert_max_instances)},
    {.name = "ALERT_HISTORY_DAYS",
     .type = ANA_CONFIG_INT,
     .def = "90",
     .min = 1,
     .max = 36500,
     .help = "Days an alert's history (state changes, delivery attempts) is kept.",
     ROW(alert_history_days)},
    {.name = "ALERT_QUEUE_MAX",
     .type = ANA_CONFIG_INT,
     .def = "1000000",
     .min = 1,
     .max = 100000000,
     .help = "Committed events of accounts with alerts waiting for the evaluator; when it is "
             "full further events are not evaluated (counted in "
             "ana_alert_events_dropped_total and logged).",
     ROW(alert_queue_max)},
};

const struct ana_config_table ana_alerts_config_table = ANA_CONFIG_TABLE("alerts", rows);
