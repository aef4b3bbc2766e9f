/* analyticsctl search: the caller's stored events, one page or all of them. */
#include "cli.h"

#include <string.h>

static const char help[] =
    "usage: analyticsctl search [--name N] [--type T] [--session S] [--query Q]\n"
    "                           [--from TIME] [--to TIME] [--property KEY=VALUE]...\n"
    "                           [--limit N] [--page TOKEN] [--all]\n"
    "\n"
    "Searches the caller's events, newest first. Prints {\"events\":[...],\n"
    "\"nextPageToken\":...} (a table on a terminal).\n"
    "\n"
    "  --from, --to     time range, from inclusive, to exclusive: RFC 3339 as the\n"
    "                   server reads it (2024-05-01T10:00:00Z), a date alone\n"
    "                   (2024-05-01, UTC midnight), Unix ms, now, or relative to now\n"
    "                   (-30s, -15m, -2h, -7d)\n"
    "  --property K=V   property equality (repeatable)\n"
    "  --query Q        free text: every word must appear\n"
    "  --limit N        page size; with --all, the most events printed\n"
    "  --page TOKEN     continue from a nextPageToken\n"
    "  --all            follow nextPageToken through every page, printed as one\n"
    "                   {\"events\":[...]}\n";

static const struct cli_option options[] = {{"name", CLI_VALUE},
                                            {"type", CLI_VALUE},
                                            {"session", CLI_VALUE},
                                            {"query", CLI_VALUE},
                                            {"from", CLI_VALUE},
                                            {"to", CLI_VALUE},
                                            {"property", CLI_LIST},
                                            {"limit", CLI_VALUE},
                                            {"page", CLI_VALUE},
                                            {"all", CLI_FLAG},
                                            {NULL, 0}};

static const char *const columns[] = {"timestamp",  "eventType", "eventName", "sessionId",
                                      "properties", "eventId",   NULL};
static const struct cli_view view = {"events", columns};

static int search_page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                       const char *token, char **json, analytics_error_t *err) {
  const struct cli_list *props = cli_list(a, "property");
  analytics_search_t s = {.event_type = cli_opt(a, "type"),
                          .event_name = cli_opt(a, "name"),
                          .session_id = cli_opt(a, "session"),
                          .query = cli_opt(a, "query"),
                          .page_size = page_size,
                          .page_token = token};
  const char *keys[CLI_MAX_LIST], *values[CLI_MAX_LIST];
  char store[CLI_MAX_LIST][256];

  /* Checked in run(). */
  if (cli_opt(a, "from"))
    cli_parse_time(cli_opt(a, "from"), &s.from_ms);
  if (cli_opt(a, "to"))
    cli_parse_time(cli_opt(a, "to"), &s.to_ms);
  for (size_t i = 0; i < props->n; i++) {
    const char *eq = strchr(props->v[i], '=');
    size_t klen = (size_t)(eq - props->v[i]);
    memcpy(store[i], props->v[i], klen);
    store[i][klen] = '\0';
    keys[i] = store[i];
    values[i] = eq + 1;
  }
  s.property_keys = keys;
  s.property_values = values;
  s.property_count = props->n;
  return analytics_search_events(c, &s, json, err);
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  const struct cli_list *props = cli_list(a, "property");
  analytics_error_t err;
  char *json = NULL;
  int64_t ms;
  long limit;
  int status;

  if ((status = cli_limit(a, &limit)) != 0 || (status = cli_no_more(a, 0)) != 0)
    return status;
  if ((cli_opt(a, "from") && cli_parse_time(cli_opt(a, "from"), &ms) < 0) ||
      (cli_opt(a, "to") && cli_parse_time(cli_opt(a, "to"), &ms) < 0))
    return cli_usage(a, "--from/--to: RFC 3339 (2024-05-01T10:00:00Z), a date, Unix ms, now "
                        "or -15m/-2h/-7d");
  for (size_t i = 0; i < props->n; i++) {
    const char *eq = strchr(props->v[i], '=');
    if (!eq || eq == props->v[i] || eq - props->v[i] >= 256)
      return cli_usage(a, "--property takes KEY=VALUE, not \"%s\"", props->v[i]);
  }
  if (cli_opt(a, "all"))
    return cli_all_pages(c, a, "events", limit, search_page, &view);
  status = search_page(c, a, (int32_t)limit, cli_opt(a, "page"), &json, &err);
  return cli_finish(status, json, &err, &view);
}

const struct cli_command cli_cmd_search = {
    .name = "search",
    .summary = "search stored events",
    .help = help,
    .options = options,
    .run = run,
};
