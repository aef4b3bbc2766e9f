/* Authentication settings: the struct its configuration rows fill. */
#ifndef ANA_AUTH_CONFIG_H
#define ANA_AUTH_CONFIG_H

#include "ana_config_table.h"

#include <stdbool.h>

/* Filled by ana_auth_config_table (config_rows.c); strings owned by the struct
 * (NULL when unset). */
/* RATE_LIMIT_DEFAULT=auto (the default) once a credential source is
 * configured: per account, about half of what one node ingests, so that no
 * account takes a whole server; a burst of 20 full batches. Off in protected
 * mode (loopback only). */
#define ANA_AUTH_RATE_AUTO "10000/s burst 20000"

struct ana_auth_settings {
  char *default_account_id;
  char *jwt_hs256_secret;      /* JWT_HS256_SECRET */
  char *jwt_hs256_secret_file; /* JWT_HS256_SECRET_FILE: the secret read from a file */
  char *jwt_jwks_file;         /* JWT_JWKS_FILE */
  char *jwt_jwks_url;          /* JWT_JWKS_URL */
  char *jwt_algorithms;        /* JWT_ALGORITHMS: NULL = from the key sources */
  char *jwt_issuer;            /* JWT_ISSUER */
  char *jwt_audience;          /* JWT_AUDIENCE */
  int jwt_leeway_s;            /* JWT_LEEWAY, seconds */
  char *jwt_account_claim;     /* JWT_ACCOUNT_CLAIM */
  char *jwt_roles_claim;       /* JWT_ROLES_CLAIM */
  char *jwt_accounts_claim;    /* JWT_ACCOUNTS_CLAIM */
  bool jwt_allow_query_token;  /* JWT_ALLOW_QUERY_TOKEN: ?access_token= accepted */
  bool metrics_require_auth;   /* METRICS_REQUIRE_AUTH: /metrics needs credentials */
  bool health_require_auth;    /* HEALTH_REQUIRE_AUTH: /health and gRPC health need them */
  int audit_retention_days;    /* AUDIT_RETENTION_DAYS: 0 keeps every record */
  int audit_sign_interval_ms;  /* AUDIT_SIGN_INTERVAL */
  int audit_queue_max;         /* AUDIT_QUEUE_MAX */
  char *encryption_key_file;   /* ENCRYPTION_KEY_FILE: the master key ("": generated) */
  char *rate_limit_default;    /* RATE_LIMIT_DEFAULT: "1000/s burst 2000", "off" or "auto" */
  char *rate_limit_roles;      /* RATE_LIMIT_ROLES: "role=LIMIT,..." */
  char *rate_limit_accounts;   /* RATE_LIMIT_ACCOUNTS: "account=LIMIT,..." */
  char *rate_limit_keys;       /* RATE_LIMIT_KEYS: "keyid=LIMIT,..." */
  int rate_limit_max_entries;  /* RATE_LIMIT_MAX_ENTRIES: budgets kept in memory */
};

extern const struct ana_config_table ana_auth_config_table;

#endif
