/* Unit tests for JWT verification: valid HS256/RS256/ES256 tokens, the
 * attacks of RFC 8725 (alg none, algorithm confusion, a key in the header,
 * stripped signatures), claims and leeway edges, the cache, the JWKS from a
 * document and from a URL served over HTTP by the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_jwt.h"
#include "jwt_mint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NOW 1700000000LL
#define SECRET "0123456789abcdef0123456789abcdef-secret"
#define ISSUER "https://issuer.test"
#define AUDIENCE "analytics"

static EVP_PKEY *rsa, *rsa_other, *ec;
static char *jwks; /* rsa as kid r1, ec as kid e1 */
static int64_t clock_now = NOW;

static int64_t test_clock(void *ctx) {
  (void)ctx;
  return clock_now;
}

static void base_settings(struct ana_jwt_settings *s) {
  ana_jwt_settings_init(s);
  s->algorithms = "HS256,RS256,ES256";
  s->hs256_secret = SECRET;
  s->hs256_secret_len = strlen(SECRET);
  s->jwks_json = jwks;
  s->issuer = ISSUER;
  s->audience = AUDIENCE;
  s->clock = test_clock;
}

static struct ana_jwt_verifier *make_verifier(void) {
  struct ana_jwt_settings s;
  base_settings(&s);
  struct ana_error err = {0};
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(&s, &err);
  if (!v)
    fail_msg("create: %s", err.message);
  return v;
}

static int setup(void **state) {
  (void)state;
  rsa = jwt_mint_rsa_key(2048);
  rsa_other = jwt_mint_rsa_key(2048);
  ec = jwt_mint_ec_key();
  char *k1 = jwt_mint_jwk(rsa, "r1", "RS256");
  char *k2 = jwt_mint_jwk(ec, "e1", NULL);
  const char *keys[] = {k1, k2};
  jwks = jwt_mint_jwks(keys, 2);
  free(k1);
  free(k2);
  return rsa && rsa_other && ec && jwks ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(rsa_other);
  EVP_PKEY_free(ec);
  free(jwks);
  return 0;
}

static int reset_clock(void **state) {
  (void)state;
  clock_now = NOW;
  return 0;
}

/* Standard claims valid at NOW, with extra members appended. */
static char *claims(const char *extra) {
  char *out = malloc(512 + strlen(extra));
  sprintf(out,
          "{\"sub\":\"user-1\",\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE
          "\",\"iat\":%lld,\"exp\":%lld%s%s}",
          NOW - 10, NOW + 3600, extra[0] ? "," : "", extra);
  return out;
}

static char *mint(const char *header, const char *payload, const char *alg, EVP_PKEY *key) {
  char *t = jwt_mint_sign(header, payload, alg, SECRET, strlen(SECRET), key);
  assert_non_null(t);
  return t;
}

static char *mint_std(const char *alg, const char *extra) {
  char header[128];
  EVP_PKEY *key = strcmp(alg, "RS256") == 0 ? rsa : strcmp(alg, "ES256") == 0 ? ec : NULL;
  const char *kid = key == rsa ? "r1" : "e1";
  if (key)
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
  else
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
  char *c = claims(extra);
  char *t = mint(header, c, alg, key);
  free(c);
  return t;
}

/* Asserts v refuses token for reason, with nothing but "invalid token" for
 * the caller. */
static void expect_reject_n(struct ana_jwt_verifier *v, const char *token, size_t len,
                            enum ana_jwt_reason reason) {
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  struct ana_jwt_principal p;
  struct ana_error err = {0};
  struct ana_jwt_failure why;
  int rc = ana_jwt_verify(v, token, len, &arena, &p, &err, &why);
  if (rc != ANA_ERR_INVALID || why.reason != reason)
    fail_msg("expected %s, got rc %d reason %s (%s)", ana_jwt_reason_name(reason), rc,
             ana_jwt_reason_name(why.reason), why.detail);
  assert_int_equal(err.code, ANA_STATUS_UNAUTHENTICATED);
  assert_string_equal(err.message, "invalid token");
  ana_arena_fini(&arena);
}

static void expect_reject(struct ana_jwt_verifier *v, const char *token,
                          enum ana_jwt_reason reason) {
  expect_reject_n(v, token, strlen(token), reason);
}

static void expect_accept(struct ana_jwt_verifier *v, const char *token, struct ana_arena *arena,
                          struct ana_jwt_principal *p) {
  struct ana_error err = {0};
  struct ana_jwt_failure why = {0};
  int rc = ana_jwt_verify(v, token, strlen(token), arena, p, &err, &why);
  if (rc != 0)
    fail_msg("rejected: %s (%s)", ana_jwt_reason_name(why.reason), why.detail);
}

