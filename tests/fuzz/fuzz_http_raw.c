/* Fuzzes the bridge's HTTP/1.1 request framing (restbridge/framing.c) with
 * raw connection bytes: pipelined requests, Content-Length and
 * Transfer-Encoding combinations, bare LF, long lines, WebSocket frames
 * after an upgrade. The first byte sets
 * the read size; the rest is the byte stream. Reading it in reads of that
 * size, as lws does through recv(), must frame it exactly as reading it
 * byte by byte: same requests, same ends, and every read makes progress
 * and stops at most at a request's end. */
#include "framing.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Scans all n bytes in reads of at most step bytes, each cut where the
 * framer says the request ends (what recv() returns). */
static void frame_all(struct rb_framer *f, const uint8_t *p, size_t n, size_t step) {
  size_t off = 0;
  while (off < n) {
    size_t want = n - off < step ? n - off : step;
    unsigned long ended = f->ended;
    size_t got = rb_framer_scan(f, p + off, want);
    if (f->ws_unmasked)
      return; /* the stream stops before an unmasked WebSocket frame */
    if (got == 0 || got > want)
      abort(); /* no progress, or past what was read */
    if (got < want && f->ended != ended + 1 && f->phase != RB_FRAME_PASS)
      abort(); /* a short read must end a request */
    off += got;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t step = (size_t)data[0] % 64 + 1;
  struct rb_framer a, b;
  rb_framer_init(&a);
  rb_framer_init(&b);
  frame_all(&a, data + 1, size - 1, step);
  frame_all(&b, data + 1, size - 1, 1);
  if (a.ended != b.ended || a.phase != b.phase || a.body_left != b.body_left ||
      a.ws_unmasked != b.ws_unmasked || (!a.ws_unmasked && a.ws_left != b.ws_left))
    abort();
  /* The Sec-WebSocket-Protocol list read so far: the same either way. */
  if (!a.ws_unmasked &&
      (a.protocols_len != b.protocols_len || a.protocols_long != b.protocols_long ||
       (a.protocols_len && memcmp(a.protocols, b.protocols, a.protocols_len))))
    abort();
  rb_framer_fini(&a);
  rb_framer_fini(&b);
  return 0;
}
