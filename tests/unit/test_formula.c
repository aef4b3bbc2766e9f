/* Unit tests for the metric formula language (server/metrics/formula.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_alloc.h"
#include "ana_formula.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* A metric's variables, as NULL-terminated name/formula pairs. */
struct vars {
  const char *names[300];
  const char *formulas[300];
  size_t n;
};

static void vars_add(struct vars *v, const char *name, const char *formula) {
  v->names[v->n] = name;
  v->formulas[v->n] = formula;
  v->n++;
}

/* Other metrics of the account, for lookup_metric. */
struct metric_def {
  const char *name;
  const char *formula;
  struct vars vars;
};

struct account {
  struct metric_def metrics[16];
  size_t n;
  int lookups;
};

static int lookup(void *ctx, const char *name, const char **formula, const char *const **var_names,
                  const char *const **var_formulas, size_t *n_vars) {
  struct account *a = ctx;
  a->lookups++;
  for (size_t i = 0; i < a->n; i++) {
    if (strcmp(a->metrics[i].name, name) == 0) {
      *formula = a->metrics[i].formula;
      *var_names = a->metrics[i].vars.names;
      *var_formulas = a->metrics[i].vars.formulas;
      *n_vars = a->metrics[i].vars.n;
      return 0;
    }
  }
  return -1;
}

static struct metric_def *account_add(struct account *a, const char *name, const char *formula) {
  struct metric_def *m = &a->metrics[a->n++];
  m->name = name;
  m->formula = formula;
  m->vars.n = 0;
  return m;
}

static struct ana_formula_env env_of(const struct vars *v, struct account *a) {
  struct ana_formula_env env = {0};
  if (v) {
    env.var_names = v->names;
    env.var_formulas = v->formulas;
    env.n_vars = v->n;
  }
  if (a) {
    env.lookup_metric = lookup;
    env.ctx = a;
  }
  return env;
}

static struct ana_formula *parse_env(const char *text, const struct ana_formula_env *env) {
  struct ana_error err = {0};
  int pos = -1;
  struct ana_formula *f = ana_formula_parse(text, env, &err, &pos);
  if (!f)
    fail_msg("\"%s\" rejected: %s (pos %d)", text, err.message, pos);
  return f;
}

static struct ana_formula *parse(const char *text) {
  return parse_env(text, NULL);
}

/* Parses text, checks its canonical text and frees it. */
static void check_canonical_env(const char *text, const struct ana_formula_env *env,
                                const char *expected) {
  struct ana_formula *f = parse_env(text, env);
  char *s = ana_formula_to_string(f);
  assert_non_null(s);
  if (strcmp(s, expected) != 0)
    fail_msg("\"%s\": canonical \"%s\", expected \"%s\"", text, s, expected);
  free(s);
  ana_formula_free(f);
}

static void check_canonical(const char *text, const char *expected) {
  check_canonical_env(text, NULL, expected);
}

/* Evaluates a formula without terms. */
static double value_of(const char *text) {
  struct ana_formula *f = parse(text);
  double out = NAN;
  assert_int_equal(ana_formula_term_count(f), 0);
  assert_true(ana_formula_eval(f, NULL, &out));
  ana_formula_free(f);
  return out;
}

static void check_error_env(const char *text, const struct ana_formula_env *env,
                            const char *message, int pos) {
  struct ana_error err = {0};
  int got_pos = -1;
  struct ana_formula *f = ana_formula_parse(text, env, &err, &got_pos);
  if (f) {
    ana_formula_free(f);
    fail_msg("\"%s\" accepted, expected: %s", text, message);
  }
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
  if (strcmp(err.message, message) != 0)
    fail_msg("\"%s\":\n  got      %s\n  expected %s", text, err.message, message);
  if (got_pos != pos)
    fail_msg("\"%s\": position %d, expected %d", text, got_pos, pos);
}

static void check_error(const char *text, const char *message, int pos) {
  check_error_env(text, NULL, message, pos);
}

static void check_term(const struct ana_agg_term *t, enum ana_agg_fn fn, const char *event,
                       enum ana_field_kind kind, const char *field) {
  assert_non_null(t);
  assert_int_equal(t->fn, fn);
  if (event)
    assert_string_equal(t->event_name, event);
  else
    assert_null(t->event_name);
  assert_int_equal(t->field_kind, kind);
  if (field) {
    assert_string_equal(t->field, field);
    assert_true(t->n_field_segments > 0);
    assert_non_null(t->field_segments);
  } else {
    assert_null(t->field);
    assert_int_equal(t->n_field_segments, 0);
    assert_null(t->field_segments);
  }
}

/* ---- arithmetic ---- */

static void test_precedence_and_associativity(void **state) {
  (void)state;
  assert_true(value_of("1 - 2 - 3") == -4);
  assert_true(value_of("2 * 3 + 4") == 10);
  assert_true(value_of("4 + 2 * 3") == 10);
  assert_true(value_of("-2 * -3") == 6);
  assert_true(value_of("8 / 2 / 2") == 2);
  assert_true(value_of("2 - (3 - 4)") == 3);
  assert_true(value_of("(2 + 3) * 4") == 20);
  assert_true(value_of("8 / (2 / 2)") == 8);
  assert_true(value_of("--3") == 3);
  assert_true(value_of("-(1 + 2) * 2") == -6);
  assert_true(value_of("10 - 2 * 3 - 1") == 3);
  assert_true(value_of(" \t\n1\r\n+\t2 ") == 3);
  check_canonical("1 - 2 - 3", "1 - 2 - 3");
  check_canonical("1 - (2 - 3)", "1 - (2 - 3)");
  check_canonical("(1 - 2) - 3", "(1 - 2) - 3");
  check_canonical("2*3+4", "2 * 3 + 4");
  check_canonical("(2*3)+4", "2 * 3 + 4");
  check_canonical("2*(3+4)", "2 * (3 + 4)");
  check_canonical("-2*-3", "-2 * -3");
  check_canonical("-(2*3)", "-(2 * 3)");
  check_canonical("- - 2", "--2");
  check_canonical("8/2/2", "8 / 2 / 2");
  check_canonical("((((1))))", "1");
}

