/* What the examples share: the server address from argv[1], and the rule
 * for their exit status (0 when the call worked, 1 when the server answered
 * an error or could not be reached). */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <analytics/analytics.h>

#include <stdio.h>

/* Opens a client on argv[1] (default 127.0.0.1:50051). */
static analytics_client_t *example_client(int argc, char **argv) {
  analytics_options_t opts;
  analytics_error_t err;
  analytics_client_t *client;

  analytics_options_init(&opts);
  if (argc > 1)
    opts.target = argv[1];
  client = analytics_client_new(&opts, &err);
  if (!client)
    fprintf(stderr, "cannot create the client: %s\n", err.message);
  return client;
}

/* Prints the outcome of a call and returns the exit status: 0 only when the
 * call worked; any error the server answered (UNIMPLEMENTED included) or a
 * failure to reach it is 1, with the status and message on stderr. */
static int example_result(const char *what, int rc, const char *json,
                          const analytics_error_t *err) {
  if (rc == 0) {
    printf("%s: OK\n%s\n", what, json ? json : "");
    return 0;
  }
  fprintf(stderr, "%s failed: %s (%s: %s)\n", what, analytics_strerror(rc),
          analytics_status_name(err->code), err->message);
  return 1;
}

#endif
