/* The bridge's server loop: the libwebsockets context and its service
 * thread, the one protocol callback that dispatches to HTTP and WebSocket,
 * the wake-up path from handler threads (dirty list + lws_cancel_service),
 * and shutdown. */
#include "restbridge_internal.h"

#include "budget.h"
#include "decode_pool.h"
#include "framing.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_listen.h"
#include "ana_log.h"
#include "ana_tls_files.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* Pipelined HTTPS requests (rb_kick_pipelined): how soon, and how many
 * times, the bridge reads a connection's next request from OpenSSL. */
#define KICK_US 1000
#define KICK_TRIES 50
#define DEFAULT_MAX_BODY (4u << 20)
#define DEFAULT_MAX_HEADER (16u << 10)
#define DEFAULT_STREAM_BUFFER 1024
#define DEFAULT_SLOW_CONSUMER_MS 10000
#define DEFAULT_BUDGET (128u << 20)
#define DEFAULT_BODY_MIN_RATE 1024
#define DEFAULT_RATE_WINDOW_MS 10000
#define DEFAULT_DECODE_THREADS 2

/* WebSocket keepalive: ping after 30 s without traffic, hang up after 75 s. */
static const lws_retry_bo_t idle_policy = {
    .secs_since_valid_ping = 30,
    .secs_since_valid_hangup = 75,
};

void rb_bridge_ref(struct ana_restbridge *b) {
  atomic_fetch_add(&b->refs, 1);
}

void rb_bridge_unref(struct ana_restbridge *b) {
  if (atomic_fetch_sub(&b->refs, 1) != 1)
    return;
  pthread_mutex_destroy(&b->mu);
  rb_stats_destroy(b->stats);
  rb_budget_destroy(b->budget);
  ana_free(b->ws_batch);
  ana_free(b->host);
  ana_free(b->cors);
  ana_free(b->allowed_hosts);
  ana_free(b->web_root);
  ana_free(b->tls_cert);
  ana_free(b->tls_key);
  ana_free(b->tls_ca);
  ana_free(b);
}

void rb_call_wake(struct rb_call *c) {
  struct ana_restbridge *b = c->bridge;
  pthread_mutex_lock(&b->mu);
  if (b->ctx_live && !c->dirty) {
    /* A non-empty list has a wake pending whose drain has not taken the
     * list yet (it takes it under mu), so only the first call needs one:
     * at 100 subscribers x 1,000 events/s that is most of the syscalls. */
    bool wake_pending = b->dirty != NULL;
    c->dirty = true;
    atomic_fetch_add(&c->refs, 1); /* the list's reference */
    c->dirty_next = b->dirty;
    b->dirty = c;
    if (!wake_pending)
      lws_cancel_service(b->ctx); /* the one lws call allowed off its thread */
  }
  pthread_mutex_unlock(&b->mu);
}

/* Takes the whole dirty list, relinked through wake_next. Once `dirty` is
 * cleared, rb_call_wake may put a call back on the bridge's list at once,
 * rewriting its dirty_next (and taking another reference): walking
 * dirty_next after the unlock would then jump into the new list, skip the
 * rest of this one and drop references it does not own. */
static struct rb_call *take_dirty(struct ana_restbridge *b) {
  pthread_mutex_lock(&b->mu);
  struct rb_call *list = b->dirty;
  b->dirty = NULL;
  for (struct rb_call *c = list; c; c = c->dirty_next) {
    c->dirty = false;
    c->wake_next = c->dirty_next;
  }
  pthread_mutex_unlock(&b->mu);
  return list;
}

/* Handles the wakes of the calls on the dirty list; each entry comes with
 * the list's reference, dropped here. lws thread. */
static void drain_dirty(struct ana_restbridge *b) {
  struct rb_call *c = take_dirty(b);
  while (c) {
    struct rb_call *next = c->wake_next;
    c->wake_next = NULL;
    rb_decode_pool_dispatch(c); /* a body decoded off this thread: start its call */
    if (c->conn) {              /* still that connection's call */
      if (c->websocket)
        rb_ws_on_wake(c->conn);
      else
        rb_http_on_wake(c->conn);
    }
    rb_call_unref(c);
    c = next;
  }
}

