/* The fixed report document shared by the writer tests and benchmarks. */
#include "report_sample_doc.h"

#include <stdio.h>
#include <string.h>

const struct ana_report_column report_sample_columns[5] = {
    {"Group", ANA_REPORT_TEXT},   {"Sent", ANA_REPORT_INTEGER}, {"Delivered", ANA_REPORT_INTEGER},
    {"Rate", ANA_REPORT_PERCENT}, {"Day", ANA_REPORT_DATE},
};

static const char *const fixed_groups[] = {
    "Группа А", "=HYPERLINK(\"http://evil\")", "a,b \"q\"", "-2+3", "plain",
};

int report_sample_next_row(void *ctx, struct ana_report_cell *c, struct ana_error *err) {
  (void)err;
  struct report_sample_rows *r = ctx;
  if (r->next >= r->n)
    return 0;
  size_t i = r->next++;
  if (i < sizeof fixed_groups / sizeof fixed_groups[0])
    c[0].text = fixed_groups[i];
  else {
    snprintf(r->text, sizeof r->text, "group-%zu", i);
    c[0].text = r->text;
  }
  c[1].i = (int64_t)(1000 + i);
  c[2].i = (int64_t)(900 + i);
  c[3].d = (double)(900 + i) / (double)(1000 + i);
  c[4].t = SAMPLE_DAY0 + (int64_t)(i % SAMPLE_DAYS) * 86400;
  if (i == 2)
    c[2].null = true;
  return 1;
}

static void meta(struct report_sample *s) {
  s->doc.meta = (struct ana_report_meta){
      .title = "Campaign performance: " SAMPLE_CYRILLIC,
      .subtitle = "Campaign spring-42",
      .account_id = "acme",
      .time_zone = "Europe/Berlin",
      .generated_at = 1772438400, /* 2026-03-02 08:00 UTC */
      .has_range = true,
      .range_start = SAMPLE_DAY0,
      .range_end = SAMPLE_DAY0 + 27 * 86400,
  };
}

static const char *const paragraphs[] = {
    "Отчёт по кампании: доставка и прочтения сообщений за февраль.",
    "Every number in this report comes from the metrics engine. This paragraph is long enough "
    "to wrap onto a second line of the page, which checks the word wrapping of the writer.",
};

void report_sample_init(struct report_sample *s, size_t n_rows) {
  memset(s, 0, sizeof *s);
  meta(s);
  s->tiles[0] = (struct ana_report_kpi){"Sent", ANA_REPORT_INTEGER, 12345, NULL, true, 0.125};
  s->tiles[1] = (struct ana_report_kpi){"Доставлено", ANA_REPORT_INTEGER, 12000, NULL, true, -0.03};
  s->tiles[2] = (struct ana_report_kpi){"Delivery rate", ANA_REPORT_PERCENT, 0.972, NULL, true, 0};
  s->tiles[3] = (struct ana_report_kpi){"Latency p95", ANA_REPORT_NUMBER, 41.5, "ms", false, 0};
  for (int i = 0; i < SAMPLE_DAYS; i++) {
    s->x[i] = SAMPLE_DAY0 + (int64_t)i * 86400;
    s->sent[i] = 400 + (i * 37) % 120;
    s->delivered[i] = s->sent[i] - 10 - (i * 13) % 30;
  }
  s->series[0] = (struct ana_report_series){"Sent", s->sent};
  s->series[1] = (struct ana_report_series){"Доставлено", s->delivered};
  s->rows.n = n_rows;
  s->sections[0] = (struct ana_report_section){
      .kind = ANA_REPORT_SECTION_TEXT, .title = "Обзор", .u.text = {paragraphs, 2}};
  s->sections[1] = (struct ana_report_section){
      .kind = ANA_REPORT_SECTION_KPIS, .title = "Summary", .u.kpis = {s->tiles, 4}};
  s->sections[2] = (struct ana_report_section){.kind = ANA_REPORT_SECTION_CHART,
                                               .title = "Daily messages",
                                               .u.chart = {.style = ANA_REPORT_CHART_LINE,
                                                           .x = s->x,
                                                           .n_points = SAMPLE_DAYS,
                                                           .x_is_days = true,
                                                           .series = s->series,
                                                           .n_series = 2,
                                                           .y_label = "messages"}};
  s->sections[3] = (struct ana_report_section){
      .kind = ANA_REPORT_SECTION_TABLE,
      .title = "By group",
      .u.table = {report_sample_columns, 5, report_sample_next_row, &s->rows}};
  s->doc.sections = s->sections;
  s->doc.n_sections = 4;
}

void report_sample_init_empty(struct report_sample *s) {
  memset(s, 0, sizeof *s);
  meta(s);
  s->sections[0] =
      (struct ana_report_section){.kind = ANA_REPORT_SECTION_EMPTY, .title = "Summary"};
  s->doc.sections = s->sections;
  s->doc.n_sections = 1;
}
