/* What authentication costs on the ingest path: unary TrackEvent from 16
 * clients against a server without authentication (protected mode, loopback)
 * and, in the same run, against one verifying JWTs: a cached HS256 token per
 * client, a cached RS256 token per client, and a fresh RS256 token per call
 * (a signature check every call; the tokens are minted before the clock
 * starts); and against one with API keys only, an ingest key per client
 * (made with `analyticsd keys create` before the server starts). Rounds
 * alternate the cases; each figure is the median round. Then, in-process,
 * what one key verification costs on a cache miss (one SQLite point read on
 * the calling thread) and with the key cached.
 * usage: auth_bench [--server PATH] [--seconds S] [--rounds N] [--out RESULTS.md] */
#include "bench_common.h"
#include "jwt_mint.h"
#include "results_file.h"

#include "ana_api_keys.h"
#include "ana_client_rpc.h"
#include "ana_log.h"
#include "ana_local_db.h"
#include "ana_store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HEADING "## Authentication on the ingest path"
#define SECRET "bench-secret-bench-secret-bench-secret"
#define CLIENTS 16
#define MAX_ROUNDS 9
/* Fresh RS256 tokens minted up front: more than a fresh run can use. */
#define FRESH_TOKENS 15000
#define FRESH_SECONDS 0.5
/* The cache-miss measurement: keys in the store, verifications timed. */
#define MISS_KEYS 1000
#define MISS_CALLS 20000

static EVP_PKEY *rsa;

/* "Bearer <token>" signed with alg, for subject n; caller frees. */
static char *bearer(const char *alg, long n) {
  char header[96], payload[256];
  snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"%s}", alg,
           strcmp(alg, "RS256") == 0 ? ",\"kid\":\"r1\"" : "");
  snprintf(payload, sizeof payload,
           "{\"sub\":\"client-%ld\",\"exp\":%lld,\"iat\":%lld,\"account_id\":\"acme\","
           "\"roles\":[\"ingest\"]}",
           n, (long long)time(NULL) + 3600, (long long)time(NULL));
  char *t = jwt_mint_sign(header, payload, alg, SECRET, strlen(SECRET),
                          strcmp(alg, "RS256") == 0 ? rsa : NULL);
  if (!t) {
    fprintf(stderr, "auth_bench: cannot mint %s\n", alg);
    exit(1);
  }
  size_t n_out = strlen(t) + 8;
  char *out = malloc(n_out);
  snprintf(out, n_out, "Bearer %s", t);
  free(t);
  return out;
}

struct tokens {
  char *per_client[CLIENTS];
  char **fresh;
  atomic_long next;
  long n_fresh;
};

static const char *per_client(void *ctx, int client) {
  return ((struct tokens *)ctx)->per_client[client % CLIENTS];
}

static const char *fresh(void *ctx, int client) {
  (void)client;
  struct tokens *t = ctx;
  long i = atomic_fetch_add(&t->next, 1);
  return i < t->n_fresh ? t->fresh[i] : NULL; /* NULL: counted as a failed call */
}

/* An ingest key for account acme, made offline on data_dir by the server
 * binary ("Bearer ana_..."); caller frees. */
static char *make_key(const char *server_path, const char *data_dir) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "DATA_DIR='%s' LOG_LEVEL=error '%s' keys create --account acme --role "
           "ingest",
           data_dir, server_path);
  FILE *p = popen(cmd, "r");
  char key[ANA_API_KEY_CHARS + 2] = "";
  if (!p || !fgets(key, sizeof key, p) || pclose(p) != 0 || strlen(key) < ANA_API_KEY_CHARS) {
    fprintf(stderr, "auth_bench: %s failed\n", cmd);
    exit(1);
  }
  key[ANA_API_KEY_CHARS] = '\0';
  size_t n = strlen(key) + 8;
  char *out = malloc(n);
  snprintf(out, n, "Bearer %s", key);
  return out;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Times ana_api_keys_verify on MISS_KEYS stored keys: with the cache off
 * (every call a point read) and on (every call a hit). Fills median and p99
 * microseconds of each. */
