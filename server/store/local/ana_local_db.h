/* The local database: the always-present SQLite database in DATA_DIR (its
 * file analytics.db) that holds what must commit together with an event's
 * acknowledgement, whatever the event store: the deduplication keys and the
 * spool of committed events (which a remote event store drains; the embedded
 * event store reads it in place), and the state of rollups, jobs and the
 * outbox. This header is its typed API; the raw SQLite connections are the
 * store's own (local_db_sql.h). */
#ifndef ANA_LOCAL_DB_H
#define ANA_LOCAL_DB_H

#include "ana_store.h"

#include <stdbool.h>
#include <stdint.h>

struct ana_local_db;

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

/* Path of the database file (borrowed). */
const char *ana_local_db_path(const struct ana_local_db *db);

/* Schema version after migrations. */
int ana_local_db_schema_version(struct ana_local_db *db);

/* Write transactions, used only by the committer thread: BEGIN IMMEDIATE,
 * COMMIT (durable when it returns 0), ROLLBACK. */
int ana_local_db_begin(struct ana_local_db *db, struct ana_error *err);
int ana_local_db_commit(struct ana_local_db *db, struct ana_error *err);
void ana_local_db_rollback(struct ana_local_db *db);

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

/* --- deduplication keys (dedupe_keys.c) --- */

/* Claims (account, eventId) for each record inside the open transaction
 * (ana_local_db_begin); records whose key exists get duplicate = true (also
 * a repeat within the same batch). Committer thread only. Returns 0 or a
 * negative error. */
int ana_local_dedupe_claim(struct ana_local_db *db, struct ana_event_record *records, size_t n,
                           struct ana_error *err);

/* Deletes at most max_rows keys expired at now_ms, inside the open
 * transaction; returns how many, or a negative error. */
int ana_local_dedupe_expire(struct ana_local_db *db, int64_t now_ms, int max_rows,
                            struct ana_error *err);

/* --- the spool of committed events (spool.c) --- */

/* Writes records[i] for each i with !records[i].duplicate into the spool,
 * setting seq (increasing), inside the open transaction: nothing is durable
 * until it commits. Committer thread only. */
int ana_local_spool_append(struct ana_local_db *db, struct ana_event_record *records, size_t n,
                           struct ana_error *err);

/* Receives a batch of spooled events, in sequence order; valid during the
 * call. Returns 0 or a negative error (which the take returns). */
typedef int (*ana_spool_batch_fn)(void *ctx, const struct ana_spooled_event *events, size_t n,
                                  struct ana_error *err);

/* The shipper's side: calls fn once with at most max spooled events with
 * seq > after_seq, in sequence order (not at all when there are none).
 * Thread-safe; blocks. Returns how many, or a negative error. */
int ana_local_spool_take(struct ana_local_db *db, uint64_t after_seq, int max,
                         ana_spool_batch_fn fn, void *ctx, struct ana_error *err);

/* The highest sequence number in the spool (0 when empty). */
int ana_local_spool_last_seq(struct ana_local_db *db, uint64_t *out, struct ana_error *err);

/* --- the catalog of event names (event_names_table.c) --- */

struct ana_local_names;

/* One (account, name) and its events; strings borrowed. */
struct ana_local_name_count {
  const char *account, *name;
  int64_t count, first_ms, last_ms;
  bool added; /* set by ana_local_names_store: new to the account */
};

/* Receives one row; valid during the call. Non-zero stops a listing. */
typedef int (*ana_local_name_count_fn)(void *ctx, const struct ana_local_name_count *c);
/* Hears a name refused because its account has max_names already. */
typedef void (*ana_local_names_full_fn)(void *ctx, const char *account, const char *name);

/* Opens the catalog's own writing connection; *watermark receives the
 * stored watermark, *last_seq the spool's last sequence. NULL with err. */
struct ana_local_names *ana_local_names_open(struct ana_local_db *db, uint64_t *watermark,
                                             uint64_t *last_seq, struct ana_error *err);
void ana_local_names_close(struct ana_local_names *ln);

/* Adds items (sorted by account) to the catalog, new names only while their
 * account has fewer than max_names (full hears the others), and stores the
 * watermark, in one transaction; sets each item's added. Blocks. */
int ana_local_names_store(struct ana_local_names *ln, struct ana_local_name_count *items, size_t n,
                          int max_names, uint64_t watermark, ana_local_names_full_fn full,
                          void *ctx, struct ana_error *err);

/* Calls fn with each (account, name) of the spooled events with after_seq <
 * seq <= upto_seq and their count, first and last receive time. Returns how
 * many, or a negative error. */
int ana_local_names_rebuild(struct ana_local_names *ln, uint64_t after_seq, uint64_t upto_seq,
                            ana_local_name_count_fn fn, void *ctx, struct ana_error *err);

/* The account's names > after starting with prefix, by name, at most limit
 * (a pooled reader; thread-safe). */
int ana_local_names_list(struct ana_local_db *db, const char *account_id, const char *prefix,
                         const char *after, int limit, ana_local_name_count_fn fn, void *ctx,
                         struct ana_error *err);

#endif
