/* Live metric streams (RealtimeService.StreamMetric, /ws/metrics/{id}): per
 * metric stream (metric definition, interval, time zone) the accumulators of
 * the open bucket(s), updated by the commit hook; coalesced updates pushed
 * through the real-time hub to every subscriber; a bounded history of the
 * final values of closed buckets, and a recomputation from raw events for
 * older ones, so that a client resuming with its last sequence number gets
 * every bucket it missed.
 *
 * Sequence numbers (uint64) grow strictly per stream and survive restarts:
 *   sequence = (minutes since the epoch of the bucket start) << 27 | offset
 * where offset is, for live values, max(previous offset + 1, milliseconds
 * since the bucket start + 1), and for the final values of a closed bucket
 * with n groups, 2^27 - n + i for its i-th group (groups ordered by their
 * dimension values). They stay below 2^53 until 2097.
 *
 * Threads: the hook runs on the committer's thread and never blocks (one
 * lock, no I/O); a ticker thread rolls buckets over and sends coalesced
 * updates when due; ana_metric_streams_subscribe blocks (it may scan the
 * store) and runs on a worker. */
#ifndef ANA_METRIC_STREAMS_H
#define ANA_METRIC_STREAMS_H

#include "ana_buckets.h"
#include "ana_call.h"
#include "ana_error.h"
#include "ana_formula.h"
#include "ana_realtime.h"
#include "ana_store.h"
#include "analytics/v1/metrics.pb-c.h"

#include <stdint.h>

#define ANA_METRIC_STREAM_SEQ_BITS 27
/* Groups kept per bucket; the events of further groups are counted in one
 * group whose dimension values are all "(other)". */
#define ANA_METRIC_STREAM_MAX_GROUPS 200
/* Streams alive at once (a stream with no subscriber stays for
 * ANA_METRIC_STREAM_IDLE_MS, keeping its history for clients that resume). */
#define ANA_METRIC_STREAM_MAX_STREAMS 256
#define ANA_METRIC_STREAM_IDLE_MS 300000
/* A bucket is closed this long after its end, so that events stamped just
 * before the end and committed just after still count in its final value. */
#define ANA_METRIC_STREAM_CLOSE_GRACE_MS 200
/* The most closed buckets a resume recomputes from raw events. */
#define ANA_METRIC_STREAM_MAX_RESUME_BUCKETS 2000

struct ana_metric_streams;

struct ana_metric_streams_options {
  struct ana_realtime *hub;                    /* borrowed; outlives the streams */
  const struct ana_event_store_ops *store_ops; /* for the initial and resume scans */
  void *store;
  int interval_ms; /* METRIC_STREAM_INTERVAL: at most one update per stream per interval; 0 = each
                      commit */
  int history_buckets; /* METRIC_STREAM_HISTORY: closed buckets kept per stream; 0 = 60 */
  /* METRIC_STREAMS_PER_PEER: subscriptions one authenticated principal (or,
   * without credentials, one client IP) may hold over all streams (so that no
   * client holds all ANA_METRIC_STREAM_MAX_STREAMS); 0 = 32 */
  int streams_per_peer;
};

/* Starts the ticker thread. Returns NULL with err filled. */
struct ana_metric_streams *ana_metric_streams_create(const struct ana_metric_streams_options *o,
                                                     struct ana_error *err);

/* Ends every subscriber with UNAVAILABLE, stops the ticker and frees
 * everything. Call after the committer is gone and before the hub is.
 * NULL does nothing. */
void ana_metric_streams_destroy(struct ana_metric_streams *ms);

/* The commit hook (ana_post_commit_fn); ctx is the streams. */
void ana_metric_streams_on_commit(void *ctx, const struct ana_event_record *records, size_t n);

/* What a subscriber asks for. */
struct ana_metric_stream_request {
  const char *account_id;              /* the caller's */
  const Analytics__V1__Metric *metric; /* borrowed: copied */
  struct ana_formula *formula;         /* the metric's, parsed: taken (freed by the streams) */
  enum ana_interval interval;          /* 1m, 5m, 1h or 1d */
  const char *time_zone;               /* "" = UTC; checked by the caller */
  uint64_t after_sequence;             /* 0 = from the open bucket */
};

/* Makes call a subscriber of the metric's stream (made and loaded from the
 * store when new): it is sent what it missed after after_sequence (or the
 * open bucket's values), then live updates. From then on the hub finishes
 * the call; on_cancel and on_drain use ana_realtime_unsubscribe on the hub.
 * Returns 0, or a negative error with err filled (the caller finishes the
 * call): OUT_OF_RANGE when after_sequence is more than
 * ANA_METRIC_STREAM_MAX_RESUME_BUCKETS buckets ago, RESOURCE_EXHAUSTED, or
 * the store's error. Blocks (scans): run it on a worker. */
int ana_metric_streams_subscribe(struct ana_metric_streams *ms, struct ana_call *call,
                                 struct ana_metric_stream_request *req, struct ana_error *err);

/* Counters for tests. */
struct ana_metric_streams_stats {
  uint64_t streams;     /* alive now */
  uint64_t subscribers; /* now */
  uint64_t updates;     /* messages built (live and final) */
  uint64_t recomputed;  /* final values recomputed from raw events for resumes */
};
void ana_metric_streams_stats(struct ana_metric_streams *ms, struct ana_metric_streams_stats *out);

/* Splits a sequence number: the start of its bucket's first minute (ms) and
 * its offset. */
int64_t ana_metric_stream_seq_minute_ms(uint64_t seq);
uint64_t ana_metric_stream_seq_offset(uint64_t seq);

#endif
