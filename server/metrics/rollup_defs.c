/* Metric rollups: the definitions and their versions (define, forget,
 * status); a metric's definition is packed, compared, and unpacked here. */
#include "rollup_shared.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_proto_walk.h"

#include <stdlib.h>
#include <string.h>

void ru_metric_free(struct rmetric *m) {
  if (!m)
    return;
  ana_mq_destroy(m->mq);
  ru_marks_free(m);
  ana_formula_free(m->formula);
  if (m->metric)
    analytics__v1__metric__free_unpacked(m->metric, NULL);
  ana_free(m->def);
  ana_free(m->metric_id);
  ana_free(m->account_id);
  ana_free(m);
}

/* Builds a metric from its stored definition. */
struct rmetric *ru_metric_new(const char *metric_id, const char *account_id, int64_t version,
                              const uint8_t *def, size_t def_len, struct ana_error *err) {
  struct rmetric *m = ana_calloc(1, sizeof *m);
  if (!m)
    goto nomem;
  m->metric_id = ana_strdup(metric_id);
  m->account_id = ana_strdup(account_id);
  m->def = ana_malloc(def_len ? def_len : 1);
  if (!m->metric_id || !m->account_id || !m->def)
    goto nomem;
  memcpy(m->def, def, def_len);
  m->def_len = def_len;
  m->version = version;
  m->metric = (void *)ana_proto_unpack(&analytics__v1__metric__descriptor, NULL, def, def_len,
                                       ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (!m->metric) {
    ana_error_set(err, ANA_STATUS_DATA_LOSS, "metric rollups: definition of %s unreadable",
                  metric_id);
    goto fail;
  }
  int pos = 0;
  /* The stored formula is canonical: every name resolved, so no env. */
  m->formula = ana_formula_parse(m->metric->formula, NULL, err, &pos);
  if (!m->formula)
    goto fail;
  m->q.metric = m->metric;
  m->q.formula = m->formula;
  m->q.account_id = m->account_id;
  m->mq = ana_mq_create(&m->q, true, err);
  if (!m->mq)
    goto fail;
  return m;
nomem:
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
fail:
  ru_metric_free(m);
  return NULL;
}

/* The definition as stored: what the cells depend on (filters, dimensions,
 * type, the formula with every name resolved). Caller frees. */
uint8_t *ru_pack_definition(const Analytics__V1__Metric *m, const struct ana_formula *f,
                            size_t *len) {
  char *canonical = ana_formula_to_string(f);
  if (!canonical)
    return NULL;
  Analytics__V1__Metric d = ANALYTICS__V1__METRIC__INIT;
  d.metric_id = m->metric_id;
  d.formula = canonical;
  d.type = m->type;
  d.n_filters = m->n_filters;
  d.filters = m->filters;
  d.n_dimensions = m->n_dimensions;
  d.dimensions = m->dimensions;
  *len = protobuf_c_message_get_packed_size(&d.base);
  uint8_t *buf = ana_malloc(*len ? *len : 1);
  if (buf)
    protobuf_c_message_pack(&d.base, buf);
  free(canonical);
  return buf;
}

struct rmetric **ru_find_metric(struct ana_rollups *r, const char *metric_id) {
  struct rmetric **p = &r->metrics;
  while (*p && strcmp((*p)->metric_id, metric_id) != 0)
    p = &(*p)->next;
  return p;
}

/* Unlinks *p; frees it unless the thread holds it. Under mu. */
void ru_retire(struct rmetric **p) {
  struct rmetric *m = *p;
  *p = m->next;
  if (m->busy)
    m->dead = true;
  else
    ru_metric_free(m);
}

int ru_add_garbage(struct ana_rollups *r, const char *metric_id, int64_t below) {
  struct garbage *g = ana_calloc(1, sizeof *g);
  if (!g || !(g->metric_id = ana_strdup(metric_id))) {
    ana_free(g);
    return ANA_ERR_NOMEM;
  }
  g->below = below;
  g->next = r->garbage;
  r->garbage = g;
  return 0;
}

int ana_rollup_define(struct ana_rollups *r, const char *account_id,
                      const Analytics__V1__Metric *metric, const struct ana_formula *f,
                      struct ana_error *err) {
  size_t len = 0;
  uint8_t *def = ru_pack_definition(metric, f, &len);
  struct rmetric *m = NULL;
  int rc = 0;
  if (!def)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  pthread_mutex_lock(&r->mu);
  struct rmetric **old = ru_find_metric(r, metric->metric_id);
  if (*old && (*old)->def_len == len && memcmp((*old)->def, def, len) == 0)
    goto out; /* the same definition: its cells stay */
  /* Versions only grow, also across deletions and restarts. */
  int64_t version = ana_clock_wall_ms();
  if (*old && version <= (*old)->version)
    version = (*old)->version + 1;
  uint64_t head = 0;
  if ((rc = r->ops->last_seq(r->store, &head, err)) < 0)
    goto out;
  m = ru_metric_new(metric->metric_id, account_id, version, def, len, err);
  if (!m) {
    rc = ANA_ERR_INVALID;
    goto out;
  }
  m->backfill_to = head;
  rc =
      ana_rollup_cells_put_def(r->cells, m->metric_id, m->account_id, version, def, len, head, err);
  if (rc < 0)
    goto out;
  if (*old) {
    /* The old version's cells go once the new one is complete. */
    ru_add_garbage(r, metric->metric_id, version);
    m->next = (*old)->next;
    struct rmetric *prev = *old;
    *old = m;
    if (prev->busy)
      prev->dead = true;
    else
      ru_metric_free(prev);
  } else {
    m->next = r->metrics;
    r->metrics = m;
  }
  m = NULL;
  ANA_INFO("rollups", "metric %s: definition version %lld, backfill up to seq %llu",
           metric->metric_id, (long long)version, (unsigned long long)head);
out:
  pthread_mutex_unlock(&r->mu);
  if (rc == 0)
    ru_wake(r);
  ru_metric_free(m);
  ana_free(def);
  return rc;
}

/* Whether the metric's definition groups or filters by a field reads names. */
static bool metric_reads(const Analytics__V1__Metric *m,
                         bool (*reads)(void *ctx, const char *field), void *ctx) {
  for (size_t i = 0; i < m->n_dimensions; i++)
    if (reads(ctx, m->dimensions[i]))
      return true;
  for (size_t i = 0; i < m->n_filters; i++)
    if (m->filters[i]->field && reads(ctx, m->filters[i]->field))
      return true;
  return false;
}

int ana_rollup_rebuild(struct ana_rollups *r, bool (*reads)(void *ctx, const char *field),
                       void *ctx, int64_t since_ms, struct ana_error *err) {
  int rc = 0, n = 0;
  uint64_t head = 0;
  if ((rc = r->ops->last_seq(r->store, &head, err)) < 0)
    return rc;
  pthread_mutex_lock(&r->mu);
  for (struct rmetric **p = &r->metrics; *p && rc == 0; p = &(*p)->next) {
    struct rmetric *old = *p;
    if (old->version >= since_ms || !metric_reads(old->metric, reads, ctx))
      continue; /* defined since: backfilled from the rewritten events already */
    int64_t version = ana_clock_wall_ms();
    if (version <= old->version)
      version = old->version + 1;
    struct rmetric *m =
        ru_metric_new(old->metric_id, old->account_id, version, old->def, old->def_len, err);
    if (!m) {
      rc = ANA_ERR_INVALID;
      break;
    }
    m->backfill_to = head;
    rc = ana_rollup_cells_put_def(r->cells, m->metric_id, m->account_id, version, m->def,
                                  m->def_len, head, err);
    if (rc < 0) {
      ru_metric_free(m);
      break;
    }
    /* The old version's cells go once the new one is complete. */
    ru_add_garbage(r, m->metric_id, version);
    m->next = old->next;
    *p = m;
    if (old->busy)
      old->dead = true;
    else
      ru_metric_free(old);
    n++;
    ANA_INFO("rollups",
             "metric %s: rebuilt as version %lld (its events were rewritten), backfill "
             "up to seq %llu",
             m->metric_id, (long long)version, (unsigned long long)head);
  }
  pthread_mutex_unlock(&r->mu);
  if (n)
    ru_wake(r);
  return rc < 0 ? rc : n;
}

size_t ana_rollup_accounts(struct ana_rollups *r, char ***out) {
  size_t n = 0, cap = 0;
  char **list = NULL;
  pthread_mutex_lock(&r->mu);
  for (struct rmetric *m = r->metrics; m; m = m->next) {
    bool seen = false;
    for (size_t i = 0; i < n && !seen; i++)
      seen = strcmp(list[i], m->account_id) == 0;
    if (seen)
      continue;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 16;
      char **p = ana_realloc(list, nc * sizeof *p);
      if (!p)
        break;
      list = p;
      cap = nc;
    }
    if (!(list[n] = ana_strdup(m->account_id)))
      break;
    n++;
  }
  pthread_mutex_unlock(&r->mu);
  *out = list;
  return n;
}

