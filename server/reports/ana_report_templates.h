/* Built-in report templates: each checks its parameters and builds a report
 * document from the metrics engine's answers. */
#ifndef ANA_REPORT_TEMPLATES_H
#define ANA_REPORT_TEMPLATES_H

#include "ana_arena.h"
#include "ana_error.h"
#include "ana_formula.h"
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

/* Builds the document of a report of the template for the account, every
 * number from the metrics engine; everything lives in arena. Blocks (reads
 * the events). */
int ana_report_template_build(const struct ana_report_template_env *env, const char *name,
                              const char *account_id, const char *title,
                              const Google__Protobuf__Struct *params, struct ana_arena *arena,
                              struct ana_report_document *doc, struct ana_error *err);

#endif
