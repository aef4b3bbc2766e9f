/* The local SQLite database, two files (ana_local_db.h): analytics.db and
 * the journal analytics-journal.db, each with its own write lock, WAL and
 * checkpoint thread; connections (the acknowledged commit's has the journal
 * only, analytics.db's writer and the readers attach it), pragmas for
 * durable commits, and versioned schema migrations (the journal's tables
 * moved there by move_to_journal and the last migration). */
#include "local_db_sql.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "sql_stmt.h"
#include "wal_write_vfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define READERS 4
#define BUSY_TIMEOUT_MS 10000

#define WRITER_STATEMENTS 16
#define LIMITED_CONNS 8
/* Statements kept prepared per reader (ana_local_db_reader_statement). */
#define READER_STATEMENTS 24

/* A database file's WAL and its checkpoints (see struct ana_local_db):
 * each file of the local database has its own. */
struct wal_ckpt {
  struct ana_local_db *db;
  const char *path; /* the database file's */
  sqlite3 *checkpointer;
  pthread_t checkpoint_thread;
  bool checkpoint_started, checkpoint_stop;
  int wal_pages;             /* the WAL's size after the last commit */
  int new_pages;             /* appended since the last checkpoint began */
  int checkpoint_pages;      /* new_pages that start a checkpoint */
  uint64_t commits;          /* commits reported by on_wal_commit */
  uint64_t complete_commits; /* commits when a checkpoint last copied all */
  bool waiting_for_reset;
  bool gate_closed;  /* a catch-up holds the event writer at BEGIN */
  int writer_in_txn; /* event writers (committer, mover) between BEGIN and end */
  /* The bound on the WAL (see wal_over): the event writer waits at BEGIN
   * while the WAL holds limit_pages or more that are not all copied. */
  int limit_pages;
  bool writer_held;
  /* The mover waits at the gate until the WAL has room for held_room more
   * pages within limit_pages (0: it does not wait); the checkpoint thread
   * then starts the WAL over as for a full WAL. */
  int held_room;
  bool soon; /* ana_local_db_checkpoint_soon: do not wait for CHECKPOINT_EVERY_MS */
  uint64_t checkpoints, catch_ups, writer_waits, restarts;
  pthread_mutex_t checkpoint_mu;
  pthread_cond_t checkpoint_cond;
  pthread_cond_t gate_cond; /* gate_closed or writer_in_txn changed */
};

enum { CK_STORE, CK_JOURNAL };

struct ana_local_db {
  char *path;         /* analytics.db */
  char *journal_path; /* analytics-journal.db */
  /* analytics.db's writer (migrations, tests, retention's reclaim), with
   * the journal attached as `journal`: never in an acknowledged commit. */
  sqlite3 *writer;
  /* The acknowledged commit's connection: the journal as its main database
   * and nothing attached, so that its BEGIN IMMEDIATE takes the journal's
   * write lock only (never analytics.db's, which the mover holds for a
   * whole move). */
  sqlite3 *journal;
  bool metrics_registered;
  sqlite3 *readers[READERS];
  bool reader_busy[READERS];
  /* Each reader's statements kept prepared, found by their text: a search
   * would otherwise parse and plan its few statements on every request
   * (most of a short search's CPU). Used only by the reader's holder. */
  struct reader_statement {
    char *sql;
    size_t len;
    uint64_t hash, used; /* used: the reader's use count at the last use */
    sqlite3_stmt *stmt;
  } reader_statements[READERS][READER_STATEMENTS];
  uint64_t reader_uses[READERS];
  pthread_mutex_t mu;
  pthread_cond_t reader_free;
  atomic_bool degraded;
  /* DATA_DIR's filesystem had less than min_free_bytes available at the
   * last ana_local_db_check_space: new commits are refused up front. */
  atomic_bool low_space;
  _Atomic int64_t min_free_bytes;
  _Atomic int64_t degraded_at_ms; /* when the last failed commit set degraded */
  /* Checkpoints run on their own thread and connection, so a commit never
   * pays for copying the WAL into the database (that is SQLite's default:
   * the commit that crosses 1,000 pages checkpoints, a latency spike). It
   * is the only connection that checkpoints: every writing connection has
   * automatic checkpoints off and reports its commits to on_wal_commit.
   *
   * A checkpoint starts once checkpoint_pages pages were appended since
   * the last one began (or CHECKPOINT_EVERY_MS after it, if any were). Under
   * steady ingest, commits append while it copies, so it never finds the
   * WAL wholly copied and the WAL would grow without end (and a trigger on
   * the WAL's size would checkpoint after every commit, two fsyncs each,
   * competing with the commits' own). So a checkpoint that left pages
   * behind is followed by a short catch-up while the event writer is held
   * at its next BEGIN (`gate_closed`): it copies the rest, and the next
   * commit starts the WAL over.
   *
   * SQLite up to 3.51.2 (Debian 12 has 3.40.1) has a race, the "WAL-reset
   * bug" (sqlite.org/wal.html#walresetbug): a checkpoint that starts just
   * after another one copied the whole WAL, while a commit on another
   * connection resets the WAL, records a wrong backfill count, and a later
   * checkpoint then corrupts the database. So after a checkpoint that
   * copied the whole WAL, the next one waits until a commit has ended since
   * (that commit did the reset, or appended behind readers, which makes a
   * reset impossible until the next complete checkpoint). A catch-up
   * starts only when a commit appended pages after the snapshot the
   * checkpoint copied: those are not copied yet, so no commit can start
   * the WAL over while the catch-up runs.
   *
   * Each file (analytics.db, the journal) has its own WAL and all of this
   * for it: a checkpoint thread and connection, its bound, its gate. */
  struct wal_ckpt ck[2]; /* CK_STORE: analytics.db's, CK_JOURNAL: the journal's */
  /* The store's own writing connections opened before the WAL's size is set
   * (the mover's, the merges'): ana_local_db_set_checkpoint_pages sets their
   * journal_size_limit too (whichever connection commits first after the
   * WAL starts over trims the file to its own limit). Under ck[CK_STORE]'s
   * checkpoint_mu. */
  sqlite3 *limited[LIMITED_CONNS];
  /* Statements every commit runs, prepared once on the writer: parsing
   * them again each time would sit inside the commit, on every request's
   * acknowledgement path. Keyed by the address of their (static) SQL. */
  struct ana_sql_kept writer_statements[WRITER_STATEMENTS]; /* on journal */
  struct ana_sql_kept store_statements[WRITER_STATEMENTS];  /* on writer */
  struct ana_event_codec *codec;                            /* the event writer's (event_body.c) */
  struct ana_dedupe_pending *dedupe; /* its transaction's new keys (dedupe_keys.c) */
  struct ana_staging *staging;       /* its transaction's staged events, the mover */
};

#define DEFAULT_CHECKPOINT_PAGES 32768
#define CHECKPOINT_EVERY_MS 5000
/* While the event writer waits for the WAL to be copied, the checkpoint
 * thread tries again this often (a reader may hold pages back). */
#define HELD_RETRY_MS 5
#define PAGE_BYTES 4096
#define COMMIT_ROOM_PAGES 1024
/* A failed commit keeps the store degraded at least this long. */
#define DEGRADED_RETRY_MS 5000
/* A catch-up holds the event writer only for the last pages appended (at
 * most this many, unless commits outpace CATCH_UP_PASSES passes). */
#define CATCH_UP_HELD_PAGES 100
#define CATCH_UP_PASSES 3

/* Schema migrations, applied in order, each in its own transaction. Never
 * edit a released step: add a new one. */
