/* Errors as REST clients see them: grpc-gateway's gRPC-code -> HTTP-status
 * table and the google.rpc.Status JSON body, with field violations as a
 * google.rpc.BadRequest detail. */
#include "restbridge_internal.h"

#include "ana_log.h"

#include "ana_alloc.h"

#include <stdio.h>
#include <string.h>

int rb_http_status_of(enum ana_status code) {
  switch (code) {
  case ANA_STATUS_OK: return 200;
  case ANA_STATUS_CANCELLED: return 499;
  case ANA_STATUS_UNKNOWN: return 500;
  case ANA_STATUS_INVALID_ARGUMENT: return 400;
  case ANA_STATUS_DEADLINE_EXCEEDED: return 504;
  case ANA_STATUS_NOT_FOUND: return 404;
  case ANA_STATUS_ALREADY_EXISTS: return 409;
  case ANA_STATUS_PERMISSION_DENIED: return 403;
  case ANA_STATUS_RESOURCE_EXHAUSTED: return 429;
  case ANA_STATUS_FAILED_PRECONDITION: return 400; /* deliberately not 412 */
  case ANA_STATUS_ABORTED: return 409;
  case ANA_STATUS_OUT_OF_RANGE: return 400;
  case ANA_STATUS_UNIMPLEMENTED: return 501;
  case ANA_STATUS_INTERNAL: return 500;
  case ANA_STATUS_UNAVAILABLE: return 503;
  case ANA_STATUS_DATA_LOSS: return 500;
  case ANA_STATUS_UNAUTHENTICATED: return 401;
  }
  return 500;
}

/* Grows b so that n more payload bytes (and the NUL) fit. The buffer's
 * memory comes from ana_malloc/ana_realloc, as the codec's does. */
static int reserve_more(struct ana_json_buf *b, size_t n) {
  size_t need = b->reserve + b->len + n + 1;
  if (b->data && need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  char *d = ana_realloc(b->data, cap);
  if (!d)
    return ANA_ERR_NOMEM;
  b->data = d;
  b->cap = cap;
  return 0;
}

int rb_json_append(struct ana_json_buf *b, const char *s, size_t n) {
  if (reserve_more(b, n) < 0)
    return ANA_ERR_NOMEM;
  memcpy(b->data + b->reserve + b->len, s, n);
  b->len += n;
  b->data[b->reserve + b->len] = '\0';
  return 0;
}

static int append_cstr(struct ana_json_buf *b, const char *s) {
  return rb_json_append(b, s, strlen(s));
}

/* Escapes as JSON requires; bytes >= 0x80 are copied (the strings we write
 * come from our own messages or validated input). */
int rb_json_append_string(struct ana_json_buf *b, const char *s) {
  if (rb_json_append(b, "\"", 1) < 0)
    return ANA_ERR_NOMEM;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    const char *out = NULL;
    switch (*p) {
    case '"': out = "\\\""; break;
    case '\\': out = "\\\\"; break;
    case '\n': out = "\\n"; break;
    case '\r': out = "\\r"; break;
    case '\t': out = "\\t"; break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        out = esc;
      }
    }
    int rc = out ? append_cstr(b, out) : rb_json_append(b, (const char *)p, 1);
    if (rc < 0)
      return rc;
  }
  return rb_json_append(b, "\"", 1);
}

int ana_restbridge_health_add(struct ana_json_buf *b, const char *name, const char *value) {
  if (rb_json_append(b, ",", 1) < 0 || rb_json_append_string(b, name) < 0 ||
      rb_json_append(b, ":", 1) < 0 || rb_json_append_string(b, value) < 0)
    return ANA_ERR_NOMEM;
  return 0;
}

int ana_restbridge_health_add_int(struct ana_json_buf *b, const char *name, long long value) {
  char v[32];
  int n = snprintf(v, sizeof v, "%lld", value);
  if (rb_json_append(b, ",", 1) < 0 || rb_json_append_string(b, name) < 0 ||
      rb_json_append(b, ":", 1) < 0 || rb_json_append(b, v, (size_t)n) < 0)
    return ANA_ERR_NOMEM;
  return 0;
}

struct rb_msg *rb_msg_from_buf(const struct ana_json_buf *b) {
  return rb_msg_new(b->data ? b->data + b->reserve : "", b->len);
}

