/* REST and WebSocket benchmark, measured in one run next to the gRPC ingest
 * figures of the same run (this machine, client and server on it):
 *   - REST ingest throughput: POST /api/events (one event per request) and
 *     POST /api/events/batch (100 per request) over concurrent keep-alive
 *     HTTP/1.1 connections (a small HTTP client on raw sockets), against the
 *     in-process bridge of analyticsd and against analytics-restbridge
 *     (remote mode, forwarding over gRPC);
 *   - gRPC TrackEvents (batches of 100) and the IngestEvents stream
 *     (batches of 100), the baselines of the ratios;
 *   - ingest -> WebSocket frame latency: 100 subscribers on
 *     /ws/analytics?includeEvents=true (libwebsockets clients: WS_CLIENT_THREADS
 *     contexts, each with its own service thread, sharing the 100
 *     connections) while 1,000 events/s are tracked over REST; each event
 *     carries its send time (CLOCK_REALTIME ns) as a property and latency is
 *     taken when a subscriber's frame is received.
 * Benchmarks never fail on timing: the targets are reported with the ratio.
 *
 * usage: rest_bench --server PATH [--restbridge PATH] [--seconds S] [--out FILE]
 * The section "## REST and WebSocket" of FILE (default bench/RESULTS.md) is
 * replaced (or appended); the rest of the file is kept. */
#include "ana_client_stubs.h"
#include "bench_common.h"
#include "results_file.h"
#include "ana_clock.h"

#include <errno.h>
#include <libwebsockets.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SECTION "## REST and WebSocket"
#define WS_SUBSCRIBERS 100
#define WS_RATE 1000    /* events per second tracked during the latency run */
#define WS_PRODUCERS 10 /* connections sharing that rate (open loop) */
/* Client threads the subscribers are spread over. One lws context reading
 * 100 connections x 1,000 frames/s parses every byte on one thread (about
 * half a CPU here): each event's 100 frames then wait in line behind each
 * other at the client, which the figure would charge to the server. 100
 * real subscribers read in parallel. */
#define WS_CLIENT_THREADS 4

static double seconds_per_run = 5.0;
static const char *server_path, *bridge_path;
static const char *out_path = "bench/RESULTS.md";
static const char *only; /* "ingest" or "ws": a partial run, printed, RESULTS.md untouched */
static char base_dir[] = "/tmp/ana-rest-bench-XXXXXX";

/* ------------------------------------------------------------------ */
/* processes: analyticsd and analytics-restbridge on free ports */

static int http_get_status(int port, const char *path);

/* Ready once the HTTP side answers: the REST and WebSocket figures use it. */
static bool http_healthy(const struct bench_proc *p, void *arg) {
  (void)arg;
  return http_get_status(p->port, "/health") == 200;
}

/* analyticsd with a fresh DATA_DIR named `name` under the base directory. */
static struct bench_proc start_server(const char *name) {
  char dir[512];

  snprintf(dir, sizeof dir, "%s/%s", base_dir, name);
  mkdir(dir, 0700);
  return bench_server_start(server_path, dir, http_healthy, NULL);
}

/* analytics-restbridge --upstream the server's gRPC port. */
static struct bench_proc start_bridge(const struct bench_proc *server) {
  struct bench_proc p = {.port = bench_free_port()};
  char port[16], upstream[64];

  snprintf(port, sizeof port, "%d", p.port);
  snprintf(upstream, sizeof upstream, "127.0.0.1:%d", server->grpc_port);
  const char *env[] = {"PORT", port, "LOG_LEVEL", "warn", NULL};
  char *argv[] = {(char *)bridge_path, "--upstream", upstream, NULL};
  p.pid = bench_spawn(bridge_path, argv, env);
  bench_wait_ready(&p, "analytics-restbridge", http_healthy, NULL);
  return p;
}

/* ------------------------------------------------------------------ */
/* a small HTTP/1.1 client: one keep-alive connection, blocking */