static void test_numbers(void **state) {
  (void)state;
  assert_true(value_of("100") == 100);
  assert_true(value_of("2.5") == 2.5);
  assert_true(value_of("1e3") == 1000);
  assert_true(value_of("1E-3") == 0.001);
  assert_true(value_of("1.5e+2") == 150);
  assert_true(value_of("007") == 7);
  check_canonical("0.1", "0.1");
  check_canonical("1e21", "1e+21");
  check_canonical("0.30000000000000004", "0.30000000000000004");
  check_canonical("1.5e-7", "1.5e-07");
  check_error("1e999", "formula: number '1e999' is out of range at character 1", 1);
  check_error("1.", "formula: unexpected '.' at character 2", 2);
  check_error(".5", "formula: unexpected '.' at character 1", 1);
  check_error("2e", "formula: unexpected 'e' at character 2", 2);
  check_error("1.2.3", "formula: unexpected '.' at character 4", 4);
}

/* ---- terms ---- */

static void test_every_function(void **state) {
  (void)state;
  static const struct {
    const char *text;
    enum ana_agg_fn fn;
  } cases[] = {
      {"count(message_sent)", ANA_AGG_COUNT},
      {"sum(message_sent.charactersCount)", ANA_AGG_SUM},
      {"avg(message_sent.charactersCount)", ANA_AGG_AVG},
      {"min(message_sent.charactersCount)", ANA_AGG_MIN},
      {"max(message_sent.charactersCount)", ANA_AGG_MAX},
      {"uniq(message_sent.charactersCount)", ANA_AGG_UNIQ},
      {"p50(message_sent.charactersCount)", ANA_AGG_P50},
      {"p90(message_sent.charactersCount)", ANA_AGG_P90},
      {"p95(message_sent.charactersCount)", ANA_AGG_P95},
      {"p99(message_sent.charactersCount)", ANA_AGG_P99},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct ana_formula *f = parse(cases[i].text);
    assert_int_equal(ana_formula_term_count(f), 1);
    check_term(ana_formula_term(f, 0), cases[i].fn, "message_sent",
               i == 0 ? ANA_FIELD_NONE : ANA_FIELD_PROPERTY, i == 0 ? NULL : "charactersCount");
    assert_null(ana_formula_term(f, 1));
    char *s = ana_formula_to_string(f);
    assert_string_equal(s, cases[i].text);
    free(s);
    double v = 42, out = 0;
    assert_true(ana_formula_eval(f, &v, &out));
    assert_true(out == 42);
    ana_formula_free(f);
  }
  /* Function names are case-insensitive; the canonical text is lower case. */
  check_canonical("COUNT(x) + Sum(x.y) + P99(x.y)", "count(x) + sum(x.y) + p99(x.y)");
  check_canonical("count ( x . y )", "count(x.y)");
}

static void test_fields(void **state) {
  (void)state;
  struct ana_formula *f = parse("uniq(*.sessionId) + uniq(*.eventType) + uniq(*.eventName) + "
                                "uniq(*.eventId) + uniq(*.context.ip) + "
                                "uniq(*.context.userAgent) + uniq(*.context.locale)");
  const char *fields[] = {"sessionId",  "eventType",         "eventName",     "eventId",
                          "context.ip", "context.userAgent", "context.locale"};
  assert_int_equal(ana_formula_term_count(f), 7);
  for (size_t i = 0; i < 7; i++)
    check_term(ana_formula_term(f, i), ANA_AGG_UNIQ, NULL, ANA_FIELD_EVENT, fields[i]);
  const struct ana_agg_term *ip = ana_formula_term(f, 4);
  assert_int_equal(ip->n_field_segments, 2);
  assert_string_equal(ip->field_segments[0], "context");
  assert_string_equal(ip->field_segments[1], "ip");
  ana_formula_free(f);

  /* Property paths, with and without "properties.", nested, quoted. */
  f = parse("sum(order.total) + sum(order.properties.total) + sum(\"Order Completed\".\"item "
            "price\") + sum(x.\"a.b\") + sum(x.a.b) + sum(x.properties.sessionId) + "
            "sum(x.context.other) + sum(x.properties.properties.y)");
  assert_int_equal(ana_formula_term_count(f), 7);
  check_term(ana_formula_term(f, 0), ANA_AGG_SUM, "order", ANA_FIELD_PROPERTY, "total");
  check_term(ana_formula_term(f, 1), ANA_AGG_SUM, "Order Completed", ANA_FIELD_PROPERTY,
             "item price");
  const struct ana_agg_term *dotted = ana_formula_term(f, 2);
  check_term(dotted, ANA_AGG_SUM, "x", ANA_FIELD_PROPERTY, "a.b");
  assert_int_equal(dotted->n_field_segments, 1);
  assert_string_equal(dotted->field_segments[0], "a.b");
  const struct ana_agg_term *nested = ana_formula_term(f, 3);
  check_term(nested, ANA_AGG_SUM, "x", ANA_FIELD_PROPERTY, "a.b");
  assert_int_equal(nested->n_field_segments, 2);
  assert_string_equal(nested->field_segments[1], "b");
  check_term(ana_formula_term(f, 4), ANA_AGG_SUM, "x", ANA_FIELD_PROPERTY, "sessionId");
  check_term(ana_formula_term(f, 5), ANA_AGG_SUM, "x", ANA_FIELD_PROPERTY, "context.other");
  check_term(ana_formula_term(f, 6), ANA_AGG_SUM, "x", ANA_FIELD_PROPERTY, "properties.y");
  char *s = ana_formula_to_string(f);
  assert_string_equal(s, "sum(order.total) + sum(order.total) + "
                         "sum(\"Order Completed\".\"item price\") + sum(x.\"a.b\") + sum(x.a.b) + "
                         "sum(x.properties.sessionId) + sum(x.context.other) + "
                         "sum(x.properties.properties.y)");
  free(s);
  ana_formula_free(f);

  /* A quoted segment means the same as the bare one. */
  f = parse("uniq(*.\"sessionId\") + uniq(*.\"context\".\"ip\")");
  check_term(ana_formula_term(f, 0), ANA_AGG_UNIQ, NULL, ANA_FIELD_EVENT, "sessionId");
  check_term(ana_formula_term(f, 1), ANA_AGG_UNIQ, NULL, ANA_FIELD_EVENT, "context.ip");
  ana_formula_free(f);

  /* count with a field: events that have the field. */
  f = parse("count(x.sessionId) + count(x.plan)");
  check_term(ana_formula_term(f, 0), ANA_AGG_COUNT, "x", ANA_FIELD_EVENT, "sessionId");
  check_term(ana_formula_term(f, 1), ANA_AGG_COUNT, "x", ANA_FIELD_PROPERTY, "plan");
  ana_formula_free(f);
}