/* Shutdown steps that must run on the lws thread. */
static void handle_shutdown(struct ana_restbridge *b) {
  if (!atomic_load(&b->shutting_down))
    return;
  bool cancel = atomic_load(&b->cancel_inflight);
  if (b->shutdown_handled && !cancel)
    return;
  b->shutdown_handled = true;
  struct rb_conn *next;
  for (struct rb_conn *conn = b->conns; conn; conn = next) {
    next = conn->next;
    if (conn->call && conn->call->websocket) {
      if (conn->state == RB_CONN_WS_OPEN)
        rb_ws_close(conn, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
    } else if (cancel && conn->call && conn->state == RB_CONN_WAITING) {
      struct ana_error st;
      ana_error_set(&st, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
      rb_http_answer_error(conn->call->wsi, conn, &st, true);
    }
  }
}

/* ------------------------------------------------------------------ */
/* TLS                                                                  */

/* The client CA of mutual TLS, read again into a new store (the files
 * were checked by the caller of the reload). lws thread. */
static int reload_client_ca(struct ana_restbridge *b) {
  X509_STORE *store = X509_STORE_new();
  if (!store || X509_STORE_load_file(store, b->tls_ca) != 1) {
    X509_STORE_free(store);
    return -1;
  }
  SSL_CTX_set_cert_store(b->ssl_ctx, store); /* frees the old one */
  STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(b->tls_ca);
  if (names)
    SSL_CTX_set_client_CA_list(b->ssl_ctx, names);
  return 0;
}

/* A reload asked for by ana_restbridge_reload_tls: lws loads the files
 * into the vhost's SSL_CTX; handshakes from now on use them. lws thread. */
static void kick_tick(lws_sorted_usec_list_t *sul);

bool rb_kick_pipelined(struct ana_restbridge *b, struct lws *wsi) {
  if (b->n_kicks == RB_KICKS_MAX)
    return false;
  b->kicks[b->n_kicks].fd = lws_get_socket_fd(wsi);
  b->kicks[b->n_kicks].wsi = wsi;
  b->kicks[b->n_kicks].tries = 0;
  b->n_kicks++;
  /* At a later turn of the loop: lws finishes the answered transaction
   * after the callback that ended it returns. */
  lws_sul_schedule(b->ctx, 0, &b->kick_sul, kick_tick, KICK_US);
  return true;
}

/* Services the queued connections' sockets as readable: lws reads their
 * pipelined request from OpenSSL's buffer (SSL_read, framing.c). A
 * connection gone meanwhile (its descriptor no longer registered to it) or
 * with nothing left to read is dropped; one whose request was not read yet
 * is tried again at the next tick, up to KICK_TRIES times (then the client's
 * timeout or the idle timeout ends it). */
static void kick_tick(lws_sorted_usec_list_t *sul) {
  struct ana_restbridge *b = lws_container_of(sul, struct ana_restbridge, kick_sul);
  struct rb_kick now[RB_KICKS_MAX];
  size_t n = b->n_kicks;
  memcpy(now, b->kicks, n * sizeof now[0]);
  b->n_kicks = 0; /* reads below may queue their connections again */
  for (size_t i = 0; i < n; i++) {
    int fd = now[i].fd;
    if (rb_framer_wsi(fd) != now[i].wsi || !rb_framer_tls_pipelined(fd))
      continue;
    unsigned long before = rb_framer_requests(fd);
    struct lws_pollfd pfd = {.fd = fd, .events = LWS_POLLIN, .revents = LWS_POLLIN};
    lws_service_fd(b->ctx, &pfd);
    if (rb_framer_wsi(fd) == now[i].wsi && rb_framer_requests(fd) == before &&
        ++now[i].tries < KICK_TRIES && b->n_kicks < RB_KICKS_MAX)
      b->kicks[b->n_kicks++] = now[i];
  }
  if (b->n_kicks)
    lws_sul_schedule(b->ctx, 0, &b->kick_sul, kick_tick, KICK_US);
}

static void handle_tls_reload(struct ana_restbridge *b) {
  if (!atomic_exchange(&b->tls_reload, false) || !b->tls_cert)
    return;
  char serial[64];
  pthread_mutex_lock(&b->mu);
  memcpy(serial, b->tls_serial, sizeof serial);
  pthread_mutex_unlock(&b->mu);
  lws_tls_cert_updated(b->ctx, b->tls_cert, b->tls_key, NULL, 0, NULL, 0);
  if (b->tls_ca && b->ssl_ctx && reload_client_ca(b) < 0) {
    ERR_clear_error();
    ANA_ERROR(RB_COMPONENT, "HTTP_TLS_CLIENT_CA_FILE: cannot load %s; the previous CA stays",
              b->tls_ca);
  }
  ana_log_fields(ANA_LOG_INFO, RB_COMPONENT, "HTTP TLS certificate reloaded", "certificate_serial",
                 serial, NULL);
}

int ana_restbridge_reload_tls(struct ana_restbridge *b, struct ana_error *err) {
  if (!b || !b->tls_cert)
    return 0;
  struct ana_tls_paths paths = {
      "HTTP_TLS_CERT_FILE", "HTTP_TLS_KEY_FILE", "HTTP_TLS_CLIENT_CA_FILE",
      b->tls_cert,          b->tls_key,          b->tls_ca};
  struct ana_tls_files files;
  int rc = ana_tls_files_load(&paths, &files, err);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&b->mu);
  memcpy(b->tls_serial, files.serial, sizeof b->tls_serial);
  atomic_store(&b->tls_reload, true);
  if (b->ctx_live)
    lws_cancel_service(b->ctx);
  pthread_mutex_unlock(&b->mu);
  ana_tls_files_fini(&files);
  return 0;
}

/* Frees what a connection holds; safe to repeat (lws reports the end of a
 * connection through several callbacks, not all of them every time). */
static void conn_release(struct rb_conn *conn) {
  rb_conn_detach(conn);
  rb_reply_clear(&conn->reply);
  rb_download_reset(conn);
  if (conn->bridge)
    rb_budget_body_free(conn);
  ana_free(conn->path);
  conn->path = NULL;
  conn->body_len = 0;
}

static int dispatch(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  struct ana_restbridge *b = lws_context_user(lws_get_context(wsi));
  /* TLS callbacks first: their user pointer is no connection's. */
  switch (reason) {
  case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
    b->ssl_ctx = user; /* the vhost's SSL_CTX, for reloading the client CA */
    return 0;
  case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
    /* len is OpenSSL's verdict on the client's chain; lws takes 0 as
     * accept, so a bad chain must be refused here. */
    return len ? 0 : 1;
  case LWS_CALLBACK_OPENSSL_CONTEXT_REQUIRES_PRIVATE_KEY:
  case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS:
  case LWS_CALLBACK_SSL_INFO: return 0;
  default: break;
  }
  struct rb_conn *conn = user;
  if (conn && !conn->bridge)
    conn->bridge = b;

  switch (reason) {
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
    drain_dirty(b);
    handle_shutdown(b);
    handle_tls_reload(b);
    return 0;

  case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
    /* lws reads a connection one request at a time (over TLS, from the
     * plaintext of SSL_read). */
    rb_framer_register(lws_get_socket_fd(wsi), wsi, b->tls_cert != NULL);
    return 0;

  case LWS_CALLBACK_RAW_ADOPT:
    /* lws turns a CONNECT request into a raw connection: refuse it. */
    rb_framer_unregister(lws_get_socket_fd(wsi));
    return rb_refuse_raw(wsi, ANA_STATUS_UNIMPLEMENTED, "method CONNECT is not implemented");

  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: return rb_ws_confirm_upgrade(b, wsi);

  case LWS_CALLBACK_ESTABLISHED:
  case LWS_CALLBACK_RECEIVE:
  case LWS_CALLBACK_SERVER_WRITEABLE:
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: return rb_ws_callback(wsi, reason, conn, in, len);

  case LWS_CALLBACK_CLOSED:
    rb_framer_unregister(lws_get_socket_fd(wsi));
    if (conn) {
      rb_ws_callback(wsi, reason, conn, in, len);
      conn_release(conn);
    }
    return 0;

  case LWS_CALLBACK_TIMER:
    if (!conn)
      return 0;
    if (conn->state == RB_CONN_WS_OPEN || conn->state == RB_CONN_WS_CLOSING)
      return rb_ws_callback(wsi, reason, conn, in, len);
    rb_http_on_timer(conn, wsi);
    return 0;

  case LWS_CALLBACK_HTTP:
  case LWS_CALLBACK_HTTP_BODY:
  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
  case LWS_CALLBACK_HTTP_WRITEABLE:
    if (!conn)
      return -1;
    return rb_http_callback(wsi, reason, conn, in, len);

  case LWS_CALLBACK_CLOSED_HTTP:
  case LWS_CALLBACK_WSI_DESTROY:
    rb_framer_unregister(lws_get_socket_fd(wsi));
    /* fallthrough */
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    if (conn)
      conn_release(conn);
    return 0;

  default: break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* Every line logged while a connection's callback runs carries its request id. */
static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  struct rb_conn *conn = user;
  ana_log_set_request_id(conn ? conn->request_id : NULL);
  int rc = dispatch(wsi, reason, user, in, len);
  ana_log_set_request_id(NULL);
  return rc;
}

static void lws_log_emit(int level, const char *line) {
  char msg[512];
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    n--;
  snprintf(msg, sizeof msg, "%.*s", (int)n, line);
  if (strstr(msg, "exceeds limit"))
    ANA_DEBUG(RB_COMPONENT, "lws: %s", msg); /* a long Sec-WebSocket-Protocol, cut on purpose */
  else if (level & LLL_ERR)
    ANA_ERROR(RB_COMPONENT, "lws: %s", msg);
  else
    ANA_WARN(RB_COMPONENT, "lws: %s", msg);
}

/* Wakes an idle service loop once a second, so its heartbeat goes on. */
#define HEARTBEAT_US LWS_US_PER_SEC

/* The service thread's name (at most 15 characters). */
#define RB_THREAD_NAME "ana-http"

static void heartbeat_tick(lws_sorted_usec_list_t *sul) {
  struct ana_restbridge *b = lws_container_of(sul, struct ana_restbridge, heartbeat_sul);
  lws_sul_schedule(b->ctx, 0, &b->heartbeat_sul, heartbeat_tick, HEARTBEAT_US);
}

_Thread_local bool rb_lws_thread;

static void *service_thread(void *arg) {
  struct ana_restbridge *b = arg;
  rb_lws_thread = true;
  /* Named for operators (top -H, /proc/<pid>/task/<tid>/comm). */
  pthread_setname_np(pthread_self(), RB_THREAD_NAME);
  atomic_store(&b->last_loop_ms, ana_call_now_mono_ms());
  lws_sul_schedule(b->ctx, 0, &b->heartbeat_sul, heartbeat_tick, HEARTBEAT_US);
  while (!atomic_load(&b->stop)) {
    if (lws_service(b->ctx, 0) < 0)
      break;
    atomic_store(&b->last_loop_ms, ana_call_now_mono_ms());
  }
  return NULL;
}

int64_t ana_restbridge_last_loop_ms(const struct ana_restbridge *b) {
  return atomic_load(&((struct ana_restbridge *)b)->last_loop_ms);
}

struct ana_restbridge *ana_restbridge_create(const struct ana_restbridge_options *o,
                                             struct ana_error *err) {
  struct ana_restbridge *b = ana_calloc(1, sizeof *b);
  if (!b) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  b->opt = *o;
  atomic_init(&b->refs, 1);
  atomic_init(&b->inflight, 0);
  atomic_init(&b->shutting_down, false);
  atomic_init(&b->stop, false);
  atomic_init(&b->cancel_inflight, false);
  pthread_mutex_init(&b->mu, NULL);
  if (!b->opt.max_body_bytes)
    b->opt.max_body_bytes = DEFAULT_MAX_BODY;
  if (!b->opt.max_header_bytes)
    b->opt.max_header_bytes = DEFAULT_MAX_HEADER;
  if (b->opt.max_header_bytes > 65535)
    b->opt.max_header_bytes = 65535; /* lws keeps it in an unsigned short */
  if (!b->opt.stream_buffer_size)
    b->opt.stream_buffer_size = DEFAULT_STREAM_BUFFER;
  if (b->opt.slow_consumer_ms <= 0)
    b->opt.slow_consumer_ms = DEFAULT_SLOW_CONSUMER_MS;
  b->host = o->host && o->host[0] ? ana_strdup(o->host) : NULL;
  b->cors = o->cors_allowed_origins && o->cors_allowed_origins[0]
                ? ana_strdup(o->cors_allowed_origins)
                : NULL;
  b->opt.host = b->host;
  b->opt.cors_allowed_origins = b->cors;
  b->web_root = o->web_root && o->web_root[0] ? ana_strdup(o->web_root) : NULL;
  b->opt.web_root = b->web_root;
  b->allowed_hosts = o->allowed_hosts && o->allowed_hosts[0] ? ana_strdup(o->allowed_hosts) : NULL;
  b->opt.allowed_hosts = b->allowed_hosts;
  atomic_init(&b->tls_reload, false);
  struct ana_tls_paths tls_paths = {"HTTP_TLS_CERT_FILE",      "HTTP_TLS_KEY_FILE",
                                    "HTTP_TLS_CLIENT_CA_FILE", o->tls_cert_file,
                                    o->tls_key_file,           o->tls_client_ca_file};
  struct ana_tls_files tls_files;
  if (ana_tls_files_load(&tls_paths, &tls_files, err) < 0)
    goto fail;
  if (tls_files.cert) {
    b->tls_cert = ana_strdup(o->tls_cert_file);
    b->tls_key = ana_strdup(o->tls_key_file);
    b->tls_ca = tls_files.ca ? ana_strdup(o->tls_client_ca_file) : NULL;
    memcpy(b->tls_serial, tls_files.serial, sizeof b->tls_serial);
    ana_tls_files_fini(&tls_files);
    if (!b->tls_cert || !b->tls_key ||
        (o->tls_client_ca_file && o->tls_client_ca_file[0] && !b->tls_ca)) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto fail;
    }
  }
  b->opt.tls_cert_file = b->tls_cert;
  b->opt.tls_key_file = b->tls_key;
  b->opt.tls_client_ca_file = b->tls_ca;
  snprintf(b->ws_name, sizeof b->ws_name, "%s", RB_WS_PROTOCOL);
  b->stats = rb_stats_create();
  if (!b->opt.body_budget_bytes)
    b->opt.body_budget_bytes = DEFAULT_BUDGET;
  if (!b->opt.stream_budget_bytes)
    b->opt.stream_budget_bytes = DEFAULT_BUDGET;
  if (!b->opt.body_min_rate)
    b->opt.body_min_rate = DEFAULT_BODY_MIN_RATE;
  if (b->opt.body_rate_window_ms <= 0)
    b->opt.body_rate_window_ms = DEFAULT_RATE_WINDOW_MS;
  if (!b->opt.decode_threads)
    b->opt.decode_threads = DEFAULT_DECODE_THREADS;
  b->budget = rb_budget_create(b->opt.body_budget_bytes, b->opt.stream_budget_bytes,
                               b->opt.body_min_rate, b->opt.body_rate_window_ms);
  if (!b->budget) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if (b->opt.decode_threads > 0 && !(b->decode = rb_decode_pool_create(b->opt.decode_threads))) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the request decoding threads");
    goto fail;
  }

  lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);

  /* One protocol serves HTTP and WebSocket; a WebSocket without a
   * subprotocol binds to it too (protocols[0], pitfall 7). */
  struct lws_protocols protocols[2];
  memset(protocols, 0, sizeof protocols);
  protocols[0].name = RB_WS_PROTOCOL;
  protocols[0].callback = callback;
  protocols[0].per_session_data_size = sizeof(struct rb_conn);
  protocols[0].rx_buffer_size = 0;

  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  /* Not LWS_SERVER_OPTION_VALIDATE_UTF8: lws 4.1 then drops a connection
   * whose close reason is not UTF-8 without a close frame, and misses a
   * message whose last fragment is empty; websocket.c checks instead. */
  info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
  if (b->tls_cert)
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.user = b;
  info.count_threads = 1;
  info.max_http_header_data = (unsigned short)b->opt.max_header_bytes;
  /* lws 4.1 drops an upgrade whose Sec-WebSocket-Protocol list is over 126
   * bytes: it keeps no more of it (websocket.c reads the whole list from
   * the framer); 0 leaves every other header to max_http_header_data. */
  static const struct lws_token_limits token_limits = {
      .token_limit = {[WSI_TOKEN_PROTOCOL] = RB_WS_LWS_PROTOCOLS_MAX}};
  info.token_limits = &token_limits;
  info.timeout_secs = 20;
  b->ctx = lws_create_context(&info);
  if (!b->ctx) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot create the HTTP server context");
    goto fail;
  }
  info.port = o->port;
  /* 0.0.0.0 and :: mean every interface (lws: no iface, dual-stack); lws
   * binds an IPv4 address only with IPv6 off on the vhost. */
  bool any = !b->host || strcmp(b->host, "0.0.0.0") == 0 || strcmp(b->host, "::") == 0;
  struct in_addr v4;
  info.iface = any ? NULL : b->host;
  if (!any && inet_pton(AF_INET, b->host, &v4) == 1)
    info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  info.protocols = protocols;
  info.vhost_name = "restbridge";
  info.retry_and_idle_policy = &idle_policy;
  if (b->tls_cert) {
    info.ssl_cert_filepath = b->tls_cert;
    info.ssl_private_key_filepath = b->tls_key;
    /* lws keeps the pointer: a literal. HTTP/1.1 only (lws has h2 built in;
     * the bridge speaks HTTP/1.1). */
    info.alpn = "http/1.1";
    if (b->tls_ca) {
      info.ssl_ca_filepath = b->tls_ca;
      info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
    }
  }
  b->vhost = lws_create_vhost(b->ctx, &info);
  if (!b->vhost) {
    char why[128];
    ana_listen_error(any ? NULL : b->host, o->port, why, sizeof why);
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "PORT %d: cannot listen on %s:%d: %s", o->port,
                  b->host ? b->host : "*", o->port, why);
    goto fail;
  }
  b->port = lws_get_vhost_listen_port(b->vhost);
  if (b->tls_cert)
    ana_log_fields(ANA_LOG_INFO, RB_COMPONENT, "HTTP serves TLS", "certificate_serial",
                   b->tls_serial, "client_certificates", b->tls_ca ? "required" : "not requested",
                   NULL);
  /* The vhost's own (heap) copy of the protocol, whose name is set to the
   * subprotocol a client asks for just before lws looks it up (websocket.c). */
  b->protocol = (struct lws_protocols *)lws_vhost_name_to_protocol(b->vhost, RB_WS_PROTOCOL);
  b->ctx_live = true;
  if (pthread_create(&b->thread, NULL, service_thread, b) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the HTTP server thread");
    goto fail;
  }
  b->thread_started = true;
  return b;

