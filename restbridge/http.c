/* REST over HTTP/1.1: request checks (method, route, body framing and
 * size), /health, /metrics, /openapi.json, CORS, the HTTP call transport (a unary answer encoded on
 * the handler's thread, written on the lws thread), and response writing. */
#include "restbridge_internal.h"

#include "budget.h"
#include "framing.h"

#include "ana_alloc.h"
#include "ana_id.h"
#include "ana_log.h"
#include "ana_openapi.h"
#include "ana_prom.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define WRITE_CHUNK 16384
#define GATED_RETRY_US 5000
#define HEADER_SPACE 4096
#define DEFAULT_ALLOW_HEADERS                                                                      \
  "Authorization, X-Account-Id, X-Request-Id, X-Api-Key, Content-Type, Grpc-Timeout"

static const char *const method_names[] = {
    [LWSHUMETH_GET] = "GET",         [LWSHUMETH_POST] = "POST",   [LWSHUMETH_OPTIONS] = "OPTIONS",
    [LWSHUMETH_PUT] = "PUT",         [LWSHUMETH_PATCH] = "PATCH", [LWSHUMETH_DELETE] = "DELETE",
    [LWSHUMETH_CONNECT] = "CONNECT", [LWSHUMETH_HEAD] = "HEAD",
};

/* --- the transport (any thread) --- */

static int http_send(struct ana_call *call, const ProtobufCMessage *message) {
  (void)call;
  (void)message;
  return ANA_ERR_CLOSED; /* unary over HTTP: nothing streams */
}

static size_t http_send_queue_length(struct ana_call *call) {
  (void)call;
  return 0;
}

/* Room kept before each JSON chunk of an answer: the rb_msg that carries
 * it, LWS_PRE, and its chunk-size line ("\r\n" ending the chunk before,
 * up to 16 hex digits, "\r\n"). */
#define CHUNK_LINE_MAX 20
#define CHUNK_RESERVE (sizeof(struct rb_msg) + LWS_PRE + CHUNK_LINE_MAX)

/* The payload of b as an outbound buffer without a copy: its headroom
 * becomes the rb_msg (rb_msg_free frees the whole allocation). b is left
 * empty. */
static struct rb_msg *chunk_take(struct ana_json_buf *b) {
  struct rb_msg *m = (struct rb_msg *)(void *)b->data;
  m->next = NULL;
  m->len = b->len;
  m->data = (unsigned char *)b->data + b->reserve;
  b->data = NULL;
  b->len = b->cap = 0;
  return m;
}

/* Appends m to the call's queue (c->mu held). */
static void queue_chunk(struct rb_call *c, struct rb_msg *m) {
  if (c->q_tail)
    c->q_tail->next = m;
  else
    c->q_head = m;
  c->q_tail = m;
  c->q_len++;
  rb_budget_stream_push(c->bridge->budget, c, m->len);
}

/* The encoder's sink: each chunk of a long answer is queued as it is
 * written (no copy: the encoder's buffer is the chunk) and the lws thread
 * woken to send it. The queued chunks count in STREAM_QUEUE_BUDGET_MB; the
 * encoding stops when the client went away or the budget took the queue. */
static int flush_chunk(void *ctx, struct ana_json_buf *b) {
  struct rb_call *c = ctx;
  if (atomic_load(&c->base.cancelled) || atomic_load(&c->evicted))
    return ANA_ERR_CLOSED;
  struct rb_msg *m = chunk_take(b);
  pthread_mutex_lock(&c->mu);
  if (!c->streaming) {
    c->streaming = true;
    c->reply.http_status = 200;
    rb_reply_rate(&c->reply, &c->base);
  }
  queue_chunk(c, m);
  pthread_mutex_unlock(&c->mu);
  rb_budget_stream_enforce(c->bridge->budget);
  rb_call_wake(c);
  size_t cap = CHUNK_RESERVE + RB_REPLY_CHUNK + RB_REPLY_CHUNK / 4;
  if (!(b->data = ana_malloc(cap)))
    return ANA_ERR_NOMEM;
  b->cap = cap;
  return 0;
}

/* Encodes the answer here, on the handler's thread, and hands it over: a
 * short one whole, a long one chunk by chunk while it is written. */
static void http_finish(struct ana_call *call, const ProtobufCMessage *response,
                        const struct ana_error *status) {
  struct rb_call *c = (struct rb_call *)call;
  struct rb_reply r;
  memset(&r, 0, sizeof r);
  if (status && status->code != ANA_STATUS_OK) {
    rb_reply_error(&r, call, status);
  } else if (!response) {
    struct ana_error st;
    ana_error_set(&st, ANA_STATUS_INTERNAL, "%s answered without a response", call->method->path);
    rb_reply_error(&r, call, &st);
  } else {
    struct ana_json_buf buf;
    ana_json_buf_init(&buf, CHUNK_RESERVE);
    bool flushed = false;
    int rc = ana_json_encode_stream(&buf, response, NULL, RB_REPLY_CHUNK, flush_chunk, c, &flushed);
    if (flushed) {
      /* Streamed: the status went with the first chunk; the rest follows. */
      if (rc < 0 && rc != ANA_ERR_CLOSED)
        ANA_WARN(RB_COMPONENT, "cannot encode the response of %s as JSON: %s (answer cut)",
                 call->method->path, ana_strerror(rc));
      struct rb_msg *last = rc == 0 && buf.data && buf.len ? chunk_take(&buf) : NULL;
      ana_json_buf_fini(&buf);
      pthread_mutex_lock(&c->mu);
      if (last)
        queue_chunk(c, last);
      c->stream_failed = rc < 0;
      c->finished = true;
      pthread_mutex_unlock(&c->mu);
      if (last)
        rb_budget_stream_enforce(c->bridge->budget);
      goto handed;
    }
    if (rc == 0 && (r.body = buf.data ? chunk_take(&buf) : rb_msg_alloc(0)) != NULL) {
      r.http_status = 200;
    } else {
      struct ana_error st;
      ana_error_set(&st, ANA_STATUS_INTERNAL, "cannot encode the response of %s as JSON: %s",
                    call->method->path, ana_strerror(rc < 0 ? rc : ANA_ERR_NOMEM));
      rb_reply_error(&r, call, &st);
    }
    ana_json_buf_fini(&buf);
  }
  rb_reply_rate(&r, call);
  pthread_mutex_lock(&c->mu);
  c->reply = r;
  c->finished = true;
  pthread_mutex_unlock(&c->mu);
handed:
  atomic_fetch_sub(&c->bridge->inflight, 1);
  rb_call_wake(c);
  rb_call_unref(c); /* the handler's reference */
}

