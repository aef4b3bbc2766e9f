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
 * Browsers cannot set Authorization on a WebSocket, so a token may come in
 * the subprotocol list "bearer, <token>": the upgrade accepts "bearer" (the
 * token is never echoed) and the token is passed on as "authorization:
 * Bearer <token>", as an Authorization header would be. lws 4.1
 * accepts a subprotocol only by the name of a registered protocol, so the
 * name of the bridge's one protocol is set to the client's choice just
 * before lws looks it up (all on the lws thread). lws 4.1 handles at most
 * 126 bytes of the list (and 63 of a name): it is told to keep no more, so
 * that a long token is cut in its copy instead of the connection being
 * dropped, and the token is read from the bytes the framer saw (up to
 * RB_FRAME_MAX_PROTOCOLS). */
#include "restbridge_internal.h"

#include "budget.h"
#include "framing.h"

#include "ana_alloc.h"
#include "ana_id.h"
#include "ana_log.h"

#include <ctype.h>
#include <inttypes.h>
#include <string.h>

#define BEARER_PROTOCOL "bearer"
#define WS_PROTOCOL_LIST_MAX RB_WS_LWS_PROTOCOLS_MAX
/* Seconds a closing WebSocket may wait for room for its close frame. */
#define WS_CLOSE_GRACE_S 5

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

/* Queues frame m (taken) on the call, or refuses it: ANA_ERR_CLOSED, or
 * ANA_ERR_FULL at stream_buffer_size frames. */
static int queue_frame(struct rb_call *c, struct rb_msg *m) {
  size_t limit = c->bridge->opt.stream_buffer_size;
  size_t bytes = m->len;
  int rc;
  pthread_mutex_lock(&c->mu);
  if (c->finished || atomic_load(&c->base.cancelled) || atomic_load(&c->evicted)) {
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
    rb_budget_stream_push(c->bridge->budget, c, bytes);
    m = NULL;
    rc = 0;
  }
  pthread_mutex_unlock(&c->mu);
  rb_msg_free(m);
  if (rc == 0)
    rb_budget_stream_enforce(c->bridge->budget);
  if (rc != ANA_ERR_CLOSED)
    rb_call_wake(c);
  return rc;
}

/* {"result":<message>} as one text frame; NULL with *rc set on failure. */
static struct rb_msg *result_frame(const ProtobufCMessage *message, int *rc) {
  struct ana_json_buf buf;
  ana_json_buf_init(&buf, 0);
  *rc = rb_json_append(&buf, "{\"result\":", 10);
  if (*rc == 0)
    *rc = ana_json_encode(&buf, message, NULL);
  if (*rc == 0)
    *rc = rb_json_append(&buf, "}", 1);
  struct rb_msg *m = *rc == 0 ? rb_msg_from_buf(&buf) : NULL;
  ana_json_buf_fini(&buf);
  if (!m && *rc == 0)
    *rc = ANA_ERR_NOMEM;
  return m;
}

static int ws_send(struct ana_call *call, const ProtobufCMessage *message) {
  int rc;
  struct rb_msg *m = result_frame(message, &rc);
  return m ? queue_frame((struct rb_call *)call, m) : rc;
}

/* A shared message as WebSocket text, encoded once for every subscriber
 * (ana_call_shared_encoding). With a per-call sequence, `frame` is the
 * message with its sequence at 0 (so left out) and `head` is what the
 * encoder writes in front of a sequence's digits ({"sequence":"), taken from
 * the encoder itself; each call's frame is spliced from the two and is the
 * same text as its own encoding would be (field 1 comes first). */
struct ws_shared_frame {
  struct rb_msg *frame; /* {"result":<message>} */
  char head[64];
  size_t head_len; /* 0: the frame goes as it is */
};

static void ws_shared_release(void *p) {
  struct ws_shared_frame *f = p;
  rb_msg_free(f->frame);
  ana_free(f);
}

/* Fills f->head from the encoding of a message of m's type holding only
 * sequence 1: {"sequence":"1"} without its 1"}. */
