/* The module, the outbox and its senders: rows written in the caller's
 * transaction, delivered by NOTIFY_THREADS threads (each one attempt at a
 * time, so as many deliveries at once), retried with exponential backoff
 * and full jitter, each attempt recorded. A row being sent when the process
 * died is still pending in the database and is sent again on start, with
 * the same idempotency key. */
#include "notify_internal.h"

#include "ana_alloc.h"
#include "ana_arena.h"
#include "ana_heartbeat.h"
#include "ana_id.h"
#include "ana_log.h"
#include "ana_clock.h"
#include "ana_crypto.h"

/* What a sealed outbox payload is bound to (ana_crypto_seal's context). */
#define PAYLOAD_CONTEXT "notify.payload"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define CLAIM_BATCH 32
#define KEY_MAX 200

static char *dup_or_null(const char *s) {
  return s && s[0] ? ana_strdup(s) : NULL;
}

static bool key_ok(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || n > KEY_MAX)
    return false;
  for (const char *p = k; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          strchr("._:-", *p)))
      return false;
  return true;
}

/* The payload as stored: {"title","text","severity","values":[[n,v]],"links":[[l,u]]}. */
static char *payload_of(const struct ana_notification *nt) {
  json_t *values = json_array(), *links = json_array();
  for (size_t i = 0; values && i < nt->n_values; i++)
    json_array_append_new(values, json_pack("[s,s]", nt->values[i].name ? nt->values[i].name : "",
                                            nt->values[i].value ? nt->values[i].value : ""));
  for (size_t i = 0; links && i < nt->n_links; i++)
    json_array_append_new(links, json_pack("[s,s]", nt->links[i].label ? nt->links[i].label : "",
                                           nt->links[i].url ? nt->links[i].url : ""));
  json_t *doc =
      json_pack("{s:s, s:s, s:s, s:o, s:o}", "title", nt->title ? nt->title : "", "text",
                nt->text ? nt->text : "", "severity", nt->severity ? nt->severity : "info",
                "values", values ? values : json_array(), "links", links ? links : json_array());
  char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  return s;
}

int ana_notify_enqueue_in_txn(struct ana_notify *n, struct ana_local_conn *conn,
                              const struct ana_notification *nt, char *key_out,
                              struct ana_error *err) {
  (void)n;
  char key[KEY_MAX + 1];
  if (!nt->account_id || !nt->channel_id || !nt->channel_id[0])
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "channelId: is required");
  if (nt->idempotency_key && nt->idempotency_key[0]) {
    if (!key_ok(nt->idempotency_key))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "idempotencyKey: at most %d characters of [A-Za-z0-9._:-]", KEY_MAX);
    snprintf(key, sizeof key, "%s", nt->idempotency_key);
  } else if (ana_uuid7_generate(key) < 0) {
    return ana_error_set(err, ANA_STATUS_INTERNAL, "no randomness for a key");
  }
  char *payload = payload_of(nt);
  if (!payload)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (nt->sensitive && n->o.crypto) {
    char *sealed = NULL;
    int src = ana_crypto_seal(n->o.crypto, nt->account_id, PAYLOAD_CONTEXT, payload,
                              strlen(payload), &sealed, err);
    OPENSSL_cleanse(payload, strlen(payload));
    free(payload);
    if (src < 0)
      return src;
    payload = strdup(sealed);
    ana_free(sealed);
    if (!payload)
      return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  int rc = ana_local_outbox_insert(conn, key, nt->account_id, nt->channel_id,
                                   nt->source ? nt->source : "", payload, ana_clock_wall_ms(), err);
  free(payload);
  if (rc == 0 && key_out)
    snprintf(key_out, KEY_MAX + 1, "%s", key);
  return rc;
}

int ana_notify_enqueue(struct ana_notify *n, const struct ana_notification *nt, char *key_out,
                       struct ana_error *err) {
  struct ana_local_conn *db = n->conn;
  pthread_mutex_lock(&n->db_mu);
  int rc = ana_local_conn_begin(db, err);
  if (rc == 0) {
    rc = ana_notify_enqueue_in_txn(n, db, nt, key_out, err);
    if (rc == 0)
      rc = ana_local_conn_commit(db, err);
    if (rc < 0)
      ana_local_conn_rollback(db);
  }
  pthread_mutex_unlock(&n->db_mu);
  if (rc == 0)
    ana_notify_wake(n);
  return rc;
}

