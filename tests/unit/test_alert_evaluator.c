/* Unit tests of the alert evaluator (server/alerts/evaluator.c) on a real
 * local database and SQLite event store: the panes' window against the
 * metrics engine's answer (GetMetricData's) for the same events, seeded
 * and live; ALERT_HISTORY_DAYS expiry (the retention applied to entries
 * written in the past, so that no test waits for days); and the commit
 * hook's full queue (events dropped, counted, exposed on /metrics). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_alerts.h"
#include "ana_clock.h"
#include "ana_local_db.h"
#include "ana_log.h"
#include "ana_metric_query.h"
#include "ana_prom.h"
#include "ana_store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ACCOUNT "acc_test"
#define DAY_MS 86400000LL

struct fixture {
  char dir[64];
  struct ana_local_db *db;
  const struct ana_event_store_ops *ops;
  void *store;
  struct ana_alerts *al;
  uint64_t next_event;
};

static char *dims[] = {"g"};
static Analytics__V1__Metric metric;

static void metric_init(void) {
  analytics__v1__metric__init(&metric);
  metric.metric_id = "m1";
  metric.account_id = ACCOUNT;
  metric.name = "pay_metric";
  metric.formula = "(sum(pay.amount) + max(pay.amount)) / count(pay)";
  metric.n_dimensions = 1;
  metric.dimensions = dims;
}

static int resolve(const char *account, const char *id_or_name, struct ana_arena *arena,
                   Analytics__V1__Metric **m, struct ana_formula **f, struct ana_error *err) {
  (void)account;
  (void)arena;
  if (strcmp(id_or_name, "m1") != 0)
    return ana_error_set(err, ANA_STATUS_NOT_FOUND, "metric: not found");
  *f = ana_formula_parse(metric.formula, NULL, err, NULL);
  if (!*f)
    return ANA_ERR_INVALID;
  *m = &metric;
  return 0;
}

static void start_alerts(struct fixture *fx, int history_days, int queue_max) {
  struct ana_alerts_options o = {
      .db = fx->db,
      .store_ops = fx->ops,
      .store = fx->store,
      .resolve = resolve,
      .max_instances = 100,
      .history_days = history_days,
      .queue_max = queue_max,
  };
  struct ana_error err;
  fx->al = ana_alerts_create(&o, &err);
  assert_non_null(fx->al);
}

static int setup(void **state) {
  struct fixture *fx = calloc(1, sizeof *fx);
  snprintf(fx->dir, sizeof fx->dir, "/tmp/ana_alert_evalXXXXXX");
  if (!mkdtemp(fx->dir))
    return -1;
  struct ana_error err;
  fx->db = ana_local_db_open(fx->dir, &err);
  fx->ops = ana_store_event_backend("sqlite");
  fx->store = fx->db && fx->ops ? fx->ops->open(fx->db, &err) : NULL;
  if (!fx->store)
    return -1;
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  struct fixture *fx = *state;
  ana_alerts_destroy(fx->al);
  fx->ops->close(fx->store);
  ana_local_db_close(fx->db);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
  if (system(cmd) != 0)
    return -1;
  free(fx);
  return 0;
}

/* Commits n events "pay" of groups g0..g2 with amounts and timestamps in
 * [now - spread_ms, now] to the local database (as the committer does) and,
 * when hook, hands them to the evaluator's commit hook. */
static void commit_events(struct fixture *fx, int n, int64_t spread_ms, bool hook, unsigned *seed) {
  struct ana_event_record *recs = calloc((size_t)n, sizeof *recs);
  char(*ids)[32] = calloc((size_t)n, sizeof *ids);
  char(*props)[64] = calloc((size_t)n, sizeof *props);
  int64_t now = ana_clock_wall_ms();
  for (int i = 0; i < n; i++) {
    snprintf(ids[i], sizeof ids[i], "ev-%llu", (unsigned long long)fx->next_event++);
    snprintf(props[i], sizeof props[i], "{\"g\":\"g%d\",\"amount\":%d}", i % 3,
             (int)(rand_r(seed) % 1000) + 1);
    recs[i] = (struct ana_event_record){
        .account_id = ACCOUNT,
        .event_id = ids[i],
        .session_id = "",
        .event_type = "app",
        .event_name = "pay",
        .timestamp_ms = now - (int64_t)(rand_r(seed) % (unsigned)spread_ms),
        .received_at_ms = now,
        .expires_at_ms = now + 30 * DAY_MS,
        .properties_json = props[i],
        .search_text = "",
        .payload = (const uint8_t *)"x",
        .payload_len = 1,
    };
  }
  struct ana_error err;
  assert_int_equal(ana_local_db_begin(fx->db, &err), 0);
  assert_int_equal(ana_local_dedupe_claim(fx->db, recs, (size_t)n, &err), 0);
  assert_int_equal(ana_local_spool_append(fx->db, recs, (size_t)n, &err), 0);
  assert_int_equal(ana_local_db_commit(fx->db, &err), 0);
  if (hook)
    ana_alerts_on_commit(fx->al, recs, (size_t)n);
  free(recs);
  free(ids);
  free(props);
}