static const char *const migrations[] = {
    /* 1: events, their search index and the deduplication keys. */
    "CREATE TABLE events ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  account_id TEXT NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  session_id TEXT NOT NULL DEFAULT '',"
    "  event_type TEXT NOT NULL,"
    "  event_name TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  received_at INTEGER NOT NULL,"
    "  properties TEXT NOT NULL DEFAULT '{}',"
    "  search_text TEXT NOT NULL DEFAULT '',"
    "  payload BLOB NOT NULL);"
    "CREATE INDEX events_by_time ON events(account_id, ts, event_id);"
    "CREATE INDEX events_by_name ON events(account_id, event_name, ts, event_id);"
    "CREATE INDEX events_by_type ON events(account_id, event_type, ts, event_id);"
    "CREATE INDEX events_by_session ON events(account_id, session_id, ts, event_id);"
    "CREATE INDEX events_expiry ON events(ts);"
    "CREATE VIRTUAL TABLE events_fts USING fts5(search_text, content='events',"
    "  content_rowid='seq');"
    "CREATE TABLE dedupe_keys ("
    "  account_id TEXT NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  PRIMARY KEY (account_id, event_id)) WITHOUT ROWID;"
    "CREATE INDEX dedupe_keys_expiry ON dedupe_keys(expires_at);",

    /* 2: the catalog of user-defined objects (metrics, reports, alerts). */
    "CREATE TABLE catalog_objects ("
    "  account_id TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  name TEXT,"
    "  body BLOB NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (account_id, kind, id)) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX catalog_objects_name ON catalog_objects(account_id, kind, name)"
    "  WHERE name IS NOT NULL;",

    /* 3: metric rollups. One row per (metric, definition version, level,
     * bucket start, group key) holding the mergeable state of every term;
     * one row per metric with its current definition and the commit
     * sequence number up to which its rollups include events. */
    "CREATE TABLE metric_rollups ("
    "  metric_id TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  level INTEGER NOT NULL,"
    "  bucket INTEGER NOT NULL,"
    "  group_key TEXT NOT NULL,"
    "  state BLOB NOT NULL,"
    "  PRIMARY KEY (metric_id, version, level, bucket, group_key)) WITHOUT ROWID;"
    "CREATE TABLE metric_rollup_defs ("
    "  metric_id TEXT PRIMARY KEY,"
    "  account_id TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  definition BLOB NOT NULL,"
    "  watermark INTEGER NOT NULL,"
    "  backfill_to INTEGER NOT NULL) WITHOUT ROWID;",

    /* 4: the free-text index moves to its own file, kept by its own thread
     * off the commit path (text_index.c), which builds it from the events. */
    "DROP TABLE events_fts;",

    /* 5: each account's catalog of the event names it has sent, kept off
     * the commit path (server/ingest/event_names.c), and the commit
     * sequence number up to which it holds the events. */
    "CREATE TABLE event_names ("
    "  account_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  first_seen INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL,"
    "  count INTEGER NOT NULL,"
    "  PRIMARY KEY (account_id, name)) WITHOUT ROWID;"
    "CREATE TABLE event_names_progress ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  watermark INTEGER NOT NULL);"
    "INSERT INTO event_names_progress VALUES (1, 0);",

    /* 6: API keys, found by key id (server/auth/api_keys.c); only the
     * SHA-256 of each key is kept. 0 in last_used_at / revoked_at: never. */
    "CREATE TABLE api_keys ("
    "  key_id TEXT PRIMARY KEY,"
    "  account_id TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  created_by TEXT NOT NULL,"
    "  secret_sha256 BLOB NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  last_used_at INTEGER NOT NULL DEFAULT 0,"
    "  revoked_at INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
    "CREATE INDEX api_keys_by_account ON api_keys(account_id, key_id);",

    /* 7: the notification outbox and its delivery log (server/notify/). A
     * row is written in the transaction of what caused it and stays until
     * delivered or failed; every attempt is one row of notify_attempts. */
    "CREATE TABLE notify_outbox ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  idempotency_key TEXT NOT NULL UNIQUE,"
    "  account_id TEXT NOT NULL,"
    "  channel_id TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_at INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL);"
    "CREATE INDEX notify_outbox_due ON notify_outbox(state, next_attempt_at);"
    "CREATE INDEX notify_outbox_by_source ON notify_outbox(account_id, source);"
    "CREATE INDEX notify_outbox_by_channel ON notify_outbox(account_id, channel_id);"
    "CREATE TABLE notify_attempts ("
    "  outbox_id INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  outcome TEXT NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  error TEXT NOT NULL,"
    "  duration_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (outbox_id, attempt)) WITHOUT ROWID;",

    /* 8: report runs (server/reports/runner.c): one row per generation of a
     * report's file, its state surviving restarts (a run found `running` at
     * start was interrupted and runs again, up to its attempt limit). */
    "CREATE TABLE report_runs ("
    "  run_id TEXT PRIMARY KEY,"
    "  account_id TEXT NOT NULL,"
    "  report_id TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT NOT NULL DEFAULT '',"
    "  path TEXT NOT NULL DEFAULT '',"
    "  size_bytes INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL DEFAULT 0,"
    "  finished_at INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
    "CREATE INDEX report_runs_by_report ON report_runs(account_id, report_id, created_at);"
    "CREATE INDEX report_runs_by_state ON report_runs(state, created_at);",

    /* 9: the audit log (server/auth/audit.c), hash-chained by seq; the
     * anchor holds the sequence and hash of the last record retention
     * deleted (0 and zeros before any was). */
    "CREATE TABLE audit_log ("
    "  seq INTEGER PRIMARY KEY,"
    "  at INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  account_id TEXT NOT NULL,"
    "  subject TEXT NOT NULL,"
    "  key_id TEXT NOT NULL,"
    "  method TEXT NOT NULL,"
    "  target_id TEXT NOT NULL,"
    "  code INTEGER NOT NULL,"
    "  peer TEXT NOT NULL,"
    "  request_id TEXT NOT NULL,"
    "  prev_hash BLOB NOT NULL,"
    "  hash BLOB NOT NULL);"
    "CREATE INDEX audit_log_by_account ON audit_log(account_id, seq);"
    "CREATE INDEX audit_log_by_time ON audit_log(at);"
    "CREATE TABLE audit_anchor ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  seq INTEGER NOT NULL,"
    "  hash BLOB NOT NULL);"
    "INSERT INTO audit_anchor VALUES (1, 0, zeroblob(32));",

    /* 10: an API key's own rate limit, as text ("" = its account's). */
    "ALTER TABLE api_keys ADD COLUMN rate_limit TEXT NOT NULL DEFAULT '';",

    /* 11: alert evaluation (server/alerts/evaluator.c): the accounts with
     * rules, each instance's state, and the history of state changes. IF
     * NOT EXISTS: data directories of earlier builds may hold them already
     * (the evaluator created them itself before this step). */
    "CREATE TABLE IF NOT EXISTS alert_accounts (account_id TEXT PRIMARY KEY) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS alert_instances ("
    "  alert_id TEXT NOT NULL,"
    "  group_key TEXT NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  since INTEGER NOT NULL,"
    "  last_notified INTEGER NOT NULL,"
    "  notified INTEGER NOT NULL,"
    "  value REAL NOT NULL,"
    "  has_value INTEGER NOT NULL,"
    "  PRIMARY KEY (alert_id, group_key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS alert_history ("
    "  entry_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  alert_id TEXT NOT NULL,"
    "  account_id TEXT NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  previous_state TEXT NOT NULL,"
    "  value REAL NOT NULL,"
    "  has_value INTEGER NOT NULL,"
    "  threshold REAL NOT NULL,"
    "  severity TEXT NOT NULL,"
    "  group_json TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  channels TEXT NOT NULL,"
    "  failed TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS alert_history_by_alert ON alert_history(alert_id, entry_id);"
    "CREATE INDEX IF NOT EXISTS alert_history_by_time ON alert_history(at);",

    /* 12: each account's data keys (server/crypto/), wrapped by the master
     * key; the highest key id is the current one. */
    "CREATE TABLE data_keys ("
    "  account_id TEXT NOT NULL,"
    "  key_id INTEGER NOT NULL,"
    "  wrapped BLOB NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (account_id, key_id)) WITHOUT ROWID;",

    /* 13: events laid out by day (ana_local_db.h, "event layout"): the
     * rowid is the event's UTC day times 2^40 plus its commit sequence, so
     * that an import at random times appends at the end of each day's range
     * rather than at random places, and retention deletes whole days; seq
     * has its own (append-only) index, and the last one handed out its
     * row. One index, events_by_slot, finds an account's events by 6-hour
     * slot (appended to within each slot, in seq order) and holds what a
     * search sorts and filters a page on (ts, event_name, event_id); the
     * per-field indexes (time, name, type, session, expiry), whose inserts
     * landed at random places, are gone. The keys' expiry index is by
     * day. The rows are copied in seq order (no sort: temp_store is
     * MEMORY), which is about day order for events tracked live. */
    "CREATE TABLE events_by_day_layout ("
    "  key INTEGER PRIMARY KEY,"
    "  seq INTEGER NOT NULL,"
    "  account_id TEXT NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  session_id TEXT NOT NULL DEFAULT '',"
    "  event_type TEXT NOT NULL,"
    "  event_name TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  received_at INTEGER NOT NULL,"
    "  properties TEXT NOT NULL DEFAULT '{}',"
    "  search_text TEXT NOT NULL DEFAULT '',"
    "  payload BLOB NOT NULL);"
    "INSERT INTO events_by_day_layout SELECT (ts / 86400000) * 1099511627776 + seq, seq,"
    "  account_id, event_id, session_id, event_type, event_name, ts, received_at, properties,"
    "  search_text, payload FROM events;"
    "CREATE TABLE event_seq ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  last INTEGER NOT NULL);"
    "INSERT INTO event_seq VALUES (1, MAX("
    "  COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
    "  COALESCE((SELECT MAX(seq) FROM events), 0)));"
    "DROP TABLE events;"
    "ALTER TABLE events_by_day_layout RENAME TO events;"
    "CREATE UNIQUE INDEX events_by_seq ON events(seq);"
    "CREATE INDEX events_by_slot ON events(account_id, ts / 21600000, seq, ts, event_name,"
    "  event_id);"
    "DROP INDEX dedupe_keys_expiry;"
    "CREATE INDEX dedupe_keys_by_day ON dedupe_keys(expires_at / 86400000);",

    /* 14: the secret the blind index keys are derived from (server/crypto/),
     * wrapped by the master key: written when the master key changes, so
     * that blind indexes keep matching under the new one. Absent, it is
     * derived from the master key itself. */
    "CREATE TABLE IF NOT EXISTS key_root ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  wrapped BLOB NOT NULL,"
    "  created_at INTEGER NOT NULL);",
    /* 15: an event's free text and payload in one column, body
     * (event_body.c), compressed with the dictionary of event_dicts that
     * its first byte names (0: uncompressed, as the rows copied here): the
     * payload was stored once more beside its columns, uncompressed. */
    "CREATE TABLE IF NOT EXISTS event_dicts ("
    "  id INTEGER PRIMARY KEY,"
    "  dict BLOB NOT NULL);"
    "CREATE TABLE events_with_body ("
    "  key INTEGER PRIMARY KEY,"
    "  seq INTEGER NOT NULL,"
    "  account_id TEXT NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  session_id TEXT NOT NULL DEFAULT '',"
    "  event_type TEXT NOT NULL,"
    "  event_name TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  received_at INTEGER NOT NULL,"
    "  properties TEXT NOT NULL DEFAULT '{}',"
    "  body BLOB NOT NULL);"
    "INSERT INTO events_with_body SELECT key, seq, account_id, event_id, session_id, event_type,"
    "  event_name, ts, received_at, properties, ana_event_body(search_text, payload)"
    "  FROM events ORDER BY key;"
    "DROP TABLE events;"
    "ALTER TABLE events_with_body RENAME TO events;"
    "CREATE UNIQUE INDEX events_by_seq ON events(seq);"
    "CREATE INDEX events_by_slot ON events(account_id, ts / 21600000, seq, ts, event_name,"
    "  event_id);",
    /* The re-encryption of events stored before a field joined
     * ENCRYPTED_FIELDS (reencrypt_state.c): the field list the stored events
     * are sealed under, how far the rewrite is, and the events whose free
     * text is to be indexed again. */
    "CREATE TABLE IF NOT EXISTS field_reencryption ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  fields TEXT NOT NULL,"
    "  upto_seq INTEGER NOT NULL,"
    "  next_seq INTEGER NOT NULL,"
    "  phase INTEGER NOT NULL,"
    "  rewritten INTEGER NOT NULL DEFAULT 0,"
    "  started_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS field_reencryption_reindex (seq INTEGER PRIMARY KEY);",

    /* The deduplication keys without their expiry index (dedupe_keys.c):
     * dedupe_keys keeps only (account number, event_id), dedupe_accounts
     * numbers the accounts, and dedupe_expiry lists the keys by the UTC day
     * they expire on, at most 1,000 a row here, in rows numbered
     * day * 2^32 + n. Every step reads the old table in an index's order
     * (no sort of all keys in memory). */
    "CREATE TABLE dedupe_accounts ("
    "  id INTEGER PRIMARY KEY,"
    "  account_id TEXT NOT NULL UNIQUE);"
    "INSERT INTO dedupe_accounts (account_id) SELECT DISTINCT account_id FROM dedupe_keys"
    "  ORDER BY account_id;"
    "CREATE TABLE dedupe_keys_by_id ("
    "  account INTEGER NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  PRIMARY KEY (account, event_id)) WITHOUT ROWID;"
    "INSERT INTO dedupe_keys_by_id SELECT a.id, k.event_id FROM dedupe_keys AS k NOT INDEXED"
    "  JOIN dedupe_accounts a USING (account_id) ORDER BY k.account_id, k.event_id;"
    "CREATE TABLE dedupe_expiry ("
    "  id INTEGER PRIMARY KEY,"
    "  keys BLOB NOT NULL);"
    "SELECT ana_dedupe_build_lists();"
    "DROP TABLE dedupe_keys;"
    "ALTER TABLE dedupe_keys_by_id RENAME TO dedupe_keys;",

    /* The re-encryption job's event dictionaries (event_dicts ids up to
     * tainted), trained before it began, which may hold fragments of clear
     * values: the job stores the bodies compressed with them uncompressed and
     * deletes them (reencrypt_state.c). */
    "CREATE TABLE IF NOT EXISTS field_reencryption_dicts ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  tainted INTEGER NOT NULL);",

    /* Events rows without a second copy of their values (local_db_sql.h):
     * the properties move into the body (content v2, event_body.c), whose
     * payload leaves out the event id and the two timestamps the columns
     * hold; the account is its number in dedupe_accounts; a canonical
     * lower-case UUID event id is stored as its 16 bytes (event_ids.c), in
     * the rows and in dedupe_keys; received_at as its distance to ts. Both
     * tables are copied in their key order (no sort of all rows); the
     * events' indexes are made again as they were (events_by_seq,
     * events_by_slot), so a migration that changes them comes after. */
    "INSERT OR IGNORE INTO dedupe_accounts (account_id) SELECT DISTINCT account_id FROM events;"
    "CREATE TABLE events_v2 ("
    "  key INTEGER PRIMARY KEY,"
    "  seq INTEGER NOT NULL,"
    "  account_id INTEGER NOT NULL,"
    "  event_id BLOB NOT NULL,"
    "  session_id TEXT NOT NULL DEFAULT '',"
    "  event_type TEXT NOT NULL,"
    "  event_name TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  received_delta INTEGER NOT NULL,"
    "  body BLOB NOT NULL);"
    "INSERT INTO events_v2 SELECT key, seq,"
    "  (SELECT a.id FROM dedupe_accounts a WHERE a.account_id = e.account_id),"
    "  ana_event_id_pack(event_id), session_id, event_type, event_name, ts, received_at - ts,"
    "  ana_event_body_v2(body, properties, event_id, ts, received_at)"
    "  FROM events e ORDER BY key;"
    "DROP TABLE events;"
    "ALTER TABLE events_v2 RENAME TO events;"
    "CREATE UNIQUE INDEX events_by_seq ON events(seq);"
    "CREATE INDEX events_by_slot ON events(account_id, ts / 21600000, seq, ts, event_name,"
    "  event_id);"
    "CREATE TABLE dedupe_keys_v2 ("
    "  account INTEGER NOT NULL,"
    "  event_id BLOB NOT NULL,"
    "  PRIMARY KEY (account, event_id)) WITHOUT ROWID;"
    "INSERT INTO dedupe_keys_v2 SELECT account, ana_event_id_pack(event_id) FROM dedupe_keys"
    "  ORDER BY account, event_id;"
    "DROP TABLE dedupe_keys;"
    "ALTER TABLE dedupe_keys_v2 RENAME TO dedupe_keys;",

    /* How far each metric's rollups include the events other instances
     * shipped to a shared event store (rollup_cells.c): per metric version
     * and instance, the sequence up to which they are in its cells. */
    "CREATE TABLE IF NOT EXISTS metric_rollup_others ("
    "  metric_id TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  instance TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  PRIMARY KEY (metric_id, instance)) WITHOUT ROWID;",
    /* events_by_time_name in place of events_by_slot: an account's events
     * in (ts, event_id) order, with the event name. A page newest first is
     * read in the index's order, without sorting a slot (the eventName
     * checked on the entries), and a scan of some event names reads only
     * their rows. Events tracked live append to it; an import at random
     * times inserts into it at random places (the table still appends to
     * each day's range). */
    "DROP INDEX events_by_slot;"
    "CREATE INDEX events_by_time_name ON events(account_id, ts, event_id, event_name);",

    /* Staging: a commit's events as one row (first_seq..last_seq, n events,
     * the batch encoded, raw_len bytes before zstd), moved into events by
     * the mover in sequence order and deleted in the same transaction
     * (staging.c). */
    "CREATE TABLE IF NOT EXISTS events_staged ("
    "  first_seq INTEGER PRIMARY KEY,"
    "  last_seq INTEGER NOT NULL,"
    "  n INTEGER NOT NULL,"
    "  raw_len INTEGER NOT NULL,"
    "  batch BLOB NOT NULL);",

    /* Events rows without what other bytes give back (local_db_sql.h): the
     * event type and name as numbers of event_strings (one table for both:
     * a name is stored once, not in every row and index entry); seq as a
     * generated column of the key (its low 40 bits, which the key always
     * held), so that only events_by_seq stores it, and ts one too, from the
     * key's day and the time within it (ms: 4 bytes where ts took 6);
     * events_by_time_name without the event id (a page's ties at one timestamp are sorted by
     * the event id of their rows). The strings are numbered in a scan of
     * the table, which is then copied in key order (no sort of all rows). */
    "CREATE TABLE event_strings ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE);"
    "INSERT OR IGNORE INTO event_strings (name) SELECT event_type FROM events;"
    "INSERT OR IGNORE INTO event_strings (name) SELECT event_name FROM events;"
    "CREATE TABLE events_v3 ("
    "  key INTEGER PRIMARY KEY,"
    "  account_id INTEGER NOT NULL,"
    "  event_id BLOB NOT NULL,"
    "  session_id TEXT NOT NULL DEFAULT '',"
    "  event_type INTEGER NOT NULL,"
    "  event_name INTEGER NOT NULL,"
    "  ms INTEGER NOT NULL,"
    "  received_delta INTEGER NOT NULL,"
    "  body BLOB NOT NULL,"
    "  seq INTEGER GENERATED ALWAYS AS (key & 1099511627775) VIRTUAL,"
    "  ts INTEGER GENERATED ALWAYS AS ((key >> 40) * 86400000 + ms) VIRTUAL);"
    "INSERT INTO events_v3 (key, account_id, event_id, session_id, event_type, event_name, ms,"
    "  received_delta, body) SELECT key, account_id, event_id, session_id,"
    "  (SELECT s.id FROM event_strings s WHERE s.name = e.event_type),"
    "  (SELECT s.id FROM event_strings s WHERE s.name = e.event_name),"
    "  ts - (key >> 40) * 86400000, received_delta, body FROM events e ORDER BY key;"
    "DROP TABLE events;"
    "ALTER TABLE events_v3 RENAME TO events;"
    "CREATE UNIQUE INDEX events_by_seq ON events(seq);"
    "CREATE INDEX events_by_time_name ON events(account_id, ts, event_name);",

    /* The deduplication keys with the day they expire on in each row
     * (dedupe_keys.c), in place of the lists of dedupe_expiry, which held
     * every key a second time: the keys are copied in key order, then each
     * list gives its keys their day (a key in no readable list, as before,
     * never expires: day 2^40). */
    "CREATE TABLE dedupe_keys_by_day ("
    "  account INTEGER NOT NULL,"
    "  event_id BLOB NOT NULL,"
    "  expires INTEGER NOT NULL,"
    "  PRIMARY KEY (account, event_id)) WITHOUT ROWID;"
    "INSERT INTO dedupe_keys_by_day SELECT account, event_id, 1099511627776 FROM dedupe_keys"
    "  ORDER BY account, event_id;"
    "SELECT ana_dedupe_days_from_lists();"
    "DROP TABLE dedupe_keys;"
    "DROP TABLE dedupe_expiry;"
    "ALTER TABLE dedupe_keys_by_day RENAME TO dedupe_keys;",

    /* The deduplication keys as sorted runs (dedupe_runs.c): the keys of
     * dedupe_keys, read in key order, written as runs of at most 65,536
     * keys (merged later, in the background). */
    "CREATE TABLE dedupe_meta (id INTEGER PRIMARY KEY, seed INTEGER NOT NULL);"
    "INSERT INTO dedupe_meta (id, seed) VALUES (1, random());"
    "CREATE TABLE dedupe_runs ("
    "  id INTEGER PRIMARY KEY,"
    "  level INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  keys INTEGER NOT NULL,"
    "  chunks INTEGER NOT NULL,"
    "  k INTEGER NOT NULL,"
    "  days BLOB NOT NULL,"
    "  fences BLOB,"
    "  filter_bytes INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE dedupe_chunks (id INTEGER PRIMARY KEY, keys BLOB NOT NULL);"
    "CREATE TABLE dedupe_filters (id INTEGER PRIMARY KEY, bits BLOB NOT NULL);"
    "SELECT ana_dedupe_runs_from_keys();"
    "DROP TABLE dedupe_keys;",

    /* No index on seq (events_by_seq took 19 bytes per event, and its own
     * pages per move): each day's range of the table is in seq order, and
     * event_days bounds the seqs of each day (local_db_sql.h, event_seq.c).
     * Filled here by two seeks per day (its first and last key, no scan),
     * day after day; the free-text index's noted events (re-encryption) are
     * named by their key from now on (the index's entries keep naming their
     * seq: a key per entry took 9 bytes more and 3x the index's CPU). */
    "DROP TABLE IF EXISTS event_days;"
    "CREATE TABLE event_days ("
    "  day INTEGER PRIMARY KEY,"
    "  min_seq INTEGER NOT NULL,"
    "  max_seq INTEGER NOT NULL);"
    "WITH RECURSIVE d(day) AS ("
    "  SELECT (SELECT key FROM events ORDER BY key LIMIT 1) >> 40"
    "  UNION ALL SELECT (SELECT key FROM events WHERE key >= (d.day + 1) * 1099511627776"
    "    ORDER BY key LIMIT 1) >> 40 FROM d WHERE d.day IS NOT NULL)"
    "INSERT INTO event_days SELECT day,"
    "  (SELECT key FROM events WHERE key >= day * 1099511627776 ORDER BY key LIMIT 1)"
    "    & 1099511627775,"
    "  (SELECT key FROM events WHERE key < (day + 1) * 1099511627776 ORDER BY key DESC LIMIT 1)"
    "    & 1099511627775"
    "  FROM d WHERE day IS NOT NULL;"
    "DROP TABLE IF EXISTS field_reencryption_reindex_keys;"
    "CREATE TABLE field_reencryption_reindex_keys (key INTEGER PRIMARY KEY);"
    "INSERT OR IGNORE INTO field_reencryption_reindex_keys SELECT e.key"
    "  FROM field_reencryption_reindex r JOIN events e ON e.seq = r.rowid;"
    "DROP TABLE field_reencryption_reindex;"
    "ALTER TABLE field_reencryption_reindex_keys RENAME TO field_reencryption_reindex;"
    "DROP INDEX IF EXISTS events_by_seq;",

    /* The acknowledged commit's tables in a file of their own, the journal
     * (analytics-journal.db, attached as `journal`): SQLite has one write
     * lock per file, and the mover's transaction on analytics.db no longer
     * holds the commits back. The tables are copied into the journal before
     * this step, in a transaction of the journal's own (move_to_journal:
     * not SQL of a migration, as a migration commits in analytics.db); this
     * step records how far the staged events are moved (events_moved: the
     * mover's watermark in analytics.db, committed with each move; staged
     * rows at or below it are moved already) and drops analytics.db's
     * copies. A crash between the two leaves the tables in both files: the
     * copy in the journal is complete (it committed), and this step runs
     * again at the next start. */
    "CREATE TABLE IF NOT EXISTS main.events_moved ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  upto INTEGER NOT NULL);"
    "INSERT OR REPLACE INTO main.events_moved VALUES (1, COALESCE("
    "  (SELECT MIN(first_seq) - 1 FROM journal.events_staged),"
    "  (SELECT last FROM journal.event_seq WHERE id = 1), 0));"
    "DROP TABLE IF EXISTS main.events_staged;"
    "DROP TABLE IF EXISTS main.event_seq;"
    "DROP TABLE IF EXISTS main.dedupe_meta;"
    "DROP TABLE IF EXISTS main.dedupe_runs;"
    "DROP TABLE IF EXISTS main.dedupe_chunks;"
    "DROP TABLE IF EXISTS main.dedupe_filters;",

    /* The time index as sorted runs (time_runs.c) in place of
     * events_by_time_name: an import at random times inserted into that
     * index at a random page per event (thousands of pages per move, its
     * WAL and checkpoint growing with the store); a move now writes one
     * small run per (account, hour) it touched. Built from the rows in
     * (account, ts) order, one run per hour; re-run from the start after a
     * crash (one transaction). */
    "CREATE TABLE IF NOT EXISTS event_time_runs ("
    "  account_id INTEGER NOT NULL,"
    "  hour INTEGER NOT NULL,"
    "  run INTEGER NOT NULL,"
    "  n INTEGER NOT NULL,"
    "  lo INTEGER NOT NULL,"
    "  hi INTEGER NOT NULL,"
    "  entries BLOB NOT NULL,"
    "  PRIMARY KEY (account_id, hour, run)) WITHOUT ROWID;"
    "DELETE FROM event_time_runs;"
    "SELECT ana_time_runs_from_events();"
    "DROP INDEX IF EXISTS events_by_time_name;",
};

