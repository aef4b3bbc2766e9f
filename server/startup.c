/* Drives the module table: start in order, stop in reverse with the
 * forced-stop rule, and the readiness/liveness evaluation main runs. */
#include "ana_local_db.h"
#include "ana_server.h"

#include "ana_builtin_services.h"
#include "ana_call.h"
#include "ana_heartbeat.h"
#include "ana_log.h"

#include <stdio.h>
#include <string.h>

/* Readiness fails while the REST bridge's loop has not turned for this long;
 * liveness while it or any registered thread has made no progress for
 * LIVENESS_STALL_MS. */
#define READINESS_BRIDGE_STALL_MS 5000
#define LIVENESS_STALL_MS 30000

/* How often a waiting store tries to open while DATA_DIR has room. */
#define STORE_RETRY_MS 1000

/* How many rows have started (the failed one included), for stop. */
static size_t n_started;

/* A new DATA_DIR on a full disk (SQLite cannot write the new database's
 * header or schema): rather than refusing to start, the server serves
 * health, liveness and /metrics, and the storage modules (the rows from
 * "store" up to the first transport) start once DATA_DIR has room again,
 * from main's health loop, as they would have at start-up. Meanwhile
 * every data call answers UNAVAILABLE (ana_rpc_hold_unbound), reads
 * included: an empty read-only stand-in store would need every module to
 * swap its connections when the real one opens, and a pod without its
 * database is out of the Service anyway (readiness NOT_SERVING). The
 * rows in [wait_from, wait_to) are the ones waiting. */
static size_t wait_from, wait_to;
static int64_t next_try_ms;

static void stop_range(struct ana_server *s, size_t from, size_t n, int64_t deadline_ms) {
  for (size_t i = n; i-- > from;) {
    const struct ana_module *m = &ana_server_modules[i];
    if (m->stop)
      m->stop(s, deadline_ms);
  }
}

/* The store's start asked to wait (s->store_waiting): the rows after it up
 * to the first transport are skipped, their data calls held. */
static void begin_waiting(struct ana_server *s, size_t i, const struct ana_error *err) {
  wait_from = i;
  for (wait_to = i + 1; wait_to < ana_server_n_modules; wait_to++)
    if (ana_server_modules[wait_to].drains)
      break;
  snprintf(s->store_wait_reason, sizeof s->store_wait_reason,
           "%s: the store opens once DATA_DIR has room",
           err->message[0] ? err->message : "the disk is full");
  char held[sizeof s->store_wait_reason + 64];
  snprintf(held, sizeof held, "%s; nothing of this request was stored", s->store_wait_reason);
  ana_rpc_hold_unbound(ANA_STATUS_UNAVAILABLE, held);
  next_try_ms = ana_heartbeat_now_ms() + STORE_RETRY_MS;
  ana_log_fields(ANA_LOG_WARN, "main", "starting without the store", "module",
                 ana_server_modules[i].name, "error", s->store_wait_reason, NULL);
}

int ana_server_start(struct ana_server *s, const struct ana_config *cfg) {
  s->cfg = cfg;
  for (size_t i = 0; i < ana_server_n_modules; i++) {
    const struct ana_module *m = &ana_server_modules[i];
    if (s->store_waiting && !m->drains)
      continue; /* started once the store opens */
    if (m->drains && !s->store_waiting)
      atomic_store(&s->store_open, true);
    struct ana_error err;
    ana_error_clear(&err);
    n_started = i + 1;
    int rc = m->start(s, cfg, &err);
    if (rc < 0) {
      ana_log_fields(ANA_LOG_ERROR, "main", "start-up failed", "module", m->name, "error",
                     err.message[0] ? err.message : ana_strerror(rc), NULL);
      stop_range(s, 0, n_started, 0);
      n_started = 0;
      return rc;
    }
    if (s->store_waiting && wait_to == 0)
      begin_waiting(s, i, &err);
  }
  return 0;
}

/* Starts the waiting rows once DATA_DIR has room (at most every
 * STORE_RETRY_MS); a row that fails stops the ones started, to try again. */
