/* Growable text buffer for the generator's output files. */
#include "gen_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die_nomem(void) {
  fputs("protoc-gen-ana: out of memory\n", stderr);
  exit(1);
}

static void reserve(struct gen_buf *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p)
    die_nomem();
  b->data = p;
  b->cap = cap;
}

void gen_append(struct gen_buf *b, const void *data, size_t n) {
  reserve(b, n);
  memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void gen_printf(struct gen_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    die_nomem();
  reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void gen_c_string(struct gen_buf *b, const char *s) {
  gen_append(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      gen_printf(b, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      gen_printf(b, "\\%03o", *p);
    else
      gen_append(b, p, 1);
  }
  gen_append(b, "\"", 1);
}

char *gen_take(struct gen_buf *b) {
  reserve(b, 0);
  char *s = b->data;
  b->data = NULL;
  b->len = b->cap = 0;
  return s;
}

char *gen_strdup(const char *s) {
  char *p = strdup(s);
  if (!p)
    die_nomem();
  return p;
}

void *gen_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    die_nomem();
  return p;
}

char *gen_asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0)
    die_nomem();
  va_end(ap);
  return s;
}
