/* The local database's raw SQLite connections, for the store's backends and
 * its typed local API: nothing outside server/store/ includes this. */
#ifndef ANA_LOCAL_DB_SQL_H
#define ANA_LOCAL_DB_SQL_H

#include "ana_local_db.h"
#include "time_runs.h"

#include <sqlite3.h>

/* The events table's columns (the last migration that rebuilt it): key,
 * account_id (the account's number in dedupe_accounts), event_id (as
 * event_ids.c stores it), session_id, event_type and event_name (numbers of
 * event_strings: ANA_EVENT_STRING_SQL gives the text back,
 * ANA_EVENT_STRING_ID_SQL the number of a text), ms (ts less the start of
 * the key's day), received_delta (received_at - ts, in ms), body
 * (event_body.c: the free text, the properties and the payload), and two
 * columns generated from them: seq (the key's low 40 bits; stored in
 * no index) and ts ((key >> 40) * ANA_EVENT_DAY_MS + ms). The layout (migration 13): the
 * rowid `key` is the event's UTC day (ts / ANA_EVENT_DAY_MS, SQLite's and C's division alike) times
 * 2^40 plus its commit sequence, and the table has no index (migration 28): seq is found through
 * event_days (below), an account's time range through the time index's runs (event_time_runs,
 * below: an account's events of each hour in (ts, seq) order, with the name's number to check on
 * the entries; ties at one timestamp are sorted by the rows' event_id where the order needs it).
 * Long scans end their snapshots at the end of an hour. */
#define ANA_EVENT_DAY_MS INT64_C(86400000)
#define ANA_EVENT_SEQ_BITS 40

/* Moved events by commit sequence (event_seq.c), without an index on seq:
 * the table event_days holds, per UTC day of the events table, the lowest
 * and highest seq of its events (the mover widens it in each move;
 * retention drops the days it emptied), and a day's range of the table is
 * in seq order. ANA_EVENTS_SEQ_WINDOW(schema) is the FROM ... WHERE of the
 * events (as `events`) of schema ("" or "ev.") with ?1 < seq <= ?2: a seek
 * into each day that may hold some (?2 above 2^40 - 1 reads as that); add
 * " AND ...". ana_local_events_by_seq reads after < seq <= upto window by
 * window (each window's keys so, sorted by seq in memory), steps `row` (a
 * SELECT of the row whose key is ?1, with any filters of its own) for each
 * key in seq order and calls fn with each row it gives (a non-zero result
 * stops and is returned), at most max rows: as "seq > after AND seq <= upto
 * ORDER BY seq LIMIT max" would with an index; returns how many rows, or a
 * negative error. ana_local_events_max_seq: the highest seq in events (0:
 * none). ana_local_event_days_add: the mover's records (sorted by key,
 * duplicates skipped) into event_days, in w's transaction. */
#define ANA_EVENTS_SEQ_WINDOW(s)                                                                   \
  " " s "event_days d CROSS JOIN " s "events AS events ON events.key > d.day * 1099511627776 + ?1" \
  " AND events.key <= d.day * 1099511627776 + min(?2, 1099511627775)"                              \
  " WHERE d.max_seq > ?1 AND d.min_seq <= ?2"
typedef int (*ana_local_seq_row_fn)(void *ctx, sqlite3_stmt *st);
int ana_local_events_by_seq(sqlite3 *conn, const char *schema, sqlite3_stmt *row, uint64_t after,
                            uint64_t upto, int max, ana_local_seq_row_fn fn, void *ctx,
                            struct ana_error *err);
int ana_local_events_max_seq(sqlite3 *conn, const char *schema, uint64_t *out,
                             struct ana_error *err);
int ana_local_event_days_add(sqlite3 *w, const struct ana_event_record *records, size_t n,
                             struct ana_error *err);

