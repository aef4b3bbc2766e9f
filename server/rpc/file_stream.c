/* Sends a file as FileChunk messages on a thread of its own, one chunk at a
 * time, waiting while the call's send queue is full. */
#include "ana_file_stream.h"

#include "ana_alloc.h"
#include "ana_byte_range.h"
#include "ana_error.h"

#include "analytics/v1/reports.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How long a stream whose queue is full waits before it tries again. */
#define FULL_RETRY_US 2000

static atomic_int active;

struct file_stream {
  struct ana_call *call;
  char *path, *content_type, *filename, *etag, *if_none_match;
  int64_t offset, length;
  size_t chunk_size;
  const struct ana_file_source *source;
  char *source_key;
};

static void stream_free(struct file_stream *s) {
  ana_free(s->path);
  ana_free(s->content_type);
  ana_free(s->filename);
  ana_free(s->etag);
  ana_free(s->if_none_match);
  ana_free(s->source_key);
  ana_free(s);
}

static char *dup_opt(const char *v, bool *failed) {
  if (!v)
    return NULL;
  char *d = ana_strdup(v);
  if (!d)
    *failed = true;
  return d;
}

/* An entity tag without W/ and quotes, as n bytes at *out. */
static void bare_tag(const char *t, const char **out, size_t *n) {
  if (strncmp(t, "W/", 2) == 0)
    t += 2;
  size_t len = strlen(t);
  if (len >= 2 && t[0] == '"' && t[len - 1] == '"') {
    t++;
    len -= 2;
  }
  *out = t;
  *n = len;
}

/* Whether the If-None-Match list (or "*") names etag (weak comparison). */
static bool none_match(const char *header, const char *etag) {
  const char *want;
  size_t wn;
  bare_tag(etag, &want, &wn);
  char item[256];
  const char *p = header;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    const char *e = p;
    while (*e && *e != ',')
      e++;
    size_t n = (size_t)(e - p);
    while (n && p[n - 1] == ' ')
      n--;
    if (n && n < sizeof item) {
      memcpy(item, p, n);
      item[n] = '\0';
      if (strcmp(item, "*") == 0)
        return true;
      const char *got;
      size_t gn;
      bare_tag(item, &got, &gn);
      if (gn == wn && memcmp(got, want, wn) == 0)
        return true;
    }
    p = e;
  }
  return false;
}

/* Sends chunk, waiting while the queue is full. 0, or ANA_ERR_CLOSED. */
static int send_waiting(struct ana_call *call, const Analytics__V1__FileChunk *chunk) {
  for (;;) {
    int rc = ana_call_send(call, &chunk->base);
    if (rc != ANA_ERR_FULL)
      return rc;
    if (ana_call_is_cancelled(call))
      return ANA_ERR_CLOSED;
    struct timespec ts = {0, FULL_RETRY_US * 1000L};
    nanosleep(&ts, NULL);
  }
}

