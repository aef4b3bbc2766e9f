/* GCRA rate limiting: the algorithm, the in-process store (sharded, lock-striped, bounded) and
 * the limit syntax. */
#include "ana_rate_limit.h"

#include "ana_alloc.h"
#include "ana_error.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the algorithm --- */

void ana_rate_gcra(int64_t *tat_ns, const struct ana_rate_limit *limit, int64_t cost,
                   int64_t now_ns, struct ana_rate_decision *out) {
  const int64_t t = limit->emission_ns, tau = limit->burst * t;
  const int64_t base = *tat_ns > now_ns ? *tat_ns : now_ns;
  out->limit = limit->burst;
  if (cost > limit->burst) {
    out->allowed = false;
    out->remaining = (tau - (base - now_ns)) / t;
    out->reset_after_ns = base - now_ns;
    out->retry_after_ns = -1;
    return;
  }
  const int64_t new_tat = base + cost * t;
  const int64_t ahead = new_tat - now_ns; /* how far the budget is drawn */
  if (ahead > tau) {
    out->allowed = false;
    out->remaining = (tau - (base - now_ns)) / t;
    out->reset_after_ns = base - now_ns;
    out->retry_after_ns = ahead - tau;
    return;
  }
  *tat_ns = new_tat;
  out->allowed = true;
  out->remaining = (tau - ahead) / t;
  out->reset_after_ns = ahead;
  out->retry_after_ns = 0;
}

/* --- the in-process store --- */

struct entry {
  struct entry *next;
  uint64_t hash;
  int64_t tat_ns;
  char key[];
};

struct shard {
  pthread_mutex_t mu;
  struct entry **buckets; /* n_buckets chains */
  size_t n_entries;
  char pad[64]; /* keeps neighbouring shards' locks off one cache line */
};

struct local {
  struct shard *shards;
  size_t n_shards;  /* a power of two */
  size_t n_buckets; /* per shard, a power of two */
  size_t shard_cap; /* entries per shard */
};

