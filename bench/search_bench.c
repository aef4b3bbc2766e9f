/* Common-word search benchmark: SearchEvents over the embedded store for
 * words in 10% of the events, the query of the index's format 1 (every
 * match joined and sorted) against the current one, in the same process,
 * alternating, on the same events; and the free-text index's size per
 * event in each format.
 *
 * usage: search_bench [--events N] [--runs R] [--old-runs R] [--dir D] [--out FILE] */
#include "ana_local_db.h"
#include "ana_store.h"
#include "bench_common.h"
#include "results_file.h"
#include "search_format1.h"

#include "ana_clock.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define DAY_MS 86400000LL
#define PAGE 50

static long n_events = 1000000;
static int runs = 200, old_runs = 20;
static int64_t now_ms;

static double file_bytes(const char *dir, const char *name) {
  char path[512];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return stat(path, &st) == 0 ? (double)st.st_size : 0;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "search_bench: %s: %s\n", what, why);
  exit(1);
}

static const char *const names[] = {"message_sent", "message_delivered", "message_read",
                                    "link_clicked"};

/* Each event's campaign, group and time, drawn once (draw_events): fill
 * stores them, and format 1's build makes the same texts from them, also
 * when --dir reuses a store filled by an earlier run. */
static unsigned char *campaign_of, *group_of;
static int64_t *ts_of;

static void draw_events(void) {
  campaign_of = malloc((size_t)n_events);
  group_of = malloc((size_t)n_events);
  ts_of = malloc((size_t)n_events * sizeof *ts_of);
  if (!campaign_of || !group_of || !ts_of)
    die("draw", "out of memory");
  srand(1);
  for (long i = 0; i < n_events; i++) {
    campaign_of[i] = (unsigned char)(rand() % 50);
    group_of[i] = (unsigned char)(rand() % 20);
    ts_of[i] = now_ms - (int64_t)(((uint64_t)rand() << 16 ^ (uint64_t)rand()) % (30 * DAY_MS));
  }
}

/* Event number done's free-text, as fill stores it and format 1 indexes it. */
static void event_text(long done, char *buf, size_t len) {
  snprintf(buf, len, "%s message c%d g%d text 150 t%ld u%ld", names[(done / 100) % 4],
           campaign_of[done], group_of[done], done % 10, (done / 10) % 10);
}

/* Marketing events: four names, 50 campaigns x 20 groups, random
 * timestamps over 30 days (an import of history), and two words of ten
 * values each, t0..t9 and u0..u9, each value in 10% of the events. */
static void fill(const char *dir) {
  struct ana_error err;
  struct ana_local_db *db = ana_local_db_open(dir, &err);
  if (!db)
    die("open", err.message);
  enum { BATCH = 10000 };
  struct row {
    char id[32], text[128], props[96];
    struct ana_event_record r;
  } *rows = calloc(BATCH, sizeof *rows);
  struct ana_event_record *recs = calloc(BATCH, sizeof *recs);
  uint8_t payload[200];
  memset(payload, 0x5a, sizeof payload);
  /* Random timestamps touch pages all over the events' indexes: the WAL
   * would grow by gigabytes between the store's own checkpoints. */
  for (long done = 0, batches = 0; done < n_events; batches++) {
    if (batches % 20 == 19)
      ana_local_db_checkpoint(db, &err);
    if (ana_local_db_begin(db, &err) < 0)
      die("begin", err.message);
    int k = 0;
    for (; k < BATCH && done < n_events; k++, done++) {
      struct row *w = &rows[k];
      int c = campaign_of[done], g = group_of[done];
      const char *name = names[(done / 100) % 4]; /* apart from the words */
      snprintf(w->id, sizeof w->id, "e%ld", done);
      event_text(done, w->text, sizeof w->text);
      snprintf(w->props, sizeof w->props, "{\"campaignId\":\"c%d\",\"groupId\":\"g%d\"}", c, g);
      int64_t ts = ts_of[done];
      recs[k] = (struct ana_event_record){
          .account_id = "default",
          .event_id = w->id,
          .session_id = "s",
          .event_type = "message",
          .event_name = name,
          .timestamp_ms = ts,
          .received_at_ms = now_ms,
          .expires_at_ms = ts + 90 * DAY_MS,
          .properties_json = w->props,
          .search_text = w->text,
          .payload = payload,
          .payload_len = sizeof payload,
      };
    }
    if (ana_local_dedupe_claim(db, recs, (size_t)k, &err) < 0 ||
        ana_local_spool_append(db, recs, (size_t)k, &err) < 0 || ana_local_db_commit(db, &err) < 0)
      die("insert", err.message);
  }
  free(rows);
  free(recs);
  ana_local_db_close(db);
}

