/* API keys: the key text (base62, SHA-256), a direct-mapped cache of stored
 * keys by id, and a thread that writes last-use times off the request path. */
#include "ana_api_keys.h"

#include "ana_alloc.h"
#include "ana_clock.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const char ana_api_key_roles_text[] = "viewer, analyst, editor, admin, ingest (reader = viewer)";

/* Queued last-use writes; more in one second are dropped (retried on the
 * key's next use). */
#define TOUCH_QUEUE_MAX 1024
#define TOUCH_PERIOD_MS 1000

static bool is_base62(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

const char *ana_api_key_reason_text(enum ana_api_key_reason r) {
  switch (r) {
  case ANA_API_KEY_OK: return "ok";
  case ANA_API_KEY_BAD_PREFIX: return "not an API key (no ana_ prefix)";
  case ANA_API_KEY_BAD_LENGTH: return "wrong length";
  case ANA_API_KEY_BAD_CHARS: return "a character outside base62";
  case ANA_API_KEY_UNKNOWN_ID: return "unknown key id";
  case ANA_API_KEY_BAD_SECRET: return "wrong secret for the key id";
  case ANA_API_KEY_REVOKED: return "revoked";
  case ANA_API_KEY_UNAVAILABLE: return "the key store failed";
  }
  return "?";
}

enum ana_api_key_reason ana_api_key_parse(const char *key, size_t len,
                                          char id_out[ANA_API_KEY_ID_CHARS + 1]) {
  id_out[0] = '\0';
  if (len < ANA_API_KEY_PREFIX_CHARS || memcmp(key, ANA_API_KEY_PREFIX, ANA_API_KEY_PREFIX_CHARS))
    return ANA_API_KEY_BAD_PREFIX;
  if (len != ANA_API_KEY_CHARS || key[ANA_API_KEY_PREFIX_CHARS + ANA_API_KEY_ID_CHARS] != '_')
    return ANA_API_KEY_BAD_LENGTH;
  for (size_t i = ANA_API_KEY_PREFIX_CHARS; i < len; i++)
    if (i != ANA_API_KEY_PREFIX_CHARS + ANA_API_KEY_ID_CHARS && !is_base62(key[i]))
      return ANA_API_KEY_BAD_CHARS;
  memcpy(id_out, key + ANA_API_KEY_PREFIX_CHARS, ANA_API_KEY_ID_CHARS);
  id_out[ANA_API_KEY_ID_CHARS] = '\0';
  return ANA_API_KEY_OK;
}

bool ana_api_key_id_valid(const char *s) {
  size_t n = 0;
  for (; s && s[n]; n++)
    if (n == ANA_API_KEY_ID_CHARS || !is_base62(s[n]))
      return false;
  return n == ANA_API_KEY_ID_CHARS;
}

void ana_api_key_format(const char *id, const uint8_t secret[ANA_API_KEY_SECRET_BYTES],
                        char out[ANA_API_KEY_CHARS + 1]) {
  memcpy(out, ANA_API_KEY_PREFIX, ANA_API_KEY_PREFIX_CHARS);
  memcpy(out + ANA_API_KEY_PREFIX_CHARS, id, ANA_API_KEY_ID_CHARS);
  out[ANA_API_KEY_PREFIX_CHARS + ANA_API_KEY_ID_CHARS] = '_';
  /* The secret as one big-endian number in base 62: 43 digits hold 2^256. */
  uint8_t num[ANA_API_KEY_SECRET_BYTES];
  memcpy(num, secret, sizeof num);
  char *digits = out + ANA_API_KEY_PREFIX_CHARS + ANA_API_KEY_ID_CHARS + 1;
  for (int d = ANA_API_KEY_SECRET_CHARS - 1; d >= 0; d--) {
    unsigned rem = 0;
    for (size_t i = 0; i < sizeof num; i++) {
      unsigned acc = rem * 256 + num[i];
      num[i] = (uint8_t)(acc / 62);
      rem = acc % 62;
    }
    digits[d] = base62[rem];
  }
  out[ANA_API_KEY_CHARS] = '\0';
  OPENSSL_cleanse(num, sizeof num);
}

void ana_api_key_hash(const char *key, size_t len, uint8_t out[ANA_API_KEY_HASH_BYTES]) {
  SHA256((const unsigned char *)key, len, out);
}

const char *ana_api_key_role(const char *role) {
  static const char *const roles[] = {"viewer", "analyst", "editor", "admin", "ingest"};
  if (!role)
    return NULL;
  if (strcmp(role, "reader") == 0)
    return roles[0];
  for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
    if (strcmp(role, roles[i]) == 0)
      return roles[i];
  return NULL;
}

/* ------------------------------------------------------------------ */

struct slot {
  char key_id[ANA_API_KEY_ID_CHARS + 1]; /* "" = empty */
  bool known;                            /* false: no key has this id */
  char *account_id;                      /* owned */
  const char *role;                      /* static (ana_api_key_role) */
  char rate_limit[ANA_API_KEY_RATE_LIMIT_MAX_CHARS + 1];
  uint8_t hash[ANA_API_KEY_HASH_BYTES];
  int64_t revoked_at_ms;
  int64_t last_used_at_ms; /* stored or queued */
  int64_t loaded_at_ms;
};

struct touch {
  char key_id[ANA_API_KEY_ID_CHARS + 1];
  int64_t at_ms;
};

struct ana_api_keys {
  struct ana_api_keys_options o;
  pthread_mutex_t mu; /* guards slots, gen, queue, stop */
  struct slot *slots;
  size_t mask;  /* slots - 1 (a power of two), when slots */
  uint64_t gen; /* bumped by each revoke: a load begun before it is not cached */
  struct touch queue[TOUCH_QUEUE_MAX];
  size_t n_queued;
  pthread_cond_t wake;
  bool stop, thread_started;
  pthread_t thread;
  _Atomic int64_t active; /* keys not revoked, as last counted */
  int64_t counted_at_ms;  /* touch thread only */
};

static int64_t now_ms(struct ana_api_keys *k) {
  if (k->o.clock)
    return k->o.clock(k->o.clock_ctx);
  return ana_clock_wall_ms();
}

void ana_api_keys_options_init(struct ana_api_keys_options *o) {
  *o = (struct ana_api_keys_options){
      .cache_slots = ANA_API_KEYS_DEFAULT_CACHE_SLOTS,
      .cache_ttl_ms = ANA_API_KEYS_DEFAULT_CACHE_TTL_MS,
      .touch_interval_ms = ANA_API_KEYS_DEFAULT_TOUCH_INTERVAL_MS,
      .touch_thread = true,
      .recount_ms = ANA_API_KEYS_DEFAULT_RECOUNT_MS,
  };
}

int64_t ana_api_keys_active(const struct ana_api_keys *k) {
  return atomic_load_explicit(&k->active, memory_order_relaxed);
}

int ana_api_keys_recount(struct ana_api_keys *k, struct ana_error *err) {
  int64_t n = 0;
  if (!k->o.ops->count_active)
    return ana_error_set(err, ANA_STATUS_UNIMPLEMENTED, "API keys: the store cannot count keys"),
           ANA_ERR_UNSUPPORTED;
  int rc = k->o.ops->count_active(k->o.store, &n, err);
  if (rc == 0)
    atomic_store_explicit(&k->active, n, memory_order_relaxed);
  return rc;
}

void ana_api_keys_flush(struct ana_api_keys *k) {
  struct touch batch[TOUCH_QUEUE_MAX];
  pthread_mutex_lock(&k->mu);
  size_t n = k->n_queued;
  memcpy(batch, k->queue, n * sizeof batch[0]);
  k->n_queued = 0;
  pthread_mutex_unlock(&k->mu);
  for (size_t i = 0; i < n; i++) {
    struct ana_error err;
    k->o.ops->touch(k->o.store, batch[i].key_id, batch[i].at_ms, &err);
  }
}

static void *touch_main(void *arg) {
  pthread_setname_np(pthread_self(), "ana-keytouch"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_api_keys *k = arg;
  pthread_mutex_lock(&k->mu);
  while (!k->stop) {
    int period_ms = TOUCH_PERIOD_MS;
    if (k->o.recount_ms > 0 && k->o.recount_ms < period_ms)
      period_ms = k->o.recount_ms;
    struct timespec until = ana_deadline_in_ms(period_ms);
    pthread_cond_timedwait(&k->wake, &k->mu, &until);
    pthread_mutex_unlock(&k->mu);
    ana_api_keys_flush(k);
    /* Keys created or revoked by another process (`analyticsd keys`). */
    int64_t now = now_ms(k);
    if (k->o.recount_ms > 0 &&
        (now - k->counted_at_ms >= k->o.recount_ms || now < k->counted_at_ms)) {
      struct ana_error err;
      k->counted_at_ms = now;
      ana_api_keys_recount(k, &err);
    }
    pthread_mutex_lock(&k->mu);
  }
  pthread_mutex_unlock(&k->mu);
  return NULL;
}

struct ana_api_keys *ana_api_keys_create(const struct ana_api_keys_options *o,
                                         struct ana_error *err) {
  if (!o->ops || !o->store) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "API keys: no key store");
    return NULL;
  }
  struct ana_api_keys *k = ana_calloc(1, sizeof *k);
  if (!k)
    goto nomem;
  k->o = *o;
  pthread_mutex_init(&k->mu, NULL);
  pthread_cond_init(&k->wake, NULL);
  if (o->cache_slots) {
    size_t n = 1;
    while (n < o->cache_slots)
      n <<= 1;
    if (!(k->slots = ana_calloc(n, sizeof *k->slots)))
      goto nomem;
    k->mask = n - 1;
  }
  /* The count decides protected mode from the first request on. */
  if (o->ops->count_active && ana_api_keys_recount(k, err) < 0) {
    ana_api_keys_destroy(k);
    return NULL;
  }
  k->counted_at_ms = now_ms(k);
  if (o->touch_thread) {
    if (pthread_create(&k->thread, NULL, touch_main, k) != 0) {
      ana_error_set(err, ANA_STATUS_INTERNAL, "API keys: cannot start a thread: %s",
                    strerror(errno));
      ana_api_keys_destroy(k);
      return NULL;
    }
    k->thread_started = true;
  }
  return k;
nomem:
  ana_api_keys_destroy(k);
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

void ana_api_keys_destroy(struct ana_api_keys *k) {
  if (!k)
    return;
  if (k->thread_started) {
    pthread_mutex_lock(&k->mu);
    k->stop = true;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
  }
  if (k->o.ops)
    ana_api_keys_flush(k);
  if (k->slots)
    for (size_t i = 0; i <= k->mask; i++)
      ana_free(k->slots[i].account_id);
  ana_free(k->slots);
  pthread_cond_destroy(&k->wake);
  pthread_mutex_destroy(&k->mu);
  ana_free(k);
}

/* Random base62 characters, unbiased (bytes >= 248 are drawn again). */
static int random_base62(char *out, size_t n) {
  uint8_t buf[64];
  size_t have = 0, used = sizeof buf;
  while (have < n) {
    if (used == sizeof buf) {
      if (RAND_bytes(buf, sizeof buf) != 1)
        return ANA_ERR_IO;
      used = 0;
    }
    uint8_t b = buf[used++];
    if (b < 248)
      out[have++] = base62[b % 62];
  }
  return 0;
}

int ana_api_keys_issue(struct ana_api_keys *k, const char *account_id, const char *role,
                       const char *name, const char *rate_limit, const char *created_by,
                       char key_out[ANA_API_KEY_CHARS + 1], struct ana_api_key_record *rec,
                       struct ana_error *err) {
  uint8_t secret[ANA_API_KEY_SECRET_BYTES];
  const char *canonical = ana_api_key_role(role);
  int rc = 0;
  if (!canonical)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "role: must be one of %s",
                         ana_api_key_roles_text);
  if (!name)
    name = "";
  if (strlen(name) > ANA_API_KEY_NAME_MAX_CHARS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "name: longer than %d characters",
                         ANA_API_KEY_NAME_MAX_CHARS);
  if (!account_id || !account_id[0])
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "accountId: is required");
  if (!rate_limit)
    rate_limit = "";
  if (strlen(rate_limit) > ANA_API_KEY_RATE_LIMIT_MAX_CHARS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "rateLimit: longer than %d characters",
                         ANA_API_KEY_RATE_LIMIT_MAX_CHARS);
  memset(rec, 0, sizeof *rec);
  rec->rate_limit = rate_limit;
  rec->account_id = account_id;
  rec->role = canonical;
  rec->name = name;
  rec->created_by = created_by ? created_by : "";
  rec->created_at_ms = now_ms(k);
  /* An id collision (about 2^-71 per pair) is drawn again. */
  for (int attempt = 0; attempt < 3; attempt++) {
    if (random_base62(rec->key_id, ANA_API_KEY_ID_CHARS) < 0 ||
        RAND_bytes(secret, sizeof secret) != 1) {
      rc = ana_error_set(err, ANA_STATUS_INTERNAL, "no randomness available");
      goto out;
    }
    rec->key_id[ANA_API_KEY_ID_CHARS] = '\0';
    ana_api_key_format(rec->key_id, secret, key_out);
    ana_api_key_hash(key_out, ANA_API_KEY_CHARS, rec->hash);
    rc = k->o.ops->insert(k->o.store, rec, err);
    if (rc != ANA_ERR_EXISTS)
      break;
  }
  if (rc == 0 && k->o.ops->count_active) {
    struct ana_error ignored;
    if (ana_api_keys_recount(k, &ignored) < 0)
      atomic_fetch_add_explicit(&k->active, 1, memory_order_relaxed);
  }
