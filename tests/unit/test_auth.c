/* Unit tests for auth: the role table and the admission pipeline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ana_auth.h"

#include <string.h>

/* Every permission the methods declare, plus the admin-only ones. */
static const char *const reads[] = {"events:read",   "metrics:read",  "reports:read",
                                    "alerts:read",   "realtime:read", "channels:read",
                                    "templates:read"};
static const char *const admin_only[] = {"keys:admin", "audit:read", "pii:read"};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void check_role(const char *role, const char *const *granted, size_t n_granted,
                       const char *const *denied, size_t n_denied) {
  for (size_t i = 0; i < n_granted; i++)
    if (!ana_auth_role_permits(role, granted[i]))
      fail_msg("%s should grant %s", role, granted[i]);
  for (size_t i = 0; i < n_denied; i++)
    if (ana_auth_role_permits(role, denied[i]))
      fail_msg("%s should not grant %s", role, denied[i]);
}

static void viewer_reads_everything_but_sensitive(void **state) {
  (void)state;
  const char *const denied[] = {"events:write", "metrics:write", "reports:write", "alerts:write",
                                "keys:admin",   "audit:read",    "pii:read"};
  check_role("viewer", reads, N(reads), denied, N(denied));
  check_role("reader", reads, N(reads), denied, N(denied));
}

static void analyst_and_editor_add_their_writes(void **state) {
  (void)state;
  const char *const analyst_yes[] = {"metrics:write", "reports:write", "events:read"};
  const char *const analyst_no[] = {"alerts:write", "channels:write", "templates:write",
                                    "events:write", "keys:admin",     "audit:read"};
  check_role("analyst", analyst_yes, N(analyst_yes), analyst_no, N(analyst_no));
  const char *const editor_yes[] = {"metrics:write",  "reports:write",   "alerts:write",
                                    "channels:write", "templates:write", "alerts:read"};
  const char *const editor_no[] = {"events:write", "keys:admin", "audit:read", "pii:read"};
  check_role("editor", editor_yes, N(editor_yes), editor_no, N(editor_no));
}

static void admin_has_everything_ingest_only_writes_events(void **state) {
  (void)state;
  const char *const admin_yes[] = {"keys:admin", "audit:read", "pii:read", "events:write",
                                   "alerts:write"};
  check_role("admin", admin_yes, N(admin_yes), NULL, 0);
  const char *const ingest_yes[] = {"events:write"};
  check_role("ingest", ingest_yes, 1, reads, N(reads));
  check_role("ingest", NULL, 0, admin_only, N(admin_only));
  check_role("nobody", NULL, 0, reads, N(reads));
  assert_true(ana_auth_role_permits("nobody", ""));
}

static void principal_with_roles(void **state) {
  (void)state;
  const char *const roles[] = {"ingest", "viewer"};
  struct ana_principal p = {.subject = "u", .account_id = "a", .roles = roles, .n_roles = 2};
  assert_true(ana_auth_permits(&p, "events:write"));
  assert_true(ana_auth_permits(&p, "metrics:read"));
  assert_false(ana_auth_permits(&p, "metrics:write"));
  p.n_roles = 0;
  assert_false(ana_auth_permits(&p, "metrics:read"));
  assert_true(ana_auth_permits(&p, ""));
}

static void pipeline_stages_in_order(void **state) {
  (void)state;
  size_t n;
  const char *const *names = ana_admission_stage_names(&n);
  const char *const want[] = {"authenticate", "account", "permission", "rate_limit", "audit"};
  assert_int_equal(n, N(want));
  for (size_t i = 0; i < n; i++)
    assert_string_equal(names[i], want[i]);
}

/* Without credentials configured: the default account, admin, every method. */
static void pipeline_default_account(void **state) {
  (void)state;
  struct ana_arena arena;
  struct ana_principal p;
  struct ana_error status = {0};
  struct ana_metadata_entry md[] = {{"x-account-id", "other", 5}};
  assert_int_equal(ana_auth_init("acct-1"), 0);
  ana_arena_init(&arena, 0, 0);
  for (size_t i = 0; i < ANA_METHOD_COUNT; i++) {
    struct ana_admission_input in = {.metadata = md,
                                     .n_metadata = 1,
                                     .peer = "ipv4:127.0.0.1:1",
                                     .peer_is_loopback = true,
                                     .method = &ana_methods[i]};
    assert_int_equal(ana_admission_run(&in, &arena, &p, &status), 0);
    assert_string_equal(p.account_id, "acct-1");
    assert_int_equal(p.credential, ANA_CREDENTIAL_NONE);
    if (strcmp(ana_methods[i].service, "grpc.health.v1.Health") == 0) {
      assert_int_equal(p.n_roles, 0); /* probes: open, no role */
      continue;
    }
    assert_int_equal(p.n_roles, 1);
    assert_string_equal(p.roles[0], "admin");
  }
  ana_arena_fini(&arena);
  ana_auth_fini();
}

