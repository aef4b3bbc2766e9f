/* Unit tests of the real-time hub: filters, sequences, aggregate snapshots,
 * bounded buffers with coalescing, the slow-consumer end, cancel, one shared
 * message per event for all subscribers, and the property comparison, over
 * a transport that records what it was sent and can pretend to be full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_auth.h"
#include "ana_realtime.h"
#include "analytics/v1/realtime.pb-c.h"
#include "ana_call_transport.h"
#include "ana_test_util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SENT 256

/* --- the recording transport --- */

struct recording {
  pthread_mutex_t mu;
  bool full; /* answer ANA_ERR_FULL */
  size_t n_sent;
  Analytics__V1__AnalyticsUpdate *sent[MAX_SENT];
  int finishes;
  struct ana_error status;
};

static struct recording rec = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int rec_send(struct ana_call *call, const ProtobufCMessage *m) {
  (void)call;
  pthread_mutex_lock(&rec.mu);
  int rc = 0;
  if (rec.full || rec.n_sent == MAX_SENT) {
    rc = ANA_ERR_FULL;
  } else {
    uint8_t buf[65536];
    size_t n = protobuf_c_message_pack(m, buf);
    rec.sent[rec.n_sent++] = analytics__v1__analytics_update__unpack(NULL, n, buf);
  }
  pthread_mutex_unlock(&rec.mu);
  return rc;
}

static size_t rec_queue(struct ana_call *call) {
  (void)call;
  return 0;
}

static void rec_finish(struct ana_call *call, const ProtobufCMessage *response,
                       const struct ana_error *status) {
  (void)call;
  (void)response;
  pthread_mutex_lock(&rec.mu);
  rec.finishes++;
  rec.status = *status;
  pthread_mutex_unlock(&rec.mu);
}

static void rec_reading(struct ana_call *call) {
  (void)call;
}

static const struct ana_call_transport recording_transport = {rec_send, rec_queue, rec_finish,
                                                              rec_reading};

static void rec_reset(void) {
  pthread_mutex_lock(&rec.mu);
  for (size_t i = 0; i < rec.n_sent; i++)
    analytics__v1__analytics_update__free_unpacked(rec.sent[i], NULL);
  rec.n_sent = 0;
  rec.full = false;
  rec.finishes = 0;
  memset(&rec.status, 0, sizeof rec.status);
  pthread_mutex_unlock(&rec.mu);
}

static void set_full(bool full) {
  pthread_mutex_lock(&rec.mu);
  rec.full = full;
  pthread_mutex_unlock(&rec.mu);
}

static size_t sent_count(void) {
  pthread_mutex_lock(&rec.mu);
  size_t n = rec.n_sent;
  pthread_mutex_unlock(&rec.mu);
  return n;
}

static int finish_count(void) {
  pthread_mutex_lock(&rec.mu);
  int n = rec.finishes;
  pthread_mutex_unlock(&rec.mu);
  return n;
}

/* Waits up to 2 s for cond. */
#define WAIT_FOR(cond)                                                                             \
  do {                                                                                             \
    for (int w_ = 0; w_ < 400 && !(cond); w_++)                                                    \
      ana_test_sleep_ms(5);                                                                        \
  } while (0)

/* --- committed events --- */

struct fake_event {
  uint8_t payload[1024];
  struct ana_event_record rec;
};

static void make_event(struct fake_event *fe, const char *account, const char *type,
                       const char *name, const char *plan) {
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  Google__Protobuf__Struct props = GOOGLE__PROTOBUF__STRUCT__INIT;
  Google__Protobuf__Struct__FieldsEntry entry = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
  Google__Protobuf__Struct__FieldsEntry *entries[1] = {&entry};
  Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
  ev.event_type = (char *)type;
  ev.event_name = (char *)name;
  ev.account_id = (char *)account;
  if (plan) {
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v.string_value = (char *)plan;
    entry.key = "plan";
    entry.value = &v;
    props.n_fields = 1;
    props.fields = entries;
    ev.properties = &props;
  }
  memset(&fe->rec, 0, sizeof fe->rec);
  fe->rec.account_id = account;
  fe->rec.event_type = type;
  fe->rec.event_name = name;
  fe->rec.payload_len = protobuf_c_message_pack(&ev.base, fe->payload);
  fe->rec.payload = fe->payload;
}

