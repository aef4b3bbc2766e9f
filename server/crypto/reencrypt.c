/* Re-encryption of the events stored before a field joined ENCRYPTED_FIELDS.
 *
 * State (local database, reencrypt_state.c): the field list the stored
 * events are sealed under, the last sequence the job covers, the next one
 * to read and the phase. At start the configured list is compared with it:
 * a list the stored one covers (and a finished job) needs nothing; any other
 * starts a job over every event stored so far (one already sealed is only
 * read); an unfinished job for the same list resumes where it stopped.
 * Every start writes the list it runs with, so events stored meanwhile are
 * known to be sealed under it.
 *
 * One batch (REENCRYPT_BATCH_EVENTS events read, at most as many
 * rewritten), in this order so that a crash anywhere repeats it harmlessly:
 * the events to rewrite are noted (durably), their free-text entries
 * removed (the index reads the words from their stored text, still the old
 * one), their rows rewritten (the event store's rewrite, one transaction),
 * their text indexed again (skipped for events indexed already), then the
 * notes dropped and the position moved in one transaction. A batch repeated
 * after a crash finds the rewritten events sealed and indexes the noted ones
 * again. Then the rollups that group or filter by a field are rebuilt, the
 * free-text index compacted, the fields' values in alert history entries
 * made blind indexes, the event bodies compressed with a dictionary
 * trained before the job began (retired from the writer at its start) stored
 * uncompressed and those dictionaries deleted, and the database's free pages
 * and WAL emptied. */
#include "ana_reencrypt.h"

#include "ana_alloc.h"
#include "ana_arena.h"
#include "ana_clock.h"
#include "ana_ingest.h"
#include "ana_local_db.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "ana_proto_walk.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

enum { PHASE_REWRITE = 0, PHASE_FINISH = 1, PHASE_DONE = 2 };

/* How long the index and the rollups are waited for per try, and the WAL
 * truncation at the end. */
#define WAIT_STEP_MS 1000
#define SCRUB_TIMEOUT_MS 30000
#define RETRY_MAX_MS 30000

struct ana_reencrypt {
  struct ana_reencrypt_options o;
  struct ana_local_conn *conn;
  struct ana_local_reencryption st; /* the thread's; the atomics below are what others read */
  bool has_fields;
  bool unavailable; /* the state could not be read or written */

  pthread_t thread;
  bool started;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  bool stop;

  atomic_int phase;
  atomic_uint_fast64_t upto_seq, next_seq, rewritten;
  struct ana_prom_counter batches, errors;
  bool metrics_registered;
};

static void publish(struct ana_reencrypt *j) {
  atomic_store(&j->phase, j->st.phase);
  atomic_store(&j->upto_seq, j->st.upto_seq);
  atomic_store(&j->next_seq, j->st.next_seq);
  atomic_store(&j->rewritten, j->st.rewritten);
}

/* Waits ms or until stop; returns true when stopping. */
static bool pause_or_stop(struct ana_reencrypt *j, int ms) {
  pthread_mutex_lock(&j->mu);
  if (!j->stop && ms > 0) {
    struct timespec ts = ana_deadline_in_ms(ms);
    pthread_cond_timedwait(&j->cond, &j->mu, &ts);
  }
  bool stop = j->stop;
  pthread_mutex_unlock(&j->mu);
  return stop;
}

/* ------------------------------------------------------------------ */
/* one batch                                                            */

struct batch {
  struct ana_reencrypt *j;
  struct ana_arena arena;
  struct ana_event_record *records;
  size_t n, cap;
  uint64_t last_seen; /* the highest sequence read */
  size_t read;
};

/* A spooled event: re-sealed into a record when it holds a configured field
 * in clear. Stops past the job's last sequence. */
