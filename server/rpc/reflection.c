/* Server reflection (grpc.reflection.v1 and v1alpha, wire-identical): lists
 * services and returns file descriptors, with their transitive imports, from
 * the descriptor set embedded at build time. */
#include "ana_builtin_services.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_call.h"
#include "ana_log.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct symbol {
  char *name;  /* full name without a leading dot */
  size_t file; /* index into files */
};

struct extension {
  char *extendee; /* full name without a leading dot */
  int32_t number;
  size_t file;
};

static Google__Protobuf__FileDescriptorSet *set;
static struct symbol *symbols;
static size_t n_symbols, cap_symbols;
static struct extension *extensions;
static size_t n_extensions, cap_extensions;

static const char *undot(const char *s) {
  return s && s[0] == '.' ? s + 1 : s;
}

static char *qualify(const char *scope, const char *name) {
  size_t n = strlen(scope) + strlen(name) + 2;
  char *s = ana_malloc(n);
  if (s)
    snprintf(s, n, "%s%s%s", scope, scope[0] ? "." : "", name);
  return s;
}

static int add_symbol(char *name, size_t file) {
  if (!name)
    return ANA_ERR_NOMEM;
  if (n_symbols == cap_symbols) {
    size_t cap = cap_symbols ? cap_symbols * 2 : 256;
    struct symbol *s = ana_realloc(symbols, cap * sizeof *s);
    if (!s) {
      ana_free(name);
      return ANA_ERR_NOMEM;
    }
    symbols = s;
    cap_symbols = cap;
  }
  symbols[n_symbols++] = (struct symbol){name, file};
  return 0;
}

static int add_extensions(Google__Protobuf__FieldDescriptorProto **ext, size_t n, const char *scope,
                          size_t file) {
  for (size_t i = 0; i < n; i++) {
    if (n_extensions == cap_extensions) {
      size_t cap = cap_extensions ? cap_extensions * 2 : 16;
      struct extension *e = ana_realloc(extensions, cap * sizeof *e);
      if (!e)
        return ANA_ERR_NOMEM;
      extensions = e;
      cap_extensions = cap;
    }
    char *extendee = ana_strdup(undot(ext[i]->extendee));
    if (!extendee)
      return ANA_ERR_NOMEM;
    extensions[n_extensions++] = (struct extension){extendee, ext[i]->number, file};
    if (add_symbol(qualify(scope, ext[i]->name), file) < 0)
      return ANA_ERR_NOMEM;
  }
  return 0;
}

static int index_enum(const Google__Protobuf__EnumDescriptorProto *e, const char *scope,
                      size_t file) {
  return add_symbol(qualify(scope, e->name), file);
}

static int index_message(const Google__Protobuf__DescriptorProto *m, const char *scope,
                         size_t file) {
  char *name = qualify(scope, m->name);
  if (!name || add_symbol(name, file) < 0)
    return ANA_ERR_NOMEM;
  for (size_t i = 0; i < m->n_nested_type; i++)
    if (index_message(m->nested_type[i], name, file) < 0)
      return ANA_ERR_NOMEM;
  for (size_t i = 0; i < m->n_enum_type; i++)
    if (index_enum(m->enum_type[i], name, file) < 0)
      return ANA_ERR_NOMEM;
  return add_extensions(m->extension, m->n_extension, name, file);
}

static int build_index(void) {
  for (size_t f = 0; f < set->n_file; f++) {
    const Google__Protobuf__FileDescriptorProto *fd = set->file[f];
    const char *pkg = fd->package ? fd->package : "";
    for (size_t i = 0; i < fd->n_message_type; i++)
      if (index_message(fd->message_type[i], pkg, f) < 0)
        return ANA_ERR_NOMEM;
    for (size_t i = 0; i < fd->n_enum_type; i++)
      if (index_enum(fd->enum_type[i], pkg, f) < 0)
        return ANA_ERR_NOMEM;
    for (size_t s = 0; s < fd->n_service; s++) {
      char *svc = qualify(pkg, fd->service[s]->name);
      if (!svc || add_symbol(svc, f) < 0)
        return ANA_ERR_NOMEM;
      for (size_t m = 0; m < fd->service[s]->n_method; m++)
        if (add_symbol(qualify(svc, fd->service[s]->method[m]->name), f) < 0)
          return ANA_ERR_NOMEM;
    }
    if (add_extensions(fd->extension, fd->n_extension, pkg, f) < 0)
      return ANA_ERR_NOMEM;
  }
  return 0;
}

static long file_by_name(const char *name) {
  for (size_t f = 0; f < set->n_file; f++)
    if (strcmp(set->file[f]->name, name) == 0)
      return (long)f;
  return -1;
}

static long file_by_symbol(const char *name) {
  for (size_t i = 0; i < n_symbols; i++)
    if (strcmp(symbols[i].name, name) == 0)
      return (long)symbols[i].file;
  return -1;
}

