/* Canonical proto3 JSON for protobuf-c messages: the REST bridge's and the
 * client library's codec (encode, decode, and fields set from URL text). */
#ifndef ANA_JSON_H
#define ANA_JSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ana_arena.h"
#include "ana_error.h"

/* Switches of the codec. A NULL options pointer means all zero: canonical
 * output without defaults, lowerCamelCase names, unknown fields rejected,
 * nesting limit 64. */
struct ana_json_options {
  bool emit_defaults;   /* emit fields holding default values (grpc-gateway EmitUnpopulated) */
  bool use_proto_names; /* emit proto field names instead of lowerCamelCase */
  bool ignore_unknown;  /* decode: skip unknown fields instead of rejecting them */
  int max_depth;        /* decode: nesting limit, 0 = 64 */
  /* decode: runs fn(ctx, i) for every i in [0, n) and returns when all
   * have (possibly on other threads, as ana_workers_parallel does), so that
   * a large document's biggest array of messages is decoded in parallel
   * chunks; NULL decodes everything on the calling thread. The result, and
   * any error, are those of decoding on one thread. */
  void (*parallel)(void *runner, size_t n, void (*fn)(void *ctx, size_t i), void *ctx);
  void *runner;
  /* decode with parallel: the smallest document (0: 64 KiB) and array (0:
   * 128 elements) split; an arena with a limit is never split. */
  size_t parallel_min_bytes, parallel_min_elements;
  /* decode with parallel: every element through jansson, none read
   * directly from the text (the same result; for comparisons). */
  bool no_direct;
};

/* Nesting limit used when ana_json_options.max_depth is 0. */
#define ANA_JSON_DEFAULT_MAX_DEPTH 64

/* Growable output buffer; caller owns; ana_json_buf_fini frees. `reserve`
 * bytes of headroom are kept at the start (the bridge needs LWS_PRE bytes
 * before the payload). The payload is data[reserve .. reserve + len) and is
 * always followed by a NUL byte once data is allocated; cap counts every
 * allocated byte, headroom included. */
struct ana_json_buf {
  char *data;
  size_t len, cap, reserve;
};

/* Prepares an empty buffer with `reserve` bytes of headroom. Never allocates. */
void ana_json_buf_init(struct ana_json_buf *b, size_t reserve);

/* Frees the buffer's memory; the struct may be reused after another _init.
 * _fini on a buffer that never grew (or NULL) does nothing. */
void ana_json_buf_fini(struct ana_json_buf *b);

/* Appends msg (borrowed) as canonical proto3 JSON to b (payload at
 * b->data + b->reserve). Never blocks.
 * Returns 0, ANA_ERR_NOMEM, or ANA_ERR_INVALID when msg holds something
 * canonical JSON cannot represent: a Timestamp or Duration out of range, an
 * Any whose type is unknown or whose bytes do not unpack, a FieldMask path
 * that does not map to lowerCamelCase, or nesting deeper than the options'
 * max_depth. On error b->len is back where it was before the call.
 * Invalid UTF-8 in a string field (protobuf-c does not check it) is written
 * as U+FFFD so that the output is always valid JSON. */
int ana_json_encode(struct ana_json_buf *b, const ProtobufCMessage *msg,
                    const struct ana_json_options *opts);

/* Takes the output written so far (b->len >= the chunk size given to
 * ana_json_encode_stream, ending at a member boundary): copies it out and
 * sets b->len to 0, or keeps b->data (headroom included) and gives b a new
 * buffer (data, cap; len 0, reserve unchanged). Returns 0 to go on, or a
 * negative error that stops the encoding (returned by it). */
typedef int (*ana_json_flush_fn)(void *ctx, struct ana_json_buf *b);

/* ana_json_encode that hands its output to flush (with ctx) whenever the
 * buffer holds chunk bytes or more after a member, so that a large message
 * goes out while it is written, through one buffer of about chunk bytes
 * (a single string longer than chunk makes it longer). What is left when the
 * message is done stays in b (the caller sends it). *flushed tells whether
 * flush took anything: an error after that leaves out the rest of the
 * document (the bytes already taken are not taken back). */
