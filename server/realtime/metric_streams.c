/* Live metric streams: open-bucket accumulators fed by the commit hook,
 * coalesced updates through the hub, history of closed buckets and resume
 * (see ana_metric_streams.h for the sequence numbers). */
#include "ana_metric_streams.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_arena.h"
#include "ana_log.h"
#include "ana_metric_acc.h"
#include "ana_metric_query.h"
#include "ana_timestamp.h"
#include "analytics/v1/realtime.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMPONENT "metric-stream"
#define SEQ_BITS ANA_METRIC_STREAM_SEQ_BITS
#define OFFSET_SPAN (1ULL << SEQ_BITS)
/* Live offsets stay below the finals' (2^27 - groups .. 2^27 - 1). */
#define LIVE_MAX (OFFSET_SPAN - 2 - (ANA_METRIC_STREAM_MAX_GROUPS + 1))
#define DEFAULT_STREAMS_PER_PEER 32
#define DEFAULT_HISTORY 60
#define MAX_PENDING 100000 /* events held while a new stream loads */
#define MAX_WAIT_MS 1000   /* the ticker looks at least this often */
#define MINUTE_MS 60000

/* ------------------------------------------------------------------ */
/* structures */

struct mstream;

/* One subscriber of a stream; the ctx of its hub subscription. */
/* Room for "principal " + account id + "/" + subject, cut beyond. */
#define PEER_KEY_MAX 320

struct msub {
  struct msub *next;
  struct ana_metric_streams *ms;
  struct mstream *st;
  struct ana_realtime_sub *sub;
  struct ana_call *call;
  char peer[PEER_KEY_MAX]; /* whom METRIC_STREAMS_PER_PEER counts it for (peer_key) */
};

/* An open bucket: accumulators and, per group, the latest update built. */
struct bucket {
  int64_t start, end;
  struct ana_metric_acc *acc;
  struct ana_realtime_msg **last;
  bool *dirty;
  size_t cap;
  bool any_dirty;
  uint64_t offset; /* the last offset given in this bucket */
};

/* A closed bucket of the history: its final updates, ascending sequence. */
struct closed {
  int64_t start;
  struct ana_realtime_msg **finals;
  size_t n;
};

/* A committed event kept while a new stream loads. */
struct pending {
  struct ana_scanned_event ev;
  char *strings;
};

struct mstream {
  struct mstream *next;
  char *account_id, *metric_id, *tz;
  int64_t version; /* the definition's updated_at (ms): a new definition is a new stream */
  enum ana_interval iv;
  struct ana_arena arena; /* the definition */
  Analytics__V1__Metric *metric;
  struct ana_formula *formula;
  struct bucket open[2]; /* open[1] exists while open[0] waits for its close grace */
  size_t n_open;
  struct closed *hist; /* ring, oldest at hist_head */
  size_t hist_cap, hist_len, hist_head;
  struct msub *subs;
  size_t n_subs;
  int waiting; /* subscribes in progress */
  bool loading, failed;
  struct pending *pending;
  size_t n_pending, cap_pending;
  int64_t last_emit;  /* monotonic ms */
  int64_t idle_since; /* monotonic ms; 0 while it has subscribers */
};

struct ana_metric_streams {
  struct ana_metric_streams_options o;
  pthread_mutex_t mu;
  pthread_cond_t tick;   /* wakes the ticker */
  pthread_cond_t loaded; /* a stream finished loading, or a subscriber ended */
  struct mstream *streams;
  size_t n_streams;
  bool stop;
  bool pushed; /* something was pushed since the hub was last kicked */
  pthread_t ticker;
  bool ticker_started;
  struct ana_metric_streams_stats stats;
};

