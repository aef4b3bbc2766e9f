/* Request assembly, grpc-gateway style: the request message from the JSON
 * body (body "*": the whole request; body "field": that field), then the
 * query parameters for what the body does not bind, then the path
 * variables; the headers become call metadata (authorization, x-api-key,
 * x-account-id, x-request-id, grpc-metadata-*, x-forwarded-for/-host) and Grpc-Timeout
 * the deadline. */
#include "restbridge_internal.h"

#include "decode_pool.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_METADATA 24

/* Grpc-Metadata-<name> headers passed on. lws 4.1 cannot enumerate request
 * headers (lws_hdr_custom_name_foreach arrives in 4.3), so the names are a
 * list; extend it when a handler needs another one. */
static const char *const grpc_metadata_names[] = {
    "x-request-id", "x-correlation-id", "x-client-id", "x-client-version",  "x-api-key",
    "x-account-id", "traceparent",      "tracestate",  "x-idempotency-key",
};

struct md_builder {
  struct ana_metadata_entry e[MAX_METADATA];
  size_t n;
};

static void md_add(struct md_builder *md, const char *key, const char *value) {
  if (!value || md->n == MAX_METADATA)
    return;
  md->e[md->n].key = key;
  md->e[md->n].value = value;
  md->e[md->n].value_len = strlen(value);
  md->n++;
}

/* A copy of a standard header in arena, or NULL when absent. */
static char *header(struct lws *wsi, struct ana_arena *a, enum lws_token_indexes h) {
  int n = lws_hdr_total_length(wsi, h);
  if (n <= 0)
    return NULL;
  char *buf = ana_arena_alloc(a, (size_t)n + 1);
  if (!buf || lws_hdr_copy(wsi, buf, n + 1, h) < 0)
    return NULL;
  return buf;
}

/* A copy of a custom header ("x-request-id:", lower-case with the colon). */
static char *custom_header(struct lws *wsi, struct ana_arena *a, const char *name) {
  int nl = (int)strlen(name);
  int n = lws_hdr_custom_length(wsi, name, nl);
  if (n < 0)
    return NULL;
  char *buf = ana_arena_alloc(a, (size_t)n + 1);
  if (!buf || lws_hdr_custom_copy(wsi, buf, n + 1, name, nl) < 0)
    return NULL;
  return buf;
}

/* The query parameter standing for Authorization: Bearer (JWT_ALLOW_QUERY_TOKEN). */
#define QUERY_TOKEN "access_token"
/* Longest query token read (longer ones are not tokens the verifier takes). */
#define QUERY_TOKEN_MAX 16384

/* The value of ?access_token=, copied into a; NULL when absent. */
static const char *query_token(struct lws *wsi, struct ana_arena *a) {
  char *buf = ana_arena_alloc(a, QUERY_TOKEN_MAX);
  if (!buf)
    return NULL;
  const char *v = lws_get_urlarg_by_name(wsi, QUERY_TOKEN "=", buf, QUERY_TOKEN_MAX);
  return v && v[0] ? v : NULL;
}

void rb_request_peer(struct lws *wsi, char *out, size_t size, char *ip, size_t ip_size) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  out[0] = ip[0] = '\0';
  if (getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &len) < 0)
    return;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &in->sin_addr, ip, (socklen_t)ip_size);
    snprintf(out, size, "ipv4:%s:%u", ip, ntohs(in->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) { /* a dual-stack socket's IPv4 peer */
      inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, (socklen_t)ip_size);
      snprintf(out, size, "ipv4:%s:%u", ip, ntohs(in6->sin6_port));
    } else {
      inet_ntop(AF_INET6, &in6->sin6_addr, ip, (socklen_t)ip_size);
      snprintf(out, size, "ipv6:[%s]:%u", ip, ntohs(in6->sin6_port));
    }
  }
}

/* rb_request_peer's peer, copied into a (NULL: out of memory gives ""). */
static const char *peer_of(struct lws *wsi, struct ana_arena *a, char *ip, size_t ip_size) {
  char out[INET6_ADDRSTRLEN + 16];
  rb_request_peer(wsi, out, sizeof out, ip, ip_size);
  if (!out[0])
    return "";
  const char *p = ana_arena_strdup(a, out);
  return p ? p : "";
}

