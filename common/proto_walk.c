/* Iterative protobuf wire walker: depth limit, NUL-free strings and well-formed wire data. */
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_error.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* Frames kept on the C stack; deeper limits allocate their stack once. */
#define LOCAL_FRAMES 129

/* One message being walked. */
struct frame {
  const uint8_t *start; /* first byte of its content */
  const uint8_t *end;   /* one past its last byte */
  const uint8_t *tag;   /* its field's tag in the parent (unused at the top) */
  const ProtobufCMessageDescriptor *desc;
  const ProtobufCFieldDescriptor *via; /* the parent's field holding it; NULL at the top */
  unsigned hint;                       /* index of the last field seen, to skip the search */
  uint64_t merged;                     /* singular message fields (index < 64) seen */
};

/* protobuf-c 1.4.1 reads a field's tag and a length prefix from at most 5
 * bytes (values take up to 10): a longer, overlong encoding such as
 * 80 80 80 80 80 80 00 for zero is refused there, so it is refused here too. */
enum { TAG_MAX_BYTES = 5, LENGTH_MAX_BYTES = 5, VARINT_MAX_BYTES = 10 };

/* Reads a varint of at most max_bytes bytes; NULL when it is unterminated. */
static inline const uint8_t *read_varint_upto(const uint8_t *p, const uint8_t *end, uint64_t *out,
                                              unsigned max_bytes) {
  if (p < end && *p < 0x80) {
    *out = *p;
    return p + 1;
  }
  uint64_t v = 0;
  for (unsigned i = 0; i < max_bytes && p < end; i++) {
    uint8_t b = *p++;
    v |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *out = v;
      return p;
    }
  }
  return NULL;
}

static inline const uint8_t *read_varint(const uint8_t *p, const uint8_t *end, uint64_t *out) {
  return read_varint_upto(p, end, out, VARINT_MAX_BYTES);
}

/* The wire type a field of type t travels with (LEN also for packed ones),
 * indexed by ProtobufCType. */
static const uint8_t wire_types[] = {
    [PROTOBUF_C_TYPE_INT32] = WT_VARINT,  [PROTOBUF_C_TYPE_SINT32] = WT_VARINT,
    [PROTOBUF_C_TYPE_SFIXED32] = WT_I32,  [PROTOBUF_C_TYPE_INT64] = WT_VARINT,
    [PROTOBUF_C_TYPE_SINT64] = WT_VARINT, [PROTOBUF_C_TYPE_SFIXED64] = WT_I64,
    [PROTOBUF_C_TYPE_UINT32] = WT_VARINT, [PROTOBUF_C_TYPE_FIXED32] = WT_I32,
    [PROTOBUF_C_TYPE_UINT64] = WT_VARINT, [PROTOBUF_C_TYPE_FIXED64] = WT_I64,
    [PROTOBUF_C_TYPE_FLOAT] = WT_I32,     [PROTOBUF_C_TYPE_DOUBLE] = WT_I64,
    [PROTOBUF_C_TYPE_BOOL] = WT_VARINT,   [PROTOBUF_C_TYPE_ENUM] = WT_VARINT,
    [PROTOBUF_C_TYPE_STRING] = WT_LEN,    [PROTOBUF_C_TYPE_BYTES] = WT_LEN,
    [PROTOBUF_C_TYPE_MESSAGE] = WT_LEN,
};

static inline int wire_type_of(ProtobufCType t) {
  return (unsigned)t < sizeof wire_types ? wire_types[t] : WT_VARINT;
}

/* Field `num` of d, trying the last field seen and the next one first
 * (fields arrive in number order almost always; descriptors keep them so). */
static inline const ProtobufCFieldDescriptor *field_of(const ProtobufCMessageDescriptor *d,
                                                       uint32_t num, unsigned *hint) {
  unsigned h = *hint;
  if (h < d->n_fields && d->fields[h].id == num)
    return &d->fields[h];
  if (h + 1 < d->n_fields && d->fields[h + 1].id == num) {
    *hint = h + 1;
    return &d->fields[h + 1];
  }
  if (num - 1 < d->n_fields && d->fields[num - 1].id == num) { /* numbered 1, 2, 3, ... */
    *hint = num - 1;
    return &d->fields[num - 1];
  }
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, num);
  if (f)
    *hint = (unsigned)(f - d->fields);
  return f;
}

