/* The PDF writer (libharu): A4 pages with an embedded Unicode TrueType font,
 * KPI tiles, vector charts, tables that break across pages with their header
 * repeated, and "n / N" page numbers written on every page at the end. */
#include "ana_alloc.h"
#include "ana_report_writer.h"

#include <hpdf.h>
#include <math.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#define MARGIN 40.0f
#define BOTTOM 50.0f /* the footer lives below */
#define TEXT_SIZE 10.0f
#define CELL_SIZE 8.5f
#define ROW_H 14.0f

struct ana_report_writer {
  HPDF_Doc pdf;
  HPDF_Font font, bold;
  HPDF_Page page;
  HPDF_Page *pages;
  size_t n_pages, cap_pages;
  float w, h, y; /* page size, the cursor (top of the next thing) */
  size_t max_table_rows;
  char *path;
  HPDF_STATUS error, detail; /* the first libharu error */
  int sys_errno;             /* errno when it happened (a file error: ENOSPC...) */
};

struct rgb {
  float r, g, b;
};
static const struct rgb palette[] = {
    {0.12f, 0.47f, 0.71f}, {1.00f, 0.50f, 0.05f}, {0.17f, 0.63f, 0.17f},
    {0.84f, 0.15f, 0.16f}, {0.58f, 0.40f, 0.74f}, {0.55f, 0.34f, 0.29f},
};
#define PALETTE_N (sizeof palette / sizeof palette[0])

static void on_error(HPDF_STATUS error, HPDF_STATUS detail, void *user) {
  struct ana_report_writer *w = user;
  if (!w->error) {
    w->error = error;
    w->detail = detail;
    w->sys_errno = errno;
  }
}

static int check(struct ana_report_writer *w, struct ana_error *err) {
  if (!w->error)
    return 0;
  if ((w->error == HPDF_FILE_IO_ERROR || w->detail == HPDF_FILE_IO_ERROR) && w->sys_errno) {
    ana_error_set(err, w->sys_errno == ENOSPC ? ANA_STATUS_RESOURCE_EXHAUSTED : ANA_STATUS_INTERNAL,
                  "writing %s: %s", w->path, strerror(w->sys_errno));
    return ANA_ERR_IO;
  }
  ana_error_set(err, ANA_STATUS_INTERNAL, "writing %s: libharu error 0x%04X (detail %u)", w->path,
                (unsigned)w->error, (unsigned)w->detail);
  return ANA_ERR_IO;
}

static float text_width(HPDF_Font f, float size, const char *s) {
  if (!*s)
    return 0;
  HPDF_TextWidth tw = HPDF_Font_TextWidth(f, (const HPDF_BYTE *)s, (HPDF_UINT)strlen(s));
  return (float)tw.width * size / 1000.0f;
}

static void text_at(struct ana_report_writer *w, HPDF_Font f, float size, float x, float y,
                    const char *s) {
  if (!*s)
    return;
  HPDF_Page_BeginText(w->page);
  HPDF_Page_SetFontAndSize(w->page, f, size);
  HPDF_Page_TextOut(w->page, x, y, s);
  HPDF_Page_EndText(w->page);
}

/* Cuts s (a copy in buf) to fit width, ending with an ellipsis when cut. */
static const char *fit(HPDF_Font f, float size, const char *s, float width, char *buf,
                       size_t bufsz) {
  if (text_width(f, size, s) <= width)
    return s;
  size_t n = strlen(s);
  if (n + 4 > bufsz)
    n = bufsz - 4;
  for (;;) {
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
      n--;
    memcpy(buf, s, n);
    memcpy(buf + n, "\xE2\x80\xA6", 4); /* U+2026 */
    if (n == 0 || text_width(f, size, buf) <= width)
      return buf;
    n--;
  }
}