static void measure_verify(const char *dir, double *miss_med, double *miss_p99, double *hit_med) {
  struct ana_error err;
  char sub[300];
  ana_log_set_level(ANA_LOG_WARN); /* the store's migration lines */
  snprintf(sub, sizeof sub, "%s/keys", dir);
  mkdir(sub, 0700);
  const struct ana_api_key_store_ops *ops = ana_store_api_key_backend("sqlite");
  struct ana_local_db *db = ana_local_db_open(sub, &err);
  void *store = db ? ops->open(db, &err) : NULL;
  if (!store) {
    fprintf(stderr, "auth_bench: key store: %s\n", err.message);
    exit(1);
  }
  static char keys[MISS_KEYS][ANA_API_KEY_CHARS + 1];
  static double us[MISS_CALLS];
  for (int cached = 0; cached < 2; cached++) {
    struct ana_api_keys_options o;
    ana_api_keys_options_init(&o);
    o.ops = ops;
    o.store = store;
    o.touch_thread = false;
    o.cache_slots = cached ? 4 * MISS_KEYS : 0;
    o.cache_ttl_ms = 3600 * 1000;
    struct ana_api_keys *k = ana_api_keys_create(&o, &err);
    struct ana_api_key_record rec;
    for (int i = 0; i < MISS_KEYS && !cached; i++)
      if (ana_api_keys_issue(k, "acme", "ingest", NULL, NULL, "bench", keys[i], &rec, &err) < 0) {
        fprintf(stderr, "auth_bench: issue: %s\n", err.message);
        exit(1);
      }
    struct ana_arena arena;
    ana_arena_init(&arena, 4096, 0);
    for (int i = 0; i < MISS_CALLS; i++) {
      struct ana_api_key_principal kp;
      const char *key = keys[(i * 7919) % MISS_KEYS];
      double t0 = bench_now_s();
      if (ana_api_keys_verify(k, key, ANA_API_KEY_CHARS, &arena, &kp, NULL, &err) < 0) {
        fprintf(stderr, "auth_bench: verify: %s\n", err.message);
        exit(1);
      }
      us[i] = (bench_now_s() - t0) * 1e6;
      ana_arena_reset(&arena);
    }
    ana_arena_fini(&arena);
    ana_api_keys_destroy(k);
    qsort(us, MISS_CALLS, sizeof us[0], cmp_double);
    if (cached) {
      *hit_med = us[MISS_CALLS / 2];
    } else {
      *miss_med = us[MISS_CALLS / 2];
      *miss_p99 = us[MISS_CALLS * 99 / 100];
    }
  }
  ops->close(store);
  ana_local_db_close(db);
}

static double run(struct ana_client_channel *ch, double seconds, const char *(*auth)(void *, int),
                  void *ctx, double *p99) {
  struct bench_grpc_load load = {
      .clients = CLIENTS, .batch = 1, .seconds = seconds, .authorization = auth, .auth_ctx = ctx};
  return bench_grpc_ingest_rate(ch, &load, NULL, p99);
}

static double median(double *v, int n) {
  return bench_percentile(v, (size_t)n, 50);
}

