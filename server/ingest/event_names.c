/* The catalog of event names each account has sent (table event_names in
 * the local database), kept by a commit-hook subscriber off the commit path.
 *
 * The hook only adds each committed event to an in-memory map (account,
 * name) -> count, first and last seen, and notes the highest commit
 * sequence number it has heard. The catalog's thread takes the whole map
 * every FLUSH_MS and writes it in one transaction on its own connection,
 * with the sequence number as the catalog's watermark: since the hook hears
 * the commits in order, every event up to the watermark is in the catalog
 * and none after it.
 *
 * Crash safety: not the same transaction as the events (that would put the
 * catalog's writes inside every commit, on every acknowledgement's path),
 * but the watermark. After a crash the thread first reads the events
 * committed after the stored watermark (at most about a second of them,
 * more after an upgrade from a database without the catalog) and adds them
 * before it stores anything else, so an acknowledged name is listed again
 * within a second of the restart, with exact counts. A failed write keeps
 * the map for the next round. Retention deletes events, not names: a count
 * is of the events tracked, not of those still stored.
 *
 * Past `max_names` names an account's further names are counted
 * (ana_event_names_refused_total) but not added; a warning is logged once
 * per account (at most one such line a second). */
#include "ana_event_names.h"
#include "ana_local_db.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"
#include "ana_prom.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How often the thread stores the map: counts lag the commits by at most
 * this plus one write. */
#define FLUSH_MS 500
/* Entries in the map that wake the thread before FLUSH_MS. */
#define EARLY_FLUSH_ENTRIES 20000
#define BUCKETS 4096
/* Accounts remembered as warned about the limit. */
#define WARNED_MAX 1024

struct entry {
  struct entry *next;
  uint64_t hash;
  int64_t count, first_ms, last_ms;
  char *name; /* in the same allocation, after account */
  char account[];
};

struct ana_event_names {
  struct ana_local_db *db;
  struct ana_local_names *table; /* the thread's own writing connection */
  int max_names;

  pthread_mutex_t mu;
  pthread_cond_t wake;
  struct entry *buckets[BUCKETS];
  size_t n_entries;
  struct entry *flushing; /* taken by the thread, not committed yet */
  uint64_t heard_seq;     /* highest commit sequence number heard */
  uint64_t rebuild_upto;  /* events up to here are read at start */
  bool stop, started;
  pthread_t thread;

  pthread_mutex_t flush_mu; /* one flush at a time */
  uint64_t stored_seq;      /* the stored watermark */
  ana_event_names_added_fn added;
  void *added_ctx;

  char *warned[WARNED_MAX];
  size_t n_warned;
  int64_t last_warn_ms;
  atomic_uint_fast64_t refused;
  bool metrics_registered;
};

