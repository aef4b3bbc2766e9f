/* Unit tests of the report writers on a fixed document: CSV bytes, quoting and
 * the injection guard; PDF text extracted with pdftotext; XLSX sheet XML. */
#include "ana_report_writer.h"
#include "report_sample_doc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[] = "/tmp/test_report_writers.XXXXXX";

static char *slurp_cmd(const char *cmd) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
    n += got;
    if (cap - n < 4096)
      buf = realloc(buf, cap *= 2);
  }
  buf[n] = 0;
  pclose(p);
  return buf;
}

static char *write_sample(const char *format, struct report_sample *s,
                          const struct ana_report_writer_options *o) {
  static char path[512];
  const struct ana_report_writer_ops *ops = ana_report_writer_find(format);
  assert_non_null(ops);
  snprintf(path, sizeof path, "%s/out.%s", dir, ops->extension);
  struct ana_error err = {0};
  int rc = ana_report_write_file(ops, path, &s->doc, o, &err);
  if (rc != 0)
    fail_msg("%s: %s", format, err.message);
  return path;
}

/* A tiny table for exact CSV bytes. */
static const struct ana_report_column cols[3] = {
    {"Name", ANA_REPORT_TEXT}, {"Count", ANA_REPORT_INTEGER}, {"Rate", ANA_REPORT_PERCENT}};
struct tiny {
  int i;
};
static int tiny_next(void *ctx, struct ana_report_cell *c, struct ana_error *err) {
  (void)err;
  static const char *names[] = {"plain", "=1+2", "+x",  "-y",         "@SUM(A1)",
                                "\tt",   "\rr",  "a,b", "say \"hi\"", "две\nстроки"};
  struct tiny *t = ctx;
  if (t->i >= 10)
    return 0;
  c[0].text = names[t->i];
  c[1].i = t->i - 1; /* -1: a negative number is a number, never guarded */
  c[2].d = t->i / 8.0;
  c[2].null = t->i == 3;
  t->i++;
  return 1;
}

static char *csv_of(const struct ana_report_section *sec, size_t n, bool first_only) {
  struct ana_report_document d = {.meta = {.title = "t"}, .sections = sec, .n_sections = n};
  struct ana_report_writer_options o;
  ana_report_writer_options_init(&o);
  o.csv_first_table_only = first_only;
  char path[512];
  snprintf(path, sizeof path, "%s/t.csv", dir);
  struct ana_error err;
  assert_int_equal(ana_report_write_file(&ana_report_writer_csv, path, &d, &o, &err), 0);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "cat %s", path);
  return slurp_cmd(cmd);
}

static void csv_bytes_quoting_and_injection_guard(void **state) {
  (void)state;
  struct tiny t = {0};
  struct ana_report_section sec = {.kind = ANA_REPORT_SECTION_TABLE,
                                   .title = "=cmd|' /C calc'!A0",
                                   .u.table = {cols, 3, tiny_next, &t}};
  char *got = csv_of(&sec, 1, false);
  const char *want = "'=cmd|' /C calc'!A0\r\n"
                     "Name,Count,Rate\r\n"
                     "plain,-1,0\r\n"
                     "'=1+2,0,0.125\r\n"
                     "'+x,1,0.25\r\n"
                     "'-y,2,\r\n"
                     "'@SUM(A1),3,0.5\r\n"
                     "'\tt,4,0.625\r\n"
                     "\"'\rr\",5,0.75\r\n"
                     "\"a,b\",6,0.875\r\n"
                     "\"say \"\"hi\"\"\",7,1\r\n"
                     "\"две\nстроки\",8,1.125\r\n";
  assert_string_equal(got, want);
  free(got);
  t.i = 0;
  got = csv_of(&sec, 1, true); /* no title row */
  assert_memory_equal(got, "Name,Count,Rate\r\nplain,-1,0\r\n", 29);
  free(got);
}

