/* Staging: a commit writes its events as ONE row of events_staged (the
 * batch encoded and zstd-compressed together, in commit order), in the
 * journal file (ana_local_db.h), so that the acknowledgement inserts nothing
 * into the events table's day layout and takes no lock of analytics.db; the
 * mover (a thread of its own, on connections of its own) moves the staged
 * rows into events (analytics.db) in short transactions, each batch sorted
 * by the table's key, and records in the same transaction how far it moved
 * (events_moved, its watermark); then it deletes the moved rows from the
 * journal in a transaction of the journal's. The two files do not commit
 * together: a staged row at or below the watermark is moved already (a
 * crash between the two commits leaves it), and the mover and the readers
 * skip it; the next start deletes it. The mover decodes, sorts, numbers and
 * encodes a move's events before its transaction, which then only inserts
 * them. A committed batch is handed to the mover in memory too (the
 * handoff, bounded), so that it need not read its row back; the row stays
 * the durable copy until moved. Readers by sequence, plain searches and
 * scans by time read the staged events beside the table in one snapshot
 * (ana_local_staged_each, ana_local_staged_range); the other readers of
 * the events table first wait until every event committed before they
 * began was moved (ana_local_staging_wait). */
#include "byte_codec.h"
#include "local_db_sql.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_prom.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* One move takes staged rows until it holds this many events (at least one
 * row): its transaction holds the write lock for a few milliseconds. */
#define MOVE_EVENTS 16384
/* The mover lets a backlog of fewer events than that gather for up to this
 * long (unless a reader waits for it): a random-time import's index pages
 * are then written once for many events, not once per commit. */
#define GATHER_MS 200
/* How long a reader waits for the mover before it answers UNAVAILABLE. */
#define READER_WAIT_MS 60000
/* The mover idle this long after moves has the WAL checkpointed. */
#define IDLE_MS 1000
#define IDLE_HINTS 5
/* The mover's pause after a failed move. */
#define RETRY_MS 200

/* A staged row taken by a move: read from events_staged (z, compressed)
 * or handed off in memory (raw). */
struct staged_row {
  uint64_t first, last;
  size_t n, raw_len;
  void *z;
  size_t z_len;
  const uint8_t *raw;
};

/* The handoff: a commit's batch (its staged row's content, uncompressed),
 * handed to the mover in memory once committed, so that the mover need not
 * read and decompress the row (which stays the durable copy until moved).
 * At most ANA_STAGING_HANDOFF_BYTES wait; beyond, and at start, the mover reads the
 * rows from events_staged. The mover gives the buffers back to the
 * commit's side (up to SPARE_BYTES kept while the mover is busy: a move
 * takes some sixteen batches at once, and a fresh buffer grown again on the
 * commit's path costs more than the copy it saves). */
struct handoff {
  struct handoff *next;
  uint64_t first, last;
  size_t n, len;
  uint8_t *buf;
  size_t cap;
  int64_t min_ts, max_ts; /* of its events: readers of a time range skip the batch */
  /* Readers of the batch's buffer (ana_local_staged_range, under mu): the
   * mover gives it back while read (orphaned), the last reader then does. */
  int readers;
  bool orphaned;
};
#define SPARE_BYTES ((size_t)32 << 20)

/* Staged rows one move takes at most. */
#define MOVE_ROWS 512

/* Longest wait of a move for the event bodies' first dictionary being
 * trained (event_body.c; tens of ms), outside any transaction. */
#define TRAINING_WAIT_MS 2000

struct ana_staging {
  struct ana_local_db *db;
  /* The commit's side (committer thread only): the events its open
   * transaction staged, encoded (not yet compressed). */
  uint8_t *buf;
  size_t len, cap;
  uint64_t first_seq, next_seq; /* next_seq: 0 = not read in this transaction */
  size_t n;
  int64_t min_ts, max_ts; /* of the n events */
  uint8_t *zbuf;
  size_t zcap;
  ZSTD_CCtx *cctx; /* kept: a context per commit costs more than the compression */

  pthread_mutex_t mu;
  pthread_cond_t moved_cond;  /* moved_upto or staged_events changed */
  pthread_cond_t staged_cond; /* something was staged, hold or stop changed */
  uint64_t staged_upto;       /* last sequence of the committed staged rows */
  /* The last sequence committed (at open: the highest stored), read
   * without the lock by ana_local_spool_last_seq: set before the commit's
   * acknowledgement, so a reader that asks after it sees that commit. */
  _Atomic uint64_t committed_upto;
  uint64_t moved_upto;     /* every event up to it is in events */
  long staged_events;      /* committed, not yet moved */
  int64_t staged_since_ms; /* when staged_events last went above 0 */
  int waiters;             /* readers waiting for the mover */
  uint64_t moves, moved_events, move_failures, failures_at_stop;
  long max_events; /* STORE_STAGING_MAX_EVENTS */
  int wait_ms;     /* STORE_STAGING_WAIT */
  bool hold, stop, started, metrics_registered;
  int idle_hints; /* checkpoints still to ask for, idle after moves */
  pthread_t thread;
  sqlite3 *conn;  /* the mover's, to analytics.db */
  sqlite3 *jconn; /* the mover's, to the journal (reads and deletes staged rows) */
  struct ana_spool_statements insert;
  ZSTD_DCtx *dctx;                   /* the mover's */
  struct staged_row rows[MOVE_ROWS]; /* the mover's */
  struct ana_spool_rows prep;        /* the mover's: the events rows of a move */
  struct ana_time_runs_writer *runs; /* the mover's: the time index */
  /* The mover's buffers, kept from move to move while it is busy (fresh
   * pages cost more than what is written to them). */
  struct move_buffers {
    void *ev, *recs, *raw, *arena;
    size_t ev_cap, recs_cap, raw_cap, arena_cap;
  } mb;
  /* The handoff (under mu): batches committed and not taken, oldest first;
   * their buffers' bytes; buffers given back. */
  struct handoff *q_head, *q_tail, *spare;
  size_t q_bytes;
  size_t spare_bytes;
  size_t handoff_bytes;           /* ANA_STAGING_HANDOFF_BYTES */
  uint64_t handoffs_missed;       /* batches not handed off (the queue was full) */
  uint64_t handed_off, read_back; /* events moved from memory, from events_staged */
  pthread_mutex_t follow_mu;      /* held while the follower is called */
  ana_local_moved_fn follow;
  void *follow_ctx;
};

static const char sql_last_seq[] = "SELECT last FROM event_seq WHERE id = 1";
static const char sql_set_last_seq[] = "UPDATE event_seq SET last = ? WHERE id = 1";
static const char sql_stage[] =
    "INSERT INTO events_staged (first_seq, last_seq, n, raw_len, batch) VALUES (?,?,?,?,?)";

static void put_str(struct ana_staging *s, const char *str) {
  size_t l = str ? strlen(str) : 0;
  s->len += ana_varint_put(s->buf + s->len, l);
  if (l)
    memcpy(s->buf + s->len, str, l);
  s->len += l;
}

static size_t str_room(const char *str) {
  return (str ? strlen(str) : 0) + 10;
}