static int sequence_head(struct ws_shared_frame *f, const ProtobufCMessage *message) {
  const ProtobufCMessageDescriptor *d = message->descriptor;
  const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(d, 1);
  ProtobufCMessage *probe = ana_malloc(d->sizeof_message);
  if (!probe)
    return ANA_ERR_NOMEM;
  d->message_init(probe);
  uint64_t one = 1;
  memcpy((char *)probe + fd->offset, &one, sizeof one);
  struct ana_json_buf buf;
  ana_json_buf_init(&buf, 0);
  int rc = ana_json_encode(&buf, probe, NULL);
  ana_free(probe);
  const char *text = buf.data ? buf.data + buf.reserve : "";
  static const char tail[] = "\"1\"}";
  size_t n = buf.len;
  if (rc == 0 && (n < sizeof tail || n - 3 >= sizeof f->head ||
                  memcmp(text + n - (sizeof tail - 1), tail, sizeof tail - 1) != 0))
    rc = ANA_ERR_INVALID; /* not the text this splicing expects */
  if (rc == 0) {
    f->head_len = n - 3; /* up to the opening quote of the digits */
    memcpy(f->head, text, f->head_len);
  }
  ana_json_buf_fini(&buf);
  return rc;
}

static void *ws_shared_encode(const struct ana_call_shared *m, int *rc) {
  struct ws_shared_frame *f = ana_calloc(1, sizeof *f);
  if (!f) {
    *rc = ANA_ERR_NOMEM;
    return NULL;
  }
  const ProtobufCMessage *message = ana_call_shared_message(m);
  f->frame = result_frame(message, rc);
  if (f->frame && ana_call_shared_per_call_sequence(m))
    *rc = sequence_head(f, message);
  if (*rc < 0) {
    ws_shared_release(f);
    return NULL;
  }
  return f;
}

static int ws_send_shared(struct ana_call *call, struct ana_call_shared *shared,
                          uint64_t sequence) {
  int rc;
  struct ws_shared_frame *f =
      ana_call_shared_encoding(shared, &rb_ws_transport, ws_shared_encode, ws_shared_release, &rc);
  if (!f)
    return rc;
  if (!f->head_len || !sequence) {
    struct rb_msg *m = rb_msg_new(f->frame->data, f->frame->len);
    return m ? queue_frame((struct rb_call *)call, m) : ANA_ERR_NOMEM;
  }
  /* {"result":  head  digits  "  [,]  rest of the message's object  } */
  static const size_t result_len = 10;
  char digits[24];
  size_t nd = (size_t)snprintf(digits, sizeof digits, "%" PRIu64, sequence);
  const unsigned char *body = f->frame->data + result_len; /* {...}} */
  size_t body_len = f->frame->len - result_len - 1;        /* {...} */
  bool empty = body_len == 2;
  size_t len = result_len + f->head_len + nd + 1 + !empty + (body_len - 1) + 1;
  struct rb_msg *m = rb_msg_alloc(len);
  if (!m)
    return ANA_ERR_NOMEM;
  unsigned char *p = m->data;
  memcpy(p, f->frame->data, result_len);
  p += result_len;
  memcpy(p, f->head, f->head_len);
  p += f->head_len;
  memcpy(p, digits, nd);
  p += nd;
  *p++ = '"';
  if (!empty)
    *p++ = ',';
  memcpy(p, body + 1, body_len - 1);
  p += body_len - 1;
  *p++ = '}';
  *p = '\0';
  return queue_frame((struct rb_call *)call, m);
}

static size_t ws_send_queue_length(struct ana_call *call) {
  struct rb_call *c = (struct rb_call *)call;
  pthread_mutex_lock(&c->mu);
  size_t n = c->q_len;
  pthread_mutex_unlock(&c->mu);
  return n;
}

