/* Cache of verified tokens keyed by the token's SHA-256: sharded hash tables
 * with an LRU list per shard, entries dropped once their token expires. */
#include "jwt_internal.h"

#include "ana_alloc.h"

#include <pthread.h>
#include <string.h>

#define SHARDS 16

struct entry {
  unsigned char key[JWT_CACHE_KEY_BYTES];
  struct entry *chain;       /* next in the bucket */
  struct entry *prev, *next; /* LRU list: head most recent */
  struct ana_arena *arena;   /* owns p's strings */
  struct ana_jwt_principal p;
};

struct shard {
  pthread_mutex_t mu;
  struct entry **buckets;
  size_t n_buckets; /* power of two */
  size_t n, cap;
  struct entry *head, *tail;
};

struct token_cache {
  size_t capacity;
  struct shard shards[SHARDS];
};

int jwt_principal_copy(struct ana_arena *arena, const struct ana_jwt_principal *src,
                       struct ana_jwt_principal *dst) {
  memset(dst, 0, sizeof *dst);
  dst->expires_at = src->expires_at;
  if (src->subject && !(dst->subject = ana_arena_strdup(arena, src->subject)))
    return ANA_ERR_NOMEM;
  if (src->account_id && !(dst->account_id = ana_arena_strdup(arena, src->account_id)))
    return ANA_ERR_NOMEM;
  if (src->n_roles) {
    const char **roles = ana_arena_calloc(arena, src->n_roles, sizeof *roles);
    if (!roles)
      return ANA_ERR_NOMEM;
    for (size_t i = 0; i < src->n_roles; i++)
      if (!(roles[i] = ana_arena_strdup(arena, src->roles[i])))
        return ANA_ERR_NOMEM;
    dst->roles = roles;
    dst->n_roles = src->n_roles;
  }
  if (src->n_accounts) {
    struct ana_jwt_account *acc = ana_arena_calloc(arena, src->n_accounts, sizeof *acc);
    if (!acc)
      return ANA_ERR_NOMEM;
    for (size_t i = 0; i < src->n_accounts; i++) {
      acc[i].account_id = ana_arena_strdup(arena, src->accounts[i].account_id);
      acc[i].role = ana_arena_strdup(arena, src->accounts[i].role);
      if (!acc[i].account_id || !acc[i].role)
        return ANA_ERR_NOMEM;
    }
    dst->accounts = acc;
    dst->n_accounts = src->n_accounts;
  }
  return 0;
}

static uint64_t key_hash(const unsigned char *key) {
  uint64_t h;
  memcpy(&h, key, sizeof h); /* already a cryptographic hash */
  return h;
}

static struct shard *shard_of(struct token_cache *c, const unsigned char *key) {
  return &c->shards[key[8] % SHARDS];
}

static struct entry **slot_of(struct shard *s, const unsigned char *key) {
  struct entry **pp = &s->buckets[key_hash(key) & (s->n_buckets - 1)];
  while (*pp && memcmp((*pp)->key, key, JWT_CACHE_KEY_BYTES) != 0)
    pp = &(*pp)->chain;
  return pp;
}

static void lru_unlink(struct shard *s, struct entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    s->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    s->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_push_front(struct shard *s, struct entry *e) {
  e->prev = NULL;
  e->next = s->head;
  if (s->head)
    s->head->prev = e;
  s->head = e;
  if (!s->tail)
    s->tail = e;
}

static void entry_free(struct entry *e) {
  if (!e)
    return;
  ana_arena_destroy(e->arena);
  ana_free(e);
}

/* Unlinks e (found at *slot) from the shard and frees it. */
static void shard_remove(struct shard *s, struct entry **slot) {
  struct entry *e = *slot;
  *slot = e->chain;
  lru_unlink(s, e);
  s->n--;
  entry_free(e);
}

struct token_cache *token_cache_create(size_t capacity) {
  struct token_cache *c = ana_calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->capacity = capacity;
  for (int i = 0; i < SHARDS; i++) {
    struct shard *s = &c->shards[i];
    pthread_mutex_init(&s->mu, NULL);
    s->cap = capacity ? (capacity + SHARDS - 1) / SHARDS : 0;
    s->n_buckets = 1;
    while (s->n_buckets < s->cap)
      s->n_buckets <<= 1;
    s->buckets = ana_calloc(s->n_buckets, sizeof *s->buckets);
    if (!s->buckets) {
      token_cache_destroy(c);
      return NULL;
    }
  }
  return c;
}

void token_cache_destroy(struct token_cache *c) {
  if (!c)
    return;
  for (int i = 0; i < SHARDS; i++) {
    struct shard *s = &c->shards[i];
    for (struct entry *e = s->head, *next; e; e = next) {
      next = e->next;
      entry_free(e);
    }
    ana_free(s->buckets);
    pthread_mutex_destroy(&s->mu);
  }
  ana_free(c);
}

int token_cache_get(struct token_cache *c, const unsigned char *key, int64_t now, int64_t leeway,
                    struct ana_arena *arena, struct ana_jwt_principal *out) {
  if (!c->capacity)
    return ANA_ERR_NOT_FOUND;
  struct shard *s = shard_of(c, key);
  int rc = ANA_ERR_NOT_FOUND;
  pthread_mutex_lock(&s->mu);
  struct entry **slot = slot_of(s, key);
  struct entry *e = *slot;
  if (!e)
    goto out;
  if (now > e->p.expires_at + leeway) {
    shard_remove(s, slot);
    goto out;
  }
  lru_unlink(s, e);
  lru_push_front(s, e);
  rc = jwt_principal_copy(arena, &e->p, out);
out:
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void token_cache_put(struct token_cache *c, const unsigned char *key,
                     const struct ana_jwt_principal *p) {
  if (!c->capacity)
    return;
  /* Copy outside the lock; the arena is sized for a typical principal. */
  struct entry *e = ana_calloc(1, sizeof *e);
  if (!e)
    return;
  memcpy(e->key, key, JWT_CACHE_KEY_BYTES);
  e->arena = ana_arena_create(512, 0);
  if (!e->arena || jwt_principal_copy(e->arena, p, &e->p) < 0) {
    entry_free(e);
    return;
  }
  struct shard *s = shard_of(c, key);
  pthread_mutex_lock(&s->mu);
  struct entry **slot = slot_of(s, key);
  if (*slot) { /* another thread verified the same token meanwhile */
    pthread_mutex_unlock(&s->mu);
    entry_free(e);
    return;
  }
  if (s->n >= s->cap) {
    struct entry *victim = s->tail;
    struct entry **vslot = slot_of(s, victim->key);
    shard_remove(s, vslot);
    slot = slot_of(s, key); /* the chain may have changed */
  }
  *slot = e;
  lru_push_front(s, e);
  s->n++;
  pthread_mutex_unlock(&s->mu);
}

size_t token_cache_size(struct token_cache *c) {
  size_t n = 0;
  for (int i = 0; i < SHARDS; i++) {
    pthread_mutex_lock(&c->shards[i].mu);
    n += c->shards[i].n;
    pthread_mutex_unlock(&c->shards[i].mu);
  }
  return n;
}
