/* The real-time hub: hears every committed event (the committer's hook),
 * fans each one out to the subscribers whose filters it matches, keeps each
 * subscriber's live rates (events per second by eventType and eventName over
 * the last second) and sends them as an AggregateSnapshot every interval.
 *
 * Threads: the commit hook only matches, counts and enqueues (O(subscribers)
 * per event, never waits for a client); one pump thread of the hub turns
 * what is queued into AnalyticsUpdate messages and hands them to the call's
 * transport. An event (or a pushed message) goes to every subscriber as one
 * shared message (ana_call_send_shared), so each transport encodes it once
 * for all of them; only each subscriber's sequence is put in per send.
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
#include "ana_crypto_fields.h"
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
  /* Opens encrypted fields for subscribers with clear_pii (borrowed; NULL:
   * everyone gets them masked). */
  struct ana_crypto *crypto;
  const struct ana_crypto_fields *encrypted; /* ENCRYPTED_FIELDS (borrowed); NULL: none */
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
  bool clear_pii;      /* encrypted fields in clear (pii:read); masked otherwise */
};

/* Starts the hub and its pump thread. Returns NULL with err filled. */
struct ana_realtime *ana_realtime_create(const struct ana_realtime_options *o,
                                         struct ana_error *err);

/* Finishes every remaining subscriber with UNAVAILABLE, stops the pump and
 * frees the hub. Call after the transports and the committer are gone.
 * NULL does nothing. Blocks until the pump thread has stopped. */
void ana_realtime_destroy(struct ana_realtime *rt);

/* The commit hook (ana_post_commit_fn): ctx is the hub. Skips duplicates.
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

/* --- subscribers fed by another module (the metric streams) ---
 *
 * Such a subscriber has no filter: its owner pushes prebuilt messages to it,
 * each shared by every subscriber it goes to. The hub gives it the same
 * bounded buffer, pump and slow-consumer policy as the analytics stream,
 * with coalescing by key: a message replaces any unsent one with the same
 * key (it then goes out in the newer one's place, so messages still leave
 * in the order they were pushed). A message with a new key that does not
 * fit the buffer is not queued: the subscriber is then ended as soon as what
 * is queued has been sent (or after slow_consumer_ms if it stays stuck),
 * with RESOURCE_EXHAUSTED "subscriber too slow: N updates coalesced; resume
 * with afterSequence=S", S the seq of the last message sent, so that the
 * client can resume without a gap. */

struct ana_realtime_msg;
struct ana_realtime_sub;

/* A message to push: make it with an arena of arena_size bytes (grows),
 * build the message in that arena, then ana_realtime_msg_set. Returns NULL
 * when out of memory. The creator holds one reference. */
struct ana_realtime_msg *ana_realtime_msg_create(size_t arena_size);
struct ana_arena *ana_realtime_msg_arena(struct ana_realtime_msg *m);
/* message (borrowed from m's arena) is sent as is; key != 0 coalesces; seq
 * is what the close reason reports as the last sent. */
void ana_realtime_msg_set(struct ana_realtime_msg *m, const ProtobufCMessage *message, uint64_t key,
                          uint64_t seq);
uint64_t ana_realtime_msg_seq(const struct ana_realtime_msg *m);
void ana_realtime_msg_ref(struct ana_realtime_msg *m);
/* Drops a reference; NULL does nothing. */
void ana_realtime_msg_unref(struct ana_realtime_msg *m);

/* Called once, when a fed subscriber ends, before its call is finished and
 * sub freed (hub mu not held; any thread): the owner forgets sub and must
 * not push to it afterwards. */
typedef void (*ana_realtime_end_fn)(void *ctx, struct ana_realtime_sub *sub);

/* Makes call a fed subscriber. The hub finishes the call as for
 * ana_realtime_subscribe (on_cancel and on_drain use
 * ana_realtime_unsubscribe), but not before the owner, having registered
 * sub (and pushed what it had), calls ana_realtime_feed_ready. Returns NULL
 * when out of memory (the caller still owns the call). */
struct ana_realtime_sub *ana_realtime_subscribe_feed(struct ana_realtime *rt, struct ana_call *call,
                                                     ana_realtime_end_fn on_end, void *ctx);

/* Ends the owner's setup of sub: ends it with CANCELLED if the client has
 * gone already (on_end may run from here), and lets the hub finish the call
 * from now on. The owner must not touch the call afterwards. */
void ana_realtime_feed_ready(struct ana_realtime *rt, struct ana_realtime_sub *sub);

/* Queues m for sub (takes its own reference). Returns 0, or ANA_ERR_CLOSED
 * when sub is ending. Does not block; call ana_realtime_kick after a batch
 * of pushes. */
int ana_realtime_push(struct ana_realtime *rt, struct ana_realtime_sub *sub,
                      struct ana_realtime_msg *m);

/* Wakes the pump: something was pushed. */
void ana_realtime_kick(struct ana_realtime *rt);

/* Counters for tests and metrics. */
struct ana_realtime_stats {
  uint64_t subscribers;     /* now */
  uint64_t events_enqueued; /* event updates queued for some subscriber */
  uint64_t events_dropped;  /* event updates dropped for full buffers */
  uint64_t updates_sent;    /* handed to a transport */
  uint64_t slow_consumers;  /* finished with RESOURCE_EXHAUSTED */
  uint64_t coalesced;       /* pushed messages replaced by a newer one while unsent */
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
