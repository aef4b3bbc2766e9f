/* JSON codec internals: field names, the type registry, field access and the
 * text forms of scalars, shared by the encoder, the decoder and set_field. */
#include "json_internal.h"

#include "ana_alloc.h"

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Types an Any may carry that the generated JSON-name table does not list:
 * well-known types no contract imports, and the google.rpc error model. */
static const ProtobufCMessageDescriptor *const extra_types[] = {
    &google__protobuf__any__descriptor,
    &google__protobuf__duration__descriptor,
    &google__protobuf__empty__descriptor,
    &google__rpc__status__descriptor,
    &google__rpc__bad_request__descriptor,
    &google__rpc__bad_request__field_violation__descriptor,
    &google__rpc__debug_info__descriptor,
    &google__rpc__error_info__descriptor,
    &google__rpc__help__descriptor,
    &google__rpc__help__link__descriptor,
    &google__rpc__localized_message__descriptor,
    &google__rpc__precondition_failure__descriptor,
    &google__rpc__precondition_failure__violation__descriptor,
    &google__rpc__quota_failure__descriptor,
    &google__rpc__quota_failure__violation__descriptor,
    &google__rpc__request_info__descriptor,
    &google__rpc__resource_info__descriptor,
    &google__rpc__retry_info__descriptor,
};

/* strcmp of a length-delimited name against a NUL-terminated one. */
static int name_cmp(const char *full, const char *name, size_t len) {
  int c = strncmp(full, name, len);
  if (c)
    return c;
  return full[len] ? 1 : 0;
}

const ProtobufCMessageDescriptor *ana_json_find_type(const char *name, size_t len) {
  size_t lo = 0, hi = ana_json_message_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = name_cmp(ana_json_messages[mid].descriptor->name, name, len);
    if (c == 0)
      return ana_json_messages[mid].descriptor;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (size_t i = 0; i < sizeof extra_types / sizeof extra_types[0]; i++)
    if (name_cmp(extra_types[i]->name, name, len) == 0)
      return extra_types[i];
  return NULL;
}

const ProtobufCMessageDescriptor *ana_json_type_from_url(const char *url) {
  const char *slash = strrchr(url, '/');
  const char *name = slash ? slash + 1 : url;
  return ana_json_find_type(name, strlen(name));
}

enum ana_json_wkt ana_json_wkt_of(const ProtobufCMessageDescriptor *d) {
  static const struct {
    const char *name;
    enum ana_json_wkt kind;
  } wkts[] = {
      {"Any", ANA_JSON_WKT_ANY},
      {"Timestamp", ANA_JSON_WKT_TIMESTAMP},
      {"Duration", ANA_JSON_WKT_DURATION},
      {"Struct", ANA_JSON_WKT_STRUCT},
      {"Value", ANA_JSON_WKT_VALUE},
      {"ListValue", ANA_JSON_WKT_LIST_VALUE},
      {"FieldMask", ANA_JSON_WKT_FIELD_MASK},
      {"DoubleValue", ANA_JSON_WKT_WRAPPER},
      {"FloatValue", ANA_JSON_WKT_WRAPPER},
      {"Int64Value", ANA_JSON_WKT_WRAPPER},
      {"UInt64Value", ANA_JSON_WKT_WRAPPER},
      {"Int32Value", ANA_JSON_WKT_WRAPPER},
      {"UInt32Value", ANA_JSON_WKT_WRAPPER},
      {"BoolValue", ANA_JSON_WKT_WRAPPER},
      {"StringValue", ANA_JSON_WKT_WRAPPER},
      {"BytesValue", ANA_JSON_WKT_WRAPPER},
  };
  /* The last few answers of this thread by descriptor address (descriptors
   * are static): a wide answer asks about the same three types for each of
   * hundreds of thousands of points. */
  static _Thread_local const ProtobufCMessageDescriptor *seen[4];
  static _Thread_local enum ana_json_wkt seen_kind[4];
  static _Thread_local unsigned next;
  for (unsigned i = 0; i < 4; i++)
    if (seen[i] == d)
      return seen_kind[i];
  enum ana_json_wkt kind = ANA_JSON_WKT_NONE;
  if (strncmp(d->name, "google.protobuf.", 16) == 0)
    for (size_t i = 0; i < sizeof wkts / sizeof wkts[0]; i++)
      if (strcmp(d->name + 16, wkts[i].name) == 0) {
        kind = wkts[i].kind;
        break;
      }
  seen[next] = d;
  seen_kind[next] = kind;
  next = (next + 1) % 4;
  return kind;
}

