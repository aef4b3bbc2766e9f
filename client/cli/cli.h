/* analyticsctl internals: the command table entry, parsed arguments, and the
 * argument (cli_args.c), output (cli_output.c), call (cli_calls.c) and
 * stream (cli_stream.c) helpers every cmd_*.c file shares. */
#ifndef ANA_CLI_H
#define ANA_CLI_H

#include <analytics/analytics.h>

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2
#define CLI_MAX_LIST 64 /* values of one repeated option (--dimension, ...) */
#define CLI_MAX_OPTS 32 /* options of one command */

/* --- Commands ---
 * A command is one cmd_<name>.c defining `const struct cli_command
 * cli_cmd_<name>` and one X(<name>) row in main.c's CLI_COMMANDS. */

enum cli_option_flags {
  CLI_FLAG = 0,  /* --name alone */
  CLI_VALUE = 1, /* --name VALUE */
  CLI_LIST = 3,  /* --name VALUE, repeatable; the values in order */
};

/* One long option of a command (-h/--help and -o/--output come with every
 * command). */
struct cli_option {
  const char *name;
  int flags; /* enum cli_option_flags */
};

/* One repeated option's values, borrowed from argv. */
struct cli_list {
  const char *v[CLI_MAX_LIST];
  size_t n;
};

/* A command's words after parsing: options by their index in the command's
 * table, and the positional words. Everything is borrowed from argv. */
struct cli_args {
  const struct cli_command *cmd;
  const char *val[CLI_MAX_OPTS];      /* a flag given reads "1" */
  struct cli_list list[CLI_MAX_OPTS]; /* CLI_LIST options */
  char **pos;
  int n_pos;
};

struct cli_command {
  const char *name;                 /* the command word */
  const char *summary;              /* one line of `analyticsctl --help` */
  const char *help;                 /* `analyticsctl NAME --help` */
  const struct cli_option *options; /* terminated by {NULL, 0} */
  int (*run)(analytics_client_t *c, const struct cli_args *a); /* the exit status */
  /* Optional: adjusts the client's options before it is created (track's
   * queue and retries). Without it, calls are not retried. */
  void (*configure)(const struct cli_args *a, analytics_options_t *opts);
  bool streams; /* may run a stream: Ctrl-C/SIGTERM end it cleanly */
  /* Instead of run: a command that needs no server (token); no client is
   * created and the global options are ignored. */
  int (*run_local)(const struct cli_args *a);
};

/* --- Arguments (cli_args.c) --- */

/* Parses argv[1..] (argv[0] is the command word) by the command's options.
 * Returns 0, CLI_EXIT_USAGE after printing why, or -1 when --help was asked
 * (help printed). */
int cli_args_parse(const struct cli_command *cmd, int argc, char **argv, struct cli_args *a);

/* The value of an option of the command (NULL: not given). Asking for a name
 * the command does not declare is a programmer error (abort). */
const char *cli_opt(const struct cli_args *a, const char *name);
/* The values of a CLI_LIST option (never NULL). */
const struct cli_list *cli_list(const struct cli_args *a, const char *name);
/* Refuses the options given that are not in allowed (NULL-terminated):
 * 0 or CLI_EXIT_USAGE. what names the verb in the message. */
int cli_only(const struct cli_args *a, const char *what, const char *const *allowed);
/* Refuses positional words past the first n: 0 or CLI_EXIT_USAGE. */
int cli_no_more(const struct cli_args *a, int n);
/* The ID of `COMMAND VERB ID` (pos[1]), or NULL with *status set. */
const char *cli_need_id(const struct cli_args *a, const char *verb, int *status);
/* --limit as a page size (0: the server's default); 0 or CLI_EXIT_USAGE. */
int cli_limit(const struct cli_args *a, long *out);

int cli_parse_long(const char *s, long min, long max, long *out);
/* A time as users write it: "now", relative ("-30s", "-15m", "-2h", "-7d"),
 * Unix milliseconds, a date alone (UTC midnight), or RFC 3339 read by the
 * server's own strict parser (analytics_parse_timestamp). 0 or -1. */
int cli_parse_time(const char *s, int64_t *ms);
/* Unix ms as RFC 3339 (UTC), a new JSON string. */
json_t *cli_time_json(int64_t ms);

/* "KEY=VALUE" (the value a string) or "KEY:=JSON" (any JSON value: 150,
 * true, null, [1,2], {"a":1}), as httpie reads them. Fills key (keymax
 * bytes) and *value (a new reference). 0, or -1 when malformed (no '=',
 * empty or long key, bad JSON after :=). */
int cli_kv(const char *item, char *key, size_t keymax, json_t **value);
/* A CLI_LIST option of KEY=VALUE items into a new object (*out); with json,
 * KEY:=JSON items too. 0 or CLI_EXIT_USAGE. */
