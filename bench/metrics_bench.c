/* Metric rollups benchmark: the delivery-rate metric over N events on 30
 * days, 1h buckets by campaignId and groupId, answered from rollups (p50/p99
 * of repeated queries), from raw events (query.c) and by the equivalent
 * hand-written SQL in the sqlite3 CLI on the same database; the rollup
 * backfill time; ingest throughput with 10 active metrics against none.
 * usage: metrics_bench [--events N] [--reps N] [--rollups-only] [--out RESULTS.md]
 * --rollups-only stops after the rollup queries (for profiling them). */
#include "ana_arena.h"
#include "ana_rollup.h"
#include "ana_store.h"
#include "bench_common.h"
#include "results_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOUR 3600000LL
#define DAY 86400000LL
#define T0 1704067200000LL /* 2024-01-01T00:00:00Z */
/* This benchmark's section of bench/RESULTS.md. */
#define METRICS_HEADING "## Metric rollups"

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest rank (ceil), not bench_percentile's rounded index: this section's
 * figures stay comparable with its earlier runs. */
static double pct(double *v, int n, double p) {
  qsort(v, (size_t)n, sizeof *v, cmpd);
  int r = (int)ceil(p / 100.0 * n);
  return v[r ? r - 1 : 0];
}

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static struct ana_local_db *db;
static const struct ana_event_store_ops *ops;
static void *store;
static long next_id;

/* Appends n events spread evenly over [t0, t0 + span) in batches. */
static const char *account = "bench";

static int load(long n, int64_t t0, int64_t span, int batch) {
  struct ana_event_record *recs = calloc((size_t)batch, sizeof *recs);
  char (*ids)[24] = calloc((size_t)batch, 24);
  char (*props)[160] = calloc((size_t)batch, 160);
  static const uint8_t payload[] = {0x2a, 0x01, 'x'};
  struct ana_error err;
  for (long done = 0; done < n;) {
    int k = n - done < batch ? (int)(n - done) : batch;
    for (int i = 0; i < k; i++) {
      long j = done + i;
      snprintf(ids[i], 24, "e%ld", next_id++);
      int64_t ts = t0 + (int64_t)((double)j / (double)n * (double)span);
      snprintf(props[i], 160,
               "{\"campaignId\":\"c%d\",\"groupId\":\"g%d\",\"campaign50\":\"c%d\","
               "\"group20\":\"g%d\",\"chars\":%d}",
               (int)(rnd() % 10), (int)(rnd() % 5), (int)(rnd() % 50), (int)(rnd() % 20),
               (int)(rnd() % 300));
      recs[i] = (struct ana_event_record){
          .account_id = account,
          .event_id = ids[i],
          .session_id = "",
          .event_type = "message",
          .event_name = rnd() % 10 < 6 ? "sent" : "delivered",
          .timestamp_ms = ts,
          .received_at_ms = ts,
          .expires_at_ms = ts + 400 * DAY,
          .properties_json = props[i],
          .search_text = "",
          .payload = payload,
          .payload_len = sizeof payload,
      };
    }
    if (ana_local_db_begin(db, &err) < 0 || ops->append(store, recs, (size_t)k, &err) < 0 ||
        ana_local_db_commit(db, &err) < 0) {
      fprintf(stderr, "load: %s\n", err.message);
      return -1;
    }
    done += k;
  }
  free(recs);
  free(ids);
  free(props);
  return 0;
}

struct metric {
  Analytics__V1__Metric m;
  char *dims[2];
  struct ana_formula *f;
};

static void metric_init(struct metric *x, const char *id, const char *d1, const char *d2) {
  analytics__v1__metric__init(&x->m);
  x->m.metric_id = (char *)id;
  x->m.name = (char *)id;
  x->m.type = "gauge";
  x->m.aggregation = "avg";
  x->m.formula = "(count(delivered) / count(sent)) * 100";
  x->dims[0] = (char *)d1;
  x->dims[1] = (char *)d2;
  x->m.dimensions = x->dims;
  x->m.n_dimensions = 2;
  struct ana_error err;
  int pos;
  x->f = ana_formula_parse(x->m.formula, NULL, &err, &pos);
}

