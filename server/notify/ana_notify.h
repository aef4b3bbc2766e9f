/* Outbound notifications: per-account channels (email, Slack, webhook,
 * Telegram), an outbox in the local database written in the caller's
 * transaction, and sender threads that deliver at least once (retries with
 * exponential backoff and full jitter, the same idempotency key on every
 * attempt, a delivery log). Alerts and report distribution both use it. */
#ifndef ANA_NOTIFY_H
#define ANA_NOTIFY_H

#include "ana_error.h"
#include "ana_local_db.h"
#include "ana_store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ana_notify;
struct ana_arena;

struct ana_notify_options {
  struct ana_local_db *db;                   /* borrowed; outlives the module */
  const struct ana_catalog_ops *catalog_ops; /* where channels are stored */
  void *catalog;
  const char *smtp_url, *smtp_user, *smtp_password, *smtp_from; /* copied */
  const char *smtp_password_file; /* read at create, wins over smtp_password */
  const char *telegram_api_url;   /* copied */
  bool allow_private_networks;
  int threads;      /* sender threads = deliveries at once */
  int max_attempts; /* before the final failed state */
  int backoff_initial_ms, backoff_max_ms;
  int timeout_ms; /* one attempt */
  int poll_ms;    /* how often due retries are looked for */
  /* Seals each channel's secrets before they are stored and opens them when
   * loaded (borrowed; outlives the module). NULL: stored as given. */
  struct ana_crypto *crypto;
};

/* Opens the module (and recovers the outbox: rows that were being sent when
 * the process stopped are due again). Does not start sending. NULL with err
 * filled. */
struct ana_notify *ana_notify_create(const struct ana_notify_options *o, struct ana_error *err);
/* Starts the sender threads. */
int ana_notify_start(struct ana_notify *n, struct ana_error *err);
/* Stops the senders (an attempt under way finishes, bounded by the timeout)
 * and frees the module; NULL does nothing. Undelivered rows stay in the
 * outbox for the next start. */
void ana_notify_destroy(struct ana_notify *n);

/* --- notifications --- */

struct ana_notify_value {
  const char *name, *value; /* "value" -> "12.5", "threshold" -> "10", "group" -> "eu" */
};

struct ana_notify_link {
  const char *label, *url;
};

/* One notification; every string borrowed for the call. */
struct ana_notification {
  const char *account_id;
  const char *channel_id;
  /* What it is about, for the delivery log: "alert:<id>", "report:<id>". */
  const char *source;
  /* Stable across every attempt and restart (Idempotency-Key, email
   * Message-ID). Callers that may enqueue the same notification twice (a
   * replay) pass a key derived from what it is about, e.g.
   * "<alertId>-<instance>-<transition seq>": a second enqueue with the same
   * key is ignored. NULL or "": a new UUIDv7. At most 200 characters of
   * [A-Za-z0-9._:-]. */
  const char *idempotency_key;
  const char *title;    /* one line */
  const char *text;     /* the body, plain text */
  const char *severity; /* info, warning, critical; NULL: info */
  const struct ana_notify_value *values;
  size_t n_values;
  const struct ana_notify_link *links;
  size_t n_links;
  /* It carries encrypted values in clear (an alert of a creator with
   * pii:read): the outbox row holds it sealed with the account's data key
   * (ana_notify_options.crypto), opened when sent. */
  bool sensitive;
};

/* Writes n into the outbox on conn, the caller's connection to the local
 * database (ana_local_conn_open) on which it has begun a write transaction: the notification exists
 * exactly when the caller's transaction commits. Call ana_notify_wake after the commit. Fills
 * key_out (when not NULL, 201 bytes) with the idempotency key. Does not check the channel (a
 * deleted channel fails at delivery). Blocks on SQLite only; never on the network. */
struct ana_local_conn;
int ana_notify_enqueue_in_txn(struct ana_notify *n, struct ana_local_conn *conn,
                              const struct ana_notification *nt, char *key_out,
                              struct ana_error *err);

/* The same in a transaction of its own (for callers with none: reports).
 * Wakes the sender. */
int ana_notify_enqueue(struct ana_notify *n, const struct ana_notification *nt, char *key_out,
                       struct ana_error *err);

/* Tells the sender that rows were committed; never blocks. */
void ana_notify_wake(struct ana_notify *n);

/* One delivery attempt as the log holds it. */
struct ana_notify_attempt {
  int64_t outbox_id;
  const char *idempotency_key, *channel_id, *source;
  const char *state; /* of the notification now: pending, delivered, failed */
  int attempt;       /* 1, 2, ... */
  int64_t at_ms;
  const char *outcome; /* delivered, retry, failed */
  int status;          /* HTTP status, SMTP reply code, 0 when none */
  const char *error;   /* "" when delivered */
  int64_t duration_ms;
};

