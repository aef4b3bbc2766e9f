/* Each account's catalog of the event names it has sent (first and last
 * seen, count), kept off the commit path: the commit hook hands names to an
 * in-memory map and a thread of its own writes them to the local database
 * (table event_names) at least once a second. See event_names.c. */
#ifndef ANA_EVENT_NAMES_H
#define ANA_EVENT_NAMES_H

#include "ana_error.h"
#include "ana_store.h"

#include <stddef.h>
#include <stdint.h>

struct ana_event_names;

/* Called on the catalog's thread after names new to an account were
 * stored (names borrowed, valid during the call). */
typedef void (*ana_event_names_added_fn)(void *ctx, const char *account_id,
                                         const char *const *names, size_t n);

struct ana_event_names_options {
  int max_names; /* EVENT_NAMES_MAX: names kept per account */
};

/* Opens the catalog on the local database. Its thread starts with
 * ana_event_names_start. Returns NULL with err filled. */
struct ana_event_names *ana_event_names_create(struct ana_local_db *db,
                                               const struct ana_event_names_options *o,
                                               struct ana_error *err);

/* Starts the thread (first catching up with the events committed after
 * what the catalog holds); added (may be NULL) hears new names. */
int ana_event_names_start(struct ana_event_names *en, ana_event_names_added_fn added, void *ctx,
                          struct ana_error *err);

/* Persists what was handed over, stops the thread and closes; NULL does
 * nothing. Call after the committer is destroyed. */
void ana_event_names_destroy(struct ana_event_names *en);

/* The commit hook (ctx: the catalog). Never blocks on the database. */
void ana_event_names_on_commit(void *ctx, const struct ana_event_record *records, size_t n);

/* One entry of the catalog; pointers valid during the call. */
struct ana_event_name_info {
  const char *name;
  int64_t first_seen_ms, last_seen_ms;
  int64_t count;
};

/* Receives one entry; non-zero stops. */
typedef int (*ana_event_name_fn)(void *ctx, const struct ana_event_name_info *info);

/* The stored names of the account that start with prefix (NULL or "" =
 * all) and come after `after` (NULL or "" = from the first), by name, at
 * most limit. Thread-safe; blocks. */
int ana_event_names_list(struct ana_event_names *en, const char *account_id, const char *prefix,
                         const char *after, int limit, ana_event_name_fn fn, void *ctx,
                         struct ana_error *err);

/* Every name of the account seen so far: the stored ones and those handed
 * over but not stored yet (a name may come twice; counts are not given).
 * Thread-safe; blocks. */
int ana_event_names_each_seen(struct ana_event_names *en, const char *account_id,
                              ana_event_name_fn fn, void *ctx, struct ana_error *err);

/* Stores what was handed over now (tests, shutdown). */
int ana_event_names_flush(struct ana_event_names *en, struct ana_error *err);

#endif