/* Appends one record (its seq set) to the transaction's encoded batch:
 * varints seq, ts (zig-zag), received_at (zig-zag), then the strings and
 * the payload, each length-prefixed. */
static bool encode(struct ana_staging *s, const struct ana_event_record *r) {
  size_t need = s->len + 30 + str_room(r->account_id) + str_room(r->event_id) +
                str_room(r->session_id) + str_room(r->event_type) + str_room(r->event_name) +
                str_room(r->properties_json) + str_room(r->search_text) + r->payload_len + 10;
  if (!ana_bytes_grow(&s->buf, &s->cap, need))
    return false;
  s->len += ana_varint_put(s->buf + s->len, r->seq);
  s->len += ana_varint_put(s->buf + s->len,
                           ((uint64_t)r->timestamp_ms << 1) ^ (uint64_t)(r->timestamp_ms >> 63));
  s->len += ana_varint_put(s->buf + s->len, ((uint64_t)r->received_at_ms << 1) ^
                                                (uint64_t)(r->received_at_ms >> 63));
  put_str(s, r->account_id);
  put_str(s, r->event_id);
  put_str(s, r->session_id);
  put_str(s, r->event_type);
  put_str(s, r->event_name);
  put_str(s, r->properties_json ? r->properties_json : "{}");
  put_str(s, r->search_text);
  s->len += ana_varint_put(s->buf + s->len, r->payload_len);
  if (r->payload_len)
    memcpy(s->buf + s->len, r->payload, r->payload_len);
  s->len += r->payload_len;
  return true;
}

/* A staged event decoded in place: its strings are copied into text (NUL
 * terminated), the payload points into the batch. */
struct staged_event {
  struct ana_event_record r;
  int64_t key;
};

static bool get_i64(const uint8_t *p, size_t n, size_t *i, int64_t *out) {
  uint64_t v;
  if (!ana_varint_get(p, n, i, &v))
    return false;
  *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
  return true;
}

/* Reads a string of p at *i into the arena at *a (NUL terminated). */
static bool get_str(const uint8_t *p, size_t n, size_t *i, char **a, const char **out) {
  uint64_t l;
  if (!ana_varint_get(p, n, i, &l) || l > n - *i)
    return false;
  memcpy(*a, p + *i, l);
  (*a)[l] = '\0';
  *out = *a;
  *a += l + 1;
  *i += l;
  return true;
}

/* Decodes count events of raw[0..n) into ev (appending at *at); strings go
 * to the arena (room: n + 8 bytes per event). */
static bool decode(const uint8_t *raw, size_t n, size_t count, struct staged_event *ev, size_t *at,
                   char **arena) {
  size_t i = 0;
  for (size_t k = 0; k < count; k++) {
    struct ana_event_record *r = &ev[*at].r;
    memset(r, 0, sizeof *r);
    uint64_t seq, plen;
    if (!ana_varint_get(raw, n, &i, &seq) || !get_i64(raw, n, &i, &r->timestamp_ms) ||
        !get_i64(raw, n, &i, &r->received_at_ms) || !get_str(raw, n, &i, arena, &r->account_id) ||
        !get_str(raw, n, &i, arena, &r->event_id) || !get_str(raw, n, &i, arena, &r->session_id) ||
        !get_str(raw, n, &i, arena, &r->event_type) ||
        !get_str(raw, n, &i, arena, &r->event_name) ||
        !get_str(raw, n, &i, arena, &r->properties_json) ||
        !get_str(raw, n, &i, arena, &r->search_text) || !ana_varint_get(raw, n, &i, &plen) ||
        plen > n - i)
      return false;
    r->seq = seq;
    r->payload = raw + i;
    r->payload_len = (size_t)plen;
    i += plen;
    ev[*at].key = ana_event_key(r->timestamp_ms, seq);
    (*at)++;
  }
  return i == n;
}

/* Steps over one encoded event of raw[0..n) at *i (see encode), giving its
 * seq, timestamp and account id (not copied): a reader looks at these
 * before it decodes the event. */
static bool peek(const uint8_t *raw, size_t n, size_t *i, uint64_t *seq, int64_t *ts,
                 const uint8_t **account, size_t *account_len) {
  int64_t received;
  uint64_t l;
  if (!ana_varint_get(raw, n, i, seq) || !get_i64(raw, n, i, ts) ||
      !get_i64(raw, n, i, &received) || !ana_varint_get(raw, n, i, &l) || l > n - *i)
    return false;
  *account = raw + *i;
  *account_len = (size_t)l;
  *i += l;
  /* event id, session, type, name, properties, text, payload */
  for (int k = 0; k < 7; k++) {
    if (!ana_varint_get(raw, n, i, &l) || l > n - *i)
      return false;
    *i += l;
  }
  return true;
}

/* --- the commit's side --- */

int ana_local_spool_append(struct ana_local_db *db, struct ana_event_record *records, size_t n,
                           struct ana_error *err) {
  struct ana_staging *s = ana_local_db_staging(db);
  sqlite3 *w = ana_local_db_journal(db);
  if (s->next_seq == 0) {
    sqlite3_stmt *get = ana_local_db_writer_statement(db, sql_last_seq);
    if (!get || sqlite3_step(get) != SQLITE_ROW) {
      if (get)
        sqlite3_reset(get);
      ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: cannot store an event: %s",
                    sqlite3_errmsg(w));
      return ANA_ERR_IO;
    }
    s->next_seq = (uint64_t)sqlite3_column_int64(get, 0) + 1;
    sqlite3_reset(get);
    s->first_seq = s->next_seq;
  }
  for (size_t i = 0; i < n; i++) {
    struct ana_event_record *r = &records[i];
    if (r->duplicate)
      continue;
    r->seq = s->next_seq;
    if (s->n == 0 || r->timestamp_ms < s->min_ts)
      s->min_ts = r->timestamp_ms;
    if (s->n == 0 || r->timestamp_ms > s->max_ts)
      s->max_ts = r->timestamp_ms;
    if (!encode(s, r)) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return ANA_ERR_NOMEM;
    }
    s->next_seq++;
    s->n++;
  }
  return 0;
}

void ana_staging_discard(struct ana_staging *s) {
  s->len = 0;
  s->n = 0;
  s->next_seq = 0;
  s->first_seq = 0;
}

int ana_staging_flush(struct ana_staging *s, struct ana_error *err) {
  if (s->n == 0)
    return 0;
  struct ana_local_db *db = s->db;
  sqlite3 *w = ana_local_db_journal(db);
  size_t bound = ZSTD_compressBound(s->len);
  if (!ana_bytes_grow(&s->zbuf, &s->zcap, bound)) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  if (!s->cctx && !(s->cctx = ZSTD_createCCtx())) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  size_t z = ZSTD_compressCCtx(s->cctx, s->zbuf, s->zcap, s->buf, s->len, 1);
  if (ZSTD_isError(z)) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "event store: staging: %s", ZSTD_getErrorName(z));
    return ANA_ERR_INTERNAL;
  }
  uint64_t last = s->next_seq - 1;
  sqlite3_stmt *st = ana_local_db_writer_statement(db, sql_stage);
  sqlite3_stmt *set = st ? ana_local_db_writer_statement(db, sql_set_last_seq) : NULL;
  if (!st || !set) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "event store: %s", sqlite3_errmsg(w));
    return ANA_ERR_INTERNAL;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)s->first_seq);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)last);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)s->n);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)s->len);
  sqlite3_bind_blob(st, 5, s->zbuf, (int)z, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) {
    sqlite3_bind_int64(set, 1, (sqlite3_int64)last);
    rc = sqlite3_step(set);
    sqlite3_reset(set);
  }
  if (rc != SQLITE_DONE) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: cannot store an event: %s",
                  sqlite3_errmsg(w));
    return ANA_ERR_IO;
  }
  return 0;
}

