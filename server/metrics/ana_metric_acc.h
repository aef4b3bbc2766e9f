/* Incremental accumulators of one metric over one time bucket, per group of
 * dimension values: events are added one at a time (as they are committed)
 * and the formula can be evaluated per group at any moment. The semantics
 * are those of ana_metric_query_raw for one bucket: the same filters, field
 * reading, terms and evaluation, so a live value equals the bucket's value
 * in GetMetricData (top-N aside).
 *
 * Not thread-safe: the owner serialises. */
#ifndef ANA_METRIC_ACC_H
#define ANA_METRIC_ACC_H

#include "ana_error.h"
#include "ana_formula.h"
#include "ana_store.h"
#include "analytics/v1/metrics.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The dimension value of every dimension of the group that takes the
 * events of new groups once max_groups is reached. */
#define ANA_METRIC_ACC_OTHER "(other)"

struct ana_metric_acc;

/* Makes empty accumulators for metric m (its filters and dimensions) and
 * its parsed formula f, both borrowed: they must outlive the accumulators.
 * At most max_groups groups are kept; the events of further groups are
 * counted in one group whose dimension values are all ANA_METRIC_ACC_OTHER.
 * Returns NULL with err filled (out of memory, too many terms). */
struct ana_metric_acc *ana_metric_acc_create(const Analytics__V1__Metric *m,
                                             const struct ana_formula *f, size_t max_groups,
                                             struct ana_error *err);

/* Frees acc; NULL does nothing. */
void ana_metric_acc_destroy(struct ana_metric_acc *acc);

/* Whether an event with this name can count at all (a term reads it). Cheap:
 * lets a caller skip events before building anything. */
bool ana_metric_acc_wants(const struct ana_metric_acc *acc, const char *event_name);

/* Adds one event (its timestamp is not looked at: the caller routes events
 * to the bucket they belong to). Returns the index of the group it counted
 * in (>= 0), ANA_ERR_NOT_FOUND when the event does not count (a filter,
 * no term reads it), or ANA_ERR_NOMEM. */
int ana_metric_acc_add(struct ana_metric_acc *acc, const struct ana_scanned_event *ev);

/* Number of groups so far. With no dimensions there is always exactly one
 * (the empty group), even before any event. */
size_t ana_metric_acc_group_count(const struct ana_metric_acc *acc);

/* The dimension values of group g, one per dimension of the metric, in the
 * order of its dimensions (missing values as ""). Borrowed from acc. */
const char *const *ana_metric_acc_group_values(const struct ana_metric_acc *acc, size_t g);

/* Number of dimensions (of the metric, at most 16). */
size_t ana_metric_acc_dimension_count(const struct ana_metric_acc *acc);

/* Evaluates the formula over group g's aggregates. Returns true and sets
 * *out, or false when the value is empty (see ana_formula_eval). */
bool ana_metric_acc_value(struct ana_metric_acc *acc, size_t g, double *out);

/* The key of group g: its dimension values joined by '\x1f' ("" for the
 * "(other)" group and for the one group of a metric without dimensions).
 * Borrowed from acc. */
const char *ana_metric_acc_group_key(const struct ana_metric_acc *acc, size_t g);

/* Whether group g is the "(other)" group. */
bool ana_metric_acc_group_is_other(const struct ana_metric_acc *acc, size_t g);

/* The index of the group with this key (never the "(other)" group), or -1. */
int ana_metric_acc_find(const struct ana_metric_acc *acc, const char *key);

/* Picks the groups a merged value covers: group g of accs[i]. */
typedef bool (*ana_metric_acc_pick_fn)(void *ctx, const struct ana_metric_acc *acc, size_t g);

/* Evaluates the formula over the aggregates of groups merged across n
 * accumulators made for the same metric and formula (the buckets of one
 * window): with key != NULL the group of that key in each; otherwise every
 * group pick accepts. Returns 1 and sets *out, 0 when the value is empty,
 * or ANA_ERR_NOMEM. */
int ana_metric_acc_value_merged(struct ana_metric_acc *const *accs, size_t n, const char *key,
                                ana_metric_acc_pick_fn pick, void *ctx, double *out);

#endif
