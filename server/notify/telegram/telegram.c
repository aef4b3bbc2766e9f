/* The Telegram channel: the Bot API's sendMessage (TELEGRAM_API_URL/bot<token>/
 * sendMessage) with the notification as plain text. */
#include "notify_internal.h"

#include "ana_arena.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool token_ok(const char *t) {
  /* <bot id>:<secret>, e.g. 123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11 */
  size_t i = 0;
  while (isdigit((unsigned char)t[i]))
    i++;
  if (i == 0 || t[i] != ':' || !t[i + 1])
    return false;
  for (i++; t[i]; i++)
    if (!isalnum((unsigned char)t[i]) && t[i] != '_' && t[i] != '-')
      return false;
  return i <= 200;
}

static bool chat_ok(const char *c) {
  size_t n = strlen(c);
  if (n == 0 || n > 64)
    return false;
  if (c[0] == '@') { /* a public channel's username */
    for (size_t i = 1; i < n; i++)
      if (!isalnum((unsigned char)c[i]) && c[i] != '_')
        return false;
    return n > 1;
  }
  for (size_t i = c[0] == '-' ? 1 : 0; i < n; i++)
    if (!isdigit((unsigned char)c[i]))
      return false;
  return n > (c[0] == '-' ? 1u : 0u);
}

static int validate(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    struct ana_error *err) {
  (void)env;
  if (!ch->telegram->bot_token || !token_ok(ch->telegram->bot_token))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "telegram.botToken: is required, as <bot id>:<secret> from BotFather");
  if (!ch->telegram->chat_id || !chat_ok(ch->telegram->chat_id))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "telegram.chatId: is required: a numeric chat id or @channelname");
  return 0;
}

static void mask(Analytics__V1__Channel *ch, struct ana_arena *arena) {
  (void)arena;
  ch->telegram->bot_token = (char *)"***";
}

static void keep_secrets(Analytics__V1__Channel *in, const Analytics__V1__Channel *old) {
  if (!in->telegram->bot_token || !in->telegram->bot_token[0] ||
      ana_notify_is_masked(in->telegram->bot_token))
    in->telegram->bot_token = old->telegram->bot_token;
}

static int send_one(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    const struct ana_notify_message *m, struct ana_notify_result *res) {
  char text[4097]; /* sendMessage takes at most 4,096 characters */
  size_t n = (size_t)snprintf(text, sizeof text, "[%s] %s\n%s", m->severity ? m->severity : "info",
                              m->title ? m->title : "", m->text ? m->text : "");
  for (size_t i = 0; i < m->n_values && n < sizeof text; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "\n%s: %s", m->values[i].name,
                          m->values[i].value);
  for (size_t i = 0; i < m->n_links && n < sizeof text; i++)
    n +=
        (size_t)snprintf(text + n, sizeof text - n, "\n%s: %s", m->links[i].label, m->links[i].url);
  char *body = ana_notify_json_text(json_pack("{s:s, s:s, s:b}", "chat_id", ch->telegram->chat_id,
                                              "text", text, "disable_web_page_preview", 1),
                                    res);
  char url[1024];
  const char *base = env->telegram_api_url ? env->telegram_api_url : "https://api.telegram.org";
  size_t bl = strlen(base);
  while (bl && base[bl - 1] == '/')
    bl--;
  snprintf(url, sizeof url, "%.*s/bot%s/sendMessage", (int)bl, base, ch->telegram->bot_token);
  if (!body)
    return -1;
  struct ana_http_response resp;
  int rc = ana_notify_post_json(env, url, "TELEGRAM_API_URL", body, NULL, 0, res, &resp);
  if (rc == 0) { /* the Bot API answers {"ok":true,...} */
    json_t *ans = resp.body ? json_loads(resp.body, 0, NULL) : NULL;
    if (!json_is_true(json_object_get(ans, "ok"))) {
      snprintf(res->error, sizeof res->error, "the Bot API did not answer ok: %.200s",
               resp.body ? resp.body : "");
      rc = -1;
    }
    json_decref(ans);
  } else if (res->status == 401 || res->status == 404) {
    snprintf(res->error, sizeof res->error, "HTTP %d: the bot token was refused", res->status);
  }
  ana_http_response_fini(&resp);
  free(body);
  return rc;
}

const struct ana_notifier_ops ana_notifier_telegram = {
    .type = "telegram",
    .validate = validate,
    .mask = mask,
    .keep_secrets = keep_secrets,
    .send = send_one,
};
