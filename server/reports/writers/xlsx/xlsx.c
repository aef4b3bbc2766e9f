/* The Excel writer (libxlsxwriter, constant_memory): a cover sheet with the
 * metadata, then one sheet per section; tables continue on further sheets past
 * Excel's row limit; charts are native Excel charts over data on their sheet. */
#include "ana_alloc.h"
#include "ana_report_writer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <xlsxwriter.h>

#define EXCEL_MAX_STRING 32767
#define SHEET_NAME_MAX 31

struct ana_report_writer {
  lxw_workbook *wb;
  char *path, *title, *subject, *creator;
  size_t max_rows;
  lxw_format *bold, *title_fmt, *integer, *number, *percent, *change, *date, *datetime;
};

static int lxw_fail(struct ana_report_writer *w, lxw_error e, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_INTERNAL, "writing %s: %s", w->path, lxw_strerror(e));
  return ANA_ERR_IO;
}

/* Copies at most max bytes of s ending on a UTF-8 character boundary. */
static void utf8_cut(char *dst, size_t dst_size, const char *s, size_t max) {
  size_t n = strlen(s);
  if (n > max) {
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
      n--;
  }
  if (n >= dst_size)
    n = dst_size - 1;
  memcpy(dst, s, n);
  dst[n] = 0;
}

static lxw_error put_string(lxw_worksheet *ws, lxw_row_t r, lxw_col_t c, const char *s,
                            lxw_format *f) {
  if (strlen(s) <= EXCEL_MAX_STRING) /* bytes >= characters */
    return worksheet_write_string(ws, r, c, s, f);
  char *cut = ana_malloc(EXCEL_MAX_STRING + 1);
  if (!cut)
    return LXW_ERROR_MEMORY_MALLOC_FAILED;
  utf8_cut(cut, EXCEL_MAX_STRING + 1, s, EXCEL_MAX_STRING);
  lxw_error e = worksheet_write_string(ws, r, c, cut, f);
  ana_free(cut);
  return e;
}

static double excel_date(ana_report_local_time t) {
  return (double)t / 86400.0 + 25569.0; /* days since 1899-12-30 */
}

/* A new sheet named after base: characters Excel forbids become spaces, the
 * name is cut to fit and made unique with " (2)", " (3)", ... */
static lxw_worksheet *add_sheet(struct ana_report_writer *w, const char *base, unsigned part) {
  char clean[SHEET_NAME_MAX * 4 + 1], name[SHEET_NAME_MAX * 4 + 16];
  utf8_cut(clean, sizeof clean, base && *base ? base : "Sheet", SHEET_NAME_MAX * 4);
  for (char *p = clean; *p; p++)
    if (strchr("[]:*?/\\", *p) || (unsigned char)*p < 0x20)
      *p = ' ';
  while (clean[0] == '\'')
    memmove(clean, clean + 1, strlen(clean));
  for (unsigned n = part; n < 10000; n++) {
    char suffix[16] = "";
    if (n > 1)
      snprintf(suffix, sizeof suffix, " (%u)", n);
    /* cut by characters: 31 less the suffix */
    size_t keep = SHEET_NAME_MAX - strlen(suffix), bytes = 0, chars = 0;
    while (clean[bytes] && chars < keep) {
      bytes++;
      while (((unsigned char)clean[bytes] & 0xC0) == 0x80)
        bytes++;
      chars++;
    }
    while (bytes > 0 && (clean[bytes - 1] == ' ' || clean[bytes - 1] == '\''))
      bytes--;
    snprintf(name, sizeof name, "%.*s%s", (int)bytes, clean, suffix);
    if (bytes == 0)
      snprintf(name, sizeof name, "Sheet%s", suffix);
    if (workbook_validate_sheet_name(w->wb, name) == LXW_NO_ERROR)
      return workbook_add_worksheet(w->wb, name);
  }
  return NULL;
}

static lxw_format *format_of(struct ana_report_writer *w, enum ana_report_value_type t) {
  switch (t) {
  case ANA_REPORT_INTEGER: return w->integer;
  case ANA_REPORT_NUMBER: return w->number;
  case ANA_REPORT_PERCENT: return w->percent;
  case ANA_REPORT_DATE: return w->date;
  case ANA_REPORT_DATETIME: return w->datetime;
  case ANA_REPORT_TEXT: return NULL;
  }
  return NULL;
}

static double width_of(enum ana_report_value_type t) {
  switch (t) {
  case ANA_REPORT_TEXT: return 24;
  case ANA_REPORT_DATETIME: return 17;
  default: return 13;
  }
}

