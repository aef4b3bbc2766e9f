/* TLS against plaintext: gRPC TrackEvents and REST POST /api/events/batch
 * (100 events per call, 4 clients) on an analyticsd serving plaintext, then
 * one serving GRPC_TLS_* and HTTP_TLS_* (a P-256 certificate made with
 * openssl here, no client certificates), each figure on a fresh server.
 *
 * usage: tls_bench --server PATH [--seconds S] [--out FILE]
 * The section "## TLS" of FILE (default bench/RESULTS.md) is replaced (or
 * appended); the rest of the file is kept. */
#include "ana_client_rpc.h"
#include "ana_client_stubs.h"
#include "bench_common.h"
#include "results_file.h"

#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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
#include <unistd.h>

#define SECTION "## TLS"
#define CLIENTS 4
#define BATCH 100

static double seconds_per_run = 5.0;
static const char *server_path;
static const char *out_path = "bench/RESULTS.md";
static char base_dir[] = "/tmp/ana-tls-bench-XXXXXX";
static char cert_path[256], key_path[256];
static atomic_long id_counter;

/* ------------------------------------------------------------------ */
/* servers */

static struct ana_client_channel *channel_to(const struct bench_proc *p, bool tls) {
  char target[64];
  struct ana_error err;
  struct ana_client_tls t = {.ca_file = cert_path}; /* self-signed: its own CA */
  snprintf(target, sizeof target, "127.0.0.1:%d", p->grpc_port);
  return ana_client_channel_create_tls(target, tls ? &t : NULL, &err);
}

static bool tls_ready(const struct bench_proc *p, void *arg) {
  (void)arg;
  struct ana_client_channel *ch = channel_to(p, true);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  struct ana_call_options o = {.timeout_ms = 500};
  struct ana_error err;
  bool ok = ch && ana_stub_grpc__health__v1__health_check(ch, &req, &resp, &o, &err) == 0 && resp &&
            resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  if (resp)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  ana_client_channel_destroy(ch);
  return ok;
}

static struct bench_proc start_server(const char *name, bool tls) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/%s", base_dir, name);
  mkdir(dir, 0700);
  const char *vars[] = {"GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "HTTP_TLS_CERT_FILE",
                        "HTTP_TLS_KEY_FILE"};
  for (int i = 0; i < 4; i++) {
    if (tls)
      setenv(vars[i], i % 2 ? key_path : cert_path, 1);
    else
      unsetenv(vars[i]);
  }
  return bench_server_start(server_path, dir, tls ? tls_ready : NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* gRPC: the shared ingest load on a plaintext or TLS channel */

static double grpc_rate(const struct bench_proc *p, bool tls) {
  struct bench_grpc_load load = {.clients = CLIENTS, .batch = BATCH, .seconds = seconds_per_run};
  struct ana_client_channel *ch = channel_to(p, tls);
  double rate = ch ? bench_grpc_ingest_rate(ch, &load, NULL, NULL) : NAN;
  ana_client_channel_destroy(ch);
  return rate;
}

/* ------------------------------------------------------------------ */
/* REST: keep-alive HTTP/1.1 connections, plaintext or TLS (OpenSSL) */

struct conn {
  int fd;
  SSL *ssl; /* NULL: plaintext */
  char buf[65536];
  size_t len;
};

static int conn_write(struct conn *c, const char *p, size_t n) {
  while (n > 0) {
    int w = c->ssl ? SSL_write(c->ssl, p, (int)n) : (int)send(c->fd, p, n, MSG_NOSIGNAL);
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int conn_read(struct conn *c, char *p, size_t n) {
  return c->ssl ? SSL_read(c->ssl, p, (int)n) : (int)read(c->fd, p, n);
}

static void conn_close(struct conn *c) {
  if (c->ssl) {
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
  }
  if (c->fd >= 0)
    close(c->fd);
  c->ssl = NULL;
  c->fd = -1;
  c->len = 0;
}

static int conn_open(struct conn *c, int port, SSL_CTX *ctx) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int one = 1;
  struct timeval tv = {.tv_sec = 5};
  c->len = 0;
  c->ssl = NULL;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0)
    goto fail;
  if (ctx) {
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 ||
        SSL_set_tlsext_host_name(c->ssl, "localhost") != 1 || SSL_connect(c->ssl) != 1)
      goto fail;
  }
  return 0;
fail:
  ERR_clear_error();
  conn_close(c);
  return -1;
}