int cli_kv_object(const struct cli_args *a, const char *opt, bool json, json_t **out);

/* --- Output (cli_output.c) --- */

enum cli_format { CLI_FORMAT_JSON, CLI_FORMAT_TABLE };

/* How answers print: JSON (the default when stdout is not a terminal) or
 * tables (the default on a terminal); -o json|table decides. */
extern enum cli_format cli_format;
/* Sets cli_format from "json" / "table": 0, or -1 for anything else. */
int cli_format_set(const char *name);

/* How a document reads as a table: the member holding the rows and the
 * columns to show (NULL: the rows' scalar members, in order). A document
 * without that member prints as KEY VALUE lines. */
struct cli_view {
  const char *rows;           /* "metrics" */
  const char *const *columns; /* NULL-terminated, or NULL */
};

/* Prints a document (borrowed) in cli_format. view may be NULL. */
void cli_print(const json_t *doc, const struct cli_view *view);
/* The outcome of a call answered with JSON text (owned: freed here): printed,
 * or the error. The exit status. */
int cli_finish(int rc, char *json, const analytics_error_t *err, const struct cli_view *view);

int cli_usage(const struct cli_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A failed call: its status and message on stderr. CLI_EXIT_FAIL. */
int cli_failed(int rc, const analytics_error_t *err);

/* Progress of a long run on stderr, redrawn in place at most 5 times a
 * second and only when stderr is a terminal. */
struct cli_progress {
  bool on;
  int64_t start_ms, last_ms;
};
void cli_progress_init(struct cli_progress *p);
/* done: items handled; errors: items that failed; final: the last line
 * (always drawn when on, then a newline). */
void cli_progress_update(struct cli_progress *p, const char *unit, uint64_t done, uint64_t errors,
                         bool final);
/* A transfer: a bar when total is known (> 0), bytes so far and the rate. */
void cli_progress_bytes(struct cli_progress *p, uint64_t done, int64_t total, bool final);

/* --- Calls shared by metrics, reports, alerts (cli_calls.c) --- */

/* One page of a list: page_size 0 is the server's default. */
typedef int (*cli_page_fn)(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                           const char *token, char **json, analytics_error_t *err);

/* Follows nextPageToken until the end (or limit items) and prints one
 * {"<key>":[...]} document. */
int cli_all_pages(analytics_client_t *c, const struct cli_args *a, const char *key, long limit,
                  cli_page_fn page, const struct cli_view *view);
/* `VERB list [--limit N] [--page TOKEN] [--all]`. */
int cli_list_verb(analytics_client_t *c, const struct cli_args *a, const char *key,
                  cli_page_fn page, const struct cli_view *view);
/* Calls a unary method with req (stolen) and prints the answer. */
int cli_call_json(analytics_client_t *c, const char *method, json_t *req,
                  const struct cli_view *view);
/* The answer of a delete: {"<id_field>": id, "deleted": true}. */
int cli_deleted(int rc, const char *id_field, const char *id, const analytics_error_t *err);
void cli_set_str(json_t *o, const char *key, const char *v);
void cli_set_list(json_t *o, const char *key, const struct cli_list *l);

/* An object the CLI creates and replaces the same way for every kind. */
struct cli_resource {
  const char *create, *get, *update;                   /* RPC paths */
  const char *id_field;                                /* "metricId" */
  const char *body_field;                              /* "metric" */
  int (*apply)(const struct cli_args *a, json_t *obj); /* the options into obj */
};
/* Fills obj (owned) from the options and sends it to the create RPC. */
int cli_create(analytics_client_t *c, const struct cli_args *a, const struct cli_resource *r,
               json_t *obj);
/* Reads the object, applies the options, sends all of it back (PUT). */
int cli_update(analytics_client_t *c, const struct cli_args *a, const struct cli_resource *r,
               const char *const *allowed);

/* --- Streams (cli_stream.c) --- */

/* Blocks SIGINT and SIGTERM in every thread (call before the client exists). */
void cli_signals_block(void);
/* Starts the thread that ends c's streams on SIGINT/SIGTERM. */
void cli_signals_watch(analytics_client_t *c);
/* The stream is over: the thread no longer touches the client. */
void cli_signals_unwatch(void);
/* Whether a signal asked to stop. */
bool cli_signalled(void);
/* Runs a server-streaming method with req (stolen) until it ends or a
 * signal; each message is printed as a JSON line or, in table format, by
 * line (may be NULL: compact JSON). Messages without "event" are skipped
 * when events_only. The exit status. */
int cli_run_stream(analytics_client_t *c, const char *method, json_t *req, bool events_only,
                   void (*line)(const json_t *msg));

#endif