/* The committed batch to the mover (under mu): its buffer swapped for a
 * spare one. */
static void hand_off(struct ana_staging *s) {
  if (s->q_bytes + s->cap > s->handoff_bytes) {
    s->handoffs_missed++;
    return;
  }
  struct handoff *h = s->spare;
  if (h) {
    s->spare = h->next;
    s->spare_bytes -= h->cap;
  } else if (!(h = ana_calloc(1, sizeof *h))) {
    s->handoffs_missed++;
    return;
  }
  uint8_t *spare = h->buf;
  size_t spare_cap = h->cap;
  h->buf = s->buf;
  h->cap = s->cap;
  s->buf = spare;
  s->cap = spare_cap;
  if (!s->buf) { /* sized as the last one (not grown again from nothing) */
    s->buf = ana_malloc(h->cap);
    s->cap = s->buf ? h->cap : 0;
  }
  h->first = s->first_seq;
  h->last = s->next_seq - 1;
  h->n = s->n;
  h->len = s->len;
  h->min_ts = s->min_ts;
  h->max_ts = s->max_ts;
  h->readers = 0;
  h->orphaned = false;
  h->next = NULL;
  if (s->q_tail)
    s->q_tail->next = h;
  else
    s->q_head = h;
  s->q_tail = h;
  s->q_bytes += h->cap;
}

void ana_staging_committed(struct ana_staging *s) {
  if (s->n > 0) {
    pthread_mutex_lock(&s->mu);
    hand_off(s);
    s->staged_upto = s->next_seq - 1;
    atomic_store(&s->committed_upto, s->staged_upto);
    if (s->staged_events == 0)
      s->staged_since_ms = ana_clock_mono_ms();
    s->staged_events += (long)s->n;
    if (s->staged_events >= MOVE_EVENTS)
      pthread_cond_signal(&s->staged_cond);
    pthread_mutex_unlock(&s->mu);
  }
  ana_staging_discard(s);
}

int ana_local_staging_admit(struct ana_local_db *db, size_t n, struct ana_error *err) {
  struct ana_staging *s = ana_local_db_staging(db);
  pthread_mutex_lock(&s->mu);
  if (s->staged_events > 0 && s->staged_events + (long)n > s->max_events) {
    struct timespec deadline = ana_deadline_in_ms(s->wait_ms);
    int rc = 0;
    s->waiters++;
    pthread_cond_signal(&s->staged_cond);
    while (s->staged_events > 0 && s->staged_events + (long)n > s->max_events && !s->stop &&
           rc == 0)
      rc = pthread_cond_timedwait(&s->moved_cond, &s->mu, &deadline);
    s->waiters--;
  }
  long staged = s->staged_events;
  bool full = staged > 0 && staged + (long)n > s->max_events;
  long max = s->max_events;
  pthread_mutex_unlock(&s->mu);
  if (!full)
    return 0;
  ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                "event store: the staging backlog is full (%ld events committed and not yet "
                "moved into the events table, STORE_STAGING_MAX_EVENTS = %ld); nothing of this "
                "request was stored; retry later",
                staged, max);
  return ANA_ERR_FULL;
}

/* --- the readers' side --- */

/* A reader's buffer of at least need bytes: buf when it has them, else a
 * new one (buf freed; nothing to keep: each batch fills it anew). NULL when
 * out of memory (*cap then 0). */
static void *reader_buf(void *buf, size_t *cap, size_t need) {
  if (buf && need <= *cap)
    return buf;
  ana_free(buf);
  buf = ana_malloc(need);
  *cap = buf ? need : 0;
  return buf;
}

int ana_local_staged_each(sqlite3 *r, uint64_t after_seq, uint64_t upto_seq, const char *account_id,
                          int max, ana_staged_fn fn, void *ctx, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  struct staged_event *ev = NULL;
  uint8_t *raw = NULL;
  char *arena = NULL;
  size_t ev_cap = 0, raw_cap = 0, arena_cap = 0;
  int n = 0, rc = 0, step = SQLITE_DONE;
  if (max <= 0 || upto_seq <= after_seq)
    return 0;
  /* Moved already (in the events table of this snapshot): see
   * ana_local_read_begin. */
  if (sqlite3_prepare_v2(r, "SELECT upto FROM main.events_moved WHERE id = 1", -1, &st, NULL) !=
      SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "staging: %s", sqlite3_errmsg(r));
    return ANA_ERR_INTERNAL;
  }
  if (sqlite3_step(st) == SQLITE_ROW && (uint64_t)sqlite3_column_int64(st, 0) > after_seq)
    after_seq = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  st = NULL;
  if (upto_seq <= after_seq)
    return 0;
  if (sqlite3_prepare_v2(r,
                         "SELECT first_seq, n, raw_len, batch FROM journal.events_staged"
                         " WHERE first_seq <= ?2 AND last_seq > ?1 ORDER BY first_seq",
                         -1, &st, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "staging: %s", sqlite3_errmsg(r));
    return ANA_ERR_INTERNAL;
  }
  sqlite3_bind_int64(st, 1, after_seq > INT64_MAX ? INT64_MAX : (sqlite3_int64)after_seq);
  sqlite3_bind_int64(st, 2, upto_seq > INT64_MAX ? INT64_MAX : (sqlite3_int64)upto_seq);
  while (rc == 0 && n < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
    uint64_t first = (uint64_t)sqlite3_column_int64(st, 0);
    size_t count = (size_t)sqlite3_column_int64(st, 1);
    size_t raw_len = (size_t)sqlite3_column_int64(st, 2);
    const void *z = sqlite3_column_blob(st, 3);
    size_t z_len = (size_t)sqlite3_column_bytes(st, 3);
    size_t arena_need = raw_len + 8 * count + 1;
    if (count > ev_cap) {
      ana_free(ev);
      ev_cap = count;
      ev = ana_malloc(sizeof *ev * (ev_cap ? ev_cap : 1));
    }
    raw = reader_buf(raw, &raw_cap, raw_len + 1);
    arena = reader_buf(arena, &arena_cap, arena_need);
    if (!ev || !raw || !arena) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    size_t at = 0;
    char *a = arena;
    size_t got = ZSTD_decompress(raw, raw_len, z, z_len);
    if (ZSTD_isError(got) || got != raw_len || !decode(raw, got, count, ev, &at, &a)) {
      rc = ana_error_set(err, ANA_STATUS_INTERNAL,
                         "staging: the staged events from %llu cannot be decoded",
                         (unsigned long long)first);
      break;
    }
    for (size_t i = 0; i < count && n < max && rc == 0; i++) {
      const struct ana_event_record *e = &ev[i].r;
      if (e->seq <= after_seq || e->seq > upto_seq ||
          (account_id && strcmp(account_id, e->account_id) != 0))
        continue;
      rc = fn(ctx, e, err);
      if (rc == 0)
        n++;
    }
  }
  if (rc == 0 && n < max && step != SQLITE_DONE) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "staging: %s", sqlite3_errmsg(r));
    rc = ANA_ERR_IO;
  }
  sqlite3_finalize(st);
  ana_free(ev);
  ana_free(raw);
  ana_free(arena);
  return rc != 0 ? rc : n;
}

