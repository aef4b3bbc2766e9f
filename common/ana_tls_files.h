/* A server's TLS files (certificate chain, private key, optional client CA):
 * all-or-nothing checks, read into memory and parsed with OpenSSL, so that
 * a half-configured or bad setting refuses start (or a reload) with an error
 * naming the variable and the path. Shared by the gRPC transport and the
 * REST bridge. */
#ifndef ANA_TLS_FILES_H
#define ANA_TLS_FILES_H

#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>

/* Which variables name the files (for messages), and the paths (borrowed;
 * NULL or "" = unset). */
struct ana_tls_paths {
  const char *cert_var, *key_var, *ca_var; /* "GRPC_TLS_CERT_FILE", ... */
  const char *cert, *key, *ca;
};

/* The files' contents, each NUL-terminated PEM (owned; ana_tls_files_fini
 * frees them). ca is NULL without a client CA. */
struct ana_tls_files {
  char *cert, *key, *ca;
  size_t cert_len, key_len, ca_len;
  char serial[64]; /* the leaf certificate's serial number, hex (for logs) */
};

/* True when any of the three paths is set. */
bool ana_tls_paths_any(const struct ana_tls_paths *p);

/* Checks and reads the files: the certificate and the key come together
 * (one without the other names the missing variable), a client CA needs
 * both; every file must be readable (the error names the variable and the
 * path), the certificate file holds a PEM chain, the key file a PEM private
 * key matching the certificate, the CA file at least one PEM certificate.
 * Returns 0 with *out filled (out zeroed and TLS off when no path is set:
 * check out->cert), or ANA_ERR_INVALID / ANA_ERR_NOMEM with err filled and
 * out zeroed. Blocks on file reads. */
int ana_tls_files_load(const struct ana_tls_paths *p, struct ana_tls_files *out,
                       struct ana_error *err);

/* Frees what load filled (the key is wiped first); safe on a zeroed struct. */
void ana_tls_files_fini(struct ana_tls_files *f);

#endif
