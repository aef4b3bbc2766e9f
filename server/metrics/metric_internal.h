/* Internals shared by the two ways of answering a metric query: the raw path
 * (query.c scanning events) and the rollup path (rollup.c merging stored
 * cells). Both feed the same accumulators and the same answer-building code,
 * so summary, total, change, top-N + "other", counter rates and histogram
 * percentiles cannot drift apart. Not for other modules. */
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

/* Merges one stored cell (an encoding from ana_mq_cell_encode) whose time
 * span starts at start_ms and lies within one bucket of the query (or
 * within the previous period when before from_ms) for the group with the
 * given key. Returns 0 or a negative error. */
int ana_mq_add_cell(struct ana_mq *s, int64_t start_ms, const char *group_key,
                    const uint8_t *blob, size_t len);

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

struct ana_mq_cell *ana_mq_cell_new(const struct ana_mq *s);
void ana_mq_cell_free(const struct ana_mq *s, struct ana_mq_cell *c);
/* Encodes c (appending to *buf, realloc'd) or merges an encoding into c. */
int ana_mq_cell_encode(const struct ana_mq *s, const struct ana_mq_cell *c, uint8_t **buf,
                       size_t *len, size_t *cap);
int ana_mq_cell_merge_encoded(const struct ana_mq *s, struct ana_mq_cell *c, const uint8_t *blob,
                              size_t len);

#endif