/* The time index (time_runs.c, time_runs.h): table event_time_runs
 * (account_id, hour, run, n, lo, hi, entries) WITHOUT ROWID, PRIMARY KEY (account_id,
 * hour, run): per account and hour (ana_time_run_hour: ts / 3600000,
 * truncating), runs of n entries (ts, event name's number, seq) sorted by
 * (ts, seq), a row's key being ana_event_key(ts, seq); lo and hi: the
 * run's first and last ts. Every event is in exactly one run of its hour; a
 * reader merges the runs in memory, segment of time by segment
 * (ana_time_cursor), and reads each candidate's row by key (one whose row
 * is gone, deleted by retention, is skipped). The mover: ana_time_runs_prepare (outside its
 * transaction: the move's records in run order), ana_time_runs_write (in
 * it, after ana_local_spool_insert gave rows their numbers: one new run
 * per (account, hour), an hour over its bound merged there), then
 * ana_time_runs_merge_some in transactions of its own while it has no
 * backlog (the hours the size-tiered rule picked, up to max_entries
 * rewritten). */
struct ana_time_runs_writer;
struct ana_time_runs_writer *ana_time_runs_writer_new(void);
void ana_time_runs_writer_free(struct ana_time_runs_writer *tw);
int ana_time_runs_prepare(struct ana_time_runs_writer *tw, const struct ana_event_record *recs,
                          size_t n, struct ana_error *err);
struct ana_spool_rows;
int ana_time_runs_write(struct ana_time_runs_writer *tw, sqlite3 *w,
                        const struct ana_event_record *recs, const struct ana_spool_rows *rows,
                        struct ana_error *err);
bool ana_time_runs_pending(const struct ana_time_runs_writer *tw);
/* After a failed merge: the hours waiting are merged at their next move
 * (or inline over their bound), not retried in a loop. */
void ana_time_runs_forget_pending(struct ana_time_runs_writer *tw);
int ana_time_runs_merge_some(struct ana_time_runs_writer *tw, sqlite3 *w, long max_entries,
                             struct ana_error *err);
/* Retention: the runs of every account's hours of UTC day `day`, in w's
 * open transaction. */
int ana_time_runs_drop_day(sqlite3 *w, int64_t day, struct ana_error *err);
/* SQL function ana_time_runs_from_events() (the migration). */
int ana_time_runs_register(sqlite3 *conn);
/* A reader's walk over an account's time range, hour after hour, in
 * segments of time (a segment holds every entry of the account in its
 * stretch of time, sorted by (ts, seq), in e[0..n); hour_end: the last of
 * its hour), going down (desc) or up: st is a statement of
 * ANA_TIME_RUNS_SQL ("DESC" or "ASC"; bound: ?1 the account's number, ?2
 * and ?3 the first and last hour), get one of ANA_TIME_RUN_ENTRIES_SQL
 * (bound by the cursor); runs wholly outside [lo, hi) are not read. Each
 * ana_time_cursor_next gives the next segment (1; 0: no more; < 0: an
 * error). */
#define ANA_TIME_RUNS_SQL(order)                                                                   \
  "SELECT hour, run, n, lo, hi FROM event_time_runs WHERE account_id = ?1 AND hour >= ?2"          \
  " AND hour <= ?3 ORDER BY hour " order
#define ANA_TIME_RUN_ENTRIES_SQL                                                                   \
  "SELECT entries FROM event_time_runs WHERE account_id = ?1 AND hour = ?2 AND run = ?3"
struct ana_time_run_ref {
  int64_t run, n, lo, hi;
  struct ana_time_entry *e; /* decoded (NULL: not yet, or used up) */
  size_t from, to;          /* the entries not handed on yet */
};
struct ana_time_cursor {
  sqlite3_stmt *st, *get;
  int step;
  bool desc, hour_end;
  int64_t account, lo, hi, hour;
  struct ana_time_run_ref *runs;
  size_t n_runs, runs_cap;
  struct ana_time_entry *e;
  size_t n, cap;
};
void ana_time_cursor_start(struct ana_time_cursor *c, sqlite3_stmt *st, sqlite3_stmt *get,
                           int64_t account, int64_t lo, int64_t hi, bool desc);
int ana_time_cursor_next(struct ana_time_cursor *c, struct ana_error *err);
void ana_time_cursor_free(struct ana_time_cursor *c);

