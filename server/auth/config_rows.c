/* Configuration rows: authentication settings. Adding a variable = a row here and a member in
 * struct ana_auth_settings. */
#include "ana_auth_config.h"
#include "ana_rate_limit.h"

#include <ctype.h>
#include <string.h>

#define ACCOUNT_ID_MAX 128

static bool valid_account_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ACCOUNT_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && !strchr("_.:-", c))
      return false;
  }
  return true;
}

/* JWT_ALGORITHMS: a comma-separated list of HS256, RS256, ES256. */
static bool valid_algorithm(const char *s, size_t n) {
  return n == 5 && (strncmp(s, "HS256", 5) == 0 || strncmp(s, "RS256", 5) == 0 ||
                    strncmp(s, "ES256", 5) == 0);
}

static bool valid_algorithms(const char *s) {
  return ana_config_valid_list(s, valid_algorithm);
}

static bool valid_claim(const char *s) {
  return strlen(s) <= 64 && valid_account_id(s);
}

static bool valid_rate_limit(const char *s) {
  struct ana_rate_limit lim;
  char why[128];
  return ana_rate_limit_parse(s, strlen(s), &lim, why, sizeof why);
}

static bool valid_default_rate_limit(const char *s) {
  return strcmp(s, "auto") == 0 || valid_rate_limit(s);
}

static bool valid_rate_limit_list(const char *s) {
  char why[192];
  return ana_rate_limit_parse_list(s, NULL, NULL, why, sizeof why);
}

#define RATE_LIMIT_EXPECT                                                                          \
  "off, or <rate>/<s|m|h> with an optional \" burst <n>\" (1 to 1000000000), as in 1000/s burst "  \
  "2000"
#define RATE_LIMIT_LIST_EXPECT "a comma-separated list of name=LIMIT, each LIMIT " RATE_LIMIT_EXPECT