/* The tables of the journal (the migration above). */
static const char *const journal_tables[] = {"events_staged", "event_seq",     "dedupe_meta",
                                             "dedupe_runs",   "dedupe_chunks", "dedupe_filters"};
#define JOURNAL_TABLES ((int)(sizeof journal_tables / sizeof journal_tables[0]))

#define MIGRATION_COUNT ((int)(sizeof migrations / sizeof migrations[0]))

static int sql_error(sqlite3 *db, const char *what, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: %s: %s", what, sqlite3_errmsg(db));
  return ANA_ERR_IO;
}

static int exec(sqlite3 *db, const char *sql, struct ana_error *err) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    if ((sqlite3_errcode(db) & 0xff) == SQLITE_FULL) /* see ana_local_db_open */
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "the disk is full: %s",
                    msg ? msg : "no space left");
    else
      ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: %s", msg ? msg : "error");
    sqlite3_free(msg);
    return ANA_ERR_IO;
  }
  return 0;
}

static int open_connection(const char *path, int flags, sqlite3 **out, struct ana_error *err) {
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, ana_wal_write_vfs()) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "DATA_DIR: cannot open %s: %s", path,
                  db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return ANA_ERR_IO;
  }
  sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
  sqlite3_extended_result_codes(db, 1);
  if (ana_event_body_register(db) < 0 || ana_dedupe_register(db) < 0 ||
      ana_time_runs_register(db) < 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "DATA_DIR: %s: %s", path, sqlite3_errmsg(db));
    sqlite3_close(db);
    return ANA_ERR_INTERNAL;
  }
  /* The last connection to close keeps the WAL file (SQLite would delete
   * it): see ana_local_db_close. */
  int persist_wal = 1;
  sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
  /* A new database gives the pages that retention frees back to the file
   * system (ana_local_db_reclaim); SQLite takes this only while the file is
   * empty, before the switch to WAL writes its first page (an older
   * database keeps its free pages for reuse). */
  if ((flags & SQLITE_OPEN_CREATE) && exec(db, "PRAGMA auto_vacuum = INCREMENTAL", err) < 0) {
    sqlite3_close(db);
    return ANA_ERR_IO;
  }
  /* WAL lets searches read while the committer writes; FULL syncs the WAL
   * on every commit, so a commit that returned is on disk. */
  /* secure_delete FAST: a deleted row's bytes are zeroed in the pages that
   * are written anyway (no more I/O), so rewritten or deleted values (the
   * clear ones re-encryption replaces) linger in no page still in use; whole
   * free pages go with ana_local_db_scrub. */
  if (exec(db,
           "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
           "PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY; PRAGMA secure_delete=FAST;",
           err) < 0) {
    sqlite3_close(db);
    return ANA_ERR_IO;
  }
  *out = db;
  return 0;
}

