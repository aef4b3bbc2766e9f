/* The local database: the always-present SQLite database in DATA_DIR that
 * holds what must commit together with an event's acknowledgement, whatever
 * the event store: the deduplication keys and the spool of committed events
 * (which a remote event store drains; the embedded event store reads it in
 * place), and the state of rollups, jobs and the outbox. It is two files,
 * each with its own write lock and WAL: the journal (analytics-journal.db),
 * all that the acknowledged commit writes (the staged events, the
 * deduplication keys' runs, the last sequence number), and analytics.db,
 * everything else (the events the mover moves there, the accounts'
 * numbers, rollups, catalog...), so that a commit never waits for the
 * mover's long transaction. This header is its typed API; the raw SQLite
 * connections are the store's own (local_db_sql.h). */
#ifndef ANA_LOCAL_DB_H
#define ANA_LOCAL_DB_H

#include "ana_store.h"

#include <stdbool.h>
#include <stdint.h>

struct ana_local_db;

/* Opens (creating if needed) DATA_DIR/analytics.db and its journal
 * DATA_DIR/analytics-journal.db in WAL mode with synchronous=FULL and
 * applies pending schema migrations (schema 27 moves the commit's tables of
 * an older store into the journal). Returns NULL with
 * err filled: its code is RESOURCE_EXHAUSTED and its message starts with
 * "the disk is full" when SQLite could not write for lack of space (a new
 * database on a full disk), which a later try may overcome. */
struct ana_local_db *ana_local_db_open(const char *data_dir, struct ana_error *err);
void ana_local_db_close(struct ana_local_db *db);

/* Pages appended to a WAL after which the checkpoint thread copies them
 * into the database (WAL_CHECKPOINT_MB; 32,768 pages until set); each file
 * (analytics.db, the journal) has its own WAL, thread and bound. It also
 * bounds the WAL: the event writer waits at BEGIN while the WAL holds 1.5
 * times as many pages not yet all copied (readers holding old snapshots),
 * and a WAL that starts over is cut to this size (journal_size_limit). */
void ana_local_db_set_checkpoint_pages(struct ana_local_db *db, int pages);

/* Gives up to max_pages free pages (what retention deleted, what the
 * merges of deduplication keys freed) of each file back to the file system,
 * in a transaction of its own on each file's writer (a database created
 * before schema 13 keeps them for reuse instead: nothing to do).
 * Committer thread only, between commits. Returns how many pages, or a
 * negative error. */
int ana_local_db_reclaim(struct ana_local_db *db, int max_pages, struct ana_error *err);

/* Copies every page of the WAL into the database and starts the WAL over
 * (a TRUNCATE checkpoint), on a connection of its own: for a tool that
 * fills the database in bulk, between its commits. Waits for a writer or
 * reader in the way up to the busy timeout. Returns 0, or ANA_ERR_IO with
 * err filled. */
int ana_local_db_checkpoint(struct ana_local_db *db, struct ana_error *err);

/* Path of the database file, analytics.db (borrowed). */
const char *ana_local_db_path(const struct ana_local_db *db);
/* Path of the journal file beside it (borrowed), and the journal's path
 * for a database file's (analytics.db -> analytics-journal.db; the
 * caller frees it; NULL when out of memory). */
const char *ana_local_db_journal_file(const struct ana_local_db *db);
char *ana_local_db_journal_path(const char *db_path);

/* Schema version after migrations. */
int ana_local_db_schema_version(struct ana_local_db *db);

/* Write transactions, used only by the committer thread: BEGIN IMMEDIATE,
 * COMMIT (durable when it returns 0), ROLLBACK, on the journal (claims of
 * deduplication keys, staged events): they take the journal's write lock
 * only. */
int ana_local_db_begin(struct ana_local_db *db, struct ana_error *err);
int ana_local_db_commit(struct ana_local_db *db, struct ana_error *err);
void ana_local_db_rollback(struct ana_local_db *db);
/* The same on analytics.db's writer (retention's deletes of events), its
 * write lock only; committer thread only, outside the transactions above. */
int ana_local_db_store_begin(struct ana_local_db *db, struct ana_error *err);
int ana_local_db_store_commit(struct ana_local_db *db, struct ana_error *err);
void ana_local_db_store_rollback(struct ana_local_db *db);

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

