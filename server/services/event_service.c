/* EventService: track one event, a batch, the ingest and import streams,
 * and search. Every event is validated and enriched (ingest/prepare.c),
 * then queued for a group commit; the answer goes out from the committer's
 * thread once the commit holding the events is durable. */
#include "ana_services.h"
#include "service_jobs.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_auth.h"
#include "ana_call.h"
#include "ana_client_ip.h"
#include "ana_event_names.h"
#include "ana_id.h"
#include "ana_log.h"
#include "ana_rate_limit.h"
#include "ana_clock.h"
#include "ana_timestamp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_PAGE_SIZE 50
#define IMPORT_MAX_RESULTS 10000

typedef Analytics__V1__EventResult__Status status_t;
#define ST_ACCEPTED ANALYTICS__V1__EVENT_RESULT__STATUS__ACCEPTED
#define ST_DUPLICATE ANALYTICS__V1__EVENT_RESULT__STATUS__DUPLICATE
#define ST_REJECTED ANALYTICS__V1__EVENT_RESULT__STATUS__REJECTED
#define ST_CORRECTED ANALYTICS__V1__EVENT_RESULT__STATUS__CORRECTED

static struct ana_event_service_options opts;

/* ------------------------------------------------------------------ */
/* a batch of events from one message: prepared items and their commit */

struct batch;
typedef void (*batch_done_fn)(struct batch *b, int rc, const struct ana_error *err);

struct batch {
  struct ana_call *call;
  struct ana_arena *arena; /* where everything of this batch lives */
  struct ana_ingest_item *items;
  size_t n;
  size_t *record_item; /* records[j] belongs to items[record_item[j]] */
  struct ana_event_record *records;
  struct ana_commit_request commit;
  batch_done_fn done;
  void *owner; /* the stream state, for stream batches */
  const char *batch_id;
};

static void fill_request(struct ana_call *call, struct ana_ingest_request *r, char *ip,
                         size_t ip_size) {
  ana_client_ip(ana_call_peer(call), ana_call_metadata(call, "x-forwarded-for"),
                opts.trusted_proxies, ip, ip_size);
  r->account_id = ana_call_principal(call)->account_id;
  r->client_ip = ip;
  /* The REST bridge's (in-process or remote) reading of User-Agent and
   * Accept-Language; gRPC's own user-agent names the library, not the client. */
  r->user_agent = ana_call_metadata(call, "x-client-user-agent");
  r->locale = ana_call_metadata(call, "x-client-locale");
  r->now_ms = ana_clock_wall_ms();
  r->limits = &opts.limits;
  r->encrypted = opts.encrypted;
  r->crypto = opts.crypto;
}

static void commit_done(struct ana_commit_request *req, int rc, const struct ana_error *err) {
  struct batch *b = req->ctx;
  if (rc == 0)
    for (size_t j = 0; j < b->commit.n; j++)
      if (b->records[j].duplicate)
        b->items[b->record_item[j]].status = ST_DUPLICATE;
  b->done(b, rc, err);
}

/* A batch this large is prepared in chunks of PREPARE_CHUNK events, on
 * the calling thread and on up to PREPARE_HELPERS_MAX of the workers. */
#define PREPARE_PARALLEL_MIN 256
#define PREPARE_CHUNK 64
#define PREPARE_HELPERS_MAX 3

/* "<list_name>[<i>]" into buf (at least 64 bytes), without printf. */
static void item_path(char *buf, const char *list_name, size_t i) {
  size_t n = strlen(list_name);
  if (n > 40)
    n = 40;
  memcpy(buf, list_name, n);
  buf[n++] = '[';
  char digits[24];
  size_t d = 0;
  do
    digits[d++] = (char)('0' + i % 10);
  while ((i /= 10) && d < sizeof digits);
  while (d)
    buf[n++] = digits[--d];
  buf[n++] = ']';
  buf[n] = '\0';
}

/* Helpers for a large batch: one fewer than the CPUs, at most
 * PREPARE_HELPERS_MAX (the count is read once). */
static int prepare_helpers(void) {
  static atomic_int helpers = -1;
  int h = atomic_load(&helpers);
  if (h < 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    h = cpus > PREPARE_HELPERS_MAX ? PREPARE_HELPERS_MAX : cpus > 1 ? (int)cpus - 1 : 0;
    atomic_store(&helpers, h);
  }
  return h;
}

struct prepare_run {
  struct batch *b;
  const struct ana_ingest_request *ir;
  Analytics__V1__Event *const *events;
  const size_t *sizes;  /* NULL: each event is sized when prepared */
  const char **new_ids; /* NULL: made when prepared */
  const char *list_name;
  struct ana_arena *arenas; /* one per chunk; NULL: the batch's */
  atomic_bool nomem;
};