static void open_waiting_store(struct ana_server *s) {
  int64_t now = ana_heartbeat_now_ms();
  if (now < next_try_ms ||
      !ana_local_db_dir_has_room(s->cfg->store.data_dir,
                                 (int64_t)s->cfg->store.store_min_free_mb << 20))
    return;
  next_try_ms = now + STORE_RETRY_MS;
  s->store_waiting = false;
  for (size_t i = wait_from; i < wait_to; i++) {
    const struct ana_module *m = &ana_server_modules[i];
    struct ana_error err;
    ana_error_clear(&err);
    int rc = m->start(s, s->cfg, &err);
    if (rc < 0 || s->store_waiting) {
      /* Logged when the reason changes, not every second. */
      static char last[sizeof err.message];
      const char *why = err.message[0] ? err.message : ana_strerror(rc);
      if (strcmp(last, why) != 0)
        ana_log_fields(ANA_LOG_WARN, "main", "the store cannot open yet", "module", m->name,
                       "error", why, NULL);
      snprintf(last, sizeof last, "%s", why);
      stop_range(s, wait_from, i + 1, 0);
      s->store_waiting = true;
      return;
    }
  }
  /* Everything the data calls use is in place: publish it. */
  atomic_store(&s->store_open, true);
  ana_rpc_release_held();
  ANA_INFO("main", "DATA_DIR has room: the store is open");
}

int ana_server_stop(struct ana_server *s, int64_t deadline_ms) {
  bool failed = false;
  for (size_t i = n_started; i-- > 0;) {
    const struct ana_module *m = &ana_server_modules[i];
    if (failed && !m->drains) {
      /* A transport could not stop: some call never ended, or the HTTP
       * thread is stuck in a callback. Tearing the rest down could crash,
       * so leave it (forced stop). */
      ANA_ERROR("main", "stopped with %s", s->forced ? s->forced : "a module still running");
      return ANA_ERR_TIMEOUT;
    }
    if (m->stop && m->stop(s, deadline_ms) < 0)
      failed = true;
  }
  n_started = 0;
  return 0;
}

void ana_server_update_health(struct ana_server *s) {
  static bool was_ready = true, was_live = true;
  if (s->store_waiting)
    open_waiting_store(s);
  bool open = atomic_load(&s->store_open);
  if (open)
    ana_local_db_check_space(s->db);
  int64_t now = ana_heartbeat_now_ms();
  int64_t bridge_age = 0;
  if (s->rest) {
    int64_t last = ana_restbridge_last_loop_ms(s->rest);
    bridge_age = last > 0 ? now - last : 0;
  }
  char stalled[32];
  int64_t thread_age = ana_heartbeat_oldest_ms(stalled, sizeof stalled);
  struct ana_event_store_status ship = {0};
  if (open && s->store_ops->status)
    s->store_ops->status(s->store, &ship);
  bool store_ok = open && !ana_local_db_degraded(s->db) && !ship.full;
  bool bridge_ok = bridge_age < READINESS_BRIDGE_STALL_MS;
  bool ready = atomic_load(&s->serving) && store_ok && bridge_ok;
  bool live = bridge_age < LIVENESS_STALL_MS && thread_age < LIVENESS_STALL_MS;
  atomic_store(&s->ready, ready);
  ana_health_set_serving(ready);
  ana_health_set_live(live);
  if (ready != was_ready && atomic_load(&s->serving)) {
    if (ready)
      ANA_INFO("main", "ready again");
    else
      ANA_WARN("main", "not ready: %s",
               !open       ? "the store is not open (no room for its database)"
               : ship.full ? "the spool of events not yet shipped to ClickHouse is full"
               : !store_ok ? "the store cannot write (disk full or I/O errors)"
                           : "the REST bridge has not turned its loop for 5 s");
  }
  if (live != was_live) {
    if (live)
      ANA_INFO("main", "live again");
    else
      ANA_ERROR("main", "not live: thread %s has made no progress for %lld ms",
                bridge_age >= LIVENESS_STALL_MS ? "restbridge" : stalled,
                (long long)(bridge_age > thread_age ? bridge_age : thread_age));
  }
  was_ready = ready;
  was_live = live;
}
