/* KeyService: an account's API keys (create, list, get, revoke) through the
 * key registry, and its field-encryption data keys (list, rotate). Every call touches the database,
 * so it runs on the worker pool, never on a transport thread. The key itself leaves the server
 * once, in CreateKeyResponse; every other answer carries metadata only. */
#include "ana_services.h"
#include "service_jobs.h"

#include "analytics/v1/keys.pb-c.h"
#include "ana_api_keys.h"
#include "ana_crypto.h"
#include "ana_rate_limit.h"
#include "ana_call.h"
#include "ana_log.h"
#include "ana_timestamp.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_PAGE 50
#define MAX_PAGE 1000

static struct ana_key_service_options opts;

static Google__Protobuf__Timestamp *timestamp_of(struct ana_arena *a, int64_t ms) {
  return ms ? ana_timestamp_new(a, ms) : NULL; /* 0: never */
}

/* The message for a record, in the arena (strings copied). NULL: no
 * memory. */
static Analytics__V1__ApiKey *message_of(struct ana_arena *a, const struct ana_api_key_record *r) {
  Analytics__V1__ApiKey *m = ana_arena_alloc(a, sizeof *m);
  if (!m)
    return NULL;
  analytics__v1__api_key__init(m);
  m->key_id = ana_arena_strdup(a, r->key_id);
  m->account_id = ana_arena_strdup(a, r->account_id);
  m->name = ana_arena_strdup(a, r->name ? r->name : "");
  m->role = ana_arena_strdup(a, r->role);
  m->created_by = ana_arena_strdup(a, r->created_by ? r->created_by : "");
  m->rate_limit = ana_arena_strdup(a, r->rate_limit ? r->rate_limit : "");
  m->created_at = timestamp_of(a, r->created_at_ms);
  m->last_used_at = timestamp_of(a, r->last_used_at_ms);
  m->revoked_at = timestamp_of(a, r->revoked_at_ms);
  if (!m->key_id || !m->account_id || !m->name || !m->role || !m->created_by || !m->rate_limit ||
      (r->created_at_ms && !m->created_at) || (r->last_used_at_ms && !m->last_used_at) ||
      (r->revoked_at_ms && !m->revoked_at))
    return NULL;
  return m;
}

struct one {
  struct ana_arena *arena;
  Analytics__V1__ApiKey *key;
  bool nomem;
};

static int keep_one(void *ctx, const struct ana_api_key_record *r) {
  struct one *o = ctx;
  o->key = message_of(o->arena, r);
  o->nomem = !o->key;
  return 1;
}

/* ------------------------------------------------------------------ */
/* handlers (run on the worker pool) */

