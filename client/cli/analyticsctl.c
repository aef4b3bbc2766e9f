/* analyticsctl: the command-line tool on libanalytics.
 * Answers go to stdout as JSON (one document; JSON lines for streams), errors
 * to stderr. Exit status: 0 success, 1 the call failed (or, for track, an
 * event was not stored), 2 bad usage. */
#include <analytics/analytics.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define MAX_LIST 64 /* repeated options (--dimension, --property, ...) */

/* --- Help texts: one per command, printed by `COMMAND --help` --- */

static const char main_help[] =
    "usage: analyticsctl [--target HOST:PORT] [--token TOKEN] [--timeout MS] COMMAND ...\n"
    "\n"
    "commands:\n"
    "  track     track events, from arguments or JSON lines on stdin\n"
    "  search    search stored events\n"
    "  metrics   list, get, create, update, delete metrics; query their data\n"
    "  reports   generate, list, inspect and download reports\n"
    "  alerts    create, list, get, update, delete alerts; their history\n"
    "  tail      follow live events (or a metric) as JSON lines until Ctrl-C\n"
    "  health    ask the server whether it is serving\n"
    "  call      call any RPC by name with a JSON request\n"
    "\n"
    "global options:\n"
    "  --target HOST:PORT   gRPC address of analyticsd ($ANALYTICS_TARGET, default\n"
    "                       127.0.0.1:50051)\n"
    "  --token TOKEN        bearer token ($ANALYTICS_TOKEN)\n"
    "  --timeout MS         deadline of each call (default 10000)\n"
    "\n"
    "`analyticsctl COMMAND --help` describes a command. Answers are JSON on stdout;\n"
    "exit status 0 on success, 1 when the server or the call failed (the status and\n"
    "message on stderr), 2 on a usage error.\n";

static const char track_help[] =
    "usage: analyticsctl track TYPE NAME [KEY=VALUE...] [--session ID] [--id ID]\n"
    "                          [--properties JSON] [--timestamp TIME]\n"
    "       analyticsctl track --stdin [--stop-on-error]\n"
    "\n"
    "Tracks events through the client's queue (batched, retried), flushes, and prints\n"
    "a summary: {\"tracked\",\"accepted\",\"duplicates\",\"rejected\",\"undelivered\",...}.\n"
    "\n"
    "  KEY=VALUE          a property; values that read as numbers, true or false are\n"
    "                     sent as such, the rest as strings\n"
    "  --properties JSON  properties as a JSON object (merged with KEY=VALUE)\n"
    "  --session ID       session id;  --id ID  event id (default: a new UUIDv7)\n"
    "  --timestamp TIME   when it happened (RFC 3339, Unix ms, now, -5m, ...)\n"
    "  --stdin            read one event per line, the Event JSON of the API, e.g.\n"
    "                     {\"eventType\":\"message\",\"eventName\":\"message_sent\",\n"
    "                      \"properties\":{\"campaignId\":\"123\"}}; empty lines are skipped\n"
    "  --stop-on-error    stop reading at the first bad line (default: report it with\n"
    "                     its line number on stderr and go on)\n"
    "\n"
    "Exits 1 when any event was rejected, undelivered, or (with --stdin) a line was bad.\n";

static const char search_help[] =
    "usage: analyticsctl search [--name N] [--type T] [--session S] [--query Q]\n"
    "                           [--from TIME] [--to TIME] [--property KEY=VALUE]...\n"
    "                           [--limit N] [--page TOKEN] [--all]\n"
    "\n"
    "Searches the caller's events, newest first. Prints {\"events\":[...],\n"
    "\"nextPageToken\":...}.\n"
    "\n"
    "  --from, --to     time range, from inclusive, to exclusive: RFC 3339\n"
    "                   (2024-05-01T10:00:00Z, 2024-05-01), Unix ms, now, or relative\n"
    "                   to now (-30s, -15m, -2h, -7d)\n"
    "  --property K=V   property equality (repeatable)\n"
    "  --query Q        free text: every word must appear\n"
    "  --limit N        page size; with --all, the most events printed\n"
    "  --page TOKEN     continue from a nextPageToken\n"
    "  --all            follow nextPageToken through every page, printed as one\n"
    "                   {\"events\":[...]}\n";

static const char metrics_help[] =
    "usage: analyticsctl metrics list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl metrics get ID\n"
    "       analyticsctl metrics create --name N --formula F [--type T] [--unit U]\n"
    "                                   [--aggregation A] [--description D]\n"
    "                                   [--dimension D]... [--filter FIELD:OP[:VALUE]]...\n"
    "                                   [--variable NAME=EXPR]...\n"
    "       analyticsctl metrics update ID [the options of create]\n"
    "       analyticsctl metrics delete ID\n"
    "       analyticsctl metrics data ID [--from TIME] [--to TIME] [--interval I]\n"
    "                                    [--time-zone TZ] [--top-n N]\n"
    "                                    [--dimension-filter KEY=VALUE]...\n"
    "\n"
    "  --type           counter, gauge (default) or histogram\n"
    "  --aggregation    avg (default), sum, min, max, last or count\n"
    "  --filter         e.g. campaignId:eq:123, amount:gt:10, tier:in:gold,silver,\n"
    "                   sessionId:exists (numbers for gt/gte/lt/lte, a list for in)\n"
    "  --variable       a name the formula may use, e.g. sent=count(message_sent)\n"
    "  update           reads the metric, applies the options given (a repeated option\n"
    "                   replaces its whole list) and replaces the definition\n"
    "  --interval       1m, 5m, 1h, 1d or auto;  --time-zone  an IANA name\n"
    "  TIME             RFC 3339, Unix ms, now, or relative to now (-1h, -7d)\n";

static const char reports_help[] =
    "usage: analyticsctl reports generate --template T [--format pdf|xlsx|csv] [--name N]\n"
    "                                     [--param KEY=VALUE]... [--parameters JSON]\n"
    "                                     [--schedule CRON] [--recipient ADDR]...\n"
    "       analyticsctl reports list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl reports status ID\n"
    "       analyticsctl reports download ID [-o FILE]\n"
    "\n"
    "  --param K=V      a report parameter (numbers and booleans typed), repeatable\n"
    "  -o, --output F   where the file goes (default: the server's filename; - for\n"
    "                   stdout, then nothing else is printed)\n"
    "\n"
    "Until reports are implemented the server answers UNIMPLEMENTED: the message is\n"
    "printed on stderr and the exit status is 1.\n";

static const char alerts_help[] =
    "usage: analyticsctl alerts create --name N --metric M --condition C --threshold X\n"
    "                                  [--severity S] [--channel C]... [--cooldown SEC]\n"
    "                                  [--disabled]\n"
    "       analyticsctl alerts list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl alerts get ID\n"
    "       analyticsctl alerts update ID [the options of create] [--enabled]\n"
    "       analyticsctl alerts delete ID\n"
    "       analyticsctl alerts history ID [--limit N] [--page TOKEN]\n"
    "\n"
    "  --condition C    e.g. greater_than, or a JSON object\n"
    "  update           reads the alert, applies the options given, replaces it\n"
    "\n"
    "Until alerts are implemented the server answers UNIMPLEMENTED: the message is\n"
    "printed on stderr and the exit status is 1.\n";

static const char tail_help[] =
    "usage: analyticsctl tail [--type T] [--name N] [--property KEY=VALUE]... [--snapshots]\n"
    "       analyticsctl tail --metric ID [--interval I] [--time-zone TZ] [--after SEQ]\n"
    "\n"
    "Follows the live stream and prints each message as one JSON line, until Ctrl-C\n"
    "(or SIGTERM), which ends the stream cleanly with exit status 0.\n"
    "\n"
    "  (default)        live events (StreamAnalytics with includeEvents):\n"
    "                   {\"sequence\":..,\"event\":{...}} filtered on the server by\n"
    "                   eventType, eventName and top-level property equality\n"
    "  --snapshots      also print the per-second rate snapshots ({\"aggregates\":..})\n"
    "  --metric ID      the metric's live values (StreamMetric) instead\n"
    "  --after SEQ      resume a metric stream after this sequence number\n"
    "\n"
    "A stream the server ends with an error (UNIMPLEMENTED, a slow consumer) prints\n"
    "the status on stderr and exits 1.\n";