#define ROW(member) ANA_CONFIG_FIELD(struct ana_auth_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "DEFAULT_ACCOUNT_ID",
     .type = ANA_CONFIG_STRING,
     .def = "default",
     .help = "Account that loopback clients act as (admin) in protected mode, while no "
             "authentication is configured.",
     .check = valid_account_id,
     .expect = "an account id (1 to 128 characters from A-Z a-z 0-9 _ . : -)",
     ROW(default_account_id)},
    {.name = "JWT_HS256_SECRET",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Shared secret (at least 32 bytes) verifying HS256 bearer tokens; setting it ends "
             "protected mode: every caller must then authenticate.",
     ROW(jwt_hs256_secret)},
    {.name = "JWT_HS256_SECRET_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "File holding JWT_HS256_SECRET (one trailing newline ignored); set one of the two.",
     ROW(jwt_hs256_secret_file)},
    {.name = "JWT_JWKS_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "JWKS document (RSA and P-256 public keys) verifying RS256 and ES256 tokens.",
     ROW(jwt_jwks_file)},
    {.name = "JWT_JWKS_URL",
     .type = ANA_CONFIG_URL,
     .def = "",
     .schemes = "http https",
     .help = "URL of a JWKS, fetched at start and again (at most once a minute) when a token "
             "names an unknown kid.",
     ROW(jwt_jwks_url)},
    {.name = "JWT_ALGORITHMS",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Accepted token algorithms, comma-separated among HS256, RS256, ES256 (unset: "
             "HS256 with a secret, RS256,ES256 with a JWKS); none is never accepted.",
     .check = valid_algorithms,
     .expect = "a comma-separated list of HS256, RS256, ES256",
     ROW(jwt_algorithms)},
    {.name = "JWT_ISSUER",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Required iss claim of tokens (unset: not checked).",
     ROW(jwt_issuer)},
    {.name = "JWT_AUDIENCE",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Required aud claim of tokens (unset: not checked).",
     ROW(jwt_audience)},
    {.name = "JWT_LEEWAY",
     .type = ANA_CONFIG_INT,
     .def = "60",
     .min = 0,
     .max = 3600,
     .help = "Clock skew allowed on exp, nbf and iat, in seconds.",
     ROW(jwt_leeway_s)},
    {.name = "JWT_ACCOUNT_CLAIM",
     .type = ANA_CONFIG_STRING,
     .def = "account_id",
     .help = "Claim naming the account a token acts on.",
     .check = valid_claim,
     .expect = "a claim name (1 to 64 characters from A-Z a-z 0-9 _ . : -)",
     ROW(jwt_account_claim)},
    {.name = "JWT_ROLES_CLAIM",
     .type = ANA_CONFIG_STRING,
     .def = "roles",
     .help = "Claim listing the token's roles (viewer, analyst, editor, admin, ingest).",
     .check = valid_claim,
     .expect = "a claim name (1 to 64 characters from A-Z a-z 0-9 _ . : -)",
     ROW(jwt_roles_claim)},
    {.name = "JWT_ACCOUNTS_CLAIM",
     .type = ANA_CONFIG_STRING,
     .def = "accounts",
     .help = "Claim {account: role} of a principal holding several accounts; each request "
             "names one in X-Account-Id.",
     .check = valid_claim,
     .expect = "a claim name (1 to 64 characters from A-Z a-z 0-9 _ . : -)",
     ROW(jwt_accounts_claim)},
    {.name = "JWT_ALLOW_QUERY_TOKEN",
     .type = ANA_CONFIG_BOOL,
     .def = "false",
     .help = "Accept a token in the query parameter access_token (never logged); for clients "
             "that can set neither a header nor a WebSocket subprotocol.",
     ROW(jwt_allow_query_token)},
    {.name = "METRICS_REQUIRE_AUTH",
     .type = ANA_CONFIG_BOOL,
     .def = "false",
     .help = "Whether GET /metrics needs credentials (false: open to scrapers).",
     ROW(metrics_require_auth)},
    {.name = "HEALTH_REQUIRE_AUTH",
     .type = ANA_CONFIG_BOOL,
     .def = "false",
     .help = "Whether GET /health and the gRPC health service need credentials (false: open to "
             "probes).",
     ROW(health_require_auth)},
    {.name = "AUDIT_RETENTION_DAYS",
     .type = ANA_CONFIG_INT,
     .def = "365",
     .min = 0,
     .max = 36500,
     .help = "Days audit records are kept; older ones are deleted hourly, the last deleted "
             "one kept as the chain's anchor (0: kept forever).",
     ROW(audit_retention_days)},
    {.name = "AUDIT_SIGN_INTERVAL",
     .type = ANA_CONFIG_DURATION,
     .def = "60s",
     .min = 100,
     .max = 86400000,
     .help = "How often the audit chain head (sequence, hash) is HMAC-signed into the log as "
             "an audit_head line; also at shutdown.",
     ROW(audit_sign_interval_ms)},
    {.name = "AUDIT_QUEUE_MAX",
     .type = ANA_CONFIG_INT,
     .def = "10000",
     .min = 1,
     .max = 1000000,
     .help = "Audit records waiting for the audit writer; beyond it records are dropped "
             "(ana_audit_dropped_total), never the calls.",
     ROW(audit_queue_max)},
    {.name = "ENCRYPTION_KEY_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "Master key file (16 to 4096 bytes, raw or text such as 64 hex digits from "
             "`openssl rand -hex 32`, used as bytes; trailing white space ignored): the keys "
             "that wrap each account's data keys, sign audit heads and make blind indexes are "
             "derived from it (HKDF-SHA256). Unset: DATA_DIR/master.key (mode 0600), generated "
             "if absent, with a warning.",
     ROW(encryption_key_file)},
    {.name = "RATE_LIMIT_DEFAULT",
     .type = ANA_CONFIG_STRING,
     .def = "auto",
     .help = "Rate limit of every account (GCRA, charged by each method's cost and per event of "
             "a batch or stream): \"1000/s burst 2000\" lets 2000 through at once and 1000 a "
             "second after; off: no limit; auto: off in protected mode (no credential source: "
             "loopback only), " ANA_AUTH_RATE_AUTO " once one is configured.",
     .check = valid_default_rate_limit,
     .expect = "auto, " RATE_LIMIT_EXPECT,
     ROW(rate_limit_default)},
    {.name = "RATE_LIMIT_ROLES",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Limits per role, replacing RATE_LIMIT_DEFAULT for principals holding the role (the "
             "most generous of their roles applies), as in \"ingest=5000/s burst 10000, "
             "viewer=20/s\".",
     .check = valid_rate_limit_list,
     .expect = RATE_LIMIT_LIST_EXPECT,
     ROW(rate_limit_roles)},
    {.name = "RATE_LIMIT_ACCOUNTS",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Limits per account, before roles and the default, as in \"acme=100/s burst 500\".",
     .check = valid_rate_limit_list,
     .expect = RATE_LIMIT_LIST_EXPECT,
     ROW(rate_limit_accounts)},
    {.name = "RATE_LIMIT_KEYS",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Limits per API key id, before the account's: such a key has a budget of its own "
             "instead of drawing on its account's, as in \"k_3f9a=10/s\".",
     .check = valid_rate_limit_list,
     .expect = RATE_LIMIT_LIST_EXPECT,
     ROW(rate_limit_keys)},
    {.name = "RATE_LIMIT_MAX_ENTRIES",
     .type = ANA_CONFIG_INT,
     .def = "100000",
     .min = 64,
     .max = 100000000,
     .help = "Budgets (accounts and keys) the rate limiter keeps in memory; beyond it idle ones "
             "(whose budget is whole again) are forgotten first.",
     ROW(rate_limit_max_entries)},
};

const struct ana_config_table ana_auth_config_table = ANA_CONFIG_TABLE("auth", rows);
