/* Fields set from URL text: path segments and query parameters addressed by
 * dotted field paths, the way grpc-gateway fills a request. */
#include "json_internal.h"

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int set_fail(struct ana_error *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_fail(struct ana_error *err, const char *path, const char *fmt, ...) {
  char reason[ANA_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  if (*path)
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s", path, reason);
  else
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s", reason);
  return ANA_ERR_INVALID;
}

static int set_nomem(struct ana_error *err, const char *path) {
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", path);
  return ANA_ERR_NOMEM;
}

/* Parses text into dst as f's scalar type, with set_field's error wording. */
static int scalar(const ProtobufCFieldDescriptor *f, const char *text, size_t len, bool lenient,
                  void *dst, struct ana_arena *arena, struct ana_error *err, const char *path,
                  const char *what) {
  bool oom;
  const char *reason = ana_json_scalar_from_text(f, text, len, lenient, dst, arena, &oom);
  if (oom)
    return set_nomem(err, path);
  if (!reason)
    return 0;
  if (f->type == PROTOBUF_C_TYPE_ENUM && strcmp(reason, "unknown enum value") == 0)
    return set_fail(err, path, "%sunknown value \"%.*s\" for enum %s", what,
                    (int)(len > 100 ? 100 : len), text,
                    ((const ProtobufCEnumDescriptor *)f->descriptor)->name);
  return set_fail(err, path, "%s%s", what, reason);
}

/* Well-known types written as one piece of text in a URL. */
static bool text_wkt(enum ana_json_wkt k) {
  return k != ANA_JSON_WKT_NONE;
}

/* Fills sub (a new message of a well-known type) from text. */
static int wkt_from_text(ProtobufCMessage *sub, const char *text, struct ana_arena *arena,
                         struct ana_error *err, const char *path) {
  const ProtobufCMessageDescriptor *d = sub->descriptor;
  size_t len = strlen(text);
  switch (ana_json_wkt_of(d)) {
  case ANA_JSON_WKT_TIMESTAMP: {
    Google__Protobuf__Timestamp *t = (Google__Protobuf__Timestamp *)sub;
    int rc = ana_json_parse_timestamp(text, len, &t->seconds, &t->nanos);
    if (rc == -2)
      return set_fail(err, path, "timestamp out of range (years 0001 to 9999)");
    return rc ? set_fail(err, path, "not an RFC 3339 timestamp") : 0;
  }
  case ANA_JSON_WKT_DURATION: {
    Google__Protobuf__Duration *t = (Google__Protobuf__Duration *)sub;
    int rc = ana_json_parse_duration(text, len, true, &t->seconds, &t->nanos);
    if (rc == -2)
      return set_fail(err, path, "duration out of range (at most 315576000000s either way)");
    return rc ? set_fail(err, path, "not a duration (like \"1.5s\" or \"1h30m\")") : 0;
  }
  case ANA_JSON_WKT_WRAPPER:
    return scalar(&d->fields[0], text, len, true, ana_json_member(sub, &d->fields[0]), arena, err,
                  path, "");
  case ANA_JSON_WKT_FIELD_MASK: {
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label != PROTOBUF_C_LABEL_REPEATED)
      return set_fail(err, path, "unsupported FieldMask type");
    if (!ana_json_utf8_valid(text, len))
      return set_fail(err, path, "not valid UTF-8");
    for (const char *p = text; *p;) {
      size_t n = strcspn(p, ",");
      char *out = ana_arena_alloc(arena, 2 * n + 1);
      if (!out)
        return set_nomem(err, path);
      /* lowerCamelCase paths become snake_case; snake_case ones stay. */
      if (ana_json_mask_path_from_json(p, n, out, 2 * n + 1) < 0) {
        memcpy(out, p, n);
        out[n] = '\0';
      }
      if (ana_json_append(sub, f, &out, arena))
        return set_nomem(err, path);
      p += n;
      if (*p == ',')
        p++;
    }
    return 0;
  }
  case ANA_JSON_WKT_VALUE:
  case ANA_JSON_WKT_STRUCT:
  case ANA_JSON_WKT_LIST_VALUE:
  case ANA_JSON_WKT_ANY: {
    json_error_t jerr;
    json_t *j =
        json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!j) {
      if (ana_json_wkt_of(d) != ANA_JSON_WKT_VALUE)
        return set_fail(err, path, "not valid JSON for %s", d->name);
      /* A Value that is not JSON text is taken as a string. */
      Google__Protobuf__Value *v = (Google__Protobuf__Value *)sub;
      char *s;
      int rc = scalar(protobuf_c_message_descriptor_get_field(d, 3), text, len, false, &s, arena,
                      err, path, "");
      if (rc)
        return rc;
      v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
      v->string_value = s;
      return 0;
    }
    int rc = ana_json_decode_at(sub, j, arena, NULL, err, path, NULL, 0);
    json_decref(j);
    return rc;
  }
  case ANA_JSON_WKT_NONE: break;
  }
  return set_fail(err, path, "cannot be set from text");
}