static int query(struct ana_rollups *r, struct metric *x, int top_n, bool raw, double *secs) {
  struct ana_metric_query q = {.metric = &x->m,
                               .formula = x->f,
                               .account_id = "bench",
                               .from_ms = T0,
                               .to_ms = T0 + 30 * DAY,
                               .interval = ANA_INTERVAL_1H,
                               .time_zone = "Europe/Berlin",
                               .top_n = top_n};
  struct ana_arena *a = ana_arena_create(1 << 20, 0);
  Analytics__V1__MetricData out = ANALYTICS__V1__METRIC_DATA__INIT;
  struct ana_error err;
  double t = bench_now_s();
  int rc = raw ? ana_metric_query_raw(ops, store, &q, a, &out, &err)
               : ana_rollup_query(r, &q, a, &out, &err);
  *secs = bench_now_s() - t;
  if (rc < 0)
    fprintf(stderr, "query: %s\n", err.message);
  int series = (int)out.n_series;
  ana_arena_destroy(a);
  return rc < 0 ? -1 : (raw ? series : (rc == 1 ? series : -2));
}

static double sqlite_cli(const char *dir, const char *d1, const char *d2) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "sqlite3 %s/analytics.db \"SELECT json_extract(properties,'\\$.%s') c,"
           " json_extract(properties,'\\$.%s') g, ts / 3600000 h,"
           " 100.0 * SUM(event_name = 'delivered') / NULLIF(SUM(event_name = 'sent'), 0)"
           " FROM events WHERE account_id = 'bench' AND event_name IN ('sent','delivered')"
           " AND ts >= %lld AND ts < %lld GROUP BY c, g, h;\" > /dev/null",
           dir, d1, d2, (long long)(T0 - 30 * DAY), (long long)(T0 + 30 * DAY));
  double t = bench_now_s();
  if (system(cmd) != 0)
    return -1;
  return bench_now_s() - t;
}