/* A batch back to the committer's spares, or freed (under mu). */
static void recycle(struct ana_staging *s, struct handoff *h) {
  if (s->spare_bytes + h->cap <= SPARE_BYTES) {
    h->next = s->spare;
    s->spare = h;
    s->spare_bytes += h->cap;
  } else {
    ana_free(h->buf);
    ana_free(h);
  }
}

/* The batches handed off and not yet moved when a reader began, held for
 * it: their buffers hold the staged rows' content uncompressed, so that the
 * reader need not decompress them (the rows taken by a move meanwhile are
 * read from the journal). */
struct held {
  struct handoff **v;
  size_t n;
};

static int hold_queue(struct ana_staging *s, struct held *held) {
  pthread_mutex_lock(&s->mu);
  size_t n = 0;
  for (struct handoff *h = s->q_head; h; h = h->next)
    n++;
  held->v = n ? ana_malloc(n * sizeof *held->v) : NULL;
  held->n = 0;
  for (struct handoff *h = held->v ? s->q_head : NULL; h; h = h->next) {
    h->readers++;
    held->v[held->n++] = h;
  }
  pthread_mutex_unlock(&s->mu);
  return n && !held->v ? ANA_ERR_NOMEM : 0;
}

static void release_queue(struct ana_staging *s, struct held *held) {
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < held->n; i++) {
    struct handoff *h = held->v[i];
    if (--h->readers == 0 && h->orphaned)
      recycle(s, h);
  }
  pthread_mutex_unlock(&s->mu);
  ana_free(held->v);
  *held = (struct held){0};
}

int ana_local_staged_range(struct ana_local_db *db, sqlite3 *r, struct ana_staged_range *range,
                           ana_staged_fn fn, void *ctx, struct ana_error *err) {
  struct ana_staging *s = ana_local_db_staging(db);
  sqlite3_stmt *st = NULL;
  struct staged_event *ev = NULL;
  uint8_t *raw = NULL;
  char *arena = NULL;
  size_t raw_cap = 0, arena_cap = 0, j = 0;
  size_t want_len = range->account_id ? strlen(range->account_id) : 0;
  struct held held = {0};
  ZSTD_DCtx *dctx = NULL;
  int n = 0, rc = 0, step = SQLITE_DONE;
  range->watermark = range->staged_upto = 0;
  /* Moved already (in the events table of this snapshot): see
   * ana_local_read_begin. */
  if (sqlite3_prepare_v2(r, "SELECT upto FROM main.events_moved WHERE id = 1", -1, &st, NULL) !=
      SQLITE_OK) {
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "staging: %s", sqlite3_errmsg(r));
    goto out;
  }
  if (sqlite3_step(st) == SQLITE_ROW)
    range->watermark = (uint64_t)sqlite3_column_int64(st, 0);
  range->staged_upto = range->watermark;
  sqlite3_finalize(st);
  st = NULL;
  /* A staged row is moved whole: one after the watermark starts after it. */
  if (sqlite3_prepare_v2(r,
                         "SELECT first_seq, last_seq, n, raw_len, batch FROM journal.events_staged"
                         " WHERE first_seq > ?1 ORDER BY first_seq",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "staging: %s", sqlite3_errmsg(r));
    goto out;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)range->watermark);
  if ((rc = hold_queue(s, &held)) < 0) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
    uint64_t first = (uint64_t)sqlite3_column_int64(st, 0);
    uint64_t last = (uint64_t)sqlite3_column_int64(st, 1);
    size_t count = (size_t)sqlite3_column_int64(st, 2);
    size_t raw_len = (size_t)sqlite3_column_int64(st, 3);
    if (last > range->staged_upto)
      range->staged_upto = last;
    while (j < held.n && held.v[j]->first < first)
      j++;
    const struct handoff *h = j < held.n && held.v[j]->first == first ? held.v[j] : NULL;
    /* None of its events in the range (as the caller has narrowed it so
     * far): the batch is not decoded. */
    if (h && (h->max_ts < range->from_ms || h->min_ts >= range->to_ms))
      continue;
    size_t arena_need = raw_len + 8 + 1; /* one event decoded at a time */
    if (!ev)
      ev = ana_malloc(sizeof *ev);
    if (!h)
      raw = reader_buf(raw, &raw_cap, raw_len + 1);
    arena = reader_buf(arena, &arena_cap, arena_need);
    if (!h && !dctx)
      dctx = ZSTD_createDCtx();
    if (!ev || !arena || (!h && (!raw || !dctx))) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    const uint8_t *content = h ? h->buf : raw;
    size_t got = raw_len;
    if (!h)
      got = ZSTD_decompressDCtx(dctx, raw, raw_len, sqlite3_column_blob(st, 4),
                                (size_t)sqlite3_column_bytes(st, 4));
    /* Each event's sequence, time and account first: only those in the
     * range are decoded (most are not, once a page narrowed it). */
    size_t i = 0, k = 0;
    bool bad = ZSTD_isError(got) || got != raw_len;
    for (; !bad && k < count && rc == 0; k++) {
      size_t start = i, at = 0, account_len;
      uint64_t seq;
      int64_t ts;
      const uint8_t *account;
      char *a = arena;
      if (!peek(content, got, &i, &seq, &ts, &account, &account_len)) {
        bad = true;
        break;
      }
      if (seq <= range->watermark || ts < range->from_ms || ts >= range->to_ms ||
          (range->account_id &&
           (account_len != want_len || memcmp(account, range->account_id, account_len) != 0)))
        continue;
      if (!decode(content + start, i - start, 1, ev, &at, &a)) {
        bad = true;
        break;
      }
      rc = fn(ctx, &ev[0].r, err);
      if (rc == 0)
        n++;
    }
    if (bad || (rc == 0 && i != got)) {
      rc = ana_error_set(err, ANA_STATUS_INTERNAL,
                         "staging: the staged events from %llu cannot be decoded",
                         (unsigned long long)first);
      break;
    }
  }
  if (rc == 0 && step != SQLITE_DONE)
    rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "staging: %s", sqlite3_errmsg(r));
out:
  sqlite3_finalize(st);
  release_queue(s, &held);
  ZSTD_freeDCtx(dctx);
  ana_free(ev);
  ana_free(raw);
  ana_free(arena);
  return rc != 0 ? rc : n;
}

int ana_local_spool_last_seq(struct ana_local_db *db, uint64_t *out, struct ana_error *err) {
  (void)err;
  *out = atomic_load(&ana_local_db_staging(db)->committed_upto);
  return 0;
}