fail:
  b->ctx_live = false;
  if (b->ctx)
    lws_context_destroy(b->ctx);
  b->ctx = NULL;
  rb_decode_pool_destroy(b->decode);
  b->decode = NULL;
  rb_bridge_unref(b);
  return NULL;
}

int ana_restbridge_port(const struct ana_restbridge *b) {
  return b->port;
}

static int finish_shutdown(struct ana_restbridge *b, int rc);

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void wake(struct ana_restbridge *b) {
  pthread_mutex_lock(&b->mu);
  if (b->ctx_live)
    lws_cancel_service(b->ctx);
  pthread_mutex_unlock(&b->mu);
}

/* Joins the service thread, waiting until stop_by (monotonic ms, at least
 * 100 ms from now). Returns 0, or ANA_ERR_TIMEOUT (the thread still runs). */
static int join_by(struct ana_restbridge *b, int64_t stop_by) {
  int64_t wait = stop_by - ana_call_now_mono_ms();
  if (wait < 100)
    wait = 100;
  struct timespec ts = ana_deadline_in_ms(wait); /* pthread_timedjoin_np: CLOCK_REALTIME */
  int rc = pthread_timedjoin_np(b->thread, NULL, &ts);
  while (rc == EINTR)
    rc = pthread_timedjoin_np(b->thread, NULL, &ts);
  return rc == 0 ? 0 : ANA_ERR_TIMEOUT;
}

