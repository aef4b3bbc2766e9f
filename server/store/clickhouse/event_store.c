/* The ClickHouse event store: a thread ships the local spool to ClickHouse in commit-sequence
 * order (RowBinary, gzip, one INSERT per day partition of a batch), every row carrying its
 * commit sequence and this instance's id; after a failed, timed-out or unconfirmed batch, and at
 * start-up, it asks ClickHouse which sequences of the uncertain range it holds and sends only the
 * missing rows, so every event reaches ClickHouse exactly once (second copies of a resent range,
 * from an insert that landed after the check, are deleted). Search and scans are pushed down
 * (reads.c), retention drops ClickHouse's day partitions, and the spool of events not yet
 * shipped is bounded (SPOOL_MAX_BYTES). */
#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_file.h"
#include "ana_id.h"
#include "ana_local_db.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "ana_store_config.h"
#include "clickhouse_backend.h"
#include "sqlite/sqlite_backends.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define DAY_MS 86400000LL
/* The ClickHouse schema this server writes: migrations 1..SCHEMA_VERSION (schema_migrations). */
#define SCHEMA_VERSION 5
#define RETRY_MAX_MS 5000
/* Spool rows read on one read snapshot while a batch is encoded. */
#define SPOOL_READ_PIECE 10000
/* After a range was checked and resent, second copies are looked for during this many
 * CLICKHOUSE_TIMEOUTs, every DEDUPE_EVERY_MS. */
#define DEDUPE_TIMEOUTS 3
#define DEDUPE_EVERY_MS 500

static const struct ana_store_settings *settings;

void ana_clickhouse_configure(const struct ana_store_settings *cfg) {
  settings = cfg;
}

struct ch_store {
  struct ana_local_db *db;
  void *local; /* the embedded event store over the spool: reads and local retention */
  struct ana_clickhouse *ch;
  char instance[ANA_UUID_STR_LEN + 1];
  char state_path[4200];
  int batch_rows, interval_ms, retention_days, sweep_ms, merge_ms;
  int64_t max_bytes;

  pthread_t thread;
  bool started;
  pthread_mutex_t mu; /* guards stopping, reason and the condition; never held across I/O */
  pthread_cond_t cond;
  pthread_cond_t set_up; /* broadcast after each set-up attempt (ready, or failed) */
  bool stopping;
  bool tried; /* a set-up attempt ended */
  char reason[512];

  atomic_uint_fast64_t shipped;   /* every sequence up to it is in ClickHouse */
  atomic_uint_fast64_t committed; /* the last committed sequence */
  atomic_int_fast64_t pending_bytes;
  atomic_int_fast64_t oldest_ms; /* receive time of the oldest event not shipped; 0: none */
  atomic_bool degraded, ready, full;
  atomic_uint_fast64_t uncertain_hi; /* sequences up to it may be in ClickHouse already */
  /* Sequences from it were checked and resent: an insert ClickHouse had received but not yet
   * listed as running may still land a second copy of them; until dedupe_until (monotonic ms)
   * they are looked for and the later copies deleted. 0: none. */
  atomic_uint_fast64_t dedupe_from;
  atomic_int_fast64_t dedupe_until;
  int timeout_ms;
  /* The shipped table's row of this instance (shipper thread, or the send thread of the batch
   * in flight): marked is the last sequence written there; the batches confirmed after it
   * have timestamps from marked_min_ts on (INT64_MAX: none yet; INT64_MIN: not known, as
   * after a start: the last row may be missing). */
  uint64_t marked;
  int64_t marked_min_ts;
  /* The spool's events not yet shipped at open, up to backlog_hi (0: none): pending_bytes
   * starts with backlog_est for them (a sample's mean times their number; reading them all
   * would double the cost of shipping a backlog), replaced by the exact sum once they are
   * confirmed (backlog_seen, theirs so far; the confirming thread only). */
  atomic_uint_fast64_t backlog_hi;
  int64_t backlog_est, backlog_seen;

  struct ana_prom_counter rows, batches, inserts, failures, verified, skipped, refused, bytes_out,
      removed, agg_sql, agg_rows;
  bool metrics;
};

/* --- the state file: this instance's id and the last confirmed sequence --- */

static int save_state(struct ch_store *s, struct ana_error *err) {
  char tmp[sizeof s->state_path + 8], text[128];
  snprintf(tmp, sizeof tmp, "%s.tmp", s->state_path);
  int n = snprintf(text, sizeof text, "instance %s\nshipped %" PRIu64 "\ndedupe %" PRIu64 "\n",
                   s->instance, (uint64_t)atomic_load(&s->shipped),
                   (uint64_t)atomic_load(&s->dedupe_from));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    goto fail;
  if (write(fd, text, (size_t)n) != n || fdatasync(fd) < 0) {
    close(fd);
    goto fail;
  }
  close(fd);
  if (rename(tmp, s->state_path) < 0)
    goto fail;
  return 0;
fail:
  return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "cannot write %s: %s", s->state_path,
                       strerror(errno));
}

/* Reads the state file; a missing one is a new instance (new id, nothing shipped). */
static int load_state(struct ch_store *s, struct ana_error *err) {
  FILE *f = fopen(s->state_path, "re");
  if (!f) {
    if (errno != ENOENT)
      return ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION, "cannot read %s: %s", s->state_path,
                           strerror(errno));
    if (ana_uuid7_generate(s->instance) < 0)
      return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot generate an instance id");
    atomic_store(&s->shipped, 0);
    return save_state(s, err);
  }
  char id[64] = "";
  unsigned long long shipped = 0, dedupe = 0;
  int got = fscanf(f, "instance %63s shipped %llu", id, &shipped);
  if (got == 2 && fscanf(f, " dedupe %llu", &dedupe) != 1) /* absent in older files */
    dedupe = 0;
  fclose(f);
  if (got != 2 || !ana_uuid_is_valid(id))
    return ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                         "%s is damaged (expected \"instance <uuid>\" and \"shipped <n>\")",
                         s->state_path);
  memcpy(s->instance, id, ANA_UUID_STR_LEN); /* valid: exactly that long */
  s->instance[ANA_UUID_STR_LEN] = '\0';
  atomic_store(&s->shipped, (uint64_t)shipped);
  atomic_store(&s->dedupe_from, (uint64_t)dedupe);
  return 0;
}

/* --- helpers --- */

static void set_reason(struct ch_store *s, const char *why) {
  pthread_mutex_lock(&s->mu);
  snprintf(s->reason, sizeof s->reason, "%s", why);
  pthread_mutex_unlock(&s->mu);
}

/* Sleeps up to ms unless stopped; returns whether stopping. */
static bool nap(struct ch_store *s, int64_t ms) {
  pthread_mutex_lock(&s->mu);
  if (!s->stopping && ms > 0) {
    struct timespec until = ana_clock_deadline(CLOCK_MONOTONIC, ms);
    pthread_cond_timedwait(&s->cond, &s->mu, &until);
  }
  bool stop = s->stopping;
  pthread_mutex_unlock(&s->mu);
  return stop;
}

/* The first unsigned number of text (0 when none). */
static uint64_t first_number(const char *text) {
  return text ? strtoull(text, NULL, 10) : 0;
}

/* Waits until no insert of this instance is running in ClickHouse (an earlier process's, or one
 * this process gave up on): after it, what ClickHouse holds of them is final. */
static int settle(struct ch_store *s, struct ana_error *err) {
  char kill[256], count[256];
  snprintf(kill, sizeof kill, "KILL QUERY WHERE query_id LIKE 'ana-%s-%%' SYNC", s->instance);
  snprintf(count, sizeof count,
           "SELECT count() FROM system.processes WHERE query_id LIKE 'ana-%s-%%'", s->instance);
  for (int i = 0; i < 50; i++) {
    /* An insert past the stages KILL can stop (code 380, "unkillable stages") is finishing:
     * it is waited for like one being killed; ClickHouse unreachable fails the count below. */
    struct ana_error kill_err;
    if (ana_clickhouse_query(s->ch, kill, false, NULL, NULL, &kill_err) < 0)
      ANA_DEBUG("clickhouse", "%s", kill_err.message);
    char *out = NULL;
    int rc = ana_clickhouse_query(s->ch, count, false, NULL, &out, err);
    uint64_t n = rc == 0 ? first_number(out) : 1;
    ana_free(out);
    if (rc < 0)
      return rc;
    if (n == 0)
      return 0;
    if (nap(s, 100))
      break;
  }
  return ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                       "ClickHouse: an earlier insert of this instance is still running"),
         ANA_ERR_IO;
}

