/* Report writers against the bare libraries writing the same content: a
 * 100-page PDF table (our writer vs a bare libharu program drawing the same
 * pages), an XLSX of ROWS x 10 cells (vs a bare constant_memory libxlsxwriter
 * program; peak RSS growth of each, measured in a child process), and the CSV
 * writer's rate on ROWS x 10 cells against the sqlite3 CLI exporting the same
 * rows from a plain table (`sqlite3 -csv`).
 * usage: report_writers_bench [--rows N] [--pdf-pages P] [--out RESULTS.md] */
#include "ana_report_writer.h"
#include "bench_common.h"
#include "results_file.h"

#include <hpdf.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xlsxwriter.h>

#define HEADING "## Report writers"
#define PDF_ROWS_PER_PAGE 53 /* what the writer fits on an A4 portrait page */
#define PDF_ROUNDS 9

static char dir[] = "/tmp/report_writers_bench.XXXXXX";

struct result {
  double seconds;
  long hwm_growth_kb;
  long long bytes;
};

static long vm_hwm_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
      break;
  if (f)
    fclose(f);
  return kb;
}

static long long file_size(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  fseek(f, 0, SEEK_END);
  long long n = ftell(f);
  fclose(f);
  return n;
}

/* Runs fn(path) in a child: its time and the growth of its peak RSS. */
static struct result in_child(int (*fn)(const char *path, size_t rows), const char *name,
                              size_t rows) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd[2];
  if (pipe(fd) != 0)
    exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    long before = vm_hwm_kb();
    double t0 = bench_now_s();
    int rc = fn(path, rows);
    struct result r = {bench_now_s() - t0, vm_hwm_kb() - before, file_size(path)};
    if (rc != 0)
      r.seconds = -1;
    if (write(fd[1], &r, sizeof r) != (ssize_t)sizeof r)
      _exit(1);
    _exit(0);
  }
  close(fd[1]);
  struct result r = {-1, 0, 0};
  if (read(fd[0], &r, sizeof r) != (ssize_t)sizeof r)
    r.seconds = -1;
  close(fd[0]);
  waitpid(pid, NULL, 0);
  unlink(path);
  if (r.seconds < 0) {
    fprintf(stderr, "report_writers_bench: %s failed\n", name);
    exit(1);
  }
  return r;
}

/* --- the table: 10 columns, generated rows --- */

static const struct ana_report_column cols[10] = {
    {"Campaign", ANA_REPORT_TEXT},     {"Group", ANA_REPORT_TEXT},
    {"Sent", ANA_REPORT_INTEGER},      {"Delivered", ANA_REPORT_INTEGER},
    {"Read", ANA_REPORT_INTEGER},      {"Clicks", ANA_REPORT_INTEGER},
    {"Revenue", ANA_REPORT_NUMBER},    {"Delivery rate", ANA_REPORT_PERCENT},
    {"Read rate", ANA_REPORT_PERCENT}, {"Day", ANA_REPORT_DATE},
};

struct gen {
  size_t n, i;
  char campaign[32], group[32];
};

static void gen_text(struct gen *g, size_t i) {
  snprintf(g->campaign, sizeof g->campaign, "campaign-%zu", i % 997);
  snprintf(g->group, sizeof g->group, "group-%zu", i);
}

static int gen_next(void *ctx, struct ana_report_cell *c, struct ana_error *err) {
  (void)err;
  struct gen *g = ctx;
  if (g->i >= g->n)
    return 0;
  size_t i = g->i++;
  gen_text(g, i);
  c[0].text = g->campaign;
  c[1].text = g->group;
  c[2].i = (int64_t)(1000 + i % 5000);
  c[3].i = c[2].i - (int64_t)(i % 37);
  c[4].i = c[3].i / 2;
  c[5].i = c[4].i / 7;
  c[6].d = (double)c[5].i * 1.25;
  c[7].d = (double)c[3].i / (double)c[2].i;
  c[8].d = (double)c[4].i / (double)c[3].i;
  c[9].t = 1769904000 + (int64_t)(i % 30) * 86400;
  return 1;
}

