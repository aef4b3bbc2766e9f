/* A check of protobuf wire data against its descriptor, before protobuf-c
 * unpacks it: nesting depth, NUL bytes in string fields, malformed data. */
#ifndef ANA_PROTO_WALK_H
#define ANA_PROTO_WALK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting limit where no configuration says otherwise: protobuf C++'s. */
#define ANA_PROTO_DEFAULT_MAX_DEPTH 100

/* The largest limit accepted (PROTO_MAX_DEPTH's maximum). protobuf-c's
 * unpack recurses once per nested message, a few hundred bytes of stack
 * each; this many levels still fit a thread's default stack many times. */
#define ANA_PROTO_MAX_DEPTH_CEILING 1000

enum ana_proto_problem {
  ANA_PROTO_OK = 0,
  ANA_PROTO_TOO_DEEP,  /* messages nested deeper than the limit */
  ANA_PROTO_NUL,       /* a string field holds a NUL byte */
  ANA_PROTO_MALFORMED, /* not valid wire data for the descriptor */
};

/* What was wrong, for a google.rpc.BadRequest field violation. */
struct ana_proto_violation {
  enum ana_proto_problem problem;
  /* JSON-style path of the offending field from the top message, with
   * lowerCamel names, [i] for repeated fields and ["key"] for map entries,
   * e.g. event.properties.fields["a"].listValue.values[0]; "" when it is
   * the message as a whole. Ends in "..." when cut short. */
  char field[256];
  /* Why, e.g. "contains a NUL byte". */
  char description[192];
};

/* Checks len bytes of wire data (borrowed) as a message of type desc in one
 * pass, without recursion: a stack of max_depth + 1 frames (max_depth is
 * clamped to 1..ANA_PROTO_MAX_DEPTH_CEILING). Rejects messages nested more
 * than max_depth below the top one (protobuf C++'s recursion limit counts
 * the same way), NUL bytes in string fields (map keys included), groups,
 * invalid wire types, wire types that do not fit a known field, field
 * number 0, overlong varints and anything that runs past its enclosing
 * length. Unknown fields are skipped (not descended into). Returns 0, or
 * ANA_ERR_INVALID and fills v (when not NULL); ANA_ERR_NOMEM only when
 * max_depth is above 128 and its stack cannot be allocated. Allocates
 * nothing otherwise; does not block. */
int ana_proto_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                   int max_depth, struct ana_proto_violation *v);

/* ana_proto_walk, then protobuf_c_message_unpack with allocator (NULL =
 * protobuf-c's default). Returns the message (freed as unpack's result is),
 * or NULL with v filled (when not NULL): the walk's problem, or
 * ANA_PROTO_MALFORMED when unpack refuses the data or runs out of memory. */
ProtobufCMessage *ana_proto_unpack(const ProtobufCMessageDescriptor *desc,
                                   ProtobufCAllocator *allocator, const uint8_t *data, size_t len,
                                   int max_depth, struct ana_proto_violation *v);

#endif
