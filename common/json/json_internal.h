/* Internals shared by the JSON codec's files: names, field access, the type
 * registry, well-known types and the text forms of scalars. */
#ifndef ANA_JSON_INTERNAL_H
#define ANA_JSON_INTERNAL_H

#include "ana_json.h"
#include "ana_json_names.h"

#include <stdint.h>

/* Longest JSON path kept for error messages (longer ones are truncated). */
#define ANA_JSON_PATH_MAX 512

/* Well-known types with a JSON form of their own. Empty is not special. */
enum ana_json_wkt {
  ANA_JSON_WKT_NONE,
  ANA_JSON_WKT_ANY,
  ANA_JSON_WKT_TIMESTAMP,
  ANA_JSON_WKT_DURATION,
  ANA_JSON_WKT_STRUCT,
  ANA_JSON_WKT_VALUE,
  ANA_JSON_WKT_LIST_VALUE,
  ANA_JSON_WKT_FIELD_MASK,
  ANA_JSON_WKT_WRAPPER, /* DoubleValue ... BytesValue: the bare scalar of field 1 */
};

/* Which well-known type d is, by full name (so a FieldMask compiled
 * elsewhere is recognised too). */
enum ana_json_wkt ana_json_wkt_of(const ProtobufCMessageDescriptor *d);

/* ---- names and the type registry (json_common.c) ---- */

/* The generated JSON-name entry of d, or NULL for messages the generator did
 * not see (their names are then computed as protoc does). */
const struct ana_json_message *ana_json_names_of(const ProtobufCMessageDescriptor *d);

/* JSON name of field i of d; jm is ana_json_names_of(d). Returns the table's
 * string or one computed into buf (the proto name if buf is too small). */
const char *ana_json_field_name(const ProtobufCMessageDescriptor *d,
                                const struct ana_json_message *jm, unsigned i, char *buf,
                                size_t size);

/* Whether d is a map<K,V> entry. */
bool ana_json_is_map_entry(const ProtobufCMessageDescriptor *d, const struct ana_json_message *jm);

/* The field of d named name (len bytes) by JSON name first, then proto name;
 * NULL if none. */
const ProtobufCFieldDescriptor *ana_json_field_by_name(const ProtobufCMessageDescriptor *d,
                                                       const struct ana_json_message *jm,
                                                       const char *name, size_t len);

/* Message type by full name ("analytics.v1.Event"), len bytes: the generated
 * table plus the well-known and google.rpc types protobuf-c compiled.
 * NULL if unknown. */
const ProtobufCMessageDescriptor *ana_json_find_type(const char *name, size_t len);

/* The message type named by an Any type URL (text after the last '/'). */
const ProtobufCMessageDescriptor *ana_json_type_from_url(const char *url);

/* ---- field access (json_common.c) ---- */

static inline void *ana_json_member(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  return (char *)m + f->offset;
}

static inline void *ana_json_quantifier(const ProtobufCMessage *m,
                                        const ProtobufCFieldDescriptor *f) {
  return (char *)m + f->quantifier_offset;
}

/* Size of one value of type t in a message or a repeated array. */
size_t ana_json_elem_size(ProtobufCType t);

/* Marks a singular field as present after its value was stored (oneof case,
 * proto2 has_ flag). */
