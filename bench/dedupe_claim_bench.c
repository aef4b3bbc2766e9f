/* Deduplication claims at 10^6 and 10^7 keys: the store's claims (sorted
 * runs, dedupe_runs.c) against the table of schema 24 (one row per key, a
 * WITHOUT ROWID B-tree of (account, event_id) with its day, INSERT ... ON
 * CONFLICT DO NOTHING), both in commits of 1,000 random UUID keys with
 * synchronous=FULL in WAL mode, taking turns by slices of 10^6 keys (A B A
 * B ...) in one process. Per slice: the committing thread's CPU per key and
 * the wall time; for the runs also the merge thread's CPU; at the end the
 * bytes per key (dbstat) and the time to open the store again. Prints a
 * table; writes nothing.
 *
 * usage: dedupe_claim_bench [--keys N] [--dir DIR] [--runs-only] */
#include "ana_clock.h"
#include "ana_local_db.h"
#include "ana_store.h"
#include "dedupe_schema24.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COMMIT 1000
#define SLICE 1000000L

/* CPU seconds of this process's threads named name. */
static double named_cpu_s(const char *name) {
  double total = 0;
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char path[300], comm[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    if (fgets(comm, sizeof comm, f))
      comm[strcspn(comm, "\n")] = 0;
    fclose(f);
    if (strcmp(comm, name) != 0)
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
    if (!(f = fopen(path, "r")))
      continue;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
      total += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
  }
  if (d)
    closedir(d);
  return total;
}

static void uuid_of(uint64_t *state, char out[37]) {
  uint64_t a = (*state = *state * 6364136223846793005ULL + 1442695040888963407ULL);
  uint64_t b = (*state = *state * 6364136223846793005ULL + 1442695040888963407ULL);
  snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(a >> 32),
           (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(b >> 52) & 0xfff,
           (unsigned long long)(b & 0xffffffffffffULL));
}

int main(int argc, char **argv) {
  long keys = 10 * SLICE;
  const char *base = "/tmp";
  bool runs_only = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc)
      keys = atol(argv[++i]);
    else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      base = argv[++i];
    else if (strcmp(argv[i], "--runs-only") == 0)
      runs_only = true;
  }
  char dir[256], old_path[300], cmd[600];
  snprintf(dir, sizeof dir, "%s/dedupe-bench-XXXXXX", base);
  if (!mkdtemp(dir))
    return 1;
  pthread_setname_np(pthread_self(), "bench-claim");
  struct ana_error err;
  struct ana_local_db *db = ana_local_db_open(dir, &err);
  if (!db) {
    fprintf(stderr, "open: %s\n", err.message);
    return 1;
  }
  snprintf(old_path, sizeof old_path, "%s/schema24.db", dir);
  struct schema24 *old = schema24_open(old_path);
  if (!old)
    return 1;
  struct ana_event_record *r = calloc(COMMIT, sizeof *r);
  char(*ids)[37] = calloc(COMMIT, sizeof *ids);
  int64_t now = ana_clock_wall_ms();
  uint64_t seed_a = 21, seed_b = 21; /* the same keys in both */
  printf("| keys stored | schema 24 table: us/key (commit thread), wall s | runs: us/key (commit"
         " thread), merge thread us/key, wall s | runs |\n|---|---|---|---|\n");
  for (long done = 0; done < keys; done += SLICE) {
    long n = keys - done < SLICE ? keys - done : SLICE;
    /* A: the table of schema 24. */
    double c0 = named_cpu_s("bench-claim");
    int64_t w0 = ana_clock_mono_ns();
    for (long i = 0; i < n && !runs_only; i += COMMIT) {
      char id[37];
      schema24_begin(old);
      for (int k = 0; k < COMMIT; k++) {
        uuid_of(&seed_a, id);
        schema24_claim(old, id, (now + (int64_t)(k % 30) * 86400000) / 86400000 + 90);
      }
      schema24_commit(old);
    }
    double a_cpu = named_cpu_s("bench-claim") - c0,
           a_wall = (double)(ana_clock_mono_ns() - w0) / 1e9;
    /* B: the store's runs. */
    double m0 = named_cpu_s("ana-dedupe");
    c0 = named_cpu_s("bench-claim");
    w0 = ana_clock_mono_ns();
    for (long i = 0; i < n; i += COMMIT) {
      for (int k = 0; k < COMMIT; k++) {
        uuid_of(&seed_b, ids[k]);
        r[k] = (struct ana_event_record){.account_id = "acct",
                                         .event_id = ids[k],
                                         .expires_at_ms =
                                             now + (int64_t)(k % 30) * 86400000 + 90LL * 86400000};
      }
      if (ana_local_db_begin(db, &err) < 0 || ana_local_dedupe_claim(db, r, COMMIT, &err) < 0 ||
          ana_local_db_commit(db, &err) < 0) {
        fprintf(stderr, "claim: %s\n", err.message);
        return 1;
      }
    }
    double b_cpu = named_cpu_s("bench-claim") - c0,
           b_wall = (double)(ana_clock_mono_ns() - w0) / 1e9;
    double b_merge = named_cpu_s("ana-dedupe") - m0;
    struct ana_dedupe_runs_stats rs;
    ana_local_dedupe_stats(db, &rs);
    printf("| %ld | %.2f, %.1f | %.2f, %.2f, %.1f | %lld runs (%lld without a filter) |\n",
           done + n, a_cpu * 1e6 / (double)n, a_wall, b_cpu * 1e6 / (double)n,
           b_merge * 1e6 / (double)n, b_wall, (long long)rs.runs, (long long)rs.unfiltered);
    fflush(stdout);
  }
  /* The merges under way end (the thread goes on; wait for it). */
  struct ana_dedupe_runs_stats st;
  for (int i = 0; i < 600; i++) {
    struct ana_error e2;
    if (ana_local_dedupe_maintain(db, now, 0, &e2) == 0)
      break;
  }
  ana_local_dedupe_stats(db, &st);
  schema24_close(old);
  ana_local_db_close(db);
  char path[300];
  snprintf(path, sizeof path, "%s/analytics.db", dir);
  long long runs_bytes = schema24_db_bytes(path, "dedupe_%");
  long long acc = schema24_db_bytes(path, "dedupe_accounts");
  long long old_bytes = schema24_db_bytes(old_path, "dedupe_keys");
  int64_t o0 = ana_clock_mono_ns();
  db = ana_local_db_open(dir, &err);
  double open_s = (double)(ana_clock_mono_ns() - o0) / 1e9;
  ana_local_db_close(db);
  printf("\nbytes per key: schema 24 table %.1f, runs %.1f (%lld runs, filters %.1f MB in"
         " memory); open of the store at %ld keys: %.2f s\n",
         (double)old_bytes / (double)keys, (double)(runs_bytes - acc) / (double)keys,
         (long long)st.runs, (double)st.filter_bytes / 1e6, keys, open_s);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    return 1;
  free(r);
  free(ids);
  return 0;
}
