/* Admission: who is calling and whether they may. Every transport's call
 * goes through one pipeline of stages, driven by the method's policy from the
 * generated method table: authenticate -> account -> permission -> rate limit
 * -> audit. auth owns the principal; it knows nothing of the call runtime
 * (which sits above it and calls ana_admission_run). */
#ifndef ANA_AUTH_H
#define ANA_AUTH_H

#include "ana_arena.h"
#include "ana_auth_config.h"
#include "ana_error.h"
#include "ana_methods.h"
#include "ana_rate_limit.h"

#include <stdbool.h>
#include <stddef.h>

/* One request metadata entry (gRPC metadata or HTTP header); keys lower-case. */
struct ana_metadata_entry {
  const char *key;
  const char *value; /* NUL-terminated; binary values may hold NULs */
  size_t value_len;
};

/* How the principal proved who it is. */
enum ana_credential_kind {
  ANA_CREDENTIAL_NONE,    /* no credentials: the default account (loopback mode) */
  ANA_CREDENTIAL_JWT,     /* a verified bearer token */
  ANA_CREDENTIAL_API_KEY, /* an API key (one account, one role) */
};

/* One account a principal holds, and its role there. */
struct ana_account_role {
  const char *account_id;
  const char *role;
};

/* Who is calling, as admission established it. Strings live as long as the
 * arena admission was given (the call's). account_id and roles are those of
 * the account this request acts on; accounts lists every account the
 * principal holds (empty when it holds just account_id). */
struct ana_principal {
  const char *subject;    /* user or API key id */
  const char *account_id; /* tenant: every data access is scoped by it */
  const char *const *roles;
  size_t n_roles;
  const struct ana_account_role *accounts;
  size_t n_accounts;
  enum ana_credential_kind credential;
  /* An API key's own rate limit (its rateLimit), when key_rate_limited. */
  struct ana_rate_limit key_rate_limit;
  bool key_rate_limited;
  /* Set by the rate_limit stage: the budget this principal draws on (NULL
   * rate_key: not limited), and the outcome of the call's charge, which
   * transports turn into RateLimit-* headers or RetryInfo. */
  const char *rate_key;
  struct ana_rate_limit rate_limit;
  struct ana_rate_decision rate;
  bool rate_charged;
};

/* What admission looks at: the request, as any transport carries it. All
 * borrowed for the duration of ana_admission_run. */
struct ana_admission_input {
  const struct ana_metadata_entry *metadata;
  size_t n_metadata;
  const char *peer;                /* transport's peer text, for logs */
  bool peer_is_loopback;           /* judged from the socket, never from headers */
  const struct ana_method *method; /* its permission, audited and rate_cost */
};

/* Sets the account used when a request carries no credentials (borrowed
 * string copied). Call once at start-up. Returns 0 or ANA_ERR_NOMEM. */
int ana_auth_init(const char *default_account_id);
/* Forgets the default account and every credential source (destroying the
 * JWT verifier). No admission may be running. */
void ana_auth_fini(void);

/* A source of credentials, tried in the order sources were added. Sources
 * are added at start-up, before any transport serves. */
struct ana_credential_source {
  const char *name; /* "jwt", "api_key": for logs */
  /* Whether the source can accept anything now (a key exists, a verifier
   * is set up); while no source is, the server is in protected mode.
   * Called per request: must be cheap and thread-safe. */
  bool (*configured)(void *ctx);
  /* Looks for this source's credential in the request. Returns 1 when it
   * found one and accepted it (*out filled, strings in arena), 0 when the
   * request carries none of its kind (the next source is tried), or a
   * negative error with status filled (UNAUTHENTICATED "invalid token":
   * the precise reason goes to the log only). Thread-safe. */
  int (*authenticate)(void *ctx, const struct ana_admission_input *in, struct ana_arena *arena,
                      struct ana_principal *out, struct ana_error *status);
  void *ctx;
};

#define ANA_AUTH_MAX_SOURCES 4

/* Adds a credential source (copied; ctx borrowed until ana_auth_fini).
 * Returns 0, or ANA_ERR_FULL beyond ANA_AUTH_MAX_SOURCES. API keys plug in
 * here (ana_auth_add_api_keys, ana_api_keys.h). A request carrying more than
 * one credential (Authorization and X-Api-Key) is INVALID_ARGUMENT once any
 * source is configured. */