/* ------------------------------------------------------------------ */
/* the two queries */

struct page {
  int n;
  char ids[PAGE][32];
  int64_t ts[PAGE];
};

static int collect(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *id,
                   uint64_t seq) {
  (void)payload;
  (void)len;
  (void)seq;
  struct page *p = ctx;
  snprintf(p->ids[p->n], sizeof p->ids[0], "%s", id);
  p->ts[p->n++] = ts;
  return p->n == PAGE;
}

static const struct ana_search_index_ops *ops;
static void *index_handle;

static void new_search(const struct ana_event_query *q, struct page *p) {
  struct ana_error err;
  p->n = 0;
  if (ops->search(index_handle, q, collect, p, &err) < 0)
    die("search", err.message);
}

static void old_search(const struct ana_event_query *q, struct page *p) {
  p->n = 0;
  search_format1_search(q, collect, p);
}

/* ------------------------------------------------------------------ */
/* the cases */

struct search_case {
  const char *label;
  bool two_words, by_name, one_day;
  int page; /* 1 or 10 */
};

/* Run i's query of case c (its words and day vary with i), positioned at
 * the case's page by following the cursor of the pages before (read with
 * the current query, untimed). */
static void make_query(const struct search_case *c, int i, struct ana_event_query *q, char *text,
                       size_t cap, char *cursor_id) {
  if (c->two_words)
    snprintf(text, cap, "t%d u%d", i % 10, (i * 3 + 1) % 10);
  else
    snprintf(text, cap, "t%d", i % 10);
  *q = (struct ana_event_query){.account_id = "default",
                                .from_ms = INT64_MIN,
                                .to_ms = INT64_MAX,
                                .text = text,
                                .limit = PAGE};
  if (c->by_name)
    q->event_name = "message_read";
  if (c->one_day) {
    q->to_ms = now_ms - (int64_t)(i % 28) * DAY_MS;
    q->from_ms = q->to_ms - DAY_MS;
  }
  for (int p = 1; p < c->page; p++) {
    struct page pg;
    new_search(q, &pg);
    if (pg.n == 0)
      break;
    q->after_cursor = true;
    q->cursor_ts = pg.ts[pg.n - 1];
    snprintf(cursor_id, 32, "%s", pg.ids[pg.n - 1]);
    q->cursor_event_id = cursor_id;
  }
}

/* CPU time of the calling thread, in ms: what a query costs apart from
 * waiting for a CPU on a shared machine. */