int main(int argc, char **argv) {
  double seconds = 3;
  int rounds = 3;
  const char *out = NULL, *server_path = "build/server/analyticsd";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
      server_path = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
    else {
      fprintf(stderr,
              "usage: auth_bench [--server PATH] [--seconds S] [--rounds N] [--out RESULTS.md]\n");
      return 2;
    }
  }
  if (rounds < 1 || rounds > MAX_ROUNDS)
    rounds = 3;
  bench_pin_client();

  char dir[] = "/tmp/ana-auth-bench-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("auth_bench: mkdtemp");
    return 1;
  }
  rsa = jwt_mint_rsa_key(2048);
  char *jwk = jwt_mint_jwk(rsa, "r1", "RS256");
  const char *jwks_list[] = {jwk};
  char *jwks = jwt_mint_jwks(jwks_list, 1);
  char path[256];
  snprintf(path, sizeof path, "%s/jwks.json", dir);
  FILE *f = fopen(path, "w");
  if (!f || fputs(jwks, f) < 0 || fclose(f) != 0) {
    fprintf(stderr, "auth_bench: cannot write %s\n", path);
    return 1;
  }

  struct tokens hs = {0}, rs = {0}, fr = {0};
  for (int i = 0; i < CLIENTS; i++) {
    hs.per_client[i] = bearer("HS256", i);
    rs.per_client[i] = bearer("RS256", i);
  }
  double mint_start = bench_now_s();
  fr.n_fresh = FRESH_TOKENS;
  fr.fresh = calloc(FRESH_TOKENS, sizeof *fr.fresh);
  for (long i = 0; i < FRESH_TOKENS; i++)
    fr.fresh[i] = bearer("RS256", 1000 + i);
  fprintf(stderr, "auth_bench: minted %d RS256 tokens in %.1f s\n", FRESH_TOKENS,
          bench_now_s() - mint_start);

  /* Every case of every round gets a fresh server on a fresh directory (the
   * store's growth would otherwise favour whichever case ran first): in
   * protected mode (no credential source) for "none", verifying HS256 and
   * RS256 for the others. */
  double r_none[MAX_ROUNDS], r_hs[MAX_ROUNDS], r_rs[MAX_ROUNDS], r_fresh[MAX_ROUNDS],
      r_key[MAX_ROUNDS];
  double p_none[MAX_ROUNDS], p_hs[MAX_ROUNDS], p_rs[MAX_ROUNDS], p_fresh[MAX_ROUNDS],
      p_key[MAX_ROUNDS];
  struct tokens ak = {0};
  long per_round = FRESH_TOKENS / rounds;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < 5; k++) {
      char d[300];
      snprintf(d, sizeof d, "%s/r%d-%d", dir, r, k);
      mkdir(d, 0700);
      if (k == 4) /* API keys only: one ingest key per client, made offline */
        for (int i = 0; i < CLIENTS; i++) {
          free(ak.per_client[i]);
          ak.per_client[i] = make_key(server_path, d);
        }
      if (k > 0 && k < 4) {
        setenv("JWT_HS256_SECRET", SECRET, 1);
        setenv("JWT_JWKS_FILE", path, 1);
        setenv("JWT_ALGORITHMS", "HS256,RS256", 1);
      }
      struct bench_proc srv = bench_server_start(server_path, d, NULL, NULL);
      unsetenv("JWT_HS256_SECRET");
      unsetenv("JWT_JWKS_FILE");
      unsetenv("JWT_ALGORITHMS");
      struct ana_client_channel *ch = bench_channel_create(&srv);
      struct tokens *t = k == 1 ? &hs : k == 4 ? &ak : &rs;
      /* Warm-up: connections, and the cached cases' tokens into the cache. */
      run(ch, 0.3, k == 0 ? NULL : per_client, k == 0 ? NULL : t, NULL);
      if (k == 0) {
        r_none[r] = run(ch, seconds, NULL, NULL, &p_none[r]);
      } else if (k == 4) {
        r_key[r] = run(ch, seconds, per_client, t, &p_key[r]);
      } else if (k < 3) {
        double *rate = k == 1 ? &r_hs[r] : &r_rs[r], *p99 = k == 1 ? &p_hs[r] : &p_rs[r];
        *rate = run(ch, seconds, per_client, t, p99);
      } else {
        /* Each fresh token used once: this round's share of the pool. */
        atomic_store(&fr.next, (long)r * per_round);
        fr.n_fresh = (long)(r + 1) * per_round;
        r_fresh[r] = run(ch, FRESH_SECONDS, fresh, &fr, &p_fresh[r]);
        if (atomic_load(&fr.next) > fr.n_fresh)
          fprintf(stderr, "auth_bench: round %d ran out of fresh tokens\n", r);
      }
      ana_client_channel_destroy(ch);
      bench_proc_stop(&srv);
    }
    printf("round %d: none %.0f/s, HS256 cached %.0f/s, RS256 cached %.0f/s, RS256 fresh "
           "%.0f/s, API key %.0f/s\n",
           r, r_none[r], r_hs[r], r_rs[r], r_fresh[r], r_key[r]);
  }
  double miss_med, miss_p99, hit_med;
  measure_verify(dir, &miss_med, &miss_p99, &hit_med);
  double key_m = median(r_key, rounds), pk = median(p_key, rounds);
  double none_m = median(r_none, rounds), hs_m = median(r_hs, rounds), rs_m = median(r_rs, rounds),
         fr_m = median(r_fresh, rounds);
  double pn = median(p_none, rounds), ph = median(p_hs, rounds), pr = median(p_rs, rounds),
         pf = median(p_fresh, rounds);

  char machine[256], section[6144];
  bench_machine(machine, sizeof machine);
  snprintf(section, sizeof section,
           "%s\n\nMachine: %s. Command: `build/bench/auth_bench --seconds %.0f --rounds %d`. "
           "Unary TrackEvent, %d clients on one channel, the median of %d alternating rounds "
           "(a fresh-token run lasts %.1f s: each of %d pre-minted RS256 tokens is used "
           "at most once), each case on a fresh server and data directory. The server without "
           "authentication is in protected mode (loopback); the others verify HS256 and RS256 "
           "(2048-bit, JWKS file); the API-key server has no JWT settings and %d ingest keys.\n\n"
           "| Credentials | calls/s | vs none | p99 ms |\n|---|---|---|---|\n"
           "| none (protected mode) | %.0f | 1.00x | %.2f |\n"
           "| HS256, one cached token per client | %.0f | %.2fx | %.2f |\n"
           "| RS256, one cached token per client | %.0f | %.2fx | %.2f |\n"
           "| RS256, a fresh token per call | %.0f | %.2fx | %.2f |\n"
           "| API key, one per client | %.0f | %.2fx | %.2f |\n\n"
           "One API-key verification in-process (%d keys stored, %d calls): %.1f us median, "
           "%.1f us p99 on a cache miss (one SQLite point read on the calling thread); %.1f us "
           "median when cached.\n",
           HEADING, machine, seconds, rounds, CLIENTS, rounds, FRESH_SECONDS, FRESH_TOKENS, CLIENTS,
           none_m, pn, hs_m, hs_m / none_m, ph, rs_m, rs_m / none_m, pr, fr_m, fr_m / none_m, pf,
           key_m, key_m / none_m, pk, MISS_KEYS, MISS_CALLS, miss_med, miss_p99, hit_med);
  fputs(section, stdout);
  if (out)
    bench_results_replace(out, HEADING, section);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "auth_bench: could not remove %s\n", dir);
  return 0;
}