static int new_page(struct ana_report_writer *w) {
  if (w->n_pages == w->cap_pages) {
    size_t cap = w->cap_pages ? w->cap_pages * 2 : 16;
    HPDF_Page *p = ana_realloc(w->pages, cap * sizeof *p);
    if (!p)
      return ANA_ERR_NOMEM;
    w->pages = p;
    w->cap_pages = cap;
  }
  w->page = HPDF_AddPage(w->pdf);
  if (!w->page)
    return ANA_ERR_IO;
  HPDF_Page_SetSize(w->page, HPDF_PAGE_SIZE_A4,
                    w->w > w->h ? HPDF_PAGE_LANDSCAPE : HPDF_PAGE_PORTRAIT);
  w->pages[w->n_pages++] = w->page;
  w->y = w->h - MARGIN;
  return 0;
}

/* Makes room for height points: a new page when they do not fit. */
static int room(struct ana_report_writer *w, float height) {
  if (w->y - height >= BOTTOM)
    return 0;
  return new_page(w);
}

static void fill_rgb(struct ana_report_writer *w, float r, float g, float b) {
  HPDF_Page_SetRGBFill(w->page, r, g, b);
}

static void stroke_rgb(struct ana_report_writer *w, float r, float g, float b) {
  HPDF_Page_SetRGBStroke(w->page, r, g, b);
}

/* Word-wraps a paragraph to the content width; the lines flow across pages. */
static int paragraph(struct ana_report_writer *w, HPDF_Font f, float size, const char *s) {
  float width = w->w - 2 * MARGIN, lh = size * 1.4f;
  size_t len = strlen(s);
  char *line = ana_malloc(len + 4);
  if (!line)
    return ANA_ERR_NOMEM;
  const char *p = s;
  int rc = 0;
  while (*p) {
    /* the longest prefix of whole words that fits */
    size_t best = 0, n = 0;
    for (;;) {
      size_t e = n;
      while (p[e] == ' ')
        e++;
      while (p[e] && p[e] != ' ' && p[e] != '\n')
        e++;
      memcpy(line, p, e);
      line[e] = 0;
      if (best > 0 && text_width(f, size, line) > width)
        break;
      best = e;
      n = e;
      if (!p[e] || p[e] == '\n')
        break;
    }
    memcpy(line, p, best);
    line[best] = 0;
    char cut[512];
    if ((rc = room(w, lh)) < 0)
      break;
    fill_rgb(w, 0.1f, 0.1f, 0.1f);
    text_at(w, f, size, MARGIN, w->y - size, fit(f, size, line, width, cut, sizeof cut));
    w->y -= lh;
    p += best;
    while (*p == ' ' || *p == '\n')
      p++;
  }
  ana_free(line);
  return rc;
}

static void set_date(HPDF_Date *d, int64_t unix_s) {
  time_t t = (time_t)unix_s;
  struct tm tm;
  gmtime_r(&t, &tm);
  *d = (HPDF_Date){.year = tm.tm_year + 1900,
                   .month = tm.tm_mon + 1,
                   .day = tm.tm_mday,
                   .hour = tm.tm_hour,
                   .minutes = tm.tm_min,
                   .seconds = tm.tm_sec,
                   .ind = 'Z'};
}

static void free_writer(struct ana_report_writer *w) {
  if (w->pdf)
    HPDF_Free(w->pdf);
  ana_free(w->pages);
  ana_free(w->path);
  ana_free(w);
}

