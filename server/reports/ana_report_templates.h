/* Built-in report templates: each checks its parameters and builds a report
 * document from the metrics engine's answers. */
#ifndef ANA_REPORT_TEMPLATES_H
#define ANA_REPORT_TEMPLATES_H

#include "ana_arena.h"
#include "ana_error.h"
#include "ana_formula.h"
#include "ana_metric_query.h"
#include "ana_report_model.h"
#include "ana_store.h"
#include "analytics/v1/metrics.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

#include <stddef.h>

/* What templates read: the events (through the metrics engine) and the
 * account's stored metrics (ana_metric_service_resolve's signature). */
struct ana_report_template_env {
  const struct ana_event_store_ops *store_ops;
  void *store;
  int (*resolve_metric)(const char *account, const char *id_or_name, struct ana_arena *arena,
                        Analytics__V1__Metric **metric, struct ana_formula **formula,
                        struct ana_error *err);
  /* Turns ad hoc filters on encrypted fields into blind index filters (as
   * ana_metric_service_blind_filters); NULL: filters are used as given. */
  int (*blind_filters)(const char *account, Analytics__V1__MetricFilter **filters, size_t n,
                       struct ana_arena *arena, struct ana_error *err);
  /* Answers a report's ad-hoc count queries from the rollups of stored
   * metrics that count the same (ana_metric_service_adhoc_counts: 1, or 0
   * when they cannot and the events must); NULL: always the events. */
  int (*adhoc_counts)(const char *account, const struct ana_metric_adhoc *a, size_t n,
                      const struct ana_metric_query *q, struct ana_arena *arena,
                      Analytics__V1__MetricData *outs, struct ana_error *err);
  /* Answers a stored metric's query as GetMetricData does: from its
   * rollups where they match (ana_metric_service_query: 0 or a negative
   * error); NULL: always the events. */
  int (*metric_query)(const struct ana_metric_query *q, struct ana_arena *arena,
                      Analytics__V1__MetricData *out, struct ana_error *err);
  /* After a scan: keeps the counts no stored metric holds as rollups for
   * the next report (ana_metric_service_keep_counts); NULL: does not. */
  int (*keep_counts)(const char *account, const struct ana_metric_adhoc *a, size_t n,
                     struct ana_arena *arena, struct ana_error *err);
  /* What a dimension value is shown as to the report's creator's roles
   * (ana_metric_service_reveal); NULL: as aggregated. */
  const char *(*reveal)(const char *account, const char *const *roles, size_t n_roles,
                        const char *dimension, const char *value, int64_t from_ms, int64_t to_ms,
                        struct ana_arena *arena);
  const char *const *roles; /* the report creator's */
  size_t n_roles;
};

/* "campaign_performance or metric_summary", for error messages. */
extern const char ana_report_templates_text[];

/* The template's title, or NULL when there is no such template. */
const char *ana_report_template_title(const char *name);

/* Checks the parameters (NULL = none) of template name: INVALID_ARGUMENT
 * naming the JSON path ("parameters.dateRange.start: ..."). When name_out
 * is not NULL it gets the default report name (title and date range).
 * Does not block. */
int ana_report_template_check(const char *name, const Google__Protobuf__Struct *params,
                              char *name_out, size_t name_size, struct ana_error *err);

/* The instants of a report's date range: the calendar days first_day to
 * last_day (days since 1970-01-01), both inclusive, in the IANA zone tz,
 * as [*from_ms, *to_ms): the local midnight that starts the first day to
 * the one that ends the last, so a day of the range lasts 23 or 25 hours
 * where the zone changes its clock. Returns 0, or ANA_ERR_INVALID with err
 * naming parameters.timeZone. */
int ana_report_date_range(int64_t first_day, int64_t last_day, const char *tz, int64_t *from_ms,
                          int64_t *to_ms, struct ana_error *err);

/* Builds the document of a report of the template for the account, every
 * number from the metrics engine; everything lives in arena. Blocks (reads
 * the events). */
int ana_report_template_build(const struct ana_report_template_env *env, const char *name,
                              const char *account_id, const char *title,
                              const Google__Protobuf__Struct *params, struct ana_arena *arena,
                              struct ana_report_document *doc, struct ana_error *err);

#endif
