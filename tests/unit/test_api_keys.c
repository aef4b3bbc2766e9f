/* Unit tests of API keys: the key text (format, parse, base62, hash), and
 * verification against the real SQLite key store with a fixed clock: bad
 * shapes, unknown ids, wrong secrets, revocation (at once through the
 * registry, within the cache lifetime through the store), roles,
 * last-use times written at most once per interval, and the count of keys
 * not revoked (which ends protected mode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_api_keys.h"
#include "ana_local_db.h"
#include "ana_store.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static int64_t clock_ms = 1700000000000LL;
static struct ana_local_db *db;
static const struct ana_api_key_store_ops *ops;
static void *store;
static struct ana_api_keys *keys;
static struct ana_arena arena;

static int64_t fixed_clock(void *ctx) {
  (void)ctx;
  return clock_ms;
}

static int setup(void **state) {
  (void)state;
  struct ana_error err;
  snprintf(dir, sizeof dir, "/tmp/ana-apikeys-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  ops = ana_store_api_key_backend("sqlite");
  db = ana_local_db_open(dir, &err);
  store = db && ops ? ops->open(db, &err) : NULL;
  if (!store)
    return -1;
  struct ana_api_keys_options o;
  ana_api_keys_options_init(&o);
  o.ops = ops;
  o.store = store;
  o.touch_thread = false; /* the tests flush */
  o.clock = fixed_clock;
  keys = ana_api_keys_create(&o, &err);
  ana_arena_init(&arena, 4096, 0);
  return keys ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  ana_api_keys_destroy(keys);
  ops->close(store);
  ana_local_db_close(db);
  ana_arena_fini(&arena);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void issue(const char *account, const char *role, char key[ANA_API_KEY_CHARS + 1],
                  struct ana_api_key_record *rec) {
  struct ana_error err;
  assert_int_equal(ana_api_keys_issue(keys, account, role, "k", NULL, "test", key, rec, &err), 0);
}

static enum ana_api_key_reason verify(const char *key, struct ana_api_key_principal *p) {
  struct ana_error err;
  enum ana_api_key_reason why = ANA_API_KEY_UNAVAILABLE;
  struct ana_api_key_principal tmp;
  int rc = ana_api_keys_verify(keys, key, strlen(key), &arena, p ? p : &tmp, &why, &err);
  if (rc == 0)
    assert_int_equal(why, ANA_API_KEY_OK);
  else {
    assert_int_equal(err.code, ANA_STATUS_UNAUTHENTICATED);
    assert_string_equal(err.message, "invalid API key");
  }
  return why;
}

/* --- the key text --- */

static void format_is_prefix_id_and_43_base62_digits(void **state) {
  (void)state;
  uint8_t secret[32];
  char key[ANA_API_KEY_CHARS + 1], id[ANA_API_KEY_ID_CHARS + 1];
  memset(secret, 0, sizeof secret);
  ana_api_key_format("abcDEF012345", secret, key);
  assert_string_equal(key, "ana_abcDEF012345_0000000000000000000000000000000000000000000");
  secret[31] = 61;
  ana_api_key_format("abcDEF012345", secret, key);
  assert_string_equal(key + 17, "000000000000000000000000000000000000000000z");
  secret[31] = 62;
  ana_api_key_format("abcDEF012345", secret, key);
  assert_string_equal(key + 17, "0000000000000000000000000000000000000000010");
  /* 2^256 - 1 fits in 43 digits. */
  memset(secret, 0xff, sizeof secret);
  ana_api_key_format("abcDEF012345", secret, key);
  assert_int_equal(strlen(key), 60);
  assert_int_equal(ana_api_key_parse(key, strlen(key), id), ANA_API_KEY_OK);
  assert_string_equal(id, "abcDEF012345");
}

