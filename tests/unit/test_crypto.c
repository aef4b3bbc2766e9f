/* Unit tests of envelope encryption over the real SQLite data key store:
 * seal/open round trips, tampering with any byte is an error, values bound
 * to their account and field, rotation keeps old values readable, a wrong
 * master key opens nothing, another process's rotation is seen, blind
 * indexes are stable, keyed per account and per field, the per-event
 * sealer gives what the one-shot calls give, a master key change, and files
 * sealed in chunks (ranges across chunks, an altered or cut file refused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_alloc.h"
#include "ana_arena.h"
#include "ana_crypto.h"
#include "ana_local_db.h"
#include "ana_store.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static struct ana_local_db *db;
static const struct ana_data_key_store_ops *ops;
static void *store;
static struct ana_crypto *crypto;
static const uint8_t master[32] = "0123456789abcdef0123456789abcdef";

static struct ana_crypto *make(const uint8_t *key, size_t len, int refresh_ms) {
  struct ana_error err;
  struct ana_crypto_options o = {key, len, ops, store, refresh_ms};
  return ana_crypto_create(&o, &err);
}

static int setup(void **state) {
  (void)state;
  struct ana_error err;
  snprintf(dir, sizeof dir, "/tmp/ana-crypto-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  ops = ana_store_data_key_backend("sqlite");
  db = ana_local_db_open(dir, &err);
  store = db && ops ? ops->open(db, &err) : NULL;
  if (!store)
    return -1;
  crypto = make(master, sizeof master, 0);
  return crypto ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  ana_crypto_destroy(crypto);
  ops->close(store);
  ana_local_db_close(db);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static char *open_ok(struct ana_crypto *c, const char *account, const char *field,
                     const char *sealed) {
  struct ana_error err;
  char *pt = NULL;
  size_t n = 0;
  int rc = ana_crypto_open(c, account, field, sealed, &pt, &n, &err);
  if (rc < 0)
    print_error("%s\n", err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(n, strlen(pt));
  return pt;
}

/* The sealed value opens (with `c`) to exactly `expected`. */
static void assert_opens_to(struct ana_crypto *c, const char *account, const char *field,
                            const char *sealed, const char *expected) {
  char *pt = open_ok(c, account, field, sealed);
  assert_string_equal(pt, expected);
  ana_free(pt);
}

static void open_fails(struct ana_crypto *c, const char *account, const char *field,
                       const char *sealed) {
  struct ana_error err;
  char *pt = (char *)1;
  size_t n = 7;
  assert_true(ana_crypto_open(c, account, field, sealed, &pt, &n, &err) < 0);
  assert_null(pt);
  assert_int_equal(n, 0);
}

static void test_round_trip(void **state) {
  (void)state;
  struct ana_error err;
  char *a = NULL, *b = NULL;
  assert_int_equal(
      ana_crypto_seal(crypto, "acme", "properties.email", "ann@example.com", 15, &a, &err), 0);
  assert_true(ana_crypto_is_sealed(a));
  assert_null(strstr(a, "ann@example.com"));
  assert_int_equal(ana_crypto_sealed_key_id(a), 1);
  /* A fresh nonce each time: the same value seals differently. */
  assert_int_equal(
      ana_crypto_seal(crypto, "acme", "properties.email", "ann@example.com", 15, &b, &err), 0);
  assert_string_not_equal(a, b);
  assert_opens_to(crypto, "acme", "properties.email", a, "ann@example.com");
  assert_opens_to(crypto, "acme", "properties.email", b, "ann@example.com");
  /* The empty value too. */
  ana_free(b);
  assert_int_equal(ana_crypto_seal(crypto, "acme", "x", "", 0, &b, &err), 0);
  assert_opens_to(crypto, "acme", "x", b, "");
  /* A second context on the same data: the keys came from the store. */
  struct ana_crypto *other = make(master, sizeof master, 0);
  assert_non_null(other);
  assert_opens_to(other, "acme", "properties.email", a, "ann@example.com");
  ana_crypto_destroy(other);
  ana_free(a);
  ana_free(b);
}