/* A WAL that starts over is cut to this size (SQLite truncates it at the
 * first commit after the restart): not to zero, because appending to a
 * file costs more than overwriting it (see leave_wal_for_next_start). */
static void set_journal_limit(sqlite3 *conn, int pages) {
  char sql[80];
  long long bytes = pages < 0 ? -1LL : (long long)pages * PAGE_BYTES;
  snprintf(sql, sizeof sql, "PRAGMA main.journal_size_limit = %lld", bytes);
  sqlite3_exec(conn, sql, NULL, NULL, NULL);
  /* The journal, where it is attached (analytics.db's writer). */
  if (sqlite3_db_filename(conn, "journal")) {
    snprintf(sql, sizeof sql, "PRAGMA journal.journal_size_limit = %lld", bytes);
    sqlite3_exec(conn, sql, NULL, NULL, NULL);
  }
}

static int schema_version(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int v = 0;
  if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &st,
                         NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

int ana_local_db_migration_containing(const char *text) {
  for (int i = 0; i < MIGRATION_COUNT; i++)
    if (strstr(migrations[i], text))
      return i + 1;
  return 0;
}

static int table_in(sqlite3 *db, const char *schema, const char *table, char **sql) {
  char q[128];
  snprintf(q, sizeof q, "SELECT sql FROM %s.sqlite_schema WHERE type = 'table' AND name = ?",
           schema);
  sqlite3_stmt *st = NULL;
  int found = -1;
  if (sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    found = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
    if (found == 1 && sql)
      *sql = sqlite3_mprintf("%s", (const char *)sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  return found;
}

/* Before the journal's migration: copies each journal table that is in
 * analytics.db only into the journal (as created there, rows and all), in
 * one transaction of the journal's own, committed before the migration
 * drops them from analytics.db. A table already in the journal was copied
 * whole by an earlier start (its copy committed). */
static int move_to_journal(sqlite3 *db, struct ana_error *err) {
  if (!sqlite3_db_filename(db, "journal"))
    return ana_error_set(err, ANA_STATUS_INTERNAL, "the journal is not attached");
  if (exec(db, "BEGIN", err) < 0)
    return ANA_ERR_IO;
  int rc = 0, copied = 0;
  for (int t = 0; t < JOURNAL_TABLES && rc == 0; t++) {
    char *create = NULL;
    int in_main = table_in(db, "main", journal_tables[t], &create);
    int in_journal = table_in(db, "journal", journal_tables[t], NULL);
    if (in_main < 0 || in_journal < 0)
      rc = sql_error(db, "cannot read the schema", err);
    /* As SQLite stores it: "CREATE TABLE name(...)". */
    const char *prefix = "CREATE TABLE ";
    if (rc == 0 && in_main == 1 && in_journal == 0) {
      if (!create || strncmp(create, prefix, strlen(prefix)) != 0) {
        rc = ana_error_set(err, ANA_STATUS_INTERNAL, "the table %s has an unexpected schema",
                           journal_tables[t]);
      } else {
        char *sql = sqlite3_mprintf("CREATE TABLE journal.%s; INSERT INTO journal.%s SELECT *"
                                    " FROM main.%s;",
                                    create + strlen(prefix), journal_tables[t], journal_tables[t]);
        rc = sql ? exec(db, sql, err)
                 : ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        sqlite3_free(sql);
        copied++;
      }
    }
    sqlite3_free(create);
  }
  if (rc == 0 && exec(db, "COMMIT", err) < 0)
    rc = ANA_ERR_IO;
  if (rc < 0) {
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
  }
  if (copied)
    ANA_INFO("store", "%d tables copied into the journal", copied);
  return 0;
}

static int migrate_upto(sqlite3 *db, int upto, struct ana_error *err) {
  if (exec(db,
           "CREATE TABLE IF NOT EXISTS schema_migrations ("
           "  version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
           err) < 0)
    return ANA_ERR_IO;
  int have = schema_version(db);
  if (have > MIGRATION_COUNT) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                  "DATA_DIR: the database has schema version %d, newer than this "
                  "analyticsd (%d); use a newer analyticsd",
                  have, MIGRATION_COUNT);
    return ANA_ERR_INVALID;
  }
  for (int v = have + 1; v <= upto; v++) {
    char record[128];
    snprintf(
        record, sizeof record,
        "INSERT INTO schema_migrations VALUES (%d, CAST(strftime('%%s','now') AS INTEGER) * 1000)",
        v);
    if (strstr(migrations[v - 1], "main.events_moved (") && move_to_journal(db, err) < 0)
      return ANA_ERR_IO;
    if (exec(db, "BEGIN IMMEDIATE", err) < 0)
      return ANA_ERR_IO;
    if (exec(db, migrations[v - 1], err) < 0 || exec(db, record, err) < 0) {
      sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
      return ANA_ERR_IO;
    }
    if (exec(db, "COMMIT", err) < 0) {
      sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
      return ANA_ERR_IO;
    }
    ANA_INFO("store", "schema migrated to version %d", v);
    /* Each migration's pages go into the database before the next one
     * writes, so the WAL is reused from its start: a new store's WAL stays
     * the size of its largest migration, not of all of them (it must fit
     * a nearly full disk), and a rebuilt table is not replayed twice. */
    sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  }
  return 0;
}

static int migrate(sqlite3 *db, struct ana_error *err) {
  return migrate_upto(db, MIGRATION_COUNT, err);
}

int ana_local_db_migrate_upto(sqlite3 *conn, int version, struct ana_error *err) {
  return migrate_upto(conn, version < MIGRATION_COUNT ? version : MIGRATION_COUNT, err);
}

/* The event writer waits for another connection's write (a rollup round, a
 * catalog change) in short steps: SQLite's own busy timeout sleeps 1, 2, 5,
 * 10... ms between tries, which would turn a 1 ms write into 3 ms of waiting
 * for every request queued behind the commit. Gives up once its sleeps add
 * up to BUSY_TIMEOUT_MS, like the other connections (SQLite counts so too). */
static int writer_busy(void *arg, int tries) {
  static const useconds_t steps_us[] = {20, 50, 100, 200, 500};
  enum { STEPS = sizeof steps_us / sizeof steps_us[0], LAST_US = 1000 };
  (void)arg;
  long long slept_us = tries > STEPS ? (long long)(tries - STEPS) * LAST_US : 0;
  for (int i = 0; i < tries && i < STEPS; i++)
    slept_us += steps_us[i];
  if (slept_us >= (long long)BUSY_TIMEOUT_MS * 1000)
    return 0;
  usleep(tries < STEPS ? steps_us[tries] : LAST_US);
  return 1;
}

/* Called by SQLite after every commit of a writing connection, with the
 * WAL's size in pages. */
static int on_wal_commit(void *arg, sqlite3 *conn, const char *name, int pages) {
  (void)conn;
  struct wal_ckpt *c = arg;
  /* analytics.db's writer has the journal attached: its commits there. */
  if (name && strcmp(name, "journal") == 0)
    c = &c->db->ck[CK_JOURNAL];
  pthread_mutex_lock(&c->checkpoint_mu);
  c->commits++;
  /* A WAL smaller than before was started over by this commit. */
  c->new_pages += pages >= c->wal_pages ? pages - c->wal_pages : pages;
  c->wal_pages = pages;
  if (c->new_pages >= c->checkpoint_pages)
    pthread_cond_signal(&c->checkpoint_cond);
  pthread_mutex_unlock(&c->checkpoint_mu);
  return SQLITE_OK;
}

/* The WAL's size at which the event writer waits: twice the checkpoint
 * size less room for one commit (half of it, or 4 MiB, or all of it when it
 * is smaller), so that the commit that crosses it stays within twice. */
static int limit_pages(int checkpoint_pages) {
  int room = checkpoint_pages / 2;
  if (room < COMMIT_ROOM_PAGES)
    room = checkpoint_pages < COMMIT_ROOM_PAGES ? checkpoint_pages : COMMIT_ROOM_PAGES;
  return 2 * checkpoint_pages - room;
}

/* Whether the WAL holds limit_pages or more: readers of old snapshots kept
 * the checkpoints from copying it all, or the commits from starting it over
 * (a commit restarts the WAL only when no reader still reads frames of it;
 * a checkpoint that copied it all is not enough). The event writer waits at
 * BEGIN while this holds and the checkpoint thread starts the WAL over
 * itself (restart_wal), so the WAL grows past limit_pages by one commit at
 * most. Called with checkpoint_mu held. */
static bool wal_over(const struct wal_ckpt *c) {
  return c->wal_pages >= c->limit_pages;
}

/* Whether the WAL has no room for `room` more pages (the mover's move)
 * within limit_pages. Called with checkpoint_mu held. */
static bool wal_no_room(const struct wal_ckpt *c, int room) {
  return room > 0 && c->wal_pages + room >= c->limit_pages;
}

/* Copies the whole WAL and has it start over (a RESTART checkpoint: it takes
 * the write lock, so no commit runs beside it, which also keeps it clear of
 * the WAL-reset race above, and waits for the readers of older snapshots to
 * end; the next commit then writes from the WAL's start). Called and
 * returns with checkpoint_mu held. */
static void restart_wal(struct wal_ckpt *c) {
  int log = 0, done = 0;
  c->new_pages = 0;
  pthread_mutex_unlock(&c->checkpoint_mu);
  int rc = sqlite3_wal_checkpoint_v2(c->checkpointer, NULL, SQLITE_CHECKPOINT_RESTART, &log, &done);
  pthread_mutex_lock(&c->checkpoint_mu);
  if (rc != SQLITE_OK)
    return; /* a reader held on past the busy timeout: tried again */
  c->restarts++;
  c->wal_pages = 0;
  /* Copied whole: the next checkpoint waits for a commit (the WAL-reset
   * note above), and the held writer goes on. */
  c->waiting_for_reset = true;
  c->complete_commits = c->commits;
  pthread_cond_broadcast(&c->gate_cond);
}

/* The checkpoint connection waits for readers and the write lock in 1 ms
 * steps, up to BUSY_TIMEOUT_MS, and not at all once the database closes. */
static int checkpointer_busy(void *arg, int tries) {
  struct wal_ckpt *c = arg;
  if (__atomic_load_n(&c->checkpoint_stop, __ATOMIC_RELAXED) || tries >= BUSY_TIMEOUT_MS)
    return 0;
  usleep(1000);
  return 1;
}

/* One PASSIVE checkpoint (it never waits for the writer or readers: it
 * copies what it can). Called and returns with checkpoint_mu held. Returns
 * true when it copied the whole WAL as it was when it began. */
static bool checkpoint_once(struct wal_ckpt *c, int *log) {
  int done = 0;
  c->new_pages = 0;
  pthread_mutex_unlock(&c->checkpoint_mu);
  int rc = sqlite3_wal_checkpoint_v2(c->checkpointer, NULL, SQLITE_CHECKPOINT_PASSIVE, log, &done);
  pthread_mutex_lock(&c->checkpoint_mu);
  /* Counted after the checkpoint returned: a commit counted later ended
   * after the copy was complete. */
  c->waiting_for_reset = rc == SQLITE_OK && done == *log;
  c->complete_commits = c->commits;
  if (c->waiting_for_reset)
    pthread_cond_broadcast(&c->gate_cond); /* a held writer may start the WAL over */
  return c->waiting_for_reset;
}

/* Copies what commits appended during the last checkpoint, so that the
 * next commit starts the WAL over. While commits keep appending many pages
 * it copies them alongside (a few passes at most); the last few are copied
 * while the event writer waits at BEGIN. log: the WAL's size in the
 * snapshot the last checkpoint copied whole. Called with checkpoint_mu
 * held. */
static void catch_up(struct wal_ckpt *c, int log) {
  for (int pass = 0; pass < CATCH_UP_PASSES && c->wal_pages - log > CATCH_UP_HELD_PAGES; pass++) {
    bool whole = checkpoint_once(c, &log);
    c->checkpoints++;
    if (!whole || c->wal_pages <= log)
      return; /* readers kept pages back, or nothing appended: done */
  }
  c->gate_closed = true;
  while (c->writer_in_txn && !c->checkpoint_stop)
    pthread_cond_wait(&c->gate_cond, &c->checkpoint_mu);
  if (!c->checkpoint_stop) {
    checkpoint_once(c, &log);
    c->catch_ups++;
  }
  c->gate_closed = false;
  pthread_cond_broadcast(&c->gate_cond);
}

static const char *const ck_files[2] = {"analytics.db", "analytics-journal.db"};

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_local_db *db = ctx;
  uint64_t background[2], catch_ups[2], waits[2], restarts[2], wal_pages[2], wal_bytes[2];
  for (int f = 0; f < 2; f++) {
    struct wal_ckpt *c = &db->ck[f];
    pthread_mutex_lock(&c->checkpoint_mu);
    background[f] = c->checkpoints;
    catch_ups[f] = c->catch_ups;
    waits[f] = c->writer_waits;
    restarts[f] = c->restarts;
    wal_pages[f] = (uint64_t)c->wal_pages;
    pthread_mutex_unlock(&c->checkpoint_mu);
    char wal[4200];
    snprintf(wal, sizeof wal, "%s-wal", c->path);
    struct stat st;
    wal_bytes[f] = stat(wal, &st) == 0 ? (uint64_t)st.st_size : 0;
  }
  ana_prom_write_family(w, "ana_store_checkpoints_total", "counter",
                        "WAL checkpoints of the local database's files: in the background, and "
                        "catch-ups that held event commits back briefly to restart the WAL.");
  for (int f = 0; f < 2; f++) {
    ana_prom_write_u64(w, "ana_store_checkpoints_total",
                       (const char *const[]){"file", ck_files[f], "kind", "background", NULL},
                       background[f]);
    ana_prom_write_u64(w, "ana_store_checkpoints_total",
                       (const char *const[]){"file", ck_files[f], "kind", "catch_up", NULL},
                       catch_ups[f]);
    ana_prom_write_u64(w, "ana_store_checkpoints_total",
                       (const char *const[]){"file", ck_files[f], "kind", "restart", NULL},
                       restarts[f]);
  }
  ana_prom_write_family(w, "ana_store_wal_pages", "gauge",
                        "Pages in the WAL of each file of the local database after its last "
                        "commit.");
  for (int f = 0; f < 2; f++)
    ana_prom_write_u64(w, "ana_store_wal_pages", (const char *const[]){"file", ck_files[f], NULL},
                       wal_pages[f]);
  ana_prom_write_family(w, "ana_store_wal_bytes", "gauge",
                        "Size of the WAL file of each file of the local database in bytes (each at "
                        "most 2 x WAL_CHECKPOINT_MB; trimmed to WAL_CHECKPOINT_MB when it starts "
                        "over).");
  for (int f = 0; f < 2; f++)
    ana_prom_write_u64(w, "ana_store_wal_bytes", (const char *const[]){"file", ck_files[f], NULL},
                       wal_bytes[f]);
  ana_prom_write_family(w, "ana_store_wal_waits_total", "counter",
                        "Event commits and moves that waited for a WAL to start over because it "
                        "held its bound (readers of old snapshots kept it from starting over).");
  for (int f = 0; f < 2; f++)
    ana_prom_write_u64(w, "ana_store_wal_waits_total",
                       (const char *const[]){"file", ck_files[f], NULL}, waits[f]);
}

