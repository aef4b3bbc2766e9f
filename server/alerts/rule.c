/* Alert rules: the decoder and checks of a rule as sent, the instance state
 * machine and the message template. */
#include "ana_alert_rule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_CHARS 128
#define MESSAGE_MAX_CHARS 2048
#define MAX_CHANNELS 16
#define MAX_COOLDOWN_S 604800

static const struct {
  const char *name;
  enum ana_alert_op op;
} ops[] = {
    {"greater_than", ANA_ALERT_GT},
    {"gt", ANA_ALERT_GT},
    {">", ANA_ALERT_GT},
    {"greater_or_equal", ANA_ALERT_GE},
    {"gte", ANA_ALERT_GE},
    {">=", ANA_ALERT_GE},
    {"less_than", ANA_ALERT_LT},
    {"lt", ANA_ALERT_LT},
    {"<", ANA_ALERT_LT},
    {"less_or_equal", ANA_ALERT_LE},
    {"lte", ANA_ALERT_LE},
    {"<=", ANA_ALERT_LE},
    {"equal", ANA_ALERT_EQ},
    {"eq", ANA_ALERT_EQ},
    {"==", ANA_ALERT_EQ},
    {"not_equal", ANA_ALERT_NE},
    {"ne", ANA_ALERT_NE},
    {"!=", ANA_ALERT_NE},
};

static int parse_op(const char *s, enum ana_alert_op *out) {
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (strcmp(ops[i].name, s) == 0) {
      *out = ops[i].op;
      return 0;
    }
  return -1;
}

const char *ana_alert_op_name(enum ana_alert_op op) {
  static const char *const names[] = {
      "greater_than", "greater_or_equal", "less_than", "less_or_equal", "equal", "not_equal"};
  return (unsigned)op < 6 ? names[op] : "?";
}

const char *ana_alert_state_name(enum ana_alert_state s) {
  static const char *const names[] = {"ok", "pending", "firing", "resolved"};
  return (unsigned)s < 4 ? names[s] : "?";
}

int ana_alert_state_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(ana_alert_state_name((enum ana_alert_state)i), name) == 0)
      return i;
  return -1;
}

const char *ana_alert_severity_name(enum ana_alert_severity s) {
  static const char *const names[] = {"info", "warning", "critical"};
  return (unsigned)s < 3 ? names[s] : "?";
}

int ana_alert_parse_duration(const char *text, int64_t *ms) {
  if (!text || !*text)
    return -1;
  char *end;
  long long n = strtoll(text, &end, 10);
  if (end == text || n < 0 || n > 1000000000LL || text[0] == '-' || text[0] == '+' ||
      text[0] == ' ')
    return -1;
  int64_t unit;
  if (strcmp(end, "ms") == 0)
    unit = 1;
  else if (strcmp(end, "s") == 0)
    unit = 1000;
  else if (strcmp(end, "m") == 0)
    unit = 60000;
  else if (strcmp(end, "h") == 0)
    unit = 3600000;
  else if (strcmp(end, "d") == 0)
    unit = 86400000;
  else
    return -1;
  *ms = n * unit;
  return 0;
}

static const Google__Protobuf__Value *field(const Google__Protobuf__Struct *st, const char *key) {
  for (size_t i = 0; i < st->n_fields; i++)
    if (st->fields[i]->key && strcmp(st->fields[i]->key, key) == 0)
      return st->fields[i]->value;
  return NULL;
}

static int bad(struct ana_error *err, const char *field_name, const char *reason) {
  ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s", field_name, reason);
  return ANA_ERR_INVALID;
}

static const char *const OP_REASON =
    "must be greater_than, greater_or_equal, less_than, less_or_equal, equal or not_equal "
    "(or gt, gte, lt, lte, eq, ne, >, >=, <, <=, ==, !=)";

