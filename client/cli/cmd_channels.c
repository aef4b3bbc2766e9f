/* analyticsctl channels: create, list, get, delete notification channels
 * and send a test notification through one. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: analyticsctl channels create --name N (--email TO... | --slack URL | --webhook URL |\n"
    "                                    --telegram-token T --telegram-chat C) [--default]\n"
    "       analyticsctl channels list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl channels get ID\n"
    "       analyticsctl channels delete ID\n"
    "       analyticsctl channels test ID\n"
    "\n"
    "  --email TO       a recipient (repeat for more)\n"
    "  --default        the account's channel of its type that alerts naming the type use\n"
    "  test             sends a test notification, prints its first attempt's outcome;\n"
    "                   exit 1 unless it was delivered\n"
    "The answer to create shows a webhook's signing secret (once; reads mask it).\n";

static const struct cli_option options[] = {{"name", CLI_VALUE},
                                            {"email", CLI_LIST},
                                            {"slack", CLI_VALUE},
                                            {"webhook", CLI_VALUE},
                                            {"telegram-token", CLI_VALUE},
                                            {"telegram-chat", CLI_VALUE},
                                            {"default", CLI_FLAG},
                                            {"limit", CLI_VALUE},
                                            {"page", CLI_VALUE},
                                            {"all", CLI_FLAG},
                                            {NULL, 0}};

static const char *const create_opts[] = {"name",           "email",         "slack",   "webhook",
                                          "telegram-token", "telegram-chat", "default", NULL};

static const char *const columns[] = {"channelId", "name", "type", "isDefault", NULL};
static const struct cli_view list_view = {"channels", columns};

static int page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                const char *token, char **json, analytics_error_t *err) {
  char req[512];
  (void)a;
  snprintf(req, sizeof req, "{\"pageSize\":%d,\"pageToken\":\"%.400s\"}", (int)page_size,
           token ? token : "");
  return analytics_call(c, "/analytics.v1.ChannelService/ListChannels", req, json, err);
}

static int create(analytics_client_t *c, const struct cli_args *a) {
  const struct cli_list *to = cli_list(a, "email");
  int kinds = (to && to->n) + !!cli_opt(a, "slack") + !!cli_opt(a, "webhook") +
              !!(cli_opt(a, "telegram-token") || cli_opt(a, "telegram-chat"));
  json_t *ch;

  if (!cli_opt(a, "name"))
    return cli_usage(a, "channels create needs --name");
  if (kinds != 1)
    return cli_usage(a, "channels create needs one of --email, --slack, --webhook, --telegram-*");
  ch = json_pack("{ss}", "name", cli_opt(a, "name"));
  if (to && to->n) {
    json_t *o = json_object();
    cli_set_list(o, "to", to);
    json_object_set_new(ch, "email", o);
  } else if (cli_opt(a, "slack")) {
    json_object_set_new(ch, "slack", json_pack("{ss}", "webhookUrl", cli_opt(a, "slack")));
  } else if (cli_opt(a, "webhook")) {
    json_object_set_new(ch, "webhook", json_pack("{ss}", "url", cli_opt(a, "webhook")));
  } else {
    if (!cli_opt(a, "telegram-token") || !cli_opt(a, "telegram-chat")) {
      json_decref(ch);
      return cli_usage(a, "a telegram channel needs --telegram-token and --telegram-chat");
    }
    json_object_set_new(ch, "telegram",
                        json_pack("{ssss}", "botToken", cli_opt(a, "telegram-token"), "chatId",
                                  cli_opt(a, "telegram-chat")));
  }
  if (cli_opt(a, "default"))
    json_object_set_new(ch, "isDefault", json_true());
  return cli_call_json(c, "/analytics.v1.ChannelService/CreateChannel",
                       json_pack("{so}", "channel", ch), NULL);
}

/* Prints the outcome; exit 1 unless delivered. */
static int test(analytics_client_t *c, const char *id) {
  analytics_error_t err;
  char *json = NULL;
  json_t *req = json_pack("{ss}", "channelId", id), *doc;
  char *text = json_dumps(req, JSON_COMPACT);
  int rc = analytics_call(c, "/analytics.v1.ChannelService/TestChannel", text, &json, &err);
  const char *outcome;

  json_decref(req);
  free(text);
  if (rc < 0)
    return cli_failed(rc, &err);
  doc = json_loads(json, 0, NULL);
  outcome = json_string_value(json_object_get(doc, "outcome"));
  rc = outcome && strcmp(outcome, "delivered") == 0 ? 0 : 1;
  if (rc)
    fprintf(stderr, "analyticsctl: the test notification was not delivered: %s\n",
            json_string_value(json_object_get(doc, "error")) ?: outcome ?: "no outcome");
  json_decref(doc);
  cli_finish(0, json, &err, NULL);
  return rc;
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const none[] = {NULL};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  int status;

  if (!verb)
    return cli_usage(a, "channels needs a verb: create, list, get, delete, test");
  if (!strcmp(verb, "list"))
    return cli_list_verb(c, a, "channels", page, &list_view);
  if (!strcmp(verb, "create")) {
    if ((status = cli_only(a, "channels create", create_opts)) != 0 ||
        (status = cli_no_more(a, 1)) != 0)
      return status;
    return create(c, a);
  }
  if (!strcmp(verb, "get") || !strcmp(verb, "delete") || !strcmp(verb, "test")) {
    if ((status = cli_only(a, verb, none)) != 0 || !(id = cli_need_id(a, verb, &status)))
      return status;
    if (verb[0] == 't')
      return test(c, id);
    json_t *req = json_pack("{ss}", "channelId", id);
    if (verb[0] == 'g')
      return cli_call_json(c, "/analytics.v1.ChannelService/GetChannel", req, NULL);
    char *text = json_dumps(req, JSON_COMPACT), *json = NULL;
    analytics_error_t err;
    json_decref(req);
    status = analytics_call(c, "/analytics.v1.ChannelService/DeleteChannel", text, &json, &err);
    free(text);
    free(json);
    return cli_deleted(status, "channelId", id, &err);
  }
  return cli_usage(a, "unknown verb \"%s\": create, list, get, delete, test", verb);
}

const struct cli_command cli_cmd_channels = {
    .name = "channels",
    .summary = "create, list, get, delete notification channels; send a test",
    .help = help,
    .options = options,
    .run = run,
};