static uint64_t hash_of(const char *account, const char *name) {
  uint64_t h = 1469598103934665603ULL;
  for (const char *p = account; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  h = (h ^ 0xff) * 1099511628211ULL;
  for (const char *p = name; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  return h;
}

/* Adds to the map; called with mu held. Returns false when out of memory
 * (the event's name is then missing until a restart rebuilds it). */
static bool add_locked(struct ana_event_names *en, const char *account, const char *name,
                       int64_t count, int64_t first_ms, int64_t last_ms) {
  uint64_t h = hash_of(account, name);
  struct entry **slot = &en->buckets[h % BUCKETS];
  for (struct entry *e = *slot; e; e = e->next) {
    if (e->hash == h && strcmp(e->account, account) == 0 && strcmp(e->name, name) == 0) {
      e->count += count;
      if (first_ms < e->first_ms)
        e->first_ms = first_ms;
      if (last_ms > e->last_ms)
        e->last_ms = last_ms;
      return true;
    }
  }
  size_t la = strlen(account) + 1, ln = strlen(name) + 1;
  struct entry *e = ana_malloc(sizeof *e + la + ln);
  if (!e)
    return false;
  memcpy(e->account, account, la);
  e->name = e->account + la;
  memcpy(e->name, name, ln);
  e->hash = h;
  e->count = count;
  e->first_ms = first_ms;
  e->last_ms = last_ms;
  e->next = *slot;
  *slot = e;
  en->n_entries++;
  return true;
}

void ana_event_names_on_commit(void *ctx, const struct ana_event_record *records, size_t n) {
  struct ana_event_names *en = ctx;
  pthread_mutex_lock(&en->mu);
  for (size_t i = 0; i < n; i++) {
    const struct ana_event_record *r = &records[i];
    if (r->duplicate)
      continue;
    if (!add_locked(en, r->account_id, r->event_name, 1, r->received_at_ms, r->received_at_ms))
      ANA_WARN("events", "event names: out of memory; a restart lists the missing names");
    if (r->seq > en->heard_seq)
      en->heard_seq = r->seq;
  }
  if (en->n_entries >= EARLY_FLUSH_ENTRIES)
    pthread_cond_signal(&en->wake);
  pthread_mutex_unlock(&en->mu);
}

static int cmp_item(const void *a, const void *b) {
  const struct ana_local_name_count *x = a, *y = b;
  int c = strcmp(x->account, y->account);
  return c ? c : strcmp(x->name, y->name);
}

static void free_list(struct entry *e) {
  while (e) {
    struct entry *next = e->next;
    ana_free(e);
    e = next;
  }
}

/* Logs, once per account and at most once a second, that it is full. */
static void warn_full(void *ctx, const char *account, const char *name) {
  struct ana_event_names *en = ctx;
  atomic_fetch_add(&en->refused, 1);
  for (size_t i = 0; i < en->n_warned; i++)
    if (strcmp(en->warned[i], account) == 0)
      return;
  int64_t now = ana_clock_wall_ms();
  if (now - en->last_warn_ms < 1000 || en->n_warned == WARNED_MAX)
    return;
  en->last_warn_ms = now;
  en->warned[en->n_warned] = ana_strdup(account);
  if (en->warned[en->n_warned])
    en->n_warned++;
  ANA_WARN("events",
           "account %s has %d event names (EVENT_NAMES_MAX): \"%.64s\" and further new names are "
           "stored and counted but not listed",
           account, en->max_names, name);
}

struct added {
  const char *account;
  const char **names;
  size_t n;
};

/* Writes the items (sorted by account, name) and the watermark in one
 * transaction. Fills *added with the names new to each account (borrowed
 * from the items). */
static int store(struct ana_event_names *en, struct ana_local_name_count *items, size_t n,
                 uint64_t watermark, struct added *added, size_t *n_added, const char **names_buf,
                 struct ana_error *err) {
  *n_added = 0;
  int rc = ana_local_names_store(en->table, items, n, en->max_names, watermark, warn_full, en, err);
  if (rc < 0)
    return rc;
  size_t used = 0;
  for (size_t i = 0; i < n; i++) {
    struct ana_local_name_count *e = &items[i];
    if (!e->added)
      continue;
    struct added *a = *n_added ? &added[*n_added - 1] : NULL;
    if (!a || strcmp(a->account, e->account) != 0) {
      a = &added[(*n_added)++];
      a->account = e->account;
      a->names = names_buf + used; /* the account's names are consecutive */
      a->n = 0;
    }
    a->names[a->n++] = e->name;
    used++;
  }
  return 0;
}

int ana_event_names_flush(struct ana_event_names *en, struct ana_error *err) {
  pthread_mutex_lock(&en->flush_mu);
  pthread_mutex_lock(&en->mu);
  struct entry *list = NULL;
  size_t n = en->n_entries;
  for (size_t b = 0; b < BUCKETS; b++) {
    for (struct entry *e = en->buckets[b], *next; e; e = next) {
      next = e->next;
      e->next = list;
      list = e;
    }
    en->buckets[b] = NULL;
  }
  en->n_entries = 0;
  en->flushing = list;
  uint64_t watermark = en->heard_seq;
  pthread_mutex_unlock(&en->mu);

  int rc = 0;
  if (n == 0 && watermark == en->stored_seq) {
    pthread_mutex_unlock(&en->flush_mu);
    return 0;
  }
  struct ana_local_name_count *items = ana_calloc(n ? n : 1, sizeof *items);
  struct added *added = ana_calloc(n ? n : 1, sizeof *added);
  const char **names_buf = ana_calloc(n ? n : 1, sizeof *names_buf);
  size_t n_added = 0;
  if (!items || !added || !names_buf) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "event names: out of memory");
  } else {
    size_t i = 0;
    for (struct entry *e = list; e; e = e->next)
      items[i++] = (struct ana_local_name_count){e->account,  e->name,    e->count,
                                                 e->first_ms, e->last_ms, false};
    qsort(items, n, sizeof *items, cmp_item);
    rc = store(en, items, n, watermark, added, &n_added, names_buf, err);
  }
  if (rc == 0)
    en->stored_seq = watermark;
  if (rc == 0 && en->added) {
    for (size_t i = 0; i < n_added; i++)
      en->added(en->added_ctx, added[i].account, added[i].names, added[i].n);
  }
  pthread_mutex_lock(&en->mu);
  en->flushing = NULL;
  if (rc < 0) { /* back into the map, for the next round */
    for (struct entry *e = list; e; e = e->next)
      add_locked(en, e->account, e->name, e->count, e->first_ms, e->last_ms);
  }
  pthread_mutex_unlock(&en->mu);
  free_list(list);
  ana_free(items);
  ana_free(added);
  ana_free(names_buf);
  pthread_mutex_unlock(&en->flush_mu);
  return rc;
}