const struct ana_json_message *ana_json_names_of(const ProtobufCMessageDescriptor *d) {
  /* The last few answers of this thread by descriptor address, as above:
   * the table is searched by name (strcmp) otherwise, once per message. */
  static _Thread_local const ProtobufCMessageDescriptor *seen[4];
  static _Thread_local const struct ana_json_message *seen_jm[4];
  static _Thread_local unsigned next;
  for (unsigned i = 0; i < 4; i++)
    if (seen[i] == d)
      return seen_jm[i];
  const struct ana_json_message *jm = ana_json_message_find(d);
  /* A same-named descriptor of another build would have other fields. */
  if (jm && jm->n_fields != d->n_fields)
    jm = NULL;
  seen[next] = d;
  seen_jm[next] = jm;
  next = (next + 1) % 4;
  return jm;
}

const char *ana_json_field_name(const ProtobufCMessageDescriptor *d,
                                const struct ana_json_message *jm, unsigned i, char *buf,
                                size_t size) {
  if (jm)
    return jm->json_names[i];
  /* protoc's ToJsonName: drop each '_' and upper-case the letter after it. */
  const char *s = d->fields[i].name;
  size_t n = 0;
  bool upper = false;
  for (; *s; s++) {
    if (*s == '_') {
      upper = true;
      continue;
    }
    if (n + 1 >= size)
      return d->fields[i].name;
    buf[n++] = upper && *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
    upper = false;
  }
  buf[n] = '\0';
  return buf;
}

bool ana_json_is_map_entry(const ProtobufCMessageDescriptor *d, const struct ana_json_message *jm) {
  if (jm)
    return jm->map_entry;
  size_t n = strlen(d->short_name);
  return d->n_fields == 2 && d->fields[0].id == 1 && d->fields[1].id == 2 &&
         strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0 &&
         n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0;
}

const ProtobufCFieldDescriptor *ana_json_field_by_name(const ProtobufCMessageDescriptor *d,
                                                       const struct ana_json_message *jm,
                                                       const char *name, size_t len) {
  char buf[256];
  for (unsigned i = 0; i < d->n_fields; i++) {
    const char *jn = ana_json_field_name(d, jm, i, buf, sizeof buf);
    if (name_cmp(jn, name, len) == 0)
      return &d->fields[i];
  }
  for (unsigned i = 0; i < d->n_fields; i++)
    if (name_cmp(d->fields[i].name, name, len) == 0)
      return &d->fields[i];
  return NULL;
}

size_t ana_json_elem_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return 8;
  case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
  case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
  case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
  case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
  }
  return 0;
}

void ana_json_mark_set(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    *(uint32_t *)ana_json_quantifier(m, f) = f->id;
  else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
           f->type != PROTOBUF_C_TYPE_MESSAGE)
    *(protobuf_c_boolean *)ana_json_quantifier(m, f) = 1;
}

void ana_json_clear_field(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  void *p = ana_json_member(m, f);
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    *(size_t *)ana_json_quantifier(m, f) = 0;
    *(void **)p = NULL;
    return;
  }
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *which = ana_json_quantifier(m, f);
    if (*which == f->id) {
      *which = 0;
      memset(p, 0, ana_json_elem_size(f->type));
    }
    return;
  }
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
      f->type != PROTOBUF_C_TYPE_MESSAGE)
    *(protobuf_c_boolean *)ana_json_quantifier(m, f) = 0;
  switch (f->type) {
  case PROTOBUF_C_TYPE_MESSAGE: *(void **)p = NULL; break;
  case PROTOBUF_C_TYPE_STRING:
    /* protobuf-c's defaults: the declared default, "" in proto3, else NULL. */
    if (f->default_value)
      *(const char **)p = f->default_value;
    else
      *(const char **)p = f->label == PROTOBUF_C_LABEL_NONE ? protobuf_c_empty_string : NULL;
    break;
  case PROTOBUF_C_TYPE_BYTES:
    if (f->default_value)
      memcpy(p, f->default_value, sizeof(ProtobufCBinaryData));
    else
      memset(p, 0, sizeof(ProtobufCBinaryData));
    break;
  default:
    if (f->default_value)
      memcpy(p, f->default_value, ana_json_elem_size(f->type));
    else
      memset(p, 0, ana_json_elem_size(f->type));
  }
}