/* Whether n bytes at p hold a 0; most strings are short, and a loop beats
 * a call for them. */
static inline bool has_nul(const uint8_t *p, size_t n) {
  if (n > 32)
    return memchr(p, 0, n) != NULL;
  uint8_t all = 0xff;
  for (size_t i = 0; i < n; i++)
    all &= (uint8_t)(p[i] ? 0xff : 0);
  return all == 0 && n > 0;
}

/* Packed repeated scalars: whole elements only. */
static bool packed_ok(int wt, const uint8_t *p, size_t n) {
  if (wt == WT_I32)
    return n % 4 == 0;
  if (wt == WT_I64)
    return n % 8 == 0;
  unsigned run = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] & 0x80) {
      if (++run >= 10)
        return false;
    } else {
      run = 0;
    }
  }
  return n == 0 || !(p[n - 1] & 0x80);
}

/* ------------------------------------------------------------------ */
/* the error path (only when something is wrong, so nothing here is hot) */

struct path {
  char *buf;
  size_t cap, len;
  bool cut;
};

static void put(struct path *pa, const char *s, size_t n) {
  if (pa->cut)
    return;
  if (pa->len + n + 4 > pa->cap) { /* room for "..." and the NUL */
    pa->cut = true;
    memcpy(pa->buf + pa->len, "...", 4);
    pa->len += 3;
    return;
  }
  memcpy(pa->buf + pa->len, s, n);
  pa->len += n;
  pa->buf[pa->len] = '\0';
}

/* A field's JSON name: proto3's lowerCamel of its name. */
static void put_name(struct path *pa, const char *name) {
  char tmp[128];
  size_t n = 0;
  bool up = false;
  if (pa->len)
    tmp[n++] = '.';
  for (const char *c = name; *c && n < sizeof tmp; c++) {
    if (*c == '_') {
      up = true;
      continue;
    }
    tmp[n++] = up && *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
    up = false;
  }
  put(pa, tmp, n);
}

/* ["key"] with quotes, backslashes and control bytes escaped JSON's way. */
static void put_key(struct path *pa, const uint8_t *k, size_t n) {
  char tmp[120];
  size_t o = 0;
  tmp[o++] = '[';
  tmp[o++] = '"';
  for (size_t i = 0; i < n; i++) {
    if (o + 6 + 3 + 2 > sizeof tmp) { /* an escape, "...", the closing "] */
      memcpy(tmp + o, "...", 3);
      o += 3;
      break;
    }
    uint8_t c = k[i];
    if (c == '"' || c == '\\') {
      tmp[o++] = '\\';
      tmp[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      o += (size_t)snprintf(tmp + o, sizeof tmp - o, "\\u%04x", c);
    } else {
      tmp[o++] = (char)c;
    }
  }
  tmp[o++] = '"';
  tmp[o++] = ']';
  put(pa, tmp, o);
}

/* Skips one field's value; NULL when it does not fit (the error path only
 * re-reads bytes, so anything odd simply stops it). */
static const uint8_t *skip_value(const uint8_t *p, const uint8_t *end, int wt, const uint8_t **val,
                                 uint64_t *vlen) {
  uint64_t x = 0;
  *val = p;
  switch (wt) {
  case WT_VARINT:
    p = read_varint(p, end, &x);
    *vlen = x;
    return p;
  case WT_I64: return (size_t)(end - p) >= 8 ? p + 8 : NULL;
  case WT_I32: return (size_t)(end - p) >= 4 ? p + 4 : NULL;
  case WT_LEN:
    p = read_varint(p, end, &x);
    if (!p || x > (uint64_t)(end - p))
      return NULL;
    *val = p;
    *vlen = x;
    return p + x;
  default: return NULL;
  }
}

/* How many times field num occurs in [p, at): the index of the one at `at`. */
static size_t index_of(const uint8_t *p, const uint8_t *at, uint32_t num) {
  size_t count = 0;
  while (p && p < at) {
    uint64_t tag, vlen = 0;
    const uint8_t *val;
    p = read_varint(p, at, &tag);
    if (!p)
      break;
    if ((tag >> 3) == num)
      count++;
    p = skip_value(p, at, (int)(tag & 7), &val, &vlen);
  }
  return count;
}

static bool is_map_entry(const ProtobufCMessageDescriptor *d) {
  size_t nl = strlen(d->name);
  return d->n_fields == 2 && d->fields[0].id == 1 && d->fields[1].id == 2 &&
         strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0 &&
         nl > 5 && strcmp(d->name + nl - 5, "Entry") == 0;
}

/* The map entry's key, from its bytes [p, end): ["k"] or [123]. */
static void put_entry_key(struct path *pa, const ProtobufCMessageDescriptor *entry,
                          const uint8_t *p, const uint8_t *end) {
  const uint8_t *key = (const uint8_t *)"";
  uint64_t klen = 0, kint = 0;
  bool is_string = entry->fields[0].type == PROTOBUF_C_TYPE_STRING;
  while (p && p < end) {
    uint64_t tag, vlen = 0;
    const uint8_t *val;
    p = read_varint(p, end, &tag);
    if (!p)
      break;
    p = skip_value(p, end, (int)(tag & 7), &val, &vlen);
    if (p && (tag >> 3) == 1 && ((tag & 7) == WT_LEN) == is_string) {
      key = val;
      klen = vlen;
      kint = vlen;
    }
  }
  if (is_string) {
    put_key(pa, key, (size_t)klen);
  } else {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "[%llu]", (unsigned long long)kint);
    put(pa, tmp, (size_t)n);
  }
}