static int take_event(void *ctx, const struct ana_spooled_event *ev, struct ana_error *err) {
  struct batch *b = ctx;
  struct ana_reencrypt *j = b->j;
  if (ev->seq > j->st.upto_seq)
    return 1;
  b->last_seen = ev->seq;
  b->read++;
  Analytics__V1__Event *e =
      (void *)ana_proto_unpack(&analytics__v1__event__descriptor, &b->arena.pb, ev->payload,
                               ev->payload_len, ANA_PROTO_MAX_DEPTH_CEILING, NULL);
  if (!e) {
    ANA_WARN("crypto", "re-encryption: event %llu: payload unreadable, left as it is",
             (unsigned long long)ev->seq);
    return 0;
  }
  Google__Protobuf__Struct *blind = NULL;
  int found =
      ana_crypto_event_reseal(j->o.crypto, j->o.fields, ev->account_id, e, &b->arena, &blind, err);
  if (found < 0)
    return found;
  if (found == 0)
    return 0;
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    struct ana_event_record *r = ana_arena_alloc(&b->arena, cap * sizeof *r);
    if (!r)
      return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (b->n)
      memcpy(r, b->records, b->n * sizeof *r);
    b->records = r;
    b->cap = cap;
  }
  struct ana_event_record *r = &b->records[b->n];
  memset(r, 0, sizeof *r);
  r->seq = ev->seq;
  r->timestamp_ms = ev->timestamp_ms;
  r->account_id = ana_arena_strdup(&b->arena, ev->account_id);
  size_t len = protobuf_c_message_get_packed_size(&e->base);
  uint8_t *payload = ana_arena_alloc(&b->arena, len ? len : 1);
  if (!r->account_id || !payload ||
      ana_ingest_record_text(e, blind, &b->arena, &r->properties_json, &r->search_text) < 0)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  r->payload_len = protobuf_c_message_pack(&e->base, payload);
  r->payload = payload;
  b->n++;
  return 0;
}

/* The events to note and index again (their references): the batch's
 * rewrites and any noted by a batch a crash interrupted. Caller frees. */
static int64_t *batch_refs(const struct batch *b, const int64_t *pending, size_t n_pending,
                           size_t *n) {
  int64_t *refs = ana_malloc((b->n + n_pending + 1) * sizeof *refs);
  *n = 0;
  if (!refs)
    return NULL;
  for (size_t i = 0; i < b->n; i++)
    refs[(*n)++] = ana_local_event_ref(b->records[i].timestamp_ms, b->records[i].seq);
  for (size_t i = 0; i < n_pending; i++) {
    bool dup = false;
    for (size_t k = 0; k < b->n && !dup; k++)
      dup = refs[k] == pending[i];
    if (!dup)
      refs[(*n)++] = pending[i];
  }
  return refs;
}

/* Returns 1 when a batch was done, 0 when the events are all done, or a
 * negative error (the batch is repeated later). */
static int run_batch(struct ana_reencrypt *j, struct ana_error *err) {
  struct batch b = {.j = j};
  ana_arena_init(&b.arena, 64 << 10, 0);
  int64_t *pending = NULL, *seqs = NULL;
  size_t n_pending = 0, n_seqs = 0, done = 0;
  int rc = ana_local_reencryption_pending(j->conn, &pending, &n_pending, err);
  if (rc == 0) {
    uint64_t after = j->st.next_seq > 0 ? j->st.next_seq - 1 : 0;
    rc = ana_local_spool_each(j->o.db, after, j->o.batch_events, take_event, &b, err);
  }
  if (rc < 0)
    goto out;
  if (b.read == 0 && n_pending == 0) {
    rc = 0; /* nothing left up to upto_seq */
    goto out;
  }
  if (!(seqs = batch_refs(&b, pending, n_pending, &n_seqs))) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  if (n_seqs > 0) {
    if ((rc = ana_local_reencryption_note(j->conn, seqs, n_seqs, err)) < 0)
      goto out;
    if (j->o.search && j->o.search->reindex &&
        (rc = j->o.search->remove(j->o.search_index, seqs, n_seqs, err)) < 0)
      goto out;
    if (b.n > 0 && (rc = j->o.events->rewrite(j->o.event_store, b.records, b.n, err)) < 0)
      goto out;
    /* Fewer when retention deleted some meanwhile; the noted events not to
     * rewrite any more were rewritten by a batch a crash interrupted. */
    done = (b.n > 0 ? (size_t)rc : 0) + (n_seqs - b.n);
    if (j->o.search && j->o.search->reindex &&
        (rc = j->o.search->reindex(j->o.search_index, seqs, n_seqs, err)) < 0)
      goto out;
  }
  uint64_t next = b.read ? b.last_seen + 1 : j->st.next_seq;
  if (b.read == 0)
    next = j->st.upto_seq + 1;
  if ((rc = ana_local_reencryption_advance(j->conn, next, done, err)) < 0)
    goto out;
  j->st.next_seq = next;
  j->st.rewritten += done;
  publish(j);
  ana_prom_counter_add(&j->batches, 1);
  rc = 1;
out:
  ana_free(seqs);
  ana_free(pending);
  ana_arena_fini(&b.arena);
  return rc;
}

