/* Sending a file as a stream of analytics.v1.FileChunk: what a download
 * handler calls once it knows which file to serve. The file is read on the
 * stream's own thread in chunks, never whole, and each chunk waits for room
 * in the call's send queue (backpressure: a slow reader holds back the
 * reads, not memory). */
#ifndef ANA_FILE_STREAM_H
#define ANA_FILE_STREAM_H

#include "ana_call.h"

#include <stddef.h>
#include <stdint.h>

/* Downloads served at once (process-wide); more answer RESOURCE_EXHAUSTED. */
#define ANA_FILE_STREAM_MAX 64
/* Bytes per FileChunk unless chunk_size says otherwise. */
#define ANA_FILE_STREAM_CHUNK (64 * 1024)

/* A file whose bytes on disk are not what is sent (e.g. sealed at rest):
 * the stream reads its content through these, on its own thread. */
struct ana_file_source {
  /* The reading state for the open file fd (borrowed until close) and the
   * content's size in *size; NULL with err filled (the call fails with its
   * code). key is the options' source_key. */
  void *(*open)(void *ctx, const char *key, int fd, int64_t *size, struct ana_error *err);
  /* Up to n bytes of content at off: how many, or a negative error. */
  int64_t (*read_at)(void *state, void *buf, size_t n, int64_t off, struct ana_error *err);
  void (*close)(void *state);
  void *ctx; /* must outlive every stream */
};

struct ana_file_stream_options {
  const char *path;          /* the file (required) */
  const char *content_type;  /* NULL = application/octet-stream */
  const char *filename;      /* the name offered to the client; NULL = path's last part */
  const char *etag;          /* NULL = derived from the file's size and mtime */
  int64_t offset, length;    /* the request's range (see ana_byte_range.h) */
  const char *if_none_match; /* the request's; when it holds the ETag no data is read */
  size_t chunk_size;         /* 0 = ANA_FILE_STREAM_CHUNK */
  const struct ana_file_source *source; /* NULL: the file's bytes as they are */
  const char *source_key;               /* handed to source->open (copied) */
};

/* Streams the file and finishes the call (from the stream's thread): the
 * first FileChunk carries content_type, total_size, etag and filename.
 * If-None-Match holding the ETag: that chunk alone, no data read. A range
 * past the end: that chunk, then OUT_OF_RANGE. A missing file: NOT_FOUND;
 * a file that shrinks while sent: DATA_LOSS. The strings are copied, so
 * they may go when this returns. Returns 0 (the call now belongs to the
 * stream), or a negative error with the call untouched: ANA_ERR_FULL when
 * ANA_FILE_STREAM_MAX streams run, ANA_ERR_NOMEM, ANA_ERR_INVALID (no path,
 * negative length). */
int ana_file_stream_start(struct ana_call *call, const struct ana_file_stream_options *options);

/* Streams running now. */
int ana_file_stream_active(void);

#endif