int rb_ws_close_code_of(const struct ana_error *status, bool shutting_down) {
  if (!status || status->code == ANA_STATUS_OK)
    return LWS_CLOSE_STATUS_NORMAL;
  /* A stream the handler ended for being too slow closes like the bridge's
   * own slow-consumer close. */
  if (status->code == ANA_STATUS_RESOURCE_EXHAUSTED &&
      strncmp(status->message, ANA_SLOW_CONSUMER_MESSAGE, strlen(ANA_SLOW_CONSUMER_MESSAGE)) == 0)
    return LWS_CLOSE_STATUS_POLICY_VIOLATION;
  /* Long streams end with UNAVAILABLE when the server drains. */
  if (status->code == ANA_STATUS_UNAVAILABLE && shutting_down)
    return LWS_CLOSE_STATUS_GOINGAWAY;
  return RB_WS_CLOSE_STATUS_BASE + (int)status->code;
}

static void ws_finish(struct ana_call *call, const ProtobufCMessage *response,
                      const struct ana_error *status) {
  struct rb_call *c = (struct rb_call *)call;
  struct rb_msg *last = NULL;
  int code = LWS_CLOSE_STATUS_NORMAL;
  char reason[sizeof c->ws_close_reason] = "";
  if (status && status->code != ANA_STATUS_OK) {
    last = rb_error_json(call, status, "{\"error\":", "}");
    code = rb_ws_close_code_of(status, atomic_load(&c->bridge->shutting_down));
    utf8_cut(reason, sizeof reason, status->message);
  } else if (response) {
    int rc;
    last = result_frame(response, &rc);
  }
  pthread_mutex_lock(&c->mu);
  c->ws_last = last;
  c->ws_close_code = code;
  memcpy(c->ws_close_reason, reason, sizeof reason);
  rb_call_settle(c);
}

const struct ana_call_transport rb_ws_transport = {
    .send = ws_send,
    .send_queue_length = ws_send_queue_length,
    .finish = ws_finish,
    .name = "websocket",
    .send_shared = ws_send_shared,
};

/* --- upgrade (lws thread) --- */

/* Answers the upgrade request with an HTTP error right away and hangs up.
 * Written raw: at this point lws has not yet recorded the request's HTTP
 * version (its header helpers would say HTTP/1.0, which clients refuse),
 * and the wsi has no session data yet. Returns -1 (lws closes). */
/* rb_refuse_raw with an explicit HTTP status and reason phrase. */
static int refuse_raw_status(struct lws *wsi, int status, const char *phrase, enum ana_status code,
                             const char *message) {
  struct ana_error st;
  ana_error_set(&st, code, "%s", message);
  struct rb_msg *body = rb_error_json(NULL, &st, NULL, NULL);
  if (!body)
    return -1;
  char head[256];
  int hn = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                    "content-length: %zu\r\nconnection: close\r\n\r\n",
                    status, phrase, body->len);
  if (hn < 0 || (size_t)hn >= sizeof head) {
    rb_msg_free(body);
    return -1;
  }
  struct rb_msg *all = rb_msg_alloc((size_t)hn + body->len);
  if (all) {
    memcpy(all->data, head, (size_t)hn);
    memcpy(all->data + hn, body->data, body->len);
    lws_write(wsi, all->data, all->len, LWS_WRITE_RAW);
  }
  rb_msg_free(all);
  rb_msg_free(body);
  return -1;
}

int rb_refuse_raw(struct lws *wsi, enum ana_status code, const char *message) {
  int status = rb_http_status_of(code);
  return refuse_raw_status(wsi, status,
                           status == 404   ? "Not Found"
                           : status == 403 ? "Forbidden"
                           : status == 501 ? "Not Implemented"
                           : status == 503 ? "Service Unavailable"
                                           : "Bad Request",
                           code, message);
}

/* The request's Sec-WebSocket-Protocol list: as the client sent it (the
 * framer's copy: lws keeps 126 bytes of it), or lws's copy (into fallback)
 * on a connection without a framer. *too_long: longer than
 * RB_FRAME_MAX_PROTOCOLS, or, from lws's copy, possibly cut. */