static const char health_help[] =
    "usage: analyticsctl health [--service NAME]\n"
    "\n"
    "Asks grpc.health.v1.Health/Check about the server (or one service, e.g.\n"
    "analytics.v1.EventService). Prints {\"status\":\"SERVING\"} and exits 0, or 1 when\n"
    "not serving or unreachable.\n";

static const char call_help[] =
    "usage: analyticsctl call METHOD [JSON]\n"
    "\n"
    "Calls any RPC of the contracts by its full path with a JSON request, e.g.\n"
    "  analyticsctl call /analytics.v1.MetricService/ListMetrics '{\"pageSize\":5}'\n"
    "Unary methods print the answer; server-streaming methods print JSON lines until\n"
    "the stream ends or Ctrl-C.\n";

/* --- Output and errors --- */

static int usage_error(const char *help_cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A usage error: message, a pointer to the help, exit status 2. */
static int usage_error(const char *help_cmd, const char *fmt, ...) {
  va_list ap;

  fputs("analyticsctl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(see analyticsctl %s%s--help)\n", help_cmd ? help_cmd : "",
          help_cmd ? " " : "");
  return EXIT_USAGE;
}

/* A failed call: its status and message on stderr, exit status 1. */
static int call_failed(int rc, const analytics_error_t *err) {
  if (err->message[0])
    fprintf(stderr, "analyticsctl: %s: %s\n", analytics_status_name(err->code), err->message);
  else
    fprintf(stderr, "analyticsctl: %s: %s\n", analytics_status_name(err->code),
            analytics_strerror(rc));
  return EXIT_FAIL;
}

/* Prints a JSON value indented, with a newline. */
static void print_value(const json_t *v) {
  char *text = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);

  puts(text ? text : "{}");
  free(text);
}

/* Prints JSON text indented (as it came when it is not JSON). */
static void print_json(const char *text) {
  json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;

  if (v)
    print_value(v);
  else
    puts(text ? text : "{}");
  json_decref(v);
}

/* The outcome of a call answered with JSON: printed (and freed), or the
 * error. Returns the exit status. */
static int finish(int rc, char *json, const analytics_error_t *err) {
  if (rc < 0) {
    analytics_free(json);
    return call_failed(rc, err);
  }
  print_json(json);
  analytics_free(json);
  return 0;
}

/* finish() for a call that fills *jsonp: reads it after the call (the
 * order in which C evaluates arguments is unspecified). */
static int finish_after(int rc, char **jsonp, const analytics_error_t *err) {
  return finish(rc, *jsonp, err);
}

/* --- Parsing helpers --- */

/* A value as typed on the command line: true/false and numbers typed, the
 * rest a string. Returns a new reference (NULL: out of memory or invalid
 * UTF-8). */
static json_t *typed_value(const char *v) {
  char *end;
  double d;

  if (!strcmp(v, "true") || !strcmp(v, "false"))
    return json_boolean(v[0] == 't');
  errno = 0;
  d = strtod(v, &end);
  if (*v && !*end && !errno && isfinite(d) && strspn(v, "0123456789+-.eE") == strlen(v))
    return json_real(d);
  return json_string(v);
}

/* Splits "KEY=VALUE" at the first '='. Returns 0, or -1 when there is none
 * or the key is empty or longer than keymax-1. */
static int split_kv(const char *kv, char *key, size_t keymax, const char **value) {
  const char *eq = strchr(kv, '=');

  if (!eq || eq == kv || (size_t)(eq - kv) >= keymax)
    return -1;
  memcpy(key, kv, (size_t)(eq - kv));
  key[eq - kv] = '\0';
  *value = eq + 1;
  return 0;
}

