/* Unit tests of server/notify/ and the HTTP client's policy: the webhook
 * signature, the private-network classification (IPv4 and IPv6 forms), the
 * retry delay's bounds, and the email and Slack message formats. */
#include "ana_alloc.h"
#include "ana_http.h"
#include "ana_notify.h"
#include "notify_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

char *ana_notify_email_format(const char *from, const char *const *to, size_t n_to,
                              const struct ana_notify_message *m);
json_t *ana_notify_slack_blocks(const struct ana_notify_message *m);

static void test_signature_is_stripe_style(void **state) {
  (void)state;
  char sig[100];
  const char *body = "{\"a\":1}";
  ana_notify_sign("whsec_test", 1700000000, body, strlen(body), sig);
  /* HMAC-SHA256("whsec_test", "1700000000.{\"a\":1}"), from Python's hmac. */
  assert_string_equal(
      sig, "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789");
}

static void test_private_addresses_are_refused(void **state) {
  (void)state;
  static const char *const refused[] = {
      "127.0.0.1",
      "127.255.0.9",
      "10.0.0.1",
      "172.16.0.1",
      "172.31.255.255",
      "192.168.1.1",
      "169.254.169.254",
      "100.64.0.1",
      "100.127.255.254",
      "0.0.0.0",
      "224.0.0.1",
      "239.1.1.1",
      "255.255.255.255",
      "240.0.0.1",
      "198.18.0.1",
      "192.0.2.1",
      "::1",
      "::",
      "fe80::1",
      "fc00::1",
      "fd12:3456::1",
      "ff02::1",
      "::ffff:127.0.0.1",
      "::ffff:10.0.0.1",
      "::ffff:169.254.169.254",
      "::127.0.0.1",
      "64:ff9b::a00:1",
      "2002:7f00:1::1",
      "2002:c0a8:0101::1",
      "fec0::1",
      "2001:db8::1",
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    const char *why = ana_net_refused_reason_text(refused[i]);
    if (!why)
      fail_msg("%s was allowed", refused[i]);
  }
  static const char *const allowed[] = {"8.8.8.8",           "1.1.1.1",         "172.32.0.1",
                                        "100.128.0.1",       "2606:4700::1111", "::ffff:8.8.8.8",
                                        "2002:0808:0808::1", "64:ff9b::808:808"};
  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
    const char *why = ana_net_refused_reason_text(allowed[i]);
    if (why)
      fail_msg("%s was refused: %s", allowed[i], why);
  }
  assert_string_equal(ana_net_refused_reason_text("::ffff:127.0.0.1"), "loopback");
  assert_string_equal(ana_net_refused_reason_text("localhost"), "not an IP address");
}

static void test_check_url_names_the_field(void **state) {
  (void)state;
  struct ana_error err;
  ana_error_clear(&err);
  assert_int_equal(ana_http_check_url("http://127.0.0.1:8080/x", true, "url", &err),
                   ANA_ERR_INVALID);
  assert_int_equal(err.code, ANA_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(err.message, "url: "));
  assert_non_null(strstr(err.message, "loopback"));
  assert_int_equal(ana_http_check_url("http://[::ffff:7f00:1]/", true, "url", &err),
                   ANA_ERR_INVALID);
  assert_int_equal(ana_http_check_url("file:///etc/passwd", false, "url", &err), ANA_ERR_INVALID);
  assert_non_null(strstr(err.message, "scheme"));
  assert_int_equal(ana_http_check_url("gopher://example.com/", false, "url", &err),
                   ANA_ERR_INVALID);
  assert_int_equal(ana_http_check_url("http://127.0.0.1:8080/x", false, "url", &err), 0);
}

static void test_perform_refuses_before_connecting(void **state) {
  (void)state;
  struct ana_error err;
  struct ana_http_response resp;
  struct ana_http_client *c = ana_http_client_create(NULL, &err);
  assert_non_null(c);
  struct ana_http_request req = {.url = "http://10.255.255.1:9/never",
                                 .timeout_ms = 200,
                                 .refuse_private = true,
                                 .field = "webhook.url"};
  assert_int_equal(ana_http_perform(c, &req, &resp, &err), ANA_ERR_INVALID);
  assert_int_equal(resp.status, 0);
  assert_non_null(strstr(err.message, "webhook.url: "));
  ana_http_response_fini(&resp);
  ana_http_client_destroy(c);
}

