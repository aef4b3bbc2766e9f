/* analyticsctl data-keys: list the account's field-encryption data keys and
 * rotate to a new one (KeyService, permission keys:admin). */
#include "cli.h"

#include <string.h>

static const char help[] =
    "usage: analyticsctl data-keys list\n"
    "       analyticsctl data-keys rotate\n"
    "\n"
    "Field encryption's data keys of the account (ENCRYPTED_FIELDS and stored\n"
    "secrets; AES-256-GCM keys wrapped by the server's master key; their material\n"
    "never leaves the server). list: ids, creation times and which is current.\n"
    "rotate: makes a new key current and prints it; new values are sealed with it\n"
    "(by every server sharing the store within 10 s), values sealed before stay\n"
    "readable with their own key. Both need the admin role; both are audited.\n";

static const struct cli_option options[] = {{NULL, 0}};

static const char *const columns[] = {"keyId", "createdAt", "current", NULL};
static const struct cli_view list_view = {"keys", columns};

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const none[] = {NULL};
  const char *verb = a->n_pos ? a->pos[0] : NULL;
  int status;

  if (!verb)
    return cli_usage(a, "data-keys needs a verb: list, rotate");
  if (strcmp(verb, "list") != 0 && strcmp(verb, "rotate") != 0)
    return cli_usage(a, "unknown verb \"%s\": list, rotate", verb);
  if ((status = cli_only(a, verb, none)) != 0 || (status = cli_no_more(a, 1)) != 0)
    return status;
  if (verb[0] == 'l')
    return cli_call_json(c, "/analytics.v1.KeyService/ListDataKeys", json_object(), &list_view);
  return cli_call_json(c, "/analytics.v1.KeyService/RotateDataKey", json_object(), NULL);
}

const struct cli_command cli_cmd_data_keys = {
    .name = "data-keys",
    .summary = "list or rotate the account's field-encryption data keys",
    .help = help,
    .options = options,
    .run = run,
};