int main(int argc, char **argv) {
  long events = 10000000;
  const char *out_path = NULL;
  int reps = 50;
  bool rollups_only = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
      events = atol(argv[++i]);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--rollups-only") == 0)
      rollups_only = true;
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out_path = argv[++i];
  }
  char dir[] = "/tmp/ana-metrics-bench-XXXXXX";
  if (!mkdtemp(dir))
    return 1;
  struct ana_error err;
  db = ana_local_db_open(dir, &err);
  ops = ana_store_event_backend("sqlite");
  store = db ? ops->open(db, &err) : NULL;
  if (!store) {
    fprintf(stderr, "%s\n", err.message);
    return 1;
  }
  double t = bench_now_s();
  if (load(events, T0, 30 * DAY, 10000) < 0)
    return 1;
  double load_s = bench_now_s() - t;
  fprintf(stderr, "loaded %ld events in %.1f s\n", events, load_s);

  struct ana_rollups *r = ana_rollup_create(db, ops, store, NULL, &err);
  struct metric a, b;
  metric_init(&a, "rate-10x5", "campaignId", "groupId");
  metric_init(&b, "rate-50x20", "campaign50", "group20");
  t = bench_now_s();
  if (ana_rollup_define(r, "bench", &a.m, a.f, &err) < 0 ||
      ana_rollup_define(r, "bench", &b.m, b.f, &err) < 0) {
    fprintf(stderr, "%s\n", err.message);
    return 1;
  }
  ana_rollup_wait_idle(r, 3600 * 1000);
  double backfill_s = bench_now_s() - t;
  fprintf(stderr, "backfilled 2 metrics in %.1f s\n", backfill_s);

  if (reps < 1)
    reps = 1;
  double *qa = calloc((size_t)reps, sizeof *qa), *qb = calloc((size_t)reps, sizeof *qb);
  int sa = 0, sb = 0;
  for (int i = 0; i < reps; i++) {
    sa = query(r, &a, 0, false, &qa[i]);
    sb = query(r, &b, 10, false, &qb[i]);
  }
  if (rollups_only) {
    printf("(a) %d series p50 / p99 %.2f / %.2f ms\n(b) %d series p50 / p99 %.2f / %.2f ms\n", sa,
           pct(qa, reps, 50) * 1e3, pct(qa, reps, 99) * 1e3, sb, pct(qb, reps, 50) * 1e3,
           pct(qb, reps, 99) * 1e3);
    ana_rollup_destroy(r);
    goto done;
  }
  double raw_a, raw_b;
  query(r, &a, 0, true, &raw_a);
  query(r, &b, 10, true, &raw_b);
  double cli_a = sqlite_cli(dir, "campaignId", "groupId");
  double cli_b = sqlite_cli(dir, "campaign50", "group20");
  fprintf(stderr, "rollups a: %d series p50 %.2f ms; raw %.2f s; cli %.2f s\n", sa,
          pct(qa, reps, 50) * 1e3, raw_a, cli_a);

  /* Ingest with 10 active metrics against none: same load, rollups on or
   * off; the rollup thread follows concurrently. */
  long ingest_n = events / 50 > 100000 ? events / 50 : 100000;
  ana_rollup_destroy(r);
  r = NULL;
  /* none: a manager with no definitions is what "none" means; the two
   * benchmark metrics are forgotten first. */
  r = ana_rollup_create(db, ops, store, NULL, &err);
  ana_rollup_forget(r, "rate-10x5", &err);
  ana_rollup_forget(r, "rate-50x20", &err);
  ana_rollup_wait_idle(r, 600000);
  account = "ingest"; /* the ten metrics' backfill reads no events */
  t = bench_now_s();
  load(ingest_n, T0 + 30 * DAY, DAY, 1000);
  double none_s = bench_now_s() - t;
  struct metric ten[10];
  char ids[10][16];
  for (int i = 0; i < 10; i++) {
    snprintf(ids[i], sizeof ids[i], "m%d", i);
    metric_init(&ten[i], ids[i], i % 2 ? "campaignId" : "campaign50", i % 2 ? "groupId" : "group20");
    ana_rollup_define(r, "ingest", &ten[i].m, ten[i].f, &err);
  }
  /* Let their backfill finish so that only live maintenance is measured. */
  ana_rollup_wait_idle(r, 3600 * 1000);
  t = bench_now_s();
  load(ingest_n, T0 + 31 * DAY, DAY, 1000);
  double with_s = bench_now_s() - t;
  double lag_t = bench_now_s();
  ana_rollup_wait_idle(r, 3600 * 1000);
  double lag_s = bench_now_s() - lag_t;
  ana_rollup_destroy(r);

  /* The heading keeps the command after the stable part that
   * bench_results_replace looks for, so one run replaces the last one. */
  char section[4096];
  snprintf(section, sizeof section,
           METRICS_HEADING " (`build/bench/metrics_bench --events %ld`)\n\n"
           "Delivery rate `(count(delivered) / count(sent)) * 100` over %ld events on 30 days, "
           "30-day range at 1h buckets (Europe/Berlin), by campaignId and groupId. Load (raw "
           "inserts, batches of 10,000): %.1f s; backfill of both metrics' rollups: %.1f s.\n\n"
           "| Measure | Result | Baseline | Ratio | Target |\n|---|---|---|---|---|\n"
           "| (a) 10 campaigns x 5 groups, from rollups, p50 / p99 (%d series) | %.2f / %.2f ms "
           "| | | p99 <= 5 ms |\n"
           "| (b) 50 x 20 groups, top 10 + other, from rollups, p50 / p99 (%d series) | %.2f / "
           "%.2f ms | | | |\n"
           "| (a) from raw events (query.c) | %.2f s | sqlite3 CLI, hand-written SQL: %.2f s | "
           "%.2f | <= 1.5 |\n"
           "| (b) from raw events (query.c) | %.2f s | sqlite3 CLI, hand-written SQL: %.2f s | "
           "%.2f | <= 1.5 |\n"
           "| ingest, %ld events in batches of 1,000 (direct appends), 10 active metrics | %.0f "
           "ev/s | no metrics: %.0f ev/s | %.2f | >= 0.80 |\n"
           "| rollups caught up after that ingest | %.2f s later | | | |\n",
           events, events, load_s, backfill_s, sa, pct(qa, reps, 50) * 1e3,
           pct(qa, reps, 99) * 1e3, sb, pct(qb, reps, 50) * 1e3, pct(qb, reps, 99) * 1e3, raw_a,
           cli_a, raw_a / cli_a, raw_b, cli_b, raw_b / cli_b, ingest_n, ingest_n / with_s,
           ingest_n / none_s, none_s / with_s, lag_s);
  fputs(section, stdout);
  if (out_path)
    bench_results_replace(out_path, METRICS_HEADING, section);
done:
  free(qa);
  free(qb);
  ops->close(store);
  ana_local_db_close(db);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}
