/* API keys for trackers, bots and SDKs: ana_<id>_<secret>, stored only as the
 * SHA-256 of the whole key, one account and one role each, revocable. The
 * admission pipeline calls ana_api_keys_verify per request; KeyService and
 * `analyticsd keys` manage them. Storage is a table of operations a store
 * backend implements (server/store/sqlite/api_key_store.c). */
#ifndef ANA_API_KEYS_H
#define ANA_API_KEYS_H

#include "ana_arena.h"
#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANA_API_KEY_PREFIX "ana_"
#define ANA_API_KEY_PREFIX_CHARS 4
#define ANA_API_KEY_ID_CHARS 12 /* base62: about 71 bits */
#define ANA_API_KEY_SECRET_BYTES 32
#define ANA_API_KEY_SECRET_CHARS 43 /* 32 bytes as a base62 number, zero-padded */
/* "ana_" id "_" secret, without the NUL: 60. */
#define ANA_API_KEY_CHARS                                                                          \
  (ANA_API_KEY_PREFIX_CHARS + ANA_API_KEY_ID_CHARS + 1 + ANA_API_KEY_SECRET_CHARS)
#define ANA_API_KEY_HASH_BYTES 32
#define ANA_API_KEY_NAME_MAX_CHARS 128

/* Defaults of struct ana_api_keys_options. */
#define ANA_API_KEYS_DEFAULT_CACHE_SLOTS 4096
#define ANA_API_KEYS_DEFAULT_CACHE_TTL_MS 1000
#define ANA_API_KEYS_DEFAULT_TOUCH_INTERVAL_MS 60000
#define ANA_API_KEYS_DEFAULT_RECOUNT_MS 1000

/* One stored key. Strings are borrowed (from the store during a callback,
 * from the caller otherwise). Times are Unix ms; 0 means never. */
struct ana_api_key_record {
  char key_id[ANA_API_KEY_ID_CHARS + 1];
  const char *account_id;
  const char *role; /* canonical: viewer, analyst, editor, admin, ingest */
  const char *name; /* "" when none */
  const char *created_by;
  const char *rate_limit; /* the key's own rate limit as text; "" (or NULL): its account's */
  uint8_t hash[ANA_API_KEY_HASH_BYTES]; /* SHA-256 of the whole key text */
  int64_t created_at_ms;
  int64_t last_used_at_ms;
  int64_t revoked_at_ms;
};

/* Receives one record; pointers are valid during the call. Non-zero stops. */
typedef int (*ana_api_key_record_fn)(void *ctx, const struct ana_api_key_record *r);

struct ana_local_db;

/* The key store role. Every operation is thread-safe and may block (point
 * reads and writes on the local database). */
#define ANA_API_KEY_STORE_VERSION 1

struct ana_api_key_store_ops {
  int version; /* ANA_API_KEY_STORE_VERSION */
  const char *name;
  /* Opens the store on the local database. Returns NULL with err filled. */
  void *(*open)(struct ana_local_db *db, struct ana_error *err);
  /* Stores a new key; ALREADY_EXISTS (ANA_ERR_EXISTS) when the id is taken.
   * Durable when it returns. */
  int (*insert)(void *store, const struct ana_api_key_record *r, struct ana_error *err);
  /* Calls fn once with the key of that id (any account), or returns
   * ANA_ERR_NOT_FOUND. */
  int (*get)(void *store, const char *key_id, ana_api_key_record_fn fn, void *ctx,
             struct ana_error *err);
  /* The account's keys with id > after (all when after is NULL or ""), by
   * id, at most limit. */
  int (*list)(void *store, const char *account_id, const char *after, int limit,
              ana_api_key_record_fn fn, void *ctx, struct ana_error *err);
  /* Sets revoked_at to at_ms unless already set. account_id NULL: any
   * account. ANA_ERR_NOT_FOUND when no such key (in that account). */
  int (*revoke)(void *store, const char *account_id, const char *key_id, int64_t at_ms,
                struct ana_error *err);
  /* Raises last_used_at to at_ms. A missing key is not an error. */
  int (*touch)(void *store, const char *key_id, int64_t at_ms, struct ana_error *err);
  /* Counts the keys not revoked (every account) into *out. */
  int (*count_active)(void *store, int64_t *out, struct ana_error *err);
  /* Closes; NULL does nothing. */
  void (*close)(void *store);
};

/* --- the key text (pure functions, no state) --- */

/* Why a presented key was refused: for the server log only. The caller's
 * reply says "invalid API key" whatever the reason. */
enum ana_api_key_reason {
  ANA_API_KEY_OK = 0,
  ANA_API_KEY_BAD_PREFIX,  /* does not start with ana_ */
  ANA_API_KEY_BAD_LENGTH,  /* not ANA_API_KEY_CHARS long, or a part of the wrong length */
  ANA_API_KEY_BAD_CHARS,   /* a character outside base62 in the id or the secret */
  ANA_API_KEY_UNKNOWN_ID,  /* no key with that id */
  ANA_API_KEY_BAD_SECRET,  /* the id exists, the hash differs */
  ANA_API_KEY_REVOKED,     /* the key was revoked */
  ANA_API_KEY_UNAVAILABLE, /* the store failed */
};

/* A short text for the reason ("revoked"). */
const char *ana_api_key_reason_text(enum ana_api_key_reason r);

/* Checks the shape of key (len bytes, need not be NUL-terminated) and copies
 * its id into id_out. Returns ANA_API_KEY_OK or the reason. */
enum ana_api_key_reason ana_api_key_parse(const char *key, size_t len,
                                          char id_out[ANA_API_KEY_ID_CHARS + 1]);

