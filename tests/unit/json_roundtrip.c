/* Our JSON codec behind stdin/stdout, for json_oracle.py: each request is a
 * header line "<encode|decode> <full message name> <flags> <length>\n" and
 * <length> bytes (binary protobuf to encode, JSON text to decode); each answer
 * is "ok <length>\n" + JSON or binary, or "error <length>\n" + the message.
 * Flags: "-" or letters d (emit_defaults), p (use_proto_names),
 * i (ignore_unknown). */
#include "ana_json.h"
#include "json_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void answer(const char *status, const void *data, size_t len) {
  printf("%s %zu\n", status, len);
  fwrite(data, 1, len, stdout);
  fflush(stdout);
}

static void handle(const char *op, const char *type, const char *flags, const uint8_t *in,
                   size_t len) {
  const ProtobufCMessageDescriptor *d = ana_json_find_type(type, strlen(type));
  if (!d) {
    answer("error", "unknown type", 12);
    return;
  }
  struct ana_json_options o = {
      .emit_defaults = strchr(flags, 'd') != NULL,
      .use_proto_names = strchr(flags, 'p') != NULL,
      .ignore_unknown = strchr(flags, 'i') != NULL,
  };
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  if (strcmp(op, "encode") == 0) {
    ProtobufCMessage *m = protobuf_c_message_unpack(d, &arena.pb, len, in);
    struct ana_json_buf b;
    ana_json_buf_init(&b, 16);
    int rc = m ? ana_json_encode(&b, m, &o) : ANA_ERR_INVALID;
    if (rc == 0)
      answer("ok", b.data + b.reserve, b.len);
    else
      answer("error", ana_strerror(rc), strlen(ana_strerror(rc)));
    ana_json_buf_fini(&b);
  } else {
    struct ana_error err;
    char path[256];
    ProtobufCMessage *m =
        ana_json_decode(d, (const char *)in, len, &arena, &o, &err, path, sizeof path);
    if (m) {
      size_t n = protobuf_c_message_get_packed_size(m);
      uint8_t *out = malloc(n ? n : 1);
      protobuf_c_message_pack(m, out);
      answer("ok", out, n);
      free(out);
    } else {
      answer("error", err.message, strlen(err.message));
    }
  }
  ana_arena_fini(&arena);
}

int main(void) {
  char line[512];
  while (fgets(line, sizeof line, stdin)) {
    char op[16], type[256], flags[16];
    size_t len;
    if (sscanf(line, "%15s %255s %15s %zu", op, type, flags, &len) != 4) {
      fprintf(stderr, "json_roundtrip: bad request line: %s", line);
      return 2;
    }
    uint8_t *in = malloc(len ? len : 1);
    if (!in || fread(in, 1, len, stdin) != len) {
      fprintf(stderr, "json_roundtrip: short input\n");
      free(in);
      return 2;
    }
    handle(op, type, flags, in, len);
    free(in);
  }
  return 0;
}