/* The text of an event type or name column (col: its SQL), and the
 * number of the text bound to ?n (NULL when no event has it). */
#define ANA_EVENT_STRING_SQL(col) "(SELECT s.name FROM event_strings s WHERE s.id = " col ")"
#define ANA_EVENT_STRING_ID_SQL(n) "(SELECT s.id FROM event_strings s WHERE s.name = ?" #n ")"

static inline int64_t ana_event_day(int64_t ts_ms) {
  return ts_ms / ANA_EVENT_DAY_MS;
}

static inline int64_t ana_event_key(int64_t ts_ms, uint64_t seq) {
  return ana_event_day(ts_ms) * (INT64_C(1) << ANA_EVENT_SEQ_BITS) + (int64_t)seq;
}

/* Event ids as stored (event_ids.c, events.event_id and dedupe_keys): a
 * canonical lower-case UUID (8-4-4-4-12 of [0-9a-f]) as its 16 bytes, a
 * blob; any other id (upper case, not a UUID, empty) as its text. The two
 * never compare equal, and blobs sort after text (SQLite's order), UUIDs
 * among themselves as their text does. ana_event_id_bind binds an id in its
 * stored form; ana_event_id_text / ana_event_id_column give the text back
 * (in buf for a UUID). SQL functions ana_event_id_pack(id) and
 * ana_event_id(stored), from ana_event_id_register. */
#define ANA_EVENT_ID_PACKED 16
#define ANA_EVENT_ID_UUID_LEN 36
bool ana_event_id_pack(const char *id, size_t len, uint8_t out[ANA_EVENT_ID_PACKED]);
void ana_event_id_unpack(const uint8_t in[ANA_EVENT_ID_PACKED],
                         char out[ANA_EVENT_ID_UUID_LEN + 1]);
int ana_event_id_bind(sqlite3_stmt *st, int i, const char *id, int len);
const char *ana_event_id_text(sqlite3_value *v, char buf[ANA_EVENT_ID_UUID_LEN + 1]);
const char *ana_event_id_column(sqlite3_stmt *st, int col, char buf[ANA_EVENT_ID_UUID_LEN + 1]);
int ana_event_id_register(sqlite3 *conn);

/* Event bodies (event_body.c): an event's free text, its properties (the
 * JSON that metrics aggregate and filters compare) and its payload in one
 * column, events.body, compressed with the store's dictionary (table
 * event_dicts) once it is trained. The payload's event_id, timestamp and
 * received_at are left out when the row's columns give them back byte for
 * byte. Every connection to the local database (and the search index's) has
 * the SQL functions ana_event_text(body), ana_event_props(body),
 * ana_event_props_has(body, text) (whether the properties' JSON holds text),
 * ana_event_payload(body, event_id, ts, received_at) (the columns as stored;
 * ANA_EVENT_PAYLOAD_SQL), ana_event_body_raw(body) (the same body
 * uncompressed), ana_event_dict(body) (its dictionary id, 0: none) and
 * ana_event_body(text, properties, payload, event_id, ts, received_at) (an
 * uncompressed body), from ana_event_body_register. */
int ana_event_body_register(sqlite3 *conn);
#define ANA_EVENT_PAYLOAD_SQL "ana_event_payload(body, event_id, ts, ts + received_delta)"
/* Ids longer than this stay in the payload. */
#define ANA_EVENT_BODY_ID_MAX 256

/* The event writer's encoder (one per local database, on the mover's
 * thread): ana_event_codec_encode sets *out to the body of parts, valid
 * until the next call; ana_event_codec_persist stores the dictionary it uses
 * in the current transaction (once; a no-op when stored). */
struct ana_event_body_parts {
  const char *text;       /* free text */
  const char *properties; /* JSON */
  const uint8_t *payload;
  size_t payload_len;
  /* The row's columns: the payload's fields equal to them are left out. */
  const char *event_id;
  int64_t ts_ms, received_at_ms;
};
struct ana_event_codec;
struct ana_event_codec *ana_event_codec_new(void);
void ana_event_codec_free(struct ana_event_codec *c);
int ana_event_codec_encode(struct ana_event_codec *c, sqlite3 *w,
                           const struct ana_event_body_parts *parts, const void **out,
                           size_t *out_len);
