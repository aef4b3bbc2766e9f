/* analyticsctl's streams: SIGINT and SIGTERM are blocked in every thread
 * before the client starts; one thread waits for them (sigwait) and cancels
 * the client's streams, so the stream call returns 0 and the client is
 * destroyed normally. */
#include "cli.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct {
  pthread_mutex_t mu;
  analytics_client_t *client; /* guarded by mu; NULL once the stream is over */
  sigset_t set;
  volatile sig_atomic_t stop;
} sigs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *signal_waiter(void *arg) {
  int sig;

  (void)arg;
  if (sigwait(&sigs.set, &sig) != 0)
    return NULL;
  sigs.stop = 1;
  /* Repeat: a stream that was still opening when the signal came is only
   * listed (cancellable) once it is open. */
  for (;;) {
    pthread_mutex_lock(&sigs.mu);
    if (!sigs.client) {
      pthread_mutex_unlock(&sigs.mu);
      return NULL;
    }
    analytics_client_cancel_streams(sigs.client);
    pthread_mutex_unlock(&sigs.mu);
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
  }
}

void cli_signals_block(void) {
  sigemptyset(&sigs.set);
  sigaddset(&sigs.set, SIGINT);
  sigaddset(&sigs.set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs.set, NULL); /* inherited by every thread from here on */
}

void cli_signals_watch(analytics_client_t *c) {
  pthread_t waiter;

  sigs.client = c;
  if (pthread_create(&waiter, NULL, signal_waiter, NULL) == 0)
    pthread_detach(waiter);
}

void cli_signals_unwatch(void) {
  pthread_mutex_lock(&sigs.mu);
  sigs.client = NULL;
  pthread_mutex_unlock(&sigs.mu);
}

bool cli_signalled(void) {
  return sigs.stop != 0;
}

struct stream_ctx {
  bool events_only; /* skip aggregate snapshots */
  void (*line)(const json_t *msg);
  unsigned long printed;
};

static int on_message(const char *json, void *arg) {
  struct stream_ctx *t = arg;
  json_t *v;

  if (sigs.stop)
    return 1;
  /* Cheap pre-check, then the exact one: only messages with "event". */
  if (t->events_only && !strstr(json, "\"event\""))
    return 0;
  v = t->events_only || (cli_format == CLI_FORMAT_TABLE && t->line) ? json_loads(json, 0, NULL)
                                                                    : NULL;
  if (t->events_only && !json_object_get(v, "event")) {
    json_decref(v);
    return 0;
  }
  if (cli_format == CLI_FORMAT_TABLE && t->line && v)
    t->line(v);
  else
    puts(json);
  fflush(stdout);
  json_decref(v);
  t->printed++;
  return 0;
}

int cli_run_stream(analytics_client_t *c, const char *method, json_t *req, bool events_only,
                   void (*line)(const json_t *msg)) {
  struct stream_ctx t = {events_only, line, 0};
  char *text = json_dumps(req, JSON_COMPACT);
  analytics_error_t err;
  int rc;

  json_decref(req);
  rc = analytics_stream_call(c, method, text, on_message, &t, &err);
  free(text);
  if (rc < 0)
    return cli_failed(rc, &err);
  if (sigs.stop)
    fprintf(stderr, "analyticsctl: stream ended by signal after %lu message(s)\n", t.printed);
  return 0;
}
