/* What the rollup_*.c files share: the engine's state (struct ana_rollups,
 * a metric's definition and progress), the time levels, the cell table of
 * a round or a query, and the functions one part calls in another. Used by
 * rollup.c and rollup_*.c; not for other modules. */
#ifndef ANA_ROLLUP_SHARED_H
#define ANA_ROLLUP_SHARED_H

#include "ana_rollup.h"

#include "acc_internal.h"
#include "ana_error.h"
#include "ana_formula.h"
#include "ana_prom.h"
#include "metric_internal.h"
#include "rollup_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LEVELS ANA_ROLLUP_LEVELS
/* The span of a cell of each level: 15 minutes, an hour, a day. */
static const int64_t level_ms[LEVELS] = {15 * 60000LL, 3600000LL, 86400000LL};

/* Another instance sharing the event store, and a sequence of its events. */
struct rmark {
  char *instance;
  uint64_t seq;
};

/* One metric's current definition and progress. */
struct rmetric {
  struct rmetric *next;
  char *metric_id, *account_id;
  int64_t version;
  uint64_t watermark, backfill_to;
  uint64_t persisted; /* the watermark as stored */
  uint8_t *def;       /* the packed definition: also its fingerprint */
  size_t def_len;
  Analytics__V1__Metric *metric; /* def unpacked */
  struct ana_formula *formula;
  struct ana_metric_query q;
  struct ana_mq *mq;
  bool busy; /* the thread is working on it; free it there when dead */
  bool dead;
  /* The thread's: per other instance, the sequence up to which its events are in the cells
   * (rollup_others.c); others_once: they were read once since the start or definition. */
  struct rmark *marks;
  size_t n_marks;
  bool others_once;
};

/* Rows to delete: versions below `below` of a metric (INT64_MAX: all). */
struct garbage {
  struct garbage *next;
  char *metric_id;
  int64_t below;
};

struct ana_rollups {
  struct ana_local_db *db;
  const struct ana_event_store_ops *ops;
  void *store;
  int chunk;
  struct ana_rollup_cells *cells; /* the thread's connection; definitions under mu */
  pthread_mutex_t mu;             /* metrics, garbage; may be held across a short write */
  /* Wake-ups, on their own mutex: the commit hook must never wait for mu. */
  pthread_mutex_t wake_mu;
  pthread_cond_t cond;
  struct rmetric *metrics;
  struct rmetric **todo; /* the thread's, each round */
  struct work *works;    /* todo_cap of them */
  size_t todo_cap;
  struct garbage *garbage;
  bool stop, kick, started;
  /* The thread waits for work (not for the next round's time): only then
   * does a commit need to signal it, rather than wake it on every commit
   * to go back to sleep. */
  bool idle;
  pthread_t thread;
  /* Cells in memory (budget 0: none). Lock order: mu before cache.lock;
   * nothing takes mu while holding cache.lock. */
  struct rc_cache cache;
  bool cache_ready;
  atomic_uint_fast64_t memory_queries, database_queries;
  int64_t retention_ms, sweep_ms; /* 0: cells are kept */
  int expiry_chunk;
  int64_t next_sweep_ms; /* under mu */
  /* For /metrics, without locks: the last commit sequence number seen (the
   * commit hook and the thread raise it), the lowest watermark of the
   * complete metric versions (UINT64_MAX: none) and the cache's bytes, as
   * the thread last saw them. */
  atomic_uint_fast64_t committed, low_watermark, cache_bytes;
  struct ana_prom_counter events_processed, cells_written, other_events;
  /* The thread's: the other instances' bounds the event store last reported, and when to ask
   * again (rollup_others.c). */
  struct rmark *bounds;
  size_t n_bounds, cap_bounds;
  int64_t next_bounds_ms, bounds_retry_ms;
  bool prom_registered;
};

/* Raises *a to at least v. */
static inline void ru_raise_to(atomic_uint_fast64_t *a, uint64_t v) {
  uint_fast64_t cur = atomic_load_explicit(a, memory_order_relaxed);
  while (cur < v && !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed,
                                                           memory_order_relaxed)) {
  }
}

static inline int64_t ru_floor_to(int64_t t, int64_t size) {
  int64_t q = t / size;
  if (t % size && t < 0)
    q--;
  return q * size;
}

static inline uint64_t ru_key_hash(const char *key) {
  uint64_t h = 1469598103934665603ULL;
  for (; *key; key++)
    h = (h ^ (unsigned char)*key) * 1099511628211ULL;
  return h;
}

struct cell_entry {
  int level;
  int64_t bucket;
  char *key;
  uint64_t hash;
  struct ana_mq_cell *cell;
  size_t enc_off, enc_len; /* maintenance: its merged encoding in work.enc */
};

/* Cells by (level, bucket, group key): a chunk's changes on the thread,
 * and a query's raw events per (bucket index, group key). */
struct chunk {
  const struct ana_mq *mq;
  struct cell_entry *slots;
  size_t cap, len;
  int64_t ts; /* of the event being fed */
  int rc;
  /* Maintenance: the cells of the last event fed, by its group key (an
   * entry's) and 15-minute cell, which fix its hour and day cells: events
   * in commit order mostly fall in the cells of the one before. */
  const char *last_key;
  int64_t last_bucket;
  struct ana_mq_cell *last[LEVELS];
};