void ana_notify_wake(struct ana_notify *n) {
  pthread_mutex_lock(&n->mu);
  n->woken = true;
  pthread_cond_broadcast(&n->wake);
  pthread_mutex_unlock(&n->mu);
}

/* One outbox row being delivered (strings owned). */
struct job {
  int64_t id;
  char *key, *account, *channel, *source, *payload;
  int attempts;
  int64_t created_ms;
};

static void job_fini(struct job *j) {
  ana_free(j->key);
  ana_free(j->account);
  ana_free(j->channel);
  ana_free(j->source);
  ana_free(j->payload);
  memset(j, 0, sizeof *j);
}

struct claiming {
  struct ana_notify *n;
  int slot;
  struct job *j;
  int64_t now, *next_due;
  int found;
};

static int claim_row(void *ctx, const struct ana_local_outbox_row *row) {
  struct claiming *c = ctx;
  struct ana_notify *n = c->n;
  bool busy = false;
  for (int i = 0; i < n->n_threads; i++)
    busy = busy || n->in_flight[i] == row->id;
  if (busy)
    return 0;
  if (row->next_attempt_ms > c->now) {
    *c->next_due = row->next_attempt_ms;
    return 1;
  }
  struct job *j = c->j;
  j->id = row->id;
  j->key = ana_strdup(row->key);
  j->account = ana_strdup(row->account_id);
  j->channel = ana_strdup(row->channel_id);
  j->source = ana_strdup(row->source);
  j->payload = ana_strdup(row->payload);
  j->attempts = row->attempts;
  j->created_ms = row->created_ms;
  if (!j->key || !j->account || !j->channel || !j->source || !j->payload) {
    job_fini(j);
    return 1;
  }
  n->in_flight[c->slot] = row->id;
  c->found = 1;
  return 1;
}

/* Under n->mu: claims a due row no other sender has (1), or finds none (0)
 * and sets *next_due to when the earliest pending row is due. */
static int claim(struct ana_notify *n, int slot, struct job *j, int64_t *next_due) {
  *next_due = INT64_MAX;
  struct claiming c = {n, slot, j, ana_clock_wall_ms(), next_due, 0};
  pthread_mutex_lock(&n->db_mu);
  ana_local_outbox_pending(n->conn, CLAIM_BATCH + n->n_threads, claim_row, &c);
  pthread_mutex_unlock(&n->db_mu);
  return c.found;
}

static uint64_t random64(void) {
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
    r = (uint64_t)ana_clock_wall_ms() * 6364136223846793005ULL;
  return r;
}

/* Records the attempt and the row's new state in one transaction. */
static void record(struct ana_notify *n, const struct job *j, int64_t at, int64_t took,
                   const char *outcome, const char *state, int64_t next_due,
                   const struct ana_notify_result *res) {
  struct ana_error err;
  pthread_mutex_lock(&n->db_mu);
  if (ana_local_outbox_record(n->conn, j->id, j->attempts + 1, at, outcome, res->status, res->error,
                              took, state, next_due, &err) < 0)
    ANA_ERROR("notify", "cannot record delivery attempt of %s: %s", j->key, err.message);
  pthread_mutex_unlock(&n->db_mu);
}

/* Decodes the stored payload into m (pointers into doc). */
static json_t *message_of(struct ana_notify *n, const struct job *j, struct ana_notify_message *m,
                          struct ana_notify_value *values, size_t max_values,
                          struct ana_notify_link *links, size_t max_links) {
  json_t *doc = NULL;
  if (ana_crypto_is_sealed(j->payload)) {
    char *clear = NULL;
    size_t len = 0;
    struct ana_error err;
    if (n->o.crypto && ana_crypto_open(n->o.crypto, j->account, PAYLOAD_CONTEXT, j->payload, &clear,
                                       &len, &err) == 0)
      doc = json_loadb(clear, len, 0, NULL);
    else
      ANA_ERROR("notify", "outbox row %s does not open: %s", j->key,
                n->o.crypto ? err.message : "no master key");
    if (clear)
      OPENSSL_cleanse(clear, len);
    ana_free(clear);
  } else {
    doc = json_loads(j->payload, 0, NULL);
  }
  memset(m, 0, sizeof *m);
  m->key = j->key;
  m->source = j->source;
  m->created_ms = j->created_ms;
  m->title = json_string_value(json_object_get(doc, "title"));
  m->text = json_string_value(json_object_get(doc, "text"));
  m->severity = json_string_value(json_object_get(doc, "severity"));
  size_t i;
  json_t *pair;
  json_array_foreach(json_object_get(doc, "values"), i, pair) {
    if (m->n_values == max_values)
      break;
    values[m->n_values].name = json_string_value(json_array_get(pair, 0));
    values[m->n_values].value = json_string_value(json_array_get(pair, 1));
    if (values[m->n_values].name && values[m->n_values].value)
      m->n_values++;
  }
  json_array_foreach(json_object_get(doc, "links"), i, pair) {
    if (m->n_links == max_links)
      break;
    links[m->n_links].label = json_string_value(json_array_get(pair, 0));
    links[m->n_links].url = json_string_value(json_array_get(pair, 1));
    if (links[m->n_links].label && links[m->n_links].url)
      m->n_links++;
  }
  m->values = values;
  m->links = links;
  return doc;
}

