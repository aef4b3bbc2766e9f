/* Unit tests of the ClickHouse rows' property arrays: read straight from the committed JSON
 * text, they are the same bytes as through jansson, for flat objects and for every text the
 * direct reading hands to jansson (escapes, nesting, big numbers, duplicate keys, bad JSON). */
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(flat_and_odd_objects_give_the_same_bytes),
      cmocka_unit_test(random_flat_objects_give_the_same_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
