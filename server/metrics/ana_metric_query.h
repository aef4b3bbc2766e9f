/* Metric data: the formula evaluated per time bucket and per group of
 * dimension values, with a summary, a total and the change against the
 * previous period. */
#ifndef ANA_METRIC_QUERY_H
#define ANA_METRIC_QUERY_H

#include "ana_arena.h"
#include "ana_buckets.h"
#include "ana_error.h"
#include "ana_formula.h"
#include "ana_store.h"
#include "analytics/v1/metrics.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define ANA_METRIC_MAX_BUCKETS 2000
#define ANA_METRIC_MAX_GROUPS 10000
#define ANA_METRIC_DEFAULT_TOP_N 10

struct ana_metric_query {
  const Analytics__V1__Metric *metric; /* its filters, dimensions, type, aggregation */
  const struct ana_formula *formula;   /* the metric's formula, parsed */
  const char *account_id;
  int64_t from_ms, to_ms;
  enum ana_interval interval;
  const char *time_zone;
  int top_n; /* groups kept before the rest is folded into "other"; 0 = default */
  const char *const *dimension_keys; /* restricts groups to these dimension values */
  const char *const *dimension_values;
  size_t n_dimension_filters;
  bool omit_empty_buckets; /* leave out the buckets no event counted in */
  /* Where the previous period (of change) starts, e.g. the local midnight
   * as many calendar days before from; 0 (or not before from_ms): the
   * same length in milliseconds, from_ms - (to_ms - from_ms). */
  int64_t previous_from_ms;
};

/* The start of q's previous period, which ends at q->from_ms. */
static inline int64_t ana_metric_query_previous_from(const struct ana_metric_query *q) {
  return q->previous_from_ms && q->previous_from_ms < q->from_ms
             ? q->previous_from_ms
             : q->from_ms - (q->to_ms - q->from_ms);
}

/* Answers q from the raw events (a scan of the range and of the previous
 * period of the same length). The answer is allocated in arena. Blocks. */
int ana_metric_query_raw(const struct ana_event_store_ops *ops, void *store,
                         const struct ana_metric_query *q, struct ana_arena *arena,
                         Analytics__V1__MetricData *out, struct ana_error *err);

/* An ad-hoc query: a formula with filters and dimensions that is no stored
 * metric (reports use it), answered by the same engine as GetMetricData.
 * Event names in the formula are taken as written. */
struct ana_metric_adhoc {
  const char *formula;                         /* e.g. "count(message_sent)" */
  Analytics__V1__MetricFilter *const *filters; /* borrowed */
  size_t n_filters;
  char *const *dimensions; /* borrowed */
  size_t n_dimensions;
  const char *aggregation; /* the summary; NULL = "sum" */
};

/* n ad-hoc queries over q's account, range, interval, zone and top N
 * (q->metric and q->formula are ignored), answered in one pass over the
 * events (the union of the names they read): outs[i] answers a[i]. Each is
 * parsed and checked first; an error names the field ("formula: ...",
 * "filters[j].op: ...") of the first that fails. Blocks. */
int ana_metric_query_adhoc_batch(const struct ana_event_store_ops *ops, void *store,
                                 const struct ana_metric_adhoc *a, size_t n,
                                 const struct ana_metric_query *q, struct ana_arena *arena,
                                 Analytics__V1__MetricData *outs, struct ana_error *err);

/* What an ad-hoc query's count term can be read from instead of the events:
 * the answers of a stored metric whose formula is that count alone, asked
 * with the ad-hoc query's range, interval, zone and every bucket (current),
 * and over the previous period of the same length (previous: only its
 * totals are read), its dimensions including the ad-hoc query's. */
struct ana_metric_adhoc_source {
  size_t term; /* the ad-hoc formula's term it counts */
  const Analytics__V1__MetricData *current, *previous;
};

/* Answers the ad-hoc query a over q (as ana_metric_query_adhoc_batch would,
 * by the same engine: groups, buckets, summary, total, change, top N and
 * "other") from such answers instead of the events: each series adds its
 * counts to the ad-hoc group of its values of a's dimensions. Returns 1
 * with *out filled, 0 when the sources cannot answer it exactly (a term
 * that is no count, a term without a source, an answer with its groups
 * folded into "other", buckets that differ), or a negative error. */
int ana_metric_query_adhoc_from(const struct ana_metric_adhoc *a, const struct ana_metric_query *q,
                                const struct ana_metric_adhoc_source *src, size_t n_src,
                                struct ana_arena *arena, Analytics__V1__MetricData *out,
                                struct ana_error *err);

/* Where a field path of a filter or dimension points. */
struct ana_field_ref {
  bool top_level;   /* eventType, eventName, sessionId, eventId */
  const char *name; /* the top-level field, or the property path */
};

/* Checks the filters and dimensions of a definition; err names the field
 * ("filters[1].op: ...", "dimensions[0]: ..."). */
int ana_metric_check_filters_and_dimensions(const Analytics__V1__Metric *m, struct ana_error *err);

#endif
