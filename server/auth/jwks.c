/* JSON Web Key Sets (RFC 7517): public RSA and EC P-256 keys built with
 * OpenSSL 3, and a JWKS URL fetched with libcurl by a background thread. */
#include "jwt_internal.h"

#include "ana_alloc.h"
#include "ana_clock.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MIN_RSA_BITS 2048
#define MAX_KEYS 64
#define MAX_KEY_MEMBER 1024 /* base64url chars of n, x, y (RSA 4096: 683) */

static void why_set(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t cap, const char *fmt, ...) {
  if (!why || !cap)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, cap, fmt, ap);
  va_end(ap);
}

/* Decodes a base64url member of a JWK into a fresh buffer; NULL if absent or
 * invalid. */
static unsigned char *member_bytes(json_t *jwk, const char *name, size_t *len) {
  const char *s = json_string_value(json_object_get(jwk, name));
  if (!s)
    return NULL;
  size_t n = strlen(s);
  if (n == 0 || n > MAX_KEY_MEMBER)
    return NULL;
  unsigned char *buf = ana_malloc(n * 3 / 4 + 1);
  if (!buf)
    return NULL;
  long m = jwt_b64url_decode(s, n, buf);
  if (m <= 0) {
    ana_free(buf);
    return NULL;
  }
  *len = (size_t)m;
  return buf;
}

/* Builds a public key of type name ("RSA", "EC") from params. */
static EVP_PKEY *pkey_fromdata(const char *name, OSSL_PARAM *params) {
  EVP_PKEY *pkey = NULL;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, name, NULL);
  if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
      EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    pkey = NULL;
  EVP_PKEY_CTX_free(ctx);
  if (!pkey)
    return NULL;
  /* The EC point must lie on the curve; RSA gets its own sanity check. */
  EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
  int ok = check && EVP_PKEY_public_check(check) == 1;
  EVP_PKEY_CTX_free(check);
  if (!ok) {
    EVP_PKEY_free(pkey);
    return NULL;
  }
  return pkey;
}

static EVP_PKEY *rsa_key(json_t *jwk, const char **bad) {
  size_t n_len = 0, e_len = 0;
  unsigned char *n = member_bytes(jwk, "n", &n_len);
  unsigned char *e = member_bytes(jwk, "e", &e_len);
  BIGNUM *bn_n = NULL, *bn_e = NULL;
  OSSL_PARAM_BLD *bld = NULL;
  OSSL_PARAM *params = NULL;
  EVP_PKEY *pkey = NULL;
  if (!n) {
    *bad = "n";
    goto out;
  }
  if (!e || e_len > 8) {
    *bad = "e";
    goto out;
  }
  bn_n = BN_bin2bn(n, (int)n_len, NULL);
  bn_e = BN_bin2bn(e, (int)e_len, NULL);
  bld = OSSL_PARAM_BLD_new();
  if (!bn_n || !bn_e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
      !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
      !(params = OSSL_PARAM_BLD_to_param(bld))) {
    *bad = "n";
    goto out;
  }
  if (BN_num_bits(bn_n) < MIN_RSA_BITS) {
    *bad = "n (shorter than 2048 bits)";
    goto out;
  }
  if (!BN_is_odd(bn_e) || BN_is_one(bn_e)) {
    *bad = "e";
    goto out;
  }
  pkey = pkey_fromdata("RSA", params);
  if (!pkey)
    *bad = "n";
out:
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn_n);
  BN_free(bn_e);
  ana_free(n);
  ana_free(e);
  return pkey;
}

