/* The service implementations: each binds the handlers of one contract
 * service to the method table. */
#ifndef ANA_SERVICES_H
#define ANA_SERVICES_H

#include "ana_api_keys.h"
#include "ana_event_names.h"
#include "ana_ingest.h"
#include "ana_metric_query.h"
#include "ana_metric_streams.h"
#include "ana_realtime.h"
#include "ana_store.h"
#include "ana_workers.h"

struct ana_event_service_options {
  struct ana_committer *committer;
  const struct ana_store_roles *roles; /* searches (borrowed) */
  struct ana_workers *workers;         /* for searches */
  struct ana_ingest_limits limits;
  const char *trusted_proxies; /* borrowed; NULL = none */
  int search_max_page_size;
  int stream_max_in_flight;            /* batches of one stream being committed at once */
  struct ana_event_names *event_names; /* ListEventNames; NULL: UNIMPLEMENTED */
  /* ENCRYPTED_FIELDS (NULL: none), sealed at ingest; search results show
   * them in clear to principals with pii:read, masked to others. */
  const struct ana_crypto_fields *encrypted;
  struct ana_crypto *crypto;
};

/* Binds EventService (TrackEvent, TrackEvents, IngestEvents, ImportEvents,
 * SearchEvents). The options are copied; pointers must outlive the server. */
int ana_event_service_bind(const struct ana_event_service_options *o);

/* Binds RealtimeService.StreamAnalytics to the hub (borrowed; must outlive
 * the transports). StreamMetric is bound by ana_metric_service_bind_streams. */
int ana_realtime_service_bind(struct ana_realtime *hub, const struct ana_crypto_fields *encrypted);

struct ana_rollups;

struct ana_metric_service_options {
  const struct ana_catalog_ops *catalog_ops;
  void *catalog;
  const struct ana_event_store_ops *store_ops; /* for metric data */
  void *store;
  struct ana_workers *workers;
  struct ana_rollups *rollups;         /* NULL: every query reads raw events */
  struct ana_event_names *event_names; /* seen names for bare formula names; NULL: none */
  /* ENCRYPTED_FIELDS (NULL: none): filters on them are stored as, and
   * dimension filters compared with, their blind indexes. */
  const struct ana_crypto_fields *encrypted;
  struct ana_crypto *crypto;
};

/* Binds MetricService (create, list, get, update, delete, data). */
int ana_metric_service_bind(const struct ana_metric_service_options *o);

/* An ana_event_names_added_fn (ctx unused): resolves the bare names of the
 * account's metrics that waited for a matching event name (a new
 * definition version, with its backfill). Runs on the caller's thread. */
void ana_metric_service_names_added(void *ctx, const char *account_id, const char *const *names,
                                    size_t n);

/* Binds RealtimeService.StreamMetric (implemented with the metric
 * definitions) to the live metric streams and the hub that carries them
 * (borrowed; must outlive the transports). Call after
 * ana_metric_service_bind. */
int ana_metric_service_bind_streams(struct ana_metric_streams *streams, struct ana_realtime *hub);

/* Answers the n ad-hoc queries a over q (their outs, allocated in arena)
 * from the rollups of the account's stored metrics instead of the events,
 * when each term of each is count(<name>) and a stored metric without
 * filters counts that name alone with every dimension the query needs (its
 * dimensions, and those its filters name: each "eq" with a text value on a
 * property, an encrypted one's a blind index), its rollups complete. Returns 1 when all
 * are answered so, 0 when not (then the events must), or a negative error.
 * Blocks. Call after ana_metric_service_bind. */
int ana_metric_service_adhoc_counts(const char *account, const struct ana_metric_adhoc *a, size_t n,
                                    const struct ana_metric_query *q, struct ana_arena *arena,
                                    Analytics__V1__MetricData *outs, struct ana_error *err);
/* ana_metric_service_adhoc_counts, also from the rollups the account keeps
 * of its own (ana_metric_service_keep_counts) once complete. */
/* Keeps each count(<name>) of the queries a that no stored metric holds
 * as rollups of the account's own (REPORT_AUTO_ROLLUPS): a counter of that
 * name by every dimension the queries name (their dimensions and filter
 * fields), defined now (the same again does nothing) and backfilled in
 * the background. No catalog object: ListMetrics does not show it. Returns
 * 0 or a negative error. Blocks. */
int ana_metric_service_keep_counts(const char *account, const struct ana_metric_adhoc *a, size_t n,
                                   struct ana_arena *arena, struct ana_error *err);
int ana_metric_service_adhoc_counts_kept(const char *account, const struct ana_metric_adhoc *a,
                                         size_t n, const struct ana_metric_query *q,
                                         struct ana_arena *arena, Analytics__V1__MetricData *outs,
                                         struct ana_error *err);

/* Answers q, a stored metric's query (q->metric->metric_id names it), as
 * GetMetricData does: from its rollups when they are complete and its
 * definition is the stored one (or groups by some of its dimensions), from
 * the events otherwise. Returns 0 or a negative error. Blocks. */
int ana_metric_service_query(const struct ana_metric_query *q, struct ana_arena *arena,
                             Analytics__V1__MetricData *out, struct ana_error *err);

