/* analyticsctl reports: generate, list, inspect and download reports. */
#include "cli.h"
#include "ana_clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char help[] =
    "usage: analyticsctl reports generate --template T [--format pdf|xlsx|csv] [--name N]\n"
    "                                     [--param KEY=VALUE | KEY:=JSON]...\n"
    "                                     [--parameters JSON] [--schedule CRON]\n"
    "                                     [--recipient ADDR]...\n"
    "       analyticsctl reports list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl reports status ID    (also: get ID)\n"
    "       analyticsctl reports wait ID [--timeout SECONDS]\n"
    "       analyticsctl reports download ID [--file FILE] [--continue] [--run RUN]\n"
    "\n"
    "  --param K=V      a report parameter, a string; K:=JSON for a number, a\n"
    "                   boolean, a list or an object (days:=30); repeatable\n"
    "  --file F         where the file goes (default: the server's filename; - for\n"
    "                   stdout, then nothing else is printed); the file is streamed,\n"
    "                   with a progress bar on a terminal\n"
    "  --continue       resume a partial FILE (needs --file): asks for the bytes\n"
    "                   after its current size and appends them\n"
    "  --run RUN        that run's file instead of the latest completed one\n"
    "\n"
    "Until reports are implemented the server answers UNIMPLEMENTED: the message is\n"
    "printed on stderr and the exit status is 1.\n";

static const struct cli_option options[] = {
    {"template", CLI_VALUE}, {"format", CLI_VALUE},     {"name", CLI_VALUE},
    {"param", CLI_LIST},     {"parameters", CLI_VALUE}, {"schedule", CLI_VALUE},
    {"recipient", CLI_LIST}, {"file", CLI_VALUE},       {"limit", CLI_VALUE},
    {"continue", CLI_FLAG},  {"run", CLI_VALUE},        {"page", CLI_VALUE},
    {"all", CLI_FLAG},       {"timeout", CLI_VALUE},    {NULL, 0}};

static const char *const columns[] = {"reportId", "name", "template", "format", "status", NULL};
static const struct cli_view list_view = {"reports", columns};

static int reports_page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                        const char *token, char **json, analytics_error_t *err) {
  (void)a;
  return analytics_list_reports(c, page_size, token, json, err);
}

static int generate(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok[] = {"template",   "format",   "name",      "param",
                                   "parameters", "schedule", "recipient", NULL};
  const char *fmt = cli_opt(a, "format") ? cli_opt(a, "format") : "pdf";
  json_t *r, *params = NULL, *kv;
  int status;

  if ((status = cli_only(a, "reports generate", ok)) != 0 || (status = cli_no_more(a, 1)) != 0)
    return status;
  if (!cli_opt(a, "template"))
    return cli_usage(a, "reports generate needs --template");
  if (!strcmp(fmt, "excel"))
    fmt = "xlsx";
  if (strcmp(fmt, "pdf") && strcmp(fmt, "xlsx") && strcmp(fmt, "csv"))
    return cli_usage(a, "--format is pdf, xlsx or csv");
  if (cli_opt(a, "parameters")) {
    params = json_loads(cli_opt(a, "parameters"), 0, NULL);
    if (!json_is_object(params)) {
      json_decref(params);
      return cli_usage(a, "--parameters takes a JSON object");
    }
  }
  if (cli_list(a, "param")->n) {
    if ((status = cli_kv_object(a, "param", true, &kv)) != 0) {
      json_decref(params);
      return status;
    }
    if (!params)
      params = json_object();
    json_object_update(params, kv);
    json_decref(kv);
  }
  r = json_pack("{ssss}", "template", cli_opt(a, "template"), "format", fmt);
  cli_set_str(r, "name", cli_opt(a, "name"));
  cli_set_str(r, "schedule", cli_opt(a, "schedule"));
  cli_set_list(r, "recipients", cli_list(a, "recipient"));
  if (params)
    json_object_set_new(r, "parameters", params);
  return cli_call_json(c, "/analytics.v1.ReportService/GenerateReport",
                       json_pack("{so}", "report", r), NULL);
}

/* A download in progress: the file is opened at the first piece (its name
 * may come from the server), each piece is written as it arrives. */
struct download_state {
  const char *path; /* --file, or NULL until the server names it */
  char name[256];
  bool append;
  FILE *out;
  int64_t start; /* bytes already in the file (--continue) */
  int64_t got;
  int64_t total;
  char content_type[128];
  struct cli_progress progress;
  int err; /* errno of a failed open or write */
};

static int on_piece(const analytics_file_chunk_t *ch, void *ctx) {
  struct download_state *d = ctx;
  if (!d->out) {
    if (!d->path) {
      snprintf(d->name, sizeof d->name, "%s",
               ch->filename[0] && !strchr(ch->filename, '/') && ch->filename[0] != '.'
                   ? ch->filename
                   : "report.bin");
      d->path = d->name;
    }
    d->out = strcmp(d->path, "-") ? fopen(d->path, d->append ? "ab" : "wb") : stdout;
    if (!d->out) {
      d->err = errno;
      return 1;
    }
    d->total = ch->total_size;
    snprintf(d->content_type, sizeof d->content_type, "%s", ch->content_type);
  }
  if (ch->size && fwrite(ch->data, 1, ch->size, d->out) != ch->size) {
    d->err = errno ? errno : EIO;
    return 1;
  }
  d->got += (int64_t)ch->size;
  cli_progress_bytes(&d->progress, (uint64_t)(d->start + d->got), d->total, false);
  return 0;
}

