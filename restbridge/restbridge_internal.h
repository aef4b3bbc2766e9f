/* What the files of the bridge share: the bridge, its per-connection state
 * and its calls. Threads: the lws service thread owns every `struct lws`
 * and every connection; handlers may touch a call (send, finish) from any
 * thread, so what they hand over sits in the call's mutex-protected queue
 * and the lws thread is woken with lws_cancel_service(). */
#ifndef ANA_RESTBRIDGE_INTERNAL_H
#define ANA_RESTBRIDGE_INTERNAL_H

#include "ana_restbridge.h"

#include "ana_routes.h"
#include "ana_text.h"
#include "ana_call_transport.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RB_COMPONENT "restbridge"
#define RB_WS_PROTOCOL "restbridge.v1"
/* What libwebsockets 4.1 accepts of a Sec-WebSocket-Protocol list (it
 * copies it into 128 bytes with the NUL and drops the connection, unanswered,
 * when it is longer): the bridge has lws keep no more of each such header
 * (server.c) and reads the whole list from the framer (websocket.c). */
#define RB_WS_LWS_PROTOCOLS_MAX 126
#define RB_MAX_PATH_VARS 8
/* A unary answer's JSON goes out in chunks of about this many bytes once
 * it is longer (http.c). */
#define RB_REPLY_CHUNK (64 * 1024)
/* Bytes of file data a download call queues at most (download.c). */
#define RB_DOWNLOAD_QUEUE_MAX (256 * 1024)

/* One outbound buffer: LWS_PRE bytes of headroom, then len bytes. */
struct rb_msg {
  struct rb_msg *next;
  size_t len;
  unsigned char *data; /* points LWS_PRE bytes into the allocation */
};

/* A finished HTTP answer (status, JSON body, extra headers). */
struct rb_reply {
  int http_status;
  struct rb_msg *body;      /* owned; NULL = empty body */
  char *www_auth;           /* 401: WWW-Authenticate value (owned copy) */
  char *allow;              /* 405 on a known path: the Allow header (owned) */
  bool close_after;         /* Connection: close, then hang up */
  const char *content_type; /* static string; NULL = application/json */
  bool gzip;                /* the body is gzip-compressed: Content-Encoding, Vary */
  bool static_file;         /* dashboard file: caching and content-security headers */
  bool preflight;           /* CORS preflight: Access-Control-Allow-* headers */
  int retry_after_s;        /* > 0: a Retry-After header */
  bool rate_headers;        /* RateLimit-Limit, -Remaining, -Reset */
  long long rate_limit, rate_remaining, rate_reset_s;
  char *allow_headers; /* preflight: Access-Control-Allow-Headers (owned) */
};

struct rb_conn;
struct rb_decode_job;

/* A call carried by the bridge. `base` first: ana_call * casts to it.
 *
 * Ownership: a call is freed when its last reference goes (rb_call_unref).
 * Every holder owns exactly one reference, taken and dropped as follows:
 *   - the handler: from rb_call_create until the transport's finish ran
 *     (http_finish / ws_finish drop it last thing; any thread);
 *   - the connection: from rb_call_create (handed over by rb_conn_attach)
 *     until rb_conn_detach, which also clears `wsi` and `conn` (lws thread);
 *   - the dirty list: rb_call_wake takes one when it puts the call on the
 *     list (not already on it); the lws thread drops it in drain_dirty after
 *     handling the wake.
 * The lws thread touches a call only through conn->call (the connection's
 * reference) or while draining (the list's reference). `dirty_next` links
 * the bridge's dirty list and is rewritten by rb_call_wake on any thread
 * as soon as `dirty` is cleared, so the lws thread walks a list it took
 * through `wake_next`, which is its own. */
struct rb_call {
  struct ana_call base;
  struct ana_restbridge *bridge; /* holds a bridge reference */
  const struct ana_route *route;
  atomic_int refs; /* handler (until finish), connection, dirty list */
  bool websocket;