/* ------------------------------------------------------------------ */
/* the phases                                                           */

static int put_phase(struct ana_reencrypt *j, int phase, struct ana_error *err) {
  j->st.phase = phase;
  int rc = ana_local_reencryption_put(j->conn, &j->st, err);
  publish(j);
  return rc;
}

/* Rewrites the events; returns 1 when done, 0 when stopping, or an error. */
static int rewrite_phase(struct ana_reencrypt *j, struct ana_error *err) {
  /* The index must hold every event the job rewrites (it removes and adds
   * their entries; later ones the index's thread reads rewritten). */
  while (j->o.search && j->o.search->reindex &&
         j->o.search->indexed_seq(j->o.search_index) < j->st.upto_seq) {
    struct ana_error werr;
    j->o.search->wait(j->o.search_index, j->st.upto_seq, WAIT_STEP_MS, &werr);
    if (pause_or_stop(j, 0))
      return 0;
  }
  for (;;) {
    int rc = run_batch(j, err);
    if (rc <= 0)
      return rc < 0 ? rc : 1;
    if (pause_or_stop(j, j->o.pause_ms))
      return 0;
  }
}

/* Stores uncompressed every body compressed with a dictionary trained
 * before the job began (it may hold fragments of the clear values), then
 * deletes those dictionaries. Repeated from the first event after a stop
 * (it only reads the bodies done already). Returns 1 when done, 0 when
 * stopping, or an error. */
static int undict(struct ana_reencrypt *j, struct ana_error *err) {
  int64_t after = INT64_MIN;
  uint64_t total = 0;
  for (;;) {
    uint64_t n = 0;
    int rc = ana_local_reencryption_undict(j->conn, j->st.tainted_dicts, &after, j->o.batch_events,
                                           &n, err);
    if (rc < 0)
      return rc;
    total += n;
    if (rc == 0)
      break;
    if (pause_or_stop(j, j->o.pause_ms))
      return 0;
  }
  int rc = ana_local_reencryption_drop_dicts(j->conn, j->st.tainted_dicts, err);
  if (rc < 0)
    return rc;
  ANA_INFO("crypto",
           "re-encryption: %llu event bodies compressed with dictionaries trained before "
           "(ids up to %d) stored uncompressed, those dictionaries deleted",
           (unsigned long long)total, j->st.tainted_dicts);
  return 1;
}

/* s with every occurrence of from replaced by to (heap); NULL when out of
 * memory. */