static void csv_sections_and_empty_report(void **state) {
  (void)state;
  static struct report_sample s;
  report_sample_init(&s, 6);
  struct ana_report_writer_options o;
  ana_report_writer_options_init(&o);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "cat %s", write_sample("csv", &s, &o));
  char *got = slurp_cmd(cmd);
  assert_non_null(strstr(got, "Summary\r\nMetric,Value,Unit,Change\r\nSent,12345,,0.125\r\n"));
  assert_non_null(strstr(got, "\r\n\r\nBy group\r\nGroup,Sent,Delivered,Rate,Day\r\n"
                              "Группа А,1000,900,0.9,2026-02-01\r\n"));
  assert_non_null(strstr(got, "\"'=HYPERLINK(\"\"http://evil\"\")\",1001,901,"));
  assert_non_null(strstr(got, "2026-02-01,400,390\r\n"));
  free(got);
  report_sample_init_empty(&s);
  snprintf(cmd, sizeof cmd, "cat %s", write_sample("csv", &s, &o));
  got = slurp_cmd(cmd);
  assert_string_equal(got, "Summary\r\n" ANA_REPORT_NO_DATA_TEXT "\r\n");
  free(got);
}

static void pdf_text_has_numbers_and_cyrillic(void **state) {
  (void)state;
  static struct report_sample s;
  report_sample_init(&s, 80);
  struct ana_report_writer_options o;
  ana_report_writer_options_init(&o);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "pdftotext -enc UTF-8 %s - 2>/dev/null", write_sample("pdf", &s, &o));
  char *txt = slurp_cmd(cmd);
  assert_non_null(strstr(txt, SAMPLE_CYRILLIC));
  assert_non_null(strstr(txt, "Отчёт по кампании"));
  assert_non_null(strstr(txt, "12,345"));
  assert_non_null(strstr(txt, "+12.5%"));
  assert_non_null(strstr(txt, "-3.0%"));
  assert_non_null(strstr(txt, "97.2%"));
  assert_non_null(strstr(txt, "group-79"));
  /* page numbers "n / N" (pdftotext drops the spaces around the slash) */
  char *squeezed = strdup(txt), *q = squeezed;
  for (char *p = txt; *p; p++)
    if (*p != ' ')
      *q++ = *p;
  *q = 0;
  assert_non_null(strstr(squeezed, "\n1/3\n"));
  assert_non_null(strstr(squeezed, "\n3/3\n"));
  free(squeezed);
  /* the header is repeated on every page of the table: Group on pages 1-3 */
  int headers = 0;
  for (char *p = txt; (p = strstr(p, "Delivered")); p++)
    headers++;
  assert_int_equal(headers, 3);
  free(txt);
  /* a row limit names what was left out */
  report_sample_init(&s, 80);
  o.pdf_max_table_rows = 10;
  snprintf(cmd, sizeof cmd, "pdftotext -enc UTF-8 %s - 2>/dev/null", write_sample("pdf", &s, &o));
  txt = slurp_cmd(cmd);
  assert_non_null(strstr(txt, "70 more rows"));
  assert_null(strstr(txt, "group-10\n"));
  free(txt);
  /* no data: the file says so */
  report_sample_init_empty(&s);
  snprintf(cmd, sizeof cmd, "pdftotext -enc UTF-8 %s - 2>/dev/null", write_sample("pdf", &s, &o));
  txt = slurp_cmd(cmd);
  assert_non_null(strstr(txt, ANA_REPORT_NO_DATA_TEXT));
  free(txt);
}

static void xlsx_cells_and_sheet_split(void **state) {
  (void)state;
  static struct report_sample s;
  report_sample_init(&s, 7);
  struct ana_report_writer_options o;
  ana_report_writer_options_init(&o);
  o.xlsx_max_rows = 3; /* 7 rows: 3 + 3 + 1 on three sheets */
  const char *path = write_sample("xlsx", &s, &o);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "unzip -p %s xl/workbook.xml", path);
  char *wb = slurp_cmd(cmd);
  assert_non_null(strstr(wb, "name=\"By group\""));
  assert_non_null(strstr(wb, "name=\"By group (2)\""));
  assert_non_null(strstr(wb, "name=\"By group (3)\""));
  assert_non_null(strstr(wb, "name=\"Обзор\""));
  free(wb);
  /* sheet 5 = the first part of the table: header frozen, autofilter, values */
  snprintf(cmd, sizeof cmd, "unzip -p %s xl/worksheets/sheet5.xml", path);
  char *x = slurp_cmd(cmd);
  assert_non_null(strstr(x, "<autoFilter ref=\"A1:E4\"/>"));
  assert_non_null(strstr(x, "state=\"frozen\""));
  assert_non_null(strstr(x, "<t>Группа А</t>"));
  assert_non_null(strstr(x, "<t>=HYPERLINK(\"http://evil\")</t>")); /* text, no <f> */
  assert_null(strstr(x, "<f>"));
  assert_non_null(strstr(x, "<v>1000</v>"));
  assert_non_null(strstr(x, "<v>46054</v>")); /* 2026-02-01 as an Excel date */
  free(x);
  snprintf(cmd, sizeof cmd, "unzip -l %s | grep -c 'xl/charts/chart1.xml'", path);
  char *c = slurp_cmd(cmd);
  assert_int_equal(atoi(c), 1);
  free(c);
}