ProtobufCMessage **ana_json_message_slot(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  ProtobufCMessage **slot = ana_json_member(m, f);
  if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(uint32_t *)ana_json_quantifier(m, f) != f->id)
    *slot = NULL;
  return slot;
}

ProtobufCMessage *ana_json_new_message(const ProtobufCMessageDescriptor *d,
                                       struct ana_arena *arena) {
  ProtobufCMessage *msg = ana_arena_alloc(arena, d->sizeof_message);
  if (msg)
    protobuf_c_message_init(d, msg);
  return msg;
}

int ana_json_append(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const void *value,
                    struct ana_arena *arena) {
  size_t *n = ana_json_quantifier(m, f);
  void **arr = ana_json_member(m, f);
  size_t es = ana_json_elem_size(f->type);
  char *grown = ana_arena_calloc(arena, *n + 1, es);
  if (!grown)
    return ANA_ERR_NOMEM;
  if (*n)
    memcpy(grown, *arr, *n * es);
  memcpy(grown + *n * es, value, es);
  *arr = grown;
  (*n)++;
  return 0;
}

/* ---- scalars from text ---- */

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

int ana_json_parse_integer(const char *s, size_t len, bool *neg, uint64_t *mag) {
  size_t i = 0;
  *neg = false;
  *mag = 0;
  if (i < len && s[i] == '-') {
    *neg = true;
    i++;
  }
  size_t int_start = i;
  while (i < len && is_digit(s[i]))
    i++;
  size_t nint = i - int_start;
  if (nint == 0)
    return -1;
  size_t frac_start = i, nfrac = 0;
  if (i < len && s[i] == '.') {
    frac_start = ++i;
    while (i < len && is_digit(s[i]))
      i++;
    nfrac = i - frac_start;
    if (nfrac == 0)
      return -1;
  }
  long exp = 0;
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    bool eneg = false;
    if (i < len && (s[i] == '+' || s[i] == '-'))
      eneg = s[i++] == '-';
    size_t estart = i;
    while (i < len && is_digit(s[i])) {
      if (exp < 1000000) /* saturate: anything this big is out of range anyway */
        exp = exp * 10 + (s[i] - '0');
      i++;
    }
    if (i == estart)
      return -1;
    if (eneg)
      exp = -exp;
  }
  if (i != len)
    return -1;

  /* The value is the digit string D = int digits + frac digits, times
   * 10^(exp - nfrac). */
  size_t total = nint + nfrac;
#define DIGIT(k) ((k) < nint ? s[int_start + (k)] : s[frac_start + (k)-nint])
  size_t lz = 0;
  while (lz < total && DIGIT(lz) == '0')
    lz++;
  if (lz == total)
    return 0; /* zero, whatever the exponent */
  long scale = exp - (long)nfrac;
  size_t end = total; /* digits of D used: [lz, end) */
  if (scale < 0) {
    size_t drop = (size_t)-scale;
    if (drop > total - lz)
      return -1; /* the leading non-zero digit is fractional */
    for (size_t k = total - drop; k < total; k++)
      if (DIGIT(k) != '0')
        return -1;
    end = total - drop;
    scale = 0;
  }
  if ((end - lz) + (size_t)scale > 20)
    return -2;
  uint64_t v = 0;
  for (size_t k = lz; k < end + (size_t)scale; k++) {
    unsigned d = k < end ? (unsigned)(DIGIT(k) - '0') : 0;
    if (v > (UINT64_MAX - d) / 10)
      return -2;
    v = v * 10 + d;
  }
