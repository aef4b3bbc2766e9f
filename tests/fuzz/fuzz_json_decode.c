/* Fuzzes the JSON codec the way the REST bridge uses it. Input: byte 0 picks
 * the message type (low 7 bits: the method in ana_methods, high bit: its
 * response instead of its request), byte 1 the options, the rest is JSON.
 * Whatever decodes must encode, decode again, and encode to the same text.
 * With option bit 0x10 the rest is instead "field.path\0value" for
 * ana_json_set_field, whose result must encode and read back too. With bit
 * 0x20 the text is also decoded with its largest array split in chunks,
 * which must give the same message or the same error. */
#include "ana_arena.h"
#include "ana_json.h"
#include "ana_methods.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char *encode(const ProtobufCMessage *m, const struct ana_json_options *o, size_t *len,
                    int *rc) {
  struct ana_json_buf b;
  ana_json_buf_init(&b, 16); /* headroom, as the bridge keeps LWS_PRE */
  *rc = ana_json_encode(&b, m, o);
  if (*rc) {
    ana_json_buf_fini(&b);
    return NULL;
  }
  char *text = malloc(b.len + 1);
  if (!text)
    abort();
  memcpy(text, b.data + b.reserve, b.len + 1);
  *len = b.len;
  ana_json_buf_fini(&b);
  return text;
}

/* m must encode; the text must decode and encode to the same text. */
static void check_round_trip(const ProtobufCMessage *m, const struct ana_json_options *o,
                             struct ana_arena *arena, int allowed_encode_error) {
  size_t len1 = 0, len2 = 0;
  int rc;
  char *first = encode(m, o, &len1, &rc);
  if (!first) {
    if (rc == allowed_encode_error)
      return;
    abort();
  }
  struct ana_error err;
  char path[64];
  ProtobufCMessage *again =
      ana_json_decode(m->descriptor, first, len1, arena, o, &err, path, sizeof path);
  if (!again)
    abort();
  char *second = encode(again, o, &len2, &rc);
  if (!second || len1 != len2 || memcmp(first, second, len1) != 0)
    abort();
  free(first);
  free(second);
}

/* Runs the chunks last first, as other threads may finish them. */
static void reverse_runner(void *runner, size_t n, void (*fn)(void *ctx, size_t i), void *ctx) {
  (void)runner;
  for (size_t i = n; i-- > 0;)
    fn(ctx, i);
}

/* The document decoded with its largest array split in chunks (however
 * small) must give what the whole decode gave: the same message, or the
 * same error. */
static void check_split(const ProtobufCMessageDescriptor *desc, const char *text, size_t size,
                        const struct ana_json_options *o, const ProtobufCMessage *whole,
                        const struct ana_error *whole_err) {
  struct ana_json_options po = *o;
  po.parallel = reverse_runner;
  po.parallel_min_bytes = 1;
  po.parallel_min_elements = 2;
  struct ana_arena arena;
  ana_arena_init(&arena, 0, 0);
  struct ana_error err;
  char path[128];
  ProtobufCMessage *m = ana_json_decode(desc, text, size, &arena, &po, &err, path, sizeof path);
  if (!m != !whole)
    abort();
  if (!m && (err.code != whole_err->code || strcmp(err.message, whole_err->message) != 0))
    abort();
  if (m) {
    size_t a = protobuf_c_message_get_packed_size(m), b = protobuf_c_message_get_packed_size(whole);
    uint8_t *pa = malloc(a ? a : 1), *pb = malloc(b ? b : 1);
    if (!pa || !pb)
      abort();
    protobuf_c_message_pack(m, pa);
    protobuf_c_message_pack(whole, pb);
    if (a != b || memcmp(pa, pb, a) != 0)
      abort();
    free(pa);
    free(pb);
  }
  ana_arena_fini(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  const struct ana_method *method = &ana_methods[(data[0] & 0x7f) % ANA_METHOD_COUNT];
  const ProtobufCMessageDescriptor *desc = (data[0] & 0x80) ? method->output : method->input;
  uint8_t flags = data[1];
  struct ana_json_options o = {
      .ignore_unknown = flags & 0x01,
      .emit_defaults = flags & 0x02,
      .use_proto_names = flags & 0x04,
      .max_depth = (flags & 0x08) ? 6 : 0,
  };
  const char *text = (const char *)data + 2;
  size -= 2;

  struct ana_arena arena;
  ana_arena_init(&arena, 0, 64u << 20);
  struct ana_error err;
  char path[128];
  if (flags & 0x10) {
    const char *nul = memchr(text, '\0', size);
    if (nul) {
      char *value = malloc(size - (size_t)(nul - text));
      if (!value)
        abort();
      memcpy(value, nul + 1, size - (size_t)(nul - text) - 1);
      value[size - (size_t)(nul - text) - 1] = '\0';
      ProtobufCMessage *m = ana_arena_alloc(&arena, desc->sizeof_message);
      if (m) {
        protobuf_c_message_init(desc, m);
        if (ana_json_set_field(m, text, value, &arena, &err) == 0)
          /* A JSON value set deep down may nest past the limit. */
          check_round_trip(m, &o, &arena, ANA_ERR_INVALID);
      }
      free(value);
    }
  } else {
    ProtobufCMessage *m = ana_json_decode(desc, text, size, &arena, &o, &err, path, sizeof path);
    if (m)
      check_round_trip(m, &o, &arena, 0);
    if (flags & 0x20)
      check_split(desc, text, size, &o, m, &err);
  }
  ana_arena_fini(&arena);
  return 0;
}