int ana_json_encode_stream(struct ana_json_buf *b, const ProtobufCMessage *msg,
                           const struct ana_json_options *opts, size_t chunk,
                           ana_json_flush_fn flush, void *ctx, bool *flushed);

/* Parses JSON text (len bytes, need not be NUL-terminated) into a new message
 * of type desc, allocated in arena together with everything it points to.
 * Never blocks. Returns NULL with err filled: INVALID_ARGUMENT with message
 * "<json path>: <reason>" (e.g. "events[3].timestamp: not an RFC 3339
 * timestamp", "foo: unknown field"; just "<reason>" when the problem is the
 * whole document), or RESOURCE_EXHAUSTED when the arena runs out. If
 * field_path is not NULL, the JSON path ("" for the whole document) is copied
 * there, truncated to field_path_size; on success it is set to "". */
ProtobufCMessage *ana_json_decode(const ProtobufCMessageDescriptor *desc, const char *json,
                                  size_t len, struct ana_arena *arena,
                                  const struct ana_json_options *opts, struct ana_error *err,
                                  char *field_path, size_t field_path_size);

/* Same from an already-parsed jansson value (borrowed, not modified), so the
 * bridge can decode a body that is one field of the request. msg must be
 * initialised and allocated in arena; fields present in value are merged into
 * it (singular fields overwritten, repeated and map fields replaced, messages
 * merged). Strings of value are checked for UTF-8 and NUL. Returns 0,
 * ANA_ERR_INVALID or ANA_ERR_NOMEM with err and field_path filled as for
 * ana_json_decode; on error msg may be partly filled. */
int ana_json_decode_value(ProtobufCMessage *msg, const json_t *value, struct ana_arena *arena,
                          const struct ana_json_options *opts, struct ana_error *err,
                          char *field_path, size_t field_path_size);

/* Sets one field of msg (allocated in arena), addressed by a dotted path of
 * proto or JSON names ("page_size", "from", "properties.campaignId" for a
 * map<string,string> key, "filter.eventName"), from a string (borrowed,
 * NUL-terminated, already percent-decoded) as it comes in a URL path segment
 * or query parameter:
 *   - scalars parsed from text; 64-bit integers exactly; floats also "NaN",
 *     "Infinity", "-Infinity"; bools true/false (also 1/0, t/f, True/False,
 *     TRUE/FALSE, as grpc-gateway accepts);
 *   - enums by name or number; bytes as standard or URL-safe base64;
 *   - Timestamp RFC 3339; Duration "1.5s" (also Go style "1h30m", "250ms");
 *     wrappers as the bare scalar; FieldMask "a,b.c"; Value as JSON text, or
 *     as a string when the text is not JSON; Struct and ListValue as JSON;
 *   - repeated scalars (and repeated well-known scalars) APPEND, so
 *     "?k=1&k=2" works;
 *   - maps via "m.key" (the key is the rest of the path) or "m[key]";
 *   - intermediate messages are created in arena; a oneof member replaces
 *     the member set before it (last set wins).
 * Returns 0, ANA_ERR_INVALID with err INVALID_ARGUMENT "<path>: <reason>"
 * (unknown field, bad value, a repeated or map-valued message on the way, a
 * plain message as the target), or ANA_ERR_NOMEM (err RESOURCE_EXHAUSTED).
 * Never blocks. */
int ana_json_set_field(ProtobufCMessage *msg, const char *path, const char *value,
                       struct ana_arena *arena, struct ana_error *err);

/* A Timestamp's JSON text (len bytes): RFC 3339 with any offset, uppercase T
 * and Z, up to 9 fractional digits, years 0001 to 9999, as the decoder reads
 * it (the client library parses times with it too). Returns 0 with
 * *seconds and *nanos set, -1 if malformed, -2 if out of range. */
int ana_json_parse_timestamp(const char *s, size_t len, int64_t *seconds, int32_t *nanos);

#endif
