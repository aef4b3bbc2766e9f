/* analyticsctl: a command-line tool on libanalytics.
 * Exit status: 0 success, 1 the call failed, 2 bad usage. */
#include <analytics/analytics.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: analyticsctl [--target HOST:PORT] [--token TOKEN] [--timeout MS] COMMAND ...\n"
    "\n"
    "commands:\n"
    "  track TYPE NAME [KEY=VALUE...] [--session ID] [--id ID]\n"
    "                              track one event and print the server's result; values\n"
    "                              that read as numbers, true or false are sent as such\n"
    "  search [--type T] [--name N] [--session S] [--query Q] [--limit N] [--page TOKEN]\n"
    "                              search events, newest first\n"
    "  metrics list | get ID | delete ID | data ID [--interval I]\n"
    "  metrics create --name N [--type T] [--formula F] [--unit U] [--aggregation A]\n"
    "                 [--dimension D]...\n"
    "  reports list | get ID | download ID [--output FILE]\n"
    "  reports generate --template T [--format F] [--name N] [--parameters JSON]\n"
    "  alerts list | get ID | delete ID | history ID\n"
    "  tail [--type T] [--name N] [--events]\n"
    "                              follow live analytics, one JSON message per line\n"
    "  health                      ask the server whether it is serving\n"
    "  call METHOD [JSON]          call any unary RPC, e.g.\n"
    "                              call /analytics.v1.MetricService/ListMetrics '{}'\n"
    "\n"
    "The target defaults to $ANALYTICS_TARGET or 127.0.0.1:50051, the token to\n"
    "$ANALYTICS_TOKEN. Answers are printed as JSON.\n";

static int usage(const char *msg) {
  if (msg)
    fprintf(stderr, "analyticsctl: %s\n\n", msg);
  fputs(usage_text, msg ? stderr : stdout);
  return msg ? EXIT_USAGE : 0;
}

/* Prints JSON text indented (as it came when it is not JSON). */
static void print_json(const char *text) {
  json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
  char *pretty = v ? json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;

  puts(pretty ? pretty : (text ? text : "{}"));
  free(pretty);
  json_decref(v);
}

/* Prints the outcome of a call; returns the exit status. json points to the
 * answer (read after the call: the argument order of C is unspecified). */
static int finish(int rc, char **jsonp, const analytics_error_t *err) {
  char *json = jsonp ? *jsonp : NULL;

  if (rc == 0) {
    print_json(json);
    analytics_free(json);
    return 0;
  }
  fprintf(stderr, "analyticsctl: %s: %s: %s\n", analytics_strerror(rc),
          analytics_status_name(err->code), err->message);
  return 1;
}

/* Long options of the subcommands, parsed after the command words. */
struct args {
  const char *type, *name, *session, *query, *page, *id, *output, *interval;
  const char *formula, *unit, *aggregation, *template_name, *format, *parameters;
  const char *dimensions[32];
  size_t n_dimensions;
  long limit;
  int events;
  int n_pos;
  char **pos; /* positional words after the command */
};

