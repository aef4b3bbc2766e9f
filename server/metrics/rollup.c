/* Metric rollups: their life cycle: loading the stored definitions,
 * starting and stopping the thread, and the /metrics families. The other
 * parts are the rollup_*.c files (rollup_shared.h). See ana_rollup.h. */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_prom.h"

#define DEFAULT_CHUNK 5000
/* Cells deleted per transaction for retention: the write lock is shared
 * with the commits of ingestion. */
#define DEFAULT_EXPIRY_CHUNK 2000
#define DEFAULT_SWEEP_MS 60000
#define DAY_MS 86400000LL

/* /metrics: how far behind the commits the rollups are, and their work. */
static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_rollups *r = ctx;
  uint64_t committed = atomic_load_explicit(&r->committed, memory_order_relaxed);
  uint64_t low = atomic_load_explicit(&r->low_watermark, memory_order_relaxed);
  ana_prom_write_family(w, "ana_rollup_lag_events", "gauge",
                        "Last commit sequence number minus the lowest watermark of the complete "
                        "metric rollups (0: caught up).");
  ana_prom_write_u64(w, "ana_rollup_lag_events", NULL,
                     low != UINT64_MAX && committed > low ? committed - low : 0);
  ana_prom_write_family(w, "ana_rollup_events_processed_total", "counter",
                        "Committed events read by the rollup thread (once per chunk, whatever "
                        "the number of metrics).");
  ana_prom_write_u64(w, "ana_rollup_events_processed_total", NULL,
                     ana_prom_counter_get(&r->events_processed));
  ana_prom_write_family(w, "ana_rollup_other_events_total", "counter",
                        "Events other instances committed to the shared event store read into "
                        "the rollups (once per metric).");
  ana_prom_write_u64(w, "ana_rollup_other_events_total", NULL,
                     ana_prom_counter_get(&r->other_events));
  ana_prom_write_family(w, "ana_rollup_cells_written_total", "counter",
                        "Rollup cells written to the database.");
  ana_prom_write_u64(w, "ana_rollup_cells_written_total", NULL,
                     ana_prom_counter_get(&r->cells_written));
  ana_prom_write_family(w, "ana_rollup_cache_bytes", "gauge",
                        "Memory held by rollup cells kept in memory (ROLLUP_CACHE_MB).");
  ana_prom_write_u64(w, "ana_rollup_cache_bytes", NULL,
                     atomic_load_explicit(&r->cache_bytes, memory_order_relaxed));
}

static void load_def(void *ctx, const struct ana_rollup_def *d) {
  struct ana_rollups *r = ctx;
  struct ana_error merr;
  struct rmetric *m = ru_metric_new(d->metric_id, d->account_id, d->version, d->def, d->len, &merr);
  if (!m) {
    ANA_WARN("rollups", "metric %s: %s; answered from raw events", d->metric_id, merr.message);
    return;
  }
  m->watermark = m->persisted = d->watermark;
  m->backfill_to = d->backfill_to;
  m->next = r->metrics;
  r->metrics = m;
}

/* Loads the definitions, and queues as garbage every stored version that
 * is not a current one (a deletion cut short by a crash). */
static int load(struct ana_rollups *r, struct ana_error *err) {
  int rc = ana_rollup_cells_each_def(r->cells, load_def, r, err);
  if (rc < 0)
    return rc;
  char last[256] = "";
  int64_t last_version = INT64_MAX;
  for (;;) {
    int found = ana_rollup_cells_next_version(r->cells, last, last_version, last, sizeof last,
                                              &last_version, err);
    if (found < 0)
      return found;
    if (found == 0)
      break;
    struct rmetric *m = *ru_find_metric(r, last);
    if (!m || m->version != last_version)
      rc = ru_add_garbage(r, last, m && last_version < m->version ? m->version : INT64_MAX);
    if (!m || last_version >= m->version)
      last_version = INT64_MAX; /* no later version of this metric matters */
  }
  return rc;
}

struct ana_rollups *ana_rollup_create(struct ana_local_db *db,
                                      const struct ana_event_store_ops *ops, void *store,
                                      const struct ana_rollup_options *o, struct ana_error *err) {
  struct ana_rollups *r = ana_calloc(1, sizeof *r);
  if (!r) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  r->db = db;
  r->ops = ops;
  r->store = store;
  r->chunk = o && o->chunk_events > 0 ? o->chunk_events : DEFAULT_CHUNK;
  int64_t budget = o && o->cache_bytes ? o->cache_bytes : ANA_ROLLUP_CACHE_DEFAULT_MB << 20;
  if (rc_cache_init(&r->cache, budget > 0 ? (size_t)budget : 0) < 0) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    ana_free(r);
    return NULL;
  }
  r->cache_ready = r->cache.budget > 0;
  if (o && o->retention_days > 0) {
    r->retention_ms = o->retention_days * DAY_MS;
    r->sweep_ms = o->sweep_interval_ms > 0 ? o->sweep_interval_ms : DEFAULT_SWEEP_MS;
    r->expiry_chunk = o->expiry_chunk > 0 ? o->expiry_chunk : DEFAULT_EXPIRY_CHUNK;
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_mutex_init(&r->wake_mu, NULL);
  pthread_cond_init(&r->cond, NULL);
  if (!ops->scan_seq || !ops->last_seq) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                  "metric rollups: the event store %s cannot scan by commit sequence", ops->name);
    goto fail;
  }
  /* (the thread's commits are not synced: see rollup_cells.c) */
  if (!(r->cells = ana_rollup_cells_open(db, ru_busy_wait, r, err)))
    goto fail;
  if (load(r, err) < 0 || ru_load_marks(r, err) < 0)
    goto fail;
  uint64_t head = 0;
  if (ops->last_seq(store, &head, err) < 0)
    goto fail;
  atomic_init(&r->committed, head);
  ru_publish_progress(r);
  if (pthread_create(&r->thread, NULL, ru_thread, r) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the rollup thread");
    goto fail;
  }
  r->started = true;
  r->prom_registered = ana_prom_register(collect, r) == 0;
  return r;
fail:
  ana_rollup_destroy(r);
  return NULL;
}

void ana_rollup_destroy(struct ana_rollups *r) {
  if (!r)
    return;
  if (r->prom_registered)
    ana_prom_unregister(collect, r);
  if (r->started) {
    pthread_mutex_lock(&r->wake_mu);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->wake_mu);
    pthread_join(r->thread, NULL);
  }
  while (r->metrics)
    ru_retire(&r->metrics);
  while (r->garbage) {
    struct garbage *g = r->garbage;
    r->garbage = g->next;
    ana_free(g->metric_id);
    ana_free(g);
  }
  rc_cache_fini(&r->cache);
  for (size_t i = 0; i < r->n_bounds; i++)
    ana_free(r->bounds[i].instance);
  ana_free(r->bounds);
  ana_free(r->todo);
  ana_free(r->works);
  ana_rollup_cells_close(r->cells);
  pthread_mutex_destroy(&r->mu);
  pthread_mutex_destroy(&r->wake_mu);
  pthread_cond_destroy(&r->cond);
  ana_free(r);
}
