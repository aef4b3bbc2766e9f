/* JWT verification cost per call, in-process on one thread: a token seen
 * before (answered from the cache) and a fresh token (signature checked) for
 * HS256, RS256 (2048-bit) and ES256, against SHA-256 of the token alone (the
 * cache's own floor). Keys are generated at start; tokens are minted before
 * the clock starts.
 * usage: jwt_bench [--seconds S] [--out RESULTS.md] */
#include "ana_jwt.h"
#include "bench_common.h"
#include "jwt_mint.h"
#include "results_file.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEADING "## JWT verification"
#define SECRET "bench-secret-bench-secret-bench-secret"
#define FRESH_TOKENS 4000

struct row {
  const char *what;
  double us_per_call;
  long calls;
};

static EVP_PKEY *rsa, *ec;

static char *mint(const char *alg, int n) {
  char header[96], payload[256];
  snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"%s}", alg,
           strcmp(alg, "RS256") == 0   ? ",\"kid\":\"r1\""
           : strcmp(alg, "ES256") == 0 ? ",\"kid\":\"e1\""
                                       : "");
  snprintf(payload, sizeof payload,
           "{\"sub\":\"user-%d\",\"exp\":%lld,\"iat\":%lld,\"account_id\":\"acme\","
           "\"roles\":[\"viewer\",\"analyst\"]}",
           n, (long long)time(NULL) + 3600, (long long)time(NULL));
  EVP_PKEY *key = strcmp(alg, "RS256") == 0 ? rsa : strcmp(alg, "ES256") == 0 ? ec : NULL;
  char *t = jwt_mint_sign(header, payload, alg, SECRET, strlen(SECRET), key);
  if (!t) {
    fprintf(stderr, "jwt_bench: cannot mint %s\n", alg);
    exit(1);
  }
  return t;
}

static struct ana_jwt_verifier *make_verifier(const char *jwks, size_t cache_entries) {
  struct ana_jwt_settings s;
  ana_jwt_settings_init(&s);
  s.algorithms = "HS256,RS256,ES256";
  s.hs256_secret = SECRET;
  s.hs256_secret_len = strlen(SECRET);
  s.jwks_json = jwks;
  s.cache_entries = cache_entries;
  struct ana_error err;
  struct ana_jwt_verifier *v = ana_jwt_verifier_create(&s, &err);
  if (!v) {
    fprintf(stderr, "jwt_bench: %s\n", err.message);
    exit(1);
  }
  return v;
}

/* Verifies tokens[i % n] for about `seconds`; microseconds per call. */
static struct row run(const char *what, struct ana_jwt_verifier *v, char **tokens, size_t n,
                      double seconds) {
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  struct ana_jwt_principal p;
  struct ana_error err;
  struct ana_jwt_failure why;
  long calls = 0;
  double t0 = bench_now_s(), t1 = t0;
  while (t1 - t0 < seconds) {
    for (int k = 0; k < 64; k++, calls++) {
      char *t = tokens[(size_t)calls % n];
      if (ana_jwt_verify(v, t, strlen(t), &arena, &p, &err, &why) != 0) {
        fprintf(stderr, "jwt_bench: %s rejected: %s\n", what, why.detail);
        exit(1);
      }
      ana_arena_reset(&arena);
    }
    t1 = bench_now_s();
  }
  ana_arena_fini(&arena);
  return (struct row){what, (t1 - t0) * 1e6 / (double)calls, calls};
}

static struct row run_sha(char *token, double seconds) {
  unsigned char md[32];
  long calls = 0;
  size_t len = strlen(token);
  double t0 = bench_now_s(), t1 = t0;
  while (t1 - t0 < seconds) {
    for (int k = 0; k < 256; k++, calls++) {
      SHA256((unsigned char *)token, len, md);
      token[0] ^= (char)(md[0] & 0); /* keeps the call */
    }
    t1 = bench_now_s();
  }
  return (struct row){"SHA-256 of the RS256 token alone (the cache key)",
                      (t1 - t0) * 1e6 / (double)calls, calls};
}

int main(int argc, char **argv) {
  double seconds = 1.0;
  const char *out = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
    else {
      fprintf(stderr, "usage: jwt_bench [--seconds S] [--out RESULTS.md]\n");
      return 2;
    }
  }
  rsa = jwt_mint_rsa_key(2048);
  ec = jwt_mint_ec_key();
  char *k1 = jwt_mint_jwk(rsa, "r1", "RS256"), *k2 = jwt_mint_jwk(ec, "e1", "ES256");
  const char *keys[] = {k1, k2};
  char *jwks = jwt_mint_jwks(keys, 2);

  static const char *const algs[] = {"HS256", "RS256", "ES256"};
  char *one[3];
  char **fresh[3];
  for (int a = 0; a < 3; a++) {
    one[a] = mint(algs[a], 0);
    fresh[a] = malloc(FRESH_TOKENS * sizeof *fresh[a]);
    for (int i = 0; i < FRESH_TOKENS; i++)
      fresh[a][i] = mint(algs[a], i + 1);
  }

  struct row rows[8];
  int n = 0;
  rows[n++] = run_sha(one[1], seconds);
  struct ana_jwt_verifier *cached = make_verifier(jwks, ANA_JWT_DEFAULT_CACHE_ENTRIES);
  rows[n++] = run("cached HS256 token", cached, &one[0], 1, seconds);
  rows[n++] = run("cached RS256 token", cached, &one[1], 1, seconds);
  rows[n++] = run("cached ES256 token", cached, &one[2], 1, seconds);
  ana_jwt_verifier_destroy(cached);
  /* Fresh: the cache is off, so every call checks a signature. */
  struct ana_jwt_verifier *nocache = make_verifier(jwks, 0);
  rows[n++] =
      run("fresh HS256 token (signature checked)", nocache, fresh[0], FRESH_TOKENS, seconds);
  rows[n++] =
      run("fresh RS256 token (signature checked)", nocache, fresh[1], FRESH_TOKENS, seconds);
  rows[n++] =
      run("fresh ES256 token (signature checked)", nocache, fresh[2], FRESH_TOKENS, seconds);
  ana_jwt_verifier_destroy(nocache);

  char machine[256];
  bench_machine(machine, sizeof machine);
  size_t cap = 8192, len = 0;
  char *section = malloc(cap);
  len += (size_t)snprintf(
      section + len, cap - len,
      "%s\n\nMachine: %s. Command: `build/bench/jwt_bench --seconds %.0f`. One thread, "
      "in-process (`ana_jwt_verify`, no transport); RSA 2048-bit and P-256 keys from a JWKS; "
      "the token carries sub, exp, iat, account_id and two roles. Fresh tokens: %d distinct "
      "tokens per algorithm with the cache off.\n\n"
      "| Measure | Result | Calls |\n|---|---|---|\n",
      HEADING, machine, seconds, FRESH_TOKENS);
  for (int i = 0; i < n; i++) {
    printf("%-48s %9.2f us/call (%ld calls)\n", rows[i].what, rows[i].us_per_call, rows[i].calls);
    len += (size_t)snprintf(section + len, cap - len, "| %s | %.2f us/call | %ld |\n", rows[i].what,
                            rows[i].us_per_call, rows[i].calls);
  }
  if (out)
    bench_results_replace(out, HEADING, section);

  free(section);
  for (int a = 0; a < 3; a++) {
    free(one[a]);
    for (int i = 0; i < FRESH_TOKENS; i++)
      free(fresh[a][i]);
    free(fresh[a]);
  }
  free(jwks);
  free(k1);
  free(k2);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(ec);
  return 0;
}
