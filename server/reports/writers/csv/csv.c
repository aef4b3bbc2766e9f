/* The CSV writer: RFC 4180 (comma, CRLF, quotes doubled), UTF-8, streamed row by
 * row; text cells that a spreadsheet would read as a formula are neutralised. */
#include "ana_alloc.h"
#include "ana_report_writer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct ana_report_writer {
  FILE *f;
  char *path;
  char *buf; /* stdio buffer */
  bool first_table_only, wrote_table, blocks;
};

static int io_error(struct ana_report_writer *w, struct ana_error *err) {
  return ana_error_set(err, ANA_STATUS_INTERNAL, "writing %s: %s", w->path,
                       strerror(errno ? errno : EIO)),
         ANA_ERR_IO;
}

/* OWASP CSV injection: a cell starting with = + - @ TAB or CR is a formula to
 * Excel, LibreOffice and Google Sheets; a leading ' makes it text. */
static bool needs_guard(const char *s) {
  return s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r';
}

static void put_text(FILE *f, const char *s) {
  bool quote = strpbrk(s, ",\"\r\n") != NULL;
  if (quote)
    putc('"', f);
  if (needs_guard(s))
    putc('\'', f);
  for (const char *p = s; *p; p++) {
    if (*p == '"')
      putc('"', f);
    putc(*p, f);
  }
  if (quote)
    putc('"', f);
}

static void put_value(FILE *f, enum ana_report_value_type type, const struct ana_report_cell *c) {
  char buf[64];
  if (c->null)
    return;
  switch (type) {
  case ANA_REPORT_TEXT: put_text(f, c->text ? c->text : ""); return;
  case ANA_REPORT_INTEGER: fprintf(f, "%" PRId64, c->i); return;
  case ANA_REPORT_NUMBER:
  case ANA_REPORT_PERCENT: /* the fraction, as a number: 0.125 */
    if (isfinite(c->d))
      fprintf(f, "%.15g", c->d);
    return;
  case ANA_REPORT_DATE:
  case ANA_REPORT_DATETIME:
    ana_report_format_time(c->t, type == ANA_REPORT_DATETIME, buf, sizeof buf);
    fputs(buf, f);
    return;
  }
}

static void end_row(FILE *f) {
  fputs("\r\n", f);
}

static void one_cell_row(FILE *f, const char *s) {
  put_text(f, s);
  end_row(f);
}

static struct ana_report_writer *csv_open(const char *path, const struct ana_report_meta *meta,
                                          const struct ana_report_writer_options *o,
                                          struct ana_error *err) {
  (void)meta;
  struct ana_report_writer *w = ana_calloc(1, sizeof *w);
  if (!w)
    goto nomem;
  w->path = ana_strdup(path);
  w->buf = ana_malloc(1 << 16);
  if (!w->path || !w->buf)
    goto nomem;
  w->f = fopen(path, "wb");
  if (!w->f) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "creating %s: %s", path, strerror(errno));
    goto fail;
  }
  setvbuf(w->f, w->buf, _IOFBF, 1 << 16);
  w->first_table_only = o->csv_first_table_only;
  if (o->csv_bom)
    fputs("\xEF\xBB\xBF", w->f);
  return w;
nomem:
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
  if (w) {
    ana_free(w->path);
    ana_free(w->buf);
    ana_free(w);
  }
  return NULL;
}

/* A block: a blank line before every block but the first, then its title row. */
static void begin_block(struct ana_report_writer *w, const struct ana_report_section *s,
                        const char *fallback) {
  if (w->blocks)
    end_row(w->f);
  w->blocks = true;
  one_cell_row(w->f, s->title ? s->title : fallback);
}

static int write_table(struct ana_report_writer *w, const struct ana_report_table *t,
                       struct ana_error *err) {
  struct ana_report_cell *cells = ana_calloc(t->n_columns, sizeof *cells);
  if (!cells)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  for (size_t i = 0; i < t->n_columns; i++) {
    if (i)
      putc(',', w->f);
    put_text(w->f, t->columns[i].name);
  }
  end_row(w->f);
  int rc;
  unsigned long n = 0;
  for (;;) {
    memset(cells, 0, t->n_columns * sizeof *cells);
    rc = t->next_row(t->ctx, cells, err);
    if (rc <= 0)
      break;
    for (size_t i = 0; i < t->n_columns; i++) {
      if (i)
        putc(',', w->f);
      put_value(w->f, t->columns[i].type, &cells[i]);
    }
    end_row(w->f);
    if ((++n & 4095) == 0 && ferror(w->f)) {
      rc = io_error(w, err);
      break;
    }
  }
  ana_free(cells);
  return rc < 0 ? rc : 0;
}

