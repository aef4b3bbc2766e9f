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
  (void)a;
  return analytics_list_channels(c, page_size, token, json, err);
}

static int create(analytics_client_t *c, const struct cli_args *a) {
  const struct cli_list *to = cli_list(a, "email");
  analytics_channel_t ch = {.name = cli_opt(a, "name"),
                            .is_default = cli_opt(a, "default") != NULL,
                            .slack_webhook_url = cli_opt(a, "slack"),
                            .webhook_url = cli_opt(a, "webhook"),
                            .telegram_bot_token = cli_opt(a, "telegram-token"),
                            .telegram_chat_id = cli_opt(a, "telegram-chat")};
  int kinds = (to && to->n) + !!ch.slack_webhook_url + !!ch.webhook_url +
              !!(ch.telegram_bot_token || ch.telegram_chat_id);
  analytics_error_t err;
  char *json = NULL;

  if (!ch.name)
    return cli_usage(a, "channels create needs --name");
  if (kinds != 1)
    return cli_usage(a, "channels create needs one of --email, --slack, --webhook, --telegram-*");
  if ((ch.telegram_bot_token || ch.telegram_chat_id) &&
      (!ch.telegram_bot_token || !ch.telegram_chat_id))
    return cli_usage(a, "a telegram channel needs --telegram-token and --telegram-chat");
  if (to && to->n) {
    ch.email_to = to->v;
    ch.email_to_count = to->n;
  }
  int rc = analytics_create_channel(c, &ch, &json, &err); /* before json is read */
  return cli_finish(rc, json, &err, NULL);
}

/* Prints the outcome; exit 1 unless delivered. */
static int test(analytics_client_t *c, const char *id) {
  analytics_error_t err;
  char *json = NULL;
  bool delivered = false;
  int rc = analytics_test_channel(c, id, &delivered, &json, &err);
  json_t *doc;

  if (rc < 0)
    return cli_failed(rc, &err);
  if (!delivered) {
    doc = json_loads(json, 0, NULL);
    fprintf(stderr, "analyticsctl: the test notification was not delivered: %s\n",
            json_string_value(json_object_get(doc, "error"))
                ?: json_string_value(json_object_get(doc, "outcome")) ?: "no outcome");
    json_decref(doc);
  }
  cli_finish(0, json, &err, NULL);
  return delivered ? 0 : 1;
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const none[] = {NULL};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
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
    if (verb[0] == 'd')
      return cli_deleted(analytics_delete_channel(c, id, &err), "channelId", id, &err);
    status = analytics_get_channel(c, id, &json, &err);
    return cli_finish(status, json, &err, NULL);
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