/* The path element of field `via` of parent, whose tag is at `tag` and whose
 * value is [start, end): name, [i] or ["key"]. */
static void put_element(struct path *pa, const struct frame *parent,
                        const ProtobufCFieldDescriptor *via, const uint8_t *tag,
                        const uint8_t *start, const uint8_t *end, bool with_key) {
  if (via->id == 2 && is_map_entry(parent->desc))
    return; /* a map's value: the entry's ["key"] names it */
  put_name(pa, via->name);
  if (via->label != PROTOBUF_C_LABEL_REPEATED || !with_key ||
      wire_type_of(via->type) != WT_LEN) /* packed scalars: the field is what is wrong */
    return;
  if (via->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(via->descriptor)) {
    put_entry_key(pa, via->descriptor, start, end);
  } else {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "[%zu]", index_of(parent->start, tag, via->id));
    put(pa, tmp, (size_t)n);
  }
}

/* Fills v for a problem with field fd (NULL: the message itself) of the
 * innermost frame fs[top], whose tag is at ftag and value at [vstart, vend). */
static int report(struct ana_proto_violation *v, const struct frame *fs, int top,
                  const ProtobufCFieldDescriptor *fd, const uint8_t *ftag, const uint8_t *vstart,
                  const uint8_t *vend, enum ana_proto_problem problem, const char *fmt, ...)
    __attribute__((format(printf, 9, 10), cold, noinline));
static int report(struct ana_proto_violation *v, const struct frame *fs, int top,
                  const ProtobufCFieldDescriptor *fd, const uint8_t *ftag, const uint8_t *vstart,
                  const uint8_t *vend, enum ana_proto_problem problem, const char *fmt, ...) {
  if (!v)
    return ANA_ERR_INVALID;
  struct path pa = {.buf = v->field, .cap = sizeof v->field};
  v->field[0] = '\0';
  v->problem = problem;
  bool key_nul =
      problem == ANA_PROTO_NUL && top > 0 && fd && fd->id == 1 && is_map_entry(fs[top].desc);
  for (int i = 1; i <= top && !pa.cut; i++)
    put_element(&pa, &fs[i - 1], fs[i].via, fs[i].tag, fs[i].start, fs[i].end,
                !(key_nul && i == top));
  if (fd && !key_nul && !pa.cut)
    put_element(&pa, &fs[top], fd, ftag, vstart, vend, true);
  if (key_nul) {
    char key[128];
    struct path kp = {.buf = key, .cap = sizeof key};
    put_key(&kp, vstart, (size_t)(vend - vstart));
    key[kp.len - 1] = '\0'; /* without the brackets */
    snprintf(v->description, sizeof v->description, "has a key that contains a NUL byte (%s)",
             key + 1);
  } else {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->description, sizeof v->description, fmt, ap);
    va_end(ap);
  }
  return ANA_ERR_INVALID;
}