int ana_event_codec_persist(struct ana_event_codec *c, sqlite3 *w, struct ana_error *err);
struct ana_event_codec *ana_local_db_event_codec(struct ana_local_db *db);
/* Thread-safe: dictionaries of ids up to upto_id are not used any more (from
 * the next encode on); bodies are stored uncompressed until a dictionary is
 * trained anew on the bodies stored from then on. */
void ana_event_codec_retire(struct ana_event_codec *c, int upto_id);
/* Whether dictionary dict_id (> 0) is retired (thread-safe). */
bool ana_event_codec_retired(struct ana_event_codec *c, int dict_id);
/* The dictionary id of an encoded body (its first byte; 0: uncompressed). */
int ana_event_body_dict(const void *body);

/* The dictionary's training runs on a thread of its own (no commit waits
 * for it); the first encode after it ended takes the dictionary. For tests:
 * hold keeps the thread from starting to train until released; the state
 * (after waiting up to wait_ms for a running training to end) is one of: */
enum {
  ANA_CODEC_SAMPLING, /* keeping samples, no dictionary yet */
  ANA_CODEC_TRAINING, /* the thread trains (or is held) */
  ANA_CODEC_TRAINED,  /* trained; the next encode takes it */
  ANA_CODEC_IN_USE,   /* bodies are compressed with it */
  ANA_CODEC_NONE,     /* no dictionary this run (training failed) */
};
void ana_event_codec_hold_training(struct ana_event_codec *c, bool hold);
int ana_event_codec_training_state(struct ana_event_codec *c, int wait_ms);

/* The events rows (spool.c), for the mover: ana_local_spool_prepare, outside
 * any transaction, gives records[i] (!duplicate, their seq set) the numbers
 * of their account, type and name already given (ANA_SPOOL_UNKNOWN for the
 * others) and encodes their bodies with codec into rows;
 * ana_local_spool_insert then inserts them into events on w in its open
 * transaction, giving the numbers not given yet (the caller persists the
 * codec's dictionary in the same transaction). stmts: w's statements,
 * prepared on first use, the caller's to finalize, and the numbers found.
 * ana_local_spool_reencode encodes the bodies again (a dictionary they use
 * was retired meanwhile). */
#define ANA_SPOOL_STRINGS 64
#define ANA_SPOOL_UNKNOWN INT64_MIN
struct ana_spool_string {
  char *name;
  int64_t id;
};
struct ana_spool_statements {
  sqlite3_stmt *append, *add[2], *get[2];              /* add, get: accounts; event strings */
  struct ana_spool_string strings[ANA_SPOOL_STRINGS];  /* numbers of event_strings found */
  struct ana_spool_string accounts[ANA_SPOOL_STRINGS]; /* numbers of dedupe_accounts found */
};
#define ANA_SPOOL_ID_BYTES (1 + ANA_EVENT_ID_PACKED) /* packed or not, the packed id */
struct ana_spool_rows {
  size_t n, cap;
  int64_t *nums;    /* 3 per record: account, type, name */
  uint8_t *ids;     /* ANA_SPOOL_ID_BYTES per record */
  size_t *body_off; /* n + 1: record i's body is bodies[body_off[i] .. body_off[i + 1]) */
  uint8_t *bodies;
  size_t bodies_len, bodies_cap;
  int dict; /* the highest dictionary id the bodies use (0: none) */
};
int ana_local_spool_prepare(sqlite3 *w, struct ana_spool_statements *stmts,
                            struct ana_event_codec *codec, const struct ana_event_record *records,
                            size_t n, struct ana_spool_rows *rows, struct ana_error *err);
int ana_local_spool_reencode(sqlite3 *w, struct ana_event_codec *codec,
                             const struct ana_event_record *records, struct ana_spool_rows *rows,
                             struct ana_error *err);
