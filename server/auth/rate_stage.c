/* The rate_limit admission stage: which budget a principal draws on (per account, or per API
 * key with an override), which limit applies (key, account, role, default) and the charges. */
#include "auth_internal.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define HEALTH_SERVICE "grpc.health.v1.Health"

struct named_limit {
  char *name;
  struct ana_rate_limit limit;
};

struct limit_list {
  struct named_limit *items;
  size_t n;
};

/* Set once at start-up (before transports serve), read by every call. */
static struct {
  bool enabled;
  struct ana_rate_limit def;
  bool def_auto; /* RATE_LIMIT_DEFAULT=auto: def applies outside protected mode only */
  struct limit_list roles, accounts, keys;
  struct ana_rate_limiter limiter;
} rl;

static bool add_named(void *ctx, const char *name, size_t len, const struct ana_rate_limit *lim) {
  struct limit_list *l = ctx;
  struct named_limit *grown = ana_realloc(l->items, (l->n + 1) * sizeof *grown);
  if (!grown)
    return false;
  l->items = grown;
  char *copy = ana_malloc(len + 1);
  if (!copy)
    return false;
  memcpy(copy, name, len);
  copy[len] = '\0';
  l->items[l->n].name = copy;
  l->items[l->n].limit = *lim;
  l->n++;
  return true;
}

static void list_free(struct limit_list *l) {
  for (size_t i = 0; i < l->n; i++)
    ana_free(l->items[i].name);
  ana_free(l->items);
  l->items = NULL;
  l->n = 0;
}

static const struct ana_rate_limit *list_find(const struct limit_list *l, const char *name) {
  for (size_t i = 0; name && i < l->n; i++)
    if (strcmp(l->items[i].name, name) == 0)
      return &l->items[i].limit;
  return NULL;
}

void auth_rate_fini(void) {
  ana_rate_limiter_destroy(&rl.limiter);
  list_free(&rl.roles);
  list_free(&rl.accounts);
  list_free(&rl.keys);
  memset(&rl, 0, sizeof rl);
}

static int parse_list(const char *var, const char *text, struct limit_list *out,
                      struct ana_error *err) {
  char why[192];
  if (text && !ana_rate_limit_parse_list(text, add_named, out, why, sizeof why))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s", var, why);
  return 0;
}

int ana_auth_rate_configure(const struct ana_auth_settings *s, struct ana_error *err) {
  auth_rate_fini();
  char why[192];
  int rc = 0;
  const char *def = s->rate_limit_default ? s->rate_limit_default : "auto";
  rl.def_auto = strcmp(def, "auto") == 0;
  if (rl.def_auto)
    def = ANA_AUTH_RATE_AUTO;
  if (!ana_rate_limit_parse(def, strlen(def), &rl.def, why, sizeof why)) {
    rc = ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "RATE_LIMIT_DEFAULT: %s", why);
    goto out;
  }
  if ((rc = parse_list("RATE_LIMIT_ROLES", s->rate_limit_roles, &rl.roles, err)) < 0 ||
      (rc = parse_list("RATE_LIMIT_ACCOUNTS", s->rate_limit_accounts, &rl.accounts, err)) < 0 ||
      (rc = parse_list("RATE_LIMIT_KEYS", s->rate_limit_keys, &rl.keys, err)) < 0)
    goto out;
  for (size_t i = 0; i < rl.roles.n; i++)
    if (!ana_auth_role_known(rl.roles.items[i].name)) {
      rc = ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "RATE_LIMIT_ROLES: unknown role %s (one of viewer, reader, analyst, "
                         "editor, admin, ingest)",
                         rl.roles.items[i].name);
      goto out;
    }
  rl.enabled = rl.def.emission_ns || rl.roles.n || rl.accounts.n || rl.keys.n;
  if (!rl.enabled)
    goto out;
  size_t max = s->rate_limit_max_entries > 0 ? (size_t)s->rate_limit_max_entries : 100000;
  if (ana_rate_limiter_local_create(max, 0, &rl.limiter) < 0) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    rc = ANA_ERR_NOMEM;
    goto out;
  }
  char text[ANA_RATE_LIMIT_MAX_TEXT];
  ana_rate_limit_format(&rl.def, text, sizeof text);
  ANA_INFO("auth", "rate limits: default %s%s, %zu role, %zu account and %zu key overrides", text,
           rl.def_auto ? " (auto: off in protected mode)" : "", rl.roles.n, rl.accounts.n,
           rl.keys.n);