/* The value of field f (scalar or text-like message) into dst. */
static int value_from_text(const ProtobufCFieldDescriptor *f, const char *text, void *dst,
                           struct ana_arena *arena, struct ana_error *err, const char *path) {
  if (f->type != PROTOBUF_C_TYPE_MESSAGE)
    return scalar(f, text, strlen(text), true, dst, arena, err, path, "");
  ProtobufCMessage *sub = ana_json_new_message(f->descriptor, arena);
  if (!sub)
    return set_nomem(err, path);
  int rc = wkt_from_text(sub, text, arena, err, path);
  if (rc == 0)
    *(ProtobufCMessage **)dst = sub;
  return rc;
}

static bool keys_equal(const ProtobufCFieldDescriptor *kf, const void *a, const void *b) {
  if (kf->type == PROTOBUF_C_TYPE_STRING) {
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    return strcmp(x ? x : "", y ? y : "") == 0;
  }
  return memcmp(a, b, ana_json_elem_size(kf->type)) == 0;
}

/* m's map field f: the entry for key (klen bytes) gets value text. */
static int set_map(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const char *key,
                   size_t klen, const char *text, struct ana_arena *arena, struct ana_error *err,
                   const char *path) {
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = protobuf_c_message_descriptor_get_field(ed, 1);
  const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(ed, 2);
  if (vf->type == PROTOBUF_C_TYPE_MESSAGE && !text_wkt(ana_json_wkt_of(vf->descriptor)))
    return set_fail(err, path, "map values that are messages cannot be set from text");
  union {
    uint64_t u;
    double d;
    char *s;
    ProtobufCBinaryData b;
  } k, v;
  memset(&k, 0, sizeof k);
  memset(&v, 0, sizeof v);
  int rc = scalar(kf, key, klen, false, &k, arena, err, path, "invalid map key: ");
  if (rc == 0)
    rc = value_from_text(vf, text, &v, arena, err, path);
  if (rc)
    return rc;
  size_t n = *(size_t *)ana_json_quantifier(m, f);
  ProtobufCMessage **entries = *(ProtobufCMessage ***)ana_json_member(m, f);
  ProtobufCMessage *entry = NULL;
  for (size_t i = 0; i < n && !entry; i++)
    if (entries[i] && keys_equal(kf, ana_json_member(entries[i], kf), &k))
      entry = entries[i];
  if (!entry) {
    entry = ana_json_new_message(ed, arena);
    if (!entry || ana_json_append(m, f, &entry, arena))
      return set_nomem(err, path);
    memcpy(ana_json_member(entry, kf), &k, ana_json_elem_size(kf->type));
  }
  memcpy(ana_json_member(entry, vf), &v, ana_json_elem_size(vf->type));
  return 0;
}

