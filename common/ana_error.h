/* Error codes and the user-facing error struct shared by server, bridge and client. */
#ifndef ANA_ERROR_H
#define ANA_ERROR_H

#include <stdarg.h>

/* Internal result codes: functions return 0 or one of these (negative). */
enum ana_err {
  ANA_OK = 0,
  ANA_ERR_NOMEM = -1,
  ANA_ERR_INVALID = -2,
  ANA_ERR_NOT_FOUND = -3,
  ANA_ERR_EXISTS = -4,
  ANA_ERR_IO = -5,
  ANA_ERR_FULL = -6,
  ANA_ERR_CLOSED = -7,
  ANA_ERR_UNSUPPORTED = -8,
  ANA_ERR_INTERNAL = -9,
  ANA_ERR_TIMEOUT = -10,
};

/* gRPC status codes, mirrored so that modules without grpc.h can name them. */
enum ana_status {
  ANA_STATUS_OK = 0,
  ANA_STATUS_CANCELLED = 1,
  ANA_STATUS_UNKNOWN = 2,
  ANA_STATUS_INVALID_ARGUMENT = 3,
  ANA_STATUS_DEADLINE_EXCEEDED = 4,
  ANA_STATUS_NOT_FOUND = 5,
  ANA_STATUS_ALREADY_EXISTS = 6,
  ANA_STATUS_PERMISSION_DENIED = 7,
  ANA_STATUS_RESOURCE_EXHAUSTED = 8,
  ANA_STATUS_FAILED_PRECONDITION = 9,
  ANA_STATUS_ABORTED = 10,
  ANA_STATUS_OUT_OF_RANGE = 11,
  ANA_STATUS_UNIMPLEMENTED = 12,
  ANA_STATUS_INTERNAL = 13,
  ANA_STATUS_UNAVAILABLE = 14,
  ANA_STATUS_DATA_LOSS = 15,
  ANA_STATUS_UNAUTHENTICATED = 16,
};

#define ANA_ERROR_MESSAGE_MAX 512

/* An error a user must see: the status code and message end up verbatim in
 * the RPC status (gRPC) or the JSON error body (REST). Caller owns it. */
struct ana_error {
  enum ana_status code;
  char message[ANA_ERROR_MESSAGE_MAX];
};

/* Short text for an enum ana_err value; never NULL. */
const char *ana_strerror(int err);

/* Name of a status code as gRPC spells it ("INVALID_ARGUMENT"); never NULL. */
const char *ana_status_name(enum ana_status code);

/* Fills err (if not NULL) with code and a printf-style message, truncated to
 * fit. Returns ANA_ERR_INVALID so callers can `return ana_error_set(...)`. */
int ana_error_set(struct ana_error *err, enum ana_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Resets err to OK with an empty message. */
void ana_error_clear(struct ana_error *err);

#endif