  pthread_mutex_t mu; /* guards everything below up to `wsi` */
  struct rb_msg *q_head, *q_tail;
  size_t q_len;
  bool finished;             /* transport finish ran */
  struct rb_reply reply;     /* HTTP: the answer, once finished */
  struct rb_msg *ws_last;    /* WebSocket: the error frame, once finished */
  int ws_close_code;         /* WebSocket: rb_ws_close_code_of the finish status, once finished */
  char ws_close_reason[124]; /* WebSocket: the error's message, cut to fit a close frame */
  int64_t full_since_ms;     /* WebSocket: queue full since (0 = not full) */
  bool dl_head;              /* download: the first FileChunk came (its headers below) */
  int64_t dl_total;          /* download: the file's size */
  char *dl_type, *dl_etag, *dl_filename; /* download: owned; NULL = not given */
  bool dl_failed;                        /* download: finished with an error */
  enum ana_status dl_code;               /* download: the finish status */
  bool streaming;             /* HTTP: the answer's JSON comes in chunks on q_head (reply holds
                                 its status and headers from the first chunk on) */
  bool stream_failed;         /* HTTP: the streamed JSON stopped before its end */
  bool dirty;                 /* on the bridge's dirty list (guarded by the bridge's mu) */
  struct rb_call *dirty_next; /* guarded by the bridge's mu */

  /* memory budget (budget.c) */
  atomic_size_t q_bytes;               /* bytes of the frames in q_head (changed under mu) */
  atomic_bool evicted;                 /* the queue budget took its queue: close with 1008 */
  struct rb_call *bud_prev, *bud_next; /* the budget's tracked calls (its mu) */
  bool bud_listed;                     /* lws thread */

  /* lws thread only */
  struct rb_decode_job *decode; /* its body is on the decode pool (decode_pool.c) */
  struct rb_call *wake_next;    /* the list drain_dirty took (owns its references) */
  struct lws *wsi;              /* NULL once the connection is gone */
  struct rb_conn *conn;         /* set while conn->call == this call */
};

enum rb_conn_state {
  RB_CONN_IDLE,
  RB_CONN_READING_BODY,
  RB_CONN_DISCARD_CHUNKED, /* reading a chunked body only to answer 411 */
  RB_CONN_WAITING,         /* call in flight */
  RB_CONN_WRITING,         /* reply in hand: headers, then body */
  RB_CONN_WS_OPEN,
  RB_CONN_WS_CLOSING,
};

/* Per-connection state (lws per-session user data, zeroed by lws). lws
 * frees it after LWS_CALLBACK_CLOSED(_HTTP) / HTTP_DROP_PROTOCOL, each of
 * which releases it (conn_release in server.c): by then the call must no
 * longer point here, which rb_conn_detach sees to. A connection holds at
 * most one call at a time: a keep-alive connection detaches the call of a
 * request (transaction_done, or the next request's headers) before it
 * starts the next. */
struct rb_conn {
  enum rb_conn_state state;
  struct ana_restbridge *bridge;
  struct rb_call *call; /* holds the connection's reference */
  const struct ana_route *route;
  struct rb_conn *prev, *next; /* bridge's list of live calls' connections */
  bool listed;

  /* request */
  char *path; /* owned copy of the request path */
  char *body;
  size_t body_len, body_cap;
  size_t body_reserved; /* bytes of the body budget held for body (budget.c) */
  size_t rate_mark;     /* body_len when the current rate window began */
  bool rate_timer;      /* the connection's timer is the body's rate window */
  bool body_too_large;
  char chunk_tail[5]; /* last bytes of a chunked body being discarded */
  char request_id[96];
  char origin[256];

  /* response */
  struct rb_reply reply;
  bool headers_sent;
  size_t body_off;
  bool http11;        /* the request is HTTP/1.1 (chunked answers allowed) */
  bool streaming;     /* the body comes from the call's queue of JSON chunks */
  bool chunked;       /* ... with Transfer-Encoding: chunked (else Content-Length) */
  bool chunk_written; /* a chunk went out (the next size line starts with CRLF) */

