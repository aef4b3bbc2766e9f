/* Small text checks shared by validators. */
#ifndef ANA_TEXT_H
#define ANA_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s (NUL-terminated) is valid UTF-8 (no overlongs, no surrogates);
 * if so and chars is not NULL, stores the number of code points. */
bool ana_utf8_valid(const char *s, size_t *chars);

/* Whether s has no control characters (C0, DEL, C1). Assumes valid UTF-8. */
bool ana_text_printable(const char *s);

#endif
