/* The alert evaluator: rules' windows in panes of metric accumulators fed
 * by the commit hook, instance states stepped on its own thread, every
 * change written with its history in one local-store transaction, and
 * pushed live to StreamAlerts subscribers. */
#include "ana_alerts.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_metric_acc.h"
#include "ana_notify.h"
#include "ana_prom.h"
#include "ana_proto_walk.h"
#include "analytics/v1/realtime.pb-c.h"
#include "ana_clock.h"
#include "ana_local_db.h"
#include "ana_timestamp.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KIND "alert"
#define TICK_MS 1000
#define OTHER_KEY "\x1e(other)"
#define HISTORY_SWEEP_MS 600000

/* A string-keyed hash table (open addressing, linear probing, deletion by
 * shifting back): the keys are borrowed from the values. */
struct smap_slot {
  uint64_t hash;
  const char *key; /* NULL: empty */
  void *val;
};

struct smap {
  struct smap_slot *v;
  size_t n, cap; /* cap a power of two, at least twice n */
};

static uint64_t key_hash(const char *key) {
  uint64_t h = 1469598103934665603ULL;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++)
    h = (h ^ *p) * 1099511628211ULL;
  return h;
}

static struct smap_slot *smap_find(const struct smap *m, const char *key) {
  if (!m->cap)
    return NULL;
  uint64_t h = key_hash(key);
  for (size_t k = (size_t)h & (m->cap - 1); m->v[k].key; k = (k + 1) & (m->cap - 1))
    if (m->v[k].hash == h && strcmp(m->v[k].key, key) == 0)
      return &m->v[k];
  return NULL;
}

static void *smap_get(const struct smap *m, const char *key) {
  struct smap_slot *s = smap_find(m, key);
  return s ? s->val : NULL;
}

/* Adds key (not in m yet; borrowed). Returns false when out of memory. */
static bool smap_put(struct smap *m, const char *key, void *val) {
  if (2 * (m->n + 1) > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct smap_slot *v = ana_calloc(cap, sizeof *v);
    if (!v)
      return false;
    for (size_t i = 0; i < m->cap; i++)
      if (m->v[i].key) {
        size_t k = (size_t)m->v[i].hash & (cap - 1);
        while (v[k].key)
          k = (k + 1) & (cap - 1);
        v[k] = m->v[i];
      }
    ana_free(m->v);
    m->v = v;
    m->cap = cap;
  }
  uint64_t h = key_hash(key);
  size_t k = (size_t)h & (m->cap - 1);
  while (m->v[k].key)
    k = (k + 1) & (m->cap - 1);
  m->v[k] = (struct smap_slot){h, key, val};
  m->n++;
  return true;
}

static void smap_del(struct smap *m, const char *key) {
  struct smap_slot *s = smap_find(m, key);
  if (!s)
    return;
  size_t mask = m->cap - 1, i = (size_t)(s - m->v);
  for (size_t j = (i + 1) & mask; m->v[j].key; j = (j + 1) & mask) {
    size_t home = (size_t)m->v[j].hash & mask;
    bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (!stays) {
      m->v[i] = m->v[j];
      i = j;
    }
  }
  m->v[i].key = NULL;
  m->n--;
}

static void smap_fini(struct smap *m) {
  ana_free(m->v);
  m->v = NULL;
  m->n = m->cap = 0;
}

/* An instance of a rule: r->inst[ii]. */
struct active {
  struct rule *r;
  size_t ii;
};

/* Rules by threshold, a binary heap on sign * threshold: the rules an
 * event's value v may make breach are those at or below sign * v, found by
 * walking down from the root, without looking at the others. */
struct theap {
  struct rule **v;
  size_t n, cap;
  int sign;
};

struct instance {
  char *key;
  char **vals; /* n_dims */
  bool other;
  int pg; /* its group of the paneset, or -1 */
  struct ana_alert_instance_state st;
};

/* A group (dimension values) a paneset has seen: the rules' instances of
 * it are found by its number, its window's value is computed once per
 * pass. */
struct pgroup {
  char *key;   /* in the block of vals */
  char **vals; /* n_dims, then the strings and the key: one allocation */
  bool other;
  uint64_t touched; /* the pass that last noted it */
  uint64_t valued;  /* the generation of value and has */
  bool has;
  double value;
  uint64_t epoch;     /* every rule of ps->epoch has its instance */
  struct active *act; /* the instances of it pending or firing */
  size_t n_act, cap_act;
};

/* The sliding window of one metric definition and pane length, shared by
 * every rule over it: an event is folded into it once, whatever the number
 * of rules. */
struct paneset {
  struct paneset *prev, *next;
  char *key; /* "<account>\x1f<metric id>\x1f<pane ms>\x1f<definition hash>[\x1f-<id>]" */
  char *account;
  struct ana_arena *arena;
  Analytics__V1__Metric *metric;
  struct ana_formula *formula;
  int64_t pane_ms, cur_start;
  struct ana_metric_acc *panes[ANA_ALERT_PANES];
  int64_t pane_start[ANA_ALERT_PANES];
  uint32_t *pane_pg[ANA_ALERT_PANES]; /* a pane's group -> pgroup + 1; 0 not known yet */
  size_t n_pane_pg[ANA_ALERT_PANES];
  uint64_t seed_seq;
  char **names; /* the event names its formula counts ("" = any), distinct */
  char **ikeys; /* "<account>\x1f<name>" of each name: its index keys */
  size_t n_names;
  int refs;
  bool indexed;        /* its names are in the index (it has enabled rules) */
  struct rule **rules; /* its enabled rules */
  size_t n_rules, cap_rules;
  struct theap up;     /* those with op > or >= (sign 1) */
  struct theap down;   /* those with op < or <= (sign -1) */
  struct theap any;    /* those with op == or != (kept unordered) */
  uint64_t epoch;      /* counts the rules attached */
  size_t n_with_other; /* rules with an "(other)" instance: every rule steps */
  size_t n_unmapped;   /* instances of no group (restored past its limit) */
  size_t bpos;         /* in al->bheap; SIZE_MAX: not there */
  struct pgroup *groups;
  size_t n_groups, cap_groups;
  struct smap group_map; /* key -> pgroup + 1 */
  int other_pg;          /* -1: none yet */
};

struct rule {
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
  size_t n_unmapped; /* its instances of no group of the paneset */
  uint32_t *by_pg;   /* pgroup of its paneset -> instance index + 1; 0 not known yet */
  size_t n_by_pg;
  size_t ps_slot;  /* its place in ps->rules; SIZE_MAX: not there */
  size_t tpos;     /* its place in its paneset's theap */
  int64_t due;     /* at or before its instances' earliest due step; INT64_MAX none */
  size_t heap_pos; /* in al->heap; SIZE_MAX: not there */
};

/* The panesets an event of an account and name may count in; a formula
 * counting any event is under the name "". */
struct index_list {
  char *key; /* "<account>\x1f<event name>" */
  struct paneset **v;
  size_t n, cap;
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

struct touched {
  struct paneset *ps;
  int pg;
};

struct ana_alerts {
  struct ana_alerts_options o;
  struct ana_local_conn *lconn;   /* its transactions, which the outbox joins */
  struct ana_local_alerts *state; /* its tables, on lconn */
  pthread_t thread;
  bool started;
  /* the hook's queue */
  pthread_mutex_t qmu;
  pthread_cond_t qcond;
  struct qev *head, *tail;
  size_t queued;
  struct ana_prom_counter dropped; /* events the full queue refused */
  uint64_t dropped_logged;         /* the evaluator's thread's: as last logged */
  bool metrics_registered;
  struct smap accounts; /* accounts with rules (never shrinks): key -> the key */
  bool stop;
  /* the rules (evaluator thread and rule changes) */
  pthread_mutex_t mu;
  struct smap rules;   /* id -> rule */
  struct smap pansets; /* key -> paneset */
  struct paneset *ps_list;
  struct smap index;  /* "<account>\x1f<name>" -> index_list */
  struct rule **heap; /* rules with a due step, earliest first */
  size_t n_heap, cap_heap;
  struct paneset **bheap; /* panesets with rules, earliest end of current pane first */
  size_t n_bheap, cap_bheap;
  uint64_t pass, generation;
  struct touched *touched; /* the groups of a pass's events */
  size_t n_touched, cap_touched;
  struct rule **taken; /* the rules of a pass's due steps */
  size_t cap_taken;
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
/* due steps: a binary heap of rules by their due time */

static void heap_set(struct ana_alerts *al, size_t i, struct rule *r) {
  al->heap[i] = r;
  r->heap_pos = i;
}

static void heap_up(struct ana_alerts *al, size_t i) {
  struct rule *r = al->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (al->heap[parent]->due <= r->due)
      break;
    heap_set(al, i, al->heap[parent]);
    i = parent;
  }
  heap_set(al, i, r);
}

static void heap_down(struct ana_alerts *al, size_t i) {
  struct rule *r = al->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= al->n_heap)
      break;
    if (c + 1 < al->n_heap && al->heap[c + 1]->due < al->heap[c]->due)
      c++;
    if (al->heap[c]->due >= r->due)
      break;
    heap_set(al, i, al->heap[c]);
    i = c;
  }
  heap_set(al, i, r);
}

