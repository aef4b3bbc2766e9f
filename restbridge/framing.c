/* HTTP/1.1 request framing in front of libwebsockets: lws reads a bridge
 * connection one request at a time, so that it never holds a pipelined
 * request in its own input buffer.
 *
 * Why: lws 4.1 mishandles a request with a body whose headers it parsed
 * from its input buffer (a request that arrived in the same read as the
 * previous one): lws_http_action() then feeds that buffer, from its start,
 * to the body parser again (the request's own headers come out as its
 * body) and, once the Content-Length is used up, loops for ever delivering
 * HTTP_BODY_COMPLETION without consuming anything. A request read from the
 * socket itself is handled right. lws reads with recv(); for the sockets
 * registered here, recv() returns at most the rest of the current request
 * (request line and headers, then Content-Length bytes of body), peeking
 * first to find where it ends. Every other socket of the process reads as
 * usual. A request the bridge refuses and hangs up on (Transfer-Encoding,
 * several or a bad Content-Length, an Upgrade) turns the connection into
 * plain reads. Together with rx flow control while a request is in flight
 * (http.c), lws holds at most one request of a connection at a time.
 *
 * After a WebSocket upgrade the framer follows the client's frame headers
 * (lws 4.1 accepts unmasked client frames): reads stop before a frame
 * without a mask, and the bridge fails the connection with 1002. */
#include "framing.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define MAX_FD 65536
#define PROTOCOL_HEADER "sec-websocket-protocol:"
#define PROTOCOL_HEADER_LEN (sizeof PROTOCOL_HEADER - 1)

/* Connections registered by the lws thread; read from whatever thread
 * calls recv() (only lws does, on its own thread, for these sockets). */
static _Atomic(struct rb_framer *) framers[MAX_FD];

static void reset_message(struct rb_framer *f) {
  f->phase = RB_FRAME_HEADERS;
  f->line_len = 0;
  f->line_long = false;
  f->seen_request_line = false;
  f->content_length = 0;
  f->n_content_length = 0;
  f->bad_content_length = false;
  f->transfer_encoding = false;
  f->upgrade = false;
  f->upgrade_websocket = false;
  f->protocols_len = 0;
  f->value_start = 0;
  f->in_protocols = false;
  f->protocols_long = false;
  if (f->protocols)
    f->protocols[0] = '\0';
}

void rb_framer_init(struct rb_framer *f) {
  memset(f, 0, sizeof *f);
  reset_message(f);
}

void rb_framer_fini(struct rb_framer *f) {
  free(f->protocols);
  f->protocols = NULL;
}

/* Appends byte c to the Sec-WebSocket-Protocol list. */
static void protocols_put(struct rb_framer *f, char c) {
  if (f->protocols_long)
    return;
  if (!f->protocols && !(f->protocols = malloc(RB_FRAME_MAX_PROTOCOLS + 1))) {
    f->protocols_long = true;
    return;
  }
  if (f->protocols_len == RB_FRAME_MAX_PROTOCOLS) {
    f->protocols_long = true;
    return;
  }
  f->protocols[f->protocols_len++] = c;
  f->protocols[f->protocols_len] = '\0';
}

/* A Sec-WebSocket-Protocol header starts: its value joins the list. */
static void protocols_begin(struct rb_framer *f) {
  f->in_protocols = true;
  if (f->protocols_len) {
    protocols_put(f, ',');
    protocols_put(f, ' ');
  }
  f->value_start = f->protocols_len;
}

/* A byte of a Sec-WebSocket-Protocol header's value (leading blanks
 * dropped). */
static void protocols_byte(struct rb_framer *f, char c) {
  if (f->protocols_len == f->value_start && (c == ' ' || c == '\t'))
    return;
  protocols_put(f, c);
}

/* The header's line ended: trailing blanks (and the CR) are dropped, and an
 * empty value adds nothing. */
static void protocols_end(struct rb_framer *f) {
  f->in_protocols = false;
  if (!f->protocols || f->protocols_long)
    return;
  while (f->protocols_len > f->value_start &&
         (f->protocols[f->protocols_len - 1] == ' ' || f->protocols[f->protocols_len - 1] == '\t' ||
          f->protocols[f->protocols_len - 1] == '\r'))
    f->protocols_len--;
  if (f->protocols_len == f->value_start && f->value_start >= 2)
    f->protocols_len = f->value_start - 2; /* the ", " before it */
  f->protocols[f->protocols_len] = '\0';
}

