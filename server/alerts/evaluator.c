/* The alert evaluator: rules' windows in panes of metric accumulators fed
 * by the commit hook, instance states stepped on its own thread, every
 * change written with its history in one local-store transaction, and
 * pushed live to StreamAlerts subscribers. */
#include "ana_alerts.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_metric_acc.h"
#include "ana_notify.h"
#include "ana_proto_walk.h"
#include "analytics/v1/realtime.pb-c.h"
#include "ana_clock.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KIND "alert"
#define QUEUE_MAX 1000000
#define TICK_MS 1000
#define OTHER_KEY "\x1e(other)"
#define HISTORY_SWEEP_MS 600000

struct instance {
  char *key;
  char **vals; /* n_dims */
  bool other;
  struct ana_alert_instance_state st;
};

/* The sliding window of one metric definition and pane length, shared by
 * every rule over it: an event is folded into it once, whatever the number
 * of rules. */
struct paneset {
  struct paneset *next;
  char *key; /* "<account>\x1f<metric id>\x1f<pane ms>\x1f<definition hash>[\x1f-]" */
  char *account;
  struct ana_arena *arena;
  Analytics__V1__Metric *metric;
  struct ana_formula *formula;
  int64_t pane_ms, cur_start;
  struct ana_metric_acc *panes[ANA_ALERT_PANES];
  int64_t pane_start[ANA_ALERT_PANES];
  uint64_t seed_seq;
  char **names; /* the event names its formula counts ("" = any), distinct */
  size_t n_names;
  int refs;
  bool moved;          /* its window moved in this pass */
  struct rule **rules; /* its enabled rules (index_build) */
  size_t n_rules;
};

struct rule {
  struct rule *next;
  char *id, *account;
  struct ana_arena *arena;
  Analytics__V1__Alert *alert;
  Analytics__V1__Metric *metric;
  struct ana_formula *formula;
  struct ana_alert_params p;
  struct paneset *ps; /* a reference */
  struct instance *inst;
  size_t n_inst, cap_inst, n_other;
  uint32_t *slots; /* open addressing by key hash: instance index + 1; 0 empty */
  size_t n_slots;  /* a power of two, at least twice n_inst */
  size_t n_dims;
};

/* Which panesets an event may count in: (account, event name) -> paneset,
 * sorted by key, rebuilt when the rules change; a formula counting any
 * event is under the name "". */
struct index_entry {
  char *key; /* "<account>\x1f<event name>" */
  struct paneset *ps;
};

struct qev {
  struct qev *next;
  char *account;
  struct ana_scanned_event ev;
};

struct sub {
  struct sub *next;
  struct ana_realtime_sub *rs;
  char *account;
  char **ids;
  size_t n_ids;
};

struct ana_alerts {
  struct ana_alerts_options o;
  sqlite3 *conn;
  pthread_t thread;
  bool started;
  /* the hook's queue */
  pthread_mutex_t qmu;
  pthread_cond_t qcond;
  struct qev *head, *tail;
  size_t queued;
  uint64_t dropped;
  char **accounts; /* accounts with rules (never shrinks) */
  size_t n_accounts, cap_accounts;
  bool stop;
  /* the rules (evaluator thread and rule changes) */
  pthread_mutex_t mu;
  struct rule *rules;
  struct paneset *pansets;
  struct index_entry *index;
  size_t n_index;
  bool index_dirty;
  int64_t last_sweep_ms;
  /* subscribers */
  pthread_mutex_t smu;
  struct sub *subs;
  struct ana_alerts_stats stats;
};

static int64_t floor_to(int64_t t, int64_t step) {
  int64_t q = t / step;
  if (t < 0 && q * step != t)
    q--;
  return q * step;
}

/* ------------------------------------------------------------------ */
/* rules and instances */

static void ps_free(struct paneset *ps) {
  if (!ps)
    return;
  for (size_t i = 0; i < ANA_ALERT_PANES; i++)
    ana_metric_acc_destroy(ps->panes[i]);
  for (size_t i = 0; i < ps->n_names; i++)
    ana_free(ps->names[i]);
  ana_free(ps->names);
  ana_free(ps->rules);
  ana_formula_free(ps->formula);
  ana_free(ps->key);
  ana_free(ps->account);
  if (ps->arena)
    ana_arena_destroy(ps->arena);
  ana_free(ps);
}

/* Drops a reference (al->mu held, or ps not shared yet). */
static void ps_release(struct ana_alerts *al, struct paneset *ps) {
  if (!ps || --ps->refs > 0)
    return;
  for (struct paneset **pp = &al->pansets; *pp; pp = &(*pp)->next)
    if (*pp == ps) {
      *pp = ps->next;
      break;
    }
  ps_free(ps);
}

static void rule_free(struct ana_alerts *al, struct rule *r) {
  if (!r)
    return;
  ps_release(al, r->ps);
  for (size_t i = 0; i < r->n_inst; i++) {
    ana_free(r->inst[i].key);
    for (size_t d = 0; r->inst[i].vals && d < r->n_dims; d++)
      ana_free(r->inst[i].vals[d]);
    ana_free(r->inst[i].vals);
  }
  ana_free(r->inst);
  ana_free(r->slots);
  ana_formula_free(r->formula);
  ana_free(r->id);
  ana_free(r->account);
  if (r->arena)
    ana_arena_destroy(r->arena);
  ana_free(r);
}

/* The instance of key (values: n_dims, or NULL to split key). NULL when out
 * of memory. */
static uint64_t key_hash(const char *key) {
  uint64_t h = 1469598103934665603ULL;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++)
    h = (h ^ *p) * 1099511628211ULL;
  return h;
}

/* Rebuilds the slots for at least n instances; false when out of memory. */
static bool slots_grow(struct rule *r, size_t n) {
  size_t want = 16;
  while (want < 2 * n)
    want *= 2;
  if (want <= r->n_slots)
    return true;
  uint32_t *slots = ana_calloc(want, sizeof *slots);
  if (!slots)
    return false;
  for (size_t i = 0; i < r->n_inst; i++) {
    size_t k = (size_t)key_hash(r->inst[i].key) & (want - 1);
    while (slots[k])
      k = (k + 1) & (want - 1);
    slots[k] = (uint32_t)i + 1;
  }
  ana_free(r->slots);
  r->slots = slots;
  r->n_slots = want;
  return true;
}

static struct instance *instance_get(struct ana_alerts *al, struct rule *r, const char *key,
                                     const char *const *values, bool create) {
  bool other = strcmp(key, OTHER_KEY) == 0;
  uint64_t h = key_hash(key);
  size_t slot = 0;
  if (r->n_slots) {
    for (slot = (size_t)h & (r->n_slots - 1); r->slots[slot]; slot = (slot + 1) & (r->n_slots - 1))
      if (strcmp(r->inst[r->slots[slot] - 1].key, key) == 0)
        return &r->inst[r->slots[slot] - 1];
  }
  if (!create)
    return NULL;
  if (!other && r->n_inst - r->n_other >= (size_t)al->o.max_instances)
    return instance_get(al, r, OTHER_KEY, NULL, true);
  if (!r->n_slots || 2 * (r->n_inst + 1) > r->n_slots) {
    if (!slots_grow(r, r->n_inst + 1))
      return NULL;
    for (slot = (size_t)h & (r->n_slots - 1); r->slots[slot]; slot = (slot + 1) & (r->n_slots - 1))
      ;
  }
  if (r->n_inst == r->cap_inst) {
    size_t cap = r->cap_inst ? r->cap_inst * 2 : 4;
    struct instance *n = ana_realloc(r->inst, cap * sizeof *n);
    if (!n)
      return NULL;
    r->inst = n;
    r->cap_inst = cap;
  }
  struct instance *in = &r->inst[r->n_inst];
  memset(in, 0, sizeof *in);
  in->key = ana_strdup(key);
  in->other = other;
  in->vals = ana_calloc(r->n_dims ? r->n_dims : 1, sizeof *in->vals);
  if (!in->key || !in->vals) {
    ana_free(in->key);
    ana_free(in->vals);
    return NULL;
  }
  const char *p = key;
  for (size_t d = 0; d < r->n_dims; d++) {
    if (other) {
      in->vals[d] = ana_strdup(ANA_METRIC_ACC_OTHER);
    } else if (values) {
      in->vals[d] = ana_strdup(values[d]);
    } else {
      const char *e = strchr(p, '\x1f');
      size_t n = e ? (size_t)(e - p) : strlen(p);
      in->vals[d] = ana_malloc(n + 1);
      if (in->vals[d]) {
        memcpy(in->vals[d], p, n);
        in->vals[d][n] = '\0';
      }
      p = e ? e + 1 : p + n;
    }
  }
  in->st.state = ANA_ALERT_OK;
  r->slots[slot] = (uint32_t)r->n_inst + 1;
  r->n_other += other ? 1 : 0;
  r->n_inst++;
  return in;
}