/* Grpc-Timeout: 1 to 8 digits and a unit (H M S m u n). Returns ms, or -1. */
static int64_t parse_grpc_timeout(const char *s) {
  size_t n = strlen(s);
  if (n < 2 || n > 9)
    return -1;
  int64_t v = 0;
  for (size_t i = 0; i + 1 < n; i++) {
    if (!isdigit((unsigned char)s[i]))
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  switch (s[n - 1]) {
  case 'H': return v * 3600000;
  case 'M': return v * 60000;
  case 'S': return v * 1000;
  case 'm': return v;
  case 'u': return (v + 999) / 1000;
  case 'n': return (v + 999999) / 1000000;
  }
  return -1;
}

/* Headers passed on under their own name (as well as Grpc-Metadata-<name>,
 * which they win over): the credentials and the account, so that the
 * server's admission sees the same metadata from the in-process and the
 * remote bridge as from a gRPC client. */
static const char *const plain_metadata_names[] = {"x-api-key", "x-account-id"};

static bool is_plain(const char *key) {
  for (size_t i = 0; i < sizeof plain_metadata_names / sizeof plain_metadata_names[0]; i++)
    if (strcmp(key, plain_metadata_names[i]) == 0)
      return true;
  return false;
}

/* s when it is printable ASCII (RFC 9110 field values are in practice; gRPC
 * metadata values must be), else NULL. */
static const char *client_text(const char *s) {
  if (!s || !s[0])
    return NULL;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p < 0x20 || *p > 0x7e)
      return NULL;
  return s;
}

/* The first language tag of an Accept-Language value (RFC 9110 12.5.4),
 * cut in place: "de-DE,de;q=0.9" gives "de-DE". NULL when absent, "*", or
 * not a tag (letters, digits and hyphens, at most 35 characters: BCP 47's
 * longest well-formed tags fit). */
static const char *first_language(char *s) {
  if (!s)
    return NULL;
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = 0;
  while (s[n] && (isalnum((unsigned char)s[n]) || s[n] == '-'))
    n++;
  if (n == 0 || n > 35 || (s[n] && s[n] != ',' && s[n] != ';' && s[n] != ' ' && s[n] != '\t'))
    return NULL;
  s[n] = '\0';
  return s;
}

/* Fills the call's metadata, peer and deadline. Returns 0, ANA_ERR_NOMEM,
 * or ANA_ERR_INVALID with st filled (a bad Grpc-Timeout). */
