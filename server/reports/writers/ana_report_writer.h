/* Report writers: one file format each behind struct ana_report_writer_ops. */
#ifndef ANA_REPORT_WRITER_H
#define ANA_REPORT_WRITER_H

#include "ana_report_model.h"

#include <stdbool.h>
#include <stddef.h>

/* Options of every writer; a writer ignores what it does not use. Strings
 * borrowed for the writer's lifetime. ana_report_writer_options_init sets
 * the defaults. */
struct ana_report_writer_options {
  bool landscape;             /* pdf: A4 landscape (default portrait) */
  const char *font_path;      /* pdf: a Unicode TrueType font, embedded */
  const char *bold_font_path; /* pdf: its bold face; NULL or unreadable: the regular one */
  size_t pdf_max_table_rows;  /* pdf: rows drawn per table; the rest are counted
                               * and named ("... 12 000 more rows: see the XLSX or
                               * CSV file"); 0: no limit */
  bool pdf_compress;          /* pdf: deflate the page streams (default on) */
  const char *tmpdir;         /* xlsx: where constant_memory keeps its row files; NULL: $TMPDIR */
  size_t xlsx_max_rows;       /* xlsx: data rows per sheet before a table continues on the next
                               * (default and maximum 1 048 575, Excel's limit less the header) */
  bool csv_first_table_only;  /* csv: the first table only, header and rows, no title row */
  bool csv_bom;               /* csv: start with a UTF-8 byte order mark (for Excel) */
};

#define ANA_REPORT_DEFAULT_FONT "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
#define ANA_REPORT_DEFAULT_BOLD_FONT "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
#define ANA_REPORT_XLSX_MAX_ROWS 1048575u

void ana_report_writer_options_init(struct ana_report_writer_options *o);

struct ana_report_writer;

/* A file format. Members are called on one thread in the order open,
 * begin, section*, close (or abort at any point after open); each may block
 * on file I/O and on the table row callbacks it drives. No member keeps a
 * pointer into a section after it returns. Writers know nothing of gRPC,
 * metrics or storage. */
struct ana_report_writer_ops {
  const char *format;       /* "pdf": what a report's `format` names */
  const char *content_type; /* "application/pdf" */
  const char *extension;    /* "pdf", no dot */
  /* Starts a document that close will write at path (created or
   * truncated; the writer may create it only at close). Returns the writer
   * state, or NULL with err filled. Mandatory. */
  struct ana_report_writer *(*open)(const char *path, const struct ana_report_meta *meta,
                                    const struct ana_report_writer_options *o,
                                    struct ana_error *err);
  /* Writes one section (already checked by ana_report_section_check),
   * draining a table's rows. 0 or a negative enum ana_err with err filled;
   * after a failure only abort may follow. Mandatory. */
  int (*section)(struct ana_report_writer *w, const struct ana_report_section *s,
                 struct ana_error *err);
  /* Finishes and flushes the file and frees w (also on failure). Mandatory. */
  int (*close)(struct ana_report_writer *w, struct ana_error *err);
  /* Frees w without finishing the file; what was written at path is
   * garbage the caller removes. Mandatory. */
  void (*abort)(struct ana_report_writer *w);
};

/* registry.c: the writer for a format ("pdf", "xlsx", "csv"), or NULL. */
const struct ana_report_writer_ops *ana_report_writer_find(const char *format);
/* "pdf, xlsx or csv", for error messages. */
extern const char ana_report_formats_text[];

/* Writes a whole document with ops to path: open, each section checked and
 * written, close. A failure aborts and removes path. Blocks. */
int ana_report_write_file(const struct ana_report_writer_ops *ops, const char *path,
                          const struct ana_report_document *doc,
                          const struct ana_report_writer_options *o, struct ana_error *err);

extern const struct ana_report_writer_ops ana_report_writer_pdf;
extern const struct ana_report_writer_ops ana_report_writer_xlsx;
extern const struct ana_report_writer_ops ana_report_writer_csv;

#endif
