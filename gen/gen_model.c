/* Builds the generator's model (methods, routes, messages) from protoc's
 * request, validating annotations and route templates on the way. */
#include "gen_model.h"

#include "analytics/v1/options.pb-c.h"
#include "gen_buf.h"
#include "google/api/http.pb-c.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Field numbers of the method options we read. They arrive as unknown fields
 * because protoc-c generates no extension code. */
#define HTTP_OPTION_NUMBER 72295728u
#define POLICY_OPTION_NUMBER 51001u

static int fail(struct gen_model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct gen_model *m, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m->error, sizeof m->error, fmt, ap);
  va_end(ap);
  return -1;
}

/* protoc-c's CamelToLower: an underscore before an upper-case letter that
 * follows a non-upper-case one. */
static void camel_to_lower(struct gen_buf *b, const char *s) {
  int was_upper = 1;
  for (; *s; s++) {
    if (isupper((unsigned char)*s)) {
      if (!was_upper)
        gen_append(b, "_", 1);
      char c = (char)tolower((unsigned char)*s);
      gen_append(b, &c, 1);
      was_upper = 1;
    } else {
      gen_append(b, s, 1);
      was_upper = 0;
    }
  }
}

static const char *skip_dot(const char *s) {
  return s[0] == '.' ? s + 1 : s;
}

char *gen_c_lower_name(const char *full_name) {
  struct gen_buf b = {0};
  char *copy = gen_strdup(skip_dot(full_name));
  int first = 1;
  for (char *save = NULL, *piece = strtok_r(copy, ".", &save); piece;
       piece = strtok_r(NULL, ".", &save)) {
    if (!first)
      gen_append(&b, "__", 2);
    camel_to_lower(&b, piece);
    first = 0;
  }
  free(copy);
  return gen_take(&b);
}

char *gen_c_type_name(const char *full_name) {
  struct gen_buf b = {0};
  char *copy = gen_strdup(skip_dot(full_name));
  int first = 1;
  for (char *save = NULL, *piece = strtok_r(copy, ".", &save); piece;
       piece = strtok_r(NULL, ".", &save)) {
    if (!first)
      gen_append(&b, "__", 2);
    char c = (char)toupper((unsigned char)piece[0]);
    gen_append(&b, &c, 1);
    gen_append(&b, piece + 1, strlen(piece + 1));
    first = 0;
  }
  free(copy);
  return gen_take(&b);
}

char *gen_upper_snake(const char *full_name) {
  char *lower = gen_c_lower_name(full_name);
  struct gen_buf b = {0};
  for (char *p = lower; *p; p++) {
    if (p[0] == '_' && p[1] == '_')
      continue; /* "__" between pieces becomes a single "_" */
    char c = (char)toupper((unsigned char)*p);
    gen_append(&b, &c, 1);
  }
  free(lower);
  return gen_take(&b);
}

static void add_message(struct gen_model *m, size_t *cap, const char *prefix,
                        const Google__Protobuf__DescriptorProto *d) {
  if (m->n_messages == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    m->messages = realloc(m->messages, *cap * sizeof *m->messages);
    if (!m->messages) {
      fputs("protoc-gen-ana: out of memory\n", stderr);
      exit(1);
    }
  }
  struct gen_message *msg = &m->messages[m->n_messages++];
  msg->full_name = prefix[0] ? gen_asprintf("%s.%s", prefix, d->name) : gen_strdup(d->name);
  msg->proto = d;
  msg->c_type = gen_c_type_name(msg->full_name);
  char *lower = gen_c_lower_name(msg->full_name);
  msg->desc = gen_asprintf("%s__descriptor", lower);
  free(lower);
  char *nested_prefix = gen_strdup(msg->full_name);
  for (size_t i = 0; i < d->n_nested_type; i++)
    add_message(m, cap, nested_prefix, d->nested_type[i]);
  free(nested_prefix);
}

const struct gen_message *gen_model_message(const struct gen_model *m, const char *full_name) {
  const char *name = skip_dot(full_name);
  for (size_t i = 0; i < m->n_messages; i++)
    if (strcmp(m->messages[i].full_name, name) == 0)
      return &m->messages[i];
  return NULL;
}

static bool is_generated(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                         const char *file) {
  for (size_t i = 0; i < req->n_file_to_generate; i++)
    if (strcmp(req->file_to_generate[i], file) == 0)
      return true;
  return false;
}

