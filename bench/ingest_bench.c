/* Ingest and search benchmark. Everything is measured in one run on this
 * machine and reported as ratios against baselines measured alongside:
 *   - raw SQLite inserts on the same schema, indexes and synchronous=FULL,
 *     with the same batch sizes (the ceiling for durable ingest);
 *   - fdatasync latency of this disk (the floor for an acknowledgement);
 * against analyticsd over gRPC: unary calls, batches of 100 and 1,000, the
 * bidirectional stream; ack latency at half the peak rate; search p99 over
 * a large store.
 *
 * usage: ingest_bench --server PATH [--seconds S] [--search-events N] [--out FILE]
 *        ingest_bench --server PATH --only latency [--rate CALLS_PER_S] [--rounds N]
 *                     [--warmup S]
 *        ingest_bench --server PATH --only throughput [--seconds S]
 * (--only latency measures fdatasync and the ack latency alone, printed with
 * the server's own histograms, and --only throughput the gRPC ingest rates
 * alone; neither is written to the results file: they are for working on
 * the commit path.) */
#include "ana_client_stubs.h"
#include "ana_local_db.h"
#include "ana_store.h"
#include "bench_common.h"
#include "results_file.h"
#include "ana_clock.h"
#include "ana_timestamp.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double seconds_per_run = 5.0;
static long search_events = 10000000;
static const char *server_path;
static const char *out_path = "bench/RESULTS.md";
static const char *only;
static double only_rate;

/* The ack latency is measured in rounds, each on a fresh server right after
 * its own fdatasync baseline, and the round with the median ratio is
 * reported next to the others' ratios: on this shared VM both figures move
 * from minute to minute (fdatasync p99 from 0.15 to 0.8 ms within an hour),
 * so a single round says as much about the minute as about the server. */
static int latency_rounds = 3;
#define MAX_ROUNDS 9

/* Each round first offers the same load for this long, measured apart: a
 * fresh server's WAL file grows for its first WAL_CHECKPOINT_MB, and a
 * commit appending to a growing file waits for the file's size to be synced
 * too (here about 0.27 against 0.16 ms p50 for an overwrite); after the
 * first checkpoint the WAL is overwritten in place. The rounds measure that
 * steady state; the warm-up's own p99 is printed beside it. */
static double warmup_seconds = 2.0;

/* ------------------------------------------------------------------ */
/* baselines */

static double fdatasync_p50, fdatasync_p99;

#define STALL_PROBE_SECONDS 2.0

/* 2,000 samples, so that the p99 rests on 20 of them rather than 5. */
#define FDATASYNC_SAMPLES 2000

static void measure_fdatasync(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/fsync-probe", dir);
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
  char block[4096];
  memset(block, 'x', sizeof block);
  static double lat[FDATASYNC_SAMPLES];
  int n = 0;
  for (; n < FDATASYNC_SAMPLES; n++) {
    if (pwrite(fd, block, sizeof block, (off_t)(n % 64) * 4096) < 0)
      break;
    double t = bench_now_s();
    fdatasync(fd);
    lat[n] = (bench_now_s() - t) * 1e3;
  }
  close(fd);
  unlink(path);
  fdatasync_p50 = bench_percentile(lat, (size_t)n, 50);
  fdatasync_p99 = bench_percentile(lat, (size_t)n, 99);
}

/* How often this machine takes a CPU away from a running thread: one thread
 * pinned to each CPU spins on the clock for `seconds`, with nothing else
 * running, and counts the gaps between two readings over 1 ms (a shared
 * VM's host running something else on that CPU). Any request in flight on
 * a stalled CPU waits as long, whatever the server does, so these stalls
 * bound the ack latency's tail from below. */
struct cpu_stalls {
  int over_1ms;
  double longest_ms;
};

struct stall_probe {
  int cpu;
  double until;
  struct cpu_stalls found;
};

