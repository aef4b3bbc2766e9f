/* What field encryption costs per value on one thread, over the real SQLite data key store
 * (keys cached, as in the server): sealing a 24-byte value (AES-256-GCM, base64), opening it,
 * and its blind index (HMAC-SHA256); and two threads sealing for one account at once.
 * usage: crypto_bench [--count N] [--out RESULTS.md] */
#include "results_file.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_crypto.h"
#include "ana_local_db.h"
#include "ana_log.h"
#include "ana_store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define HEADING "## Field encryption (`build/bench/crypto_bench`)"
#define VALUE "ann.example@example.org!"

static long count = 200000;
static struct ana_crypto *crypto;

static double now_s(void) {
  return (double)ana_clock_mono_ns() / 1e9;
}

static void *seal_loop(void *arg) {
  (void)arg;
  struct ana_error err;
  for (long i = 0; i < count; i++) {
    char *s = NULL;
    if (ana_crypto_seal(crypto, "acme", "properties.email", VALUE, strlen(VALUE), &s, &err) < 0) {
      fprintf(stderr, "crypto_bench: %s\n", err.message);
      exit(1);
    }
    ana_free(s);
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *out = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
      count = atol(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
    else {
      fprintf(stderr, "usage: crypto_bench [--count N] [--out RESULTS.md]\n");
      return 2;
    }
  }
  char dir[] = "/tmp/ana-crypto-bench-XXXXXX";
  if (!mkdtemp(dir))
    return 1;
  ana_log_set_level(ANA_LOG_WARN);
  struct ana_error err;
  const struct ana_data_key_store_ops *ops = ana_store_data_key_backend("sqlite");
  struct ana_local_db *db = ana_local_db_open(dir, &err);
  void *store = db ? ops->open(db, &err) : NULL;
  static const uint8_t master[32] = "bench-master-key-0123456789abcde";
  struct ana_crypto_options o = {master, sizeof master, ops, store, 10000};
  if (!store || !(crypto = ana_crypto_create(&o, &err))) {
    fprintf(stderr, "crypto_bench: %s\n", err.message);
    return 1;
  }
  char *sealed = NULL;
  if (ana_crypto_seal(crypto, "acme", "properties.email", VALUE, strlen(VALUE), &sealed, &err) < 0)
    return 1;
  double t0 = now_s();
  seal_loop(NULL);
  double seal_us = (now_s() - t0) / (double)count * 1e6;
  t0 = now_s();
  for (long i = 0; i < count; i++) {
    char *pt = NULL;
    size_t n = 0;
    if (ana_crypto_open(crypto, "acme", "properties.email", sealed, &pt, &n, &err) < 0)
      return 1;
    ana_free(pt);
  }
  double open_us = (now_s() - t0) / (double)count * 1e6;
  t0 = now_s();
  char blind[ANA_CRYPTO_BLIND_CHARS + 1];
  for (long i = 0; i < count; i++)
    if (ana_crypto_blind_index(crypto, "acme", "properties.email", VALUE, strlen(VALUE), blind) < 0)
      return 1;
  double blind_us = (now_s() - t0) / (double)count * 1e6;
  pthread_t th[2];
  t0 = now_s();
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, seal_loop, NULL);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  double two_us = (now_s() - t0) / (double)(2 * count) * 1e6;
  printf("seal %.2f us, open %.2f us, blind index %.2f us, 2 threads sealing: %.2f us per seal "
         "(wall clock / seals)\n",
         seal_us, open_us, blind_us, two_us);

  char section[2048];
  struct utsname u;
  uname(&u);
  double load = 0;
  FILE *lf = fopen("/proc/loadavg", "r");
  if (lf) {
    if (fscanf(lf, "%lf", &load) != 1)
      load = 0;
    fclose(lf);
  }
  snprintf(section, sizeof section,
           HEADING "\n\nMachine: %ld CPUs, Linux %s, 1-minute load average %.1f at the start "
                   "(a shared machine: other work shows in the figures). %ld operations each on a "
                   "%zu-byte value, data keys cached.\n\n| Operation | us |\n|---|---|\n"
                   "| seal (AES-256-GCM, base64) | %.2f |\n| open | %.2f |\n"
                   "| blind index (HMAC-SHA256) | %.2f |\n"
                   "| seal, 2 threads on one account (wall clock per seal) | %.2f |\n",
           sysconf(_SC_NPROCESSORS_ONLN), u.release, load, count, strlen(VALUE), seal_us, open_us,
           blind_us, two_us);
  if (out)
    bench_results_replace(out, HEADING, section);
  ana_free(sealed);
  ana_crypto_destroy(crypto);
  ops->close(store);
  ana_local_db_close(db);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}