/* Moves the window so that its current pane holds t; drops the panes that
 * left it. Returns whether it moved. */
static bool advance(struct paneset *ps, int64_t t) {
  int64_t cur = floor_to(t, ps->pane_ms);
  if (cur <= ps->cur_start)
    return false;
  ps->cur_start = cur;
  int64_t oldest = cur - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  for (size_t i = 0; i < ANA_ALERT_PANES; i++)
    if (ps->panes[i] && ps->pane_start[i] < oldest) {
      ana_metric_acc_destroy(ps->panes[i]);
      ps->panes[i] = NULL;
    }
  return true;
}

/* Adds ev to its pane: returns its group in *acc, or -1 (outside the
 * window, filtered out, out of memory). */
static int ps_add(struct paneset *ps, const struct ana_scanned_event *ev,
                  struct ana_metric_acc **acc) {
  int64_t oldest = ps->cur_start - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  if (ev->timestamp_ms < oldest || ev->timestamp_ms >= ps->cur_start + ps->pane_ms)
    return -1;
  int64_t start = floor_to(ev->timestamp_ms, ps->pane_ms);
  size_t idx = (size_t)((start / ps->pane_ms) % ANA_ALERT_PANES);
  if (!ps->panes[idx] || ps->pane_start[idx] != start) {
    ana_metric_acc_destroy(ps->panes[idx]);
    struct ana_error err;
    ps->panes[idx] = ana_metric_acc_create(ps->metric, ps->formula, 100000, &err);
    ps->pane_start[idx] = start;
    if (!ps->panes[idx])
      return -1;
  }
  *acc = ps->panes[idx];
  int g = ana_metric_acc_add(ps->panes[idx], ev);
  return g < 0 ? -1 : g;
}

/* The rule's instance of group g of acc (created). */
static struct instance *group_instance(struct ana_alerts *al, struct rule *r,
                                       const struct ana_metric_acc *acc, size_t g) {
  if (ana_metric_acc_group_is_other(acc, g))
    return instance_get(al, r, OTHER_KEY, NULL, true);
  return instance_get(al, r, ana_metric_acc_group_key(acc, g), ana_metric_acc_group_values(acc, g),
                      true);
}

/* The rule's instances of every group in its window. */
static void instances_from_panes(struct ana_alerts *al, struct rule *r) {
  struct paneset *ps = r->ps;
  int64_t oldest = ps->cur_start - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  for (size_t i = 0; i < ANA_ALERT_PANES; i++)
    if (ps->panes[i] && ps->pane_start[i] >= oldest)
      for (size_t g = 0; g < ana_metric_acc_group_count(ps->panes[i]); g++)
        group_instance(al, r, ps->panes[i], g);
}

struct pick_ctx {
  struct rule *r;
};

static bool pick_other(void *ctx, const struct ana_metric_acc *acc, size_t g) {
  struct rule *r = ((struct pick_ctx *)ctx)->r;
  if (ana_metric_acc_group_is_other(acc, g))
    return true;
  struct instance *in = instance_get(NULL, r, ana_metric_acc_group_key(acc, g), NULL, false);
  return !in || in->other;
}

/* The window's value of an instance: returns 1 (value), 0 (no data). */
static int window_value(struct rule *r, struct instance *in, double *out) {
  struct ana_metric_acc *accs[ANA_ALERT_PANES];
  size_t n = 0;
  const struct paneset *ps = r->ps;
  int64_t oldest = ps->cur_start - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  for (size_t i = 0; i < ANA_ALERT_PANES; i++)
    if (ps->panes[i] && ps->pane_start[i] >= oldest && ps->pane_start[i] <= ps->cur_start)
      accs[n++] = ps->panes[i];
  if (n == 0) {
    /* an empty window: the formula over empty aggregates (a count is 0) */
    struct ana_error err;
    struct ana_metric_acc *empty = ana_metric_acc_create(r->metric, r->formula, 1, &err);
    if (!empty)
      return 0;
    int rc = r->n_dims == 0 ? ana_metric_acc_value_merged(&empty, 1, "", NULL, NULL, out) : 0;
    ana_metric_acc_destroy(empty);
    return rc > 0;
  }
  struct pick_ctx pc = {r};
  int rc = ana_metric_acc_value_merged(accs, n, in->other ? NULL : in->key, pick_other, &pc, out);
  return rc > 0;
}

/* ------------------------------------------------------------------ */
/* changes: history, instance state, notifications, live pushes */

struct change {
  struct rule *r;
  struct instance *in;
  struct ana_alert_step step;
  int64_t at;
};

static char *group_json(const struct rule *r, const struct instance *in) {
  json_t *o = json_object();
  for (size_t d = 0; o && d < r->n_dims; d++)
    json_object_set_new(o, r->metric->dimensions[d], json_string(in->vals[d] ? in->vals[d] : ""));
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(o);
  return s;
}

/* Appends "<line>" to a newline-separated list in buf. */
static void add_line(char *buf, size_t size, const char *fmt, const char *a, const char *b) {
  size_t l = strlen(buf);
  if (l + 2 >= size)
    return;
  if (l)
    buf[l++] = '\n';
  snprintf(buf + l, size - l, fmt, a, b);
}

/* The notification step, in the transaction of the state change (entry_id:
 * its history entry): one outbox row per channel the rule names, a type
 * resolving to the account's default channel of that type now. The
 * idempotency key "<alertId>.<entryId>.<channelId>" names the rule, the
 * instance's state change and the channel: stable across retries and
 * restarts (the change and its rows commit together or not at all). Fills
 * channels (delivered to the outbox) and failed ("slack: no channel").
 * Returns how many rows were written. */
static int notify_in_txn(struct ana_alerts *al, const struct rule *r, const struct instance *in,
                         const struct change *c, uint64_t entry_id, const char *text,
                         char *channels, size_t csize, char *failed, size_t fsize) {
  channels[0] = failed[0] = '\0';
  int queued = 0;
  char source[80], title[512], vbuf[32], tbuf[32];
  snprintf(source, sizeof source, "alert:%s", r->id);
  snprintf(title, sizeof title, "[%s] %s: %s", ana_alert_severity_name(r->p.severity),
           r->alert->name, ana_alert_state_name(c->step.to));
  snprintf(vbuf, sizeof vbuf, "%.17g", in->st.value);
  snprintf(tbuf, sizeof tbuf, "%.17g", r->p.threshold);
  struct ana_notify_value vals[3 + 16];
  size_t nv = 0;
  vals[nv++] = (struct ana_notify_value){"value", in->st.has_value ? vbuf : "no data"};
  vals[nv++] = (struct ana_notify_value){"threshold", tbuf};
  vals[nv++] = (struct ana_notify_value){"state", ana_alert_state_name(c->step.to)};
  for (size_t d = 0; d < r->n_dims && d < 16; d++)
    vals[nv++] = (struct ana_notify_value){r->metric->dimensions[d], in->vals[d]};
  for (size_t i = 0; i < r->alert->n_channels; i++) {
    const char *name = r->alert->channels[i];
    char id[40];
    struct ana_error err;
    if (!al->o.notify) {
      add_line(failed, fsize, "%s: %s", name, "no channel");
      continue;
    }
    if (ana_notify_is_channel_type(name)) {
      if (ana_notify_resolve_channel_type(al->o.notify, r->account, name, id, &err) < 0) {
        add_line(failed, fsize, "%s: %s", name, "no channel");
        continue;
      }
    } else {
      snprintf(id, sizeof id, "%s", name);
    }
    char key[201];
    snprintf(key, sizeof key, "%s.%llu.%s", r->id, (unsigned long long)entry_id, id);
    struct ana_notification nt = {
        .account_id = r->account,
        .channel_id = id,
        .source = source,
        .idempotency_key = key,
        .title = title,
        .text = text,
        .severity = ana_alert_severity_name(r->p.severity),
        .values = vals,
        .n_values = nv,
    };
    if (ana_notify_enqueue_in_txn(al->o.notify, al->conn, &nt, NULL, &err) < 0) {
      add_line(failed, fsize, "%s: %s", name, err.message);
      continue;
    }
    add_line(channels, csize, "%s%s", id, "");
    queued++;
  }
  return queued;
}

