/* Writers for each generated file; each returns the file's text (caller frees). */
#ifndef GEN_EMIT_H
#define GEN_EMIT_H

#include "gen_model.h"

char *gen_emit_methods_h(const struct gen_model *m);
char *gen_emit_methods_c(const struct gen_model *m);
char *gen_emit_routes_h(const struct gen_model *m);
char *gen_emit_routes_c(const struct gen_model *m);
char *gen_emit_json_names_h(const struct gen_model *m);
char *gen_emit_json_names_c(const struct gen_model *m);
char *gen_emit_client_stubs_h(const struct gen_model *m);
char *gen_emit_client_stubs_c(const struct gen_model *m);
/* The OpenAPI 3 document of the routes (gen_openapi.c): the JSON text, and
 * the header and C file that hold it as the string ana_openapi_json. */
char *gen_emit_openapi_json(const struct gen_model *m);
char *gen_emit_openapi_h(const struct gen_model *m);
char *gen_emit_openapi_c(const struct gen_model *m);
/* The FileDescriptorSet of every file in the request, as a C byte array. */
char *gen_emit_descriptor_set_c(const struct gen_model *m);

#endif