static int parse_long(const char *s, long min, long max, long *out) {
  char *end;
  long v;

  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || !*s || *end || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

static int64_t wall_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A time as the user writes it: "now", relative ("-15m", "-2h", "-7d",
 * "-30s"), Unix milliseconds, or RFC 3339 ("2024-05-01T10:00:00.5Z",
 * "...+02:00", or a date alone, UTC midnight). Returns 0 with *ms, or -1. */
static int parse_time(const char *s, int64_t *ms) {
  struct tm tm = {0};
  int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
  double frac = 0;
  long off = 0;
  char *end;

  if (!strcmp(s, "now")) {
    *ms = wall_ms();
    return 0;
  }
  if (s[0] == '-') {
    double v = strtod(s + 1, &end);
    long unit = !strcmp(end, "s")   ? 1000
                : !strcmp(end, "m") ? 60000
                : !strcmp(end, "h") ? 3600000
                : !strcmp(end, "d") ? 86400000
                                    : 0;
    if (end == s + 1 || !unit || !isfinite(v) || v < 0)
      return -1;
    *ms = wall_ms() - (int64_t)(v * (double)unit);
    return 0;
  }
  if (strspn(s, "0123456789") == strlen(s) && strlen(s) > 0 && strlen(s) < 16) {
    *ms = strtoll(s, NULL, 10);
    return 0;
  }
  if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
    return -1;
  s += n;
  if (*s == 'T' || *s == 't' || *s == ' ') {
    if (sscanf(s + 1, "%2d:%2d:%2d%n", &h, &mi, &sec, &n) != 3 || n != 8)
      return -1;
    s += 1 + n;
    if (*s == '.') {
      frac = strtod(s, &end);
      s = end;
    }
    if (*s == 'Z' || *s == 'z') {
      s++;
    } else if (*s == '+' || *s == '-') {
      int oh, om;
      if (sscanf(s + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5)
        return -1;
      off = (*s == '-' ? -1 : 1) * (oh * 3600L + om * 60L);
      s += 1 + n;
    } else {
      return -1;
    }
  }
  if (*s || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
    return -1;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  *ms = ((int64_t)timegm(&tm) - off) * 1000 + (int64_t)(frac * 1000);
  return 0;
}

/* Unix ms as an RFC 3339 string (UTC) for JSON requests. */
static json_t *time_json(int64_t ms) {
  char buf[40];
  time_t t = (time_t)(ms / 1000);
  struct tm tm;

  gmtime_r(&t, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + strlen(buf), sizeof buf - strlen(buf), ".%03dZ", (int)(ms % 1000));
  return json_string(buf);
}

/* --- Command arguments ---
 * Every command's options are parsed by one table; each command then refuses
 * the options it does not take (allowed_opts below), so a typo is a usage
 * error, never silently ignored. */

enum opt_id {
  O_TYPE = 256,
  O_NAME,
  O_SESSION,
  O_QUERY,
  O_FROM,
  O_TO,
  O_PROPERTY,
  O_LIMIT,
  O_PAGE,
  O_ALL,
  O_ID,
  O_PROPERTIES,
  O_TIMESTAMP,
  O_STDIN,
  O_STOP,
  O_FORMULA,
  O_UNIT,
  O_AGG,
  O_DESC,
  O_DIM,
  O_FILTER,
  O_VARIABLE,
  O_INTERVAL,
  O_TZ,
  O_TOPN,
  O_DIMFILTER,
  O_TEMPLATE,
  O_FORMAT,
  O_PARAM,
  O_PARAMETERS,
  O_SCHEDULE,
  O_RECIPIENT,
  O_OUTPUT,
  O_METRIC,
  O_CONDITION,
  O_THRESHOLD,
  O_SEVERITY,
  O_CHANNEL,
  O_COOLDOWN,
  O_DISABLED,
  O_ENABLED,
  O_SNAPSHOTS,
  O_AFTER,
  O_SERVICE,
  O_HELP,
  O__END
};

static const struct option long_opts[] = {
    {"type", required_argument, NULL, O_TYPE},
    {"name", required_argument, NULL, O_NAME},
    {"session", required_argument, NULL, O_SESSION},
    {"query", required_argument, NULL, O_QUERY},
    {"from", required_argument, NULL, O_FROM},
    {"to", required_argument, NULL, O_TO},
    {"property", required_argument, NULL, O_PROPERTY},
    {"limit", required_argument, NULL, O_LIMIT},
    {"page", required_argument, NULL, O_PAGE},
    {"all", no_argument, NULL, O_ALL},
    {"id", required_argument, NULL, O_ID},
    {"properties", required_argument, NULL, O_PROPERTIES},
    {"timestamp", required_argument, NULL, O_TIMESTAMP},
    {"stdin", no_argument, NULL, O_STDIN},
    {"stop-on-error", no_argument, NULL, O_STOP},
    {"formula", required_argument, NULL, O_FORMULA},
    {"unit", required_argument, NULL, O_UNIT},
    {"aggregation", required_argument, NULL, O_AGG},
    {"description", required_argument, NULL, O_DESC},
    {"dimension", required_argument, NULL, O_DIM},
    {"filter", required_argument, NULL, O_FILTER},
    {"variable", required_argument, NULL, O_VARIABLE},
    {"interval", required_argument, NULL, O_INTERVAL},
    {"time-zone", required_argument, NULL, O_TZ},
    {"top-n", required_argument, NULL, O_TOPN},
    {"dimension-filter", required_argument, NULL, O_DIMFILTER},
    {"template", required_argument, NULL, O_TEMPLATE},
    {"format", required_argument, NULL, O_FORMAT},
    {"param", required_argument, NULL, O_PARAM},
    {"parameters", required_argument, NULL, O_PARAMETERS},
    {"schedule", required_argument, NULL, O_SCHEDULE},
    {"recipient", required_argument, NULL, O_RECIPIENT},
    {"output", required_argument, NULL, O_OUTPUT},
    {"metric", required_argument, NULL, O_METRIC},
    {"condition", required_argument, NULL, O_CONDITION},
    {"threshold", required_argument, NULL, O_THRESHOLD},
    {"severity", required_argument, NULL, O_SEVERITY},
    {"channel", required_argument, NULL, O_CHANNEL},
    {"cooldown", required_argument, NULL, O_COOLDOWN},
    {"disabled", no_argument, NULL, O_DISABLED},
    {"enabled", no_argument, NULL, O_ENABLED},
    {"snapshots", no_argument, NULL, O_SNAPSHOTS},
    {"after", required_argument, NULL, O_AFTER},
    {"service", required_argument, NULL, O_SERVICE},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0}};

/* A repeated option's values, in order. */
struct list {
  const char *v[MAX_LIST];
  size_t n;
};

struct args {
  const char *cmd;         /* the command word */
  const char *opt[O__END]; /* single-valued options (flags: "1") */
  struct list property, dim, filter, variable, dimfilter, param, recipient, channel;
  char **pos; /* positional words after the command */
  int n_pos;
};

static struct list *list_of(struct args *a, int id) {
  switch (id) {
  case O_PROPERTY: return &a->property;
  case O_DIM: return &a->dim;
  case O_FILTER: return &a->filter;
  case O_VARIABLE: return &a->variable;
  case O_DIMFILTER: return &a->dimfilter;
  case O_PARAM: return &a->param;
  case O_RECIPIENT: return &a->recipient;
  case O_CHANNEL: return &a->channel;
  default: return NULL;
  }
}

static const char *opt_name(int id) {
  for (const struct option *o = long_opts; o->name; o++)
    if (o->val == id)
      return o->name;
  return "?";
}

/* Parses the command's options; returns 0, or EXIT_USAGE after printing why,
 * or -1 when --help was asked (help printed). */
static int parse_args(int argc, char **argv, const char *help, struct args *a) {
  int c;

  memset(a, 0, sizeof *a);
  a->cmd = argv[0];
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":o:h", long_opts, NULL)) != -1) {
    if (c == 'h' || c == O_HELP) {
      fputs(help, stdout);
      return -1;
    }
    if (c == 'o')
      c = O_OUTPUT;
    if (c == '?')
      return usage_error(a->cmd, "unknown option %s", argv[optind - 1]);
    if (c == ':')
      return usage_error(a->cmd, "option %s needs a value", argv[optind - 1]);
    struct list *l = list_of(a, c);
    if (l) {
      if (l->n == MAX_LIST)
        return usage_error(a->cmd, "too many --%s", opt_name(c));
      l->v[l->n++] = optarg;
    } else {
      a->opt[c] = optarg ? optarg : "1";
    }
  }
  a->pos = argv + optind;
  a->n_pos = argc - optind;
  return 0;
}

/* Refuses options outside allowed (terminated by 0). */
static int allowed_opts(const struct args *a, const char *what, const int *allowed) {
  for (int id = O_TYPE; id < O__END; id++) {
    struct list *l = list_of((struct args *)a, id);
    if (!a->opt[id] && !(l && l->n))
      continue;
    const int *p = allowed;
    while (*p && *p != id)
      p++;
    if (!*p)
      return usage_error(a->cmd, "%s does not take --%s", what, opt_name(id));
  }
  return 0;
}

/* The page size of --limit (0: the server's default). */
static int limit_of(const struct args *a, long *out) {
  *out = 0;
  if (a->opt[O_LIMIT] && parse_long(a->opt[O_LIMIT], 1, 1000000, out) < 0)
    return usage_error(a->cmd, "--limit takes a number from 1 to 1000000");
  return 0;
}

/* KEY=VALUE options into a JSON object (typed values when typed). */
static int kv_object(const struct args *a, const struct list *l, const char *opt, bool typed,
                     json_t **out) {
  char key[256];
  const char *v;

  *out = json_object();
  for (size_t i = 0; i < l->n; i++) {
    if (split_kv(l->v[i], key, sizeof key, &v) < 0) {
      json_decref(*out);
      *out = NULL;
      return usage_error(a->cmd, "--%s takes KEY=VALUE, not \"%s\"", opt, l->v[i]);
    }
    json_object_set_new(*out, key, typed ? typed_value(v) : json_string(v));
  }
  return 0;
}

/* --- Paging ---
 * list/search with --all: calls page() until nextPageToken is empty (or
 * limit items were gathered) and prints one {"<key>":[...]} document. */

typedef int (*page_fn)(analytics_client_t *c, const struct args *a, int32_t page_size,
                       const char *token, char **json, analytics_error_t *err);

static int all_pages(analytics_client_t *c, const struct args *a, const char *key, long limit,
                     page_fn page) {
  json_t *items = json_array(), *doc = json_object();
  char *token = a->opt[O_PAGE] ? strdup(a->opt[O_PAGE]) : NULL;
  analytics_error_t err;
  int status = 0;

  for (;;) {
    long want = limit ? limit - (long)json_array_size(items) : 500;
    char *json = NULL;
    int rc = page(c, a, (int32_t)(want > 500 ? 500 : want), token, &json, &err);
    json_t *v, *arr, *next;

    if (rc < 0) {
      status = call_failed(rc, &err);
      goto out;
    }
    v = json_loads(json, 0, NULL);
    analytics_free(json);
    arr = json_object_get(v, key);
    next = json_object_get(v, "nextPageToken");
    if (json_is_array(arr))
      json_array_extend(items, arr);
    free(token);
    token =
        json_is_string(next) && json_string_length(next) ? strdup(json_string_value(next)) : NULL;
    json_decref(v);
    if (!token || (limit && (long)json_array_size(items) >= limit))
      break;
  }
  json_object_set(doc, key, items);
  if (token)
    json_object_set_new(doc, "nextPageToken", json_string(token));
  print_value(doc);
out:
  free(token);
  json_decref(items);
  json_decref(doc);
  return status;
}

/* --- track --- */

/* Delivery failures, reported as they happen (on the client's thread). */
static void on_failure(const analytics_delivery_failure_t *f, void *ctx) {
  (void)ctx;
  fprintf(stderr, "analyticsctl: event %s (%s %s) %s: %s\n", f->event_id ? f->event_id : "?",
          f->event_type ? f->event_type : "?", f->event_name ? f->event_name : "?",
          f->kind == ANALYTICS_FAILURE_REJECTED ? "rejected" : "undelivered",
          f->message ? f->message : "");
  for (size_t i = 1; i < f->violation_count; i++)
    fprintf(stderr, "analyticsctl:   %s: %s\n", f->violations[i].field,
            f->violations[i].description);
}