static struct ana_report_writer *pdf_open(const char *path, const struct ana_report_meta *m,
                                          const struct ana_report_writer_options *o,
                                          struct ana_error *err) {
  struct ana_report_writer *w = ana_calloc(1, sizeof *w);
  char line[512];
  if (!w || !(w->path = ana_strdup(path))) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  w->max_table_rows = o->pdf_max_table_rows;
  w->w = o->landscape ? 842.0f : 595.0f;
  w->h = o->landscape ? 595.0f : 842.0f;
  w->pdf = HPDF_New(on_error, w);
  if (!w->pdf) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "creating %s: cannot start the PDF", path);
    goto fail;
  }
  HPDF_SetCompressionMode(w->pdf, o->pdf_compress ? HPDF_COMP_ALL : HPDF_COMP_NONE);
  HPDF_UseUTFEncodings(w->pdf);
  HPDF_SetCurrentEncoder(w->pdf, "UTF-8");
  const char *name = HPDF_LoadTTFontFromFile(w->pdf, o->font_path, HPDF_TRUE);
  if (!name) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "font %s: cannot load it (libharu error 0x%04X)",
                  o->font_path, (unsigned)w->error);
    goto fail;
  }
  w->font = HPDF_GetFont(w->pdf, name, "UTF-8");
  w->bold = w->font;
  if (o->bold_font_path) {
    HPDF_STATUS saved = w->error;
    const char *bname = HPDF_LoadTTFontFromFile(w->pdf, o->bold_font_path, HPDF_TRUE);
    if (bname)
      w->bold = HPDF_GetFont(w->pdf, bname, "UTF-8");
    w->error = saved; /* no bold face: the regular one */
    HPDF_ResetError(w->pdf);
  }
  if (!w->font || check(w, err) < 0)
    goto fail;

  HPDF_SetInfoAttr(w->pdf, HPDF_INFO_TITLE, m->title);
  HPDF_SetInfoAttr(w->pdf, HPDF_INFO_CREATOR, m->creator ? m->creator : "analyticsd");
  HPDF_SetInfoAttr(w->pdf, HPDF_INFO_PRODUCER, "analyticsd (libharu)");
  if (m->subtitle)
    HPDF_SetInfoAttr(w->pdf, HPDF_INFO_SUBJECT, m->subtitle);
  if (m->generated_at) {
    HPDF_Date d;
    set_date(&d, m->generated_at);
    HPDF_SetInfoDateAttr(w->pdf, HPDF_INFO_CREATION_DATE, d);
  }
  if (new_page(w) < 0 || check(w, err) < 0)
    goto fail;

  /* The heading: title, subtitle, one line of metadata, a rule. */
  if (paragraph(w, w->bold, 20, m->title) < 0)
    goto nomem;
  if (m->subtitle && paragraph(w, w->font, 12, m->subtitle) < 0)
    goto nomem;
  char range[160], gen[48] = "";
  ana_report_format_range(m, range, sizeof range);
  if (m->generated_at) {
    ana_report_format_time(m->generated_at, true, gen, sizeof gen);
    strcat(gen, " UTC");
  }
  snprintf(line, sizeof line, "%s%s%s%s%s%s%s", m->account_id ? "Account " : "",
           m->account_id ? m->account_id : "", *range && m->account_id ? " \xC2\xB7 " : "", range,
           *gen ? (m->account_id || *range ? " \xC2\xB7 Generated " : "Generated ") : "", gen, "");
  if (*line) {
    w->y -= 2;
    fill_rgb(w, 0.4f, 0.4f, 0.4f);
    char cut[512];
    text_at(w, w->font, 9, MARGIN, w->y - 9,
            fit(w->font, 9, line, w->w - 2 * MARGIN, cut, sizeof cut));
    w->y -= 14;
  }
  stroke_rgb(w, 0.75f, 0.75f, 0.75f);
  HPDF_Page_SetLineWidth(w->page, 0.8f);
  HPDF_Page_MoveTo(w->page, MARGIN, w->y - 2);
  HPDF_Page_LineTo(w->page, w->w - MARGIN, w->y - 2);
  HPDF_Page_Stroke(w->page);
  w->y -= 12;
  if (check(w, err) < 0)
    goto fail;
  return w;
nomem:
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
  if (w)
    free_writer(w);
  return NULL;
}

static int section_title(struct ana_report_writer *w, const char *title, float need) {
  int rc = room(w, 28 + need);
  if (rc < 0 || !title)
    return rc;
  w->y -= 8;
  fill_rgb(w, 0.1f, 0.1f, 0.1f);
  char cut[512];
  text_at(w, w->bold, 13, MARGIN, w->y - 13,
          fit(w->bold, 13, title, w->w - 2 * MARGIN, cut, sizeof cut));
  w->y -= 22;
  return 0;
}

