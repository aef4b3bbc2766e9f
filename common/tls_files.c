/* A server's TLS files: all-or-nothing checks, reading and PEM parsing (OpenSSL). */
#include "ana_tls_files.h"

#include "ana_file.h"

#include "ana_alloc.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

/* Larger files are no certificate or key anyone means. */
#define MAX_PEM_BYTES (1 << 20)

static bool set(const char *s) {
  return s && s[0];
}

bool ana_tls_paths_any(const struct ana_tls_paths *p) {
  return set(p->cert) || set(p->key) || set(p->ca);
}

static int read_file(const char *var, const char *path, char **out, size_t *len,
                     struct ana_error *err) {
  return ana_file_read_whole(var, path, MAX_PEM_BYTES, out, len, err);
}

/* The certificates of a PEM buffer: how many (0: none or malformed), and
 * the first one (*first, caller frees) when asked. */
static int count_certs(const char *pem, size_t len, X509 **first) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  int n = 0;
  if (!bio)
    return 0;
  X509 *x;
  while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (n == 0 && first)
      *first = x;
    else
      X509_free(x);
    n++;
  }
  /* The loop ends on "no start line" after the last certificate; anything
   * else is a malformed one. */
  unsigned long e = ERR_peek_last_error();
  if (n > 0 && e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
    n = 0;
    if (first) {
      X509_free(*first);
      *first = NULL;
    }
  }
  ERR_clear_error();
  BIO_free(bio);
  return n;
}

static void serial_hex(X509 *x, char *out, size_t size) {
  out[0] = '\0';
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  if (hex)
    snprintf(out, size, "%s", hex);
  OPENSSL_free(hex);
  BN_free(bn);
}

int ana_tls_files_load(const struct ana_tls_paths *p, struct ana_tls_files *out,
                       struct ana_error *err) {
  int rc = ANA_ERR_INVALID;
  X509 *leaf = NULL;
  EVP_PKEY *pkey = NULL;
  BIO *bio = NULL;
  memset(out, 0, sizeof *out);
  if (!ana_tls_paths_any(p))
    return 0;
  if (!set(p->cert))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: not set, but %s is: TLS needs %s",
                         p->cert_var, set(p->key) ? p->key_var : p->ca_var,
                         set(p->key) ? "both" : "a certificate and a key to require client ones");
  if (!set(p->key))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: not set, but %s is: TLS needs both",
                         p->key_var, p->cert_var);
  if ((rc = read_file(p->cert_var, p->cert, &out->cert, &out->cert_len, err)) < 0 ||
      (rc = read_file(p->key_var, p->key, &out->key, &out->key_len, err)) < 0 ||
      (set(p->ca) && (rc = read_file(p->ca_var, p->ca, &out->ca, &out->ca_len, err)) < 0))
    goto out;
  rc = ANA_ERR_INVALID;
  if (count_certs(out->cert, out->cert_len, &leaf) == 0) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s holds no PEM certificate", p->cert_var,
                  p->cert);
    goto out;
  }
  bio = BIO_new_mem_buf(out->key, (int)out->key_len);
  pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  ERR_clear_error();
  if (!pkey) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "%s: %s holds no PEM private key (or one protected by a passphrase)", p->key_var,
                  p->key);
    goto out;
  }
  if (X509_check_private_key(leaf, pkey) != 1) {
    ERR_clear_error();
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "%s: the key in %s does not match the certificate in %s", p->key_var, p->key,
                  p->cert);
    goto out;
  }
  if (out->ca && count_certs(out->ca, out->ca_len, NULL) == 0) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s holds no PEM certificate", p->ca_var,
                  p->ca);
    goto out;
  }
  serial_hex(leaf, out->serial, sizeof out->serial);
  rc = 0;
out:
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  X509_free(leaf);
  if (rc < 0)
    ana_tls_files_fini(out);
  return rc;
}

void ana_tls_files_fini(struct ana_tls_files *f) {
  if (!f)
    return;
  if (f->key)
    OPENSSL_cleanse(f->key, f->key_len);
  ana_free(f->cert);
  ana_free(f->key);
  ana_free(f->ca);
  memset(f, 0, sizeof *f);
}