/* --- schema --- */

static const char *const migrations[SCHEMA_VERSION] = {
    /* 1: the events, one partition per UTC day of their timestamp. */
    "CREATE TABLE IF NOT EXISTS events ("
    " instance String, seq UInt64, account_id String, event_id String, session_id String,"
    " event_type String, event_name String, ts Int64, received_at Int64, day Date,"
    " prop_keys Array(String), prop_values Array(String), payload String)"
    " ENGINE = MergeTree PARTITION BY day ORDER BY (account_id, ts, event_id)",
    /* 2: the properties' JSON as committed, which scans hand to metrics and rollups; the
     * insert that wrote a row (a random id per INSERT), which tells copies of a row apart. */
    "ALTER TABLE events ADD COLUMN properties String AFTER prop_values,"
    " ADD COLUMN attempt UInt64 AFTER seq",
    /* 3: each instance's confirmed batches: every event it committed up to seq is in events,
     * and those from the previous row's seq on have ts >= min_ts (what other instances' rollups
     * read up to, and from where in time). */
    "CREATE TABLE IF NOT EXISTS shipped (instance String, seq UInt64, min_ts Int64)"
    " ENGINE = MergeTree ORDER BY (instance, seq)",
    /* 4: the instances that shipped before 3, at what they shipped by then. */
    "INSERT INTO shipped SELECT instance, max(seq), min(ts) FROM events GROUP BY instance",
    /* 5: when a row was written (wall ms; 0: before 5), and whether it stands for merged rows
     * (0: a batch's own; else 1 + the highest of the rows it replaced): older rows are merged
     * (trim_shipped). */
    "ALTER TABLE shipped ADD COLUMN at Int64 DEFAULT 0, ADD COLUMN merged UInt32 DEFAULT 0",
};

static int migrate(struct ch_store *s, struct ana_error *err) {
  char sql[256];
  snprintf(sql, sizeof sql, "CREATE DATABASE IF NOT EXISTS %s", ana_clickhouse_database(s->ch));
  int rc = ana_clickhouse_query(s->ch, sql, false, NULL, NULL, err);
  if (rc == 0)
    rc = ana_clickhouse_query(s->ch,
                              "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32,"
                              " applied_at DateTime) ENGINE = TinyLog",
                              true, NULL, NULL, err);
  char *out = NULL;
  if (rc == 0)
    rc = ana_clickhouse_query(s->ch, "SELECT max(version) FROM schema_migrations", true, NULL, &out,
                              err);
  if (rc < 0)
    return rc;
  uint64_t have = first_number(out);
  ana_free(out);
  if (have > SCHEMA_VERSION)
    return ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                         "ClickHouse database %s has schema version %" PRIu64
                         ", newer than this server's %d",
                         ana_clickhouse_database(s->ch), have, SCHEMA_VERSION);
  for (uint64_t v = have + 1; v <= SCHEMA_VERSION; v++) {
    rc = ana_clickhouse_query(s->ch, migrations[v - 1], true, NULL, NULL, err);
    snprintf(sql, sizeof sql, "INSERT INTO schema_migrations VALUES (%" PRIu64 ", now())", v);
    if (rc == 0)
      rc = ana_clickhouse_query(s->ch, sql, true, NULL, NULL, err);
    if (rc < 0)
      return rc;
    ANA_INFO("clickhouse", "schema migrated to version %" PRIu64, v);
  }
  return 0;
}

/* Start-up: the schema, then what ClickHouse holds of this instance beyond the confirmed
 * sequence (uncertain until checked). */
static int setup(struct ch_store *s, struct ana_error *err) {
  int rc = migrate(s, err);
  if (rc == 0)
    rc = settle(s, err);
  if (rc < 0)
    return rc;
  char sql[256], *out = NULL;
  snprintf(sql, sizeof sql, "SELECT max(seq) FROM events WHERE instance = '%s'", s->instance);
  if ((rc = ana_clickhouse_query(s->ch, sql, true, NULL, &out, err)) < 0)
    return rc;
  uint64_t max_ch = first_number(out);
  ana_free(out);
  uint64_t last = 0;
  if ((rc = ana_local_spool_last_seq(s->db, &last, err)) < 0)
    return rc;
  if (max_ch > last) {
    /* ClickHouse holds sequences this spool never reached: the local database was replaced.
     * Its sequences start over, so it ships as a new instance. */
    ANA_WARN("clickhouse",
             "ClickHouse holds sequence %" PRIu64 " of instance %s but the spool ends at %" PRIu64
             ": the local database is not the one shipped before; shipping as a new instance",
             max_ch, s->instance, last);
    if (ana_uuid7_generate(s->instance) < 0)
      return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot generate an instance id");
    atomic_store(&s->shipped, 0);
    atomic_store(&s->dedupe_from, 0);
    if ((rc = save_state(s, err)) < 0)
      return rc;
    max_ch = 0;
  }
  atomic_store(&s->uncertain_hi, max_ch > atomic_load(&s->shipped) ? max_ch : 0);
  ANA_INFO("clickhouse", "instance %s: confirmed up to %" PRIu64 ", %s", s->instance,
           (uint64_t)atomic_load(&s->shipped),
           atomic_load(&s->uncertain_hi) ? "checking the rows sent after it" : "nothing uncertain");
  return 0;
}

/* --- rows (rows.c) --- */

/* An event's size as the spool bound counts it. */
static int64_t event_bytes(size_t payload, const char *props, const char *id) {
  return (int64_t)(payload + (props ? strlen(props) : 0) + (id ? strlen(id) : 0) + 64);
}

static const char insert_sql[] =
    "INSERT INTO events (instance, seq, attempt, account_id, event_id, session_id, event_type,"
    " event_name, ts, received_at, day, prop_keys, prop_values, properties, payload)"
    " FORMAT RowBinary";

static int by_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The sequences in [lo, hi] ClickHouse holds of this instance, sorted; *n how many. */
static int held_seqs(struct ch_store *s, uint64_t lo, uint64_t hi, uint64_t **out, size_t *n,
                     struct ana_error *err) {
  char sql[256], *text = NULL;
  *out = NULL;
  *n = 0;
  snprintf(sql, sizeof sql,
           "SELECT seq FROM events WHERE instance = '%s' AND seq >= %" PRIu64 " AND seq <= %" PRIu64
           " FORMAT TabSeparated",
           s->instance, lo, hi);
  int rc = ana_clickhouse_query(s->ch, sql, true, NULL, &text, err);
  if (rc < 0)
    return rc;
  size_t cap = 0;
  for (const char *p = text; *p; p++)
    cap += *p == '\n';
  uint64_t *v = ana_malloc((cap ? cap : 1) * sizeof *v);
  if (!v) {
    ana_free(text);
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  }
  size_t k = 0;
  for (char *p = text; *p && k < cap;) {
    char *end;
    v[k++] = strtoull(p, &end, 10);
    p = *end ? end + 1 : end;
  }
  ana_free(text);
  qsort(v, k, sizeof *v, by_u64);
  *out = v;
  *n = k;
  ana_prom_counter_add(&s->verified, 1);
  return 0;
}

static bool contains(const uint64_t *v, size_t n, uint64_t x) {
  return bsearch(&x, v, n, sizeof *v, by_u64) != NULL;
}

/* A batch ready to send: one gzip-compressed RowBinary body per day partition. */
struct job {
  struct ch_store *s;
  uint64_t first, last;
  int64_t bytes, oldest_ms; /* what the bound counts of the batch; its first receive time */
  int64_t min_ts;           /* the lowest timestamp of its events */
  int64_t backlog_bytes;    /* what the bound counts of its events up to s->backlog_hi */
  size_t n, rows;           /* events of the batch; rows to send (not held already) */
  struct group {
    int day;
    unsigned char *body;
    size_t len, raw_len; /* compressed, and before */
  } * groups;
  size_t n_groups;
  /* the send's outcome (send_thread) */
  pthread_t thread;
  int rc;
  struct ana_error err;
};

