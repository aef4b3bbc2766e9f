/* Canonical proto3 JSON reader: jansson parses the text, then the tree is
 * walked against the protobuf-c descriptors into messages in an arena. */
#include "json_internal.h"

#include "ana_alloc.h"

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fields of one object tracked on the stack; bigger messages use the arena. */
#define SEEN_ON_STACK 32

struct dec {
  struct ana_arena *arena;
  bool ignore_unknown;
  int max_depth;
  struct ana_error *err;
  char path[ANA_JSON_PATH_MAX]; /* JSON path of the value being decoded */
  size_t plen;
};

/* ---- the JSON path ---- */

static void path_append(struct dec *d, const char *s, size_t n) {
  size_t room = sizeof d->path - 1 - d->plen;
  if (n > room)
    n = room;
  memcpy(d->path + d->plen, s, n);
  d->plen += n;
  d->path[d->plen] = '\0';
}

static size_t push_key(struct dec *d, const char *key, size_t len) {
  size_t mark = d->plen;
  if (d->plen)
    path_append(d, ".", 1);
  path_append(d, key, len);
  return mark;
}

static size_t push_index(struct dec *d, size_t i) {
  size_t mark = d->plen;
  char buf[32];
  size_t n = sizeof buf;
  buf[--n] = ']';
  do
    buf[--n] = (char)('0' + i % 10);
  while ((i /= 10) != 0);
  buf[--n] = '[';
  path_append(d, buf + n, sizeof buf - n);
  return mark;
}

static void pop(struct dec *d, size_t mark) {
  d->plen = mark;
  d->path[mark] = '\0';
}

/* ---- errors ---- */

static int fail(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct dec *d, const char *fmt, ...) {
  char reason[ANA_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  if (d->plen)
    ana_error_set(d->err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s", d->path, reason);
  else
    ana_error_set(d->err, ANA_STATUS_INVALID_ARGUMENT, "%s", reason);
  return ANA_ERR_INVALID;
}

static int nomem(struct dec *d) {
  ana_error_set(d->err, ANA_STATUS_RESOURCE_EXHAUSTED, "%s%sout of memory while decoding JSON",
                d->path, d->plen ? ": " : "");
  return ANA_ERR_NOMEM;
}

static const char *jtype(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER:
  case JSON_REAL: return "a number";
  case JSON_TRUE: return "true";
  case JSON_FALSE: return "false";
  case JSON_NULL: return "null";
  }
  return "a value";
}

/* Entering a non-empty container whose members sit at nesting level `level`. */
static int check_depth(struct dec *d, int level) {
  if (level > d->max_depth)
    return fail(d, "nesting deeper than %d levels", d->max_depth);
  return 0;
}

/* ---- scalars ---- */

static int from_text(struct dec *d, const ProtobufCFieldDescriptor *f, const char *s, size_t len,
                     void *dst) {
  bool oom;
  const char *reason = ana_json_scalar_from_text(f, s, len, false, dst, d->arena, &oom);
  if (oom)
    return nomem(d);
  if (!reason)
    return 0;
  if (f->type == PROTOBUF_C_TYPE_ENUM && strcmp(reason, "unknown enum value") == 0) {
    if (d->ignore_unknown)
      return 1;
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    return fail(d, "unknown value \"%.*s\" for enum %s", (int)(len > 100 ? 100 : len), s, ed->name);
  }
  return fail(d, "%s", reason);
}

/* An integer JSON number into an integer or enum field. */
static int from_number(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *v,
                       void *dst) {
  bool neg;
  uint64_t mag;
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    neg = i < 0;
    mag = neg ? (uint64_t)(-(i + 1)) + 1 : (uint64_t)i;
  } else {
    double x = json_real_value(v);
    if (!isfinite(x) || x != floor(x))
      return fail(d, "not an integer");
    if (fabs(x) >= 18446744073709551616.0)
      return fail(d, "%s", ana_json_out_of_range(f->type));
    neg = x < 0;
    mag = (uint64_t)fabs(x);
  }
  const char *reason = ana_json_store_integer(f->type, neg, mag, dst);
  return reason ? fail(d, "%s", reason) : 0;
}

/* One scalar value of field f from v into dst. 0 stored, 1 skipped (an
 * unknown enum name while ignoring unknown values), or an error. */
static int dec_scalar(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *v,
                      void *dst) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if (json_is_number(v))
      return from_number(d, f, v, dst);
    if (json_is_string(v))
      return from_text(d, f, json_string_value(v), json_string_length(v), dst);
    return fail(d, "expected an integer, got %s", jtype(v));
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: {
    if (json_is_string(v))
      return from_text(d, f, json_string_value(v), json_string_length(v), dst);
    if (!json_is_number(v))
      return fail(d, "expected a number, got %s", jtype(v));
    double x = json_number_value(v);
    if (f->type == PROTOBUF_C_TYPE_DOUBLE) {
      *(double *)dst = x;
      return 0;
    }
    if (!ana_json_fits_float(x))
      return fail(d, "%s", ana_json_out_of_range(f->type));
    *(float *)dst = (float)x;
    return 0;
  }
  case PROTOBUF_C_TYPE_BOOL:
    if (!json_is_boolean(v))
      return fail(d, "expected true or false, got %s", jtype(v));
    *(protobuf_c_boolean *)dst = json_is_true(v);
    return 0;
  case PROTOBUF_C_TYPE_ENUM:
    if (json_is_number(v))
      return from_number(d, f, v, dst);
    if (json_is_string(v))
      return from_text(d, f, json_string_value(v), json_string_length(v), dst);
    return fail(d, "expected an enum name or number, got %s", jtype(v));
  case PROTOBUF_C_TYPE_STRING:
    if (!json_is_string(v))
      return fail(d, "expected a string, got %s", jtype(v));
    return from_text(d, f, json_string_value(v), json_string_length(v), dst);
  case PROTOBUF_C_TYPE_BYTES:
    if (!json_is_string(v))
      return fail(d, "expected a base64 string, got %s", jtype(v));
    return from_text(d, f, json_string_value(v), json_string_length(v), dst);
  case PROTOBUF_C_TYPE_MESSAGE: break;
  }
  return fail(d, "not a scalar field");
}

/* ---- messages ---- */

static int dec_message(struct dec *d, ProtobufCMessage *m, const json_t *v, int depth);