static void loopback_peers(void **state) {
  (void)state;
  assert_true(ana_auth_peer_is_loopback("ipv4:127.0.0.1:5000"));
  assert_true(ana_auth_peer_is_loopback("ipv6:[::1]:5000"));
  assert_true(ana_auth_peer_is_loopback("127.0.0.1"));
  assert_true(ana_auth_peer_is_loopback("::1"));
  assert_false(ana_auth_peer_is_loopback("ipv4:10.0.0.1:5000"));
  assert_false(ana_auth_peer_is_loopback("ipv6:[2001:db8::1]:5000"));
  assert_false(ana_auth_peer_is_loopback(""));
  assert_false(ana_auth_peer_is_loopback(NULL));
}

/* A credential source for the pipeline's tests: accepts "Bearer good" as
 * account "acme" (viewer), refuses "Bearer bad", ignores anything else. */
static bool fake_on;
static bool fake_configured(void *ctx) {
  (void)ctx;
  return fake_on;
}
static int fake_authenticate(void *ctx, const struct ana_admission_input *in,
                             struct ana_arena *arena, struct ana_principal *out,
                             struct ana_error *status) {
  (void)ctx, (void)arena;
  static const char *const viewer[] = {"viewer"};
  for (size_t i = 0; i < in->n_metadata; i++) {
    if (strcmp(in->metadata[i].key, "authorization") != 0)
      continue;
    if (strcmp(in->metadata[i].value, "Bearer good") == 0) {
      memset(out, 0, sizeof *out);
      out->account_id = "acme";
      out->roles = viewer;
      out->n_roles = 1;
      out->credential = ANA_CREDENTIAL_JWT;
      return 1;
    }
    if (strcmp(in->metadata[i].value, "Bearer bad") == 0)
      return ana_error_set(status, ANA_STATUS_UNAUTHENTICATED, "invalid token"), ANA_ERR_INVALID;
  }
  return 0;
}

static int admit(const char *peer, bool loopback, const char *auth, const struct ana_method *m,
                 struct ana_principal *p, struct ana_error *status, struct ana_arena *arena) {
  struct ana_metadata_entry md[] = {{"authorization", auth, auth ? strlen(auth) : 0}};
  struct ana_admission_input in = {.metadata = md,
                                   .n_metadata = auth ? 1 : 0,
                                   .peer = peer,
                                   .peer_is_loopback = loopback,
                                   .method = m};
  return ana_admission_run(&in, arena, p, status);
}

static const struct ana_method *method_named(const char *path) {
  const struct ana_method *m = ana_method_find(path);
  assert_non_null(m);
  return m;
}

/* No source configured: loopback is the default account, any other peer is
 * told how to configure authentication. */
static void protected_mode_serves_only_loopback(void **state) {
  (void)state;
  struct ana_arena arena;
  struct ana_principal p;
  struct ana_error status = {0};
  const struct ana_method *track = method_named("/analytics.v1.EventService/TrackEvent");
  assert_int_equal(ana_auth_init("acct-1"), 0);
  fake_on = false;
  assert_int_equal(ana_auth_add_source(&(struct ana_credential_source){"fake", fake_configured,
                                                                       fake_authenticate, NULL}),
                   0);
  ana_arena_init(&arena, 0, 0);
  assert_true(ana_auth_protected_mode());
  assert_string_equal(ana_auth_mode_name(), "protected-mode");
  assert_int_equal(admit("ipv4:127.0.0.1:1", true, NULL, track, &p, &status, &arena), 0);
  assert_string_equal(p.account_id, "acct-1");
  assert_int_equal(admit("ipv4:198.51.100.2:1", false, "Bearer good", track, &p, &status, &arena),
                   ANA_ERR_INVALID);
  assert_int_equal(status.code, ANA_STATUS_UNAUTHENTICATED);
  assert_non_null(strstr(status.message, "JWT_HS256_SECRET"));
  /* Probes stay open from anywhere. */
  assert_int_equal(admit("ipv4:198.51.100.2:1", false, NULL,
                         method_named("/grpc.health.v1.Health/Check"), &p, &status, &arena),
                   0);
  ana_arena_fini(&arena);
  ana_auth_fini();
}

