/* The embedded (SQLite) implementations of the storage roles. */
#ifndef ANA_SQLITE_BACKENDS_H
#define ANA_SQLITE_BACKENDS_H

#include "ana_store.h"

extern const struct ana_event_store_ops ana_sqlite_event_store;
extern const struct ana_catalog_ops ana_sqlite_catalog;
extern const struct ana_api_key_store_ops ana_sqlite_api_key_store;
extern const struct ana_audit_store_ops ana_sqlite_audit_store;
extern const struct ana_data_key_store_ops ana_sqlite_data_key_store;

#endif