static void put_rule(struct fixture *fx, const char *id, const char *window) {
  Google__Protobuf__Value op = GOOGLE__PROTOBUF__VALUE__INIT;
  op.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  op.string_value = ">=";
  Google__Protobuf__Struct cond_s = GOOGLE__PROTOBUF__STRUCT__INIT;
  Google__Protobuf__Struct__FieldsEntry f_op = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
  Google__Protobuf__Struct__FieldsEntry f_win = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
  Google__Protobuf__Value win = GOOGLE__PROTOBUF__VALUE__INIT;
  win.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  win.string_value = (char *)window;
  f_op.key = "op";
  f_op.value = &op;
  f_win.key = "window";
  f_win.value = &win;
  Google__Protobuf__Struct__FieldsEntry *fields[] = {&f_op, &f_win};
  cond_s.fields = fields;
  cond_s.n_fields = 2;
  Google__Protobuf__Value cond = GOOGLE__PROTOBUF__VALUE__INIT;
  cond.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
  cond.struct_value = &cond_s;
  Analytics__V1__Alert a = ANALYTICS__V1__ALERT__INIT;
  a.alert_id = (char *)id;
  a.account_id = ACCOUNT;
  a.name = "window";
  a.metric = "m1";
  a.condition = &cond;
  a.threshold = -1;
  a.severity = "info";
  struct ana_error err;
  int rc = ana_alerts_put(fx->al, &a, &err);
  if (rc < 0)
    fail_msg("put: %s", err.message);
}

struct groups {
  char name[8][16];
  double value[8];
  bool has[8];
  int n;
};

static void window_group(void *ctx, const char *const *vals, size_t n_vals, bool other, bool has,
                         double value) {
  struct groups *g = ctx;
  assert_false(other);
  assert_int_equal(n_vals, 1);
  assert_true(g->n < 8);
  snprintf(g->name[g->n], sizeof g->name[g->n], "%s", vals[0]);
  g->has[g->n] = has;
  g->value[g->n++] = value;
}

/* The metrics engine's total of group over [from, to). */
static double engine_total(struct fixture *fx, const char *group, int64_t from, int64_t to) {
  struct ana_error err;
  struct ana_formula *f = ana_formula_parse(metric.formula, NULL, &err, NULL);
  assert_non_null(f);
  struct ana_metric_query q = {.metric = &metric,
                               .formula = f,
                               .account_id = ACCOUNT,
                               .from_ms = from,
                               .to_ms = to,
                               .interval = ANA_INTERVAL_1M,
                               .time_zone = "UTC"};
  struct ana_arena *arena = ana_arena_create(65536, 0);
  Analytics__V1__MetricData out = ANALYTICS__V1__METRIC_DATA__INIT;
  int rc = ana_metric_query_raw(fx->ops, fx->store, &q, arena, &out, &err);
  if (rc < 0)
    fail_msg("query: %s", err.message);
  double v = NAN;
  for (size_t s = 0; s < out.n_series; s++) {
    Analytics__V1__MetricSeries *se = out.series[s];
    for (size_t d = 0; d < se->n_dimensions; d++)
      if (strcmp(se->dimensions[d]->key, "g") == 0 && strcmp(se->dimensions[d]->value, group) == 0)
        v = se->total ? se->total->value : NAN;
  }
  ana_arena_destroy(arena);
  ana_formula_free(f);
  return v;
}

static void assert_window_equals_engine(struct fixture *fx, const char *alert_id) {
  struct groups g = {0};
  int64_t from = 0, to = 0;
  assert_int_equal(ana_alerts_window(fx->al, alert_id, window_group, &g, &from, &to), 3);
  assert_int_equal(to - from, 600000);
  assert_int_equal(from % 60000, 0);
  for (int i = 0; i < g.n; i++) {
    assert_true(g.has[i]);
    double want = engine_total(fx, g.name[i], from, to);
    if (fabs(g.value[i] - want) > 1e-9 * fabs(want))
      fail_msg("group %s: window %.17g, GetMetricData %.17g over [%lld, %lld)", g.name[i],
               g.value[i], want, (long long)from, (long long)to);
  }
}

