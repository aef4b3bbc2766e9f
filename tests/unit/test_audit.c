/* Unit tests of the audit log: the canonical encoding, chaining through the
 * writer into the real SQLite store, verification detecting an edited, a
 * deleted and an inserted record, signed heads, and the retention anchor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_audit.h"
#include "ana_local_db.h"
#include "ana_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static struct ana_local_db *db;
static const struct ana_audit_store_ops *ops;
static void *store;
static struct ana_audit *audit;
static const uint8_t master[] = "0123456789abcdef0123456789abcdef";

/* The chain as listed (ascending), strings copied. */
#define MAX_RECS 64
static struct ana_audit_record recs[MAX_RECS];
static char text[MAX_RECS][8][64];
static size_t n_recs;

static int keep(void *ctx, const struct ana_audit_record *r) {
  (void)ctx;
  if (n_recs == MAX_RECS)
    return 1;
  struct ana_audit_record *d = &recs[n_recs];
  *d = *r;
  const char **f[] = {&d->kind,   &d->account_id, &d->subject, &d->key_id,
                      &d->method, &d->target_id,  &d->peer,    &d->request_id};
  for (int i = 0; i < 8; i++) {
    snprintf(text[n_recs][i], sizeof text[n_recs][i], "%s", *f[i] ? *f[i] : "");
    *f[i] = text[n_recs][i];
  }
  n_recs++;
  return 0;
}

static void load_chain(const char *account) {
  struct ana_error err;
  struct ana_audit_query q = {.account_id = account, .chain = true, .limit = MAX_RECS};
  n_recs = 0;
  assert_int_equal(ana_audit_flush(audit, 5000), 0);
  assert_int_equal(ana_audit_list(audit, &q, keep, NULL, &err), 0);
}

static void submit(const char *account, const char *method, const char *target, int64_t at) {
  struct ana_audit_record r = {.kind = "call",
                               .account_id = account,
                               .subject = "alice",
                               .method = method,
                               .target_id = target,
                               .code = 0,
                               .peer = "ipv4:127.0.0.1:1",
                               .request_id = "r1",
                               .at_ms = at};
  ana_audit_submit(audit, &r);
}