static int csv_section(struct ana_report_writer *w, const struct ana_report_section *s,
                       struct ana_error *err) {
  char buf[64];
  if (w->first_table_only) {
    if (w->wrote_table)
      return 0;
    if (s->kind == ANA_REPORT_SECTION_EMPTY) {
      one_cell_row(w->f, s->u.empty_message ? s->u.empty_message : ANA_REPORT_NO_DATA_TEXT);
      w->wrote_table = true;
      return 0;
    }
    if (s->kind != ANA_REPORT_SECTION_TABLE)
      return 0;
    w->wrote_table = true;
    return write_table(w, &s->u.table, err);
  }
  switch (s->kind) {
  case ANA_REPORT_SECTION_TEXT:
    begin_block(w, s, "Notes");
    for (size_t i = 0; i < s->u.text.n_paragraphs; i++)
      one_cell_row(w->f, s->u.text.paragraphs[i]);
    break;
  case ANA_REPORT_SECTION_KPIS:
    begin_block(w, s, "Summary");
    fputs("Metric,Value,Unit,Change", w->f);
    end_row(w->f);
    for (size_t i = 0; i < s->u.kpis.n_tiles; i++) {
      const struct ana_report_kpi *k = &s->u.kpis.tiles[i];
      struct ana_report_cell c = {.i = (int64_t)llround(k->value), .d = k->value};
      put_text(w->f, k->label);
      putc(',', w->f);
      put_value(w->f, k->type, &c);
      putc(',', w->f);
      put_text(w->f, k->type == ANA_REPORT_PERCENT ? "%" : k->unit ? k->unit : "");
      putc(',', w->f);
      if (k->has_change && isfinite(k->change))
        fprintf(w->f, "%.15g", k->change);
      end_row(w->f);
    }
    break;
  case ANA_REPORT_SECTION_CHART: {
    const struct ana_report_chart *c = &s->u.chart;
    begin_block(w, s, "Chart");
    put_text(w->f, c->x_is_days ? "Date" : "Time");
    for (size_t j = 0; j < c->n_series; j++) {
      putc(',', w->f);
      put_text(w->f, c->series[j].name);
    }
    end_row(w->f);
    for (size_t i = 0; i < c->n_points; i++) {
      ana_report_format_time(c->x[i], !c->x_is_days, buf, sizeof buf);
      fputs(buf, w->f);
      for (size_t j = 0; j < c->n_series; j++) {
        putc(',', w->f);
        if (isfinite(c->series[j].values[i]))
          fprintf(w->f, "%.15g", c->series[j].values[i]);
      }
      end_row(w->f);
    }
    break;
  }
  case ANA_REPORT_SECTION_TABLE:
    begin_block(w, s, "Table");
    return write_table(w, &s->u.table, err);
  case ANA_REPORT_SECTION_EMPTY:
    begin_block(w, s, "No data");
    one_cell_row(w->f, s->u.empty_message ? s->u.empty_message : ANA_REPORT_NO_DATA_TEXT);
    break;
  }
  return ferror(w->f) ? io_error(w, err) : 0;
}

static void csv_free(struct ana_report_writer *w) {
  ana_free(w->path);
  ana_free(w->buf);
  ana_free(w);
}

static int csv_close(struct ana_report_writer *w, struct ana_error *err) {
  int rc = 0;
  errno = 0;
  if (fflush(w->f) != 0 || ferror(w->f))
    rc = io_error(w, err);
  if (fclose(w->f) != 0 && rc == 0)
    rc = io_error(w, err);
  csv_free(w);
  return rc;
}

static void csv_abort(struct ana_report_writer *w) {
  fclose(w->f);
  csv_free(w);
}

const struct ana_report_writer_ops ana_report_writer_csv = {
    .format = "csv",
    .content_type = "text/csv; charset=utf-8",
    .extension = "csv",
    .open = csv_open,
    .section = csv_section,
    .close = csv_close,
    .abort = csv_abort,
};