/* Tells the deduplication keys the UTC day of now_ms (retention's clock:
 * keys of the days before it may go) and returns how many keys expiry
 * dropped (whole runs, and keys left out of merges: dedupe_runs.c) since
 * the last call, at most max_rows; the merge thread does the work, in
 * transactions of its own. */
int ana_local_dedupe_expire(struct ana_local_db *db, int64_t now_ms, int max_rows,
                            struct ana_error *err);

/* DEDUPE_FILTER_MB: the bound of the runs' filters in memory (bytes). */
void ana_local_dedupe_set_limits(struct ana_local_db *db, size_t filter_bytes);
/* Holds (or lets go) the background merges; a merge under way is dropped
 * and done again later. For tests. */
void ana_local_dedupe_hold(struct ana_local_db *db, bool hold);
/* Runs the merges and expiry due at now_ms (UTC day), max_steps
 * transactions (0: until none is left), the one under way first; returns
 * the transactions taken, or a negative error. For tests. */
int ana_local_dedupe_maintain(struct ana_local_db *db, int64_t now_ms, int max_steps,
                              struct ana_error *err);
struct ana_dedupe_runs_stats {
  int64_t runs, keys, filter_bytes, unfiltered, dropped;
};
void ana_local_dedupe_stats(struct ana_local_db *db, struct ana_dedupe_runs_stats *out);

/* --- the spool of committed events (spool.c) --- */

/* Writes records[i] for each i with !records[i].duplicate into the spool,
 * setting seq (increasing), inside the open transaction: nothing is durable
 * until it commits. The events of one transaction are staged as one row of
 * the table events_staged (staging.c), which the mover moves into events
 * afterwards; every reader of the spool waits for it (see
 * ana_local_staging_wait). Committer thread only. */
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

/* Receives one spooled event, valid during the call.
 * Non-zero stops (a negative value is returned as the error). */
typedef int (*ana_spool_row_fn)(void *ctx, const struct ana_spooled_event *ev,
                                struct ana_error *err);

/* Like ana_local_spool_take without copies: calls fn for each of at most
 * max spooled events with seq > after_seq, in sequence order, on one read
 * snapshot. Thread-safe; blocks. Returns how many, or a negative error. */
int ana_local_spool_each(struct ana_local_db *db, uint64_t after_seq, int max, ana_spool_row_fn fn,
                         void *ctx, struct ana_error *err);
/* The same without decoding the search text (search_text is ""): for readers that do not use it
 * (the ClickHouse shipper and reads), a body decoded once instead of twice. */
int ana_local_spool_each_untexted(struct ana_local_db *db, uint64_t after_seq, int max,
                                  ana_spool_row_fn fn, void *ctx, struct ana_error *err);

/* An event's reference in the local database, by which the event store's
 * retention and rewrite and the search index's entries name it: its events
 * row's key (the UTC day of timestamp_ms times 2^40 plus seq). */
int64_t ana_local_event_ref(int64_t timestamp_ms, uint64_t seq);

/* The last sequence number committed (0 when none): at open the highest
 * stored (staged or not), then each commit's last, kept in memory (no SQL)
 * and set before the commit is acknowledged, so it covers every event
 * acknowledged before the call. Retention may since have deleted it. */
int ana_local_spool_last_seq(struct ana_local_db *db, uint64_t *out, struct ana_error *err);

/* --- staging (staging.c) --- */

/* Until set: STORE_STAGING_MAX_EVENTS and STORE_STAGING_WAIT's defaults. */
#define ANA_STAGING_DEFAULT_MAX_EVENTS 200000L
#define ANA_DEDUPE_DEFAULT_FILTER_MB 64
#define ANA_STAGING_DEFAULT_WAIT_MS 10000

/* The bound of the staged backlog (events committed and not yet moved into
 * events) and how long a commit waits for room in it. */
void ana_local_staging_set_limits(struct ana_local_db *db, long max_events, int wait_ms);

/* Before a commit of up to n events (committer thread, outside any
 * transaction): waits while the backlog holds more than the bound allows,
 * up to the wait; then 0, or ANA_ERR_FULL with err UNAVAILABLE. */
int ana_local_staging_admit(struct ana_local_db *db, size_t n, struct ana_error *err);

/* Waits (holding no connection) until every event with seq <= upto_seq
 * committed before the call is in the table events (UINT64_MAX: every
 * event committed so far): what a reader of the events table calls first,
 * so that it reads its writes. 0, or UNAVAILABLE after 60 s. Never call it
 * inside a write transaction (the mover needs the write lock). */
