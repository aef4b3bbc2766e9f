/* analyticsctl's output: answers as JSON or as aligned tables, errors and
 * usage errors on stderr, progress of long runs on a terminal. */
#include "cli.h"
#include "ana_clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CELL_MAX 48   /* display columns of one table cell */
#define VALUE_MAX 100 /* of one KEY VALUE line's value */
#define AUTO_COLUMNS 8

enum cli_format cli_format = CLI_FORMAT_JSON;

int cli_format_set(const char *name) {
  if (!strcmp(name, "json"))
    cli_format = CLI_FORMAT_JSON;
  else if (!strcmp(name, "table"))
    cli_format = CLI_FORMAT_TABLE;
  else
    return -1;
  return 0;
}

int cli_usage(const struct cli_args *a, const char *fmt, ...) {
  const char *cmd = a && a->cmd ? a->cmd->name : NULL;
  va_list ap;

  fputs("analyticsctl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(see analyticsctl %s%s--help)\n", cmd ? cmd : "", cmd ? " " : "");
  return CLI_EXIT_USAGE;
}

int cli_failed(int rc, const analytics_error_t *err) {
  fprintf(stderr, "analyticsctl: %s: %s\n", analytics_status_name(err->code),
          err->message[0] ? err->message : analytics_strerror(rc));
  return CLI_EXIT_FAIL;
}

/* --- Tables --- */

/* Display columns of UTF-8 text (continuation bytes take none). */
static size_t columns_of(const char *s) {
  size_t n = 0;

  for (; *s; s++)
    n += ((unsigned char)*s & 0xC0) != 0x80;
  return n;
}

/* A cell's text (caller frees): strings as they are (control characters as
 * spaces), numbers and booleans as JSON, null empty, objects and arrays as
 * compact JSON; cut to max display columns with an ellipsis. */
static char *cell_text(const json_t *v, size_t max) {
  char num[64], *s, *p;
  size_t cols = 0;

  if (!v || json_is_null(v)) {
    s = strdup("");
  } else if (json_is_string(v)) {
    s = strdup(json_string_value(v));
  } else if (json_is_integer(v) || json_is_real(v)) {
    if (json_is_integer(v))
      snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
    else
      snprintf(num, sizeof num, "%.6g", json_real_value(v));
    s = strdup(num);
  } else {
    s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
  }
  if (!s)
    return NULL;
  for (p = s; *p; p++) {
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      *p = ' ';
    if (((unsigned char)*p & 0xC0) != 0x80 && ++cols > max) {
      /* max - 1 characters and an ellipsis (U+2026, one column). */
      char *q = p - 1, *t;
      while (q > s && ((unsigned char)*q & 0xC0) == 0x80)
        q--;
      t = malloc((size_t)(q - s) + 4);
      if (t) {
        memcpy(t, s, (size_t)(q - s));
        memcpy(t + (q - s), "\xe2\x80\xa6", 4);
      }
      free(s);
      return t;
    }
  }
  return s;
}

static void pad(size_t n) {
  while (n--)
    putchar(' ');
}

/* The row array of doc: view->rows, or the first array of objects. */
static const json_t *rows_of(const json_t *doc, const struct cli_view *view, const char **key) {
  const char *k;
  json_t *v;

  if (view && view->rows) {
    v = json_object_get(doc, view->rows);
    *key = view->rows;
    return json_is_array(v) ? v : NULL;
  }
  json_object_foreach((json_t *)doc, k, v) {
    if (json_is_array(v) && json_array_size(v) && json_is_object(json_array_get(v, 0))) {
      *key = k;
      return v;
    }
  }
  return NULL;
}

/* The rows' scalar members in order of first appearance (at most
 * AUTO_COLUMNS); all members when none is scalar. Returns how many. */
static size_t auto_columns(const json_t *rows, const char **cols) {
  size_t n = 0, i;
  const char *k;
  json_t *row, *v;

  for (int scalars = 1; scalars >= 0 && !n; scalars--)
    json_array_foreach(rows, i, row) {
      json_object_foreach(row, k, v) {
        size_t j = 0;
        if (scalars && (json_is_object(v) || json_is_array(v)))
          continue;
        while (j < n && strcmp(cols[j], k))
          j++;
        if (j == n && n < AUTO_COLUMNS)
          cols[n++] = k;
      }
    }
  return n;
}

