/* analyticsctl token: mints an HS256 JWT for development (OpenSSL HMAC,
 * base64url), the token analyticsd accepts when JWT_HS256_SECRET is set. */
#include "cli.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECRET_MAX 4096 /* bytes of a secret file */

static const char help[] =
    "usage: analyticsctl token (--secret S | --secret-file F) --account A --role R...\n"
    "                          [--sub S] [--ttl 1h] [--iss I] [--aud A]\n"
    "\n"
    "Mints an HS256 JWT signed with the server's JWT_HS256_SECRET and prints only\n"
    "the token, for development and tests (production tokens come from an identity\n"
    "provider). Claims: sub, account_id, roles (an array: --role may repeat), iat,\n"
    "exp, and iss / aud when given. Contacts no server.\n"
    "\n"
    "  --secret S        the HMAC secret (visible in the process list: prefer\n"
    "                    --secret-file)\n"
    "  --secret-file F   read the secret from F (one trailing newline is dropped)\n"
    "  --account A       the account_id claim\n"
    "  --role R          viewer, analyst, editor, admin, ingest (repeatable)\n"
    "  --sub S           the subject (default \"analyticsctl\")\n"
    "  --ttl D           lifetime: seconds, or a number with s, m, h or d (default 1h)\n"
    "  --iss I, --aud A  issuer and audience, when the server checks them\n"
    "                    (JWT_ISSUER, JWT_AUDIENCE)\n"
    "\n"
    "Example: export ANALYTICS_TOKEN=$(analyticsctl token --secret-file s.key \\\n"
    "           --account acme --role admin)\n";

static const struct cli_option options[] = {
    {"secret", CLI_VALUE}, {"secret-file", CLI_VALUE}, {"account", CLI_VALUE},
    {"role", CLI_LIST},    {"sub", CLI_VALUE},         {"ttl", CLI_VALUE},
    {"iss", CLI_VALUE},    {"aud", CLI_VALUE},         {NULL, 0}};

/* base64url without padding (RFC 7515 section 2); caller frees. */
static char *b64url(const unsigned char *data, size_t len) {
  char *out = malloc(4 * ((len + 2) / 3) + 1);
  if (!out)
    return NULL;
  int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
  while (n > 0 && out[n - 1] == '=')
    n--;
  out[n] = '\0';
  for (char *p = out; *p; p++)
    *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
  return out;
}

/* "3600", "90s", "15m", "1h", "7d" as seconds: 0, or -1. */
static int parse_ttl(const char *s, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  long unit = 1;
  if (end == s || errno || v <= 0)
    return -1;
  if (*end) {
    if (end[1])
      return -1;
    switch (*end) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    default: return -1;
    }
  }
  if (v > 10L * 365 * 86400 / unit)
    return -1;
  *out = v * unit;
  return 0;
}

/* The secret of --secret-file into buf: its length, or -1 after printing
 * why. */
static long read_secret(const char *path, unsigned char *buf, size_t size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "analyticsctl: --secret-file %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t n = fread(buf, 1, size, f);
  bool more = fgetc(f) != EOF;
  fclose(f);
  if (more) {
    fprintf(stderr, "analyticsctl: --secret-file %s: longer than %d bytes\n", path, SECRET_MAX);
    return -1;
  }
  if (n && buf[n - 1] == '\n')
    n--;
  if (n && buf[n - 1] == '\r')
    n--;
  return (long)n;
}

static int run_local(const struct cli_args *a) {
  const char *secret = cli_opt(a, "secret"), *file = cli_opt(a, "secret-file");
  const char *account = cli_opt(a, "account"), *ttl_s = cli_opt(a, "ttl");
  const char *sub = cli_opt(a, "sub"), *iss = cli_opt(a, "iss"), *aud = cli_opt(a, "aud");
  const struct cli_list *roles = cli_list(a, "role");
  unsigned char key[SECRET_MAX], mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  long key_len, ttl = 3600;
  char *header = NULL, *payload = NULL, *h64 = NULL, *p64 = NULL, *s64 = NULL, *input = NULL;
  json_t *claims = NULL, *arr;
  int rc = CLI_EXIT_FAIL;

  if ((rc = cli_no_more(a, 0)) != 0)
    return rc;
  if (!secret == !file)
    return cli_usage(a, "give one of --secret and --secret-file");
  if (!account || !*account)
    return cli_usage(a, "--account is required");
  if (roles->n == 0)
    return cli_usage(a, "--role is required (viewer, analyst, editor, admin, ingest)");
  if (ttl_s && parse_ttl(ttl_s, &ttl) < 0)
    return cli_usage(a,
                     "--ttl takes seconds or a number with s, m, h or d (up to 10 years), "
                     "not \"%s\"",
                     ttl_s);
  if (secret) {
    key_len = (long)strlen(secret);
    if (key_len > SECRET_MAX)
      return cli_usage(a, "--secret is longer than %d bytes", SECRET_MAX);
    memcpy(key, secret, (size_t)key_len);
  } else if ((key_len = read_secret(file, key, sizeof key)) < 0) {
    return CLI_EXIT_FAIL;
  }
  if (key_len == 0)
    return cli_usage(a, "the secret is empty");

  rc = CLI_EXIT_FAIL;
  time_t now = time(NULL);
  claims = json_object();
  arr = json_array();
  for (size_t i = 0; i < roles->n; i++)
    json_array_append_new(arr, json_string(roles->v[i]));
  json_object_set_new(claims, "sub", json_string(sub ? sub : "analyticsctl"));
  json_object_set_new(claims, "account_id", json_string(account));
  json_object_set_new(claims, "roles", arr);
  json_object_set_new(claims, "iat", json_integer((json_int_t)now));
  json_object_set_new(claims, "exp", json_integer((json_int_t)now + ttl));
  if (iss)
    json_object_set_new(claims, "iss", json_string(iss));
  if (aud)
    json_object_set_new(claims, "aud", json_string(aud));
  payload = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
  header = strdup("{\"alg\":\"HS256\",\"typ\":\"JWT\"}");
  if (!payload || !header)
    goto nomem;
  h64 = b64url((const unsigned char *)header, strlen(header));
  p64 = b64url((const unsigned char *)payload, strlen(payload));
  if (!h64 || !p64)
    goto nomem;
  size_t n = strlen(h64) + 1 + strlen(p64) + 1;
  input = malloc(n);
  if (!input)
    goto nomem;
  snprintf(input, n, "%s.%s", h64, p64);
  if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)input, strlen(input), mac,
            &mac_len)) {
    fputs("analyticsctl: HMAC-SHA256 failed\n", stderr);
    goto out;
  }
  if (!(s64 = b64url(mac, mac_len)))
    goto nomem;
  printf("%s.%s\n", input, s64);
  rc = 0;
  goto out;
nomem:
  fputs("analyticsctl: out of memory\n", stderr);
out:
  OPENSSL_cleanse(key, sizeof key);
  json_decref(claims);
  free(header);
  free(payload);
  free(h64);
  free(p64);
  free(s64);
  free(input);
  return rc;
}

const struct cli_command cli_cmd_token = {
    .name = "token",
    .summary = "mint an HS256 JWT for development (no server needed)",
    .help = help,
    .options = options,
    .run_local = run_local,
};
