/* The Slack channel: an incoming webhook receiving a Block Kit message
 * (header, text, the values as fields, links as buttons, severity as
 * context), with "text" as the notification fallback. */
#include "notify_internal.h"

#include "ana_arena.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int validate(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    struct ana_error *err) {
  return ana_http_check_url(ch->slack->webhook_url, env->refuse_private, "slack.webhookUrl", err);
}

static void mask(Analytics__V1__Channel *ch, struct ana_arena *arena) {
  ch->slack->webhook_url = ana_notify_mask_url(ch->slack->webhook_url, arena);
}

static void keep_secrets(Analytics__V1__Channel *in, const Analytics__V1__Channel *old) {
  if (!in->slack->webhook_url || !in->slack->webhook_url[0] ||
      ana_notify_is_masked(in->slack->webhook_url))
    in->slack->webhook_url = old->slack->webhook_url;
}

/* Block Kit's limits: header text 150 characters, section text 3,000. */
static json_t *plain(const char *text, size_t max) {
  char buf[3001];
  snprintf(buf, max + 1 < sizeof buf ? max + 1 : sizeof buf, "%s", text ? text : "");
  return json_pack("{s:s, s:s}", "type", "plain_text", "text", buf);
}

json_t *ana_notify_slack_blocks(const struct ana_notify_message *m);

json_t *ana_notify_slack_blocks(const struct ana_notify_message *m) {
  json_t *blocks = json_array();
  const char *sev = m->severity ? m->severity : "info";
  json_array_append_new(blocks,
                        json_pack("{s:s, s:o}", "type", "header", "text", plain(m->title, 150)));
  if (m->text && m->text[0])
    json_array_append_new(blocks,
                          json_pack("{s:s, s:o}", "type", "section", "text", plain(m->text, 3000)));
  if (m->n_values) {
    json_t *fields = json_array();
    for (size_t i = 0; i < m->n_values && i < 10; i++) { /* at most 10 fields */
      char buf[2001];
      snprintf(buf, sizeof buf, "*%s*\n%s", m->values[i].name, m->values[i].value);
      json_array_append_new(fields, json_pack("{s:s, s:s}", "type", "mrkdwn", "text", buf));
    }
    json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "section", "fields", fields));
  }
  if (m->n_links) {
    json_t *els = json_array();
    for (size_t i = 0; i < m->n_links && i < 5; i++)
      json_array_append_new(els, json_pack("{s:s, s:o, s:s}", "type", "button", "text",
                                           plain(m->links[i].label, 75), "url", m->links[i].url));
    json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "actions", "elements", els));
  }
  char ctx[300];
  snprintf(ctx, sizeof ctx, "Severity: *%s* | %s", sev, m->key);
  json_array_append_new(blocks, json_pack("{s:s, s:[{s:s, s:s}]}", "type", "context", "elements",
                                          "type", "mrkdwn", "text", ctx));
  char fallback[400];
  snprintf(fallback, sizeof fallback, "[%s] %s", sev, m->title ? m->title : "");
  return json_pack("{s:s, s:o}", "text", fallback, "blocks", blocks);
}

static int send_one(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    const struct ana_notify_message *m, struct ana_notify_result *res) {
  char *body = ana_notify_json_text(ana_notify_slack_blocks(m), res);
  if (!body)
    return -1;
  int rc = ana_notify_post_json(env, ch->slack->webhook_url, "slack.webhookUrl", body, NULL, 0, res,
                                NULL);
  free(body); /* jansson's allocator */
  return rc;
}

const struct ana_notifier_ops ana_notifier_slack = {
    .type = "slack",
    .validate = validate,
    .mask = mask,
    .keep_secrets = keep_secrets,
    .send = send_one,
};
