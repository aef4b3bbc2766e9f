/* Canonical proto3 JSON writer: straight from protobuf-c structs into a
 * growable buffer with headroom, no intermediate JSON tree. */
#include "json_internal.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_text.h"

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Maps up to this many entries are checked for duplicate keys pairwise;
 * bigger ones are sorted. */
#define MAP_PAIRWISE_MAX 16

struct enc {
  struct ana_json_buf *b;
  bool emit_defaults;
  bool proto_names;
  int max_depth;
  int rc;               /* first error; every writer is a no-op after it */
  struct ana_arena tmp; /* unpacked Any payloads, default instances, map keys */
  size_t chunk;         /* streaming: hand the output to flush past this many bytes */
  ana_json_flush_fn flush;
  void *flush_ctx;
  bool flushed;
};

void ana_json_buf_init(struct ana_json_buf *b, size_t reserve) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->reserve = reserve;
}

void ana_json_buf_fini(struct ana_json_buf *b) {
  if (!b)
    return;
  ana_free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

/* Makes room for n more payload bytes plus the trailing NUL. */
static void grow(struct enc *e, size_t n) {
  struct ana_json_buf *b = e->b;
  if (e->rc)
    return;
  size_t used = b->reserve + b->len;
  if (n > SIZE_MAX - used - 1) {
    e->rc = ANA_ERR_NOMEM;
    return;
  }
  size_t need = used + n + 1;
  if (need <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : b->reserve + 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = ana_realloc(b->data, cap);
  if (!p) {
    e->rc = ANA_ERR_NOMEM;
    return;
  }
  b->data = p;
  b->cap = cap;
}

/* Appends n bytes; the buffer grows only when they do not fit. */
static inline void put(struct enc *e, const char *s, size_t n) {
  struct ana_json_buf *b = e->b;
  if (e->rc || n + 1 > b->cap - b->reserve - b->len || !b->data) {
    grow(e, n);
    if (e->rc)
      return;
  }
  memcpy(b->data + b->reserve + b->len, s, n);
  b->len += n;
}

static void put_str(struct enc *e, const char *s) {
  put(e, s, strlen(s));
}

static inline void put_char(struct enc *e, char c) {
  struct ana_json_buf *b = e->b;
  if (e->rc || 2 > b->cap - b->reserve - b->len || !b->data) {
    grow(e, 1);
    if (e->rc)
      return;
  }
  b->data[b->reserve + b->len++] = c;
}

static void put_fmt(struct enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_fmt(struct enc *e, const char *fmt, ...) {
  char buf[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0)
    put(e, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void fail(struct enc *e, int rc) {
  if (!e->rc)
    e->rc = rc;
}

/* Streaming: after a member, the output so far goes to the sink once it
 * holds a chunk. */
static inline void maybe_flush(struct enc *e) {
  if (e->flush && e->b->len >= e->chunk && !e->rc) {
    int rc = e->flush(e->flush_ctx, e->b);
    e->flushed = true;
    if (rc < 0)
      fail(e, rc);
  }
}

/* A JSON string: '"', '\\' and control characters escaped, valid UTF-8
 * copied as is, each invalid byte written as U+FFFD. */
static void put_string(struct enc *e, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  put_char(e, '"');
  size_t run = 0, i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t k = ana_utf8_seq_len(s + i, len - i);
      if (k) {
        i += k;
        continue;
      }
    }
    put(e, str + run, i - run);
    switch (c) {
    case '"': put(e, "\\\"", 2); break;
    case '\\': put(e, "\\\\", 2); break;
    case '\b': put(e, "\\b", 2); break;
    case '\f': put(e, "\\f", 2); break;
    case '\n': put(e, "\\n", 2); break;
    case '\r': put(e, "\\r", 2); break;
    case '\t': put(e, "\\t", 2); break;
    default:
      if (c < 0x20)
        put_fmt(e, "\\u%04x", c);
      else
        put(e, "\xef\xbf\xbd", 3);
    }
    run = ++i;
  }
  put(e, str + run, i - run);
  put_char(e, '"');
}

static void put_cstring(struct enc *e, const char *s) {
  put_string(e, s ? s : "", s ? strlen(s) : 0);
}

/* NaN and infinities as strings; otherwise the shortest of %.15g, %.16g and
 * %.17g that reads back as the same double. */
static void put_double(struct enc *e, double d) {
  if (isnan(d)) {
    put_str(e, "\"NaN\"");
    return;
  }
  if (isinf(d)) {
    put_str(e, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    return;
  }
  /* Negative zero keeps its sign in a reader: "-0" is read as the integer
   * 0, "-0.0" as a real. */
  if (d == 0 && signbit(d)) {
    put_str(e, "-0.0");
    return;
  }
  char buf[40];
  /* Whole numbers below 10^15 (counts, mostly): their digits are what %.15g
   * prints, written without printf. */
  if (d > -1e15 && d < 1e15 && d == (double)(int64_t)d) {
    int64_t v = (int64_t)d;
    uint64_t u = v < 0 ? (uint64_t)-v : (uint64_t)v;
    char *p = buf + sizeof buf;
    *--p = '\0';
    do {
      *--p = (char)('0' + u % 10);
      u /= 10;
    } while (u);
    if (v < 0)
      *--p = '-';
    put_str(e, p);
    return;
  }
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d)
      break;
  }
  put_str(e, buf);
}

/* The shortest decimal that reads back (as a double, then rounded to float,
 * the way the decoder reads it) as the same float. */
static void put_float(struct enc *e, float f) {
  if (isnan(f) || isinf(f)) {
    put_double(e, f);
    return;
  }
  char buf[40];
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
    double back = strtod(buf, NULL);
    /* Text above FLT_MAX would round back, but strict readers reject it. */
    if (fabs(back) <= FLT_MAX && (float)back == f) {
      put_str(e, buf);
      return;
    }
  }
  snprintf(buf, sizeof buf, "%.17g", (double)f); /* exact */
  put_str(e, buf);
}

static void put_bytes(struct enc *e, const ProtobufCBinaryData *bd) {
  size_t n = (bd->len + 2) / 3 * 4;
  if (bd->len > SIZE_MAX / 2) {
    fail(e, ANA_ERR_NOMEM);
    return;
  }
  grow(e, n + 2);
  if (e->rc)
    return;
  char *out = e->b->data + e->b->reserve + e->b->len;
  out[0] = '"';
  ana_json_base64_encode(bd->data, bd->len, out + 1);
  out[n + 1] = '"';
  e->b->len += n + 2;
}

static void put_enum(struct enc *e, const ProtobufCEnumDescriptor *ed, int v) {
  if (strcmp(ed->name, "google.protobuf.NullValue") == 0) {
    put_str(e, "null");
    return;
  }
  const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
  if (ev)
    put_cstring(e, ev->name);
  else
    put_fmt(e, "%d", v); /* open enum: an unknown number stays a number */
}

/* Opens the next member of an object or array whose members are at nesting
 * level `level`: the depth limit is checked at the first member only, so
 * empty containers never fail. */
static bool next_member(struct enc *e, bool *first, int level) {
  if (*first) {
    if (level > e->max_depth)
      fail(e, ANA_ERR_INVALID);
    *first = false;
  } else {
    put_char(e, ',');
  }
  return e->rc == 0;
}

static void put_name(struct enc *e, const char *name) {
  put_char(e, '"');
  put_str(e, name);
  put(e, "\":", 2);
}

static void enc_message(struct enc *e, const ProtobufCMessage *m,
                        const ProtobufCMessageDescriptor *d, int depth);

/* One value of field f's type stored at p (a member or an array element). */
static void enc_value_at(struct enc *e, const ProtobufCFieldDescriptor *f, const void *p,
                         int depth) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32: put_fmt(e, "%" PRId32, *(const int32_t *)p); break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: put_fmt(e, "%" PRIu32, *(const uint32_t *)p); break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: put_fmt(e, "\"%" PRId64 "\"", *(const int64_t *)p); break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: put_fmt(e, "\"%" PRIu64 "\"", *(const uint64_t *)p); break;
  case PROTOBUF_C_TYPE_FLOAT: put_float(e, *(const float *)p); break;
  case PROTOBUF_C_TYPE_DOUBLE: put_double(e, *(const double *)p); break;
  case PROTOBUF_C_TYPE_BOOL: put_str(e, *(const protobuf_c_boolean *)p ? "true" : "false"); break;
  case PROTOBUF_C_TYPE_ENUM: put_enum(e, f->descriptor, *(const int *)p); break;
  case PROTOBUF_C_TYPE_STRING: put_cstring(e, *(char *const *)p); break;
  case PROTOBUF_C_TYPE_BYTES: put_bytes(e, p); break;
  case PROTOBUF_C_TYPE_MESSAGE:
    enc_message(e, *(ProtobufCMessage *const *)p, f->descriptor, depth);
    break;
  }
}