static void deliver(struct ana_notify *n, const struct job *j) {
  struct ana_notify_result res = {0};
  struct ana_notify_value values[32];
  struct ana_notify_link links[8];
  struct ana_notify_message m;
  struct ana_error err;
  struct ana_arena *arena = ana_arena_create(8192, 0);
  Analytics__V1__Channel *ch = NULL;
  json_t *doc = message_of(n, j, &m, values, 32, links, 8);
  int64_t start = ana_clock_wall_ms();
  int rc = -1;
  ana_error_clear(&err);
  if (!arena || !doc) {
    snprintf(res.error, sizeof res.error, "out of memory, or an unreadable outbox row");
  } else if ((rc = ana_notify_channel_load(n, j->account, j->channel, arena, &ch, &err)) < 0) {
    snprintf(res.error, sizeof res.error, "%s", err.message);
    res.permanent = rc == ANA_ERR_NOT_FOUND; /* the channel was deleted */
    rc = -1;
  } else {
    rc = ana_notifier_find(ana_notifier_type_of(ch))->send(&n->env, ch, &m, &res);
  }
  int64_t took = ana_clock_wall_ms() - start;
  const char *outcome, *state;
  int64_t next = start + took;
  if (rc == 0) {
    outcome = state = "delivered";
    res.error[0] = '\0';
  } else if (res.permanent || j->attempts + 1 >= n->o.max_attempts) {
    outcome = state = "failed";
  } else {
    outcome = "retry";
    state = "pending";
    next += ana_notify_backoff_ms(j->attempts + 1, n->o.backoff_initial_ms, n->o.backoff_max_ms,
                                  random64());
  }
  record(n, j, start, took, outcome, state, next, &res);
  if (rc == 0)
    ANA_DEBUG("notify", "%s delivered to channel %s (attempt %d)", j->key, j->channel,
              j->attempts + 1);
  else
    ANA_WARN("notify", "%s to channel %s: attempt %d %s: %s", j->key, j->channel, j->attempts + 1,
             strcmp(state, "failed") == 0 ? "failed for good" : "failed", res.error);
  json_decref(doc);
  ana_arena_destroy(arena);
}

struct sender {
  struct ana_notify *n;
  int slot;
};

static void *sender_main(void *arg) {
  struct sender *s = arg;
  struct ana_notify *n = s->n;
  char name[32];
  snprintf(name, sizeof name, "notify-%d", s->slot);
  pthread_mutex_lock(&n->mu);
  while (!n->stop) {
    struct job j = {0};
    int64_t due;
    n->woken = false;
    if (claim(n, s->slot, &j, &due)) {
      pthread_mutex_unlock(&n->mu);
      deliver(n, &j);
      job_fini(&j);
      pthread_mutex_lock(&n->mu);
      n->in_flight[s->slot] = 0;
      pthread_cond_broadcast(&n->attempted);
      pthread_cond_broadcast(&n->wake); /* another thread may take the next one */
      continue;
    }
    int64_t wait = n->o.poll_ms, left = due == INT64_MAX ? wait : due - ana_clock_wall_ms();
    if (left < wait)
      wait = left < 1 ? 1 : left;
    struct timespec until = ana_deadline_in_ms(wait);
    while (!n->stop && !n->woken)
      if (pthread_cond_timedwait(&n->wake, &n->mu, &until) == ETIMEDOUT)
        break;
  }
  pthread_mutex_unlock(&n->mu);
  ana_free(s);
  return NULL;
}

