/* Ingest and search benchmark. Everything is measured in one run on this
 * machine and reported as ratios against baselines measured alongside:
 *   - raw SQLite inserts on the same schema, indexes and synchronous=FULL,
 *     with the same batch sizes (the ceiling for durable ingest);
 *   - fdatasync latency of this disk (the floor for an acknowledgement);
 * against analyticsd over gRPC: unary calls, batches of 100 and 1,000, the
 * bidirectional stream; ack latency at half the peak rate; search p99 over
 * a large store.
 *
 * usage: ingest_bench --server PATH [--seconds S] [--search-events N] [--out FILE] */
#include "ana_client_stubs.h"
#include "ana_store.h"
#include "results_file.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

static double seconds_per_run = 5.0;
static long search_events = 10000000;
static const char *server_path;
static const char *out_path = "bench/RESULTS.md";

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p) {
  if (n == 0)
    return NAN;
  qsort(v, n, sizeof *v, cmp_double);
  size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

/* ------------------------------------------------------------------ */
/* baselines */

static double fdatasync_p50, fdatasync_p99;

static void measure_fdatasync(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/fsync-probe", dir);
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
  char block[4096];
  memset(block, 'x', sizeof block);
  double lat[500];
  for (int i = 0; i < 500; i++) {
    if (pwrite(fd, block, sizeof block, (off_t)(i % 64) * 4096) < 0)
      break;
    double t = now_s();
    fdatasync(fd);
    lat[i] = (now_s() - t) * 1e3;
  }
  close(fd);
  unlink(path);
  fdatasync_p50 = percentile(lat, 500, 50);
  fdatasync_p99 = percentile(lat, 500, 99);
}

/* Inserts `total` events in transactions of `batch`, straight into the
 * local database's tables (same schema, indexes, pragmas), as fast as
 * SQLite can; returns events per second. */
static double raw_insert_rate(const char *dir, int batch, long total, long id_base) {
  struct ana_error err;
  struct ana_local_db *db = ana_local_db_open(dir, &err);
  if (!db) {
    fprintf(stderr, "bench: %s\n", err.message);
    exit(1);
  }
  sqlite3 *w = ana_local_db_writer(db);
  sqlite3_stmt *key, *ev, *fts;
  sqlite3_prepare_v2(w, "INSERT INTO dedupe_keys VALUES (?, ?, ?) ON CONFLICT DO NOTHING", -1,
                     &key, NULL);
  sqlite3_prepare_v2(w,
                     "INSERT INTO events (account_id, event_id, session_id, event_type,"
                     " event_name, ts, received_at, properties, search_text, payload)"
                     " VALUES ('default', ?, 's', 'message', ?, ?, ?, ?, ?, ?)",
                     -1, &ev, NULL);
  sqlite3_prepare_v2(w, "INSERT INTO events_fts (rowid, search_text) VALUES (?, ?)", -1, &fts,
                     NULL);
  static const char props[] =
      "{\"campaignId\":\"123\",\"groupId\":\"456\",\"messageType\":\"text\",\"charactersCount\":150}";
  uint8_t payload[160];
  memset(payload, 0x20, sizeof payload);
  const char *names[] = {"message_sent", "message_delivered", "message_read", "link_clicked"};
  struct timespec rt;
  clock_gettime(CLOCK_REALTIME, &rt);
  int64_t now_ms = (int64_t)rt.tv_sec * 1000;
  double start = now_s();
  char id[48], text[160];
  for (long done = 0; done < total;) {
    ana_local_db_begin(db, &err);
    for (int i = 0; i < batch && done < total; i++, done++) {
      long n = id_base + done;
      snprintf(id, sizeof id, "raw-%ld", n);
      const char *name = names[n % 4];
      snprintf(text, sizeof text, "%s message 123 456 text 150 w%ld", name, n % 100000);
      int64_t ts = now_ms - (n % (30L * 86400)) * 1000;
      sqlite3_reset(key);
      sqlite3_bind_text(key, 1, "default", -1, SQLITE_STATIC);
      sqlite3_bind_text(key, 2, id, -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(key, 3, ts + 90LL * 86400000);
      sqlite3_step(key);
      sqlite3_reset(ev);
      sqlite3_bind_text(ev, 1, id, -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(ev, 2, name, -1, SQLITE_STATIC);
      sqlite3_bind_int64(ev, 3, ts);
      sqlite3_bind_int64(ev, 4, now_ms);
      sqlite3_bind_text(ev, 5, props, -1, SQLITE_STATIC);
      sqlite3_bind_text(ev, 6, text, -1, SQLITE_TRANSIENT);
      sqlite3_bind_blob(ev, 7, payload, sizeof payload, SQLITE_STATIC);
      sqlite3_step(ev);
      sqlite3_reset(fts);
      sqlite3_bind_int64(fts, 1, sqlite3_last_insert_rowid(w));
      sqlite3_bind_text(fts, 2, text, -1, SQLITE_TRANSIENT);
      sqlite3_step(fts);
    }
    if (ana_local_db_commit(db, &err) < 0) {
      fprintf(stderr, "bench: %s\n", err.message);
      exit(1);
    }
  }
  double rate = (double)total / (now_s() - start);
  sqlite3_finalize(key);
  sqlite3_finalize(ev);
  sqlite3_finalize(fts);
  ana_local_db_close(db);
  return rate;
}

/* ------------------------------------------------------------------ */
/* the server */

static pid_t server_pid;
static char target[64];

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  bind(s, (struct sockaddr *)&a, sizeof a);
  getsockname(s, (struct sockaddr *)&a, &len);
  int port = ntohs(a.sin_port);
  close(s);
  return port;
}

static void start_server(const char *data_dir) {
  int port = free_port();
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  fflush(stdout);
  server_pid = fork();
  if (server_pid == 0) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    setenv("GRPC_PORT", p, 1);
    setenv("GRPC_HOST", "127.0.0.1", 1);
    setenv("DATA_DIR", data_dir, 1);
    setenv("LOG_LEVEL", "warn", 1);
    setenv("RETENTION_DAYS", "90", 1);
    freopen("/dev/null", "w", stdout);
    execl(server_path, server_path, (char *)NULL);
    _exit(127);
  }
  struct ana_error err;
  struct ana_client_channel *ch = ana_client_channel_create(target, &err);
  for (int i = 0; i < 200; i++) {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    struct ana_call_options o = {.timeout_ms = 500};
    if (ana_stub_grpc__health__v1__health_check(ch, &req, &resp, &o, &err) == 0) {
      protobuf_c_message_free_unpacked(&resp->base, NULL);
      ana_client_channel_destroy(ch);
      return;
    }
    usleep(50000);
  }
  fprintf(stderr, "bench: analyticsd did not start\n");
  exit(1);
}

static void stop_server(void) {
  kill(server_pid, SIGTERM);
  waitpid(server_pid, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* load */

static atomic_long id_counter;
static struct ana_client_channel *channel;

static Analytics__V1__Event *make_events(size_t n, char (*ids)[32]) {
  static Google__Protobuf__Struct__FieldsEntry e[4];
  static Google__Protobuf__Struct__FieldsEntry *ep[4];
  static Google__Protobuf__Value v[4];
  static Google__Protobuf__Struct props;
  static int once;
  if (!once) {
    const char *keys[] = {"campaignId", "groupId", "messageType", "charactersCount"};
    const char *strs[] = {"123", "456", "text", NULL};
    google__protobuf__struct__init(&props);
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
    props.n_fields = 4;
    props.fields = ep;
    once = 1;
  }
  Analytics__V1__Event *evs = calloc(n, sizeof *evs);
  for (size_t i = 0; i < n; i++) {
    analytics__v1__event__init(&evs[i]);
    evs[i].event_type = "message";
    evs[i].event_name = "message_sent";
    snprintf(ids[i], 32, "b-%ld", atomic_fetch_add(&id_counter, 1));
    evs[i].event_id = ids[i];
    evs[i].properties = &props;
  }
  return evs;
}

struct load {
  int batch;     /* events per call; 1 = TrackEvent */
  bool stream;   /* IngestEvents */
  double until;
  double interval; /* >0: paced (open loop), seconds between calls per thread */
  long events;
  double *lat;
  size_t n_lat, cap_lat;
  int errors;
};

static void record_latency(struct load *l, double ms) {
  if (l->n_lat < l->cap_lat)
    l->lat[l->n_lat++] = ms;
}

static void *unary_worker(void *arg) {
  struct load *l = arg;
  char (*ids)[32] = calloc((size_t)l->batch, 32);
  double next = now_s();
  while (now_s() < l->until) {
    if (l->interval > 0) {
      double wait = next - now_s();
      if (wait > 0)
        usleep((useconds_t)(wait * 1e6));
      next += l->interval;
    }
    Analytics__V1__Event *evs = make_events((size_t)l->batch, ids);
    struct ana_error err;
    double t = now_s();
    int rc;
    if (l->batch == 1) {
      Analytics__V1__TrackEventRequest req = ANALYTICS__V1__TRACK_EVENT_REQUEST__INIT;
      Analytics__V1__TrackEventResponse *resp = NULL;
      req.event = &evs[0];
      rc = ana_stub_event_service_track_event(channel, &req, &resp, NULL, &err);
      if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    } else {
      Analytics__V1__Event **ptrs = calloc((size_t)l->batch, sizeof *ptrs);
      for (int i = 0; i < l->batch; i++)
        ptrs[i] = &evs[i];
      Analytics__V1__TrackEventsRequest req = ANALYTICS__V1__TRACK_EVENTS_REQUEST__INIT;
      Analytics__V1__TrackEventsResponse *resp = NULL;
      req.n_events = (size_t)l->batch;
      req.events = ptrs;
      rc = ana_stub_event_service_track_events(channel, &req, &resp, NULL, &err);
      if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
      free(ptrs);
    }
    record_latency(l, (now_s() - t) * 1e3);
    if (rc == 0)
      l->events += l->batch;
    else
      l->errors++;
    free(evs);
  }
  free(ids);
  return NULL;
}

struct stream_reader {
  struct ana_client_stream *s;
  long events;
};

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

static void *stream_worker(void *arg) {
  struct load *l = arg;
  struct ana_error err;
  struct ana_client_stream *s = ana_stub_event_service_ingest_events_open(channel, NULL, &err);
  if (!s) {
    l->errors++;
    return NULL;
  }
  struct stream_reader r = {s, 0};
  pthread_t reader;
  pthread_create(&reader, NULL, stream_read, &r);
  char (*ids)[32] = calloc((size_t)l->batch, 32);
  Analytics__V1__Event **ptrs = calloc((size_t)l->batch, sizeof *ptrs);
  while (now_s() < l->until) {
    Analytics__V1__Event *evs = make_events((size_t)l->batch, ids);
    for (int i = 0; i < l->batch; i++)
      ptrs[i] = &evs[i];
    Analytics__V1__IngestRequest req = ANALYTICS__V1__INGEST_REQUEST__INIT;
    req.batch_id = ids[0];
    req.n_events = (size_t)l->batch;
    req.events = ptrs;
    int rc = ana_stub_event_service_ingest_events_send(s, &req, &err);
    free(evs);
    if (rc < 0) {
      l->errors++;
      break;
    }
  }
  ana_client_stream_close_send(s, &err);
  pthread_join(reader, NULL);
  ana_client_stream_finish(s, &err);
  l->events += r.events;
  free(ids);
  free(ptrs);
  return NULL;
}

/* Runs `threads` clients for the configured time; returns events/s. */
static double run_load(int threads, int batch, bool stream, double interval, double *p50,
                       double *p99) {
  struct load *loads = calloc((size_t)threads, sizeof *loads);
  pthread_t *t = calloc((size_t)threads, sizeof *t);
  double start = now_s();
  for (int i = 0; i < threads; i++) {
    loads[i].batch = batch;
    loads[i].stream = stream;
    loads[i].until = start + seconds_per_run;
    loads[i].interval = interval;
    loads[i].cap_lat = 2000000;
    loads[i].lat = malloc(loads[i].cap_lat * sizeof(double));
    pthread_create(&t[i], NULL, stream ? stream_worker : unary_worker, &loads[i]);
  }
  long events = 0;
  size_t n_lat = 0;
  int errors = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    events += loads[i].events;
    n_lat += loads[i].n_lat;
    errors += loads[i].errors;
  }
  double elapsed = now_s() - start;
  double *all = malloc((n_lat ? n_lat : 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < threads; i++) {
    memcpy(all + k, loads[i].lat, loads[i].n_lat * sizeof *all);
    k += loads[i].n_lat;
    free(loads[i].lat);
  }
  if (p50)
    *p50 = percentile(all, n_lat, 50);
  if (p99)
    *p99 = percentile(all, n_lat, 99);
  if (errors)
    fprintf(stderr, "bench: %d failed calls\n", errors);
  free(all);
  free(loads);
  free(t);
  return (double)events / elapsed;
}

/* ------------------------------------------------------------------ */
/* search */

static double search_p99(const char *event_name, const char *text, int runs, double *p50) {
  double *lat = calloc((size_t)runs, sizeof *lat);
  for (int i = 0; i < runs; i++) {
    Analytics__V1__SearchEventsRequest req = ANALYTICS__V1__SEARCH_EVENTS_REQUEST__INIT;
    Analytics__V1__SearchEventsResponse *resp = NULL;
    char term[32];
    req.event_name = (char *)event_name;
    if (text) {
      snprintf(term, sizeof term, "%s%d", text, (i * 7919) % 100000);
      req.query = term;
    }
    req.page_size = 50;
    struct ana_error err;
    double t = now_s();
    if (ana_stub_event_service_search_events(channel, &req, &resp, NULL, &err) < 0)
      fprintf(stderr, "bench: search failed: %s\n", err.message);
    lat[i] = (now_s() - t) * 1e3;
    if (resp)
      protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  double p = percentile(lat, (size_t)runs, 99);
  *p50 = percentile(lat, (size_t)runs, 50);
  free(lat);
  return p;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
      server_path = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds_per_run = atof(argv[++i]);
    else if (strcmp(argv[i], "--search-events") == 0 && i + 1 < argc)
      search_events = atol(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out_path = argv[++i];
    else {
      fprintf(stderr,
              "usage: ingest_bench --server PATH [--seconds S] [--search-events N] [--out F]\n");
      return 2;
    }
  }
  if (!server_path)
    return 2;
  signal(SIGPIPE, SIG_IGN);
  char dir[] = "/tmp/ana-bench-XXXXXX";
  mkdtemp(dir);
  char d1[300], d2[300], d3[300], d4[300];
  snprintf(d1, sizeof d1, "%s/raw", dir);
  snprintf(d2, sizeof d2, "%s/grpc", dir);
  snprintf(d3, sizeof d3, "%s/search", dir);
  snprintf(d4, sizeof d4, "%s/latency", dir);
  mkdir(d1, 0700);
  mkdir(d2, 0700);
  mkdir(d3, 0700);
  mkdir(d4, 0700);

  printf("measuring fdatasync...\n");
  measure_fdatasync(dir);
  printf("raw SQLite inserts...\n");
  double raw1 = raw_insert_rate(d1, 1, 2000, 0);
  double raw100 = raw_insert_rate(d1, 100, 100000, 1000000);
  double raw1000 = raw_insert_rate(d1, 1000, 300000, 2000000);

  start_server(d2);
  struct ana_error err;
  channel = ana_client_channel_create(target, &err);
  printf("gRPC ingest...\n");
  double p50u, p99u, p50b, p99b;
  double unary = run_load(16, 1, false, 0, &p50u, &p99u);
  double b100 = run_load(4, 100, false, 0, &p50b, &p99b);
  double b1000 = run_load(2, 1000, false, 0, NULL, NULL);
  double s100 = run_load(2, 100, true, 0, NULL, NULL);
  double s1000 = run_load(2, 1000, true, 0, NULL, NULL);
  ana_client_channel_destroy(channel);
  stop_server();

  /* Ack latency at half the peak rate of unary calls, paced (open loop). */
  start_server(d4);
  channel = ana_client_channel_create(target, &err);
  int lat_threads = 8;
  double rate = unary / 2;
  double lp50, lp99;
  double achieved = run_load(lat_threads, 1, false, lat_threads / rate, &lp50, &lp99);
  ana_client_channel_destroy(channel);
  stop_server();

  printf("filling %ld events for search...\n", search_events);
  double fill = raw_insert_rate(d3, 10000, search_events, 10000000);
  start_server(d3);
  channel = ana_client_channel_create(target, &err);
  double n50, t50;
  search_p99("message_read", NULL, 20, &n50); /* warm the cache */
  double n99 = search_p99("message_read", NULL, 300, &n50);
  double t99 = search_p99(NULL, "w", 300, &t50);
  ana_client_channel_destroy(channel);
  stop_server();

  struct utsname u;
  uname(&u);
  char cpu[256] = "unknown";
  FILE *ci = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (ci && fgets(line, sizeof line, ci))
    if (strncmp(line, "model name", 10) == 0) {
      snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
      cpu[strcspn(cpu, "\n")] = '\0';
      break;
    }
  if (ci)
    fclose(ci);

  char section[8192];
  size_t n = 0;
#define OUT(...) n += (size_t)snprintf(section + n, n < sizeof section ? sizeof section - n : 0, __VA_ARGS__)
  OUT("## Ingest and search\n\n");
  OUT("Machine: %ld CPUs (%s), %s %s. Command: `make bench` "
      "(`build/bench/ingest_bench --server build/server/analyticsd --seconds %.0f "
      "--search-events %ld`). Client and server share the machine.\n\n",
      sysconf(_SC_NPROCESSORS_ONLN), cpu, u.sysname, u.release, seconds_per_run, search_events);
  OUT("Baselines measured in the same run: raw SQLite inserts into the same tables, "
      "indexes and FTS index with WAL and synchronous=FULL, one transaction per batch; "
      "fdatasync of a 4 KiB write on the same disk.\n\n");
  OUT("| Measure | Result | Baseline | Ratio | Target |\n|---|---|---|---|---|\n");
  OUT("| raw insert, batch 1 / 100 / 1,000 | %.0f / %.0f / %.0f ev/s | | | |\n", raw1, raw100,
      raw1000);
  OUT("| gRPC TrackEvent (unary, 16 clients) | %.0f ev/s | raw batch 100: %.0f | %.2f | |\n",
      unary, raw100, unary / raw100);
  OUT("| gRPC TrackEvents, batches of 100 (4 clients) | %.0f ev/s | raw batch 100: %.0f | %.2f | "
      ">= 0.50 |\n",
      b100, raw100, b100 / raw100);
  OUT("| gRPC TrackEvents, batches of 1,000 (2 clients) | %.0f ev/s | raw batch 1,000: %.0f | "
      "%.2f | >= 0.50 |\n",
      b1000, raw1000, b1000 / raw1000);
  OUT("| gRPC IngestEvents stream, batches of 100 (2 streams) | %.0f ev/s | raw batch 100: %.0f | "
      "%.2f | >= 0.50 |\n",
      s100, raw100, s100 / raw100);
  OUT("| gRPC IngestEvents stream, batches of 1,000 (2 streams) | %.0f ev/s | raw batch 1,000: "
      "%.0f | %.2f | >= 0.50 |\n",
      s1000, raw1000, s1000 / raw1000);
  OUT("| ack latency p50 at half the unary peak (%.0f calls/s offered, %.0f achieved) | %.2f ms | "
      "fdatasync p50 %.2f ms | %.1f | |\n",
      rate, achieved, lp50, fdatasync_p50, lp50 / fdatasync_p50);
  OUT("| ack latency p99 at half the unary peak | %.2f ms | fdatasync p99 %.2f ms | %.1f | <= 10 "
      "|\n",
      lp99, fdatasync_p99, lp99 / fdatasync_p99);
  OUT("| unary TrackEvent latency p50 / p99 at peak | %.2f / %.2f ms | | | |\n", p50u, p99u);
  OUT("| search p50 / p99, eventName filter, %ld events | %.2f / %.2f ms | | | p99 < 100 ms |\n",
      search_events, n50, n99);
  OUT("| search p50 / p99, free-text term, %ld events | %.2f / %.2f ms | | | p99 < 100 ms |\n",
      search_events, t50, t99);
  OUT("\nThe search store was filled at %.0f ev/s (raw, batches of 10,000).\n", fill);
#undef OUT
  fputs(section, stdout);
  bench_results_replace(out_path, "## Ingest and search", section);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}