  /* metrics and the access log */
  int64_t started_ns;      /* when the request's headers were in */
  const char *method_name; /* "GET"... (static), NULL before a request */
  char log_path[128];      /* the request path, cut (for a request without a route) */
  long long bytes_in;      /* WebSocket: client message bytes */
  long long bytes_out;     /* body bytes written (HTTP), frame payload bytes (WebSocket) */
  long metric_route;       /* index into ana_routes, ana_route_count = no route, -1 = not counted */
  char peer_ip[64];        /* the client address (rb_access_take_peer); "" = the socket's */
  bool ws_counted;         /* counted in the open WebSockets gauge */

  /* download (download.c) */
  bool dl_range;                /* one Range was asked for (dl_offset, dl_length) */
  int64_t dl_offset, dl_length; /* as DownloadReportRequest's offset / length */
  char dl_if_none_match[192];
  bool dl_status_headers; /* the reply carries the download's headers */
  bool dl_streaming;      /* the body comes from the call's queue */
  int64_t dl_left;        /* body bytes still to write */
  size_t dl_msg_off;      /* bytes of the queue's head written */
  const char *dl_type;    /* Content-Type (the call's string) */
  char *dl_disposition;   /* owned */
  char dl_etag[200];
  char dl_content_range[96];

  /* websocket */
  int ws_close_code;
  char ws_close_reason[124]; /* fits a close frame (123 bytes) */
  int ws_logged_code;        /* the close code sent or echoed (access log); 0 = none yet */
  bool slow_timer_armed;
  struct ana_utf8_state ws_utf8; /* the client's text message so far */
  size_t ws_msg_len;             /* bytes of the client's message so far */
};

/* HTTPS connections whose next (pipelined) request is already decrypted
 * in OpenSSL's buffer when the previous answer is done: lws is never woken
 * for it by the socket, so the bridge services them itself (lws thread). */
#define RB_KICKS_MAX 64

struct rb_kick {
  int fd;
  struct lws *wsi;
  int tries;
};

struct ana_restbridge {
  struct ana_restbridge_options opt;
  struct rb_kick kicks[RB_KICKS_MAX];
  size_t n_kicks;
  lws_sorted_usec_list_t kick_sul;
  char *host, *cors;   /* owned copies of the option strings */
  char *web_root;      /* owned copy; NULL = the built-in dashboard */
  char *allowed_hosts; /* owned copy of HTTP_ALLOWED_HOSTS; NULL = none */
  struct lws_context *ctx;
  struct lws_vhost *vhost;
  struct lws_protocols *protocol; /* the vhost's copy; its name is rewritten per upgrade */
  int port;
  pthread_t thread;
  bool thread_started;
  bool thread_stuck; /* shutdown gave up joining it (ana_restbridge_stopped) */

  pthread_mutex_t mu; /* guards ctx_live, dirty, refs bookkeeping */
  bool ctx_live;      /* lws_cancel_service may be called */
  struct rb_call *dirty;
  atomic_int refs;     /* owner + one per live call */
  atomic_int inflight; /* calls not finished yet */

  atomic_bool shutting_down;
  atomic_bool stop;
  /* The service loop's last turn (monotonic ms; 0 before it started) and
   * the timer that wakes it when idle (server.c). */
  _Atomic int64_t last_loop_ms;
  lws_sorted_usec_list_t heartbeat_sul;
  bool shutdown_handled;       /* lws thread: WebSockets were told to close */
  atomic_bool cancel_inflight; /* grace is over: answer what is left with 503 */

  struct rb_stats *stats;        /* metrics (stats.c); NULL when out of memory */
  struct rb_budget *budget;      /* memory budgets (budget.c); NULL when out of memory */
  struct rb_decode_pool *decode; /* large bodies' decoding (decode_pool.c); NULL = inline */

  /* lws thread only */
  struct rb_conn *conns;   /* connections with a call */
  char ws_name[80];        /* current subprotocol name of the WS protocol */
  unsigned char *ws_batch; /* frames written together are assembled here (websocket.c) */
  size_t ws_batch_cap;