/* rest is ".key" or "[key]" after the name of map field f. */
static int set_map_key(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const char *rest,
                       const char *text, struct ana_arena *arena, struct ana_error *err,
                       const char *path) {
  if (*rest == '[') {
    const char *close = strchr(rest, ']');
    if (!close || close[1] != '\0')
      return set_fail(err, path, "invalid map key (use m[key] or m.key)");
    return set_map(m, f, rest + 1, (size_t)(close - rest - 1), text, arena, err, path);
  }
  return set_map(m, f, rest + 1, strlen(rest + 1), text, arena, err, path);
}

/* The last field of the path: set (singular) or append (repeated). */
static int set_leaf(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const char *text,
                    struct ana_arena *arena, struct ana_error *err, const char *path) {
  bool message = f->type == PROTOBUF_C_TYPE_MESSAGE;
  if (message && f->label == PROTOBUF_C_LABEL_REPEATED &&
      ana_json_is_map_entry(f->descriptor, ana_json_names_of(f->descriptor)))
    return set_fail(err, path, "a map needs a key (%s[key] or %s.key)", path, path);
  if (message && !text_wkt(ana_json_wkt_of(f->descriptor)))
    return set_fail(err, path,
                    f->label == PROTOBUF_C_LABEL_REPEATED
                        ? "repeated message fields cannot be set from text"
                        : "a message cannot be set from text; set one of its fields");
  union {
    uint64_t u;
    double d;
    void *p;
    ProtobufCBinaryData b;
  } v;
  memset(&v, 0, sizeof v);
  int rc = value_from_text(f, text, &v, arena, err, path);
  if (rc)
    return rc;
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return ana_json_append(m, f, &v, arena) ? set_nomem(err, path) : 0;
  memcpy(ana_json_member(m, f), &v, ana_json_elem_size(f->type));
  ana_json_mark_set(m, f);
  return 0;
}

int ana_json_set_field(ProtobufCMessage *msg, const char *path, const char *value,
                       struct ana_arena *arena, struct ana_error *err) {
  if (!msg || !path || !value || !arena)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "nothing to set");
  ProtobufCMessage *cur = msg;
  const char *p = path;
  for (;;) {
    size_t seg = strcspn(p, ".[");
    if (seg == 0)
      return set_fail(err, path, "invalid field path");
    const ProtobufCMessageDescriptor *d = cur->descriptor;
    const ProtobufCFieldDescriptor *f = ana_json_field_by_name(d, ana_json_names_of(d), p, seg);
    if (!f)
      return set_fail(err, path, "unknown field");
    const char *rest = p + seg;
    if (*rest == '\0')
      return set_leaf(cur, f, value, arena, err, path);
    if (f->label == PROTOBUF_C_LABEL_REPEATED && f->type == PROTOBUF_C_TYPE_MESSAGE &&
        ana_json_is_map_entry(f->descriptor, ana_json_names_of(f->descriptor)))
      return set_map_key(cur, f, rest, value, arena, err, path);
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
      return set_fail(err, path, "\"%.*s\" is not a message", (int)seg, p);
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
      return set_fail(err, path, "repeated message fields cannot be set from text");
    bool is_struct = ana_json_wkt_of(f->descriptor) == ANA_JSON_WKT_STRUCT;
    if (*rest == '[' && !is_struct)
      return set_fail(err, path, "only map fields take a [key]");
    ProtobufCMessage **slot = ana_json_message_slot(cur, f);
    if (!*slot && !(*slot = ana_json_new_message(f->descriptor, arena)))
      return set_nomem(err, path);
    ana_json_mark_set(cur, f);
    /* A Struct is a map<string, Value>: "properties.campaignId=123". */
    if (is_struct)
      return set_map_key(*slot, &(*slot)->descriptor->fields[0], rest, value, arena, err, path);
    cur = *slot;
    p = rest + 1;
  }
}