static int duration_field(const Google__Protobuf__Struct *st, const char *key, const char *path,
                          int64_t min_ms, int64_t max_ms, int64_t *out, struct ana_error *err) {
  const Google__Protobuf__Value *v = field(st, key);
  if (!v || v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE)
    return 0;
  int64_t ms;
  if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE ||
      ana_alert_parse_duration(v->string_value, &ms) < 0)
    return bad(err, path, "must be a duration such as \"30s\", \"5m\" or \"1h\"");
  if (ms < min_ms || ms > max_ms) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: must be between %lldms and %lldms", path,
                  (long long)min_ms, (long long)max_ms);
    return ANA_ERR_INVALID;
  }
  *out = ms;
  return 0;
}

static int check_condition(const Google__Protobuf__Value *c, struct ana_alert_params *p,
                           struct ana_error *err) {
  if (!c || c->kind_case == GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET ||
      c->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE)
    return bad(err, "condition", "is required");
  if (c->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
    if (parse_op(c->string_value, &p->op) < 0)
      return bad(err, "condition", OP_REASON);
    return 0;
  }
  if (c->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE || !c->struct_value)
    return bad(err, "condition",
               "must be an operator such as \"greater_than\" or an object "
               "{\"type\":\"threshold\",\"op\":...}");
  const Google__Protobuf__Struct *st = c->struct_value;
  static const char *const known[] = {"type", "op", "window", "for", "recoveryThreshold"};
  for (size_t i = 0; i < st->n_fields; i++) {
    bool ok = false;
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
      ok = ok || (st->fields[i]->key && strcmp(st->fields[i]->key, known[k]) == 0);
    if (!ok) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                    "condition.%.64s: unknown (type, op, window, for, recoveryThreshold)",
                    st->fields[i]->key ? st->fields[i]->key : "");
      return ANA_ERR_INVALID;
    }
  }
  const Google__Protobuf__Value *type = field(st, "type");
  if (type && type->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE &&
      (type->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE ||
       strcmp(type->string_value, "threshold") != 0))
    return bad(err, "condition.type", "must be \"threshold\"");
  const Google__Protobuf__Value *op = field(st, "op");
  if (!op || op->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
    return bad(err, "condition.op", "is required: greater_than, less_than, ...");
  if (parse_op(op->string_value, &p->op) < 0)
    return bad(err, "condition.op", OP_REASON);
  if (duration_field(st, "window", "condition.window", ANA_ALERT_MIN_WINDOW_MS,
                     ANA_ALERT_MAX_WINDOW_MS, &p->window_ms, err) < 0 ||
      duration_field(st, "for", "condition.for", 0, ANA_ALERT_MAX_WINDOW_MS, &p->for_ms, err) < 0)
    return ANA_ERR_INVALID;
  const Google__Protobuf__Value *rec = field(st, "recoveryThreshold");
  if (rec && rec->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE) {
    if (rec->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE ||
        !isfinite(rec->number_value))
      return bad(err, "condition.recoveryThreshold", "must be a finite number");
    p->has_recovery = true;
    p->recovery = rec->number_value;
  }
  return 0;
}