static void window_equals_metric_engine(void **state) {
  struct fixture *fx = *state;
  unsigned seed = 7;
  start_alerts(fx, 90, 0);
  /* seeded: events over the last 15 minutes, some outside the window */
  commit_events(fx, 300, 900000, false, &seed);
  put_rule(fx, "w1", "10m");
  assert_window_equals_engine(fx, "w1");
  /* live: later events reach the panes through the commit hook only */
  struct ana_alerts_stats before, after;
  ana_alerts_stats(fx->al, &before);
  for (int b = 0; b < 3; b++)
    commit_events(fx, 100, 500000, true, &seed); /* inside the window */
  for (int i = 0; i < 500; i++) {
    ana_alerts_stats(fx->al, &after);
    if (after.events >= before.events + 300)
      break;
    usleep(10000);
  }
  assert_true(after.events >= before.events + 300);
  assert_int_equal(after.dropped, 0);
  assert_window_equals_engine(fx, "w1");
}

/* Appends a history entry of alert a1 at at_ms on its own connection. */
static void append_entry(struct ana_local_alerts *h, int64_t at_ms, const char *state) {
  struct ana_local_alert_entry e = {.alert_id = "a1",
                                    .account_id = ACCOUNT,
                                    .at_ms = at_ms,
                                    .kind = "state",
                                    .state = state,
                                    .previous_state = "ok",
                                    .severity = "info"};
  struct ana_error err;
  int64_t id = 0;
  assert_int_equal(ana_local_alerts_append(h, &e, &id, &err), 0);
  assert_true(id > 0);
}

struct listed {
  char what[16][40];
  int n;
};

static int list_entry(void *ctx, const struct ana_local_alert_entry *e) {
  struct listed *l = ctx;
  if (l->n < 16)
    snprintf(l->what[l->n++], sizeof l->what[0], "%s:%s", e->kind, e->state);
  return 0;
}

static struct listed page(struct fixture *fx, bool deliveries) {
  struct ana_local_alert_page q = {.account_id = ACCOUNT,
                                   .alert_id = "a1",
                                   .deliveries_source = deliveries ? "alert:a1" : NULL,
                                   .before_at_ms = INT64_MAX,
                                   .before_k = 1,
                                   .before_id = INT64_MAX,
                                   .from_ms = 0,
                                   .to_ms = INT64_MAX,
                                   .limit = 16};
  struct listed l = {0};
  struct ana_error err;
  assert_true(ana_local_alerts_history(fx->db, &q, list_entry, &l, &err) >= 0);
  return l;
}

struct find_ctx {
  const char *key;
  int64_t id;
};

static int find_key(void *ctx, const struct ana_local_outbox_row *row) {
  struct find_ctx *f = ctx;
  if (strcmp(row->key, f->key) == 0)
    f->id = row->id;
  return 0;
}

/* A notification of a1 in the outbox with one attempt at at_ms that left
 * it in state. */
static void add_delivery(struct ana_local_conn *c, const char *key, int64_t at_ms,
                         const char *outcome, const char *state) {
  struct ana_error err;
  assert_int_equal(ana_local_conn_begin(c, &err), 0);
  assert_int_equal(
      ana_local_outbox_insert(c, key, ACCOUNT, "ch1", "alert:a1", "{}", at_ms - 10, &err), 0);
  assert_int_equal(ana_local_conn_commit(c, &err), 0);
  struct find_ctx f = {key, 0};
  ana_local_outbox_pending(c, 100, find_key, &f);
  assert_true(f.id > 0);
  bool ok = strcmp(outcome, "delivered") == 0;
  bool pending = strcmp(state, "pending") == 0;
  assert_int_equal(ana_local_outbox_record(c, f.id, 1, at_ms, outcome, ok ? 200 : 500,
                                           ok ? "" : "down", 5, state, pending ? at_ms + 1000 : 0,
                                           &err),
                   0);
}

static bool listed_has(const struct listed *l, const char *what) {
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->what[i], what) == 0)
      return true;
  return false;
}

/* The store's expiry with an explicit cutoff: state changes and the
 * delivery attempts of finished notifications before it go; a notification
 * still pending keeps its attempts. */
