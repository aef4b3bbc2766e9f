/* Metric rollups benchmark, in three parts:
 *   queries: the delivery-rate metric over N events on 30 days, 1h buckets by
 *     campaignId and groupId, answered from rollups (p50/p99 of repeated
 *     queries), from raw events (query.c) and by the equivalent hand-written
 *     SQL in the sqlite3 CLI on the same database; the rollup backfill time;
 *   maintenance: the rollup thread alone catching up with events committed
 *     while it was stopped, for the ten metrics below (events x metrics per
 *     second: what live maintenance can follow);
 *   ingest: gRPC TrackEvents (batches of 100, 4 clients) into a fresh
 *     analyticsd with no metrics and into one with the ten metrics created
 *     through CreateMetric, alternating (none, ten, none, ten). Acknowledged
 *     rate, and sustained rate: the events over the load time plus the time
 *     the rollups took to catch up afterwards (ana_rollup_lag_events from
 *     the server's /metrics), which is what ingestion with metrics can keep
 *     up for good.
 * usage: metrics_bench [--events N] [--reps N] [--seconds S] [--server PATH]
 *                      [--maintenance-events N] [--only queries|maintenance|ingest]
 *                      [--rollups-only] [--out RESULTS.md]
 * --server defaults to ../server/analyticsd next to this program. --only runs
 * one part and prints its rows (never written to --out); --rollups-only stops
 * the queries part after the rollup queries (for profiling them). */
#include "ana_arena.h"
#include "ana_client_stubs.h"
#include "ana_rollup.h"
#include "ana_local_db.h"
#include "ana_store.h"
#include "bench_common.h"
#include "results_file.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HOUR 3600000LL
#define DAY 86400000LL
#define T0 1704067200000LL /* 2024-01-01T00:00:00Z */
/* This benchmark's section of bench/RESULTS.md. */
#define METRICS_HEADING "## Metric rollups"
/* The gRPC load of the ingest part. */
#define INGEST_CLIENTS 4
#define INGEST_BATCH 100
/* Runs of the ingest part: none, ten, none, ten. */
#define INGEST_PAIRS 2

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

/* The shape of the events load() appends. */
enum shape {
  /* sent / delivered with campaignId (10), groupId (5), campaign50 (50),
   * group20 (20), chars: the queries part */
  SHAPE_DELIVERY,
  /* the gRPC load's events (message_sent, some message_delivered) with
   * campaignId, groupId, messageType and charactersCount varied: the
   * maintenance part */
  SHAPE_MESSAGES,
};

/* Appends n events of account spread evenly over [t0, t0 + span) in
 * batches. */
