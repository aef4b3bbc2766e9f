/* Mints JWTs and JWKS documents with OpenSSL, for tests, fuzz targets and
 * benchmarks: any header and payload, signed HS256, RS256 or ES256 (or not at
 * all), so that tests can forge exactly the token an attacker would send. */
#ifndef JWT_MINT_H
#define JWT_MINT_H

#include <openssl/evp.h>
#include <stddef.h>

/* base64url without padding of data; caller frees. NULL when out of memory. */
char *jwt_mint_b64url(const void *data, size_t len);

/* header_json and payload_json are used verbatim (any bytes, even invalid
 * JSON). alg picks the signature: "HS256" (secret, secret_len), "RS256" or
 * "ES256" (key, a private key), "none" (an empty signature part). Returns
 * "<b64 header>.<b64 payload>.<b64 signature>"; caller frees. NULL on error. */
char *jwt_mint_sign(const char *header_json, const char *payload_json, const char *alg,
                    const void *secret, size_t secret_len, EVP_PKEY *key);

/* A fresh RSA (bits) or EC P-256 key pair; caller frees with EVP_PKEY_free. */
EVP_PKEY *jwt_mint_rsa_key(unsigned bits);
EVP_PKEY *jwt_mint_ec_key(void);

/* The public JWK of key as a JSON object text ({"kty":"RSA","kid":...,"n","e"}
 * or {"kty":"EC","crv":"P-256","x","y"}); kid and alg may be NULL (left out).
 * Caller frees. */
char *jwt_mint_jwk(EVP_PKEY *key, const char *kid, const char *alg);

/* {"keys":[jwk0, jwk1, ...]} of n JWK texts; caller frees. */
char *jwt_mint_jwks(const char *const *jwks, size_t n);

/* The PEM SubjectPublicKeyInfo of key (the text an algorithm-confusion
 * attacker uses as an HMAC secret); caller frees. */
char *jwt_mint_public_pem(EVP_PKEY *key);

#endif
