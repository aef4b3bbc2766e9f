/* JWT verification: the header is read and judged before any key is looked
 * up (RFC 8725 section 3.1), the signature checked with OpenSSL against the
 * configured secret or JWKS key, then the claims; verified tokens are cached. */
#include "jwt_internal.h"

#include "ana_alloc.h"
#include "ana_config_table.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct ana_jwt_verifier {
  unsigned algs; /* enum jwt_alg bits */
  char algs_text[32];
  unsigned char *secret;
  size_t secret_len;
  struct jwks_set *file_keys; /* from jwks_json, or NULL */
  struct jwks_source *url_keys;
  char *issuer, *audience;
  char *account_claim, *roles_claim, *accounts_claim;
  int64_t leeway;
  size_t max_token;
  struct token_cache *cache;
  ana_jwt_clock_fn clock;
  void *clock_ctx;
  atomic_uint_fast64_t signature_checks, cache_hits, accepted, rejected;
};

static const struct {
  const char *name;
  enum jwt_alg alg;
} alg_names[] = {{"HS256", JWT_ALG_HS256}, {"RS256", JWT_ALG_RS256}, {"ES256", JWT_ALG_ES256}};

void ana_jwt_settings_init(struct ana_jwt_settings *s) {
  memset(s, 0, sizeof *s);
  s->leeway_s = ANA_JWT_DEFAULT_LEEWAY_S;
  s->account_claim = "account_id";
  s->roles_claim = "roles";
  s->accounts_claim = "accounts";
  s->max_token_bytes = ANA_JWT_DEFAULT_MAX_TOKEN_BYTES;
  s->cache_entries = ANA_JWT_DEFAULT_CACHE_ENTRIES;
  s->jwks_refresh_s = ANA_JWT_DEFAULT_JWKS_REFRESH_S;
  s->jwks_fetch_timeout_ms = ANA_JWT_DEFAULT_JWKS_FETCH_TIMEOUT_MS;
  s->jwks_wait_ms = ANA_JWT_DEFAULT_JWKS_WAIT_MS;
  s->jwks_max_bytes = ANA_JWT_DEFAULT_JWKS_MAX_BYTES;
}

const char *ana_jwt_reason_name(enum ana_jwt_reason reason) {
  switch (reason) {
  case ANA_JWT_OK: return "ok";
  case ANA_JWT_TOO_LARGE: return "too_large";
  case ANA_JWT_MALFORMED: return "malformed";
  case ANA_JWT_BAD_HEADER: return "bad_header";
  case ANA_JWT_ALG_NOT_ALLOWED: return "alg_not_allowed";
  case ANA_JWT_UNKNOWN_KEY: return "unknown_key";
  case ANA_JWT_BAD_SIGNATURE: return "bad_signature";
  case ANA_JWT_BAD_CLAIMS: return "bad_claims";
  case ANA_JWT_EXPIRED: return "expired";
  case ANA_JWT_NOT_YET_VALID: return "not_yet_valid";
  case ANA_JWT_BAD_ISSUER: return "bad_issuer";
  case ANA_JWT_BAD_AUDIENCE: return "bad_audience";
  case ANA_JWT_INTERNAL: return "internal";
  }
  return "unknown";
}

long jwt_b64url_decode(const char *in, size_t len, unsigned char *out) {
  if (len % 4 == 1)
    return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '-')
      v = 62;
    else if (c == '_')
      v = 63;
    else
      return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) /* the unused low bits of the last character must be zero */
    return -1;
  return (long)o;
}

static char *opt_strdup(const char *s, bool *nomem) {
  if (!s || !s[0])
    return NULL;
  char *d = ana_strdup(s);
  if (!d)
    *nomem = true;
  return d;
}