static void *spin_on_cpu(void *arg) {
  struct stall_probe *p = arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(p->cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  double last = bench_now_s();
  while (last < p->until) {
    double t = bench_now_s(), gap_ms = (t - last) * 1e3;
    if (gap_ms > 1)
      p->found.over_1ms++;
    if (gap_ms > p->found.longest_ms)
      p->found.longest_ms = gap_ms;
    last = t;
  }
  return NULL;
}

static struct cpu_stalls measure_cpu_stalls(double seconds) {
  enum { MAX_CPUS = 64 };
  int cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 1)
    cpus = 1;
  if (cpus > MAX_CPUS)
    cpus = MAX_CPUS;
  struct stall_probe probes[MAX_CPUS];
  pthread_t threads[MAX_CPUS];
  double until = bench_now_s() + seconds;
  for (int i = 0; i < cpus; i++) {
    probes[i] = (struct stall_probe){.cpu = i, .until = until};
    pthread_create(&threads[i], NULL, spin_on_cpu, &probes[i]);
  }
  struct cpu_stalls all = {0};
  for (int i = 0; i < cpus; i++) {
    pthread_join(threads[i], NULL);
    all.over_1ms += probes[i].found.over_1ms;
    if (probes[i].found.longest_ms > all.longest_ms)
      all.longest_ms = probes[i].found.longest_ms;
  }
  return all;
}

/* Inserts `total` events in transactions of `batch`, straight into the
 * local database (its deduplication keys and spool, as the committer does,
 * without the server around it), as fast as SQLite can; returns events per
 * second. */
