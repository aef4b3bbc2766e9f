/* Server-streaming RPCs over WebSocket (grpc-websocket-proxy style): the
 * upgrade happens on the route's own path, query parameters and path
 * variables fill the request, each message is a text frame {"result":...},
 * an error ends with {"error":{code,message,details}} and close 1011, a
 * clean end closes with 1000, server shutdown with 1001.
 *
 * Slow consumers: each connection queues at most stream_buffer_size
 * messages; beyond that ana_call_send answers ANA_ERR_FULL and the handler
 * decides (drop or coalesce). A connection whose queue stays full for
 * slow_consumer_ms is closed with 1008 "slow consumer" and its call
 * cancelled.
 *
 * Browsers cannot set Authorization on a WebSocket, so a token may come as
 * the subprotocol "bearer.<token>"; it is echoed back as the accepted
 * subprotocol and passed on as "authorization: Bearer <token>". lws 4.1
 * accepts a subprotocol only by the name of a registered protocol, so the
 * name of the bridge's one protocol is set to the client's choice just
 * before lws looks it up (all on the lws thread). lws limits the
 * subprotocol list to 127 bytes and one name to 63. */
#include "restbridge_internal.h"

#include "ana_alloc.h"
#include "ana_id.h"
#include "ana_log.h"

#include <ctype.h>
#include <string.h>

#define BEARER_PREFIX "bearer."

/* --- the transport (any thread) --- */

/* Copies s into out (size bytes with the NUL), cut at a UTF-8 character
 * boundary: a close reason must be valid UTF-8 of at most 123 bytes. */
static void utf8_cut(char *out, size_t size, const char *s) {
  size_t n = strlen(s);
  if (n >= size) {
    n = size - 1;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
      n--;
  }
  memcpy(out, s, n);
  out[n] = '\0';
}

static int ws_send(struct ana_call *call, const ProtobufCMessage *message) {
  struct rb_call *c = (struct rb_call *)call;
  struct ana_json_buf buf;
  ana_json_buf_init(&buf, 0);
  int rc = rb_json_append(&buf, "{\"result\":", 10);
  if (rc == 0)
    rc = ana_json_encode(&buf, message, NULL);
  if (rc == 0)
    rc = rb_json_append(&buf, "}", 1);
  struct rb_msg *m = rc == 0 ? rb_msg_from_buf(&buf) : NULL;
  ana_json_buf_fini(&buf);
  if (!m)
    return rc < 0 ? rc : ANA_ERR_NOMEM;

  size_t limit = c->bridge->opt.stream_buffer_size;
  pthread_mutex_lock(&c->mu);
  if (c->finished || atomic_load(&c->base.cancelled)) {
    rc = ANA_ERR_CLOSED;
  } else if (c->q_len >= limit) {
    if (!c->full_since_ms)
      c->full_since_ms = ana_call_now_mono_ms();
    rc = ANA_ERR_FULL;
  } else {
    if (c->q_tail)
      c->q_tail->next = m;
    else
      c->q_head = m;
    c->q_tail = m;
    c->q_len++;
    m = NULL;
    rc = 0;
  }
  pthread_mutex_unlock(&c->mu);
  rb_msg_free(m);
  if (rc != ANA_ERR_CLOSED)
    rb_call_wake(c);
  return rc;
}