/* Parses "HS256, RS256" into bits; 0 with err naming the bad entry. */
static unsigned parse_algs(const char *text, struct ana_error *err) {
  unsigned algs = 0;
  const char *cursor = text, *p;
  size_t n;
  while ((p = ana_config_list_next(&cursor, &n))) {
    unsigned bit = 0;
    for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
      if (strlen(alg_names[i].name) == n && strncmp(alg_names[i].name, p, n) == 0)
        bit = alg_names[i].alg;
    if (!bit) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                    "JWT_ALGORITHMS: unsupported algorithm \"%.*s\" (use HS256, RS256, ES256)",
                    (int)(n > 32 ? 32 : n), p);
      return 0;
    }
    algs |= bit;
  }
  if (!algs)
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "JWT_ALGORITHMS: empty");
  return algs;
}

struct ana_jwt_verifier *ana_jwt_verifier_create(const struct ana_jwt_settings *s,
                                                 struct ana_error *err) {
  bool nomem = false;
  bool has_secret = s->hs256_secret && s->hs256_secret_len > 0;
  bool has_jwks = (s->jwks_json && s->jwks_json[0]) || (s->jwks_url && s->jwks_url[0]);
  struct ana_jwt_verifier *v = ana_calloc(1, sizeof *v);
  if (!v) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  if (!has_secret && !has_jwks) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "JWT: no key source (set JWT_HS256_SECRET, JWT_JWKS_FILE or JWT_JWKS_URL)");
    goto fail;
  }
  if (s->algorithms && s->algorithms[0]) {
    if (!(v->algs = parse_algs(s->algorithms, err)))
      goto fail;
  } else {
    v->algs = (has_secret ? JWT_ALG_HS256 : 0) | (has_jwks ? JWT_ALG_RS256 | JWT_ALG_ES256 : 0);
  }
  if ((v->algs & JWT_ALG_HS256) && !has_secret) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "JWT_ALGORITHMS: HS256 needs JWT_HS256_SECRET");
    goto fail;
  }
  if ((v->algs & (JWT_ALG_RS256 | JWT_ALG_ES256)) && !has_jwks) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "JWT_ALGORITHMS: RS256 and ES256 need JWT_JWKS_FILE or JWT_JWKS_URL");
    goto fail;
  }
  if ((v->algs & JWT_ALG_HS256) && s->hs256_secret_len < ANA_JWT_MIN_SECRET_BYTES) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "JWT_HS256_SECRET: %zu bytes, at least %d needed", s->hs256_secret_len,
                  ANA_JWT_MIN_SECRET_BYTES);
    goto fail;
  }
  if (s->leeway_s < 0 || s->leeway_s > 86400) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "JWT_LEEWAY: %lld outside 0..86400",
                  (long long)s->leeway_s);
    goto fail;
  }
  v->algs_text[0] = '\0';
  for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
    if (v->algs & alg_names[i].alg) {
      if (v->algs_text[0])
        strcat(v->algs_text, ",");
      strcat(v->algs_text, alg_names[i].name);
    }
  if (v->algs & JWT_ALG_HS256) {
    if (!(v->secret = ana_malloc(s->hs256_secret_len)))
      nomem = true;
    else
      memcpy(v->secret, s->hs256_secret, s->hs256_secret_len);
    v->secret_len = s->hs256_secret_len;
  }
  if (s->jwks_json && s->jwks_json[0]) {
    char why[256];
    v->file_keys = jwks_set_parse(s->jwks_json, strlen(s->jwks_json), why, sizeof why);
    if (!v->file_keys) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "JWT_JWKS_FILE: %s", why);
      goto fail;
    }
  }
  v->issuer = opt_strdup(s->issuer, &nomem);
  v->audience = opt_strdup(s->audience, &nomem);
  v->account_claim = opt_strdup(s->account_claim, &nomem);
  v->roles_claim = opt_strdup(s->roles_claim, &nomem);
  v->accounts_claim = opt_strdup(s->accounts_claim, &nomem);
  v->leeway = s->leeway_s;
  v->max_token = s->max_token_bytes ? s->max_token_bytes : ANA_JWT_DEFAULT_MAX_TOKEN_BYTES;
  v->clock = s->clock;
  v->clock_ctx = s->clock_ctx;
  if (nomem || !(v->cache = token_cache_create(s->cache_entries))) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if (s->jwks_url && s->jwks_url[0]) {
    if (strncmp(s->jwks_url, "https://", 8) != 0 && strncmp(s->jwks_url, "http://", 7) != 0) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "JWT_JWKS_URL: not an http(s) URL");
      goto fail;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!(v->url_keys = jwks_source_create(s))) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "JWT_JWKS_URL: cannot start its thread");
      goto fail;
    }
  }
  return v;