static char *replace_all(const char *s, const char *from, const char *to) {
  size_t fl = strlen(from), tl = strlen(to), n = 0;
  for (const char *p = strstr(s, from); p; p = strstr(p + fl, from))
    n++;
  char *out = ana_malloc(strlen(s) + n * (tl > fl ? tl - fl : 0) + 1);
  if (!out)
    return NULL;
  char *w = out;
  for (const char *p = s, *q; (q = strstr(p, from)); p = q + fl) {
    memcpy(w, p, (size_t)(q - p));
    w += q - p;
    memcpy(w, to, tl);
    w += tl;
    s = q + fl;
  }
  strcpy(w, s);
  return out;
}

/* An alert history entry written while a dimension that is one of the
 * fields held clear values: each such value becomes its blind index (as the
 * rebuilt rollups' group keys are) in the group and in the message. */
static int blind_alert_entry(void *ctx, const char *account_id, const char *group_json,
                             const char *message, char **new_group_json, char **new_message,
                             struct ana_error *err) {
  struct ana_reencrypt *j = ctx;
  json_t *g = json_loads(group_json, 0, NULL);
  if (!json_is_object(g)) {
    json_decref(g);
    return 0;
  }
  const char *key;
  json_t *v;
  char *msg = NULL;
  int rc = 0;
  bool changed = false;
  json_object_foreach(g, key, v) {
    const char *name = ana_crypto_fields_property(j->o.fields, key);
    const char *text = json_string_value(v);
    if (!name || !text || !*text ||
        strncmp(text, ANA_CRYPTO_BLIND_PREFIX, sizeof ANA_CRYPTO_BLIND_PREFIX - 1) == 0)
      continue;
    char blind[ANA_CRYPTO_BLIND_CHARS + 1];
    if (ana_crypto_blind_index(j->o.crypto, account_id, name, text, strlen(text), blind) < 0) {
      rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "alert history: no blind index for %s", name);
      break;
    }
    char *m = replace_all(msg ? msg : message, text, blind);
    if (!m || json_object_set_new(g, key, json_string(blind)) < 0) {
      ana_free(m);
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    ana_free(msg);
    msg = m;
    changed = true;
  }
  if (rc == 0 && changed) {
    char *gj = json_dumps(g, JSON_COMPACT | JSON_SORT_KEYS);
    size_t n = gj ? strlen(gj) + 1 : 0;
    if (gj && (*new_group_json = ana_malloc(n)))
      memcpy(*new_group_json, gj, n);
    free(gj);
    if (!*new_group_json)
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    else if (strcmp(msg, message) != 0) {
      *new_message = msg;
      msg = NULL;
    }
  }
  ana_free(msg);
  json_decref(g);
  return rc;
}

static int finish_phase(struct ana_reencrypt *j, struct ana_error *err) {
  int blinded =
      ana_local_reencryption_alert_history(j->conn, j->o.batch_events, blind_alert_entry, j, err);
  if (blinded < 0)
    return blinded;
  if (blinded > 0)
    ANA_INFO("crypto",
             "re-encryption: %d alert history entries' values of the fields made blind indexes",
             blinded);
  if (j->st.rewritten > 0 && j->o.rebuild_rollups) {
    int n = j->o.rebuild_rollups(j->o.rollups_ctx, j->o.fields, err);
    if (n < 0)
      return n;
    if (n > 0)
      ANA_INFO("crypto", "re-encryption: %d metrics' rollups rebuilt from the rewritten events", n);
    while (j->o.rollups_settled && !j->o.rollups_settled(j->o.rollups_ctx, WAIT_STEP_MS))
      if (pause_or_stop(j, 0))
        return 0;
  }
  if (j->st.rewritten > 0 && j->o.search && j->o.search->compact) {
    int rc = j->o.search->compact(j->o.search_index, err);
    if (rc < 0)
      return rc;
  }
  if (j->st.tainted_dicts > 0) {
    int rc = undict(j, err);
    if (rc <= 0)
      return rc;
  }
  if (j->st.rewritten == 0 && j->st.tainted_dicts == 0 && blinded == 0)
    return 1; /* every event was sealed already: nothing to rebuild or compact */
  int rc = ana_local_db_scrub(j->conn, SCRUB_TIMEOUT_MS, err);
  return rc < 0 ? rc : 1;
}

