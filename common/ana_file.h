/* Small files read whole: secrets, keys, certificates, JWKS documents. */
#ifndef ANA_FILE_H
#define ANA_FILE_H

#include "ana_error.h"

#include <stddef.h>

/* Reads the whole file at path, at most max bytes, into *out (NUL-terminated;
 * the caller frees it with ana_free) and its length into *len (may be NULL).
 * name is what the error names (a variable such as JWT_JWKS_FILE, or "TLS CA
 * file"). Returns 0; ANA_ERR_INVALID with err "<name>: cannot read <path>:
 * <why>" or "<name>: <path> is larger than <max> bytes"; ANA_ERR_NOMEM. */
int ana_file_read_whole(const char *name, const char *path, size_t max, char **out, size_t *len,
                        struct ana_error *err);

#endif
