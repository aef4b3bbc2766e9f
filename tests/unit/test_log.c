/* Unit tests for the JSON-lines logger: format, escaping, levels, limits, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ana_clock.h"
#include "ana_error.h"
#include "ana_log.h"
#include "ana_test_util.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- capture ---- */

static char *captured;
static size_t captured_len;
static FILE *capture_file;

static int capture_start(void **state) {
  (void)state;
  captured = NULL;
  captured_len = 0;
  capture_file = open_memstream(&captured, &captured_len);
  assert_non_null(capture_file);
  ana_log_set_output(capture_file);
  ana_log_set_level(ANA_LOG_INFO);
  return 0;
}

static int capture_stop(void **state) {
  (void)state;
  ana_log_set_output(NULL);
  ana_log_set_level(ANA_LOG_INFO);
  if (capture_file)
    fclose(capture_file);
  capture_file = NULL;
  free(captured);
  captured = NULL;
  return 0;
}

/* Starts over with an empty capture (and the level back at info). */
static void capture_reset(void) {
  capture_stop(NULL);
  capture_start(NULL);
}

/* The lines written so far (each flushed as written), as one string. */
static const char *output(void) {
  fflush(capture_file);
  return captured ? captured : "";
}

static size_t line_count(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

/* Parses the only line written so far; fails unless there is exactly one. */
static json_t *only_line(void) {
  const char *out = output();
  json_error_t jerr;
  json_t *obj;

  assert_int_equal(line_count(out), 1);
  assert_int_equal(out[strlen(out) - 1], '\n');
  obj = json_loads(out, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
  if (!obj)
    fail_msg("not JSON (%s): %s", jerr.text, out);
  assert_true(json_is_object(obj));
  return obj;
}

static const char *str_field(json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  if (!json_is_string(v))
    fail_msg("field %s missing or not a string", key);
  return json_string_value(v);
}

/* ---- tests ---- */

static void test_level_names(void **state) {
  enum ana_log_level level = ANA_LOG_ERROR;
  (void)state;

  assert_int_equal(ana_log_level_parse("debug", &level), 0);
  assert_int_equal(level, ANA_LOG_DEBUG);
  assert_int_equal(ana_log_level_parse("WaRn", &level), 0);
  assert_int_equal(level, ANA_LOG_WARN);
  assert_int_equal(ana_log_level_parse("ERROR", &level), 0);
  assert_int_equal(level, ANA_LOG_ERROR);
  assert_int_equal(ana_log_level_parse("info", &level), 0);
  assert_int_equal(level, ANA_LOG_INFO);
  assert_int_equal(ana_log_level_parse("warning", &level), ANA_ERR_INVALID);
  assert_int_equal(ana_log_level_parse("", &level), ANA_ERR_INVALID);
  assert_int_equal(ana_log_level_parse(NULL, &level), ANA_ERR_INVALID);
  assert_int_equal(level, ANA_LOG_INFO);

  for (int i = ANA_LOG_ERROR; i <= ANA_LOG_DEBUG; i++) {
    assert_int_equal(ana_log_level_parse(ana_log_level_name((enum ana_log_level)i), &level), 0);
    assert_int_equal(level, i);
  }
  assert_string_equal(ana_log_level_name((enum ana_log_level)42), "unknown");
}

static void test_line_is_one_json_object(void **state) {
  json_t *obj;
  const char *ts;
  (void)state;

  ANA_INFO("rpc", "hello %d %s", 42, "world");
  obj = only_line();
  assert_int_equal(json_object_size(obj), 4);
  assert_string_equal(str_field(obj, "level"), "info");
  assert_string_equal(str_field(obj, "component"), "rpc");
  assert_string_equal(str_field(obj, "msg"), "hello 42 world");
  ts = str_field(obj, "ts");
  assert_int_equal(strlen(ts), 24); /* 2026-11-27T20:41:02.123Z */
  assert_int_equal(ts[4], '-');
  assert_int_equal(ts[10], 'T');
  assert_int_equal(ts[19], '.');
  assert_int_equal(ts[23], 'Z');
  assert_memory_equal(output(), "{\"ts\":\"", 7);
  json_decref(obj);
}

static void test_each_level_is_named(void **state) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  json_error_t jerr;
  const char *line;
  (void)state;

  ana_log_set_level(ANA_LOG_DEBUG);
  ANA_ERROR("t", "e");
  ANA_WARN("t", "w");
  ANA_INFO("t", "i");
  ANA_DEBUG("t", "d");
  line = output();
  assert_int_equal(line_count(line), 4);
  for (int i = 0; i < 4; i++) {
    json_t *obj = json_loadb(line, strcspn(line, "\n"), 0, &jerr);
    assert_non_null(obj);
    assert_string_equal(str_field(obj, "level"), names[i]);
    json_decref(obj);
    line += strcspn(line, "\n") + 1;
  }
}

static void test_escaping(void **state) {
  static const char text[] = "q\"b\\s/n\nt\tr\rc\x01\x1f del\x7f "
                             "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  json_t *obj;
  const char *raw;
  (void)state;

  ANA_WARN("esc", "%s", text);
  raw = output();
  assert_non_null(strstr(raw, "q\\\"b\\\\s/n\\nt\\tr\\rc\\u0001\\u001f"));
  obj = only_line();
  assert_string_equal(str_field(obj, "msg"), text);
  json_decref(obj);
}

static void test_nul_in_message(void **state) {
  json_t *obj;
  (void)state;

  ANA_INFO("esc", "a%cb", 0);
  assert_non_null(strstr(output(), "\"a\\u0000b\""));
  obj = only_line();
  assert_int_equal(json_string_length(json_object_get(obj, "msg")), 3);
  json_decref(obj);
}

static void test_invalid_utf8_is_replaced(void **state) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"a\xff"
       "b",
       "a\xef\xbf\xbd"
       "b"},
      {"\xe2\x82x", "\xef\xbf\xbdx"},                           /* truncated sequence: one U+FFFD */
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong */
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
      {"end\xc3", "end\xef\xbf\xbd"},
      {"ok \xf0\x9f\x98\x80", "ok \xf0\x9f\x98\x80"},
  };
  (void)state;

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *obj;
    capture_reset();
    ana_log_fields(ANA_LOG_INFO, "utf8", cases[i].in, "field", cases[i].in, NULL);
    obj = only_line();
    assert_string_equal(str_field(obj, "msg"), cases[i].out);
    assert_string_equal(str_field(obj, "field"), cases[i].out);
    json_decref(obj);
  }
}