static void test_tamper(void **state) {
  (void)state;
  struct ana_error err;
  char *a = NULL;
  assert_int_equal(ana_crypto_seal(crypto, "acme", "properties.phone", "+1 555 0100", 11, &a, &err),
                   0);
  /* Flip each base64 character of the body in turn (header, nonce, body,
   * tag): every change is refused, none opens to something else. */
  size_t pre = strlen(ANA_CRYPTO_SEALED_PREFIX), len = strlen(a);
  for (size_t i = pre; i < len; i++) {
    char saved = a[i];
    if (saved == '=')
      continue;
    a[i] = saved == 'A' ? 'B' : 'A';
    open_fails(crypto, "acme", "properties.phone", a);
    a[i] = saved;
  }
  /* Truncated, extended, not base64, not sealed at all. */
  char *cut = strndup(a, len - 4);
  open_fails(crypto, "acme", "properties.phone", cut);
  free(cut);
  char longer[512];
  snprintf(longer, sizeof longer, "%sAAAA", a);
  open_fails(crypto, "acme", "properties.phone", longer);
  open_fails(crypto, "acme", "properties.phone", "ana:enc:!!!!");
  open_fails(crypto, "acme", "properties.phone", "ana:enc:");
  open_fails(crypto, "acme", "properties.phone", "+1 555 0100");
  /* Bound to its account and its field. */
  open_fails(crypto, "other", "properties.phone", a);
  open_fails(crypto, "acme", "properties.email", a);
  assert_opens_to(crypto, "acme", "properties.phone", a, "+1 555 0100");
  ana_free(a);
}

static void test_rotate(void **state) {
  (void)state;
  struct ana_error err;
  char *old = NULL, *new = NULL;
  assert_int_equal(ana_crypto_seal(crypto, "rot", "f", "before", 6, &old, &err), 0);
  assert_int_equal(ana_crypto_sealed_key_id(old), 1);
  uint32_t id = 0;
  assert_int_equal(ana_crypto_rotate(crypto, "rot", &id, &err), 0);
  assert_int_equal(id, 2);
  assert_int_equal(ana_crypto_current_key_id(crypto, "rot"), 2);
  assert_int_equal(ana_crypto_seal(crypto, "rot", "f", "after", 5, &new, &err), 0);
  assert_int_equal(ana_crypto_sealed_key_id(new), 2);
  assert_opens_to(crypto, "rot", "f", old, "before");
  assert_opens_to(crypto, "rot", "f", new, "after");
  /* Other accounts keep their keys. */
  assert_int_equal(ana_crypto_current_key_id(crypto, "acme2"), 1);

  /* Another process rotates: a context that caches keys sees it once its
   * cache is older than refresh_ms, and opens the new key's values at once. */
  struct ana_crypto *cached = make(master, sizeof master, 60000);
  assert_non_null(cached);
  assert_int_equal(ana_crypto_current_key_id(cached, "rot"), 2);
  assert_int_equal(ana_crypto_rotate(crypto, "rot", &id, &err), 0);
  assert_int_equal(id, 3);
  char *third = NULL;
  assert_int_equal(ana_crypto_seal(crypto, "rot", "f", "third", 5, &third, &err), 0);
  assert_opens_to(cached, "rot", "f", third, "third");
  assert_int_equal(ana_crypto_current_key_id(cached, "rot"), 3);
  ana_crypto_destroy(cached);
  ana_free(old);
  ana_free(new);
  ana_free(third);
}

static void test_wrong_master_key(void **state) {
  (void)state;
  struct ana_error err;
  char *a = NULL;
  assert_int_equal(ana_crypto_seal(crypto, "acme", "f", "secret", 6, &a, &err), 0);
  static const uint8_t wrong[32] = "0123456789abcdef0123456789abcdeX";
  struct ana_crypto *w = make(wrong, sizeof wrong, 0);
  assert_non_null(w);
  char *pt = NULL;
  size_t n = 0;
  assert_true(ana_crypto_open(w, "acme", "f", a, &pt, &n, &err) < 0);
  assert_null(pt);
  assert_int_equal(err.code, ANA_STATUS_DATA_LOSS);
  assert_non_null(strstr(err.message, "master key"));
  /* It cannot seal for that account either (its keys do not open). */
  char *b = NULL;
  assert_true(ana_crypto_seal(w, "acme", "f", "x", 1, &b, &err) < 0);
  assert_null(b);
  ana_crypto_destroy(w);
  /* A short master key is refused. */
  struct ana_crypto_options o = {master, 8, ops, store, 0};
  assert_null(ana_crypto_create(&o, &err));
  ana_free(a);
}