/* POSTs body and reads the answer; the HTTP status, or -1 (closed). */
static int post(struct conn *c, int port, SSL_CTX *ctx, const char *body, size_t n) {
  char head[256];
  int h = snprintf(head, sizeof head,
                   "POST /api/events/batch HTTP/1.1\r\nHost: localhost:%d\r\n"
                   "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                   port, n);
  if (c->fd < 0 && conn_open(c, port, ctx) < 0)
    return -1;
  if (conn_write(c, head, (size_t)h) < 0 || conn_write(c, body, n) < 0)
    goto fail;
  char *end;
  for (;;) {
    c->buf[c->len] = '\0';
    if ((end = strstr(c->buf, "\r\n\r\n")) != NULL)
      break;
    if (c->len >= sizeof c->buf - 1)
      goto fail;
    int r = conn_read(c, c->buf + c->len, sizeof c->buf - 1 - c->len);
    if (r <= 0)
      goto fail;
    c->len += (size_t)r;
  }
  int status = 0;
  sscanf(c->buf, "HTTP/1.%*d %d", &status);
  const char *cl = strcasestr(c->buf, "\r\ncontent-length:");
  size_t clen = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
  size_t hdr = (size_t)(end - c->buf) + 4, have = c->len - hdr;
  if (have >= clen) {
    memmove(c->buf, c->buf + hdr + clen, have - clen);
    c->len = have - clen;
    return status;
  }
  for (size_t left = clen - have; left > 0;) {
    int r = conn_read(c, c->buf, left < sizeof c->buf ? left : sizeof c->buf);
    if (r <= 0)
      goto fail;
    left -= (size_t)r;
  }
  c->len = 0;
  return status;
fail:
  ERR_clear_error();
  conn_close(c);
  return -1;
}

struct rest_load {
  int port;
  SSL_CTX *ctx;
  double until;
  long events, errors;
};

static void *rest_worker(void *arg) {
  struct rest_load *l = arg;
  struct conn *c = calloc(1, sizeof *c);
  size_t cap = BATCH * 320 + 64;
  char *body = malloc(cap);
  c->fd = -1;
  while (bench_now_s() < l->until) {
    size_t n = (size_t)snprintf(body, cap, "{\"events\":[");
    for (int i = 0; i < BATCH; i++)
      n += (size_t)snprintf(body + n, cap - n,
                            "%s{\"eventId\":\"t-%ld\",\"eventType\":\"message\",\"eventName\":"
                            "\"message_sent\",\"properties\":{\"campaignId\":\"123\",\"groupId\":"
                            "\"456\",\"messageType\":\"text\",\"charactersCount\":150}}",
                            i ? "," : "", atomic_fetch_add(&id_counter, 1));
    n += (size_t)snprintf(body + n, cap - n, "]}");
    if (post(c, l->port, l->ctx, body, n) == 200)
      l->events += BATCH;
    else
      l->errors++;
  }
  conn_close(c);
  free(c);
  free(body);
  return NULL;
}

static double rest_rate(int port, SSL_CTX *ctx) {
  struct rest_load loads[CLIENTS];
  pthread_t t[CLIENTS];
  double start = bench_now_s();
  long events = 0, errors = 0;
  for (int i = 0; i < CLIENTS; i++) {
    loads[i] = (struct rest_load){.port = port, .ctx = ctx, .until = start + seconds_per_run};
    pthread_create(&t[i], NULL, rest_worker, &loads[i]);
  }
  for (int i = 0; i < CLIENTS; i++) {
    pthread_join(t[i], NULL);
    events += loads[i].events;
    errors += loads[i].errors;
  }
  if (errors)
    fprintf(stderr, "bench: %ld failed REST requests\n", errors);
  return (double)events / (bench_now_s() - start);
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv) {
  bench_pin_client();
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
      server_path = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds_per_run = atof(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out_path = argv[++i];
    else
      server_path = NULL, i = argc;
  }
  if (!server_path || seconds_per_run <= 0) {
    fprintf(stderr, "usage: tls_bench --server PATH [--seconds S] [--out FILE]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (!mkdtemp(base_dir)) {
    perror("bench: mkdtemp");
    return 1;
  }
  snprintf(cert_path, sizeof cert_path, "%s/server.pem", base_dir);
  snprintf(key_path, sizeof key_path, "%s/server.key", base_dir);
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s "
           "-out %s -days 2 -subj /CN=localhost -addext "
           "subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null",
           key_path, cert_path);
  if (system(cmd) != 0) {
    fprintf(stderr, "bench: openssl could not make a certificate\n");
    return 1;
  }
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx || SSL_CTX_load_verify_locations(ctx, cert_path, NULL) != 1) {
    fprintf(stderr, "bench: cannot set up the TLS client\n");
    return 1;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

  struct bench_proc s;
  printf("gRPC TrackEvents, plaintext then TLS...\n");
  s = start_server("grpc-plain", false);
  double g_plain = grpc_rate(&s, false);
  bench_proc_stop(&s);
  s = start_server("grpc-tls", true);
  double g_tls = grpc_rate(&s, true);
  bench_proc_stop(&s);
  printf("REST POST /api/events/batch, plaintext then TLS...\n");
  s = start_server("rest-plain", false);
  double r_plain = rest_rate(s.port, NULL);
  bench_proc_stop(&s);
  s = start_server("rest-tls", true);
  double r_tls = rest_rate(s.port, ctx);
  bench_proc_stop(&s);
  SSL_CTX_free(ctx);

  char mach[512], section[4096];
  size_t n = 0;
  bench_machine(mach, sizeof mach);
#define OUT(...) n += (size_t)snprintf(section + n, sizeof section - n, __VA_ARGS__)
  OUT(SECTION " (against plaintext)\n\n");
  OUT("Machine: %s. Command: `make bench` (`build/bench/tls_bench --server "
      "build/server/analyticsd --seconds %.0f`). %d clients, %d events per call, keep-alive "
      "connections (TLS handshakes are not part of the steady state); server TLS with a P-256 "
      "certificate, no client certificates; each figure on a fresh analyticsd and store. The "
      "machine is shared with other work: figures move by 10-20%% from run to run, so the "
      "ratios are indicative.\n\n",
      mach, seconds_per_run, CLIENTS, BATCH);
  OUT("| Measure | TLS | Plaintext | Ratio |\n|---|---|---|---|\n");
  OUT("| gRPC TrackEvents, batches of %d (%d clients) | %.0f ev/s | %.0f ev/s | %.2f |\n", BATCH,
      CLIENTS, g_tls, g_plain, g_tls / g_plain);
  OUT("| REST `POST /api/events/batch`, %d per request (%d connections) | %.0f ev/s | %.0f ev/s "
      "| %.2f |\n",
      BATCH, CLIENTS, r_tls, r_plain, r_tls / r_plain);
#undef OUT
  fputs("\n", stdout);
  fputs(section, stdout);
  bench_results_replace(out_path, SECTION, section);
  snprintf(cmd, sizeof cmd, "rm -rf %s", base_dir);
  return system(cmd) == 0 ? 0 : 1;
}