static int side_effects;

static int bump(void) {
  return ++side_effects;
}

static void test_level_filtering(void **state) {
  (void)state;

  side_effects = 0;
  ana_log_set_level(ANA_LOG_WARN);
  assert_true(ana_log_enabled(ANA_LOG_ERROR));
  assert_true(ana_log_enabled(ANA_LOG_WARN));
  assert_false(ana_log_enabled(ANA_LOG_INFO));
  assert_false(ana_log_enabled(ANA_LOG_DEBUG));

  ANA_INFO("lvl", "%d", bump());
  ANA_DEBUG("lvl", "%d", bump());
  ana_log_write(ANA_LOG_DEBUG, "lvl", "direct");
  ana_log_fields(ANA_LOG_INFO, "lvl", "fields", "k", "v", NULL);
  assert_int_equal(side_effects, 0);
  assert_string_equal(output(), "");

  ANA_WARN("lvl", "%d", bump());
  assert_int_equal(side_effects, 1);
  assert_int_equal(line_count(output()), 1);

  ana_log_set_level(ANA_LOG_ERROR);
  assert_false(ana_log_enabled(ANA_LOG_WARN));
  ana_log_set_level(ANA_LOG_DEBUG);
  assert_true(ana_log_enabled(ANA_LOG_DEBUG));
}

static void test_fields(void **state) {
  json_t *obj;
  (void)state;

  ana_log_fields(ANA_LOG_INFO, "rpc", "call done", "method", "/x/Y", "code", "OK", "peer", NULL,
                 "quote", "say \"hi\"", NULL);
  obj = only_line();
  assert_int_equal(json_object_size(obj), 8);
  assert_string_equal(str_field(obj, "msg"), "call done");
  assert_string_equal(str_field(obj, "method"), "/x/Y");
  assert_string_equal(str_field(obj, "code"), "OK");
  assert_true(json_is_null(json_object_get(obj, "peer")));
  assert_string_equal(str_field(obj, "quote"), "say \"hi\"");
  assert_null(json_object_get(obj, "truncated"));
  json_decref(obj);
}

