/* Encrypted event fields: the ENCRYPTED_FIELDS list, sealing at ingest
 * (copy-on-write along each property path, so the caller's event is left
 * as it was), and revealing or masking sealed values in read events. */
#include "ana_crypto_fields.h"

#include "ana_alloc.h"
#include "ana_json.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#define MAX_FIELDS 32
#define MAX_NAME 256

struct ana_crypto_fields {
  size_t n;
  char names[MAX_FIELDS][MAX_NAME]; /* canonical: "properties.email", "context.ip" */
};

static const char *const context_fields[] = {"context.ip", "context.userAgent", "context.locale"};

int ana_crypto_fields_parse(const char *spec, struct ana_crypto_fields **out,
                            struct ana_error *err) {
  *out = NULL;
  if (!spec)
    return 0;
  struct ana_crypto_fields *f = ana_calloc(1, sizeof *f);
  if (!f)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  const char *p = spec;
  while (*p) {
    size_t n = strcspn(p, ",");
    const char *s = p, *e = p + n;
    p = *e ? e + 1 : e;
    while (s < e && (*s == ' ' || *s == '\t'))
      s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
      e--;
    if (s == e)
      continue;
    size_t len = (size_t)(e - s);
    if (f->n == MAX_FIELDS || len >= MAX_NAME) {
      ana_crypto_fields_free(f);
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "ENCRYPTED_FIELDS: at most %d fields of at most %d characters",
                           MAX_FIELDS, MAX_NAME - 1);
    }
    char *name = f->names[f->n];
    memcpy(name, s, len);
    name[len] = '\0';
    bool ok = false;
    for (size_t i = 0; i < sizeof context_fields / sizeof context_fields[0]; i++)
      ok = ok || strcmp(name, context_fields[i]) == 0;
    if (!ok && strncmp(name, "properties.", 11) == 0 && name[11]) {
      ok = name[len - 1] != '.' && !strstr(name, "..");
    }
    if (!ok) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                    "ENCRYPTED_FIELDS: \"%s\" is not context.ip, context.userAgent, "
                    "context.locale or properties.<key>[.<key>...]",
                    name);
      ana_crypto_fields_free(f);
      return ANA_ERR_INVALID;
    }
    f->n++;
  }
  if (!f->n) {
    ana_crypto_fields_free(f);
    return 0;
  }
  *out = f;
  return 0;
}

void ana_crypto_fields_free(struct ana_crypto_fields *f) {
  ana_free(f);
}

const char *ana_crypto_fields_property(const struct ana_crypto_fields *f, const char *path) {
  if (!f || !path)
    return NULL;
  if (strncmp(path, "properties.", 11) == 0)
    path += 11;
  for (size_t i = 0; i < f->n; i++)
    if (strncmp(f->names[i], "properties.", 11) == 0 && strcmp(f->names[i] + 11, path) == 0)
      return f->names[i];
  return NULL;
}

/* ------------------------------------------------------------------ */
/* sealing                                                              */

/* A shallow copy of s in arena: its own array of its own entries, which
 * point at the same values. */
static Google__Protobuf__Struct *struct_copy(const Google__Protobuf__Struct *s,
                                             struct ana_arena *arena) {
  Google__Protobuf__Struct *c = ana_arena_alloc(arena, sizeof *c);
  if (!c)
    return NULL;
  *c = *s;
  c->fields = ana_arena_calloc(arena, s->n_fields ? s->n_fields : 1, sizeof *c->fields);
  if (!c->fields)
    return NULL;
  for (size_t i = 0; i < s->n_fields; i++) {
    Google__Protobuf__Struct__FieldsEntry *e = ana_arena_alloc(arena, sizeof *e);
    if (!e)
      return NULL;
    *e = *s->fields[i];
    c->fields[i] = e;
  }
  return c;
}

/* The slots holding the value at path (dot-separated keys) in root, whose
 * structs on the way are made root's own (root itself is already). Calls
 * fn on each (duplicate keys: each). Returns 0 or ANA_ERR_NOMEM. */
