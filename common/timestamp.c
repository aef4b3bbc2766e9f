/* google.protobuf.Timestamp to and from milliseconds (ana_timestamp.h). */
#include "ana_timestamp.h"

#include "ana_arena.h"

void ana_timestamp_set(Google__Protobuf__Timestamp *t, int64_t ms) {
  google__protobuf__timestamp__init(t);
  int64_t s = ms / 1000, r = ms % 1000;
  if (r < 0) {
    r += 1000;
    s--;
  }
  t->seconds = s;
  t->nanos = (int32_t)r * 1000000;
}

Google__Protobuf__Timestamp *ana_timestamp_new(struct ana_arena *a, int64_t ms) {
  Google__Protobuf__Timestamp *t = ana_arena_alloc(a, sizeof *t);
  if (t)
    ana_timestamp_set(t, ms);
  return t;
}

int64_t ana_timestamp_parts_ms(int64_t seconds, int32_t nanos) {
  int64_t ms = nanos / 1000000, out;
  if (nanos % 1000000 < 0)
    ms--;
  /* Opposite signs: borrow a second, so that a sum near INT64_MIN does not
   * pass through an overflowing product. */
  if (seconds < 0 && ms > 0) {
    seconds++;
    ms -= 1000;
  }
  if (__builtin_mul_overflow(seconds, 1000, &out))
    return seconds < 0 ? INT64_MIN : INT64_MAX;
  if (__builtin_add_overflow(out, ms, &out))
    return ms < 0 ? INT64_MIN : INT64_MAX;
  return out;
}

int64_t ana_timestamp_ms(const Google__Protobuf__Timestamp *t) {
  return t ? ana_timestamp_parts_ms(t->seconds, t->nanos) : 0;
}