int ana_local_staging_wait(struct ana_local_db *db, uint64_t upto_seq, struct ana_error *err);

/* For tests: hold keeps the mover from moving until released. */
void ana_local_staging_hold(struct ana_local_db *db, bool hold);

/* A committed batch is handed to the mover in memory (not read back from
 * events_staged) while the batches waiting so hold at most this many bytes. */
#define ANA_STAGING_HANDOFF_BYTES ((size_t)64 << 20)
/* For tests: that bound. */
void ana_local_staging_set_handoff_bytes(struct ana_local_db *db, size_t max_bytes);

/* The mover's hand-over: after each move's commit, on the mover's thread,
 * fn(ctx, records, n) gets the events just moved into the table (in its
 * key order; valid during the call), so that a follower (the free-text
 * index) need not read them back. One follower at a time; fn NULL removes
 * it and returns once no call to it is running. */
typedef void (*ana_local_moved_fn)(void *ctx, const struct ana_event_record *records, size_t n);
void ana_local_db_follow_moves(struct ana_local_db *db, ana_local_moved_fn fn, void *ctx);

struct ana_local_staging_stats {
  uint64_t staged_events; /* committed, not yet moved */
  uint64_t staged_upto;   /* last sequence staged */
  uint64_t moved_upto;    /* every event up to it is in events */
  uint64_t moves;         /* the mover's transactions */
  uint64_t handed_off;    /* events moved from the in-memory handoff */
  uint64_t read_back;     /* events moved from events_staged (read back) */
};
void ana_local_staging_stats(struct ana_local_db *db, struct ana_local_staging_stats *out);

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

/* --- rollup cells and definitions (rollup_cells.c) --- */

struct ana_rollup_cells;
/* A connection to read cells from: the rollups' own, or a snapshot. */
struct ana_local_reader;

/* One stored definition; pointers valid during the call. */
struct ana_rollup_def {
  const char *metric_id, *account_id;
  int64_t version;
  const void *def;
  size_t len;
  uint64_t watermark, backfill_to;
};
typedef void (*ana_rollup_def_fn)(void *ctx, const struct ana_rollup_def *d);
/* A stored cell's state; valid during the call. Returns 0 or what the
 * caller wants returned. */
typedef int (*ana_rollup_blob_fn)(void *ctx, const void *state, size_t len);
/* One cell of a scan; valid during the call. Non-zero stops the scan and
 * is returned. */
typedef int (*ana_rollup_cell_fn)(void *ctx, int64_t bucket, const char *group_key,
                                  const void *state, size_t len);

/* Opens the rollups' two connections (the thread's, with busy as its busy
 * handler and synchronous=NORMAL, and one for definitions). NULL with err. */
struct ana_rollup_cells *ana_rollup_cells_open(struct ana_local_db *db,
                                               int (*busy)(void *ctx, int count), void *busy_ctx,
                                               struct ana_error *err);
void ana_rollup_cells_close(struct ana_rollup_cells *h);

/* Definitions (on their connection; the caller serializes these calls). */
int ana_rollup_cells_put_def(struct ana_rollup_cells *h, const char *metric_id,
                             const char *account_id, int64_t version, const void *def, size_t len,
                             uint64_t backfill_to, struct ana_error *err);
int ana_rollup_cells_forget_def(struct ana_rollup_cells *h, const char *metric_id,
                                struct ana_error *err);
int ana_rollup_cells_each_def(struct ana_rollup_cells *h, ana_rollup_def_fn fn, void *ctx,
                              struct ana_error *err);
/* A metric version's mark of another instance's events: those up to seq are in its cells.
 * Non-zero stops and is returned. */
typedef int (*ana_rollup_other_mark_fn)(void *ctx, const char *metric_id, int64_t version,
                                        const char *instance, uint64_t seq);
/* Calls fn for each stored mark of a current version (put_def and forget_def drop a metric's
 * marks). */
int ana_rollup_cells_each_other_mark(struct ana_rollup_cells *h, ana_rollup_other_mark_fn fn,
                                     void *ctx, struct ana_error *err);
/* The first stored (metric, version) of cells after (after_metric,
 * after_version): 1 with it, 0 when none, or a negative error. */
int ana_rollup_cells_next_version(struct ana_rollup_cells *h, const char *after_metric,
                                  int64_t after_version, char *metric_out, size_t cap,
                                  int64_t *version_out, struct ana_error *err);

