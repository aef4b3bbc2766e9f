/* The bridge's memory budgets (budget.c): all buffered request bodies
 * together (HTTP_BODY_BUDGET_MB) and all queued WebSocket frames together
 * (STREAM_QUEUE_BUDGET_MB), the minimum body rate (HTTP_BODY_MIN_RATE),
 * returning freed memory to the system, and their /metrics families. */
#ifndef ANA_RESTBRIDGE_BUDGET_H
#define ANA_RESTBRIDGE_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rb_budget;
struct rb_call;
struct rb_conn;
struct lws;

/* Limits in bytes (0 = unlimited); min_rate in bytes per second over
 * rate_window_ms (0 = no minimum). NULL when out of memory. */
struct rb_budget *rb_budget_create(size_t body_limit, size_t stream_limit, size_t min_rate,
                                   int rate_window_ms);
/* Stops the trimming thread and frees. NULL is fine. */
void rb_budget_destroy(struct rb_budget *bud);

/* --- request bodies --- */
/* Reserves n bytes for a body about to be buffered; false (counted as a
 * refusal: the caller answers 503) when that would pass the budget. Any
 * thread. A NULL budget always grants. */
bool rb_budget_body_reserve(struct rb_budget *bud, size_t n);
/* Gives back a reservation (after the buffer is freed). Any thread. */
void rb_budget_body_release(struct rb_budget *bud, size_t n);
/* The buffered body of conn, freed with its reservation. lws thread. */
void rb_budget_body_free(struct rb_conn *conn);
/* Starts watching the rate of conn's body (its headers just came): arms the
 * connection's timer for the first window. lws thread. */
void rb_budget_body_watch(struct lws *wsi, struct rb_conn *conn);
/* The connection's timer fired while its body was being read: true when
 * fewer than min_rate x window bytes came during the window (counted; the
 * caller answers 408 and closes), else re-arms for the next one. */
bool rb_budget_body_too_slow(struct lws *wsi, struct rb_conn *conn);

/* --- queued stream frames --- */
/* Lists c (a WebSocket call with a connection) among those that may be
 * evicted. lws thread. */
void rb_budget_stream_track(struct rb_budget *bud, struct rb_call *c);
/* Takes c off that list; from then on it is never picked. lws thread,
 * while the connection still holds its reference. */
void rb_budget_stream_untrack(struct rb_budget *bud, struct rb_call *c);
/* n bytes were queued on c (under c->mu). Any thread. */
void rb_budget_stream_push(struct rb_budget *bud, struct rb_call *c, size_t n);
/* After a push, without any call's mu: past the budget, the tracked call
 * with the most queued bytes loses its queue and is marked evicted (its
 * connection is closed with 1008 on the lws thread), until the total is
 * back under the budget. Any thread. */
void rb_budget_stream_enforce(struct rb_budget *bud);
/* n queued bytes of c were written or dropped (under c->mu, or once c is
 * no longer shared). Any thread. */
void rb_budget_stream_pop(struct rb_budget *bud, struct rb_call *c, size_t n);
/* Drops every frame queued on c (and its last frame) and gives their bytes
 * back; asks for memory to go back to the system. Any thread; takes c->mu. */
void rb_budget_stream_drop(struct rb_budget *bud, struct rb_call *c);
/* One connection closed for being too slow (slow consumer). */
void rb_budget_count_slow_close(struct rb_budget *bud);

/* Large buffers were freed: returns free memory to the system soon
 * (malloc_trim on the budget's own thread, at most once a second). */
void rb_budget_released(struct rb_budget *bud, size_t n);

#endif