static int parse_args(int argc, char **argv, struct args *a) {
  static const struct option opts[] = {
      {"type", required_argument, NULL, 't'},        {"name", required_argument, NULL, 'n'},
      {"session", required_argument, NULL, 's'},     {"query", required_argument, NULL, 'q'},
      {"limit", required_argument, NULL, 'l'},       {"page", required_argument, NULL, 'p'},
      {"id", required_argument, NULL, 'i'},          {"output", required_argument, NULL, 'o'},
      {"interval", required_argument, NULL, 'I'},    {"formula", required_argument, NULL, 'f'},
      {"unit", required_argument, NULL, 'u'},        {"aggregation", required_argument, NULL, 'a'},
      {"dimension", required_argument, NULL, 'd'},   {"template", required_argument, NULL, 'T'},
      {"format", required_argument, NULL, 'F'},      {"parameters", required_argument, NULL, 'P'},
      {"events", no_argument, NULL, 'e'},            {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int c;
  char *end;

  memset(a, 0, sizeof *a);
  optind = 1;
  while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
    switch (c) {
    case 't': a->type = optarg; break;
    case 'n': a->name = optarg; break;
    case 's': a->session = optarg; break;
    case 'q': a->query = optarg; break;
    case 'p': a->page = optarg; break;
    case 'i': a->id = optarg; break;
    case 'o': a->output = optarg; break;
    case 'I': a->interval = optarg; break;
    case 'f': a->formula = optarg; break;
    case 'u': a->unit = optarg; break;
    case 'a': a->aggregation = optarg; break;
    case 'T': a->template_name = optarg; break;
    case 'F': a->format = optarg; break;
    case 'P': a->parameters = optarg; break;
    case 'e': a->events = 1; break;
    case 'd':
      if (a->n_dimensions == 32)
        return usage("too many --dimension");
      a->dimensions[a->n_dimensions++] = optarg;
      break;
    case 'l':
      errno = 0;
      a->limit = strtol(optarg, &end, 10);
      if (errno || *end || a->limit < 1 || a->limit > 100000)
        return usage("--limit takes a number from 1 to 100000");
      break;
    case 'h': usage(NULL); exit(0);
    default: return EXIT_USAGE;
    }
  }
  a->pos = argv + optind;
  a->n_pos = argc - optind;
  return 0;
}

/* KEY=VALUE: numbers and booleans typed, everything else a string. */
static int set_property(analytics_event_t *ev, const char *kv) {
  const char *eq = strchr(kv, '=');
  char key[256], *end;
  double d;

  if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof key)
    return -1;
  memcpy(key, kv, (size_t)(eq - kv));
  key[eq - kv] = '\0';
  const char *v = eq + 1;
  if (!strcmp(v, "true") || !strcmp(v, "false"))
    return analytics_event_set_bool(ev, key, v[0] == 't');
  errno = 0;
  d = strtod(v, &end);
  if (*v && !*end && !errno && isfinite(d) && strspn(v, "0123456789+-.eE") == strlen(v))
    return analytics_event_set_number(ev, key, d);
  return analytics_event_set_string(ev, key, v);
}

static int cmd_track(analytics_client_t *c, struct args *a) {
  analytics_event_t *ev;
  analytics_error_t err;
  char *json = NULL;
  int rc;

  if (a->n_pos < 2)
    return usage("track needs TYPE and NAME");
  ev = analytics_event_new(a->pos[0], a->pos[1]);
  if (!ev)
    return finish(ANALYTICS_ERR_NOMEM, NULL, &(analytics_error_t){8, "out of memory"});
  for (int i = 2; i < a->n_pos; i++)
    if (set_property(ev, a->pos[i]) < 0) {
      analytics_event_destroy(ev);
      return usage("properties are KEY=VALUE");
    }
  if ((a->session && analytics_event_set_session(ev, a->session) < 0) ||
      (a->id && analytics_event_set_id(ev, a->id) < 0)) {
    analytics_event_destroy(ev);
    return usage("bad --session or --id");
  }
  rc = analytics_track_sync(c, ev, &json, &err);
  analytics_event_destroy(ev);
  return finish(rc, &json, &err);
}

static int cmd_search(analytics_client_t *c, struct args *a) {
  analytics_search_t s = {.event_type = a->type, .event_name = a->name,
                          .session_id = a->session, .query = a->query,
                          .page_size = (int32_t)a->limit, .page_token = a->page};
  analytics_error_t err;
  char *json = NULL;
  return finish(analytics_search_events(c, &s, &json, &err), &json, &err);
}

