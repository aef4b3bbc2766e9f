/* The ClickHouse event store: its role table and its configuration. */
#ifndef ANA_CLICKHOUSE_BACKEND_H
#define ANA_CLICKHOUSE_BACKEND_H

#include "ana_store.h"

struct ana_store_settings;

/* The "clickhouse" event store (event_store.c): ships the spool to ClickHouse over HTTP; reads
 * are served from the local copy of the events. */
extern const struct ana_event_store_ops ana_clickhouse_event_store;

/* Hands the store its settings (borrowed; they outlive the store) before open. */
void ana_clickhouse_configure(const struct ana_store_settings *cfg);

/* --- the HTTP interface (client.c) --- */

struct ana_clickhouse;

/* A client for CLICKHOUSE_HOST with its credentials, database and timeout. NULL with err. */
struct ana_clickhouse *ana_clickhouse_open(const struct ana_store_settings *cfg,
                                           struct ana_error *err);
void ana_clickhouse_close(struct ana_clickhouse *ch);

/* The database name (borrowed). */
const char *ana_clickhouse_database(const struct ana_clickhouse *ch);

/* Runs one statement (sql, NUL-terminated); *out (may be NULL) receives the answer, owned by the
 * caller (ana_free), NUL-terminated. query_id names it in system.processes (NULL: none);
 * with_db runs it in the configured database. Returns 0; ANA_ERR_TIMEOUT when no answer came in
 * time; ANA_ERR_IO when ClickHouse cannot be reached or answered an error (err has its text). */
int ana_clickhouse_query(struct ana_clickhouse *ch, const char *sql, bool with_db,
                         const char *query_id, char **out, struct ana_error *err);

/* gzip (zlib, level 1) of data[0..len) into *out (owned by the caller, ana_free). */
int ana_clickhouse_gzip(const void *data, size_t len, unsigned char **out, size_t *out_len,
                        struct ana_error *err);

/* Sends an INSERT whose rows (in the statement's format) are body, gzip-compressed
 * (ana_clickhouse_gzip). Same returns as ana_clickhouse_query. */
int ana_clickhouse_insert_gzipped(struct ana_clickhouse *ch, const char *insert_sql,
                                  const void *body, size_t len, const char *query_id,
                                  struct ana_error *err);

#endif