static int capture_headers(struct rb_call *c, struct lws *wsi, struct rb_conn *conn,
                           const char *bearer_token, struct ana_error *st) {
  struct ana_call *call = &c->base;
  struct ana_arena *a = &call->arena;
  struct md_builder md = {.n = 0};
  char ip[INET6_ADDRSTRLEN];

  char *auth = header(wsi, a, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (!auth && !bearer_token && c->bridge->opt.allow_query_token)
    bearer_token = query_token(wsi, a);
  if (!auth && bearer_token) {
    size_t n = strlen(bearer_token) + 8;
    auth = ana_arena_alloc(a, n);
    if (!auth)
      return ANA_ERR_NOMEM;
    snprintf(auth, n, "Bearer %s", bearer_token);
  }
  md_add(&md, "authorization", auth);
  if (conn->request_id[0])
    md_add(&md, "x-request-id", ana_arena_strdup(a, conn->request_id));
  for (size_t i = 0; i < sizeof grpc_metadata_names / sizeof grpc_metadata_names[0]; i++) {
    char name[96];
    const char *key = grpc_metadata_names[i];
    if (strcmp(key, "x-request-id") == 0 && conn->request_id[0])
      continue;
    char *value = NULL;
    if (is_plain(key)) {
      snprintf(name, sizeof name, "%s:", key);
      value = custom_header(wsi, a, name);
    }
    if (!value) {
      snprintf(name, sizeof name, "grpc-metadata-%s:", key);
      value = custom_header(wsi, a, name);
    }
    md_add(&md, key, value);
  }

  call->peer = peer_of(wsi, a, ip, sizeof ip);
  char *xff = header(wsi, a, WSI_TOKEN_X_FORWARDED_FOR);
  if (ip[0]) {
    size_t n = (xff ? strlen(xff) + 2 : 0) + strlen(ip) + 1;
    char *v = ana_arena_alloc(a, n);
    if (!v)
      return ANA_ERR_NOMEM;
    snprintf(v, n, "%s%s%s", xff ? xff : "", xff ? ", " : "", ip);
    xff = v;
  }
  md_add(&md, "x-forwarded-for", xff);
  md_add(&md, "x-forwarded-host", header(wsi, a, WSI_TOKEN_HOST));
  /* The client's User-Agent and language: TrackEvent(s) fill an event's
   * context.userAgent / locale with them when it has none. */
  md_add(&md, "x-client-user-agent", client_text(header(wsi, a, WSI_TOKEN_HTTP_USER_AGENT)));
  md_add(&md, "x-client-locale", first_language(header(wsi, a, WSI_TOKEN_HTTP_ACCEPT_LANGUAGE)));

  call->metadata = ana_arena_calloc(a, md.n ? md.n : 1, sizeof *call->metadata);
  if (!call->metadata)
    return ANA_ERR_NOMEM;
  memcpy(call->metadata, md.e, md.n * sizeof md.e[0]);
  call->n_metadata = md.n;

  const char *timeout = custom_header(wsi, a, "grpc-timeout:");
  if (timeout) {
    int64_t ms = parse_grpc_timeout(timeout);
    if (ms < 0)
      return ana_error_set(st, ANA_STATUS_INVALID_ARGUMENT, "invalid Grpc-Timeout \"%.32s\"",
                           timeout);
    call->deadline_mono_ms = ana_call_now_mono_ms() + ms;
  }
  return 0;
}

/* Records the codec's error as a field violation and an INVALID_ARGUMENT
 * status. The codec's message is "<path>: <reason>" (or "<reason>"). */
static int violation(struct ana_call *call, struct ana_error *st, const char *path,
                     const struct ana_error *err) {
  const char *reason = err->message;
  size_t pl = path ? strlen(path) : 0;
  if (pl && strncmp(reason, path, pl) == 0 && strncmp(reason + pl, ": ", 2) == 0)
    reason += pl + 2;
  if (path && path[0])
    ana_call_add_violation(call, path, reason);
  ana_error_set(st, err->code == ANA_STATUS_OK ? ANA_STATUS_INVALID_ARGUMENT : err->code, "%s",
                err->message);
  return ANA_ERR_INVALID;
}

static bool is_unknown_field(const struct ana_error *err) {
  size_t n = strlen(err->message), s = strlen("unknown field");
  return n >= s && strcmp(err->message + n - s, "unknown field") == 0;
}

/* key is bound by the body field or a path variable. */
static bool bound_elsewhere(const char *key, const struct ana_route *r, const struct rb_match *m) {
  size_t bl = strlen(r->body);
  if (bl && strncmp(key, r->body, bl) == 0 && (key[bl] == '\0' || key[bl] == '.'))
    return true;
  for (size_t i = 0; i < m->n_vars; i++)
    if (strcmp(key, m->vars[i].field) == 0)
      return true;
  return false;
}

static int apply_query(struct ana_call *call, const struct ana_route *r, const struct rb_match *m,
                       const struct rb_query_param *query, size_t n_query, ProtobufCMessage *msg,
                       const struct rb_build_options *bo, struct ana_error *st) {
  struct ana_arena *a = &call->arena;
  for (size_t i = 0; i < n_query; i++) {
    const char *key = query[i].key, *value = query[i].value ? query[i].value : "";
    if (!key || !key[0])
      continue;
    if (r->body[0] == '*' || bound_elsewhere(key, r, m)) {
      if (bo->ignore_unknown_query_params)
        continue;
      ana_call_add_violation(call, key,
                             "bound by the request body or path; not accepted "
                             "as a query parameter");
      return ana_error_set(st, ANA_STATUS_INVALID_ARGUMENT,
                           "query parameter \"%s\" is not accepted on %s %s", key, r->verb,
                           r->pattern);
    }
    struct ana_error err;
    ana_error_clear(&err);
    int rc = ana_json_set_field(msg, key, value, a, &err);
    if (rc == ANA_ERR_NOMEM)
      return rc;
    if (rc < 0) {
      if (is_unknown_field(&err)) {
        if (bo->ignore_unknown_query_params)
          continue;
        ana_call_add_violation(call, key, "unknown query parameter");
        return ana_error_set(st, ANA_STATUS_INVALID_ARGUMENT, "unknown query parameter \"%s\"",
                             key);
      }
      return violation(call, st, key, &err);
    }
  }
  return 0;
}

int rb_request_build(struct ana_call *call, const struct ana_route *r, const struct rb_match *m,
                     const struct rb_query_param *query, size_t n_query, const char *body,
                     size_t body_len, const struct rb_build_options *bo, ProtobufCMessage **out,
                     struct ana_error *st) {
  struct ana_arena *a = &call->arena;
  const ProtobufCMessageDescriptor *desc = call->method->input;
  struct ana_json_options jo = {.ignore_unknown = bo->ignore_unknown_fields};
  if (bo->parallel_pool) {
    jo.parallel = rb_decode_pool_parallel;
    jo.runner = bo->parallel_pool;
  }
  struct ana_error err;
  char path[256];
  ProtobufCMessage *msg = NULL;
  ana_error_clear(&err);
  *out = NULL;

  if (r->body[0] == '*' && body_len > 0) {
    msg = ana_json_decode(desc, body, body_len, a, &jo, &err, path, sizeof path);
    if (!msg)
      return violation(call, st, path, &err);
  } else {
    msg = ana_arena_alloc(a, desc->sizeof_message);
    if (!msg)
      return ANA_ERR_NOMEM;
    desc->message_init(msg);
  }
  if (r->body[0] && r->body[0] != '*' && body_len > 0) {
    json_error_t jerr;
    json_t *v = json_loadb(body, body_len, JSON_DECODE_ANY, &jerr);
    if (!v)
      return ana_error_set(st, ANA_STATUS_INVALID_ARGUMENT,
                           "invalid JSON body: %s (line %d, "
                           "column %d)",
                           jerr.text, jerr.line, jerr.column);
    json_t *wrap = json_object();
    int rc = wrap ? json_object_set(wrap, r->body, v) : -1;
    json_decref(v);
    if (rc < 0) {
      json_decref(wrap);
      return ANA_ERR_NOMEM;
    }
    rc = ana_json_decode_value(msg, wrap, a, &jo, &err, path, sizeof path);
    json_decref(wrap);
    if (rc == ANA_ERR_NOMEM)
      return rc;
    if (rc < 0)
      return violation(call, st, path, &err);
  }
  int rc = apply_query(call, r, m, query, n_query, msg, bo, st);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < m->n_vars; i++) {
    ana_error_clear(&err);
    rc = ana_json_set_field(msg, m->vars[i].field, m->vars[i].value, a, &err);
    if (rc == ANA_ERR_NOMEM)
      return rc;
    if (rc < 0)
      return violation(call, st, m->vars[i].field, &err);
  }
  *out = msg;
  return 0;
}

