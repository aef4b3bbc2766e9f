/* Storage roles: the event store, the search index and the catalog (and the
 * API-key and audit stores, declared with the keys and the audit log). Each
 * role is a table of operations a backend implements, with the role's
 * version; backends live one folder each (store/sqlite/, and the coming
 * store/clickhouse/, store/elasticsearch/, store/mongodb/), register in
 * registry.c and are chosen by configuration. Every operation takes the
 * account it acts for: no call reads across accounts.
 *
 * The local SQLite database (store/local/ana_local_db.h) is always present:
 * it holds the deduplication keys and the spool of committed events, so that
 * an event and its key commit in one transaction whatever the event store.
 * With the embedded (sqlite) event store the spool is the event store. */
#ifndef ANA_STORE_H
#define ANA_STORE_H

#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_local_db;
struct ana_store_settings;

/* One validated, enriched event ready to be stored. Strings and payload are
 * borrowed from the request for the duration of the append. */
struct ana_event_record {
  const char *account_id;
  const char *event_id;
  const char *session_id; /* "" when absent */
  const char *event_type;
  const char *event_name;
  int64_t timestamp_ms; /* as stored, after any correction */
  int64_t received_at_ms;
  int64_t expires_at_ms;       /* when retention deletes it (and its dedupe key) */
  const char *properties_json; /* JSON object text, "{}" when none */
  const char *search_text;     /* names and property values, for free-text search */
  const uint8_t *payload;      /* the serialized analytics.v1.Event as stored */
  size_t payload_len;
  /* Filled by the commit: */
  bool duplicate; /* its (account, eventId) was stored before */
  uint64_t seq;   /* commit sequence number when stored */
};

/* A search over one account's events, newest first. */
struct ana_event_query {
  const char *account_id;
  int64_t from_ms;        /* inclusive; INT64_MIN = unbounded */
  int64_t to_ms;          /* exclusive; INT64_MAX = unbounded */
  const char *event_type; /* NULL or "" = any */
  const char *event_name;
  const char *session_id;
  const char *const *property_keys; /* equality on top-level properties */
  const char *const *property_values;
  size_t n_properties;
  const char *text; /* free text over names and property values; NULL = none */
  int limit;
  bool after_cursor; /* continue after (cursor_ts, cursor_event_id) */
  int64_t cursor_ts;
  const char *cursor_event_id;
};

/* Receives one search hit; the pointers are valid during the call. Return
 * non-zero to stop. */
typedef int (*ana_event_hit_fn)(void *ctx, const uint8_t *payload, size_t payload_len,
                                int64_t timestamp_ms, const char *event_id, uint64_t seq);

/* One event as a scan sees it; pointers are valid during the call. */
struct ana_scanned_event {
  int64_t timestamp_ms;
  const char *event_id;
  const char *event_type;
  const char *event_name;
  const char *session_id;
  const char *properties_json;
  uint64_t seq;
};

/* Receives one scanned event. Non-zero stops the scan. */
typedef int (*ana_event_scan_fn)(void *ctx, const struct ana_scanned_event *ev);
/* Another instance sharing an event store, and the sequence up to which its events are all in
 * it (other_bounds). Non-zero stops and is returned. */
typedef int (*ana_other_bound_fn)(void *ctx, const char *instance, uint64_t seq);

/* A metric aggregation a store may run itself (the event store's optional
 * aggregate): per group of dimension values and per time bucket, each term's
 * count, sum, min and max. Pointers are borrowed for the call. */
struct ana_event_agg_term {
  const char *event_name; /* NULL: every event the query reads */
  const char *property;   /* NULL: count the events; else a top-level property, or an event
                             field (eventType, eventName, sessionId, eventId) when not numeric */
  bool numeric;           /* count, sum, min, max of property's numbers; else count where present */
  bool numbers;           /* numeric: also every number counted (percentiles) */
  bool distinct;          /* not numeric: also the distinct texts of the values (uniq) */
};

/* A filter of the aggregation, on an event field or a top-level property (see dimensions). */
struct ana_event_agg_filter {
  const char *field;
  const char *op;            /* "exists", "eq", "neq", "in", "contains" (strings), "gt", "gte",
                                "lt", "lte" (number) */
  const char *const *values; /* the strings eq, neq, contains (one) and in compare with */
  size_t n_values;
  double number;
};

