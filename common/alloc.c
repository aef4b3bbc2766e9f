/* Allocation wrappers with an optional failure injector for tests. */
#include "ana_alloc.h"

#include <stdlib.h>
#include <string.h>

static long fail_countdown; /* 0 = never fail */

static int should_fail(void) {
  if (fail_countdown > 0 && --fail_countdown == 0)
    return 1;
  return 0;
}

void ana_alloc_fail_after(long n) {
  fail_countdown = n;
}

void *ana_malloc(size_t size) {
  return should_fail() ? NULL : malloc(size);
}

void *ana_calloc(size_t count, size_t size) {
  return should_fail() ? NULL : calloc(count, size);
}

void *ana_realloc(void *ptr, size_t size) {
  return should_fail() ? NULL : realloc(ptr, size);
}

char *ana_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = ana_malloc(n);
  if (p)
    memcpy(p, s, n);
  return p;
}

void ana_free(void *ptr) {
  free(ptr);
}
