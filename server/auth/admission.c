/* The admission pipeline: every call, whatever its transport, runs these stages in order. */
#include "auth_internal.h"

#include <stdio.h>
#include <string.h>

#define ACCOUNT_HEADER "x-account-id"

static const char *metadata_value(const struct ana_admission_input *in, const char *key) {
  for (size_t i = 0; i < in->n_metadata; i++)
    if (strcmp(in->metadata[i].key, key) == 0)
      return in->metadata[i].value;
  return NULL;
}

/* A principal holding several accounts acts on the one the request names
 * (X-Account-Id), which must be one of them; one held account needs no name.
 * A principal with a single account (accounts empty) keeps it. */
static int stage_account(const struct ana_admission_input *in, struct ana_arena *arena,
                         struct ana_principal *p, struct ana_error *status) {
  if (p->n_accounts == 0)
    return 0;
  const char *wanted = metadata_value(in, ACCOUNT_HEADER);
  const struct ana_account_role *pick = NULL;
  if (wanted && wanted[0]) {
    for (size_t i = 0; i < p->n_accounts && !pick; i++)
      if (strcmp(p->accounts[i].account_id, wanted) == 0)
        pick = &p->accounts[i];
    if (!pick)
      return ana_error_set(status, ANA_STATUS_PERMISSION_DENIED,
                           "account %s is not one of this principal's accounts", wanted);
  } else if (p->n_accounts == 1) {
    pick = &p->accounts[0];
  } else {
    char list[256];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < p->n_accounts && len + 1 < sizeof list; i++)
      len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                              p->accounts[i].account_id);
    return ana_error_set(status, ANA_STATUS_INVALID_ARGUMENT,
                         "this principal holds several accounts (%s): name one in " ACCOUNT_HEADER,
                         list);
  }
  const char **roles = ana_arena_alloc(arena, sizeof *roles);
  if (!roles)
    return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  roles[0] = pick->role;
  p->account_id = pick->account_id;
  p->roles = roles;
  p->n_roles = 1;
  return 0;
}

static int stage_permission(const struct ana_admission_input *in, struct ana_arena *arena,
                            struct ana_principal *p, struct ana_error *status) {
  (void)arena;
  const struct ana_method *m = in->method;
  if (!m || ana_auth_permits(p, m->permission))
    return 0;
  return ana_error_set(status, ANA_STATUS_PERMISSION_DENIED, "permission %s is required for %s",
                       m->permission, m->path);
}

/* Methods marked audited are recorded when the call finishes, once its
 * outcome is known: the call runtime's finish hook (audit_service.c) queues
 * the record for the audit writer. Admission never waits for the audit log,
 * and a call is never failed for it: a full audit queue drops the record,
 * counts it (ana_audit_dropped_total) and logs an error. */
static int stage_audit(const struct ana_admission_input *in, struct ana_arena *arena,
                       struct ana_principal *p, struct ana_error *status) {
  (void)in, (void)arena, (void)p, (void)status;
  return 0;
}

static const struct admission_stage stages[] = {
    {"authenticate", auth_authenticate},
    {"account", stage_account},
    {"permission", stage_permission},
    {"rate_limit", auth_stage_rate_limit},
    {"audit", stage_audit},
};
#define N_STAGES (sizeof stages / sizeof stages[0])

int ana_admission_run(const struct ana_admission_input *in, struct ana_arena *arena,
                      struct ana_principal *out, struct ana_error *status) {
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < N_STAGES; i++) {
    int rc = stages[i].run(in, arena, out, status);
    if (rc < 0)
      return rc;
  }
  return 0;
}

const char *const *ana_admission_stage_names(size_t *n_out) {
  static const char *const names[] = {"authenticate", "account", "permission", "rate_limit",
                                      "audit"};
  _Static_assert(sizeof names / sizeof names[0] == N_STAGES, "one name per stage");
  *n_out = N_STAGES;
  return names;
}
