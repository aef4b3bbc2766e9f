/* The built-in report templates, campaign_performance and metric_summary:
 * parameters checked by JSON path, every number asked of the metrics engine
 * (ana_metric_query_adhoc or a stored metric's query), laid out as a report
 * document for the writers. */
#include "ana_report_templates.h"

#include "ana_buckets.h"
#include "ana_log.h"
#include "ana_metric_query.h"
#include "ana_timestamp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_MS 86400000LL
#define HOUR_MS 3600000LL
#define MAX_DAYS ANA_METRIC_MAX_BUCKETS /* one point per day */
#define MAX_METRICS 20
#define TABLE_TOP_N 1000

const char ana_report_templates_text[] = "campaign_performance or metric_summary";

/* ------------------------------------------------------------------ */
/* parameters                                                           */

static const Google__Protobuf__Value *field(const Google__Protobuf__Struct *s, const char *key) {
  for (size_t i = 0; s && i < s->n_fields; i++)
    if (s->fields[i]->key && strcmp(s->fields[i]->key, key) == 0)
      return s->fields[i]->value;
  return NULL;
}

static bool is_null(const Google__Protobuf__Value *v) {
  return !v || v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET ||
         v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
}

/* Only the keys listed (NULL-terminated) are allowed. */
static int only_keys(const Google__Protobuf__Struct *s, const char *path, const char *const *keys,
                     const char *list, struct ana_error *err) {
  for (size_t i = 0; s && i < s->n_fields; i++) {
    bool known = false;
    for (const char *const *k = keys; *k && !known; k++)
      known = strcmp(*k, s->fields[i]->key) == 0;
    if (!known)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s.%.64s: unknown parameter (%s)",
                           path, s->fields[i]->key, list);
  }
  return 0;
}

/* days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int parse_day(const Google__Protobuf__Value *v, const char *path, int64_t *day,
                     struct ana_error *err) {
  int y, m, d;
  char tail;
  if (is_null(v))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: is required (YYYY-MM-DD)", path);
  if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE ||
      sscanf(v->string_value, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 ||
      strlen(v->string_value) != 10 || m < 1 || m > 12 || d < 1 || d > 31 || y < 1970 || y > 9999)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: must be a date (YYYY-MM-DD)", path);
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (d > mdays[m - 1] || (m == 2 && d == 29 && !leap))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s is not a day of the calendar",
                         path, v->string_value);
  *day = days_from_civil(y, m, d);
  return 0;
}

static int get_string(const Google__Protobuf__Struct *s, const char *key, const char *def,
                      const char **out, struct ana_error *err) {
  const Google__Protobuf__Value *v = field(s, key);
  if (is_null(v)) {
    *out = def;
    return 0;
  }
  if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE || !v->string_value[0] ||
      strlen(v->string_value) > 256)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.%s: must be a non-empty string (at most 256 bytes)", key);
  *out = v->string_value;
  return 0;
}

/* The local midnight (UTC ms) that starts day in tz. */
static int local_midnight(int64_t day, const char *tz, int64_t *out, struct ana_error *err) {
  int64_t guess = day * DAY_MS, *starts = NULL;
  size_t n = 0;
  if (ana_buckets_make(guess - 2 * DAY_MS, guess + 2 * DAY_MS, ANA_INTERVAL_1D, tz, 16, &starts, &n,
                       err) < 0)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.timeZone: \"%.64s\" is not an IANA time zone", tz);
  int rc = ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "parameters.timeZone: no midnight");
  for (size_t i = 0; i < n; i++) {
    int64_t d = starts[i] - guess;
    if (d >= -15 * HOUR_MS && d <= 13 * HOUR_MS) {
      *out = starts[i];
      rc = 0;
      break;
    }
  }
  free(starts);
  return rc;
}

/* A date range: calendar days in tz, both inclusive, as [from, to); its
 * previous period is as many calendar days before, from previous_from_ms
 * (local midnight: across a DST change not the same number of hours). */
struct range {
  int64_t first_day, last_day;
  int64_t from_ms, to_ms, previous_from_ms;
  const char *tz;
};

