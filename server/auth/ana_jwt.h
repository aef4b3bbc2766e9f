/* JWT bearer-token verification (RFC 7519, RFC 8725): HS256 with a shared
 * secret, RS256 and ES256 with keys from a JWKS, claims checks and a cache of
 * verified tokens. The admission pipeline calls ana_jwt_verify per request. */
#ifndef ANA_JWT_H
#define ANA_JWT_H

#include "ana_arena.h"
#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults of struct ana_jwt_settings (ana_jwt_settings_init). */
#define ANA_JWT_DEFAULT_LEEWAY_S 60
#define ANA_JWT_DEFAULT_MAX_TOKEN_BYTES 8192
#define ANA_JWT_DEFAULT_CACHE_ENTRIES 10000
#define ANA_JWT_DEFAULT_JWKS_REFRESH_S 60
#define ANA_JWT_DEFAULT_JWKS_FETCH_TIMEOUT_MS 5000
#define ANA_JWT_DEFAULT_JWKS_WAIT_MS 1000
#define ANA_JWT_DEFAULT_JWKS_MAX_BYTES (1024 * 1024)
/* RFC 7518 section 3.2: an HS256 key is at least as long as the hash. */
#define ANA_JWT_MIN_SECRET_BYTES 32
/* Caps on what a token may carry into a principal. */
#define ANA_JWT_MAX_ROLES 32
#define ANA_JWT_MAX_ACCOUNTS 256

/* Called for the verifier's own events (JWKS fetched, fetch failed); level is
 * 0 error, 1 warning, 2 info (the values of enum ana_log_level). May be called
 * from the JWKS thread. Never given a token or a secret. */
typedef void (*ana_jwt_log_fn)(void *ctx, int level, const char *msg);

/* Returns the current time in Unix seconds (tests fix it). */
typedef int64_t (*ana_jwt_clock_fn)(void *ctx);

/* What a verifier is created from. Strings are borrowed for the duration of
 * ana_jwt_verifier_create only (it copies them). NULL or "" means not set. */
struct ana_jwt_settings {
  /* Comma-separated subset of HS256, RS256, ES256 (JWT_ALGORITHMS). NULL:
   * HS256 when a secret is set, RS256 and ES256 when a JWKS is set. */
  const char *algorithms;
  const char *hs256_secret; /* raw bytes, hs256_secret_len of them */
  size_t hs256_secret_len;
  const char *jwks_json;      /* a JWKS document (the contents of JWT_JWKS_FILE) */
  const char *jwks_url;       /* http(s) URL of a JWKS, fetched with libcurl */
  const char *issuer;         /* required "iss" when set */
  const char *audience;       /* required in "aud" when set */
  int64_t leeway_s;           /* clock skew allowed on exp, nbf, iat */
  const char *account_claim;  /* claim naming the one account ("account_id") */
  const char *roles_claim;    /* claim listing roles ("roles") */
  const char *accounts_claim; /* claim {account: role} ("accounts") */
  size_t max_token_bytes;     /* longer tokens are rejected unread */
  size_t cache_entries;       /* verified tokens kept; 0 disables the cache */
  int jwks_refresh_s;         /* at most one JWKS fetch per this many seconds */
  int jwks_fetch_timeout_ms;  /* whole-transfer timeout of one fetch */
  int jwks_wait_ms;           /* how long a caller waits for a fetch it asked for */
  size_t jwks_max_bytes;      /* a larger JWKS response is refused */
  ana_jwt_log_fn log;         /* NULL: no log */
  void *log_ctx;
  ana_jwt_clock_fn clock; /* NULL: time(NULL) */
  void *clock_ctx;
};

/* One account of a principal holding several, with its role there. */
struct ana_jwt_account {
  const char *account_id;
  const char *role;
};

/* Who a verified token says is calling. Strings and arrays live in the arena
 * given to ana_jwt_verify. */
struct ana_jwt_principal {
  const char *subject;    /* "sub", or NULL when the token has none */
  const char *account_id; /* the account claim, or NULL */
  const char *const *roles;
  size_t n_roles;
  const struct ana_jwt_account *accounts; /* the accounts claim, in token order */
  size_t n_accounts;
  int64_t expires_at; /* "exp", Unix seconds */
};

