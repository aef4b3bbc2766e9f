/* Metric rollups: per metric, definition version, time cell and group of
 * dimension values, the mergeable state of every aggregate term of the
 * formula (count, sum, min, max; HyperLogLog; DDSketch), kept in the local
 * database and maintained by one background thread that follows the commit
 * sequence. Dashboards read cells instead of raw events.
 *
 * Cells are 15 minutes, 1 hour and 1 day long, aligned in UTC; a query in
 * any time zone merges the coarsest cells that fit its local buckets (15
 * minutes serve half- and quarter-hour offsets) and reads raw events for
 * the parts of its range that no cell fits (an unaligned from or to).
 *
 * Crash safety: a metric's cells and its watermark (the commit sequence
 * number up to which its cells include events) change in one transaction;
 * at start-up, and whenever events are committed, the thread replays the
 * events with seq > watermark. Queries add the raw events committed after
 * the watermark they read, so an answer is exact whatever the lag.
 *
 * Retention: a cell is deleted once its whole time span is older than the
 * events' retention (its events are deleted by then); a cell across the
 * cut-off stays until it has passed.
 *
 * Memory: the cells of the levels queries read are kept in memory, packed,
 * within a budget; the thread loads a level when a query missed it and
 * updates its cells and watermark together, so a query reads them without
 * the database. Beyond the budget (least recently read levels are evicted;
 * a level larger than the whole budget is never kept) queries read the
 * cells of their range from the database. */
#ifndef ANA_ROLLUP_H
#define ANA_ROLLUP_H

#include "ana_error.h"
#include "ana_formula.h"
#include "ana_metric_query.h"
#include "ana_store.h"

#include <stdbool.h>

struct ana_rollups;

#define ANA_ROLLUP_CACHE_DEFAULT_MB 256

struct ana_rollup_options {
  int chunk_events; /* most events read per metric and round (backfill and catch-up) */
  /* Memory for cells kept in memory, in bytes: 0 = the default
   * (ANA_ROLLUP_CACHE_DEFAULT_MB), negative = none (always the database). */
  int64_t cache_bytes;
  /* Cells whose whole time span is older than this many days (the events'
   * RETENTION_DAYS) are deleted, in chunks, every sweep_interval_ms (0 = a
   * minute); 0 keeps them. */
  int retention_days;
  int sweep_interval_ms;
  int expiry_chunk; /* most cells deleted per transaction; 0 = 2000 */
};

/* Loads the definitions from the local database and starts the thread;
 * its progress is on /metrics (ana_rollup_lag_events, ...) until it is
 * destroyed. Borrows db and the store (they must outlive it). Blocks. NULL
 * with err filled on failure. */
struct ana_rollups *ana_rollup_create(struct ana_local_db *db,
                                      const struct ana_event_store_ops *ops, void *store,
                                      const struct ana_rollup_options *o, struct ana_error *err);

/* Stops the thread (after its current chunk); NULL does nothing. */
void ana_rollup_destroy(struct ana_rollups *r);

/* The commit hook (ana_post_commit_fn): notes the last commit sequence
 * number (for the lag on /metrics) and wakes the thread. Never blocks
 * beyond a short mutex. */
void ana_rollup_on_commit(void *ctx, const struct ana_event_record *records, size_t n);

/* Records the metric's current definition: its filters, dimensions, type
 * and formula (parsed, every name resolved; borrowed). When that differs
 * from the stored one, a new version starts and is backfilled from the raw
 * events in the background; the same definition does nothing. Blocks (one
 * short write). Returns 0 or a negative error with err filled. */
int ana_rollup_define(struct ana_rollups *r, const char *account_id, const Analytics__V1__Metric *m,
                      const struct ana_formula *f, struct ana_error *err);

/* Starts a new version of every metric whose definition groups or filters
 * by a field reads says yes to (a dimension or a filter's field), with the
 * same definition, backfilled from the events in the background: after the
 * events were rewritten (re-encryption); the old cells go once the new
 * version is complete. A version begun at since_ms (wall clock) or later
 * is left as it is. Returns how many, or a negative error. */
int ana_rollup_rebuild(struct ana_rollups *r, bool (*reads)(void *ctx, const char *field),
                       void *ctx, int64_t since_ms, struct ana_error *err);

/* The accounts that have metrics with rollups, each once, in *out (the
 * caller frees each and the array with ana_free); how many. */
size_t ana_rollup_accounts(struct ana_rollups *r, char ***out);

/* Whether every metric's current version is backfilled and the cells of
 * the versions it replaced are deleted (whatever was committed since). */
bool ana_rollup_backfilled(struct ana_rollups *r);

/* Forgets a deleted metric; its cells are deleted in the background. */
int ana_rollup_forget(struct ana_rollups *r, const char *metric_id, struct ana_error *err);

/* Answers q (q->metric->metric_id names the metric) from the rollups.
 * Returns 1 when answered, 0 when the rollups cannot answer it (unknown
 * metric, another definition, backfill not complete: answer from raw events),
 * or a negative error with err filled. Blocks. */
int ana_rollup_query(struct ana_rollups *r, const struct ana_metric_query *q,
                     struct ana_arena *arena, Analytics__V1__MetricData *out,
                     struct ana_error *err);

/* State of a metric's rollups, for tests and operations. */
struct ana_rollup_status {
  bool known, complete;
  int64_t version;
  uint64_t watermark, backfill_to;
  unsigned cached_levels; /* bit l: level l (15 min, 1 h, 1 day) is in memory */
  size_t cache_bytes;     /* held by the cache, every metric */
  /* Queries answered since start-up, every metric: with cells from memory,
   * with cells read from the database. */
  uint64_t memory_queries, database_queries;
};
void ana_rollup_status(struct ana_rollups *r, const char *metric_id, struct ana_rollup_status *out);

/* Waits (at most timeout_ms) until every metric's rollups include every event
 * committed so far, the levels queries asked for are in memory (or
 * refused) and no expired cells are due for deletion; returns true when
 * they are. For tests and benchmarks. */
bool ana_rollup_wait_idle(struct ana_rollups *r, int timeout_ms);

#endif