/* Case-insensitive "name:" prefix of line; the value after it, or NULL. */
static const char *header_value(const char *line, size_t n, const char *name) {
  size_t nl = strlen(name);
  if (n < nl || strncasecmp(line, name, nl) != 0)
    return NULL;
  const char *v = line + nl;
  while (*v == ' ' || *v == '\t')
    v++;
  return v;
}

static void header_line(struct rb_framer *f) {
  f->line[f->line_len] = '\0';
  const char *v;
  if (f->line_long) {
    /* Longer than any Content-Length: only its name matters. */
    if (header_value(f->line, f->line_len, "content-length:"))
      f->bad_content_length = true;
    else if (header_value(f->line, f->line_len, "transfer-encoding:"))
      f->transfer_encoding = true;
    else if (header_value(f->line, f->line_len, "upgrade:"))
      f->upgrade = true;
    return;
  }
  if ((v = header_value(f->line, f->line_len, "content-length:")) != NULL) {
    char *end = NULL;
    f->n_content_length++;
    if (!isdigit((unsigned char)*v)) {
      f->bad_content_length = true;
      return;
    }
    unsigned long long cl = strtoull(v, &end, 10);
    while (end && (*end == ' ' || *end == '\t'))
      end++;
    if (!end || *end || cl > RB_FRAME_MAX_BODY)
      f->bad_content_length = true;
    else
      f->content_length = cl;
  } else if (header_value(f->line, f->line_len, "transfer-encoding:")) {
    f->transfer_encoding = true;
  } else if ((v = header_value(f->line, f->line_len, "upgrade:")) != NULL) {
    f->upgrade = true;
    f->upgrade_websocket = strncasecmp(v, "websocket", 9) == 0 && (!v[9] || v[9] == ' ');
  }
}

/* The headers are in: what follows. */
static void headers_done(struct rb_framer *f) {
  bool refused = f->transfer_encoding || f->bad_content_length || f->n_content_length > 1;
  if (f->upgrade && f->upgrade_websocket && !refused && !f->content_length) {
    f->phase = RB_FRAME_WS; /* refused upgrades are closed: no harm */
    f->ws_have = 0;
    f->ws_left = 0;
  } else if (refused || f->upgrade) {
    /* Refused and closed by the bridge, or another protocol: plain reads. */
    f->phase = RB_FRAME_PASS;
  } else if (f->content_length) {
    f->phase = RB_FRAME_BODY;
    f->body_left = f->content_length;
  } else {
    reset_message(f);
  }
}

/* Follows WebSocket frames from p[i]: n, or the offset of the header of an
 * unmasked frame (ws_unmasked set). */
static size_t scan_ws(struct rb_framer *f, const unsigned char *p, size_t i, size_t n) {
  size_t start = i; /* where the current header began in p (if it did) */
  while (i < n && !f->ws_unmasked) {
    if (f->ws_left) {
      size_t take = n - i;
      if ((unsigned long long)take > f->ws_left)
        take = (size_t)f->ws_left;
      f->ws_left -= take;
      i += take;
      continue;
    }
    unsigned char c = p[i];
    if (f->ws_have == 0) {
      start = i;
    } else if (f->ws_have == 1) {
      if (!(c & 0x80)) {
        f->ws_unmasked = true;
        return start < i ? start : i;
      }
      unsigned len7 = c & 0x7f;
      f->ws_len = len7 < 126 ? len7 : 0;
      f->ws_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
    } else if (f->ws_have < f->ws_need - 4) {
      f->ws_len = f->ws_len << 8 | c; /* extended payload length */
    }
    i++;
    if (++f->ws_have >= 2 && f->ws_have == f->ws_need) {
      f->ws_have = 0;
      f->ws_left = f->ws_len;
    }
  }
  return i;
}