#undef DIGIT
  *mag = v;
  return 0;
}

const char *ana_json_out_of_range(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_ENUM: return "out of range for an enum (int32)";
  case PROTOBUF_C_TYPE_INT32: return "out of range for int32";
  case PROTOBUF_C_TYPE_SINT32: return "out of range for sint32";
  case PROTOBUF_C_TYPE_SFIXED32: return "out of range for sfixed32";
  case PROTOBUF_C_TYPE_UINT32: return "out of range for uint32";
  case PROTOBUF_C_TYPE_FIXED32: return "out of range for fixed32";
  case PROTOBUF_C_TYPE_INT64: return "out of range for int64";
  case PROTOBUF_C_TYPE_SINT64: return "out of range for sint64";
  case PROTOBUF_C_TYPE_SFIXED64: return "out of range for sfixed64";
  case PROTOBUF_C_TYPE_UINT64: return "out of range for uint64";
  case PROTOBUF_C_TYPE_FIXED64: return "out of range for fixed64";
  case PROTOBUF_C_TYPE_FLOAT: return "out of range for float";
  case PROTOBUF_C_TYPE_DOUBLE: return "out of range for double";
  default: return "out of range";
  }
}

const char *ana_json_store_integer(ProtobufCType t, bool neg, uint64_t mag, void *dst) {
  if (mag == 0)
    neg = false;
  switch (t) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    if (mag > (neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX))
      break;
    *(int32_t *)dst = neg ? (int32_t)(-(int64_t)mag) : (int32_t)mag;
    return NULL;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    if (neg || mag > UINT32_MAX)
      break;
    *(uint32_t *)dst = (uint32_t)mag;
    return NULL;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    if (mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
      break;
    *(int64_t *)dst =
        neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return NULL;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if (neg)
      break;
    *(uint64_t *)dst = mag;
    return NULL;
  default: return "not an integer field";
  }
  return ana_json_out_of_range(t);
}

int ana_json_parse_double(const char *s, size_t len, double *out) {
  if (len == 3 && memcmp(s, "NaN", 3) == 0) {
    *out = NAN;
    return 0;
  }
  if (len == 8 && memcmp(s, "Infinity", 8) == 0) {
    *out = INFINITY;
    return 0;
  }
  if (len == 9 && memcmp(s, "-Infinity", 9) == 0) {
    *out = -INFINITY;
    return 0;
  }
  /* JSON number grammar (leading zeros tolerated), so strtod never sees
   * hex, "inf", "nan" or spaces. */
  size_t i = 0;
  if (i < len && s[i] == '-')
    i++;
  size_t start = i;
  while (i < len && is_digit(s[i]))
    i++;
  if (i == start)
    return -1;
  if (i < len && s[i] == '.') {
    start = ++i;
    while (i < len && is_digit(s[i]))
      i++;
    if (i == start)
      return -1;
  }
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-'))
      i++;
    start = i;
    while (i < len && is_digit(s[i]))
      i++;
    if (i == start)
      return -1;
  }
  if (i != len)
    return -1;
  char small[64];
  char *buf = len < sizeof small ? small : ana_malloc(len + 1);
  if (!buf)
    return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  double d = strtod(buf, NULL);
  if (buf != small)
    ana_free(buf);
  if (isinf(d))
    return -2;
  *out = d;
  return 0;
}

bool ana_json_fits_float(double d) {
  /* Values below FLT_MAX + half an ulp round to FLT_MAX; from there up they
   * would become infinity. */
  return !isfinite(d) || fabs(d) < 0x1.ffffffp+127;
}