static bool is_value_type(const ProtobufCFieldDescriptor *f) {
  return f->type == PROTOBUF_C_TYPE_MESSAGE && ana_json_wkt_of(f->descriptor) == ANA_JSON_WKT_VALUE;
}

/* A new message of f's type decoded from v (an element or map value). */
static int dec_new_message(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *v,
                           int depth, ProtobufCMessage **out) {
  ProtobufCMessage *sub = ana_json_new_message(f->descriptor, d->arena);
  if (!sub)
    return nomem(d);
  *out = sub;
  return dec_message(d, sub, v, depth);
}

/* A map field from a JSON object (replacing the field's entries). */
static int dec_map(struct dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                   const json_t *v, int depth) {
  if (!json_is_object(v))
    return fail(d, "expected an object, got %s", jtype(v));
  size_t n = json_object_size(v);
  ana_json_clear_field(m, f);
  if (n == 0)
    return 0;
  int rc = check_depth(d, depth + 1);
  if (rc)
    return rc;
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = protobuf_c_message_descriptor_get_field(ed, 1);
  const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(ed, 2);
  ProtobufCMessage **entries = ana_arena_calloc(d->arena, n, sizeof *entries);
  if (!entries)
    return nomem(d);
  size_t k = 0;
  const char *key;
  size_t klen;
  json_t *val;
  json_object_keylen_foreach((json_t *)v, key, klen, val) {
    size_t mark = push_key(d, key, klen);
    ProtobufCMessage *entry = ana_json_new_message(ed, d->arena);
    if (!entry)
      return nomem(d);
    bool oom;
    const char *reason =
        ana_json_scalar_from_text(kf, key, klen, false, ana_json_member(entry, kf), d->arena, &oom);
    if (oom)
      return nomem(d);
    if (reason)
      return fail(d, "invalid map key: %s", reason);
    void *slot = ana_json_member(entry, vf);
    if (json_is_null(val) && !is_value_type(vf))
      return fail(d, "null is not allowed as a map value");
    if (vf->type == PROTOBUF_C_TYPE_MESSAGE) {
      rc = dec_new_message(d, vf, val, depth + 1, slot);
    } else {
      rc = dec_scalar(d, vf, val, slot);
      if (rc == 1) { /* ignored unknown enum value: drop the entry */
        pop(d, mark);
        continue;
      }
    }
    if (rc)
      return rc;
    entries[k++] = entry;
    pop(d, mark);
  }
  *(size_t *)ana_json_quantifier(m, f) = k;
  *(ProtobufCMessage ***)ana_json_member(m, f) = k ? entries : NULL;
  return 0;
}

/* A repeated field from a JSON array (replacing the field's elements). */
static int dec_array(struct dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                     const json_t *v, int depth) {
  if (!json_is_array(v))
    return fail(d, "expected an array, got %s", jtype(v));
  size_t n = json_array_size(v);
  ana_json_clear_field(m, f);
  if (n == 0)
    return 0;
  int rc = check_depth(d, depth + 1);
  if (rc)
    return rc;
  size_t es = ana_json_elem_size(f->type);
  char *arr = ana_arena_calloc(d->arena, n, es);
  if (!arr)
    return nomem(d);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const json_t *item = json_array_get(v, i);
    size_t mark = push_index(d, i);
    if (json_is_null(item) && !is_value_type(f))
      return fail(d, "null is not allowed in a repeated field");
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
      rc = dec_new_message(d, f, item, depth + 1, (ProtobufCMessage **)(arr + k * es));
    else
      rc = dec_scalar(d, f, item, arr + k * es);
    if (rc < 0)
      return rc;
    if (rc == 0)
      k++;
    pop(d, mark);
  }
  *(size_t *)ana_json_quantifier(m, f) = k;
  *(void **)ana_json_member(m, f) = k ? arr : NULL;
  return 0;
}

/* One field of m from v; depth counts the containers around v. */
static int dec_field(struct dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                     const json_t *v, int depth) {
  if (json_is_null(v)) {
    /* null means "unset", except where null is a value of its own. */
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
      if (is_value_type(f)) {
        ProtobufCMessage **slot = ana_json_message_slot(m, f);
        if (!*slot && !(*slot = ana_json_new_message(f->descriptor, d->arena)))
          return nomem(d);
        Google__Protobuf__Value *val = (Google__Protobuf__Value *)*slot;
        val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        val->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        ana_json_mark_set(m, f);
        return 0;
      }
      if (f->type == PROTOBUF_C_TYPE_ENUM &&
          strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name,
                 "google.protobuf.NullValue") == 0) {
        *(int *)ana_json_member(m, f) = 0;
        ana_json_mark_set(m, f);
        return 0;
      }
    }
    ana_json_clear_field(m, f);
    return 0;
  }
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
        ana_json_is_map_entry(f->descriptor, ana_json_names_of(f->descriptor)))
      return dec_map(d, m, f, v, depth);
    return dec_array(d, m, f, v, depth);
  }
  int rc;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
    ProtobufCMessage **slot = ana_json_message_slot(m, f);
    if (!*slot && !(*slot = ana_json_new_message(f->descriptor, d->arena)))
      return nomem(d);
    rc = dec_message(d, *slot, v, depth);
  } else {
    rc = dec_scalar(d, f, v, ana_json_member(m, f));
    if (rc == 1)
      return 0;
  }
  if (rc == 0)
    ana_json_mark_set(m, f);
  return rc;
}

/* The members of a regular message from object v (skipping skip_key, the
 * "@type" of an Any). Fields named twice, and two members of one oneof, are
 * errors. */
