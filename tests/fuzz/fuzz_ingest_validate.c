/* Fuzzes what an ingest request goes through before its commit: decoding
 * a TrackEventsRequest from any bytes, then validating and enriching each
 * event. Nothing may crash, leak or read out of bounds, whatever the input. */
#include "ana_arena.h"
#include "ana_ingest.h"

#include <stdint.h>

static const struct ana_ingest_limits limits = {
    .event_max_bytes = 32768,
    .event_max_properties = 256,
    .event_max_depth = 8,
    .batch_max_events = 1000,
    .batch_max_bytes = 4194304,
    .retention_days = 90,
    .event_max_future_ms = 86400000,
    .reject_future = false,
    .clock_skew_tolerance_ms = 2000,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 64u << 20);
  Analytics__V1__TrackEventsRequest *req =
      analytics__v1__track_events_request__unpack(&arena.pb, size, data);
  if (req) {
    struct ana_ingest_request r = {"acct-1", "127.0.0.1", 1790000000000LL, &limits};
    for (size_t i = 0; i < req->n_events && i < 1000; i++) {
      struct ana_ingest_item item;
      if (req->events[i])
        ana_ingest_prepare(&r, req->events[i], "events[0]", &arena, &item);
    }
  }
  ana_arena_fini(&arena);
  return 0;
}