static void test_quoted_names_and_star(void **state) {
  (void)state;
  struct ana_formula *f = parse("count(\"Order Completed\") + count(*) + count(\"*\") + "
                                "count(\"a\\\"b\\\\c\") + count(\"été\") + count(\"sent\")");
  assert_int_equal(ana_formula_term_count(f), 6);
  check_term(ana_formula_term(f, 0), ANA_AGG_COUNT, "Order Completed", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 1), ANA_AGG_COUNT, NULL, ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 2), ANA_AGG_COUNT, "*", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 3), ANA_AGG_COUNT, "a\"b\\c", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 4), ANA_AGG_COUNT, "été", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 5), ANA_AGG_COUNT, "sent", ANA_FIELD_NONE, NULL);
  char *s = ana_formula_to_string(f);
  assert_string_equal(s, "count(\"Order Completed\") + count(*) + count(\"*\") + "
                         "count(\"a\\\"b\\\\c\") + count(\"été\") + count(sent)");
  free(s);
  ana_formula_free(f);
  /* An event called like a function is fine inside the parentheses. */
  check_canonical("count(count) + sum(avg.sum)", "count(count) + sum(avg.sum)");
  check_canonical("count(\"1st\") + count(\"page.view\")", "count(\"1st\") + count(\"page.view\")");
}

static void test_deduplication(void **state) {
  (void)state;
  struct ana_formula *f =
      parse("count(a) + count(a) + a + count(\"a\") + sum(a.x) + sum(a.properties.x) + "
            "sum(a.\"x\") + sum(a.x.y) + sum(a.\"x.y\") + count(*) + count(\"*\") + count(a.x) "
            "+ avg(a.x) + sum(b.x)");
  assert_int_equal(ana_formula_term_count(f), 9);
  check_term(ana_formula_term(f, 0), ANA_AGG_COUNT, "a", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 1), ANA_AGG_SUM, "a", ANA_FIELD_PROPERTY, "x");
  check_term(ana_formula_term(f, 2), ANA_AGG_SUM, "a", ANA_FIELD_PROPERTY, "x.y");
  check_term(ana_formula_term(f, 3), ANA_AGG_SUM, "a", ANA_FIELD_PROPERTY, "x.y");
  check_term(ana_formula_term(f, 4), ANA_AGG_COUNT, NULL, ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 5), ANA_AGG_COUNT, "*", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 6), ANA_AGG_COUNT, "a", ANA_FIELD_PROPERTY, "x");
  check_term(ana_formula_term(f, 7), ANA_AGG_AVG, "a", ANA_FIELD_PROPERTY, "x");
  check_term(ana_formula_term(f, 8), ANA_AGG_SUM, "b", ANA_FIELD_PROPERTY, "x");
  double v[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, out;
  assert_true(ana_formula_eval(f, v, &out));
  assert_true(out == 1 + 1 + 1 + 1 + 2 + 2 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9);
  ana_formula_free(f);
}

/* ---- identifiers ---- */

static void test_bare_identifier_counts_events(void **state) {
  (void)state;
  struct ana_formula *f = parse("delivered + count(delivered) + Order_2");
  assert_int_equal(ana_formula_term_count(f), 2);
  check_term(ana_formula_term(f, 0), ANA_AGG_COUNT, "delivered", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 1), ANA_AGG_COUNT, "Order_2", ANA_FIELD_NONE, NULL);
  ana_formula_free(f);
  /* With a lookup that knows nothing, still a count. */
  struct account a = {0};
  struct ana_formula_env env = env_of(NULL, &a);
  check_canonical_env("sent", &env, "count(sent)");
  assert_int_equal(a.lookups, 1);
}

static void test_spec_example(void **state) {
  (void)state;
  const char *spec = "(delivered / sent) * 100";
  struct ana_formula *f = parse(spec);
  char *s = ana_formula_to_string(f);
  assert_string_equal(s, "(count(delivered) / count(sent)) * 100");
  free(s);
  assert_int_equal(ana_formula_term_count(f), 2);
  check_term(ana_formula_term(f, 0), ANA_AGG_COUNT, "delivered", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 1), ANA_AGG_COUNT, "sent", ANA_FIELD_NONE, NULL);
  double v[2] = {45, 60}, out = 0;
  assert_true(ana_formula_eval(f, v, &out));
  assert_true(out == 75);
  ana_formula_free(f);

  struct vars vars = {0};
  vars_add(&vars, "sent", "count(message_sent)");
  vars_add(&vars, "delivered", "count(message_delivered)");
  struct ana_formula_env env = env_of(&vars, NULL);
  f = parse_env(spec, &env);
  s = ana_formula_to_string(f);
  assert_string_equal(s, "(count(message_delivered) / count(message_sent)) * 100");
  free(s);
  assert_int_equal(ana_formula_term_count(f), 2);
  check_term(ana_formula_term(f, 0), ANA_AGG_COUNT, "message_delivered", ANA_FIELD_NONE, NULL);
  check_term(ana_formula_term(f, 1), ANA_AGG_COUNT, "message_sent", ANA_FIELD_NONE, NULL);
  double w[2] = {1, 4};
  assert_true(ana_formula_eval(f, w, &out));
  assert_true(out == 25);
  ana_formula_free(f);
}