const struct ana_call_transport rb_http_transport = {
    .send = http_send,
    .send_queue_length = http_send_queue_length,
    .finish = http_finish,
    .name = "http",
};

/* --- answering (lws thread) --- */

static void answer(struct lws *wsi, struct rb_conn *conn) {
  /* lws 4.1 serves an HTTP/1 connection's POLLOUT only while its rx is on. */
  lws_rx_flow_control(wsi, 1);
  conn->state = RB_CONN_WRITING;
  conn->headers_sent = false;
  conn->body_off = 0;
  /* No LWS_SET_TIMER_USEC_CANCEL: lws 4.1 fires the timer at once on it. A
   * deadline timer still pending finds the connection no longer WAITING. */
  lws_callback_on_writable(wsi);
}

void rb_http_answer(struct lws *wsi, struct rb_conn *conn) {
  answer(wsi, conn);
}

void rb_http_answer_error(struct lws *wsi, struct rb_conn *conn, const struct ana_error *st,
                          bool close_after) {
  rb_reply_error(&conn->reply, NULL, st);
  conn->reply.close_after = close_after;
  if (conn->call)
    ana_call_mark_cancelled(&conn->call->base); /* its answer, if any, goes nowhere */
  answer(wsi, conn);
}

static void answer_json(struct lws *wsi, struct rb_conn *conn, int status, const char *json,
                        size_t len) {
  rb_reply_clear(&conn->reply);
  conn->reply.http_status = status;
  conn->reply.body = len ? rb_msg_new(json, len) : NULL;
  answer(wsi, conn);
}

static void answer_status(struct lws *wsi, struct rb_conn *conn, enum ana_status code,
                          bool close_after, const char *fmt, const char *arg) {
  struct ana_error st;
  ana_error_set(&st, code, fmt, arg);
  rb_http_answer_error(wsi, conn, &st, close_after);
}

void rb_http_on_wake(struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  if (c && c->route->download) {
    if (conn->state == RB_CONN_WRITING && conn->dl_streaming && conn->headers_sent)
      lws_callback_on_writable(c->wsi); /* more of the file */
    else if (conn->state == RB_CONN_WAITING && rb_download_on_wake(conn))
      answer(c->wsi, conn);
    return;
  }
  if (!c)
    return;
  if (conn->state == RB_CONN_WRITING && conn->streaming) {
    if (atomic_load(&c->evicted)) {
      /* STREAM_QUEUE_BUDGET_MB took the rest of the answer: hang up (the
       * client sees the body cut). */
      lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
      return;
    }
    lws_callback_on_writable(c->wsi); /* more of the answer */
    return;
  }
  if (conn->state != RB_CONN_WAITING)
    return;
  if (atomic_load(&c->evicted)) {
    struct ana_error st;
    ana_error_set(&st, ANA_STATUS_UNAVAILABLE,
                  "the answer does not fit STREAM_QUEUE_BUDGET_MB now; retry later");
    rb_http_answer_error(c->wsi, conn, &st, true);
    return;
  }
  pthread_mutex_lock(&c->mu);
  bool done = c->finished;
  /* A streamed answer starts with its first chunk (HTTP/1.1: chunked);
   * HTTP/1.0 waits for the whole of it (Content-Length). */
  bool go = done || (c->streaming && conn->http11);
  if (go) {
    rb_reply_clear(&conn->reply);
    conn->reply = c->reply;
    memset(&c->reply, 0, sizeof c->reply);
    conn->streaming = c->streaming;
  }
  pthread_mutex_unlock(&c->mu);
  if (go)
    answer(c->wsi, conn);
}

void rb_http_on_deadline(struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  if (!c || conn->state != RB_CONN_WAITING)
    return;
  int64_t left = c->base.deadline_mono_ms == INT64_MAX
                     ? INT64_MAX
                     : c->base.deadline_mono_ms - ana_call_now_mono_ms();
  if (left > 0) { /* a timer of an earlier request, or the framer's retry */
    if (left != INT64_MAX)
      lws_set_timer_usecs(c->wsi, left * 1000);
    return;
  }
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
  rb_http_answer_error(c->wsi, conn, &st, false);
}

/* recv() held back the next request while this one is unanswered (the
 * framer): stop polling for input, which would spin. While a call is in
 * flight, answer() turns input back on; while the answer is being written
 * (lws 4.1 serves POLLOUT only with input on), a short timer does. */
void rb_http_on_gated(struct lws *wsi) {
  struct rb_conn *conn = lws_wsi_user(wsi);
  lws_rx_flow_control(wsi, 0);
  if (!conn || conn->state != RB_CONN_WAITING)
    lws_set_timer_usecs(wsi, GATED_RETRY_US);
}

