/* The offline commands' configuration and local database (cli_store.h). */
#include "cli_store.h"

#include "ana_audit.h"
#include "ana_clock.h"
#include "ana_store.h"

#include <stdio.h>
#include <stdlib.h>

int ana_cli_store_open(struct ana_cli_store *s, struct ana_error *err) {
  s->db = NULL;
  setenv("LOG_LEVEL", "warn", 0);
  int rc = ana_config_load_at_startup(&s->cfg);
  if (rc < 0)
    return rc;
  ana_error_clear(err);
  s->db = ana_local_db_open(s->cfg.store.data_dir, err);
  return 0;
}

void ana_cli_store_report(const struct ana_cli_store *s, const char *prog,
                          const struct ana_error *err) {
  fprintf(stderr, "%s: cannot open the store in %s: %s\n", prog, s->cfg.store.data_dir,
          err->message);
}

void ana_cli_store_close(struct ana_cli_store *s) {
  ana_local_db_close(s->db);
  s->db = NULL;
  ana_config_fini(&s->cfg);
}

void ana_cli_store_audit(struct ana_local_db *db, const char *prog, const char *method,
                         const char *account, const char *target_id) {
  const struct ana_audit_store_ops *ops = ana_store_audit_backend("sqlite");
  struct ana_error err;
  ana_error_clear(&err);
  void *store = ops->open(db, &err);
  struct ana_audit_record r = {
      .at_ms = ana_clock_wall_ms(),
      .kind = "call",
      .account_id = account,
      .subject = "cli",
      .method = method,
      .target_id = target_id,
      .peer = "local",
  };
  if (!store || ops->append(store, &r, 1, &err) < 0)
    fprintf(stderr, "%s: the change is not in the audit log: %s\n", prog, err.message);
  if (store)
    ops->close(store);
}