static void *job_thread(void *arg) {
  pthread_setname_np(pthread_self(), "ana-reencrypt"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_reencrypt *j = arg;
  int64_t backoff = 100;
  while (!pause_or_stop(j, 0) && j->st.phase != PHASE_DONE) {
    struct ana_error err;
    ana_error_clear(&err);
    int rc = j->st.phase == PHASE_REWRITE ? rewrite_phase(j, &err) : finish_phase(j, &err);
    if (rc == 1)
      rc = put_phase(j, j->st.phase + 1, &err);
    if (rc < 0) {
      ana_prom_counter_add(&j->errors, 1);
      ANA_WARN("crypto", "re-encryption: %s; retrying in %lld ms", err.message, (long long)backoff);
      if (pause_or_stop(j, (int)backoff))
        break;
      backoff = backoff * 2 < RETRY_MAX_MS ? backoff * 2 : RETRY_MAX_MS;
      continue;
    }
    backoff = 100;
    if (j->st.phase == PHASE_DONE)
      ANA_INFO("crypto",
               "re-encryption finished: %llu events rewritten with %s sealed (up to event %llu), "
               "free-text index and rollups rebuilt, free pages and WAL emptied",
               (unsigned long long)j->st.rewritten, j->st.fields,
               (unsigned long long)j->st.upto_seq);
  }
  return NULL;
}

/* ------------------------------------------------------------------ */
/* start, stop, status                                                  */

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_reencrypt *j = ctx;
  ana_prom_write_family(w, "ana_reencrypt_done", "gauge",
                        "1 once the events stored before ENCRYPTED_FIELDS covered their fields "
                        "are rewritten sealed (or there were none); 0 while the job runs.");
  ana_prom_write_u64(w, "ana_reencrypt_done", NULL, atomic_load(&j->phase) == PHASE_DONE);
  ana_prom_write_family(w, "ana_reencrypt_next_sequence", "gauge",
                        "The re-encryption job's position: events below it are done.");
  ana_prom_write_u64(w, "ana_reencrypt_next_sequence", NULL, atomic_load(&j->next_seq));
  ana_prom_write_family(w, "ana_reencrypt_last_sequence", "gauge",
                        "The last event the re-encryption job covers.");
  ana_prom_write_u64(w, "ana_reencrypt_last_sequence", NULL, atomic_load(&j->upto_seq));
  ana_prom_write_family(w, "ana_reencrypt_events_rewritten", "gauge",
                        "Events the re-encryption job rewrote (since it began, across restarts).");
  ana_prom_write_u64(w, "ana_reencrypt_events_rewritten", NULL, atomic_load(&j->rewritten));
  ana_prom_write_family(w, "ana_reencrypt_errors_total", "counter",
                        "Re-encryption steps that failed (each is retried).");
  ana_prom_write_u64(w, "ana_reencrypt_errors_total", NULL, ana_prom_counter_get(&j->errors));
}

