/* Metric rollups: the maintenance thread's loop (backfill, catch-up after
 * a crash and live updates are one loop over the commit sequence), its
 * wake-ups by commits, and waiting for it to be idle. */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <time.h>

#define IDLE_WAKE_MS 1000
/* The shortest time between two rounds while commits keep coming. */
#define ROUND_MS 50
/* How long the thread waits for the write lock before giving up (the
 * other connections' busy timeout). */
#define BUSY_MS 10000

void ru_wake(struct ana_rollups *r) {
  pthread_mutex_lock(&r->wake_mu);
  r->kick = true;
  if (r->idle)
    pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->wake_mu);
}

/* Publishes the progress /metrics reports. On the thread (the only writer
 * of watermarks and of the cache), or before it starts. */
void ru_publish_progress(struct ana_rollups *r) {
  uint64_t low = UINT64_MAX;
  pthread_mutex_lock(&r->mu);
  for (struct rmetric *m = r->metrics; m; m = m->next)
    if (m->watermark >= m->backfill_to && m->watermark < low)
      low = m->watermark;
  pthread_mutex_unlock(&r->mu);
  atomic_store_explicit(&r->low_watermark, low, memory_order_relaxed);
  atomic_store_explicit(&r->cache_bytes, r->cache.bytes, memory_order_relaxed);
}

/* The thread's busy handler. Under load the committer holds the write lock
 * nearly all the time and SQLite's default handler sleeps 1, 2, 5 ... 100
 * ms between tries: the thread would find it free only by chance, and lag.
 * The commit hook signals each commit, that is a moment the lock was just
 * released: the next try follows it at once (or a millisecond later). */
int ru_busy_wait(void *ctx, int count) {
  struct ana_rollups *r = ctx;
  if (count >= BUSY_MS)
    return 0;
  pthread_mutex_lock(&r->wake_mu);
  struct timespec ts = ana_deadline_in_ms(1);
  pthread_cond_timedwait(&r->cond, &r->wake_mu, &ts);
  pthread_mutex_unlock(&r->wake_mu);
  return 1;
}

