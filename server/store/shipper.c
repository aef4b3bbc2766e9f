/* The shipper's step: drains the local database's spool into an event store
 * that is not the local database, in commit-sequence order (the contract in
 * ana_store.h). The embedded event store has nothing to ship: its
 * shipped_seq is the spool's last sequence. */
#include "ana_local_db.h"
#include "ana_store.h"

struct ship_ctx {
  const struct ana_event_store_ops *ops;
  void *store;
};

static int ship(void *ctx, const struct ana_spooled_event *events, size_t n,
                struct ana_error *err) {
  struct ship_ctx *c = ctx;
  return c->ops->ship(c->store, events, n, err);
}

int ana_store_ship_batch(struct ana_local_db *db, const struct ana_event_store_ops *ops,
                         void *store, int max, struct ana_error *err) {
  uint64_t shipped = 0;
  int rc = ops->shipped_seq(store, &shipped, err);
  if (rc < 0)
    return rc;
  struct ship_ctx c = {ops, store};
  return ana_local_spool_take(db, shipped, max, ship, &c, err);
}