void rb_http_on_timer(struct rb_conn *conn, struct lws *wsi) {
  if (conn->rate_timer && conn->state == RB_CONN_READING_BODY) {
    /* A body's rate window (budget.c). */
    if (rb_budget_body_too_slow(wsi, conn)) {
      answer_status(wsi, conn, ANA_STATUS_DEADLINE_EXCEEDED, true,
                    "request body arrived slower than %s (HTTP_BODY_MIN_RATE)", "the minimum rate");
      conn->reply.http_status = 408;
    }
    return;
  }
  conn->rate_timer = false;
  if (conn->state == RB_CONN_WAITING)
    rb_http_on_deadline(conn);
  else
    lws_rx_flow_control(wsi, 1);
}

/* --- protected mode: Host --- */

/* Whether the n bytes of name equal one entry of the comma-separated list. */
static bool in_host_list(const char *list, const char *name, size_t n) {
  for (const char *p = list ? list : ""; *p;) {
    while (*p == ' ' || *p == ',')
      p++;
    const char *start = p;
    while (*p && *p != ',' && *p != ' ')
      p++;
    size_t len = (size_t)(p - start);
    if (len && len == n && strncasecmp(start, name, n) == 0)
      return true;
  }
  return false;
}

/* Whether the request brings credentials of its own: Authorization,
 * X-Api-Key, or a WebSocket `bearer` subprotocol (lws keeps the list's first
 * bytes; the token itself is read elsewhere). */
static bool brings_credentials(struct lws *wsi) {
  if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 ||
      lws_hdr_custom_length(wsi, "x-api-key:", 10) > 0)
    return true;
  char proto[160];
  return lws_hdr_copy_fragment(wsi, proto, sizeof proto, WSI_TOKEN_PROTOCOL, 0) >= 6 &&
         strncasecmp(proto, "bearer", 6) == 0;
}

bool rb_host_allowed(const struct ana_restbridge *b, struct lws *wsi) {
  bool check = b->opt.protected_mode && b->opt.protected_mode(b->opt.protected_mode_ctx);
  if (!check && b->opt.host_check_without_credentials)
    check = !brings_credentials(wsi);
  if (!check)
    return true;
  char host[256];
  if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0)
    return false;
  /* The name without the port: "[::1]:3004" -> "[::1]", "localhost:80" -> "localhost". */
  size_t n = strlen(host);
  const char *colon = strrchr(host, ':');
  if (host[0] == '[') {
    const char *close = strchr(host, ']');
    if (!close)
      return false;
    n = (size_t)(close - host) + 1;
  } else if (colon) {
    n = (size_t)(colon - host);
  }
  if ((n == 9 && strncasecmp(host, "localhost", 9) == 0) ||
      (n == 9 && strncmp(host, "127.0.0.1", 9) == 0) || (n == 5 && strncmp(host, "[::1]", 5) == 0))
    return true;
  return in_host_list(b->opt.allowed_hosts, host, n);
}

/* --- CORS --- */

bool rb_origin_allowed(const struct ana_restbridge *b, const char *origin) {
  const char *list = b->opt.cors_allowed_origins;
  if (!list || !origin[0])
    return false;
  size_t ol = strlen(origin);
  for (const char *p = list; *p;) {
    while (*p == ' ' || *p == ',')
      p++;
    const char *start = p;
    while (*p && *p != ',')
      p++;
    const char *end = p;
    while (end > start && end[-1] == ' ')
      end--;
    size_t n = (size_t)(end - start);
    if ((n == 1 && *start == '*') || (n == ol && strncmp(start, origin, n) == 0))
      return true;
  }
  return false;
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end) {
  return lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)value,
                                     (int)strlen(value), p, end);
}

/* --- writing (lws thread) --- */

/* The connection is done with this request: release the call, then keep
 * the connection for the next request or hang up. */
void rb_access_log(struct lws *wsi, struct rb_conn *conn, int status, bool success) {
  if (!conn->method_name || !ana_log_access_sampled(success))
    return;
  char peer[64] = "";
  if (conn->peer_ip[0]) {
    snprintf(peer, sizeof peer, "%s", conn->peer_ip);
  } else {
    struct lws *net = lws_get_network_wsi(wsi);
    lws_get_peer_simple(net ? net : wsi, peer, sizeof peer);
    if (strncmp(peer, "::ffff:", 7) == 0 && strchr(peer, '.')) /* an IPv4 client, as such */
      memmove(peer, peer + 7, strlen(peer + 7) + 1);
  }
  const struct ana_route *r = conn->route;
  bool ws = conn->state == RB_CONN_WS_OPEN || conn->state == RB_CONN_WS_CLOSING;
  struct ana_access_entry e = {
      .transport = ws ? "websocket" : "http",
      .request_id = conn->request_id[0] ? conn->request_id : NULL,
      .method = conn->method_name,
      .route = r ? r->pattern : conn->log_path,
      .status = status,
      .bytes_in = ws ? conn->bytes_in : (long long)conn->body_len,
      .bytes_out = conn->bytes_out,
      .duration_ms = (double)(rb_now_ns() - conn->started_ns) / 1e6,
      .peer = peer,
      .success = success,
  };
  ana_log_access(&e);
}

void rb_access_take_peer(struct lws *wsi, struct rb_conn *conn) {
  char peer[INET6_ADDRSTRLEN + 16], ip[INET6_ADDRSTRLEN], xff[2048];
  struct lws *net = lws_get_network_wsi(wsi);
  rb_request_peer(net ? net : wsi, peer, sizeof peer, ip, sizeof ip);
  int n = lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR);
  ana_rpc_client_ip(peer, n > 0 ? xff : NULL, conn->peer_ip, sizeof conn->peer_ip);
}

