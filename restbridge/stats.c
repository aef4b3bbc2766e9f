/* Metrics of the bridge: HTTP requests by route and status, their latency,
 * and the WebSockets open, as Prometheus families (ana_prom). Calls are
 * counted per RPC by the call layer too (ana_rpc_* families). */
#include "restbridge_internal.h"

#include "ana_alloc.h"
#include "ana_prom.h"
#include "ana_clock.h"

#include <stdio.h>
#include <time.h>

static const int statuses[] = {200, 204, 400, 401, 403, 404, 408, 409,
                               411, 413, 429, 499, 500, 501, 503, 504};
#define N_STATUSES (sizeof statuses / sizeof statuses[0])

struct rb_route_stats {
  struct ana_prom_counter by_status[N_STATUSES + 1]; /* last: any other status */
  struct ana_prom_histogram latency;
};

struct rb_stats {
  struct rb_route_stats *routes; /* ana_route_count + 1 (no route) */
  struct ana_prom_gauge ws_open;
  struct ana_prom_counter ws_messages;
};

int64_t rb_now_ns(void) {
  return ana_clock_mono_ns();
}

static void route_labels(size_t i, const char **method, const char **route) {
  if (i < ana_route_count) {
    *method = ana_routes[i].verb;
    *route = ana_routes[i].pattern;
  } else {
    *method = "";
    *route = "(none)";
  }
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct rb_stats *s = ctx;
  ana_prom_write_family(w, "ana_http_requests_total", "counter",
                        "REST requests answered, by route (the template) and HTTP status; "
                        "route \"(none)\" counts requests that matched no route.");
  for (size_t i = 0; i <= ana_route_count; i++) {
    const char *method, *route;
    route_labels(i, &method, &route);
    for (size_t k = 0; k <= N_STATUSES; k++) {
      uint64_t v = ana_prom_counter_get(&s->routes[i].by_status[k]);
      if (!v)
        continue;
      char status[8];
      if (k < N_STATUSES)
        snprintf(status, sizeof status, "%d", statuses[k]);
      else
        snprintf(status, sizeof status, "other");
      const char *labels[] = {"method", method, "route", route, "status", status, NULL};
      ana_prom_write_u64(w, "ana_http_requests_total", labels, v);
    }
  }
  ana_prom_write_family(w, "ana_http_request_duration_seconds", "histogram",
                        "Time from a REST request's headers to the end of its answer, by route.");
  for (size_t i = 0; i <= ana_route_count; i++) {
    if (!ana_prom_histogram_count(&s->routes[i].latency))
      continue;
    const char *method, *route;
    route_labels(i, &method, &route);
    const char *labels[] = {"method", method, "route", route, NULL};
    ana_prom_write_histogram(w, "ana_http_request_duration_seconds", labels, &s->routes[i].latency);
  }
  ana_prom_write_family(w, "ana_websocket_connections_open", "gauge",
                        "WebSocket streams open on the bridge.");
  ana_prom_write_i64(w, "ana_websocket_connections_open", NULL, ana_prom_gauge_get(&s->ws_open));
  ana_prom_write_family(w, "ana_websocket_messages_sent_total", "counter",
                        "WebSocket message frames written by the bridge.");
  ana_prom_write_u64(w, "ana_websocket_messages_sent_total", NULL,
                     ana_prom_counter_get(&s->ws_messages));
}

struct rb_stats *rb_stats_create(void) {
  struct rb_stats *s = ana_calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->routes = ana_calloc(ana_route_count + 1, sizeof *s->routes);
  if (!s->routes) {
    ana_free(s);
    return NULL;
  }
  for (size_t i = 0; i <= ana_route_count; i++)
    ana_prom_histogram_init(&s->routes[i].latency, ana_prom_latency_buckets,
                            ana_prom_latency_buckets_n);
  if (ana_prom_register(collect, s) < 0) {
    ana_free(s->routes);
    ana_free(s);
    return NULL;
  }
  return s;
}

void rb_stats_destroy(struct rb_stats *s) {
  if (!s)
    return;
  ana_prom_unregister(collect, s);
  ana_free(s->routes);
  ana_free(s);
}

void rb_stats_request(struct rb_stats *s, size_t route, int http_status, double seconds) {
  if (!s)
    return;
  if (route > ana_route_count)
    route = ana_route_count;
  size_t k = 0;
  while (k < N_STATUSES && statuses[k] != http_status)
    k++;
  ana_prom_counter_add(&s->routes[route].by_status[k], 1);
  ana_prom_histogram_observe(&s->routes[route].latency, seconds);
}

void rb_stats_websocket(struct rb_stats *s, int delta) {
  if (s)
    ana_prom_gauge_add(&s->ws_open, delta);
}

void rb_stats_ws_messages(struct rb_stats *s, size_t n) {
  if (s)
    ana_prom_counter_add(&s->ws_messages, n);
}
