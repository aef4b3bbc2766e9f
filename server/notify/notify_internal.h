/* Inside server/notify/: the channel ops table every channel folder fills,
 * the registry, and the helpers the channels share. */
#ifndef NOTIFY_INTERNAL_H
#define NOTIFY_INTERNAL_H

#include "analytics/v1/channels.pb-c.h"
#include "ana_http.h"
#include "ana_notify.h"

#include <jansson.h>

/* What every channel may use; owned by the module, read-only for channels. */
struct ana_notify_env {
  struct ana_http_client *http;
  const char *smtp_url, *smtp_user, *smtp_password, *smtp_from;
  const char *telegram_api_url;
  bool refuse_private; /* !NOTIFY_ALLOW_PRIVATE_NETWORKS */
  int timeout_ms;
};

/* One notification as a channel sends it (borrowed for the call). */
struct ana_notify_message {
  const char *key; /* idempotency key */
  const char *source;
  const char *title, *text, *severity;
  const struct ana_notify_value *values;
  size_t n_values;
  const struct ana_notify_link *links;
  size_t n_links;
  int64_t created_ms;
};

struct ana_notify_result {
  int status;      /* HTTP status or SMTP reply code; 0 when none */
  char error[512]; /* why it failed */
  bool permanent;  /* retrying cannot help (a 4xx other than 408/429, a bad token) */
};

/* A channel type. Members are called on worker or sender threads, never on
 * a transport thread; all may run concurrently for different channels. */
struct ana_notifier_ops {
  const char *type; /* "email", ... = the Channel oneof member's name */
  /* Checks ch's settings of this type at create and update; err names the
   * field ("webhook.url") and the reason, INVALID_ARGUMENT. May block (DNS
   * for the private-network policy). Mandatory. */
  int (*validate)(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                  struct ana_error *err);
  /* At creation: fills what the server generates (the webhook signing
   * secret), allocated in arena. Optional. */
  int (*prepare)(Analytics__V1__Channel *ch, struct ana_arena *arena, struct ana_error *err);
  /* Replaces secrets with their masks in an answer (arena). Optional. */
  void (*mask)(Analytics__V1__Channel *ch, struct ana_arena *arena);
  /* At update: secrets in `in` that are empty or masked take old's value.
   * Optional. */
  void (*keep_secrets)(Analytics__V1__Channel *in, const Analytics__V1__Channel *old);
  /* One delivery attempt. 0: delivered (the receiver acknowledged it);
   * negative: failed, res says why and whether retrying can help. Blocks
   * up to env->timeout_ms. Mandatory. */
  int (*send)(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
              const struct ana_notify_message *m, struct ana_notify_result *res);
};

/* registry.c: the channel types; NULL when type is not one. */
const struct ana_notifier_ops *ana_notifier_find(const char *type);
/* The type of a channel message from its settings; NULL when none is set. */
const char *ana_notifier_type_of(const Analytics__V1__Channel *ch);
extern const char ana_notifier_types_text[]; /* "email, slack, webhook or telegram" */

extern const struct ana_notifier_ops ana_notifier_email;
extern const struct ana_notifier_ops ana_notifier_slack;
extern const struct ana_notifier_ops ana_notifier_webhook;
extern const struct ana_notifier_ops ana_notifier_telegram;

/* format.c: the generic JSON document of a notification (webhook body);
 * new reference, NULL when out of memory. */
json_t *ana_notify_message_json(const struct ana_notify_message *m);
/* Fills res from an HTTP attempt's outcome; returns 0 when delivered (2xx). */
int ana_notify_http_outcome(int rc, const struct ana_http_response *resp,
                            const struct ana_error *err, struct ana_notify_result *res);
/* doc (taken; NULL counts as out of memory) as compact JSON text (free()
 * it), or NULL with res->error "out of memory". */
char *ana_notify_json_text(json_t *doc, struct ana_notify_result *res);
/* POSTs body (JSON text, borrowed) to url with Content-Type:
 * application/json and the n_extra headers extra ("Name: value"; at most
 * 4); field names the URL in errors. Fills res (ana_notify_http_outcome) and
 * returns 0 when delivered. resp (may be NULL) is given the response (the
 * caller calls ana_http_response_fini on it). Blocks for the request. */
int ana_notify_post_json(const struct ana_notify_env *env, const char *url, const char *field,
                         const char *body, const char *const *extra, size_t n_extra,
                         struct ana_notify_result *res, struct ana_http_response *resp);
/* Masks a URL holding a secret: its scheme and host, then a slash and three stars (arena); "" stays
 * "". */
char *ana_notify_mask_url(const char *url, struct ana_arena *arena);
/* Whether s is a mask this module wrote (contains "***"). */
bool ana_notify_is_masked(const char *s);

#endif

#include <pthread.h>

/* The module (notify.c creates it; channels.c and outbox.c use it). */
struct ana_notify {
  struct ana_notify_options o;
  struct ana_notify_env env;
  char *smtp_url, *smtp_user, *smtp_password, *smtp_from, *telegram_api_url; /* owned */
  pthread_mutex_t channels_mu; /* serialises channel writes (the default flag) */
  /* Outbox and sender (outbox.c). */
  struct ana_local_conn *conn; /* the outbox's, guarded by db_mu */
  pthread_mutex_t db_mu;
  pthread_mutex_t mu; /* guards what follows */
  pthread_cond_t wake;
  pthread_cond_t attempted; /* broadcast after every recorded attempt */
  bool stop, woken;
  int64_t *in_flight; /* outbox ids being delivered, o.threads slots (0 = free) */
  pthread_t *threads;
  int n_threads;
};

/* channels.c: the stored channel of the account (unmasked, in arena), or
 * ANA_ERR_NOT_FOUND. */
int ana_notify_channel_load(struct ana_notify *n, const char *account_id, const char *id,
                            struct ana_arena *arena, Analytics__V1__Channel **out,
                            struct ana_error *err);
