/* The embedded (SQLite) implementations of the storage roles. */
#ifndef ANA_SQLITE_BACKENDS_H
#define ANA_SQLITE_BACKENDS_H

#include "ana_store.h"

extern const struct ana_event_store_ops ana_sqlite_event_store;
extern const struct ana_search_index_ops ana_sqlite_search_index;
extern const struct ana_catalog_ops ana_sqlite_catalog;
extern const struct ana_api_key_store_ops ana_sqlite_api_key_store;
extern const struct ana_audit_store_ops ana_sqlite_audit_store;
extern const struct ana_data_key_store_ops ana_sqlite_data_key_store;

/* The events matching q in the local database, newest first: the event
 * store's search and, with text_path (the free-text index's file, attached
 * to the reader), the search index's. */
int ana_sqlite_query_events(struct ana_local_db *db, const char *text_path,
                            const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                            struct ana_error *err);

#endif
