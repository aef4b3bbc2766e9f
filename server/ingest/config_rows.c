/* Configuration rows: ingestion settings: limits, timestamp policy, group commits. Adding a
 * variable = a row here and a member in struct ana_ingest_settings. */
#include "ana_ingest_config.h"

#include <stdlib.h>
#include <string.h>

static bool valid_timestamp_policy(const char *s) {
  return strcmp(s, "correct") == 0 || strcmp(s, "reject") == 0;
}

#define ROW(member) ANA_CONFIG_FIELD(struct ana_ingest_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "BATCH_SIZE",
     .type = ANA_CONFIG_INT,
     .def = "1000",
     .min = 1,
     .max = 100000,
     .help = "Most events written by one group commit.",
     ROW(batch_size)},
    {.name = "PROCESSING_INTERVAL",
     .type = ANA_CONFIG_DURATION,
     .def = "0",
     .min = 0,
     .max = 60000,
     .help = "How long a group commit waits for more events while requests are sharing "
             "commits; 0 starts the next commit at once (requests arriving during a commit "
             "still share the next one).",
     ROW(processing_interval_ms)},
    {.name = "EVENT_MAX_BYTES",
     .type = ANA_CONFIG_INT,
     .def = "32768",
     .min = 256,
     .max = 4194304,
     .help = "Largest event accepted, in bytes of its serialized form.",
     ROW(event_max_bytes)},
    {.name = "EVENT_MAX_PROPERTIES",
     .type = ANA_CONFIG_INT,
     .def = "256",
     .min = 1,
     .max = 100000,
     .help = "Most properties in one event, counting nested keys.",
     ROW(event_max_properties)},
    {.name = "EVENT_MAX_DEPTH",
     .type = ANA_CONFIG_INT,
     .def = "8",
     .min = 1,
     .max = 64,
     .help = "Deepest nesting of objects and lists in event properties.",
     ROW(event_max_depth)},
    {.name = "BATCH_MAX_EVENTS",
     .type = ANA_CONFIG_INT,
     .def = "1000",
     .min = 1,
     .max = 100000,
     .help = "Most events in one batch request or stream message.",
     ROW(batch_max_events)},
    {.name = "BATCH_MAX_BYTES",
     .type = ANA_CONFIG_INT,
     .def = "4194304",
     .min = 1024,
     .max = 268435456,
     .help = "Largest batch request or stream message, in bytes.",
     ROW(batch_max_bytes)},
    {.name = "EVENT_MAX_FUTURE",
     .type = ANA_CONFIG_DURATION,
     .def = "24h",
     .min = 0,
     .max = 31536000000LL,
     .help = "How far in the future (after skew correction) an event timestamp may be.",
     ROW(event_max_future_ms)},
    {.name = "TIMESTAMP_POLICY",
     .type = ANA_CONFIG_STRING,
     .def = "correct",
     .help = "What happens to an event whose timestamp is too far in the future: correct "
             "stores it at the time it was received (answer CORRECTED), reject refuses it "
             "(REJECTED). Events older than RETENTION_DAYS are always rejected.",
     .check = valid_timestamp_policy,
     .expect = "correct or reject",
     ROW(timestamp_policy)},
    {.name = "CLOCK_SKEW_TOLERANCE",
     .type = ANA_CONFIG_DURATION,
     .def = "2000",
     .min = 0,
     .max = 3600000,
     .help = "When an event carries sentAt and the client clock differs from the server's "
             "by more than this, its timestamp is shifted by the difference (answer CORRECTED).",
     ROW(clock_skew_tolerance_ms)},
    {.name = "INGEST_QUEUE_MAX",
     .type = ANA_CONFIG_INT,
     .def = "100000",
     .min = 1,
     .max = 10000000,
     .help = "Most events waiting for a commit; beyond it requests get RESOURCE_EXHAUSTED.",
     ROW(ingest_queue_max)},
    {.name = "INGEST_STREAM_MAX_IN_FLIGHT",
     .type = ANA_CONFIG_INT,
     .def = "16",
     .min = 1,
     .max = 10000,
     .help = "Batches of one ingest stream being committed at once; reading pauses beyond it.",
     ROW(ingest_stream_max_in_flight)},
    {.name = "EVENT_NAMES_MAX",
     .type = ANA_CONFIG_INT,
     .def = "10000",
     .min = 1,
     .max = 1000000,
     .help = "Event names kept per account in its catalog (GET /api/events/names); events with "
             "further names are stored and counted but their names are not added.",
     ROW(event_names_max)},
};

const struct ana_config_table ana_ingest_config_table = ANA_CONFIG_TABLE("ingest", rows);
