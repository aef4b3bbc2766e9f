/* The free-text index's format 1, rebuilt for search_bench to compare against: a retired layout
 * (positions kept; its rowid then the commit sequence, here the event's row key, as the events
 * table has no index on seq any more) in a file of the benchmark's own, old-text.db, and
 * its query (every match joined with its event and sorted). Its query reads analytics.db's
 * events table directly, as the format did; nothing else may. */
#ifndef SEARCH_FORMAT1_H
#define SEARCH_FORMAT1_H

#include "ana_store.h"

/* Event number i's free-text (i from 0, in commit order), as the benchmark's fill made it. */
typedef void (*search_format1_text_fn)(long i, char *buf, size_t len);

/* Builds DIR/old-text.db for n_events events, in batches of 1,000 as its thread did, each
 * event's text from text_of (the store keeps it only compressed in the event's body). Returns
 * events per second; exits on failure. */
double search_format1_build(const char *dir, long n_events, search_format1_text_fn text_of);

/* Opens DIR/analytics.db read-only with DIR/old-text.db attached, for search_format1_search;
 * exits on failure. */
void search_format1_open(const char *dir);
void search_format1_close(void);

/* q as format 1 answered it: hit for each match, newest first, until it returns non-zero (its
 * payload NULL and seq 0). */
void search_format1_search(const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx);

#endif