static const char *protocol_list(struct lws *wsi, char *fallback, size_t size, bool *too_long) {
  const char *list = rb_framer_ws_protocols(lws_get_socket_fd(wsi), too_long);
  if (list && (*list || *too_long || lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) == 0))
    return list; /* else a header lws parsed that the framer did not see as one: lws's copy */
  int n = lws_hdr_copy(wsi, fallback, (int)size, WSI_TOKEN_PROTOCOL);
  if (n < 0)
    n = 0;
  fallback[n] = '\0';
  *too_long = n >= WS_PROTOCOL_LIST_MAX;
  return fallback;
}

/* The token of a "bearer, <token>" Sec-WebSocket-Protocol list (the entry
 * after "bearer"), copied into out; false when the list names no bearer
 * token. *bearer tells whether "bearer" was offered at all. */
static bool bearer_subprotocol(const char *list, char *out, size_t size, bool *bearer) {
  bool after_bearer = false;
  out[0] = '\0';
  *bearer = false;
  for (const char *p = list; *p;) {
    while (*p == ' ' || *p == ',' || *p == '\t')
      p++;
    const char *start = p;
    while (*p && *p != ',' && *p != ' ' && *p != '\t')
      p++;
    size_t n = (size_t)(p - start);
    if (n == 0)
      break;
    if (after_bearer) {
      if (n >= size)
        return false;
      memcpy(out, start, n);
      out[n] = '\0';
      return true;
    }
    if (n == strlen(BEARER_PROTOCOL) && strncmp(start, BEARER_PROTOCOL, n) == 0)
      *bearer = after_bearer = true;
  }
  return false;
}

/* Strips a default port (":80" for http/ws, ":443" for https/wss) from
 * the end of the n bytes of hostport; returns the length left. */
static size_t strip_default_port(const char *hostport, size_t n, bool secure) {
  const char *port = secure ? ":443" : ":80";
  size_t pl = strlen(port);
  if (n > pl && strncmp(hostport + n - pl, port, pl) == 0)
    return n - pl;
  return n;
}

/* Browsers apply no CORS to a WebSocket, so any page could open one with
 * its user's cookies: an upgrade that names an Origin must come from the
 * server's own (scheme://host:port naming the request's Host) or from one
 * in CORS_ALLOWED_ORIGINS. No Origin: not a browser, allowed. */
static bool ws_origin_ok(struct ana_restbridge *b, struct lws *wsi) {
  char origin[256], host[256];
  int on = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
  if (on == 0 && lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) == 0)
    return true;
  if (on <= 0)
    return false; /* longer than any origin of ours */
  if (rb_origin_allowed(b, origin))
    return true;
  if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0)
    return false;
  const char *sep = strstr(origin, "://");
  if (!sep)
    return false; /* "null" and other opaque origins */
  size_t scheme = (size_t)(sep - origin);
  bool secure = (scheme == 5 && strncasecmp(origin, "https", 5) == 0) ||
                (scheme == 3 && strncasecmp(origin, "wss", 3) == 0);
  const char *oh = sep + 3;
  size_t ol = strip_default_port(oh, strlen(oh), secure);
  size_t hl = strip_default_port(host, strlen(host), secure);
  return ol == hl && strncasecmp(oh, host, ol) == 0;
}

