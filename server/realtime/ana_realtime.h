/* The real-time hub: hears every committed event (the committer's hook),
 * fans each one out to the subscribers whose filters it matches, keeps each
 * subscriber's live rates (events per second by eventType and eventName over
 * the last second) and sends them as an AggregateSnapshot every interval.
 *
 * Threads: the commit hook only matches, counts and enqueues (O(subscribers)
 * per event, never waits for a client); one pump thread of the hub turns
 * what is queued into AnalyticsUpdate messages and hands them to the call's
 * transport with ana_call_send.
 *
 * Buffers: each subscriber holds at most buffer_size updates, counting both
 * those waiting in the hub and those the transport has queued (the gRPC
 * transport stops taking them at STREAM_SEND_QUEUE_MAX, the WebSocket bridge
 * at STREAM_BUFFER_SIZE). Beyond that, events are dropped and counted; the
 * next snapshot still goes out ahead of them (one pending snapshot at most,
 * replaced by a newer one) carrying the count. A subscriber that stays behind
 * for slow_consumer_ms is finished with RESOURCE_EXHAUSTED. */
#ifndef ANA_REALTIME_H
#define ANA_REALTIME_H

#include "ana_call.h"
#include "ana_error.h"
#include "ana_store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_realtime;

struct ana_realtime_options {
  size_t buffer_size;        /* STREAM_BUFFER_SIZE: updates held per subscriber; 0 = 1024 */
  int aggregate_interval_ms; /* REALTIME_AGGREGATE_INTERVAL; 0 = 1000 */
  int slow_consumer_ms;      /* REALTIME_SLOW_CONSUMER_MS; 0 = 10000 */
};

/* What a subscriber wants. Strings are borrowed and must live as long as
 * the subscription (the call's arena does). */
struct ana_realtime_filter {
  const char *account_id;             /* required: only this account's events */
  const char *event_type;             /* NULL or "" = any */
  const char *event_name;             /* NULL or "" = any */
  const char *const *property_keys;   /* equality on top-level properties, */
  const char *const *property_values; /* compared as text (as SearchEvents does) */
  size_t n_properties;
  bool include_events; /* send each matching event; aggregates are always sent */
};

/* Starts the hub and its pump thread. Returns NULL with err filled. */
struct ana_realtime *ana_realtime_create(const struct ana_realtime_options *o,
                                         struct ana_error *err);

/* Finishes every remaining subscriber with UNAVAILABLE, stops the pump and
 * frees the hub. Call after the transports and the committer are gone.
 * NULL does nothing. Blocks until the pump thread has stopped. */
void ana_realtime_destroy(struct ana_realtime *rt);

/* The commit hook (ana_commit_hook_fn): ctx is the hub. Skips duplicates.
 * Runs on the committer's thread; takes the hub's lock briefly, never
 * waits for a subscriber. */
void ana_realtime_on_commit(void *ctx, const struct ana_event_record *records, size_t n);

/* Makes a server-streaming call a subscriber. From now on the hub finishes
 * the call (exactly once): when the client goes (ana_realtime_unsubscribe
 * from on_cancel), on drain, when it is too slow, or at destroy. The filter
 * is copied; its strings are borrowed. Returns 0, or ANA_ERR_NOMEM (the
 * caller still owns the call and finishes it). Does not block. */
int ana_realtime_subscribe(struct ana_realtime *rt, struct ana_call *call,
                           const struct ana_realtime_filter *f);

/* Ends the subscription of call (from on_cancel or on_drain) and finishes
 * the call with status once the pump has let go of it. Idempotent; calls
 * that are not subscribers are ignored. Any thread; does not block. */
void ana_realtime_unsubscribe(struct ana_realtime *rt, struct ana_call *call,
                              const struct ana_error *status);

/* Counters for tests and metrics. */
struct ana_realtime_stats {
  uint64_t subscribers;     /* now */
  uint64_t events_enqueued; /* event updates queued for some subscriber */
  uint64_t events_dropped;  /* event updates dropped for full buffers */
  uint64_t updates_sent;    /* handed to a transport */
  uint64_t slow_consumers;  /* finished with RESOURCE_EXHAUSTED */
};
void ana_realtime_stats(struct ana_realtime *rt, struct ana_realtime_stats *out);

/* --- helpers shared with the unit tests --- */

/* Whether an event's property value equals text the way the store's search
 * compares them (CAST(json_extract(...) AS TEXT)): strings as they are,
 * integral numbers without a fraction ("150"), other numbers with up to 15
 * significant digits, booleans as "1"/"0" (also "true"/"false"), null never. */
struct Google__Protobuf__Value;
bool ana_realtime_value_equals(const struct Google__Protobuf__Value *v, const char *text);

#endif
