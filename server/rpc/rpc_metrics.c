/* Call metrics, whatever the transport: requests by method and status,
 * latency histograms, and the calls and streams open, as Prometheus
 * families (ana_prom); for gRPC calls also the families go-grpc-prometheus
 * exports (grpc_server_started_total, grpc_server_handled_total,
 * grpc_server_handling_seconds), so its dashboards and alerts work as they
 * are. Fixed arrays indexed by transport, method and status: recording is a
 * few relaxed atomic additions. */
#include "call_internal.h"

#include "ana_prom.h"
#include "ana_clock.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

enum { T_GRPC, T_HTTP, T_WEBSOCKET, T_OTHER, N_TRANSPORTS };
#define N_CODES (ANA_STATUS_UNAUTHENTICATED + 1)

static const char *const transport_names[N_TRANSPORTS] = {"grpc", "http", "websocket", "other"};

/* go-grpc-prometheus's names: codes.Code's String() and the grpc_type
 * label's values. */
static const char *const grpc_code_names[N_CODES] = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};

static const char *grpc_type_of(enum ana_method_kind kind) {
  switch (kind) {
  case ANA_METHOD_UNARY: return "unary";
  case ANA_METHOD_SERVER_STREAMING: return "server_stream";
  case ANA_METHOD_CLIENT_STREAMING: return "client_stream";
  default: return "bidi_stream";
  }
}

/* go-grpc-prometheus's buckets: the Prometheus client's defaults. */
static const double grpc_handling_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                               0.5,   1,    2.5,   5,    10};

static struct {
  struct ana_prom_counter requests[N_TRANSPORTS][ANA_METHOD_COUNT][N_CODES];
  struct ana_prom_histogram latency[N_TRANSPORTS][ANA_METHOD_COUNT];
  struct ana_prom_counter grpc_started[ANA_METHOD_COUNT];
  struct ana_prom_histogram grpc_handling[ANA_METHOD_COUNT];
  struct ana_prom_gauge open[N_TRANSPORTS];
  struct ana_prom_gauge streams_open[N_TRANSPORTS];
} m;

static pthread_once_t once = PTHREAD_ONCE_INIT;

static int transport_of(const struct ana_call *call) {
  const char *n = call->transport ? call->transport->name : NULL;
  for (int i = 0; n && i < T_OTHER; i++)
    if (strcmp(n, transport_names[i]) == 0)
      return i;
  return T_OTHER;
}

static bool is_stream(const struct ana_call *call) {
  return call->method && call->method->kind != ANA_METHOD_UNARY;
}

/* The go-grpc-prometheus families, gRPC calls only. Every method has its
 * started series (0 before its first call), as go-grpc-prometheus's
 * InitializeMetrics gives; handled and handling series appear with their
 * first finished call. */
