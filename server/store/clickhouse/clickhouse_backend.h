/* The ClickHouse event store: its role table and its configuration. */
#ifndef ANA_CLICKHOUSE_BACKEND_H
#define ANA_CLICKHOUSE_BACKEND_H

#include "ana_store.h"

struct ana_store_settings;

/* The "clickhouse" event store (event_store.c): ships the spool to ClickHouse over HTTP; search
 * and scans are pushed down to ClickHouse (reads.c), replays in commit order (scan_seq) read
 * the local copy of this instance's events, scan_other ClickHouse's rows of another instance
 * up to the sequence it marked as shipped (table shipped). */
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

/* Runs one SELECT in the configured database whose answer may be binary (FORMAT RowBinary):
 * *out (owned by the caller, ana_free) holds *out_len bytes. Same returns as
 * ana_clickhouse_query, and ANA_ERR_FULL when the answer exceeds the client's limit (64 MiB). */
int ana_clickhouse_query_bin(struct ana_clickhouse *ch, const char *sql, char **out,
                             size_t *out_len, struct ana_error *err);

/* The gzip level inserts are sent with (CLICKHOUSE_GZIP_LEVEL), 0 when CLICKHOUSE_GZIP is false. */
int ana_clickhouse_gzip_level(const struct ana_clickhouse *ch);

/* A gzip stream (libdeflate at level, 1-12) into a growing buffer, fed piece by piece (the rows
 * of a batch as they are encoded, while they are still in the cache): each piece becomes one
 * gzip member. With level 0 the data is only appended (an insert body sent as it is). */
struct ana_clickhouse_gz;
/* NULL when out of memory. */
struct ana_clickhouse_gz *ana_clickhouse_gz_new(int level);
/* Compresses data[0..len); finish ends the stream. 0, or ANA_ERR_NOMEM / ANA_ERR_INTERNAL. */
int ana_clickhouse_gz_add(struct ana_clickhouse_gz *g, const void *data, size_t len, bool finish);
/* The finished stream (owned by the caller, ana_free) and its length; g keeps nothing. */
unsigned char *ana_clickhouse_gz_take(struct ana_clickhouse_gz *g, size_t *len);
void ana_clickhouse_gz_free(struct ana_clickhouse_gz *g);

/* Sends an INSERT whose rows (in the statement's format) are body, gzip-compressed
 * (ana_clickhouse_gz_*) unless CLICKHOUSE_GZIP is false. Same returns as ana_clickhouse_query. */
int ana_clickhouse_insert_gzipped(struct ana_clickhouse *ch, const char *insert_sql,
                                  const void *body, size_t len, const char *query_id,
                                  struct ana_error *err);

/* --- rows (rows.c) --- */

/* RowBinary rows of the events table, growing; failed once out of memory (nothing more added). */
struct ana_ch_rows {
  unsigned char *p;
  size_t len, cap;
  bool failed;
};

/* The partition (Date: days since 1970, clamped to 0..65535) of a timestamp. */
int ana_clickhouse_day(int64_t ts_ms);

/* Appends e's row in the columns' order of the shipper's INSERT (event_store.c). */
void ana_clickhouse_put_row(struct ana_ch_rows *b, const char *instance, uint64_t attempt,
                            const struct ana_spooled_event *e);

/* Appends the prop_keys and prop_values columns of a properties JSON: the top-level keys and
 * their values as text (ana_clickhouse_value_text; objects and arrays as their compact JSON,
 * null ones left out; nothing for text that is not an object). direct: a flat object (strings
 * without escapes, numbers, booleans, nulls) is copied straight from the text; anything else,
 * and every object when direct is false, goes through jansson. Both give the same bytes.
 * Returns whether it was read straight from the text. */
bool ana_clickhouse_put_props(struct ana_ch_rows *b, const char *json, bool direct);

/* --- reads pushed down (reads.c) --- */

/* What one read sees: ClickHouse's rows but this instance's after shipped, which it reads from
 * the local spool instead (read-your-writes). Borrowed. */
struct ana_clickhouse_view {
  struct ana_clickhouse *ch;
  struct ana_local_db *db;
  const char *instance;
  uint64_t shipped;
  /* Scans only, not NULL: that other instance's rows with other_after < seq <= other_upto
   * instead (none of this instance's, nor its spool). */
  const char *other;
  uint64_t other_after, other_upto;
};

/* The event store's search (no free text), as SQL merged with the spool's events after
 * v->shipped: the same hits, in the same order, as the embedded store's. */
int ana_clickhouse_search(const struct ana_clickhouse_view *v, const struct ana_event_query *q,
                          ana_event_hit_fn hit, void *ctx, struct ana_error *err);

/* The event store's scan: the spool's events after v->shipped, then ClickHouse's a page at a
 * time. Rows of other instances carry seq 0 (their sequences are not this instance's: to the
 * commit hooks' readers they were committed before anything here); so do their search hits. */
int ana_clickhouse_scan(const struct ana_clickhouse_view *v, const char *account_id,
                        int64_t from_ms, int64_t to_ms, const char *const *names, size_t n_names,
                        ana_event_scan_fn fn, void *ctx, struct ana_error *err);

/* The event store's aggregate: the metric aggregation as one SQL statement (GROUP BY group
 * key, bucket), when every value it reads is read exactly as the metric engine reads it (else
 * 0, nothing called), then the spool's events after v->shipped handed to rows. */
int ana_clickhouse_aggregate(const struct ana_clickhouse_view *v,
                             const struct ana_event_agg_query *q, ana_event_agg_fn agg,
                             ana_event_scan_fn rows, void *ctx, struct ana_error *err);

/* A property value as text the way the embedded store compares it (SQLite's CAST of
 * json_extract AS TEXT): strings as they are, integers in decimal, reals with 15 significant
 * digits, booleans 1 and 0; NULL for null, objects and arrays. buf (>= 64 bytes) may hold it. */
struct json_t;
const char *ana_clickhouse_value_text(const struct json_t *v, char *buf, size_t cap);

#endif