static lxw_error put_cell(struct ana_report_writer *w, lxw_worksheet *ws, lxw_row_t r, lxw_col_t c,
                          enum ana_report_value_type t, const struct ana_report_cell *v) {
  if (v->null)
    return LXW_NO_ERROR;
  switch (t) {
  case ANA_REPORT_TEXT: return v->text ? put_string(ws, r, c, v->text, NULL) : LXW_NO_ERROR;
  case ANA_REPORT_INTEGER: return worksheet_write_number(ws, r, c, (double)v->i, w->integer);
  case ANA_REPORT_NUMBER:
  case ANA_REPORT_PERCENT:
    return isfinite(v->d) ? worksheet_write_number(ws, r, c, v->d, format_of(w, t)) : LXW_NO_ERROR;
  case ANA_REPORT_DATE:
  case ANA_REPORT_DATETIME:
    return worksheet_write_number(ws, r, c, excel_date(v->t), format_of(w, t));
  }
  return LXW_NO_ERROR;
}

static void free_writer(struct ana_report_writer *w) {
  ana_free(w->path);
  ana_free(w->title);
  ana_free(w->subject);
  ana_free(w->creator);
  ana_free(w);
}

static lxw_format *num_format(lxw_workbook *wb, const char *f) {
  lxw_format *x = workbook_add_format(wb);
  if (x)
    format_set_num_format(x, f);
  return x;
}

static struct ana_report_writer *xlsx_open(const char *path, const struct ana_report_meta *m,
                                           const struct ana_report_writer_options *o,
                                           struct ana_error *err) {
  struct ana_report_writer *w = ana_calloc(1, sizeof *w);
  char line[256];
  if (!w || !(w->path = ana_strdup(path)) || !(w->title = ana_strdup(m->title)) ||
      !(w->creator = ana_strdup(m->creator ? m->creator : "analyticsd")) ||
      (m->subtitle && !(w->subject = ana_strdup(m->subtitle))))
    goto nomem;
  w->max_rows = o->xlsx_max_rows && o->xlsx_max_rows < ANA_REPORT_XLSX_MAX_ROWS
                    ? o->xlsx_max_rows
                    : ANA_REPORT_XLSX_MAX_ROWS;
  lxw_workbook_options wo = {
      .constant_memory = LXW_TRUE, .tmpdir = (char *)o->tmpdir, .use_zip64 = LXW_TRUE};
  w->wb = workbook_new_opt(path, &wo);
  if (!w->wb)
    goto nomem;
  lxw_doc_properties props = {.title = w->title,
                              .subject = w->subject,
                              .author = w->creator,
                              .created = (time_t)m->generated_at};
  workbook_set_properties(w->wb, &props);
  if (!(w->bold = workbook_add_format(w->wb)) || !(w->title_fmt = workbook_add_format(w->wb)) ||
      !(w->integer = num_format(w->wb, "#,##0")) || !(w->number = num_format(w->wb, "#,##0.00")) ||
      !(w->percent = num_format(w->wb, "0.0%")) ||
      !(w->change = num_format(w->wb, "+0.0%;-0.0%;0.0%")) ||
      !(w->date = num_format(w->wb, "yyyy-mm-dd")) ||
      !(w->datetime = num_format(w->wb, "yyyy-mm-dd hh:mm")))
    goto nomem;
  format_set_bold(w->bold);
  format_set_bold(w->title_fmt);
  format_set_font_size(w->title_fmt, 16);

  /* The cover sheet: title, subtitle, metadata. */
  lxw_worksheet *ws = add_sheet(w, "Report", 1);
  if (!ws)
    goto nomem;
  worksheet_set_column(ws, 0, 0, 18, NULL);
  worksheet_set_column(ws, 1, 1, 48, NULL);
  lxw_row_t r = 0;
  put_string(ws, r++, 0, m->title, w->title_fmt);
  if (m->subtitle)
    put_string(ws, r++, 0, m->subtitle, NULL);
  r++;
  if (m->account_id) {
    worksheet_write_string(ws, r, 0, "Account", w->bold);
    put_string(ws, r++, 1, m->account_id, NULL);
  }
  ana_report_format_range(m, line, sizeof line);
  if (*line) {
    worksheet_write_string(ws, r, 0, "Period", w->bold);
    put_string(ws, r++, 1, line, NULL);
  }
  if (m->time_zone) {
    worksheet_write_string(ws, r, 0, "Time zone", w->bold);
    put_string(ws, r++, 1, m->time_zone, NULL);
  }
  if (m->generated_at) {
    ana_report_format_time(m->generated_at, true, line, sizeof line);
    strncat(line, " UTC", sizeof line - strlen(line) - 1);
    worksheet_write_string(ws, r, 0, "Generated", w->bold);
    put_string(ws, r++, 1, line, NULL);
  }
  return w;
nomem:
  ana_error_set(err, ANA_STATUS_INTERNAL, "creating %s: cannot start the workbook", path);
  if (w) {
    if (w->wb)
      workbook_close(w->wb);
    free_writer(w);
  }
  return NULL;
}

