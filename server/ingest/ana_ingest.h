/* Event ingestion: validation and enrichment of each event, the group
 * committer (deduplication keys and the spool of committed events in the
 * local database, in one durable transaction), which hands every commit to
 * the post-commit pipeline. */
#ifndef ANA_INGEST_H
#define ANA_INGEST_H

#include "ana_arena.h"
#include "ana_crypto_fields.h"
#include "ana_error.h"
#include "ana_post_commit.h"
#include "ana_store.h"
#include "analytics/v1/events.pb-c.h"

#include <stdbool.h>
#include <stdint.h>

/* Limits and policies, from the configuration. */
struct ana_ingest_limits {
  int event_max_bytes;
  int event_max_properties;
  int event_max_depth;
  int batch_max_events;
  long batch_max_bytes;
  int retention_days;
  long event_max_future_ms;
  bool reject_future; /* TIMESTAMP_POLICY=reject */
  int clock_skew_tolerance_ms;
};

/* What is known about the request every event of it came in. */
struct ana_ingest_request {
  const char *account_id; /* the caller's, from the principal */
  const char *client_ip;  /* "" when unknown */
  int64_t now_ms;         /* receive time */
  const struct ana_ingest_limits *limits;
  /* The client's User-Agent and first Accept-Language tag, as the REST
   * bridge passes them (x-client-user-agent, x-client-locale): an event's
   * context.userAgent / locale when it has none. NULL = not known. */
  const char *user_agent;
  const char *locale;
  /* ENCRYPTED_FIELDS (NULL: none) and the keys that seal them. */
  const struct ana_crypto_fields *encrypted;
  struct ana_crypto *crypto;
};

#define ANA_INGEST_MAX_VIOLATIONS 8

/* One event of a request, validated and enriched. */
struct ana_ingest_item {
  Analytics__V1__EventResult__Status status; /* ACCEPTED/CORRECTED until committed, or REJECTED */
  const char *event_id;
  int64_t stored_ts_ms;
  int64_t skew_ms;
  size_t n_violations;
  struct {
    const char *field; /* JSON path, e.g. "events[3].eventName" */
    const char *description;
  } violations[ANA_INGEST_MAX_VIOLATIONS];
  struct ana_event_record record; /* valid when status != REJECTED */
};

/* What an event's record stores besides its payload, as ingest makes it:
 * the properties to index and aggregate (indexed: the event's, with any
 * encrypted value replaced by its blind index) as JSON, and the free text
 * (names and indexed values, blind indexes left out), both in arena.
 * Returns 0 or ANA_ERR_NOMEM. */
int ana_ingest_record_text(const Analytics__V1__Event *ev, const Google__Protobuf__Struct *indexed,
                           struct ana_arena *arena, const char **properties_json,
                           const char **search_text);

/* Validates and enriches one event; `path` prefixes the JSON paths of its
 * violations ("events[3]", or "" for a single event). Everything it makes
 * lives in arena. Returns 0 (item filled, possibly REJECTED) or
 * ANA_ERR_NOMEM. Does not block. */
int ana_ingest_prepare(const struct ana_ingest_request *req, const Analytics__V1__Event *event,
                       const char *path, struct ana_arena *arena, struct ana_ingest_item *item);

/* One event with what its request knows of it already. */
struct ana_ingest_event {
  const Analytics__V1__Event *event; /* borrowed */
  size_t packed_size;                /* protobuf_c_message_get_packed_size(event) */
  const char *new_id; /* the id it gets when it has none (borrowed); NULL: a new UUIDv7 */
};

/* ana_ingest_prepare of in->event without sizing it again. Thread-safe for
 * distinct items and arenas (a batch's events may be prepared in parallel). */
int ana_ingest_prepare_known(const struct ana_ingest_request *req,
                             const struct ana_ingest_event *in, const char *path,
                             struct ana_arena *arena, struct ana_ingest_item *item);

/* --- group commit --- */

struct ana_committer;

/* One request's events waiting for a commit. The committer fills each
 * record's duplicate/seq, then calls done once, on its answer thread (the
 * commit thread has moved on to the next commit): rc 0 when the commit
 * holding them is durable, or a negative error (nothing of them stored; err
 * says why). The caller keeps the request alive until done. */
struct ana_commit_request {
  struct ana_event_record *records;
  size_t n;
  void (*done)(struct ana_commit_request *req, int rc, const struct ana_error *err);
  void *ctx;
  struct ana_commit_request *next; /* the committer's queue */
  int64_t enqueued_ns;             /* monotonic; for the queue-wait histogram */
};

struct ana_committer_options {
  int batch_size;             /* most events per commit */
  int processing_interval_ms; /* longest wait for more events when commits are shared */
  int queue_max;              /* most events waiting; beyond it submit fails */
  int retention_days;
  int retention_sweep_interval_ms;
  /* Hears each committed request's records, in commit order, on the commit
   * thread, before its answer (borrowed; started; may be NULL). */
  struct ana_post_commit *post_commit;
};

/* Starts the commit thread over the local database (deduplication keys and
 * the spool of committed events) and the roles (retention; roles is copied,
 * what it points to borrowed). */
struct ana_committer *ana_committer_create(struct ana_local_db *db,
                                           const struct ana_store_roles *roles,
                                           const struct ana_committer_options *o,
                                           struct ana_error *err);

/* Queues req. Returns 0, or ANA_ERR_FULL with err RESOURCE_EXHAUSTED when
 * the queue holds queue_max events, or ANA_ERR_CLOSED when stopping. Thread-safe; never
 * blocks for a commit. */
int ana_committer_submit(struct ana_committer *c, struct ana_commit_request *req,
                         struct ana_error *err);

/* Commits everything queued (its last commits still reach the post-commit
 * pipeline), then stops the thread. */
void ana_committer_destroy(struct ana_committer *c);

/* Counters for health and metrics. */
struct ana_committer_stats {
  uint64_t commits, events_stored, events_duplicate, failures;
  uint64_t queued_events;
  uint64_t last_seq;
};
void ana_committer_stats(struct ana_committer *c, struct ana_committer_stats *out);

#endif