static EVP_PKEY *ec_key(json_t *jwk, const char **bad) {
  size_t x_len = 0, y_len = 0;
  unsigned char *x = NULL, *y = NULL;
  OSSL_PARAM_BLD *bld = NULL;
  OSSL_PARAM *params = NULL;
  EVP_PKEY *pkey = NULL;
  const char *crv = json_string_value(json_object_get(jwk, "crv"));
  if (!crv || strcmp(crv, "P-256") != 0) {
    *bad = "crv (only P-256)";
    goto out;
  }
  x = member_bytes(jwk, "x", &x_len);
  y = member_bytes(jwk, "y", &y_len);
  if (!x || x_len != 32) {
    *bad = "x";
    goto out;
  }
  if (!y || y_len != 32) {
    *bad = "y";
    goto out;
  }
  unsigned char point[65];
  point[0] = 0x04; /* uncompressed */
  memcpy(point + 1, x, 32);
  memcpy(point + 33, y, 32);
  bld = OSSL_PARAM_BLD_new();
  if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point) ||
      !(params = OSSL_PARAM_BLD_to_param(bld))) {
    *bad = "x";
    goto out;
  }
  pkey = pkey_fromdata("EC", params);
  if (!pkey)
    *bad = "x/y (not a point of P-256)";
out:
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  ana_free(x);
  ana_free(y);
  return pkey;
}

struct jwks_set *jwks_set_ref(struct jwks_set *set) {
  if (set)
    atomic_fetch_add(&set->refs, 1);
  return set;
}

void jwks_set_release(struct jwks_set *set) {
  if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
    return;
  for (size_t i = 0; i < set->n; i++) {
    ana_free(set->keys[i].kid);
    EVP_PKEY_free(set->keys[i].pkey);
  }
  ana_free(set->keys);
  ana_free(set);
}

/* Members that only a private key has (RFC 7518 section 6). */
static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

struct jwks_set *jwks_set_parse(const char *json, size_t len, char *why, size_t why_cap) {
  json_error_t jerr;
  struct jwks_set *set = NULL;
  json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!doc) {
    why_set(why, why_cap, "JWKS: not JSON (line %d: %s)", jerr.line, jerr.text);
    goto fail;
  }
  json_t *keys = json_object_get(doc, "keys");
  if (!json_is_array(keys)) {
    why_set(why, why_cap, "JWKS: no \"keys\" array");
    goto fail;
  }
  if (json_array_size(keys) > MAX_KEYS) {
    why_set(why, why_cap, "JWKS: more than %d keys", MAX_KEYS);
    goto fail;
  }
  set = ana_calloc(1, sizeof *set);
  if (!set || !(set->keys = ana_calloc(json_array_size(keys) + 1, sizeof *set->keys))) {
    why_set(why, why_cap, "JWKS: out of memory");
    goto fail;
  }
  atomic_init(&set->refs, 1);
  size_t i;
  json_t *jwk;
  json_array_foreach(keys, i, jwk) {
    if (!json_is_object(jwk)) {
      why_set(why, why_cap, "JWKS: keys[%zu] is not an object", i);
      goto fail;
    }
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    json_t *kid = json_object_get(jwk, "kid");
    if (!kty) {
      why_set(why, why_cap, "JWKS: keys[%zu] has no kty", i);
      goto fail;
    }
    for (size_t m = 0; m < sizeof private_members / sizeof private_members[0]; m++)
      if (json_object_get(jwk, private_members[m])) {
        why_set(why, why_cap,
                "JWKS: keys[%zu] has the private member \"%s\": publish public "
                "keys only",
                i, private_members[m]);
        goto fail;
      }
    if (kid && !json_is_string(kid)) {
      why_set(why, why_cap, "JWKS: keys[%zu].kid is not a string", i);
      goto fail;
    }
    if (use && strcmp(use, "sig") != 0)
      continue; /* an encryption key */
    enum jwt_alg a;
    if (strcmp(kty, "RSA") == 0)
      a = JWT_ALG_RS256;
    else if (strcmp(kty, "EC") == 0)
      a = JWT_ALG_ES256;
    else
      continue; /* oct, OKP: not verified with a JWKS here */
    if (alg && strcmp(alg, a == JWT_ALG_RS256 ? "RS256" : "ES256") != 0)
      continue; /* e.g. an RSA key for PS256 or RS512 */
    const char *bad = NULL;
    EVP_PKEY *pkey = a == JWT_ALG_RS256 ? rsa_key(jwk, &bad) : ec_key(jwk, &bad);
    if (!pkey) {
      why_set(why, why_cap, "JWKS: keys[%zu] (kid %s): bad %s", i,
              kid ? json_string_value(kid) : "none", bad ? bad : "key");
      goto fail;
    }
    struct jwks_key *k = &set->keys[set->n++];
    k->alg = a;
    k->pkey = pkey;
    if (kid && !(k->kid = ana_strdup(json_string_value(kid)))) {
      why_set(why, why_cap, "JWKS: out of memory");
      goto fail;
    }
  }
  json_decref(doc);
  return set;
