/* The group committer: one thread takes the requests queued since its last
 * commit and writes them in one transaction (deduplication, then the event
 * store), so concurrent requests share one fsync. A request is answered
 * only when the commit holding its events has returned, i.e. is on disk.
 * The commit thread sends the answers itself, right after the commit:
 * handing them to another thread put a wake-up on every request's path,
 * which cost more at the tail (the ack p99) than sending them delays the
 * next commit (microseconds per request; figures in bench/RESULTS.md). Between commits the commit
 * thread deletes expired events in small chunks, so retention never holds the write lock for long.
 */
#include "ana_ingest.h"
#include "ana_local_db.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_heartbeat.h"
#include "ana_log.h"
#include "ana_prom.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#define DAY_MS 86400000LL
#define RETENTION_CHUNK 1000
/* Free pages given back after each retention step, at most (16 MiB). */
#define RECLAIM_PAGES 4096
/* An idle commit thread wakes at least this often to beat (liveness). */
#define IDLE_BEAT_MS 1000

struct ana_committer {
  struct ana_local_db *db;
  struct ana_store_roles roles;
  struct ana_committer_options o;

  pthread_mutex_t mu;
  pthread_cond_t cond;
  struct ana_commit_request *head, *tail;
  long queued_events;
  bool stopping;
  pthread_t thread;
  bool started;

  struct ana_committer_stats stats;
  /* Metrics (lock-free): how long each commit took (begin to the fsync'd
   * commit), how many events it held, how long requests waited for it. */
  struct ana_prom_histogram commit_seconds, commit_events, wait_seconds;
  bool metrics_registered;
  int last_commit_requests;
  int64_t next_sweep_ms;
};

static const double event_buckets[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_committer *c = ctx;
  struct ana_committer_stats st;
  ana_committer_stats(c, &st);
  static const struct {
    const char *name, *type, *help;
  } families[] = {
      {"ana_ingest_commits_total", "counter", "Group commits that reached the disk."},
      {"ana_ingest_events_stored_total", "counter", "Events stored durably."},
      {"ana_ingest_events_duplicate_total", "counter",
       "Events answered DUPLICATE (their eventId was stored before)."},
      {"ana_ingest_commit_failures_total", "counter",
       "Group commits that failed (nothing of them was acknowledged)."},
      {"ana_ingest_queued_events", "gauge", "Events waiting for a group commit."},
      {"ana_ingest_last_commit_sequence", "gauge",
       "Commit sequence number of the last stored event."},
  };
  const uint64_t values[] = {st.commits,  st.events_stored, st.events_duplicate,
                             st.failures, st.queued_events, st.last_seq};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    ana_prom_write_family(w, families[i].name, families[i].type, families[i].help);
    ana_prom_write_u64(w, families[i].name, NULL, values[i]);
  }
  ana_prom_write_family(w, "ana_ingest_commit_duration_seconds", "histogram",
                        "Time of one group commit, from BEGIN to the fsync'd COMMIT.");
  ana_prom_write_histogram(w, "ana_ingest_commit_duration_seconds", NULL, &c->commit_seconds);
  ana_prom_write_family(w, "ana_ingest_commit_events", "histogram", "Events per group commit.");
  ana_prom_write_histogram(w, "ana_ingest_commit_events", NULL, &c->commit_events);
  ana_prom_write_family(w, "ana_ingest_queue_wait_seconds", "histogram",
                        "Time a request waited in the queue before its commit began.");
  ana_prom_write_histogram(w, "ana_ingest_queue_wait_seconds", NULL, &c->wait_seconds);
}

/* Takes requests from the queue up to batch_size events (at least one). */
static struct ana_commit_request *take_batch(struct ana_committer *c, size_t *events,
                                             int *requests) {
  struct ana_commit_request *first = c->head, *last = NULL;
  size_t n = 0;
  *requests = 0;
  for (struct ana_commit_request *r = c->head; r; r = r->next) {
    if (*requests > 0 && n + r->n > (size_t)c->o.batch_size)
      break;
    n += r->n;
    last = r;
    (*requests)++;
  }
  c->head = last->next;
  if (!c->head)
    c->tail = NULL;
  last->next = NULL;
  c->queued_events -= (long)n;
  *events = n;
  return first;
}