static void parse_refuses_every_bad_shape(void **state) {
  (void)state;
  char id[ANA_API_KEY_ID_CHARS + 1];
  const char *good = "ana_abcDEF012345_0000000000000000000000000000000000000000000";
  assert_int_equal(ana_api_key_parse(good, strlen(good), id), ANA_API_KEY_OK);
  struct {
    const char *key;
    enum ana_api_key_reason why;
  } bad[] = {
      {"", ANA_API_KEY_BAD_PREFIX},
      {"an", ANA_API_KEY_BAD_PREFIX},
      {"key_abcDEF012345_0000000000000000000000000000000000000000000", ANA_API_KEY_BAD_PREFIX},
      {"ANA_abcDEF012345_0000000000000000000000000000000000000000000", ANA_API_KEY_BAD_PREFIX},
      {"eyJhbGciOiJIUzI1NiJ9.e30.sig", ANA_API_KEY_BAD_PREFIX},
      {"ana_abcDEF012345_000000000000000000000000000000000000000000", ANA_API_KEY_BAD_LENGTH},
      {"ana_abcDEF012345_00000000000000000000000000000000000000000000", ANA_API_KEY_BAD_LENGTH},
      {"ana_abcDEF01234_00000000000000000000000000000000000000000000", ANA_API_KEY_BAD_LENGTH},
      {"ana_abcDEF0123456_000000000000000000000000000000000000000000", ANA_API_KEY_BAD_LENGTH},
      {"ana_abcDEF012345_000000000000000000000000000000000000000000-", ANA_API_KEY_BAD_CHARS},
      {"ana_abc+EF012345_0000000000000000000000000000000000000000000", ANA_API_KEY_BAD_CHARS},
      {"ana_abcDEF012345_00000000000000000000_0000000000000000000000", ANA_API_KEY_BAD_CHARS},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    enum ana_api_key_reason why = ana_api_key_parse(bad[i].key, strlen(bad[i].key), id);
    if (why != bad[i].why)
      fail_msg("%s: got %s, want %s", bad[i].key, ana_api_key_reason_text(why),
               ana_api_key_reason_text(bad[i].why));
  }
  /* A NUL inside: the length given is what counts. */
  char withnul[61];
  memcpy(withnul, good, 61);
  withnul[30] = '\0';
  assert_int_equal(ana_api_key_parse(withnul, 60, id), ANA_API_KEY_BAD_CHARS);
}

static void hash_is_sha256_of_the_whole_key(void **state) {
  (void)state;
  const char *key = "ana_abcDEF012345_0000000000000000000000000000000000000000000";
  uint8_t a[32], b[32];
  ana_api_key_hash(key, strlen(key), a);
  SHA256((const unsigned char *)key, strlen(key), b);
  assert_memory_equal(a, b, 32);
}

static void roles_are_canonical(void **state) {
  (void)state;
  assert_string_equal(ana_api_key_role("reader"), "viewer");
  assert_string_equal(ana_api_key_role("viewer"), "viewer");
  assert_string_equal(ana_api_key_role("ingest"), "ingest");
  assert_string_equal(ana_api_key_role("admin"), "admin");
  assert_null(ana_api_key_role("Admin"));
  assert_null(ana_api_key_role("root"));
  assert_null(ana_api_key_role(""));
  assert_true(ana_api_key_id_valid("abcDEF012345"));
  assert_false(ana_api_key_id_valid("abcDEF01234"));
  assert_false(ana_api_key_id_valid("abcDEF0123456"));
  assert_false(ana_api_key_id_valid("abcDEF01234-"));
  assert_false(ana_api_key_id_valid(NULL));
}

/* --- the registry --- */

static void an_issued_key_verifies_to_its_account_and_role(void **state) {
  (void)state;
  char key[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec;
  issue("acme", "reader", key, &rec);
  assert_int_equal(strlen(key), ANA_API_KEY_CHARS);
  assert_string_equal(rec.role, "viewer");
  struct ana_api_key_principal p;
  assert_int_equal(verify(key, &p), ANA_API_KEY_OK);
  assert_string_equal(p.account_id, "acme");
  assert_string_equal(p.role, "viewer");
  assert_string_equal(p.key_id, rec.key_id);
  /* Only the hash is stored. */
  struct ana_error err;
  uint8_t h[32];
  ana_api_key_hash(key, strlen(key), h);
  assert_memory_equal(rec.hash, h, 32);
  /* Two keys never share id or secret. */
  char key2[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec2;
  issue("acme", "ingest", key2, &rec2);
  assert_string_not_equal(rec.key_id, rec2.key_id);
  assert_memory_not_equal(key + 17, key2 + 17, 43);
  /* A bad role or an over-long name names the field. */
  assert_int_equal(ana_api_keys_issue(keys, "acme", "boss", NULL, NULL, "t", key2, &rec2, &err),
                   ANA_ERR_INVALID);
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "role: "));
  char name[200];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  assert_int_equal(ana_api_keys_issue(keys, "acme", "admin", name, NULL, "t", key2, &rec2, &err),
                   ANA_ERR_INVALID);
  assert_non_null(strstr(err.message, "name: "));
}