/* Whether a proto3 field without presence holds its default. */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: return *(const uint32_t *)p == 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return *(const uint64_t *)p == 0;
  /* -0.0 counts as default, as protobuf-c's packer sees it. */
  case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p == 0;
  case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p == 0;
  case PROTOBUF_C_TYPE_BOOL: return !*(const protobuf_c_boolean *)p;
  case PROTOBUF_C_TYPE_ENUM: return *(const int *)p == 0;
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return !s || !*s;
  }
  case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
  case PROTOBUF_C_TYPE_MESSAGE: return *(ProtobufCMessage *const *)p == NULL;
  }
  return true;
}

/* A map key as JSON object key text: into buf for non-strings. */
static const char *map_key_text(const ProtobufCMessage *entry, const ProtobufCFieldDescriptor *kf,
                                char buf[24]) {
  const void *p = ana_json_member(entry, kf);
  switch (kf->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return s ? s : "";
  }
  case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)p ? "true" : "false";
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32: snprintf(buf, 24, "%" PRId32, *(const int32_t *)p); return buf;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: snprintf(buf, 24, "%" PRIu32, *(const uint32_t *)p); return buf;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: snprintf(buf, 24, "%" PRId64, *(const int64_t *)p); return buf;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: snprintf(buf, 24, "%" PRIu64, *(const uint64_t *)p); return buf;
  default: return ""; /* maps keys are integral or string types only */
  }
}

