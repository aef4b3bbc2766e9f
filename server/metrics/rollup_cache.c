/* The rollup cache (rollup_internal.h): packed cells by metric version,
 * level and time cell, their group keys, reading them from the database,
 * and the thread's updates within a memory budget. */
#include "rollup_internal.h"

#include "acc_internal.h"
#include "ana_alloc.h"
#include "ana_log.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

/* ------------------------------------------------------------------ */
/* group keys */

static void keys_fini(struct rc_keys *k) {
  for (size_t i = 0; i < k->n; i++)
    ana_free(k->keys[i]);
  ana_free(k->keys);
  ana_free(k->hashes);
  ana_free(k->index);
  memset(k, 0, sizeof *k);
}

/* The index of key, added when new; -1 when out of memory. */
static long keys_get(struct rc_keys *k, const char *key) {
  uint64_t h = ana_acc_hash_text(key);
  if (k->index_cap) {
    for (size_t j = h & (k->index_cap - 1); k->index[j]; j = (j + 1) & (k->index_cap - 1)) {
      uint32_t i = k->index[j] - 1;
      if (k->hashes[i] == h && strcmp(k->keys[i], key) == 0)
        return i;
    }
  }
  if (k->n >= UINT32_MAX - 1)
    return -1;
  if (k->n == k->cap) {
    size_t cap = k->cap ? k->cap * 2 : 64;
    char **keys = ana_realloc(k->keys, cap * sizeof *keys);
    if (!keys)
      return -1;
    k->keys = keys;
    uint64_t *hashes = ana_realloc(k->hashes, cap * sizeof *hashes);
    if (!hashes)
      return -1;
    k->hashes = hashes;
    k->bytes += (cap - k->cap) * (sizeof *keys + sizeof *hashes);
    k->cap = cap;
  }
  if ((k->n + 1) * 2 > k->index_cap) {
    size_t cap = k->index_cap ? k->index_cap * 2 : 128;
    uint32_t *index = ana_calloc(cap, sizeof *index);
    if (!index)
      return -1;
    for (size_t i = 0; i < k->n; i++) {
      size_t j = k->hashes[i] & (cap - 1);
      while (index[j])
        j = (j + 1) & (cap - 1);
      index[j] = (uint32_t)i + 1;
    }
    ana_free(k->index);
    k->bytes += (cap - k->index_cap) * sizeof *index;
    k->index = index;
    k->index_cap = cap;
  }
  char *copy = ana_strdup(key);
  if (!copy)
    return -1;
  size_t i = k->n++;
  k->keys[i] = copy;
  k->hashes[i] = h;
  size_t j = h & (k->index_cap - 1);
  while (k->index[j])
    j = (j + 1) & (k->index_cap - 1);
  k->index[j] = (uint32_t)i + 1;
  k->bytes += strlen(key) + 1;
  return (long)i;
}

/* ------------------------------------------------------------------ */
/* levels and sets */

void rc_level_clear(struct rc_level *lv) {
  for (size_t i = 0; i < lv->n; i++)
    ana_free(lv->buckets[i].cells);
  ana_free(lv->buckets);
  lv->buckets = NULL;
  lv->n = lv->cap = lv->bytes = 0;
  lv->loaded = false;
}

