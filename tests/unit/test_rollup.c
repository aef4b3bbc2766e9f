/* Property test of metric rollups: for random events (names, properties,
 * timestamps over a few days around a DST change), every formula function,
 * several dimensions and filters, time zones with whole-, half-hour and DST
 * offsets, aligned and unaligned ranges, the answer from the rollups equals
 * the answer from the raw events (query.c's raw path): exactly for counts,
 * sums, min, max and avg; within the documented bounds for uniq (HyperLogLog)
 * and percentiles (DDSketch). Half of the events exist before the metric is
 * defined (backfill), half arrive after (live), and some are queried before
 * the rollups caught up (the tail past the watermark). The same holds with
 * the cells in memory (after commits, a redefinition, a deletion, a
 * restart), with a cache too small for any level (every query reads the
 * database), one that holds some levels (eviction), and none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_alloc.h"
#include "ana_arena.h"
#include "ana_metric_acc.h"
#include "ana_prom.h"
#include "ana_rollup.h"
#include "ana_sketch.h"
#include "ana_local_db.h"
#include "ana_store.h"
#include "ana_clock.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIN 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL
/* 2024-03-29T00:00:00Z: Berlin moves to summer time on 2024-03-31 01:00Z. */
#define START 1711670400000LL
#define END (START + 3 * DAY)

static char dir[64];
static struct ana_local_db *db;
static const struct ana_event_store_ops *ops;
static void *store;
static struct ana_rollups *rollups;
static int next_id;

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* The cache budget and retention of the next manager: 0 = the default, none. */
static int64_t cache_bytes;
static int retention_days;

static struct ana_rollups *start_rollups(struct ana_error *err) {
  return ana_rollup_create(db, ops, store,
                           &(struct ana_rollup_options){.chunk_events = 700,
                                                        .cache_bytes = cache_bytes,
                                                        .retention_days = retention_days,
                                                        .expiry_chunk = 50},
                           err);
}