static void test_variables(void **state) {
  (void)state;
  struct vars vars = {0};
  vars_add(&vars, "rate", "hits / total");
  vars_add(&vars, "total", "hits + misses");
  vars_add(&vars, "hits", "count(cache_hit)");
  vars_add(&vars, "misses", "count(cache_miss)");
  vars_add(&vars, "scaled", "-rate * 100");
  struct ana_formula_env env = env_of(&vars, NULL);
  check_canonical_env("scaled", &env,
                      "-(count(cache_hit) / (count(cache_hit) + count(cache_miss))) * 100");
  check_canonical_env("rate * 2", &env,
                      "(count(cache_hit) / (count(cache_hit) + count(cache_miss))) * 2");
  struct ana_formula *f = parse_env("scaled", &env);
  assert_int_equal(ana_formula_term_count(f), 2);
  double v[2] = {3, 1}, out;
  assert_true(ana_formula_eval(f, v, &out));
  assert_true(out == -75);
  ana_formula_free(f);

  /* Cycles, direct and through others; unused variables are checked too. */
  struct vars cyc = {0};
  vars_add(&cyc, "a", "b + 1");
  vars_add(&cyc, "b", "a");
  env = env_of(&cyc, NULL);
  check_error_env("a", &env, "formula: cycle in variables: a -> b -> a", 0);
  check_error_env("b * 2", &env, "formula: cycle in variables: b -> a -> b", 0);
  check_error_env("1", &env, "formula: cycle in variables: a -> b -> a", 0);
  struct vars self = {0};
  vars_add(&self, "x", "count(y)");
  vars_add(&self, "a", "x + a");
  env = env_of(&self, NULL);
  check_error_env("x", &env, "formula: cycle in variables: a -> a", 0);

  /* Errors inside a variable name it and carry no position. */
  struct vars bad = {0};
  vars_add(&bad, "sent", "count(x))");
  env = env_of(&bad, NULL);
  check_error_env("sent + 1", &env, "formula: in variable 'sent': unexpected ')' at character 9",
                  0);
  struct vars unused = {0};
  vars_add(&unused, "fine", "count(a)");
  vars_add(&unused, "broken", "summ(x)");
  env = env_of(&unused, NULL);
  check_error_env("fine", &env,
                  "formula: in variable 'broken': unknown function 'summ' at character 1", 0);
  struct vars via = {0};
  vars_add(&via, "outer", "inner * 2");
  vars_add(&via, "inner", "sum(x)");
  env = env_of(&via, NULL);
  check_error_env("outer", &env,
                  "formula: in variable 'outer', variable 'inner': 'sum' needs a field, e.g. "
                  "sum(message_sent.charactersCount), at character 1",
                  0);

  /* Declarations. */
  struct vars names = {0};
  vars_add(&names, "a b", "1");
  env = env_of(&names, NULL);
  check_error_env("1", &env,
                  "formula: variable name 'a b' is not an identifier (letters, digits and '_', "
                  "not starting with a digit)",
                  0);
  struct vars twice = {0};
  vars_add(&twice, "a", "1");
  vars_add(&twice, "a", "2");
  env = env_of(&twice, NULL);
  check_error_env("a", &env, "formula: variable 'a' is declared twice", 0);
  static struct vars many;
  many.n = 0;
  static char many_names[ANA_FORMULA_MAX_VARS + 1][16];
  for (int i = 0; i <= ANA_FORMULA_MAX_VARS; i++) {
    snprintf(many_names[i], sizeof many_names[i], "v%d", i);
    vars_add(&many, many_names[i], "1");
  }
  env = env_of(&many, NULL);
  check_error_env("1", &env, "formula: more than 256 variables", 0);
  many.n = ANA_FORMULA_MAX_VARS;
  env = env_of(&many, NULL);
  ana_formula_free(parse_env("v255", &env));
}

static void test_other_metrics(void **state) {
  (void)state;
  struct account a = {0};
  struct metric_def *rate = account_add(&a, "rate", "(delivered / sent) * 100");
  vars_add(&rate->vars, "sent", "count(message_sent)");
  vars_add(&rate->vars, "delivered", "count(message_delivered)");
  account_add(&a, "sent", "count(sms_sent)");
  struct metric_def *own = account_add(&a, "own", "sent");
  vars_add(&own->vars, "sent", "count(own_sent)");
  account_add(&a, "bad", "sum(x)");

  struct ana_formula_env env = env_of(NULL, &a);
  /* Another metric's formula uses its own variables. */
  check_canonical_env("rate / 2", &env,
                      "((count(message_delivered) / count(message_sent)) * 100) / 2");
  /* Metrics come before the count fallback. */
  check_canonical_env("sent + own", &env, "count(sms_sent) + count(own_sent)");
  /* Variables come before metrics; a metric's formula does not see them. */
  struct vars vars = {0};
  vars_add(&vars, "sent", "count(var_sent)");
  vars_add(&vars, "other", "own");
  env = env_of(&vars, &a);
  check_canonical_env("sent + other", &env, "count(var_sent) + count(own_sent)");
  /* Errors inside a metric name it. */
  env = env_of(NULL, &a);
  check_error_env("bad + 1", &env,
                  "formula: in metric 'bad': 'sum' needs a field, e.g. "
                  "sum(message_sent.charactersCount), at character 1",
                  0);
}