static void bad_keys_are_refused_with_their_reason(void **state) {
  (void)state;
  char key[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec;
  issue("acme", "admin", key, &rec);
  assert_int_equal(verify("Bearer x", NULL), ANA_API_KEY_BAD_PREFIX);
  assert_int_equal(verify("ana_short", NULL), ANA_API_KEY_BAD_LENGTH);
  char bad[ANA_API_KEY_CHARS + 1];
  memcpy(bad, key, sizeof bad);
  bad[40] = '/';
  assert_int_equal(verify(bad, NULL), ANA_API_KEY_BAD_CHARS);
  /* Right id, wrong secret (one digit changed). */
  memcpy(bad, key, sizeof bad);
  bad[59] = bad[59] == 'a' ? 'b' : 'a';
  assert_int_equal(verify(bad, NULL), ANA_API_KEY_BAD_SECRET);
  /* Unknown id, right secret. */
  memcpy(bad, key, sizeof bad);
  bad[4] = bad[4] == 'a' ? 'b' : 'a';
  assert_int_equal(verify(bad, NULL), ANA_API_KEY_UNKNOWN_ID);
  /* An unknown id stays unknown from the cache, and the real key still works. */
  assert_int_equal(verify(bad, NULL), ANA_API_KEY_UNKNOWN_ID);
  assert_int_equal(verify(key, NULL), ANA_API_KEY_OK);
}

static void a_revoked_key_stops_at_once_here(void **state) {
  (void)state;
  char key[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec;
  struct ana_error err;
  issue("acme", "admin", key, &rec);
  assert_int_equal(verify(key, NULL), ANA_API_KEY_OK); /* cached now */
  /* Another account cannot revoke it, nor see it. */
  assert_int_equal(ana_api_keys_revoke(keys, "other", rec.key_id, &err), ANA_ERR_NOT_FOUND);
  assert_int_equal(err.code, ANA_STATUS_NOT_FOUND);
  assert_int_equal(verify(key, NULL), ANA_API_KEY_OK);
  assert_int_equal(ana_api_keys_revoke(keys, "acme", rec.key_id, &err), 0);
  assert_int_equal(verify(key, NULL), ANA_API_KEY_REVOKED);
  /* Revoking again keeps the first time. */
  clock_ms += 5000;
  assert_int_equal(ana_api_keys_revoke(keys, "acme", rec.key_id, &err), 0);
  assert_int_equal(ana_api_keys_revoke(keys, NULL, "malformed!", &err), ANA_ERR_NOT_FOUND);
}

static int keep_record(void *ctx, const struct ana_api_key_record *r) {
  struct ana_api_key_record *out = ctx;
  *out = *r;
  out->account_id = out->role = out->name = out->created_by = NULL; /* borrowed: gone */
  return 1;
}

static void a_key_revoked_in_the_store_stops_within_the_cache_lifetime(void **state) {
  (void)state;
  char key[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec;
  struct ana_error err;
  issue("acme", "admin", key, &rec);
  assert_int_equal(verify(key, NULL), ANA_API_KEY_OK);
  /* As `analyticsd keys revoke` does from another process: past the registry. */
  assert_int_equal(ops->revoke(store, NULL, rec.key_id, clock_ms, &err), 0);
  clock_ms += ANA_API_KEYS_DEFAULT_CACHE_TTL_MS - 1;
  assert_int_equal(verify(key, NULL), ANA_API_KEY_OK); /* still cached */
  clock_ms += 1;
  assert_int_equal(verify(key, NULL), ANA_API_KEY_REVOKED);
  struct ana_api_key_record got;
  assert_int_equal(ana_api_keys_get(keys, "acme", rec.key_id, keep_record, &got, &err), 0);
  assert_int_equal(got.revoked_at_ms, clock_ms - ANA_API_KEYS_DEFAULT_CACHE_TTL_MS);
  assert_int_equal(ana_api_keys_get(keys, "other", rec.key_id, keep_record, &got, &err),
                   ANA_ERR_NOT_FOUND);
  assert_int_equal(err.code, ANA_STATUS_NOT_FOUND);
}

static void last_use_is_written_at_most_once_a_minute(void **state) {
  (void)state;
  char key[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec, got;
  struct ana_error err;
  issue("acme", "ingest", key, &rec);
  int64_t first = clock_ms;
  assert_int_equal(verify(key, NULL), ANA_API_KEY_OK);
  /* Not written by the verification itself. */
  assert_int_equal(ana_api_keys_get(keys, "acme", rec.key_id, keep_record, &got, &err), 0);
  assert_int_equal(got.last_used_at_ms, 0);
  ana_api_keys_flush(keys);
  assert_int_equal(ana_api_keys_get(keys, "acme", rec.key_id, keep_record, &got, &err), 0);
  assert_int_equal(got.last_used_at_ms, first);
  /* Uses within the minute (across cache reloads) write nothing. */
  for (int i = 0; i < 59; i++) {
    clock_ms += 1000;
    assert_int_equal(verify(key, NULL), ANA_API_KEY_OK);
    ana_api_keys_flush(keys);
  }
  assert_int_equal(ana_api_keys_get(keys, "acme", rec.key_id, keep_record, &got, &err), 0);
  assert_int_equal(got.last_used_at_ms, first);
  clock_ms += 1000;
  assert_int_equal(verify(key, NULL), ANA_API_KEY_OK);
  ana_api_keys_flush(keys);
  assert_int_equal(ana_api_keys_get(keys, "acme", rec.key_id, keep_record, &got, &err), 0);
  assert_int_equal(got.last_used_at_ms, clock_ms);
  /* A failed verification is no use. */
  clock_ms += 120000;
  char bad[ANA_API_KEY_CHARS + 1];
  memcpy(bad, key, sizeof bad);
  bad[59] = bad[59] == 'a' ? 'b' : 'a';
  assert_int_equal(verify(bad, NULL), ANA_API_KEY_BAD_SECRET);
  ana_api_keys_flush(keys);
  assert_int_equal(ana_api_keys_get(keys, "acme", rec.key_id, keep_record, &got, &err), 0);
  assert_int_equal(got.last_used_at_ms, clock_ms - 120000);
}

struct listed {
  char ids[8][ANA_API_KEY_ID_CHARS + 1];
  int n;
};

static int keep_id(void *ctx, const struct ana_api_key_record *r) {
  struct listed *l = ctx;
  if (l->n < 8)
    memcpy(l->ids[l->n++], r->key_id, ANA_API_KEY_ID_CHARS + 1);
  return 0;
}

static void list_is_per_account_and_paged_by_id(void **state) {
  (void)state;
  char key[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec;
  struct ana_error err;
  for (int i = 0; i < 3; i++)
    issue("acme", "viewer", key, &rec);
  issue("other", "admin", key, &rec);
  struct listed l = {.n = 0};
  assert_int_equal(ana_api_keys_list(keys, "acme", NULL, 10, keep_id, &l, &err), 0);
  assert_int_equal(l.n, 3);
  assert_true(strcmp(l.ids[0], l.ids[1]) < 0 && strcmp(l.ids[1], l.ids[2]) < 0);
  struct listed page = {.n = 0};
  assert_int_equal(ana_api_keys_list(keys, "acme", l.ids[0], 10, keep_id, &page, &err), 0);
  assert_int_equal(page.n, 2);
  assert_string_equal(page.ids[0], l.ids[1]);
}

/* The count: 0 on an empty store, kept by issue and revoke here, and seen
 * by a recount when another registry (another process) changes the store. */
static void active_keys_are_counted(void **state) {
  (void)state;
  struct ana_error err;
  char key[ANA_API_KEY_CHARS + 1];
  struct ana_api_key_record rec, rec2;
  assert_int_equal(ana_api_keys_active(keys), 0);
  issue("acme", "ingest", key, &rec);
  assert_int_equal(ana_api_keys_active(keys), 1);
  issue("other", "admin", key, &rec2);
  assert_int_equal(ana_api_keys_active(keys), 2);
  assert_int_equal(ana_api_keys_revoke(keys, "acme", rec.key_id, &err), 0);
  assert_int_equal(ana_api_keys_active(keys), 1);
  assert_int_equal(ana_api_keys_revoke(keys, "acme", rec.key_id, &err), 0); /* again: no change */
  assert_int_equal(ana_api_keys_active(keys), 1);

  struct ana_api_keys_options o;
  ana_api_keys_options_init(&o);
  o.ops = ops;
  o.store = store;
  o.touch_thread = false;
  struct ana_api_keys *cli = ana_api_keys_create(&o, &err);
  assert_non_null(cli);
  assert_int_equal(ana_api_keys_active(cli), 1);
  assert_int_equal(ana_api_keys_revoke(cli, NULL, rec2.key_id, &err), 0);
  ana_api_keys_destroy(cli);
  assert_int_equal(ana_api_keys_active(keys), 1); /* not yet re-read */
  assert_int_equal(ana_api_keys_recount(keys, &err), 0);
  assert_int_equal(ana_api_keys_active(keys), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(format_is_prefix_id_and_43_base62_digits),
      cmocka_unit_test(parse_refuses_every_bad_shape),
      cmocka_unit_test(hash_is_sha256_of_the_whole_key),
      cmocka_unit_test(roles_are_canonical),
      cmocka_unit_test_setup_teardown(an_issued_key_verifies_to_its_account_and_role, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(bad_keys_are_refused_with_their_reason, setup, teardown),
      cmocka_unit_test_setup_teardown(a_revoked_key_stops_at_once_here, setup, teardown),
      cmocka_unit_test_setup_teardown(a_key_revoked_in_the_store_stops_within_the_cache_lifetime,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(last_use_is_written_at_most_once_a_minute, setup, teardown),
      cmocka_unit_test_setup_teardown(list_is_per_account_and_paged_by_id, setup, teardown),
      cmocka_unit_test_setup_teardown(active_keys_are_counted, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
