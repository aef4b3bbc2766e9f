/* The JWT credential source: bearer tokens from the authorization metadata
 * (gRPC), header, WebSocket subprotocol or query token (the bridge maps the
 * last two to it), verified by ana_jwt with the JWT_* settings. */
#include "auth_internal.h"

#include "ana_alloc.h"
#include "ana_file.h"
#include "ana_jwt.h"
#include "ana_log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Largest secret or JWKS file read. */
#define AUTH_FILE_MAX (1024 * 1024)
/* API keys' prefix: such bearer credentials belong to the keys source. */
#define API_KEY_PREFIX "ana_"

static struct ana_jwt_verifier *verifier;

static void jwt_log(void *ctx, int level, const char *msg) {
  (void)ctx;
  ANA_LOG((enum ana_log_level)level, "auth", "%s", msg);
}

static int read_file(const char *var, const char *path, char **out, size_t *len,
                     struct ana_error *err) {
  return ana_file_read_whole(var, path, AUTH_FILE_MAX, out, len, err);
}

static bool jwt_configured(void *ctx) {
  (void)ctx;
  return verifier != NULL;
}

static const char *metadata_value(const struct ana_admission_input *in, const char *key) {
  for (size_t i = 0; i < in->n_metadata; i++)
    if (strcmp(in->metadata[i].key, key) == 0)
      return in->metadata[i].value;
  return NULL;
}

static int refuse(const struct ana_admission_input *in, const char *why, struct ana_error *status) {
  ANA_WARN("auth", "refused a token from %s: %s", in->peer ? in->peer : "?", why);
  return ana_error_set(status, ANA_STATUS_UNAUTHENTICATED, "invalid token"), ANA_ERR_INVALID;
}

static int jwt_authenticate(void *ctx, const struct ana_admission_input *in,
                            struct ana_arena *arena, struct ana_principal *out,
                            struct ana_error *status) {
  (void)ctx;
  const char *value = metadata_value(in, "authorization");
  size_t len = 0;
  const char *token = value ? ana_jwt_bearer(value, &len) : NULL;
  if (!token || (len >= strlen(API_KEY_PREFIX) &&
                 strncmp(token, API_KEY_PREFIX, strlen(API_KEY_PREFIX)) == 0))
    return 0;
  struct ana_jwt_principal jp;
  struct ana_jwt_failure why = {0};
  int rc = ana_jwt_verify(verifier, token, len, arena, &jp, status, &why);
  if (rc == ANA_ERR_NOMEM)
    return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), rc;
  if (rc < 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "%s (%s)", ana_jwt_reason_name(why.reason), why.detail);
    return refuse(in, msg, status);
  }
  if (!jp.account_id && jp.n_accounts == 0)
    return refuse(in, "no account claim", status);
  memset(out, 0, sizeof *out);
  out->subject = jp.subject ? jp.subject : jp.account_id;
  out->account_id = jp.account_id;
  out->roles = jp.roles;
  out->n_roles = jp.n_roles;
  out->credential = ANA_CREDENTIAL_JWT;
  if (jp.n_accounts) {
    struct ana_account_role *acc = ana_arena_calloc(arena, jp.n_accounts, sizeof *acc);
    if (!acc)
      return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
    for (size_t i = 0; i < jp.n_accounts; i++) {
      acc[i].account_id = jp.accounts[i].account_id;
      acc[i].role = jp.accounts[i].role;
    }
    out->accounts = acc;
    out->n_accounts = jp.n_accounts;
  }
  return 1;
}

/* The secret from exactly one of JWT_HS256_SECRET and its *_FILE twin (one
 * trailing newline of the file dropped); *secret NULL when neither is set.
 * *owned is what the caller frees. */