/* Prepares chunk c of r (every event when r->arenas is NULL). */
static void prepare_chunk(void *ctx, size_t c) {
  struct prepare_run *r = ctx;
  struct batch *b = r->b;
  size_t from = r->arenas ? c * PREPARE_CHUNK : 0;
  size_t to = r->arenas && from + PREPARE_CHUNK < b->n ? from + PREPARE_CHUNK : b->n;
  struct ana_arena *arena = r->arenas ? &r->arenas[c] : b->arena;
  for (size_t i = from; i < to; i++) {
    char path[64] = "";
    if (r->list_name)
      item_path(path, r->list_name, i);
    struct ana_ingest_event in = {
        r->events[i],
        r->sizes ? r->sizes[i] : protobuf_c_message_get_packed_size(&r->events[i]->base),
        r->new_ids ? r->new_ids[i] : NULL};
    if (ana_ingest_prepare_known(r->ir, &in, path, arena, &b->items[i]) < 0) {
      atomic_store(&r->nomem, true);
      return;
    }
  }
}

/* Prepares every event (sizes[i]: events[i]'s packed size, or sizes NULL)
 * and queues the valid ones. Returns 1 when a commit was queued (done comes
 * later), 0 when nothing needed a commit (done has not been called: the
 * caller answers now), or a negative error with err filled. */
static int batch_start(struct batch *b, Analytics__V1__Event *const *events, const size_t *sizes,
                       size_t n, const char *list_name, struct ana_error *err) {
  char ip[64];
  struct ana_ingest_request ir;
  fill_request(b->call, &ir, ip, sizeof ip);
  ir.client_ip = ana_arena_strdup(b->arena, ip);
  b->n = n;
  b->items = ana_arena_calloc(b->arena, n ? n : 1, sizeof *b->items);
  b->records = ana_arena_calloc(b->arena, n ? n : 1, sizeof *b->records);
  b->record_item = ana_arena_calloc(b->arena, n ? n : 1, sizeof *b->record_item);
  if (!b->items || !b->records || !b->record_item || !ir.client_ip)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  struct prepare_run run = {b, &ir, events, sizes, NULL, list_name, NULL, false};
  size_t chunks = 1;
  /* (chunk arenas are adopted whatever the limit: a limited arena is not split) */
  int helpers =
      n >= PREPARE_PARALLEL_MIN && opts.workers && !b->arena->limit ? prepare_helpers() : 0;
  if (helpers > 0) {
    /* Ids made here, in the events' order, as one thread would make them. */
    chunks = (n + PREPARE_CHUNK - 1) / PREPARE_CHUNK;
    run.arenas = ana_arena_calloc(b->arena, chunks, sizeof *run.arenas);
    run.new_ids = ana_arena_calloc(b->arena, n, sizeof *run.new_ids);
    if (!run.arenas || !run.new_ids)
      return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
      if (events[i]->event_id && events[i]->event_id[0])
        continue;
      char *id = ana_arena_alloc(b->arena, ANA_UUID_STR_LEN + 1);
      if (!id || ana_uuid7_generate(id) < 0)
        return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
      run.new_ids[i] = id;
    }
    for (size_t c = 0; c < chunks; c++)
      ana_arena_init(&run.arenas[c], 16 * 1024, 0);
  }
  ana_workers_parallel(run.arenas ? opts.workers : NULL, helpers, chunks, prepare_chunk, &run);
  for (size_t c = 0; run.arenas && c < chunks; c++)
    ana_arena_adopt(b->arena, &run.arenas[c]);
  if (atomic_load(&run.nomem))
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (b->items[i].status != ST_REJECTED) {
      b->records[k] = b->items[i].record;
      b->record_item[k] = i;
      k++;
    }
  }
  if (k == 0)
    return 0;
  b->commit.records = b->records;
  b->commit.n = k;
  b->commit.done = commit_done;
  b->commit.ctx = b;
  int rc = ana_committer_submit(opts.committer, &b->commit, err);
  return rc < 0 ? rc : 1;
}

/* Bytes of a varint holding v. */
static size_t varint_size(size_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* The packed size of each event of msg's repeated `events` field (in
 * arena: NULL when out of memory, or when msg has no events) and, in
 * *total, of msg: the events' sizes are what msg's size is made of, so
 * each event is sized once. */
