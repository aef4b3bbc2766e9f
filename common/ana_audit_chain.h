/* The audit log's hash chain: the canonical encoding of a record, its
 * SHA-256, verification of a run of records from an anchor, and the HMAC of
 * a signed chain head. Shared by analyticsd (which writes the chain) and
 * analyticsctl (which verifies it); depends on OpenSSL's libcrypto only. */
#ifndef ANA_AUDIT_CHAIN_H
#define ANA_AUDIT_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ANA_AUDIT_HASH_LEN 32

/* One audit record. Strings are borrowed (NULL is the same as ""). */
struct ana_audit_record {
  uint64_t seq;     /* 1, 2, ... in the order the records were written */
  int64_t at_ms;    /* wall-clock time of the outcome, Unix ms */
  const char *kind; /* "call" or "auth_failure" */
  const char *account_id, *subject, *key_id, *method, *target_id;
  int32_t code; /* the call's status code (0 = OK) */
  const char *peer, *request_id;
  uint8_t prev_hash[ANA_AUDIT_HASH_LEN]; /* hash of record seq - 1 (or the anchor's) */
  uint8_t hash[ANA_AUDIT_HASH_LEN];      /* SHA-256 of the canonical encoding */
  bool redacted; /* verification only: fields unknown (another account's): links checked */
};

/* Where the chain starts: the last record deleted by retention (seq 0 and a
 * zero hash before any was). */
struct ana_audit_anchor {
  uint64_t seq;
  uint8_t hash[ANA_AUDIT_HASH_LEN];
};

/* Canonical encoding: "ana-audit-v1", seq (u64) and at_ms (i64) big-endian,
 * kind, account_id, subject, key_id, method, target_id (each a u32
 * big-endian length and its bytes), code (i32 big-endian), peer,
 * request_id, then prev_hash. Writes at most cap bytes to out (may be NULL
 * with cap 0) and returns the full length. */
size_t ana_audit_encode(const struct ana_audit_record *r, uint8_t *out, size_t cap);

/* SHA-256 of r's canonical encoding into out. Returns 0, or -1 when out of
 * memory. */
int ana_audit_record_hash(const struct ana_audit_record *r, uint8_t out[ANA_AUDIT_HASH_LEN]);

/* The outcome of a verification. */
struct ana_audit_verify_result {
  bool ok;
  uint64_t checked;    /* records whose links (and hash, unless redacted) held */
  uint64_t broken_seq; /* first record that breaks the chain (0 when ok) */
  char reason[200];    /* what broke */
};

/* Checks records (ascending seq, the whole chain from the anchor up) link
 * to the anchor and to each other, with consecutive sequence numbers, and
 * that each unredacted record's hash is the hash of its fields. Stops at the
 * first broken link. Returns res->ok. */
bool ana_audit_verify(const struct ana_audit_anchor *anchor, const struct ana_audit_record *records,
                      size_t n, struct ana_audit_verify_result *res);

/* The key that signs chain heads: HKDF-SHA256 of the master key (salt
 * "analyticsd", info "audit-head-v1"). Returns 0 or -1. */
int ana_audit_head_key(const uint8_t *master, size_t master_len, uint8_t key[32]);

/* HMAC-SHA256 with key over "audit-head-v1:<seq>:<hash in hex>". Returns 0
 * or -1. */
int ana_audit_head_mac(const uint8_t key[32], uint64_t seq, const uint8_t hash[ANA_AUDIT_HASH_LEN],
                       uint8_t mac[32]);

/* Checks a signed head (seq, hash) against a verified chain (its anchor and
 * records, ascending): the head's record must be there with that hash (or
 * be the anchor). Fills res like ana_audit_verify. */
bool ana_audit_verify_head(const struct ana_audit_anchor *anchor,
                           const struct ana_audit_record *records, size_t n, uint64_t head_seq,
                           const uint8_t head_hash[ANA_AUDIT_HASH_LEN],
                           struct ana_audit_verify_result *res);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void ana_audit_hex(const uint8_t *in, size_t n, char *out);
/* Parses exactly 2n hex digits; returns 0 or -1. */
int ana_audit_unhex(const char *in, uint8_t *out, size_t n);

#endif
