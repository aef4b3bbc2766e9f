/* What the benchmarks share: clocks and percentiles, the machine line of
 * RESULTS.md, analyticsd (and other daemons) on free ports, and the gRPC
 * ingest load (TrackEvent, TrackEvents, the IngestEvents stream). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct ana_client_channel;

/* Monotonic seconds, for intervals. */
double bench_now_s(void);

/* The p-th percentile (0..100) of v[0..n), nearest index rounded; sorts v in
 * place. NAN when n is 0. */
double bench_percentile(double *v, size_t n, double p);

/* "N CPUs (model), sysname release" into out, for the Machine line of a
 * RESULTS.md section. */
void bench_machine(char *out, size_t cap);

/* A loopback TCP port that was free a moment ago. */
int bench_free_port(void);

/* A daemon started by a benchmark. */
struct bench_proc {
  pid_t pid;     /* 0 once stopped */
  int port;      /* HTTP (PORT) */
  int grpc_port; /* analyticsd only */
};

/* Tells whether p is ready to serve; called repeatedly while it starts. */
typedef bool (*bench_ready_fn)(const struct bench_proc *p, void *arg);

/* Forks and execs path with argv, after setting env (name, value pairs ending
 * with NULL) and sending the child's stdout to /dev/null. Returns the pid. */
pid_t bench_spawn(const char *path, char *const argv[], const char *const env[]);

/* Polls ready(p, arg) for up to 10 s; exits the benchmark with a message
 * naming `what` when it never succeeds or p exits first. */
void bench_wait_ready(const struct bench_proc *p, const char *what, bench_ready_fn ready,
                      void *arg);

/* Starts analyticsd (server_path, borrowed) on data_dir, an existing
 * directory, with HTTP and gRPC on free loopback ports, and waits until
 * ready(p, arg) says so; ready NULL waits for the gRPC health check. Exits
 * the benchmark when it does not start. */
struct bench_proc bench_server_start(const char *server_path, const char *data_dir,
                                     bench_ready_fn ready, void *arg);

/* SIGTERM and wait; a stopped or never started p (pid 0) is left alone. */
void bench_proc_stop(struct bench_proc *p);

/* A channel to server's gRPC port; the caller destroys it with
 * ana_client_channel_destroy. NULL on failure. */
struct ana_client_channel *bench_channel_create(const struct bench_proc *server);

/* One unary call: when it was sent (bench_now_s) and how long it took. */
struct bench_call {
  double sent_s, ms;
};

/* Every unary call of a run, ordered by send time. Freed with
 * bench_call_log_free. */
struct bench_call_log {
  struct bench_call *calls;
  size_t n;
};

void bench_call_log_free(struct bench_call_log *log);

/* One gRPC ingest run: `clients` threads for `seconds`, each sending events
 * with the same properties and fresh ids. */
struct bench_grpc_load {
  int clients;
  int batch;   /* events per call; 1 = TrackEvent, more = TrackEvents; 0 = a gRPC
                * health check instead (the transport's own cost, no event) */
  bool stream; /* IngestEvents, one stream per client, batch per message */
  double seconds;
  double interval;            /* >0: paced (open loop), seconds between calls per client */
  struct bench_call_log *log; /* unary calls: filled when not NULL */
  /* Unary calls: the "authorization" metadata of client `client`'s next call
   * ("Bearer <token>", borrowed until the call returns), or NULL for none;
   * NULL function: no credentials. Called on the client's thread. */
  const char *(*authorization)(void *ctx, int client);
  void *auth_ctx;
};

/* Runs load on channel (borrowed) and returns the accepted events per
 * second. p50_ms and p99_ms, when not NULL, get the call latencies of unary
 * calls (NAN for a stream). Failed calls are counted on stderr. Blocks for
 * the run. */
double bench_grpc_ingest_rate(struct ana_client_channel *channel,
                              const struct bench_grpc_load *load, double *p50_ms, double *p99_ms);

/* Pins this process to BENCH_CLIENT_CPUS (e.g. "1"); servers started by
 * bench_spawn are pinned to BENCH_SERVER_CPUS. Unset: no pinning. */
void bench_pin_client(void);

#endif
