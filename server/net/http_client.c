/* The shared libcurl client: a pool of easy handles (each keeps its
 * connections alive across requests), bounded response capture, and the
 * private-network policy pinned to the connection. */
#include "ana_http.h"

#include "ana_alloc.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_RESPONSE 65536
#define DEFAULT_POOL 8
#define MAX_POOL 64

struct ana_http_client {
  struct ana_http_options o;
  pthread_mutex_t mu;
  CURL *idle[MAX_POOL]; /* guarded by mu */
  int n_idle;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void) {
  global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct ana_http_client *ana_http_client_create(const struct ana_http_options *o,
                                               struct ana_error *err) {
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "libcurl: %s", curl_easy_strerror(global_rc));
    return NULL;
  }
  struct ana_http_client *c = ana_calloc(1, sizeof *c);
  if (!c) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  if (o)
    c->o = *o;
  if (c->o.connect_timeout_ms <= 0)
    c->o.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
  if (!c->o.max_response_bytes)
    c->o.max_response_bytes = DEFAULT_MAX_RESPONSE;
  if (c->o.pool_size <= 0)
    c->o.pool_size = DEFAULT_POOL;
  if (c->o.pool_size > MAX_POOL)
    c->o.pool_size = MAX_POOL;
  pthread_mutex_init(&c->mu, NULL);
  return c;
}

void ana_http_client_destroy(struct ana_http_client *c) {
  if (!c)
    return;
  for (int i = 0; i < c->n_idle; i++)
    curl_easy_cleanup(c->idle[i]);
  pthread_mutex_destroy(&c->mu);
  ana_free(c);
}

static CURL *take(struct ana_http_client *c) {
  CURL *h = NULL;
  pthread_mutex_lock(&c->mu);
  if (c->n_idle)
    h = c->idle[--c->n_idle];
  pthread_mutex_unlock(&c->mu);
  if (h)
    curl_easy_reset(h); /* keeps the connection cache */
  else
    h = curl_easy_init();
  return h;
}

static void give_back(struct ana_http_client *c, CURL *h) {
  pthread_mutex_lock(&c->mu);
  if (c->n_idle < c->o.pool_size) {
    c->idle[c->n_idle++] = h;
    h = NULL;
  }
  pthread_mutex_unlock(&c->mu);
  if (h)
    curl_easy_cleanup(h);
}

void ana_http_response_fini(struct ana_http_response *resp) {
  if (!resp)
    return;
  ana_free(resp->body);
  memset(resp, 0, sizeof *resp);
}

struct capture {
  struct ana_http_response *resp;
  size_t max, cap;
  bool nomem;
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg) {
  struct capture *cp = arg;
  size_t n = size * nmemb, keep = n;
  struct ana_http_response *r = cp->resp;
  if (r->body_len + keep > cp->max) {
    keep = cp->max - r->body_len;
    r->truncated = true;
  }
  if (keep) {
    if (r->body_len + keep + 1 > cp->cap) {
      size_t cap = cp->cap ? cp->cap * 2 : 1024;
      while (cap < r->body_len + keep + 1)
        cap *= 2;
      char *b = ana_realloc(r->body, cap);
      if (!b) {
        cp->nomem = true;
        return 0;
      }
      r->body = b;
      cp->cap = cap;
    }
    memcpy(r->body + r->body_len, data, keep);
    r->body_len += keep;
    r->body[r->body_len] = '\0';
  }
  return n;
}

/* Every socket a policy-checked transfer opens is checked again: the
 * pinned address makes this redundant for the target, but it also covers
 * whatever else curl might connect to. */
static curl_socket_t open_checked(void *arg, curlsocktype purpose, struct curl_sockaddr *a) {
  (void)arg;
  (void)purpose;
  if (ana_net_refused_reason(&a->addr))
    return CURL_SOCKET_BAD;
  return socket(a->family, a->socktype, a->protocol);
}

/* The parts of a URL the policy needs. */
struct target {
  char host[256]; /* without IPv6 brackets */
  char port[8];
  bool literal; /* the host is an IP address */
  char pinned[INET6_ADDRSTRLEN];
};

static int parse_target(const char *url, const char *field, struct target *t,
                        struct ana_error *err) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL;
  int rc = ANA_ERR_INVALID;
  if (!u) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return ANA_ERR_NOMEM;
  }
  if (!url || !url[0]) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: is required", field);
    goto out;
  }
  if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: is not an absolute http(s) URL", field);
    goto out;
  }
  if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: scheme %s is not allowed (http or https)",
                  field, scheme);
    goto out;
  }
  if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: has no host", field);
    goto out;
  }
  if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
    goto out;
  size_t n = strlen(host);
  const char *h = host;
  if (n >= 2 && host[0] == '[') {
    h++;
    n -= 2;
  }
  if (n == 0 || n >= sizeof t->host || strlen(port) >= sizeof t->port) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: host is empty or too long", field);
    goto out;
  }
  memcpy(t->host, h, n);
  t->host[n] = '\0';
  snprintf(t->port, sizeof t->port, "%s", port);
  struct in6_addr tmp;
  t->literal = inet_pton(AF_INET, t->host, &tmp) == 1 || inet_pton(AF_INET6, t->host, &tmp) == 1;
  rc = 0;