static void test_request_id_on_every_line_of_the_thread(void **state) {
  char id[16] = "";
  (void)state;

  ana_log_set_request_id(id); /* read when each line is written */
  ana_log_write(ANA_LOG_INFO, "rpc", "before the id");
  json_t *obj = only_line();
  assert_null(json_object_get(obj, "requestId"));
  json_decref(obj);
  capture_reset();
  snprintf(id, sizeof id, "rid-1");
  ana_log_fields(ANA_LOG_INFO, "rpc", "with fields", "k", "v", NULL);
  obj = only_line();
  assert_string_equal(str_field(obj, "requestId"), "rid-1");
  assert_string_equal(str_field(obj, "k"), "v");
  json_decref(obj);
  capture_reset();
  ana_log_set_request_id(NULL);
  ana_log_write(ANA_LOG_INFO, "rpc", "after");
  obj = only_line();
  assert_null(json_object_get(obj, "requestId"));
  json_decref(obj);
}

static void test_access_line(void **state) {
  (void)state;
  ana_log_set_request_id("other"); /* the entry's id wins, once */
  struct ana_access_entry e = {.transport = "http",
                               .request_id = "r-7",
                               .method = "GET",
                               .route = "/api/metrics/{metric_id}",
                               .status = 404,
                               .code = NULL,
                               .bytes_in = 0,
                               .bytes_out = 123,
                               .duration_ms = 1.5,
                               .peer = "127.0.0.1"};
  ana_log_access(&e);
  ana_log_set_request_id(NULL);
  json_t *obj = only_line();
  assert_string_equal(str_field(obj, "component"), "access");
  assert_string_equal(str_field(obj, "msg"), "GET /api/metrics/{metric_id} 404");
  assert_string_equal(str_field(obj, "requestId"), "r-7");
  assert_string_equal(str_field(obj, "route"), "/api/metrics/{metric_id}");
  assert_int_equal(json_integer_value(json_object_get(obj, "status")), 404);
  assert_int_equal(json_integer_value(json_object_get(obj, "bytesOut")), 123);
  assert_true(json_real_value(json_object_get(obj, "durationMs")) == 1.5);
  assert_null(json_object_get(obj, "code"));
  json_decref(obj);
}

/* Sleeps until the monotonic second changes (the log's windows are those). */
static void next_second(void) {
  int64_t s0 = ana_clock_mono_coarse_ms() / 1000;
  while (ana_clock_mono_coarse_ms() / 1000 == s0) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
}

static void test_access_lines_are_capped_per_second(void **state) {
  (void)state;
  struct ana_access_entry e = {.transport = "grpc", .method = "/x/Y", .status = 5, .peer = "p"};
  unsigned long long before = ana_log_suppressed_total();
  ana_log_access_set_max_per_second(3);
  next_second();
  for (int i = 0; i < 10; i++)
    ana_log_access(&e);
  assert_int_equal(line_count(output()), 3);
  assert_int_equal(ana_log_suppressed_total() - before, 7);
  capture_reset();
  next_second();
  ana_log_flush_suppressed();
  json_t *obj = only_line();
  assert_string_equal(str_field(obj, "msg"), "suppressed access lines (over ACCESS_LOG_MAX_PER_S)");
  assert_string_equal(str_field(obj, "suppressed"), "7");
  json_decref(obj);
  ana_log_access_set_max_per_second(100);
}

