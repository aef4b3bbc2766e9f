/* The channel types, one folder each behind struct ana_notifier_ops. Adding
 * a type: its folder, a line here, a oneof member in channels.proto, CMake. */
#include "notify_internal.h"

#include <assert.h>
#include <string.h>

static const struct ana_notifier_ops *const notifiers[] = {
    &ana_notifier_email,
    &ana_notifier_slack,
    &ana_notifier_webhook,
    &ana_notifier_telegram,
};

const char ana_notifier_types_text[] = "email, slack, webhook or telegram";

const struct ana_notifier_ops *ana_notifier_find(const char *type) {
  if (!type)
    return NULL;
  for (size_t i = 0; i < sizeof notifiers / sizeof notifiers[0]; i++) {
    assert(notifiers[i]->validate && notifiers[i]->send);
    if (strcmp(notifiers[i]->type, type) == 0)
      return notifiers[i];
  }
  return NULL;
}

const char *ana_notifier_type_of(const Analytics__V1__Channel *ch) {
  switch (ch->settings_case) {
  case ANALYTICS__V1__CHANNEL__SETTINGS_EMAIL: return "email";
  case ANALYTICS__V1__CHANNEL__SETTINGS_SLACK: return "slack";
  case ANALYTICS__V1__CHANNEL__SETTINGS_WEBHOOK: return "webhook";
  case ANALYTICS__V1__CHANNEL__SETTINGS_TELEGRAM: return "telegram";
  default: return NULL;
  }
}

bool ana_notify_is_channel_type(const char *type) {
  return ana_notifier_find(type) != NULL;
}