/* Queues ev, waiting for room instead of dropping it (one producer: the
 * queue only empties while we wait). */
static int track_one(analytics_client_t *c, const analytics_event_t *ev, analytics_error_t *err) {
  analytics_stats_t st;
  int rc;

  analytics_stats(c, &st);
  if (st.queued >= 9000)
    (void)analytics_flush(c, 0, NULL);
  rc = analytics_track(c, ev, err);
  if (rc == ANALYTICS_ERR_QUEUE_FULL) {
    (void)analytics_flush(c, 0, NULL);
    rc = analytics_track(c, ev, err);
  }
  return rc;
}

static int track_stdin(analytics_client_t *c, const struct args *a, long *tracked, long *bad,
                       long *lines) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  int status = 0;

  while ((n = getline(&line, &cap, stdin)) >= 0) {
    analytics_error_t err;
    analytics_event_t *ev;

    (*lines)++;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
      line[--n] = '\0';
    if (strspn(line, " \t") == (size_t)n)
      continue;
    ev = analytics_event_new_from_json(line, &err);
    if (ev && track_one(c, ev, &err) == 0) {
      (*tracked)++;
    } else {
      fprintf(stderr, "analyticsctl: line %ld: %s\n", *lines, err.message);
      (*bad)++;
    }
    analytics_event_destroy(ev);
    if (*bad && a->opt[O_STOP]) {
      fprintf(stderr, "analyticsctl: stopped at line %ld (--stop-on-error)\n", *lines);
      break;
    }
  }
  if (ferror(stdin)) {
    fprintf(stderr, "analyticsctl: reading stdin: %s\n", strerror(errno));
    status = EXIT_FAIL;
  }
  free(line);
  return status;
}

static analytics_event_t *event_from_args(const struct args *a, char *id, int *status) {
  analytics_event_t *ev = analytics_event_new(a->pos[0], a->pos[1]);
  analytics_error_t err;
  char key[256];
  const char *v;
  int64_t ms;

  *status = 0;
  if (!ev) {
    *status = usage_error("track", "bad TYPE or NAME");
    return NULL;
  }
  for (int i = 2; i < a->n_pos && !*status; i++) {
    json_t *jv;
    if (split_kv(a->pos[i], key, sizeof key, &v) < 0) {
      *status = usage_error("track", "properties are KEY=VALUE, not \"%s\"", a->pos[i]);
      break;
    }
    jv = typed_value(v);
    if (json_is_string(jv))
      *status = analytics_event_set_string(ev, key, v) < 0;
    else if (json_is_boolean(jv))
      *status = analytics_event_set_bool(ev, key, json_is_true(jv)) < 0;
    else
      *status = analytics_event_set_number(ev, key, json_number_value(jv)) < 0;
    json_decref(jv);
    if (*status)
      *status = usage_error("track", "bad property \"%s\"", a->pos[i]);
  }
  if (!*status && a->opt[O_PROPERTIES] &&
      analytics_event_set_properties_json(ev, a->opt[O_PROPERTIES], &err) < 0)
    *status = usage_error("track", "--properties: %s", err.message);
  if (!*status && a->opt[O_SESSION] && analytics_event_set_session(ev, a->opt[O_SESSION]) < 0)
    *status = usage_error("track", "bad --session");
  if (!*status && a->opt[O_TIMESTAMP]) {
    if (parse_time(a->opt[O_TIMESTAMP], &ms) < 0)
      *status = usage_error("track", "--timestamp: cannot read \"%s\"", a->opt[O_TIMESTAMP]);
    else
      analytics_event_set_timestamp_ms(ev, ms);
  }
  if (!*status) {
    if (a->opt[O_ID])
      snprintf(id, ANALYTICS_EVENT_ID_SIZE + 92, "%s", a->opt[O_ID]);
    else
      analytics_generate_event_id(id);
    if (analytics_event_set_id(ev, id) < 0)
      *status = usage_error("track", "--id: up to 128 characters of A-Z a-z 0-9 _ . : -");
  }
  if (*status) {
    analytics_event_destroy(ev);
    return NULL;
  }
  return ev;
}

static int cmd_track(analytics_client_t *c, const struct args *a) {
  static const int ok_args[] = {O_SESSION, O_ID, O_PROPERTIES, O_TIMESTAMP, 0};
  static const int ok_stdin[] = {O_STDIN, O_STOP, 0};
  analytics_event_t *ev = NULL;
  analytics_error_t err;
  analytics_stats_t st;
  char id[ANALYTICS_EVENT_ID_SIZE + 92] = "";
  long tracked = 0, bad = 0, lines = 0;
  int status, rc;
  json_t *sum;

  if (a->opt[O_STDIN]) {
    if ((status = allowed_opts(a, "track --stdin", ok_stdin)) != 0)
      return status;
    if (a->n_pos)
      return usage_error("track", "track --stdin takes no TYPE, NAME or properties");
    status = track_stdin(c, a, &tracked, &bad, &lines);
  } else {
    if ((status = allowed_opts(a, "track", ok_args)) != 0)
      return status;
    if (a->n_pos < 2)
      return usage_error("track", "track needs TYPE and NAME (or --stdin)");
    if (!(ev = event_from_args(a, id, &status)))
      return status;
    if ((rc = track_one(c, ev, &err)) < 0) {
      analytics_event_destroy(ev);
      return call_failed(rc, &err);
    }
    tracked = 1;
    analytics_event_destroy(ev);
  }
  rc = analytics_flush(c, 0, &err);
  analytics_stats(c, &st);
  sum = json_object();
  if (id[0])
    json_object_set_new(sum, "eventId", json_string(id));
  if (a->opt[O_STDIN]) {
    json_object_set_new(sum, "lines", json_integer(lines));
    json_object_set_new(sum, "badLines", json_integer(bad));
  }
  json_object_set_new(sum, "tracked", json_integer(tracked));
  json_object_set_new(sum, "accepted", json_integer((json_int_t)st.accepted));
  json_object_set_new(sum, "duplicates", json_integer((json_int_t)st.duplicates));
  json_object_set_new(sum, "rejected", json_integer((json_int_t)st.rejected));
  json_object_set_new(sum, "undelivered", json_integer((json_int_t)(st.failed + st.queued)));
  json_object_set_new(sum, "batches", json_integer((json_int_t)st.batches));
  json_object_set_new(sum, "retries", json_integer((json_int_t)st.retries));
  print_value(sum);
  json_decref(sum);
  if (rc < 0 && rc != ANALYTICS_ERR_UNAVAILABLE)
    fprintf(stderr, "analyticsctl: flush: %s\n", err.message);
  if (st.failed + st.queued)
    fprintf(stderr, "analyticsctl: %llu event(s) not delivered\n",
            (unsigned long long)(st.failed + st.queued));
  if (st.rejected)
    fprintf(stderr, "analyticsctl: %llu event(s) rejected by the server\n",
            (unsigned long long)st.rejected);
  if (bad)
    fprintf(stderr, "analyticsctl: %ld bad line(s) skipped\n", bad);
  return status || rc < 0 || bad || st.rejected || st.failed || st.queued ? EXIT_FAIL : 0;
}

/* --- search --- */

struct props {
  const char *keys[MAX_LIST], *values[MAX_LIST];
  char store[MAX_LIST][256];
};

static int search_page(analytics_client_t *c, const struct args *a, int32_t page_size,
                       const char *token, char **json, analytics_error_t *err) {
  analytics_search_t s = {.event_type = a->opt[O_TYPE],
                          .event_name = a->opt[O_NAME],
                          .session_id = a->opt[O_SESSION],
                          .query = a->opt[O_QUERY],
                          .page_size = page_size,
                          .page_token = token};
  struct props p;

  if (a->opt[O_FROM])
    parse_time(a->opt[O_FROM], &s.from_ms); /* checked in cmd_search */
  if (a->opt[O_TO])
    parse_time(a->opt[O_TO], &s.to_ms);
  for (size_t i = 0; i < a->property.n; i++) {
    split_kv(a->property.v[i], p.store[i], sizeof p.store[i], &p.values[i]);
    p.keys[i] = p.store[i];
  }
  s.property_keys = p.keys;
  s.property_values = p.values;
  s.property_count = a->property.n;
  return analytics_search_events(c, &s, json, err);
}

