/* The post-commit pipeline: the one named, ordered list of subscribers that
 * hear every commit of the group committer, with per-subscriber counters.
 *
 * Contract of a subscriber's hook (it runs on the commit thread, between a
 * commit and the answers of the requests it held, so every microsecond it
 * takes is added to every acknowledgement's latency):
 *   - it hands over and returns: copy or reference what it needs, queue it,
 *     signal its own thread; work that takes time happens there;
 *   - it never blocks: no file, socket or database I/O, no waiting on a
 *     condition, no lock that any thread holds for longer than a few memory
 *     operations (a lock held across I/O or a scan is a lock it may not take);
 *   - it never fails the commit: the events are durable when it is called;
 *     what it cannot keep (a full queue) it drops or counts, and says so in
 *     its own metrics;
 *   - it sees the records of one request per call, in commit order, with
 *     duplicates (record.duplicate) included: it skips them itself.
 *
 * The order is declared once, when the pipeline is made (the list of names);
 * each subscriber registers itself under its name from its module's start,
 * in any order, and runs at its declared place. A name missing from the
 * list, registered twice, or registered after ana_post_commit_start is
 * refused. A declared name nobody registers is skipped (an optional module).
 *
 * Depends on common/ only: the record type is only named here, so any layer
 * from server/store/ up can provide a subscriber. */
#ifndef ANA_POST_COMMIT_H
#define ANA_POST_COMMIT_H

#include "ana_error.h"

#include <stddef.h>
#include <stdint.h>

struct ana_event_record;
struct ana_post_commit;

/* A subscriber's hook: the records of one request (borrowed, valid during
 * the call), on the commit thread. See the contract above. */
typedef void (*ana_post_commit_fn)(void *ctx, const struct ana_event_record *records, size_t n);

/* Most subscribers in one pipeline. */
#define ANA_POST_COMMIT_MAX 16

/* Makes a pipeline whose subscribers run in the order of names (borrowed:
 * must outlive the pipeline; at most ANA_POST_COMMIT_MAX, distinct). Its
 * counters appear on /metrics from now on, labelled by name. Returns NULL
 * with err filled. */
struct ana_post_commit *ana_post_commit_create(const char *const *names, size_t n,
                                               struct ana_error *err);

/* Registers the subscriber declared as name (ctx borrowed: must stay valid
 * until the pipeline is destroyed or the committer that runs it is).
 * Returns 0, or ANA_ERR_NOT_FOUND (name not declared), ANA_ERR_EXISTS
 * (registered already) or ANA_ERR_CLOSED (the pipeline has started), with
 * err naming the subscriber. Not thread-safe: call before start. */
int ana_post_commit_register(struct ana_post_commit *pc, const char *name, ana_post_commit_fn fn,
                             void *ctx, struct ana_error *err);

/* Seals the list: from now on ana_post_commit_run may be called (from one
 * thread at a time) and registrations are refused. Call before traffic. */
void ana_post_commit_start(struct ana_post_commit *pc);

/* Hands one request's records to every registered subscriber in order and
 * counts records and time per subscriber. The commit thread's call. Does
 * nothing before start. */
void ana_post_commit_run(struct ana_post_commit *pc, const struct ana_event_record *records,
                         size_t n);

/* One subscriber's counters (for tests and health). */
struct ana_post_commit_stats {
  const char *name;     /* borrowed from the declared names */
  int registered;       /* 1 when a hook runs under this name */
  uint64_t calls;       /* hook calls (one per committed request) */
  uint64_t records;     /* records handed to the hook, duplicates included */
  uint64_t nanoseconds; /* time spent inside the hook */
};

/* The counters of the i-th declared subscriber (i < the number declared).
 * Returns 0 or ANA_ERR_NOT_FOUND. Thread-safe. */
int ana_post_commit_stats(const struct ana_post_commit *pc, size_t i,
                          struct ana_post_commit_stats *out);

/* Removes the counters from /metrics and frees; NULL does nothing. Call
 * after whatever runs it (the committer) has stopped. */
void ana_post_commit_destroy(struct ana_post_commit *pc);

#endif
