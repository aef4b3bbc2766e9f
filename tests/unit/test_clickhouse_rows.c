/* Unit tests of the ClickHouse rows' property arrays: read straight from the committed JSON
 * text, they are the same bytes as through jansson, for flat objects and for every text the
 * direct reading hands to jansson (escapes, nesting, big numbers, duplicate keys, bad JSON);
 * and of the insert bodies' gzip streams (a member per piece) at every level. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_alloc.h"
#include "clickhouse/clickhouse_backend.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Whether json was read straight from the text. */
static bool same_bytes(const char *json) {
  struct ana_ch_rows a = {0}, b = {0};
  bool direct = ana_clickhouse_put_props(&a, json, true);
  ana_clickhouse_put_props(&b, json, false);
  assert_false(a.failed || b.failed);
  if (a.len != b.len || (a.len && memcmp(a.p, b.p, a.len) != 0))
    fail_msg("direct and parsed differ for %s", json ? json : "(null)");
  ana_free(a.p);
  ana_free(b.p);
  return direct;
}

static void flat_and_odd_objects_give_the_same_bytes(void **state) {
  (void)state;
  static const char *const cases[] = {
      "{}",
      " { } ",
      "{\"plan\":\"pro\",\"n\":3,\"ok\":true,\"no\":false,\"gone\":null}",
      "{ \"a\" : \"x\" , \"b\" : -12 }\n",
      "{\"r\":1.5,\"e\":1e300,\"small\":1e-320,\"neg\":-0.0,\"p\":3.14159265358979,\"x\":2E+3}",
      "{\"big\":123456789012345678,\"bigger\":1234567890123456789012}",
      "{\"z\":-0,\"zz\":0,\"m\":-7}",
      "{\"u\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
      "{\"bad\":\"\xc3\x28\"}",
      "{\"surrogate\":\"\xed\xa0\x80\"}",
      "{\"esc\":\"a\\\"b\",\"nl\":\"x\\ny\",\"uni\":\"\\u00e9\"}",
      "{\"k\\u0041\":1}",
      "{\"o\":{\"a\":1},\"l\":[1,2,{\"b\":null}],\"s\":\"t\"}",
      "{\"d\":1,\"d\":2}",
      "{\"a\":1,}",
      "{\"a\":01}",
      "{\"a\":1.}",
      "{\"a\":.5}",
      "{\"a\":1e}",
      "{\"a\":tru}",
      "{\"a\":1} x",
      "{\"a\":1",
      "[1,2]",
      "\"text\"",
      "3",
      "",
      "not json",
      "{\"inf\":1e400}",
      "{\"ctl\":\"a\tb\"}",
      NULL,
  };
  size_t direct = 0;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    direct += same_bytes(cases[i]);
  /* the flat ones: the first five and the UTF-8 one */
  assert_int_equal(direct, 6);
}

/* Objects as the server commits them (compact, keys in order), with random values. */
static void random_flat_objects_give_the_same_bytes(void **state) {
  (void)state;
  srand(22);
  for (int round = 0; round < 2000; round++) {
    json_t *o = json_object();
    int n = rand() % 12;
    for (int i = 0; i < n; i++) {
      char key[32];
      snprintf(key, sizeof key, "k%d_%d", i, rand() % 100);
      json_t *v;
      switch (rand() % 6) {
      case 0: v = json_integer((json_int_t)rand() * (rand() % 2 ? 1 : -1)); break;
      case 1:
        v = json_real((double)rand() / (rand() % 1000 + 1) * (rand() % 2 ? 1e-5 : 1e5));
        break;
      case 2: v = json_boolean(rand() % 2); break;
      case 3: v = json_null(); break;
      default: {
        char s[32];
        snprintf(s, sizeof s, "v%d\xc3\xa9%d", rand(), rand() % 7);
        v = json_string(s);
      }
      }
      json_object_set_new(o, key, v);
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    assert_true(same_bytes(text));
    free(text);
    json_decref(o);
  }
}

/* Inflates a gzip stream of one or more members into out (cap bytes); its length, or -1. */
static long gunzip_all(const unsigned char *in, size_t len, unsigned char *out, size_t cap) {
  z_stream z = {0};
  assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  long n = -1;
  for (;;) {
    int rc = inflate(&z, Z_NO_FLUSH);
    if (rc == Z_STREAM_END && z.avail_in == 0) {
      n = (long)(cap - z.avail_out);
      break;
    }
    if (rc == Z_STREAM_END) { /* the next member */
      assert_int_equal(inflateReset(&z), Z_OK);
      continue;
    }
    if (rc != Z_OK)
      break;
  }
  inflateEnd(&z);
  return n;
}

static void gzip_streams_of_pieces_inflate_to_the_rows_at_every_level(void **state) {
  (void)state;
  enum { LEN = 700000 };
  unsigned char *rows = ana_malloc(LEN), *back = ana_malloc(LEN + 1);
  assert_non_null(rows);
  assert_non_null(back);
  uint32_t x = 22;
  for (size_t i = 0; i < LEN; i++) { /* text-like: compressible, not trivially */
    x = x * 1103515245u + 12345u;
    rows[i] = (unsigned char)("abcdefgh{}\":,0123"[(x >> 16) % 18]);
  }
  size_t sizes[13];
  for (int level = 0; level <= 12; level++) {
    struct ana_clickhouse_gz *g = ana_clickhouse_gz_new(level);
    assert_non_null(g);
    /* pieces as the encoder hands them over, the last one with the end */
    assert_int_equal(ana_clickhouse_gz_add(g, rows, 262144, false), 0);
    assert_int_equal(ana_clickhouse_gz_add(g, rows + 262144, 300000, false), 0);
    assert_int_equal(ana_clickhouse_gz_add(g, rows + 562144, LEN - 562144, true), 0);
    size_t len = 0;
    unsigned char *body = ana_clickhouse_gz_take(g, &len);
    ana_clickhouse_gz_free(g);
    sizes[level] = len;
    if (level == 0) { /* sent as it is */
      assert_int_equal(len, LEN);
      assert_memory_equal(body, rows, LEN);
    } else {
      assert_true(len < LEN);
      assert_int_equal(gunzip_all(body, len, back, LEN + 1), LEN);
      assert_memory_equal(back, rows, LEN);
    }
    ana_free(body);
  }
  assert_true(sizes[12] < sizes[1]);
  /* no rows at all: still one (empty) gzip member */
  struct ana_clickhouse_gz *g = ana_clickhouse_gz_new(1);
  assert_int_equal(ana_clickhouse_gz_add(g, NULL, 0, true), 0);
  size_t len = 0;
  unsigned char *body = ana_clickhouse_gz_take(g, &len);
  ana_clickhouse_gz_free(g);
  assert_true(len > 0);
  assert_int_equal(gunzip_all(body, len, back, LEN + 1), 0);
  ana_free(body);
  ana_free(rows);
  ana_free(back);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(flat_and_odd_objects_give_the_same_bytes),
      cmocka_unit_test(random_flat_objects_give_the_same_bytes),
      cmocka_unit_test(gzip_streams_of_pieces_inflate_to_the_rows_at_every_level),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
