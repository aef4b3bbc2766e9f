/* What authentication costs on the ingest path: unary TrackEvent from 16
 * clients against a server without authentication (protected mode, loopback)
 * and, in the same run, against servers verifying a cached HS256 token per
 * client, a cached RS256 token per client, a fresh RS256 token per call (a
 * signature check every call; the tokens are minted before the clock starts)
 * and an API key per client (made with `analyticsd keys create` before the
 * server starts), and a second server without authentication as a control.
 * All servers run side by side for the whole run and short
 * phases alternate between them, each case between two phases of the server
 * without authentication (N H N R N K N F N C N, the order rotating from
 * round to round): a case's ratio is its rate
 * over the mean of the two phases around it, so load from elsewhere on the
 * machine moves both; each figure is the median of the rounds' ratios. Then,
 * in-process, what one key verification costs on a cache miss (one SQLite
 * point read on the calling thread) and with the key cached.
 * usage: auth_bench [--server PATH] [--seconds S] [--rounds N] [--out RESULTS.md] */
#include "bench_common.h"
#include "jwt_mint.h"
#include "results_file.h"

#include "ana_api_keys.h"
#include "ana_client_rpc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_local_db.h"
#include "ana_store.h"

#include <math.h>
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
#define MAX_ROUNDS 31
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
           "ingest 2>/dev/null",
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

/* CPU seconds pid has used so far (every thread, user and system). */
static double cpu_s(pid_t pid) {
  int64_t ns = ana_clock_process_cpu_ns(pid);
  return ns < 0 ? NAN : (double)ns / 1e9;
}

/* One phase on srv: its rate (calls/s) and the server's CPU microseconds per
 * accepted call, which other load on the machine moves much less than the
 * rate. */
static double phase(const struct bench_proc *srv, struct ana_client_channel *ch, double seconds,
                    const char *(*auth)(void *, int), void *ctx, double *p99, double *cpu_us) {
  double c0 = cpu_s(srv->pid), t0 = bench_now_s();
  double rate = run(ch, seconds, auth, ctx, p99);
  double calls = rate * (bench_now_s() - t0), c1 = cpu_s(srv->pid);
  *cpu_us = calls > 0 ? (c1 - c0) * 1e6 / calls : NAN;
  return rate;
}

static double median(double *v, int n) {
  return bench_percentile(v, (size_t)n, 50);
}