bool ana_restbridge_stopped(const struct ana_restbridge *b) {
  return !b || !b->thread_started;
}

int ana_restbridge_shutdown(struct ana_restbridge *b, int grace_ms) {
  if (!b || !b->thread_started)
    return 0;
  int64_t start = ana_call_now_mono_ms();
  int64_t stop_by = start + (grace_ms > 0 ? grace_ms : 0) + ANA_RESTBRIDGE_STOP_MARGIN_MS;
  if (b->thread_stuck) {
    /* An earlier shutdown gave up on the thread: one more bounded try. */
    if (join_by(b, stop_by) < 0)
      return ANA_ERR_TIMEOUT;
    b->thread_stuck = false;
    b->thread_started = false;
    return finish_shutdown(b, atomic_load(&b->inflight) > 0 ? ANA_ERR_TIMEOUT : 0);
  }
  atomic_store(&b->shutting_down, true);
  wake(b);
  int64_t deadline = start + (grace_ms > 0 ? grace_ms : 0);
  while (atomic_load(&b->inflight) > 0 && ana_call_now_mono_ms() < deadline)
    sleep_ms(10);
  int rc = atomic_load(&b->inflight) > 0 ? ANA_ERR_TIMEOUT : 0;
  if (rc < 0) {
    /* Answer what is left with 503 and cancel it; give the handlers a
     * moment to finish after on_cancel. */
    atomic_store(&b->cancel_inflight, true);
    wake(b);
    int64_t until = ana_call_now_mono_ms() + 500;
    while (atomic_load(&b->inflight) > 0 && ana_call_now_mono_ms() < until)
      sleep_ms(10);
    rc = atomic_load(&b->inflight) > 0 ? ANA_ERR_TIMEOUT : 0;
  }
  /* Let the close frames and last answers go out. */
  sleep_ms(50);
  atomic_store(&b->stop, true);
  wake(b);
  if (join_by(b, stop_by) < 0) {
    /* Stuck in a callback (a handler or health check that blocks): the
     * context cannot be destroyed under it, so everything stays as is. */
    b->thread_stuck = true;
    ANA_ERROR(RB_COMPONENT,
              "the HTTP service thread did not stop within %d ms of the grace period; "
              "leaving it running",
              ANA_RESTBRIDGE_STOP_MARGIN_MS);
    return ANA_ERR_TIMEOUT;
  }
  b->thread_started = false;
  return finish_shutdown(b, rc);
}

/* The rest of shutdown once the service thread is gone. Returns rc. */
static int finish_shutdown(struct ana_restbridge *b, int rc) {
  pthread_mutex_lock(&b->mu);
  b->ctx_live = false;
  pthread_mutex_unlock(&b->mu);
  /* Destroying the context closes every connection (detaching its call)
   * on this thread, now that the service thread is gone. */
  lws_context_destroy(b->ctx);
  b->ctx = NULL;
  /* Bodies still being decoded: their calls end CANCELLED. */
  rb_decode_pool_destroy(b->decode);
  b->decode = NULL;
  for (struct rb_call *c = take_dirty(b), *next; c; c = next) {
    next = c->wake_next;
    rb_call_unref(c);
  }
  if (rc < 0)
    ANA_WARN(RB_COMPONENT, "stopped with %d call(s) still unanswered by their handlers",
             atomic_load(&b->inflight));
  return rc;
}

void ana_restbridge_destroy(struct ana_restbridge *b) {
  if (!b)
    return;
  if (b->thread_started)
    ana_restbridge_shutdown(b, 0);
  if (b->thread_started)
    return; /* still stuck: freeing would pull the bridge from under it */
  rb_bridge_unref(b);
}