static void job_free(struct job *j) {
  if (!j)
    return;
  for (size_t i = 0; i < j->n_groups; i++)
    ana_free(j->groups[i].body);
  ana_free(j->groups);
  ana_free(j);
}

/* Rows are compressed a piece of this many bytes at a time, while still in the cache. */
#define GZ_PIECE (256 * 1024)

/* A batch being encoded: one RowBinary stream per day partition, compressed as it grows. */
struct encoder {
  struct ch_store *s;
  struct job *job;
  struct day_buf {
    int day;
    uint64_t attempt;     /* this INSERT's id, in each of its rows */
    struct ana_ch_rows b; /* rows not compressed yet */
    struct ana_clickhouse_gz *gz;
    size_t rows, raw_len;
  } * days;
  size_t n_days, cap_days;
  bool failed;
};

static int enc_start(struct encoder *e, struct ch_store *s, struct ana_error *err) {
  memset(e, 0, sizeof *e);
  e->s = s;
  if (!(e->job = ana_calloc(1, sizeof *e->job)))
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  e->job->s = s;
  return 0;
}

/* Counts ev in the batch and, unless held, adds its row to its day's buffer. */
static int enc_add(struct encoder *e, const struct ana_spooled_event *ev, bool held) {
  struct job *j = e->job;
  if (j->n++ == 0) {
    j->first = ev->seq;
    j->oldest_ms = ev->received_at_ms;
    j->min_ts = ev->timestamp_ms;
  }
  if (ev->timestamp_ms < j->min_ts)
    j->min_ts = ev->timestamp_ms;
  j->last = ev->seq;
  int64_t bytes = event_bytes(ev->payload_len, ev->properties_json, ev->event_id);
  j->bytes += bytes;
  if (ev->seq <= atomic_load(&e->s->backlog_hi))
    j->backlog_bytes += bytes;
  if (held)
    return 0;
  int day = ana_clickhouse_day(ev->timestamp_ms);
  struct day_buf *d = NULL;
  for (size_t i = e->n_days; i > 0; i--) /* few days per batch; the last one most often */
    if (e->days[i - 1].day == day) {
      d = &e->days[i - 1];
      break;
    }
  if (!d) {
    if (e->n_days == e->cap_days) {
      size_t cap = e->cap_days ? e->cap_days * 2 : 8;
      struct day_buf *nd = ana_realloc(e->days, cap * sizeof *nd);
      if (!nd)
        return e->failed = true, ANA_ERR_NOMEM;
      e->days = nd;
      e->cap_days = cap;
    }
    d = &e->days[e->n_days++];
    memset(d, 0, sizeof *d);
    d->day = day;
    if (!(d->gz = ana_clickhouse_gz_new(ana_clickhouse_gzip_level(e->s->ch))))
      return e->failed = true, ANA_ERR_NOMEM;
    if (getrandom(&d->attempt, sizeof d->attempt, 0) != sizeof d->attempt)
      d->attempt = (uint64_t)ana_clock_mono_ns() ^ ((uint64_t)day << 48);
    d->attempt |= 1; /* never 0, the rows written before the column */
  }
  ana_clickhouse_put_row(&d->b, e->s->instance, d->attempt, ev);
  d->rows++;
  j->rows++;
  if (d->b.failed)
    e->failed = true;
  else if (d->b.len >= GZ_PIECE) {
    if (ana_clickhouse_gz_add(d->gz, d->b.p, d->b.len, false) < 0)
      e->failed = true;
    d->raw_len += d->b.len;
    d->b.len = 0;
  }
  return e->failed ? ANA_ERR_NOMEM : 0;
}

static int by_day_buf(const void *a, const void *b) {
  const struct day_buf *x = a, *y = b;
  return x->day < y->day ? -1 : x->day > y->day;
}

/* The job (compressed, by day ascending), or NULL with err; frees the encoder either way. */
static struct job *enc_finish(struct encoder *e, struct ana_error *err) {
  struct job *j = e->job;
  if (e->failed || !(j->groups = ana_calloc(e->n_days ? e->n_days : 1, sizeof *j->groups))) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if (e->n_days > 1)
    qsort(e->days, e->n_days, sizeof *e->days, by_day_buf);
  for (size_t i = 0; i < e->n_days; i++) {
    struct day_buf *d = &e->days[i];
    struct group *g = &j->groups[j->n_groups];
    if (ana_clickhouse_gz_add(d->gz, d->b.p, d->b.len, true) < 0) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "cannot compress a batch");
      goto fail;
    }
    g->day = d->day;
    g->raw_len = d->raw_len + d->b.len;
    g->body = ana_clickhouse_gz_take(d->gz, &g->len);
    j->n_groups++;
  }
  for (size_t i = 0; i < e->n_days; i++) {
    ana_free(e->days[i].b.p);
    ana_clickhouse_gz_free(e->days[i].gz);
  }
  ana_free(e->days);
  return j;
fail:
  for (size_t i = 0; i < e->n_days; i++) {
    ana_free(e->days[i].b.p);
    ana_clickhouse_gz_free(e->days[i].gz);
  }
  ana_free(e->days);
  job_free(j);
  return NULL;
}

/* Encodes ev[0..n) but the held sequences into a job (NULL with err when out of memory). */
static struct job *encode(struct ch_store *s, const struct ana_spooled_event *ev, size_t n,
                          const uint64_t *held, size_t n_held, struct ana_error *err) {
  struct encoder e;
  if (enc_start(&e, s, err) < 0)
    return NULL;
  for (size_t i = 0; i < n; i++)
    if (enc_add(&e, &ev[i], n_held && contains(held, n_held, ev[i].seq)) < 0)
      break;
  return enc_finish(&e, err);
}

/* Writes this instance's row of the shipped table up to the shipped sequence (once more after
 * a failure: the shipper thread tries again). Other instances' rollups read up to it. */
static void mark_shipped(struct ch_store *s) {
  uint64_t shipped = atomic_load(&s->shipped);
  if (s->marked >= shipped)
    return;
  char sql[256];
  struct ana_error err;
  snprintf(sql, sizeof sql,
           "INSERT INTO shipped (instance, seq, min_ts, at) VALUES ('%s', %" PRIu64 ", %" PRId64
           ", %" PRId64 ")",
           s->instance, shipped, s->marked_min_ts, ana_clock_wall_ms());
  if (ana_clickhouse_query(s->ch, sql, true, NULL, NULL, &err) < 0) {
    ANA_DEBUG("clickhouse", "marking sequence %" PRIu64 " shipped: %s", shipped, err.message);
    return;
  }
  s->marked = shipped;
  s->marked_min_ts = INT64_MAX;
}

/* Sends a job's inserts in order. Confirmed: every row up to j->last is in ClickHouse. Failed:
 * some of the day groups may be in ClickHouse, or all, or none: the range is uncertain. */
static int send(struct job *j, struct ana_error *err) {
  struct ch_store *s = j->s;
  int64_t t0 = ana_clock_mono_ms();
  for (size_t i = 0; i < j->n_groups; i++) {
    char qid[96];
    snprintf(qid, sizeof qid, "ana-%s-%" PRIu64 "-%d", s->instance, j->first, j->groups[i].day);
    int rc = ana_clickhouse_insert_gzipped(s->ch, insert_sql, j->groups[i].body, j->groups[i].len,
                                           qid, err);
    if (rc < 0) {
      if (j->last > atomic_load(&s->uncertain_hi))
        atomic_store(&s->uncertain_hi, j->last);
      return rc;
    }
    ana_prom_counter_add(&s->inserts, 1);
    ana_prom_counter_add(&s->bytes_out, j->groups[i].raw_len);
  }
  atomic_fetch_sub(&s->pending_bytes, j->bytes);
  uint64_t backlog_hi = atomic_load(&s->backlog_hi);
  if (backlog_hi) {
    s->backlog_seen += j->backlog_bytes;
    if (j->last >= backlog_hi) { /* the estimate becomes the exact sum */
      atomic_fetch_add(&s->pending_bytes, s->backlog_seen - s->backlog_est);
      atomic_store(&s->backlog_hi, 0);
    }
  }
  atomic_store(&s->shipped, j->last);
  if (j->min_ts < s->marked_min_ts)
    s->marked_min_ts = j->min_ts;
  mark_shipped(s);
  if (atomic_load(&s->uncertain_hi) <= j->last)
    atomic_store(&s->uncertain_hi, 0);
  ana_prom_counter_add(&s->rows, j->rows);
  ana_prom_counter_add(&s->skipped, j->n - j->rows);
  ana_prom_counter_add(&s->batches, 1);
  ANA_DEBUG("clickhouse", "sequences %" PRIu64 "-%" PRIu64 ": %zu rows inserted in %lld ms",
            j->first, j->last, j->rows, (long long)(ana_clock_mono_ms() - t0));
  if (atomic_load(&s->committed) <= j->last)
    atomic_store(&s->oldest_ms, 0);
  struct ana_error e2;
  if (save_state(s, &e2) < 0)
    ANA_WARN("clickhouse", "%s (the rows after the last saved sequence will be checked)",
             e2.message);
  return 0;
}

