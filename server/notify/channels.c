/* Channels: validation, storage in the catalog (kind "channel", the whole
 * Channel message with its secrets), the default channel of each type, and
 * masking of secrets in every answer. */
#include "notify_internal.h"

#include "ana_alloc.h"
#include "ana_crypto.h"

#include "ana_arena.h"
#include "ana_id.h"
#include "ana_proto_walk.h"
#include "ana_clock.h"
#include "ana_timestamp.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define KIND "channel"
#define NAME_MAX_CHARS 200

static int nomem(struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return ANA_ERR_NOMEM;
}

/* A deep copy of m in arena (pack, then unpack with the arena's allocator). */
static Analytics__V1__Channel *clone_bytes(const uint8_t *data, size_t len,
                                           struct ana_arena *arena) {
  return (void *)ana_proto_unpack(&analytics__v1__channel__descriptor, &arena->pb, data, len, 64,
                                  NULL);
}

static Analytics__V1__Channel *copy_of(const Analytics__V1__Channel *m, struct ana_arena *arena) {
  size_t n = protobuf_c_message_get_packed_size(&m->base);
  uint8_t *buf = ana_arena_alloc(arena, n ? n : 1);
  if (!buf)
    return NULL;
  protobuf_c_message_pack(&m->base, buf);
  return clone_bytes(buf, n, arena);
}

/* The secrets of a channel's settings: slots (their string members) and
 * their names; returns how many. */
static size_t secrets_of(Analytics__V1__Channel *c, char ***slots, const char **names) {
  size_t k = 0;
  if (c->settings_case == ANALYTICS__V1__CHANNEL__SETTINGS_SLACK && c->slack) {
    slots[k] = &c->slack->webhook_url;
    names[k++] = "slack.webhookUrl";
  } else if (c->settings_case == ANALYTICS__V1__CHANNEL__SETTINGS_WEBHOOK && c->webhook) {
    slots[k] = &c->webhook->signing_secret;
    names[k++] = "webhook.signingSecret";
  } else if (c->settings_case == ANALYTICS__V1__CHANNEL__SETTINGS_TELEGRAM && c->telegram) {
    slots[k] = &c->telegram->bot_token;
    names[k++] = "telegram.botToken";
  }
  return k;
}

/* What a sealed secret is bound to: its channel and field. */
static void secret_context(const Analytics__V1__Channel *c, const char *name, char *out,
                           size_t size) {
  snprintf(out, size, "channel:%s:%s", c->channel_id ? c->channel_id : "", name);
}

/* Replaces c's secrets by their sealed texts (in arena), before c is
 * stored. A secret sealed already stays. */
static int seal_secrets(struct ana_notify *n, Analytics__V1__Channel *c, struct ana_arena *arena,
                        struct ana_error *err) {
  char **slots[4];
  const char *names[4];
  size_t k = n->o.crypto ? secrets_of(c, slots, names) : 0;
  for (size_t i = 0; i < k; i++) {
    const char *v = *slots[i];
    if (!v || !v[0] || ana_crypto_is_sealed(v))
      continue;
    char context[128], *sealed = NULL;
    secret_context(c, names[i], context, sizeof context);
    int rc = ana_crypto_seal(n->o.crypto, c->account_id, context, v, strlen(v), &sealed, err);
    if (rc < 0)
      return rc;
    *slots[i] = ana_arena_strdup(arena, sealed);
    ana_free(sealed);
    if (!*slots[i])
      return nomem(err);
  }
  return 0;
}

/* Replaces c's sealed secrets by their values (in arena), after c was
 * loaded. A sealed secret that does not open is an error (DATA_LOSS). */