/* Notes that an instance of r is due at d (al->mu held). */
static void due_note(struct ana_alerts *al, struct rule *r, int64_t d) {
  if (d >= r->due)
    return;
  if (r->heap_pos == SIZE_MAX) {
    if (al->n_heap == al->cap_heap) {
      size_t cap = al->cap_heap ? al->cap_heap * 2 : 64;
      struct rule **n = ana_realloc(al->heap, cap * sizeof *n);
      if (!n)
        return; /* the next pane boundary evaluates it */
      al->heap = n;
      al->cap_heap = cap;
    }
    r->due = d;
    heap_set(al, al->n_heap++, r);
  }
  r->due = d;
  heap_up(al, r->heap_pos);
}

static void due_remove(struct ana_alerts *al, struct rule *r) {
  if (r->heap_pos == SIZE_MAX)
    return;
  size_t i = r->heap_pos;
  struct rule *last = al->heap[--al->n_heap];
  if (i < al->n_heap) {
    heap_set(al, i, last);
    heap_up(al, last->heap_pos);
    heap_down(al, last->heap_pos);
  }
  r->heap_pos = SIZE_MAX;
  r->due = INT64_MAX;
}

/* Pane boundaries: a binary heap of the panesets with rules by the end of
 * their current pane. */
static int64_t ps_end(const struct paneset *ps) {
  return ps->cur_start + ps->pane_ms;
}

static void bh_set(struct ana_alerts *al, size_t i, struct paneset *ps) {
  al->bheap[i] = ps;
  ps->bpos = i;
}

static void bh_up(struct ana_alerts *al, size_t i) {
  struct paneset *ps = al->bheap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (ps_end(al->bheap[parent]) <= ps_end(ps))
      break;
    bh_set(al, i, al->bheap[parent]);
    i = parent;
  }
  bh_set(al, i, ps);
}

static void bh_down(struct ana_alerts *al, size_t i) {
  struct paneset *ps = al->bheap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= al->n_bheap)
      break;
    if (c + 1 < al->n_bheap && ps_end(al->bheap[c + 1]) < ps_end(al->bheap[c]))
      c++;
    if (ps_end(al->bheap[c]) >= ps_end(ps))
      break;
    bh_set(al, i, al->bheap[c]);
    i = c;
  }
  bh_set(al, i, ps);
}

static bool bh_insert(struct ana_alerts *al, struct paneset *ps) {
  if (ps->bpos != SIZE_MAX)
    return true;
  if (al->n_bheap == al->cap_bheap) {
    size_t cap = al->cap_bheap ? al->cap_bheap * 2 : 64;
    struct paneset **n = ana_realloc(al->bheap, cap * sizeof *n);
    if (!n)
      return false;
    al->bheap = n;
    al->cap_bheap = cap;
  }
  bh_set(al, al->n_bheap++, ps);
  bh_up(al, ps->bpos);
  return true;
}

static void bh_remove(struct ana_alerts *al, struct paneset *ps) {
  if (ps->bpos == SIZE_MAX)
    return;
  size_t i = ps->bpos;
  struct paneset *last = al->bheap[--al->n_bheap];
  if (i < al->n_bheap) {
    bh_set(al, i, last);
    bh_up(al, last->bpos);
    bh_down(al, last->bpos);
  }
  ps->bpos = SIZE_MAX;
}

/* ------------------------------------------------------------------ */
/* rules by threshold (struct theap) and the active instances of a group */

static double tkey(const struct theap *h, const struct rule *r) {
  return h->sign * r->p.threshold;
}

static void th_set(struct theap *h, size_t i, struct rule *r) {
  h->v[i] = r;
  r->tpos = i;
}

static void th_up(struct theap *h, size_t i) {
  struct rule *r = h->v[i];
  while (h->sign && i > 0) {
    size_t parent = (i - 1) / 2;
    if (tkey(h, h->v[parent]) <= tkey(h, r))
      break;
    th_set(h, i, h->v[parent]);
    i = parent;
  }
  th_set(h, i, r);
}

static void th_down(struct theap *h, size_t i) {
  struct rule *r = h->v[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (!h->sign || c >= h->n)
      break;
    if (c + 1 < h->n && tkey(h, h->v[c + 1]) < tkey(h, h->v[c]))
      c++;
    if (tkey(h, h->v[c]) >= tkey(h, r))
      break;
    th_set(h, i, h->v[c]);
    i = c;
  }
  th_set(h, i, r);
}

static bool th_insert(struct theap *h, struct rule *r) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 8;
    struct rule **n = ana_realloc(h->v, cap * sizeof *n);
    if (!n)
      return false;
    h->v = n;
    h->cap = cap;
  }
  th_set(h, h->n++, r);
  th_up(h, r->tpos);
  return true;
}

static void th_remove(struct theap *h, struct rule *r) {
  size_t i = r->tpos;
  if (i >= h->n || h->v[i] != r)
    return;
  struct rule *last = h->v[--h->n];
  if (i < h->n) {
    th_set(h, i, last);
    th_up(h, last->tpos);
    th_down(h, last->tpos);
  }
}

static struct theap *th_of(struct paneset *ps, const struct rule *r) {
  switch (r->p.op) {
  case ANA_ALERT_GT:
  case ANA_ALERT_GE: return &ps->up;
  case ANA_ALERT_LT:
  case ANA_ALERT_LE: return &ps->down;
  default: return &ps->any;
  }
}

static bool is_active(enum ana_alert_state s) {
  return s == ANA_ALERT_PENDING || s == ANA_ALERT_FIRING;
}

static void act_add(struct pgroup *g, struct rule *r, size_t ii) {
  if (g->n_act == g->cap_act) {
    size_t cap = g->cap_act ? g->cap_act * 2 : 4;
    struct active *n = ana_realloc(g->act, cap * sizeof *n);
    if (!n)
      return; /* stepped when its window moves */
    g->act = n;
    g->cap_act = cap;
  }
  g->act[g->n_act++] = (struct active){r, ii};
}

static void act_del(struct pgroup *g, const struct rule *r, size_t ii) {
  for (size_t j = 0; j < g->n_act; j++)
    if (g->act[j].r == r && g->act[j].ii == ii) {
      g->act[j] = g->act[--g->n_act];
      return;
    }
}

/* Keeps instance ii of r in its group's active list while it is pending
 * or firing (r attached to its paneset). */
static void act_track(struct rule *r, size_t ii, bool was) {
  struct instance *in = &r->inst[ii];
  bool now = is_active(in->st.state);
  if (was == now || in->pg < 0 || in->other || r->ps_slot == SIZE_MAX)
    return;
  if (now)
    act_add(&r->ps->groups[in->pg], r, ii);
  else
    act_del(&r->ps->groups[in->pg], r, ii);
}

/* ------------------------------------------------------------------ */
/* rules and instances */

static void pane_drop(struct paneset *ps, size_t i) {
  ana_metric_acc_destroy(ps->panes[i]);
  ps->panes[i] = NULL;
  ana_free(ps->pane_pg[i]);
  ps->pane_pg[i] = NULL;
  ps->n_pane_pg[i] = 0;
}