static int kpis(struct ana_report_writer *w, const struct ana_report_kpis *k) {
  int per_row = w->w > w->h ? 4 : 3;
  float gap = 10, tw = (w->w - 2 * MARGIN - gap * (float)(per_row - 1)) / (float)per_row, th = 62;
  char value[96], change[48], cut[512];
  for (size_t i = 0; i < k->n_tiles; i++) {
    int col = (int)(i % (size_t)per_row);
    if (col == 0) {
      if (i > 0)
        w->y -= th + gap;
      int rc = room(w, th);
      if (rc < 0)
        return rc;
    }
    const struct ana_report_kpi *t = &k->tiles[i];
    float x = MARGIN + (float)col * (tw + gap), top = w->y;
    fill_rgb(w, 0.96f, 0.97f, 0.98f);
    stroke_rgb(w, 0.80f, 0.82f, 0.85f);
    HPDF_Page_SetLineWidth(w->page, 0.6f);
    HPDF_Page_Rectangle(w->page, x, top - th, tw, th);
    HPDF_Page_FillStroke(w->page);
    fill_rgb(w, 0.35f, 0.35f, 0.35f);
    text_at(w, w->font, 8.5f, x + 8, top - 15, fit(w->font, 8.5f, t->label, tw - 16, cut, 512));
    struct ana_report_cell c = {.i = (int64_t)llround(t->value), .d = t->value};
    ana_report_format_value(t->type, &c, value, sizeof value);
    if (t->unit && *t->unit) {
      strncat(value, " ", sizeof value - strlen(value) - 1);
      strncat(value, t->unit, sizeof value - strlen(value) - 1);
    }
    fill_rgb(w, 0.05f, 0.05f, 0.05f);
    text_at(w, w->bold, 16, x + 8, top - 36, fit(w->bold, 16, value, tw - 16, cut, 512));
    if (t->has_change && isfinite(t->change)) {
      ana_report_format_change(t->change, change, sizeof change);
      if (*change == '+')
        fill_rgb(w, 0.10f, 0.55f, 0.20f);
      else if (*change == '-')
        fill_rgb(w, 0.80f, 0.15f, 0.15f);
      else
        fill_rgb(w, 0.4f, 0.4f, 0.4f);
      strncat(change, " vs previous period", sizeof change - strlen(change) - 1);
      text_at(w, w->font, 8, x + 8, top - 53, fit(w->font, 8, change, tw - 16, cut, 512));
    }
  }
  if (k->n_tiles)
    w->y -= th + gap;
  return 0;
}

