/* Fuzzes the REST bridge's routing and request assembly without a socket:
 * route matching (templates, variables, method/kind checks) and building
 * the request message from the JSON body, the query parameters and the
 * path variables (rb_request_build), as the bridge does for each request.
 * Input: "METHOD PATH[?QUERY]\n" then the body. Whatever builds must
 * encode as JSON. */
#include "restbridge_internal.h"

#include "ana_json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int t_send(struct ana_call *c, const ProtobufCMessage *m) {
  (void)c;
  (void)m;
  return ANA_ERR_CLOSED;
}
static size_t t_queue(struct ana_call *c) {
  (void)c;
  return 0;
}
static void t_finish(struct ana_call *c, const ProtobufCMessage *r, const struct ana_error *s) {
  (void)c;
  (void)r;
  (void)s;
}
static const struct ana_call_transport fuzz_transport = {
    .send = t_send, .send_queue_length = t_queue, .finish = t_finish, .name = "fuzz"};

static int hex(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decodes in place, as lws does for the path and query. */
static void url_decode(char *s) {
  char *o = s;
  for (char *p = s; *p; p++) {
    if (*p == '%' && hex(p[1]) >= 0 && hex(p[2]) >= 0) {
      *o++ = (char)(hex(p[1]) * 16 + hex(p[2]));
      p += 2;
    } else {
      *o++ = *p == '+' ? ' ' : *p;
    }
  }
  *o = '\0';
}

static void assemble(const struct ana_route *route, const char *path, char *query, const char *body,
                     size_t body_len, bool flip) {
  struct ana_call call;
  ana_call_init(&call, &fuzz_transport, &ana_methods[route->method]);
  struct rb_match m;
  if (rb_route_match(path, route->verb, route->websocket, &call.arena, &m) < 0 || m.route != route)
    abort(); /* a route that matched once must match again, the same way */
  struct rb_query_param q[64];
  size_t nq = 0;
  for (char *save = NULL, *kv = query ? strtok_r(query, "&", &save) : NULL; kv && nq < 64;
       kv = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(kv, '=');
    q[nq].key = kv;
    q[nq].value = "";
    if (eq) {
      *eq = '\0';
      q[nq].value = eq + 1;
      url_decode(eq + 1);
    }
    url_decode(kv);
    nq++;
  }
  struct rb_build_options bo = {.ignore_unknown_fields = flip, .ignore_unknown_query_params = flip};
  ProtobufCMessage *msg = NULL;
  struct ana_error st;
  ana_error_clear(&st);
  int rc = rb_request_build(&call, route, &m, q, nq, body, body_len, &bo, &msg, &st);
  if (rc == 0) {
    if (!msg)
      abort();
    struct ana_json_buf b;
    ana_json_buf_init(&b, LWS_PRE);
    int erc = ana_json_encode(&b, msg, NULL);
    if (erc == ANA_ERR_NOMEM)
      abort();
    ana_json_buf_fini(&b);
  } else if (rc != ANA_ERR_NOMEM && st.code == ANA_STATUS_OK) {
    abort(); /* every refusal carries a status for the client */
  }
  ana_call_fini(&call);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nl = memchr(data, '\n', size);
  size_t line_len = nl ? (size_t)(nl - data) : size;
  if (line_len > 4096)
    return 0;
  char *line = malloc(line_len + 1);
  if (!line)
    return 0;
  memcpy(line, data, line_len);
  line[line_len] = '\0';
  const char *body = nl ? (const char *)nl + 1 : "";
  size_t body_len = nl ? size - line_len - 1 : 0;

  char root[2] = "/";
  char *sp = strchr(line, ' ');
  char *method = line, *path = sp ? sp + 1 : root;
  if (sp)
    *sp = '\0';
  char *query = strchr(path, '?');
  if (query)
    *query++ = '\0';
  url_decode(path);

  struct ana_arena arena;
  ana_arena_init(&arena, 4096, 0);
  for (int ws = 0; ws < 2; ws++) {
    struct rb_match m;
    int rc = rb_route_match(path, method, ws == 1, &arena, &m);
    if ((rc == 0) != (m.route != NULL))
      abort();
    if (m.route && (strcmp(m.route->verb, method) != 0 || m.route->websocket != (ws == 1)))
      abort();
    if (m.route) {
      char *qcopy = query ? strdup(query) : NULL;
      assemble(m.route, path, qcopy, body, body_len, body_len % 2 == 1);
      free(qcopy);
    }
  }
  /* The preflight path: no arena, only what is known of the path. */
  struct rb_match pm;
  rb_route_match(path, "OPTIONS", false, NULL, &pm);
  ana_arena_fini(&arena);
  free(line);
  return 0;
}