static void push_entry(struct ana_alerts *al, const struct rule *r, uint64_t entry_id,
                       const Analytics__V1__AlertHistoryEntry *e);

static void build_entry(struct ana_arena *a, const struct rule *r, const struct instance *in,
                        const struct change *c, const char *message,
                        Analytics__V1__AlertHistoryEntry *e) {
  analytics__v1__alert_history_entry__init(e);
  e->alert_id = r->id;
  e->state = (char *)ana_alert_state_name(c->step.to);
  e->previous_state = (char *)ana_alert_state_name(c->step.from);
  e->kind = c->step.changed ? "state" : "notification";
  e->value = in->st.value;
  e->has_value = in->st.has_value;
  e->threshold = r->p.threshold;
  e->severity = (char *)ana_alert_severity_name(r->p.severity);
  e->message = (char *)message;
  e->at = ana_arena_alloc(a, sizeof *e->at);
  if (e->at) {
    google__protobuf__timestamp__init(e->at);
    e->at->seconds = c->at / 1000;
    e->at->nanos = (int32_t)(c->at % 1000) * 1000000;
  }
  if (r->n_dims) {
    e->group = ana_arena_calloc(a, r->n_dims, sizeof *e->group);
    for (size_t d = 0; e->group && d < r->n_dims; d++) {
      Analytics__V1__AlertHistoryEntry__GroupEntry *ge = ana_arena_alloc(a, sizeof *ge);
      if (!ge)
        break;
      analytics__v1__alert_history_entry__group_entry__init(ge);
      ge->key = r->metric->dimensions[d];
      ge->value = in->vals[d];
      e->group[e->n_group++] = ge;
    }
  }
}