static void ps_free(struct paneset *ps) {
  if (!ps)
    return;
  for (size_t i = 0; i < ANA_ALERT_PANES; i++)
    pane_drop(ps, i);
  for (size_t i = 0; i < ps->n_names; i++) {
    ana_free(ps->names[i]);
    ana_free(ps->ikeys ? ps->ikeys[i] : NULL);
  }
  ana_free(ps->names);
  ana_free(ps->ikeys);
  ana_free(ps->rules);
  for (size_t i = 0; i < ps->n_groups; i++) {
    ana_free(ps->groups[i].vals);
    ana_free(ps->groups[i].act);
  }
  ana_free(ps->up.v);
  ana_free(ps->down.v);
  ana_free(ps->any.v);
  ana_free(ps->groups);
  smap_fini(&ps->group_map);
  ana_formula_free(ps->formula);
  ana_free(ps->key);
  ana_free(ps->account);
  if (ps->arena)
    ana_arena_destroy(ps->arena);
  ana_free(ps);
}

static void index_remove(struct ana_alerts *al, struct paneset *ps, size_t i) {
  struct index_list *l = smap_get(&al->index, ps->ikeys[i]);
  if (!l)
    return;
  for (size_t j = 0; j < l->n; j++)
    if (l->v[j] == ps) {
      l->v[j] = l->v[--l->n];
      break;
    }
  if (l->n == 0) {
    smap_del(&al->index, l->key);
    ana_free(l->key);
    ana_free(l->v);
    ana_free(l);
  }
}

static bool index_add(struct ana_alerts *al, struct paneset *ps, size_t i) {
  struct index_list *l = smap_get(&al->index, ps->ikeys[i]);
  if (!l) {
    l = ana_calloc(1, sizeof *l);
    if (l)
      l->key = ana_strdup(ps->ikeys[i]);
    if (!l || !l->key || !smap_put(&al->index, l->key, l)) {
      if (l)
        ana_free(l->key);
      ana_free(l);
      return false;
    }
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    struct paneset **n = ana_realloc(l->v, cap * sizeof *n);
    if (!n) {
      if (l->n == 0) {
        smap_del(&al->index, l->key);
        ana_free(l->key);
        ana_free(l);
      }
      return false;
    }
    l->v = n;
    l->cap = cap;
  }
  l->v[l->n++] = ps;
  return true;
}

/* Puts ps's names in the index or takes them out (al->mu held). Returns
 * false when out of memory (then nothing changed). */
static bool index_set(struct ana_alerts *al, struct paneset *ps, bool in) {
  if (ps->indexed == in)
    return true;
  if (!in) {
    for (size_t i = 0; i < ps->n_names; i++)
      index_remove(al, ps, i);
    ps->indexed = false;
    return true;
  }
  for (size_t i = 0; i < ps->n_names; i++)
    if (!index_add(al, ps, i)) {
      while (i-- > 0)
        index_remove(al, ps, i);
      return false;
    }
  ps->indexed = true;
  return true;
}

/* Makes r (enabled) one of ps's rules; false when out of memory. */
static bool ps_attach(struct ana_alerts *al, struct paneset *ps, struct rule *r) {
  if (ps->n_rules == ps->cap_rules) {
    size_t cap = ps->cap_rules ? ps->cap_rules * 2 : 4;
    struct rule **n = ana_realloc(ps->rules, cap * sizeof *n);
    if (!n)
      return false;
    ps->rules = n;
    ps->cap_rules = cap;
  }
  if (!index_set(al, ps, true))
    return false;
  if (!bh_insert(al, ps)) {
    if (ps->n_rules == 0)
      index_set(al, ps, false);
    return false;
  }
  if (!th_insert(th_of(ps, r), r)) {
    if (ps->n_rules == 0) {
      index_set(al, ps, false);
      bh_remove(al, ps);
    }
    return false;
  }
  r->ps_slot = ps->n_rules;
  ps->rules[ps->n_rules++] = r;
  ps->epoch++;
  return true;
}

static void ps_detach(struct ana_alerts *al, struct rule *r) {
  struct paneset *ps = r->ps;
  if (!ps || r->ps_slot == SIZE_MAX)
    return;
  for (size_t i = 0; i < r->n_inst; i++)
    if (r->inst[i].pg >= 0 && !r->inst[i].other && is_active(r->inst[i].st.state))
      act_del(&ps->groups[r->inst[i].pg], r, i);
  th_remove(th_of(ps, r), r);
  struct rule *last = ps->rules[--ps->n_rules];
  if (r->ps_slot < ps->n_rules) {
    ps->rules[r->ps_slot] = last;
    last->ps_slot = r->ps_slot;
  }
  r->ps_slot = SIZE_MAX;
  if (ps->n_rules == 0) {
    index_set(al, ps, false);
    bh_remove(al, ps);
  }
}

/* Drops a reference (al->mu held, or ps not shared yet). */
static void ps_release(struct ana_alerts *al, struct paneset *ps) {
  if (!ps || --ps->refs > 0)
    return;
  index_set(al, ps, false);
  bh_remove(al, ps);
  if (smap_get(&al->pansets, ps->key) == ps) {
    smap_del(&al->pansets, ps->key);
    if (ps->prev)
      ps->prev->next = ps->next;
    else
      al->ps_list = ps->next;
    if (ps->next)
      ps->next->prev = ps->prev;
  }
  ps_free(ps);
}

static void rule_free(struct ana_alerts *al, struct rule *r) {
  if (!r)
    return;
  ps_detach(al, r);
  due_remove(al, r);
  if (r->n_other && r->ps)
    r->ps->n_with_other--;
  if (r->ps)
    r->ps->n_unmapped -= r->n_unmapped;
  ps_release(al, r->ps);
  for (size_t i = 0; i < r->n_inst; i++) {
    ana_free(r->inst[i].key);
    for (size_t d = 0; r->inst[i].vals && d < r->n_dims; d++)
      ana_free(r->inst[i].vals[d]);
    ana_free(r->inst[i].vals);
  }
  ana_free(r->inst);
  ana_free(r->slots);
  ana_free(r->by_pg);
  ana_formula_free(r->formula);
  ana_free(r->id);
  ana_free(r->account);
  if (r->arena)
    ana_arena_destroy(r->arena);
  ana_free(r);
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

/* Splits a group key ("\x1f"-separated values) into n strings; false when
 * out of memory. */
static bool split_key(const char *key, size_t n, char **vals) {
  const char *p = key;
  for (size_t d = 0; d < n; d++) {
    const char *e = strchr(p, '\x1f');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    vals[d] = ana_malloc(l + 1);
    if (!vals[d])
      return false;
    memcpy(vals[d], p, l);
    vals[d][l] = '\0';
    p = e ? e + 1 : p + l;
  }
  return true;
}

/* The instance of key (values: n_dims, or NULL to split key). NULL when out
 * of memory. */
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
  in->pg = -1;
  in->vals = ana_calloc(r->n_dims ? r->n_dims : 1, sizeof *in->vals);
  if (!in->key || !in->vals) {
    ana_free(in->key);
    ana_free(in->vals);
    return NULL;
  }
  if (other || values) {
    for (size_t d = 0; d < r->n_dims; d++)
      in->vals[d] = ana_strdup(other ? ANA_METRIC_ACC_OTHER : values[d]);
  } else {
    split_key(key, r->n_dims, in->vals);
  }
  in->st.state = ANA_ALERT_OK;
  r->slots[slot] = (uint32_t)r->n_inst + 1;
  if (other && r->ps)
    r->ps->n_with_other++;
  r->n_other += other ? 1 : 0;
  r->n_inst++;
  return in;
}

/* The paneset's group of key (values: its dimension values, or NULL to
 * split key), created when new; past ps_group_limit groups a new key is
 * the "(other)" group. -1 when out of memory. */