static int cmd_search(analytics_client_t *c, const struct args *a) {
  static const int ok[] = {O_TYPE,     O_NAME,  O_SESSION, O_QUERY, O_FROM, O_TO,
                           O_PROPERTY, O_LIMIT, O_PAGE,    O_ALL,   0};
  analytics_error_t err;
  char key[256], *json = NULL;
  const char *v;
  int64_t ms;
  long limit;
  int status;

  if ((status = allowed_opts(a, "search", ok)) != 0 || (status = limit_of(a, &limit)) != 0)
    return status;
  if (a->n_pos)
    return usage_error("search", "unexpected argument \"%s\"", a->pos[0]);
  if ((a->opt[O_FROM] && parse_time(a->opt[O_FROM], &ms) < 0) ||
      (a->opt[O_TO] && parse_time(a->opt[O_TO], &ms) < 0))
    return usage_error("search", "--from/--to: RFC 3339, Unix ms, now or -15m/-2h/-7d");
  for (size_t i = 0; i < a->property.n; i++)
    if (split_kv(a->property.v[i], key, sizeof key, &v) < 0)
      return usage_error("search", "--property takes KEY=VALUE");
  if (a->opt[O_ALL])
    return all_pages(c, a, "events", limit, search_page);
  status = search_page(c, a, (int32_t)limit, a->opt[O_PAGE], &json, &err);
  return finish(status, json, &err);
}

/* --- metrics, reports, alerts: shared verbs --- */

/* The id a verb needs, or a usage error. */
static const char *need_id(const struct args *a, const char *verb, int *status) {
  if (a->n_pos < 2) {
    *status = usage_error(a->cmd, "%s %s needs an ID", a->cmd, verb);
    return NULL;
  }
  if (a->n_pos > 2) {
    *status = usage_error(a->cmd, "unexpected argument \"%s\"", a->pos[2]);
    return NULL;
  }
  *status = 0;
  return a->pos[1];
}

/* Calls a unary method with req (stolen) and prints the answer. */
static int call_json(analytics_client_t *c, const char *method, json_t *req) {
  char *text = json_dumps(req, JSON_COMPACT), *json = NULL;
  analytics_error_t err;
  int rc;

  json_decref(req);
  rc = analytics_call(c, method, text, &json, &err);
  free(text);
  return finish(rc, json, &err);
}

/* For update: the current object from get (output-only fields removed), or
 * NULL after printing the error. */
static json_t *current(analytics_client_t *c, const char *method, const char *id_field,
                       const char *id, int *status) {
  json_t *req = json_pack("{ss}", id_field, id), *obj;
  char *text = json_dumps(req, JSON_COMPACT), *json = NULL;
  analytics_error_t err;
  int rc = analytics_call(c, method, text, &json, &err);

  json_decref(req);
  free(text);
  if (rc < 0) {
    *status = call_failed(rc, &err);
    return NULL;
  }
  obj = json_loads(json, 0, NULL);
  analytics_free(json);
  if (!json_is_object(obj)) {
    json_decref(obj);
    fprintf(stderr, "analyticsctl: the server's answer is not a JSON object\n");
    *status = EXIT_FAIL;
    return NULL;
  }
  json_object_del(obj, id_field);
  json_object_del(obj, "accountId");
  json_object_del(obj, "createdAt");
  json_object_del(obj, "updatedAt");
  *status = 0;
  return obj;
}

static void set_str(json_t *o, const char *key, const char *v) {
  if (v)
    json_object_set_new(o, key, json_string(v));
}

static void set_list(json_t *o, const char *key, const struct list *l) {
  if (!l->n)
    return;
  json_t *arr = json_array();
  for (size_t i = 0; i < l->n; i++)
    json_array_append_new(arr, json_string(l->v[i]));
  json_object_set_new(o, key, arr);
}

#define LIST_PAGE_FN(fname, libfn)                                                                 \
  static int fname(analytics_client_t *c, const struct args *a, int32_t page_size,                 \
                   const char *token, char **json, analytics_error_t *err) {                       \
    (void)a;                                                                                       \
    return libfn(c, page_size, token, json, err);                                                  \
  }
LIST_PAGE_FN(metrics_page, analytics_list_metrics)
LIST_PAGE_FN(reports_page, analytics_list_reports)
LIST_PAGE_FN(alerts_page, analytics_list_alerts)

/* verb list [--limit] [--page] [--all]. */
static int list_verb(analytics_client_t *c, const struct args *a, const char *key, page_fn page) {
  static const int ok[] = {O_LIMIT, O_PAGE, O_ALL, 0};
  analytics_error_t err;
  char *json = NULL;
  long limit;
  int status;

  if ((status = allowed_opts(a, "list", ok)) != 0 || (status = limit_of(a, &limit)) != 0)
    return status;
  if (a->n_pos > 1)
    return usage_error(a->cmd, "unexpected argument \"%s\"", a->pos[1]);
  if (a->opt[O_ALL])
    return all_pages(c, a, key, limit, page);
  status = page(c, a, (int32_t)limit, a->opt[O_PAGE], &json, &err);
  return finish(status, json, &err);
}

/* The answer of a delete: {"<idField>": id, "deleted": true}. */
static int deleted(int rc, const char *id_field, const char *id, const analytics_error_t *err) {
  if (rc < 0)
    return call_failed(rc, err);
  json_t *v = json_pack("{sssb}", id_field, id, "deleted", 1);
  print_value(v);
  json_decref(v);
  return 0;
}

/* --- metrics --- */

/* "field:op[:value]" as a MetricFilter. */
static json_t *metric_filter(const char *spec) {
  const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
  char field[256], op[32];
  json_t *f;

  if (!c1 || c1 == spec || (size_t)(c1 - spec) >= sizeof field)
    return NULL;
  memcpy(field, spec, (size_t)(c1 - spec));
  field[c1 - spec] = '\0';
  size_t oplen = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);
  if (!oplen || oplen >= sizeof op)
    return NULL;
  memcpy(op, c1 + 1, oplen);
  op[oplen] = '\0';
  f = json_pack("{ssss}", "field", field, "op", op);
  if (!c2)
    return f; /* exists */
  const char *v = c2 + 1;
  if (!strcmp(op, "in")) {
    json_t *arr = json_array();
    char *copy = strdup(v), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
      json_array_append_new(arr, json_string(t));
    free(copy);
    json_object_set_new(f, "value", arr);
  } else if (!strcmp(op, "gt") || !strcmp(op, "gte") || !strcmp(op, "lt") || !strcmp(op, "lte")) {
    json_object_set_new(f, "value", typed_value(v));
  } else {
    json_object_set_new(f, "value", json_string(v));
  }
  return f;
}

/* Applies create/update options to the metric object m. */
static int metric_apply(const struct args *a, json_t *m) {
  json_t *vars = NULL;
  int status;

  set_str(m, "name", a->opt[O_NAME]);
  set_str(m, "type", a->opt[O_TYPE]);
  set_str(m, "formula", a->opt[O_FORMULA]);
  set_str(m, "unit", a->opt[O_UNIT]);
  set_str(m, "aggregation", a->opt[O_AGG]);
  set_str(m, "description", a->opt[O_DESC]);
  set_list(m, "dimensions", &a->dim);
  if (a->filter.n) {
    json_t *arr = json_array();
    for (size_t i = 0; i < a->filter.n; i++) {
      json_t *f = metric_filter(a->filter.v[i]);
      if (!f) {
        json_decref(arr);
        return usage_error("metrics", "--filter takes FIELD:OP[:VALUE], not \"%s\"",
                           a->filter.v[i]);
      }
      json_array_append_new(arr, f);
    }
    json_object_set_new(m, "filters", arr);
  }
  if (a->variable.n) {
    if ((status = kv_object(a, &a->variable, "variable", false, &vars)) != 0)
      return status;
    json_object_set_new(m, "variables", vars);
  }
  return 0;
}

