/* Validation and enrichment of one event: the checks every event passes
 * before it may be committed, and what the server adds (id, receive time,
 * skew correction, client address). */
#include "ana_ingest.h"

#include "ana_alloc.h"
#include "ana_id.h"
#include "ana_json.h"
#include "ana_text.h"
#include "ana_timestamp.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NAME_MAX_CHARS 128
#define EVENT_ID_MAX 128
#define SESSION_ID_MAX_CHARS 256
#define CONTEXT_MAX_CHARS 1024
#define DAY_MS 86400000LL

/* Seconds range of google.protobuf.Timestamp (0001-01-01 to 9999-12-31). */
#define TS_MIN_SECONDS -62135596800LL
#define TS_MAX_SECONDS 253402300799LL

struct checker {
  struct ana_ingest_item *item;
  struct ana_arena *arena;
  const char *path; /* "" or "events[3]" */
};

static int violation(struct checker *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int violation(struct checker *c, const char *field, const char *fmt, ...) {
  struct ana_ingest_item *it = c->item;
  it->status = ANALYTICS__V1__EVENT_RESULT__STATUS__REJECTED;
  if (it->n_violations >= ANA_INGEST_MAX_VIOLATIONS)
    return 0;
  char full[512], desc[512];
  if (c->path[0])
    snprintf(full, sizeof full, "%s%s%s", c->path, field[0] ? "." : "", field);
  else
    snprintf(full, sizeof full, "%s", field[0] ? field : "event");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(desc, sizeof desc, fmt, ap);
  va_end(ap);
  const char *f = ana_arena_strdup(c->arena, full);
  const char *d = ana_arena_strdup(c->arena, desc);
  if (!f || !d)
    return ANA_ERR_NOMEM;
  it->violations[it->n_violations].field = f;
  it->violations[it->n_violations].description = d;
  it->n_violations++;
  return 0;
}

/* A required or optional name: 1-max printable characters of valid UTF-8. */
static int check_name(struct checker *c, const char *field, const char *value, bool required,
                      size_t max_chars) {
  size_t chars = 0;
  if (!value || !value[0])
    return required ? violation(c, field, "is required") : 0;
  if (!ana_utf8_valid(value, &chars))
    return violation(c, field, "is not valid UTF-8");
  if (chars > max_chars)
    return violation(c, field, "must be at most %zu characters (has %zu)", max_chars, chars);
  if (!ana_text_printable(value))
    return violation(c, field, "must not contain control characters");
  return 0;
}

static int check_event_id(struct checker *c, const char *id) {
  size_t n = strlen(id);
  if (n > EVENT_ID_MAX)
    return violation(c, "eventId", "must be at most %d characters (has %zu)", EVENT_ID_MAX, n);
  for (const char *p = id; *p; p++) {
    char ch = *p;
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
          ch == '_' || ch == '.' || ch == ':' || ch == '-'))
      return violation(c, "eventId", "may contain only A-Z a-z 0-9 _ . : -");
  }
  return 0;
}

static bool timestamp_valid(const Google__Protobuf__Timestamp *t) {
  return t->seconds >= TS_MIN_SECONDS && t->seconds <= TS_MAX_SECONDS && t->nanos >= 0 &&
         t->nanos <= 999999999;
}

/* Walks properties: counts keys, measures depth, checks text. */
struct walk {
  struct checker *c;
  const struct ana_ingest_limits *lim;
  int keys;
  bool failed;
};

static int walk_value(struct walk *w, const Google__Protobuf__Value *v, char *path, size_t len,
                      size_t cap, int depth);

static int walk_struct(struct walk *w, const Google__Protobuf__Struct *s, char *path, size_t len,
                       size_t cap, int depth) {
  if (depth > w->lim->event_max_depth) {
    w->failed = true;
    return violation(w->c, path, "nests deeper than %d levels", w->lim->event_max_depth);
  }
  for (size_t i = 0; i < s->n_fields && !w->failed; i++) {
    const char *key = s->fields[i]->key;
    if (++w->keys > w->lim->event_max_properties) {
      w->failed = true;
      return violation(w->c, "properties", "has more than %d properties (nested keys count)",
                       w->lim->event_max_properties);
    }
    /* path + "." + key, cut to the buffer (as snprintf would cut it) */
    size_t n = 1 + strlen(key);
    size_t sub = len + n < cap ? len + n : cap - 1;
    if (sub > len) {
      path[len] = '.';
      memcpy(path + len + 1, key, sub - len - 1);
    }
    path[sub] = '\0';
    if (!ana_utf8_valid(key, NULL)) {
      w->failed = true;
      path[len] = '\0';
      return violation(w->c, path, "has a key that is not valid UTF-8");
    }
    if (s->fields[i]->value) {
      int rc = walk_value(w, s->fields[i]->value, path, sub, cap, depth);
      if (rc < 0)
        return rc;
    }
    path[len] = '\0';
  }
  return 0;
}