static void test_blind_index(void **state) {
  (void)state;
  char a[ANA_CRYPTO_BLIND_CHARS + 1], b[ANA_CRYPTO_BLIND_CHARS + 1];
  assert_int_equal(ana_crypto_blind_index(crypto, "acme", "properties.email", "x@y", 3, a), 0);
  assert_int_equal(strlen(a), ANA_CRYPTO_BLIND_CHARS);
  assert_memory_equal(a, ANA_CRYPTO_BLIND_PREFIX, strlen(ANA_CRYPTO_BLIND_PREFIX));
  assert_int_equal(ana_crypto_blind_index(crypto, "acme", "properties.email", "x@y", 3, b), 0);
  assert_string_equal(a, b);
  assert_int_equal(ana_crypto_blind_index(crypto, "acme", "properties.email", "x@z", 3, b), 0);
  assert_string_not_equal(a, b);
  assert_int_equal(ana_crypto_blind_index(crypto, "other", "properties.email", "x@y", 3, b), 0);
  assert_string_not_equal(a, b);
  assert_int_equal(ana_crypto_blind_index(crypto, "acme", "properties.phone", "x@y", 3, b), 0);
  assert_string_not_equal(a, b);
  /* Stable across rotation. */
  uint32_t id;
  struct ana_error err;
  assert_int_equal(ana_crypto_rotate(crypto, "acme", &id, &err), 0);
  assert_int_equal(ana_crypto_blind_index(crypto, "acme", "properties.email", "x@y", 3, b), 0);
  assert_string_equal(a, b);
}

/* The sealer (keys taken once per event, results in an arena): its texts
 * open like ana_crypto_seal's, its blind indexes equal ana_crypto_blind_index,
 * it seals with the key current when it was made, and values past the stack
 * buffer go through the heap. */