static int read_password_file(const char *path, char **out, struct ana_error *err) {
  FILE *f = fopen(path, "r");
  char line[1024];
  if (!f)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "SMTP_PASSWORD_FILE: cannot read %s: %s",
                         path, strerror(errno));
  if (!fgets(line, sizeof line, f))
    line[0] = '\0';
  fclose(f);
  line[strcspn(line, "\r\n")] = '\0';
  *out = ana_strdup(line);
  memset(line, 0, sizeof line);
  return *out ? 0 : ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

struct ana_notify *ana_notify_create(const struct ana_notify_options *o, struct ana_error *err) {
  struct ana_notify *n = ana_calloc(1, sizeof *n);
  if (!n) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  n->o = *o;
  if (n->o.threads < 1)
    n->o.threads = 1;
  if (n->o.max_attempts < 1)
    n->o.max_attempts = 1;
  if (n->o.poll_ms < 1)
    n->o.poll_ms = 1000;
  pthread_mutex_init(&n->channels_mu, NULL);
  pthread_mutex_init(&n->db_mu, NULL);
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->wake, NULL);
  pthread_cond_init(&n->attempted, NULL);
  n->smtp_url = dup_or_null(o->smtp_url);
  n->smtp_user = dup_or_null(o->smtp_user);
  n->smtp_from = dup_or_null(o->smtp_from);
  n->telegram_api_url = dup_or_null(o->telegram_api_url);
  n->smtp_password = dup_or_null(o->smtp_password);
  n->in_flight = ana_calloc((size_t)n->o.threads, sizeof *n->in_flight);
  n->threads = ana_calloc((size_t)n->o.threads, sizeof *n->threads);
  struct ana_http_options ho = {.connect_timeout_ms = o->timeout_ms, .pool_size = o->threads};
  n->env.http = ana_http_client_create(&ho, err);
  if (!n->in_flight || !n->threads || !n->env.http) {
    if (n->env.http)
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  n->env.smtp_url = n->smtp_url;
  n->env.smtp_user = n->smtp_user;
  n->env.smtp_password = n->smtp_password;
  n->env.smtp_from = n->smtp_from;
  n->env.telegram_api_url = n->telegram_api_url;
  n->env.refuse_private = !o->allow_private_networks;
  n->env.timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
  if (o->smtp_password_file && o->smtp_password_file[0]) {
    ana_free(n->smtp_password);
    n->smtp_password = NULL;
    if (read_password_file(o->smtp_password_file, &n->smtp_password, err) < 0)
      goto fail;
  }
  n->env.smtp_password = n->smtp_password;
  if (!(n->conn = ana_local_conn_open(o->db, err)))
    goto fail;
  return n;
fail:
  ana_notify_destroy(n);
  return NULL;
}

int ana_notify_start(struct ana_notify *n, struct ana_error *err) {
  for (int i = 0; i < n->o.threads; i++) {
    struct sender *s = ana_calloc(1, sizeof *s);
    if (!s)
      return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    *s = (struct sender){n, i};
    if (pthread_create(&n->threads[i], NULL, sender_main, s) != 0) {
      ana_free(s);
      return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start a notification sender");
    }
    n->n_threads++;
  }
  return 0;
}

void ana_notify_destroy(struct ana_notify *n) {
  if (!n)
    return;
  pthread_mutex_lock(&n->mu);
  n->stop = true;
  pthread_cond_broadcast(&n->wake);
  pthread_mutex_unlock(&n->mu);
  for (int i = 0; i < n->n_threads; i++)
    pthread_join(n->threads[i], NULL);
  ana_local_conn_close(n->conn);
  ana_http_client_destroy(n->env.http);
  ana_free(n->in_flight);
  ana_free(n->threads);
  ana_free(n->smtp_url);
  ana_free(n->smtp_user);
  if (n->smtp_password)
    memset(n->smtp_password, 0, strlen(n->smtp_password));
  ana_free(n->smtp_password);
  ana_free(n->smtp_from);
  ana_free(n->telegram_api_url);
  pthread_cond_destroy(&n->wake);
  pthread_cond_destroy(&n->attempted);
  pthread_mutex_destroy(&n->mu);
  pthread_mutex_destroy(&n->db_mu);
  pthread_mutex_destroy(&n->channels_mu);
  ana_free(n);
}