struct http_conn {
  int fd;
  int port;
  char buf[65536];
  size_t len; /* bytes buffered past the last response */
};

static int http_connect(struct http_conn *c, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int one = 1;

  c->port = port;
  c->len = 0;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* A request that is never answered counts as failed, never hangs the run. */
  struct timeval tv = {.tv_sec = 5};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  return 0;
}

static void http_close(struct http_conn *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

/* Sends one request and reads its response (the body is discarded, its
 * first bytes kept in body_head when asked). Returns the HTTP status, or -1
 * when the connection failed (it is then closed). */
static int http_request(struct http_conn *c, const char *method, const char *path, const char *body,
                        size_t body_len, char *body_head, size_t head_max) {
  char head[512];
  int n = snprintf(head, sizeof head,
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n\r\n",
                   method, path, c->port, body_len);
  struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, body_len}};
  size_t total = (size_t)n + body_len, sent = 0;

  if (c->fd < 0 && http_connect(c, c->port) < 0)
    return -1;
  while (sent < total) {
    struct msghdr mh = {0};
    struct iovec v[2];
    int k = 0;
    size_t off = sent;
    for (int i = 0; i < 2; i++) {
      if (off >= iov[i].iov_len) {
        off -= iov[i].iov_len;
        continue;
      }
      v[k].iov_base = (char *)iov[i].iov_base + off;
      v[k].iov_len = iov[i].iov_len - off;
      off = 0;
      k++;
    }
    mh.msg_iov = v;
    mh.msg_iovlen = (size_t)k;
    ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    if (w <= 0) {
      http_close(c);
      return -1;
    }
    sent += (size_t)w;
  }
  /* Headers. */
  char *end;
  for (;;) {
    c->buf[c->len] = '\0';
    if ((end = strstr(c->buf, "\r\n\r\n")) != NULL)
      break;
    if (c->len >= sizeof c->buf - 1) {
      http_close(c);
      return -1;
    }
    ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
    if (r <= 0) {
      http_close(c);
      return -1;
    }
    c->len += (size_t)r;
  }
  int status = 0;
  sscanf(c->buf, "HTTP/1.%*d %d", &status);
  size_t clen = 0;
  const char *cl = strcasestr(c->buf, "\r\ncontent-length:");
  if (cl && cl < end)
    clen = strtoul(cl + 17, NULL, 10);
  bool closing = false;
  const char *conn = strcasestr(c->buf, "\r\nconnection: close");
  if (conn && conn < end)
    closing = true;
  size_t hdr = (size_t)(end - c->buf) + 4;
  /* Body: what is buffered, then the rest. */
  size_t have = c->len - hdr;
  if (body_head && head_max) {
    size_t k = have < head_max - 1 ? have : head_max - 1;
    memcpy(body_head, c->buf + hdr, k);
    body_head[k] = '\0';
  }
  if (have >= clen) {
    memmove(c->buf, c->buf + hdr + clen, have - clen);
    c->len = have - clen;
  } else {
    size_t left = clen - have;
    c->len = 0;
    while (left > 0) {
      ssize_t r = read(c->fd, c->buf, left < sizeof c->buf ? left : sizeof c->buf);
      if (r <= 0) {
        http_close(c);
        return -1;
      }
      left -= (size_t)r;
    }
  }
  if (closing)
    http_close(c);
  return status;
}

static int http_get_status(int port, const char *path) {
  struct http_conn *c = calloc(1, sizeof *c);
  int status = -1;
  if (http_connect(c, port) == 0)
    status = http_request(c, "GET", path, "", 0, NULL, 0);
  http_close(c);
  free(c);
  return status;
}

/* ------------------------------------------------------------------ */
/* REST ingest load */

static atomic_long id_counter;