/* The query parameters of the request (lws has percent-decoded them), in
 * the call's arena. */
static int read_query(struct lws *wsi, struct ana_arena *a, bool drop_access_token,
                      struct rb_query_param **out, size_t *n_out) {
  size_t n = 0, cap = 0;
  struct rb_query_param *q = NULL;
  *out = NULL;
  *n_out = 0;
  for (int i = 0;; i++) {
    int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (len <= 0) {
      if (lws_hdr_copy_fragment(wsi, (char[1]){0}, 1, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
        break;
      continue; /* an empty fragment ("a=1&&b=2") */
    }
    char *frag = ana_arena_alloc(a, (size_t)len + 1);
    if (!frag)
      return ANA_ERR_NOMEM;
    if (lws_hdr_copy_fragment(wsi, frag, len + 1, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
      break;
    /* lws 4.1 fills an empty last segment ("?a&", "?&&&") with "/" (its
     * stand-in for an empty URI): an empty segment, skipped like the rest.
     * No field path starts with "/", so nothing real is lost. */
    if (i > 0 && strcmp(frag, "/") == 0 &&
        lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i + 1) <= 0 &&
        lws_hdr_copy_fragment(wsi, (char[1]){0}, 1, WSI_TOKEN_HTTP_URI_ARGS, i + 1) < 0)
      break;
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct rb_query_param *nq = ana_arena_alloc(a, ncap * sizeof *nq);
      if (!nq)
        return ANA_ERR_NOMEM;
      if (n)
        memcpy(nq, q, n * sizeof *nq);
      q = nq;
      cap = ncap;
    }
    char *eq = strchr(frag, '=');
    q[n].key = frag;
    q[n].value = "";
    if (eq) {
      *eq = '\0';
      q[n].value = eq + 1;
    }
    if (drop_access_token && strcmp(frag, QUERY_TOKEN) == 0)
      continue; /* the credential, taken by capture_headers */
    n++;
  }
  *out = q;
  *n_out = n;
  return 0;
}

int rb_request_admit_plain(struct lws *wsi, struct ana_error *st) {
  struct ana_arena arena;
  char ip[INET6_ADDRSTRLEN];
  ana_arena_init(&arena, 1024, 0);
  struct ana_metadata_entry md[1];
  size_t n = 0;
  char *auth = header(wsi, &arena, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (auth)
    md[n++] = (struct ana_metadata_entry){"authorization", auth, strlen(auth)};
  const char *peer = peer_of(wsi, &arena, ip, sizeof ip);
  struct ana_admission_input in = {
      .metadata = md,
      .n_metadata = n,
      .peer = peer,
      .peer_is_loopback = ana_auth_peer_is_loopback(peer),
  };
  struct ana_principal p;
  int rc = ana_admission_run(&in, &arena, &p, st);
  ana_arena_fini(&arena);
  return rc;
}

/* The request message from body, query and path. A body over
 * RB_DECODE_INLINE_MAX (conn's own) goes to the decode pool instead: then
 * *deferred is set and the pool starts the call once it is decoded. */
static int build_request(struct rb_call *c, struct lws *wsi, struct rb_conn *conn,
                         const struct rb_match *m, const char *body, size_t body_len,
                         ProtobufCMessage **out, bool *deferred, struct ana_error *st) {
  struct rb_query_param *query = NULL;
  size_t n_query = 0;
  struct rb_build_options bo = {
      .ignore_unknown_fields = c->bridge->opt.ignore_unknown_fields,
      .ignore_unknown_query_params = c->bridge->opt.ignore_unknown_query_params,
  };
  int rc = read_query(wsi, &c->base.arena, c->bridge->opt.allow_query_token, &query, &n_query);
  if (rc < 0)
    return rc;
  if (c->bridge->decode && body_len > RB_DECODE_INLINE_MAX && body == conn->body &&
      rb_decode_pool_submit(c->bridge->decode, c, conn, m, query, n_query, &bo) == 0) {
    *deferred = true;
    return 0;
  }
  return rb_request_build(&c->base, c->route, m, query, n_query, body, body_len, &bo, out, st);
}

struct rb_call *rb_request_start(struct ana_restbridge *b, struct lws *wsi, struct rb_conn *conn,
                                 const struct ana_route *route, const char *path, const char *body,
                                 size_t body_len, bool websocket, const char *bearer_token,
                                 struct ana_error *early) {
  struct ana_error st;
  struct rb_match match;
  const struct rb_match *m = &match;
  ProtobufCMessage *req = NULL;
  struct rb_call *c = rb_call_create(b, route, wsi, conn, websocket);
  if (!c) {
    ana_error_set(early, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  rb_conn_attach(conn, c);
  ana_error_clear(&st);
  int rc = rb_route_match(path, route->verb, websocket, &c->base.arena, &match);
  if (rc == 0 && match.route != route)
    rc = ANA_ERR_INTERNAL;
  if (rc < 0)
    rc = ana_error_set(&st, ANA_STATUS_INTERNAL, "route of %s changed", path);
  if (rc == 0)
    rc = capture_headers(c, wsi, conn, bearer_token, &st);
  if (rc == 0) {
    const struct ana_restbridge_upstream *up = b->opt.upstream;
    rc = up ? up->admit(up->ctx, &c->base, &st) : ana_call_admit(&c->base, &st);
  }
  if (rc == 0) {
    enum ana_method_kind k = c->base.method->kind;
    if (k != ANA_METHOD_UNARY && k != ANA_METHOD_SERVER_STREAMING)
      rc = ana_error_set(&st, ANA_STATUS_UNIMPLEMENTED, "%s is not available over REST",
                         c->base.method->path);
  }
  bool deferred = false;
  if (rc == 0)
    rc = build_request(c, wsi, conn, m, body, body_len, &req, &deferred, &st);
  if (rc == 0 && deferred)
    return c; /* decoded on the pool, started from the lws thread after */
  if (rc == ANA_ERR_NOMEM)
    ana_error_set(&st, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (rc == 0 && route->download && rb_download_fill_request(c, conn, req) < 0)
    rc = ana_error_set(&st, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (rc < 0) {
    ana_call_finish(&c->base, NULL, &st);
    return c;
  }
  c->base.request = req;
  c->base.handler->on_request(&c->base, req);
  return c;
}
