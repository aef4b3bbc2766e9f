/* Mints JWTs and JWKS documents with OpenSSL (see jwt_mint.h). */
#include "jwt_mint.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *jwt_mint_b64url(const void *data, size_t len) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const unsigned char *p = data;
  char *out = malloc(len * 4 / 3 + 4);
  if (!out)
    return NULL;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    acc = (acc << 8) | p[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out[o++] = alphabet[(acc >> bits) & 63];
    }
    acc &= (1u << bits) - 1;
  }
  if (bits > 0)
    out[o++] = alphabet[(acc << (6 - bits)) & 63];
  out[o] = '\0';
  return out;
}

/* Signs input; the raw signature into sig (at least 512 bytes), its length
 * into *sig_len. Returns 0 or -1. */
static int sign(const char *alg, const void *secret, size_t secret_len, EVP_PKEY *key,
                const char *input, unsigned char *sig, size_t *sig_len) {
  if (strcmp(alg, "none") == 0) {
    *sig_len = 0;
    return 0;
  }
  if (strcmp(alg, "HS256") == 0) {
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)input, strlen(input),
              sig, &n))
      return -1;
    *sig_len = n;
    return 0;
  }
  if (!key)
    return -1;
  unsigned char der[512];
  size_t der_len = sizeof der;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
           EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)input, strlen(input)) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok)
    return -1;
  if (strcmp(alg, "RS256") == 0) {
    memcpy(sig, der, der_len);
    *sig_len = der_len;
    return 0;
  }
  /* ES256: DER ECDSA-Sig-Value to r||s, 32 bytes each. */
  const unsigned char *q = der;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
  if (!es)
    return -1;
  const BIGNUM *r, *s;
  ECDSA_SIG_get0(es, &r, &s);
  ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;
  ECDSA_SIG_free(es);
  *sig_len = 64;
  return ok ? 0 : -1;
}

char *jwt_mint_sign(const char *header_json, const char *payload_json, const char *alg,
                    const void *secret, size_t secret_len, EVP_PKEY *key) {
  char *h = jwt_mint_b64url(header_json, strlen(header_json));
  char *p = jwt_mint_b64url(payload_json, strlen(payload_json));
  char *input = NULL, *s = NULL, *token = NULL;
  unsigned char sig[512];
  size_t sig_len = 0;
  if (!h || !p || !(input = malloc(strlen(h) + strlen(p) + 2)))
    goto out;
  sprintf(input, "%s.%s", h, p);
  if (sign(alg, secret, secret_len, key, input, sig, &sig_len) < 0 ||
      !(s = jwt_mint_b64url(sig, sig_len)) || !(token = malloc(strlen(input) + strlen(s) + 2)))
    goto out;
  sprintf(token, "%s.%s", input, s);
out:
  free(h);
  free(p);
  free(input);
  free(s);
  return token;
}

EVP_PKEY *jwt_mint_rsa_key(unsigned bits) {
  return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
}

EVP_PKEY *jwt_mint_ec_key(void) {
  return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* A BIGNUM parameter of key, base64url of its big-endian bytes (padded to
 * pad bytes when pad > 0). */
static char *bn_param(EVP_PKEY *key, const char *name, int pad) {
  BIGNUM *bn = NULL;
  if (!EVP_PKEY_get_bn_param(key, name, &bn))
    return NULL;
  int n = pad > 0 ? pad : BN_num_bytes(bn);
  unsigned char *buf = malloc((size_t)n);
  char *out = NULL;
  if (buf && BN_bn2binpad(bn, buf, n) == n)
    out = jwt_mint_b64url(buf, (size_t)n);
  free(buf);
  BN_free(bn);
  return out;
}

char *jwt_mint_jwk(EVP_PKEY *key, const char *kid, const char *alg) {
  char *a = NULL, *b = NULL, *out = NULL;
  char extra[256] = "";
  if (kid)
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ",\"kid\":\"%s\"", kid);
  if (alg)
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ",\"alg\":\"%s\"", alg);
  bool rsa = EVP_PKEY_is_a(key, "RSA");
  a = bn_param(key, rsa ? OSSL_PKEY_PARAM_RSA_N : OSSL_PKEY_PARAM_EC_PUB_X, rsa ? 0 : 32);
  b = bn_param(key, rsa ? OSSL_PKEY_PARAM_RSA_E : OSSL_PKEY_PARAM_EC_PUB_Y, rsa ? 0 : 32);
  if (!a || !b || !(out = malloc(strlen(a) + strlen(b) + strlen(extra) + 64)))
    goto done;
  if (rsa)
    sprintf(out, "{\"kty\":\"RSA\",\"use\":\"sig\"%s,\"n\":\"%s\",\"e\":\"%s\"}", extra, a, b);
  else
    sprintf(out, "{\"kty\":\"EC\",\"crv\":\"P-256\"%s,\"x\":\"%s\",\"y\":\"%s\"}", extra, a, b);
done:
  free(a);
  free(b);
  return out;
}

char *jwt_mint_jwks(const char *const *jwks, size_t n) {
  size_t total = 16;
  for (size_t i = 0; i < n; i++)
    total += strlen(jwks[i]) + 1;
  char *out = malloc(total);
  if (!out)
    return NULL;
  strcpy(out, "{\"keys\":[");
  for (size_t i = 0; i < n; i++) {
    if (i)
      strcat(out, ",");
    strcat(out, jwks[i]);
  }
  strcat(out, "]}");
  return out;
}

char *jwt_mint_public_pem(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *out = NULL;
  if (bio && PEM_write_bio_PUBKEY(bio, key)) {
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    if (n > 0 && (out = malloc((size_t)n + 1))) {
      memcpy(out, data, (size_t)n);
      out[n] = '\0';
    }
  }
  BIO_free(bio);
  return out;
}