  /* TLS (HTTP_TLS_*): owned copies of the paths; NULL cert = plaintext */
  char *tls_cert, *tls_key, *tls_ca;
  void *ssl_ctx;          /* the vhost's SSL_CTX (lws owns it); lws thread */
  atomic_bool tls_reload; /* a reload waits for the lws thread */
  char tls_serial[64];    /* the certificate the reload brings (for its log line) */
};

/* --- bridge (server.c) --- */
void rb_bridge_ref(struct ana_restbridge *b);
void rb_bridge_unref(struct ana_restbridge *b);
/* Puts the call on the dirty list (taking the list's reference) and wakes
 * the lws thread unless a wake is already pending; any thread. Caller holds
 * a reference of its own; does not take the call's mu. */
void rb_call_wake(struct rb_call *c);

/* --- calls (call.c) --- */
struct rb_call *rb_call_create(struct ana_restbridge *b, const struct ana_route *route,
                               struct lws *wsi, struct rb_conn *conn, bool websocket);
void rb_call_unref(struct rb_call *c);
/* Ends a transport's finish, whose outcome the caller stored under c->mu,
 * which it still holds: marks c finished, releases mu, gives back the
 * call's in-flight slot, wakes the lws thread and drops the handler's
 * reference. Any thread. */
void rb_call_settle(struct rb_call *c);
/* Frees c, whose last reference is gone (rb_call_unref, or the decode pool
 * that rb_call_unref handed a large call to). */
void rb_call_free(struct rb_call *c);

/* True on the lws (service) thread only. */
extern _Thread_local bool rb_lws_thread;
void rb_msg_free(struct rb_msg *m);
/* A buffer of len bytes with LWS_PRE headroom, copied from data. */
struct rb_msg *rb_msg_new(const void *data, size_t len);
/* The same, for the caller to fill (data[len] is already the NUL). */
struct rb_msg *rb_msg_alloc(size_t len);
void rb_reply_clear(struct rb_reply *r);
/* Connection lost or done: drop the connection's reference; cancels the call
 * when unanswered. lws thread. */
void rb_conn_detach(struct rb_conn *conn);
/* Gives the connection's reference of c to conn and lists conn as having a
 * call (for shutdown). lws thread. */
void rb_conn_attach(struct rb_conn *conn, struct rb_call *c);

/* --- routing (route.c) --- */
struct rb_path_var {
  const char *field; /* field path from the pattern ("metric_id") */
  char *value;       /* decoded value (owned by the caller's arena) */
};
struct rb_match {
  const struct ana_route *route; /* NULL: none for this method */
  bool path_known;               /* some route has this path (other method) */
  bool other_kind;               /* this method and path exist, but as a WebSocket
                                    (or as plain HTTP when websocket was asked) */
  char allow[64];                /* methods of this path: "GET, PUT, DELETE" */
  size_t n_vars;
  struct rb_path_var vars[RB_MAX_PATH_VARS];
};
/* Matches path (without query) and method ("GET"...). Variable values are
 * copied into arena. websocket: only routes served as WebSockets. */
int rb_route_match(const char *path, const char *method, bool websocket, struct ana_arena *arena,
                   struct rb_match *m);

/* --- errors (error.c) --- */
int rb_http_status_of(enum ana_status code);
/* The JSON error body {"code","message","details","requestId"} (details
 * carry the call's violations as google.rpc.BadRequest when call is not
 * NULL; requestId is the call's x-request-id, or without a call this
 * thread's ana_log_request_id, and is left out when there is none). */
struct rb_msg *rb_error_json(const struct ana_call *call, const struct ana_error *status,
                             const char *prefix, const char *suffix);
/* Fills reply for an error status (status, body, WWW-Authenticate). */
int rb_reply_error(struct rb_reply *r, const struct ana_call *call, const struct ana_error *status);
/* Adds the rate-limit headers of the call's charge, if it was charged
 * (Retry-After too when it was refused). */
void rb_reply_rate(struct rb_reply *r, const struct ana_call *call);

