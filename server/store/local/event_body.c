/* Event bodies: an event's free text and its serialized payload in one
 * column (events.body), compressed with a zstd dictionary trained on the
 * store's own first events, on a thread of its own. */
#include "local_db_sql.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <zdict.h>
#include <zstd.h>

/* A body is one tag byte, then either (tag 0) the raw content or (tag N,
 * 1..127) a zstd frame of it compressed with the dictionary of id N in
 * event_dicts. The content is varint(text length), the text, the payload. */
#define BODY_RAW 0
#define BODY_MAX_DICT 127

/* The dictionary is trained once TRAIN_SAMPLES events (or TRAIN_BYTES of
 * content) were stored raw; DICT_BYTES at most. */
#define TRAIN_SAMPLES 1024
#define TRAIN_BYTES (1 << 20)
#define DICT_BYTES (16 << 10)
#define LEVEL 1

/* Training takes 30-100 ms (more on a loaded machine): it runs on a thread
 * of its own, started by the commit that took the last sample, so that no
 * commit waits for it. Commits go on storing raw bodies meanwhile; the first
 * encode after it finished takes the dictionary, and the commit that uses
 * it first stores it (ana_event_codec_persist), in its own transaction. */
struct ana_event_codec {
  bool loaded; /* event_dicts was read */
  bool gave_up;
  int dict_id; /* 0: none yet */
  void *dict;
  size_t dict_len;
  ZSTD_CDict *cdict;
  ZSTD_CCtx *cctx;
  /* The samples kept for training: their contents back to back. */
  uint8_t *samples;
  size_t samples_len, samples_cap;
  size_t *sizes;
  unsigned n_samples;
  uint8_t *raw, *out;
  size_t raw_cap, out_cap;
  /* The training thread. It owns the samples handed to it (job_*) and,
   * once done, hands its dictionary over in trained (NULL: it failed). */
  pthread_t trainer;
  bool trainer_started;
  atomic_bool trainer_done; /* read by every encode without the lock */
  pthread_mutex_t mu;
  pthread_cond_t cond;
  bool hold;   /* tests: the thread waits before training */
  bool in_use; /* cdict is set (for ana_event_codec_training_state) */
  bool finished;
  uint8_t *job_samples;
  size_t *job_sizes;
  unsigned job_n;
  void *trained;
  size_t trained_len;
};

static bool grow(uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return true;
  size_t n = *cap ? *cap : 1024;
  while (n < need)
    n *= 2;
  uint8_t *p = ana_realloc(*buf, n);
  if (!p)
    return false;
  *buf = p;
  *cap = n;
  return true;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* The text and payload of a content; false when it is malformed. */
static bool split(const uint8_t *c, size_t n, const char **text, size_t *text_len,
                  const uint8_t **payload, size_t *payload_len) {
  uint64_t len = 0;
  size_t i = 0;
  for (int shift = 0;; shift += 7) {
    if (i >= n || shift > 63)
      return false;
    len |= (uint64_t)(c[i] & 0x7f) << shift;
    if (!(c[i++] & 0x80))
      break;
  }
  if (len > n - i)
    return false;
  *text = (const char *)c + i;
  *text_len = (size_t)len;
  *payload = c + i + len;
  *payload_len = n - i - (size_t)len;
  return true;
}

struct ana_event_codec *ana_event_codec_new(void) {
  struct ana_event_codec *c = ana_calloc(1, sizeof(struct ana_event_codec));
  if (!c)
    return NULL;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cond, NULL);
  return c;
}

/* Waits for the training thread to end and frees what it left. */
static void join_trainer(struct ana_event_codec *c) {
  if (!c->trainer_started)
    return;
  pthread_mutex_lock(&c->mu);
  c->hold = false;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->trainer, NULL);
  pthread_mutex_lock(&c->mu);
  c->trainer_started = false;
  ana_free(c->trained);
  c->trained = NULL;
  pthread_mutex_unlock(&c->mu);
}

void ana_event_codec_free(struct ana_event_codec *c) {
  if (!c)
    return;
  join_trainer(c);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cond);
  ZSTD_freeCDict(c->cdict);
  ZSTD_freeCCtx(c->cctx);
  ana_free(c->dict);
  ana_free(c->samples);
  ana_free(c->sizes);
  ana_free(c->raw);
  ana_free(c->out);
  ana_free(c);
}