/* A "nice" tick step (1, 2, 5 x 10^k) for about n ticks over span. */
static double nice_step(double span, int n) {
  double raw = span / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static void axis_label(double v, double step, char *buf, size_t size) {
  struct ana_report_cell c = {.i = (int64_t)llround(v), .d = v};
  ana_report_format_value(step >= 1 ? ANA_REPORT_INTEGER : ANA_REPORT_NUMBER, &c, buf, size);
}

static int chart(struct ana_report_writer *w, const struct ana_report_chart *c) {
  float height = w->w > w->h ? 250 : 230;
  int rc = room(w, height);
  if (rc < 0)
    return rc;
  float left = MARGIN + 52, right = w->w - MARGIN - 8, top = w->y - 6, bottom = w->y - height + 48;
  double lo = 0, hi = 0;
  for (size_t j = 0; j < c->n_series; j++)
    for (size_t i = 0; i < c->n_points; i++) {
      double v = c->series[j].values[i];
      if (isfinite(v)) {
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
      }
    }
  if (hi <= lo)
    hi = lo + 1;
  double step = nice_step(hi - lo, 5);
  lo = floor(lo / step) * step;
  hi = ceil(hi / step) * step;
  float pw = right - left, ph = top - bottom;
#define YPOS(v) (bottom + (float)(((v)-lo) / (hi - lo)) * ph)
  char buf[64], cut[512];
  /* grid and y labels */
  HPDF_Page_SetLineWidth(w->page, 0.4f);
  stroke_rgb(w, 0.88f, 0.88f, 0.88f);
  fill_rgb(w, 0.35f, 0.35f, 0.35f);
  for (double v = lo; v <= hi + step / 2; v += step) {
    float y = YPOS(v);
    HPDF_Page_MoveTo(w->page, left, y);
    HPDF_Page_LineTo(w->page, right, y);
    HPDF_Page_Stroke(w->page);
    axis_label(v, step, buf, sizeof buf);
    text_at(w, w->font, 7.5f, left - 5 - text_width(w->font, 7.5f, buf), y - 2.5f, buf);
  }
  if (c->y_label) {
    HPDF_Page_BeginText(w->page);
    HPDF_Page_SetFontAndSize(w->page, w->font, 7.5f);
    HPDF_Page_SetTextMatrix(w->page, 0, 1, -1, 0, MARGIN + 6, bottom);
    HPDF_Page_ShowText(w->page, fit(w->font, 7.5f, c->y_label, ph, cut, sizeof cut));
    HPDF_Page_EndText(w->page);
  }
  /* axes */
  HPDF_Page_SetLineWidth(w->page, 0.8f);
  stroke_rgb(w, 0.3f, 0.3f, 0.3f);
  HPDF_Page_MoveTo(w->page, left, top);
  HPDF_Page_LineTo(w->page, left, bottom);
  HPDF_Page_LineTo(w->page, right, bottom);
  HPDF_Page_Stroke(w->page);
  /* x ticks and labels: at most about one label per 70 points */
  size_t n = c->n_points;
  float slot = n ? pw / (float)n : pw;
  size_t every = 1;
  while (n && (float)(n / every) * 70.0f > pw)
    every++;
#define XPOS(i) (left + slot * ((float)(i) + 0.5f))
  for (size_t i = 0; i < n; i++) {
    float x = XPOS(i);
    HPDF_Page_MoveTo(w->page, x, bottom);
    HPDF_Page_LineTo(w->page, x, bottom - 3);
    HPDF_Page_Stroke(w->page);
    if (i % every)
      continue;
    ana_report_format_time(c->x[i], !c->x_is_days, buf, sizeof buf);
    float tw = text_width(w->font, 7, buf);
    text_at(w, w->font, 7, x - tw / 2, bottom - 12, buf);
  }
  /* the series */
  for (size_t j = 0; j < c->n_series; j++) {
    const struct rgb *col = &palette[j % PALETTE_N];
    const double *v = c->series[j].values;
    if (c->style == ANA_REPORT_CHART_BAR) {
      float bw = slot * 0.8f / (float)c->n_series;
      fill_rgb(w, col->r, col->g, col->b);
      for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
          continue;
        float x = left + slot * (float)i + slot * 0.1f + bw * (float)j;
        float y0 = YPOS(lo < 0 && hi > 0 ? 0 : lo), y1 = YPOS(v[i]);
        HPDF_Page_Rectangle(w->page, x, y0 < y1 ? y0 : y1, bw, fabsf(y1 - y0));
      }
      HPDF_Page_Fill(w->page);
    } else {
      stroke_rgb(w, col->r, col->g, col->b);
      HPDF_Page_SetLineWidth(w->page, 1.6f);
      bool pen = false;
      for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
          pen = false;
          continue;
        }
        if (pen)
          HPDF_Page_LineTo(w->page, XPOS(i), YPOS(v[i]));
        else
          HPDF_Page_MoveTo(w->page, XPOS(i), YPOS(v[i]));
        pen = true;
      }
      HPDF_Page_Stroke(w->page);
      fill_rgb(w, col->r, col->g, col->b);
      for (size_t i = 0; i < n && n <= 62; i++)
        if (isfinite(v[i])) {
          HPDF_Page_Circle(w->page, XPOS(i), YPOS(v[i]), 1.8f);
          HPDF_Page_Fill(w->page);
        }
    }
  }
  /* the legend */
  float lx = left, ly = bottom - 30;
  for (size_t j = 0; j < c->n_series; j++) {
    const struct rgb *col = &palette[j % PALETTE_N];
    const char *name = fit(w->font, 8, c->series[j].name, 150, cut, sizeof cut);
    float tw = text_width(w->font, 8, name);
    if (lx + 14 + tw > right && lx > left) {
      lx = left;
      ly -= 11;
    }
    fill_rgb(w, col->r, col->g, col->b);
    HPDF_Page_Rectangle(w->page, lx, ly - 1, 9, 7);
    HPDF_Page_Fill(w->page);
    fill_rgb(w, 0.2f, 0.2f, 0.2f);
    text_at(w, w->font, 8, lx + 12, ly, name);
    lx += 12 + tw + 14;
  }
#undef XPOS
#undef YPOS
  w->y = ly - 14;
  return 0;
}