/* A user-defined object the CLI creates and replaces the same way for every
 * kind: its RPCs, its JSON field names and how options fill it. */
struct resource {
  const char *noun;                  /* "metrics": the command, for messages */
  const char *create, *get, *update; /* RPC paths */
  const char *id_field;              /* "metricId" */
  const char *body_field;            /* "metric" */
  int (*apply)(const struct args *a, json_t *obj);
};

/* Fills obj (owned) from the options and sends it to the create RPC. */
static int create_resource(analytics_client_t *c, const struct args *a, const struct resource *r,
                           json_t *obj) {
  int status = r->apply(a, obj);
  if (status != 0) {
    json_decref(obj);
    return status;
  }
  return call_json(c, r->create, json_pack("{so}", r->body_field, obj));
}

/* PUT replaces the whole object: read it, change what the options say,
 * send all of it back. */
static int update_resource(analytics_client_t *c, const struct args *a, const struct resource *r,
                           const int *allowed) {
  char what[64];
  const char *id;
  int status;
  snprintf(what, sizeof what, "%s update", r->noun);
  if ((status = allowed_opts(a, what, allowed)) != 0 || !(id = need_id(a, "update", &status)))
    return status;
  json_t *obj = current(c, r->get, r->id_field, id, &status);
  if (!obj)
    return status;
  if ((status = r->apply(a, obj)) != 0) {
    json_decref(obj);
    return status;
  }
  return call_json(c, r->update, json_pack("{ssso}", r->id_field, id, r->body_field, obj));
}

static const struct resource metric_resource = {"metrics",
                                                "/analytics.v1.MetricService/CreateMetric",
                                                "/analytics.v1.MetricService/GetMetric",
                                                "/analytics.v1.MetricService/UpdateMetric",
                                                "metricId",
                                                "metric",
                                                metric_apply};

static int cmd_metrics(analytics_client_t *c, const struct args *a) {
  static const int ok_def[] = {O_NAME, O_TYPE, O_FORMULA, O_UNIT,     O_AGG,
                               O_DESC, O_DIM,  O_FILTER,  O_VARIABLE, 0};
  static const int ok_data[] = {O_FROM, O_TO, O_INTERVAL, O_TZ, O_TOPN, O_DIMFILTER, 0};
  static const int none[] = {0};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
  int status;

  if (!verb)
    return usage_error("metrics", "metrics needs a verb: list, get, create, update, delete, data");
  if (!strcmp(verb, "list"))
    return list_verb(c, a, "metrics", metrics_page);
  if (!strcmp(verb, "create")) {
    if ((status = allowed_opts(a, "metrics create", ok_def)) != 0)
      return status;
    if (a->n_pos > 1)
      return usage_error("metrics", "unexpected argument \"%s\"", a->pos[1]);
    if (!a->opt[O_NAME] || !a->opt[O_FORMULA])
      return usage_error("metrics", "metrics create needs --name and --formula");
    return create_resource(c, a, &metric_resource, json_object());
  }
  if (!strcmp(verb, "update"))
    return update_resource(c, a, &metric_resource, ok_def);
  if (!strcmp(verb, "get") || !strcmp(verb, "delete")) {
    if ((status = allowed_opts(a, verb, none)) != 0 || !(id = need_id(a, verb, &status)))
      return status;
    if (verb[0] == 'g')
      return finish_after(analytics_get_metric(c, id, &json, &err), &json, &err);
    return deleted(analytics_delete_metric(c, id, &err), "metricId", id, &err);
  }
  if (!strcmp(verb, "data")) {
    json_t *req, *dimf = NULL;
    int64_t ms;
    long topn;
    if ((status = allowed_opts(a, "metrics data", ok_data)) != 0 ||
        !(id = need_id(a, verb, &status)))
      return status;
    req = json_pack("{ss}", "metricId", id);
    for (int t = 0; t < 2; t++) {
      const char *v = a->opt[t ? O_TO : O_FROM];
      if (!v)
        continue;
      if (parse_time(v, &ms) < 0) {
        json_decref(req);
        return usage_error("metrics", "--%s: RFC 3339, Unix ms, now or -15m/-2h/-7d",
                           t ? "to" : "from");
      }
      json_object_set_new(req, t ? "to" : "from", time_json(ms));
    }
    set_str(req, "interval", a->opt[O_INTERVAL]);
    set_str(req, "timeZone", a->opt[O_TZ]);
    if (a->opt[O_TOPN]) {
      if (parse_long(a->opt[O_TOPN], 1, 100000, &topn) < 0) {
        json_decref(req);
        return usage_error("metrics", "--top-n takes a number from 1 to 100000");
      }
      json_object_set_new(req, "topN", json_integer(topn));
    }
    if (a->dimfilter.n) {
      if ((status = kv_object(a, &a->dimfilter, "dimension-filter", false, &dimf)) != 0) {
        json_decref(req);
        return status;
      }
      json_object_set_new(req, "dimensionFilter", dimf);
    }
    return call_json(c, "/analytics.v1.MetricService/GetMetricData", req);
  }
  return usage_error("metrics", "unknown verb \"%s\": list, get, create, update, delete, data",
                     verb);
}

/* --- reports --- */

static int write_file(const char *path, const analytics_report_file_t *f) {
  FILE *out = strcmp(path, "-") ? fopen(path, "wb") : stdout;
  int ok = out && fwrite(f->data, 1, f->size, out) == f->size;

  if (out && out != stdout && fclose(out) != 0)
    ok = 0;
  if (!ok)
    fprintf(stderr, "analyticsctl: cannot write %s: %s\n", path, strerror(errno));
  return ok ? 0 : EXIT_FAIL;
}

static int cmd_reports(analytics_client_t *c, const struct args *a) {
  static const int ok_gen[] = {O_TEMPLATE,   O_FORMAT,   O_NAME,      O_PARAM,
                               O_PARAMETERS, O_SCHEDULE, O_RECIPIENT, 0};
  static const int ok_dl[] = {O_OUTPUT, 0};
  static const int none[] = {0};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
  int status;

  if (!verb)
    return usage_error("reports", "reports needs a verb: generate, list, status, download");
  if (!strcmp(verb, "list"))
    return list_verb(c, a, "reports", reports_page);
  if (!strcmp(verb, "generate")) {
    json_t *r, *params = NULL;
    const char *fmt = a->opt[O_FORMAT] ? a->opt[O_FORMAT] : "pdf";
    if ((status = allowed_opts(a, "reports generate", ok_gen)) != 0)
      return status;
    if (a->n_pos > 1)
      return usage_error("reports", "unexpected argument \"%s\"", a->pos[1]);
    if (!a->opt[O_TEMPLATE])
      return usage_error("reports", "reports generate needs --template");
    if (!strcmp(fmt, "excel"))
      fmt = "xlsx";
    if (strcmp(fmt, "pdf") && strcmp(fmt, "xlsx") && strcmp(fmt, "csv"))
      return usage_error("reports", "--format is pdf, xlsx or csv");
    if (a->opt[O_PARAMETERS]) {
      params = json_loads(a->opt[O_PARAMETERS], 0, NULL);
      if (!json_is_object(params)) {
        json_decref(params);
        return usage_error("reports", "--parameters takes a JSON object");
      }
    }
    if (a->param.n) {
      json_t *kv;
      if ((status = kv_object(a, &a->param, "param", true, &kv)) != 0) {
        json_decref(params);
        return status;
      }
      if (!params)
        params = json_object();
      json_object_update(params, kv);
      json_decref(kv);
    }
    r = json_pack("{ssss}", "template", a->opt[O_TEMPLATE], "format", fmt);
    set_str(r, "name", a->opt[O_NAME]);
    set_str(r, "schedule", a->opt[O_SCHEDULE]);
    set_list(r, "recipients", &a->recipient);
    if (params)
      json_object_set_new(r, "parameters", params);
    return call_json(c, "/analytics.v1.ReportService/GenerateReport",
                     json_pack("{so}", "report", r));
  }
  if (!strcmp(verb, "status") || !strcmp(verb, "get")) {
    if ((status = allowed_opts(a, verb, none)) != 0 || !(id = need_id(a, verb, &status)))
      return status;
    return finish_after(analytics_get_report(c, id, &json, &err), &json, &err);
  }
  if (!strcmp(verb, "download")) {
    analytics_report_file_t *f = NULL;
    if ((status = allowed_opts(a, "reports download", ok_dl)) != 0 ||
        !(id = need_id(a, verb, &status)))
      return status;
    int rc = analytics_download_report(c, id, &f, &err);
    if (rc < 0)
      return call_failed(rc, &err);
    const char *path = a->opt[O_OUTPUT] ? a->opt[O_OUTPUT]
                       : f->filename && f->filename[0] && !strchr(f->filename, '/') ? f->filename
                                                                                    : "report.bin";
    status = write_file(path, f);
    if (!status && strcmp(path, "-")) {
      json_t *v = json_pack("{sssIss}", "file", path, "bytes", (json_int_t)f->size, "contentType",
                            f->content_type ? f->content_type : "");
      print_value(v);
      json_decref(v);
    }
    analytics_report_file_destroy(f);
    return status;
  }
  return usage_error("reports", "unknown verb \"%s\": generate, list, status, download", verb);
}

