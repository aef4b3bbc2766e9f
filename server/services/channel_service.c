/* ChannelService: an account's notification channels (create, list, get,
 * update, delete, test) through server/notify/. Every call touches the
 * catalog (and a test the network), so it runs on the worker pool. */
#include "ana_services.h"
#include "service_jobs.h"

#include "analytics/v1/channels.pb-c.h"
#include "ana_call.h"
#include "ana_log.h"
#include "ana_notify.h"

#include <stdio.h>
#include <string.h>

#define DEFAULT_PAGE 50
#define MAX_PAGE 1000
/* How long a test waits beyond NOTIFY_TIMEOUT for a sender to take it. */
#define TEST_QUEUE_WAIT_MS 2000

static struct ana_channel_service_options opts;

static const char *account_of(struct ana_call *call) {
  return ana_call_principal(call)->account_id;
}

static void answer(struct ana_call *call, int rc, Analytics__V1__Channel *c,
                   const struct ana_error *err) {
  if (rc < 0)
    ana_service_fail(call, err);
  else
    ana_call_reply(call, &c->base);
}

static void do_create(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__CreateChannelRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Channel *c = NULL;
  ana_error_clear(&err);
  int rc = ana_notify_channel_create(opts.notify, account_of(call), req->channel,
                                     ana_call_arena(call), &c, &err);
  if (rc == 0)
    ANA_INFO("channels", "channel %s (%s) created for account %s", c->channel_id, c->type,
             account_of(call));
  answer(call, rc, c, &err);
}

static void do_get(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__GetChannelRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Channel *c = NULL;
  ana_error_clear(&err);
  int rc = ana_notify_channel_get(opts.notify, account_of(call), req->channel_id,
                                  ana_call_arena(call), &c, &err);
  answer(call, rc, c, &err);
}

static void do_update(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__UpdateChannelRequest *req = (const void *)request;
  struct ana_error err;
  Analytics__V1__Channel *c = NULL;
  ana_error_clear(&err);
  int rc = ana_notify_channel_update(opts.notify, account_of(call), req->channel_id, req->channel,
                                     ana_call_arena(call), &c, &err);
  answer(call, rc, c, &err);
}

static void do_delete(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__DeleteChannelRequest *req = (const void *)request;
  struct ana_error err;
  ana_error_clear(&err);
  if (ana_notify_channel_delete(opts.notify, account_of(call), req->channel_id, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__DeleteChannelResponse resp = ANALYTICS__V1__DELETE_CHANNEL_RESPONSE__INIT;
  ana_call_reply(call, &resp.base);
}

static void do_list(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListChannelsRequest *req = (const void *)request;
  struct ana_error err;
  ana_error_clear(&err);
  size_t size = ana_service_page_size(call, req->page_size, DEFAULT_PAGE, MAX_PAGE);
  if (!size)
    return;
  Analytics__V1__Channel **items = NULL;
  size_t n = 0;
  if (ana_notify_channel_list(opts.notify, account_of(call), req->page_token, (int)size + 1,
                              ana_call_arena(call), &items, &n, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__ListChannelsResponse resp = ANALYTICS__V1__LIST_CHANNELS_RESPONSE__INIT;
  if (ana_service_page_more(&n, size))
    resp.next_page_token = items[size - 1]->channel_id;
  resp.channels = items;
  resp.n_channels = n;
  ana_call_reply(call, &resp.base);
}

static void do_test(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__TestChannelRequest *req = (const void *)request;
  struct ana_error err;
  struct ana_notify_test_result res;
  ana_error_clear(&err);
  if (ana_notify_channel_test(opts.notify, account_of(call), req->channel_id, TEST_QUEUE_WAIT_MS,
                              &res, &err) < 0) {
    ana_service_fail(call, &err);
    return;
  }
  Analytics__V1__TestChannelResponse resp = ANALYTICS__V1__TEST_CHANNEL_RESPONSE__INIT;
  resp.outcome = res.outcome;
  resp.status = res.status;
  resp.error = res.error;
  resp.duration_ms = res.duration_ms;
  resp.idempotency_key = res.key;
  ana_call_reply(call, &resp.base);
}

ANA_SERVICE_ASYNC(create_channel, do_create, opts.workers)
ANA_SERVICE_ASYNC(get_channel, do_get, opts.workers)
ANA_SERVICE_ASYNC(update_channel, do_update, opts.workers)
ANA_SERVICE_ASYNC(delete_channel, do_delete, opts.workers)
ANA_SERVICE_ASYNC(list_channels, do_list, opts.workers)
ANA_SERVICE_ASYNC(test_channel, do_test, opts.workers)

static const struct ana_handler create_h = {.on_request = create_channel};
static const struct ana_handler get_h = {.on_request = get_channel};
static const struct ana_handler update_h = {.on_request = update_channel};
static const struct ana_handler delete_h = {.on_request = delete_channel};
static const struct ana_handler list_h = {.on_request = list_channels};
static const struct ana_handler test_h = {.on_request = test_channel};

int ana_channel_service_bind(const struct ana_channel_service_options *o) {
  opts = *o;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_CREATE_CHANNEL, &create_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_GET_CHANNEL, &get_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_UPDATE_CHANNEL, &update_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_DELETE_CHANNEL, &delete_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_LIST_CHANNELS, &list_h);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_CHANNEL_SERVICE_TEST_CHANNEL, &test_h);
  return 0;
}