static void accept_only(struct ana_jwt_verifier *v, const char *token) {
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  struct ana_jwt_principal p;
  expect_accept(v, token, &arena, &p);
  ana_arena_fini(&arena);
}

static void test_hs256_valid_principal(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *t = mint_std("HS256", "\"account_id\":\"acme\",\"roles\":[\"viewer\",\"analyst\"],"
                              "\"accounts\":{\"acme\":\"admin\",\"beta\":\"viewer\"}");
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  struct ana_jwt_principal p;
  expect_accept(v, t, &arena, &p);
  assert_string_equal(p.subject, "user-1");
  assert_string_equal(p.account_id, "acme");
  assert_int_equal(p.n_roles, 2);
  assert_string_equal(p.roles[0], "viewer");
  assert_string_equal(p.roles[1], "analyst");
  assert_int_equal(p.n_accounts, 2);
  assert_string_equal(p.accounts[0].account_id, "acme");
  assert_string_equal(p.accounts[0].role, "admin");
  assert_string_equal(p.accounts[1].account_id, "beta");
  assert_int_equal(p.expires_at, NOW + 3600);
  /* The cached answer is the same principal. */
  struct ana_jwt_principal q;
  expect_accept(v, t, &arena, &q);
  assert_string_equal(q.account_id, "acme");
  assert_int_equal(q.n_roles, 2);
  assert_string_equal(q.roles[1], "analyst");
  assert_int_equal(q.n_accounts, 2);
  assert_string_equal(q.accounts[1].role, "viewer");
  ana_arena_fini(&arena);
  free(t);
  ana_jwt_verifier_destroy(v);
}

static void test_rs256_and_es256_valid(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *r = mint_std("RS256", "\"account_id\":\"acme\",\"roles\":\"viewer\"");
  char *e = mint_std("ES256", "\"account_id\":\"acme\"");
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  struct ana_jwt_principal p;
  expect_accept(v, r, &arena, &p);
  assert_int_equal(p.n_roles, 1);
  assert_string_equal(p.roles[0], "viewer");
  expect_accept(v, e, &arena, &p);
  assert_string_equal(p.account_id, "acme");
  assert_int_equal(p.n_roles, 0);
  ana_arena_fini(&arena);
  free(r);
  free(e);
  ana_jwt_verifier_destroy(v);
}

static void test_es256_invalid_signature(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *e = mint_std("ES256", "");
  /* Flip a bit of r (the first signature character after the second dot). */
  char *sig = strrchr(e, '.') + 1;
  sig[0] = sig[0] == 'A' ? 'B' : 'A';
  expect_reject(v, e, ANA_JWT_BAD_SIGNATURE);
  /* A DER signature (what OpenSSL produces) is not the JWS form. */
  char *c = claims("");
  char *h = jwt_mint_b64url("{\"alg\":\"ES256\",\"kid\":\"e1\"}", 26);
  char *p = jwt_mint_b64url(c, strlen(c));
  char input[1024];
  snprintf(input, sizeof input, "%s.%s", h, p);
  unsigned char der[128];
  size_t der_len = sizeof der;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, ec), 1);
  assert_int_equal(EVP_DigestSign(ctx, der, &der_len, (unsigned char *)input, strlen(input)), 1);
  EVP_MD_CTX_free(ctx);
  char *s = jwt_mint_b64url(der, der_len);
  char token[2048];
  snprintf(token, sizeof token, "%s.%s", input, s);
  expect_reject(v, token, ANA_JWT_BAD_SIGNATURE);
  /* Signed by a key that is not the kid's. */
  EVP_PKEY *other = jwt_mint_ec_key();
  char *forged = mint("{\"alg\":\"ES256\",\"kid\":\"e1\"}", c, "ES256", other);
  expect_reject(v, forged, ANA_JWT_BAD_SIGNATURE);
  EVP_PKEY_free(other);
  free(forged);
  free(s);
  free(h);
  free(p);
  free(c);
  free(e);
  ana_jwt_verifier_destroy(v);
}

static void test_alg_none_refused(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *c = claims("\"account_id\":\"acme\"");
  const char *headers[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}",
                           "{\"alg\":\"none\",\"typ\":\"JWT\"}"};
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
    char *t = mint(headers[i], c, "none", NULL);
    /* "h.p." as an unsecured JWT is sent: refused for its alg before anything. */
    expect_reject(v, t, ANA_JWT_ALG_NOT_ALLOWED);
    /* With a signature part added, alg none is still refused. */
    char *signed_t = malloc(strlen(t) + 8);
    sprintf(signed_t, "%sAAAA", t);
    expect_reject(v, signed_t, ANA_JWT_ALG_NOT_ALLOWED);
    free(signed_t);
    free(t);
  }
  /* "none" cannot even be configured. */
  struct ana_jwt_settings s;
  base_settings(&s);
  s.algorithms = "HS256,none";
  struct ana_error err = {0};
  assert_null(ana_jwt_verifier_create(&s, &err));
  assert_non_null(strstr(err.message, "none"));
  free(c);
  ana_jwt_verifier_destroy(v);
}