/* --- request assembly (request.c) --- */
/* One query parameter, percent-decoded ("?k=v" gives {"k","v"}). */
struct rb_query_param {
  const char *key;
  const char *value;
};
struct rb_build_options {
  bool ignore_unknown_fields;           /* false: 400 naming the JSON field */
  bool ignore_unknown_query_params;     /* false: 400 naming the parameter */
  struct rb_decode_pool *parallel_pool; /* decodes a large body in chunks; NULL: one thread */
};
/* Builds the request message of route r for call, grpc-gateway style: the
 * JSON body (body "*": the whole request; body "field": that field), then
 * the query parameters for what the body and path do not bind, then the
 * path variables of m. Needs no connection (the fuzz target drives it).
 * Returns 0 with *out set (in the call's arena), ANA_ERR_NOMEM, or another
 * negative error with st filled and the field violations recorded on call. */
int rb_request_build(struct ana_call *call, const struct ana_route *r, const struct rb_match *m,
                     const struct rb_query_param *query, size_t n_query, const char *body,
                     size_t body_len, const struct rb_build_options *bo, ProtobufCMessage **out,
                     struct ana_error *st);

/* Builds and starts the call for a matched route: metadata, deadline,
 * admission, request message (body, query, path variables), on_request.
 * On failure before a call exists, fills *early with the error to answer.
 * Returns the call (also stored in conn->call), or NULL. lws thread. */
struct rb_call *rb_request_start(struct ana_restbridge *b, struct lws *wsi, struct rb_conn *conn,
                                 const struct ana_route *route, const char *path, const char *body,
                                 size_t body_len, bool websocket, const char *bearer_token,
                                 struct ana_error *early);

/* Admission of a request that is not a call (GET /health, /metrics when
 * they require credentials): its Authorization header and socket peer.
 * Returns 0, or a negative error with st filled. lws thread. */
int rb_request_admit_plain(struct lws *wsi, struct ana_error *st);

/* The socket peer of wsi as gRPC spells peers ("ipv4:1.2.3.4:5678",
 * "ipv6:[::1]:5678"; an IPv4 client of a dual-stack socket as IPv4) into
 * out, and its address alone into ip; both "" when unknown. */
void rb_request_peer(struct lws *wsi, char *out, size_t size, char *ip, size_t ip_size);

/* --- HTTP (http.c) --- */
extern const struct ana_call_transport rb_http_transport;
int rb_http_callback(struct lws *wsi, enum lws_callback_reasons reason, struct rb_conn *conn,
                     void *in, size_t len);
/* In protected mode, whether the request's Host may be served: localhost,
 * 127.0.0.1, [::1] (any port) or one of HTTP_ALLOWED_HOSTS. Always true
 * outside protected mode. */
bool rb_host_allowed(const struct ana_restbridge *b, struct lws *wsi);
/* Whether origin is listed in CORS_ALLOWED_ORIGINS (or the list is "*"). */
bool rb_origin_allowed(const struct ana_restbridge *b, const char *origin);
/* Answers on this connection now with an error (lws thread). */
void rb_http_answer_error(struct lws *wsi, struct rb_conn *conn, const struct ana_error *st,
                          bool close_after);
/* The call of this connection has something (lws thread, after a wake). */
void rb_http_on_wake(struct rb_conn *conn);
void rb_http_on_deadline(struct rb_conn *conn);
/* The connection's timer: the call's deadline, or input back on after the
 * framer held back a pipelined request (lws thread). */
/* Queues wsi (an HTTPS connection with a pipelined request already
 * decrypted) to be read at the next turn of the lws loop; false when the
 * queue is full (the caller closes the connection instead). lws thread. */
bool rb_kick_pipelined(struct ana_restbridge *b, struct lws *wsi);

void rb_http_on_timer(struct rb_conn *conn, struct lws *wsi);

/* Writes the access-log line of the connection's request (HTTP: when
 * answered, status its HTTP status; WebSocket: when closed, status its close
 * code), if ACCESS_LOG_SAMPLE picks it (lws thread). */
void rb_access_log(struct lws *wsi, struct rb_conn *conn, int status, bool success);
/* Notes the client address of the request whose headers are in (the access
 * log's peer): the socket peer, or behind TRUSTED_PROXIES the X-Forwarded-For
 * hop they did not write, as the call runtime judges a gRPC call's. */
