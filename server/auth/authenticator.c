/* The authenticate stage: a table of credential sources tried in order (JWT
 * bearer tokens, then API keys: source_jwt.c, source_api_key.c). While none is
 * configured the server is in protected mode: loopback peers act as the
 * default account with the admin role, any other peer is refused. */
#include "auth_internal.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <stdatomic.h>
#include <string.h>

#define HEALTH_SERVICE "grpc.health.v1.Health"

static char *default_account;
static struct ana_credential_source sources[ANA_AUTH_MAX_SOURCES];
/* Sources are only ever appended, and may be while calls run (API keys
 * register theirs when a store that waited for disk space opens): an entry
 * is written before the count that publishes it (release), and readers take
 * the count first (acquire). */
static atomic_size_t n_sources;
static bool health_open = true;

static const char *const admin_roles[] = {"admin"};

int ana_auth_init(const char *default_account_id) {
  ana_free(default_account);
  default_account = ana_strdup(default_account_id);
  return default_account ? 0 : ANA_ERR_NOMEM;
}

void ana_auth_fini(void) {
  auth_jwt_fini();
  auth_rate_fini();
  ana_free(default_account);
  default_account = NULL;
  n_sources = 0;
  health_open = true;
}

int ana_auth_add_source(const struct ana_credential_source *source) {
  size_t n = atomic_load_explicit(&n_sources, memory_order_relaxed);
  if (n == ANA_AUTH_MAX_SOURCES)
    return ANA_ERR_FULL;
  sources[n] = *source;
  atomic_store_explicit(&n_sources, n + 1, memory_order_release);
  return 0;
}

void auth_set_health_open(bool open) {
  health_open = open;
}

bool ana_auth_protected_mode(void) {
  for (size_t i = 0, n = atomic_load_explicit(&n_sources, memory_order_acquire); i < n; i++)
    if (sources[i].configured(sources[i].ctx))
      return false;
  return true;
}

const char *ana_auth_mode_name(void) {
  return ana_auth_protected_mode() ? "protected-mode" : "required";
}

static int as_default_account(struct ana_arena *arena, struct ana_principal *out,
                              struct ana_error *status, bool admin) {
  const char *account = default_account ? default_account : "default";
  memset(out, 0, sizeof *out);
  out->account_id = ana_arena_strdup(arena, account);
  out->subject = out->account_id;
  out->roles = admin ? admin_roles : NULL;
  out->n_roles = admin ? 1 : 0;
  out->credential = ANA_CREDENTIAL_NONE;
  if (!out->account_id)
    return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  return 0;
}

int auth_authenticate(const struct ana_admission_input *in, struct ana_arena *arena,
                      struct ana_principal *out, struct ana_error *status) {
  /* Probes: gRPC health stays open unless HEALTH_REQUIRE_AUTH (no account
   * data, no role). */
  if (health_open && in->method && strcmp(in->method->service, HEALTH_SERVICE) == 0)
    return as_default_account(arena, out, status, false);
  bool configured = false;
  for (size_t i = 0, n = atomic_load_explicit(&n_sources, memory_order_acquire);
       i < n && !configured; i++)
    configured = sources[i].configured(sources[i].ctx);
  if (!configured) {
    if (in->peer_is_loopback)
      return as_default_account(arena, out, status, true);
    ANA_WARN("auth", "refused %s: protected mode serves only loopback peers",
             in->peer ? in->peer : "?");
    return ana_error_set(status, ANA_STATUS_UNAUTHENTICATED, "%s", ANA_AUTH_PROTECTED_MESSAGE),
           ANA_ERR_INVALID;
  }
  /* One credential per request (RFC 6750 section 2: more than one is an
   * invalid request): with two, which one acts would depend on the order
   * sources are tried, and a proxy checking one could be fooled by the
   * other. */
  size_t n_credentials = 0;
  for (size_t i = 0; i < in->n_metadata; i++)
    if (strcmp(in->metadata[i].key, "authorization") == 0 ||
        strcmp(in->metadata[i].key, "x-api-key") == 0)
      n_credentials++;
  if (n_credentials > 1) {
    ANA_WARN("auth", "refused %s: %zu credentials in one request", in->peer ? in->peer : "?",
             n_credentials);
    return ana_error_set(status, ANA_STATUS_INVALID_ARGUMENT,
                         "send one credential: Authorization or X-Api-Key, not both"),
           ANA_ERR_INVALID;
  }
  for (size_t i = 0, n = atomic_load_explicit(&n_sources, memory_order_acquire); i < n; i++) {
    if (!sources[i].configured(sources[i].ctx))
      continue;
    int rc = sources[i].authenticate(sources[i].ctx, in, arena, out, status);
    if (rc < 0)
      return rc;
    if (rc > 0)
      return 0;
  }
  if (n_credentials) {
    ANA_WARN("auth", "refused %s: credentials of no configured kind", in->peer ? in->peer : "?");
    return ana_error_set(status, ANA_STATUS_UNAUTHENTICATED, "invalid token"), ANA_ERR_INVALID;
  }
  return ana_error_set(status, ANA_STATUS_UNAUTHENTICATED,
                       "credentials required: send Authorization: Bearer <token> or X-Api-Key"),
         ANA_ERR_INVALID;
}

bool ana_auth_peer_is_loopback(const char *peer) {
  if (!peer)
    return false;
  if (strncmp(peer, "ipv4:", 5) == 0)
    peer += 5;
  else if (strncmp(peer, "ipv6:", 5) == 0)
    peer += 5;
  if (strncmp(peer, "127.", 4) == 0)
    return true;
  if (strncmp(peer, "[::1]", 5) == 0 || strcmp(peer, "::1") == 0)
    return true;
  return strncmp(peer, "[::ffff:127.", 12) == 0 || strncmp(peer, "::ffff:127.", 11) == 0;
}