static int write_changes(struct ana_alerts *al, struct change *cs, size_t n) {
  if (n == 0)
    return 0;
  sqlite3 *db = al->conn;
  uint64_t *ids = ana_calloc(n, sizeof *ids);
  char(*msgs)[1024] = ana_calloc(n, sizeof *msgs);
  if (!ids || !msgs) {
    ana_free(ids);
    ana_free(msgs);
    return ANA_ERR_NOMEM;
  }
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  sqlite3_stmt *up = NULL, *hist = NULL, *note = NULL;
  int queued = 0;
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db,
                            "UPDATE alert_history SET channels = ?, failed = ? WHERE entry_id = ?",
                            -1, &note, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db,
                            "INSERT OR REPLACE INTO alert_instances (alert_id, group_key, state,"
                            " since, last_notified, notified, value, has_value)"
                            " VALUES (?,?,?,?,?,?,?,?)",
                            -1, &up, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db,
                            "INSERT INTO alert_history (alert_id, account_id, at, kind, state,"
                            " previous_state, value, has_value, threshold, severity, group_json,"
                            " message, channels, failed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            -1, &hist, NULL);
  for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
    struct change *c = &cs[i];
    struct rule *r = c->r;
    struct instance *in = c->in;
    const char *names[16];
    size_t nd = r->n_dims < 16 ? r->n_dims : 16;
    for (size_t d = 0; d < nd; d++)
      names[d] = r->metric->dimensions[d];
    ana_alert_render(r->alert->message, r->alert->name, r->alert->metric,
                     ana_alert_state_name(c->step.to), ana_alert_severity_name(r->p.severity),
                     in->st.has_value, in->st.value, r->p.threshold, names,
                     (const char *const *)in->vals, nd, msgs[i], sizeof msgs[i]);
    sqlite3_reset(up);
    sqlite3_bind_text(up, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(up, 2, in->key, -1, SQLITE_STATIC);
    sqlite3_bind_int(up, 3, (int)in->st.state);
    sqlite3_bind_int64(up, 4, in->st.since_ms);
    sqlite3_bind_int64(up, 5, in->st.last_notified_ms);
    sqlite3_bind_int(up, 6, in->st.notified);
    sqlite3_bind_double(up, 7, in->st.value);
    sqlite3_bind_int(up, 8, in->st.has_value);
    if (sqlite3_step(up) != SQLITE_DONE) {
      rc = SQLITE_ERROR;
      break;
    }
    char channels[1024], failed[2048];
    channels[0] = failed[0] = '\0';
    if (c->step.suppressed)
      snprintf(failed, sizeof failed, "cooldown: not notified");
    char *gj = group_json(r, in);
    sqlite3_reset(hist);
    sqlite3_bind_text(hist, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(hist, 2, r->account, -1, SQLITE_STATIC);
    sqlite3_bind_int64(hist, 3, c->at);
    sqlite3_bind_text(hist, 4, c->step.changed ? "state" : "notification", -1, SQLITE_STATIC);
    sqlite3_bind_text(hist, 5, ana_alert_state_name(c->step.to), -1, SQLITE_STATIC);
    sqlite3_bind_text(hist, 6, ana_alert_state_name(c->step.from), -1, SQLITE_STATIC);
    sqlite3_bind_double(hist, 7, in->st.value);
    sqlite3_bind_int(hist, 8, in->st.has_value);
    sqlite3_bind_double(hist, 9, r->p.threshold);
    sqlite3_bind_text(hist, 10, ana_alert_severity_name(r->p.severity), -1, SQLITE_STATIC);
    sqlite3_bind_text(hist, 11, gj ? gj : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(hist, 12, msgs[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(hist, 13, channels, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(hist, 14, failed, -1, SQLITE_TRANSIENT);
    free(gj);
    if (sqlite3_step(hist) != SQLITE_DONE) {
      rc = SQLITE_ERROR;
      break;
    }
    ids[i] = (uint64_t)sqlite3_last_insert_rowid(db);
    if (c->step.notify && r->alert->n_channels) {
      queued += notify_in_txn(al, r, in, c, ids[i], msgs[i], channels, sizeof channels, failed,
                              sizeof failed);
      sqlite3_reset(note);
      sqlite3_bind_text(note, 1, channels, -1, SQLITE_STATIC);
      sqlite3_bind_text(note, 2, failed, -1, SQLITE_STATIC);
      sqlite3_bind_int64(note, 3, (int64_t)ids[i]);
      if (sqlite3_step(note) != SQLITE_DONE) {
        rc = SQLITE_ERROR;
        break;
      }
    }
  }
  sqlite3_finalize(up);
  sqlite3_finalize(hist);
  sqlite3_finalize(note);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    ANA_ERROR("alerts", "cannot store %zu alert state changes: %s", n, sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  } else {
    if (queued && al->o.notify)
      ana_notify_wake(al->o.notify);
    for (size_t i = 0; i < n; i++) {
      al->stats.transitions++;
      if (cs[i].step.notify)
        al->stats.notifications++;
      struct ana_arena *a = ana_arena_create(4096, 0);
      if (!a)
        continue;
      Analytics__V1__AlertHistoryEntry e;
      build_entry(a, cs[i].r, cs[i].in, &cs[i], msgs[i], &e);
      e.entry_id = ids[i];
      push_entry(al, cs[i].r, ids[i], &e);
      ana_arena_destroy(a);
    }
  }
  ana_free(ids);
  ana_free(msgs);
  return rc == SQLITE_OK ? 0 : ANA_ERR_IO;
}

/* A growing list of changes of one pass. */
struct changes {
  struct change *v;
  size_t n, cap;
};

static void evaluate_with(struct rule *r, struct instance *in, bool has, double v, int64_t now,
                          struct changes *out) {
  struct ana_alert_step step;
  ana_alert_step(&r->p, &in->st, has, v, now, &step);
  if (!step.changed && !step.notify)
    return;
  if (out->n == out->cap) {
    size_t cap = out->cap ? out->cap * 2 : 16;
    struct change *n = ana_realloc(out->v, cap * sizeof *n);
    if (!n)
      return;
    out->v = n;
    out->cap = cap;
  }
  out->v[out->n++] = (struct change){r, in, step, now};
}

static void evaluate(struct rule *r, struct instance *in, int64_t now, struct changes *out) {
  double v = 0;
  bool has = window_value(r, in, &v) == 1;
  evaluate_with(r, in, has, v, now, out);
}

/* ------------------------------------------------------------------ */
/* live subscribers */

static void push_entry(struct ana_alerts *al, const struct rule *r, uint64_t entry_id,
                       const Analytics__V1__AlertHistoryEntry *e) {
  if (!al->o.hub)
    return;
  pthread_mutex_lock(&al->smu);
  struct ana_realtime_msg *m = NULL;
  bool pushed = false;
  for (struct sub *s = al->subs; s; s = s->next) {
    if (strcmp(s->account, r->account) != 0)
      continue;
    bool want = s->n_ids == 0;
    for (size_t i = 0; !want && i < s->n_ids; i++)
      want = strcmp(s->ids[i], r->id) == 0;
    if (!want)
      continue;
    if (!m) {
      m = ana_realtime_msg_create(4096);
      if (!m)
        break;
      struct ana_arena *a = ana_realtime_msg_arena(m);
      Analytics__V1__AlertUpdate *u = ana_arena_alloc(a, sizeof *u);
      Analytics__V1__AlertHistoryEntry *copy = u ? ana_arena_alloc(a, sizeof *copy) : NULL;
      if (!copy) {
        ana_realtime_msg_unref(m);
        m = NULL;
        break;
      }
      /* a deep copy through the wire format keeps it in the message's arena */
      size_t len = protobuf_c_message_get_packed_size(&e->base);
      uint8_t *buf = ana_arena_alloc(a, len ? len : 1);
      Analytics__V1__AlertHistoryEntry *dec = NULL;
      if (buf) {
        protobuf_c_message_pack(&e->base, buf);
        dec = (void *)ana_proto_unpack(&analytics__v1__alert_history_entry__descriptor, &a->pb, buf,
                                       len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
      }
      if (!dec) {
        ana_realtime_msg_unref(m);
        m = NULL;
        break;
      }
      analytics__v1__alert_update__init(u);
      u->sequence = entry_id;
      u->name = r->alert->name;
      u->name = ana_arena_strdup(a, r->alert->name);
      u->entry = dec;
      ana_realtime_msg_set(m, &u->base, 0, entry_id);
    }
    pushed = ana_realtime_push(al->o.hub, s->rs, m) == 0 || pushed;
  }
  pthread_mutex_unlock(&al->smu);
  if (m)
    ana_realtime_msg_unref(m);
  if (pushed)
    ana_realtime_kick(al->o.hub);
}

static void sub_ended(void *ctx, struct ana_realtime_sub *rs) {
  struct ana_alerts *al = ctx;
  pthread_mutex_lock(&al->smu);
  for (struct sub **pp = &al->subs; *pp; pp = &(*pp)->next)
    if ((*pp)->rs == rs) {
      struct sub *s = *pp;
      *pp = s->next;
      ana_free(s);
      break;
    }
  pthread_mutex_unlock(&al->smu);
}

int ana_alerts_subscribe(struct ana_alerts *al, struct ana_call *call, const char *account,
                         char **alert_ids, size_t n) {
  struct sub *s = ana_calloc(1, sizeof *s);
  if (!s)
    return ANA_ERR_NOMEM;
  s->account = (char *)account; /* the call's arena outlives the subscription */
  s->ids = alert_ids;
  s->n_ids = n;
  pthread_mutex_lock(&al->smu);
  s->rs = ana_realtime_subscribe_feed(al->o.hub, call, sub_ended, al);
  if (!s->rs) {
    pthread_mutex_unlock(&al->smu);
    ana_free(s);
    return ANA_ERR_NOMEM;
  }
  s->next = al->subs;
  al->subs = s;
  pthread_mutex_unlock(&al->smu);
  ana_realtime_check_cancelled(al->o.hub, call);
  return 0;
}

/* ------------------------------------------------------------------ */
/* the thread */

static struct rule *find_rule(struct ana_alerts *al, const char *id) {
  for (struct rule *r = al->rules; r; r = r->next)
    if (strcmp(r->id, id) == 0)
      return r;
  return NULL;
}

static int index_cmp(const void *a, const void *b) {
  return strcmp(((const struct index_entry *)a)->key, ((const struct index_entry *)b)->key);
}

static void index_free(struct ana_alerts *al) {
  for (size_t i = 0; i < al->n_index; i++)
    ana_free(al->index[i].key);
  ana_free(al->index);
  al->index = NULL;
  al->n_index = 0;
}

/* Rebuilds the index and each paneset's list of enabled rules (al->mu
 * held); on failure it stays dirty. */
static void index_build(struct ana_alerts *al) {
  index_free(al);
  for (struct paneset *ps = al->pansets; ps; ps = ps->next) {
    ana_free(ps->rules);
    ps->rules = NULL;
    ps->n_rules = 0;
  }
  size_t n = 0;
  for (struct rule *r = al->rules; r; r = r->next)
    if (r->p.enabled)
      r->ps->n_rules++;
  for (struct paneset *ps = al->pansets; ps; ps = ps->next) {
    if (!ps->n_rules)
      continue;
    n += ps->n_names;
    ps->rules = ana_calloc(ps->n_rules, sizeof *ps->rules);
    if (!ps->rules)
      return;
    ps->n_rules = 0;
  }
  for (struct rule *r = al->rules; r; r = r->next)
    if (r->p.enabled)
      r->ps->rules[r->ps->n_rules++] = r;
  al->index = ana_calloc(n ? n : 1, sizeof *al->index);
  if (!al->index)
    return;
  for (struct paneset *ps = al->pansets; ps; ps = ps->next)
    for (size_t i = 0; ps->n_rules && i < ps->n_names; i++) {
      size_t la = strlen(ps->account), ln = strlen(ps->names[i]);
      char *k = ana_malloc(la + ln + 2);
      if (!k) {
        index_free(al);
        return;
      }
      memcpy(k, ps->account, la);
      k[la] = '\x1f';
      memcpy(k + la + 1, ps->names[i], ln + 1);
      al->index[al->n_index++] = (struct index_entry){k, ps};
    }
  qsort(al->index, al->n_index, sizeof *al->index, index_cmp);
  al->index_dirty = false;
}

/* The entries of key: [*first, return value). */
static size_t index_find(const struct ana_alerts *al, const char *key, size_t *first) {
  size_t lo = 0, hi = al->n_index;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(al->index[mid].key, key) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *first = lo;
  hi = al->n_index;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(al->index[mid].key, key) <= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* A group of a paneset that events touched in this pass: its key and
 * dimension values, copied (a pane may be replaced later in the pass). */
struct touched {
  struct paneset *ps;
  uint64_t hash;
  char *key;   /* in the block of vals */
  char **vals; /* n_dims, then the strings and the key: one allocation */
};

struct touched_set {
  struct touched *v;
  size_t n, cap;
  uint32_t *slots; /* index + 1 */
  size_t n_slots;
};

static void touched_fini(struct touched_set *t) {
  for (size_t i = 0; i < t->n; i++)
    ana_free(t->v[i].vals); /* the block holding the values and the key */
  ana_free(t->v);
  ana_free(t->slots);
}

static bool touched_rehash(struct touched_set *t, size_t want) {
  uint32_t *slots = ana_calloc(want, sizeof *slots);
  if (!slots)
    return false;
  for (size_t i = 0; i < t->n; i++) {
    size_t k = (size_t)t->v[i].hash & (want - 1);
    while (slots[k])
      k = (k + 1) & (want - 1);
    slots[k] = (uint32_t)i + 1;
  }
  ana_free(t->slots);
  t->slots = slots;
  t->n_slots = want;
  return true;
}

/* Notes group g of acc in ps as touched (once per pass). */
static void touch(struct touched_set *t, struct paneset *ps, const struct ana_metric_acc *acc,
                  size_t g) {
  const char *key =
      ana_metric_acc_group_is_other(acc, g) ? OTHER_KEY : ana_metric_acc_group_key(acc, g);
  uint64_t h = key_hash(key) ^ ((uint64_t)(uintptr_t)ps * 0x9E3779B97F4A7C15ULL);
  size_t k = 0;
  if (t->n_slots)
    for (k = (size_t)h & (t->n_slots - 1); t->slots[k]; k = (k + 1) & (t->n_slots - 1)) {
      const struct touched *e = &t->v[t->slots[k] - 1];
      if (e->ps == ps && e->hash == h && strcmp(e->key, key) == 0)
        return;
    }
  if (2 * (t->n + 1) > t->n_slots) {
    if (!touched_rehash(t, t->n_slots ? t->n_slots * 2 : 64))
      return;
    for (k = (size_t)h & (t->n_slots - 1); t->slots[k]; k = (k + 1) & (t->n_slots - 1))
      ;
  }
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    struct touched *n = ana_realloc(t->v, cap * sizeof *n);
    if (!n)
      return;
    t->v = n;
    t->cap = cap;
  }
  size_t nd = ps->metric->n_dimensions;
  const char *const *vals = ana_metric_acc_group_values(acc, g);
  size_t len = strlen(key) + 1 + nd * sizeof(char *);
  for (size_t d = 0; vals && d < nd; d++)
    len += strlen(vals[d] ? vals[d] : "") + 1;
  char *block = ana_malloc(len);
  if (!block)
    return;
  struct touched *e = &t->v[t->n];
  e->ps = ps;
  e->hash = h;
  e->vals = (char **)(void *)block;
  char *p = block + nd * sizeof(char *);
  for (size_t d = 0; d < nd; d++) {
    const char *v = vals && vals[d] ? vals[d] : "";
    size_t l = strlen(v) + 1;
    memcpy(p, v, l);
    e->vals[d] = p;
    p += l;
  }
  memcpy(p, key, strlen(key) + 1);
  e->key = p;
  t->slots[k] = (uint32_t)t->n + 1;
  t->n++;
}

/* Folds the events into the panesets that count them (once each); then, for
 * each group they touched, computes its window's value once and steps the
 * instance of every rule over that paneset with it. */
static void process_events(struct ana_alerts *al, struct qev *list, int64_t now,
                           struct changes *cs) {
  if (al->index_dirty)
    index_build(al);
  if (al->index_dirty) {
    ANA_WARN("alerts", "out of memory for the rule index: events not evaluated");
    return;
  }
  struct touched_set t = {0};
  size_t seen = 0;
  for (struct qev *q = list; q; q = q->next) {
    if ((++seen & 1023) == 0 && al->stop)
      break;
    char key[512];
    const char *names[2] = {q->ev.event_name, ""};
    for (size_t w = 0; w < 2; w++) {
      int kl = snprintf(key, sizeof key, "%s\x1f%s", q->account, names[w]);
      if (kl < 0 || (size_t)kl >= sizeof key)
        continue;
      size_t first, end = index_find(al, key, &first);
      for (size_t i = first; i < end; i++) {
        struct paneset *ps = al->index[i].ps;
        if (q->ev.seq <= ps->seed_seq)
          continue;
        struct ana_metric_acc *acc;
        int g = ps_add(ps, &q->ev, &acc);
        if (g < 0)
          continue;
        al->stats.events++;
        touch(&t, ps, acc, (size_t)g);
      }
    }
  }
  /* the instances first (adding one may move a rule's array), then the steps */
  for (size_t i = 0; i < t.n; i++)
    for (size_t k = 0; k < t.v[i].ps->n_rules; k++)
      instance_get(al, t.v[i].ps->rules[k], t.v[i].key, (const char *const *)t.v[i].vals, true);
  for (size_t i = 0; i < t.n; i++) {
    struct paneset *ps = t.v[i].ps;
    bool computed = false, has = false;
    double v = 0;
    for (size_t k = 0; k < ps->n_rules; k++) {
      struct rule *r = ps->rules[k];
      struct instance *in = instance_get(al, r, t.v[i].key, NULL, false);
      if (!in) /* past ALERT_MAX_INSTANCES: the rule's (other) */
        in = instance_get(al, r, OTHER_KEY, NULL, false);
      if (!in)
        continue;
      if (in->other) {
        evaluate(r, in, now, cs);
        continue;
      }
      if (!computed) {
        has = window_value(r, in, &v) == 1;
        computed = true;
      }
      evaluate_with(r, in, has, v, now, cs);
    }
  }
  touched_fini(&t);
}

static void sweep_history(struct ana_alerts *al, int64_t now) {
  if (now - al->last_sweep_ms < HISTORY_SWEEP_MS)
    return;
  al->last_sweep_ms = now;
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(al->conn, "DELETE FROM alert_history WHERE at < ?", -1, &st, NULL) ==
      SQLITE_OK) {
    sqlite3_bind_int64(st, 1, now - (int64_t)al->o.history_days * 86400000LL);
    sqlite3_step(st);
  }
  sqlite3_finalize(st);
}

static void *run(void *arg) {
  struct ana_alerts *al = arg;
  struct changes cs = {0};
  for (;;) {
    pthread_mutex_lock(&al->qmu);
    int64_t wake = ana_clock_wall_ms() + TICK_MS;
    pthread_mutex_lock(&al->mu);
    for (struct rule *r = al->rules; r; r = r->next) {
      if (!r->p.enabled)
        continue;
      if (r->ps->cur_start + r->ps->pane_ms < wake)
        wake = r->ps->cur_start + r->ps->pane_ms;
      for (size_t i = 0; i < r->n_inst; i++) {
        int64_t due = ana_alert_next_due(&r->p, &r->inst[i].st);
        if (due < wake)
          wake = due;
      }
    }
    pthread_mutex_unlock(&al->mu);
    while (!al->head && !al->stop && ana_clock_wall_ms() < wake) {
      int64_t w = wake;
      struct timespec ts = {w / 1000, (long)(w % 1000) * 1000000};
      pthread_cond_timedwait(&al->qcond, &al->qmu, &ts);
    }
    struct qev *list = al->head;
    al->head = al->tail = NULL;
    al->queued = 0;
    bool stop = al->stop;
    pthread_mutex_unlock(&al->qmu);
    if (stop) { /* the events are stored: a restart seeds the windows again */
      while (list) {
        struct qev *n = list->next;
        ana_free(list);
        list = n;
      }
      break;
    }
    int64_t now = ana_clock_wall_ms();
    pthread_mutex_lock(&al->mu);
    cs.n = 0;
    for (struct paneset *ps = al->pansets; ps; ps = ps->next)
      ps->moved = advance(ps, now);
    for (struct rule *r = al->rules; r; r = r->next) {
      if (!r->p.enabled)
        continue;
      for (size_t i = 0; i < r->n_inst; i++)
        if (r->ps->moved || ana_alert_next_due(&r->p, &r->inst[i].st) <= now)
          evaluate(r, &r->inst[i], now, &cs);
    }
    process_events(al, list, now, &cs);
    write_changes(al, cs.v, cs.n);
    sweep_history(al, now);
    pthread_mutex_unlock(&al->mu);
    while (list) {
      struct qev *n = list->next;
      ana_free(list);
      list = n;
    }
    if (stop)
      break;
  }
  ana_free(cs.v);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* the hook */

static char *put_str(char **p, const char *s) {
  size_t n = strlen(s ? s : "") + 1;
  memcpy(*p, s ? s : "", n);
  char *r = *p;
  *p += n;
  return r;
}

static bool has_account(struct ana_alerts *al, const char *account) {
  for (size_t i = 0; i < al->n_accounts; i++)
    if (strcmp(al->accounts[i], account) == 0)
      return true;
  return false;
}

void ana_alerts_on_commit(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_alerts *al = ctx;
  pthread_mutex_lock(&al->qmu);
  bool any = false;
  for (size_t i = 0; i < n; i++) {
    const struct ana_event_record *rec = &records[i];
    if (rec->duplicate || !has_account(al, rec->account_id))
      continue;
    if (al->queued >= QUEUE_MAX) {
      al->dropped++;
      continue;
    }
    size_t len = sizeof(struct qev) + strlen(rec->account_id) + strlen(rec->event_id) +
                 strlen(rec->event_type) + strlen(rec->event_name) +
                 strlen(rec->session_id ? rec->session_id : "") +
                 strlen(rec->properties_json ? rec->properties_json : "{}") + 6;
    struct qev *q = ana_malloc(len);
    if (!q) {
      al->dropped++;
      continue;
    }
    char *p = (char *)(q + 1);
    q->next = NULL;
    q->account = put_str(&p, rec->account_id);
    q->ev.timestamp_ms = rec->timestamp_ms;
    q->ev.event_id = put_str(&p, rec->event_id);
    q->ev.event_type = put_str(&p, rec->event_type);
    q->ev.event_name = put_str(&p, rec->event_name);
    q->ev.session_id = put_str(&p, rec->session_id);
    q->ev.properties_json = put_str(&p, rec->properties_json ? rec->properties_json : "{}");
    q->ev.seq = rec->seq;
    if (al->tail)
      al->tail->next = q;
    else
      al->head = q;
    al->tail = q;
    al->queued++;
    any = true;
  }
  if (any)
    pthread_cond_signal(&al->qcond);
  pthread_mutex_unlock(&al->qmu);
}

/* ------------------------------------------------------------------ */
/* rule changes */

static int note_account(struct ana_alerts *al, const char *account) {
  int rc = 0;
  pthread_mutex_lock(&al->qmu);
  if (!has_account(al, account)) {
    if (al->n_accounts == al->cap_accounts) {
      size_t cap = al->cap_accounts ? al->cap_accounts * 2 : 8;
      char **n = ana_realloc(al->accounts, cap * sizeof *n);
      if (n) {
        al->accounts = n;
        al->cap_accounts = cap;
      }
    }
    char *copy = al->n_accounts < al->cap_accounts ? ana_strdup(account) : NULL;
    if (copy)
      al->accounts[al->n_accounts++] = copy;
    else
      rc = ANA_ERR_NOMEM;
  }
  pthread_mutex_unlock(&al->qmu);
  sqlite3_stmt *st = NULL;
  pthread_mutex_lock(&al->mu);
  if (sqlite3_prepare_v2(al->conn, "INSERT OR IGNORE INTO alert_accounts VALUES (?)", -1, &st,
                         NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
    sqlite3_step(st);
  }
  sqlite3_finalize(st);
  pthread_mutex_unlock(&al->mu);
  return rc;
}

struct seed_ctx {
  struct paneset *ps;
  uint64_t upto;
};

static int seed_one(void *ctx, const struct ana_scanned_event *ev) {
  struct seed_ctx *s = ctx;
  struct ana_metric_acc *acc;
  if (ev->seq <= s->upto)
    ps_add(s->ps, ev, &acc);
  return 0;
}

static int seed_after(void *ctx, const struct ana_scanned_event *ev) {
  struct seed_ctx *s = ctx;
  struct ana_metric_acc *acc;
  ps_add(s->ps, ev, &acc);
  return 0;
}

/* The key of r's paneset: the account, the metric's id and definition, the
 * pane length; a disabled rule's is its own (never fed). */
static char *ps_key(const struct rule *r, int64_t pane_ms) {
  size_t len = protobuf_c_message_get_packed_size(&r->metric->base);
  uint8_t *buf = ana_malloc(len ? len : 1);
  if (!buf)
    return NULL;
  protobuf_c_message_pack(&r->metric->base, buf);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++)
    h = (h ^ buf[i]) * 1099511628211ULL;
  ana_free(buf);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s\x1f%s\x1f%lld\x1f%016llx%s%s", r->account,
           r->metric->metric_id ? r->metric->metric_id : "", (long long)pane_ms,
           (unsigned long long)h, r->p.enabled ? "" : "\x1f-", r->p.enabled ? "" : r->id);
  return ana_strdup(tmp);
}

/* A new paneset for r, seeded from the stored events up to upto_out (the
 * events committed later come through the hook or seed_after). */
static struct paneset *ps_create(struct ana_alerts *al, struct rule *r, const char *key,
                                 int64_t pane_ms, int64_t now, uint64_t *upto_out,
                                 struct ana_error *err) {
  struct paneset *ps = ana_calloc(1, sizeof *ps);
  if (!ps) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  ps->refs = 1;
  ps->pane_ms = pane_ms;
  ps->key = ana_strdup(key);
  ps->account = ana_strdup(r->account);
  ps->arena = ana_arena_create(8192, 0);
  if (!ps->key || !ps->account || !ps->arena) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if (al->o.resolve(r->account, r->alert->metric, ps->arena, &ps->metric, &ps->formula, err) < 0)
    goto fail;
  size_t nterms = ana_formula_term_count(ps->formula);
  ps->names = ana_calloc(nterms ? nterms : 1, sizeof *ps->names);
  if (!ps->names) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < nterms; i++) {
    const struct ana_agg_term *term = ana_formula_term(ps->formula, i);
    const char *name = term && term->event_name ? term->event_name : "";
    bool seen = false;
    for (size_t k = 0; k < ps->n_names && !seen; k++)
      seen = strcmp(ps->names[k], name) == 0;
    if (seen)
      continue;
    if (!(ps->names[ps->n_names] = ana_strdup(name))) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto fail;
    }
    ps->n_names++;
  }
  uint64_t upto = 0;
  if (al->o.store_ops->last_seq(al->o.store, &upto, err) < 0)
    goto fail;
  advance(ps, now);
  struct seed_ctx sc = {ps, upto};
  int64_t from = ps->cur_start - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  if (r->p.enabled &&
      al->o.store_ops->scan(al->o.store, r->account, from, ps->cur_start + ps->pane_ms, NULL, 0,
                            seed_one, &sc, err) < 0)
    goto fail;
  *upto_out = upto;
  return ps;
fail:
  ps_free(ps);
  return NULL;
}

/* Restores the persisted instances of r. */
static void restore_instances(struct ana_alerts *al, struct rule *r) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(al->conn,
                         "SELECT group_key, state, since, last_notified, notified, value,"
                         " has_value FROM alert_instances WHERE alert_id = ?",
                         -1, &st, NULL) != SQLITE_OK)
    return;
  sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *key = (const char *)sqlite3_column_text(st, 0);
    struct instance *in = instance_get(al, r, key ? key : "", NULL, true);
    if (!in)
      continue;
    in->st.state = (enum ana_alert_state)sqlite3_column_int(st, 1);
    in->st.since_ms = sqlite3_column_int64(st, 2);
    in->st.last_notified_ms = sqlite3_column_int64(st, 3);
    in->st.notified = sqlite3_column_int(st, 4) != 0;
    in->st.value = sqlite3_column_double(st, 5);
    in->st.has_value = sqlite3_column_int(st, 6) != 0;
  }
  sqlite3_finalize(st);
}