static int open_secrets(struct ana_notify *n, Analytics__V1__Channel *c, struct ana_arena *arena,
                        struct ana_error *err) {
  char **slots[4];
  const char *names[4];
  size_t k = secrets_of(c, slots, names);
  for (size_t i = 0; i < k; i++) {
    if (!ana_crypto_is_sealed(*slots[i]))
      continue; /* stored before secrets were sealed: sealed at its next save */
    if (!n->o.crypto)
      return ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                           "channel %s: its secrets are sealed and no key is loaded",
                           c->channel_id ? c->channel_id : "");
    char context[128], *value = NULL;
    size_t len = 0;
    secret_context(c, names[i], context, sizeof context);
    int rc = ana_crypto_open(n->o.crypto, c->account_id, context, *slots[i], &value, &len, err);
    if (rc < 0)
      return rc;
    *slots[i] = ana_arena_strndup(arena, value, len);
    OPENSSL_cleanse(value, len);
    ana_free(value);
    if (!*slots[i])
      return nomem(err);
  }
  return 0;
}

/* A stored channel (arena), its secrets opened; NULL with err filled. */
static Analytics__V1__Channel *load_body(struct ana_notify *n, const uint8_t *data, size_t len,
                                         struct ana_arena *arena, struct ana_error *err) {
  Analytics__V1__Channel *c = clone_bytes(data, len, arena);
  if (!c) {
    nomem(err);
    return NULL;
  }
  return open_secrets(n, c, arena, err) < 0 ? NULL : c;
}

struct loaded {
  struct ana_notify *n;
  struct ana_arena *arena;
  Analytics__V1__Channel *ch;
  struct ana_error *err;
  bool failed;
};

static int keep(void *ctx, const struct ana_catalog_object *o) {
  struct loaded *l = ctx;
  l->ch = load_body(l->n, o->body, o->body_len, l->arena, l->err);
  l->failed = !l->ch;
  return 1;
}

int ana_notify_channel_load(struct ana_notify *n, const char *account_id, const char *id,
                            struct ana_arena *arena, Analytics__V1__Channel **out,
                            struct ana_error *err) {
  struct loaded l = {n, arena, NULL, err, false};
  if (!id || !id[0] || !ana_uuid_is_valid(id)) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "channelId: no channel %.64s", id ? id : "");
    return ANA_ERR_NOT_FOUND;
  }
  int rc = n->o.catalog_ops->get(n->o.catalog, KIND, account_id, id, keep, &l, err);
  if (rc == ANA_ERR_NOT_FOUND) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "channelId: no channel %s", id);
    return rc;
  }
  if (rc < 0)
    return rc;
  if (l.failed)
    return ANA_ERR_INVALID; /* err says why */
  *out = l.ch;
  return 0;
}

static int masked(const Analytics__V1__Channel *ch, struct ana_arena *arena,
                  Analytics__V1__Channel **out, struct ana_error *err) {
  Analytics__V1__Channel *c = copy_of(ch, arena);
  if (!c)
    return nomem(err);
  const struct ana_notifier_ops *ops = ana_notifier_find(ana_notifier_type_of(c));
  if (ops && ops->mask)
    ops->mask(c, arena);
  *out = c;
  return 0;
}

/* Checks the fields every channel has and the type's settings. */
static int validate(struct ana_notify *n, Analytics__V1__Channel *c, struct ana_error *err) {
  if (!c->name || !c->name[0])
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "name: is required");
  if (strlen(c->name) > NAME_MAX_CHARS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "name: is longer than %d bytes",
                         NAME_MAX_CHARS);
  const char *type = ana_notifier_type_of(c);
  if (!type) {
    if (c->type && c->type[0] && !ana_notifier_find(c->type))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "type: \"%.40s\" is not %s", c->type,
                           ana_notifier_types_text);
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "%s: the settings of the channel are required (one of email, slack, "
                         "webhook, telegram)",
                         c->type && c->type[0] ? c->type : "type");
  }
  if (c->type && c->type[0] && strcmp(c->type, type) != 0)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "type: is \"%.40s\" but the settings given are %s's", c->type, type);
  c->type = (char *)type;
  return ana_notifier_find(type)->validate(&n->env, c, err);
}

