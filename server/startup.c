/* Drives the module table: start in order, stop in reverse with the
 * forced-stop rule, and the readiness/liveness evaluation main runs. */
#include "ana_server.h"

#include "ana_builtin_services.h"
#include "ana_heartbeat.h"
#include "ana_log.h"

/* Readiness fails while the REST bridge's loop has not turned for this long;
 * liveness while it or any registered thread has made no progress for
 * LIVENESS_STALL_MS. */
#define READINESS_BRIDGE_STALL_MS 5000
#define LIVENESS_STALL_MS 30000

/* How many rows have started (the failed one included), for stop. */
static size_t n_started;

static void stop_range(struct ana_server *s, size_t n, int64_t deadline_ms) {
  for (size_t i = n; i-- > 0;) {
    const struct ana_module *m = &ana_server_modules[i];
    if (m->stop)
      m->stop(s, deadline_ms);
  }
}

int ana_server_start(struct ana_server *s, const struct ana_config *cfg) {
  s->cfg = cfg;
  for (size_t i = 0; i < ana_server_n_modules; i++) {
    const struct ana_module *m = &ana_server_modules[i];
    struct ana_error err;
    ana_error_clear(&err);
    n_started = i + 1;
    int rc = m->start(s, cfg, &err);
    if (rc < 0) {
      ana_log_fields(ANA_LOG_ERROR, "main", "start-up failed", "module", m->name, "error",
                     err.message[0] ? err.message : ana_strerror(rc), NULL);
      stop_range(s, n_started, 0);
      n_started = 0;
      return rc;
    }
  }
  return 0;
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
  ana_local_db_check_space(s->db);
  int64_t now = ana_heartbeat_now_ms();
  int64_t bridge_age = 0;
  if (s->rest) {
    int64_t last = ana_restbridge_last_loop_ms(s->rest);
    bridge_age = last > 0 ? now - last : 0;
  }
  char stalled[32];
  int64_t thread_age = ana_heartbeat_oldest_ms(stalled, sizeof stalled);
  bool store_ok = !ana_local_db_degraded(s->db);
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
               !store_ok ? "the store cannot write (disk full or I/O errors)"
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