static void *stream_run(void *arg) {
  struct file_stream *s = arg;
  struct ana_call *call = s->call;
  unsigned char *buf = NULL;
  void *state = NULL; /* s->source's */
  char etag[96];
  int fd = open(s->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      ana_call_fail(call, ANA_STATUS_NOT_FOUND, "the file is gone");
    else
      ana_call_fail(call, ANA_STATUS_INTERNAL, "cannot open the file: %s", strerror(errno));
    goto out;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    ana_call_fail(call, ANA_STATUS_INTERNAL, "not a regular file");
    goto out;
  }
  if (s->source) {
    struct ana_error err;
    ana_error_clear(&err);
    int64_t size = 0;
    if (!(state = s->source->open(s->source->ctx, s->source_key ? s->source_key : "", fd, &size,
                                  &err))) {
      ana_call_fail(call, err.code ? err.code : ANA_STATUS_INTERNAL, "%s", err.message);
      goto out;
    }
    st.st_size = (off_t)size; /* the content's, as sent */
  }
  if (s->etag) {
    snprintf(etag, sizeof etag, "%s", s->etag);
  } else {
    snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st.st_size,
             (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec);
  }
  const char *slash = strrchr(s->path, '/');
  Analytics__V1__FileChunk chunk = ANALYTICS__V1__FILE_CHUNK__INIT;
  chunk.content_type = s->content_type ? s->content_type : "application/octet-stream";
  chunk.filename = s->filename ? s->filename : (char *)(slash ? slash + 1 : s->path);
  chunk.etag = etag;
  chunk.total_size = st.st_size;
  Analytics__V1__FileChunk head = chunk;

  int64_t start, count;
  if (s->if_none_match && none_match(s->if_none_match, etag)) {
    if (send_waiting(call, &head) == 0)
      ana_call_finish(call, NULL, NULL); /* not modified: no data read */
    else
      ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
    goto out;
  }
  if (!ana_byte_range_resolve(s->offset, s->length, st.st_size, &start, &count)) {
    if (send_waiting(call, &head) == 0)
      ana_call_fail(call, ANA_STATUS_OUT_OF_RANGE,
                    "the range (offset %" PRId64 ") is outside the file (%" PRId64 " bytes)",
                    s->offset, (int64_t)st.st_size);
    else
      ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
    goto out;
  }
  buf = ana_malloc(s->chunk_size);
  if (!buf) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  bool first = true;
  int64_t pos = start, end = start + count;
  do {
    size_t want = end - pos < (int64_t)s->chunk_size ? (size_t)(end - pos) : s->chunk_size;
    ssize_t got = 0;
    if (state) {
      struct ana_error err;
      ana_error_clear(&err);
      int64_t r = want ? s->source->read_at(state, buf, want, pos, &err) : 0;
      if (r < 0) {
        ana_call_fail(call, err.code ? err.code : ANA_STATUS_INTERNAL, "%s", err.message);
        goto out;
      }
      got = (ssize_t)r;
    } else {
      while (want && (got = pread(fd, buf, want, pos)) < 0 && errno == EINTR)
        ;
    }
    if (got < 0) {
      ana_call_fail(call, ANA_STATUS_INTERNAL, "cannot read the file: %s", strerror(errno));
      goto out;
    }
    if (want && got == 0) {
      ana_call_fail(call, ANA_STATUS_DATA_LOSS, "the file shrank while it was sent");
      goto out;
    }
    Analytics__V1__FileChunk *m = first ? &head : &chunk;
    if (!first) {
      m->content_type = m->etag = m->filename = (char *)"";
      m->total_size = 0;
    }
    m->data.data = buf;
    m->data.len = (size_t)got;
    if (send_waiting(call, m) < 0) {
      ana_call_fail(call, ANA_STATUS_CANCELLED, "cancelled");
      goto out;
    }
    first = false;
    pos += got;
  } while (pos < end);
  ana_call_finish(call, NULL, NULL);
out:
  if (state)
    s->source->close(state);
  if (fd >= 0)
    close(fd);
  ana_free(buf);
  stream_free(s);
  atomic_fetch_sub(&active, 1);
  return NULL;
}

int ana_file_stream_start(struct ana_call *call, const struct ana_file_stream_options *o) {
  if (!o || !o->path || !o->path[0] || o->length < 0)
    return ANA_ERR_INVALID;
  if (atomic_fetch_add(&active, 1) >= ANA_FILE_STREAM_MAX) {
    atomic_fetch_sub(&active, 1);
    return ANA_ERR_FULL;
  }
  struct file_stream *s = ana_calloc(1, sizeof *s);
  bool failed = !s;
  if (s) {
    s->call = call;
    s->path = dup_opt(o->path, &failed);
    s->content_type = dup_opt(o->content_type, &failed);
    s->filename = dup_opt(o->filename, &failed);
    s->etag = dup_opt(o->etag, &failed);
    s->if_none_match =
        o->if_none_match && o->if_none_match[0] ? dup_opt(o->if_none_match, &failed) : NULL;
    s->offset = o->offset;
    s->length = o->length;
    s->chunk_size = o->chunk_size ? o->chunk_size : ANA_FILE_STREAM_CHUNK;
    s->source = o->source;
    s->source_key = dup_opt(o->source_key, &failed);
  }
  pthread_attr_t attr;
  pthread_t t;
  if (!failed && pthread_attr_init(&attr) == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    failed = pthread_create(&t, &attr, stream_run, s) != 0;
    pthread_attr_destroy(&attr);
  } else {
    failed = true;
  }
  if (failed) {
    if (s)
      stream_free(s);
    atomic_fetch_sub(&active, 1);
    return ANA_ERR_NOMEM;
  }
  return 0;
}

int ana_file_stream_active(void) {
  return atomic_load(&active);
}
