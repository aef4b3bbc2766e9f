/* Internals shared by the two ways of answering a metric query: the raw path
 * (query.c scanning events) and the rollup path (rollup_advance.c and
 * rollup_query.c merging stored cells). Both feed the same accumulators and
 * the same answer-building code, so summary, total, change, top-N + "other",
 * counter rates and histogram percentiles cannot drift apart. Not for other modules. */
#ifndef ANA_METRIC_INTERNAL_H
#define ANA_METRIC_INTERNAL_H

#include "ana_metric_query.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A prepared query: the metric's terms, filters and dimensions, its time
 * buckets and its groups of accumulators. */
struct ana_mq;

/* One rollup cell: the accumulators of every term, in sketch form. */
struct ana_mq_cell;

#define ANA_MQ_KEY_MAX 1024

/* Prepares q. sketches = false: exact accumulators (the raw path: a set of
 * hashes for uniq, every value for percentiles); true: HyperLogLog and
 * DDSketch, mergeable with rollup cells. When q->from_ms == q->to_ms there
 * are no buckets (a preparation for rollup maintenance: only filters, group
 * keys and cells are used). Returns NULL with err filled. */
struct ana_mq *ana_mq_create(const struct ana_metric_query *q, bool sketches,
                             struct ana_error *err);
void ana_mq_destroy(struct ana_mq *s);

/* The start of every bucket (borrowed); *n gets the count. */
const int64_t *ana_mq_bucket_starts(const struct ana_mq *s, size_t *n);

/* The event names the formula reads (borrowed); *any when a term reads
 * every event ('*'), then names are not a restriction. */
const char *const *ana_mq_names(const struct ana_mq *s, size_t *n, bool *any);

/* Adds a raw event to the query (buckets by its time; before from_ms it
 * counts for the previous period). Returns 0 or a negative error (err of
 * create filled). */
int ana_mq_add_event(struct ana_mq *s, const struct ana_scanned_event *ev);

/* --- the rollup path ---
 * Cells (and the raw events of the pieces no cell fits, gathered into cells
 * by the caller) are added in two parts: first every cell counts in its
 * group's total or previous period (ANA_MQ_TOTALS); then ana_mq_rank
 * ranks the groups; then the cells of [from, to) count in their buckets
 * (ANA_MQ_BUCKETS), those of groups below the top N directly in "other".
 * So only the groups shown hold buckets, whatever the number of groups. */

/* A group of the query (owned by it). */
struct ana_mq_group;

/* The index a cell's bucket is given as: the previous period. */
#define ANA_MQ_PREVIOUS SIZE_MAX

enum ana_mq_part { ANA_MQ_TOTALS, ANA_MQ_BUCKETS };

/* The group of a group key (the dimension values joined by '\x1f'), made
 * on first sight; *out NULL when the query's dimensionFilter leaves it out.
 * Call it for every group in the totals part. Returns 0 or a negative error
 * (too many groups, out of memory). */
int ana_mq_group(struct ana_mq *s, const char *group_key, struct ana_mq_group **out);

/* Adds a cell whose time span lies within bucket `bucket` of the query (an
 * index into ana_mq_bucket_starts) or within the previous period
 * (ANA_MQ_PREVIOUS), for group g, in the given part: packed, as
 * ana_mq_cell_pack made it from an mq of the same formula, or a cell.
 * Returns 0 or a negative error (then ana_mq_answer reports it). */
int ana_mq_add_packed(struct ana_mq *s, struct ana_mq_group *g, size_t bucket,
                      enum ana_mq_part part, const uint8_t *packed, size_t len);
int ana_mq_add_cell(struct ana_mq *s, struct ana_mq_group *g, size_t bucket, enum ana_mq_part part,
                    const struct ana_mq_cell *c);

/* Hands flat bucket accumulators over (layouts of ana_mq_packed_fixed
 * only): acc holds n rows of n_buckets packed cells, row i adding to the
 * buckets of groups[i] (a folded group: of "other"). s owns acc from
 * then on, also on error (ana_mq_destroy frees it); the answer reads the
 * rows in place, so a wide answer needs no accumulator per bucket.
 * Returns 0 or a negative error. */
int ana_mq_adopt_flat(struct ana_mq *s, struct ana_mq_group *const *groups, size_t n, double *acc);

/* Ranks the groups by their totals and folds those below the top N into
 * "other". ana_mq_answer does it when it was not done. Returns 0 or a
 * negative error. */
int ana_mq_rank(struct ana_mq *s);

/* Records that the caller ran out of memory while adding: ana_mq_answer
 * reports it. Returns the (negative) error. */
int ana_mq_nomem(struct ana_mq *s);

/* Whether g was ranked below the top N (its buckets go to "other"). */
bool ana_mq_group_folded(const struct ana_mq_group *g);

/* Packed cells of a formula without sketch terms are arrays of doubles of
 * one size (*size bytes), which merge into each other: a caller may merge
 * many into one (ana_mq_packed_merge; `into` zeroed at first) and add that
 * once; when *additive, merging is adding the doubles one by one. Returns
 * whether this formula's cells are so. */
bool ana_mq_packed_fixed(const struct ana_mq *s, size_t *size, bool *additive);
void ana_mq_packed_merge(const struct ana_mq *s, double *into, const uint8_t *from);

/* Builds the answer (in arena) from everything added. */
int ana_mq_answer(struct ana_mq *s, struct ana_arena *arena, Analytics__V1__MetricData *out,
                  struct ana_error *err);

/* --- rollup maintenance --- */

/* Asks for the cells an event of a group feeds (one per rollup level);
 * returns how many were written to cells, or a negative error. */
typedef int (*ana_mq_cells_fn)(void *ctx, const char *group_key, struct ana_mq_cell **cells,
                               size_t max);

/* Applies the metric's filters to ev; when it passes, asks cells_fn for the
 * cells of its group and adds the event's term values to each. Returns 0 or
 * a negative error. */
int ana_mq_feed_cells(struct ana_mq *s, const struct ana_scanned_event *ev,
                      ana_mq_cells_fn cells_fn, void *ctx);

/* The same for an event several metrics read in turn: r (acc_internal.h;
 * borrowed: the caller inits and finis it once for all of them) keeps what
 * was parsed of the event's properties, so they are parsed once. */
struct ana_acc_row;
int ana_mq_feed_row(struct ana_mq *s, struct ana_acc_row *r, ana_mq_cells_fn cells_fn, void *ctx);

struct ana_mq_cell *ana_mq_cell_new(const struct ana_mq *s);
void ana_mq_cell_free(const struct ana_mq *s, struct ana_mq_cell *c);
/* Encodes c (appending to *buf, realloc'd) or merges an encoding into c. */
int ana_mq_cell_encode(const struct ana_mq *s, const struct ana_mq_cell *c, uint8_t **buf,
                       size_t *len, size_t *cap);
int ana_mq_cell_merge_encoded(const struct ana_mq *s, struct ana_mq_cell *c, const uint8_t *blob,
                              size_t len);

/* Appends the packed form of an encoding (the form the rollup cache keeps:
 * the scalars each term's function reads, then the sketch segments as they
 * are) to *buf (realloc'd). Its layout depends on the formula's terms only.
 * Returns 0, ANA_ERR_INVALID (a malformed encoding) or ANA_ERR_NOMEM. */
int ana_mq_cell_pack(const struct ana_mq *s, const uint8_t *blob, size_t len, uint8_t **buf,
                     size_t *blen, size_t *cap);

#endif