/* --- alerts --- */

static int alert_apply(const struct args *a, json_t *al) {
  double thr;
  long cooldown;
  char *end;

  set_str(al, "name", a->opt[O_NAME]);
  set_str(al, "metric", a->opt[O_METRIC]);
  set_str(al, "severity", a->opt[O_SEVERITY]);
  if (a->opt[O_CONDITION]) {
    json_t *cond = json_loads(a->opt[O_CONDITION], 0, NULL);
    json_object_set_new(al, "condition",
                        json_is_object(cond) ? cond : json_string(a->opt[O_CONDITION]));
    if (!json_is_object(cond))
      json_decref(cond);
  }
  if (a->opt[O_THRESHOLD]) {
    errno = 0;
    thr = strtod(a->opt[O_THRESHOLD], &end);
    if (errno || *end || end == a->opt[O_THRESHOLD] || !isfinite(thr))
      return usage_error("alerts", "--threshold takes a number");
    json_object_set_new(al, "threshold", json_real(thr));
  }
  set_list(al, "channels", &a->channel);
  if (a->opt[O_COOLDOWN]) {
    if (parse_long(a->opt[O_COOLDOWN], 0, 100000000, &cooldown) < 0)
      return usage_error("alerts", "--cooldown takes seconds (a number)");
    json_object_set_new(al, "cooldown", json_integer(cooldown));
  }
  if (a->opt[O_DISABLED] && a->opt[O_ENABLED])
    return usage_error("alerts", "--enabled and --disabled together");
  if (a->opt[O_DISABLED] || a->opt[O_ENABLED])
    json_object_set_new(al, "enabled", json_boolean(a->opt[O_ENABLED] != NULL));
  return 0;
}

static int alerts_history_page(analytics_client_t *c, const struct args *a, int32_t page_size,
                               const char *token, char **json, analytics_error_t *err) {
  return analytics_list_alert_history(c, a->pos[1], page_size, token, json, err);
}

static const struct resource alert_resource = {"alerts",
                                               "/analytics.v1.AlertService/CreateAlert",
                                               "/analytics.v1.AlertService/GetAlert",
                                               "/analytics.v1.AlertService/UpdateAlert",
                                               "alertId",
                                               "alert",
                                               alert_apply};

static int cmd_alerts(analytics_client_t *c, const struct args *a) {
  static const int ok_def[] = {O_NAME,    O_METRIC,   O_CONDITION, O_THRESHOLD, O_SEVERITY,
                               O_CHANNEL, O_COOLDOWN, O_DISABLED,  O_ENABLED,   0};
  static const int ok_hist[] = {O_LIMIT, O_PAGE, O_ALL, 0};
  static const int none[] = {0};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
  int status;

  if (!verb)
    return usage_error("alerts", "alerts needs a verb: create, list, get, update, delete, history");
  if (!strcmp(verb, "list"))
    return list_verb(c, a, "alerts", alerts_page);
  if (!strcmp(verb, "create")) {
    if ((status = allowed_opts(a, "alerts create", ok_def)) != 0)
      return status;
    if (a->n_pos > 1)
      return usage_error("alerts", "unexpected argument \"%s\"", a->pos[1]);
    if (!a->opt[O_NAME] || !a->opt[O_METRIC] || !a->opt[O_CONDITION] || !a->opt[O_THRESHOLD])
      return usage_error("alerts", "alerts create needs --name, --metric, --condition and "
                                   "--threshold");
    return create_resource(c, a, &alert_resource, json_pack("{sb}", "enabled", 1));
  }
  if (!strcmp(verb, "update"))
    return update_resource(c, a, &alert_resource, ok_def);
  if (!strcmp(verb, "get") || !strcmp(verb, "delete")) {
    if ((status = allowed_opts(a, verb, none)) != 0 || !(id = need_id(a, verb, &status)))
      return status;
    if (verb[0] == 'g')
      return finish_after(analytics_get_alert(c, id, &json, &err), &json, &err);
    return deleted(analytics_delete_alert(c, id, &err), "alertId", id, &err);
  }
  if (!strcmp(verb, "history")) {
    long limit;
    if ((status = allowed_opts(a, "alerts history", ok_hist)) != 0 ||
        !(id = need_id(a, verb, &status)) || (status = limit_of(a, &limit)) != 0)
      return status;
    if (a->opt[O_ALL])
      return all_pages(c, a, "entries", limit, alerts_history_page);
    status = analytics_list_alert_history(c, id, (int32_t)limit, a->opt[O_PAGE], &json, &err);
    return finish(status, json, &err);
  }
  return usage_error("alerts", "unknown verb \"%s\": create, list, get, update, delete, history",
                     verb);
}

/* --- Streams: tail and streaming calls ---
 * SIGINT and SIGTERM are blocked in every thread before the client starts;
 * one thread waits for them (sigwait) and cancels the client's streams, so
 * the stream call returns 0 and the client is destroyed normally. */

static struct {
  pthread_mutex_t mu;
  analytics_client_t *client; /* guarded by mu; NULL once the stream is over */
  volatile sig_atomic_t stop;
} sigs = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

static void *signal_waiter(void *arg) {
  const sigset_t *set = arg;
  int sig;

  if (sigwait(set, &sig) != 0)
    return NULL;
  sigs.stop = 1;
  /* Repeat: a stream that was still opening when the signal came is only
   * listed (cancellable) once it is open. */
  for (;;) {
    pthread_mutex_lock(&sigs.mu);
    if (!sigs.client) {
      pthread_mutex_unlock(&sigs.mu);
      return NULL;
    }
    analytics_client_cancel_streams(sigs.client);
    pthread_mutex_unlock(&sigs.mu);
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  }
}

struct tail_ctx {
  bool events_only; /* skip aggregate snapshots */
  unsigned long printed;
};

static int print_line(const char *json, void *arg) {
  struct tail_ctx *t = arg;

  if (sigs.stop)
    return 1;
  if (t->events_only && !strstr(json, "\"event\"")) {
    /* Cheap pre-check, then the exact one: only messages with "event". */
    return 0;
  }
  if (t->events_only) {
    json_t *v = json_loads(json, 0, NULL);
    bool is_event = json_object_get(v, "event") != NULL;
    json_decref(v);
    if (!is_event)
      return 0;
  }
  puts(json);
  fflush(stdout);
  t->printed++;
  return 0;
}

/* Runs a server-streaming method with a JSON request (stolen) until it ends
 * or a signal. */
static int run_stream(analytics_client_t *c, const char *method, json_t *req, bool events_only) {
  struct tail_ctx t = {events_only, 0};
  char *text = json_dumps(req, JSON_COMPACT);
  analytics_error_t err;
  int rc;

  json_decref(req);
  rc = analytics_stream_call(c, method, text, print_line, &t, &err);
  free(text);
  if (rc < 0)
    return call_failed(rc, &err);
  if (sigs.stop)
    fprintf(stderr, "analyticsctl: stream ended by signal after %lu message(s)\n", t.printed);
  return 0;
}

