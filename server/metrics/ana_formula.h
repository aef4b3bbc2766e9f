/* Metric formulas: parsing, the aggregate terms a formula needs, evaluation. */
#ifndef ANA_FORMULA_H
#define ANA_FORMULA_H

#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>

/* Limits; each error names the limit it hit. */
#define ANA_FORMULA_MAX_TEXT 4096      /* bytes of one formula text (top level or variable) */
#define ANA_FORMULA_MAX_TERMS 64       /* distinct aggregate terms after expansion */
#define ANA_FORMULA_MAX_DEPTH 64       /* nesting: '(', unary '-', each variable or metric */
#define ANA_FORMULA_MAX_METRIC_DEPTH 8 /* metrics referencing metrics */
#define ANA_FORMULA_MAX_EXPANDED 65536 /* bytes of text parsed, each expansion counted */
#define ANA_FORMULA_MAX_VARS 256       /* variables declared on one metric */

enum ana_agg_fn {
  ANA_AGG_COUNT,
  ANA_AGG_SUM,
  ANA_AGG_AVG,
  ANA_AGG_MIN,
  ANA_AGG_MAX,
  ANA_AGG_UNIQ,
  ANA_AGG_P50,
  ANA_AGG_P90,
  ANA_AGG_P95,
  ANA_AGG_P99
};

enum ana_field_kind {
  ANA_FIELD_NONE,
  ANA_FIELD_EVENT /* a top-level event field */,
  ANA_FIELD_PROPERTY
};

/* One aggregate a formula needs. Distinct terms are deduplicated (same fn,
 * event, field). Everything it points to is owned by the formula. */
struct ana_agg_term {
  enum ana_agg_fn fn;
  const char *event_name; /* NULL = any event ('*') */
  enum ana_field_kind field_kind;
  /* ANA_FIELD_EVENT: "sessionId", "eventType", "eventName", "eventId",
   * "context.ip", "context.userAgent" or "context.locale"; ANA_FIELD_PROPERTY:
   * the property path without "properties.", segments joined by '.', e.g.
   * "order.total"; NULL when none. */
  const char *field;
  /* The path split into segments (also for event fields: {"context", "ip"});
   * needed for property names that contain a dot. NULL and 0 when none. */
  const char *const *field_segments;
  size_t n_field_segments;
};

/* What bare identifiers may resolve to. All borrowed, valid during the parse. */
struct ana_formula_env {
  /* The metric's variables: names (identifiers, distinct) and formula texts. */
  const char *const *var_names;
  const char *const *var_formulas;
  size_t n_vars;
  /* Looks up another metric of the account by name; returns 0 and fills its
   * formula and variables (borrowed, valid during the parse), or -1 when
   * none. Called during ana_formula_parse only, on the caller's thread; it
   * should not return the metric being parsed. May be NULL. */
  int (*lookup_metric)(void *ctx, const char *name, const char **formula,
                       const char *const **var_names, const char *const **var_formulas,
                       size_t *n_vars);
  void *ctx;
  /* Resolves a bare name that is neither a variable nor a metric: returns
   * the event name whose events it counts (borrowed, copied by the parse),
   * or NULL for the name as written. Called during ana_formula_parse only,
   * with ctx. May be NULL. */
  const char *(*resolve_event)(void *ctx, const char *name);
};

struct ana_formula;

/* Parses text (NUL-terminated, borrowed) with every bare identifier resolved
 * through env (may be NULL: no variables, no other metrics). Every declared
 * variable is checked, used or not. Returns the formula (caller frees with
 * ana_formula_free), or NULL with err filled (err and error_pos may be NULL):
 * ANA_STATUS_INVALID_ARGUMENT and a message such as "formula: unexpected ')'
 * at character 7", *error_pos the 1-based column (in characters) in text, or
 * 0 when the error is inside a variable or another metric (the message then
 * names which); ANA_STATUS_RESOURCE_EXHAUSTED when out of memory. Does not
 * block (beyond what lookup_metric does). */
struct ana_formula *ana_formula_parse(const char *text, const struct ana_formula_env *env,
                                      struct ana_error *err, int *error_pos);

/* Number of distinct terms, in order of first appearance. */
size_t ana_formula_term_count(const struct ana_formula *f);

/* Term i (borrowed from f), or NULL when i is out of range. */
const struct ana_agg_term *ana_formula_term(const struct ana_formula *f, size_t i);

/* Evaluates with one value per term (values[i] for term i; NAN means the
 * term has no value; may be NULL when there are no terms). Returns true and
 * sets *out (finite, never -0), or false when the result is empty: a term
 * without a finite value, a division by zero, an overflow. Read-only: many
 * threads may evaluate one formula at once. */
bool ana_formula_eval(const struct ana_formula *f, const double *values, double *out);

/* A canonical text of the parsed formula with every identifier resolved,
 * e.g. "(count(delivered) / count(sent)) * 100"; parsing it again gives the
 * same terms and the same values. Caller frees with free(); NULL when out of
 * memory. */
char *ana_formula_to_string(const struct ana_formula *f);

/* Frees f and everything it owns; NULL does nothing. */
void ana_formula_free(struct ana_formula *f);

/* How a bare name relates to the event names an account has sent. */
enum ana_name_match {
  ANA_NAME_EXACT,     /* an event with exactly this name was seen */
  ANA_NAME_SUFFIX,    /* exactly one seen name ends in "_<name>": *match */
  ANA_NAME_NONE,      /* neither */
  ANA_NAME_AMBIGUOUS, /* several seen names end in "_<name>" */
};

#define ANA_FORMULA_MAX_SUGGEST 8

/* The rule for a bare name of a formula that is not a variable or a metric,
 * against the event names seen (borrowed, any order, duplicates allowed):
 * an exact name wins; else the one seen name ending in "_<name>"
 * (delivered -> message_delivered). *match gets the seen name for EXACT and
 * SUFFIX, NULL otherwise. For NONE and AMBIGUOUS, suggest[] (may be NULL)
 * gets at most max_suggest (at most ANA_FORMULA_MAX_SUGGEST) seen names,
 * closest first: the names ending in "_<name>", or those within an edit
 * distance of max(2, length / 3) of the name or of a seen name's part after
 * one of its '_'; *n_suggest how many. */
enum ana_name_match ana_formula_match_event_name(const char *name, const char *const *seen,
                                                 size_t n_seen, const char **match,
                                                 const char **suggest, size_t max_suggest,
                                                 size_t *n_suggest);

#endif