/* Metrics stored before a field joined ENCRYPTED_FIELDS may compare it with
 * a clear value in a filter: each such value (of the accounts that have
 * metrics) is replaced by its blind index in the stored metric, and its
 * rollups start a new version (backfilled). For the re-encryption job, once
 * the events are rewritten. Returns how many metrics changed, or a negative
 * error. Blocks. */
int ana_metric_service_blind_stored(struct ana_error *err);

/* Loads the account's metric by id, else by name, into arena, with its
 * formula parsed as the metric recorded its names (free it with
 * ana_formula_free; it borrows from arena). Returns 0, or a negative error
 * with err NOT_FOUND naming "metric", FAILED_PRECONDITION (the formula no
 * longer holds) or the catalog's. Blocks. Call after
 * ana_metric_service_bind. */
/* Turns the values of filters on encrypted fields (ENCRYPTED_FIELDS) into
 * their blind indexes, in place (new values in a), as a metric's stored
 * filters are; INVALID_ARGUMENT naming filters[i] for an operator other
 * than eq, neq, in or exists on such a field. A no-op without
 * ENCRYPTED_FIELDS. */
int ana_metric_service_blind_filters(const char *account, Analytics__V1__MetricFilter **filters,
                                     size_t n, struct ana_arena *a, struct ana_error *err);

/* What background work running with roles (a report's or an alert's
 * creator's) shows for value, a value of dimension: value itself unless
 * dimension is encrypted (ENCRYPTED_FIELDS) and value a blind index; then
 * ANA_CRYPTO_MASK without pii:read, else the clear value (that of an event
 * of the account with from_ms <= timestamp < to_ms carrying it; value
 * itself when none is found or the field is not a top-level property). In
 * arena. Blocks (one search). Call after ana_metric_service_bind. */
const char *ana_metric_service_reveal(const char *account, const char *const *roles, size_t n_roles,
                                      const char *dimension, const char *value, int64_t from_ms,
                                      int64_t to_ms, struct ana_arena *a);

int ana_metric_service_resolve(const char *account, const char *id_or_name, struct ana_arena *arena,
                               Analytics__V1__Metric **metric, struct ana_formula **formula,
                               struct ana_error *err);

struct ana_alerts;

struct ana_alert_service_options {
  const struct ana_catalog_ops *catalog_ops; /* the rules */
  void *catalog;
  struct ana_workers *workers;
  struct ana_alerts *alerts; /* the evaluator; borrowed */
  struct ana_realtime *hub;  /* StreamAlerts; NULL: unbound */
  struct ana_notify *notify; /* channels named by rules; NULL: none resolve */
};

/* Binds AlertService and RealtimeService.StreamAlerts. Call after
 * ana_metric_service_bind (rules resolve their metric through it). */
int ana_alert_service_bind(const struct ana_alert_service_options *o);

struct ana_key_service_options {
  struct ana_api_keys *keys; /* borrowed; must outlive the transports */
  struct ana_workers *workers;
  struct ana_crypto *crypto; /* borrowed; field encryption's data keys */
};

/* Binds KeyService (CreateKey, ListKeys, GetKey, RevokeKey, ListDataKeys,
 * RotateDataKey). The options are copied. */
int ana_key_service_bind(const struct ana_key_service_options *o);

struct ana_audit;

struct ana_audit_service_options {
  struct ana_audit *audit; /* borrowed; must outlive the transports */
  struct ana_workers *workers;
  const char *default_account_id; /* where authentication failures are recorded (borrowed) */
};

/* Binds AuditService (ListAuditRecords) and sets the call runtime's finish
 * hook that records audited calls and authentication failures. */
int ana_audit_service_bind(const struct ana_audit_service_options *o);

struct ana_notify;

struct ana_channel_service_options {
  struct ana_notify *notify; /* borrowed; must outlive the transports */
  struct ana_workers *workers;
};

/* Binds ChannelService (CreateChannel, ListChannels, GetChannel,
 * UpdateChannel, DeleteChannel, TestChannel). The options are copied. */
int ana_channel_service_bind(const struct ana_channel_service_options *o);

struct ana_report_service_options {
  const struct ana_catalog_ops *catalog_ops; /* the report definitions */
  void *catalog;
  const struct ana_event_store_ops *store_ops; /* what templates read */
  void *store;
  struct ana_local_db *db; /* the runs */
  struct ana_workers *workers;
  const char *reports_dir; /* REPORTS_DIR */
  int report_workers, queue_max, retention_days, max_attempts;
  bool rollups;      /* REPORT_ROLLUPS: counts from matching metrics' rollups */
  bool auto_rollups; /* REPORT_AUTO_ROLLUPS: counts no metric holds kept as rollups */
  /* ENCRYPTED_FIELDS configured: a report rendered with pii:read (its
   * creator's) is downloaded only with pii:read. */
  bool encrypted;
  /* With encrypted: report files are sealed at rest with the account's data
   * key (ana_crypto_file_seal) and opened when downloaded. */
  struct ana_crypto *crypto;
};

/* Starts the report runner (resuming the runs a stop interrupted) and binds
 * ReportService. NULL runner: err filled. Call after ana_metric_service_bind
 * (templates resolve metrics). */
int ana_report_service_start(const struct ana_report_service_options *o, struct ana_error *err);
/* Stops the report runner; after the transports. */
void ana_report_service_stop(void);

#endif
