/* Envelope encryption with AES-256-GCM (OpenSSL EVP): a cache of each
 * account's unwrapped data keys over the data key store, sealing, opening,
 * rotation and blind indexes. */
#include "ana_crypto.h"
#include "crypto_internal.h"

#include "ana_alloc.h"
#include "ana_arena.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define VERSION 1
#define HEADER_LEN (1 + 4 + NONCE_LEN) /* version, key id, nonce */
#define WRAPPED_LEN (NONCE_LEN + KEY_LEN + TAG_LEN)
#define BUCKETS 256
#define ACCOUNT_MAX 256
/* Decoded sealed values above this are refused before base64 decoding. */
#define SEALED_MAX (16 * 1024 * 1024)

struct data_key {
  uint32_t id;
  uint8_t key[KEY_LEN];
};

/* One account's keys (immutable once published; replaced whole on reload). */
struct account_keys {
  char *account_id;
  struct data_key *keys; /* ascending id; the last is current */
  size_t n;
  uint8_t blind_key[KEY_LEN];
  int64_t loaded_at_ms;
  struct account_keys *next; /* bucket chain */
};

struct ana_crypto {
  /* The HKDF pseudorandom key the blind index keys are expanded from: the
   * extract of the master key, or the one stored wrapped in the key root
   * (the first master key's, kept across master key changes). */
  uint8_t root[KEY_LEN];
  uint8_t kek[KEY_LEN];
  const struct ana_data_key_store_ops *ops;
  void *store;
  int refresh_ms;
  pthread_rwlock_t lock; /* guards buckets */
  struct account_keys *buckets[BUCKETS];
  pthread_mutex_t load_mu; /* one loader at a time (serialises key creation) */
};

/* Each thread's cipher and MAC contexts, made once (OpenSSL 3 makes a
 * context and fetches its algorithm anew on every one-shot call: that was
 * most of the cost of a seal). Freed when the thread ends. */
struct thread_ctx {
  EVP_CIPHER_CTX *enc, *dec; /* AES-256-GCM, initialised without a key */
  EVP_MAC_CTX *mac;          /* HMAC-SHA256 */
  /* Nonces: 8 random bytes drawn when the thread starts sealing (and again
   * every 2^32 seals), then a 4-byte counter: NIST SP 800-38D's
   * deterministic construction, unique per thread without a RAND_bytes call
   * per seal. Two threads (or processes) repeat a nonce only if their random
   * parts collide (2^-64 per pair). */
  uint8_t nonce_prefix[8];
  uint32_t nonce_counter;
  bool nonce_ready;
  /* The key enc was last set up with: the next seal under the same key
   * (most of them) sets only the nonce, keeping the key schedule. */
  uint8_t enc_key[KEY_LEN];
  bool enc_keyed;
  /* The same for mac: HMAC keeps its padded key states between inits. */
  uint8_t mac_key[KEY_LEN];
  bool mac_keyed;
};

static pthread_once_t thread_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_key;
static EVP_CIPHER *aes_gcm;
static EVP_MAC *hmac;

static void thread_ctx_free(void *p) {
  struct thread_ctx *t = p;
  OPENSSL_cleanse(t->enc_key, sizeof t->enc_key);
  OPENSSL_cleanse(t->mac_key, sizeof t->mac_key);
  EVP_CIPHER_CTX_free(t->enc);
  EVP_CIPHER_CTX_free(t->dec);
  EVP_MAC_CTX_free(t->mac);
  ana_free(t);
}

static void thread_init(void) {
  pthread_key_create(&thread_key, thread_ctx_free);
  aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
  hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* The calling thread's contexts; NULL when out of memory. */
static struct thread_ctx *thread_ctx(void) {
  pthread_once(&thread_once, thread_init);
  struct thread_ctx *t = pthread_getspecific(thread_key);
  if (t)
    return t;
  if (!aes_gcm || !hmac || !(t = ana_calloc(1, sizeof *t)))
    return NULL;
  t->enc = EVP_CIPHER_CTX_new();
  t->dec = EVP_CIPHER_CTX_new();
  t->mac = EVP_MAC_CTX_new(hmac);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                         OSSL_PARAM_construct_end()};
  if (!t->enc || !t->dec || !t->mac || EVP_MAC_CTX_set_params(t->mac, params) != 1 ||
      EVP_EncryptInit_ex2(t->enc, aes_gcm, NULL, NULL, NULL) != 1 ||
      EVP_DecryptInit_ex2(t->dec, aes_gcm, NULL, NULL, NULL) != 1 ||
      pthread_setspecific(thread_key, t) != 0) {
    thread_ctx_free(t);
    return NULL;
  }
  return t;
}