static void *checkpoint_loop(void *arg) {
  pthread_setname_np(pthread_self(), "ana-checkpoint"); /* top -H, /proc/PID/task/TID/comm */
  struct wal_ckpt *c = arg;
  pthread_mutex_lock(&c->checkpoint_mu);
  while (!c->checkpoint_stop) {
    struct timespec ts = ana_clock_deadline(
        CLOCK_REALTIME, c->writer_held && !c->gate_closed ? HELD_RETRY_MS : CHECKPOINT_EVERY_MS);
    bool blocked = c->waiting_for_reset && c->commits == c->complete_commits;
    if (blocked || (c->new_pages < c->checkpoint_pages && !c->soon))
      pthread_cond_timedwait(&c->checkpoint_cond, &c->checkpoint_mu, &ts);
    /* Asked by the idle mover: also again after a checkpoint that readers
     * kept from copying everything (never after a whole one: see above). */
    bool soon = c->soon && !c->waiting_for_reset;
    c->soon = false;
    if (c->checkpoint_stop)
      break;
    if (wal_over(c) || wal_no_room(c, c->held_room)) {
      restart_wal(c);
      c->checkpoints++;
      continue;
    }
    if (c->new_pages == 0 && !soon)
      continue; /* idle: nothing appended since the last checkpoint */
    if (c->waiting_for_reset && c->commits == c->complete_commits)
      continue; /* no commit since the WAL was copied whole: see above */
    int log = 0;
    bool whole = checkpoint_once(c, &log);
    c->checkpoints++;
    /* Commits appended pages after the snapshot it copied: catch up (see
     * struct ana_local_db). */
    if (whole && c->wal_pages > log)
      catch_up(c, log);
  }
  pthread_mutex_unlock(&c->checkpoint_mu);
  return NULL;
}