static int cmd_tail(analytics_client_t *c, const struct args *a) {
  static const int ok_events[] = {O_TYPE, O_NAME, O_PROPERTY, O_SNAPSHOTS, 0};
  static const int ok_metric[] = {O_METRIC, O_INTERVAL, O_TZ, O_AFTER, 0};
  json_t *req, *props;
  long after;
  int status;

  if (a->n_pos)
    return usage_error("tail", "unexpected argument \"%s\"", a->pos[0]);
  if (a->opt[O_METRIC]) {
    if ((status = allowed_opts(a, "tail --metric", ok_metric)) != 0)
      return status;
    req = json_pack("{ss}", "metricId", a->opt[O_METRIC]);
    set_str(req, "interval", a->opt[O_INTERVAL]);
    set_str(req, "timeZone", a->opt[O_TZ]);
    if (a->opt[O_AFTER]) {
      if (parse_long(a->opt[O_AFTER], 0, __LONG_MAX__, &after) < 0) {
        json_decref(req);
        return usage_error("tail", "--after takes a sequence number");
      }
      char buf[32];
      snprintf(buf, sizeof buf, "%ld", after);
      json_object_set_new(req, "afterSequence", json_string(buf));
    }
    return run_stream(c, "/analytics.v1.RealtimeService/StreamMetric", req, false);
  }
  if ((status = allowed_opts(a, "tail", ok_events)) != 0)
    return status;
  if ((status = kv_object(a, &a->property, "property", false, &props)) != 0)
    return status;
  req = json_pack("{sb}", "includeEvents", 1);
  set_str(req, "eventType", a->opt[O_TYPE]);
  set_str(req, "eventName", a->opt[O_NAME]);
  if (json_object_size(props))
    json_object_set(req, "properties", props);
  json_decref(props);
  return run_stream(c, "/analytics.v1.RealtimeService/StreamAnalytics", req, !a->opt[O_SNAPSHOTS]);
}

/* --- health, call --- */

static int cmd_health(analytics_client_t *c, const struct args *a) {
  static const int ok[] = {O_SERVICE, 0};
  analytics_error_t err;
  bool serving = false;
  int rc;

  if ((rc = allowed_opts(a, "health", ok)) != 0)
    return rc;
  if (a->n_pos)
    return usage_error("health", "unexpected argument \"%s\"", a->pos[0]);
  rc = analytics_health(c, a->opt[O_SERVICE] ? a->opt[O_SERVICE] : "", &serving, &err);
  if (rc < 0)
    return call_failed(rc, &err);
  json_t *v = json_pack("{ss}", "status", serving ? "SERVING" : "NOT_SERVING");
  print_value(v);
  json_decref(v);
  return serving ? 0 : EXIT_FAIL;
}

static int cmd_call(analytics_client_t *c, const struct args *a) {
  static const int none[] = {0};
  analytics_error_t err;
  char *json = NULL;
  int rc;

  if ((rc = allowed_opts(a, "call", none)) != 0)
    return rc;
  if (a->n_pos < 1 || a->n_pos > 2)
    return usage_error("call", "call takes METHOD and an optional JSON request");
  const char *req = a->n_pos > 1 ? a->pos[1] : NULL;
  rc = analytics_call(c, a->pos[0], req, &json, &err);
  if (rc == ANALYTICS_ERR_INVALID && strstr(err.message, "streaming")) {
    json_t *r = req ? json_loads(req, 0, NULL) : json_object();
    if (!r)
      return usage_error("call", "the request is not JSON");
    return run_stream(c, a->pos[0], r, false);
  }
  if (rc == ANALYTICS_ERR_INVALID) {
    fprintf(stderr, "analyticsctl: %s\n", err.message);
    return EXIT_USAGE;
  }
  return finish(rc, json, &err);
}

/* --- main --- */

struct command {
  const char *name;
  const char *help;
  int (*run)(analytics_client_t *c, const struct args *a);
  bool streams; /* may run a stream: install the signal thread */
};

static const struct command commands[] = {
    {"track", track_help, cmd_track, false},       {"search", search_help, cmd_search, false},
    {"metrics", metrics_help, cmd_metrics, false}, {"reports", reports_help, cmd_reports, false},
    {"alerts", alerts_help, cmd_alerts, false},    {"tail", tail_help, cmd_tail, true},
    {"health", health_help, cmd_health, false},    {"call", call_help, cmd_call, true},
};

int main(int argc, char **argv) {
  const struct command *cmd = NULL;
  analytics_options_t opts;
  analytics_client_t *c;
  analytics_error_t err;
  struct args a;
  sigset_t set;
  pthread_t waiter;
  long timeout;
  int i, rc;

  analytics_options_init(&opts);
  if (getenv("ANALYTICS_TARGET") && *getenv("ANALYTICS_TARGET"))
    opts.target = getenv("ANALYTICS_TARGET");
  if (getenv("ANALYTICS_TOKEN") && *getenv("ANALYTICS_TOKEN"))
    opts.token = getenv("ANALYTICS_TOKEN");
  /* Global options come before the command. */
  for (i = 1; i < argc && argv[i][0] == '-'; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(main_help, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--version")) {
      puts(ANALYTICS_VERSION_STRING);
      return 0;
    }
    if (strcmp(argv[i], "--target") && strcmp(argv[i], "--token") && strcmp(argv[i], "--timeout"))
      return usage_error(NULL, "unknown option %s", argv[i]);
    if (i + 1 >= argc)
      return usage_error(NULL, "%s needs a value", argv[i]);
    if (!strcmp(argv[i], "--target"))
      opts.target = argv[++i];
    else if (!strcmp(argv[i], "--token"))
      opts.token = argv[++i];
    else if (parse_long(argv[++i], 1, 86400000, &timeout) < 0)
      return usage_error(NULL, "--timeout takes milliseconds (1 to 86400000)");
    else
      opts.timeout_ms = timeout;
  }
  if (i >= argc)
    return usage_error(NULL, "missing command");
  if (!strcmp(argv[i], "help")) {
    for (size_t k = 0; i + 1 < argc && k < sizeof commands / sizeof *commands; k++)
      if (!strcmp(commands[k].name, argv[i + 1])) {
        fputs(commands[k].help, stdout);
        return 0;
      }
    fputs(main_help, stdout);
    return 0;
  }
  for (size_t k = 0; k < sizeof commands / sizeof *commands; k++)
    if (!strcmp(commands[k].name, argv[i]))
      cmd = &commands[k];
  if (!cmd)
    return usage_error(NULL, "unknown command \"%s\"", argv[i]);
  /* The command's own arguments: argv[i] plays argv[0] for getopt. */
  rc = parse_args(argc - i, argv + i, cmd->help, &a);
  if (rc != 0)
    return rc < 0 ? 0 : rc;

  if (!strcmp(cmd->name, "track")) {
    /* Queued and batched, a few quick retries, failures reported. */
    opts.batch_size = a.opt[O_STDIN] ? 500 : 100;
    opts.max_retries = 3;
    opts.backoff_max_ms = 1000;
    opts.on_delivery_failure = on_failure;
  } else {
    opts.max_retries = -1;
  }
  if (cmd->streams) {
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread from here on */
  }
  c = analytics_client_new(&opts, &err);
  if (!c) {
    fprintf(stderr, "analyticsctl: %s\n", err.message);
    return a.opt[O_HELP] ? 0
                         : (err.code == ANALYTICS_STATUS_INVALID_ARGUMENT ? EXIT_USAGE : EXIT_FAIL);
  }
  if (cmd->streams) {
    sigs.client = c;
    if (pthread_create(&waiter, NULL, signal_waiter, &set) == 0)
      pthread_detach(waiter);
  }
  rc = cmd->run(c, &a);
  if (cmd->streams) {
    pthread_mutex_lock(&sigs.mu);
    sigs.client = NULL; /* the waiter no longer touches the client */
    pthread_mutex_unlock(&sigs.mu);
  }
  analytics_client_destroy(c);
  return rc;
}
