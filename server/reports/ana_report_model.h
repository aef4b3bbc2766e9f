/* The report document model: what a report file says, independent of its format. */
#ifndef ANA_REPORT_MODEL_H
#define ANA_REPORT_MODEL_H

#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Times in the model are wall-clock seconds since 1970-01-01 00:00 in the
 * report's time zone: whoever fills the model applies the zone's offset (and
 * its DST rules), so writers do no time-zone arithmetic. A day is a value
 * that is a multiple of 86400. */
typedef int64_t ana_report_local_time;

/* Document metadata. Every string is borrowed for the document's lifetime
 * and UTF-8; NULL means absent. */
struct ana_report_meta {
  const char *title;    /* mandatory */
  const char *subtitle; /* e.g. "Campaign 42, 2026-03-01 to 2026-03-31" */
  const char *account_id;
  const char *time_zone; /* IANA name, shown as is */
  int64_t generated_at;  /* Unix seconds (UTC); PDF creation date, shown in UTC */
  bool has_range;
  ana_report_local_time range_start, range_end; /* days, both inclusive */
  const char *creator;                          /* the application name; NULL: "analyticsd" */
};

enum ana_report_section_kind {
  ANA_REPORT_SECTION_TEXT,
  ANA_REPORT_SECTION_KPIS,
  ANA_REPORT_SECTION_CHART,
  ANA_REPORT_SECTION_TABLE,
  ANA_REPORT_SECTION_EMPTY, /* "no data for this period": the report says so */
};

/* How a value is kept and shown. */
enum ana_report_value_type {
  ANA_REPORT_TEXT,     /* cell.text */
  ANA_REPORT_INTEGER,  /* cell.i */
  ANA_REPORT_NUMBER,   /* cell.d, two decimals when shown */
  ANA_REPORT_PERCENT,  /* cell.d as a fraction: 0.125 is shown 12.5% */
  ANA_REPORT_DATE,     /* cell.t, a day */
  ANA_REPORT_DATETIME, /* cell.t, to the minute */
};

struct ana_report_text {
  const char *const *paragraphs; /* borrowed; UTF-8 */
  size_t n_paragraphs;
};

struct ana_report_kpi {
  const char *label;
  enum ana_report_value_type type; /* INTEGER, NUMBER or PERCENT */
  double value;
  const char *unit; /* NULL or a suffix such as "ms" */
  bool has_change;
  double change; /* against the previous period, a signed fraction: +0.1 is +10.0% */
};

struct ana_report_kpis {
  const struct ana_report_kpi *tiles;
  size_t n_tiles;
};

enum ana_report_chart_style { ANA_REPORT_CHART_LINE, ANA_REPORT_CHART_BAR };

struct ana_report_series {
  const char *name;
  const double *values; /* n_points of them; NaN is a gap */
};

/* A time series chart; small enough to be held in memory (one point per
 * interval of the range). */
struct ana_report_chart {
  enum ana_report_chart_style style;
  const ana_report_local_time *x; /* n_points, ascending */
  size_t n_points;
  bool x_is_days; /* labels are dates, else date and time */
  const struct ana_report_series *series;
  size_t n_series;
  const char *y_label; /* NULL: none */
};

/* A table column. */
struct ana_report_column {
  const char *name;
  enum ana_report_value_type type;
};

/* One cell of a row, read according to its column's type. */
struct ana_report_cell {
  bool null;        /* shown empty */
  const char *text; /* TEXT; borrowed until the next call of next_row */
  int64_t i;
  double d;
  ana_report_local_time t;
};

/* Produces a table's rows one at a time, so a table of 10^6 rows is never in
 * memory: fills cells[0..n_columns-1] and returns 1, returns 0 at the end, or
 * a negative enum ana_err with err filled. Called on the writer's thread;
 * may block (it may read from a database). */
typedef int (*ana_report_row_fn)(void *ctx, struct ana_report_cell *cells, struct ana_error *err);

struct ana_report_table {
  const struct ana_report_column *columns;
  size_t n_columns;
  ana_report_row_fn next_row;
  void *ctx;
};

/* A section: a title (may be NULL) and one of the bodies above. */
struct ana_report_section {
  enum ana_report_section_kind kind;
  const char *title;
  union {
    struct ana_report_text text;
    struct ana_report_kpis kpis;
    struct ana_report_chart chart;
    struct ana_report_table table;
    const char *empty_message; /* EMPTY: NULL gives the default sentence */
  } u;
};

/* A whole document: metadata and sections in order. */
struct ana_report_document {
  struct ana_report_meta meta;
  const struct ana_report_section *sections;
  size_t n_sections;
};

/* The sentence an EMPTY section without a message shows. */
#define ANA_REPORT_NO_DATA_TEXT "No data for the selected period."

/* Checks a section before a writer sees it (counts, NULL pointers, column
 * types, kpi types, ascending x); INVALID_ARGUMENT naming the section and
 * field. */
int ana_report_section_check(const struct ana_report_section *s, size_t index,
                             struct ana_error *err);

/* --- formatting shared by the writers --- */

/* "2026-03-01" or "2026-03-01 14:05" (datetime) into buf (>= 20 bytes). */
void ana_report_format_time(ana_report_local_time t, bool with_time, char *buf, size_t size);
/* A value as text for people: integers with thin grouping ("1 234 567"),
 * numbers with two decimals, percents "12.5%", dates. NULL cell: "". */
void ana_report_format_value(enum ana_report_value_type type, const struct ana_report_cell *c,
                             char *buf, size_t size);
/* A change as a signed percent: "+12.5%", "-3.0%", "0.0%". */
void ana_report_format_change(double change, char *buf, size_t size);
/* The date range line: "2026-03-01 – 2026-03-31 (Europe/Berlin)" or "" when none. */
void ana_report_format_range(const struct ana_report_meta *m, char *buf, size_t size);

#endif