static int setup(void **state) {
  (void)state;
  struct ana_error err;
  snprintf(dir, sizeof dir, "/tmp/ana-audit-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  ops = ana_store_audit_backend("sqlite");
  db = ana_local_db_open(dir, &err);
  store = db && ops ? ops->open(db, &err) : NULL;
  if (!store)
    return -1;
  struct ana_audit_options o = {.ops = ops,
                                .store = store,
                                .queue_max = 100,
                                .retention_days = 1,
                                .sign_interval_ms = 0,
                                .master_key = master,
                                .master_key_len = 32};
  audit = ana_audit_create(&o, &err);
  return audit ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  ana_audit_destroy(audit);
  ops->close(store);
  ana_local_db_close(db);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void test_canonical_encoding(void **state) {
  (void)state;
  struct ana_audit_record r = {.seq = 1, .at_ms = 2, .kind = "call", .method = "/a/B", .code = 7};
  uint8_t buf[256];
  size_t n = ana_audit_encode(&r, buf, sizeof buf);
  /* magic 12, seq 8, at 8, 8 strings of 4-byte length, code 4, prev 32 */
  assert_int_equal(n, 12 + 8 + 8 + 8 * 4 + 4 + 4 + 4 + 32);
  assert_memory_equal(buf, "ana-audit-v1", 12);
  assert_int_equal(buf[12 + 7], 1);
  assert_int_equal(buf[20 + 7], 2);
  /* NULL and "" encode alike; a different field, a different hash */
  struct ana_audit_record s = r;
  s.subject = "";
  uint8_t h1[32], h2[32];
  assert_int_equal(ana_audit_record_hash(&r, h1), 0);
  assert_int_equal(ana_audit_record_hash(&s, h2), 0);
  assert_memory_equal(h1, h2, 32);
  s.subject = "x";
  assert_int_equal(ana_audit_record_hash(&s, h2), 0);
  assert_memory_not_equal(h1, h2, 32);
  /* field boundaries count: "ab","" differs from "a","b" */
  struct ana_audit_record a = r, b = r;
  a.account_id = "ab";
  b.account_id = "a";
  b.subject = "b";
  assert_int_equal(ana_audit_record_hash(&a, h1), 0);
  assert_int_equal(ana_audit_record_hash(&b, h2), 0);
  assert_memory_not_equal(h1, h2, 32);
}

static void test_chain_verifies(void **state) {
  (void)state;
  for (int i = 0; i < 5; i++)
    submit(i % 2 ? "acme" : "other", "/m/Create", "t", 0);
  load_chain("acme");
  assert_int_equal(n_recs, 5);
  struct ana_audit_anchor anchor = {0};
  struct ana_audit_verify_result res;
  assert_true(ana_audit_verify(&anchor, recs, n_recs, &res));
  assert_int_equal(res.checked, 5);
  assert_true(recs[0].redacted);
  assert_false(recs[1].redacted);
  assert_string_equal(recs[1].account_id, "acme");
  assert_memory_equal(recs[1].prev_hash, recs[0].hash, 32);
}

static void test_detects_edit_delete_insert(void **state) {
  (void)state;
  for (int i = 0; i < 4; i++)
    submit("acme", "/m/Delete", "t", 0);
  load_chain("acme");
  struct ana_audit_anchor anchor = {0};
  struct ana_audit_verify_result res;
  assert_true(ana_audit_verify(&anchor, recs, n_recs, &res));

  struct ana_audit_record saved[MAX_RECS];
  memcpy(saved, recs, sizeof recs);
  /* edited */
  recs[2].target_id = "forged";
  assert_false(ana_audit_verify(&anchor, recs, n_recs, &res));
  assert_int_equal(res.broken_seq, 3);
  assert_non_null(strstr(res.reason, "edited"));
  memcpy(recs, saved, sizeof recs);
  /* deleted */
  memmove(&recs[1], &recs[2], (n_recs - 2) * sizeof recs[0]);
  assert_false(ana_audit_verify(&anchor, recs, n_recs - 1, &res));
  assert_int_equal(res.broken_seq, 2);
  assert_non_null(strstr(res.reason, "missing"));
  memcpy(recs, saved, sizeof recs);
  /* inserted: a record in the middle, renumbering those after it, with a
   * correct hash of its own but breaking the next link */
  struct ana_audit_record ins[MAX_RECS];
  memcpy(ins, recs, 2 * sizeof recs[0]);
  ins[2] = recs[1];
  ins[2].seq = 3;
  ins[2].target_id = "inserted";
  memcpy(ins[2].prev_hash, recs[1].hash, 32);
  ana_audit_record_hash(&ins[2], ins[2].hash);
  for (size_t i = 2; i < n_recs; i++) {
    ins[i + 1] = recs[i];
    ins[i + 1].seq = recs[i].seq + 1;
  }
  assert_false(ana_audit_verify(&anchor, ins, n_recs + 1, &res));
  assert_int_equal(res.broken_seq, 4);
}

static void test_signed_head(void **state) {
  (void)state;
  for (int i = 0; i < 3; i++)
    submit("acme", "/m/Create", "t", 0);
  load_chain("acme");
  uint8_t key[32], mac[32], mac2[32];
  assert_int_equal(ana_audit_head_key(master, 32, key), 0);
  assert_int_equal(ana_audit_head_mac(key, 3, recs[2].hash, mac), 0);
  assert_int_equal(ana_audit_head_mac(key, 2, recs[2].hash, mac2), 0);
  assert_memory_not_equal(mac, mac2, 32);
  struct ana_audit_anchor anchor = {0};
  struct ana_audit_verify_result res;
  assert_true(ana_audit_verify_head(&anchor, recs, 3, 3, recs[2].hash, &res));
  /* the newest record removed: the chain still links, the head does not */
  assert_true(ana_audit_verify(&anchor, recs, 2, &res));
  assert_false(ana_audit_verify_head(&anchor, recs, 2, 3, recs[2].hash, &res));
  assert_non_null(strstr(res.reason, "removed"));
}

static void test_retention_keeps_anchor(void **state) {
  (void)state;
  int64_t day = 86400000, now = 1800000000000LL;
  submit("acme", "/m/Old", "1", now - 3 * day);
  submit("acme", "/m/Old", "2", now - 2 * day);
  submit("acme", "/m/New", "3", now - 1000);
  load_chain("acme");
  assert_int_equal(n_recs, 3);
  uint8_t second_hash[32];
  memcpy(second_hash, recs[1].hash, 32);
  struct ana_error err;
  assert_int_equal(ana_audit_retain_now(audit, now, &err), 0);
  load_chain("acme");
  assert_int_equal(n_recs, 1);
  struct ana_audit_anchor anchor;
  assert_int_equal(ana_audit_anchor(audit, &anchor, &err), 0);
  assert_int_equal(anchor.seq, 2);
  assert_memory_equal(anchor.hash, second_hash, 32);
  struct ana_audit_verify_result res;
  assert_true(ana_audit_verify(&anchor, recs, n_recs, &res));
  /* the chain goes on from the anchor */
  submit("acme", "/m/Next", "4", now);
  load_chain("acme");
  assert_int_equal(n_recs, 2);
  assert_int_equal(recs[1].seq, 4);
  assert_true(ana_audit_verify(&anchor, recs, n_recs, &res));
  /* a deleted anchor-adjacent record is still found */
  assert_false(ana_audit_verify(&anchor, &recs[1], 1, &res));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_canonical_encoding),
      cmocka_unit_test_setup_teardown(test_chain_verifies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_detects_edit_delete_insert, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signed_head, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retention_keeps_anchor, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
