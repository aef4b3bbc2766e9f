/* The audit log's writer: a bounded queue, one thread that stores records
 * (the store chains them), runs retention and signs the chain head into the
 * JSON log. */
#include "ana_audit.h"

#include "ana_alloc.h"
#include "ana_log.h"
#include "ana_prom.h"
#include "ana_clock.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 256
#define RETAIN_EVERY_MS (3600 * 1000)

/* A queued record and its strings, in one allocation. */
struct entry {
  struct ana_audit_record r;
  char text[];
};

struct ana_audit {
  const struct ana_audit_store_ops *ops;
  void *store;
  int retention_days, sign_interval_ms;
  uint8_t head_key[32];
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  struct entry **queue; /* ring of queue_max */
  size_t queue_max, head, len;
  uint64_t submitted, written; /* records taken in / handled (stored or lost) */
  bool stop, thread_started, sign_requested;
  pthread_t thread;
  struct ana_audit_anchor chain; /* the head last signed; writer thread only */
  struct ana_prom_counter dropped, stored;
  bool prom_registered;
};

static void collect(struct ana_prom_writer *w, void *ctx) {
  struct ana_audit *a = ctx;
  ana_prom_write_family(w, "ana_audit_dropped_total", "counter",
                        "Audit records dropped because the audit queue was full "
                        "(AUDIT_QUEUE_MAX) or the store failed.");
  ana_prom_write_u64(w, "ana_audit_dropped_total", NULL, ana_prom_counter_get(&a->dropped));
  ana_prom_write_family(w, "ana_audit_records_total", "counter", "Audit records written.");
  ana_prom_write_u64(w, "ana_audit_records_total", NULL, ana_prom_counter_get(&a->stored));
}

/* Signs the head as stored (other processes may have appended). */
static void sign_head(struct ana_audit *a) {
  struct ana_error err;
  ana_error_clear(&err);
  if (a->ops->head(a->store, &a->chain, &err) < 0) {
    ANA_ERROR("audit", "cannot read the audit chain head: %s", err.message);
    return;
  }
  uint8_t mac[32];
  char hash_hex[2 * ANA_AUDIT_HASH_LEN + 1], mac_hex[65], seq[24];
  if (ana_audit_head_mac(a->head_key, a->chain.seq, a->chain.hash, mac) < 0) {
    ANA_ERROR("audit", "cannot sign the audit chain head");
    return;
  }
  ana_audit_hex(a->chain.hash, ANA_AUDIT_HASH_LEN, hash_hex);
  ana_audit_hex(mac, 32, mac_hex);
  snprintf(seq, sizeof seq, "%llu", (unsigned long long)a->chain.seq);
  ana_log_fields(ANA_LOG_INFO, "audit", "audit_head", "seq", seq, "hash", hash_hex, "mac", mac_hex,
                 NULL);
}

/* Stores a batch (the store chains it); on failure the records are lost
 * (counted). */
static void write_batch(struct ana_audit *a, struct entry **batch, size_t n) {
  struct ana_audit_record recs[BATCH_MAX];
  for (size_t i = 0; i < n; i++)
    recs[i] = batch[i]->r;
  struct ana_error err;
  ana_error_clear(&err);
  if (a->ops->append(a->store, recs, n, &err) < 0) {
    ana_prom_counter_add(&a->dropped, n);
    ANA_ERROR("audit", "cannot store %zu audit records: %s", n, err.message);
    return;
  }
  ana_prom_counter_add(&a->stored, n);
}

static void retain(struct ana_audit *a, int64_t now_ms) {
  if (a->retention_days <= 0)
    return;
  struct ana_error err;
  ana_error_clear(&err);
  int64_t deleted = 0;
  if (a->ops->retain(a->store, now_ms - (int64_t)a->retention_days * 86400000, &deleted, &err) < 0)
    ANA_ERROR("audit", "audit retention failed: %s", err.message);
  else if (deleted)
    ANA_INFO("audit", "audit retention deleted %lld records", (long long)deleted);
}

