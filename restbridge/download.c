/* File downloads: a server-streaming method of analytics.v1.FileChunk served
 * as plain HTTP. The request's Range (one range) and If-None-Match become
 * its offset/length and if_none_match; the first chunk's headers become
 * Content-Type, Content-Disposition, Content-Length, ETag (and
 * Content-Range); the chunks' data is written as the raw body as it comes.
 *
 * Flow control: a call queues at most stream_buffer_size chunks and
 * RB_DOWNLOAD_QUEUE_MAX bytes; beyond that ana_call_send answers
 * ANA_ERR_FULL and the sender waits (the file helper retries, the remote
 * bridge holds its gRPC read back), so a slow reader holds at most that
 * much. The queued bytes count in the stream queue budget's gauge.
 *
 * Nothing is answered before the first chunk that has data, or the end of
 * the call: a header-only first chunk followed by OK is an empty file, or
 * 304 when If-None-Match holds its ETag (the sender then reads no data);
 * followed by OUT_OF_RANGE it is 416 with Content-Range: bytes * /size. An
 * error before the first byte is the usual JSON error; an error after it
 * (or fewer bytes than announced) cuts the connection, so the client sees
 * a short transfer and can resume with Range. */
#include "restbridge_internal.h"

#include "budget.h"

#include "ana_alloc.h"
#include "ana_byte_range.h"
#include "ana_log.h"

#include "analytics/v1/reports.pb-c.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITE_CHUNK 16384

/* --- the transport (any thread) --- */

static char *dup_or_null(const char *s) {
  return s && s[0] ? ana_strdup(s) : NULL;
}

/* Takes chunk's data (and, from the first chunk, its headers) onto the
 * call's queue; force: past the queue's limits (the last message given to
 * finish). */
static int take_chunk(struct rb_call *c, const ProtobufCMessage *message, bool force) {
  if (message->descriptor != &analytics__v1__file_chunk__descriptor)
    return ANA_ERR_INVALID;
  const Analytics__V1__FileChunk *ch = (const Analytics__V1__FileChunk *)message;
  struct rb_msg *m = NULL;
  if (ch->data.len && !(m = rb_msg_new(ch->data.data, ch->data.len)))
    return ANA_ERR_NOMEM;
  size_t limit = c->bridge->opt.stream_buffer_size;
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  if (c->finished || atomic_load(&c->base.cancelled)) {
    rc = ANA_ERR_CLOSED;
  } else if (!force && c->q_head &&
             (c->q_len >= limit || atomic_load(&c->q_bytes) >= RB_DOWNLOAD_QUEUE_MAX)) {
    rc = ANA_ERR_FULL;
  } else {
    if (!c->dl_head) {
      c->dl_head = true;
      c->dl_total = ch->total_size;
      c->dl_type = dup_or_null(ch->content_type);
      c->dl_etag = dup_or_null(ch->etag);
      c->dl_filename = dup_or_null(ch->filename);
    }
    if (m) {
      if (c->q_tail)
        c->q_tail->next = m;
      else
        c->q_head = m;
      c->q_tail = m;
      c->q_len++;
      rb_budget_stream_push(c->bridge->budget, c, m->len);
      m = NULL;
    }
  }
  pthread_mutex_unlock(&c->mu);
  rb_msg_free(m);
  if (rc != ANA_ERR_CLOSED)
    rb_call_wake(c);
  return rc;
}

static int dl_send(struct ana_call *call, const ProtobufCMessage *message) {
  return take_chunk((struct rb_call *)call, message, false);
}