static int save(struct ana_notify *n, const Analytics__V1__Channel *in, struct ana_arena *arena,
                bool create, struct ana_error *err) {
  /* Sealed on a copy: the caller's c keeps its values for the answer. */
  Analytics__V1__Channel *c = copy_of(in, arena);
  if (!c)
    return nomem(err);
  int rc = seal_secrets(n, c, arena, err);
  if (rc < 0)
    return rc;
  size_t len = protobuf_c_message_get_packed_size(&c->base);
  uint8_t *body = ana_arena_alloc(arena, len ? len : 1);
  if (!body)
    return nomem(err);
  protobuf_c_message_pack(&c->base, body);
  struct ana_catalog_object o = {
      .kind = KIND,
      .account_id = c->account_id,
      .id = c->channel_id,
      .name = c->name,
      .body = body,
      .body_len = len,
      .created_at_ms = ana_timestamp_ms(c->created_at),
      .updated_at_ms = ana_timestamp_ms(c->updated_at),
  };
  rc = n->o.catalog_ops->put(n->o.catalog, &o, create, err);
  if (rc == ANA_ERR_EXISTS)
    ana_error_set(err, ANA_STATUS_ALREADY_EXISTS, "name: a channel named \"%s\" exists already",
                  c->name);
  return rc;
}

/* Every channel of the account, calling fn (non-zero stops) after the
 * catalog's listing returned: fn may write to the catalog. */
struct each {
  struct ana_notify *notify;
  struct ana_arena *arena;
  Analytics__V1__Channel **items;
  size_t n, cap;
  char last[64];
  bool nomem;
  int seen;
};

static int each_one(void *ctx, const struct ana_catalog_object *o) {
  struct each *e = ctx;
  snprintf(e->last, sizeof e->last, "%s", o->id);
  e->seen++;
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 64;
    Analytics__V1__Channel **items = ana_arena_calloc(e->arena, cap, sizeof *items);
    if (!items) {
      e->nomem = true;
      return 1;
    }
    if (e->n)
      memcpy(items, e->items, e->n * sizeof *items);
    e->items = items;
    e->cap = cap;
  }
  if (!(e->items[e->n] = clone_bytes(o->body, o->body_len, e->arena))) {
    e->nomem = true;
    return 1;
  }
  /* A secret that does not open stays sealed: the default flags need none,
   * and saving the channel again keeps it as it was. */
  struct ana_error ignored;
  open_secrets(e->notify, e->items[e->n], e->arena, &ignored);
  e->n++;
  return 0;
}

static int each_channel(struct ana_notify *n, const char *account, struct ana_arena *arena,
                        int (*fn)(void *ctx, Analytics__V1__Channel *c), void *ctx,
                        struct ana_error *err) {
  struct each e = {n, arena, NULL, 0, 0, "", false, 0};
  do {
    e.seen = 0;
    char after[64];
    snprintf(after, sizeof after, "%s", e.last);
    int rc = n->o.catalog_ops->list(n->o.catalog, KIND, account, after, 256, each_one, &e, err);
    if (rc < 0)
      return rc;
    if (e.nomem)
      return nomem(err);
  } while (e.seen == 256);
  for (size_t i = 0; i < e.n; i++)
    if (fn(ctx, e.items[i]))
      break;
  return 0;
}

struct defaults {
  struct ana_notify *n;
  struct ana_arena *arena;
  const char *type, *except;
  bool clear;  /* clear the flag on the others */
  bool found;  /* another default of the type exists */
  char id[64]; /* the default found */
  int rc;
  struct ana_error *err;
};

static int on_default(void *ctx, Analytics__V1__Channel *c) {
  struct defaults *d = ctx;
  if (!c->is_default || strcmp(c->type ? c->type : "", d->type) != 0 ||
      (d->except && strcmp(c->channel_id, d->except) == 0))
    return 0;
  d->found = true;
  snprintf(d->id, sizeof d->id, "%s", c->channel_id);
  if (!d->clear)
    return 1;
  c->is_default = false;
  c->updated_at = ana_timestamp_new(d->arena, ana_clock_wall_ms());
  if (!c->updated_at)
    return d->rc = nomem(d->err), 1;
  if ((d->rc = save(d->n, c, d->arena, false, d->err)) < 0)
    return 1;
  return 0;
}