static int transaction_done(struct lws *wsi, struct rb_conn *conn) {
  bool close_after = conn->reply.close_after;
  int st = conn->reply.http_status;
  rb_access_log(wsi, conn, st, st >= 200 && st < 300);
  conn->method_name = NULL;
  if (conn->metric_route >= 0)
    rb_stats_request(conn->bridge->stats, (size_t)conn->metric_route, conn->reply.http_status,
                     (double)(rb_now_ns() - conn->started_ns) / 1e9);
  conn->metric_route = -1;
  rb_conn_detach(conn);
  rb_reply_clear(&conn->reply);
  rb_download_reset(conn);
  conn->streaming = conn->chunked = conn->chunk_written = false;
  conn->state = RB_CONN_IDLE;
  rb_budget_body_free(conn);
  conn->body_len = 0;
  conn->body_too_large = false;
  if (close_after)
    return -1;
  /* Over TLS, a pipelined request already decrypted would wait for ever:
   * the bridge reads it at the next turn of the loop (or, with too many
   * such connections at once, closes this one: RFC 9112 9.3.2, the client
   * retries). */
  int fd = lws_get_socket_fd(wsi);
  bool pipelined = rb_framer_tls_pipelined(fd);
  if (pipelined && !rb_kick_pipelined(conn->bridge, wsi))
    return -1;
  /* The next request (pipelined or not) may be read now. */
  rb_framer_answered(fd);
  if (lws_http_transaction_completed(wsi))
    return -1;
  lws_rx_flow_control(wsi, 1);
  return 0;
}

static int write_headers(struct lws *wsi, struct rb_conn *conn) {
  struct ana_restbridge *b = conn->bridge;
  struct rb_reply *r = &conn->reply;
  unsigned char buf[LWS_PRE + HEADER_SPACE];
  unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
  size_t len = r->body ? r->body->len : 0;
  const char *type = r->content_type ? r->content_type : "application/json";
  if (conn->dl_streaming) {
    len = (size_t)conn->dl_left;
    type = conn->dl_type;
  }
  int rc;
  if (conn->streaming) {
    /* All of it already queued: Content-Length; else chunked. */
    struct rb_call *c = conn->call;
    pthread_mutex_lock(&c->mu);
    bool whole = c->finished && !c->stream_failed;
    len = atomic_load(&c->q_bytes);
    pthread_mutex_unlock(&c->mu);
    conn->chunked = !whole;
    conn->chunk_written = false;
  }
  if (conn->streaming && conn->chunked) {
    static const char te[] = "chunked";
    rc = lws_add_http_header_status(wsi, (unsigned)r->http_status, &p, end) ||
         lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, (const unsigned char *)type,
                                      (int)strlen(type), &p, end) ||
         lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
                                      (const unsigned char *)te, (int)sizeof te - 1, &p, end);
  } else {
    rc =
        lws_add_http_common_headers(wsi, (unsigned)r->http_status, len ? type : NULL, len, &p, end);
  }
  if (!rc && conn->dl_status_headers)
    rc = rb_download_add_headers(wsi, conn, &p, end);
  if (!rc && r->static_file) {
    rc = add_header(wsi, "cache-control:", "no-cache", &p, end);
    if (!rc)
      rc = add_header(wsi, "x-content-type-options:", "nosniff", &p, end);
    if (!rc)
      rc = add_header(wsi, "content-security-policy:",
                      "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:", &p,
                      end);
  }
  if (!rc && r->gzip) {
    rc = add_header(wsi, "content-encoding:", "gzip", &p, end);
    if (!rc)
      rc = add_header(wsi, "vary:", "Accept-Encoding", &p, end);
  }
  if (!rc && conn->request_id[0])
    rc = add_header(wsi, "x-request-id:", conn->request_id, &p, end);
  if (!rc && r->www_auth)
    rc = add_header(wsi, "www-authenticate:", r->www_auth, &p, end);
  if (!rc && r->allow)
    rc = add_header(wsi, "allow:", r->allow, &p, end);
  if (!rc && rb_origin_allowed(b, conn->origin)) {
    rc = add_header(wsi, "access-control-allow-origin:", conn->origin, &p, end);
    if (!rc)
      rc = add_header(wsi, "vary:", "Origin", &p, end);
    if (!rc && r->preflight) {
      rc = add_header(wsi, "access-control-allow-methods:", r->allow ? r->allow : "GET", &p, end);
      if (!rc)
        rc = add_header(wsi, "access-control-allow-headers:",
                        r->allow_headers ? r->allow_headers : DEFAULT_ALLOW_HEADERS, &p, end);
      if (!rc)
        rc = add_header(wsi, "access-control-max-age:", "600", &p, end);
    } else if (!rc) {
      rc = add_header(wsi, "access-control-expose-headers:",
                      "X-Request-Id, WWW-Authenticate, Retry-After, "
                      "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset",
                      &p, end);
    }
  }
  if (!rc && r->retry_after_s > 0) {
    char secs[16];
    snprintf(secs, sizeof secs, "%d", r->retry_after_s);
    rc = add_header(wsi, "retry-after:", secs, &p, end);
  }
  if (!rc && r->rate_headers) {
    char v[24];
    snprintf(v, sizeof v, "%lld", r->rate_limit);
    rc = add_header(wsi, "ratelimit-limit:", v, &p, end);
    snprintf(v, sizeof v, "%lld", r->rate_remaining);
    rc = rc ? rc : add_header(wsi, "ratelimit-remaining:", v, &p, end);
    snprintf(v, sizeof v, "%lld", r->rate_reset_s);
    rc = rc ? rc : add_header(wsi, "ratelimit-reset:", v, &p, end);
  }
  if (!rc && r->close_after)
    rc = add_header(wsi, "connection:", "close", &p, end);
  if (rc || lws_finalize_write_http_header(wsi, start, &p, end))
    return -1;
  conn->headers_sent = true;
  return 0;
}

/* The next JSON chunk of a streamed answer, with its chunk-size line
 * written into the room before it; at the end the last chunk ("0"). */