void rb_access_take_peer(struct lws *wsi, struct rb_conn *conn);

/* --- downloads (download.c) --- */
extern const struct ana_call_transport rb_download_transport;
/* Reads Range and If-None-Match of a download request into conn. */
void rb_download_read_headers(struct lws *wsi, struct rb_conn *conn);
/* Sets the request's offset, length and if_none_match from them. */
int rb_download_fill_request(struct rb_call *c, const struct rb_conn *conn, ProtobufCMessage *req);
/* The call woke a waiting download: true when conn->reply is ready. */
bool rb_download_on_wake(struct rb_conn *conn);
/* Accept-Ranges, ETag, Content-Range, Content-Disposition. */
int rb_download_add_headers(struct lws *wsi, struct rb_conn *conn, unsigned char **p,
                            unsigned char *end);
/* Writes the next piece: 0 wait, 1 all done, -1 hang up. */
int rb_download_write(struct lws *wsi, struct rb_conn *conn);
/* Frees and clears conn's download answer state. */
void rb_download_reset(struct rb_conn *conn);

/* --- WebSocket (websocket.c) --- */
/* Answers with an HTTP error written raw (before lws knows the request's
 * HTTP version, or on a connection lws turned raw) and hangs up: returns -1
 * for the callback to return. */
int rb_refuse_raw(struct lws *wsi, enum ana_status code, const char *message);
extern const struct ana_call_transport rb_ws_transport;
int rb_ws_confirm_upgrade(struct ana_restbridge *b, struct lws *wsi);
int rb_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, struct rb_conn *conn,
                   void *in, size_t len);
void rb_ws_on_wake(struct rb_conn *conn);
void rb_ws_close(struct rb_conn *conn, int code, const char *reason);
/* A stream that ended with an error closes with 4000 + its gRPC status
 * (NOT_FOUND 4005, RESOURCE_EXHAUSTED 4008, UNAUTHENTICATED 4016), except a
 * slow consumer's (ANA_SLOW_CONSUMER_MESSAGE) with 1008 and UNAVAILABLE while
 * the bridge shuts down with 1001; OK closes with 1000. */
#define RB_WS_CLOSE_STATUS_BASE 4000
int rb_ws_close_code_of(const struct ana_error *status, bool shutting_down);

/* --- the live dashboard (static.c) --- */
/* Answers GET / and /dashboard[/...] with the dashboard's files (from
 * opt.web_root, else the copy built in). Returns false when path is not one
 * of them (the caller goes on routing). lws thread. */
bool rb_static_answer(struct lws *wsi, struct rb_conn *conn, const char *path, bool is_get);
/* Starts writing conn->reply (http.c). */
void rb_http_answer(struct lws *wsi, struct rb_conn *conn);

/* --- metrics (stats.c) --- */
/* Allocates the bridge's metrics and registers them with ana_prom; NULL
 * when out of memory (the bridge then runs without them). */
struct rb_stats *rb_stats_create(void);
/* Unregisters and frees. NULL is fine. */
void rb_stats_destroy(struct rb_stats *s);
/* One HTTP request answered (lws thread): route index (ana_route_count =
 * no route), HTTP status, seconds since its headers arrived. */
void rb_stats_request(struct rb_stats *s, size_t route, int http_status, double seconds);
/* A WebSocket opened (+1) or closed (-1); n message frames written. */
void rb_stats_websocket(struct rb_stats *s, int delta);
void rb_stats_ws_messages(struct rb_stats *s, size_t n);
int64_t rb_now_ns(void);

/* --- JSON helpers (error.c) --- */
/* Appends s as a JSON string (quoted, escaped). */
int rb_json_append_string(struct ana_json_buf *b, const char *s);
int rb_json_append(struct ana_json_buf *b, const char *s, size_t n);
/* The payload of b as an outbound buffer (copied). */
struct rb_msg *rb_msg_from_buf(const struct ana_json_buf *b);

#endif