struct ana_event_agg_query {
  const char *account_id;
  /* Events with from_ms <= timestamp < split_ms count in the previous period (one cell per
   * group); split_ms <= timestamp < to_ms in buckets. */
  int64_t from_ms, split_ms, to_ms;
  const char *const *names; /* restricts to these event names when n_names > 0 */
  size_t n_names;
  const char *interval;  /* "1m", "5m", "1h", "1d": buckets aligned in time_zone */
  const char *time_zone; /* IANA; "" or NULL: UTC */
  const struct ana_event_agg_term *terms;
  size_t n_terms;
  const char *const *dimensions; /* field paths (eventType, eventName, sessionId, eventId or a
                                    property) */
  size_t n_dimensions;
  const struct ana_event_agg_filter *filters; /* all must match */
  size_t n_filters;
};

/* One term's values beyond its scalars, in one group and bucket (borrowed for the call). */
struct ana_event_agg_values {
  const double *numbers; /* a numbers term's numbers, in no particular order */
  size_t n_numbers;
  const char *texts; /* a distinct term's distinct texts, each NUL-terminated, one after another */
  size_t n_texts;
};

/* Receives one group's aggregates of one bucket (bucket_ms its start; INT64_MIN: the
 * previous period): group_key the dimension values joined by '\x1f' (a missing value as "",
 * each cut to 127 bytes), aggs 4 doubles per term (count, sum, min, max; min and max only
 * when count > 0), values one per term (empty for terms that want neither numbers nor
 * distinct texts). Non-zero stops. */
typedef int (*ana_event_agg_fn)(void *ctx, const char *group_key, int64_t bucket_ms,
                                const double *aggs, const struct ana_event_agg_values *values);

/* One committed event as the spool hands it to a shipper; pointers are
 * valid during the call that hands it. */
struct ana_spooled_event {
  uint64_t seq; /* commit sequence number, increasing */
  const char *account_id;
  const char *event_id;
  const char *session_id;
  const char *event_type;
  const char *event_name;
  int64_t timestamp_ms;
  int64_t received_at_ms;
  const char *properties_json;
  const char *search_text;
  const uint8_t *payload;
  size_t payload_len;
};

/* Role versions: a backend's table carries the version it was written
 * against; the registry refuses to start with any other. Raise one when a
 * role's operations or their contract change. */
#define ANA_EVENT_STORE_VERSION 5
#define ANA_SEARCH_INDEX_VERSION 2
#define ANA_CATALOG_VERSION 1

/* How far an event store that ships from the spool is behind (status). */
struct ana_event_store_status {
  bool degraded;         /* the last shipping attempt failed, or the store is not reachable */
  bool full;             /* the spool bound is reached: commits are refused */
  uint64_t lag_events;   /* committed events not yet confirmed by the store */
  double lag_seconds;    /* age of the oldest of them (0 when none) */
  int64_t pending_bytes; /* their size in the spool, as the bound counts it */
  int64_t max_bytes;     /* the bound (SPOOL_MAX_BYTES) */
  char reason[512];      /* why degraded or full; "" otherwise */
};

/* The event store role.
 *
 * Acknowledgement and shipping: the committer acknowledges an event once it
 * is committed to the local database's spool with its deduplication key
 * (ana_local_spool_append, in one transaction with ana_local_dedupe_claim).
 * A store that is not the local database drains the spool in commit-sequence
 * order through the shipper contract: the shipper (ana_store_ship_batch,
 * below) takes a batch of spooled events after the sequence the store last
 * confirmed (ana_local_spool_take), hands it to ship, and the store confirms the
 * highest sequence it holds durably (shipped_seq); the shipper never skips a
 * sequence and may hand a batch again after a crash, so ship must be
 * idempotent on seq. Reads (search, scan, scan_seq, last_seq) see only
 * shipped events. The embedded store keeps its events in the spool itself:
 * its ship has nothing to do and shipped_seq is the spool's last sequence. */