static int dec_fields(struct dec *d, ProtobufCMessage *m, const json_t *v, int depth,
                      const char *skip_key) {
  if (json_object_size(v) == 0)
    return 0;
  int rc = check_depth(d, depth + 1);
  if (rc)
    return rc;
  const ProtobufCMessageDescriptor *desc = m->descriptor;
  const struct ana_json_message *jm = ana_json_names_of(desc);
  /* seen[i]: the key that named field i, if any, and whether it was non-null. */
  const char *seen_stack[SEEN_ON_STACK];
  bool nonnull_stack[SEEN_ON_STACK];
  const char **seen = seen_stack;
  bool *nonnull = nonnull_stack;
  if (desc->n_fields > SEEN_ON_STACK) {
    seen = ana_arena_calloc(d->arena, desc->n_fields, sizeof *seen);
    nonnull = ana_arena_calloc(d->arena, desc->n_fields, sizeof *nonnull);
    if (!seen || !nonnull)
      return nomem(d);
  } else {
    memset(seen_stack, 0, sizeof seen_stack);
    memset(nonnull_stack, 0, sizeof nonnull_stack);
  }
  const char *key;
  size_t klen;
  json_t *val;
  json_object_keylen_foreach((json_t *)v, key, klen, val) {
    if (skip_key && strcmp(key, skip_key) == 0)
      continue;
    size_t mark = push_key(d, key, klen);
    const ProtobufCFieldDescriptor *f = ana_json_field_by_name(desc, jm, key, klen);
    if (!f) {
      if (!d->ignore_unknown)
        return fail(d, "unknown field");
      pop(d, mark);
      continue;
    }
    size_t i = (size_t)(f - desc->fields);
    if (seen[i])
      return fail(d, "field given twice (also as \"%s\")", seen[i]);
    seen[i] = key;
    nonnull[i] = !json_is_null(val);
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && nonnull[i]) {
      for (size_t j = 0; j < desc->n_fields; j++) {
        const ProtobufCFieldDescriptor *g = &desc->fields[j];
        if (j != i && nonnull[j] && (g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            g->quantifier_offset == f->quantifier_offset)
          return fail(d, "only one field of a oneof may be set (\"%s\" is set too)", seen[j]);
      }
    }
    rc = dec_field(d, m, f, val, depth + 1);
    if (rc)
      return rc;
    pop(d, mark);
  }
  return 0;
}

static int dec_value(struct dec *d, Google__Protobuf__Value *val, const json_t *v, int depth) {
  int rc;
  switch (json_typeof(v)) {
  case JSON_NULL:
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    val->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
    return 0;
  case JSON_TRUE:
  case JSON_FALSE:
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    val->bool_value = json_is_true(v);
    return 0;
  case JSON_INTEGER:
  case JSON_REAL:
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    val->number_value = json_number_value(v);
    return 0;
  case JSON_STRING: {
    char *s;
    rc = from_text(d,
                   protobuf_c_message_descriptor_get_field(&google__protobuf__value__descriptor, 3),
                   json_string_value(v), json_string_length(v), &s);
    if (rc)
      return rc;
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    val->string_value = s;
    return 0;
  }
  case JSON_OBJECT: {
    ProtobufCMessage *s = ana_json_new_message(&google__protobuf__struct__descriptor, d->arena);
    if (!s)
      return nomem(d);
    rc = dec_map(d, s, &google__protobuf__struct__descriptor.fields[0], v, depth);
    if (rc)
      return rc;
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    val->struct_value = (Google__Protobuf__Struct *)s;
    return 0;
  }
  case JSON_ARRAY: {
    ProtobufCMessage *l = ana_json_new_message(&google__protobuf__list_value__descriptor, d->arena);
    if (!l)
      return nomem(d);
    rc = dec_array(d, l, &google__protobuf__list_value__descriptor.fields[0], v, depth);
    if (rc)
      return rc;
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    val->list_value = (Google__Protobuf__ListValue *)l;
    return 0;
  }
  }
  return fail(d, "unexpected JSON value");
}

static int dec_any(struct dec *d, Google__Protobuf__Any *any, const json_t *v, int depth) {
  if (!json_is_object(v))
    return fail(d, "expected an object, got %s", jtype(v));
  if (json_object_size(v) == 0)
    return 0;
  int rc = check_depth(d, depth + 1);
  if (rc)
    return rc;
  const json_t *type = json_object_get(v, "@type");
  if (!type)
    return fail(d, "@type is missing");
  size_t mark = push_key(d, "@type", 5);
  if (!json_is_string(type))
    return fail(d, "expected a type URL string, got %s", jtype(type));
  const char *url = json_string_value(type);
  if (strlen(url) != json_string_length(type))
    return fail(d, "contains NUL (\\u0000), which is not supported");
  const ProtobufCMessageDescriptor *desc = ana_json_type_from_url(url);
  if (!desc)
    return fail(d, "unknown type \"%.200s\"", url);
  pop(d, mark);
  ProtobufCMessage *inner = ana_json_new_message(desc, d->arena);
  if (!inner)
    return nomem(d);
  if (ana_json_wkt_of(desc) != ANA_JSON_WKT_NONE) {
    /* Types with a JSON form of their own travel as {"@type":..., "value":...}. */
    const json_t *value = NULL;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
      if (strcmp(key, "value") == 0) {
        value = val;
      } else if (strcmp(key, "@type") != 0 && !d->ignore_unknown) {
        push_key(d, key, strlen(key));
        return fail(d, "unknown field");
      }
    }
    if (!value)
      return fail(d, "\"value\" is missing for %s", desc->name);
    mark = push_key(d, "value", 5);
    rc = dec_message(d, inner, value, depth + 1);
    if (rc)
      return rc;
    pop(d, mark);
  } else {
    rc = dec_fields(d, inner, v, depth, "@type");
    if (rc)
      return rc;
  }
  size_t size = protobuf_c_message_get_packed_size(inner);
  uint8_t *bytes = ana_arena_alloc(d->arena, size ? size : 1);
  char *url_copy = ana_arena_strdup(d->arena, url);
  if (!bytes || !url_copy)
    return nomem(d);
  protobuf_c_message_pack(inner, bytes);
  any->type_url = url_copy;
  any->value.data = size ? bytes : NULL;
  any->value.len = size;
  return 0;
}

static int dec_field_mask(struct dec *d, ProtobufCMessage *m, const json_t *v) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, 1);
  if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label != PROTOBUF_C_LABEL_REPEATED)
    return fail(d, "unsupported FieldMask type");
  if (!json_is_string(v))
    return fail(d, "expected a FieldMask string, got %s", jtype(v));
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  ana_json_clear_field(m, f);
  if (len == 0)
    return 0;
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && s[i] != ',')
      continue;
    size_t n = i - start, size = 2 * n + 1;
    char *path = ana_arena_alloc(d->arena, size);
    if (!path)
      return nomem(d);
    if (memchr(s + start, '\0', n) || ana_json_mask_path_from_json(s + start, n, path, size) < 0)
      return fail(d, "invalid FieldMask path \"%.*s\" (paths are lowerCamelCase)",
                  (int)(n > 100 ? 100 : n), s + start);
    if (ana_json_append(m, f, &path, d->arena))
      return nomem(d);
    start = i + 1;
  }
  return 0;
}