/* The next nonce of the calling thread; -1 without randomness. */
static int next_nonce(uint8_t nonce[NONCE_LEN]) {
  struct thread_ctx *t = thread_ctx();
  if (!t)
    return -1;
  if (!t->nonce_ready || t->nonce_counter == UINT32_MAX) {
    if (RAND_bytes(t->nonce_prefix, sizeof t->nonce_prefix) != 1)
      return -1;
    t->nonce_counter = 0;
    t->nonce_ready = true;
  }
  uint32_t n = ++t->nonce_counter;
  memcpy(nonce, t->nonce_prefix, 8);
  nonce[8] = (uint8_t)(n >> 24);
  nonce[9] = (uint8_t)(n >> 16);
  nonce[10] = (uint8_t)(n >> 8);
  nonce[11] = (uint8_t)n;
  return 0;
}

/* HKDF-SHA256 (salt "analyticsd") in mode: extract and expand (key the
 * master, info given), extract only (out: the pseudorandom key) or expand
 * only (key a pseudorandom key). Extract then expand equals both at once. */
static int hkdf_mode(int mode, const uint8_t *key, size_t key_len, const char *info,
                     size_t info_len, uint8_t out[KEY_LEN]) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
  size_t len = KEY_LEN;
  int rc = -1;
  if (ctx && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_CTX_set_hkdf_mode(ctx, mode) > 0 &&
      EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) > 0 &&
      EVP_PKEY_CTX_set1_hkdf_salt(ctx, (const unsigned char *)"analyticsd", 10) > 0 &&
      EVP_PKEY_CTX_set1_hkdf_key(ctx, key, (int)key_len) > 0 &&
      (!info_len ||
       EVP_PKEY_CTX_add1_hkdf_info(ctx, (const unsigned char *)info, (int)info_len) > 0) &&
      EVP_PKEY_derive(ctx, out, &len) > 0 && len == KEY_LEN)
    rc = 0;
  EVP_PKEY_CTX_free(ctx);
  return rc;
}

static int hkdf(const uint8_t *master, size_t master_len, const char *info, size_t info_len,
                uint8_t out[KEY_LEN]) {
  return hkdf_mode(EVP_PKEY_HKDEF_MODE_EXTRACT_AND_EXPAND, master, master_len, info, info_len, out);
}

static uint32_t hash_of(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

/* AES-256-GCM over pt with aad (two parts); out receives n + TAG_LEN
 * bytes (ciphertext then tag). Returns 0 or -1. */
static int gcm_seal(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const void *aad1,
                    size_t aad1_len, const void *aad2, size_t aad2_len, const void *pt, size_t n,
                    uint8_t *out) {
  struct thread_ctx *t = thread_ctx();
  EVP_CIPHER_CTX *ctx = t ? t->enc : NULL;
  int len = 0, rc = -1;
  if (!ctx)
    goto out;
  bool same = t->enc_keyed && CRYPTO_memcmp(t->enc_key, key, KEY_LEN) == 0;
  if (EVP_EncryptInit_ex2(ctx, NULL, same ? NULL : key, nonce, NULL) != 1) {
    t->enc_keyed = false;
    goto out;
  }
  if (!same) {
    memcpy(t->enc_key, key, KEY_LEN);
    t->enc_keyed = true;
  }
  if (aad1_len && EVP_EncryptUpdate(ctx, NULL, &len, aad1, (int)aad1_len) != 1)
    goto out;
  if (aad2_len && EVP_EncryptUpdate(ctx, NULL, &len, aad2, (int)aad2_len) != 1)
    goto out;
  if (n && EVP_EncryptUpdate(ctx, out, &len, pt, (int)n) != 1)
    goto out;
  if (EVP_EncryptFinal_ex(ctx, out + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + n) != 1)
    goto out;
  rc = 0;
out:
  return rc;
}

/* The inverse of gcm_seal: in holds n + TAG_LEN bytes. Returns 0, or -1
 * when the tag does not verify. */
static int gcm_open(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const void *aad1,
                    size_t aad1_len, const void *aad2, size_t aad2_len, const uint8_t *in, size_t n,
                    uint8_t *out) {
  struct thread_ctx *t = thread_ctx();
  EVP_CIPHER_CTX *ctx = t ? t->dec : NULL;
  int len = 0, rc = -1;
  if (!ctx || EVP_DecryptInit_ex2(ctx, NULL, key, nonce, NULL) != 1)
    goto out;
  if (aad1_len && EVP_DecryptUpdate(ctx, NULL, &len, aad1, (int)aad1_len) != 1)
    goto out;
  if (aad2_len && EVP_DecryptUpdate(ctx, NULL, &len, aad2, (int)aad2_len) != 1)
    goto out;
  if (n && EVP_DecryptUpdate(ctx, out, &len, in, (int)n) != 1)
    goto out;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(in + n)) != 1 ||
      EVP_DecryptFinal_ex(ctx, out + len, &len) != 1)
    goto out;
  rc = 0;
out:
  return rc;
}