/* Non-zero stops. Pointers valid during the call. */
typedef int (*ana_notify_attempt_fn)(void *ctx, const struct ana_notify_attempt *a);

/* The delivery attempts of the account's notifications of source and of
 * channel_id (each exact, or any when NULL), newest first, attempts before
 * before_ms (0: any), at most limit. Thread-safe; blocks. */
int ana_notify_attempts(struct ana_notify *n, const char *account_id, const char *source,
                        const char *channel_id, int64_t before_ms, int limit,
                        ana_notify_attempt_fn fn, void *ctx, struct ana_error *err);

/* A notification's current state ("pending", "delivered", "failed") and
 * attempts made, by idempotency key; ANA_ERR_NOT_FOUND when none. */
int ana_notify_state(struct ana_notify *n, const char *account_id, const char *key, char *state,
                     size_t state_size, int *attempts, struct ana_error *err);

/* --- channels (stored in the catalog, kind "channel") --- */

/* The account's default channel of type (email, slack, webhook, telegram):
 * fills id_out (37 bytes). ANA_ERR_NOT_FOUND when the account has none;
 * ANA_ERR_INVALID when type is not a channel type. Blocks. */
int ana_notify_resolve_channel_type(struct ana_notify *n, const char *account_id, const char *type,
                                    char *id_out, struct ana_error *err);

/* Whether a channel id exists for the account (alert rules naming ids). */
bool ana_notify_channel_exists(struct ana_notify *n, const char *account_id, const char *id);

/* Whether type names a channel type. */
bool ana_notify_is_channel_type(const char *type);

/* The Channel messages of ChannelService (analytics.v1.Channel): the
 * service decodes and answers, this module validates, stores and masks.
 * Messages passed in are borrowed; messages returned are allocated in arena
 * (protobuf-c allocator of the arena) with secrets masked, except the
 * webhook signing secret in the answer to a creation. */
struct Analytics__V1__Channel;
int ana_notify_channel_create(struct ana_notify *n, const char *account_id,
                              const struct Analytics__V1__Channel *in, struct ana_arena *arena,
                              struct Analytics__V1__Channel **out, struct ana_error *err);
int ana_notify_channel_update(struct ana_notify *n, const char *account_id, const char *id,
                              const struct Analytics__V1__Channel *in, struct ana_arena *arena,
                              struct Analytics__V1__Channel **out, struct ana_error *err);
int ana_notify_channel_get(struct ana_notify *n, const char *account_id, const char *id,
                           struct ana_arena *arena, struct Analytics__V1__Channel **out,
                           struct ana_error *err);
/* Channels with id > after, by id, at most limit, each masked. */
int ana_notify_channel_list(struct ana_notify *n, const char *account_id, const char *after,
                            int limit, struct ana_arena *arena,
                            struct Analytics__V1__Channel ***out, size_t *n_out,
                            struct ana_error *err);
int ana_notify_channel_delete(struct ana_notify *n, const char *account_id, const char *id,
                              struct ana_error *err);

/* The outcome of a test notification. */
struct ana_notify_test_result {
  char outcome[16]; /* delivered, failed (retrying or not), or pending (no attempt yet) */
  int status;
  char error[512];
  int64_t duration_ms;
  char key[64];
};

/* Sends a test notification to the channel through the outbox (source
 * "test") and waits at most the attempt timeout plus wait_ms for its first
 * attempt; a failed test is retried like any notification. Returns 0 with
 * the first attempt's outcome in res, or NOT_FOUND. Blocks: call it on a
 * worker. */
int ana_notify_channel_test(struct ana_notify *n, const char *account_id, const char *id,
                            int wait_ms, struct ana_notify_test_result *res, struct ana_error *err);

/* --- pieces with unit tests --- */

/* Next retry delay after `failures` failed attempts (1, 2, ...): uniform in
 * [0, min(max_ms, initial_ms * 2^(failures-1))]; rnd is a uniform 64-bit
 * random number. */
int64_t ana_notify_backoff_ms(int failures, int initial_ms, int max_ms, uint64_t rnd);

/* X-Analytics-Signature value for body at unix time t:
 * "t=<t>,v1=<64 hex digits of HMAC-SHA256(secret, "<t>.<body>")>". out must
 * hold 100 bytes. */
void ana_notify_sign(const char *secret, int64_t t, const char *body, size_t body_len,
                     char out[100]);

#endif
