/* Metric rollups: the cells in memory as the thread keeps them: loading
 * the levels of complete metrics and those queries missed, dropping the
 * sets of versions no longer current (the structure is rollup_cache.c). */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

/* Reads every cell of level l into set (m's version, at the thread's
 * watermark: the thread is the only writer of these cells) within limit
 * bytes. Returns 0, 1 when over the limit (the level stays empty), or a
 * negative error (logged). */
static int load_level(struct ana_rollups *r, struct rmetric *m, struct rc_set *set, int l,
                      size_t limit) {
  struct ana_error err;
  int rc = rc_set_read(set, ana_rollup_cells_reader(r->cells), m->mq, l, INT64_MIN, INT64_MAX,
                       limit, &err);
  if (rc != 0)
    rc_level_clear(&set->levels[l]);
  if (rc < 0)
    ANA_WARN("rollups", "metric %s: cannot load its cells into memory: %s", m->metric_id,
             err.message);
  if (rc == 0) {
    set->levels[l].loaded = true;
    atomic_store(&set->levels[l].used, ana_clock_wall_ms());
  }
  return rc;
}

/* A metric version that becomes complete (or is found complete at
 * start-up) gets its set with the levels that fit in what is left of the
 * budget, coarsest first, before queries see it: the first query finds
 * them in memory. Later, the levels queries missed (evicted, or not
 * fitting then) are loaded, evicting the least recently read ones. m is
 * held busy. */
void ru_tend_cache(struct ana_rollups *r, struct rmetric *m) {
  if (m->watermark < m->backfill_to)
    return;
  struct rc_set *set = rc_cache_find(&r->cache, m->metric_id, m->version);
  if (!set) {
    if (!(set = rc_set_new(m->metric_id, m->version)))
      return;
    set->watermark = m->watermark;
    for (int l = LEVELS - 1; l >= 0; l--) {
      /* Each level read apart: one that does not fit leaves nothing, and
       * the finer ones, larger, are not tried. */
      size_t held = r->cache.bytes + rc_set_bytes(set);
      struct rc_set *tmp = held < r->cache.budget ? rc_set_new(m->metric_id, m->version) : NULL;
      if (!tmp || load_level(r, m, tmp, l, r->cache.budget - held) != 0) {
        rc_set_free(tmp);
        break;
      }
      rc_set_take(set, l, tmp);
    }
    rc_cache_publish(&r->cache, set);
    return;
  }
  for (int l = 0; l < LEVELS; l++) {
    struct rc_level *lv = &set->levels[l];
    if (!atomic_exchange(&lv->wanted, false) || lv->loaded || lv->refused)
      continue;
    struct rc_set *tmp = rc_set_new(m->metric_id, m->version);
    int rc = tmp ? load_level(r, m, tmp, l, r->cache.budget) : ANA_ERR_NOMEM;
    if (rc == 0) {
      rc_cache_install(&r->cache, set, l, tmp);
      continue;
    }
    rc_set_free(tmp);
    if (rc == 1) {
      pthread_rwlock_wrlock(&r->cache.lock);
      lv->refused = true;
      pthread_rwlock_unlock(&r->cache.lock);
      if (!r->cache.warned)
        ANA_WARN("rollups",
                 "metric %s: its %lld-minute cells exceed ROLLUP_CACHE_MB; they are "
                 "read from the database",
                 m->metric_id, (long long)(level_ms[l] / 60000));
      r->cache.warned = true;
    }
  }
}

/* Drops the sets of versions that are no longer current. */
void ru_prune_cache(struct ana_rollups *r) {
  for (;;) {
    struct rc_set *stale = NULL;
    pthread_mutex_lock(&r->mu);
    for (struct rc_set *s = r->cache.sets; s && !stale; s = s->next) {
      struct rmetric *m = *ru_find_metric(r, s->metric_id);
      if (!m || m->version != s->version)
        stale = s;
    }
    pthread_mutex_unlock(&r->mu);
    if (!stale)
      return;
    rc_cache_remove(&r->cache, stale);
  }
}

/* Whether a query's request for cells is waiting, or a complete metric has
 * no set yet. Under mu. */
bool ru_cache_pending(struct ana_rollups *r) {
  if (!r->cache_ready)
    return false;
  bool pending = false;
  pthread_rwlock_rdlock(&r->cache.lock);
  for (struct rmetric *m = r->metrics; m && !pending; m = m->next) {
    if (m->watermark < m->backfill_to)
      continue;
    struct rc_set *set = rc_cache_find(&r->cache, m->metric_id, m->version);
    pending = !set;
    for (int l = 0; set && l < LEVELS; l++)
      pending |=
          atomic_load(&set->levels[l].wanted) && !set->levels[l].loaded && !set->levels[l].refused;
  }
  pthread_rwlock_unlock(&r->cache.lock);
  return pending;
}