static int ps_group(struct ana_alerts *al, struct paneset *ps, const char *key,
                    const char *const *values) {
  bool other = strcmp(key, OTHER_KEY) == 0;
  if (other && ps->other_pg >= 0)
    return ps->other_pg;
  if (!other) {
    uintptr_t v = (uintptr_t)smap_get(&ps->group_map, key);
    if (v)
      return (int)(v - 1);
    /* as many groups as rules keep instances apart, and as many again */
    if (ps->n_groups >= 2 * (size_t)al->o.max_instances + 1)
      return ps_group(al, ps, OTHER_KEY, NULL);
  }
  if (ps->n_groups == ps->cap_groups) {
    size_t cap = ps->cap_groups ? ps->cap_groups * 2 : 16;
    struct pgroup *n = ana_realloc(ps->groups, cap * sizeof *n);
    if (!n)
      return -1;
    ps->groups = n;
    ps->cap_groups = cap;
  }
  size_t nd = ps->metric->n_dimensions;
  size_t len = strlen(key) + 1 + nd * sizeof(char *);
  char *split[16] = {0};
  if (!other && !values) {
    if (nd > 16 || !split_key(key, nd, split)) {
      for (size_t d = 0; d < 16; d++)
        ana_free(split[d]);
      return -1;
    }
    values = (const char *const *)split;
  }
  for (size_t d = 0; d < nd; d++)
    len += strlen(other ? ANA_METRIC_ACC_OTHER : values[d] ? values[d] : "") + 1;
  char *block = ana_malloc(len);
  struct pgroup *g = &ps->groups[ps->n_groups];
  memset(g, 0, sizeof *g);
  if (block) {
    g->vals = (char **)(void *)block;
    char *p = block + nd * sizeof(char *);
    for (size_t d = 0; d < nd; d++) {
      const char *v = other ? ANA_METRIC_ACC_OTHER : values[d] ? values[d] : "";
      size_t l = strlen(v) + 1;
      memcpy(p, v, l);
      g->vals[d] = p;
      p += l;
    }
    memcpy(p, key, strlen(key) + 1);
    g->key = p;
    g->other = other;
  }
  for (size_t d = 0; d < 16; d++)
    ana_free(split[d]);
  if (!block)
    return -1;
  int pg = (int)ps->n_groups;
  if (other) {
    ps->other_pg = pg;
  } else if (!smap_put(&ps->group_map, g->key, (void *)(uintptr_t)(pg + 1))) {
    ana_free(block);
    return -1;
  }
  ps->n_groups++;
  return pg;
}

/* The paneset's group of group g of pane i. */
static int pane_group(struct ana_alerts *al, struct paneset *ps, size_t i, size_t g) {
  if (g < ps->n_pane_pg[i] && ps->pane_pg[i][g])
    return (int)ps->pane_pg[i][g] - 1;
  const struct ana_metric_acc *acc = ps->panes[i];
  int pg =
      ana_metric_acc_group_is_other(acc, g)
          ? ps_group(al, ps, OTHER_KEY, NULL)
          : ps_group(al, ps, ana_metric_acc_group_key(acc, g), ana_metric_acc_group_values(acc, g));
  if (pg < 0)
    return -1;
  if (g >= ps->n_pane_pg[i]) {
    size_t n = ps->n_pane_pg[i] ? ps->n_pane_pg[i] : 16;
    while (n <= g)
      n *= 2;
    uint32_t *m = ana_realloc(ps->pane_pg[i], n * sizeof *m);
    if (!m)
      return pg;
    memset(m + ps->n_pane_pg[i], 0, (n - ps->n_pane_pg[i]) * sizeof *m);
    ps->pane_pg[i] = m;
    ps->n_pane_pg[i] = n;
  }
  ps->pane_pg[i][g] = (uint32_t)pg + 1;
  return pg;
}

/* The index of r's instance of its paneset's group pg (created), or -1
 * when out of memory. */
static long rule_instance(struct ana_alerts *al, struct rule *r, int pg) {
  if ((size_t)pg < r->n_by_pg && r->by_pg[pg])
    return (long)r->by_pg[pg] - 1;
  const struct pgroup *g = &r->ps->groups[pg];
  struct instance *in = instance_get(al, r, g->other ? OTHER_KEY : g->key,
                                     g->other ? NULL : (const char *const *)g->vals, true);
  if (!in)
    return -1;
  long idx = (long)(in - r->inst);
  if (!in->other)
    in->pg = pg;
  if ((size_t)pg >= r->n_by_pg) {
    size_t n = r->n_by_pg ? r->n_by_pg : 16;
    while (n <= (size_t)pg)
      n *= 2;
    uint32_t *m = ana_realloc(r->by_pg, n * sizeof *m);
    if (!m)
      return idx;
    memset(m + r->n_by_pg, 0, (n - r->n_by_pg) * sizeof *m);
    r->by_pg = m;
    r->n_by_pg = n;
  }
  r->by_pg[pg] = (uint32_t)idx + 1;
  return idx;
}

/* r's instance of key (restored state, or the one group of a metric
 * without dimensions), through the paneset's group when there is one. */
static struct instance *rule_instance_of_key(struct ana_alerts *al, struct rule *r,
                                             const char *key) {
  int pg = ps_group(al, r->ps, key, NULL);
  if (pg < 0 || (r->ps->groups[pg].other && strcmp(key, OTHER_KEY) != 0)) {
    struct instance *in = instance_get(al, r, key, NULL, true);
    if (in && !in->other && in->pg < 0) {
      r->n_unmapped++;
      r->ps->n_unmapped++;
    }
    return in;
  }
  long idx = rule_instance(al, r, pg);
  return idx < 0 ? NULL : &r->inst[idx];
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
    if (ps->panes[i] && ps->pane_start[i] < oldest)
      pane_drop(ps, i);
  return true;
}

/* Adds ev to its pane: returns its group and the pane in *pane, or -1
 * (outside the window, filtered out, out of memory). */
static int ps_add(struct paneset *ps, const struct ana_scanned_event *ev, size_t *pane) {
  int64_t oldest = ps->cur_start - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  if (ev->timestamp_ms < oldest || ev->timestamp_ms >= ps->cur_start + ps->pane_ms)
    return -1;
  int64_t start = floor_to(ev->timestamp_ms, ps->pane_ms);
  size_t idx = (size_t)((start / ps->pane_ms) % ANA_ALERT_PANES);
  if (!ps->panes[idx] || ps->pane_start[idx] != start) {
    pane_drop(ps, idx);
    struct ana_error err;
    ps->panes[idx] = ana_metric_acc_create(ps->metric, ps->formula, 100000, &err);
    ps->pane_start[idx] = start;
    if (!ps->panes[idx])
      return -1;
  }
  *pane = idx;
  int g = ana_metric_acc_add(ps->panes[idx], ev);
  return g < 0 ? -1 : g;
}

