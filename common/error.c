/* Error code names and the user-facing error struct helpers. */
#include "ana_error.h"

#include <stdio.h>
#include <string.h>

const char *ana_strerror(int err) {
  switch (err) {
  case ANA_OK: return "ok";
  case ANA_ERR_NOMEM: return "out of memory";
  case ANA_ERR_INVALID: return "invalid argument";
  case ANA_ERR_NOT_FOUND: return "not found";
  case ANA_ERR_EXISTS: return "already exists";
  case ANA_ERR_IO: return "input/output error";
  case ANA_ERR_FULL: return "buffer full";
  case ANA_ERR_CLOSED: return "closed";
  case ANA_ERR_UNSUPPORTED: return "not supported";
  case ANA_ERR_INTERNAL: return "internal error";
  case ANA_ERR_TIMEOUT: return "timed out";
  default: return "unknown error";
  }
}

const char *ana_status_name(enum ana_status code) {
  static const char *const names[] = {
      "OK",
      "CANCELLED",
      "UNKNOWN",
      "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",
      "NOT_FOUND",
      "ALREADY_EXISTS",
      "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION",
      "ABORTED",
      "OUT_OF_RANGE",
      "UNIMPLEMENTED",
      "INTERNAL",
      "UNAVAILABLE",
      "DATA_LOSS",
      "UNAUTHENTICATED",
  };
  if ((unsigned)code < sizeof names / sizeof names[0])
    return names[code];
  return "UNKNOWN";
}

int ana_error_set(struct ana_error *err, enum ana_status code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return ANA_ERR_INVALID;
}

void ana_error_clear(struct ana_error *err) {
  if (err) {
    err->code = ANA_STATUS_OK;
    err->message[0] = '\0';
  }
}