out:
  OPENSSL_cleanse(secret, sizeof secret);
  if (rc < 0)
    OPENSSL_cleanse(key_out, ANA_API_KEY_CHARS + 1);
  return rc;
}

/* What verify needs of a key, copied out of the cache or the store. */
struct loaded_key {
  bool known;
  char *account_id; /* in the arena */
  const char *role;
  char rate_limit[ANA_API_KEY_RATE_LIMIT_MAX_CHARS + 1];
  uint8_t hash[ANA_API_KEY_HASH_BYTES];
  int64_t revoked_at_ms, last_used_at_ms;
  struct ana_arena *arena;
};

static int keep_loaded(void *ctx, const struct ana_api_key_record *r) {
  struct loaded_key *l = ctx;
  l->known = true;
  l->account_id = ana_arena_strdup(l->arena, r->account_id);
  l->role = ana_api_key_role(r->role);
  snprintf(l->rate_limit, sizeof l->rate_limit, "%s", r->rate_limit ? r->rate_limit : "");
  memcpy(l->hash, r->hash, sizeof l->hash);
  l->revoked_at_ms = r->revoked_at_ms;
  l->last_used_at_ms = r->last_used_at_ms;
  return 1;
}

static size_t slot_of(const struct ana_api_keys *k, const char *id) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *id; id++)
    h = (h ^ (uint8_t)*id) * 16777619u;
  return h & k->mask;
}

