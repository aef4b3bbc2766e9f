/* The post-commit pipeline: declared order, registration, the run loop and
 * its per-subscriber counters on /metrics. */
#include "ana_post_commit.h"

#include "ana_alloc.h"
#include "ana_prom.h"
#include "ana_clock.h"

#include <stdbool.h>
#include <string.h>
#include <time.h>

struct subscriber {
  const char *name; /* borrowed: the declared list */
  ana_post_commit_fn fn;
  void *ctx;
  /* Written by the commit thread only, read by /metrics: relaxed atomics. */
  struct ana_prom_counter calls, records, nanoseconds;
};

struct ana_post_commit {
  struct subscriber subs[ANA_POST_COMMIT_MAX];
  size_t n;
  bool started;
  bool metrics_registered;
};

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_post_commit *pc = ctx;
  static const struct {
    const char *name, *help;
  } families[] = {
      {"ana_post_commit_records_total",
       "Records handed to each post-commit subscriber (duplicates included)."},
      {"ana_post_commit_calls_total", "Calls of each post-commit subscriber's hook."},
      {"ana_post_commit_seconds_total",
       "Time spent inside each post-commit subscriber's hook, on the commit thread."},
  };
  for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
    ana_prom_write_family(w, families[f].name, "counter", families[f].help);
    for (size_t i = 0; i < pc->n; i++) {
      const struct subscriber *s = &pc->subs[i];
      const char *labels[] = {"subscriber", s->name, NULL};
      if (f == 0)
        ana_prom_write_u64(w, families[f].name, labels, ana_prom_counter_get(&s->records));
      else if (f == 1)
        ana_prom_write_u64(w, families[f].name, labels, ana_prom_counter_get(&s->calls));
      else
        ana_prom_write_double(w, families[f].name, labels,
                              (double)ana_prom_counter_get(&s->nanoseconds) / 1e9);
    }
  }
}

struct ana_post_commit *ana_post_commit_create(const char *const *names, size_t n,
                                               struct ana_error *err) {
  if (n > ANA_POST_COMMIT_MAX) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "post-commit pipeline: %zu subscribers, at most %d", n, ANA_POST_COMMIT_MAX);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (!names[i] || !names[i][0]) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                    "post-commit pipeline: subscriber %zu has no name", i);
      return NULL;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(names[i], names[j]) == 0) {
        ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                      "post-commit pipeline: subscriber %s is declared twice", names[i]);
        return NULL;
      }
    }
  }
  struct ana_post_commit *pc = ana_calloc(1, sizeof *pc);
  if (!pc) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    pc->subs[i].name = names[i];
  pc->n = n;
  pc->metrics_registered = ana_prom_register(collect, pc) == 0;
  return pc;
}

int ana_post_commit_register(struct ana_post_commit *pc, const char *name, ana_post_commit_fn fn,
                             void *ctx, struct ana_error *err) {
  if (pc->started) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                  "post-commit subscriber %s: the pipeline has started; register before traffic",
                  name);
    return ANA_ERR_CLOSED;
  }
  for (size_t i = 0; i < pc->n; i++) {
    struct subscriber *s = &pc->subs[i];
    if (strcmp(s->name, name) != 0)
      continue;
    if (s->fn) {
      ana_error_set(err, ANA_STATUS_ALREADY_EXISTS,
                    "post-commit subscriber %s is registered already", name);
      return ANA_ERR_EXISTS;
    }
    s->fn = fn;
    s->ctx = ctx;
    return 0;
  }
  ana_error_set(err, ANA_STATUS_NOT_FOUND,
                "post-commit subscriber %s is not declared in the pipeline's order", name);
  return ANA_ERR_NOT_FOUND;
}

void ana_post_commit_start(struct ana_post_commit *pc) {
  pc->started = true;
}

void ana_post_commit_run(struct ana_post_commit *pc, const struct ana_event_record *records,
                         size_t n) {
  if (!pc || !pc->started)
    return;
  /* One clock read per subscriber plus one: each hook's end is the next's
   * start (the loop's own cost is counted to the hook before it). */
  int64_t t0 = ana_clock_mono_ns();
  for (size_t i = 0; i < pc->n; i++) {
    struct subscriber *s = &pc->subs[i];
    if (!s->fn)
      continue;
    s->fn(s->ctx, records, n);
    int64_t t1 = ana_clock_mono_ns();
    ana_prom_counter_add(&s->calls, 1);
    ana_prom_counter_add(&s->records, n);
    ana_prom_counter_add(&s->nanoseconds, (uint64_t)(t1 - t0));
    t0 = t1;
  }
}

int ana_post_commit_stats(const struct ana_post_commit *pc, size_t i,
                          struct ana_post_commit_stats *out) {
  if (i >= pc->n)
    return ANA_ERR_NOT_FOUND;
  const struct subscriber *s = &pc->subs[i];
  out->name = s->name;
  out->registered = s->fn != NULL;
  out->calls = ana_prom_counter_get(&s->calls);
  out->records = ana_prom_counter_get(&s->records);
  out->nanoseconds = ana_prom_counter_get(&s->nanoseconds);
  return 0;
}

void ana_post_commit_destroy(struct ana_post_commit *pc) {
  if (!pc)
    return;
  if (pc->metrics_registered)
    ana_prom_unregister(collect, pc);
  ana_free(pc);
}