/* Why a token was refused: for the server log and metrics only. The caller's
 * reply says "invalid token" whatever the reason. */
enum ana_jwt_reason {
  ANA_JWT_OK = 0,
  ANA_JWT_TOO_LARGE,       /* over max_token_bytes */
  ANA_JWT_MALFORMED,       /* not three base64url parts of JSON objects */
  ANA_JWT_BAD_HEADER,      /* a forbidden or malformed header member */
  ANA_JWT_ALG_NOT_ALLOWED, /* alg outside the configured list (none always) */
  ANA_JWT_UNKNOWN_KEY,     /* no JWKS key for kid and alg */
  ANA_JWT_BAD_SIGNATURE,
  ANA_JWT_BAD_CLAIMS, /* exp missing, a claim of the wrong type */
  ANA_JWT_EXPIRED,
  ANA_JWT_NOT_YET_VALID, /* nbf or iat in the future */
  ANA_JWT_BAD_ISSUER,
  ANA_JWT_BAD_AUDIENCE,
  ANA_JWT_INTERNAL, /* out of memory, OpenSSL failure */
};

/* The precise reason a token was refused (log only). */
struct ana_jwt_failure {
  enum ana_jwt_reason reason;
  char detail[160]; /* never contains the token or key material */
};

/* Counters since creation, for /metrics and tests. */
struct ana_jwt_stats {
  uint64_t signature_checks; /* signatures computed (cache misses that got that far) */
  uint64_t cache_hits;
  uint64_t accepted;
  uint64_t rejected;
  uint64_t jwks_fetches; /* attempts, successful or not */
  uint64_t jwks_fetch_failures;
  size_t cache_size;
};

struct ana_jwt_verifier;

/* Fills s with the defaults above and the claim names account_id, roles,
 * accounts; no key source. */
void ana_jwt_settings_init(struct ana_jwt_settings *s);

/* The short name of a reason ("expired"); never NULL. */
const char *ana_jwt_reason_name(enum ana_jwt_reason reason);

/* Builds a verifier: checks the settings (algorithm list against the key
 * sources, secret length, JWKS document) and, with jwks_url, starts a thread
 * that fetches the JWKS at once and again (rate-limited) when a token names an
 * unknown kid. Returns NULL with err filled (INVALID_ARGUMENT naming the
 * setting) on bad settings. Does not block on the network. */
struct ana_jwt_verifier *ana_jwt_verifier_create(const struct ana_jwt_settings *s,
                                                 struct ana_error *err);

/* Stops the JWKS thread and frees everything; NULL does nothing. No
 * ana_jwt_verify may be running. */
void ana_jwt_verifier_destroy(struct ana_jwt_verifier *v);

/* Verifies token (len bytes, not necessarily NUL-terminated; borrowed) and
 * fills *out with strings allocated in arena. Returns 0, or ANA_ERR_INVALID
 * with err set to UNAUTHENTICATED "invalid token" (whatever the reason) and
 * why (may be NULL) to the precise reason, or ANA_ERR_NOMEM. Thread-safe. A
 * token seen before is answered from the cache until it expires. With a JWKS
 * URL, an unknown kid may make the caller wait up to jwks_wait_ms for a fetch
 * (at most one per jwks_refresh_s); otherwise it never blocks on the network. */
int ana_jwt_verify(struct ana_jwt_verifier *v, const char *token, size_t len,
                   struct ana_arena *arena, struct ana_jwt_principal *out, struct ana_error *err,
                   struct ana_jwt_failure *why);

/* The token of an "Authorization: Bearer <token>" value (scheme matched in
 * any case, one or more spaces), or NULL when value is not a bearer
 * credential; *len gets its length. Points into value (borrowed). */
const char *ana_jwt_bearer(const char *value, size_t *len);

/* The algorithms in force, e.g. "RS256,ES256" (owned by v). */
const char *ana_jwt_verifier_algorithms(const struct ana_jwt_verifier *v);

void ana_jwt_verifier_stats(struct ana_jwt_verifier *v, struct ana_jwt_stats *out);

#endif