/* The wrap's associated data: account, NUL, key id (big-endian). */
static size_t wrap_aad(const char *account, uint32_t id, uint8_t *aad) {
  size_t n = strlen(account);
  memcpy(aad, account, n);
  aad[n] = 0;
  aad[n + 1] = (uint8_t)(id >> 24);
  aad[n + 2] = (uint8_t)(id >> 16);
  aad[n + 3] = (uint8_t)(id >> 8);
  aad[n + 4] = (uint8_t)id;
  return n + 5;
}

static void free_keys(struct account_keys *a) {
  if (!a)
    return;
  if (a->keys)
    OPENSSL_cleanse(a->keys, a->n * sizeof *a->keys);
  OPENSSL_cleanse(a->blind_key, sizeof a->blind_key);
  ana_free(a->keys);
  ana_free(a->account_id);
  ana_free(a);
}

struct loading {
  struct ana_crypto *c;
  struct account_keys *a;
  size_t cap;
  int rc;
  struct ana_error *err;
};

static int unwrap_one(void *ctx, const struct ana_data_key_record *r) {
  struct loading *l = ctx;
  uint8_t aad[ACCOUNT_MAX + 8];
  if (r->wrapped_len != WRAPPED_LEN) {
    l->rc = ana_error_set(l->err, ANA_STATUS_DATA_LOSS,
                          "data key %u of account %s is damaged (%zu bytes stored)", r->key_id,
                          r->account_id, r->wrapped_len);
    return 1;
  }
  if (l->a->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    struct data_key *k = ana_calloc(cap, sizeof *k);
    if (!k) {
      l->rc = ana_error_set(l->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return 1;
    }
    if (l->a->n)
      memcpy(k, l->a->keys, l->a->n * sizeof *k);
    if (l->a->keys)
      OPENSSL_cleanse(l->a->keys, l->a->n * sizeof *k);
    ana_free(l->a->keys);
    l->a->keys = k;
    l->cap = cap;
  }
  struct data_key *k = &l->a->keys[l->a->n];
  size_t aad_len = wrap_aad(r->account_id, r->key_id, aad);
  if (gcm_open(l->c->kek, r->wrapped, aad, aad_len, NULL, 0, r->wrapped + NONCE_LEN, KEY_LEN,
               k->key) < 0) {
    l->rc = ana_error_set(l->err, ANA_STATUS_DATA_LOSS,
                          "data key %u of account %s does not open with this master key "
                          "(was ENCRYPTION_KEY_FILE changed? give the previous key in "
                          "ENCRYPTION_PREVIOUS_KEY_FILE once)",
                          r->key_id, r->account_id);
    return 1;
  }
  k->id = r->key_id;
  l->a->n++;
  return 0;
}

static int add_key(struct ana_crypto *c, const char *account, uint32_t id, struct ana_error *err) {
  uint8_t key[KEY_LEN], wrapped[WRAPPED_LEN], aad[ACCOUNT_MAX + 8];
  if (RAND_bytes(key, sizeof key) != 1 || RAND_bytes(wrapped, NONCE_LEN) != 1)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "no randomness for a data key");
  size_t aad_len = wrap_aad(account, id, aad);
  int rc = gcm_seal(c->kek, wrapped, aad, aad_len, NULL, 0, key, KEY_LEN, wrapped + NONCE_LEN);
  OPENSSL_cleanse(key, sizeof key);
  if (rc < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot wrap a data key");
  struct ana_data_key_record r = {account, id, wrapped, sizeof wrapped, ana_clock_wall_ms()};
  return c->ops->insert(c->store, &r, err);
}

/* Reads the account's keys from the store (making key 1 when it has none,
 * or key current + 1 when rotate), publishes them and returns them under
 * the read lock. Call with load_mu held. */
static struct account_keys *load(struct ana_crypto *c, const char *account, bool rotate,
                                 struct ana_error *err) {
  struct account_keys *a = ana_calloc(1, sizeof *a);
  if (!a || !(a->account_id = ana_strdup(account))) {
    free_keys(a);
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  char info[ACCOUNT_MAX + 32];
  int info_len = snprintf(info, sizeof info, "blind-index-v1:%s", account);
  if (hkdf_mode(EVP_PKEY_HKDEF_MODE_EXPAND_ONLY, c->root, KEY_LEN, info, (size_t)info_len,
                a->blind_key) < 0) {
    free_keys(a);
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot derive the blind index key");
    return NULL;
  }
  for (int attempt = 0; attempt < 3; attempt++) {
    struct loading l = {c, a, 0, 0, err};
    if (a->keys)
      OPENSSL_cleanse(a->keys, a->n * sizeof *a->keys);
    ana_free(a->keys);
    a->keys = NULL;
    a->n = 0;
    int rc = c->ops->list(c->store, account, unwrap_one, &l, err);
    if (rc < 0 || l.rc < 0) {
      free_keys(a);
      return NULL;
    }
    if (a->n && !rotate)
      break;
    uint32_t next = a->n ? a->keys[a->n - 1].id + 1 : 1;
    rc = add_key(c, account, next, err);
    if (rc == ANA_ERR_EXISTS) /* another process made it: read again */
      continue;
    if (rc < 0) {
      free_keys(a);
      return NULL;
    }
    rotate = false;
  }
  if (!a->n || rotate) {
    free_keys(a);
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "cannot settle the data keys of account %s",
                  account);
    return NULL;
  }
  a->loaded_at_ms = ana_clock_mono_ms();
  uint32_t b = hash_of(account) % BUCKETS;
  pthread_rwlock_wrlock(&c->lock);
  struct account_keys **p = &c->buckets[b], *old = NULL;
  for (; *p; p = &(*p)->next)
    if (strcmp((*p)->account_id, account) == 0) {
      old = *p;
      *p = old->next;
      break;
    }
  a->next = c->buckets[b];
  c->buckets[b] = a;
  pthread_rwlock_unlock(&c->lock);
  pthread_rwlock_rdlock(&c->lock);
  free_keys(old); /* no reader holds it: readers copy under the lock */
  return a;
}

static struct account_keys *find(struct ana_crypto *c, const char *account) {
  for (struct account_keys *a = c->buckets[hash_of(account) % BUCKETS]; a; a = a->next)
    if (strcmp(a->account_id, account) == 0)
      return a;
  return NULL;
}

/* Returns the account's keys with the read lock held (the caller unlocks),
 * reading them from the store when not cached, stale, or lacking key id
 * want (0: any). NULL (unlocked) with err filled on failure. */
static struct account_keys *acquire(struct ana_crypto *c, const char *account, uint32_t want,
                                    struct ana_error *err) {
  if (!account || strlen(account) >= ACCOUNT_MAX) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "account id: is missing or too long");
    return NULL;
  }
  pthread_rwlock_rdlock(&c->lock);
  struct account_keys *a = find(c, account);
  if (a && ana_clock_mono_ms() - a->loaded_at_ms < c->refresh_ms &&
      (!want || want <= a->keys[a->n - 1].id))
    return a;
  pthread_rwlock_unlock(&c->lock);
  pthread_mutex_lock(&c->load_mu);
  /* Another thread may have loaded it meanwhile. */
  pthread_rwlock_rdlock(&c->lock);
  a = find(c, account);
  if (a && ana_clock_mono_ms() - a->loaded_at_ms < c->refresh_ms &&
      (!want || want <= a->keys[a->n - 1].id)) {
    pthread_mutex_unlock(&c->load_mu);
    return a;
  }
  pthread_rwlock_unlock(&c->lock);
  a = load(c, account, false, err);
  pthread_mutex_unlock(&c->load_mu);
  return a;
}

