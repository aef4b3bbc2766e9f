/* The time index's run codec (time_runs.h): entries sorted by (ts, seq) as
 * varint deltas, a few bytes per event where a B-tree index entry took 26. */
#include "time_runs.h"

#include "byte_codec.h"

int ana_time_entry_cmp(const void *a, const void *b) {
  const struct ana_time_entry *x = a, *y = b;
  if (x->ts != y->ts)
    return x->ts < y->ts ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static uint64_t zigzag(int64_t v) {
  return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v) {
  return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

size_t ana_time_run_encode(int64_t base, const struct ana_time_entry *e, size_t n, uint8_t *out) {
  size_t len = 0;
  int64_t ts = base;
  uint64_t seq = 0;
  for (size_t i = 0; i < n; i++) {
    /* The first ts from the base may be negative (an hour before 1970);
     * later ones never go down, but wrapping arithmetic keeps any order
     * decodable. */
    uint64_t d = (uint64_t)e[i].ts - (uint64_t)ts;
    len += ana_varint_put(out + len, i ? d : zigzag((int64_t)d));
    len += ana_varint_put(out + len, zigzag((int64_t)(e[i].seq - seq)));
    len += ana_varint_put(out + len, zigzag(e[i].name));
    ts = e[i].ts;
    seq = e[i].seq;
  }
  return len;
}

bool ana_time_run_decode(int64_t base, const uint8_t *p, size_t len, size_t n,
                         struct ana_time_entry *out) {
  size_t at = 0;
  int64_t ts = base;
  uint64_t seq = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t d, s, name;
    if (!ana_varint_get(p, len, &at, &d) || !ana_varint_get(p, len, &at, &s) ||
        !ana_varint_get(p, len, &at, &name))
      return false;
    ts = (int64_t)((uint64_t)ts + (i ? d : (uint64_t)unzigzag(d)));
    seq += (uint64_t)unzigzag(s);
    out[i] = (struct ana_time_entry){.ts = ts, .name = unzigzag(name), .seq = seq};
  }
  return at == len;
}

size_t ana_time_run_merge(const struct ana_time_entry *a, size_t na, const struct ana_time_entry *b,
                          size_t nb, struct ana_time_entry *out) {
  size_t i = 0, j = 0, k = 0;
  while (i < na && j < nb)
    out[k++] = ana_time_entry_cmp(&b[j], &a[i]) < 0 ? b[j++] : a[i++];
  while (i < na)
    out[k++] = a[i++];
  while (j < nb)
    out[k++] = b[j++];
  return k;
}

size_t ana_time_run_merge_count(const int64_t *sizes, size_t k, size_t max_runs) {
  size_t open = 0; /* the newest runs that are not full */
  while (open < k && sizes[k - 1 - open] < ANA_TIME_RUN_FULL)
    open++;
  if (open < 2)
    return 0;
  int64_t sum = sizes[k - 1];
  size_t m = 1;
  while (m < open && sizes[k - 1 - m] <= 2 * sum && sum + sizes[k - 1 - m] <= ANA_TIME_RUN_FULL) {
    sum += sizes[k - 1 - m];
    m++;
  }
  if (m < 2 && open > max_runs)
    m = 2;
  return m >= 2 ? m : 0;
}