/* The rule's instances of every group in its window. */
static void instances_from_panes(struct ana_alerts *al, struct rule *r) {
  struct paneset *ps = r->ps;
  int64_t oldest = ps->cur_start - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  for (size_t i = 0; i < ANA_ALERT_PANES; i++)
    if (ps->panes[i] && ps->pane_start[i] >= oldest)
      for (size_t g = 0; g < ana_metric_acc_group_count(ps->panes[i]); g++) {
        int pg = pane_group(al, ps, i, g);
        if (pg >= 0)
          rule_instance(al, r, pg);
      }
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

/* The window's value of key (NULL: the groups pick takes): returns 1
 * (value), 0 (no data). */
static int ps_value(const struct paneset *ps, const char *key, ana_metric_acc_pick_fn pick,
                    void *ctx, double *out) {
  struct ana_metric_acc *accs[ANA_ALERT_PANES];
  size_t n = 0;
  int64_t oldest = ps->cur_start - (ANA_ALERT_PANES - 1) * ps->pane_ms;
  for (size_t i = 0; i < ANA_ALERT_PANES; i++)
    if (ps->panes[i] && ps->pane_start[i] >= oldest && ps->pane_start[i] <= ps->cur_start)
      accs[n++] = ps->panes[i];
  if (n == 0) {
    /* an empty window: the formula over empty aggregates (a count is 0) */
    struct ana_error err;
    struct ana_metric_acc *empty = ana_metric_acc_create(ps->metric, ps->formula, 1, &err);
    if (!empty)
      return 0;
    int rc = ps->metric->n_dimensions == 0
                 ? ana_metric_acc_value_merged(&empty, 1, "", NULL, NULL, out)
                 : 0;
    ana_metric_acc_destroy(empty);
    return rc > 0;
  }
  int rc = ana_metric_acc_value_merged(accs, n, key, pick, ctx, out);
  return rc > 0;
}

/* The window's value of an instance: returns 1 (value), 0 (no data). */
static int window_value(struct rule *r, struct instance *in, double *out) {
  struct pick_ctx pc = {r};
  return ps_value(r->ps, in->other ? NULL : in->key, pick_other, &pc, out);
}

/* The window's value of group pg, computed once per generation. */
static bool group_value(struct ana_alerts *al, struct paneset *ps, int pg, double *out) {
  struct pgroup *g = &ps->groups[pg];
  if (g->valued != al->generation) {
    g->has = ps_value(ps, g->key, NULL, NULL, &g->value) == 1;
    g->valued = al->generation;
  }
  *out = g->value;
  return g->has;
}

/* ------------------------------------------------------------------ */
/* changes: history, instance state, notifications, live pushes */

struct change {
  struct rule *r;
  size_t ii; /* its instance: r->inst[ii] (the array may move within a pass) */
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
                         const char *const *shown, bool sensitive, char *channels, size_t csize,
                         char *failed, size_t fsize) {
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
    vals[nv++] = (struct ana_notify_value){r->metric->dimensions[d], shown[d]};
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
        .sensitive = sensitive,
    };
    if (ana_notify_enqueue_in_txn(al->o.notify, al->lconn, &nt, NULL, &err) < 0) {
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
  if (e->at)
    ana_timestamp_set(e->at, c->at);
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
  uint64_t *ids = ana_calloc(n, sizeof *ids);
  char(*msgs)[1024] = ana_calloc(n, sizeof *msgs);
  if (!ids || !msgs) {
    ana_free(ids);
    ana_free(msgs);
    return ANA_ERR_NOMEM;
  }
  struct ana_error err;
  struct ana_arena *scratch = al->o.reveal ? ana_arena_create(4096, 0) : NULL;
  /* The values a notification shows are looked up before the transaction:
   * a search waits for the store's mover, which needs the write lock this
   * transaction would hold. */
  const char *(*shown)[16] = ana_calloc(n, sizeof *shown);
  bool *differs = ana_calloc(n, sizeof *differs);
  if (!shown || !differs) {
    ana_free(shown);
    ana_free(differs);
    ana_free(ids);
    ana_free(msgs);
    ana_arena_destroy(scratch);
    return ANA_ERR_NOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    struct rule *r = cs[i].r;
    struct instance *in = &r->inst[cs[i].ii];
    size_t nd = r->n_dims < 16 ? r->n_dims : 16;
    if (!cs[i].step.notify || !r->alert->n_channels)
      continue;
    for (size_t d = 0; d < nd; d++) {
      shown[i][d] = al->o.reveal && in->vals[d] && scratch
                        ? al->o.reveal(r->account, (const char *const *)r->alert->creator_roles,
                                       r->alert->n_creator_roles, r->metric->dimensions[d],
                                       in->vals[d], INT64_MIN, INT64_MAX, scratch)
                        : in->vals[d];
      differs[i] = differs[i] || shown[i][d] != in->vals[d];
    }
  }
  int rc = ana_local_conn_begin(al->lconn, &err);
  int queued = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    struct change *c = &cs[i];
    struct rule *r = c->r;
    struct instance *in = &r->inst[c->ii];
    const char *names[16];
    size_t nd = r->n_dims < 16 ? r->n_dims : 16;
    for (size_t d = 0; d < nd; d++)
      names[d] = r->metric->dimensions[d];
    ana_alert_render(r->alert->message, r->alert->name, r->alert->metric,
                     ana_alert_state_name(c->step.to), ana_alert_severity_name(r->p.severity),
                     in->st.has_value, in->st.value, r->p.threshold, names,
                     (const char *const *)in->vals, nd, msgs[i], sizeof msgs[i]);
    struct ana_local_alert_instance li = {
        .alert_id = r->id,
        .group_key = in->key,
        .state = (int)in->st.state,
        .since_ms = in->st.since_ms,
        .last_notified_ms = in->st.last_notified_ms,
        .notified = in->st.notified,
        .value = in->st.value,
        .has_value = in->st.has_value,
    };
    if ((rc = ana_local_alerts_put_instance(al->state, &li, &err)) < 0)
      break;
    char channels[1024], failed[2048];
    channels[0] = failed[0] = '\0';
    if (c->step.suppressed)
      snprintf(failed, sizeof failed, "cooldown: not notified");
    char *gj = group_json(r, in);
    struct ana_local_alert_entry e = {
        .alert_id = r->id,
        .account_id = r->account,
        .at_ms = c->at,
        .kind = c->step.changed ? "state" : "notification",
        .state = ana_alert_state_name(c->step.to),
        .previous_state = ana_alert_state_name(c->step.from),
        .value = in->st.value,
        .has_value = in->st.has_value,
        .threshold = r->p.threshold,
        .severity = ana_alert_severity_name(r->p.severity),
        .group_json = gj ? gj : "{}",
        .message = msgs[i],
        .channels = channels,
        .failed = failed,
    };
    int64_t id = 0;
    rc = ana_local_alerts_append(al->state, &e, &id, &err);
    free(gj);
    if (rc < 0)
      break;
    ids[i] = (uint64_t)id;
    if (c->step.notify && r->alert->n_channels) {
      /* The notification shows the dimension values as the alert's creator
       * may see them (encrypted ones masked or in clear); the history
       * keeps them as aggregated. */
      char *text = msgs[i], clear[1024];
      if (differs[i]) {
        ana_alert_render(r->alert->message, r->alert->name, r->alert->metric,
                         ana_alert_state_name(c->step.to), ana_alert_severity_name(r->p.severity),
                         in->st.has_value, in->st.value, r->p.threshold, names, shown[i], nd, clear,
                         sizeof clear);
        text = clear;
      }
      queued += notify_in_txn(al, r, in, c, ids[i], text, shown[i], differs[i], channels,
                              sizeof channels, failed, sizeof failed);
      if ((rc = ana_local_alerts_note(al->state, id, channels, failed, &err)) < 0)
        break;
    }
  }
  if (rc == 0)
    rc = ana_local_conn_commit(al->lconn, &err);
  if (rc < 0) {
    ANA_ERROR("alerts", "cannot store %zu alert state changes: %s", n, err.message);
    ana_local_conn_rollback(al->lconn);
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
      build_entry(a, cs[i].r, &cs[i].r->inst[cs[i].ii], &cs[i], msgs[i], &e);
      e.entry_id = ids[i];
      push_entry(al, cs[i].r, ids[i], &e);
      ana_arena_destroy(a);
    }
  }
  ana_free(ids);
  ana_free(msgs);
  ana_free(shown);
  ana_free(differs);
  ana_arena_destroy(scratch);
  return rc < 0 ? ANA_ERR_IO : 0;
}

/* A growing list of changes of one pass. */
/* A growing list of changes of one pass. */
struct changes {
  struct change *v;
  size_t n, cap;
};

/* Steps instance ii of r with the window's value; notes its next due step. */
static void step_instance(struct ana_alerts *al, struct rule *r, size_t ii, bool has, double v,
                          int64_t now, struct changes *out) {
  struct ana_alert_step step;
  bool was = is_active(r->inst[ii].st.state);
  ana_alert_step(&r->p, &r->inst[ii].st, has, v, now, &step);
  act_track(r, ii, was);
  due_note(al, r, ana_alert_next_due(&r->p, &r->inst[ii].st));
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
  out->v[out->n++] = (struct change){r, ii, step, now};
}

static void evaluate(struct ana_alerts *al, struct rule *r, size_t ii, int64_t now,
                     struct changes *out) {
  double v = 0;
  struct instance *in = &r->inst[ii];
  bool has =
      in->pg >= 0 && !in->other ? group_value(al, r->ps, in->pg, &v) : window_value(r, in, &v) == 1;
  step_instance(al, r, ii, has, v, now, out);
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
  struct ana_realtime_sub *rs = s->rs;
  pthread_mutex_unlock(&al->smu);
  ana_realtime_feed_ready(al->o.hub, rs); /* call and s may be gone after this */
  return 0;
}

