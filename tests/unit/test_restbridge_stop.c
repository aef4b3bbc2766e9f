/* Unit tests for the REST bridge's bounded shutdown: a service thread stuck in a callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ana_error.h"
#include "ana_heartbeat.h"
#include "ana_restbridge.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static sem_t entered, release;

/* A health check that blocks the service thread until the test lets it go:
 * a callback breaking the must-not-block rule. */
static int blocking_health(void *ctx, bool *serving, struct ana_json_buf *extra) {
  (void)ctx;
  (void)extra;
  sem_post(&entered);
  sem_wait(&release);
  *serving = true;
  return 0;
}

static int get_health(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  const char req[] = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
  assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
  return fd;
}

static void test_shutdown_returns_when_the_service_thread_is_stuck(void **state) {
  (void)state;
  sem_init(&entered, 0, 0);
  sem_init(&release, 0, 0);
  struct ana_restbridge_options o = {.host = "127.0.0.1", .port = 0, .health = blocking_health};
  struct ana_error err;
  struct ana_restbridge *b = ana_restbridge_create(&o, &err);
  assert_non_null(b);
  int fd = get_health(ana_restbridge_port(b));
  sem_wait(&entered); /* the service thread is inside the callback now */
  assert_false(ana_restbridge_stopped(b));

  const int grace = 200;
  int64_t t0 = ana_heartbeat_now_ms();
  assert_int_equal(ana_restbridge_shutdown(b, grace), ANA_ERR_TIMEOUT);
  int64_t took = ana_heartbeat_now_ms() - t0;
  assert_true(took >= grace);
  assert_true(took < grace + ANA_RESTBRIDGE_STOP_MARGIN_MS + 500);
  assert_false(ana_restbridge_stopped(b));

  /* Once the callback returns, the thread stops and the bridge is freed. */
  sem_post(&release);
  ana_restbridge_destroy(b);
  close(fd);
  sem_destroy(&entered);
  sem_destroy(&release);
}

static void test_shutdown_of_an_idle_bridge_stops_its_thread(void **state) {
  (void)state;
  struct ana_restbridge_options o = {.host = "127.0.0.1", .port = 0};
  struct ana_error err;
  struct ana_restbridge *b = ana_restbridge_create(&o, &err);
  assert_non_null(b);
  int64_t t0 = ana_heartbeat_now_ms();
  assert_int_equal(ana_restbridge_shutdown(b, 1000), 0);
  assert_true(ana_heartbeat_now_ms() - t0 < 1000);
  assert_true(ana_restbridge_stopped(b));
  ana_restbridge_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shutdown_returns_when_the_service_thread_is_stuck),
      cmocka_unit_test(test_shutdown_of_an_idle_bridge_stops_its_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
