/* Re-encryption of stored events: when ENCRYPTED_FIELDS covers fields that
 * events were stored without, a background job rewrites those events with
 * the fields sealed (and blind-indexed), indexes their free text again,
 * rebuilds the rollups that group or filter by the fields and leaves no
 * old page in the local database's files; resumable from its state in the
 * local database. */
#ifndef ANA_REENCRYPT_H
#define ANA_REENCRYPT_H

#include "ana_crypto_fields.h"
#include "ana_store.h"

#include <stdbool.h>
#include <stdint.h>

struct ana_local_db;
struct ana_reencrypt;

struct ana_reencrypt_options {
  struct ana_local_db *db;
  const struct ana_event_store_ops *events; /* its rewrite op is required */
  void *event_store;
  const struct ana_search_index_ops *search; /* NULL: no free-text index */
  void *search_index;
  struct ana_crypto *crypto;
  const struct ana_crypto_fields *fields; /* ENCRYPTED_FIELDS; NULL: none */
  int batch_events;                       /* events read (and at most rewritten) per transaction */
  int pause_ms; /* between batches, so that commits and searches get the store */
  /* The rollups that group or filter by one of the fields: rebuilt (a new
   * version each, backfilled from the rewritten events; returns how many or
   * a negative error), then waited for (true once every version is complete
   * and the old cells are deleted). NULL: none. */
  int (*rebuild_rollups)(void *ctx, const struct ana_crypto_fields *f, struct ana_error *err);
  bool (*rollups_settled)(void *ctx, int timeout_ms);
  void *rollups_ctx;
};

/* Compares the configured fields with the ones the stored events are known
 * to be sealed under (the local database's state) and, when events may hold
 * one of them in clear, starts (or resumes) the job on a thread of its own.
 * Returns the handle (also when there is nothing to do), or NULL with err
 * filled. Blocks (a few short reads and writes). */
struct ana_reencrypt *ana_reencrypt_start(const struct ana_reencrypt_options *o,
                                          struct ana_error *err);

/* Stops the job after its current batch (it resumes at the next start);
 * NULL does nothing. */
void ana_reencrypt_stop(struct ana_reencrypt *j);

struct ana_reencrypt_status {
  const char *state; /* "none" (no field configured), "running", "finishing", "done" */
  uint64_t upto_seq, next_seq, rewritten;
};
void ana_reencrypt_status(struct ana_reencrypt *j, struct ana_reencrypt_status *st);

#endif