out:
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return rc;
}

/* Resolves t->host; every address must pass (a name that also resolves to
 * a private address is refused whole). Fills t->pinned with the first. */
static int resolve_checked(struct target *t, bool refuse_private, const char *field,
                           struct ana_error *err) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int g = getaddrinfo(t->host, t->port, &hints, &res);
  if (g != 0 || !res) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: host %s does not resolve: %s", field,
                  t->host, gai_strerror(g));
    return ANA_ERR_INVALID;
  }
  int rc = 0;
  t->pinned[0] = '\0';
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    const void *addr = ai->ai_family == AF_INET
                           ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                           : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(ai->ai_family, addr, text, sizeof text))
      continue;
    const char *why = refuse_private ? ana_net_refused_reason(ai->ai_addr) : NULL;
    if (why) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                    "%s: %s resolves to %s, a %s address; outbound requests go to public "
                    "addresses only (NOTIFY_ALLOW_PRIVATE_NETWORKS allows private ones)",
                    field, t->host, text, why);
      rc = ANA_ERR_INVALID;
      break;
    }
    if (!t->pinned[0])
      snprintf(t->pinned, sizeof t->pinned, "%s", text);
  }
  freeaddrinfo(res);
  if (rc == 0 && !t->pinned[0]) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: host %s has no usable address", field,
                  t->host);
    rc = ANA_ERR_INVALID;
  }
  return rc;
}

int ana_http_check_url(const char *url, bool refuse_private, const char *field,
                       struct ana_error *err) {
  struct target t;
  int rc = parse_target(url, field ? field : "url", &t, err);
  if (rc == 0 && refuse_private)
    rc = resolve_checked(&t, true, field ? field : "url", err);
  return rc;
}

int ana_http_perform(struct ana_http_client *c, const struct ana_http_request *req,
                     struct ana_http_response *resp, struct ana_error *err) {
  const char *field = req->field ? req->field : "url";
  struct curl_slist *headers = NULL, *resolve = NULL;
  struct capture cp = {resp, c->o.max_response_bytes, 0, false};
  struct target t;
  CURL *h = NULL;
  int rc = 0;
  memset(resp, 0, sizeof *resp);
  if ((rc = parse_target(req->url, field, &t, err)) < 0)
    goto out;
  if (req->refuse_private) {
    if ((rc = resolve_checked(&t, true, field, err)) < 0)
      goto out;
    if (!t.literal) { /* pin: curl connects to the address just checked */
      char entry[512];
      bool v6 = strchr(t.pinned, ':') != NULL;
      snprintf(entry, sizeof entry, "%s:%s:%s%s%s", t.host, t.port, v6 ? "[" : "", t.pinned,
               v6 ? "]" : "");
      if (!(resolve = curl_slist_append(NULL, entry))) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
      }
    }
  }
  if (!(h = take(c))) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < req->n_headers; i++) {
    struct curl_slist *n = curl_slist_append(headers, req->headers[i]);
    if (!n) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
    headers = n;
  }
  /* No "Expect: 100-continue" round trip for small bodies. */
  struct curl_slist *n = curl_slist_append(headers, "Expect:");
  if (n)
    headers = n;
  curl_easy_setopt(h, CURLOPT_URL, req->url);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->o.ca_file && c->o.ca_file[0])
    curl_easy_setopt(h, CURLOPT_CAINFO, c->o.ca_file);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->o.connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                   (long)(req->timeout_ms > 0 ? req->timeout_ms : DEFAULT_TIMEOUT_MS));
  curl_easy_setopt(h, CURLOPT_USERAGENT, "analyticsd");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &cp);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  if (req->refuse_private) {
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* no proxy from the environment */
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_checked);
    if (resolve)
      curl_easy_setopt(h, CURLOPT_RESOLVE, resolve);
  }
  if (req->body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
  }
  if (req->method)
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
  CURLcode cc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
  if (cp.nomem) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else if (cc == CURLE_OPERATION_TIMEDOUT) {
    ana_error_set(err, ANA_STATUS_DEADLINE_EXCEEDED, "%s: %s", t.host, curl_easy_strerror(cc));
    rc = ANA_ERR_TIMEOUT;
  } else if (cc != CURLE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "%s: %s", t.host, curl_easy_strerror(cc));
    rc = ANA_ERR_IO;
  }
out:
  if (h) {
    /* Drop the per-request lists before they are freed. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_RESOLVE, NULL);
    give_back(c, h);
  }
  curl_slist_free_all(headers);
  curl_slist_free_all(resolve);
  if (rc < 0 && rc != ANA_ERR_IO && rc != ANA_ERR_TIMEOUT) {
    ana_free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
  }
  return rc;
}