static int write_stream(struct lws *wsi, struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  struct ana_restbridge *b = conn->bridge;
  if (!c)
    return -1;
  pthread_mutex_lock(&c->mu);
  struct rb_msg *m = c->q_head;
  if (m) {
    c->q_head = m->next;
    if (!c->q_head)
      c->q_tail = NULL;
    m->next = NULL;
    c->q_len--;
    rb_budget_stream_pop(b->budget, c, m->len);
  }
  bool finished = c->finished, failed = c->stream_failed || atomic_load(&c->evicted);
  bool last = !c->q_head && finished && !failed;
  pthread_mutex_unlock(&c->mu);
  if (!m) {
    if (!finished)
      return 0; /* the next chunk wakes us */
    if (failed)
      return -1;        /* cut: the client sees no last chunk (or too few bytes) */
    if (!conn->chunked) /* nothing came after the headers' length: an empty body */
      return transaction_done(wsi, conn);
    unsigned char end[LWS_PRE + 8];
    size_t n = 0;
    if (conn->chunk_written)
      end[LWS_PRE + n++] = '\r', end[LWS_PRE + n++] = '\n';
    memcpy(end + LWS_PRE + n, "0\r\n\r\n", 5);
    n += 5;
    if (lws_write(wsi, end + LWS_PRE, n, LWS_WRITE_HTTP_FINAL) != (int)n)
      return -1;
    return transaction_done(wsi, conn);
  }
  unsigned char *start = m->data;
  size_t n = m->len;
  conn->bytes_out += (long long)n;
  if (conn->chunked && n) {
    char line[CHUNK_LINE_MAX];
    int k = snprintf(line, sizeof line, "%s%zx\r\n", conn->chunk_written ? "\r\n" : "", n);
    start -= k;
    memcpy(start, line, (size_t)k);
    n += (size_t)k;
    conn->chunk_written = true;
  }
  bool fin = last && !conn->chunked;
  int rc = n ? lws_write(wsi, start, n, fin ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) : 0;
  rb_msg_free(m);
  if (rc != (int)n)
    return -1;
  if (fin)
    return transaction_done(wsi, conn);
  lws_callback_on_writable(wsi);
  return 0;
}

