/* One byte range of a file, as a download request carries it (offset,
 * length) and as HTTP Range means it: the one rule the sender of a file and
 * the REST bridge both apply, so Content-Range always matches the bytes. */
#ifndef ANA_BYTE_RANGE_H
#define ANA_BYTE_RANGE_H

#include <stdbool.h>
#include <stdint.h>

/* offset >= 0: the first byte; offset < 0: the last -offset bytes
 * (bytes=-n). length > 0: at most that many bytes; 0: to the end. On a file
 * of total bytes, sets *start and *count and returns true, or returns false
 * when the range is unsatisfiable (it starts at or past the end, or asks for
 * the last bytes of an empty file). The whole file (0, 0) is always
 * satisfiable, even when empty. A negative length is the caller's to refuse. */
static inline bool ana_byte_range_resolve(int64_t offset, int64_t length, int64_t total,
                                          int64_t *start, int64_t *count) {
  if (offset == 0 && length == 0) {
    *start = 0;
    *count = total;
    return true;
  }
  int64_t s;
  if (offset < 0) {
    if (total == 0)
      return false;
    s = offset < -total ? 0 : total + offset;
  } else {
    if (offset >= total)
      return false;
    s = offset;
  }
  int64_t n = total - s;
  if (length > 0 && length < n)
    n = length;
  *start = s;
  *count = n;
  return true;
}

#endif
