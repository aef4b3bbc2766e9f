/* HTTP/1.1 request framing in front of libwebsockets (framing.c): lws reads
 * a bridge connection one request at a time. */
#ifndef ANA_RESTBRIDGE_FRAMING_H
#define ANA_RESTBRIDGE_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Larger Content-Length values are refused by the bridge anyway. */
#define RB_FRAME_MAX_BODY (1ull << 40)
/* The longest Sec-WebSocket-Protocol list kept (every such header of a
 * request together, joined by ", "): room for "bearer, <token>" with any
 * real JWT. */
#define RB_FRAME_MAX_PROTOCOLS 8192

enum rb_frame_phase {
  RB_FRAME_HEADERS, /* request line and header lines */
  RB_FRAME_BODY,    /* body_left bytes of Content-Length body */
  RB_FRAME_WS,      /* a WebSocket upgrade's frames: their headers are watched */
  RB_FRAME_PASS,    /* no more framing: refused and closing, or another protocol */
};

/* Where a connection's byte stream stands. */
struct rb_framer {
  enum rb_frame_phase phase;
  unsigned long long body_left;
  /* the current message's headers */
  char line[96]; /* the current header line (longer ones: line_long) */
  size_t line_len;
  bool line_long;
  bool seen_request_line;
  unsigned long long content_length;
  int n_content_length;
  bool bad_content_length;
  bool transfer_encoding;
  bool upgrade;
  bool upgrade_websocket; /* Upgrade: websocket */
  /* RB_FRAME_WS: the client frame being read (RFC 6455 5.2) */
  unsigned ws_have;           /* header bytes seen (0: at a frame's start) */
  unsigned ws_need;           /* its header's length, once its second byte is in */
  unsigned long long ws_len;  /* payload length */
  unsigned long long ws_left; /* payload bytes still to come */
  bool ws_unmasked;           /* a client frame without a mask: the stream stops before it */
  /* The current request's Sec-WebSocket-Protocol list as the client sent
   * it: lws 4.1 keeps only 126 bytes of it (the bridge sets that token
   * limit, so that a longer list is cut rather than the connection dropped),
   * so a bearer token is taken from here. The buffer (RB_FRAME_MAX_PROTOCOLS
   * + 1 bytes, allocated on the first such header) is shared by the copies
   * recv() scans ahead with, which hold the same bytes at the same offsets. */
  char *protocols;
  size_t protocols_len;
  size_t value_start;  /* where the current header's value starts in it */
  bool in_protocols;   /* the current line is a Sec-WebSocket-Protocol header */
  bool protocols_long; /* longer than RB_FRAME_MAX_PROTOCOLS (or no memory) */
  /* requests read to their end, and answered by the bridge: while a read
   * one is unanswered, recv() gives nothing more (EAGAIN) */
  unsigned long ended, answered;
  struct lws *wsi;
  /* HTTPS: the stream is the plaintext SSL_read gives lws (framing.c
   * interposes it), not the socket's */
  bool tls;
  void *ssl; /* the connection's SSL, once read */
  /* The last SSL_read held a request back (one is unanswered): until the
   * next, SSL_get_error and SSL_want say "wants to read", so that lws waits
   * rather than closing the connection. */
  bool tls_held;
};

void rb_framer_init(struct rb_framer *f);
/* Frees what f holds (not f). */
void rb_framer_fini(struct rb_framer *f);
/* Scans n bytes that are the next of the stream; returns how many of them
 * belong to the current request (at least 1 when n > 0): all n, or up to
 * the end of the request (then f is ready for the next one). After a
 * WebSocket upgrade, up to the header of a client frame without a mask
 * (RFC 6455 5.1: the server must fail the connection), which sets
 * ws_unmasked and may return 0. */
size_t rb_framer_scan(struct rb_framer *f, const unsigned char *p, size_t n);

struct lws;

/* The socket of a new HTTP connection: recv() on it (SSL_read, with tls)
 * returns one request at a time from now on, and nothing while a request
 * read is unanswered (it then calls rb_http_on_gated(wsi); over TLS, where
 * "nothing now" cannot be told to lws when plaintext is already decrypted,
 * the connection is closed instead). lws thread. */
void rb_framer_register(int fd, struct lws *wsi, bool tls);
/* Over TLS, whether plaintext beyond the answered requests is already read
 * from the socket (a pipelined request): lws would never be woken for it,
 * so the bridge services the connection itself after the answer
 * (rb_kick_pipelined). lws thread. */
bool rb_framer_tls_pipelined(int fd);
/* How many requests of the connection on fd were read so far. */
unsigned long rb_framer_requests(int fd);
/* The connection registered on fd, or NULL. */
struct lws *rb_framer_wsi(int fd);
/* The bridge answered the current request of this connection. */
void rb_framer_answered(int fd);
/* recv() held back the next request of wsi (http.c). lws thread. */
void rb_http_on_gated(struct lws *wsi);
/* recv() stopped before an unmasked client frame of wsi (websocket.c): the
 * bridge fails the connection (1002); false when wsi is no WebSocket (the
 * stream then reads as it is). lws thread. */
bool rb_ws_on_unmasked(struct lws *wsi);
/* The connection is gone (its descriptor may be reused). */
void rb_framer_unregister(int fd);
/* Plain reads from now on (an upgraded WebSocket). */
void rb_framer_pass(int fd);
/* The Sec-WebSocket-Protocol list of the request just read on fd (headers
 * complete), as the client sent it, NUL-terminated; "" when it sent none;
 * NULL when the connection has no framer (lws's copy is all there is).
 * *too_long: the list is longer than RB_FRAME_MAX_PROTOCOLS (then the
 * result is cut). lws thread; valid until the next read on fd. */
const char *rb_framer_ws_protocols(int fd, bool *too_long);
/* Frees the list kept for fd (the upgrade is done with it). lws thread. */
void rb_framer_drop_protocols(int fd);

#endif