static void commit(struct ana_realtime *rt, const char *account, const char *type, const char *name,
                   const char *plan, int times) {
  for (int i = 0; i < times; i++) {
    struct fake_event fe;
    make_event(&fe, account, type, name, plan);
    ana_realtime_on_commit(rt, &fe.rec, 1);
  }
}

/* --- fixtures --- */

static struct ana_call call;

static struct ana_realtime *start(size_t buffer, int interval_ms, int slow_ms) {
  rec_reset();
  ana_call_init(&call, &recording_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS]);
  struct ana_realtime_options o = {buffer, interval_ms, slow_ms};
  struct ana_error err;
  struct ana_realtime *rt = ana_realtime_create(&o, &err);
  assert_non_null(rt);
  return rt;
}

static void stop(struct ana_realtime *rt) {
  ana_realtime_destroy(rt);
  ana_call_fini(&call);
  rec_reset();
}

static size_t count_events(const char *name) {
  size_t n = 0;
  pthread_mutex_lock(&rec.mu);
  for (size_t i = 0; i < rec.n_sent; i++)
    if (rec.sent[i]->update_case == ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT &&
        (!name || strcmp(rec.sent[i]->event->event_name, name) == 0))
      n++;
  pthread_mutex_unlock(&rec.mu);
  return n;
}

/* The first snapshot at or after index from, or NULL. */
static Analytics__V1__AggregateSnapshot *snapshot_at(size_t from, size_t *index) {
  Analytics__V1__AggregateSnapshot *s = NULL;
  pthread_mutex_lock(&rec.mu);
  for (size_t i = from; i < rec.n_sent && !s; i++)
    if (rec.sent[i]->update_case == ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_AGGREGATES) {
      s = rec.sent[i]->aggregates;
      if (index)
        *index = i;
    }
  pthread_mutex_unlock(&rec.mu);
  return s;
}

/* --- tests --- */

static void filters_pick_the_events_and_sequences_count_up(void **state) {
  (void)state;
  struct ana_realtime *rt = start(64, 10000, 10000);
  const char *keys[] = {"plan"}, *values[] = {"pro"};
  struct ana_realtime_filter f = {.account_id = "acct-1",
                                  .event_type = "message",
                                  .property_keys = keys,
                                  .property_values = values,
                                  .n_properties = 1,
                                  .include_events = true};
  assert_int_equal(ana_realtime_subscribe(rt, &call, &f), 0);
  commit(rt, "acct-1", "message", "sent", "pro", 3);
  commit(rt, "acct-1", "message", "sent", "free", 2); /* property differs */
  commit(rt, "acct-1", "page", "view", "pro", 2);     /* type differs */
  commit(rt, "acct-2", "message", "sent", "pro", 2);  /* another account */
  commit(rt, "acct-1", "message", "delivered", "pro", 1);
  WAIT_FOR(sent_count() >= 4);
  ana_test_sleep_ms(50);
  assert_int_equal(sent_count(), 4);
  assert_int_equal(count_events("sent"), 3);
  assert_int_equal(count_events("delivered"), 1);
  for (size_t i = 0; i < 4; i++)
    assert_int_equal(rec.sent[i]->sequence, i + 1);
  assert_string_equal(rec.sent[0]->event->properties->fields[0]->value->string_value, "pro");

  /* Duplicates are never sent. */
  struct fake_event fe;
  make_event(&fe, "acct-1", "message", "sent", "pro");
  fe.rec.duplicate = true;
  ana_realtime_on_commit(rt, &fe.rec, 1);
  ana_test_sleep_ms(50);
  assert_int_equal(sent_count(), 4);
  stop(rt);
}