struct ana_event_store_ops {
  int version; /* ANA_EVENT_STORE_VERSION */
  const char *name;
  /* Opens the store on the local database (and its own server, if any).
   * Called once at start-up; may block. Returns NULL with err filled. */
  void *(*open)(struct ana_local_db *db, struct ana_error *err);
  /* Stores events[0..n) (consecutive spool entries, increasing seq), off the
   * commit path, on the shipper's thread; may block. Returns 0 when all are
   * durable, or a negative error (the shipper hands them again later). */
  int (*ship)(void *store, const struct ana_spooled_event *events, size_t n, struct ana_error *err);
  /* The highest sequence number the store holds durably, every one below it
   * included (0 when none): where the shipper resumes. Thread-safe; may
   * block. */
  int (*shipped_seq)(void *store, uint64_t *out, struct ana_error *err);
  /* Calls hit for each match, newest first (timestamp, then eventId,
   * descending), at most q->limit times. Free text (q->text) is the search
   * index's: the store refuses it (INVALID_ARGUMENT). Thread-safe; blocks. */
  int (*search)(void *store, const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                struct ana_error *err);
  /* Calls fn for every event of the account with from_ms <= timestamp <
   * to_ms, restricted to the given event names when n_names > 0, in no
   * particular order. Thread-safe; blocks. */
  int (*scan)(void *store, const char *account_id, int64_t from_ms, int64_t to_ms,
              const char *const *names, size_t n_names, ana_event_scan_fn fn, void *ctx,
              struct ana_error *err);
  /* Calls fn for every event of the account with after_seq < seq <=
   * upto_seq, in commit-sequence order (whatever their timestamps): what
   * rollups replay after their persisted watermark. Thread-safe; blocks. */
  int (*scan_seq)(void *store, const char *account_id, uint64_t after_seq, uint64_t upto_seq,
                  ana_event_scan_fn fn, void *ctx, struct ana_error *err);
  /* The highest commit sequence number stored (0 when none). Thread-safe;
   * blocks. */
  int (*last_seq)(void *store, uint64_t *out, struct ana_error *err);
  /* Deletes at most max_rows events with timestamp < cutoff_ms and seq <=
   * upto_seq, calling before_delete (when not NULL) with their references
   * (ana_local_event_ref) first; a failing before_delete deletes nothing.
   * Called on the committer's thread between commits, inside its
   * transaction on the local database; may block. Returns how many, or a
   * negative error. */
  int (*expire)(void *store, int64_t cutoff_ms, uint64_t upto_seq, int max_rows,
                int (*before_delete)(void *ctx, const int64_t *refs, size_t n,
                                     struct ana_error *err),
                void *ctx, struct ana_error *err);
  /* Closes the store; NULL does nothing. */
  void (*close)(void *store);
  /* Optional (NULL: always admits). Whether a commit may add events to the
   * spool: 0, or ANA_ERR_FULL with err UNAVAILABLE saying why (the events
   * not yet shipped fill the spool's bound). Called by the committer before
   * each commit; must not block. */
  int (*admit)(void *store, struct ana_error *err);
  /* Optional. Hears each committed request's records (duplicates included,
   * flagged), on the commit thread after the commit; must not block. */
  void (*committed)(void *store, const struct ana_event_record *records, size_t n);
  /* Optional (NULL: never behind). Fills st; thread-safe, does not block. */
  void (*status)(void *store, struct ana_event_store_status *st);
  /* Optional (NULL: never). Runs q itself where it can match the metric engine's reading of
   * events exactly: calls agg with the aggregates of the events it holds and rows with each
   * event it aggregates no other way (e.g. not yet shipped), which the caller aggregates.
   * Returns 1 when done, 0 when it cannot answer q exactly (then it called neither, and the
   * caller scans), or a negative error. Thread-safe; blocks. */
  int (*aggregate)(void *store, const struct ana_event_agg_query *q, ana_event_agg_fn agg,
                   ana_event_scan_fn rows, void *ctx, struct ana_error *err);
  /* Optional (NULL: stored events are never rewritten). In one transaction, replaces the
   * properties, free text and payload of each stored event with commit sequence records[i].seq
   * and timestamp records[i].timestamp_ms of records[i].account_id by the record's (its other
   * fields are not read), leaving no copy
   * of the old values in the store's free space where it can. An event that is gone (retention)
   * is skipped. Thread-safe; blocks (a short write: callers keep n small, so that commits are
   * not held up). Returns how many were rewritten, or a negative error (none was). */
  int (*rewrite)(void *store, const struct ana_event_record *records, size_t n,
                 struct ana_error *err);
  /* Optional (NULL: the store holds this instance's events only). For each other instance
   * that commits to the same store (in its own commit sequence), calls fn with the sequence up
   * to which every event it committed is in the store. Thread-safe; blocks. */
  int (*other_bounds)(void *store, ana_other_bound_fn fn, void *ctx, struct ana_error *err);
  /* Optional (with other_bounds). Calls fn for every event of the account that another
   * instance committed with after_seq < seq <= upto_seq (at most its bound), each once, in no
   * particular order: what rollups read besides their replay of this instance's commit
   * sequence. Thread-safe; blocks. */
  int (*scan_other)(void *store, const char *account_id, const char *instance, uint64_t after_seq,
                    uint64_t upto_seq, ana_event_scan_fn fn, void *ctx, struct ana_error *err);
};