/* Attaches the journal file to conn as `journal` (its tables are then
 * found by their bare names too, after main's). */
static int attach_journal(struct ana_local_db *db, sqlite3 *conn, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(conn, "ATTACH DATABASE ? AS journal", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, db->journal_path, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "DATA_DIR: cannot attach %s: %s", db->journal_path,
                  sqlite3_errmsg(conn));
    return ANA_ERR_IO;
  }
  int persist_wal = 1;
  sqlite3_file_control(conn, "journal", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
  sqlite3_exec(conn, "PRAGMA journal.synchronous=FULL", NULL, NULL, NULL);
  return 0;
}

static void ck_init(struct ana_local_db *db, struct wal_ckpt *c, const char *path) {
  c->db = db;
  c->path = path;
  pthread_mutex_init(&c->checkpoint_mu, NULL);
  pthread_cond_init(&c->checkpoint_cond, NULL);
  pthread_cond_init(&c->gate_cond, NULL);
  c->checkpoint_pages = DEFAULT_CHECKPOINT_PAGES;
  c->limit_pages = limit_pages(DEFAULT_CHECKPOINT_PAGES);
}

static int ck_start(struct wal_ckpt *c, struct ana_error *err) {
  if (open_connection(c->path, SQLITE_OPEN_READWRITE, &c->checkpointer, err) < 0)
    return ANA_ERR_IO;
  sqlite3_busy_handler(c->checkpointer, checkpointer_busy, c);
  set_journal_limit(c->checkpointer, c->checkpoint_pages);
  if (pthread_create(&c->checkpoint_thread, NULL, checkpoint_loop, c) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the checkpoint thread");
    return ANA_ERR_INTERNAL;
  }
  c->checkpoint_started = true;
  return 0;
}

static void ck_stop(struct wal_ckpt *c) {
  if (!c->checkpoint_started)
    return;
  pthread_mutex_lock(&c->checkpoint_mu);
  c->checkpoint_stop = true;
  pthread_cond_signal(&c->checkpoint_cond);
  pthread_cond_broadcast(&c->gate_cond);
  pthread_mutex_unlock(&c->checkpoint_mu);
  pthread_join(c->checkpoint_thread, NULL);
}

static void ck_free(struct wal_ckpt *c) {
  if (c->checkpointer)
    set_journal_limit(c->checkpointer, -1);
  sqlite3_close(c->checkpointer);
  if (!c->db)
    return; /* never initialised */
  pthread_mutex_destroy(&c->checkpoint_mu);
  pthread_cond_destroy(&c->checkpoint_cond);
  pthread_cond_destroy(&c->gate_cond);
}

static char *data_file(const char *data_dir, const char *name, struct ana_error *err) {
  size_t n = strlen(data_dir) + strlen(name) + 2;
  char *path = ana_malloc(n);
  if (!path)
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    snprintf(path, n, "%s/%s", data_dir, name);
  return path;
}

struct ana_local_db *ana_local_db_open(const char *data_dir, struct ana_error *err) {
  struct ana_local_db *db = ana_calloc(1, sizeof *db);
  if (!db) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&db->mu, NULL);
  pthread_cond_init(&db->reader_free, NULL);
  if (!(db->path = data_file(data_dir, "analytics.db", err)) ||
      !(db->journal_path = ana_local_db_journal_path(db->path))) {
    if (db->path)
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  ck_init(db, &db->ck[CK_STORE], db->path);
  ck_init(db, &db->ck[CK_JOURNAL], db->journal_path);
  if (!(db->codec = ana_event_codec_new()) || !(db->dedupe = ana_dedupe_pending_new())) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  /* The journal first: created here (WAL, incremental auto_vacuum) before
   * analytics.db's writer attaches it. */
  if (open_connection(db->journal_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db->journal,
                      err) < 0)
    goto fail;
  sqlite3_busy_handler(db->journal, writer_busy, NULL);
  if (open_connection(db->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db->writer, err) < 0)
    goto fail;
  sqlite3_busy_handler(db->writer, writer_busy, NULL);
  if (attach_journal(db, db->writer, err) < 0 || migrate(db->writer, err) < 0)
    goto fail;
  for (int i = 0; i < READERS; i++)
    if (open_connection(db->path, SQLITE_OPEN_READONLY, &db->readers[i], err) < 0 ||
        attach_journal(db, db->readers[i], err) < 0)
      goto fail;
  /* The hook replaces SQLite's automatic checkpoint on the writers. */
  sqlite3_wal_hook(db->writer, on_wal_commit, &db->ck[CK_STORE]);
  sqlite3_wal_hook(db->journal, on_wal_commit, &db->ck[CK_JOURNAL]);
  set_journal_limit(db->writer, DEFAULT_CHECKPOINT_PAGES);
  set_journal_limit(db->journal, DEFAULT_CHECKPOINT_PAGES);
  if (ck_start(&db->ck[CK_STORE], err) < 0 || ck_start(&db->ck[CK_JOURNAL], err) < 0)
    goto fail;
  if (!(db->staging = ana_staging_open(db, err)))
    goto fail;
  struct ana_dedupe_runs *runs =
      ana_dedupe_runs_open(db, db->journal, (size_t)ANA_DEDUPE_DEFAULT_FILTER_MB << 20, err);
  if (!runs)
    goto fail;
  ana_dedupe_pending_set_runs(db->dedupe, runs);
  db->metrics_registered = ana_prom_register(collect, db) == 0;
  return db;
fail:
  ana_local_db_close(db);
  return NULL;
}

char *ana_local_db_journal_path(const char *db_path) {
  size_t n = strlen(db_path);
  const char *suffix = ".db";
  size_t keep = n >= 3 && strcmp(db_path + n - 3, suffix) == 0 ? n - 3 : n;
  char *path = ana_malloc(keep + sizeof "-journal.db");
  if (path) {
    memcpy(path, db_path, keep);
    memcpy(path + keep, "-journal.db", sizeof "-journal.db");
  }
  return path;
}

/* A fresh WAL file grows with every commit until the first checkpoint lets
 * it start over, and an fsync after an append also writes the file's new
 * size (slower than an overwrite in place: bench/RESULTS.md), so the WAL is
 * kept at its size between runs. So that the next start has nothing to
 * replay from it, everything is copied into the database and one small
 * write (the user_version cookie, set to itself) starts the WAL over: the
 * rest of the file then holds only frames of a past generation, which
 * recovery ignores. The other threads are stopped by now, so no checkpoint
 * runs beside this (see the WAL-reset note above). Best effort: on failure
 * the next start replays the WAL, as after a crash. For w's main database
 * (each file with its own writer). */