static size_t dl_send_queue_length(struct ana_call *call) {
  struct rb_call *c = (struct rb_call *)call;
  pthread_mutex_lock(&c->mu);
  size_t n = c->q_len;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static void dl_finish(struct ana_call *call, const ProtobufCMessage *response,
                      const struct ana_error *status) {
  struct rb_call *c = (struct rb_call *)call;
  struct rb_reply r;
  memset(&r, 0, sizeof r);
  bool ok = !status || status->code == ANA_STATUS_OK;
  if (ok && response && take_chunk(c, response, true) == ANA_ERR_INVALID) {
    struct ana_error st;
    ana_error_set(&st, ANA_STATUS_INTERNAL, "%s answered with a message other than FileChunk",
                  call->method->path);
    rb_reply_error(&r, call, &st);
    ok = false;
  } else if (!ok) {
    rb_reply_error(&r, call, status);
  }
  pthread_mutex_lock(&c->mu);
  c->reply = r;
  c->dl_failed = !ok;
  c->dl_code = ok ? ANA_STATUS_OK : status ? status->code : ANA_STATUS_INTERNAL;
  rb_call_settle(c);
}

const struct ana_call_transport rb_download_transport = {
    .send = dl_send,
    .send_queue_length = dl_send_queue_length,
    .finish = dl_finish,
    .name = "http-download",
};

/* --- the request (lws thread) --- */

/* Parses one "bytes=a-b", "bytes=a-" or "bytes=-n". Anything else (several
 * ranges, another unit, bad syntax) is ignored: the whole file is sent
 * (RFC 9110 14.2 allows ignoring Range). */
static bool parse_range(const char *v, int64_t *offset, int64_t *length) {
  if (strncasecmp(v, "bytes=", 6) != 0)
    return false;
  v += 6;
  while (*v == ' ')
    v++;
  if (strchr(v, ','))
    return false;
  char *end;
  if (*v == '-') {
    if (v[1] < '0' || v[1] > '9')
      return false;
    long long n = strtoll(v + 1, &end, 10);
    while (*end == ' ')
      end++;
    if (*end || n <= 0)
      return false;
    *offset = -n;
    *length = 0;
    return true;
  }
  if (*v < '0' || *v > '9')
    return false;
  long long a = strtoll(v, &end, 10);
  if (*end != '-' || a < 0)
    return false;
  v = end + 1;
  while (*v == ' ')
    v++;
  if (!*v) {
    *offset = a;
    *length = 0;
    return true;
  }
  if (*v < '0' || *v > '9')
    return false;
  long long b = strtoll(v, &end, 10);
  while (*end == ' ')
    end++;
  if (*end || b < a || b == INT64_MAX)
    return false;
  *offset = a;
  *length = b - a + 1;
  return true;
}

void rb_download_read_headers(struct lws *wsi, struct rb_conn *conn) {
  char v[192];
  conn->dl_range = false;
  conn->dl_offset = conn->dl_length = 0;
  conn->dl_if_none_match[0] = '\0';
  if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_RANGE) > 0 &&
      lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_RANGE) > 0)
    conn->dl_range = parse_range(v, &conn->dl_offset, &conn->dl_length);
  if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
      lws_hdr_copy(wsi, conn->dl_if_none_match, sizeof conn->dl_if_none_match,
                   WSI_TOKEN_HTTP_IF_NONE_MATCH) < 0)
    conn->dl_if_none_match[0] = '\0';
}

static void set_field(ProtobufCMessage *msg, const char *name, const void *value, size_t size) {
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
  if (f)
    memcpy((char *)msg + f->offset, value, size);
}

int rb_download_fill_request(struct rb_call *c, const struct rb_conn *conn, ProtobufCMessage *req) {
  if (conn->dl_range) {
    set_field(req, "offset", &conn->dl_offset, sizeof conn->dl_offset);
    set_field(req, "length", &conn->dl_length, sizeof conn->dl_length);
  }
  if (conn->dl_if_none_match[0]) {
    char *v = ana_arena_strdup(&c->base.arena, conn->dl_if_none_match);
    if (!v)
      return ANA_ERR_NOMEM;
    set_field(req, "if_none_match", &v, sizeof v);
  }
  return 0;
}

/* --- answering (lws thread) --- */

/* The ETag as a header value: quoted unless it already is (or weak). */
static void etag_value(const char *etag, char *out, size_t size) {
  if (etag[0] == '"' || strncmp(etag, "W/\"", 3) == 0)
    snprintf(out, size, "%s", etag);
  else
    snprintf(out, size, "\"%s\"", etag);
}

/* If-None-Match (a list of entity tags, or "*") against etag: weak
 * comparison (RFC 9110 13.1.2). */
static bool none_match_hits(const char *header, const char *etag) {
  if (!header[0] || !etag)
    return false;
  char want[200];
  etag_value(etag, want, sizeof want);
  const char *w = strncmp(want, "W/", 2) == 0 ? want + 2 : want;
  size_t wn = strlen(w);
  const char *p = header;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    if (*p == '*')
      return true;
    if (strncmp(p, "W/", 2) == 0)
      p += 2;
    const char *e = p;
    if (*e == '"') {
      e = strchr(e + 1, '"');
      e = e ? e + 1 : p + strlen(p);
    } else {
      while (*e && *e != ',' && *e != ' ')
        e++;
    }
    if ((size_t)(e - p) == wn && memcmp(p, w, wn) == 0)
      return true;
    p = e;
  }
  return false;
}

