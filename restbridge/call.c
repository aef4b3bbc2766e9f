/* Calls carried by the bridge: their lifetime (a call outlives its
 * connection until the handler finishes it), their outbound buffers, and
 * the hand-over between a connection and its call. */
#include "restbridge_internal.h"

#include "budget.h"
#include "decode_pool.h"

#include "ana_alloc.h"

#include <string.h>

struct rb_msg *rb_msg_alloc(size_t len) {
  struct rb_msg *m = ana_malloc(sizeof *m + LWS_PRE + len + 1);
  if (!m)
    return NULL;
  m->next = NULL;
  m->len = len;
  m->data = (unsigned char *)(m + 1) + LWS_PRE;
  m->data[len] = '\0';
  return m;
}

struct rb_msg *rb_msg_new(const void *data, size_t len) {
  struct rb_msg *m = rb_msg_alloc(len);
  if (m && len)
    memcpy(m->data, data, len);
  return m;
}

void rb_msg_free(struct rb_msg *m) {
  while (m) {
    struct rb_msg *next = m->next;
    ana_free(m);
    m = next;
  }
}

void rb_reply_clear(struct rb_reply *r) {
  rb_msg_free(r->body);
  ana_free(r->www_auth);
  ana_free(r->allow);
  ana_free(r->allow_headers);
  memset(r, 0, sizeof *r);
}

/* Starts with two references: the handler's (dropped by the transport's
 * finish) and the connection's (dropped by rb_conn_detach once
 * rb_conn_attach has handed it to conn). See struct rb_call. */
struct rb_call *rb_call_create(struct ana_restbridge *b, const struct ana_route *route,
                               struct lws *wsi, struct rb_conn *conn, bool websocket) {
  struct rb_call *c = ana_calloc(1, sizeof *c);
  if (!c)
    return NULL;
  ana_call_init(&c->base,
                websocket         ? &rb_ws_transport
                : route->download ? &rb_download_transport
                                  : &rb_http_transport,
                &ana_methods[route->method]);
  if (pthread_mutex_init(&c->mu, NULL) != 0) {
    ana_call_fini(&c->base);
    ana_free(c);
    return NULL;
  }
  c->bridge = b;
  c->route = route;
  c->websocket = websocket;
  atomic_init(&c->refs, 2); /* the handler's (released by finish) and the connection's */
  c->wsi = wsi;
  c->conn = conn;
  atomic_init(&c->q_bytes, 0);
  atomic_init(&c->evicted, false);
  rb_bridge_ref(b);
  atomic_fetch_add(&b->inflight, 1);
  return c;
}

void rb_call_free(struct rb_call *c) {
  struct ana_restbridge *b = c->bridge;
  rb_budget_stream_pop(b->budget, c, atomic_load(&c->q_bytes));
  rb_msg_free(c->q_head);
  rb_msg_free(c->ws_last);
  rb_reply_clear(&c->reply);
  ana_free(c->dl_type);
  ana_free(c->dl_etag);
  ana_free(c->dl_filename);
  pthread_mutex_destroy(&c->mu);
  ana_call_fini(&c->base);
  ana_free(c);
  rb_bridge_unref(b);
}

void rb_call_unref(struct rb_call *c) {
  if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
    return;
  /* A large request's arena (200,000 keys: tens of MB in pieces) takes
   * milliseconds to give back: not on the lws thread, which answers
   * everyone else meanwhile. */
  struct ana_restbridge *b = c->bridge;
  if (rb_lws_thread && b->decode && c->base.arena.used > RB_DECODE_INLINE_MAX) {
    rb_decode_pool_reap(b->decode, c);
    return;
  }
  rb_call_free(c);
}

static void unlist(struct rb_conn *conn) {
  struct ana_restbridge *b = conn->bridge;
  if (!conn->listed)
    return;
  if (conn->prev)
    conn->prev->next = conn->next;
  else
    b->conns = conn->next;
  if (conn->next)
    conn->next->prev = conn->prev;
  conn->prev = conn->next = NULL;
  conn->listed = false;
}

/* Drops the connection's reference last: the call may be freed right there
 * (the handler and the dirty list may have let go already), so nothing may
 * touch c afterwards. */
void rb_conn_detach(struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  unlist(conn);
  if (!c)
    return;
  conn->call = NULL;
  c->wsi = NULL;
  c->conn = NULL;
  pthread_mutex_lock(&c->mu);
  bool answered = c->finished;
  pthread_mutex_unlock(&c->mu);
  if (!answered)
    ana_call_mark_cancelled(&c->base);
  if (c->route->download) {
    rb_budget_stream_drop(conn->bridge->budget, c); /* its unwritten chunks go now */
  } else {
    /* Untracked while the connection's reference still holds the call
     * (budget.c picks tracked calls by reference); its queue (frames, or
     * an answer's JSON chunks) goes now. */
    rb_budget_stream_untrack(conn->bridge->budget, c);
    rb_budget_stream_drop(conn->bridge->budget, c);
  }
  rb_call_unref(c);
}

void rb_conn_attach(struct rb_conn *conn, struct rb_call *c) {
  struct ana_restbridge *b = conn->bridge;
  conn->call = c;
  if (!c->route->download) /* frames, or a long answer's JSON chunks */
    rb_budget_stream_track(b->budget, c);
  if (conn->listed)
    return;
  conn->prev = NULL;
  conn->next = b->conns;
  if (b->conns)
    b->conns->prev = conn;
  b->conns = conn;
  conn->listed = true;
}