struct layout {
  float x[64], width[64];
  size_t n;
};

static void table_layout(struct ana_report_writer *w, const struct ana_report_table *t,
                         struct layout *l) {
  float weight[64], total = 0;
  l->n = t->n_columns < 64 ? t->n_columns : 64;
  for (size_t i = 0; i < l->n; i++) {
    enum ana_report_value_type ty = t->columns[i].type;
    weight[i] = ty == ANA_REPORT_TEXT ? 2.0f : ty == ANA_REPORT_DATETIME ? 1.4f : 1.0f;
    total += weight[i];
  }
  float x = MARGIN, avail = w->w - 2 * MARGIN;
  for (size_t i = 0; i < l->n; i++) {
    l->x[i] = x;
    l->width[i] = avail * weight[i] / total;
    x += l->width[i];
  }
}

static void table_header(struct ana_report_writer *w, const struct ana_report_table *t,
                         const struct layout *l) {
  char cut[512];
  fill_rgb(w, 0.90f, 0.92f, 0.95f);
  HPDF_Page_Rectangle(w->page, MARGIN, w->y - ROW_H - 2, w->w - 2 * MARGIN, ROW_H + 2);
  HPDF_Page_Fill(w->page);
  fill_rgb(w, 0.1f, 0.1f, 0.1f);
  HPDF_Page_BeginText(w->page);
  HPDF_Page_SetFontAndSize(w->page, w->bold, CELL_SIZE);
  for (size_t i = 0; i < l->n; i++) {
    const char *s = fit(w->bold, CELL_SIZE, t->columns[i].name, l->width[i] - 6, cut, sizeof cut);
    float x = l->x[i] + 3;
    if (t->columns[i].type != ANA_REPORT_TEXT)
      x = l->x[i] + l->width[i] - 3 - text_width(w->bold, CELL_SIZE, s);
    HPDF_Page_TextOut(w->page, x, w->y - ROW_H + 2, s);
  }
  HPDF_Page_EndText(w->page);
  w->y -= ROW_H + 2;
}

static int table(struct ana_report_writer *w, const struct ana_report_table *t,
                 struct ana_error *err) {
  struct layout l;
  table_layout(w, t, &l);
  struct ana_report_cell *cells = ana_calloc(t->n_columns, sizeof *cells);
  if (!cells)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  char buf[512], cut[512];
  int rc = 0;
  size_t rows = 0, omitted = 0;
  table_header(w, t, &l);
  for (;;) {
    memset(cells, 0, t->n_columns * sizeof *cells);
    rc = t->next_row(t->ctx, cells, err);
    if (rc <= 0)
      break;
    if (w->max_table_rows && rows == w->max_table_rows) {
      omitted++;
      continue;
    }
    if (w->y - ROW_H < BOTTOM) {
      if ((rc = new_page(w)) < 0) {
        ana_error_set(err, ANA_STATUS_INTERNAL, "writing %s: cannot add a page", w->path);
        break;
      }
      table_header(w, t, &l);
    }
    rows++;
    fill_rgb(w, 0.1f, 0.1f, 0.1f);
    HPDF_Page_BeginText(w->page);
    HPDF_Page_SetFontAndSize(w->page, w->font, CELL_SIZE);
    for (size_t i = 0; i < l.n; i++) {
      ana_report_format_value(t->columns[i].type, &cells[i], buf, sizeof buf);
      if (!*buf)
        continue;
      const char *s = fit(w->font, CELL_SIZE, buf, l.width[i] - 6, cut, sizeof cut);
      float x = l.x[i] + 3;
      if (t->columns[i].type != ANA_REPORT_TEXT)
        x = l.x[i] + l.width[i] - 3 - text_width(w->font, CELL_SIZE, s);
      HPDF_Page_TextOut(w->page, x, w->y - ROW_H + 3.5f, s);
    }
    HPDF_Page_EndText(w->page);
    stroke_rgb(w, 0.90f, 0.90f, 0.90f);
    HPDF_Page_SetLineWidth(w->page, 0.3f);
    HPDF_Page_MoveTo(w->page, MARGIN, w->y - ROW_H);
    HPDF_Page_LineTo(w->page, w->w - MARGIN, w->y - ROW_H);
    HPDF_Page_Stroke(w->page);
    w->y -= ROW_H;
    if (w->error)
      break;
  }
  ana_free(cells);
  if (rc < 0)
    return rc;
  w->y -= 6;
  if (rows == 0)
    rc = paragraph(w, w->font, 9, "No rows.");
  else if (omitted) {
    snprintf(buf, sizeof buf, "\xE2\x80\xA6 %zu more rows are in the XLSX and CSV files.", omitted);
    rc = paragraph(w, w->font, 9, buf);
  }
  if (rc < 0)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), rc;
  return check(w, err);
}