static int load(const char *account, enum shape shape, long n, int64_t t0, int64_t span,
                int batch) {
  struct ana_event_record *recs = calloc((size_t)batch, sizeof *recs);
  char(*ids)[24] = calloc((size_t)batch, 24);
  char(*props)[160] = calloc((size_t)batch, 160);
  static const uint8_t payload[] = {0x2a, 0x01, 'x'};
  struct ana_error err;
  for (long done = 0; done < n;) {
    int k = n - done < batch ? (int)(n - done) : batch;
    for (int i = 0; i < k; i++) {
      long j = done + i;
      snprintf(ids[i], 24, "e%ld", next_id++);
      int64_t ts = t0 + (int64_t)((double)j / (double)n * (double)span);
      const char *name;
      if (shape == SHAPE_DELIVERY) {
        snprintf(props[i], 160,
                 "{\"campaignId\":\"c%d\",\"groupId\":\"g%d\",\"campaign50\":\"c%d\","
                 "\"group20\":\"g%d\",\"chars\":%d}",
                 (int)(rnd() % 10), (int)(rnd() % 5), (int)(rnd() % 50), (int)(rnd() % 20),
                 (int)(rnd() % 300));
        name = rnd() % 10 < 6 ? "sent" : "delivered";
      } else {
        snprintf(props[i], 160,
                 "{\"campaignId\":\"%d\",\"groupId\":\"%d\",\"messageType\":\"%s\","
                 "\"charactersCount\":%d}",
                 100 + (int)(rnd() % 10), 400 + (int)(rnd() % 5), rnd() % 4 ? "text" : "media",
                 (int)(rnd() % 300));
        name = rnd() % 10 < 7 ? "message_sent" : "message_delivered";
      }
      recs[i] = (struct ana_event_record){
          .account_id = account,
          .event_id = ids[i],
          .session_id = "",
          .event_type = "message",
          .event_name = name,
          .timestamp_ms = ts,
          .received_at_ms = ts,
          .expires_at_ms = ts + 400 * DAY,
          .properties_json = props[i],
          .search_text = "",
          .payload = payload,
          .payload_len = sizeof payload,
      };
    }
    if (ana_local_db_begin(db, &err) < 0 || ana_local_spool_append(db, recs, (size_t)k, &err) < 0 ||
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

/* Opens a fresh local database in dir (a mkdtemp template, filled in). */
static int open_store(char *dir) {
  struct ana_error err;
  if (!mkdtemp(dir))
    return -1;
  db = ana_local_db_open(dir, &err);
  ops = ana_store_event_backend("sqlite");
  store = db ? ops->open(db, &err) : NULL;
  if (!store) {
    fprintf(stderr, "%s\n", err.message);
    return -1;
  }
  return 0;
}

static int close_store(const char *dir) {
  ops->close(store);
  ana_local_db_close(db);
  store = NULL;
  db = NULL;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* the ten metrics of the maintenance and ingest parts */

/* Different functions (count, sum, avg, p95, uniq, a ratio, min/max, a
 * histogram), dimensions and filters over the gRPC load's events. */
static const struct ten_def {
  const char *name, *type, *formula;
  const char *dims[3];
  size_t n_dims;
  const char *filter_field, *filter_op, *filter_text;
  double filter_number;
} ten_defs[] = {
    {"sent", "counter", "count(message_sent)", {"campaignId"}, 1},
    {"characters", "counter", "sum(message_sent.charactersCount)", {"campaignId", "groupId"}, 2},
    {"average length", "gauge", "avg(message_sent.charactersCount)", {"messageType"}, 1},
    {"p95 length", "gauge", "p95(message_sent.charactersCount)", {"campaignId"}, 1},
    {"groups reached", "gauge", "uniq(message_sent.groupId)", {"campaignId"}, 1},
    {"delivery rate",
     "gauge",
     "(count(message_delivered) / count(message_sent)) * 100",
     {"campaignId", "groupId"},
     2},
    {"text length range",
     "gauge",
     "max(message_sent.charactersCount) - min(message_sent.charactersCount)",
     {"groupId"},
     1,
     "messageType",
     "eq",
     "text"},
    {"long messages",
     "counter",
     "count(message_sent)",
     {"campaignId", "groupId", "messageType"},
     3,
     "charactersCount",
     "gt",
     NULL,
     100},
    {"length histogram", "histogram", "p50(message_sent.charactersCount)", {"messageType"}, 1},
    {"characters per event",
     "gauge",
     "sum(*.charactersCount) / count(*)",
     {"campaignId"},
     1,
     "campaignId",
     "exists"},
};
#define N_TEN (sizeof ten_defs / sizeof ten_defs[0])

struct ten_metric {
  Analytics__V1__Metric m;
  Analytics__V1__MetricFilter filter, *filters[1];
  Google__Protobuf__Value value;
  char id[16];
  struct ana_formula *f; /* in-process definitions only */
};

static void ten_build(struct ten_metric *x, size_t i) {
  const struct ten_def *d = &ten_defs[i];
  analytics__v1__metric__init(&x->m);
  snprintf(x->id, sizeof x->id, "t%zu", i);
  x->m.metric_id = x->id;
  x->m.name = (char *)d->name;
  x->m.type = (char *)d->type;
  x->m.formula = (char *)d->formula;
  x->m.dimensions = (char **)d->dims;
  x->m.n_dimensions = d->n_dims;
  if (d->filter_field) {
    analytics__v1__metric_filter__init(&x->filter);
    x->filter.field = (char *)d->filter_field;
    x->filter.op = (char *)d->filter_op;
    if (strcmp(d->filter_op, "exists") != 0) {
      google__protobuf__value__init(&x->value);
      if (d->filter_text) {
        x->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        x->value.string_value = (char *)d->filter_text;
      } else {
        x->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        x->value.number_value = d->filter_number;
      }
      x->filter.value = &x->value;
    }
    x->filters[0] = &x->filter;
    x->m.filters = x->filters;
    x->m.n_filters = 1;
  }
  x->f = NULL;
}

/* ------------------------------------------------------------------ */
/* queries */

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

/* The queries part: its introduction and rows are appended to out (with
 * rollups_only, the rollup figures are printed instead). Returns 0 or -1. */
static int run_queries(long events, int reps, bool rollups_only, char *out, size_t cap) {
  char dir[] = "/tmp/ana-metrics-bench-XXXXXX";
  if (open_store(dir) < 0)
    return -1;
  struct ana_error err;
  double t = bench_now_s();
  if (load("bench", SHAPE_DELIVERY, events, T0, 30 * DAY, 10000) < 0)
    return -1;
  double load_s = bench_now_s() - t;
  fprintf(stderr, "loaded %ld events in %.1f s\n", events, load_s);

  struct ana_rollups *r = ana_rollup_create(db, ops, store, NULL, &err);
  if (!r) {
    fprintf(stderr, "%s\n", err.message);
    return -1;
  }
  struct metric a, b;
  metric_init(&a, "rate-10x5", "campaignId", "groupId");
  metric_init(&b, "rate-50x20", "campaign50", "group20");
  t = bench_now_s();
  if (ana_rollup_define(r, "bench", &a.m, a.f, &err) < 0 ||
      ana_rollup_define(r, "bench", &b.m, b.f, &err) < 0) {
    fprintf(stderr, "%s\n", err.message);
    return -1;
  }
  ana_rollup_wait_idle(r, 3600 * 1000);
  double backfill_s = bench_now_s() - t;
  fprintf(stderr, "backfilled 2 metrics in %.1f s\n", backfill_s);

  if (reps < 1)
    reps = 1;
  double *qa = calloc((size_t)reps, sizeof *qa), *qb = calloc((size_t)reps, sizeof *qb);
  int sa = 0, sb = 0;
  /* A first query of each reads the cells from the database and has the
   * rollup thread load them into memory; the timed ones run once they are
   * there (otherwise the p99 measures how soon that happened). */
  double cold_a, cold_b;
  query(r, &a, 0, false, &cold_a);
  query(r, &b, 10, false, &cold_b);
  ana_rollup_wait_idle(r, 600000);
  for (int i = 0; i < reps; i++) {
    sa = query(r, &a, 0, false, &qa[i]);
    sb = query(r, &b, 10, false, &qb[i]);
  }
  if (rollups_only) {
    printf("(a) %d series p50 / p99 %.2f / %.2f ms (first query %.2f ms)\n(b) %d series p50 / "
           "p99 %.2f / %.2f ms (first query %.2f ms)\n",
           sa, pct(qa, reps, 50) * 1e3, pct(qa, reps, 99) * 1e3, cold_a * 1e3, sb,
           pct(qb, reps, 50) * 1e3, pct(qb, reps, 99) * 1e3, cold_b * 1e3);
  } else {
    double raw_a, raw_b;
    query(r, &a, 0, true, &raw_a);
    query(r, &b, 10, true, &raw_b);
    double cli_a = sqlite_cli(dir, "campaignId", "groupId");
    double cli_b = sqlite_cli(dir, "campaign50", "group20");
    fprintf(stderr, "rollups a: %d series p50 %.2f ms; raw %.2f s; cli %.2f s\n", sa,
            pct(qa, reps, 50) * 1e3, raw_a, cli_a);
    size_t len = strlen(out);
    snprintf(out + len, cap - len,
             "Delivery rate `(count(delivered) / count(sent)) * 100` over %ld events on 30 days, "
             "30-day range at 1h buckets (Europe/Berlin), by campaignId and groupId. Load (raw "
             "inserts, batches of 10,000): %.1f s; backfill of both metrics' rollups: %.1f s.\n\n"
             "| Measure | Result | Baseline | Ratio | Target |\n|---|---|---|---|---|\n"
             "| (a) 10 campaigns x 5 groups, from rollups, p50 / p99 (%d series; the first "
             "query, which had the cells loaded into memory: %.1f ms) | %.2f / %.2f "
             "ms | | | p99 <= 5 ms |\n"
             "| (b) 50 x 20 groups, top 10 + other, from rollups, p50 / p99 (%d series; first "
             "query %.1f ms) | %.2f / %.2f ms | | | |\n"
             "| (a) from raw events (query.c) | %.2f s | sqlite3 CLI, hand-written SQL: %.2f s | "
             "%.2f | <= 1.5 |\n"
             "| (b) from raw events (query.c) | %.2f s | sqlite3 CLI, hand-written SQL: %.2f s | "
             "%.2f | <= 1.5 |\n",
             events, load_s, backfill_s, sa, cold_a * 1e3, pct(qa, reps, 50) * 1e3,
             pct(qa, reps, 99) * 1e3, sb, cold_b * 1e3, pct(qb, reps, 50) * 1e3,
             pct(qb, reps, 99) * 1e3, raw_a, cli_a, raw_a / cli_a, raw_b, cli_b, raw_b / cli_b);
  }
  ana_rollup_destroy(r);
  ana_formula_free(a.f);
  ana_formula_free(b.f);
  free(qa);
  free(qb);
  return close_store(dir);
}

/* ------------------------------------------------------------------ */
/* maintenance */

/* The ten metrics are defined on an empty account (complete at once), the
 * thread is stopped, n events are committed, and a new manager catches up
 * from the watermarks: the same loop as live maintenance, without the
 * commits competing. Returns the seconds it took, or -1. */
static double run_maintenance(long n) {
  char dir[] = "/tmp/ana-metrics-maint-XXXXXX";
  if (open_store(dir) < 0)
    return -1;
  struct ana_error err;
  struct ten_metric ten[N_TEN];
  struct ana_rollups *r = ana_rollup_create(db, ops, store, NULL, &err);
  if (!r)
    goto fail;
  for (size_t i = 0; i < N_TEN; i++) {
    int pos;
    ten_build(&ten[i], i);
    ten[i].f = ana_formula_parse(ten_defs[i].formula, NULL, &err, &pos);
    if (!ten[i].f || ana_rollup_define(r, "maint", &ten[i].m, ten[i].f, &err) < 0)
      goto fail;
  }
  ana_rollup_wait_idle(r, 600000);
  ana_rollup_destroy(r);
  if (load("maint", SHAPE_MESSAGES, n, T0, DAY, 1000) < 0)
    return -1;
  double t = bench_now_s();
  r = ana_rollup_create(db, ops, store, NULL, &err);
  if (!r)
    goto fail;
  ana_rollup_wait_idle(r, 3600 * 1000);
  double secs = bench_now_s() - t;
  ana_rollup_destroy(r);
  for (size_t i = 0; i < N_TEN; i++)
    ana_formula_free(ten[i].f);
  return close_store(dir) < 0 ? -1 : secs;
fail:
  fprintf(stderr, "maintenance: %s\n", err.message);
  return -1;
}

/* ------------------------------------------------------------------ */
/* ingest through gRPC */

/* GET /metrics from the server's HTTP port; the response (caller frees), or
 * NULL. HTTP/1.0: the body ends with the connection. */
static char *scrape(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
    if (s >= 0)
      close(s);
    return NULL;
  }
  static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  if (write(s, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
    close(s);
    free(buf);
    return NULL;
  }
  for (;;) {
    if (len + 1 == cap)
      buf = realloc(buf, cap *= 2);
    ssize_t k = read(s, buf + len, cap - len - 1);
    if (k <= 0)
      break;
    len += (size_t)k;
  }
  close(s);
  buf[len] = '\0';
  return buf;
}

/* The value of an unlabelled sample in a scrape, or NAN. */
static double sample(const char *text, const char *name) {
  size_t n = strlen(name);
  for (const char *p = text; (p = strstr(p, name)) != NULL; p += n)
    if ((p == text || p[-1] == '\n') && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  return NAN;
}

/* Waits until the server's rollups have caught up with every committed
 * event; returns false (with a message) when the gauge is missing. */
static bool wait_caught_up(const struct bench_proc *p, double *stored) {
  for (;;) {
    char *text = scrape(p->port);
    double lag = text ? sample(text, "ana_rollup_lag_events") : NAN;
    if (stored && text)
      *stored = sample(text, "ana_ingest_events_stored_total");
    free(text);
    if (isnan(lag)) {
      fprintf(stderr, "bench: no ana_rollup_lag_events in the server's /metrics\n");
      return false;
    }
    if (lag == 0)
      return true;
    usleep(10000);
  }
}

struct ingest_result {
  double ack;       /* events/s acknowledged during the load */
  double sustained; /* events / (load + catching up) */
  double lag_s;     /* catching up after the load */
};

static bool create_ten(struct ana_client_channel *ch) {
  for (size_t i = 0; i < N_TEN; i++) {
    struct ten_metric x;
    ten_build(&x, i);
    x.m.metric_id = ""; /* the server makes the id */
    Analytics__V1__CreateMetricRequest req = ANALYTICS__V1__CREATE_METRIC_REQUEST__INIT;
    Analytics__V1__Metric *resp = NULL;
    struct ana_error err;
    req.metric = &x.m;
    if (ana_stub_metric_service_create_metric(ch, &req, &resp, NULL, &err) < 0) {
      fprintf(stderr, "bench: CreateMetric \"%s\": %s\n", ten_defs[i].name, err.message);
      return false;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return true;
}

/* One run on a fresh analyticsd and store. */
static int run_ingest(const char *server_path, bool with_metrics, double seconds,
                      struct ingest_result *out) {
  char dir[] = "/tmp/ana-metrics-ingest-XXXXXX";
  if (!mkdtemp(dir))
    return -1;
  struct bench_proc p = bench_server_start(server_path, dir, NULL, NULL);
  struct ana_client_channel *ch = bench_channel_create(&p);
  int rc = -1;
  if (!ch || (with_metrics && !create_ten(ch)) || !wait_caught_up(&p, NULL))
    goto out;
  struct bench_grpc_load load = {
      .clients = INGEST_CLIENTS, .batch = INGEST_BATCH, .seconds = seconds};
  double t0 = bench_now_s();
  out->ack = bench_grpc_ingest_rate(ch, &load, NULL, NULL);
  double t1 = bench_now_s();
  double stored = NAN;
  if (!wait_caught_up(&p, &stored) || isnan(stored))
    goto out;
  double t2 = bench_now_s();
  out->lag_s = t2 - t1;
  out->sustained = stored / (t2 - t0);
  fprintf(stderr,
          "%s metrics: %.0f events, acknowledged %.0f ev/s, caught up %.2f s after the "
          "load: sustained %.0f ev/s\n",
          with_metrics ? "10" : "no", stored, out->ack, out->lag_s, out->sustained);
  rc = 0;
out:
  ana_client_channel_destroy(ch);
  bench_proc_stop(&p);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    rc = -1;
  return rc;
}

/* The ingest rows, appended to out. Returns 0 or -1. */
static int run_ingest_part(const char *server_path, double seconds, char *out, size_t cap) {
  struct ingest_result none = {0}, ten = {0};
  for (int i = 0; i < 2 * INGEST_PAIRS; i++) {
    struct ingest_result r = {0};
    if (run_ingest(server_path, i % 2 == 1, seconds, &r) < 0)
      return -1;
    struct ingest_result *sum = i % 2 ? &ten : &none;
    sum->ack += r.ack / INGEST_PAIRS;
    sum->sustained += r.sustained / INGEST_PAIRS;
    sum->lag_s += r.lag_s / INGEST_PAIRS;
  }
  size_t len = strlen(out);
  snprintf(out + len, cap - len,
           "| ingest through gRPC (TrackEvents, batches of %d, %d clients, %.0f s; mean of %d "
           "fresh servers each), 10 metrics, acknowledged | %.0f ev/s | no metrics: %.0f ev/s | "
           "%.2f | |\n"
           "| the same, sustained: events / (load + rollups catching up, %.2f s with 10 metrics, "
           "%.2f s with none) | %.0f ev/s | no metrics: %.0f ev/s | %.2f | >= 0.80 |\n",
           INGEST_BATCH, INGEST_CLIENTS, seconds, INGEST_PAIRS, ten.ack, none.ack,
           ten.ack / none.ack, ten.lag_s, none.lag_s, ten.sustained, none.sustained,
           ten.sustained / none.sustained);
  return 0;
}

int main(int argc, char **argv) {
  long events = 10000000, maint_events = 200000;
  const char *out_path = NULL, *only = NULL, *server_path = NULL;
  int reps = 50;
  double seconds = 5;
  bool rollups_only = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
      events = atol(argv[++i]);
    else if (strcmp(argv[i], "--maintenance-events") == 0 && i + 1 < argc)
      maint_events = atol(argv[++i]);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
      server_path = argv[++i];
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
      only = argv[++i];
    else if (strcmp(argv[i], "--rollups-only") == 0)
      rollups_only = true;
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out_path = argv[++i];
    else {
      fprintf(stderr, "usage: metrics_bench [--events N] [--reps N] [--seconds S] [--server "
                      "PATH] [--maintenance-events N] [--only queries|maintenance|ingest] "
                      "[--rollups-only] [--out RESULTS.md]\n");
      return 2;
    }
  }
  if (rollups_only)
    only = "queries";
  bool all = !only;
  if (only && strcmp(only, "queries") != 0 && strcmp(only, "maintenance") != 0 &&
      strcmp(only, "ingest") != 0) {
    fprintf(stderr, "bench: --only queries, maintenance or ingest\n");
    return 2;
  }
  static char derived[1024];
  if (!server_path) {
    /* build/bench/metrics_bench -> build/server/analyticsd */
    snprintf(derived, sizeof derived, "%s", argv[0]);
    char *slash = strrchr(derived, '/');
    *(slash ? slash + 1 : derived) = '\0';
    strncat(derived, "../server/analyticsd", sizeof derived - strlen(derived) - 1);
    server_path = derived;
  }
  if ((all || strcmp(only, "ingest") == 0) && access(server_path, X_OK) != 0) {
    fprintf(stderr, "bench: %s: not found (--server PATH)\n", server_path);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  bench_pin_client();

  static char section[8192];
  static char rows[4096];
  if (all || strcmp(only, "queries") == 0) {
    if (run_queries(events, reps, rollups_only, rows, sizeof rows) < 0)
      return 1;
    if (!all) {
      fputs(rows, stdout);
      return 0;
    }
  }
  if (!all)
    snprintf(rows, sizeof rows,
             "| Measure | Result | Baseline | Ratio | Target |\n"
             "|---|---|---|---|---|\n");
  if (all || strcmp(only, "maintenance") == 0) {
    double secs = run_maintenance(maint_events);
    if (secs < 0)
      return 1;
    size_t len = strlen(rows);
    snprintf(rows + len, sizeof rows - len,
             "| rollup maintenance alone: %ld committed events x %zu metrics caught up in %.2f "
             "s | %.0f events x metrics/s | | | |\n",
             maint_events, N_TEN, secs, (double)maint_events * N_TEN / secs);
  }
  if ((all || strcmp(only, "ingest") == 0) &&
      run_ingest_part(server_path, seconds, rows, sizeof rows) < 0)
    return 1;
  if (!all) {
    fputs(rows, stdout);
    return 0;
  }
  /* The heading keeps the command after the stable part that
   * bench_results_replace looks for, so one run replaces the last one. */
  char machine[512];
  bench_machine(machine, sizeof machine);
  snprintf(section, sizeof section,
           METRICS_HEADING
           " (`build/bench/metrics_bench --events %ld`)\n\nMachine: %s.\n\n%s"
           "\nThe ten metrics of the maintenance and ingest rows: count, sum, avg, p95, uniq, "
           "the delivery rate, max - min with a filter, a count with a numeric filter over "
           "three dimensions, a histogram (p50) and sum / count of every event, by campaignId, "
           "groupId and messageType; created through CreateMetric for the ingest rows.\n",
           events, machine, rows);
  fputs(section, stdout);
  if (out_path)
    bench_results_replace(out_path, METRICS_HEADING, section);
  return 0;
}
