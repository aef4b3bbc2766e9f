/* Event bodies: an event's free text, properties and serialized payload in
 * one column (events.body), compressed with a zstd dictionary trained on the
 * store's own first events, on a thread of its own. */
#include "byte_codec.h"
#include "local_db_sql.h"

#include "ana_alloc.h"
#include "ana_clock.h"
#include "ana_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <zdict.h>
/* ZSTD_f_zstd1_magicless, ZSTD_getFrameHeader_advanced (exported by the
 * shared libzstd as well). */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

/* A body is one tag byte, then either the raw content (dictionary 0) or a
 * zstd frame of it compressed with the dictionary of id N (1..127) in
 * event_dicts; the tag's low 7 bits are N, its high bit BODY_V2 says which
 * content follows. The frame has neither the dictionary's id (the tag names
 * it) nor a checksum, and is written without zstd's 4-byte magic number
 * (ZSTD_f_zstd1_magicless): a frame read with the magic is one written
 * before, and a frame without it never starts with the magic's first byte
 * (0x28 as a frame header descriptor sets its reserved bit). Content v1 (migration 15, converted on
 * start): varint(text length), the text, the payload. Content v2: varint(text length), the text,
 * varint(properties length), the properties (JSON of the aggregated values,
 * blind indexes for encrypted fields), varint(mask), the payload without the
 * fields the mask names (event_id, timestamp, received_at), which equal the
 * row's columns byte for byte and are put back from them when read. */
#define BODY_RAW 0
#define BODY_MAX_DICT 127
#define BODY_V2 0x80
#define MASK_EVENT_ID 1u
#define MASK_TIMESTAMP 2u
#define MASK_RECEIVED_AT 4u

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
  /* Dictionaries of ids up to it are not to be used (the re-encryption job
   * retires those trained while a field was stored in clear); set from
   * another thread. */
  atomic_int retired_upto;
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

/* The parts of a content (v1: no properties, mask 0); false when it is
 * malformed. */
struct content_parts {
  const char *text, *props;
  size_t text_len, props_len;
  unsigned mask;
  const uint8_t *payload;
  size_t payload_len;
};

static bool split(const uint8_t *c, size_t n, bool v2, struct content_parts *p) {
  uint64_t len = 0, mask = 0;
  size_t i = 0;
  if (!ana_varint_get(c, n, &i, &len) || len > n - i)
    return false;
  p->text = (const char *)c + i;
  p->text_len = (size_t)len;
  i += (size_t)len;
  p->props = NULL;
  p->props_len = 0;
  p->mask = 0;
  if (v2) {
    if (!ana_varint_get(c, n, &i, &len) || len > n - i)
      return false;
    p->props = (const char *)c + i;
    p->props_len = (size_t)len;
    i += (size_t)len;
    if (!ana_varint_get(c, n, &i, &mask) || mask > 7)
      return false;
    p->mask = (unsigned)mask;
  }
  p->payload = c + i;
  p->payload_len = n - i;
  return true;
}

/* --- the payload's fields that the row's columns hold --- */

/* A google.protobuf.Timestamp of ms as protobuf-c packs it (zero fields
 * left out) in out (room for 24 bytes); its length. */
static size_t timestamp_msg(int64_t ms, uint8_t *out) {
  int64_t sec = ms / 1000, rem = ms % 1000;
  if (rem < 0) {
    rem += 1000;
    sec--;
  }
  size_t n = 0;
  if (sec != 0) {
    out[n++] = 0x08;
    n += ana_varint_put(out + n, (uint64_t)sec);
  }
  if (rem != 0) {
    out[n++] = 0x10;
    n += ana_varint_put(out + n, (uint64_t)(rem * 1000000));
  }
  return n;
}

/* Field `field` (length-delimited) holding value[0..len), its tag and
 * length included, in out (room for len + 12); its length. */