typedef int (*slot_fn)(void *ctx, Google__Protobuf__Value **slot);

static int each_slot(Google__Protobuf__Struct *root, const char *path, struct ana_arena *arena,
                     slot_fn fn, void *ctx) {
  size_t n = strcspn(path, ".");
  for (size_t i = 0; i < root->n_fields; i++) {
    Google__Protobuf__Struct__FieldsEntry *e = root->fields[i];
    if (!e->key || strlen(e->key) != n || memcmp(e->key, path, n) != 0 || !e->value)
      continue;
    if (!path[n]) {
      int rc = fn(ctx, &e->value);
      if (rc < 0)
        return rc;
      continue;
    }
    if (e->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE ||
        !e->value->struct_value)
      continue;
    Google__Protobuf__Value *v = ana_arena_alloc(arena, sizeof *v);
    if (!v)
      return ANA_ERR_NOMEM;
    *v = *e->value;
    if (!(v->struct_value = struct_copy(e->value->struct_value, arena)))
      return ANA_ERR_NOMEM;
    e->value = v;
    int rc = each_slot(v->struct_value, path + n + 1, arena, fn, ctx);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* A value's text as it is sealed and indexed; NULL for null or out of
 * memory (*nomem). */
static char *value_text(const Google__Protobuf__Value *v, struct ana_arena *arena, bool *nomem) {
  char num[64];
  *nomem = false;
  char *t = NULL;
  switch (v->kind_case) {
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
    return v->string_value ? v->string_value : (char *)"";
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
    snprintf(num, sizeof num, "%.15g", v->number_value);
    t = ana_arena_strdup(arena, num);
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE: return v->bool_value ? "true" : "false";
  case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
  case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
    struct ana_json_buf b;
    ana_json_buf_init(&b, 0);
    if (ana_json_encode(&b, &v->base, NULL) == 0)
      t = ana_arena_strndup(arena, b.data + b.reserve, b.len);
    ana_json_buf_fini(&b);
    break;
  }
  default: return NULL;
  }
  *nomem = !t;
  return t;
}

static Google__Protobuf__Value *string_value(const char *s, struct ana_arena *arena) {
  Google__Protobuf__Value *v = ana_arena_alloc(arena, sizeof *v);
  if (!v)
    return NULL;
  google__protobuf__value__init(v);
  v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  v->string_value = (char *)s;
  return v;
}

struct sealing {
  struct ana_crypto *c;
  const char *account;
  /* The account's keys, taken at the event's first encrypted value and
   * used for the rest of its fields. */
  struct ana_crypto_sealer *keys;
  bool have_keys;
  const char *name;
  struct ana_arena *arena;
  struct ana_error *err;
  bool blind; /* write the blind index instead of the sealed text */
};

/* The account's keys; NULL with s->err filled. */
static const struct ana_crypto_sealer *keys_of(struct sealing *s) {
  if (!s->have_keys && ana_crypto_sealer_init(s->c, s->account, s->keys, s->err) < 0)
    return NULL;
  s->have_keys = true;
  return s->keys;
}

static char *seal_text(struct sealing *s, const char *text) {
  const struct ana_crypto_sealer *k = keys_of(s);
  return k ? ana_crypto_sealer_seal(k, s->name, text, strlen(text), s->arena, s->err) : NULL;
}

static int seal_slot(void *ctx, Google__Protobuf__Value **slot) {
  struct sealing *s = ctx;
  bool nomem;
  const char *text = value_text(*slot, s->arena, &nomem);
  if (nomem)
    return ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (!text)
    return 0; /* null stays null */
  char *out;
  if (s->blind) {
    out = ana_arena_alloc(s->arena, ANA_CRYPTO_BLIND_CHARS + 1);
    if (!out)
      return ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    const struct ana_crypto_sealer *k = keys_of(s);
    if (!k)
      return ANA_ERR_INVALID;
    if (ana_crypto_sealer_blind(k, s->name, text, strlen(text), out) < 0)
      return ana_error_set(s->err, ANA_STATUS_UNAVAILABLE, "%s: no blind index key", s->name);
  } else if (!(out = seal_text(s, text))) {
    return ANA_ERR_INVALID;
  }
  Google__Protobuf__Value *v = string_value(out, s->arena);
  if (!v)
    return ana_error_set(s->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  *slot = v;
  return 0;
}

static int seal_fields(const struct ana_crypto_fields *f, Analytics__V1__Event *ev,
                       struct sealing *sp, Google__Protobuf__Struct **sealed_out,
                       Google__Protobuf__Struct **blind_out);

int ana_crypto_event_seal(struct ana_crypto *c, const struct ana_crypto_fields *f,
                          const char *account_id, Analytics__V1__Event *ev, struct ana_arena *arena,
                          Google__Protobuf__Struct **blind, struct ana_error *err) {
  *blind = ev->properties;
  if (!f || !c)
    return 0;
  Google__Protobuf__Struct *sealed_props = NULL, *blind_props = NULL;
  struct ana_crypto_sealer keys;
  struct sealing s = {c, account_id, &keys, false, NULL, arena, err, false};
  int rc = seal_fields(f, ev, &s, &sealed_props, &blind_props);
  if (s.have_keys)
    ana_crypto_sealer_fini(&keys);
  if (rc < 0)
    return rc;
  if (sealed_props) {
    ev->properties = sealed_props;
    *blind = blind_props;
  }
  return 0;
}

/* The body of ana_crypto_event_seal: seals ev's context fields in place
 * and its properties into *sealed_props (and their blind indexes into
 * *blind_props), both copies made on the first encrypted property found. */
static int seal_fields(const struct ana_crypto_fields *f, Analytics__V1__Event *ev,
                       struct sealing *sp, Google__Protobuf__Struct **sealed_out,
                       Google__Protobuf__Struct **blind_out) {
  struct ana_arena *arena = sp->arena;
  struct ana_error *err = sp->err;
  Google__Protobuf__Struct *sealed_props = NULL, *blind_props = NULL;
  for (size_t i = 0; i < f->n; i++) {
    sp->name = f->names[i];
    if (strncmp(sp->name, "context.", 8) == 0) {
      if (!ev->context)
        continue;
      char **slot = strcmp(sp->name, "context.ip") == 0          ? &ev->context->ip
                    : strcmp(sp->name, "context.userAgent") == 0 ? &ev->context->user_agent
                                                                 : &ev->context->locale;
      if (!*slot || !**slot)
        continue;
      char *out = seal_text(sp, *slot);
      if (!out)
        return ANA_ERR_INVALID;
      *slot = out;
      continue;
    }
    if (!ev->properties)
      continue;
    if (!sealed_props) {
      sealed_props = struct_copy(ev->properties, arena);
      blind_props = struct_copy(ev->properties, arena);
      if (!sealed_props || !blind_props)
        return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    sp->blind = false;
    int rc = each_slot(sealed_props, sp->name + 11, arena, seal_slot, sp);
    if (rc == 0) {
      sp->blind = true;
      rc = each_slot(blind_props, sp->name + 11, arena, seal_slot, sp);
    }
    if (rc == ANA_ERR_NOMEM)
      return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (rc < 0)
      return rc;
  }
  *sealed_out = sealed_props;
  *blind_out = blind_props;
  return 0;
}

char *ana_crypto_blind_text(struct ana_crypto *c, const char *account_id, const char *name,
                            const char *value, struct ana_arena *arena) {
  char out[ANA_CRYPTO_BLIND_CHARS + 1];
  if (ana_crypto_blind_index(c, account_id, name, value, strlen(value), out) < 0)
    return NULL;
  return ana_arena_strdup(arena, out);
}

/* ------------------------------------------------------------------ */
/* revealing                                                            */

struct reveal {
  struct ana_crypto *c;
  const char *account;
  bool clear;
  struct ana_arena *arena;
  struct ana_error *err;
  const char *name; /* the field's canonical name */
  int found;
};

/* Reveals or masks one value of an encrypted field. */
static int reveal_string(struct reveal *r, char **s) {
  if (!*s || !**s)
    return 0;
  r->found++;
  if (!r->clear) {
    *s = (char *)ANA_CRYPTO_MASK;
    return 0;
  }
  if (!ana_crypto_is_sealed(*s))
    return 0; /* stored before the field was configured */
  char *pt = NULL;
  size_t n = 0;
  if (ana_crypto_open(r->c, r->account, r->name, *s, &pt, &n, r->err) < 0)
    return ANA_ERR_INVALID;
  *s = ana_arena_strndup(r->arena, pt, n);
  OPENSSL_cleanse(pt, n);
  ana_free(pt);
  if (!*s)
    return ana_error_set(r->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return 0;
}

static int reveal_slot(void *ctx, Google__Protobuf__Value **slot) {
  struct reveal *r = ctx;
  Google__Protobuf__Value *v = *slot;
  if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
    return reveal_string(r, &v->string_value);
  if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE ||
      v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET || r->clear)
    return 0;
  /* Not sealed (stored before the field was configured): masked all the same. */
  Google__Protobuf__Value *m = string_value(ANA_CRYPTO_MASK, r->arena);
  if (!m)
    return ana_error_set(r->err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  *slot = m;
  r->found++;
  return 0;
}

int ana_crypto_event_reveal(struct ana_crypto *c, const struct ana_crypto_fields *f,
                            const char *account_id, Analytics__V1__Event *ev, bool clear,
                            struct ana_arena *arena, struct ana_error *err) {
  struct reveal r = {c, account_id, clear && c, arena, err, NULL, 0};
  for (size_t i = 0; f && i < f->n; i++) {
    r.name = f->names[i];
    int rc = 0;
    if (strncmp(r.name, "context.", 8) == 0) {
      if (ev->context)
        rc = reveal_string(&r, strcmp(r.name, "context.ip") == 0          ? &ev->context->ip
                               : strcmp(r.name, "context.userAgent") == 0 ? &ev->context->user_agent
                                                                          : &ev->context->locale);
    } else if (ev->properties) {
      /* ev is the caller's own: the copies each_slot makes on the way are
       * only wasted arena space. */
      rc = each_slot(ev->properties, r.name + 11, arena, reveal_slot, &r);
      if (rc == ANA_ERR_NOMEM)
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (rc < 0)
      return rc;
  }
  return r.found;
}

/* ------------------------------------------------------------------ */
/* re-sealing a stored event                                            */

struct reseal {
  struct ana_crypto *c;
  const char *account;
  const char *name;
  struct ana_arena *arena;
  int clear; /* values found not sealed */
};

/* Whether s is a value of the field stored as it came: not sealed, or a
 * text that only looks sealed (the sender's, stored before the field was
 * configured), which does not open. */
static bool stored_clear(struct reseal *r, const char *s) {
  if (!ana_crypto_is_sealed(s))
    return true;
  char *pt = NULL;
  size_t n = 0;
  struct ana_error err;
  if (ana_crypto_open(r->c, r->account, r->name, s, &pt, &n, &err) < 0)
    return true;
  OPENSSL_cleanse(pt, n);
  ana_free(pt);
  return false;
}

static int count_clear_slot(void *ctx, Google__Protobuf__Value **slot) {
  struct reseal *r = ctx;
  const Google__Protobuf__Value *v = *slot;
  switch (v->kind_case) {
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
    r->clear += v->string_value && stored_clear(r, v->string_value);
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
  case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
  case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
  case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: r->clear++; break;
  default: break;
  }
  return 0;
}

/* A sealed text replaced by its clear text when it opens (one that does
 * not is the sender's text, as at ingest, and is sealed as it is). */
static int open_string(struct reseal *r, char **s) {
  if (!*s || !ana_crypto_is_sealed(*s))
    return 0;
  char *pt = NULL;
  size_t n = 0;
  struct ana_error err;
  if (ana_crypto_open(r->c, r->account, r->name, *s, &pt, &n, &err) < 0)
    return 0;
  char *copy = ana_arena_strndup(r->arena, pt, n);
  OPENSSL_cleanse(pt, n);
  ana_free(pt);
  if (!copy)
    return ANA_ERR_NOMEM;
  *s = copy;
  return 0;
}

static int open_slot(void *ctx, Google__Protobuf__Value **slot) {
  Google__Protobuf__Value *v = *slot;
  return v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE
             ? open_string(ctx, &v->string_value)
             : 0;
}

static char **context_slot(Analytics__V1__Event *ev, const char *name) {
  return strcmp(name, "context.ip") == 0          ? &ev->context->ip
         : strcmp(name, "context.userAgent") == 0 ? &ev->context->user_agent
                                                  : &ev->context->locale;
}

int ana_crypto_event_reseal(struct ana_crypto *c, const struct ana_crypto_fields *f,
                            const char *account_id, Analytics__V1__Event *ev,
                            struct ana_arena *arena, Google__Protobuf__Struct **blind,
                            struct ana_error *err) {
  struct reseal r = {c, account_id, NULL, arena, 0};
  if (!f || !c)
    return 0;
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < f->n; i++) {
      r.name = f->names[i];
      int rc = 0;
      if (strncmp(r.name, "context.", 8) == 0) {
        char **slot = ev->context ? context_slot(ev, r.name) : NULL;
        if (!slot || !*slot || !**slot)
          continue;
        if (pass == 0)
          r.clear += stored_clear(&r, *slot);
        else
          rc = open_string(&r, slot);
      } else if (ev->properties) {
        rc = each_slot(ev->properties, r.name + 11, arena, pass == 0 ? count_clear_slot : open_slot,
                       &r);
      }
      if (rc < 0)
        return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (pass == 0 && r.clear == 0)
      return 0;
  }
  int rc = ana_crypto_event_seal(c, f, account_id, ev, arena, blind, err);
  return rc < 0 ? rc : r.clear;
}

void ana_crypto_fields_canonical(const struct ana_crypto_fields *f, char *out, size_t cap) {
  /* Sorted, so that the same set is the same text whatever its order. */
  const char *sorted[MAX_FIELDS];
  size_t n = f ? f->n : 0;
  for (size_t i = 0; i < n; i++) {
    size_t j = i;
    while (j > 0 && strcmp(sorted[j - 1], f->names[i]) > 0) {
      sorted[j] = sorted[j - 1];
      j--;
    }
    sorted[j] = f->names[i];
  }
  size_t len = 0;
  if (cap)
    out[0] = '\0';
  for (size_t i = 0; i < n && len < cap; i++) {
    int w = snprintf(out + len, cap - len, "%s%s", i ? "," : "", sorted[i]);
    if (w < 0)
      break;
    len += (size_t)w;
  }
}

bool ana_crypto_fields_covers(const struct ana_crypto_fields *f, const char *canonical) {
  /* Every field of f is in the comma-separated list. */
  for (size_t i = 0; f && i < f->n; i++) {
    size_t n = strlen(f->names[i]);
    bool found = false;
    for (const char *p = canonical; *p && !found;) {
      size_t m = strcspn(p, ",");
      found = m == n && memcmp(p, f->names[i], n) == 0;
      p += m;
      if (*p)
        p++;
    }
    if (!found)
      return false;
  }
  return true;
}

bool ana_crypto_fields_reads(const struct ana_crypto_fields *f, const char *field) {
  if (!f || !field)
    return false;
  if (ana_crypto_fields_property(f, field))
    return true;
  for (size_t i = 0; i < f->n; i++)
    if (strcmp(f->names[i], field) == 0)
      return true;
  return false;
}