static int parse_range(const Google__Protobuf__Struct *params, struct range *r,
                       struct ana_error *err) {
  if (get_string(params, "timeZone", "UTC", &r->tz, err) < 0)
    return ANA_ERR_INVALID;
  const Google__Protobuf__Value *v = field(params, "dateRange");
  if (is_null(v))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.dateRange: is required ({\"start\": \"YYYY-MM-DD\", "
                         "\"end\": \"YYYY-MM-DD\"})");
  if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.dateRange: must be an object with start and end");
  static const char *const keys[] = {"start", "end", NULL};
  if (only_keys(v->struct_value, "parameters.dateRange", keys, "start, end", err) < 0 ||
      parse_day(field(v->struct_value, "start"), "parameters.dateRange.start", &r->first_day, err) <
          0 ||
      parse_day(field(v->struct_value, "end"), "parameters.dateRange.end", &r->last_day, err) < 0)
    return ANA_ERR_INVALID;
  if (r->last_day < r->first_day)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.dateRange.end: must not be before start");
  if (r->last_day - r->first_day >= MAX_DAYS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "parameters.dateRange: at most %d days",
                         MAX_DAYS);
  int64_t days = r->last_day - r->first_day + 1, end;
  if (ana_report_date_range(r->first_day, r->last_day, r->tz, &r->from_ms, &r->to_ms, err) < 0 ||
      ana_report_date_range(r->first_day - days, r->first_day - 1, r->tz, &r->previous_from_ms,
                            &end, err) < 0)
    return ANA_ERR_INVALID;
  return 0;
}

int ana_report_date_range(int64_t first_day, int64_t last_day, const char *tz, int64_t *from_ms,
                          int64_t *to_ms, struct ana_error *err) {
  if (local_midnight(first_day, tz, from_ms, err) < 0 ||
      local_midnight(last_day + 1, tz, to_ms, err) < 0)
    return ANA_ERR_INVALID;
  return 0;
}

static void day_text(int64_t day, char *buf, size_t size) {
  ana_report_format_time(day * 86400, false, buf, size);
}

/* campaign_performance's parameters */
struct campaign {
  const Google__Protobuf__Value *campaign_id;
  char campaign_text[128];
  struct range range;
  const char *events[4]; /* sent, delivered, read, clicked */
};

static const char *const campaign_keys[] = {
    "campaignId",     "dateRange", "timeZone",     "sentEvent",
    "deliveredEvent", "readEvent", "clickedEvent", NULL};
static const char campaign_list[] = "campaignId, dateRange, timeZone, sentEvent, deliveredEvent, "
                                    "readEvent, clickedEvent";
static const char *const event_keys[] = {"sentEvent", "deliveredEvent", "readEvent",
                                         "clickedEvent"};
static const char *const event_defaults[] = {"message_sent", "message_delivered", "message_read",
                                             "message_clicked"};

static bool valid_event_name(const char *s) {
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || *s == '.' || *s == '-'))
      return false;
  return true;
}

static int parse_campaign(const Google__Protobuf__Struct *p, struct campaign *c,
                          struct ana_error *err) {
  memset(c, 0, sizeof *c);
  if (only_keys(p, "parameters", campaign_keys, campaign_list, err) < 0)
    return ANA_ERR_INVALID;
  c->campaign_id = field(p, "campaignId");
  if (is_null(c->campaign_id))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "parameters.campaignId: is required");
  if (c->campaign_id->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
      c->campaign_id->string_value[0] && strlen(c->campaign_id->string_value) <= 100)
    snprintf(c->campaign_text, sizeof c->campaign_text, "%s", c->campaign_id->string_value);
  else if (c->campaign_id->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE &&
           isfinite(c->campaign_id->number_value))
    snprintf(c->campaign_text, sizeof c->campaign_text, "%.15g", c->campaign_id->number_value);
  else
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.campaignId: must be a string (at most 100 bytes) or a number");
  for (int i = 0; i < 4; i++) {
    if (get_string(p, event_keys[i], event_defaults[i], &c->events[i], err) < 0)
      return ANA_ERR_INVALID;
    if (!valid_event_name(c->events[i]))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "parameters.%s: an event name has letters, digits, '_', '.', '-'",
                           event_keys[i]);
  }
  return parse_range(p, &c->range, err);
}

/* metric_summary's parameters */
struct summary {
  const char *metrics[MAX_METRICS];
  size_t n_metrics;
  struct range range;
  const char *interval;
  char *dimensions[8];
  size_t n_dimensions;
  int top_n;
};

static const char *const summary_keys[] = {"metrics",    "dateRange", "timeZone", "interval",
                                           "dimensions", "topN",      NULL};
static const char summary_list[] = "metrics, dateRange, timeZone, interval, dimensions, topN";

