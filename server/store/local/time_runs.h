/* The events' time index as sorted runs (time_run_codec.c): an account's
 * events of one hour as (ts, event name's number, seq) entries sorted by
 * (ts, seq), packed into a blob of varint deltas. Nothing here touches
 * SQLite, so the codec is tested on its own. */
#ifndef ANA_TIME_RUNS_H
#define ANA_TIME_RUNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANA_TIME_RUN_HOUR_MS INT64_C(3600000)

/* One event of a run: its row's key is ana_event_key(ts, seq). */
struct ana_time_entry {
  int64_t ts;
  int64_t name; /* event_strings id of the event's name */
  uint64_t seq;
};

/* The hour of a timestamp: truncating, as SQLite's ts / 3600000 (and
 * ana_event_day) divide, so that an hour never straddles two UTC days. */
static inline int64_t ana_time_run_hour(int64_t ts_ms) {
  return ts_ms / ANA_TIME_RUN_HOUR_MS;
}

/* The hours (inclusive) of the UTC day `day` (ana_event_day's), which
 * truncation makes 47 hours long around 0. */
static inline void ana_time_run_day_hours(int64_t day, int64_t *first, int64_t *last) {
  *first = day > 0 ? day * 24 : day * 24 - 23;
  *last = day < 0 ? day * 24 : day * 24 + 23;
}

/* Order of a run's entries: ts, then seq. */
int ana_time_entry_cmp(const void *a, const void *b);

/* The most bytes a run of n entries encodes to. */
static inline size_t ana_time_run_bound(size_t n) {
  return n * 30 + 1;
}

/* Encodes n entries (sorted by ana_time_entry_cmp) into out (room:
 * ana_time_run_bound(n)); returns the bytes written. Each entry: ts less
 * the previous one's (the first's: less base, zig-zag), seq less the
 * previous one's (zig-zag), the name's number (zig-zag). */
size_t ana_time_run_encode(int64_t base, const struct ana_time_entry *e, size_t n, uint8_t *out);

/* Decodes a run of n entries encoded with base from p[0..len) into out;
 * false when the bytes do not hold exactly n entries. */
bool ana_time_run_decode(int64_t base, const uint8_t *p, size_t len, size_t n,
                         struct ana_time_entry *out);

/* Merges runs a[0..na) and b[0..nb) (each sorted) into out; returns na + nb. */
size_t ana_time_run_merge(const struct ana_time_entry *a, size_t na, const struct ana_time_entry *b,
                          size_t nb, struct ana_time_entry *out);

/* A run of this many entries or more is not merged any more: a merge then
 * rewrites at most about this many entries (an hour of events tracked live
 * at a high rate holds several such runs, disjoint in time). */
#define ANA_TIME_RUN_FULL (INT64_C(1) << 16)

/* The size-tiered rule: given the sizes of an hour's k runs, oldest first,
 * how many of the newest to merge into one (0: none). Of the newest runs
 * below ANA_TIME_RUN_FULL, the newest are merged while the next older one
 * is at most twice their sum (and the sum stays below ANA_TIME_RUN_FULL),
 * so an hour holds O(log n) runs besides full ones and an entry is
 * rewritten O(log n) times; with more than max_runs of them, at least the
 * two newest are merged. */
size_t ana_time_run_merge_count(const int64_t *sizes, size_t k, size_t max_runs);

#endif
