/* Envelope encryption: per-account data keys (AES-256-GCM) wrapped by a key
 * derived from the master key, kept wrapped by the store's data key role;
 * sealed values name the key that sealed them, so keys rotate and old
 * values stay readable; keyed blind indexes (HMAC-SHA256) for equality. */
#ifndef ANA_CRYPTO_H
#define ANA_CRYPTO_H

#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_local_db;

/* A sealed value as text: this prefix, then standard base64 of
 * version (1) | key id (4, big-endian) | nonce (12) | ciphertext | tag (16). */
#define ANA_CRYPTO_SEALED_PREFIX "ana:enc:"
/* A blind index as text: this prefix, then 22 base64url characters (the
 * first 16 bytes of the HMAC). */
#define ANA_CRYPTO_BLIND_PREFIX "ana:bi:"
#define ANA_CRYPTO_BLIND_CHARS (sizeof ANA_CRYPTO_BLIND_PREFIX - 1 + 22)
/* What a principal without pii:read sees in place of an encrypted value. */
#define ANA_CRYPTO_MASK "***"

/* One wrapped data key as stored (nonce | wrapped key | tag, 60 bytes). */
struct ana_data_key_record {
  const char *account_id;
  uint32_t key_id; /* 1, 2, ...: the highest is the account's current key */
  const uint8_t *wrapped;
  size_t wrapped_len;
  int64_t created_at_ms;
};

/* Called per record; non-zero stops. */
typedef int (*ana_data_key_fn)(void *ctx, const struct ana_data_key_record *r);

/* Called by the rewrap operation per stored key: writes its new wrapping
 * (at most cap bytes) to out and its length to *out_len (0: store none, for
 * the key root only). Returns 0 or a negative error with err filled, which
 * rolls the whole rewrap back. */
typedef int (*ana_data_key_rewrap_fn)(void *ctx, const struct ana_data_key_record *r, uint8_t *out,
                                      size_t cap, size_t *out_len, struct ana_error *err);

/* The data key store role, implemented by server/store (sqlite: tables
 * data_keys and key_root). Every operation is thread-safe. */
struct ana_data_key_store_ops {
  const char *name;
  void *(*open)(struct ana_local_db *db, struct ana_error *err);
  void (*close)(void *store);
  /* Inserts r; ANA_ERR_EXISTS when (account, key id) is taken. */
  int (*insert)(void *store, const struct ana_data_key_record *r, struct ana_error *err);
  /* Every key of the account, ascending key id. */
  int (*list)(void *store, const char *account_id, ana_data_key_fn fn, void *ctx,
              struct ana_error *err);
  /* The accounts that have keys, each once (fn gets account_id only). */
  int (*accounts)(void *store, ana_data_key_fn fn, void *ctx, struct ana_error *err);
  /* The wrapped key root (the secret blind index keys derive from), *len
   * bytes into out: 1 when stored, 0 when none is, or a negative error. */
  int (*get_root)(void *store, uint8_t *out, size_t cap, size_t *len, struct ana_error *err);
  /* In one transaction holding the write lock: fn on every data key, then
   * on the key root (account_id "", key_id 0, wrapped_len 0 when none is
   * stored); each result replaces what was stored. An error rolls it all
   * back. */
  int (*rewrap)(void *store, ana_data_key_rewrap_fn fn, void *ctx, struct ana_error *err);
};

struct ana_crypto;

/* The longest master key (ENCRYPTION_KEY_FILE) in bytes. */
#define ANA_CRYPTO_MASTER_MAX 4096

struct ana_crypto_options {
  const uint8_t *master_key; /* copied; the wrapping and index keys are derived from it */
  size_t master_key_len;     /* at least 16 */
  const struct ana_data_key_store_ops *ops;
  void *store; /* borrowed */
  /* How long a cached account's keys are trusted before the store is read
   * again (a rotation by another process is seen after at most this). */
  int refresh_ms;
};

/* Returns the context, or NULL with err filled. */
struct ana_crypto *ana_crypto_create(const struct ana_crypto_options *o, struct ana_error *err);
void ana_crypto_destroy(struct ana_crypto *c);

/* Seals n bytes of pt with the account's current data key (made on first
 * use), bound to (account, context): opening it under another account or
 * context fails. *out is a NUL-terminated ANA_CRYPTO_SEALED_PREFIX text the
 * caller frees with ana_free. Returns 0 or a negative error. Thread-safe. */
int ana_crypto_seal(struct ana_crypto *c, const char *account_id, const char *context,
                    const void *pt, size_t n, char **out, struct ana_error *err);

/* One account's sealing keys (the current data key and the blind index key),
 * copied once for the several fields of an event: seals and blind indexes
 * through it take no lock and allocate only their result. Initialised by
 * ana_crypto_sealer_init, wiped by ana_crypto_sealer_fini. */
struct ana_crypto_sealer {
  const char *account_id; /* borrowed */
  uint32_t key_id;
  uint8_t key[32];
  uint8_t blind_key[32];
};

/* Fills s with the account's current keys (made on first use). Returns 0
 * or a negative error with err filled. */
int ana_crypto_sealer_init(struct ana_crypto *c, const char *account_id,
                           struct ana_crypto_sealer *s, struct ana_error *err);
void ana_crypto_sealer_fini(struct ana_crypto_sealer *s);