static void leave_wal_for_next_start(sqlite3 *w) {
  int log = 0, copied = 0;
  if (sqlite3_wal_checkpoint_v2(w, "main", SQLITE_CHECKPOINT_RESTART, &log, &copied) != SQLITE_OK ||
      log != copied)
    return;
  sqlite3_stmt *st = NULL;
  int version = 0;
  if (sqlite3_prepare_v2(w, "PRAGMA main.user_version", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  char sql[48];
  snprintf(sql, sizeof sql, "PRAGMA main.user_version = %d", version);
  if (sqlite3_exec(w, sql, NULL, NULL, NULL) != SQLITE_OK)
    ANA_DEBUG("store", "could not start the WAL over at close: %s", sqlite3_errmsg(w));
}

void ana_local_db_close(struct ana_local_db *db) {
  if (!db)
    return;
  if (db->metrics_registered)
    ana_prom_unregister(collect, db);
  if (db->dedupe) { /* a merge under way is done again at the next start */
    ana_dedupe_runs_close(ana_dedupe_pending_runs(db->dedupe));
    ana_dedupe_pending_set_runs(db->dedupe, NULL);
  }
  ana_staging_close(db->staging); /* staged rows stay: the next open moves them */
  db->staging = NULL;
  bool opened = db->ck[CK_STORE].checkpoint_started && db->ck[CK_JOURNAL].checkpoint_started;
  ck_stop(&db->ck[CK_STORE]);
  ck_stop(&db->ck[CK_JOURNAL]);
  if (db->writer)
    sqlite3_wal_hook(db->writer, NULL, NULL);
  if (db->journal)
    sqlite3_wal_hook(db->journal, NULL, NULL);
  if (opened) { /* opened in full: a failed open writes nothing */
    leave_wal_for_next_start(db->writer);
    leave_wal_for_next_start(db->journal);
  }
  /* With a size limit, the last connection to close would cut the WAL it
   * keeps to nothing (SQLite does so for a persistent WAL). */
  if (db->writer)
    set_journal_limit(db->writer, -1);
  if (db->journal)
    set_journal_limit(db->journal, -1);
  ana_sql_kept_finalize(db->writer_statements, WRITER_STATEMENTS);
  ana_sql_kept_finalize(db->store_statements, WRITER_STATEMENTS);
  ck_free(&db->ck[CK_STORE]);
  ck_free(&db->ck[CK_JOURNAL]);
  for (int i = 0; i < READERS; i++) {
    for (int k = 0; k < READER_STATEMENTS; k++) {
      sqlite3_finalize(db->reader_statements[i][k].stmt);
      ana_free(db->reader_statements[i][k].sql);
    }
    sqlite3_close(db->readers[i]);
  }
  sqlite3_close(db->writer);
  sqlite3_close(db->journal);
  pthread_mutex_destroy(&db->mu);
  pthread_cond_destroy(&db->reader_free);
  ana_event_codec_free(db->codec);
  ana_dedupe_pending_free(db->dedupe);
  ana_free(db->path);
  ana_free(db->journal_path);
  ana_free(db);
}

struct ana_event_codec *ana_local_db_event_codec(struct ana_local_db *db) {
  return db->codec;
}

struct ana_dedupe_pending *ana_local_db_dedupe_pending(struct ana_local_db *db) {
  return db->dedupe;
}

struct ana_staging *ana_local_db_staging(struct ana_local_db *db) {
  return db->staging;
}

void ana_local_db_keep_wal_limit(struct ana_local_db *db, sqlite3 *conn, bool keep) {
  struct wal_ckpt *c = &db->ck[CK_STORE];
  pthread_mutex_lock(&c->checkpoint_mu);
  for (int i = 0; i < LIMITED_CONNS; i++) {
    if (keep ? !db->limited[i] : db->limited[i] == conn) {
      db->limited[i] = keep ? conn : NULL;
      break;
    }
  }
  pthread_mutex_unlock(&c->checkpoint_mu);
}

void ana_local_db_set_checkpoint_pages(struct ana_local_db *db, int pages) {
  struct wal_ckpt *store = &db->ck[CK_STORE];
  pthread_mutex_lock(&store->checkpoint_mu);
  for (int i = 0; i < LIMITED_CONNS; i++)
    if (db->limited[i])
      set_journal_limit(db->limited[i], pages > 0 ? pages : 1);
  pthread_mutex_unlock(&store->checkpoint_mu);
  for (int f = 0; f < 2; f++) {
    struct wal_ckpt *c = &db->ck[f];
    pthread_mutex_lock(&c->checkpoint_mu);
    c->checkpoint_pages = pages > 0 ? pages : 1;
    c->limit_pages = limit_pages(c->checkpoint_pages);
    set_journal_limit(f == CK_STORE ? db->writer : db->journal, c->checkpoint_pages);
    set_journal_limit(c->checkpointer, c->checkpoint_pages);
    pthread_cond_broadcast(&c->gate_cond);
    pthread_mutex_unlock(&c->checkpoint_mu);
  }
}

const char *ana_local_db_path(const struct ana_local_db *db) {
  return db->path;
}

const char *ana_local_db_journal_file(const struct ana_local_db *db) {
  return db->journal_path;
}

int ana_local_db_schema_version(struct ana_local_db *db) {
  return schema_version(db->writer);
}

static sqlite3_stmt *kept(struct ana_sql_kept *k, sqlite3 *conn, const char *sql) {
  struct ana_error err;
  ana_error_clear(&err);
  sqlite3_stmt *st = ana_sql_kept(k, WRITER_STATEMENTS, conn, sql, "writer statement", &err);
  if (!st && err.code == ANA_STATUS_INTERNAL)
    ANA_ERROR("store", "%s; raise WRITER_STATEMENTS", err.message);
  return st;
}

sqlite3_stmt *ana_local_db_writer_statement(struct ana_local_db *db, const char *sql) {
  return kept(db->writer_statements, db->journal, sql);
}

sqlite3_stmt *ana_local_db_store_statement(struct ana_local_db *db, const char *sql) {
  return kept(db->store_statements, db->writer, sql);
}

/* Runs one of the transaction statements, kept prepared. */
static int run_writer(struct ana_local_db *db, const char *sql) {
  sqlite3_stmt *st = ana_local_db_writer_statement(db, sql);
  if (!st)
    return SQLITE_ERROR;
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static const char sql_begin[] = "BEGIN IMMEDIATE";
static const char sql_commit[] = "COMMIT";
static const char sql_rollback[] = "ROLLBACK";

/* The event writer's transactions are visible to the checkpoint thread,
 * which holds new ones back during a catch-up (see struct ana_local_db). */
static void writer_txn_started(struct wal_ckpt *c, int room) {
  pthread_mutex_lock(&c->checkpoint_mu);
  if ((wal_over(c) || wal_no_room(c, room)) && !c->checkpoint_stop)
    c->writer_waits++;
  while ((c->gate_closed || wal_over(c) || wal_no_room(c, room)) && !c->checkpoint_stop) {
    if (room > 0)
      c->held_room = room;
    if (!c->writer_held) {
      c->writer_held = true;
      pthread_cond_signal(&c->checkpoint_cond);
    }
    pthread_cond_wait(&c->gate_cond, &c->checkpoint_mu);
  }
  if (room > 0)
    c->held_room = 0;
  c->writer_held = false;
  c->writer_in_txn++;
  pthread_mutex_unlock(&c->checkpoint_mu);
}

static void writer_txn_ended(struct wal_ckpt *c) {
  pthread_mutex_lock(&c->checkpoint_mu);
  c->writer_in_txn--;
  pthread_cond_broadcast(&c->gate_cond);
  pthread_mutex_unlock(&c->checkpoint_mu);
}

void ana_local_db_gate_enter(struct ana_local_db *db, int pages) {
  writer_txn_started(&db->ck[CK_STORE], pages);
}

void ana_local_db_gate_leave(struct ana_local_db *db) {
  writer_txn_ended(&db->ck[CK_STORE]);
}

void ana_local_db_journal_gate_enter(struct ana_local_db *db, int pages) {
  writer_txn_started(&db->ck[CK_JOURNAL], pages);
}

void ana_local_db_journal_gate_leave(struct ana_local_db *db) {
  writer_txn_ended(&db->ck[CK_JOURNAL]);
}

void ana_local_db_checkpoint_soon(struct ana_local_db *db) {
  for (int f = 0; f < 2; f++) {
    struct wal_ckpt *c = &db->ck[f];
    pthread_mutex_lock(&c->checkpoint_mu);
    c->soon = true;
    pthread_cond_signal(&c->checkpoint_cond);
    pthread_mutex_unlock(&c->checkpoint_mu);
  }
}

int ana_local_db_move_room(struct ana_local_db *db) {
  struct wal_ckpt *c = &db->ck[CK_STORE];
  pthread_mutex_lock(&c->checkpoint_mu);
  int room = c->checkpoint_pages / 2;
  pthread_mutex_unlock(&c->checkpoint_mu);
  return room > 0 ? room : 1;
}

int ana_local_db_begin(struct ana_local_db *db, struct ana_error *err) {
  if (atomic_load(&db->low_space)) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                  "event store: the disk is full (less than STORE_MIN_FREE_MB = %lld MiB free "
                  "in DATA_DIR); nothing of this request was stored",
                  (long long)(atomic_load(&db->min_free_bytes) >> 20));
    return ANA_ERR_IO;
  }
  writer_txn_started(&db->ck[CK_JOURNAL], 0);
  ana_dedupe_pending_discard(db->dedupe);
  ana_staging_discard(db->staging);
  if (run_writer(db, sql_begin) != SQLITE_OK) {
    writer_txn_ended(&db->ck[CK_JOURNAL]);
    return sql_error(db->journal, "cannot begin a transaction", err);
  }
  return 0;
}

int ana_local_db_commit(struct ana_local_db *db, struct ana_error *err) {
  /* The expiry lists of the keys this transaction claimed. */
  /* ...and its staged events, one row. */
  if (ana_local_dedupe_flush(db, err) < 0 || ana_staging_flush(db->staging, err) < 0) {
    ana_local_db_rollback(db);
    return ANA_ERR_IO;
  }
  if (run_writer(db, sql_commit) != SQLITE_OK) {
    int code = sqlite3_extended_errcode(db->journal);
    sql_error(db->journal, "cannot commit", err);
    /* A failed COMMIT may leave the transaction open; end it so the next
     * one starts clean. Nothing of it was acknowledged. */
    if (!sqlite3_get_autocommit(db->journal))
      run_writer(db, sql_rollback);
    writer_txn_ended(&db->ck[CK_JOURNAL]);
    atomic_store(&db->degraded_at_ms, ana_clock_mono_ms());
    atomic_store(&db->degraded, true);
    if ((code & 0xff) == SQLITE_FULL)
      ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                    "event store: the disk is full; nothing of this request was stored");
    return ANA_ERR_IO;
  }
  writer_txn_ended(&db->ck[CK_JOURNAL]);
  ana_dedupe_pending_committed(db->dedupe);
  ana_staging_committed(db->staging);
  atomic_store(&db->degraded, false);
  return 0;
}