/* The shipper contract's ship: events[0..n) after the confirmed sequence, checking first which
 * of an uncertain range ClickHouse holds. (The shipper thread also pipelines batches: below.) */
static int ch_ship(void *store, const struct ana_spooled_event *ev, size_t n,
                   struct ana_error *err) {
  struct ch_store *s = store;
  uint64_t first = ev[0].seq, last = ev[n - 1].seq;
  uint64_t *held = NULL;
  size_t n_held = 0;
  int rc = 0;
  atomic_store(&s->oldest_ms, ev[0].received_at_ms);
  uint64_t uncertain = atomic_load(&s->uncertain_hi);
  if (uncertain >= first) {
    /* Part of this range may be there already: resend only what is missing. */
    if ((rc = settle(s, err)) < 0 ||
        (rc = held_seqs(s, first, last < uncertain ? last : uncertain, &held, &n_held, err)) < 0)
      goto out;
    /* An insert of the range that ClickHouse received but had not yet listed as running can
     * still land: look for second copies for a while. */
    uint64_t from = atomic_load(&s->dedupe_from);
    if (!from || first < from)
      atomic_store(&s->dedupe_from, first);
    atomic_store(&s->dedupe_until, ana_clock_mono_ms() + DEDUPE_TIMEOUTS * (int64_t)s->timeout_ms);
  }
  struct job *j = encode(s, ev, n, held, n_held, err);
  if (!j) {
    rc = ANA_ERR_NOMEM;
    goto out;
  }
  rc = send(j, err);
  job_free(j);
out:
  ana_free(held);
  return rc;
}

/* --- the pipeline: the next batch is read and encoded while the last one is inserted --- */

static void *send_thread(void *arg) {
  struct job *j = arg;
  ana_error_clear(&j->err);
  j->rc = send(j, &j->err);
  return NULL;
}

static int take_row(void *ctx, const struct ana_spooled_event *ev, struct ana_error *err) {
  if (enc_add(ctx, ev, false) < 0)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  return 0;
}

/* Waits for the batch in flight (if any); its result, 0 when none. */
static int finish_inflight(struct job **inflight, struct ana_error *err) {
  struct job *j = *inflight;
  if (!j)
    return 0;
  pthread_join(j->thread, NULL);
  int rc = j->rc;
  if (rc < 0)
    *err = j->err;
  job_free(j);
  *inflight = NULL;
  return rc;
}

/* One step with nothing uncertain: reads and encodes the batch after *cursor while the one in
 * flight is inserted, then sends it in the background. Returns how many events it took, or the
 * error of the batch that was in flight (then nothing is in flight). */
static int pipeline_step(struct ch_store *s, struct job **inflight, uint64_t *cursor,
                         struct ana_error *err) {
  int64_t t0 = ana_clock_mono_ms();
  uint64_t shipped = atomic_load(&s->shipped);
  if (*cursor < shipped || !*inflight)
    *cursor = shipped;
  struct encoder e;
  struct job *job = NULL;
  if (enc_start(&e, s, err) < 0)
    return ANA_ERR_NOMEM;
  /* In pieces, each on its own read snapshot: a snapshot held while a whole batch is read would
   * keep the local database's checkpoints from starting the WAL over, and past its limit the
   * commits wait for it (see local_db.c). */
  int n = 0;
  for (uint64_t after = *cursor; n < s->batch_rows;) {
    int want = s->batch_rows - n < SPOOL_READ_PIECE ? s->batch_rows - n : SPOOL_READ_PIECE;
    int got = ana_local_spool_each_untexted(s->db, after, want, take_row, &e, err);
    if (got < 0) {
      n = got;
      break;
    }
    n += got;
    if (got < want)
      break;
    after = e.job->last;
  }
  struct ana_error scratch;
  if (n < 0)
    e.failed = true;
  job = enc_finish(&e, n < 0 ? &scratch : err);
  if (!job && n >= 0)
    n = ANA_ERR_NOMEM;
  if (n > 0)
    ANA_DEBUG("clickhouse", "%d events read and encoded in %lld ms", n,
              (long long)(ana_clock_mono_ms() - t0));
  struct ana_error prev;
  ana_error_clear(&prev);
  int rc = finish_inflight(inflight, &prev);
  if (rc < 0 || n <= 0) {
    job_free(job);
    if (rc < 0)
      *err = prev;
    return rc < 0 ? rc : n;
  }
  atomic_store(&s->oldest_ms, job->oldest_ms);
  if (pthread_create(&job->thread, NULL, send_thread, job) != 0) {
    job_free(job);
    return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start a ClickHouse insert"),
           ANA_ERR_INTERNAL;
  }
  *inflight = job;
  *cursor = job->last;
  return n;
}

static int ch_shipped_seq(void *store, uint64_t *out, struct ana_error *err) {
  (void)err;
  *out = atomic_load(&((struct ch_store *)store)->shipped);
  return 0;
}

/* --- retention: whole day partitions --- */

static void drop_partitions(struct ch_store *s) {
  struct ana_error err;
  int64_t cutoff = ana_clock_wall_ms() - (int64_t)s->retention_days * DAY_MS;
  int last_day = ana_clickhouse_day(cutoff) - 1; /* days ending at or before the cutoff */
  char sql[512], *out = NULL;
  snprintf(sql, sizeof sql,
           "SELECT DISTINCT partition FROM system.parts WHERE database = '%s' AND table = "
           "'events' AND active AND toUInt16(toDate(partition)) <= %d FORMAT TabSeparated",
           ana_clickhouse_database(s->ch), last_day);
  if (ana_clickhouse_query(s->ch, sql, false, NULL, &out, &err) < 0) {
    ANA_WARN("clickhouse", "retention: %s", err.message);
    return;
  }
  for (char *p = out, *nl; p && *p; p = nl ? nl + 1 : NULL) {
    nl = strchr(p, '\n');
    if (nl)
      *nl = '\0';
    if (strlen(p) != 10)
      continue;
    snprintf(sql, sizeof sql, "ALTER TABLE events DROP PARTITION '%s'", p);
    if (ana_clickhouse_query(s->ch, sql, true, NULL, NULL, &err) < 0)
      ANA_WARN("clickhouse", "retention: %s", err.message);
    else
      ANA_INFO("clickhouse", "retention dropped the partition of %s", p);
  }
  ana_free(out);
}

/* --- the shipped table: older rows merged --- */

/* The group of a row of the shipped table by its age at now (a literal, so that the SELECT and
 * the later DELETE group alike), as SQL: one per merge period (its own key modulo 4 is 1),
 * past 60 periods one per 60 (2), past 1,440 one per 1,440 (3), past the retention one in all
 * (0). Aligned groups: each lies within one of the next coarser ones. */
static void shipped_group_sql(const struct ch_store *s, int64_t now, char *buf, size_t cap) {
  int64_t b = s->merge_ms, old = now - (int64_t)s->retention_days * DAY_MS;
  snprintf(buf, cap,
           "multiIf(at < %" PRId64 ", toInt64(0), at < %" PRId64 ", intDiv(at, %" PRId64
           ") * 4 + 3, at < %" PRId64 ", intDiv(at, %" PRId64 ") * 4 + 2, intDiv(at, %" PRId64
           ") * 4 + 1)",
           old, now - 1440 * b, 1440 * b, now - 60 * b, 60 * b, b);
}

