/* AuditService and the audit hook: every finished call whose method is
 * audited, and every authentication failure, becomes an audit record; admins
 * list their account's records (ListAuditRecords, on the worker pool). */
#include "ana_services.h"
#include "service_jobs.h"

#include "analytics/v1/audit.pb-c.h"
#include "ana_audit.h"
#include "ana_call.h"
#include "ana_timestamp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_PAGE 100
#define MAX_PAGE 1000

static struct ana_audit_service_options opts;

/* The first non-empty string field named *_id (account_id aside) of m, or
 * of its message fields one level down. */
static const char *target_of(const ProtobufCMessage *m, int depth) {
  if (!m)
    return NULL;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    size_t n = strlen(f->name);
    if (f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED || n < 3 ||
        strcmp(f->name + n - 3, "_id") != 0 || strcmp(f->name, "account_id") == 0)
      continue;
    const char *v = *(const char *const *)((const char *)m + f->offset);
    if (v && v[0])
      return v;
  }
  for (unsigned i = 0; depth > 0 && i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
      continue;
    const char *v =
        target_of(*(const ProtobufCMessage *const *)((const char *)m + f->offset), depth - 1);
    if (v)
      return v;
  }
  return NULL;
}

static void on_finish(const struct ana_call *call, const ProtobufCMessage *response,
                      const struct ana_error *status) {
  const struct ana_method *m = ana_call_method(call);
  int code = status ? (int)status->code : 0;
  const struct ana_principal *p = ana_call_principal(call);
  bool auth_failure = code == ANA_STATUS_UNAUTHENTICATED && !p->subject;
  if (!m || (!m->audited && !auth_failure))
    return;
  const char *target = target_of(ana_call_request(call), 1);
  if (!target && code == 0)
    target = target_of(response, 1);
  const char *key_id = NULL;
  if (p->credential == ANA_CREDENTIAL_API_KEY && p->subject && strncmp(p->subject, "key:", 4) == 0)
    key_id = p->subject + 4;
  struct ana_audit_record r = {
      .kind = auth_failure ? "auth_failure" : "call",
      /* An authentication failure has no account of its own: it goes to the
       * operator's (DEFAULT_ACCOUNT_ID), whose admins watch the server. */
      .account_id = p->account_id ? p->account_id : opts.default_account_id,
      .subject = p->subject,
      .key_id = key_id,
      .method = m->path,
      .target_id = target,
      .code = code,
      .peer = ana_call_peer(call),
      .request_id = ana_call_metadata(call, "x-request-id"),
  };
  ana_audit_submit(opts.audit, &r);
}

/* ------------------------------------------------------------------ */

struct page {
  struct ana_arena *arena;
  Analytics__V1__AuditRecord **records;
  size_t n, cap;
  uint64_t last_seq;
  bool nomem;
};

static char *hex_of(struct ana_arena *a, const uint8_t *h) {
  char *s = ana_arena_alloc(a, 2 * ANA_AUDIT_HASH_LEN + 1);
  if (s)
    ana_audit_hex(h, ANA_AUDIT_HASH_LEN, s);
  return s;
}

static char *dup(struct ana_arena *a, const char *s) {
  return ana_arena_strdup(a, s ? s : "");
}

static int add_record(void *ctx, const struct ana_audit_record *r) {
  struct page *pg = ctx;
  struct ana_arena *a = pg->arena;
  Analytics__V1__AuditRecord *m = ana_arena_alloc(a, sizeof *m);
  Google__Protobuf__Timestamp *t = ana_arena_alloc(a, sizeof *t);
  if (!m || !t || pg->n == pg->cap) {
    pg->nomem = true;
    return 1;
  }
  analytics__v1__audit_record__init(m);
  m->sequence = r->seq;
  m->prev_hash = hex_of(a, r->prev_hash);
  m->hash = hex_of(a, r->hash);
  m->redacted = r->redacted;
  m->kind = dup(a, r->kind);
  m->account_id = dup(a, r->account_id);
  m->subject = dup(a, r->subject);
  m->key_id = dup(a, r->key_id);
  m->method = dup(a, r->method);
  m->target_id = dup(a, r->target_id);
  m->outcome = dup(a, r->redacted ? "" : ana_status_name((enum ana_status)r->code));
  m->peer = dup(a, r->peer);
  m->request_id = dup(a, r->request_id);
  if (!r->redacted) {
    ana_timestamp_set(t, r->at_ms);
    m->time = t;
  }
  if (!m->prev_hash || !m->hash || !m->kind || !m->account_id || !m->subject || !m->key_id ||
      !m->method || !m->target_id || !m->outcome || !m->peer || !m->request_id) {
    pg->nomem = true;
    return 1;
  }
  pg->records[pg->n++] = m;
  pg->last_seq = r->seq;
  return 0;
}