/* The key root's wrapping: like a data key's, as account "" key 0 (no
 * data key has either). */
static int wrap_with(const uint8_t kek[KEY_LEN], const char *account, uint32_t id,
                     const uint8_t key[KEY_LEN], uint8_t wrapped[WRAPPED_LEN]) {
  uint8_t aad[ACCOUNT_MAX + 8];
  if (RAND_bytes(wrapped, NONCE_LEN) != 1)
    return -1;
  size_t aad_len = wrap_aad(account, id, aad);
  return gcm_seal(kek, wrapped, aad, aad_len, NULL, 0, key, KEY_LEN, wrapped + NONCE_LEN);
}

static int unwrap_with(const uint8_t kek[KEY_LEN], const struct ana_data_key_record *r,
                       uint8_t key[KEY_LEN]) {
  uint8_t aad[ACCOUNT_MAX + 8];
  if (r->wrapped_len != WRAPPED_LEN || strlen(r->account_id) >= ACCOUNT_MAX)
    return -1;
  size_t aad_len = wrap_aad(r->account_id, r->key_id, aad);
  return gcm_open(kek, r->wrapped, aad, aad_len, NULL, 0, r->wrapped + NONCE_LEN, KEY_LEN, key);
}

/* Sets c->root: the stored key root unwrapped, else the master's extract. */
static int load_root(struct ana_crypto *c, const uint8_t *master, size_t master_len,
                     struct ana_error *err) {
  uint8_t wrapped[WRAPPED_LEN + 1];
  size_t len = 0;
  int found = c->ops && c->ops->get_root
                  ? c->ops->get_root(c->store, wrapped, sizeof wrapped, &len, err)
                  : 0;
  if (found < 0)
    return found;
  if (!found)
    return hkdf_mode(EVP_PKEY_HKDEF_MODE_EXTRACT_ONLY, master, master_len, NULL, 0, c->root) < 0
               ? ana_error_set(err, ANA_STATUS_INTERNAL, "cannot derive the key root")
               : 0;
  struct ana_data_key_record r = {"", 0, wrapped, len, 0};
  if (unwrap_with(c->kek, &r, c->root) < 0)
    return ana_error_set(err, ANA_STATUS_DATA_LOSS,
                         "the stored key root does not open with this master key (was "
                         "ENCRYPTION_KEY_FILE changed? give the previous key in "
                         "ENCRYPTION_PREVIOUS_KEY_FILE once)");
  return 0;
}

