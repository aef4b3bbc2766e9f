/* Checks on the report document model and the value formatting every writer shares. */
#include "ana_report_model.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *kind_name(enum ana_report_section_kind k) {
  switch (k) {
  case ANA_REPORT_SECTION_TEXT: return "text";
  case ANA_REPORT_SECTION_KPIS: return "kpis";
  case ANA_REPORT_SECTION_CHART: return "chart";
  case ANA_REPORT_SECTION_TABLE: return "table";
  case ANA_REPORT_SECTION_EMPTY: return "empty";
  }
  return "?";
}

static bool valid_type(enum ana_report_value_type t) {
  return t >= ANA_REPORT_TEXT && t <= ANA_REPORT_DATETIME;
}

int ana_report_section_check(const struct ana_report_section *s, size_t index,
                             struct ana_error *err) {
  const char *k = kind_name(s->kind);
  switch (s->kind) {
  case ANA_REPORT_SECTION_TEXT:
    if (s->u.text.n_paragraphs && !s->u.text.paragraphs)
      goto bad_ptr;
    for (size_t i = 0; i < s->u.text.n_paragraphs; i++)
      if (!s->u.text.paragraphs[i])
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "sections[%zu].paragraphs[%zu]: missing", index, i);
    return 0;
  case ANA_REPORT_SECTION_KPIS:
    if (s->u.kpis.n_tiles && !s->u.kpis.tiles)
      goto bad_ptr;
    for (size_t i = 0; i < s->u.kpis.n_tiles; i++) {
      const struct ana_report_kpi *t = &s->u.kpis.tiles[i];
      if (!t->label)
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "sections[%zu].tiles[%zu].label: missing", index, i);
      if (t->type != ANA_REPORT_INTEGER && t->type != ANA_REPORT_NUMBER &&
          t->type != ANA_REPORT_PERCENT)
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "sections[%zu].tiles[%zu].type: integer, number or percent", index, i);
    }
    return 0;
  case ANA_REPORT_SECTION_CHART: {
    const struct ana_report_chart *c = &s->u.chart;
    if ((c->n_points && !c->x) || (c->n_series && !c->series))
      goto bad_ptr;
    if (c->style != ANA_REPORT_CHART_LINE && c->style != ANA_REPORT_CHART_BAR)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "sections[%zu].style: line or bar",
                           index);
    for (size_t i = 1; i < c->n_points; i++)
      if (c->x[i] <= c->x[i - 1])
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "sections[%zu].x[%zu]: not after the point before it", index, i);
    for (size_t i = 0; i < c->n_series; i++)
      if (!c->series[i].name || (c->n_points && !c->series[i].values))
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "sections[%zu].series[%zu]: name and values required", index, i);
    return 0;
  }
  case ANA_REPORT_SECTION_TABLE: {
    const struct ana_report_table *t = &s->u.table;
    if (t->n_columns == 0 || !t->columns || !t->next_row)
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "sections[%zu]: a table needs columns and a row source", index);
    for (size_t i = 0; i < t->n_columns; i++)
      if (!t->columns[i].name || !valid_type(t->columns[i].type))
        return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                             "sections[%zu].columns[%zu]: name and type required", index, i);
    return 0;
  }
  case ANA_REPORT_SECTION_EMPTY: return 0;
  }
  return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "sections[%zu].kind: unknown", index);
bad_ptr:
  return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "sections[%zu] (%s): count without data",
                       index, k);
}

void ana_report_format_time(ana_report_local_time t, bool with_time, char *buf, size_t size) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (!gmtime_r(&tt, &tm)) {
    snprintf(buf, size, "%" PRId64, t);
    return;
  }
  strftime(buf, size, with_time ? "%Y-%m-%d %H:%M" : "%Y-%m-%d", &tm);
}

/* "-1,234,567" */
static void group_int(int64_t v, char *buf, size_t size) {
  char digits[32];
  uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
  int n = snprintf(digits, sizeof digits, "%" PRIu64, u);
  char out[48];
  size_t o = 0;
  if (v < 0)
    out[o++] = '-';
  for (int i = 0; i < n; i++) {
    if (i > 0 && (n - i) % 3 == 0)
      out[o++] = ',';
    out[o++] = digits[i];
  }
  out[o] = 0;
  snprintf(buf, size, "%s", out);
}

static void group_double(double d, int decimals, char *buf, size_t size) {
  if (!isfinite(d)) {
    snprintf(buf, size, "%s", isnan(d) ? "" : d > 0 ? "inf" : "-inf");
    return;
  }
  if (fabs(d) >= 9e15) {
    snprintf(buf, size, "%.*e", decimals, d);
    return;
  }
  double scale = decimals == 2 ? 100.0 : decimals == 1 ? 10.0 : 1.0;
  double r = round(fabs(d) * scale);
  int64_t whole = (int64_t)(r / scale);
  int64_t frac = (int64_t)(r - (double)whole * scale);
  char w[48];
  group_int(whole, w, sizeof w);
  bool neg = d < 0 && r != 0;
  if (decimals > 0)
    snprintf(buf, size, "%s%s.%0*" PRId64, neg ? "-" : "", w, decimals, frac);
  else
    snprintf(buf, size, "%s%s", neg ? "-" : "", w);
}

void ana_report_format_value(enum ana_report_value_type type, const struct ana_report_cell *c,
                             char *buf, size_t size) {
  if (size == 0)
    return;
  buf[0] = 0;
  if (c->null)
    return;
  switch (type) {
  case ANA_REPORT_TEXT: snprintf(buf, size, "%s", c->text ? c->text : ""); break;
  case ANA_REPORT_INTEGER: group_int(c->i, buf, size); break;
  case ANA_REPORT_NUMBER: group_double(c->d, 2, buf, size); break;
  case ANA_REPORT_PERCENT: {
    char t[64];
    group_double(c->d * 100.0, 1, t, sizeof t);
    snprintf(buf, size, "%s%%", t);
    break;
  }
  case ANA_REPORT_DATE: ana_report_format_time(c->t, false, buf, size); break;
  case ANA_REPORT_DATETIME: ana_report_format_time(c->t, true, buf, size); break;
  }
}

void ana_report_format_change(double change, char *buf, size_t size) {
  char t[64];
  double pct = change * 100.0;
  group_double(pct, 1, t, sizeof t);
  snprintf(buf, size, "%s%s%%", round(pct * 10.0) > 0 ? "+" : "", t);
}

void ana_report_format_range(const struct ana_report_meta *m, char *buf, size_t size) {
  if (size == 0)
    return;
  buf[0] = 0;
  if (!m->has_range)
    return;
  char a[32], b[32];
  ana_report_format_time(m->range_start, false, a, sizeof a);
  ana_report_format_time(m->range_end, false, b, sizeof b);
  if (m->time_zone && *m->time_zone)
    snprintf(buf, size, "%s \xE2\x80\x93 %s (%s)", a, b, m->time_zone);
  else
    snprintf(buf, size, "%s \xE2\x80\x93 %s", a, b);
}