/* --- building answers --- */

struct answer {
  Grpc__Reflection__V1__ServerReflectionResponse resp;
  Grpc__Reflection__V1__FileDescriptorResponse files;
  Grpc__Reflection__V1__ListServiceResponse list;
  Grpc__Reflection__V1__ExtensionNumberResponse numbers;
  Grpc__Reflection__V1__ErrorResponse error;
  ProtobufCBinaryData *blobs;
  Grpc__Reflection__V1__ServiceResponse *services;
  Grpc__Reflection__V1__ServiceResponse **service_ptrs;
  int32_t *ext_numbers;
  bool *included;
};

static void answer_error(struct answer *a, enum ana_status code, const char *message) {
  grpc__reflection__v1__error_response__init(&a->error);
  a->error.error_code = (int32_t)code;
  a->error.error_message = (char *)message;
  a->resp.message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
  a->resp.error_response = &a->error;
}

/* Marks file and its transitive imports; returns how many were marked. */
static size_t include_file(bool *included, size_t f) {
  if (included[f])
    return 0;
  included[f] = true;
  size_t n = 1;
  for (size_t d = 0; d < set->file[f]->n_dependency; d++) {
    long dep = file_by_name(set->file[f]->dependency[d]);
    if (dep >= 0)
      n += include_file(included, (size_t)dep);
  }
  return n;
}

