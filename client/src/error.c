/* Error codes and texts of libanalytics, and the mapping from the RPC layer. */
#include "analytics_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *analytics_strerror(int code) {
  switch (code) {
  case ANALYTICS_OK: return "success";
  case ANALYTICS_ERR_INVALID: return "invalid argument";
  case ANALYTICS_ERR_NOMEM: return "out of memory";
  case ANALYTICS_ERR_QUEUE_FULL: return "queue full";
  case ANALYTICS_ERR_TIMEOUT: return "timed out";
  case ANALYTICS_ERR_CLOSED: return "client closing";
  case ANALYTICS_ERR_UNAVAILABLE: return "server unavailable";
  case ANALYTICS_ERR_UNIMPLEMENTED: return "not implemented by the server";
  case ANALYTICS_ERR_SERVER: return "server error";
  case ANALYTICS_ERR_INTERNAL: return "internal error";
  case ANALYTICS_ERR_UNAUTHENTICATED: return "not authenticated";
  case ANALYTICS_ERR_PERMISSION_DENIED: return "permission denied";
  default: return "unknown error";
  }
}

const char *analytics_status_name(int status) {
  if (status < 0 || status > ANALYTICS_STATUS_UNAUTHENTICATED)
    return "UNKNOWN";
  return ana_status_name((enum ana_status)status);
}

void analytics_free(void *ptr) {
  free(ptr);
}

void analytics_clear(analytics_error_t *err) {
  if (err) {
    err->code = 0;
    err->message[0] = '\0';
  }
}

int analytics_fail(analytics_error_t *err, int code, int status, const char *fmt, ...) {
  if (err) {
    va_list ap;
    err->code = status;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

int analytics_from_ana(int rc, const struct ana_error *aerr, analytics_error_t *err) {
  int code;

  if (rc >= 0) {
    analytics_clear(err);
    return 0;
  }
  if (err) {
    err->code = (int)aerr->code;
    snprintf(err->message, sizeof err->message, "%s", aerr->message);
  }
  if (rc == ANA_ERR_NOMEM)
    return ANALYTICS_ERR_NOMEM;
  switch (aerr->code) {
  case ANA_STATUS_UNIMPLEMENTED: code = ANALYTICS_ERR_UNIMPLEMENTED; break;
  case ANA_STATUS_UNAUTHENTICATED: code = ANALYTICS_ERR_UNAUTHENTICATED; break;
  case ANA_STATUS_PERMISSION_DENIED: code = ANALYTICS_ERR_PERMISSION_DENIED; break;
  case ANA_STATUS_UNAVAILABLE:
  case ANA_STATUS_DEADLINE_EXCEEDED:
  case ANA_STATUS_RESOURCE_EXHAUSTED: code = ANALYTICS_ERR_UNAVAILABLE; break;
  case ANA_STATUS_INTERNAL:
    code = rc == ANA_ERR_INTERNAL ? ANALYTICS_ERR_INTERNAL : ANALYTICS_ERR_SERVER;
    break;
  default: code = ANALYTICS_ERR_SERVER; break;
  }
  return code;
}
