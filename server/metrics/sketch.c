/* HyperLogLog and DDSketch, written from the papers (Flajolet et al. 2007,
 * Heule et al. 2013 for the 64-bit hash; Masson et al. 2019). */
#include "ana_sketch.h"

#include "ana_alloc.h"
#include "ana_error.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* varints */

int ana_sketch_put_varint(uint8_t **buf, size_t *len, size_t *cap, uint64_t v) {
  if (*len + 10 > *cap) {
    size_t ncap = *cap ? *cap * 2 : 64;
    while (ncap < *len + 10)
      ncap *= 2;
    uint8_t *b = ana_realloc(*buf, ncap);
    if (!b)
      return ANA_ERR_NOMEM;
    *buf = b;
    *cap = ncap;
  }
  do {
    uint8_t byte = v & 0x7f;
    v >>= 7;
    (*buf)[(*len)++] = byte | (v ? 0x80 : 0);
  } while (v);
  return 0;
}

long ana_sketch_get_varint(const uint8_t *in, size_t len, uint64_t *v) {
  uint64_t x = 0;
  for (size_t i = 0; i < len && i < 10; i++) {
    x |= (uint64_t)(in[i] & 0x7f) << (7 * i);
    if (!(in[i] & 0x80)) {
      *v = x;
      return (long)i + 1;
    }
  }
  return -1;
}

/* ------------------------------------------------------------------ */
/* HyperLogLog */

/* FNV-1a, then the splitmix64 finaliser so that every bit is mixed (the
 * register index takes the top 12 bits). */