/* A table's header, widths, frozen first row; the autofilter is set when its
 * last row is known. */
static lxw_error table_header(struct ana_report_writer *w, lxw_worksheet *ws,
                              const struct ana_report_table *t) {
  lxw_error e = LXW_NO_ERROR;
  for (size_t c = 0; c < t->n_columns && !e; c++) {
    worksheet_set_column(ws, (lxw_col_t)c, (lxw_col_t)c, width_of(t->columns[c].type), NULL);
    e = put_string(ws, 0, (lxw_col_t)c, t->columns[c].name, w->bold);
  }
  worksheet_freeze_panes(ws, 1, 0);
  return e;
}

static int write_table(struct ana_report_writer *w, const struct ana_report_section *s,
                       struct ana_error *err) {
  const struct ana_report_table *t = &s->u.table;
  if (t->n_columns > LXW_COL_MAX)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "table %s: more than %d columns",
                         s->title ? s->title : "", LXW_COL_MAX);
  struct ana_report_cell *cells = ana_calloc(t->n_columns, sizeof *cells);
  if (!cells)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  const char *name = s->title ? s->title : "Table";
  unsigned part = 1;
  lxw_col_t last_col = (lxw_col_t)(t->n_columns - 1);
  lxw_worksheet *ws = add_sheet(w, name, part);
  lxw_error e = ws ? table_header(w, ws, t) : LXW_ERROR_MEMORY_MALLOC_FAILED;
  size_t row = 0; /* data rows on this sheet */
  int rc = 0;
  while (!e) {
    memset(cells, 0, t->n_columns * sizeof *cells);
    rc = t->next_row(t->ctx, cells, err);
    if (rc <= 0)
      break;
    if (row == w->max_rows) { /* Excel's limit: the table continues on a new sheet */
      worksheet_autofilter(ws, 0, 0, (lxw_row_t)row, last_col);
      ws = add_sheet(w, name, ++part);
      e = ws ? table_header(w, ws, t) : LXW_ERROR_MEMORY_MALLOC_FAILED;
      row = 0;
    }
    row++;
    for (size_t c = 0; c < t->n_columns && !e; c++)
      e = put_cell(w, ws, (lxw_row_t)row, (lxw_col_t)c, t->columns[c].type, &cells[c]);
  }
  ana_free(cells);
  if (rc < 0)
    return rc;
  if (e)
    return lxw_fail(w, e, err);
  worksheet_autofilter(ws, 0, 0, (lxw_row_t)row, last_col);
  return 0;
}

static int write_chart(struct ana_report_writer *w, const struct ana_report_section *s,
                       struct ana_error *err) {
  const struct ana_report_chart *c = &s->u.chart;
  char sheet[SHEET_NAME_MAX * 4 + 16];
  lxw_worksheet *ws = add_sheet(w, s->title ? s->title : "Chart", 1);
  if (!ws)
    return lxw_fail(w, LXW_ERROR_MEMORY_MALLOC_FAILED, err);
  snprintf(sheet, sizeof sheet, "%s", ws->name);
  /* constant_memory: the data rows come first, in order; the chart refers to them. */
  lxw_error e = worksheet_write_string(ws, 0, 0, c->x_is_days ? "Date" : "Time", w->bold);
  worksheet_set_column(ws, 0, 0, c->x_is_days ? 12 : 17, NULL);
  for (size_t j = 0; j < c->n_series && !e; j++)
    e = put_string(ws, 0, (lxw_col_t)(j + 1), c->series[j].name, w->bold);
  for (size_t i = 0; i < c->n_points && !e; i++) {
    e = worksheet_write_number(ws, (lxw_row_t)(i + 1), 0, excel_date(c->x[i]),
                               c->x_is_days ? w->date : w->datetime);
    for (size_t j = 0; j < c->n_series && !e; j++)
      if (isfinite(c->series[j].values[i]))
        e = worksheet_write_number(ws, (lxw_row_t)(i + 1), (lxw_col_t)(j + 1),
                                   c->series[j].values[i], NULL);
  }
  worksheet_freeze_panes(ws, 1, 0);
  if (e)
    return lxw_fail(w, e, err);
  if (c->n_points == 0 || c->n_series == 0)
    return 0;
  lxw_chart *chart = workbook_add_chart(w->wb, c->style == ANA_REPORT_CHART_BAR ? LXW_CHART_COLUMN
                                                                                : LXW_CHART_LINE);
  if (!chart)
    return lxw_fail(w, LXW_ERROR_MEMORY_MALLOC_FAILED, err);
  if (s->title)
    chart_title_set_name(chart, s->title);
  if (c->y_label)
    chart_axis_set_name(chart->y_axis, c->y_label);
  chart_legend_set_position(chart, LXW_CHART_LEGEND_BOTTOM);
  lxw_row_t last = (lxw_row_t)c->n_points;
  for (size_t j = 0; j < c->n_series; j++) {
    lxw_chart_series *se = chart_add_series(chart, NULL, NULL);
    if (!se)
      return lxw_fail(w, LXW_ERROR_MEMORY_MALLOC_FAILED, err);
    chart_series_set_categories(se, sheet, 1, 0, last, 0);
    chart_series_set_values(se, sheet, 1, (lxw_col_t)(j + 1), last, (lxw_col_t)(j + 1));
    chart_series_set_name_range(se, sheet, 0, (lxw_col_t)(j + 1)); /* never read as a formula */
  }
  lxw_chart_options co = {.x_scale = 2.0, .y_scale = 1.5};
  e = worksheet_insert_chart_opt(ws, 1, (lxw_col_t)(c->n_series + 2), chart, &co);
  return e ? lxw_fail(w, e, err) : 0;
}

