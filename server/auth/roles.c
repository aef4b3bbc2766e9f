/* Roles and the permissions they grant (the permissions are those the
 * methods declare in their (analytics.v1.policy) option). */
#include "ana_auth.h"

#include <string.h>

/* Permissions only admin holds even though they end in ":read". */
static bool admin_only(const char *permission) {
  return strcmp(permission, "audit:read") == 0 || strcmp(permission, "pii:read") == 0 ||
         strcmp(permission, "keys:admin") == 0;
}

static bool is_read(const char *permission) {
  size_t n = strlen(permission);
  return n > 5 && strcmp(permission + n - 5, ":read") == 0 && !admin_only(permission);
}

static bool in_list(const char *const *list, const char *permission) {
  for (; *list; list++)
    if (strcmp(*list, permission) == 0)
      return true;
  return false;
}

static const char *const analyst_writes[] = {"metrics:write", "reports:write", NULL};
static const char *const editor_writes[] = {"alerts:write", "channels:write", "templates:write",
                                            NULL};
static const char *const ingest_writes[] = {"events:write", NULL};

/* The role ladder: each grants what the one below it does, plus its own. */
enum role_level { ROLE_NONE, ROLE_VIEWER, ROLE_ANALYST, ROLE_EDITOR, ROLE_ADMIN };

static enum role_level level_of(const char *role) {
  if (strcmp(role, "viewer") == 0 || strcmp(role, "reader") == 0)
    return ROLE_VIEWER;
  if (strcmp(role, "analyst") == 0)
    return ROLE_ANALYST;
  if (strcmp(role, "editor") == 0)
    return ROLE_EDITOR;
  if (strcmp(role, "admin") == 0)
    return ROLE_ADMIN;
  return ROLE_NONE;
}

bool ana_auth_role_permits(const char *role, const char *permission) {
  if (!permission || !permission[0])
    return true;
  if (!role)
    return false;
  if (strcmp(role, "ingest") == 0)
    return in_list(ingest_writes, permission);
  enum role_level level = level_of(role);
  if (level >= ROLE_ADMIN)
    return true;
  if (level >= ROLE_VIEWER && is_read(permission))
    return true;
  if (level >= ROLE_ANALYST && in_list(analyst_writes, permission))
    return true;
  return level >= ROLE_EDITOR && in_list(editor_writes, permission);
}

bool ana_auth_role_known(const char *role) {
  return role && (strcmp(role, "ingest") == 0 || level_of(role) != ROLE_NONE);
}

bool ana_auth_permits(const struct ana_principal *principal, const char *permission) {
  if (!permission || !permission[0])
    return true;
  for (size_t r = 0; r < principal->n_roles; r++)
    if (ana_auth_role_permits(principal->roles[r], permission))
      return true;
  return false;
}