static int code_of(const char *name) {
  if (!name || !name[0])
    return -1;
  for (int c = 0; c <= 16; c++)
    if (strcmp(ana_status_name((enum ana_status)c), name) == 0)
      return c;
  return -2;
}

static void do_list(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListAuditRecordsRequest *req = (const void *)request;
  struct ana_arena *a = ana_call_arena(call);
  struct ana_error err;
  ana_error_clear(&err);
  size_t limit = ana_service_page_size(call, req->page_size, DEFAULT_PAGE, MAX_PAGE);
  if (!limit)
    return;
  int code = code_of(req->outcome);
  if (code == -2) {
    ana_call_add_violation(call, "outcome", "not a status code name (OK, PERMISSION_DENIED, ...)");
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT,
                  "outcome: %s is not a status code name (OK, PERMISSION_DENIED, ...)",
                  req->outcome);
    return;
  }
  uint64_t token = 0;
  if (req->page_token && req->page_token[0]) {
    char *end;
    token = strtoull(req->page_token, &end, 10);
    if (*end || token == 0) {
      ana_call_add_violation(call, "pageToken", "not a token this listing returned");
      ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT,
                    "pageToken: not a token this listing returned");
      return;
    }
  }
  /* A caller sees its own calls made before this one. */
  ana_audit_flush(opts.audit, 2000);
  struct ana_audit_query q = {
      .account_id = ana_call_principal(call)->account_id,
      .from_ms = ana_timestamp_ms(req->start_time),
      .to_ms = ana_timestamp_ms(req->end_time),
      .subject = req->subject,
      .method = req->method,
      .code = code,
      .before_seq = req->chain ? 0 : token,
      .chain = req->chain,
      .after_seq = req->chain ? (token ? token : req->after_sequence) : 0,
      .limit = (int)limit + 1,
  };
  struct page pg = {.arena = a, .cap = limit + 1};
  pg.records = ana_arena_alloc(a, pg.cap * sizeof *pg.records);
  struct ana_audit_anchor anchor;
  if (!pg.records)
    pg.nomem = true;
  else if (ana_audit_list(opts.audit, &q, add_record, &pg, &err) < 0 ||
           ana_audit_anchor(opts.audit, &anchor, &err) < 0) {
    ana_call_finish(call, NULL, &err);
    return;
  }
  if (pg.nomem) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  Analytics__V1__ListAuditRecordsResponse resp = ANALYTICS__V1__LIST_AUDIT_RECORDS_RESPONSE__INIT;
  char next[24] = "";
  if (ana_service_page_more(&pg.n, limit))
    snprintf(next, sizeof next, "%llu", (unsigned long long)pg.records[limit - 1]->sequence);
  resp.records = pg.records;
  resp.n_records = pg.n;
  resp.next_page_token = next;
  resp.anchor_sequence = anchor.seq;
  resp.anchor_hash = hex_of(a, anchor.hash);
  ana_call_reply(call, &resp.base);
}

ANA_SERVICE_ASYNC(on_list, do_list, opts.workers)

static const struct ana_handler list_handler = {.on_request = on_list};

int ana_audit_service_bind(const struct ana_audit_service_options *o) {
  opts = *o;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_AUDIT_SERVICE_LIST_AUDIT_RECORDS, &list_handler);
  ana_rpc_set_finish_hook(on_finish);
  return 0;
}