static int walk_value(struct walk *w, const Google__Protobuf__Value *v, char *path, size_t len,
                      size_t cap, int depth) {
  switch (v->kind_case) {
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
    if (!ana_utf8_valid(v->string_value, NULL)) {
      w->failed = true;
      return violation(w->c, path, "is not valid UTF-8");
    }
    return 0;
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
    if (!isfinite(v->number_value)) {
      w->failed = true;
      return violation(w->c, path, "must be a finite number");
    }
    return 0;
  case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
    return v->struct_value ? walk_struct(w, v->struct_value, path, len, cap, depth + 1) : 0;
  case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
    if (!v->list_value)
      return 0;
    if (depth + 1 > w->lim->event_max_depth) {
      w->failed = true;
      return violation(w->c, path, "nests deeper than %d levels", w->lim->event_max_depth);
    }
    for (size_t i = 0; i < v->list_value->n_values && !w->failed; i++) {
      size_t n = (size_t)snprintf(path + len, cap - len, "[%zu]", i);
      size_t sub = len + n < cap ? len + n : cap - 1;
      int rc = walk_value(w, v->list_value->values[i], path, sub, cap, depth + 1);
      path[len] = '\0';
      if (rc < 0)
        return rc;
    }
    return 0;
  default: return 0;
  }
}

/* The free-text words of an event, separated by spaces. */
struct words {
  char *data;
  size_t len, cap;
  bool failed;
};

static void search_words(struct words *b, const Google__Protobuf__Value *v);