static void snapshots_carry_the_rates_of_the_last_second(void **state) {
  (void)state;
  struct ana_realtime *rt = start(64, 100, 10000);
  struct ana_realtime_filter f = {.account_id = "acct-1"}; /* aggregates only */
  assert_int_equal(ana_realtime_subscribe(rt, &call, &f), 0);
  commit(rt, "acct-1", "message", "sent", NULL, 6);
  commit(rt, "acct-1", "page", "view", NULL, 2);
  WAIT_FOR(snapshot_at(0, NULL) != NULL);
  Analytics__V1__AggregateSnapshot *s = snapshot_at(0, NULL);
  assert_non_null(s);
  assert_int_equal(count_events(NULL), 0);
  assert_int_equal(s->n_rates, 2);
  /* Highest first; all 6 events are inside the last second. */
  assert_string_equal(s->rates[0]->event_name, "sent");
  assert_true(s->rates[0]->per_second > 5.99 && s->rates[0]->per_second < 6.01);
  assert_string_equal(s->rates[1]->event_type, "page");
  assert_int_equal(s->dropped_events, 0);
  assert_non_null(s->at);
  /* A second later the window is empty again. */
  ana_test_sleep_ms(1100);
  size_t n = sent_count();
  WAIT_FOR(sent_count() > n);
  s = snapshot_at(n, NULL);
  assert_non_null(s);
  assert_int_equal(s->n_rates, 0);
  stop(rt);
}

static void full_buffer_drops_events_and_the_snapshot_reports_them(void **state) {
  (void)state;
  struct ana_realtime *rt = start(4, 50, 10000);
  struct ana_realtime_filter f = {.account_id = "acct-1", .include_events = true};
  assert_int_equal(ana_realtime_subscribe(rt, &call, &f), 0);
  set_full(true);
  commit(rt, "acct-1", "message", "sent", NULL, 10);
  ana_test_sleep_ms(300); /* several snapshot intervals pass while full: one is kept */
  struct ana_realtime_stats st;
  ana_realtime_stats(rt, &st);
  assert_int_equal(st.events_enqueued, 4);
  assert_int_equal(st.events_dropped, 6);
  set_full(false);
  WAIT_FOR(count_events(NULL) == 4);
  assert_int_equal(count_events(NULL), 4);
  /* The pending snapshot went first, once, with the count of dropped events. */
  /* Read under the lock, checked after it: a failed check must not leave the
   * lock held (the pump thread and the next test would wait on it forever). */
  pthread_mutex_lock(&rec.mu);
  Analytics__V1__AnalyticsUpdate *first = rec.sent[0], *second = rec.sent[1];
  pthread_mutex_unlock(&rec.mu);
  assert_int_equal(first->update_case, ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_AGGREGATES);
  assert_int_equal(first->aggregates->dropped_events, 6);
  assert_true(first->aggregates->rates[0]->per_second >= 10.0); /* all counted */
  assert_int_equal(second->update_case, ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT);
  /* The next snapshot starts from zero again. */
  size_t idx = 0;
  WAIT_FOR(snapshot_at(1, &idx) != NULL);
  assert_int_equal(snapshot_at(1, &idx)->dropped_events, 0);
  assert_int_equal(finish_count(), 0);
  stop(rt);
}

