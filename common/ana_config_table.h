/* The configuration engine: modules declare tables of environment variables
 * (rows) that fill their own settings struct; a program loads the tables it
 * uses and generates --help, .env.example and the README table from them. */
#ifndef ANA_CONFIG_TABLE_H
#define ANA_CONFIG_TABLE_H

#include "ana_error.h"
#include "ana_log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum ana_config_type {
  ANA_CONFIG_STRING,    /* free text, optionally checked by row.check */
  ANA_CONFIG_PATH,      /* a directory or file path */
  ANA_CONFIG_URL,       /* scheme://..., the scheme one of row.schemes */
  ANA_CONFIG_INT,       /* a decimal integer within [min, max] (int or long member) */
  ANA_CONFIG_PORT,      /* an integer 1-65535 */
  ANA_CONFIG_DURATION,  /* milliseconds within [min, max]; suffixes ms, s, m, h accepted */
  ANA_CONFIG_LOG_LEVEL, /* error, warn, info, debug */
  ANA_CONFIG_BOOL,      /* true/false, 1/0, yes/no */
};

enum ana_config_status {
  ANA_CONFIG_SUPPORTED,
  ANA_CONFIG_NOT_YET_SUPPORTED, /* accepted and checked, then ignored with a warning */
};

/* One environment variable, and where its value goes in the module's
 * settings struct. Strings are char * members owned by the struct (NULL when
 * unset with an empty default). */
struct ana_config_row {
  const char *name;
  enum ana_config_type type;
  const char *def;                  /* default as a user would write it; "" = unset */
  const char *help;                 /* one or more sentences, each ending with '.' */
  long long min, max;               /* ANA_CONFIG_INT, ANA_CONFIG_DURATION */
  const char *schemes;              /* ANA_CONFIG_URL: accepted schemes, separated by spaces */
  bool (*check)(const char *value); /* ANA_CONFIG_STRING: extra validation, or NULL */
  const char *expect;               /* ANA_CONFIG_STRING with check: what check accepts */
  enum ana_config_status status;
  const char *feature; /* ANA_CONFIG_NOT_YET_SUPPORTED: "the MongoDB backend" */
  const char *instead; /* ANA_CONFIG_NOT_YET_SUPPORTED: what happens meanwhile */
  size_t offset, size; /* where in the settings struct, and how big */
};

/* In a row: .offset and .size of member in settings struct type. */
#define ANA_CONFIG_FIELD(type, member)                                                             \
  .offset = offsetof(type, member), .size = sizeof(((type *)0)->member)

/* One module's rows, in the order the documentation lists them. */
struct ana_config_table {
  const char *module; /* "restbridge", "rpc", ... */
  const struct ana_config_row *rows;
  size_t n_rows;
};

#define ANA_CONFIG_TABLE(module_name, row_array)                                                   \
  {                                                                                                \
    .module = (module_name), .rows = (row_array),                                                  \
    .n_rows = sizeof(row_array) / sizeof((row_array)[0])                                           \
  }

/* A table and the settings struct its rows fill (settings may be NULL when
 * only documentation is written). */
struct ana_config_binding {
  const struct ana_config_table *table;
  void *settings;
};

/* Looks up one variable; returns NULL when unset. The returned string is
 * borrowed and must stay valid until the load returns. */
typedef const char *(*ana_getenv_fn)(const char *name, void *ctx);

/* Called once per bad variable, with a message naming it, the value and what
 * is expected (borrowed for the call). */
typedef void (*ana_config_report_fn)(const char *message, void *ctx);

/* Reads every row of every binding through getenv_fn (NULL = the process
 * environment) into its settings struct; an empty value counts as unset: the
 * default applies. Every bad variable is checked, not just the first: each
 * is passed to report (if not NULL) and err->message lists them all,
 * separated by "; " (passwords in URLs masked). Returns 0; or
 * ANA_ERR_INVALID, or ANA_ERR_NOMEM, with every settings struct left zeroed.
 * Does not block. */
int ana_config_table_load(const struct ana_config_binding *bindings, size_t n,
                          ana_getenv_fn getenv_fn, void *ctx, ana_config_report_fn report,
                          void *report_ctx, struct ana_error *err);

/* Frees the strings of every settings struct and zeroes it; safe on zeroed
 * or already-finished structs. */
void ana_config_table_fini(const struct ana_config_binding *bindings, size_t n);

/* Calls fn for each not-yet-supported variable that is set. what completes
 * the sentence "<name> is set but <what>". */
void ana_config_table_each_unsupported(const struct ana_config_binding *bindings, size_t n,
                                       void (*fn)(const char *name, const char *what, void *ctx),
                                       void *ctx);

/* The --help section: each variable with its default and description. */
void ana_config_table_write_help(const struct ana_config_binding *bindings, size_t n, FILE *out);

/* The content of .env.example: comment lines, then NAME=default, per variable. */
void ana_config_table_write_env_example(const struct ana_config_binding *bindings, size_t n,
                                        FILE *out);

/* The README's table: | Variable | Default | Description |, one row per variable. */
void ana_config_table_write_markdown(const struct ana_config_binding *bindings, size_t n,
                                     FILE *out);

/* Parses a boolean as the configuration accepts it: true/false, 1/0, yes/no
 * (any case). Returns 0, or ANA_ERR_INVALID and leaves *out alone. */
int ana_config_parse_bool(const char *s, bool *out);

/* Parses a duration as the configuration accepts it: an integer number of
 * milliseconds, optionally with a suffix ms, s, m or h. Returns 0, or
 * ANA_ERR_INVALID (also on overflow) and leaves *out alone. */
int ana_config_parse_duration_ms(const char *s, long long *out);

/* Checks for rows: a host name or IP address to bind to ([v6] allowed). */
bool ana_config_valid_bind_host(const char *s);

/* Checks for rows: host, host:port or an http(s):// URL. */
bool ana_config_valid_host_or_url(const char *s);

/* The next item of a list of items separated by commas and/or spaces:
 * its start (not NUL-terminated; its length in *len), *cursor moved past
 * it; NULL at the end. */
const char *ana_config_list_next(const char **cursor, size_t *len);

/* Checks for rows: such a list, at least one item, each accepted by
 * item_ok (given the item and its length). */
bool ana_config_valid_list(const char *s, bool (*item_ok)(const char *item, size_t len));

/* The settings every program shares (common/config_rows.c). */
struct ana_process_settings {
  int shutdown_grace_ms;        /* SHUTDOWN_GRACE_MS */
  enum ana_log_level log_level; /* LOG_LEVEL */
  int proto_max_depth;          /* PROTO_MAX_DEPTH: nested messages in a decoded Protobuf message */
  char *access_log_sample;      /* ACCESS_LOG_SAMPLE: share of successful requests logged */
  int access_log_max_per_s;     /* ACCESS_LOG_MAX_PER_S: access lines per second at most */
  char *trusted_proxies;        /* TRUSTED_PROXIES: NULL when unset */
};

/* SHUTDOWN_GRACE_MS, LOG_LEVEL, ACCESS_LOG_SAMPLE, ACCESS_LOG_MAX_PER_S, PROTO_MAX_DEPTH and
 * TRUSTED_PROXIES, filling struct ana_process_settings. */
extern const struct ana_config_table ana_process_config_table;

#endif