static void test_metric_cycles_and_depth(void **state) {
  (void)state;
  struct account a = {0};
  account_add(&a, "m1", "m2 + 1");
  account_add(&a, "m2", "m1 * 2");
  account_add(&a, "self", "self");
  struct metric_def *m3 = account_add(&a, "m3", "v");
  vars_add(&m3->vars, "v", "m1");
  struct ana_formula_env env = env_of(NULL, &a);
  check_error_env("m1", &env, "formula: cycle in metrics: m1 -> m2 -> m1", 0);
  check_error_env("self", &env, "formula: cycle in metrics: self -> self", 0);
  check_error_env("m3", &env,
                  "formula: in metric 'm3', variable 'v': cycle in metrics: "
                  "m1 -> m2 -> m1",
                  0);

  /* A chain of 8 metrics is fine, 9 is too deep. */
  static char names[10][16], formulas[10][16];
  struct account chain = {0};
  for (int i = 1; i <= 9; i++) {
    snprintf(names[i], sizeof names[i], "d%d", i);
    snprintf(formulas[i], sizeof formulas[i], "d%d", i + 1);
    account_add(&chain, names[i], i == 9 ? "count(x)" : formulas[i]);
  }
  env = env_of(NULL, &chain);
  check_canonical_env("d2", &env, "count(x)");
  check_error_env("d1", &env,
                  "formula: metrics nested deeper than 8: d1 -> d2 -> d3 -> d4 -> d5 -> d6 -> "
                  "d7 -> d8 -> d9",
                  0);
}

/* ---- evaluation ---- */

static void test_empty_values(void **state) {
  (void)state;
  struct ana_formula *f = parse("delivered / sent * 100");
  double out = 7;
  assert_false(ana_formula_eval(f, (double[]){5, 0}, &out));
  assert_false(ana_formula_eval(f, (double[]){0, 0}, &out));
  assert_false(ana_formula_eval(f, (double[]){NAN, 2}, &out));
  assert_false(ana_formula_eval(f, (double[]){1, NAN}, &out));
  assert_false(ana_formula_eval(f, (double[]){INFINITY, 2}, &out));
  assert_false(ana_formula_eval(f, (double[]){1, -0.0}, &out));
  assert_true(out == 7); /* untouched */
  assert_true(ana_formula_eval(f, (double[]){0, 3}, &out));
  assert_true(out == 0);
  ana_formula_free(f);

  f = parse("0 * (a / b) + 1");
  assert_false(ana_formula_eval(f, (double[]){1, 0}, &out));
  ana_formula_free(f);
  f = parse("a * 1e308 * 10");
  assert_false(ana_formula_eval(f, (double[]){1}, &out));
  assert_true(ana_formula_eval(f, (double[]){1e-10}, &out));
  ana_formula_free(f);
  f = parse("avg(x.y) - avg(x.y)");
  assert_false(ana_formula_eval(f, (double[]){NAN}, &out));
  ana_formula_free(f);
  /* No "-0". */
  f = parse("-count(x)");
  assert_true(ana_formula_eval(f, (double[]){0}, &out));
  assert_true(out == 0 && !signbit(out));
  ana_formula_free(f);
  f = parse("1 / 0");
  assert_false(ana_formula_eval(f, NULL, &out));
  ana_formula_free(f);
}

/* ---- errors ---- */

static void test_error_messages(void **state) {
  (void)state;
  check_error("count()", "formula: unexpected ')' at character 7", 7);
  check_error("summ(x.y)", "formula: unknown function 'summ' at character 1", 1);
  check_error("1 + sent(2)", "formula: unknown function 'sent' at character 5", 5);
  check_error("sum(message_sent)",
              "formula: 'sum' needs a field, e.g. sum(message_sent.charactersCount), at "
              "character 1",
              1);
  check_error("1+avg(*)",
              "formula: 'avg' needs a field, e.g. avg(message_sent.charactersCount), at "
              "character 3",
              3);
  check_error("uniq(*)", "formula: 'uniq' needs a field, e.g. uniq(*.sessionId), at character 1",
              1);
  check_error("p95(\"x\")",
              "formula: 'p95' needs a field, e.g. p95(message_sent.charactersCount), at "
              "character 1",
              1);
  check_error("count(\"abc", "formula: unterminated string at character 7", 7);
  check_error("count(\"abc\\", "formula: unterminated string at character 7", 7);
  check_error("count(\"a\\nb\")",
              "formula: invalid escape '\\n' (only \\\" and \\\\ are allowed) at character 9", 9);
  check_error("count(\"\\\x01\")",
              "formula: invalid escape (only \\\" and \\\\ are allowed) at character 8", 8);
  check_error("count(\"\xff\")", "formula: string is not valid UTF-8 at character 7", 7);
  check_error("", "formula: unexpected end of formula at character 1", 1);
  check_error("   ", "formula: unexpected end of formula at character 4", 4);
  check_error("1 + ", "formula: unexpected end of formula at character 5", 5);
  check_error("(1 + 2", "formula: unexpected end of formula at character 7", 7);
  check_error("(1 + 2))", "formula: unexpected ')' at character 8", 8);
  check_error("1 +* 2", "formula: unexpected '*' at character 4", 4);
  check_error("1 2", "formula: unexpected '2' at character 3", 3);
  check_error("count(x.)", "formula: unexpected ')' at character 9", 9);
  check_error("count(x y)", "formula: unexpected 'y' at character 9", 9);
  check_error("count(1)", "formula: unexpected '1' at character 7", 7);
  check_error("count(x", "formula: unexpected end of formula at character 8", 8);
  check_error("count(x.*)", "formula: unexpected '*' at character 9", 9);
  check_error("count(\"\")", "formula: empty event name at character 7", 7);
  check_error("sum(x.\"\")", "formula: empty field name at character 7", 7);
  check_error("sum(x.properties)",
              "formula: 'properties' needs a property name after it, e.g. "
              "properties.charactersCount, at character 1",
              1);
  check_error("a.b", "formula: unexpected '.' at character 2", 2);
  check_error("+1", "formula: unexpected '+' at character 1", 1);
  check_error("#", "formula: unexpected '#' at character 1", 1);
  check_error("1 % 2", "formula: unexpected '%' at character 3", 3);
  check_error("\x01", "formula: unexpected byte 0x01 at character 1", 1);
  check_error("\xff", "formula: unexpected byte 0xFF at character 1", 1);
  check_error("été", "formula: unexpected 'é' at character 1", 1);
  check_error("1 \"x\"", "formula: unexpected string \"x\" at character 3", 3);
  /* Columns count characters, across lines. */
  check_error("count(\"é\") + #", "formula: unexpected '#' at character 14", 14);
  check_error("count(a)\n+ )", "formula: unexpected ')' at character 12", 12);
  /* Long tokens are cut in the message. */
  char text[200];
  memset(text, 'x', sizeof text);
  memcpy(text, "1 ", 2);
  text[sizeof text - 1] = '\0';
  struct ana_error err = {0};
  assert_null(ana_formula_parse(text, NULL, &err, NULL));
  assert_string_equal(err.message,
                      "formula: unexpected 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' at "
                      "character 3");
  /* err and error_pos are optional. */
  assert_null(ana_formula_parse("(", NULL, NULL, NULL));
}