/* What becomes of a metric's chunk in a round. */
enum work_state {
  WORK_FAILED, /* an error (logged): nothing moves, the chunk is read again */
  WORK_QUIET,  /* no cells to write: the watermark moves in memory only */
  WORK_WRITE,  /* cells and watermark go to the database */
  WORK_GONE,   /* redefined or deleted meanwhile: its cells belong to nobody */
};

/* One metric's share of a round: the events (lo, hi] of its account, its
 * cells of them, and those merged with the stored cells, encoded. */
struct work {
  struct rmetric *m;
  uint64_t lo, hi;
  bool others; /* reads the other instances' events from its marks up to the bounds instead */
  bool others_read, others_failed; /* (ru_advance's) */
  struct chunk c;
  enum work_state state;
  struct rc_set *set; /* its cells in memory, or NULL */
  struct rc_changes changes;
  bool changes_lost;
  uint8_t *enc; /* the encodings of c's cells, at their enc_off */
  size_t enc_len, enc_cap;
};

/* Definitions (rollup_defs.c); under mu unless said. */
/* Builds a metric from its stored definition; NULL with err filled. */
struct rmetric *ru_metric_new(const char *metric_id, const char *account_id, int64_t version,
                              const uint8_t *def, size_t def_len, struct ana_error *err);
void ru_metric_free(struct rmetric *m);
/* The definition as stored (caller frees); NULL when out of memory. */
uint8_t *ru_pack_definition(const Analytics__V1__Metric *m, const struct ana_formula *f,
                            size_t *len);
/* The link to metric_id's metric, or to the list's NULL end. */
struct rmetric **ru_find_metric(struct ana_rollups *r, const char *metric_id);
/* Unlinks *p; frees it unless the thread holds it. */
void ru_retire(struct rmetric **p);
/* Queues the deletion of metric_id's versions below `below` (INT64_MAX:
 * all). Returns 0 or ANA_ERR_NOMEM. */
int ru_add_garbage(struct ana_rollups *r, const char *metric_id, int64_t below);

/* Other instances' events (rollup_others.c); the thread's. */
/* The metric's mark of instance (0: none). */
uint64_t ru_mark_of(const struct rmetric *m, const char *instance);
/* Sets it; 0 or ANA_ERR_NOMEM. */
int ru_set_mark(struct rmetric *m, const char *instance, uint64_t seq);
void ru_marks_free(struct rmetric *m);
/* Loads the stored marks of the current versions (at start, under mu). */
int ru_load_marks(struct ana_rollups *r, struct ana_error *err);
/* Asks the event store for the other instances' bounds when due (now: at once); how many
 * there are, or -1 when the store cannot say (or has no other instances' events to offer). */
int ru_refresh_bounds(struct ana_rollups *r, bool now);
/* Whether m's marks are behind the bounds. */
bool ru_others_behind(const struct ana_rollups *r, const struct rmetric *m);
/* Whether a's and b's marks are the same where they are behind the bounds. */
bool ru_same_marks(const struct ana_rollups *r, const struct rmetric *a, const struct rmetric *b);
/* Feeds ctx every event of the other instances from the marks of w[0..n) (all the same: each
 * event read once for all) up to the bounds; 0 or a negative error (err filled). */
int ru_scan_others(struct ana_rollups *r, struct work **w, size_t n, ana_event_scan_fn feed,
                   void *ctx, struct ana_error *err);
/* In the write transaction: w's marks (after its version's watermark was marked). */
int ru_write_marks(struct ana_rollups *r, const struct work *w, struct ana_error *err);
/* After w's chunk was applied: its marks move to the bounds. */
void ru_apply_marks(struct ana_rollups *r, struct work *w);

/* The cell table (rollup_cell_table.c). */
/* The entry of a cell, made on first sight; NULL when out of memory. */
struct cell_entry *ru_chunk_cell(struct chunk *c, int level, int64_t bucket, const char *key,
                                 uint64_t kh);
void ru_chunk_fini(struct chunk *c);

/* The thread's work (rollup_advance.c, rollup_retention.c,
 * rollup_cache_tend.c, rollup_thread.c). */
/* One chunk for each metric of w; true when a metric has more to do. */
bool ru_advance(struct ana_rollups *r, struct work *w, size_t n, uint64_t head);
/* Deletes one chunk of garbage whose time has come; true when some is left. */
bool ru_collect_garbage(struct ana_rollups *r);
/* Deletes one chunk of expired cells when a sweep is due; true when more
 * is left. */
bool ru_expire_cells(struct ana_rollups *r, struct rmetric **todo, size_t n);
/* Loads m's cells into memory as queries need them; m is held busy. */
void ru_tend_cache(struct ana_rollups *r, struct rmetric *m);
/* Drops the sets of versions that are no longer current. */
void ru_prune_cache(struct ana_rollups *r);
/* Whether the cache has work waiting. Under mu. */
bool ru_cache_pending(struct ana_rollups *r);
/* Publishes the progress /metrics reports. */
void ru_publish_progress(struct ana_rollups *r);
/* The thread's SQLite busy handler (ctx: the rollups). */
int ru_busy_wait(void *ctx, int count);
/* The thread (arg: the rollups). */
void *ru_thread(void *arg);
/* Wakes the thread for new work. Never waits for mu. */
void ru_wake(struct ana_rollups *r);

#endif
