/* The real-time hub: subscribers, fan-out of committed events, live rates,
 * bounded per-subscriber buffers and the pump that feeds the transports. */
#include "ana_realtime.h"
#include "ana_proto_walk.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_crypto_fields.h"
#include "ana_arena.h"
#include "ana_log.h"
#include "analytics/v1/realtime.pb-c.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMPONENT "realtime"
#define DEFAULT_BUFFER 1024
#define DEFAULT_INTERVAL_MS 1000
#define DEFAULT_SLOW_MS 10000
/* Rates: the last second is the current SLOT_MS slot so far, the 9 before
 * it, and the part of the 10th still inside the second (its count scaled
 * by that part): SLOTS slots kept per pair. */
#define SLOTS 11
#define SLOT_MS 100
/* Distinct (eventType, eventName) pairs tracked per subscriber; the rest
 * are counted under OTHER. Bounds a subscriber's memory. */
#define MAX_RATE_KEYS 1024
#define OTHER "(other)"
/* How often the pump looks again at a subscriber whose transport is full
 * or has queued messages (the transports do not say when they drain). */
#define RETRY_MS 20

/* ------------------------------------------------------------------ */
/* a committed event, shared by every subscriber it goes to            */

struct rt_event {
  atomic_int refs;
  struct ana_arena arena; /* the payload copy and the unpacked event */
  uint8_t *payload;
  size_t len;
  Analytics__V1__Event *ev; /* unpacked once: by the hook, or by the pump */
  /* A prebuilt message (fed subscribers) instead of an event: */
  const ProtobufCMessage *msg;
  uint64_t key, seq;
  /* What goes to every subscriber, made by the pump on the first delivery
   * (pump thread only) so that each transport encodes it once for all of
   * them: msg, or the event's update with each subscriber's sequence put in
   * per send. */
  Analytics__V1__AnalyticsUpdate up;
  struct ana_call_shared *shared;
  /* An event with encrypted fields: ev and shared hold them masked; the
   * clear encoding, for subscribers with pii:read, is made (pump thread) on
   * the first delivery to one. */
  bool sealed;
  Analytics__V1__AnalyticsUpdate up_clear;
  struct ana_call_shared *shared_clear;
};

static struct rt_event *event_new(const struct ana_event_record *r) {
  struct rt_event *e = ana_calloc(1, sizeof *e);
  if (!e)
    return NULL;
  atomic_init(&e->refs, 1);
  ana_arena_init(&e->arena, r->payload_len * 3 + 512, 0);
  e->payload = ana_arena_alloc(&e->arena, r->payload_len ? r->payload_len : 1);
  if (!e->payload) {
    ana_arena_fini(&e->arena);
    ana_free(e);
    return NULL;
  }
  memcpy(e->payload, r->payload, r->payload_len);
  e->len = r->payload_len;
  return e;
}

static void event_unref(struct rt_event *e) {
  if (e && atomic_fetch_sub(&e->refs, 1) == 1) {
    ana_call_shared_destroy(e->shared);
    ana_call_shared_destroy(e->shared_clear);
    ana_arena_fini(&e->arena);
    ana_free(e);
  }
}

/* The public name of a prebuilt message is struct ana_realtime_msg. */
struct ana_realtime_msg {
  struct rt_event e;
};

struct ana_realtime_msg *ana_realtime_msg_create(size_t arena_size) {
  struct ana_realtime_msg *m = ana_calloc(1, sizeof *m);
  if (!m)
    return NULL;
  atomic_init(&m->e.refs, 1);
  ana_arena_init(&m->e.arena, arena_size ? arena_size : 1024, 0);
  return m;
}

struct ana_arena *ana_realtime_msg_arena(struct ana_realtime_msg *m) {
  return &m->e.arena;
}

void ana_realtime_msg_set(struct ana_realtime_msg *m, const ProtobufCMessage *message, uint64_t key,
                          uint64_t seq) {
  m->e.msg = message;
  m->e.key = key;
  m->e.seq = seq;
}

uint64_t ana_realtime_msg_seq(const struct ana_realtime_msg *m) {
  return m->e.seq;
}

void ana_realtime_msg_ref(struct ana_realtime_msg *m) {
  atomic_fetch_add(&m->e.refs, 1);
}

void ana_realtime_msg_unref(struct ana_realtime_msg *m) {
  if (m)
    event_unref(&m->e);
}