int ana_auth_add_source(const struct ana_credential_source *source);

struct ana_api_keys;
/* The API-key credential source (source_api_key.c; the registry in
 * ana_api_keys.h). Adds API keys to the authenticate stage: X-Api-Key: ana_... (gRPC
 * metadata x-api-key) or Authorization: Bearer ana_...; the principal is the
 * key's account with the key's role, subject "key:<id>". The source counts
 * as configured while ana_api_keys_active(k) > 0: the first key ends
 * protected mode. k is borrowed until ana_auth_fini. Returns 0 or
 * ANA_ERR_FULL. */
int ana_auth_add_api_keys(struct ana_api_keys *k);

/* Reads the JWT settings of s (secrets from their *_FILE twins, the JWKS
 * file) and, when a key source is set, adds the JWT credential source.
 * Also takes the open-endpoint switches (HEALTH_REQUIRE_AUTH). Returns 0, or
 * ANA_ERR_INVALID with err naming the variable, or ANA_ERR_NOMEM. */
int ana_auth_configure(const struct ana_auth_settings *s, struct ana_error *err);

/* Protected mode: no credential source is configured, so only loopback
 * peers are served (as the default account, admin). */
bool ana_auth_protected_mode(void);

/* "protected-mode" or "required", for /health and the start-up line. */
const char *ana_auth_mode_name(void);

/* What a non-loopback peer is told in protected mode. */
#define ANA_AUTH_PROTECTED_MESSAGE                                                                 \
  "authentication is not configured, so this server serves only loopback clients: set "            \
  "JWT_HS256_SECRET (or JWT_JWKS_FILE / JWT_JWKS_URL) or create an API key (analyticsd keys "      \
  "create), then send Authorization: Bearer <token> or X-Api-Key"

/* The JWT verifier's counters (zeros when none is configured). */
struct ana_jwt_stats;
void ana_auth_jwt_stats(struct ana_jwt_stats *out);

/* Runs every admission stage in order; the first that refuses ends it.
 * Fills *out (strings in arena). Returns 0, or a negative error with status
 * filled: UNAUTHENTICATED (credentials missing or not acceptable),
 * INVALID_ARGUMENT (several accounts held and none chosen),
 * PERMISSION_DENIED (account not held, or the role lacks the method's
 * permission), RESOURCE_EXHAUSTED. */
int ana_admission_run(const struct ana_admission_input *in, struct ana_arena *arena,
                      struct ana_principal *out, struct ana_error *status);

/* The rate-limit settings of s (RATE_LIMIT_*), parsed and installed with an
 * in-process limiter. Returns 0, or ANA_ERR_INVALID with err naming the
 * variable, or ANA_ERR_NOMEM. */
int ana_auth_rate_configure(const struct ana_auth_settings *s, struct ana_error *err);
/* Whether any rate limit is configured. */
bool ana_auth_rate_enabled(void);

/* Charges cost more units to the principal's budget (a batch's events,
 * beyond the call's base cost), all or nothing; p->rate is updated. Returns
 * 0 when allowed (or not limited), or ANA_ERR_FULL with status filled
 * (RESOURCE_EXHAUSTED naming the retry delay). Thread-safe. */
int ana_auth_rate_charge(struct ana_principal *p, int64_t cost, struct ana_error *status);

/* Seconds to tell a client to wait (Retry-After), rounded up, >= 1. */
int64_t ana_auth_rate_retry_after_s(const struct ana_rate_decision *d);

/* The stages' names in order ("authenticate", "account", "permission",
 * "rate_limit", "audit"); n_out receives the count. For tests and logs. */
const char *const *ana_admission_stage_names(size_t *n_out);

/* Whether peer text names a loopback address: "ipv4:127.0.0.1:5000",
 * "ipv6:[::1]:5000", "127.0.0.1", "::1" (transports that know the socket
 * address should judge it themselves). */
bool ana_auth_peer_is_loopback(const char *peer);

/* Whether the principal's roles grant permission ("events:write"; "" is
 * always granted). */
bool ana_auth_permits(const struct ana_principal *principal, const char *permission);

/* Whether role (one of viewer, reader, analyst, editor, admin, ingest)
 * grants permission; an unknown role grants nothing. */
bool ana_auth_role_permits(const char *role, const char *permission);

/* Whether role is one of viewer, reader, analyst, editor, admin, ingest. */
bool ana_auth_role_known(const char *role);

#endif
