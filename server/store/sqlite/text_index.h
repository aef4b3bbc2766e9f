/* The free-text index of the embedded event store: an FTS5 table in its own
 * database file (analytics-text.db next to analytics.db), filled from the
 * committed events by its own thread, off the commit path. See
 * text_index.c for why and how it stays consistent with the events. */
#ifndef ANA_TEXT_INDEX_H
#define ANA_TEXT_INDEX_H

#include "ana_error.h"

struct ana_event_record;

#include <stddef.h>
#include <stdint.h>

struct ana_text_index;

/* The index file for the events database at events_db_path. */
char *ana_text_index_path(const char *events_db_path);

/* Opens (or creates) the index of the events database at events_db_path
 * and starts its thread. */
struct ana_text_index *ana_text_index_open(const char *events_db_path, struct ana_error *err);
void ana_text_index_close(struct ana_text_index *ti);

/* The mover's hand-over (ana_local_db_follow_moves): the events just moved
 * into the events table, held (copied, bounded) so that the thread indexes
 * them without reading them back. Nothing else depends on it: events not
 * handed over, or dropped, are read from the events. */
void ana_text_index_follow(void *ctx, const struct ana_event_record *records, size_t n);

/* Waits until every event up to seq is indexed, at most timeout_ms; on
 * time-out fails with UNAVAILABLE saying how far the index is. */
int ana_text_index_wait(struct ana_text_index *ti, uint64_t seq, int timeout_ms,
                        struct ana_error *err);

/* The highest commit sequence number indexed so far (all below it are). */
uint64_t ana_text_index_indexed_seq(struct ana_text_index *ti);

/* Removes the entries of these events (retention), named by their keys in
 * the events table, durably. The events must still be in the events
 * database: their text says which words to remove. */
int ana_text_index_remove(struct ana_text_index *ti, const int64_t *keys, size_t n,
                          struct ana_error *err);

/* Indexes these events again from their stored text, durably (after
 * ana_text_index_remove and a rewrite of their text): one with an entry,
 * not yet indexed or gone is skipped. */
int ana_text_index_reindex(struct ana_text_index *ti, const int64_t *keys, size_t n,
                           struct ana_error *err);

/* Leaves nothing of removed entries in the index's files: merges its
 * segments, zeroes the freed pages and empties its WAL. Long; blocks the
 * index's thread meanwhile. */
int ana_text_index_compact(struct ana_text_index *ti, struct ana_error *err);

/* Indexes every committed event now, on the calling thread. */
int ana_text_index_catch_up(struct ana_text_index *ti, struct ana_error *err);

/* The index's format, its file's user_version; a file of another format is
 * built again from the events. */
#define ANA_TEXT_INDEX_FORMAT 2

/* Besides its words, an event's entry holds reserved tokens (they start
 * with U+E000, which the words never contain: ana_text_index_fold) for
 * its event name and the day, hour, minute and second of its timestamp,
 * so that a search can ask FTS5 for the matches of one name and one
 * stretch of time. Levels 1 to ANA_TEXT_INDEX_LEVELS. (No account token:
 * one in every event, in an AND, made FTS5 step through its whole doclist,
 * tens of ms a query; the account is checked on the events.) */
#define ANA_TEXT_INDEX_LEVELS 4
#define ANA_TEXT_TOKEN_MAX 40

/* The length of the time buckets of a level, in ms (1: a day ... 4: a
 * second). */
int64_t ana_text_index_bucket_ms(int level);
/* The bucket of a level holding ts_ms (floor division). */
int64_t ana_text_index_bucket(int level, int64_t ts_ms);
/* The reserved tokens, NUL-terminated in out. */
void ana_text_index_name_token(const char *event_name, char out[ANA_TEXT_TOKEN_MAX]);
void ana_text_index_bucket_token(int level, int64_t bucket, char out[ANA_TEXT_TOKEN_MAX]);
/* A copy of text (caller frees) with U+E000 replaced by U+E001, as the
 * index reads an event's words and a search reads the query's; NULL when
 * out of memory. */
char *ana_text_index_fold(const char *text);

#endif