struct keyed {
  const char *key;
  size_t index;
};

static int keyed_cmp(const void *a, const void *b) {
  const struct keyed *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  if (c)
    return c;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* skip[i] is set for every entry a later entry with the same key overrides
 * (binary maps may repeat keys; the last one wins, and JSON must not repeat
 * them). NULL when out of memory. */
static bool *map_overridden(struct enc *e, ProtobufCMessage *const *entries, size_t n,
                            const ProtobufCFieldDescriptor *kf) {
  bool *skip = ana_arena_calloc(&e->tmp, n, sizeof *skip);
  if (!skip)
    return NULL;
  if (n <= MAP_PAIRWISE_MAX) {
    char a[24], b[24];
    for (size_t i = 0; i < n; i++) {
      const char *ki = map_key_text(entries[i], kf, a);
      for (size_t j = i + 1; j < n && !skip[i]; j++)
        skip[i] = strcmp(ki, map_key_text(entries[j], kf, b)) == 0;
    }
    return skip;
  }
  struct keyed *k = ana_arena_calloc(&e->tmp, n, sizeof *k);
  if (!k)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    char buf[24];
    const char *t = map_key_text(entries[i], kf, buf);
    k[i].key = t == buf ? ana_arena_strdup(&e->tmp, buf) : t;
    k[i].index = i;
    if (!k[i].key)
      return NULL;
  }
  qsort(k, n, sizeof *k, keyed_cmp);
  for (size_t i = 0; i + 1 < n; i++)
    if (strcmp(k[i].key, k[i + 1].key) == 0)
      skip[k[i].index] = true;
  return skip;
}

/* A map field as a JSON object; depth encloses the object. */
static void enc_map(struct enc *e, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                    int depth) {
  size_t n = *(const size_t *)ana_json_quantifier(m, f);
  ProtobufCMessage *const *entries = *(ProtobufCMessage *const *const *)ana_json_member(m, f);
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = protobuf_c_message_descriptor_get_field(ed, 1);
  const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(ed, 2);
  bool *skip = NULL;
  if (n > 1) {
    skip = map_overridden(e, entries, n, kf);
    if (!skip)
      fail(e, ANA_ERR_NOMEM);
  }
  put_char(e, '{');
  bool first = true;
  for (size_t i = 0; i < n && !e->rc; i++) {
    if (!entries[i] || (skip && skip[i]))
      continue;
    if (!next_member(e, &first, depth + 1))
      return;
    char buf[24];
    put_cstring(e, map_key_text(entries[i], kf, buf));
    put_char(e, ':');
    enc_value_at(e, vf, ana_json_member(entries[i], vf), depth + 1);
    maybe_flush(e);
  }
  put_char(e, '}');
}

/* A repeated (non-map) field as a JSON array. */
static void enc_array(struct enc *e, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                      int depth) {
  size_t n = *(const size_t *)ana_json_quantifier(m, f);
  const char *arr = *(const char *const *)ana_json_member(m, f);
  size_t es = ana_json_elem_size(f->type);
  put_char(e, '[');
  bool first = true;
  for (size_t i = 0; i < n; i++) {
    if (!next_member(e, &first, depth + 1))
      return;
    enc_value_at(e, f, arr + i * es, depth + 1);
    maybe_flush(e);
  }
  put_char(e, ']');
}

