/* A fixed report document (Latin and Cyrillic text, KPI tiles, a chart, a
 * streamed table) for the writer tests, the sample program and the benchmark. */
#ifndef REPORT_SAMPLE_DOC_H
#define REPORT_SAMPLE_DOC_H

#include "ana_report_model.h"

#define SAMPLE_DAYS 28

struct report_sample_rows {
  size_t n, next; /* rows to produce, rows produced */
  char text[64];
};

struct report_sample {
  struct ana_report_document doc;
  struct ana_report_section sections[5];
  struct ana_report_kpi tiles[4];
  ana_report_local_time x[SAMPLE_DAYS];
  double sent[SAMPLE_DAYS], delivered[SAMPLE_DAYS];
  struct ana_report_series series[2];
  struct report_sample_rows rows;
};

/* Fills s: the document with a table of n_rows rows (the first rows are fixed:
 * quoting, a formula, Cyrillic; the rest generated). s must stay in place. */
void report_sample_init(struct report_sample *s, size_t n_rows);
/* The same title and metadata with one EMPTY section ("no data"). */
void report_sample_init_empty(struct report_sample *s);

/* The table's columns and its row callback (ctx: struct report_sample_rows). */
extern const struct ana_report_column report_sample_columns[5];
int report_sample_next_row(void *ctx, struct ana_report_cell *cells, struct ana_error *err);

#define SAMPLE_CYRILLIC "Весенняя рассылка"
#define SAMPLE_DAY0 1769904000 /* 2026-02-01 */

#endif
