/* Fuzzes the gRPC server's request decoding: the wire walk, then protobuf-c's
 * unpack into an arena, as the request of the method the first byte picks.
 * Inputs up to 64 KiB and more reach deep nesting; whatever the walk accepts
 * must unpack (the walk is never laxer than protobuf-c's own checks). */
#include "ana_arena.h"
#include "ana_methods.h"
#include "ana_proto_walk.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const struct ana_method *m = &ana_methods[data[0] % ANA_METHOD_COUNT];
  data++;
  size--;
  struct ana_arena arena;
  ana_arena_init(&arena, 8192, 0);
  struct ana_proto_violation v;
  int rc = ana_proto_walk(m->input, data, size, ANA_PROTO_DEFAULT_MAX_DEPTH, &v);
  if (rc == 0) {
    ProtobufCMessage *msg = protobuf_c_message_unpack(m->input, &arena.pb, size, data);
    if (!msg)
      abort(); /* accepted by the walk, refused by protobuf-c */
  } else if (v.problem == ANA_PROTO_OK || !v.description[0] || strlen(v.field) >= sizeof v.field) {
    abort(); /* a refusal must say what and where */
  }
  ana_arena_fini(&arena);
  return 0;
}