static void a_subscriber_behind_too_long_is_ended(void **state) {
  (void)state;
  struct ana_realtime *rt = start(2, 50, 200);
  struct ana_realtime_filter f = {.account_id = "acct-1", .include_events = true};
  assert_int_equal(ana_realtime_subscribe(rt, &call, &f), 0);
  set_full(true);
  commit(rt, "acct-1", "message", "sent", NULL, 5);
  WAIT_FOR(finish_count() == 1);
  assert_int_equal(finish_count(), 1);
  assert_int_equal(rec.status.code, ANA_STATUS_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(rec.status.message, "subscriber too slow: "));
  assert_non_null(strstr(rec.status.message, " updates dropped"));
  struct ana_realtime_stats st;
  ana_realtime_stats(rt, &st);
  assert_int_equal(st.slow_consumers, 1);
  assert_int_equal(st.subscribers, 0);
  /* Nothing more reaches it. */
  commit(rt, "acct-1", "message", "sent", NULL, 5);
  ana_realtime_stats(rt, &st);
  assert_int_equal(st.events_enqueued, 2);
  stop(rt);
}

static void a_slow_but_catching_up_subscriber_stays(void **state) {
  (void)state;
  struct ana_realtime *rt = start(2, 50, 300);
  struct ana_realtime_filter f = {.account_id = "acct-1", .include_events = true};
  assert_int_equal(ana_realtime_subscribe(rt, &call, &f), 0);
  set_full(true);
  commit(rt, "acct-1", "message", "sent", NULL, 5);
  ana_test_sleep_ms(150);
  set_full(false);
  ana_test_sleep_ms(400);
  assert_int_equal(finish_count(), 0);
  assert_int_equal(count_events(NULL), 2);
  stop(rt);
}

static void cancel_and_drain_finish_once(void **state) {
  (void)state;
  struct ana_realtime *rt = start(8, 50, 10000);
  struct ana_realtime_filter f = {.account_id = "acct-1", .include_events = true};
  assert_int_equal(ana_realtime_subscribe(rt, &call, &f), 0);
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
  ana_realtime_unsubscribe(rt, &call, &st);
  ana_realtime_unsubscribe(rt, &call, &st); /* again: nothing */
  WAIT_FOR(finish_count() == 1);
  ana_test_sleep_ms(100);
  assert_int_equal(finish_count(), 1);
  assert_int_equal(rec.status.code, ANA_STATUS_UNAVAILABLE);
  assert_string_equal(rec.status.message, "the server is shutting down");
  commit(rt, "acct-1", "message", "sent", NULL, 3);
  struct ana_realtime_stats s;
  ana_realtime_stats(rt, &s);
  assert_int_equal(s.events_enqueued, 0);
  stop(rt);
}

static int ended_feeds;
static void count_ended_feed(void *ctx, struct ana_realtime_sub *sub) {
  (void)ctx;
  (void)sub;
  ended_feeds++;
}

/* A fed subscriber's owner is still setting up (pushing what the client
 * missed) when the stream ends from elsewhere: the hub must not finish the
 * call under the owner, only at ana_realtime_feed_ready. */
static void a_feed_ended_during_setup_is_finished_at_ready(void **state) {
  (void)state;
  struct ana_realtime *rt = start(8, 50, 10000);
  ended_feeds = 0;
  struct ana_realtime_sub *sub = ana_realtime_subscribe_feed(rt, &call, count_ended_feed, NULL);
  assert_non_null(sub);
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_PERMISSION_DENIED, "revoked");
  ana_realtime_unsubscribe(rt, &call, &st);
  ana_test_sleep_ms(100);
  assert_int_equal(finish_count(), 0);
  assert_int_equal(ended_feeds, 0);
  ana_realtime_feed_ready(rt, sub);
  assert_int_equal(finish_count(), 1);
  assert_int_equal(ended_feeds, 1);
  assert_int_equal(rec.status.code, ANA_STATUS_PERMISSION_DENIED);
  stop(rt);
}

/* The client went away before the subscriber was listed (the cancel found
 * nothing to end): ready ends it with CANCELLED. */
