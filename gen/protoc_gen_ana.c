/* protoc-gen-ana: a protoc plugin that turns the contracts into the method
 * table, REST routes, JSON name tables, client stubs, the descriptor set and
 * the OpenAPI document of the REST routes.
 * Usage: protoc --plugin=protoc-gen-ana=PATH --ana_out=DIR FILES... */
#include "gen_emit.h"
#include "gen_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *read_all(FILE *in, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, in);
    if (n < cap)
      break;
    unsigned char *bigger = realloc(buf, cap *= 2);
    if (!bigger)
      free(buf);
    buf = bigger;
  }
  *len = n;
  return buf;
}

struct output {
  const char *name;
  char *(*emit)(const struct gen_model *);
};

static const struct output outputs[] = {
    {"ana_methods.h", gen_emit_methods_h},
    {"ana_methods.c", gen_emit_methods_c},
    {"ana_routes.h", gen_emit_routes_h},
    {"ana_routes.c", gen_emit_routes_c},
    {"ana_json_names.h", gen_emit_json_names_h},
    {"ana_json_names.c", gen_emit_json_names_c},
    {"ana_client_stubs.h", gen_emit_client_stubs_h},
    {"ana_client_stubs.c", gen_emit_client_stubs_c},
    {"ana_descriptor_set.c", gen_emit_descriptor_set_c},
    {"ana_openapi.h", gen_emit_openapi_h},
    {"ana_openapi.c", gen_emit_openapi_c},
};

#define N_OUTPUTS (sizeof outputs / sizeof outputs[0])

int main(void) {
  size_t len;
  unsigned char *input = read_all(stdin, &len);
  if (!input) {
    fputs("protoc-gen-ana: cannot read the request\n", stderr);
    return 1;
  }
  Google__Protobuf__Compiler__CodeGeneratorRequest *req =
      google__protobuf__compiler__code_generator_request__unpack(NULL, len, input);
  free(input);
  if (!req) {
    fputs("protoc-gen-ana: malformed CodeGeneratorRequest\n", stderr);
    return 1;
  }

  Google__Protobuf__Compiler__CodeGeneratorResponse resp =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  Google__Protobuf__Compiler__CodeGeneratorResponse__File files[N_OUTPUTS];
  Google__Protobuf__Compiler__CodeGeneratorResponse__File *file_ptrs[N_OUTPUTS];
  struct gen_model model;
  if (gen_model_build(&model, req) < 0) {
    resp.error = model.error; /* protoc prints it and fails the build */
  } else {
    for (size_t i = 0; i < N_OUTPUTS; i++) {
      google__protobuf__compiler__code_generator_response__file__init(&files[i]);
      files[i].name = (char *)outputs[i].name;
      files[i].content = outputs[i].emit(&model);
      file_ptrs[i] = &files[i];
    }
    resp.n_file = N_OUTPUTS;
    resp.file = file_ptrs;
  }

  size_t out_len = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
  unsigned char *out = malloc(out_len ? out_len : 1);
  if (!out)
    return 1;
  google__protobuf__compiler__code_generator_response__pack(&resp, out);
  int ok = fwrite(out, 1, out_len, stdout) == out_len && fflush(stdout) == 0;
  free(out);
  /* The model and request live until exit; the process is short-lived. */
  return ok ? 0 : 1;
}