static int parse_summary(const Google__Protobuf__Struct *p, struct summary *s,
                         struct ana_error *err) {
  memset(s, 0, sizeof *s);
  if (only_keys(p, "parameters", summary_keys, summary_list, err) < 0)
    return ANA_ERR_INVALID;
  const Google__Protobuf__Value *v = field(p, "metrics");
  if (!is_null(v) && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
      v->string_value[0]) {
    s->metrics[s->n_metrics++] = v->string_value;
  } else if (!is_null(v) && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE) {
    const Google__Protobuf__ListValue *l = v->list_value;
    if (!l || l->n_values == 0 || l->n_values > MAX_METRICS)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "parameters.metrics: between 1 and %d metric ids or names", MAX_METRICS);
    for (size_t i = 0; i < l->n_values; i++) {
      if (l->values[i]->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE ||
          !l->values[i]->string_value[0])
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "parameters.metrics[%zu]: must be a metric id or name", i);
      s->metrics[s->n_metrics++] = l->values[i]->string_value;
    }
  } else {
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.metrics: is required (metric ids or names)");
  }
  if (get_string(p, "interval", "auto", &s->interval, err) < 0)
    return ANA_ERR_INVALID;
  v = field(p, "dimensions");
  if (!is_null(v)) {
    if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE || v->list_value->n_values > 8)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "parameters.dimensions: a list of at most 8 field names");
    for (size_t i = 0; i < v->list_value->n_values; i++) {
      const Google__Protobuf__Value *d = v->list_value->values[i];
      if (d->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE || !d->string_value[0])
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "parameters.dimensions[%zu]: must be a field name", i);
      s->dimensions[s->n_dimensions++] = d->string_value;
    }
  }
  s->top_n = ANA_METRIC_DEFAULT_TOP_N;
  v = field(p, "topN");
  if (!is_null(v)) {
    if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE || v->number_value < 1 ||
        v->number_value > 1000 || v->number_value != floor(v->number_value))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "parameters.topN: must be an integer between 1 and 1000");
    s->top_n = (int)v->number_value;
  }
  if (parse_range(p, &s->range, err) < 0)
    return ANA_ERR_INVALID;
  enum ana_interval iv;
  if (ana_interval_parse(s->interval, s->range.from_ms, s->range.to_ms, &iv, err) < 0)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "parameters.interval: must be 1m, 5m, 1h, 1d or auto (at most %d "
                         "buckets)",
                         ANA_METRIC_MAX_BUCKETS);
  return 0;
}

const char *ana_report_template_title(const char *name) {
  if (!name)
    return NULL;
  if (strcmp(name, "campaign_performance") == 0)
    return "Campaign performance";
  if (strcmp(name, "metric_summary") == 0)
    return "Metric summary";
  return NULL;
}