int ana_local_spool_insert(sqlite3 *w, struct ana_spool_statements *stmts,
                           const struct ana_event_record *records, struct ana_spool_rows *rows,
                           struct ana_error *err);
void ana_spool_rows_free(struct ana_spool_rows *rows);
void ana_spool_statements_finalize(struct ana_spool_statements *stmts);
/* After a rollback of the transaction of ana_local_spool_insert: forgets the
 * numbers it kept (some may have been rolled back). */
void ana_spool_statements_forget(struct ana_spool_statements *stmts);

/* Staging (staging.c): the commit's staged events (one per local database),
 * written to events_staged by ana_staging_flush (ana_local_db_commit calls
 * it before COMMIT), published to the mover by ana_staging_committed, or
 * dropped with the transaction (ana_staging_discard). The mover thread runs
 * from ana_staging_open to ana_staging_close. */
struct ana_staging;
struct ana_staging *ana_staging_open(struct ana_local_db *db, struct ana_error *err);
void ana_staging_close(struct ana_staging *s);
int ana_staging_flush(struct ana_staging *s, struct ana_error *err);
void ana_staging_committed(struct ana_staging *s);
void ana_staging_discard(struct ana_staging *s);
struct ana_staging *ana_local_db_staging(struct ana_local_db *db);
/* Calls fn with each staged event with after_seq < seq <= upto_seq (of
 * account_id only, unless NULL), in sequence order, at most max, reading on
 * r (a reader: analytics.db, the journal attached): inside the caller's read
 * transaction (ana_local_read_begin), which read the events table too; the
 * staged events at or below the mover's watermark in that snapshot are in
 * the events table, and skipped. fn's non-zero result stops and is
 * returned; else how many, or a negative error. */
typedef int (*ana_staged_fn)(void *ctx, const struct ana_event_record *ev, struct ana_error *err);
int ana_local_staged_each(sqlite3 *r, uint64_t after_seq, uint64_t upto_seq, const char *account_id,
                          int max, ana_staged_fn fn, void *ctx, struct ana_error *err);
/* Calls fn with each staged event of a time range not yet moved, as the
 * readers of time ranges (searches, the metrics' scans) merge them with the
 * table's rows instead of waiting for the mover: on r inside the caller's
 * read transaction (ana_local_read_begin), as ana_local_staged_each, in no
 * particular order (sort them). fn may narrow from_ms..to_ms while it runs
 * (a page of the newest events needs none older than its last): a batch
 * committed by this process whose events all lie outside is skipped
 * undecoded, and so is each event outside. The record and its strings are
 * valid during the call only. Returns how many events fn took, fn's
 * non-zero result, or a negative error. Sets watermark (the table holds
 * every event up to it in this snapshot) and staged_upto (the last staged
 * sequence in it, or the watermark). */
struct ana_staged_range {
  const char *account_id; /* NULL: every account's */
  int64_t from_ms, to_ms; /* from_ms <= ts < to_ms */
  uint64_t watermark, staged_upto;
};
int ana_local_staged_range(struct ana_local_db *db, sqlite3 *r, struct ana_staged_range *range,
                           ana_staged_fn fn, void *ctx, struct ana_error *err);
/* A writer other than the committer's passes the same gate as its
 * transactions (the WAL's bound, the checkpoint's catch-up), pages: the
 * most its transaction writes; each file has its own: analytics.db's (the
 * mover's moves) and the journal's (ana_local_db_journal_gate_*: the
 * deduplication merges, the mover's deletes of staged rows). */
void ana_local_db_gate_enter(struct ana_local_db *db, int pages);
void ana_local_db_journal_gate_enter(struct ana_local_db *db, int pages);
void ana_local_db_journal_gate_leave(struct ana_local_db *db);
/* The WAL pages a move may write (half of WAL_CHECKPOINT_MB's): the mover
 * passes the gate only while the WAL has room for them within its bound
 * (the checkpoint thread starts the WAL over when it has not), and takes at
 * most two events per three of them. */