static void print_table(const json_t *rows, const char *const *columns) {
  const char *cols[AUTO_COLUMNS + 32];
  size_t ncols = 0, nrows = json_array_size(rows), width[AUTO_COLUMNS + 32];
  char **cells;

  if (columns)
    while (columns[ncols] && ncols < sizeof cols / sizeof *cols - 1)
      cols[ncols] = columns[ncols], ncols++;
  else
    ncols = auto_columns(rows, cols);
  cells = calloc(nrows * ncols + 1, sizeof *cells);
  if (!cells)
    return;
  for (size_t c = 0; c < ncols; c++)
    width[c] = columns_of(cols[c]);
  for (size_t r = 0; r < nrows; r++)
    for (size_t c = 0; c < ncols; c++) {
      char *t = cell_text(json_object_get(json_array_get(rows, r), cols[c]), CELL_MAX);
      size_t w = t ? columns_of(t) : 0;
      cells[r * ncols + c] = t;
      if (w > width[c])
        width[c] = w;
    }
  for (size_t c = 0; c < ncols; c++) {
    for (const char *p = cols[c]; *p; p++)
      putchar(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    if (c + 1 < ncols)
      pad(width[c] - columns_of(cols[c]) + 2);
  }
  putchar('\n');
  for (size_t r = 0; r < nrows; r++) {
    size_t pending = 0; /* spaces owed; dropped at the end of the line */
    for (size_t c = 0; c < ncols; c++) {
      const char *t = cells[r * ncols + c] ? cells[r * ncols + c] : "";
      if (*t) {
        pad(pending);
        fputs(t, stdout);
        pending = 0;
      }
      pending += width[c] - columns_of(t) + 2;
    }
    putchar('\n');
  }
  for (size_t i = 0; i < nrows * ncols; i++)
    free(cells[i]);
  free(cells);
}

/* KEY VALUE lines, the keys aligned; skip (may be NULL) is left out. */
static void print_pairs(const json_t *doc, const char *skip) {
  size_t w = 0;
  const char *k;
  json_t *v;

  json_object_foreach((json_t *)doc, k, v) {
    if ((!skip || strcmp(k, skip)) && columns_of(k) > w)
      w = columns_of(k);
  }
  json_object_foreach((json_t *)doc, k, v) {
    if (skip && !strcmp(k, skip))
      continue;
    char *t = cell_text(v, VALUE_MAX);
    printf("%s", k);
    pad(w - columns_of(k) + 2);
    printf("%s\n", t ? t : "");
    free(t);
  }
}

void cli_print(const json_t *doc, const struct cli_view *view) {
  const json_t *rows;
  const char *key = NULL;

  if (cli_format == CLI_FORMAT_JSON || !json_is_object(doc)) {
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    puts(text ? text : "{}");
    free(text);
    return;
  }
  rows = rows_of(doc, view, &key);
  if (!rows && view && view->rows && !json_object_get(doc, view->rows)) {
    /* An empty list: proto3 JSON leaves the member out. */
    printf("(no %s)\n", view->rows);
    if (json_object_size(doc)) {
      putchar('\n');
      print_pairs(doc, NULL);
    }
  } else if (!rows) {
    print_pairs(doc, view && view->rows ? view->rows : NULL);
  } else {
    if (json_array_size(rows))
      print_table(rows, view ? view->columns : NULL);
    else
      printf("(no %s)\n", key);
    if (json_object_size(doc) > 1) {
      putchar('\n');
      print_pairs(doc, key);
    }
  }
  fflush(stdout);
}

int cli_finish(int rc, char *json, const analytics_error_t *err, const struct cli_view *view) {
  json_t *v;

  if (rc < 0) {
    analytics_free(json);
    return cli_failed(rc, err);
  }
  v = json ? json_loads(json, JSON_DECODE_ANY, NULL) : NULL;
  if (v)
    cli_print(v, view);
  else
    puts(json ? json : "{}");
  json_decref(v);
  analytics_free(json);
  return 0;
}

/* --- Progress --- */

void cli_progress_init(struct cli_progress *p) {
  p->on = isatty(STDERR_FILENO) == 1;
  p->start_ms = p->last_ms = ana_clock_mono_ms();
}

void cli_progress_update(struct cli_progress *p, const char *unit, uint64_t done, uint64_t errors,
                         bool final) {
  int64_t now;
  double secs;

  if (!p->on)
    return;
  now = ana_clock_mono_ms();
  if (!final && now - p->last_ms < 200)
    return;
  p->last_ms = now;
  secs = (double)(now - p->start_ms) / 1000.0;
  /* \r and erase-line: the line is redrawn in place. */
  fprintf(stderr, "\r\033[K%llu %s, %.0f/s, %llu error%s, %.1fs%s", (unsigned long long)done, unit,
          secs > 0.001 ? (double)done / secs : 0.0, (unsigned long long)errors,
          errors == 1 ? "" : "s", secs, final ? "\n" : "");
  fflush(stderr);
}

void cli_progress_bytes(struct cli_progress *p, uint64_t done, int64_t total, bool final) {
  static const char hashes[] = "##############################";
  static const char dashes[] = "------------------------------";
  const int width = (int)sizeof hashes - 1;
  int64_t now;
  double secs, mib = 1024.0 * 1024.0;

  if (!p->on)
    return;
  now = ana_clock_mono_ms();
  if (!final && now - p->last_ms < 200)
    return;
  p->last_ms = now;
  secs = (double)(now - p->start_ms) / 1000.0;
  fprintf(stderr, "\r\033[K");
  if (total > 0) {
    int filled = (int)((double)done / (double)total * width);
    if (filled > width)
      filled = width;
    fprintf(stderr, "[%.*s%.*s] %3.0f%% %.1f/%.1f MiB", filled, hashes, width - filled, dashes,
            100.0 * (double)done / (double)total, (double)done / mib, (double)total / mib);
  } else {
    fprintf(stderr, "%.1f MiB", (double)done / mib);
  }
  fprintf(stderr, ", %.1f MiB/s%s", secs > 0.001 ? (double)done / mib / secs : 0.0,
          final ? "\n" : "");
  fflush(stderr);
}