static int on_writeable(struct lws *wsi, struct rb_conn *conn) {
  if (conn->state != RB_CONN_WRITING)
    return 0;
  struct rb_msg *body = conn->reply.body;
  if (conn->dl_streaming && conn->headers_sent) {
    int rc = rb_download_write(wsi, conn);
    return rc == 1 ? transaction_done(wsi, conn) : rc;
  }
  if (conn->streaming && conn->headers_sent)
    return write_stream(wsi, conn);
  if (!conn->headers_sent) {
    if (write_headers(wsi, conn) < 0)
      return -1;
    if (conn->streaming) {
      lws_callback_on_writable(wsi);
      return 0;
    }
    if (conn->dl_streaming) {
      if (conn->dl_left == 0)
        return rb_download_write(wsi, conn) == 1 ? transaction_done(wsi, conn) : 0;
      lws_callback_on_writable(wsi);
      return 0;
    }
    if (body && body->len) {
      lws_callback_on_writable(wsi);
      return 0;
    }
    return transaction_done(wsi, conn);
  }
  size_t left = body->len - conn->body_off;
  size_t n = left > WRITE_CHUNK ? WRITE_CHUNK : left;
  bool last = n == left;
  if (lws_write(wsi, body->data + conn->body_off, n,
                last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
    return -1;
  conn->body_off += n;
  conn->bytes_out += (long long)n;
  if (!last) {
    lws_callback_on_writable(wsi);
    return 0;
  }
  return transaction_done(wsi, conn);
}

/* --- requests (lws thread) --- */

static void start_call(struct lws *wsi, struct rb_conn *conn) {
  struct ana_restbridge *b = conn->bridge;
  struct ana_error early;
  conn->state = RB_CONN_WAITING;
  conn->rate_timer = false; /* a body's rate window may still fire: ignored */
  /* lws would drop a reply that takes longer than its pending timeout. */
  lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
  struct rb_call *c = rb_request_start(b, wsi, conn, conn->route, conn->path, conn->body,
                                       conn->body_len, false, NULL, &early);
  if (!c) {
    rb_http_answer_error(wsi, conn, &early, true);
    rb_budget_body_free(conn);
    return;
  }
  rb_budget_body_free(conn); /* decoded (or handed to the decode pool, which took it) */
  int64_t left = c->base.deadline_mono_ms;
  if (left != INT64_MAX && conn->state == RB_CONN_WAITING) {
    left -= ana_call_now_mono_ms();
    lws_set_timer_usecs(wsi, left > 0 ? left * 1000 : 1);
  }
}

static void answer_health(struct lws *wsi, struct rb_conn *conn) {
  struct ana_restbridge *b = conn->bridge;
  struct ana_json_buf extra, out;
  bool serving = !atomic_load(&b->shutting_down);
  ana_json_buf_init(&extra, 0);
  ana_json_buf_init(&out, 0);
  if (b->opt.health) {
    bool s = true;
    if (b->opt.health(b->opt.health_ctx, &s, &extra) < 0)
      s = false;
    serving = serving && s;
  }
  int rc = rb_json_append(&out, serving ? "{\"status\":\"ok\"" : "{\"status\":\"unavailable\"",
                          serving ? 14 : 23);
  if (rc == 0 && extra.len)
    rc = rb_json_append(&out, extra.data + extra.reserve, extra.len);
  if (rc == 0)
    rc = rb_json_append(&out, "}", 1);
  if (rc == 0)
    answer_json(wsi, conn, serving ? 200 : 503, out.data + out.reserve, out.len);
  else
    answer_status(wsi, conn, ANA_STATUS_RESOURCE_EXHAUSTED, false, "%s", "out of memory");
  ana_json_buf_fini(&extra);
  ana_json_buf_fini(&out);
}

/* Whether Accept-Encoding takes gzip: a "gzip" or "*" element whose q is
 * not 0 (RFC 9110 12.5.3). */
static bool accepts_gzip(struct lws *wsi) {
  char v[256];
  if (lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_ACCEPT_ENCODING) <= 0)
    return false;
  char *save = NULL;
  for (char *el = strtok_r(v, ",", &save); el; el = strtok_r(NULL, ",", &save)) {
    el += strspn(el, " \t");
    size_t name_len = strcspn(el, " \t;");
    if (!((name_len == 4 && strncasecmp(el, "gzip", 4) == 0) || (name_len == 1 && *el == '*')))
      continue;
    const char *q = strstr(el + name_len, "q=");
    if (!q || strtod(q + 2, NULL) > 0)
      return true;
  }
  return false;
}

/* body gzip-compressed (zlib, a gzip wrapper), or NULL when out of memory. */
static struct rb_msg *gzip_msg(const char *body, size_t len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return NULL;
  struct rb_msg *m = NULL;
  size_t cap = deflateBound(&zs, (uLong)len);
  char *out = ana_malloc(cap);
  if (!out)
    goto out;
  zs.next_in = (Bytef *)body;
  zs.avail_in = (uInt)len;
  zs.next_out = (Bytef *)out;
  zs.avail_out = (uInt)cap;
  if (deflate(&zs, Z_FINISH) == Z_STREAM_END)
    m = rb_msg_new(out, zs.total_out);
out:
  deflateEnd(&zs);
  ana_free(out);
  return m;
}

/* GET /metrics: every registered collector, in the Prometheus text format;
 * gzip-compressed when Accept-Encoding asks for it (Prometheus does). */
static void answer_metrics(struct lws *wsi, struct rb_conn *conn) {
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_render(&w);
  struct rb_msg *gz = NULL;
  if (!w.failed && w.len && accepts_gzip(wsi) && !(gz = gzip_msg(w.data, w.len)))
    w.failed = true;
  if (w.failed) {
    ana_prom_writer_fini(&w);
    answer_status(wsi, conn, ANA_STATUS_RESOURCE_EXHAUSTED, false, "%s", "out of memory");
    return;
  }
  rb_reply_clear(&conn->reply);
  conn->reply.http_status = 200;
  conn->reply.body = gz ? gz : w.len ? rb_msg_new(w.data, w.len) : NULL;
  conn->reply.gzip = gz != NULL;
  conn->reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
  ana_prom_writer_fini(&w);
  answer(wsi, conn);
}

/* GET /openapi.json: the OpenAPI 3 document the generator made from the
 * contracts. */
static void answer_openapi(struct lws *wsi, struct rb_conn *conn) {
  answer_json(wsi, conn, 200, ana_openapi_json, ana_openapi_json_len);
}

/* The operational endpoints beside the routes (GET only); false when path
 * is not one of them. */
static bool answer_ops(struct lws *wsi, struct rb_conn *conn, const char *path, int meth) {
  void (*fn)(struct lws *, struct rb_conn *) = NULL;
  if (strcmp(path, "/health") == 0)
    fn = answer_health;
  else if (strcmp(path, "/metrics") == 0)
    fn = answer_metrics;
  else if (strcmp(path, "/openapi.json") == 0)
    fn = answer_openapi;
  else
    return false;
  conn->metric_route = -1; /* probes and scrapes would drown the API's figures */
  bool need_auth = fn == answer_health    ? conn->bridge->opt.health_require_auth
                   : fn == answer_metrics ? conn->bridge->opt.metrics_require_auth
                                          : false;
  struct ana_error st;
  if (meth == LWSHUMETH_GET && need_auth && rb_request_admit_plain(wsi, &st) < 0) {
    rb_http_answer_error(wsi, conn, &st, false);
  } else if (meth == LWSHUMETH_GET) {
    fn(wsi, conn);
  } else {
    answer_status(wsi, conn, ANA_STATUS_UNIMPLEMENTED, false, "method not allowed on %s", path);
    conn->reply.http_status = 405;
    conn->reply.allow = ana_strdup("GET, OPTIONS");
  }
  return true;
}

static void answer_preflight(struct lws *wsi, struct rb_conn *conn, const char *path) {
  struct ana_restbridge *b = conn->bridge;
  struct rb_match m;
  char allow[80];
  if (strcmp(path, "/health") == 0 || strcmp(path, "/metrics") == 0 ||
      strcmp(path, "/openapi.json") == 0) {
    snprintf(allow, sizeof allow, "GET, OPTIONS");
  } else {
    rb_route_match(path, "OPTIONS", false, NULL, &m);
    if (!m.path_known) {
      answer_status(wsi, conn, ANA_STATUS_NOT_FOUND, false, "no route for %s", path);
      return;
    }
    snprintf(allow, sizeof allow, "%s, OPTIONS", m.allow);
  }
  if (conn->origin[0] && !rb_origin_allowed(b, conn->origin)) {
    answer_status(wsi, conn, ANA_STATUS_PERMISSION_DENIED, false,
                  "origin %s is not allowed (CORS_ALLOWED_ORIGINS)", conn->origin);
    return;
  }
  rb_reply_clear(&conn->reply);
  conn->reply.http_status = 204;
  conn->reply.allow = ana_strdup(allow);
  conn->reply.preflight = true;
  char req_headers[512];
  int n = lws_hdr_copy(wsi, req_headers, sizeof req_headers, WSI_TOKEN_HTTP_AC_REQUEST_HEADERS);
  if (n > 0)
    conn->reply.allow_headers = ana_strdup(req_headers);
  answer(wsi, conn);
}

/* A printable, short X-Request-Id is echoed and passed on; otherwise one is made. */
static void take_request_id(struct lws *wsi, struct rb_conn *conn) {
  char id[sizeof conn->request_id];
  int n = lws_hdr_custom_copy(wsi, id, sizeof id, "x-request-id:", 13);
  bool ok = n > 0;
  for (int i = 0; ok && i < n; i++)
    ok = isgraph((unsigned char)id[i]) != 0;
  if (ok)
    memcpy(conn->request_id, id, (size_t)n + 1);
  else if (ana_uuid7_generate(conn->request_id) < 0)
    conn->request_id[0] = '\0';
}

/* The Content-Length of the request: one decimal value (a repeated header
 * arrives comma-joined, which fails here); -1 when invalid. */
static long long content_length(struct lws *wsi) {
  char v[32];
  char *e = NULL;
  if (lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 ||
      !isdigit((unsigned char)v[0]))
    return -1;
  long long cl = strtoll(v, &e, 10);
  return cl < 0 || !e || *e ? -1 : cl;
}

/* Transfer-Encoding names chunked and nothing else. */
static bool transfer_encoding_chunked(struct lws *wsi) {
  char v[64];
  if (lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_TRANSFER_ENCODING) <= 0)
    return false;
  return strcasecmp(v, "chunked") == 0;
}

