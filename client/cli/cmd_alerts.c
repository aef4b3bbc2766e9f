/* analyticsctl alerts: create, list, get, update, delete alerts; their
 * history. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: analyticsctl alerts create --name N --metric M --condition C --threshold X\n"
    "                                  [--severity S] [--channel C]... [--cooldown SEC]\n"
    "                                  [--message TEXT] [--renotify SEC] [--no-data WHAT]\n"
    "                                  [--disabled]\n"
    "       analyticsctl alerts list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl alerts get ID\n"
    "       analyticsctl alerts update ID [the options of create] [--enabled]\n"
    "       analyticsctl alerts delete ID\n"
    "       analyticsctl alerts history ID [--limit N] [--page TOKEN] [--all]\n"
    "\n"
    "  --condition C    e.g. greater_than, or a JSON object\n"
    "  --channel C      a channel type (email, slack, webhook, telegram: the account's\n"
    "                   default channel of it) or a channel id (see analyticsctl channels)\n"
    "  --message TEXT   the notification; {{value}}, {{threshold}}, {{severity}}, ...\n"
    "  --no-data WHAT   ok, alerting or keep\n"
    "  update           reads the alert, applies the options given, replaces it\n"
    "  history          state changes and delivery attempts, newest first\n";

static const struct cli_option options[] = {{"name", CLI_VALUE},      {"metric", CLI_VALUE},
                                            {"condition", CLI_VALUE}, {"threshold", CLI_VALUE},
                                            {"severity", CLI_VALUE},  {"channel", CLI_LIST},
                                            {"cooldown", CLI_VALUE},  {"message", CLI_VALUE},
                                            {"renotify", CLI_VALUE},  {"no-data", CLI_VALUE},
                                            {"disabled", CLI_FLAG},   {"enabled", CLI_FLAG},
                                            {"limit", CLI_VALUE},     {"page", CLI_VALUE},
                                            {"all", CLI_FLAG},        {NULL, 0}};

static const char *const def_opts[] = {"name",     "metric",   "condition", "threshold", "severity",
                                       "channel",  "cooldown", "message",   "renotify",  "no-data",
                                       "disabled", "enabled",  NULL};

static const char *const columns[] = {"alertId",   "name",     "metric",  "condition",
                                      "threshold", "severity", "enabled", NULL};
static const struct cli_view list_view = {"alerts", columns};

static int apply(const struct cli_args *a, json_t *al) {
  const char *v;
  double thr;
  long cooldown;
  char *end;

  cli_set_str(al, "name", cli_opt(a, "name"));
  cli_set_str(al, "metric", cli_opt(a, "metric"));
  cli_set_str(al, "severity", cli_opt(a, "severity"));
  cli_set_str(al, "message", cli_opt(a, "message"));
  cli_set_str(al, "noData", cli_opt(a, "no-data"));
  if ((v = cli_opt(a, "renotify"))) {
    long renotify;
    if (cli_parse_long(v, 0, 604800, &renotify) < 0)
      return cli_usage(a, "--renotify takes seconds (a number)");
    json_object_set_new(al, "renotifyInterval", json_integer(renotify));
  }
  if ((v = cli_opt(a, "condition"))) {
    json_t *cond = json_loads(v, 0, NULL);
    json_object_set_new(al, "condition", json_is_object(cond) ? cond : json_string(v));
    if (!json_is_object(cond))
      json_decref(cond);
  }
  if ((v = cli_opt(a, "threshold"))) {
    errno = 0;
    thr = strtod(v, &end);
    if (errno || *end || end == v || !isfinite(thr))
      return cli_usage(a, "--threshold takes a number");
    json_object_set_new(al, "threshold", json_real(thr));
  }
  cli_set_list(al, "channels", cli_list(a, "channel"));
  if ((v = cli_opt(a, "cooldown"))) {
    if (cli_parse_long(v, 0, 100000000, &cooldown) < 0)
      return cli_usage(a, "--cooldown takes seconds (a number)");
    json_object_set_new(al, "cooldown", json_integer(cooldown));
  }
  if (cli_opt(a, "disabled") && cli_opt(a, "enabled"))
    return cli_usage(a, "--enabled and --disabled together");
  if (cli_opt(a, "disabled") || cli_opt(a, "enabled"))
    json_object_set_new(al, "enabled", json_boolean(cli_opt(a, "enabled") != NULL));
  return 0;
}

static const struct cli_resource resource = {
    .create = "/analytics.v1.AlertService/CreateAlert",
    .get = "/analytics.v1.AlertService/GetAlert",
    .update = "/analytics.v1.AlertService/UpdateAlert",
    .id_field = "alertId",
    .body_field = "alert",
    .apply = apply,
};

static int alerts_page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                       const char *token, char **json, analytics_error_t *err) {
  (void)a;
  return analytics_list_alerts(c, page_size, token, json, err);
}

static int history_page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                        const char *token, char **json, analytics_error_t *err) {
  return analytics_list_alert_history(c, a->pos[1], page_size, token, json, err);
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok_hist[] = {"limit", "page", "all", NULL};
  static const char *const none[] = {NULL};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
  long limit;
  int status;

  if (!verb)
    return cli_usage(a, "alerts needs a verb: create, list, get, update, delete, history");
  if (!strcmp(verb, "list"))
    return cli_list_verb(c, a, "alerts", alerts_page, &list_view);
  if (!strcmp(verb, "create")) {
    if ((status = cli_only(a, "alerts create", def_opts)) != 0 || (status = cli_no_more(a, 1)) != 0)
      return status;
    if (!cli_opt(a, "name") || !cli_opt(a, "metric") || !cli_opt(a, "condition") ||
        !cli_opt(a, "threshold"))
      return cli_usage(a, "alerts create needs --name, --metric, --condition and --threshold");
    return cli_create(c, a, &resource, json_pack("{sb}", "enabled", 1));
  }
  if (!strcmp(verb, "update"))
    return cli_update(c, a, &resource, def_opts);
  if (!strcmp(verb, "get") || !strcmp(verb, "delete")) {
    if ((status = cli_only(a, verb, none)) != 0 || !(id = cli_need_id(a, verb, &status)))
      return status;
    if (verb[0] == 'd')
      return cli_deleted(analytics_delete_alert(c, id, &err), "alertId", id, &err);
    status = analytics_get_alert(c, id, &json, &err);
    return cli_finish(status, json, &err, NULL);
  }
  if (!strcmp(verb, "history")) {
    if ((status = cli_only(a, "alerts history", ok_hist)) != 0 ||
        !(id = cli_need_id(a, verb, &status)) || (status = cli_limit(a, &limit)) != 0)
      return status;
    if (cli_opt(a, "all"))
      return cli_all_pages(c, a, "entries", limit, history_page, NULL);
    status = analytics_list_alert_history(c, id, (int32_t)limit, cli_opt(a, "page"), &json, &err);
    return cli_finish(status, json, &err, NULL);
  }
  return cli_usage(a, "unknown verb \"%s\": create, list, get, update, delete, history", verb);
}

const struct cli_command cli_cmd_alerts = {
    .name = "alerts",
    .summary = "create, list, get, update, delete alerts; their history",
    .help = help,
    .options = options,
    .run = run,
};