/* The members of a regular message, after those already written (*first). */
static void enc_fields(struct enc *e, const ProtobufCMessage *m,
                       const ProtobufCMessageDescriptor *d, int level, bool *first) {
  const struct ana_json_message *jm = e->proto_names ? NULL : ana_json_names_of(d);
  char namebuf[256];
  for (unsigned i = 0; i < d->n_fields && !e->rc; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const void *p = ana_json_member(m, f);
    static const char *const empty = "";
    bool as_null = false;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      if (*(const size_t *)ana_json_quantifier(m, f) == 0 && !e->emit_defaults)
        continue;
    } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      if (*(const uint32_t *)ana_json_quantifier(m, f) != f->id)
        continue;
      if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(void *const *)p)
        continue;
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      if (!*(void *const *)p) {
        /* An unset Value stays out: null would read back as a NullValue. */
        if (!e->emit_defaults || ana_json_wkt_of(f->descriptor) == ANA_JSON_WKT_VALUE)
          continue;
        as_null = true;
      }
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
      /* proto2: set as protobuf-c packs it; unset ones show their default
       * only with emit_defaults. */
      bool set;
      if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(char *const *)p;
        set = s && s != f->default_value;
      } else {
        set = *(const protobuf_c_boolean *)ana_json_quantifier(m, f);
      }
      if (!set && !e->emit_defaults)
        continue;
      /* Unset members hold their default (protobuf-c's init), NULL for strings. */
      if (!set && f->type == PROTOBUF_C_TYPE_STRING && !*(char *const *)p)
        p = &empty;
    } else if (f->label == PROTOBUF_C_LABEL_NONE) {
      if (!e->emit_defaults && is_default(f, p))
        continue;
    }
    if (!next_member(e, first, level))
      return;
    put_name(e, e->proto_names ? f->name : ana_json_field_name(d, jm, i, namebuf, sizeof namebuf));
    if (as_null)
      put_str(e, "null");
    else if (f->label != PROTOBUF_C_LABEL_REPEATED)
      enc_value_at(e, f, p, level);
    else if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
             ana_json_is_map_entry(f->descriptor, ana_json_names_of(f->descriptor)))
      enc_map(e, m, f, level);
    else
      enc_array(e, m, f, level);
    maybe_flush(e);
  }
}

static void enc_any(struct enc *e, const ProtobufCMessage *m, int depth) {
  const Google__Protobuf__Any *any = (const Google__Protobuf__Any *)m;
  const char *url = any->type_url ? any->type_url : "";
  if (!*url && any->value.len == 0) {
    put_str(e, "{}");
    return;
  }
  const ProtobufCMessageDescriptor *d = ana_json_type_from_url(url);
  if (!d) {
    fail(e, ANA_ERR_INVALID);
    return;
  }
  ProtobufCMessage *inner = ana_proto_unpack(d, &e->tmp.pb, any->value.data, any->value.len,
                                             ANA_PROTO_DEFAULT_MAX_DEPTH, NULL);
  if (!inner) {
    fail(e, ANA_ERR_INVALID);
    return;
  }
  bool first = true;
  put_char(e, '{');
  if (!next_member(e, &first, depth + 1))
    return;
  put_name(e, "@type");
  put_cstring(e, url);
  if (ana_json_wkt_of(d) != ANA_JSON_WKT_NONE) {
    put(e, ",\"value\":", 9);
    enc_message(e, inner, d, depth + 1);
  } else {
    enc_fields(e, inner, d, depth + 1, &first);
  }
  put_char(e, '}');
}

static void enc_field_mask(struct enc *e, const ProtobufCMessage *m,
                           const ProtobufCMessageDescriptor *d) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
  if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label != PROTOBUF_C_LABEL_REPEATED) {
    fail(e, ANA_ERR_INVALID);
    return;
  }
  size_t n = *(const size_t *)ana_json_quantifier(m, f);
  char *const *paths = *(char *const *const *)ana_json_member(m, f);
  size_t total = 1;
  for (size_t i = 0; i < n; i++)
    total += (paths[i] ? strlen(paths[i]) : 0) + 1;
  char *joined = ana_arena_alloc(&e->tmp, total);
  if (!joined) {
    fail(e, ANA_ERR_NOMEM);
    return;
  }
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    if (i)
      joined[len++] = ',';
    /* lowerCamelCase is never longer than snake_case, so it fits. */
    long k = ana_json_mask_path_to_json(paths[i] ? paths[i] : "", joined + len, total - len);
    if (k < 0) {
      fail(e, ANA_ERR_INVALID);
      return;
    }
    len += (size_t)k;
  }
  put_string(e, joined, len);
}

