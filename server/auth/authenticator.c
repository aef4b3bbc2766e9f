/* Default authenticator: every caller acts as the configured default account
 * with the admin role. Token verification replaces the body of
 * ana_auth_authenticate; transports and handlers do not change. */
#include "ana_auth.h"

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

int ana_auth_authenticate(const struct ana_metadata_entry *md, size_t n_md, const char *peer,
                          struct ana_arena *arena, struct ana_principal *out,
                          struct ana_error *err) {
  (void)md;
  (void)n_md;
  (void)peer;
  const char *account = default_account ? default_account : "default";
  out->account_id = ana_arena_strdup(arena, account);
  out->subject = out->account_id;
  out->roles = admin_roles;
  out->n_roles = 1;
  if (!out->account_id)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  return 0;
}

/* Roles and the permissions they grant. "admin" grants everything; the
 * others grant their listed permissions. */
struct role_grants {
  const char *role;
  const char *const *permissions;
};

static const char *const reader_permissions[] = {"events:read", "metrics:read",  "reports:read",
                                                 "alerts:read", "realtime:read", NULL};
static const char *const writer_permissions[] = {"events:write", NULL};

static const struct role_grants grants[] = {
    {"reader", reader_permissions},
    {"ingest", writer_permissions},
};

bool ana_auth_permits(const struct ana_principal *principal, const char *permission) {
  if (!permission || !permission[0])
    return true;
  for (size_t r = 0; r < principal->n_roles; r++) {
    const char *role = principal->roles[r];
    if (strcmp(role, "admin") == 0)
      return true;
    for (size_t g = 0; g < sizeof grants / sizeof grants[0]; g++) {
      if (strcmp(grants[g].role, role) != 0)
        continue;
      for (const char *const *p = grants[g].permissions; *p; p++)
        if (strcmp(*p, permission) == 0)
          return true;
    }
  }
  return false;
}
