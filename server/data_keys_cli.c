/* `analyticsd data-keys rotate|list`: the accounts' data keys, on the store
 * under DATA_DIR directly (WAL lets it write beside a running server, which
 * seals with the new key within 10 s). Needs the master key the server
 * uses (ENCRYPTION_KEY_FILE, or DATA_DIR/master.key). */
#include "data_keys_cli.h"

#include "cli_store.h"

#include "ana_audit.h"
#include "ana_crypto.h"
#include "ana_store.h"

#include "ana_clock.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *out) {
  fprintf(out, "usage: analyticsd data-keys rotate (--account ACCOUNT | --all)\n"
               "       analyticsd data-keys list [--account ACCOUNT]\n"
               "       analyticsd data-keys rotate-master --new-key-file FILE\n\n"
               "Field encryption's data keys (one set per account, wrapped by the master key\n"
               "in ENCRYPTION_KEY_FILE). `rotate` makes a new key current: new values are\n"
               "sealed with it (a running server picks it up within 10 s), values sealed\n"
               "before stay readable with their own key. `list` shows the keys' ids.\n"
               "`rotate-master` rewraps every data key by the master key in FILE in one\n"
               "transaction (stop the server first); then start it with\n"
               "ENCRYPTION_KEY_FILE=FILE: the old key is no longer needed.\n");
}

struct accounts {
  char **ids;
  size_t n, cap;
  bool nomem;
};

static int note_account(void *ctx, const struct ana_data_key_record *r) {
  struct accounts *a = ctx;
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    char **ids = realloc(a->ids, cap * sizeof *ids);
    if (!ids) {
      a->nomem = true;
      return 1;
    }
    a->ids = ids;
    a->cap = cap;
  }
  if (!(a->ids[a->n] = strdup(r->account_id))) {
    a->nomem = true;
    return 1;
  }
  a->n++;
  return 0;
}

static int print_key(void *ctx, const struct ana_data_key_record *r) {
  (void)ctx;
  char when[32];
  time_t s = (time_t)(r->created_at_ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf("%s  key %u  created %s\n", r->account_id, r->key_id, when);
  return 0;
}

/* Rewraps the store's data keys from master (the current key) to the key
 * in path; says what it did. Returns 0 or a negative error. */
static int rotate_master(const uint8_t *master, size_t master_len, const char *path,
                         const struct ana_data_key_store_ops *ops, void *store,
                         struct ana_error *err) {
  uint8_t next[ANA_CRYPTO_MASTER_MAX];
  struct ana_crypto_rewrap_result res;
  int n = ana_audit_master_key(path, "", next, sizeof next, err);
  int rc = n;
  if (n >= 0 && (size_t)n == master_len && CRYPTO_memcmp(next, master, master_len) == 0)
    rc = ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                       "--new-key-file: %s holds the current master key", path);
  else if (n >= 0)
    rc = ana_crypto_rewrap_master(master, master_len, next, (size_t)n, ops, store, &res, err);
  OPENSSL_cleanse(next, sizeof next);
  if (rc < 0)
    return rc;
  printf("%zu data keys rewrapped by the new master key (%zu were already)%s\n"
         "start the server with ENCRYPTION_KEY_FILE=%s; the previous key is no longer needed\n",
         res.rewrapped, res.already, res.root_written ? "; key root stored" : "", path);
  return 0;
}