/* A configured source: every peer, loopback included, must authenticate;
 * unclaimed credentials are an invalid token; the source's refusal stands. */
static void configured_source_is_required_everywhere(void **state) {
  (void)state;
  struct ana_arena arena;
  struct ana_principal p;
  struct ana_error status = {0};
  const struct ana_method *track = method_named("/analytics.v1.EventService/TrackEvent");
  const struct ana_method *names = method_named("/analytics.v1.EventService/ListEventNames");
  assert_int_equal(ana_auth_init("acct-1"), 0);
  fake_on = true;
  assert_int_equal(ana_auth_add_source(&(struct ana_credential_source){"fake", fake_configured,
                                                                       fake_authenticate, NULL}),
                   0);
  ana_arena_init(&arena, 0, 0);
  assert_false(ana_auth_protected_mode());
  assert_string_equal(ana_auth_mode_name(), "required");
  assert_int_equal(admit("ipv4:127.0.0.1:1", true, NULL, names, &p, &status, &arena),
                   ANA_ERR_INVALID);
  assert_int_equal(status.code, ANA_STATUS_UNAUTHENTICATED);
  assert_int_equal(admit("ipv4:127.0.0.1:1", true, "Bearer bad", names, &p, &status, &arena),
                   ANA_ERR_INVALID);
  assert_string_equal(status.message, "invalid token");
  assert_int_equal(admit("ipv4:127.0.0.1:1", true, "Basic eDp5", names, &p, &status, &arena),
                   ANA_ERR_INVALID);
  assert_string_equal(status.message, "invalid token");
  assert_int_equal(admit("ipv4:198.51.100.2:1", false, "Bearer good", names, &p, &status, &arena),
                   0);
  assert_string_equal(p.account_id, "acme");
  /* The viewer role has no events:write. */
  assert_int_equal(admit("ipv4:198.51.100.2:1", false, "Bearer good", track, &p, &status, &arena),
                   ANA_ERR_INVALID);
  assert_int_equal(status.code, ANA_STATUS_PERMISSION_DENIED);
  ana_arena_fini(&arena);
  ana_auth_fini();
}

/* Two credentials in one request (Authorization and X-Api-Key, or either
 * twice) are INVALID_ARGUMENT once a source is configured, even when one of
 * them would be accepted; in protected mode loopback is served as before. */
static void two_credentials_are_refused(void **state) {
  (void)state;
  struct ana_arena arena;
  struct ana_principal p;
  struct ana_error status = {0};
  const struct ana_method *names = method_named("/analytics.v1.EventService/ListEventNames");
  struct ana_metadata_entry md[] = {{"authorization", "Bearer good", 11},
                                    {"x-api-key", "ana_x", 5}};
  struct ana_admission_input in = {.metadata = md,
                                   .n_metadata = 2,
                                   .peer = "ipv4:127.0.0.1:1",
                                   .peer_is_loopback = true,
                                   .method = names};
  assert_int_equal(ana_auth_init("acct-1"), 0);
  assert_int_equal(ana_auth_add_source(&(struct ana_credential_source){"fake", fake_configured,
                                                                       fake_authenticate, NULL}),
                   0);
  ana_arena_init(&arena, 0, 0);
  fake_on = false;
  assert_int_equal(ana_admission_run(&in, &arena, &p, &status), 0);
  fake_on = true;
  assert_int_equal(ana_admission_run(&in, &arena, &p, &status), ANA_ERR_INVALID);
  assert_int_equal(status.code, ANA_STATUS_INVALID_ARGUMENT);
  md[1].key = "authorization";
  assert_int_equal(ana_admission_run(&in, &arena, &p, &status), ANA_ERR_INVALID);
  assert_int_equal(status.code, ANA_STATUS_INVALID_ARGUMENT);
  in.n_metadata = 1;
  assert_int_equal(ana_admission_run(&in, &arena, &p, &status), 0);
  assert_string_equal(p.account_id, "acme");
  ana_arena_fini(&arena);
  ana_auth_fini();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(viewer_reads_everything_but_sensitive),
      cmocka_unit_test(two_credentials_are_refused),
      cmocka_unit_test(analyst_and_editor_add_their_writes),
      cmocka_unit_test(admin_has_everything_ingest_only_writes_events),
      cmocka_unit_test(principal_with_roles),
      cmocka_unit_test(pipeline_stages_in_order),
      cmocka_unit_test(pipeline_default_account),
      cmocka_unit_test(loopback_peers),
      cmocka_unit_test(protected_mode_serves_only_loopback),
      cmocka_unit_test(configured_source_is_required_everywhere),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
