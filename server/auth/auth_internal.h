/* What the admission stages share inside auth. */
#ifndef ANA_AUTH_INTERNAL_H
#define ANA_AUTH_INTERNAL_H

#include "ana_auth.h"

/* One admission stage: returns 0 to go on, or a negative error with status
 * filled to refuse the call. */
struct admission_stage {
  const char *name;
  int (*run)(const struct ana_admission_input *in, struct ana_arena *arena,
             struct ana_principal *principal, struct ana_error *status);
};

/* The authenticate stage (authenticator.c). */
int auth_authenticate(const struct ana_admission_input *in, struct ana_arena *arena,
                      struct ana_principal *principal, struct ana_error *status);

/* gRPC health is served without credentials (HEALTH_REQUIRE_AUTH false). */
void auth_set_health_open(bool open);

/* The rate_limit stage (rate_stage.c) and its teardown. */
int auth_stage_rate_limit(const struct ana_admission_input *in, struct ana_arena *arena,
                          struct ana_principal *principal, struct ana_error *status);
void auth_rate_fini(void);

/* Destroys the JWT verifier (source_jwt.c); safe when there is none. */
void auth_jwt_fini(void);

#endif