struct ana_arena;

/* ana_crypto_seal through s, the text in arena. NULL with err filled. */
char *ana_crypto_sealer_seal(const struct ana_crypto_sealer *s, const char *context, const void *pt,
                             size_t n, struct ana_arena *arena, struct ana_error *err);

/* ana_crypto_blind_index through s (out: ANA_CRYPTO_BLIND_CHARS + 1 bytes).
 * Returns 0 or -1. */
int ana_crypto_sealer_blind(const struct ana_crypto_sealer *s, const char *context,
                            const void *value, size_t n, char *out);

/* Opens a sealed text: *out (NUL-terminated, caller frees with ana_free),
 * *n_out its length. A value altered, sealed under another account or
 * context, or by a key not in the store, is an error (DATA_LOSS), never
 * garbage. Thread-safe. */
int ana_crypto_open(struct ana_crypto *c, const char *account_id, const char *context,
                    const char *sealed, char **out, size_t *n_out, struct ana_error *err);

/* True when s is a sealed text (by its prefix). */
bool ana_crypto_is_sealed(const char *s);

/* The key id a sealed text names, or 0 when it is not one. */
uint32_t ana_crypto_sealed_key_id(const char *sealed);

/* The blind index of (account, context, value): the same inputs give the
 * same text, keyed per account by a key derived from the master key (not
 * rotated with the data keys, so filters keep matching). out receives
 * ANA_CRYPTO_BLIND_CHARS + 1 bytes. Returns 0 or -1. */
int ana_crypto_blind_index(struct ana_crypto *c, const char *account_id, const char *context,
                           const void *value, size_t n, char *out);

/* Makes a new data key the account's current one; values sealed before stay
 * readable. *key_id receives its id. Returns 0 or a negative error. */
int ana_crypto_rotate(struct ana_crypto *c, const char *account_id, uint32_t *key_id,
                      struct ana_error *err);

/* Calls fn on each of the account's data keys as stored (wrapped), ascending
 * key id. Returns 0 or a negative error. */
int ana_crypto_list_keys(struct ana_crypto *c, const char *account_id, ana_data_key_fn fn,
                         void *ctx, struct ana_error *err);

/* The account's current key id (0 when it has none yet). */
uint32_t ana_crypto_current_key_id(struct ana_crypto *c, const char *account_id);

/* Checks that the store's data keys open with this master key (the first
 * account's are read): 0, or DATA_LOSS naming the cause with err filled. */
int ana_crypto_check(struct ana_crypto *c, struct ana_error *err);

/* What ana_crypto_rewrap_master did. */
struct ana_crypto_rewrap_result {
  size_t rewrapped;  /* data keys that were wrapped by the old master key */
  size_t already;    /* keys (and the key root) wrapped by the new one already */
  bool root_written; /* the key root was stored (or rewrapped) under the new key */
};

/* Changes the master key of the store: in one transaction every data key
 * wrapped by old_master is rewrapped by new_master (one already wrapped by
 * new_master is kept: running it again is harmless), and the key root (the
 * secret blind index keys derive from) is stored wrapped by new_master, so
 * blind indexes made before keep matching. Afterwards old_master is not
 * needed. A key that opens with neither is DATA_LOSS and nothing changes.
 * Call with no process using the store under the old key. Returns 0 or a
 * negative error with err filled. */
int ana_crypto_rewrap_master(const uint8_t *old_master, size_t old_len, const uint8_t *new_master,
                             size_t new_len, const struct ana_data_key_store_ops *ops, void *store,
                             struct ana_crypto_rewrap_result *res, struct ana_error *err);

/* Files sealed at rest (report files), in chunks of this many clear bytes. */
#define ANA_CRYPTO_FILE_CHUNK (64 * 1024)

/* Seals the file at in_path into out_path (created 0640 or truncated, then
 * fsynced) with the account's current data key, bound to (account, context)
 * and each chunk to its place: a file altered, cut or moved to another
 * account does not open. Memory: three chunks. Returns 0, or a negative
 * error (out_path removed). Thread-safe. */
int ana_crypto_file_seal(struct ana_crypto *c, const char *account_id, const char *context,
                         const char *in_path, const char *out_path, struct ana_error *err);

/* Whether the open file fd starts as a sealed file does. */
bool ana_crypto_file_is_sealed(int fd);

/* A sealed file open for reading its clear bytes by range (one chunk of it
 * in memory at a time). */
struct ana_crypto_file;

/* Reads the header of the sealed file fd (borrowed: it must stay open until
 * ana_crypto_file_close) and takes its key. NULL with err filled (DATA_LOSS
 * when it is not a sealed file or its key is not the account's). */
struct ana_crypto_file *ana_crypto_file_open(struct ana_crypto *c, const char *account_id,
                                             const char *context, int fd, struct ana_error *err);
/* Its clear size in bytes. */
int64_t ana_crypto_file_size(const struct ana_crypto_file *f);
/* Up to n clear bytes from off into buf: how many (fewer only at the end),
 * or a negative error (DATA_LOSS when a chunk does not authenticate). */
int64_t ana_crypto_file_pread(struct ana_crypto_file *f, void *buf, size_t n, int64_t off,
                              struct ana_error *err);
void ana_crypto_file_close(struct ana_crypto_file *f);

#endif
