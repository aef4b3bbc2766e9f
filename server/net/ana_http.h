/* Outbound HTTP(S) over libcurl, shared by every module that calls out (the
 * notification channels, later the storage backends): pooled easy handles so
 * connections are kept alive, timeouts, TLS verification, bounded response
 * capture, and an optional address policy against server-side request
 * forgery (SSRF) whose checked address is the one the connection uses. */
#ifndef ANA_HTTP_H
#define ANA_HTTP_H

#include "ana_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* Why an address is refused by the private-network policy, or NULL when it
 * is a public unicast address. IPv4-mapped, IPv4-compatible, NAT64 and 6to4
 * IPv6 forms are judged by the IPv4 address they carry. Pure; thread-safe. */
const char *ana_net_refused_reason(const struct sockaddr *sa);

/* Same for an address in text form ("10.0.0.1", "::ffff:127.0.0.1"); "not an
 * IP address" when it is not one. */
const char *ana_net_refused_reason_text(const char *ip);

struct ana_http_options {
  int connect_timeout_ms;    /* 0: 5,000 */
  size_t max_response_bytes; /* body bytes kept; the rest is dropped (0: 65,536) */
  int pool_size;             /* idle easy handles kept for reuse (0: 8) */
  const char *ca_file;       /* PEM CA bundle for https (borrowed; NULL: the system's) */
};

struct ana_http_client;

/* A client usable from any number of threads. NULL with err filled when
 * libcurl cannot start. The caller destroys it. */
struct ana_http_client *ana_http_client_create(const struct ana_http_options *o,
                                               struct ana_error *err);
/* Closes the kept connections; NULL does nothing. No request may be running. */
void ana_http_client_destroy(struct ana_http_client *c);

struct ana_http_request {
  const char *method;         /* "GET", "POST", "PUT", ...; NULL: GET, or POST with a body */
  const char *url;            /* http:// or https:// (borrowed) */
  const char *const *headers; /* "Name: value" lines, borrowed; may be NULL */
  size_t n_headers;
  const void *body; /* borrowed; NULL: none */
  size_t body_len;
  int timeout_ms; /* whole request; 0: 30,000 */
  /* Refuse targets whose host resolves to a loopback, private, link-local,
   * CGNAT, multicast, unspecified or reserved address; the checked address
   * is pinned for the connection (no second lookup can swap it) and every
   * socket the transfer opens is checked again. */
  bool refuse_private;
  /* Name of the field the URL came from, for error messages ("url"). */
  const char *field;
};

struct ana_http_response {
  long status;     /* HTTP status, 0 when no response arrived */
  char *body;      /* NUL-terminated, owned: ana_http_response_fini frees it */
  size_t body_len; /* bytes kept */
  bool truncated;  /* the body was longer than max_response_bytes */
};

/* Performs req. Returns 0 when a response arrived (whatever its status);
 * ANA_ERR_INVALID when the URL is malformed, not http(s), or refused by the
 * policy (err names req->field and the reason, INVALID_ARGUMENT);
 * ANA_ERR_IO / ANA_ERR_TIMEOUT when the transfer failed (err has curl's
 * text, UNAVAILABLE / DEADLINE_EXCEEDED). Redirects are never followed.
 * resp is always initialised; the caller calls ana_http_response_fini.
 * Blocks up to timeout_ms. Thread-safe. */
int ana_http_perform(struct ana_http_client *c, const struct ana_http_request *req,
                     struct ana_http_response *resp, struct ana_error *err);

void ana_http_response_fini(struct ana_http_response *resp);

/* Checks a URL against the policy without sending anything: scheme http or
 * https, a host that resolves, every address allowed when refuse_private.
 * Returns 0 or ANA_ERR_INVALID with err naming field. Blocks (DNS). */
int ana_http_check_url(const char *url, bool refuse_private, const char *field,
                       struct ana_error *err);

#endif