int ana_alert_rule_check(const Analytics__V1__Alert *a, struct ana_alert_params *p,
                         struct ana_error *err) {
  memset(p, 0, sizeof *p);
  p->window_ms = ANA_ALERT_DEFAULT_WINDOW_MS;
  p->cooldown_ms = ANA_ALERT_DEFAULT_COOLDOWN_S * 1000LL;
  p->enabled = !a->enabled || a->enabled->value;
  if (!a->name || !*a->name)
    return bad(err, "name", "is required");
  if (strlen(a->name) > NAME_MAX_CHARS)
    return bad(err, "name", "at most 128 characters");
  if (!a->metric || !*a->metric)
    return bad(err, "metric", "is required: a metric id or name");
  if (strlen(a->metric) > NAME_MAX_CHARS)
    return bad(err, "metric", "at most 128 characters");
  if (check_condition(a->condition, p, err) < 0)
    return ANA_ERR_INVALID;
  if (!isfinite(a->threshold))
    return bad(err, "threshold", "must be a finite number");
  p->threshold = a->threshold;
  if (!p->has_recovery)
    p->recovery = p->threshold;
  if (p->has_recovery) {
    bool wrong = ((p->op == ANA_ALERT_GT || p->op == ANA_ALERT_GE) && p->recovery > p->threshold) ||
                 ((p->op == ANA_ALERT_LT || p->op == ANA_ALERT_LE) && p->recovery < p->threshold) ||
                 p->op == ANA_ALERT_EQ || p->op == ANA_ALERT_NE;
    if (wrong)
      return bad(err, "condition.recoveryThreshold",
                 "must lie on the healthy side of threshold (not above it for greater_*, not "
                 "below it for less_*; none for equal/not_equal)");
  }
  if (!a->severity || !*a->severity)
    p->severity = ANA_ALERT_WARNING;
  else if (strcmp(a->severity, "info") == 0)
    p->severity = ANA_ALERT_INFO;
  else if (strcmp(a->severity, "warning") == 0)
    p->severity = ANA_ALERT_WARNING;
  else if (strcmp(a->severity, "critical") == 0)
    p->severity = ANA_ALERT_CRITICAL;
  else
    return bad(err, "severity", "must be info, warning or critical");
  if (a->cooldown) {
    if (a->cooldown->value < 0 || a->cooldown->value > MAX_COOLDOWN_S)
      return bad(err, "cooldown", "must be between 0 and 604800 seconds");
    p->cooldown_ms = a->cooldown->value * 1000LL;
  }
  if (a->renotify_interval < 0 || a->renotify_interval > MAX_COOLDOWN_S)
    return bad(err, "renotifyInterval", "must be between 0 and 604800 seconds");
  p->renotify_ms = a->renotify_interval * 1000LL;
  if (!a->no_data || !*a->no_data || strcmp(a->no_data, "ok") == 0)
    p->no_data = ANA_ALERT_NODATA_OK;
  else if (strcmp(a->no_data, "alerting") == 0)
    p->no_data = ANA_ALERT_NODATA_ALERTING;
  else if (strcmp(a->no_data, "keep") == 0)
    p->no_data = ANA_ALERT_NODATA_KEEP;
  else
    return bad(err, "noData", "must be ok, alerting or keep");
  if (a->message && strlen(a->message) > MESSAGE_MAX_CHARS)
    return bad(err, "message", "at most 2048 characters");
  if (a->n_channels > MAX_CHANNELS)
    return bad(err, "channels", "at most 16");
  for (size_t i = 0; i < a->n_channels; i++) {
    size_t n = strlen(a->channels[i]);
    if (n == 0 || n > NAME_MAX_CHARS) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                    "channels[%zu]: must be a channel type (email, slack, webhook, telegram) or "
                    "a channel id of 1 to 128 characters",
                    i);
      return ANA_ERR_INVALID;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* the state machine */

static bool passes(enum ana_alert_op op, double v, double t) {
  switch (op) {
  case ANA_ALERT_GT: return v > t;
  case ANA_ALERT_GE: return v >= t;
  case ANA_ALERT_LT: return v < t;
  case ANA_ALERT_LE: return v <= t;
  case ANA_ALERT_EQ: return v == t;
  case ANA_ALERT_NE: return v != t;
  }
  return false;
}

static bool cooled(const struct ana_alert_params *p, const struct ana_alert_instance_state *s,
                   int64_t now_ms) {
  return s->last_notified_ms == 0 || now_ms - s->last_notified_ms >= p->cooldown_ms;
}

void ana_alert_step(const struct ana_alert_params *p, struct ana_alert_instance_state *s,
                    bool has_value, double value, int64_t now_ms, struct ana_alert_step *out) {
  memset(out, 0, sizeof *out);
  out->from = out->to = s->state;
  s->has_value = has_value;
  s->value = has_value ? value : 0;
  bool breaching, recovered;
  if (!has_value) {
    if (p->no_data == ANA_ALERT_NODATA_KEEP)
      return;
    breaching = p->no_data == ANA_ALERT_NODATA_ALERTING;
    recovered = !breaching;
  } else {
    breaching = passes(p->op, value, p->threshold);
    recovered = !passes(p->op, value, p->recovery);
  }
  enum ana_alert_state next = s->state;
  switch (s->state) {
  case ANA_ALERT_OK:
  case ANA_ALERT_RESOLVED:
    if (breaching)
      next = p->for_ms > 0 ? ANA_ALERT_PENDING : ANA_ALERT_FIRING;
    break;
  case ANA_ALERT_PENDING:
    if (!breaching)
      next = ANA_ALERT_OK;
    else if (now_ms - s->since_ms >= p->for_ms)
      next = ANA_ALERT_FIRING;
    break;
  case ANA_ALERT_FIRING:
    if (recovered)
      next = ANA_ALERT_RESOLVED;
    else if (p->renotify_ms > 0 && s->last_notified_ms &&
             now_ms - s->last_notified_ms >= p->renotify_ms && cooled(p, s, now_ms)) {
      out->notify = true; /* a reminder: no state change */
      s->last_notified_ms = now_ms;
      s->notified = true;
    }
    break;
  }
  if (next == s->state)
    return;
  out->changed = true;
  out->to = next;
  if (next == ANA_ALERT_FIRING) {
    if (cooled(p, s, now_ms)) {
      out->notify = true;
      s->last_notified_ms = now_ms;
      s->notified = true;
    } else {
      out->suppressed = true;
      s->notified = false;
    }
  } else if (next == ANA_ALERT_RESOLVED) {
    out->notify = s->notified; /* a firing that was notified is resolved once */
    s->notified = false;
  }
  s->state = next;
  s->since_ms = now_ms;
}

int64_t ana_alert_next_due(const struct ana_alert_params *p,
                           const struct ana_alert_instance_state *s) {
  if (s->state == ANA_ALERT_PENDING)
    return s->since_ms + p->for_ms;
  if (s->state == ANA_ALERT_FIRING && p->renotify_ms > 0 && s->last_notified_ms) {
    int64_t a = s->last_notified_ms + p->renotify_ms, b = s->last_notified_ms + p->cooldown_ms;
    return a > b ? a : b;
  }
  return INT64_MAX;
}

/* ------------------------------------------------------------------ */
/* the message */

static void put(char *buf, size_t size, size_t *len, const char *s, size_t n) {
  if (*len + 1 >= size)
    return;
  if (n > size - 1 - *len)
    n = size - 1 - *len;
  memcpy(buf + *len, s, n);
  *len += n;
  buf[*len] = '\0';
}

void ana_alert_render(const char *tmpl, const char *name, const char *metric, const char *state,
                      const char *severity, bool has_value, double value, double threshold,
                      const char *const *dims, const char *const *vals, size_t n, char *buf,
                      size_t size) {
  char v[32], t[32];
  if (has_value)
    snprintf(v, sizeof v, "%.15g", value);
  else
    snprintf(v, sizeof v, "no data");
  snprintf(t, sizeof t, "%.15g", threshold);
  if (size == 0)
    return;
  buf[0] = '\0';
  if (!tmpl || !*tmpl) {
    snprintf(buf, size, "%s: %s (value %s, threshold %s)", name, state, v, t);
    return;
  }
  size_t len = 0;
  for (const char *p = tmpl; *p;) {
    const char *open = strstr(p, "{{");
    if (!open) {
      put(buf, size, &len, p, strlen(p));
      break;
    }
    put(buf, size, &len, p, (size_t)(open - p));
    const char *close = strstr(open + 2, "}}");
    if (!close) {
      put(buf, size, &len, open, strlen(open));
      break;
    }
    char key[128];
    size_t kn = (size_t)(close - open - 2);
    snprintf(key, sizeof key, "%.*s", (int)(kn < sizeof key ? kn : sizeof key - 1), open + 2);
    const char *rep = NULL;
    if (strcmp(key, "value") == 0)
      rep = v;
    else if (strcmp(key, "threshold") == 0)
      rep = t;
    else if (strcmp(key, "severity") == 0)
      rep = severity;
    else if (strcmp(key, "name") == 0)
      rep = name;
    else if (strcmp(key, "state") == 0)
      rep = state;
    else if (strcmp(key, "metric") == 0)
      rep = metric;
    for (size_t i = 0; !rep && i < n; i++)
      if (strcmp(dims[i], key) == 0)
        rep = vals[i];
    if (rep)
      put(buf, size, &len, rep, strlen(rep));
    else
      put(buf, size, &len, open, (size_t)(close + 2 - open));
    p = close + 2;
  }
}