int ana_report_template_check(const char *name, const Google__Protobuf__Struct *params,
                              char *name_out, size_t name_size, struct ana_error *err) {
  const char *title = ana_report_template_title(name);
  if (!title)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "template: unknown template \"%.64s\" (%s)", name ? name : "",
                         ana_report_templates_text);
  struct range *r;
  struct campaign c;
  struct summary s;
  if (strcmp(name, "campaign_performance") == 0) {
    if (parse_campaign(params, &c, err) < 0)
      return ANA_ERR_INVALID;
    r = &c.range;
  } else {
    if (parse_summary(params, &s, err) < 0)
      return ANA_ERR_INVALID;
    r = &s.range;
  }
  if (name_out) {
    char a[20], b[20];
    day_text(r->first_day, a, sizeof a);
    day_text(r->last_day, b, sizeof b);
    snprintf(name_out, name_size, "%s, %s to %s", title, a, b);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* documents                                                            */

static double total_of(const Analytics__V1__MetricSeries *s) {
  return s && s->total ? s->total->value : NAN;
}

/* The first series of an answer, or NULL when none. */
static const Analytics__V1__MetricSeries *first(const Analytics__V1__MetricData *d) {
  return d->n_series ? d->series[0] : NULL;
}

static void tile(struct ana_report_kpi *k, const char *label, enum ana_report_value_type type,
                 const Analytics__V1__MetricSeries *s) {
  memset(k, 0, sizeof *k);
  k->label = label;
  k->type = type;
  double v = total_of(s);
  k->value = isfinite(v) ? v : 0;
  if (s && s->change && isfinite(s->change->value)) {
    k->has_change = true;
    k->change = s->change->value / 100.0;
  }
}

/* A table built in memory, rows handed out one at a time. */
struct mem_table {
  size_t n_rows, n_cols, next;
  struct ana_report_cell *cells; /* n_rows * n_cols */
};

static int mem_next(void *ctx, struct ana_report_cell *cells, struct ana_error *err) {
  (void)err;
  struct mem_table *t = ctx;
  if (t->next >= t->n_rows)
    return 0;
  memcpy(cells, t->cells + t->next * t->n_cols, t->n_cols * sizeof *cells);
  t->next++;
  return 1;
}

struct doc_builder {
  struct ana_arena *arena;
  struct ana_report_section *sections;
  size_t n, cap;
  const struct ana_report_template_env *env;
  const char *account;
  int64_t from_ms, to_ms; /* the report's range: where revealed values are looked up */
  int reveals;            /* lookups so far (REVEAL_MAX) */
};

/* Blind indexes looked up for their clear value per report; the rest are
 * shown as aggregated. */
#define REVEAL_MAX 256

/* A dimension's value as the report shows it: with the report creator's
 * roles (encrypted values masked or in clear, env->reveal). */
static const char *shown(struct doc_builder *b, const char *dim, const char *v) {
  if (!v || !b->env || !b->env->reveal || b->reveals >= REVEAL_MAX)
    return v;
  b->reveals += strncmp(v, "ana:bi:", 7) == 0;
  return b->env->reveal(b->account, b->env->roles, b->env->n_roles, dim, v, b->from_ms, b->to_ms,
                        b->arena);
}

static struct ana_report_section *
add_section(struct doc_builder *b, enum ana_report_section_kind kind, const char *title) {
  if (b->n == b->cap)
    return NULL;
  struct ana_report_section *s = &b->sections[b->n++];
  memset(s, 0, sizeof *s);
  s->kind = kind;
  s->title = title;
  return s;
}

static int nomem(struct ana_error *err) {
  return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

static Analytics__V1__MetricFilter **campaign_filter(struct ana_arena *a,
                                                     const struct campaign *c) {
  Analytics__V1__MetricFilter **fs = ana_arena_calloc(a, 1, sizeof *fs);
  Analytics__V1__MetricFilter *f = ana_arena_alloc(a, sizeof *f);
  if (!fs || !f)
    return NULL;
  analytics__v1__metric_filter__init(f);
  f->field = "properties.campaignId";
  f->op = "eq";
  f->value = (Google__Protobuf__Value *)c->campaign_id;
  fs[0] = f;
  return fs;
}

/* The value of a grouped answer's series for a dimension value. */
static double group_value(const Analytics__V1__MetricData *d, const char *key, const char *value) {
  for (size_t i = 0; i < d->n_series; i++) {
    const Analytics__V1__MetricSeries *s = d->series[i];
    for (size_t k = 0; k < s->n_dimensions; k++)
      if (strcmp(s->dimensions[k]->key, key) == 0 && strcmp(s->dimensions[k]->value, value) == 0)
        return total_of(s);
  }
  return NAN;
}

static const char *series_dim(const Analytics__V1__MetricSeries *s, const char *key) {
  for (size_t k = 0; k < s->n_dimensions; k++)
    if (strcmp(s->dimensions[k]->key, key) == 0)
      return s->dimensions[k]->value;
  return "";
}

/* A table of the four counts (data[0..3], grouped by dim) and the delivery
 * rate. */
static int campaign_table(const Analytics__V1__MetricData *data, const char *dim,
                          const char *dim_label, const char *title, struct doc_builder *b,
                          struct ana_error *err) {
  struct ana_arena *a = b->arena;
  /* Rows: the groups of the sent events, then those only other events have. */
  size_t cap = 0;
  for (int i = 0; i < 4; i++)
    cap += data[i].n_series;
  struct ana_report_column *cols = ana_arena_calloc(a, 6, sizeof *cols);
  struct mem_table *t = ana_arena_calloc(a, 1, sizeof *t);
  const char **keys = ana_arena_calloc(a, cap + 1, sizeof *keys);
  if (!cols || !t || !keys)
    return nomem(err);
  size_t n = 0;
  for (int i = 0; i < 4; i++)
    for (size_t k = 0; k < data[i].n_series; k++) {
      const char *v = series_dim(data[i].series[k], dim);
      bool seen = false;
      for (size_t j = 0; j < n && !seen; j++)
        seen = strcmp(keys[j], v) == 0;
      if (!seen)
        keys[n++] = v;
    }
  cols[0] = (struct ana_report_column){dim_label, ANA_REPORT_TEXT};
  cols[1] = (struct ana_report_column){"Sent", ANA_REPORT_INTEGER};
  cols[2] = (struct ana_report_column){"Delivered", ANA_REPORT_INTEGER};
  cols[3] = (struct ana_report_column){"Read", ANA_REPORT_INTEGER};
  cols[4] = (struct ana_report_column){"Clicks", ANA_REPORT_INTEGER};
  cols[5] = (struct ana_report_column){"Delivery rate", ANA_REPORT_PERCENT};
  t->n_cols = 6;
  t->n_rows = n;
  t->cells = ana_arena_calloc(a, n * 6 + 1, sizeof *t->cells);
  if (!t->cells)
    return nomem(err);
  for (size_t j = 0; j < n; j++) {
    struct ana_report_cell *row = t->cells + j * 6;
    row[0].text = keys[j][0] ? shown(b, dim, keys[j]) : "(none)";
    double v[4];
    for (int i = 0; i < 4; i++) {
      v[i] = group_value(&data[i], dim, keys[j]);
      row[1 + i].null = !isfinite(v[i]);
      row[1 + i].i = isfinite(v[i]) ? (int64_t)llround(v[i]) : 0;
    }
    row[5].null = !(isfinite(v[0]) && v[0] > 0 && isfinite(v[1]));
    row[5].d = row[5].null ? 0 : v[1] / v[0];
  }
  struct ana_report_section *s = add_section(b, ANA_REPORT_SECTION_TABLE, title);
  if (!s)
    return nomem(err);
  if (n == 0) {
    s->kind = ANA_REPORT_SECTION_EMPTY;
    return 0;
  }
  s->u.table = (struct ana_report_table){cols, 6, mem_next, t};
  return 0;
}

static int build_campaign(const struct ana_report_template_env *env, const char *account,
                          const struct campaign *c, struct doc_builder *b, struct ana_error *err) {
  struct ana_arena *a = b->arena;
  Analytics__V1__MetricFilter **filters = campaign_filter(a, c);
  if (!filters)
    return nomem(err);
  /* An encrypted campaignId is matched through its blind index. */
  if (env->blind_filters && env->blind_filters(account, filters, 1, a, err) < 0)
    return ANA_ERR_INVALID;
  /* Every number in one pass over the events: the four counts day by day
   * (0-3), the three rates (4-6), the counts by groupId (7-10) and by
   * messageType (11-14). */
  enum { N_QUERIES = 15 };
  static char *group_dim[] = {"groupId"}, *type_dim[] = {"messageType"};
  struct ana_metric_adhoc qs[N_QUERIES];
  Analytics__V1__MetricData *all = ana_arena_calloc(a, N_QUERIES, sizeof *all);
  if (!all)
    return nomem(err);
  static const int num[] = {1, 2, 3};
  for (int i = 0; i < N_QUERIES; i++) {
    char *formula = ana_arena_alloc(a, 300);
    if (!formula)
      return nomem(err);
    if (i >= 4 && i < 7)
      snprintf(formula, 300, "count(%s) / count(%s)", c->events[num[i - 4]], c->events[0]);
    else
      snprintf(formula, 300, "count(%s)", c->events[i < 4 ? i : (i - 7) % 4]);
    qs[i] = (struct ana_metric_adhoc){formula, filters, 1, NULL, 0, "sum"};
    if (i >= 7) {
      qs[i].dimensions = i < 11 ? group_dim : type_dim;
      qs[i].n_dimensions = 1;
    }
  }
  struct ana_metric_query q = {.account_id = account,
                               .from_ms = c->range.from_ms,
                               .to_ms = c->range.to_ms,
                               .interval = ANA_INTERVAL_1D,
                               .time_zone = c->range.tz,
                               .top_n = TABLE_TOP_N,
                               .previous_from_ms = c->range.previous_from_ms};
  /* From the rollups of stored metrics counting the same where they can:
   * the same numbers without a scan of the events. */
  int rc = env->adhoc_counts ? env->adhoc_counts(account, qs, N_QUERIES, &q, a, all, err) : 0;
  if (rc > 0)
    ANA_DEBUG("reports", "campaign report: counts from the rollups of metrics counting them");
  if (rc < 0 || (rc == 0 && ana_metric_query_adhoc_batch(env->store_ops, env->store, qs, N_QUERIES,
                                                         &q, a, all, err) < 0))
    return ANA_ERR_INVALID;
  /* Scanned: the next report may read rollups instead (their backfill
   * starts now, not during this scan). */
  struct ana_error kerr;
  if (rc == 0 && env->keep_counts && env->keep_counts(account, qs, N_QUERIES, a, &kerr) < 0)
    ANA_WARN("reports", "campaign report: keeping its counts as rollups: %s", kerr.message);
  const Analytics__V1__MetricData *counts = all, *rates = all + 4;
  struct ana_report_kpi *tiles = ana_arena_calloc(a, 7, sizeof *tiles);
  if (!tiles)
    return nomem(err);
  static const char *const count_labels[] = {"Sent", "Delivered", "Read", "Clicks"};
  static const char *const rate_labels[] = {"Delivery rate", "Read rate", "Click rate"};
  for (int i = 0; i < 4; i++)
    tile(&tiles[i], count_labels[i], ANA_REPORT_INTEGER, first(&counts[i]));
  for (int i = 0; i < 3; i++)
    tile(&tiles[4 + i], rate_labels[i], ANA_REPORT_PERCENT, first(&rates[i]));
  char *text = ana_arena_alloc(a, 300);
  if (!text)
    return nomem(err);
  snprintf(text, 300,
           "Campaign %s. Rates are shares of the messages sent; changes compare with "
           "the previous period of the same length.",
           c->campaign_text);
  const char **paras = ana_arena_calloc(a, 1, sizeof *paras);
  struct ana_report_section *s = add_section(b, ANA_REPORT_SECTION_TEXT, NULL);
  if (!paras || !s)
    return nomem(err);
  paras[0] = text;
  s->u.text = (struct ana_report_text){paras, 1};
  s = add_section(b, ANA_REPORT_SECTION_KPIS, "Key figures");
  if (!s)
    return nomem(err);
  s->u.kpis = (struct ana_report_kpis){tiles, 7};
  /* The daily chart: one point per local day of the range. */
  size_t days = (size_t)(c->range.last_day - c->range.first_day + 1);
  ana_report_local_time *x = ana_arena_calloc(a, days, sizeof *x);
  struct ana_report_series *series = ana_arena_calloc(a, 4, sizeof *series);
  if (!x || !series)
    return nomem(err);
  for (size_t d = 0; d < days; d++)
    x[d] = (c->range.first_day + (int64_t)d) * 86400;
  bool any = false;
  for (int i = 0; i < 4; i++) {
    double *v = ana_arena_calloc(a, days, sizeof *v);
    if (!v)
      return nomem(err);
    const Analytics__V1__MetricSeries *ser = first(&counts[i]);
    for (size_t d = 0; d < days; d++) {
      v[d] = 0;
      if (ser && d < ser->n_buckets && ser->buckets[d]->value)
        v[d] = ser->buckets[d]->value->value;
      any |= v[d] != 0;
    }
    series[i] = (struct ana_report_series){count_labels[i], v};
  }
  s = add_section(b, any ? ANA_REPORT_SECTION_CHART : ANA_REPORT_SECTION_EMPTY, "Daily activity");
  if (!s)
    return nomem(err);
  if (any)
    s->u.chart =
        (struct ana_report_chart){ANA_REPORT_CHART_LINE, x, days, true, series, 4, "Events"};
  if (campaign_table(all + 7, "groupId", "Group", "By group", b, err) < 0 ||
      campaign_table(all + 11, "messageType", "Message type", "By message type", b, err) < 0)
    return ANA_ERR_INVALID;
  return 0;
}

/* A stored metric's query: from its rollups where they match. */
static int summary_query(const struct ana_report_template_env *env,
                         const struct ana_metric_query *q, struct ana_arena *a,
                         Analytics__V1__MetricData *out, struct ana_error *err) {
  if (env->metric_query)
    return env->metric_query(q, a, out, err);
  return ana_metric_query_raw(env->store_ops, env->store, q, a, out, err);
}

static int build_summary(const struct ana_report_template_env *env, const char *account,
                         const struct summary *sm, struct doc_builder *b, struct ana_error *err) {
  struct ana_arena *a = b->arena;
  enum ana_interval iv;
  if (ana_interval_parse(sm->interval, sm->range.from_ms, sm->range.to_ms, &iv, err) < 0)
    return ANA_ERR_INVALID;
  struct ana_report_kpi *tiles = ana_arena_calloc(a, sm->n_metrics, sizeof *tiles);
  if (!tiles)
    return nomem(err);
  struct ana_report_section *kpis = add_section(b, ANA_REPORT_SECTION_KPIS, "Totals");
  if (!kpis)
    return nomem(err);
  kpis->u.kpis = (struct ana_report_kpis){tiles, sm->n_metrics};
  for (size_t i = 0; i < sm->n_metrics; i++) {
    Analytics__V1__Metric *m;
    struct ana_formula *f = NULL;
    if (!env->resolve_metric)
      return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "metrics are not available");
    if (env->resolve_metric(account, sm->metrics[i], a, &m, &f, err) < 0) {
      char msg[sizeof err->message];
      snprintf(msg, sizeof msg, "%s", err->message);
      return ana_error_set(err, err->code, "parameters.metrics[%zu]: %s", i, msg);
    }
    if (sm->n_dimensions) {
      m->dimensions = (char **)sm->dimensions;
      m->n_dimensions = sm->n_dimensions;
    }
    char **dims = m->dimensions;
    size_t n_dims = m->n_dimensions;
    struct ana_metric_query q = {.metric = m,
                                 .formula = f,
                                 .account_id = account,
                                 .from_ms = sm->range.from_ms,
                                 .to_ms = sm->range.to_ms,
                                 .interval = iv,
                                 .time_zone = sm->range.tz,
                                 .top_n = sm->top_n,
                                 .previous_from_ms = sm->range.previous_from_ms};
    Analytics__V1__MetricData d = ANALYTICS__V1__METRIC_DATA__INIT;
    int rc = summary_query(env, &q, a, &d, err);
    if (rc < 0) {
      ana_formula_free(f);
      return rc;
    }
    const char *name = m->name && m->name[0] ? m->name : sm->metrics[i];
    /* The tile: the whole range's value over every group (the same query
     * without its dimensions when it has some). */
    Analytics__V1__MetricData whole = d;
    if (n_dims) {
      m->n_dimensions = 0;
      analytics__v1__metric_data__init(&whole);
      rc = summary_query(env, &q, a, &whole, err);
      m->n_dimensions = n_dims;
      if (rc < 0) {
        ana_formula_free(f);
        return rc;
      }
    }
    ana_formula_free(f);
    tile(&tiles[i], name, ANA_REPORT_NUMBER, first(&whole));
    tiles[i].unit = m->unit && m->unit[0] ? m->unit : NULL;
    if (d.n_series == 0)
      continue;
    /* Chart: the first series' buckets, to the top N groups. */
    const Analytics__V1__MetricSeries *s0 = d.series[0];
    size_t np = s0->n_buckets, ns = d.n_series < 8 ? d.n_series : 8;
    ana_report_local_time *x = ana_arena_calloc(a, np + 1, sizeof *x);
    struct ana_report_series *series = ana_arena_calloc(a, ns, sizeof *series);
    if (!x || !series)
      return nomem(err);
    for (size_t k = 0; k < np; k++) {
      int64_t ms = ana_timestamp_ms(s0->buckets[k]->start);
      /* local wall clock: the bucket's offset from the range's local start */
      x[k] = sm->range.first_day * 86400 + (ms - sm->range.from_ms) / 1000;
    }
    for (size_t j = 0; j < ns; j++) {
      double *v = ana_arena_calloc(a, np + 1, sizeof *v);
      char *label = ana_arena_alloc(a, 200);
      if (!v || !label)
        return nomem(err);
      const Analytics__V1__MetricSeries *s = d.series[j];
      int off = snprintf(label, 200, "%s", name);
      for (size_t k = 0; k < s->n_dimensions && off < 190; k++)
        off += snprintf(label + off, 200 - (size_t)off, "%s%s=%s", k ? ", " : " (",
                        s->dimensions[k]->key,
                        shown(b, s->dimensions[k]->key, s->dimensions[k]->value));
      if (s->n_dimensions && off < 199)
        snprintf(label + off, 200 - (size_t)off, ")");
      for (size_t k = 0; k < np; k++)
        v[k] = k < s->n_buckets && s->buckets[k]->value ? s->buckets[k]->value->value : NAN;
      series[j] = (struct ana_report_series){label, v};
    }
    struct ana_report_section *cs = add_section(b, ANA_REPORT_SECTION_CHART, name);
    if (!cs)
      return nomem(err);
    cs->u.chart = (struct ana_report_chart){ANA_REPORT_CHART_LINE,
                                            x,
                                            np,
                                            iv == ANA_INTERVAL_1D,
                                            series,
                                            ns,
                                            m->unit && m->unit[0] ? m->unit : NULL};
    /* Table: one row per group with its total and change. */
    size_t nc = n_dims + 3;
    struct ana_report_column *cols = ana_arena_calloc(a, nc, sizeof *cols);
    struct mem_table *t = ana_arena_calloc(a, 1, sizeof *t);
    if (!cols || !t || !(t->cells = ana_arena_calloc(a, d.n_series * nc + 1, sizeof *t->cells)))
      return nomem(err);
    for (size_t k = 0; k < n_dims; k++)
      cols[k] = (struct ana_report_column){dims[k], ANA_REPORT_TEXT};
    cols[nc - 3] = (struct ana_report_column){"Metric", ANA_REPORT_TEXT};
    cols[nc - 2] = (struct ana_report_column){"Total", ANA_REPORT_NUMBER};
    cols[nc - 1] = (struct ana_report_column){"Change", ANA_REPORT_PERCENT};
    t->n_cols = nc;
    t->n_rows = d.n_series;
    for (size_t j = 0; j < d.n_series; j++) {
      struct ana_report_cell *row = t->cells + j * nc;
      for (size_t k = 0; k < n_dims; k++)
        row[k].text = shown(b, dims[k], series_dim(d.series[j], dims[k]));
      row[nc - 3].text = name;
      double v = total_of(d.series[j]);
      row[nc - 2].null = !isfinite(v);
      row[nc - 2].d = isfinite(v) ? v : 0;
      row[nc - 1].null = !d.series[j]->change;
      row[nc - 1].d = d.series[j]->change ? d.series[j]->change->value / 100.0 : 0;
    }
    struct ana_report_section *ts = add_section(b, ANA_REPORT_SECTION_TABLE, name);
    if (!ts)
      return nomem(err);
    ts->u.table = (struct ana_report_table){cols, nc, mem_next, t};
  }
  return 0;
}

int ana_report_template_build(const struct ana_report_template_env *env, const char *name,
                              const char *account_id, const char *title,
                              const Google__Protobuf__Struct *params, struct ana_arena *arena,
                              struct ana_report_document *doc, struct ana_error *err) {
  struct doc_builder b = {arena, NULL, 0, 8 + 3 * MAX_METRICS, env, account_id, 0, 0, 0};
  b.sections = ana_arena_calloc(arena, b.cap, sizeof *b.sections);
  if (!b.sections)
    return nomem(err);
  memset(doc, 0, sizeof *doc);
  struct range *r;
  struct campaign c;
  struct summary s;
  int rc;
  char *subtitle = ana_arena_alloc(arena, 200);
  if (!subtitle)
    return nomem(err);
  if (name && strcmp(name, "campaign_performance") == 0) {
    if (parse_campaign(params, &c, err) < 0)
      return ANA_ERR_INVALID;
    r = &c.range;
    b.from_ms = r->from_ms;
    b.to_ms = r->to_ms;
    snprintf(subtitle, 200, "Campaign %s", c.campaign_text);
    rc = build_campaign(env, account_id, &c, &b, err);
  } else if (name && strcmp(name, "metric_summary") == 0) {
    if (parse_summary(params, &s, err) < 0)
      return ANA_ERR_INVALID;
    r = &s.range;
    b.from_ms = r->from_ms;
    b.to_ms = r->to_ms;
    snprintf(subtitle, 200, "%zu metric%s", s.n_metrics, s.n_metrics == 1 ? "" : "s");
    rc = build_summary(env, account_id, &s, &b, err);
  } else {
    return ana_report_template_check(name, params, NULL, 0, err);
  }
  if (rc < 0)
    return rc;
  doc->meta.title = title;
  doc->meta.subtitle = subtitle;
  doc->meta.account_id = account_id;
  doc->meta.time_zone = r->tz;
  doc->meta.generated_at = (int64_t)time(NULL);
  doc->meta.has_range = true;
  doc->meta.range_start = r->first_day * 86400;
  doc->meta.range_end = r->last_day * 86400;
  doc->sections = b.sections;
  doc->n_sections = b.n;
  return 0;
}