/* ------------------------------------------------------------------ */
/* the walk */

static const char *wire_name(int wt) {
  switch (wt) {
  case WT_VARINT: return "varint";
  case WT_I64: return "64-bit";
  case WT_LEN: return "length-delimited";
  default: return "32-bit";
  }
}

static int walk(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                int max_depth, struct frame *fs, struct ana_proto_violation *v) {
  int top = 0;
  fs[0] = (struct frame){.start = data, .end = data + len, .tag = data, .desc = desc};
  const uint8_t *p = data;
  const uint8_t *end = fs[0].end;
  const ProtobufCMessageDescriptor *d = desc; /* fs[top]'s, kept in registers */
  unsigned hint = 0;
  for (;;) {
    if (p == end) {
      if (top == 0)
        return 0;
      top--;
      end = fs[top].end;
      d = fs[top].desc;
      hint = fs[top].hint;
      continue;
    }
    const uint8_t *ftag = p;
    uint64_t tag;
    if (*p < 0x80) {
      tag = *p++;
    } else {
      p = read_varint_upto(p, end, &tag, TAG_MAX_BYTES);
      if (!p)
        return report(v, fs, top, NULL, NULL, NULL, NULL, ANA_PROTO_MALFORMED,
                      "is truncated or malformed: a field tag runs past its end or 5 bytes");
    }
    uint64_t num = tag >> 3;
    int wt = (int)(tag & 7);
    if (num == 0 || num > 536870911)
      return report(v, fs, top, NULL, NULL, NULL, NULL, ANA_PROTO_MALFORMED,
                    "has a field numbered %llu, which is invalid", (unsigned long long)num);
    const ProtobufCFieldDescriptor *fd = field_of(d, (uint32_t)num, &hint);
    uint64_t x = 0;
    switch (wt) {
    case WT_VARINT:
      if (fd && wire_type_of(fd->type) != WT_VARINT)
        goto wrong_type;
      if (p < end && *p < 0x80) {
        p++;
      } else {
        p = read_varint(p, end, &x);
        if (!p)
          return report(v, fs, top, fd, ftag, ftag, end, ANA_PROTO_MALFORMED,
                        "is truncated or malformed: a varint runs past its end or 10 bytes");
      }
      break;
    case WT_I64:
    case WT_I32: {
      size_t n = wt == WT_I64 ? 8 : 4;
      if (fd && wire_type_of(fd->type) != wt)
        goto wrong_type;
      if ((size_t)(end - p) < n)
        return report(v, fs, top, fd, ftag, ftag, end, ANA_PROTO_MALFORMED,
                      "is truncated: a %zu-byte value runs past its end", n);
      p += n;
      break;
    }
    case WT_LEN: {
      if (p < end && *p < 0x80) {
        x = *p++;
      } else {
        p = read_varint_upto(p, end, &x, LENGTH_MAX_BYTES);
        if (!p)
          return report(v, fs, top, fd, ftag, ftag, end, ANA_PROTO_MALFORMED,
                        "is truncated or malformed: a length runs past its end or 5 bytes");
      }
      if (x > (uint64_t)(end - p))
        return report(v, fs, top, fd, ftag, p, end, ANA_PROTO_MALFORMED,
                      "is truncated: %llu bytes announced, %zu left", (unsigned long long)x,
                      (size_t)(end - p));
      const uint8_t *vend = p + x;
      if (!fd) {
        p = vend; /* unknown: skipped, never descended into */
        break;
      }
      switch (fd->type) {
      case PROTOBUF_C_TYPE_MESSAGE:
        /* protobuf-c 1.4.1 cannot always merge two occurrences of a singular
         * message field (a oneof anywhere inside makes protobuf_c_message_unpack
         * fail), and encoders never write one twice: the second is refused
         * here, with its path. */
        if (fd->label != PROTOBUF_C_LABEL_REPEATED) {
          size_t idx = (size_t)(fd - d->fields);
          uint64_t bit = idx < 64 ? (uint64_t)1 << idx : 0;
          if (fs[top].merged & bit)
            return report(v, fs, top, fd, ftag, p, vend, ANA_PROTO_MALFORMED,
                          "is given more than once");
          fs[top].merged |= bit;
        }
        if (top >= max_depth)
          return report(v, fs, top, fd, ftag, p, vend, ANA_PROTO_TOO_DEEP,
                        "nests messages more than %d levels deep", max_depth);
        fs[top].hint = hint;
        top++;
        d = fd->descriptor;
        hint = 0;
        fs[top].start = p;
        fs[top].end = end = vend;
        fs[top].tag = ftag;
        fs[top].desc = d;
        fs[top].via = fd;
        fs[top].merged = 0;
        continue;
      case PROTOBUF_C_TYPE_STRING:
        if (has_nul(p, (size_t)x))
          return report(v, fs, top, fd, ftag, p, vend, ANA_PROTO_NUL, "contains a NUL byte");
        break;
      case PROTOBUF_C_TYPE_BYTES: break;
      default:
        if (fd->label != PROTOBUF_C_LABEL_REPEATED)
          goto wrong_type;
        if (!packed_ok(wire_type_of(fd->type), p, (size_t)x))
          return report(v, fs, top, fd, ftag, p, vend, ANA_PROTO_MALFORMED,
                        "is malformed: its packed values do not divide into whole elements");
        break;
      }
      p = vend;
      break;
    }
    case WT_SGROUP:
    case WT_EGROUP:
      return report(v, fs, top, fd, ftag, p, end, ANA_PROTO_MALFORMED,
                    "is a group (field %llu), which is not supported", (unsigned long long)num);
    default:
      return report(v, fs, top, NULL, NULL, NULL, NULL, ANA_PROTO_MALFORMED,
                    "has wire type %d (field %llu), which is invalid", wt, (unsigned long long)num);
    }
    continue;
  wrong_type:
    return report(v, fs, top, fd, ftag, p, end, ANA_PROTO_MALFORMED,
                  "is malformed: %s data for a field that takes %s data", wire_name(wt),
                  wire_name(wire_type_of(fd->type)));
  }
}