/* Appends one event as JSON (the same event as the gRPC load). */
static size_t event_json(char *out, size_t cap, const char *name, int64_t sent_ns) {
  long id = atomic_fetch_add(&id_counter, 1);
  if (sent_ns)
    return (size_t)snprintf(out, cap,
                            "{\"eventId\":\"r-%ld\",\"eventType\":\"message\",\"eventName\":\"%s\","
                            "\"properties\":{\"campaignId\":\"123\",\"groupId\":\"456\","
                            "\"messageType\":\"text\",\"charactersCount\":150,"
                            "\"sentNs\":\"%lld\"}}",
                            id, name, (long long)sent_ns);
  return (size_t)snprintf(out, cap,
                          "{\"eventId\":\"r-%ld\",\"eventType\":\"message\",\"eventName\":\"%s\","
                          "\"properties\":{\"campaignId\":\"123\",\"groupId\":\"456\","
                          "\"messageType\":\"text\",\"charactersCount\":150}}",
                          id, name);
}

struct rest_load {
  int port;
  int batch; /* 1: POST /api/events; >1: POST /api/events/batch */
  double until;
  long events;
  long errors;
};

static void *rest_worker(void *arg) {
  struct rest_load *l = arg;
  struct http_conn *c = calloc(1, sizeof *c);
  size_t cap = (size_t)l->batch * 320 + 64;
  char *body = malloc(cap);

  c->fd = -1;
  c->port = l->port;
  while (bench_now_s() < l->until) {
    size_t n = 0;
    if (l->batch == 1) {
      n = event_json(body, cap, "message_sent", 0);
    } else {
      n += (size_t)snprintf(body, cap, "{\"events\":[");
      for (int i = 0; i < l->batch; i++) {
        if (i)
          body[n++] = ',';
        n += event_json(body + n, cap - n, "message_sent", 0);
      }
      n += (size_t)snprintf(body + n, cap - n, "]}");
    }
    int status = http_request(c, "POST", l->batch == 1 ? "/api/events" : "/api/events/batch", body,
                              n, NULL, 0);
    if (status == 200)
      l->events += l->batch;
    else
      l->errors++;
  }
  http_close(c);
  free(c);
  free(body);
  return NULL;
}

/* `conns` connections for the configured time; returns events/s. */
static double rest_rate(int port, int conns, int batch) {
  struct rest_load *loads = calloc((size_t)conns, sizeof *loads);
  pthread_t *t = calloc((size_t)conns, sizeof *t);
  double start = bench_now_s();
  long events = 0, errors = 0;

  for (int i = 0; i < conns; i++) {
    loads[i] = (struct rest_load){.port = port, .batch = batch, .until = start + seconds_per_run};
    pthread_create(&t[i], NULL, rest_worker, &loads[i]);
  }
  for (int i = 0; i < conns; i++) {
    pthread_join(t[i], NULL);
    events += loads[i].events;
    errors += loads[i].errors;
  }
  double elapsed = bench_now_s() - start;
  if (errors)
    fprintf(stderr, "bench: %ld failed REST requests\n", errors);
  free(loads);
  free(t);
  return (double)events / elapsed;
}

/* ------------------------------------------------------------------ */
/* gRPC load, the baselines of the ratios (the same load as ingest_bench's) */

static double grpc_rate(const struct bench_proc *server, int clients, int batch, bool stream) {
  struct bench_grpc_load load = {
      .clients = clients, .batch = batch, .stream = stream, .seconds = seconds_per_run};
  struct ana_client_channel *channel = bench_channel_create(server);
  double rate = bench_grpc_ingest_rate(channel, &load, NULL, NULL);

  ana_client_channel_destroy(channel);
  return rate;
}

/* ------------------------------------------------------------------ */
/* ingest -> WebSocket latency: one lws client context, 100 connections */

struct ws_sub {
  char buf[65536]; /* the frame being reassembled */
  size_t len;
  bool overflow;
};

/* One client context and its service thread, with its own samples. */
struct ws_client {
  struct lws_context *ctx;
  pthread_t thread;
  bool thread_started;
  atomic_int established, errors; /* read by the main thread while connecting */
  int closed;
  double *lat; /* ms, written by this client's thread only */
  size_t n_lat, cap_lat;
  long frames, events;
};