static int load_secret(const struct ana_auth_settings *s, const char **secret, size_t *len,
                       char **owned, struct ana_error *err) {
  *secret = NULL;
  *owned = NULL;
  *len = 0;
  if (s->jwt_hs256_secret && s->jwt_hs256_secret_file)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "JWT_HS256_SECRET and JWT_HS256_SECRET_FILE are both set: set one"),
           ANA_ERR_INVALID;
  if (s->jwt_hs256_secret) {
    *secret = s->jwt_hs256_secret;
    *len = strlen(s->jwt_hs256_secret);
    return 0;
  }
  if (!s->jwt_hs256_secret_file)
    return 0;
  int rc = read_file("JWT_HS256_SECRET_FILE", s->jwt_hs256_secret_file, owned, len, err);
  if (rc < 0)
    return rc;
  if (*len && (*owned)[*len - 1] == '\n')
    (*owned)[--*len] = '\0';
  if (*len && (*owned)[*len - 1] == '\r')
    (*owned)[--*len] = '\0';
  *secret = *owned;
  return 0;
}

int ana_auth_configure(const struct ana_auth_settings *s, struct ana_error *err) {
  auth_set_health_open(!s->health_require_auth);
  const char *secret;
  size_t secret_len;
  char *secret_owned = NULL, *jwks = NULL;
  size_t jwks_len = 0;
  int rc = load_secret(s, &secret, &secret_len, &secret_owned, err);
  if (rc == 0 && s->jwt_jwks_file)
    rc = read_file("JWT_JWKS_FILE", s->jwt_jwks_file, &jwks, &jwks_len, err);
  if (rc < 0)
    goto out;
  if (!secret && !jwks && !s->jwt_jwks_url) {
    if (s->jwt_algorithms || s->jwt_issuer || s->jwt_audience)
      ANA_WARN("auth", "JWT_ALGORITHMS, JWT_ISSUER or JWT_AUDIENCE is set but no key source "
                       "(JWT_HS256_SECRET, JWT_JWKS_FILE, JWT_JWKS_URL): tokens are not accepted");
    goto out;
  }
  struct ana_jwt_settings js;
  ana_jwt_settings_init(&js);
  js.algorithms = s->jwt_algorithms;
  js.hs256_secret = secret;
  js.hs256_secret_len = secret_len;
  js.jwks_json = jwks;
  js.jwks_url = s->jwt_jwks_url;
  js.issuer = s->jwt_issuer;
  js.audience = s->jwt_audience;
  js.leeway_s = s->jwt_leeway_s;
  if (s->jwt_account_claim)
    js.account_claim = s->jwt_account_claim;
  if (s->jwt_roles_claim)
    js.roles_claim = s->jwt_roles_claim;
  if (s->jwt_accounts_claim)
    js.accounts_claim = s->jwt_accounts_claim;
  js.log = jwt_log;
  verifier = ana_jwt_verifier_create(&js, err);
  if (!verifier) {
    rc = err->code == ANA_STATUS_RESOURCE_EXHAUSTED ? ANA_ERR_NOMEM : ANA_ERR_INVALID;
    goto out;
  }
  static const struct ana_credential_source jwt_source = {
      .name = "jwt", .configured = jwt_configured, .authenticate = jwt_authenticate};
  rc = ana_auth_add_source(&jwt_source);
  if (rc < 0)
    ana_error_set(err, ANA_STATUS_INTERNAL, "too many credential sources");
  else
    ANA_INFO("auth", "bearer tokens accepted (%s)", ana_jwt_verifier_algorithms(verifier));
out:
  if (secret_owned) {
    memset(secret_owned, 0, secret_len);
    ana_free(secret_owned);
  }
  ana_free(jwks);
  return rc;
}

void auth_jwt_fini(void) {
  ana_jwt_verifier_destroy(verifier);
  verifier = NULL;
}

void ana_auth_jwt_stats(struct ana_jwt_stats *out) {
  memset(out, 0, sizeof *out);
  if (verifier)
    ana_jwt_verifier_stats(verifier, out);
}
