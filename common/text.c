/* UTF-8 validation and printable-text checks. */
#include "ana_text.h"

#include <stdint.h>

size_t ana_utf8_seq_len(const void *p, size_t n) {
  const unsigned char *s = p;
  unsigned c = s[0];
  size_t k;
  uint32_t cp, min;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    k = 1, cp = c & 0x1f, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef)
    k = 2, cp = c & 0x0f, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4)
    k = 3, cp = c & 0x07, min = 0x10000;
  else
    return 0;
  if (n <= k)
    return 0;
  for (size_t i = 1; i <= k; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return k + 1;
}

bool ana_utf8_valid(const char *str, size_t *chars) {
  const unsigned char *s = (const unsigned char *)str;
  size_t n = 0;
  while (*s) {
    /* A NUL ends any sequence: no length is needed. */
    size_t k = ana_utf8_seq_len(s, SIZE_MAX);
    if (!k)
      return false;
    s += k;
    n++;
  }
  if (chars)
    *chars = n;
  return true;
}

bool ana_utf8_feed(struct ana_utf8_state *st, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    unsigned c = s[i];
    if (st->need) {
      if ((c & 0xc0) != 0x80)
        return false;
      st->cp = st->cp << 6 | (c & 0x3f);
      st->need--;
      /* Overlongs and surrogates are known by the second byte already. */
      unsigned long top = st->cp << (6 * st->need);
      if (top > 0x10ffff || (top >= 0xd800 && top <= 0xdfff) ||
          (top | ((1ul << (6 * st->need)) - 1)) < st->min)
        return false;
      continue;
    }
    if (c < 0x80)
      continue;
    if ((c & 0xe0) == 0xc0)
      st->need = 1, st->min = 0x80, st->cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
      st->need = 2, st->min = 0x800, st->cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
      st->need = 3, st->min = 0x10000, st->cp = c & 0x07;
    else
      return false;
    if ((st->cp << (6 * st->need)) > 0x10ffff ||
        ((st->cp << (6 * st->need)) | ((1ul << (6 * st->need)) - 1)) < st->min)
      return false;
  }
  return true;
}

bool ana_utf8_complete(const struct ana_utf8_state *st) {
  return st->need == 0;
}

bool ana_text_printable(const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  for (; *s; s++) {
    if (*s < 0x20 || *s == 0x7f)
      return false;
    /* C1 controls U+0080..U+009F are encoded as C2 80..C2 9F. */
    if (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
      return false;
  }
  return true;
}