struct ana_crypto *ana_crypto_create(const struct ana_crypto_options *o, struct ana_error *err) {
  if (!o->master_key || o->master_key_len < 16 || o->master_key_len > ANA_CRYPTO_MASTER_MAX) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "ENCRYPTION_KEY_FILE: a master key needs 16 to 4096 bytes");
    return NULL;
  }
  struct ana_crypto *c = ana_calloc(1, sizeof *c);
  if (!c) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  c->ops = o->ops;
  c->store = o->store;
  c->refresh_ms = o->refresh_ms > 0 ? o->refresh_ms : 10000;
  pthread_rwlock_init(&c->lock, NULL);
  pthread_mutex_init(&c->load_mu, NULL);
  if (hkdf(o->master_key, o->master_key_len, "data-key-wrap-v1", 16, c->kek) < 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot derive the key wrapping key");
    ana_crypto_destroy(c);
    return NULL;
  }
  if (load_root(c, o->master_key, o->master_key_len, err) < 0) {
    ana_crypto_destroy(c);
    return NULL;
  }
  return c;
}

void ana_crypto_destroy(struct ana_crypto *c) {
  if (!c)
    return;
  /* The calling thread's contexts (the main thread's are never freed by
   * the key's destructor). */
  pthread_once(&thread_once, thread_init);
  struct thread_ctx *t = pthread_getspecific(thread_key);
  if (t) {
    pthread_setspecific(thread_key, NULL);
    thread_ctx_free(t);
  }
  for (int i = 0; i < BUCKETS; i++)
    for (struct account_keys *a = c->buckets[i], *next; a; a = next) {
      next = a->next;
      free_keys(a);
    }
  pthread_rwlock_destroy(&c->lock);
  pthread_mutex_destroy(&c->load_mu);
  OPENSSL_cleanse(c, sizeof *c);
  ana_free(c);
}

bool ana_crypto_is_sealed(const char *s) {
  return s && strncmp(s, ANA_CRYPTO_SEALED_PREFIX, sizeof ANA_CRYPTO_SEALED_PREFIX - 1) == 0;
}

/* Seals pt with (key_id, key) into raw (HEADER_LEN + n + TAG_LEN bytes).
 * Returns 0 or -1. */
static int seal_raw(uint32_t key_id, const uint8_t key[KEY_LEN], const char *account_id,
                    const char *context, const void *pt, size_t n, uint8_t *raw) {
  raw[0] = VERSION;
  raw[1] = (uint8_t)(key_id >> 24);
  raw[2] = (uint8_t)(key_id >> 16);
  raw[3] = (uint8_t)(key_id >> 8);
  raw[4] = (uint8_t)key_id;
  const char *ctx = context ? context : "";
  if (next_nonce(raw + 5) < 0 || gcm_seal(key, raw + 5, account_id, strlen(account_id) + 1, ctx,
                                          strlen(ctx), pt, n, raw + HEADER_LEN) < 0)
    return -1;
  return 0;
}

/* The sealed text's length (prefix and base64, without the NUL) for n
 * bytes of plaintext. */
static size_t sealed_text_len(size_t n) {
  return sizeof ANA_CRYPTO_SEALED_PREFIX - 1 + 4 * ((HEADER_LEN + n + TAG_LEN + 2) / 3);
}

/* Writes the text of raw (raw_len bytes) into text (sealed_text_len + 1). */
static void sealed_text(const uint8_t *raw, size_t raw_len, char *text) {
  size_t pre = sizeof ANA_CRYPTO_SEALED_PREFIX - 1;
  memcpy(text, ANA_CRYPTO_SEALED_PREFIX, pre);
  EVP_EncodeBlock((unsigned char *)text + pre, raw, (int)raw_len);
}

int ana_crypto_seal(struct ana_crypto *c, const char *account_id, const char *context,
                    const void *pt, size_t n, char **out, struct ana_error *err) {
  *out = NULL;
  if (n > SEALED_MAX)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "a value to seal is over %d bytes",
                         SEALED_MAX);
  struct data_key k;
  struct account_keys *a = acquire(c, account_id, 0, err);
  if (!a)
    return ANA_ERR_UNSUPPORTED;
  k = a->keys[a->n - 1];
  pthread_rwlock_unlock(&c->lock);
  size_t raw_len = HEADER_LEN + n + TAG_LEN;
  uint8_t *raw = ana_malloc(raw_len);
  char *text = ana_malloc(sealed_text_len(n) + 1);
  int rc = 0;
  if (!raw || !text) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  if (seal_raw(k.id, k.key, account_id, context, pt, n, raw) < 0) {
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "cannot seal a value");
    goto out;
  }
  sealed_text(raw, raw_len, text);
  *out = text;
  text = NULL;
out:
  OPENSSL_cleanse(&k, sizeof k);
  ana_free(raw);
  ana_free(text);
  return rc;
}