static double raw_insert_rate(const char *dir, int batch, long total, long id_base) {
  struct ana_error err;
  struct ana_local_db *db = ana_local_db_open(dir, &err);
  if (!db) {
    fprintf(stderr, "bench: %s\n", err.message);
    exit(1);
  }
  static const char props[] = "{\"campaignId\":\"123\",\"groupId\":\"456\",\"messageType\":"
                              "\"text\",\"charactersCount\":150}";
  /* The payload is a real serialized event, as the server stores it, so
   * searches over this store read what they would read in production. */
  static const char *const keys[] = {"campaignId", "groupId", "messageType", "charactersCount"};
  static const char *const strs[] = {"123", "456", "text", NULL};
  Google__Protobuf__Struct__FieldsEntry fe[4], *fep[4];
  Google__Protobuf__Value fv[4];
  Google__Protobuf__Struct pstruct = GOOGLE__PROTOBUF__STRUCT__INIT;
  for (int i = 0; i < 4; i++) {
    google__protobuf__struct__fields_entry__init(&fe[i]);
    google__protobuf__value__init(&fv[i]);
    fe[i].key = (char *)keys[i];
    if (strs[i]) {
      fv[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
      fv[i].string_value = (char *)strs[i];
    } else {
      fv[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
      fv[i].number_value = 150;
    }
    fe[i].value = &fv[i];
    fep[i] = &fe[i];
  }
  pstruct.n_fields = 4;
  pstruct.fields = fep;
  const char *names[] = {"message_sent", "message_delivered", "message_read", "link_clicked"};
  int64_t now_ms = ana_clock_wall_ms() / 1000 * 1000;
  double start = bench_now_s();
  struct raw_event {
    char id[48], text[160];
    uint8_t payload[512];
    struct ana_event_record r;
  } *evs = calloc((size_t)batch, sizeof *evs);
  struct ana_event_record *recs = calloc((size_t)batch, sizeof *recs);
  if (!evs || !recs) {
    fprintf(stderr, "bench: out of memory\n");
    exit(1);
  }
  for (long done = 0; done < total;) {
    ana_local_db_begin(db, &err);
    int k = 0;
    for (; k < batch && done < total; k++, done++) {
      char *id = evs[k].id, *text = evs[k].text;
      uint8_t *payload = evs[k].payload;
      long n = id_base + done;
      snprintf(id, sizeof evs[k].id, "raw-%ld", n);
      const char *name = names[n % 4];
      snprintf(text, sizeof evs[k].text, "%s message 123 456 text 150 w%ld", name, n % 100000);
      int64_t ts = now_ms - (n % (30L * 86400)) * 1000;
      Analytics__V1__Event e = ANALYTICS__V1__EVENT__INIT;
      Google__Protobuf__Timestamp ets = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
      Google__Protobuf__Timestamp rts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
      ana_timestamp_set(&ets, ts);
      ana_timestamp_set(&rts, now_ms);
      e.event_id = id;
      e.account_id = "default";
      e.session_id = "s";
      e.event_type = "message";
      e.event_name = (char *)name;
      e.timestamp = &ets;
      e.received_at = &rts;
      e.properties = &pstruct;
      size_t payload_len = analytics__v1__event__pack(&e, payload);
      recs[k] = (struct ana_event_record){
          .account_id = "default",
          .event_id = id,
          .session_id = "s",
          .event_type = "message",
          .event_name = name,
          .timestamp_ms = ts,
          .received_at_ms = now_ms,
          .expires_at_ms = ts + 90LL * 86400000,
          .properties_json = props,
          .search_text = text,
          .payload = payload,
          .payload_len = payload_len,
      };
    }
    if (ana_local_dedupe_claim(db, recs, (size_t)k, &err) < 0 ||
        ana_local_spool_append(db, recs, (size_t)k, &err) < 0 ||
        ana_local_db_commit(db, &err) < 0) {
      fprintf(stderr, "bench: %s\n", err.message);
      exit(1);
    }
  }
  free(evs);
  free(recs);
  ana_local_db_close(db); /* the staged events moved into events: part of the insert */
  return (double)total / (bench_now_s() - start);
}

/* Builds the search index of a store filled by raw_insert_rate, as the
 * server does (the embedded search index, its thread and batches), waiting
 * until it has every event; returns events per second. */
static double build_text_index(const char *dir, long events) {
  struct ana_error err;
  const struct ana_search_index_ops *ops = ana_store_search_backend("sqlite");
  struct ana_local_db *db = ana_local_db_open(dir, &err);
  uint64_t last = 0;
  if (db && ana_local_spool_last_seq(db, &last, &err) < 0)
    last = 0;
  void *index = db ? ops->open(db, &err) : NULL;
  double start = bench_now_s();
  if (!index || ops->wait(index, last, 3600 * 1000, &err) < 0) {
    fprintf(stderr, "bench: %s\n", err.message);
    exit(1);
  }
  double rate = (double)events / (bench_now_s() - start);
  ops->close(index);
  ana_local_db_close(db);
  return rate;
}

/* Size of a database file in MB, 0 when absent. Its WAL is left out: the
 * last close copied it into the file, which keeps it only as space to
 * reuse. */
static double file_mb(const char *dir, const char *name) {
  char path[512];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0;
}

/* Every run leaves nothing behind (a latency round's store alone is a few
 * hundred MB). Returns the exit status. */
static int remove_dir(const char *dir) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* the server */

static struct bench_proc server;
static struct ana_client_channel *channel;

/* analyticsd on data_dir, and `channel` to it. */
static void start_server(const char *data_dir) {
  server = bench_server_start(server_path, data_dir, NULL, NULL);
  channel = bench_channel_create(&server);
}

static void stop_server(void) {
  ana_client_channel_destroy(channel);
  channel = NULL;
  bench_proc_stop(&server);
}

/* The server's last commit sequence number and how far its free-text
 * index has come (from /metrics); false when they cannot be read. */
static bool read_index_progress(uint64_t *committed, uint64_t *indexed) {
  char cmd[160];
  snprintf(cmd, sizeof cmd, "curl -s http://127.0.0.1:%d/metrics", server.port);
  FILE *f = popen(cmd, "r");
  if (!f)
    return false;
  char line[512];
  int found = 0;
  unsigned long long v;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "ana_ingest_last_commit_sequence %llu", &v) == 1) {
      *committed = v;
      found |= 1;
    } else if (sscanf(line, "ana_search_index_sequence %llu", &v) == 1) {
      *indexed = v;
      found |= 2;
    }
  }
  return pclose(f) == 0 && found == 3;
}

/* How far the free-text index is behind the commits when the load stops
 * (events), and how long it then takes to reach them (ms, from the first
 * reading, polled every 10 ms; 0 when it was not behind). Negative when the
 * metrics cannot be read or it never catches up within 60 s. */
static void measure_index_lag(long *behind, double *catch_up_ms) {
  uint64_t committed = 0, indexed = 0;
  *behind = -1;
  *catch_up_ms = -1;
  if (!read_index_progress(&committed, &indexed))
    return;
  *behind = (long)(committed - indexed);
  double start = bench_now_s();
  while (indexed < committed && bench_now_s() - start < 60) {
    usleep(10000);
    if (!read_index_progress(&committed, &indexed))
      return;
  }
  if (indexed >= committed)
    *catch_up_ms = (bench_now_s() - start) * 1e3;
}

