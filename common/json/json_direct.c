/* Simple elements of a large array read straight from the text into their
 * messages: yajl's parse events fill the message jansson's tree would give. */
#include "json_internal.h"

#include "ana_alloc.h"

#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

#include <yajl/yajl_parse.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Most elements of a large batch are flat: strings, a timestamp, a Struct
 * of plain values. Parsing them with jansson (a tree of allocations, then
 * walked) was most of the decode's CPU; here yajl's events fill the message
 * in one pass. An element declines (the caller then parses it with jansson,
 * whose walk says what is wrong) wherever yajl and jansson could part ways
 * or the walk has more to say: an array, an object in a Struct value, null
 * or a number outside a Value, an integer over 18 digits or a number jansson
 * would not read, an unknown, repeated, oneof or duplicated field, a
 * duplicate Struct key, more than DIRECT_MAX_ENTRIES of them, a string whose
 * escapes yajl reads differently (see direct_text_ok), \f or \v (white
 * space to yajl only), any error. */
#define DIRECT_MAX_ENTRIES 64
#define DIRECT_MAX_FRAMES 4 /* the element, two nested messages, a Struct */

struct direct_frame {
  ProtobufCMessage *m;
  const struct ana_json_message *jm; /* NULL: m is a Struct */
  const ProtobufCFieldDescriptor *f; /* the field whose value comes next */
  uint64_t seen;                     /* fields set, by index */
};

struct ana_json_direct {
  yajl_handle h; /* reused from element to element; NULL after a decline */
  const char *text;
  size_t len; /* the element */
  size_t end; /* bytes consumed when its object closed; 0 before */
  struct ana_arena *arena;
  ProtobufCMessage *root;
  int depth; /* frames open */
  struct direct_frame fr[DIRECT_MAX_FRAMES];
  /* the Struct being filled: its entries, and the Value its key awaits */
  ProtobufCMessage *entries[DIRECT_MAX_ENTRIES];
  size_t n;
  Google__Protobuf__Value *val;
};

static struct direct_frame *direct_top(struct ana_json_direct *p) {
  return p->depth && !p->end ? &p->fr[p->depth - 1] : NULL;
}

/* Whether jansson reads the string yajl gives as s, len the same way.
 * yajl reads a lone high surrogate escape as '?' and pairs one with any
 * following \u escape, where jansson refuses both: a string yajl unescaped
 * (it no longer lies in the text) is taken only without '?' and without
 * characters beyond the BMP. UTF-8 (yajl's own check is looser than
 * jansson's, and off) is checked by every use of a string: the text kept
 * goes through ana_json_scalar_from_text's check, as strict as jansson's;
 * names, numbers, enums, base64 and timestamps take only ASCII. */
static bool direct_text_ok(const struct ana_json_direct *p, const unsigned char *s, size_t len) {
  uintptr_t at = (uintptr_t)s, text = (uintptr_t)p->text;
  if (at >= text && at < text + p->len)
    return true;
  for (size_t i = 0; i < len; i++)
    if (s[i] == '?' || s[i] >= 0xf0)
      return false;
  return true;
}

/* The Value awaiting its content in the Struct being filled, or NULL. */
static Google__Protobuf__Value *direct_value(struct ana_json_direct *p) {
  struct direct_frame *fr = direct_top(p);
  Google__Protobuf__Value *val = fr && !fr->jm ? p->val : NULL;
  p->val = NULL;
  return val;
}

/* The field of a message awaiting its value, or NULL (also in a Struct). */
static const ProtobufCFieldDescriptor *direct_field(struct ana_json_direct *p) {
  struct direct_frame *fr = direct_top(p);
  return fr && fr->jm ? fr->f : NULL;
}

/* The field's value is in: marked set in its message. */
static int direct_field_done(struct ana_json_direct *p) {
  struct direct_frame *fr = &p->fr[p->depth - 1];
  ana_json_mark_set(fr->m, fr->f);
  fr->f = NULL;
  return 1;
}

static int direct_on_null(void *ctx) {
  Google__Protobuf__Value *val = direct_value(ctx);
  if (!val)
    return 0;
  val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
  val->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
  return 1;
}

static int direct_on_boolean(void *ctx, int b) {
  struct ana_json_direct *p = ctx;
  const ProtobufCFieldDescriptor *f = direct_field(p);
  if (f && f->type == PROTOBUF_C_TYPE_BOOL) {
    *(protobuf_c_boolean *)ana_json_member(p->fr[p->depth - 1].m, f) = b != 0;
    return direct_field_done(p);
  }
  Google__Protobuf__Value *val = direct_value(p);
  if (!val)
    return 0;
  val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
  val->bool_value = b != 0;
  return 1;
}