fail:
  json_decref(doc);
  jwks_set_release(set);
  return NULL;
}

EVP_PKEY *jwks_set_find(const struct jwks_set *set, const char *kid, enum jwt_alg alg) {
  if (!set)
    return NULL;
  EVP_PKEY *only = NULL;
  size_t n_alg = 0;
  for (size_t i = 0; i < set->n; i++) {
    const struct jwks_key *k = &set->keys[i];
    if (k->alg != alg)
      continue;
    if (kid) {
      if (k->kid && strcmp(k->kid, kid) == 0)
        return k->pkey;
    } else {
      only = k->pkey;
      n_alg++;
    }
  }
  return n_alg == 1 ? only : NULL;
}

/* ---- The JWKS URL and its thread ---- */

struct jwks_source {
  pthread_mutex_t mu;
  pthread_cond_t wake; /* the thread: a fetch is wanted, or stop */
  pthread_cond_t done; /* callers: a fetch finished */
  pthread_t thread;
  bool started;
  char *url;
  int refresh_ms, timeout_ms, wait_ms;
  size_t max_bytes;
  ana_jwt_log_fn log;
  void *log_ctx;
  /* Under mu: */
  struct jwks_set *current;
  bool want, fetching, stop;
  uint64_t generation;     /* completed fetches */
  int64_t last_attempt_ms; /* monotonic; INT64_MIN before the first */
  uint64_t fetches, failures;
};

static void src_log(struct jwks_source *src, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void src_log(struct jwks_source *src, int level, const char *fmt, ...) {
  if (!src->log)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  src->log(src->log_ctx, level, msg);
}

struct body {
  char *data;
  size_t len, max;
  bool too_large;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg) {
  struct body *b = arg;
  size_t n = size * nmemb;
  if (b->len + n > b->max) {
    b->too_large = true;
    return 0; /* aborts the transfer */
  }
  char *grown = ana_realloc(b->data, b->len + n + 1);
  if (!grown)
    return 0;
  memcpy(grown + b->len, ptr, n);
  b->data = grown;
  b->len += n;
  b->data[b->len] = '\0';
  return n;
}

/* One fetch, without the lock. Returns the parsed set or NULL (logged). */
static struct jwks_set *fetch(struct jwks_source *src) {
  struct body b = {.max = src->max_bytes};
  struct jwks_set *set = NULL;
  char errbuf[CURL_ERROR_SIZE] = "";
  long status = 0;
  CURL *curl = curl_easy_init();
  if (!curl) {
    src_log(src, 0, "JWKS fetch: curl_easy_init failed");
    return NULL;
  }
  curl_easy_setopt(curl, CURLOPT_URL, src->url);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)src->timeout_ms);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)src->timeout_ms);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "analyticsd-jwks");
  CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  if (b.too_large) {
    src_log(src, 0, "JWKS fetch %s: response over %zu bytes", src->url, src->max_bytes);
    goto out;
  }
  if (rc != CURLE_OK) {
    src_log(src, 0, "JWKS fetch %s: %s", src->url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    goto out;
  }
  if (status != 200) {
    src_log(src, 0, "JWKS fetch %s: HTTP status %ld", src->url, status);
    goto out;
  }
  char why[256];
  set = jwks_set_parse(b.data ? b.data : "", b.len, why, sizeof why);
  if (!set)
    src_log(src, 0, "JWKS fetch %s: %s", src->url, why);
  else
    src_log(src, 2, "JWKS fetched from %s: %zu usable keys", src->url, set->n);
out:
  ana_free(b.data);
  return set;
}

