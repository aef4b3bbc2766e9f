/* What the benchmarks share: clocks, daemons on free ports, the gRPC ingest load. */
#include "bench_common.h"

#include "ana_client_stubs.h"
#include "ana_clock.h"

#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Per-client latency samples kept at most: enough for any run length we use. */
#define LATENCY_CAP 2000000

double bench_now_s(void) {
  return (double)ana_clock_mono_ns() / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double bench_percentile(double *v, size_t n, double p) {
  if (n == 0)
    return NAN;
  qsort(v, n, sizeof *v, cmp_double);
  size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

void bench_machine(char *out, size_t cap) {
  struct utsname u;
  char cpu[256] = "unknown", line[512];
  FILE *ci = fopen("/proc/cpuinfo", "r");

  while (ci && fgets(line, sizeof line, ci))
    if (strncmp(line, "model name", 10) == 0) {
      snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
      cpu[strcspn(cpu, "\n")] = '\0';
      break;
    }
  if (ci)
    fclose(ci);
  uname(&u);
  snprintf(out, cap, "%ld CPUs (%s), %s %s", sysconf(_SC_NPROCESSORS_ONLN), cpu, u.sysname,
           u.release);
}

/* ------------------------------------------------------------------ */
/* daemons */

int bench_free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  bind(s, (struct sockaddr *)&a, sizeof a);
  getsockname(s, (struct sockaddr *)&a, &len);
  int port = ntohs(a.sin_port);
  close(s);
  return port;
}

/* Pins the calling process to the CPUs listed in the environment variable
 * (e.g. "0" or "0,1"); nothing when it is unset. The performance notes ask
 * for the server on one core and the load generator on the other, so that
 * each measurement says which CPU did what. */
static void pin_from_env(const char *var) {
  const char *list = getenv(var);
  if (!list || !list[0])
    return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const char *p = list; *p;) {
    char *end;
    long cpu = strtol(p, &end, 10);
    if (end == p)
      break;
    if (cpu >= 0 && cpu < CPU_SETSIZE)
      CPU_SET((int)cpu, &set);
    p = *end == ',' ? end + 1 : end;
  }
  sched_setaffinity(0, sizeof set, &set);
}

void bench_pin_client(void) {
  pin_from_env("BENCH_CLIENT_CPUS");
}

pid_t bench_spawn(const char *path, char *const argv[], const char *const env[]) {
  fflush(stdout); /* or the child would print our buffered lines again */
  pid_t pid = fork();
  if (pid == 0) {
    pin_from_env("BENCH_SERVER_CPUS");
    for (size_t i = 0; env[i]; i += 2)
      setenv(env[i], env[i + 1], 1);
    if (!freopen("/dev/null", "w", stdout))
      _exit(127);
    execv(path, argv);
    _exit(127);
  }
  return pid;
}

void bench_wait_ready(const struct bench_proc *p, const char *what, bench_ready_fn ready,
                      void *arg) {
  for (int i = 0; i < 200; i++) {
    if (ready(p, arg))
      return;
    if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
      break;
    usleep(50000);
  }
  fprintf(stderr, "bench: %s did not start\n", what);
  exit(1);
}

struct ana_client_channel *bench_channel_create(const struct bench_proc *server) {
  char target[64];
  struct ana_error err;

  snprintf(target, sizeof target, "127.0.0.1:%d", server->grpc_port);
  return ana_client_channel_create(target, &err);
}

/* arg: one channel for every attempt, so start-up is not slowed by a channel each. */
static bool grpc_healthy(const struct bench_proc *p, void *arg) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  struct ana_call_options o = {.timeout_ms = 500};
  struct ana_error err;

  (void)p;
  if (ana_stub_grpc__health__v1__health_check(arg, &req, &resp, &o, &err) < 0)
    return false;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return true;
}

struct bench_proc bench_server_start(const char *server_path, const char *data_dir,
                                     bench_ready_fn ready, void *arg) {
  /* Both ports are chosen, even for a gRPC-only benchmark, so that no two
   * servers (this one, one of a benchmark run alongside) meet on the default
   * HTTP port. */
  struct bench_proc p = {.port = bench_free_port(), .grpc_port = bench_free_port()};
  char port[16], gport[16];

  snprintf(port, sizeof port, "%d", p.port);
  snprintf(gport, sizeof gport, "%d", p.grpc_port);
  /* RETENTION_DAYS pinned: ingest_bench's raw baseline writes rows that
   * expire after 90 days and searches them through this server. */
  const char *env[] = {"PORT",           port,       "GRPC_PORT", gport,       "GRPC_HOST",
                       "127.0.0.1",      "DATA_DIR", data_dir,    "LOG_LEVEL", "warn",
                       "RETENTION_DAYS", "90",       NULL};
  char *argv[] = {(char *)server_path, NULL};
  p.pid = bench_spawn(server_path, argv, env);
  if (ready) {
    bench_wait_ready(&p, "analyticsd", ready, arg);
  } else {
    struct ana_client_channel *ch = bench_channel_create(&p);
    bench_wait_ready(&p, "analyticsd", grpc_healthy, ch);
    ana_client_channel_destroy(ch);
  }
  return p;
}

