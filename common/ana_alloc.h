/* Thin allocation wrappers, so a test build can make allocations fail on purpose. */
#ifndef ANA_ALLOC_H
#define ANA_ALLOC_H

#include <stddef.h>

void *ana_malloc(size_t size);
void *ana_calloc(size_t count, size_t size);
void *ana_realloc(void *ptr, size_t size);
char *ana_strdup(const char *s);
void ana_free(void *ptr);

/* Test hook: the n-th allocation from now on (1 = the next one) returns NULL;
 * 0 turns failure injection off. Not thread-safe; for unit tests only. */
void ana_alloc_fail_after(long n);

#endif