int ana_notify_resolve_channel_type(struct ana_notify *n, const char *account_id, const char *type,
                                    char *id_out, struct ana_error *err) {
  if (!ana_notifier_find(type))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "channels: \"%.40s\" is not %s",
                         type ? type : "", ana_notifier_types_text);
  struct ana_arena *arena = ana_arena_create(16384, 0);
  if (!arena)
    return nomem(err);
  struct defaults d = {n, arena, type, NULL, false, false, "", 0, err};
  int rc = each_channel(n, account_id, arena, on_default, &d, err);
  if (rc == 0 && d.rc < 0)
    rc = d.rc;
  if (rc == 0 && !d.found) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "channels: the account has no default %s channel",
                  type);
    rc = ANA_ERR_NOT_FOUND;
  }
  if (rc == 0)
    snprintf(id_out, ANA_UUID_STR_LEN + 1, "%.*s", ANA_UUID_STR_LEN, d.id); /* ids are UUIDs */
  ana_arena_destroy(arena);
  return rc;
}

bool ana_notify_channel_exists(struct ana_notify *n, const char *account_id, const char *id) {
  struct ana_arena *arena = ana_arena_create(4096, 0);
  Analytics__V1__Channel *c = NULL;
  struct ana_error err;
  bool ok = arena && ana_notify_channel_load(n, account_id, id, arena, &c, &err) == 0;
  ana_arena_destroy(arena);
  return ok;
}

/* Sets or clears the default flags around c (before it is saved): the
 * first channel of a type becomes its default; a channel made default
 * clears the others'. */
static int settle_defaults(struct ana_notify *n, Analytics__V1__Channel *c, struct ana_arena *arena,
                           struct ana_error *err) {
  struct defaults d = {n, arena, c->type, c->channel_id, c->is_default, false, "", 0, err};
  int rc = each_channel(n, c->account_id, arena, on_default, &d, err);
  if (rc == 0 && d.rc < 0)
    rc = d.rc;
  if (rc == 0 && !d.found)
    c->is_default = true;
  return rc;
}

int ana_notify_channel_create(struct ana_notify *n, const char *account_id,
                              const Analytics__V1__Channel *in, struct ana_arena *arena,
                              Analytics__V1__Channel **out, struct ana_error *err) {
  char id[ANA_UUID_STR_LEN + 1];
  Analytics__V1__Channel *c = in ? copy_of(in, arena) : NULL;
  if (!in)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "channel: is required");
  if (!c)
    return nomem(err);
  int rc = validate(n, c, err);
  if (rc < 0)
    return rc;
  const struct ana_notifier_ops *ops = ana_notifier_find(c->type);
  if (ops->prepare && (rc = ops->prepare(c, arena, err)) < 0)
    return rc;
  if (ana_uuid7_generate(id) < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "no randomness for an id");
  c->channel_id = ana_arena_strdup(arena, id);
  c->account_id = ana_arena_strdup(arena, account_id);
  int64_t now = ana_clock_wall_ms();
  c->created_at = ana_timestamp_new(arena, now);
  c->updated_at = ana_timestamp_new(arena, now);
  if (!c->channel_id || !c->account_id || !c->created_at || !c->updated_at)
    return nomem(err);
  pthread_mutex_lock(&n->channels_mu);
  rc = settle_defaults(n, c, arena, err);
  if (rc == 0)
    rc = save(n, c, arena, true, err);
  pthread_mutex_unlock(&n->channels_mu);
  if (rc < 0)
    return rc;
  /* The answer shows the generated signing secret, this once. */
  Analytics__V1__Channel *a = copy_of(c, arena);
  if (!a)
    return nomem(err);
  if (ops->mask && a->settings_case != ANALYTICS__V1__CHANNEL__SETTINGS_WEBHOOK)
    ops->mask(a, arena);
  *out = a;
  return 0;
}