static size_t *batch_sizes(const ProtobufCMessage *msg, Analytics__V1__Event *const *events,
                           size_t n, struct ana_arena *a, size_t *total) {
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "events");
  union {
    max_align_t align;
    unsigned char bytes[256];
  } rest; /* msg without its events */
  size_t *sizes = n ? ana_arena_alloc(a, n * sizeof *sizes) : NULL;
  if (!sizes || !f || msg->descriptor->sizeof_message > sizeof rest.bytes) {
    *total = protobuf_c_message_get_packed_size(msg);
    return NULL;
  }
  memcpy(rest.bytes, msg, msg->descriptor->sizeof_message);
  *(size_t *)(rest.bytes + f->quantifier_offset) = 0;
  size_t sum = protobuf_c_message_get_packed_size((const ProtobufCMessage *)rest.bytes);
  size_t tag = varint_size((size_t)f->id << 3);
  for (size_t i = 0; i < n; i++) {
    sizes[i] = protobuf_c_message_get_packed_size(&events[i]->base);
    sum += tag + varint_size(sizes[i]) + sizes[i];
  }
  *total = sum;
  return sizes;
}

/* Checks the batch-level limits: n_events, and size (msg's packed size). */
static int check_batch_limits(size_t size, size_t n_events, const char *field,
                              struct ana_error *err) {
  if (n_events > (size_t)opts.limits.batch_max_events)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "%s: the batch has %zu events, more than the limit of %d", field, n_events,
                         opts.limits.batch_max_events);
  if (size > (size_t)opts.limits.batch_max_bytes)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "%s: the batch is %zu bytes, more than the limit of %ld", field, size,
                         opts.limits.batch_max_bytes);
  return 0;
}

/* The EventResult of one item, allocated in arena. */
static Analytics__V1__EventResult *result_of(struct ana_arena *a, const struct ana_ingest_item *it,
                                             size_t index) {
  Analytics__V1__EventResult *r = ana_arena_alloc(a, sizeof *r);
  if (!r)
    return NULL;
  analytics__v1__event_result__init(r);
  r->index = (int32_t)index;
  r->event_id = (char *)it->event_id;
  r->status = it->status;
  if (it->status == ST_REJECTED) {
    r->n_violations = it->n_violations;
    r->violations =
        ana_arena_calloc(a, it->n_violations ? it->n_violations : 1, sizeof *r->violations);
    Analytics__V1__FieldViolation *fv =
        ana_arena_calloc(a, it->n_violations ? it->n_violations : 1, sizeof *fv);
    if (!r->violations || !fv)
      return NULL;
    for (size_t v = 0; v < it->n_violations; v++) {
      analytics__v1__field_violation__init(&fv[v]);
      fv[v].field = (char *)it->violations[v].field;
      fv[v].description = (char *)it->violations[v].description;
      r->violations[v] = &fv[v];
    }
  } else if (it->status != ST_DUPLICATE) {
    r->stored_timestamp = ana_timestamp_new(a, it->stored_ts_ms);
    r->skew_ms = it->skew_ms;
  }
  return r;
}

struct counts {
  int32_t accepted, duplicates, rejected, corrected;
};

static void count(struct counts *c, status_t s) {
  switch (s) {
  case ST_ACCEPTED: c->accepted++; break;
  case ST_DUPLICATE: c->duplicates++; break;
  case ST_REJECTED: c->rejected++; break;
  case ST_CORRECTED: c->corrected++; break;
  default: break;
  }
}

/* All results of a batch, allocated in arena; NULL when out of memory. */
static Analytics__V1__EventResult **results_of(struct batch *b, struct counts *c) {
  Analytics__V1__EventResult **rs = ana_arena_calloc(b->arena, b->n ? b->n : 1, sizeof *rs);
  if (!rs)
    return NULL;
  for (size_t i = 0; i < b->n; i++) {
    if (!(rs[i] = result_of(b->arena, &b->items[i], i)))
      return NULL;
    count(c, b->items[i].status);
  }
  return rs;
}

/* ------------------------------------------------------------------ */
/* TrackEvent */

static void track_event_done(struct batch *b, int rc, const struct ana_error *err) {
  if (rc < 0) {
    ana_call_finish(b->call, NULL, err);
    return;
  }
  Analytics__V1__TrackEventResponse resp = ANALYTICS__V1__TRACK_EVENT_RESPONSE__INIT;
  resp.result = result_of(b->arena, &b->items[0], 0);
  if (!resp.result)
    ana_call_fail(b->call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    ana_call_reply(b->call, &resp.base);
}

/* A batch of call's, in its arena, ended by done; NULL after failing the
 * call (out of memory). */
static struct batch *new_batch(struct ana_call *call, batch_done_fn done) {
  struct batch *b = ana_arena_calloc(ana_call_arena(call), 1, sizeof *b);
  if (!b) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  b->call = call;
  b->arena = ana_call_arena(call);
  b->done = done;
  return b;
}

static void track_event(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__TrackEventRequest *req = (const void *)request;
  struct ana_error err;
  if (!req->event) {
    ana_call_add_violation(call, "event", "is required");
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "event: is required");
    return;
  }
  struct batch *b = new_batch(call, track_event_done);
  if (!b)
    return;
  int rc = batch_start(b, &req->event, NULL, 1, NULL, &err);
  if (rc < 0) {
    ana_call_finish(call, NULL, &err);
  } else if (rc == 0) {
    /* Rejected: a single event's problems are the request's. */
    const struct ana_ingest_item *it = &b->items[0];
    for (size_t v = 0; v < it->n_violations; v++)
      ana_call_add_violation(call, it->violations[v].field, it->violations[v].description);
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "%s: %s", it->violations[0].field,
                  it->violations[0].description);
  }
}

