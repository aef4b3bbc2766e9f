/* Internals of libanalytics shared by its source files (not installed). */
#ifndef ANALYTICS_INTERNAL_H
#define ANALYTICS_INTERNAL_H

#include "analytics/analytics.h"

#include "ana_arena.h"
#include "ana_client_rpc.h"
#include "ana_error.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

/* An event being built: the JSON form of analytics.v1.Event (eventType,
 * eventName, sessionId, eventId, context, properties), decoded by the JSON
 * codec when it is tracked. */
struct analytics_event {
  json_t *obj;   /* owned */
  int64_t ts_ms; /* valid when has_ts */
  bool has_ts;
};

/* One queued event: the packed analytics.v1.Event, with its id in front. */
struct analytics_item {
  uint8_t *data; /* owned, len bytes */
  size_t len;
  int64_t enqueued_ms; /* monotonic */
};

/* A bounded FIFO of items (a ring). Not locked: the client's mutex guards it. */
struct analytics_queue {
  struct analytics_item *items;
  size_t cap, head, len;
};

int analytics_queue_init(struct analytics_queue *q, size_t cap);
void analytics_queue_fini(struct analytics_queue *q); /* frees the items' data too */
/* Appends it (ownership moves on success). Returns 0 or ANALYTICS_ERR_QUEUE_FULL. */
int analytics_queue_push(struct analytics_queue *q, const struct analytics_item *it);
/* Moves up to max items from the head into out; returns how many. */
size_t analytics_queue_pop(struct analytics_queue *q, struct analytics_item *out, size_t max);

/* Retry delay before attempt `attempt` (1 for the first retry), "equal
 * jitter": cap = min(max_ms, base_ms * 2^(attempt-1)), delay uniformly in
 * [cap/2, cap], driven by rnd (any 64-bit random value). */
int64_t analytics_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, uint64_t rnd);

/* The bearer token of a client as its metadata value ("Bearer <token>"):
 * immutable, shared by the client and every call that started with it, freed
 * by the last reference. */
struct analytics_token {
  atomic_int refs;
  char authorization[];
};

/* A new token with one reference; NULL when out of memory. */
struct analytics_token *analytics_token_new(const char *token);
/* Drops a reference; NULL does nothing. */
void analytics_token_release(struct analytics_token *tok);

/* Options with the defaults applied; the strings are owned. */
struct analytics_config {
  char *target;
  char *api_key;    /* or NULL */
  char *account_id; /* or NULL */
  /* x-api-key and x-account-id as call metadata: key, value, ..., NULL. */
  const char *metadata[5];
  analytics_options_t o;
};

/* A server stream in progress, listed on its client so that
 * analytics_client_cancel_streams can reach it from another thread. */
struct analytics_open_stream {
  struct ana_client_stream *s; /* borrowed: the streaming call owns it */
  bool cancelled;
  struct analytics_open_stream *next;
};

struct analytics_client {
  struct analytics_config cfg;
  struct ana_client_channel *channel;

  /* The current bearer token (NULL: none), replaced by
   * analytics_client_set_token; guarded by token_mu, held only to take or
   * swap a reference. */
  pthread_mutex_t token_mu;
  struct analytics_token *token;

  pthread_mutex_t mu;
  pthread_cond_t work_cond; /* the worker waits here */
  pthread_cond_t done_cond; /* flush waits here */
  pthread_t worker;
  bool worker_started;

  /* Guarded by mu. */
  struct analytics_queue queue;
  bool closing;
  int64_t close_deadline_ms; /* monotonic, valid when closing */
  uint64_t flush_target;     /* resolved count a flush is waiting for */
  uint64_t resolved;         /* events delivered, rejected or given up */
  uint64_t inflight;
  uint64_t rnd_state;
  analytics_stats_t st;
  struct analytics_open_stream *streams; /* streams in progress */
};

/* Clock helpers, in milliseconds. */

/* Turns a runtime result into a library code and fills err from aerr. */
int analytics_from_ana(int rc, const struct ana_error *aerr, analytics_error_t *err);
/* Fills err (if any) and returns code. */
int analytics_fail(analytics_error_t *err, int code, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void analytics_clear(analytics_error_t *err);

/* Call options for one call of client c: its timeout and credentials.
 * *tok receives a reference on the token the call sends (or NULL), which
 * out->authorization points into: release it with analytics_token_release
 * once the call has returned. */
void analytics_call_options(analytics_client_t *c, struct ana_call_options *out,
                            struct analytics_token **tok);

/* Builds the analytics.v1.Event of ev in arena with its id and timestamp
 * filled. Returns 0 or a negative code with err filled. */
int analytics_event_build(const analytics_event_t *ev, struct ana_arena *arena,
                          ProtobufCMessage **out, analytics_error_t *err);

/* The delivery thread (client.c). */
void *analytics_worker_main(void *arg);

#endif