/* ---- limits ---- */

static void test_limits(void **state) {
  (void)state;
  static char text[ANA_FORMULA_MAX_TEXT + 2];
  /* Text length. */
  memset(text, ' ', sizeof text);
  text[0] = '1';
  text[ANA_FORMULA_MAX_TEXT] = '\0';
  ana_formula_free(parse(text));
  text[ANA_FORMULA_MAX_TEXT] = ' ';
  text[ANA_FORMULA_MAX_TEXT + 1] = '\0';
  check_error(text, "formula: longer than 4096 bytes at character 4097", 4097);

  /* Distinct terms: 64 fine, the 65th named where it is. */
  size_t len = 0;
  for (int i = 0; i < ANA_FORMULA_MAX_TERMS; i++)
    len += (size_t)snprintf(text + len, sizeof text - len, "%scount(e%02d)", i ? "+" : "", i);
  struct ana_formula *f = parse(text);
  assert_int_equal(ana_formula_term_count(f), ANA_FORMULA_MAX_TERMS);
  ana_formula_free(f);
  strcat(text, "+count(e00)");
  ana_formula_free(parse(text));
  int col = (int)strlen(text) + 2;
  strcat(text, "+count(e64)");
  check_error(text, "formula: more than 64 distinct terms at character 716", col);
  assert_int_equal(col, 716);

  /* Nesting: parentheses and unary minus. */
  for (int i = 0; i < 64; i++)
    text[i] = '(';
  text[64] = '1';
  for (int i = 0; i < 64; i++)
    text[65 + i] = ')';
  text[129] = '\0';
  assert_true(value_of(text) == 1);
  memmove(text + 1, text, 130);
  check_error(text, "formula: nesting deeper than 64 at character 65", 65);
  memset(text, '-', 64);
  strcpy(text + 64, "1");
  assert_true(value_of(text) == 1);
  memset(text, '-', 65);
  strcpy(text + 65, "1");
  check_error(text, "formula: nesting deeper than 64 at character 65", 65);

  /* Variables count as a level each. */
  static char names[70][16], formulas[70][16];
  struct vars chain = {0};
  for (int i = 0; i < 66; i++) {
    snprintf(names[i], sizeof names[i], "v%d", i);
    snprintf(formulas[i], sizeof formulas[i], "v%d", i + 1);
    vars_add(&chain, names[i], formulas[i]);
  }
  chain.formulas[63] = "count(x)";
  chain.n = 64;
  struct ana_formula_env env = env_of(&chain, NULL);
  check_canonical_env("v0", &env, "count(x)");
  chain.formulas[63] = formulas[63];
  chain.formulas[64] = "count(x)";
  chain.n = 65;
  env = env_of(&chain, NULL);
  check_error_env("v0", &env,
                  "formula: in variable 'v0', variable 'v1', ..., variable 'v62', variable "
                  "'v63': nesting deeper than 64 at character 1",
                  0);

  /* Expanded size: each variable doubles the one before. */
  static char dbl[16][16];
  struct vars grow = {0};
  vars_add(&grow, "g0", "count(x)");
  for (int i = 1; i < 14; i++) {
    snprintf(names[i], sizeof names[i], "g%d", i);
    snprintf(dbl[i], sizeof dbl[i], "g%d + g%d", i - 1, i - 1);
    vars_add(&grow, names[i], dbl[i]);
  }
  grow.n = 13; /* g12: 61447 bytes expanded, 4096 terms */
  env = env_of(&grow, NULL);
  f = parse_env("g12", &env);
  double one = 1, out;
  assert_true(ana_formula_eval(f, &one, &out));
  assert_true(out == 4096);
  ana_formula_free(f);
  grow.n = 14;
  env = env_of(&grow, NULL);
  struct ana_error err = {0};
  int pos = -1;
  assert_null(ana_formula_parse("g13", &env, &err, &pos));
  assert_int_equal(pos, 0);
  assert_non_null(strstr(err.message, "longer than 65536 bytes after expanding variables and "
                                      "metrics at character 1"));
  /* At the top level, the reference that goes over is named. */
  static char wide[4001];
  memset(wide, ' ', sizeof wide - 1);
  memcpy(wide, "count(x)", 8);
  struct vars big = {0};
  vars_add(&big, "w", wide);
  env = env_of(&big, NULL);
  strcpy(text, "w");
  for (int i = 1; i < 16; i++)
    strcat(text, "+w");
  ana_formula_free(parse_env(text, &env)); /* 16 * 4000 + 31 bytes */
  strcat(text, "+w");
  check_error_env(text, &env,
                  "formula: longer than 65536 bytes after expanding variables and metrics at "
                  "character 33",
                  33);
}

/* ---- canonical text ---- */

/* A small deterministic generator (xorshift). */
static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static double random_value(void) {
  switch (rng() % 8) {
  case 0: return 0;
  case 1: return NAN;
  case 2: return (double)(rng() % 10);
  case 3: return -(double)(rng() % 1000) / 7;
  default: return (double)(rng() % 1000000) / 1000;
  }
}

