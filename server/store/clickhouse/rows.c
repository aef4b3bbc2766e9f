/* The ClickHouse events table's rows in RowBinary, as the shipper sends them: the properties'
 * keys and values as parallel arrays, read straight from the committed JSON text when it is a
 * flat object, through jansson otherwise. */
#include "ana_alloc.h"
#include "ana_text.h"
#include "clickhouse_backend.h"

#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DAY_MS 86400000LL
/* A flat object with more keys than this goes through jansson. */
#define DIRECT_MAX_KEYS 64

static void put(struct ana_ch_rows *b, const void *data, size_t n) {
  if (b->failed || n == 0)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 65536;
    while (cap < b->len + n)
      cap *= 2;
    unsigned char *p = ana_realloc(b->p, cap);
    if (!p) {
      b->failed = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

static void put_varint(struct ana_ch_rows *b, uint64_t v) {
  unsigned char t[10];
  size_t n = 0;
  do {
    t[n] = (unsigned char)(v & 0x7f);
    v >>= 7;
    if (v)
      t[n] |= 0x80;
    n++;
  } while (v);
  put(b, t, n);
}

static void put_bytes(struct ana_ch_rows *b, const void *s, size_t n) {
  put_varint(b, n);
  put(b, s, n);
}

static void put_str(struct ana_ch_rows *b, const char *s) {
  put_bytes(b, s ? s : "", s ? strlen(s) : 0);
}

static void put_u64(struct ana_ch_rows *b, uint64_t v) {
  unsigned char t[8];
  for (int i = 0; i < 8; i++)
    t[i] = (unsigned char)(v >> (8 * i));
  put(b, t, 8);
}

int ana_clickhouse_day(int64_t ts_ms) {
  int64_t d = ts_ms >= 0 ? ts_ms / DAY_MS : -((-ts_ms + DAY_MS - 1) / DAY_MS);
  return d < 0 ? 0 : d > 65535 ? 65535 : (int)d;
}

/* --- through jansson --- */

static void put_props_parsed(struct ana_ch_rows *b, const char *json) {
  json_t *o = json ? json_loads(json, JSON_DECODE_ANY, NULL) : NULL;
  size_t n = 0;
  const char *key;
  json_t *v;
  if (json_is_object(o))
    json_object_foreach(o, key, v) n += !json_is_null(v);
  put_varint(b, n);
  if (n)
    json_object_foreach(o, key, v) if (!json_is_null(v)) put_str(b, key);
  put_varint(b, n);
  if (n) {
    json_object_foreach(o, key, v) {
      char num[64];
      const char *t = ana_clickhouse_value_text(v, num, sizeof num);
      if (json_is_string(v)) {
        put_bytes(b, json_string_value(v), json_string_length(v));
      } else if (t) {
        put_str(b, t);
      } else if (!json_is_null(v)) {
        char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        put_str(b, d ? d : "");
        free(d);
      }
    }
  }
  json_decref(o);
}

/* --- straight from the text --- */

/* One key and its value (NULL: null) as spans of the text or of a number's text. */
struct prop {
  const char *key, *val;
  size_t key_len, val_len;
};

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
    p++;
  return p;
}

/* A string without escapes at p (its opening quote): its bytes' span, the position after its
 * closing quote; NULL for anything jansson is to read (escapes, control characters, bad UTF-8). */
static const char *scan_string(const char *p, const char **s, size_t *len) {
  const unsigned char *q = (const unsigned char *)p + 1;
  for (;;) {
    unsigned c = *q;
    if (c == '"')
      break;
    if (c < 0x20 || c == '\\')
      return NULL;
    if (c < 0x80) {
      q++;
      continue;
    }
    size_t k = ana_utf8_seq_len(q, SIZE_MAX); /* jansson's rules */
    if (!k)
      return NULL;
    q += k;
  }
  *s = p + 1;
  *len = (size_t)((const char *)q - (p + 1));
  return (const char *)q + 1;
}

/* A number at p as the value text the embedded store compares, both as jansson reads them:
 * integers as written (*val points into the text), reals with 15 significant digits (written
 * into num, >= 64 bytes). The position after it, or NULL for what jansson is to read (big
 * integers, -0, overflows, bad forms). */
static const char *scan_number(const char *p, char *num, const char **val, size_t *len) {
  const char *q = p;
  bool real = false;
  if (*q == '-')
    q++;
  if (*q == '0') {
    q++;
    if (*q >= '0' && *q <= '9')
      return NULL;
  } else if (*q >= '1' && *q <= '9') {
    while (*q >= '0' && *q <= '9')
      q++;
  } else {
    return NULL;
  }
  size_t int_digits = (size_t)(q - p) - (*p == '-');
  if (*q == '.') {
    real = true;
    if (!(*++q >= '0' && *q <= '9'))
      return NULL;
    while (*q >= '0' && *q <= '9')
      q++;
  }
  if (*q == 'e' || *q == 'E') {
    real = true;
    q++;
    if (*q == '+' || *q == '-')
      q++;
    if (!(*q >= '0' && *q <= '9'))
      return NULL;
    while (*q >= '0' && *q <= '9')
      q++;
  }
  size_t n = (size_t)(q - p);
  if (!real) {
    /* strtoll's range for sure; "-0" is read as 0 */
    if (int_digits > 18 || (n == 2 && p[0] == '-' && p[1] == '0'))
      return NULL;
    *val = p;
    *len = n;
    return q;
  }
  if (n >= 64)
    return NULL;
  char text[64];
  memcpy(text, p, n);
  text[n] = '\0';
  double d = strtod(text, NULL);
  if (isinf(d))
    return NULL; /* jansson refuses the whole text */
  sqlite3_snprintf(64, num, "%!.15g", d);
  *val = num;
  *len = strlen(num);
  return q;
}

/* The keys and values of a flat object, or -1 when jansson is to read it. nums holds the
 * numbers' texts (64 bytes each). */
static int scan_flat(const char *json, struct prop *props, char (*nums)[64]) {
  const char *p = skip_ws(json);
  int n = 0;
  if (*p++ != '{')
    return -1;
  p = skip_ws(p);
  if (*p == '}')
    return *skip_ws(p + 1) ? -1 : 0;
  for (;;) {
    if (n == DIRECT_MAX_KEYS || *p != '"')
      return -1;
    struct prop *pr = &props[n];
    if (!(p = scan_string(p, &pr->key, &pr->key_len)))
      return -1;
    for (int i = 0; i < n; i++) /* jansson keeps one value of a key given twice */
      if (props[i].key_len == pr->key_len && memcmp(props[i].key, pr->key, pr->key_len) == 0)
        return -1;
    p = skip_ws(p);
    if (*p++ != ':')
      return -1;
    p = skip_ws(p);
    if (*p == '"') {
      p = scan_string(p, &pr->val, &pr->val_len);
    } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
      p = scan_number(p, nums[n], &pr->val, &pr->val_len);
    } else if (strncmp(p, "true", 4) == 0) {
      pr->val = "1", pr->val_len = 1, p += 4;
    } else if (strncmp(p, "false", 5) == 0) {
      pr->val = "0", pr->val_len = 1, p += 5;
    } else if (strncmp(p, "null", 4) == 0) {
      pr->val = NULL, p += 4;
    } else {
      return -1; /* objects, arrays, or not JSON */
    }
    if (!p)
      return -1;
    n++;
    p = skip_ws(p);
    if (*p == '}')
      return *skip_ws(p + 1) ? -1 : n;
    if (*p++ != ',')
      return -1;
    p = skip_ws(p);
  }
}

