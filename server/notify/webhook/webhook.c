/* The webhook channel: the notification's JSON document POSTed to the URL,
 * signed as Stripe signs (X-Analytics-Signature: t=...,v1=HMAC-SHA256 of
 * "t.body"), with the idempotency key as Idempotency-Key. */
#include "notify_internal.h"

#include "ana_alloc.h"
#include "ana_arena.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SECRET_PREFIX "whsec_"
#define SECRET_CHARS 43

static int validate(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    struct ana_error *err) {
  return ana_http_check_url(ch->webhook->url, env->refuse_private, "webhook.url", err);
}

static int prepare(Analytics__V1__Channel *ch, struct ana_arena *arena, struct ana_error *err) {
  static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  unsigned char rnd[SECRET_CHARS];
  char *s = ana_arena_alloc(arena, sizeof SECRET_PREFIX + SECRET_CHARS);
  if (!s)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  memcpy(s, SECRET_PREFIX, sizeof SECRET_PREFIX - 1);
  size_t i = 0;
  while (i < SECRET_CHARS) { /* rejection sampling: no modulo bias */
    if (RAND_bytes(rnd, sizeof rnd) != 1)
      return ana_error_set(err, ANA_STATUS_INTERNAL, "no randomness for the signing secret");
    for (size_t j = 0; j < sizeof rnd && i < SECRET_CHARS; j++)
      if (rnd[j] < 248)
        s[sizeof SECRET_PREFIX - 1 + i++] = alphabet[rnd[j] % 62];
  }
  s[sizeof SECRET_PREFIX - 1 + SECRET_CHARS] = '\0';
  ch->webhook->signing_secret = s;
  return 0;
}

static void mask(Analytics__V1__Channel *ch, struct ana_arena *arena) {
  (void)arena;
  ch->webhook->signing_secret = (char *)SECRET_PREFIX "***";
}

static void keep_secrets(Analytics__V1__Channel *in, const Analytics__V1__Channel *old) {
  /* The signing secret never changes with an update. */
  in->webhook->signing_secret = old->webhook->signing_secret;
}

static int send_one(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    const struct ana_notify_message *m, struct ana_notify_result *res) {
  char *body = ana_notify_json_text(ana_notify_message_json(m), res);
  if (!body)
    return -1;
  char sig[100], sig_h[140], key_h[260];
  ana_notify_sign(ch->webhook->signing_secret, (int64_t)time(NULL), body, strlen(body), sig);
  snprintf(sig_h, sizeof sig_h, "X-Analytics-Signature: %s", sig);
  snprintf(key_h, sizeof key_h, "Idempotency-Key: %s", m->key);
  const char *headers[] = {sig_h, key_h};
  int rc = ana_notify_post_json(env, ch->webhook->url, "webhook.url", body, headers, 2, res, NULL);
  free(body); /* jansson's allocator */
  return rc;
}

const struct ana_notifier_ops ana_notifier_webhook = {
    .type = "webhook",
    .validate = validate,
    .prepare = prepare,
    .mask = mask,
    .keep_secrets = keep_secrets,
    .send = send_one,
};