static void test_algorithm_confusion_refused(void **state) {
  (void)state;
  /* HS256 signed with the RS256 public key (PEM) as the HMAC secret. */
  char *pem = jwt_mint_public_pem(rsa);
  char *c = claims("\"account_id\":\"acme\"");
  char *t = jwt_mint_sign("{\"alg\":\"HS256\",\"kid\":\"r1\"}", c, "HS256", pem, strlen(pem), NULL);
  /* HS256 allowed: its key is the configured secret, never a JWKS key. */
  struct ana_jwt_verifier *v = make_verifier();
  expect_reject(v, t, ANA_JWT_BAD_SIGNATURE);
  ana_jwt_verifier_destroy(v);
  /* Only a JWKS configured: HS256 is not in the default list. */
  struct ana_jwt_settings s;
  base_settings(&s);
  s.algorithms = NULL;
  s.hs256_secret = NULL;
  s.hs256_secret_len = 0;
  struct ana_error err = {0};
  v = ana_jwt_verifier_create(&s, &err);
  assert_non_null(v);
  assert_string_equal(ana_jwt_verifier_algorithms(v), "RS256,ES256");
  expect_reject(v, t, ANA_JWT_ALG_NOT_ALLOWED);
  /* And the other way: an RS256 header on an HMAC. */
  char *t2 =
      jwt_mint_sign("{\"alg\":\"RS256\",\"kid\":\"r1\"}", c, "HS256", pem, strlen(pem), NULL);
  expect_reject(v, t2, ANA_JWT_BAD_SIGNATURE);
  ana_jwt_verifier_destroy(v);
  free(t2);
  free(t);
  free(c);
  free(pem);
}

static void test_key_in_header_refused(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  EVP_PKEY *attacker = jwt_mint_rsa_key(2048);
  char *jwk = jwt_mint_jwk(attacker, "r1", NULL);
  char *c = claims("\"account_id\":\"acme\"");
  char header[4096];
  const char *members[] = {"\"jwk\":%s", "\"jku\":\"https://evil.test/jwks\"",
                           "\"x5u\":\"https://evil.test/cert\"", "\"x5c\":[\"MIIB\"]",
                           "\"crit\":[\"exp\"]"};
  for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
    char member[2048];
    snprintf(member, sizeof member, members[i], jwk);
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"r1\",%s}", member);
    char *t = mint(header, c, "RS256", attacker);
    expect_reject(v, t, ANA_JWT_BAD_HEADER);
    free(t);
    /* Refused before any signature work, even when signed with the real key. */
    t = mint(header, c, "RS256", rsa);
    expect_reject(v, t, ANA_JWT_BAD_HEADER);
    free(t);
  }
  struct ana_jwt_stats st;
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.signature_checks, 0);
  EVP_PKEY_free(attacker);
  free(jwk);
  free(c);
  ana_jwt_verifier_destroy(v);
}

static void test_unknown_kid_refused(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *c = claims("");
  char *t = mint("{\"alg\":\"RS256\",\"kid\":\"r9\"}", c, "RS256", rsa_other);
  expect_reject(v, t, ANA_JWT_UNKNOWN_KEY);
  free(t);
  /* A known kid signed by another key. */
  t = mint("{\"alg\":\"RS256\",\"kid\":\"r1\"}", c, "RS256", rsa_other);
  expect_reject(v, t, ANA_JWT_BAD_SIGNATURE);
  free(t);
  /* kid of an EC key on an RS256 token: kty must match alg. */
  t = mint("{\"alg\":\"RS256\",\"kid\":\"e1\"}", c, "RS256", rsa);
  expect_reject(v, t, ANA_JWT_UNKNOWN_KEY);
  free(t);
  /* No kid: the one RS256 key of the set is used. */
  t = mint("{\"alg\":\"RS256\"}", c, "RS256", rsa);
  accept_only(v, t);
  free(t);
  /* A non-string kid. */
  t = mint("{\"alg\":\"RS256\",\"kid\":7}", c, "RS256", rsa);
  expect_reject(v, t, ANA_JWT_BAD_HEADER);
  free(t);
  free(c);
  ana_jwt_verifier_destroy(v);
}

