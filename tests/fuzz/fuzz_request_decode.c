/* Fuzzes request decoding the way the transports do it: any bytes, as the
 * request of any method, unpacked into an arena. A message that decodes
 * must survive a pack/unpack round trip unchanged in size. */
#include "ana_arena.h"
#include "ana_methods.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* protobuf-c 1.4.1 keeps a field numbered 0 as an unknown field although
 * the format forbids it, and then refuses its own output. Such inputs are
 * harmless (the field is never read) but cannot round-trip. */
static bool has_field_zero(const ProtobufCMessage *m) {
  for (unsigned i = 0; i < m->n_unknown_fields; i++)
    if (m->unknown_fields[i].tag == 0)
      return true;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned f = 0; f < d->n_fields; f++) {
    const ProtobufCFieldDescriptor *fd = &d->fields[f];
    if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    const char *base = (const char *)m + fd->offset;
    if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)((const char *)m + fd->quantifier_offset);
      ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)base;
      for (size_t k = 0; k < n; k++)
        if (has_field_zero(items[k]))
          return true;
    } else {
      if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
          *(const uint32_t *)((const char *)m + fd->quantifier_offset) != fd->id)
        continue;
      const ProtobufCMessage *sub = *(ProtobufCMessage *const *)base;
      if (sub && has_field_zero(sub))
        return true;
    }
  }
  return false;
}

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
  if (msg && !has_field_zero(msg)) {
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