size_t rc_level_seek(const struct rc_level *lv, int64_t t) {
  size_t lo = 0, hi = lv->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (lv->buckets[mid].start < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Inserts an empty bucket at position i; NULL when out of memory. */
static struct rc_bucket *level_insert(struct rc_level *lv, size_t i, int64_t start) {
  if (lv->n == lv->cap) {
    size_t cap = lv->cap ? lv->cap * 2 : 64;
    struct rc_bucket *b = ana_realloc(lv->buckets, cap * sizeof *b);
    if (!b)
      return NULL;
    lv->bytes += (cap - lv->cap) * sizeof *b;
    lv->buckets = b;
    lv->cap = cap;
  }
  memmove(&lv->buckets[i + 1], &lv->buckets[i], (lv->n - i) * sizeof *lv->buckets);
  lv->buckets[i] = (struct rc_bucket){.start = start};
  lv->n++;
  return &lv->buckets[i];
}

struct rc_set *rc_set_new(const char *metric_id, int64_t version) {
  struct rc_set *set = ana_calloc(1, sizeof *set);
  if (!set || !(set->metric_id = ana_strdup(metric_id))) {
    ana_free(set);
    return NULL;
  }
  set->version = version;
  for (int l = 0; l < ANA_ROLLUP_LEVELS; l++) {
    atomic_init(&set->levels[l].wanted, false);
    atomic_init(&set->levels[l].used, 0);
  }
  return set;
}

void rc_set_free(struct rc_set *set) {
  if (!set)
    return;
  for (int l = 0; l < ANA_ROLLUP_LEVELS; l++)
    rc_level_clear(&set->levels[l]);
  keys_fini(&set->keys);
  ana_free(set->metric_id);
  ana_free(set);
}

/* Appends a record (header, packed encoding, padding) to a bucket. */
static int bucket_append(struct rc_bucket *b, size_t *bytes, const struct ana_mq *mq,
                         uint32_t group, const uint8_t *blob, size_t len) {
  size_t at = b->len;
  size_t old_cap = b->cap;
  /* header first; ana_mq_cell_pack grows the buffer for the rest */
  if (b->len + sizeof(struct rc_record) > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    uint8_t *c = ana_realloc(b->cells, cap);
    if (!c)
      return ANA_ERR_NOMEM;
    b->cells = c;
    b->cap = cap;
  }
  b->len += sizeof(struct rc_record);
  int rc = ana_mq_cell_pack(mq, blob, len, &b->cells, &b->len, &b->cap);
  if (rc == 0 && ALIGN8(b->len) > b->cap)
    rc = ANA_ERR_NOMEM; /* not reached: capacities are powers of two from 256 */
  *bytes += b->cap - old_cap;
  if (rc < 0) {
    b->len = at;
    return rc;
  }
  struct rc_record h = {group, (uint32_t)(b->len - at - sizeof h)};
  memcpy(b->cells + at, &h, sizeof h);
  memset(b->cells + b->len, 0, ALIGN8(b->len) - b->len);
  b->len = ALIGN8(b->len);
  return 0;
}

/* Gives a bucket's spare capacity back once it is complete. */
static void bucket_trim(struct rc_bucket *b, size_t *bytes) {
  if (b->cap > b->len + b->len / 8 && b->len) {
    uint8_t *c = ana_realloc(b->cells, b->len);
    if (c) {
      *bytes -= b->cap - b->len;
      b->cells = c;
      b->cap = b->len;
    }
  }
}

struct read_ctx {
  struct rc_set *set;
  struct rc_level *lv;
  struct rc_bucket *b;
  const struct ana_mq *mq;
  size_t limit;
  struct ana_error *err;
};

/* One stored cell into the set: 0, 1 over the limit, or a negative error. */
static int read_cell(void *ctx, int64_t start, const char *group_key, const void *state,
                     size_t len) {
  struct read_ctx *c = ctx;
  struct rc_level *lv = c->lv;
  if (!c->b || c->b->start != start) {
    if (c->b)
      bucket_trim(c->b, &lv->bytes);
    /* Rows come by bucket, ascending (the primary key): each new one goes
     * last. */
    if (lv->n && lv->buckets[lv->n - 1].start >= start)
      return ana_error_set(c->err, ANA_STATUS_INTERNAL, "metric rollups: cells read out of order");
    if (!(c->b = level_insert(lv, lv->n, start)))
      goto nomem;
  }
  long g = keys_get(&c->set->keys, group_key);
  if (g < 0)
    goto nomem;
  int rc = bucket_append(c->b, &lv->bytes, c->mq, (uint32_t)g, state, len);
  if (rc == ANA_ERR_NOMEM)
    goto nomem;
  if (rc < 0)
    return ana_error_set(c->err, ANA_STATUS_DATA_LOSS,
                         "metric rollups: a stored cell is malformed");
  return lv->bytes + c->set->keys.bytes > c->limit ? 1 : 0;
nomem:
  ana_error_set(c->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return ANA_ERR_NOMEM;
}

int rc_set_read(struct rc_set *set, struct ana_local_reader *rd, const struct ana_mq *mq, int level,
                int64_t lo, int64_t hi, size_t limit, struct ana_error *err) {
  struct read_ctx c = {set, &set->levels[level], NULL, mq, limit, err};
  int rc =
      ana_rollup_cells_scan(rd, set->metric_id, set->version, level, lo, hi, read_cell, &c, err);
  if (rc == 0 && c.b)
    bucket_trim(c.b, &c.lv->bytes);
  return rc;
}

/* ------------------------------------------------------------------ */
/* changes */

int rc_changes_add(struct rc_changes *ch, const struct ana_mq *mq, int level, int64_t bucket,
                   const char *key, const uint8_t *blob, size_t len) {
  if (ch->n == ch->cap) {
    size_t cap = ch->cap ? ch->cap * 2 : 64;
    struct rc_change *v = ana_realloc(ch->v, cap * sizeof *v);
    if (!v)
      return ANA_ERR_NOMEM;
    ch->v = v;
    ch->cap = cap;
  }
  size_t off = ch->len;
  int rc = ana_mq_cell_pack(mq, blob, len, &ch->buf, &ch->len, &ch->buf_cap);
  if (rc < 0)
    return rc;
  ch->v[ch->n++] = (struct rc_change){level, bucket, key, off, ch->len - off};
  return 0;
}

void rc_changes_fini(struct rc_changes *ch) {
  ana_free(ch->v);
  ana_free(ch->buf);
  memset(ch, 0, sizeof *ch);
}

/* ------------------------------------------------------------------ */
/* the shared cache */

int rc_cache_init(struct rc_cache *c, size_t budget) {
  memset(c, 0, sizeof *c);
  c->budget = budget;
  /* Writers first: the thread's short updates must not wait behind a
   * steady stream of queries (the rollups would fall behind). */
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  int rc = pthread_rwlock_init(&c->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  return rc == 0 ? 0 : ANA_ERR_NOMEM;
}

void rc_cache_fini(struct rc_cache *c) {
  while (c->sets) {
    struct rc_set *s = c->sets;
    c->sets = s->next;
    rc_set_free(s);
  }
  pthread_rwlock_destroy(&c->lock);
}

struct rc_set *rc_cache_find(struct rc_cache *c, const char *metric_id, int64_t version) {
  for (struct rc_set *s = c->sets; s; s = s->next)
    if (s->version == version && strcmp(s->metric_id, metric_id) == 0)
      return s;
  return NULL;
}

size_t rc_set_bytes(const struct rc_set *set) {
  size_t n = set->keys.bytes;
  for (int l = 0; l < ANA_ROLLUP_LEVELS; l++)
    n += set->levels[l].bytes;
  return n;
}

void rc_cache_publish(struct rc_cache *c, struct rc_set *set) {
  pthread_rwlock_wrlock(&c->lock);
  set->next = c->sets;
  c->sets = set;
  c->bytes += rc_set_bytes(set);
  pthread_rwlock_unlock(&c->lock);
}

void rc_cache_remove(struct rc_cache *c, struct rc_set *set) {
  pthread_rwlock_wrlock(&c->lock);
  struct rc_set **p = &c->sets;
  while (*p && *p != set)
    p = &(*p)->next;
  if (*p)
    *p = set->next;
  c->bytes -= rc_set_bytes(set);
  pthread_rwlock_unlock(&c->lock);
  rc_set_free(set);
}

/* Drops the least recently read levels until `need` more bytes fit; a set
 * left with no level drops its keys too. Under the write lock. */
static void evict(struct rc_cache *c, size_t need) {
  while (c->bytes + need > c->budget) {
    struct rc_set *victim_set = NULL;
    struct rc_level *victim = NULL;
    int64_t oldest = INT64_MAX;
    for (struct rc_set *s = c->sets; s; s = s->next)
      for (int l = 0; l < ANA_ROLLUP_LEVELS; l++) {
        struct rc_level *lv = &s->levels[l];
        int64_t used = atomic_load_explicit(&lv->used, memory_order_relaxed);
        if (lv->loaded && used < oldest) {
          oldest = used;
          victim = lv;
          victim_set = s;
        }
      }
    if (!victim)
      return;
    c->bytes -= victim->bytes;
    rc_level_clear(victim);
    bool any = false;
    for (int l = 0; l < ANA_ROLLUP_LEVELS; l++)
      any |= victim_set->levels[l].loaded;
    if (!any) {
      c->bytes -= victim_set->keys.bytes;
      keys_fini(&victim_set->keys);
    }
  }
}

/* Moves group indexes of loaded's keys to set's: records are rewritten in
 * place. Under the write lock. */
static int remap(struct rc_set *set, struct rc_level *lv, const struct rc_keys *from) {
  uint32_t *map = ana_calloc(from->n ? from->n : 1, sizeof *map);
  if (!map)
    return ANA_ERR_NOMEM;
  for (size_t i = 0; i < from->n; i++) {
    long g = keys_get(&set->keys, from->keys[i]);
    if (g < 0) {
      ana_free(map);
      return ANA_ERR_NOMEM;
    }
    map[i] = (uint32_t)g;
  }
  for (size_t i = 0; i < lv->n; i++) {
    struct rc_bucket *b = &lv->buckets[i];
    for (size_t o = 0; o < b->len;) {
      struct rc_record h;
      memcpy(&h, b->cells + o, sizeof h);
      h.group = map[h.group];
      memcpy(b->cells + o, &h, sizeof h);
      o += sizeof h + ALIGN8(h.len);
    }
  }
  ana_free(map);
  return 0;
}

/* Moves level `level` of from into set (keys remapped). */
static int adopt(struct rc_set *set, int level, struct rc_set *from) {
  struct rc_level *src = &from->levels[level];
  int rc = remap(set, src, &from->keys);
  if (rc < 0)
    return rc;
  struct rc_level *lv = &set->levels[level];
  rc_level_clear(lv);
  lv->buckets = src->buckets;
  lv->n = src->n;
  lv->cap = src->cap;
  lv->bytes = src->bytes;
  lv->loaded = true;
  atomic_store(&lv->used, atomic_load(&src->used));
  src->buckets = NULL;
  src->n = src->cap = src->bytes = 0;
  src->loaded = false;
  return 0;
}

int rc_set_take(struct rc_set *set, int level, struct rc_set *from) {
  int rc = adopt(set, level, from);
  rc_set_free(from);
  return rc;
}

void rc_cache_install(struct rc_cache *c, struct rc_set *set, int level, struct rc_set *loaded) {
  pthread_rwlock_wrlock(&c->lock);
  evict(c, loaded->levels[level].bytes + loaded->keys.bytes);
  size_t before = rc_set_bytes(set);
  adopt(set, level, loaded);
  c->bytes += rc_set_bytes(set) - before;
  pthread_rwlock_unlock(&c->lock);
  rc_set_free(loaded);
}

static int change_cmp(const void *pa, const void *pb) {
  const struct rc_change *a = pa, *b = pb;
  if (a->level != b->level)
    return a->level < b->level ? -1 : 1;
  if (a->bucket != b->bucket)
    return a->bucket < b->bucket ? -1 : 1;
  return a < b ? -1 : a > b; /* stable enough: one change per cell */
}

/* Rebuilds bucket b with the changes run[0..n) (their groups in groups[],
 * marked in mark[]): the other cells are kept. */
static int rebuild(struct rc_level *lv, struct rc_bucket *b, const struct rc_changes *ch,
                   const struct rc_change *run, const uint32_t *groups, size_t n, uint8_t *mark) {
  size_t need = 0;
  for (size_t i = 0; i < n; i++) {
    need += sizeof(struct rc_record) + ALIGN8(run[i].len);
    mark[groups[i]] = 1;
  }
  for (size_t o = 0; o < b->len;) {
    struct rc_record h;
    memcpy(&h, b->cells + o, sizeof h);
    if (!mark[h.group])
      need += sizeof h + ALIGN8(h.len);
    o += sizeof h + ALIGN8(h.len);
  }
  uint8_t *cells = ana_malloc(need ? need : 1);
  int rc = cells ? 0 : ANA_ERR_NOMEM;
  size_t len = 0;
  for (size_t o = 0; cells && o < b->len;) {
    struct rc_record h;
    memcpy(&h, b->cells + o, sizeof h);
    size_t rec = sizeof h + ALIGN8(h.len);
    if (!mark[h.group]) {
      memcpy(cells + len, b->cells + o, rec);
      len += rec;
    }
    o += rec;
  }
  for (size_t i = 0; i < n; i++) {
    mark[groups[i]] = 0;
    if (!cells)
      continue;
    struct rc_record h = {groups[i], (uint32_t)run[i].len};
    memcpy(cells + len, &h, sizeof h);
    memcpy(cells + len + sizeof h, ch->buf + run[i].off, run[i].len);
    memset(cells + len + sizeof h + run[i].len, 0, ALIGN8(run[i].len) - run[i].len);
    len += sizeof h + ALIGN8(run[i].len);
  }
  if (rc < 0)
    return rc;
  lv->bytes += need;
  lv->bytes -= b->cap;
  ana_free(b->cells);
  b->cells = cells;
  b->len = len;
  b->cap = need;
  return 0;
}

void rc_cache_advance(struct rc_cache *c, struct rc_set *set, const struct rc_changes *ch,
                      uint64_t watermark) {
  bool any = false;
  for (int l = 0; l < ANA_ROLLUP_LEVELS; l++)
    any |= set->levels[l].loaded;
  if (!any || (ch && ch->n == 0)) {
    pthread_rwlock_wrlock(&c->lock);
    set->watermark = watermark;
    pthread_rwlock_unlock(&c->lock);
    return;
  }
  /* Sorted by (level, bucket) so each bucket is rebuilt once; sorted
   * outside the lock. No changes (NULL: they could not be gathered) drop the
   * levels like a failure here does. */
  size_t n = ch ? ch->n : 0;
  struct rc_change *v = ch ? ana_malloc(n * sizeof *v) : NULL;
  uint32_t *groups = ch ? ana_malloc(n * sizeof *groups) : NULL;
  int rc = v && groups ? 0 : ANA_ERR_NOMEM;
  if (rc == 0) {
    memcpy(v, ch->v, n * sizeof *v);
    qsort(v, n, sizeof *v, change_cmp);
  }
  pthread_rwlock_wrlock(&c->lock);
  size_t keys_before = set->keys.bytes, bytes_before = 0;
  for (int l = 0; l < ANA_ROLLUP_LEVELS; l++)
    bytes_before += set->levels[l].bytes;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    long g = set->levels[v[i].level].loaded ? keys_get(&set->keys, v[i].key) : 0;
    if (g < 0)
      rc = ANA_ERR_NOMEM;
    groups[i] = (uint32_t)(g < 0 ? 0 : g);
  }
  uint8_t *mark = rc == 0 ? ana_calloc(set->keys.n ? set->keys.n : 1, 1) : NULL;
  if (rc == 0 && !mark)
    rc = ANA_ERR_NOMEM;
  for (size_t i = 0; rc == 0 && i < n;) {
    size_t j = i + 1;
    while (j < n && v[j].level == v[i].level && v[j].bucket == v[i].bucket)
      j++;
    struct rc_level *lv = &set->levels[v[i].level];
    if (lv->loaded) {
      size_t at = rc_level_seek(lv, v[i].bucket);
      struct rc_bucket *b = at < lv->n && lv->buckets[at].start == v[i].bucket
                                ? &lv->buckets[at]
                                : level_insert(lv, at, v[i].bucket);
      rc = b ? rebuild(lv, b, ch, &v[i], &groups[i], j - i, mark) : ANA_ERR_NOMEM;
    }
    i = j;
  }
  if (rc < 0) {
    /* Some buckets changed, others not: the levels cannot be trusted. */
    for (int l = 0; l < ANA_ROLLUP_LEVELS; l++)
      rc_level_clear(&set->levels[l]);
    ANA_WARN("rollups",
             "metric %s: out of memory updating the rollup cache; read from the "
             "database until reloaded",
             set->metric_id);
  }
  size_t bytes_after = 0;
  for (int l = 0; l < ANA_ROLLUP_LEVELS; l++)
    bytes_after += set->levels[l].bytes;
  c->bytes = c->bytes - bytes_before + bytes_after + (set->keys.bytes - keys_before);
  set->watermark = watermark;
  if (c->bytes > c->budget)
    evict(c, 0);
  pthread_rwlock_unlock(&c->lock);
  ana_free(mark);
  ana_free(groups);
  ana_free(v);
}

void rc_cache_expire(struct rc_cache *c, struct rc_set *set, int level, int64_t last) {
  struct rc_level *lv = &set->levels[level];
  if (!lv->loaded || lv->n == 0 || lv->buckets[0].start > last)
    return;
  pthread_rwlock_wrlock(&c->lock);
  size_t n = rc_level_seek(lv, last + 1), freed = 0;
  for (size_t i = 0; i < n; i++) {
    freed += lv->buckets[i].cap;
    ana_free(lv->buckets[i].cells);
  }
  memmove(lv->buckets, lv->buckets + n, (lv->n - n) * sizeof *lv->buckets);
  lv->n -= n;
  lv->bytes -= freed;
  c->bytes -= freed;
  pthread_rwlock_unlock(&c->lock);
}
