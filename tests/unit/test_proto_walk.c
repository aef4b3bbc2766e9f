/* Unit tests for the protobuf wire walker (depth, NUL bytes, malformed data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ana_error.h"
#include "ana_proto_walk.h"
#include "analytics/v1/events.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A growable byte string for hand-built wire data. */
struct buf {
  uint8_t *p;
  size_t len, cap;
};

static void put_bytes(struct buf *b, const void *p, size_t n) {
  if (n == 0)
    return; /* an empty part may come with no buffer at all */
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void put_varint(struct buf *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = 0;
  do {
    tmp[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v)
      tmp[n] |= 0x80;
    n++;
  } while (v);
  put_bytes(b, tmp, n);
}

/* Field num as length-delimited: the tag, the length, the payload. */
static void put_len(struct buf *b, uint32_t num, const void *p, size_t n) {
  put_varint(b, (uint64_t)num << 3 | 2);
  put_varint(b, n);
  put_bytes(b, p, n);
}

static struct buf wrap(uint32_t num, struct buf *inner) {
  struct buf out = {0};
  put_len(&out, num, inner->p, inner->len);
  free(inner->p);
  return out;
}

/* A google.protobuf.Value with `depth` messages nested below it: ListValue
 * and Value alternating (list_value inside list_value), built inside out. */
static struct buf nested_value(int depth) {
  struct buf b = {0};
  if (depth % 2 == 0)
    put_len(&b, 3, "x", 1); /* the innermost is a Value: string_value */
  for (int d = depth; d > 0; d--)
    b = wrap(d % 2 == 1 ? 6 : 1, &b); /* Value.list_value / ListValue.values */
  return b;
}

static int walk(const ProtobufCMessageDescriptor *d, const struct buf *b, int max_depth,
                struct ana_proto_violation *v) {
  return ana_proto_walk(d, b->p, b->len, max_depth, v);
}

static void valid_track_events_request_passes_and_unpacks(void **state) {
  (void)state;
  Google__Protobuf__Value val = GOOGLE__PROTOBUF__VALUE__INIT;
  val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
  val.number_value = 4.5;
  Google__Protobuf__Struct__FieldsEntry entry = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
  entry.key = "price";
  entry.value = &val;
  Google__Protobuf__Struct__FieldsEntry *entries[] = {&entry};
  Google__Protobuf__Struct props = GOOGLE__PROTOBUF__STRUCT__INIT;
  props.n_fields = 1;
  props.fields = entries;
  Analytics__V1__Event ev = ANALYTICS__V1__EVENT__INIT;
  ev.event_name = "purchase";
  ev.event_type = "track";
  ev.session_id = "s-1";
  ev.properties = &props;
  Analytics__V1__Event *evs[] = {&ev, &ev, &ev};
  Analytics__V1__TrackEventsRequest req = ANALYTICS__V1__TRACK_EVENTS_REQUEST__INIT;
  req.n_events = 3;
  req.events = evs;
  uint8_t out[512];
  size_t n = analytics__v1__track_events_request__pack(&req, out);
  struct ana_proto_violation v;
  assert_int_equal(
      ana_proto_walk(&analytics__v1__track_events_request__descriptor, out, n, 100, &v), 0);
  assert_int_equal(v.problem, ANA_PROTO_OK);
  ProtobufCMessage *m =
      ana_proto_unpack(&analytics__v1__track_events_request__descriptor, NULL, out, n, 100, &v);
  assert_non_null(m);
  protobuf_c_message_free_unpacked(m, NULL);
  /* Empty input is an empty message. */
  assert_int_equal(ana_proto_walk(&analytics__v1__event__descriptor, NULL, 0, 100, &v), 0);
}

static void depth_at_the_limit_passes_one_more_fails(void **state) {
  (void)state;
  struct ana_proto_violation v;
  for (int limit = 1; limit <= 12; limit++) {
    struct buf at = nested_value(limit), over = nested_value(limit + 1);
    assert_int_equal(walk(&google__protobuf__value__descriptor, &at, limit, &v), 0);
    assert_int_equal(walk(&google__protobuf__value__descriptor, &over, limit, &v), ANA_ERR_INVALID);
    assert_int_equal(v.problem, ANA_PROTO_TOO_DEEP);
    free(at.p);
    free(over.p);
  }
  /* The default, 100, as protobuf C++ counts it. */
  struct buf at = nested_value(100), over = nested_value(101);
  assert_int_equal(walk(&google__protobuf__value__descriptor, &at, ANA_PROTO_DEFAULT_MAX_DEPTH, &v),
                   0);
  ProtobufCMessage *m =
      protobuf_c_message_unpack(&google__protobuf__value__descriptor, NULL, at.len, at.p);
  assert_non_null(m);
  protobuf_c_message_free_unpacked(m, NULL);
  assert_int_equal(
      walk(&google__protobuf__value__descriptor, &over, ANA_PROTO_DEFAULT_MAX_DEPTH, &v),
      ANA_ERR_INVALID);
  assert_int_equal(v.problem, ANA_PROTO_TOO_DEEP);
  assert_string_equal(v.description, "nests messages more than 100 levels deep");
  assert_true(strncmp(v.field, "listValue.values[0].listValue.values[0].", 38) == 0);
  assert_true(strlen(v.field) < sizeof v.field);
  assert_string_equal(v.field + strlen(v.field) - 3, "...");
  free(at.p);
  free(over.p);
  /* Limits above the on-stack frames allocate their stack. */
  struct buf deep = nested_value(500);
  assert_int_equal(walk(&google__protobuf__value__descriptor, &deep, 500, &v), 0);
  assert_int_equal(walk(&google__protobuf__value__descriptor, &deep, 499, &v), ANA_ERR_INVALID);
  free(deep.p);
}

/* TrackEventRequest{event{properties{"a": {struct_value{"b": list[ok, bad]}}}}}. */
static void nul_in_a_nested_string_in_a_map_value_names_its_path(void **state) {
  (void)state;
  struct buf s1 = {0}, s2 = {0}, list = {0};
  put_len(&s1, 3, "fine", 4);
  put_len(&s2, 3, "x\0y", 3);
  put_len(&list, 1, s1.p, s1.len); /* values[0] */
  put_len(&list, 1, s2.p, s2.len); /* values[1] */
  struct buf lv = wrap(6, &list);  /* Value.list_value */
  struct buf entry = {0};
  put_len(&entry, 1, "b", 1);
  put_len(&entry, 2, lv.p, lv.len);
  struct buf inner = wrap(1, &entry); /* Struct.fields */
  struct buf sv = wrap(5, &inner);    /* Value.struct_value */
  struct buf outer_entry = {0};
  put_len(&outer_entry, 1, "a", 1);
  put_len(&outer_entry, 2, sv.p, sv.len);
  struct buf props = wrap(1, &outer_entry);
  struct buf ev = {0};
  put_len(&ev, 5, "purchase", 8);
  put_len(&ev, 7, props.p, props.len);
  struct buf req = wrap(1, &ev);
  struct ana_proto_violation v;
  assert_int_equal(walk(&analytics__v1__track_event_request__descriptor, &req, 100, &v),
                   ANA_ERR_INVALID);
  assert_int_equal(v.problem, ANA_PROTO_NUL);
  assert_string_equal(
      v.field,
      "event.properties.fields[\"a\"].structValue.fields[\"b\"].listValue.values[1].stringValue");
  assert_string_equal(v.description, "contains a NUL byte");
  assert_null(ana_proto_unpack(&analytics__v1__track_event_request__descriptor, NULL, req.p,
                               req.len, 100, &v));
  free(s1.p);
  free(s2.p);
  free(lv.p);
  free(sv.p);
  free(props.p);
  free(req.p);

  /* map<string, string>: the value, then the key. */
  struct buf e = {0};
  put_len(&e, 1, "k\"1", 3);
  put_len(&e, 2, "v\0", 2);
  struct buf search = wrap(6, &e);
  assert_int_equal(walk(&analytics__v1__search_events_request__descriptor, &search, 100, &v),
                   ANA_ERR_INVALID);
  assert_string_equal(v.field, "properties[\"k\\\"1\"]");
  free(search.p);
  e = (struct buf){0};
  put_len(&e, 1, "a\0b", 3);
  put_len(&e, 2, "v", 1);
  search = wrap(6, &e);
  assert_int_equal(walk(&analytics__v1__search_events_request__descriptor, &search, 100, &v),
                   ANA_ERR_INVALID);
  assert_string_equal(v.field, "properties");
  assert_string_equal(v.description, "has a key that contains a NUL byte (\"a\\u0000b\")");
  free(search.p);

  /* Repeated messages: the index of the offending one. */
  struct buf batch = {0};
  for (int i = 0; i < 3; i++) {
    struct buf one = {0};
    put_len(&one, 3, i == 2 ? "s\0" : "s", i == 2 ? 2 : 1);
    put_len(&batch, 1, one.p, one.len);
    free(one.p);
  }
  assert_int_equal(walk(&analytics__v1__track_events_request__descriptor, &batch, 100, &v),
                   ANA_ERR_INVALID);
  assert_string_equal(v.field, "events[2].sessionId");
  free(batch.p);
}

static void expect_malformed(const ProtobufCMessageDescriptor *d, const void *p, size_t n,
                             const char *field, const char *start_of_description) {
  struct ana_proto_violation v;
  assert_int_equal(ana_proto_walk(d, p, n, 100, &v), ANA_ERR_INVALID);
  assert_int_equal(v.problem, ANA_PROTO_MALFORMED);
  assert_string_equal(v.field, field);
  if (strncmp(v.description, start_of_description, strlen(start_of_description)) != 0)
    fail_msg("%s: \"%s\" does not start with \"%s\"", field, v.description, start_of_description);
}

static void truncated_and_malformed_input_fails(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *ev = &analytics__v1__event__descriptor;
  const ProtobufCMessageDescriptor *req = &analytics__v1__track_event_request__descriptor;
  expect_malformed(ev,
                   "\x2a\x05"
                   "abc",
                   5, "eventName", "is truncated");
  expect_malformed(req,
                   "\x0a\x04\x2a\x05"
                   "ab",
                   6, "event.eventName", "is truncated");
  expect_malformed(ev, "\x80", 1, "", "is truncated");
  expect_malformed(ev, "\x2a", 1, "eventName", "is truncated");
  expect_malformed(ev, "\x0f", 1, "", "has wire type 7");
  expect_malformed(ev, "\x02\x00", 2, "", "has a field numbered 0");
  expect_malformed(ev, "\x2b", 1, "eventName", "is a group");
  expect_malformed(ev, "\x7b\x7c", 2, "", "is a group"); /* unknown field 15 */
  expect_malformed(ev, "\x28\x01", 2, "eventName", "is malformed: varint data");
  expect_malformed(ev, "\x32\x01\x08", 3, "timestamp.seconds", "is truncated");
  expect_malformed(ev, "\x30\x01", 2, "timestamp", "is malformed");
  expect_malformed(&google__protobuf__timestamp__descriptor,
                   "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, "seconds",
                   "is truncated or malformed");
  /* Tags and length prefixes longer than 5 bytes (overlong zeros): protobuf-c
   * refuses them, so the walk does too; 5 bytes still pass. */
  expect_malformed(ev, "\x2a\x80\x80\x80\x80\x80\x00", 7, "eventName", "is truncated or malformed");
  expect_malformed(ev, "\xaa\x80\x80\x80\x80\x00\x00", 7, "", "is truncated or malformed");
  struct ana_proto_violation ok;
  assert_int_equal(ana_proto_walk(ev, (const uint8_t *)"\x2a\x80\x80\x80\x80\x00", 6, 100, &ok), 0);
  assert_int_equal(ana_proto_walk(ev, (const uint8_t *)"\xaa\x80\x80\x80\x00\x00", 6, 100, &ok), 0);
  /* Packed repeated scalars: whole elements only. */
  const ProtobufCMessageDescriptor *loc = &google__protobuf__source_code_info__location__descriptor;
  struct ana_proto_violation v;
  assert_int_equal(ana_proto_walk(loc, (const uint8_t *)"\x0a\x03\x01\x96\x01", 5, 100, &v), 0);
  assert_int_equal(ana_proto_walk(loc, (const uint8_t *)"\x08\x01\x08\x02", 4, 100, &v), 0);
  expect_malformed(loc, "\x0a\x02\x01\x96", 4, "path", "is malformed: its packed");
  assert_int_equal(ana_proto_walk(&google__protobuf__list_value__descriptor,
                                  (const uint8_t *)"\x0a\x02\x09\x00", 4, 100, &v),
                   ANA_ERR_INVALID);

  /* Every truncation of a valid message: never a crash, and whatever the walk
   * accepts, protobuf-c unpacks. */
  struct buf deep = nested_value(30);
  struct buf entry = {0};
  put_len(&entry, 1, "key", 3);
  put_len(&entry, 2, deep.p, deep.len);
  struct buf props = wrap(1, &entry);
  struct buf e = {0};
  put_len(&e, 5, "purchase", 8);
  put_len(&e, 7, props.p, props.len);
  put_varint(&e, 99 << 3 | 0); /* an unknown varint field */
  put_varint(&e, 300);
  for (size_t n = 0; n <= e.len; n++) {
    if (ana_proto_walk(ev, e.p, n, 100, &v) == 0) {
      ProtobufCMessage *m = protobuf_c_message_unpack(ev, NULL, n, e.p);
      assert_non_null(m);
      protobuf_c_message_free_unpacked(m, NULL);
    } else {
      assert_int_not_equal(v.problem, ANA_PROTO_OK);
    }
  }
  assert_int_equal(ana_proto_walk(ev, e.p, e.len, 100, &v), 0);
  free(deep.p);
  free(props.p);
  free(e.p);
}

static void unknown_fields_are_skipped_not_descended(void **state) {
  (void)state;
  struct buf deep = nested_value(5000);
  struct buf e = {0};
  put_len(&e, 5, "purchase", 8);
  put_len(&e, 77, deep.p, deep.len); /* unknown: opaque bytes, depth does not count */
  struct ana_proto_violation v;
  assert_int_equal(walk(&analytics__v1__event__descriptor, &e, 100, &v), 0);
  ProtobufCMessage *m =
      ana_proto_unpack(&analytics__v1__event__descriptor, NULL, e.p, e.len, 100, &v);
  assert_non_null(m);
  protobuf_c_message_free_unpacked(m, NULL);
  free(deep.p);
  free(e.p);
}

struct deep_arg {
  struct buf *b;
  int rc;
  struct ana_proto_violation v;
};

static void *walk_deep(void *p) {
  struct deep_arg *a = p;
  a->rc = walk(&analytics__v1__track_event_request__descriptor, a->b, 100, &a->v);
  return NULL;
}

/* 5,000 levels on a 64 KiB stack: only an iterative walk survives that. */
static void input_5000_deep_fails_without_recursion(void **state) {
  (void)state;
  struct buf deep = nested_value(10000); /* 5,000 list_value-in-list_value levels */
  struct buf entry = {0};
  put_len(&entry, 1, "a", 1);
  put_len(&entry, 2, deep.p, deep.len);
  struct buf props = wrap(1, &entry);
  struct buf ev = {0};
  put_len(&ev, 7, props.p, props.len);
  struct buf req = wrap(1, &ev);
  struct deep_arg a = {.b = &req};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  assert_int_equal(pthread_create(&t, &attr, walk_deep, &a), 0);
  pthread_join(t, NULL);
  pthread_attr_destroy(&attr);
  assert_int_equal(a.rc, ANA_ERR_INVALID);
  assert_int_equal(a.v.problem, ANA_PROTO_TOO_DEEP);
  const char *prefix = "event.properties.fields[\"a\"].listValue.values[0].listValue";
  if (strncmp(a.v.field, prefix, strlen(prefix)) != 0)
    fail_msg("path %s", a.v.field);
  free(deep.p);
  free(props.p);
  free(req.p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(valid_track_events_request_passes_and_unpacks),
      cmocka_unit_test(depth_at_the_limit_passes_one_more_fails),
      cmocka_unit_test(nul_in_a_nested_string_in_a_map_value_names_its_path),
      cmocka_unit_test(truncated_and_malformed_input_fails),
      cmocka_unit_test(unknown_fields_are_skipped_not_descended),
      cmocka_unit_test(input_5000_deep_fails_without_recursion),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
