/* Storage roles. Each role is a table of operations a backend implements;
 * backends register in registry.c and are selected by configuration. Every
 * operation takes the account it acts for: no call reads across accounts.
 *
 * The embedded SQLite database (the "local database") is always present: it
 * holds the deduplication keys and, with the embedded backend, the events
 * themselves, so that an event and its key commit in one transaction. */
#ifndef ANA_STORE_H
#define ANA_STORE_H

#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_local_db;

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

/* The event store role. */
struct ana_event_store_ops {
  const char *name;
  /* Opens the store on the local database (and its own server, if any).
   * Called once at start-up; may block. Returns NULL with err filled. */
  void *(*open)(struct ana_local_db *db, struct ana_error *err);
  /* Stores records[i] for each i with !records[i].duplicate, setting seq.
   * Runs inside the transaction the committer opened on the local database
   * and may block; nothing is durable until that transaction commits. */
  int (*append)(void *store, struct ana_event_record *records, size_t n, struct ana_error *err);
  /* Calls hit for each match, newest first (timestamp, then eventId,
   * descending), at most q->limit times. Thread-safe; blocks. */
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
  /* Deletes at most max_rows events with timestamp < cutoff_ms, in the
   * committer's transaction; returns how many, or a negative error. */
  int (*expire)(void *store, int64_t cutoff_ms, int max_rows, struct ana_error *err);
  /* Closes the store; NULL does nothing. */
  void (*close)(void *store);
};

/* The catalog role: user-defined objects (metrics, reports, alerts) of one
 * account, each stored whole as a serialized message, with a name that is
 * unique per account and kind. */
struct ana_catalog_object {
  const char *kind; /* "metric", "report", "alert" */
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

/* The event store selected by configuration ("sqlite" today). */
const struct ana_event_store_ops *ana_store_event_backend(const char *name);

/* --- the local database --- */

/* Opens (creating if needed) DATA_DIR/analytics.db in WAL mode with
 * synchronous=FULL and applies pending schema migrations. Returns NULL with
 * err filled: its code is RESOURCE_EXHAUSTED and its message starts with
 * "the disk is full" when SQLite could not write for lack of space (a new
 * database on a full disk), which a later try may overcome. */
struct ana_local_db *ana_local_db_open(const char *data_dir, struct ana_error *err);
void ana_local_db_close(struct ana_local_db *db);

/* Pages appended to the WAL after which the checkpoint thread copies them
 * into the database (WAL_CHECKPOINT_MB; 32,768 pages until set). */
void ana_local_db_set_checkpoint_pages(struct ana_local_db *db, int pages);

/* How long a free-text search waits for the search index to reach the last
 * committed event (SEARCH_INDEX_WAIT; 5,000 ms until set; 0: not at all). */
void ana_local_db_set_search_index_wait_ms(struct ana_local_db *db, int ms);
int ana_local_db_search_index_wait_ms(struct ana_local_db *db);

/* Path of the database file (borrowed). */
const char *ana_local_db_path(const struct ana_local_db *db);

/* Schema version after migrations. */
int ana_local_db_schema_version(struct ana_local_db *db);

/* Write transactions, used only by the committer thread: BEGIN IMMEDIATE,
 * COMMIT (durable when it returns 0), ROLLBACK. */
int ana_local_db_begin(struct ana_local_db *db, struct ana_error *err);
int ana_local_db_commit(struct ana_local_db *db, struct ana_error *err);
void ana_local_db_rollback(struct ana_local_db *db);

/* A new read-write connection with the same settings, for a role that
 * writes on its own (the catalog, rollups); it never checkpoints (the local
 * database's checkpoint thread does, for every connection). Close it with
 * sqlite3_close before the local database. */
void *ana_local_db_connect(struct ana_local_db *db, struct ana_error *err);

/* The writer connection (for the committer's stages) and a pooled reader
 * (for searches; return it with ana_local_db_release_reader). The reader
 * call blocks while all readers are busy. Both are sqlite3 handles. */
void *ana_local_db_writer(struct ana_local_db *db);

/* A statement on the writer connection, prepared on first use and kept
 * until close, found by the address of sql (a string with static storage:
 * the same text at two addresses is two entries). Reset, bindings cleared.
 * For statements run inside every commit; only on the committer's thread.
 * NULL when it cannot be prepared (sqlite3_errmsg of the writer says why). */
void *ana_local_db_writer_statement(struct ana_local_db *db, const char *sql);
void *ana_local_db_acquire_reader(struct ana_local_db *db);
void ana_local_db_release_reader(struct ana_local_db *db, void *reader);

/* Whether the store cannot write (for readiness): the last commit failed
 * for lack of space or an I/O error (cleared by the next successful commit,
 * or by ana_local_db_check_space finding room 5 s later), or DATA_DIR has
 * less free space than the minimum. */
bool ana_local_db_degraded(const struct ana_local_db *db);

/* The free space DATA_DIR must have for commits (STORE_MIN_FREE_MB in
 * bytes); below it ana_local_db_begin fails with UNAVAILABLE. 0: no check. */
void ana_local_db_set_min_free_bytes(struct ana_local_db *db, int64_t bytes);

/* Whether the filesystem of dir has at least min_free_bytes available
 * (statvfs; true when min_free_bytes <= 0 or it cannot tell). */
bool ana_local_db_dir_has_room(const char *dir, int64_t min_free_bytes);

/* Measures DATA_DIR's free space (statvfs) against the minimum; returns
 * true when there is room. Cheap; call it about once a second. */
bool ana_local_db_check_space(struct ana_local_db *db);

#endif