static int commit_batch(struct ana_committer *c, struct ana_commit_request *batch,
                        struct ana_error *err) {
  /* A store that ships from the spool may refuse more (its bound). */
  if (c->roles.events && c->roles.events->admit) {
    int rc = c->roles.events->admit(c->roles.event_store, err);
    if (rc < 0)
      return rc;
  }
  /* The staged backlog's bound (the mover's lag), before the write lock. */
  size_t events = 0;
  for (struct ana_commit_request *r = batch; r; r = r->next)
    events += r->n;
  int rc = ana_local_staging_admit(c->db, events, err);
  if (rc < 0)
    return rc;
  rc = ana_local_db_begin(c->db, err);
  if (rc < 0)
    return rc;
  for (struct ana_commit_request *r = batch; r && rc == 0; r = r->next) {
    rc = ana_local_dedupe_claim(c->db, r->records, r->n, err);
    if (rc == 0)
      rc = ana_local_spool_append(c->db, r->records, r->n, err);
  }
  if (rc < 0) {
    ana_local_db_rollback(c->db);
    return rc;
  }
  return ana_local_db_commit(c->db, err);
}

static void answer_batch(struct ana_commit_request *batch, int rc, const struct ana_error *err) {
  while (batch) {
    struct ana_commit_request *next = batch->next;
    batch->done(batch, rc, err);
    batch = next;
  }
}

static void finish_batch(struct ana_committer *c, struct ana_commit_request *batch, int rc,
                         const struct ana_error *err) {
  uint64_t stored = 0, duplicate = 0, last_seq = 0;
  if (rc == 0) {
    for (struct ana_commit_request *r = batch; r; r = r->next) {
      for (size_t i = 0; i < r->n; i++) {
        if (r->records[i].duplicate) {
          duplicate++;
        } else {
          stored++;
          last_seq = r->records[i].seq;
        }
      }
      /* The subscribers see the events of each request, in commit order. */
      ana_post_commit_run(c->o.post_commit, r->records, r->n);
      if (c->roles.events && c->roles.events->committed)
        c->roles.events->committed(c->roles.event_store, r->records, r->n);
    }
    /* Index after commit: a search index that is told (the embedded one
     * follows the committed events by itself). */
    if (stored && c->roles.search && c->roles.search->committed)
      c->roles.search->committed(c->roles.search_index, last_seq);
  } else if (rc != ANA_ERR_FULL) { /* a full spool is answered, not logged per commit */
    ANA_ERROR("ingest", "commit failed, nothing of it was acknowledged: %s", err->message);
  }
  pthread_mutex_lock(&c->mu);
  if (rc == 0) {
    c->stats.commits++;
    c->stats.events_stored += stored;
    c->stats.events_duplicate += duplicate;
    if (stored)
      c->stats.last_seq = last_seq;
  } else {
    c->stats.failures++;
  }
  pthread_mutex_unlock(&c->mu);
  answer_batch(batch, rc, err);
}

static void sweep_retention(struct ana_committer *c) {
  struct ana_error err;
  int64_t now = ana_clock_wall_ms();
  int64_t cutoff = now - (int64_t)c->o.retention_days * DAY_MS;
  /* The events are in analytics.db: a transaction there (the keys' expiry
   * writes nothing; the merges drop them). */
  if (ana_local_db_store_begin(c->db, &err) < 0)
    return;
  int deleted = ana_store_expire(&c->roles, cutoff, RETENTION_CHUNK, &err);
  int keys = deleted >= 0 ? ana_local_dedupe_expire(c->db, now, RETENTION_CHUNK, &err) : -1;
  if (deleted < 0 || keys < 0) {
    ana_local_db_store_rollback(c->db);
    ANA_WARN("ingest", "retention sweep failed: %s", err.message);
    c->next_sweep_ms = now + c->o.retention_sweep_interval_ms;
    return;
  }
  if (ana_local_db_store_commit(c->db, &err) < 0) {
    ANA_WARN("ingest", "retention sweep failed: %s", err.message);
    c->next_sweep_ms = now + c->o.retention_sweep_interval_ms;
    return;
  }
  if (deleted > 0 || keys > 0) {
    ANA_DEBUG("ingest", "retention deleted %d events and %d keys", deleted, keys);
    /* The pages they held go back to the file system (a failure leaves
     * them free for reuse: nothing lost). */
    if (ana_local_db_reclaim(c->db, RECLAIM_PAGES, &err) < 0)
      ANA_WARN("ingest", "retention could not shrink the database: %s", err.message);
  }
  /* A full chunk means more is due: continue soon, between commits. */
  c->next_sweep_ms = (deleted == RETENTION_CHUNK || keys >= RETENTION_CHUNK)
                         ? now
                         : now + c->o.retention_sweep_interval_ms;
}