static double thread_cpu_ms(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

int main(int argc, char **argv) {
  const char *out_path = NULL, *dir_arg = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
      n_events = atol(argv[++i]);
    else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--old-runs") == 0 && i + 1 < argc)
      old_runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir_arg = argv[++i];
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out_path = argv[++i];
    else {
      fprintf(stderr, "usage: search_bench [--events N] [--runs R] [--old-runs R] [--dir D] "
                      "[--out FILE]\n");
      return 2;
    }
  }
  if (old_runs > runs)
    old_runs = runs;
  char dir[256];
  if (dir_arg)
    snprintf(dir, sizeof dir, "%s", dir_arg);
  else
    snprintf(dir, sizeof dir, "/tmp/search_bench.%d", (int)getpid());
  now_ms = ana_clock_wall_ms() / 1000 * 1000;
  char cmd[600];
  /* --dir with a store already filled (by an earlier run with the same
   * --events): reused, only the indexes are built again. */
  bool reuse = dir_arg && file_bytes(dir, "analytics.db") > 0;
  snprintf(cmd, sizeof cmd, reuse ? "rm -f %s/*text.db*" : "rm -rf %s && mkdir -p %s", dir, dir);
  if (system(cmd) != 0)
    die("mkdir", dir);

  draw_events();
  double t0 = bench_now_s(), fill_s = 0;
  if (!reuse) {
    printf("filling %ld events...\n", n_events);
    fill(dir);
    fill_s = bench_now_s() - t0;
  }

  /* The current index, built as the server builds it (its thread, its
   * batches): what a rebuild after a format change costs. Searches read a
   * checkpointed database, as after the store's idle checkpoint, not one
   * behind gigabytes of WAL. */
  struct ana_error err;
  ops = ana_store_search_backend("sqlite");
  struct ana_local_db *db = ana_local_db_open(dir, &err);
  if (!db)
    die("open", err.message);
  if (ana_local_db_checkpoint(db, &err) < 0)
    die("checkpoint", err.message);
  uint64_t last = 0;
  ana_local_spool_last_seq(db, &last, &err);
  t0 = bench_now_s();
  index_handle = ops->open(db, &err);
  if (!index_handle || ops->wait(index_handle, last, 3600 * 1000, &err) < 0)
    die("index", err.message);
  double new_rate = (double)n_events / (bench_now_s() - t0);
  ops->close(index_handle);
  double old_rate = search_format1_build(dir, n_events, event_text);
  double new_bytes = file_bytes(dir, "analytics-text.db") / (double)n_events;
  double old_bytes = file_bytes(dir, "old-text.db") / (double)n_events;
  printf(
      "index: current format %.1f B/event built at %.0f ev/s; format 1 %.1f B/event at %.0f ev/s\n",
      new_bytes, new_rate, old_bytes, old_rate);

  index_handle = ops->open(db, &err);
  if (!index_handle || ops->wait(index_handle, last, 60000, &err) < 0)
    die("index", err.message);
  search_format1_open(dir);

  static const struct search_case cases[] = {
      {"one word, page 1", false, false, false, 1},
      {"one word, page 10", false, false, false, 10},
      {"one word, eventName, page 1", false, true, false, 1},
      {"one word, eventName, page 10", false, true, false, 10},
      {"one word, 1-day range, page 1", false, false, true, 1},
      {"one word, 1-day range, page 10", false, false, true, 10},
      {"one word, eventName + 1-day range, page 1", false, true, true, 1},
      {"one word, eventName + 1-day range, page 10", false, true, true, 10},
      {"two words, page 1", true, false, false, 1},
      {"two words, page 10", true, false, false, 10},
      {"two words, eventName, page 1", true, true, false, 1},
      {"two words, eventName, page 10", true, true, false, 10},
      {"two words, 1-day range, page 1", true, false, true, 1},
      {"two words, 1-day range, page 10", true, false, true, 10},
      {"two words, eventName + 1-day range, page 1", true, true, true, 1},
      {"two words, eventName + 1-day range, page 10", true, true, true, 10},
  };
  size_t n_cases = sizeof cases / sizeof cases[0];
  char section[8192];
  size_t len = 0;
#define OUT(...) len += (size_t)snprintf(section + len, sizeof section - len, __VA_ARGS__)
  char mach[256];
  bench_machine(mach, sizeof mach);
  double load = 0;
  getloadavg(&load, 1);
  char filled[64] = ", the store of an earlier run with --dir";
  if (!reuse)
    snprintf(filled, sizeof filled, ", filled in %.0f s", fill_s);
  OUT("## Common-word search\n\n");
  OUT("`build/bench/search_bench --events %ld` on %s: %ld events (4 names, 50 campaigns x 20 "
      "groups, random timestamps over 30 days%s), pages of %d, words t0..t9 "
      "and u0..u9 each in 10%% of the events (two words: both, 1%%); eventName message_read "
      "(25%%); a 1-day range. In the same process, alternating per run: the query of the "
      "index's format 1 (every match joined with its event and sorted; %d runs) and the current "
      "one (%d runs). Wall time, and in parentheses the thread's CPU time (getrusage), which "
      "the machine's other load does not inflate (load average %.1f at the start). Equal pages: "
      "every page of the old query was compared with the new one's.\n\n",
      n_events, mach, n_events, filled, PAGE, old_runs, runs, load);
  OUT("| case | format 1 p50 / p99 (CPU p50) | current p50 / p99 (CPU p50 / p99) | target "
      "|\n|---|---|---|---|\n");
  int mismatches = 0;
  double *lat_new = calloc((size_t)runs, sizeof *lat_new);
  double *lat_old = calloc((size_t)runs, sizeof *lat_old);
  double *cpu_new = calloc((size_t)runs, sizeof *cpu_new);
  double *cpu_old = calloc((size_t)runs, sizeof *cpu_old);
  for (size_t ci = 0; ci < n_cases; ci++) {
    const struct search_case *c = &cases[ci];
    for (int i = 0; i < runs; i++) {
      struct ana_event_query q;
      char text[32], cursor_id[32];
      make_query(c, i, &q, text, sizeof text, cursor_id);
      struct page a, b;
      double t = bench_now_s(), cpu = thread_cpu_ms();
      new_search(&q, &a);
      lat_new[i] = (bench_now_s() - t) * 1e3;
      cpu_new[i] = thread_cpu_ms() - cpu;
      if (i < old_runs) {
        t = bench_now_s();
        cpu = thread_cpu_ms();
        old_search(&q, &b);
        lat_old[i] = (bench_now_s() - t) * 1e3;
        cpu_old[i] = thread_cpu_ms() - cpu;
        bool same = a.n == b.n;
        for (int k = 0; same && k < a.n; k++)
          same = strcmp(a.ids[k], b.ids[k]) == 0;
        if (!same) {
          mismatches++;
          fprintf(stderr, "search_bench: %s run %d: pages differ (%d and %d events)\n", c->label, i,
                  a.n, b.n);
        }
      }
    }
    double n50 = bench_percentile(lat_new, (size_t)runs, 50),
           n99 = bench_percentile(lat_new, (size_t)runs, 99);
    double o50 = bench_percentile(lat_old, (size_t)old_runs, 50),
           o99 = bench_percentile(lat_old, (size_t)old_runs, 99);
    double nc50 = bench_percentile(cpu_new, (size_t)runs, 50),
           nc99 = bench_percentile(cpu_new, (size_t)runs, 99);
    double oc50 = bench_percentile(cpu_old, (size_t)old_runs, 50);
    printf("%-48s old %8.2f / %8.2f ms (cpu %7.2f)  new %7.2f / %7.2f ms (cpu %6.2f / %6.2f)\n",
           c->label, o50, o99, oc50, n50, n99, nc50, nc99);
    fflush(stdout);
    OUT("| %s | %.0f / %.0f ms (%.0f ms) | %.1f / %.1f ms (%.1f / %.1f ms) | p99 < 100 ms |\n",
        c->label, o50, o99, oc50, n50, n99, nc50, nc99);
  }
  OUT("\nFree-text index (analytics-text.db) per event: %.1f bytes (format 1: %.1f; target <= "
      "40). Built from the events (a rebuild after a format change) at %.0f events/s (format "
      "1: %.0f). Pages that differed between the two queries: %d.\n",
      new_bytes, old_bytes, new_rate, old_rate, mismatches);
#undef OUT
  printf("%s", section);
  if (out_path)
    bench_results_replace(out_path, "## Common-word search", section);
  free(lat_new);
  free(lat_old);
  free(cpu_new);
  free(cpu_old);
  search_format1_close();
  ops->close(index_handle);
  ana_local_db_close(db);
  if (!dir_arg) {
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
      return 1;
  }
  return mismatches ? 1 : 0;
}
