/* Writes the fixed sample report as PDF, XLSX and CSV into a directory, for the
 * integration test. usage: report_sample DIR [ROWS] [--empty] [--landscape] */
#include "ana_report_writer.h"
#include "report_sample_doc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: report_sample DIR [ROWS] [--empty] [--landscape]\n");
    return 2;
  }
  size_t rows = 12;
  bool empty = false, landscape = false;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--empty") == 0)
      empty = true;
    else if (strcmp(argv[i], "--landscape") == 0)
      landscape = true;
    else
      rows = strtoul(argv[i], NULL, 10);
  }
  const char *formats[] = {"pdf", "xlsx", "csv"};
  for (int f = 0; f < 3; f++) {
    static struct report_sample s;
    if (empty)
      report_sample_init_empty(&s);
    else
      report_sample_init(&s, rows);
    struct ana_report_writer_options o;
    ana_report_writer_options_init(&o);
    o.landscape = landscape;
    const struct ana_report_writer_ops *ops = ana_report_writer_find(formats[f]);
    char path[4096];
    snprintf(path, sizeof path, "%s/sample.%s", argv[1], ops->extension);
    struct ana_error err;
    if (ana_report_write_file(ops, path, &s.doc, &o, &err) < 0) {
      fprintf(stderr, "report_sample: %s: %s\n", formats[f], err.message);
      return 1;
    }
    printf("%s\n", path);
  }
  return 0;
}