static int write_ours(const char *format, const char *path, size_t rows) {
  struct gen g = {.n = rows};
  struct ana_report_section s = {
      .kind = ANA_REPORT_SECTION_TABLE, .title = "Rows", .u.table = {cols, 10, gen_next, &g}};
  struct ana_report_document d = {.meta = {.title = "Benchmark"}, .sections = &s, .n_sections = 1};
  struct ana_report_writer_options o;
  ana_report_writer_options_init(&o);
  o.pdf_max_table_rows = 0;
  /* CSV: the bare table (no title row, no BOM), what the sqlite3 CLI writes */
  o.csv_first_table_only = true;
  o.csv_bom = false;
  struct ana_error err;
  int rc = ana_report_write_file(ana_report_writer_find(format), path, &d, &o, &err);
  if (rc)
    fprintf(stderr, "report_writers_bench: %s\n", err.message);
  return rc;
}

static int ours_pdf(const char *path, size_t rows) {
  return write_ours("pdf", path, rows);
}
static int ours_xlsx(const char *path, size_t rows) {
  return write_ours("xlsx", path, rows);
}
static int ours_csv(const char *path, size_t rows) {
  return write_ours("csv", path, rows);
}

/* The same table pages drawn with libharu directly: the font, a header per
 * page, ten right- or left-aligned cells and a rule per row, page numbers. */
static int bare_pdf(const char *path, size_t rows) {
  HPDF_Doc pdf = HPDF_New(NULL, NULL);
  HPDF_SetCompressionMode(pdf, HPDF_COMP_ALL);
  HPDF_UseUTFEncodings(pdf);
  HPDF_SetCurrentEncoder(pdf, "UTF-8");
  HPDF_Font font =
      HPDF_GetFont(pdf, HPDF_LoadTTFontFromFile(pdf, ANA_REPORT_DEFAULT_FONT, 1), "UTF-8");
  HPDF_Font bold =
      HPDF_GetFont(pdf, HPDF_LoadTTFontFromFile(pdf, ANA_REPORT_DEFAULT_BOLD_FONT, 1), "UTF-8");
  struct gen g = {.n = rows};
  struct ana_report_cell c[10];
  char buf[10][64];
  float colw = (595 - 80) / 12.0f;
  size_t pages = (rows + PDF_ROWS_PER_PAGE - 1) / PDF_ROWS_PER_PAGE;
  HPDF_Page *list = calloc(pages + 1, sizeof *list);
  size_t np = 0;
  while (g.i < g.n) {
    HPDF_Page page = list[np++] = HPDF_AddPage(pdf);
    HPDF_Page_SetSize(page, HPDF_PAGE_SIZE_A4, HPDF_PAGE_PORTRAIT);
    float y = 802;
    HPDF_Page_BeginText(page);
    HPDF_Page_SetFontAndSize(page, bold, 8.5f);
    for (int k = 0; k < 10; k++)
      HPDF_Page_TextOut(page, 43 + colw * (float)k * 1.2f, y - 12, cols[k].name);
    HPDF_Page_EndText(page);
    y -= 16;
    for (int r = 0; r < PDF_ROWS_PER_PAGE && gen_next(&g, c, NULL) == 1; r++) {
      HPDF_Page_BeginText(page);
      HPDF_Page_SetFontAndSize(page, font, 8.5f);
      for (int k = 0; k < 10; k++) {
        ana_report_format_value(cols[k].type, &c[k], buf[k], sizeof buf[k]);
        float x = 43 + colw * (float)k * 1.2f;
        if (cols[k].type != ANA_REPORT_TEXT)
          x += colw - HPDF_Page_TextWidth(page, buf[k]);
        HPDF_Page_TextOut(page, x, y - 10.5f, buf[k]);
      }
      HPDF_Page_EndText(page);
      HPDF_Page_MoveTo(page, 40, y - 14);
      HPDF_Page_LineTo(page, 555, y - 14);
      HPDF_Page_Stroke(page);
      y -= 14;
    }
  }
  for (size_t i = 0; i < np; i++) {
    snprintf(buf[0], sizeof buf[0], "%zu / %zu", i + 1, np);
    HPDF_Page_BeginText(list[i]);
    HPDF_Page_SetFontAndSize(list[i], font, 8);
    HPDF_Page_TextOut(list[i], 290, 24, buf[0]);
    HPDF_Page_EndText(list[i]);
  }
  int rc = HPDF_SaveToFile(pdf, path) == HPDF_OK ? 0 : -1;
  HPDF_Free(pdf);
  free(list);
  return rc;
}

