/* The authenticate stage: until a credential source is configured every
 * caller acts as the configured default account with the admin role. Token
 * and API-key verification plug in here; the other stages do not change. */
#include "auth_internal.h"

#include "ana_alloc.h"

#include <string.h>

static char *default_account;

static const char *const admin_roles[] = {"admin"};

int ana_auth_init(const char *default_account_id) {
  ana_auth_fini();
  default_account = ana_strdup(default_account_id);
  return default_account ? 0 : ANA_ERR_NOMEM;
}

void ana_auth_fini(void) {
  ana_free(default_account);
  default_account = NULL;
}

int auth_authenticate(const struct ana_admission_input *in, struct ana_arena *arena,
                      struct ana_principal *out, struct ana_error *status) {
  (void)in;
  const char *account = default_account ? default_account : "default";
  memset(out, 0, sizeof *out);
  out->account_id = ana_arena_strdup(arena, account);
  out->subject = out->account_id;
  out->roles = admin_roles;
  out->n_roles = 1;
  out->credential = ANA_CREDENTIAL_NONE;
  if (!out->account_id)
    return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  return 0;
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