int ana_local_staging_wait(struct ana_local_db *db, uint64_t upto_seq, struct ana_error *err) {
  struct ana_staging *s = ana_local_db_staging(db);
  pthread_mutex_lock(&s->mu);
  uint64_t target = upto_seq < s->staged_upto ? upto_seq : s->staged_upto;
  if (s->moved_upto < target) {
    struct timespec deadline = ana_deadline_in_ms(READER_WAIT_MS);
    int rc = 0;
    s->waiters++;
    pthread_cond_signal(&s->staged_cond);
    while (s->moved_upto < target && !s->stop && rc == 0)
      rc = pthread_cond_timedwait(&s->moved_cond, &s->mu, &deadline);
    s->waiters--;
  }
  uint64_t moved = s->moved_upto;
  pthread_mutex_unlock(&s->mu);
  if (moved >= target)
    return 0;
  return ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                       "event store: staged events are still being moved into the events table "
                       "(moved up to event %llu of %llu); retry later",
                       (unsigned long long)moved, (unsigned long long)target);
}

void ana_local_staging_hold(struct ana_local_db *db, bool hold) {
  struct ana_staging *s = ana_local_db_staging(db);
  pthread_mutex_lock(&s->mu);
  s->hold = hold;
  pthread_cond_broadcast(&s->staged_cond);
  pthread_mutex_unlock(&s->mu);
}

void ana_local_db_follow_moves(struct ana_local_db *db, ana_local_moved_fn fn, void *ctx) {
  struct ana_staging *s = ana_local_db_staging(db);
  pthread_mutex_lock(&s->follow_mu);
  s->follow = fn;
  s->follow_ctx = fn ? ctx : NULL;
  pthread_mutex_unlock(&s->follow_mu);
}

void ana_local_staging_set_handoff_bytes(struct ana_local_db *db, size_t max_bytes) {
  struct ana_staging *s = ana_local_db_staging(db);
  pthread_mutex_lock(&s->mu);
  s->handoff_bytes = max_bytes;
  pthread_mutex_unlock(&s->mu);
}

void ana_local_staging_set_limits(struct ana_local_db *db, long max_events, int wait_ms) {
  struct ana_staging *s = ana_local_db_staging(db);
  pthread_mutex_lock(&s->mu);
  s->max_events = max_events > 0 ? max_events : 1;
  s->wait_ms = wait_ms >= 0 ? wait_ms : 0;
  pthread_cond_broadcast(&s->moved_cond);
  pthread_mutex_unlock(&s->mu);
}

void ana_local_staging_stats(struct ana_local_db *db, struct ana_local_staging_stats *out) {
  struct ana_staging *s = ana_local_db_staging(db);
  pthread_mutex_lock(&s->mu);
  out->staged_events = (uint64_t)s->staged_events;
  out->staged_upto = s->staged_upto;
  out->moved_upto = s->moved_upto;
  out->moves = s->moves;
  out->handed_off = s->handed_off;
  out->read_back = s->read_back;
  pthread_mutex_unlock(&s->mu);
}

/* --- the mover --- */

/* The table's key order: each day's range of the table is appended to in
 * sequence order, its pages filled (an order by time index left the table's
 * pages half full, 247 against 214 bytes per event, for no faster move). */
static int by_key(const void *a, const void *b) {
  int64_t x = ((const struct staged_event *)a)->key, y = ((const struct staged_event *)b)->key;
  return x < y ? -1 : x > y;
}

static int mover_fail(struct ana_staging *s, const char *what, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "staging: %s: %s", what, sqlite3_errmsg(s->conn));
  return ANA_ERR_IO;
}

static int journal_fail(struct ana_staging *s, const char *what, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "staging: %s: %s", what, sqlite3_errmsg(s->jconn));
  return ANA_ERR_IO;
}

/* The watermark as analytics.db holds it (on the mover's connection). */
static int get_moved(struct ana_staging *s, uint64_t *out, struct ana_error *err) {
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(s->conn, "SELECT upto FROM events_moved WHERE id = 1", -1, &st, NULL) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW)
    rc = mover_fail(s, "cannot read how far the staged events are moved", err);
  else
    *out = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc;
}

/* The watermark, in the move's transaction on analytics.db. */
static int set_moved(struct ana_staging *s, uint64_t upto) {
  sqlite3_stmt *st = NULL;
  int rc =
      sqlite3_prepare_v2(s->conn, "UPDATE events_moved SET upto = ? WHERE id = 1", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)upto);
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? 0 : ANA_ERR_IO;
}

/* After the move committed: its staged rows (and any left at or below the
 * watermark) go from the journal, in a short transaction of the journal's
 * (the commit's lock, taken briefly). Not synced: lost in a crash, they
 * are skipped and deleted again. A failure leaves them to the next move. */
static void delete_moved(struct ana_staging *s, uint64_t upto) {
  sqlite3_stmt *st = NULL;
  ana_local_db_journal_gate_enter(s->db, 0);
  int rc =
      sqlite3_prepare_v2(s->jconn, "DELETE FROM events_staged WHERE first_seq <= ?", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)upto);
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(st);
  ana_local_db_journal_gate_leave(s->db);
  if (rc != SQLITE_OK)
    ANA_WARN("store",
             "staging: cannot delete the moved events from the journal (%s); the next "
             "move does",
             sqlite3_errmsg(s->jconn));
}

/* The oldest staged rows not moved yet, up to max_events events (at least
 * one row), into s->rows: the batches handed off in memory when the oldest
 * is one of them, else the rows of the journal's events_staged after the
 * watermark and before the first handed off (read in a snapshot of their
 * own, outside any transaction). Returns how many rows (0: none staged), or
 * a negative error. */