static bool same_term(const struct ana_agg_term *a, const struct ana_agg_term *b) {
  if (a->fn != b->fn || a->field_kind != b->field_kind ||
      a->n_field_segments != b->n_field_segments)
    return false;
  if ((a->event_name == NULL) != (b->event_name == NULL) ||
      (a->event_name && strcmp(a->event_name, b->event_name) != 0))
    return false;
  if ((a->field == NULL) != (b->field == NULL) || (a->field && strcmp(a->field, b->field) != 0))
    return false;
  for (size_t i = 0; i < a->n_field_segments; i++)
    if (strcmp(a->field_segments[i], b->field_segments[i]) != 0)
      return false;
  return true;
}

/* parse(to_string(f)) has the same terms and values, and the same text. */
static void check_round_trip(const char *text, const struct ana_formula_env *env) {
  struct ana_formula *f = parse_env(text, env);
  char *s = ana_formula_to_string(f);
  assert_non_null(s);
  struct ana_formula *g = parse(s); /* resolved: needs no environment */
  char *s2 = ana_formula_to_string(g);
  if (strcmp(s, s2) != 0)
    fail_msg("\"%s\": \"%s\" then \"%s\"", text, s, s2);
  size_t n = ana_formula_term_count(f);
  assert_int_equal(ana_formula_term_count(g), n);
  for (size_t i = 0; i < n; i++)
    assert_true(same_term(ana_formula_term(f, i), ana_formula_term(g, i)));
  double values[ANA_FORMULA_MAX_TERMS];
  for (int round = 0; round < 200; round++) {
    for (size_t i = 0; i < n; i++)
      values[i] = random_value();
    double a = 0, b = 0;
    bool ok_a = ana_formula_eval(f, values, &a), ok_b = ana_formula_eval(g, values, &b);
    assert_int_equal(ok_a, ok_b);
    if (ok_a && memcmp(&a, &b, sizeof a) != 0)
      fail_msg("\"%s\": %.17g vs %.17g", s, a, b);
  }
  free(s);
  free(s2);
  ana_formula_free(f);
  ana_formula_free(g);
}