static void a_feed_cancelled_before_listing_ends_at_ready(void **state) {
  (void)state;
  struct ana_realtime *rt = start(8, 50, 10000);
  ended_feeds = 0;
  ana_call_mark_cancelled(&call);
  struct ana_realtime_sub *sub = ana_realtime_subscribe_feed(rt, &call, count_ended_feed, NULL);
  assert_non_null(sub);
  assert_int_equal(finish_count(), 0);
  ana_realtime_feed_ready(rt, sub);
  assert_int_equal(finish_count(), 1);
  assert_int_equal(ended_feeds, 1);
  assert_int_equal(rec.status.code, ANA_STATUS_CANCELLED);
  struct ana_realtime_stats s;
  ana_realtime_stats(rt, &s);
  assert_int_equal(s.subscribers, 0);
  stop(rt);
}

static void destroy_ends_the_remaining_subscribers(void **state) {
  (void)state;
  struct ana_realtime *rt = start(8, 50, 10000);
  struct ana_realtime_filter f = {.account_id = "acct-1"};
  assert_int_equal(ana_realtime_subscribe(rt, &call, &f), 0);
  ana_realtime_destroy(rt);
  assert_int_equal(finish_count(), 1);
  assert_int_equal(rec.status.code, ANA_STATUS_UNAVAILABLE);
  ana_call_fini(&call);
  rec_reset();
}

/* --- one shared message per event --- */

#define FAN_SUBS 3
#define FAN_EVENTS 4

/* A transport that takes shared messages as they are: records which shared
 * message each call got, with which sequence. */
static struct {
  pthread_mutex_t mu;
  size_t n;
  struct {
    struct ana_call *call;
    struct ana_call_shared *shared;
    uint64_t sequence;
    char name[32];
  } sent[64];
} fan = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int fan_send_shared(struct ana_call *to, struct ana_call_shared *m, uint64_t sequence) {
  const Analytics__V1__AnalyticsUpdate *up = (const void *)ana_call_shared_message(m);
  pthread_mutex_lock(&fan.mu);
  if (fan.n < 64) {
    fan.sent[fan.n].call = to;
    fan.sent[fan.n].shared = m;
    fan.sent[fan.n].sequence = sequence;
    snprintf(fan.sent[fan.n].name, sizeof fan.sent[fan.n].name, "%s", up->event->event_name);
    fan.n++;
  }
  pthread_mutex_unlock(&fan.mu);
  assert_int_equal(up->sequence, 0); /* each subscriber's goes in per send */
  return 0;
}

static const struct ana_call_transport fan_transport = {
    .send = rec_send, /* snapshots */
    .send_queue_length = rec_queue,
    .finish = rec_finish,
    .reading_changed = rec_reading,
    .send_shared = fan_send_shared,
};

static size_t fan_count(void) {
  pthread_mutex_lock(&fan.mu);
  size_t n = fan.n;
  pthread_mutex_unlock(&fan.mu);
  return n;
}