static Analytics__V1__Event *event_unpacked(struct rt_event *e,
                                            const struct ana_crypto_fields *encrypted) {
  if (!e->ev) {
    e->ev = (void *)ana_proto_unpack(&analytics__v1__event__descriptor, &e->arena.pb, e->payload,
                                     e->len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
    /* Encrypted fields are masked in the copy every subscriber shares. */
    if (e->ev && encrypted)
      e->sealed = ana_crypto_event_reveal(NULL, encrypted, NULL, e->ev, false, &e->arena, NULL) > 0;
  }
  return e->ev;
}

/* The clear encoding of an event with encrypted fields (pump thread); the
 * masked one when they cannot be opened. */
static struct ana_call_shared *event_shared_clear(struct rt_event *e, struct ana_crypto *crypto,
                                                  const struct ana_crypto_fields *encrypted,
                                                  struct ana_call_shared *masked) {
  if (e->shared_clear)
    return e->shared_clear;
  Analytics__V1__Event *ev =
      (void *)ana_proto_unpack(&analytics__v1__event__descriptor, &e->arena.pb, e->payload, e->len,
                               ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  struct ana_error err;
  if (!ev ||
      ana_crypto_event_reveal(crypto, encrypted, ev->account_id, ev, true, &e->arena, &err) < 0) {
    ANA_WARN(COMPONENT, "a live event's encrypted fields are sent masked: %s",
             ev ? err.message : "it cannot be read");
    return masked;
  }
  analytics__v1__analytics_update__init(&e->up_clear);
  e->up_clear.update_case = ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT;
  e->up_clear.event = ev;
  e->shared_clear = ana_call_shared_create(&e->up_clear.base, true);
  return e->shared_clear ? e->shared_clear : masked;
}

/* The shared message to send for e (pump thread); NULL when the event
 * cannot be read (*rc ANA_ERR_INVALID) or out of memory. */
static struct ana_call_shared *event_shared(struct rt_event *e,
                                            const struct ana_crypto_fields *encrypted, int *rc) {
  *rc = 0;
  if (e->shared)
    return e->shared;
  if (e->msg) {
    e->shared = ana_call_shared_create(e->msg, false); /* carries its own sequence */
  } else {
    Analytics__V1__Event *ev = event_unpacked(e, encrypted);
    if (!ev) {
      *rc = ANA_ERR_INVALID;
      return NULL;
    }
    analytics__v1__analytics_update__init(&e->up);
    e->up.update_case = ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_EVENT;
    e->up.event = ev;
    e->shared = ana_call_shared_create(&e->up.base, true);
  }
  if (!e->shared)
    *rc = ANA_ERR_NOMEM;
  return e->shared;
}

/* ------------------------------------------------------------------ */
/* live rates of one subscriber                                        */

struct rate_key {
  char *event_type, *event_name; /* NULL: free slot of the hash table */
  int64_t epoch[SLOTS];          /* which SLOT_MS period each count belongs to */
  uint32_t count[SLOTS];
};

struct rates {
  struct rate_key *tab; /* open addressing, cap a power of two */
  size_t cap, n;
};

static uint64_t key_hash(const char *t, const char *n) {
  uint64_t h = 1469598103934665603ULL;
  for (; *t; t++)
    h = (h ^ (unsigned char)*t) * 1099511628211ULL;
  h = (h ^ 0xff) * 1099511628211ULL;
  for (; *n; n++)
    h = (h ^ (unsigned char)*n) * 1099511628211ULL;
  return h;
}

static struct rate_key *rates_slot(struct rates *r, const char *t, const char *n) {
  size_t mask = r->cap - 1;
  for (size_t i = key_hash(t, n) & mask;; i = (i + 1) & mask) {
    struct rate_key *k = &r->tab[i];
    if (!k->event_type || (strcmp(k->event_type, t) == 0 && strcmp(k->event_name, n) == 0))
      return k;
  }
}

static void rates_fini(struct rates *r) {
  for (size_t i = 0; i < r->cap; i++) {
    ana_free(r->tab[i].event_type);
    ana_free(r->tab[i].event_name);
  }
  ana_free(r->tab);
  memset(r, 0, sizeof *r);
}

/* Rebuilds the table with cap slots, keeping the keys with a count in the
 * window (all of them when keep_all). */
static int rates_rehash(struct rates *r, size_t cap, int64_t now_epoch, bool keep_all) {
  struct rate_key *tab = ana_calloc(cap, sizeof *tab);
  if (!tab)
    return ANA_ERR_NOMEM;
  struct rates nr = {tab, cap, 0};
  for (size_t i = 0; i < r->cap; i++) {
    struct rate_key *k = &r->tab[i];
    if (!k->event_type)
      continue;
    bool live = keep_all;
    for (int s = 0; s < SLOTS && !live; s++)
      live = k->count[s] && k->epoch[s] > now_epoch - SLOTS;
    if (!live) {
      ana_free(k->event_type);
      ana_free(k->event_name);
      continue;
    }
    *rates_slot(&nr, k->event_type, k->event_name) = *k;
    nr.n++;
  }
  ana_free(r->tab);
  *r = nr;
  return 0;
}

static void rates_count(struct rates *r, const char *t, const char *n, int64_t now_ms) {
  if (r->cap == 0 && rates_rehash(r, 16, now_ms / SLOT_MS, true) < 0)
    return;
  struct rate_key *k = rates_slot(r, t, n);
  if (!k->event_type) {
    if (r->n >= MAX_RATE_KEYS) {
      t = n = OTHER; /* full: counted in the shared bucket */
      k = rates_slot(r, t, n);
    }
    if (!k->event_type) {
      if ((r->n + 1) * 2 > r->cap) {
        if (rates_rehash(r, r->cap * 2, now_ms / SLOT_MS, true) < 0)
          return;
        k = rates_slot(r, t, n);
      }
      k->event_type = ana_strdup(t);
      k->event_name = ana_strdup(n);
      if (!k->event_type || !k->event_name) {
        ana_free(k->event_type);
        ana_free(k->event_name);
        k->event_type = k->event_name = NULL;
        return;
      }
      r->n++;
    }
  }
  int64_t e = now_ms / SLOT_MS;
  int s = (int)(e % SLOTS);
  if (k->epoch[s] != e) {
    k->epoch[s] = e;
    k->count[s] = 0;
  }
  k->count[s]++;
}

struct rate_out {
  const char *event_type, *event_name; /* copies owned by the snapshot */
  double per_second;
};

static int cmp_rate(const void *a, const void *b) {
  const struct rate_out *x = a, *y = b;
  if (x->per_second != y->per_second)
    return x->per_second > y->per_second ? -1 : 1;
  int c = strcmp(x->event_type, y->event_type);
  return c ? c : strcmp(x->event_name, y->event_name);
}

/* ------------------------------------------------------------------ */
/* subscribers                                                          */

struct sub {
  struct sub *prev, *next; /* the hub's list, while active */
  struct ana_call *call;
  struct ana_realtime_filter f;
  int refs;                /* the list's, the pump's while it sends, the setup's (hub mu) */
  bool active;             /* in the list; false once closing */
  struct ana_error status; /* how the call ends */

  /* hub mu: */
  struct rt_event **ring;
  size_t ring_cap, head, len;
  size_t transport_len;   /* messages the transport still holds, as last seen */
  bool snapshot_due;      /* a snapshot waits (a newer one replaces it) */
  uint64_t dropped;       /* events not sent since the last snapshot sent */
  uint64_t dropped_total; /* events dropped plus snapshots replaced */
  int64_t behind_since;   /* monotonic ms since the subscriber fell behind; 0 = not */
  struct rates rates;

  /* fed subscribers (hub mu): */
  bool feed;
  ana_realtime_end_fn on_end;
  void *end_ctx;
  uint64_t coalesced;     /* messages replaced while unsent */
  bool overflowed;        /* a message with a new key did not fit: end once drained */
  uint64_t last_seq_sent; /* seq of the last message the transport took */

  /* pump thread only: */
  uint64_t sequence;
};

struct ana_realtime {
  struct ana_realtime_options o;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  struct sub *subs;
  size_t n_subs;
  bool stop;
  bool kick; /* something was queued: the pump should look now */
  pthread_t pump;
  bool pump_started;
  struct ana_realtime_stats stats;
};

static void sub_free(struct sub *s) {
  for (size_t i = 0; i < s->len; i++)
    event_unref(s->ring[(s->head + i) % s->ring_cap]);
  ana_free(s->ring);
  rates_fini(&s->rates);
  ana_free(s);
}

/* Takes s out of the list (hub mu held); the list's reference is dropped
 * by the caller with sub_release. Returns false when already closing. */
static bool sub_close_locked(struct ana_realtime *rt, struct sub *s, enum ana_status code,
                             const char *message) {
  if (!s->active)
    return false;
  s->active = false;
  ana_error_set(&s->status, code, "%s", message);
  if (s->prev)
    s->prev->next = s->next;
  else
    rt->subs = s->next;
  if (s->next)
    s->next->prev = s->prev;
  s->prev = s->next = NULL;
  rt->n_subs--;
  rt->stats.subscribers = rt->n_subs;
  return true;
}

/* Drops one reference (hub mu held). Returns s when it was the last: the
 * caller then finishes the call and frees s outside the lock. The call
 * forgets s now, so a late on_cancel finds nothing. */
static struct sub *sub_unref_locked(struct sub *s) {
  if (--s->refs > 0)
    return NULL;
  ana_call_set_user(s->call, NULL);
  return s;
}

static void sub_end(struct sub *s) {
  if (!s)
    return;
  if (s->on_end)
    s->on_end(s->end_ctx, (struct ana_realtime_sub *)s);
  ana_call_finish(s->call, NULL, &s->status);
  sub_free(s);
}

/* ------------------------------------------------------------------ */
/* matching (commit hook)                                               */

bool ana_realtime_value_equals(const struct Google__Protobuf__Value *v, const char *text) {
  if (!v)
    return false;
  char buf[64];
  switch (v->kind_case) {
  case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: return strcmp(v->string_value, text) == 0;
  case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
    return strcmp(text, v->bool_value ? "1" : "0") == 0 ||
           strcmp(text, v->bool_value ? "true" : "false") == 0;
  case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
    double d = v->number_value;
    if (!isfinite(d))
      return false;
    if (d == floor(d) && fabs(d) < 9007199254740992.0)
      snprintf(buf, sizeof buf, "%lld", (long long)d);
    else
      snprintf(buf, sizeof buf, "%.15g", d);
    if (strcmp(buf, text) == 0)
      return true;
    /* "1.50" or "1e3" as written by a client: compare as numbers too. */
    char *end = NULL;
    errno = 0;
    double t = strtod(text, &end);
    return end && end != text && *end == '\0' && errno == 0 && t == d;
  }
  default: return false;
  }
}

static bool match_props(const struct ana_realtime_filter *f, const Analytics__V1__Event *ev) {
  for (size_t i = 0; i < f->n_properties; i++) {
    const Google__Protobuf__Value *v = NULL;
    if (ev->properties)
      for (size_t j = 0; j < ev->properties->n_fields; j++)
        if (strcmp(ev->properties->fields[j]->key, f->property_keys[i]) == 0)
          v = ev->properties->fields[j]->value;
    if (!ana_realtime_value_equals(v, f->property_values[i]))
      return false;
  }
  return true;
}

static bool match_names(const struct ana_realtime_filter *f, const struct ana_event_record *r) {
  return strcmp(f->account_id, r->account_id) == 0 &&
         (!f->event_type || !f->event_type[0] || strcmp(f->event_type, r->event_type) == 0) &&
         (!f->event_name || !f->event_name[0] || strcmp(f->event_name, r->event_name) == 0);
}

/* Queues e for s, or counts it dropped (hub mu held). */
static void sub_push_locked(struct ana_realtime *rt, struct sub *s, struct rt_event *e,
                            int64_t now) {
  size_t budget = rt->o.buffer_size;
  bool room = s->len + s->transport_len < budget;
  if (room && s->len == s->ring_cap) {
    size_t cap = s->ring_cap ? s->ring_cap * 2 : 16;
    if (cap > budget)
      cap = budget;
    struct rt_event **ring = ana_malloc(cap * sizeof *ring);
    if (ring) {
      for (size_t i = 0; i < s->len; i++)
        ring[i] = s->ring[(s->head + i) % s->ring_cap];
      ana_free(s->ring);
      s->ring = ring;
      s->ring_cap = cap;
      s->head = 0;
    } else {
      room = false;
    }
  }
  if (!room) {
    s->dropped++;
    s->dropped_total++;
    rt->stats.events_dropped++;
    if (!s->behind_since)
      s->behind_since = now;
    return;
  }
  atomic_fetch_add(&e->refs, 1);
  s->ring[(s->head + s->len) % s->ring_cap] = e;
  s->len++;
  rt->stats.events_enqueued++;
}

void ana_realtime_on_commit(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_realtime *rt = ctx;
  int64_t now = ana_clock_mono_ms();
  bool queued = false;
  pthread_mutex_lock(&rt->mu);
  for (size_t i = 0; i < n && rt->subs; i++) {
    const struct ana_event_record *r = &records[i];
    if (r->duplicate)
      continue;
    struct rt_event *e = NULL;
    bool unpack_failed = false;
    for (struct sub *s = rt->subs; s; s = s->next) {
      if (s->feed || !match_names(&s->f, r))
        continue;
      if (s->f.include_events || s->f.n_properties) {
        if (!e && !unpack_failed) {
          e = event_new(r);
          if (!e || !event_unpacked(e, rt->o.encrypted)) {
            ANA_WARN(COMPONENT, "a committed event cannot be read for the live streams");
            event_unref(e);
            e = NULL;
            unpack_failed = true;
          }
        }
        if (!e)
          continue;
        if (s->f.n_properties && !match_props(&s->f, e->ev))
          continue;
      }
      rates_count(&s->rates, r->event_type, r->event_name, now);
      if (s->f.include_events) {
        sub_push_locked(rt, s, e, now);
        queued = true;
      }
    }
    event_unref(e); /* the subscribers hold their own references */
  }
  if (queued) {
    rt->kick = true;
    pthread_cond_signal(&rt->cond);
  }
  pthread_mutex_unlock(&rt->mu);
}

/* ------------------------------------------------------------------ */
/* the pump                                                             */

static Google__Protobuf__Timestamp *timestamp_now(struct ana_arena *a) {
  int64_t ns = ana_clock_wall_ns();
  Google__Protobuf__Timestamp *t = ana_arena_alloc(a, sizeof *t);
  if (t) {
    google__protobuf__timestamp__init(t);
    t->seconds = ns / 1000000000;
    t->nanos = (int32_t)(ns % 1000000000);
  }
  return t;
}

/* The snapshot of s's rates now, in arena (hub mu held). */
static Analytics__V1__AggregateSnapshot *snapshot_locked(struct sub *s, struct ana_arena *a,
                                                         int64_t now) {
  int64_t e_now = now / SLOT_MS;
  double oldest_part = (double)(SLOT_MS - now % SLOT_MS) / SLOT_MS;
  Analytics__V1__AggregateSnapshot *snap = ana_arena_alloc(a, sizeof *snap);
  struct rate_out *outs = ana_arena_calloc(a, s->rates.n ? s->rates.n : 1, sizeof *outs);
  if (!snap || !outs)
    return NULL;
  analytics__v1__aggregate_snapshot__init(snap);
  size_t k = 0;
  for (size_t i = 0; i < s->rates.cap; i++) {
    struct rate_key *key = &s->rates.tab[i];
    if (!key->event_type)
      continue;
    double sum = 0;
    for (int j = 0; j < SLOTS; j++) {
      if (key->epoch[j] > e_now - SLOTS + 1)
        sum += key->count[j];
      else if (key->epoch[j] == e_now - SLOTS + 1)
        sum += key->count[j] * oldest_part;
    }
    if (sum <= 0)
      continue;
    outs[k].event_type = ana_arena_strdup(a, key->event_type);
    outs[k].event_name = ana_arena_strdup(a, key->event_name);
    outs[k].per_second = sum; /* events in the last second */
    if (!outs[k].event_type || !outs[k].event_name)
      return NULL;
    k++;
  }
  qsort(outs, k, sizeof *outs, cmp_rate);
  snap->at = timestamp_now(a);
  snap->n_rates = k;
  snap->rates = ana_arena_calloc(a, k ? k : 1, sizeof *snap->rates);
  Analytics__V1__EventRate *rates = ana_arena_calloc(a, k ? k : 1, sizeof *rates);
  if (!snap->at || !snap->rates || !rates)
    return NULL;
  for (size_t i = 0; i < k; i++) {
    analytics__v1__event_rate__init(&rates[i]);
    rates[i].event_type = (char *)outs[i].event_type;
    rates[i].event_name = (char *)outs[i].event_name;
    rates[i].per_second = outs[i].per_second;
    snap->rates[i] = &rates[i];
  }
  snap->dropped_events = s->dropped;
  /* Forget pairs that left the window, so the table does not grow. */
  if (s->rates.n > 64 && k * 4 < s->rates.n)
    rates_rehash(&s->rates, s->rates.cap, e_now, false);
  return snap;
}

/* Sends what s has, as far as its transport takes it (pump thread, hub mu
 * not held). Returns true when s still has something waiting. */
static bool deliver(struct ana_realtime *rt, struct sub *s, struct ana_arena *a) {
  for (;;) {
    ana_arena_reset(a);
    Analytics__V1__AnalyticsUpdate up = ANALYTICS__V1__ANALYTICS_UPDATE__INIT;
    struct rt_event *e = NULL;
    uint64_t dropped_sent = 0;
    bool is_snapshot = false;
    int64_t now = ana_clock_mono_ms();

    pthread_mutex_lock(&rt->mu);
    if (!s->active) {
      pthread_mutex_unlock(&rt->mu);
      return false;
    }
    if (s->snapshot_due) {
      /* Snapshots go ahead of queued events: a subscriber that is behind
       * still sees the live rates and how much it missed. */
      up.aggregates = snapshot_locked(s, a, now);
      up.update_case = ANALYTICS__V1__ANALYTICS_UPDATE__UPDATE_AGGREGATES;
      dropped_sent = s->dropped;
      is_snapshot = true;
      if (!up.aggregates) {
        s->snapshot_due = false; /* out of memory: skip this one */
        pthread_mutex_unlock(&rt->mu);
        continue;
      }
    } else if (s->len) {
      e = s->ring[s->head];
      atomic_fetch_add(&e->refs, 1);
    }
    pthread_mutex_unlock(&rt->mu);
    if (!is_snapshot && !e)
      break;
    int rc;
    if (e) {
      struct ana_call_shared *shared = event_shared(e, rt->o.encrypted, &rc);
      if (shared && !e->msg && e->sealed && s->f.clear_pii && rt->o.crypto)
        shared = event_shared_clear(e, rt->o.crypto, rt->o.encrypted, shared);
      if (shared)
        rc = ana_call_send_shared(s->call, shared, e->msg ? 0 : s->sequence + 1);
    } else {
      up.sequence = s->sequence + 1;
      rc = ana_call_send(s->call, &up.base);
    }

    pthread_mutex_lock(&rt->mu);
    if (rc == 0) {
      if (e && e->msg)
        s->last_seq_sent = e->seq;
      else
        s->sequence++;
      rt->stats.updates_sent++;
    }
    if (rc != ANA_ERR_FULL) {
      /* Sent, or cannot ever be sent: take it off the queue either way. */
      if (is_snapshot) {
        s->snapshot_due = false;
        s->dropped -= dropped_sent;
      } else if (s->len && s->ring[s->head] == e) {
        s->ring[s->head] = NULL;
        s->head = (s->head + 1) % s->ring_cap;
        s->len--;
        event_unref(e); /* the ring's reference */
        if (rc != 0 && rc != ANA_ERR_CLOSED) {
          s->dropped++;
          s->dropped_total++;
        }
      }
    }
    if (rc == ANA_ERR_FULL && !s->behind_since)
      s->behind_since = now;
    if (rc == ANA_ERR_CLOSED &&
        sub_close_locked(rt, s, ANA_STATUS_CANCELLED, "the client went away"))
      sub_unref_locked(s); /* the list's reference; never the last (the pump holds one) */
    pthread_mutex_unlock(&rt->mu);
    event_unref(e);
    if (rc == ANA_ERR_FULL || rc == ANA_ERR_CLOSED)
      return rc == ANA_ERR_FULL;
  }
  return false;
}

static void *pump_main(void *arg) {
  pthread_setname_np(pthread_self(), "ana-realtime"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_realtime *rt = arg;
  struct ana_arena arena;
  ana_arena_init(&arena, 16384, 0);
  int64_t next_snapshot = ana_clock_mono_ms() + rt->o.aggregate_interval_ms;
  bool retry = false;
  struct sub **batch = NULL;
  size_t batch_cap = 0;

  pthread_mutex_lock(&rt->mu);
  while (!rt->stop) {
    int64_t now = ana_clock_mono_ms();
    int64_t wake = next_snapshot;
    if (retry && now + RETRY_MS < wake)
      wake = now + RETRY_MS;
    if (!rt->kick && now < wake) {
      struct timespec ts = ana_deadline_in_ms(wake - now);
      pthread_cond_timedwait(&rt->cond, &rt->mu, &ts);
      continue;
    }
    rt->kick = false;
    if (now >= next_snapshot) {
      for (struct sub *s = rt->subs; s; s = s->next) {
        if (s->feed)
          continue; /* fed subscribers get what their owner pushes, no snapshots */
        if (s->snapshot_due)
          s->dropped_total++; /* the unsent one is replaced by this one */
        s->snapshot_due = true;
      }
      next_snapshot += rt->o.aggregate_interval_ms;
      if (next_snapshot <= now)
        next_snapshot = now + rt->o.aggregate_interval_ms;
    }
    /* Take every subscriber with something to do. */
    size_t n = 0;
    for (struct sub *s = rt->subs; s; s = s->next)
      if (s->len || s->snapshot_due || s->transport_len || s->behind_since)
        n++;
    if (n > batch_cap) {
      struct sub **nb = ana_realloc(batch, n * sizeof *nb);
      if (!nb) {
        retry = true;
        continue;
      }
      batch = nb;
      batch_cap = n;
    }
    n = 0;
    for (struct sub *s = rt->subs; s; s = s->next)
      if (s->len || s->snapshot_due || s->transport_len || s->behind_since) {
        s->refs++;
        batch[n++] = s;
      }
    pthread_mutex_unlock(&rt->mu);

    retry = false;
    for (size_t i = 0; i < n; i++) {
      struct sub *s = batch[i];
      bool waiting = deliver(rt, s, &arena);
      size_t tl = ana_call_send_queue_length(s->call);
      int64_t t = ana_clock_mono_ms();
      pthread_mutex_lock(&rt->mu);
      s->transport_len = tl;
      if (s->active && !waiting && s->len == 0 && !s->snapshot_due)
        s->behind_since = 0; /* caught up with the live events */
      bool overflow_end = s->active && s->overflowed && s->len == 0;
      if (s->active &&
          (overflow_end || (s->behind_since && t - s->behind_since >= rt->o.slow_consumer_ms))) {
        char msg[160];
        if (s->feed)
          snprintf(msg, sizeof msg,
                   ANA_SLOW_CONSUMER_MESSAGE ": %" PRIu64 " updates coalesced; resume with "
                                             "afterSequence=%" PRIu64,
                   s->coalesced, s->last_seq_sent);
        else
          snprintf(msg, sizeof msg, ANA_SLOW_CONSUMER_MESSAGE ": %" PRIu64 " updates dropped",
                   s->dropped_total);
        if (sub_close_locked(rt, s, ANA_STATUS_RESOURCE_EXHAUSTED, msg)) {
          rt->stats.slow_consumers++;
          ANA_INFO(COMPONENT, "ending a live stream: %s", msg);
          sub_unref_locked(s); /* the list's; ours goes below */
        }
      }
      if (s->active && (s->len || s->transport_len || s->behind_since))
        retry = true;
      struct sub *last = sub_unref_locked(s);
      pthread_mutex_unlock(&rt->mu);
      sub_end(last);
    }
    ana_arena_reset(&arena);
    pthread_mutex_lock(&rt->mu);
  }
  pthread_mutex_unlock(&rt->mu);
  ana_free(batch);
  ana_arena_fini(&arena);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* subscribe, unsubscribe, lifecycle                                    */

/* Lists s as call's subscriber. The caller holds one more reference than
 * the list's (s->refs == 2) until it has finished setting up, so that the
 * pump cannot end s and finish the call meanwhile; it lets go with
 * setup_done. */
static void sub_list(struct ana_realtime *rt, struct ana_call *call, struct sub *s) {
  pthread_mutex_lock(&rt->mu);
  ana_call_set_user(call, s);
  s->next = rt->subs;
  if (rt->subs)
    rt->subs->prev = s;
  rt->subs = s;
  rt->n_subs++;
  rt->stats.subscribers = rt->n_subs;
  pthread_mutex_unlock(&rt->mu);
}

/* Ends the setup: a cancel that came before s was listed found nothing to
 * end, so it is ended now; then the setup's reference is dropped. The call
 * is alive until then (the setup reference keeps the pump from finishing
 * it), and only then: the caller must not touch the call or s afterwards. */
static void setup_done(struct ana_realtime *rt, struct sub *s) {
  struct sub *last = NULL;
  pthread_mutex_lock(&rt->mu);
  if (s->active && ana_call_is_cancelled(s->call) &&
      sub_close_locked(rt, s, ANA_STATUS_CANCELLED, "cancelled"))
    sub_unref_locked(s); /* the list's; never the last: ours is held */
  last = sub_unref_locked(s);
  pthread_mutex_unlock(&rt->mu);
  sub_end(last);
}

int ana_realtime_subscribe(struct ana_realtime *rt, struct ana_call *call,
                           const struct ana_realtime_filter *f) {
  struct sub *s = ana_calloc(1, sizeof *s);
  if (!s)
    return ANA_ERR_NOMEM;
  s->call = call;
  s->f = *f;
  s->refs = 2; /* the list's and the setup's */
  s->active = true;
  sub_list(rt, call, s);
  setup_done(rt, s);
  return 0;
}

struct ana_realtime_sub *ana_realtime_subscribe_feed(struct ana_realtime *rt, struct ana_call *call,
                                                     ana_realtime_end_fn on_end, void *ctx) {
  struct sub *s = ana_calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->call = call;
  s->refs = 2; /* the list's and the owner's setup (ana_realtime_feed_ready) */
  s->active = true;
  s->feed = true;
  s->on_end = on_end;
  s->end_ctx = ctx;
  sub_list(rt, call, s);
  return (struct ana_realtime_sub *)s;
}

void ana_realtime_feed_ready(struct ana_realtime *rt, struct ana_realtime_sub *sub) {
  setup_done(rt, (struct sub *)sub);
}

int ana_realtime_push(struct ana_realtime *rt, struct ana_realtime_sub *sub,
                      struct ana_realtime_msg *m) {
  struct sub *s = (struct sub *)sub;
  struct rt_event *e = &m->e;
  int rc = 0;
  pthread_mutex_lock(&rt->mu);
  if (!s->active || s->overflowed) {
    rc = s->active ? 0 : ANA_ERR_CLOSED;
    goto out;
  }
  if (e->key) {
    /* Coalesce: the unsent one with the same key leaves the queue. */
    for (size_t i = 0; i < s->len; i++) {
      struct rt_event *old = s->ring[(s->head + i) % s->ring_cap];
      if (old->key != e->key)
        continue;
      for (size_t j = i; j + 1 < s->len; j++)
        s->ring[(s->head + j) % s->ring_cap] = s->ring[(s->head + j + 1) % s->ring_cap];
      s->len--;
      event_unref(old);
      s->coalesced++;
      rt->stats.coalesced++;
      break;
    }
  }
  size_t before = s->len;
  sub_push_locked(rt, s, e, ana_clock_mono_ms());
  if (s->len == before) {
    /* No room for it: it cannot be dropped without a gap, so the
     * subscriber ends once what is queued is out, and resumes. */
    s->overflowed = true;
  }
out:
  pthread_mutex_unlock(&rt->mu);
  return rc;
}

void ana_realtime_kick(struct ana_realtime *rt) {
  pthread_mutex_lock(&rt->mu);
  rt->kick = true;
  pthread_cond_signal(&rt->cond);
  pthread_mutex_unlock(&rt->mu);
}

void ana_realtime_unsubscribe(struct ana_realtime *rt, struct ana_call *call,
                              const struct ana_error *status) {
  struct sub *last = NULL;
  pthread_mutex_lock(&rt->mu);
  struct sub *s = ana_call_user(call);
  if (s && sub_close_locked(rt, s, status->code, status->message))
    last = sub_unref_locked(s);
  pthread_mutex_unlock(&rt->mu);
  sub_end(last);
}

struct ana_realtime *ana_realtime_create(const struct ana_realtime_options *o,
                                         struct ana_error *err) {
  struct ana_realtime *rt = ana_calloc(1, sizeof *rt);
  if (!rt) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  rt->o = *o;
  if (!rt->o.buffer_size)
    rt->o.buffer_size = DEFAULT_BUFFER;
  if (rt->o.aggregate_interval_ms <= 0)
    rt->o.aggregate_interval_ms = DEFAULT_INTERVAL_MS;
  if (rt->o.slow_consumer_ms <= 0)
    rt->o.slow_consumer_ms = DEFAULT_SLOW_MS;
  pthread_mutex_init(&rt->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_cond_init(&rt->cond, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&rt->pump, NULL, pump_main, rt) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the real-time pump thread");
    ana_realtime_destroy(rt);
    return NULL;
  }
  rt->pump_started = true;
  return rt;
}

void ana_realtime_destroy(struct ana_realtime *rt) {
  if (!rt)
    return;
  pthread_mutex_lock(&rt->mu);
  rt->stop = true;
  pthread_cond_signal(&rt->cond);
  pthread_mutex_unlock(&rt->mu);
  if (rt->pump_started)
    pthread_join(rt->pump, NULL);
  /* Whoever is left: the pump is gone, so the list's reference is the last. */
  for (;;) {
    pthread_mutex_lock(&rt->mu);
    struct sub *s = rt->subs, *last = NULL;
    if (s && sub_close_locked(rt, s, ANA_STATUS_UNAVAILABLE, "the server is shutting down"))
      last = sub_unref_locked(s);
    pthread_mutex_unlock(&rt->mu);
    if (!s)
      break;
    sub_end(last);
  }
  pthread_cond_destroy(&rt->cond);
  pthread_mutex_destroy(&rt->mu);
  ana_free(rt);
}

void ana_realtime_stats(struct ana_realtime *rt, struct ana_realtime_stats *out) {
  pthread_mutex_lock(&rt->mu);
  *out = rt->stats;
  pthread_mutex_unlock(&rt->mu);
}
