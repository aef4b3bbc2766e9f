/* analyticsctl track: events from arguments or JSON lines on stdin, through
 * the library's queued tracker, with a summary (and progress on a terminal). */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char help[] =
    "usage: analyticsctl track TYPE NAME [KEY=VALUE | KEY:=JSON]... [--session ID] [--id ID]\n"
    "                          [--properties JSON] [--timestamp TIME]\n"
    "       analyticsctl track --stdin [--stop-on-error]\n"
    "\n"
    "Tracks events through the client's queue (batched, retried), flushes, and prints\n"
    "a summary: {\"tracked\",\"accepted\",\"duplicates\",\"rejected\",\"undelivered\",...}.\n"
    "\n"
    "  KEY=VALUE          a property, sent as a string (campaignId=123 is \"123\")\n"
    "  KEY:=JSON          a property given as JSON: charactersCount:=150 (a number),\n"
    "                     vip:=true, tags:='[\"a\",\"b\"]', meta:='{\"k\":1}'\n"
    "  --properties JSON  properties as a JSON object (merged over KEY=VALUE)\n"
    "  --session ID       session id;  --id ID  event id (default: a new UUIDv7)\n"
    "  --timestamp TIME   when it happened: RFC 3339 as the server reads it\n"
    "                     (2024-05-01T10:00:00Z, ...T12:00:00.5+02:00), a date alone\n"
    "                     (UTC midnight), Unix ms, now, or -30s/-15m/-2h/-7d\n"
    "  --stdin            read one event per line, the Event JSON of the API, e.g.\n"
    "                     {\"eventType\":\"message\",\"eventName\":\"message_sent\",\n"
    "                      \"properties\":{\"campaignId\":\"123\"}}; empty lines are skipped.\n"
    "                     On a terminal, stderr shows the progress: events read, rate,\n"
    "                     errors (bad lines, rejected and undelivered events)\n"
    "  --stop-on-error    stop reading at the first bad line (default: report it with\n"
    "                     its line number on stderr and go on)\n"
    "\n"
    "Exits 1 when any event was rejected, undelivered, or (with --stdin) a line was bad.\n";

static const struct cli_option options[] = {{"session", CLI_VALUE},
                                            {"id", CLI_VALUE},
                                            {"properties", CLI_VALUE},
                                            {"timestamp", CLI_VALUE},
                                            {"stdin", CLI_FLAG},
                                            {"stop-on-error", CLI_FLAG},
                                            {NULL, 0}};

/* Delivery failures, reported as they happen (on the client's thread). */
static void on_failure(const analytics_delivery_failure_t *f, void *ctx) {
  (void)ctx;
  fprintf(stderr, "%sanalyticsctl: event %s (%s %s) %s: %s\n", isatty(2) ? "\r\033[K" : "",
          f->event_id ? f->event_id : "?", f->event_type ? f->event_type : "?",
          f->event_name ? f->event_name : "?",
          f->kind == ANALYTICS_FAILURE_REJECTED ? "rejected" : "undelivered",
          f->message ? f->message : "");
  for (size_t i = 1; i < f->violation_count; i++)
    fprintf(stderr, "analyticsctl:   %s: %s\n", f->violations[i].field,
            f->violations[i].description);
}

/* Queued and batched, a few quick retries, failures reported. */
static void configure(const struct cli_args *a, analytics_options_t *opts) {
  opts->batch_size = cli_opt(a, "stdin") ? 500 : 100;
  opts->max_retries = 3;
  opts->backoff_max_ms = 1000;
  opts->on_delivery_failure = on_failure;
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

/* Errors so far: bad lines, rejected and given-up events. */
static uint64_t errors_of(analytics_client_t *c, long bad) {
  analytics_stats_t st;

  analytics_stats(c, &st);
  return (uint64_t)bad + st.rejected + st.failed;
}

static int track_stdin(analytics_client_t *c, const struct cli_args *a,
                       struct cli_progress *progress, long *tracked, long *bad, long *lines) {
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
      fprintf(stderr, "%sanalyticsctl: line %ld: %s\n", progress->on ? "\r\033[K" : "", *lines,
              err.message);
      (*bad)++;
    }
    analytics_event_destroy(ev);
    if (*bad && cli_opt(a, "stop-on-error")) {
      fprintf(stderr, "analyticsctl: stopped at line %ld (--stop-on-error)\n", *lines);
      break;
    }
    if (progress->on)
      cli_progress_update(progress, "events", (uint64_t)*tracked, errors_of(c, *bad), false);
  }
  if (ferror(stdin)) {
    fprintf(stderr, "analyticsctl: reading stdin: %s\n", strerror(errno));
    status = CLI_EXIT_FAIL;
  }
  free(line);
  return status;
}