static void every_subscriber_gets_the_events_one_shared_message(void **state) {
  (void)state;
  struct ana_realtime *rt = start(64, 10000, 10000);
  struct ana_call calls[FAN_SUBS];
  struct ana_realtime_filter f = {.account_id = "acct-1", .include_events = true};
  fan.n = 0;
  for (int i = 0; i < FAN_SUBS; i++) {
    ana_call_init(&calls[i], &fan_transport,
                  &ana_methods[ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS]);
    assert_int_equal(ana_realtime_subscribe(rt, &calls[i], &f), 0);
  }
  commit(rt, "acct-1", "message", "first", NULL, 1);
  WAIT_FOR(fan_count() == FAN_SUBS);
  /* A later subscriber: its sequences start at 1 while the others go on. */
  struct ana_call late;
  ana_call_init(&late, &fan_transport,
                &ana_methods[ANA_METHOD_ANALYTICS_V1_REALTIME_SERVICE_STREAM_ANALYTICS]);
  assert_int_equal(ana_realtime_subscribe(rt, &late, &f), 0);
  commit(rt, "acct-1", "message", "next", NULL, FAN_EVENTS - 1);
  size_t want = FAN_SUBS * FAN_EVENTS + (FAN_EVENTS - 1);
  WAIT_FOR(fan_count() == want);
  assert_int_equal(fan_count(), want);

  pthread_mutex_lock(&fan.mu);
  /* The same shared message for one event, whoever gets it. */
  for (size_t i = 0; i < fan.n; i++)
    for (size_t j = 0; j < fan.n; j++)
      if (fan.sent[i].call != fan.sent[j].call && fan.sent[i].sequence == fan.sent[j].sequence &&
          fan.sent[i].call != &late && fan.sent[j].call != &late)
        assert_ptr_equal(fan.sent[i].shared, fan.sent[j].shared);
  /* Each subscriber's own sequence: 1, 2, 3, ... */
  for (int c = 0; c <= FAN_SUBS; c++) {
    struct ana_call *sub = c < FAN_SUBS ? &calls[c] : &late;
    uint64_t next = 1;
    for (size_t i = 0; i < fan.n; i++)
      if (fan.sent[i].call == sub)
        assert_int_equal(fan.sent[i].sequence, next++);
    assert_int_equal(next - 1, c < FAN_SUBS ? FAN_EVENTS : FAN_EVENTS - 1);
  }
  /* The late subscriber's first event is the others' second. */
  for (size_t i = 0; i < fan.n; i++)
    if (fan.sent[i].call == &late && fan.sent[i].sequence == 1)
      for (size_t j = 0; j < fan.n; j++)
        if (fan.sent[j].call == &calls[0] && fan.sent[j].sequence == 2)
          assert_ptr_equal(fan.sent[i].shared, fan.sent[j].shared);
  pthread_mutex_unlock(&fan.mu);
  ana_realtime_destroy(rt);
  for (int i = 0; i < FAN_SUBS; i++)
    ana_call_fini(&calls[i]);
  ana_call_fini(&late);
  ana_call_fini(&call);
  rec_reset();
}

static void property_values_compare_like_search(void **state) {
  (void)state;
  Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  v.number_value = 150;
  assert_true(ana_realtime_value_equals(&v, "150"));
  assert_true(ana_realtime_value_equals(&v, "150.0"));
  assert_false(ana_realtime_value_equals(&v, "15"));
  v.number_value = 1.5;
  assert_true(ana_realtime_value_equals(&v, "1.5"));
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
  v.bool_value = true;
  assert_true(ana_realtime_value_equals(&v, "true"));
  assert_true(ana_realtime_value_equals(&v, "1"));
  assert_false(ana_realtime_value_equals(&v, "false"));
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
  v.string_value = "123";
  assert_true(ana_realtime_value_equals(&v, "123"));
  assert_false(ana_realtime_value_equals(&v, "123.0"));
  v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
  assert_false(ana_realtime_value_equals(&v, "null"));
  assert_false(ana_realtime_value_equals(NULL, ""));
}

static int setup(void **state) {
  (void)state;
  return ana_auth_init("acct-1");
}

static int teardown(void **state) {
  (void)state;
  ana_auth_fini();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(filters_pick_the_events_and_sequences_count_up),
      cmocka_unit_test(snapshots_carry_the_rates_of_the_last_second),
      cmocka_unit_test(full_buffer_drops_events_and_the_snapshot_reports_them),
      cmocka_unit_test(a_subscriber_behind_too_long_is_ended),
      cmocka_unit_test(a_slow_but_catching_up_subscriber_stays),
      cmocka_unit_test(cancel_and_drain_finish_once),
      cmocka_unit_test(a_feed_ended_during_setup_is_finished_at_ready),
      cmocka_unit_test(a_feed_cancelled_before_listing_ends_at_ready),
      cmocka_unit_test(destroy_ends_the_remaining_subscribers),
      cmocka_unit_test(every_subscriber_gets_the_events_one_shared_message),
      cmocka_unit_test(property_values_compare_like_search),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
