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

#include <errno.h>
#include <sqlite3.h>
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

static int db_fail(sqlite3 *db, struct ana_error *err) {
  ana_error_set(err, ANA_STATUS_UNAVAILABLE, "notifications: %s", sqlite3_errmsg(db));
  return ANA_ERR_IO;
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

int ana_notify_enqueue_in_txn(struct ana_notify *n, void *conn, const struct ana_notification *nt,
                              char *key_out, struct ana_error *err) {
  (void)n;
  sqlite3 *db = conn;
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
  sqlite3_stmt *st = NULL;
  int rc = 0;
  int64_t now = ana_clock_wall_ms();
  if (sqlite3_prepare_v2(db,
                         "INSERT OR IGNORE INTO notify_outbox (idempotency_key, account_id,"
                         " channel_id, source, payload, state, attempts, next_attempt_at,"
                         " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6,"
                         " ?6, ?6)",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = db_fail(db, err);
    goto out;
  }
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, nt->account_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, nt->channel_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, nt->source ? nt->source : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, payload, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, now);
  if (sqlite3_step(st) != SQLITE_DONE)
    rc = db_fail(db, err);
out:
  sqlite3_finalize(st);
  free(payload);
  if (rc == 0 && key_out)
    snprintf(key_out, KEY_MAX + 1, "%s", key);
  return rc;
}

int ana_notify_enqueue(struct ana_notify *n, const struct ana_notification *nt, char *key_out,
                       struct ana_error *err) {
  sqlite3 *db = n->conn;
  pthread_mutex_lock(&n->db_mu);
  int rc =
      sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : db_fail(db, err);
  if (rc == 0) {
    rc = ana_notify_enqueue_in_txn(n, db, nt, key_out, err);
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
      rc = db_fail(db, err);
    if (rc < 0)
      sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
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

static char *col(sqlite3_stmt *st, int i) {
  const unsigned char *t = sqlite3_column_text(st, i);
  return ana_strdup(t ? (const char *)t : "");
}

/* Under n->mu: claims a due row no other sender has (1), or finds none (0)
 * and sets *next_due to when the earliest pending row is due. */
static int claim(struct ana_notify *n, int slot, struct job *j, int64_t *next_due) {
  sqlite3 *db = n->conn;
  sqlite3_stmt *st = NULL;
  int found = 0;
  int64_t now = ana_clock_wall_ms();
  *next_due = INT64_MAX;
  pthread_mutex_lock(&n->db_mu);
  if (sqlite3_prepare_v2(db,
                         "SELECT id, idempotency_key, account_id, channel_id, source, payload,"
                         " attempts, created_at, next_attempt_at FROM notify_outbox"
                         " WHERE state = 'pending' ORDER BY next_attempt_at, id LIMIT ?1",
                         -1, &st, NULL) != SQLITE_OK)
    goto out;
  sqlite3_bind_int(st, 1, CLAIM_BATCH + n->n_threads);
  while (sqlite3_step(st) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(st, 0), due = sqlite3_column_int64(st, 8);
    bool busy = false;
    for (int i = 0; i < n->n_threads; i++)
      busy = busy || n->in_flight[i] == id;
    if (busy)
      continue;
    if (due > now) {
      *next_due = due;
      break;
    }
    j->id = id;
    j->key = col(st, 1);
    j->account = col(st, 2);
    j->channel = col(st, 3);
    j->source = col(st, 4);
    j->payload = col(st, 5);
    j->attempts = sqlite3_column_int(st, 6);
    j->created_ms = sqlite3_column_int64(st, 7);
    if (!j->key || !j->account || !j->channel || !j->source || !j->payload) {
      job_fini(j);
      break;
    }
    n->in_flight[slot] = id;
    found = 1;
    break;
  }
out:
  sqlite3_finalize(st);
  pthread_mutex_unlock(&n->db_mu);
  return found;
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
  sqlite3 *db = n->conn;
  sqlite3_stmt *a = NULL, *u = NULL;
  pthread_mutex_lock(&n->db_mu);
  bool ok = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
  ok = ok && sqlite3_prepare_v2(db,
                                "INSERT OR REPLACE INTO notify_attempts (outbox_id, attempt, at,"
                                " outcome, status, error, duration_ms) VALUES (?1, ?2, ?3, ?4,"
                                " ?5, ?6, ?7)",
                                -1, &a, NULL) == SQLITE_OK;
  ok = ok && sqlite3_prepare_v2(db,
                                "UPDATE notify_outbox SET state = ?2, attempts = ?3,"
                                " next_attempt_at = ?4, updated_at = ?5 WHERE id = ?1",
                                -1, &u, NULL) == SQLITE_OK;
  if (ok) {
    sqlite3_bind_int64(a, 1, j->id);
    sqlite3_bind_int(a, 2, j->attempts + 1);
    sqlite3_bind_int64(a, 3, at);
    sqlite3_bind_text(a, 4, outcome, -1, SQLITE_STATIC);
    sqlite3_bind_int(a, 5, res->status);
    sqlite3_bind_text(a, 6, res->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(a, 7, took);
    sqlite3_bind_int64(u, 1, j->id);
    sqlite3_bind_text(u, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_int(u, 3, j->attempts + 1);
    sqlite3_bind_int64(u, 4, next_due);
    sqlite3_bind_int64(u, 5, at + took);
    ok = sqlite3_step(a) == SQLITE_DONE && sqlite3_step(u) == SQLITE_DONE;
  }
  ok = ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
  if (!ok) {
    ANA_ERROR("notify", "cannot record delivery attempt of %s: %s", j->key, sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  }
  sqlite3_finalize(a);
  sqlite3_finalize(u);
  pthread_mutex_unlock(&n->db_mu);
}

/* Decodes the stored payload into m (pointers into doc). */
static json_t *message_of(const struct job *j, struct ana_notify_message *m,
                          struct ana_notify_value *values, size_t max_values,
                          struct ana_notify_link *links, size_t max_links) {
  json_t *doc = json_loads(j->payload, 0, NULL);
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
  json_t *doc = message_of(j, &m, values, 32, links, 8);
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
  if (!(n->conn = ana_local_db_connect(o->db, err)))
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
  sqlite3_close(n->conn);
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

int ana_notify_attempts(struct ana_notify *n, const char *account_id, const char *source,
                        const char *channel_id, int64_t before_ms, int limit,
                        ana_notify_attempt_fn fn, void *ctx, struct ana_error *err) {
  sqlite3 *db = n->conn;
  sqlite3_stmt *st = NULL;
  int rc = 0;
  pthread_mutex_lock(&n->db_mu);
  if (sqlite3_prepare_v2(db,
                         "SELECT a.outbox_id, o.idempotency_key, o.channel_id, o.source, o.state,"
                         " a.attempt, a.at, a.outcome, a.status, a.error, a.duration_ms"
                         " FROM notify_outbox o JOIN notify_attempts a ON a.outbox_id = o.id"
                         " WHERE o.account_id = ?1 AND (?2 IS NULL OR o.source = ?2)"
                         " AND (?3 IS NULL OR o.channel_id = ?3) AND (?4 = 0 OR a.at < ?4)"
                         " ORDER BY a.at DESC, a.outbox_id DESC, a.attempt DESC LIMIT ?5",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = db_fail(db, err);
    goto out;
  }
  sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
  if (source)
    sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
  if (channel_id)
    sqlite3_bind_text(st, 3, channel_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, before_ms);
  sqlite3_bind_int(st, 5, limit);
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct ana_notify_attempt a = {
        .outbox_id = sqlite3_column_int64(st, 0),
        .idempotency_key = (const char *)sqlite3_column_text(st, 1),
        .channel_id = (const char *)sqlite3_column_text(st, 2),
        .source = (const char *)sqlite3_column_text(st, 3),
        .state = (const char *)sqlite3_column_text(st, 4),
        .attempt = sqlite3_column_int(st, 5),
        .at_ms = sqlite3_column_int64(st, 6),
        .outcome = (const char *)sqlite3_column_text(st, 7),
        .status = sqlite3_column_int(st, 8),
        .error = (const char *)sqlite3_column_text(st, 9),
        .duration_ms = sqlite3_column_int64(st, 10),
    };
    if (fn(ctx, &a))
      break;
  }
  if (step != SQLITE_ROW && step != SQLITE_DONE)
    rc = db_fail(db, err);
out:
  sqlite3_finalize(st);
  pthread_mutex_unlock(&n->db_mu);
  return rc;
}

int ana_notify_state(struct ana_notify *n, const char *account_id, const char *key, char *state,
                     size_t state_size, int *attempts, struct ana_error *err) {
  sqlite3 *db = n->conn;
  sqlite3_stmt *st = NULL;
  int rc = ANA_ERR_NOT_FOUND;
  pthread_mutex_lock(&n->db_mu);
  if (sqlite3_prepare_v2(db,
                         "SELECT state, attempts FROM notify_outbox WHERE idempotency_key = ?1"
                         " AND account_id = ?2",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = db_fail(db, err);
    goto out;
  }
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, account_id, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW) {
    snprintf(state, state_size, "%s", (const char *)sqlite3_column_text(st, 0));
    *attempts = sqlite3_column_int(st, 1);
    rc = 0;
  } else {
    ana_error_set(err, ANA_STATUS_NOT_FOUND, "no notification %s", key);
  }
out:
  sqlite3_finalize(st);
  pthread_mutex_unlock(&n->db_mu);
  return rc;
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
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&n->db_mu);
    if (sqlite3_prepare_v2(n->conn,
                           "SELECT a.outcome, a.status, a.error, a.duration_ms FROM"
                           " notify_attempts a JOIN notify_outbox o ON o.id = a.outbox_id"
                           " WHERE o.idempotency_key = ?1 AND a.attempt = 1",
                           -1, &st, NULL) == SQLITE_OK) {
      sqlite3_bind_text(st, 1, res->key, -1, SQLITE_STATIC);
      if (sqlite3_step(st) == SQLITE_ROW) {
        struct ana_notify_attempt a = {
            .attempt = 1,
            .outcome = (const char *)sqlite3_column_text(st, 0),
            .status = sqlite3_column_int(st, 1),
            .error = (const char *)sqlite3_column_text(st, 2),
            .duration_ms = sqlite3_column_int64(st, 3),
        };
        keep_first(&f, &a);
      }
    }
    sqlite3_finalize(st);
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