int ana_alerts_put(struct ana_alerts *al, const Analytics__V1__Alert *a, struct ana_error *err) {
  struct rule *r = ana_calloc(1, sizeof *r);
  if (!r)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  r->arena = ana_arena_create(8192, 0);
  r->id = ana_strdup(a->alert_id);
  r->account = ana_strdup(a->account_id);
  int rc = ANA_ERR_NOMEM;
  if (!r->arena || !r->id || !r->account) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  size_t len = protobuf_c_message_get_packed_size(&a->base);
  uint8_t *buf = ana_arena_alloc(r->arena, len ? len : 1);
  if (buf) {
    protobuf_c_message_pack(&a->base, buf);
    r->alert = (void *)ana_proto_unpack(&analytics__v1__alert__descriptor, &r->arena->pb, buf, len,
                                        ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  }
  if (!r->alert) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if ((rc = ana_alert_rule_check(r->alert, &r->p, err)) < 0)
    goto fail;
  if ((rc = al->o.resolve(r->account, r->alert->metric, r->arena, &r->metric, &r->formula, err)) <
      0)
    goto fail;
  r->n_dims = r->metric->n_dimensions;
  int64_t pane_ms = r->p.window_ms / ANA_ALERT_PANES;
  if (pane_ms < 1)
    pane_ms = 1;
  if ((rc = note_account(al, r->account)) < 0) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  char *key = ps_key(r, pane_ms);
  if (!key) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  int64_t now = ana_clock_wall_ms();
  /* A window the rules over the same metric and pane length keep already
   * is shared (it has seen every event since it was seeded)... */
  pthread_mutex_lock(&al->mu);
  for (struct paneset *ps = al->pansets; ps; ps = ps->next)
    if (strcmp(ps->key, key) == 0) {
      ps->refs++;
      r->ps = ps;
      break;
    }
  if (!r->ps) {
    /* ... otherwise a new one is seeded from the stored events up to a
     * commit sequence number, then (with the evaluator held) from what was
     * committed since: from there on it sees every later event (the account
     * is noted). */
    pthread_mutex_unlock(&al->mu);
    uint64_t upto = 0;
    struct paneset *ps = ps_create(al, r, key, pane_ms, now, &upto, err);
    if (!ps) {
      ana_free(key);
      rc = ANA_ERR_IO;
      goto fail;
    }
    pthread_mutex_lock(&al->mu);
    uint64_t upto2 = upto;
    struct ana_error e2;
    struct seed_ctx sc = {ps, upto};
    if (r->p.enabled && al->o.store_ops->last_seq(al->o.store, &upto2, &e2) == 0 && upto2 > upto)
      al->o.store_ops->scan_seq(al->o.store, r->account, upto, upto2, seed_after, &sc, &e2);
    ps->seed_seq = upto2;
    ps->next = al->pansets;
    al->pansets = ps;
    r->ps = ps;
  }
  ana_free(key);
  struct rule *old = NULL;
  for (struct rule **pp = &al->rules; *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->id, r->id) == 0) {
      old = *pp;
      *pp = old->next;
      break;
    }
  rule_free(al, old);
  restore_instances(al, r);
  if (r->n_dims == 0)
    instance_get(al, r, "", NULL, true);
  instances_from_panes(al, r);
  struct changes cs = {0};
  for (size_t i = 0; r->p.enabled && i < r->n_inst; i++)
    evaluate(r, &r->inst[i], now, &cs);
  r->next = al->rules;
  al->rules = r;
  al->index_dirty = true;
  write_changes(al, cs.v, cs.n);
  ana_free(cs.v);
  pthread_mutex_unlock(&al->mu);
  pthread_cond_signal(&al->qcond);
  return 0;
fail:
  rule_free(al, r);
  return rc < 0 ? rc : ANA_ERR_INVALID;
}