/* --- the delivery log --- */

struct attempts_ctx {
  ana_notify_attempt_fn fn;
  void *ctx;
};

static int each_attempt(void *ctx, const struct ana_local_attempt *la) {
  struct attempts_ctx *c = ctx;
  struct ana_notify_attempt a = {
      .outbox_id = la->outbox_id,
      .idempotency_key = la->idempotency_key,
      .channel_id = la->channel_id,
      .source = la->source,
      .state = la->state,
      .attempt = la->attempt,
      .at_ms = la->at_ms,
      .outcome = la->outcome,
      .status = la->status,
      .error = la->error,
      .duration_ms = la->duration_ms,
  };
  return c->fn(c->ctx, &a);
}

int ana_notify_attempts(struct ana_notify *n, const char *account_id, const char *source,
                        const char *channel_id, int64_t before_ms, int limit,
                        ana_notify_attempt_fn fn, void *ctx, struct ana_error *err) {
  struct attempts_ctx c = {fn, ctx};
  pthread_mutex_lock(&n->db_mu);
  int rc = ana_local_outbox_attempts(n->conn, account_id, source, channel_id, before_ms, limit,
                                     each_attempt, &c, err);
  pthread_mutex_unlock(&n->db_mu);
  return rc;
}

int ana_notify_state(struct ana_notify *n, const char *account_id, const char *key, char *state,
                     size_t state_size, int *attempts, struct ana_error *err) {
  pthread_mutex_lock(&n->db_mu);
  int rc = ana_local_outbox_state(n->conn, account_id, key, state, state_size, attempts, err);
  pthread_mutex_unlock(&n->db_mu);
  if (rc == 0) {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "no notification %s", key);
    return ANA_ERR_NOT_FOUND;
  }
  return rc < 0 ? rc : 0;
}

/* --- channel tests --- */

struct first {
  struct ana_notify_test_result *res;
  bool seen;
};

static int keep_first(void *ctx, const struct ana_notify_attempt *a) {
  struct first *f = ctx;
  if (a->attempt != 1)
    return 0;
  f->seen = true;
  snprintf(f->res->outcome, sizeof f->res->outcome, "%s",
           strcmp(a->outcome, "delivered") == 0 ? "delivered" : "failed");
  f->res->status = a->status;
  snprintf(f->res->error, sizeof f->res->error, "%s", a->error ? a->error : "");
  f->res->duration_ms = a->duration_ms;
  return 1;
}

int ana_notify_channel_test(struct ana_notify *n, const char *account_id, const char *id,
                            int wait_ms, struct ana_notify_test_result *res,
                            struct ana_error *err) {
  struct ana_arena *arena = ana_arena_create(4096, 0);
  Analytics__V1__Channel *ch = NULL;
  char source[64 + 8], title[300];
  memset(res, 0, sizeof *res);
  if (!arena)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  int rc = ana_notify_channel_load(n, account_id, id, arena, &ch, err);
  if (rc < 0)
    goto out;
  snprintf(source, sizeof source, "test:%s", id);
  snprintf(title, sizeof title, "Test notification for channel %.200s", ch->name);
  struct ana_notification nt = {
      .account_id = account_id,
      .channel_id = id,
      .source = source,
      .title = title,
      .text = "This is a test notification from analyticsd: the channel works.",
      .severity = "info",
  };
  if ((rc = ana_notify_enqueue(n, &nt, res->key, err)) < 0)
    goto out;
  snprintf(res->outcome, sizeof res->outcome, "pending");
  struct timespec until = ana_deadline_in_ms((int64_t)n->env.timeout_ms + wait_ms);
  /* Under mu, so the broadcast after the attempt cannot slip in between
   * the look and the wait (lock order: mu, then db_mu, as the senders). */
  pthread_mutex_lock(&n->mu);
  for (;;) {
    struct first f = {res, false};
    struct attempts_ctx c = {keep_first, &f};
    pthread_mutex_lock(&n->db_mu);
    ana_local_outbox_first_attempt(n->conn, res->key, each_attempt, &c);
    pthread_mutex_unlock(&n->db_mu);
    if (f.seen || pthread_cond_timedwait(&n->attempted, &n->mu, &until) == ETIMEDOUT)
      break;
  }
  pthread_mutex_unlock(&n->mu);
  rc = 0;
out:
  ana_arena_destroy(arena);
  return rc;
}
