/* Internals of the JWT verifier shared by jwt.c, jwks.c and token_cache.c. */
#ifndef ANA_JWT_INTERNAL_H
#define ANA_JWT_INTERNAL_H

#include "ana_jwt.h"

#include <openssl/evp.h>
#include <stdatomic.h>

enum jwt_alg {
  JWT_ALG_HS256 = 1 << 0,
  JWT_ALG_RS256 = 1 << 1,
  JWT_ALG_ES256 = 1 << 2,
};

/* Strict base64url without padding (RFC 7515 section 2): decodes in[0..len)
 * into out (at least len * 3 / 4 + 1 bytes); rejects '=', characters outside
 * the alphabet, a length of 4n+1 and non-zero unused bits. Returns the
 * decoded length or -1. */
long jwt_b64url_decode(const char *in, size_t len, unsigned char *out);

/* ---- JWKS: a set of public keys (jwks.c) ---- */

struct jwks_key {
  char *kid;        /* NULL when the key has none */
  enum jwt_alg alg; /* the one algorithm it verifies */
  EVP_PKEY *pkey;
};

/* An immutable key set, shared by reference between the JWKS thread and
 * verifying threads. */
struct jwks_set {
  atomic_int refs;
  size_t n;
  struct jwks_key *keys;
};

/* Parses a JWKS document: RSA keys (2048 bits or more) and EC P-256 keys
 * with use "sig" or none; other kty/use/alg are skipped. A supported key
 * with bad members, or one carrying private members, fails the whole
 * document with why naming it. Returns the set (one reference) or NULL. */
struct jwks_set *jwks_set_parse(const char *json, size_t len, char *why, size_t why_cap);
void jwks_set_release(struct jwks_set *set);
struct jwks_set *jwks_set_ref(struct jwks_set *set);

/* The key for a token's kid (NULL: the token names none, then only a set
 * with exactly one key for alg matches) and alg, or NULL. */
EVP_PKEY *jwks_set_find(const struct jwks_set *set, const char *kid, enum jwt_alg alg);

/* A JWKS fetched from a URL by a background thread. */
struct jwks_source;

/* Starts the thread, which fetches at once. NULL when out of memory. */
struct jwks_source *jwks_source_create(const struct ana_jwt_settings *s);
void jwks_source_destroy(struct jwks_source *src);

/* The latest fetched set (a reference the caller releases), or NULL. */
struct jwks_set *jwks_source_current(struct jwks_source *src);

/* Asks for a fetch unless one ran within the refresh interval, and waits up
 * to the configured wait for a fetch in progress or asked for to finish.
 * Returns true when a new set may be there (the caller looks again). */
bool jwks_source_refresh(struct jwks_source *src);

void jwks_source_counts(struct jwks_source *src, uint64_t *fetches, uint64_t *failures);

/* ---- Cache of verified tokens (token_cache.c) ---- */

#define JWT_CACHE_KEY_BYTES 32 /* SHA-256 of the token */

struct token_cache;

/* capacity 0 gives a cache that keeps nothing. NULL when out of memory. */
struct token_cache *token_cache_create(size_t capacity);
void token_cache_destroy(struct token_cache *c);

/* Copies the principal cached under key into arena/out and returns 0; drops
 * the entry and returns ANA_ERR_NOT_FOUND once now is past its expiry plus
 * leeway; ANA_ERR_NOT_FOUND on a miss; ANA_ERR_NOMEM. Thread-safe. */
int token_cache_get(struct token_cache *c, const unsigned char *key, int64_t now, int64_t leeway,
                    struct ana_arena *arena, struct ana_jwt_principal *out);

/* Stores a copy of p under key, evicting the least recently used entry of
 * its shard when full. Failure to allocate just leaves it out. Thread-safe. */
void token_cache_put(struct token_cache *c, const unsigned char *key,
                     const struct ana_jwt_principal *p);

size_t token_cache_size(struct token_cache *c);

/* Deep copy of a principal into arena; 0 or ANA_ERR_NOMEM. */
int jwt_principal_copy(struct ana_arena *arena, const struct ana_jwt_principal *src,
                       struct ana_jwt_principal *dst);

#endif