static void test_stripped_and_malformed(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *t = mint_std("RS256", "");
  char *stripped = strdup(t);
  strrchr(stripped, '.')[1] = '\0'; /* "h.p." */
  expect_reject(v, stripped, ANA_JWT_BAD_SIGNATURE);
  strrchr(stripped, '.')[0] = '\0'; /* "h.p" */
  expect_reject(v, stripped, ANA_JWT_MALFORMED);
  free(stripped);
  /* A truncated signature. */
  char *cut = strdup(t);
  cut[strlen(cut) - 6] = '\0'; /* 342 -> 336 characters: 252 whole bytes */
  expect_reject(v, cut, ANA_JWT_BAD_SIGNATURE);
  free(cut);
  expect_reject(v, "", ANA_JWT_MALFORMED);
  expect_reject(v, "a.b.c.d", ANA_JWT_MALFORMED);
  expect_reject(v, "..", ANA_JWT_MALFORMED);
  expect_reject(v, "e30.e30.AAAA", ANA_JWT_BAD_HEADER); /* {} has no alg */
  /* Header that is JSON but not an object; duplicate members. */
  char *s = jwt_mint_sign("[1]", "{}", "HS256", SECRET, strlen(SECRET), NULL);
  expect_reject(v, s, ANA_JWT_MALFORMED);
  free(s);
  s = jwt_mint_sign("{\"alg\":\"HS256\",\"alg\":\"none\"}", "{}", "HS256", SECRET, strlen(SECRET),
                    NULL);
  expect_reject(v, s, ANA_JWT_MALFORMED);
  free(s);
  /* A signed payload that is not JSON. */
  s = jwt_mint_sign("{\"alg\":\"HS256\"}", "not json", "HS256", SECRET, strlen(SECRET), NULL);
  expect_reject(v, s, ANA_JWT_MALFORMED);
  free(s);
  /* NUL byte inside the token. */
  char nul[256];
  size_t n = strlen(t) < 200 ? strlen(t) : 200;
  memcpy(nul, t, n);
  nul[10] = '\0';
  expect_reject_n(v, nul, n, ANA_JWT_MALFORMED);
  free(t);
  ana_jwt_verifier_destroy(v);
}

static void test_bad_base64_refused(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *t = mint_std("HS256", "");
  char *dot = strchr(t, '.');
  size_t h_len = (size_t)(dot - t);
  char buf[4096];
  /* Padding, the standard alphabet, whitespace, inside the header. */
  const char *insert[] = {"=", "+", "/", " ", "\n", "%"};
  for (size_t i = 0; i < sizeof insert / sizeof insert[0]; i++) {
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)h_len, t, insert[i], dot);
    expect_reject(v, buf, ANA_JWT_MALFORMED);
  }
  /* Same bytes, non-canonical encoding: unused bits set in the signature's
   * last character ('A' -> 'B' differs only in unused bits when the length
   * is 43, as for 32 bytes). */
  char *sig = strrchr(t, '.') + 1;
  assert_int_equal(strlen(sig), 43);
  snprintf(buf, sizeof buf, "%s", t);
  char *last = strrchr(buf, '.') + 1 + 42;
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  int idx = (int)(strchr(alphabet, *last) - alphabet);
  *last = alphabet[idx ^ 1]; /* flips an unused bit */
  expect_reject(v, buf, ANA_JWT_MALFORMED);
  /* A part of 4n+1 characters. */
  snprintf(buf, sizeof buf, "%sAB", t);
  expect_reject(v, buf, ANA_JWT_MALFORMED);
  free(t);
  ana_jwt_verifier_destroy(v);
}

static void test_oversized_token_refused(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  /* A validly signed token just over the limit is not even parsed. */
  char pad[9000];
  memset(pad, 'x', sizeof pad - 1);
  pad[sizeof pad - 1] = '\0';
  char extra[9100];
  snprintf(extra, sizeof extra, "\"pad\":\"%.6000s\"", pad);
  char *t = mint_std("HS256", extra);
  assert_true(strlen(t) > ANA_JWT_DEFAULT_MAX_TOKEN_BYTES);
  expect_reject(v, t, ANA_JWT_TOO_LARGE);
  struct ana_jwt_stats st;
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.signature_checks, 0);
  free(t);
  /* One under the limit passes. */
  snprintf(extra, sizeof extra, "\"pad\":\"%.5500s\"", pad);
  t = mint_std("HS256", extra);
  assert_true(strlen(t) <= ANA_JWT_DEFAULT_MAX_TOKEN_BYTES);
  accept_only(v, t);
  free(t);
  ana_jwt_verifier_destroy(v);
}

/* A token with the given time claims ("" leaves one out). */
static char *timed(const char *times) {
  char payload[512];
  snprintf(payload, sizeof payload,
           "{\"sub\":\"u\",\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"%s%s}",
           times[0] ? "," : "", times);
  return mint("{\"alg\":\"HS256\"}", payload, "HS256", NULL);
}

