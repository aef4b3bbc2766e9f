/* The authenticator seam: every call's principal is established here, by
 * whichever transport carries it. Until token authentication is configured
 * it yields the configured default account. */
#ifndef ANA_AUTH_H
#define ANA_AUTH_H

#include "ana_arena.h"
#include "ana_call.h"
#include "ana_error.h"

#include <stdbool.h>

/* Sets the account used when a request carries no credentials (borrowed
 * string copied). Call once at start-up. Returns 0 or ANA_ERR_NOMEM. */
int ana_auth_init(const char *default_account_id);
void ana_auth_fini(void);

/* Establishes who is calling from the request metadata; strings of *out are
 * allocated in arena. Returns 0, or a negative error with err filled
 * (UNAUTHENTICATED) when credentials are present but not acceptable. */
int ana_auth_authenticate(const struct ana_metadata_entry *md, size_t n_md, const char *peer,
                          struct ana_arena *arena, struct ana_principal *out,
                          struct ana_error *err);

/* Whether the principal's roles grant permission ("events:write"; "" is
 * always granted). */
bool ana_auth_permits(const struct ana_principal *principal, const char *permission);

#endif
