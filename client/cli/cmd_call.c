/* analyticsctl call: any RPC of the contracts by its path, with JSON. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: analyticsctl call METHOD [JSON]\n"
    "\n"
    "Calls any RPC of the contracts by its full path with a JSON request, e.g.\n"
    "  analyticsctl call /analytics.v1.MetricService/ListMetrics '{\"pageSize\":5}'\n"
    "Unary methods print the answer; server-streaming methods print JSON lines until\n"
    "the stream ends or Ctrl-C.\n";

static const struct cli_option options[] = {{NULL, 0}};

static int run(analytics_client_t *c, const struct cli_args *a) {
  analytics_error_t err;
  const char *req;
  char *json = NULL;
  int rc;

  if (a->n_pos < 1 || a->n_pos > 2)
    return cli_usage(a, "call takes METHOD and an optional JSON request");
  req = a->n_pos > 1 ? a->pos[1] : NULL;
  rc = analytics_call(c, a->pos[0], req, &json, &err);
  if (rc == ANALYTICS_ERR_INVALID && strstr(err.message, "streaming")) {
    json_t *r = req ? json_loads(req, 0, NULL) : json_object();
    if (!r)
      return cli_usage(a, "the request is not JSON");
    return cli_run_stream(c, a->pos[0], r, false, NULL);
  }
  if (rc == ANALYTICS_ERR_INVALID) {
    fprintf(stderr, "analyticsctl: %s\n", err.message);
    return CLI_EXIT_USAGE;
  }
  return cli_finish(rc, json, &err, NULL);
}

const struct cli_command cli_cmd_call = {
    .name = "call",
    .summary = "call any RPC by name with a JSON request",
    .help = help,
    .options = options,
    .run = run,
    .streams = true,
};
