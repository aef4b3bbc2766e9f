/* Unit tests of the alert instance state machine and rule checks. */
#include "ana_alert_rule.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static struct ana_alert_params params(void) {
  struct ana_alert_params p = {.op = ANA_ALERT_GT,
                               .threshold = 5,
                               .recovery = 5,
                               .window_ms = 300000,
                               .cooldown_ms = 300000,
                               .enabled = true};
  return p;
}

static enum ana_alert_state step(const struct ana_alert_params *p,
                                 struct ana_alert_instance_state *s, bool has, double v,
                                 int64_t now, struct ana_alert_step *out) {
  ana_alert_step(p, s, has, v, now, out);
  return s->state;
}

static void fires_and_resolves_once(void **state) {
  (void)state;
  struct ana_alert_params p = params();
  struct ana_alert_instance_state s = {0};
  struct ana_alert_step o;
  assert_int_equal(step(&p, &s, true, 5, 1000, &o), ANA_ALERT_OK);
  assert_false(o.changed);
  assert_int_equal(step(&p, &s, true, 6, 2000, &o), ANA_ALERT_FIRING);
  assert_true(o.changed && o.notify);
  assert_int_equal(step(&p, &s, true, 7, 3000, &o), ANA_ALERT_FIRING);
  assert_false(o.changed || o.notify);
  assert_int_equal(step(&p, &s, true, 1, 4000, &o), ANA_ALERT_RESOLVED);
  assert_true(o.changed && o.notify);
}

static void pending_for(void **state) {
  (void)state;
  struct ana_alert_params p = params();
  p.for_ms = 60000;
  struct ana_alert_instance_state s = {0};
  struct ana_alert_step o;
  assert_int_equal(step(&p, &s, true, 6, 0, &o), ANA_ALERT_PENDING);
  assert_false(o.notify);
  assert_int_equal(ana_alert_next_due(&p, &s), 60000);
  assert_int_equal(step(&p, &s, true, 6, 59999, &o), ANA_ALERT_PENDING);
  assert_int_equal(step(&p, &s, true, 6, 60000, &o), ANA_ALERT_FIRING);
  assert_true(o.notify);
  /* a dip while pending goes back to ok without a notification */
  s = (struct ana_alert_instance_state){0};
  step(&p, &s, true, 6, 0, &o);
  assert_int_equal(step(&p, &s, true, 4, 100, &o), ANA_ALERT_OK);
  assert_false(o.notify);
}

static void hysteresis(void **state) {
  (void)state;
  struct ana_alert_params p = params();
  p.has_recovery = true;
  p.recovery = 3;
  struct ana_alert_instance_state s = {0};
  struct ana_alert_step o;
  step(&p, &s, true, 6, 0, &o);
  assert_int_equal(step(&p, &s, true, 4, 1000, &o), ANA_ALERT_FIRING); /* above recovery */
  assert_int_equal(step(&p, &s, true, 3, 2000, &o), ANA_ALERT_RESOLVED);
}

static void cooldown_and_renotify(void **state) {
  (void)state;
  struct ana_alert_params p = params();
  p.cooldown_ms = 10000;
  struct ana_alert_instance_state s = {0};
  struct ana_alert_step o;
  step(&p, &s, true, 6, 1000000, &o);
  assert_true(o.notify);
  step(&p, &s, true, 1, 1001000, &o); /* resolved: notified */
  assert_true(o.notify);
  step(&p, &s, true, 6, 1002000, &o); /* fires again within the cooldown */
  assert_int_equal(s.state, ANA_ALERT_FIRING);
  assert_false(o.notify);
  assert_true(o.suppressed);
  step(&p, &s, true, 1, 1003000, &o); /* its resolve is not notified either */
  assert_false(o.notify);
  step(&p, &s, true, 6, 1010000, &o);
  assert_true(o.notify);
  /* re-notify while firing */
  p.renotify_ms = 20000;
  step(&p, &s, true, 6, 1029999, &o);
  assert_false(o.notify);
  step(&p, &s, true, 6, 1030000, &o);
  assert_true(o.notify);
  assert_false(o.changed);
}

static void no_data(void **state) {
  (void)state;
  struct ana_alert_params p = params();
  struct ana_alert_instance_state s = {0};
  struct ana_alert_step o;
  step(&p, &s, true, 6, 0, &o);
  p.no_data = ANA_ALERT_NODATA_KEEP;
  assert_int_equal(step(&p, &s, false, 0, 1000, &o), ANA_ALERT_FIRING);
  p.no_data = ANA_ALERT_NODATA_OK;
  assert_int_equal(step(&p, &s, false, 0, 2000, &o), ANA_ALERT_RESOLVED);
  p.no_data = ANA_ALERT_NODATA_ALERTING;
  assert_int_equal(step(&p, &s, false, 0, 400000, &o), ANA_ALERT_FIRING);
}

static void restart_keeps_state(void **state) {
  (void)state;
  struct ana_alert_params p = params();
  struct ana_alert_instance_state s = {0};
  struct ana_alert_step o;
  step(&p, &s, true, 6, 0, &o);
  struct ana_alert_instance_state restored = s; /* as persisted and read back */
  step(&p, &restored, true, 6, 5000, &o);
  assert_false(o.notify || o.changed);
}

static void rule_checks_name_the_field(void **state) {
  (void)state;
  Analytics__V1__Alert a = ANALYTICS__V1__ALERT__INIT;
  Google__Protobuf__Value c = GOOGLE__PROTOBUF__VALUE__INIT;
  c.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  c.string_value = "greater_than";
  a.name = "High Error Rate";
  a.metric = "error_rate";
  a.condition = &c;
  a.threshold = 5;
  a.severity = "critical";
  struct ana_alert_params p;
  struct ana_error err;
  assert_int_equal(ana_alert_rule_check(&a, &p, &err), 0);
  assert_true(p.enabled);
  assert_int_equal(p.cooldown_ms, 300000);
  assert_int_equal(p.window_ms, 300000);
  c.string_value = ">=";
  assert_int_equal(ana_alert_rule_check(&a, &p, &err), 0);
  assert_int_equal(p.op, ANA_ALERT_GE);
  c.string_value = "bigger";
  assert_true(ana_alert_rule_check(&a, &p, &err) < 0);
  assert_memory_equal(err.message, "condition: ", 11);
  c.string_value = "gt";
  a.severity = "fatal";
  assert_true(ana_alert_rule_check(&a, &p, &err) < 0);
  assert_memory_equal(err.message, "severity: ", 10);
}

static void render(void **state) {
  (void)state;
  char buf[128];
  const char *dims[] = {"region"}, *vals[] = {"eu"};
  ana_alert_render("{{value}} > {{threshold}} in {{region}} ({{severity}}) {{x}}", "n", "m",
                   "firing", "critical", true, 6, 5, dims, vals, 1, buf, sizeof buf);
  assert_string_equal(buf, "6 > 5 in eu (critical) {{x}}");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fires_and_resolves_once),
      cmocka_unit_test(pending_for),
      cmocka_unit_test(hysteresis),
      cmocka_unit_test(cooldown_and_renotify),
      cmocka_unit_test(no_data),
      cmocka_unit_test(restart_keeps_state),
      cmocka_unit_test(rule_checks_name_the_field),
      cmocka_unit_test(render),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