int ana_local_db_move_room(struct ana_local_db *db);
/* The mover, idle after moves: the checkpoint thread copies the WAL now
 * rather than up to 5 s later (the next commit can then start it over). */
void ana_local_db_checkpoint_soon(struct ana_local_db *db);
void ana_local_db_gate_leave(struct ana_local_db *db);

/* Deduplication keys (dedupe_keys.c): the state of the writer's
 * transactions' claims (the last account numbered, which a rollback
 * forgets, and the runs); ana_local_dedupe_flush (ana_local_db_commit calls
 * it before COMMIT) writes the transaction's keys as a run. One per local
 * database, on the committer's thread. */
struct ana_dedupe_pending;
struct ana_dedupe_pending *ana_dedupe_pending_new(void);
void ana_dedupe_pending_free(struct ana_dedupe_pending *p);
void ana_dedupe_pending_discard(struct ana_dedupe_pending *p);
void ana_dedupe_pending_committed(struct ana_dedupe_pending *p);
struct ana_dedupe_pending *ana_local_db_dedupe_pending(struct ana_local_db *db);
int ana_local_dedupe_flush(struct ana_local_db *db, struct ana_error *err);

/* The keys as sorted runs (dedupe_runs.c): a commit's claimed keys become
 * one run at its flush; a thread of its own merges runs in the background.
 * claim: 1 when the key is stored (or claimed in the open transaction), 0
 * when it is claimed now, negative on an error; get is the writer's
 * statement of ana_dedupe_chunk_sql (reading a chunk by id). Committer
 * thread: claim, flush, discard, committed. */
struct ana_dedupe_runs;
extern const char ana_dedupe_chunk_sql[];
struct ana_dedupe_runs *ana_dedupe_runs_open(struct ana_local_db *db, sqlite3 *w,
                                             size_t filter_limit, struct ana_error *err);
void ana_dedupe_runs_close(struct ana_dedupe_runs *d);
int ana_dedupe_runs_claim(struct ana_dedupe_runs *d, sqlite3 *w, sqlite3_stmt *get, int64_t account,
                          const char *event_id, int64_t day, struct ana_error *err);
int ana_dedupe_runs_flush(struct ana_dedupe_runs *d, sqlite3 *w, struct ana_error *err);
void ana_dedupe_runs_discard(struct ana_dedupe_runs *d);
void ana_dedupe_runs_committed(struct ana_dedupe_runs *d);
int64_t ana_dedupe_runs_take_expired(struct ana_dedupe_runs *d, int64_t now_ms, int64_t max);
int ana_dedupe_runs_maintain(struct ana_dedupe_runs *d, int64_t now_ms, int max_steps,
                             struct ana_error *err);
void ana_dedupe_runs_hold(struct ana_dedupe_runs *d, bool hold);
void ana_dedupe_runs_set_filter_limit(struct ana_dedupe_runs *d, size_t bytes);
void ana_dedupe_runs_stats(struct ana_dedupe_runs *d, struct ana_dedupe_runs_stats *out);
int ana_dedupe_runs_register(sqlite3 *conn);
struct ana_dedupe_runs *ana_dedupe_pending_runs(struct ana_dedupe_pending *p);
void ana_dedupe_pending_set_runs(struct ana_dedupe_pending *p, struct ana_dedupe_runs *d);

/* The SQL of an account's number from its id in ?N (NULL: none stored). */
#define ANA_ACCOUNT_NUMBER_SQL(n) "(SELECT id FROM dedupe_accounts WHERE account_id = ?" #n ")"
/* The SQL of the account id of an events row. */
#define ANA_ACCOUNT_ID_SQL                                                                         \
  "(SELECT a.account_id FROM dedupe_accounts a WHERE a.id = events.account_id)"

/* The SQL functions ana_dedupe_build_lists() (lists the keys of the layout
 * before the lists in dedupe_expiry) and ana_dedupe_days_from_lists() (gives
 * each key of dedupe_keys_by_day the day of its list) on conn, for the
 * migrations. */
int ana_dedupe_register(sqlite3 *conn);