/* Merges this instance's rows of the shipped table older than a merge period, group by group
 * (shipped_group_sql), into one row each: the group's highest sequence and lowest timestamp.
 * Readers stay right: other_bounds reads the highest sequence, which stays; scan_other the
 * lowest min_ts of the rows after its mark, which can only get lower (it reads further back,
 * never misses an event). The merged row is inserted before the rows it replaces are deleted
 * (an asynchronous mutation), told apart from them by its higher `merged`; a failure between
 * the two leaves extra rows that the next round merges. Returns the rows deleted, or a negative
 * error. */
static int trim_shipped(struct ch_store *s, struct ana_error *err) {
  int64_t now = ana_clock_wall_ms(), young = now - s->merge_ms;
  char group[400];
  shipped_group_sql(s, now, group, sizeof group);
  char sql[1024], *out = NULL;
  snprintf(sql, sizeof sql,
           "SELECT k, max(seq), min(min_ts), max(at), max(merged) + 1, count() FROM (SELECT %s AS"
           " k, seq, min_ts, at, merged FROM shipped WHERE instance = '%s' AND at < %" PRId64
           ") GROUP BY k HAVING count() > 1 ORDER BY k LIMIT 1000 FORMAT TabSeparated",
           group, s->instance, young);
  int rc = ana_clickhouse_query(s->ch, sql, true, NULL, &out, err);
  if (rc < 0)
    return rc;
  /* the merged rows (INSERT), and the groups' keys and merged values (the DELETE's) */
  char *ins = NULL, *del = NULL, *keys = NULL, *gens = NULL;
  size_t ins_len = 0, del_len = 0, keys_len = 0, gens_len = 0;
  FILE *fi = open_memstream(&ins, &ins_len), *fd = open_memstream(&del, &del_len);
  FILE *fk = open_memstream(&keys, &keys_len), *fg = open_memstream(&gens, &gens_len);
  long long replaced = 0;
  int groups = 0;
  if (!fi || !fd || !fk || !fg) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    rc = ANA_ERR_NOMEM;
    goto out;
  }
  fputs("INSERT INTO shipped (instance, seq, min_ts, at, merged) VALUES ", fi);
  for (char *p = out, *nl; p && *p; p = nl ? nl + 1 : NULL) {
    nl = strchr(p, '\n');
    if (nl)
      *nl = '\0';
    long long k, ts, at, cnt;
    unsigned long long seq, gen;
    if (sscanf(p, "%lld\t%llu\t%lld\t%lld\t%llu\t%lld", &k, &seq, &ts, &at, &gen, &cnt) != 6)
      continue;
    fprintf(fi, "%s('%s', %llu, %lld, %lld, %llu)", groups ? ", " : "", s->instance, seq, ts, at,
            gen);
    fprintf(fk, "%s%lld", groups ? ", " : "", k);
    fprintf(fg, "%s%llu", groups ? ", " : "", gen);
    replaced += cnt;
    groups++;
  }
  bool bad = ferror(fk) || ferror(fg) || ferror(fi);
  fclose(fk);
  fclose(fg);
  fclose(fi);
  fk = fg = fi = NULL;
  if (!bad && groups)
    fprintf(fd,
            "ALTER TABLE shipped DELETE WHERE instance = '%s' AND at < %" PRId64
            " AND merged < transform(%s, [%s], [%s], toUInt32(0))",
            s->instance, young, group, keys, gens);
  bad |= ferror(fd) != 0;
  fclose(fd);
  fd = NULL;
  if (bad) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    rc = ANA_ERR_NOMEM;
    goto out;
  }
  if (groups && (rc = ana_clickhouse_query(s->ch, ins, true, NULL, NULL, err)) == 0 &&
      (rc = ana_clickhouse_query(s->ch, del, true, NULL, NULL, err)) == 0)
    ANA_DEBUG("clickhouse", "shipped table: %lld rows merged into %d", replaced, groups);
  rc = rc < 0 ? rc : (int)(replaced - groups);
out:
  if (fi)
    fclose(fi);
  if (fd)
    fclose(fd);
  if (fk)
    fclose(fk);
  if (fg)
    fclose(fg);
  free(ins);
  free(del);
  free(keys);
  free(gens);
  ana_free(out);
  return rc;
}

/* --- second copies of resent rows --- */

/* Deletes the later copies of this instance's rows from dedupe_from on (each (seq) keeps the
 * copy of its lowest attempt); returns how many copies it asked ClickHouse to delete, or a
 * negative error. Reads never see the copies meanwhile (they keep one row per (instance, seq)). */
static int dedupe(struct ch_store *s, struct ana_error *err) {
  char sql[512], *out = NULL;
  snprintf(
      sql, sizeof sql,
      "SELECT seq, arrayStringConcat(arrayMap(a -> toString(a), arraySort(groupArray(attempt))),"
      " ',') FROM events WHERE instance = '%s' AND seq >= %" PRIu64
      " GROUP BY seq HAVING count() > 1 LIMIT 10000 FORMAT TabSeparated",
      s->instance, (uint64_t)atomic_load(&s->dedupe_from));
  int rc = ana_clickhouse_query(s->ch, sql, true, NULL, &out, err);
  if (rc < 0)
    return rc;
  char *del = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&del, &len);
  int copies = 0, unmarked = 0;
  if (!f) {
    ana_free(out);
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  }
  fprintf(f,
          "ALTER TABLE events DELETE WHERE instance = '%s' AND"
          " concat(toString(seq), ':', toString(attempt)) IN (",
          s->instance);
  for (char *p = out; p && *p;) {
    char *end;
    uint64_t seq = strtoull(p, &end, 10);
    if (*end != '\t')
      break;
    p = end + 1;
    uint64_t keep = strtoull(p, &end, 10);
    for (p = end; *p == ',';) {
      uint64_t a = strtoull(p + 1, &end, 10);
      p = end;
      if (a == keep) { /* rows without a distinct attempt cannot be told apart */
        unmarked++;
        continue;
      }
      fprintf(f, "%s'%" PRIu64 ":%" PRIu64 "'", copies ? ", " : "", seq, a);
      copies++;
    }
    p = strchr(p, '\n');
    p = p ? p + 1 : NULL;
  }
  fputc(')', f);
  bool bad = ferror(f) != 0;
  fclose(f);
  ana_free(out);
  if (bad || !del) {
    free(del);
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  }
  if (unmarked)
    ANA_WARN("clickhouse",
             "%d rows of instance %s are in ClickHouse twice without an attempt id "
             "(written before schema 2): left as they are",
             unmarked, s->instance);
  if (copies) {
    rc = ana_clickhouse_query(s->ch, del, true, NULL, NULL, err);
    if (rc == 0) {
      ana_prom_counter_add(&s->removed, (uint64_t)copies);
      ANA_WARN("clickhouse",
               "%d rows arrived twice (an insert ClickHouse received before the range was "
               "checked landed after it): the later copies are deleted",
               copies);
    }
  }
  free(del);
  return rc < 0 ? rc : copies;
}

/* While a resent range may still get second copies, looks for them; once the time is over
 * (and a last look found none), forgets the range. */
static void dedupe_step(struct ch_store *s, int64_t now) {
  if (!atomic_load(&s->dedupe_from))
    return;
  bool over = now >= atomic_load(&s->dedupe_until);
  struct ana_error err;
  int n = dedupe(s, &err);
  if (n < 0) {
    ANA_WARN("clickhouse", "looking for second copies: %s", err.message);
    return;
  }
  if (over && n == 0) {
    atomic_store(&s->dedupe_from, 0);
    if (save_state(s, &err) < 0)
      ANA_WARN("clickhouse", "%s", err.message);
  }
}

/* --- the shipper thread --- */