fail:
  ana_jwt_verifier_destroy(v);
  return NULL;
}

void ana_jwt_verifier_destroy(struct ana_jwt_verifier *v) {
  if (!v)
    return;
  jwks_source_destroy(v->url_keys);
  jwks_set_release(v->file_keys);
  token_cache_destroy(v->cache);
  if (v->secret)
    OPENSSL_cleanse(v->secret, v->secret_len);
  ana_free(v->secret);
  ana_free(v->issuer);
  ana_free(v->audience);
  ana_free(v->account_claim);
  ana_free(v->roles_claim);
  ana_free(v->accounts_claim);
  ana_free(v);
}

const char *ana_jwt_verifier_algorithms(const struct ana_jwt_verifier *v) {
  return v->algs_text;
}

void ana_jwt_verifier_stats(struct ana_jwt_verifier *v, struct ana_jwt_stats *out) {
  memset(out, 0, sizeof *out);
  out->signature_checks = atomic_load(&v->signature_checks);
  out->cache_hits = atomic_load(&v->cache_hits);
  out->accepted = atomic_load(&v->accepted);
  out->rejected = atomic_load(&v->rejected);
  out->cache_size = token_cache_size(v->cache);
  if (v->url_keys)
    jwks_source_counts(v->url_keys, &out->jwks_fetches, &out->jwks_fetch_failures);
}

const char *ana_jwt_bearer(const char *value, size_t *len) {
  if (!value || strncasecmp(value, "bearer ", 7) != 0)
    return NULL;
  const char *t = value + 7;
  while (*t == ' ')
    t++;
  size_t n = strlen(t);
  while (n && t[n - 1] == ' ')
    n--;
  if (!n)
    return NULL;
  *len = n;
  return t;
}

/* ---- Verification ---- */

/* State of one verification; everything freed at its end. */
struct job {
  struct ana_jwt_verifier *v;
  struct ana_jwt_failure *why;
  json_t *header, *claims;
  struct jwks_set *url_set;
};

static int fail(struct job *j, enum ana_jwt_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct job *j, enum ana_jwt_reason reason, const char *fmt, ...) {
  if (j->why) {
    j->why->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->why->detail, sizeof j->why->detail, fmt, ap);
    va_end(ap);
  }
  return reason == ANA_JWT_INTERNAL ? ANA_ERR_NOMEM : ANA_ERR_INVALID;
}

/* Decodes one part of the token as a JSON object. */
static json_t *decode_json_part(const char *p, size_t n, unsigned char *buf) {
  long m = jwt_b64url_decode(p, n, buf);
  if (m <= 0)
    return NULL;
  json_t *obj = json_loadb((const char *)buf, (size_t)m, JSON_REJECT_DUPLICATES, NULL);
  if (obj && !json_is_object(obj)) {
    json_decref(obj);
    return NULL;
  }
  return obj;
}

/* Header members that would let a token choose its own key or demand
 * processing we do not do (RFC 8725 sections 3.1 and 3.10, RFC 7515 4.1.11),
 * or that belong to an encrypted token. */
static const char *const forbidden_header[] = {"jwk",      "jku",  "x5u", "x5c", "x5t",
                                               "x5t#S256", "crit", "enc", "zip"};