void ana_local_db_rollback(struct ana_local_db *db) {
  ana_dedupe_pending_discard(db->dedupe);
  ana_staging_discard(db->staging);
  if (!sqlite3_get_autocommit(db->journal))
    run_writer(db, sql_rollback);
  writer_txn_ended(&db->ck[CK_JOURNAL]);
}

int ana_local_db_store_begin(struct ana_local_db *db, struct ana_error *err) {
  writer_txn_started(&db->ck[CK_STORE], 0);
  /* Deferred, then a write to main first: BEGIN IMMEDIATE would take the
   * attached journal's write lock too. */
  if (sqlite3_exec(db->writer, "BEGIN; UPDATE main.events_moved SET upto = upto WHERE id = 1", NULL,
                   NULL, NULL) != SQLITE_OK) {
    int rc = sql_error(db->writer, "cannot begin a transaction", err);
    if (!sqlite3_get_autocommit(db->writer))
      sqlite3_exec(db->writer, "ROLLBACK", NULL, NULL, NULL);
    writer_txn_ended(&db->ck[CK_STORE]);
    return rc;
  }
  return 0;
}

int ana_local_db_store_commit(struct ana_local_db *db, struct ana_error *err) {
  int rc = 0;
  if (sqlite3_exec(db->writer, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    rc = sql_error(db->writer, "cannot commit", err);
    if (!sqlite3_get_autocommit(db->writer))
      sqlite3_exec(db->writer, "ROLLBACK", NULL, NULL, NULL);
  }
  writer_txn_ended(&db->ck[CK_STORE]);
  return rc;
}

void ana_local_db_store_rollback(struct ana_local_db *db) {
  if (!sqlite3_get_autocommit(db->writer))
    sqlite3_exec(db->writer, "ROLLBACK", NULL, NULL, NULL);
  writer_txn_ended(&db->ck[CK_STORE]);
}

sqlite3 *ana_local_db_writer(struct ana_local_db *db) {
  return db->writer;
}

sqlite3 *ana_local_db_journal(struct ana_local_db *db) {
  return db->journal;
}

static sqlite3 *connect_to(struct ana_local_db *db, int f, struct ana_error *err) {
  sqlite3 *conn = NULL;
  if (open_connection(db->ck[f].path, SQLITE_OPEN_READWRITE, &conn, err) < 0)
    return NULL;
  /* Only the checkpoint threads checkpoint; commits here count for them. */
  sqlite3_wal_hook(conn, on_wal_commit, &db->ck[f]);
  pthread_mutex_lock(&db->ck[f].checkpoint_mu);
  set_journal_limit(conn, db->ck[f].checkpoint_pages);
  pthread_mutex_unlock(&db->ck[f].checkpoint_mu);
  return conn;
}

sqlite3 *ana_local_db_connect(struct ana_local_db *db, struct ana_error *err) {
  return connect_to(db, CK_STORE, err);
}

sqlite3 *ana_local_db_connect_journal(struct ana_local_db *db, struct ana_error *err) {
  return connect_to(db, CK_JOURNAL, err);
}

int ana_local_read_begin(sqlite3 *r, struct ana_error *err) {
  /* The journal's snapshot first: see ana_local_db.h. */
  if (sqlite3_exec(r, "BEGIN; SELECT 1 FROM journal.events_staged LIMIT 1", NULL, NULL, NULL) !=
      SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: cannot read: %s", sqlite3_errmsg(r));
    if (!sqlite3_get_autocommit(r))
      sqlite3_exec(r, "ROLLBACK", NULL, NULL, NULL);
    return ANA_ERR_IO;
  }
  return 0;
}

sqlite3 *ana_local_db_acquire_reader(struct ana_local_db *db) {
  pthread_mutex_lock(&db->mu);
  for (;;) {
    for (int i = 0; i < READERS; i++) {
      if (!db->reader_busy[i]) {
        db->reader_busy[i] = true;
        pthread_mutex_unlock(&db->mu);
        return db->readers[i];
      }
    }
    pthread_cond_wait(&db->reader_free, &db->mu);
  }
}

static int reader_index(const struct ana_local_db *db, const sqlite3 *reader) {
  for (int i = 0; i < READERS; i++)
    if (db->readers[i] == reader)
      return i;
  return -1;
}

static uint64_t sql_hash(const char *sql, size_t len) {
  uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)sql[i]) * UINT64_C(1099511628211);
  return h;
}

sqlite3_stmt *ana_local_db_reader_statement(struct ana_local_db *db, sqlite3 *reader,
                                            const char *sql) {
  int r = reader_index(db, reader);
  if (r < 0)
    return NULL;
  size_t len = strlen(sql);
  uint64_t hash = sql_hash(sql, len);
  struct reader_statement *cache = db->reader_statements[r], *slot = &cache[0];
  uint64_t use = ++db->reader_uses[r];
  for (int k = 0; k < READER_STATEMENTS; k++) {
    struct reader_statement *e = &cache[k];
    if (e->stmt && e->hash == hash && e->len == len && memcmp(e->sql, sql, len) == 0) {
      e->used = use;
      sqlite3_reset(e->stmt);
      sqlite3_clear_bindings(e->stmt);
      return e->stmt;
    }
    if (!e->stmt || (slot->stmt && e->used < slot->used))
      slot = e; /* an empty slot, else the least recently used */
  }
  sqlite3_stmt *st = NULL;
  char *copy = ana_malloc(len + 1);
  if (!copy)
    return NULL;
  memcpy(copy, sql, len + 1);
  if (sqlite3_prepare_v3(reader, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
          SQLITE_OK ||
      !st) {
    sqlite3_finalize(st);
    ana_free(copy);
    return NULL;
  }
  sqlite3_finalize(slot->stmt);
  ana_free(slot->sql);
  *slot = (struct reader_statement){copy, len, hash, use, st};
  return st;
}

void ana_local_db_release_reader(struct ana_local_db *db, sqlite3 *reader) {
  /* A kept statement left stepping would hold its snapshot. */
  int r = reader_index(db, reader);
  for (int k = 0; r >= 0 && k < READER_STATEMENTS; k++)
    if (db->reader_statements[r][k].stmt && sqlite3_stmt_busy(db->reader_statements[r][k].stmt))
      sqlite3_reset(db->reader_statements[r][k].stmt);
  pthread_mutex_lock(&db->mu);
  if (r >= 0)
    db->reader_busy[r] = false;
  pthread_cond_signal(&db->reader_free);
  pthread_mutex_unlock(&db->mu);
}

bool ana_local_db_degraded(const struct ana_local_db *db) {
  struct ana_local_db *d = (struct ana_local_db *)db;
  return atomic_load(&d->degraded) || atomic_load(&d->low_space);
}

void ana_local_db_set_min_free_bytes(struct ana_local_db *db, int64_t bytes) {
  atomic_store(&db->min_free_bytes, bytes);
}

bool ana_local_db_dir_has_room(const char *dir, int64_t min_free_bytes) {
  struct statvfs st;
  if (min_free_bytes <= 0 || statvfs(dir, &st) != 0)
    return true;
  return (int64_t)st.f_bavail * (int64_t)st.f_frsize >= min_free_bytes;
}

bool ana_local_db_check_space(struct ana_local_db *db) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", db->path);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  int64_t min = atomic_load(&db->min_free_bytes);
  bool low = !ana_local_db_dir_has_room(slash ? dir : ".", min);
  if (low != atomic_load(&db->low_space))
    ANA_WARN("store",
             low ? "DATA_DIR has less than %lld MiB free: refusing writes"
                 : "DATA_DIR has %lld MiB free again: accepting writes",
             (long long)(min >> 20));
  atomic_store(&db->low_space, low);
  /* With room again, a failed commit no longer marks the store degraded
   * once it is old: the next commit shows whether writing works (without
   * this, a store nobody writes to would stay unready for good). */
  if (!low && atomic_load(&db->degraded) &&
      ana_clock_mono_ms() - atomic_load(&db->degraded_at_ms) >= DEGRADED_RETRY_MS)
    atomic_store(&db->degraded, false);
  return !low;
}

/* incremental_vacuum of conn's main database in a transaction of its own,
 * through the gate of its WAL; adds the pages given back to *freed. */
static int reclaim_file(struct ana_local_db *db, int f, sqlite3 *conn, int max_pages, int *freed,
                        struct ana_error *err) {
  char sql[80];
  snprintf(sql, sizeof sql, "BEGIN; PRAGMA main.incremental_vacuum(%d); COMMIT",
           max_pages > 0 ? max_pages : 1);
  int before = 0, after = 0;
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(conn, "PRAGMA main.page_count", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    before = sqlite3_column_int(st, 0);
  sqlite3_reset(st);
  writer_txn_started(&db->ck[f], 0);
  int rc = exec(conn, sql, err);
  if (rc < 0 && !sqlite3_get_autocommit(conn))
    sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
  writer_txn_ended(&db->ck[f]);
  if (rc == 0 && st && sqlite3_step(st) == SQLITE_ROW)
    after = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  if (rc == 0 && before > after)
    *freed += before - after;
  return rc;
}

int ana_local_db_reclaim(struct ana_local_db *db, int max_pages, struct ana_error *err) {
  int freed = 0;
  if (reclaim_file(db, CK_STORE, db->writer, max_pages, &freed, err) < 0 ||
      reclaim_file(db, CK_JOURNAL, db->journal, max_pages, &freed, err) < 0)
    return ANA_ERR_IO;
  return freed;
}