static int take_staged(struct ana_staging *s, size_t max_events, struct handoff **taken,
                       struct ana_error *err) {
  size_t n_rows = 0, events = 0;
  pthread_mutex_lock(&s->mu);
  /* Batches read from events_staged before they were handed off. */
  while (s->q_head && s->q_head->last <= s->moved_upto) {
    struct handoff *h = s->q_head;
    s->q_head = h->next;
    s->q_bytes -= h->cap;
    h->next = *taken;
    *taken = h;
  }
  if (!s->q_head)
    s->q_tail = NULL;
  bool from_queue = s->q_head && s->q_head->first == s->moved_upto + 1;
  uint64_t bound = s->q_head ? s->q_head->first : (uint64_t)INT64_MAX;
  /* Rows at or below it are moved (their deletion from the journal failed
   * or was lost in a crash). */
  uint64_t moved = s->moved_upto;
  pthread_mutex_unlock(&s->mu);
  if (!from_queue) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->jconn,
                           "SELECT first_seq, last_seq, n, raw_len, batch FROM events_staged"
                           " WHERE first_seq > ? AND first_seq < ? ORDER BY first_seq LIMIT 512",
                           -1, &st, NULL) != SQLITE_OK)
      return journal_fail(s, "cannot read the staged events", err);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)moved);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)bound);
    int step = SQLITE_DONE;
    while (events < max_events && n_rows < MOVE_ROWS && (step = sqlite3_step(st)) == SQLITE_ROW) {
      struct staged_row *r = &s->rows[n_rows];
      memset(r, 0, sizeof *r);
      r->first = (uint64_t)sqlite3_column_int64(st, 0);
      r->last = (uint64_t)sqlite3_column_int64(st, 1);
      r->n = (size_t)sqlite3_column_int64(st, 2);
      r->raw_len = (size_t)sqlite3_column_int64(st, 3);
      r->z_len = (size_t)sqlite3_column_bytes(st, 4);
      r->z = ana_malloc(r->z_len ? r->z_len : 1);
      if (!r->z) {
        sqlite3_finalize(st);
        return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      }
      if (r->z_len)
        memcpy(r->z, sqlite3_column_blob(st, 4), r->z_len);
      n_rows++;
      events += r->n;
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
      for (size_t i = 0; i < n_rows; i++)
        ana_free(s->rows[i].z);
      sqlite3_finalize(st);
      return journal_fail(s, "cannot read the staged events", err);
    }
    sqlite3_finalize(st);
    if (n_rows > 0 || bound == (uint64_t)INT64_MAX)
      return (int)n_rows;
  }
  pthread_mutex_lock(&s->mu);
  /* Batches in sequence order with no gap: one not handed off (the queue
   * was full) is read from events_staged by the next move. */
  while (s->q_head && events < max_events && n_rows < MOVE_ROWS &&
         (n_rows == 0 || s->q_head->first == s->rows[n_rows - 1].last + 1)) {
    struct handoff *h = s->q_head;
    s->q_head = h->next;
    s->q_bytes -= h->cap;
    struct staged_row *r = &s->rows[n_rows++];
    memset(r, 0, sizeof *r);
    r->first = h->first;
    r->last = h->last;
    r->n = h->n;
    r->raw_len = h->len;
    r->raw = h->buf;
    events += h->n;
    h->next = *taken;
    *taken = h;
  }
  if (!s->q_head)
    s->q_tail = NULL;
  pthread_mutex_unlock(&s->mu);
  return (int)n_rows;
}

static bool keep(void **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return true;
  void *b = ana_malloc(need);
  if (!b)
    return false;
  ana_free(*buf);
  *buf = b;
  *cap = need;
  return true;
}

static void move_buffers_free(struct move_buffers *mb) {
  ana_free(mb->ev);
  ana_free(mb->recs);
  ana_free(mb->raw);
  ana_free(mb->arena);
  memset(mb, 0, sizeof *mb);
}

/* Frees the spare buffers (the mover idle). */
static void spares_free(struct ana_staging *s) {
  pthread_mutex_lock(&s->mu);
  struct handoff *h = s->spare;
  s->spare = NULL;
  s->spare_bytes = 0;
  pthread_mutex_unlock(&s->mu);
  while (h) {
    struct handoff *next = h->next;
    ana_free(h->buf);
    ana_free(h);
    h = next;
  }
}

/* Batches back to the committer's spares (their buffers reused), the rest freed. */
static void give_back(struct ana_staging *s, struct handoff *list) {
  pthread_mutex_lock(&s->mu);
  while (list) {
    struct handoff *h = list;
    list = h->next;
    if (h->readers > 0)
      h->orphaned = true; /* its last reader gives it back (release_queue) */
    else
      recycle(s, h);
  }
  pthread_mutex_unlock(&s->mu);
}

/* One move: the oldest staged rows (up to MOVE_EVENTS events) gathered,
 * decoded, sorted by key, numbered and their bodies encoded outside any
 * transaction; then one transaction inserts them into events and deletes
 * the staged rows. Returns how many events were moved (0: none staged), or
 * a negative error. */
