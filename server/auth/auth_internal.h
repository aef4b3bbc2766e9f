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

#endif