int rb_ws_confirm_upgrade(struct ana_restbridge *b, struct lws *wsi) {
  char *uri = NULL;
  int uri_len = 0;
  if (lws_http_get_uri_and_method(wsi, &uri, &uri_len) < 0 || !uri)
    return rb_refuse_raw(wsi, ANA_STATUS_INVALID_ARGUMENT, "malformed request");
  if (atomic_load(&b->shutting_down))
    return rb_refuse_raw(wsi, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
  struct rb_match m;
  rb_route_match(uri, "GET", true, NULL, &m);
  if (!m.route)
    return rb_refuse_raw(wsi, m.path_known ? ANA_STATUS_INVALID_ARGUMENT : ANA_STATUS_NOT_FOUND,
                         m.path_known ? "not a WebSocket endpoint" : "no WebSocket route");
  if (!ws_origin_ok(b, wsi))
    return rb_refuse_raw(wsi, ANA_STATUS_PERMISSION_DENIED,
                         "the Origin header names an origin that is neither this server's nor "
                         "in CORS_ALLOWED_ORIGINS");
  if (!rb_host_allowed(b, wsi))
    return refuse_raw_status(wsi, 421, "Misdirected Request", ANA_STATUS_INVALID_ARGUMENT,
                             "this Host is not served: authentication is not configured, so "
                             "only localhost, 127.0.0.1, [::1] and HTTP_ALLOWED_HOSTS are");
  /* lws keeps at most 126 bytes of each Sec-WebSocket-Protocol header and
   * drops the connection, unanswered, when what it kept of all of them adds
   * up to more. */
  if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) > WS_PROTOCOL_LIST_MAX)
    return rb_refuse_raw(wsi, ANA_STATUS_INVALID_ARGUMENT,
                         "send the WebSocket subprotocols in one Sec-WebSocket-Protocol header");
  char fallback[WS_PROTOCOL_LIST_MAX + 1], token[RB_FRAME_MAX_PROTOCOLS + 1];
  bool bearer, too_long;
  const char *list = protocol_list(wsi, fallback, sizeof fallback, &too_long);
  if (too_long)
    return rb_refuse_raw(wsi, ANA_STATUS_INVALID_ARGUMENT,
                         "Sec-WebSocket-Protocol is longer than 8192 bytes: send a long token in "
                         "the Authorization header instead, or as ?access_token= where "
                         "JWT_ALLOW_QUERY_TOKEN is set");
  if (!bearer_subprotocol(list, token, sizeof token, &bearer) && bearer)
    return rb_refuse_raw(wsi, ANA_STATUS_INVALID_ARGUMENT,
                         "the bearer subprotocol takes the token as the next value: "
                         "Sec-WebSocket-Protocol: bearer, <token>");
  snprintf(b->ws_name, sizeof b->ws_name, "%s", bearer ? BEARER_PROTOCOL : RB_WS_PROTOCOL);
  /* The vhost's heap copy of our protocol: lws matches the client's list
   * against this name next, and echoes it in the handshake: "bearer" alone,
   * never the token. */
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
    struct rb_call *c = conn->call;
    ana_call_mark_cancelled(&c->base);
    /* Nothing queued goes out any more: free it now, not at the close. */
    rb_budget_stream_drop(conn->bridge->budget, c);
    if (c->wsi) {
      lws_callback_on_writable(c->wsi);
      /* A client that does not read never makes the socket writable, so
       * the close frame may never go: hang up regardless after a few
       * seconds (time for a client that reads again to get the close
       * frame), not when the keepalive gives up a minute later. */
      lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, WS_CLOSE_GRACE_S);
    }
  }
}

void rb_ws_on_wake(struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  if (!c || !c->wsi)
    return;
  pthread_mutex_lock(&c->mu);
  bool full = c->full_since_ms != 0;
  pthread_mutex_unlock(&c->mu);
  if (atomic_load(&c->evicted)) {
    ANA_INFO(RB_COMPONENT, "closing a WebSocket of %s: over the stream queue budget",
             c->base.method->path);
    rb_ws_close(conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, "stream queue budget exceeded");
    return;
  }
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
    rb_budget_count_slow_close(conn->bridge->budget);
    rb_ws_close(conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, reason);
    return;
  }
  conn->slow_timer_armed = true;
  lws_set_timer_usecs(wsi, (lws_usec_t)(limit - waited) * 1000);
}

static int close_now(struct lws *wsi, int code, const char *reason) {
  struct rb_conn *conn = lws_wsi_user(wsi);
  if (conn)
    conn->ws_logged_code = code; /* for the access log */
  lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
  return -1;
}

