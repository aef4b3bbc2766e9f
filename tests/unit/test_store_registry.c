/* Unit tests of the storage registry: a backend written for another version
 * of its role, or lacking a mandatory operation, is refused with a message
 * naming the backend, the role and the operation; configuration chooses the
 * embedded backends while the remote ones are not built in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_api_keys.h"
#include "ana_audit.h"
#include "ana_store.h"
#include "ana_store_config.h"

#include <string.h>

static void embedded_backends_pass_the_checks(void **state) {
  (void)state;
  struct ana_error err;
  ana_error_clear(&err);
  assert_non_null(ana_store_event_backend("sqlite"));
  assert_non_null(ana_store_search_backend("sqlite"));
  assert_non_null(ana_store_catalog_backend("sqlite"));
  assert_non_null(ana_store_api_key_backend("sqlite"));
  assert_non_null(ana_store_audit_backend("sqlite"));
  assert_non_null(ana_store_event_backend("clickhouse"));
  assert_int_equal(ana_store_check_event_store(ana_store_event_backend("clickhouse"), &err), 0);
  assert_int_equal(ana_store_check_event_store(ana_store_event_backend("sqlite"), &err), 0);
}

static void event_store_of_another_version_is_refused(void **state) {
  (void)state;
  struct ana_event_store_ops fake = *ana_store_event_backend("sqlite");
  fake.name = "fake";
  fake.version = ANA_EVENT_STORE_VERSION - 1;
  struct ana_error err;
  ana_error_clear(&err);
  assert_true(ana_store_check_event_store(&fake, &err) < 0);
  assert_int_equal(err.code, ANA_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(err.message, "storage backend \"fake\" (event store)"));
  assert_non_null(strstr(err.message, "version"));
}

static void event_store_without_an_operation_is_refused(void **state) {
  (void)state;
  struct ana_event_store_ops fake = *ana_store_event_backend("sqlite");
  fake.name = "fake";
  fake.scan_seq = NULL;
  struct ana_error err;
  ana_error_clear(&err);
  assert_true(ana_store_check_event_store(&fake, &err) < 0);
  assert_string_equal(err.message,
                      "storage backend \"fake\" (event store): lacks the operation scan_seq");
  fake = *ana_store_event_backend("sqlite");
  fake.ship = NULL;
  assert_true(ana_store_check_event_store(&fake, &err) < 0);
  assert_non_null(strstr(err.message, "lacks the operation ship"));
}

static void search_index_without_an_operation_is_refused(void **state) {
  (void)state;
  struct ana_search_index_ops fake = *ana_store_search_backend("sqlite");
  struct ana_error err;
  ana_error_clear(&err);
  /* committed is optional */
  fake.committed = NULL;
  assert_int_equal(ana_store_check_search_index(&fake, &err), 0);
  fake.wait = NULL;
  assert_true(ana_store_check_search_index(&fake, &err) < 0);
  assert_string_equal(err.message,
                      "storage backend \"sqlite\" (search index): lacks the operation wait");
  fake = *ana_store_search_backend("sqlite");
  fake.version = ANA_SEARCH_INDEX_VERSION + 1;
  assert_true(ana_store_check_search_index(&fake, &err) < 0);
  assert_non_null(strstr(err.message, "(search index): written for version"));
}

static void catalog_and_auth_stores_without_an_operation_are_refused(void **state) {
  (void)state;
  struct ana_error err;
  ana_error_clear(&err);
  struct ana_catalog_ops cat = *ana_store_catalog_backend("sqlite");
  cat.get_by_name = NULL;
  assert_true(ana_store_check_catalog(&cat, &err) < 0);
  assert_string_equal(err.message,
                      "storage backend \"sqlite\" (catalog): lacks the operation get_by_name");
  struct ana_api_key_store_ops keys = *ana_store_api_key_backend("sqlite");
  keys.revoke = NULL;
  assert_true(ana_store_check_api_key_store(&keys, &err) < 0);
  assert_non_null(strstr(err.message, "(API key store): lacks the operation revoke"));
  struct ana_audit_store_ops audit = *ana_store_audit_backend("sqlite");
  audit.name = NULL;
  assert_true(ana_store_check_audit_store(&audit, &err) < 0);
  assert_non_null(strstr(err.message, "(audit store): lacks the operation name"));
}

/* CLICKHOUSE_HOST, ELASTICSEARCH_NODE and MONGODB_URI choose their backends
 * once built in; until then the embedded ones serve (the variables are
 * reported as not yet supported at start-up). */
static void configuration_chooses_each_built_in_backend(void **state) {
  (void)state;
  struct ana_store_settings cfg = {0};
  struct ana_store_selection sel;
  struct ana_error err;
  assert_int_equal(ana_store_select(&cfg, &sel, &err), 0);
  assert_string_equal(sel.events->name, "sqlite");
  assert_string_equal(sel.search->name, "sqlite");
  assert_string_equal(sel.catalog->name, "sqlite");
  assert_string_equal(sel.api_keys->name, "sqlite");
  assert_string_equal(sel.audit->name, "sqlite");
  cfg.clickhouse_host = "localhost:8123";
  cfg.elasticsearch_node = "http://localhost:9200";
  cfg.mongodb_uri = "mongodb://localhost";
  assert_int_equal(ana_store_select(&cfg, &sel, &err), 0);
  assert_string_equal(sel.events->name, "clickhouse"); /* built in */
  assert_string_equal(sel.search->name, "sqlite");
  assert_string_equal(sel.catalog->name, "sqlite");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(embedded_backends_pass_the_checks),
      cmocka_unit_test(event_store_of_another_version_is_refused),
      cmocka_unit_test(event_store_without_an_operation_is_refused),
      cmocka_unit_test(search_index_without_an_operation_is_refused),
      cmocka_unit_test(catalog_and_auth_stores_without_an_operation_are_refused),
      cmocka_unit_test(configuration_chooses_each_built_in_backend),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
