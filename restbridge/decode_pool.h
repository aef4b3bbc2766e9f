/* The bridge's decode pool (decode_pool.c): large JSON request bodies are
 * turned into request messages on threads of the bridge's own
 * (HTTP_DECODE_THREADS), so that the lws thread goes on serving other
 * connections meanwhile. */
#ifndef ANA_RESTBRIDGE_DECODE_POOL_H
#define ANA_RESTBRIDGE_DECODE_POOL_H

#include <stddef.h>

/* Bodies up to this size are decoded on the lws thread: handing them over
 * costs more than decoding them. */
#define RB_DECODE_INLINE_MAX (64u << 10)

struct rb_decode_pool;
struct rb_call;
struct rb_conn;
struct rb_match;
struct rb_query_param;
struct rb_build_options;

/* Starts threads (at least 1). NULL when none could be started. */
struct rb_decode_pool *rb_decode_pool_create(int threads);

/* Stops the threads (a body being decoded is finished first). Calls handed
 * over and not dispatched yet are finished CANCELLED. Only once the lws
 * thread is gone. NULL is fine. */
void rb_decode_pool_destroy(struct rb_decode_pool *p);

/* Hands the request body of conn (conn->body and its budget reservation,
 * taken: conn no longer has a body) over for decoding into c's request,
 * with the query parameters (in c's arena) and the path variables of m
 * (copied). The call's handler is set aside until the dispatch, so that
 * cancelling it meanwhile reaches no handler. Returns 0, or ANA_ERR_NOMEM
 * (nothing taken). lws thread. */
int rb_decode_pool_submit(struct rb_decode_pool *p, struct rb_call *c, struct rb_conn *conn,
                          const struct rb_match *m, const struct rb_query_param *query,
                          size_t n_query, const struct rb_build_options *bo);

/* After a wake of c: when its body has been decoded, starts the call
 * (on_request with the message) unless the pool started it already, or
 * finishes it with the decoding error, or CANCELLED when the client went
 * away meanwhile. lws thread. */
void rb_decode_pool_dispatch(struct rb_call *c);

/* Runs fn(ctx, i) for i in [0, n) on the calling thread and the pool's
 * helper threads (one fewer than its decoders, at least one, as nice as
 * they are), returning
 * when all have returned: ana_json_options.parallel for a body decoded on
 * the pool (pool: the rb_decode_pool). Pool threads only. */
void rb_decode_pool_parallel(void *pool, size_t n, void (*fn)(void *ctx, size_t i), void *ctx);

/* Frees c (its last reference gone) on a pool thread: a large call's arena
 * takes milliseconds to give back. lws thread, before the pool is
 * destroyed. */
void rb_decode_pool_reap(struct rb_decode_pool *p, struct rb_call *c);

#endif
