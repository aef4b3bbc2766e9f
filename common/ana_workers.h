/* A small pool of threads for handler work that blocks (queries, file I/O),
 * so that transport threads never wait. */
#ifndef ANA_WORKERS_H
#define ANA_WORKERS_H

#include "ana_error.h"

#include <stddef.h>

struct ana_workers;

/* Starts `threads` threads; at most `queue_max` jobs wait. NULL on failure. */
struct ana_workers *ana_workers_create(int threads, size_t queue_max);

/* Queues fn(arg). Returns 0, or ANA_ERR_FULL when queue_max jobs wait, or
 * ANA_ERR_CLOSED when stopping. Thread-safe; never blocks. The job runs
 * with the submitting thread's request id (ana_log_set_request_id), so its
 * log lines carry the call's id. */
int ana_workers_submit(struct ana_workers *w, void (*fn)(void *arg), void *arg);

/* Runs fn(ctx, i) once for every i in [0, n), on the calling thread and on
 * at most `helpers` jobs of w's running meanwhile; returns when every call
 * has returned. Indexes are claimed one at a time, so a helper that starts
 * late (a busy pool) takes only what is left, and none at all once the
 * caller has claimed every index: the caller never waits for the queue,
 * only for calls already running. w NULL or helpers 0: all on the caller.
 * fn must be thread-safe for distinct i. Returns 0. */
int ana_workers_parallel(struct ana_workers *w, int helpers, size_t n,
                         void (*fn)(void *ctx, size_t i), void *ctx);

/* Runs every queued job, then joins the threads. NULL does nothing. */
void ana_workers_destroy(struct ana_workers *w);

#endif