/* A number of a Value (yajl checked its grammar) as jansson reads it: an
 * integer of up to 18 digits through long long, anything else through
 * strtod; declined when out of range (underflow included) or longer than
 * 40 characters. */
static int direct_on_number(void *ctx, const char *s, size_t len) {
  Google__Protobuf__Value *val = direct_value(ctx);
  bool real = memchr(s, '.', len) || memchr(s, 'e', len) || memchr(s, 'E', len);
  char buf[48];
  if (!val || len > 40 || (!real && len - (s[0] == '-') > 18))
    return 0;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (real) {
    errno = 0;
    double x = strtod(buf, NULL);
    if (errno == ERANGE || !isfinite(x))
      return 0;
    val->number_value = x;
  } else {
    val->number_value = (double)strtoll(buf, NULL, 10);
  }
  val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  return 1;
}

static int direct_on_string(void *ctx, const unsigned char *s, size_t len) {
  struct ana_json_direct *p = ctx;
  const char *str = (const char *)s;
  bool oom;
  if (!direct_text_ok(p, s, len))
    return 0;
  const ProtobufCFieldDescriptor *f = direct_field(p);
  if (f) {
    ProtobufCMessage *m = p->fr[p->depth - 1].m;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      ProtobufCMessage **slot = ana_json_message_slot(m, f);
      if (ana_json_wkt_of(f->descriptor) != ANA_JSON_WKT_TIMESTAMP ||
          !(*slot = ana_json_new_message(f->descriptor, p->arena)))
        return 0;
      Google__Protobuf__Timestamp *t = (Google__Protobuf__Timestamp *)*slot;
      if (ana_json_parse_timestamp(str, len, &t->seconds, &t->nanos) != 0)
        return 0;
    } else if (f->type == PROTOBUF_C_TYPE_BOOL ||
               ana_json_scalar_from_text(f, str, len, false, ana_json_member(m, f), p->arena,
                                         &oom)) {
      return 0;
    }
    return direct_field_done(p);
  }
  Google__Protobuf__Value *val = direct_value(p);
  char *copy;
  if (!val || ana_json_scalar_from_text(
                  protobuf_c_message_descriptor_get_field(&google__protobuf__value__descriptor, 3),
                  str, len, false, &copy, p->arena, &oom))
    return 0;
  val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  val->string_value = copy;
  return 1;
}

static int direct_on_start_map(void *ctx) {
  struct ana_json_direct *p = ctx;
  ProtobufCMessage *m;
  const struct ana_json_message *jm = NULL;
  if (p->end || p->depth == DIRECT_MAX_FRAMES)
    return 0;
  if (!p->depth) {
    m = p->root;
  } else {
    const ProtobufCFieldDescriptor *f = direct_field(p);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
      return 0;
    enum ana_json_wkt wkt = ana_json_wkt_of(f->descriptor);
    /* messages nest two levels below the element at most */
    if ((wkt != ANA_JSON_WKT_STRUCT && wkt != ANA_JSON_WKT_NONE) ||
        (wkt == ANA_JSON_WKT_NONE && p->depth > 2))
      return 0;
    ProtobufCMessage **slot = ana_json_message_slot(p->fr[p->depth - 1].m, f);
    if (!(*slot = m = ana_json_new_message(f->descriptor, p->arena)))
      return 0;
    if (wkt == ANA_JSON_WKT_STRUCT) {
      p->n = 0;
      p->val = NULL;
      p->fr[p->depth++] = (struct direct_frame){m, NULL, NULL, 0};
      return 1;
    }
  }
  if (m->descriptor->n_fields > 64 || !(jm = ana_json_names_of(m->descriptor)))
    return 0;
  p->fr[p->depth++] = (struct direct_frame){m, jm, NULL, 0};
  return 1;
}

/* A Struct's key: a new entry (as the walk's dec_map fills it). */
static int direct_struct_key(struct ana_json_direct *p, ProtobufCMessage *m, const char *key,
                             size_t klen) {
  const ProtobufCMessageDescriptor *ed = m->descriptor->fields[0].descriptor;
  const ProtobufCFieldDescriptor *kf = protobuf_c_message_descriptor_get_field(ed, 1);
  const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(ed, 2);
  bool oom;
  if (p->n == DIRECT_MAX_ENTRIES)
    return 0;
  for (size_t k = 0; k < p->n; k++) {
    const char *other = *(char **)ana_json_member(p->entries[k], kf);
    if (strncmp(other, key, klen) == 0 && other[klen] == '\0')
      return 0; /* a duplicate key: jansson's error */
  }
  ProtobufCMessage *entry = ana_json_new_message(ed, p->arena);
  Google__Protobuf__Value *val =
      (Google__Protobuf__Value *)ana_json_new_message(vf->descriptor, p->arena);
  /* the key's check refuses a NUL, as jansson does in a key */
  if (!entry || !val ||
      ana_json_scalar_from_text(kf, key, klen, false, ana_json_member(entry, kf), p->arena, &oom))
    return 0;
  *(ProtobufCMessage **)ana_json_member(entry, vf) = &val->base;
  p->entries[p->n++] = entry;
  p->val = val;
  return 1;
}