static int add_rebuilt(void *ctx, const struct ana_local_name_count *c) {
  struct ana_event_names *en = ctx;
  add_locked(en, c->account, c->name, c->count, c->first_ms, c->last_ms);
  return 0;
}

/* Adds the events committed after the stored watermark, up to what was
 * committed when the catalog opened (later ones reach the hook). */
static int rebuild(struct ana_event_names *en, struct ana_error *err) {
  if (en->rebuild_upto <= en->stored_seq)
    return 0;
  pthread_mutex_lock(&en->mu);
  int names =
      ana_local_names_rebuild(en->table, en->stored_seq, en->rebuild_upto, add_rebuilt, en, err);
  if (names >= 0 && en->rebuild_upto > en->heard_seq)
    en->heard_seq = en->rebuild_upto;
  pthread_mutex_unlock(&en->mu);
  if (names < 0)
    return names;
  ANA_INFO("events", "event names: %d names of events after commit %llu added", names,
           (unsigned long long)en->stored_seq);
  return 0;
}

static void *names_thread(void *arg) {
  pthread_setname_np(pthread_self(), "ana-names"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_event_names *en = arg;
  struct ana_error err;
  bool rebuilt = false;
  pthread_mutex_lock(&en->mu);
  for (;;) {
    bool stop = en->stop;
    pthread_mutex_unlock(&en->mu);
    if (!rebuilt) {
      rebuilt = rebuild(en, &err) == 0;
      if (!rebuilt)
        ANA_WARN("events", "%s; retrying", err.message);
    }
    /* Nothing is stored before the rebuild: the watermark would pass it. */
    if (rebuilt && ana_event_names_flush(en, &err) < 0)
      ANA_WARN("events", "%s; retrying", err.message);
    pthread_mutex_lock(&en->mu);
    if (stop)
      break;
    struct timespec ts = ana_deadline_in_ms(FLUSH_MS);
    while (!en->stop && en->n_entries < EARLY_FLUSH_ENTRIES &&
           pthread_cond_timedwait(&en->wake, &en->mu, &ts) == 0) {
    }
  }
  pthread_mutex_unlock(&en->mu);
  return NULL;
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_event_names *en = ctx;
  ana_prom_write_family(w, "ana_event_names_refused_total", "counter",
                        "New event names not added to a full catalog (EVENT_NAMES_MAX).");
  ana_prom_write_u64(w, "ana_event_names_refused_total", NULL, atomic_load(&en->refused));
}

struct ana_event_names *ana_event_names_create(struct ana_local_db *db,
                                               const struct ana_event_names_options *o,
                                               struct ana_error *err) {
  struct ana_event_names *en = ana_calloc(1, sizeof *en);
  if (!en) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  en->db = db;
  en->max_names = o->max_names > 0 ? o->max_names : 10000;
  pthread_mutex_init(&en->mu, NULL);
  pthread_mutex_init(&en->flush_mu, NULL);
  pthread_cond_init(&en->wake, NULL);
  en->table = ana_local_names_open(db, &en->stored_seq, &en->rebuild_upto, err);
  if (!en->table)
    goto fail;
  /* A catalog ahead of its events (a database restored from an older
   * copy): start the watermark over at the events. */
  if (en->stored_seq > en->rebuild_upto)
    en->stored_seq = en->rebuild_upto;
  en->heard_seq = en->stored_seq;
  en->metrics_registered = ana_prom_register(collect, en) == 0;
  return en;
fail:
  ana_event_names_destroy(en);
  return NULL;
}

int ana_event_names_start(struct ana_event_names *en, ana_event_names_added_fn added, void *ctx,
                          struct ana_error *err) {
  en->added = added;
  en->added_ctx = ctx;
  if (pthread_create(&en->thread, NULL, names_thread, en) != 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the event names thread");
  en->started = true;
  return 0;
}

void ana_event_names_destroy(struct ana_event_names *en) {
  if (!en)
    return;
  if (en->metrics_registered)
    ana_prom_unregister(collect, en);
  if (en->started) {
    pthread_mutex_lock(&en->mu);
    en->stop = true;
    pthread_cond_signal(&en->wake);
    pthread_mutex_unlock(&en->mu);
    pthread_join(en->thread, NULL); /* its last round stores what is left */
  }
  for (size_t b = 0; b < BUCKETS; b++)
    free_list(en->buckets[b]);
  for (size_t i = 0; i < en->n_warned; i++)
    ana_free(en->warned[i]);
  ana_local_names_close(en->table);
  pthread_mutex_destroy(&en->mu);
  pthread_mutex_destroy(&en->flush_mu);
  pthread_cond_destroy(&en->wake);
  ana_free(en);
}

struct list_ctx {
  ana_event_name_fn fn;
  void *ctx;
};

static int list_row(void *ctx, const struct ana_local_name_count *c) {
  struct list_ctx *l = ctx;
  struct ana_event_name_info info = {
      .name = c->name,
      .first_seen_ms = c->first_ms,
      .last_seen_ms = c->last_ms,
      .count = c->count,
  };
  return l->fn(l->ctx, &info);
}

int ana_event_names_list(struct ana_event_names *en, const char *account_id, const char *prefix,
                         const char *after, int limit, ana_event_name_fn fn, void *ctx,
                         struct ana_error *err) {
  struct list_ctx l = {fn, ctx};
  return ana_local_names_list(en->db, account_id, prefix, after, limit, list_row, &l, err);
}

int ana_event_names_each_seen(struct ana_event_names *en, const char *account_id,
                              ana_event_name_fn fn, void *ctx, struct ana_error *err) {
  int rc = ana_event_names_list(en, account_id, NULL, NULL, en->max_names, fn, ctx, err);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&en->mu);
  for (size_t b = 0; b <= BUCKETS; b++) {
    for (struct entry *e = b < BUCKETS ? en->buckets[b] : en->flushing; e; e = e->next) {
      if (strcmp(e->account, account_id) != 0)
        continue;
      struct ana_event_name_info info = {.name = e->name};
      fn(ctx, &info);
    }
  }
  pthread_mutex_unlock(&en->mu);
  return 0;
}
