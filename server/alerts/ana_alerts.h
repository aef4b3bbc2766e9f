/* The alert evaluator: a post-commit subscriber (named "alerts") that keeps
 * each enabled rule's sliding window in ANA_ALERT_PANES panes of metric
 * accumulators (a tenth of the window each; the window is the current pane
 * and the nine before it, so at a pane boundary it equals GetMetricData
 * over [boundary - window, boundary)), seeded from the stored events when a
 * rule is loaded (creation, replacement, restart). One instance per group
 * of dimension values, at most max_instances, the rest as "(other)".
 *
 * Threads: the hook copies the committed events of accounts that have
 * rules into a queue and signals (one short lock, no I/O); the evaluator's
 * thread folds them into the panes, steps the instances that moved and
 * writes every change (instance state, history) in one transaction of its
 * own connection to the local database; between events it wakes for panes
 * closing, `for` periods running out, re-notifications and history expiry.
 * Rule changes come from the alert service (a worker) and wait for the
 * evaluator to apply them. */
#ifndef ANA_ALERTS_H
#define ANA_ALERTS_H

#include "ana_alert_rule.h"
#include "ana_arena.h"
#include "ana_error.h"
#include "ana_formula.h"
#include "ana_realtime.h"
#include "ana_store.h"

struct ana_notify;
#include "analytics/v1/alerts.pb-c.h"
#include "analytics/v1/metrics.pb-c.h"

#include <stddef.h>
#include <stdint.h>

struct ana_alerts;

/* Loads the account's metric by id or name into arena, formula parsed
 * (ana_metric_service_resolve). */
typedef int (*ana_alerts_resolve_fn)(const char *account, const char *id_or_name,
                                     struct ana_arena *arena, Analytics__V1__Metric **metric,
                                     struct ana_formula **formula, struct ana_error *err);

/* What a notification shows for value, a value of dimension, to an alert
 * created with roles (ana_metric_service_reveal), in arena. */
typedef const char *(*ana_alerts_reveal_fn)(const char *account, const char *const *roles,
                                            size_t n_roles, const char *dimension,
                                            const char *value, int64_t from_ms, int64_t to_ms,
                                            struct ana_arena *arena);

struct ana_alerts_options {
  struct ana_local_db *db;
  const struct ana_event_store_ops *store_ops; /* seeding scans */
  void *store;
  const struct ana_catalog_ops *catalog_ops; /* the rules */
  void *catalog;
  struct ana_realtime *hub;  /* StreamAlerts; NULL: none */
  struct ana_notify *notify; /* the outbox; NULL: every firing records "no channel" */
  ana_alerts_resolve_fn resolve;
  ana_alerts_reveal_fn reveal; /* NULL: dimension values are shown as aggregated */
  int max_instances;           /* ALERT_MAX_INSTANCES */
  int history_days;            /* ALERT_HISTORY_DAYS */
  int queue_max;               /* ALERT_QUEUE_MAX: events the hook queues for the evaluator */
};

/* Connects to the local database (its tables are schema migration 11 of
 * server/store/local/local_db.c) and starts the thread; rules are loaded by
 * ana_alerts_load_all. Returns NULL with err filled. */
struct ana_alerts *ana_alerts_create(const struct ana_alerts_options *o, struct ana_error *err);

/* Loads every stored rule of every account (after the metric service is
 * bound). Rules that cannot load are logged and skipped. Blocks. */
void ana_alerts_load_all(struct ana_alerts *al);

/* Stops the thread and frees; NULL does nothing. */
void ana_alerts_destroy(struct ana_alerts *al);

/* The commit hook (ana_post_commit_fn); ctx is the evaluator. */
void ana_alerts_on_commit(void *ctx, const struct ana_event_record *records, size_t n);

/* (Re)loads rule a (stored already) into the evaluator, seeding its window;
 * instances of a replaced rule keep their state. Blocks until applied. */
int ana_alerts_put(struct ana_alerts *al, const Analytics__V1__Alert *a, struct ana_error *err);

/* Drops the rule, its instances and history. Blocks until applied. */
void ana_alerts_remove(struct ana_alerts *al, const char *account, const char *alert_id);

/* Instances per state of a rule (counts[4], by enum ana_alert_state). */
void ana_alerts_counts(struct ana_alerts *al, const char *alert_id, int counts[4]);

/* History of a rule, newest first: its state changes and the delivery
 * attempts of its notifications (kind "delivery", state the outcome:
 * delivered, retry, failed), at in [from, to) ms, state "" = any (a state,
 * a kind, or an outcome), at most limit, after page_token ("" or NULL: from
 * the newest; otherwise a token this call returned in *next_token, NULL at
 * the end). Entries are allocated in arena. Returns how many, or
 * ANA_ERR_INVALID for a token that is not one. Blocks. */
int ana_alerts_history(struct ana_alerts *al, const char *account, const char *alert_id,
                       const char *page_token, int64_t from_ms, int64_t to_ms, const char *state,
                       int limit, struct ana_arena *arena, Analytics__V1__AlertHistoryEntry ***out,
                       char **next_token, struct ana_error *err);

/* Makes call a StreamAlerts subscriber (alert_ids: n filters, borrowed from
 * the call's arena). Returns 0 or ANA_ERR_NOMEM. */
int ana_alerts_subscribe(struct ana_alerts *al, struct ana_call *call, const char *account,
                         char **alert_ids, size_t n);

/* Counters for tests. */
struct ana_alerts_stats {
  uint64_t events;      /* events folded into some rule's panes */
  uint64_t transitions; /* history entries written */
  uint64_t notifications;
  uint64_t dropped; /* events the hook's full queue refused (ana_alert_events_dropped_total) */
};
void ana_alerts_stats(struct ana_alerts *al, struct ana_alerts_stats *out);

/* For tests: calls fn with each instance of the rule and its window's value
 * now (has false: no data); *from_ms and *to_ms receive the window's range
 * (ANA_ALERT_PANES panes up to the end of the current one). Returns how
 * many instances, or -1 when the rule is not loaded. */
typedef void (*ana_alerts_window_fn)(void *ctx, const char *const *vals, size_t n_vals, bool other,
                                     bool has, double value);
int ana_alerts_window(struct ana_alerts *al, const char *alert_id, ana_alerts_window_fn fn,
                      void *ctx, int64_t *from_ms, int64_t *to_ms);

#endif