static void test_sealer(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_crypto_sealer s;
  struct ana_arena arena;
  ana_arena_init(&arena, 1024, 0);
  assert_int_equal(ana_crypto_sealer_init(crypto, "acme", &s, &err), 0);
  assert_int_equal(s.key_id, 1);
  char *a = ana_crypto_sealer_seal(&s, "properties.email", "ann@example.com", 15, &arena, &err);
  assert_non_null(a);
  assert_int_equal(ana_crypto_sealed_key_id(a), 1);
  assert_opens_to(crypto, "acme", "properties.email", a, "ann@example.com");
  open_fails(crypto, "acme", "properties.phone", a);
  char big[4000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  char *b = ana_crypto_sealer_seal(&s, "properties.note", big, strlen(big), &arena, &err);
  assert_non_null(b);
  assert_opens_to(crypto, "acme", "properties.note", b, big);
  char x[ANA_CRYPTO_BLIND_CHARS + 1], y[ANA_CRYPTO_BLIND_CHARS + 1];
  assert_int_equal(ana_crypto_sealer_blind(&s, "properties.email", "x@y", 3, x), 0);
  assert_int_equal(ana_crypto_blind_index(crypto, "acme", "properties.email", "x@y", 3, y), 0);
  assert_string_equal(x, y);
  ana_crypto_sealer_fini(&s);
  /* After a rotation a new sealer seals with key 2. */
  uint32_t id;
  assert_int_equal(ana_crypto_rotate(crypto, "acme", &id, &err), 0);
  assert_int_equal(ana_crypto_sealer_init(crypto, "acme", &s, &err), 0);
  assert_int_equal(s.key_id, 2);
  b = ana_crypto_sealer_seal(&s, "properties.email", "bob", 3, &arena, &err);
  assert_int_equal(ana_crypto_sealed_key_id(b), 2);
  ana_crypto_sealer_fini(&s);
  assert_opens_to(crypto, "acme", "properties.email", a, "ann@example.com");
  ana_arena_fini(&arena);
}

/* Changing the master key: every data key (two accounts, one rotated) and
 * the key root are rewrapped in one go; afterwards only the new key opens
 * what was sealed, blind indexes are what they were (the known answer is
 * HKDF-SHA256 then HMAC-SHA256 as RFC 5869 and 2104 define them), running
 * it again changes nothing, and a third key opens nothing and changes
 * nothing. */
static void test_rotate_master(void **state) {
  (void)state;
  struct ana_error err;
  char *a = NULL, *b = NULL, *c2 = NULL;
  uint32_t id;
  char before[ANA_CRYPTO_BLIND_CHARS + 1], after[ANA_CRYPTO_BLIND_CHARS + 1];
  assert_int_equal(ana_crypto_seal(crypto, "acme", "f", "one", 3, &a, &err), 0);
  assert_int_equal(ana_crypto_rotate(crypto, "acme", &id, &err), 0);
  assert_int_equal(ana_crypto_seal(crypto, "acme", "f", "two", 3, &b, &err), 0);
  assert_int_equal(ana_crypto_seal(crypto, "beta", "f", "three", 5, &c2, &err), 0);
  assert_int_equal(ana_crypto_blind_index(crypto, "acme", "properties.email", "x@y", 3, before), 0);
  assert_string_equal(before, "ana:bi:h9tqRR6JLJN7AJAzWE7vBA");
  static const uint8_t next[40] = "a new master key of forty bytes, exactly";
  struct ana_crypto_rewrap_result res;
  assert_int_equal(
      ana_crypto_rewrap_master(master, sizeof master, next, sizeof next, ops, store, &res, &err),
      0);
  assert_int_equal(res.rewrapped, 3);
  assert_int_equal(res.already, 0);
  assert_true(res.root_written);
  struct ana_crypto *n = make(next, sizeof next, 0);
  assert_non_null(n);
  assert_opens_to(n, "acme", "f", a, "one");
  assert_opens_to(n, "acme", "f", b, "two");
  assert_opens_to(n, "beta", "f", c2, "three");
  assert_int_equal(ana_crypto_blind_index(n, "acme", "properties.email", "x@y", 3, after), 0);
  assert_string_equal(before, after);
  assert_int_equal(ana_crypto_current_key_id(n, "acme"), 2);
  /* The old key no longer opens the store's keys (nor its key root). */
  struct ana_crypto_options o = {master, sizeof master, ops, store, 0};
  assert_null(ana_crypto_create(&o, &err));
  assert_int_equal(err.code, ANA_STATUS_DATA_LOSS);
  /* Again: nothing to rewrap. */
  assert_int_equal(
      ana_crypto_rewrap_master(master, sizeof master, next, sizeof next, ops, store, &res, &err),
      0);
  assert_int_equal(res.rewrapped, 0);
  assert_int_equal(res.already, 4);
  /* A key that is neither: refused, nothing changed. */
  static const uint8_t third[32] = "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ";
  static const uint8_t fourth[32] = "YYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYY";
  assert_true(ana_crypto_rewrap_master(third, sizeof third, fourth, sizeof fourth, ops, store, &res,
                                       &err) < 0);
  assert_int_equal(err.code, ANA_STATUS_DATA_LOSS);
  assert_opens_to(n, "acme", "f", a, "one");
  /* A second change (the root moves along, blind indexes still equal). */
  assert_int_equal(
      ana_crypto_rewrap_master(next, sizeof next, third, sizeof third, ops, store, &res, &err), 0);
  assert_int_equal(res.rewrapped, 3);
  assert_true(res.root_written);
  struct ana_crypto *t = make(third, sizeof third, 0);
  assert_non_null(t);
  assert_opens_to(t, "beta", "f", c2, "three");
  assert_int_equal(ana_crypto_blind_index(t, "acme", "properties.email", "x@y", 3, after), 0);
  assert_string_equal(before, after);
  ana_crypto_destroy(t);
  ana_crypto_destroy(n);
  ana_free(a);
  ana_free(b);
  ana_free(c2);
}

/* A damaged data key (of an account sorted last): the change fails there
 * naming it, and the keys rewrapped before it are rolled back (they open
 * with the old master key, not with the new one). */
static void test_rotate_master_rolls_back(void **state) {
  (void)state;
  struct ana_error err;
  char *a = NULL, *b = NULL;
  assert_int_equal(ana_crypto_seal(crypto, "acme", "f", "one", 3, &a, &err), 0);
  assert_int_equal(ana_crypto_seal(crypto, "beta", "f", "two", 3, &b, &err), 0);
  uint8_t junk[60] = {0};
  struct ana_data_key_record bad = {"zzz", 1, junk, sizeof junk, 0};
  assert_int_equal(ops->insert(store, &bad, &err), 0);
  static const uint8_t next[32] = "NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN";
  struct ana_crypto_rewrap_result res;
  assert_true(ana_crypto_rewrap_master(master, sizeof master, next, sizeof next, ops, store, &res,
                                       &err) < 0);
  assert_int_equal(err.code, ANA_STATUS_DATA_LOSS);
  assert_non_null(strstr(err.message, "zzz"));
  assert_int_equal(res.rewrapped, 0);
  struct ana_crypto *old = make(master, sizeof master, 0);
  assert_non_null(old);
  assert_opens_to(old, "acme", "f", a, "one");
  assert_opens_to(old, "beta", "f", b, "two");
  ana_crypto_destroy(old);
  struct ana_crypto *n = make(next, sizeof next, 0);
  assert_non_null(n); /* no key root stored: it starts, but opens nothing */
  open_fails(n, "acme", "f", a);
  ana_crypto_destroy(n);
  ana_free(a);
  ana_free(b);
}

static void write_bytes(const char *path, const uint8_t *p, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(p, 1, n, f), n);
  fclose(f);
}