void bench_proc_stop(struct bench_proc *p) {
  if (p->pid > 0) {
    kill(p->pid, SIGTERM);
    waitpid(p->pid, NULL, 0);
  }
  p->pid = 0;
}

/* ------------------------------------------------------------------ */
/* gRPC ingest load */

static atomic_long id_counter;
static Google__Protobuf__Struct shared_props;
static pthread_once_t shared_props_once = PTHREAD_ONCE_INIT;

/* The properties of every event (campaignId, groupId, messageType,
 * charactersCount), the same as the REST load's JSON. */
static void shared_props_init(void) {
  static Google__Protobuf__Struct__FieldsEntry e[4];
  static Google__Protobuf__Struct__FieldsEntry *ep[4];
  static Google__Protobuf__Value v[4];
  const char *keys[] = {"campaignId", "groupId", "messageType", "charactersCount"};
  const char *strs[] = {"123", "456", "text", NULL};

  google__protobuf__struct__init(&shared_props);
  for (int i = 0; i < 4; i++) {
    google__protobuf__struct__fields_entry__init(&e[i]);
    google__protobuf__value__init(&v[i]);
    e[i].key = (char *)keys[i];
    if (strs[i]) {
      v[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
      v[i].string_value = (char *)strs[i];
    } else {
      v[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
      v[i].number_value = 150;
    }
    e[i].value = &v[i];
    ep[i] = &e[i];
  }
  shared_props.n_fields = 4;
  shared_props.fields = ep;
}

/* n events with fresh ids (written to ids) and the shared properties, their
 * pointers in ptrs; the caller frees the returned array. */
static Analytics__V1__Event *make_events(size_t n, char (*ids)[32], Analytics__V1__Event **ptrs) {
  Analytics__V1__Event *evs = calloc(n, sizeof *evs);

  pthread_once(&shared_props_once, shared_props_init); /* clients start together */
  for (size_t i = 0; i < n; i++) {
    analytics__v1__event__init(&evs[i]);
    evs[i].event_type = "message";
    evs[i].event_name = "message_sent";
    snprintf(ids[i], 32, "b-%ld", atomic_fetch_add(&id_counter, 1));
    evs[i].event_id = ids[i];
    evs[i].properties = &shared_props;
    ptrs[i] = &evs[i];
  }
  return evs;
}

/* One client's share of a run. */
struct client {
  const struct bench_grpc_load *load;
  struct ana_client_channel *channel;
  double until;
  double first; /* paced: when this client sends its first call */
  long events, errors;
  double *lat;  /* ms; NULL when latencies are not asked for */
  double *sent; /* bench_now_s of each call in lat; NULL when no log is asked for */
  size_t n_lat;
  int index; /* among the run's clients */
};

static void *unary_client(void *arg) {
  struct client *c = arg;
  int batch = c->load->batch;
  char(*ids)[32] = calloc((size_t)batch, 32);
  Analytics__V1__Event **ptrs = calloc((size_t)batch, sizeof *ptrs);
  double next = c->first;

  while (bench_now_s() < c->until) {
    if (c->load->interval > 0) {
      double wait = next - bench_now_s();
      if (wait > 0)
        usleep((useconds_t)(wait * 1e6));
      next += c->load->interval;
    }
    Analytics__V1__Event *evs = make_events((size_t)batch, ids, ptrs);
    struct ana_error err;
    struct ana_call_options call_opts = {0}, *opts = NULL;
    if (c->load->authorization) {
      call_opts.authorization = c->load->authorization(c->load->auth_ctx, c->index);
      opts = &call_opts;
    }
    double t = bench_now_s();
    int rc;
    if (batch == 0) {
      Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
      Grpc__Health__V1__HealthCheckResponse *resp = NULL;
      rc = ana_stub_grpc__health__v1__health_check(c->channel, &req, &resp, NULL, &err);
      if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    } else if (batch == 1) {
      Analytics__V1__TrackEventRequest req = ANALYTICS__V1__TRACK_EVENT_REQUEST__INIT;
      Analytics__V1__TrackEventResponse *resp = NULL;
      req.event = &evs[0];
      rc = ana_stub_event_service_track_event(c->channel, &req, &resp, opts, &err);
      if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    } else {
      Analytics__V1__TrackEventsRequest req = ANALYTICS__V1__TRACK_EVENTS_REQUEST__INIT;
      Analytics__V1__TrackEventsResponse *resp = NULL;
      req.n_events = (size_t)batch;
      req.events = ptrs;
      rc = ana_stub_event_service_track_events(c->channel, &req, &resp, NULL, &err);
      if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    if (c->lat && c->n_lat < LATENCY_CAP) {
      if (c->sent)
        c->sent[c->n_lat] = t;
      c->lat[c->n_lat++] = (bench_now_s() - t) * 1e3;
    }
    if (rc == 0)
      c->events += batch;
    else
      c->errors++;
    free(evs);
  }
  free(ids);
  free(ptrs);
  return NULL;
}

struct stream_reader {
  struct ana_client_stream *s;
  long events;
};

/* Counts what the server acknowledges while the client keeps sending. */
static void *stream_read(void *arg) {
  struct stream_reader *r = arg;
  Analytics__V1__IngestResponse *resp;
  struct ana_error err;
  while (ana_stub_event_service_ingest_events_recv(r->s, &resp, &err) == 1) {
    r->events += resp->accepted;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return NULL;
}

static void *stream_client(void *arg) {
  struct client *c = arg;
  int batch = c->load->batch;
  struct ana_error err;
  struct ana_client_stream *s = ana_stub_event_service_ingest_events_open(c->channel, NULL, &err);
  if (!s) {
    c->errors++;
    return NULL;
  }
  struct stream_reader r = {s, 0};
  pthread_t reader;
  pthread_create(&reader, NULL, stream_read, &r);
  char(*ids)[32] = calloc((size_t)batch, 32);
  Analytics__V1__Event **ptrs = calloc((size_t)batch, sizeof *ptrs);
  while (bench_now_s() < c->until) {
    Analytics__V1__Event *evs = make_events((size_t)batch, ids, ptrs);
    Analytics__V1__IngestRequest req = ANALYTICS__V1__INGEST_REQUEST__INIT;
    req.batch_id = ids[0];
    req.n_events = (size_t)batch;
    req.events = ptrs;
    int rc = ana_stub_event_service_ingest_events_send(s, &req, &err);
    free(evs);
    if (rc < 0) {
      c->errors++;
      break;
    }
  }
  ana_client_stream_close_send(s, &err);
  pthread_join(reader, NULL);
  ana_client_stream_finish(s, &err);
  c->events += r.events;
  free(ids);
  free(ptrs);
  return NULL;
}

void bench_call_log_free(struct bench_call_log *log) {
  free(log->calls);
  *log = (struct bench_call_log){0};
}

static int by_send_time(const void *a, const void *b) {
  double x = ((const struct bench_call *)a)->sent_s, y = ((const struct bench_call *)b)->sent_s;
  return (x > y) - (x < y);
}

/* Merges the clients' calls into log, in send order. */
static void fill_call_log(struct bench_call_log *log, const struct client *clients, int n,
                          size_t n_lat) {
  log->calls = malloc((n_lat ? n_lat : 1) * sizeof *log->calls);
  log->n = 0;
  for (int i = 0; i < n; i++)
    for (size_t j = 0; j < clients[i].n_lat; j++)
      log->calls[log->n++] = (struct bench_call){clients[i].sent[j], clients[i].lat[j]};
  qsort(log->calls, log->n, sizeof *log->calls, by_send_time);
}

double bench_grpc_ingest_rate(struct ana_client_channel *channel,
                              const struct bench_grpc_load *load, double *p50_ms, double *p99_ms) {
  int n = load->clients;
  struct client *clients = calloc((size_t)n, sizeof *clients);
  pthread_t *t = calloc((size_t)n, sizeof *t);
  bool want_latency = p50_ms || p99_ms || load->log;
  long events = 0, errors = 0;
  size_t n_lat = 0;

  double start = bench_now_s();
  for (int i = 0; i < n; i++) {
    /* Paced clients take turns (client i sends i/n of an interval after
     * client 0), so the offered load arrives evenly rather than in bursts
     * of `clients` calls at once. */
    clients[i] = (struct client){.load = load,
                                 .channel = channel,
                                 .until = start + load->seconds,
                                 .first = start + load->interval * i / n,
                                 .index = i};
    if (want_latency)
      clients[i].lat = malloc(LATENCY_CAP * sizeof(double));
    if (load->log)
      clients[i].sent = malloc(LATENCY_CAP * sizeof(double));
    pthread_create(&t[i], NULL, load->stream ? stream_client : unary_client, &clients[i]);
  }
  for (int i = 0; i < n; i++) {
    pthread_join(t[i], NULL);
    events += clients[i].events;
    errors += clients[i].errors;
    n_lat += clients[i].n_lat;
  }
  double elapsed = bench_now_s() - start;
  if (load->log)
    fill_call_log(load->log, clients, n, n_lat);
  if (want_latency) {
    double *all = malloc((n_lat ? n_lat : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
      memcpy(all + k, clients[i].lat, clients[i].n_lat * sizeof *all);
      k += clients[i].n_lat;
      free(clients[i].lat);
      free(clients[i].sent);
    }
    if (p50_ms)
      *p50_ms = bench_percentile(all, n_lat, 50);
    if (p99_ms)
      *p99_ms = bench_percentile(all, n_lat, 99);
    free(all);
  }
  if (errors)
    fprintf(stderr, "bench: %ld failed gRPC calls\n", errors);
  free(clients);
  free(t);
  return (double)events / elapsed;
}
