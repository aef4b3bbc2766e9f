/* Unit tests for the server TLS files check (common/tls_files.c), on files
 * made by openssl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_tls_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[] = "/tmp/ana-tls-unit-XXXXXX";
static char cert[128], key[128], other_key[128], garbage[128], missing[128];

static int make_files(void **state) {
  (void)state;
  char cmd[1024];
  if (!mkdtemp(dir))
    return -1;
  snprintf(cert, sizeof cert, "%s/c.pem", dir);
  snprintf(key, sizeof key, "%s/c.key", dir);
  snprintf(other_key, sizeof other_key, "%s/o.key", dir);
  snprintf(garbage, sizeof garbage, "%s/g.pem", dir);
  snprintf(missing, sizeof missing, "%s/missing.pem", dir);
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout %s -out %s -days 1 -subj /CN=t -set_serial 0x4242 2>/dev/null && "
           "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out %s "
           "2>/dev/null && echo 'not pem' > %s",
           key, cert, other_key, garbage);
  return system(cmd) == 0 ? 0 : -1;
}

static int remove_files(void **state) {
  (void)state;
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Loads with the given paths (NULL = unset); returns the rc, err in *msg. */
static int load(const char *c, const char *k, const char *ca, struct ana_tls_files *f, char *msg,
                size_t cap) {
  struct ana_tls_paths p = {"X_CERT", "X_KEY", "X_CA", c, k, ca};
  struct ana_error err;
  ana_error_clear(&err);
  int rc = ana_tls_files_load(&p, f, &err);
  snprintf(msg, cap, "%s", err.message);
  return rc;
}

static void nothing_set_is_plaintext(void **state) {
  (void)state;
  struct ana_tls_files f;
  char msg[512];
  assert_int_equal(load(NULL, "", NULL, &f, msg, sizeof msg), 0);
  assert_null(f.cert);
  ana_tls_files_fini(&f);
}

static void half_configured_names_the_missing_variable(void **state) {
  (void)state;
  struct ana_tls_files f;
  char msg[512];
  assert_int_equal(load(cert, NULL, NULL, &f, msg, sizeof msg), ANA_ERR_INVALID);
  assert_non_null(strstr(msg, "X_KEY: not set"));
  assert_int_equal(load(NULL, key, NULL, &f, msg, sizeof msg), ANA_ERR_INVALID);
  assert_non_null(strstr(msg, "X_CERT: not set, but X_KEY is"));
  assert_int_equal(load(NULL, NULL, cert, &f, msg, sizeof msg), ANA_ERR_INVALID);
  assert_non_null(strstr(msg, "X_CERT: not set, but X_CA is"));
  assert_null(f.cert);
}

static void bad_files_name_the_variable_and_path(void **state) {
  (void)state;
  struct ana_tls_files f;
  char msg[512], want[256];
  assert_int_equal(load(missing, key, NULL, &f, msg, sizeof msg), ANA_ERR_INVALID);
  snprintf(want, sizeof want, "X_CERT: cannot read %s", missing);
  assert_non_null(strstr(msg, want));
  assert_int_equal(load(garbage, key, NULL, &f, msg, sizeof msg), ANA_ERR_INVALID);
  snprintf(want, sizeof want, "X_CERT: %s holds no PEM certificate", garbage);
  assert_non_null(strstr(msg, want));
  assert_int_equal(load(cert, garbage, NULL, &f, msg, sizeof msg), ANA_ERR_INVALID);
  assert_non_null(strstr(msg, "X_KEY: "));
  assert_non_null(strstr(msg, "holds no PEM private key"));
  assert_int_equal(load(cert, other_key, NULL, &f, msg, sizeof msg), ANA_ERR_INVALID);
  assert_non_null(strstr(msg, "does not match the certificate"));
  assert_int_equal(load(cert, key, garbage, &f, msg, sizeof msg), ANA_ERR_INVALID);
  snprintf(want, sizeof want, "X_CA: %s holds no PEM certificate", garbage);
  assert_non_null(strstr(msg, want));
  assert_null(f.cert);
}

static void good_files_are_read(void **state) {
  (void)state;
  struct ana_tls_files f;
  char msg[512];
  assert_int_equal(load(cert, key, cert, &f, msg, sizeof msg), 0);
  assert_non_null(f.cert);
  assert_non_null(strstr(f.cert, "-----BEGIN CERTIFICATE-----"));
  assert_non_null(strstr(f.key, "PRIVATE KEY"));
  assert_non_null(f.ca);
  assert_string_equal(f.serial, "4242");
  ana_tls_files_fini(&f);
  assert_null(f.cert);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(nothing_set_is_plaintext),
      cmocka_unit_test(half_configured_names_the_missing_variable),
      cmocka_unit_test(bad_files_name_the_variable_and_path),
      cmocka_unit_test(good_files_are_read),
  };
  return cmocka_run_group_tests(tests, make_files, remove_files);
}
