/* What the offline commands (`analyticsd keys`, `analyticsd data-keys`)
 * share: the configuration and the local database under DATA_DIR, opened
 * beside a running server (WAL lets both write). */
#ifndef ANA_CLI_STORE_H
#define ANA_CLI_STORE_H

#include "ana_config.h"
#include "ana_error.h"
#include "ana_local_db.h"

struct ana_cli_store {
  struct ana_config cfg;
  struct ana_local_db *db; /* NULL when it could not be opened */
};

/* Loads the configuration from the environment (LOG_LEVEL defaults to warn
 * here: the store's start-up lines are noise unless asked for) and opens
 * the local database under DATA_DIR. Returns 0 when the configuration
 * loaded, s->db then open or NULL with err (caller-owned) filled; call
 * ana_cli_store_close afterwards either way. Returns a negative error when
 * the configuration is bad (already logged; exit with status 2, nothing to
 * close). Blocks on the database. */
int ana_cli_store_open(struct ana_cli_store *s, struct ana_error *err);

/* Says on stderr "<prog>: cannot open the store in <DATA_DIR>: <why>"
 * (err borrowed), for a database or a role on it that would not open. */
void ana_cli_store_report(const struct ana_cli_store *s, const char *prog,
                          const struct ana_error *err);

/* Appends a change an offline command made to the audit log, like one made
 * over the API (subject "cli", peer "local", chained to the head as
 * stored). A failure is said on stderr as "<prog>: the change is not in the
 * audit log: <why>"; the change itself stands. */
void ana_cli_store_audit(struct ana_local_db *db, const char *prog, const char *method,
                         const char *account, const char *target_id);

/* Closes the database and frees the configuration. */
void ana_cli_store_close(struct ana_cli_store *s);

#endif
