/* What the channels share: the retry delay, the webhook signature, the
 * notification's JSON document, HTTP outcomes and secret masks. */
#include "notify_internal.h"

#include "ana_arena.h"

#include <openssl/evp.h>
#include <openssl/params.h>
#include <time.h>
#include <stdio.h>
#include <string.h>

int64_t ana_notify_backoff_ms(int failures, int initial_ms, int max_ms, uint64_t rnd) {
  if (failures < 1)
    failures = 1;
  int64_t cap = initial_ms > 0 ? initial_ms : 1;
  for (int i = 1; i < failures && cap < max_ms; i++)
    cap *= 2;
  if (cap > max_ms)
    cap = max_ms;
  return (int64_t)(rnd % (uint64_t)(cap + 1));
}

void ana_notify_sign(const char *secret, int64_t t, const char *body, size_t body_len,
                     char out[100]) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  char ts[24];
  int ts_len = snprintf(ts, sizeof ts, "%lld.", (long long)t);
  /* HMAC over "<t>.<body>" without copying the body. */
  EVP_MAC *mac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = mac_alg ? EVP_MAC_CTX_new(mac_alg) : NULL;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                         OSSL_PARAM_construct_end()};
  size_t len = 0;
  if (ctx && EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) &&
      EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)ts_len) &&
      EVP_MAC_update(ctx, (const unsigned char *)body, body_len) &&
      EVP_MAC_final(ctx, mac, &len, sizeof mac))
    mac_len = (unsigned int)len;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac_alg);
  int n = snprintf(out, 100, "t=%lld,v1=", (long long)t);
  for (unsigned int i = 0; i < mac_len && n + 2 < 100; i++)
    n += snprintf(out + n, 100 - (size_t)n, "%02x", mac[i]);
}

json_t *ana_notify_message_json(const struct ana_notify_message *m) {
  json_t *values = json_object(), *links = json_array();
  char created[96];
  time_t secs = (time_t)(m->created_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  snprintf(created, sizeof created, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (int)(m->created_ms % 1000));
  for (size_t i = 0; values && i < m->n_values; i++)
    json_object_set_new(values, m->values[i].name, json_string(m->values[i].value));
  for (size_t i = 0; links && i < m->n_links; i++)
    json_array_append_new(
        links, json_pack("{s:s, s:s}", "label", m->links[i].label, "url", m->links[i].url));
  json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "id", m->key, "createdAt",
                          created, "source", m->source ? m->source : "", "severity",
                          m->severity ? m->severity : "info", "title", m->title ? m->title : "",
                          "text", m->text ? m->text : "", "values", values ? values : json_object(),
                          "links", links ? links : json_array());
  return doc;
}

int ana_notify_http_outcome(int rc, const struct ana_http_response *resp,
                            const struct ana_error *err, struct ana_notify_result *res) {
  res->status = (int)resp->status;
  if (rc == ANA_ERR_INVALID) { /* refused by the policy or a bad URL: no retry helps */
    snprintf(res->error, sizeof res->error, "%s", err->message);
    res->permanent = true;
    return -1;
  }
  if (rc < 0) {
    snprintf(res->error, sizeof res->error, "%s", err->message);
    return -1;
  }
  if (resp->status >= 200 && resp->status < 300)
    return 0;
  snprintf(res->error, sizeof res->error, "HTTP %ld%s%.200s", resp->status,
           resp->body_len ? ": " : "", resp->body_len ? resp->body : "");
  res->permanent =
      resp->status >= 400 && resp->status < 500 && resp->status != 408 && resp->status != 429;
  return -1;
}

char *ana_notify_json_text(json_t *doc, struct ana_notify_result *res) {
  char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (!text)
    snprintf(res->error, sizeof res->error, "out of memory");
  return text;
}

int ana_notify_post_json(const struct ana_notify_env *env, const char *url, const char *field,
                         const char *body, const char *const *extra, size_t n_extra,
                         struct ana_notify_result *res, struct ana_http_response *resp) {
  const char *headers[5] = {"Content-Type: application/json"};
  size_t n = 1;
  for (size_t i = 0; i < n_extra && n < sizeof headers / sizeof *headers; i++)
    headers[n++] = extra[i];
  struct ana_http_request req = {
      .method = "POST",
      .url = url,
      .headers = headers,
      .n_headers = n,
      .body = body,
      .body_len = strlen(body),
      .timeout_ms = env->timeout_ms,
      .refuse_private = env->refuse_private,
      .field = field,
  };
  struct ana_http_response own;
  if (!resp)
    resp = &own;
  struct ana_error err;
  ana_error_clear(&err);
  int rc = ana_http_perform(env->http, &req, resp, &err);
  rc = ana_notify_http_outcome(rc, resp, &err, res);
  if (resp == &own)
    ana_http_response_fini(&own);
  return rc;
}

char *ana_notify_mask_url(const char *url, struct ana_arena *arena) {
  if (!url || !url[0])
    return ana_arena_strdup(arena, "");
  const char *host = strstr(url, "://");
  host = host ? host + 3 : url;
  size_t n = strcspn(host, "/?#");
  size_t prefix = (size_t)(host - url) + n;
  char *out = ana_arena_alloc(arena, prefix + 5);
  if (out) {
    memcpy(out, url, prefix);
    memcpy(out + prefix, "/***", 5);
  }
  return out;
}

bool ana_notify_is_masked(const char *s) {
  return s && strstr(s, "***") != NULL;
}