/* Writes queued frames while the socket takes them without buffering
 * (lws_send_pipe_choked clears lws's back-to-back write check; a short write
 * is kept by lws and counts as choked), up to WS_WRITE_BUDGET bytes so that
 * one busy subscriber does not hold the thread from the others and from
 * REST; then asks for the next WRITEABLE if anything is left. One frame per
 * callback, as lws's examples do, cannot keep up with a subscriber getting
 * 1,000 events/s beside 99 others: it costs a poll round per frame.
 *
 * Frames queued together leave in one write: each gets its WebSocket header
 * here and the lot goes to lws as LWS_WRITE_RAW, which lws passes to the
 * socket as it is (buffering what the socket does not take, as for any
 * write). At 100 subscribers x 1,000 events/s one send() per frame is most
 * of the thread's time, and when it falls behind, frames pile up: writing
 * them together is what lets it catch up. Building the frames here is only
 * right while lws has nothing to add to them: a server frame is unmasked,
 * the bridge offers no extension (permessage-deflate would rewrite the
 * payload), and the connection is HTTP/1 (no h2 stream carrying the
 * WebSocket). */
#define WS_WRITE_BUDGET (64u << 10)

/* Bytes of the header lws_write would put in front of a text frame of len
 * bytes (RFC 6455 5.2, server side: no mask). */