/* The key of that id: from a fresh cache slot, else from the store (and
 * then cached). Returns 0 (l->known says whether it exists) or ANA_ERR_IO. */
static int load_key(struct ana_api_keys *k, const char *id, int64_t now, struct loaded_key *l,
                    struct ana_error *err) {
  uint64_t gen = 0;
  if (k->slots) {
    pthread_mutex_lock(&k->mu);
    struct slot *s = &k->slots[slot_of(k, id)];
    if (strcmp(s->key_id, id) == 0 && now - s->loaded_at_ms < k->o.cache_ttl_ms &&
        now >= s->loaded_at_ms) {
      l->known = s->known;
      l->account_id = s->known ? ana_arena_strdup(l->arena, s->account_id) : NULL;
      l->role = s->role;
      memcpy(l->rate_limit, s->rate_limit, sizeof l->rate_limit);
      memcpy(l->hash, s->hash, sizeof l->hash);
      l->revoked_at_ms = s->revoked_at_ms;
      l->last_used_at_ms = s->last_used_at_ms;
      pthread_mutex_unlock(&k->mu);
      return s->known && !l->account_id ? ANA_ERR_NOMEM : 0;
    }
    gen = k->gen;
    pthread_mutex_unlock(&k->mu);
  }
  int rc = k->o.ops->get(k->o.store, id, keep_loaded, l, err);
  if (rc == ANA_ERR_NOT_FOUND)
    l->known = false;
  else if (rc < 0)
    return ANA_ERR_IO;
  else if (!l->account_id || !l->role)
    return ANA_ERR_NOMEM; /* or a role no longer known: refused */
  if (!k->slots)
    return 0;
  char *account = l->known ? ana_strdup(l->account_id) : NULL;
  if (l->known && !account)
    return 0; /* not cached; the answer stands */
  pthread_mutex_lock(&k->mu);
  if (k->gen == gen) {
    struct slot *s = &k->slots[slot_of(k, id)];
    /* A last use queued here but not yet written is newer than the store's. */
    if (strcmp(s->key_id, id) == 0 && s->last_used_at_ms > l->last_used_at_ms)
      l->last_used_at_ms = s->last_used_at_ms;
    ana_free(s->account_id);
    memcpy(s->key_id, id, sizeof s->key_id);
    s->known = l->known;
    s->account_id = account;
    account = NULL;
    s->role = l->role;
    memcpy(s->rate_limit, l->rate_limit, sizeof s->rate_limit);
    memcpy(s->hash, l->hash, sizeof s->hash);
    s->revoked_at_ms = l->revoked_at_ms;
    s->last_used_at_ms = l->last_used_at_ms;
    s->loaded_at_ms = now;
  }
  pthread_mutex_unlock(&k->mu);
  ana_free(account);
  return 0;
}

