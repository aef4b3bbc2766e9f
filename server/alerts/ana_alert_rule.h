/* Alert rules: the decoded condition and settings of one alert, and the
 * state machine of one alert instance (ok -> pending -> firing ->
 * resolved, with hysteresis, cooldown, re-notify and no-data). Pure code:
 * no I/O, no threads. */
#ifndef ANA_ALERT_RULE_H
#define ANA_ALERT_RULE_H

#include "ana_error.h"
#include "analytics/v1/alerts.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

#define ANA_ALERT_DEFAULT_WINDOW_MS 300000
#define ANA_ALERT_DEFAULT_COOLDOWN_S 300
#define ANA_ALERT_MAX_WINDOW_MS (7LL * 86400000)
#define ANA_ALERT_MIN_WINDOW_MS 1000
#define ANA_ALERT_PANES 10

enum ana_alert_op {
  ANA_ALERT_GT,
  ANA_ALERT_GE,
  ANA_ALERT_LT,
  ANA_ALERT_LE,
  ANA_ALERT_EQ,
  ANA_ALERT_NE
};
enum ana_alert_no_data { ANA_ALERT_NODATA_OK, ANA_ALERT_NODATA_ALERTING, ANA_ALERT_NODATA_KEEP };
enum ana_alert_severity { ANA_ALERT_INFO, ANA_ALERT_WARNING, ANA_ALERT_CRITICAL };
enum ana_alert_state { ANA_ALERT_OK, ANA_ALERT_PENDING, ANA_ALERT_FIRING, ANA_ALERT_RESOLVED };

/* What a rule decides with. */
struct ana_alert_params {
  enum ana_alert_op op;
  double threshold;
  bool has_recovery;
  double recovery; /* firing ends when the value no longer passes op against it */
  int64_t window_ms, for_ms;
  int64_t cooldown_ms, renotify_ms;
  enum ana_alert_no_data no_data;
  enum ana_alert_severity severity;
  bool enabled;
};

/* Checks a (a rule as sent: create or replace) and fills p. Returns 0, or
 * ANA_ERR_INVALID with err INVALID_ARGUMENT "<field>: <reason>" (name,
 * metric, condition.op, condition.window, condition.for,
 * condition.recoveryThreshold, threshold, severity, cooldown, noData,
 * renotifyInterval, channels[i], message). Does not look at the metric's
 * existence. */
int ana_alert_rule_check(const Analytics__V1__Alert *a, struct ana_alert_params *p,
                         struct ana_error *err);

/* Parses "<n>ms", "<n>s", "<n>m", "<n>h", "<n>d" (n a whole number). */
int ana_alert_parse_duration(const char *text, int64_t *ms);

const char *ana_alert_state_name(enum ana_alert_state s);
int ana_alert_state_parse(const char *name); /* -1 when unknown */
const char *ana_alert_severity_name(enum ana_alert_severity s);
const char *ana_alert_op_name(enum ana_alert_op op);

/* One instance's state, as persisted. */
struct ana_alert_instance_state {
  enum ana_alert_state state;
  int64_t since_ms;         /* when it entered state */
  int64_t last_notified_ms; /* 0 = never */
  bool notified;            /* the current firing was notified (its resolve is) */
  bool has_value;
  double value;
};

/* What one step did. */
struct ana_alert_step {
  bool changed; /* the state changed: a history entry */
  enum ana_alert_state from, to;
  bool notify;     /* a notification goes out */
  bool suppressed; /* one would have, but the cooldown holds */
};

/* Advances s with the window's value now (has_value false: no data).
 * Pure: the same inputs give the same result. */
void ana_alert_step(const struct ana_alert_params *p, struct ana_alert_instance_state *s,
                    bool has_value, double value, int64_t now_ms, struct ana_alert_step *out);

/* The earliest time a step without new data could change s (a `for`
 * running out, a re-notify due), or INT64_MAX. */
int64_t ana_alert_next_due(const struct ana_alert_params *p,
                           const struct ana_alert_instance_state *s);

/* Expands the message template into buf: {{value}}, {{threshold}},
 * {{severity}}, {{name}}, {{state}}, {{metric}} and {{<dimension>}} (dims
 * and vals, n of them); an unknown placeholder stays as written. An empty
 * template gives "<name>: <state> (value <v>, threshold <t>)". */
void ana_alert_render(const char *tmpl, const char *name, const char *metric, const char *state,
                      const char *severity, bool has_value, double value, double threshold,
                      const char *const *dims, const char *const *vals, size_t n, char *buf,
                      size_t size);

#endif
