/* Metrics in the Prometheus text exposition format (version 0.0.4): cheap
 * thread-safe counters, gauges and histograms (atomics only, no locks on
 * the hot path), a writer for the text format, and a registry of
 * collectors that /metrics renders in turn.
 *
 * A module keeps its own metric objects (static or in its state) and
 * registers one collector that writes them; nothing is named or allocated
 * when a value changes. */
#ifndef ANA_PROM_H
#define ANA_PROM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANA_PROM_MAX_BUCKETS 16

struct ana_prom_counter {
  atomic_uint_fast64_t v;
};

struct ana_prom_gauge {
  atomic_int_fast64_t v;
};

/* A histogram over fixed upper bounds (ascending, +Inf implied). Zeroed
 * memory plus ana_prom_histogram_init is a valid histogram. */
struct ana_prom_histogram {
  const double *bounds;                                   /* borrowed; must outlive the histogram */
  size_t n_bounds;                                        /* at most ANA_PROM_MAX_BUCKETS */
  atomic_uint_fast64_t buckets[ANA_PROM_MAX_BUCKETS + 1]; /* not cumulative; last = +Inf */
  atomic_uint_fast64_t count;
  atomic_uint_fast64_t sum_bits; /* the sum, a double's bits (CAS-updated) */
};

/* Latency buckets in seconds: 0.5 ms to 10 s. */
extern const double ana_prom_latency_buckets[];
extern const size_t ana_prom_latency_buckets_n;

static inline void ana_prom_counter_add(struct ana_prom_counter *c, uint64_t n) {
  atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}
static inline uint64_t ana_prom_counter_get(const struct ana_prom_counter *c) {
  return atomic_load_explicit(&((struct ana_prom_counter *)c)->v, memory_order_relaxed);
}
static inline void ana_prom_gauge_add(struct ana_prom_gauge *g, int64_t n) {
  atomic_fetch_add_explicit(&g->v, n, memory_order_relaxed);
}
static inline void ana_prom_gauge_set(struct ana_prom_gauge *g, int64_t n) {
  atomic_store_explicit(&g->v, n, memory_order_relaxed);
}
static inline int64_t ana_prom_gauge_get(const struct ana_prom_gauge *g) {
  return atomic_load_explicit(&((struct ana_prom_gauge *)g)->v, memory_order_relaxed);
}

/* Sets the bounds (borrowed) and zeroes the counts. Not thread-safe. */
void ana_prom_histogram_init(struct ana_prom_histogram *h, const double *bounds, size_t n);
/* Records one observation. Thread-safe, lock-free. */
void ana_prom_histogram_observe(struct ana_prom_histogram *h, double v);
uint64_t ana_prom_histogram_count(const struct ana_prom_histogram *h);

/* --- the text format --- */

/* Output buffer: grows with malloc; a failed allocation sets `failed` and
 * later writes do nothing. The caller frees data (ana_prom_writer_fini). */
struct ana_prom_writer {
  char *data;
  size_t len, cap;
  bool failed;
};

void ana_prom_writer_init(struct ana_prom_writer *w);
void ana_prom_writer_fini(struct ana_prom_writer *w);

/* "# HELP name help\n# TYPE name type\n"; type is "counter", "gauge" or
 * "histogram". help is escaped (backslash, newline). Write each family's
 * header once, before its samples. */
void ana_prom_write_family(struct ana_prom_writer *w, const char *name, const char *type,
                           const char *help);

/* One sample: name{k1="v1",...} value. labels: key, value, ..., NULL (or
 * NULL for none); values are escaped (backslash, quote, newline). */
void ana_prom_write_u64(struct ana_prom_writer *w, const char *name, const char *const *labels,
                        uint64_t value);
void ana_prom_write_i64(struct ana_prom_writer *w, const char *name, const char *const *labels,
                        int64_t value);
void ana_prom_write_double(struct ana_prom_writer *w, const char *name, const char *const *labels,
                           double value);

/* The series of one histogram: name_bucket{labels,le="..."} (cumulative,
 * ending with le="+Inf"), name_sum{labels}, name_count{labels}. */
void ana_prom_write_histogram(struct ana_prom_writer *w, const char *name,
                              const char *const *labels, const struct ana_prom_histogram *h);

/* --- the registry --- */

/* Writes a module's families. Called by ana_prom_render on the rendering
 * thread, with the registry lock held: it must not block or register. */
typedef void (*ana_prom_collect_fn)(struct ana_prom_writer *w, void *ctx);

/* Adds a collector (at most 32). Returns 0, or ANA_ERR_FULL. Thread-safe. */
int ana_prom_register(ana_prom_collect_fn fn, void *ctx);
/* Removes the collector registered with exactly (fn, ctx); after return it
 * is not running and will not run again. */
void ana_prom_unregister(ana_prom_collect_fn fn, void *ctx);
/* Runs every collector in registration order into w. Thread-safe. */
void ana_prom_render(struct ana_prom_writer *w);

#endif