static size_t frame_header(unsigned char *out, size_t len) {
  out[0] = 0x81; /* FIN, text */
  if (len < 126) {
    out[1] = (unsigned char)len;
    return 2;
  }
  if (len < 65536) {
    out[1] = 126;
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
  return 10;
}

/* Writes the n frames of list (taken) in one go, assembled in the bridge's
 * batch buffer (at most WS_WRITE_BUDGET: a bigger frame goes alone, from its
 * own headroom). Returns 0, or -1 when the connection failed. */
static int write_frames(struct lws *wsi, struct rb_conn *conn, struct rb_msg *list, size_t n) {
  struct ana_restbridge *b = conn->bridge;
  int rc = 0;
  if (n == 1) {
    int w = lws_write(wsi, list->data, list->len, LWS_WRITE_TEXT);
    rc = w == (int)list->len ? 0 : -1;
    goto out;
  }
  size_t total = 0;
  for (struct rb_msg *m = list; m; m = m->next)
    total += 10 + m->len;
  if (total + LWS_PRE > b->ws_batch_cap) {
    unsigned char *nb = ana_realloc(b->ws_batch, total + LWS_PRE);
    if (!nb) {
      /* Out of memory: one frame per write still works. */
      for (struct rb_msg *m = list; m && rc == 0; m = m->next)
        rc = lws_write(wsi, m->data, m->len, LWS_WRITE_TEXT) == (int)m->len ? 0 : -1;
      goto out;
    }
    b->ws_batch = nb;
    b->ws_batch_cap = total + LWS_PRE;
  }
  unsigned char *start = b->ws_batch + LWS_PRE, *p = start;
  for (struct rb_msg *m = list; m; m = m->next) {
    p += frame_header(p, m->len);
    memcpy(p, m->data, m->len);
    p += m->len;
  }
  size_t len = (size_t)(p - start);
  rc = lws_write(wsi, start, len, LWS_WRITE_RAW) == (int)len ? 0 : -1;
out:
  if (rc == 0) {
    rb_stats_ws_messages(b->stats, n);
    for (struct rb_msg *m = list; m; m = m->next)
      conn->bytes_out += (long long)m->len;
  }
  rb_msg_free(list);
  return rc;
}

static int on_writeable(struct lws *wsi, struct rb_conn *conn) {
  struct rb_call *c = conn->call; /* the connection's reference */
  if (conn->ws_close_code)
    return close_now(wsi, conn->ws_close_code, conn->ws_close_reason);
  if (!c)
    return close_now(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "");
  size_t limit = conn->bridge->opt.stream_buffer_size;
  /* Frames of our own making only on a plain HTTP/1 connection. */
  bool batch = lws_get_network_wsi(wsi) == wsi;
  size_t written = 0;
  for (;;) {
    if (written && (written >= WS_WRITE_BUDGET || lws_send_pipe_choked(wsi))) {
      lws_callback_on_writable(wsi);
      return 0;
    }
    /* Take what fits the budget: the queued frames, then, once the call
     * is finished, its last frame (error or last message), then the close. */
    struct rb_msg *list = NULL, **tail = &list;
    size_t n = 0, bytes = 0, popped = 0;
    int close_code = 0;
    char close_reason[sizeof c->ws_close_reason];
    pthread_mutex_lock(&c->mu);
    while (n == 0 || batch) {
      struct rb_msg *m = c->q_head;
      bool last = !m && c->finished; /* the error frame or the last message */
      if (last)
        m = c->ws_last;
      /* A frame that would take the write past the budget waits for the
       * next one (alone, it goes whatever its size). */
      if (!m || (n && written + bytes + m->len + 10 > WS_WRITE_BUDGET))
        break;
      if (last) {
        c->ws_last = NULL;
      } else {
        c->q_head = m->next;
        if (!c->q_head)
          c->q_tail = NULL;
        c->q_len--;
        popped += m->len;
      }
      m->next = NULL;
      *tail = m;
      tail = &m->next;
      n++;
      bytes += m->len + 10;
    }
    if (c->q_len < limit)
      c->full_since_ms = 0;
    if (!list && c->finished) {
      close_code = c->ws_close_code;
      memcpy(close_reason, c->ws_close_reason, sizeof close_reason);
    }
    bool more = c->q_head != NULL || c->finished;
    rb_budget_stream_pop(conn->bridge->budget, c, popped);
    pthread_mutex_unlock(&c->mu);
    if (close_code)
      return close_now(wsi, close_code, close_reason);
    if (!list)
      return 0;
    if (write_frames(wsi, conn, list, n) < 0)
      return -1;
    written += bytes;
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
  char sub[RB_FRAME_MAX_PROTOCOLS + 1], fallback[WS_PROTOCOL_LIST_MAX + 1],
      id[sizeof conn->request_id];
  bool bearer, too_long;

  /* Back to the canonical name until the next upgrade. */
  snprintf(b->ws_name, sizeof b->ws_name, "%s", RB_WS_PROTOCOL);
  conn->state = RB_CONN_WS_OPEN;
  conn->started_ns = rb_now_ns();
  conn->method_name = "GET";
  conn->route = NULL;
  conn->bytes_in = conn->bytes_out = 0;
  conn->ws_logged_code = 0;
  if (!conn->ws_counted) {
    conn->ws_counted = true;
    rb_stats_websocket(b->stats, 1);
  }
  int n = lws_hdr_custom_copy(wsi, id, sizeof id, "x-request-id:", 13);
  if (n > 0)
    memcpy(conn->request_id, id, (size_t)n + 1);
  else if (ana_uuid7_generate(conn->request_id) < 0)
    conn->request_id[0] = '\0';
  rb_access_take_peer(wsi, conn);
  int got = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
  snprintf(conn->log_path, sizeof conn->log_path, "%.*s", uri ? uri_len : 0, uri ? uri : "");
  char *q = strchr(conn->log_path, '?');
  if (q)
    *q = '\0';
  if (got < 0 || !uri || rb_route_match(uri, "GET", true, NULL, &m) < 0) {
    rb_ws_close(conn, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "route lost");
    lws_callback_on_writable(wsi);
    return;
  }
  conn->route = m.route;
  const char *list = protocol_list(wsi, fallback, sizeof fallback, &too_long);
  const char *token = bearer_subprotocol(list, sub, sizeof sub, &bearer) ? sub : NULL;
  rb_framer_drop_protocols(lws_get_socket_fd(wsi));
  struct rb_call *c = rb_request_start(b, wsi, conn, m.route, uri, NULL, 0, true, token, &early);
  if (!c) {
    conn->ws_close_code = rb_ws_close_code_of(&early, atomic_load(&b->shutting_down));
    utf8_cut(conn->ws_close_reason, sizeof conn->ws_close_reason, early.message);
    lws_callback_on_writable(wsi);
  }
}

bool rb_ws_on_unmasked(struct lws *wsi) {
  struct rb_conn *conn = lws_wsi_user(wsi);
  if (!conn || (conn->state != RB_CONN_WS_OPEN && conn->state != RB_CONN_WS_CLOSING))
    return false;
  lws_rx_flow_control(wsi, 0); /* recv() has nothing more to give */
  rb_ws_close(conn, LWS_CLOSE_STATUS_PROTOCOL_ERR, "unmasked client frame");
  lws_callback_on_writable(wsi);
  return true;
}

/* A client message: the streams take none, but a text message must be
 * UTF-8 (RFC 6455 8.1), checked as its fragments arrive (a code point may
 * be split between them); otherwise the connection fails with 1007. lws
 * has already failed bad framing (a continuation without a start, a new
 * message inside a fragmented one) with 1002. */
static int on_receive(struct lws *wsi, struct rb_conn *conn, const void *in, size_t len) {
  bool final = lws_is_final_fragment(wsi) != 0;
  conn->bytes_in += (long long)len;
  /* The streams take no client messages; one larger than a request body
   * may be fails with 1009 (RFC 6455 7.4.1), however it is fragmented. */
  size_t max = conn->bridge->opt.max_body_bytes;
  conn->ws_msg_len += len;
  if (conn->ws_msg_len > max) {
    char reason[64];
    snprintf(reason, sizeof reason, "message over HTTP_MAX_BODY_BYTES (%zu bytes)", max);
    return close_now(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, reason);
  }
  if (final)
    conn->ws_msg_len = 0;
  if (lws_frame_is_binary(wsi))
    return 0;
  bool ok = ana_utf8_feed(&conn->ws_utf8, in, len) && (!final || ana_utf8_complete(&conn->ws_utf8));
  if (final || !ok)
    memset(&conn->ws_utf8, 0, sizeof conn->ws_utf8);
  if (!ok)
    return close_now(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "text message is not UTF-8");
  return 0;
}

/* The client's close frame (in: its payload): lws echoes the code, and has
 * replaced a code that must not be sent (below 1000, 1004-1006, 1015...)
 * with 1002. What it lets through is failed here: a 1-byte payload and
 * codes from 5000 (1002), a reason that is not UTF-8 (1007). */
static int on_peer_close(struct lws *wsi, const unsigned char *in, size_t len) {
  if (len == 1)
    return close_now(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "close payload of 1 byte");
  if (len < 2)
    return 0;
  unsigned code = (unsigned)in[0] << 8 | in[1];
  struct rb_conn *conn = lws_wsi_user(wsi);
  if (conn && !conn->ws_logged_code)
    conn->ws_logged_code = (int)code; /* lws echoes it */
  if (code >= 5000)
    return close_now(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "invalid close code");
  struct ana_utf8_state st = {0};
  if (!ana_utf8_feed(&st, in + 2, len - 2) || !ana_utf8_complete(&st))
    return close_now(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "close reason is not UTF-8");
  return 0;
}

int rb_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, struct rb_conn *conn,
                   void *in, size_t len) {
  if (!conn)
    return 0;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED: on_established(wsi, conn); return 0;
  case LWS_CALLBACK_SERVER_WRITEABLE: return on_writeable(wsi, conn);
  case LWS_CALLBACK_TIMER: on_slow_timer(wsi, conn); return 0;
  case LWS_CALLBACK_RECEIVE: return on_receive(wsi, conn, in, len);
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: return on_peer_close(wsi, in, len);
  case LWS_CALLBACK_CLOSED: {
    /* 1006: the connection ended without a close frame. */
    int code = conn->ws_logged_code ? conn->ws_logged_code : LWS_CLOSE_STATUS_ABNORMAL_CLOSE;
    rb_access_log(wsi, conn, code,
                  code == LWS_CLOSE_STATUS_NORMAL || code == LWS_CLOSE_STATUS_GOINGAWAY);
    conn->method_name = NULL;
  }
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