static void test_to_string_round_trip(void **state) {
  (void)state;
  static const char *const texts[] = {
      "(delivered / sent) * 100",
      "1 - 2 - 3 + 4",
      "1 - (2 - 3)",
      "a / (b / c) / d",
      "a - b * c / d + -e",
      "-(a + b) * -(c - d) / --e",
      "((a + b) + c) + (d + e)",
      "0.1 + 0.2 * 3.3333333333333335 - 1e-300 + 1.7976931348623157e308 / 1e300",
      "count(\"Order Completed\") / count(*) * 100",
      "sum(\"Order Completed\".\"item price\") / count(\"Order Completed\".\"item price\")",
      "avg(x.properties.sessionId) + uniq(*.context.userAgent) + p50(\"a\\\"b\".\"c\\\\d\")",
      "sum(x.properties.properties) + max(*.\"a.b\".c) + min(x.context)",
      "p90(x.y) - p95(x.y) * p99(x.y) / (1 + count(x.y))",
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    check_round_trip(texts[i], NULL);

  struct vars vars = {0};
  vars_add(&vars, "sent", "count(message_sent)");
  vars_add(&vars, "delivered", "count(message_delivered) - count(bounced)");
  vars_add(&vars, "ratio", "delivered / sent");
  struct account a = {0};
  struct metric_def *m = account_add(&a, "rate", "ratio * 100");
  vars_add(&m->vars, "ratio", "x / y");
  struct ana_formula_env env = env_of(&vars, &a);
  check_round_trip("(delivered / sent) * 100", &env);
  check_round_trip("ratio / ratio - rate", &env);
  check_round_trip("-ratio * -rate", &env);

  /* Random formulas from a small grammar. */
  static const char *const atoms[] = {"a",    "b",   "count(c)", "sum(d.e)",          "2",
                                      "0",    "1.5", "avg(*.x)", "uniq(*.sessionId)", "rate",
                                      "ratio"};
  static const char *const ops[] = {" + ", " - ", " * ", " / "};
  for (int round = 0; round < 300; round++) {
    char text[1024] = "";
    int open = 0;
    int parts = 1 + (int)(rng() % 12);
    for (int i = 0; i < parts; i++) {
      if (i > 0)
        strcat(text, ops[rng() % 4]);
      if (rng() % 4 == 0)
        strcat(text, "-");
      if (rng() % 3 == 0) {
        strcat(text, "(");
        open++;
      }
      strcat(text, atoms[rng() % (sizeof atoms / sizeof atoms[0])]);
      if (open > 0 && rng() % 3 == 0) {
        strcat(text, ")");
        open--;
      }
    }
    while (open-- > 0)
      strcat(text, ")");
    check_round_trip(text, &env);
  }
}

/* ---- memory ---- */

static void test_allocation_failures(void **state) {
  (void)state;
  struct vars vars = {0};
  vars_add(&vars, "sent", "count(message_sent)");
  vars_add(&vars, "unused", "sum(\"a b\".c.d)");
  struct account a = {0};
  account_add(&a, "other", "sum(x.y) / 2");
  struct ana_formula_env env = env_of(&vars, &a);
  const char *text = "(count(\"Order Completed\") / sent) * 100 + other + 1.5";
  struct ana_formula *f = NULL;
  long n;
  for (n = 1; n < 1000; n++) {
    struct ana_error err = {0};
    int pos = -1;
    ana_alloc_fail_after(n);
    f = ana_formula_parse(text, &env, &err, &pos);
    ana_alloc_fail_after(0);
    if (f)
      break;
    assert_int_equal(err.code, ANA_STATUS_RESOURCE_EXHAUSTED);
    assert_string_equal(err.message, "formula: out of memory");
    assert_int_equal(pos, 0);
  }
  assert_non_null(f);
  assert_true(n > 3);
  char *s = NULL;
  for (n = 1; n < 100; n++) {
    ana_alloc_fail_after(n);
    s = ana_formula_to_string(f);
    ana_alloc_fail_after(0);
    if (s)
      break;
  }
  assert_string_equal(s, "(count(\"Order Completed\") / count(message_sent)) * 100 + sum(x.y) / "
                         "2 + 1.5");
  free(s);
  ana_formula_free(f);
  ana_formula_free(NULL);
}

/* ---- bare names and the event names seen ---- */

static const char *const spec_seen[] = {"message_sent", "message_delivered", "page_view", "signup",
                                        "ad_signup"};
#define N_SPEC_SEEN (sizeof spec_seen / sizeof spec_seen[0])

static enum ana_name_match match(const char *name, const char **out, const char **suggest,
                                 size_t *n_suggest) {
  return ana_formula_match_event_name(name, spec_seen, N_SPEC_SEEN, out, suggest, 3, n_suggest);
}

static void test_bare_name_resolves_to_the_one_name_ending_in_it(void **state) {
  (void)state;
  const char *out = NULL, *sug[3];
  size_t n = 99;
  assert_int_equal(match("delivered", &out, sug, &n), ANA_NAME_SUFFIX);
  assert_string_equal(out, "message_delivered");
  assert_int_equal(n, 0);
  assert_int_equal(match("sent", &out, sug, &n), ANA_NAME_SUFFIX);
  assert_string_equal(out, "message_sent");
  assert_int_equal(match("view", &out, sug, &n), ANA_NAME_SUFFIX);
  assert_string_equal(out, "page_view");
  /* A whole part only: "ent" is no part of message_sent. */
  assert_int_equal(match("ent", &out, NULL, NULL), ANA_NAME_NONE);
  assert_null(out);
}

static void test_exact_name_wins(void **state) {
  (void)state;
  const char *out = NULL;
  /* "signup" was seen as such, and "ad_signup" ends in it: exact wins. */
  assert_int_equal(match("signup", &out, NULL, NULL), ANA_NAME_EXACT);
  assert_string_equal(out, "signup");
  assert_int_equal(match("message_sent", &out, NULL, NULL), ANA_NAME_EXACT);
}

static void test_several_matches_are_ambiguous_and_suggested(void **state) {
  (void)state;
  static const char *const seen[] = {"push_open", "mail_open", "push_open", "opened"};
  const char *out = "x", *sug[3];
  size_t n = 0;
  assert_int_equal(ana_formula_match_event_name("open", seen, 4, &out, sug, 3, &n),
                   ANA_NAME_AMBIGUOUS);
  assert_null(out);
  assert_int_equal(n, 2); /* the matches, each once, by name */
  assert_string_equal(sug[0], "mail_open");
  assert_string_equal(sug[1], "push_open");
  /* The same name seen twice is one match. */
  static const char *const twice[] = {"push_open", "push_open"};
  assert_int_equal(ana_formula_match_event_name("open", twice, 2, &out, NULL, 0, NULL),
                   ANA_NAME_SUFFIX);
  assert_string_equal(out, "push_open");
}

static void test_no_match_suggests_the_closest_names(void **state) {
  (void)state;
  const char *out = "x", *sug[3];
  size_t n = 0;
  /* A typo: closest by edit distance to a part after '_'. */
  assert_int_equal(match("delivred", &out, sug, &n), ANA_NAME_NONE);
  assert_null(out);
  assert_int_equal(n, 1);
  assert_string_equal(sug[0], "message_delivered");
  /* Nothing close: no suggestion. */
  assert_int_equal(match("purchase", &out, sug, &n), ANA_NAME_NONE);
  assert_int_equal(n, 0);
  /* Nothing seen at all. */
  assert_int_equal(ana_formula_match_event_name("sent", NULL, 0, &out, sug, 3, &n), ANA_NAME_NONE);
  assert_int_equal(n, 0);
  /* Closest first, at most max_suggest. */
  static const char *const seen[] = {"sends", "sen", "sentx", "xsent", "a_snt"};
  assert_int_equal(ana_formula_match_event_name("sent", seen, 5, &out, sug, 2, &n), ANA_NAME_NONE);
  assert_int_equal(n, 2);
  assert_string_equal(sug[0], "a_snt");
  assert_string_equal(sug[1], "sen");
}

static const char *resolve_spec(void *ctx, const char *name) {
  (void)ctx;
  const char *out = NULL;
  return ana_formula_match_event_name(name, spec_seen, N_SPEC_SEEN, &out, NULL, 0, NULL) ==
                 ANA_NAME_SUFFIX
             ? out
             : NULL;
}

static void test_parse_counts_the_resolved_names(void **state) {
  (void)state;
  struct vars v = {0};
  vars_add(&v, "rate", "delivered / sent");
  struct ana_formula_env env = {v.names, v.formulas, v.n, NULL, NULL, resolve_spec};
  struct ana_error err;
  int pos;
  struct ana_formula *f = ana_formula_parse("rate * 100 + count(sent) + signup", &env, &err, &pos);
  assert_non_null(f);
  char *text = ana_formula_to_string(f);
  /* Bare names resolve (also inside variables); count(sent) is literal. */
  assert_string_equal(text,
                      "(count(message_delivered) / count(message_sent)) * 100 + count(sent) + "
                      "count(signup)");
  free(text);
  ana_formula_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_precedence_and_associativity),
      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_every_function),
      cmocka_unit_test(test_fields),
      cmocka_unit_test(test_quoted_names_and_star),
      cmocka_unit_test(test_deduplication),
      cmocka_unit_test(test_bare_identifier_counts_events),
      cmocka_unit_test(test_spec_example),
      cmocka_unit_test(test_variables),
      cmocka_unit_test(test_other_metrics),
      cmocka_unit_test(test_metric_cycles_and_depth),
      cmocka_unit_test(test_empty_values),
      cmocka_unit_test(test_error_messages),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_to_string_round_trip),
      cmocka_unit_test(test_allocation_failures),
      cmocka_unit_test(test_bare_name_resolves_to_the_one_name_ending_in_it),
      cmocka_unit_test(test_exact_name_wins),
      cmocka_unit_test(test_several_matches_are_ambiguous_and_suggested),
      cmocka_unit_test(test_no_match_suggests_the_closest_names),
      cmocka_unit_test(test_parse_counts_the_resolved_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