/* proto2 required strings and messages must be there: protobuf-c cannot
 * pack a message without them. (Required scalars always hold a value.) */
static int check_required(struct dec *d, const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *desc = m->descriptor;
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &desc->fields[i];
    if (f->label == PROTOBUF_C_LABEL_REQUIRED &&
        (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) &&
        !*(void *const *)ana_json_member(m, f))
      return fail(d, "missing required field \"%s\"", f->name);
  }
  return 0;
}

/* Message m from v, whose JSON form depends on its type; depth counts the
 * containers around v. */
static int dec_message(struct dec *d, ProtobufCMessage *m, const json_t *v, int depth) {
  const ProtobufCMessageDescriptor *desc = m->descriptor;
  switch (ana_json_wkt_of(desc)) {
  case ANA_JSON_WKT_TIMESTAMP: {
    Google__Protobuf__Timestamp *t = (Google__Protobuf__Timestamp *)m;
    int rc = -1;
    if (json_is_string(v))
      rc = ana_json_parse_timestamp(json_string_value(v), json_string_length(v), &t->seconds,
                                    &t->nanos);
    if (rc == -2)
      return fail(d, "timestamp out of range (years 0001 to 9999)");
    return rc ? fail(d, "not an RFC 3339 timestamp") : 0;
  }
  case ANA_JSON_WKT_DURATION: {
    Google__Protobuf__Duration *t = (Google__Protobuf__Duration *)m;
    int rc = -1;
    if (json_is_string(v))
      rc = ana_json_parse_duration(json_string_value(v), json_string_length(v), false, &t->seconds,
                                   &t->nanos);
    if (rc == -2)
      return fail(d, "duration out of range (at most 315576000000s either way)");
    return rc ? fail(d, "not a duration (like \"1.5s\")") : 0;
  }
  case ANA_JSON_WKT_WRAPPER: {
    int rc = dec_scalar(d, &desc->fields[0], v, ana_json_member(m, &desc->fields[0]));
    return rc < 0 ? rc : 0;
  }
  case ANA_JSON_WKT_FIELD_MASK: return dec_field_mask(d, m, v);
  case ANA_JSON_WKT_VALUE: return dec_value(d, (Google__Protobuf__Value *)m, v, depth);
  case ANA_JSON_WKT_STRUCT: return dec_map(d, m, &desc->fields[0], v, depth);
  case ANA_JSON_WKT_LIST_VALUE: return dec_array(d, m, &desc->fields[0], v, depth);
  case ANA_JSON_WKT_ANY: return dec_any(d, (Google__Protobuf__Any *)m, v, depth);
  case ANA_JSON_WKT_NONE: break;
  }
  if (!json_is_object(v))
    return fail(d, "expected an object, got %s", jtype(v));
  int rc = dec_fields(d, m, v, depth, NULL);
  if (rc)
    return rc;
  return check_required(d, m);
}

/* ---- entry points ---- */

static void copy_path(char *out, size_t size, const char *path) {
  if (out && size) {
    size_t n = strlen(path);
    if (n >= size)
      n = size - 1;
    memcpy(out, path, n);
    out[n] = '\0';
  }
}

int ana_json_decode_at(ProtobufCMessage *msg, const json_t *value, struct ana_arena *arena,
                       const struct ana_json_options *opts, struct ana_error *err,
                       const char *prefix, char *field_path, size_t field_path_size) {
  struct dec d = {
      .arena = arena,
      .ignore_unknown = opts && opts->ignore_unknown,
      .max_depth = opts && opts->max_depth > 0 ? opts->max_depth : ANA_JSON_DEFAULT_MAX_DEPTH,
      .err = err,
  };
  path_append(&d, prefix, strlen(prefix));
  int rc;
  if (!msg || !value || !arena)
    rc = fail(&d, "nothing to decode");
  else
    rc = dec_message(&d, msg, value, 0);
  copy_path(field_path, field_path_size, rc ? d.path : "");
  return rc;
}

int ana_json_decode_value(ProtobufCMessage *msg, const json_t *value, struct ana_arena *arena,
                          const struct ana_json_options *opts, struct ana_error *err,
                          char *field_path, size_t field_path_size) {
  return ana_json_decode_at(msg, value, arena, opts, err, "", field_path, field_path_size);
}

/* Where in text (up to byte `end`) the parser stopped: the JSON path of the
 * innermost value being read, from a light re-scan of the valid prefix. */
static void error_path(const char *s, size_t end, char *out, size_t size) {
  enum { MAX_FRAMES = 64 };
  struct frame {
    bool array;
    bool want_key; /* object: the next string is a key */
    size_t index;
    const char *key;
    size_t klen;
  } st[MAX_FRAMES];
  size_t depth = 0;
  for (size_t i = 0; i < end; i++) {
    struct frame *top = depth && depth <= MAX_FRAMES ? &st[depth - 1] : NULL;
    switch (s[i]) {
    case '{':
    case '[':
      if (depth < MAX_FRAMES)
        st[depth] = (struct frame){.array = s[i] == '[', .want_key = s[i] == '{'};
      depth++;
      break;
    case '}':
    case ']':
      if (depth)
        depth--;
      break;
    case ',':
      if (top && top->array)
        top->index++;
      else if (top)
        top->want_key = true, top->key = NULL;
      break;
    case ':':
      if (top)
        top->want_key = false;
      break;
    case '"': {
      size_t j = i + 1;
      while (j < end && s[j] != '"')
        j += s[j] == '\\' ? 2 : 1;
      if (top && !top->array && top->want_key) {
        top->key = s + i + 1;
        top->klen = (j < end ? j : end) - (i + 1);
      }
      i = j;
      break;
    }
    default: break;
    }
  }
  size_t n = 0;
  if (size == 0)
    return;
  out[0] = '\0';
  for (size_t k = 0; k < depth && k < MAX_FRAMES; k++) {
    char seg[160];
    int len;
    if (st[k].array)
      len = snprintf(seg, sizeof seg, "[%zu]", st[k].index);
    else if (st[k].key)
      len = snprintf(seg, sizeof seg, "%s%.*s", n ? "." : "",
                     (int)(st[k].klen > 128 ? 128 : st[k].klen), st[k].key);
    else
      break;
    if (len < 0 || n + (size_t)len >= size)
      break;
    memcpy(out + n, seg, (size_t)len + 1);
    n += (size_t)len;
  }
}