static void *commit_thread(void *arg) {
  struct ana_committer *c = arg;
  pthread_setname_np(pthread_self(), "ana-commit"); /* top -H, /proc/PID/task/TID/comm */
  /* Idle, the thread still wakes every second to beat (liveness). */
  struct ana_heartbeat *hb = ana_heartbeat_register("committer");
  pthread_mutex_lock(&c->mu);
  for (;;) {
    while (!c->head && !c->stopping) {
      ana_heartbeat_beat(hb);
      int64_t wait = c->next_sweep_ms - ana_clock_wall_ms();
      if (wait <= 0) {
        pthread_mutex_unlock(&c->mu);
        sweep_retention(c);
        pthread_mutex_lock(&c->mu);
        continue;
      }
      struct timespec ts = ana_deadline_in_ms(wait < IDLE_BEAT_MS ? wait : IDLE_BEAT_MS);
      pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    ana_heartbeat_beat(hb);
    if (!c->head && c->stopping)
      break;
    /* When requests were sharing commits, wait a little for more; a lone
     * client is not slowed down. */
    if (c->o.processing_interval_ms > 0 && c->last_commit_requests > 1 &&
        c->queued_events < c->o.batch_size && !c->stopping) {
      struct timespec ts = ana_deadline_in_ms(c->o.processing_interval_ms);
      while (c->queued_events < c->o.batch_size && !c->stopping &&
             pthread_cond_timedwait(&c->cond, &c->mu, &ts) == 0) {
      }
    }
    size_t events;
    int requests;
    struct ana_commit_request *batch = take_batch(c, &events, &requests);
    pthread_mutex_unlock(&c->mu);

    struct ana_error err;
    ana_error_clear(&err);
    int64_t started_ns = ana_clock_mono_ns();
    for (struct ana_commit_request *r = batch; r; r = r->next)
      ana_prom_histogram_observe(&c->wait_seconds, (double)(started_ns - r->enqueued_ns) / 1e9);
    int rc = commit_batch(c, batch, &err);
    ana_prom_histogram_observe(&c->commit_seconds,
                               (double)(ana_clock_mono_ns() - started_ns) / 1e9);
    if (rc == 0)
      ana_prom_histogram_observe(&c->commit_events, (double)events);
    finish_batch(c, batch, rc, &err);

    pthread_mutex_lock(&c->mu);
    c->last_commit_requests = requests;
  }
  pthread_mutex_unlock(&c->mu);
  ana_heartbeat_unregister(hb);
  return NULL;
}

struct ana_committer *ana_committer_create(struct ana_local_db *db,
                                           const struct ana_store_roles *roles,
                                           const struct ana_committer_options *o,
                                           struct ana_error *err) {
  struct ana_committer *c = ana_calloc(1, sizeof *c);
  if (!c) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  c->db = db;
  c->roles = *roles;
  c->o = *o;
  if (c->o.batch_size < 1)
    c->o.batch_size = 1;
  c->next_sweep_ms = ana_clock_wall_ms() + 1000; /* first sweep soon after start-up */
  ana_prom_histogram_init(&c->commit_seconds, ana_prom_latency_buckets, ana_prom_latency_buckets_n);
  ana_prom_histogram_init(&c->wait_seconds, ana_prom_latency_buckets, ana_prom_latency_buckets_n);
  ana_prom_histogram_init(&c->commit_events, event_buckets,
                          sizeof event_buckets / sizeof event_buckets[0]);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cond, NULL);
  if (pthread_create(&c->thread, NULL, commit_thread, c) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the commit thread");
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    ana_free(c);
    return NULL;
  }
  c->started = true;
  c->metrics_registered = ana_prom_register(collect, c) == 0;
  return c;
}

int ana_committer_submit(struct ana_committer *c, struct ana_commit_request *req,
                         struct ana_error *err) {
  pthread_mutex_lock(&c->mu);
  if (c->stopping) {
    pthread_mutex_unlock(&c->mu);
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
    return ANA_ERR_CLOSED;
  }
  if (c->queued_events > 0 && c->queued_events + (long)req->n > c->o.queue_max) {
    long queued = c->queued_events;
    pthread_mutex_unlock(&c->mu);
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED,
                  "the ingest queue is full (%ld events waiting for a commit); retry later",
                  queued);
    return ANA_ERR_FULL;
  }
  req->next = NULL;
  req->enqueued_ns = ana_clock_mono_ns();
  if (c->tail)
    c->tail->next = req;
  else
    c->head = req;
  c->tail = req;
  c->queued_events += (long)req->n;
  pthread_cond_signal(&c->cond);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

void ana_committer_destroy(struct ana_committer *c) {
  if (!c)
    return;
  if (c->metrics_registered)
    ana_prom_unregister(collect, c);
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  pthread_cond_signal(&c->cond);
  pthread_mutex_unlock(&c->mu);
  if (c->started)
    pthread_join(c->thread, NULL); /* it answers every request before it ends */
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cond);
  ana_free(c);
}

void ana_committer_stats(struct ana_committer *c, struct ana_committer_stats *out) {
  pthread_mutex_lock(&c->mu);
  *out = c->stats;
  out->queued_events = (uint64_t)c->queued_events;
  pthread_mutex_unlock(&c->mu);
}