/* ------------------------------------------------------------------ */
/* TrackEvents */

static void track_events_done(struct batch *b, int rc, const struct ana_error *err) {
  if (rc < 0) {
    ana_call_finish(b->call, NULL, err);
    return;
  }
  Analytics__V1__TrackEventsResponse resp = ANALYTICS__V1__TRACK_EVENTS_RESPONSE__INIT;
  struct counts c = {0};
  resp.results = results_of(b, &c);
  resp.n_results = b->n;
  resp.accepted = c.accepted;
  resp.duplicates = c.duplicates;
  resp.rejected = c.rejected;
  resp.corrected = c.corrected;
  if (!resp.results)
    ana_call_fail(b->call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    ana_call_reply(b->call, &resp.base);
}

static void track_events(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__TrackEventsRequest *req = (const void *)request;
  struct ana_error err;
  size_t size = 0, *sizes = NULL;
  if (req->n_events <= (size_t)opts.limits.batch_max_events)
    sizes = batch_sizes(request, req->events, req->n_events, ana_call_arena(call), &size);
  if (check_batch_limits(size, req->n_events, "events", &err) < 0) {
    ana_call_add_violation(call, "events", strchr(err.message, ':') + 2);
    ana_call_finish(call, NULL, &err);
    return;
  }
  /* A batch costs one unit per event (the call's base cost, taken at
   * admission, counts towards them). */
  int64_t base = ana_call_method(call)->rate_cost;
  if (ana_call_rate_charge(call, (int64_t)req->n_events - base, &err) < 0) {
    ana_call_finish(call, NULL, &err);
    return;
  }
  struct batch *b = new_batch(call, track_events_done);
  if (!b)
    return;
  int rc = batch_start(b, req->events, sizes, req->n_events, "events", &err);
  if (rc < 0)
    ana_call_finish(call, NULL, &err);
  else if (rc == 0)
    track_events_done(b, 0, NULL);
}

/* ------------------------------------------------------------------ */
/* IngestEvents (bidi) and ImportEvents (client streaming) */

/* Lives in the call's arena, so it stays valid for any callback still running
 * on another thread when the call is finished (the runtime frees the call
 * only after its callbacks return). */
struct stream {
  pthread_mutex_t mu;
  bool finished;
  struct ana_call *call;
  bool import; /* ImportEvents: one summary at the end */
  int in_flight;
  bool half_closed;
  bool failed; /* the call was finished early */
  struct ana_error failure;
  /* ImportEvents' running summary. */
  int64_t accepted, duplicates, rejected, corrected;
  Analytics__V1__EventResult **results; /* non-accepted results, heap copies */
  size_t n_results, cap_results;
  struct ana_arena *results_arena;
};

/* How a stream ends, decided under s->mu and carried out after unlocking:
 * finishing may free the call, and with it s (which lives in its arena). */
struct stream_end {
  bool now;
  struct ana_call *call;
  bool import, failed;
  struct ana_error failure;
  Analytics__V1__ImportEventsResponse summary;
  struct ana_arena *results_arena;
};

static void stream_decide_end_locked(struct stream *s, struct stream_end *e) {
  e->now = false;
  if (s->finished || s->in_flight > 0 || !(s->half_closed || s->failed))
    return;
  s->finished = true;
  e->now = true;
  e->call = s->call;
  e->import = s->import;
  e->failed = s->failed;
  e->failure = s->failure;
  analytics__v1__import_events_response__init(&e->summary);
  e->summary.accepted = s->accepted;
  e->summary.duplicates = s->duplicates;
  e->summary.rejected = s->rejected;
  e->summary.corrected = s->corrected;
  e->summary.results = s->results;
  e->summary.n_results = s->n_results;
  e->results_arena = s->results_arena;
  s->results = NULL;
  s->results_arena = NULL;
}

static void stream_end(struct stream_end *e) {
  if (!e->now)
    return;
  if (e->failed)
    ana_call_finish(e->call, NULL, &e->failure);
  else if (e->import)
    ana_call_reply(e->call, &e->summary.base);
  else
    ana_call_finish(e->call, NULL, NULL);
  ana_free(e->summary.results);
  ana_arena_destroy(e->results_arena);
}

static void stream_fail_locked(struct stream *s, const struct ana_error *err) {
  if (!s->failed) {
    s->failed = true;
    s->failure = *err;
  }
}

static void stream_batch_done(struct batch *b, int rc, const struct ana_error *err) {
  struct stream *s = b->owner;
  pthread_mutex_lock(&s->mu);
  if (rc < 0) {
    stream_fail_locked(s, err);
  } else if (!s->failed) {
    struct counts c = {0};
    Analytics__V1__EventResult **rs = results_of(b, &c);
    if (!rs) {
      struct ana_error oom = {ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"};
      stream_fail_locked(s, &oom);
    } else if (s->import) {
      s->accepted += c.accepted;
      s->duplicates += c.duplicates;
      s->rejected += c.rejected;
      s->corrected += c.corrected;
      for (size_t i = 0; i < b->n; i++) {
        if (b->items[i].status == ST_ACCEPTED || s->n_results >= IMPORT_MAX_RESULTS)
          continue;
        if (s->n_results == s->cap_results) {
          size_t cap = s->cap_results ? s->cap_results * 2 : 64;
          void *p = ana_realloc(s->results, cap * sizeof *s->results);
          if (!p)
            break;
          s->results = p;
          s->cap_results = cap;
        }
        /* Kept past this batch: copy into the stream's own arena. */
        size_t len = protobuf_c_message_get_packed_size(&rs[i]->base);
        uint8_t *buf = ana_arena_alloc(s->results_arena, len ? len : 1);
        if (!buf)
          break;
        protobuf_c_message_pack(&rs[i]->base, buf);
        Analytics__V1__EventResult *copy = (void *)ana_proto_unpack(
            &analytics__v1__event_result__descriptor, &s->results_arena->pb, buf, len,
            ANA_PROTO_MAX_DEPTH_CEILING, NULL);
        if (copy)
          s->results[s->n_results++] = copy;
      }
    } else {
      Analytics__V1__IngestResponse resp = ANALYTICS__V1__INGEST_RESPONSE__INIT;
      resp.batch_id = (char *)(b->batch_id ? b->batch_id : "");
      resp.results = rs;
      resp.n_results = b->n;
      resp.accepted = c.accepted;
      resp.duplicates = c.duplicates;
      resp.rejected = c.rejected;
      resp.corrected = c.corrected;
      int src = ana_call_send(s->call, &resp.base);
      if (src == ANA_ERR_FULL) {
        struct ana_error full = {ANA_STATUS_RESOURCE_EXHAUSTED,
                                 "the client does not read its answers; stream closed"};
        stream_fail_locked(s, &full);
      }
    }
  }
  s->in_flight--;
  bool resume = !s->failed && s->in_flight == opts.stream_max_in_flight - 1;
  struct stream_end e;
  stream_decide_end_locked(s, &e);
  if (resume && !s->finished)
    ana_call_resume_reading(s->call); /* under the lock: the call is alive */
  pthread_mutex_unlock(&s->mu);
  ana_arena_destroy(b->arena); /* the message and its batch */
  stream_end(&e);
}

static void stream_open(struct ana_call *call, bool import) {
  struct stream *s = ana_arena_calloc(ana_call_arena(call), 1, sizeof *s);
  if (s)
    s->results_arena = ana_arena_create(0, 0);
  if (!s || !s->results_arena) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  pthread_mutex_init(&s->mu, NULL);
  s->call = call;
  s->import = import;
  ana_call_set_user(call, s);
}

static void ingest_open(struct ana_call *call) {
  stream_open(call, false);
}
static void import_open(struct ana_call *call) {
  stream_open(call, true);
}

static void stream_message(struct ana_call *call, const ProtobufCMessage *message) {
  struct stream *s = ana_call_user(call);
  const Analytics__V1__IngestRequest *req = (const void *)message;
  if (!s)
    return;
  struct ana_error err;
  struct ana_arena *arena = ana_call_keep_message(call);
  struct batch *b = arena ? ana_arena_calloc(arena, 1, sizeof *b) : NULL;
  pthread_mutex_lock(&s->mu);
  if (s->failed || s->finished || !b) {
    pthread_mutex_unlock(&s->mu);
    ana_arena_destroy(arena);
    return;
  }
  s->in_flight++;
  if (s->in_flight >= opts.stream_max_in_flight)
    ana_call_pause_reading(call); /* resumed as commits complete */
  pthread_mutex_unlock(&s->mu);

  b->call = call;
  b->arena = arena;
  b->owner = s;
  b->batch_id = req->batch_id;
  b->done = stream_batch_done;
  const char *field = "events", *reason = NULL;
  size_t size = 0, *sizes = NULL;
  if (req->n_events <= (size_t)opts.limits.batch_max_events)
    sizes = batch_sizes(message, req->events, req->n_events, arena, &size);
  int rc = check_batch_limits(size, req->n_events, "events", &err);
  /* Each message of a stream costs one unit per event (opening the stream
   * cost the method's base). */
  if (rc == 0 && ana_call_rate_charge(call, (int64_t)req->n_events, &err) < 0) {
    field = ANA_RATE_LIMIT_FIELD;
    reason = ana_arena_strdup(arena, err.message);
    err.code = ANA_STATUS_INVALID_ARGUMENT; /* rejected per event, below */
    rc = ANA_ERR_FULL;
  }
  if (rc == 0)
    rc = batch_start(b, req->events, sizes, req->n_events, "events", &err);
  if (rc == 0) {
    stream_batch_done(b, 0, NULL);
  } else if (rc < 0) {
    if (err.code == ANA_STATUS_INVALID_ARGUMENT) {
      /* A batch over the limits (or over the rate limit): every event of it
       * is rejected, the stream goes on. */
      if (!reason)
        reason = ana_arena_strdup(arena, strchr(err.message, ':') + 2);
      b->n = req->n_events;
      b->items = ana_arena_calloc(arena, b->n ? b->n : 1, sizeof *b->items);
      for (size_t i = 0; b->items && i < b->n; i++) {
        b->items[i].status = ST_REJECTED;
        b->items[i].event_id = req->events[i]->event_id ? req->events[i]->event_id : "";
        b->items[i].n_violations = 1;
        b->items[i].violations[0].field = field;
        b->items[i].violations[0].description = reason ? reason : "rejected";
      }
      stream_batch_done(b, 0, NULL);
    } else {
      stream_batch_done(b, rc, &err);
    }
  }
}

static void stream_half_close(struct ana_call *call) {
  struct stream *s = ana_call_user(call);
  if (!s)
    return;
  struct stream_end e;
  pthread_mutex_lock(&s->mu);
  s->half_closed = true;
  stream_decide_end_locked(s, &e);
  pthread_mutex_unlock(&s->mu);
  stream_end(&e);
}

static void stream_cancel(struct ana_call *call) {
  struct stream *s = ana_call_user(call);
  if (!s)
    return;
  struct stream_end e;
  pthread_mutex_lock(&s->mu);
  struct ana_error cancelled = {ANA_STATUS_CANCELLED, "cancelled"};
  stream_fail_locked(s, &cancelled);
  stream_decide_end_locked(s, &e);
  pthread_mutex_unlock(&s->mu);
  stream_end(&e);
}

/* ------------------------------------------------------------------ */
/* SearchEvents */

struct search {
  struct ana_call *call;
  struct ana_event_query q;
  const char *const *keys;
  Analytics__V1__Event **events;
  size_t n_events;
  int page_size;
  bool more;
  int64_t last_ts;
  const char *last_id;
  int failed;                  /* 1: an event does not unpack; 2: reveal_err */
  bool pii;                    /* the caller has pii:read */
  struct ana_error reveal_err; /* an encrypted field that does not open */
};

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *encode_cursor(struct ana_arena *a, int64_t ts, const char *id) {
  char raw[200];
  int n = snprintf(raw, sizeof raw, "v1:%lld:%s", (long long)ts, id);
  if (n < 0 || (size_t)n >= sizeof raw)
    return NULL;
  char *out = ana_arena_alloc(a, (size_t)n * 4 / 3 + 4);
  if (!out)
    return NULL;
  size_t o = 0;
  for (int i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)(unsigned char)raw[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)(unsigned char)raw[i + 1] << 8;
    if (i + 2 < n)
      v |= (unsigned char)raw[i + 2];
    out[o++] = b64url[(v >> 18) & 63];
    out[o++] = b64url[(v >> 12) & 63];
    if (i + 1 < n)
      out[o++] = b64url[(v >> 6) & 63];
    if (i + 2 < n)
      out[o++] = b64url[v & 63];
  }
  out[o] = '\0';
  return out;
}

static int decode_cursor(struct ana_arena *a, const char *token, int64_t *ts, const char **id) {
  size_t n = strlen(token);
  if (n == 0 || n > 300)
    return -1;
  char raw[256];
  size_t r = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    const char *p = strchr(b64url, token[i]);
    if (!p || !token[i])
      return -1;
    acc = acc << 6 | (uint32_t)(p - b64url);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (r + 1 >= sizeof raw)
        return -1;
      raw[r++] = (char)((acc >> bits) & 0xff);
    }
  }
  raw[r] = '\0';
  char *end;
  if (strncmp(raw, "v1:", 3) != 0)
    return -1;
  long long v = strtoll(raw + 3, &end, 10);
  if (end == raw + 3 || *end != ':' || !end[1])
    return -1;
  *ts = v;
  *id = ana_arena_strdup(a, end + 1);
  return *id ? 0 : -1;
}