/* Judges the header; fills *alg and *kid (borrowed from the header). */
static int check_header(struct job *j, enum jwt_alg *alg, const char **kid) {
  for (size_t i = 0; i < sizeof forbidden_header / sizeof forbidden_header[0]; i++)
    if (json_object_get(j->header, forbidden_header[i]))
      return fail(j, ANA_JWT_BAD_HEADER, "header member \"%s\" is not accepted",
                  forbidden_header[i]);
  const char *name = json_string_value(json_object_get(j->header, "alg"));
  if (!name)
    return fail(j, ANA_JWT_BAD_HEADER, "header has no alg string");
  *alg = 0;
  for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
    if (strcmp(alg_names[i].name, name) == 0)
      *alg = alg_names[i].alg;
  if (!(*alg & j->v->algs))
    return fail(j, ANA_JWT_ALG_NOT_ALLOWED, "alg \"%.16s\" is not allowed (allowed: %s)", name,
                j->v->algs_text);
  json_t *typ = json_object_get(j->header, "typ");
  if (typ) {
    const char *t = json_string_value(typ);
    if (!t || (strcasecmp(t, "JWT") != 0 && strcasecmp(t, "at+jwt") != 0 &&
               strcasecmp(t, "application/at+jwt") != 0))
      return fail(j, ANA_JWT_BAD_HEADER, "typ is not JWT or at+jwt");
  }
  json_t *k = json_object_get(j->header, "kid");
  if (k && !json_is_string(k))
    return fail(j, ANA_JWT_BAD_HEADER, "kid is not a string");
  *kid = k ? json_string_value(k) : NULL;
  return 0;
}

static int verify_hs256(struct job *j, const char *input, size_t input_len,
                        const unsigned char *sig, size_t sig_len) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  atomic_fetch_add(&j->v->signature_checks, 1);
  if (!HMAC(EVP_sha256(), j->v->secret, (int)j->v->secret_len, (const unsigned char *)input,
            input_len, mac, &mac_len))
    return fail(j, ANA_JWT_INTERNAL, "HMAC failed");
  if (sig_len != mac_len || CRYPTO_memcmp(mac, sig, mac_len) != 0)
    return fail(j, ANA_JWT_BAD_SIGNATURE, "HS256 signature does not match");
  return 0;
}

/* RS256 (PKCS#1 v1.5) or ES256; an ES256 signature is r||s (RFC 7518
 * section 3.4), which EVP wants as a DER ECDSA-Sig-Value. */
static int verify_pkey(struct job *j, EVP_PKEY *pkey, enum jwt_alg alg, const char *input,
                       size_t input_len, const unsigned char *sig, size_t sig_len) {
  unsigned char *der = NULL;
  int der_len = 0;
  int rc = 0;
  if (alg == JWT_ALG_ES256) {
    if (sig_len != 64)
      return fail(j, ANA_JWT_BAD_SIGNATURE, "ES256 signature is %zu bytes, not 64", sig_len);
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
      BN_free(r);
      BN_free(s);
      ECDSA_SIG_free(es);
      return fail(j, ANA_JWT_INTERNAL, "ECDSA_SIG failed");
    }
    der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    if (der_len <= 0)
      return fail(j, ANA_JWT_INTERNAL, "i2d_ECDSA_SIG failed");
    sig = der;
    sig_len = (size_t)der_len;
  } else if (sig_len != (size_t)EVP_PKEY_get_size(pkey)) {
    return fail(j, ANA_JWT_BAD_SIGNATURE, "RS256 signature is %zu bytes, not %d", sig_len,
                EVP_PKEY_get_size(pkey));
  }
  atomic_fetch_add(&j->v->signature_checks, 1);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1)
    rc = fail(j, ANA_JWT_INTERNAL, "EVP_DigestVerifyInit failed");
  else if (EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, input_len) != 1)
    rc = fail(j, ANA_JWT_BAD_SIGNATURE, "%s signature does not verify",
              alg == JWT_ALG_ES256 ? "ES256" : "RS256");
  EVP_MD_CTX_free(ctx);
  OPENSSL_free(der);
  return rc;
}

/* The JWKS key for kid and alg: the file's, then the URL's, asking the URL
 * for a fresh set once when neither knows it. */
