/* The audit log's hash chain: canonical encoding, SHA-256 links, signed heads. */
#include "ana_audit_chain.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC "ana-audit-v1"

struct enc {
  uint8_t *out;
  size_t cap, len;
};

static void put(struct enc *e, const void *p, size_t n) {
  if (e->len < e->cap)
    memcpy(e->out + e->len, p, e->len + n <= e->cap ? n : e->cap - e->len);
  e->len += n;
}

static void put_u64(struct enc *e, uint64_t v) {
  uint8_t b[8];
  for (int i = 7; i >= 0; i--, v >>= 8)
    b[i] = (uint8_t)v;
  put(e, b, 8);
}

static void put_u32(struct enc *e, uint32_t v) {
  uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  put(e, b, 4);
}

static void put_str(struct enc *e, const char *s) {
  size_t n = s ? strlen(s) : 0;
  put_u32(e, (uint32_t)n);
  if (n)
    put(e, s, n);
}

size_t ana_audit_encode(const struct ana_audit_record *r, uint8_t *out, size_t cap) {
  struct enc e = {out, out ? cap : 0, 0};
  put(&e, MAGIC, sizeof MAGIC - 1);
  put_u64(&e, r->seq);
  put_u64(&e, (uint64_t)r->at_ms);
  put_str(&e, r->kind);
  put_str(&e, r->account_id);
  put_str(&e, r->subject);
  put_str(&e, r->key_id);
  put_str(&e, r->method);
  put_str(&e, r->target_id);
  put_u32(&e, (uint32_t)r->code);
  put_str(&e, r->peer);
  put_str(&e, r->request_id);
  put(&e, r->prev_hash, ANA_AUDIT_HASH_LEN);
  return e.len;
}

int ana_audit_record_hash(const struct ana_audit_record *r, uint8_t out[ANA_AUDIT_HASH_LEN]) {
  uint8_t small[1024];
  size_t n = ana_audit_encode(r, small, sizeof small);
  uint8_t *buf = small;
  if (n > sizeof small) {
    if (!(buf = malloc(n)))
      return -1;
    ana_audit_encode(r, buf, n);
  }
  SHA256(buf, n, out);
  if (buf != small)
    free(buf);
  return 0;
}

static bool broken(struct ana_audit_verify_result *res, uint64_t seq, const char *fmt,
                   unsigned long long a, unsigned long long b) {
  res->ok = false;
  res->broken_seq = seq;
  snprintf(res->reason, sizeof res->reason, fmt, a, b);
  return false;
}

bool ana_audit_verify(const struct ana_audit_anchor *anchor, const struct ana_audit_record *records,
                      size_t n, struct ana_audit_verify_result *res) {
  memset(res, 0, sizeof *res);
  uint64_t prev_seq = anchor->seq;
  const uint8_t *prev_hash = anchor->hash;
  for (size_t i = 0; i < n; i++) {
    const struct ana_audit_record *r = &records[i];
    if (r->seq != prev_seq + 1) {
      if (r->seq > prev_seq + 1)
        return broken(res, prev_seq + 1,
                      "record %llu is missing (the next one present is %llu): deleted",
                      (unsigned long long)prev_seq + 1, (unsigned long long)r->seq);
      return broken(res, r->seq, "record %llu is out of order (after %llu): inserted",
                    (unsigned long long)r->seq, (unsigned long long)prev_seq);
    }
    if (memcmp(r->prev_hash, prev_hash, ANA_AUDIT_HASH_LEN) != 0)
      return broken(res, r->seq,
                    "record %llu does not link to record %llu (prev_hash differs): the "
                    "chain was rewritten here",
                    (unsigned long long)r->seq, (unsigned long long)prev_seq);
    if (!r->redacted) {
      uint8_t h[ANA_AUDIT_HASH_LEN];
      if (ana_audit_record_hash(r, h) < 0)
        return broken(res, r->seq, "out of memory at record %llu%.0llu", (unsigned long long)r->seq,
                      0ULL);
      if (memcmp(h, r->hash, ANA_AUDIT_HASH_LEN) != 0)
        return broken(res, r->seq,
                      "record %llu was edited: its fields do not hash to its stored hash%.0llu",
                      (unsigned long long)r->seq, 0ULL);
    }
    prev_seq = r->seq;
    prev_hash = r->hash;
    res->checked++;
  }
  res->ok = true;
  return true;
}

bool ana_audit_verify_head(const struct ana_audit_anchor *anchor,
                           const struct ana_audit_record *records, size_t n, uint64_t head_seq,
                           const uint8_t head_hash[ANA_AUDIT_HASH_LEN],
                           struct ana_audit_verify_result *res) {
  memset(res, 0, sizeof *res);
  const uint8_t *have = NULL;
  if (head_seq == anchor->seq) {
    have = anchor->hash;
  } else if (head_seq < anchor->seq) {
    res->ok = true; /* retention deleted it since: nothing to compare */
    return true;
  } else {
    for (size_t i = 0; i < n && !have; i++)
      if (records[i].seq == head_seq)
        have = records[i].hash;
  }
  uint64_t last = n ? records[n - 1].seq : anchor->seq;
  if (!have)
    return broken(res, head_seq,
                  "the signed head is record %llu but the chain ends at %llu: the newest "
                  "records were removed",
                  (unsigned long long)head_seq, (unsigned long long)last);
  if (memcmp(have, head_hash, ANA_AUDIT_HASH_LEN) != 0)
    return broken(res, head_seq,
                  "record %llu differs from the signed head's hash: the chain was rewritten "
                  "(%llu records now)",
                  (unsigned long long)head_seq, (unsigned long long)last);
  res->ok = true;
  return true;
}

int ana_audit_head_key(const uint8_t *master, size_t master_len, uint8_t key[32]) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
  size_t len = 32;
  int rc = -1;
  if (ctx && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) > 0 &&
      EVP_PKEY_CTX_set1_hkdf_salt(ctx, (const unsigned char *)"analyticsd", 10) > 0 &&
      EVP_PKEY_CTX_set1_hkdf_key(ctx, master, (int)master_len) > 0 &&
      EVP_PKEY_CTX_add1_hkdf_info(ctx, (const unsigned char *)"audit-head-v1", 13) > 0 &&
      EVP_PKEY_derive(ctx, key, &len) > 0 && len == 32)
    rc = 0;
  EVP_PKEY_CTX_free(ctx);
  return rc;
}

int ana_audit_head_mac(const uint8_t key[32], uint64_t seq, const uint8_t hash[ANA_AUDIT_HASH_LEN],
                       uint8_t mac[32]) {
  char hex[2 * ANA_AUDIT_HASH_LEN + 1], msg[128];
  ana_audit_hex(hash, ANA_AUDIT_HASH_LEN, hex);
  int n = snprintf(msg, sizeof msg, "audit-head-v1:%llu:%s", (unsigned long long)seq, hex);
  unsigned int len = 32;
  return HMAC(EVP_sha256(), key, 32, (const unsigned char *)msg, (size_t)n, mac, &len) ? 0 : -1;
}

void ana_audit_hex(const uint8_t *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

static int nibble(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int ana_audit_unhex(const char *in, uint8_t *out, size_t n) {
  if (!in || strlen(in) != 2 * n)
    return -1;
  for (size_t i = 0; i < n; i++) {
    int hi = nibble(in[2 * i]), lo = nibble(in[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}