static int on_hit(void *ctx, const uint8_t *payload, size_t len, int64_t ts, const char *event_id,
                  uint64_t seq) {
  (void)seq;
  struct search *s = ctx;
  if ((int)s->n_events == s->page_size) {
    s->more = true; /* the extra row only tells that another page exists */
    return 1;
  }
  struct ana_arena *a = ana_call_arena(s->call);
  Analytics__V1__Event *ev = (void *)ana_proto_unpack(
      &analytics__v1__event__descriptor, &a->pb, payload, len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (!ev) {
    s->failed = 1;
    return 1;
  }
  /* Encrypted fields: in clear for pii:read, masked for the others. */
  if (opts.encrypted && ana_crypto_event_reveal(opts.crypto, opts.encrypted, s->q.account_id, ev,
                                                s->pii, a, &s->reveal_err) < 0) {
    s->failed = 2;
    return 1;
  }
  s->events[s->n_events++] = ev;
  s->last_ts = ts;
  s->last_id = ana_arena_strdup(a, event_id);
  return 0;
}

static void search_job(void *arg) {
  struct search *s = arg;
  struct ana_error err;
  int rc = ana_store_search(opts.roles, &s->q, on_hit, s, &err);
  if (rc < 0) {
    ana_call_finish(s->call, NULL, &err);
    return;
  }
  if (s->failed == 2) {
    ana_call_finish(s->call, NULL, &s->reveal_err);
    return;
  }
  if (s->failed) {
    ana_call_fail(s->call, ANA_STATUS_DATA_LOSS, "a stored event cannot be read");
    return;
  }
  Analytics__V1__SearchEventsResponse resp = ANALYTICS__V1__SEARCH_EVENTS_RESPONSE__INIT;
  resp.events = s->events;
  resp.n_events = s->n_events;
  if (s->more)
    resp.next_page_token = encode_cursor(ana_call_arena(s->call), s->last_ts, s->last_id);
  ana_call_reply(s->call, &resp.base);
}

static void search_events(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__SearchEventsRequest *req = (const void *)request;
  struct ana_arena *a = ana_call_arena(call);
  if (req->page_size < 0 || req->page_size > opts.search_max_page_size) {
    ana_call_add_violation(call, "pageSize", "must be between 0 and the maximum page size");
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "pageSize: must be between 1 and %d",
                  opts.search_max_page_size);
    return;
  }
  struct search *s = ana_arena_calloc(a, 1, sizeof *s);
  if (!s)
    goto nomem;
  s->call = call;
  s->pii = ana_auth_permits(ana_call_principal(call), "pii:read");
  s->page_size = req->page_size ? req->page_size : DEFAULT_PAGE_SIZE;
  s->events = ana_arena_calloc(a, (size_t)s->page_size, sizeof *s->events);
  if (!s->events)
    goto nomem;
  struct ana_event_query *q = &s->q;
  q->account_id = ana_call_principal(call)->account_id;
  q->from_ms = req->from ? ana_timestamp_ms(req->from) : INT64_MIN;
  q->to_ms = req->to ? ana_timestamp_ms(req->to) : INT64_MAX;
  if (req->from && req->to && q->from_ms >= q->to_ms) {
    ana_call_add_violation(call, "to", "must be after from");
    ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT, "to: must be after from");
    return;
  }
  q->event_type = req->event_type;
  q->event_name = req->event_name;
  q->session_id = req->session_id;
  q->text = req->query;
  q->limit = s->page_size + 1;
  if (req->n_properties) {
    const char **keys = ana_arena_calloc(a, req->n_properties, sizeof *keys);
    const char **values = ana_arena_calloc(a, req->n_properties, sizeof *values);
    if (!keys || !values)
      goto nomem;
    for (size_t i = 0; i < req->n_properties; i++) {
      keys[i] = req->properties[i]->key;
      values[i] = req->properties[i]->value;
      /* An encrypted property is stored as its blind index. */
      const char *name = ana_crypto_fields_property(opts.encrypted, keys[i]);
      if (name && !(values[i] = ana_crypto_blind_text(opts.crypto, q->account_id, name,
                                                      values[i] ? values[i] : "", a)))
        goto nomem;
    }
    q->property_keys = keys;
    q->property_values = values;
    q->n_properties = req->n_properties;
  }
  if (req->page_token && req->page_token[0]) {
    if (decode_cursor(a, req->page_token, &q->cursor_ts, &q->cursor_event_id) < 0) {
      ana_call_add_violation(call, "pageToken", "is not a token from a previous page");
      ana_call_fail(call, ANA_STATUS_INVALID_ARGUMENT,
                    "pageToken: is not a token from a previous page");
      return;
    }
    q->after_cursor = true;
  }
  int rc = ana_workers_submit(opts.workers, search_job, s);
  if (rc < 0)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "too many searches at once; retry later");
  return;