int ana_crypto_sealer_init(struct ana_crypto *c, const char *account_id,
                           struct ana_crypto_sealer *s, struct ana_error *err) {
  memset(s, 0, sizeof *s);
  struct account_keys *a = acquire(c, account_id, 0, err);
  if (!a)
    return ANA_ERR_UNSUPPORTED;
  _Static_assert(sizeof s->key == KEY_LEN && sizeof s->blind_key == KEY_LEN, "key sizes");
  s->account_id = account_id;
  s->key_id = a->keys[a->n - 1].id;
  memcpy(s->key, a->keys[a->n - 1].key, KEY_LEN);
  memcpy(s->blind_key, a->blind_key, KEY_LEN);
  pthread_rwlock_unlock(&c->lock);
  return 0;
}

int ana_crypto_data_key(struct ana_crypto *c, const char *account_id, uint32_t want,
                        uint32_t *id_out, uint8_t key[32], struct ana_error *err) {
  struct account_keys *a = acquire(c, account_id, want, err);
  if (!a)
    return ANA_ERR_UNSUPPORTED;
  const struct data_key *k = want ? NULL : &a->keys[a->n - 1];
  for (size_t i = 0; want && i < a->n; i++)
    if (a->keys[i].id == want)
      k = &a->keys[i];
  if (k) {
    *id_out = k->id;
    memcpy(key, k->key, KEY_LEN);
  }
  pthread_rwlock_unlock(&c->lock);
  if (!k)
    return ana_error_set(err, ANA_STATUS_DATA_LOSS, "sealed by data key %u, which account %s lacks",
                         want, account_id);
  return 0;
}

void ana_crypto_sealer_fini(struct ana_crypto_sealer *s) {
  OPENSSL_cleanse(s, sizeof *s);
}

/* Plaintexts up to this seal through a buffer on the stack. */
#define SMALL_VALUE 512

char *ana_crypto_sealer_seal(const struct ana_crypto_sealer *s, const char *context, const void *pt,
                             size_t n, struct ana_arena *arena, struct ana_error *err) {
  if (n > SEALED_MAX) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "a value to seal is over %d bytes", SEALED_MAX);
    return NULL;
  }
  uint8_t small[HEADER_LEN + SMALL_VALUE + TAG_LEN];
  size_t raw_len = HEADER_LEN + n + TAG_LEN;
  uint8_t *raw = n <= SMALL_VALUE ? small : ana_malloc(raw_len);
  char *text = ana_arena_alloc(arena, sealed_text_len(n) + 1);
  if (!raw || !text) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    text = NULL;
  } else if (seal_raw(s->key_id, s->key, s->account_id, context, pt, n, raw) < 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot seal a value");
    text = NULL;
  } else {
    sealed_text(raw, raw_len, text);
  }
  if (raw != small)
    ana_free(raw);
  return text;
}

/* Decodes a sealed text's base64 into a new buffer; NULL when malformed. */
static uint8_t *decode(const char *sealed, size_t *len) {
  const char *b64 = sealed + sizeof ANA_CRYPTO_SEALED_PREFIX - 1;
  size_t n = strlen(b64);
  if (!n || n % 4 || n > (size_t)SEALED_MAX / 3 * 4 + 64)
    return NULL;
  uint8_t *raw = ana_malloc(n / 4 * 3 + 1);
  if (!raw)
    return NULL;
  int got = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
  if (got < 0) {
    ana_free(raw);
    return NULL;
  }
  size_t pad = (b64[n - 1] == '=') + (b64[n - 2] == '=');
  *len = (size_t)got - pad;
  /* Only the canonical spelling: the last group encoded again must be the
   * same text (unused bits before the padding are zero). */
  unsigned char last[8];
  if (*len < 3 || EVP_EncodeBlock(last, raw + (*len - (3 - pad)), (int)(3 - pad)) != 4 ||
      memcmp(last, b64 + n - 4, 4) != 0) {
    ana_free(raw);
    return NULL;
  }
  return raw;
}

