/* analyticsctl health: grpc.health.v1.Health/Check. */
#include "cli.h"

static const char help[] =
    "usage: analyticsctl health [--service NAME]\n"
    "\n"
    "Asks grpc.health.v1.Health/Check about the server (or one service, e.g.\n"
    "analytics.v1.EventService). Prints {\"status\":\"SERVING\"} and exits 0, or 1 when\n"
    "not serving or unreachable.\n";

static const struct cli_option options[] = {{"service", CLI_VALUE}, {NULL, 0}};

static int run(analytics_client_t *c, const struct cli_args *a) {
  const char *service = cli_opt(a, "service");
  analytics_error_t err;
  bool serving = false;
  json_t *v;
  int rc;

  if ((rc = cli_no_more(a, 0)) != 0)
    return rc;
  rc = analytics_health(c, service ? service : "", &serving, &err);
  if (rc < 0)
    return cli_failed(rc, &err);
  v = json_pack("{ss}", "status", serving ? "SERVING" : "NOT_SERVING");
  cli_print(v, NULL);
  json_decref(v);
  return serving ? 0 : CLI_EXIT_FAIL;
}

const struct cli_command cli_cmd_health = {
    .name = "health",
    .summary = "ask the server whether it is serving",
    .help = help,
    .options = options,
    .run = run,
};