static int setup_with(int64_t budget) {
  snprintf(dir, sizeof dir, "/tmp/ana-rollups-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  struct ana_error err;
  cache_bytes = budget;
  db = ana_local_db_open(dir, &err);
  ops = ana_store_event_backend("sqlite");
  store = db ? ops->open(db, &err) : NULL;
  rollups = store ? start_rollups(&err) : NULL;
  if (!rollups)
    fprintf(stderr, "setup: %s\n", err.message);
  return rollups ? 0 : -1;
}

static int setup(void **state) {
  (void)state;
  return setup_with(0);
}

/* Smaller than any level: every query reads the database. */
static int setup_tiny_cache(void **state) {
  (void)state;
  return setup_with(1);
}

/* Room for a few levels of the eleven metrics, not all of them. */
#define SMALL_CACHE (96 << 10)
static int setup_small_cache(void **state) {
  (void)state;
  return setup_with(SMALL_CACHE);
}

static int setup_no_cache(void **state) {
  (void)state;
  return setup_with(-1);
}

/* A retention whose cut-off falls on the second day of the events. */
static int setup_retention(void **state) {
  (void)state;
  retention_days = (int)((ana_clock_wall_ms() - (START + DAY)) / DAY);
  return setup_with(0);
}

static int teardown(void **state) {
  (void)state;
  ana_rollup_destroy(rollups);
  ops->close(store);
  ana_local_db_close(db);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int teardown_retention(void **state) {
  retention_days = 0;
  return teardown(state);
}

/* Stores n random events, each of one of the accounts, in one transaction
 * and tells the rollups. */
static void add_events_in(int n, const char *const *accounts, size_t n_accounts) {
  static const char *const names[] = {"a", "b", "c"};
  struct ana_event_record *recs = calloc((size_t)n, sizeof *recs);
  char(*ids)[32] = calloc((size_t)n, 32);
  char(*props)[256] = calloc((size_t)n, 256);
  static const uint8_t payload[] = {0x2a, 0x01, 'x'};
  for (int i = 0; i < n; i++) {
    snprintf(ids[i], 32, "e%d", next_id++);
    int64_t ts = START - DAY + (int64_t)(rnd() % (uint64_t)(4 * DAY));
    /* values are integers or halves: every sum is exact in binary64 */
    double v = (double)(rnd() % 2001) / 2.0 - 200;
    int shape = (int)(rnd() % 10);
    if (shape == 0)
      snprintf(props[i], 256, "{\"campaign\":\"c%d\"}", (int)(rnd() % 4));
    else if (shape == 1)
      snprintf(props[i], 256, "{\"v\":\"%g\",\"group\":\"g%d\",\"s\":\"u%d\"}", v, (int)(rnd() % 3),
               (int)(rnd() % 40));
    else
      snprintf(props[i], 256, "{\"campaign\":\"c%d\",\"group\":\"g%d\",\"v\":%g,\"s\":\"u%d\"}",
               (int)(rnd() % 4), (int)(rnd() % 3), v, (int)(rnd() % 300));
    recs[i] = (struct ana_event_record){
        .account_id = n_accounts > 1 ? accounts[rnd() % n_accounts] : accounts[0],
        .event_id = ids[i],
        .session_id = "",
        .event_type = "track",
        .event_name = names[rnd() % 3],
        .timestamp_ms = ts,
        .received_at_ms = ts,
        .expires_at_ms = ts + 365 * DAY,
        .properties_json = props[i],
        .search_text = "",
        .payload = payload,
        .payload_len = sizeof payload,
    };
  }
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(db, &err), 0);
  assert_int_equal(ana_local_spool_append(db, recs, (size_t)n, &err), 0);
  assert_int_equal(ana_local_db_commit(db, &err), 0);
  if (rollups)
    ana_rollup_on_commit(rollups, recs, (size_t)n);
  free(recs);
  free(ids);
  free(props);
}

static void add_events(int n) {
  static const char *const acct[] = {"acct"};
  add_events_in(n, acct, 1);
}

enum kind { EXACT, UNIQ, PCT };

struct def {
  const char *formula;
  const char *type;
  const char *aggregation;
  enum kind kind;
  const char *dims[2];
  size_t n_dims;
  const char *filter_field, *filter_op;
  double filter_number;
  const char *filter_text;
};

static const struct def defs[] = {
    {"count(a)", "counter", "sum", EXACT, {"campaign", NULL}, 1, NULL, NULL, 0, NULL},
    {"(count(b) / count(a)) * 100",
     "gauge",
     "avg",
     EXACT,
     {"campaign", "group"},
     2,
     NULL,
     NULL,
     0,
     NULL},
    {"sum(a.v) + max(b.v) - min(*.v)",
     "gauge",
     "max",
     EXACT,
     {"group", NULL},
     1,
     "v",
     "gte",
     -50,
     NULL},
    {"avg(*.v) * 2", "gauge", "last", EXACT, {NULL, NULL}, 0, "group", "neq", 0, "g2"},
    {"count(*) - count(c)",
     "counter",
     "count",
     EXACT,
     {"campaign", NULL},
     1,
     "campaign",
     "exists",
     0,
     NULL},
    {"uniq(*.s)", "gauge", "avg", UNIQ, {"campaign", NULL}, 1, NULL, NULL, 0, NULL},
    {"uniq(a.s)", "gauge", "sum", UNIQ, {NULL, NULL}, 0, NULL, NULL, 0, NULL},
    {"p50(a.v)", "gauge", "min", PCT, {"group", NULL}, 1, NULL, NULL, 0, NULL},
    {"p99(*.v)", "gauge", "avg", PCT, {NULL, NULL}, 0, NULL, NULL, 0, NULL},
    {"p90(b.v)", "histogram", "avg", PCT, {"campaign", NULL}, 1, NULL, NULL, 0, NULL},
    {"p95(a.v)", "gauge", "avg", PCT, {NULL, NULL}, 0, "v", "gt", 0, NULL},
};
#define N_DEFS (sizeof defs / sizeof defs[0])

struct built {
  Analytics__V1__Metric m;
  Analytics__V1__MetricFilter filter, *filters[1];
  Google__Protobuf__Value value;
  char id[16];
  struct ana_formula *f;
};

/* Metric defs[i] with the given id (NULL: "m<i>"). */
static void build_as(struct built *b, size_t i, const char *id) {
  const struct def *d = &defs[i];
  analytics__v1__metric__init(&b->m);
  if (id)
    snprintf(b->id, sizeof b->id, "%s", id);
  else
    snprintf(b->id, sizeof b->id, "m%zu", i);
  b->m.metric_id = b->id;
  b->m.name = b->id;
  b->m.type = (char *)d->type;
  b->m.aggregation = (char *)d->aggregation;
  b->m.formula = (char *)d->formula;
  b->m.n_dimensions = d->n_dims;
  b->m.dimensions = (char **)d->dims;
  if (d->filter_field) {
    analytics__v1__metric_filter__init(&b->filter);
    google__protobuf__value__init(&b->value);
    b->filter.field = (char *)d->filter_field;
    b->filter.op = (char *)d->filter_op;
    if (d->filter_text) {
      b->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
      b->value.string_value = (char *)d->filter_text;
    } else {
      b->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
      b->value.number_value = d->filter_number;
    }
    b->filter.value = &b->value;
    b->filters[0] = &b->filter;
    b->m.n_filters = 1;
    b->m.filters = b->filters;
  }
  struct ana_error err;
  int pos;
  b->f = ana_formula_parse(d->formula, NULL, &err, &pos);
  assert_non_null(b->f);
}

static void build(struct built *b, size_t i) {
  build_as(b, i, NULL);
}

static void series_key(const Analytics__V1__MetricSeries *s, char *out, size_t n) {
  size_t off = 0;
  out[0] = '\0';
  for (size_t d = 0; d < s->n_dimensions && off < n; d++)
    off += (size_t)snprintf(out + off, n - off, "%s=%s;", s->dimensions[d]->key,
                            s->dimensions[d]->value);
}

static bool close_enough(enum kind k, double raw, double got) {
  if (k == EXACT)
    return raw == got;
  if (k == PCT)
    return fabs(got - raw) <= ANA_DDS_ALPHA * fabs(raw) * (1 + 1e-9) + 1e-12;
  /* uniq: 3 standard errors, and +-1 for the small sets linear counting sees */
  return fabs(got - raw) <= 3 * ANA_HLL_STD_ERROR * fabs(raw) + 1.0;
}

/* Formula values of sketch terms combine bounded errors; bucket summaries
 * and changes are compared only for exact formulas. */
static void same_value(enum kind k, const Google__Protobuf__DoubleValue *raw,
                       const Google__Protobuf__DoubleValue *got, const char *what,
                       const char *ctx) {
  if (!raw || !got) {
    if (raw != got)
      fail_msg("%s %s: raw %s, rollup %s", ctx, what, raw ? "set" : "empty", got ? "set" : "empty");
    return;
  }
  if (!close_enough(k, raw->value, got->value))
    fail_msg("%s %s: raw %.17g, rollup %.17g", ctx, what, raw->value, got->value);
}

static void compare(enum kind k, const Analytics__V1__MetricData *raw,
                    const Analytics__V1__MetricData *got, const char *ctx) {
  if (raw->n_series != got->n_series)
    fail_msg("%s: %zu series raw, %zu from rollups", ctx, raw->n_series, got->n_series);
  for (size_t i = 0; i < raw->n_series; i++) {
    const Analytics__V1__MetricSeries *rs = raw->series[i], *gs = NULL;
    char rk[256], gk[256];
    series_key(rs, rk, sizeof rk);
    /* Exact answers rank identically; sketch answers are matched by group. */
    for (size_t j = 0; j < got->n_series && !gs; j++) {
      series_key(got->series[k == EXACT ? i : j], gk, sizeof gk);
      if (strcmp(rk, gk) == 0)
        gs = got->series[k == EXACT ? i : j];
      if (k == EXACT)
        break;
    }
    if (!gs)
      fail_msg("%s: series %s (position %zu) missing from the rollup answer", ctx, rk, i);
    char c[1024];
    assert_int_equal(rs->n_buckets, gs->n_buckets);
    for (size_t b = 0; b < rs->n_buckets; b++) {
      snprintf(c, sizeof c, "%s series %s bucket %zu", ctx, rk, b);
      assert_int_equal(rs->buckets[b]->start->seconds, gs->buckets[b]->start->seconds);
      same_value(k, rs->buckets[b]->value, gs->buckets[b]->value, "value", c);
      same_value(k, rs->buckets[b]->rate, gs->buckets[b]->rate, "rate", c);
      assert_int_equal(rs->buckets[b]->n_percentiles, gs->buckets[b]->n_percentiles);
      for (size_t p = 0; p < rs->buckets[b]->n_percentiles; p++)
        if (!close_enough(PCT, rs->buckets[b]->percentiles[p]->value,
                          gs->buckets[b]->percentiles[p]->value))
          fail_msg("%s percentile %s: raw %g rollup %g", c, rs->buckets[b]->percentiles[p]->key,
                   rs->buckets[b]->percentiles[p]->value, gs->buckets[b]->percentiles[p]->value);
    }
    snprintf(c, sizeof c, "%s series %s", ctx, rk);
    same_value(k, rs->total, gs->total, "total", c);
    if (k == EXACT) {
      same_value(k, rs->summary, gs->summary, "summary", c);
      same_value(k, rs->change, gs->change, "change", c);
    }
  }
}

static int checked;

/* Metric b (built from defs[i]) of account: every zone, range and top-N
 * answered from the rollups equals the raw answer. */
static void check_metric(struct built *b, size_t i, const char *account, bool expect_rollups) {
  static const char *const zones[] = {"UTC", "Asia/Kolkata", "Europe/Berlin", "Asia/Kathmandu"};
  struct {
    int64_t from, to;
    enum ana_interval iv;
  } ranges[] = {
      {START, END, ANA_INTERVAL_1H},
      {START, END, ANA_INTERVAL_1D},
      {START + 7 * MIN + 13000, END - 22 * MIN, ANA_INTERVAL_1H},
      {START + 5 * HOUR + 1, START + 2 * DAY + 31 * MIN, ANA_INTERVAL_1D},
      {START + DAY + 2 * HOUR, START + DAY + 4 * HOUR, ANA_INTERVAL_5M},
  };
  for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
      for (int top = 0; top < 2; top++) {
        struct ana_metric_query q = {
            .metric = &b->m,
            .formula = b->f,
            .account_id = account,
            .from_ms = ranges[r].from,
            .to_ms = ranges[r].to,
            .interval = ranges[r].iv,
            .time_zone = zones[z],
            /* top-N + "other" only where ranking is exact */
            .top_n = top ? 2 : (defs[i].kind == EXACT ? 0 : 1000),
        };
        if (top && defs[i].kind != EXACT)
          continue;
        struct ana_arena *a = ana_arena_create(65536, 0);
        Analytics__V1__MetricData raw = ANALYTICS__V1__METRIC_DATA__INIT;
        Analytics__V1__MetricData got = ANALYTICS__V1__METRIC_DATA__INIT;
        struct ana_error err;
        assert_int_equal(ana_metric_query_raw(ops, store, &q, a, &raw, &err), 0);
        int rc = ana_rollup_query(rollups, &q, a, &got, &err);
        if (rc < 0)
          fail_msg("rollup query failed: %s", err.message);
        if (expect_rollups)
          assert_int_equal(rc, 1);
        char ctx[256];
        snprintf(ctx, sizeof ctx, "%s of %s [%s, range %zu, top %d]", defs[i].formula, account,
                 zones[z], r, q.top_n);
        if (rc == 1) {
          compare(defs[i].kind, &raw, &got, ctx);
          checked++;
        }
        ana_arena_destroy(a);
      }
    }
  }
}