/* Queues the last use unless one was written or queued within the
 * interval. */
static void note_use(struct ana_api_keys *k, const char *id, int64_t now, int64_t last_used) {
  if (now - last_used < k->o.touch_interval_ms)
    return;
  pthread_mutex_lock(&k->mu);
  if (k->slots) {
    struct slot *s = &k->slots[slot_of(k, id)];
    if (strcmp(s->key_id, id) == 0) {
      if (now - s->last_used_at_ms < k->o.touch_interval_ms)
        goto out; /* another caller queued it */
      s->last_used_at_ms = now;
    }
  }
  for (size_t i = 0; i < k->n_queued; i++)
    if (strcmp(k->queue[i].key_id, id) == 0) {
      k->queue[i].at_ms = now;
      goto out;
    }
  if (k->n_queued < TOUCH_QUEUE_MAX) {
    memcpy(k->queue[k->n_queued].key_id, id, ANA_API_KEY_ID_CHARS + 1);
    k->queue[k->n_queued++].at_ms = now;
  }
out:
  pthread_mutex_unlock(&k->mu);
}

int ana_api_keys_verify(struct ana_api_keys *k, const char *key, size_t len,
                        struct ana_arena *arena, struct ana_api_key_principal *out,
                        enum ana_api_key_reason *why, struct ana_error *err) {
  char id[ANA_API_KEY_ID_CHARS + 1];
  enum ana_api_key_reason reason = ana_api_key_parse(key, len, id);
  struct loaded_key l = {.arena = arena};
  uint8_t presented[ANA_API_KEY_HASH_BYTES];
  int64_t now = now_ms(k);
  if (reason != ANA_API_KEY_OK)
    goto refuse;
  ana_api_key_hash(key, len, presented);
  int rc = load_key(k, id, now, &l, err);
  if (rc == ANA_ERR_NOMEM) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (why)
      *why = ANA_API_KEY_UNAVAILABLE;
    return ANA_ERR_NOMEM;
  }
  if (rc < 0) {
    reason = ANA_API_KEY_UNAVAILABLE;
    goto refuse;
  }
  if (!l.known) {
    reason = ANA_API_KEY_UNKNOWN_ID;
    goto refuse;
  }
  if (CRYPTO_memcmp(presented, l.hash, sizeof presented) != 0) {
    reason = ANA_API_KEY_BAD_SECRET;
    goto refuse;
  }
  if (l.revoked_at_ms) {
    reason = ANA_API_KEY_REVOKED;
    goto refuse;
  }
  out->key_id = ana_arena_strdup(arena, id);
  out->account_id = l.account_id;
  out->role = l.role;
  out->rate_limit = l.rate_limit[0] ? ana_arena_strdup(arena, l.rate_limit) : "";
  if (!out->key_id || !out->rate_limit) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  note_use(k, id, now, l.last_used_at_ms);
  if (why)
    *why = ANA_API_KEY_OK;
  return 0;