uint32_t ana_crypto_sealed_key_id(const char *sealed) {
  if (!ana_crypto_is_sealed(sealed))
    return 0;
  size_t len = 0;
  uint8_t *raw = decode(sealed, &len);
  uint32_t id = 0;
  if (raw && len >= HEADER_LEN + TAG_LEN && raw[0] == VERSION)
    id = (uint32_t)raw[1] << 24 | (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 8 | raw[4];
  ana_free(raw);
  return id;
}

int ana_crypto_open(struct ana_crypto *c, const char *account_id, const char *context,
                    const char *sealed, char **out, size_t *n_out, struct ana_error *err) {
  *out = NULL;
  *n_out = 0;
  if (!ana_crypto_is_sealed(sealed))
    return ana_error_set(err, ANA_STATUS_DATA_LOSS, "%s: is not a sealed value",
                         context ? context : "value");
  size_t len = 0;
  uint8_t *raw = decode(sealed, &len);
  char *pt = NULL;
  int rc = 0;
  if (!raw || len < HEADER_LEN + TAG_LEN || raw[0] != VERSION) {
    rc = ana_error_set(err, ANA_STATUS_DATA_LOSS, "%s: the sealed value is malformed",
                       context ? context : "value");
    goto out;
  }
  uint32_t id = (uint32_t)raw[1] << 24 | (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 8 | raw[4];
  struct account_keys *a = acquire(c, account_id, id, err);
  if (!a) {
    rc = ANA_ERR_UNSUPPORTED;
    goto out;
  }
  struct data_key k = {0};
  for (size_t i = 0; i < a->n; i++)
    if (a->keys[i].id == id)
      k = a->keys[i];
  pthread_rwlock_unlock(&c->lock);
  size_t n = len - HEADER_LEN - TAG_LEN;
  if (!k.id) {
    rc = ana_error_set(err, ANA_STATUS_DATA_LOSS,
                       "%s: sealed by data key %u, which account %s lacks",
                       context ? context : "value", id, account_id);
    goto out;
  }
  if (!(pt = ana_malloc(n + 1))) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    const char *ctx = context ? context : "";
    if (gcm_open(k.key, raw + 5, account_id, strlen(account_id) + 1, ctx, strlen(ctx),
                 raw + HEADER_LEN, n, (uint8_t *)pt) < 0) {
      OPENSSL_cleanse(pt, n);
      rc = ana_error_set(err, ANA_STATUS_DATA_LOSS,
                         "%s: the sealed value does not authenticate (altered, or sealed for "
                         "another account or field)",
                         context ? context : "value");
    } else {
      pt[n] = '\0';
      *out = pt;
      *n_out = n;
      pt = NULL;
    }
  }
  OPENSSL_cleanse(&k, sizeof k);
out:
  ana_free(pt);
  ana_free(raw);
  return rc;
}

/* HMAC-SHA256 of (context, NUL, value) under key, as blind index text. */
static int blind_with(const uint8_t key[KEY_LEN], const char *context, const void *value, size_t n,
                      char *out) {
  uint8_t mac[EVP_MAX_MD_SIZE];
  size_t mac_len = 0;
  const char *ctx = context ? context : "";
  struct thread_ctx *t = thread_ctx();
  if (!t)
    return -1;
  bool same = t->mac_keyed && CRYPTO_memcmp(t->mac_key, key, KEY_LEN) == 0;
  bool ready = EVP_MAC_init(t->mac, same ? NULL : key, same ? 0 : KEY_LEN, NULL) == 1;
  t->mac_keyed = ready;
  if (ready && !same)
    memcpy(t->mac_key, key, KEY_LEN);
  if (!ready || EVP_MAC_update(t->mac, (const unsigned char *)ctx, strlen(ctx) + 1) != 1 ||
      EVP_MAC_update(t->mac, value, n) != 1 ||
      EVP_MAC_final(t->mac, mac, &mac_len, sizeof mac) != 1 || mac_len < 16)
    return -1;
  /* base64url of the first 16 bytes, unpadded: 22 characters */
  char b64[32];
  EVP_EncodeBlock((unsigned char *)b64, mac, 16);
  for (int i = 0; i < 22; i++)
    b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
  memcpy(out, ANA_CRYPTO_BLIND_PREFIX, sizeof ANA_CRYPTO_BLIND_PREFIX - 1);
  memcpy(out + sizeof ANA_CRYPTO_BLIND_PREFIX - 1, b64, 22);
  out[ANA_CRYPTO_BLIND_CHARS] = '\0';
  return 0;
}

int ana_crypto_blind_index(struct ana_crypto *c, const char *account_id, const char *context,
                           const void *value, size_t n, char *out) {
  struct ana_error err;
  struct account_keys *a = acquire(c, account_id, 0, &err);
  if (!a)
    return -1;
  uint8_t key[KEY_LEN];
  memcpy(key, a->blind_key, sizeof key);
  pthread_rwlock_unlock(&c->lock);
  int rc = blind_with(key, context, value, n, out);
  OPENSSL_cleanse(key, sizeof key);
  return rc;
}

int ana_crypto_sealer_blind(const struct ana_crypto_sealer *s, const char *context,
                            const void *value, size_t n, char *out) {
  return blind_with(s->blind_key, context, value, n, out);
}

int ana_crypto_rotate(struct ana_crypto *c, const char *account_id, uint32_t *key_id,
                      struct ana_error *err) {
  if (!account_id || !account_id[0] || strlen(account_id) >= ACCOUNT_MAX)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "account id: is missing or too long");
  pthread_mutex_lock(&c->load_mu);
  struct account_keys *a = load(c, account_id, true, err);
  if (a) {
    *key_id = a->keys[a->n - 1].id;
    pthread_rwlock_unlock(&c->lock);
  }
  pthread_mutex_unlock(&c->load_mu);
  return a ? 0 : ANA_ERR_UNSUPPORTED;
}

