/* The API-key credential source: X-Api-Key: ana_... (gRPC metadata
 * x-api-key) or Authorization: Bearer ana_..., verified by the key registry;
 * configured while at least one key is not revoked. */
#include "auth_internal.h"

#include "ana_api_keys.h"
#include "ana_jwt.h"
#include "ana_log.h"

#include <stdio.h>
#include <string.h>

#define KEY_HEADER "x-api-key"

static bool keys_configured(void *ctx) {
  return ana_api_keys_active(ctx) > 0;
}

static const struct ana_metadata_entry *metadata_entry(const struct ana_admission_input *in,
                                                       const char *key) {
  for (size_t i = 0; i < in->n_metadata; i++)
    if (strcmp(in->metadata[i].key, key) == 0)
      return &in->metadata[i];
  return NULL;
}

/* The presented key: the X-Api-Key value, or a bearer credential starting
 * with ana_ (a JWT never does: its header is base64url of '{'). NULL when
 * the request carries neither. */
static const char *presented_key(const struct ana_admission_input *in, size_t *len) {
  const struct ana_metadata_entry *e = metadata_entry(in, KEY_HEADER);
  if (e) {
    *len = e->value_len;
    return e->value;
  }
  e = metadata_entry(in, "authorization");
  const char *token = e ? ana_jwt_bearer(e->value, len) : NULL;
  if (!token || *len < ANA_API_KEY_PREFIX_CHARS ||
      memcmp(token, ANA_API_KEY_PREFIX, ANA_API_KEY_PREFIX_CHARS) != 0)
    return NULL;
  return token;
}

static int keys_authenticate(void *ctx, const struct ana_admission_input *in,
                             struct ana_arena *arena, struct ana_principal *out,
                             struct ana_error *status) {
  size_t len = 0;
  const char *key = presented_key(in, &len);
  if (!key)
    return 0;
  struct ana_api_key_principal kp;
  enum ana_api_key_reason why = ANA_API_KEY_OK;
  int rc = ana_api_keys_verify(ctx, key, len, arena, &kp, &why, status);
  if (rc < 0) {
    /* The reply says "invalid API key" whatever the reason; the log (at most
     * ANA_LOG_SITE_LINES_PER_S lines a second) says which. The id part is
     * logged only when well-formed: never the secret. */
    char id[ANA_API_KEY_ID_CHARS + 1] = "";
    if (why != ANA_API_KEY_BAD_PREFIX && why != ANA_API_KEY_BAD_LENGTH &&
        why != ANA_API_KEY_BAD_CHARS)
      ana_api_key_parse(key, len, id);
    ANA_WARN("auth", "refused an API key%s%s from %s: %s", id[0] ? " " : "", id,
             in->peer ? in->peer : "?", ana_api_key_reason_text(why));
    return rc;
  }
  char subject[4 + ANA_API_KEY_ID_CHARS + 1];
  snprintf(subject, sizeof subject, "key:%s", kp.key_id);
  struct ana_account_role *acc = ana_arena_calloc(arena, 1, sizeof *acc);
  const char **roles = ana_arena_calloc(arena, 1, sizeof *roles);
  memset(out, 0, sizeof *out);
  out->subject = ana_arena_strdup(arena, subject);
  if (!acc || !roles || !out->subject)
    return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  roles[0] = kp.role;
  acc->account_id = kp.account_id;
  acc->role = kp.role;
  out->account_id = kp.account_id;
  out->roles = roles;
  out->n_roles = 1;
  /* The key's own rate limit (checked when stored; one that no longer
   * parses is ignored: the account's applies). */
  out->key_rate_limited =
      kp.rate_limit && kp.rate_limit[0] &&
      ana_rate_limit_parse(kp.rate_limit, strlen(kp.rate_limit), &out->key_rate_limit, NULL, 0);
  /* Held as its one account: an X-Account-Id naming another is refused by
   * the account stage (PERMISSION_DENIED) rather than ignored. */
  out->accounts = acc;
  out->n_accounts = 1;
  out->credential = ANA_CREDENTIAL_API_KEY;
  return 1;
}

int ana_auth_add_api_keys(struct ana_api_keys *k) {
  struct ana_credential_source src = {
      .name = "api_key",
      .configured = keys_configured,
      .authenticate = keys_authenticate,
      .ctx = k,
  };
  return ana_auth_add_source(&src);
}
