/* `analyticsd keys create|list|revoke`: opens the store under DATA_DIR
 * directly (WAL lets it write beside a running server), so the first admin
 * key can be made before anything can authenticate. */
#include "keys_cli.h"

#include "cli_store.h"

#include "ana_api_keys.h"
#include "ana_audit.h"
#include "ana_rate_limit.h"
#include "ana_local_db.h"
#include "ana_store.h"
#include "ana_clock.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *out) {
  fprintf(out,
          "usage: analyticsd keys create --account ACCOUNT --role ROLE [--name NAME]\n"
          "                              [--rate-limit LIMIT]\n"
          "       analyticsd keys list --account ACCOUNT\n"
          "       analyticsd keys revoke KEY_ID\n\n"
          "Manages API keys in the store under DATA_DIR, with or without a running\n"
          "server. `create` prints the key once: it is stored only as a SHA-256.\n"
          "Roles: %s.\n"
          "LIMIT: the key's own rate limit, as in \"100/s burst 200\" or \"off\".\n",
          ana_api_key_roles_text);
}

/* An ISO-8601 UTC time, or "-" for 0. */
static const char *when(int64_t ms, char *buf, size_t size) {
  if (!ms)
    return "-";
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/* Copies a key's account (ctx: 129 bytes). */
static int note_account(void *ctx, const struct ana_api_key_record *r) {
  snprintf(ctx, 129, "%s", r->account_id);
  return 1;
}

static int print_key(void *ctx, const struct ana_api_key_record *r) {
  (void)ctx;
  char c[32], u[32], v[32];
  printf("%s  %-8s  %-24s  created %s by %s  last used %s  revoked %s\n", r->key_id, r->role,
         r->name[0] ? r->name : "-", when(r->created_at_ms, c, sizeof c),
         r->created_by[0] ? r->created_by : "-", when(r->last_used_at_ms, u, sizeof u),
         when(r->revoked_at_ms, v, sizeof v));
  return 0;
}

struct last_id {
  char id[ANA_API_KEY_ID_CHARS + 1];
  int n;
};

static int print_and_note(void *ctx, const struct ana_api_key_record *r) {
  struct last_id *l = ctx;
  memcpy(l->id, r->key_id, sizeof l->id);
  l->n++;
  return print_key(NULL, r);
}

int ana_keys_cli_main(int argc, char **argv) {
  const char *verb = argc > 1 ? argv[1] : "";
  const char *account = NULL, *role = NULL, *name = NULL, *key_id = NULL, *rate_limit = NULL;
  for (int i = 2; i < argc; i++) {
    const char **slot = strcmp(argv[i], "--account") == 0      ? &account
                        : strcmp(argv[i], "--role") == 0       ? &role
                        : strcmp(argv[i], "--name") == 0       ? &name
                        : strcmp(argv[i], "--rate-limit") == 0 ? &rate_limit
                                                               : NULL;
    if (slot && i + 1 < argc) {
      *slot = argv[++i];
    } else if (!slot && argv[i][0] != '-' && !key_id) {
      key_id = argv[i];
    } else {
      fprintf(stderr, "analyticsd keys: unexpected argument %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  bool create = strcmp(verb, "create") == 0, list = strcmp(verb, "list") == 0,
       revoke = strcmp(verb, "revoke") == 0;
  if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if ((!create && !list && !revoke) || ((create || list) && (!account || !account[0] || key_id)) ||
      (create && !role) || (revoke && (!key_id || account || role || name || rate_limit)) ||
      (list && (role || name || rate_limit))) {
    usage(stderr);
    return 2;
  }
  if (create && !ana_api_key_role(role)) {
    fprintf(stderr, "analyticsd keys: --role: must be one of %s\n", ana_api_key_roles_text);
    return 2;
  }
  struct ana_rate_limit parsed;
  char why[128];
  if (rate_limit &&
      !ana_rate_limit_parse(rate_limit, strlen(rate_limit), &parsed, why, sizeof why)) {
    fprintf(stderr, "analyticsd keys: --rate-limit: %s\n", why);
    return 2;
  }

  struct ana_cli_store cs;
  struct ana_error err;
  if (ana_cli_store_open(&cs, &err) < 0)
    return 2;
  int rc = 1;
  const struct ana_api_key_store_ops *ops = ana_store_api_key_backend("sqlite");
  void *store = cs.db ? ops->open(cs.db, &err) : NULL;
  struct ana_api_keys *keys = NULL;
  char created_id[ANA_API_KEY_ID_CHARS + 1] = "", key_account[129] = "";
  if (store) {
    struct ana_api_keys_options o;
    ana_api_keys_options_init(&o);
    o.ops = ops;
    o.store = store;
    o.cache_slots = 0;
    o.touch_thread = false;
    keys = ana_api_keys_create(&o, &err);
  }
  if (!keys) {
    ana_cli_store_report(&cs, "analyticsd keys", &err);
    goto out;
  }
  if (create) {
    char key[ANA_API_KEY_CHARS + 1];
    struct ana_api_key_record rec;
    if (ana_api_keys_issue(keys, account, role, name, rate_limit, "cli", key, &rec, &err) < 0) {
      fprintf(stderr, "analyticsd keys: %s\n", err.message);
      goto out;
    }
    printf("%s\n", key);
    fflush(stdout);
    memcpy(created_id, rec.key_id, sizeof created_id);
    OPENSSL_cleanse(key, sizeof key);
    fprintf(stderr,
            "API key %s for account %s, role %s. It is shown only now: store it, the server "
            "keeps only its SHA-256.\n",
            rec.key_id, account, rec.role);
    rc = 0;
  } else if (list) {
    struct last_id l = {"", 0};
    do {
      char after[ANA_API_KEY_ID_CHARS + 1];
      memcpy(after, l.id, sizeof after);
      l.n = 0;
      if (ana_api_keys_list(keys, account, after, 500, print_and_note, &l, &err) < 0) {
        fprintf(stderr, "analyticsd keys: %s\n", err.message);
        goto out;
      }
    } while (l.n == 500);
    rc = 0;
  } else {
    ana_api_keys_get(keys, NULL, key_id, note_account, key_account, &err);
    if (ana_api_keys_revoke(keys, NULL, key_id, &err) < 0) {
      fprintf(stderr, "analyticsd keys: %s\n", err.message);
      goto out;
    }
    fprintf(stderr, "API key %s revoked.\n", key_id);
    rc = 0;
  }
  if (rc == 0 && !list)
    ana_cli_store_audit(cs.db, "analyticsd keys",
                        create ? "analyticsd keys create" : "analyticsd keys revoke",
                        create ? account : key_account, create ? created_id : key_id);
out:
  ana_api_keys_destroy(keys);
  if (store)
    ops->close(store);
  ana_cli_store_close(&cs);
  return rc;
}
