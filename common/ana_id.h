/* Identifiers: UUIDv7 (time-ordered) for every id the service makes. */
#ifndef ANA_ID_H
#define ANA_ID_H

#include <stdbool.h>
#include <stdint.h>

#define ANA_UUID_STR_LEN 36 /* without the NUL */

/* Writes a new lowercase UUIDv7 (RFC 9562) into out (37 bytes with the NUL).
 * Ids made by one process are strictly increasing, even within a millisecond.
 * Thread-safe; never blocks for long. Returns 0, or ANA_ERR_IO when no
 * randomness is available. */
int ana_uuid7_generate(char out[ANA_UUID_STR_LEN + 1]);

/* Same, with the clock given in Unix milliseconds (for tests). */
int ana_uuid7_generate_at(uint64_t unix_ms, char out[ANA_UUID_STR_LEN + 1]);

/* True when s is a canonical UUID string (8-4-4-4-12 hex digits). */
bool ana_uuid_is_valid(const char *s);

/* Unix milliseconds stored in a UUIDv7 string, or 0 if s is not one. */
uint64_t ana_uuid7_unix_ms(const char *s);

#endif
