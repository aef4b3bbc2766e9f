/* analyticsd's modules: the context they share, the table that starts them
 * in order and stops them in reverse, and the health loop main runs while
 * serving. Only server/main.c, server/startup.c and server/modules.c see it. */
#ifndef ANA_SERVER_H
#define ANA_SERVER_H

#include "ana_alerts.h"
#include "ana_audit.h"
#include "ana_auth.h"
#include "ana_config.h"
#include "ana_crypto.h"
#include "ana_crypto_fields.h"
#include "ana_error.h"
#include "ana_event_names.h"
#include "ana_grpc_server.h"
#include "ana_ingest.h"
#include "ana_metric_streams.h"
#include "ana_notify.h"
#include "ana_post_commit.h"
#include "ana_realtime.h"
#include "ana_reencrypt.h"
#include "ana_restbridge.h"
#include "ana_rollup.h"
#include "ana_store.h"
#include "ana_workers.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Everything the modules make, filled by their start and read by the
 * modules after them. main keeps it static: the bridge's thread reads the
 * health part until it stops (after a forced stop, until the process ends). */
struct ana_server {
  const struct ana_config *cfg; /* borrowed: main's */
  /* store */
  struct ana_local_db *db;
  struct ana_store_selection backends; /* chosen from the configuration */
  const struct ana_event_store_ops *store_ops;
  void *store;
  const struct ana_search_index_ops *search_ops;
  void *search_index;
  struct ana_store_roles roles; /* the event store and search index together */
  const struct ana_catalog_ops *catalog_ops;
  void *catalog;
  const struct ana_api_key_store_ops *key_store_ops;
  void *key_store;
  struct ana_api_keys *api_keys;
  const struct ana_audit_store_ops *audit_store_ops;
  void *audit_store;
  struct ana_audit *audit;
  /* envelope encryption: the master key (read by the crypto module, used by
   * audit's start, cleansed after), data keys, sealed fields and secrets */
  uint8_t master_key[4096];
  int master_key_len;
  const struct ana_data_key_store_ops *data_key_store_ops;
  void *data_key_store;
  struct ana_crypto *crypto;
  struct ana_crypto_fields *encrypted; /* ENCRYPTED_FIELDS; NULL: none */
  struct ana_notify *notify;           /* channels, outbox and its senders */
  /* the commit path and what hears it */
  struct ana_post_commit *post_commit;
  struct ana_committer *committer;
  struct ana_rollups *rollups;
  struct ana_workers *workers;
  struct ana_realtime *realtime;
  struct ana_metric_streams *metric_streams;
  struct ana_event_names *names;
  struct ana_alerts *alerts;
  struct ana_reencrypt *reencrypt; /* events stored before ENCRYPTED_FIELDS covered a field */
  /* transports */
  struct ana_grpc_server *grpc;
  struct ana_restbridge *rest;
  /* A new DATA_DIR on a full disk: store_start found no room to create the
   * database and left db NULL. The driver then skips the modules up to the
   * transports and starts them once there is room (startup.c); main's
   * thread only. */
  bool store_waiting;
  char store_wait_reason[640]; /* why, as held calls and /health say it; set before serving */
  atomic_bool store_open;      /* the storage modules have started: any thread may read them */
  /* health, as GET /health and gRPC health report it */
  int schema_version; /* read once at start: the writer connection is the committer's */
  atomic_bool serving;
  atomic_bool ready; /* readiness as last evaluated by the main thread */
  /* shutdown */
  bool draining;      /* a signal came after serving began: transports drain */
  const char *forced; /* why a draining module could not stop (static text), or NULL */
};

/* One row of the module table. */
struct ana_module {
  const char *name; /* in logs: "cannot start module <name>: ..." */
  /* Makes the module's part of s from cfg, in table order (every module
   * above it has started). Returns 0, or a negative error with err saying
   * why. May block (opens files, starts threads). */
  int (*start)(struct ana_server *s, const struct ana_config *cfg, struct ana_error *err);
  /* Undoes start, in reverse table order; also called for the module whose
   * start failed, so it copes with a half-started module (NULLs). With
   * s->draining it must be done by deadline_ms (monotonic); it returns 0,
   * or a negative error after setting s->forced when something of it is
   * still running and tearing the rest down could crash. NULL: nothing. */
  int (*stop)(struct ana_server *s, int64_t deadline_ms);
  /* A transport: it stops accepting and drains in-flight calls. These stop
   * first; if one could not, the process exits 1 before the first module
   * that is not one (see ana_server_stop). */
  bool drains;
};

/* The table, in start order (server/modules.c). */
extern const struct ana_module ana_server_modules[];
extern const size_t ana_server_n_modules;

/* Starts every module in order. On a failure logs the module's name and
 * why, stops the ones started (and the failed one) in reverse and returns
 * the negative error. */
int ana_server_start(struct ana_server *s, const struct ana_config *cfg);

/* Stops every started module in reverse order within deadline_ms
 * (monotonic; the grace period counted from the signal). Returns 0, or
 * ANA_ERR_TIMEOUT after logging when a transport could not stop: then the
 * modules below the transports are left as they are (forced stop: the
 * caller exits 1 at once). */
int ana_server_stop(struct ana_server *s, int64_t deadline_ms);

/* SIGHUP: both transports read their TLS files again; a bad file is logged
 * (naming the variable and path) and that port keeps its certificate.
 * main's thread; blocks on the file reads only. */
void ana_server_reload_tls(struct ana_server *s);

/* Re-evaluates readiness and liveness, publishes both to gRPC health and
 * logs each change once. main's thread, every HEALTH_PERIOD_MS. */
void ana_server_update_health(struct ana_server *s);

#endif
