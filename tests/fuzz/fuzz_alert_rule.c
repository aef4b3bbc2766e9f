/* Fuzzes the alert rule decoder: the input is an Alert as REST sends it
 * (JSON, decoded as the bridge does), checked by ana_alert_rule_check; a
 * rule that passes drives the instance state machine with values taken
 * from the input and renders its message template. Any crash, a step that
 * leaves an unknown state, a rendered message that is not NUL-terminated
 * within its buffer, or a rule accepted with parameters outside the
 * documented bounds aborts. */
#include "ana_alert_rule.h"
#include "ana_arena.h"
#include "ana_json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 16u << 20);
  struct ana_json_options o = {.max_depth = 16};
  struct ana_error err;
  char path[128];
  Analytics__V1__Alert *a =
      (void *)ana_json_decode(&analytics__v1__alert__descriptor, (const char *)data, size, &arena,
                              &o, &err, path, sizeof path);
  struct ana_alert_params p;
  if (a && ana_alert_rule_check(a, &p, &err) == 0) {
    if (p.window_ms < ANA_ALERT_MIN_WINDOW_MS || p.window_ms > ANA_ALERT_MAX_WINDOW_MS ||
        p.for_ms < 0 || p.cooldown_ms < 0 || p.renotify_ms < 0 || (unsigned)p.op > ANA_ALERT_NE)
      abort();
    struct ana_alert_instance_state st = {0};
    int64_t now = 1700000000000LL;
    for (size_t i = 0; i + 1 < size && i < 64; i += 2) {
      struct ana_alert_step out;
      bool has = data[i] & 1;
      double v = (double)(int8_t)data[i + 1] * 0.5;
      now += (int64_t)(data[i] >> 1) * 997;
      ana_alert_step(&p, &st, has, v, now, &out);
      if ((unsigned)st.state > ANA_ALERT_RESOLVED || (out.notify && out.suppressed))
        abort();
      (void)ana_alert_next_due(&p, &st);
    }
    char buf[256];
    const char *dims[] = {"country"}, *vals[] = {"de"};
    ana_alert_render(a->message, a->name, a->metric, ana_alert_state_name(st.state),
                     ana_alert_severity_name(p.severity), st.has_value, st.value, p.threshold, dims,
                     vals, 1, buf, sizeof buf);
    if (!memchr(buf, '\0', sizeof buf))
      abort();
  }
  ana_arena_fini(&arena);
  return 0;
}