refuse:
  if (why)
    *why = reason;
  if (reason == ANA_API_KEY_UNAVAILABLE)
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "API keys cannot be checked now; retry later");
  else
    ana_error_set(err, ANA_STATUS_UNAUTHENTICATED, "invalid API key");
  return ANA_ERR_INVALID;
}

struct get_ctx {
  const char *account_id;
  ana_api_key_record_fn fn;
  void *ctx;
  bool found;
};

static int get_filter(void *ctx, const struct ana_api_key_record *r) {
  struct get_ctx *g = ctx;
  if (g->account_id && strcmp(g->account_id, r->account_id) != 0)
    return 1;
  g->found = true;
  return g->fn(g->ctx, r);
}

int ana_api_keys_get(struct ana_api_keys *k, const char *account_id, const char *key_id,
                     ana_api_key_record_fn fn, void *ctx, struct ana_error *err) {
  struct get_ctx g = {account_id, fn, ctx, false};
  int rc = ana_api_key_id_valid(key_id) ? k->o.ops->get(k->o.store, key_id, get_filter, &g, err)
                                        : ANA_ERR_NOT_FOUND;
  if (rc == 0 && !g.found)
    rc = ANA_ERR_NOT_FOUND;
  if (rc == ANA_ERR_NOT_FOUND)
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "API key %.40s not found", key_id ? key_id : "");
  return rc;
}

