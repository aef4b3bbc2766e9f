/* What one rate-limit decision costs in the in-process limiter (GCRA, sharded and lock-striped),
 * clock read included: one thread on one account, two threads contending on one account (the
 * target: <= 1 us per decision), two threads on different accounts, and one thread spread over
 * 200,000 accounts in a table bounded to 100,000 (evictions on the path).
 * usage: rate_limit_bench [--seconds S] [--out RESULTS.md] */
#include "results_file.h"

#include "ana_rate_limit.h"
#include "ana_clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define HEADING "## Rate limiter"
#define SPREAD_KEYS 200000
#define TABLE_MAX 100000

static double seconds = 2.0;

struct worker {
  struct ana_rate_limiter *l;
  const struct ana_rate_limit *lim;
  const char *key; /* NULL: spread over SPREAD_KEYS */
  atomic_bool *stop;
  long calls, allowed;
  double elapsed_s;
};

static void *run(void *arg) {
  struct worker *w = arg;
  char key[32];
  struct ana_rate_decision d;
  int64_t t0 = ana_clock_mono_ns();
  long i = 0;
  while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
    for (int j = 0; j < 1024; j++, i++) {
      const char *k = w->key;
      if (!k) {
        snprintf(key, sizeof key, "a:acct-%ld", i % SPREAD_KEYS);
        k = key;
      }
      if (ana_rate_limiter_charge(w->l, k, w->lim, 1, ana_clock_mono_ns(), &d) == 0 && d.allowed)
        w->allowed++;
    }
  }
  w->calls = i;
  w->elapsed_s = (double)(ana_clock_mono_ns() - t0) / 1e9;
  return NULL;
}

/* Runs n threads on keys[i]; returns ns per decision per thread (each
 * thread's own time over its own calls, averaged). */
static double measure(int n, const char *const *keys, long *calls, double *allowed_share) {
  struct ana_rate_limiter l;
  if (ana_rate_limiter_local_create(TABLE_MAX, 0, &l) < 0) {
    fprintf(stderr, "rate_limit_bench: out of memory\n");
    exit(1);
  }
  /* A rate the loop outruns, so decisions are a mix of allowed and refused. */
  struct ana_rate_limit lim;
  char why[128];
  if (!ana_rate_limit_parse("1000000/s burst 1000", 19, &lim, why, sizeof why))
    exit(1);
  atomic_bool stop = false;
  struct worker w[2];
  pthread_t t[2];
  for (int i = 0; i < n; i++) {
    w[i] = (struct worker){.l = &l, .lim = &lim, .key = keys[i], .stop = &stop};
    pthread_create(&t[i], NULL, run, &w[i]);
  }
  struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
  nanosleep(&ts, NULL);
  atomic_store(&stop, true);
  double ns = 0;
  long total = 0, ok = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(t[i], NULL);
    ns += w[i].elapsed_s * 1e9 / (double)w[i].calls;
    total += w[i].calls;
    ok += w[i].allowed;
  }
  ana_rate_limiter_destroy(&l);
  *calls = total;
  *allowed_share = (double)ok / (double)total;
  return ns / n;
}

int main(int argc, char **argv) {
  const char *out = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
    else {
      fprintf(stderr, "usage: rate_limit_bench [--seconds S] [--out RESULTS.md]\n");
      return 2;
    }
  }
  static const struct {
    const char *name;
    int threads;
    const char *keys[2];
  } cases[] = {
      {"1 thread, one account", 1, {"a:acme", NULL}},
      {"2 threads, one account (contended)", 2, {"a:acme", "a:acme"}},
      {"2 threads, two accounts", 2, {"a:acme", "a:beta"}},
      {"1 thread, 200,000 accounts, table bounded to 100,000", 1, {NULL, NULL}},
  };
  char section[4096];
  struct utsname u;
  uname(&u);
  double load = 0;
  FILE *lf = fopen("/proc/loadavg", "r");
  if (lf) {
    if (fscanf(lf, "%lf", &load) != 1)
      load = 0;
    fclose(lf);
  }
  int len = snprintf(
      section, sizeof section,
      HEADING
      "\n\nMachine: %ld CPUs, Linux %s, 1-minute load average %.1f at the start (other work "
      "on the machine shows in the figures). Command: `build/bench/rate_limit_bench "
      "--seconds %g`. In-process limiter (`ana_rate_limiter_charge`, 64 "
      "shards), the monotonic clock read included in each decision; limit "
      "1000000/s burst 1000 (the loop outruns it: decisions are a mix of "
      "allowed and refused). Target: <= 1 us per decision with 2 threads on "
      "one account.\n\n| Case | ns per decision | Decisions | Allowed |\n"
      "|---|---|---|---|\n",
      sysconf(_SC_NPROCESSORS_ONLN), u.release, load, seconds);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    long calls;
    double share;
    double ns = measure(cases[i].threads, cases[i].keys, &calls, &share);
    printf("%-55s %8.1f ns  %ld calls  %.1f%% allowed\n", cases[i].name, ns, calls, share * 100);
    len += snprintf(section + len, sizeof section - (size_t)len, "| %s | %.0f | %ld | %.1f%% |\n",
                    cases[i].name, ns, calls, share * 100);
  }
  if (out)
    bench_results_replace(out, HEADING, section);
  return 0;
}