/* The search index role: free text over the events' names and property
 * values, built after commit (off the commit path) from the committed
 * events, with a watermark: every event up to indexed_seq is indexed. */
struct ana_search_index_ops {
  int version; /* ANA_SEARCH_INDEX_VERSION */
  const char *name;
  /* Opens (creating or rebuilding if needed) the index of the events
   * committed to the local database and starts indexing. Called once at
   * start-up; may block. Returns NULL with err filled. */
  void *(*open)(struct ana_local_db *db, struct ana_error *err);
  /* Optional (NULL: the index follows the committed events by itself).
   * Events up to seq are committed: index them soon. Called on the commit
   * thread after each commit; must not block. */
  void (*committed)(void *index, uint64_t seq);
  /* The watermark: the highest commit sequence number indexed so far (all
   * below it are). Thread-safe; does not block. */
  uint64_t (*indexed_seq)(void *index);
  /* Waits until every event up to seq is indexed, at most timeout_ms; on
   * time-out fails with UNAVAILABLE saying how far the index is. */
  int (*wait)(void *index, uint64_t seq, int timeout_ms, struct ana_error *err);
  /* Like the event store's search, with q->text: calls hit for each match,
   * newest first, at most q->limit times. Thread-safe; blocks. */
  int (*search)(void *index, const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                struct ana_error *err);
  /* Removes the entries of these (indexed) events, named by their
   * references (ana_local_event_ref), durably, before the event store
   * deletes them (retention). The events are still stored. */
  int (*remove)(void *index, const int64_t *refs, size_t n, struct ana_error *err);
  void (*close)(void *index);
  /* Optional (NULL: the index cannot follow rewritten events). Indexes these events again
   * from their stored text, durably: after their entries were removed (remove) and their text
   * rewritten (the event store's rewrite). An event with an entry, not yet indexed or gone is
   * skipped, so a repeat after a crash is harmless. Thread-safe; blocks. */
  int (*reindex)(void *index, const int64_t *refs, size_t n, struct ana_error *err);
  /* Optional. Rewrites the index so that nothing of removed entries is left in its files
   * (merged away, freed pages zeroed, its log emptied). Thread-safe; blocks (long). */
  int (*compact)(void *index, struct ana_error *err);
};

/* The catalog role: user-defined objects of one account, each stored whole
 * as a serialized message, with a name that is unique per account and
 * kind. The kinds: */
#define ANA_CATALOG_METRIC "metric"
#define ANA_CATALOG_REPORT "report"
#define ANA_CATALOG_REPORT_RUN "report_run"
#define ANA_CATALOG_REPORT_TEMPLATE "report_template"
#define ANA_CATALOG_ALERT "alert"
#define ANA_CATALOG_CHANNEL "channel"
#define ANA_CATALOG_API_KEY "api_key"

struct ana_catalog_object {
  const char *kind; /* one of ANA_CATALOG_* */
  const char *account_id;
  const char *id;
  const char *name;    /* unique per (account, kind); NULL = unnamed */
  const uint8_t *body; /* the serialized message */
  size_t body_len;
  int64_t created_at_ms, updated_at_ms;
};

/* Receives one object; pointers are valid during the call. Non-zero stops. */
typedef int (*ana_catalog_object_fn)(void *ctx, const struct ana_catalog_object *o);

struct ana_catalog_ops {
  int version; /* ANA_CATALOG_VERSION */
  const char *name;
  void *(*open)(struct ana_local_db *db, struct ana_error *err);
  /* Inserts (create = true: ALREADY_EXISTS when the id or the name is taken)
   * or replaces an existing object (create = false: NOT_FOUND when absent,
   * ALREADY_EXISTS when the new name belongs to another object). Durable when
   * it returns. Thread-safe; blocks. */
  int (*put)(void *cat, const struct ana_catalog_object *o, bool create, struct ana_error *err);
  /* Calls fn once with the object, or returns ANA_ERR_NOT_FOUND. */
  int (*get)(void *cat, const char *kind, const char *account_id, const char *id,
             ana_catalog_object_fn fn, void *ctx, struct ana_error *err);
  int (*get_by_name)(void *cat, const char *kind, const char *account_id, const char *name,
                     ana_catalog_object_fn fn, void *ctx, struct ana_error *err);
  /* Objects with id > after (all when after is NULL or ""), by id, at most
   * limit. */
  int (*list)(void *cat, const char *kind, const char *account_id, const char *after, int limit,
              ana_catalog_object_fn fn, void *ctx, struct ana_error *err);
  /* Deletes; ANA_ERR_NOT_FOUND when absent. */
  int (*remove)(void *cat, const char *kind, const char *account_id, const char *id,
                struct ana_error *err);
  void (*close)(void *cat);
};