static ProtobufCMessage *decode_whole(const ProtobufCMessageDescriptor *desc, const char *json,
                                      size_t len, struct ana_arena *arena,
                                      const struct ana_json_options *opts, struct ana_error *err,
                                      char *field_path, size_t field_path_size) {
  if (!json)
    json = "", len = 0;
  json_error_t jerr;
  json_t *root =
      json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
  if (!root) {
    char path[ANA_JSON_PATH_MAX];
    size_t end = jerr.position > 0 ? (size_t)jerr.position : 0;
    if (end > len)
      end = len;
    /* A syntax error is reported after its token: a structural character
     * there belongs to the error, not to the path. */
    if (json_error_code(&jerr) == json_error_invalid_syntax && end > 0 && json[end - 1] &&
        strchr("{}[],:", json[end - 1]))
      end--;
    error_path(json, end, path, sizeof path);
    const char *reason = jerr.text;
    enum ana_status code = ANA_STATUS_INVALID_ARGUMENT;
    switch (json_error_code(&jerr)) {
    case json_error_invalid_utf8: reason = "invalid UTF-8 in JSON text"; break;
    case json_error_duplicate_key: reason = "duplicate key"; break;
    case json_error_null_byte_in_key:
      reason = "NUL (\\u0000) in an object key is not supported";
      break;
    case json_error_stack_overflow: reason = "JSON nested too deeply"; break;
    case json_error_premature_end_of_input: reason = "JSON text ends too early"; break;
    case json_error_numeric_overflow:
      reason = strstr(jerr.text, "integer")
                   ? "integer out of range (write 64-bit values as strings)"
                   : "number out of range";
      break;
    case json_error_out_of_memory:
      code = ANA_STATUS_RESOURCE_EXHAUSTED;
      reason = "out of memory while parsing JSON";
      break;
    default: break;
    }
    ana_error_set(err, code, "%s%s%s%s (line %d, column %d)", path, *path ? ": " : "",
                  code == ANA_STATUS_INVALID_ARGUMENT && reason == jerr.text ? "invalid JSON: "
                                                                             : "",
                  reason, jerr.line, jerr.column);
    copy_path(field_path, field_path_size, path);
    return NULL;
  }
  ProtobufCMessage *msg = desc && arena ? ana_json_new_message(desc, arena) : NULL;
  int rc;
  if (!msg) {
    rc = ANA_ERR_NOMEM;
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory while decoding JSON");
    copy_path(field_path, field_path_size, "");
  } else {
    rc = ana_json_decode_at(msg, root, arena, opts, err, "", field_path, field_path_size);
  }
  json_decref(root);
  return rc ? NULL : msg;
}

/* ---- large arrays decoded in parallel chunks ---- */

/* Documents this large (and arrays of at least PARALLEL_MIN_ELEMENTS) are
 * split; each chunk of PARALLEL_CHUNK elements is parsed and decoded on its
 * own, into an arena of its own. */
#define PARALLEL_MIN_BYTES (64u << 10)
#define PARALLEL_MIN_ELEMENTS 128
#define PARALLEL_CHUNK 64