void ana_alerts_remove(struct ana_alerts *al, const char *account, const char *alert_id) {
  (void)account;
  pthread_mutex_lock(&al->mu);
  for (struct rule **pp = &al->rules; *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->id, alert_id) == 0) {
      struct rule *r = *pp;
      *pp = r->next;
      rule_free(al, r);
      al->index_dirty = true;
      break;
    }
  static const char *const sql[] = {"DELETE FROM alert_instances WHERE alert_id = ?",
                                    "DELETE FROM alert_history WHERE alert_id = ?"};
  for (size_t i = 0; i < 2; i++) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(al->conn, sql[i], -1, &st, NULL) == SQLITE_OK) {
      sqlite3_bind_text(st, 1, alert_id, -1, SQLITE_STATIC);
      sqlite3_step(st);
    }
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&al->mu);
}

void ana_alerts_counts(struct ana_alerts *al, const char *alert_id, int counts[4]) {
  memset(counts, 0, 4 * sizeof *counts);
  pthread_mutex_lock(&al->mu);
  struct rule *r = find_rule(al, alert_id);
  for (size_t i = 0; r && i < r->n_inst; i++)
    if ((unsigned)r->inst[i].st.state < 4)
      counts[r->inst[i].st.state]++;
  pthread_mutex_unlock(&al->mu);
}