/* Writes "ana_<id>_<secret as base62>" (ANA_API_KEY_CHARS + NUL) into out.
 * id must be ANA_API_KEY_ID_CHARS base62 characters. */
void ana_api_key_format(const char *id, const uint8_t secret[ANA_API_KEY_SECRET_BYTES],
                        char out[ANA_API_KEY_CHARS + 1]);

/* SHA-256 of the key text. */
void ana_api_key_hash(const char *key, size_t len, uint8_t out[ANA_API_KEY_HASH_BYTES]);

/* The canonical role for a role name ("reader" -> "viewer"), or NULL when
 * role is not one. The result has static storage. */
const char *ana_api_key_role(const char *role);

/* The accepted role names, for messages: "viewer, analyst, editor, admin,
 * ingest (reader = viewer)". */
extern const char ana_api_key_roles_text[];

/* Whether s is a well-formed key id. */
bool ana_api_key_id_valid(const char *s);

/* --- the key registry: store, cache, last-use writer --- */

typedef int64_t (*ana_api_keys_clock_fn)(void *ctx); /* Unix ms */

struct ana_api_keys_options {
  const struct ana_api_key_store_ops *ops; /* borrowed; must outlive the registry */
  void *store;                             /* opened by ops->open; closed by the caller */
  size_t cache_slots;                      /* direct-mapped cache of keys by id; 0 disables it */
  int cache_ttl_ms;                        /* how long a cached key (or unknown id) is trusted */
  int touch_interval_ms;                   /* lastUsedAt is written at most once per this per key */
  bool touch_thread; /* false: lastUsedAt is written only by ana_api_keys_flush */
  /* How often the touch thread re-reads the count of keys not revoked (so
   * that keys created or revoked by another process are seen); without the
   * thread only ana_api_keys_recount reads it. */
  int recount_ms;
  ana_api_keys_clock_fn clock; /* NULL: the real-time clock */
  void *clock_ctx;
};

/* Fills o with the defaults above (no store, a touch thread). */
void ana_api_keys_options_init(struct ana_api_keys_options *o);

struct ana_api_keys;

/* Creates the registry (starting the last-use writer thread when asked).
 * Returns NULL with err filled. */
struct ana_api_keys *ana_api_keys_create(const struct ana_api_keys_options *o,
                                         struct ana_error *err);
/* Writes pending last-use times, stops the thread, frees. NULL does
 * nothing. */
void ana_api_keys_destroy(struct ana_api_keys *k);

/* Longest rate limit text a key stores. */
#define ANA_API_KEY_RATE_LIMIT_MAX_CHARS 48

/* Makes a new key for account with role (any accepted name; stored
 * canonical), name (NULL = ""), rate_limit (NULL or "" = none; its syntax is
 * the caller's to check) and created_by (borrowed). Writes the full
 * key into key_out (shown once: never stored) and fills *rec (strings
 * borrowed from the arguments and static storage). Errors: INVALID_ARGUMENT
 * naming role or name; store errors. Blocks. */
int ana_api_keys_issue(struct ana_api_keys *k, const char *account_id, const char *role,
                       const char *name, const char *rate_limit, const char *created_by,
                       char key_out[ANA_API_KEY_CHARS + 1], struct ana_api_key_record *rec,
                       struct ana_error *err);

/* Who a verified key authenticates; strings live in the arena. */
struct ana_api_key_principal {
  const char *key_id;
  const char *account_id;
  const char *role;
  const char *rate_limit; /* the key's own limit as text, "" when none */
};

/* Verifies a presented key (len bytes). Returns 0 with *out filled, or
 * ANA_ERR_INVALID with err = UNAUTHENTICATED "invalid API key" (UNAVAILABLE
 * when the store failed) and *why = the precise reason (may be NULL).
 * Compares hashes in constant time. A cached key is trusted for
 * cache_ttl_ms; a key revoked through this registry stops at once. Queues
 * the last-use time; never writes on the caller's thread. May block on a
 * cache miss (one point read). */
int ana_api_keys_verify(struct ana_api_keys *k, const char *key, size_t len,
                        struct ana_arena *arena, struct ana_api_key_principal *out,
                        enum ana_api_key_reason *why, struct ana_error *err);

/* Calls fn with the key of that id if it belongs to account_id (NULL: any);
 * NOT_FOUND otherwise (malformed ids included). Blocks. */
int ana_api_keys_get(struct ana_api_keys *k, const char *account_id, const char *key_id,
                     ana_api_key_record_fn fn, void *ctx, struct ana_error *err);

/* The account's keys by id after `after`, at most limit. Blocks. */
int ana_api_keys_list(struct ana_api_keys *k, const char *account_id, const char *after, int limit,
                      ana_api_key_record_fn fn, void *ctx, struct ana_error *err);

/* Revokes the key (account_id NULL: whatever its account) and drops it from
 * the cache: it stops authenticating at once here. NOT_FOUND when absent.
 * Blocks. */
int ana_api_keys_revoke(struct ana_api_keys *k, const char *account_id, const char *key_id,
                        struct ana_error *err);

/* Writes the queued last-use times now. Blocks. */
void ana_api_keys_flush(struct ana_api_keys *k);

/* The keys not revoked, every account, as last counted: at creation, after
 * each issue and revoke through this registry, and every recount_ms by the
 * touch thread. Lock-free: the authenticate stage reads it per request. */
int64_t ana_api_keys_active(const struct ana_api_keys *k);

/* Counts the keys not revoked now. Returns 0, or a store error (the last
 * count stays). Blocks (one read). */
int ana_api_keys_recount(struct ana_api_keys *k, struct ana_error *err);

#endif