size_t rb_framer_scan(struct rb_framer *f, const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (f->phase == RB_FRAME_PASS)
      return n;
    if (f->phase == RB_FRAME_WS)
      return scan_ws(f, p, i, n);
    if (f->phase == RB_FRAME_BODY) {
      size_t take = n - i;
      if ((unsigned long long)take > f->body_left)
        take = (size_t)f->body_left;
      f->body_left -= take;
      i += take;
      if (f->body_left == 0) {
        reset_message(f);
        f->ended++;
        return i; /* the end of this request */
      }
      continue;
    }
    unsigned char c = p[i++];
    if (c != '\n') {
      if (f->line_len < sizeof f->line - 1)
        f->line[f->line_len++] = (char)c;
      else
        f->line_long = true;
      if (f->in_protocols)
        protocols_byte(f, (char)c);
      else if (f->line_len == PROTOCOL_HEADER_LEN && !f->line_long && f->seen_request_line &&
               strncasecmp(f->line, PROTOCOL_HEADER, PROTOCOL_HEADER_LEN) == 0)
        protocols_begin(f);
      continue;
    }
    if (f->in_protocols)
      protocols_end(f);
    if (f->line_len && f->line[f->line_len - 1] == '\r')
      f->line_len--;
    bool empty = f->line_len == 0 && !f->line_long;
    if (!f->seen_request_line) {
      /* Empty lines before a request line are skipped (RFC 9112 2.2). */
      f->seen_request_line = !empty;
    } else if (empty) {
      headers_done(f);
      if (f->phase == RB_FRAME_HEADERS) {
        f->ended++;
        return i; /* a request without a body ends here */
      }
    } else {
      header_line(f);
    }
    f->line_len = 0;
    f->line_long = false;
  }
  return n;
}

void rb_framer_register(int fd, struct lws *wsi, bool tls) {
  if (fd < 0 || fd >= MAX_FD)
    return;
  struct rb_framer *f = malloc(sizeof *f);
  if (f) {
    rb_framer_init(f);
    f->wsi = wsi;
    f->tls = tls;
  }
  /* Without memory the connection reads as it used to. */
  struct rb_framer *old = atomic_exchange(&framers[fd], f);
  if (old)
    rb_framer_fini(old);
  free(old);
}

void rb_framer_unregister(int fd) {
  if (fd < 0 || fd >= MAX_FD)
    return;
  struct rb_framer *old = atomic_exchange(&framers[fd], NULL);
  if (old)
    rb_framer_fini(old);
  free(old);
}

const char *rb_framer_ws_protocols(int fd, bool *too_long) {
  *too_long = false;
  struct rb_framer *f = fd >= 0 && fd < MAX_FD ? atomic_load(&framers[fd]) : NULL;
  if (!f)
    return NULL;
  *too_long = f->protocols_long;
  return f->protocols && f->protocols_len ? f->protocols : "";
}

unsigned long rb_framer_requests(int fd) {
  struct rb_framer *f = fd >= 0 && fd < MAX_FD ? atomic_load(&framers[fd]) : NULL;
  return f ? (unsigned long)f->ended : 0;
}

struct lws *rb_framer_wsi(int fd) {
  struct rb_framer *f = fd >= 0 && fd < MAX_FD ? atomic_load(&framers[fd]) : NULL;
  return f ? f->wsi : NULL;
}

void rb_framer_answered(int fd) {
  if (fd < 0 || fd >= MAX_FD)
    return;
  struct rb_framer *f = atomic_load(&framers[fd]);
  if (f)
    f->answered++;
}

void rb_framer_pass(int fd) {
  if (fd < 0 || fd >= MAX_FD)
    return;
  struct rb_framer *f = atomic_load(&framers[fd]);
  if (f)
    f->phase = RB_FRAME_PASS;
}

void rb_framer_drop_protocols(int fd) {
  struct rb_framer *f = fd >= 0 && fd < MAX_FD ? atomic_load(&framers[fd]) : NULL;
  if (f) {
    rb_framer_fini(f);
    f->protocols_len = 0;
  }
}

/* The recv() lws calls (libwebsockets.so binds to this definition, as to
 * any symbol the executable defines). Plain recvfrom() for every socket not
 * registered above, and for any call with flags. */