int ana_notify_channel_update(struct ana_notify *n, const char *account_id, const char *id,
                              const Analytics__V1__Channel *in, struct ana_arena *arena,
                              Analytics__V1__Channel **out, struct ana_error *err) {
  Analytics__V1__Channel *old = NULL, *c = NULL;
  if (!in)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "channel: is required");
  if (in->channel_id && in->channel_id[0] && id && strcmp(in->channel_id, id) != 0)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "channel.channelId: differs from the channel in the path");
  pthread_mutex_lock(&n->channels_mu);
  int rc = ana_notify_channel_load(n, account_id, id, arena, &old, err);
  if (rc < 0)
    goto out;
  if (!(c = copy_of(in, arena))) {
    rc = nomem(err);
    goto out;
  }
  /* Secrets not sent again (or sent back masked) keep their values; only
   * when the type stays the same. */
  const char *type = ana_notifier_type_of(c);
  const struct ana_notifier_ops *ops = ana_notifier_find(type);
  if (ops && ops->keep_secrets && type && strcmp(type, old->type ? old->type : "") == 0)
    ops->keep_secrets(c, old);
  if ((rc = validate(n, c, err)) < 0)
    goto out;
  if (ops->prepare && c->settings_case == ANALYTICS__V1__CHANNEL__SETTINGS_WEBHOOK &&
      (!c->webhook->signing_secret || !c->webhook->signing_secret[0] ||
       ana_notify_is_masked(c->webhook->signing_secret)) &&
      (rc = ops->prepare(c, arena, err)) < 0)
    goto out;
  c->channel_id = old->channel_id;
  c->account_id = old->account_id;
  c->created_at = old->created_at;
  if (!(c->updated_at = ana_timestamp_new(arena, ana_clock_wall_ms()))) {
    rc = nomem(err);
    goto out;
  }
  if ((rc = settle_defaults(n, c, arena, err)) < 0)
    goto out;
  rc = save(n, c, arena, false, err);
out:
  pthread_mutex_unlock(&n->channels_mu);
  if (rc < 0)
    return rc;
  return masked(c, arena, out, err);
}

int ana_notify_channel_get(struct ana_notify *n, const char *account_id, const char *id,
                           struct ana_arena *arena, Analytics__V1__Channel **out,
                           struct ana_error *err) {
  Analytics__V1__Channel *c = NULL;
  int rc = ana_notify_channel_load(n, account_id, id, arena, &c, err);
  return rc < 0 ? rc : masked(c, arena, out, err);
}

struct page {
  struct ana_notify *notify;
  struct ana_arena *arena;
  Analytics__V1__Channel **items;
  size_t n, cap;
  bool nomem;
};

static int collect(void *ctx, const struct ana_catalog_object *o) {
  struct page *p = ctx;
  struct ana_error err;
  Analytics__V1__Channel *c = load_body(p->notify, o->body, o->body_len, p->arena, &err);
  if (!c && (c = clone_bytes(o->body, o->body_len, p->arena))) {
    /* A secret that does not open is listed as a mask (get says why). */
    char **slots[4];
    const char *names[4];
    size_t k = secrets_of(c, slots, names);
    for (size_t i = 0; i < k; i++)
      *slots[i] = (char *)ANA_CRYPTO_MASK;
  }
  if (!c || masked(c, p->arena, &p->items[p->n], &err) < 0) {
    p->nomem = true;
    return 1;
  }
  return ++p->n == p->cap;
}

int ana_notify_channel_list(struct ana_notify *n, const char *account_id, const char *after,
                            int limit, struct ana_arena *arena, Analytics__V1__Channel ***out,
                            size_t *n_out, struct ana_error *err) {
  struct page p = {n, arena,         ana_arena_calloc(arena, (size_t)limit + 1, sizeof *p.items),
                   0, (size_t)limit, false};
  if (!p.items)
    return nomem(err);
  int rc = n->o.catalog_ops->list(n->o.catalog, KIND, account_id, after, limit, collect, &p, err);
  if (rc < 0)
    return rc;
  if (p.nomem)
    return nomem(err);
  *out = p.items;
  *n_out = p.n;
  return 0;
}

int ana_notify_channel_delete(struct ana_notify *n, const char *account_id, const char *id,
                              struct ana_error *err) {
  if (!id || !ana_uuid_is_valid(id)) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "channelId: no channel %.64s", id ? id : "");
    return ANA_ERR_NOT_FOUND;
  }
  pthread_mutex_lock(&n->channels_mu);
  int rc = n->o.catalog_ops->remove(n->o.catalog, KIND, account_id, id, err);
  pthread_mutex_unlock(&n->channels_mu);
  if (rc == ANA_ERR_NOT_FOUND)
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "channelId: no channel %s", id);
  return rc;
}
