/* analyticsctl reports: generate, list, inspect and download reports. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: analyticsctl reports generate --template T [--format pdf|xlsx|csv] [--name N]\n"
    "                                     [--param KEY=VALUE | KEY:=JSON]...\n"
    "                                     [--parameters JSON] [--schedule CRON]\n"
    "                                     [--recipient ADDR]...\n"
    "       analyticsctl reports list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl reports status ID\n"
    "       analyticsctl reports download ID [--file FILE]\n"
    "\n"
    "  --param K=V      a report parameter, a string; K:=JSON for a number, a\n"
    "                   boolean, a list or an object (days:=30); repeatable\n"
    "  --file F         where the file goes (default: the server's filename; - for\n"
    "                   stdout, then nothing else is printed)\n"
    "\n"
    "Until reports are implemented the server answers UNIMPLEMENTED: the message is\n"
    "printed on stderr and the exit status is 1.\n";

static const struct cli_option options[] = {
    {"template", CLI_VALUE}, {"format", CLI_VALUE},     {"name", CLI_VALUE},
    {"param", CLI_LIST},     {"parameters", CLI_VALUE}, {"schedule", CLI_VALUE},
    {"recipient", CLI_LIST}, {"file", CLI_VALUE},       {"limit", CLI_VALUE},
    {"page", CLI_VALUE},     {"all", CLI_FLAG},         {NULL, 0}};

static const char *const columns[] = {"reportId", "name", "template", "format", "status", NULL};
static const struct cli_view list_view = {"reports", columns};

static int reports_page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                        const char *token, char **json, analytics_error_t *err) {
  (void)a;
  return analytics_list_reports(c, page_size, token, json, err);
}

static int write_file(const char *path, const analytics_report_file_t *f) {
  FILE *out = strcmp(path, "-") ? fopen(path, "wb") : stdout;
  int ok = out && fwrite(f->data, 1, f->size, out) == f->size;

  if (out && out != stdout && fclose(out) != 0)
    ok = 0;
  if (!ok)
    fprintf(stderr, "analyticsctl: cannot write %s: %s\n", path, strerror(errno));
  return ok ? 0 : CLI_EXIT_FAIL;
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

static int download(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok[] = {"file", NULL};
  analytics_report_file_t *f = NULL;
  analytics_error_t err;
  const char *id, *path;
  int status, rc;

  if ((status = cli_only(a, "reports download", ok)) != 0 ||
      !(id = cli_need_id(a, "download", &status)))
    return status;
  rc = analytics_download_report(c, id, &f, &err);
  if (rc < 0)
    return cli_failed(rc, &err);
  path = cli_opt(a, "file")                                           ? cli_opt(a, "file")
         : f->filename && f->filename[0] && !strchr(f->filename, '/') ? f->filename
                                                                      : "report.bin";
  status = write_file(path, f);
  if (!status && strcmp(path, "-")) {
    json_t *v = json_pack("{sssIss}", "file", path, "bytes", (json_int_t)f->size, "contentType",
                          f->content_type ? f->content_type : "");
    cli_print(v, NULL);
    json_decref(v);
  }
  analytics_report_file_destroy(f);
  return status;
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const none[] = {NULL};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
  int status;

  if (!verb)
    return cli_usage(a, "reports needs a verb: generate, list, status, download");
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
  return cli_usage(a, "unknown verb \"%s\": generate, list, status, download", verb);
}

const struct cli_command cli_cmd_reports = {
    .name = "reports",
    .summary = "generate, list, inspect and download reports",
    .help = help,
    .options = options,
    .run = run,
};
