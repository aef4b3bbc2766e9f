/* The audit log: records (ana_audit_chain.h) queued by the call runtime and
 * written off the request path by one writer thread, which chains them
 * (SHA-256 of the previous record), deletes those older than the retention
 * and keeps an anchor, and signs the chain head (HMAC-SHA256 with a key
 * derived from the master key) into the JSON log as an "audit_head" line.
 * The store implements struct ana_audit_store_ops (SQLite: table audit_log). */
#ifndef ANA_AUDIT_H
#define ANA_AUDIT_H

#include "ana_audit_chain.h"
#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_local_db;

/* What a listing asks for. Strings borrowed; NULL or "" = any. */
struct ana_audit_query {
  const char *account_id; /* required: only this account's records (chain: others redacted) */
  int64_t from_ms, to_ms; /* [from, to); 0 = open */
  const char *subject, *method;
  int32_t code;        /* -1 = any */
  uint64_t before_seq; /* newest-first paging: seq < before_seq (0 = from the head) */
  bool chain;          /* every record with seq > after_seq, ascending, no filters */
  uint64_t after_seq;
  int limit;
};

/* Receives one record (pointers valid during the call; redacted set for
 * another account's record in a chain listing). Non-zero stops. */
typedef int (*ana_audit_record_fn)(void *ctx, const struct ana_audit_record *r);

#define ANA_AUDIT_STORE_VERSION 1

struct ana_audit_store_ops {
  int version; /* ANA_AUDIT_STORE_VERSION */
  const char *name;
  void *(*open)(struct ana_local_db *db, struct ana_error *err);
  /* The last record's (seq, hash), or the anchor's when there is none. */
  int (*head)(void *store, struct ana_audit_anchor *out, struct ana_error *err);
  int (*anchor)(void *store, struct ana_audit_anchor *out, struct ana_error *err);
  /* Appends records in one transaction, chaining them to the head as stored
   * then (seq, prev_hash and hash are set in records); durable on return. */
  int (*append)(void *store, struct ana_audit_record *records, size_t n, struct ana_error *err);
  /* Deletes records older than before_ms, moving the anchor to the last one
   * deleted; *deleted receives how many. One transaction. */
  int (*retain)(void *store, int64_t before_ms, int64_t *deleted, struct ana_error *err);
  int (*list)(void *store, const struct ana_audit_query *q, ana_audit_record_fn fn, void *ctx,
              struct ana_error *err);
  void (*close)(void *store);
};

struct ana_audit_options {
  const struct ana_audit_store_ops *ops; /* borrowed */
  void *store;                           /* opened by ops->open; closed by the caller */
  size_t queue_max;                      /* records waiting for the writer; beyond: dropped */
  int retention_days;                    /* AUDIT_RETENTION_DAYS; 0 keeps everything */
  int sign_interval_ms;                  /* AUDIT_SIGN_INTERVAL; 0: only at stop */
  const uint8_t *master_key;             /* copied; the head key is derived from it */
  size_t master_key_len;
};

struct ana_audit;

/* Loads the chain head, derives the head key and starts the writer thread.
 * Returns NULL with err filled. */
struct ana_audit *ana_audit_create(const struct ana_audit_options *o, struct ana_error *err);

/* Writes what is queued, signs the head once more and stops. NULL does nothing. */
void ana_audit_destroy(struct ana_audit *a);

/* Queues a copy of r (seq, at_ms as given when non-zero, hashes ignored):
 * never blocks. When the queue is full the record is dropped, counted in
 * ana_audit_dropped_total and an error logged (rate-limited). Thread-safe. */
void ana_audit_submit(struct ana_audit *a, const struct ana_audit_record *r);

/* Waits until everything queued before the call is written (tests, the
 * service's listing: a caller sees its own earlier calls). Returns 0 or
 * ANA_ERR_TIMEOUT. */
int ana_audit_flush(struct ana_audit *a, int timeout_ms);

/* Runs retention now with the given clock (tests); the writer runs it
 * hourly. Returns 0 or a negative error. */
int ana_audit_retain_now(struct ana_audit *a, int64_t now_ms, struct ana_error *err);

/* Signs and logs the current head now. */
void ana_audit_sign_now(struct ana_audit *a);

int ana_audit_list(struct ana_audit *a, const struct ana_audit_query *q, ana_audit_record_fn fn,
                   void *ctx, struct ana_error *err);
int ana_audit_anchor(struct ana_audit *a, struct ana_audit_anchor *out, struct ana_error *err);

uint64_t ana_audit_dropped(const struct ana_audit *a);

/* Reads the master key from path, or, when path is NULL or "", from (or
 * into, generating 32 random bytes as 64 hex digits, mode 0600)
 * <data_dir>/master.key with a warning. The key is the file's bytes with
 * trailing white space removed. Returns the length, or a negative error
 * with err naming the file. */
int ana_audit_master_key(const char *path, const char *data_dir, uint8_t *out, size_t cap,
                         struct ana_error *err);

#endif
