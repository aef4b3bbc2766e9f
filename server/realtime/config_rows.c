/* Configuration rows: the real-time hub's settings. Adding a variable = a row here and a member in
 * struct ana_realtime_settings. */
#include "ana_realtime_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_realtime_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "REALTIME_AGGREGATE_INTERVAL",
     .type = ANA_CONFIG_DURATION,
     .def = "1000",
     .min = 10,
     .max = 60000,
     .help = "How often each analytics stream subscriber gets an aggregate snapshot (events per "
             "second by eventType and eventName over the last second).",
     ROW(realtime_aggregate_interval_ms)},
    {.name = "REALTIME_SLOW_CONSUMER_MS",
     .type = ANA_CONFIG_DURATION,
     .def = "10000",
     .min = 100,
     .max = 600000,
     .help = "An analytics stream subscriber that stays behind (its STREAM_BUFFER_SIZE updates "
             "full) this long is ended with RESOURCE_EXHAUSTED (a WebSocket closes with 1008 and "
             "the reason).",
     ROW(realtime_slow_consumer_ms)},
};

const struct ana_config_table ana_realtime_config_table = ANA_CONFIG_TABLE("realtime", rows);