static size_t field_bytes(unsigned field, const void *value, size_t len, uint8_t *out) {
  size_t n = ana_varint_put(out, (uint64_t)field << 3 | 2);
  n += ana_varint_put(out + n, len);
  memcpy(out + n, value, len);
  return n + len;
}

/* The columns' form of the fields of mask, for the payload. */
struct row_fields {
  const char *event_id;
  int64_t ts_ms, received_at_ms;
};

static const unsigned field_of[3] = {1, 6, 10};

/* Field i (0: event_id, 1: timestamp, 2: received_at) of the row in out
 * (room for strlen(event_id) + 40); its length. */
static size_t row_field(const struct row_fields *r, int i, uint8_t *out) {
  uint8_t ts[24];
  if (i == 0)
    return field_bytes(1, r->event_id, strlen(r->event_id), out);
  size_t n = timestamp_msg(i == 1 ? r->ts_ms : r->received_at_ms, ts);
  return field_bytes(field_of[i], ts, n, out);
}

/* The top-level field at p[*i..n): its number and its bytes' end; false
 * when it does not parse. */
static bool next_field(const uint8_t *p, size_t n, size_t *i, unsigned *field, size_t *end) {
  uint64_t tag = 0, len = 0;
  size_t j = *i;
  if (!ana_varint_get(p, n, &j, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
    return false;
  switch (tag & 7) {
  case 0:
    if (!ana_varint_get(p, n, &j, &len))
      return false;
    break;
  case 1:
    if (n - j < 8)
      return false;
    j += 8;
    break;
  case 2:
    if (!ana_varint_get(p, n, &j, &len) || len > n - j)
      return false;
    j += (size_t)len;
    break;
  case 5:
    if (n - j < 4)
      return false;
    j += 4;
    break;
  default: return false;
  }
  *field = (unsigned)(tag >> 3);
  *end = j;
  return true;
}

/* Copies payload to out (room for its length) without the fields that the
 * row rebuilds exactly (each once at most); sets *mask to them. Returns the
 * bytes written. A payload that does not parse is copied whole. */
static size_t strip_fields(const uint8_t *pl, size_t n, const struct row_fields *r, uint8_t *out,
                           uint8_t *scratch, unsigned *mask) {
  *mask = 0;
  size_t i = 0, len = 0;
  while (i < n) {
    unsigned field = 0;
    size_t end = 0;
    if (!next_field(pl, n, &i, &field, &end)) {
      *mask = 0;
      memcpy(out, pl, n);
      return n;
    }
    bool drop = false;
    for (int k = 0; k < 3 && !drop; k++) {
      if (field != field_of[k] || (*mask & (1u << k)) || (k == 0 && !r->event_id))
        continue;
      size_t m = row_field(r, k, scratch);
      drop = m == end - i && memcmp(scratch, pl + i, m) == 0;
      if (drop)
        *mask |= 1u << k;
    }
    if (!drop) {
      memcpy(out + len, pl + i, end - i);
      len += end - i;
    }
    i = end;
  }
  return len;
}

/* The payload of a stripped one with the fields of mask put back from the
 * row, each before the first field of a higher number (where protobuf-c
 * packs it): the bytes as stored. *buf (room grown here) holds it. */
static size_t rebuild_fields(const uint8_t *pl, size_t n, unsigned mask, const struct row_fields *r,
                             uint8_t **buf, size_t *cap) {
  size_t need = n + strlen(r->event_id) + 3 * 40;
  if (!ana_bytes_grow(buf, cap, need))
    return (size_t)-1;
  uint8_t *out = *buf;
  size_t i = 0, len = 0;
  int k = 0;
  while (i < n) {
    unsigned field = 0;
    size_t end = 0;
    if (!next_field(pl, n, &i, &field, &end))
      end = n, field = ~0u;
    for (; k < 3; k++)
      if (mask & (1u << k)) {
        if (field_of[k] > field)
          break;
        len += row_field(r, k, out + len);
      }
    memcpy(out + len, pl + i, end - i);
    len += end - i;
    i = end;
  }
  for (; k < 3; k++)
    if (mask & (1u << k))
      len += row_field(r, k, out + len);
  return len;
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

/* The frames' form (see the format above). */
static void set_frame_parameters(ZSTD_CCtx *cctx) {
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_dictIDFlag, 0);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_format, ZSTD_f_zstd1_magicless);
}

/* Whether a frame starts with zstd's magic number (a body written before
 * the frames went without it). */
static bool has_magic(const uint8_t *z, size_t n) {
  return n >= 4 && z[0] == 0x28 && z[1] == 0xb5 && z[2] == 0x2f && z[3] == 0xfd;
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
  set_frame_parameters(c->cctx);
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
  /* A training after a retired dictionary's is not the first. */
  pthread_mutex_lock(&c->mu);
  c->finished = false;
  atomic_store(&c->trainer_done, false);
  pthread_mutex_unlock(&c->mu);
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

void ana_event_codec_retire(struct ana_event_codec *c, int upto_id) {
  atomic_store(&c->retired_upto, upto_id);
}

bool ana_event_codec_retired(struct ana_event_codec *c, int dict_id) {
  return dict_id > 0 && dict_id <= atomic_load(&c->retired_upto);
}

int ana_event_body_dict(const void *body) {
  return *(const uint8_t *)body & BODY_MAX_DICT;
}

/* Stops compressing with a retired dictionary: bodies are stored raw until
 * one is trained on the bodies stored from now on (sealed ones). */
static void drop_retired(struct ana_event_codec *c) {
  ANA_INFO("store",
           "event bodies: dictionary %d retired (trained before a field was encrypted); "
           "uncompressed until one is trained on the events stored from now on",
           c->dict_id);
  ZSTD_freeCDict(c->cdict);
  c->cdict = NULL;
  ana_free(c->dict);
  c->dict = NULL;
  c->dict_len = 0;
  pthread_mutex_lock(&c->mu);
  c->in_use = false;
  bool training = c->trainer_started;
  pthread_mutex_unlock(&c->mu);
  if (!training && c->dict_id < BODY_MAX_DICT)
    c->gave_up = false;
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
  if (!ana_bytes_grow(&c->samples, &c->samples_cap, c->samples_len + n))
    return;
  memcpy(c->samples + c->samples_len, raw, n);
  c->samples_len += n;
  c->sizes[c->n_samples++] = n;
  if (c->n_samples >= TRAIN_SAMPLES || c->samples_len >= TRAIN_BYTES)
    start_training(c);
}

/* The v2 content of parts (without its tag) at out (room for
 * content_bound(parts)); its length. */
static size_t content_bound(const struct ana_event_body_parts *p) {
  return 40 + (p->text ? strlen(p->text) : 0) + (p->properties ? strlen(p->properties) : 0) +
         p->payload_len;
}

static size_t build_content(const struct ana_event_body_parts *p, uint8_t *out) {
  size_t text_len = p->text ? strlen(p->text) : 0;
  size_t props_len = p->properties ? strlen(p->properties) : 0;
  size_t n = ana_varint_put(out, text_len);
  if (text_len)
    memcpy(out + n, p->text, text_len);
  n += text_len;
  n += ana_varint_put(out + n, props_len);
  if (props_len)
    memcpy(out + n, p->properties, props_len);
  n += props_len;
  struct row_fields r = {p->event_id, p->ts_ms, p->received_at_ms};
  uint8_t scratch[ANA_EVENT_BODY_ID_MAX + 64];
  unsigned mask = 0;
  uint8_t *mask_at = out + n++;
  size_t stripped = 0;
  if (p->payload_len) {
    if (r.event_id && strlen(r.event_id) > ANA_EVENT_BODY_ID_MAX)
      r.event_id = NULL; /* kept in the payload */
    stripped = strip_fields(p->payload, p->payload_len, &r, out + n, scratch, &mask);
  }
  *mask_at = (uint8_t)mask; /* < 0x80: one varint byte */
  return n + stripped;
}

int ana_event_codec_encode(struct ana_event_codec *c, sqlite3 *w,
                           const struct ana_event_body_parts *parts, const void **out,
                           size_t *out_len) {
  if (!ana_bytes_grow(&c->raw, &c->raw_cap, 1 + content_bound(parts)))
    return ANA_ERR_NOMEM;
  size_t n = 1 + build_content(parts, c->raw + 1);
  c->raw[0] = BODY_RAW | BODY_V2;
  if (!c->loaded)
    load(c, w);
  if (c->cdict && c->dict_id <= atomic_load(&c->retired_upto))
    drop_retired(c);
  if (!c->cdict && c->trainer_started && atomic_load(&c->trainer_done))
    adopt(c);
  if (!c->cdict && !c->gave_up)
    sample(c, c->raw + 1, n - 1);
  if (c->cdict) {
    size_t bound = ZSTD_compressBound(n - 1);
    if (!ana_bytes_grow(&c->out, &c->out_cap, 1 + bound))
      return ANA_ERR_NOMEM;
    ZSTD_CCtx_refCDict(c->cctx, c->cdict);
    size_t z = ZSTD_compress2(c->cctx, c->out + 1, bound, c->raw + 1, n - 1);
    if (!ZSTD_isError(z) && z + 1 < n) {
      c->out[0] = (uint8_t)(c->dict_id | BODY_V2);
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
  uint8_t *buf, *pbuf;
  size_t cap, pcap;
  /* The compressed body whose content buf holds (len), so that the
   * functions of one row (text, properties, payload) decompress it once. */
  uint8_t *last;
  size_t last_len, last_cap, len;
  /* For the migration to content v2 (bodies compressed again with their
   * own dictionary). */
  ZSTD_CCtx *cctx;
  ZSTD_CDict *cdicts[BODY_MAX_DICT + 1];
};

static void decoder_free(void *p) {
  struct decoder *d = p;
  if (!d)
    return;
  ZSTD_freeDCtx(d->dctx);
  ZSTD_freeCCtx(d->cctx);
  for (int i = 0; i <= BODY_MAX_DICT; i++) {
    ZSTD_freeDDict(d->ddicts[i]);
    ZSTD_freeCDict(d->cdicts[i]);
  }
  ana_free(d->buf);
  ana_free(d->pbuf);
  ana_free(d->last);
  ana_free(d);
}

/* Dictionary id's decompression (or, compress: compression) form. */
static void *dict_of(struct decoder *d, sqlite3 *conn, int id, bool compress) {
  if (compress ? (void *)d->cdicts[id] : (void *)d->ddicts[id])
    return compress ? (void *)d->cdicts[id] : (void *)d->ddicts[id];
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(conn, "SELECT dict FROM event_dicts WHERE id = ?", -1, &st, NULL) ==
      SQLITE_OK) {
    sqlite3_bind_int(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW) {
      const void *b = sqlite3_column_blob(st, 0);
      size_t n = (size_t)sqlite3_column_bytes(st, 0);
      if (compress)
        d->cdicts[id] = ZSTD_createCDict(b, n, LEVEL);
      else
        d->ddicts[id] = ZSTD_createDDict(b, n);
    }
  }
  sqlite3_finalize(st);
  return compress ? (void *)d->cdicts[id] : (void *)d->ddicts[id];
}

/* The content of the body v (NULL with the error set); *v2: its format. */
static const uint8_t *content(sqlite3_context *ctx, sqlite3_value *v, size_t *len, bool *v2) {
  const uint8_t *b = sqlite3_value_blob(v);
  size_t n = (size_t)sqlite3_value_bytes(v);
  if (!b || n < 1) {
    sqlite3_result_error(ctx, "event body: empty", -1);
    return NULL;
  }
  *v2 = (b[0] & BODY_V2) != 0;
  int id = b[0] & ~BODY_V2;
  if (id == BODY_RAW) {
    *len = n - 1;
    return b + 1;
  }
  struct decoder *d = sqlite3_user_data(ctx);
  if (d->last_len == n && memcmp(d->last, b, n) == 0) {
    *len = d->len;
    return d->buf;
  }
  d->last_len = 0;
  ZSTD_DDict *dd = dict_of(d, sqlite3_context_db_handle(ctx), id, false);
  ZSTD_format_e format = has_magic(b + 1, n - 1) ? ZSTD_f_zstd1 : ZSTD_f_zstd1_magicless;
  ZSTD_frameHeader fh;
  unsigned long long size = ZSTD_getFrameHeader_advanced(&fh, b + 1, n - 1, format) == 0
                                ? fh.frameContentSize
                                : ZSTD_CONTENTSIZE_ERROR;
  if (!dd || size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ||
      size > (64u << 20)) {
    sqlite3_result_error(ctx, dd ? "event body: corrupt" : "event body: dictionary missing", -1);
    return NULL;
  }
  if (!d->dctx && !(d->dctx = ZSTD_createDCtx())) {
    sqlite3_result_error_nomem(ctx);
    return NULL;
  }
  if (!ana_bytes_grow(&d->buf, &d->cap, (size_t)size + 1)) {
    sqlite3_result_error_nomem(ctx);
    return NULL;
  }
  ZSTD_DCtx_reset(d->dctx, ZSTD_reset_session_only);
  size_t z = ZSTD_isError(ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_format, format)) ||
                     ZSTD_isError(ZSTD_DCtx_refDDict(d->dctx, dd))
                 ? (size_t)-1
                 : ZSTD_decompressDCtx(d->dctx, d->buf, d->cap, b + 1, n - 1);
  if (ZSTD_isError(z) || z != size) {
    sqlite3_result_error(ctx, "event body: corrupt", -1);
    return NULL;
  }
  *len = d->len = z;
  if (ana_bytes_grow(&d->last, &d->last_cap, n)) {
    memcpy(d->last, b, n);
    d->last_len = n;
  }
  return d->buf;
}

/* Reads a body's parts for the SQL functions: false (with the error set on
 * ctx) when it is corrupt. */
static bool body_parts(sqlite3_context *ctx, sqlite3_value *body, struct content_parts *p) {
  size_t n = 0;
  bool v2 = false;
  const uint8_t *c = content(ctx, body, &n, &v2);
  if (!c)
    return false;
  if (!split(c, n, v2, p)) {
    sqlite3_result_error(ctx, "event body: corrupt", -1);
    return false;
  }
  return true;
}

static void fn_text(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  struct content_parts p;
  if (body_parts(ctx, argv[0], &p))
    sqlite3_result_text(ctx, p.text, (int)p.text_len, SQLITE_TRANSIENT);
}

/* NULL for a body of content v1 (it had a column of its own). */
static void fn_props(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  struct content_parts p;
  if (body_parts(ctx, argv[0], &p) && p.props)
    sqlite3_result_text(ctx, p.props, (int)p.props_len, SQLITE_TRANSIENT);
}

/* ana_event_props_has(body, text): whether the properties' JSON holds text
 * (a cheap test before a filter parses them); NULL for content v1. */
static void fn_props_has(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  struct content_parts p;
  const char *t = (const char *)sqlite3_value_text(argv[1]);
  size_t n = (size_t)sqlite3_value_bytes(argv[1]);
  if (body_parts(ctx, argv[0], &p) && p.props && t)
    sqlite3_result_int(ctx, memmem(p.props, p.props_len, t, n) != NULL);
}

/* ana_event_payload(body) (a payload with no field left out) or
 * ana_event_payload(body, event_id, ts, received_at). */
static void fn_payload(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  struct content_parts p;
  if (!body_parts(ctx, argv[0], &p))
    return;
  if (p.mask == 0) {
    sqlite3_result_blob(ctx, p.payload_len ? (const void *)p.payload : "", (int)p.payload_len,
                        SQLITE_TRANSIENT);
    return;
  }
  if (argc < 4) {
    sqlite3_result_error(ctx, "event body: the payload needs its row's columns", -1);
    return;
  }
  char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
  struct row_fields r = {ana_event_id_text(argv[1], id_buf), sqlite3_value_int64(argv[2]),
                         sqlite3_value_int64(argv[3])};
  struct decoder *d = sqlite3_user_data(ctx);
  size_t n = rebuild_fields(p.payload, p.payload_len, p.mask, &r, &d->pbuf, &d->pcap);
  if (n == (size_t)-1)
    sqlite3_result_error_nomem(ctx);
  else
    sqlite3_result_blob(ctx, d->pbuf, (int)n, SQLITE_TRANSIENT);
}

/* ana_event_dict(body): the id of the dictionary it is compressed with. */
static void fn_dict(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const uint8_t *b = sqlite3_value_blob(argv[0]);
  sqlite3_result_int(ctx, b && sqlite3_value_bytes(argv[0]) > 0 ? b[0] & ~BODY_V2 : 0);
}

/* ana_event_body_raw(body): the same content uncompressed. */
static void fn_body_raw(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  size_t n = 0;
  bool v2 = false;
  const uint8_t *c = content(ctx, argv[0], &n, &v2);
  if (!c)
    return;
  uint8_t *b = sqlite3_malloc64(n + 1);
  if (!b) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  b[0] = v2 ? BODY_RAW | BODY_V2 : BODY_RAW;
  if (n)
    memcpy(b + 1, c, n);
  sqlite3_result_blob(ctx, b, (int)(n + 1), sqlite3_free);
}

/* ana_event_body(text, payload): an uncompressed body of content v1 (for
 * the migration to it); ana_event_body(text, properties, payload, event_id,
 * ts, received_at): one of content v2. */
static void fn_body(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  bool v2 = argc == 6;
  int pl = v2 ? 2 : 1;
  char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
  struct ana_event_body_parts parts = {
      .text = (const char *)sqlite3_value_text(argv[0]),
      .properties = v2 ? (const char *)sqlite3_value_text(argv[1]) : NULL,
      .payload = sqlite3_value_blob(argv[pl]),
      .payload_len = (size_t)sqlite3_value_bytes(argv[pl]),
      .event_id = v2 ? ana_event_id_text(argv[3], id_buf) : NULL,
      .ts_ms = v2 ? sqlite3_value_int64(argv[4]) : 0,
      .received_at_ms = v2 ? sqlite3_value_int64(argv[5]) : 0,
  };
  if (!parts.payload)
    parts.payload_len = 0;
  uint8_t *b = sqlite3_malloc64(1 + content_bound(&parts));
  if (!b) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  size_t n = 1;
  if (v2) {
    b[0] = BODY_RAW | BODY_V2;
    n += build_content(&parts, b + 1);
  } else {
    size_t text_len = parts.text ? strlen(parts.text) : 0;
    b[0] = BODY_RAW;
    n += ana_varint_put(b + n, text_len);
    if (text_len)
      memcpy(b + n, parts.text, text_len);
    n += text_len;
    if (parts.payload_len)
      memcpy(b + n, parts.payload, parts.payload_len);
    n += parts.payload_len;
  }
  sqlite3_result_blob(ctx, b, (int)n, sqlite3_free);
}

/* ana_event_body_v2(body, properties, event_id, ts, received_at): a body of
 * content v1 as one of v2 (for the migration to it), compressed again with
 * its dictionary when it was; a v2 body as it is. */
static void fn_body_v2(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const uint8_t *old = sqlite3_value_blob(argv[0]);
  if (old && sqlite3_value_bytes(argv[0]) > 0 && (old[0] & BODY_V2)) {
    sqlite3_result_value(ctx, argv[0]);
    return;
  }
  int id = old && sqlite3_value_bytes(argv[0]) > 0 ? old[0] : 0;
  struct content_parts p;
  if (!body_parts(ctx, argv[0], &p))
    return;
  char *text = sqlite3_malloc64(p.text_len + 1);
  if (!text) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  memcpy(text, p.text, p.text_len);
  text[p.text_len] = '\0';
  char id_buf[ANA_EVENT_ID_UUID_LEN + 1];
  struct ana_event_body_parts parts = {
      .text = text,
      .properties = (const char *)sqlite3_value_text(argv[1]),
      .payload = p.payload,
      .payload_len = p.payload_len,
      .event_id = ana_event_id_text(argv[2], id_buf),
      .ts_ms = sqlite3_value_int64(argv[3]),
      .received_at_ms = sqlite3_value_int64(argv[4]),
  };
  struct decoder *d = sqlite3_user_data(ctx);
  size_t bound = content_bound(&parts);
  uint8_t *raw = sqlite3_malloc64(1 + bound);
  if (!raw) {
    sqlite3_free(text);
    sqlite3_result_error_nomem(ctx);
    return;
  }
  /* p points into d->buf (a compressed body's content): built apart. */
  size_t n = build_content(&parts, raw + 1);
  sqlite3_free(text);
  raw[0] = BODY_RAW | BODY_V2;
  ZSTD_CDict *cd = id > 0 ? dict_of(d, sqlite3_context_db_handle(ctx), id, true) : NULL;
  if (cd && (d->cctx || (d->cctx = ZSTD_createCCtx()))) {
    size_t zb = ZSTD_compressBound(n);
    uint8_t *z = sqlite3_malloc64(1 + zb);
    ZSTD_CCtx_reset(d->cctx, ZSTD_reset_session_and_parameters);
    set_frame_parameters(d->cctx);
    ZSTD_CCtx_refCDict(d->cctx, cd);
    size_t zn = z ? ZSTD_compress2(d->cctx, z + 1, zb, raw + 1, n) : 0;
    if (z && !ZSTD_isError(zn) && zn + 1 < n + 1) {
      z[0] = (uint8_t)(id | BODY_V2);
      sqlite3_free(raw);
      sqlite3_result_blob(ctx, z, (int)(zn + 1), sqlite3_free);
      return;
    }
    sqlite3_free(z);
  }
  sqlite3_result_blob(ctx, raw, (int)(n + 1), sqlite3_free);
}

int ana_event_body_register(sqlite3 *conn) {
  struct decoder *d = ana_calloc(1, sizeof *d);
  if (!d)
    return ANA_ERR_NOMEM;
  /* The decoder is shared by the functions and freed with the last. */
  int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
  static const struct {
    const char *name;
    int argc;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
  } fns[] = {
      {"ana_event_text", 1, fn_text},           {"ana_event_props", 1, fn_props},
      {"ana_event_props_has", 2, fn_props_has}, {"ana_event_payload", 1, fn_payload},
      {"ana_event_payload", 4, fn_payload},     {"ana_event_dict", 1, fn_dict},
      {"ana_event_body_raw", 1, fn_body_raw},   {"ana_event_body", 2, fn_body},
      {"ana_event_body", 6, fn_body},           {"ana_event_body_v2", 5, fn_body_v2},
  };
  size_t n = sizeof fns / sizeof fns[0];
  for (size_t i = 0; i < n; i++)
    if (sqlite3_create_function_v2(conn, fns[i].name, fns[i].argc, flags, d, fns[i].fn, NULL, NULL,
                                   i + 1 == n ? decoder_free : NULL) != SQLITE_OK) {
      if (i + 1 < n)
        decoder_free(d); /* the last one's destructor ran when it failed */
      return ANA_ERR_INTERNAL;
    }
  return ana_event_id_register(conn);
}