static void *writer(void *arg) {
  pthread_setname_np(pthread_self(), "ana-audit"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_audit *a = arg;
  int64_t next_sign =
      a->sign_interval_ms > 0 ? ana_clock_mono_ms() + a->sign_interval_ms : INT64_MAX;
  int64_t next_retain = ana_clock_mono_ms();
  pthread_mutex_lock(&a->mu);
  for (;;) {
    while (!a->stop && a->len == 0 && !a->sign_requested) {
      int64_t now = ana_clock_mono_ms();
      int64_t until = next_sign < next_retain ? next_sign : next_retain;
      if (until <= now)
        break;
      struct timespec ts = ana_deadline_in_ms(until - now);
      pthread_cond_timedwait(&a->wake, &a->mu, &ts);
    }
    struct entry *batch[BATCH_MAX];
    size_t n = 0;
    while (a->len && n < BATCH_MAX) {
      batch[n++] = a->queue[a->head];
      a->head = (a->head + 1) % a->queue_max;
      a->len--;
    }
    bool stopping = a->stop && a->len == 0 && n == 0;
    bool sign = a->sign_requested;
    a->sign_requested = false;
    pthread_mutex_unlock(&a->mu);

    if (n)
      write_batch(a, batch, n);
    for (size_t i = 0; i < n; i++)
      ana_free(batch[i]);
    int64_t now = ana_clock_mono_ms();
    if (now >= next_retain) {
      retain(a, ana_clock_wall_ms());
      next_retain = now + RETAIN_EVERY_MS;
    }
    if (sign || stopping || now >= next_sign) {
      sign_head(a);
      if (a->sign_interval_ms > 0)
        next_sign = now + a->sign_interval_ms;
    }

    pthread_mutex_lock(&a->mu);
    a->written += n;
    pthread_cond_broadcast(&a->done);
    if (stopping)
      break;
  }
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

struct ana_audit *ana_audit_create(const struct ana_audit_options *o, struct ana_error *err) {
  struct ana_audit *a = ana_calloc(1, sizeof *a);
  if (!a || !(a->queue = ana_calloc(o->queue_max ? o->queue_max : 1, sizeof *a->queue))) {
    ana_free(a);
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  a->ops = o->ops;
  a->store = o->store;
  a->queue_max = o->queue_max ? o->queue_max : 1;
  a->retention_days = o->retention_days;
  a->sign_interval_ms = o->sign_interval_ms;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->wake, NULL);
  pthread_cond_init(&a->done, NULL);
  if (ana_audit_head_key(o->master_key, o->master_key_len, a->head_key) < 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot derive the audit head key");
    goto fail;
  }
  if (a->ops->head(a->store, &a->chain, err) < 0)
    goto fail;
  if (pthread_create(&a->thread, NULL, writer, a) != 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the audit writer thread");
    goto fail;
  }
  a->thread_started = true;
  if (!ana_log_enabled(ANA_LOG_INFO))
    ANA_WARN("audit", "LOG_LEVEL is above info: the signed audit heads (info lines "
                      "\"audit_head\") are not logged, so removing the newest audit records "
                      "cannot be detected; set LOG_LEVEL=info");
  a->prom_registered = ana_prom_register(collect, a) == 0;
  return a;
fail:
  ana_audit_destroy(a);
  return NULL;
}

void ana_audit_destroy(struct ana_audit *a) {
  if (!a)
    return;
  if (a->prom_registered)
    ana_prom_unregister(collect, a);
  if (a->thread_started) {
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
  }
  for (size_t i = 0; i < a->len; i++)
    ana_free(a->queue[(a->head + i) % a->queue_max]);
  ana_free(a->queue);
  pthread_cond_destroy(&a->done);
  pthread_cond_destroy(&a->wake);
  pthread_mutex_destroy(&a->mu);
  OPENSSL_cleanse(a->head_key, sizeof a->head_key);
  ana_free(a);
}

static size_t slen(const char *s) {
  return s ? strlen(s) + 1 : 1;
}

static const char *scopy(char **p, const char *s) {
  size_t n = slen(s);
  char *d = *p;
  memcpy(d, s ? s : "", n);
  *p += n;
  return d;
}

void ana_audit_submit(struct ana_audit *a, const struct ana_audit_record *r) {
  if (!a)
    return;
  size_t n = slen(r->kind) + slen(r->account_id) + slen(r->subject) + slen(r->key_id) +
             slen(r->method) + slen(r->target_id) + slen(r->peer) + slen(r->request_id);
  struct entry *e = ana_malloc(sizeof *e + n);
  if (e) {
    memset(&e->r, 0, sizeof e->r);
    char *p = e->text;
    e->r.at_ms = r->at_ms ? r->at_ms : ana_clock_wall_ms();
    e->r.code = r->code;
    e->r.kind = scopy(&p, r->kind);
    e->r.account_id = scopy(&p, r->account_id);
    e->r.subject = scopy(&p, r->subject);
    e->r.key_id = scopy(&p, r->key_id);
    e->r.method = scopy(&p, r->method);
    e->r.target_id = scopy(&p, r->target_id);
    e->r.peer = scopy(&p, r->peer);
    e->r.request_id = scopy(&p, r->request_id);
  }
  pthread_mutex_lock(&a->mu);
  bool queued = e && a->len < a->queue_max && !a->stop;
  if (queued) {
    a->queue[(a->head + a->len) % a->queue_max] = e;
    a->len++;
    a->submitted++;
    pthread_cond_signal(&a->wake);
  }
  pthread_mutex_unlock(&a->mu);
  if (!queued) {
    ana_free(e);
    ana_prom_counter_add(&a->dropped, 1);
    ANA_ERROR("audit",
              "audit record dropped (%s %s): the audit queue is full (AUDIT_QUEUE_MAX %zu); "
              "ana_audit_dropped_total counts them",
              r->method ? r->method : "", r->subject ? r->subject : "", a->queue_max);
  }
}

int ana_audit_flush(struct ana_audit *a, int timeout_ms) {
  int64_t until = ana_clock_mono_ms() + timeout_ms;
  pthread_mutex_lock(&a->mu);
  uint64_t target = a->submitted;
  while (a->written < target && !a->stop) {
    int64_t left = until - ana_clock_mono_ms();
    if (left <= 0)
      break;
    struct timespec ts = ana_deadline_in_ms(left);
    pthread_cond_timedwait(&a->done, &a->mu, &ts);
  }
  bool ok = a->written >= target;
  pthread_mutex_unlock(&a->mu);
  return ok ? 0 : ANA_ERR_TIMEOUT;
}

int ana_audit_retain_now(struct ana_audit *a, int64_t now_ms, struct ana_error *err) {
  int64_t deleted = 0;
  if (ana_audit_flush(a, 5000) < 0)
    return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "the audit writer is behind");
  return a->ops->retain(a->store, now_ms - (int64_t)a->retention_days * 86400000, &deleted, err);
}

void ana_audit_sign_now(struct ana_audit *a) {
  pthread_mutex_lock(&a->mu);
  a->sign_requested = true;
  pthread_cond_signal(&a->wake);
  pthread_mutex_unlock(&a->mu);
}

int ana_audit_list(struct ana_audit *a, const struct ana_audit_query *q, ana_audit_record_fn fn,
                   void *ctx, struct ana_error *err) {
  return a->ops->list(a->store, q, fn, ctx, err);
}

int ana_audit_anchor(struct ana_audit *a, struct ana_audit_anchor *out, struct ana_error *err) {
  return a->ops->anchor(a->store, out, err);
}

uint64_t ana_audit_dropped(const struct ana_audit *a) {
  return ana_prom_counter_get(&a->dropped);
}

int ana_audit_master_key(const char *path, const char *data_dir, uint8_t *out, size_t cap,
                         struct ana_error *err) {
  char gen[4096];
  bool generated = false;
  if (!path || !path[0]) {
    snprintf(gen, sizeof gen, "%s/master.key", data_dir);
    path = gen;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
      uint8_t raw[32];
      char hex[65];
      if (RAND_bytes(raw, sizeof raw) != 1) {
        close(fd);
        unlink(path);
        return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot generate a master key");
      }
      ana_audit_hex(raw, sizeof raw, hex);
      hex[64] = '\n';
      bool ok = write(fd, hex, 65) == 65 && fsync(fd) == 0;
      close(fd);
      OPENSSL_cleanse(raw, sizeof raw);
      if (!ok) {
        unlink(path);
        return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "cannot write %s: %s", path,
                             strerror(errno));
      }
      generated = true;
    }
    ANA_WARN("audit",
             "ENCRYPTION_KEY_FILE is not set: the master key is %s%s, beside the data it "
             "protects; anyone who can read DATA_DIR can open encrypted fields and secrets and "
             "forge signed audit heads. Set "
             "ENCRYPTION_KEY_FILE to a key kept elsewhere",
             path, generated ? " (generated now)" : "");
  }
  FILE *f = fopen(path, "rb");
  if (!f)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "ENCRYPTION_KEY_FILE: cannot read %s: %s", path, strerror(errno));
  size_t n = fread(out, 1, cap, f);
  bool more = fgetc(f) != EOF;
  fclose(f);
  while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' || out[n - 1] == '\t'))
    n--;
  if (more)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "ENCRYPTION_KEY_FILE: %s is longer than %zu bytes", path, cap);
  if (n < 16)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "ENCRYPTION_KEY_FILE: %s holds %zu bytes; a master key needs at least 16 "
                         "(e.g. 64 hex digits: openssl rand -hex 32)",
                         path, n);
  return (int)n;
}