static int cmd_metrics(analytics_client_t *c, struct args *a) {
  analytics_error_t err;
  char *json = NULL;
  const char *verb = a->n_pos > 0 ? a->pos[0] : "";
  const char *id = a->n_pos > 1 ? a->pos[1] : NULL;

  if (!strcmp(verb, "list"))
    return finish(analytics_list_metrics(c, (int32_t)a->limit, a->page, &json, &err), &json, &err);
  if (!strcmp(verb, "create")) {
    analytics_metric_t m = {.name = a->name, .type = a->type, .formula = a->formula,
                            .unit = a->unit, .aggregation = a->aggregation,
                            .dimensions = a->dimensions, .dimension_count = a->n_dimensions};
    if (!a->name)
      return usage("metrics create needs --name");
    return finish(analytics_create_metric(c, &m, &json, &err), &json, &err);
  }
  if (!id)
    return usage("metrics: list, create, or get|delete|data ID");
  if (!strcmp(verb, "get"))
    return finish(analytics_get_metric(c, id, &json, &err), &json, &err);
  if (!strcmp(verb, "delete"))
    return finish(analytics_delete_metric(c, id, &err), NULL, &err);
  if (!strcmp(verb, "data")) {
    analytics_metric_query_t q = {.metric_id = id, .interval = a->interval,
                                  .page_size = (int32_t)a->limit, .page_token = a->page};
    return finish(analytics_get_metric_data(c, &q, &json, &err), &json, &err);
  }
  return usage("metrics: list, create, or get|delete|data ID");
}

static int cmd_reports(analytics_client_t *c, struct args *a) {
  analytics_error_t err;
  char *json = NULL;
  const char *verb = a->n_pos > 0 ? a->pos[0] : "";
  const char *id = a->n_pos > 1 ? a->pos[1] : NULL;

  if (!strcmp(verb, "list"))
    return finish(analytics_list_reports(c, (int32_t)a->limit, a->page, &json, &err), &json, &err);
  if (!strcmp(verb, "generate")) {
    analytics_report_t r = {.name = a->name, .template_name = a->template_name,
                            .format = a->format, .parameters_json = a->parameters};
    if (!a->template_name)
      return usage("reports generate needs --template");
    return finish(analytics_generate_report(c, &r, &json, &err), &json, &err);
  }
  if (!id)
    return usage("reports: list, generate, or get|download ID");
  if (!strcmp(verb, "get"))
    return finish(analytics_get_report(c, id, &json, &err), &json, &err);
  if (!strcmp(verb, "download")) {
    analytics_report_file_t *f = NULL;
    int rc = analytics_download_report(c, id, &f, &err);
    if (rc < 0)
      return finish(rc, NULL, &err);
    const char *path = a->output ? a->output : (f->filename[0] ? f->filename : "report.bin");
    FILE *out = fopen(path, "wb");
    int ok = out && fwrite(f->data, 1, f->size, out) == f->size;
    if (out && fclose(out) != 0)
      ok = 0;
    if (ok)
      printf("%s: %zu bytes (%s)\n", path, f->size, f->content_type);
    else
      fprintf(stderr, "analyticsctl: cannot write %s: %s\n", path, strerror(errno));
    analytics_report_file_destroy(f);
    return ok ? 0 : 1;
  }
  return usage("reports: list, generate, or get|download ID");
}

static int cmd_alerts(analytics_client_t *c, struct args *a) {
  analytics_error_t err;
  char *json = NULL;
  const char *verb = a->n_pos > 0 ? a->pos[0] : "";
  const char *id = a->n_pos > 1 ? a->pos[1] : NULL;

  if (!strcmp(verb, "list"))
    return finish(analytics_list_alerts(c, (int32_t)a->limit, a->page, &json, &err), &json, &err);
  if (!id)
    return usage("alerts: list, or get|delete|history ID");
  if (!strcmp(verb, "get"))
    return finish(analytics_get_alert(c, id, &json, &err), &json, &err);
  if (!strcmp(verb, "delete"))
    return finish(analytics_delete_alert(c, id, &err), NULL, &err);
  if (!strcmp(verb, "history"))
    return finish(analytics_list_alert_history(c, id, (int32_t)a->limit, a->page, &json, &err),
                  &json, &err);
  return usage("alerts: list, or get|delete|history ID");
}