static int pdf_section(struct ana_report_writer *w, const struct ana_report_section *s,
                       struct ana_error *err) {
  int rc = 0;
  switch (s->kind) {
  case ANA_REPORT_SECTION_TEXT:
    rc = section_title(w, s->title, 16);
    for (size_t i = 0; rc == 0 && i < s->u.text.n_paragraphs; i++) {
      rc = paragraph(w, w->font, TEXT_SIZE, s->u.text.paragraphs[i]);
      w->y -= 5;
    }
    break;
  case ANA_REPORT_SECTION_KPIS:
    rc = section_title(w, s->title, 62);
    if (rc == 0)
      rc = kpis(w, &s->u.kpis);
    break;
  case ANA_REPORT_SECTION_CHART:
    rc = section_title(w, s->title, w->w > w->h ? 250 : 230);
    if (rc == 0)
      rc = chart(w, &s->u.chart);
    break;
  case ANA_REPORT_SECTION_TABLE:
    rc = section_title(w, s->title, 3 * ROW_H);
    if (rc == 0)
      return table(w, &s->u.table, err);
    break;
  case ANA_REPORT_SECTION_EMPTY: {
    rc = section_title(w, s->title, 40);
    if (rc < 0)
      break;
    const char *msg = s->u.empty_message ? s->u.empty_message : ANA_REPORT_NO_DATA_TEXT;
    fill_rgb(w, 0.98f, 0.96f, 0.90f);
    stroke_rgb(w, 0.85f, 0.75f, 0.50f);
    HPDF_Page_SetLineWidth(w->page, 0.6f);
    HPDF_Page_Rectangle(w->page, MARGIN, w->y - 34, w->w - 2 * MARGIN, 34);
    HPDF_Page_FillStroke(w->page);
    char cut[512];
    fill_rgb(w, 0.3f, 0.25f, 0.1f);
    text_at(w, w->bold, 12, MARGIN + 12, w->y - 22,
            fit(w->bold, 12, msg, w->w - 2 * MARGIN - 24, cut, sizeof cut));
    w->y -= 44;
    break;
  }
  }
  if (rc < 0)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "writing %s: out of memory", w->path),
           rc;
  return check(w, err);
}

static int pdf_close(struct ana_report_writer *w, struct ana_error *err) {
  char buf[48];
  /* N is known now: "n / N" on every page */
  for (size_t i = 0; i < w->n_pages; i++) {
    w->page = w->pages[i];
    snprintf(buf, sizeof buf, "%zu / %zu", i + 1, w->n_pages);
    fill_rgb(w, 0.45f, 0.45f, 0.45f);
    text_at(w, w->font, 8, (w->w - text_width(w->font, 8, buf)) / 2, 24, buf);
  }
  int rc = check(w, err);
  errno = 0;
  if (rc == 0 && HPDF_SaveToFile(w->pdf, w->path) != HPDF_OK)
    rc = check(w, err) < 0
             ? ANA_ERR_IO
             : (ana_error_set(err, ANA_STATUS_INTERNAL, "writing %s", w->path), ANA_ERR_IO);
  free_writer(w);
  return rc;
}

static void pdf_abort(struct ana_report_writer *w) {
  free_writer(w);
}

const struct ana_report_writer_ops ana_report_writer_pdf = {
    .format = "pdf",
    .content_type = "application/pdf",
    .extension = "pdf",
    .open = pdf_open,
    .section = pdf_section,
    .close = pdf_close,
    .abort = pdf_abort,
};