static void do_create(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__CreateKeyRequest *req = (const void *)request;
  const struct ana_principal *who = ana_call_principal(call);
  struct ana_arena *a = ana_call_arena(call);
  struct ana_error err;
  struct ana_api_key_record rec;
  char key[ANA_API_KEY_CHARS + 1];
  /* One account per principal until principals hold several: the key
   * belongs to the caller's. */
  if (req->account_id && req->account_id[0] && strcmp(req->account_id, who->account_id) != 0) {
    ana_error_set(&err, ANA_STATUS_PERMISSION_DENIED,
                  "accountId: keys can be created for your own account only");
    ana_service_fail(call, &err);
    return;
  }
  if (!req->role || !req->role[0]) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "role: is required (one of %s)",
                  ana_api_key_roles_text);
    ana_service_fail(call, &err);
    return;
  }
  struct ana_rate_limit limit;
  char why[128];
  if (req->rate_limit && req->rate_limit[0] &&
      !ana_rate_limit_parse(req->rate_limit, strlen(req->rate_limit), &limit, why, sizeof why)) {
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "rateLimit: %s", why);
    ana_service_fail(call, &err);
    return;
  }
  if (ana_api_keys_issue(opts.keys, who->account_id, req->role, req->name, req->rate_limit,
                         who->subject ? who->subject : "", key, &rec, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__CreateKeyResponse resp = ANALYTICS__V1__CREATE_KEY_RESPONSE__INIT;
  resp.key = message_of(a, &rec);
  resp.api_key = key;
  ANA_INFO("keys", "API key %s created for account %s with role %s", rec.key_id, who->account_id,
           rec.role);
  /* The reply is serialised before ana_call_finish returns. */
  if (!resp.key)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    ana_call_reply(call, &resp.base);
  OPENSSL_cleanse(key, sizeof key);
}

static void do_get(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__GetKeyRequest *req = (const void *)request;
  struct ana_error err;
  struct one o = {ana_call_arena(call), NULL, false};
  if (ana_api_keys_get(opts.keys, ana_call_principal(call)->account_id, req->key_id, keep_one, &o,
                       &err) < 0)
    ana_service_fail(call, &err);
  else if (o.nomem || !o.key)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    ana_call_reply(call, &o.key->base);
}

struct page {
  struct ana_arena *arena;
  Analytics__V1__ApiKey **items;
  size_t n, cap;
  bool nomem;
};

static int collect(void *ctx, const struct ana_api_key_record *r) {
  struct page *p = ctx;
  if (p->n == p->cap)
    return 1;
  if (!(p->items[p->n] = message_of(p->arena, r))) {
    p->nomem = true;
    return 1;
  }
  p->n++;
  return 0;
}

static void do_list(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListKeysRequest *req = (const void *)request;
  struct ana_error err;
  size_t size = ana_service_page_size(call, req->page_size, DEFAULT_PAGE, MAX_PAGE);
  if (!size)
    return;
  struct ana_arena *a = ana_call_arena(call);
  struct page p = {a, ana_arena_calloc(a, size + 1, sizeof *p.items), 0, size + 1, false};
  if (!p.items) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (ana_api_keys_list(opts.keys, ana_call_principal(call)->account_id, req->page_token,
                        (int)size + 1, collect, &p, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  if (p.nomem) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  Analytics__V1__ListKeysResponse resp = ANALYTICS__V1__LIST_KEYS_RESPONSE__INIT;
  if (ana_service_page_more(&p.n, size))
    resp.next_page_token = p.items[size - 1]->key_id;
  resp.n_keys = p.n;
  resp.keys = p.items;
  ana_call_reply(call, &resp.base);
}

static void do_revoke(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__RevokeKeyRequest *req = (const void *)request;
  const char *account = ana_call_principal(call)->account_id;
  struct ana_error err;
  struct one o = {ana_call_arena(call), NULL, false};
  if (ana_api_keys_revoke(opts.keys, account, req->key_id, &err) < 0 ||
      ana_api_keys_get(opts.keys, account, req->key_id, keep_one, &o, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  if (o.nomem || !o.key) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  ANA_INFO("keys", "API key %s of account %s revoked", o.key->key_id, account);
  ana_call_reply(call, &o.key->base);
}

/* ------------------------------------------------------------------ */
/* data keys */

struct data_keys {
  struct ana_arena *arena;
  Analytics__V1__DataKey **items;
  size_t n, cap;
  bool nomem;
};

static int collect_data_key(void *ctx, const struct ana_data_key_record *r) {
  struct data_keys *d = ctx;
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8;
    Analytics__V1__DataKey **items = ana_arena_calloc(d->arena, cap, sizeof *items);
    if (!items) {
      d->nomem = true;
      return 1;
    }
    if (d->n)
      memcpy(items, d->items, d->n * sizeof *items);
    d->items = items;
    d->cap = cap;
  }
  Analytics__V1__DataKey *m = ana_arena_alloc(d->arena, sizeof *m);
  if (!m) {
    d->nomem = true;
    return 1;
  }
  analytics__v1__data_key__init(m);
  m->account_id = ana_arena_strdup(d->arena, r->account_id);
  m->key_id = r->key_id;
  m->created_at = timestamp_of(d->arena, r->created_at_ms);
  if (!m->account_id || (r->created_at_ms && !m->created_at)) {
    d->nomem = true;
    return 1;
  }
  d->items[d->n++] = m;
  return 0;
}

/* The account's data keys into d, the highest marked current. */
static int load_data_keys(const char *account, struct data_keys *d, struct ana_error *err) {
  if (!opts.crypto)
    return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "field encryption is not running");
  int rc = ana_crypto_list_keys(opts.crypto, account, collect_data_key, d, err);
  if (rc == 0 && d->nomem)
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (rc == 0 && d->n)
    d->items[d->n - 1]->current = true;
  return rc;
}

static void do_list_data_keys(struct ana_call *call, const ProtobufCMessage *request) {
  (void)request;
  struct ana_error err;
  struct data_keys d = {.arena = ana_call_arena(call)};
  if (load_data_keys(ana_call_principal(call)->account_id, &d, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__ListDataKeysResponse resp = ANALYTICS__V1__LIST_DATA_KEYS_RESPONSE__INIT;
  resp.n_keys = d.n;
  resp.keys = d.items;
  ana_call_reply(call, &resp.base);
}

static void do_rotate_data_key(struct ana_call *call, const ProtobufCMessage *request) {
  (void)request;
  const char *account = ana_call_principal(call)->account_id;
  struct ana_error err;
  uint32_t id = 0;
  struct data_keys d = {.arena = ana_call_arena(call)};
  if (!opts.crypto) {
    ana_error_set(&err, ANA_STATUS_UNAVAILABLE, "field encryption is not running");
    ana_service_fail(call, &err);
    return;
  }
  if (ana_crypto_rotate(opts.crypto, account, &id, &err) < 0 ||
      load_data_keys(account, &d, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__DataKey *key = NULL;
  for (size_t i = 0; i < d.n && !key; i++)
    if (d.items[i]->key_id == id)
      key = d.items[i];
  if (!key) {
    ana_call_fail(call, ANA_STATUS_INTERNAL, "the new data key is not in the store");
    return;
  }
  ANA_INFO("keys", "data key %u of account %s is now current", id, account);
  ana_call_reply(call, &key->base);
}

ANA_SERVICE_ASYNC(create_key, do_create, opts.workers)
ANA_SERVICE_ASYNC(get_key, do_get, opts.workers)
ANA_SERVICE_ASYNC(list_keys, do_list, opts.workers)
ANA_SERVICE_ASYNC(revoke_key, do_revoke, opts.workers)
ANA_SERVICE_ASYNC(list_data_keys, do_list_data_keys, opts.workers)
ANA_SERVICE_ASYNC(rotate_data_key, do_rotate_data_key, opts.workers)

static const struct ana_handler create_h = {.on_request = create_key};
static const struct ana_handler get_h = {.on_request = get_key};
static const struct ana_handler list_h = {.on_request = list_keys};
static const struct ana_handler revoke_h = {.on_request = revoke_key};
static const struct ana_handler list_data_h = {.on_request = list_data_keys};
static const struct ana_handler rotate_data_h = {.on_request = rotate_data_key};

int ana_key_service_bind(const struct ana_key_service_options *o) {
  opts = *o;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_KEY_SERVICE_CREATE_KEY, &create_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_KEY_SERVICE_GET_KEY, &get_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_KEY_SERVICE_LIST_KEYS, &list_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_KEY_SERVICE_REVOKE_KEY, &revoke_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_KEY_SERVICE_LIST_DATA_KEYS, &list_data_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_KEY_SERVICE_ROTATE_DATA_KEY, &rotate_data_h);
  return 0;
}