/* Content-Disposition: attachment; filename="<ASCII>" and, when the name is
 * not plain ASCII, filename*=UTF-8''<percent-encoded> (RFC 6266). */
static char *disposition(const char *name) {
  if (!name || !name[0])
    name = "download";
  size_t n = strlen(name);
  char *out = ana_malloc(64 + n * 4);
  if (!out)
    return NULL;
  char *p = out;
  bool ascii = true;
  p += sprintf(p, "attachment; filename=\"");
  for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
    if (*s >= 0x80) {
      ascii = false;
      /* one '_' per character: skip continuation bytes */
      if ((*s & 0xc0) != 0x80)
        *p++ = '_';
    } else if (*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\' || *s == '/') {
      *p++ = '_';
    } else {
      *p++ = (char)*s;
    }
  }
  *p++ = '"';
  if (!ascii) {
    static const char hex[] = "0123456789ABCDEF";
    p += sprintf(p, "; filename*=UTF-8''");
    for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
      bool plain = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                   (*s >= '0' && *s <= '9') || strchr("!#$&+-.^_`|~", *s);
      if (plain && *s) {
        *p++ = (char)*s;
      } else {
        *p++ = '%';
        *p++ = hex[*s >> 4];
        *p++ = hex[*s & 15];
      }
    }
  }
  *p = '\0';
  return out;
}

void rb_download_reset(struct rb_conn *conn) {
  ana_free(conn->dl_disposition);
  conn->dl_disposition = NULL;
  conn->dl_type = NULL;
  conn->dl_streaming = false;
  conn->dl_left = 0;
  conn->dl_msg_off = 0;
  conn->dl_status_headers = false;
  conn->dl_content_range[0] = '\0';
  conn->dl_etag[0] = '\0';
}

/* Decides the answer once the first data or the end of the call is in.
 * Returns true when conn->reply (and the dl_ fields) are ready to write. */
bool rb_download_on_wake(struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  pthread_mutex_lock(&c->mu);
  bool finished = c->finished, head = c->dl_head, data = c->q_head != NULL;
  if (!finished && !data) {
    pthread_mutex_unlock(&c->mu);
    return false; /* nothing to decide on yet */
  }
  struct rb_reply r = c->reply;
  memset(&c->reply, 0, sizeof c->reply);
  bool failed = c->dl_failed;
  enum ana_status code = c->dl_code;
  int64_t total = c->dl_total;
  pthread_mutex_unlock(&c->mu);
  /* The head fields are written once (before the first data is queued). */
  rb_reply_clear(&conn->reply);
  rb_download_reset(conn);
  if (head && c->dl_etag)
    etag_value(c->dl_etag, conn->dl_etag, sizeof conn->dl_etag);
  int64_t start = 0, count = total;
  bool satisfiable =
      !head || ana_byte_range_resolve(conn->dl_range ? conn->dl_offset : 0,
                                      conn->dl_range ? conn->dl_length : 0, total, &start, &count);
  /* The bridge checks too: a sender that ignored if_none_match is cut off. */
  if (head && (!failed || code == ANA_STATUS_OK) &&
      none_match_hits(conn->dl_if_none_match, c->dl_etag)) {
    rb_reply_clear(&r);
    conn->reply.http_status = 304;
    conn->dl_status_headers = true;
    return true;
  }
  if (head && !data && conn->dl_range && (!satisfiable || code == ANA_STATUS_OUT_OF_RANGE)) {
    conn->reply = r; /* the handler's OUT_OF_RANGE body, if any */
    if (!conn->reply.body) {
      struct ana_error st;
      ana_error_set(&st, ANA_STATUS_OUT_OF_RANGE,
                    "the range is past the end of the file (%" PRId64 " bytes)", total);
      rb_reply_error(&conn->reply, NULL, &st);
    }
    conn->reply.http_status = 416;
    snprintf(conn->dl_content_range, sizeof conn->dl_content_range, "bytes */%" PRId64, total);
    conn->dl_status_headers = true;
    return true;
  }
  if (failed && !data) {
    conn->reply = r;
    /* A file that is not ready (a report run not completed) conflicts with
     * the resource's state: 409, as the download contract documents. */
    if (code == ANA_STATUS_FAILED_PRECONDITION)
      conn->reply.http_status = 409;
    else if (code == ANA_STATUS_OUT_OF_RANGE && conn->dl_range)
      conn->reply.http_status = 416;
    return true;
  }
  rb_reply_clear(&r);
  if (!head || !satisfiable) {
    struct ana_error st;
    ana_error_set(&st, ANA_STATUS_INTERNAL,
                  head ? "%s sent a file that does not match its size"
                       : "%s answered without a file",
                  c->base.method->path);
    rb_reply_error(&conn->reply, NULL, &st);
    return true;
  }
  conn->reply.http_status = conn->dl_range ? 206 : 200;
  if (conn->dl_range)
    snprintf(conn->dl_content_range, sizeof conn->dl_content_range,
             "bytes %" PRId64 "-%" PRId64 "/%" PRId64, start, start + count - 1, total);
  conn->dl_disposition = disposition(c->dl_filename);
  conn->dl_type = c->dl_type ? c->dl_type : "application/octet-stream";
  conn->dl_left = count;
  conn->dl_streaming = true;
  conn->dl_status_headers = true;
  return true;
}