static void test_backoff_has_full_jitter_below_a_doubling_cap(void **state) {
  (void)state;
  /* The cap doubles from initial up to max; the delay is anywhere in [0, cap]. */
  assert_int_equal(ana_notify_backoff_ms(1, 1000, 600000, UINT64_MAX - 0),
                   (int64_t)(UINT64_MAX % 1001));
  for (int f = 1; f <= 30; f++) {
    int64_t cap = 1000;
    for (int i = 1; i < f && cap < 600000; i++)
      cap *= 2;
    if (cap > 600000)
      cap = 600000;
    assert_int_equal(ana_notify_backoff_ms(f, 1000, 600000, (uint64_t)cap), cap);
    assert_int_equal(ana_notify_backoff_ms(f, 1000, 600000, (uint64_t)cap + 1), 0);
    assert_int_equal(ana_notify_backoff_ms(f, 1000, 600000, 0), 0);
    for (uint64_t r = 1; r < 2000000; r += 99991)
      assert_in_range(ana_notify_backoff_ms(f, 1000, 600000, r * 2654435761u), 0, cap);
  }
  assert_int_equal(ana_notify_backoff_ms(40, 1000, 600000, 600000), 600000); /* no overflow */
}

static const struct ana_notify_value values[] = {{"value", "12.5"}, {"threshold", "10"}};
static const struct ana_notify_link links[] = {{"Open", "https://analytics.example/a/1"}};

static struct ana_notify_message message(const char *title) {
  return (struct ana_notify_message){
      .key = "alert-1-eu-7",
      .source = "alert:1",
      .title = title,
      .text = "error_rate is 12.5\n.second line",
      .severity = "critical",
      .values = values,
      .n_values = 2,
      .links = links,
      .n_links = 1,
      .created_ms = 1700000000123,
  };
}

static void test_email_is_rfc5322_with_the_key_as_message_id(void **state) {
  (void)state;
  const char *to[] = {"a@example.com", "b@example.com"};
  struct ana_notify_message m = message("High error rate\r\nBcc: evil@example.com");
  char *msg = ana_notify_email_format("alerts@analytics.example", to, 2, &m);
  assert_non_null(msg);
  assert_non_null(strstr(msg, "\r\nMessage-ID: <alert-1-eu-7@analytics.example>\r\n"));
  assert_non_null(strstr(msg, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
  assert_non_null(strstr(msg, "\r\nTo: a@example.com, b@example.com\r\n"));
  /* The title's line break cannot start a header of its own. */
  assert_null(strstr(msg, "\r\nBcc:"));
  assert_non_null(
      strstr(msg, "\r\nSubject: [critical] High error rate  Bcc: evil@example.com\r\n"));
  assert_non_null(strstr(msg, "\r\n\r\nerror_rate is 12.5\r\n.second line\r\n"));
  assert_non_null(strstr(msg, "value: 12.5\r\nthreshold: 10\r\n"));
  /* Every line ends with CRLF. */
  for (const char *p = msg; (p = strchr(p, '\n')); p++)
    assert_int_equal(p[-1], '\r');
  ana_free(msg);
  m = message("Fehlerquote \xc3\xbc"
              "ber 10 %");
  msg = ana_notify_email_format("alerts@analytics.example", to, 1, &m);
  assert_non_null(strstr(msg, "Subject: [critical] =?UTF-8?B?"));
  ana_free(msg);
}

static void test_slack_message_is_block_kit(void **state) {
  (void)state;
  struct ana_notify_message m = message("High error rate");
  json_t *doc = ana_notify_slack_blocks(&m);
  assert_non_null(doc);
  assert_string_equal(json_string_value(json_object_get(doc, "text")),
                      "[critical] High error rate");
  json_t *blocks = json_object_get(doc, "blocks");
  assert_int_equal(json_array_size(blocks), 5);
  assert_string_equal(json_string_value(json_object_get(json_array_get(blocks, 0), "type")),
                      "header");
  json_t *fields = json_object_get(json_array_get(blocks, 2), "fields");
  assert_string_equal(json_string_value(json_object_get(json_array_get(fields, 0), "text")),
                      "*value*\n12.5");
  json_t *button = json_array_get(json_object_get(json_array_get(blocks, 3), "elements"), 0);
  assert_string_equal(json_string_value(json_object_get(button, "url")),
                      "https://analytics.example/a/1");
  json_decref(doc);
}

static void test_webhook_document(void **state) {
  (void)state;
  struct ana_notify_message m = message("High error rate");
  json_t *doc = ana_notify_message_json(&m);
  assert_string_equal(json_string_value(json_object_get(doc, "id")), "alert-1-eu-7");
  assert_string_equal(json_string_value(json_object_get(doc, "createdAt")),
                      "2023-11-14T22:13:20.123Z");
  assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "values"), "value")),
                      "12.5");
  json_decref(doc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_signature_is_stripe_style),
      cmocka_unit_test(test_private_addresses_are_refused),
      cmocka_unit_test(test_check_url_names_the_field),
      cmocka_unit_test(test_perform_refuses_before_connecting),
      cmocka_unit_test(test_backoff_has_full_jitter_below_a_doubling_cap),
      cmocka_unit_test(test_email_is_rfc5322_with_the_key_as_message_id),
      cmocka_unit_test(test_slack_message_is_block_kit),
      cmocka_unit_test(test_webhook_document),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