static void append_text(struct words *b, const char *s) {
  size_t n = strlen(s);
  if (!n || b->failed)
    return;
  if (b->len + n + 2 > b->cap) {
    size_t cap = (b->cap ? b->cap * 2 : 256) + n;
    char *p = ana_realloc(b->data, cap);
    if (!p) {
      b->failed = true;
      return;
    }
    b->data = p;
    b->cap = cap;
  }
  if (b->len)
    b->data[b->len++] = ' ';
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void search_struct(struct words *b, const Google__Protobuf__Struct *s) {
  for (size_t i = 0; i < s->n_fields; i++)
    if (s->fields[i]->value)
      search_words(b, s->fields[i]->value);
}

static void search_words(struct words *b, const Google__Protobuf__Value *v) {
  char num[64];
  switch (v->kind_case) {
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
    if (v->string_value &&
        strncmp(v->string_value, ANA_CRYPTO_BLIND_PREFIX, sizeof ANA_CRYPTO_BLIND_PREFIX - 1))
      append_text(b, v->string_value); /* an encrypted field's blind index is not free text */
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
    snprintf(num, sizeof num, "%.15g", v->number_value);
    append_text(b, num);
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
    append_text(b, v->bool_value ? "true" : "false");
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
    if (v->struct_value)
      search_struct(b, v->struct_value);
    break;
  case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
    for (size_t i = 0; v->list_value && i < v->list_value->n_values; i++)
      search_words(b, v->list_value->values[i]);
    break;
  default: break;
  }
}

/* A context default (the request's User-Agent or locale) as an event's
 * context field: copied into arena and cut to CONTEXT_MAX_CHARS characters;
 * "" when it is not printable UTF-8. NULL only when out of memory. */
static char *context_default(struct ana_arena *arena, const char *value) {
  size_t chars = 0;
  if (!ana_utf8_valid(value, &chars) || !ana_text_printable(value))
    return (char *)"";
  size_t n = 0;
  for (size_t c = 0; value[n] && c < CONTEXT_MAX_CHARS; c++) {
    n++;
    while (((unsigned char)value[n] & 0xC0) == 0x80)
      n++;
  }
  char *out = ana_arena_alloc(arena, n + 1);
  if (!out)
    return NULL;
  memcpy(out, value, n);
  out[n] = '\0';
  return out;
}

/* The packed size of out, a copy of ev (whose packed size is ev_size)
 * with other context, ids and times: protobuf's encoding is the sum of
 * its fields', so only those that differ are sized again. */
static size_t enriched_size(const Analytics__V1__Event *ev, size_t ev_size,
                            const Analytics__V1__Event *out) {
  Analytics__V1__Event a = ANALYTICS__V1__EVENT__INIT, b = ANALYTICS__V1__EVENT__INIT;
  a.event_id = ev->event_id;
  a.account_id = ev->account_id;
  a.timestamp = ev->timestamp;
  a.context = ev->context;
  a.received_at = ev->received_at;
  b.event_id = out->event_id;
  b.account_id = out->account_id;
  b.timestamp = out->timestamp;
  b.context = out->context;
  b.received_at = out->received_at;
  return ev_size - protobuf_c_message_get_packed_size(&a.base) +
         protobuf_c_message_get_packed_size(&b.base);
}

int ana_ingest_prepare(const struct ana_ingest_request *req, const Analytics__V1__Event *ev,
                       const char *path, struct ana_arena *arena, struct ana_ingest_item *item) {
  struct ana_ingest_event in = {ev, protobuf_c_message_get_packed_size(&ev->base), NULL};
  return ana_ingest_prepare_known(req, &in, path, arena, item);
}

int ana_ingest_prepare_known(const struct ana_ingest_request *req,
                             const struct ana_ingest_event *in, const char *path,
                             struct ana_arena *arena, struct ana_ingest_item *item) {
  const Analytics__V1__Event *ev = in->event;
  const struct ana_ingest_limits *lim = req->limits;
  struct checker c = {item, arena, path};
  memset(item, 0, sizeof *item);
  item->status = ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED;
  item->event_id = ev->event_id && ev->event_id[0] ? ev->event_id : "";

  /* --- validation --- */
  int rc = 0;
  if (ev->account_id && ev->account_id[0] && strcmp(ev->account_id, req->account_id) != 0)
    rc |= violation(&c, "accountId", "does not match the caller's account");
  rc |= check_name(&c, "eventName", ev->event_name, true, NAME_MAX_CHARS);
  rc |= check_name(&c, "eventType", ev->event_type, true, NAME_MAX_CHARS);
  if (ev->event_id && ev->event_id[0])
    rc |= check_event_id(&c, ev->event_id);
  rc |= check_name(&c, "sessionId", ev->session_id, false, SESSION_ID_MAX_CHARS);
  if (ev->context) {
    rc |= check_name(&c, "context.userAgent", ev->context->user_agent, false, CONTEXT_MAX_CHARS);
    rc |= check_name(&c, "context.locale", ev->context->locale, false, CONTEXT_MAX_CHARS);
    rc |= check_name(&c, "context.ip", ev->context->ip, false, CONTEXT_MAX_CHARS);
  }
  if (ev->timestamp && !timestamp_valid(ev->timestamp))
    rc |= violation(&c, "timestamp", "is not a valid time");
  if (ev->sent_at && !timestamp_valid(ev->sent_at))
    rc |= violation(&c, "sentAt", "is not a valid time");
  if (ev->properties) {
    char ppath[512] = "properties";
    struct walk w = {&c, lim, 0, false};
    rc |= walk_struct(&w, ev->properties, ppath, strlen(ppath), sizeof ppath, 1);
  }
  size_t size = in->packed_size;
  if (size > (size_t)lim->event_max_bytes)
    rc |= violation(&c, "", "is %zu bytes, more than the limit of %d", size, lim->event_max_bytes);
  if (rc < 0)
    return ANA_ERR_NOMEM;
  if (item->status == ANALYTICS__V1__EVENT_RESULT__STATUS__REJECTED)
    return 0;

  /* --- enrichment --- */
  Analytics__V1__Event *out = ana_arena_alloc(arena, sizeof *out);
  Analytics__V1__EventContext *ctx = ana_arena_alloc(arena, sizeof *ctx);
  if (!out || !ctx)
    return ANA_ERR_NOMEM;
  *out = *ev;
  analytics__v1__event_context__init(ctx);
  if (ev->context)
    *ctx = *ev->context;
  /* The address comes from the connection, never from the body. */
  ctx->ip = (char *)(req->client_ip ? req->client_ip : "");
  if ((!ctx->user_agent || !ctx->user_agent[0]) && req->user_agent &&
      !(ctx->user_agent = context_default(arena, req->user_agent)))
    return ANA_ERR_NOMEM;
  if ((!ctx->locale || !ctx->locale[0]) && req->locale &&
      !(ctx->locale = context_default(arena, req->locale)))
    return ANA_ERR_NOMEM;
  out->context = ctx;
  out->account_id = (char *)req->account_id;

  if (!item->event_id[0] && in->new_id) {
    item->event_id = in->new_id;
  } else if (!item->event_id[0]) {
    char *id = ana_arena_alloc(arena, ANA_UUID_STR_LEN + 1);
    if (!id || ana_uuid7_generate(id) < 0)
      return ANA_ERR_NOMEM;
    item->event_id = id;
  }
  out->event_id = (char *)item->event_id;

  int64_t now = req->now_ms;
  int64_t ts = ev->timestamp ? ana_timestamp_ms(ev->timestamp) : now;
  int64_t original = ts;
  if (ev->timestamp && ev->sent_at) {
    /* Segment's formula: the client clock is off by (sentAt - receivedAt). */
    int64_t skew = now - ana_timestamp_ms(ev->sent_at);
    if (skew > lim->clock_skew_tolerance_ms || -skew > lim->clock_skew_tolerance_ms) {
      ts += skew;
      item->status = ANALYTICS__V1__EVENT_RESULT__STATUS__CORRECTED;
    }
  }
  int64_t oldest = now - (int64_t)lim->retention_days * DAY_MS;
  if (ts < oldest) {
    if (violation(&c, "timestamp", "is older than the retention period of %d days",
                  lim->retention_days) < 0)
      return ANA_ERR_NOMEM;
    return 0;
  }
  if (ts > now + lim->event_max_future_ms) {
    if (lim->reject_future) {
      if (violation(&c, "timestamp", "is more than %ld ms in the future",
                    lim->event_max_future_ms) < 0)
        return ANA_ERR_NOMEM;
      return 0;
    }
    ts = now; /* TIMESTAMP_POLICY=correct: stored at the time it arrived */
    item->status = ANALYTICS__V1__EVENT_RESULT__STATUS__CORRECTED;
  }
  item->stored_ts_ms = ts;
  item->skew_ms = ts - original;
  out->timestamp = ana_timestamp_new(arena, ts);
  out->received_at = ana_timestamp_new(arena, now);
  if (!out->timestamp || !out->received_at)
    return ANA_ERR_NOMEM;

  /* Encrypted fields: sealed in the stored event; their blind indexes are
   * what is aggregated and filtered on, and the free text has neither. */
  Google__Protobuf__Struct *indexed = ev->properties;
  if (req->encrypted) {
    struct ana_error serr;
    if (ana_crypto_event_seal(req->crypto, req->encrypted, req->account_id, out, arena, &indexed,
                              &serr) < 0)
      return violation(&c, "", "cannot be stored encrypted: %s", serr.message) < 0 ? ANA_ERR_NOMEM
                                                                                   : 0;
  }

  /* --- the record --- */
  struct ana_event_record *r = &item->record;
  r->account_id = req->account_id;
  r->event_id = item->event_id;
  r->session_id = ev->session_id ? ev->session_id : "";
  r->event_type = ev->event_type;
  r->event_name = ev->event_name;
  r->timestamp_ms = ts;
  r->received_at_ms = now;
  r->expires_at_ms = ts + (int64_t)lim->retention_days * DAY_MS;
  /* Sealing may change any field: then the whole event is sized again. */
  size_t n = req->encrypted ? protobuf_c_message_get_packed_size(&out->base)
                            : enriched_size(ev, size, out);
  uint8_t *payload = ana_arena_alloc(arena, n ? n : 1);
  if (!payload)
    return ANA_ERR_NOMEM;
  r->payload_len = protobuf_c_message_pack(&out->base, payload);
  assert(r->payload_len == n);
  r->payload = payload;

  return ana_ingest_record_text(ev, indexed, arena, &r->properties_json, &r->search_text);
}

int ana_ingest_record_text(const Analytics__V1__Event *ev, const Google__Protobuf__Struct *indexed,
                           struct ana_arena *arena, const char **properties_json,
                           const char **search_text) {
  *properties_json = "{}";
  if (indexed) {
    struct ana_json_buf b;
    ana_json_buf_init(&b, 0);
    int erc = ana_json_encode(&b, &indexed->base, NULL);
    *properties_json = erc < 0 ? NULL : ana_arena_strndup(arena, b.data + b.reserve, b.len);
    ana_json_buf_fini(&b);
  }
  struct words w = {0};
  append_text(&w, ev->event_name ? ev->event_name : "");
  append_text(&w, ev->event_type ? ev->event_type : "");
  if (indexed)
    search_struct(&w, indexed);
  *search_text = w.failed ? NULL : ana_arena_strdup(arena, w.data ? w.data : "");
  ana_free(w.data);
  if (!*properties_json || !*search_text)
    return ANA_ERR_NOMEM;
  return 0;
}