/* The same cells written with libxlsxwriter directly (constant_memory, the
 * same number formats, header, frozen pane, autofilter). */
static int bare_xlsx(const char *path, size_t rows) {
  lxw_workbook_options wo = {.constant_memory = LXW_TRUE, .use_zip64 = LXW_TRUE};
  lxw_workbook *wb = workbook_new_opt(path, &wo);
  lxw_worksheet *ws = workbook_add_worksheet(wb, "Rows");
  lxw_format *f[10] = {0}, *bold = workbook_add_format(wb);
  format_set_bold(bold);
  const char *nf[] = {NULL,    NULL,       "#,##0", "#,##0", "#,##0",
                      "#,##0", "#,##0.00", "0.0%",  "0.0%",  "yyyy-mm-dd"};
  for (int k = 0; k < 10; k++) {
    if (nf[k]) {
      f[k] = workbook_add_format(wb);
      format_set_num_format(f[k], nf[k]);
    }
    worksheet_write_string(ws, 0, (lxw_col_t)k, cols[k].name, bold);
  }
  worksheet_freeze_panes(ws, 1, 0);
  struct gen g = {.n = rows};
  struct ana_report_cell c[10];
  lxw_row_t r = 0;
  while (gen_next(&g, c, NULL) == 1) {
    r++;
    worksheet_write_string(ws, r, 0, c[0].text, NULL);
    worksheet_write_string(ws, r, 1, c[1].text, NULL);
    for (int k = 2; k < 6; k++)
      worksheet_write_number(ws, r, (lxw_col_t)k, (double)c[k].i, f[k]);
    for (int k = 6; k < 9; k++)
      worksheet_write_number(ws, r, (lxw_col_t)k, c[k].d, f[k]);
    worksheet_write_number(ws, r, 9, (double)c[9].t / 86400.0 + 25569.0, f[9]);
  }
  worksheet_autofilter(ws, 0, 0, r, 9);
  return workbook_close(wb) == LXW_NO_ERROR ? 0 : -1;
}

/* --- the sqlite3 CLI's CSV export of the same rows --- */

/* Builds the plain table t (TEXT columns, the header's names) holding the
 * rows the CSV writer writes, with the CLI's own CSV import. Not timed. */
static int plain_table(const char *path, size_t rows) {
  char src[512], cmd[1536];
  snprintf(src, sizeof src, "%s/src.csv", dir);
  if (write_ours("csv", src, rows) != 0)
    return -1;
  snprintf(cmd, sizeof cmd, "sqlite3 %s \".mode csv\" \".import %s t\"", path, src);
  int rc = system(cmd);
  unlink(src);
  return rc == 0 ? 0 : -1;
}