static int direct_on_map_key(void *ctx, const unsigned char *s, size_t len) {
  struct ana_json_direct *p = ctx;
  struct direct_frame *fr = direct_top(p);
  if (!fr || !direct_text_ok(p, s, len))
    return 0;
  if (!fr->jm)
    return direct_struct_key(p, fr->m, (const char *)s, len);
  const ProtobufCMessageDescriptor *desc = fr->m->descriptor;
  const ProtobufCFieldDescriptor *f = ana_json_field_by_name(desc, fr->jm, (const char *)s, len);
  if (!f || f->label == PROTOBUF_C_LABEL_REPEATED || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
    return 0;
  uint64_t bit = UINT64_C(1) << (f - desc->fields);
  if (fr->seen & bit)
    return 0;
  fr->seen |= bit;
  fr->f = f;
  return 1;
}

static int direct_on_end_map(void *ctx) {
  struct ana_json_direct *p = ctx;
  struct direct_frame *fr = direct_top(p);
  if (!fr)
    return 0;
  ProtobufCMessage *m = fr->m;
  const ProtobufCMessageDescriptor *desc = m->descriptor;
  if (!fr->jm && p->n) {
    const ProtobufCFieldDescriptor *f = &desc->fields[0];
    ProtobufCMessage **arr = ana_arena_alloc(p->arena, p->n * sizeof *arr);
    if (!arr)
      return 0;
    memcpy(arr, p->entries, p->n * sizeof *arr);
    *(size_t *)ana_json_quantifier(m, f) = p->n;
    *(ProtobufCMessage ***)ana_json_member(m, f) = arr;
  } else if (fr->jm) {
    /* proto2 required fields: check_required's case, left to the walk */
    for (unsigned i = 0; i < desc->n_fields; i++) {
      const ProtobufCFieldDescriptor *f = &desc->fields[i];
      if (f->label == PROTOBUF_C_LABEL_REQUIRED &&
          (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) &&
          !*(void *const *)ana_json_member(m, f))
        return 0;
    }
  }
  if (--p->depth)
    return direct_field_done(p);
  p->end = yajl_get_bytes_consumed(p->h);
  return 1;
}

static int direct_on_array(void *ctx) {
  (void)ctx;
  return 0;
}

static const yajl_callbacks direct_callbacks = {
    .yajl_null = direct_on_null,
    .yajl_boolean = direct_on_boolean,
    .yajl_number = direct_on_number,
    .yajl_string = direct_on_string,
    .yajl_start_map = direct_on_start_map,
    .yajl_map_key = direct_on_map_key,
    .yajl_end_map = direct_on_end_map,
    .yajl_start_array = direct_on_array,
    .yajl_end_array = direct_on_array,
};

struct ana_json_direct *ana_json_direct_new(void) {
  return ana_calloc(1, sizeof(struct ana_json_direct));
}

void ana_json_direct_free(struct ana_json_direct *p) {
  if (!p)
    return;
  if (p->h)
    yajl_free(p->h);
  ana_free(p);
}

ProtobufCMessage *ana_json_direct_element(struct ana_json_direct *p,
                                          const ProtobufCMessageDescriptor *desc, const char *text,
                                          size_t len, struct ana_arena *arena) {
  /* yajl takes \f and \v for white space, jansson refuses them (in a
   * string they are errors for both) */
  if (ana_json_wkt_of(desc) != ANA_JSON_WKT_NONE || memchr(text, '\f', len) ||
      memchr(text, '\v', len))
    return NULL;
  if (!p->h) {
    /* one value after another on one handle; UTF-8 checked where a
     * string is used (direct_text_ok) */
    if (!(p->h = yajl_alloc(&direct_callbacks, NULL, p)))
      return NULL;
    yajl_config(p->h, yajl_allow_multiple_values, 1);
    yajl_config(p->h, yajl_dont_validate_strings, 1);
  }
  p->text = text;
  p->len = len;
  p->end = 0;
  p->arena = arena;
  p->depth = 0;
  p->root = ana_json_new_message(desc, arena);
  /* taken when the element's object closed at its last byte */
  if (p->root && yajl_parse(p->h, (const unsigned char *)text, len) == yajl_status_ok && p->end &&
      p->end == len)
    return p->root;
  /* the handle may hold part of a value, or an error: a new one next time */
  yajl_free(p->h);
  p->h = NULL;
  return NULL;
}