static int xlsx_section(struct ana_report_writer *w, const struct ana_report_section *s,
                        struct ana_error *err) {
  lxw_worksheet *ws;
  lxw_error e = LXW_NO_ERROR;
  switch (s->kind) {
  case ANA_REPORT_SECTION_TABLE: return write_table(w, s, err);
  case ANA_REPORT_SECTION_CHART: return write_chart(w, s, err);
  case ANA_REPORT_SECTION_TEXT:
    if (!(ws = add_sheet(w, s->title ? s->title : "Notes", 1)))
      return lxw_fail(w, LXW_ERROR_MEMORY_MALLOC_FAILED, err);
    worksheet_set_column(ws, 0, 0, 100, NULL);
    for (size_t i = 0; i < s->u.text.n_paragraphs && !e; i++)
      e = put_string(ws, (lxw_row_t)i, 0, s->u.text.paragraphs[i], NULL);
    break;
  case ANA_REPORT_SECTION_EMPTY:
    if (!(ws = add_sheet(w, s->title ? s->title : "No data", 1)))
      return lxw_fail(w, LXW_ERROR_MEMORY_MALLOC_FAILED, err);
    worksheet_set_column(ws, 0, 0, 60, NULL);
    e = put_string(ws, 0, 0, s->u.empty_message ? s->u.empty_message : ANA_REPORT_NO_DATA_TEXT,
                   w->bold);
    break;
  case ANA_REPORT_SECTION_KPIS:
    if (!(ws = add_sheet(w, s->title ? s->title : "Summary", 1)))
      return lxw_fail(w, LXW_ERROR_MEMORY_MALLOC_FAILED, err);
    worksheet_set_column(ws, 0, 0, 28, NULL);
    worksheet_set_column(ws, 1, 3, 14, NULL);
    const char *head[] = {"Metric", "Value", "Unit", "Change"};
    for (int c = 0; c < 4 && !e; c++)
      e = worksheet_write_string(ws, 0, (lxw_col_t)c, head[c], w->bold);
    for (size_t i = 0; i < s->u.kpis.n_tiles && !e; i++) {
      const struct ana_report_kpi *k = &s->u.kpis.tiles[i];
      lxw_row_t r = (lxw_row_t)(i + 1);
      e = put_string(ws, r, 0, k->label, NULL);
      if (!e && isfinite(k->value))
        e = worksheet_write_number(ws, r, 1, k->value, format_of(w, k->type));
      if (!e && k->unit)
        e = put_string(ws, r, 2, k->unit, NULL);
      if (!e && k->has_change && isfinite(k->change))
        e = worksheet_write_number(ws, r, 3, k->change, w->change);
    }
    worksheet_freeze_panes(ws, 1, 0);
    break;
  }
  return e ? lxw_fail(w, e, err) : 0;
}

static int xlsx_close(struct ana_report_writer *w, struct ana_error *err) {
  lxw_error e = workbook_close(w->wb);
  int rc = e ? lxw_fail(w, e, err) : 0;
  free_writer(w);
  return rc;
}

/* libxlsxwriter cannot drop a workbook without writing it: it is written and
 * the caller removes the file. */
static void xlsx_abort(struct ana_report_writer *w) {
  workbook_close(w->wb);
  free_writer(w);
}

const struct ana_report_writer_ops ana_report_writer_xlsx = {
    .format = "xlsx",
    .content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    .extension = "xlsx",
    .open = xlsx_open,
    .section = xlsx_section,
    .close = xlsx_close,
    .abort = xlsx_abort,
};