void *ru_thread(void *arg) {
  pthread_setname_np(pthread_self(), "ana-rollup"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_rollups *r = arg;
  bool more = true;
  int64_t last_round = 0;
  for (;;) {
    pthread_mutex_lock(&r->wake_mu);
    if (!more && !r->kick && !r->stop) {
      struct timespec ts = ana_deadline_in_ms(IDLE_WAKE_MS);
      r->idle = true;
      pthread_cond_timedwait(&r->cond, &r->wake_mu, &ts);
      r->idle = false;
    }
    /* Following a stream of commits, a round at most every ROUND_MS: each
     * round's write is one the commits wait for, so it had better carry
     * many events. A commit after a quiet spell is taken at once. */
    int64_t wait = last_round + ROUND_MS - ana_clock_mono_ms();
    if (!more && !r->stop && wait > 0) {
      struct timespec ts = ana_deadline_in_ms(wait > ROUND_MS ? ROUND_MS : wait);
      while (!r->stop && pthread_cond_timedwait(&r->cond, &r->wake_mu, &ts) == 0) {
      }
    }
    last_round = ana_clock_mono_ms();
    r->kick = false;
    bool stop = r->stop;
    pthread_mutex_unlock(&r->wake_mu);
    if (stop)
      break;
    struct ana_error err;
    ana_error_clear(&err);
    uint64_t head = 0;
    more = false;
    if (r->ops->last_seq(r->store, &head, &err) < 0) {
      ANA_WARN("rollups", "cannot read the commit sequence: %s", err.message);
      continue;
    }
    ru_raise_to(&r->committed, head);
    /* Every metric, held: those behind get one chunk each per round (the
     * metrics of an account at the same watermark share its reading), so a
     * backfill never holds up the live updates of the others; the complete
     * ones get their cells loaded into memory when queries asked. */
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    for (struct rmetric *m = r->metrics; m; m = m->next)
      n++;
    if (n > r->todo_cap) {
      /* kept across rounds: an idle round allocates nothing */
      struct rmetric **t = ana_realloc(r->todo, n * sizeof *t);
      if (t)
        r->todo = t;
      struct work *w = t ? ana_realloc(r->works, n * sizeof *w) : NULL;
      if (w) {
        r->works = w;
        r->todo_cap = n;
      }
    }
    struct rmetric **todo = r->todo;
    n = 0;
    for (struct rmetric *m = r->metrics; m && n < r->todo_cap; m = m->next) {
      m->busy = true;
      todo[n++] = m;
    }
    pthread_mutex_unlock(&r->mu);
    /* First the events other instances committed to a shared event store (a backfill reads
     * them before its first chunk: complete, it holds them): the metrics whose marks are
     * behind the bounds, in works of their own (their watermark stays). */
    bool fresh = false;
    for (size_t i = 0; i < n; i++)
      fresh |= !todo[i]->others_once; /* (written by this thread only) */
    size_t n_works = 0;
    if (n && ru_refresh_bounds(r, fresh) >= 0) {
      pthread_mutex_lock(&r->mu);
      for (size_t i = 0; i < n; i++) {
        struct rmetric *m = todo[i];
        if (m->dead)
          continue;
        if (!ru_others_behind(r, m))
          m->others_once = true;
        else
          r->works[n_works++] = (struct work){
              .m = m, .lo = m->watermark, .hi = m->watermark, .others = true, .c = {.mq = m->mq}};
      }
      pthread_mutex_unlock(&r->mu);
      if (n_works && ru_advance(r, r->works, n_works, head))
        more = true;
      n_works = 0;
    }
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++) {
      struct rmetric *m = todo[i];
      if (m->dead || m->watermark >= head)
        continue;
      uint64_t lo = m->watermark; /* written by this thread only */
      uint64_t hi = head - lo > (uint64_t)r->chunk ? lo + (uint64_t)r->chunk : head;
      r->works[n_works++] = (struct work){.m = m, .lo = lo, .hi = hi, .c = {.mq = m->mq}};
    }
    pthread_mutex_unlock(&r->mu);
    if (n_works && ru_advance(r, r->works, n_works, head))
      more = true;
    for (size_t i = 0; i < n; i++) {
      pthread_mutex_lock(&r->mu);
      bool dead = todo[i]->dead;
      pthread_mutex_unlock(&r->mu);
      if (!dead && r->cache_ready)
        ru_tend_cache(r, todo[i]);
    }
    if (ru_expire_cells(r, todo, n))
      more = true;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++) {
      todo[i]->busy = false;
      if (todo[i]->dead)
        ru_metric_free(todo[i]);
    }
    pthread_mutex_unlock(&r->mu);
    if (r->cache_ready)
      ru_prune_cache(r);
    if (ru_collect_garbage(r))
      more = true;
    ru_publish_progress(r);
  }
  return NULL;
}

void ana_rollup_on_commit(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_rollups *r = ctx;
  uint64_t last = 0;
  for (size_t i = 0; i < n; i++)
    if (!records[i].duplicate && records[i].seq > last)
      last = records[i].seq;
  ru_raise_to(&r->committed, last);
  ru_wake(r);
}

bool ana_rollup_wait_idle(struct ana_rollups *r, int timeout_ms) {
  int64_t deadline = ana_clock_wall_ms() + timeout_ms;
  for (;;) {
    struct ana_error err;
    uint64_t head = 0;
    if (r->ops->last_seq(r->store, &head, &err) < 0)
      return false;
    bool behind = false;
    pthread_mutex_lock(&r->mu);
    for (struct rmetric *m = r->metrics; m; m = m->next)
      behind |= m->watermark < head;
    behind |= r->garbage != NULL;
    behind |= r->retention_ms && ana_clock_wall_ms() >= r->next_sweep_ms;
    behind |= ru_cache_pending(r);
    pthread_mutex_unlock(&r->mu);
    if (!behind)
      return true;
    if (ana_clock_wall_ms() > deadline)
      return false;
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
  }
}
