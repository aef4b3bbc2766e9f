/* gRPC core's log function: hands each gpr_log line to the JSON logger. */
#include "ana_grpc_log.h"

#include "ana_log.h"

#include <grpc/support/log.h>
#include <stdio.h>
#include <string.h>

/* Core's error and info lines count against one site: a peer that makes
 * core complain on every connection cannot flood the log. Debug lines are
 * asked for explicitly (GRPC_VERBOSITY=debug, GRPC_TRACE) and all go out. */
static struct ana_log_site grpc_site = {.file = "grpc", .line = 0};

static void grpc_log(gpr_log_func_args *args) {
  /* Core's errors are mostly a peer's doing (a failed TLS handshake, a bad
   * HTTP/2 preface): warn. What fails on our side gets an error line of its
   * own (a port that cannot be bound: "start-up failed"). */
  enum ana_log_level level = args->severity == GPR_LOG_SEVERITY_ERROR  ? ANA_LOG_WARN
                             : args->severity == GPR_LOG_SEVERITY_INFO ? ANA_LOG_INFO
                                                                       : ANA_LOG_DEBUG;
  if (!ana_log_enabled(level))
    return;
  if (level != ANA_LOG_DEBUG && !ana_log_site_admit(&grpc_site, "grpc"))
    return;
  const char *file = args->file ? args->file : "?";
  char source[256];
  snprintf(source, sizeof source, "%s:%d", file, args->line);
  const char *msg = args->message ? args->message : "";
  /* Some core messages end with a newline of their own. */
  size_t n = strlen(msg);
  if (n > 0 && msg[n - 1] == '\n') {
    char trimmed[ANA_LOG_MSG_MAX + 1];
    snprintf(trimmed, sizeof trimmed, "%.*s", (int)(n - 1), msg);
    ana_log_fields(level, "grpc", trimmed, "source", source, NULL);
    return;
  }
  ana_log_fields(level, "grpc", msg, "source", source, NULL);
}

void ana_grpc_log_route(void) {
  gpr_set_log_function(grpc_log);
}