static int64_t floor_div(int64_t a, int64_t b) {
  return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static uint64_t seq_base(int64_t start_ms) {
  return (uint64_t)floor_div(start_ms, MINUTE_MS) << SEQ_BITS;
}

int64_t ana_metric_stream_seq_minute_ms(uint64_t seq) {
  return (int64_t)(seq >> SEQ_BITS) * MINUTE_MS;
}

uint64_t ana_metric_stream_seq_offset(uint64_t seq) {
  return seq & (OFFSET_SPAN - 1);
}

/* The coalescing key of a (bucket, group): unique within a stream. */
static uint64_t msg_key(int64_t start, size_t group) {
  return ((uint64_t)floor_div(start, MINUTE_MS) << 20) + group + 1;
}

/* The bucket holding ts: [*start, *end). */
static int bucket_bounds(enum ana_interval iv, const char *tz, int64_t ts, int64_t *start,
                         int64_t *end, struct ana_error *err) {
  int64_t *starts = NULL;
  size_t n = 0;
  int rc = ana_buckets_make(ts, ts + 1, iv, tz, 4, &starts, &n, err);
  if (rc < 0)
    return rc;
  int64_t s0 = starts[0];
  free(starts);
  starts = NULL;
  int64_t len = ana_interval_ms(iv);
  rc = ana_buckets_make(s0, s0 + 2 * len, iv, tz, 4, &starts, &n, err);
  if (rc < 0)
    return rc;
  *start = s0;
  *end = n >= 2 ? starts[1] : s0 + len;
  free(starts);
  return 0;
}

/* ------------------------------------------------------------------ */
/* updates */

/* A MetricUpdate message ready to push; NULL when out of memory. */
static struct ana_realtime_msg *make_update(const char *metric_id, int64_t start, int64_t end,
                                            uint64_t seq, bool final, bool has_value, double value,
                                            const char *const *keys, const char *const *values,
                                            size_t n_dims, uint64_t key) {
  struct ana_realtime_msg *m = ana_realtime_msg_create(512 + n_dims * 96);
  if (!m)
    return NULL;
  struct ana_arena *a = ana_realtime_msg_arena(m);
  Analytics__V1__MetricUpdate *u = ana_arena_alloc(a, sizeof *u);
  if (!u)
    goto fail;
  analytics__v1__metric_update__init(u);
  u->sequence = seq;
  u->metric_id = ana_arena_strdup(a, metric_id);
  u->bucket_start = ana_timestamp_new(a, start);
  u->bucket_end = ana_timestamp_new(a, end);
  u->final = final;
  if (!u->metric_id || !u->bucket_start || !u->bucket_end)
    goto fail;
  if (has_value) {
    u->value = ana_arena_alloc(a, sizeof *u->value);
    if (!u->value)
      goto fail;
    google__protobuf__double_value__init(u->value);
    u->value->value = value;
  }
  if (n_dims) {
    u->dimensions = ana_arena_calloc(a, n_dims, sizeof *u->dimensions);
    Analytics__V1__MetricUpdate__DimensionsEntry *es = ana_arena_calloc(a, n_dims, sizeof *es);
    if (!u->dimensions || !es)
      goto fail;
    for (size_t d = 0; d < n_dims; d++) {
      analytics__v1__metric_update__dimensions_entry__init(&es[d]);
      es[d].key = ana_arena_strdup(a, keys[d]);
      es[d].value = ana_arena_strdup(a, values[d] ? values[d] : "");
      if (!es[d].key || !es[d].value)
        goto fail;
      u->dimensions[d] = &es[d];
    }
    u->n_dimensions = n_dims;
  }
  ana_realtime_msg_set(m, &u->base, key, seq);
  return m;
fail:
  ana_realtime_msg_unref(m);
  return NULL;
}

static void push_all(struct ana_metric_streams *ms, struct mstream *st,
                     struct ana_realtime_msg *m) {
  for (struct msub *s = st->subs; s; s = s->next)
    ana_realtime_push(ms->o.hub, s->sub, m);
  if (st->subs)
    ms->pushed = true;
}

/* ------------------------------------------------------------------ */
/* buckets */

static int bucket_grow(struct bucket *b, size_t n) {
  if (n <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap * 2 : 8;
  while (cap < n)
    cap *= 2;
  struct ana_realtime_msg **last = ana_realloc(b->last, cap * sizeof *last);
  if (!last)
    return ANA_ERR_NOMEM;
  b->last = last;
  bool *dirty = ana_realloc(b->dirty, cap * sizeof *dirty);
  if (!dirty)
    return ANA_ERR_NOMEM;
  b->dirty = dirty;
  for (size_t i = b->cap; i < cap; i++) {
    b->last[i] = NULL;
    b->dirty[i] = false;
  }
  b->cap = cap;
  return 0;
}

static void bucket_mark(struct bucket *b, size_t g) {
  if (bucket_grow(b, g + 1) < 0)
    return;
  b->dirty[g] = true;
  b->any_dirty = true;
}

static void bucket_fini(struct bucket *b) {
  for (size_t i = 0; i < b->cap; i++)
    ana_realtime_msg_unref(b->last[i]);
  ana_free(b->last);
  ana_free(b->dirty);
  ana_metric_acc_destroy(b->acc);
  memset(b, 0, sizeof *b);
}

static int bucket_init(struct mstream *st, struct bucket *b, int64_t start, int64_t end) {
  struct ana_error err;
  memset(b, 0, sizeof *b);
  b->start = start;
  b->end = end;
  b->acc = ana_metric_acc_create(st->metric, st->formula, ANA_METRIC_STREAM_MAX_GROUPS, &err);
  if (!b->acc)
    return ANA_ERR_NOMEM;
  for (size_t g = 0; g < ana_metric_acc_group_count(b->acc); g++)
    bucket_mark(b, g); /* no dimensions: the one group's value from the start */
  return 0;
}

/* Counts ev in the open bucket holding it, if any. */
static void route(struct mstream *st, const struct ana_scanned_event *ev) {
  for (size_t i = 0; i < st->n_open; i++) {
    struct bucket *b = &st->open[i];
    if (ev->timestamp_ms < b->start || ev->timestamp_ms >= b->end)
      continue;
    int g = ana_metric_acc_add(b->acc, ev);
    if (g >= 0)
      bucket_mark(b, (size_t)g);
    return;
  }
}

/* Builds and pushes the updates of b's changed groups. */
static void emit_bucket(struct ana_metric_streams *ms, struct mstream *st, struct bucket *b,
                        int64_t now) {
  if (!b->any_dirty)
    return;
  size_t n_dims = ana_metric_acc_dimension_count(b->acc);
  bool left = false;
  for (size_t g = 0; g < ana_metric_acc_group_count(b->acc) && g < b->cap; g++) {
    if (!b->dirty[g])
      continue;
    uint64_t off = b->offset + 1;
    if (now - b->start + 1 > (int64_t)off)
      off = (uint64_t)(now - b->start + 1);
    if (off > LIVE_MAX) {
      left = true; /* saturated: the final value will say it */
      break;
    }
    double v = 0;
    bool has = ana_metric_acc_value(b->acc, g, &v);
    uint64_t seq = seq_base(b->start) + off;
    struct ana_realtime_msg *m =
        make_update(st->metric_id, b->start, b->end, seq, false, has, v,
                    (const char *const *)st->metric->dimensions,
                    ana_metric_acc_group_values(b->acc, g), n_dims, msg_key(b->start, g));
    if (!m) {
      left = true;
      break;
    }
    b->offset = off;
    ana_realtime_msg_unref(b->last[g]);
    b->last[g] = m;
    b->dirty[g] = false;
    ms->stats.updates++;
    push_all(ms, st, m);
  }
  b->any_dirty = left;
}

static bool stream_dirty(const struct mstream *st) {
  return st->n_open && st->open[0].any_dirty;
}

/* Sends what changed. While a bucket waits for its close grace, the next
 * one's updates wait too, so that updates leave in sequence order. */
static void emit(struct ana_metric_streams *ms, struct mstream *st) {
  if (!st->n_open)
    return;
  emit_bucket(ms, st, &st->open[0], ana_clock_wall_ms());
  st->last_emit = ana_clock_mono_ms();
}

static int cmp_values(const char *const *a, const char *const *b, size_t n) {
  for (size_t d = 0; d < n; d++) {
    int c = strcmp(a[d] ? a[d] : "", b[d] ? b[d] : "");
    if (c)
      return c;
  }
  return 0;
}

static const struct ana_metric_acc *sort_acc; /* qsort has no context (under ms->mu) */
static size_t sort_dims;

static int cmp_groups(const void *pa, const void *pb) {
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  return cmp_values(ana_metric_acc_group_values(sort_acc, a),
                    ana_metric_acc_group_values(sort_acc, b), sort_dims);
}

static void closed_fini(struct closed *c) {
  for (size_t i = 0; i < c->n; i++)
    ana_realtime_msg_unref(c->finals[i]);
  ana_free(c->finals);
  memset(c, 0, sizeof *c);
}

/* Closes open[0]: pushes every group's final value, keeps them in the
 * history, and makes open[1] (if any) the open bucket. */
static void finalize(struct ana_metric_streams *ms, struct mstream *st) {
  struct bucket *b = &st->open[0];
  size_t n = ana_metric_acc_group_count(b->acc);
  size_t n_dims = ana_metric_acc_dimension_count(b->acc);
  size_t *order = ana_calloc(n ? n : 1, sizeof *order);
  struct closed c = {b->start, ana_calloc(n ? n : 1, sizeof *c.finals), 0};
  if (order && c.finals) {
    for (size_t i = 0; i < n; i++)
      order[i] = i;
    sort_acc = b->acc;
    sort_dims = n_dims;
    qsort(order, n, sizeof *order, cmp_groups);
    for (size_t i = 0; i < n; i++) {
      size_t g = order[i];
      double v = 0;
      bool has = ana_metric_acc_value(b->acc, g, &v);
      uint64_t seq = seq_base(b->start) + OFFSET_SPAN - n + i;
      struct ana_realtime_msg *m =
          make_update(st->metric_id, b->start, b->end, seq, true, has, v,
                      (const char *const *)st->metric->dimensions,
                      ana_metric_acc_group_values(b->acc, g), n_dims, msg_key(b->start, g));
      if (!m)
        continue;
      ms->stats.updates++;
      push_all(ms, st, m);
      c.finals[c.n++] = m;
    }
  } else {
    ANA_WARN(COMPONENT, "out of memory closing a bucket of metric %s", st->metric_id);
  }
  ana_free(order);
  /* Into the history ring, the oldest out when full. */
  if (st->hist_len == st->hist_cap) {
    closed_fini(&st->hist[st->hist_head]);
    st->hist_head = (st->hist_head + 1) % st->hist_cap;
    st->hist_len--;
  }
  st->hist[(st->hist_head + st->hist_len) % st->hist_cap] = c;
  st->hist_len++;
  bucket_fini(b);
  if (st->n_open == 2)
    st->open[0] = st->open[1];
  memset(&st->open[1], 0, sizeof st->open[1]);
  st->n_open--;
}

/* Opens the bucket starting at start. */
static int open_next(struct mstream *st, int64_t start) {
  struct ana_error err;
  int64_t s, e;
  if (bucket_bounds(st->iv, st->tz, start, &s, &e, &err) < 0)
    return ANA_ERR_INVALID;
  struct bucket *b = &st->open[st->n_open];
  if (bucket_init(st, b, start, e) < 0)
    return ANA_ERR_NOMEM;
  st->n_open++;
  return 0;
}

/* Rolls st's buckets forward to now (wall clock). */
static void advance(struct ana_metric_streams *ms, struct mstream *st, int64_t now) {
  for (int guard = 0; guard < 100000 && st->n_open; guard++) {
    struct bucket *newest = &st->open[st->n_open - 1];
    if (st->n_open == 2 &&
        (now >= st->open[0].end + ANA_METRIC_STREAM_CLOSE_GRACE_MS || now >= newest->end)) {
      emit_bucket(ms, st, &st->open[0], now); /* its last live values, then the finals */
      finalize(ms, st);
      continue;
    }
    if (now >= newest->end) {
      if (open_next(st, newest->end) < 0) {
        ANA_WARN(COMPONENT, "cannot open the next bucket of metric %s", st->metric_id);
        return;
      }
      continue;
    }
    return;
  }
}

/* ------------------------------------------------------------------ */
/* streams */

static void stream_free(struct mstream *st) {
  if (!st)
    return;
  for (size_t i = 0; i < st->n_open; i++)
    bucket_fini(&st->open[i]);
  for (size_t i = 0; i < st->hist_len; i++)
    closed_fini(&st->hist[(st->hist_head + i) % st->hist_cap]);
  ana_free(st->hist);
  for (size_t i = 0; i < st->n_pending; i++)
    ana_free(st->pending[i].strings);
  ana_free(st->pending);
  ana_formula_free(st->formula);
  ana_arena_fini(&st->arena);
  ana_free(st->account_id);
  ana_free(st->metric_id);
  ana_free(st->tz);
  ana_free(st);
}

static struct mstream *stream_new(struct ana_metric_streams *ms,
                                  struct ana_metric_stream_request *req, struct ana_error *err) {
  struct mstream *st = ana_calloc(1, sizeof *st);
  uint8_t *buf = NULL;
  if (!st)
    goto nomem;
  ana_arena_init(&st->arena, 4096, 0);
  st->account_id = ana_strdup(req->account_id);
  st->metric_id = ana_strdup(req->metric->metric_id);
  st->tz = ana_strdup(req->time_zone ? req->time_zone : "");
  st->version = ana_timestamp_ms(req->metric->updated_at);
  st->iv = req->interval;
  size_t len = protobuf_c_message_get_packed_size(&req->metric->base);
  buf = ana_malloc(len ? len : 1);
  st->hist_cap = (size_t)(ms->o.history_buckets > 0 ? ms->o.history_buckets : DEFAULT_HISTORY);
  st->hist = ana_calloc(st->hist_cap, sizeof *st->hist);
  if (!st->account_id || !st->metric_id || !st->tz || !buf || !st->hist)
    goto nomem;
  protobuf_c_message_pack(&req->metric->base, buf);
  st->metric = (void *)ana_proto_unpack(&analytics__v1__metric__descriptor, &st->arena.pb, buf, len,
                                        ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  ana_free(buf);
  buf = NULL;
  if (!st->metric)
    goto nomem;
  st->formula = req->formula;
  req->formula = NULL;
  int64_t start, end;
  if (bucket_bounds(st->iv, st->tz, ana_clock_wall_ms(), &start, &end, err) < 0) {
    stream_free(st);
    return NULL;
  }
  if (bucket_init(st, &st->open[0], start, end) < 0)
    goto nomem;
  st->n_open = 1;
  return st;
nomem:
  ana_free(buf);
  stream_free(st);
  ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

static void stream_unlink(struct ana_metric_streams *ms, struct mstream *st) {
  for (struct mstream **p = &ms->streams; *p; p = &(*p)->next)
    if (*p == st) {
      *p = st->next;
      ms->n_streams--;
      ms->stats.streams = ms->n_streams;
      return;
    }
}

static bool stream_unused(const struct mstream *st) {
  return !st->n_subs && !st->waiting && !st->loading;
}

static void pending_add(struct mstream *st, const struct ana_scanned_event *ev) {
  if (st->n_pending == MAX_PENDING)
    return; /* counted by the scan or lost to the live values only */
  if (st->n_pending == st->cap_pending) {
    size_t cap = st->cap_pending ? st->cap_pending * 2 : 64;
    struct pending *p = ana_realloc(st->pending, cap * sizeof *p);
    if (!p)
      return;
    st->pending = p;
    st->cap_pending = cap;
  }
  const char *src[5] = {ev->event_id, ev->event_type, ev->event_name, ev->session_id,
                        ev->properties_json};
  size_t lens[5], total = 0;
  for (int i = 0; i < 5; i++)
    total += (lens[i] = strlen(src[i] ? src[i] : "")) + 1;
  char *s = ana_malloc(total);
  if (!s)
    return;
  struct pending *p = &st->pending[st->n_pending++];
  p->strings = s;
  p->ev = *ev;
  const char **dst[5] = {&p->ev.event_id, &p->ev.event_type, &p->ev.event_name, &p->ev.session_id,
                         &p->ev.properties_json};
  for (int i = 0; i < 5; i++) {
    memcpy(s, src[i] ? src[i] : "", lens[i] + 1);
    *dst[i] = s;
    s += lens[i] + 1;
  }
}

/* ------------------------------------------------------------------ */
/* the commit hook and the ticker */

void ana_metric_streams_on_commit(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_metric_streams *ms = ctx;
  bool wake_ticker = false, kick = false;
  pthread_mutex_lock(&ms->mu);
  if (!ms->streams) {
    pthread_mutex_unlock(&ms->mu);
    return;
  }
  int64_t now = ana_clock_wall_ms(), mono = ana_clock_mono_ms();
  for (struct mstream *st = ms->streams; st; st = st->next) {
    if (st->failed)
      continue;
    bool advanced = false, was_dirty = stream_dirty(st);
    for (size_t i = 0; i < n; i++) {
      const struct ana_event_record *r = &records[i];
      if (r->duplicate || strcmp(r->account_id, st->account_id) != 0 ||
          !ana_metric_acc_wants(st->open[0].acc, r->event_name))
        continue;
      struct ana_scanned_event ev = {
          .timestamp_ms = r->timestamp_ms,
          .event_id = r->event_id,
          .event_type = r->event_type,
          .event_name = r->event_name,
          .session_id = r->session_id,
          .properties_json = r->properties_json,
          .seq = r->seq,
      };
      if (st->loading) {
        if (ev.timestamp_ms >= st->open[0].start)
          pending_add(st, &ev);
        continue;
      }
      if (!advanced) {
        advance(ms, st, now);
        advanced = true;
      }
      route(st, &ev);
    }
    if (st->loading || !stream_dirty(st))
      continue;
    if (ms->o.interval_ms == 0 || mono - st->last_emit >= ms->o.interval_ms)
      emit(ms, st);
    else if (!was_dirty)
      wake_ticker = true; /* it sleeps until the next thing it knows of */
  }
  kick = ms->pushed;
  ms->pushed = false;
  if (wake_ticker)
    pthread_cond_signal(&ms->tick);
  pthread_mutex_unlock(&ms->mu);
  if (kick)
    ana_realtime_kick(ms->o.hub);
}

static void *ticker_main(void *arg) {
  pthread_setname_np(pthread_self(), "ana-metricticks"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_metric_streams *ms = arg;
  pthread_mutex_lock(&ms->mu);
  while (!ms->stop) {
    int64_t now = ana_clock_wall_ms(), mono = ana_clock_mono_ms();
    int64_t wake = mono + MAX_WAIT_MS;
    for (struct mstream *st = ms->streams, *next; st; st = next) {
      next = st->next;
      if (stream_unused(st)) {
        if (!st->idle_since)
          st->idle_since = mono;
        if (st->failed || mono - st->idle_since >= ANA_METRIC_STREAM_IDLE_MS) {
          stream_unlink(ms, st);
          stream_free(st);
          continue;
        }
      }
      if (st->loading || st->failed)
        continue;
      advance(ms, st, now);
      if (stream_dirty(st)) {
        int64_t due = st->last_emit + ms->o.interval_ms;
        if (mono >= due)
          emit(ms, st);
        else if (due < wake)
          wake = due;
      }
      int64_t edge =
          st->n_open == 2 ? st->open[0].end + ANA_METRIC_STREAM_CLOSE_GRACE_MS : st->open[0].end;
      if (mono + (edge - now) < wake)
        wake = mono + (edge - now);
    }
    bool kick = ms->pushed;
    ms->pushed = false;
    if (kick) {
      pthread_mutex_unlock(&ms->mu);
      ana_realtime_kick(ms->o.hub);
      pthread_mutex_lock(&ms->mu);
      continue;
    }
    int64_t wait = wake - ana_clock_mono_ms();
    if (wait <= 0)
      continue;
    struct timespec ts = ana_deadline_in_ms(wait);
    pthread_cond_timedwait(&ms->tick, &ms->mu, &ts);
  }
  pthread_mutex_unlock(&ms->mu);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* loading and resuming (blocking, on a worker) */

struct scan_ctx {
  struct ana_metric_acc *acc;
  uint64_t max_seq;
  int rc;
};

static int on_scanned(void *ctx, const struct ana_scanned_event *ev) {
  struct scan_ctx *c = ctx;
  if (ev->seq > c->max_seq)
    c->max_seq = ev->seq;
  int rc = ana_metric_acc_add(c->acc, ev);
  if (rc == ANA_ERR_NOMEM) {
    c->rc = rc;
    return 1;
  }
  return 0;
}

/* The event names the formula reads; *any when a term reads every event. */
static size_t term_names(const struct ana_formula *f, const char **names, bool *any) {
  size_t n = 0;
  *any = false;
  for (size_t t = 0; t < ana_formula_term_count(f) && t < 64; t++) {
    const struct ana_agg_term *term = ana_formula_term(f, t);
    if (!term->event_name) {
      *any = true;
      continue;
    }
    bool seen = false;
    for (size_t i = 0; i < n && !seen; i++)
      seen = strcmp(names[i], term->event_name) == 0;
    if (!seen)
      names[n++] = term->event_name;
  }
  return n;
}

/* Fills open[0] of a loading stream from the store; *max_seq gets the
 * newest commit the scan saw. The hook does not touch a loading stream's
 * buckets, so no lock is needed. */
static int load(struct ana_metric_streams *ms, struct mstream *st, uint64_t *max_seq,
                struct ana_error *err) {
  const char *names[64];
  bool any;
  size_t n_names = term_names(st->formula, names, &any);
  struct bucket *b = &st->open[0];
  struct scan_ctx c = {b->acc, 0, 0};
  int rc = ms->o.store_ops->scan(ms->o.store, st->account_id, b->start, b->end, any ? NULL : names,
                                 any ? 0 : n_names, on_scanned, &c, err);
  if (rc == 0 && c.rc < 0)
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t g = 0; g < ana_metric_acc_group_count(b->acc); g++)
    bucket_mark(b, g);
  *max_seq = c.max_seq;
  return rc;
}

struct series_ref {
  const Analytics__V1__MetricSeries *s;
  const char *values[16];
  size_t n;
};

static int cmp_series(const void *pa, const void *pb) {
  const struct series_ref *a = pa, *b = pb;
  return cmp_values(a->values, b->values, a->n);
}

/* The final values of the closed buckets in [from, to) recomputed from the
 * raw events (the query code), those with a sequence above after, oldest
 * first: *out (caller unrefs each and frees the array). Blocks. */
static int recompute(struct ana_metric_streams *ms, struct mstream *st, int64_t from, int64_t to,
                     uint64_t after, struct ana_realtime_msg ***out, size_t *n_out,
                     struct ana_error *err) {
  struct ana_arena arena;
  ana_arena_init(&arena, 65536, 0);
  struct series_ref *refs = NULL;
  struct ana_realtime_msg **msgs = NULL;
  size_t n = 0;
  struct ana_metric_query q = {
      .metric = st->metric,
      .formula = st->formula,
      .account_id = st->account_id,
      .from_ms = from,
      .to_ms = to,
      .interval = st->iv,
      .time_zone = st->tz,
      .top_n = ANA_METRIC_STREAM_MAX_GROUPS,
  };
  Analytics__V1__MetricData data = ANALYTICS__V1__METRIC_DATA__INIT;
  int rc = ana_metric_query_raw(ms->o.store_ops, ms->o.store, &q, &arena, &data, err);
  if (rc < 0 || data.n_series == 0)
    goto out;
  size_t n_dims = st->metric->n_dimensions < 16 ? st->metric->n_dimensions : 16;
  refs = ana_calloc(data.n_series, sizeof *refs);
  size_t n_b = data.series[0]->n_buckets;
  msgs = ana_calloc(n_b * data.n_series + 1, sizeof *msgs);
  if (!refs || !msgs) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < data.n_series; i++) {
    refs[i].s = data.series[i];
    refs[i].n = n_dims;
    for (size_t d = 0; d < n_dims && d < data.series[i]->n_dimensions; d++)
      refs[i].values[d] = data.series[i]->dimensions[d]->value;
  }
  qsort(refs, data.n_series, sizeof *refs, cmp_series);
  for (size_t k = 0; k < n_b; k++) {
    int64_t start = ana_timestamp_ms(data.series[0]->buckets[k]->start);
    int64_t end = k + 1 < n_b ? ana_timestamp_ms(data.series[0]->buckets[k + 1]->start) : to;
    for (size_t i = 0; i < data.n_series; i++) {
      uint64_t seq = seq_base(start) + OFFSET_SPAN - data.n_series + i;
      if (seq <= after || k >= refs[i].s->n_buckets)
        continue;
      const Google__Protobuf__DoubleValue *v = refs[i].s->buckets[k]->value;
      struct ana_realtime_msg *m = make_update(
          st->metric_id, start, end, seq, true, v != NULL, v ? v->value : 0,
          (const char *const *)st->metric->dimensions, refs[i].values, n_dims, msg_key(start, i));
      if (!m) {
        rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
      }
      msgs[n++] = m;
    }
  }
out:
  if (rc < 0) {
    for (size_t i = 0; i < n; i++)
      ana_realtime_msg_unref(msgs[i]);
    ana_free(msgs);
    msgs = NULL;
    n = 0;
  }
  ana_free(refs);
  ana_arena_fini(&arena);
  *out = msgs;
  *n_out = n;
  return rc;
}

static void on_sub_end(void *ctx, struct ana_realtime_sub *sub) {
  struct msub *s = ctx;
  struct ana_metric_streams *ms = s->ms;
  (void)sub;
  pthread_mutex_lock(&ms->mu);
  struct mstream *st = s->st;
  for (struct msub **p = &st->subs; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      st->n_subs--;
      ms->stats.subscribers--;
      break;
    }
  pthread_cond_broadcast(&ms->loaded);
  pthread_mutex_unlock(&ms->mu);
  ana_free(s);
}

static struct mstream *find_stream(struct ana_metric_streams *ms,
                                   const struct ana_metric_stream_request *req) {
  int64_t version = ana_timestamp_ms(req->metric->updated_at);
  const char *tz = req->time_zone ? req->time_zone : "";
  for (struct mstream *st = ms->streams; st; st = st->next)
    if (!st->failed && st->version == version && st->iv == req->interval &&
        strcmp(st->metric_id, req->metric->metric_id) == 0 &&
        strcmp(st->account_id, req->account_id) == 0 && strcmp(st->tz, tz) == 0)
      return st;
  return NULL;
}

/* Whom METRIC_STREAMS_PER_PEER counts a call's subscriptions for: an
 * authenticated principal (JWT subject or API key, in its account) wherever
 * it connects from; a call without credentials by its client IP. */
static void peer_key(const struct ana_call *call, char *out, size_t size) {
  const struct ana_principal *p = ana_call_principal(call);
  if (p && p->credential != ANA_CREDENTIAL_NONE && p->subject && p->subject[0]) {
    snprintf(out, size, "principal %s/%s", p->account_id ? p->account_id : "", p->subject);
    return;
  }
  char ip[64];
  ana_call_peer_ip(call, ip, sizeof ip);
  snprintf(out, size, "%s", ip);
}

/* Subscriptions the client who (peer_key) holds over every stream; ms->mu held. */
static int peer_subs_locked(struct ana_metric_streams *ms, const char *who) {
  int n = 0;
  for (struct mstream *st = ms->streams; st; st = st->next)
    for (struct msub *s = st->subs; s; s = s->next)
      n += strcmp(s->peer, who) == 0;
  return n;
}

static int peer_limit_error(struct ana_metric_streams *ms, const char *who, struct ana_error *err) {
  return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED,
                       "METRIC_STREAMS_PER_PEER: %s already holds %d live metric streams", who,
                       ms->o.streams_per_peer);
}

static int cmp_by_seq(const void *pa, const void *pb) {
  uint64_t a = ana_realtime_msg_seq(*(struct ana_realtime_msg *const *)pa);
  uint64_t b = ana_realtime_msg_seq(*(struct ana_realtime_msg *const *)pb);
  return a < b ? -1 : a > b;
}

int ana_metric_streams_subscribe(struct ana_metric_streams *ms, struct ana_call *call,
                                 struct ana_metric_stream_request *req, struct ana_error *err) {
  struct ana_realtime_msg **missed = NULL;
  size_t n_missed = 0;
  struct msub *s = NULL;
  uint64_t after = req->after_sequence;
  int rc = 0;
  char who[PEER_KEY_MAX];
  peer_key(call, who, sizeof who);

  pthread_mutex_lock(&ms->mu);
  /* Checked again when subscribing, as others may have come meanwhile. */
  if (peer_subs_locked(ms, who) >= ms->o.streams_per_peer) {
    pthread_mutex_unlock(&ms->mu);
    rc = peer_limit_error(ms, who, err);
    goto out;
  }
  struct mstream *st = find_stream(ms, req);
  if (!st) {
    if (ms->n_streams >= ANA_METRIC_STREAM_MAX_STREAMS) {
      for (struct mstream *o = ms->streams; o; o = o->next)
        if (stream_unused(o)) {
          stream_unlink(ms, o);
          stream_free(o);
          break;
        }
    }
    if (ms->n_streams >= ANA_METRIC_STREAM_MAX_STREAMS) {
      pthread_mutex_unlock(&ms->mu);
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED,
                         "too many live metric streams (%d); retry later",
                         ANA_METRIC_STREAM_MAX_STREAMS);
      goto out;
    }
    st = stream_new(ms, req, err);
    if (!st) {
      pthread_mutex_unlock(&ms->mu);
      rc = ANA_ERR_NOMEM;
      goto out;
    }
    st->loading = true;
    st->waiting = 1;
    st->next = ms->streams;
    ms->streams = st;
    ms->n_streams++;
    ms->stats.streams = ms->n_streams;
    pthread_mutex_unlock(&ms->mu);

    uint64_t max_seq = 0;
    rc = load(ms, st, &max_seq, err);

    pthread_mutex_lock(&ms->mu);
    for (size_t i = 0; i < st->n_pending; i++) {
      if (rc == 0 && st->pending[i].ev.seq > max_seq)
        route(st, &st->pending[i].ev);
      ana_free(st->pending[i].strings);
    }
    ana_free(st->pending);
    st->pending = NULL;
    st->n_pending = st->cap_pending = 0;
    st->loading = false;
    st->failed = rc < 0;
    if (rc == 0) {
      advance(ms, st, ana_clock_wall_ms());
      emit(ms, st);
    }
    pthread_cond_broadcast(&ms->loaded);
    if (rc < 0) {
      st->waiting--;
      pthread_mutex_unlock(&ms->mu);
      goto out;
    }
  } else {
    st->waiting++;
    while (st->loading)
      pthread_cond_wait(&ms->loaded, &ms->mu);
    if (st->failed) {
      st->waiting--;
      pthread_mutex_unlock(&ms->mu);
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "the metric stream could not be loaded");
      goto out;
    }
  }
  int64_t covered = st->hist_len ? st->hist[st->hist_head].start : st->open[0].start;
  pthread_mutex_unlock(&ms->mu);

  /* Buckets older than what is in memory: recomputed from raw events. */
  int64_t after_ms = ana_metric_stream_seq_minute_ms(after);
  if (after && after_ms < covered) {
    int64_t from, end, *starts = NULL;
    size_t n_b = 0;
    struct ana_error e2;
    if (bucket_bounds(st->iv, st->tz, after_ms, &from, &end, err) < 0 ||
        ana_buckets_make(from, covered, st->iv, st->tz, ANA_METRIC_STREAM_MAX_RESUME_BUCKETS,
                         &starts, &n_b, &e2) < 0) {
      rc = ana_error_set(err, ANA_STATUS_OUT_OF_RANGE,
                         "afterSequence: more than %d buckets ago; resume with afterSequence=0",
                         ANA_METRIC_STREAM_MAX_RESUME_BUCKETS);
    } else {
      free(starts);
      rc = recompute(ms, st, from, covered, after, &missed, &n_missed, err);
    }
    if (rc < 0) {
      pthread_mutex_lock(&ms->mu);
      st->waiting--;
      pthread_mutex_unlock(&ms->mu);
      goto out;
    }
  }

  s = ana_calloc(1, sizeof *s);
  pthread_mutex_lock(&ms->mu);
  st->waiting--;
  if (peer_subs_locked(ms, who) >= ms->o.streams_per_peer) {
    pthread_mutex_unlock(&ms->mu);
    ana_free(s);
    s = NULL;
    rc = peer_limit_error(ms, who, err);
    goto out;
  }
  struct ana_realtime_sub *sub =
      s ? ana_realtime_subscribe_feed(ms->o.hub, call, on_sub_end, s) : NULL;
  if (!sub) {
    pthread_mutex_unlock(&ms->mu);
    ana_free(s);
    s = NULL;
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  *s = (struct msub){st->subs, ms, st, sub, call, {0}};
  snprintf(s->peer, sizeof s->peer, "%s", who);
  /* What it missed, oldest first: recomputed buckets, the history, then the
   * open buckets' latest values. */
  int64_t oldest = st->hist_len ? st->hist[st->hist_head].start : st->open[0].start;
  for (size_t i = 0; i < n_missed; i++) {
    if (ana_metric_stream_seq_minute_ms(ana_realtime_msg_seq(missed[i])) < oldest)
      ana_realtime_push(ms->o.hub, sub, missed[i]);
  }
  for (size_t h = 0; h < st->hist_len; h++) {
    struct closed *c = &st->hist[(st->hist_head + h) % st->hist_cap];
    for (size_t i = 0; i < c->n; i++)
      if (ana_realtime_msg_seq(c->finals[i]) > after)
        ana_realtime_push(ms->o.hub, sub, c->finals[i]);
  }
  bool bumped = false;
  for (size_t k = 0; k < st->n_open; k++) {
    struct bucket *b = &st->open[k];
    uint64_t base = seq_base(b->start);
    if (after > base && after < base + OFFSET_SPAN &&
        ana_metric_stream_seq_offset(after) > b->offset) {
      /* A sequence this stream never gave in its open bucket: from before a
       * restart. Go past it and send every group again. */
      uint64_t off = ana_metric_stream_seq_offset(after);
      b->offset = off < LIVE_MAX ? off : LIVE_MAX;
      for (size_t g = 0; g < ana_metric_acc_group_count(b->acc); g++)
        bucket_mark(b, g);
      bumped = true;
    }
    struct ana_realtime_msg *lasts[2 * (ANA_METRIC_STREAM_MAX_GROUPS + 1)];
    size_t n_lasts = 0;
    for (size_t g = 0; g < b->cap && n_lasts < sizeof lasts / sizeof *lasts; g++)
      if (b->last[g] && ana_realtime_msg_seq(b->last[g]) > after)
        lasts[n_lasts++] = b->last[g];
    qsort(lasts, n_lasts, sizeof *lasts, cmp_by_seq);
    for (size_t i = 0; i < n_lasts; i++)
      ana_realtime_push(ms->o.hub, sub, lasts[i]);
  }
  st->subs = s;
  st->n_subs++;
  st->idle_since = 0;
  ms->stats.subscribers++;
  ms->stats.recomputed += n_missed;
  if (bumped)
    emit(ms, st);
  ms->pushed = false;
  pthread_mutex_unlock(&ms->mu);
  ana_realtime_kick(ms->o.hub);
  ana_realtime_feed_ready(ms->o.hub, sub); /* call and sub may be gone after this */

out:
  for (size_t i = 0; i < n_missed; i++)
    ana_realtime_msg_unref(missed[i]);
  ana_free(missed);
  ana_formula_free(req->formula); /* when not taken by a new stream */
  req->formula = NULL;
  return rc;
}

/* ------------------------------------------------------------------ */
/* lifecycle */

struct ana_metric_streams *ana_metric_streams_create(const struct ana_metric_streams_options *o,
                                                     struct ana_error *err) {
  struct ana_metric_streams *ms = ana_calloc(1, sizeof *ms);
  if (!ms) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  ms->o = *o;
  if (ms->o.interval_ms < 0)
    ms->o.interval_ms = 0;
  if (ms->o.history_buckets <= 0)
    ms->o.history_buckets = DEFAULT_HISTORY;
  if (ms->o.streams_per_peer <= 0)
    ms->o.streams_per_peer = DEFAULT_STREAMS_PER_PEER;
  pthread_mutex_init(&ms->mu, NULL);
  pthread_cond_init(&ms->tick, NULL);
  pthread_cond_init(&ms->loaded, NULL);
  if (pthread_create(&ms->ticker, NULL, ticker_main, ms) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the metric stream thread");
    ana_metric_streams_destroy(ms);
    return NULL;
  }
  ms->ticker_started = true;
  return ms;
}

void ana_metric_streams_destroy(struct ana_metric_streams *ms) {
  if (!ms)
    return;
  pthread_mutex_lock(&ms->mu);
  ms->stop = true;
  pthread_cond_signal(&ms->tick);
  pthread_mutex_unlock(&ms->mu);
  if (ms->ticker_started)
    pthread_join(ms->ticker, NULL);
  /* Subscribers still there end now (on_sub_end takes each off its list). */
  struct ana_error st;
  ana_error_set(&st, ANA_STATUS_UNAVAILABLE, "the server is shutting down");
  pthread_mutex_lock(&ms->mu);
  for (;;) {
    struct msub *s = NULL;
    for (struct mstream *m = ms->streams; m && !s; m = m->next)
      s = m->subs;
    if (!s)
      break;
    struct ana_call *call = s->call;
    pthread_mutex_unlock(&ms->mu);
    ana_realtime_unsubscribe(ms->o.hub, call, &st);
    pthread_mutex_lock(&ms->mu);
    bool still = false;
    for (struct mstream *m = ms->streams; m && !still; m = m->next)
      for (struct msub *x = m->subs; x && !still; x = x->next)
        still = x == s;
    if (still) /* its end runs on another thread: wait for it */
      pthread_cond_wait(&ms->loaded, &ms->mu);
  }
  while (ms->streams) {
    struct mstream *m = ms->streams;
    ms->streams = m->next;
    stream_free(m);
  }
  pthread_mutex_unlock(&ms->mu);
  pthread_cond_destroy(&ms->tick);
  pthread_cond_destroy(&ms->loaded);
  pthread_mutex_destroy(&ms->mu);
  ana_free(ms);
}

void ana_metric_streams_stats(struct ana_metric_streams *ms, struct ana_metric_streams_stats *out) {
  pthread_mutex_lock(&ms->mu);
  *out = ms->stats;
  pthread_mutex_unlock(&ms->mu);
}