struct latency_round {
  double achieved, p50, p99, fdatasync_p50, fdatasync_p99, warmup_p99;
  double health_p50, health_p99; /* the transport alone: no event, no commit */
  struct cpu_stalls stalls;      /* measured just before the round */
  double burst_share;            /* of the calls at or over the p99: see slow_in_bursts */
  double health_burst_share;
};

/* A pause of the whole machine or of the store (a stalled CPU, a
 * checkpoint's writes ahead of a commit's fsync) makes every call in flight
 * slow at once; a call slowed on its own path (the transport, one slow
 * fsync) is slow alone. This tells them apart: the share of the calls at or
 * over the p99 that were sent within BURST_GAP_S of the one before them
 * at or over it, in runs of at least BURST_MIN_CALLS. At 1% slow calls
 * spread at random, a run of 5 within 5 ms at 5,000 calls/s would be rare
 * (about 1 in 10,000). */
#define BURST_GAP_S 0.005
#define BURST_MIN_CALLS 5

static double slow_in_bursts(const struct bench_call_log *log, double p99) {
  size_t slow = 0, in_bursts = 0, run = 0;
  double last_sent = -1;
  for (size_t i = 0; i < log->n; i++) {
    const struct bench_call *c = &log->calls[i];
    if (c->ms < p99)
      continue;
    slow++;
    if (run > 0 && c->sent_s - last_sent > BURST_GAP_S) {
      if (run >= BURST_MIN_CALLS)
        in_bursts += run;
      run = 0;
    }
    run++;
    last_sent = c->sent_s;
  }
  if (run >= BURST_MIN_CALLS)
    in_bursts += run;
  return slow ? (double)in_bursts / (double)slow : 0;
}

static double round_ratio(const struct latency_round *r) {
  return r->p99 / r->fdatasync_p99;
}

static int by_ratio(const void *a, const void *b) {
  double x = round_ratio(a), y = round_ratio(b);
  return (x > y) - (x < y);
}

/* Runs `clients` clients for `seconds`; returns events/s. */
static double run_load_for(double seconds, int clients, int batch, bool stream, double interval,
                           double *p50, double *p99) {
  struct bench_grpc_load load = {.clients = clients,
                                 .batch = batch,
                                 .stream = stream,
                                 .seconds = seconds,
                                 .interval = interval};
  return bench_grpc_ingest_rate(channel, &load, p50, p99);
}

/* Runs `clients` clients for the configured time; returns events/s. */
static double run_load(int clients, int batch, bool stream, double interval, double *p50,
                       double *p99) {
  return run_load_for(seconds_per_run, clients, batch, stream, interval, p50, p99);
}

/* 8 paced clients offering `rate` calls/s (batch as in bench_grpc_load)
 * for the configured time; returns events/s and the calls' p50, p99 and
 * burst share. */
static double paced_run(int batch, double rate, double *p50, double *p99, double *burst_share) {
  struct bench_call_log log = {0};
  struct bench_grpc_load load = {
      .clients = 8, .batch = batch, .seconds = seconds_per_run, .interval = 8 / rate, .log = &log};
  double achieved = bench_grpc_ingest_rate(channel, &load, p50, p99);
  *burst_share = slow_in_bursts(&log, *p99);
  bench_call_log_free(&log);
  return achieved;
}

/* One round: fdatasync, then 8 paced clients offering `rate` unary calls/s
 * to a fresh server on its own directory under `dir`, first for the
 * warm-up, then measured, then as many health checks. With `verbose`, the
 * server's own histograms of the round are printed too. */