/* --- the registry (registry.c) --- */

/* A backend of a role by name ("sqlite"), checked (see below); NULL when
 * none has that name or it fails the checks (err says why; may be NULL). */
const struct ana_event_store_ops *ana_store_event_backend(const char *name);
const struct ana_search_index_ops *ana_store_search_backend(const char *name);
const struct ana_catalog_ops *ana_store_catalog_backend(const char *name);

/* The API key store role (struct ana_api_key_store_ops, declared with the
 * keys in server/auth/ana_api_keys.h). */
struct ana_api_key_store_ops;
const struct ana_api_key_store_ops *ana_store_api_key_backend(const char *name);

/* The audit store role (struct ana_audit_store_ops, in server/auth/ana_audit.h). */
struct ana_audit_store_ops;
const struct ana_audit_store_ops *ana_store_audit_backend(const char *name);

/* The data key store role (struct ana_data_key_store_ops, in server/crypto/ana_crypto.h). */
struct ana_data_key_store_ops;
const struct ana_data_key_store_ops *ana_store_data_key_backend(const char *name);

/* Checks a backend's table: its version is the role's, and every mandatory
 * operation is set. Returns 0, or ANA_ERR_INVALID with err saying
 * "storage backend \"<name>\" (<role>): ..." naming the operation or the
 * versions. */
int ana_store_check_event_store(const struct ana_event_store_ops *ops, struct ana_error *err);
int ana_store_check_search_index(const struct ana_search_index_ops *ops, struct ana_error *err);
int ana_store_check_catalog(const struct ana_catalog_ops *ops, struct ana_error *err);
int ana_store_check_api_key_store(const struct ana_api_key_store_ops *ops, struct ana_error *err);
int ana_store_check_audit_store(const struct ana_audit_store_ops *ops, struct ana_error *err);

/* The backends configuration chooses, one per role. */
struct ana_store_selection {
  const struct ana_event_store_ops *events;
  const struct ana_search_index_ops *search;
  const struct ana_catalog_ops *catalog;
  const struct ana_api_key_store_ops *api_keys;
  const struct ana_audit_store_ops *audit;
};

/* Chooses each role's backend from the settings: CLICKHOUSE_HOST -> the
 * "clickhouse" event store, ELASTICSEARCH_NODE -> the "elasticsearch" search
 * index, MONGODB_URI -> the "mongodb" catalog, "sqlite" otherwise (also
 * while a configured backend is not built in: its variable is then reported
 * as not yet supported at start-up and ignored), and checks each. Returns 0,
 * or a negative error with err naming backend, role and operation. */
int ana_store_select(const struct ana_store_settings *cfg, struct ana_store_selection *out,
                     struct ana_error *err);

/* --- the shipper --- */

/* One step of the shipper: hands ops->ship the (at most max) spooled
 * events after the store's shipped_seq, in sequence order. Returns how many
 * were handed (0: the store has everything), or a negative error (nothing
 * is confirmed; the next step hands them again). On the shipper's thread;
 * blocks. */
int ana_store_ship_batch(struct ana_local_db *db, const struct ana_event_store_ops *ops,
                         void *store, int max, struct ana_error *err);

/* --- the roles together --- */

/* The open roles that reads and retention use together. Borrowed. */
struct ana_store_roles {
  const struct ana_event_store_ops *events;
  void *event_store;
  const struct ana_search_index_ops *search; /* NULL: no free-text search */
  void *search_index;
  int search_wait_ms; /* SEARCH_INDEX_WAIT: how long free text waits for the index */
};

/* A search: without free text the event store's; with it, the search
 * index's, once the index has every event committed so far (waiting at most
 * search_wait_ms, then UNAVAILABLE saying how far the index is). */
int ana_store_search(const struct ana_store_roles *r, const struct ana_event_query *q,
                     ana_event_hit_fn hit, void *ctx, struct ana_error *err);

/* Retention: deletes at most max_rows events older than cutoff_ms, each
 * after its search-index entry, and only indexed ones (so the index can
 * never add an entry for a deleted event; the rest follow in a later round).
 * Inside the committer's transaction; returns how many, or an error. */
int ana_store_expire(const struct ana_store_roles *r, int64_t cutoff_ms, int max_rows,
                     struct ana_error *err);

#endif