static uint64_t hash_of(const char *s) { /* FNV-1a, then a final mix */
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

/* Drops every idle entry of a full shard; when none is idle, the one
 * closest to whole (its loss lets through the least). Shard locked. */
static void evict_locked(struct local *l, struct shard *s, int64_t now_ns) {
  struct entry **oldest = NULL;
  for (size_t b = 0; b < l->n_buckets; b++) {
    for (struct entry **pp = &s->buckets[b]; *pp;) {
      struct entry *e = *pp;
      if (e->tat_ns <= now_ns) {
        *pp = e->next;
        ana_free(e);
        s->n_entries--;
        continue;
      }
      if (!oldest || e->tat_ns < (*oldest)->tat_ns)
        oldest = pp;
      pp = &e->next;
    }
  }
  if (s->n_entries >= l->shard_cap && oldest) {
    struct entry *e = *oldest;
    *oldest = e->next;
    ana_free(e);
    s->n_entries--;
  }
}

static int local_charge(void *ctx, const char *key, const struct ana_rate_limit *limit,
                        int64_t cost, int64_t now_ns, struct ana_rate_decision *out) {
  struct local *l = ctx;
  uint64_t h = hash_of(key);
  struct shard *s = &l->shards[h & (l->n_shards - 1)];
  size_t b = (size_t)(h >> 32) & (l->n_buckets - 1);
  int rc = 0;
  pthread_mutex_lock(&s->mu);
  struct entry *e = s->buckets[b];
  while (e && (e->hash != h || strcmp(e->key, key) != 0))
    e = e->next;
  if (e) {
    ana_rate_gcra(&e->tat_ns, limit, cost, now_ns, out);
    goto out;
  }
  int64_t tat = 0;
  ana_rate_gcra(&tat, limit, cost, now_ns, out);
  if (!out->allowed)
    goto out; /* a key never seen is whole: nothing to remember */
  if (s->n_entries >= l->shard_cap)
    evict_locked(l, s, now_ns);
  size_t klen = strlen(key);
  e = ana_malloc(sizeof *e + klen + 1);
  if (!e) {
    rc = ANA_ERR_NOMEM;
    goto out;
  }
  memcpy(e->key, key, klen + 1);
  e->hash = h;
  e->tat_ns = tat;
  e->next = s->buckets[b];
  s->buckets[b] = e;
  s->n_entries++;
out:
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static void local_destroy(void *ctx) {
  struct local *l = ctx;
  if (!l)
    return;
  for (size_t i = 0; l->shards && i < l->n_shards; i++) {
    struct shard *s = &l->shards[i];
    for (size_t b = 0; s->buckets && b < l->n_buckets; b++)
      for (struct entry *e = s->buckets[b], *next; e; e = next) {
        next = e->next;
        ana_free(e);
      }
    ana_free(s->buckets);
    pthread_mutex_destroy(&s->mu);
  }
  ana_free(l->shards);
  ana_free(l);
}

static const struct ana_rate_limiter_ops local_ops = {
    .charge = local_charge,
    .destroy = local_destroy,
};

static size_t pow2_at_least(size_t n) {
  size_t p = 1;
  while (p < n)
    p <<= 1;
  return p;
}

int ana_rate_limiter_local_create(size_t max_entries, size_t n_shards,
                                  struct ana_rate_limiter *out) {
  struct local *l = ana_calloc(1, sizeof *l);
  if (!l)
    return ANA_ERR_NOMEM;
  l->n_shards = pow2_at_least(n_shards ? n_shards : 64);
  if (max_entries < l->n_shards)
    max_entries = l->n_shards;
  l->shard_cap = (max_entries + l->n_shards - 1) / l->n_shards;
  l->n_buckets = pow2_at_least(l->shard_cap);
  l->shards = ana_calloc(l->n_shards, sizeof *l->shards);
  if (!l->shards)
    goto fail;
  for (size_t i = 0; i < l->n_shards; i++) {
    pthread_mutex_init(&l->shards[i].mu, NULL);
    l->shards[i].buckets = ana_calloc(l->n_buckets, sizeof *l->shards[i].buckets);
    if (!l->shards[i].buckets) {
      l->n_shards = i + 1;
      goto fail;
    }
  }
  out->ops = &local_ops;
  out->ctx = l;
  return 0;
fail:
  local_destroy(l);
  return ANA_ERR_NOMEM;
}

size_t ana_rate_limiter_local_size(const struct ana_rate_limiter *lim) {
  const struct local *l = lim->ctx;
  size_t n = 0;
  for (size_t i = 0; i < l->n_shards; i++) {
    pthread_mutex_lock(&l->shards[i].mu);
    n += l->shards[i].n_entries;
    pthread_mutex_unlock(&l->shards[i].mu);
  }
  return n;
}

void ana_rate_limiter_destroy(struct ana_rate_limiter *l) {
  if (l && l->ops) {
    l->ops->destroy(l->ctx);
    l->ops = NULL;
    l->ctx = NULL;
  }
}

/* --- the syntax --- */

static bool number(const char **p, const char *end, int64_t *out) {
  const char *s = *p;
  int64_t v = 0;
  if (s == end || !isdigit((unsigned char)*s))
    return false;
  for (; s < end && isdigit((unsigned char)*s); s++) {
    v = v * 10 + (*s - '0');
    if (v > ANA_RATE_LIMIT_MAX_BURST)
      return false;
  }
  *p = s;
  *out = v;
  return true;
}

static void skip_spaces(const char **p, const char *end) {
  while (*p < end && **p == ' ')
    (*p)++;
}

bool ana_rate_limit_parse(const char *text, size_t len, struct ana_rate_limit *out, char *why,
                          size_t why_len) {
  const char *p = text, *end = text + len;
  skip_spaces(&p, end);
  while (end > p && end[-1] == ' ')
    end--;
  if ((size_t)(end - p) == 3 && strncmp(p, "off", 3) == 0) {
    out->emission_ns = 0;
    out->burst = 0;
    return true;
  }
  int64_t rate, burst, period_ns;
  if (!number(&p, end, &rate) || rate == 0) {
    snprintf(why, why_len, "expected a rate from 1 to %lld, as in 100/s", ANA_RATE_LIMIT_MAX_BURST);
    return false;
  }
  if (p == end || *p != '/' || p + 1 == end) {
    snprintf(why, why_len, "expected /s, /m or /h after the rate");
    return false;
  }
  switch (p[1]) {
  case 's': period_ns = 1000000000LL; break;
  case 'm': period_ns = 60LL * 1000000000LL; break;
  case 'h': period_ns = 3600LL * 1000000000LL; break;
  default: snprintf(why, why_len, "expected /s, /m or /h after the rate"); return false;
  }
  p += 2;
  burst = rate;
  if (p < end && *p != ' ') {
    snprintf(why, why_len, "expected /s, /m or /h after the rate");
    return false;
  }
  skip_spaces(&p, end);
  if (p < end) {
    if ((size_t)(end - p) < 5 || strncmp(p, "burst", 5) != 0) {
      snprintf(why, why_len, "expected \"burst <n>\" after the rate");
      return false;
    }
    p += 5;
    skip_spaces(&p, end);
    if (!number(&p, end, &burst) || burst == 0 || p != end) {
      snprintf(why, why_len, "expected a burst from 1 to %lld", ANA_RATE_LIMIT_MAX_BURST);
      return false;
    }
  }
  int64_t emission = period_ns / rate;
  if (emission == 0 || burst > INT64_MAX / 4 / emission) {
    snprintf(why, why_len, "the rate or the burst is too large");
    return false;
  }
  out->emission_ns = emission;
  out->burst = burst;
  return true;
}

bool ana_rate_limit_parse_list(const char *text,
                               bool (*each)(void *ctx, const char *name, size_t name_len,
                                            const struct ana_rate_limit *limit),
                               void *ctx, char *why, size_t why_len) {
  for (const char *p = text; *p;) {
    while (*p == ' ' || *p == ',')
      p++;
    if (!*p)
      break;
    const char *item = p;
    while (*p && *p != ',')
      p++;
    const char *eq = memchr(item, '=', (size_t)(p - item));
    const char *name_end = eq;
    while (name_end && name_end > item && name_end[-1] == ' ')
      name_end--;
    if (!eq || name_end == item) {
      snprintf(why, why_len, "expected name=LIMIT in \"%.*s\"", (int)(p - item), item);
      return false;
    }
    struct ana_rate_limit lim;
    char inner[128];
    if (!ana_rate_limit_parse(eq + 1, (size_t)(p - eq - 1), &lim, inner, sizeof inner)) {
      snprintf(why, why_len, "%.*s: %s", (int)(name_end - item), item, inner);
      return false;
    }
    if (each && !each(ctx, item, (size_t)(name_end - item), &lim)) {
      snprintf(why, why_len, "out of memory");
      return false;
    }
  }
  return true;
}

void ana_rate_limit_format(const struct ana_rate_limit *limit, char *buf, size_t len) {
  if (limit->emission_ns == 0) {
    snprintf(buf, len, "off");
    return;
  }
  static const struct {
    int64_t ns;
    char unit;
  } units[] = {{1000000000LL, 's'}, {60LL * 1000000000LL, 'm'}, {3600LL * 1000000000LL, 'h'}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (units[i].ns % limit->emission_ns == 0 || i == 2) {
      snprintf(buf, len, "%" PRId64 "/%c burst %" PRId64, units[i].ns / limit->emission_ns,
               units[i].unit, limit->burst);
      return;
    }
  }
}