static EVP_PKEY *find_key(struct job *j, const char *kid, enum jwt_alg alg) {
  EVP_PKEY *pkey = jwks_set_find(j->v->file_keys, kid, alg);
  if (pkey || !j->v->url_keys)
    return pkey;
  j->url_set = jwks_source_current(j->v->url_keys);
  if ((pkey = jwks_set_find(j->url_set, kid, alg)))
    return pkey;
  if (!jwks_source_refresh(j->v->url_keys))
    return NULL;
  jwks_set_release(j->url_set);
  j->url_set = jwks_source_current(j->v->url_keys);
  return jwks_set_find(j->url_set, kid, alg);
}

/* A NumericDate claim as whole seconds; 1 present, 0 absent, -1 bad. */
static int numeric_date(json_t *claims, const char *name, int64_t *out) {
  json_t *c = json_object_get(claims, name);
  if (!c)
    return 0;
  if (!json_is_number(c))
    return -1;
  double d = json_number_value(c);
  if (!isfinite(d) || d < 0 || d > 253402300799.0) /* up to year 9999 */
    return -1;
  *out = (int64_t)floor(d);
  return 1;
}

static bool audience_matches(json_t *aud, const char *want) {
  if (json_is_string(aud))
    return strcmp(json_string_value(aud), want) == 0;
  size_t i;
  json_t *a;
  json_array_foreach(aud, i, a) if (json_is_string(a) &&
                                    strcmp(json_string_value(a), want) == 0) return true;
  return false;
}

