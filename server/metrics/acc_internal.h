/* The one reading of an event for a metric, shared by the live accumulators
 * (acc.c) and metric queries and rollups (query.c): field access, filters,
 * group keys, per-term aggregates and their values. One copy, so that a live
 * value, a raw query and a rollup cannot disagree. Not for other modules. */
#ifndef ANA_ACC_INTERNAL_H
#define ANA_ACC_INTERNAL_H

#include "ana_error.h"
#include "ana_formula.h"
#include "ana_store.h"
#include "analytics/v1/metrics.pb-c.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANA_ACC_MAX_TERMS 64
#define ANA_ACC_MAX_DIMENSIONS 16
#define ANA_ACC_KEY_MAX 1024  /* a group key: dimension values joined by '\x1f' */
#define ANA_ACC_VALUE_MAX 128 /* one dimension value, cut to fit */

/* A field path resolved once (every event is read by every metric of its
 * account): an event field, or a path into the properties. */
struct ana_acc_field {
  const char *path; /* borrowed: the property path, without "properties." */
  uint8_t top;      /* which event field (acc.c), 0 for a property */
  bool nested;      /* the property path has segments ("order.total") */
};

/* What reading an event for a metric needs, prepared once. */
struct ana_acc_spec {
  const Analytics__V1__Metric *metric; /* borrowed */
  size_t n_terms;
  const struct ana_agg_term *terms[ANA_ACC_MAX_TERMS]; /* borrowed from the formula */
  const char *term_fields[ANA_ACC_MAX_TERMS];          /* the field a term reads, or NULL */
  struct ana_acc_field term_refs[ANA_ACC_MAX_TERMS];   /* term_fields resolved */
  size_t n_dims;
  const char *dims[ANA_ACC_MAX_DIMENSIONS]; /* borrowed from metric */
  struct ana_acc_field dim_refs[ANA_ACC_MAX_DIMENSIONS];
  json_t **filter_values;            /* owned: one per filter of metric */
  uint8_t *filter_ops;               /* owned: each filter's operator, resolved */
  struct ana_acc_field *filter_refs; /* owned: each filter's field, resolved */
};

/* Fills sp for metric m and formula f (both borrowed; they must outlive sp).
 * Returns 0, or a negative error with err filled (too many terms, out of
 * memory); sp must be _fini'd either way. */
int ana_acc_spec_init(struct ana_acc_spec *sp, const Analytics__V1__Metric *m,
                      const struct ana_formula *f, struct ana_error *err);
void ana_acc_spec_fini(struct ana_acc_spec *sp);

/* The members a flat properties object is read into (acc.c); more go to
 * jansson. */
#define ANA_ACC_FLAT_MAX 32

/* One event being read; its properties are parsed on first use: a flat
 * object (strings without escapes, numbers, booleans, nulls; ASCII) into
 * members, in one pass over a copy of the text; anything else by jansson.
 * Only ev, props, parsed, flat and buf need initialising (ana_acc_row_init):
 * an event is read by every metric of its account, and the members are
 * large. */
struct ana_acc_row {
  const struct ana_scanned_event *ev; /* borrowed */
  json_t *props;
  bool parsed;
  int8_t flat; /* 0: not read yet; 1: members hold the properties; -1: jansson */
  uint8_t n_members;
  char *buf; /* the text the members point into: small or allocated */
  struct ana_acc_member {
    const char *key;
    const char *text; /* a string's value */
    double number;    /* a number's value */
    uint8_t type;     /* acc.c's MEMBER_* */
  } members[ANA_ACC_FLAT_MAX];
  char small[256];
};
static inline void ana_acc_row_init(struct ana_acc_row *r, const struct ana_scanned_event *ev) {
  r->ev = ev;
  r->props = NULL;
  r->parsed = false;
  r->flat = 0;
  r->buf = NULL;
}
void ana_acc_row_fini(struct ana_acc_row *r);

/* Applies the metric's filters; when the event passes, writes its group key
 * (missing values as "") and points values[d] at valbuf[d]. Returns whether
 * the event passes. */
bool ana_acc_row_group(const struct ana_acc_spec *sp, struct ana_acc_row *r,
                       char key[ANA_ACC_KEY_MAX], char **values, char (*valbuf)[ANA_ACC_VALUE_MAX]);
/* The two halves of ana_acc_row_group: whether the event passes the
 * metric's filters, and its group key (whatever the filters say). */
bool ana_acc_row_passes(const struct ana_acc_spec *sp, struct ana_acc_row *r);
void ana_acc_row_key(const struct ana_acc_spec *sp, struct ana_acc_row *r,
                     char key[ANA_ACC_KEY_MAX], char **values, char (*valbuf)[ANA_ACC_VALUE_MAX]);

/* One term's aggregates. Exact form: distinct hashes and every value (raw
 * queries, live values). Sketch form: hll and dd, allocated on first use
 * (rollup cells). Zeroed memory is an empty aggregate. */
struct ana_acc_agg {
  double count, sum, min, max;
  struct {
    uint64_t *slots;
    size_t cap, len;
  } distinct;
  double *values;
  size_t n_values, cap_values;
  struct ana_hll *hll;
  struct ana_ddsketch *dd;
};

/* Adds the event's value of every term to each of the targets (arrays of
 * n_terms aggregates; NULL targets are skipped), exact or in sketch form.
 * Returns 0 or ANA_ERR_NOMEM. */
int ana_acc_row_add(const struct ana_acc_spec *sp, struct ana_acc_row *r, bool sketches,
                    struct ana_acc_agg *const *targets, size_t n_targets);

/* Adds numbers (each one, as an exact percentile term's values) or distinct texts (n
 * NUL-terminated texts one after another, as a uniq term's values) to a, exact form; the
 * scalars are the caller's. Return 0 or ANA_ERR_NOMEM. */
int ana_acc_agg_add_numbers(struct ana_acc_agg *a, const double *v, size_t n);
int ana_acc_agg_add_texts(struct ana_acc_agg *a, const char *texts, size_t n);

void ana_acc_agg_fini(struct ana_acc_agg *a);
/* Merges from into into (either form). Returns 0 or ANA_ERR_NOMEM. */
int ana_acc_agg_merge(struct ana_acc_agg *into, const struct ana_acc_agg *from);
void ana_acc_agg_merge_scalars(struct ana_acc_agg *into, double count, double sum, double min,
                               double max);
/* The sketches, allocated on first use; NULL when out of memory. */
struct ana_hll *ana_acc_agg_hll(struct ana_acc_agg *a);
struct ana_ddsketch *ana_acc_agg_dd(struct ana_acc_agg *a);
/* Nearest-rank percentile p (0..100), NAN when empty. Sorts a->values. */
double ana_acc_agg_percentile(struct ana_acc_agg *a, double p);
/* The value of fn over a (NAN when it has none). */
double ana_acc_agg_value(struct ana_acc_agg *a, enum ana_agg_fn fn);

/* FNV-1a of s, never 0 (0 marks a free slot in the hash tables). */
uint64_t ana_acc_hash_text(const char *s);

#endif