static void expect_times(struct ana_jwt_verifier *v, const char *fmt, long long t1,
                         enum ana_jwt_reason reason) {
  char times[256];
  snprintf(times, sizeof times, fmt, t1);
  char *t = timed(times);
  if (reason == ANA_JWT_OK)
    accept_only(v, t);
  else
    expect_reject(v, t, reason);
  free(t);
}

static void test_time_claims_and_leeway_edges(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  /* exp: valid up to exp + 60 s inclusive. */
  expect_times(v, "\"exp\":%lld", NOW - 60, ANA_JWT_OK);
  expect_times(v, "\"exp\":%lld", NOW - 61, ANA_JWT_EXPIRED);
  expect_times(v, "\"exp\":%lld.5", NOW - 61, ANA_JWT_EXPIRED);
  /* nbf and iat: valid from nbf - 60 s. */
  expect_times(v, "\"exp\":1800000000,\"nbf\":%lld", NOW + 60, ANA_JWT_OK);
  expect_times(v, "\"exp\":1800000000,\"nbf\":%lld", NOW + 61, ANA_JWT_NOT_YET_VALID);
  expect_times(v, "\"exp\":1800000000,\"iat\":%lld", NOW + 60, ANA_JWT_OK);
  expect_times(v, "\"exp\":1800000000,\"iat\":%lld", NOW + 61, ANA_JWT_NOT_YET_VALID);
  /* exp is required and must be a number. */
  expect_times(v, "\"iat\":%lld", NOW, ANA_JWT_BAD_CLAIMS);
  expect_times(v, "\"exp\":\"%lld\"", NOW + 100, ANA_JWT_BAD_CLAIMS);
  expect_times(v, "\"exp\":%lld,\"nbf\":null", NOW + 100, ANA_JWT_BAD_CLAIMS);
  expect_times(v, "\"exp\":%lld e300", 1, ANA_JWT_MALFORMED);
  ana_jwt_verifier_destroy(v);
  /* Leeway 0. */
  struct ana_jwt_settings s;
  base_settings(&s);
  s.leeway_s = 0;
  struct ana_error err;
  v = ana_jwt_verifier_create(&s, &err);
  expect_times(v, "\"exp\":%lld", NOW, ANA_JWT_OK);
  expect_times(v, "\"exp\":%lld", NOW - 1, ANA_JWT_EXPIRED);
  expect_times(v, "\"exp\":1800000000,\"nbf\":%lld", NOW + 1, ANA_JWT_NOT_YET_VALID);
  ana_jwt_verifier_destroy(v);
}

static void test_issuer_and_audience(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  const char *hdr = "{\"alg\":\"HS256\"}";
  struct {
    const char *payload;
    enum ana_jwt_reason reason;
  } cases[] = {
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\"}", ANA_JWT_OK},
      {"{\"exp\":1800000000,\"iss\":\"https://evil.test\",\"aud\":\"" AUDIENCE "\"}",
       ANA_JWT_BAD_ISSUER},
      {"{\"exp\":1800000000,\"aud\":\"" AUDIENCE "\"}", ANA_JWT_BAD_ISSUER},
      {"{\"exp\":1800000000,\"iss\":7,\"aud\":\"" AUDIENCE "\"}", ANA_JWT_BAD_CLAIMS},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":\"other\"}", ANA_JWT_BAD_AUDIENCE},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\"}", ANA_JWT_BAD_AUDIENCE},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":[\"x\",\"" AUDIENCE "\"]}", ANA_JWT_OK},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":[\"x\",\"y\"]}", ANA_JWT_BAD_AUDIENCE},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":{\"a\":1}}", ANA_JWT_BAD_CLAIMS},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"roles\":[\"a\",3]}",
       ANA_JWT_BAD_CLAIMS},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE
       "\",\"accounts\":{\"a\":[\"admin\"]}}",
       ANA_JWT_BAD_CLAIMS},
      {"{\"exp\":1800000000,\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"account_id\":\"\"}",
       ANA_JWT_BAD_CLAIMS},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *t = mint(hdr, cases[i].payload, "HS256", NULL);
    if (cases[i].reason == ANA_JWT_OK)
      accept_only(v, t);
    else
      expect_reject(v, t, cases[i].reason);
    free(t);
  }
  ana_jwt_verifier_destroy(v);
  /* No audience configured: a token naming one is for someone else. */
  struct ana_jwt_settings s;
  base_settings(&s);
  s.audience = NULL;
  struct ana_error err;
  v = ana_jwt_verifier_create(&s, &err);
  char *t = mint(hdr, cases[0].payload, "HS256", NULL);
  expect_reject(v, t, ANA_JWT_BAD_AUDIENCE);
  free(t);
  ana_jwt_verifier_destroy(v);
}