static void answer_files(struct answer *a, long file) {
  if (file < 0) {
    answer_error(a, ANA_STATUS_NOT_FOUND, "not found");
    return;
  }
  a->included = ana_calloc(set->n_file, sizeof *a->included);
  size_t n = a->included ? include_file(a->included, (size_t)file) : 0;
  a->blobs = ana_calloc(n ? n : 1, sizeof *a->blobs);
  if (!a->included || !a->blobs) {
    answer_error(a, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  /* The requested file first, then its imports. */
  size_t k = 0;
  long order_first = file;
  for (long pass = 0; pass < 2; pass++) {
    for (size_t f = 0; f < set->n_file; f++) {
      if (!a->included[f] || (pass == 0) != ((long)f == order_first))
        continue;
      size_t len = google__protobuf__file_descriptor_proto__get_packed_size(set->file[f]);
      a->blobs[k].data = ana_malloc(len ? len : 1);
      if (!a->blobs[k].data) {
        answer_error(a, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
      }
      a->blobs[k].len =
          google__protobuf__file_descriptor_proto__pack(set->file[f], a->blobs[k].data);
      k++;
    }
  }
  grpc__reflection__v1__file_descriptor_response__init(&a->files);
  a->files.n_file_descriptor_proto = k;
  a->files.file_descriptor_proto = a->blobs;
  a->resp.message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
  a->resp.file_descriptor_response = &a->files;
}

static void answer_list(struct answer *a) {
  a->services = ana_calloc(ANA_METHOD_COUNT, sizeof *a->services);
  a->service_ptrs = ana_calloc(ANA_METHOD_COUNT, sizeof *a->service_ptrs);
  if (!a->services || !a->service_ptrs) {
    answer_error(a, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++) {
    bool seen = false;
    for (size_t j = 0; j < n && !seen; j++)
      seen = strcmp(a->services[j].name, ana_methods[i].service) == 0;
    if (seen)
      continue;
    grpc__reflection__v1__service_response__init(&a->services[n]);
    a->services[n].name = (char *)ana_methods[i].service;
    a->service_ptrs[n] = &a->services[n];
    n++;
  }
  grpc__reflection__v1__list_service_response__init(&a->list);
  a->list.n_service = n;
  a->list.service = a->service_ptrs;
  a->resp.message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
  a->resp.list_services_response = &a->list;
}

static void answer_extension_numbers(struct answer *a, const char *type) {
  if (file_by_symbol(undot(type)) < 0) {
    answer_error(a, ANA_STATUS_NOT_FOUND, "unknown type");
    return;
  }
  a->ext_numbers = ana_calloc(n_extensions ? n_extensions : 1, sizeof *a->ext_numbers);
  if (!a->ext_numbers) {
    answer_error(a, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < n_extensions; i++)
    if (strcmp(extensions[i].extendee, undot(type)) == 0)
      a->ext_numbers[n++] = extensions[i].number;
  grpc__reflection__v1__extension_number_response__init(&a->numbers);
  a->numbers.base_type_name = (char *)undot(type);
  a->numbers.n_extension_number = n;
  a->numbers.extension_number = a->ext_numbers;
  a->resp.message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
  a->resp.all_extension_numbers_response = &a->numbers;
}

static long file_by_extension(const Grpc__Reflection__V1__ExtensionRequest *r) {
  if (!r || !r->containing_type)
    return -1;
  for (size_t i = 0; i < n_extensions; i++)
    if (extensions[i].number == r->extension_number &&
        strcmp(extensions[i].extendee, undot(r->containing_type)) == 0)
      return (long)extensions[i].file;
  return -1;
}

static void answer(struct answer *a, Grpc__Reflection__V1__ServerReflectionRequest *req) {
  grpc__reflection__v1__server_reflection_response__init(&a->resp);
  a->resp.valid_host = req->host;
  a->resp.original_request = req;
  switch (req->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    answer_files(a, file_by_name(req->file_by_filename));
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    answer_files(a, file_by_symbol(undot(req->file_containing_symbol)));
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
    answer_files(a, file_by_extension(req->file_containing_extension));
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
    answer_extension_numbers(a, req->all_extension_numbers_of_type);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    answer_list(a);
    break;
  default: answer_error(a, ANA_STATUS_INVALID_ARGUMENT, "the request names no question"); break;
  }
}

static void answer_free(struct answer *a) {
  if (a->blobs)
    for (size_t i = 0; i < a->files.n_file_descriptor_proto; i++)
      ana_free(a->blobs[i].data);
  ana_free(a->blobs);
  ana_free(a->services);
  ana_free(a->service_ptrs);
  ana_free(a->ext_numbers);
  ana_free(a->included);
}

/* v1 and v1alpha messages are the same on the wire: v1alpha requests are
 * re-read as v1, and v1 answers re-read as v1alpha. */
static ProtobufCMessage *convert(const ProtobufCMessage *from,
                                 const ProtobufCMessageDescriptor *to) {
  size_t n = protobuf_c_message_get_packed_size(from);
  uint8_t *buf = ana_malloc(n ? n : 1);
  if (!buf)
    return NULL;
  protobuf_c_message_pack(from, buf);
  ProtobufCMessage *m = ana_proto_unpack(to, NULL, buf, n, ANA_PROTO_DEFAULT_MAX_DEPTH, NULL);
  ana_free(buf);
  return m;
}

static void on_message(struct ana_call *call, const ProtobufCMessage *message) {
  bool alpha =
      ana_call_method(call)->input != &grpc__reflection__v1__server_reflection_request__descriptor;
  ProtobufCMessage *v1req =
      convert(message, &grpc__reflection__v1__server_reflection_request__descriptor);
  if (!v1req) {
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "malformed reflection request");
    return;
  }
  struct answer a;
  memset(&a, 0, sizeof a);
  answer(&a, (Grpc__Reflection__V1__ServerReflectionRequest *)v1req);
  int rc;
  if (alpha) {
    ProtobufCMessage *reply =
        convert(&a.resp.base, &grpc__reflection__v1alpha__server_reflection_response__descriptor);
    rc = reply ? ana_call_send(call, reply) : ANA_ERR_NOMEM;
    if (reply)
      protobuf_c_message_free_unpacked(reply, NULL);
  } else {
    rc = ana_call_send(call, &a.resp.base);
  }
  answer_free(&a);
  protobuf_c_message_free_unpacked(v1req, NULL);
  if (rc == ANA_ERR_FULL)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED,
                  "too many reflection answers waiting to be read");
}

static void on_half_close(struct ana_call *call) {
  ana_call_finish(call, NULL, NULL);
}

static void on_cancel(struct ana_call *call) {
  /* The client is gone; only this call's own callbacks finish it, and they
   * run on the reading side, which stops now. */
  ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
}

static const struct ana_handler reflection_handler = {
    .on_message = on_message,
    .on_half_close = on_half_close,
    .on_cancel = on_cancel,
};

int ana_reflection_bind(void) {
  set = (void *)ana_proto_unpack(&google__protobuf__file_descriptor_set__descriptor, NULL,
                                 ana_descriptor_set, ana_descriptor_set_size,
                                 ANA_PROTO_DEFAULT_MAX_DEPTH, NULL);
  if (!set || build_index() < 0) {
    ANA_ERROR("reflection", "cannot read the embedded descriptor set");
    ana_reflection_fini();
    return ANA_ERR_INTERNAL;
  }
  ana_rpc_bind(ANA_METHOD_GRPC_REFLECTION_V1_SERVER_REFLECTION_SERVER_REFLECTION_INFO,
               &reflection_handler);
  ana_rpc_bind(ANA_METHOD_GRPC_REFLECTION_V1ALPHA_SERVER_REFLECTION_SERVER_REFLECTION_INFO,
               &reflection_handler);
  return 0;
}

void ana_reflection_fini(void) {
  for (size_t i = 0; i < n_symbols; i++)
    ana_free(symbols[i].name);
  for (size_t i = 0; i < n_extensions; i++)
    ana_free(extensions[i].extendee);
  ana_free(symbols);
  ana_free(extensions);
  symbols = NULL;
  extensions = NULL;
  n_symbols = cap_symbols = n_extensions = cap_extensions = 0;
  if (set)
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
  set = NULL;
}
