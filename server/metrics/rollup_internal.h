/* The rollup cache: per metric version and level, the stored cells packed
 * in memory (ana_mq_cell_pack), by time cell, with the watermark they
 * include. The rollup thread is its only writer: it loads a level when a
 * query missed it, and replaces the cells of each chunk together with the
 * watermark under the write lock, so a query holding the read lock sees a
 * consistent (cells, watermark) pair without reading the database. A query
 * that finds no loaded level reads the same structure from the database for
 * its range only (a private set). Used by the rollup_*.c files; not for other
 * modules. */
#ifndef ANA_ROLLUP_INTERNAL_H
#define ANA_ROLLUP_INTERNAL_H

#include "ana_error.h"
#include "ana_local_db.h"
#include "metric_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANA_ROLLUP_LEVELS 3

/* A cell's header in a bucket; the packed cell follows, padded to 8. */
struct rc_record {
  uint32_t group; /* index into the set's keys */
  uint32_t len;   /* of the packed cell */
};

/* The bytes a record of a packed cell of len bytes takes. */
static inline size_t rc_record_size(uint32_t len) {
  return sizeof(struct rc_record) + (((size_t)len + 7) & ~(size_t)7);
}

/* The cells of one time cell of a level, records in no particular order. */
struct rc_bucket {
  int64_t start;
  uint8_t *cells;
  size_t len, cap;
};

struct rc_level {
  struct rc_bucket *buckets; /* by start */
  size_t n, cap;
  size_t bytes;         /* held, counted against the budget */
  bool loaded;          /* holds every cell of the level (shared sets) */
  bool refused;         /* larger than the whole budget: read from the database */
  atomic_bool wanted;   /* a query missed it: the thread is to load it */
  _Atomic int64_t used; /* when a query last read it (ms): eviction goes by it */
};

/* Group keys by index, and an index by hash. */
struct rc_keys {
  char **keys;
  uint64_t *hashes;
  size_t n, cap;
  uint32_t *index; /* group index + 1; 0 = free */
  size_t index_cap;
  size_t bytes;
};

/* The cells of one metric version. */
struct rc_set {
  struct rc_set *next;
  char *metric_id;
  int64_t version;
  uint64_t watermark; /* the cells include the events with seq <= watermark */
  struct rc_keys keys;
  struct rc_level levels[ANA_ROLLUP_LEVELS];
};

/* Returns a set (caller frees with rc_set_free; NULL does nothing), or
 * NULL when out of memory. */
struct rc_set *rc_set_new(const char *metric_id, int64_t version);
void rc_set_free(struct rc_set *set);
/* Bytes held by a set's levels and keys. */
size_t rc_set_bytes(const struct rc_set *set);
/* Empties a level (not loaded). */
void rc_level_clear(struct rc_level *lv);
/* Moves level `level` of from (read by rc_set_read; freed here) into set,
 * which no query sees yet. Returns 0 or ANA_ERR_NOMEM (the level stays
 * empty). */
int rc_set_take(struct rc_set *set, int level, struct rc_set *from);

/* The index of the first bucket of lv starting at or after t. */
size_t rc_level_seek(const struct rc_level *lv, int64_t t);

/* Reads the stored cells of set's metric version at `level` with
 * lo <= bucket < hi through rd (borrowed; a transaction of the caller's
 * gives the snapshot), packed by mq, into set. Calls for one level must come
 * in ascending, disjoint ranges. Returns 0; 1 when the level would hold
 * more than limit bytes (what was read stays: the caller frees the set);
 * or a negative error with err filled. Blocks. */
int rc_set_read(struct rc_set *set, struct ana_local_reader *rd, const struct ana_mq *mq, int level,
                int64_t lo, int64_t hi, size_t limit, struct ana_error *err);

/* Changed cells of one chunk, packed, for rc_cache_advance. */
struct rc_change {
  int level;
  int64_t bucket;
  const char *key; /* borrowed: must outlive the rc_cache_advance call */
  size_t off, len; /* of the packed cell in buf */
};

struct rc_changes {
  struct rc_change *v;
  size_t n, cap;
  uint8_t *buf;
  size_t len, buf_cap;
};

/* Appends the new state of a cell (its encoding, packed by mq). Returns 0
 * or a negative error. */
int rc_changes_add(struct rc_changes *ch, const struct ana_mq *mq, int level, int64_t bucket,
                   const char *key, const uint8_t *blob, size_t len);
void rc_changes_fini(struct rc_changes *ch);

/* The shared sets. */
struct rc_cache {
  pthread_rwlock_t lock; /* queries read sets under it; the thread changes them under it */
  struct rc_set *sets;
  size_t budget; /* bytes; 0 = no cache */
  size_t bytes;  /* held by every loaded level and key table */
  bool warned;   /* a level was refused (logged once) */
};

int rc_cache_init(struct rc_cache *c, size_t budget);
void rc_cache_fini(struct rc_cache *c);

/* The set of (metric_id, version), or NULL. Under the lock, or on the
 * thread (the only writer). */
struct rc_set *rc_cache_find(struct rc_cache *c, const char *metric_id, int64_t version);

/* The following are for the rollup thread only; each takes the write lock. */

/* Makes set (its watermark set, its levels read or not; owned from now on)
 * visible to queries. */
void rc_cache_publish(struct rc_cache *c, struct rc_set *set);
/* Removes and frees a set. */
void rc_cache_remove(struct rc_cache *c, struct rc_set *set);
/* Moves level `level` of loaded (a private set read in full by rc_set_read
 * at set's watermark; freed here) into set, evicting the least recently used
 * levels to stay within the budget. */
void rc_cache_install(struct rc_cache *c, struct rc_set *set, int level, struct rc_set *loaded);
/* Drops the buckets of set's level starting at or before last (their cells
 * were deleted for retention). */
void rc_cache_expire(struct rc_cache *c, struct rc_set *set, int level, int64_t last);
/* Replaces the changed cells of set's loaded levels and moves its watermark,
 * in one critical section. ch NULL (the changes could not be gathered), or
 * out of memory here: the set's levels are dropped instead (queries read the
 * database until they are loaded again). */
void rc_cache_advance(struct rc_cache *c, struct rc_set *set, const struct rc_changes *ch,
                      uint64_t watermark);

#endif