static void model_checks_and_formats(void **state) {
  (void)state;
  char b[64];
  struct ana_report_cell c = {.i = -1234567, .d = 0.12345};
  ana_report_format_value(ANA_REPORT_INTEGER, &c, b, sizeof b);
  assert_string_equal(b, "-1,234,567");
  ana_report_format_value(ANA_REPORT_PERCENT, &c, b, sizeof b);
  assert_string_equal(b, "12.3%");
  c.d = 1234.5;
  ana_report_format_value(ANA_REPORT_NUMBER, &c, b, sizeof b);
  assert_string_equal(b, "1,234.50");
  ana_report_format_change(0.125, b, sizeof b);
  assert_string_equal(b, "+12.5%");
  ana_report_format_change(-0.0001, b, sizeof b);
  assert_string_equal(b, "0.0%");
  struct ana_error err;
  struct ana_report_section bad = {.kind = ANA_REPORT_SECTION_TABLE, .u.table = {cols, 3, NULL}};
  assert_true(ana_report_section_check(&bad, 2, &err) < 0);
  assert_non_null(strstr(err.message, "sections[2]"));
  ana_report_local_time x[2] = {10, 5};
  double v[2] = {1, 2};
  struct ana_report_series se = {"s", v};
  struct ana_report_section ch = {.kind = ANA_REPORT_SECTION_CHART,
                                  .u.chart = {.x = x, .n_points = 2, .series = &se, .n_series = 1}};
  assert_true(ana_report_section_check(&ch, 0, &err) < 0);
  assert_non_null(strstr(err.message, "sections[0].x[1]"));
  assert_null(ana_report_writer_find("docx"));
  assert_string_equal(ana_report_writer_find("xlsx")->extension, "xlsx");
}

static void unwritable_path_fails_cleanly(void **state) {
  (void)state;
  static struct report_sample s;
  const char *formats[] = {"pdf", "xlsx", "csv"};
  for (int f = 0; f < 3; f++) {
    report_sample_init(&s, 3);
    struct ana_report_writer_options o;
    ana_report_writer_options_init(&o);
    struct ana_error err = {0};
    int rc = ana_report_write_file(ana_report_writer_find(formats[f]), "/nonexistent/dir/x", &s.doc,
                                   &o, &err);
    assert_true(rc < 0);
    assert_true(err.message[0] != 0);
  }
  /* a missing font is named */
  report_sample_init(&s, 3);
  struct ana_report_writer_options o;
  ana_report_writer_options_init(&o);
  o.font_path = "/nonexistent.ttf";
  struct ana_error err = {0};
  char path[512];
  snprintf(path, sizeof path, "%s/nofont.pdf", dir);
  assert_true(ana_report_write_file(&ana_report_writer_pdf, path, &s.doc, &o, &err) < 0);
  assert_non_null(strstr(err.message, "/nonexistent.ttf"));
  assert_int_equal(access(path, F_OK), -1);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(csv_bytes_quoting_and_injection_guard),
      cmocka_unit_test(csv_sections_and_empty_report),
      cmocka_unit_test(pdf_text_has_numbers_and_cyrillic),
      cmocka_unit_test(xlsx_cells_and_sheet_split),
      cmocka_unit_test(model_checks_and_formats),
      cmocka_unit_test(unwritable_path_fails_cleanly),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
