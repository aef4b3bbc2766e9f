/* The offline commands' configuration and local database (cli_store.h). */
#include "cli_store.h"

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