int ana_proto_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                   int max_depth, struct ana_proto_violation *v) {
  if (max_depth < 1)
    max_depth = 1;
  if (max_depth > ANA_PROTO_MAX_DEPTH_CEILING)
    max_depth = ANA_PROTO_MAX_DEPTH_CEILING;
  if (v) {
    v->problem = ANA_PROTO_OK;
    v->field[0] = v->description[0] = '\0';
  }
  if (max_depth + 1 <= LOCAL_FRAMES) {
    struct frame local[LOCAL_FRAMES];
    return walk(desc, data, len, max_depth, local, v);
  }
  struct frame *fs = ana_malloc(((size_t)max_depth + 1) * sizeof *fs);
  if (!fs)
    return ANA_ERR_NOMEM;
  int rc = walk(desc, data, len, max_depth, fs, v);
  ana_free(fs);
  return rc;
}

ProtobufCMessage *ana_proto_unpack(const ProtobufCMessageDescriptor *desc,
                                   ProtobufCAllocator *allocator, const uint8_t *data, size_t len,
                                   int max_depth, struct ana_proto_violation *v) {
  int rc = ana_proto_walk(desc, data, len, max_depth, v);
  if (rc < 0) {
    if (rc == ANA_ERR_NOMEM && v) {
      v->problem = ANA_PROTO_MALFORMED;
      v->field[0] = '\0';
      snprintf(v->description, sizeof v->description, "out of memory");
    }
    return NULL;
  }
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, allocator, len, data);
  if (!m && v) {
    v->problem = ANA_PROTO_MALFORMED;
    v->field[0] = '\0';
    snprintf(v->description, sizeof v->description,
             "could not be decoded (not valid wire data for %s, or out of memory)", desc->name);
  }
  return m;
}