static void enc_value(struct enc *e, const Google__Protobuf__Value *v, int depth) {
  switch (v->kind_case) {
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
    /* NaN and infinities have no JSON number; like python-protobuf, write the
     * strings rather than fail the whole message. */
    put_double(e, v->number_value);
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: put_cstring(e, v->string_value); break;
  case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
    put_str(e, v->bool_value ? "true" : "false");
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
    enc_message(e, (const ProtobufCMessage *)v->struct_value, &google__protobuf__struct__descriptor,
                depth);
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
    enc_message(e, (const ProtobufCMessage *)v->list_value,
                &google__protobuf__list_value__descriptor, depth);
    break;
  default: put_str(e, "null"); /* null_value, or no kind set */
  }
}

/* A message (or, for m == NULL, the default instance of d) as a JSON value;
 * depth counts the containers around it. */
static void enc_message(struct enc *e, const ProtobufCMessage *m,
                        const ProtobufCMessageDescriptor *d, int depth) {
  if (e->rc)
    return;
  if (!m) {
    m = ana_json_new_message(d, &e->tmp);
    if (!m) {
      fail(e, ANA_ERR_NOMEM);
      return;
    }
  }
  char text[ANA_JSON_TIME_TEXT_MAX + 2];
  switch (ana_json_wkt_of(d)) {
  case ANA_JSON_WKT_TIMESTAMP: {
    const Google__Protobuf__Timestamp *t = (const Google__Protobuf__Timestamp *)m;
    int n = ana_json_format_timestamp(t->seconds, t->nanos, text + 1);
    if (n < 0) {
      fail(e, ANA_ERR_INVALID);
    } else { /* digits and separators only: nothing to escape */
      text[0] = '"';
      text[n + 1] = '"';
      put(e, text, (size_t)n + 2);
    }
    return;
  }
  case ANA_JSON_WKT_DURATION: {
    const Google__Protobuf__Duration *t = (const Google__Protobuf__Duration *)m;
    int n = ana_json_format_duration(t->seconds, t->nanos, text);
    if (n < 0)
      fail(e, ANA_ERR_INVALID);
    else
      put_string(e, text, (size_t)n);
    return;
  }
  case ANA_JSON_WKT_WRAPPER:
    enc_value_at(e, &d->fields[0], ana_json_member(m, &d->fields[0]), depth);
    return;
  case ANA_JSON_WKT_FIELD_MASK: enc_field_mask(e, m, d); return;
  case ANA_JSON_WKT_VALUE: enc_value(e, (const Google__Protobuf__Value *)m, depth); return;
  case ANA_JSON_WKT_STRUCT: enc_map(e, m, &d->fields[0], depth); return;
  case ANA_JSON_WKT_LIST_VALUE: enc_array(e, m, &d->fields[0], depth); return;
  case ANA_JSON_WKT_ANY: enc_any(e, m, depth); return;
  case ANA_JSON_WKT_NONE: break;
  }
  bool first = true;
  put_char(e, '{');
  enc_fields(e, m, d, depth + 1, &first);
  put_char(e, '}');
}

int ana_json_encode_stream(struct ana_json_buf *b, const ProtobufCMessage *msg,
                           const struct ana_json_options *opts, size_t chunk,
                           ana_json_flush_fn flush, void *ctx, bool *flushed) {
  if (flushed)
    *flushed = false;
  if (!b || !msg)
    return ANA_ERR_INVALID;
  struct enc e = {
      .b = b,
      .emit_defaults = opts && opts->emit_defaults,
      .proto_names = opts && opts->use_proto_names,
      .max_depth = opts && opts->max_depth > 0 ? opts->max_depth : ANA_JSON_DEFAULT_MAX_DEPTH,
      .chunk = chunk ? chunk : 1,
      .flush = flush,
      .flush_ctx = ctx,
  };
  ana_arena_init(&e.tmp, 0, 0);
  size_t start = b->len;
  enc_message(&e, msg, msg->descriptor, 0);
  grow(&e, 0);
  ana_arena_fini(&e.tmp);
  if (e.rc && !e.flushed)
    b->len = start;
  if (b->data)
    b->data[b->reserve + b->len] = '\0';
  if (flushed)
    *flushed = e.flushed;
  return e.rc;
}

int ana_json_encode(struct ana_json_buf *b, const ProtobufCMessage *msg,
                    const struct ana_json_options *opts) {
  return ana_json_encode_stream(b, msg, opts, 0, NULL, NULL, NULL);
}