ssize_t recv(int fd, void *buf, size_t len, int flags) {
  struct rb_framer *f = fd >= 0 && fd < MAX_FD ? atomic_load(&framers[fd]) : NULL;
  if (!f || f->tls || flags || !len || f->phase == RB_FRAME_PASS)
    return recvfrom(fd, buf, len, flags, NULL, NULL);
  if (f->ws_unmasked) {
    /* Nothing from the unmasked frame on reaches lws: the bridge fails
     * the connection (or, on no WebSocket, the stream reads as it is). */
    if (!rb_ws_on_unmasked(f->wsi)) {
      f->phase = RB_FRAME_PASS;
      return recvfrom(fd, buf, len, flags, NULL, NULL);
    }
    errno = EAGAIN;
    return -1;
  }
  if (f->phase == RB_FRAME_WS) {
    ssize_t peeked = recvfrom(fd, buf, len, MSG_PEEK, NULL, NULL);
    if (peeked <= 0)
      return peeked;
    struct rb_framer next = *f;
    size_t want = rb_framer_scan(&next, buf, (size_t)peeked);
    f->protocols = next.protocols; /* the same bytes at the same offsets */
    if (want == 0) {
      *f = next;
      return recv(fd, buf, len, flags); /* the unmasked frame is next */
    }
    ssize_t got = recvfrom(fd, buf, want, 0, NULL, NULL);
    if (got == (ssize_t)want)
      *f = next;
    else if (got > 0)
      rb_framer_scan(f, buf, (size_t)got);
    return got;
  }
  if (f->ended > f->answered) {
    /* The previous request is not answered yet. Its client may have gone
     * (end of stream or a reset: passed on, so that lws closes the
     * connection and the call is cancelled); otherwise the next request
     * stays in the socket (RFC 9112 9.3.2: answers go out in request
     * order) and input is turned off until the answer, which would spin. */
    char next_byte;
    ssize_t peeked = recvfrom(fd, &next_byte, 1, MSG_PEEK | MSG_DONTWAIT, NULL, NULL);
    if (peeked <= 0)
      return peeked;
    rb_http_on_gated(f->wsi);
    errno = EAGAIN;
    return -1;
  }
  if (f->phase == RB_FRAME_BODY) {
    size_t want = len;
    if ((unsigned long long)want > f->body_left)
      want = (size_t)f->body_left;
    ssize_t got = recvfrom(fd, buf, want, 0, NULL, NULL);
    if (got > 0)
      rb_framer_scan(f, buf, (size_t)got);
    return got;
  }
  ssize_t peeked = recvfrom(fd, buf, len, MSG_PEEK, NULL, NULL);
  if (peeked <= 0)
    return peeked;
  struct rb_framer next = *f;
  size_t want = rb_framer_scan(&next, buf, (size_t)peeked);
  f->protocols = next.protocols; /* the same bytes at the same offsets */
  ssize_t got = recvfrom(fd, buf, want, 0, NULL, NULL);
  if (got == (ssize_t)want)
    *f = next;
  else if (got > 0)
    rb_framer_scan(f, buf, (size_t)got);
  return got;
}

/* --- HTTPS: the same framing over the plaintext of SSL_read --- */

typedef int (*ssl_read_fn)(SSL *ssl, void *buf, int num);

static int real_ssl_read(SSL *ssl, void *buf, int num) {
  static _Atomic(ssl_read_fn) real;
  ssl_read_fn fn = atomic_load(&real);
  if (!fn) {
    fn = (ssl_read_fn)dlsym(RTLD_NEXT, "SSL_read");
    atomic_store(&real, fn);
  }
  return fn(ssl, buf, num);
}

/* A request is unanswered: nothing for lws now. With no plaintext left, SSL_peek fails with
 * WANT_READ (lws waits) or reports the end; with plaintext there (the
 * client sent more while a request is unanswered) -1, which SSL_get_error
 * and SSL_want below report as "wants to read": lws waits, and the bridge
 * reads the request once the answer is out (rb_kick_pipelined). */
static int ssl_gated(struct rb_framer *f, SSL *ssl) {
  char next_byte;
  int peeked = SSL_peek(ssl, &next_byte, 1);
  if (peeked <= 0)
    return peeked;
  rb_http_on_gated(f->wsi);
  f->tls_held = true;
  return -1;
}