bool ana_rollup_backfilled(struct ana_rollups *r) {
  pthread_mutex_lock(&r->mu);
  bool done = r->garbage == NULL;
  for (struct rmetric *m = r->metrics; m && done; m = m->next)
    done = m->watermark >= m->backfill_to;
  pthread_mutex_unlock(&r->mu);
  return done;
}

int ana_rollup_forget(struct ana_rollups *r, const char *metric_id, struct ana_error *err) {
  int rc = 0;
  pthread_mutex_lock(&r->mu);
  rc = ana_rollup_cells_forget_def(r->cells, metric_id, err);
  if (rc < 0)
    goto out;
  struct rmetric **p = ru_find_metric(r, metric_id);
  if (*p)
    ru_retire(p);
  ru_add_garbage(r, metric_id, INT64_MAX);
out:
  pthread_mutex_unlock(&r->mu);
  if (rc == 0)
    ru_wake(r);
  return rc;
}

void ana_rollup_status(struct ana_rollups *r, const char *metric_id,
                       struct ana_rollup_status *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&r->mu);
  struct rmetric *m = *ru_find_metric(r, metric_id);
  if (m) {
    out->known = true;
    out->version = m->version;
    out->watermark = m->watermark;
    out->backfill_to = m->backfill_to;
    out->complete = m->watermark >= m->backfill_to;
  }
  if (r->cache_ready) {
    pthread_rwlock_rdlock(&r->cache.lock);
    struct rc_set *set = m ? rc_cache_find(&r->cache, m->metric_id, m->version) : NULL;
    for (int l = 0; set && l < LEVELS; l++)
      if (set->levels[l].loaded)
        out->cached_levels |= 1u << l;
    out->cache_bytes = r->cache.bytes;
    pthread_rwlock_unlock(&r->cache.lock);
  }
  pthread_mutex_unlock(&r->mu);
  out->memory_queries = atomic_load(&r->memory_queries);
  out->database_queries = atomic_load(&r->database_queries);
}
