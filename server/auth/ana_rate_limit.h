/* Rate limits: GCRA (the generic cell rate algorithm, as redis-cell) behind an
 * interface a shared store can implement, an in-process implementation (a
 * sharded, lock-striped table of bounded size) and the limit syntax of the
 * RATE_LIMIT_* variables. Depends on ana_common only. */
#ifndef ANA_RATE_LIMIT_H
#define ANA_RATE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A limit: `burst` units at once, refilled at one unit per emission_ns.
 * emission_ns == 0 means unlimited. */
struct ana_rate_limit {
  int64_t emission_ns;
  int64_t burst;
};

/* The violation field of events a stream rejects for the rate limit. */
#define ANA_RATE_LIMIT_FIELD "rate_limit"

/* Largest burst and cost accepted (keeps every product within int64). */
#define ANA_RATE_LIMIT_MAX_BURST 1000000000LL
#define ANA_RATE_LIMIT_MAX_TEXT 96

/* The outcome of one charge. Times in nanoseconds from `now`. */
struct ana_rate_decision {
  bool allowed;
  int64_t limit;          /* the burst */
  int64_t remaining;      /* units left after this charge (>= 0) */
  int64_t reset_after_ns; /* until the budget is whole again */
  int64_t retry_after_ns; /* denied: until this cost would pass; -1 = never (cost > burst) */
};

/* What a rate-limit store implements. charge is all-or-nothing: when
 * allowed, cost units are taken; when denied, nothing is. Thread-safe. */
struct ana_rate_limiter_ops {
  /* key: NUL-terminated, any bytes; limit: never unlimited; cost >= 1;
   * now_ns: a monotonic clock the caller keeps. Returns 0 (out filled) or
   * a negative enum ana_err (the caller lets the call through). */
  int (*charge)(void *ctx, const char *key, const struct ana_rate_limit *limit, int64_t cost,
                int64_t now_ns, struct ana_rate_decision *out);
  void (*destroy)(void *ctx);
};

struct ana_rate_limiter {
  const struct ana_rate_limiter_ops *ops;
  void *ctx;
};

/* The GCRA step itself, on one key's state *tat_ns (theoretical arrival
 * time; 0 for a key never seen). Pure: updates *tat_ns only when allowed. */
void ana_rate_gcra(int64_t *tat_ns, const struct ana_rate_limit *limit, int64_t cost,
                   int64_t now_ns, struct ana_rate_decision *out);

/* The in-process store: n_shards (a power of two, 0 = 64) lock-striped
 * shards holding at most max_entries keys together; when a shard is full,
 * its idle keys (whose budget is whole again, so forgetting them changes
 * nothing) are dropped, else the one closest to whole. Returns 0 and fills
 * *out, or ANA_ERR_NOMEM. Free with ana_rate_limiter_destroy. */
int ana_rate_limiter_local_create(size_t max_entries, size_t n_shards,
                                  struct ana_rate_limiter *out);
/* Number of keys the in-process store holds now (tests). */
size_t ana_rate_limiter_local_size(const struct ana_rate_limiter *l);
void ana_rate_limiter_destroy(struct ana_rate_limiter *l);

static inline int ana_rate_limiter_charge(const struct ana_rate_limiter *l, const char *key,
                                          const struct ana_rate_limit *limit, int64_t cost,
                                          int64_t now_ns, struct ana_rate_decision *out) {
  return l->ops->charge(l->ctx, key, limit, cost, now_ns, out);
}

/* Parses one limit: "off", or "<rate>/<unit>" with unit s, m or h, then
 * optionally " burst <n>" (default: rate, one unit's worth). Examples:
 * "100/s", "1000/s burst 2000", "600/m burst 20", "off". Returns true and
 * fills *out, or false with why (a short reason) filled. */
bool ana_rate_limit_parse(const char *text, size_t len, struct ana_rate_limit *out, char *why,
                          size_t why_len);
/* Parses "name=LIMIT, name=LIMIT, ..." calling each (when not NULL) per
 * entry (name not NUL-terminated). Returns true, or false with why filled. */
bool ana_rate_limit_parse_list(const char *text,
                               bool (*each)(void *ctx, const char *name, size_t name_len,
                                            const struct ana_rate_limit *limit),
                               void *ctx, char *why, size_t why_len);
/* Writes a limit back as text ("100/s burst 200", "off"). */
void ana_rate_limit_format(const struct ana_rate_limit *limit, char *buf, size_t len);

#endif