static int print_line(const char *json, void *ctx) {
  (void)ctx;
  puts(json);
  fflush(stdout);
  return 0;
}

static int cmd_tail(analytics_client_t *c, struct args *a) {
  analytics_stream_filter_t f = {.event_type = a->type, .event_name = a->name,
                                 .include_events = a->events};
  analytics_error_t err;
  int rc = analytics_stream_analytics(c, &f, print_line, NULL, &err);
  return rc < 0 ? finish(rc, NULL, &err) : 0;
}

static int cmd_health(analytics_client_t *c) {
  analytics_error_t err;
  bool serving = false;
  int rc = analytics_health(c, "", &serving, &err);

  if (rc < 0)
    return finish(rc, NULL, &err);
  printf("{\"status\": \"%s\"}\n", serving ? "SERVING" : "NOT_SERVING");
  return serving ? 0 : 1;
}

static int cmd_call(analytics_client_t *c, struct args *a) {
  analytics_error_t err;
  char *json = NULL;

  if (a->n_pos < 1)
    return usage("call needs METHOD");
  return finish(analytics_call(c, a->pos[0], a->n_pos > 1 ? a->pos[1] : NULL, &json, &err), &json,
                &err);
}

int main(int argc, char **argv) {
  analytics_options_t opts;
  analytics_client_t *c;
  analytics_error_t err;
  struct args a;
  const char *cmd;
  int i, rc;

  analytics_options_init(&opts);
  if (getenv("ANALYTICS_TARGET") && *getenv("ANALYTICS_TARGET"))
    opts.target = getenv("ANALYTICS_TARGET");
  if (getenv("ANALYTICS_TOKEN") && *getenv("ANALYTICS_TOKEN"))
    opts.token = getenv("ANALYTICS_TOKEN");
  /* Global options come before the command. */
  for (i = 1; i < argc && argv[i][0] == '-'; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
      return usage(NULL);
    if (i + 1 >= argc)
      return usage("missing option value");
    if (!strcmp(argv[i], "--target"))
      opts.target = argv[++i];
    else if (!strcmp(argv[i], "--token"))
      opts.token = argv[++i];
    else if (!strcmp(argv[i], "--timeout"))
      opts.timeout_ms = atoll(argv[++i]);
    else
      return usage("unknown option");
  }
  if (i >= argc)
    return usage("missing command");
  cmd = argv[i];
  /* The command's own arguments: argv[i] plays argv[0] for getopt. */
  if ((rc = parse_args(argc - i, argv + i, &a)) != 0)
    return rc;
  if (strcmp(cmd, "track") && strcmp(cmd, "search") && strcmp(cmd, "metrics") &&
      strcmp(cmd, "reports") && strcmp(cmd, "alerts") && strcmp(cmd, "tail") &&
      strcmp(cmd, "health") && strcmp(cmd, "call"))
    return usage("unknown command");
  opts.max_retries = -1;
  c = analytics_client_new(&opts, &err);
  if (!c) {
    fprintf(stderr, "analyticsctl: %s\n", err.message);
    return 1;
  }
  if (!strcmp(cmd, "track"))
    rc = cmd_track(c, &a);
  else if (!strcmp(cmd, "search"))
    rc = cmd_search(c, &a);
  else if (!strcmp(cmd, "metrics"))
    rc = cmd_metrics(c, &a);
  else if (!strcmp(cmd, "reports"))
    rc = cmd_reports(c, &a);
  else if (!strcmp(cmd, "alerts"))
    rc = cmd_alerts(c, &a);
  else if (!strcmp(cmd, "tail"))
    rc = cmd_tail(c, &a);
  else if (!strcmp(cmd, "health"))
    rc = cmd_health(c);
  else
    rc = cmd_call(c, &a);
  analytics_client_destroy(c);
  return rc;
}
