/* Fuzzes request decoding the way the transports do it: any bytes, as the
 * request of any method, unpacked into an arena. A message that decodes
 * must survive a pack/unpack round trip unchanged in size. */
#include "ana_arena.h"
#include "ana_methods.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const struct ana_method *m = &ana_methods[data[0] % ANA_METHOD_COUNT];
  const ProtobufCMessageDescriptor *desc = (data[0] & 0x80) ? m->output : m->input;
  data++;
  size--;

  struct ana_arena arena;
  ana_arena_init(&arena, 0, 64u << 20);
  ProtobufCMessage *msg = protobuf_c_message_unpack(desc, &arena.pb, size, data);
  if (msg) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
      if (protobuf_c_message_pack(msg, buf) != n)
        abort();
      ProtobufCMessage *again = protobuf_c_message_unpack(desc, &arena.pb, n, buf);
      if (!again || protobuf_c_message_get_packed_size(again) != n)
        abort();
      free(buf);
    }
  }
  ana_arena_fini(&arena);
  return 0;
}