/* The rollup thread's rounds, on its connection. prepare before the
 * others; a read transaction (begin_read/end_read) around merges, a write
 * transaction (begin_write, mark and put, commit or rollback). */
int ana_rollup_cells_prepare(struct ana_rollup_cells *h, struct ana_error *err);
bool ana_rollup_cells_begin_read(struct ana_rollup_cells *h);
void ana_rollup_cells_end_read(struct ana_rollup_cells *h);
/* Calls fn with the stored state of the cell and returns what it returns;
 * 0 when there is none; a negative error when it cannot be read. */
int ana_rollup_cells_merge(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                           int level, int64_t bucket, const char *group_key, ana_rollup_blob_fn fn,
                           void *ctx, struct ana_error *err);
int ana_rollup_cells_begin_write(struct ana_rollup_cells *h, struct ana_error *err);
/* Moves the version's watermark: 1, 0 when the version is no longer stored
 * (redefined or deleted), or a negative error. */
int ana_rollup_cells_mark(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                          uint64_t watermark, struct ana_error *err);
/* In the write transaction, after mark returned 1: the version's cells now include instance's
 * events up to seq (another instance sharing the event store). */
int ana_rollup_cells_mark_other(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                                const char *instance, uint64_t seq, struct ana_error *err);
int ana_rollup_cells_put(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                         int level, int64_t bucket, const char *group_key, const void *state,
                         size_t len, struct ana_error *err);
int ana_rollup_cells_commit(struct ana_rollup_cells *h, struct ana_error *err);
void ana_rollup_cells_rollback(struct ana_rollup_cells *h);
/* Deletes at most limit cells of the metric's versions below `below`;
 * returns how many (0 also when it cannot). */
int ana_rollup_cells_drop_versions(struct ana_rollup_cells *h, const char *metric_id, int64_t below,
                                   int limit);
/* Deletes at most limit cells of the version's level with bucket <=
 * last_bucket; returns how many, or a negative error. */
int ana_rollup_cells_expire(struct ana_rollup_cells *h, const char *metric_id, int64_t version,
                            int level, int64_t last_bucket, int limit, struct ana_error *err);

/* Reading: the thread's own connection (borrowed from h), or a snapshot
 * of a pooled reader (ana_local_snapshot_begin; end it with
 * ana_local_snapshot_end). */
struct ana_local_reader *ana_rollup_cells_reader(struct ana_rollup_cells *h);
struct ana_local_reader *ana_local_snapshot_begin(struct ana_local_db *db, struct ana_error *err);
void ana_local_snapshot_end(struct ana_local_db *db, struct ana_local_reader *rd);
/* The version's watermark and backfill target: 1, 0 when it is not
 * stored, or a negative error. */
int ana_rollup_cells_version(struct ana_local_reader *rd, const char *metric_id, int64_t version,
                             uint64_t *watermark, uint64_t *backfill_to, struct ana_error *err);
/* Calls fn for each cell of the version's level with lo <= bucket < hi,
 * by bucket ascending. Returns 0, fn's non-zero result, or a negative
 * error. */
int ana_rollup_cells_scan(struct ana_local_reader *rd, const char *metric_id, int64_t version,
                          int level, int64_t lo, int64_t hi, ana_rollup_cell_fn fn, void *ctx,
                          struct ana_error *err);

/* --- report runs: job state (report_runs.c) --- */

struct ana_local_runs;

/* One run; strings valid during the call that hands it. */
struct ana_local_run {
  const char *run_id, *report_id, *account_id;
  const char *state; /* pending, running, completed, failed, expired */
  const char *error, *path;
  int attempts;
  int64_t size_bytes;
  int64_t created_at_ms, started_at_ms, finished_at_ms;
};
typedef void (*ana_local_run_fn)(void *ctx, const struct ana_local_run *run);

/* Opens the runs' own connection; every call below is thread-safe (one at
 * a time) and blocks. */
struct ana_local_runs *ana_local_runs_open(struct ana_local_db *db, struct ana_error *err);
void ana_local_runs_close(struct ana_local_runs *h);
/* A new pending run. */
int ana_local_runs_insert(struct ana_local_runs *h, const char *run_id, const char *account_id,
                          const char *report_id, int64_t created_ms, struct ana_error *err);
/* Takes a pending run: running, one more attempt; copies its account and
 * report. false when it is gone or not pending. */