/* The whole clear content of a sealed file through ranges of `step`
 * bytes; NULL (err filled) when a chunk does not open. */
static uint8_t *read_sealed(const char *path, const char *account, size_t step, int64_t *size,
                            struct ana_error *err) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  struct ana_crypto_file *f = ana_crypto_file_open(crypto, account, "report.file", fd, err);
  uint8_t *out = NULL;
  if (f) {
    *size = ana_crypto_file_size(f);
    out = malloc((size_t)*size + 1);
    for (int64_t off = 0; out && off < *size;) {
      int64_t got = ana_crypto_file_pread(f, out + off, step, off, err);
      if (got <= 0) {
        free(out);
        out = NULL;
        break;
      }
      off += got;
    }
    ana_crypto_file_close(f);
  }
  close(fd);
  return out;
}

static void test_file_seal(void **state) {
  (void)state;
  char in[128], out[160];
  snprintf(in, sizeof in, "%s/clear", dir);
  snprintf(out, sizeof out, "%s/sealed", dir);
  struct ana_error err;
  /* Sizes: empty, one byte, exactly one chunk, two and a half chunks. */
  const size_t sizes[] = {0, 1, ANA_CRYPTO_FILE_CHUNK, 2 * ANA_CRYPTO_FILE_CHUNK + 12345};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    size_t n = sizes[k];
    uint8_t *clear = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
      clear[i] = (uint8_t)(i * 7 + k);
    write_bytes(in, clear, n);
    assert_int_equal(ana_crypto_file_seal(crypto, "acme", "report.file", in, out, &err), 0);
    int fd = open(out, O_RDONLY);
    assert_true(ana_crypto_file_is_sealed(fd));
    close(fd);
    int64_t size = -1;
    /* Ranges that cross chunk boundaries (an odd step) and whole chunks. */
    const size_t steps[] = {1000, ANA_CRYPTO_FILE_CHUNK};
    for (size_t s = 0; s < 2 && (n <= 1000 || s == 1 || k == 3); s++) {
      uint8_t *got = read_sealed(out, "acme", steps[s], &size, &err);
      assert_non_null(got);
      assert_int_equal(size, (int64_t)n);
      if (n)
        assert_memory_equal(got, clear, n);
      free(got);
    }
    /* Another account does not open it. */
    assert_null(read_sealed(out, "other", 4096, &size, &err));
    free(clear);
  }
  /* The last file (three chunks): a byte altered, then the file cut at a
   * chunk boundary, each refused with DATA_LOSS. */
  FILE *f = fopen(out, "rb");
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  rewind(f);
  uint8_t *raw = malloc((size_t)len);
  assert_int_equal(fread(raw, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  raw[len / 2] ^= 1;
  write_bytes(out, raw, (size_t)len);
  int64_t size;
  ana_error_clear(&err);
  assert_null(read_sealed(out, "acme", ANA_CRYPTO_FILE_CHUNK, &size, &err));
  assert_int_equal(err.code, ANA_STATUS_DATA_LOSS);
  raw[len / 2] ^= 1;
  write_bytes(out, raw, 28 + 2 * (ANA_CRYPTO_FILE_CHUNK + 16));
  ana_error_clear(&err);
  assert_null(read_sealed(out, "acme", ANA_CRYPTO_FILE_CHUNK, &size, &err));
  assert_int_equal(err.code, ANA_STATUS_DATA_LOSS);
  free(raw);
  /* A file that is not sealed is said to be so. */
  write_bytes(in, (const uint8_t *)"plain,text\n", 11);
  int fd = open(in, O_RDONLY);
  assert_false(ana_crypto_file_is_sealed(fd));
  assert_null(ana_crypto_file_open(crypto, "acme", "report.file", fd, &err));
  close(fd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tamper, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rotate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrong_master_key, setup, teardown),
      cmocka_unit_test_setup_teardown(test_blind_index, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sealer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rotate_master, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rotate_master_rolls_back, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_seal, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