/* The request's Content-Type is JSON: application/json, compared without
 * case, parameters (charset) ignored. A web page can send text/plain or a
 * form to any origin without a CORS preflight; JSON it cannot. */
static bool content_type_json(struct lws *wsi, char *got, size_t size) {
  static const char json[] = "application/json";
  got[0] = '\0';
  if (lws_hdr_copy(wsi, got, (int)size, WSI_TOKEN_HTTP_CONTENT_TYPE) <= 0) {
    got[0] = '\0';
    return false;
  }
  const char *v = got;
  while (*v == ' ' || *v == '\t')
    v++;
  size_t n = strlen(json);
  if (strncasecmp(v, json, n) != 0)
    return false;
  v += n;
  while (*v == ' ' || *v == '\t')
    v++;
  return *v == '\0' || *v == ';';
}

static void on_http(struct lws *wsi, struct rb_conn *conn, const char *path) {
  struct ana_restbridge *b = conn->bridge;
  char *uri = NULL;
  int uri_len = 0;
  int meth = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
  const char *method =
      meth >= 0 && meth < (int)(sizeof method_names / sizeof method_names[0]) && method_names[meth]
          ? method_names[meth]
          : "?";

  rb_conn_detach(conn);
  rb_reply_clear(&conn->reply);
  conn->state = RB_CONN_IDLE;
  conn->streaming = conn->chunked = conn->chunk_written = false;
  char version[16];
  conn->http11 = lws_hdr_copy(wsi, version, sizeof version, WSI_TOKEN_HTTP) >= 8 &&
                 version[5] == '1' && version[7] == '1';
  conn->body_len = 0;
  conn->body_too_large = false;
  conn->route = NULL;
  conn->started_ns = rb_now_ns();
  conn->metric_route = (long)ana_route_count;
  conn->method_name = method;
  conn->bytes_in = conn->bytes_out = 0;
  snprintf(conn->log_path, sizeof conn->log_path, "%s", path);
  take_request_id(wsi, conn);
  rb_access_take_peer(wsi, conn);
  conn->origin[0] = '\0';
  if (lws_hdr_copy(wsi, conn->origin, sizeof conn->origin, WSI_TOKEN_ORIGIN) < 0)
    conn->origin[0] = '\0';

  if (atomic_load(&b->shutting_down)) {
    answer_status(wsi, conn, ANA_STATUS_UNAVAILABLE, true, "%s", "the server is shutting down");
    return;
  }
  bool has_te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
  bool has_cl = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
  bool body_method = meth == LWSHUMETH_POST || meth == LWSHUMETH_PUT || meth == LWSHUMETH_PATCH;
  long long cl = 0;
  if (has_te && has_cl) {
    /* RFC 9112 6.3: a request smuggling vector; never guess the framing. */
    answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, true, "%s",
                  "Transfer-Encoding and Content-Length together");
    return;
  }
  if (has_cl && (cl = content_length(wsi)) < 0) {
    answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, true, "%s",
                  "invalid Content-Length (one decimal value)");
    return;
  }
  if (has_te && !transfer_encoding_chunked(wsi)) {
    answer_status(wsi, conn, ANA_STATUS_UNIMPLEMENTED, true, "%s",
                  "Transfer-Encoding other than chunked is not implemented");
    return;
  }
  if (has_te && body_method) {
    /* lws 4.1 does not decode chunked request bodies: read to the last
     * chunk (so the client is not cut off mid-send), then answer 411. */
    conn->state = RB_CONN_DISCARD_CHUNKED;
    memset(conn->chunk_tail, 0, sizeof conn->chunk_tail);
    return;
  }
  if (has_te) {
    answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, true, "%s",
                  "chunked request bodies are not supported; send Content-Length");
    conn->reply.http_status = 411;
    return;
  }
  if (!body_method && cl > 0) {
    answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, true, "a %s request must not have a body",
                  method);
    return;
  }
  if (strcmp(method, "?") == 0 || meth == LWSHUMETH_CONNECT) {
    answer_status(wsi, conn, ANA_STATUS_UNIMPLEMENTED, true, "method %s is not implemented",
                  meth == LWSHUMETH_CONNECT ? "CONNECT" : "(unknown)");
    return;
  }
  bool ops_path = strcmp(path, "/health") == 0 || strcmp(path, "/metrics") == 0;
  if (!ops_path && !rb_host_allowed(b, wsi)) {
    /* DNS rebinding: a page of another site reaching a loopback server. */
    answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, false, "%s",
                  "this Host is not served: authentication is not configured, so only "
                  "localhost, 127.0.0.1, [::1] and HTTP_ALLOWED_HOSTS are");
    conn->reply.http_status = 421;
    return;
  }
  if (meth == LWSHUMETH_OPTIONS) {
    answer_preflight(wsi, conn, path);
    return;
  }
  if (answer_ops(wsi, conn, path, meth))
    return;

  if (rb_static_answer(wsi, conn, path, meth == LWSHUMETH_GET)) {
    conn->metric_route = -1; /* dashboard files are not API requests */
    return;
  }

  struct rb_match m;
  rb_route_match(path, method, false, NULL, &m);
  if (!m.route) {
    if (m.other_kind) {
      answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, false,
                    "%s is a WebSocket endpoint: connect with a WebSocket upgrade", path);
    } else if (m.path_known) {
      answer_status(wsi, conn, ANA_STATUS_UNIMPLEMENTED, false,
                    "method %s is not allowed on this path", method);
      conn->reply.http_status = 405; /* RFC 9110 15.5.6, with Allow */
      conn->reply.allow = ana_strdup(m.allow);
    } else {
      answer_status(wsi, conn, ANA_STATUS_NOT_FOUND, false, "no route for %s", path);
    }
    return;
  }
  conn->route = m.route;
  conn->metric_route = (long)(m.route - ana_routes);
  rb_download_reset(conn);
  if (m.route->download)
    rb_download_read_headers(wsi, conn);
  ana_free(conn->path);
  conn->path = ana_strdup(path);
  if (!conn->path) {
    answer_status(wsi, conn, ANA_STATUS_RESOURCE_EXHAUSTED, true, "%s", "out of memory");
    return;
  }
  if (!body_method) {
    start_call(wsi, conn);
    return;
  }
  char type[128];
  if (m.route->body[0] && !content_type_json(wsi, type, sizeof type)) {
    /* Answered now; lws discards the body before the next request. */
    answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, cl > (long long)b->opt.max_body_bytes,
                  type[0] ? "Content-Type %s is not supported: send application/json"
                          : "%sContent-Type is missing: send application/json",
                  type);
    conn->reply.http_status = 415;
    return;
  }
  if (!has_cl) {
    answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, true, "%s",
                  "a request body needs a Content-Length");
    conn->reply.http_status = 411;
    return;
  }
  if ((unsigned long long)cl > b->opt.max_body_bytes) {
    /* Answered now; lws discards the body before the next request. */
    char limit[32];
    snprintf(limit, sizeof limit, "%zu", b->opt.max_body_bytes);
    answer_status(wsi, conn, ANA_STATUS_RESOURCE_EXHAUSTED,
                  cl > 16 * (long long)b->opt.max_body_bytes, "request body larger than %s bytes",
                  limit);
    conn->reply.http_status = 413;
    return;
  }
  if (cl == 0) {
    start_call(wsi, conn);
    return;
  }
  rb_budget_body_free(conn);
  if (!rb_budget_body_reserve(b->budget, (size_t)cl + 1)) {
    answer_status(wsi, conn, ANA_STATUS_UNAVAILABLE, true, "%s",
                  "too many request bodies in progress (HTTP_BODY_BUDGET_MB); retry later");
    conn->reply.retry_after_s = 1;
    return;
  }
  conn->body_reserved = (size_t)cl + 1;
  conn->body = ana_malloc((size_t)cl + 1);
  if (!conn->body) {
    rb_budget_body_free(conn);
    answer_status(wsi, conn, ANA_STATUS_RESOURCE_EXHAUSTED, true, "%s", "out of memory");
    return;
  }
  conn->body_cap = (size_t)cl + 1;
  conn->state = RB_CONN_READING_BODY;
  rb_budget_body_watch(wsi, conn);
}