bool ana_local_runs_start(struct ana_local_runs *h, const char *run_id, int64_t now_ms,
                          char *account, size_t acc_size, char *report, size_t rep_size);
/* A run's end: its state, error, file and size. */
int ana_local_runs_finish(struct ana_local_runs *h, const char *run_id, const char *state,
                          const char *error, const char *path, int64_t size, int64_t now_ms,
                          struct ana_error *err);
/* Marks runs completed before cutoff_ms expired, calling fn with each one's
 * file path (to remove it). */
void ana_local_runs_expire(struct ana_local_runs *h, int64_t cutoff_ms,
                           void (*fn)(void *ctx, const char *path), void *ctx);
/* After a stop: runs left running fail with error after max_attempts, the
 * others are pending again; calls fn with every pending run, oldest first
 * (a negative return stops). Returns how many, or a negative error. */
int ana_local_runs_recover(struct ana_local_runs *h, int max_attempts, const char *error,
                           int64_t now_ms, int (*fn)(void *ctx, const char *run_id), void *ctx,
                           struct ana_error *err);
/* The report's runs, newest first, at most limit: how many, or an error. */
int ana_local_runs_list(struct ana_local_runs *h, const char *account_id, const char *report_id,
                        int limit, ana_local_run_fn fn, void *ctx, struct ana_error *err);
/* One run: 1 when found (fn called), 0 when not, or a negative error. */
int ana_local_runs_get(struct ana_local_runs *h, const char *account_id, const char *report_id,
                       const char *run_id, ana_local_run_fn fn, void *ctx, struct ana_error *err);

/* --- a connection of a module's own, for its transactions (outbox.c) --- */

struct ana_local_conn;

/* A new read-write connection (it never checkpoints); one user at a time
 * (the caller serializes). Close it before the local database. */
struct ana_local_conn *ana_local_conn_open(struct ana_local_db *db, struct ana_error *err);
void ana_local_conn_close(struct ana_local_conn *c);
/* BEGIN IMMEDIATE, COMMIT, ROLLBACK. */
int ana_local_conn_begin(struct ana_local_conn *c, struct ana_error *err);
int ana_local_conn_commit(struct ana_local_conn *c, struct ana_error *err);
void ana_local_conn_rollback(struct ana_local_conn *c);
/* Why the last call on c failed (borrowed, until the next call). */
const char *ana_local_conn_errmsg(struct ana_local_conn *c);

/* --- re-encryption of stored events (reencrypt_state.c) --- */

/* The job's state (one row): on the caller's connection (ana_local_conn_open). */
struct ana_local_reencryption {
  char fields[8448];  /* the canonical ENCRYPTED_FIELDS the events are (being) sealed under */
  uint64_t upto_seq;  /* the job covers the events up to this sequence */
  uint64_t next_seq;  /* the events below it are done */
  int phase;          /* 0: rewriting events; 1: rebuilding rollups and compacting; 2: done */
  uint64_t rewritten; /* events rewritten so far */
  int64_t started_at_ms;
  int tainted_dicts; /* event_dicts ids up to it were trained before the job began */
};
/* 1 with *out filled, 0 when there is no state yet, or a negative error. */
int ana_local_reencryption_get(struct ana_local_conn *c, struct ana_local_reencryption *out,
                               struct ana_error *err);
/* Replaces the state. */
int ana_local_reencryption_put(struct ana_local_conn *c, const struct ana_local_reencryption *s,
                               struct ana_error *err);
/* Notes, durably, events whose free text is to be indexed again (their
 * references, ana_local_event_ref). */
int ana_local_reencryption_note(struct ana_local_conn *c, const int64_t *refs, size_t n,
                                struct ana_error *err);
/* The noted events' references (caller frees *refs with ana_free). */
int ana_local_reencryption_pending(struct ana_local_conn *c, int64_t **refs, size_t *n,
                                   struct ana_error *err);
/* In one transaction: forgets the noted events, sets next_seq and adds to rewritten. */
int ana_local_reencryption_advance(struct ana_local_conn *c, uint64_t next_seq, uint64_t rewritten,
                                   struct ana_error *err);
/* Gives every free page back to the file system and empties the WAL (a
 * TRUNCATE checkpoint, retried for timeout_ms while readers are in the way),
 * so that no page the database no longer uses is left in its files. */
/* The highest id in event_dicts (0 when none). */
int ana_local_reencryption_last_dict(struct ana_local_conn *c, int *out, struct ana_error *err);
/* From now on the event writer compresses with no dictionary of id up to
 * upto_id (until it trained a new one, bodies are stored uncompressed). */