static struct latency_round latency_round(const char *dir, int round, double rate, bool verbose) {
  static int rounds_started; /* every round gets a directory of its own */
  struct latency_round r = {0};
  char d[320];
  snprintf(d, sizeof d, "%s/latency-%d", dir, rounds_started++);
  mkdir(d, 0700);
  r.stalls = measure_cpu_stalls(STALL_PROBE_SECONDS);
  measure_fdatasync(dir);
  r.fdatasync_p50 = fdatasync_p50;
  r.fdatasync_p99 = fdatasync_p99;
  start_server(d);
  run_load_for(warmup_seconds, 8, 1, false, 8 / rate, NULL, &r.warmup_p99);
  r.achieved = paced_run(1, rate, &r.p50, &r.p99, &r.burst_share);
  paced_run(0, rate, &r.health_p50, &r.health_p99, &r.health_burst_share);
  if (verbose) {
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "curl -s http://127.0.0.1:%d/metrics | grep -E "
             "'^ana_(ingest_(commit_duration|queue_wait)_seconds|rpc_duration_seconds.*TrackEvent"
             "\\b|store_)'",
             server.port);
    if (system(cmd) != 0)
      fprintf(stderr, "bench: could not read the server's metrics\n");
  }
  stop_server();
  printf("latency round %d: %.0f calls/s offered (%.0f achieved): ack p50 %.2f ms, p99 %.2f ms; "
         "fdatasync p50 %.3f ms, p99 %.3f ms; ratio p99 %.1f (warm-up p99 %.2f ms; health "
         "check p50 %.2f ms, p99 %.2f ms; CPU stalls over 1 ms before it: %d in %.0f s, the "
         "longest %.1f ms; calls at or over the p99 that came in bursts: %.0f%% of the acks, "
         "%.0f%% of the health checks)\n",
         round + 1, rate, r.achieved, r.p50, r.p99, r.fdatasync_p50, r.fdatasync_p99,
         round_ratio(&r), r.warmup_p99, r.health_p50, r.health_p99, r.stalls.over_1ms,
         STALL_PROBE_SECONDS, r.stalls.longest_ms, 100 * r.burst_share, 100 * r.health_burst_share);
  return r;
}

/* Runs the rounds; returns the median one (by ratio) and writes every
 * round's ratio, in the order measured, to `ratios`. */
static struct latency_round latency_rounds_run(const char *dir, double rate, bool verbose,
                                               char *ratios, size_t size) {
  struct latency_round rounds[MAX_ROUNDS], sorted[MAX_ROUNDS];
  size_t n = 0;
  ratios[0] = '\0';
  for (int i = 0; i < latency_rounds; i++) {
    rounds[i] = sorted[i] = latency_round(dir, i, rate, verbose);
    n += (size_t)snprintf(ratios + n, n < size ? size - n : 0, "%s%.1f", i ? ", " : "",
                          round_ratio(&rounds[i]));
  }
  qsort(sorted, (size_t)latency_rounds, sizeof sorted[0], by_ratio);
  return sorted[latency_rounds / 2];
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
    double t = bench_now_s();
    if (ana_stub_event_service_search_events(channel, &req, &resp, NULL, &err) < 0)
      fprintf(stderr, "bench: search failed: %s\n", err.message);
    lat[i] = (bench_now_s() - t) * 1e3;
    if (resp)
      protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  double p = bench_percentile(lat, (size_t)runs, 99);
  *p50 = bench_percentile(lat, (size_t)runs, 50);
  free(lat);
  return p;
}