nomem:
  ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

/* ------------------------------------------------------------------ */
/* ListEventNames: the account's catalog of event names, by name; the page
 * token is the last name of the page. */

#define NAMES_DEFAULT_PAGE 100
#define NAMES_MAX_PAGE 1000

struct names_page {
  struct ana_call *call;
  const Analytics__V1__ListEventNamesRequest *req;
  Analytics__V1__EventName **items;
  size_t n, size;
  bool more, failed;
};

static int on_name(void *ctx, const struct ana_event_name_info *info) {
  struct names_page *p = ctx;
  if (p->n == p->size) {
    p->more = true;
    return 1;
  }
  struct ana_arena *a = ana_call_arena(p->call);
  Analytics__V1__EventName *e = ana_arena_alloc(a, sizeof *e);
  if (!e) {
    p->failed = true;
    return 1;
  }
  analytics__v1__event_name__init(e);
  e->name = ana_arena_strdup(a, info->name);
  e->first_seen = ana_timestamp_new(a, info->first_seen_ms);
  e->last_seen = ana_timestamp_new(a, info->last_seen_ms);
  e->count = info->count;
  if (!e->name || !e->first_seen || !e->last_seen) {
    p->failed = true;
    return 1;
  }
  p->items[p->n++] = e;
  return 0;
}

