/* Metric rollups: deleting cells nobody needs: the old versions of
 * redefined or deleted metrics, and cells past the events' retention. */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <string.h>

#define GARBAGE_CHUNK 5000

/* Deletes one chunk of garbage whose time has come; true when some is left. */
bool ru_collect_garbage(struct ana_rollups *r) {
  pthread_mutex_lock(&r->mu);
  struct garbage **p = &r->garbage, *g = NULL;
  for (; *p; p = &(*p)->next) {
    struct rmetric *m = *ru_find_metric(r, (*p)->metric_id);
    /* An old version waits until the new one is complete. */
    if ((*p)->below == INT64_MAX || !m || m->watermark >= m->backfill_to) {
      g = *p;
      break;
    }
  }
  bool left = r->garbage != NULL;
  if (g)
    *p = g->next;
  pthread_mutex_unlock(&r->mu);
  if (!g)
    return false;
  int changes = ana_rollup_cells_drop_versions(r->cells, g->metric_id, g->below, GARBAGE_CHUNK);
  pthread_mutex_lock(&r->mu);
  if (changes > 0) {
    g->next = r->garbage; /* more may be left: come back */
    r->garbage = g;
    g = NULL;
  }
  pthread_mutex_unlock(&r->mu);
  if (g) {
    ana_free(g->metric_id);
    ana_free(g);
  }
  return left;
}

/* Deletes cells whose whole span ends at or before now - retention (only
 * events retention deletes are in them), one chunk per call, and drops
 * them from memory. The metrics are held busy. Returns true when more is
 * left (come back soon). */
bool ru_expire_cells(struct ana_rollups *r, struct rmetric **todo, size_t n) {
  if (!r->retention_ms)
    return false;
  int64_t now = ana_clock_wall_ms();
  pthread_mutex_lock(&r->mu);
  bool due = now >= r->next_sweep_ms;
  pthread_mutex_unlock(&r->mu);
  if (!due)
    return false;
  int64_t cutoff = now - r->retention_ms;
  for (size_t i = 0; i < n; i++) {
    struct rmetric *m = todo[i];
    for (int l = 0; l < LEVELS; l++) {
      /* the last cell start whose span ends by the cut-off */
      int64_t last = ru_floor_to(cutoff - level_ms[l], level_ms[l]);
      struct ana_error err;
      int deleted = ana_rollup_cells_expire(r->cells, m->metric_id, m->version, l, last,
                                            r->expiry_chunk, &err);
      if (deleted < 0) {
        ANA_WARN("rollups", "metric %s: %s", m->metric_id, err.message);
        goto done;
      }
      struct rc_set *set =
          r->cache_ready ? rc_cache_find(&r->cache, m->metric_id, m->version) : NULL;
      if (set)
        rc_cache_expire(&r->cache, set, l, last);
      if (deleted == r->expiry_chunk)
        return true;
    }
  }
done:
  pthread_mutex_lock(&r->mu);
  r->next_sweep_ms = now + r->sweep_ms;
  pthread_mutex_unlock(&r->mu);
  return false;
}