uint64_t ana_hll_hash_text(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

void ana_hll_add_hash(struct ana_hll *h, uint64_t hash) {
  uint32_t idx = (uint32_t)(hash >> (64 - ANA_HLL_P));
  uint64_t rest = hash << ANA_HLL_P;
  uint8_t rho = rest ? (uint8_t)(__builtin_clzll(rest) + 1) : (uint8_t)(64 - ANA_HLL_P + 1);
  if (rho > h->reg[idx])
    h->reg[idx] = rho;
}

void ana_hll_merge(struct ana_hll *into, const struct ana_hll *from) {
  for (uint32_t i = 0; i < ANA_HLL_REGISTERS; i++)
    if (from->reg[i] > into->reg[i])
      into->reg[i] = from->reg[i];
}

double ana_hll_estimate(const struct ana_hll *h) {
  const double m = ANA_HLL_REGISTERS;
  double sum = 0;
  unsigned zeros = 0;
  for (uint32_t i = 0; i < ANA_HLL_REGISTERS; i++) {
    sum += ldexp(1.0, -h->reg[i]);
    zeros += h->reg[i] == 0;
  }
  double alpha = 0.7213 / (1.0 + 1.079 / m);
  double e = alpha * m * m / sum;
  /* Linear counting while it is the better estimator; with a 64-bit hash
   * no large-range correction is needed. */
  if (e <= 2.5 * m && zeros > 0)
    e = m * log(m / zeros);
  return round(e);
}

size_t ana_hll_encode(const struct ana_hll *h, uint8_t *out) {
  size_t nonzero = 0;
  for (uint32_t i = 0; i < ANA_HLL_REGISTERS; i++)
    nonzero += h->reg[i] != 0;
  if (nonzero * 3 + 3 < ANA_HLL_REGISTERS) {
    size_t n = 0;
    out[n++] = 1; /* sparse: count (2 bytes), then (index: 2 bytes, value) */
    out[n++] = (uint8_t)(nonzero >> 8);
    out[n++] = (uint8_t)nonzero;
    for (uint32_t i = 0; i < ANA_HLL_REGISTERS; i++) {
      if (!h->reg[i])
        continue;
      out[n++] = (uint8_t)(i >> 8);
      out[n++] = (uint8_t)i;
      out[n++] = h->reg[i];
    }
    return n;
  }
  out[0] = 2; /* dense */
  memcpy(out + 1, h->reg, ANA_HLL_REGISTERS);
  return 1 + ANA_HLL_REGISTERS;
}

long ana_hll_decode_merge(struct ana_hll *h, const uint8_t *in, size_t len) {
  if (len < 1)
    return -1;
  if (in[0] == 2) {
    if (len < 1 + ANA_HLL_REGISTERS)
      return -1;
    for (uint32_t i = 0; i < ANA_HLL_REGISTERS; i++)
      if (in[1 + i] > h->reg[i])
        h->reg[i] = in[1 + i];
    return 1 + ANA_HLL_REGISTERS;
  }
  if (in[0] != 1 || len < 3)
    return -1;
  size_t n = ((size_t)in[1] << 8) | in[2];
  if (len < 3 + 3 * n)
    return -1;
  for (size_t k = 0; k < n; k++) {
    const uint8_t *p = in + 3 + 3 * k;
    uint32_t i = ((uint32_t)p[0] << 8) | p[1];
    if (i >= ANA_HLL_REGISTERS)
      return -1;
    if (p[2] > h->reg[i])
      h->reg[i] = p[2];
  }
  return (long)(3 + 3 * n);
}

long ana_hll_encoded_len(const uint8_t *in, size_t len) {
  if (len >= 1 + ANA_HLL_REGISTERS && in[0] == 2)
    return 1 + ANA_HLL_REGISTERS;
  if (len < 3 || in[0] != 1)
    return -1;
  size_t n = ((size_t)in[1] << 8) | in[2];
  return len < 3 + 3 * n ? -1 : (long)(3 + 3 * n);
}

/* ------------------------------------------------------------------ */
/* DDSketch */

static double dds_gamma(void) {
  return (1.0 + ANA_DDS_ALPHA) / (1.0 - ANA_DDS_ALPHA);
}

/* The bin of x > 0: ceil(log_gamma(x)). */
static int32_t dds_index(double x) {
  return (int32_t)ceil(log(x) / log(dds_gamma()));
}

/* The value a bin stands for: within alpha of every x in it. */
static double dds_value(int32_t i) {
  double g = dds_gamma();
  return 2.0 * pow(g, i) / (g + 1.0);
}

static int store_add(struct ana_dds_store *st, int32_t idx, uint64_t c) {
  if (st->n == 0) {
    st->counts = ana_calloc(8, sizeof *st->counts);
    if (!st->counts)
      return ANA_ERR_NOMEM;
    st->offset = idx - 3;
    st->n = 8;
  }
  if (idx < st->offset || idx >= st->offset + (int32_t)st->n) {
    int32_t lo = idx < st->offset ? idx : st->offset;
    int32_t hi = idx >= st->offset + (int32_t)st->n ? idx + 1 : st->offset + (int32_t)st->n;
    uint32_t span = (uint32_t)(hi - lo);
    uint32_t grow = span + span / 2; /* room to grow on both sides */
    int32_t nlo = lo - (int32_t)(grow - span) / 2;
    uint64_t *counts = ana_calloc(grow, sizeof *counts);
    if (!counts)
      return ANA_ERR_NOMEM;
    memcpy(counts + (st->offset - nlo), st->counts, st->n * sizeof *counts);
    ana_free(st->counts);
    st->counts = counts;
    st->offset = nlo;
    st->n = grow;
  }
  st->counts[idx - st->offset] += c;
  return 0;
}

void ana_dds_fini(struct ana_ddsketch *s) {
  ana_free(s->pos.counts);
  ana_free(s->neg.counts);
  memset(s, 0, sizeof *s);
}

/* Magnitudes below this are counted as zero (relative error would be
 * meaningless there). */
#define DDS_MIN_MAGNITUDE 1e-300

int ana_dds_add(struct ana_ddsketch *s, double x) {
  int rc = 0;
  if (x > DDS_MIN_MAGNITUDE)
    rc = store_add(&s->pos, dds_index(x), 1);
  else if (x < -DDS_MIN_MAGNITUDE)
    rc = store_add(&s->neg, dds_index(-x), 1);
  else
    s->zero++;
  if (rc == 0)
    s->count++;
  return rc;
}

int ana_dds_merge(struct ana_ddsketch *into, const struct ana_ddsketch *from) {
  for (uint32_t i = 0; i < from->pos.n; i++)
    if (from->pos.counts[i] &&
        store_add(&into->pos, from->pos.offset + (int32_t)i, from->pos.counts[i]) < 0)
      return ANA_ERR_NOMEM;
  for (uint32_t i = 0; i < from->neg.n; i++)
    if (from->neg.counts[i] &&
        store_add(&into->neg, from->neg.offset + (int32_t)i, from->neg.counts[i]) < 0)
      return ANA_ERR_NOMEM;
  into->zero += from->zero;
  into->count += from->count;
  return 0;
}

double ana_dds_percentile(const struct ana_ddsketch *s, double p) {
  if (s->count == 0)
    return NAN;
  uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)s->count);
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  /* Ascending: the most negative first (highest index of neg). */
  for (uint32_t k = s->neg.n; k-- > 0;) {
    seen += s->neg.counts[k];
    if (seen >= rank)
      return -dds_value(s->neg.offset + (int32_t)k);
  }
  seen += s->zero;
  if (seen >= rank)
    return 0;
  for (uint32_t k = 0; k < s->pos.n; k++) {
    seen += s->pos.counts[k];
    if (seen >= rank)
      return dds_value(s->pos.offset + (int32_t)k);
  }
  return NAN; /* not reached: the counts add up to count */
}

