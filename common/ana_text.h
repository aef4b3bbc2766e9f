/* Small text checks shared by validators. */
#ifndef ANA_TEXT_H
#define ANA_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s (NUL-terminated) is valid UTF-8 (no overlongs, no surrogates);
 * if so and chars is not NULL, stores the number of code points. */
bool ana_utf8_valid(const char *s, size_t *chars);

/* The length (1-4) of the well-formed UTF-8 sequence at s, n >= 1 bytes
 * available (SIZE_MAX for NUL-terminated text: a NUL ends any sequence), or
 * 0 when it is ill-formed (overlong, surrogate, above U+10FFFF, cut). */
size_t ana_utf8_seq_len(const void *s, size_t n);

/* Validates UTF-8 that arrives in pieces (a code point may be split
 * between them). Zero-initialise, feed each piece with ana_utf8_feed, and
 * at the end check ana_utf8_complete. */
struct ana_utf8_state {
  unsigned need;     /* continuation bytes still expected */
  unsigned long cp;  /* the code point so far */
  unsigned long min; /* the smallest code point its length may encode */
};

/* False as soon as the bytes so far cannot be the start of valid UTF-8
 * (bad byte, overlong form, surrogate, beyond U+10FFFF). */
bool ana_utf8_feed(struct ana_utf8_state *st, const void *p, size_t n);

/* Whether the input ended on a code point boundary. */
bool ana_utf8_complete(const struct ana_utf8_state *st);

/* Whether s has no control characters (C0, DEL, C1). Assumes valid UTF-8. */
bool ana_text_printable(const char *s);

#endif