/* ------------------------------------------------------------------ */
/* history */

static char *col_text(struct ana_arena *a, sqlite3_stmt *st, int i) {
  const char *s = (const char *)sqlite3_column_text(st, i);
  return ana_arena_strdup(a, s ? s : "");
}

static void split_lines(struct ana_arena *a, char *text, char ***out, size_t *n) {
  *n = 0;
  if (!text || !*text)
    return;
  size_t cap = 1;
  for (char *p = text; *p; p++)
    cap += *p == '\n';
  *out = ana_arena_calloc(a, cap, sizeof **out);
  if (!*out)
    return;
  char *save = NULL;
  for (char *t = strtok_r(text, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
    (*out)[(*n)++] = t;
}

/* The history and the delivery log as one list, newest first: (at, k, id)
 * orders it (k 0 a state change, id its entry; k 1 an attempt, id outbox
 * row * 1000 + attempt). */
#define HISTORY_COLS                                                                               \
  "at, k, id, kind, state, previous_state, value, has_value, threshold, severity, group_json,"     \
  " message, channels, failed, channel_id, ikey, attempt, status, error, duration_ms"
#define HISTORY_STATES                                                                             \
  "SELECT at, 0 AS k, entry_id AS id, kind, state, previous_state, value, has_value, threshold,"   \
  " severity, group_json, message, channels, failed, '' AS channel_id, '' AS ikey, 0 AS attempt,"  \
  " 0 AS status, '' AS error, 0 AS duration_ms FROM alert_history"                                 \
  " WHERE alert_id = ?1 AND account_id = ?2"
#define HISTORY_DELIVERIES                                                                         \
  " UNION ALL SELECT a.at, 1, a.outbox_id * 1000 + a.attempt, 'delivery', a.outcome, o.state, 0,"  \
  " 0, 0, '', '{}', '', CASE a.outcome WHEN 'delivered' THEN o.channel_id ELSE '' END,"            \
  " CASE a.outcome WHEN 'delivered' THEN '' ELSE o.channel_id || ': ' || a.error END,"             \
  " o.channel_id, o.idempotency_key, a.attempt, a.status, a.error, a.duration_ms"                  \
  " FROM notify_outbox o JOIN notify_attempts a ON a.outbox_id = o.id"                             \
  " WHERE o.account_id = ?2 AND o.source = ?8"
#define HISTORY_WHERE                                                                              \
  " WHERE (at, k, id) < (?3, ?9, ?10) AND at >= ?4 AND at < ?5"                                    \
  " AND (?6 = '' OR state = ?6 OR kind = ?6) ORDER BY at DESC, k DESC, id DESC LIMIT ?7"

int ana_alerts_history(struct ana_alerts *al, const char *account, const char *alert_id,
                       const char *page_token, int64_t from_ms, int64_t to_ms, const char *state,
                       int limit, struct ana_arena *arena, Analytics__V1__AlertHistoryEntry ***out,
                       char **next_token, struct ana_error *err) {
  long long t_at = INT64_MAX, t_k = 1, t_id = INT64_MAX;
  *next_token = NULL;
  if (page_token && *page_token) {
    int used = 0;
    if (sscanf(page_token, "%lld.%lld.%lld%n", &t_at, &t_k, &t_id, &used) != 3 ||
        page_token[used] != '\0' || (t_k != 0 && t_k != 1))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "pageToken: not a token of this list");
  }
  *out = ana_arena_calloc(arena, (size_t)limit + 1, sizeof **out);
  if (!*out)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  sqlite3 *db = ana_local_db_acquire_reader(al->o.db);
  sqlite3_stmt *st = NULL;
  int n = 0;
  const char *sql = al->o.notify ? "SELECT " HISTORY_COLS
                                   " FROM (" HISTORY_STATES HISTORY_DELIVERIES ")" HISTORY_WHERE
                                 : "SELECT " HISTORY_COLS " FROM (" HISTORY_STATES
                                   ")" HISTORY_WHERE;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "alert history: %s", sqlite3_errmsg(db));
    ana_local_db_release_reader(al->o.db, db);
    return ANA_ERR_IO;
  }
  char source[80];
  snprintf(source, sizeof source, "alert:%s", alert_id);
  sqlite3_bind_text(st, 1, alert_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, account, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, t_at);
  sqlite3_bind_int64(st, 4, from_ms);
  sqlite3_bind_int64(st, 5, to_ms);
  sqlite3_bind_text(st, 6, state ? state : "", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 7, limit + 1);
  if (al->o.notify)
    sqlite3_bind_text(st, 8, source, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 9, t_k);
  sqlite3_bind_int64(st, 10, t_id);
  int64_t last_at = 0, last_k = 0, last_id = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    if (n == limit) {
      *next_token = ana_arena_alloc(arena, 72);
      if (*next_token)
        snprintf(*next_token, 72, "%lld.%lld.%lld", (long long)last_at, (long long)last_k,
                 (long long)last_id);
      break;
    }
    Analytics__V1__AlertHistoryEntry *e = ana_arena_alloc(arena, sizeof *e);
    if (!e)
      break;
    analytics__v1__alert_history_entry__init(e);
    e->alert_id = ana_arena_strdup(arena, alert_id);
    int64_t at = sqlite3_column_int64(st, 0);
    last_at = at;
    last_k = sqlite3_column_int64(st, 1);
    last_id = sqlite3_column_int64(st, 2);
    e->entry_id = last_k == 0 ? (uint64_t)last_id : 0;
    e->at = ana_arena_alloc(arena, sizeof *e->at);
    if (e->at) {
      google__protobuf__timestamp__init(e->at);
      e->at->seconds = at / 1000;
      e->at->nanos = (int32_t)(at % 1000) * 1000000;
    }
    e->kind = col_text(arena, st, 3);
    e->state = col_text(arena, st, 4);
    e->previous_state = col_text(arena, st, 5);
    e->value = sqlite3_column_double(st, 6);
    e->has_value = sqlite3_column_int(st, 7) != 0;
    e->threshold = sqlite3_column_double(st, 8);
    e->severity = col_text(arena, st, 9);
    const char *gj = (const char *)sqlite3_column_text(st, 10);
    json_t *g = gj ? json_loads(gj, 0, NULL) : NULL;
    if (json_is_object(g) && json_object_size(g)) {
      e->group = ana_arena_calloc(arena, json_object_size(g), sizeof *e->group);
      const char *k;
      json_t *v;
      json_object_foreach(g, k, v) {
        Analytics__V1__AlertHistoryEntry__GroupEntry *ge = ana_arena_alloc(arena, sizeof *ge);
        if (!ge || !e->group)
          break;
        analytics__v1__alert_history_entry__group_entry__init(ge);
        ge->key = ana_arena_strdup(arena, k);
        ge->value = ana_arena_strdup(arena, json_string_value(v) ? json_string_value(v) : "");
        e->group[e->n_group++] = ge;
      }
    }
    json_decref(g);
    e->message = col_text(arena, st, 11);
    split_lines(arena, col_text(arena, st, 12), &e->notified_channels, &e->n_notified_channels);
    split_lines(arena, col_text(arena, st, 13), &e->failed_channels, &e->n_failed_channels);
    e->channel_id = col_text(arena, st, 14);
    e->idempotency_key = col_text(arena, st, 15);
    e->attempt = sqlite3_column_int(st, 16);
    e->status_code = sqlite3_column_int(st, 17);
    e->error = col_text(arena, st, 18);
    e->duration_ms = sqlite3_column_int64(st, 19);
    (*out)[n++] = e;
  }
  sqlite3_finalize(st);
  ana_local_db_release_reader(al->o.db, db);
  return n;
}