struct rb_msg *rb_error_json(const struct ana_call *call, const struct ana_error *status,
                             const char *prefix, const char *suffix) {
  struct ana_json_buf b;
  struct rb_msg *m = NULL;
  char code[16];
  ana_json_buf_init(&b, 0);
  snprintf(code, sizeof code, "%d", (int)status->code);
  int rc = append_cstr(&b, prefix ? prefix : "");
  rc = rc < 0 ? rc : append_cstr(&b, "{\"code\":");
  rc = rc < 0 ? rc : append_cstr(&b, code);
  rc = rc < 0 ? rc : append_cstr(&b, ",\"message\":");
  rc = rc < 0 ? rc : rb_json_append_string(&b, status->message);
  rc = rc < 0 ? rc : append_cstr(&b, ",\"details\":[");
  if (call && call->n_violations && rc == 0) {
    rc = append_cstr(&b, "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
                         "\"fieldViolations\":[");
    /* The list is newest first; report in the order they were found. */
    size_t n = call->n_violations, i = n;
    const struct ana_violation **order = ana_calloc(n, sizeof *order);
    if (!order)
      rc = ANA_ERR_NOMEM;
    for (const struct ana_violation *v = call->violations; v && order; v = v->next)
      order[--i] = v;
    for (i = 0; i < n && rc == 0; i++) {
      rc = append_cstr(&b, i ? ",{\"field\":" : "{\"field\":");
      rc = rc < 0 ? rc : rb_json_append_string(&b, order[i]->field);
      rc = rc < 0 ? rc : append_cstr(&b, ",\"description\":");
      rc = rc < 0 ? rc : rb_json_append_string(&b, order[i]->description);
      rc = rc < 0 ? rc : append_cstr(&b, "}");
    }
    ana_free(order);
    rc = rc < 0 ? rc : append_cstr(&b, "]}");
  }
  const struct ana_principal *p = call ? &call->principal : NULL;
  if (p && p->rate_charged && !p->rate.allowed && p->rate.retry_after_ns >= 0 && rc == 0) {
    char delay[160];
    snprintf(delay, sizeof delay,
             "%s{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
             "\"retryDelay\":\"%lld.%09llds\"}",
             call->n_violations ? "," : "", (long long)(p->rate.retry_after_ns / 1000000000LL),
             (long long)(p->rate.retry_after_ns % 1000000000LL));
    rc = append_cstr(&b, delay);
  }
  rc = rc < 0 ? rc : append_cstr(&b, "]");
  /* The request id (X-Request-Id, or the one made for the request), as in
   * the response header and the log lines of the request. */
  const char *rid = call ? ana_call_metadata(call, "x-request-id") : ana_log_request_id();
  if (rid && rid[0] && rc == 0) {
    rc = append_cstr(&b, ",\"requestId\":");
    rc = rc < 0 ? rc : rb_json_append_string(&b, rid);
  }
  rc = rc < 0 ? rc : append_cstr(&b, "}");
  rc = rc < 0 ? rc : append_cstr(&b, suffix ? suffix : "");
  if (rc == 0)
    m = rb_msg_from_buf(&b);
  else /* grpc-gateway's fallback when the error itself cannot be written */
  {
    static const char fallback[] = "{\"code\":13,\"message\":\"failed to marshal error message\"}";
    m = rb_msg_new(fallback, sizeof fallback - 1);
  }
  ana_json_buf_fini(&b);
  return m;
}

void rb_reply_rate(struct rb_reply *r, const struct ana_call *call) {
  const struct ana_principal *p = &call->principal;
  if (!p->rate_charged)
    return;
  r->rate_headers = p->rate.limit >= 0; /* unknown behind a remote upstream */
  r->rate_limit = p->rate.limit;
  r->rate_remaining = p->rate.remaining;
  r->rate_reset_s = (p->rate.reset_after_ns + 999999999LL) / 1000000000LL;
  if (!p->rate.allowed && p->rate.retry_after_ns >= 0)
    r->retry_after_s = (int)ana_auth_rate_retry_after_s(&p->rate);
}

int rb_reply_error(struct rb_reply *r, const struct ana_call *call,
                   const struct ana_error *status) {
  rb_reply_clear(r);
  r->http_status = rb_http_status_of(status->code);
  r->body = rb_error_json(call, status, NULL, NULL);
  if (status->code == ANA_STATUS_UNAUTHENTICATED)
    r->www_auth =
        ana_strdup(strcmp(status->message, "invalid token") == 0 ? "Bearer error=\"invalid_token\""
                                                                 : "Bearer realm=\"analyticsd\"");
  return r->body ? 0 : ANA_ERR_NOMEM;
}