static size_t ws_send_queue_length(struct ana_call *call) {
  struct rb_call *c = (struct rb_call *)call;
  pthread_mutex_lock(&c->mu);
  size_t n = c->q_len;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static void ws_finish(struct ana_call *call, const ProtobufCMessage *response,
                      const struct ana_error *status) {
  struct rb_call *c = (struct rb_call *)call;
  struct rb_msg *last = NULL;
  int code = LWS_CLOSE_STATUS_NORMAL;
  char reason[sizeof c->ws_close_reason] = "";
  if (status && status->code != ANA_STATUS_OK) {
    last = rb_error_json(call, status, "{\"error\":", "}");
    /* A stream ended for being too slow (RESOURCE_EXHAUSTED) closes like
     * the bridge's own slow-consumer close; the message is the reason. */
    code = status->code == ANA_STATUS_RESOURCE_EXHAUSTED ? LWS_CLOSE_STATUS_POLICY_VIOLATION
                                                         : LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
    utf8_cut(reason, sizeof reason, status->message);
  } else if (response) {
    struct ana_json_buf buf;
    ana_json_buf_init(&buf, 0);
    if (rb_json_append(&buf, "{\"result\":", 10) == 0 &&
        ana_json_encode(&buf, response, NULL) == 0 && rb_json_append(&buf, "}", 1) == 0)
      last = rb_msg_from_buf(&buf);
    ana_json_buf_fini(&buf);
  }
  pthread_mutex_lock(&c->mu);
  c->ws_last = last;
  c->ws_close_code = code;
  memcpy(c->ws_close_reason, reason, sizeof reason);
  c->finished = true;
  pthread_mutex_unlock(&c->mu);
  atomic_fetch_sub(&c->bridge->inflight, 1);
  rb_call_wake(c);
  rb_call_unref(c); /* the handler's reference */
}

const struct ana_call_transport rb_ws_transport = {
    .send = ws_send,
    .send_queue_length = ws_send_queue_length,
    .finish = ws_finish,
    .name = "websocket",
};

/* --- upgrade (lws thread) --- */

/* Answers the upgrade request with an HTTP error right away and hangs up.
 * Written raw: at this point lws has not yet recorded the request's HTTP
 * version (its header helpers would say HTTP/1.0, which clients refuse),
 * and the wsi has no session data yet. Returns -1 (lws closes). */
static int refuse_upgrade(struct lws *wsi, enum ana_status code, const char *message) {
  struct ana_error st;
  ana_error_set(&st, code, "%s", message);
  struct rb_msg *body = rb_error_json(NULL, &st, NULL, NULL);
  if (!body)
    return -1;
  char head[256];
  int status = rb_http_status_of(code);
  int hn = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                    "content-length: %zu\r\nconnection: close\r\n\r\n",
                    status,
                    status == 404   ? "Not Found"
                    : status == 503 ? "Service Unavailable"
                                    : "Bad Request",
                    body->len);
  struct rb_msg *all = rb_msg_new(head, (size_t)hn + body->len);
  if (all) {
    memcpy(all->data + hn, body->data, body->len);
    lws_write(wsi, all->data, all->len, LWS_WRITE_RAW);
  }
  rb_msg_free(all);
  rb_msg_free(body);
  return -1;
}

/* The "bearer.<token>" entry of the Sec-WebSocket-Protocol list, copied
 * into out; false when there is none. */
static bool bearer_subprotocol(struct lws *wsi, char *out, size_t size) {
  char list[256];
  out[0] = '\0';
  if (lws_hdr_copy(wsi, list, sizeof list, WSI_TOKEN_PROTOCOL) <= 0)
    return false;
  for (char *p = list; *p;) {
    while (*p == ' ' || *p == ',')
      p++;
    char *start = p;
    while (*p && *p != ',' && *p != ' ')
      p++;
    size_t n = (size_t)(p - start);
    if (n > strlen(BEARER_PREFIX) && n < size && strncmp(start, BEARER_PREFIX, 7) == 0) {
      memcpy(out, start, n);
      out[n] = '\0';
      return true;
    }
  }
  return false;
}