static void collect_grpc(struct ana_prom_writer *w) {
  ana_prom_write_family(w, "grpc_server_started_total", "counter",
                        "Total number of RPCs started on the server.");
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++) {
    const char *labels[] = {"grpc_type",
                            grpc_type_of(ana_methods[i].kind),
                            "grpc_service",
                            ana_methods[i].service,
                            "grpc_method",
                            ana_methods[i].name,
                            NULL};
    ana_prom_write_u64(w, "grpc_server_started_total", labels,
                       ana_prom_counter_get(&m.grpc_started[i]));
  }
  ana_prom_write_family(w, "grpc_server_handled_total", "counter",
                        "Total number of RPCs completed on the server, regardless of success or "
                        "failure.");
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++)
    for (int c = 0; c < N_CODES; c++) {
      uint64_t v = ana_prom_counter_get(&m.requests[T_GRPC][i][c]);
      if (!v)
        continue;
      const char *labels[] = {"grpc_type",
                              grpc_type_of(ana_methods[i].kind),
                              "grpc_service",
                              ana_methods[i].service,
                              "grpc_method",
                              ana_methods[i].name,
                              "grpc_code",
                              grpc_code_names[c],
                              NULL};
      ana_prom_write_u64(w, "grpc_server_handled_total", labels, v);
    }
  ana_prom_write_family(w, "grpc_server_handling_seconds", "histogram",
                        "Histogram of response latency (seconds) of gRPC that had been "
                        "application-level handled by the server.");
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++) {
    if (!ana_prom_histogram_count(&m.grpc_handling[i]))
      continue;
    const char *labels[] = {"grpc_type",
                            grpc_type_of(ana_methods[i].kind),
                            "grpc_service",
                            ana_methods[i].service,
                            "grpc_method",
                            ana_methods[i].name,
                            NULL};
    ana_prom_write_histogram(w, "grpc_server_handling_seconds", labels, &m.grpc_handling[i]);
  }
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  (void)ctx;
  ana_prom_write_family(w, "ana_rpc_requests_total", "counter",
                        "Calls finished, by transport, method and gRPC status code.");
  for (int t = 0; t < N_TRANSPORTS; t++)
    for (size_t i = 0; i < ANA_METHOD_COUNT; i++)
      for (int c = 0; c < N_CODES; c++) {
        uint64_t v = ana_prom_counter_get(&m.requests[t][i][c]);
        if (!v)
          continue;
        const char *labels[] = {"transport", transport_names[t],
                                "method",    ana_methods[i].path,
                                "code",      ana_status_name((enum ana_status)c),
                                NULL};
        ana_prom_write_u64(w, "ana_rpc_requests_total", labels, v);
      }
  ana_prom_write_family(w, "ana_rpc_duration_seconds", "histogram",
                        "Time from the start of a call to its finish, by transport and method.");
  for (int t = 0; t < N_TRANSPORTS; t++)
    for (size_t i = 0; i < ANA_METHOD_COUNT; i++) {
      if (!ana_prom_histogram_count(&m.latency[t][i]))
        continue;
      const char *labels[] = {"transport", transport_names[t], "method", ana_methods[i].path, NULL};
      ana_prom_write_histogram(w, "ana_rpc_duration_seconds", labels, &m.latency[t][i]);
    }
  ana_prom_write_family(w, "ana_rpc_calls_open", "gauge", "Calls in progress, by transport.");
  for (int t = 0; t < N_TRANSPORTS; t++)
    ana_prom_write_i64(w, "ana_rpc_calls_open",
                       (const char *const[]){"transport", transport_names[t], NULL},
                       ana_prom_gauge_get(&m.open[t]));
  ana_prom_write_family(w, "ana_rpc_streams_open", "gauge",
                        "Streaming calls in progress (gRPC streams, WebSockets), by transport.");
  for (int t = 0; t < N_TRANSPORTS; t++)
    ana_prom_write_i64(w, "ana_rpc_streams_open",
                       (const char *const[]){"transport", transport_names[t], NULL},
                       ana_prom_gauge_get(&m.streams_open[t]));
  collect_grpc(w);
}

static void setup(void) {
  for (int t = 0; t < N_TRANSPORTS; t++)
    for (size_t i = 0; i < ANA_METHOD_COUNT; i++)
      ana_prom_histogram_init(&m.latency[t][i], ana_prom_latency_buckets,
                              ana_prom_latency_buckets_n);
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++)
    ana_prom_histogram_init(&m.grpc_handling[i], grpc_handling_buckets,
                            sizeof grpc_handling_buckets / sizeof grpc_handling_buckets[0]);
  ana_prom_register(collect, NULL);
}

void ana_rpc_metrics_started(struct ana_call *call) {
  pthread_once(&once, setup);
  call->start_mono_ns = ana_clock_mono_ns();
  int t = transport_of(call);
  ana_prom_gauge_add(&m.open[t], 1);
  if (is_stream(call))
    ana_prom_gauge_add(&m.streams_open[t], 1);
  if (t == T_GRPC && call->method) {
    size_t i = (size_t)ana_method_id_of(call->method);
    if (i < ANA_METHOD_COUNT)
      ana_prom_counter_add(&m.grpc_started[i], 1);
  }
  atomic_store(&call->metrics_open, true);
}

void ana_rpc_metrics_closed(struct ana_call *call) {
  if (!atomic_exchange(&call->metrics_open, false))
    return;
  int t = transport_of(call);
  ana_prom_gauge_add(&m.open[t], -1);
  if (is_stream(call))
    ana_prom_gauge_add(&m.streams_open[t], -1);
}

void ana_rpc_metrics_finished(struct ana_call *call, const struct ana_error *status) {
  int t = transport_of(call);
  int code = status ? (int)status->code : ANA_STATUS_OK;
  if (code < 0 || code >= N_CODES)
    code = ANA_STATUS_UNKNOWN;
  if (call->method) {
    size_t i = (size_t)ana_method_id_of(call->method);
    if (i < ANA_METHOD_COUNT) {
      double seconds = (double)(ana_clock_mono_ns() - call->start_mono_ns) / 1e9;
      ana_prom_counter_add(&m.requests[t][i][code], 1);
      ana_prom_histogram_observe(&m.latency[t][i], seconds);
      if (t == T_GRPC)
        ana_prom_histogram_observe(&m.grpc_handling[i], seconds);
    }
  }
  ana_rpc_metrics_closed(call);
}