static struct {
  struct ws_client clients[WS_CLIENT_THREADS];
  int64_t record_from_ns; /* warm-up: events sent before are not sampled */
  atomic_int stop;
} ws;

static struct ws_sub subs[WS_SUBSCRIBERS];

static void ws_frame(struct ws_client *c, const char *text, size_t len) {
  static const char key[] = "\"sentNs\":\"";
  int64_t now = ana_clock_wall_ns();
  const char *p;

  (void)len;
  c->frames++;
  if (!(p = strstr(text, key)))
    return; /* a snapshot */
  c->events++;
  int64_t sent = strtoll(p + sizeof key - 1, NULL, 10);
  if (sent >= ws.record_from_ns && c->n_lat < c->cap_lat)
    c->lat[c->n_lat++] = (double)(now - sent) / 1e6;
}

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len) {
  struct ws_sub *s = user;
  struct ws_client *c = wsi ? lws_context_user(lws_get_context(wsi)) : NULL;

  if (!c)
    return 0;
  switch (reason) {
  case LWS_CALLBACK_CLIENT_ESTABLISHED: atomic_fetch_add(&c->established, 1); break;
  case LWS_CALLBACK_CLIENT_RECEIVE:
    if (s->len + len < sizeof s->buf) {
      memcpy(s->buf + s->len, in, len);
      s->len += len;
    } else {
      s->overflow = true;
    }
    if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
      s->buf[s->len] = '\0';
      if (!s->overflow)
        ws_frame(c, s->buf, s->len);
      s->len = 0;
      s->overflow = false;
    }
    break;
  case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    atomic_fetch_add(&c->errors, 1);
    fprintf(stderr, "bench: WebSocket connect failed: %s\n", in ? (const char *)in : "?");
    break;
  case LWS_CALLBACK_CLIENT_CLOSED: c->closed++; break;
  default: break;
  }
  return 0;
}

