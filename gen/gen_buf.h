/* Growable text buffer for the generator's output files. */
#ifndef GEN_BUF_H
#define GEN_BUF_H

#include <stddef.h>

struct gen_buf {
  char *data;
  size_t len, cap;
};

/* Appends printf-style text; aborts the generator when out of memory. */
void gen_printf(struct gen_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends n raw bytes. */
void gen_append(struct gen_buf *b, const void *data, size_t n);
/* Appends s as a C string literal (with quotes). */
void gen_c_string(struct gen_buf *b, const char *s);
/* Returns the text (NUL-terminated) and resets b; caller frees. */
char *gen_take(struct gen_buf *b);
/* xstrdup / xmalloc / xasprintf: abort when out of memory (a generator run is short-lived). */
char *gen_strdup(const char *s);
void *gen_xcalloc(size_t n, size_t size);
char *gen_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