int ana_api_keys_list(struct ana_api_keys *k, const char *account_id, const char *after, int limit,
                      ana_api_key_record_fn fn, void *ctx, struct ana_error *err) {
  return k->o.ops->list(k->o.store, account_id, after, limit, fn, ctx, err);
}

int ana_api_keys_revoke(struct ana_api_keys *k, const char *account_id, const char *key_id,
                        struct ana_error *err) {
  if (!ana_api_key_id_valid(key_id)) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "API key %.40s not found", key_id ? key_id : "");
    return ANA_ERR_NOT_FOUND;
  }
  int rc = k->o.ops->revoke(k->o.store, account_id, key_id, now_ms(k), err);
  if (rc == ANA_ERR_NOT_FOUND)
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "API key %s not found", key_id);
  /* Whatever the store said, nothing cached for the id survives; a load
   * under way when the revoke happened is not cached either. */
  pthread_mutex_lock(&k->mu);
  k->gen++;
  if (k->slots) {
    struct slot *s = &k->slots[slot_of(k, key_id)];
    if (strcmp(s->key_id, key_id) == 0)
      s->key_id[0] = '\0';
  }
  pthread_mutex_unlock(&k->mu);
  if (rc == 0 && k->o.ops->count_active) {
    struct ana_error ignored;
    ana_api_keys_recount(k, &ignored); /* on failure the touch thread recounts */
  }
  return rc;
}
