/* Storage settings: data directories, retention, the embedded store, remote backends: the struct
 * its configuration rows fill. */
#ifndef ANA_STORE_CONFIG_H
#define ANA_STORE_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_store_config_table (config_rows.c); strings owned by the struct. */
struct ana_store_settings {
  char *mongodb_uri;
  char *elasticsearch_node;
  char *clickhouse_host; /* host, host:port or http(s) URL */
  char *clickhouse_database;
  char *clickhouse_user;
  char *clickhouse_password;
  char *clickhouse_ca_file;
  int clickhouse_timeout_ms;
  int clickhouse_batch_rows;
  int clickhouse_batch_interval_ms;
  int clickhouse_shipped_merge_ms; /* the shipped table's rows merged past this age */
  bool clickhouse_gzip;            /* inserts gzip-compressed */
  int clickhouse_gzip_level;       /* at this level (1-12) */
  long spool_max_bytes;            /* SPOOL_MAX_BYTES */
  char *redis_url;
  char *rabbitmq_url;
  char *data_dir;
  char *reports_dir;
  char *exports_dir;
  int retention_days;
  int wal_checkpoint_mb; /* WAL_CHECKPOINT_MB */
  int store_min_free_mb; /* STORE_MIN_FREE_MB: 0 = no check */
  int search_max_page_size;
  int search_index_wait_ms; /* SEARCH_INDEX_WAIT */
  int retention_sweep_interval_ms;
  int store_staging_max_events; /* STORE_STAGING_MAX_EVENTS */
  int store_staging_wait_ms;    /* STORE_STAGING_WAIT */
};

extern const struct ana_config_table ana_store_config_table;
/* Each remote backend's rows, from its folder; they fill struct ana_store_settings too. */
extern const struct ana_config_table ana_store_mongodb_config_table;
extern const struct ana_config_table ana_store_elasticsearch_config_table;
extern const struct ana_config_table ana_store_clickhouse_config_table;

#endif
