/* The report formats, one folder each behind struct ana_report_writer_ops, and
 * the loop that writes a whole document. Adding a format: its folder, a line
 * here, CMake. */
#include "ana_report_writer.h"

#include <assert.h>
#include <string.h>
#include <unistd.h>

static const struct ana_report_writer_ops *const writers[] = {
    &ana_report_writer_pdf,
    &ana_report_writer_xlsx,
    &ana_report_writer_csv,
};

const char ana_report_formats_text[] = "pdf, xlsx or csv";

const struct ana_report_writer_ops *ana_report_writer_find(const char *format) {
  if (!format)
    return NULL;
  for (size_t i = 0; i < sizeof writers / sizeof writers[0]; i++) {
    assert(writers[i]->open && writers[i]->section && writers[i]->close && writers[i]->abort);
    if (strcmp(writers[i]->format, format) == 0)
      return writers[i];
  }
  return NULL;
}

void ana_report_writer_options_init(struct ana_report_writer_options *o) {
  memset(o, 0, sizeof *o);
  o->font_path = ANA_REPORT_DEFAULT_FONT;
  o->bold_font_path = ANA_REPORT_DEFAULT_BOLD_FONT;
  o->pdf_max_table_rows = 5000;
  o->pdf_compress = true;
  o->xlsx_max_rows = ANA_REPORT_XLSX_MAX_ROWS;
}

int ana_report_write_file(const struct ana_report_writer_ops *ops, const char *path,
                          const struct ana_report_document *doc,
                          const struct ana_report_writer_options *o, struct ana_error *err) {
  int rc = 0;
  if (!doc->meta.title)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "title: missing");
  struct ana_report_writer *w = ops->open(path, &doc->meta, o, err);
  if (!w) {
    unlink(path);
    return ANA_ERR_IO;
  }
  for (size_t i = 0; i < doc->n_sections; i++) {
    rc = ana_report_section_check(&doc->sections[i], i, err);
    if (rc == 0)
      rc = ops->section(w, &doc->sections[i], err);
    if (rc < 0) {
      ops->abort(w);
      unlink(path);
      return rc;
    }
  }
  rc = ops->close(w, err);
  if (rc < 0)
    unlink(path);
  return rc;
}
