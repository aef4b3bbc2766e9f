/* grpc.health.v1.Health: Check for probes (Kubernetes, grpc_health_probe) and
 * Watch streams that hear every change; "" is readiness, "liveness" liveness. */
#include "ana_builtin_services.h"

#include "ana_alloc.h"
#include "ana_call.h"
#include "grpc/health/v1/health.pb-c.h"

#include <pthread.h>
#include <string.h>

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SERVICE_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

/* What a service name reports. */
enum service_kind { SERVICE_NONE, SERVICE_READINESS, SERVICE_LIVENESS };

struct watcher {
  struct watcher *next;
  struct ana_call *call;
  enum service_kind kind;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool serving;     /* readiness */
static bool live = true; /* liveness */
static struct watcher *watchers;

/* "" (the whole server) and every service of the method table report
 * readiness; ANA_HEALTH_LIVENESS reports liveness. */
static enum service_kind service_kind(const char *name) {
  if (!name[0])
    return SERVICE_READINESS;
  if (strcmp(name, ANA_HEALTH_LIVENESS) == 0)
    return SERVICE_LIVENESS;
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++)
    if (strcmp(ana_methods[i].service, name) == 0)
      return SERVICE_READINESS;
  return SERVICE_NONE;
}

/* The status of a service kind; lock held. */
static Grpc__Health__V1__HealthCheckResponse__ServingStatus status_locked(enum service_kind k) {
  switch (k) {
  case SERVICE_READINESS: return serving ? SERVING : NOT_SERVING;
  case SERVICE_LIVENESS: return live ? SERVING : NOT_SERVING;
  default: return SERVICE_UNKNOWN;
  }
}

static int send_status(struct ana_call *call,
                       Grpc__Health__V1__HealthCheckResponse__ServingStatus s) {
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = s;
  return ana_call_send(call, &resp.base);
}

static void check(struct ana_call *call, const ProtobufCMessage *request) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)request;
  enum service_kind k = service_kind(req->service);
  if (k == SERVICE_NONE) {
    ana_call_fail(call, ANA_STATUS_NOT_FOUND, "unknown service %s", req->service);
    return;
  }
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  pthread_mutex_lock(&lock);
  resp.status = status_locked(k);
  pthread_mutex_unlock(&lock);
  ana_call_reply(call, &resp.base);
}

static void watch(struct ana_call *call, const ProtobufCMessage *request) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)request;
  struct watcher *w = ana_calloc(1, sizeof *w);
  if (!w) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->call = call;
  w->kind = service_kind(req->service);
  ana_call_set_user(call, w);
  pthread_mutex_lock(&lock);
  /* Sent under the lock so no change can overtake the first status. */
  send_status(call, status_locked(w->kind));
  w->next = watchers;
  watchers = w;
  pthread_mutex_unlock(&lock);
}

/* Removes the call's watcher; true when this caller removed it (and so must
 * finish the call). */
static bool unlink_watcher(struct ana_call *call) {
  struct watcher *w = ana_call_user(call);
  bool found = false;
  pthread_mutex_lock(&lock);
  for (struct watcher **p = &watchers; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      found = true;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  if (found)
    ana_free(w);
  return found;
}

static void watch_cancelled(struct ana_call *call) {
  if (unlink_watcher(call))
    ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
}

static void watch_drain(struct ana_call *call) {
  if (unlink_watcher(call))
    ana_call_fail(call, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
}

static const struct ana_handler check_handler = {.on_request = check};
static const struct ana_handler watch_handler = {
    .on_request = watch, .on_cancel = watch_cancelled, .on_drain = watch_drain};

void ana_health_bind(void) {
  ana_rpc_bind(ANA_METHOD_GRPC_HEALTH_V1_HEALTH_CHECK, &check_handler);
  ana_rpc_bind(ANA_METHOD_GRPC_HEALTH_V1_HEALTH_WATCH, &watch_handler);
}

/* Pushes the status of kind k to its watchers; lock held. A full send
 * queue skips one update. */
static void notify_locked(enum service_kind k) {
  for (struct watcher *w = watchers; w; w = w->next)
    if (w->kind == k)
      send_status(w->call, status_locked(k));
}

void ana_health_set_serving(bool value) {
  pthread_mutex_lock(&lock);
  if (serving != value) {
    serving = value;
    notify_locked(SERVICE_READINESS);
  }
  pthread_mutex_unlock(&lock);
}

void ana_health_set_live(bool value) {
  pthread_mutex_lock(&lock);
  if (live != value) {
    live = value;
    notify_locked(SERVICE_LIVENESS);
  }
  pthread_mutex_unlock(&lock);
}
