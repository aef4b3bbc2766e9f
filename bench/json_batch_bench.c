/* A REST batch body's decoding (JSON into a TrackEventsRequest), whole on
 * one thread against split in chunks on that thread and one helper, as the
 * bridge's decode pool does: wall time and the process's CPU time per body,
 * rounds alternating. 1,000 events shaped as bench/peers sends them.
 * usage: json_batch_bench [--rounds N] [--bodies N] */
#include "ana_arena.h"
#include "ana_clock.h"
#include "ana_json.h"
#include "ana_workers.h"
#include "analytics/v1/events.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double mono_s(void) {
  return (double)ana_clock_mono_ns() / 1e9;
}

static double cpu_s(void) {
  return (double)ana_clock_process_cpu_ns(getpid()) / 1e9;
}

static void run_parallel(void *runner, size_t n, void (*fn)(void *ctx, size_t i), void *ctx) {
  ana_workers_parallel(runner, 1, n, fn, ctx);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int rounds = 9, bodies = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--rounds") == 0)
      rounds = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--bodies") == 0)
      bodies = atoi(argv[i + 1]);
  }
  static const char *const names[] = {"message_sent", "delivered", "read", "clicked"};
  size_t cap = 1000 * 300, len = 0;
  char *doc = malloc(cap);
  if (!doc)
    return 1;
  len += (size_t)snprintf(doc, cap, "{\"events\":[");
  srand(5);
  for (int i = 0; i < 1000; i++)
    len += (size_t)snprintf(
        doc + len, cap - len,
        "%s{\"eventId\":\"%08x-%04x-%04x-%04x-%08x%04x\",\"eventType\":\"message\",\"eventName\":"
        "\"%s\",\"timestamp\":\"2026-11-%02dT%02d:%02d:%02d.%03dZ\",\"properties\":{\"campaignId\":"
        "\"c%d\",\"groupId\":\"g%d\"}}",
        i ? "," : "", rand(), rand() & 0xffff, rand() & 0xffff, rand() & 0xffff, rand(),
        rand() & 0xffff, names[rand() % 4], 1 + rand() % 28, rand() % 24, rand() % 60, rand() % 60,
        rand() % 1000, rand() % 50, rand() % 20);
  len += (size_t)snprintf(doc + len, cap - len, "]}");
  struct ana_workers *w = ana_workers_create(1, 16);
  double wall[2][64], cpu[2][64];
  if (rounds > 64)
    rounds = 64;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < 2; k++) {
      int mode = r % 2 ? 1 - k : k; /* alternate which goes first */
      struct ana_json_options o = {0};
      if (mode) {
        o.parallel = run_parallel;
        o.runner = w;
      }
      double w0 = mono_s(), c0 = cpu_s();
      for (int b = 0; b < bodies; b++) {
        struct ana_arena a;
        struct ana_error err;
        ana_arena_init(&a, 64 * 1024, 0);
        if (!ana_json_decode(&analytics__v1__track_events_request__descriptor, doc, len, &a, &o,
                             &err, NULL, 0)) {
          fprintf(stderr, "decode failed: %s\n", err.message);
          return 1;
        }
        ana_arena_fini(&a);
      }
      wall[mode][r] = (mono_s() - w0) / bodies * 1e3;
      cpu[mode][r] = (cpu_s() - c0) / bodies * 1e3;
    }
  }
  printf("one body: %zu bytes, 1000 events; %d rounds of %d bodies each way\n", len, rounds,
         bodies);
  for (int mode = 0; mode < 2; mode++) {
    printf("%-28s wall ms/body:", mode ? "split, caller + 1 helper" : "whole, one thread");
    for (int r = 0; r < rounds; r++)
      printf(" %.2f", wall[mode][r]);
    printf(" | CPU ms/body:");
    for (int r = 0; r < rounds; r++)
      printf(" %.2f", cpu[mode][r]);
    printf("\n");
  }
  for (int mode = 0; mode < 2; mode++) {
    qsort(wall[mode], (size_t)rounds, sizeof(double), cmp);
    qsort(cpu[mode], (size_t)rounds, sizeof(double), cmp);
  }
  printf("median: whole %.2f ms wall, %.2f ms CPU; split %.2f ms wall, %.2f ms CPU; split/whole "
         "wall %.2f, CPU %.2f\n",
         wall[0][rounds / 2], cpu[0][rounds / 2], wall[1][rounds / 2], cpu[1][rounds / 2],
         wall[1][rounds / 2] / wall[0][rounds / 2], cpu[1][rounds / 2] / cpu[0][rounds / 2]);
  ana_workers_destroy(w);
  free(doc);
  return 0;
}
