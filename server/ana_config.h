/* analyticsd's configuration: every module's settings, loaded from the
 * environment through the modules' own row tables (server/config.c lists them). */
#ifndef ANA_CONFIG_H
#define ANA_CONFIG_H

#include "ana_alerts_config.h"
#include "ana_auth_config.h"
#include "ana_config_table.h"
#include "ana_crypto_config.h"
#include "ana_error.h"
#include "ana_ingest_config.h"
#include "ana_log.h"
#include "ana_metrics_config.h"
#include "ana_notify_config.h"
#include "ana_realtime_config.h"
#include "ana_reports_config.h"
#include "ana_restbridge_config.h"
#include "ana_rpc_config.h"
#include "ana_store_config.h"

#include <stdbool.h>
#include <stdio.h>

/* The service's settings, one struct per module. Strings are owned by the
 * struct (ana_config_fini frees them); a string setting with an empty default
 * is NULL when unset. Durations are in milliseconds. Adding a variable means
 * one row in its module's config_rows.c plus one member in its settings
 * struct; a new module adds its struct here and its table in config.c. */
struct ana_config {
  struct ana_bridge_settings bridge;
  struct ana_rpc_settings rpc;
  struct ana_store_settings store;
  struct ana_ingest_settings ingest;
  struct ana_realtime_settings realtime;
  struct ana_metrics_settings metrics;
  struct ana_alerts_settings alerts;
  struct ana_reports_settings reports;
  struct ana_auth_settings auth;
  struct ana_crypto_settings crypto;
  struct ana_notify_settings notify;
  struct ana_process_settings process;
};

/* Reads every variable through getenv_fn (NULL = the process environment,
 * ctx unused) and fills cfg. An empty value counts as unset: the default
 * applies. Returns 0; or ANA_ERR_INVALID with err->message naming every bad
 * variable (separated by "; "), its value and what is expected, e.g.
 *   GRPC_PORT: "70000" is not a port (1-65535)
 * (passwords in URLs are masked); or ANA_ERR_NOMEM. On failure cfg is left
 * zeroed. Does not block. */
int ana_config_load(struct ana_config *cfg, ana_getenv_fn getenv_fn, void *ctx,
                    struct ana_error *err);

/* What analyticsd does first: loads cfg from the process environment, logs
 * each bad value (naming the variable) at error level, and applies
 * LOG_LEVEL. Returns 0, or a negative error after logging (exit with status 2). */
int ana_config_load_at_startup(struct ana_config *cfg);

/* Frees the strings and zeroes cfg; safe on a zeroed or already-finished struct. */
void ana_config_fini(struct ana_config *cfg);

/* Calls fn for each variable that is set although its feature is not yet
 * supported. name is the variable; what completes the sentence
 * "<name> is set but <what>", e.g. "the MongoDB backend is not yet
 * supported; using the embedded store". Both are borrowed for the call. */
void ana_config_each_unsupported(const struct ana_config *cfg,
                                 void (*fn)(const char *name, const char *what, void *ctx),
                                 void *ctx);

/* The --help section: each variable with its default and description. */
void ana_config_write_help(FILE *out);

/* The content of .env.example: comment lines, then NAME=default, per variable. */
void ana_config_write_env_example(FILE *out);

/* The README's table: | Variable | Default | Description |, one row per variable. */
void ana_config_write_markdown(FILE *out);

#endif