/* ------------------------------------------------------------------ */
/* life cycle */

struct ana_alerts *ana_alerts_create(const struct ana_alerts_options *o, struct ana_error *err) {
  struct ana_alerts *al = ana_calloc(1, sizeof *al);
  if (!al) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  al->o = *o;
  if (al->o.max_instances <= 0)
    al->o.max_instances = 1000;
  if (al->o.history_days <= 0)
    al->o.history_days = 90;
  pthread_mutex_init(&al->qmu, NULL);
  pthread_mutex_init(&al->mu, NULL);
  pthread_mutex_init(&al->smu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_cond_init(&al->qcond, &ca);
  pthread_condattr_destroy(&ca);
  al->conn = ana_local_db_connect(o->db, err);
  if (!al->conn)
    goto fail;
  char *msg = NULL;
  if (sqlite3_exec(al->conn,
                   "CREATE TABLE IF NOT EXISTS alert_accounts (account_id TEXT PRIMARY KEY)"
                   " WITHOUT ROWID;"
                   "CREATE TABLE IF NOT EXISTS alert_instances ("
                   "  alert_id TEXT NOT NULL, group_key TEXT NOT NULL, state INTEGER NOT NULL,"
                   "  since INTEGER NOT NULL, last_notified INTEGER NOT NULL,"
                   "  notified INTEGER NOT NULL, value REAL NOT NULL, has_value INTEGER NOT NULL,"
                   "  PRIMARY KEY (alert_id, group_key)) WITHOUT ROWID;"
                   "CREATE TABLE IF NOT EXISTS alert_history ("
                   "  entry_id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL,"
                   "  account_id TEXT NOT NULL, at INTEGER NOT NULL, kind TEXT NOT NULL,"
                   "  state TEXT NOT NULL, previous_state TEXT NOT NULL, value REAL NOT NULL,"
                   "  has_value INTEGER NOT NULL, threshold REAL NOT NULL,"
                   "  severity TEXT NOT NULL, group_json TEXT NOT NULL, message TEXT NOT NULL,"
                   "  channels TEXT NOT NULL, failed TEXT NOT NULL);"
                   "CREATE INDEX IF NOT EXISTS alert_history_by_alert"
                   "  ON alert_history(alert_id, entry_id);"
                   "CREATE INDEX IF NOT EXISTS alert_history_by_time ON alert_history(at);",
                   NULL, NULL, &msg) != SQLITE_OK) {
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "alerts: cannot create tables: %s",
                  msg ? msg : "error");
    sqlite3_free(msg);
    goto fail;
  }
  if (pthread_create(&al->thread, NULL, run, al) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "alerts: cannot start the evaluator thread");
    goto fail;
  }
  al->started = true;
  return al;
fail:
  ana_alerts_destroy(al);
  return NULL;
}

struct load_ctx {
  char last[64];
  int n;
  Analytics__V1__Alert *got[100];
};

/* Keeps the page's rules: they are loaded after the catalog call returns
 * (loading one reads the catalog again). */
static int load_one(void *ctx, const struct ana_catalog_object *o) {
  struct load_ctx *lc = ctx;
  snprintf(lc->last, sizeof lc->last, "%s", o->id);
  lc->got[lc->n++] = (void *)ana_proto_unpack(&analytics__v1__alert__descriptor, NULL, o->body,
                                              o->body_len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  return lc->n == 100;
}

void ana_alerts_load_all(struct ana_alerts *al) {
  sqlite3_stmt *st = NULL;
  char **accounts = NULL;
  size_t n = 0, cap = 0;
  if (sqlite3_prepare_v2(al->conn, "SELECT account_id FROM alert_accounts", -1, &st, NULL) ==
      SQLITE_OK)
    while (sqlite3_step(st) == SQLITE_ROW) {
      if (n == cap) {
        cap = cap ? cap * 2 : 8;
        char **nn = ana_realloc(accounts, cap * sizeof *nn);
        if (!nn)
          break;
        accounts = nn;
      }
      accounts[n++] = ana_strdup((const char *)sqlite3_column_text(st, 0));
    }
  sqlite3_finalize(st);
  for (size_t i = 0; i < n; i++) {
    struct load_ctx lc = {"", 0, {0}};
    struct ana_error err;
    do {
      lc.n = 0;
      if (accounts[i] && al->o.catalog_ops->list(al->o.catalog, KIND, accounts[i], lc.last, 100,
                                                 load_one, &lc, &err) < 0)
        break;
      for (int k = 0; k < lc.n; k++) {
        if (!lc.got[k])
          continue;
        if (ana_alerts_put(al, lc.got[k], &err) < 0)
          ANA_WARN("alerts", "alert %s not evaluated: %s", lc.got[k]->alert_id, err.message);
        protobuf_c_message_free_unpacked(&lc.got[k]->base, NULL);
      }
    } while (lc.n == 100);
    ana_free(accounts[i]);
  }
  ana_free(accounts);
}

void ana_alerts_destroy(struct ana_alerts *al) {
  if (!al)
    return;
  if (al->started) {
    pthread_mutex_lock(&al->qmu);
    al->stop = true;
    pthread_cond_signal(&al->qcond);
    pthread_mutex_unlock(&al->qmu);
    pthread_join(al->thread, NULL);
  }
  index_free(al);
  while (al->rules) {
    struct rule *r = al->rules;
    al->rules = r->next;
    rule_free(al, r);
  }
  while (al->pansets) {
    struct paneset *ps = al->pansets;
    al->pansets = ps->next;
    ps_free(ps);
  }
  while (al->head) {
    struct qev *q = al->head;
    al->head = q->next;
    ana_free(q);
  }
  for (size_t i = 0; i < al->n_accounts; i++)
    ana_free(al->accounts[i]);
  ana_free(al->accounts);
  while (al->subs) {
    struct sub *s = al->subs;
    al->subs = s->next;
    ana_free(s);
  }
  if (al->conn)
    sqlite3_close(al->conn);
  pthread_mutex_destroy(&al->qmu);
  pthread_mutex_destroy(&al->mu);
  pthread_mutex_destroy(&al->smu);
  pthread_cond_destroy(&al->qcond);
  ana_free(al);
}

void ana_alerts_stats(struct ana_alerts *al, struct ana_alerts_stats *out) {
  pthread_mutex_lock(&al->mu);
  *out = al->stats;
  pthread_mutex_unlock(&al->mu);
}