int ana_data_keys_cli_main(int argc, char **argv) {
  const char *verb = argc > 1 ? argv[1] : "", *account = NULL, *new_key = NULL;
  bool all = false;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--account") == 0 && i + 1 < argc && !account) {
      account = argv[++i];
    } else if (strcmp(argv[i], "--new-key-file") == 0 && i + 1 < argc && !new_key) {
      new_key = argv[++i];
    } else if (strcmp(argv[i], "--all") == 0) {
      all = true;
    } else {
      fprintf(stderr, "analyticsd data-keys: unexpected argument %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  bool rotate = strcmp(verb, "rotate") == 0, list = strcmp(verb, "list") == 0;
  bool master_verb = strcmp(verb, "rotate-master") == 0;
  if ((!rotate && !list && !master_verb) || (rotate && !all == !account) || (list && all) ||
      (account && !account[0]) || (master_verb && (!new_key || !new_key[0] || all || account)) ||
      (!master_verb && new_key)) {
    usage(stderr);
    return 2;
  }
  struct ana_cli_store cs;
  struct ana_error err;
  if (ana_cli_store_open(&cs, &err) < 0)
    return 2;
  const struct ana_config *cfg = &cs.cfg;
  int rc = 1;
  struct accounts acc = {0};
  uint8_t master[4096];
  const struct ana_data_key_store_ops *ops = ana_store_data_key_backend("sqlite");
  void *store = cs.db ? ops->open(cs.db, &err) : NULL;
  struct ana_crypto *crypto = NULL;
  if (!store) {
    ana_cli_store_report(&cs, "analyticsd data-keys", &err);
    goto out;
  }
  if (list) {
    if (account)
      rc = ops->list(store, account, print_key, NULL, &err);
    else if ((rc = ops->accounts(store, note_account, &acc, &err)) == 0)
      for (size_t i = 0; i < acc.n && rc == 0; i++)
        rc = ops->list(store, acc.ids[i], print_key, NULL, &err);
    if (rc < 0 || acc.nomem)
      fprintf(stderr, "analyticsd data-keys: %s\n", acc.nomem ? "out of memory" : err.message);
    rc = rc < 0 || acc.nomem;
    goto out;
  }
  int n = ana_audit_master_key(cfg->auth.encryption_key_file, cfg->store.data_dir, master,
                               sizeof master, &err);
  if (master_verb) {
    rc = n < 0 ? n : rotate_master(master, (size_t)n, new_key, ops, store, &err);
    OPENSSL_cleanse(master, sizeof master);
    if (rc < 0)
      fprintf(stderr, "analyticsd data-keys rotate-master: %s\n", err.message);
    else
      /* DEFAULT_ACCOUNT_ID's log, as changes that belong to no account */
      ana_cli_store_audit(cs.db, "analyticsd data-keys", "analyticsd data-keys rotate-master",
                          cfg->auth.default_account_id, "master-key");
    rc = rc < 0;
    goto out;
  }
  if (n >= 0) {
    struct ana_crypto_options o = {master, (size_t)n, ops, store, 0};
    crypto = ana_crypto_create(&o, &err);
  }
  OPENSSL_cleanse(master, sizeof master);
  if (!crypto) {
    fprintf(stderr, "analyticsd data-keys: %s\n", err.message);
    goto out;
  }
  if (all && (ops->accounts(store, note_account, &acc, &err) < 0 || acc.nomem)) {
    fprintf(stderr, "analyticsd data-keys: %s\n", acc.nomem ? "out of memory" : err.message);
    goto out;
  }
  if (account && note_account(&acc, &(struct ana_data_key_record){.account_id = account})) {
    fprintf(stderr, "analyticsd data-keys: out of memory\n");
    goto out;
  }
  rc = 0;
  for (size_t i = 0; i < acc.n; i++) {
    uint32_t id = 0;
    if (ana_crypto_rotate(crypto, acc.ids[i], &id, &err) < 0) {
      fprintf(stderr, "analyticsd data-keys: %s: %s\n", acc.ids[i], err.message);
      rc = 1;
      continue;
    }
    printf("%s  key %u is current\n", acc.ids[i], id);
  }
out:
  for (size_t i = 0; i < acc.n; i++)
    free(acc.ids[i]);
  free(acc.ids);
  ana_crypto_destroy(crypto);
  if (store)
    ops->close(store);
  ana_cli_store_close(&cs);
  return rc;
}