/* Schema migrations, for tests of an upgrade: the (1-based) number of the
 * first migration whose SQL contains text (0: none), and applying the
 * migrations up to that number on a connection of a new database. */
int ana_local_db_migration_containing(const char *text);
int ana_local_db_migrate_upto(sqlite3 *conn, int version, struct ana_error *err);

/* A new read-write connection to analytics.db with the same settings, for
 * a role that writes on its own (the catalog, rollups, the mover); it never
 * checkpoints (the local database's checkpoint threads do, for every
 * connection). ana_local_db_connect_journal: the same to the journal (the
 * deduplication merges, the mover's deletes of staged rows), its main
 * database, nothing attached. Close it with sqlite3_close before the local
 * database. */
sqlite3 *ana_local_db_connect(struct ana_local_db *db, struct ana_error *err);
sqlite3 *ana_local_db_connect_journal(struct ana_local_db *db, struct ana_error *err);
/* A connection of the store's own threads opened with the local database
 * (the mover's, the merges'), before WAL_CHECKPOINT_MB is set: keep true
 * has ana_local_db_set_checkpoint_pages set its WAL's size limit too; false
 * (before it closes) forgets it. */
void ana_local_db_keep_wal_limit(struct ana_local_db *db, sqlite3 *conn, bool keep);

/* analytics.db's writer connection, with the journal attached as
 * `journal` (its tables are found by their bare names too): migrations,
 * retention (ana_local_db_store_begin), tests. Its BEGIN IMMEDIATE takes
 * both files' write locks: not for the acknowledged commit. */
sqlite3 *ana_local_db_writer(struct ana_local_db *db);
/* The acknowledged commit's connection (ana_local_db_begin): the journal as
 * its main database, nothing attached. */
sqlite3 *ana_local_db_journal(struct ana_local_db *db);

/* A statement on the commit's connection (ana_local_db_journal), prepared
 * on first use and kept until close, found by the address of sql (a string
 * with static storage: the same text at two addresses is two entries).
 * Reset, bindings cleared. For statements run inside every commit; only on
 * the committer's thread. NULL when it cannot be prepared (sqlite3_errmsg
 * of the connection says why). ana_local_db_store_statement: the same on
 * analytics.db's writer (the accounts' numbers), run outside its
 * transactions (each its own). */
sqlite3_stmt *ana_local_db_writer_statement(struct ana_local_db *db, const char *sql);
sqlite3_stmt *ana_local_db_store_statement(struct ana_local_db *db, const char *sql);

/* Begins a read transaction on a pooled reader that reads the staged events
 * (ana_local_staged_each) beside the events table: the journal's snapshot
 * is taken first, then analytics.db's when the events are read. The two
 * files' snapshots are not one: the mover commits a move (and its
 * watermark, events_moved) in analytics.db, then deletes the staged rows in
 * the journal. Read in this order, a staged row missing from the journal's
 * snapshot was moved before it, so its event is in analytics.db's later
 * one; a staged row present in both is skipped by its seq (at or below the
 * watermark read in analytics.db's snapshot). End it with COMMIT. */
int ana_local_read_begin(sqlite3 *r, struct ana_error *err);

/* A pooled reader (for searches; return it with
 * ana_local_db_release_reader). Blocks while all readers are busy. */
sqlite3 *ana_local_db_acquire_reader(struct ana_local_db *db);
void ana_local_db_release_reader(struct ana_local_db *db, sqlite3 *reader);
/* A statement of sql on reader (acquired), kept prepared on it for its
 * next holders: found by sql's text, the READER_STATEMENTS last used per
 * reader. Reset, bindings cleared. Not to be finalized; reset it before
 * the reader is released (the release resets one left stepping). NULL when
 * it cannot be prepared (sqlite3_errmsg of the reader says why). */
sqlite3_stmt *ana_local_db_reader_statement(struct ana_local_db *db, sqlite3 *reader,
                                            const char *sql);

/* The SQLite connection of a module's connection (for the store's typed
 * tables that share its transactions). */
sqlite3 *ana_local_conn_sqlite(struct ana_local_conn *c);

#endif