static void names_job(void *arg) {
  struct names_page *p = arg;
  struct ana_error err;
  const Analytics__V1__ListEventNamesRequest *req = p->req;
  if (ana_event_names_list(opts.event_names, ana_call_principal(p->call)->account_id, req->prefix,
                           req->page_token, (int)p->size + 1, on_name, p, &err) < 0) {
    ana_call_finish(p->call, NULL, &err);
    return;
  }
  if (p->failed) {
    ana_call_fail(p->call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  Analytics__V1__ListEventNamesResponse resp = ANALYTICS__V1__LIST_EVENT_NAMES_RESPONSE__INIT;
  resp.names = p->items;
  resp.n_names = p->n;
  if (p->more && p->n)
    resp.next_page_token = p->items[p->n - 1]->name;
  ana_call_reply(p->call, &resp.base);
}

static void list_event_names(struct ana_call *call, const ProtobufCMessage *request) {
  const Analytics__V1__ListEventNamesRequest *req = (const void *)request;
  struct ana_arena *a = ana_call_arena(call);
  if (!opts.event_names) {
    ana_call_fail(call, ANA_STATUS_UNIMPLEMENTED, "the event names catalog is not enabled");
    return;
  }
  size_t size = ana_service_page_size(call, req->page_size, NAMES_DEFAULT_PAGE, NAMES_MAX_PAGE);
  if (!size)
    return;
  struct names_page *p = ana_arena_calloc(a, 1, sizeof *p);
  if (!p)
    goto nomem;
  p->call = call;
  p->req = req;
  p->size = size;
  p->items = ana_arena_calloc(a, p->size, sizeof *p->items);
  if (!p->items)
    goto nomem;
  if (ana_workers_submit(opts.workers, names_job, p) < 0)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "the server is busy; retry later");
  return;
nomem:
  ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

/* ------------------------------------------------------------------ */

static const struct ana_handler track_event_handler = {.on_request = track_event};
static const struct ana_handler track_events_handler = {.on_request = track_events};
static const struct ana_handler ingest_handler = {.on_open = ingest_open,
                                                  .on_message = stream_message,
                                                  .on_half_close = stream_half_close,
                                                  .on_cancel = stream_cancel};
static const struct ana_handler import_handler = {.on_open = import_open,
                                                  .on_message = stream_message,
                                                  .on_half_close = stream_half_close,
                                                  .on_cancel = stream_cancel};
static const struct ana_handler search_handler = {.on_request = search_events};
static const struct ana_handler names_handler = {.on_request = list_event_names};

int ana_event_service_bind(const struct ana_event_service_options *o) {
  opts = *o;
  if (opts.stream_max_in_flight < 1)
    opts.stream_max_in_flight = 1;
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENT, &track_event_handler);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENTS, &track_events_handler);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_INGEST_EVENTS, &ingest_handler);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_IMPORT_EVENTS, &import_handler);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_SEARCH_EVENTS, &search_handler);
  ana_rpc_bind(ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_LIST_EVENT_NAMES, &names_handler);
  return 0;
}