bool ana_json_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    unsigned min, cp;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1f;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0f;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      return false;
    }
    if (len - i <= n)
      return false;
    for (size_t k = 1; k <= n; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

long ana_json_base64_decode(const char *s, size_t len, unsigned char *out) {
  size_t pad = 0;
  while (len > 0 && s[len - 1] == '=' && pad < 2) {
    len--;
    pad++;
  }
  if (len % 4 == 1 || (pad && (len + pad) % 4 != 0))
    return -1;
  long n = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_value((unsigned char)s[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  return n;
}

size_t ana_json_base64_encode(const unsigned char *in, size_t len, char *out) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = 0, i = 0;
  for (; i + 2 < len; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    out[n++] = alphabet[v >> 18];
    out[n++] = alphabet[(v >> 12) & 63];
    out[n++] = alphabet[(v >> 6) & 63];
    out[n++] = alphabet[v & 63];
  }
  if (i < len) {
    unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
    out[n++] = alphabet[v >> 18];
    out[n++] = alphabet[(v >> 12) & 63];
    out[n++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
    out[n++] = '=';
  }
  return n;
}

/* Boolean spellings: strict for JSON map keys, grpc-gateway's (Go
 * strconv.ParseBool) for query parameters. */
static int parse_bool(const char *s, size_t len, bool lenient) {
  static const char *const yes[] = {"true", "1", "t", "T", "TRUE", "True"};
  static const char *const no[] = {"false", "0", "f", "F", "FALSE", "False"};
  size_t n = lenient ? sizeof yes / sizeof yes[0] : 1;
  for (size_t i = 0; i < n; i++) {
    if (name_cmp(yes[i], s, len) == 0)
      return 1;
    if (name_cmp(no[i], s, len) == 0)
      return 0;
  }
  return -1;
}

const char *ana_json_scalar_from_text(const ProtobufCFieldDescriptor *f, const char *text,
                                      size_t len, bool lenient_bool, void *dst,
                                      struct ana_arena *arena, bool *nomem) {
  *nomem = false;
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
  case PROTOBUF_C_TYPE_FIXED64: {
    bool neg;
    uint64_t mag;
    int rc = ana_json_parse_integer(text, len, &neg, &mag);
    if (rc == -1)
      return "not an integer";
    if (rc == -2)
      return ana_json_out_of_range(f->type);
    return ana_json_store_integer(f->type, neg, mag, dst);
  }
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: {
    double d;
    int rc = ana_json_parse_double(text, len, &d);
    if (rc == -1)
      return "not a number";
    if (rc == -2 || (f->type == PROTOBUF_C_TYPE_FLOAT && !ana_json_fits_float(d)))
      return ana_json_out_of_range(f->type);
    if (f->type == PROTOBUF_C_TYPE_DOUBLE)
      *(double *)dst = d;
    else
      *(float *)dst = (float)d;
    return NULL;
  }
  case PROTOBUF_C_TYPE_BOOL: {
    int b = parse_bool(text, len, lenient_bool);
    if (b < 0)
      return "expected true or false";
    *(protobuf_c_boolean *)dst = b;
    return NULL;
  }
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    char name[256];
    if (len < sizeof name && !memchr(text, '\0', len)) {
      memcpy(name, text, len);
      name[len] = '\0';
      const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, name);
      if (ev) {
        *(int *)dst = ev->value;
        return NULL;
      }
    }
    bool neg;
    uint64_t mag;
    int rc = ana_json_parse_integer(text, len, &neg, &mag);
    if (rc == -1)
      return "unknown enum value";
    if (rc == -2)
      return ana_json_out_of_range(PROTOBUF_C_TYPE_ENUM);
    return ana_json_store_integer(PROTOBUF_C_TYPE_ENUM, neg, mag, dst);
  }
  case PROTOBUF_C_TYPE_STRING: {
    if (memchr(text, '\0', len))
      return "contains NUL (\\u0000), which is not supported";
    if (!ana_json_utf8_valid(text, len))
      return "not valid UTF-8";
    char *copy = ana_arena_strndup(arena, text, len);
    if (!copy) {
      *nomem = true;
      return "out of memory";
    }
    *(char **)dst = copy;
    return NULL;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    unsigned char *out = ana_arena_alloc(arena, len / 4 * 3 + 3);
    if (!out) {
      *nomem = true;
      return "out of memory";
    }
    long n = ana_json_base64_decode(text, len, out);
    if (n < 0)
      return "not valid base64";
    ProtobufCBinaryData *bd = dst;
    bd->len = (size_t)n;
    bd->data = n ? out : NULL;
    return NULL;
  }
  case PROTOBUF_C_TYPE_MESSAGE: break;
  }
  return "not a scalar field";
}