static int store_encode(const struct ana_dds_store *st, uint8_t **buf, size_t *len, size_t *cap) {
  uint32_t lo = 0, hi = st->n;
  while (lo < hi && !st->counts[lo])
    lo++;
  while (hi > lo && !st->counts[hi - 1])
    hi--;
  /* zigzag offset, bin count, counts */
  int64_t off = (int64_t)st->offset + lo;
  /* Unsigned arithmetic: shifting a negative signed value is undefined. */
  uint64_t zigzag = ((uint64_t)off << 1) ^ (off < 0 ? UINT64_MAX : 0);
  if (ana_sketch_put_varint(buf, len, cap, zigzag) < 0 ||
      ana_sketch_put_varint(buf, len, cap, hi - lo) < 0)
    return ANA_ERR_NOMEM;
  for (uint32_t i = lo; i < hi; i++)
    if (ana_sketch_put_varint(buf, len, cap, st->counts[i]) < 0)
      return ANA_ERR_NOMEM;
  return 0;
}

int ana_dds_encode(const struct ana_ddsketch *s, uint8_t **buf, size_t *len, size_t *cap) {
  if (ana_sketch_put_varint(buf, len, cap, s->zero) < 0 ||
      store_encode(&s->pos, buf, len, cap) < 0 || store_encode(&s->neg, buf, len, cap) < 0)
    return ANA_ERR_NOMEM;
  return 0;
}

static long store_decode_merge(struct ana_dds_store *st, uint64_t *count, const uint8_t *in,
                               size_t len) {
  uint64_t zz, n, c;
  size_t p = 0;
  long k = ana_sketch_get_varint(in, len, &zz);
  if (k < 0)
    return ANA_ERR_INVALID;
  p += (size_t)k;
  if ((k = ana_sketch_get_varint(in + p, len - p, &n)) < 0 || n > 100000)
    return ANA_ERR_INVALID;
  p += (size_t)k;
  int64_t off = (int64_t)(zz >> 1) ^ -(int64_t)(zz & 1);
  for (uint64_t i = 0; i < n; i++) {
    if ((k = ana_sketch_get_varint(in + p, len - p, &c)) < 0)
      return ANA_ERR_INVALID;
    p += (size_t)k;
    if (c && store_add(st, (int32_t)(off + (int64_t)i), c) < 0)
      return ANA_ERR_NOMEM;
    *count += c;
  }
  return (long)p;
}

long ana_dds_decode_merge(struct ana_ddsketch *s, const uint8_t *in, size_t len) {
  uint64_t zero;
  long k = ana_sketch_get_varint(in, len, &zero);
  if (k < 0)
    return ANA_ERR_INVALID;
  size_t p = (size_t)k;
  s->zero += zero;
  s->count += zero;
  if ((k = store_decode_merge(&s->pos, &s->count, in + p, len - p)) < 0)
    return k;
  p += (size_t)k;
  if ((k = store_decode_merge(&s->neg, &s->count, in + p, len - p)) < 0)
    return k;
  return (long)(p + (size_t)k);
}

/* Skips one varint; -1 when malformed. */
static long skip_varints(const uint8_t *in, size_t len, uint64_t n, size_t *p) {
  for (uint64_t i = 0; i < n; i++) {
    uint64_t v;
    long k = ana_sketch_get_varint(in + *p, len - *p, &v);
    if (k < 0)
      return -1;
    *p += (size_t)k;
  }
  return 0;
}

long ana_dds_encoded_len(const uint8_t *in, size_t len) {
  size_t p = 0;
  if (skip_varints(in, len, 1, &p) < 0) /* zero */
    return -1;
  for (int store = 0; store < 2; store++) {
    uint64_t n;
    long k;
    if (skip_varints(in, len, 1, &p) < 0 || /* offset */
        (k = ana_sketch_get_varint(in + p, len - p, &n)) < 0 || n > 100000)
      return -1;
    p += (size_t)k;
    if (skip_varints(in, len, n, &p) < 0)
      return -1;
  }
  return (long)p;
}