int rb_download_add_headers(struct lws *wsi, struct rb_conn *conn, unsigned char **p,
                            unsigned char *end) {
  int rc = lws_add_http_header_by_name(
      wsi, (const unsigned char *)"accept-ranges:", (const unsigned char *)"bytes", 5, p, end);
  if (!rc && conn->dl_etag[0])
    rc = lws_add_http_header_by_name(
        wsi, (const unsigned char *)"etag:", (const unsigned char *)conn->dl_etag,
        (int)strlen(conn->dl_etag), p, end);
  if (!rc && conn->dl_content_range[0])
    rc = lws_add_http_header_by_name(
        wsi, (const unsigned char *)"content-range:", (const unsigned char *)conn->dl_content_range,
        (int)strlen(conn->dl_content_range), p, end);
  if (!rc && conn->dl_disposition)
    rc = lws_add_http_header_by_name(wsi, (const unsigned char *)"content-disposition:",
                                     (const unsigned char *)conn->dl_disposition,
                                     (int)strlen(conn->dl_disposition), p, end);
  return rc;
}

/* Writes the next piece of the body. Returns 0 (more to come: wait for a
 * wake or the next WRITEABLE), 1 (all written: the transaction is done) or
 * -1 (hang up: the call failed or sent a different number of bytes). */
int rb_download_write(struct lws *wsi, struct rb_conn *conn) {
  struct rb_call *c = conn->call;
  if (!c)
    return -1;
  pthread_mutex_lock(&c->mu);
  struct rb_msg *m = c->q_head;
  bool finished = c->finished, failed = c->dl_failed;
  pthread_mutex_unlock(&c->mu);
  if (!m) {
    if (!finished)
      return 0; /* the sender's next chunk wakes us */
    if (conn->dl_left != 0) {
      ANA_WARN(RB_COMPONENT, "download of %s ended %s with %" PRId64 " bytes unsent: hanging up",
               c->base.method->path, failed ? "with an error" : "early", conn->dl_left);
      return -1;
    }
    return 1;
  }
  /* Only this thread takes messages off the queue, so m stays the head. */
  size_t left = m->len - conn->dl_msg_off;
  size_t n = left > WRITE_CHUNK ? WRITE_CHUNK : left;
  if ((int64_t)n > conn->dl_left) {
    ANA_WARN(RB_COMPONENT, "download of %s sent more bytes than announced: hanging up",
             c->base.method->path);
    return -1;
  }
  bool last = (int64_t)n == conn->dl_left;
  if (lws_write(wsi, m->data + conn->dl_msg_off, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
      (int)n)
    return -1;
  conn->dl_left -= (int64_t)n;
  conn->dl_msg_off += n;
  conn->bytes_out += (long long)n;
  if (conn->dl_msg_off == m->len) {
    pthread_mutex_lock(&c->mu);
    c->q_head = m->next;
    if (!c->q_head)
      c->q_tail = NULL;
    c->q_len--;
    rb_budget_stream_pop(c->bridge->budget, c, m->len);
    pthread_mutex_unlock(&c->mu);
    m->next = NULL;
    rb_msg_free(m);
    conn->dl_msg_off = 0;
  }
  if (last) {
    /* The body is complete; whatever follows (nothing, or the end) is
     * waited for before the connection is reused. */
    pthread_mutex_lock(&c->mu);
    bool more = c->q_head != NULL, done = c->finished;
    pthread_mutex_unlock(&c->mu);
    if (more)
      return -1;
    return done ? 1 : 0;
  }
  lws_callback_on_writable(wsi);
  return 0;
}
