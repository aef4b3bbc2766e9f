/* Metric rollups: the table of cells by (level, bucket, group key) that a
 * round's changes and a query's raw events are gathered in. */
#include "rollup_shared.h"

#include "ana_alloc.h"

#include <string.h>

/* ru_key_hash(key) mixed with the level and bucket (splitmix64's finaliser):
 * an event's group key is hashed once for its three cells. */
static uint64_t cell_hash(int level, int64_t bucket, uint64_t kh) {
  uint64_t h = kh ^ ((uint64_t)bucket * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)level;
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
  return h ^ (h >> 31);
}

/* The entry of a cell, made on first sight; NULL when out of memory. The
 * entry moves when the table grows, its key and cell do not. */
struct cell_entry *ru_chunk_cell(struct chunk *c, int level, int64_t bucket, const char *key,
                                 uint64_t kh) {
  if ((c->len + 1) * 2 > c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    struct cell_entry *slots = ana_calloc(cap, sizeof *slots);
    if (!slots)
      return NULL;
    for (size_t i = 0; i < c->cap; i++) {
      if (!c->slots[i].cell)
        continue;
      size_t j = c->slots[i].hash & (cap - 1);
      while (slots[j].cell)
        j = (j + 1) & (cap - 1);
      slots[j] = c->slots[i];
    }
    ana_free(c->slots);
    c->slots = slots;
    c->cap = cap;
  }
  uint64_t h = cell_hash(level, bucket, kh);
  size_t j = h & (c->cap - 1);
  for (; c->slots[j].cell; j = (j + 1) & (c->cap - 1)) {
    struct cell_entry *e = &c->slots[j];
    if (e->hash == h && e->level == level && e->bucket == bucket && strcmp(e->key, key) == 0)
      return e;
  }
  struct cell_entry *e = &c->slots[j];
  e->key = ana_strdup(key);
  e->cell = e->key ? ana_mq_cell_new(c->mq) : NULL;
  if (!e->cell) {
    ana_free(e->key);
    e->key = NULL;
    return NULL;
  }
  e->level = level;
  e->bucket = bucket;
  e->hash = h;
  c->len++;
  return e;
}

void ru_chunk_fini(struct chunk *c) {
  for (size_t i = 0; i < c->cap; i++) {
    ana_mq_cell_free(c->mq, c->slots[i].cell);
    ana_free(c->slots[i].key);
  }
  ana_free(c->slots);
}
