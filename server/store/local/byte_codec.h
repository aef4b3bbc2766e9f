/* Growable byte buffers and LEB128 varints, shared by the local database's
 * packed columns (event bodies, deduplication key lists). */
#ifndef ANA_BYTE_CODEC_H
#define ANA_BYTE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ana_alloc.h"

/* Grows *buf (capacity *cap, doubling from 256) to hold at least `need`
 * bytes; false when out of memory (*buf unchanged). */
static inline bool ana_bytes_grow(uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return true;
  size_t n = *cap ? *cap : 256;
  while (n < need)
    n *= 2;
  uint8_t *p = ana_realloc(*buf, n);
  if (!p)
    return false;
  *buf = p;
  *cap = n;
  return true;
}

/* Writes v at p (room for 10 bytes); returns the bytes written. */
static inline size_t ana_varint_put(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Reads a varint of p[*i..n) into *out, advancing *i; false when it runs
 * past n or past 64 bits. */
static inline bool ana_varint_get(const uint8_t *p, size_t n, size_t *i, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift <= 63; shift += 7) {
    if (*i >= n)
      return false;
    uint8_t b = p[(*i)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

#endif