static void *ship_thread(void *arg) {
  pthread_setname_np(pthread_self(), "ana-ship"); /* top -H, /proc/PID/task/TID/comm */
  struct ch_store *s = arg;
  int64_t backoff = 0, last_ship = 0, next_sweep = 0, next_dedupe = 0, next_trim = 0;
  struct job *inflight = NULL;
  uint64_t cursor = 0;
  for (;;) {
    if (nap(s, backoff))
      break;
    struct ana_error err;
    ana_error_clear(&err);
    if (!atomic_load(&s->ready)) {
      bool ok = setup(s, &err) == 0;
      if (!ok) {
        atomic_store(&s->degraded, true);
        set_reason(s, err.message);
        ANA_WARN("clickhouse", "not ready, retrying: %s", err.message);
        backoff = backoff ? (backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2) : 250;
      }
      pthread_mutex_lock(&s->mu);
      atomic_store(&s->ready, ok);
      s->tried = true;
      pthread_cond_broadcast(&s->set_up);
      pthread_mutex_unlock(&s->mu);
      if (!ok)
        continue;
    }
    if (!inflight)
      mark_shipped(s);
    int64_t now = ana_clock_mono_ms();
    if (now >= next_sweep && !inflight) {
      drop_partitions(s);
      next_sweep = now + s->sweep_ms;
    }
    if (now >= next_trim) { /* the shipped table only: whether a batch is in flight or not */
      if (trim_shipped(s, &err) < 0 && !atomic_load(&s->degraded)) /* else said already */
        ANA_WARN("clickhouse", "merging the shipped table's older rows: %s", err.message);
      ana_error_clear(&err);
      next_trim = now + s->merge_ms;
    }
    if (now >= next_dedupe && atomic_load(&s->dedupe_from)) {
      dedupe_step(s, now);
      next_dedupe = now + DEDUPE_EVERY_MS;
    }
    uint64_t shipped = atomic_load(&s->shipped), committed = atomic_load(&s->committed);
    uint64_t waiting = committed > shipped ? committed - shipped : 0;
    if (!atomic_load(&s->uncertain_hi) && waiting < (uint64_t)s->batch_rows &&
        now - last_ship < s->interval_ms) {
      backoff = s->interval_ms - (now - last_ship);
      if (atomic_load(&s->dedupe_from) && backoff > next_dedupe - now)
        backoff = next_dedupe - now > 0 ? next_dedupe - now : 0;
      continue;
    }
    last_ship = now;
    int rc;
    if (!atomic_load(&s->uncertain_hi)) {
      rc = pipeline_step(s, &inflight, &cursor, &err);
      /* Not a full batch: let it land before waiting for more. */
      if (rc >= 0 && rc < s->batch_rows) {
        int r2 = finish_inflight(&inflight, &err);
        if (r2 < 0)
          rc = r2;
      }
    } else {
      /* Something is uncertain: check it, one batch at a time, nothing in flight. */
      rc = finish_inflight(&inflight, &err);
      if (rc == 0)
        rc = ana_store_ship_batch(s->db, &ana_clickhouse_event_store, s, s->batch_rows, &err);
    }
    if (rc < 0) {
      ana_prom_counter_add(&s->failures, 1);
      if (!atomic_load(&s->degraded))
        ANA_WARN("clickhouse", "shipping failed, the events stay in the spool: %s", err.message);
      atomic_store(&s->degraded, true);
      set_reason(s, err.message);
      backoff = backoff ? (backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2) : 100;
      continue;
    }
    if (atomic_load(&s->degraded))
      ANA_INFO("clickhouse", "shipping again");
    atomic_store(&s->degraded, false);
    set_reason(s, "");
    /* A full batch: more are waiting, go on at once. */
    backoff = rc >= s->batch_rows ? 0 : s->interval_ms;
    if (rc == 0 && !inflight)
      atomic_store(&s->oldest_ms, 0);
  }
  struct ana_error err;
  finish_inflight(&inflight, &err);
  return NULL;
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ch_store *s = ctx;
  struct ana_event_store_status st;
  ana_clickhouse_event_store.status(s, &st);
  ana_prom_write_family(w, "ana_clickhouse_shipped_sequence", "gauge",
                        "Every committed event up to this sequence is in ClickHouse.");
  ana_prom_write_u64(w, "ana_clickhouse_shipped_sequence", NULL, atomic_load(&s->shipped));
  ana_prom_write_family(w, "ana_clickhouse_lag_events", "gauge",
                        "Committed events not yet confirmed by ClickHouse.");
  ana_prom_write_u64(w, "ana_clickhouse_lag_events", NULL, st.lag_events);
  ana_prom_write_family(w, "ana_clickhouse_lag_seconds", "gauge",
                        "Age of the oldest committed event not yet in ClickHouse.");
  ana_prom_write_double(w, "ana_clickhouse_lag_seconds", NULL, st.lag_seconds);
  ana_prom_write_family(w, "ana_clickhouse_degraded", "gauge",
                        "1 while ClickHouse cannot be reached or refuses the batches.");
  ana_prom_write_u64(w, "ana_clickhouse_degraded", NULL, st.degraded);
  ana_prom_write_family(w, "ana_spool_pending_bytes", "gauge",
                        "Bytes of the events in the spool not yet shipped (SPOOL_MAX_BYTES).");
  ana_prom_write_i64(w, "ana_spool_pending_bytes", NULL, st.pending_bytes);
  ana_prom_write_family(w, "ana_spool_max_bytes", "gauge", "SPOOL_MAX_BYTES.");
  ana_prom_write_i64(w, "ana_spool_max_bytes", NULL, st.max_bytes);
  ana_prom_write_family(w, "ana_spool_refused_commits_total", "counter",
                        "Commits refused (UNAVAILABLE) because the spool was full.");
  ana_prom_write_u64(w, "ana_spool_refused_commits_total", NULL, ana_prom_counter_get(&s->refused));
  ana_prom_write_family(w, "ana_clickhouse_rows_total", "counter", "Rows inserted.");
  ana_prom_write_u64(w, "ana_clickhouse_rows_total", NULL, ana_prom_counter_get(&s->rows));
  ana_prom_write_family(w, "ana_clickhouse_rows_found_total", "counter",
                        "Rows of uncertain batches found in ClickHouse already, not resent.");
  ana_prom_write_u64(w, "ana_clickhouse_rows_found_total", NULL, ana_prom_counter_get(&s->skipped));
  ana_prom_write_family(w, "ana_clickhouse_batches_total", "counter", "Batches confirmed.");
  ana_prom_write_u64(w, "ana_clickhouse_batches_total", NULL, ana_prom_counter_get(&s->batches));
  ana_prom_write_family(w, "ana_clickhouse_inserts_total", "counter",
                        "INSERT requests confirmed (one per day partition of a batch).");
  ana_prom_write_u64(w, "ana_clickhouse_inserts_total", NULL, ana_prom_counter_get(&s->inserts));
  ana_prom_write_family(w, "ana_clickhouse_insert_bytes_total", "counter",
                        "Bytes of rows inserted, before compression.");
  ana_prom_write_u64(w, "ana_clickhouse_insert_bytes_total", NULL,
                     ana_prom_counter_get(&s->bytes_out));
  ana_prom_write_family(w, "ana_clickhouse_failures_total", "counter",
                        "Batches that failed, timed out or were not confirmed.");
  ana_prom_write_u64(w, "ana_clickhouse_failures_total", NULL, ana_prom_counter_get(&s->failures));
  ana_prom_write_family(w, "ana_clickhouse_checks_total", "counter",
                        "Queries asking ClickHouse which rows of an uncertain range it holds.");
  ana_prom_write_u64(w, "ana_clickhouse_checks_total", NULL, ana_prom_counter_get(&s->verified));
  ana_prom_write_family(w, "ana_clickhouse_second_copies_deleted_total", "counter",
                        "Rows that reached ClickHouse twice (an insert received before its range "
                        "was checked, landing after it) whose later copy was deleted.");
  ana_prom_write_u64(w, "ana_clickhouse_second_copies_deleted_total", NULL,
                     ana_prom_counter_get(&s->removed));
  ana_prom_write_family(w, "ana_clickhouse_metric_aggregations_total", "counter",
                        "Metric raw-path queries aggregated in ClickHouse (path=\"sql\") or handed "
                        "back to be answered from its rows (path=\"rows\": values or a shape "
                        "SQL cannot read exactly).");
  static const char *const sql_path[] = {"path", "sql", NULL}, *const rows_path[] = {"path", "rows",
                                                                                     NULL};
  ana_prom_write_u64(w, "ana_clickhouse_metric_aggregations_total", sql_path,
                     ana_prom_counter_get(&s->agg_sql));
  ana_prom_write_u64(w, "ana_clickhouse_metric_aggregations_total", rows_path,
                     ana_prom_counter_get(&s->agg_rows));
}