out:
  if (rc < 0)
    auth_rate_fini();
  return rc;
}

bool ana_auth_rate_enabled(void) {
  return rl.enabled;
}

int64_t ana_auth_rate_retry_after_s(const struct ana_rate_decision *d) {
  int64_t s = (d->retry_after_ns + 999999999LL) / 1000000000LL;
  return s < 1 ? 1 : s;
}

/* The limit of p (NULL: none) and whether it is the key's own. Precedence:
 * the API key's (its rateLimit, then RATE_LIMIT_KEYS), the account's, the most generous of its
 * roles', the default. */
static const struct ana_rate_limit *limit_of(const struct ana_principal *p, bool *per_key) {
  *per_key = false;
  if (p->credential == ANA_CREDENTIAL_API_KEY && p->key_rate_limited) {
    *per_key = true;
    return &p->key_rate_limit;
  }
  if (p->credential == ANA_CREDENTIAL_API_KEY && p->subject &&
      strncmp(p->subject, "key:", 4) == 0) {
    const struct ana_rate_limit *k = list_find(&rl.keys, p->subject + 4);
    if (k) {
      *per_key = true;
      return k;
    }
  }
  const struct ana_rate_limit *a = list_find(&rl.accounts, p->account_id);
  if (a)
    return a;
  const struct ana_rate_limit *best = NULL;
  for (size_t i = 0; i < p->n_roles; i++) {
    const struct ana_rate_limit *r = list_find(&rl.roles, p->roles[i]);
    /* off (emission 0) is the most generous; then the shortest interval. */
    if (r &&
        (!best || r->emission_ns == 0 || (best->emission_ns && r->emission_ns < best->emission_ns)))
      best = r;
  }
  return best ? best : &rl.def;
}

static int refuse(const struct ana_principal *p, int64_t cost, struct ana_error *status) {
  if (p->rate.retry_after_ns < 0)
    return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED,
                         "rate limit: this request costs %lld, more than the burst of %lld; "
                         "send smaller batches",
                         (long long)cost, (long long)p->rate.limit),
           ANA_ERR_FULL;
  return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED,
                       "rate limit exceeded: retry after %lld s",
                       (long long)ana_auth_rate_retry_after_s(&p->rate)),
         ANA_ERR_FULL;
}

int ana_auth_rate_charge(struct ana_principal *p, int64_t cost, struct ana_error *status) {
  if (!p->rate_key || cost <= 0)
    return 0;
  struct ana_rate_decision d;
  if (ana_rate_limiter_charge(&rl.limiter, p->rate_key, &p->rate_limit, cost, ana_clock_mono_ns(),
                              &d) < 0)
    return 0; /* the store failed: let the call through rather than refuse everyone */
  p->rate = d;
  p->rate_charged = true;
  return d.allowed ? 0 : refuse(p, cost, status);
}

int auth_stage_rate_limit(const struct ana_admission_input *in, struct ana_arena *arena,
                          struct ana_principal *p, struct ana_error *status) {
  if (!rl.enabled || !in->method || strcmp(in->method->service, HEALTH_SERVICE) == 0)
    return 0;
  bool per_key;
  const struct ana_rate_limit *lim = limit_of(p, &per_key);
  if (lim->emission_ns == 0 || (lim == &rl.def && rl.def_auto && ana_auth_protected_mode()))
    return 0;
  const char *who = per_key ? p->subject : p->account_id;
  if (!who)
    return 0;
  char *key = ana_arena_alloc(arena, strlen(who) + 3);
  if (!key)
    return ana_error_set(status, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  /* Accounts and keys in separate name spaces: "a:<account>", "k:key:<id>". */
  snprintf(key, strlen(who) + 3, "%c:%s", per_key ? 'k' : 'a', who);
  p->rate_key = key;
  p->rate_limit = *lim;
  return ana_auth_rate_charge(p, in->method->rate_cost ? in->method->rate_cost : 1, status);
}
