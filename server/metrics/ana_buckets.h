/* Time buckets for metric queries: 1m, 5m, 1h, 1d, aligned in an IANA time
 * zone, so that hour and day buckets follow local time (half- and
 * quarter-hour offsets, 23- and 25-hour days at DST changes). */
#ifndef ANA_BUCKETS_H
#define ANA_BUCKETS_H

#include "ana_error.h"

#include <stddef.h>
#include <stdint.h>

enum ana_interval {
  ANA_INTERVAL_1M,
  ANA_INTERVAL_5M,
  ANA_INTERVAL_1H,
  ANA_INTERVAL_1D,
};

/* Parses "1m", "5m", "1h", "1d", or "auto"/"" (the finest interval giving at
 * most about 300 buckets over [from, to)). Returns 0 or ANA_ERR_INVALID with
 * err naming the field "interval". */
int ana_interval_parse(const char *text, int64_t from_ms, int64_t to_ms, enum ana_interval *out,
                       struct ana_error *err);
const char *ana_interval_name(enum ana_interval iv);

/* Nominal length in milliseconds (a local day may be 23 or 25 hours). */
int64_t ana_interval_ms(enum ana_interval iv);

/* Fills *starts (malloc'd; caller frees) with the start of every bucket that
 * overlaps [from_ms, to_ms): the first is the start of the bucket holding
 * from_ms, in the local time of tz ("" or NULL = UTC); each following one
 * is the next local boundary. *n gets the count. Returns 0, or
 * ANA_ERR_INVALID with err naming "timeZone" (unknown zone) or "interval"
 * (more than max_buckets). */
int ana_buckets_make(int64_t from_ms, int64_t to_ms, enum ana_interval iv, const char *tz,
                     size_t max_buckets, int64_t **starts, size_t *n, struct ana_error *err);

/* Index of the bucket holding ts (starts sorted; the last bucket ends at
 * end_ms), or n when ts is outside. */
size_t ana_bucket_index(const int64_t *starts, size_t n, int64_t end_ms, int64_t ts);

#endif