static void test_access_sampling(void **state) {
  double v = -1;
  (void)state;
  assert_int_equal(ana_log_access_sample_parse("0.01", &v), 0);
  assert_true(v == 0.01);
  assert_int_equal(ana_log_access_sample_parse("1", &v), 0);
  assert_int_equal(ana_log_access_sample_parse("1.5", &v), ANA_ERR_INVALID);
  assert_int_equal(ana_log_access_sample_parse("-0.1", &v), ANA_ERR_INVALID);
  assert_int_equal(ana_log_access_sample_parse("nan", &v), ANA_ERR_INVALID);
  assert_int_equal(ana_log_access_sample_parse("", &v), ANA_ERR_INVALID);
  assert_int_equal(ana_log_access_sample_parse("0.1x", &v), ANA_ERR_INVALID);

  ana_log_access_set_sample(0);
  for (int i = 0; i < 1000; i++) {
    assert_false(ana_log_access_sampled(true));
    assert_true(ana_log_access_sampled(false)); /* failures always */
  }
  ana_log_access_set_sample(0.1);
  int n = 0;
  for (int i = 0; i < 100000; i++)
    n += ana_log_access_sampled(true);
  assert_in_range(n, 9000, 11000);
  ana_log_access_set_sample(1);
  assert_true(ana_log_access_sampled(true));
  ana_log_set_level(ANA_LOG_WARN); /* the access log is info */
  assert_false(ana_log_access_sampled(false));
  ana_log_set_level(ANA_LOG_INFO);
  ana_log_access_set_sample(0.01);
}

static void test_component_edge_cases(void **state) {
  char long_name[200];
  json_error_t jerr;
  const char *out;
  json_t *obj;
  (void)state;

  memset(long_name, 'c', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  ANA_INFO(NULL, "no component");
  ANA_INFO(long_name, "long component");
  out = output();
  assert_int_equal(line_count(out), 2);
  obj = json_loadb(out, strcspn(out, "\n"), 0, &jerr);
  assert_non_null(obj);
  assert_string_equal(str_field(obj, "component"), "unknown");
  json_decref(obj);
  out += strcspn(out, "\n") + 1;
  obj = json_loads(out, 0, &jerr);
  assert_non_null(obj);
  assert_int_equal(strlen(str_field(obj, "component")), 64);
  json_decref(obj);
}

static void test_long_message_is_cut_at_a_character(void **state) {
  size_t n = 1 + 2 * 5000;
  char *big = malloc(n + 1);
  json_t *obj;
  const char *msg;
  (void)state;

  /* "x" then 5000 two-byte characters: byte ANA_LOG_MSG_MAX falls inside one. */
  assert_non_null(big);
  big[0] = 'x';
  for (size_t i = 1; i < n; i += 2)
    memcpy(big + i, "\xc3\xa9", 2);
  big[n] = '\0';

  ANA_INFO("big", "%s", big);
  obj = only_line();
  msg = str_field(obj, "msg");
  assert_int_equal(strlen(msg), ANA_LOG_MSG_MAX - 1);
  assert_null(strstr(msg, "\xef\xbf\xbd"));
  assert_true(json_is_true(json_object_get(obj, "truncated")));
  json_decref(obj);

  capture_reset();
  ana_log_fields(ANA_LOG_INFO, "big", big, NULL);
  obj = only_line();
  assert_int_equal(strlen(str_field(obj, "msg")), ANA_LOG_MSG_MAX - 1);
  assert_true(json_is_true(json_object_get(obj, "truncated")));
  json_decref(obj);
  free(big);
}

static void test_line_limit(void **state) {
  char *ctl = malloc(8001), *field = malloc(7001);
  json_t *obj;
  (void)state;

  assert_non_null(ctl);
  assert_non_null(field);
  memset(ctl, 0x01, 8000); /* 6 bytes each once escaped: far over the line limit */
  ctl[8000] = '\0';
  memset(field, 'f', 7000);
  field[7000] = '\0';

  ana_log_fields(ANA_LOG_ERROR, "limit", ctl, "dropped", "value", NULL);
  assert_true(strlen(output()) <= ANA_LOG_LINE_MAX);
  obj = only_line();
  assert_true(json_is_true(json_object_get(obj, "truncated")));
  assert_null(json_object_get(obj, "dropped"));
  assert_true(strlen(str_field(obj, "msg")) > 1000);
  json_decref(obj);

  capture_reset();
  ana_log_fields(ANA_LOG_ERROR, "limit", "three big fields", "f1", field, "f2", field, "f3", field,
                 NULL);
  assert_true(strlen(output()) <= ANA_LOG_LINE_MAX);
  obj = only_line();
  assert_int_equal(strlen(str_field(obj, "f1")), 7000);
  assert_int_equal(strlen(str_field(obj, "f2")), 7000);
  assert_null(json_object_get(obj, "f3"));
  assert_true(json_is_true(json_object_get(obj, "truncated")));
  json_decref(obj);
  free(ctl);
  free(field);
}

#define THREADS 4
#define LINES_PER_THREAD 2000

static void *writer(void *arg) {
  long id = (long)arg;
  char filler[300];

  memset(filler, 'a' + (int)id, sizeof filler - 1);
  filler[sizeof filler - 1] = '\0';
  for (int i = 0; i < LINES_PER_THREAD; i++) {
    if (i % 2)
      ana_log_write(ANA_LOG_INFO, "thread", "t=%ld seq=%d %s", id, i, filler); /* unlimited */
    else
      ana_log_fields(ANA_LOG_INFO, "thread", filler, "t", (char[]){(char)('0' + id), 0}, NULL);
  }
  return NULL;
}

static void test_concurrent_writers_never_mix_lines(void **state) {
  pthread_t threads[THREADS];
  int per_thread[THREADS] = {0};
  const char *p;
  size_t lines = 0;
  (void)state;

  for (long i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&threads[i], NULL, writer, (void *)i), 0);
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(pthread_join(threads[i], NULL), 0);

  p = output();
  while (*p) {
    size_t len = strcspn(p, "\n");
    json_error_t jerr;
    json_t *obj = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *msg;
    char c;
    if (!obj)
      fail_msg("line %zu is not JSON (%s)", lines + 1, jerr.text);
    assert_int_equal(p[len], '\n');
    msg = str_field(obj, "msg");
    c = msg[strlen(msg) - 1];
    assert_true(c >= 'a' && c < 'a' + THREADS);
    /* The filler of a line is all one thread's letter. */
    assert_int_equal(strspn(msg + strlen(msg) - 299, (char[]){c, 0}), 299);
    per_thread[c - 'a']++;
    json_decref(obj);
    lines++;
    p += len + 1;
  }
  assert_int_equal(lines, THREADS * LINES_PER_THREAD);
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(per_thread[i], LINES_PER_THREAD);
}