static void *source_thread(void *arg) {
  struct jwks_source *src = arg;
  pthread_mutex_lock(&src->mu);
  for (;;) {
    while (!src->want && !src->stop)
      pthread_cond_wait(&src->wake, &src->mu);
    if (src->stop)
      break;
    src->want = false;
    src->fetching = true;
    src->last_attempt_ms = ana_clock_mono_ms();
    src->fetches++;
    pthread_mutex_unlock(&src->mu);
    struct jwks_set *set = fetch(src);
    pthread_mutex_lock(&src->mu);
    src->fetching = false;
    if (set) {
      jwks_set_release(src->current);
      src->current = set;
    } else {
      src->failures++;
    }
    src->generation++;
    pthread_cond_broadcast(&src->done);
  }
  pthread_mutex_unlock(&src->mu);
  return NULL;
}

struct jwks_source *jwks_source_create(const struct ana_jwt_settings *s) {
  struct jwks_source *src = ana_calloc(1, sizeof *src);
  if (!src)
    return NULL;
  pthread_mutex_init(&src->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&src->wake, &ca);
  pthread_cond_init(&src->done, &ca);
  pthread_condattr_destroy(&ca);
  src->url = ana_strdup(s->jwks_url);
  src->refresh_ms = s->jwks_refresh_s * 1000;
  src->timeout_ms = s->jwks_fetch_timeout_ms;
  src->wait_ms = s->jwks_wait_ms;
  src->max_bytes = s->jwks_max_bytes;
  src->log = s->log;
  src->log_ctx = s->log_ctx;
  src->last_attempt_ms = INT64_MIN;
  src->want = true; /* the first fetch, at once */
  if (!src->url || pthread_create(&src->thread, NULL, source_thread, src) != 0) {
    jwks_source_destroy(src);
    return NULL;
  }
  src->started = true;
  return src;
}

void jwks_source_destroy(struct jwks_source *src) {
  if (!src)
    return;
  if (src->started) {
    pthread_mutex_lock(&src->mu);
    src->stop = true;
    pthread_cond_signal(&src->wake);
    pthread_mutex_unlock(&src->mu);
    pthread_join(src->thread, NULL);
  }
  jwks_set_release(src->current);
  pthread_cond_destroy(&src->wake);
  pthread_cond_destroy(&src->done);
  pthread_mutex_destroy(&src->mu);
  ana_free(src->url);
  ana_free(src);
}

struct jwks_set *jwks_source_current(struct jwks_source *src) {
  pthread_mutex_lock(&src->mu);
  struct jwks_set *set = jwks_set_ref(src->current);
  pthread_mutex_unlock(&src->mu);
  return set;
}

bool jwks_source_refresh(struct jwks_source *src) {
  pthread_mutex_lock(&src->mu);
  int64_t now = ana_clock_mono_ms();
  if (!src->fetching && !src->want) {
    if (src->last_attempt_ms != INT64_MIN && now - src->last_attempt_ms < src->refresh_ms) {
      pthread_mutex_unlock(&src->mu);
      return false; /* fetched recently: the kid is unknown */
    }
    src->want = true;
    pthread_cond_signal(&src->wake);
  }
  uint64_t gen = src->generation;
  struct timespec deadline = ana_clock_deadline(CLOCK_MONOTONIC, src->wait_ms);
  while (src->generation == gen && !src->stop)
    if (pthread_cond_timedwait(&src->done, &src->mu, &deadline) != 0)
      break;
  bool changed = src->generation != gen;
  pthread_mutex_unlock(&src->mu);
  return changed;
}

void jwks_source_counts(struct jwks_source *src, uint64_t *fetches, uint64_t *failures) {
  pthread_mutex_lock(&src->mu);
  *fetches = src->fetches;
  *failures = src->failures;
  pthread_mutex_unlock(&src->mu);
}