/* Watches a chunked body go by for its last chunk ("0\r\n\r\n"), or for
 * more than the body limit, then answers 411 and hangs up. */
static void discard_chunked(struct lws *wsi, struct rb_conn *conn, const char *in, size_t len) {
  static const char last[] = "0\r\n\r\n";
  const size_t tl = sizeof conn->chunk_tail;
  conn->body_len += len;
  if (len >= tl) {
    memcpy(conn->chunk_tail, in + len - tl, tl);
  } else {
    memmove(conn->chunk_tail, conn->chunk_tail + len, tl - len);
    memcpy(conn->chunk_tail + tl - len, in, len);
  }
  if (memcmp(conn->chunk_tail, last, tl) != 0 && conn->body_len <= conn->bridge->opt.max_body_bytes)
    return;
  answer_status(wsi, conn, ANA_STATUS_INVALID_ARGUMENT, true, "%s",
                "chunked request bodies are not supported; send Content-Length");
  conn->reply.http_status = 411;
}

int rb_http_callback(struct lws *wsi, enum lws_callback_reasons reason, struct rb_conn *conn,
                     void *in, size_t len) {
  switch (reason) {
  case LWS_CALLBACK_HTTP: on_http(wsi, conn, in ? (const char *)in : "/"); return 0;

  case LWS_CALLBACK_HTTP_BODY:
    if (conn->state == RB_CONN_DISCARD_CHUNKED) {
      discard_chunked(wsi, conn, in, len);
      return 0;
    }
    if (conn->state != RB_CONN_READING_BODY)
      return 0;
    if (conn->body_len + len >= conn->body_cap) {
      conn->body_too_large = true;
      return 0;
    }
    memcpy(conn->body + conn->body_len, in, len);
    conn->body_len += len;
    return 0;

  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    if (conn->state != RB_CONN_READING_BODY)
      return 0;
    if (conn->body_too_large) {
      answer_status(wsi, conn, ANA_STATUS_RESOURCE_EXHAUSTED, true, "%s",
                    "request body longer than its Content-Length");
      conn->reply.http_status = 413;
      return 0;
    }
    conn->body[conn->body_len] = '\0';
    start_call(wsi, conn);
    return 0;

  case LWS_CALLBACK_HTTP_WRITEABLE: return on_writeable(wsi, conn);

  case LWS_CALLBACK_CLOSED_HTTP: rb_conn_detach(conn); return 0;

  default: return 0;
  }
}