static int check_claims(struct job *j, int64_t now, struct ana_arena *arena,
                        struct ana_jwt_principal *out) {
  struct ana_jwt_verifier *v = j->v;
  json_t *c = j->claims;
  int64_t exp = 0, nbf = 0, iat = 0;
  int has_exp = numeric_date(c, "exp", &exp);
  int has_nbf = numeric_date(c, "nbf", &nbf);
  int has_iat = numeric_date(c, "iat", &iat);
  if (has_exp <= 0)
    return fail(j, ANA_JWT_BAD_CLAIMS, has_exp ? "exp is not a NumericDate" : "no exp claim");
  if (has_nbf < 0 || has_iat < 0)
    return fail(j, ANA_JWT_BAD_CLAIMS, "%s is not a NumericDate", has_nbf < 0 ? "nbf" : "iat");
  if (now > exp + v->leeway)
    return fail(j, ANA_JWT_EXPIRED, "expired %lld s ago (leeway %lld s)", (long long)(now - exp),
                (long long)v->leeway);
  if (has_nbf && now + v->leeway < nbf)
    return fail(j, ANA_JWT_NOT_YET_VALID, "nbf is %lld s ahead (leeway %lld s)",
                (long long)(nbf - now), (long long)v->leeway);
  if (has_iat && now + v->leeway < iat)
    return fail(j, ANA_JWT_NOT_YET_VALID, "iat is %lld s ahead (leeway %lld s)",
                (long long)(iat - now), (long long)v->leeway);
  json_t *iss = json_object_get(c, "iss");
  if (iss && !json_is_string(iss))
    return fail(j, ANA_JWT_BAD_CLAIMS, "iss is not a string");
  if (v->issuer && (!iss || strcmp(json_string_value(iss), v->issuer) != 0))
    return fail(j, ANA_JWT_BAD_ISSUER, "iss is not the configured issuer");
  json_t *aud = json_object_get(c, "aud");
  if (aud && !json_is_string(aud) && !json_is_array(aud))
    return fail(j, ANA_JWT_BAD_CLAIMS, "aud is neither a string nor an array");
  /* RFC 7519 section 4.1.3: a token for an audience we do not claim to be is
   * refused, also when no audience is configured. */
  if (aud && !v->audience)
    return fail(j, ANA_JWT_BAD_AUDIENCE, "token has aud but JWT_AUDIENCE is not set");
  if (v->audience && (!aud || !audience_matches(aud, v->audience)))
    return fail(j, ANA_JWT_BAD_AUDIENCE, "aud does not include the configured audience");

  memset(out, 0, sizeof *out);
  out->expires_at = exp;
  json_t *sub = json_object_get(c, "sub");
  if (sub && !json_is_string(sub))
    return fail(j, ANA_JWT_BAD_CLAIMS, "sub is not a string");
  if (sub && !(out->subject = ana_arena_strdup(arena, json_string_value(sub))))
    return fail(j, ANA_JWT_INTERNAL, "out of memory");
  json_t *account = v->account_claim ? json_object_get(c, v->account_claim) : NULL;
  if (account && (!json_is_string(account) || !json_string_length(account)))
    return fail(j, ANA_JWT_BAD_CLAIMS, "%s is not a non-empty string", v->account_claim);
  if (account && !(out->account_id = ana_arena_strdup(arena, json_string_value(account))))
    return fail(j, ANA_JWT_INTERNAL, "out of memory");
  json_t *roles = v->roles_claim ? json_object_get(c, v->roles_claim) : NULL;
  if (roles) {
    size_t n = json_is_array(roles) ? json_array_size(roles) : 1;
    if ((!json_is_array(roles) && !json_is_string(roles)) || n > ANA_JWT_MAX_ROLES)
      return fail(j, ANA_JWT_BAD_CLAIMS, "%s is not a string or an array of at most %d strings",
                  v->roles_claim, ANA_JWT_MAX_ROLES);
    const char **r = ana_arena_calloc(arena, n ? n : 1, sizeof *r);
    if (!r)
      return fail(j, ANA_JWT_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
      json_t *e = json_is_array(roles) ? json_array_get(roles, i) : roles;
      if (!json_is_string(e))
        return fail(j, ANA_JWT_BAD_CLAIMS, "%s[%zu] is not a string", v->roles_claim, i);
      if (!(r[i] = ana_arena_strdup(arena, json_string_value(e))))
        return fail(j, ANA_JWT_INTERNAL, "out of memory");
    }
    out->roles = r;
    out->n_roles = n;
  }
  json_t *accounts = v->accounts_claim ? json_object_get(c, v->accounts_claim) : NULL;
  if (accounts) {
    size_t n = json_object_size(accounts);
    if (!json_is_object(accounts) || n > ANA_JWT_MAX_ACCOUNTS)
      return fail(j, ANA_JWT_BAD_CLAIMS, "%s is not an object of at most %d accounts",
                  v->accounts_claim, ANA_JWT_MAX_ACCOUNTS);
    struct ana_jwt_account *a = ana_arena_calloc(arena, n ? n : 1, sizeof *a);
    if (!a)
      return fail(j, ANA_JWT_INTERNAL, "out of memory");
    size_t i = 0;
    const char *key;
    json_t *role;
    json_object_foreach(accounts, key, role) {
      if (!key[0] || !json_is_string(role))
        return fail(j, ANA_JWT_BAD_CLAIMS, "%s: each member is account: role string",
                    v->accounts_claim);
      a[i].account_id = ana_arena_strdup(arena, key);
      a[i].role = ana_arena_strdup(arena, json_string_value(role));
      if (!a[i].account_id || !a[i].role)
        return fail(j, ANA_JWT_INTERNAL, "out of memory");
      i++;
    }
    out->accounts = a;
    out->n_accounts = n;
  }
  return 0;
}

static int64_t now_s(const struct ana_jwt_verifier *v) {
  return v->clock ? v->clock(v->clock_ctx) : (int64_t)time(NULL);
}