static size_t skip_ws(const char *s, size_t i, size_t end) {
  while (i < end && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
    i++;
  return i;
}

/* The index after the closing quote of the string whose opening quote is
 * s[i], or 0 when it runs past end. */
static size_t skip_string(const char *s, size_t i, size_t end) {
  for (size_t j = i + 1; j < end;) {
    const char *q = memchr(s + j, '"', end - j);
    if (!q)
      return 0;
    size_t k = (size_t)(q - s), backslashes = 0;
    while (k - backslashes > i + 1 && s[k - backslashes - 1] == '\\')
      backslashes++;
    if (backslashes % 2 == 0)
      return k + 1;
    j = k + 1;
  }
  return 0;
}

/* The end of the JSON value starting at s[i] (before end), as far as a
 * light scan can tell: strings and nesting are followed, nothing is
 * checked (jansson checks every piece later). 0 when it runs past end. */
static size_t skip_value(const char *s, size_t i, size_t end) {
  size_t depth = 0;
  do {
    if (i >= end)
      return 0;
    char ch = s[i];
    if (ch == '"') {
      if (!(i = skip_string(s, i, end)))
        return 0;
    } else if (ch == '{' || ch == '[') {
      depth++;
      i++;
    } else if (ch == '}' || ch == ']') {
      if (!depth)
        return 0;
      depth--;
      i++;
    } else if (depth) {
      i++;
    } else {
      while (i < end && !strchr(",]} \t\r\n", s[i]))
        i++;
    }
  } while (depth);
  return i;
}

struct split {
  const ProtobufCFieldDescriptor *field; /* the array's field */
  size_t start, end;                     /* the array, brackets included */
  size_t n, cap;                         /* its elements */
  size_t *bounds;                        /* element k: [bounds[2k], bounds[2k+1]) */
};

/* The elements of the array opening at s[start] into sp (bounds in arena);
 * the index after its closing bracket, or 0 when it does not scan cleanly
 * (a trailing comma, a missing one, out of memory). */
static size_t split_array(const char *s, size_t start, size_t len, struct ana_arena *arena,
                          struct split *sp) {
  size_t i = skip_ws(s, start + 1, len);
  if (i < len && s[i] == ']')
    return i + 1;
  while (i < len) {
    size_t e = skip_value(s, i, len);
    if (!e)
      return 0;
    if (sp->n == sp->cap) {
      size_t cap = sp->cap ? sp->cap * 2 : 1024;
      size_t *b = ana_arena_alloc(arena, 2 * cap * sizeof *b);
      if (!b)
        return 0;
      if (sp->cap)
        memcpy(b, sp->bounds, 2 * sp->cap * sizeof *b);
      sp->bounds = b;
      sp->cap = cap;
    }
    sp->bounds[2 * sp->n] = i;
    sp->bounds[2 * sp->n + 1] = e;
    sp->n++;
    i = skip_ws(s, e, len);
    if (i < len && s[i] == ']')
      return i + 1;
    if (i >= len || s[i] != ',')
      return 0;
    i = skip_ws(s, i + 1, len);
    if (i < len && s[i] == ']')
      return 0; /* a trailing comma */
  }
  return 0;
}

/* The top-level object's largest array, when it holds messages (no map, no
 * well-known type) and it and its surroundings scan cleanly; false
 * otherwise (then the document is decoded whole). */
static bool find_split(const ProtobufCMessageDescriptor *desc, const char *s, size_t len,
                       struct ana_arena *arena, struct split *out) {
  const struct ana_json_message *jm = ana_json_names_of(desc);
  size_t i = skip_ws(s, 0, len);
  memset(out, 0, sizeof *out);
  if (i >= len || s[i] != '{')
    return false;
  i = skip_ws(s, i + 1, len);
  while (i < len && s[i] != '}') {
    if (s[i] != '"')
      return false;
    size_t k = i + 1, kend = skip_string(s, i, len);
    /* keys as they are written: no escapes, no NUL (jansson refuses those) */
    if (!kend || memchr(s + k, '\\', kend - 1 - k) || memchr(s + k, '\0', kend - 1 - k))
      return false;
    i = skip_ws(s, kend, len);
    if (i >= len || s[i] != ':')
      return false;
    size_t v = skip_ws(s, i + 1, len), vend = 0;
    const ProtobufCFieldDescriptor *f =
        v < len && s[v] == '[' ? ana_json_field_by_name(desc, jm, s + k, kend - 1 - k) : NULL;
    if (f && f->label == PROTOBUF_C_LABEL_REPEATED && f->type == PROTOBUF_C_TYPE_MESSAGE &&
        ana_json_wkt_of(f->descriptor) == ANA_JSON_WKT_NONE &&
        !ana_json_is_map_entry(f->descriptor, ana_json_names_of(f->descriptor))) {
      struct split sp = {f, v, 0, 0, 0, NULL};
      if (!(vend = split_array(s, v, len, arena, &sp)))
        return false;
      sp.end = vend;
      if (sp.end - sp.start > out->end - out->start)
        *out = sp;
    } else if (!(vend = skip_value(s, v, len))) {
      return false;
    }
    i = skip_ws(s, vend, len);
    if (i < len && s[i] == ',')
      i = skip_ws(s, i + 1, len);
    else if (i >= len || s[i] != '}')
      return false;
  }
  if (i >= len || skip_ws(s, i + 1, len) != len || !out->field)
    return false;
  return out->n > 1;
}

/* ---- simple elements decoded straight from the text ---- */

/* Most elements of a large batch are flat: strings without escapes, a
 * timestamp, a Struct of plain values. Parsing them with jansson (a tree
 * of allocations, then walked) was most of the decode's CPU; they are read
 * here in one pass into the same message the tree would give. Anything
 * else (an escape, a byte outside ASCII, an array, null, a number outside
 * a Value, an unknown or repeated field, any error) declines: the element
 * then goes through jansson and the walk, which say what is wrong. */
#define DIRECT_MAX_ENTRIES 64
#define DIRECT_MIN_DEPTH 8

struct direct {
  const char *s;
  size_t i, end;
  struct ana_arena *arena;
};

static void direct_ws(struct direct *p) {
  while (p->i < p->end &&
         (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
    p->i++;
}

/* A string of printable ASCII without escapes at p->i (its quotes
 * excluded into *str, *len); false otherwise. */
static bool direct_string(struct direct *p, const char **str, size_t *len) {
  if (p->i >= p->end || p->s[p->i] != '"')
    return false;
  size_t j = p->i + 1;
  while (j < p->end) {
    unsigned char ch = (unsigned char)p->s[j];
    if (ch == '"')
      break;
    if (ch < 0x20 || ch >= 0x7f || ch == '\\')
      return false;
    j++;
  }
  if (j >= p->end)
    return false;
  *str = p->s + p->i + 1;
  *len = j - p->i - 1;
  p->i = j + 1;
  return true;
}

static bool direct_literal(struct direct *p, const char *word) {
  size_t n = strlen(word);
  if (p->end - p->i < n || memcmp(p->s + p->i, word, n) != 0)
    return false;
  p->i += n;
  return true;
}

/* A JSON number (its grammar checked) as jansson reads it: an integer of up
 * to 18 digits through long long, anything else through strtod; false when
 * malformed, out of range or longer than 40 characters. */
static bool direct_number(struct direct *p, double *out) {
  size_t j = p->i, digits = 0;
  bool real = false;
  if (j < p->end && p->s[j] == '-')
    j++;
  if (j < p->end && p->s[j] == '0') {
    j++;
    digits = 1;
  } else {
    while (j < p->end && p->s[j] >= '0' && p->s[j] <= '9')
      j++, digits++;
  }
  if (!digits)
    return false;
  if (j < p->end && p->s[j] == '.') {
    size_t frac = 0;
    for (j++; j < p->end && p->s[j] >= '0' && p->s[j] <= '9'; j++)
      frac++;
    if (!frac)
      return false;
    real = true;
  }
  if (j < p->end && (p->s[j] == 'e' || p->s[j] == 'E')) {
    size_t exp = 0;
    j++;
    if (j < p->end && (p->s[j] == '+' || p->s[j] == '-'))
      j++;
    for (; j < p->end && p->s[j] >= '0' && p->s[j] <= '9'; j++)
      exp++;
    if (!exp)
      return false;
    real = true;
  }
  char buf[48];
  size_t n = j - p->i;
  if (n > 40 || (!real && digits > 18))
    return false;
  memcpy(buf, p->s + p->i, n);
  buf[n] = '\0';
  if (real) {
    errno = 0;
    double x = strtod(buf, NULL);
    if (errno == ERANGE || !isfinite(x))
      return false;
    *out = x;
  } else {
    *out = (double)strtoll(buf, NULL, 10);
  }
  p->i = j;
  return true;
}

/* A Value of a Struct: a string, a number, true, false or null. */
static bool direct_value(struct direct *p, Google__Protobuf__Value *val) {
  if (p->i >= p->end)
    return false;
  char ch = p->s[p->i];
  if (ch == '"') {
    const char *str;
    size_t len;
    bool oom;
    char *copy;
    if (!direct_string(p, &str, &len) ||
        ana_json_scalar_from_text(
            protobuf_c_message_descriptor_get_field(&google__protobuf__value__descriptor, 3), str,
            len, false, &copy, p->arena, &oom))
      return false;
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    val->string_value = copy;
    return true;
  }
  if (ch == 't' || ch == 'f') {
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    val->bool_value = ch == 't';
    return direct_literal(p, ch == 't' ? "true" : "false");
  }
  if (ch == 'n') {
    val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    val->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
    return direct_literal(p, "null");
  }
  val->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  return direct_number(p, &val->number_value);
}

/* A Struct's object into its map field (as dec_map fills it). */
static bool direct_struct(struct direct *p, ProtobufCMessage *m) {
  const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = protobuf_c_message_descriptor_get_field(ed, 1);
  const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(ed, 2);
  ProtobufCMessage *entries[DIRECT_MAX_ENTRIES];
  const char *keys[DIRECT_MAX_ENTRIES];
  size_t klens[DIRECT_MAX_ENTRIES], n = 0;
  if (p->i >= p->end || p->s[p->i] != '{')
    return false;
  p->i++;
  direct_ws(p);
  if (p->i < p->end && p->s[p->i] == '}') {
    p->i++;
    return true;
  }
  for (;;) {
    const char *key;
    size_t klen;
    bool oom;
    if (n == DIRECT_MAX_ENTRIES || !direct_string(p, &key, &klen))
      return false;
    for (size_t k = 0; k < n; k++)
      if (klens[k] == klen && memcmp(keys[k], key, klen) == 0)
        return false; /* a duplicate key: jansson's error */
    direct_ws(p);
    if (p->i >= p->end || p->s[p->i] != ':')
      return false;
    p->i++;
    direct_ws(p);
    ProtobufCMessage *entry = ana_json_new_message(ed, p->arena);
    Google__Protobuf__Value *val =
        (Google__Protobuf__Value *)ana_json_new_message(vf->descriptor, p->arena);
    if (!entry || !val ||
        ana_json_scalar_from_text(kf, key, klen, false, ana_json_member(entry, kf), p->arena,
                                  &oom) ||
        !direct_value(p, val))
      return false;
    *(ProtobufCMessage **)ana_json_member(entry, vf) = &val->base;
    keys[n] = key;
    klens[n] = klen;
    entries[n++] = entry;
    direct_ws(p);
    if (p->i < p->end && p->s[p->i] == ',') {
      p->i++;
      direct_ws(p);
      continue;
    }
    if (p->i < p->end && p->s[p->i] == '}') {
      p->i++;
      break;
    }
    return false;
  }
  ProtobufCMessage **arr = ana_arena_alloc(p->arena, n * sizeof *arr);
  if (!arr)
    return false;
  memcpy(arr, entries, n * sizeof *arr);
  *(size_t *)ana_json_quantifier(m, f) = n;
  *(ProtobufCMessage ***)ana_json_member(m, f) = arr;
  return true;
}

/* A regular message's object: each field once, no oneof, none repeated. */
static bool direct_message(struct direct *p, ProtobufCMessage *m, int level) {
  const ProtobufCMessageDescriptor *desc = m->descriptor;
  const struct ana_json_message *jm = ana_json_names_of(desc);
  uint64_t seen = 0;
  if (level > 2 || desc->n_fields > 64 || p->i >= p->end || p->s[p->i] != '{')
    return false;
  p->i++;
  direct_ws(p);
  if (p->i < p->end && p->s[p->i] == '}') {
    p->i++;
    return true;
  }
  for (;;) {
    const char *key, *str;
    size_t klen, len;
    bool oom;
    if (!direct_string(p, &key, &klen))
      return false;
    const ProtobufCFieldDescriptor *f = ana_json_field_by_name(desc, jm, key, klen);
    if (!f || f->label == PROTOBUF_C_LABEL_REPEATED || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
      return false;
    uint64_t bit = UINT64_C(1) << (f - desc->fields);
    if (seen & bit)
      return false;
    seen |= bit;
    direct_ws(p);
    if (p->i >= p->end || p->s[p->i] != ':')
      return false;
    p->i++;
    direct_ws(p);
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      ProtobufCMessage **slot = ana_json_message_slot(m, f);
      if (!*slot && !(*slot = ana_json_new_message(f->descriptor, p->arena)))
        return false;
      switch (ana_json_wkt_of(f->descriptor)) {
      case ANA_JSON_WKT_TIMESTAMP: {
        Google__Protobuf__Timestamp *t = (Google__Protobuf__Timestamp *)*slot;
        if (!direct_string(p, &str, &len) ||
            ana_json_parse_timestamp(str, len, &t->seconds, &t->nanos) != 0)
          return false;
        break;
      }
      case ANA_JSON_WKT_STRUCT:
        if (!direct_struct(p, *slot))
          return false;
        break;
      case ANA_JSON_WKT_NONE:
        if (!direct_message(p, *slot, level + 1))
          return false;
        break;
      default: return false;
      }
    } else if (f->type == PROTOBUF_C_TYPE_BOOL) {
      bool t = p->i < p->end && p->s[p->i] == 't';
      if (!direct_literal(p, t ? "true" : "false"))
        return false;
      *(protobuf_c_boolean *)ana_json_member(m, f) = t;
    } else {
      if (!direct_string(p, &str, &len) ||
          ana_json_scalar_from_text(f, str, len, false, ana_json_member(m, f), p->arena, &oom))
        return false;
    }
    ana_json_mark_set(m, f);
    direct_ws(p);
    if (p->i < p->end && p->s[p->i] == ',') {
      p->i++;
      direct_ws(p);
      continue;
    }
    if (p->i < p->end && p->s[p->i] == '}') {
      p->i++;
      break;
    }
    return false;
  }
  /* proto2 required fields: check_required's case, left to the walk */
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &desc->fields[i];
    if (f->label == PROTOBUF_C_LABEL_REQUIRED &&
        (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) &&
        !*(void *const *)ana_json_member(m, f))
      return false;
  }
  return true;
}

/* Element text [from, to) as a new message of desc, or NULL when it is not
 * one of the simple ones (then nothing of it is used). */
static ProtobufCMessage *direct_element(const ProtobufCMessageDescriptor *desc, const char *s,
                                        size_t from, size_t to, struct ana_arena *arena,
                                        int max_depth) {
  if (max_depth < DIRECT_MIN_DEPTH || ana_json_wkt_of(desc) != ANA_JSON_WKT_NONE)
    return NULL;
  struct direct p = {s, from, to, arena};
  ProtobufCMessage *m = ana_json_new_message(desc, arena);
  if (!m || !direct_message(&p, m, 0))
    return NULL;
  direct_ws(&p);
  return p.i == p.end ? m : NULL;
}

struct chunked {
  const struct split *sp;
  const char *text;
  const struct ana_json_options *opts;
  struct ana_arena *arenas; /* one per chunk */
  ProtobufCMessage **elems;
  atomic_bool failed;
};

/* Parses and decodes the elements of chunk c, each as the whole decode
 * would (a message at nesting level 2: the document, the array). */
static void decode_chunk(void *ctx, size_t c) {
  struct chunked *k = ctx;
  const struct split *sp = k->sp;
  size_t to = (c + 1) * PARALLEL_CHUNK < sp->n ? (c + 1) * PARALLEL_CHUNK : sp->n;
  int max_depth = k->opts->max_depth > 0 ? k->opts->max_depth : ANA_JSON_DEFAULT_MAX_DEPTH;
  for (size_t e = c * PARALLEL_CHUNK; e < to && !atomic_load(&k->failed); e++) {
    size_t from = sp->bounds[2 * e];
    if (!k->opts->no_direct &&
        (k->elems[e] = direct_element(sp->field->descriptor, k->text, from, sp->bounds[2 * e + 1],
                                      &k->arenas[c], max_depth)))
      continue;
    json_error_t jerr;
    json_t *v = json_loadb(k->text + from, sp->bounds[2 * e + 1] - from,
                           JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    struct ana_error err;
    struct dec d = {
        .arena = &k->arenas[c],
        .ignore_unknown = k->opts->ignore_unknown,
        .max_depth = k->opts->max_depth > 0 ? k->opts->max_depth : ANA_JSON_DEFAULT_MAX_DEPTH,
        .err = &err,
    };
    ProtobufCMessage *m =
        v && !json_is_null(v) ? ana_json_new_message(sp->field->descriptor, d.arena) : NULL;
    if (!m || dec_message(&d, m, v, 2) != 0)
      atomic_store(&k->failed, true);
    k->elems[e] = m;
    json_decref(v);
  }
}

/* The document decoded with its largest array split into chunks decoded
 * through opts->parallel; NULL when that did not work out (any error, even
 * running out of memory: the whole decode then says what it is). */
static ProtobufCMessage *decode_split(const ProtobufCMessageDescriptor *desc, const char *json,
                                      size_t len, struct ana_arena *arena,
                                      const struct ana_json_options *opts) {
  struct split sp;
  int max_depth = opts->max_depth > 0 ? opts->max_depth : ANA_JSON_DEFAULT_MAX_DEPTH;
  size_t min_elements =
      opts->parallel_min_elements ? opts->parallel_min_elements : PARALLEL_MIN_ELEMENTS;
  /* Depth: an element sits at level 2; jansson's own limit (2048) would
   * count two levels fewer in a chunk than in the whole document. */
  if (max_depth < 3 || max_depth > 1024 || !find_split(desc, json, len, arena, &sp) ||
      sp.n < min_elements)
    return NULL;
  /* The rest of the document, with the array left empty. */
  size_t rest_len = len - (sp.end - sp.start) + 2;
  char *rest = ana_malloc(rest_len);
  if (!rest)
    return NULL;
  memcpy(rest, json, sp.start);
  memcpy(rest + sp.start, "[]", 2);
  memcpy(rest + sp.start + 2, json + sp.end, len - sp.end);
  struct ana_error err;
  ProtobufCMessage *msg = decode_whole(desc, rest, rest_len, arena, opts, &err, NULL, 0);
  ana_free(rest);
  size_t chunks = (sp.n + PARALLEL_CHUNK - 1) / PARALLEL_CHUNK;
  struct chunked k = {&sp, json, opts, NULL, NULL, false};
  k.arenas = msg ? ana_arena_calloc(arena, chunks, sizeof *k.arenas) : NULL;
  k.elems = k.arenas ? ana_arena_calloc(arena, sp.n, sizeof *k.elems) : NULL;
  if (!k.elems)
    return NULL;
  for (size_t c = 0; c < chunks; c++) {
    /* chunks in proportion to the chunk's text: tiny elements stay cheap */
    size_t last = (c + 1) * PARALLEL_CHUNK < sp.n ? (c + 1) * PARALLEL_CHUNK : sp.n;
    size_t text = sp.bounds[2 * last - 1] - sp.bounds[2 * c * PARALLEL_CHUNK];
    ana_arena_init(&k.arenas[c],
                   text < 2048           ? 4096
                   : text < (128u << 10) ? 2 * text
                                         : 256u << 10,
                   0);
  }
  opts->parallel(opts->runner, chunks, decode_chunk, &k);
  bool failed = atomic_load(&k.failed);
  for (size_t c = 0; c < chunks; c++) {
    if (failed)
      ana_arena_fini(&k.arenas[c]); /* nothing points there */
    else
      ana_arena_adopt(arena, &k.arenas[c]);
  }
  if (failed)
    return NULL;
  *(size_t *)ana_json_quantifier(msg, sp.field) = sp.n;
  *(ProtobufCMessage ***)ana_json_member(msg, sp.field) = k.elems;
  return msg;
}

ProtobufCMessage *ana_json_decode(const ProtobufCMessageDescriptor *desc, const char *json,
                                  size_t len, struct ana_arena *arena,
                                  const struct ana_json_options *opts, struct ana_error *err,
                                  char *field_path, size_t field_path_size) {
  /* Chunks' arenas are adopted whatever arena's limit: none is split. */
  if (json && desc && arena && !arena->limit && opts && opts->parallel &&
      len >= (opts->parallel_min_bytes ? opts->parallel_min_bytes : PARALLEL_MIN_BYTES)) {
    ProtobufCMessage *msg = decode_split(desc, json, len, arena, opts);
    if (msg) {
      copy_path(field_path, field_path_size, "");
      return msg;
    }
  }
  return decode_whole(desc, json, len, arena, opts, err, field_path, field_path_size);
}