/* ---- flood control ---- */

/* Counts, in what was written so far, the lines whose msg starts with
 * prefix, and sums the "suppressed" fields of reports whose site is in this
 * file at line `site_line` (0: any line of this file). */
static void tally(const char *prefix, int site_line, size_t *written, unsigned long *suppressed,
                  size_t *reports) {
  const char *p = output();
  char site[64];
  snprintf(site, sizeof site, "test_log.c:%d", site_line);
  *written = 0;
  *suppressed = 0;
  *reports = 0;
  while (*p) {
    size_t len = strcspn(p, "\n");
    json_error_t jerr;
    json_t *obj = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj)
      fail_msg("not JSON (%s): %.*s", jerr.text, (int)len, p);
    const char *msg = str_field(obj, "msg");
    json_t *n = json_object_get(obj, "suppressed");
    if (n) {
      const char *where = str_field(obj, "site");
      if (site_line ? strstr(where, site) != NULL : strstr(where, "test_log.c:") != NULL) {
        *suppressed += strtoul(json_string_value(n), NULL, 10);
        (*reports)++;
      }
    } else if (strncmp(msg, prefix, strlen(prefix)) == 0) {
      (*written)++;
    }
    json_decref(obj);
    p += len + (p[len] == '\n');
  }
}

static void test_a_flooding_site_writes_ten_lines_a_second(void **state) {
  (void)state;
  unsigned long long before = ana_log_suppressed_total();
  int site = 0;
  for (int i = 0; i < 500; i++) {
    site = __LINE__ + 1;
    ANA_WARN("flood", "flood line %d", i);
  }
  size_t written, reports;
  unsigned long suppressed;
  tally("flood line", site, &written, &suppressed, &reports);
  /* One second, or the end of one and the start of the next. */
  assert_true(written >= ANA_LOG_SITE_LINES_PER_S && written <= 2 * ANA_LOG_SITE_LINES_PER_S);
  assert_int_equal(ana_log_suppressed_total() - before, 500 - written);

  /* The second is over: the flush reports what is left, in one line. */
  ana_test_sleep_ms(1100);
  ana_log_flush_suppressed();
  tally("flood line", site, &written, &suppressed, &reports);
  assert_int_equal(written + suppressed, 500);
  assert_true(reports >= 1 && reports <= 2);
  /* Nothing left to report: a second flush writes nothing. */
  size_t before_len = strlen(output());
  ana_log_flush_suppressed();
  assert_int_equal(strlen(output()), before_len);

  /* A new second: the site writes again. */
  ANA_WARN("flood", "flood line again");
  tally("flood line again", site, &written, &suppressed, &reports);
  assert_int_equal(written, 1);
}