void ana_local_db_retire_dicts(struct ana_local_db *db, int upto_id);
/* Of the (at most max) events after the reference *after (in the table's
 * order; INT64_MIN: from the first), stores uncompressed each body
 * compressed with a dictionary of id up to upto_id (secure_delete on), in
 * one transaction, and moves *after to the last one read. Returns how many
 * it read (0: none left), *rewritten how many it rewrote. */
int ana_local_reencryption_undict(struct ana_local_conn *c, int upto_id, int64_t *after, int max,
                                  uint64_t *rewritten, struct ana_error *err);
/* Deletes the dictionaries of id up to upto_id (secure_delete on). */
int ana_local_reencryption_drop_dicts(struct ana_local_conn *c, int upto_id, struct ana_error *err);
/* One alert history entry for ana_local_reencryption_alert_history: fn
 * sets *group_json and *message to new texts (heap, ana_malloc; the caller
 * frees them) or leaves them NULL (unchanged). */
typedef int (*ana_local_alert_blind_fn)(void *ctx, const char *account_id, const char *group_json,
                                        const char *message, char **new_group_json,
                                        char **new_message, struct ana_error *err);
/* Passes every alert_history entry to fn, in pages of max, and stores what
 * it changes (secure_delete on), a transaction per page. Returns how many
 * entries changed, or a negative error. */
int ana_local_reencryption_alert_history(struct ana_local_conn *c, int max,
                                         ana_local_alert_blind_fn fn, void *ctx,
                                         struct ana_error *err);
int ana_local_db_scrub(struct ana_local_conn *c, int timeout_ms, struct ana_error *err);

/* --- the notification outbox and delivery log (outbox.c) --- */

/* One pending notification; strings valid during the call. */
struct ana_local_outbox_row {
  int64_t id;
  const char *key, *account_id, *channel_id, *source, *payload;
  int attempts;
  int64_t created_ms, next_attempt_ms;
};
/* Non-zero stops. */
typedef int (*ana_local_outbox_fn)(void *ctx, const struct ana_local_outbox_row *row);

/* One delivery attempt; strings valid during the call. */
struct ana_local_attempt {
  int64_t outbox_id;
  const char *idempotency_key, *channel_id, *source;
  const char *state;
  int attempt;
  int64_t at_ms;
  const char *outcome;
  int status;
  const char *error;
  int64_t duration_ms;
};
/* Non-zero stops. */
typedef int (*ana_local_attempt_fn)(void *ctx, const struct ana_local_attempt *a);

/* Adds a pending notification (none when the key exists) inside the
 * caller's transaction on c. */
int ana_local_outbox_insert(struct ana_local_conn *c, const char *key, const char *account_id,
                            const char *channel_id, const char *source, const char *payload,
                            int64_t now_ms, struct ana_error *err);
/* Calls fn with the pending notifications, soonest due first, at most
 * limit (nothing when they cannot be read). */
void ana_local_outbox_pending(struct ana_local_conn *c, int limit, ana_local_outbox_fn fn,
                              void *ctx);
/* Records an attempt and the notification's new state in one transaction. */
int ana_local_outbox_record(struct ana_local_conn *c, int64_t id, int attempt, int64_t at_ms,
                            const char *outcome, int status, const char *error, int64_t duration_ms,
                            const char *state, int64_t next_due_ms, struct ana_error *err);
/* The account's attempts (source, channel_id: exact or NULL for any; before
 * at_ms < before_ms unless 0), newest first, at most limit. */
int ana_local_outbox_attempts(struct ana_local_conn *c, const char *account_id, const char *source,
                              const char *channel_id, int64_t before_ms, int limit,
                              ana_local_attempt_fn fn, void *ctx, struct ana_error *err);
/* A notification's state and attempts: 1, 0 when there is none, or an error. */
int ana_local_outbox_state(struct ana_local_conn *c, const char *account_id, const char *key,
                           char *state, size_t state_size, int *attempts, struct ana_error *err);
/* Calls fn with the first attempt of the notification with that key, if
 * made; whether it was. */
bool ana_local_outbox_first_attempt(struct ana_local_conn *c, const char *key,
                                    ana_local_attempt_fn fn, void *ctx);

/* --- the alert evaluator's state (alert_state.c) --- */

