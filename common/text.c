/* UTF-8 validation and printable-text checks. */
#include "ana_text.h"

#include <stdint.h>

bool ana_utf8_valid(const char *str, size_t *chars) {
  const unsigned char *s = (const unsigned char *)str;
  size_t n = 0;
  while (*s) {
    uint32_t c = *s;
    int len;
    uint32_t min;
    if (c < 0x80) {
      s++;
      n++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, min = 0x10000, c &= 0x07;
    } else {
      return false;
    }
    for (int i = 1; i < len; i++) {
      if ((s[i] & 0xc0) != 0x80)
        return false;
      c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
      return false;
    s += len;
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