int main(int argc, char **argv) {
  bench_pin_client();
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
      server_path = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds_per_run = atof(argv[++i]);
    else if (strcmp(argv[i], "--search-events") == 0 && i + 1 < argc)
      search_events = atol(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out_path = argv[++i];
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
      only = argv[++i];
    else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
      only_rate = atof(argv[++i]);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      latency_rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
      warmup_seconds = atof(argv[++i]);
    else {
      fprintf(stderr,
              "usage: ingest_bench --server PATH [--seconds S] [--search-events N] [--out F]\n");
      return 2;
    }
  }
  if (!server_path)
    return 2;
  if (latency_rounds < 1 || latency_rounds > MAX_ROUNDS) {
    fprintf(stderr, "ingest_bench: --rounds takes 1 to %d\n", MAX_ROUNDS);
    return 2;
  }
  if (warmup_seconds < 0) {
    fprintf(stderr, "ingest_bench: --warmup takes seconds >= 0\n");
    return 2;
  }
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

  if (only && strcmp(only, "latency") == 0) {
    double peak = 0;
    if (only_rate <= 0) {
      start_server(d4);
      peak = run_load(16, 1, false, 0, NULL, NULL);
      stop_server();
      only_rate = peak / 2;
    }
    char ratios[128];
    struct latency_round m = latency_rounds_run(dir, only_rate, true, ratios, sizeof ratios);
    printf("unary peak %.0f calls/s; median of %d rounds (ratios %s): at %.0f offered (%.0f "
           "achieved): ack p50 %.2f ms, p99 %.2f ms; fdatasync p50 %.3f ms, p99 %.3f ms; ratio "
           "p99 %.1f\n",
           peak, latency_rounds, ratios, only_rate, m.achieved, m.p50, m.p99, m.fdatasync_p50,
           m.fdatasync_p99, round_ratio(&m));
    return remove_dir(dir);
  }
  if (only && strcmp(only, "throughput") == 0) {
    start_server(d2);
    double unary = run_load(16, 1, false, 0, NULL, NULL);
    double b100 = run_load(4, 100, false, 0, NULL, NULL);
    double s100 = run_load(2, 100, true, 0, NULL, NULL);
    long behind;
    double catch_up_ms;
    measure_index_lag(&behind, &catch_up_ms);
    stop_server();
    printf("unary (16 clients) %.0f ev/s; batches of 100 (4 clients) %.0f ev/s; stream, batches "
           "of 100 (2 streams) %.0f ev/s; free-text index %ld events behind at the end, caught "
           "up in %.0f ms\n",
           unary, b100, s100, behind, catch_up_ms);
    return remove_dir(dir);
  }
  printf("raw SQLite inserts...\n");
  double raw1 = raw_insert_rate(d1, 1, 2000, 0);
  double raw100 = raw_insert_rate(d1, 100, 100000, 1000000);
  double raw1000 = raw_insert_rate(d1, 1000, 300000, 2000000);

  start_server(d2);
  printf("gRPC ingest...\n");
  double p50u, p99u, p50b, p99b;
  double unary = run_load(16, 1, false, 0, &p50u, &p99u);
  double b100 = run_load(4, 100, false, 0, &p50b, &p99b);
  double b1000 = run_load(2, 1000, false, 0, NULL, NULL);
  double s100 = run_load(2, 100, true, 0, NULL, NULL);
  double s1000 = run_load(2, 1000, true, 0, NULL, NULL);
  long index_behind;
  double index_catch_up_ms;
  measure_index_lag(&index_behind, &index_catch_up_ms);
  stop_server();

  /* Ack latency at half the peak rate of unary calls, paced (open loop),
   * each round right after its baseline. */
  printf("ack latency...\n");
  double rate = unary / 2;
  char ratios[128];
  struct latency_round lat = latency_rounds_run(dir, rate, false, ratios, sizeof ratios);
  /* The same at a tenth of the peak: how much of the tail the load makes. */
  double low_rate = unary / 10;
  char low_ratios[128];
  struct latency_round low =
      latency_rounds_run(dir, low_rate, false, low_ratios, sizeof low_ratios);

  printf("filling %ld events for search...\n", search_events);
  double fill = raw_insert_rate(d3, 10000, search_events, 10000000);
  double index_rate = build_text_index(d3, search_events);
  double events_mb = file_mb(d3, "analytics.db"), index_mb = file_mb(d3, "analytics-text.db");
  start_server(d3);
  double n50, t50;
  search_p99("message_read", NULL, 20, &n50); /* warm the cache */
  double n99 = search_p99("message_read", NULL, 300, &n50);
  double t99 = search_p99(NULL, "w", 300, &t50);
  stop_server();

  char mach[512], section[12288];
  bench_machine(mach, sizeof mach);
  size_t n = 0;
#define OUT(...)                                                                                   \
  n += (size_t)snprintf(section + n, n < sizeof section ? sizeof section - n : 0, __VA_ARGS__)
  OUT("## Ingest and search\n\n");
  const char *server_cpus = getenv("BENCH_SERVER_CPUS");
  const char *client_cpus = getenv("BENCH_CLIENT_CPUS");
  OUT("Machine: %s. Command: `make bench` "
      "(`build/bench/ingest_bench --server build/server/analyticsd --seconds %.0f "
      "--search-events %ld`). ",
      mach, seconds_per_run, search_events);
  if (server_cpus && client_cpus)
    OUT("analyticsd pinned to CPU %s, the load generator to CPU %s.\n\n", server_cpus, client_cpus);
  else
    OUT("Client and server share the machine's CPUs.\n\n");
  OUT("Baselines measured in the same run: raw SQLite inserts into the same tables, "
      "indexes with WAL and synchronous=FULL (the free-text index is built off the commit by its "
      "own thread, in the server as here), one transaction per batch; "
      "fdatasync of a 4 KiB write on the same disk. The ack latency is measured in %d rounds "
      "of %.0f s, each on a fresh server right after its own fdatasync baseline (2,000 "
      "samples) and %.0f s of the same load, measured apart (the warm-up: until the server's "
      "first checkpoint its WAL file grows, and a commit appending to a growing file also "
      "waits for the file's new size to be synced; afterwards the WAL is overwritten in "
      "place); the round with the median p99 ratio is shown, with every round's ratio. "
      "Latency clients: 8 threads taking turns at a fixed pace (open loop).\n\n",
      latency_rounds, seconds_per_run, warmup_seconds);
  OUT("| Measure | Result | Baseline | Ratio | Target |\n|---|---|---|---|---|\n");
  OUT("| raw insert, batch 1 / 100 / 1,000 | %.0f / %.0f / %.0f ev/s | | | |\n", raw1, raw100,
      raw1000);
  OUT("| gRPC TrackEvent (unary, 16 clients) | %.0f ev/s | raw batch 100: %.0f | %.2f | |\n", unary,
      raw100, unary / raw100);
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
  OUT("| ack latency p50 at half the unary peak (%.0f calls/s offered, %.0f achieved; the median "
      "of %d rounds) | %.2f ms | fdatasync p50 %.2f ms | %.1f | |\n",
      rate, lat.achieved, latency_rounds, lat.p50, lat.fdatasync_p50, lat.p50 / lat.fdatasync_p50);
  OUT("| ack latency p99 at half the unary peak (p99 ratios of the rounds: %s) | %.2f ms | "
      "fdatasync p99 %.2f ms | %.1f | <= 10 |\n",
      ratios, lat.p99, lat.fdatasync_p99, round_ratio(&lat));
  OUT("| calls at or over that p99 that came in bursts (%d or more within %.0f ms of each other: "
      "a pause of the whole machine or of the store, not of one call's path) | %.0f%% | | | |\n",
      BURST_MIN_CALLS, BURST_GAP_S * 1e3, 100 * lat.burst_share);
  OUT("| ack latency p99 during that round's warm-up (a fresh server, WAL file growing) | "
      "%.2f ms | fdatasync p99 %.2f ms | %.1f | |\n",
      lat.warmup_p99, lat.fdatasync_p99, lat.warmup_p99 / lat.fdatasync_p99);
  OUT("| gRPC health check p50 / p99 at the same pace, same round (the transport alone: no "
      "event, no commit; %.0f%% of its calls at or over its p99 in bursts) | %.2f / %.2f ms | "
      "fdatasync p99 %.2f ms | %.1f | |\n",
      100 * lat.health_burst_share, lat.health_p50, lat.health_p99, lat.fdatasync_p99,
      lat.health_p99 / lat.fdatasync_p99);
  OUT("| CPU stalls before that round: gaps over 1 ms seen by a thread spinning on each CPU for "
      "%.0f s, nothing else running (a shared VM's host taking the CPU) | %d, the longest "
      "%.1f ms | | | |\n",
      STALL_PROBE_SECONDS, lat.stalls.over_1ms, lat.stalls.longest_ms);
  OUT("| ack latency p50 / p99 at a tenth of the unary peak (%.0f calls/s offered; p99 ratios of "
      "the rounds: %s) | %.2f / %.2f ms | fdatasync p99 %.2f ms | %.1f | |\n",
      low_rate, low_ratios, low.p50, low.p99, low.fdatasync_p99, round_ratio(&low));
  OUT("| unary TrackEvent latency p50 / p99 at peak | %.2f / %.2f ms | | | |\n", p50u, p99u);
  OUT("| free-text index behind the commits when the ingest runs above stop (after %.0f s at "
      "their peak rates), and the time it then took to catch up | %ld events, %.0f ms | | | |\n",
      5 * seconds_per_run, index_behind, index_catch_up_ms);
  OUT("| search p50 / p99, eventName filter, %ld events | %.2f / %.2f ms | | | p99 < 100 ms |\n",
      search_events, n50, n99);
  OUT("| search p50 / p99, free-text term, %ld events | %.2f / %.2f ms | | | p99 < 100 ms |\n",
      search_events, t50, t99);
  OUT("\nThe search store was filled at %.0f ev/s (raw, batches of 10,000), and its free-text "
      "index built at %.0f ev/s (as the server's index thread builds it, in batches of 1,000). "
      "On disk: events %.0f MB, free-text index %.0f MB.\n",
      fill, index_rate, events_mb, index_mb);
#undef OUT
  fputs(section, stdout);
  bench_results_replace(out_path, "## Ingest and search", section);
  return remove_dir(dir);
}
