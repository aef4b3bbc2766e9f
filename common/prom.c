/* Prometheus metrics: histogram updates, the text exposition writer and the
 * collector registry. */
#include "ana_prom.h"

#include "ana_alloc.h"
#include "ana_error.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double ana_prom_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t ana_prom_latency_buckets_n =
    sizeof ana_prom_latency_buckets / sizeof ana_prom_latency_buckets[0];

/* --- histograms --- */

void ana_prom_histogram_init(struct ana_prom_histogram *h, const double *bounds, size_t n) {
  memset(h, 0, sizeof *h);
  h->bounds = bounds;
  h->n_bounds = n > ANA_PROM_MAX_BUCKETS ? ANA_PROM_MAX_BUCKETS : n;
}

static uint64_t bits_of(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double double_of(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

void ana_prom_histogram_observe(struct ana_prom_histogram *h, double v) {
  size_t i = 0;
  while (i < h->n_bounds && v > h->bounds[i])
    i++;
  atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
  uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, bits_of(double_of(old) + v),
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

uint64_t ana_prom_histogram_count(const struct ana_prom_histogram *h) {
  return atomic_load_explicit(&((struct ana_prom_histogram *)h)->count, memory_order_relaxed);
}

/* --- the writer --- */

void ana_prom_writer_init(struct ana_prom_writer *w) {
  memset(w, 0, sizeof *w);
}

void ana_prom_writer_fini(struct ana_prom_writer *w) {
  ana_free(w->data);
  memset(w, 0, sizeof *w);
}

static void put(struct ana_prom_writer *w, const char *s, size_t n) {
  if (w->failed)
    return;
  if (w->len + n + 1 > w->cap) {
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < w->len + n + 1)
      cap *= 2;
    char *d = ana_realloc(w->data, cap);
    if (!d) {
      w->failed = true;
      return;
    }
    w->data = d;
    w->cap = cap;
  }
  memcpy(w->data + w->len, s, n);
  w->len += n;
  w->data[w->len] = '\0';
}

static void puts_(struct ana_prom_writer *w, const char *s) {
  put(w, s, strlen(s));
}

/* HELP text escapes backslash and newline; label values also the quote. */
static void put_escaped(struct ana_prom_writer *w, const char *s, bool quote) {
  for (; *s; s++) {
    if (*s == '\\')
      put(w, "\\\\", 2);
    else if (*s == '\n')
      put(w, "\\n", 2);
    else if (quote && *s == '"')
      put(w, "\\\"", 2);
    else
      put(w, s, 1);
  }
}

void ana_prom_write_family(struct ana_prom_writer *w, const char *name, const char *type,
                           const char *help) {
  puts_(w, "# HELP ");
  puts_(w, name);
  puts_(w, " ");
  put_escaped(w, help, false);
  puts_(w, "\n# TYPE ");
  puts_(w, name);
  puts_(w, " ");
  puts_(w, type);
  puts_(w, "\n");
}

/* name{labels[,le="..."]} with the extra le label when given. */
static void put_series(struct ana_prom_writer *w, const char *name, const char *suffix,
                       const char *const *labels, const char *le) {
  puts_(w, name);
  puts_(w, suffix);
  bool any = (labels && labels[0]) || le;
  if (!any)
    return;
  puts_(w, "{");
  bool first = true;
  for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
    if (!first)
      puts_(w, ",");
    first = false;
    puts_(w, labels[i]);
    puts_(w, "=\"");
    put_escaped(w, labels[i + 1], true);
    puts_(w, "\"");
  }
  if (le) {
    puts_(w, first ? "le=\"" : ",le=\"");
    puts_(w, le);
    puts_(w, "\"");
  }
  puts_(w, "}");
}

/* Shortest text that reads back as the same double; Prometheus spells the
 * specials +Inf, -Inf and NaN. */
static void format_double(char *out, size_t size, double v) {
  if (isnan(v)) {
    snprintf(out, size, "NaN");
  } else if (isinf(v)) {
    snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
  } else {
    snprintf(out, size, "%.15g", v);
    if (strtod(out, NULL) != v)
      snprintf(out, size, "%.17g", v);
  }
}

static void put_value(struct ana_prom_writer *w, const char *text) {
  puts_(w, " ");
  puts_(w, text);
  puts_(w, "\n");
}

void ana_prom_write_u64(struct ana_prom_writer *w, const char *name, const char *const *labels,
                        uint64_t value) {
  char v[32];
  snprintf(v, sizeof v, "%" PRIu64, value);
  put_series(w, name, "", labels, NULL);
  put_value(w, v);
}

void ana_prom_write_i64(struct ana_prom_writer *w, const char *name, const char *const *labels,
                        int64_t value) {
  char v[32];
  snprintf(v, sizeof v, "%" PRId64, value);
  put_series(w, name, "", labels, NULL);
  put_value(w, v);
}

void ana_prom_write_double(struct ana_prom_writer *w, const char *name, const char *const *labels,
                           double value) {
  char v[40];
  format_double(v, sizeof v, value);
  put_series(w, name, "", labels, NULL);
  put_value(w, v);
}

void ana_prom_write_histogram(struct ana_prom_writer *w, const char *name,
                              const char *const *labels, const struct ana_prom_histogram *h) {
  struct ana_prom_histogram *m = (struct ana_prom_histogram *)h;
  uint64_t cumulative = 0;
  char le[40], v[32];
  for (size_t i = 0; i <= h->n_bounds; i++) {
    cumulative += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
    if (i < h->n_bounds)
      format_double(le, sizeof le, h->bounds[i]);
    else
      snprintf(le, sizeof le, "+Inf");
    snprintf(v, sizeof v, "%" PRIu64, cumulative);
    put_series(w, name, "_bucket", labels, le);
    put_value(w, v);
  }
  char sum[40];
  format_double(sum, sizeof sum,
                double_of(atomic_load_explicit(&m->sum_bits, memory_order_relaxed)));
  put_series(w, name, "_sum", labels, NULL);
  put_value(w, sum);
  /* The count is the +Inf bucket, so the two always agree in one scrape. */
  snprintf(v, sizeof v, "%" PRIu64, cumulative);
  put_series(w, name, "_count", labels, NULL);
  put_value(w, v);
}

/* --- the registry --- */

#define MAX_COLLECTORS 32

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  ana_prom_collect_fn fn;
  void *ctx;
} collectors[MAX_COLLECTORS];
static size_t n_collectors;

int ana_prom_register(ana_prom_collect_fn fn, void *ctx) {
  int rc = ANA_ERR_FULL;
  pthread_mutex_lock(&registry_mu);
  if (n_collectors < MAX_COLLECTORS) {
    collectors[n_collectors].fn = fn;
    collectors[n_collectors].ctx = ctx;
    n_collectors++;
    rc = 0;
  }
  pthread_mutex_unlock(&registry_mu);
  return rc;
}

void ana_prom_unregister(ana_prom_collect_fn fn, void *ctx) {
  pthread_mutex_lock(&registry_mu);
  for (size_t i = 0; i < n_collectors; i++) {
    if (collectors[i].fn == fn && collectors[i].ctx == ctx) {
      memmove(&collectors[i], &collectors[i + 1], (n_collectors - i - 1) * sizeof collectors[0]);
      n_collectors--;
      break;
    }
  }
  pthread_mutex_unlock(&registry_mu);
}

void ana_prom_render(struct ana_prom_writer *w) {
  pthread_mutex_lock(&registry_mu);
  for (size_t i = 0; i < n_collectors; i++)
    collectors[i].fn(w, collectors[i].ctx);
  pthread_mutex_unlock(&registry_mu);
}