/* On the evaluator's connection (ana_local_conn_open), one caller at a
 * time: the writes join the caller's transaction on it (begun with
 * ana_local_conn_begin), in which the outbox takes its notifications too.
 * Close it before the connection. */
struct ana_local_alerts;

/* An instance's persisted state; strings borrowed (valid during the call
 * that hands it). */
struct ana_local_alert_instance {
  const char *alert_id, *group_key;
  int state; /* enum ana_alert_state */
  int64_t since_ms, last_notified_ms;
  bool notified;
  double value;
  bool has_value;
};
/* Non-zero stops. */
typedef int (*ana_local_alert_instance_fn)(void *ctx, const struct ana_local_alert_instance *in);
typedef int (*ana_local_alert_account_fn)(void *ctx, const char *account_id);

/* A history entry (a state change or a notification). Appended: the fields
 * up to failed. Read back (ana_local_alerts_history): every field, strings
 * valid during the call; k 0 is a state change with id its entry id, k 1 a
 * delivery attempt (kind "delivery", state its outcome) with id outbox row
 * * 1000 + attempt. */
struct ana_local_alert_entry {
  const char *alert_id, *account_id;
  int64_t at_ms;
  const char *kind, *state, *previous_state;
  double value;
  bool has_value;
  double threshold;
  const char *severity, *group_json, *message;
  const char *channels, *failed; /* one per line */
  int k;
  int64_t id;
  const char *channel_id, *idempotency_key, *error;
  int attempt, status;
  int64_t duration_ms;
};
typedef int (*ana_local_alert_entry_fn)(void *ctx, const struct ana_local_alert_entry *e);

/* A page of one rule's history, newest first: entries ordered by (at, k,
 * id) below (before_at_ms, before_k, before_id), with from_ms <= at <
 * to_ms, state "" or NULL = any (else a state, a kind or an outcome), at
 * most limit; deliveries_source non-NULL also lists the delivery attempts
 * of the outbox's notifications of that source ("alert:<id>"). */
struct ana_local_alert_page {
  const char *account_id, *alert_id;
  const char *deliveries_source;
  int64_t before_at_ms, before_id;
  int before_k;
  int64_t from_ms, to_ms;
  const char *state;
  int limit;
};

struct ana_local_alerts *ana_local_alerts_open(struct ana_local_conn *c, struct ana_error *err);
void ana_local_alerts_close(struct ana_local_alerts *h);
/* Notes an account with rules (nothing when noted already). */
int ana_local_alerts_add_account(struct ana_local_alerts *h, const char *account_id,
                                 struct ana_error *err);
/* Calls fn with every noted account: how many, or a negative error. */
int ana_local_alerts_accounts(struct ana_local_alerts *h, ana_local_alert_account_fn fn, void *ctx,
                              struct ana_error *err);
/* Inserts or replaces an instance's state. */
int ana_local_alerts_put_instance(struct ana_local_alerts *h,
                                  const struct ana_local_alert_instance *in, struct ana_error *err);
/* Calls fn with each stored instance of the rule: how many, or an error. */
int ana_local_alerts_instances(struct ana_local_alerts *h, const char *alert_id,
                               ana_local_alert_instance_fn fn, void *ctx, struct ana_error *err);
/* Appends a history entry; *entry_id receives its id. */
int ana_local_alerts_append(struct ana_local_alerts *h, const struct ana_local_alert_entry *e,
                            int64_t *entry_id, struct ana_error *err);
/* Sets an entry's notified and failed channels. */
int ana_local_alerts_note(struct ana_local_alerts *h, int64_t entry_id, const char *channels,
                          const char *failed, struct ana_error *err);
/* Deletes a rule's instances and history. */
int ana_local_alerts_forget(struct ana_local_alerts *h, const char *alert_id,
                            struct ana_error *err);
/* Deletes the history entries with at < cutoff_ms, and the delivery
 * attempts made before it of alerts' notifications no longer pending (with
 * their outbox rows once none is left): how many entries and attempts, or
 * an error. */
int ana_local_alerts_expire(struct ana_local_alerts *h, int64_t cutoff_ms, struct ana_error *err);
/* One page (q) of a rule's history on a pooled reader (thread-safe): fn
 * with each entry (non-zero stops); how many, or a negative error. */
int ana_local_alerts_history(struct ana_local_db *db, const struct ana_local_alert_page *q,
                             ana_local_alert_entry_fn fn, void *ctx, struct ana_error *err);

#endif