static void test_sites_are_limited_independently(void **state) {
  (void)state;
  for (int i = 0; i < 100; i++)
    ANA_WARN("a", "site a %d", i);
  for (int i = 0; i < ANA_LOG_SITE_LINES_PER_S; i++)
    ANA_WARN("b", "site b %d", i);
  size_t written, reports;
  unsigned long suppressed;
  tally("site b", 0, &written, &suppressed, &reports);
  assert_int_equal(written, ANA_LOG_SITE_LINES_PER_S); /* a's flood did not silence b */
}

#define FLOOD_THREADS 4
#define FLOOD_LINES 5000

static atomic_int flooder_line; /* the line of the ANA_ERROR below */

static void *flooder(void *arg) {
  (void)arg;
  for (int i = 0; i < FLOOD_LINES; i++) {
    atomic_store(&flooder_line, __LINE__ + 1);
    ANA_ERROR("flood", "threads line %d", i);
  }
  return NULL;
}

static void test_concurrent_flood_counts_every_line_once(void **state) {
  (void)state;
  pthread_t threads[FLOOD_THREADS];
  unsigned long long before = ana_log_suppressed_total();
  for (int i = 0; i < FLOOD_THREADS; i++)
    assert_int_equal(pthread_create(&threads[i], NULL, flooder, NULL), 0);
  for (int i = 0; i < FLOOD_THREADS; i++)
    assert_int_equal(pthread_join(threads[i], NULL), 0);
  ana_test_sleep_ms(1100);
  ana_log_flush_suppressed();
  size_t written, reports;
  unsigned long suppressed;
  tally("threads line", atomic_load(&flooder_line), &written, &suppressed, &reports);
  assert_int_equal(written + suppressed, FLOOD_THREADS * FLOOD_LINES);
  assert_int_equal(ana_log_suppressed_total() - before, suppressed);
  assert_true(written <= 3 * ANA_LOG_SITE_LINES_PER_S);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_level_names),
      cmocka_unit_test_setup_teardown(test_line_is_one_json_object, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_each_level_is_named, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_escaping, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_nul_in_message, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_invalid_utf8_is_replaced, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_level_filtering, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_fields, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_request_id_on_every_line_of_the_thread, capture_start,
                                      capture_stop),
      cmocka_unit_test_setup_teardown(test_access_line, capture_start, capture_stop),
      cmocka_unit_test(test_access_sampling),
      cmocka_unit_test_setup_teardown(test_access_lines_are_capped_per_second, capture_start,
                                      capture_stop),
      cmocka_unit_test_setup_teardown(test_component_edge_cases, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_long_message_is_cut_at_a_character, capture_start,
                                      capture_stop),
      cmocka_unit_test_setup_teardown(test_line_limit, capture_start, capture_stop),
      cmocka_unit_test_setup_teardown(test_concurrent_writers_never_mix_lines, capture_start,
                                      capture_stop),
      cmocka_unit_test_setup_teardown(test_a_flooding_site_writes_ten_lines_a_second, capture_start,
                                      capture_stop),
      cmocka_unit_test_setup_teardown(test_sites_are_limited_independently, capture_start,
                                      capture_stop),
      cmocka_unit_test_setup_teardown(test_concurrent_flood_counts_every_line_once, capture_start,
                                      capture_stop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