static void check_all(struct built *b, bool expect_rollups) {
  for (size_t i = 0; i < N_DEFS; i++)
    check_metric(&b[i], i, "acct", expect_rollups);
}

static void rollups_equal_raw(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  add_events(2500); /* before the definitions: backfilled */
  struct ana_error err;
  for (size_t i = 0; i < N_DEFS; i++) {
    build(&b[i], i);
    assert_int_equal(ana_rollup_define(rollups, "acct", &b[i].m, b[i].f, &err), 0);
  }
  /* Until complete, the rollups decline (the service answers from raw). */
  add_events(1500); /* during the backfill: live */
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  for (size_t i = 0; i < N_DEFS; i++) {
    struct ana_rollup_status st;
    ana_rollup_status(rollups, b[i].m.metric_id, &st);
    assert_true(st.known && st.complete);
  }
  checked = 0;
  check_all(b, true);
  assert_true(checked > 0);
  /* Events past the watermark (not yet rolled up) still count. */
  add_events(300);
  check_all(b, true);
  /* Defining the same metric again keeps its version. */
  struct ana_rollup_status before, after;
  ana_rollup_status(rollups, "m0", &before);
  assert_int_equal(ana_rollup_define(rollups, "acct", &b[0].m, b[0].f, &err), 0);
  ana_rollup_status(rollups, "m0", &after);
  assert_int_equal(before.version, after.version);
  /* A changed definition is a new version: raw until its backfill is done. */
  b[0].m.n_dimensions = 2;
  b[0].m.dimensions = (char *[]){"campaign", "group"};
  assert_int_equal(ana_rollup_define(rollups, "acct", &b[0].m, b[0].f, &err), 0);
  ana_rollup_status(rollups, "m0", &after);
  assert_true(after.version > before.version);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  check_all(b, true);
  /* Forgotten: declined. */
  assert_int_equal(ana_rollup_forget(rollups, "m1", &err), 0);
  struct ana_metric_query q = {.metric = &b[1].m,
                               .formula = b[1].f,
                               .account_id = "acct",
                               .from_ms = START,
                               .to_ms = END,
                               .interval = ANA_INTERVAL_1H,
                               .time_zone = "UTC"};
  struct ana_arena *a = ana_arena_create(65536, 0);
  Analytics__V1__MetricData got = ANALYTICS__V1__METRIC_DATA__INIT;
  assert_int_equal(ana_rollup_query(rollups, &q, a, &got, &err), 0);
  ana_arena_destroy(a);
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

/* After a restart (a new manager on the same database) the rollups are
 * loaded with their watermarks and catch up with events stored meanwhile. */
static void restart_resumes_from_the_watermark(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  struct ana_error err;
  add_events(1000);
  for (size_t i = 0; i < N_DEFS; i++) {
    build(&b[i], i);
    assert_int_equal(ana_rollup_define(rollups, "acct", &b[i].m, b[i].f, &err), 0);
  }
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  ana_rollup_destroy(rollups);
  rollups = NULL;
  /* events committed while nobody rolled them up (as after a kill -9) */
  add_events(800);
  rollups = start_rollups(&err);
  assert_non_null(rollups);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  /* The cells were loaded into memory again, caught up: no query reads the
   * database. */
  for (size_t i = 0; i < N_DEFS; i++) {
    struct ana_rollup_status st;
    ana_rollup_status(rollups, b[i].m.metric_id, &st);
    assert_int_equal(st.cached_levels, 7);
  }
  check_all(b, true);
  struct ana_rollup_status st;
  ana_rollup_status(rollups, "m0", &st);
  assert_true(st.memory_queries > 0);
  assert_int_equal(st.database_queries, 0);
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

static void define_all(struct built *b) {
  struct ana_error err;
  for (size_t i = 0; i < N_DEFS; i++) {
    build(&b[i], i);
    assert_int_equal(ana_rollup_define(rollups, "acct", &b[i].m, b[i].f, &err), 0);
  }
  assert_true(ana_rollup_wait_idle(rollups, 60000));
}

/* Queries answered from memory and from the database since the last call. */
static void count_queries(uint64_t *memory, uint64_t *database) {
  static uint64_t last_memory, last_database;
  struct ana_rollup_status st;
  ana_rollup_status(rollups, "m0", &st);
  *memory = st.memory_queries - last_memory;
  *database = st.database_queries - last_database;
  last_memory = st.memory_queries;
  last_database = st.database_queries;
}

/* The cells in memory follow commits into cells already there and new
 * ones, a redefinition (the new version's cells replace the old) and a
 * deletion, and answers from them equal the raw answers throughout. */
static void cache_follows_commits_versions_and_deletes(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  uint64_t memory, database;
  add_events(1500);
  define_all(b);
  struct ana_rollup_status st;
  for (size_t i = 0; i < N_DEFS; i++) {
    ana_rollup_status(rollups, b[i].m.metric_id, &st);
    assert_int_equal(st.cached_levels, 7);
  }
  assert_true(st.cache_bytes > 0);
  count_queries(&memory, &database);
  check_all(b, true);
  count_queries(&memory, &database);
  assert_true(memory > 0);
  assert_int_equal(database, 0);
  /* New events land in cells that are in memory, in new cells, new groups. */
  add_events(700);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  check_all(b, true);
  /* Not yet rolled up: the tail past the watermark of the cells in memory. */
  add_events(300);
  check_all(b, true);
  count_queries(&memory, &database);
  assert_true(memory > 0);
  assert_int_equal(database, 0);
  /* A new version: raw until complete, then its own cells in memory. */
  struct ana_error err;
  struct ana_rollup_status before, after;
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  ana_rollup_status(rollups, "m0", &before);
  b[0].m.n_dimensions = 2;
  b[0].m.dimensions = (char *[]){"group", "campaign"};
  assert_int_equal(ana_rollup_define(rollups, "acct", &b[0].m, b[0].f, &err), 0);
  add_events(200);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  ana_rollup_status(rollups, "m0", &after);
  assert_true(after.version > before.version);
  assert_int_equal(after.cached_levels, 7);
  check_all(b, true);
  /* Deleted: declined, and its cells leave memory. */
  ana_rollup_status(rollups, "m1", &before);
  assert_int_equal(ana_rollup_forget(rollups, "m1", &err), 0);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  ana_rollup_status(rollups, "m1", &after);
  assert_false(after.known);
  assert_true(after.cache_bytes < before.cache_bytes);
  struct ana_metric_query q = {.metric = &b[1].m,
                               .formula = b[1].f,
                               .account_id = "acct",
                               .from_ms = START,
                               .to_ms = END,
                               .interval = ANA_INTERVAL_1H,
                               .time_zone = "UTC"};
  struct ana_arena *a = ana_arena_create(65536, 0);
  Analytics__V1__MetricData got = ANALYTICS__V1__METRIC_DATA__INIT;
  assert_int_equal(ana_rollup_query(rollups, &q, a, &got, &err), 0);
  ana_arena_destroy(a);
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

/* A budget smaller than any level: nothing is kept, every query reads the
 * database, answers are the same. */
static void tiny_cache_reads_the_database(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  uint64_t memory, database;
  add_events(1500);
  define_all(b);
  count_queries(&memory, &database);
  check_all(b, true);
  add_events(400);
  check_all(b, true);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  count_queries(&memory, &database);
  assert_int_equal(memory, 0);
  assert_true(database > 0);
  struct ana_rollup_status st;
  ana_rollup_status(rollups, "m0", &st);
  assert_int_equal(st.cached_levels, 0);
  assert_true(st.cache_bytes <= 1);
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

/* A budget for some levels: queries that miss read the database and ask
 * for their levels, which evicts others; answers stay the same. */
static void small_cache_evicts(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  uint64_t memory, database;
  add_events(1500);
  define_all(b);
  count_queries(&memory, &database);
  for (int round = 0; round < 3; round++) {
    check_all(b, true);
    add_events(200);
    assert_true(ana_rollup_wait_idle(rollups, 60000));
    struct ana_rollup_status st;
    ana_rollup_status(rollups, "m0", &st);
    assert_true(st.cache_bytes <= SMALL_CACHE);
  }
  count_queries(&memory, &database);
  assert_true(memory > 0);
  assert_true(database > 0);
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

/* Every allocation of a query failed in turn: an error (RESOURCE_EXHAUSTED)
 * or the right answer, never a partial one; nothing leaks (ASan build). */
static void each_allocation_failure_of_a_query(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  add_events(800);
  define_all(b);
  /* additive (flat), min/max (flat), sketches (one by one); cells from memory
   * and from the database; aligned, unaligned (raw pieces), half-hour zone */
  static const size_t which[] = {1, 2, 5, 9};
  static const struct {
    const char *zone;
    int64_t from, to;
  } shapes[] = {
      {"Europe/Berlin", START, END},
      {"Asia/Kolkata", START + 7 * MIN + 13000, END - 22 * MIN},
  };
  for (int from_db = 0; from_db < 2; from_db++) {
    if (from_db) {
      /* A manager without a cache: the cells come from the database. */
      struct ana_error err;
      ana_rollup_destroy(rollups);
      cache_bytes = -1;
      rollups = start_rollups(&err);
      assert_non_null(rollups);
      assert_true(ana_rollup_wait_idle(rollups, 60000));
    }
    for (size_t w = 0; w < sizeof which / sizeof which[0]; w++) {
      size_t i = which[w];
      for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        struct ana_metric_query q = {.metric = &b[i].m,
                                     .formula = b[i].f,
                                     .account_id = "acct",
                                     .from_ms = shapes[k].from,
                                     .to_ms = shapes[k].to,
                                     .interval = ANA_INTERVAL_1H,
                                     .time_zone = shapes[k].zone,
                                     /* top-N + "other" only where ranking is exact */
                                     .top_n = defs[i].kind == EXACT ? 2 : 1000};
        struct ana_arena *ra = ana_arena_create(65536, 0);
        Analytics__V1__MetricData raw = ANALYTICS__V1__METRIC_DATA__INIT;
        struct ana_error err;
        assert_int_equal(ana_metric_query_raw(ops, store, &q, ra, &raw, &err), 0);
        int failures = 0, in_a_row = 0;
        for (long n = 1; n < 5000 && in_a_row < 50; n++) {
          struct ana_arena *a = ana_arena_create(65536, 0);
          Analytics__V1__MetricData got = ANALYTICS__V1__METRIC_DATA__INIT;
          ana_alloc_fail_after(n);
          int rc = ana_rollup_query(rollups, &q, a, &got, &err);
          ana_alloc_fail_after(0);
          in_a_row = rc == 1 ? in_a_row + 1 : 0;
          if (rc == 1) {
            compare(defs[i].kind, &raw, &got, defs[i].formula);
          } else {
            if (rc >= 0 || err.code != ANA_STATUS_RESOURCE_EXHAUSTED)
              fail_msg("%s, allocation %ld failed: rc %d, %s", defs[i].formula, n, rc, err.message);
            failures++;
          }
          ana_arena_destroy(a);
        }
        /* 50 successes in a row: past the query's allocations */
        assert_int_equal(in_a_row, 50);
        assert_true(failures > 0);
        ana_arena_destroy(ra);
      }
    }
  }
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

/* Cells whose whole span ended by now - RETENTION_DAYS are deleted, from
 * the database and from memory, in chunks (of 50 here); with the raw events expired as
 * the committer does, answers on either side of the cut-off (away from the
 * cells across it) equal the raw answers. */
static void expired_cells_are_deleted(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  struct ana_error err;
  int64_t cutoff = ana_clock_wall_ms() - (int64_t)retention_days * DAY;
  assert_true(cutoff >= START + DAY && cutoff < START + 2 * DAY);
  add_events(2500);
  define_all(b); /* and the first sweep */
  /* Retention deletes the events in the events table (the mover's). */
  assert_int_equal(ana_local_staging_wait(db, UINT64_MAX, &err), 0);
  int deleted;
  do {
    assert_int_equal(ana_local_db_begin(db, &err), 0);
    deleted = ops->expire(store, cutoff, UINT64_MAX, 500, NULL, NULL, &err);
    assert_true(deleted >= 0);
    assert_int_equal(ana_local_db_commit(db, &err), 0);
  } while (deleted > 0);
  static const struct {
    int64_t from, to;
  } ranges[] = {
      {START - DAY, START},               /* and its previous period: before */
      {START + 2 * DAY + 12 * HOUR, END}, /* and its previous period: after */
  };
  for (int from_db = 0; from_db < 2; from_db++) {
    if (from_db) {
      ana_rollup_destroy(rollups);
      cache_bytes = -1;
      rollups = start_rollups(&err);
      assert_non_null(rollups);
      assert_true(ana_rollup_wait_idle(rollups, 60000));
    }
    for (size_t i = 0; i < N_DEFS; i++) {
      static const char *const zones[] = {"UTC", "Europe/Berlin", "Asia/Kolkata"};
      for (size_t z = 0; z < 3; z++) {
        for (size_t k = 0; k < 2; k++) {
          struct ana_metric_query q = {.metric = &b[i].m,
                                       .formula = b[i].f,
                                       .account_id = "acct",
                                       .from_ms = ranges[k].from,
                                       .to_ms = ranges[k].to,
                                       .interval = ANA_INTERVAL_1H,
                                       .time_zone = zones[z],
                                       .top_n = 1000};
          struct ana_arena *a = ana_arena_create(65536, 0);
          Analytics__V1__MetricData got = ANALYTICS__V1__METRIC_DATA__INIT;
          Analytics__V1__MetricData raw = ANALYTICS__V1__METRIC_DATA__INIT;
          assert_int_equal(ana_metric_query_raw(ops, store, &q, a, &raw, &err), 0);
          assert_int_equal(ana_rollup_query(rollups, &q, a, &got, &err), 1);
          char ctx[128];
          snprintf(ctx, sizeof ctx, "%s [%s, %s the cut-off]", defs[i].formula, zones[z],
                   k ? "after" : "before");
          compare(defs[i].kind, &raw, &got, ctx);
          ana_arena_destroy(a);
        }
      }
    }
  }
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

/* No cache at all (ROLLUP_CACHE_MB=0). */
static void no_cache(void **state) {
  (void)state;
  static struct built b[N_DEFS];
  uint64_t memory, database;
  add_events(1500);
  define_all(b);
  count_queries(&memory, &database);
  check_all(b, true);
  count_queries(&memory, &database);
  assert_int_equal(memory, 0);
  assert_true(database > 0);
  for (size_t i = 0; i < N_DEFS; i++)
    ana_formula_free(b[i].f);
}

/* The value of an unlabelled sample in what /metrics would show, or NAN. */
static double prom_sample(const char *name) {
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_render(&w);
  double v = NAN;
  size_t n = strlen(name);
  for (const char *p = w.data; p && (p = strstr(p, name)) != NULL; p += n)
    if ((p == w.data || p[-1] == '\n') && p[n] == ' ') {
      v = strtod(p + n + 1, NULL);
      break;
    }
  ana_prom_writer_fini(&w);
  return v;
}

/* The lag gauge reaches 0 once the rollups are idle. The rollup thread
 * lowers its low watermark just after it moves the metrics' own
 * watermarks, which ana_rollup_wait_idle reads, so the gauge may trail the
 * wait by a moment. */
static void assert_lag_caught_up(void) {
  for (int i = 0; i < 500 && prom_sample("ana_rollup_lag_events") != 0; i++) {
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(prom_sample("ana_rollup_lag_events"), 0);
}

/* Several metrics of several accounts, with different filters and
 * dimensions, maintained together: those of an account at the same
 * watermark share one reading of its events (each event is read once),
 * others backfill meanwhile, a redefinition starts over; every answer
 * equals the raw one, and /metrics says when they caught up. */
static void metrics_of_several_accounts_together(void **state) {
  (void)state;
  static const char *const accounts[] = {"acct", "acct2", "acct3"};
  enum { N_ACCOUNTS = 3 };
  static struct built b[N_ACCOUNTS][N_DEFS];
  struct ana_error err;
  /* On an empty store: complete at once, all at the same watermark. Each
   * account gets a third of the definitions first. */
  for (size_t k = 0; k < N_ACCOUNTS; k++)
    for (size_t i = 0; i < N_DEFS; i++) {
      char id[16];
      snprintf(id, sizeof id, "a%zum%zu", k, i);
      build_as(&b[k][i], i, id);
      if (i % N_ACCOUNTS == k)
        assert_int_equal(ana_rollup_define(rollups, accounts[k], &b[k][i].m, b[k][i].f, &err), 0);
    }
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  assert_lag_caught_up();
  double before = prom_sample("ana_rollup_events_processed_total");
  add_events_in(3000, accounts, N_ACCOUNTS);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  /* once each, not once per metric */
  assert_int_equal(prom_sample("ana_rollup_events_processed_total") - before, 3000);
  assert_lag_caught_up();
  assert_true(prom_sample("ana_rollup_cells_written_total") > 0);
  /* The rest backfill while the first follow new events of every account;
   * one of the first is redefined (a new version, backfilled too). */
  for (size_t k = 0; k < N_ACCOUNTS; k++)
    for (size_t i = 0; i < N_DEFS; i++)
      if (i % N_ACCOUNTS != k)
        assert_int_equal(ana_rollup_define(rollups, accounts[k], &b[k][i].m, b[k][i].f, &err), 0);
  b[0][0].m.n_dimensions = 2;
  b[0][0].m.dimensions = (char *[]){"group", "campaign"};
  assert_int_equal(ana_rollup_define(rollups, accounts[0], &b[0][0].m, b[0][0].f, &err), 0);
  for (int round = 0; round < 3; round++)
    add_events_in(500, accounts, N_ACCOUNTS);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  assert_lag_caught_up();
  struct ana_rollup_status st0;
  ana_rollup_status(rollups, "a0m0", &st0);
  for (size_t k = 0; k < N_ACCOUNTS; k++)
    for (size_t i = 0; i < N_DEFS; i++) {
      struct ana_rollup_status st;
      ana_rollup_status(rollups, b[k][i].m.metric_id, &st);
      assert_true(st.known && st.complete);
      assert_int_equal(st.watermark, st0.watermark); /* all at the head */
    }
  checked = 0;
  for (size_t k = 0; k < N_ACCOUNTS; k++)
    for (size_t i = 0; i < N_DEFS; i++)
      check_metric(&b[k][i], i, accounts[k], true);
  assert_true(checked > 0);
  /* And after a restart that finds events no thread has read. */
  ana_rollup_destroy(rollups);
  rollups = NULL;
  add_events_in(900, accounts, N_ACCOUNTS);
  rollups = start_rollups(&err);
  assert_non_null(rollups);
  assert_true(ana_rollup_wait_idle(rollups, 60000));
  for (size_t k = 0; k < N_ACCOUNTS; k++)
    for (size_t i = 0; i < N_DEFS; i++)
      check_metric(&b[k][i], i, accounts[k], true);
  for (size_t k = 0; k < N_ACCOUNTS; k++)
    for (size_t i = 0; i < N_DEFS; i++)
      ana_formula_free(b[k][i].f);
}

/* ------------------------------------------------------------------ */
/* properties read without jansson */

/* Appends to out one random JSON value as the properties may hold it:
 * plain and escaped strings, non-ASCII, numbers of every shape (some
 * jansson refuses: too large), booleans, null, nesting. */
static void random_value(char *out, size_t cap) {
  static const char *const fixed[] = {"\"x1\"",
                                      "\"12\"",
                                      "\"-3.5\"",
                                      "\"\"",
                                      "\"a\\\"b\"",
                                      "\"\\u00e9t\\u00e9\"",
                                      "\"\xc3\xa9t\xc3\xa9\"",
                                      "-0",
                                      "0",
                                      "-0.0",
                                      "1.5",
                                      "2.5e3",
                                      "1E+2",
                                      "1e-5",
                                      "0.1",
                                      "123456789012345678",
                                      "9223372036854775807",
                                      "9223372036854775808",
                                      "-9223372036854775809",
                                      "12345678901234567890123",
                                      "1e400",
                                      "1e99",
                                      "true",
                                      "false",
                                      "null",
                                      "{\"n\":1}",
                                      "[1,2]",
                                      "01",
                                      "1.",
                                      "-",
                                      "\"tab\there\""};
  size_t len = strlen(out);
  if (rnd() % 3 == 0)
    snprintf(out + len, cap - len, "%d", (int)(rnd() % 2001) - 1000);
  else if (rnd() % 4 == 0)
    snprintf(out + len, cap - len, "\"v%d\"", (int)(rnd() % 5));
  else
    snprintf(out + len, cap - len, "%s", fixed[rnd() % (sizeof fixed / sizeof fixed[0])]);
}

static void random_ws(char *out, size_t cap) {
  static const char *const ws[] = {"", "", "", " ", "\n\t", "\r\n  "};
  size_t len = strlen(out);
  snprintf(out + len, cap - len, "%s", ws[rnd() % (sizeof ws / sizeof ws[0])]);
}

/* A metric for the comparison below. */
struct acc_metric {
  Analytics__V1__Metric m;
  Analytics__V1__MetricFilter filter, *filters[1];
  Google__Protobuf__Value value;
  struct ana_formula *f;
};

static void acc_metric_init(struct acc_metric *x, const char *formula, const char *const *dims,
                            size_t n_dims, const char *field, const char *op, const char *text,
                            double number) {
  analytics__v1__metric__init(&x->m);
  x->m.metric_id = "flat";
  x->m.formula = (char *)formula;
  x->m.dimensions = (char **)dims;
  x->m.n_dimensions = n_dims;
  if (field) {
    analytics__v1__metric_filter__init(&x->filter);
    google__protobuf__value__init(&x->value);
    x->filter.field = (char *)field;
    x->filter.op = (char *)op;
    if (text) {
      x->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
      x->value.string_value = (char *)text;
    } else {
      x->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
      x->value.number_value = number;
    }
    x->filter.value = &x->value;
    x->filters[0] = &x->filter;
    x->m.filters = x->filters;
    x->m.n_filters = 1;
  }
  struct ana_error err;
  int pos;
  x->f = ana_formula_parse(formula, NULL, &err, &pos);
  assert_non_null(x->f);
}

/* Flat properties are read without jansson (acc.c): for random objects,
 * flat or not, well-formed or not, every metric reads them as it reads the
 * same object with a nested member added (which jansson reads): the same
 * filters pass, the same groups, the same values. */
static void properties_read_alike_flat_or_not(void **state) {
  (void)state;
  static const char *const d12[] = {"k1", "k2"}, *const d3[] = {"k3"};
  struct acc_metric ms[5];
  acc_metric_init(&ms[0], "sum(e.k2) + count(e.k3) * 1000", d12, 2, NULL, NULL, NULL, 0);
  acc_metric_init(&ms[1], "min(e.k1) * 7 + max(e.k3)", d3, 1, "k1", "gte", NULL, -500);
  acc_metric_init(&ms[2], "uniq(e.k1) + avg(e.k4)", NULL, 0, "k2", "exists", NULL, 0);
  acc_metric_init(&ms[3], "count(e.k2)", d12, 2, "k3", "contains", "1", 0);
  acc_metric_init(&ms[4], "p50(e.properties.k4)", d3, 1, "k1", "eq", "v1", 0);
  static const char *const keys[] = {"k1", "k2", "k3", "k4"};
  int flat_like = 0;
  for (int n = 0; n < 3000; n++) {
    char members[1024] = "";
    int count = (int)(rnd() % 6);
    for (int i = 0; i < count; i++) {
      size_t len = strlen(members);
      snprintf(members + len, sizeof members - len, "%s", i ? "," : "");
      random_ws(members, sizeof members);
      len = strlen(members);
      snprintf(members + len, sizeof members - len, "\"%s\"", keys[rnd() % 4]);
      random_ws(members, sizeof members);
      len = strlen(members);
      snprintf(members + len, sizeof members - len, ":");
      random_ws(members, sizeof members);
      random_value(members, sizeof members);
      random_ws(members, sizeof members);
    }
    /* now and then malformed, the same way in both */
    const char *tail = rnd() % 20 == 0 ? (rnd() % 2 ? " x" : ",") : "";
    char flat[1200], nested[1300];
    snprintf(flat, sizeof flat, "{%s}%s", members, tail);
    snprintf(nested, sizeof nested, "{\"zz\":[0]%s%s}%s", count ? "," : "", members, tail);
    flat_like += strchr(members, '{') == NULL && strchr(members, '\\') == NULL;
    for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++) {
      struct ana_error err;
      struct ana_metric_acc *a = ana_metric_acc_create(&ms[k].m, ms[k].f, 100, &err);
      struct ana_metric_acc *b = ana_metric_acc_create(&ms[k].m, ms[k].f, 100, &err);
      assert_non_null(a);
      assert_non_null(b);
      struct ana_scanned_event ea = {.event_id = "x",
                                     .event_type = "t",
                                     .event_name = "e",
                                     .session_id = "",
                                     .properties_json = flat};
      struct ana_scanned_event eb = ea;
      eb.properties_json = nested;
      int ga = ana_metric_acc_add(a, &ea), gb = ana_metric_acc_add(b, &eb);
      if (ga != gb)
        fail_msg("%s: %s counts in %d, %s in %d", ms[k].m.formula, flat, ga, nested, gb);
      assert_int_equal(ana_metric_acc_group_count(a), ana_metric_acc_group_count(b));
      for (size_t g = 0; g < ana_metric_acc_group_count(a); g++) {
        const char *const *va = ana_metric_acc_group_values(a, g);
        const char *const *vb = ana_metric_acc_group_values(b, g);
        for (size_t d = 0; d < ana_metric_acc_dimension_count(a); d++)
          if (strcmp(va[d], vb[d]) != 0)
            fail_msg("%s: %s groups as \"%s\", %s as \"%s\"", ms[k].m.formula, flat, va[d], nested,
                     vb[d]);
        double xa = 0, xb = 0;
        bool oka = ana_metric_acc_value(a, g, &xa), okb = ana_metric_acc_value(b, g, &xb);
        if (oka != okb || (oka && memcmp(&xa, &xb, sizeof xa) != 0))
          fail_msg("%s: %s gives %.17g (%d), %s gives %.17g (%d)", ms[k].m.formula, flat, xa, oka,
                   nested, xb, okb);
      }
      ana_metric_acc_destroy(a);
      ana_metric_acc_destroy(b);
    }
  }
  assert_true(flat_like > 500); /* the flat reading was exercised */
  for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++)
    ana_formula_free(ms[k].f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(rollups_equal_raw, setup, teardown),
      cmocka_unit_test_setup_teardown(restart_resumes_from_the_watermark, setup, teardown),
      cmocka_unit_test_setup_teardown(cache_follows_commits_versions_and_deletes, setup, teardown),
      cmocka_unit_test_setup_teardown(tiny_cache_reads_the_database, setup_tiny_cache, teardown),
      cmocka_unit_test_setup_teardown(small_cache_evicts, setup_small_cache, teardown),
      cmocka_unit_test_setup_teardown(no_cache, setup_no_cache, teardown),
      cmocka_unit_test_setup_teardown(each_allocation_failure_of_a_query, setup, teardown),
      cmocka_unit_test_setup_teardown(expired_cells_are_deleted, setup_retention,
                                      teardown_retention),
      cmocka_unit_test_setup_teardown(metrics_of_several_accounts_together, setup, teardown),
      cmocka_unit_test(properties_read_alike_flat_or_not),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