static int move_once(struct ana_staging *s, uint64_t *upto, struct ana_error *err) {
  struct staged_row *rows = s->rows;
  struct handoff *taken = NULL;
  size_t events = 0, raw_total = 0, content_total = 0; /* raw: the decompressed rows' */
  struct staged_event *ev = NULL;
  struct ana_event_record *recs = NULL;
  uint8_t *raw = NULL;
  char *arena = NULL;
  sqlite3_stmt *st = NULL;
  struct ana_event_codec *codec = ana_local_db_event_codec(s->db);
  bool gated = false;
  int rc = 0;
  int room = ana_local_db_move_room(s->db);
  size_t max_events = (size_t)room * 2 / 3 < MOVE_EVENTS ? (size_t)room * 2 / 3 : MOVE_EVENTS;
  if (max_events < 1)
    max_events = 1;
  /* The moves encode the events' bodies: while the codec samples for its
   * first dictionary a move takes one staged row, and once the samples are
   * in the next waits for the training, so that a first import is not
   * stored uncompressed (the training used to overlap a whole move). */
  if (ana_event_codec_training_state(codec, TRAINING_WAIT_MS) == ANA_CODEC_SAMPLING)
    max_events = 1;
  int got = take_staged(s, max_events, &taken, err);
  if (got <= 0) {
    give_back(s, taken);
    return got;
  }
  size_t n_rows = (size_t)got;
  for (size_t i = 0; i < n_rows; i++) {
    events += rows[i].n;
    content_total += rows[i].raw_len;
    if (!rows[i].raw)
      raw_total += rows[i].raw_len;
  }
  struct move_buffers *mb = &s->mb;
  if (!keep(&mb->ev, &mb->ev_cap, sizeof *ev * events) ||
      !keep(&mb->recs, &mb->recs_cap, sizeof *recs * events) ||
      !keep(&mb->raw, &mb->raw_cap, raw_total + 1) ||
      !keep(&mb->arena, &mb->arena_cap, content_total + 8 * events + 1)) {
    move_buffers_free(mb);
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  ev = mb->ev;
  recs = mb->recs;
  raw = mb->raw;
  arena = mb->arena;
  size_t at = 0, off = 0;
  char *a = arena;
  for (size_t i = 0; i < n_rows; i++) {
    const uint8_t *content = rows[i].raw;
    size_t len = rows[i].raw_len;
    if (!content) {
      size_t z = ZSTD_decompressDCtx(s->dctx, raw + off, len, rows[i].z, rows[i].z_len);
      content = raw + off;
      if (ZSTD_isError(z) || z != len)
        content = NULL;
      off += len;
    }
    if (!content || !decode(content, len, rows[i].n, ev, &at, &a)) {
      rc = ana_error_set(err, ANA_STATUS_INTERNAL,
                         "staging: the staged events %llu to %llu cannot be decoded",
                         (unsigned long long)rows[i].first, (unsigned long long)rows[i].last);
      goto out;
    }
  }
  qsort(ev, events, sizeof *ev, by_key);
  for (size_t i = 0; i < events; i++)
    recs[i] = ev[i].r;
  /* The numbers already given and the bodies, before the write lock. */
  rc = ana_local_spool_prepare(s->conn, &s->insert, codec, recs, events, &s->prep, err);
  if (rc == 0)
    rc = ana_time_runs_prepare(s->runs, recs, events, err);
  if (rc < 0)
    goto out;
  /* The room asked for is read again: WAL_CHECKPOINT_MB may have been set
   * meanwhile (at start), and a room beyond its limit would never come. */
  ana_local_db_gate_enter(s->db, ana_local_db_move_room(s->db));
  gated = true;
  if (sqlite3_exec(s->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    rc = mover_fail(s, "cannot begin", err);
    goto out;
  }
  /* The watermark read again under analytics.db's write lock: another
   * process's mover on the same files may have moved these rows since they
   * were taken; then this move is dropped and the next starts after it. */
  uint64_t watermark = 0;
  if ((rc = get_moved(s, &watermark, err)) < 0)
    goto out;
  if (watermark >= rows[0].first) {
    pthread_mutex_lock(&s->mu);
    if (s->moved_upto < watermark)
      s->moved_upto = watermark;
    pthread_mutex_unlock(&s->mu);
    rc = 0;
    goto out;
  }
  /* A dictionary retired since (the re-encryption job's start): the bodies
   * are encoded again, uncompressed. */
  if (s->prep.dict > 0 && ana_event_codec_retired(codec, s->prep.dict))
    rc = ana_local_spool_reencode(s->conn, codec, recs, &s->prep, err);
  if (rc == 0)
    rc = ana_local_spool_insert(s->conn, &s->insert, recs, &s->prep, err);
  /* The time index: a run per (account, hour) of the move. */
  if (rc == 0)
    rc = ana_time_runs_write(s->runs, s->conn, recs, &s->prep, err);
  /* The seqs each day now holds (readers by seq seek them there). */
  if (rc == 0)
    rc = ana_local_event_days_add(s->conn, recs, events, err);
  if (rc < 0)
    goto out;
  if (ana_event_codec_persist(codec, s->conn, err) < 0) {
    rc = ANA_ERR_IO;
    goto out;
  }
  if (set_moved(s, rows[n_rows - 1].last) < 0) {
    rc = mover_fail(s, "cannot record the moved events", err);
    goto out;
  }
  if (sqlite3_exec(s->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    rc = mover_fail(s, "cannot commit", err);
    goto out;
  }
  *upto = rows[n_rows - 1].last;
  delete_moved(s, *upto);
  rc = (int)events;
  pthread_mutex_lock(&s->mu);
  if (rows[0].raw)
    s->handed_off += events;
  else
    s->read_back += events;
  pthread_mutex_unlock(&s->mu);
  pthread_mutex_lock(&s->follow_mu);
  if (s->follow)
    s->follow(s->follow_ctx, recs, events);
  pthread_mutex_unlock(&s->follow_mu);
out:
  sqlite3_finalize(st);
  if (rc <= 0 && !sqlite3_get_autocommit(s->conn))
    sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
  if (rc < 0)
    ana_spool_statements_forget(&s->insert);
  if (gated)
    ana_local_db_gate_leave(s->db);
  for (size_t i = 0; i < n_rows; i++)
    ana_free(rows[i].z);
  give_back(s, taken);
  return rc;
}

/* Entries one merge transaction of the time index rewrites at most (a few
 * milliseconds of the write lock, well within a move's WAL room). */
#define MERGE_ENTRIES 65536

/* One transaction of the time index's pending merges (the mover without a
 * backlog); a failure leaves them to the next one or to the next move. */
static void merge_runs(struct ana_staging *s) {
  struct ana_error err;
  ana_error_clear(&err);
  ana_local_db_gate_enter(s->db, ana_local_db_move_room(s->db));
  int rc = sqlite3_exec(s->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK
               ? ana_time_runs_merge_some(s->runs, s->conn, MERGE_ENTRIES, &err)
               : mover_fail(s, "cannot begin", &err);
  if (rc == 0 && sqlite3_exec(s->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    rc = mover_fail(s, "cannot commit", &err);
  if (rc < 0 && !sqlite3_get_autocommit(s->conn))
    sqlite3_exec(s->conn, "ROLLBACK", NULL, NULL, NULL);
  ana_local_db_gate_leave(s->db);
  if (rc < 0) {
    ANA_WARN("store", "time index: merge failed (%s); retried after the hours' next moves",
             err.message);
    ana_time_runs_forget_pending(s->runs);
  }
}

static void *mover_thread(void *arg) {
  struct ana_staging *s = arg;
  pthread_setname_np(pthread_self(), "ana-mover"); /* top -H, /proc/PID/task/TID/comm */
  pthread_mutex_lock(&s->mu);
  /* At stop the backlog is moved first (a clean close leaves nothing
   * staged); a failure then leaves it for the next start. */
  for (;;) {
    if (s->stop && (s->staged_events == 0 || s->move_failures > s->failures_at_stop))
      break;
    /* The time index's merges while the mover would wait anyway: nothing
     * staged (no reader waits for a move then), or a small backlog
     * gathering that no reader waits for. */
    bool idle = s->staged_events == 0 || (s->waiters == 0 && s->staged_events < MOVE_EVENTS &&
                                          s->staged_since_ms + GATHER_MS > ana_clock_mono_ms());
    if (!s->hold && !s->stop && idle && ana_time_runs_pending(s->runs)) {
      pthread_mutex_unlock(&s->mu);
      merge_runs(s);
      pthread_mutex_lock(&s->mu);
      continue;
    }
    if (!s->stop && (s->hold || s->staged_events == 0)) {
      struct timespec ts = ana_deadline_in_ms(IDLE_MS);
      if (pthread_cond_timedwait(&s->staged_cond, &s->mu, &ts) != 0 && s->staged_events == 0 &&
          s->idle_hints > 0) {
        /* Idle after moves: the WAL can be copied (and start over); asked
         * a few times, as readers may keep a checkpoint from copying it all. */
        s->idle_hints--;
        pthread_mutex_unlock(&s->mu);
        move_buffers_free(&s->mb);
        ana_spool_rows_free(&s->prep);
        spares_free(s);
        ana_local_db_checkpoint_soon(s->db);
        pthread_mutex_lock(&s->mu);
      }
      continue;
    }
    int64_t gather = s->staged_since_ms + GATHER_MS - ana_clock_mono_ms();
    if (!s->stop && s->staged_events < MOVE_EVENTS && s->waiters == 0 && gather > 0) {
      struct timespec ts = ana_deadline_in_ms(gather);
      pthread_cond_timedwait(&s->staged_cond, &s->mu, &ts);
      continue;
    }
    pthread_mutex_unlock(&s->mu);
    struct ana_error err;
    ana_error_clear(&err);
    uint64_t upto = 0;
    int n = move_once(s, &upto, &err);
    pthread_mutex_lock(&s->mu);
    if (n > 0) {
      s->moves++;
      s->idle_hints = IDLE_HINTS;
      s->moved_events += (uint64_t)n;
      s->staged_events -= n;
      if (s->staged_events < 0)
        s->staged_events = 0;
      s->staged_since_ms = ana_clock_mono_ms(); /* what is left waits its turn anew */
      if (upto > s->moved_upto)
        s->moved_upto = upto;
      pthread_cond_broadcast(&s->moved_cond);
    } else if (n == 0 && !s->q_head) {
      /* Nothing staged after all (counted before its commit was seen; a
       * batch handed off since is moved next). */
      s->staged_events = 0;
      if (s->staged_upto > s->moved_upto)
        s->moved_upto = s->staged_upto;
      pthread_cond_broadcast(&s->moved_cond);
    } else if (n == 0) {
      continue;
    } else {
      s->move_failures++;
      pthread_mutex_unlock(&s->mu);
      ANA_WARN("store", "%s; retrying", err.message);
      struct timespec ts = ana_deadline_in_ms(RETRY_MS);
      pthread_mutex_lock(&s->mu);
      pthread_cond_timedwait(&s->staged_cond, &s->mu, &ts);
    }
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_staging *s = ctx;
  pthread_mutex_lock(&s->mu);
  uint64_t staged = (uint64_t)s->staged_events, moved = s->moved_upto, upto = s->staged_upto;
  uint64_t moves = s->moves, failures = s->move_failures;
  pthread_mutex_unlock(&s->mu);
  ana_prom_write_family(w, "ana_store_staged_events", "gauge",
                        "Events committed to the staging table and not yet moved into the "
                        "events table (the mover's lag; at most STORE_STAGING_MAX_EVENTS).");
  ana_prom_write_u64(w, "ana_store_staged_events", NULL, staged);
  ana_prom_write_family(w, "ana_store_moved_sequence", "gauge",
                        "Commit sequence number up to which every event is in the events table.");
  ana_prom_write_u64(w, "ana_store_moved_sequence", NULL, moved > upto ? moved : upto);
  ana_prom_write_family(w, "ana_store_moves_total", "counter",
                        "Transactions of the mover (staged events into the events table).");
  ana_prom_write_u64(w, "ana_store_moves_total", NULL, moves);
  ana_prom_write_family(w, "ana_store_move_failures_total", "counter",
                        "Moves that failed (retried; nothing is lost).");
  ana_prom_write_u64(w, "ana_store_move_failures_total", NULL, failures);
}

struct ana_staging *ana_staging_open(struct ana_local_db *db, struct ana_error *err) {
  struct ana_staging *s = ana_calloc(1, sizeof *s);
  if (!s) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  s->db = db;
  s->max_events = ANA_STAGING_DEFAULT_MAX_EVENTS;
  s->wait_ms = ANA_STAGING_DEFAULT_WAIT_MS;
  s->handoff_bytes = ANA_STAGING_HANDOFF_BYTES;
  pthread_mutex_init(&s->mu, NULL);
  pthread_mutex_init(&s->follow_mu, NULL);
  pthread_cond_init(&s->moved_cond, NULL);
  pthread_cond_init(&s->staged_cond, NULL);
  if (!(s->dctx = ZSTD_createDCtx()) || !(s->runs = ana_time_runs_writer_new())) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if (!(s->conn = ana_local_db_connect(db, err)) ||
      !(s->jconn = ana_local_db_connect_journal(db, err)))
    goto fail;
  /* A move is synced before its staged rows are deleted from the journal
   * (the two files' WALs are synced apart: an unsynced move lost to a power
   * failure after the journal's next synced commit kept the deletion would
   * lose its events); one fsync per move. The deletions need no sync: lost,
   * their rows are at or below the watermark, skipped and deleted again. */
  sqlite3_exec(s->conn, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
  sqlite3_exec(s->jconn, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
  ana_local_db_keep_wal_limit(db, s->conn, true);
  ana_local_db_keep_wal_limit(db, s->jconn, true);
  sqlite3_stmt *st = NULL;
  /* The watermark: staged rows at or below it were moved before a crash
   * that kept their deletion from the journal. */
  uint64_t watermark = 0;
  if (get_moved(s, &watermark, err) < 0)
    goto fail;
  s->moved_upto = watermark;
  delete_moved(s, watermark);
  if (sqlite3_prepare_v2(s->jconn,
                         "SELECT MIN(first_seq), MAX(last_seq), COALESCE(SUM(n), 0)"
                         " FROM events_staged WHERE first_seq > ?",
                         -1, &st, NULL) != SQLITE_OK) {
    journal_fail(s, "cannot read the staged events", err);
    goto fail;
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)watermark);
  if (sqlite3_step(st) != SQLITE_ROW) {
    journal_fail(s, "cannot read the staged events", err);
    sqlite3_finalize(st);
    goto fail;
  }
  if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
    s->moved_upto = (uint64_t)sqlite3_column_int64(st, 0) - 1;
    s->staged_upto = (uint64_t)sqlite3_column_int64(st, 1);
    s->staged_events = (long)sqlite3_column_int64(st, 2);
  }
  sqlite3_finalize(st);
  st = NULL;
  /* Nothing staged: every sequence handed out so far is moved (or was
   * deleted by retention). */
  if (s->staged_events == 0) {
    if (sqlite3_prepare_v2(s->jconn, sql_last_seq, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
      journal_fail(s, "cannot read the last sequence", err);
      sqlite3_finalize(st);
      goto fail;
    }
    s->staged_upto = s->moved_upto = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (s->moved_upto < watermark)
      s->staged_upto = s->moved_upto = watermark;
  }
  /* The highest sequence stored, staged or not: not event_seq's, which
   * retention may have left above every stored event (a search index built
   * again never reaches it, and searches wait for the index to reach it). */
  uint64_t stored = 0;
  if (ana_local_events_max_seq(s->conn, "", &stored, err) < 0)
    goto fail;
  if (s->staged_events > 0 && s->staged_upto > stored)
    stored = s->staged_upto;
  atomic_init(&s->committed_upto, stored);
  if (pthread_create(&s->thread, NULL, mover_thread, s) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the staging mover");
    goto fail;
  }
  s->started = true;
  s->metrics_registered = ana_prom_register(collect, s) == 0;
  return s;
fail:
  ana_staging_close(s);
  return NULL;
}

void ana_staging_close(struct ana_staging *s) {
  if (!s)
    return;
  if (s->metrics_registered)
    ana_prom_unregister(collect, s);
  if (s->started) {
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    s->failures_at_stop = s->move_failures;
    pthread_cond_broadcast(&s->staged_cond);
    pthread_cond_broadcast(&s->moved_cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
  }
  ana_spool_statements_finalize(&s->insert);
  ana_time_runs_writer_free(s->runs);
  ana_local_db_keep_wal_limit(s->db, s->conn, false);
  ana_local_db_keep_wal_limit(s->db, s->jconn, false);
  ana_spool_rows_free(&s->prep);
  move_buffers_free(&s->mb);
  for (int list = 0; list < 2; list++) {
    struct handoff *h = list == 0 ? s->q_head : s->spare;
    while (h) {
      struct handoff *next = h->next;
      ana_free(h->buf);
      ana_free(h);
      h = next;
    }
  }
  sqlite3_close(s->conn);
  sqlite3_close(s->jconn);
  pthread_mutex_destroy(&s->mu);
  pthread_mutex_destroy(&s->follow_mu);
  pthread_cond_destroy(&s->moved_cond);
  pthread_cond_destroy(&s->staged_cond);
  ZSTD_freeCCtx(s->cctx);
  ZSTD_freeDCtx(s->dctx);
  ana_free(s->buf);
  ana_free(s->zbuf);
  ana_free(s);
}