static void test_cache_one_verification_per_token(void **state) {
  (void)state;
  struct ana_jwt_verifier *v = make_verifier();
  char *r = mint_std("RS256", "\"account_id\":\"acme\"");
  for (int i = 0; i < 5; i++)
    accept_only(v, r);
  struct ana_jwt_stats st;
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.signature_checks, 1);
  assert_int_equal(st.cache_hits, 4);
  assert_int_equal(st.cache_size, 1);
  /* A token differing in one signature bit is not a cache hit. */
  char *other = strdup(r);
  char *sig = strrchr(other, '.') + 1;
  sig[5] = sig[5] == 'A' ? 'B' : 'A';
  expect_reject(v, other, ANA_JWT_BAD_SIGNATURE);
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.signature_checks, 2);
  /* Expiry still applies to cached tokens. */
  clock_now = NOW + 3600 + 61;
  expect_reject(v, r, ANA_JWT_EXPIRED);
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.cache_size, 0);
  free(other);
  free(r);
  ana_jwt_verifier_destroy(v);
}

static void test_cache_bounded(void **state) {
  (void)state;
  struct ana_jwt_settings s;
  base_settings(&s);
  s.cache_entries = 64;
  struct ana_error err;
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(&s, &err);
  for (int i = 0; i < 1000; i++) {
    char extra[64];
    snprintf(extra, sizeof extra, "\"n\":%d", i);
    char *t = mint_std("HS256", extra);
    accept_only(v, t);
    free(t);
  }
  struct ana_jwt_stats st;
  ana_jwt_verifier_stats(v, &st);
  assert_true(st.cache_size <= 64);
  assert_true(st.cache_size >= 32);
  ana_jwt_verifier_destroy(v);
  /* Cache off: every call verifies. */
  s.cache_entries = 0;
  v = ana_jwt_verifier_create(&s, &err);
  char *t = mint_std("HS256", "");
  accept_only(v, t);
  accept_only(v, t);
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.signature_checks, 2);
  free(t);
  ana_jwt_verifier_destroy(v);
}

static void expect_settings_error(struct ana_jwt_settings *s, const char *needle) {
  struct ana_error err = {0};
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(s, &err);
  if (v || !strstr(err.message, needle))
    fail_msg("expected an error with \"%s\", got \"%s\"", needle, err.message);
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
}

static void test_settings_errors(void **state) {
  (void)state;
  struct ana_jwt_settings s;
  ana_jwt_settings_init(&s);
  expect_settings_error(&s, "no key source");
  base_settings(&s);
  s.hs256_secret_len = 16;
  expect_settings_error(&s, "JWT_HS256_SECRET: 16 bytes");
  base_settings(&s);
  s.jwks_json = NULL;
  expect_settings_error(&s, "RS256 and ES256 need");
  base_settings(&s);
  s.hs256_secret = NULL;
  expect_settings_error(&s, "HS256 needs");
  base_settings(&s);
  s.algorithms = "HS512";
  expect_settings_error(&s, "HS512");
  base_settings(&s);
  s.jwks_json = "{\"keys\":{}}";
  expect_settings_error(&s, "JWT_JWKS_FILE: JWKS: no \"keys\" array");
  base_settings(&s);
  s.jwks_json = "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"p\",\"n\":\"AQAB\",\"e\":\"AQAB\","
                "\"d\":\"AQAB\"}]}";
  expect_settings_error(&s, "private member \"d\"");
  /* RSA under 2048 bits. */
  EVP_PKEY *small = jwt_mint_rsa_key(1024);
  char *jwk = jwt_mint_jwk(small, "s", NULL);
  const char *one[] = {jwk};
  char *doc = jwt_mint_jwks(one, 1);
  base_settings(&s);
  s.jwks_json = doc;
  expect_settings_error(&s, "shorter than 2048 bits");
  free(doc);
  free(jwk);
  EVP_PKEY_free(small);
  /* An EC point off the curve. */
  jwk = jwt_mint_jwk(ec, "bad", NULL);
  char *y = strstr(jwk, "\"y\":\"") + 5;
  y[0] = y[0] == 'A' ? 'B' : 'A';
  one[0] = jwk;
  doc = jwt_mint_jwks(one, 1);
  s.jwks_json = doc;
  expect_settings_error(&s, "not a point of P-256");
  free(doc);
  free(jwk);
  /* Keys of other types and uses are skipped, not errors. */
  base_settings(&s);
  s.jwks_json = "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AQAB\"}]}";
  expect_settings_error(&s, "private member \"k\"");
  s.jwks_json = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AQAB\"},"
                "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}";
  struct ana_error err;
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(&s, &err);
  assert_non_null(v);
  ana_jwt_verifier_destroy(v);
}