void ana_json_mark_set(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* Resets a field to unset/default (JSON null). */
void ana_json_clear_field(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* For a singular message field: the address of its pointer, set to NULL first
 * if the field is a oneof member and another member is set (the union then
 * holds someone else's value). */
ProtobufCMessage **ana_json_message_slot(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* A new initialised message of type d in arena, or NULL. */
ProtobufCMessage *ana_json_new_message(const ProtobufCMessageDescriptor *d,
                                       struct ana_arena *arena);

/* Appends one element (elem_size bytes at value) to repeated field f of m,
 * copying the array into arena. 0 or ANA_ERR_NOMEM. */
int ana_json_append(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const void *value,
                    struct ana_arena *arena);

/* ---- scalars from text (json_common.c) ---- */

/* Parses text (len bytes) as a value of f's scalar type (not MESSAGE) into
 * dst, which holds one value of that type; strings and bytes are copied into
 * arena. lenient_bool also accepts the grpc-gateway spellings (1/0, t/f, ...)
 * for query parameters. Returns NULL, or a reason ("not an integer",
 * "out of range for int32", ...); *nomem is set when the arena ran out.
 * Unknown enum names return the reason "unknown enum value". */
const char *ana_json_scalar_from_text(const ProtobufCFieldDescriptor *f, const char *text,
                                      size_t len, bool lenient_bool, void *dst,
                                      struct ana_arena *arena, bool *nomem);

/* Exact integer text: -?digits[.digits][e[+-]digits] whose value is
 * integral. 0 with *neg and *mag set; -1 if not an integer; -2 if |value|
 * does not fit 64 bits. */
int ana_json_parse_integer(const char *s, size_t len, bool *neg, uint64_t *mag);

/* "out of range for <type>". */
const char *ana_json_out_of_range(ProtobufCType t);

/* Whether d (finite or not) converts to float without overflowing. */
bool ana_json_fits_float(double d);

/* Stores an integer (sign + magnitude) into dst as type t (any integer type
 * or enum). NULL or "out of range for <type>". */
const char *ana_json_store_integer(ProtobufCType t, bool neg, uint64_t mag, void *dst);

/* A JSON number, "NaN", "Infinity" or "-Infinity" as text. 0, -1 if not a
 * number, -2 if finite text overflows a double. */
int ana_json_parse_double(const char *s, size_t len, double *out);

/* Whether s (len bytes) is valid UTF-8 (no surrogates, no overlongs). */
bool ana_json_utf8_valid(const char *s, size_t len);

/* Standard or URL-safe base64, with or without padding. Returns the decoded
 * length (out must hold len / 4 * 3 + 3 bytes) or -1 if invalid. */
long ana_json_base64_decode(const char *s, size_t len, unsigned char *out);

/* Standard base64 with padding; out must hold (len + 2) / 3 * 4 bytes.
 * Returns the encoded length. */
size_t ana_json_base64_encode(const unsigned char *in, size_t len, char *out);

/* ---- well-known type text forms (json_wkt.c) ---- */

/* Longest text of a Timestamp or Duration, NUL included. */
#define ANA_JSON_TIME_TEXT_MAX 40

/* RFC 3339 in Z with 0, 3, 6 or 9 fractional digits. Returns the length, or
 * -1 if the value is out of range (years 0001-9999, nanos 0..999999999). */
int ana_json_format_timestamp(int64_t seconds, int32_t nanos, char out[ANA_JSON_TIME_TEXT_MAX]);

/* "1.5s", "-0.000000001s": 0, 3, 6 or 9 fractional digits. Length or -1 if
 * out of range (|seconds| <= 315576000000, nanos of the same sign). */
int ana_json_format_duration(int64_t seconds, int32_t nanos, char out[ANA_JSON_TIME_TEXT_MAX]);

/* Canonical duration text ("-1.5s"); with go_units also Go's ParseDuration
 * forms ("1h30m", "250ms", "1.5us"). 0, -1 if malformed, -2 if out of range. */
int ana_json_parse_duration(const char *s, size_t len, bool go_units, int64_t *seconds,
                            int32_t *nanos);

/* FieldMask path "foo_bar.baz" -> "fooBar.baz" into out (size bytes).
 * Returns the length, or -1 if the path has no lowerCamelCase form (upper
 * case letters, "_" not followed by a lower case letter) or does not fit. */
long ana_json_mask_path_to_json(const char *path, char *out, size_t size);

/* "fooBar.baz" (len bytes) -> "foo_bar.baz" into out (size bytes). Returns
 * the length, or -1 if the path contains '_' or does not fit. */
long ana_json_mask_path_from_json(const char *path, size_t len, char *out, size_t size);

/* ---- decoding with a path prefix (json_decode.c) ---- */

/* ana_json_decode_value with error paths starting at prefix (may be ""):
 * used for query parameters whose value is JSON text. */
int ana_json_decode_at(ProtobufCMessage *msg, const json_t *value, struct ana_arena *arena,
                       const struct ana_json_options *opts, struct ana_error *err,
                       const char *prefix, char *field_path, size_t field_path_size);

/* ---- elements read straight from the text (json_direct.c) ---- */

/* Reads the simple elements of a large array into their messages without
 * jansson's tree; one per thread at a time. ana_json_direct_new: NULL when
 * out of memory. ana_json_direct_free accepts NULL. */
struct ana_json_direct;
struct ana_json_direct *ana_json_direct_new(void);
void ana_json_direct_free(struct ana_json_direct *p);

/* The element text (len bytes: one JSON value, up to its closing brace as
 * the array's split bounds it) as a new message of desc in arena, exactly
 * as jansson and the walk would decode it; NULL when it is
 * not one of the simple ones or is not valid (then nothing of it is used:
 * decode it with jansson, which says what is wrong). */
ProtobufCMessage *ana_json_direct_element(struct ana_json_direct *p,
                                          const ProtobufCMessageDescriptor *desc, const char *text,
                                          size_t len, struct ana_arena *arena);

#endif