/* --- the role --- */

static void ch_close(void *store);

/* The spool's events not yet shipped read at open: this many, the rest estimated from them. */
#define BACKLOG_SAMPLE 2000

struct backlog {
  uint64_t after;
  int64_t bytes, oldest_ms;
  int n;
};

static int sum_backlog(void *ctx, const struct ana_spooled_event *ev, struct ana_error *err) {
  (void)err;
  struct backlog *b = ctx;
  if (!b->oldest_ms)
    b->oldest_ms = ev->received_at_ms;
  b->bytes += event_bytes(ev->payload_len, ev->properties_json, ev->event_id);
  b->after = ev->seq;
  b->n++;
  return 0;
}

static void *ch_open(struct ana_local_db *db, struct ana_error *err) {
  if (!settings || !settings->clickhouse_host || !settings->clickhouse_host[0]) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION, "CLICKHOUSE_HOST is not set");
    return NULL;
  }
  struct ch_store *s = ana_calloc(1, sizeof *s);
  if (!s) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cond, &ca);
  pthread_cond_init(&s->set_up, &ca);
  pthread_condattr_destroy(&ca);
  s->db = db;
  s->marked_min_ts = INT64_MIN;
  s->batch_rows = settings->clickhouse_batch_rows > 0 ? settings->clickhouse_batch_rows : 100000;
  s->interval_ms =
      settings->clickhouse_batch_interval_ms > 0 ? settings->clickhouse_batch_interval_ms : 1000;
  s->max_bytes = settings->spool_max_bytes > 0 ? settings->spool_max_bytes : INT64_MAX;
  s->retention_days = settings->retention_days > 0 ? settings->retention_days : 90;
  s->sweep_ms =
      settings->retention_sweep_interval_ms > 0 ? settings->retention_sweep_interval_ms : 60000;
  s->timeout_ms = settings->clickhouse_timeout_ms > 0 ? settings->clickhouse_timeout_ms : 30000;
  s->merge_ms =
      settings->clickhouse_shipped_merge_ms > 0 ? settings->clickhouse_shipped_merge_ms : 60000;
  snprintf(s->state_path, sizeof s->state_path, "%s/clickhouse.state", settings->data_dir);
  if (load_state(s, err) < 0 || !(s->ch = ana_clickhouse_open(settings, err)) ||
      !(s->local = ana_sqlite_event_store.open(db, err)))
    goto fail;
  if (atomic_load(&s->dedupe_from)) /* stopped while looking for second copies: go on */
    atomic_store(&s->dedupe_until, ana_clock_mono_ms() + DEDUPE_TIMEOUTS * (int64_t)s->timeout_ms);
  uint64_t last = 0;
  if (ana_local_spool_last_seq(db, &last, err) < 0)
    goto fail;
  if (atomic_load(&s->shipped) > last) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                  "%s says sequence %" PRIu64 " was shipped but the spool ends at %" PRIu64
                  ": the local database is not the one it belongs to (remove the file to ship "
                  "this database as a new instance)",
                  s->state_path, (uint64_t)atomic_load(&s->shipped), last);
    goto fail;
  }
  atomic_store(&s->committed, last);
  /* The spool's events not yet shipped count against the bound from the start: a sample of
   * them read, the rest estimated until the shipper has read them (send). */
  struct backlog b = {atomic_load(&s->shipped), 0, 0, 0};
  int n = ana_local_spool_each_untexted(db, b.after, BACKLOG_SAMPLE, sum_backlog, &b, err);
  if (n < 0)
    goto fail;
  uint64_t waiting = last - atomic_load(&s->shipped);
  if (n == BACKLOG_SAMPLE && waiting > (uint64_t)n) { /* more: at the sample's mean each */
    atomic_store(&s->backlog_hi, last);
    s->backlog_est = (int64_t)((double)b.bytes / n * (double)waiting);
    s->backlog_seen = 0;
    b.bytes = s->backlog_est;
  }
  atomic_store(&s->pending_bytes, b.bytes);
  if (b.bytes)
    ANA_INFO("clickhouse", "%s%lld bytes of events in the spool not yet shipped",
             atomic_load(&s->backlog_hi) ? "about " : "", (long long)b.bytes);
  atomic_store(&s->oldest_ms, b.oldest_ms);
  if (pthread_create(&s->thread, NULL, ship_thread, s) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the ClickHouse shipper");
    goto fail;
  }
  s->started = true;
  s->metrics = ana_prom_register(collect, s) == 0;
  return s;
fail:
  ch_close(s);
  return NULL;
}

static void ch_close(void *store) {
  struct ch_store *s = store;
  if (!s)
    return;
  if (s->metrics)
    ana_prom_unregister(collect, s);
  if (s->started) {
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_cond_broadcast(&s->set_up);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
  }
  if (s->local)
    ana_sqlite_event_store.close(s->local);
  ana_clickhouse_close(s->ch);
  pthread_cond_destroy(&s->cond);
  pthread_cond_destroy(&s->set_up);
  pthread_mutex_destroy(&s->mu);
  ana_free(s);
}

static int ch_admit(void *store, struct ana_error *err) {
  struct ch_store *s = store;
  int64_t pending = atomic_load(&s->pending_bytes);
  if (pending < s->max_bytes) {
    atomic_store(&s->full, false);
    return 0;
  }
  if (!atomic_exchange(&s->full, true))
    ANA_WARN("clickhouse",
             "the spool is full (%lld bytes not yet shipped, SPOOL_MAX_BYTES = %lld): event "
             "writes answer UNAVAILABLE until ClickHouse catches up",
             (long long)pending, (long long)s->max_bytes);
  ana_prom_counter_add(&s->refused, 1);
  ana_error_set(err, ANA_STATUS_UNAVAILABLE,
                "the spool of events not yet shipped to ClickHouse is full (%lld bytes, "
                "SPOOL_MAX_BYTES = %lld); retry later",
                (long long)pending, (long long)s->max_bytes);
  return ANA_ERR_FULL;
}

static void ch_committed(void *store, const struct ana_event_record *r, size_t n) {
  struct ch_store *s = store;
  int64_t bytes = 0;
  uint64_t last = 0;
  for (size_t i = 0; i < n; i++) {
    if (r[i].duplicate)
      continue;
    bytes += event_bytes(r[i].payload_len, r[i].properties_json, r[i].event_id);
    last = r[i].seq;
    int64_t zero = 0;
    atomic_compare_exchange_strong(&s->oldest_ms, &zero, r[i].received_at_ms);
  }
  if (!last)
    return;
  atomic_fetch_add(&s->pending_bytes, bytes);
  uint64_t before = atomic_exchange(&s->committed, last);
  uint64_t shipped = atomic_load(&s->shipped), full = shipped + (uint64_t)s->batch_rows;
  if (before < full && last >= full) { /* a full batch waits now: wake the shipper */
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
  }
}

static void ch_status(void *store, struct ana_event_store_status *st) {
  struct ch_store *s = store;
  memset(st, 0, sizeof *st);
  uint64_t shipped = atomic_load(&s->shipped), committed = atomic_load(&s->committed);
  st->lag_events = committed > shipped ? committed - shipped : 0;
  int64_t oldest = atomic_load(&s->oldest_ms);
  st->lag_seconds = st->lag_events && oldest ? (double)(ana_clock_wall_ms() - oldest) / 1000.0 : 0;
  if (st->lag_seconds < 0)
    st->lag_seconds = 0;
  st->pending_bytes = atomic_load(&s->pending_bytes);
  if (st->pending_bytes < 0) /* a start-up backlog larger than its estimate, being shipped */
    st->pending_bytes = 0;
  st->max_bytes = s->max_bytes;
  st->full = st->pending_bytes >= s->max_bytes;
  st->degraded = atomic_load(&s->degraded) || !atomic_load(&s->ready);
  pthread_mutex_lock(&s->mu);
  snprintf(st->reason, sizeof st->reason, "%s",
           st->full       ? "the spool is full (SPOOL_MAX_BYTES)"
           : st->degraded ? s->reason
                          : "");
  pthread_mutex_unlock(&s->mu);
}