/* The payload of a length-delimited unknown field, without its length prefix. */
static const uint8_t *unknown_payload(const ProtobufCMessageUnknownField *u, size_t *len) {
  size_t i = 0;
  uint64_t n = 0;
  for (int shift = 0; i < u->len && shift < 64; shift += 7) {
    uint8_t byte = u->data[i++];
    n |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80))
      break;
  }
  if (n > u->len - i)
    return NULL;
  *len = (size_t)n;
  return u->data + i;
}

static const ProtobufCMessageUnknownField *find_option(const ProtobufCMessage *opts,
                                                       uint32_t number) {
  if (!opts)
    return NULL;
  for (unsigned i = 0; i < opts->n_unknown_fields; i++)
    if (opts->unknown_fields[i].tag == number &&
        opts->unknown_fields[i].wire_type == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
      return &opts->unknown_fields[i];
  return NULL;
}

static const Google__Protobuf__FieldDescriptorProto *
find_field(const Google__Protobuf__DescriptorProto *d, const char *name) {
  for (size_t i = 0; i < d->n_field; i++)
    if (strcmp(d->field[i]->name, name) == 0)
      return d->field[i];
  return NULL;
}

/* Checks a route template and that its variables name scalar fields of the
 * request message. */
static int check_template(struct gen_model *m, const struct gen_method *method,
                          const char *pattern) {
  const struct gen_message *in = gen_model_message(m, method->input_full);
  if (pattern[0] != '/')
    return fail(m, "%s: route \"%s\" must start with '/'", method->path, pattern);
  for (const char *p = pattern; *p; p++) {
    if (*p != '{')
      continue;
    const char *end = strchr(p, '}');
    if (!end)
      return fail(m, "%s: route \"%s\" has an unclosed '{'", method->path, pattern);
    char var[128];
    size_t n = (size_t)(end - p - 1);
    const char *eq = memchr(p + 1, '=', n);
    if (eq)
      n = (size_t)(eq - p - 1);
    if (n == 0 || n >= sizeof var)
      return fail(m, "%s: route \"%s\" has a bad variable", method->path, pattern);
    memcpy(var, p + 1, n);
    var[n] = '\0';
    const Google__Protobuf__FieldDescriptorProto *f = in ? find_field(in->proto, var) : NULL;
    if (!f)
      return fail(m, "%s: route variable {%s} is not a field of %s", method->path, var,
                  skip_dot(method->input_full));
    if (f->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED ||
        f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE)
      return fail(m, "%s: route variable {%s} must be a non-repeated scalar", method->path, var);
    p = end;
  }
  return 0;
}

static int add_route(struct gen_model *m, size_t method_index, const char *verb,
                     const char *pattern, const char *body, const char *response_body) {
  const struct gen_method *method = &m->methods[method_index];
  if (check_template(m, method, pattern) < 0)
    return -1;
  const struct gen_message *in = gen_model_message(m, method->input_full);
  if (body[0] && strcmp(body, "*") != 0 && !find_field(in->proto, body))
    return fail(m, "%s: body \"%s\" is not a field of %s", method->path, body, in->full_name);
  if (body[0] && (strcmp(verb, "GET") == 0 || strcmp(verb, "DELETE") == 0))
    return fail(m, "%s: %s routes take no body", method->path, verb);
  if (response_body[0]) {
    const struct gen_message *out = gen_model_message(m, method->output_full);
    if (!find_field(out->proto, response_body))
      return fail(m, "%s: response_body \"%s\" is not a field of %s", method->path, response_body,
                  out->full_name);
  }
  m->routes = realloc(m->routes, (m->n_routes + 1) * sizeof *m->routes);
  if (!m->routes)
    return fail(m, "out of memory");
  m->routes[m->n_routes++] = (struct gen_route){.verb = verb,
                                                .pattern = pattern,
                                                .body = body,
                                                .response_body = response_body,
                                                .method = method_index};
  return 0;
}

static int read_http_rule(struct gen_model *m, size_t method_index,
                          const Google__Api__HttpRule *rule, bool nested) {
  const char *verb = NULL, *pattern = NULL;
  switch (rule->pattern_case) {
  case GOOGLE__API__HTTP_RULE__PATTERN_GET:
    verb = "GET";
    pattern = rule->get;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_PUT:
    verb = "PUT";
    pattern = rule->put;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_POST:
    verb = "POST";
    pattern = rule->post;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_DELETE:
    verb = "DELETE";
    pattern = rule->delete_;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_PATCH:
    verb = "PATCH";
    pattern = rule->patch;
    break;
  default:
    return fail(m, "%s: only get/put/post/delete/patch routes are supported",
                m->methods[method_index].path);
  }
  if (add_route(m, method_index, verb, pattern, rule->body ? rule->body : "",
                rule->response_body ? rule->response_body : "") < 0)
    return -1;
  if (nested && rule->n_additional_bindings)
    return fail(m, "%s: additional_bindings may not nest", m->methods[method_index].path);
  for (size_t i = 0; i < rule->n_additional_bindings; i++)
    if (read_http_rule(m, method_index, rule->additional_bindings[i], true) < 0)
      return -1;
  return 0;
}

static int add_method(struct gen_model *m, size_t *cap, const char *package,
                      const Google__Protobuf__ServiceDescriptorProto *svc,
                      const Google__Protobuf__MethodDescriptorProto *md) {
  if (m->n_methods == *cap) {
    *cap = *cap ? *cap * 2 : 32;
    m->methods = realloc(m->methods, *cap * sizeof *m->methods);
    if (!m->methods)
      return fail(m, "out of memory");
  }
  size_t index = m->n_methods++;
  struct gen_method *x = &m->methods[index];
  memset(x, 0, sizeof *x);
  x->full_service = package[0] ? gen_asprintf("%s.%s", package, svc->name) : gen_strdup(svc->name);
  x->service_short = svc->name;
  x->name = md->name;
  x->path = gen_asprintf("/%s/%s", x->full_service, md->name);
  char *qualified = gen_asprintf("%s.%s", x->full_service, md->name);
  char *upper = gen_upper_snake(qualified);
  x->enum_name = gen_asprintf("ANA_METHOD_%s", upper);
  free(upper);
  free(qualified);
  char *svc_lower = gen_c_lower_name(svc->name), *method_lower = gen_c_lower_name(md->name);
  if (strcmp(package, "analytics.v1") == 0) {
    x->stub_name = gen_asprintf("ana_stub_%s_%s", svc_lower, method_lower);
  } else {
    char *pkg = gen_c_lower_name(package);
    for (char *p = pkg; *p; p++)
      if (*p == '.')
        *p = '_';
    x->stub_name = gen_asprintf("ana_stub_%s__%s_%s", pkg, svc_lower, method_lower);
    free(pkg);
  }
  free(svc_lower);
  free(method_lower);

  bool cs = md->has_client_streaming && md->client_streaming;
  bool ss = md->has_server_streaming && md->server_streaming;
  x->kind = cs ? (ss ? GEN_BIDI_STREAMING : GEN_CLIENT_STREAMING)
               : (ss ? GEN_SERVER_STREAMING : GEN_UNARY);
  x->input_full = md->input_type;
  x->output_full = md->output_type;
  x->download = x->kind == GEN_SERVER_STREAMING && strcmp(md->output_type, GEN_FILE_CHUNK) == 0;
  const struct gen_message *in = gen_model_message(m, md->input_type);
  const struct gen_message *out = gen_model_message(m, md->output_type);
  if (!in || !out)
    return fail(m, "%s: unknown request or response type", x->path);
  x->input_c_type = in->c_type;
  x->output_c_type = out->c_type;
  x->input_desc = in->desc;
  x->output_desc = out->desc;
  x->permission = gen_strdup("");
  x->feature = gen_strdup("");

  const ProtobufCMessage *opts = md->options ? &md->options->base : NULL;
  size_t len;
  const uint8_t *data;
  const ProtobufCMessageUnknownField *u = find_option(opts, POLICY_OPTION_NUMBER);
  if (u) {
    if (!(data = unknown_payload(u, &len)))
      return fail(m, "%s: malformed policy option", x->path);
    Analytics__V1__MethodPolicy *pol = analytics__v1__method_policy__unpack(NULL, len, data);
    if (!pol)
      return fail(m, "%s: malformed policy option", x->path);
    free(x->permission);
    free(x->feature);
    x->permission = gen_strdup(pol->permission);
    x->feature = gen_strdup(pol->feature);
    x->audited = pol->audited;
    x->rate_cost = pol->rate_cost ? pol->rate_cost : 1;
    analytics__v1__method_policy__free_unpacked(pol, NULL);
  } else {
    x->rate_cost = 1;
  }
  u = find_option(opts, HTTP_OPTION_NUMBER);
  if (u) {
    if (!(data = unknown_payload(u, &len)))
      return fail(m, "%s: malformed google.api.http option", x->path);
    /* Kept for the generator's lifetime: routes point into it. */
    Google__Api__HttpRule *rule = google__api__http_rule__unpack(NULL, len, data);
    if (!rule)
      return fail(m, "%s: malformed google.api.http option", x->path);
    if (read_http_rule(m, index, rule, false) < 0)
      return -1;
    if (ss && cs)
      return fail(m, "%s: bidirectional streams have no REST mapping", x->path);
  }
  return 0;
}

/* Splits a template into segments for comparison: literals as themselves,
 * variables as NULL. Returns the count (at most max). */
static size_t segments(const char *pattern, const char *seg[], size_t lens[], size_t max) {
  size_t n = 0;
  const char *p = pattern;
  while (*p == '/' && n < max) {
    p++;
    const char *end = p;
    if (*p == '{') {
      end = strchr(p, '}');
      end = end ? end + 1 : p + strlen(p);
      seg[n] = NULL;
    } else {
      while (*end && *end != '/')
        end++;
      seg[n] = p;
    }
    lens[n++] = (size_t)(end - p);
    p = end;
  }
  return n;
}

static int compare_patterns(const char *a, const char *b) {
  const char *sa[32], *sb[32];
  size_t la[32], lb[32];
  size_t na = segments(a, sa, la, 32), nb = segments(b, sb, lb, 32);
  for (size_t i = 0; i < na && i < nb; i++) {
    if (sa[i] && sb[i]) {
      size_t n = la[i] < lb[i] ? la[i] : lb[i];
      int c = memcmp(sa[i], sb[i], n);
      if (c)
        return c;
      if (la[i] != lb[i])
        return la[i] < lb[i] ? -1 : 1;
    } else if (sa[i] && !sb[i]) {
      return -1; /* literal before variable */
    } else if (!sa[i] && sb[i]) {
      return 1;
    }
  }
  return na == nb ? 0 : (na < nb ? -1 : 1);
}

static int compare_routes(const void *pa, const void *pb) {
  const struct gen_route *a = pa, *b = pb;
  int c = compare_patterns(a->pattern, b->pattern);
  return c ? c : strcmp(a->verb, b->verb);
}

int gen_model_build(struct gen_model *m,
                    const Google__Protobuf__Compiler__CodeGeneratorRequest *req) {
  memset(m, 0, sizeof *m);
  m->request = req;
  size_t msg_cap = 0, method_cap = 0;
  for (size_t f = 0; f < req->n_proto_file; f++) {
    const Google__Protobuf__FileDescriptorProto *file = req->proto_file[f];
    const char *package = file->package ? file->package : "";
    for (size_t i = 0; i < file->n_message_type; i++)
      add_message(m, &msg_cap, package, file->message_type[i]);
  }
  for (size_t f = 0; f < req->n_proto_file; f++) {
    const Google__Protobuf__FileDescriptorProto *file = req->proto_file[f];
    if (!is_generated(req, file->name))
      continue;
    const char *package = file->package ? file->package : "";
    for (size_t s = 0; s < file->n_service; s++)
      for (size_t i = 0; i < file->service[s]->n_method; i++)
        if (add_method(m, &method_cap, package, file->service[s], file->service[s]->method[i]) < 0)
          return -1;
  }
  qsort(m->routes, m->n_routes, sizeof *m->routes, compare_routes);
  /* Two routes that match the same requests make routing depend on order:
   * refuse them, as the bridge could not tell which one the author meant. */
  for (size_t i = 0; i + 1 < m->n_routes; i++) {
    const struct gen_route *a = &m->routes[i], *b = &m->routes[i + 1];
    if (compare_patterns(a->pattern, b->pattern) == 0 && strcmp(a->verb, b->verb) == 0)
      return fail(m, "ambiguous routes: %s %s (%s) and %s %s (%s)", a->verb, a->pattern,
                  m->methods[a->method].path, b->verb, b->pattern, m->methods[b->method].path);
  }
  return 0;
}
