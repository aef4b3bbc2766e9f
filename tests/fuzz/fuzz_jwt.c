/* Fuzzes JWT verification with a fixed HS256 secret, a fixed JWKS (one
 * RS256 and one ES256 key) and a fixed clock. An input starting with 'S' is
 * "S<header>\0<payload>": both are signed with the secret, so that claims
 * parsing is reached; any other input is the token itself. A rejection must
 * say nothing but "invalid token"; an accepted token must be accepted again
 * (from the cache) with the same principal. Nothing may crash or leak. */
#include "ana_jwt.h"
#include "jwt_mint.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      __builtin_trap();                                                                            \
  } while (0)

#define SECRET "fuzz-secret-fuzz-secret-fuzz-secret!"

static const char jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":\"fuzz-rsa\",\"alg\":\"RS256\",\"n\":"
    "\"rUDNOLeKM3pG9-ywHTOaECn3aL4CWKbalir0cUDB8eTpYkAEN_ZJCwigVuk3hgVq-wdKsCKn6CJRnOdKJ489Z8ge7"
    "_m_pfEsJSHgLwXjMg4RsmDDWRqhV1Hf4_PzLP_8LY9mkBtIC_e3PaKZQPJjoyIfxBuuKjj50AO-SoUFrKTWGW4q3ov"
    "hud3xuBtoScsiOz3ZQnxf4Fj0xhVXJWXWZiYyro6gAF8fEE9t97OfihEmNHYwnLuEoA98NEVU0KNkY3Cdn8MVai9BV"
    "n3y5Ycm2oLgTl7ldNOauHbNN_PGVOCUtFfRzxYund0ukEBUuH-agy3hsbOHvML_WzwufvmtgQ\",\"e\":\"AQAB\""
    "},{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"fuzz-ec\",\"alg\":\"ES256\",\"x\":\"oHvIP8Qd"
    "no81D45xBququqBmd0tlpv0Tt4f_6Jx-_JI\",\"y\":\"nyyjHaKbQMpN5UbW5G4CjRtqmw38oNQlBHNkH3BdzBw\"}]"
    "}";

static int64_t fixed_clock(void *ctx) {
  (void)ctx;
  return 1700000000;
}

static struct ana_jwt_verifier *verifier(void) {
  static struct ana_jwt_verifier *v;
  if (!v) {
    struct ana_jwt_settings s;
    ana_jwt_settings_init(&s);
    s.algorithms = "HS256,RS256,ES256";
    s.hs256_secret = SECRET;
    s.hs256_secret_len = strlen(SECRET);
    s.jwks_json = jwks;
    s.audience = "analytics";
    s.cache_entries = 64; /* small, so that eviction runs too */
    s.clock = fixed_clock;
    struct ana_error err;
    v = ana_jwt_verifier_create(&s, &err);
    CHECK(v != NULL);
  }
  return v;
}

static bool same_string(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void verify(const char *token, size_t len) {
  struct ana_jwt_verifier *v = verifier();
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  struct ana_jwt_principal p, q;
  struct ana_error err = {0};
  struct ana_jwt_failure why;
  int rc = ana_jwt_verify(v, token, len, &arena, &p, &err, &why);
  CHECK(rc == 0 || rc == ANA_ERR_INVALID);
  if (rc < 0) {
    CHECK(why.reason != ANA_JWT_OK);
    CHECK(err.code == ANA_STATUS_UNAUTHENTICATED);
    CHECK(strcmp(err.message, "invalid token") == 0);
  } else {
    CHECK(p.n_roles <= ANA_JWT_MAX_ROLES && p.n_accounts <= ANA_JWT_MAX_ACCOUNTS);
    CHECK(p.expires_at + ANA_JWT_DEFAULT_LEEWAY_S >= 1700000000);
    CHECK(ana_jwt_verify(v, token, len, &arena, &q, &err, &why) == 0);
    CHECK(same_string(p.subject, q.subject) && same_string(p.account_id, q.account_id));
    CHECK(p.n_roles == q.n_roles && p.n_accounts == q.n_accounts);
    CHECK(p.expires_at == q.expires_at);
    for (size_t i = 0; i < p.n_roles; i++)
      CHECK(strcmp(p.roles[i], q.roles[i]) == 0);
    for (size_t i = 0; i < p.n_accounts; i++)
      CHECK(strcmp(p.accounts[i].account_id, q.accounts[i].account_id) == 0 &&
            strcmp(p.accounts[i].role, q.accounts[i].role) == 0);
  }
  ana_arena_fini(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16384)
    return 0;
  if (size > 0 && data[0] == 'S') {
    char *buf = malloc(size + 1);
    if (!buf)
      return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    size_t header_len = strlen(buf); /* up to the first NUL, or all of it */
    const char *payload = header_len < size - 1 ? buf + header_len + 1 : "";
    char *token = jwt_mint_sign(buf, payload, "HS256", SECRET, strlen(SECRET), NULL);
    if (token)
      verify(token, strlen(token));
    free(token);
    free(buf);
    return 0;
  }
  verify((const char *)data, size);
  return 0;
}