/* Reads: pushed down to ClickHouse (reads.c), with this instance's events not yet shipped read
 * from the spool; the shipped sequence is read once, so nothing is seen twice or missed. */
static struct ana_clickhouse_view view_of(struct ch_store *s) {
  return (struct ana_clickhouse_view){s->ch, s->db, s->instance, atomic_load(&s->shipped)};
}

/* Reads wait for the shipper's set-up: until then the events table may lack columns (schema
 * migrations not applied yet), and this instance's id and confirmed sequence may still change.
 * They wait while the first attempt runs (at most CLICKHOUSE_TIMEOUT), not for retries after
 * it failed: UNAVAILABLE then, with its reason. */
static int wait_ready(struct ch_store *s, struct ana_error *err) {
  if (atomic_load(&s->ready))
    return 0;
  struct timespec until = ana_clock_deadline(CLOCK_MONOTONIC, s->timeout_ms);
  pthread_mutex_lock(&s->mu);
  while (!atomic_load(&s->ready) && !s->tried && !s->stopping)
    if (pthread_cond_timedwait(&s->set_up, &s->mu, &until) == ETIMEDOUT)
      break;
  bool ready = atomic_load(&s->ready);
  char why[sizeof s->reason];
  snprintf(why, sizeof why, "%s", s->reason[0] ? s->reason : "no answer yet");
  pthread_mutex_unlock(&s->mu);
  if (ready)
    return 0;
  return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "ClickHouse is not set up yet: %s", why),
         ANA_ERR_IO;
}

static int ch_search(void *store, const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                     struct ana_error *err) {
  for (const char *t = q->text; t && *t; t++)
    if (*t != ' ' && *t != '\t' && *t != '\n')
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "event store: free text is the search index's");
  int rc = wait_ready(store, err);
  if (rc < 0)
    return rc;
  struct ana_clickhouse_view v = view_of(store);
  return ana_clickhouse_search(&v, q, hit, ctx, err);
}

static int ch_scan(void *store, const char *account_id, int64_t from_ms, int64_t to_ms,
                   const char *const *names, size_t n_names, ana_event_scan_fn fn, void *ctx,
                   struct ana_error *err) {
  int rc = wait_ready(store, err);
  if (rc < 0)
    return rc;
  struct ana_clickhouse_view v = view_of(store);
  return ana_clickhouse_scan(&v, account_id, from_ms, to_ms, names, n_names, fn, ctx, err);
}

static int ch_aggregate(void *store, const struct ana_event_agg_query *q, ana_event_agg_fn agg,
                        ana_event_scan_fn rows, void *ctx, struct ana_error *err) {
  struct ch_store *s = store;
  int rc = wait_ready(s, err);
  if (rc < 0)
    return rc;
  struct ana_clickhouse_view v = view_of(s);
  rc = ana_clickhouse_aggregate(&v, q, agg, rows, ctx, err);
  if (rc >= 0)
    ana_prom_counter_add(rc ? &s->agg_sql : &s->agg_rows, 1);
  return rc;
}

/* Replays in commit order are this instance's own (rollups' watermark is its sequence): the
 * local copy. */
static int ch_scan_seq(void *store, const char *account_id, uint64_t after_seq, uint64_t upto_seq,
                       ana_event_scan_fn fn, void *ctx, struct ana_error *err) {
  return ana_sqlite_event_store.scan_seq(((struct ch_store *)store)->local, account_id, after_seq,
                                         upto_seq, fn, ctx, err);
}

/* Other instances' bounds: the last row each wrote to the shipped table. */
static int ch_other_bounds(void *store, ana_other_bound_fn fn, void *ctx, struct ana_error *err) {
  struct ch_store *s = store;
  int rc = wait_ready(s, err);
  if (rc < 0)
    return rc;
  char sql[256], *out = NULL;
  snprintf(sql, sizeof sql,
           "SELECT instance, max(seq) FROM shipped WHERE instance != '%s' GROUP BY instance"
           " FORMAT TabSeparated",
           s->instance);
  if ((rc = ana_clickhouse_query(s->ch, sql, true, NULL, &out, err)) < 0)
    return rc;
  for (char *p = out, *nl; p && *p && rc == 0; p = nl ? nl + 1 : NULL) {
    nl = strchr(p, '\n');
    if (nl)
      *nl = '\0';
    char *tab = strchr(p, '\t');
    if (!tab || tab == p || strchr(p, '\\'))
      continue; /* an instance id is a UUID: nothing TabSeparated escapes */
    *tab = '\0';
    rc = fn(ctx, p, strtoull(tab + 1, NULL, 10));
  }
  ana_free(out);
  return rc;
}

/* Another instance's events (after, upto], from the lowest timestamp its shipped rows after
 * `after` name (the events table is ordered by time: the recent ones are a short read). */
static int ch_scan_other(void *store, const char *account_id, const char *instance, uint64_t after,
                         uint64_t upto, ana_event_scan_fn fn, void *ctx, struct ana_error *err) {
  struct ch_store *s = store;
  int rc = wait_ready(s, err);
  if (rc < 0)
    return rc;
  if (upto <= after)
    return 0;
  struct sql_text {
    char *p;
    size_t len;
  } q = {0};
  FILE *f = open_memstream(&q.p, &q.len);
  if (!f)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  fputs("SELECT min(min_ts), count() FROM shipped WHERE instance = '", f);
  for (const char *c = instance; *c; c++) {
    if (*c == '\'' || *c == '\\')
      fputc('\\', f);
    fputc(*c, f);
  }
  fprintf(f, "' AND seq > %" PRIu64 " FORMAT TabSeparated", after);
  bool bad = ferror(f) != 0;
  fclose(f);
  char *out = NULL;
  rc = bad ? (ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM)
           : ana_clickhouse_query(s->ch, q.p, true, NULL, &out, err);
  free(q.p);
  if (rc < 0)
    return rc;
  char *end = NULL;
  long long min_ts = out ? strtoll(out, &end, 10) : 0;
  uint64_t rows = end && *end == '\t' ? strtoull(end + 1, NULL, 10) : 0;
  ana_free(out);
  if (rows == 0)
    return 0; /* nothing marked after `after` */
  struct ana_clickhouse_view v = view_of(s);
  v.other = instance;
  v.other_after = after;
  v.other_upto = upto;
  return ana_clickhouse_scan(&v, account_id, (int64_t)min_ts, INT64_MAX, NULL, 0, fn, ctx, err);
}

static int ch_last_seq(void *store, uint64_t *out, struct ana_error *err) {
  return ana_sqlite_event_store.last_seq(((struct ch_store *)store)->local, out, err);
}

/* Local retention deletes only shipped events (ClickHouse's own is by day partition). */
static int ch_expire(void *store, int64_t cutoff_ms, uint64_t upto_seq, int max_rows,
                     int (*before_delete)(void *ctx, const int64_t *seqs, size_t n,
                                          struct ana_error *err),
                     void *ctx, struct ana_error *err) {
  struct ch_store *s = store;
  uint64_t shipped = atomic_load(&s->shipped);
  return ana_sqlite_event_store.expire(s->local, cutoff_ms, upto_seq < shipped ? upto_seq : shipped,
                                       max_rows, before_delete, ctx, err);
}

/* The spool's copies only: rows ClickHouse holds already keep what they were shipped with
 * (README: field-level encryption); an event not yet shipped leaves sealed. */
static int ch_rewrite(void *store, const struct ana_event_record *records, size_t n,
                      struct ana_error *err) {
  return ana_sqlite_event_store.rewrite(((struct ch_store *)store)->local, records, n, err);
}

const struct ana_event_store_ops ana_clickhouse_event_store = {
    .version = ANA_EVENT_STORE_VERSION,
    .name = "clickhouse",
    .open = ch_open,
    .ship = ch_ship,
    .shipped_seq = ch_shipped_seq,
    .search = ch_search,
    .scan = ch_scan,
    .scan_seq = ch_scan_seq,
    .last_seq = ch_last_seq,
    .expire = ch_expire,
    .close = ch_close,
    .admit = ch_admit,
    .committed = ch_committed,
    .status = ch_status,
    .aggregate = ch_aggregate,
    .rewrite = ch_rewrite,
    .other_bounds = ch_other_bounds,
    .scan_other = ch_scan_other,
};