int rb_ws_confirm_upgrade(struct ana_restbridge *b, struct lws *wsi) {
  char *uri = NULL;
  int uri_len = 0;
  if (lws_http_get_uri_and_method(wsi, &uri, &uri_len) < 0 || !uri)
    return refuse_upgrade(wsi, ANA_STATUS_INVALID_ARGUMENT, "malformed request");
  if (atomic_load(&b->shutting_down))
    return refuse_upgrade(wsi, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
  struct rb_match m;
  rb_route_match(uri, "GET", true, NULL, &m);
  if (!m.route)
    return refuse_upgrade(wsi, m.path_known ? ANA_STATUS_INVALID_ARGUMENT : ANA_STATUS_NOT_FOUND,
                          m.path_known ? "not a WebSocket endpoint" : "no WebSocket route");
  char sub[sizeof b->ws_name];
  if (!bearer_subprotocol(wsi, sub, sizeof sub))
    snprintf(sub, sizeof sub, "%s", RB_WS_PROTOCOL);
  memcpy(b->ws_name, sub, sizeof sub);
  /* The vhost's heap copy of our protocol: lws matches the client's list
   * against this name next, and echoes it in the handshake. */
  b->protocol->name = b->ws_name;
  return 0;
}

/* --- the connection (lws thread) --- */

void rb_ws_close(struct rb_conn *conn, int code, const char *reason) {
  if (conn->state != RB_CONN_WS_OPEN && conn->state != RB_CONN_WS_CLOSING)
    return;
  if (!conn->ws_close_code) {
    conn->ws_close_code = code;
    snprintf(conn->ws_close_reason, sizeof conn->ws_close_reason, "%s", reason);
  }
  conn->state = RB_CONN_WS_CLOSING;
  if (conn->call) {
    ana_call_mark_cancelled(&conn->call->base);
    if (conn->call->wsi)
      lws_callback_on_writable(conn->call->wsi);
  }
}

void rb_ws_on_wake(struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  if (!c || !c->wsi)
    return;
  pthread_mutex_lock(&c->mu);
  bool full = c->full_since_ms != 0;
  pthread_mutex_unlock(&c->mu);
  if (full && !conn->slow_timer_armed) {
    conn->slow_timer_armed = true;
    lws_set_timer_usecs(c->wsi, (lws_usec_t)conn->bridge->opt.slow_consumer_ms * 1000);
  }
  lws_callback_on_writable(c->wsi);
}

static void on_slow_timer(struct lws *wsi, struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  conn->slow_timer_armed = false;
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  int64_t since = c->full_since_ms;
  pthread_mutex_unlock(&c->mu);
  if (!since)
    return;
  int64_t waited = ana_call_now_mono_ms() - since;
  int limit = conn->bridge->opt.slow_consumer_ms;
  if (waited >= limit) {
    /* A handler that already ended the stream for being slow gave the
     * better reason: close with it now rather than after the queue. */
    char reason[sizeof c->ws_close_reason];
    pthread_mutex_lock(&c->mu);
    bool own = c->finished && c->ws_close_code == LWS_CLOSE_STATUS_POLICY_VIOLATION;
    memcpy(reason, own ? c->ws_close_reason : "slow consumer", own ? sizeof reason : 14);
    pthread_mutex_unlock(&c->mu);
    ANA_INFO(RB_COMPONENT, "closing a WebSocket of %s: %s", c->base.method->path, reason);
    rb_ws_close(conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, reason);
    return;
  }
  conn->slow_timer_armed = true;
  lws_set_timer_usecs(wsi, (lws_usec_t)(limit - waited) * 1000);
}

static int close_now(struct lws *wsi, int code, const char *reason) {
  lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
  return -1;
}

/* Writes queued frames while the socket takes them without buffering
 * (lws_send_pipe_choked clears lws's back-to-back write check; a short write
 * is kept by lws and counts as choked), up to WS_WRITE_BUDGET bytes so that
 * one busy subscriber does not hold the thread from the others and from
 * REST; then asks for the next WRITEABLE if anything is left. One frame per
 * callback, as lws's examples do, cannot keep up with a subscriber getting
 * 1,000 events/s beside 99 others: it costs a poll round per frame. The
 * bridge offers no extension (permessage-deflate), whose output could still
 * be draining between writes. */
#define WS_WRITE_BUDGET (64u << 10)

static int on_writeable(struct lws *wsi, struct rb_conn *conn) {
  struct rb_call *c = conn->call; /* the connection's reference */
  if (conn->ws_close_code)
    return close_now(wsi, conn->ws_close_code, conn->ws_close_reason);
  if (!c)
    return close_now(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "");
  size_t limit = conn->bridge->opt.stream_buffer_size;
  size_t written = 0;
  for (;;) {
    if (written && (written >= WS_WRITE_BUDGET || lws_send_pipe_choked(wsi))) {
      lws_callback_on_writable(wsi);
      return 0;
    }
    int close_code = 0;
    char close_reason[sizeof c->ws_close_reason];
    pthread_mutex_lock(&c->mu);
    struct rb_msg *m = c->q_head;
    if (m) {
      c->q_head = m->next;
      if (!c->q_head)
        c->q_tail = NULL;
      c->q_len--;
      if (c->q_len < limit)
        c->full_since_ms = 0;
    } else if (c->finished) {
      m = c->ws_last; /* the error frame or the last message, then the close */
      c->ws_last = NULL;
      if (!m) {
        close_code = c->ws_close_code;
        memcpy(close_reason, c->ws_close_reason, sizeof close_reason);
      }
    }
    bool more = c->q_head != NULL || c->finished;
    pthread_mutex_unlock(&c->mu);
    if (close_code)
      return close_now(wsi, close_code, close_reason);
    if (!m)
      return 0;
    m->next = NULL;
    int n = lws_write(wsi, m->data, m->len, LWS_WRITE_TEXT);
    bool ok = n == (int)m->len;
    written += m->len + 1;
    rb_msg_free(m);
    if (!ok)
      return -1;
    rb_stats_ws_message(conn->bridge->stats);
    if (!more)
      return 0;
  }
}

static void on_established(struct lws *wsi, struct rb_conn *conn) {
  struct ana_restbridge *b = conn->bridge;
  char *uri = NULL;
  int uri_len = 0;
  struct rb_match m;
  struct ana_error early;
  char sub[sizeof b->ws_name], id[sizeof conn->request_id];

  /* Back to the canonical name until the next upgrade. */
  snprintf(b->ws_name, sizeof b->ws_name, "%s", RB_WS_PROTOCOL);
  conn->state = RB_CONN_WS_OPEN;
  if (!conn->ws_counted) {
    conn->ws_counted = true;
    rb_stats_websocket(b->stats, 1);
  }
  int n = lws_hdr_custom_copy(wsi, id, sizeof id, "x-request-id:", 13);
  if (n > 0)
    memcpy(conn->request_id, id, (size_t)n + 1);
  else if (ana_uuid7_generate(conn->request_id) < 0)
    conn->request_id[0] = '\0';
  if (lws_http_get_uri_and_method(wsi, &uri, &uri_len) < 0 || !uri ||
      rb_route_match(uri, "GET", true, NULL, &m) < 0) {
    rb_ws_close(conn, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "route lost");
    lws_callback_on_writable(wsi);
    return;
  }
  const char *token = bearer_subprotocol(wsi, sub, sizeof sub) ? sub + 7 : NULL;
  struct rb_call *c = rb_request_start(b, wsi, conn, m.route, uri, NULL, 0, true, token, &early);
  if (!c) {
    conn->ws_close_code = LWS_CLOSE_STATUS_UNEXPECTED_CONDITION;
    lws_callback_on_writable(wsi);
  }
}

int rb_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, struct rb_conn *conn,
                   void *in, size_t len) {
  (void)in;
  (void)len;
  if (!conn)
    return 0;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED: on_established(wsi, conn); return 0;
  case LWS_CALLBACK_SERVER_WRITEABLE: return on_writeable(wsi, conn);
  case LWS_CALLBACK_TIMER: on_slow_timer(wsi, conn); return 0;
  case LWS_CALLBACK_RECEIVE: /* server streams take no client messages */ return 0;
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: return 0;
  case LWS_CALLBACK_CLOSED:
    if (conn->ws_counted) {
      conn->ws_counted = false;
      rb_stats_websocket(conn->bridge->stats, -1);
    }
    rb_conn_detach(conn);
    conn->state = RB_CONN_IDLE;
    return 0;
  default: return 0;
  }
}