static const struct lws_protocols ws_protocols[] = {
    {"bench", ws_callback, sizeof(struct ws_sub), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void *ws_service(void *arg) {
  struct ws_client *c = arg;
  while (!atomic_load(&ws.stop))
    lws_service(c->ctx, 0);
  return NULL;
}

struct producer {
  int port;
  double start, until, interval;
  long sent, errors;
};

static void *ws_producer(void *arg) {
  struct producer *p = arg;
  struct http_conn *c = calloc(1, sizeof *c);
  char body[512];
  double next = p->start;

  c->fd = -1;
  c->port = p->port;
  while (next < p->until) {
    double wait = next - bench_now_s();
    if (wait > 0)
      usleep((useconds_t)(wait * 1e6));
    next += p->interval;
    size_t n = event_json(body, sizeof body, "bench_ws", ana_clock_wall_ns());
    if (http_request(c, "POST", "/api/events", body, n, NULL, 0) == 200)
      p->sent++;
    else
      p->errors++;
  }
  http_close(c);
  free(c);
  return NULL;
}

struct ws_result {
  double p50, p99, max, achieved_rate, delivered; /* delivered: frames / (events * subs) */
  int connected;
};

static struct ws_result ws_latency(int port) {
  struct lws_context_creation_info info;
  struct ws_result r = {NAN, NAN, NAN, 0, 0, 0};
  pthread_t prod[WS_PRODUCERS];
  struct producer pr[WS_PRODUCERS];
  double warmup = 1.0, run = seconds_per_run * 2;
  size_t per_client = WS_SUBSCRIBERS / WS_CLIENT_THREADS + 1;

  memset(&ws, 0, sizeof ws);
  memset(subs, 0, sizeof subs);
  lws_set_log_level(LLL_ERR, NULL);
  for (int k = 0; k < WS_CLIENT_THREADS; k++) {
    struct ws_client *c = &ws.clients[k];
    c->cap_lat = (size_t)(WS_RATE * (run + 2) * per_client);
    c->lat = malloc(c->cap_lat * sizeof *c->lat);
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = ws_protocols;
    info.fd_limit_per_thread = (unsigned)per_client + 16;
    info.user = c;
    c->ctx = lws_create_context(&info);
    if (!c->ctx) {
      fprintf(stderr, "bench: lws_create_context failed\n");
      goto out;
    }
  }
  for (int i = 0; i < WS_SUBSCRIBERS; i++) {
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = ws.clients[i % WS_CLIENT_THREADS].ctx;
    ci.address = "127.0.0.1";
    ci.port = port;
    ci.path = "/ws/analytics?includeEvents=true&eventName=bench_ws";
    ci.host = "127.0.0.1";
    ci.origin = "127.0.0.1";
    ci.local_protocol_name = "bench";
    ci.userdata = &subs[i];
    if (!lws_client_connect_via_info(&ci))
      atomic_fetch_add(&ws.clients[i % WS_CLIENT_THREADS].errors, 1);
  }
  /* The connections were asked for on this thread; from now on each
   * context is its service thread's. */
  for (int k = 0; k < WS_CLIENT_THREADS; k++)
    ws.clients[k].thread_started =
        pthread_create(&ws.clients[k].thread, NULL, ws_service, &ws.clients[k]) == 0;
  for (double t0 = bench_now_s(); bench_now_s() - t0 < 20;) {
    int settled = 0;
    for (int k = 0; k < WS_CLIENT_THREADS; k++)
      settled += atomic_load(&ws.clients[k].established) + atomic_load(&ws.clients[k].errors);
    if (settled >= WS_SUBSCRIBERS)
      break;
    usleep(10000);
  }
  for (int k = 0; k < WS_CLIENT_THREADS; k++)
    r.connected += atomic_load(&ws.clients[k].established);

  double start = bench_now_s() + 0.2;
  ws.record_from_ns = ana_clock_wall_ns() + (int64_t)((0.2 + warmup) * 1e9);
  for (int i = 0; i < WS_PRODUCERS; i++) {
    pr[i] = (struct producer){.port = port,
                              .start = start + (double)i / WS_RATE,
                              .until = start + warmup + run,
                              .interval = (double)WS_PRODUCERS / WS_RATE};
    pthread_create(&prod[i], NULL, ws_producer, &pr[i]);
  }
  long sent = 0, errors = 0;
  for (int i = 0; i < WS_PRODUCERS; i++) {
    pthread_join(prod[i], NULL);
    sent += pr[i].sent;
    errors += pr[i].errors;
  }
  double elapsed = bench_now_s() - start;
  usleep(1000000); /* the last frames */
  atomic_store(&ws.stop, 1);
  for (int k = 0; k < WS_CLIENT_THREADS; k++) {
    lws_cancel_service(ws.clients[k].ctx);
    pthread_join(ws.clients[k].thread, NULL);
    ws.clients[k].thread_started = false;
  }
  if (errors)
    fprintf(stderr, "bench: %ld failed REST requests while measuring latency\n", errors);

  /* Every client's samples together. */
  size_t n_lat = 0;
  long events = 0;
  for (int k = 0; k < WS_CLIENT_THREADS; k++) {
    n_lat += ws.clients[k].n_lat;
    events += ws.clients[k].events;
  }
  double *lat = malloc((n_lat ? n_lat : 1) * sizeof *lat);
  n_lat = 0;
  for (int k = 0; k < WS_CLIENT_THREADS; k++) {
    memcpy(lat + n_lat, ws.clients[k].lat, ws.clients[k].n_lat * sizeof *lat);
    n_lat += ws.clients[k].n_lat;
  }
  r.achieved_rate = (double)sent / elapsed;
  r.delivered = sent && r.connected ? (double)events / ((double)sent * r.connected) : 0;
  r.p50 = bench_percentile(lat, n_lat, 50);
  r.p99 = bench_percentile(lat, n_lat, 99);
  r.max = n_lat ? lat[n_lat - 1] : NAN;
  free(lat);
out:
  atomic_store(&ws.stop, 1);
  for (int k = 0; k < WS_CLIENT_THREADS; k++) {
    if (ws.clients[k].thread_started) {
      lws_cancel_service(ws.clients[k].ctx);
      pthread_join(ws.clients[k].thread, NULL);
    }
    if (ws.clients[k].ctx)
      lws_context_destroy(ws.clients[k].ctx);
    free(ws.clients[k].lat);
  }
  return r;
}

/* ------------------------------------------------------------------ */
/* results: the section of RESULTS.md replaced, the rest kept */

int main(int argc, char **argv) {
  bench_pin_client();
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
      server_path = argv[++i];
    else if (strcmp(argv[i], "--restbridge") == 0 && i + 1 < argc)
      bridge_path = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds_per_run = atof(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out_path = argv[++i];
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
      only = argv[++i];
    else {
      fprintf(stderr, "usage: rest_bench --server PATH [--restbridge PATH] [--seconds S] "
                      "[--out FILE] [--only ingest|ws]\n");
      return 2;
    }
  }
  if (!server_path || seconds_per_run <= 0) {
    fprintf(stderr, "usage: rest_bench --server PATH [--restbridge PATH] [--seconds S] "
                    "[--out FILE]\n");
    return 2;
  }
  static char derived[1024];
  if (!bridge_path) {
    /* build/server/analyticsd -> build/restbridge/analytics-restbridge */
    snprintf(derived, sizeof derived, "%s", server_path);
    char *slash = strrchr(derived, '/');
    *(slash ? slash + 1 : derived) = '\0';
    strncat(derived, "../restbridge/analytics-restbridge", sizeof derived - strlen(derived) - 1);
    bridge_path = derived;
  }
  if (access(bridge_path, X_OK) != 0) {
    fprintf(stderr, "bench: %s: not found (--restbridge PATH)\n", bridge_path);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (!mkdtemp(base_dir)) {
    perror("bench: mkdtemp");
    return 1;
  }

  /* Each figure on a fresh server and store, so none runs on another's data. */
  double g_stream = NAN, g_batch = NAN, r_single = NAN, r_batch = NAN, m_single = NAN,
         m_batch = NAN;
  struct ws_result w = {NAN, NAN, NAN, 0, 0, 0}, wr = w;
  struct bench_proc s, b;
  if (only && strcmp(only, "ingest") != 0)
    goto latency;
  printf("gRPC ingest (baselines)...\n");
  s = start_server("grpc-stream");
  g_stream = grpc_rate(&s, 2, 100, true);
  bench_proc_stop(&s);
  s = start_server("grpc-batch");
  g_batch = grpc_rate(&s, 4, 100, false);
  bench_proc_stop(&s);

  printf("REST ingest, in-process...\n");
  s = start_server("rest-single");
  r_single = rest_rate(s.port, 16, 1);
  bench_proc_stop(&s);
  s = start_server("rest-batch");
  r_batch = rest_rate(s.port, 4, 100);
  bench_proc_stop(&s);

  printf("REST ingest, remote bridge...\n");
  s = start_server("remote-single");
  b = start_bridge(&s);
  m_single = rest_rate(b.port, 16, 1);
  bench_proc_stop(&b);
  bench_proc_stop(&s);
  s = start_server("remote-batch");
  b = start_bridge(&s);
  m_batch = rest_rate(b.port, 4, 100);
  bench_proc_stop(&b);
  bench_proc_stop(&s);

  if (only && strcmp(only, "ws") != 0)
    goto report;
latency:
  printf("ingest -> WebSocket latency, %d subscribers, %d events/s...\n", WS_SUBSCRIBERS, WS_RATE);
  s = start_server("ws-inproc");
  w = ws_latency(s.port);
  if (waitpid(s.pid, NULL, WNOHANG) == s.pid) {
    fprintf(stderr, "bench: analyticsd died during the latency run\n");
    s.pid = 0;
  }
  bench_proc_stop(&s);
  s = start_server("ws-remote");
  b = start_bridge(&s);
  wr = ws_latency(b.port);
  bench_proc_stop(&b);
  bench_proc_stop(&s);

report:;
  char mach[512], section[8192];
  size_t n = 0;
  bench_machine(mach, sizeof mach);
#define OUT(...) n += (size_t)snprintf(section + n, sizeof section - n, __VA_ARGS__)
  OUT(SECTION " (REST bridge and live stream)\n\n");
  OUT("Machine: %s. Command: `make bench` (`build/bench/rest_bench --server "
      "build/server/analyticsd --seconds %.0f`). Client, analyticsd and (remote mode) "
      "analytics-restbridge share the machine; each figure runs on a fresh analyticsd and "
      "store; the gRPC baselines are measured in the same run. REST: keep-alive HTTP/1.1 "
      "connections (a raw-socket client), the same event as the gRPC load. Latency: %d "
      "WebSocket subscribers on `/ws/analytics?includeEvents=true` in %d libwebsockets "
      "client contexts (a thread each) while %d events/s are tracked with `POST /api/events` (%d "
      "connections); from the send time (a property of the event) to the frame's arrival "
      "at each subscriber, after a 1 s warm-up.\n\n",
      mach, seconds_per_run, WS_SUBSCRIBERS, WS_CLIENT_THREADS, WS_RATE, WS_PRODUCERS);
  OUT("| Measure | Result | Baseline | Ratio | Target |\n|---|---|---|---|---|\n");
  OUT("| gRPC IngestEvents stream, batches of 100 (2 streams) | %.0f ev/s | | | |\n", g_stream);
  OUT("| gRPC TrackEvents, batches of 100 (4 clients) | %.0f ev/s | | | |\n", g_batch);
  OUT("| REST `POST /api/events`, in-process (16 connections) | %.0f ev/s | gRPC stream: %.0f "
      "| %.2f | |\n",
      r_single, g_stream, r_single / g_stream);
  OUT("| REST `POST /api/events/batch`, 100 per request, in-process (4 connections) | %.0f "
      "ev/s | gRPC stream: %.0f | %.2f | >= 0.40 |\n",
      r_batch, g_stream, r_batch / g_stream);
  OUT("| REST `POST /api/events`, remote bridge (16 connections) | %.0f ev/s | gRPC stream: "
      "%.0f | %.2f | |\n",
      m_single, g_stream, m_single / g_stream);
  OUT("| REST `POST /api/events/batch`, 100 per request, remote bridge (4 connections) | "
      "%.0f ev/s | gRPC stream: %.0f | %.2f | >= 0.40 |\n",
      m_batch, g_stream, m_batch / g_stream);
  OUT("| ingest -> WebSocket p50 / p99 / max, in-process (%d of %d subscribers, %.0f ev/s "
      "tracked, %.1f%% delivered) | %.2f / %.2f / %.2f ms | | | p99 <= 10 ms |\n",
      w.connected, WS_SUBSCRIBERS, w.achieved_rate, w.delivered * 100, w.p50, w.p99, w.max);
  OUT("| ingest -> WebSocket p50 / p99 / max, remote bridge (%d of %d subscribers, %.0f ev/s "
      "tracked, %.1f%% delivered) | %.2f / %.2f / %.2f ms | | | |\n",
      wr.connected, WS_SUBSCRIBERS, wr.achieved_rate, wr.delivered * 100, wr.p50, wr.p99, wr.max);
#undef OUT
  fputs("\n", stdout);
  fputs(section, stdout);
  if (!only)
    bench_results_replace(out_path, SECTION, section);

  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", base_dir);
  return system(cmd) == 0 ? 0 : 1;
}