/* The framer of a registered HTTPS connection whose last SSL_read held a
 * request back, or NULL. */
static struct rb_framer *held(const SSL *ssl) {
  int fd = SSL_get_fd(ssl);
  struct rb_framer *f = fd >= 0 && fd < MAX_FD ? atomic_load(&framers[fd]) : NULL;
  return f && f->tls && f->tls_held && f->ssl == ssl ? f : NULL;
}

typedef int (*ssl_get_error_fn)(const SSL *ssl, int ret);
typedef int (*ssl_want_fn)(const SSL *ssl);

/* SSL_get_error and SSL_want as lws sees them (libwebsockets.so binds to
 * these, as to SSL_read): the real ones, except right after a held-back
 * request. */
int SSL_get_error(const SSL *ssl, int ret) {
  static _Atomic(ssl_get_error_fn) real;
  if (ret <= 0 && held(ssl))
    return SSL_ERROR_WANT_READ;
  ssl_get_error_fn fn = atomic_load(&real);
  if (!fn) {
    fn = (ssl_get_error_fn)dlsym(RTLD_NEXT, "SSL_get_error");
    atomic_store(&real, fn);
  }
  return fn(ssl, ret);
}

int SSL_want(const SSL *ssl) {
  static _Atomic(ssl_want_fn) real;
  if (held(ssl))
    return SSL_READING;
  ssl_want_fn fn = atomic_load(&real);
  if (!fn) {
    fn = (ssl_want_fn)dlsym(RTLD_NEXT, "SSL_want");
    atomic_store(&real, fn);
  }
  return fn(ssl);
}

bool rb_framer_tls_pipelined(int fd) {
  if (fd < 0 || fd >= MAX_FD)
    return false;
  struct rb_framer *f = atomic_load(&framers[fd]);
  return f && f->tls && f->ssl && f->phase != RB_FRAME_PASS && SSL_has_pending(f->ssl);
}

/* The SSL_read lws calls (libwebsockets.so binds to this definition, as to
 * recv() above): the real one for every SSL not registered (gRPC's among
 * them: no socket of its own), as recv() above for the bridge's. */
int SSL_read(SSL *ssl, void *buf, int num) {
  int fd = SSL_get_fd(ssl);
  struct rb_framer *f = fd >= 0 && fd < MAX_FD ? atomic_load(&framers[fd]) : NULL;
  if (!f || !f->tls || num <= 0 || f->phase == RB_FRAME_PASS)
    return real_ssl_read(ssl, buf, num);
  f->ssl = ssl;
  f->tls_held = false;
  if (f->ws_unmasked) {
    if (!rb_ws_on_unmasked(f->wsi)) {
      f->phase = RB_FRAME_PASS;
      return real_ssl_read(ssl, buf, num);
    }
    /* The connection is being failed (1002): what follows is never read;
     * draining it until OpenSSL wants more lets lws wait, and send the
     * close frame, instead of giving up on the connection. */
    char scratch[4096];
    int got;
    while ((got = real_ssl_read(ssl, scratch, sizeof scratch)) > 0) {
    }
    return got;
  }
  if (f->phase != RB_FRAME_WS && f->ended > f->answered)
    return ssl_gated(f, ssl);
  if (f->phase == RB_FRAME_BODY) {
    int want = num;
    if ((unsigned long long)want > f->body_left)
      want = (int)f->body_left;
    int got = real_ssl_read(ssl, buf, want);
    if (got > 0)
      rb_framer_scan(f, buf, (size_t)got);
    return got;
  }
  int peeked = SSL_peek(ssl, buf, num);
  if (peeked <= 0)
    return peeked;
  struct rb_framer next = *f;
  size_t want = rb_framer_scan(&next, buf, (size_t)peeked);
  f->protocols = next.protocols; /* the same bytes at the same offsets */
  if (want == 0) {
    *f = next;
    return SSL_read(ssl, buf, num); /* the unmasked frame is next */
  }
  int got = real_ssl_read(ssl, buf, (int)want);
  if (got == (int)want)
    *f = next;
  else if (got > 0)
    rb_framer_scan(f, buf, (size_t)got);
  return got;
}