/* KEY=VALUE / KEY:=JSON words (pos[2..]) as a properties object. */
static int props_of_words(const struct cli_args *a, analytics_event_t *ev) {
  json_t *props = json_object(), *v;
  analytics_error_t err;
  char key[256], *text;
  int status = 0;

  for (int i = 2; i < a->n_pos; i++) {
    if (cli_kv(a->pos[i], key, sizeof key, &v) < 0) {
      status = cli_usage(a, "properties are KEY=VALUE or KEY:=JSON, not \"%s\"", a->pos[i]);
      goto out;
    }
    json_object_set_new(props, key, v);
  }
  if (!json_object_size(props))
    goto out;
  text = json_dumps(props, JSON_COMPACT);
  if (!text || analytics_event_set_properties_json(ev, text, &err) < 0)
    status = cli_usage(a, "bad properties: %s", text ? err.message : "out of memory");
  free(text);
out:
  json_decref(props);
  return status;
}

static analytics_event_t *event_from_args(const struct cli_args *a, char *id, size_t idmax,
                                          int *status) {
  analytics_event_t *ev = analytics_event_new(a->pos[0], a->pos[1]);
  const char *v;
  analytics_error_t err;
  int64_t ms;

  if (!ev) {
    *status = cli_usage(a, "bad TYPE or NAME");
    return NULL;
  }
  *status = props_of_words(a, ev);
  if (!*status && (v = cli_opt(a, "properties")) &&
      analytics_event_set_properties_json(ev, v, &err) < 0)
    *status = cli_usage(a, "--properties: %s", err.message);
  if (!*status && (v = cli_opt(a, "session")) && analytics_event_set_session(ev, v) < 0)
    *status = cli_usage(a, "bad --session");
  if (!*status && (v = cli_opt(a, "timestamp"))) {
    if (cli_parse_time(v, &ms) < 0 || analytics_event_set_timestamp_ms(ev, ms) < 0)
      *status = cli_usage(a,
                          "--timestamp: cannot read \"%s\" (RFC 3339 such as "
                          "2024-05-01T10:00:00Z, a date, Unix ms, now or -15m)",
                          v);
  }
  if (!*status) {
    if ((v = cli_opt(a, "id")))
      snprintf(id, idmax, "%s", v);
    else
      analytics_generate_event_id(id);
    if (analytics_event_set_id(ev, id) < 0)
      *status = cli_usage(a, "--id: up to 128 characters of A-Z a-z 0-9 _ . : -");
  }
  if (*status) {
    analytics_event_destroy(ev);
    return NULL;
  }
  return ev;
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok_args[] = {"session", "id", "properties", "timestamp", NULL};
  static const char *const ok_stdin[] = {"stdin", "stop-on-error", NULL};
  analytics_event_t *ev = NULL;
  analytics_error_t err;
  analytics_stats_t st;
  struct cli_progress progress;
  char id[ANALYTICS_EVENT_ID_SIZE + 92] = "";
  long tracked = 0, bad = 0, lines = 0;
  int status, rc;
  json_t *sum;

  if (cli_opt(a, "stdin")) {
    if ((status = cli_only(a, "track --stdin", ok_stdin)) != 0)
      return status;
    if (a->n_pos)
      return cli_usage(a, "track --stdin takes no TYPE, NAME or properties");
    cli_progress_init(&progress);
    status = track_stdin(c, a, &progress, &tracked, &bad, &lines);
  } else {
    if ((status = cli_only(a, "track", ok_args)) != 0)
      return status;
    if (a->n_pos < 2)
      return cli_usage(a, "track needs TYPE and NAME (or --stdin)");
    if (!(ev = event_from_args(a, id, sizeof id, &status)))
      return status;
    if ((rc = track_one(c, ev, &err)) < 0) {
      analytics_event_destroy(ev);
      return cli_failed(rc, &err);
    }
    tracked = 1;
    analytics_event_destroy(ev);
  }
  rc = analytics_flush(c, 0, &err);
  analytics_stats(c, &st);
  if (cli_opt(a, "stdin"))
    cli_progress_update(&progress, "events", (uint64_t)tracked,
                        (uint64_t)bad + st.rejected + st.failed + st.queued, true);
  sum = json_object();
  if (id[0])
    json_object_set_new(sum, "eventId", json_string(id));
  if (cli_opt(a, "stdin")) {
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
  cli_print(sum, NULL);
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
  return status || rc < 0 || bad || st.rejected || st.failed || st.queued ? CLI_EXIT_FAIL : 0;
}

const struct cli_command cli_cmd_track = {
    .name = "track",
    .summary = "track events, from arguments or JSON lines on stdin",
    .help = help,
    .options = options,
    .run = run,
    .configure = configure,
};