static void history_expiry_removes_entries_and_attempts(void **state) {
  struct fixture *fx = *state;
  struct ana_error err;
  struct ana_local_conn *c = ana_local_conn_open(fx->db, &err);
  assert_non_null(c);
  struct ana_local_alerts *h = ana_local_alerts_open(c, &err);
  assert_non_null(h);
  int64_t now = ana_clock_wall_ms();
  append_entry(h, now - 3 * DAY_MS, "firing");
  append_entry(h, now - DAY_MS / 2, "resolved");
  add_delivery(c, "k-old", now - 3 * DAY_MS, "delivered", "delivered");
  add_delivery(c, "k-pending", now - 3 * DAY_MS, "retry", "pending");
  add_delivery(c, "k-new", now - DAY_MS / 2, "failed", "failed");
  struct listed l = page(fx, true);
  assert_int_equal(l.n, 5);
  int n = ana_local_alerts_expire(h, now - DAY_MS, &err);
  assert_int_equal(n, 2); /* the old state change and the old delivered attempt */
  l = page(fx, true);
  assert_int_equal(l.n, 3);
  assert_true(listed_has(&l, "state:resolved"));
  assert_true(listed_has(&l, "delivery:retry"));
  assert_true(listed_has(&l, "delivery:failed"));
  char st[16];
  int attempts = 0;
  assert_int_equal(ana_local_outbox_state(c, ACCOUNT, "k-old", st, sizeof st, &attempts, &err), 0);
  assert_int_equal(ana_local_outbox_state(c, ACCOUNT, "k-pending", st, sizeof st, &attempts, &err),
                   1);
  ana_local_alerts_close(h);
  ana_local_conn_close(c);
}

/* The evaluator applies ALERT_HISTORY_DAYS on its own: entries written
 * before the retention (at times in the past) are gone soon after start,
 * the later ones stay. */
static void evaluator_applies_history_days(void **state) {
  struct fixture *fx = *state;
  struct ana_error err;
  struct ana_local_conn *c = ana_local_conn_open(fx->db, &err);
  struct ana_local_alerts *h = c ? ana_local_alerts_open(c, &err) : NULL;
  assert_non_null(h);
  int64_t now = ana_clock_wall_ms();
  append_entry(h, now - 8 * DAY_MS, "firing");
  append_entry(h, now - 6 * DAY_MS, "resolved");
  ana_local_alerts_close(h);
  ana_local_conn_close(c);
  start_alerts(fx, 7, 0);
  struct listed l = {0};
  for (int i = 0; i < 300; i++) {
    l = page(fx, false);
    if (l.n == 1)
      break;
    usleep(10000);
  }
  assert_int_equal(l.n, 1);
  assert_string_equal(l.what[0], "state:resolved");
}

/* A commit hook call with more events than ALERT_QUEUE_MAX: the rest are
 * dropped (the commit path never waits), counted, and exposed as
 * ana_alert_events_dropped_total. */
static void full_queue_drops_and_counts(void **state) {
  struct fixture *fx = *state;
  unsigned seed = 3;
  start_alerts(fx, 90, 10);
  put_rule(fx, "q1", "10m"); /* the account has rules: its events are queued */
  commit_events(fx, 60, 1000, true, &seed);
  struct ana_alerts_stats st;
  ana_alerts_stats(fx->al, &st);
  assert_int_equal(st.dropped, 50);
  struct ana_prom_writer w;
  ana_prom_writer_init(&w);
  ana_prom_render(&w);
  assert_non_null(w.data);
  assert_non_null(strstr(w.data, "# TYPE ana_alert_events_dropped_total counter"));
  assert_non_null(strstr(w.data, "\nana_alert_events_dropped_total 50\n"));
  ana_prom_writer_fini(&w);
  /* the queued ten are evaluated */
  for (int i = 0; i < 300; i++) {
    ana_alerts_stats(fx->al, &st);
    if (st.events >= 10)
      break;
    usleep(10000);
  }
  assert_int_equal(st.events, 10);
}

int main(void) {
  metric_init();
  ana_log_set_level(ANA_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(window_equals_metric_engine, setup, teardown),
      cmocka_unit_test_setup_teardown(history_expiry_removes_entries_and_attempts, setup, teardown),
      cmocka_unit_test_setup_teardown(evaluator_applies_history_days, setup, teardown),
      cmocka_unit_test_setup_teardown(full_queue_drops_and_counts, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