/* ------------------------------------------------------------------ */
/* the thread */

/* Notes group pg of ps as touched in this pass (once). */
static void touch(struct ana_alerts *al, struct paneset *ps, int pg) {
  struct pgroup *g = &ps->groups[pg];
  if (g->touched == al->pass)
    return;
  if (al->n_touched == al->cap_touched) {
    size_t cap = al->cap_touched ? al->cap_touched * 2 : 64;
    struct touched *n = ana_realloc(al->touched, cap * sizeof *n);
    if (!n)
      return;
    al->touched = n;
    al->cap_touched = cap;
  }
  g->touched = al->pass;
  al->touched[al->n_touched++] = (struct touched){ps, pg};
}

/* r's instance of group pg: created when create, else -1 when it has none. */
static long instance_of(struct ana_alerts *al, struct rule *r, int pg, bool create) {
  if (create)
    return rule_instance(al, r, pg);
  return (size_t)pg < r->n_by_pg && r->by_pg[pg] ? (long)r->by_pg[pg] - 1 : -1;
}

/* Steps the quiet (ok, resolved) instance of group pg of each rule in the
 * subtree of h at i whose threshold v reaches (all of them when h is
 * unordered). */
static void step_reached(struct ana_alerts *al, struct theap *h, size_t i, int pg, double v,
                         bool create, int64_t now, struct changes *cs) {
  while (i < h->n) {
    struct rule *r = h->v[i];
    if (h->sign && tkey(h, r) > h->sign * v)
      return; /* nor any below it */
    long ii = instance_of(al, r, pg, create);
    if (ii >= 0 && r->inst[ii].other) /* its value is the merged one */
      evaluate(al, r, (size_t)ii, now, cs);
    else if (ii >= 0 && !is_active(r->inst[ii].st.state))
      step_instance(al, r, (size_t)ii, true, v, now, cs);
    if (!h->sign) {
      i++;
      continue;
    }
    step_reached(al, h, 2 * i + 1, pg, v, create, now, cs);
    i = 2 * i + 2;
  }
}

/* Steps every rule over ps whose instance of group pg an event of the
 * group may change: its pending and firing instances, and the rules whose
 * threshold its value reaches (the others stay ok: their step would change
 * nothing). */
static void step_group(struct ana_alerts *al, struct paneset *ps, int pg, bool create, int64_t now,
                       struct changes *cs) {
  if (create && ps->groups[pg].epoch != ps->epoch) {
    /* rules attached since the group was last touched get their instance */
    for (size_t k = 0; k < ps->n_rules; k++)
      rule_instance(al, ps->rules[k], pg);
    ps->groups[pg].epoch = ps->epoch;
  }
  double v = 0;
  bool has = !ps->groups[pg].other && group_value(al, ps, pg, &v);
  if (!has || ps->n_with_other) {
    for (size_t k = 0; k < ps->n_rules; k++) {
      long ii = instance_of(al, ps->rules[k], pg, create);
      if (ii >= 0)
        evaluate(al, ps->rules[k], (size_t)ii, now, cs);
    }
    return;
  }
  struct pgroup *g = &ps->groups[pg];
  for (size_t j = g->n_act; j-- > 0;) /* stepping may take entry j out */
    if (j < g->n_act)
      step_instance(al, g->act[j].r, g->act[j].ii, true, v, now, cs);
  struct theap *hs[3] = {&ps->up, &ps->down, &ps->any};
  for (size_t h = 0; h < 3; h++)
    step_reached(al, hs[h], 0, pg, v, create, now, cs);
}

/* Folds the events into the panesets that count them (once each, found by
 * account and event name); then, for each group they touched, computes its
 * window's value once and steps the instance of every rule over that
 * paneset with it. The work grows with the events and the rules over what
 * they touched, not with the other rules. */
static void process_events(struct ana_alerts *al, struct qev *list, int64_t now,
                           struct changes *cs) {
  al->n_touched = 0;
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
      const struct index_list *l = smap_get(&al->index, key);
      for (size_t i = 0; l && i < l->n; i++) {
        struct paneset *ps = l->v[i];
        if (q->ev.seq <= ps->seed_seq)
          continue;
        size_t pane;
        int g = ps_add(ps, &q->ev, &pane);
        if (g < 0)
          continue;
        al->stats.events++;
        int pg = pane_group(al, ps, pane, (size_t)g);
        if (pg >= 0)
          touch(al, ps, pg);
      }
    }
  }
  al->generation++;
  for (size_t t = 0; t < al->n_touched; t++)
    step_group(al, al->touched[t].ps, al->touched[t].pg, true, now, cs);
}

/* The instances of the rules over ps, whose window moved: per group, its
 * pending and firing instances and those of the rules its value reaches
 * (every instance when a rule has an "(other)" instance or an instance of
 * no group). */
static void evaluate_moved(struct ana_alerts *al, struct paneset *ps, int64_t now,
                           struct changes *cs) {
  if (ps->n_with_other || ps->n_unmapped) {
    for (size_t k = 0; k < ps->n_rules; k++) {
      struct rule *r = ps->rules[k];
      for (size_t i = 0; i < r->n_inst; i++)
        evaluate(al, r, i, now, cs);
    }
    return;
  }
  for (size_t pg = 0; pg < ps->n_groups; pg++)
    step_group(al, ps, (int)pg, false, now, cs);
}

/* The steps due by now: the rules whose earliest due step came. */
static void evaluate_due(struct ana_alerts *al, int64_t now, struct changes *cs) {
  size_t n = 0;
  while (al->n_heap && al->heap[0]->due <= now) {
    struct rule *r = al->heap[0];
    if (n == al->cap_taken) {
      size_t cap = al->cap_taken ? al->cap_taken * 2 : 64;
      struct rule **t = ana_realloc(al->taken, cap * sizeof *t);
      if (!t)
        break; /* the rest in the next pass */
      al->taken = t;
      al->cap_taken = cap;
    }
    due_remove(al, r);
    al->taken[n++] = r;
  }
  for (size_t k = 0; k < n; k++) {
    struct rule *r = al->taken[k];
    for (size_t i = 0; i < r->n_inst; i++) {
      int64_t due = ana_alert_next_due(&r->p, &r->inst[i].st);
      if (due <= now)
        evaluate(al, r, i, now, cs);
      else
        due_note(al, r, due);
    }
  }
}

static void sweep_history(struct ana_alerts *al, int64_t now) {
  if (now - al->last_sweep_ms < HISTORY_SWEEP_MS)
    return;
  al->last_sweep_ms = now;
  struct ana_error err;
  if (ana_local_alerts_expire(al->state, now - (int64_t)al->o.history_days * 86400000LL, &err) < 0)
    ANA_WARN("alerts", "alert history not expired: %s", err.message);
}