static int download(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok[] = {"file", "continue", "run", NULL};
  analytics_download_options_t o = {0};
  struct download_state d = {0};
  analytics_error_t err;
  const char *id;
  struct stat st;
  int status, rc;

  if ((status = cli_only(a, "reports download", ok)) != 0 ||
      !(id = cli_need_id(a, "download", &status)))
    return status;
  d.path = cli_opt(a, "file");
  o.run_id = cli_opt(a, "run");
  if (cli_opt(a, "continue")) {
    if (!d.path || !strcmp(d.path, "-"))
      return cli_usage(a, "--continue needs --file FILE (the partial file)");
    if (stat(d.path, &st) == 0 && st.st_size > 0) {
      d.start = o.offset = st.st_size;
      d.append = true;
    }
  }
  cli_progress_init(&d.progress);
  if (d.path && !strcmp(d.path, "-"))
    d.progress.on = d.progress.on && !isatty(STDOUT_FILENO);
  rc = analytics_download_report(c, id, &o, on_piece, &d, &err);
  if (d.out && d.out != stdout && fclose(d.out) != 0 && !d.err)
    d.err = errno;
  else if (d.out == stdout && fflush(stdout) != 0 && !d.err)
    d.err = errno;
  if (rc == 0 && d.err) {
    if (d.progress.on)
      fputc('\n', stderr);
    fprintf(stderr, "analyticsctl: cannot write %s: %s\n", d.path ? d.path : "the file",
            strerror(d.err));
    return CLI_EXIT_FAIL;
  }
  if (rc < 0 && d.start > 0 && err.code == ANALYTICS_STATUS_OUT_OF_RANGE) {
    /* Nothing after the partial file's end: it is complete already. */
    rc = 0;
    d.total = d.start;
  } else if (rc < 0) {
    if (d.progress.on && d.got)
      fputc('\n', stderr);
    return cli_failed(rc, &err);
  }
  cli_progress_bytes(&d.progress, (uint64_t)(d.start + d.got), d.total, true);
  if (d.path && strcmp(d.path, "-")) {
    json_t *v = json_pack("{sssIsIss}", "file", d.path, "bytes", (json_int_t)(d.start + d.got),
                          "resumedFrom", (json_int_t)d.start, "contentType", d.content_type);
    cli_print(v, NULL);
    json_decref(v);
  }
  return 0;
}

/* wait ID: polls the report until its latest run ends. */
static int wait_report(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok[] = {"timeout", NULL};
  const char *id, *t = cli_opt(a, "timeout");
  analytics_error_t err;
  int status;
  char *end = NULL;
  double timeout_s = t ? strtod(t, &end) : 120;

  if ((status = cli_only(a, "wait", ok)) != 0 || !(id = cli_need_id(a, "wait", &status)))
    return status;
  if (t && (end == t || *end || timeout_s <= 0 || timeout_s > 86400))
    return cli_usage(a, "--timeout takes seconds (0 < S <= 86400)");
  double deadline = (double)ana_clock_mono_ms() / 1e3 + timeout_s;
  for (;;) {
    char *json = NULL;
    int rc = analytics_get_report(c, id, &json, &err);
    if (rc < 0)
      return cli_finish(rc, json, &err, NULL);
    json_t *v = json_loads(json, 0, NULL);
    const char *st = json_string_value(json_object_get(v, "status"));
    char state[32];
    snprintf(state, sizeof state, "%s", st ? st : "");
    if (!strcmp(state, "completed")) {
      json_decref(v);
      return cli_finish(0, json, &err, NULL);
    }
    if (!strcmp(state, "failed") || !strcmp(state, "scheduled") || !strcmp(state, "expired")) {
      const char *e = json_string_value(json_object_get(v, "error"));
      fprintf(stderr, "analyticsctl: report %s is %s%s%s\n", id, state, e && *e ? ": " : "",
              e ? e : "");
      json_decref(v);
      analytics_free(json);
      return 1;
    }
    json_decref(v);
    analytics_free(json);
    if ((double)ana_clock_mono_ms() / 1e3 >= deadline) {
      fprintf(stderr, "analyticsctl: report %s is still %s after %g s\n", id, state, timeout_s);
      return 1;
    }
    usleep(200 * 1000);
  }
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const none[] = {NULL};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
  int status;

  if (!verb)
    return cli_usage(a, "reports needs a verb: generate, list, status, wait, download");
  if (!strcmp(verb, "list"))
    return cli_list_verb(c, a, "reports", reports_page, &list_view);
  if (!strcmp(verb, "generate"))
    return generate(c, a);
  if (!strcmp(verb, "status") || !strcmp(verb, "get")) {
    if ((status = cli_only(a, verb, none)) != 0 || !(id = cli_need_id(a, verb, &status)))
      return status;
    status = analytics_get_report(c, id, &json, &err);
    return cli_finish(status, json, &err, NULL);
  }
  if (!strcmp(verb, "download"))
    return download(c, a);
  if (!strcmp(verb, "wait"))
    return wait_report(c, a);
  return cli_usage(a, "unknown verb \"%s\": generate, list, status, wait, download", verb);
}

const struct cli_command cli_cmd_reports = {
    .name = "reports",
    .summary = "generate, list, inspect and download reports",
    .help = help,
    .options = options,
    .run = run,
};