int main(int argc, char **argv) {
  double seconds = 1;
  int rounds = 9;
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
    rounds = 9;
  if (seconds <= 0)
    seconds = 1;
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

  struct tokens hs = {0}, rs = {0}, fr = {0}, ak = {0};
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

  /* One server per case, each on its own data directory, all running for the
   * whole benchmark: none (protected mode), HS256 and RS256 (each verifying
   * both algorithms; the RS256 one also takes the fresh-token phases), API
   * keys only (one ingest key per client, made offline). */
  enum { NONE, HS, RS, KEY, CONTROL, N_SERVERS };
  static const char *const names[N_SERVERS] = {"none", "hs256", "rs256", "apikey", "control"};
  struct bench_proc srv[N_SERVERS];
  struct ana_client_channel *ch[N_SERVERS];
  for (int k = 0; k < N_SERVERS; k++) {
    char d[300];
    snprintf(d, sizeof d, "%s/%s", dir, names[k]);
    mkdir(d, 0700);
    if (k == KEY)
      for (int i = 0; i < CLIENTS; i++)
        ak.per_client[i] = make_key(server_path, d);
    if (k == HS || k == RS) {
      setenv("JWT_HS256_SECRET", SECRET, 1);
      setenv("JWT_JWKS_FILE", path, 1);
      setenv("JWT_ALGORITHMS", "HS256,RS256", 1);
    }
    /* Authentication alone: the rate limiter (on by default once credentials
     * exist) stays off on every server. */
    setenv("RATE_LIMIT_DEFAULT", "off", 1);
    srv[k] = bench_server_start(server_path, d, NULL, NULL);
    unsetenv("RATE_LIMIT_DEFAULT");
    unsetenv("JWT_HS256_SECRET");
    unsetenv("JWT_JWKS_FILE");
    unsetenv("JWT_ALGORITHMS");
    ch[k] = bench_channel_create(&srv[k]);
  }
  /* The cases in the order each round runs them, each between two phases of
   * the server without authentication. */
  enum { C_HS, C_RS, C_KEY, C_FRESH, C_CONTROL, N_CASES };
  struct {
    int server;
    struct tokens *tokens;
    const char *(*auth)(void *, int);
    double seconds;
  } cases[N_CASES] = {
      {HS, &hs, per_client, seconds},  {RS, &rs, per_client, seconds},
      {KEY, &ak, per_client, seconds}, {RS, &fr, fresh, FRESH_SECONDS},
      {CONTROL, NULL, NULL, seconds},
  };
  /* Warm-up: connections, and the cached cases' tokens into the caches. */
  run(ch[NONE], 0.3, NULL, NULL, NULL);
  for (int c = 0; c < N_CASES; c++)
    if (c != C_FRESH)
      run(ch[cases[c].server], 0.3, cases[c].auth, cases[c].tokens, NULL);

  double rate[N_CASES][MAX_ROUNDS], ratio[N_CASES][MAX_ROUNDS], p99[N_CASES][MAX_ROUNDS];
  double cpu[N_CASES][MAX_ROUNDS], cpu_ratio[N_CASES][MAX_ROUNDS];
  double none_rate[MAX_ROUNDS * (N_CASES + 1)], none_p99[MAX_ROUNDS * (N_CASES + 1)],
      none_cpu[MAX_ROUNDS * (N_CASES + 1)];
  int n_none = 0;
  long per_round = FRESH_TOKENS / rounds;
  double before =
      phase(&srv[NONE], ch[NONE], seconds, NULL, NULL, &none_p99[n_none], &none_cpu[n_none]);
  double cpu_before = none_cpu[n_none];
  none_rate[n_none++] = before;
  for (int r = 0; r < rounds; r++) {
    printf("round %d:", r);
    /* The order rotates from round to round, so that no case always follows
     * the same one. */
    for (int i = 0; i < N_CASES; i++) {
      int c = (i + r) % N_CASES;
      if (c == C_FRESH) { /* each fresh token used once: this round's share */
        atomic_store(&fr.next, (long)r * per_round);
        fr.n_fresh = (long)(r + 1) * per_round;
      }
      rate[c][r] = phase(&srv[cases[c].server], ch[cases[c].server], cases[c].seconds,
                         cases[c].auth, cases[c].tokens, &p99[c][r], &cpu[c][r]);
      if (c == C_FRESH && atomic_load(&fr.next) > fr.n_fresh)
        fprintf(stderr, "auth_bench: round %d ran out of fresh tokens\n", r);
      double after =
          phase(&srv[NONE], ch[NONE], seconds, NULL, NULL, &none_p99[n_none], &none_cpu[n_none]);
      double cpu_after = none_cpu[n_none];
      none_rate[n_none++] = after;
      ratio[c][r] = rate[c][r] / ((before + after) / 2);
      /* Calls per CPU second, against none's: above 1 is cheaper. */
      cpu_ratio[c][r] = ((cpu_before + cpu_after) / 2) / cpu[c][r];
      printf(" %s %.0f/s %.2fx cpu %.0f us %.2fx", c == C_FRESH ? "fresh" : names[cases[c].server],
             rate[c][r], ratio[c][r], cpu[c][r], cpu_ratio[c][r]);
      before = after;
      cpu_before = cpu_after;
    }
    printf("\n");
    fflush(stdout);
  }
  for (int k = 0; k < N_SERVERS; k++) {
    ana_client_channel_destroy(ch[k]);
    bench_proc_stop(&srv[k]);
  }
  double miss_med, miss_p99, hit_med;
  measure_verify(dir, &miss_med, &miss_p99, &hit_med);

  double m_rate[N_CASES], m_ratio[N_CASES], m_p99[N_CASES], m_cpu[N_CASES], m_cpu_ratio[N_CASES];
  char spread[N_CASES][160];
  for (int c = 0; c < N_CASES; c++) {
    double v[MAX_ROUNDS];
    memcpy(v, ratio[c], sizeof v);
    m_cpu[c] = median(cpu[c], rounds);
    m_cpu_ratio[c] = median(cpu_ratio[c], rounds);
    size_t len = 0;
    spread[c][0] = '\0';
    for (int r = 0; r < rounds && len + 8 < sizeof spread[c]; r++)
      len += (size_t)snprintf(spread[c] + len, sizeof spread[c] - len, "%s%.2f", r ? ", " : "",
                              ratio[c][r]);
    m_ratio[c] = median(v, rounds);
    m_rate[c] = median(rate[c], rounds);
    m_p99[c] = median(p99[c], rounds);
  }
  double none_m = median(none_rate, n_none), pn = median(none_p99, n_none),
         none_cpu_m = median(none_cpu, n_none);

  char machine[256], section[8192];
  bench_machine(machine, sizeof machine);
  snprintf(section, sizeof section,
           "%s\n\nMachine: %s. Command: `build/bench/auth_bench --seconds %g --rounds %d`. "
           "Unary TrackEvent, %d clients on one channel per server. Five servers run side by "
           "side for the whole run, each on its own data directory: one without authentication "
           "(protected mode, loopback), two verifying HS256 and RS256 (2048-bit, JWKS file), "
           "one with API keys only (%d ingest keys), and a second one without authentication "
           "as a control (its ratio shows what the method itself cannot tell apart); "
           "RATE_LIMIT_DEFAULT=off on all. Phases of %g "
           "s alternate between them, "
           "each case between two phases of the server without authentication, the cases' order "
           "rotating from round to round; a case's ratio "
           "is its rate over the mean of those two, and the figure is the median of %d rounds' "
           "ratios (per round in brackets). A fresh-token phase lasts %.1f s: each of %d "
           "pre-minted RS256 tokens is used at most once. Target: >= 0.90x for the cached "
           "tokens and API keys. Server CPU per call is the server process's CPU time over "
           "the phase's accepted calls; its ratio is none's over the case's (calls per CPU "
           "second against none's), also a median of per-round ratios.\n\n"
           "| Credentials | calls/s (median) | vs none (median of ratios) | p99 ms | server CPU "
           "us/call | calls per CPU s vs none |\n"
           "|---|---|---|---|---|---|\n"
           "| none (protected mode) | %.0f | 1.00x | %.2f | %.0f | 1.00x |\n"
           "| HS256, one cached token per client | %.0f | %.2fx (%s) | %.2f | %.0f | %.2fx |\n"
           "| RS256, one cached token per client | %.0f | %.2fx (%s) | %.2f | %.0f | %.2fx |\n"
           "| API key, one per client | %.0f | %.2fx (%s) | %.2f | %.0f | %.2fx |\n"
           "| RS256, a fresh token per call | %.0f | %.2fx (%s) | %.2f | %.0f | %.2fx |\n"
           "| control: none again, on a second server | %.0f | %.2fx (%s) | %.2f | %.0f | %.2fx "
           "|\n\n"
           "One API-key verification in-process (%d keys stored, %d calls): %.1f us median, "
           "%.1f us p99 on a cache miss (one SQLite point read on the calling thread); %.1f us "
           "median when cached.\n",
           HEADING, machine, seconds, rounds, CLIENTS, CLIENTS, seconds, rounds, FRESH_SECONDS,
           FRESH_TOKENS, none_m, pn, none_cpu_m, m_rate[C_HS], m_ratio[C_HS], spread[C_HS],
           m_p99[C_HS], m_cpu[C_HS], m_cpu_ratio[C_HS], m_rate[C_RS], m_ratio[C_RS], spread[C_RS],
           m_p99[C_RS], m_cpu[C_RS], m_cpu_ratio[C_RS], m_rate[C_KEY], m_ratio[C_KEY],
           spread[C_KEY], m_p99[C_KEY], m_cpu[C_KEY], m_cpu_ratio[C_KEY], m_rate[C_FRESH],
           m_ratio[C_FRESH], spread[C_FRESH], m_p99[C_FRESH], m_cpu[C_FRESH], m_cpu_ratio[C_FRESH],
           m_rate[C_CONTROL], m_ratio[C_CONTROL], spread[C_CONTROL], m_p99[C_CONTROL],
           m_cpu[C_CONTROL], m_cpu_ratio[C_CONTROL], MISS_KEYS, MISS_CALLS, miss_med, miss_p99,
           hit_med);
  fputs(section, stdout);
  if (out)
    bench_results_replace(out, HEADING, section);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "auth_bench: could not remove %s\n", dir);
  return 0;
}
