/* The free-text index of the embedded event store: an FTS5 table in its own
 * database file (analytics-text.db next to analytics.db), filled from the
 * committed events by its own thread, off the commit path. See
 * text_index.c for why and how it stays consistent with the events. */
#ifndef ANA_TEXT_INDEX_H
#define ANA_TEXT_INDEX_H

#include "ana_error.h"

#include <stddef.h>
#include <stdint.h>

struct ana_text_index;

/* The index file for the events database at events_db_path. */
char *ana_text_index_path(const char *events_db_path);

/* Opens (or creates) the index of the events database at events_db_path
 * and starts its thread. */
struct ana_text_index *ana_text_index_open(const char *events_db_path, struct ana_error *err);
void ana_text_index_close(struct ana_text_index *ti);

/* Waits until every event up to seq is indexed, at most timeout_ms; on
 * time-out fails with UNAVAILABLE saying how far the index is. */
int ana_text_index_wait(struct ana_text_index *ti, uint64_t seq, int timeout_ms,
                        struct ana_error *err);

/* The highest commit sequence number indexed so far (all below it are). */
uint64_t ana_text_index_indexed_seq(struct ana_text_index *ti);

/* Removes the entries of these events (retention), durably. The events must
 * still be in the events database: their text says which words to remove. */
int ana_text_index_remove(struct ana_text_index *ti, const int64_t *seqs, size_t n,
                          struct ana_error *err);

/* Indexes every committed event now, on the calling thread. */
int ana_text_index_catch_up(struct ana_text_index *ti, struct ana_error *err);

#endif