static bool use_dict(struct ana_event_codec *c, int id, const void *dict, size_t len) {
  void *copy = ana_malloc(len);
  if (!copy)
    return false;
  memcpy(copy, dict, len);
  c->cdict = ZSTD_createCDict(copy, len, LEVEL);
  c->cctx = c->cctx ? c->cctx : ZSTD_createCCtx();
  if (!c->cdict || !c->cctx) {
    ZSTD_freeCDict(c->cdict);
    c->cdict = NULL;
    ana_free(copy);
    return false;
  }
  ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_dictIDFlag, 0);
  ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 0);
  ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_contentSizeFlag, 1);
  c->dict = copy;
  c->dict_len = len;
  c->dict_id = id;
  pthread_mutex_lock(&c->mu);
  c->in_use = true;
  pthread_mutex_unlock(&c->mu);
  return true;
}

/* The newest dictionary of the store, if any. */
static void load(struct ana_event_codec *c, sqlite3 *w) {
  sqlite3_stmt *st = NULL;
  c->loaded = true;
  if (sqlite3_prepare_v2(w, "SELECT id, dict FROM event_dicts ORDER BY id DESC LIMIT 1", -1, &st,
                         NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    int id = sqlite3_column_int(st, 0);
    if (id > 0 && id <= BODY_MAX_DICT)
      use_dict(c, id, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
    /* The largest id known: a trained one takes the next. */
    c->dict_id = id;
    if (id >= BODY_MAX_DICT && !c->cdict)
      c->gave_up = true;
  }
  sqlite3_finalize(st);
}

static void *train(void *arg) {
  struct ana_event_codec *c = arg;
  pthread_mutex_lock(&c->mu);
  while (c->hold)
    pthread_cond_wait(&c->cond, &c->mu);
  pthread_mutex_unlock(&c->mu);
  size_t cap = DICT_BYTES;
  void *dict = ana_malloc(cap);
  size_t len =
      dict ? ZDICT_trainFromBuffer(dict, cap, c->job_samples, c->job_sizes, c->job_n) : (size_t)-1;
  if (!dict) {
    ANA_WARN("store", "event bodies stay uncompressed: out of memory for a dictionary");
  } else if (ZDICT_isError(len)) {
    ANA_WARN("store", "event bodies stay uncompressed: no dictionary: %s", ZDICT_getErrorName(len));
    ana_free(dict);
    dict = NULL;
  } else {
    ANA_INFO("store", "event bodies: dictionary trained (%zu bytes from %u events)", len, c->job_n);
  }
  ana_free(c->job_samples);
  ana_free(c->job_sizes);
  c->job_samples = NULL;
  c->job_sizes = NULL;
  pthread_mutex_lock(&c->mu);
  c->trained = dict;
  c->trained_len = dict ? len : 0;
  c->finished = true;
  atomic_store(&c->trainer_done, true);
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Hands the samples to a training thread (one attempt per start). */
static void start_training(struct ana_event_codec *c) {
  c->gave_up = true;
  c->job_samples = c->samples;
  c->job_sizes = c->sizes;
  c->job_n = c->n_samples;
  c->samples = NULL;
  c->sizes = NULL;
  c->samples_len = c->samples_cap = 0;
  c->n_samples = 0;
  if (pthread_create(&c->trainer, NULL, train, c) != 0) {
    ANA_WARN("store", "event bodies stay uncompressed: cannot start the training thread");
    ana_free(c->job_samples);
    ana_free(c->job_sizes);
    c->job_samples = NULL;
    c->job_sizes = NULL;
    return;
  }
  pthread_mutex_lock(&c->mu);
  c->trainer_started = true;
  pthread_mutex_unlock(&c->mu);
}

/* Takes the dictionary the training thread left, once it is done. */
static void adopt(struct ana_event_codec *c) {
  pthread_mutex_lock(&c->mu);
  void *dict = c->trained;
  size_t len = c->trained_len;
  c->trained = NULL;
  pthread_mutex_unlock(&c->mu);
  join_trainer(c);
  if (dict && use_dict(c, c->dict_id + 1, dict, len))
    ANA_INFO("store", "event bodies: compressed with dictionary %d from now on", c->dict_id);
  ana_free(dict);
}

void ana_event_codec_hold_training(struct ana_event_codec *c, bool hold) {
  pthread_mutex_lock(&c->mu);
  c->hold = hold;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
}

int ana_event_codec_training_state(struct ana_event_codec *c, int wait_ms) {
  struct timespec until = ana_clock_deadline(CLOCK_REALTIME, wait_ms);
  pthread_mutex_lock(&c->mu);
  while (c->trainer_started && !c->finished && wait_ms > 0 &&
         pthread_cond_timedwait(&c->cond, &c->mu, &until) == 0) {
  }
  int state = c->in_use                            ? ANA_CODEC_IN_USE
              : c->trainer_started && !c->finished ? ANA_CODEC_TRAINING
              : c->trainer_started && c->trained   ? ANA_CODEC_TRAINED
              : c->gave_up                         ? ANA_CODEC_NONE
                                                   : ANA_CODEC_SAMPLING;
  pthread_mutex_unlock(&c->mu);
  return state;
}

static void sample(struct ana_event_codec *c, const uint8_t *raw, size_t n) {
  if (!c->sizes && !(c->sizes = ana_malloc(sizeof *c->sizes * TRAIN_SAMPLES)))
    return;
  if (!grow(&c->samples, &c->samples_cap, c->samples_len + n))
    return;
  memcpy(c->samples + c->samples_len, raw, n);
  c->samples_len += n;
  c->sizes[c->n_samples++] = n;
  if (c->n_samples >= TRAIN_SAMPLES || c->samples_len >= TRAIN_BYTES)
    start_training(c);
}

int ana_event_codec_encode(struct ana_event_codec *c, sqlite3 *w, const char *text,
                           const uint8_t *payload, size_t payload_len, const void **out,
                           size_t *out_len) {
  size_t text_len = text ? strlen(text) : 0;
  size_t raw_len = 10 + text_len + payload_len;
  if (!grow(&c->raw, &c->raw_cap, 1 + raw_len))
    return ANA_ERR_NOMEM;
  size_t n = 1 + put_varint(c->raw + 1, text_len);
  if (text_len)
    memcpy(c->raw + n, text, text_len);
  n += text_len;
  if (payload_len)
    memcpy(c->raw + n, payload, payload_len);
  n += payload_len;
  c->raw[0] = BODY_RAW;
  if (!c->loaded)
    load(c, w);
  if (!c->cdict && c->trainer_started && atomic_load(&c->trainer_done))
    adopt(c);
  if (!c->cdict && !c->gave_up)
    sample(c, c->raw + 1, n - 1);
  if (c->cdict) {
    size_t bound = ZSTD_compressBound(n - 1);
    if (!grow(&c->out, &c->out_cap, 1 + bound))
      return ANA_ERR_NOMEM;
    ZSTD_CCtx_refCDict(c->cctx, c->cdict);
    size_t z = ZSTD_compress2(c->cctx, c->out + 1, bound, c->raw + 1, n - 1);
    if (!ZSTD_isError(z) && z + 1 < n) {
      c->out[0] = (uint8_t)c->dict_id;
      *out = c->out;
      *out_len = z + 1;
      return 0;
    }
  }
  *out = c->raw;
  *out_len = n;
  return 0;
}

int ana_event_codec_persist(struct ana_event_codec *c, sqlite3 *w, struct ana_error *err) {
  if (!c->cdict)
    return 0;
  sqlite3_stmt *st = NULL;
  int rc = 0;
  if (sqlite3_prepare_v2(w, "INSERT OR IGNORE INTO event_dicts (id, dict) VALUES (?, ?)", -1, &st,
                         NULL) != SQLITE_OK) {
    rc = ANA_ERR_INTERNAL;
  } else {
    sqlite3_bind_int(st, 1, c->dict_id);
    sqlite3_bind_blob(st, 2, c->dict, (int)c->dict_len, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ANA_ERR_IO;
  }
  if (rc < 0)
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "event store: cannot store a dictionary: %s",
                  sqlite3_errmsg(w));
  sqlite3_finalize(st);
  return rc;
}

/* --- reading: SQL functions, one decoder per connection --- */

struct decoder {
  ZSTD_DCtx *dctx;
  ZSTD_DDict *ddicts[BODY_MAX_DICT + 1];
  uint8_t *buf;
  size_t cap;
};

static void decoder_free(void *p) {
  struct decoder *d = p;
  if (!d)
    return;
  ZSTD_freeDCtx(d->dctx);
  for (int i = 0; i <= BODY_MAX_DICT; i++)
    ZSTD_freeDDict(d->ddicts[i]);
  ana_free(d->buf);
  ana_free(d);
}

static ZSTD_DDict *ddict(struct decoder *d, sqlite3 *conn, int id) {
  if (d->ddicts[id])
    return d->ddicts[id];
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(conn, "SELECT dict FROM event_dicts WHERE id = ?", -1, &st, NULL) ==
      SQLITE_OK) {
    sqlite3_bind_int(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW)
      d->ddicts[id] =
          ZSTD_createDDict(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
  }
  sqlite3_finalize(st);
  return d->ddicts[id];
}

/* The content of the body in argv[0] (NULL with the error set). */
static const uint8_t *content(sqlite3_context *ctx, sqlite3_value *v, size_t *len) {
  const uint8_t *b = sqlite3_value_blob(v);
  size_t n = (size_t)sqlite3_value_bytes(v);
  if (!b || n < 1) {
    sqlite3_result_error(ctx, "event body: empty", -1);
    return NULL;
  }
  if (b[0] == BODY_RAW) {
    *len = n - 1;
    return b + 1;
  }
  struct decoder *d = sqlite3_user_data(ctx);
  if (b[0] > BODY_MAX_DICT) {
    sqlite3_result_error(ctx, "event body: unknown format", -1);
    return NULL;
  }
  ZSTD_DDict *dd = ddict(d, sqlite3_context_db_handle(ctx), b[0]);
  unsigned long long size = ZSTD_getFrameContentSize(b + 1, n - 1);
  if (!dd || size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ||
      size > (64u << 20)) {
    sqlite3_result_error(ctx, dd ? "event body: corrupt" : "event body: dictionary missing", -1);
    return NULL;
  }
  if (!d->dctx && !(d->dctx = ZSTD_createDCtx())) {
    sqlite3_result_error_nomem(ctx);
    return NULL;
  }
  if (!grow(&d->buf, &d->cap, (size_t)size + 1)) {
    sqlite3_result_error_nomem(ctx);
    return NULL;
  }
  size_t z = ZSTD_decompress_usingDDict(d->dctx, d->buf, d->cap, b + 1, n - 1, dd);
  if (ZSTD_isError(z) || z != size) {
    sqlite3_result_error(ctx, "event body: corrupt", -1);
    return NULL;
  }
  *len = z;
  return d->buf;
}

/* Reads a body's content for one of the two SQL functions: false (with the
 * error set on ctx) when it is corrupt. */
static bool body_parts(sqlite3_context *ctx, sqlite3_value *body, const char **text,
                       size_t *text_len, const uint8_t **payload, size_t *payload_len) {
  size_t n = 0;
  const uint8_t *c = content(ctx, body, &n);
  if (!c)
    return false;
  if (!split(c, n, text, text_len, payload, payload_len)) {
    sqlite3_result_error(ctx, "event body: corrupt", -1);
    return false;
  }
  return true;
}

static void fn_text(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  size_t text_len, payload_len;
  const char *text;
  const uint8_t *payload;
  if (body_parts(ctx, argv[0], &text, &text_len, &payload, &payload_len))
    sqlite3_result_text(ctx, text, (int)text_len, SQLITE_TRANSIENT);
}

static void fn_payload(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  size_t text_len, payload_len;
  const char *text;
  const uint8_t *payload;
  if (body_parts(ctx, argv[0], &text, &text_len, &payload, &payload_len))
    sqlite3_result_blob(ctx, payload_len ? (const void *)payload : "", (int)payload_len,
                        SQLITE_TRANSIENT);
}

/* ana_event_body(text, payload): an uncompressed body (for migrations). */
static void fn_body(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *text = (const char *)sqlite3_value_text(argv[0]);
  size_t text_len = text ? (size_t)sqlite3_value_bytes(argv[0]) : 0;
  const void *payload = sqlite3_value_blob(argv[1]);
  size_t payload_len = payload ? (size_t)sqlite3_value_bytes(argv[1]) : 0;
  uint8_t *b = sqlite3_malloc64(11 + text_len + payload_len);
  if (!b) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  size_t n = 0;
  b[n++] = BODY_RAW;
  n += put_varint(b + n, text_len);
  if (text_len)
    memcpy(b + n, text, text_len);
  n += text_len;
  if (payload_len)
    memcpy(b + n, payload, payload_len);
  n += payload_len;
  sqlite3_result_blob(ctx, b, (int)n, sqlite3_free);
}

int ana_event_body_register(sqlite3 *conn) {
  struct decoder *d = ana_calloc(1, sizeof *d);
  if (!d)
    return ANA_ERR_NOMEM;
  /* The decoder is shared by both functions and freed with the second. */
  int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
  if (sqlite3_create_function_v2(conn, "ana_event_text", 1, flags, d, fn_text, NULL, NULL, NULL) !=
          SQLITE_OK ||
      sqlite3_create_function_v2(conn, "ana_event_payload", 1, flags, d, fn_payload, NULL, NULL,
                                 decoder_free) != SQLITE_OK) {
    decoder_free(d);
    return ANA_ERR_INTERNAL;
  }
  if (sqlite3_create_function_v2(conn, "ana_event_body", 2, flags, NULL, fn_body, NULL, NULL,
                                 NULL) != SQLITE_OK)
    return ANA_ERR_INTERNAL;
  return 0;
}