static void test_bearer_parsing(void **state) {
  (void)state;
  size_t n = 0;
  const char *t = ana_jwt_bearer("Bearer abc.def.ghi", &n);
  assert_non_null(t);
  assert_int_equal(n, 11);
  assert_memory_equal(t, "abc.def.ghi", 11);
  t = ana_jwt_bearer("bearer   x  ", &n);
  assert_non_null(t);
  assert_int_equal(n, 1);
  assert_null(ana_jwt_bearer("Basic dXNlcjpwYXNz", &n));
  assert_null(ana_jwt_bearer("Bearer ", &n));
  assert_null(ana_jwt_bearer("Bearerx", &n));
  assert_null(ana_jwt_bearer(NULL, &n));
}

/* ---- Several threads verifying the same and different tokens ---- */

struct worker {
  struct ana_jwt_verifier *v;
  char **tokens;
  size_t n;
  atomic_int *failures;
};

static void *verify_loop(void *arg) {
  struct worker *w = arg;
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  for (int round = 0; round < 200; round++)
    for (size_t i = 0; i < w->n; i++) {
      struct ana_jwt_principal p;
      struct ana_error err;
      if (ana_jwt_verify(w->v, w->tokens[i], strlen(w->tokens[i]), &arena, &p, &err, NULL) != 0 ||
          !p.account_id || strcmp(p.account_id, "acme") != 0)
        atomic_fetch_add(w->failures, 1);
      ana_arena_reset(&arena);
    }
  ana_arena_fini(&arena);
  return NULL;
}

static void test_cache_concurrent_threads(void **state) {
  (void)state;
  struct ana_jwt_settings s;
  base_settings(&s);
  s.cache_entries = 16; /* smaller than the token set: evictions race with hits */
  struct ana_error err;
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(&s, &err);
  char *tokens[40];
  for (int i = 0; i < 40; i++) {
    char extra[64];
    snprintf(extra, sizeof extra, "\"account_id\":\"acme\",\"n\":%d", i);
    tokens[i] = mint_std(i % 8 == 0 ? "ES256" : "HS256", extra);
  }
  atomic_int failures = 0;
  pthread_t th[4];
  struct worker w[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (struct worker){v, tokens + i * 5, 20, &failures};
    pthread_create(&th[i], NULL, verify_loop, &w[i]);
  }
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&failures), 0);
  struct ana_jwt_stats st;
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.accepted, 4 * 200 * 20);
  assert_true(st.cache_size <= 16);
  for (int i = 0; i < 40; i++)
    free(tokens[i]);
  ana_jwt_verifier_destroy(v);
}

/* ---- A JWKS served over HTTP by the test ---- */

struct jwks_server {
  int fd, port;
  pthread_t thread;
  pthread_mutex_t mu;
  char *body; /* under mu */
  atomic_int requests;
  atomic_bool stop;
};

static void *serve(void *arg) {
  struct jwks_server *srv = arg;
  while (!atomic_load(&srv->stop)) {
    struct pollfd pfd = {.fd = srv->fd, .events = POLLIN};
    if (poll(&pfd, 1, 50) <= 0)
      continue;
    int c = accept(srv->fd, NULL, NULL);
    if (c < 0)
      continue;
    char req[4096];
    size_t got = 0;
    while (got < sizeof req - 1) {
      ssize_t r = read(c, req + got, sizeof req - 1 - got);
      if (r <= 0)
        break;
      got += (size_t)r;
      req[got] = '\0';
      if (strstr(req, "\r\n\r\n"))
        break;
    }
    atomic_fetch_add(&srv->requests, 1);
    pthread_mutex_lock(&srv->mu);
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      strlen(srv->body));
    ssize_t w1 = write(c, head, (size_t)hn);
    ssize_t w2 = write(c, srv->body, strlen(srv->body));
    (void)w1;
    (void)w2;
    pthread_mutex_unlock(&srv->mu);
    close(c);
  }
  return NULL;
}

static void jwks_server_start(struct jwks_server *srv, const char *body) {
  memset(srv, 0, sizeof *srv);
  pthread_mutex_init(&srv->mu, NULL);
  srv->body = strdup(body);
  srv->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(srv->fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(srv->fd, 16), 0);
  socklen_t len = sizeof a;
  getsockname(srv->fd, (struct sockaddr *)&a, &len);
  srv->port = ntohs(a.sin_port);
  pthread_create(&srv->thread, NULL, serve, srv);
}

static void jwks_server_set(struct jwks_server *srv, const char *body) {
  pthread_mutex_lock(&srv->mu);
  free(srv->body);
  srv->body = strdup(body);
  pthread_mutex_unlock(&srv->mu);
}

static void jwks_server_stop(struct jwks_server *srv) {
  atomic_store(&srv->stop, true);
  pthread_join(srv->thread, NULL);
  close(srv->fd);
  free(srv->body);
  pthread_mutex_destroy(&srv->mu);
}