/* Decides from the stored state; fills j->st. */
static int decide(struct ana_reencrypt *j, struct ana_error *err) {
  struct ana_local_reencryption old;
  int found = ana_local_reencryption_get(j->conn, &old, err);
  if (found < 0)
    return found;
  uint64_t last = 0;
  int rc = ana_local_spool_last_seq(j->o.db, &last, err);
  if (rc < 0)
    return rc;
  struct ana_local_reencryption *st = &j->st;
  memset(st, 0, sizeof *st);
  ana_crypto_fields_canonical(j->o.fields, st->fields, sizeof st->fields);
  if (!j->has_fields || last == 0 ||
      (found && old.phase == PHASE_DONE && ana_crypto_fields_covers(j->o.fields, old.fields))) {
    /* Nothing stored can hold these fields in clear (events stored from
     * now on are sealed under this list). */
    st->upto_seq = last;
    st->next_seq = last + 1;
    st->phase = PHASE_DONE;
    st->started_at_ms = ana_clock_wall_ms();
    if (found && old.phase == PHASE_DONE && strcmp(old.fields, st->fields) == 0)
      return 0; /* unchanged: no write (a read-only start stays one) */
    return ana_local_reencryption_put(j->conn, st, err);
  }
  if (found && old.phase != PHASE_DONE && strcmp(old.fields, st->fields) == 0) {
    *st = old; /* the same list, unfinished: resume */
    ANA_WARN("crypto",
             "re-encryption of events stored before ENCRYPTED_FIELDS covered %s: resuming at "
             "event %llu of %llu",
             st->fields, (unsigned long long)st->next_seq, (unsigned long long)st->upto_seq);
    return 0;
  }
  st->upto_seq = last;
  st->next_seq = 1;
  st->phase = PHASE_REWRITE;
  /* The dictionaries trained so far may hold fragments of clear values. */
  if ((rc = ana_local_reencryption_last_dict(j->conn, &st->tainted_dicts, err)) < 0)
    return rc;
  st->started_at_ms = ana_clock_wall_ms();
  ANA_WARN("crypto",
           "ENCRYPTED_FIELDS (%s) covers fields that events stored so far may hold in clear: "
           "re-encrypting the %llu events stored up to now in the background",
           st->fields, (unsigned long long)last);
  return ana_local_reencryption_put(j->conn, st, err);
}

struct ana_reencrypt *ana_reencrypt_start(const struct ana_reencrypt_options *o,
                                          struct ana_error *err) {
  struct ana_reencrypt *j = ana_calloc(1, sizeof *j);
  if (!j) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  j->o = *o;
  if (j->o.batch_events <= 0)
    j->o.batch_events = 500;
  j->has_fields = o->fields != NULL;
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cond, NULL);
  if (!(j->conn = ana_local_conn_open(o->db, err)))
    goto fail;
  if (decide(j, err) < 0) {
    /* E.g. a full disk: the server starts all the same; the next start
     * decides again. */
    ANA_WARN("crypto", "re-encryption of stored events not started: %s", err->message);
    j->unavailable = true;
    ana_error_clear(err);
    return j;
  }
  publish(j);
  j->metrics_registered = ana_prom_register(collect, j) == 0;
  if (j->st.phase == PHASE_DONE)
    return j;
  if (j->st.tainted_dicts > 0)
    ana_local_db_retire_dicts(o->db, j->st.tainted_dicts);
  if (!o->events->rewrite) {
    ANA_WARN("crypto",
             "re-encryption: the %s event store cannot rewrite stored events: those stored "
             "before ENCRYPTED_FIELDS covered %s keep them in clear",
             o->events->name, j->st.fields);
    return j;
  }
  if (pthread_create(&j->thread, NULL, job_thread, j) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the re-encryption thread");
    goto fail;
  }
  j->started = true;
  return j;
fail:
  ana_reencrypt_stop(j);
  return NULL;
}

void ana_reencrypt_stop(struct ana_reencrypt *j) {
  if (!j)
    return;
  if (j->started) {
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
  }
  if (j->metrics_registered)
    ana_prom_unregister(collect, j);
  ana_local_conn_close(j->conn);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cond);
  ana_free(j);
}

void ana_reencrypt_status(struct ana_reencrypt *j, struct ana_reencrypt_status *st) {
  memset(st, 0, sizeof *st);
  int phase = atomic_load(&j->phase);
  st->state = !j->has_fields          ? "none"
              : j->unavailable        ? "unavailable"
              : phase == PHASE_DONE   ? "done"
              : phase == PHASE_FINISH ? "finishing"
              : j->started            ? "running"
                                      : "unsupported";
  st->upto_seq = atomic_load(&j->upto_seq);
  st->next_seq = atomic_load(&j->next_seq);
  st->rewritten = atomic_load(&j->rewritten);
}
