/* google.protobuf.Timestamp to and from milliseconds since the Unix epoch:
 * the one conversion (the unit test one_timestamp fails on a copy). Times
 * before 1970 floor: -1 ms is seconds -1, nanos 999000000, as the
 * Timestamp's rules say (nanos in [0, 999999999]). */
#ifndef ANA_TIMESTAMP_H
#define ANA_TIMESTAMP_H

#include "google/protobuf/timestamp.pb-c.h"

#include <stdint.h>

struct ana_arena;

/* Initialises t to ms. */
void ana_timestamp_set(Google__Protobuf__Timestamp *t, int64_t ms);
/* A Timestamp of ms in arena a (lives as long as the arena); NULL when out
 * of memory. */
Google__Protobuf__Timestamp *ana_timestamp_new(struct ana_arena *a, int64_t ms);
/* The milliseconds of seconds and nanos (nanos floor to the millisecond;
 * saturates at INT64_MIN and INT64_MAX). */
int64_t ana_timestamp_parts_ms(int64_t seconds, int32_t nanos);
/* The milliseconds of t, as ana_timestamp_parts_ms; t NULL: 0. */
int64_t ana_timestamp_ms(const Google__Protobuf__Timestamp *t);

#endif