int ana_crypto_list_keys(struct ana_crypto *c, const char *account_id, ana_data_key_fn fn,
                         void *ctx, struct ana_error *err) {
  if (!account_id || !account_id[0] || strlen(account_id) >= ACCOUNT_MAX)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "account id: is missing or too long");
  return c->ops->list(c->store, account_id, fn, ctx, err);
}

uint32_t ana_crypto_current_key_id(struct ana_crypto *c, const char *account_id) {
  struct ana_error err;
  struct account_keys *a = acquire(c, account_id, 0, &err);
  if (!a)
    return 0;
  uint32_t id = a->keys[a->n - 1].id;
  pthread_rwlock_unlock(&c->lock);
  return id;
}

static int first_account(void *ctx, const struct ana_data_key_record *r) {
  snprintf(ctx, ACCOUNT_MAX, "%s", r->account_id);
  return 1;
}

int ana_crypto_check(struct ana_crypto *c, struct ana_error *err) {
  char account[ACCOUNT_MAX] = "";
  int rc = c->ops->accounts(c->store, first_account, account, err);
  if (rc < 0 || !account[0])
    return rc;
  struct account_keys *a = acquire(c, account, 0, err);
  if (!a)
    return ANA_ERR_UNSUPPORTED;
  pthread_rwlock_unlock(&c->lock);
  return 0;
}

/* The rewrap's state: both wrapping keys, what was found. */
struct rewrapping {
  uint8_t old_kek[KEY_LEN], new_kek[KEY_LEN];
  uint8_t old_root[KEY_LEN]; /* the previous master's extract */
  struct ana_crypto_rewrap_result *res;
};

static int rewrap_one(void *ctx, const struct ana_data_key_record *r, uint8_t *out, size_t cap,
                      size_t *out_len, struct ana_error *err) {
  struct rewrapping *w = ctx;
  uint8_t key[KEY_LEN];
  bool root = !r->account_id[0];
  int rc = 0;
  *out_len = 0;
  if (cap < WRAPPED_LEN)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "no room for a wrapped key");
  if (root && !r->wrapped_len) {
    /* None stored: the blind index keys came from the master key itself.
     * When the data keys were the previous master's, so were they: keep
     * that master's extract; else nothing changes. */
    if (!w->res->rewrapped)
      return 0;
    memcpy(key, w->old_root, KEY_LEN);
  } else if (unwrap_with(w->new_kek, r, key) == 0) {
    w->res->already++;
    memcpy(out, r->wrapped, WRAPPED_LEN);
    *out_len = WRAPPED_LEN;
    goto out;
  } else if (unwrap_with(w->old_kek, r, key) < 0) {
    rc = root ? ana_error_set(err, ANA_STATUS_DATA_LOSS,
                              "the stored key root opens with neither master key")
              : ana_error_set(err, ANA_STATUS_DATA_LOSS,
                              "data key %u of account %s opens with neither master key", r->key_id,
                              r->account_id);
    goto out;
  }
  if (wrap_with(w->new_kek, r->account_id, r->key_id, key, out) < 0) {
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "cannot wrap a data key");
    goto out;
  }
  *out_len = WRAPPED_LEN;
  if (root)
    w->res->root_written = true;
  else
    w->res->rewrapped++;
out:
  OPENSSL_cleanse(key, sizeof key);
  return rc;
}

int ana_crypto_rewrap_master(const uint8_t *old_master, size_t old_len, const uint8_t *new_master,
                             size_t new_len, const struct ana_data_key_store_ops *ops, void *store,
                             struct ana_crypto_rewrap_result *res, struct ana_error *err) {
  memset(res, 0, sizeof *res);
  if (!old_master || old_len < 16 || old_len > ANA_CRYPTO_MASTER_MAX || !new_master ||
      new_len < 16 || new_len > ANA_CRYPTO_MASTER_MAX)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "a master key needs 16 to %d bytes",
                         ANA_CRYPTO_MASTER_MAX);
  if (!ops->rewrap)
    return ana_error_set(err, ANA_STATUS_UNIMPLEMENTED,
                         "the %s data key store cannot rewrap its keys", ops->name);
  struct rewrapping w = {.res = res};
  int rc = 0;
  if (hkdf(old_master, old_len, "data-key-wrap-v1", 16, w.old_kek) < 0 ||
      hkdf(new_master, new_len, "data-key-wrap-v1", 16, w.new_kek) < 0 ||
      hkdf_mode(EVP_PKEY_HKDEF_MODE_EXTRACT_ONLY, old_master, old_len, NULL, 0, w.old_root) < 0)
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "cannot derive the key wrapping keys");
  else
    rc = ops->rewrap(store, rewrap_one, &w, err);
  OPENSSL_cleanse(&w, sizeof w);
  if (rc < 0)
    memset(res, 0, sizeof *res);
  return rc;
}
