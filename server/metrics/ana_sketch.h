/* Mergeable sketches for rollups: HyperLogLog for distinct counts and
 * DDSketch for quantiles with a relative-error guarantee. Both merge
 * exactly: merge(sketch(A), sketch(B)) == sketch(A u B), so rollup cells of
 * any granularity can be combined in any order. */
#ifndef ANA_SKETCH_H
#define ANA_SKETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- HyperLogLog: 2^12 registers over a 64-bit hash. The relative
 * standard error is 1.04 / sqrt(4096) = 1.6%; small cardinalities (below
 * 2.5 * 4096) use linear counting, which is nearly exact. --- */
#define ANA_HLL_P 12
#define ANA_HLL_REGISTERS (1u << ANA_HLL_P)
#define ANA_HLL_STD_ERROR 0.01625

struct ana_hll {
  uint8_t reg[ANA_HLL_REGISTERS];
};

/* The 64-bit hash the sketch expects for a text value. */
uint64_t ana_hll_hash_text(const char *s);
void ana_hll_add_hash(struct ana_hll *h, uint64_t hash);
void ana_hll_merge(struct ana_hll *into, const struct ana_hll *from);
double ana_hll_estimate(const struct ana_hll *h);
/* Encoding: sparse (index, value) pairs when that is shorter, else dense.
 * encode writes at most ANA_HLL_MAX_ENCODED bytes and returns the length;
 * decode_merge merges an encoding into h and returns the bytes read, or -1
 * when malformed. */
#define ANA_HLL_MAX_ENCODED (1 + ANA_HLL_REGISTERS)
size_t ana_hll_encode(const struct ana_hll *h, uint8_t *out);
long ana_hll_decode_merge(struct ana_hll *h, const uint8_t *in, size_t len);
/* The length of the encoding at in, or -1 when malformed (no merge). */
long ana_hll_encoded_len(const uint8_t *in, size_t len);

/* --- DDSketch with relative accuracy alpha = 0.01: every quantile it
 * returns is within 1% (relative) of the exact value of the same rank.
 * Values of either sign; zero is counted exactly. --- */
#define ANA_DDS_ALPHA 0.01

struct ana_dds_store {
  int32_t offset; /* index of counts[0] */
  uint32_t n;     /* bins in use */
  uint64_t *counts;
};

struct ana_ddsketch {
  struct ana_dds_store pos, neg;
  uint64_t zero;
  uint64_t count;
};

/* Zero-initialised memory is an empty sketch; fini frees the bins. */
void ana_dds_fini(struct ana_ddsketch *s);
/* Returns 0 or ANA_ERR_NOMEM. */
int ana_dds_add(struct ana_ddsketch *s, double x);
int ana_dds_merge(struct ana_ddsketch *into, const struct ana_ddsketch *from);
/* The value at nearest rank ceil(p/100 * count) (as an exact percentile
 * would pick it), within ANA_DDS_ALPHA relative; NAN when empty. */
double ana_dds_percentile(const struct ana_ddsketch *s, double p);
/* Appends the encoding to a growing buffer (*buf, *len, *cap; realloc'd);
 * returns 0 or ANA_ERR_NOMEM. decode_merge returns bytes read,
 * ANA_ERR_INVALID when malformed or ANA_ERR_NOMEM (bins it could not grow). */
int ana_dds_encode(const struct ana_ddsketch *s, uint8_t **buf, size_t *len, size_t *cap);
long ana_dds_decode_merge(struct ana_ddsketch *s, const uint8_t *in, size_t len);
/* The length of the encoding at in, or -1 when malformed (no merge). */
long ana_dds_encoded_len(const uint8_t *in, size_t len);

/* Varint helpers shared by the encodings (LEB128). */
int ana_sketch_put_varint(uint8_t **buf, size_t *len, size_t *cap, uint64_t v);
long ana_sketch_get_varint(const uint8_t *in, size_t len, uint64_t *v);

#endif
