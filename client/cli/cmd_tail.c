/* analyticsctl tail: follows live events (StreamAnalytics) or a metric
 * (StreamMetric) until Ctrl-C or SIGTERM. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

static const char help[] =
    "usage: analyticsctl tail [--type T] [--name N] [--property KEY=VALUE]... [--snapshots]\n"
    "       analyticsctl tail --metric ID [--interval I] [--time-zone TZ] [--after SEQ]\n"
    "\n"
    "Follows the live stream and prints each message, until Ctrl-C (or SIGTERM),\n"
    "which ends the stream cleanly with exit status 0. Messages are JSON lines; on a\n"
    "terminal (or with -o table) events print as one aligned line each.\n"
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

static const struct cli_option options[] = {
    {"type", CLI_VALUE},      {"name", CLI_VALUE},   {"property", CLI_LIST},
    {"snapshots", CLI_FLAG},  {"metric", CLI_VALUE}, {"interval", CLI_VALUE},
    {"time-zone", CLI_VALUE}, {"after", CLI_VALUE},  {NULL, 0}};

static const char *str_of(const json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

/* An event as one line under a header printed once; other messages as
 * compact JSON. */
static void event_line(const json_t *msg) {
  static bool header;
  const json_t *ev = json_object_get(msg, "event"), *props;
  char *text;

  if (!json_is_object(ev)) {
    text = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    puts(text ? text : "{}");
    free(text);
    return;
  }
  if (!header) {
    printf("%-24s  %-12s  %-24s  %-12s  %s\n", "TIMESTAMP", "EVENTTYPE", "EVENTNAME", "SESSIONID",
           "PROPERTIES");
    header = true;
  }
  props = json_object_get(ev, "properties");
  text = props ? json_dumps(props, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  printf("%-24s  %-12s  %-24s  %-12s  %s\n", str_of(ev, "timestamp"), str_of(ev, "eventType"),
         str_of(ev, "eventName"), str_of(ev, "sessionId"), text ? text : "{}");
  free(text);
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok_events[] = {"type", "name", "property", "snapshots", NULL};
  static const char *const ok_metric[] = {"metric", "interval", "time-zone", "after", NULL};
  json_t *req, *props;
  const char *v;
  long after;
  int status;

  if ((status = cli_no_more(a, 0)) != 0)
    return status;
  if (cli_opt(a, "metric")) {
    if ((status = cli_only(a, "tail --metric", ok_metric)) != 0)
      return status;
    req = json_pack("{ss}", "metricId", cli_opt(a, "metric"));
    cli_set_str(req, "interval", cli_opt(a, "interval"));
    cli_set_str(req, "timeZone", cli_opt(a, "time-zone"));
    if ((v = cli_opt(a, "after"))) {
      char buf[32];
      if (cli_parse_long(v, 0, __LONG_MAX__, &after) < 0) {
        json_decref(req);
        return cli_usage(a, "--after takes a sequence number");
      }
      snprintf(buf, sizeof buf, "%ld", after);
      json_object_set_new(req, "afterSequence", json_string(buf));
    }
    return cli_run_stream(c, "/analytics.v1.RealtimeService/StreamMetric", req, false, NULL);
  }
  if ((status = cli_only(a, "tail", ok_events)) != 0)
    return status;
  if ((status = cli_kv_object(a, "property", false, &props)) != 0)
    return status;
  req = json_pack("{sb}", "includeEvents", 1);
  cli_set_str(req, "eventType", cli_opt(a, "type"));
  cli_set_str(req, "eventName", cli_opt(a, "name"));
  if (json_object_size(props))
    json_object_set(req, "properties", props);
  json_decref(props);
  return cli_run_stream(c, "/analytics.v1.RealtimeService/StreamAnalytics", req,
                        !cli_opt(a, "snapshots"), event_line);
}

const struct cli_command cli_cmd_tail = {
    .name = "tail",
    .summary = "follow live events (or a metric) until Ctrl-C",
    .help = help,
    .options = options,
    .run = run,
    .streams = true,
};