/* `sqlite3 -csv -header` exporting the table into path (what is timed). */
static int sqlite_cli_csv(const char *path, size_t rows) {
  (void)rows;
  char cmd[1536];
  snprintf(cmd, sizeof cmd, "sqlite3 -csv -header %s/plain.db \"SELECT * FROM t\" > %s", dir, path);
  return system(cmd) == 0 ? 0 : -1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  size_t rows = 1000000, pdf_pages = 100;
  const char *out = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc)
      rows = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--pdf-pages") == 0 && i + 1 < argc)
      pdf_pages = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
  }
  if (!mkdtemp(dir))
    return 1;
  /* the writer puts the section title above the first page's table */
  size_t pdf_rows = pdf_pages * PDF_ROWS_PER_PAGE - 2;
  /* A 100-page PDF takes a tenth of a second, where one scheduling hiccup
   * moves the ratio by half: PDF_ROUNDS alternating rounds (the order
   * swapped every round), and the round with the median ratio reported. */
  struct result pdf_bare[PDF_ROUNDS], pdf_ours[PDF_ROUNDS];
  double pdf_ratio[PDF_ROUNDS], sorted[PDF_ROUNDS];
  for (int r = 0; r < PDF_ROUNDS; r++) {
    if (r % 2 == 0) {
      pdf_bare[r] = in_child(bare_pdf, "bare.pdf", pdf_rows);
      pdf_ours[r] = in_child(ours_pdf, "ours.pdf", pdf_rows);
    } else {
      pdf_ours[r] = in_child(ours_pdf, "ours.pdf", pdf_rows);
      pdf_bare[r] = in_child(bare_pdf, "bare.pdf", pdf_rows);
    }
    sorted[r] = pdf_ratio[r] = pdf_ours[r].seconds / pdf_bare[r].seconds;
  }
  qsort(sorted, PDF_ROUNDS, sizeof sorted[0], cmp_double);
  int median = 0;
  while (pdf_ratio[median] != sorted[PDF_ROUNDS / 2])
    median++;
  struct result pb = pdf_bare[median], po = pdf_ours[median];
  struct result xb = in_child(bare_xlsx, "bare.xlsx", rows);
  struct result xo = in_child(ours_xlsx, "ours.xlsx", rows);
  struct result co = in_child(ours_csv, "ours.csv", rows);
  char db[512];
  snprintf(db, sizeof db, "%s/plain.db", dir);
  if (plain_table(db, rows) != 0) {
    fprintf(stderr, "report_writers_bench: cannot build the plain table (sqlite3 CLI)\n");
    return 1;
  }
  struct result cs = in_child(sqlite_cli_csv, "cli.csv", rows);
  unlink(db);
  rmdir(dir);

  char machine[256];
  bench_machine(machine, sizeof machine);
  char section[4096];
  snprintf(section, sizeof section,
           HEADING
           "\n\n%s. Each run in its own child process; RSS growth is VmHWM after less "
           "before.\n\n"
           "| What | Time | Ratio to bare | Peak RSS growth | File |\n"
           "|---|---|---|---|---|\n"
           "| PDF table, %zu rows (~%zu A4 pages), bare libharu | %.2f s | | %.1f MiB | "
           "%.1f MB |\n"
           "| PDF table, %zu rows, report writer | %.2f s | %.2fx (target <= 1.5x; median of %d "
           "alternating rounds) | %.1f MiB | %.1f MB |\n"
           "| XLSX %zu rows x 10, bare libxlsxwriter (constant_memory) | %.2f s | | %.1f "
           "MiB | %.1f MB |\n"
           "| XLSX %zu rows x 10, report writer | %.2f s | %.2fx (target <= 1.3x) | %.1f "
           "MiB (target <= 32) | %.1f MB |\n"
           "| CSV %zu rows x 10, report writer | %.2f s (%.0f rows/s, %.1f MB/s) | "
           "%.2fx the CLI's rate (target >= 0.5x) | %.1f MiB | %.1f MB |\n"
           "| CSV %zu rows x 10, sqlite3 CLI `-csv` export of a plain table of the same "
           "rows | %.2f s (%.0f rows/s, %.1f MB/s) | | | %.1f MB |\n",
           machine, pdf_rows, pdf_pages, pb.seconds, pb.hwm_growth_kb / 1024.0, pb.bytes / 1e6,
           pdf_rows, po.seconds, po.seconds / pb.seconds, PDF_ROUNDS, po.hwm_growth_kb / 1024.0,
           po.bytes / 1e6, rows, xb.seconds, xb.hwm_growth_kb / 1024.0, xb.bytes / 1e6, rows,
           xo.seconds, xo.seconds / xb.seconds, xo.hwm_growth_kb / 1024.0, xo.bytes / 1e6, rows,
           co.seconds, (double)rows / co.seconds, co.bytes / 1e6 / co.seconds,
           cs.seconds / co.seconds, co.hwm_growth_kb / 1024.0, co.bytes / 1e6, rows, cs.seconds,
           (double)rows / cs.seconds, cs.bytes / 1e6 / cs.seconds, cs.bytes / 1e6);
  fputs(section, stdout);
  if (out)
    bench_results_replace(out, HEADING, section);
  return 0;
}