static void test_jwks_url_refresh_on_unknown_kid(void **state) {
  (void)state;
  struct jwks_server srv;
  jwks_server_start(&srv, jwks); /* r1, e1 */
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks.json", srv.port);
  struct ana_jwt_settings s;
  base_settings(&s);
  s.algorithms = NULL;
  s.hs256_secret = NULL;
  s.jwks_json = NULL;
  s.jwks_url = url;
  s.jwks_refresh_s = 0;
  struct ana_error err;
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(&s, &err);
  assert_non_null(v);
  /* The first token waits for the first fetch. */
  char *r1 = mint_std("RS256", "");
  accept_only(v, r1);
  /* Key rotation: r2 appears at the URL; a token naming it triggers a fetch. */
  char *k1 = jwt_mint_jwk(rsa, "r1", NULL), *k2 = jwt_mint_jwk(rsa_other, "r2", NULL);
  const char *keys[] = {k1, k2};
  char *doc = jwt_mint_jwks(keys, 2);
  jwks_server_set(&srv, doc);
  char *c = claims("");
  char *r2 = mint("{\"alg\":\"RS256\",\"kid\":\"r2\"}", c, "RS256", rsa_other);
  accept_only(v, r2);
  struct ana_jwt_stats st;
  ana_jwt_verifier_stats(v, &st);
  assert_int_equal(st.jwks_fetches, 2);
  assert_int_equal(atomic_load(&srv.requests), 2);
  ana_jwt_verifier_destroy(v);

  /* With the default refresh interval, unknown kids do not make the
   * verifier hammer the URL: one fetch at start, none after. */
  s.jwks_refresh_s = 60;
  v = ana_jwt_verifier_create(&s, &err);
  accept_only(v, r1);
  int before = atomic_load(&srv.requests);
  char *r9 = mint("{\"alg\":\"RS256\",\"kid\":\"r9\"}", c, "RS256", rsa_other);
  for (int i = 0; i < 20; i++)
    expect_reject(v, r9, ANA_JWT_UNKNOWN_KEY);
  assert_int_equal(atomic_load(&srv.requests), before);
  ana_jwt_verifier_destroy(v);
  free(r9);
  free(r2);
  free(c);
  free(doc);
  free(k1);
  free(k2);
  free(r1);
  jwks_server_stop(&srv);
}

static void test_jwks_url_unreachable(void **state) {
  (void)state;
  /* A port nobody listens on: the caller waits at most jwks_wait_ms. */
  struct jwks_server srv;
  jwks_server_start(&srv, "{}");
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/jwks.json", srv.port);
  jwks_server_stop(&srv);
  struct ana_jwt_settings s;
  base_settings(&s);
  s.algorithms = "RS256";
  s.hs256_secret = NULL;
  s.jwks_json = NULL;
  s.jwks_url = url;
  s.jwks_wait_ms = 200;
  struct ana_error err;
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(&s, &err);
  assert_non_null(v);
  char *r1 = mint_std("RS256", "");
  expect_reject(v, r1, ANA_JWT_UNKNOWN_KEY);
  free(r1);
  ana_jwt_verifier_destroy(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_hs256_valid_principal, reset_clock),
      cmocka_unit_test_setup(test_rs256_and_es256_valid, reset_clock),
      cmocka_unit_test_setup(test_es256_invalid_signature, reset_clock),
      cmocka_unit_test_setup(test_alg_none_refused, reset_clock),
      cmocka_unit_test_setup(test_algorithm_confusion_refused, reset_clock),
      cmocka_unit_test_setup(test_key_in_header_refused, reset_clock),
      cmocka_unit_test_setup(test_unknown_kid_refused, reset_clock),
      cmocka_unit_test_setup(test_stripped_and_malformed, reset_clock),
      cmocka_unit_test_setup(test_bad_base64_refused, reset_clock),
      cmocka_unit_test_setup(test_oversized_token_refused, reset_clock),
      cmocka_unit_test_setup(test_time_claims_and_leeway_edges, reset_clock),
      cmocka_unit_test_setup(test_issuer_and_audience, reset_clock),
      cmocka_unit_test_setup(test_cache_one_verification_per_token, reset_clock),
      cmocka_unit_test_setup(test_cache_bounded, reset_clock),
      cmocka_unit_test_setup(test_cache_concurrent_threads, reset_clock),
      cmocka_unit_test_setup(test_settings_errors, reset_clock),
      cmocka_unit_test(test_bearer_parsing),
      cmocka_unit_test_setup(test_jwks_url_refresh_on_unknown_kid, reset_clock),
      cmocka_unit_test_setup(test_jwks_url_unreachable, reset_clock),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