static void *run(void *arg) {
  pthread_setname_np(pthread_self(), "ana-alerts"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_alerts *al = arg;
  struct changes cs = {0};
  for (;;) {
    pthread_mutex_lock(&al->qmu);
    int64_t wake = ana_clock_wall_ms() + TICK_MS;
    pthread_mutex_lock(&al->mu);
    if (al->n_bheap && ps_end(al->bheap[0]) < wake)
      wake = ps_end(al->bheap[0]);
    if (al->n_heap && al->heap[0]->due < wake)
      wake = al->heap[0]->due;
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
    uint64_t dropped = ana_prom_counter_get(&al->dropped);
    if (dropped != al->dropped_logged) {
      ANA_WARN("alerts",
               "%llu events of accounts with alerts dropped (%llu in all): the evaluator's queue "
               "held ALERT_QUEUE_MAX (%d); their rules' windows miss them",
               (unsigned long long)(dropped - al->dropped_logged), (unsigned long long)dropped,
               al->o.queue_max);
      al->dropped_logged = dropped;
    }
    int64_t now = ana_clock_wall_ms();
    pthread_mutex_lock(&al->mu);
    cs.n = 0;
    al->pass++;
    al->generation++;
    /* panes closed: the windows that moved are evaluated */
    while (al->n_bheap && ps_end(al->bheap[0]) <= now) {
      struct paneset *ps = al->bheap[0];
      if (advance(ps, now))
        evaluate_moved(al, ps, now, &cs);
      bh_down(al, 0);
    }
    evaluate_due(al, now, &cs);
    process_events(al, list, now, &cs);
    write_changes(al, cs.v, cs.n);
    sweep_history(al, now);
    pthread_mutex_unlock(&al->mu);
    while (list) {
      struct qev *n = list->next;
      ana_free(list);
      list = n;
    }
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
  return smap_get(&al->accounts, account) != NULL;
}

void ana_alerts_on_commit(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_alerts *al = ctx;
  pthread_mutex_lock(&al->qmu);
  bool any = false;
  for (size_t i = 0; i < n; i++) {
    const struct ana_event_record *rec = &records[i];
    if (rec->duplicate || !has_account(al, rec->account_id))
      continue;
    if (al->queued >= (size_t)al->o.queue_max) {
      ana_prom_counter_add(&al->dropped, 1);
      continue;
    }
    size_t len = sizeof(struct qev) + strlen(rec->account_id) + strlen(rec->event_id) +
                 strlen(rec->event_type) + strlen(rec->event_name) +
                 strlen(rec->session_id ? rec->session_id : "") +
                 strlen(rec->properties_json ? rec->properties_json : "{}") + 6;
    struct qev *q = ana_malloc(len);
    if (!q) {
      ana_prom_counter_add(&al->dropped, 1);
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

/* Notes that account has rules: the hook copies its events from now on. */
static int note_account(struct ana_alerts *al, const char *account) {
  int rc = 0;
  bool added = false;
  pthread_mutex_lock(&al->qmu);
  if (!has_account(al, account)) {
    char *copy = ana_strdup(account);
    if (copy && smap_put(&al->accounts, copy, copy)) {
      added = true;
    } else {
      ana_free(copy);
      rc = ANA_ERR_NOMEM;
    }
  }
  pthread_mutex_unlock(&al->qmu);
  if (!added)
    return rc;
  struct ana_error err;
  pthread_mutex_lock(&al->mu);
  if (ana_local_alerts_add_account(al->state, account, &err) < 0)
    ANA_WARN("alerts", "account %s not noted: %s", account, err.message);
  pthread_mutex_unlock(&al->mu);
  return rc;
}

struct seed_ctx {
  struct paneset *ps;
  uint64_t upto;
};

static int seed_one(void *ctx, const struct ana_scanned_event *ev) {
  struct seed_ctx *s = ctx;
  size_t pane;
  if (ev->seq <= s->upto)
    ps_add(s->ps, ev, &pane);
  return 0;
}

static int seed_after(void *ctx, const struct ana_scanned_event *ev) {
  struct seed_ctx *s = ctx;
  size_t pane;
  ps_add(s->ps, ev, &pane);
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
  ps->bpos = SIZE_MAX;
  ps->other_pg = -1;
  ps->up.sign = 1;
  ps->down.sign = -1;
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
  ps->ikeys = ana_calloc(nterms ? nterms : 1, sizeof *ps->ikeys);
  if (!ps->names || !ps->ikeys) {
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
    size_t la = strlen(r->account), ln = strlen(name);
    ps->names[ps->n_names] = ana_strdup(name);
    ps->ikeys[ps->n_names] = ana_malloc(la + ln + 2);
    if (ps->ikeys[ps->n_names]) {
      memcpy(ps->ikeys[ps->n_names], r->account, la);
      ps->ikeys[ps->n_names][la] = '\x1f';
      memcpy(ps->ikeys[ps->n_names] + la + 1, name, ln + 1);
    }
    ps->n_names++;
    if (!ps->names[ps->n_names - 1] || !ps->ikeys[ps->n_names - 1]) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto fail;
    }
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

struct restore_ctx {
  struct ana_alerts *al;
  struct rule *r;
};

static int restore_one(void *ctx, const struct ana_local_alert_instance *li) {
  struct restore_ctx *rc = ctx;
  struct instance *in = rule_instance_of_key(rc->al, rc->r, li->group_key);
  if (!in)
    return 0;
  in->st.state = (enum ana_alert_state)li->state;
  in->st.since_ms = li->since_ms;
  in->st.last_notified_ms = li->last_notified_ms;
  in->st.notified = li->notified;
  in->st.value = li->value;
  in->st.has_value = li->has_value;
  act_track(rc->r, (size_t)(in - rc->r->inst), false);
  return 0;
}

/* Restores the persisted instances of r. */
static void restore_instances(struct ana_alerts *al, struct rule *r) {
  struct restore_ctx rc = {al, r};
  struct ana_error err;
  if (ana_local_alerts_instances(al->state, r->id, restore_one, &rc, &err) < 0)
    ANA_WARN("alerts", "alert %s: instances not restored: %s", r->id, err.message);
}

int ana_alerts_put(struct ana_alerts *al, const Analytics__V1__Alert *a, struct ana_error *err) {
  struct rule *r = ana_calloc(1, sizeof *r);
  if (!r)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  r->ps_slot = r->heap_pos = SIZE_MAX;
  r->due = INT64_MAX;
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
  struct paneset *shared = smap_get(&al->pansets, key);
  if (shared) {
    shared->refs++;
    r->ps = shared;
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
    if ((shared = smap_get(&al->pansets, key)) != NULL) {
      /* another change made it meanwhile */
      ps_free(ps);
      shared->refs++;
      r->ps = shared;
      goto have_window;
    }
    uint64_t upto2 = upto;
    struct ana_error e2;
    struct seed_ctx sc = {ps, upto};
    if (r->p.enabled && al->o.store_ops->last_seq(al->o.store, &upto2, &e2) == 0 && upto2 > upto)
      al->o.store_ops->scan_seq(al->o.store, r->account, upto, upto2, seed_after, &sc, &e2);
    ps->seed_seq = upto2;
    r->ps = ps;
    if (!smap_put(&al->pansets, ps->key, ps)) {
      pthread_mutex_unlock(&al->mu);
      ana_free(key);
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto fail;
    }
    ps->next = al->ps_list;
    if (ps->next)
      ps->next->prev = ps;
    al->ps_list = ps;
  }
have_window:
  ana_free(key);
  struct rule *old = smap_get(&al->rules, r->id);
  if (old) {
    smap_del(&al->rules, old->id);
    rule_free(al, old);
  }
  if (!smap_put(&al->rules, r->id, r) || (r->p.enabled && !ps_attach(al, r->ps, r))) {
    if (smap_get(&al->rules, r->id) == r)
      smap_del(&al->rules, r->id);
    rule_free(al, r);
    pthread_mutex_unlock(&al->mu);
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  restore_instances(al, r);
  if (r->n_dims == 0)
    rule_instance_of_key(al, r, "");
  instances_from_panes(al, r);
  struct changes cs = {0};
  al->generation++;
  for (size_t i = 0; r->p.enabled && i < r->n_inst; i++)
    evaluate(al, r, i, now, &cs);
  write_changes(al, cs.v, cs.n);
  ana_free(cs.v);
  pthread_mutex_unlock(&al->mu);
  pthread_cond_signal(&al->qcond);
  return 0;
fail:
  pthread_mutex_lock(&al->mu);
  rule_free(al, r);
  pthread_mutex_unlock(&al->mu);
  return rc < 0 ? rc : ANA_ERR_INVALID;
}

void ana_alerts_remove(struct ana_alerts *al, const char *account, const char *alert_id) {
  (void)account;
  pthread_mutex_lock(&al->mu);
  struct rule *r = smap_get(&al->rules, alert_id);
  if (r) {
    smap_del(&al->rules, r->id);
    rule_free(al, r);
  }
  struct ana_error err;
  if (ana_local_alerts_forget(al->state, alert_id, &err) < 0)
    ANA_WARN("alerts", "alert %s: state not deleted: %s", alert_id, err.message);
  pthread_mutex_unlock(&al->mu);
}

void ana_alerts_counts(struct ana_alerts *al, const char *alert_id, int counts[4]) {
  memset(counts, 0, 4 * sizeof *counts);
  pthread_mutex_lock(&al->mu);
  struct rule *r = smap_get(&al->rules, alert_id);
  for (size_t i = 0; r && i < r->n_inst; i++)
    if ((unsigned)r->inst[i].st.state < 4)
      counts[r->inst[i].st.state]++;
  pthread_mutex_unlock(&al->mu);
}

/* ------------------------------------------------------------------ */
/* history */

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

struct history_ctx {
  struct ana_arena *arena;
  const char *alert_id;
  Analytics__V1__AlertHistoryEntry **out;
  int n, limit;
  char **next_token;
  int64_t last_at, last_id;
  int last_k;
};

/* Converts one stored entry; the one past the limit gives the next page's
 * token. */
static int history_one(void *ctx, const struct ana_local_alert_entry *le) {
  struct history_ctx *h = ctx;
  struct ana_arena *arena = h->arena;
  if (h->n == h->limit) {
    *h->next_token = ana_arena_alloc(arena, 72);
    if (*h->next_token)
      snprintf(*h->next_token, 72, "%lld.%d.%lld", (long long)h->last_at, h->last_k,
               (long long)h->last_id);
    return 1;
  }
  Analytics__V1__AlertHistoryEntry *e = ana_arena_alloc(arena, sizeof *e);
  if (!e)
    return 1;
  analytics__v1__alert_history_entry__init(e);
  e->alert_id = ana_arena_strdup(arena, h->alert_id);
  h->last_at = le->at_ms;
  h->last_k = le->k;
  h->last_id = le->id;
  e->entry_id = le->k == 0 ? (uint64_t)le->id : 0;
  e->at = ana_arena_alloc(arena, sizeof *e->at);
  if (e->at)
    ana_timestamp_set(e->at, le->at_ms);
  e->kind = ana_arena_strdup(arena, le->kind);
  e->state = ana_arena_strdup(arena, le->state);
  e->previous_state = ana_arena_strdup(arena, le->previous_state);
  e->value = le->value;
  e->has_value = le->has_value;
  e->threshold = le->threshold;
  e->severity = ana_arena_strdup(arena, le->severity);
  json_t *g = json_loads(le->group_json, 0, NULL);
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
  e->message = ana_arena_strdup(arena, le->message);
  split_lines(arena, ana_arena_strdup(arena, le->channels), &e->notified_channels,
              &e->n_notified_channels);
  split_lines(arena, ana_arena_strdup(arena, le->failed), &e->failed_channels,
              &e->n_failed_channels);
  e->channel_id = ana_arena_strdup(arena, le->channel_id);
  e->idempotency_key = ana_arena_strdup(arena, le->idempotency_key);
  e->attempt = le->attempt;
  e->status_code = le->status;
  e->error = ana_arena_strdup(arena, le->error);
  e->duration_ms = le->duration_ms;
  h->out[h->n++] = e;
  return 0;
}

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
  char source[80];
  snprintf(source, sizeof source, "alert:%s", alert_id);
  struct ana_local_alert_page q = {
      .account_id = account,
      .alert_id = alert_id,
      .deliveries_source = al->o.notify ? source : NULL,
      .before_at_ms = t_at,
      .before_k = (int)t_k,
      .before_id = t_id,
      .from_ms = from_ms,
      .to_ms = to_ms,
      .state = state,
      .limit = limit + 1,
  };
  struct history_ctx h = {
      .arena = arena, .alert_id = alert_id, .out = *out, .limit = limit, .next_token = next_token};
  int rc = ana_local_alerts_history(al->o.db, &q, history_one, &h, err);
  return rc < 0 ? rc : h.n;
}

/* ------------------------------------------------------------------ */
/* life cycle */

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_alerts *al = ctx;
  ana_prom_write_family(w, "ana_alert_events_dropped_total", "counter",
                        "Committed events the alert evaluator did not evaluate: its queue held "
                        "ALERT_QUEUE_MAX events.");
  ana_prom_write_u64(w, "ana_alert_events_dropped_total", NULL, ana_prom_counter_get(&al->dropped));
}

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
  if (al->o.queue_max <= 0)
    al->o.queue_max = 1000000;
  pthread_mutex_init(&al->qmu, NULL);
  pthread_mutex_init(&al->mu, NULL);
  pthread_mutex_init(&al->smu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_cond_init(&al->qcond, &ca);
  pthread_condattr_destroy(&ca);
  al->lconn = ana_local_conn_open(o->db, err);
  if (!al->lconn)
    goto fail;
  if (!(al->state = ana_local_alerts_open(al->lconn, err)))
    goto fail;
  if (pthread_create(&al->thread, NULL, run, al) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "alerts: cannot start the evaluator thread");
    goto fail;
  }
  al->started = true;
  al->metrics_registered = ana_prom_register(collect, al) == 0;
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

struct accounts_ctx {
  char **v;
  size_t n, cap;
};

static int account_one(void *ctx, const char *account) {
  struct accounts_ctx *a = ctx;
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 8;
    char **nn = ana_realloc(a->v, cap * sizeof *nn);
    if (!nn)
      return 1;
    a->v = nn;
    a->cap = cap;
  }
  a->v[a->n++] = ana_strdup(account);
  return 0;
}

void ana_alerts_load_all(struct ana_alerts *al) {
  struct accounts_ctx ac = {0};
  struct ana_error aerr;
  pthread_mutex_lock(&al->mu);
  if (ana_local_alerts_accounts(al->state, account_one, &ac, &aerr) < 0)
    ANA_WARN("alerts", "accounts with alerts not read: %s", aerr.message);
  pthread_mutex_unlock(&al->mu);
  char **accounts = ac.v;
  size_t n = ac.n;
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
  if (al->metrics_registered)
    ana_prom_unregister(collect, al);
  if (al->started) {
    pthread_mutex_lock(&al->qmu);
    al->stop = true;
    pthread_cond_signal(&al->qcond);
    pthread_mutex_unlock(&al->qmu);
    pthread_join(al->thread, NULL);
  }
  for (size_t i = 0; i < al->rules.cap; i++)
    if (al->rules.v[i].key) {
      struct rule *r = al->rules.v[i].val;
      r->ps_slot = SIZE_MAX;
      r->heap_pos = SIZE_MAX;
      r->ps = NULL; /* the panesets go below */
      rule_free(al, r);
    }
  smap_fini(&al->rules);
  while (al->ps_list) {
    struct paneset *ps = al->ps_list;
    al->ps_list = ps->next;
    ps_free(ps);
  }
  smap_fini(&al->pansets);
  for (size_t i = 0; i < al->index.cap; i++)
    if (al->index.v[i].key) {
      struct index_list *l = al->index.v[i].val;
      ana_free(l->key);
      ana_free(l->v);
      ana_free(l);
    }
  smap_fini(&al->index);
  ana_free(al->heap);
  ana_free(al->bheap);
  ana_free(al->touched);
  ana_free(al->taken);
  while (al->head) {
    struct qev *q = al->head;
    al->head = q->next;
    ana_free(q);
  }
  for (size_t i = 0; i < al->accounts.cap; i++)
    if (al->accounts.v[i].key)
      ana_free(al->accounts.v[i].val);
  smap_fini(&al->accounts);
  while (al->subs) {
    struct sub *s = al->subs;
    al->subs = s->next;
    ana_free(s);
  }
  ana_local_alerts_close(al->state);
  ana_local_conn_close(al->lconn);
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
  out->dropped = ana_prom_counter_get(&al->dropped);
}

int ana_alerts_window(struct ana_alerts *al, const char *alert_id, ana_alerts_window_fn fn,
                      void *ctx, int64_t *from_ms, int64_t *to_ms) {
  pthread_mutex_lock(&al->mu);
  struct rule *r = smap_get(&al->rules, alert_id);
  int n = 0;
  if (r && r->ps) {
    *to_ms = r->ps->cur_start + r->ps->pane_ms;
    *from_ms = *to_ms - ANA_ALERT_PANES * r->ps->pane_ms;
    for (size_t i = 0; i < r->n_inst; i++) {
      double v = 0;
      bool has = window_value(r, &r->inst[i], &v) == 1;
      fn(ctx, (const char *const *)r->inst[i].vals, r->n_dims, r->inst[i].other, has, v);
      n++;
    }
  }
  pthread_mutex_unlock(&al->mu);
  return r ? n : -1;
}