/* Everything but the cache; unsigned bytes of the three parts in buf. */
static int verify_fresh(struct job *j, const char *token, size_t len, int64_t now,
                        struct ana_arena *arena, struct ana_jwt_principal *out) {
  const char *dot1 = memchr(token, '.', len);
  const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
  if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
    return fail(j, ANA_JWT_MALFORMED, "not three dot-separated parts");
  size_t h_len = (size_t)(dot1 - token), p_len = (size_t)(dot2 - dot1 - 1);
  size_t s_len = len - (size_t)(dot2 + 1 - token);
  if (!h_len || !p_len)
    return fail(j, ANA_JWT_MALFORMED, "empty header or payload");
  unsigned char buf[ANA_JWT_DEFAULT_MAX_TOKEN_BYTES];
  unsigned char *big = NULL;
  unsigned char *b = buf;
  if (len > sizeof buf && !(b = big = ana_malloc(len)))
    return fail(j, ANA_JWT_INTERNAL, "out of memory");
  int rc;
  /* The header alone decides what happens next. */
  if (!(j->header = decode_json_part(token, h_len, b))) {
    rc = fail(j, ANA_JWT_MALFORMED, "header is not base64url JSON object");
    goto out;
  }
  enum jwt_alg alg = 0;
  const char *kid = NULL;
  if ((rc = check_header(j, &alg, &kid)) < 0)
    goto out;
  if (!s_len) { /* an unsecured JWT with an alg that needs a signature */
    rc = fail(j, ANA_JWT_BAD_SIGNATURE, "no signature");
    goto out;
  }
  long sig_len = jwt_b64url_decode(dot2 + 1, s_len, b);
  if (sig_len <= 0) {
    rc = fail(j, ANA_JWT_MALFORMED, "signature is not base64url");
    goto out;
  }
  if (alg == JWT_ALG_HS256) {
    rc = verify_hs256(j, token, (size_t)(dot2 - token), b, (size_t)sig_len);
  } else {
    EVP_PKEY *pkey = find_key(j, kid, alg);
    if (!pkey) {
      rc = fail(j, ANA_JWT_UNKNOWN_KEY, "no %s key%s%.64s%s in the JWKS",
                alg == JWT_ALG_RS256 ? "RS256" : "ES256", kid ? " with kid \"" : "", kid ? kid : "",
                kid ? "\"" : " (token has no kid)");
      goto out;
    }
    rc = verify_pkey(j, pkey, alg, token, (size_t)(dot2 - token), b, (size_t)sig_len);
  }
  if (rc < 0)
    goto out;
  /* Only a signed payload is read. */
  if (!(j->claims = decode_json_part(dot1 + 1, p_len, b))) {
    rc = fail(j, ANA_JWT_MALFORMED, "payload is not base64url JSON object");
    goto out;
  }
  rc = check_claims(j, now, arena, out);
out:
  ana_free(big);
  return rc;
}

int ana_jwt_verify(struct ana_jwt_verifier *v, const char *token, size_t len,
                   struct ana_arena *arena, struct ana_jwt_principal *out, struct ana_error *err,
                   struct ana_jwt_failure *why) {
  struct job j = {.v = v, .why = why};
  int rc;
  int64_t now = now_s(v);
  unsigned char key[JWT_CACHE_KEY_BYTES];
  if (why) {
    why->reason = ANA_JWT_OK;
    why->detail[0] = '\0';
  }
  if (len == 0) {
    rc = fail(&j, ANA_JWT_MALFORMED, "empty token");
    goto out;
  }
  if (len > v->max_token) {
    rc = fail(&j, ANA_JWT_TOO_LARGE, "token of %zu bytes over the %zu-byte limit", len,
              v->max_token);
    goto out;
  }
  SHA256((const unsigned char *)token, len, key);
  rc = token_cache_get(v->cache, key, now, v->leeway, arena, out);
  if (rc == 0) {
    atomic_fetch_add(&v->cache_hits, 1);
    goto out;
  }
  if (rc == ANA_ERR_NOMEM) {
    rc = fail(&j, ANA_JWT_INTERNAL, "out of memory");
    goto out;
  }
  rc = verify_fresh(&j, token, len, now, arena, out);
  if (rc == 0)
    token_cache_put(v->cache, key, out);
out:
  json_decref(j.header);
  json_decref(j.claims);
  jwks_set_release(j.url_set);
  if (rc == 0) {
    atomic_fetch_add(&v->accepted, 1);
  } else {
    atomic_fetch_add(&v->rejected, 1);
    if (rc == ANA_ERR_NOMEM)
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    else
      ana_error_set(err, ANA_STATUS_UNAUTHENTICATED, "invalid token");
  }
  return rc;
}