bool ana_clickhouse_put_props(struct ana_ch_rows *b, const char *json, bool direct) {
  struct prop props[DIRECT_MAX_KEYS];
  char nums[DIRECT_MAX_KEYS][64];
  int n = direct && json ? scan_flat(json, props, nums) : -1;
  if (n < 0) {
    put_props_parsed(b, json);
    return false;
  }
  size_t present = 0;
  for (int i = 0; i < n; i++)
    present += props[i].val != NULL;
  put_varint(b, present);
  for (int i = 0; i < n; i++)
    if (props[i].val)
      put_bytes(b, props[i].key, props[i].key_len);
  put_varint(b, present);
  for (int i = 0; i < n; i++)
    if (props[i].val)
      put_bytes(b, props[i].val, props[i].val_len);
  return true;
}

void ana_clickhouse_put_row(struct ana_ch_rows *b, const char *instance, uint64_t attempt,
                            const struct ana_spooled_event *e) {
  put_str(b, instance);
  put_u64(b, e->seq);
  put_u64(b, attempt);
  put_str(b, e->account_id);
  put_str(b, e->event_id);
  put_str(b, e->session_id);
  put_str(b, e->event_type);
  put_str(b, e->event_name);
  put_u64(b, (uint64_t)e->timestamp_ms);
  put_u64(b, (uint64_t)e->received_at_ms);
  int day = ana_clickhouse_day(e->timestamp_ms);
  unsigned char d[2] = {(unsigned char)(day & 0xff), (unsigned char)(day >> 8)};
  put(b, d, 2);
  ana_clickhouse_put_props(b, e->properties_json, true);
  put_str(b, e->properties_json && e->properties_json[0] ? e->properties_json : "{}");
  put_bytes(b, e->payload, e->payload_len);
}
